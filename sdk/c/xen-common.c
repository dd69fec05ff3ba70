/* xen-common.c — the hand-written core of the C SDK: sessions, the call
 * path (encode the arguments, hand the XML-RPC request to the
 * application's xen_call_func, decode the response) and the conversion of
 * every described C type (xen-internal.h) to and from struct value.
 *
 * The XML-RPC encoding and decoding are lib/xmlrpc.c's, the same code the
 * daemon uses; the generated xen-gen.c supplies the type descriptions and
 * the thousands of thin API functions that call xen_call_(). */
#include <config.h>
#include "xen-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "util.h"
#include "value.h"

/* The server is trusted more than a client is by the daemon, and a large
 * pool's get_all_records answers are big, so the limits are wider than
 * codec_default_limits; they still bound what a broken server can make
 * the client allocate. */
static const struct codec_limits xen_response_limits = {
    .max_input = 1024 * 1024 * 1024,
    .max_depth = 64,
    .max_string = 256 * 1024 * 1024,
    .max_items = 64 * 1000 * 1000,
};

/* A record_opt, as every generated xen_<class>_record_opt is laid out. */
struct xen_record_opt_ {
    bool is_record;
    union {
        void *handle;
        void *record;
    } u;
};

const struct xen_type xen_type_string_ = {
    .kind = XEN_TYPE_STRING, .slot_size = sizeof(char *) };
const struct xen_type xen_type_int_ = {
    .kind = XEN_TYPE_INT, .slot_size = sizeof(int64_t) };
const struct xen_type xen_type_float_ = {
    .kind = XEN_TYPE_FLOAT, .slot_size = sizeof(double) };
const struct xen_type xen_type_bool_ = {
    .kind = XEN_TYPE_BOOL, .slot_size = sizeof(bool) };
const struct xen_type xen_type_datetime_ = {
    .kind = XEN_TYPE_DATETIME, .slot_size = sizeof(time_t) };
const struct xen_type xen_type_ref_ = {
    .kind = XEN_TYPE_REF, .slot_size = sizeof(char *) };
const struct xen_type xen_type_session_ = {
    .kind = XEN_TYPE_SESSION, .slot_size = sizeof(xen_session *) };

char *
xen_strdup_(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

/* ---- errors ---- */

static void
xen_session_free_error(xen_session *session)
{
    for (int i = 0; i < session->error_description_count; i++) {
        free(session->error_description[i]);
    }
    free(session->error_description);
    session->error_description = NULL;
    session->error_description_count = 0;
}

void
xen_session_clear_error(xen_session *session)
{
    if (!session) {
        return;
    }
    xen_session_free_error(session);
    session->ok = true;
}

/* Records the error [code, params...] given as a VALUE_ARRAY; items that
 * are not strings are rendered as text, so nothing of it is lost. */
static void
xen_session_fail_value(xen_session *session, const struct value *desc)
{
    size_t n = desc->type == VALUE_ARRAY ? desc->u.arr.n : 0;

    xen_session_free_error(session);
    session->ok = false;
    if (!n) {
        xen_session_fail_(session, "SERVER_FAULT",
                          "failure without an error description");
        return;
    }
    session->error_description = xcalloc(n, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const struct value *v = desc->u.arr.items[i];
        session->error_description[i] = value_is_string(v)
            ? xstrdup(v->u.str.s) : value_to_text(v);
    }
    session->error_description_count = n;
}

void
xen_session_fail_(xen_session *session, const char *code, const char *detail)
{
    xen_session_free_error(session);
    session->ok = false;
    session->error_description = xcalloc(2, sizeof(char *));
    session->error_description[0] = xstrdup(code);
    session->error_description[1] = xstrdup(detail ? detail : "");
    session->error_description_count = 2;
}

/* ---- C values to struct value ---- */

int
xen_enum_from_string_(const struct xen_type *t, const char *s)
{
    for (size_t i = 0; s && i < t->n_enum_names; i++) {
        if (!strcmp(t->enum_names[i], s)) {
            return i;
        }
    }
    return t->n_enum_names;
}

static struct value *xen_encode(const struct xen_type *t, const void *slot);

static struct value *
xen_encode_ref(const char *ref)
{
    return ref ? value_string(ref) : value_null_ref();
}

static struct value *
xen_encode_struct(const struct xen_type *t, const char *rec)
{
    struct value *st = value_struct_static(t->n_members);

    for (size_t i = 0; i < t->n_members; i++) {
        const struct xen_member *m = &t->members[i];
        value_struct_put_static(st, m->name, xen_encode(m->type,
                                                        rec + m->offset));
    }
    return st;
}

/* A map key as the wire wants it: always a string. */
static void
xen_encode_key(const struct xen_type *t, const void *slot, struct ds *out)
{
    struct value *v = xen_encode(t, slot);

    if (value_is_string(v) || v->type == VALUE_DATETIME) {
        ds_put(out, v->u.str.s, v->u.str.len);
    } else if (v->type == VALUE_INT) {
        ds_put_int(out, v->u.i);
    } else if (v->type == VALUE_BOOL) {
        ds_put_cstr(out, v->u.b ? "true" : "false");
    } else {
        char *text = value_to_text(v);
        ds_put_cstr(out, text);
        free(text);
    }
    value_unref(v);
}

static struct value *
xen_encode(const struct xen_type *t, const void *slot)
{
    /* Only pointer-sized slots may be read as a pointer: a bool slot is
     * one byte. */
    const char *p = t->slot_size == sizeof(char *)
                    && t->kind != XEN_TYPE_INT && t->kind != XEN_TYPE_FLOAT
                    && t->kind != XEN_TYPE_DATETIME
                    ? *(const char *const *) slot : NULL;

    switch (t->kind) {
    case XEN_TYPE_STRING:
        return p ? value_string(p) : value_empty_string();
    case XEN_TYPE_INT:
        return value_int(*(const int64_t *) slot);
    case XEN_TYPE_FLOAT:
        return value_double(*(const double *) slot);
    case XEN_TYPE_BOOL:
        return value_bool(*(const bool *) slot);
    case XEN_TYPE_DATETIME:
        return value_datetime_secs(*(const time_t *) slot);
    case XEN_TYPE_ENUM: {
        int e = *(const int *) slot;
        return e >= 0 && (size_t) e < t->n_enum_names
            ? value_string(t->enum_names[e]) : value_empty_string();
    }
    case XEN_TYPE_REF:
        return xen_encode_ref(p);
    case XEN_TYPE_SESSION: {
        const xen_session *s = *(const xen_session *const *) slot;
        return xen_encode_ref(s ? s->session_id : NULL);
    }
    case XEN_TYPE_SET: {
        size_t n = p ? *(const size_t *) p : 0;
        struct value *arr = value_array(n);
        for (size_t i = 0; i < n; i++) {
            value_array_append(arr, xen_encode(t->elem, p + t->contents_offset
                                               + i * t->entry_size));
        }
        return arr;
    }
    case XEN_TYPE_MAP: {
        size_t n = p ? *(const size_t *) p : 0;
        struct value *st = value_struct(n);
        struct ds key = DS_EMPTY;
        for (size_t i = 0; i < n; i++) {
            const char *entry = p + t->contents_offset + i * t->entry_size;
            ds_clear(&key);
            xen_encode_key(t->key, entry, &key);
            value_struct_put(st, ds_cstr(&key),
                             xen_encode(t->elem, entry + t->val_offset));
        }
        ds_destroy(&key);
        return st;
    }
    case XEN_TYPE_STRUCT:
        return p ? xen_encode_struct(t, p) : value_empty_struct();
    case XEN_TYPE_RECORD_OPT: {
        const struct xen_record_opt_ *opt = (const void *) p;
        if (!opt) {
            return value_null_ref();
        }
        /* A record given where a reference is wanted stands for the
         * object it describes: its handle. */
        if (opt->is_record) {
            return xen_encode_ref(opt->u.record
                                  ? *(const char *const *) opt->u.record
                                  : NULL);
        }
        return xen_encode_ref(opt->u.handle);
    }
    }
    xabort("xen_encode: bad type kind %d", t->kind);
}

/* ---- struct value to C values ---- */

struct xen_decoder {
    xen_session *session;
    struct ds where;            /* the path of the value, for errors */
};

static int
xen_decode_fail(struct xen_decoder *dec, const struct value *v,
                const char *want)
{
    char *msg = xasprintf("expected %s%s%s, got %s", want,
                          dec->where.len ? " at " : "",
                          dec->where.len ? dec->where.s : "",
                          value_type_name(v->type));
    xen_session_fail_(dec->session, "SERVER_FAULT", msg);
    free(msg);
    return -EINVAL;
}

static int xen_decode(struct xen_decoder *dec, const struct xen_type *t,
                      const struct value *v, void *slot);

static bool
xen_is_text(const struct value *v)
{
    return v->type == VALUE_STRING || v->type == VALUE_DATETIME;
}

static int
xen_decode_struct(struct xen_decoder *dec, const struct xen_type *t,
                  const struct value *v, void **ret_p)
{
    char *rec = xcalloc(1, t->struct_size);
    size_t where_len = dec->where.len;
    int rc = 0;

    for (size_t i = 0; i < t->n_members && !rc; i++) {
        const struct xen_member *m = &t->members[i];
        const struct value *mv = value_struct_get(v, m->name);
        if (!mv) {
            /* Fields the server does not send (older servers, removed
             * fields) stay zero. */
            continue;
        }
        ds_put_fmt(&dec->where, ".%s", m->name);
        rc = xen_decode(dec, m->type, mv, rec + m->offset);
        dec->where.len = where_len;
        dec->where.s[where_len] = '\0';
    }
    if (rc) {
        void *p = rec;
        xen_free_slot_(t, &p);
        return rc;
    }
    *ret_p = rec;
    return 0;
}

static int
xen_decode(struct xen_decoder *dec, const struct xen_type *t,
           const struct value *v, void *slot)
{
    int rc = 0;

    switch (t->kind) {
    case XEN_TYPE_STRING:
    case XEN_TYPE_REF:
        if (xen_is_text(v)) {
            *(char **) slot = xstrdup(v->u.str.s);
        } else if (v->type == VALUE_NIL) {
            *(char **) slot = NULL;
        } else if (t->kind == XEN_TYPE_STRING && v->type != VALUE_ARRAY
                   && v->type != VALUE_STRUCT) {
            *(char **) slot = value_to_text(v);
        } else {
            rc = xen_decode_fail(dec, v, "a string");
        }
        break;
    case XEN_TYPE_INT: {
        int64_t i = 0;
        if (v->type == VALUE_INT) {
            i = v->u.i;
        } else if (v->type == VALUE_STRING && !str_to_int64(v->u.str.s, &i)) {
            /* XenAPI sends its 64-bit ints as strings of digits. */
        } else if (v->type == VALUE_DOUBLE) {
            i = (int64_t) v->u.d;
        } else {
            rc = xen_decode_fail(dec, v, "an int");
            break;
        }
        *(int64_t *) slot = i;
        break;
    }
    case XEN_TYPE_FLOAT: {
        double d = 0;
        if (v->type == VALUE_DOUBLE) {
            d = v->u.d;
        } else if (v->type == VALUE_INT) {
            d = v->u.i;
        } else if (v->type != VALUE_STRING || str_to_double(v->u.str.s, &d)) {
            rc = xen_decode_fail(dec, v, "a float");
            break;
        }
        *(double *) slot = d;
        break;
    }
    case XEN_TYPE_BOOL:
        if (v->type == VALUE_BOOL) {
            *(bool *) slot = v->u.b;
        } else if (v->type == VALUE_STRING && (!strcmp(v->u.str.s, "true")
                                               || !strcmp(v->u.str.s, "1"))) {
            *(bool *) slot = true;
        } else if (v->type == VALUE_STRING && (!strcmp(v->u.str.s, "false")
                                               || !strcmp(v->u.str.s, "0"))) {
            *(bool *) slot = false;
        } else {
            rc = xen_decode_fail(dec, v, "a bool");
        }
        break;
    case XEN_TYPE_DATETIME: {
        int64_t secs = 0;
        if (v->type == VALUE_INT) {
            secs = v->u.i;
        } else if (!xen_is_text(v) || time_parse_xenapi(v->u.str.s, &secs)) {
            rc = xen_decode_fail(dec, v, "a datetime");
            break;
        }
        *(time_t *) slot = secs;
        break;
    }
    case XEN_TYPE_ENUM:
        if (!value_is_string(v)) {
            rc = xen_decode_fail(dec, v, "an enum value");
            break;
        }
        /* A value this SDK does not know (a newer server) becomes
         * ..._UNDEFINED rather than failing the whole call. */
        *(int *) slot = xen_enum_from_string_(t, v->u.str.s);
        break;
    case XEN_TYPE_SESSION:
        xabort("xen_decode: a session is never a result");
    case XEN_TYPE_SET: {
        size_t n;
        char *set;
        if (v->type != VALUE_ARRAY) {
            rc = xen_decode_fail(dec, v, "an array");
            break;
        }
        n = v->u.arr.n;
        set = xen_alloc_set_(t, n);
        for (size_t i = 0; i < n && !rc; i++) {
            rc = xen_decode(dec, t->elem, v->u.arr.items[i],
                            set + t->contents_offset + i * t->entry_size);
        }
        if (rc) {
            xen_free_slot_(t, &set);
            break;
        }
        *(char **) slot = set;
        break;
    }
    case XEN_TYPE_MAP: {
        size_t n;
        char *map;
        if (v->type != VALUE_STRUCT) {
            rc = xen_decode_fail(dec, v, "a struct");
            break;
        }
        n = v->u.st.n;
        map = xen_alloc_set_(t, n);
        for (size_t i = 0; i < n && !rc; i++) {
            char *entry = map + t->contents_offset + i * t->entry_size;
            struct value *key = value_string(v->u.st.m[i].name);
            rc = xen_decode(dec, t->key, key, entry);
            value_unref(key);
            if (!rc) {
                rc = xen_decode(dec, t->elem, v->u.st.m[i].v,
                                entry + t->val_offset);
            }
            /* get_all_records: each record learns its handle from its
             * key, as one from get_record does. */
            if (!rc && t->key->kind == XEN_TYPE_REF
                && t->elem->kind == XEN_TYPE_STRUCT && t->elem->has_handle) {
                char *rec = *(char **) (entry + t->val_offset);
                *(char **) rec = xstrdup(v->u.st.m[i].name);
            }
        }
        if (rc) {
            xen_free_slot_(t, &map);
            break;
        }
        *(char **) slot = map;
        break;
    }
    case XEN_TYPE_STRUCT:
        if (v->type != VALUE_STRUCT) {
            rc = xen_decode_fail(dec, v, "a struct");
            break;
        }
        rc = xen_decode_struct(dec, t, v, (void **) slot);
        break;
    case XEN_TYPE_RECORD_OPT: {
        struct xen_record_opt_ *opt;
        if (xen_is_text(v)) {
            opt = xcalloc(1, sizeof *opt);
            opt->u.handle = xstrdup(v->u.str.s);
        } else if (v->type == VALUE_STRUCT) {
            void *rec = NULL;
            rc = xen_decode_struct(dec, t->elem, v, &rec);
            if (rc) {
                break;
            }
            opt = xcalloc(1, sizeof *opt);
            opt->is_record = true;
            opt->u.record = rec;
        } else {
            rc = xen_decode_fail(dec, v, "a reference");
            break;
        }
        *(struct xen_record_opt_ **) slot = opt;
        break;
    }
    }
    return rc;
}

/* ---- allocation and freeing ---- */

void *
xen_alloc_set_(const struct xen_type *t, size_t size)
{
    char *set = xcalloc(1, t->contents_offset + size * t->entry_size);

    *(size_t *) set = size;
    return set;
}

void
xen_free_slot_(const struct xen_type *t, void *slot)
{
    char *p;

    switch (t->kind) {
    case XEN_TYPE_INT:
    case XEN_TYPE_FLOAT:
    case XEN_TYPE_BOOL:
    case XEN_TYPE_DATETIME:
    case XEN_TYPE_ENUM:
    case XEN_TYPE_SESSION:
        /* Nothing allocated: the slot holds the value itself (or the
         * caller's session).  Only pointer slots may be read as one: a
         * bool slot is one byte. */
        return;
    default:
        break;
    }
    p = *(char **) slot;
    if (!p) {
        return;
    }
    switch (t->kind) {
    case XEN_TYPE_STRING:
    case XEN_TYPE_REF:
        free(p);
        break;
    case XEN_TYPE_INT:
    case XEN_TYPE_FLOAT:
    case XEN_TYPE_BOOL:
    case XEN_TYPE_DATETIME:
    case XEN_TYPE_ENUM:
    case XEN_TYPE_SESSION:
        break;
    case XEN_TYPE_SET:
    case XEN_TYPE_MAP: {
        size_t n = *(size_t *) p;
        for (size_t i = 0; i < n; i++) {
            char *entry = p + t->contents_offset + i * t->entry_size;
            if (t->kind == XEN_TYPE_MAP) {
                xen_free_slot_(t->key, entry);
                xen_free_slot_(t->elem, entry + t->val_offset);
            } else {
                xen_free_slot_(t->elem, entry);
            }
        }
        free(p);
        break;
    }
    case XEN_TYPE_STRUCT:
        if (t->has_handle) {
            free(*(char **) p);
        }
        for (size_t i = 0; i < t->n_members; i++) {
            xen_free_slot_(t->members[i].type, p + t->members[i].offset);
        }
        free(p);
        break;
    case XEN_TYPE_RECORD_OPT: {
        struct xen_record_opt_ *opt = (void *) p;
        if (opt->is_record) {
            xen_free_slot_(t->elem, &opt->u.record);
        } else {
            free(opt->u.handle);
        }
        free(opt);
        break;
    }
    }
}

/* ---- calls ---- */

struct xen_response {
    struct ds body;
    bool too_big;
};

static bool
xen_response_append(const void *data, size_t len, void *result_handle)
{
    struct xen_response *r = result_handle;

    if (r->body.len + len > xen_response_limits.max_input) {
        r->too_big = true;
        return false;
    }
    ds_put(&r->body, data, len);
    return true;
}

/* Checks the {Status, Value | ErrorDescription} envelope; returns the
 * Value (borrowed) or NULL with the session failed. */
static const struct value *
xen_unwrap(xen_session *session, const struct value *response, bool fault)
{
    const char *status;

    if (fault) {
        const char *text = value_struct_get_string(response, "faultString");
        xen_session_fail_(session, "SERVER_FAULT",
                          text ? text : "XML-RPC fault");
        return NULL;
    }
    status = value_struct_get_string(response, "Status");
    if (status && !strcmp(status, "Success")) {
        const struct value *v = value_struct_get(response, "Value");
        if (v) {
            return v;
        }
    } else if (status && !strcmp(status, "Failure")) {
        const struct value *desc = value_struct_get(response,
                                                    "ErrorDescription");
        if (desc) {
            xen_session_fail_value(session, desc);
            return NULL;
        }
    }
    xen_session_fail_(session, "SERVER_FAULT",
                      "response is not a XenAPI Status struct");
    return NULL;
}

bool
xen_call_(xen_session *session, const char *method, bool with_session,
          const struct xen_arg *args, size_t n_args,
          const struct xen_type *result_type, void *result_slot)
{
    struct xen_response resp = { DS_EMPTY, false };
    struct xen_decoder dec = { session, DS_EMPTY };
    struct value *params = NULL, *response = NULL;
    struct ds req = DS_EMPTY;
    const struct value *v;
    char *err = NULL;
    bool fault = false;
    int r;

    if (!session->ok) {
        goto out;
    }
    params = value_array(n_args + 1);
    if (with_session) {
        value_array_append(params, xen_encode_ref(session->session_id));
    }
    for (size_t i = 0; i < n_args; i++) {
        value_array_append(params, xen_encode(args[i].type, args[i].slot));
    }
    xmlrpc_write_call(&req, method, params);
    r = session->call_func(req.s, req.len, session->handle, &resp,
                           xen_response_append);
    if (resp.too_big) {
        xen_session_fail_(session, "SERVER_FAULT", "response too large");
        goto out;
    }
    if (r) {
        err = xasprintf("the transport failed (%d) calling %s", r, method);
        xen_session_fail_(session, "TRANSPORT_FAULT", err);
        goto out;
    }
    if (xmlrpc_parse_response(resp.body.s ? resp.body.s : "", resp.body.len,
                              &xen_response_limits, &response, &fault,
                              &err)) {
        xen_session_fail_(session, "SERVER_FAULT", err);
        goto out;
    }
    v = xen_unwrap(session, response, fault);
    if (!v || !result_type) {
        goto out;
    }
    {
        /* Decoded into a local slot first, so that the caller's result is
         * written only on success. */
        union {
            char *p;
            int64_t i;
            double d;
            bool b;
            time_t t;
            int e;
        } tmp;
        memset(&tmp, 0, sizeof tmp);
        if (!xen_decode(&dec, result_type, v, &tmp)) {
            memcpy(result_slot, &tmp, result_type->slot_size);
        }
    }
out:
    ds_destroy(&dec.where);
    ds_destroy(&req);
    ds_destroy(&resp.body);
    value_unref(params);
    value_unref(response);
    free(err);
    return session->ok;
}

/* ---- sessions ---- */

static const char *const xen_api_version_names[] = {
    "1.1", "1.2", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7",
    "2.8", "2.9", "2.10", "2.11", "2.12", "2.13", "2.14", "2.15", "2.16",
    "2.20", "2.21",
};

const char *
xen_api_version_to_string(xen_api_version version)
{
    return (size_t) version < ARRAY_SIZE(xen_api_version_names)
        ? xen_api_version_names[version] : "";
}

void
xen_init(void)
{
}

void
xen_fini(void)
{
}

static xen_session *
xen_session_login(xen_call_func call_func, void *handle, const char *method,
                  const struct xen_arg *args, size_t n_args,
                  xen_api_version version)
{
    xen_session *session;
    char *id = NULL;

    if (!call_func) {
        return NULL;
    }
    session = xcalloc(1, sizeof *session);
    session->call_func = call_func;
    session->handle = handle;
    session->ok = true;
    session->api_version = version;
    if (xen_call_(session, method, false, args, n_args, &xen_type_string_,
                  &id)) {
        session->session_id = id;
    }
    return session;
}

xen_session *
xen_session_login_with_password(xen_call_func call_func, void *handle,
                                const char *uname, const char *pwd,
                                xen_api_version version)
{
    const char *version_text = xen_api_version_to_string(version);
    const struct xen_arg args[] = {
        { &xen_type_string_, &uname },
        { &xen_type_string_, &pwd },
        { &xen_type_string_, &version_text },
    };

    return xen_session_login(call_func, handle,
                             "session.login_with_password", args,
                             ARRAY_SIZE(args), version);
}

xen_session *
xen_session_slave_local_login_with_password(xen_call_func call_func,
                                            void *handle, const char *uname,
                                            const char *pwd)
{
    const struct xen_arg args[] = {
        { &xen_type_string_, &uname },
        { &xen_type_string_, &pwd },
    };

    return xen_session_login(call_func, handle,
                             "session.slave_local_login_with_password", args,
                             ARRAY_SIZE(args), xen_api_latest_version);
}

static void
xen_session_end(xen_session *session, const char *method)
{
    if (!session) {
        return;
    }
    if (session->session_id) {
        /* An earlier error must not stop the logout, or the server would
         * keep the session until it times out. */
        xen_session_clear_error(session);
        xen_call_(session, method, true, NULL, 0, NULL, NULL);
    }
    xen_session_free_error(session);
    free((char *) session->session_id);
    free(session);
}

void
xen_session_logout(xen_session *session)
{
    xen_session_end(session, "session.logout");
}

void
xen_session_local_logout(xen_session *session)
{
    xen_session_end(session, "session.local_logout");
}
