/* schema.h — the C form of the datamodel: classes, fields, types, enums,
 * messages and errors.  The tables themselves are generated from idl/ by
 * idl/gen-c.py into schema-gen.c (with indices such as CLS_VM,
 * F_VM_name_label and ERR_HANDLE_INVALID in schema-gen.h); this header
 * declares their shape and the lookup functions in schema.c.  Everything
 * here is constant after start-up and read without locks. */
#ifndef SCHEMA_H
#define SCHEMA_H 1

#include <stdbool.h>
#include <stddef.h>

enum api_kind {
    API_STRING, API_INT, API_FLOAT, API_BOOL, API_DATETIME, API_ENUM,
    API_REF, API_SET, API_MAP, API_RECORD, API_OPTION, API_VOID, API_ANY,
};

struct api_type {
    enum api_kind kind;
    int cls;                        /* API_REF/API_RECORD: class, or -1 */
    int enum_idx;                   /* API_ENUM */
    const struct api_type *key;     /* API_MAP */
    const struct api_type *elem;    /* API_SET, API_MAP (value), API_OPTION */
    const char *text;               /* "(string -> string) map" */
};

enum api_qualifier { API_RW, API_RO_CONSTRUCTOR, API_RO_RUNTIME };
enum api_lifecycle {
    API_PUBLISHED, API_DEPRECATED, API_REMOVED, API_PROTOTYPED,
};

struct api_enum {
    const char *name;
    const char *const *values;
    size_t n_values;
};

struct api_field {
    const char *name;
    const struct api_type *type;
    enum api_qualifier qualifier;
    const char *default_text;       /* the datamodel's default, or NULL */
    enum api_lifecycle lifecycle;
    int inverse_cls;                /* relation partner, or -1 */
    int inverse_field;
    bool relation_set;              /* computed from the partner's refs */
    bool persist;                   /* false: runtime data, not stored */
};

struct api_class {
    const char *name;
    const struct api_field *fields;
    size_t n_fields;
    int uuid_field;                 /* -1 if none */
    int name_label_field;           /* -1 if none */
    bool persist;                   /* rows survive a restart */
    bool has_getters;
    bool in_database;               /* has rows (not a pure record type) */
    enum api_lifecycle lifecycle;
};

enum api_msg_kind {
    MSG_CUSTOM, MSG_GET, MSG_SET, MSG_ADD_TO, MSG_REMOVE_FROM, MSG_ADD,
    MSG_REMOVE, MSG_GET_RECORD, MSG_GET_ALL, MSG_GET_ALL_RECORDS,
    MSG_GET_ALL_RECORDS_WHERE, MSG_GET_BY_UUID, MSG_GET_BY_NAME_LABEL,
    MSG_CREATE, MSG_DESTROY,
};

struct api_param {
    const char *name;
    const struct api_type *type;
    const char *default_json;       /* value when omitted, or NULL */
};

/* Role bits, in XenAPI's order from most to least powerful. */
enum {
    ROLE_POOL_ADMIN = 1 << 0,
    ROLE_POOL_OPERATOR = 1 << 1,
    ROLE_VM_POWER_ADMIN = 1 << 2,
    ROLE_VM_ADMIN = 1 << 3,
    ROLE_VM_OPERATOR = 1 << 4,
    ROLE_READ_ONLY = 1 << 5,
    ROLE_CLIENT_CERT = 1 << 6,
};

struct api_message {
    const char *name;               /* "VM.start" */
    const char *short_name;         /* "start" */
    int cls;
    enum api_msg_kind kind;
    int field;                      /* generated field messages, else -1 */
    const struct api_param *params; /* including session_id if any */
    size_t n_params;
    size_t n_required;              /* params without defaults */
    const struct api_type *result;
    unsigned roles;
    bool async;
    bool has_session;               /* first parameter is session_id */
    bool hidden;                    /* answered but not in the reference */
    enum api_lifecycle lifecycle;
    const int *errors;
    size_t n_errors;
};

struct api_error_def {
    const char *code;
    const char *const *params;
    size_t n_params;
};

#include "schema-gen.h"

extern const struct api_class api_classes[];
extern const size_t api_n_classes;
extern const struct api_enum api_enums[];
extern const size_t api_n_enums;
extern const struct api_message api_messages[];   /* sorted by name */
extern const size_t api_n_messages;
extern const struct api_error_def api_errors[];
extern const size_t api_n_errors;
extern const char *const api_role_names[7];

/* Lookups; return -1 when not found.  Class names match exactly
 * (api_class_find_nocase for event subscriptions, which ignore case). */
int api_class_find(const char *name);
int api_class_find_nocase(const char *name);
int api_field_find(int cls, const char *name);
int api_message_find(const char *name);
int api_error_find(const char *code);
int api_enum_value_find(int enum_idx, const char *value);
const char *api_lifecycle_name(enum api_lifecycle lc);

#endif
