/* xen-internal.h — what the generated part of the C SDK (xen-gen.c, from
 * idl/gen-c-sdk.py) uses from the hand-written part (xen-common.c); not
 * installed.
 *
 * The generated code does not convert values itself: it describes every
 * C type of the API with a struct xen_type (where each member of a record
 * lives, what a set holds, how an enum is spelt), and xen-common.c turns
 * values of any described type into the toolstack's struct value and back,
 * and frees them.  So the thousands of generated functions are each a
 * table of arguments and one call.
 *
 * A "slot" is where one value of a type is stored: char * for strings,
 * refs and session refs, int64_t, double, bool, time_t, int for enums, and
 * a pointer to the allocated object for sets, maps, records and
 * record_opts.  Sets are { size_t size; T contents[]; } and maps
 * { size_t size; struct { K key; V val; } contents[]; }. */
#ifndef XEN_INTERNAL_H
#define XEN_INTERNAL_H 1

#include <stdbool.h>
#include <stddef.h>

#include "xen/api/xen_common.h"

enum xen_type_kind {
    XEN_TYPE_STRING,
    XEN_TYPE_INT,
    XEN_TYPE_FLOAT,
    XEN_TYPE_BOOL,
    XEN_TYPE_DATETIME,
    XEN_TYPE_ENUM,
    XEN_TYPE_REF,           /* a handle such as xen_vm: the ref's text */
    XEN_TYPE_SESSION,       /* a parameter given as xen_session * */
    XEN_TYPE_SET,
    XEN_TYPE_MAP,
    XEN_TYPE_STRUCT,        /* a record, or event.from's batch */
    XEN_TYPE_RECORD_OPT,    /* a ref field of a record */
};

struct xen_member {
    const char *name;               /* the field's name on the wire */
    const struct xen_type *type;
    size_t offset;
};

struct xen_type {
    enum xen_type_kind kind;
    size_t slot_size;               /* bytes of one slot of this type */
    /* SET: the items; MAP: the values; RECORD_OPT: the record. */
    const struct xen_type *elem;
    const struct xen_type *key;     /* MAP */
    size_t contents_offset;         /* SET, MAP: offset of contents[] */
    size_t entry_size;              /* SET, MAP: bytes per item or entry */
    size_t val_offset;              /* MAP: offset of val in an entry */
    size_t struct_size;             /* STRUCT */
    bool has_handle;                /* STRUCT: a record, whose first
                                     * member is its handle (char *) */
    const struct xen_member *members;   /* STRUCT */
    size_t n_members;
    const char *const *enum_names;  /* ENUM: the wire spelling by value */
    size_t n_enum_names;            /* also the value of ..._UNDEFINED */
};

extern const struct xen_type xen_type_string_;
extern const struct xen_type xen_type_int_;
extern const struct xen_type xen_type_float_;
extern const struct xen_type xen_type_bool_;
extern const struct xen_type xen_type_datetime_;
extern const struct xen_type xen_type_ref_;
extern const struct xen_type xen_type_session_;

/* One argument of a call: its type and the slot holding it. */
struct xen_arg {
    const struct xen_type *type;
    const void *slot;
};

/* Calls method with the session's id (when with_session) followed by
 * args; on success decodes the result into result_slot (when result_type
 * is not NULL).  Returns session->ok.  Does nothing and returns false if
 * the session already holds an error. */
bool xen_call_(xen_session *session, const char *method, bool with_session,
               const struct xen_arg *args, size_t n_args,
               const struct xen_type *result_type, void *result_slot);

/* Frees whatever the slot of type t holds (not the slot itself). */
void xen_free_slot_(const struct xen_type *t, void *slot);

/* Allocates a zeroed set or map of type t with room for size items. */
void *xen_alloc_set_(const struct xen_type *t, size_t size);

/* Marks the session failed with a client-side error [code, detail]. */
void xen_session_fail_(xen_session *session, const char *code,
                       const char *detail);

/* An enum's value for its wire spelling, or the UNDEFINED value
 * (t->n_enum_names). */
int xen_enum_from_string_(const struct xen_type *t, const char *s);

char *xen_strdup_(const char *s);

#endif
