/* http.c — the daemon's HTTP/1.1 server declared in http.h.
 *
 * Threads.  One event-loop thread owns every socket: it accepts, does TLS
 * handshakes, reads, parses (with http-parse.c) and writes, all without
 * blocking, using edge-triggered epoll.  A fixed pool of worker threads
 * runs the handler.  Nothing else touches a connection.
 *
 * Queues.  A parsed request becomes a struct http_exchange that the loop
 * appends to the work queue (mutex + condition variable).  http_respond(),
 * from any thread, formats the response into the exchange and appends it
 * to the completion queue, writing the eventfd only when that queue goes
 * from empty to non-empty; the loop takes the whole queue in one go, so a
 * burst of responses costs one wakeup.
 *
 * Ownership.  An exchange belongs to the handler from dispatch until
 * http_respond(), then to the loop, which hands the response buffers to
 * the connection and frees the exchange.  A connection points to its
 * exchange in flight and the exchange back to the connection; both links
 * are touched only by the loop, which clears the back link when it closes
 * the connection, so a late response is simply dropped.  Each live
 * exchange holds a reference on the server, so http_respond() after
 * http_server_stop() still finds the completion queue's lock and sees
 * that the server is gone.
 *
 * Connections.  Requests on one connection are handled one at a time, in
 * order; bytes of pipelined requests wait in the input buffer (and in the
 * kernel) until the response before them is written.
 *
 * Take-over.  A response from http_respond_takeover() carries a callback
 * that the loop moves to the connection; once the head is written, the
 * loop removes the socket from epoll, wraps it (with its SSL object and
 * any input already buffered) in a struct http_stream, forgets the
 * connection and calls the callback.  Whatever ends the connection or the
 * exchange first (conn_close(), exchange_free()) calls it with NULL
 * instead.  Streams are listed, under their own mutex, only so that
 * http_server_stop() can shut their sockets down and wait for them. */
#include <config.h>
#include "http.h"
#include "http-parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define DEFAULT_WORKERS 8
#define DEFAULT_MAX_BODY (64 * 1024 * 1024)
#define DEFAULT_MAX_HEADER_BYTES (64 * 1024)
#define DEFAULT_MAX_CONNECTIONS 4096
#define DEFAULT_IDLE_TIMEOUT_MS (300 * 1000)

/* Input buffers start small (most requests are a few hundred bytes) and
 * grow only while a header section is being collected; body bytes are
 * consumed by the parser as they arrive. */
#define IN_INITIAL_CAP (16 * 1024)
#define IN_MIN_ROOM 4096

/* After an error response or "Connection: close" the server shuts down its
 * sending side and keeps reading for a while before closing: closing a
 * socket with unread input makes the kernel send a reset, which can
 * destroy the response before the client has read it. */
#define LINGER_MS 2000

#define MAX_EVENTS 256
#define ACCEPT_BATCH 64

/* A queued request waits this long for a busy worker before another
 * worker is woken for it; see work_needs_wakeup(). */
#define WORK_STALE_US 300

enum ep_kind { EP_LISTENER, EP_CONN, EP_WAKE };

struct listener {
    enum ep_kind kind;          /* EP_LISTENER; first, see loop_main() */
    struct http_server *srv;
    int fd;
    int type;                   /* HTTP_LISTEN_* */
    int port;
    char *unix_path;            /* removed again at stop */
};

enum conn_state {
    CONN_HANDSHAKE,             /* TLS handshake in progress */
    CONN_READING,               /* waiting for (the rest of) a request */
    CONN_BUSY,                  /* a handler has the request */
    CONN_WRITING,               /* a response (or 100 Continue) is going out */
    CONN_LINGER,                /* sent our last byte; draining input */
    CONN_CLOSED,
};

struct conn {
    enum ep_kind kind;          /* EP_CONN */
    struct http_server *srv;
    struct conn *prev, *next;   /* srv->conns, or srv->dead once closed */
    int fd;
    SSL *ssl;
    enum conn_state state;
    bool is_tls;
    bool is_unix;
    bool read_ready;            /* the socket may have input we have not
                                   read: epoll is edge-triggered */
    bool read_eof;
    bool peer_shut;             /* EPOLLRDHUP seen: a read will see EOF */
    char peer[64];
    int64_t deadline;           /* monotonic ms; checked unless CONN_BUSY */

    char *in;                   /* unparsed input is in[in_start..in_len) */
    size_t in_start, in_len, in_cap;
    struct http_parser parser;
    struct http_exchange *inflight;

    /* The response being written: out_head, then out_body. */
    char *out_head;
    size_t out_head_len;
    bool out_head_owned;
    char *out_body;
    size_t out_body_len;
    size_t out_off;
    bool close_after;           /* linger and close once written */
    http_takeover_fn *takeover_fn;  /* hand over once written */
    void *takeover_aux;
};

struct http_exchange {
    struct http_exchange *next; /* in the work or completion queue */
    struct http_server *srv;
    struct conn *conn;          /* loop thread only; NULL once closed */
    struct http_request req;
    int64_t queued_us;          /* when the loop queued it for a worker */
    char *resp_head;            /* the head, and the body if copied */
    size_t resp_head_len;
    char *resp_body;            /* a body taken by http_respond_take() */
    size_t resp_body_len;
    bool resp_close;
    http_takeover_fn *takeover_fn;  /* from http_respond_takeover() */
    void *takeover_aux;
};

/* A connection taken over by a handler (see http.h). */
struct http_stream {
    struct http_server *srv;        /* holds a reference */
    struct http_stream *prev, *next;    /* srv->streams */
    int fd;
    SSL *ssl;
    char *pre;                      /* input read before the take-over */
    size_t pre_off, pre_len;
    bool read_wants_write;          /* TLS: the last read needs POLLOUT */
    bool write_wants_read;          /* TLS: the last write needs POLLIN */
};

struct xqueue {
    struct http_exchange *head;
    struct http_exchange **tail;
};

struct worker {
    struct http_server *srv;
    pthread_t thread;
    int64_t busy_since_us;      /* start of the current handler, or 0;
                                   under work_mutex */
};

struct http_server {
    /* One reference for the running server, one per live exchange. */
    atomic_size_t refs;

    http_handler_fn *handler;
    void *handler_aux;
    http_stream_body_fn *stream_body;
    size_t n_workers;
    size_t max_connections;
    int idle_timeout_ms;
    struct http_parse_limits limits;

    SSL_CTX *ssl_ctx;
    struct listener *listeners;
    size_t n_listeners;
    int epfd;
    int wakefd;
    enum ep_kind wake_kind;     /* epoll data for wakefd points here */

    pthread_t loop_thread;
    bool loop_started;
    struct worker *workers;
    size_t n_workers_started;

    /* Loop to workers. */
    pthread_mutex_t work_mutex;
    pthread_cond_t work_cond;
    struct xqueue work;
    size_t n_idle_workers;      /* waiting on work_cond */
    size_t n_awake_workers;     /* running a handler or looking for work */
    size_t n_busy_workers;      /* running a handler */
    size_t n_wakes_pending;     /* signalled, not yet running */
    bool work_stop;

    /* Any thread to the loop. */
    pthread_mutex_t done_mutex;
    struct xqueue done;
    bool loop_asleep;           /* in epoll_wait(): needs wakefd written */
    bool wake_pending;          /* wakefd written, loop not yet drained */
    bool stopping;              /* the loop should exit */
    bool closed;                /* responses are dropped from now on */

    /* Loop thread only (and http_server_stop() once the loop is gone). */
    struct conn *conns;
    size_t n_conns;
    struct conn *dead;          /* closed during this iteration */
    int64_t now;                /* ms, when epoll_wait() returned */
    int64_t now_us;
    int64_t next_sweep;
    bool work_waiting;          /* work queued that no worker was woken
                                   for: look at it again soon */
    bool listeners_paused;

    /* Taken-over connections (any thread). */
    pthread_mutex_t stream_mutex;
    pthread_cond_t stream_cond;     /* signalled when streams empties */
    struct http_stream *streams;
};

static void conn_close(struct conn *c);
static void streams_stop(struct http_server *srv);

/* ---- queues and references ---- */

static void
xqueue_init(struct xqueue *q)
{
    q->head = NULL;
    q->tail = &q->head;
}

static void
xqueue_push(struct xqueue *q, struct http_exchange *x)
{
    x->next = NULL;
    *q->tail = x;
    q->tail = &x->next;
}

static void
xqueue_append(struct xqueue *q, struct xqueue *from)
{
    if (from->head) {
        *q->tail = from->head;
        q->tail = from->tail;
        xqueue_init(from);
    }
}

static void
server_unref(struct http_server *srv)
{
    if (atomic_fetch_sub(&srv->refs, 1) == 1) {
        pthread_mutex_destroy(&srv->work_mutex);
        pthread_cond_destroy(&srv->work_cond);
        pthread_mutex_destroy(&srv->done_mutex);
        pthread_mutex_destroy(&srv->stream_mutex);
        pthread_cond_destroy(&srv->stream_cond);
        free(srv);
    }
}

static void
exchange_free(struct http_exchange *x)
{
    struct http_server *srv;

    if (!x) {
        return;
    }
    srv = x->srv;
    if (x->takeover_fn) {
        x->takeover_fn(NULL, x->takeover_aux);
    }
    http_request_destroy(&x->req);
    free(x->resp_head);
    free(x->resp_body);
    free(x);
    server_unref(srv);
}

static void
exchange_list_free(struct http_exchange *x)
{
    while (x) {
        struct http_exchange *next = x->next;
        exchange_free(x);
        x = next;
    }
}

/* ---- responses (any thread) ---- */

const char *
http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Formats the Date header value, once per second per thread. */
static const char *
http_date(void)
{
    static __thread char buf[40];
    static __thread time_t cached = -1;
    time_t now = time(NULL);

    if (now != cached) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached = now;
    }
    return buf;
}

/* Appends the response head to ds.  Returns whether a body may follow. */
static bool
format_head(struct ds *ds, const struct http_exchange *x, int status,
            const char *content_type, const char *extra_headers,
            size_t body_len)
{
    bool no_content = status < 200 || status == 204 || status == 304;

    ds_put_cstr(ds, "HTTP/1.1 ");
    ds_put_int(ds, status);
    ds_put_char(ds, ' ');
    ds_put_cstr(ds, http_reason(status));
    ds_put_cstr(ds, "\r\nDate: ");
    ds_put_cstr(ds, http_date());
    ds_put_cstr(ds, "\r\n");
    if (content_type) {
        ds_put_cstr(ds, "Content-Type: ");
        ds_put_cstr(ds, content_type);
        ds_put_cstr(ds, "\r\n");
    }
    if (!no_content) {
        ds_put_cstr(ds, "Content-Length: ");
        ds_put_int(ds, (int64_t) body_len);
        ds_put_cstr(ds, "\r\n");
    }
    ds_put_cstr(ds, x->req.keep_alive ? "Connection: keep-alive\r\n"
                                      : "Connection: close\r\n");
    if (extra_headers && extra_headers[0]) {
        ds_put_cstr(ds, extra_headers);
        ds_put_cstr(ds, "\r\n");
    }
    ds_put_cstr(ds, "\r\n");
    return !no_content && strcmp(x->req.method, "HEAD");
}

/* Hands a formatted response to the loop thread. */
static void
exchange_complete(struct http_exchange *x)
{
    struct http_server *srv = x->srv;

    x->resp_close = !x->req.keep_alive;
    pthread_mutex_lock(&srv->done_mutex);
    if (srv->closed) {
        pthread_mutex_unlock(&srv->done_mutex);
        exchange_free(x);
        return;
    }
    xqueue_push(&srv->done, x);
    /* A loop that is not asleep looks at the queue before it sleeps, so
     * only a sleeping loop needs the system call. */
    if (srv->loop_asleep && !srv->wake_pending) {
        /* Written under the lock: http_server_stop() closes wakefd only
         * after setting closed under the same lock. */
        uint64_t one = 1;
        srv->wake_pending = true;
        if (write(srv->wakefd, &one, sizeof one) < 0) {
            LOG_ERR("http: cannot wake the event loop: %s", strerror(errno));
        }
    }
    pthread_mutex_unlock(&srv->done_mutex);
}

void
http_respond(struct http_exchange *x, int status, const char *content_type,
             const char *extra_headers, const void *body, size_t body_len)
{
    struct ds ds = DS_EMPTY;

    /* Small responses are the common case: head and body go out in one
     * buffer, so in one send() and one TLS record. */
    ds_reserve(&ds, 256 + body_len);
    if (format_head(&ds, x, status, content_type, extra_headers, body_len)) {
        ds_put(&ds, body, body_len);
    }
    x->resp_head_len = ds.len;
    x->resp_head = ds_steal(&ds);
    exchange_complete(x);
}

void
http_respond_take(struct http_exchange *x, int status,
                  const char *content_type, const char *extra_headers,
                  char *body, size_t body_len)
{
    struct ds ds = DS_EMPTY;

    ds_reserve(&ds, 256);
    if (format_head(&ds, x, status, content_type, extra_headers, body_len)
        && body_len) {
        x->resp_body = body;
        x->resp_body_len = body_len;
    } else {
        free(body);
    }
    x->resp_head_len = ds.len;
    x->resp_head = ds_steal(&ds);
    exchange_complete(x);
}

void
http_respond_takeover(struct http_exchange *x, int status,
                      const char *extra_headers, http_takeover_fn *fn,
                      void *aux)
{
    struct ds ds = DS_EMPTY;

    /* No Content-Length: what follows the head is the stream itself.
     * Status 0: no head at all, the owner answers later. */
    if (status) {
        ds_put_fmt(&ds, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
                   http_reason(status), http_date());
        if (extra_headers && extra_headers[0]) {
            ds_put_cstr(&ds, extra_headers);
            ds_put_cstr(&ds, "\r\n");
        }
        ds_put_cstr(&ds, "\r\n");
    } else {
        ds_put_cstr(&ds, "");
    }
    x->resp_head_len = ds.len;
    x->resp_head = ds_steal(&ds);
    x->takeover_fn = fn;
    x->takeover_aux = aux;
    exchange_complete(x);
}

const struct http_request *
http_exchange_request(const struct http_exchange *x)
{
    return &x->req;
}

/* ---- connections (loop thread) ---- */

static void
conn_set_deadline(struct conn *c, int ms)
{
    c->deadline = c->srv->now + ms;
}

static void
conn_free_output(struct conn *c)
{
    if (c->out_head_owned) {
        free(c->out_head);
    }
    free(c->out_body);
    c->out_head = c->out_body = NULL;
    c->out_head_len = c->out_body_len = c->out_off = 0;
    c->out_head_owned = false;
}

static void
conn_free(struct conn *c)
{
    conn_free_output(c);
    http_parser_destroy(&c->parser);
    free(c->in);
    free(c);
}

static void
conn_close(struct conn *c)
{
    struct http_server *srv = c->srv;

    if (c->state == CONN_CLOSED) {
        return;
    }
    if (c->inflight) {
        c->inflight->conn = NULL;
        c->inflight = NULL;
    }
    if (c->takeover_fn) {
        /* The head of a take-over never got out. */
        http_takeover_fn *fn = c->takeover_fn;
        c->takeover_fn = NULL;
        fn(NULL, c->takeover_aux);
    }
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);   /* also removes it from the epoll set */
        c->fd = -1;
    }
    c->state = CONN_CLOSED;

    if (c->prev) {
        c->prev->next = c->next;
    } else {
        srv->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    srv->n_conns--;
    /* Freed at the end of the loop iteration: later events of the same
     * epoll_wait() batch may still point to it. */
    c->prev = NULL;
    c->next = srv->dead;
    srv->dead = c;
}

static void
conn_start_output(struct conn *c, char *head, size_t head_len,
                  bool head_owned, char *body, size_t body_len,
                  bool close_after)
{
    c->out_head = head;
    c->out_head_len = head_len;
    c->out_head_owned = head_owned;
    c->out_body = body;
    c->out_body_len = body_len;
    c->out_off = 0;
    c->close_after = close_after;
    c->state = CONN_WRITING;
    conn_set_deadline(c, c->srv->idle_timeout_ms);
}

/* Answers a request the parser refused, then closes. */
static void
conn_send_error(struct conn *c, int status)
{
    struct ds ds = DS_EMPTY;
    const char *reason = http_reason(status);

    ds_put_fmt(&ds, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
               "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
               status, reason, strlen(reason) + 1, reason);
    c->in_start = c->in_len = 0;
    conn_start_output(c, ds.s, ds.len, true, NULL, 0, true);
    ds_init(&ds);
}

static void
conn_start_linger(struct conn *c)
{
    conn_free_output(c);
    if (c->read_eof) {
        conn_close(c);
        return;
    }
    if (c->ssl) {
        /* Best effort close_notify; it may not fit, which is fine. */
        ERR_clear_error();
        SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    conn_set_deadline(c, MIN(LINGER_MS, c->srv->idle_timeout_ms));
}

/* Reads and drops input until the client closes or nothing is left. */
static void
conn_linger(struct conn *c)
{
    char buf[16384];

    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n > 0) {
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        conn_close(c);
        return;
    }
}

static bool
conn_handshake(struct conn *c)
{
    int r, e;

    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        /* The client's first request may have come with its last
         * handshake message. */
        c->state = CONN_READING;
        c->read_ready = true;
        conn_set_deadline(c, c->srv->idle_timeout_ms);
        return true;
    }
    e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return false;
    }
    if (log_enabled(LOG_LVL_DEBUG)) {
        char msg[256];
        ERR_error_string_n(ERR_peek_last_error(), msg, sizeof msg);
        LOG_DBG("http: TLS handshake with %s failed: %s", c->peer, msg);
    }
    ERR_clear_error();
    conn_close(c);
    return false;
}

/* Reads what the socket has into c->in.  Returns 1 if bytes arrived, 0 if
 * none are available now, -1 at end of input, -2 if the connection was
 * closed on an error. */
static int
conn_recv(struct conn *c)
{
    size_t room;

    if (c->in_cap - c->in_len < IN_MIN_ROOM) {
        if (c->in_start) {
            memmove(c->in, c->in + c->in_start, c->in_len - c->in_start);
            c->in_len -= c->in_start;
            c->in_start = 0;
        }
        if (c->in_cap - c->in_len < IN_MIN_ROOM) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : IN_INITIAL_CAP;
            c->in = xrealloc(c->in, c->in_cap);
        }
    }
    room = c->in_cap - c->in_len;

    if (c->ssl) {
        size_t n;
        int e;

        ERR_clear_error();
        if (SSL_read_ex(c->ssl, c->in + c->in_len, room, &n)) {
            c->in_len += n;
            return 1;
        }
        e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_READ) {
            c->read_ready = false;
            return 0;
        } else if (e == SSL_ERROR_WANT_WRITE) {
            /* Keep read_ready: retried when the socket is writable. */
            return 0;
        } else if (e == SSL_ERROR_ZERO_RETURN) {
            c->read_eof = true;
            return -1;
        }
        ERR_clear_error();
        conn_close(c);
        return -2;
    }

    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, room, 0);
        if (n > 0) {
            c->in_len += n;
            /* A short read drained the socket; with edge-triggered epoll
             * any later byte brings a new event, so no need to read until
             * EAGAIN (saves a system call per request).  Not so for an
             * end of input that came with the data: its event is spent. */
            if ((size_t) n < room && !c->peer_shut) {
                c->read_ready = false;
            }
            return 1;
        } else if (n == 0) {
            c->read_eof = true;
            c->read_ready = false;
            return -1;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->read_ready = false;
            return 0;
        }
        conn_close(c);
        return -2;
    }
}

static void
conn_dispatch(struct conn *c, struct http_request *req, struct xqueue *batch)
{
    struct http_exchange *x = xcalloc(1, sizeof *x);

    atomic_fetch_add(&c->srv->refs, 1);
    x->srv = c->srv;
    x->conn = c;
    x->req = *req;
    memcpy(x->req.peer, c->peer, sizeof x->req.peer);
    x->req.is_tls = c->is_tls;
    x->req.is_unix = c->is_unix;
    if (x->req.body_streamed) {
        /* Unless the handler takes the connection over, the unread body
         * makes it unusable for another request. */
        x->req.keep_alive = false;
    }
    x->queued_us = c->srv->now_us;
    c->inflight = x;
    c->state = CONN_BUSY;
    xqueue_push(batch, x);
}

/* Parses buffered input and reads more until a request is complete, the
 * socket has nothing more, or the state changes.  Returns whether the
 * state changed (the caller goes on pumping). */
static bool
conn_read_request(struct conn *c, struct xqueue *batch)
{
    for (;;) {
        struct http_request req;
        size_t consumed;
        int rc, r;

        rc = http_parser_feed(&c->parser, c->in + c->in_start,
                              c->in_len - c->in_start, &consumed, &req);
        c->in_start += consumed;
        if (c->in_start == c->in_len) {
            c->in_start = c->in_len = 0;
        }
        if (consumed) {
            /* Body bytes are progress; header bytes alone are not, so a
             * client trickling a header cannot hold a connection open. */
            conn_set_deadline(c, c->srv->idle_timeout_ms);
        }
        if (rc == HTTP_PARSE_DONE) {
            conn_dispatch(c, &req, batch);
            return true;
        } else if (rc < 0) {
            LOG_DBG("http: bad request from %s: %s", c->peer,
                    strerror(-rc));
            conn_send_error(c, http_parse_error_status(rc));
            return true;
        }
        if (http_parser_wants_continue(&c->parser)) {
            static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            conn_start_output(c, cont, sizeof cont - 1, false, NULL, 0,
                              false);
            return true;
        }
        if (c->read_eof) {
            conn_close(c);
            return false;
        }
        if (!c->read_ready) {
            return false;
        }
        r = conn_recv(c);
        if (r == 0 || r == -2) {
            return false;
        }
    }
}

/* Hands the connection to the owner of its take-over callback: the socket
 * (with its TLS state and unparsed input) becomes a stream and the
 * connection is forgotten. */
static void
conn_takeover(struct conn *c)
{
    struct http_server *srv = c->srv;
    struct http_stream *s = xcalloc(1, sizeof *s);
    http_takeover_fn *fn = c->takeover_fn;
    void *aux = c->takeover_aux;

    c->takeover_fn = NULL;
    if (epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL) < 0) {
        LOG_WARN("http: epoll_ctl: %s", strerror(errno));
    }
    atomic_fetch_add(&srv->refs, 1);
    s->srv = srv;
    s->fd = c->fd;
    s->ssl = c->ssl;
    if (c->in_len > c->in_start) {
        s->pre_len = c->in_len - c->in_start;
        s->pre = xmemdup0(c->in + c->in_start, s->pre_len);
    }
    c->fd = -1;
    c->ssl = NULL;
    conn_close(c);

    pthread_mutex_lock(&srv->stream_mutex);
    s->next = srv->streams;
    if (s->next) {
        s->next->prev = s;
    }
    srv->streams = s;
    pthread_mutex_unlock(&srv->stream_mutex);
    fn(s, aux);
}

/* Writes the pending output.  Returns whether it is all written and the
 * state changed. */
static bool
conn_write(struct conn *c)
{
    size_t total = c->out_head_len + c->out_body_len;

    while (c->out_off < total) {
        size_t off = c->out_off;
        const char *p;
        size_t len;

        if (c->ssl) {
            size_t n;
            int e;
            if (off < c->out_head_len) {
                p = c->out_head + off;
                len = c->out_head_len - off;
            } else {
                p = c->out_body + (off - c->out_head_len);
                len = total - off;
            }
            ERR_clear_error();
            if (SSL_write_ex(c->ssl, p, len, &n)) {
                c->out_off += n;
                conn_set_deadline(c, c->srv->idle_timeout_ms);
                continue;
            }
            e = SSL_get_error(c->ssl, 0);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                return false;
            }
            ERR_clear_error();
            conn_close(c);
            return false;
        } else {
            struct iovec iov[2];
            struct msghdr msg = { .msg_iov = iov };
            ssize_t n;
            if (off < c->out_head_len) {
                iov[0].iov_base = c->out_head + off;
                iov[0].iov_len = c->out_head_len - off;
                iov[1].iov_base = c->out_body;
                iov[1].iov_len = c->out_body_len;
                msg.msg_iovlen = c->out_body_len ? 2 : 1;
            } else {
                iov[0].iov_base = c->out_body + (off - c->out_head_len);
                iov[0].iov_len = total - off;
                msg.msg_iovlen = 1;
            }
            n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n >= 0) {
                c->out_off += n;
                conn_set_deadline(c, c->srv->idle_timeout_ms);
                continue;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return false;   /* EPOLLOUT will bring us back */
            }
            conn_close(c);
            return false;
        }
    }
    if (c->takeover_fn) {
        conn_takeover(c);
    } else if (c->close_after) {
        conn_start_linger(c);
    } else {
        conn_free_output(c);
        c->state = CONN_READING;
        conn_set_deadline(c, c->srv->idle_timeout_ms);
    }
    return true;
}

/* Moves a connection along until it has to wait for the socket or for a
 * handler. */
static void
conn_pump(struct conn *c, struct xqueue *batch)
{
    for (;;) {
        switch (c->state) {
        case CONN_HANDSHAKE:
            if (!conn_handshake(c)) {
                return;
            }
            break;
        case CONN_READING:
            if (!conn_read_request(c, batch)) {
                return;
            }
            break;
        case CONN_WRITING:
            if (!conn_write(c)) {
                return;
            }
            break;
        case CONN_LINGER:
            conn_linger(c);
            return;
        case CONN_BUSY:
        case CONN_CLOSED:
            return;
        }
    }
}

static void
conn_on_event(struct conn *c, uint32_t events, struct xqueue *batch)
{
    if (c->state == CONN_CLOSED) {
        return;
    }
    /* EPOLLHUP means both directions are shut (or a reset): nobody can
     * read a response any more.  A client that only shut its sending
     * side gets EPOLLRDHUP and still receives the answer. */
    if (events & (EPOLLERR | EPOLLHUP)) {
        conn_close(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP)) {
        c->read_ready = true;
    }
    if (events & EPOLLRDHUP) {
        c->peer_shut = true;
    }
    conn_pump(c, batch);
}

static void
format_peer(const struct sockaddr_storage *ss, char *buf, size_t size)
{
    char addr[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *) ss;
        inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof addr);
        snprintf(buf, size, "%s:%d", addr, ntohs(sin->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof addr);
        snprintf(buf, size, "[%s]:%d", addr, ntohs(sin6->sin6_port));
    } else {
        snprintf(buf, size, "unix");
    }
}

static void
conn_new(struct listener *l, int fd, const struct sockaddr_storage *ss)
{
    struct http_server *srv = l->srv;
    struct conn *c = xcalloc(1, sizeof *c);
    struct epoll_event ev;

    c->kind = EP_CONN;
    c->srv = srv;
    c->fd = fd;
    c->is_tls = l->type == HTTP_LISTEN_TLS;
    c->is_unix = l->type == HTTP_LISTEN_UNIX;
    format_peer(ss, c->peer, sizeof c->peer);
    http_parser_init(&c->parser, &srv->limits);
    http_parser_set_stream(&c->parser, srv->stream_body, srv->handler_aux);
    if (!c->is_unix) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (c->is_tls) {
        c->ssl = SSL_new(srv->ssl_ctx);
        if (!c->ssl || !SSL_set_fd(c->ssl, fd)) {
            LOG_WARN("http: cannot set up TLS for %s", c->peer);
            ERR_clear_error();
            SSL_free(c->ssl);
            close(fd);
            conn_free(c);
            return;
        }
        SSL_set_accept_state(c->ssl);
        c->state = CONN_HANDSHAKE;
    } else {
        c->state = CONN_READING;
    }
    conn_set_deadline(c, srv->idle_timeout_ms);

    /* Registered once for both directions, edge-triggered: no epoll_ctl()
     * per request. */
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        LOG_WARN("http: epoll_ctl: %s", strerror(errno));
        SSL_free(c->ssl);
        close(fd);
        conn_free(c);
        return;
    }
    c->next = srv->conns;
    if (srv->conns) {
        srv->conns->prev = c;
    }
    srv->conns = c;
    srv->n_conns++;
}

static void
listeners_pause(struct http_server *srv, bool pause)
{
    for (size_t i = 0; i < srv->n_listeners; i++) {
        struct epoll_event ev = {
            .events = pause ? 0 : EPOLLIN,
            .data.ptr = &srv->listeners[i],
        };
        epoll_ctl(srv->epfd, EPOLL_CTL_MOD, srv->listeners[i].fd, &ev);
    }
    srv->listeners_paused = pause;
}

static void
listener_accept(struct listener *l)
{
    struct http_server *srv = l->srv;

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd;

        memset(&ss, 0, sizeof ss);
        fd = accept4(l->fd, (struct sockaddr *) &ss, &sl,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
                || errno == ENOMEM) {
                /* The listener stays readable, so keeping it in the set
                 * would spin; try again at the next sweep. */
                LOG_WARN("http: accept: %s; pausing listeners",
                         strerror(errno));
                listeners_pause(srv, true);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                LOG_WARN("http: accept: %s", strerror(errno));
            }
            return;
        }
        if (srv->n_conns >= srv->max_connections) {
            LOG_DBG("http: connection limit (%zu) reached, refusing one",
                    srv->max_connections);
            close(fd);
            continue;
        }
        conn_new(l, fd, &ss);
    }
}

/* Closes connections past their deadline. */
static void
sweep(struct http_server *srv)
{
    struct conn *c, *next;

    for (c = srv->conns; c; c = next) {
        next = c->next;
        /* A request at a handler may legitimately take long (event.from
         * long polls); the handler decides when it ends. */
        if (c->state != CONN_BUSY && srv->now >= c->deadline) {
            LOG_DBG("http: closing idle connection from %s", c->peer);
            conn_close(c);
        }
    }
    if (srv->listeners_paused) {
        listeners_pause(srv, false);
    }
}

/* Takes every queued response and starts writing it.  Returns true when
 * the server is stopping. */
static bool
drain_completions(struct http_server *srv, bool woken, struct xqueue *batch)
{
    struct http_exchange *x, *next;
    uint64_t v;
    bool stopping;

    if (woken && read(srv->wakefd, &v, sizeof v) < 0 && errno != EAGAIN) {
        LOG_ERR("http: reading the wake-up eventfd: %s", strerror(errno));
    }
    pthread_mutex_lock(&srv->done_mutex);
    x = srv->done.head;
    xqueue_init(&srv->done);
    srv->loop_asleep = false;
    srv->wake_pending = false;
    stopping = srv->stopping;
    pthread_mutex_unlock(&srv->done_mutex);

    for (; x; x = next) {
        struct conn *c = x->conn;
        next = x->next;
        if (c) {
            c->inflight = NULL;
            /* A stream is its owner's to end, whatever the request's
             * Connection header or a half-closed input say. */
            conn_start_output(c, x->resp_head, x->resp_head_len, true,
                              x->resp_body, x->resp_body_len,
                              !x->takeover_fn
                              && (x->resp_close || c->read_eof));
            c->takeover_fn = x->takeover_fn;
            c->takeover_aux = x->takeover_aux;
            x->takeover_fn = NULL;
            x->resp_head = x->resp_body = NULL;
            conn_pump(c, batch);
        }
        exchange_free(x);
    }
    return stopping;
}

/* Whether a sleeping worker should be woken for the queued work.
 *
 * Waking a thread costs a system call and a context switch, more than a
 * trivial call itself, and a burst of such wakeups on a small machine
 * makes threads fight for the cores.  So no worker is woken while one is
 * likely to take the work soon: an awake worker between handlers, or one
 * that started its handler less than WORK_STALE_US ago (most calls are
 * short).  Workers that have been in their handler longer are probably
 * blocked (a synchronous VM.start, a disk write), so they do not count.
 * And once the oldest queued request has waited WORK_STALE_US, another
 * worker is woken regardless, which is how a backlog spreads over cores. */
static bool
work_needs_wakeup(const struct http_server *srv)
{
    int64_t now = srv->now_us;

    if (!srv->work.head || srv->n_idle_workers <= srv->n_wakes_pending) {
        return false;
    }
    if (srv->n_wakes_pending
        || srv->n_awake_workers > srv->n_busy_workers) {
        return now - srv->work.head->queued_us >= WORK_STALE_US;
    }
    for (size_t i = 0; i < srv->n_workers_started; i++) {
        int64_t since = srv->workers[i].busy_since_us;
        if (since && now - since < WORK_STALE_US) {
            return now - srv->work.head->queued_us >= WORK_STALE_US;
        }
    }
    return true;
}

/* Queues new requests and wakes a worker if one is needed.  The loop
 * looks again within a millisecond while work is queued that nobody was
 * woken for. */
static void
submit_work(struct http_server *srv, struct xqueue *batch)
{
    bool wake;

    pthread_mutex_lock(&srv->work_mutex);
    xqueue_append(&srv->work, batch);
    wake = work_needs_wakeup(srv);
    if (wake) {
        srv->n_wakes_pending++;
    }
    /* With no worker left to wake, there is nothing to look at again: a
     * worker finishing its handler takes the next request itself. */
    srv->work_waiting = srv->work.head && !wake
                        && srv->n_idle_workers > srv->n_wakes_pending;
    pthread_mutex_unlock(&srv->work_mutex);
    /* Signalled after unlocking, so that the woken worker does not block
     * at once on the mutex we hold. */
    if (wake) {
        pthread_cond_signal(&srv->work_cond);
    }
}

/* Called before epoll_wait(): returns whether the loop may block, having
 * told completing threads to wake it if so. */
static bool
loop_may_sleep(struct http_server *srv)
{
    bool sleep;

    pthread_mutex_lock(&srv->done_mutex);
    sleep = !srv->done.head && !srv->stopping;
    srv->loop_asleep = sleep;
    pthread_mutex_unlock(&srv->done_mutex);
    return sleep;
}

static int
sweep_interval_ms(const struct http_server *srv)
{
    return MAX(10, MIN(1000, srv->idle_timeout_ms / 4));
}

static void *
loop_main(void *srv_)
{
    struct http_server *srv = srv_;
    struct epoll_event evs[MAX_EVENTS];
    bool stopping = false;

    srv->now_us = time_mono_us();
    srv->now = srv->now_us / 1000;
    srv->next_sweep = srv->now + sweep_interval_ms(srv);
    while (!stopping) {
        struct xqueue batch;
        bool wake = false;
        int timeout = (int) MAX(0, srv->next_sweep - srv->now);
        int n;

        if (!loop_may_sleep(srv)) {
            timeout = 0;
        } else if (srv->work_waiting) {
            timeout = MIN(timeout, 1);
        }
        n = epoll_wait(srv->epfd, evs, MAX_EVENTS, timeout);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            LOG_ERR("http: epoll_wait: %s", strerror(errno));
            break;
        }
        srv->now_us = time_mono_us();
        srv->now = srv->now_us / 1000;
        xqueue_init(&batch);

        /* Read everything that is ready first, then write responses, then
         * hand the new requests to the workers in one go. */
        for (int i = 0; i < n; i++) {
            enum ep_kind *kind = evs[i].data.ptr;
            switch (*kind) {
            case EP_LISTENER:
                listener_accept((struct listener *) kind);
                break;
            case EP_WAKE:
                wake = true;
                break;
            case EP_CONN:
                conn_on_event((struct conn *) kind, evs[i].events, &batch);
                break;
            }
        }
        stopping = drain_completions(srv, wake, &batch);
        if (batch.head || srv->work_waiting) {
            submit_work(srv, &batch);
        }
        if (srv->now >= srv->next_sweep) {
            sweep(srv);
            srv->next_sweep = srv->now + sweep_interval_ms(srv);
        }
        while (srv->dead) {
            struct conn *c = srv->dead;
            srv->dead = c->next;
            conn_free(c);
        }
    }
    return NULL;
}

static void *
worker_main(void *w_)
{
    struct worker *w = w_;
    struct http_server *srv = w->srv;

    pthread_mutex_lock(&srv->work_mutex);
    srv->n_awake_workers++;
    for (;;) {
        struct http_exchange *x;

        while (!srv->work.head && !srv->work_stop) {
            srv->n_awake_workers--;
            srv->n_idle_workers++;
            pthread_cond_wait(&srv->work_cond, &srv->work_mutex);
            srv->n_idle_workers--;
            srv->n_awake_workers++;
            if (srv->n_wakes_pending) {
                srv->n_wakes_pending--;
            }
        }
        if (srv->work_stop) {
            break;
        }
        x = srv->work.head;
        srv->work.head = x->next;
        if (!srv->work.head) {
            srv->work.tail = &srv->work.head;
        }
        x->next = NULL;
        w->busy_since_us = time_mono_us();
        srv->n_busy_workers++;
        pthread_mutex_unlock(&srv->work_mutex);

        srv->handler(x, srv->handler_aux);

        pthread_mutex_lock(&srv->work_mutex);
        w->busy_since_us = 0;
        srv->n_busy_workers--;
    }
    srv->n_awake_workers--;
    pthread_mutex_unlock(&srv->work_mutex);
    return NULL;
}

/* ---- set-up and tear-down ---- */

static char *
tls_error_string(void)
{
    unsigned long e = ERR_get_error();
    char buf[256];

    if (!e) {
        return xstrdup("unknown error");
    }
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return xstrdup(buf);
}

static int
tls_ctx_create(const char *cert_file, const char *key_file,
               SSL_CTX **ret_ctx, char **ret_err)
{
    static const unsigned char sid_ctx[] = "xapi-http";
    SSL_CTX *ctx = NULL;
    char *msg = NULL;
    int rc;

    if (!cert_file || !key_file) {
        *ret_err = xstrdup("a TLS listener needs tls_cert_file and "
                           "tls_key_file");
        return -EINVAL;
    }
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        msg = tls_error_string();
        *ret_err = xasprintf("SSL_CTX_new: %s", msg);
        rc = -ENOMEM;
        goto out;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Renegotiation is a denial-of-service vector and no client needs
     * it; a client closing without close_notify is treated as EOF. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION
                        | SSL_OP_IGNORE_UNEXPECTED_EOF
                        | SSL_OP_CIPHER_SERVER_PREFERENCE
                        | SSL_OP_NO_COMPRESSION);
    /* Partial writes let a large body go out one record at a time from
     * the caller's buffer; released buffers keep idle connections small. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                     | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                     | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        msg = tls_error_string();
        *ret_err = xasprintf("%s: %s", cert_file, msg);
        rc = -EINVAL;
        goto out;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1
        || SSL_CTX_check_private_key(ctx) != 1) {
        msg = tls_error_string();
        *ret_err = xasprintf("%s: %s", key_file, msg);
        rc = -EINVAL;
        goto out;
    }
    *ret_ctx = ctx;
    ctx = NULL;
    rc = 0;
out:
    SSL_CTX_free(ctx);
    free(msg);
    return rc;
}

/* Splits "host:port", "[v6]:port", ":port" or "*:port". */
static int
split_host_port(const char *address, char **ret_host, char **ret_port)
{
    const char *colon, *host, *host_end;

    if (address[0] == '[') {
        host = address + 1;
        host_end = strchr(host, ']');
        if (!host_end || host_end[1] != ':') {
            return -EINVAL;
        }
        colon = host_end + 1;
    } else {
        host = address;
        colon = strrchr(address, ':');
        if (!colon) {
            return -EINVAL;
        }
        host_end = colon;
    }
    if (!colon[1]) {
        return -EINVAL;
    }
    if (host_end == host || (host_end - host == 1 && host[0] == '*')) {
        *ret_host = xstrdup("0.0.0.0");
    } else {
        *ret_host = xmemdup0(host, host_end - host);
    }
    *ret_port = xstrdup(colon + 1);
    return 0;
}

static int
listener_open_inet(struct listener *l, const char *address, char **ret_err)
{
    struct addrinfo hints = { 0 }, *ai = NULL;
    char *host = NULL, *port = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = -1, one = 1, r, rc;

    rc = split_host_port(address, &host, &port);
    if (rc) {
        *ret_err = xasprintf("%s: expected host:port or [v6]:port",
                             address);
        goto out;
    }
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    r = getaddrinfo(host, port, &hints, &ai);
    if (r) {
        *ret_err = xasprintf("%s: %s", address, gai_strerror(r));
        rc = -EINVAL;
        goto out;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0) {
        rc = -errno;
        *ret_err = xasprintf("%s: socket: %s", address, strerror(errno));
        goto out;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) {
        /* "[::]:443" means IPv6 only, so that "0.0.0.0:443" can be
         * configured next to it. */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0
        || listen(fd, SOMAXCONN) < 0
        || getsockname(fd, (struct sockaddr *) &ss, &sl) < 0) {
        rc = -errno;
        *ret_err = xasprintf("%s: %s", address, strerror(errno));
        goto out;
    }
    l->port = ntohs(ss.ss_family == AF_INET6
                    ? ((struct sockaddr_in6 *) &ss)->sin6_port
                    : ((struct sockaddr_in *) &ss)->sin_port);
    l->fd = fd;
    fd = -1;
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    if (ai) {
        freeaddrinfo(ai);
    }
    free(host);
    free(port);
    return rc;
}

static int
listener_open_unix(struct listener *l, const char *path, char **ret_err)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct stat st;
    int fd = -1, rc;

    if (strlen(path) >= sizeof sun.sun_path) {
        *ret_err = xasprintf("%s: path too long for a Unix socket", path);
        return -ENAMETOOLONG;
    }
    strcpy(sun.sun_path, path);
    /* A socket file left by a previous run is replaced; anything else at
     * that path is not ours to delete. */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            *ret_err = xasprintf("%s: exists and is not a socket", path);
            return -EEXIST;
        }
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        *ret_err = xasprintf("%s: socket: %s", path, strerror(errno));
        goto out;
    }
    /* Only the daemon's user may connect: the daemon trusts the local
     * superuser on this socket without a password (session.c). */
    if (bind(fd, (struct sockaddr *) &sun, sizeof sun) < 0
        || chmod(path, 0600) < 0
        || listen(fd, SOMAXCONN) < 0) {
        rc = -errno;
        *ret_err = xasprintf("%s: %s", path, strerror(errno));
        goto out;
    }
    l->unix_path = xstrdup(path);
    l->fd = fd;
    fd = -1;
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

static void
ignore_sigpipe(void)
{
    struct sigaction sa;

    /* Plain sockets use MSG_NOSIGNAL, but OpenSSL writes with write(). */
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

int
http_server_start(const struct http_server_config *cfg,
                  struct http_server **ret_server, char **ret_err)
{
    struct http_server *srv = xcalloc(1, sizeof *srv);
    struct epoll_event ev;
    bool need_tls = false;
    char *err = NULL;
    int rc, r;

    atomic_init(&srv->refs, 1);
    pthread_mutex_init(&srv->work_mutex, NULL);
    pthread_cond_init(&srv->work_cond, NULL);
    pthread_mutex_init(&srv->done_mutex, NULL);
    pthread_mutex_init(&srv->stream_mutex, NULL);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&srv->stream_cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    xqueue_init(&srv->work);
    xqueue_init(&srv->done);
    srv->epfd = srv->wakefd = -1;
    srv->wake_kind = EP_WAKE;
    srv->handler = cfg->handler;
    srv->handler_aux = cfg->handler_aux;
    srv->stream_body = cfg->stream_body ? cfg->stream_body
                                        : http_stream_body_default;
    srv->n_workers = cfg->n_workers ? cfg->n_workers : DEFAULT_WORKERS;
    srv->max_connections = cfg->max_connections ? cfg->max_connections
                                                : DEFAULT_MAX_CONNECTIONS;
    srv->idle_timeout_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms
                                                   : DEFAULT_IDLE_TIMEOUT_MS;
    srv->limits.max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
    srv->limits.max_header_bytes = cfg->max_header_bytes
                                   ? cfg->max_header_bytes
                                   : DEFAULT_MAX_HEADER_BYTES;
    srv->limits.max_headers = HTTP_PARSE_DEFAULT_MAX_HEADERS;

    if (!cfg->handler || !cfg->n_listeners) {
        err = xstrdup("http server needs a handler and a listener");
        rc = -EINVAL;
        goto out;
    }
    ignore_sigpipe();

    for (size_t i = 0; i < cfg->n_listeners; i++) {
        need_tls |= cfg->listeners[i].kind == HTTP_LISTEN_TLS;
    }
    if (need_tls) {
        rc = tls_ctx_create(cfg->tls_cert_file, cfg->tls_key_file,
                            &srv->ssl_ctx, &err);
        if (rc) {
            goto out;
        }
    }

    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    srv->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (srv->epfd < 0 || srv->wakefd < 0) {
        rc = -errno;
        err = xasprintf("epoll/eventfd: %s", strerror(errno));
        goto out;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = &srv->wake_kind;
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->wakefd, &ev) < 0) {
        rc = -errno;
        err = xasprintf("epoll_ctl: %s", strerror(errno));
        goto out;
    }

    srv->listeners = xcalloc(cfg->n_listeners, sizeof *srv->listeners);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct http_listener_config *lc = &cfg->listeners[i];
        struct listener *l = &srv->listeners[srv->n_listeners];

        l->kind = EP_LISTENER;
        l->srv = srv;
        l->fd = -1;
        l->type = lc->kind;
        if (!lc->address) {
            err = xstrdup("listener without an address");
            rc = -EINVAL;
            goto out;
        }
        rc = lc->kind == HTTP_LISTEN_UNIX
             ? listener_open_unix(l, lc->address, &err)
             : listener_open_inet(l, lc->address, &err);
        if (rc) {
            goto out;
        }
        srv->n_listeners++;
        ev.events = EPOLLIN;
        ev.data.ptr = l;
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, l->fd, &ev) < 0) {
            rc = -errno;
            err = xasprintf("epoll_ctl: %s", strerror(errno));
            goto out;
        }
    }

    srv->workers = xcalloc(srv->n_workers, sizeof *srv->workers);
    for (size_t i = 0; i < srv->n_workers; i++) {
        srv->workers[i].srv = srv;
        r = pthread_create(&srv->workers[i].thread, NULL, worker_main,
                           &srv->workers[i]);
        if (r) {
            rc = -r;
            err = xasprintf("pthread_create: %s", strerror(r));
            goto out;
        }
        srv->n_workers_started++;
    }
    r = pthread_create(&srv->loop_thread, NULL, loop_main, srv);
    if (r) {
        rc = -r;
        err = xasprintf("pthread_create: %s", strerror(r));
        goto out;
    }
    srv->loop_started = true;

    *ret_server = srv;
    srv = NULL;
    rc = 0;
out:
    if (srv) {
        http_server_stop(srv);
        if (ret_err) {
            *ret_err = err;
            err = NULL;
        }
    }
    free(err);
    return rc;
}

void
http_server_stop(struct http_server *srv)
{
    struct http_exchange *done, *work;

    if (!srv) {
        return;
    }
    if (srv->loop_started) {
        uint64_t one = 1;
        pthread_mutex_lock(&srv->done_mutex);
        srv->stopping = true;
        srv->wake_pending = true;
        if (write(srv->wakefd, &one, sizeof one) < 0) {
            LOG_ERR("http: cannot wake the event loop: %s", strerror(errno));
        }
        pthread_mutex_unlock(&srv->done_mutex);
        pthread_join(srv->loop_thread, NULL);
    }

    /* Workers finish the handler they are running, if any, and leave
     * queued requests alone. */
    pthread_mutex_lock(&srv->work_mutex);
    srv->work_stop = true;
    pthread_cond_broadcast(&srv->work_cond);
    pthread_mutex_unlock(&srv->work_mutex);
    for (size_t i = 0; i < srv->n_workers_started; i++) {
        pthread_join(srv->workers[i].thread, NULL);
    }

    /* The loop is gone, so its state is ours.  Closing a connection
     * detaches its exchange; that must happen before "closed" is set,
     * because from then on another thread's http_respond() frees the
     * exchange at once. */
    while (srv->conns) {
        conn_close(srv->conns);
    }
    while (srv->dead) {
        struct conn *c = srv->dead;
        srv->dead = c->next;
        conn_free(c);
    }

    pthread_mutex_lock(&srv->done_mutex);
    srv->closed = true;
    done = srv->done.head;
    xqueue_init(&srv->done);
    pthread_mutex_unlock(&srv->done_mutex);
    exchange_list_free(done);

    pthread_mutex_lock(&srv->work_mutex);
    work = srv->work.head;
    xqueue_init(&srv->work);
    pthread_mutex_unlock(&srv->work_mutex);
    exchange_list_free(work);

    streams_stop(srv);

    for (size_t i = 0; i < srv->n_listeners; i++) {
        struct listener *l = &srv->listeners[i];
        close(l->fd);
        if (l->unix_path) {
            unlink(l->unix_path);
            free(l->unix_path);
        }
    }
    free(srv->listeners);
    free(srv->workers);
    if (srv->epfd >= 0) {
        close(srv->epfd);
    }
    if (srv->wakefd >= 0) {
        close(srv->wakefd);
    }
    SSL_CTX_free(srv->ssl_ctx);
    server_unref(srv);
}

/* ---- taken-over connections (any thread) ---- */

/* How long http_server_stop() waits for the owners of streams. */
#define STREAM_STOP_WAIT_MS 5000

/* Shuts down the sockets of the open streams, so that their owners see
 * the end, and waits for them to be closed.  The sockets are shut down
 * under stream_mutex, which http_stream_close() takes before closing
 * one, so a descriptor number is never used after its owner closed it. */
static void
streams_stop(struct http_server *srv)
{
    struct timespec deadline;
    int r = 0;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += STREAM_STOP_WAIT_MS / 1000;
    pthread_mutex_lock(&srv->stream_mutex);
    for (struct http_stream *s = srv->streams; s; s = s->next) {
        shutdown(s->fd, SHUT_RDWR);
    }
    while (srv->streams && r != ETIMEDOUT) {
        r = pthread_cond_timedwait(&srv->stream_cond, &srv->stream_mutex,
                                   &deadline);
    }
    if (srv->streams) {
        LOG_WARN("http: taken-over connections still open after %d ms",
                 STREAM_STOP_WAIT_MS);
    }
    pthread_mutex_unlock(&srv->stream_mutex);
}

ssize_t
http_stream_read(struct http_stream *s, void *buf, size_t n)
{
    if (s->pre_off < s->pre_len) {
        size_t k = MIN(n, s->pre_len - s->pre_off);
        memcpy(buf, s->pre + s->pre_off, k);
        s->pre_off += k;
        if (s->pre_off == s->pre_len) {
            free(s->pre);
            s->pre = NULL;
            s->pre_off = s->pre_len = 0;
        }
        return (ssize_t) k;
    }
    if (s->ssl) {
        size_t got;
        int e;

        s->read_wants_write = false;
        ERR_clear_error();
        if (SSL_read_ex(s->ssl, buf, n, &got)) {
            return (ssize_t) got;
        }
        e = SSL_get_error(s->ssl, 0);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ) {
            return -EAGAIN;
        } else if (e == SSL_ERROR_WANT_WRITE) {
            s->read_wants_write = true;
            return -EAGAIN;
        } else if (e == SSL_ERROR_ZERO_RETURN) {
            return 0;
        }
        return -ECONNRESET;
    }
    for (;;) {
        ssize_t r = recv(s->fd, buf, n, MSG_DONTWAIT);
        if (r >= 0) {
            return r;
        } else if (errno != EINTR) {
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        }
    }
}

ssize_t
http_stream_write(struct http_stream *s, const void *buf, size_t n)
{
    if (s->ssl) {
        size_t put;
        int e;

        s->write_wants_read = false;
        ERR_clear_error();
        if (SSL_write_ex(s->ssl, buf, n, &put)) {
            return (ssize_t) put;
        }
        e = SSL_get_error(s->ssl, 0);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_WRITE) {
            return -EAGAIN;
        } else if (e == SSL_ERROR_WANT_READ) {
            s->write_wants_read = true;
            return -EAGAIN;
        }
        return -EPIPE;
    }
    for (;;) {
        ssize_t r = send(s->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r >= 0) {
            return r;
        } else if (errno != EINTR) {
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        }
    }
}

int
http_stream_fd(const struct http_stream *s)
{
    return s->fd;
}

short
http_stream_poll_events(const struct http_stream *s, bool reading,
                        bool writing)
{
    short events = 0;

    if (reading) {
        events |= s->read_wants_write ? POLLOUT : POLLIN;
    }
    if (writing) {
        events |= s->write_wants_read ? POLLIN : POLLOUT;
    }
    return events;
}

void
http_stream_close(struct http_stream *s)
{
    struct http_server *srv;

    if (!s) {
        return;
    }
    srv = s->srv;
    pthread_mutex_lock(&srv->stream_mutex);
    if (s->prev) {
        s->prev->next = s->next;
    } else {
        srv->streams = s->next;
    }
    if (s->next) {
        s->next->prev = s->prev;
    }
    if (!srv->streams) {
        pthread_cond_broadcast(&srv->stream_cond);
    }
    if (s->ssl) {
        /* Best effort close_notify, as for connections. */
        ERR_clear_error();
        SSL_shutdown(s->ssl);
        ERR_clear_error();
        SSL_free(s->ssl);
    }
    close(s->fd);
    pthread_mutex_unlock(&srv->stream_mutex);
    free(s->pre);
    free(s);
    server_unref(srv);
}

/* ---- blocking use of a stream, and streamed request bodies ---- */

static int
stream_wait(struct http_stream *s, bool reading, int timeout_ms)
{
    struct pollfd pfd = {
        .fd = s->fd,
        .events = http_stream_poll_events(s, reading, !reading),
    };
    int r;

    do {
        r = poll(&pfd, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        return -errno;
    }
    if (r == 0) {
        return -ETIMEDOUT;
    }
    /* Errors and hang-ups show up in the next read or write. */
    return 0;
}

ssize_t
http_stream_read_wait(struct http_stream *s, void *buf, size_t n,
                      int timeout_ms)
{
    for (;;) {
        ssize_t r = http_stream_read(s, buf, n);
        int w;

        if (r != -EAGAIN) {
            return r;
        }
        w = stream_wait(s, true, timeout_ms);
        if (w) {
            return w;
        }
    }
}

int
http_stream_write_all(struct http_stream *s, const void *buf, size_t n,
                      int timeout_ms)
{
    const char *p = buf;

    while (n) {
        ssize_t r = http_stream_write(s, p, n);
        if (r > 0) {
            p += r;
            n -= r;
        } else if (r == -EAGAIN) {
            int w = stream_wait(s, false, timeout_ms);
            if (w) {
                return w;
            }
        } else {
            return r ? (int) r : -EPIPE;
        }
    }
    return 0;
}

int
http_stream_respond(struct http_stream *s, int status,
                    const char *content_type, const char *extra_headers,
                    const void *body, size_t body_len, int timeout_ms)
{
    struct ds ds = DS_EMPTY;
    int rc;

    ds_put_fmt(&ds, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
               http_reason(status), http_date());
    if (content_type) {
        ds_put_fmt(&ds, "Content-Type: %s\r\n", content_type);
    }
    ds_put_fmt(&ds, "Content-Length: %zu\r\nConnection: close\r\n",
               body_len);
    if (extra_headers && extra_headers[0]) {
        ds_put_cstr(&ds, extra_headers);
        ds_put_cstr(&ds, "\r\n");
    }
    ds_put_cstr(&ds, "\r\n");
    ds_put(&ds, body, body_len);
    rc = http_stream_write_all(s, ds.s, ds.len, timeout_ms);
    ds_destroy(&ds);
    return rc;
}

bool
http_stream_body_default(const struct http_request *req, void *aux)
{
    (void) aux;
    return (!strcmp(req->method, "PUT") || !strcmp(req->method, "POST"))
           && !strncmp(req->path, "/import", 7);
}

/* Raw input kept for the chunked decoder: more than the longest framing
 * line, so a line always fits. */
#define BODY_BUF_SIZE (256 * 1024)

struct http_body_reader {
    struct http_stream *s;
    const struct http_request *req;
    int timeout_ms;
    uint64_t total;             /* body bytes returned */
    bool done;
    struct http_chunked dec;
    char *buf;                  /* chunked: undecoded input [start, len) */
    size_t start, len;
};

struct http_body_reader *
http_body_reader_create(struct http_stream *s, const struct http_request *req,
                        int timeout_ms)
{
    struct http_body_reader *r = xcalloc(1, sizeof *r);

    r->s = s;
    r->req = req;
    r->timeout_ms = timeout_ms;
    if (req->body_streamed && req->body_chunked) {
        http_chunked_init(&r->dec);
        r->buf = xmalloc(BODY_BUF_SIZE);
    }
    return r;
}

static ssize_t
body_read_chunked(struct http_body_reader *r, char *out, size_t n)
{
    for (;;) {
        size_t consumed, data;
        ssize_t got;
        int rc;

        rc = http_chunked_feed(&r->dec, r->buf + r->start,
                               r->len - r->start, n, &consumed, &data);
        if (rc < 0) {
            return rc;
        }
        if (data) {
            memcpy(out, r->buf + r->start, data);
        }
        r->start += consumed;
        if (data) {
            return (ssize_t) data;
        }
        if (rc == HTTP_CHUNKED_DONE) {
            r->done = true;
            return 0;
        }
        if (consumed) {
            continue;
        }
        /* The decoder needs more input. */
        if (r->start) {
            memmove(r->buf, r->buf + r->start, r->len - r->start);
            r->len -= r->start;
            r->start = 0;
        }
        if (r->len == BODY_BUF_SIZE) {
            return -EBADMSG;
        }
        got = http_stream_read_wait(r->s, r->buf + r->len,
                                    BODY_BUF_SIZE - r->len, r->timeout_ms);
        if (got == 0) {
            return -EPIPE;
        } else if (got < 0) {
            return got;
        }
        r->len += got;
    }
}

ssize_t
http_body_read(struct http_body_reader *r, void *buf, size_t n)
{
    const struct http_request *req = r->req;
    ssize_t got;

    if (r->done || n == 0) {
        return 0;
    }
    if (!req->body_streamed) {
        size_t k = (size_t) MIN((uint64_t) n, req->body_len - r->total);
        if (k) {
            memcpy(buf, req->body + r->total, k);
        }
        got = k;
    } else if (req->body_chunked) {
        got = body_read_chunked(r, buf, n);
    } else {
        size_t k = (size_t) MIN((uint64_t) n, req->body_length - r->total);
        got = k ? http_stream_read_wait(r->s, buf, k, r->timeout_ms) : 0;
        if (got == 0 && k) {
            got = -EPIPE;
        }
    }
    if (got > 0) {
        r->total += got;
    } else if (got == 0) {
        r->done = true;
    }
    return got;
}

int
http_body_read_full(struct http_body_reader *r, void *buf, size_t n)
{
    char *p = buf;

    while (n) {
        ssize_t got = http_body_read(r, p, n);
        if (got == 0) {
            return -EPIPE;
        } else if (got < 0) {
            return (int) got;
        }
        p += got;
        n -= got;
    }
    return 0;
}

uint64_t
http_body_bytes_read(const struct http_body_reader *r)
{
    return r->total;
}

void
http_body_reader_destroy(struct http_body_reader *r)
{
    if (r) {
        free(r->buf);
        free(r);
    }
}

int
http_server_port(const struct http_server *srv, size_t i)
{
    if (!srv || i >= srv->n_listeners) {
        return -EINVAL;
    }
    return srv->listeners[i].port;
}

/* ---- self-signed certificates ---- */

static int
add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext) {
        return -EINVAL;
    }
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -EINVAL;
}

static int
add_general_name(GENERAL_NAMES *names, int type, const void *data,
                 size_t len)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_STRING *s = type == GEN_IPADD ? ASN1_OCTET_STRING_new()
                                       : ASN1_IA5STRING_new();

    if (!gn || !s || !ASN1_STRING_set(s, data, (int) len)) {
        GENERAL_NAME_free(gn);
        ASN1_STRING_free(s);
        return -ENOMEM;
    }
    GENERAL_NAME_set0_value(gn, type, s);
    if (!sk_GENERAL_NAME_push(names, gn)) {
        GENERAL_NAME_free(gn);
        return -ENOMEM;
    }
    return 0;
}

/* subjectAltName: the host name (or address), localhost and 127.0.0.1.
 * Built as structures, not as an OpenSSL config string, so that a strange
 * host name cannot inject extra entries. */
static int
add_subject_alt_name(X509 *x, const char *hostname)
{
    static const unsigned char loopback[4] = { 127, 0, 0, 1 };
    GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
    unsigned char addr[16];
    int rc;

    if (!names) {
        return -ENOMEM;
    }
    if (inet_pton(AF_INET, hostname, addr) == 1) {
        rc = memcmp(addr, loopback, 4)
             ? add_general_name(names, GEN_IPADD, addr, 4) : 0;
    } else if (inet_pton(AF_INET6, hostname, addr) == 1) {
        rc = add_general_name(names, GEN_IPADD, addr, 16);
    } else if (strcmp(hostname, "localhost")) {
        rc = add_general_name(names, GEN_DNS, hostname, strlen(hostname));
    } else {
        rc = 0;
    }
    if (!rc) {
        rc = add_general_name(names, GEN_DNS, "localhost", 9);
    }
    if (!rc) {
        rc = add_general_name(names, GEN_IPADD, loopback, 4);
    }
    if (!rc && !X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, 0)) {
        rc = -EINVAL;
    }
    GENERAL_NAMES_free(names);
    return rc;
}

static int
pem_to_ds(EVP_PKEY *pkey, X509 *x, struct ds *ds)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long len;
    int rc;

    if (!bio) {
        return -ENOMEM;
    }
    if ((pkey && !PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL,
                                           NULL))
        || (x && !PEM_write_bio_X509(bio, x))) {
        rc = -EIO;
        goto out;
    }
    len = BIO_get_mem_data(bio, &data);
    ds_put(ds, data, len);
    rc = 0;
out:
    BIO_free(bio);
    return rc;
}

int
http_tls_ensure_cert(const char *cert_file, const char *key_file,
                     const char *hostname, char **ret_err)
{
    struct ds key_pem = DS_EMPTY, cert_pem = DS_EMPTY;
    bool same_file;
    unsigned char serial[16];
    char host_buf[256], cn[65];
    size_t cn_len;
    EVP_PKEY *pkey = NULL;
    X509_NAME *name;
    BIGNUM *bn = NULL;
    X509 *x = NULL;
    const char *what = NULL;
    int rc;

    if (!cert_file || !key_file) {
        return -EINVAL;
    }
    if (access(cert_file, F_OK) == 0 && access(key_file, F_OK) == 0) {
        return 0;
    }
    /* XenServer keeps both in one file (xapi-ssl.pem); then it gets the
     * key's mode. */
    same_file = !strcmp(cert_file, key_file);
    if (!hostname) {
        if (gethostname(host_buf, sizeof host_buf) < 0) {
            strcpy(host_buf, "localhost");
        }
        host_buf[sizeof host_buf - 1] = '\0';
        hostname = host_buf;
    }
    /* A CN is at most 64 characters; a longer FQDN keeps its first label
     * there and appears in full in subjectAltName. */
    cn_len = strlen(hostname);
    if (cn_len >= sizeof cn) {
        cn_len = MIN(strcspn(hostname, "."), sizeof cn - 1);
    }
    memcpy(cn, hostname, cn_len);
    cn[cn_len] = '\0';

    pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    x = X509_new();
    bn = BN_new();
    if (!pkey || !x || !bn) {
        what = "key generation";
        rc = -ENOMEM;
        goto out;
    }
    random_bytes(serial, sizeof serial);
    serial[0] &= 0x7f;      /* serial numbers are positive */
    name = X509_get_subject_name(x);
    if (!X509_set_version(x, X509_VERSION_3)
        || !BN_bin2bn(serial, sizeof serial, bn)
        || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x))
        || !X509_gmtime_adj(X509_getm_notBefore(x), -3600)
        || !X509_time_adj_ex(X509_getm_notAfter(x), 3653, 0, NULL)
        || !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                       (const unsigned char *) cn, -1, -1,
                                       0)
        || !X509_set_issuer_name(x, name)
        || !X509_set_pubkey(x, pkey)) {
        what = "certificate fields";
        rc = -EINVAL;
        goto out;
    }
    /* No keyUsage: OpenSSL refuses a self-signed trust anchor whose
     * keyUsage lacks keyCertSign, and clients pin this certificate. */
    if (add_ext(x, NID_basic_constraints, "CA:FALSE")
        || add_ext(x, NID_subject_key_identifier, "hash")
        || add_ext(x, NID_authority_key_identifier, "keyid:always")
        || add_ext(x, NID_ext_key_usage, "serverAuth")
        || add_subject_alt_name(x, hostname)) {
        what = "certificate extensions";
        rc = -EINVAL;
        goto out;
    }
    if (!X509_sign(x, pkey, EVP_sha256())) {
        what = "signing";
        rc = -EINVAL;
        goto out;
    }
    if (pem_to_ds(pkey, same_file ? x : NULL, &key_pem)
        || pem_to_ds(NULL, x, &cert_pem)) {
        what = "PEM encoding";
        rc = -EIO;
        goto out;
    }

    /* The key first: a certificate without its key would be kept by the
     * next call, a key without its certificate is replaced. */
    rc = write_file_atomic(key_file, key_pem.s, key_pem.len, 0600);
    if (rc) {
        if (ret_err) {
            *ret_err = xasprintf("%s: %s", key_file, strerror(-rc));
        }
        goto out;
    }
    if (!same_file) {
        rc = write_file_atomic(cert_file, cert_pem.s, cert_pem.len, 0644);
        if (rc) {
            if (ret_err) {
                *ret_err = xasprintf("%s: %s", cert_file, strerror(-rc));
            }
            goto out;
        }
    }
    LOG_INFO("http: created a self-signed certificate for %s in %s",
             hostname, cert_file);
    rc = 0;
out:
    if (what && ret_err) {
        char *msg = tls_error_string();
        *ret_err = xasprintf("self-signed certificate: %s: %s", what, msg);
        free(msg);
    }
    ERR_clear_error();
    if (key_pem.s) {
        OPENSSL_cleanse(key_pem.s, key_pem.len);
    }
    ds_destroy(&key_pem);
    ds_destroy(&cert_pem);
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}
