/* value.h — the dynamically typed value that crosses the API: what the
 * XML-RPC and JSON codecs decode into and encode from, what the database
 * stores in each field, and what handlers receive and return.
 *
 * Values are reference counted and immutable once shared: a value built by
 * one function may be changed only while its reference count is 1 (the
 * builder owns it).  The database hands the same field values to many
 * readers at once, so counts are atomic.  A few constants (empty string,
 * true/false, empty array and struct, OpaqueRef:NULL) are immortal, so
 * default-valued fields of 10,000 rows cost no memory.
 *
 * Mapping of XenAPI types: int -> VALUE_INT, float -> VALUE_DOUBLE,
 * bool -> VALUE_BOOL, string/ref/enum -> VALUE_STRING, datetime ->
 * VALUE_DATETIME (text in XenAPI's 20240131T23:59:59Z form), set ->
 * VALUE_ARRAY, map/record -> VALUE_STRUCT (keys are strings; int and ref
 * keys are stringified as on the wire).  VALUE_NIL appears only in JSON
 * input (null) and as "absent" inside the toolstack. */
#ifndef VALUE_H
#define VALUE_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum value_type {
    VALUE_NIL,
    VALUE_BOOL,
    VALUE_INT,
    VALUE_DOUBLE,
    VALUE_STRING,
    VALUE_DATETIME,
    VALUE_ARRAY,
    VALUE_STRUCT,
};

struct value_member {
    char *name;
    struct value *v;
};

struct value {
    enum value_type type;
    int refcnt;                 /* -1: immortal constant */
    union {
        bool b;
        int64_t i;
        double d;
        struct {
            char *s;            /* NUL-terminated; may contain no NULs */
            size_t len;
        } str;                  /* VALUE_STRING, VALUE_DATETIME */
        struct {
            struct value **items;
            size_t n, cap;
        } arr;
        struct {
            struct value_member *m;
            size_t n, cap;
            bool static_names;  /* names are borrowed constants */
        } st;
    } u;
};

const char *value_type_name(enum value_type t);

/* Constructors return a new value with reference count 1. */
struct value *value_nil(void);
struct value *value_bool(bool b);
struct value *value_int(int64_t i);
struct value *value_double(double d);
struct value *value_string(const char *s);
struct value *value_string_n(const char *s, size_t n);
struct value *value_string_take(char *s);       /* takes ownership of s */
struct value *value_stringf(const char *fmt, ...) PRINTF_FMT(1, 2);
struct value *value_datetime(const char *s);
struct value *value_datetime_secs(int64_t secs);
struct value *value_array(size_t cap);
struct value *value_struct(size_t cap);

/* Immortal constants; value_ref/value_unref on them are no-ops. */
struct value *value_empty_string(void);
struct value *value_null_ref(void);             /* "OpaqueRef:NULL" */
struct value *value_true(void);
struct value *value_false(void);
struct value *value_empty_array(void);
struct value *value_empty_struct(void);

struct value *value_ref(struct value *v);
void value_unref(struct value *v);              /* accepts NULL */

/* Builders: the container must be owned (refcnt 1).  These take ownership
 * of the added value (the caller's reference moves in). */
void value_array_append(struct value *arr, struct value *item);
void value_struct_put(struct value *st, const char *name, struct value *v);
void value_struct_put_n(struct value *st, const char *name, size_t len,
                        struct value *v);
/* A struct whose member names are constants that outlive it (such as the
 * datamodel's field names): building a 10,000-row get_all_records then
 * copies no names.  Only value_struct_put_static() may add to it. */
struct value *value_struct_static(size_t cap);
void value_struct_put_static(struct value *st, const char *name,
                             struct value *v);
/* Replaces an existing member or appends; takes ownership of v. */
void value_struct_set(struct value *st, const char *name, struct value *v);
/* Removes a member if present; returns true if it was there. */
bool value_struct_remove(struct value *st, const char *name);

/* Removes members whose name occurs again later, so that the last of
 * duplicated keys wins (what both decoders do with repeated keys). */
void value_struct_drop_duplicates(struct value *st);

/* Lookups return borrowed pointers or NULL. */
struct value *value_struct_get(const struct value *st, const char *name);
const char *value_struct_get_string(const struct value *st, const char *name);

/* Deep equality (struct member order is ignored). */
bool value_equal(const struct value *a, const struct value *b);
/* Deep copy with reference count 1 at every level (for modifying). */
struct value *value_clone(const struct value *v);
/* Shallow copy of a container: new container, items shared (ref'd). */
struct value *value_copy_shallow(const struct value *v);

static inline bool
value_is_string(const struct value *v)
{
    return v && v->type == VALUE_STRING;
}

/* A readable rendering for logs and tests, e.g. {"a": [1, "x"]}. */
void value_format(const struct value *v, struct ds *out);
char *value_to_text(const struct value *v);

#endif
