/* http-parse.c — the incremental, bounded HTTP/1.1 request parser declared
 * in http-parse.h, plus the request accessors of http.h that only look at a
 * parsed request (http_request_header, http_request_query_param).
 *
 * The parser is strict where leniency lets two parties disagree about
 * where a request ends (request smuggling): one Content-Length or one
 * chunked coding, never both; no obs-fold; no whitespace before a colon;
 * no control characters in fields.  It is lenient where that is harmless:
 * bare LF line ends and empty lines before a request line are accepted, as
 * RFC 9112 allows.
 *
 * Every check made on a partial buffer is also made, in the same order, on
 * the complete one, so that the outcome does not depend on how the bytes
 * were split by the network (the fuzz target checks exactly this). */
#include <config.h>
#include "http-parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
    HP_HEAD,            /* request line and header fields */
    HP_BODY,            /* Content-Length body */
    HP_CHUNK_SIZE,      /* chunk-size line */
    HP_CHUNK_DATA,
    HP_CHUNK_DATA_END,  /* the CRLF after chunk data */
    HP_TRAILER,         /* trailer fields after the last chunk */
    HP_COMPLETE,
};

/* A body announced as large is not allocated in full before it arrives, so
 * that a client cannot make the server reserve max_body per connection by
 * sending one header. */
#define BODY_PREALLOC_MAX (1024 * 1024)

/* ---- character classes ---- */

static bool
is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9')) {
        return true;
    }
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Field content: visible characters, obs-text, space and tab. */
static bool
is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    } else if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Length of a line (which ends with '\n') without its LF or CRLF.  A CR
 * anywhere else stays in the content and fails the character checks. */
static size_t
line_content_len(const char *line, size_t n)
{
    n--;
    if (n > 0 && line[n - 1] == '\r') {
        n--;
    }
    return n;
}

/* ---- lines ---- */

struct request_line {
    size_t method_len;
    size_t target_off;
    size_t target_len;
    int version_minor;
};

static int
parse_request_line(const char *s, size_t n, struct request_line *rl)
{
    size_t i = 0, t;

    while (i < n && is_tchar(s[i])) {
        i++;
    }
    if (i == 0 || i >= n || s[i] != ' ') {
        return -EBADMSG;
    }
    rl->method_len = i;
    t = ++i;
    while (i < n && (unsigned char) s[i] > 0x20 && s[i] != 0x7f) {
        i++;
    }
    if (i == t || i >= n || s[i] != ' ') {
        return -EBADMSG;
    }
    rl->target_off = t;
    rl->target_len = i - t;
    i++;
    if (n - i != 8 || memcmp(s + i, "HTTP/", 5)
        || s[i + 5] < '0' || s[i + 5] > '9' || s[i + 6] != '.'
        || s[i + 7] < '0' || s[i + 7] > '9') {
        return -EBADMSG;
    }
    if (s[i + 5] != '1') {
        return -EPROTONOSUPPORT;
    }
    /* RFC 9112: a 1.x request with x > 1 is answered as 1.1. */
    rl->version_minor = s[i + 7] == '0' ? 0 : 1;
    return 0;
}

struct field_line {
    size_t name_len;
    size_t value_off;
    size_t value_len;
};

static int
parse_field_line(const char *s, size_t n, struct field_line *fl)
{
    size_t i = 0, vs, ve;

    /* A line starting with whitespace is obs-fold, which RFC 9112 lets a
     * server reject; accepting it is a classic smuggling vector. */
    while (i < n && is_tchar(s[i])) {
        i++;
    }
    if (i == 0 || i >= n || s[i] != ':') {
        return -EBADMSG;
    }
    fl->name_len = i++;
    while (i < n && is_ows(s[i])) {
        i++;
    }
    vs = i;
    for (; i < n; i++) {
        if (!is_field_char(s[i])) {
            return -EBADMSG;
        }
    }
    ve = n;
    while (ve > vs && is_ows(s[ve - 1])) {
        ve--;
    }
    fl->value_off = vs;
    fl->value_len = ve - vs;
    return 0;
}

/* chunk-size [ BWS ";" extensions ] with the line end already removed.
 * Extensions are checked for characters only: we give them no meaning. */
static int
parse_chunk_size(const char *s, size_t n, uint64_t max, uint64_t *ret_size)
{
    uint64_t v = 0;
    bool too_big = false;
    size_t i = 0;

    for (; i < n && hex_value(s[i]) >= 0; i++) {
        if (v > (UINT64_MAX >> 4)) {
            too_big = true;
        } else {
            v = v * 16 + hex_value(s[i]);
        }
    }
    if (i == 0) {
        return -EBADMSG;
    }
    while (i < n && is_ows(s[i])) {
        i++;
    }
    if (i < n) {
        if (s[i] != ';') {
            return -EBADMSG;
        }
        for (; i < n; i++) {
            if (!is_field_char(s[i])) {
                return -EBADMSG;
            }
        }
    }
    if (too_big || v > max) {
        return -EFBIG;
    }
    *ret_size = v;
    return 0;
}

/* ---- the request target ---- */

static bool
starts_with_ci(const char *s, size_t n, const char *prefix)
{
    size_t pn = strlen(prefix);

    return n >= pn && !strncasecmp(s, prefix, pn);
}

/* Splits target[0..n) into a percent-decoded path and the raw query,
 * written into out (which has room for 2 * (n + 2) bytes). */
static int
split_target(const char *target, size_t n, char *out, char **ret_path,
             char **ret_query)
{
    const char *p = target, *end = target + n, *q;
    char *path = out, *w = out, *query;

    if (n == 1 && target[0] == '*') {
        /* asterisk-form, for OPTIONS. */
        strcpy(path, "*");
        query = path + 2;
        *query = '\0';
        goto done;
    }
    if (target[0] != '/') {
        /* absolute-form, which servers must accept (RFC 9112 3.2.2). */
        size_t skip;
        if (starts_with_ci(target, n, "http://")) {
            skip = 7;
        } else if (starts_with_ci(target, n, "https://")) {
            skip = 8;
        } else {
            return -EBADMSG;
        }
        p = target + skip;
        while (p < end && *p != '/' && *p != '?') {
            p++;
        }
        if (p == target + skip) {
            return -EBADMSG;
        }
        if (p == end || *p == '?') {
            *w++ = '/';
        }
    }
    q = memchr(p, '?', end - p);
    if (!q) {
        q = end;
    }
    while (p < q) {
        if (*p == '%') {
            int hi = q - p > 2 ? hex_value(p[1]) : -1;
            int lo = hi >= 0 ? hex_value(p[2]) : -1;
            /* %00 would silently truncate the path for every C string
             * comparison that follows. */
            if (lo < 0 || (hi == 0 && lo == 0)) {
                return -EBADMSG;
            }
            *w++ = (char) (hi * 16 + lo);
            p += 3;
        } else {
            *w++ = *p++;
        }
    }
    *w++ = '\0';
    query = w;
    if (q < end) {
        memcpy(query, q + 1, end - q - 1);
        query[end - q - 1] = '\0';
    } else {
        *query = '\0';
    }
done:
    *ret_path = path;
    *ret_query = query;
    return 0;
}

/* ---- header semantics ---- */

/* Calls fn for each comma-separated element of value, trimmed, skipping
 * empty ones (RFC 9110 5.6.1).  Stops at the first nonzero return. */
static int
for_each_element(const char *value, int (*fn)(const char *, size_t, void *),
                 void *aux)
{
    const char *p = value;

    while (*p) {
        const char *comma = strchr(p, ','), *e;
        if (!comma) {
            comma = p + strlen(p);
        }
        e = comma;
        while (p < e && is_ows(*p)) {
            p++;
        }
        while (e > p && is_ows(e[-1])) {
            e--;
        }
        if (e > p) {
            int rc = fn(p, e - p, aux);
            if (rc) {
                return rc;
            }
        }
        p = *comma ? comma + 1 : comma;
    }
    return 0;
}

struct framing {
    size_t n_cl;            /* Content-Length values listed */
    uint64_t content_length;
    size_t n_te;            /* transfer codings listed */
    size_t n_chunked;
    bool chunked_last;
    bool te_unknown;
    bool conn_close;
    bool conn_keep_alive;
};

static int
cl_element(const char *s, size_t n, void *aux_)
{
    struct framing *f = aux_;
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -EBADMSG;
        }
        /* Saturate: any value this large is over max_body anyway. */
        if (v > (UINT64_MAX - 9) / 10) {
            v = UINT64_MAX;
        } else {
            v = v * 10 + (s[i] - '0');
        }
    }
    /* "Content-Length: 5, 5" or two equal fields are allowed; different
     * values mean someone is confused about the framing. */
    if (f->n_cl && f->content_length != v) {
        return -EBADMSG;
    }
    f->n_cl++;
    f->content_length = v;
    return 0;
}

static int
te_element(const char *s, size_t n, void *aux_)
{
    struct framing *f = aux_;
    bool chunked = n == 7 && !strncasecmp(s, "chunked", 7);

    f->n_te++;
    f->n_chunked += chunked;
    f->chunked_last = chunked;
    if (!chunked) {
        f->te_unknown = true;
    }
    return 0;
}

static int
connection_element(const char *s, size_t n, void *aux_)
{
    struct framing *f = aux_;

    if (n == 5 && !strncasecmp(s, "close", 5)) {
        f->conn_close = true;
    } else if (n == 10 && !strncasecmp(s, "keep-alive", 10)) {
        f->conn_keep_alive = true;
    }
    return 0;
}

/* ---- parser ---- */

static void
parser_reset(struct http_parser *p)
{
    p->state = HP_HEAD;
    p->skipped = 0;
    p->method_checked = 0;
    p->scan = 0;
    p->n_fields = 0;
    p->first_line_done = false;
    p->wants_continue = false;
    memset(&p->req, 0, sizeof p->req);
    ds_init(&p->body);
    p->remaining = 0;
    p->trailer_bytes = 0;
}

void
http_parser_init(struct http_parser *p, const struct http_parse_limits *limits)
{
    memset(p, 0, sizeof *p);
    if (limits) {
        p->limits = *limits;
    }
    if (!p->limits.max_header_bytes) {
        p->limits.max_header_bytes = HTTP_PARSE_DEFAULT_MAX_HEADER_BYTES;
    }
    if (!p->limits.max_headers) {
        p->limits.max_headers = HTTP_PARSE_DEFAULT_MAX_HEADERS;
    }
    if (!p->limits.max_body) {
        p->limits.max_body = HTTP_PARSE_DEFAULT_MAX_BODY;
    }
    parser_reset(p);
}

void
http_parser_set_stream(struct http_parser *p, http_stream_body_fn *fn,
                       void *aux)
{
    p->stream_fn = fn;
    p->stream_aux = aux;
}

void
http_parser_destroy(struct http_parser *p)
{
    if (!p) {
        return;
    }
    http_request_destroy(&p->req);
    ds_destroy(&p->body);
    parser_reset(p);
}

bool
http_parser_wants_continue(struct http_parser *p)
{
    bool wants = p->wants_continue;

    p->wants_continue = false;
    return wants;
}

int
http_parse_error_status(int error)
{
    switch (error) {
    case -EFBIG:
        return 413;
    case -EMSGSIZE:
        return 431;
    case -EOPNOTSUPP:
        return 501;
    case -EPROTONOSUPPORT:
        return 505;
    default:
        return 400;
    }
}

/* Looks through b[0..n) for the end of the header section, validating
 * each complete line once.  Returns 1 when the section is complete (it is
 * p->scan bytes long), 0 if more bytes are needed, or an error. */
static int
scan_header(struct http_parser *p, const char *b, size_t n)
{
    size_t max = p->limits.max_header_bytes;
    int rc;

    /* Check the method as it arrives so that a client speaking another
     * protocol (a TLS ClientHello on the plain port) is refused at once
     * rather than after the idle timeout.  The full request-line check
     * below starts with the same test, so the result does not depend on
     * how the bytes were split, provided this one stops at the size
     * limit: past it, a partial buffer can only give 431. */
    if (p->method_checked != SIZE_MAX) {
        size_t end = MIN(n, max), i;
        for (i = p->method_checked; i < end && b[i] != ' '; i++) {
            if (!is_tchar(b[i])) {
                return -EBADMSG;
            }
        }
        if (i < end) {
            if (i == 0) {
                return -EBADMSG;
            }
            p->method_checked = SIZE_MAX;
        } else {
            p->method_checked = end;
        }
    }

    for (;;) {
        size_t ls = p->scan, le, cl;
        const char *nl = ls < n ? memchr(b + ls, '\n', n - ls) : NULL;

        if (!nl) {
            return n > max ? -EMSGSIZE : 0;
        }
        le = nl - b + 1;
        if (le > max) {
            return -EMSGSIZE;
        }
        cl = line_content_len(b + ls, le - ls);
        if (!p->first_line_done) {
            struct request_line rl;
            rc = parse_request_line(b + ls, cl, &rl);
            if (rc) {
                return rc;
            }
            p->first_line_done = true;
        } else if (cl == 0) {
            p->scan = le;
            return 1;
        } else {
            struct field_line fl;
            if (++p->n_fields > p->limits.max_headers) {
                return -EMSGSIZE;
            }
            rc = parse_field_line(b + ls, cl, &fl);
            if (rc) {
                return rc;
            }
        }
        p->scan = le;
    }
}

/* Builds p->req from the validated header section b[0..hlen) and decides
 * how the body is framed. */
static int
start_request(struct http_parser *p, const char *b, size_t hlen)
{
    struct http_request *req = &p->req;
    struct framing f = { 0 };
    struct request_line rl;
    bool expect_continue = false;
    char *arena, *line, *end;
    size_t n_fields = p->n_fields;
    int rc;

    /* All strings live in one allocation: a copy of the header section
     * split in place, followed by room for the decoded path and the
     * query. */
    line = memchr(b, '\n', hlen);
    rc = parse_request_line(b, line_content_len(b, line - b + 1), &rl);
    if (rc) {
        return rc;      /* cannot happen: scan_header checked it */
    }
    arena = xmalloc(hlen + 2 * (rl.target_len + 2));
    memcpy(arena, b, hlen);
    req->method = arena;
    req->method[rl.method_len] = '\0';
    req->target = arena + rl.target_off;
    req->target[rl.target_len] = '\0';
    req->version_minor = rl.version_minor;
    req->headers = n_fields ? xcalloc(n_fields, sizeof *req->headers) : NULL;

    line = arena + (line - b) + 1;
    end = arena + hlen;
    while (line < end) {
        char *nl = memchr(line, '\n', end - line);
        size_t cl = line_content_len(line, nl - line + 1);
        struct http_header *h;
        struct field_line fl;

        if (cl == 0) {
            break;
        }
        rc = parse_field_line(line, cl, &fl);
        if (rc || req->n_headers >= n_fields) {
            return -EBADMSG;    /* cannot happen either */
        }
        h = &req->headers[req->n_headers++];
        h->name = line;
        h->name[fl.name_len] = '\0';
        h->value = line + fl.value_off;
        h->value[fl.value_len] = '\0';
        line = nl + 1;
    }

    rc = split_target(req->target, rl.target_len, end, &req->path,
                      &req->query);
    if (rc) {
        return rc;
    }
    if (!strcmp(req->path, "*") && strcmp(req->method, "OPTIONS")) {
        return -EBADMSG;
    }

    for (size_t i = 0; i < req->n_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (!strcasecmp(h->name, "Content-Length")) {
            size_t before = f.n_cl;
            rc = for_each_element(h->value, cl_element, &f);
            if (!rc && f.n_cl == before) {
                rc = -EBADMSG;      /* empty, or only commas */
            }
        } else if (!strcasecmp(h->name, "Transfer-Encoding")) {
            size_t before = f.n_te;
            rc = for_each_element(h->value, te_element, &f);
            if (!rc && f.n_te == before) {
                rc = -EBADMSG;
            }
        } else if (!strcasecmp(h->name, "Connection")) {
            rc = for_each_element(h->value, connection_element, &f);
        } else if (!strcasecmp(h->name, "Expect")) {
            expect_continue = !strcasecmp(h->value, "100-continue");
        }
        if (rc) {
            return rc;
        }
    }
    if (req->version_minor == 1) {
        req->keep_alive = !f.conn_close;
    } else {
        req->keep_alive = f.conn_keep_alive && !f.conn_close;
    }

    if (f.n_te) {
        /* RFC 9112 6.1: Transfer-Encoding in a 1.0 request, or together
         * with Content-Length, means the framing cannot be trusted. */
        if (req->version_minor == 0 || f.n_cl) {
            return -EBADMSG;
        }
        if (f.te_unknown) {
            return -EOPNOTSUPP;
        }
        if (f.n_chunked != 1 || !f.chunked_last) {
            return -EBADMSG;
        }
        p->state = HP_CHUNK_SIZE;
    }
    if ((f.n_te || (f.n_cl && f.content_length > 0)) && p->stream_fn
        && p->stream_fn(req, p->stream_aux)) {
        /* The handler reads the body: hand the request over now. */
        req->body_streamed = true;
        req->body_chunked = f.n_te > 0;
        req->body_length = f.n_te ? 0 : f.content_length;
        req->expect_continue = expect_continue && req->version_minor == 1;
        p->state = HP_COMPLETE;
        p->wants_continue = false;
        return 0;
    }
    if (f.n_te) {
        /* Framing checked above. */
    } else if (f.n_cl && f.content_length > p->limits.max_body) {
        return -EFBIG;
    } else if (f.n_cl && f.content_length > 0) {
        p->remaining = f.content_length;
        ds_reserve(&p->body, MIN(f.content_length, BODY_PREALLOC_MAX));
        p->state = HP_BODY;
    } else {
        p->state = HP_COMPLETE;
    }
    p->wants_continue = expect_continue && req->version_minor == 1
                        && p->state != HP_COMPLETE;
    return 0;
}

/* Copies up to p->remaining body bytes from b[0..n); returns how many. */
static size_t
take_body(struct http_parser *p, const char *b, size_t n)
{
    size_t take = (size_t) MIN((uint64_t) n, p->remaining);

    ds_put(&p->body, b, take);
    p->remaining -= take;
    return take;
}

int
http_parser_feed(struct http_parser *p, const char *buf, size_t len,
                 size_t *consumed, struct http_request *ret_req)
{
    size_t pos = 0;
    int rc;

    for (;;) {
        const char *b = buf + pos, *nl;
        size_t n = len - pos, ll, cl;
        uint64_t size;

        switch (p->state) {
        case HP_HEAD:
            if (p->scan == 0 && p->method_checked == 0) {
                /* Empty lines before a request line are ignored (RFC 9112
                 * 2.2): some clients send CRLF after a POST body. */
                size_t i = 0;
                while (i < n) {
                    if (b[i] == '\n') {
                        i++;
                    } else if (b[i] == '\r' && i + 1 < n) {
                        if (b[i + 1] != '\n') {
                            rc = -EBADMSG;
                            goto out;
                        }
                        i += 2;
                    } else {
                        break;
                    }
                }
                pos += i;
                p->skipped += i;
                if (p->skipped > p->limits.max_header_bytes) {
                    rc = -EBADMSG;
                    goto out;
                }
                if (i == n || b[i] == '\r') {
                    rc = HTTP_PARSE_NEED_MORE;
                    goto out;
                }
                b += i;
                n -= i;
            }
            rc = scan_header(p, b, n);
            if (rc <= 0) {
                goto out;
            }
            ll = p->scan;
            rc = start_request(p, b, ll);
            if (rc) {
                goto out;
            }
            pos += ll;
            break;

        case HP_BODY:
        case HP_CHUNK_DATA:
            if (n == 0) {
                rc = HTTP_PARSE_NEED_MORE;
                goto out;
            }
            pos += take_body(p, b, n);
            if (p->remaining == 0) {
                p->state = p->state == HP_BODY ? HP_COMPLETE
                                                : HP_CHUNK_DATA_END;
            }
            break;

        case HP_CHUNK_SIZE:
            nl = memchr(b, '\n', n);
            if (!nl) {
                rc = n > HTTP_PARSE_MAX_CHUNK_LINE ? -EBADMSG
                                                    : HTTP_PARSE_NEED_MORE;
                goto out;
            }
            ll = nl - b + 1;
            if (ll > HTTP_PARSE_MAX_CHUNK_LINE) {
                rc = -EBADMSG;
                goto out;
            }
            cl = line_content_len(b, ll);
            rc = parse_chunk_size(b, cl, p->limits.max_body - p->body.len,
                                  &size);
            if (rc) {
                goto out;
            }
            pos += ll;
            if (size == 0) {
                p->state = HP_TRAILER;
                p->n_fields = 0;
            } else {
                p->remaining = size;
                p->state = HP_CHUNK_DATA;
            }
            break;

        case HP_CHUNK_DATA_END:
            if (n == 0 || (b[0] == '\r' && n == 1)) {
                rc = HTTP_PARSE_NEED_MORE;
                goto out;
            }
            if (b[0] == '\n') {
                pos += 1;
            } else if (b[0] == '\r' && b[1] == '\n') {
                pos += 2;
            } else {
                rc = -EBADMSG;
                goto out;
            }
            p->state = HP_CHUNK_SIZE;
            break;

        case HP_TRAILER:
            /* Trailer fields are checked like header fields and then
             * dropped: nothing here needs them, and merging them into the
             * header would let a body rewrite it. */
            nl = memchr(b, '\n', n);
            if (!nl) {
                rc = p->trailer_bytes + n > p->limits.max_header_bytes
                     ? -EMSGSIZE : HTTP_PARSE_NEED_MORE;
                goto out;
            }
            ll = nl - b + 1;
            p->trailer_bytes += ll;
            if (p->trailer_bytes > p->limits.max_header_bytes) {
                rc = -EMSGSIZE;
                goto out;
            }
            cl = line_content_len(b, ll);
            pos += ll;
            if (cl == 0) {
                p->state = HP_COMPLETE;
            } else {
                struct field_line fl;
                if (++p->n_fields > p->limits.max_headers) {
                    rc = -EMSGSIZE;
                    goto out;
                }
                rc = parse_field_line(b, cl, &fl);
                if (rc) {
                    goto out;
                }
            }
            break;

        case HP_COMPLETE:
            p->req.body_len = p->body.len;
            p->req.body = ds_steal(&p->body);
            *ret_req = p->req;
            parser_reset(p);
            rc = HTTP_PARSE_DONE;
            goto out;

        default:
            rc = -EINVAL;
            goto out;
        }
    }
out:
    *consumed = pos;
    return rc;
}

/* ---- chunked bodies read by handlers ---- */

enum {
    CH_SIZE,                /* expecting a chunk-size line */
    CH_DATA,                /* inside a chunk's data */
    CH_DATA_END,            /* expecting the CRLF after a chunk's data */
    CH_TRAILER,             /* trailer fields until an empty line */
    CH_DONE,
};

void
http_chunked_init(struct http_chunked *d)
{
    memset(d, 0, sizeof *d);
    d->state = CH_SIZE;
}

int
http_chunked_feed(struct http_chunked *d, const char *in, size_t n,
                  size_t max_data, size_t *ret_consumed, size_t *ret_data)
{
    const char *nl;
    size_t ll, cl;
    uint64_t size;
    int rc;

    *ret_consumed = 0;
    *ret_data = 0;
    switch (d->state) {
    case CH_DATA:
        if (n == 0 || max_data == 0) {
            return HTTP_CHUNKED_MORE;
        }
        ll = (size_t) MIN((uint64_t) MIN(n, max_data), d->remaining);
        d->remaining -= ll;
        if (d->remaining == 0) {
            d->state = CH_DATA_END;
        }
        *ret_consumed = *ret_data = ll;
        return HTTP_CHUNKED_MORE;

    case CH_DATA_END:
        if (n == 0 || (in[0] == '\r' && n == 1)) {
            return HTTP_CHUNKED_MORE;
        }
        if (in[0] == '\n') {
            *ret_consumed = 1;
        } else if (in[0] == '\r' && in[1] == '\n') {
            *ret_consumed = 2;
        } else {
            return -EBADMSG;
        }
        d->state = CH_SIZE;
        return HTTP_CHUNKED_MORE;

    case CH_SIZE:
        nl = memchr(in, '\n', n);
        if (!nl) {
            return n >= HTTP_PARSE_MAX_CHUNK_LINE ? -EBADMSG
                                                  : HTTP_CHUNKED_MORE;
        }
        ll = nl - in + 1;
        if (ll > HTTP_PARSE_MAX_CHUNK_LINE) {
            return -EBADMSG;
        }
        cl = line_content_len(in, ll);
        rc = parse_chunk_size(in, cl, UINT64_MAX, &size);
        if (rc) {
            return rc == -EFBIG ? -EBADMSG : rc;
        }
        *ret_consumed = ll;
        if (size == 0) {
            d->state = CH_TRAILER;
        } else {
            d->remaining = size;
            d->state = CH_DATA;
        }
        return HTTP_CHUNKED_MORE;

    case CH_TRAILER:
        nl = memchr(in, '\n', n);
        if (!nl) {
            return d->trailer_bytes + n > HTTP_PARSE_DEFAULT_MAX_HEADER_BYTES
                   ? -EMSGSIZE : HTTP_CHUNKED_MORE;
        }
        ll = nl - in + 1;
        d->trailer_bytes += ll;
        if (d->trailer_bytes > HTTP_PARSE_DEFAULT_MAX_HEADER_BYTES) {
            return -EMSGSIZE;
        }
        cl = line_content_len(in, ll);
        *ret_consumed = ll;
        if (cl == 0) {
            d->state = CH_DONE;
            return HTTP_CHUNKED_DONE;
        } else {
            struct field_line fl;
            if (++d->n_trailers > HTTP_PARSE_DEFAULT_MAX_HEADERS) {
                return -EMSGSIZE;
            }
            rc = parse_field_line(in, cl, &fl);
            if (rc) {
                return rc;
            }
        }
        return HTTP_CHUNKED_MORE;

    case CH_DONE:
        return HTTP_CHUNKED_DONE;
    }
    return -EINVAL;
}

int
http_parse_request(const char *buf, size_t len,
                   const struct http_parse_limits *limits,
                   struct http_request *ret_req, size_t *ret_consumed)
{
    struct http_parser p;
    struct http_request req;
    size_t consumed;
    int rc;

    http_parser_init(&p, limits);
    rc = http_parser_feed(&p, buf, len, &consumed, &req);
    if (rc == HTTP_PARSE_DONE) {
        *ret_req = req;
        *ret_consumed = consumed;
    }
    http_parser_destroy(&p);
    return rc;
}

void
http_request_destroy(struct http_request *req)
{
    if (!req) {
        return;
    }
    free(req->method);      /* the arena holding every string */
    free(req->headers);
    free(req->body);
    memset(req, 0, sizeof *req);
}

/* ---- accessors declared in http.h ---- */

const char *
http_request_header(const struct http_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!strcasecmp(req->headers[i].name, name)) {
            return req->headers[i].value;
        }
    }
    return NULL;
}

/* Decodes application/x-www-form-urlencoded text: '+' is a space and %XX a
 * byte; a '%' not followed by two hex digits is kept as it is.  Returns
 * NULL if the result would contain a NUL byte. */
static char *
query_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1), *w = out;

    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '+') {
            *w++ = ' ';
        } else if (s[i] == '%' && i + 2 < n
                   && (hi = hex_value(s[i + 1])) >= 0
                   && (lo = hex_value(s[i + 2])) >= 0) {
            if (!hi && !lo) {
                free(out);
                return NULL;
            }
            *w++ = (char) (hi * 16 + lo);
            i += 2;
        } else {
            *w++ = s[i];
        }
    }
    *w = '\0';
    return out;
}

char *
http_request_query_param(const struct http_request *req, const char *key)
{
    const char *q = req->query;

    while (q && *q) {
        const char *amp = strchr(q, '&'), *eq;
        char *k;
        bool match;

        if (!amp) {
            amp = q + strlen(q);
        }
        eq = memchr(q, '=', amp - q);
        k = query_decode(q, (eq ? eq : amp) - q);
        match = k && !strcmp(k, key);
        free(k);
        if (match) {
            char *v = eq ? query_decode(eq + 1, amp - eq - 1) : xstrdup("");
            if (v) {
                return v;
            }
        }
        q = *amp ? amp + 1 : amp;
    }
    return NULL;
}
