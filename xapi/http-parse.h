/* http-parse.h — the HTTP/1.1 request parser shared by the server (http.c)
 * and its fuzz target (tests/fuzz/fuzz-http.c).
 *
 * The parser does no I/O.  The caller keeps the bytes received on a
 * connection in a buffer and calls http_parser_feed() with everything not
 * yet consumed; the parser says how many bytes it consumed and whether a
 * whole request is ready.  While it is still reading the request line and
 * header fields it consumes nothing (it needs them in one piece), but it
 * remembers how far it has looked, so feeding a request byte by byte costs
 * time linear in its size.  Body bytes are consumed as they arrive (copied
 * into the request being built), so the caller's buffer never holds more
 * than one header section plus one read.
 *
 * Everything a client controls is bounded by struct http_parse_limits.
 * Errors are negative errno values; http_parse_error_status() turns one
 * into the HTTP status the server answers with before closing:
 *
 *     -EBADMSG          400  malformed request, obs-fold, bad chunk syntax,
 *                            Content-Length with Transfer-Encoding, %00
 *     -EFBIG            413  body (declared or decoded) over max_body
 *     -EMSGSIZE         431  header section or trailers over
 *                            max_header_bytes, or too many fields
 *     -EOPNOTSUPP       501  a transfer coding other than chunked
 *     -EPROTONOSUPPORT  505  HTTP major version other than 1 */
#ifndef HTTP_PARSE_H
#define HTTP_PARSE_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "util.h"

struct http_parse_limits {
    size_t max_header_bytes;    /* request line + fields, with CRLFs; the
                                   trailers of a chunked body have their
                                   own budget of the same size */
    size_t max_headers;         /* fields in the header (or trailer) */
    size_t max_body;            /* decoded body bytes */
};

#define HTTP_PARSE_DEFAULT_MAX_HEADER_BYTES (64 * 1024)
#define HTTP_PARSE_DEFAULT_MAX_HEADERS 128
#define HTTP_PARSE_DEFAULT_MAX_BODY (64 * 1024 * 1024)

/* Longest chunk-size line (size, extensions, CRLF) accepted. */
#define HTTP_PARSE_MAX_CHUNK_LINE 4096

/* Return values of http_parser_feed() other than errors. */
#define HTTP_PARSE_NEED_MORE 0
#define HTTP_PARSE_DONE 1

/* Parser state for one connection.  Members are private; the struct is
 * public only so that it can be embedded without an allocation. */
struct http_parser {
    struct http_parse_limits limits;
    int state;
    size_t skipped;         /* empty lines consumed before a request line */
    size_t method_checked;  /* bytes of the method already validated */
    size_t scan;            /* bytes of the header section already split
                               into lines and validated */
    size_t n_fields;        /* fields seen so far (header or trailer) */
    bool first_line_done;
    bool wants_continue;
    struct http_request req;    /* being built once the header is read */
    struct ds body;
    uint64_t remaining;     /* body bytes still due: Content-Length, or the
                               rest of the current chunk */
    size_t trailer_bytes;
    http_stream_body_fn *stream_fn;     /* see http_parser_set_stream() */
    void *stream_aux;
};

/* Prepares p for the first request on a connection.  limits may be NULL,
 * and zero members mean the defaults above. */
void http_parser_init(struct http_parser *p,
                      const struct http_parse_limits *limits);
/* Requests with a body for which fn(req, aux) answers true are returned
 * as soon as their header is read, with req->body_streamed set and the
 * body left in the caller's buffer (the caller stops feeding this parser:
 * its handler reads the body with an http_chunked decoder or by length).
 * max_body does not apply to them.  fn NULL (the default) streams none. */
void http_parser_set_stream(struct http_parser *p, http_stream_body_fn *fn,
                            void *aux);
/* Frees a partly parsed request.  p may be initialised again afterwards. */
void http_parser_destroy(struct http_parser *p);

/* Parses buf[0..len), the bytes received and not yet consumed.  Always sets
 * *consumed (possibly to 0); the caller drops that many bytes from the
 * front of its buffer and feeds the rest, plus new bytes, next time.
 *
 * Returns HTTP_PARSE_DONE with the request in *ret_req (the caller frees it
 * with http_request_destroy(); peer, is_tls and is_unix are left zero for
 * the caller to fill) and the parser ready for the next request;
 * HTTP_PARSE_NEED_MORE; or a negative errno value as listed above, after
 * which the connection must be closed (feeding again is undefined). */
int http_parser_feed(struct http_parser *p, const char *buf, size_t len,
                     size_t *consumed, struct http_request *ret_req);

/* True once per request, right after its header has been read, if the
 * client sent "Expect: 100-continue" on HTTP/1.1 and the body has not
 * arrived yet: the server should then send "100 Continue". */
bool http_parser_wants_continue(struct http_parser *p);

/* The HTTP status to answer for an error returned by http_parser_feed(). */
int http_parse_error_status(int error);

/* One-shot form for a complete buffer: same return values; *ret_consumed
 * and *ret_req are written only with HTTP_PARSE_DONE. */
int http_parse_request(const char *buf, size_t len,
                       const struct http_parse_limits *limits,
                       struct http_request *ret_req, size_t *ret_consumed);

/* Decoder of a chunked body read by a handler (streamed bodies), with the
 * same rules and limits as the parser: chunk-size lines of at most
 * HTTP_PARSE_MAX_CHUNK_LINE bytes, trailers checked like header fields
 * (at most HTTP_PARSE_DEFAULT_MAX_HEADER_BYTES and _MAX_HEADERS) and
 * dropped.  It does no I/O and copies nothing. */
struct http_chunked {
    int state;
    uint64_t remaining;     /* data bytes left in the current chunk */
    size_t trailer_bytes;
    size_t n_trailers;
};

#define HTTP_CHUNKED_MORE 0
#define HTTP_CHUNKED_DONE 1

void http_chunked_init(struct http_chunked *d);
/* Looks at in[0..n), the undecoded input.  Sets *ret_consumed to the bytes
 * to drop from the front of the input and *ret_data to how many of them
 * are body data (then in[0..*ret_data) is data, at most max_data bytes).
 * One call handles one piece: a run of data, or one framing line.  Returns
 * HTTP_CHUNKED_MORE (with nothing consumed: feed more input), or
 * HTTP_CHUNKED_DONE once the last chunk and the trailers are consumed, or
 * -EBADMSG / -EMSGSIZE for broken framing. */
int http_chunked_feed(struct http_chunked *d, const char *in, size_t n,
                      size_t max_data, size_t *ret_consumed,
                      size_t *ret_data);

/* Frees what a parsed request owns and zeroes it.  Accepts NULL.  The
 * strings of a parsed request share one allocation that starts at
 * req->method, so only this function may free them. */
void http_request_destroy(struct http_request *req);

#endif
