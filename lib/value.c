/* value.c — reference-counted immutable values (see value.h).  Strings are
 * stored in the same allocation as their value header, which halves the
 * number of allocations the database makes for a row. */
#include <config.h>
#include "value.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct value const_empty_string = {
    .type = VALUE_STRING, .refcnt = -1, .u.str = { (char *) "", 0 } };
static struct value const_null_ref = {
    .type = VALUE_STRING, .refcnt = -1,
    .u.str = { (char *) "OpaqueRef:NULL", 14 } };
static struct value const_true = { .type = VALUE_BOOL, .refcnt = -1,
                                   .u.b = true };
static struct value const_false = { .type = VALUE_BOOL, .refcnt = -1,
                                    .u.b = false };
static struct value const_empty_array = { .type = VALUE_ARRAY, .refcnt = -1 };
static struct value const_empty_struct = { .type = VALUE_STRUCT,
                                           .refcnt = -1 };
static struct value const_nil = { .type = VALUE_NIL, .refcnt = -1 };

const char *
value_type_name(enum value_type t)
{
    switch (t) {
    case VALUE_NIL: return "nil";
    case VALUE_BOOL: return "bool";
    case VALUE_INT: return "int";
    case VALUE_DOUBLE: return "double";
    case VALUE_STRING: return "string";
    case VALUE_DATETIME: return "datetime";
    case VALUE_ARRAY: return "array";
    case VALUE_STRUCT: return "struct";
    }
    return "?";
}

static struct value *
value_alloc(enum value_type type, size_t extra)
{
    struct value *v = xmalloc(sizeof *v + extra);

    memset(v, 0, sizeof *v);
    v->type = type;
    v->refcnt = 1;
    return v;
}

struct value *value_empty_string(void) { return &const_empty_string; }
struct value *value_null_ref(void) { return &const_null_ref; }
struct value *value_true(void) { return &const_true; }
struct value *value_false(void) { return &const_false; }
struct value *value_empty_array(void) { return &const_empty_array; }
struct value *value_empty_struct(void) { return &const_empty_struct; }
struct value *value_nil(void) { return &const_nil; }

struct value *
value_bool(bool b)
{
    return b ? &const_true : &const_false;
}

struct value *
value_int(int64_t i)
{
    struct value *v = value_alloc(VALUE_INT, 0);

    v->u.i = i;
    return v;
}

struct value *
value_double(double d)
{
    struct value *v = value_alloc(VALUE_DOUBLE, 0);

    v->u.d = d;
    return v;
}

static struct value *
value_text_n(enum value_type type, const char *s, size_t n)
{
    struct value *v;

    if (type == VALUE_STRING) {
        if (n == 0) {
            return &const_empty_string;
        }
        if (n == 14 && !memcmp(s, "OpaqueRef:NULL", 14)) {
            return &const_null_ref;
        }
    }
    v = value_alloc(type, n + 1);
    v->u.str.s = (char *) (v + 1);
    memcpy(v->u.str.s, s, n);
    v->u.str.s[n] = '\0';
    v->u.str.len = n;
    return v;
}

struct value *
value_string(const char *s)
{
    return value_text_n(VALUE_STRING, s, strlen(s));
}

struct value *
value_string_n(const char *s, size_t n)
{
    return value_text_n(VALUE_STRING, s, n);
}

struct value *
value_string_take(char *s)
{
    struct value *v = value_string(s);

    free(s);
    return v;
}

struct value *
value_stringf(const char *fmt, ...)
{
    struct ds ds = DS_EMPTY;
    struct value *v;
    va_list ap;

    va_start(ap, fmt);
    ds_put_vfmt(&ds, fmt, ap);
    va_end(ap);
    v = value_string_n(ds_cstr(&ds), ds.len);
    ds_destroy(&ds);
    return v;
}

struct value *
value_datetime(const char *s)
{
    return value_text_n(VALUE_DATETIME, s, strlen(s));
}

struct value *
value_datetime_secs(int64_t secs)
{
    char buf[32];

    time_format_xenapi(secs, buf);
    return value_datetime(buf);
}

struct value *
value_array(size_t cap)
{
    struct value *v = value_alloc(VALUE_ARRAY, 0);

    if (cap) {
        v->u.arr.items = xmalloc(cap * sizeof *v->u.arr.items);
        v->u.arr.cap = cap;
    }
    return v;
}

struct value *
value_struct(size_t cap)
{
    struct value *v = value_alloc(VALUE_STRUCT, 0);

    if (cap) {
        v->u.st.m = xmalloc(cap * sizeof *v->u.st.m);
        v->u.st.cap = cap;
    }
    return v;
}

struct value *
value_struct_static(size_t cap)
{
    struct value *v = value_struct(cap);

    v->u.st.static_names = true;
    return v;
}

void
value_struct_put_static(struct value *st, const char *name, struct value *v)
{
    if (st->type != VALUE_STRUCT || st->refcnt != 1 || !st->u.st.static_names) {
        xabort("value_struct_put_static on an unsuitable value");
    }
    if (st->u.st.n == st->u.st.cap) {
        st->u.st.cap = st->u.st.cap ? st->u.st.cap * 2 : 4;
        st->u.st.m = xrealloc(st->u.st.m, st->u.st.cap * sizeof *st->u.st.m);
    }
    st->u.st.m[st->u.st.n].name = (char *) name;
    st->u.st.m[st->u.st.n].v = v;
    st->u.st.n++;
}

struct value *
value_ref(struct value *v)
{
    if (v && v->refcnt >= 0) {
        __atomic_add_fetch(&v->refcnt, 1, __ATOMIC_RELAXED);
    }
    return v;
}

void
value_unref(struct value *v)
{
    if (!v || v->refcnt < 0) {
        return;
    }
    if (__atomic_sub_fetch(&v->refcnt, 1, __ATOMIC_ACQ_REL) != 0) {
        return;
    }
    switch (v->type) {
    case VALUE_ARRAY:
        for (size_t i = 0; i < v->u.arr.n; i++) {
            value_unref(v->u.arr.items[i]);
        }
        free(v->u.arr.items);
        break;
    case VALUE_STRUCT:
        for (size_t i = 0; i < v->u.st.n; i++) {
            if (!v->u.st.static_names) {
                free(v->u.st.m[i].name);
            }
            value_unref(v->u.st.m[i].v);
        }
        free(v->u.st.m);
        break;
    default:
        break;
    }
    free(v);
}

static void
assert_owned(const struct value *v, enum value_type type)
{
    if (v->type != type || v->refcnt != 1) {
        xabort("modifying a shared or mistyped value (%s, refcnt %d)",
               value_type_name(v->type), v->refcnt);
    }
}

void
value_array_append(struct value *arr, struct value *item)
{
    assert_owned(arr, VALUE_ARRAY);
    if (arr->u.arr.n == arr->u.arr.cap) {
        arr->u.arr.cap = arr->u.arr.cap ? arr->u.arr.cap * 2 : 4;
        arr->u.arr.items = xrealloc(arr->u.arr.items,
                                    arr->u.arr.cap * sizeof *arr->u.arr.items);
    }
    arr->u.arr.items[arr->u.arr.n++] = item;
}

void
value_struct_put_n(struct value *st, const char *name, size_t len,
                   struct value *v)
{
    assert_owned(st, VALUE_STRUCT);
    if (st->u.st.static_names) {
        xabort("copying a name into a struct of constant names");
    }
    if (st->u.st.n == st->u.st.cap) {
        st->u.st.cap = st->u.st.cap ? st->u.st.cap * 2 : 4;
        st->u.st.m = xrealloc(st->u.st.m, st->u.st.cap * sizeof *st->u.st.m);
    }
    st->u.st.m[st->u.st.n].name = xmemdup0(name, len);
    st->u.st.m[st->u.st.n].v = v;
    st->u.st.n++;
}

void
value_struct_put(struct value *st, const char *name, struct value *v)
{
    value_struct_put_n(st, name, strlen(name), v);
}

void
value_struct_set(struct value *st, const char *name, struct value *v)
{
    assert_owned(st, VALUE_STRUCT);
    for (size_t i = 0; i < st->u.st.n; i++) {
        if (!strcmp(st->u.st.m[i].name, name)) {
            value_unref(st->u.st.m[i].v);
            st->u.st.m[i].v = v;
            return;
        }
    }
    value_struct_put(st, name, v);
}

bool
value_struct_remove(struct value *st, const char *name)
{
    assert_owned(st, VALUE_STRUCT);
    if (st->u.st.static_names) {
        xabort("removing from a struct of constant names");
    }
    for (size_t i = 0; i < st->u.st.n; i++) {
        if (!strcmp(st->u.st.m[i].name, name)) {
            free(st->u.st.m[i].name);
            value_unref(st->u.st.m[i].v);
            memmove(&st->u.st.m[i], &st->u.st.m[i + 1],
                    (st->u.st.n - i - 1) * sizeof st->u.st.m[0]);
            st->u.st.n--;
            return true;
        }
    }
    return false;
}

/* Large structs use a hash table: a request with a few million keys must
 * not cost quadratic time. */
void
value_struct_drop_duplicates(struct value *st)
{
    struct value_member *m = st->u.st.m;
    size_t n = st->u.st.n, kept = 0;

    if (n < 2 || st->u.st.static_names) {
        return;
    }
    if (n <= 16) {
        for (size_t i = 0; i < n; i++) {
            for (size_t k = i + 1; k < n; k++) {
                if (!strcmp(m[i].name, m[k].name)) {
                    free(m[i].name);
                    value_unref(m[i].v);
                    m[i].name = NULL;
                    break;
                }
            }
        }
    } else {
        /* Open addressing; a slot holds a member's index + 1, 0 if free.
         * Records of a few hundred fields need no allocation. */
        size_t local[512];
        size_t size = 32, mask;
        size_t *slots;

        while (size < 2 * n) {
            size *= 2;
        }
        mask = size - 1;
        if (size <= ARRAY_SIZE(local)) {
            slots = local;
            memset(slots, 0, size * sizeof *slots);
        } else {
            slots = xcalloc(size, sizeof *slots);
        }
        for (size_t i = 0; i < n; i++) {
            size_t h = hash_string(m[i].name, 0) & mask;
            while (slots[h] && strcmp(m[slots[h] - 1].name, m[i].name)) {
                h = (h + 1) & mask;
            }
            if (slots[h]) {
                struct value_member *old = &m[slots[h] - 1];
                free(old->name);
                value_unref(old->v);
                old->name = NULL;
            }
            slots[h] = i + 1;
        }
        if (slots != local) {
            free(slots);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (m[i].name) {
            m[kept++] = m[i];
        }
    }
    st->u.st.n = kept;
}

struct value *
value_struct_get(const struct value *st, const char *name)
{
    if (!st || st->type != VALUE_STRUCT) {
        return NULL;
    }
    for (size_t i = 0; i < st->u.st.n; i++) {
        if (!strcmp(st->u.st.m[i].name, name)) {
            return st->u.st.m[i].v;
        }
    }
    return NULL;
}

const char *
value_struct_get_string(const struct value *st, const char *name)
{
    struct value *v = value_struct_get(st, name);

    return v && (v->type == VALUE_STRING || v->type == VALUE_DATETIME)
           ? v->u.str.s : NULL;
}

bool
value_equal(const struct value *a, const struct value *b)
{
    if (a == b) {
        return true;
    }
    if (!a || !b || a->type != b->type) {
        return false;
    }
    switch (a->type) {
    case VALUE_NIL:
        return true;
    case VALUE_BOOL:
        return a->u.b == b->u.b;
    case VALUE_INT:
        return a->u.i == b->u.i;
    case VALUE_DOUBLE:
        return a->u.d == b->u.d || (isnan(a->u.d) && isnan(b->u.d));
    case VALUE_STRING:
    case VALUE_DATETIME:
        return a->u.str.len == b->u.str.len
               && !memcmp(a->u.str.s, b->u.str.s, a->u.str.len);
    case VALUE_ARRAY:
        if (a->u.arr.n != b->u.arr.n) {
            return false;
        }
        for (size_t i = 0; i < a->u.arr.n; i++) {
            if (!value_equal(a->u.arr.items[i], b->u.arr.items[i])) {
                return false;
            }
        }
        return true;
    case VALUE_STRUCT:
        if (a->u.st.n != b->u.st.n) {
            return false;
        }
        for (size_t i = 0; i < a->u.st.n; i++) {
            struct value *bv = value_struct_get(b, a->u.st.m[i].name);
            if (!bv || !value_equal(a->u.st.m[i].v, bv)) {
                return false;
            }
        }
        return true;
    }
    return false;
}

struct value *
value_clone(const struct value *v)
{
    struct value *c;

    switch (v->type) {
    case VALUE_NIL:
    case VALUE_BOOL:
        return (struct value *) v;   /* immortal constants */
    case VALUE_INT:
        return value_int(v->u.i);
    case VALUE_DOUBLE:
        return value_double(v->u.d);
    case VALUE_STRING:
    case VALUE_DATETIME:
        return value_text_n(v->type, v->u.str.s, v->u.str.len);
    case VALUE_ARRAY:
        c = value_array(v->u.arr.n);
        for (size_t i = 0; i < v->u.arr.n; i++) {
            value_array_append(c, value_clone(v->u.arr.items[i]));
        }
        return c;
    case VALUE_STRUCT:
        c = value_struct(v->u.st.n);
        for (size_t i = 0; i < v->u.st.n; i++) {
            value_struct_put(c, v->u.st.m[i].name,
                             value_clone(v->u.st.m[i].v));
        }
        return c;
    }
    return value_nil();
}

struct value *
value_copy_shallow(const struct value *v)
{
    struct value *c;

    switch (v->type) {
    case VALUE_ARRAY:
        c = value_array(v->u.arr.n + 1);
        for (size_t i = 0; i < v->u.arr.n; i++) {
            value_array_append(c, value_ref(v->u.arr.items[i]));
        }
        return c;
    case VALUE_STRUCT:
        c = value_struct(v->u.st.n + 1);
        for (size_t i = 0; i < v->u.st.n; i++) {
            value_struct_put(c, v->u.st.m[i].name,
                             value_ref(v->u.st.m[i].v));
        }
        return c;
    default:
        return value_clone(v);
    }
}

void
value_format(const struct value *v, struct ds *out)
{
    if (!v) {
        ds_put_cstr(out, "(null)");
        return;
    }
    switch (v->type) {
    case VALUE_NIL:
        ds_put_cstr(out, "nil");
        break;
    case VALUE_BOOL:
        ds_put_cstr(out, v->u.b ? "true" : "false");
        break;
    case VALUE_INT:
        ds_put_int(out, v->u.i);
        break;
    case VALUE_DOUBLE:
        ds_put_fmt(out, "%.17g", v->u.d);
        break;
    case VALUE_STRING:
        ds_put_json_string(out, v->u.str.s, v->u.str.len);
        break;
    case VALUE_DATETIME:
        ds_put_fmt(out, "datetime(%s)", v->u.str.s);
        break;
    case VALUE_ARRAY:
        ds_put_char(out, '[');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i) {
                ds_put_cstr(out, ", ");
            }
            value_format(v->u.arr.items[i], out);
        }
        ds_put_char(out, ']');
        break;
    case VALUE_STRUCT:
        ds_put_char(out, '{');
        for (size_t i = 0; i < v->u.st.n; i++) {
            if (i) {
                ds_put_cstr(out, ", ");
            }
            ds_put_json_string(out, v->u.st.m[i].name,
                               strlen(v->u.st.m[i].name));
            ds_put_cstr(out, ": ");
            value_format(v->u.st.m[i].v, out);
        }
        ds_put_char(out, '}');
        break;
    }
}

char *
value_to_text(const struct value *v)
{
    struct ds ds = DS_EMPTY;

    value_format(v, &ds);
    return ds_steal(&ds);
}
