/* types.c — see types.h.  Used by the dispatcher for parameters, by the
 * generic create for record fields and by db.c when loading rows. */
#include <config.h>
#include "types.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int
coerce_int(struct value *in, struct value **ret_out)
{
    int64_t i;

    switch (in->type) {
    case VALUE_INT:
        *ret_out = value_ref(in);
        return 0;
    case VALUE_STRING:
        if (str_to_int64(in->u.str.s, &i)) {
            return -EINVAL;
        }
        *ret_out = value_int(i);
        return 0;
    case VALUE_DOUBLE:
        if (in->u.d != floor(in->u.d) || fabs(in->u.d) > 9.2e18) {
            return -EINVAL;
        }
        *ret_out = value_int((int64_t) in->u.d);
        return 0;
    default:
        return -EINVAL;
    }
}

static int
coerce_float(struct value *in, struct value **ret_out)
{
    double d;

    switch (in->type) {
    case VALUE_DOUBLE:
        *ret_out = value_ref(in);
        return 0;
    case VALUE_INT:
        *ret_out = value_double((double) in->u.i);
        return 0;
    case VALUE_STRING:
        if (str_to_double(in->u.str.s, &d)) {
            return -EINVAL;
        }
        *ret_out = value_double(d);
        return 0;
    default:
        return -EINVAL;
    }
}

static int
coerce_bool(struct value *in, struct value **ret_out)
{
    switch (in->type) {
    case VALUE_BOOL:
        *ret_out = in;
        return 0;
    case VALUE_STRING:
        if (!strcasecmp(in->u.str.s, "true") || !strcmp(in->u.str.s, "1")) {
            *ret_out = value_true();
        } else if (!strcasecmp(in->u.str.s, "false")
                   || !strcmp(in->u.str.s, "0")) {
            *ret_out = value_false();
        } else {
            return -EINVAL;
        }
        return 0;
    case VALUE_INT:
        if (in->u.i != 0 && in->u.i != 1) {
            return -EINVAL;
        }
        *ret_out = value_bool(in->u.i);
        return 0;
    default:
        return -EINVAL;
    }
}

static int
coerce_datetime(struct value *in, struct value **ret_out)
{
    int64_t secs;
    char buf[32];

    if (in->type != VALUE_DATETIME && in->type != VALUE_STRING) {
        return -EINVAL;
    }
    if (time_parse_xenapi(in->u.str.s, &secs)) {
        return -EINVAL;
    }
    time_format_xenapi(secs, buf);
    if (in->type == VALUE_DATETIME && !strcmp(buf, in->u.str.s)) {
        *ret_out = value_ref(in);
    } else {
        *ret_out = value_datetime(buf);
    }
    return 0;
}

/* Map keys arrive as struct member names (always strings); they are kept
 * as strings in canonical form. */
static int
coerce_key(const struct api_type *t, const char *key, struct ds *out)
{
    struct value *in = value_string(key), *v = NULL;
    int rc = str_is_xml_text(key, strlen(key)) ? api_coerce(t, in, &v) : -EINVAL;

    if (!rc) {
        if (v->type == VALUE_INT) {
            ds_put_int(out, v->u.i);
        } else if (v->type == VALUE_DOUBLE) {
            ds_put_fmt(out, "%.17g", v->u.d);
        } else if (v->type == VALUE_BOOL) {
            ds_put_cstr(out, v->u.b ? "true" : "false");
        } else if (v->type == VALUE_STRING || v->type == VALUE_DATETIME) {
            ds_put(out, v->u.str.s, v->u.str.len);
        } else {
            rc = -EINVAL;
        }
    }
    value_unref(in);
    value_unref(v);
    return rc;
}

int
api_coerce(const struct api_type *t, struct value *in, struct value **ret_out)
{
    struct value *out = NULL, *item = NULL;
    int rc;

    switch (t->kind) {
    case API_ANY:
        *ret_out = value_ref(in);
        return 0;
    case API_VOID:
        *ret_out = value_empty_string();
        return 0;
    case API_STRING:
    case API_REF:
        if (in->type != VALUE_STRING
            || !str_is_xml_text(in->u.str.s, in->u.str.len)) {
            return -EINVAL;
        }
        *ret_out = value_ref(in);
        return 0;
    case API_INT:
        return coerce_int(in, ret_out);
    case API_FLOAT:
        return coerce_float(in, ret_out);
    case API_BOOL:
        return coerce_bool(in, ret_out);
    case API_DATETIME:
        return coerce_datetime(in, ret_out);
    case API_ENUM: {
        int i;
        if (in->type != VALUE_STRING) {
            return -EINVAL;
        }
        i = api_enum_value_find(t->enum_idx, in->u.str.s);
        if (i < 0) {
            return -EINVAL;
        }
        if (!strcmp(api_enums[t->enum_idx].values[i], in->u.str.s)) {
            *ret_out = value_ref(in);
        } else {
            *ret_out = value_string(api_enums[t->enum_idx].values[i]);
        }
        return 0;
    }
    case API_OPTION:
        return api_coerce(t->elem, in, ret_out);
    case API_SET:
        if (in->type != VALUE_ARRAY) {
            return -EINVAL;
        }
        if (in->u.arr.n == 0) {
            *ret_out = value_empty_array();
            return 0;
        }
        out = value_array(in->u.arr.n);
        for (size_t i = 0; i < in->u.arr.n; i++) {
            rc = api_coerce(t->elem, in->u.arr.items[i], &item);
            if (rc) {
                goto fail;
            }
            value_array_append(out, item);
            item = NULL;
        }
        *ret_out = out;
        return 0;
    case API_MAP:
        if (in->type != VALUE_STRUCT) {
            return -EINVAL;
        }
        if (in->u.st.n == 0) {
            *ret_out = value_empty_struct();
            return 0;
        }
        out = value_struct(in->u.st.n);
        for (size_t i = 0; i < in->u.st.n; i++) {
            struct ds key = DS_EMPTY;
            rc = coerce_key(t->key, in->u.st.m[i].name, &key);
            if (!rc) {
                rc = api_coerce(t->elem, in->u.st.m[i].v, &item);
            }
            if (rc) {
                ds_destroy(&key);
                goto fail;
            }
            value_struct_set(out, ds_cstr(&key), item);
            item = NULL;
            ds_destroy(&key);
        }
        *ret_out = out;
        return 0;
    case API_RECORD:
        /* Records are checked field by field by their users (the generic
         * create knows which fields are required). */
        if (in->type != VALUE_STRUCT) {
            return -EINVAL;
        }
        *ret_out = value_ref(in);
        return 0;
    }
    return -EINVAL;
fail:
    value_unref(out);
    return -EINVAL;
}

struct value *
api_zero_value(const struct api_type *t)
{
    switch (t->kind) {
    case API_STRING:
    case API_VOID:
    case API_ANY:
    case API_OPTION:
        return value_empty_string();
    case API_REF:
        return value_null_ref();
    case API_INT:
        return value_int(0);
    case API_FLOAT:
        return value_double(0);
    case API_BOOL:
        return value_false();
    case API_DATETIME:
        return value_datetime("19700101T00:00:00Z");
    case API_ENUM:
        return value_string(api_enums[t->enum_idx].values[0]);
    case API_SET:
        return value_empty_array();
    case API_MAP:
    case API_RECORD:
        return value_empty_struct();
    }
    return value_empty_string();
}

/* Parses one element of a default set/map, quoted or not. */
static struct value *
parse_default_atom(const struct api_type *t, const char *s, size_t n)
{
    char *text;
    struct value *v;

    while (n && (*s == ' ')) {
        s++, n--;
    }
    while (n && s[n - 1] == ' ') {
        n--;
    }
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
    }
    text = xmemdup0(s, n);
    v = api_parse_default(t, text);
    free(text);
    return v;
}

struct value *
api_parse_default(const struct api_type *t, const char *text)
{
    struct value *in, *out = NULL;
    size_t n = strlen(text);

    switch (t->kind) {
    case API_STRING:
        if (n >= 2 && text[0] == '"' && text[n - 1] == '"') {
            return value_string_n(text + 1, n - 2);
        }
        return value_string(text);
    case API_REF:
        if (!strcmp(text, "Null") || !strcmp(text, "OpaqueRef:NULL")) {
            return value_null_ref();
        }
        return value_string(text);
    case API_SET:
    case API_MAP: {
        const char *p, *end;
        if (n < 2 || text[0] != '{' || text[n - 1] != '}') {
            return NULL;
        }
        out = t->kind == API_SET ? value_array(4) : value_struct(4);
        p = text + 1;
        end = text + n - 1;
        while (p < end) {
            const char *comma = p;
            bool quoted = false;
            while (comma < end && (quoted || *comma != ',')) {
                if (*comma == '"') {
                    quoted = !quoted;
                }
                comma++;
            }
            if (t->kind == API_SET) {
                struct value *v = parse_default_atom(t->elem, p, comma - p);
                if (!v) {
                    goto fail;
                }
                value_array_append(out, v);
            } else {
                const char *arrow = strstr(p, "->");
                struct value *k, *v;
                if (!arrow || arrow > comma) {
                    goto fail;
                }
                k = parse_default_atom(t->key, p, arrow - p);
                v = parse_default_atom(t->elem, arrow + 2, comma - arrow - 2);
                if (!k || !v || k->type != VALUE_STRING) {
                    value_unref(k);
                    value_unref(v);
                    goto fail;
                }
                value_struct_set(out, k->u.str.s, v);
                value_unref(k);
            }
            p = comma + 1;
        }
        if (t->kind == API_SET && out->u.arr.n == 0) {
            value_unref(out);
            return value_empty_array();
        }
        if (t->kind == API_MAP && out->u.st.n == 0) {
            value_unref(out);
            return value_empty_struct();
        }
        return out;
    }
    default:
        in = value_string(text);
        if (api_coerce(t, in, &out)) {
            out = NULL;
        }
        value_unref(in);
        return out;
    }
fail:
    value_unref(out);
    return NULL;
}
