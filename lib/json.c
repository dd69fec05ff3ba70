/* json.c — the JSON (RFC 8259) parser and writer declared in codec.h, used
 * for JSON-RPC requests and answers.
 *
 * Like xmlrpc.c, its sibling for XML-RPC, the parser treats its input as
 * hostile: every string, number and nesting level is bounded by the
 * codec_limits, and anything RFC 8259 does not allow (trailing garbage,
 * raw control characters, bad escapes, lone surrogates, leading zeros,
 * NaN) is an error rather than a guess.  The writer is tuned for large
 * get_all_records answers. */
#include <config.h>
#include "codec.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The parser recurses once per nested array or object; see xmlrpc.c. */
#define JSON_DEPTH_CAP 256

/* Used when the caller passes no limits.  The same values as
 * codec_default_limits, which lives in xmlrpc.c: this file is also linked
 * on its own (the fuzz target does). */
static const struct codec_limits json_default_limits = {
    .max_input = 64 * 1024 * 1024,
    .max_depth = 64,
    .max_string = 16 * 1024 * 1024,
    .max_items = 4000000,
};

/* ---- Parser ---- */

struct json_parser {
    const char *start;          /* the whole input, for error offsets */
    const char *p;              /* next byte to read */
    const char *end;
    const struct codec_limits *lim;
    size_t max_depth;
    size_t depth;               /* arrays and objects currently open */
    size_t items;               /* values decoded so far */
    struct ds scratch;          /* strings that needed unescaping */
    char *err;
};

static int PRINTF_FMT(3, 4)
json_fail(struct json_parser *j, int rc, const char *fmt, ...)
{
    struct ds msg = DS_EMPTY;
    va_list ap;

    if (j->err) {
        return rc;
    }
    ds_put_fmt(&msg, "JSON parse error at offset %zu: ",
               (size_t) (j->p - j->start));
    va_start(ap, fmt);
    ds_put_vfmt(&msg, fmt, ap);
    va_end(ap);
    j->err = ds_steal(&msg);
    return rc;
}

static void
json_skip_space(struct json_parser *j)
{
    while (j->p < j->end
           && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n'
               || *j->p == '\r')) {
        j->p++;
    }
}

/* Advances over string bytes that need no decoding: stops at '"', '\\',
 * a control character (an error the caller reports) or the end. */
static int
json_scan_plain(struct json_parser *j)
{
    const unsigned char *p = (const unsigned char *) j->p;
    const unsigned char *end = (const unsigned char *) j->end;
    int rc = 0;

    while (p < end) {
        unsigned char c = *p;
        if (c >= 0x80) {
            size_t n = utf8_sequence_length(p, end);
            if (!n) {
                j->p = (const char *) p;
                rc = json_fail(j, -EINVAL, "invalid UTF-8 in string");
                goto out;
            }
            p += n;
        } else if (c == '"' || c == '\\' || c < 0x20) {
            break;
        } else {
            p++;
        }
    }
    j->p = (const char *) p;
out:
    return rc;
}

static int
json_read_hex4(struct json_parser *j, uint32_t *ret_v)
{
    uint32_t v = 0;

    if (j->end - j->p < 4) {
        return json_fail(j, -EINVAL, "truncated \\u escape");
    }
    for (int i = 0; i < 4; i++) {
        unsigned char c = j->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= c - '0';
        } else if (c >= 'a' && c <= 'f') {
            v |= c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            v |= c - 'A' + 10;
        } else {
            return json_fail(j, -EINVAL, "malformed \\u escape");
        }
    }
    j->p += 4;
    *ret_v = v;
    return 0;
}

/* Decodes the escape sequence at j->p (just after the backslash) into the
 * scratch buffer. */
static int
json_decode_escape(struct json_parser *j)
{
    uint32_t cp, low;
    char utf8[4];
    char c;
    int rc;

    if (j->p == j->end) {
        return json_fail(j, -EINVAL, "unterminated string");
    }
    c = *j->p++;
    switch (c) {
    case '"': ds_put_char(&j->scratch, '"'); return 0;
    case '\\': ds_put_char(&j->scratch, '\\'); return 0;
    case '/': ds_put_char(&j->scratch, '/'); return 0;
    case 'b': ds_put_char(&j->scratch, '\b'); return 0;
    case 'f': ds_put_char(&j->scratch, '\f'); return 0;
    case 'n': ds_put_char(&j->scratch, '\n'); return 0;
    case 'r': ds_put_char(&j->scratch, '\r'); return 0;
    case 't': ds_put_char(&j->scratch, '\t'); return 0;
    case 'u': break;
    default:
        j->p--;
        return json_fail(j, -EINVAL, "invalid escape sequence");
    }
    rc = json_read_hex4(j, &cp);
    if (rc) {
        return rc;
    }
    if (cp >= 0xdc00 && cp <= 0xdfff) {
        return json_fail(j, -EINVAL, "lone low surrogate in \\u escape");
    }
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') {
            return json_fail(j, -EINVAL, "high surrogate not followed by "
                             "a low surrogate");
        }
        j->p += 2;
        rc = json_read_hex4(j, &low);
        if (rc) {
            return rc;
        }
        if (low < 0xdc00 || low > 0xdfff) {
            return json_fail(j, -EINVAL, "high surrogate not followed by "
                             "a low surrogate");
        }
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
    }
    if (cp == 0) {
        /* Strings in the toolstack are C strings. */
        return json_fail(j, -EINVAL, "\\u0000 is not supported in strings");
    }
    ds_put(&j->scratch, utf8, utf8_encode(cp, utf8));
    return 0;
}

/* Reads the string whose opening quote is at j->p.  The result is a slice
 * of the input when nothing needed decoding, else the scratch buffer, so
 * it is valid only until the next call. */
static int
json_read_string(struct json_parser *j, const char **ret_s, size_t *ret_n)
{
    const char *start = ++j->p;
    int rc;

    rc = json_scan_plain(j);
    if (rc) {
        goto out;
    }
    if (j->p < j->end && *j->p == '"') {
        if ((size_t) (j->p - start) > j->lim->max_string) {
            j->p = start;
            rc = json_fail(j, -E2BIG, "string longer than %zu bytes",
                           j->lim->max_string);
            goto out;
        }
        *ret_s = start;
        *ret_n = j->p - start;
        j->p++;
        goto out;
    }

    ds_clear(&j->scratch);
    ds_put(&j->scratch, start, j->p - start);
    for (;;) {
        const char *run;

        if (j->scratch.len > j->lim->max_string) {
            j->p = start;
            rc = json_fail(j, -E2BIG, "string longer than %zu bytes",
                           j->lim->max_string);
            goto out;
        }
        if (j->p == j->end) {
            rc = json_fail(j, -EINVAL, "unterminated string");
            goto out;
        }
        if (*j->p == '"') {
            j->p++;
            break;
        }
        if (*j->p == '\\') {
            j->p++;
            rc = json_decode_escape(j);
            if (rc) {
                goto out;
            }
            continue;
        }
        if ((unsigned char) *j->p < 0x20) {
            rc = json_fail(j, -EINVAL, "control character in string");
            goto out;
        }
        run = j->p;
        rc = json_scan_plain(j);
        if (rc) {
            goto out;
        }
        ds_put(&j->scratch, run, j->p - run);
    }
    *ret_s = j->scratch.s;
    *ret_n = j->scratch.len;
    rc = 0;
out:
    return rc;
}

/* Parses a number per RFC 8259's grammar.  Integers that fit in 64 bits
 * become VALUE_INT; other numbers VALUE_DOUBLE, unless they overflow. */
static int
json_parse_number(struct json_parser *j, struct value **ret_v)
{
    const char *s = j->p, *p = j->p;
    bool negative = false, integral = true;
    uint64_t u = 0;
    bool overflow = false;
    char buf[64];
    char *copy = NULL;
    size_t n;
    double d;
    int rc;

    if (*p == '-') {
        negative = true;
        p++;
    }
    if (p == j->end || *p < '0' || *p > '9') {
        j->p = p;
        rc = json_fail(j, -EINVAL, "malformed number");
        goto out;
    }
    if (*p == '0') {
        p++;
        if (p < j->end && *p >= '0' && *p <= '9') {
            j->p = p;
            rc = json_fail(j, -EINVAL, "leading zeros are not allowed");
            goto out;
        }
    } else {
        for (; p < j->end && *p >= '0' && *p <= '9'; p++) {
            unsigned digit = *p - '0';
            if (u > (UINT64_MAX - digit) / 10) {
                overflow = true;
            } else {
                u = u * 10 + digit;
            }
        }
    }
    if (p < j->end && *p == '.') {
        integral = false;
        p++;
        if (p == j->end || *p < '0' || *p > '9') {
            j->p = p;
            rc = json_fail(j, -EINVAL, "malformed number");
            goto out;
        }
        while (p < j->end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        integral = false;
        p++;
        if (p < j->end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (p == j->end || *p < '0' || *p > '9') {
            j->p = p;
            rc = json_fail(j, -EINVAL, "malformed number");
            goto out;
        }
        while (p < j->end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (integral && !overflow) {
        if (!negative && u <= (uint64_t) INT64_MAX) {
            *ret_v = value_int((int64_t) u);
            j->p = p;
            rc = 0;
            goto out;
        }
        if (negative && u <= (uint64_t) INT64_MAX + 1) {
            *ret_v = value_int((int64_t) (0 - u));
            j->p = p;
            rc = 0;
            goto out;
        }
    }

    /* The input is not NUL-terminated, so strtod() gets a copy. */
    n = p - s;
    copy = n < sizeof buf ? buf : xmalloc(n + 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    d = strtod(copy, NULL);
    if (!isfinite(d)) {
        rc = json_fail(j, -EINVAL, "number out of range");
        goto out;
    }
    *ret_v = value_double(d);
    j->p = p;
    rc = 0;
out:
    if (copy != buf) {
        free(copy);
    }
    return rc;
}

static int json_parse_value(struct json_parser *j, struct value **ret_v);

static int
json_parse_array(struct json_parser *j, struct value **ret_v)
{
    struct value *arr = NULL;
    int rc;

    j->p++;
    json_skip_space(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        *ret_v = value_empty_array();
        rc = 0;
        goto out;
    }
    arr = value_array(0);
    for (;;) {
        struct value *item;

        rc = json_parse_value(j, &item);
        if (rc) {
            goto out;
        }
        value_array_append(arr, item);
        json_skip_space(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
        } else if (j->p < j->end && *j->p == ']') {
            j->p++;
            break;
        } else {
            rc = json_fail(j, -EINVAL, j->p == j->end
                           ? "unexpected end of input in array"
                           : "expected ',' or ']'");
            goto out;
        }
    }
    *ret_v = arr;
    arr = NULL;
    rc = 0;
out:
    value_unref(arr);
    return rc;
}

static int
json_parse_object(struct json_parser *j, struct value **ret_v)
{
    struct value *st = NULL;
    int rc;

    j->p++;
    json_skip_space(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        *ret_v = value_empty_struct();
        rc = 0;
        goto out;
    }
    st = value_struct(0);
    for (;;) {
        const char *key;
        size_t key_len;

        json_skip_space(j);
        if (j->p == j->end || *j->p != '"') {
            rc = json_fail(j, -EINVAL, j->p == j->end
                           ? "unexpected end of input in object"
                           : "expected a string as object key");
            goto out;
        }
        rc = json_read_string(j, &key, &key_len);
        if (rc) {
            goto out;
        }
        /* The key may live in the scratch buffer, which parsing the value
         * reuses, so the member is added now and its value filled in
         * after; on failure the struct is freed, NULL value and all. */
        value_struct_put_n(st, key, key_len, NULL);
        json_skip_space(j);
        if (j->p == j->end || *j->p != ':') {
            rc = json_fail(j, -EINVAL, "expected ':' after object key");
            goto out;
        }
        j->p++;
        rc = json_parse_value(j, &st->u.st.m[st->u.st.n - 1].v);
        if (rc) {
            goto out;
        }
        json_skip_space(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
        } else if (j->p < j->end && *j->p == '}') {
            j->p++;
            break;
        } else {
            rc = json_fail(j, -EINVAL, j->p == j->end
                           ? "unexpected end of input in object"
                           : "expected ',' or '}'");
            goto out;
        }
    }
    value_struct_drop_duplicates(st);
    *ret_v = st;
    st = NULL;
    rc = 0;
out:
    value_unref(st);
    return rc;
}

static bool
json_take_literal(struct json_parser *j, const char *lit, size_t n)
{
    if ((size_t) (j->end - j->p) >= n && !memcmp(j->p, lit, n)) {
        j->p += n;
        return true;
    }
    return false;
}

static int
json_parse_value(struct json_parser *j, struct value **ret_v)
{
    const char *s;
    size_t n;
    int rc;

    json_skip_space(j);
    if (j->p == j->end) {
        return json_fail(j, -EINVAL, "unexpected end of input");
    }
    if (++j->items > j->lim->max_items) {
        return json_fail(j, -E2BIG, "more than %zu values",
                         j->lim->max_items);
    }
    switch (*j->p) {
    case '{':
    case '[':
        if (++j->depth > j->max_depth) {
            return json_fail(j, -E2BIG, "nesting deeper than %zu",
                             j->max_depth);
        }
        rc = (*j->p == '{' ? json_parse_object : json_parse_array)(j, ret_v);
        j->depth--;
        return rc;
    case '"':
        rc = json_read_string(j, &s, &n);
        if (!rc) {
            *ret_v = value_string_n(s, n);
        }
        return rc;
    case 't':
        if (json_take_literal(j, "true", 4)) {
            *ret_v = value_true();
            return 0;
        }
        break;
    case 'f':
        if (json_take_literal(j, "false", 5)) {
            *ret_v = value_false();
            return 0;
        }
        break;
    case 'n':
        if (json_take_literal(j, "null", 4)) {
            *ret_v = value_nil();
            return 0;
        }
        break;
    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return json_parse_number(j, ret_v);
    default:
        break;
    }
    return json_fail(j, -EINVAL, "unexpected character");
}

int
json_parse(const char *buf, size_t len, const struct codec_limits *lim,
           struct value **ret_value, char **ret_err)
{
    struct json_parser j;
    struct value *v = NULL;
    int rc;

    memset(&j, 0, sizeof j);
    j.start = j.p = buf ? buf : "";
    j.end = j.p + (buf ? len : 0);
    j.lim = lim ? lim : &json_default_limits;
    j.max_depth = MIN(j.lim->max_depth, JSON_DEPTH_CAP);
    if (len > j.lim->max_input) {
        rc = json_fail(&j, -E2BIG, "input larger than %zu bytes",
                       j.lim->max_input);
        goto out;
    }
    /* RFC 8259 lets parsers ignore a byte order mark. */
    if (j.end - j.p >= 3 && !memcmp(j.p, "\xef\xbb\xbf", 3)) {
        j.p += 3;
    }
    rc = json_parse_value(&j, &v);
    if (rc) {
        goto out;
    }
    json_skip_space(&j);
    if (j.p != j.end) {
        rc = json_fail(&j, -EINVAL, "trailing data after the value");
        goto out;
    }
    *ret_value = v;
    v = NULL;
out:
    if (rc && ret_err) {
        *ret_err = j.err ? j.err : xstrdup("JSON parse error");
        j.err = NULL;
    }
    free(j.err);
    ds_destroy(&j.scratch);
    value_unref(v);
    return rc;
}

/* ---- Writer ----
 *
 * As in xmlrpc.c, the writer reserves room for a whole member or scalar
 * at a time (the worst case, with every byte escaped), writes through a
 * local pointer, and scans for characters to escape a word at a time; the
 * NUL terminator is added once at the end. */

/* Strings longer than this are written in pieces rather than reserving
 * six times their length up front. */
#define JSON_INLINE_STRING_MAX 65536

/* Returns where to write at least n more bytes (plus a NUL). */
static inline char *
out_room(struct ds *out, size_t n)
{
    if (out->cap - out->len <= n) {
        ds_reserve(out, n);
    }
    return out->s + out->len;
}

static inline void
out_commit(struct ds *out, char *o)
{
    out->len = o - out->s;
}

static inline char *
put_bytes(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

#define PUT_LITERAL(O, LIT) put_bytes(O, LIT, sizeof LIT - 1)

static inline void
out_put_char(struct ds *out, char c)
{
    char *o = out_room(out, 1);

    *o++ = c;
    out_commit(out, o);
}

/* Writes v in decimal; needs 20 bytes. */
static inline char *
put_int(char *o, int64_t v)
{
    char buf[24];
    char *p = buf + sizeof buf;
    uint64_t u = v < 0 ? -(uint64_t) v : (uint64_t) v;

    do {
        *--p = '0' + u % 10;
        u /= 10;
    } while (u);
    if (v < 0) {
        *--p = '-';
    }
    return put_bytes(o, p, buf + sizeof buf - p);
}

/* Writes d so that it reads back as a double; needs 32 bytes. */
static char *
put_double(char *o, double d)
{
    char buf[40];
    int n;

    /* JSON has no NaN or infinities; 0.0 keeps the output parseable and
     * still a float to the client. */
    if (!isfinite(d)) {
        return PUT_LITERAL(o, "0.0");
    }
    n = snprintf(buf, sizeof buf, "%.17g", d);
    o = put_bytes(o, buf, n);
    /* Without '.' or an exponent the number would read back as an
     * integer. */
    if (!memchr(buf, '.', n) && !memchr(buf, 'e', n)) {
        o = PUT_LITERAL(o, ".0");
    }
    return o;
}

/* Word-at-a-time helpers for the escaping scan: masks with the top bit
 * set in each byte of w that equals c, or is below 0x20 (both exact for
 * the lowest such byte, which is all the scan uses). */
#define BYTES_ONES 0x0101010101010101ULL
#define BYTES_HIGHS 0x8080808080808080ULL

static inline uint64_t
bytes_equal_mask(uint64_t w, unsigned char c)
{
    uint64_t x = w ^ (BYTES_ONES * c);

    return (x - BYTES_ONES) & ~x & BYTES_HIGHS;
}

static inline uint64_t
bytes_control_mask(uint64_t w)
{
    return (w - BYTES_ONES * 0x20) & ~w & BYTES_HIGHS;
}

/* Bytes a JSON string must escape: '"', '\\' and control characters. */
static const uint8_t json_needs_escape[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1,
    [0x06] = 1, [0x07] = 1, [0x08] = 1, [0x09] = 1, [0x0a] = 1, [0x0b] = 1,
    [0x0c] = 1, [0x0d] = 1, [0x0e] = 1, [0x0f] = 1, [0x10] = 1, [0x11] = 1,
    [0x12] = 1, [0x13] = 1, [0x14] = 1, [0x15] = 1, [0x16] = 1, [0x17] = 1,
    [0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1, [0x1c] = 1, [0x1d] = 1,
    [0x1e] = 1, [0x1f] = 1, ['"'] = 1, ['\\'] = 1,
};

static inline uint64_t
json_escape_mask(uint64_t w)
{
    return bytes_equal_mask(w, '"') | bytes_equal_mask(w, '\\')
           | bytes_control_mask(w);
}

/* Returns the first byte in [p, end) that needs escaping, or end.  Most
 * strings need none, so whole words are checked at once; a string's last
 * few bytes are checked by re-reading its last word, shifted. */
static inline const char *
json_find_escape(const char *p, const char *end)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const char *start = p;
    uint64_t w, m;

    while (end - p >= 8) {
        memcpy(&w, p, 8);
        m = json_escape_mask(w);
        if (m) {
            return p + __builtin_ctzll(m) / 8;
        }
        p += 8;
    }
    if (p < end && end - start >= 8) {
        memcpy(&w, end - 8, 8);
        w >>= 8 * (8 - (end - p));
        /* The bytes shifted in are zero, which would count as control
         * characters: make them harmless letters. */
        w |= (BYTES_ONES * 'a') << (8 * (end - p));
        m = json_escape_mask(w);
        return m ? p + __builtin_ctzll(m) / 8 : end;
    }
#endif
    while (p < end && !json_needs_escape[(unsigned char) *p]) {
        p++;
    }
    return p;
}

/* Writes the body of a string literal (no quotes); needs 6 * n bytes. */
static char *
put_escaped(char *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const char *end = s + n;

    for (;;) {
        const char *p = json_find_escape(s, end);
        unsigned char c;

        o = put_bytes(o, s, p - s);
        if (p == end) {
            return o;
        }
        c = *p;
        switch (c) {
        case '"': o = PUT_LITERAL(o, "\\\""); break;
        case '\\': o = PUT_LITERAL(o, "\\\\"); break;
        case '\n': o = PUT_LITERAL(o, "\\n"); break;
        case '\r': o = PUT_LITERAL(o, "\\r"); break;
        case '\t': o = PUT_LITERAL(o, "\\t"); break;
        case '\b': o = PUT_LITERAL(o, "\\b"); break;
        case '\f': o = PUT_LITERAL(o, "\\f"); break;
        default:
            o = PUT_LITERAL(o, "\\u00");
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
            break;
        }
        s = p + 1;
    }
}

/* Writes a string literal, reserving room piece by piece if it is long. */
static void
out_put_string(struct ds *out, const char *s, size_t n)
{
    out_put_char(out, '"');
    while (n) {
        size_t chunk = MIN(n, JSON_INLINE_STRING_MAX);

        out_commit(out, put_escaped(out_room(out, 6 * chunk), s, chunk));
        s += chunk;
        n -= chunk;
    }
    out_put_char(out, '"');
}

static bool
json_is_scalar(const struct value *v)
{
    return !v || v->type < VALUE_ARRAY;
}

/* Bytes that json_put_scalar() may write for v, or 0 if v is a string too
 * long to write in one go. */
static size_t
json_scalar_room(const struct value *v)
{
    if (v && (v->type == VALUE_STRING || v->type == VALUE_DATETIME)) {
        return v->u.str.len <= JSON_INLINE_STRING_MAX
               ? 6 * v->u.str.len + 8 : 0;
    }
    return 40;
}

static char *
json_put_scalar(char *o, const struct value *v)
{
    if (!v) {
        return PUT_LITERAL(o, "null");
    }
    switch (v->type) {
    case VALUE_NIL:
        return PUT_LITERAL(o, "null");
    case VALUE_BOOL:
        return v->u.b ? PUT_LITERAL(o, "true") : PUT_LITERAL(o, "false");
    case VALUE_INT:
        return put_int(o, v->u.i);
    case VALUE_DOUBLE:
        return put_double(o, v->u.d);
    case VALUE_STRING:
    case VALUE_DATETIME:
        *o++ = '"';
        o = put_escaped(o, v->u.str.s, v->u.str.len);
        *o++ = '"';
        return o;
    case VALUE_ARRAY:
    case VALUE_STRUCT:
        break;
    }
    return o;
}

static void json_write_value(struct ds *out, const struct value *v);

static void
json_write_object(struct ds *out, const struct value *v)
{
    out_put_char(out, '{');
    for (size_t i = 0; i < v->u.st.n; i++) {
        const char *name = v->u.st.m[i].name;
        const struct value *mv = v->u.st.m[i].v;
        size_t name_len = strlen(name);
        size_t room = json_scalar_room(mv);
        char *o;

        if (json_is_scalar(mv) && room
            && name_len <= JSON_INLINE_STRING_MAX) {
            /* The common case, a record field: one reservation for the
             * whole member. */
            o = out_room(out, 6 * name_len + room + 8);
            if (i) {
                *o++ = ',';
            }
            *o++ = '"';
            o = put_escaped(o, name, name_len);
            o = PUT_LITERAL(o, "\":");
            o = json_put_scalar(o, mv);
            out_commit(out, o);
        } else {
            if (i) {
                out_put_char(out, ',');
            }
            out_put_string(out, name, name_len);
            out_put_char(out, ':');
            json_write_value(out, mv);
        }
    }
    out_put_char(out, '}');
}

static void
json_write_value(struct ds *out, const struct value *v)
{
    size_t room;

    if (!json_is_scalar(v)) {
        if (v->type == VALUE_STRUCT) {
            json_write_object(out, v);
        } else {
            out_put_char(out, '[');
            for (size_t i = 0; i < v->u.arr.n; i++) {
                if (i) {
                    out_put_char(out, ',');
                }
                json_write_value(out, v->u.arr.items[i]);
            }
            out_put_char(out, ']');
        }
        return;
    }
    room = json_scalar_room(v);
    if (room) {
        out_commit(out, json_put_scalar(out_room(out, room), v));
    } else {
        out_put_string(out, v->u.str.s, v->u.str.len);
    }
}

void
json_write(struct ds *out, const struct value *v)
{
    json_write_value(out, v);
    out_room(out, 0)[0] = '\0';
}
