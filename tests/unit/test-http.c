/* test-http.c — tests of the HTTP server (xapi/http.c) and its request
 * parser (xapi/http-parse.c).
 *
 * The parser tests call it directly.  The server tests start a real server
 * on 127.0.0.1:0 (and on a Unix socket, and with TLS) with the small
 * handler below, and talk to it over raw sockets, or with an OpenSSL
 * client, so that what is checked is the bytes on the wire. */
#include <config.h>
#define TEST_MAIN
#include "test.h"

#include "xapi/http.h"
#include "xapi/http-parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* ---- the handler ---- */

/* Streams taken over by /takeover: a thread echoes each one until the
 * client's end of input.  Counted, so that tests can see callbacks that
 * got no stream and streams that were closed. */
static atomic_int takeover_nulls, takeover_closed;

static void
stream_wait(struct http_stream *s, bool reading)
{
    struct pollfd pfd = {
        .fd = http_stream_fd(s),
        .events = http_stream_poll_events(s, reading, !reading),
    };
    poll(&pfd, 1, 10000);
}

static void *
echo_stream_thread(void *s_)
{
    struct http_stream *s = s_;
    char buf[4096];

    for (;;) {
        ssize_t n = http_stream_read(s, buf, sizeof buf);
        if (n == -EAGAIN) {
            stream_wait(s, true);
            continue;
        } else if (n <= 0) {
            break;
        }
        for (ssize_t off = 0; off < n; ) {
            ssize_t w = http_stream_write(s, buf + off, n - off);
            if (w == -EAGAIN) {
                stream_wait(s, false);
            } else if (w < 0) {
                goto out;
            } else {
                off += w;
            }
        }
    }
out:
    http_stream_close(s);
    atomic_fetch_add(&takeover_closed, 1);
    return NULL;
}

static void
echo_taken(struct http_stream *s, void *aux)
{
    pthread_t t;

    (void) aux;
    if (!s) {
        atomic_fetch_add(&takeover_nulls, 1);
        return;
    }
    pthread_create(&t, NULL, echo_stream_thread, s);
    pthread_detach(t);
}

/* Streamed bodies (PUT/POST to /import...): a thread reads the body with
 * an http_body_reader and answers "n=<bytes> fnv=<hash>", or 400 with the
 * error.  ?refuse answers 403 without reading the body. */
struct body_job {
    struct http_stream *s;
    struct http_request req;    /* the fields the reader needs */
};

static uint32_t
fnv_update(uint32_t h, const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 16777619u;
    }
    return h;
}

static void *
body_thread(void *job_)
{
    struct body_job *job = job_;
    struct http_body_reader *r = http_body_reader_create(job->s, &job->req,
                                                         10000);
    char buf[7000], out[128];
    uint32_t h = 2166136261u;
    ssize_t n;

    while ((n = http_body_read(r, buf, sizeof buf)) > 0) {
        h = fnv_update(h, buf, n);
    }
    if (n < 0) {
        snprintf(out, sizeof out, "error=%s", strerror((int) -n));
        http_stream_respond(job->s, 400, "text/plain", NULL, out,
                            strlen(out), 10000);
    } else {
        snprintf(out, sizeof out, "n=%llu fnv=%08x",
                 (unsigned long long) http_body_bytes_read(r), h);
        http_stream_respond(job->s, 200, "text/plain", "X-Test: streamed",
                            out, strlen(out), 10000);
    }
    http_body_reader_destroy(r);
    http_stream_close(job->s);
    free(job);
    atomic_fetch_add(&takeover_closed, 1);
    return NULL;
}

static void
body_taken(struct http_stream *s, void *job_)
{
    struct body_job *job = job_;
    pthread_t t;

    if (!s) {
        atomic_fetch_add(&takeover_nulls, 1);
        free(job);
        return;
    }
    job->s = s;
    pthread_create(&t, NULL, body_thread, job);
    pthread_detach(t);
}

static bool
wait_atomic(atomic_int *v, int want)
{
    for (int i = 0; i < 1000 && atomic_load(v) != want; i++) {
        usleep(10 * 1000);
    }
    return atomic_load(v) == want;
}

/* The last request a handler chose not to answer yet (path /defer). */
static pthread_mutex_t deferred_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t deferred_cond = PTHREAD_COND_INITIALIZER;
static struct http_exchange *deferred;

static uint8_t
big_byte(size_t i)
{
    return (uint8_t) (i % 251 + i / 65536);
}

/* /defer     keeps the exchange for the test to answer
 * /takeover  answers 200 and echoes the stream (echo_taken)
 * /big       answers size=N bytes of a known pattern (http_respond_take)
 * /sleep     waits ms=N milliseconds, then echoes
 * otherwise  echoes what it received, one summary line then the body */
static void
test_handler(struct http_exchange *x, void *aux)
{
    const struct http_request *req = http_exchange_request(x);
    struct ds ds = DS_EMPTY;
    char *v;

    if (!strcmp(req->path, "/defer")) {
        pthread_mutex_lock(&deferred_mutex);
        deferred = x;
        pthread_cond_broadcast(&deferred_cond);
        pthread_mutex_unlock(&deferred_mutex);
        return;
    }
    if (!strcmp(req->path, "/takeover")) {
        http_respond_takeover(x, 200, "X-Test: stream", echo_taken, NULL);
        return;
    }
    if (req->body_streamed) {
        struct body_job *job;
        if (strstr(req->query, "refuse")) {
            http_respond(x, 403, "text/plain", NULL, "refused\n", 8);
            return;
        }
        job = xcalloc(1, sizeof *job);
        job->req.body_streamed = true;
        job->req.body_chunked = req->body_chunked;
        job->req.body_length = req->body_length;
        http_respond_takeover(x, req->expect_continue ? 100 : 0, NULL,
                              body_taken, job);
        return;
    }
    if (!strcmp(req->path, "/big")) {
        size_t size;
        char *body;
        v = http_request_query_param(req, "size");
        size = v ? strtoul(v, NULL, 10) : 0;
        free(v);
        body = xmalloc(size);
        for (size_t i = 0; i < size; i++) {
            body[i] = (char) big_byte(i);
        }
        http_respond_take(x, 200, "application/octet-stream", NULL, body,
                          size);
        return;
    }
    if (!strcmp(req->path, "/sleep")) {
        v = http_request_query_param(req, "ms");
        usleep(1000 * (v ? atoi(v) : 0));
        free(v);
    }
    ds_put_fmt(&ds, "%s %s q=%s peer=%s tls=%d unix=%d len=%zu\n",
               req->method, req->path, req->query, req->peer, req->is_tls,
               req->is_unix, req->body_len);
    ds_put(&ds, req->body, req->body_len);
    http_respond(x, 200, "text/plain", "X-Test: yes", ds.s, ds.len);
    ds_destroy(&ds);
}

static struct http_exchange *
wait_deferred(void)
{
    struct timespec ts;
    struct http_exchange *x;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&deferred_mutex);
    while (!deferred) {
        if (pthread_cond_timedwait(&deferred_cond, &deferred_mutex, &ts)) {
            break;
        }
    }
    x = deferred;
    deferred = NULL;
    pthread_mutex_unlock(&deferred_mutex);
    return x;
}

/* ---- the server under test ---- */

struct fixture {
    struct http_server *srv;
    int port;
    char dir[64];
};

static void
make_temp_dir(struct fixture *fx)
{
    strcpy(fx->dir, "/tmp/test-http-XXXXXX");
    if (!mkdtemp(fx->dir)) {
        xabort("mkdtemp: %s", strerror(errno));
    }
}

static void
remove_temp_dir(struct fixture *fx)
{
    const char *names[] = { "cert.pem", "key.pem", "both.pem", "xapi.sock",
                            "file" };
    char path[128];

    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        snprintf(path, sizeof path, "%s/%s", fx->dir, names[i]);
        unlink(path);
    }
    rmdir(fx->dir);
}

/* Starts a server with the test handler on the listeners of cfg (a TCP
 * listener on 127.0.0.1:0 if it has none) and small limits unless cfg
 * sets them. */
static int
start_server(struct fixture *fx, struct http_server_config *cfg)
{
    static struct http_listener_config tcp = {
        HTTP_LISTEN_TCP, (char *) "127.0.0.1:0"
    };
    char *err = NULL;
    int rc;

    if (!cfg->n_listeners) {
        cfg->listeners = &tcp;
        cfg->n_listeners = 1;
    }
    if (!cfg->n_workers) {
        cfg->n_workers = 4;
    }
    if (!cfg->max_body) {
        cfg->max_body = 1024 * 1024;
    }
    if (!cfg->max_header_bytes) {
        cfg->max_header_bytes = 8192;
    }
    cfg->handler = test_handler;
    rc = http_server_start(cfg, &fx->srv, &err);
    if (rc) {
        fprintf(stderr, "  http_server_start: %s\n", err);
        free(err);
        return rc;
    }
    fx->port = http_server_port(fx->srv, 0);
    return 0;
}

/* ---- a minimal client ---- */

struct client {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    struct ds in;           /* received, not yet returned */
};

struct response {
    int status;
    char *head;
    char *body;
    size_t body_len;
};

static void
set_timeouts(int fd)
{
    struct timeval tv = { .tv_sec = 10 };

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int
client_connect(struct client *c, int port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };

    memset(c, 0, sizeof *c);
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    set_timeouts(c->fd);
    if (connect(c->fd, (struct sockaddr *) &sin, sizeof sin) < 0) {
        close(c->fd);
        c->fd = -1;
        return -errno;
    }
    return 0;
}

static void
set_sun_path(struct sockaddr_un *sun, const char *path)
{
    if (strlen(path) >= sizeof sun->sun_path) {
        xabort("%s: too long for a Unix socket", path);
    }
    strcpy(sun->sun_path, path);
}

static int
client_connect_unix(struct client *c, const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    memset(c, 0, sizeof *c);
    set_sun_path(&sun, path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    set_timeouts(c->fd);
    if (connect(c->fd, (struct sockaddr *) &sun, sizeof sun) < 0) {
        close(c->fd);
        c->fd = -1;
        return -errno;
    }
    return 0;
}

/* Connects with TLS, trusting only ca_file and checking the name
 * "localhost".  max_version 0 means no maximum; security level 0 lets the
 * client offer TLS 1.1 at all, so that it is the server that refuses. */
static int
client_connect_tls(struct client *c, int port, const char *ca_file,
                   int max_version)
{
    int rc = client_connect(c, port);

    if (rc) {
        return rc;
    }
    c->ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_security_level(c->ctx, 0);
    SSL_CTX_set_min_proto_version(c->ctx, 0);
    if (max_version) {
        SSL_CTX_set_max_proto_version(c->ctx, max_version);
    }
    if (SSL_CTX_load_verify_locations(c->ctx, ca_file, NULL) != 1) {
        return -EINVAL;
    }
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    c->ssl = SSL_new(c->ctx);
    SSL_set1_host(c->ssl, "localhost");
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_connect(c->ssl) != 1) {
        return -EPROTO;
    }
    return 0;
}

static void
client_close(struct client *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
    }
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0) {
        close(c->fd);
    }
    ds_destroy(&c->in);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* Returns whether everything was sent. */
static bool
client_send(struct client *c, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n;
        if (c->ssl) {
            n = SSL_write(c->ssl, data, (int) len);
        } else {
            n = send(c->fd, data, len, MSG_NOSIGNAL);
        }
        if (n <= 0) {
            return false;
        }
        data += n;
        len -= n;
    }
    return true;
}

static void
client_send_str(struct client *c, const char *s)
{
    client_send(c, s, strlen(s));
}

/* Reads more into c->in.  Returns the count, 0 at EOF, -1 on error. */
static ssize_t
client_read_more(struct client *c)
{
    char buf[65536];
    ssize_t n;

    if (c->ssl) {
        n = SSL_read(c->ssl, buf, sizeof buf);
        if (n <= 0) {
            return SSL_get_error(c->ssl, (int) n) == SSL_ERROR_ZERO_RETURN
                   ? 0 : -1;
        }
    } else {
        n = recv(c->fd, buf, sizeof buf, 0);
    }
    if (n > 0) {
        ds_put(&c->in, buf, n);
    }
    return n;
}

static char *
head_field(const char *head, const char *name)
{
    size_t nl = strlen(name);

    for (const char *p = strstr(head, "\r\n"); p; p = strstr(p, "\r\n")) {
        p += 2;
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1, *e;
            while (*v == ' ') {
                v++;
            }
            e = strstr(v, "\r\n");
            return xmemdup0(v, e ? (size_t) (e - v) : strlen(v));
        }
    }
    return NULL;
}

static void
response_destroy(struct response *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Reads one response; the body has Content-Length bytes unless no_body.
 * Returns 0, or -1 if the connection ended or timed out first. */
static int
client_read_response(struct client *c, struct response *r, bool no_body)
{
    const char *end;
    size_t head_len, body_len = 0;
    char *cl;

    memset(r, 0, sizeof *r);
    while (!c->in.s || !(end = strstr(c->in.s, "\r\n\r\n"))) {
        if (client_read_more(c) <= 0) {
            return -1;
        }
    }
    head_len = end - c->in.s + 4;
    r->head = xmemdup0(c->in.s, head_len);
    if (sscanf(r->head, "HTTP/1.1 %d ", &r->status) != 1) {
        response_destroy(r);
        return -1;
    }
    cl = head_field(r->head, "Content-Length");
    if (cl && !no_body) {
        body_len = strtoul(cl, NULL, 10);
    }
    free(cl);
    while (c->in.len < head_len + body_len) {
        if (client_read_more(c) <= 0) {
            response_destroy(r);
            return -1;
        }
    }
    r->body = xmemdup0(c->in.s + head_len, body_len);
    r->body_len = body_len;
    memmove(c->in.s, c->in.s + head_len + body_len,
            c->in.len - head_len - body_len);
    c->in.len -= head_len + body_len;
    c->in.s[c->in.len] = '\0';
    return 0;
}

/* True if the server closed the connection (EOF or reset) with nothing
 * more to read. */
static bool
client_sees_close(struct client *c)
{
    ssize_t n = client_read_more(c);

    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static bool
head_has(const struct response *r, const char *name, const char *value)
{
    char *v = head_field(r->head, name);
    bool match = v && !strcasecmp(v, value);

    free(v);
    return match;
}

static void *
respond_later_thread(void *x_)
{
    usleep(50 * 1000);
    http_respond(x_, 200, "text/plain", NULL, "late", 4);
    return NULL;
}

/* ---- parser tests ---- */

static int
parse_status(const char *text)
{
    struct http_request req;
    size_t consumed;
    int rc = http_parse_request(text, strlen(text), NULL, &req, &consumed);

    if (rc == HTTP_PARSE_DONE) {
        http_request_destroy(&req);
        return 200;
    }
    return rc < 0 ? http_parse_error_status(rc) : 0;
}

TEST(test_parser_accepts_and_refuses)
{
    CHECK_INT(parse_status("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 200);
    CHECK_INT(parse_status("\r\nGET / HTTP/1.1\nHost: h\n\n"), 200);
    CHECK_INT(parse_status("GET / HTTP/1.1\r\nHost: h\r\n"), 0);
    CHECK_INT(parse_status("GET / HTTP/1.1\r\n X: y\r\n\r\n"), 400);
    CHECK_INT(parse_status("GET / HTTP/1.1\r\nA: b\r\n  c\r\n\r\n"), 400);
    CHECK_INT(parse_status("GET / HTTP/1.1\r\nA : b\r\n\r\n"), 400);
    CHECK_INT(parse_status("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), 400);
    CHECK_INT(parse_status("GET /a%00b HTTP/1.1\r\n\r\n"), 400);
    CHECK_INT(parse_status("GET /a%4 HTTP/1.1\r\n\r\n"), 400);
    CHECK_INT(parse_status("GET a HTTP/1.1\r\n\r\n"), 400);
    CHECK_INT(parse_status("GET  / HTTP/1.1\r\n\r\n"), 400);
    CHECK_INT(parse_status("G(T / HTTP/1.1\r\n\r\n"), 400);
    CHECK_INT(parse_status("GET / HTTP/2.0\r\n\r\n"), 505);
    CHECK_INT(parse_status("GET / HTTP/1.x\r\n\r\n"), 400);
    CHECK_INT(parse_status("POST / HTTP/1.1\r\nContent-Length: 1\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
              400);
    CHECK_INT(parse_status("POST / HTTP/1.1\r\nContent-Length: 1\r\n"
                           "Content-Length: 2\r\n\r\nab"), 400);
    CHECK_INT(parse_status("POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n"
                           "\r\nab"), 200);
    CHECK_INT(parse_status("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
              400);
    CHECK_INT(parse_status("POST / HTTP/1.1\r\nContent-Length: "
                           "99999999999999999999999\r\n\r\n"), 413);
    CHECK_INT(parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, "
                           "chunked\r\n\r\n"), 501);
    CHECK_INT(parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, "
                           "chunked\r\n\r\n"), 400);
    CHECK_INT(parse_status("POST / HTTP/1.0\r\nTransfer-Encoding: "
                           "chunked\r\n\r\n0\r\n\r\n"), 400);
    CHECK_INT(parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: "
                           "chunked\r\n\r\n1x\r\n"), 400);
    CHECK_INT(parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: "
                           "chunked\r\n\r\n10000000000000000\r\n"), 413);
    CHECK_INT(parse_status("POST / HTTP/1.1\r\nTransfer-Encoding: "
                           "chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n"), 400);
    CHECK_INT(parse_status("OPTIONS * HTTP/1.1\r\n\r\n"), 200);
    CHECK_INT(parse_status("GET * HTTP/1.1\r\n\r\n"), 400);
    CHECK_INT(parse_status("\x16\x03\x01\x02"), 400);
}

static int
parse_limited(const struct http_parse_limits *limits, const char *text,
              size_t len)
{
    struct http_request req;
    size_t consumed;
    int rc = http_parse_request(text, len, limits, &req, &consumed);

    if (rc == HTTP_PARSE_DONE) {
        http_request_destroy(&req);
    }
    return rc;
}

TEST(test_parser_limits)
{
    struct http_parse_limits limits = { 100, 3, 10 };
    const char *text;
    char big[200];

    snprintf(big, sizeof big, "GET /%0150d HTTP/1.1\r\n\r\n", 0);
    CHECK_INT(parse_limited(&limits, big, strlen(big)), -EMSGSIZE);
    /* Too long even before the line is complete. */
    CHECK_INT(parse_limited(&limits, big, 120), -EMSGSIZE);
    CHECK_INT(parse_limited(&limits, big, 90), HTTP_PARSE_NEED_MORE);
    text = "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
    CHECK_INT(parse_limited(&limits, text, strlen(text)), HTTP_PARSE_DONE);
    text = "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n";
    CHECK_INT(parse_limited(&limits, text, strlen(text)), -EMSGSIZE);
    text = "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
    CHECK_INT(parse_limited(&limits, text, strlen(text)), HTTP_PARSE_DONE);
    text = "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
    CHECK_INT(parse_limited(&limits, text, strlen(text)), -EFBIG);
    text = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           "5\r\naaaaa\r\n6\r\n";
    CHECK_INT(parse_limited(&limits, text, strlen(text)), -EFBIG);
    text = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           "5\r\naaaaa\r\n0\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n";
    CHECK_INT(parse_limited(&limits, text, strlen(text)), -EMSGSIZE);
}

TEST(test_parser_request_fields)
{
    const char *text = "POST http://h:80/a%20b/c?x=1&y=a+b%21&z HTTP/1.0\r\n"
                       "Host:  h  \r\n"
                       "Connection: Keep-Alive\r\n"
                       "Content-Length: 3\r\n\r\nabcGET";
    struct http_request req;
    size_t consumed;
    char *v;

    if (http_parse_request(text, strlen(text), NULL, &req, &consumed)
        != HTTP_PARSE_DONE) {
        CHECK(false);
        return;
    }
    CHECK_INT(consumed, strlen(text) - 3);
    CHECK_STR(req.method, "POST");
    CHECK_STR(req.target, "http://h:80/a%20b/c?x=1&y=a+b%21&z");
    CHECK_STR(req.path, "/a b/c");
    CHECK_STR(req.query, "x=1&y=a+b%21&z");
    CHECK_INT(req.version_minor, 0);
    CHECK(req.keep_alive);
    CHECK_STR(http_request_header(&req, "host"), "h");
    CHECK(http_request_header(&req, "missing") == NULL);
    CHECK_INT(req.body_len, 3);
    CHECK_STR(req.body, "abc");
    v = http_request_query_param(&req, "y");
    CHECK_STR(v, "a b!");
    free(v);
    v = http_request_query_param(&req, "z");
    CHECK_STR(v, "");
    free(v);
    CHECK(http_request_query_param(&req, "w") == NULL);
    http_request_destroy(&req);
    http_request_destroy(NULL);
}

TEST(test_parser_keep_alive_rules)
{
    static const struct {
        const char *text;
        bool keep_alive;
    } cases[] = {
        { "GET / HTTP/1.1\r\n\r\n", true },
        { "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false },
        { "GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n", false },
        { "GET / HTTP/1.0\r\n\r\n", false },
        { "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true },
        { "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false },
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct http_request req;
        size_t consumed;
        int rc = http_parse_request(cases[i].text, strlen(cases[i].text),
                                    NULL, &req, &consumed);
        CHECK_INT(rc, HTTP_PARSE_DONE);
        if (rc == HTTP_PARSE_DONE) {
            CHECK_INT(req.keep_alive, cases[i].keep_alive);
            http_request_destroy(&req);
        }
    }
}

/* Feeding one byte at a time must give the same requests as feeding all,
 * and the parser must consume body bytes as they come. */
TEST(test_parser_byte_by_byte)
{
    const char *text =
        "POST /RPC2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5;name=\"v\"\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
        "\r\nGET /two HTTP/1.1\r\n\r\n"
        "PUT /three HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
    static const char *const paths[] = { "/RPC2", "/two", "/three" };
    static const char *const bodies[] = { "hello world", "", "abcd" };
    struct http_parser p;
    struct ds buf = DS_EMPTY;
    size_t n_done = 0, max_buffered = 0;

    http_parser_init(&p, NULL);
    for (size_t i = 0; text[i]; i++) {
        ds_put_char(&buf, text[i]);
        for (;;) {
            struct http_request req;
            size_t consumed;
            int rc = http_parser_feed(&p, buf.s, buf.len, &consumed, &req);
            CHECK(rc >= 0);
            memmove(buf.s, buf.s + consumed, buf.len - consumed);
            buf.len -= consumed;
            max_buffered = MAX(max_buffered, buf.len);
            if (rc != HTTP_PARSE_DONE) {
                break;
            }
            if (n_done < ARRAY_SIZE(paths)) {
                CHECK_STR(req.path, paths[n_done]);
                CHECK_STR(req.body, bodies[n_done]);
            }
            n_done++;
            http_request_destroy(&req);
        }
    }
    CHECK_INT(n_done, 3);
    CHECK_INT(buf.len, 0);
    /* The longest header section above is 52 bytes. */
    CHECK(max_buffered <= 52);
    http_parser_destroy(&p);
    ds_destroy(&buf);
}

/* ---- server tests ---- */

TEST(test_post_with_content_length)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct client c;
    struct response r;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    CHECK(fx.port > 0);
    CHECK_INT(client_connect(&c, fx.port), 0);
    client_send_str(&c, "POST /RPC2?a=1 HTTP/1.1\r\nHost: localhost\r\n"
                        "Content-Type: text/xml\r\n"
                        "Content-Length: 5\r\n\r\nhello");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 200);
    CHECK(str_starts_with(r.head, "HTTP/1.1 200 OK\r\n"));
    CHECK(head_has(&r, "Connection", "keep-alive"));
    CHECK(head_has(&r, "Content-Type", "text/plain"));
    CHECK(head_has(&r, "X-Test", "yes"));
    CHECK(r.body && str_starts_with(r.body, "POST /RPC2 q=a=1 peer=127.0.0.1:"));
    CHECK(r.body && strstr(r.body, "tls=0 unix=0 len=5\nhello"));
    response_destroy(&r);
    client_close(&c);
    http_server_stop(fx.srv);
}

TEST(test_keep_alive_three_requests_on_one_connection)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct sockaddr_in local;
    socklen_t sl = sizeof local;
    char expect[64];
    struct client c;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    getsockname(c.fd, (struct sockaddr *) &local, &sl);
    snprintf(expect, sizeof expect, "peer=127.0.0.1:%d ",
             ntohs(local.sin_port));
    for (int i = 0; i < 3; i++) {
        struct response r;
        client_send_str(&c, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
        CHECK_INT(client_read_response(&c, &r, false), 0);
        CHECK_INT(r.status, 200);
        CHECK(head_has(&r, "Connection", "keep-alive"));
        /* Same client port every time: the same connection served all. */
        CHECK(r.body && strstr(r.body, expect));
        response_destroy(&r);
    }
    client_close(&c);
    http_server_stop(fx.srv);
}

TEST(test_pipelined_requests_answered_in_order)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct client c;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    /* The first is the slowest, so answering as handlers finish would put
     * it last. */
    client_send_str(&c, "GET /sleep?ms=150&n=1 HTTP/1.1\r\n\r\n"
                        "POST /echo?n=2 HTTP/1.1\r\nContent-Length: 3\r\n"
                        "\r\nabc"
                        "GET /echo?n=3 HTTP/1.1\r\n\r\n");
    for (int i = 1; i <= 3; i++) {
        struct response r;
        char expect[16];
        snprintf(expect, sizeof expect, "n=%d", i);
        CHECK_INT(client_read_response(&c, &r, false), 0);
        CHECK_INT(r.status, 200);
        CHECK(r.body && strstr(r.body, expect));
        response_destroy(&r);
    }
    client_close(&c);
    http_server_stop(fx.srv);
}

TEST(test_chunked_request_body)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct client c;
    struct response r;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    client_send_str(&c, "POST /RPC2 HTTP/1.1\r\nHost: h\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n"
                        "5;ext=1\r\nhello\r\n");
    usleep(20 * 1000);      /* the rest in a later read */
    client_send_str(&c, "6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 200);
    CHECK(r.body && strstr(r.body, "len=11\nhello world"));
    response_destroy(&r);
    client_close(&c);
    http_server_stop(fx.srv);
}

/* Sends text on a new connection and checks the status of the answer and
 * that the server then closes the connection. */
static void
check_refused(int port, const char *text, size_t len, int status)
{
    struct client c;
    struct response r;

    CHECK_INT(client_connect(&c, port), 0);
    client_send(&c, text, len);
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, status);
    CHECK(head_has(&r, "Connection", "close"));
    CHECK(client_sees_close(&c));
    response_destroy(&r);
    client_close(&c);
}

TEST(test_malformed_request_gets_400_and_close)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    const char *bad = "GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n";

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    check_refused(fx.port, bad, strlen(bad), 400);
    check_refused(fx.port, "\x16\x03\x01\x00\xa5\x01", 6, 400);
    check_refused(fx.port, "GET / HTTP/3.0\r\n\r\n", 18, 505);
    check_refused(fx.port, "POST / HTTP/1.1\r\nTransfer-Encoding: br\r\n\r\n",
                  42, 501);
    http_server_stop(fx.srv);
}

TEST(test_body_over_max_body_gets_413)
{
    struct http_server_config cfg = { .max_body = 1000 };
    struct fixture fx = { 0 };
    struct ds req = DS_EMPTY;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    /* Declared too large: refused before the body is read, and the unread
     * body must not turn the answer into a reset. */
    ds_put_cstr(&req, "POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    for (int i = 0; i < 100000; i++) {
        ds_put_char(&req, 'x');
    }
    check_refused(fx.port, req.s, req.len, 413);
    /* Still sending when the answer comes: the server must keep reading
     * (and dropping) what follows rather than reset the connection. */
    {
        struct client c;
        struct response r;
        CHECK_INT(client_connect(&c, fx.port), 0);
        CHECK(client_send(&c, req.s, req.len));
        usleep(100 * 1000);
        CHECK(client_send(&c, req.s, req.len));
        CHECK_INT(client_read_response(&c, &r, false), 0);
        CHECK_INT(r.status, 413);
        response_destroy(&r);
        client_close(&c);
    }
    /* Chunked, found out while decoding. */
    ds_clear(&req);
    ds_put_cstr(&req, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        ds_put_cstr(&req, "1f4\r\n");
        for (int j = 0; j < 500; j++) {
            ds_put_char(&req, 'y');
        }
        ds_put_cstr(&req, "\r\n");
    }
    check_refused(fx.port, req.s, req.len, 413);
    ds_destroy(&req);
    http_server_stop(fx.srv);
}

TEST(test_header_over_limit_gets_431)
{
    struct http_server_config cfg = { .max_header_bytes = 4096 };
    struct fixture fx = { 0 };
    struct ds req = DS_EMPTY;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    ds_put_cstr(&req, "GET / HTTP/1.1\r\nX-Big: ");
    for (int i = 0; i < 8000; i++) {
        ds_put_char(&req, 'a');
    }
    ds_put_cstr(&req, "\r\n\r\n");
    check_refused(fx.port, req.s, req.len, 431);
    ds_destroy(&req);
    http_server_stop(fx.srv);
}

TEST(test_http10_closes_unless_keep_alive)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct client c;
    struct response r;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    client_send_str(&c, "GET /old HTTP/1.0\r\n\r\n");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 200);
    CHECK(head_has(&r, "Connection", "close"));
    CHECK(client_sees_close(&c));
    response_destroy(&r);
    client_close(&c);

    client_connect(&c, fx.port);
    for (int i = 0; i < 2; i++) {
        client_send_str(&c, "GET /old HTTP/1.0\r\n"
                            "Connection: keep-alive\r\n\r\n");
        CHECK_INT(client_read_response(&c, &r, false), 0);
        CHECK_INT(r.status, 200);
        CHECK(head_has(&r, "Connection", "keep-alive"));
        response_destroy(&r);
    }
    client_close(&c);

    /* And HTTP/1.1 closes when asked to. */
    client_connect(&c, fx.port);
    client_send_str(&c, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK(head_has(&r, "Connection", "close"));
    CHECK(client_sees_close(&c));
    response_destroy(&r);
    client_close(&c);
    http_server_stop(fx.srv);
}

TEST(test_head_request_has_no_body)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct client c;
    struct response r;
    char *cl;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    client_send_str(&c, "HEAD /h HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\n");
    CHECK_INT(client_read_response(&c, &r, true), 0);
    CHECK_INT(r.status, 200);
    cl = head_field(r.head, "Content-Length");
    CHECK(cl && atoi(cl) > 0);
    free(cl);
    response_destroy(&r);
    /* Had the HEAD response carried a body, this would read it instead. */
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK(r.body && str_starts_with(r.body, "GET /g "));
    response_destroy(&r);
    client_close(&c);
    http_server_stop(fx.srv);
}

TEST(test_expect_100_continue)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct client c;
    struct response r;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    client_send_str(&c, "PUT /up HTTP/1.1\r\nContent-Length: 4\r\n"
                        "Expect: 100-continue\r\n\r\n");
    CHECK_INT(client_read_response(&c, &r, true), 0);
    CHECK_INT(r.status, 100);
    response_destroy(&r);
    client_send_str(&c, "data");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 200);
    CHECK(r.body && strstr(r.body, "len=4\ndata"));
    response_destroy(&r);
    client_close(&c);
    http_server_stop(fx.srv);
}

TEST(test_deferred_response_from_another_thread)
{
    struct http_server_config cfg = { .n_workers = 1 };
    struct fixture fx = { 0 };
    struct http_exchange *x;
    struct client c, c2;
    struct response r;
    struct pollfd pfd;
    pthread_t t;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    client_send_str(&c, "GET /defer HTTP/1.1\r\n\r\n");
    x = wait_deferred();
    CHECK(x != NULL);
    if (!x) {
        goto out;
    }
    CHECK_STR(http_exchange_request(x)->path, "/defer");
    pfd.fd = c.fd;
    pfd.events = POLLIN;
    CHECK_INT(poll(&pfd, 1, 100), 0);

    /* The only worker is free again: a deferred request holds none. */
    client_connect(&c2, fx.port);
    client_send_str(&c2, "GET /other HTTP/1.1\r\n\r\n");
    CHECK_INT(client_read_response(&c2, &r, false), 0);
    CHECK_INT(r.status, 200);
    response_destroy(&r);
    client_close(&c2);

    pthread_create(&t, NULL, respond_later_thread, x);
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "late");
    response_destroy(&r);
    pthread_join(t, NULL);
out:
    client_close(&c);
    http_server_stop(fx.srv);
}

TEST(test_client_gone_before_deferred_response)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct client c;
    struct response r;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    /* Once with a reset (the server closes the connection at once), once
     * with an orderly close (the server finds out when it writes). */
    for (int i = 0; i < 2; i++) {
        struct http_exchange *x;
        client_connect(&c, fx.port);
        client_send_str(&c, "GET /defer HTTP/1.1\r\n\r\n");
        x = wait_deferred();
        CHECK(x != NULL);
        if (i == 0) {
            struct linger lg = { .l_onoff = 1, .l_linger = 0 };
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        client_close(&c);
        usleep(100 * 1000);
        if (x) {
            http_respond(x, 200, "text/plain", NULL, "nobody", 6);
        }
    }
    /* The server is still fine. */
    client_connect(&c, fx.port);
    client_send_str(&c, "GET /after HTTP/1.1\r\n\r\n");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 200);
    response_destroy(&r);
    client_close(&c);
    http_server_stop(fx.srv);
}

TEST(test_respond_after_server_stop)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct http_exchange *x;
    struct client c;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    client_send_str(&c, "POST /defer HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    x = wait_deferred();
    CHECK(x != NULL);
    http_server_stop(fx.srv);
    CHECK(client_sees_close(&c));
    if (x) {
        /* Still valid; the response is dropped (ASan checks the rest). */
        CHECK_STR(http_exchange_request(x)->body, "hi");
        http_respond(x, 200, NULL, NULL, "", 0);
    }
    client_close(&c);
}

/* Reads until c->in holds want; returns whether it came. */
static bool
client_read_until(struct client *c, const char *want)
{
    while (!c->in.s || !strstr(c->in.s, want)) {
        if (client_read_more(c) <= 0) {
            return false;
        }
    }
    return true;
}

/* A taken-over connection, plain then TLS: the head has no
 * Content-Length, bytes sent with the request come first, the stream
 * goes both ways, and the client's end of input ends it. */
TEST(test_takeover_streams_bytes_both_ways)
{
    struct http_listener_config ls[2] = {
        { HTTP_LISTEN_TCP, (char *) "127.0.0.1:0" },
        { HTTP_LISTEN_TLS, (char *) "127.0.0.1:0" },
    };
    struct http_server_config cfg = { .listeners = ls, .n_listeners = 2 };
    struct fixture fx = { 0 };
    char cert[128], key[128], *err = NULL;
    int closed = atomic_load(&takeover_closed);

    make_temp_dir(&fx);
    snprintf(cert, sizeof cert, "%s/cert.pem", fx.dir);
    snprintf(key, sizeof key, "%s/key.pem", fx.dir);
    CHECK_INT(http_tls_ensure_cert(cert, key, "localhost", &err), 0);
    free(err);
    cfg.tls_cert_file = cert;
    cfg.tls_key_file = key;
    if (start_server(&fx, &cfg)) {
        CHECK(false);
        remove_temp_dir(&fx);
        return;
    }
    for (int tls = 0; tls < 2; tls++) {
        struct client c;
        struct response r;
        char *cl;
        int rc = tls ? client_connect_tls(&c, http_server_port(fx.srv, 1),
                                          cert, 0)
                     : client_connect(&c, fx.port);

        CHECK_INT(rc, 0);
        client_send_str(&c, "CONNECT /takeover?x=1 HTTP/1.0\r\n\r\nearly");
        CHECK_INT(client_read_response(&c, &r, true), 0);
        CHECK_INT(r.status, 200);
        CHECK(head_has(&r, "X-Test", "stream"));
        cl = r.head ? head_field(r.head, "Content-Length") : NULL;
        CHECK(r.head && !cl);
        free(cl);
        response_destroy(&r);
        CHECK(client_read_until(&c, "early"));
        client_send_str(&c, "and more");
        CHECK(client_read_until(&c, "earlyand more"));
        if (tls) {
            SSL_shutdown(c.ssl);
        } else {
            shutdown(c.fd, SHUT_WR);
        }
        CHECK(client_sees_close(&c));
        client_close(&c);
        CHECK(wait_atomic(&takeover_closed, closed + tls + 1));
    }
    CHECK_INT(atomic_load(&takeover_nulls), 0);
    http_server_stop(fx.srv);
    remove_temp_dir(&fx);
}

/* A take-over answer for a connection that is gone, or after the server
 * stopped, reports no stream; the server stops with a stream open, whose
 * owner sees the end. */
TEST(test_takeover_without_a_connection_and_at_server_stop)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct http_exchange *x;
    struct client c, open;
    struct response r;
    int nulls = atomic_load(&takeover_nulls);
    int closed = atomic_load(&takeover_closed);
    int64_t t0;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    /* A reset: the server closes the connection at once.  (After an
     * orderly close, the head would go out and the stream would read
     * the end at once.) */
    client_connect(&c, fx.port);
    client_send_str(&c, "GET /defer HTTP/1.1\r\n\r\n");
    x = wait_deferred();
    CHECK(x != NULL);
    {
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    client_close(&c);
    usleep(100 * 1000);
    if (x) {
        http_respond_takeover(x, 200, NULL, echo_taken, NULL);
    }
    CHECK(wait_atomic(&takeover_nulls, nulls + 1));

    client_connect(&open, fx.port);
    client_send_str(&open, "GET /takeover HTTP/1.1\r\n\r\n");
    CHECK_INT(client_read_response(&open, &r, true), 0);
    CHECK_INT(r.status, 200);
    response_destroy(&r);
    client_connect(&c, fx.port);
    client_send_str(&c, "GET /defer HTTP/1.1\r\n\r\n");
    x = wait_deferred();
    CHECK(x != NULL);

    t0 = time_mono_ms();
    http_server_stop(fx.srv);
    CHECK(time_mono_ms() - t0 < 4000);
    /* The stream's owner closes it on its own thread once the server has
     * shut it down; allow it that moment. */
    CHECK(wait_atomic(&takeover_closed, closed + 1));
    CHECK(client_sees_close(&open));
    if (x) {
        http_respond_takeover(x, 200, NULL, echo_taken, NULL);
    }
    CHECK(wait_atomic(&takeover_nulls, nulls + 2));
    client_close(&open);
    client_close(&c);
}

TEST(test_unix_socket_listener)
{
    struct http_listener_config listeners[2] = {
        { HTTP_LISTEN_TCP, (char *) "127.0.0.1:0" },
        { HTTP_LISTEN_UNIX, NULL },
    };
    struct http_server_config cfg = { .listeners = listeners,
                                      .n_listeners = 2 };
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct fixture fx = { 0 };
    char path[128], *err = NULL;
    struct client c;
    struct response r;
    struct stat st;
    int fd;

    make_temp_dir(&fx);
    snprintf(path, sizeof path, "%s/xapi.sock", fx.dir);
    listeners[1].address = path;

    /* A regular file at the path is not replaced. */
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s/file", fx.dir);
    listeners[1].address = sun.sun_path;
    CHECK_INT(write_file_atomic(sun.sun_path, "x", 1, 0644), 0);
    cfg.handler = test_handler;
    CHECK_INT(http_server_start(&cfg, &fx.srv, &err), -EEXIST);
    CHECK(err != NULL);
    free(err);
    CHECK(stat(sun.sun_path, &st) == 0 && S_ISREG(st.st_mode));

    /* A stale socket file (its server gone) is. */
    listeners[1].address = path;
    set_sun_path(&sun, path);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(bind(fd, (struct sockaddr *) &sun, sizeof sun) == 0);
    close(fd);
    if (start_server(&fx, &cfg)) {
        CHECK(false);
        remove_temp_dir(&fx);
        return;
    }
    CHECK_INT(client_connect_unix(&c, path), 0);
    client_send_str(&c, "GET /local HTTP/1.1\r\n\r\n");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 200);
    CHECK(r.body && strstr(r.body, "peer=unix tls=0 unix=1"));
    response_destroy(&r);
    client_close(&c);
    http_server_stop(fx.srv);
    remove_temp_dir(&fx);
}

TEST(test_ipv6_listener)
{
    struct http_listener_config v6 = { HTTP_LISTEN_TCP, (char *) "[::1]:0" };
    struct http_server_config cfg = { .listeners = &v6, .n_listeners = 1,
                                      .handler = test_handler };
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
    struct fixture fx = { 0 };
    struct response r;
    struct client c;
    char *err = NULL;

    if (http_server_start(&cfg, &fx.srv, &err)) {
        free(err);
        SKIP("no IPv6 loopback here");
    }
    fx.port = http_server_port(fx.srv, 0);
    CHECK(fx.port > 0);
    memset(&c, 0, sizeof c);
    sin6.sin6_port = htons(fx.port);
    sin6.sin6_addr = in6addr_loopback;
    c.fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    set_timeouts(c.fd);
    CHECK(connect(c.fd, (struct sockaddr *) &sin6, sizeof sin6) == 0);
    client_send_str(&c, "GET /six HTTP/1.1\r\n\r\n");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 200);
    CHECK(r.body && strstr(r.body, " peer=[::1]:"));
    response_destroy(&r);
    client_close(&c);
    http_server_stop(fx.srv);
}

static bool
read_big(struct client *c, size_t size)
{
    struct response r;
    char req[64];
    bool ok;

    snprintf(req, sizeof req, "GET /big?size=%zu HTTP/1.1\r\n\r\n", size);
    client_send_str(c, req);
    if (client_read_response(c, &r, false)) {
        return false;
    }
    ok = r.status == 200 && r.body_len == size;
    for (size_t i = 0; ok && i < size; i++) {
        ok = (uint8_t) r.body[i] == big_byte(i);
    }
    response_destroy(&r);
    return ok;
}

TEST(test_50mb_response_arrives_intact)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct client c;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    CHECK(read_big(&c, 50 * 1024 * 1024));
    /* The connection is still usable afterwards. */
    CHECK(read_big(&c, 10));
    client_close(&c);
    http_server_stop(fx.srv);
}

TEST(test_tls_ensure_cert_creates_and_keeps)
{
    struct fixture fx = { 0 };
    char cert[128], key[128], *pem1 = NULL, *pem2 = NULL, *err = NULL;
    size_t len1 = 0, len2 = 0;
    struct stat st;
    X509 *x = NULL;
    FILE *f;

    make_temp_dir(&fx);
    snprintf(cert, sizeof cert, "%s/cert.pem", fx.dir);
    snprintf(key, sizeof key, "%s/key.pem", fx.dir);
    CHECK_INT(http_tls_ensure_cert(cert, key, "host1.example.com", &err), 0);
    free(err);
    CHECK(stat(key, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(stat(cert, &st) == 0);
    CHECK_INT(read_file(cert, 1 << 20, &pem1, &len1), 0);

    f = fopen(cert, "r");
    if (f) {
        x = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    CHECK(x != NULL);
    if (x) {
        CHECK_INT(X509_check_host(x, "host1.example.com", 0, 0, NULL), 1);
        CHECK_INT(X509_check_host(x, "localhost", 0, 0, NULL), 1);
        CHECK_INT(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
        CHECK_INT(X509_check_host(x, "other.example.com", 0, 0, NULL), 0);
        /* Valid now, and for about ten years. */
        time_t in_9y = time(NULL) + 9 * 365 * 86400;
        time_t in_11y = time(NULL) + 11 * 365 * 86400;
        CHECK(X509_cmp_time(X509_get0_notBefore(x), NULL) < 0);
        CHECK(X509_cmp_time(X509_get0_notAfter(x), &in_9y) > 0);
        CHECK(X509_cmp_time(X509_get0_notAfter(x), &in_11y) < 0);
        X509_free(x);
    }

    CHECK_INT(http_tls_ensure_cert(cert, key, "host2.example.com", &err), 0);
    CHECK_INT(read_file(cert, 1 << 20, &pem2, &len2), 0);
    CHECK(pem1 && pem2 && len1 == len2 && !memcmp(pem1, pem2, len1));
    free(pem1);
    free(pem2);

    /* A missing key means a new pair. */
    unlink(key);
    CHECK_INT(http_tls_ensure_cert(cert, key, "host2.example.com", &err), 0);
    CHECK_INT(read_file(cert, 1 << 20, &pem2, &len2), 0);
    CHECK(stat(key, &st) == 0 && (st.st_mode & 0777) == 0600);
    free(pem2);

    /* Key and certificate in one file, as XenServer's xapi-ssl.pem. */
    snprintf(cert, sizeof cert, "%s/both.pem", fx.dir);
    CHECK_INT(http_tls_ensure_cert(cert, cert, NULL, &err), 0);
    CHECK(stat(cert, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK_INT(read_file(cert, 1 << 20, &pem2, &len2), 0);
    CHECK(pem2 && strstr(pem2, "PRIVATE KEY") && strstr(pem2, "CERTIFICATE"));
    free(pem2);
    remove_temp_dir(&fx);
}

TEST(test_tls_12_works_and_11_is_refused)
{
    struct http_listener_config tls = { HTTP_LISTEN_TLS,
                                        (char *) "127.0.0.1:0" };
    struct http_server_config cfg = { .listeners = &tls, .n_listeners = 1 };
    struct fixture fx = { 0 };
    char cert[128], key[128], *err = NULL;
    struct client c;
    struct response r;
    int rc;

    make_temp_dir(&fx);
    snprintf(cert, sizeof cert, "%s/cert.pem", fx.dir);
    snprintf(key, sizeof key, "%s/key.pem", fx.dir);
    CHECK_INT(http_tls_ensure_cert(cert, key, "localhost", &err), 0);
    free(err);
    cfg.tls_cert_file = cert;
    cfg.tls_key_file = key;
    if (start_server(&fx, &cfg)) {
        CHECK(false);
        remove_temp_dir(&fx);
        return;
    }

    /* The best version both sides have, with the certificate verified. */
    rc = client_connect_tls(&c, fx.port, cert, 0);
    CHECK_INT(rc, 0);
    if (!rc) {
        CHECK_INT(SSL_get_verify_result(c.ssl), X509_V_OK);
        CHECK(SSL_version(c.ssl) >= TLS1_2_VERSION);
        for (int i = 0; i < 2; i++) {
            client_send_str(&c, "POST /s HTTP/1.1\r\nContent-Length: 2\r\n"
                                "\r\nok");
            CHECK_INT(client_read_response(&c, &r, false), 0);
            CHECK_INT(r.status, 200);
            CHECK(r.body && strstr(r.body, "tls=1 unix=0 len=2\nok"));
            response_destroy(&r);
        }
        /* Large enough to fill the socket: non-blocking TLS writes. */
        CHECK(read_big(&c, 20 * 1024 * 1024));
    }
    client_close(&c);

    /* Exactly TLS 1.2 works... */
    rc = client_connect_tls(&c, fx.port, cert, TLS1_2_VERSION);
    CHECK_INT(rc, 0);
    if (!rc) {
        CHECK_INT(SSL_version(c.ssl), TLS1_2_VERSION);
        client_send_str(&c, "GET /v12 HTTP/1.1\r\n\r\n");
        CHECK_INT(client_read_response(&c, &r, false), 0);
        CHECK_INT(r.status, 200);
        response_destroy(&r);
    }
    client_close(&c);

    /* ...and the same client capped at TLS 1.1 is refused by the server
     * with a protocol_version alert. */
    ERR_clear_error();
    rc = client_connect_tls(&c, fx.port, cert, TLS1_1_VERSION);
    CHECK_INT(rc, -EPROTO);
    CHECK_INT(ERR_GET_REASON(ERR_peek_last_error()),
              SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
    ERR_clear_error();
    client_close(&c);

    /* Plain HTTP on the TLS port is refused too (perhaps with an alert,
     * never with an HTTP answer). */
    client_connect(&c, fx.port);
    client_send_str(&c, "GET / HTTP/1.1\r\n\r\n");
    while (c.in.len < 100 && client_read_more(&c) > 0) {
        continue;
    }
    CHECK(c.in.len < 100 && !(c.in.s && strstr(c.in.s, "HTTP/")));
    client_close(&c);

    http_server_stop(fx.srv);
    remove_temp_dir(&fx);
}

TEST(test_max_connections_refuses_extra)
{
    struct http_server_config cfg = { .max_connections = 2 };
    struct fixture fx = { 0 };
    struct client c[3];
    struct response r;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    for (int i = 0; i < 2; i++) {
        client_connect(&c[i], fx.port);
        client_send_str(&c[i], "GET / HTTP/1.1\r\n\r\n");
        CHECK_INT(client_read_response(&c[i], &r, false), 0);
        response_destroy(&r);
    }
    client_connect(&c[2], fx.port);
    client_send_str(&c[2], "GET / HTTP/1.1\r\n\r\n");
    CHECK(client_sees_close(&c[2]));
    client_close(&c[2]);

    /* A slot frees up when a client leaves (once the server has seen it
     * leave, hence the retries). */
    client_close(&c[0]);
    for (int i = 0; i < 50; i++) {
        usleep(20 * 1000);
        client_connect(&c[2], fx.port);
        client_send_str(&c[2], "GET / HTTP/1.1\r\n\r\n");
        if (!client_read_response(&c[2], &r, false)) {
            break;
        }
        client_close(&c[2]);
    }
    CHECK_INT(r.status, 200);
    response_destroy(&r);
    client_close(&c[2]);
    client_close(&c[1]);
    http_server_stop(fx.srv);
}

TEST(test_idle_connection_is_closed)
{
    struct http_server_config cfg = { .idle_timeout_ms = 300 };
    struct fixture fx = { 0 };
    struct client c;
    struct response r;
    int64_t start;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    client_send_str(&c, "GET / HTTP/1.1\r\n\r\n");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    response_destroy(&r);
    start = time_mono_ms();
    CHECK(client_sees_close(&c));
    CHECK(time_mono_ms() - start >= 250);
    CHECK(time_mono_ms() - start < 3000);
    client_close(&c);

    /* A header trickled in slowly does not reset the clock. */
    client_connect(&c, fx.port);
    start = time_mono_ms();
    for (int i = 0; i < 6; i++) {
        client_send_str(&c, "X");
        usleep(100 * 1000);
    }
    CHECK(client_sees_close(&c));
    CHECK(time_mono_ms() - start < 3000);
    client_close(&c);
    http_server_stop(fx.srv);
}

/* ---- streamed request bodies ---- */

/* The decoder of chunked bodies read by handlers gives the same data fed
 * whole or byte by byte, and refuses broken framing. */
TEST(test_chunked_decoder)
{
    static const char good[] =
        "5;ext=\"x\"\r\nhello\r\n19\r\n, the quick brown fox jum\r\n"
        "0\r\nTrailer-One: a\r\nTrailer-Two: b\r\n\r\nNEXT";
    static const char *const bad[] = {
        "zz\r\n", "5\r\nhelloXX", "5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        "10000000000000000000000\r\n",
    };

    for (int step = 0; step < 2; step++) {
        struct http_chunked d;
        struct ds data = DS_EMPTY;
        size_t fed = step ? 0 : sizeof good - 1, pos = 0;
        int rc = HTTP_CHUNKED_MORE;

        http_chunked_init(&d);
        while (rc == HTTP_CHUNKED_MORE) {
            size_t consumed, n;
            rc = http_chunked_feed(&d, good + pos, fed - pos, 7, &consumed,
                                   &n);
            CHECK(rc >= 0);
            CHECK(n <= 7);
            ds_put(&data, good + pos, n);
            pos += consumed;
            if (rc == HTTP_CHUNKED_MORE && !consumed) {
                if (fed == sizeof good - 1) {
                    CHECK(false);
                    break;
                }
                fed++;
            }
        }
        CHECK_INT(rc, HTTP_CHUNKED_DONE);
        CHECK_STR(ds_cstr(&data), "hello, the quick brown fox jum");
        CHECK_STR(good + pos, "NEXT");
        ds_destroy(&data);
    }
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct http_chunked d;
        size_t pos = 0, n = strlen(bad[i]), consumed, k;
        int rc;

        http_chunked_init(&d);
        do {
            rc = http_chunked_feed(&d, bad[i] + pos, n - pos, 100,
                                   &consumed, &k);
            pos += consumed;
        } while (rc == HTTP_CHUNKED_MORE && consumed);
        CHECK(rc < 0);
    }
}

/* A PUT to /import... reaches the handler after its header; the handler
 * takes the connection over and reads a body larger than max_body, sent
 * with Content-Length or chunked, in plain and TLS, and answers itself. */
TEST(test_streamed_body_reaches_handler)
{
    struct http_listener_config ls[2] = {
        { HTTP_LISTEN_TCP, (char *) "127.0.0.1:0" },
        { HTTP_LISTEN_TLS, (char *) "127.0.0.1:0" },
    };
    struct http_server_config cfg = { .listeners = ls, .n_listeners = 2 };
    struct fixture fx = { 0 };
    char cert[128], key[128], *err = NULL, want[64];
    size_t size = 3 * 1024 * 1024 + 17;     /* over max_body (1 MiB) */
    char *body = xmalloc(size);
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < size; i++) {
        body[i] = (char) big_byte(i);
    }
    h = fnv_update(h, body, size);
    snprintf(want, sizeof want, "n=%zu fnv=%08x", size, h);
    make_temp_dir(&fx);
    snprintf(cert, sizeof cert, "%s/cert.pem", fx.dir);
    snprintf(key, sizeof key, "%s/key.pem", fx.dir);
    CHECK_INT(http_tls_ensure_cert(cert, key, "localhost", &err), 0);
    free(err);
    cfg.tls_cert_file = cert;
    cfg.tls_key_file = key;
    if (start_server(&fx, &cfg)) {
        CHECK(false);
        remove_temp_dir(&fx);
        free(body);
        return;
    }
    for (int tls = 0; tls < 2; tls++) {
        for (int chunked = 0; chunked < 2; chunked++) {
            struct client c;
            struct response r;
            char head[256];
            int rc = tls ? client_connect_tls(&c, http_server_port(fx.srv, 1),
                                              cert, 0)
                         : client_connect(&c, fx.port);

            CHECK_INT(rc, 0);
            if (chunked) {
                size_t off = 0, piece = 1;
                client_send_str(&c, "PUT /import_raw_vdi?x=1 HTTP/1.1\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\n");
                while (off < size) {
                    size_t k = MIN(piece, size - off);
                    snprintf(head, sizeof head, "%zx%s\r\n", k,
                             piece % 3 ? "" : ";e=1");
                    client_send_str(&c, head);
                    client_send(&c, body + off, k);
                    client_send_str(&c, "\r\n");
                    off += k;
                    piece = piece * 3 + 1;
                }
                client_send_str(&c, "0\r\nX-Sum: 1\r\n\r\n");
            } else {
                snprintf(head, sizeof head, "PUT /import HTTP/1.1\r\n"
                         "Content-Length: %zu\r\n\r\n", size);
                client_send_str(&c, head);
                client_send(&c, body, size);
            }
            CHECK_INT(client_read_response(&c, &r, false), 0);
            CHECK_INT(r.status, 200);
            CHECK(head_has(&r, "X-Test", "streamed"));
            CHECK(head_has(&r, "Connection", "close"));
            CHECK(r.body && !strcmp(r.body, want));
            if (r.body && strcmp(r.body, want)) {
                fprintf(stderr, "  got %s, want %s\n", r.body, want);
            }
            response_destroy(&r);
            CHECK(client_sees_close(&c));
            client_close(&c);
        }
    }
    http_server_stop(fx.srv);
    remove_temp_dir(&fx);
    free(body);
}

/* Expect: 100-continue on a streamed body: the handler's take-over sends
 * "100 Continue", and its final answer follows the body.  A handler that
 * refuses the request before the body gets its answer out and the
 * connection closes; a body cut short or with broken chunks is seen as
 * such by the handler. */
TEST(test_streamed_body_continue_refusal_and_errors)
{
    struct http_server_config cfg = { 0 };
    struct fixture fx = { 0 };
    struct client c;
    struct response r;

    if (start_server(&fx, &cfg)) {
        CHECK(false);
        return;
    }
    client_connect(&c, fx.port);
    client_send_str(&c, "PUT /import HTTP/1.1\r\nContent-Length: 5\r\n"
                        "Expect: 100-continue\r\n\r\n");
    CHECK_INT(client_read_response(&c, &r, true), 0);
    CHECK_INT(r.status, 100);
    response_destroy(&r);
    client_send_str(&c, "hello");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 200);
    CHECK(r.body && !strncmp(r.body, "n=5 ", 4));
    response_destroy(&r);
    client_close(&c);

    client_connect(&c, fx.port);
    client_send_str(&c, "PUT /import?refuse=1 HTTP/1.1\r\n"
                        "Content-Length: 100000\r\n\r\nsome");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 403);
    CHECK(head_has(&r, "Connection", "close"));
    response_destroy(&r);
    CHECK(client_sees_close(&c));
    client_close(&c);

    client_connect(&c, fx.port);
    client_send_str(&c, "PUT /import HTTP/1.1\r\nContent-Length: 10\r\n\r\n"
                        "short");
    shutdown(c.fd, SHUT_WR);
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 400);
    CHECK(r.body && strstr(r.body, strerror(EPIPE)));
    response_destroy(&r);
    client_close(&c);

    client_connect(&c, fx.port);
    client_send_str(&c, "POST /import HTTP/1.1\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 400);
    CHECK(r.body && strstr(r.body, strerror(EBADMSG)));
    response_destroy(&r);
    client_close(&c);

    /* Other paths keep the server-read body and its limit. */
    client_connect(&c, fx.port);
    client_send_str(&c, "PUT /up HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd");
    CHECK_INT(client_read_response(&c, &r, false), 0);
    CHECK_INT(r.status, 200);
    CHECK(r.body && strstr(r.body, "len=4\nabcd"));
    response_destroy(&r);
    client_close(&c);
    http_server_stop(fx.srv);
}

TEST(test_server_start_reports_errors)
{
    struct http_listener_config bad = { HTTP_LISTEN_TCP,
                                        (char *) "no-port-here" };
    struct http_listener_config tls = { HTTP_LISTEN_TLS,
                                        (char *) "127.0.0.1:0" };
    struct http_server_config cfg = { .listeners = &bad, .n_listeners = 1,
                                      .handler = test_handler };
    struct http_server *srv = NULL;
    char *err = NULL;

    CHECK(http_server_start(&cfg, &srv, &err) < 0);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    cfg.listeners = &tls;
    cfg.tls_cert_file = "/nonexistent/cert.pem";
    cfg.tls_key_file = "/nonexistent/key.pem";
    CHECK(http_server_start(&cfg, &srv, &err) < 0);
    CHECK(err != NULL);
    free(err);
    CHECK(srv == NULL);
    http_server_stop(NULL);
    CHECK_STR(http_reason(404), "Not Found");
}
