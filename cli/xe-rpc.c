/* xe-rpc.c — xe's connection to the toolstack: HTTP/1.1 with keep-alive on
 * the local Unix socket, on TCP, or on TCP with TLS (OpenSSL), XML-RPC calls
 * through lib/'s codec, login and logout, waiting on tasks, and the
 * streaming HTTP transfers that import and export use.
 *
 * One connection carries every call of a command, so `xe vm-list` costs
 * one connect, one login, one get_all_records_where and one logout. */
#include <config.h>
#include "xe.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "codec.h"

struct xe_conn {
    struct xe_config cfg;       /* borrowed strings */
    int fd;
    SSL_CTX *ssl_ctx;
    SSL *ssl;
    char *session;
    /* Bytes read past the end of the last response. */
    char *rbuf;
    size_t rlen, rcap;
};

/* Responses are read whole into memory; 10,000 VM records are about 60 MB,
 * so allow well beyond that. */
static const struct codec_limits response_limits = {
    .max_input = (size_t)1 << 30,
    .max_depth = 64,
    .max_string = (size_t)256 << 20,
    .max_items = (size_t)64 << 20,
};

const char *
xe_session(const struct xe_conn *conn)
{
    return conn->session;
}

static void
conn_close_socket(struct xe_conn *conn)
{
    if (conn->ssl) {
        SSL_shutdown(conn->ssl);
        SSL_free(conn->ssl);
        conn->ssl = NULL;
    }
    if (conn->fd >= 0) {
        close(conn->fd);
        conn->fd = -1;
    }
    conn->rlen = 0;
}

static int
conn_open_socket(struct xe_conn *conn)
{
    int fd = -1;

    if (!conn->cfg.server) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(conn->cfg.socket_path) >= sizeof sa.sun_path) {
            fprintf(stderr, "Error: socket path too long: %s\n",
                    conn->cfg.socket_path);
            return -1;
        }
        strcpy(sa.sun_path, conn->cfg.socket_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            fprintf(stderr, "Error: cannot connect to %s: %s\n",
                    conn->cfg.socket_path, strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            return -1;
        }
    } else {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
        struct addrinfo *res = NULL, *ai;
        char port[16];
        int r;

        snprintf(port, sizeof port, "%d", conn->cfg.port);
        r = getaddrinfo(conn->cfg.server, port, &hints, &res);
        if (r) {
            fprintf(stderr, "Error: cannot resolve %s: %s\n",
                    conn->cfg.server, gai_strerror(r));
            return -1;
        }
        for (ai = res; ai; ai = ai->ai_next) {
            fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                        ai->ai_protocol);
            if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
                break;
            }
            if (fd >= 0) {
                close(fd);
                fd = -1;
            }
        }
        freeaddrinfo(res);
        if (fd < 0) {
            fprintf(stderr, "Error: cannot connect to %s:%d: %s\n",
                    conn->cfg.server, conn->cfg.port, strerror(errno));
            return -1;
        }
        if (!conn->cfg.nossl) {
            if (!conn->ssl_ctx) {
                conn->ssl_ctx = SSL_CTX_new(TLS_client_method());
                SSL_CTX_set_min_proto_version(conn->ssl_ctx, TLS1_2_VERSION);
            }
            /* Like XenServer's xe, the server's self-signed certificate is
             * not verified. */
            conn->ssl = SSL_new(conn->ssl_ctx);
            SSL_set_fd(conn->ssl, fd);
            SSL_set_tlsext_host_name(conn->ssl, conn->cfg.server);
            if (SSL_connect(conn->ssl) != 1) {
                fprintf(stderr, "Error: TLS handshake with %s:%d failed\n",
                        conn->cfg.server, conn->cfg.port);
                SSL_free(conn->ssl);
                conn->ssl = NULL;
                close(fd);
                return -1;
            }
        }
    }
    conn->fd = fd;
    return 0;
}

static int
conn_write(struct xe_conn *conn, const void *p, size_t n)
{
    const char *s = p;

    while (n) {
        ssize_t w;
        if (conn->ssl) {
            int r = SSL_write(conn->ssl, s, n > INT32_MAX ? INT32_MAX : (int)n);
            w = r > 0 ? r : -1;
        } else {
            w = send(conn->fd, s, n, MSG_NOSIGNAL);
        }
        if (w < 0) {
            if (!conn->ssl && errno == EINTR) {
                continue;
            }
            return -1;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads at most n bytes; returns the count, 0 at end of stream, -1. */
static ssize_t
conn_read_raw(struct xe_conn *conn, char *buf, size_t n)
{
    if (conn->ssl) {
        int r = SSL_read(conn->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
        if (r > 0) {
            return r;
        }
        return SSL_get_error(conn->ssl, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
    }
    for (;;) {
        ssize_t r = recv(conn->fd, buf, n, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        return r;
    }
}

/* Reads more into the connection's buffer; returns bytes added, 0, -1. */
static ssize_t
conn_fill(struct xe_conn *conn)
{
    ssize_t r;

    if (conn->rcap - conn->rlen < 65536) {
        conn->rcap = MAX(conn->rcap * 2, conn->rlen + 65536);
        conn->rbuf = xrealloc(conn->rbuf, conn->rcap);
    }
    r = conn_read_raw(conn, conn->rbuf + conn->rlen, conn->rcap - conn->rlen);
    if (r > 0) {
        conn->rlen += (size_t)r;
    }
    return r;
}

static void
conn_consume(struct xe_conn *conn, size_t n)
{
    memmove(conn->rbuf, conn->rbuf + n, conn->rlen - n);
    conn->rlen -= n;
}

/* The parsed head of an HTTP response. */
struct http_head {
    int status;
    int64_t content_length;     /* -1: not given */
    bool chunked;
    bool close;
    char *task_id;              /* a task-id header, if any */
};

static void
http_head_clear(struct http_head *h)
{
    free(h->task_id);
    h->task_id = NULL;
}

static bool
header_is(const char *line, size_t len, const char *name, const char **value)
{
    size_t n = strlen(name);
    if (len > n && !strncasecmp(line, name, n) && line[n] == ':') {
        const char *v = line + n + 1;
        while (*v == ' ' || *v == '\t') {
            v++;
        }
        *value = v;
        return true;
    }
    return false;
}

/* Reads a response head from the connection; consumes it. */
static int
read_head(struct xe_conn *conn, struct http_head *h)
{
    char *end;
    size_t head_len;

    memset(h, 0, sizeof *h);
    h->content_length = -1;
    for (;;) {
        end = conn->rlen ? memmem(conn->rbuf, conn->rlen, "\r\n\r\n", 4) : NULL;
        if (end) {
            break;
        }
        if (conn->rlen > 65536 || conn_fill(conn) <= 0) {
            return -1;
        }
    }
    head_len = (size_t)(end - conn->rbuf) + 4;
    end[2] = '\0';
    if (sscanf(conn->rbuf, "HTTP/%*d.%*d %d", &h->status) != 1) {
        return -1;
    }
    for (char *line = strstr(conn->rbuf, "\r\n") + 2; *line;) {
        char *eol = strstr(line, "\r\n");
        const char *v;
        size_t len = (size_t)(eol - line);
        *eol = '\0';
        if (header_is(line, len, "Content-Length", &v)) {
            h->content_length = strtoll(v, NULL, 10);
        } else if (header_is(line, len, "Transfer-Encoding", &v)) {
            h->chunked = strstr(v, "chunked") != NULL;
        } else if (header_is(line, len, "Connection", &v)) {
            h->close = !strcasecmp(v, "close");
        } else if (header_is(line, len, "task-id", &v)) {
            free(h->task_id);
            h->task_id = xstrdup(v);
        }
        line = eol + 2;
    }
    conn_consume(conn, head_len);
    return 0;
}

/* Reads a body framed by Content-Length, chunks or the end of stream. */
static int
read_body(struct xe_conn *conn, const struct http_head *h, struct ds *body)
{
    if (h->chunked) {
        for (;;) {
            char *eol;
            unsigned long long size;
            while (!(eol = conn->rlen ? memmem(conn->rbuf, conn->rlen, "\r\n", 2)
                                      : NULL)) {
                if (conn_fill(conn) <= 0) {
                    return -1;
                }
            }
            size = strtoull(conn->rbuf, NULL, 16);
            conn_consume(conn, (size_t)(eol - conn->rbuf) + 2);
            while (conn->rlen < size + 2) {
                if (conn_fill(conn) <= 0) {
                    return -1;
                }
            }
            ds_put(body, conn->rbuf, size);
            conn_consume(conn, size + 2);
            if (size == 0) {
                return 0;
            }
        }
    }
    if (h->content_length >= 0) {
        size_t want = (size_t)h->content_length;
        ds_reserve(body, want);
        while (conn->rlen < want) {
            size_t have = conn->rlen;
            ds_put(body, conn->rbuf, have);
            conn->rlen = 0;
            want -= have;
            if (conn_fill(conn) <= 0) {
                return -1;
            }
        }
        ds_put(body, conn->rbuf, want);
        conn_consume(conn, want);
        return 0;
    }
    for (;;) {
        ds_put(body, conn->rbuf, conn->rlen);
        conn->rlen = 0;
        ssize_t r = conn_fill(conn);
        if (r < 0) {
            return -1;
        }
        if (r == 0) {
            return 0;
        }
    }
}

/* Which wire protocol carries the calls.  JSON-RPC is the default: for a
 * listing of 10,000 VMs its answer is 2.5 times smaller than XML-RPC's and
 * parses faster, and the listing is most of xe's time.  XE_PROTOCOL=xmlrpc
 * chooses XML-RPC (POST /), for daemons without /jsonrpc. */
static bool
use_xmlrpc(void)
{
    const char *p = getenv("XE_PROTOCOL");
    return p && !strcmp(p, "xmlrpc");
}

static void
write_request(const char *method, const struct value *params, struct ds *body)
{
    if (use_xmlrpc()) {
        xmlrpc_write_call(body, method, params);
        return;
    }
    ds_put_cstr(body, "{\"method\": ");
    ds_put_json_string(body, method, strlen(method));
    ds_put_cstr(body, ", \"params\": ");
    json_write(body, params);
    ds_put_cstr(body, ", \"id\": 1}");
}

/* Decodes an answer into XenAPI's XML-RPC envelope ({Status, Value} or
 * {Status, ErrorDescription}), whichever protocol carried it. */
static int
read_envelope(const char *buf, size_t len, struct value **ret)
{
    struct value *v = NULL, *env = NULL, *e;
    bool fault = false;
    char *err = NULL;
    int rc = -1;

    if (use_xmlrpc()) {
        if (xmlrpc_parse_response(buf, len, &response_limits, &v, &fault,
                                  &err) < 0) {
            fprintf(stderr, "Error: cannot parse the server's answer: %s\n",
                    err);
            goto out;
        }
        if (fault) {
            fprintf(stderr, "Error: XML-RPC fault: %s\n",
                    value_struct_get_string(v, "faultString") ?: "?");
            goto out;
        }
        *ret = v;
        v = NULL;
        rc = 0;
        goto out;
    }
    if (json_parse(buf, len, &response_limits, &v, &err) < 0
        || v->type != VALUE_STRUCT) {
        fprintf(stderr, "Error: cannot parse the server's answer: %s\n",
                err ? err : "not an object");
        goto out;
    }
    /* JSON-RPC 1.0: {"result": ..., "error": null | [CODE, params...]}. */
    e = value_struct_get(v, "error");
    env = value_struct(2);
    if (e && e->type == VALUE_ARRAY) {
        value_struct_put(env, "Status", value_string("Failure"));
        value_struct_put(env, "ErrorDescription", value_ref(e));
    } else if (e && e->type == VALUE_STRUCT) {
        /* A 2.0 answer: {code, message, data: [CODE, params...]}. */
        struct value *data = value_struct_get(e, "data");
        value_struct_put(env, "Status", value_string("Failure"));
        value_struct_put(env, "ErrorDescription",
                         value_ref(data ? data : value_empty_array()));
    } else {
        struct value *r = value_struct_get(v, "result");
        value_struct_put(env, "Status", value_string("Success"));
        value_struct_put(env, "Value", value_ref(r ? r : value_empty_string()));
    }
    *ret = env;
    env = NULL;
    rc = 0;
out:
    value_unref(v);
    value_unref(env);
    free(err);
    return rc;
}

/* Sends one request and returns the decoded response envelope.
 * Reconnects once if a kept-alive connection was closed by the server. */
static int
rpc_roundtrip(struct xe_conn *conn, const char *method,
              const struct value *params, struct value **ret_value)
{
    struct ds req = DS_EMPTY, body = DS_EMPTY, head = DS_EMPTY;
    struct http_head h = { 0 };
    int rc = -1;

    write_request(method, params, &body);
    ds_put_fmt(&head, "POST %s HTTP/1.1\r\nHost: %s\r\n"
               "User-Agent: xe\r\nContent-Type: %s\r\n"
               "Content-Length: %zu\r\n\r\n",
               use_xmlrpc() ? "/" : "/jsonrpc",
               conn->cfg.server ? conn->cfg.server : "localhost",
               use_xmlrpc() ? "text/xml" : "application/json", body.len);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (conn->fd < 0 && conn_open_socket(conn) < 0) {
            goto out;
        }
        if (conn_write(conn, head.s, head.len) == 0
            && conn_write(conn, body.s, body.len) == 0
            && read_head(conn, &h) == 0) {
            break;
        }
        http_head_clear(&h);
        conn_close_socket(conn);
        if (attempt == 1) {
            fprintf(stderr, "Error: the connection to the server failed\n");
            goto out;
        }
    }
    if (read_body(conn, &h, &req) < 0) {
        fprintf(stderr, "Error: the connection to the server failed\n");
        conn_close_socket(conn);
        goto out;
    }
    if (h.close) {
        conn_close_socket(conn);
    }
    if (h.status != 200) {
        fprintf(stderr, "Error: the server answered HTTP %d\n", h.status);
        goto out;
    }
    rc = read_envelope(req.s ? req.s : "", req.len, ret_value);
out:
    http_head_clear(&h);
    ds_destroy(&req);
    ds_destroy(&body);
    ds_destroy(&head);
    return rc;
}

/* Calls a method whose first parameter is given explicitly; returns 0 with
 * the Value, 1 with the ErrorDescription (XenAPI failure), -1 on transport
 * trouble (already reported). */
static int
rpc_call_raw(struct xe_conn *conn, const char *method,
             const struct value *params, struct value **ret_value)
{
    struct value *env = NULL;
    const char *status;
    int rc;

    rc = rpc_roundtrip(conn, method, params, &env);
    if (rc) {
        return -1;
    }
    status = value_struct_get_string(env, "Status");
    if (status && !strcmp(status, "Success")) {
        struct value *v = value_struct_get(env, "Value");
        *ret_value = value_ref(v ? v : value_empty_string());
        rc = 0;
    } else {
        struct value *e = value_struct_get(env, "ErrorDescription");
        *ret_value = value_ref(e ? e : value_empty_array());
        rc = 1;
    }
    value_unref(env);
    return rc;
}

int
xe_call(struct xe_conn *conn, const char *method, const struct value *params,
        struct value **ret_value)
{
    struct value *all = value_array(params ? params->u.arr.n + 1 : 1);
    struct value *v = NULL;
    int rc;

    value_array_append(all, value_string(conn->session));
    for (size_t i = 0; params && i < params->u.arr.n; i++) {
        value_array_append(all, value_ref(params->u.arr.items[i]));
    }
    if (conn->cfg.debug) {
        fprintf(stderr, "xe: call %s\n", method);
    }
    rc = rpc_call_raw(conn, method, all, &v);
    value_unref(all);
    if (rc == 0) {
        *ret_value = v;
        return 0;
    }
    if (rc == 1) {
        xe_print_api_error(v);
        value_unref(v);
    }
    return -1;
}

int
xe_callv(struct xe_conn *conn, const char *method, struct value **ret_value,
         ...)
{
    struct value *params = value_array(4);
    struct value *v = NULL;
    const char *s;
    va_list ap;
    int rc;

    va_start(ap, ret_value);
    while ((s = va_arg(ap, const char *))) {
        value_array_append(params, value_string(s));
    }
    va_end(ap);
    rc = xe_call(conn, method, params, &v);
    value_unref(params);
    if (rc == 0) {
        if (ret_value) {
            *ret_value = v;
        } else {
            value_unref(v);
        }
    }
    return rc;
}

int
xe_connect(const struct xe_config *cfg, struct xe_conn **ret_conn)
{
    struct xe_conn *conn = xcalloc(1, sizeof *conn);
    struct value *params = value_array(4), *v = NULL;
    int rc;

    conn->cfg = *cfg;
    conn->fd = -1;
    value_array_append(params, value_string(cfg->username ? cfg->username
                                                          : "root"));
    value_array_append(params, value_string(cfg->password ? cfg->password
                                                          : ""));
    value_array_append(params, value_string("1.0"));
    value_array_append(params, value_string("xe"));
    rc = rpc_call_raw(conn, "session.login_with_password", params, &v);
    value_unref(params);
    if (rc == 1) {
        xe_print_api_error(v);
        if (!cfg->server && !cfg->password) {
            fprintf(stderr, "(The local socket needs the root password: give "
                    "-pw, -pwf or XE_PASSWORD; see docs/xe.md.)\n");
        }
    }
    if (rc) {
        value_unref(v);
        xe_disconnect(conn);
        return -1;
    }
    conn->session = xstrdup(value_is_string(v) ? v->u.str.s : "");
    value_unref(v);
    *ret_conn = conn;
    return 0;
}

void
xe_disconnect(struct xe_conn *conn)
{
    if (!conn) {
        return;
    }
    if (conn->session) {
        struct value *params = value_array(1), *v = NULL;
        value_array_append(params, value_string(conn->session));
        if (rpc_call_raw(conn, "session.logout", params, &v) >= 0) {
            value_unref(v);
        }
        value_unref(params);
        free(conn->session);
    }
    conn_close_socket(conn);
    SSL_CTX_free(conn->ssl_ctx);
    free(conn->rbuf);
    free(conn);
}

/* ---- progress ---- */

static void
progress_draw(double fraction)
{
    int width = 50, done = (int)(fraction * width + 0.5);

    if (done > width) {
        done = width;
    }
    fprintf(stderr, "\r[");
    for (int i = 0; i < width; i++) {
        fputc(i < done ? '#' : ' ', stderr);
    }
    fprintf(stderr, "] %3d%%", (int)(fraction * 100 + 0.5));
    fflush(stderr);
}

static void
progress_end(void)
{
    fputc('\n', stderr);
}

int
xe_wait_task(struct xe_conn *conn, const char *task, bool show_progress,
             struct value **ret_result)
{
    struct value *rec = NULL, *result = NULL;
    int rc = -1;

    show_progress = show_progress && isatty(STDERR_FILENO);
    for (;;) {
        const char *status;
        struct value *p;

        value_unref(rec);
        rec = NULL;
        if (xe_callv(conn, "task.get_record", &rec, task, NULL)) {
            goto out;
        }
        status = value_struct_get_string(rec, "status");
        p = value_struct_get(rec, "progress");
        if (show_progress && p && p->type == VALUE_DOUBLE) {
            progress_draw(p->u.d);
        }
        if (status && strcmp(status, "pending") && strcmp(status, "cancelling")) {
            break;
        }
        usleep(50 * 1000);
    }
    if (show_progress) {
        progress_end();
    }
    if (!strcmp(value_struct_get_string(rec, "status"), "success")) {
        const char *text = value_struct_get_string(rec, "result");
        char *err = NULL;
        if (text && *text) {
            struct ds doc = DS_EMPTY;
            bool fault;
            /* The result is an XML-RPC <value>, as XenAPI stores it. */
            ds_put_fmt(&doc, "<methodResponse><params><param>%s</param>"
                       "</params></methodResponse>", text);
            if (xmlrpc_parse_response(doc.s, doc.len, &response_limits,
                                      &result, &fault, &err) < 0) {
                result = value_string(text);
            }
            free(err);
            ds_destroy(&doc);
        } else {
            result = value_empty_string();
        }
        rc = 0;
    } else {
        struct value *ei = value_struct_get(rec, "error_info");
        xe_print_api_error(ei);
    }
    xe_callv(conn, "task.destroy", NULL, task, NULL);
    if (rc == 0) {
        if (ret_result) {
            *ret_result = result;
            result = NULL;
        }
    }
out:
    value_unref(result);
    value_unref(rec);
    return rc;
}

/* ---- HTTP transfers ---- */

/* Opens a fresh connection for one transfer: the RPC connection stays
 * usable for polling the task. */
static struct xe_conn *
transfer_conn(struct xe_conn *conn)
{
    struct xe_conn *t = xcalloc(1, sizeof *t);

    t->cfg = conn->cfg;
    t->fd = -1;
    if (conn_open_socket(t) < 0) {
        free(t);
        return NULL;
    }
    return t;
}

static void
transfer_close(struct xe_conn *t)
{
    if (t) {
        conn_close_socket(t);
        SSL_CTX_free(t->ssl_ctx);
        free(t->rbuf);
        free(t);
    }
}

int
xe_http_put_file(struct xe_conn *conn, const char *path, const char *query,
                 const char *filename, bool progress)
{
    struct xe_conn *t = NULL;
    struct ds head = DS_EMPTY, body = DS_EMPTY;
    struct http_head h = { 0 };
    char *buf = NULL;
    struct stat st;
    int fd = -1, rc = -1;
    int64_t sent = 0;

    fd = open(filename, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "Error: cannot read %s: %s\n", filename,
                strerror(errno));
        goto out;
    }
    progress = progress && isatty(STDERR_FILENO);
    t = transfer_conn(conn);
    if (!t) {
        goto out;
    }
    ds_put_fmt(&head, "PUT %s?session_id=%s%s%s HTTP/1.1\r\nHost: %s\r\n"
               "User-Agent: xe\r\nContent-Length: %lld\r\n"
               "Connection: close\r\n\r\n", path, conn->session,
               query && *query ? "&" : "", query ? query : "",
               conn->cfg.server ? conn->cfg.server : "localhost",
               (long long)st.st_size);
    if (conn_write(t, head.s, head.len) < 0) {
        goto io_error;
    }
    buf = xmalloc(1 << 20);
    for (;;) {
        ssize_t r = read(fd, buf, 1 << 20);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            fprintf(stderr, "Error: reading %s: %s\n", filename,
                    strerror(errno));
            goto out;
        }
        if (r == 0) {
            break;
        }
        if (conn_write(t, buf, (size_t)r) < 0) {
            /* The server may have answered early with an error: read it. */
            break;
        }
        sent += r;
        if (progress && st.st_size > 0) {
            progress_draw((double)sent / (double)st.st_size);
        }
    }
    if (progress) {
        progress_end();
    }
    if (read_head(t, &h) < 0) {
        goto io_error;
    }
    read_body(t, &h, &body);
    if (h.status != 200) {
        fprintf(stderr, "Error: the server answered HTTP %d to PUT %s%s%.*s\n",
                h.status, path, body.len ? ": " : "",
                (int)MIN(body.len, 400), body.s ? body.s : "");
        goto out;
    }
    rc = 0;
    goto out;
io_error:
    fprintf(stderr, "Error: the transfer to the server failed\n");
out:
    http_head_clear(&h);
    ds_destroy(&head);
    ds_destroy(&body);
    transfer_close(t);
    free(buf);
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

int
xe_http_get_file(struct xe_conn *conn, const char *path, const char *query,
                 const char *filename, bool progress)
{
    struct xe_conn *t = NULL;
    struct ds head = DS_EMPTY;
    struct http_head h = { 0 };
    int fd = -1, rc = -1;
    int64_t got = 0;

    progress = progress && isatty(STDERR_FILENO);
    t = transfer_conn(conn);
    if (!t) {
        goto out;
    }
    ds_put_fmt(&head, "GET %s?session_id=%s%s%s HTTP/1.1\r\nHost: %s\r\n"
               "User-Agent: xe\r\nConnection: close\r\n\r\n", path,
               conn->session, query && *query ? "&" : "", query ? query : "",
               conn->cfg.server ? conn->cfg.server : "localhost");
    if (conn_write(t, head.s, head.len) < 0 || read_head(t, &h) < 0) {
        fprintf(stderr, "Error: the transfer from the server failed\n");
        goto out;
    }
    if (h.status != 200) {
        struct ds body = DS_EMPTY;
        read_body(t, &h, &body);
        fprintf(stderr, "Error: the server answered HTTP %d to GET %s%s%.*s\n",
                h.status, path, body.len ? ": " : "",
                (int)MIN(body.len, 400), body.s ? body.s : "");
        ds_destroy(&body);
        goto out;
    }
    fd = open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "Error: cannot write %s: %s\n", filename,
                strerror(errno));
        goto out;
    }
    /* Stream: write what is buffered, then read until the body ends. */
    for (;;) {
        size_t n = t->rlen;
        if (h.content_length >= 0 && (int64_t)n > h.content_length - got) {
            n = (size_t)(h.content_length - got);
        }
        if (n && write(fd, t->rbuf, n) != (ssize_t)n) {
            fprintf(stderr, "Error: writing %s: %s\n", filename,
                    strerror(errno));
            goto out;
        }
        got += (int64_t)n;
        t->rlen = 0;
        if (progress) {
            if (h.content_length > 0) {
                progress_draw((double)got / (double)h.content_length);
            } else {
                fprintf(stderr, "\r%lld MiB", (long long)(got >> 20));
            }
        }
        if (h.content_length >= 0 && got >= h.content_length) {
            break;
        }
        ssize_t r = conn_fill(t);
        if (r < 0) {
            fprintf(stderr, "Error: the transfer from the server failed\n");
            goto out;
        }
        if (r == 0) {
            break;
        }
    }
    if (progress) {
        progress_end();
    }
    if (h.content_length >= 0 && got < h.content_length) {
        fprintf(stderr, "Error: the transfer ended early\n");
        goto out;
    }
    if (fsync(fd) < 0 && errno != EINVAL) {
        fprintf(stderr, "Error: writing %s: %s\n", filename, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    http_head_clear(&h);
    ds_destroy(&head);
    transfer_close(t);
    return rc;
}
