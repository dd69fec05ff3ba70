/* fuzz-http.c — libFuzzer target for the HTTP request parser
 * (xapi/http-parse.c), the first code to see bytes from the network.
 *
 * The first input byte chooses how the rest is split into pieces (fixed or
 * varying sizes) and which limits apply; the rest is parsed twice: once
 * fed in one piece and once piece by piece, as the server's event loop
 * would feed it.  Both runs must produce the same requests and the same
 * error, which checks that the incremental path remembers its progress
 * correctly; sanitizers check memory.  Seeds live in tests/fuzz/corpus/http/.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -I... \
 *        tests/fuzz/fuzz-http.c xapi/http-parse.c lib/util.c */
#include <config.h>
#include "xapi/http-parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RESULTS 256

/* What one parse run produced: a digest per request, then the final
 * return value (an error, or NEED_MORE at the end of the input). */
struct outcome {
    uint64_t digests[MAX_RESULTS];
    size_t n;
    int final_rc;
};

static uint64_t
mix(uint64_t h, const void *p, size_t n)
{
    return hash_bytes(p, n, h);
}

static uint64_t
mix_str(uint64_t h, const char *s)
{
    return mix(h, s, strlen(s) + 1);
}

/* Checks what every parsed request promises and returns its digest. */
static uint64_t
check_request(const struct http_request *req)
{
    uint64_t h = 0;
    char *v;

    if (!req->method[0] || !req->target[0] || !req->path || !req->query
        || req->body[req->body_len] != '\0'
        || (req->version_minor != 0 && req->version_minor != 1)) {
        __builtin_trap();
    }
    h = mix_str(h, req->method);
    h = mix_str(h, req->target);
    h = mix_str(h, req->path);
    h = mix_str(h, req->query);
    h = mix(h, req->body, req->body_len);
    h = mix(h, &req->version_minor, sizeof req->version_minor);
    h = mix(h, &req->keep_alive, sizeof req->keep_alive);
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!http_request_header(req, req->headers[i].name)) {
            __builtin_trap();
        }
        h = mix_str(h, req->headers[i].name);
        h = mix_str(h, req->headers[i].value);
    }
    /* Exercise the query decoder on keys likely to be present. */
    v = http_request_query_param(req, "ref");
    if (v) {
        h = mix_str(h, v);
    }
    free(v);
    v = http_request_query_param(req, "a b");
    free(v);
    return h;
}

static void
record(struct outcome *o, struct http_request *req)
{
    if (o->n < MAX_RESULTS) {
        o->digests[o->n] = check_request(req);
    }
    o->n++;
    http_request_destroy(req);
}

/* Feeds everything at once, as for a request that arrived in one read. */
static void
run_whole(const uint8_t *data, size_t size,
          const struct http_parse_limits *limits, struct outcome *o)
{
    struct http_parser p;
    size_t off = 0;

    http_parser_init(&p, limits);
    for (;;) {
        struct http_request req;
        size_t consumed;
        int rc = http_parser_feed(&p, (const char *) data + off, size - off,
                                  &consumed, &req);
        if (consumed > size - off) {
            __builtin_trap();
        }
        off += consumed;
        if (rc != HTTP_PARSE_DONE) {
            o->final_rc = rc;
            break;
        }
        record(o, &req);
    }
    http_parser_destroy(&p);
}

/* Feeds the input in pieces.  Each call gets a fresh copy of the bytes not
 * yet consumed, so a parser that kept a pointer into an old buffer is
 * caught by AddressSanitizer. */
static void
run_split(const uint8_t *data, size_t size, uint8_t mode,
          const struct http_parse_limits *limits, struct outcome *o)
{
    struct http_parser p;
    size_t start = 0, avail = 0;   /* unconsumed: data[start..start+avail) */
    uint32_t rng = mode * 2654435761u + 1;
    int rc = HTTP_PARSE_NEED_MORE;

    http_parser_init(&p, limits);
    while (start + avail < size) {
        size_t piece = (mode & 0x3f) + 1;
        if (mode & 0x40) {
            rng = rng * 1103515245u + 12345u;
            piece = (rng >> 16) % piece + 1;
        }
        avail += MIN(piece, size - start - avail);
        for (;;) {
            struct http_request req;
            size_t consumed;
            char *copy = xmalloc(avail);

            memcpy(copy, data + start, avail);
            rc = http_parser_feed(&p, copy, avail, &consumed, &req);
            free(copy);
            if (rc == HTTP_PARSE_NEED_MORE) {
                /* As the server asks after each read. */
                http_parser_wants_continue(&p);
            }
            if (consumed > avail) {
                __builtin_trap();
            }
            start += consumed;
            avail -= consumed;
            if (rc != HTTP_PARSE_DONE) {
                break;
            }
            record(o, &req);
        }
        if (rc < 0) {
            break;
        }
    }
    o->final_rc = rc;
    http_parser_destroy(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct http_parse_limits small = { 256, 6, 512 };
    static const struct http_parse_limits medium = { 4096, 32, 65536 };
    static struct outcome whole, split;
    const struct http_parse_limits *limits;
    uint8_t mode;

    if (size < 1) {
        return 0;
    }
    mode = data[0];
    limits = mode & 0x80 ? &small : &medium;
    data++;
    size--;

    memset(&whole, 0, sizeof whole);
    memset(&split, 0, sizeof split);
    run_whole(data, size, limits, &whole);
    run_split(data, size, mode, limits, &split);

    /* The split run stops at the end of the input just like the whole
     * one; they must agree on every request and on how it ended. */
    if (whole.n != split.n || whole.final_rc != split.final_rc
        || memcmp(whole.digests, split.digests,
                  MIN(whole.n, (size_t) MAX_RESULTS) * sizeof(uint64_t))) {
        __builtin_trap();
    }
    if (whole.final_rc < 0) {
        int status = http_parse_error_status(whole.final_rc);
        if (status != 400 && status != 413 && status != 431 && status != 501
            && status != 505) {
            __builtin_trap();
        }
    }
    return 0;
}
