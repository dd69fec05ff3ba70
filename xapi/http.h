/* http.h — the daemon's HTTP/1.1 server: listeners on TCP, TLS and Unix
 * sockets, one event-loop thread doing all socket I/O, and a fixed pool of
 * worker threads running request handlers.
 *
 * Life of a request: the loop thread reads and parses the request (headers
 * bounded, body bounded by http_server_config.max_body, Content-Length or
 * chunked), then queues a struct http_exchange to the worker pool.  A
 * worker calls the handler, which must eventually call http_respond()
 * exactly once — from the same worker, or later from any other thread (a
 * long poll such as event.from keeps the exchange and returns at once, so
 * it holds no worker while it waits).  The loop thread writes the response
 * without blocking, then reads the next request on the connection
 * (keep-alive; pipelined requests are answered in order), unless the
 * handler answered with http_respond_takeover() and took the connection
 * over (the console's byte stream; see below).  Malformed
 * requests are answered by the server itself with 400 (or 413, 431, 505)
 * and the connection is closed.
 *
 * Bodies of any size (VM and disk imports) are not read by the server:
 * for a request that http_server_config.stream_body selects, the handler
 * runs once the header is in, takes the connection over and reads the
 * body itself with an http_body_reader (see "Streamed request bodies").
 *
 * If the client goes away while a request is pending, the exchange stays
 * valid until http_respond() is called; the response is then dropped.
 *
 * TLS uses OpenSSL with TLS 1.2 as the minimum version; a certificate and
 * key (PEM) are given in the config.  http_tls_ensure_cert() creates a
 * self-signed pair on first start. */
#ifndef HTTP_H
#define HTTP_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

struct http_header {
    char *name;     /* as received; compare case-insensitively */
    char *value;    /* leading/trailing whitespace trimmed */
};

struct http_request {
    char *method;           /* "GET", "POST", ... */
    char *target;           /* raw request target, e.g. "/RPC2?x=1" */
    char *path;             /* target without the query, percent-decoded */
    char *query;            /* text after '?', or "" */
    int version_minor;      /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
    struct http_header *headers;
    size_t n_headers;
    char *body;             /* NUL-terminated for convenience */
    size_t body_len;
    bool keep_alive;        /* what the client asked for */
    /* A body left for the handler to read (see "Streamed request
     * bodies"): body is then empty. */
    bool body_streamed;
    bool body_chunked;      /* framed by Transfer-Encoding: chunked */
    uint64_t body_length;   /* else its Content-Length */
    bool expect_continue;   /* the client sent Expect: 100-continue */
    char peer[64];          /* "203.0.113.5:40112", "unix" */
    bool is_tls;
    bool is_unix;
};

/* Returns the value of the first header with that name, or NULL. */
const char *http_request_header(const struct http_request *req,
                                const char *name);
/* Looks up key in the query string (percent-decoded); returns a malloc'd
 * value or NULL. */
char *http_request_query_param(const struct http_request *req,
                               const char *key);

struct http_exchange;
typedef void http_handler_fn(struct http_exchange *x, void *aux);

const struct http_request *http_exchange_request(const struct http_exchange *x);

/* Sends the response and releases the exchange.  extra_headers is NULL or
 * CRLF-separated "Name: value" lines without a trailing CRLF.  body is
 * copied.  Connection and Content-Length are added by the server; a
 * Content-Type is added when content_type is not NULL. */
void http_respond(struct http_exchange *x, int status,
                  const char *content_type, const char *extra_headers,
                  const void *body, size_t body_len);
/* Same, but takes ownership of a malloc'd body (avoids a copy of large
 * responses). */
void http_respond_take(struct http_exchange *x, int status,
                       const char *content_type, const char *extra_headers,
                       char *body, size_t body_len);

/* Taking over the connection, for the few endpoints that are not a
 * request and a response: the VM text console (HTTP CONNECT or GET, then
 * raw bytes both ways for as long as the console is open).
 *
 * Instead of http_respond(), the handler calls http_respond_takeover():
 * the server sends the response head (the status line, Date and
 * extra_headers; no Content-Length or Connection, no body), then takes
 * the connection out of its event loop and calls fn(stream, aux) on the
 * loop thread.  From then on the stream belongs to fn's owner, who does
 * its I/O with http_stream_*() from any one thread at a time and closes
 * it with http_stream_close().  fn must not block: it starts a thread or
 * hands the stream to one.  If the connection is gone before the head is
 * written, or the server stops, fn(NULL, aux) is called instead (possibly
 * before http_respond_takeover() returns), so aux is always released.
 *
 * A taken-over connection no longer counts against max_connections nor
 * the idle timeout.  http_server_stop() shuts down the sockets of the
 * streams still open (their owners see end of input, then errors) and
 * waits up to five seconds for their owners to close them. */
#define HTTP_HAVE_TAKEOVER 1
struct http_stream;
typedef void http_takeover_fn(struct http_stream *s, void *aux);
void http_respond_takeover(struct http_exchange *x, int status,
                           const char *extra_headers, http_takeover_fn *fn,
                           void *aux);

/* With status 0 the server sends no head at all: the owner of the stream
 * writes the whole response itself (after reading a streamed body, say). */
#define HTTP_HAVE_TAKEOVER_NO_HEAD 1

/* The stream is non-blocking.  http_stream_read() returns the number of
 * bytes read (> 0), 0 at the end of the client's input, -EAGAIN when
 * nothing is available now, or another -errno; bytes the client sent
 * after its request come first.  http_stream_write() returns the number
 * of bytes written (> 0, maybe fewer than n), -EAGAIN or another -errno
 * (-EPIPE once the client is gone).  After -EAGAIN, retry a write with
 * the same bytes (TLS needs it) once poll() on http_stream_fd() reports
 * the events http_stream_poll_events() asks for: with TLS, a read can
 * need the socket writable and a write readable. */
ssize_t http_stream_read(struct http_stream *s, void *buf, size_t n);
ssize_t http_stream_write(struct http_stream *s, const void *buf, size_t n);
int http_stream_fd(const struct http_stream *s);
short http_stream_poll_events(const struct http_stream *s, bool reading,
                              bool writing);
/* Sends a TLS close_notify if it fits, closes the socket, frees the
 * stream.  Accepts NULL. */
void http_stream_close(struct http_stream *s);

/* Blocking forms for the one thread that owns a stream: each waits (with
 * poll()) at most timeout_ms for the stream to make progress, -1 for ever.
 * http_stream_read_wait() returns > 0 bytes, 0 at the end of input, or
 * -ETIMEDOUT or another -errno; http_stream_write_all() writes all n
 * bytes and returns 0 or -errno. */
ssize_t http_stream_read_wait(struct http_stream *s, void *buf, size_t n,
                              int timeout_ms);
int http_stream_write_all(struct http_stream *s, const void *buf, size_t n,
                          int timeout_ms);
/* Writes a whole response on a stream: the status line, Date,
 * Content-Type (when not NULL), Content-Length, "Connection: close",
 * extra_headers (CRLF-separated, no trailing CRLF, or NULL) and body.
 * Returns 0 or -errno. */
int http_stream_respond(struct http_stream *s, int status,
                        const char *content_type, const char *extra_headers,
                        const void *body, size_t body_len, int timeout_ms);

/* Streamed request bodies.
 *
 * http_server_config.stream_body is asked, on the loop thread, about
 * every request that has a body, right after its header has been read;
 * when it answers true the request goes to the handler at once with
 * req->body_streamed set and the body bytes still unread (nothing bounds
 * its size).  The handler then either answers with http_respond() (the
 * server closes the connection after the answer, since it cannot tell
 * where the unread body ends), or takes the connection over and reads the
 * body from the stream with an http_body_reader, which undoes the framing
 * (Content-Length or chunked; trailers are read and dropped).  The server
 * sends no "100 Continue" for such a request: a handler that wants the
 * body of a client that sent req->expect_continue takes over with status
 * 100, then writes the final response itself once it has read the body.
 *
 * http_stream_body_default(), used when stream_body is NULL, selects PUT
 * and POST requests to a path starting with "/import": the uploads of
 * XenAPI's HTTP handlers (/import, /import_raw_vdi, /import_metadata). */
typedef bool http_stream_body_fn(const struct http_request *req, void *aux);
bool http_stream_body_default(const struct http_request *req, void *aux);

struct http_body_reader;
/* A reader of req's body on s.  If the body was not streamed (the server
 * read it, or there is none) the reader returns req->body and s may be
 * NULL.  Each read waits at most timeout_ms for the client (-1: for ever).
 * req must outlive the reader. */
struct http_body_reader *http_body_reader_create(struct http_stream *s,
                                                 const struct http_request *req,
                                                 int timeout_ms);
/* Reads up to n bytes of the body: returns > 0, 0 at the end of the body,
 * -EPIPE if the client's input ended before the body did, -EBADMSG for
 * broken chunked framing, -ETIMEDOUT, or another -errno. */
ssize_t http_body_read(struct http_body_reader *r, void *buf, size_t n);
/* Reads exactly n bytes: 0, or -EPIPE if the body ends first, or an
 * error as above. */
int http_body_read_full(struct http_body_reader *r, void *buf, size_t n);
/* Body bytes returned so far. */
uint64_t http_body_bytes_read(const struct http_body_reader *r);
void http_body_reader_destroy(struct http_body_reader *r);   /* NULL ok */

struct http_listener_config {
    enum { HTTP_LISTEN_TCP, HTTP_LISTEN_TLS, HTTP_LISTEN_UNIX } kind;
    char *address;          /* "127.0.0.1:8080", "[::1]:443", "0.0.0.0:80",
                               or a Unix socket path */
};

struct http_server_config {
    struct http_listener_config *listeners;
    size_t n_listeners;
    const char *tls_cert_file;      /* PEM; required if any TLS listener */
    const char *tls_key_file;
    size_t n_workers;               /* default 8 */
    size_t max_body;                /* default 64 MiB */
    size_t max_header_bytes;        /* default 64 KiB */
    size_t max_connections;         /* default 4096 */
    int idle_timeout_ms;            /* keep-alive idle close; default 300 s */
    http_stream_body_fn *stream_body;   /* NULL: http_stream_body_default;
                                           called with handler_aux */
    http_handler_fn *handler;
    void *handler_aux;
};

struct http_server;

/* Binds every listener (Unix socket files are replaced) and starts the loop
 * and worker threads.  Returns 0 or -errno, with a message in *ret_err. */
int http_server_start(const struct http_server_config *cfg,
                      struct http_server **ret_server, char **ret_err);
/* Stops accepting, closes connections, joins threads, frees.  Accepts
 * NULL.  Exchanges still pending are dropped when responded to. */
void http_server_stop(struct http_server *srv);
/* The TCP port actually bound for listener i (useful with port 0). */
int http_server_port(const struct http_server *srv, size_t i);

/* Creates a self-signed certificate and key for hostname in the given
 * files unless both already exist.  Returns 0 or -errno. */
int http_tls_ensure_cert(const char *cert_file, const char *key_file,
                         const char *hostname, char **ret_err);

/* Standard reason phrase for a status code. */
const char *http_reason(int status);

#endif
