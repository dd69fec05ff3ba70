/* rpc.c — from HTTP request to API call and back: decodes XML-RPC and
 * JSON-RPC (1.0 and 2.0) requests, dispatches them through the generated
 * message table (count, session, roles, argument types) to a generic or
 * hand-written handler, and encodes the result in XenAPI's envelope.
 *
 * Order of checks, as XenAPI does them: unknown method, then parameter
 * count, then the session, then permissions, then argument types. */
#include <config.h>
#include "api.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec.h"
#include "http.h"
#include "types.h"

/* ---- errors ---- */

static void
set_error(struct api_ctx *ctx, struct value *err)
{
    value_unref(ctx->error);
    ctx->error = err;
}

int
api_failv(struct api_ctx *ctx, int err, const char *const *params, size_t n)
{
    const struct api_error_def *def = &api_errors[err];
    struct value *arr = value_array(n + 1);

    value_array_append(arr, value_string(def->code));
    for (size_t i = 0; i < n; i++) {
        const char *p = params[i] ? params[i] : "";

        /* XenServer spells the expected and actual power states of
         * VM_BAD_POWER_STATE in lower case ("halted"), unlike the
         * power_state field ("Halted") that callers pass; converting here
         * keeps every caller right. */
        if (err == ERR_VM_BAD_POWER_STATE && i > 0) {
            char *lower = xstrdup(p);
            for (char *c = lower; *c; c++) {
                *c = (char) tolower((unsigned char) *c);
            }
            value_array_append(arr, value_string(lower));
            free(lower);
            continue;
        }
        value_array_append(arr, value_string(p));
    }
    if (n != def->n_params) {
        LOG_WARN("error %s raised with %zu parameters, defined with %zu",
                 def->code, n, def->n_params);
    }
    set_error(ctx, arr);
    return -1;
}

int
api_fail(struct api_ctx *ctx, int err, ...)
{
    const struct api_error_def *def = &api_errors[err];
    const char *params[16];
    size_t n = 0;
    va_list ap;

    va_start(ap, err);
    for (; n < def->n_params && n < ARRAY_SIZE(params); n++) {
        params[n] = va_arg(ap, const char *);
    }
    va_end(ap);
    return api_failv(ctx, err, params, n);
}

int
api_fail_internal(struct api_ctx *ctx, const char *fmt, ...)
{
    struct ds ds = DS_EMPTY;
    const char *msg;
    va_list ap;

    va_start(ap, fmt);
    ds_put_vfmt(&ds, fmt, ap);
    va_end(ap);
    msg = ds_cstr(&ds);
    LOG_ERR("%s: internal error: %s", ctx->method, msg);
    api_fail(ctx, ERR_INTERNAL_ERROR, msg);
    ds_destroy(&ds);
    return -1;
}

int
api_fail_handle(struct api_ctx *ctx, int cls, const char *ref)
{
    return api_fail(ctx, ERR_HANDLE_INVALID, api_classes[cls].name, ref);
}

int
api_commit(struct api_ctx *ctx, struct db_txn *txn)
{
    int rc = db_commit(txn);

    if (rc) {
        return api_fail_internal(ctx, "database write failed: %s",
                                 strerror(-rc));
    }
    return 0;
}

struct value *
api_row_record(const struct db_row *row)
{
    const struct api_class *c = &api_classes[row->cls];
    struct value *rec = value_struct_static(c->n_fields);

    for (size_t i = 0; i < c->n_fields; i++) {
        value_struct_put_static(rec, c->fields[i].name,
                                value_ref(row->fields[i]));
    }
    return rec;
}

/* ---- dispatch ---- */

static struct value *
list_methods(void)
{
    struct value *arr = value_array(api_n_messages * 2);

    value_array_append(arr, value_string("system.listMethods"));
    for (size_t i = 0; i < api_n_messages; i++) {
        value_array_append(arr, value_string(api_messages[i].name));
        if (api_messages[i].async) {
            value_array_append(arr, value_stringf("Async.%s",
                                                  api_messages[i].name));
        }
    }
    return arr;
}

/* The local superuser passes every check, as in XenAPI, even for messages
 * that list no role at all. */
static bool
roles_allow(const struct api_message *m, const struct session *s)
{
    return session_is_superuser(s) || (m->roles & session_roles(s)) != 0;
}

/* XenAPI names the permission of a message by its lower-cased name. */
static char *
permission_name(const struct api_message *m)
{
    char *p = xstrdup(m->name);

    for (char *c = p; *c; c++) {
        if (*c >= 'A' && *c <= 'Z') {
            *c += 'a' - 'A';
        }
    }
    return p;
}

/* Fills args[] from the call's parameters, supplying defaults for omitted
 * trailing parameters. */
static int
coerce_args(struct api_ctx *ctx, struct value *params, struct value **args)
{
    const struct api_message *m = ctx->msg;

    for (size_t i = 0; i < m->n_params; i++) {
        const struct api_param *p = &m->params[i];
        struct value *in;
        bool from_default = false;
        int rc;

        if (i < params->u.arr.n) {
            in = value_ref(params->u.arr.items[i]);
        } else {
            char *err = NULL;
            if (json_parse(p->default_json, strlen(p->default_json),
                           &codec_default_limits, &in, &err)) {
                free(err);
                return api_fail_internal(ctx, "bad default for %s", p->name);
            }
            from_default = true;
        }
        rc = api_coerce(p->type, in, &args[i]);
        value_unref(in);
        if (rc) {
            if (from_default) {
                return api_fail_internal(ctx, "bad default for %s", p->name);
            }
            return api_fail(ctx, ERR_FIELD_TYPE_ERROR, p->name);
        }
    }
    return 0;
}

/* A call whose answer comes later (see api_defer). */
struct api_deferred {
    api_done_fn *done;
    void *done_aux;
    char *method;
};

struct api_deferred *
api_defer(struct api_ctx *ctx)
{
    struct api_deferred *d = xcalloc(1, sizeof *d);

    d->done = ctx->done;
    d->done_aux = ctx->done_aux;
    d->method = xstrdup(ctx->method);
    ctx->deferred = true;
    return d;
}

void
api_complete(struct api_deferred *d, struct value *result, struct value *error)
{
    if (!error && !result) {
        result = value_empty_string();
    }
    d->done(d->done_aux, error ? NULL : result, error);
    if (error) {
        value_unref(result);
    }
    free(d->method);
    free(d);
}

/* An Async call: the arguments are checked now, the work runs later on the
 * task executor (task.c) and its outcome lands in the task record. */
struct async_job {
    struct xapi *x;
    const struct api_message *msg;
    char *method;
    char *peer;
    struct session *session;
    struct value *args[API_MAX_PARAMS];
    char task_ref[48];
};

static void run_handler(struct api_ctx *ctx, struct value **args,
                        struct value **ret_result);

static void
async_task_done(void *aux, struct value *result, struct value *error)
{
    char *task_ref = aux;

    task_complete_ref(task_ref, result, error);
    value_unref(result);
    value_unref(error);
    free(task_ref);
}

static void
async_job_run(void *aux)
{
    struct async_job *job = aux;
    struct api_ctx ctx = {
        .x = job->x, .msg = job->msg, .method = job->method,
        .session = job->session, .peer = job->peer,
        .done = async_task_done, .done_aux = xstrdup(job->task_ref),
    };
    struct value *result = NULL;

    snprintf(ctx.task, sizeof ctx.task, "%s", job->task_ref);
    task_started(job->x, job->task_ref);
    run_handler(&ctx, job->args, &result);
    if (!ctx.deferred) {
        async_task_done(ctx.done_aux, ctx.error ? NULL : result, ctx.error);
        if (ctx.error) {
            value_unref(result);
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(job->args); i++) {
        value_unref(job->args[i]);
    }
    session_unref(job->session);
    free(job->method);
    free(job->peer);
    free(job);
}

/* Runs the handler of ctx->msg; on return either ctx->error is set, or
 * *ret_result is, or the call was deferred. */
static void
run_handler(struct api_ctx *ctx, struct value **args, struct value **ret_result)
{
    api_handler_fn *fn = api_find_handler(ctx->msg->name);
    int rc;

    if (api_call_begin_hook) {
        api_call_begin_hook(ctx, args);
    }
    if (fn) {
        rc = fn(ctx, args, ret_result);
    } else if (ctx->msg->kind != MSG_CUSTOM) {
        rc = api_generic(ctx, args, ret_result);
    } else {
        rc = api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
    }
    if (rc == API_DEFERRED) {
        if (!ctx->deferred) {
            api_fail_internal(ctx, "handler deferred without api_defer");
        }
        return;
    }
    if (rc && !ctx->error) {
        api_fail_internal(ctx, "handler failed without an error");
    }
    if (api_call_hook) {
        api_call_hook(ctx, args, ctx->error ? NULL : *ret_result, ctx->error);
    }
}

api_call_hook_fn *api_call_hook;
api_call_begin_hook_fn *api_call_begin_hook;

void
api_dispatch(struct xapi *x, const char *method, struct value *params,
             const char *peer, api_done_fn *done, void *done_aux)
{
    struct api_ctx ctx = { .x = x, .method = method, .peer = peer,
                           .done = done, .done_aux = done_aux };
    struct value *args[API_MAX_PARAMS] = { NULL };
    struct value *result = NULL;
    const char *name = method;
    bool async = false;
    int idx;

    if (!strcmp(method, "system.listMethods")) {
        done(done_aux, list_methods(), NULL);
        return;
    }
    if (str_starts_with(method, "Async.")) {
        name = method + 6;
        async = true;
    }
    idx = api_message_find(name);
    if (idx < 0 || (async && !api_messages[idx].async)) {
        api_fail(&ctx, ERR_MESSAGE_METHOD_UNKNOWN, method);
        goto out;
    }
    ctx.msg = &api_messages[idx];
    if (params->u.arr.n > ctx.msg->n_params
        || params->u.arr.n < ctx.msg->n_required) {
        char want[24], got[24];
        snprintf(want, sizeof want, "%zu", ctx.msg->n_params);
        snprintf(got, sizeof got, "%zu", params->u.arr.n);
        api_fail(&ctx, ERR_MESSAGE_PARAMETER_COUNT_MISMATCH, method, want, got);
        goto out;
    }
    if (ctx.msg->has_session) {
        struct value *s = params->u.arr.items[0];
        const char *sref = s->type == VALUE_STRING ? s->u.str.s : "";
        ctx.session = session_lookup(x, sref);
        if (!ctx.session) {
            api_fail(&ctx, ERR_SESSION_INVALID, sref);
            goto out;
        }
        if (!roles_allow(ctx.msg, ctx.session)) {
            char *perm = permission_name(ctx.msg);
            api_fail(&ctx, ERR_RBAC_PERMISSION_DENIED, perm, method);
            free(perm);
            if (api_call_hook) {
                api_call_hook(&ctx, NULL, NULL, ctx.error);
            }
            goto out;
        }
    }
    if (ctx.msg->lifecycle == API_REMOVED) {
        api_fail(&ctx, ERR_MESSAGE_REMOVED);
        goto out;
    }
    if (ctx.msg->n_params > ARRAY_SIZE(args)) {
        api_fail_internal(&ctx, "too many parameters");
        goto out;
    }
    if (coerce_args(&ctx, params, args)) {
        goto out;
    }
    if (async) {
        struct async_job *job = xcalloc(1, sizeof *job);
        if (task_create_for_call(&ctx, job->task_ref)) {
            free(job);
            goto out;
        }
        job->x = x;
        job->msg = ctx.msg;
        job->method = xstrdup(method);
        job->peer = xstrdup(peer);
        job->session = ctx.session;
        ctx.session = NULL;
        memcpy(job->args, args, sizeof args);
        memset(args, 0, sizeof args);
        result = value_string(job->task_ref);
        task_submit(x, async_job_run, job);
        goto out;
    }
    run_handler(&ctx, args, &result);
out:
    for (size_t i = 0; i < ARRAY_SIZE(args); i++) {
        value_unref(args[i]);
    }
    session_unref(ctx.session);
    if (ctx.deferred && !ctx.error) {
        return;     /* the handler answers later through api_complete */
    }
    if (ctx.error) {
        value_unref(result);
        if (log_enabled(LOG_LVL_DEBUG)) {
            char *t = value_to_text(ctx.error);
            LOG_DBG("%s %s -> %s", peer, method, t);
            free(t);
        }
        done(done_aux, NULL, ctx.error);
    } else {
        done(done_aux, result ? result : value_empty_string(), NULL);
    }
}

/* ---- HTTP glue ---- */

/* Reserves room for a large result before encoding it, from the encoded
 * size of its first item: one fresh allocation, advised to use huge pages
 * before it is touched, costs far less than growing a 70 MB buffer page by
 * page (see ds_reserve). */
static void
presize(struct ds *out, const struct value *v, bool xml)
{
    struct ds probe = DS_EMPTY;
    size_t n;

    if (v->type == VALUE_STRUCT) {
        n = v->u.st.n;
    } else if (v->type == VALUE_ARRAY) {
        n = v->u.arr.n;
    } else {
        return;
    }
    if (n < 256) {
        return;
    }
    if (v->type == VALUE_STRUCT) {
        ds_put(&probe, v->u.st.m[0].name, strlen(v->u.st.m[0].name));
        if (xml) {
            xmlrpc_write_value(&probe, v->u.st.m[0].v);
        } else {
            json_write(&probe, v->u.st.m[0].v);
        }
    } else if (xml) {
        xmlrpc_write_value(&probe, v->u.arr.items[0]);
    } else {
        json_write(&probe, v->u.arr.items[0]);
    }
    ds_reserve(out, (probe.len + 64) * n + n / 8 * probe.len + 4096);
    ds_destroy(&probe);
}

#define CORS_HEADERS                                                   \
    "Access-Control-Allow-Origin: *\r\n"                               \
    "Access-Control-Allow-Methods: POST, GET, OPTIONS\r\n"             \
    "Access-Control-Allow-Headers: Content-Type, Authorization\r\n"    \
    "Access-Control-Max-Age: 86400"

static void
respond_text(struct http_exchange *hx, int status, const char *text)
{
    http_respond(hx, status, "text/plain; charset=utf-8", NULL, text,
                 strlen(text));
}

/* How to answer one RPC over HTTP once its result is known. */
struct rpc_reply {
    struct http_exchange *hx;
    bool json;
    bool json_v2;
    bool plain;             /* system.* over XML-RPC: no envelope */
    struct value *id;       /* JSON-RPC id */
};

static void
rpc_reply_done(void *aux, struct value *result, struct value *error)
{
    struct rpc_reply *r = aux;
    struct ds out = DS_EMPTY;
    size_t len;

    ds_reserve(&out, 256);
    if (result) {
        presize(&out, result, !r->json);
    }
    if (!r->json) {
        if (error) {
            xmlrpc_write_failure(&out, error);
        } else if (r->plain) {
            xmlrpc_write_plain(&out, result);
        } else {
            xmlrpc_write_success(&out, result);
        }
    } else {
        ds_put_char(&out, '{');
        if (r->json_v2) {
            ds_put_cstr(&out, "\"jsonrpc\":\"2.0\",");
            if (error) {
                ds_put_cstr(&out, "\"error\":{\"code\":1,\"message\":");
                json_write(&out, error->u.arr.items[0]);
                ds_put_cstr(&out, ",\"data\":[");
                for (size_t i = 1; i < error->u.arr.n; i++) {
                    if (i > 1) {
                        ds_put_char(&out, ',');
                    }
                    json_write(&out, error->u.arr.items[i]);
                }
                ds_put_cstr(&out, "]}");
            } else {
                ds_put_cstr(&out, "\"result\":");
                json_write(&out, result);
            }
        } else {
            ds_put_cstr(&out, "\"result\":");
            if (error) {
                ds_put_cstr(&out, "null,\"error\":");
                json_write(&out, error);
            } else {
                json_write(&out, result);
                ds_put_cstr(&out, ",\"error\":null");
            }
        }
        ds_put_cstr(&out, ",\"id\":");
        json_write(&out, r->id);
        ds_put_char(&out, '}');
    }
    len = out.len;
    http_respond_take(r->hx, 200, r->json ? "application/json" : "text/xml",
                      CORS_HEADERS, ds_steal(&out), len);
    value_unref(result);
    value_unref(error);
    value_unref(r->id);
    free(r);
}

static void
handle_xmlrpc(struct xapi *x, struct http_exchange *hx,
              const struct http_request *req)
{
    struct value *params = NULL;
    char *method = NULL, *err = NULL;
    struct rpc_reply *r;

    if (xmlrpc_parse_call(req->body, req->body_len, &codec_default_limits,
                          &method, &params, &err)) {
        char *msg = xasprintf("malformed XML-RPC request: %s\n", err);
        respond_text(hx, 400, msg);
        free(msg);
        goto out;
    }
    r = xcalloc(1, sizeof *r);
    r->hx = hx;
    r->plain = str_starts_with(method, "system.");
    api_dispatch(x, method, params, req->peer, rpc_reply_done, r);
out:
    free(method);
    free(err);
    value_unref(params);
}

static void
handle_jsonrpc(struct xapi *x, struct http_exchange *hx,
               const struct http_request *req)
{
    struct value *body = NULL, *mv, *pv, *idv, *ver, *empty = NULL;
    struct rpc_reply *r;
    char *err = NULL;
    bool v2;

    if (json_parse(req->body, req->body_len, &codec_default_limits, &body,
                   &err)) {
        char *msg = xasprintf("malformed JSON-RPC request: %s\n", err);
        respond_text(hx, 400, msg);
        free(msg);
        goto out;
    }
    mv = value_struct_get(body, "method");
    pv = value_struct_get(body, "params");
    idv = value_struct_get(body, "id");
    ver = value_struct_get(body, "jsonrpc");
    v2 = ver && ver->type == VALUE_STRING && !strcmp(ver->u.str.s, "2.0");
    if (body->type != VALUE_STRUCT || !mv || mv->type != VALUE_STRING
        || (pv && pv->type != VALUE_ARRAY) || !idv
        || (idv->type != VALUE_STRING && idv->type != VALUE_INT
            && idv->type != VALUE_DOUBLE)
        || (ver && !v2)) {
        respond_text(hx, 400, "malformed JSON-RPC request: need method, "
                     "params (array) and a non-null id\n");
        goto out;
    }
    if (!pv) {
        pv = empty = value_array(0);
    }
    r = xcalloc(1, sizeof *r);
    r->hx = hx;
    r->json = true;
    r->json_v2 = v2;
    r->id = value_ref(idv);
    api_dispatch(x, mv->u.str.s, pv, req->peer, rpc_reply_done, r);
out:
    free(err);
    value_unref(body);
    value_unref(empty);
}

void
rpc_http_handler(struct http_exchange *hx, void *aux)
{
    struct xapi *x = aux;
    const struct http_request *req = http_exchange_request(hx);
    const char *path = req->path;
    bool xml = !strcmp(path, "/") || !strcmp(path, "/RPC2");
    bool json = !strcmp(path, "/jsonrpc") || !strcmp(path, "/json");

    if (!strcmp(path, "/audit_log")) {
        audit_http_handler(hx, x);
    } else if (!strcmp(path, "/console")) {
        console_http_handler(hx, x);
    } else if (!strcmp(path, "/import_raw_vdi")
               || !strcmp(path, "/export_raw_vdi")) {
        vdi_io_http_handler(hx, x);
    } else if (!strcmp(path, "/import") || !strcmp(path, "/export")) {
        xva_http_handler(hx, x);
    } else if (!strcmp(req->method, "OPTIONS")) {
        http_respond(hx, 200, NULL, CORS_HEADERS, "", 0);
    } else if ((xml || json) && !strcmp(req->method, "POST")) {
        if (json) {
            handle_jsonrpc(x, hx, req);
        } else {
            handle_xmlrpc(x, hx, req);
        }
    } else if ((xml || json) && !strcmp(req->method, "GET")) {
        respond_text(hx, 200, "xapi: POST XML-RPC to / or /RPC2, "
                     "JSON-RPC to /jsonrpc\n");
    } else if (xml || json) {
        http_respond(hx, 405, "text/plain", "Allow: POST, GET, OPTIONS",
                     "method not allowed\n", 19);
    } else {
        respond_text(hx, 404, "not found\n");
    }
}
