/* xmlrpc.c — the XML-RPC decoder and encoder declared in codec.h.
 *
 * The decoder is a small hand-written tokenizer and recursive-descent
 * parser that knows only the XML-RPC vocabulary: it parses untrusted
 * requests, so it supports no DTDs, no external or custom entities and
 * nothing else that could make its work or memory exceed what the
 * codec_limits allow.  The encoder writes the compact form XenAPI itself
 * sends and is tuned for large get_all_records answers; json.c is its
 * sibling for JSON-RPC and value.c provides the values both produce. */
#include <config.h>
#include "codec.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct codec_limits codec_default_limits = {
    .max_input = 64 * 1024 * 1024,
    .max_depth = 64,
    .max_string = 16 * 1024 * 1024,
    .max_items = 4000000,
};

/* The parser recurses once per nested array or struct, so a caller that
 * configures a silly max_depth must not be able to overflow the stack of a
 * worker thread: deeper nesting than this is refused whatever the limits
 * say. */
#define XML_DEPTH_CAP 256

/* ---- Decoder ---- */

enum xml_element {
    EL_METHOD_CALL,
    EL_METHOD_NAME,
    EL_METHOD_RESPONSE,
    EL_PARAMS,
    EL_PARAM,
    EL_FAULT,
    EL_VALUE,
    EL_STRING,
    EL_I4,
    EL_INT,
    EL_I8,
    EL_BOOLEAN,
    EL_DOUBLE,
    EL_DATETIME,
    EL_BASE64,
    EL_NIL,
    EL_ARRAY,
    EL_DATA,
    EL_STRUCT,
    EL_MEMBER,
    EL_NAME,
    EL_N_ELEMENTS
};

#define XML_ELEMENT(EL, NAME) [EL] = { NAME, sizeof NAME - 1 }
static const struct {
    const char *name;
    size_t len;
} xml_elements[EL_N_ELEMENTS] = {
    XML_ELEMENT(EL_METHOD_CALL, "methodCall"),
    XML_ELEMENT(EL_METHOD_NAME, "methodName"),
    XML_ELEMENT(EL_METHOD_RESPONSE, "methodResponse"),
    XML_ELEMENT(EL_PARAMS, "params"),
    XML_ELEMENT(EL_PARAM, "param"),
    XML_ELEMENT(EL_FAULT, "fault"),
    XML_ELEMENT(EL_VALUE, "value"),
    XML_ELEMENT(EL_STRING, "string"),
    XML_ELEMENT(EL_I4, "i4"),
    XML_ELEMENT(EL_INT, "int"),
    XML_ELEMENT(EL_I8, "i8"),
    XML_ELEMENT(EL_BOOLEAN, "boolean"),
    XML_ELEMENT(EL_DOUBLE, "double"),
    XML_ELEMENT(EL_DATETIME, "dateTime.iso8601"),
    XML_ELEMENT(EL_BASE64, "base64"),
    XML_ELEMENT(EL_NIL, "nil"),
    XML_ELEMENT(EL_ARRAY, "array"),
    XML_ELEMENT(EL_DATA, "data"),
    XML_ELEMENT(EL_STRUCT, "struct"),
    XML_ELEMENT(EL_MEMBER, "member"),
    XML_ELEMENT(EL_NAME, "name"),
};

enum xml_tag_kind {
    TAG_START,                  /* <name> */
    TAG_EMPTY,                  /* <name/> */
    TAG_END,                    /* </name> */
};

struct xml_tag {
    enum xml_tag_kind kind;
    enum xml_element el;
};

struct xml_parser {
    const char *start;          /* the whole input, for error positions */
    const char *p;              /* next byte to read */
    const char *end;
    const struct codec_limits *lim;
    size_t max_depth;
    size_t depth;               /* arrays and structs currently open */
    size_t items;               /* values decoded so far */
    struct ds scratch;          /* decoded text that needed unescaping */
    char *err;
};

static int PRINTF_FMT(3, 4)
xml_fail(struct xml_parser *x, int rc, const char *fmt, ...)
{
    size_t line = 1, col = 1;
    struct ds msg = DS_EMPTY;
    va_list ap;

    if (x->err) {
        return rc;
    }
    for (const char *q = x->start; q < x->p && q < x->end; q++) {
        if (*q == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    ds_put_fmt(&msg, "XML-RPC parse error at line %zu column %zu: ", line,
               col);
    va_start(ap, fmt);
    ds_put_vfmt(&msg, fmt, ap);
    va_end(ap);
    x->err = ds_steal(&msg);
    return rc;
}

static bool
xml_is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool
xml_at(const struct xml_parser *x, const char *lit, size_t n)
{
    return (size_t) (x->end - x->p) >= n && !memcmp(x->p, lit, n);
}

/* Advances over character data that needs no decoding: everything up to
 * the next '<' or '&' or limit.  Control characters other than NUL are
 * accepted although XML 1.0 forbids them, because the encoder writes
 * whatever a string holds and must be able to read it back. */
static int
xml_scan_plain(struct xml_parser *x, const char *limit)
{
    const unsigned char *p = (const unsigned char *) x->p;
    const unsigned char *end = (const unsigned char *) limit;
    int rc = 0;

    while (p < end) {
        unsigned char c = *p;
        if (c >= 0x80) {
            size_t n = utf8_sequence_length(p, end);
            if (!n) {
                x->p = (const char *) p;
                rc = xml_fail(x, -EINVAL, "invalid UTF-8");
                goto out;
            }
            p += n;
        } else if (c == '<' || c == '&') {
            break;
        } else if (c == '\0') {
            x->p = (const char *) p;
            rc = xml_fail(x, -EINVAL, "NUL byte in text");
            goto out;
        } else {
            p++;
        }
    }
    x->p = (const char *) p;
out:
    return rc;
}

/* Skips a comment or processing instruction at x->p; the caller has
 * checked which one it is. */
static int
xml_skip_markup(struct xml_parser *x, size_t open_len, const char *close,
                size_t close_len, const char *what)
{
    const char *found = memmem(x->p + open_len, x->end - x->p - open_len,
                               close, close_len);

    if (!found) {
        return xml_fail(x, -EINVAL, "unterminated %s", what);
    }
    x->p = found + close_len;
    return 0;
}

/* Skips whitespace, comments and processing instructions (the XML
 * declaration among them) between elements.  Stops at the next tag or the
 * end of input; anything else is an error.  DOCTYPE and other declarations
 * are refused outright: without them no entity can expand beyond the few
 * predefined ones. */
static int
xml_skip_misc(struct xml_parser *x)
{
    for (;;) {
        while (x->p < x->end && xml_is_space(*x->p)) {
            x->p++;
        }
        if (x->p == x->end) {
            return 0;
        }
        if (*x->p != '<') {
            return xml_fail(x, -EINVAL, "unexpected text between elements");
        }
        if (xml_at(x, "<!--", 4)) {
            int rc = xml_skip_markup(x, 4, "-->", 3, "comment");
            if (rc) {
                return rc;
            }
        } else if (xml_at(x, "<?", 2)) {
            int rc = xml_skip_markup(x, 2, "?>", 2,
                                     "processing instruction");
            if (rc) {
                return rc;
            }
        } else if (xml_at(x, "<!", 2)) {
            return xml_fail(x, -EINVAL, "DOCTYPE, entity declarations and "
                            "CDATA sections are not allowed here");
        } else {
            return 0;
        }
    }
}

static bool
xml_is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'
           || c == ':';
}

static int
xml_lookup_element(const char *name, size_t n)
{
    /* Checked in the order they are most common in XenAPI traffic. */
    static const enum xml_element order[] = {
        EL_VALUE, EL_MEMBER, EL_NAME, EL_STRUCT, EL_ARRAY, EL_DATA,
        EL_STRING, EL_PARAM, EL_PARAMS, EL_BOOLEAN, EL_DOUBLE, EL_DATETIME,
        EL_I4, EL_INT, EL_I8, EL_NIL, EL_BASE64, EL_METHOD_CALL,
        EL_METHOD_NAME, EL_METHOD_RESPONSE, EL_FAULT,
    };

    for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
        enum xml_element el = order[i];
        if (xml_elements[el].len == n
            && !memcmp(xml_elements[el].name, name, n)) {
            return el;
        }
    }
    return -1;
}

/* Reads the tag at x->p, which must be '<' starting an element's start,
 * end or empty-element tag.  Attributes are syntax-checked and ignored:
 * XML-RPC defines none, but they are harmless. */
static int
xml_read_tag(struct xml_parser *x, struct xml_tag *ret_tag)
{
    const char *name;
    bool is_end = false;
    struct xml_tag tag;
    int el, rc;

    x->p++;
    if (x->p < x->end && *x->p == '/') {
        is_end = true;
        x->p++;
    }
    name = x->p;
    while (x->p < x->end && xml_is_name_char(*x->p)) {
        x->p++;
    }
    if (x->p == name) {
        rc = xml_fail(x, -EINVAL, "malformed tag");
        goto out;
    }
    el = xml_lookup_element(name, x->p - name);
    if (el < 0) {
        int name_len = MIN(x->p - name, 40);
        x->p = name;
        rc = xml_fail(x, -EINVAL, "unknown element <%.*s>", name_len, name);
        goto out;
    }
    tag.el = el;
    for (;;) {
        bool had_space = false;
        while (x->p < x->end && xml_is_space(*x->p)) {
            x->p++;
            had_space = true;
        }
        if (x->p == x->end) {
            rc = xml_fail(x, -EINVAL, "unexpected end of input in a tag");
            goto out;
        }
        if (*x->p == '>') {
            x->p++;
            tag.kind = is_end ? TAG_END : TAG_START;
            break;
        }
        if (!is_end && xml_at(x, "/>", 2)) {
            x->p += 2;
            tag.kind = TAG_EMPTY;
            break;
        }
        if (is_end || !had_space || !xml_is_name_char(*x->p)) {
            rc = xml_fail(x, -EINVAL, "malformed tag <%s>",
                          xml_elements[el].name);
            goto out;
        }
        while (x->p < x->end && xml_is_name_char(*x->p)) {
            x->p++;
        }
        while (x->p < x->end && xml_is_space(*x->p)) {
            x->p++;
        }
        if (x->p == x->end || *x->p != '=') {
            rc = xml_fail(x, -EINVAL, "malformed attribute");
            goto out;
        }
        x->p++;
        while (x->p < x->end && xml_is_space(*x->p)) {
            x->p++;
        }
        if (x->p == x->end || (*x->p != '"' && *x->p != '\'')) {
            rc = xml_fail(x, -EINVAL, "malformed attribute");
            goto out;
        }
        {
            char quote = *x->p++;
            const char *close = memchr(x->p, quote, x->end - x->p);
            if (!close || memchr(x->p, '<', close - x->p)) {
                rc = xml_fail(x, -EINVAL, "malformed attribute");
                goto out;
            }
            x->p = close + 1;
        }
    }
    *ret_tag = tag;
    rc = 0;
out:
    return rc;
}

/* Reads the next tag, allowing only whitespace, comments and processing
 * instructions before it. */
static int
xml_next_tag(struct xml_parser *x, struct xml_tag *ret_tag)
{
    int rc = xml_skip_misc(x);

    if (rc) {
        return rc;
    }
    if (x->p == x->end) {
        return xml_fail(x, -EINVAL, "unexpected end of input");
    }
    return xml_read_tag(x, ret_tag);
}

static const char *
xml_tag_kind_text(enum xml_tag_kind kind)
{
    return kind == TAG_END ? "/" : "";
}

static int
xml_expect_start(struct xml_parser *x, enum xml_element el, bool *ret_empty)
{
    const char *at = x->p;
    struct xml_tag tag;
    int rc = xml_next_tag(x, &tag);

    if (rc) {
        return rc;
    }
    if (tag.kind == TAG_END || tag.el != el) {
        x->p = at;
        return xml_fail(x, -EINVAL, "expected <%s>, found <%s%s>",
                        xml_elements[el].name, xml_tag_kind_text(tag.kind),
                        xml_elements[tag.el].name);
    }
    *ret_empty = tag.kind == TAG_EMPTY;
    return 0;
}

static int
xml_expect_end(struct xml_parser *x, enum xml_element el)
{
    const char *at = x->p;
    struct xml_tag tag;
    int rc = xml_next_tag(x, &tag);

    if (rc) {
        return rc;
    }
    if (tag.kind != TAG_END || tag.el != el) {
        x->p = at;
        return xml_fail(x, -EINVAL, "expected </%s>, found <%s%s>",
                        xml_elements[el].name, xml_tag_kind_text(tag.kind),
                        xml_elements[tag.el].name);
    }
    return 0;
}

/* Decodes the entity or character reference at x->p (which is '&') and
 * appends it to the scratch buffer. */
static int
xml_decode_reference(struct xml_parser *x)
{
    static const struct {
        const char *name;
        size_t len;
        char c;
    } predefined[] = {
        { "amp;", 4, '&' }, { "lt;", 3, '<' }, { "gt;", 3, '>' },
        { "quot;", 5, '"' }, { "apos;", 5, '\'' },
    };
    const char *p = x->p + 1;
    uint32_t cp = 0;
    char utf8[4];

    if (p < x->end && *p == '#') {
        bool hex = false;
        size_t digits = 0;

        p++;
        if (p < x->end && *p == 'x') {
            hex = true;
            p++;
        }
        for (; p < x->end && *p != ';'; p++, digits++) {
            unsigned char c = *p;
            int d;
            if (c >= '0' && c <= '9') {
                d = c - '0';
            } else if (hex && c >= 'a' && c <= 'f') {
                d = c - 'a' + 10;
            } else if (hex && c >= 'A' && c <= 'F') {
                d = c - 'A' + 10;
            } else {
                return xml_fail(x, -EINVAL, "malformed character reference");
            }
            cp = cp * (hex ? 16 : 10) + d;
            if (cp > 0x10ffff) {
                return xml_fail(x, -EINVAL,
                                "character reference out of range");
            }
        }
        if (p == x->end || !digits) {
            return xml_fail(x, -EINVAL, "malformed character reference");
        }
        if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff)) {
            return xml_fail(x, -EINVAL, "character reference to an invalid "
                            "character (%#x)", (unsigned) cp);
        }
        ds_put(&x->scratch, utf8, utf8_encode(cp, utf8));
        x->p = p + 1;
        return 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(predefined); i++) {
        if ((size_t) (x->end - p) >= predefined[i].len
            && !memcmp(p, predefined[i].name, predefined[i].len)) {
            ds_put_char(&x->scratch, predefined[i].c);
            x->p = p + predefined[i].len;
            return 0;
        }
    }
    return xml_fail(x, -EINVAL, "unknown or malformed entity reference");
}

static int
xml_check_string_length(struct xml_parser *x, size_t n)
{
    if (n > x->lim->max_string) {
        return xml_fail(x, -E2BIG, "string longer than %zu bytes",
                        x->lim->max_string);
    }
    return 0;
}

/* Reads character data up to the next element tag, decoding references
 * and CDATA sections and dropping comments.  The result is either a slice
 * of the input (the common case, with nothing to decode) or the scratch
 * buffer, so it is valid only until the next call. */
static int
xml_read_text(struct xml_parser *x, const char **ret_s, size_t *ret_n)
{
    const char *start = x->p;
    int rc;

    rc = xml_scan_plain(x, x->end);
    if (rc) {
        goto out;
    }
    if (x->p < x->end && *x->p == '<' && x->end - x->p >= 2
        && x->p[1] != '!' && x->p[1] != '?') {
        rc = xml_check_string_length(x, x->p - start);
        if (rc) {
            goto out;
        }
        *ret_s = start;
        *ret_n = x->p - start;
        goto out;
    }

    ds_clear(&x->scratch);
    ds_put(&x->scratch, start, x->p - start);
    for (;;) {
        const char *run;

        rc = xml_check_string_length(x, x->scratch.len);
        if (rc) {
            goto out;
        }
        if (x->p == x->end) {
            rc = xml_fail(x, -EINVAL, "unexpected end of input in text");
            goto out;
        }
        if (*x->p == '&') {
            rc = xml_decode_reference(x);
            if (rc) {
                goto out;
            }
            continue;
        }
        if (*x->p == '<') {
            if (xml_at(x, "<!--", 4)) {
                rc = xml_skip_markup(x, 4, "-->", 3, "comment");
            } else if (xml_at(x, "<?", 2)) {
                rc = xml_skip_markup(x, 2, "?>", 2, "processing instruction");
            } else if (xml_at(x, "<![CDATA[", 9)) {
                const char *close = memmem(x->p + 9, x->end - x->p - 9,
                                           "]]>", 3);
                if (!close) {
                    rc = xml_fail(x, -EINVAL, "unterminated CDATA section");
                    goto out;
                }
                /* CDATA content is literal, '<' and '&' included, but must
                 * still be UTF-8 without NULs. */
                x->p += 9;
                while (x->p < close) {
                    run = x->p;
                    rc = xml_scan_plain(x, close);
                    if (rc) {
                        goto out;
                    }
                    if (x->p < close) {
                        x->p++;
                    }
                    ds_put(&x->scratch, run, x->p - run);
                }
                x->p = close + 3;
            } else if (xml_at(x, "<!", 2)) {
                rc = xml_fail(x, -EINVAL, "declarations are not allowed");
                goto out;
            } else {
                break;
            }
            if (rc) {
                goto out;
            }
            continue;
        }
        run = x->p;
        rc = xml_scan_plain(x, x->end);
        if (rc) {
            goto out;
        }
        ds_put(&x->scratch, run, x->p - run);
    }
    rc = xml_check_string_length(x, x->scratch.len);
    if (rc) {
        goto out;
    }
    *ret_s = x->scratch.s;
    *ret_n = x->scratch.len;
    rc = 0;
out:
    return rc;
}

/* Reads the text content of a simple element such as <string> or
 * <name> whose start tag has been consumed, and its end tag. */
static int
xml_read_content(struct xml_parser *x, enum xml_element el, bool empty,
                 const char **ret_s, size_t *ret_n)
{
    const char *s = "", *at;
    size_t n = 0;
    struct xml_tag tag;
    int rc;

    if (!empty) {
        rc = xml_read_text(x, &s, &n);
        if (rc) {
            goto out;
        }
        at = x->p;
        rc = xml_read_tag(x, &tag);
        if (rc) {
            goto out;
        }
        if (tag.kind != TAG_END || tag.el != el) {
            x->p = at;
            rc = xml_fail(x, -EINVAL, "unexpected <%s%s> inside <%s>",
                          xml_tag_kind_text(tag.kind),
                          xml_elements[tag.el].name, xml_elements[el].name);
            goto out;
        }
    }
    *ret_s = s;
    *ret_n = n;
    rc = 0;
out:
    return rc;
}

static void
xml_trim(const char **s, size_t *n)
{
    while (*n && xml_is_space((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n && xml_is_space((*s)[*n - 1])) {
        (*n)--;
    }
}

/* Parses an optionally signed decimal integer occupying all of s[0..n)
 * and within [min, max]. */
static bool
parse_decimal(const char *s, size_t n, int64_t min, int64_t max,
              int64_t *ret_v)
{
    bool negative = false;
    uint64_t limit, v = 0;
    size_t i = 0;

    if (n && (s[0] == '-' || s[0] == '+')) {
        negative = s[0] == '-';
        i++;
    }
    if (i == n) {
        return false;
    }
    limit = negative ? (uint64_t) -(min + 1) + 1 : (uint64_t) max;
    for (; i < n; i++) {
        unsigned d = (unsigned char) s[i] - '0';
        if (d > 9 || v > (limit - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *ret_v = negative ? (int64_t) (0 - v) : (int64_t) v;
    return true;
}

/* Checks s[0..n) against the grammar of a decimal floating-point number
 * (sign, digits, optional fraction and exponent) so that strtod() never
 * sees the hexadecimal, "inf" and "nan" forms it would also accept. */
static bool
is_decimal_number(const char *s, size_t n)
{
    size_t i = 0, digits = 0;

    if (i < n && (s[i] == '-' || s[i] == '+')) {
        i++;
    }
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        digits++;
    }
    if (i < n && s[i] == '.') {
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            digits++;
        }
    }
    if (!digits) {
        return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t exp_digits = 0;
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+')) {
            i++;
        }
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            exp_digits++;
        }
        if (!exp_digits) {
            return false;
        }
    }
    return i == n;
}

static int
xml_parse_double(struct xml_parser *x, const char *s, size_t n,
                 struct value **ret_v)
{
    char buf[64];
    char *copy = n < sizeof buf ? buf : xmalloc(n + 1);
    double d;
    int rc;

    if (!is_decimal_number(s, n)) {
        rc = xml_fail(x, -EINVAL, "malformed <double>");
        goto out;
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    d = strtod(copy, NULL);
    if (!isfinite(d)) {
        rc = xml_fail(x, -EINVAL, "<double> out of range");
        goto out;
    }
    *ret_v = value_double(d);
    rc = 0;
out:
    if (copy != buf) {
        free(copy);
    }
    return rc;
}

static int8_t
base64_digit(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    } else if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    } else if (c == '+') {
        return 62;
    } else if (c == '/') {
        return 63;
    }
    return -1;
}

/* Decodes padded base64, ignoring whitespace (encoders break lines).  The
 * result becomes a string, so it must be UTF-8 text without NULs. */
static int
xml_parse_base64(struct xml_parser *x, const char *s, size_t n,
                 struct value **ret_v)
{
    char *out = xmalloc(n / 4 * 3 + 3);
    size_t len = 0, count = 0, padding = 0;
    bool malformed = false, done = false;
    uint32_t acc = 0;
    int rc;

    for (size_t i = 0; i < n && !malformed; i++) {
        unsigned char c = s[i];
        int8_t d = 0;

        if (xml_is_space(c)) {
            continue;
        }
        if (c == '=') {
            padding++;
        } else {
            d = base64_digit(c);
        }
        /* Nothing may follow the padded final group, and padding may only
         * end a group. */
        malformed = done || d < 0 || (padding && c != '=');
        acc = acc << 6 | (uint32_t) (d & 63);
        if (++count % 4 == 0) {
            malformed = malformed || padding > 2;
            out[len++] = acc >> 16;
            out[len++] = acc >> 8;
            out[len++] = acc;
            len -= MIN(padding, 2);
            done = padding > 0;
            acc = 0;
        }
    }
    if (malformed || count % 4) {
        rc = xml_fail(x, -EINVAL, "malformed <base64>");
        goto out;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = out[i];
        if (c == 0) {
            rc = xml_fail(x, -EINVAL, "<base64> data contains a NUL byte");
            goto out;
        }
        if (c >= 0x80) {
            size_t k = utf8_sequence_length((unsigned char *) out + i,
                                            (unsigned char *) out + len);
            if (!k) {
                rc = xml_fail(x, -EINVAL, "<base64> data is not UTF-8 text");
                goto out;
            }
            i += k - 1;
        }
    }
    *ret_v = value_string_n(out, len);
    rc = 0;
out:
    free(out);
    return rc;
}

static int xml_parse_value(struct xml_parser *x, bool empty,
                           struct value **ret_v);

static int
xml_parse_array(struct xml_parser *x, bool empty, struct value **ret_v)
{
    struct value *arr = NULL;
    struct xml_tag tag;
    bool data_empty;
    int rc;

    if (empty) {
        *ret_v = value_empty_array();
        return 0;
    }
    rc = xml_expect_start(x, EL_DATA, &data_empty);
    if (rc) {
        goto out;
    }
    arr = value_array(0);
    while (!data_empty) {
        const char *at = x->p;
        struct value *item;

        rc = xml_next_tag(x, &tag);
        if (rc) {
            goto out;
        }
        if (tag.kind == TAG_END && tag.el == EL_DATA) {
            break;
        }
        if (tag.kind == TAG_END || tag.el != EL_VALUE) {
            x->p = at;
            rc = xml_fail(x, -EINVAL, "expected <value> or </data>, found "
                          "<%s%s>", xml_tag_kind_text(tag.kind),
                          xml_elements[tag.el].name);
            goto out;
        }
        rc = xml_parse_value(x, tag.kind == TAG_EMPTY, &item);
        if (rc) {
            goto out;
        }
        value_array_append(arr, item);
    }
    rc = xml_expect_end(x, EL_ARRAY);
    if (rc) {
        goto out;
    }
    if (!arr->u.arr.n) {
        value_unref(arr);
        arr = value_empty_array();
    }
    *ret_v = arr;
    arr = NULL;
out:
    value_unref(arr);
    return rc;
}

static int
xml_parse_member(struct xml_parser *x, struct value *st)
{
    const char *name;
    size_t name_len;
    bool empty;
    int rc;

    rc = xml_expect_start(x, EL_NAME, &empty);
    if (rc) {
        goto out;
    }
    rc = xml_read_content(x, EL_NAME, empty, &name, &name_len);
    if (rc) {
        goto out;
    }
    /* The name may live in the scratch buffer, which parsing the value
     * reuses, so the member is added now and its value filled in after;
     * on failure the caller frees the struct, NULL value and all. */
    value_struct_put_n(st, name, name_len, NULL);
    rc = xml_expect_start(x, EL_VALUE, &empty);
    if (rc) {
        goto out;
    }
    rc = xml_parse_value(x, empty, &st->u.st.m[st->u.st.n - 1].v);
    if (rc) {
        goto out;
    }
    rc = xml_expect_end(x, EL_MEMBER);
out:
    return rc;
}

static int
xml_parse_struct(struct xml_parser *x, bool empty, struct value **ret_v)
{
    struct value *st = NULL;
    struct xml_tag tag;
    int rc;

    if (empty) {
        *ret_v = value_empty_struct();
        return 0;
    }
    st = value_struct(0);
    for (;;) {
        const char *at = x->p;

        rc = xml_next_tag(x, &tag);
        if (rc) {
            goto out;
        }
        if (tag.kind == TAG_END && tag.el == EL_STRUCT) {
            break;
        }
        if (tag.kind != TAG_START || tag.el != EL_MEMBER) {
            x->p = at;
            rc = xml_fail(x, -EINVAL, "expected <member> or </struct>, "
                          "found <%s%s>", xml_tag_kind_text(tag.kind),
                          xml_elements[tag.el].name);
            goto out;
        }
        rc = xml_parse_member(x, st);
        if (rc) {
            goto out;
        }
    }
    if (!st->u.st.n) {
        value_unref(st);
        st = value_empty_struct();
    } else {
        value_struct_drop_duplicates(st);
    }
    *ret_v = st;
    st = NULL;
    rc = 0;
out:
    value_unref(st);
    return rc;
}

/* Parses the typed element el inside a <value>, its start tag consumed. */
static int
xml_parse_typed(struct xml_parser *x, enum xml_element el, bool empty,
                struct value **ret_v)
{
    const char *s = "";
    size_t n = 0;
    int64_t i;
    char *text;
    int rc;

    switch (el) {
    case EL_ARRAY:
    case EL_STRUCT:
        if (++x->depth > x->max_depth) {
            return xml_fail(x, -E2BIG, "nesting deeper than %zu",
                            x->max_depth);
        }
        rc = (el == EL_ARRAY ? xml_parse_array : xml_parse_struct)(x, empty,
                                                                  ret_v);
        x->depth--;
        return rc;
    case EL_NIL:
        if (!empty) {
            rc = xml_expect_end(x, EL_NIL);
            if (rc) {
                return rc;
            }
        }
        *ret_v = value_nil();
        return 0;
    case EL_STRING:
    case EL_I4:
    case EL_INT:
    case EL_I8:
    case EL_BOOLEAN:
    case EL_DOUBLE:
    case EL_DATETIME:
    case EL_BASE64:
        break;
    default:
        return xml_fail(x, -EINVAL, "<%s> is not allowed inside <value>",
                        xml_elements[el].name);
    }

    rc = xml_read_content(x, el, empty, &s, &n);
    if (rc) {
        return rc;
    }
    if (el == EL_STRING) {
        *ret_v = value_string_n(s, n);
        return 0;
    }
    if (el == EL_BASE64) {
        return xml_parse_base64(x, s, n, ret_v);
    }
    xml_trim(&s, &n);
    switch (el) {
    case EL_I4:
    case EL_INT:
        if (!parse_decimal(s, n, INT32_MIN, INT32_MAX, &i)) {
            return xml_fail(x, -EINVAL, "malformed or out-of-range <%s>",
                            xml_elements[el].name);
        }
        *ret_v = value_int(i);
        return 0;
    case EL_I8:
        if (!parse_decimal(s, n, INT64_MIN, INT64_MAX, &i)) {
            return xml_fail(x, -EINVAL, "malformed or out-of-range <i8>");
        }
        *ret_v = value_int(i);
        return 0;
    case EL_BOOLEAN:
        if (n != 1 || (s[0] != '0' && s[0] != '1')) {
            return xml_fail(x, -EINVAL, "<boolean> must be 0 or 1");
        }
        *ret_v = value_bool(s[0] == '1');
        return 0;
    case EL_DOUBLE:
        return xml_parse_double(x, s, n, ret_v);
    case EL_DATETIME:
        text = xmemdup0(s, n);
        *ret_v = value_datetime(text);
        free(text);
        return 0;
    default:
        break;
    }
    return xml_fail(x, -EINVAL, "internal error: unhandled <%s>",
                    xml_elements[el].name);
}

/* Parses a value whose <value> start tag has been consumed: either text
 * (a string, XenAPI's usual form) or one typed element, then </value>. */
static int
xml_parse_value(struct xml_parser *x, bool empty, struct value **ret_v)
{
    struct value *v = NULL;
    struct xml_tag tag;
    const char *s, *at;
    size_t n;
    int rc;

    if (++x->items > x->lim->max_items) {
        rc = xml_fail(x, -E2BIG, "more than %zu values", x->lim->max_items);
        goto out;
    }
    if (empty) {
        *ret_v = value_empty_string();
        rc = 0;
        goto out;
    }
    rc = xml_read_text(x, &s, &n);
    if (rc) {
        goto out;
    }
    at = x->p;
    rc = xml_read_tag(x, &tag);
    if (rc) {
        goto out;
    }
    if (tag.kind == TAG_END) {
        if (tag.el != EL_VALUE) {
            x->p = at;
            rc = xml_fail(x, -EINVAL, "expected </value>, found </%s>",
                          xml_elements[tag.el].name);
            goto out;
        }
        *ret_v = value_string_n(s, n);
        goto out;
    }
    for (size_t k = 0; k < n; k++) {
        if (!xml_is_space(s[k])) {
            x->p = at;
            rc = xml_fail(x, -EINVAL, "text mixed with <%s> in <value>",
                          xml_elements[tag.el].name);
            goto out;
        }
    }
    rc = xml_parse_typed(x, tag.el, tag.kind == TAG_EMPTY, &v);
    if (rc) {
        goto out;
    }
    rc = xml_expect_end(x, EL_VALUE);
    if (rc) {
        goto out;
    }
    *ret_v = v;
    v = NULL;
out:
    value_unref(v);
    return rc;
}

static int
xml_parser_init(struct xml_parser *x, const char *buf, size_t len,
                const struct codec_limits *lim)
{
    memset(x, 0, sizeof *x);
    x->start = x->p = buf ? buf : "";
    x->end = x->p + (buf ? len : 0);
    x->lim = lim ? lim : &codec_default_limits;
    x->max_depth = MIN(x->lim->max_depth, XML_DEPTH_CAP);
    if (len > x->lim->max_input) {
        return xml_fail(x, -E2BIG, "input larger than %zu bytes",
                        x->lim->max_input);
    }
    if (xml_at(x, "\xef\xbb\xbf", 3)) {
        x->p += 3;              /* a UTF-8 byte order mark */
    }
    return 0;
}

static int
xml_finish(struct xml_parser *x, enum xml_element top)
{
    int rc = xml_skip_misc(x);

    if (!rc && x->p != x->end) {
        rc = xml_fail(x, -EINVAL, "trailing data after </%s>",
                      xml_elements[top].name);
    }
    return rc;
}

static void
xml_parser_destroy(struct xml_parser *x, int rc, char **ret_err)
{
    if (rc && ret_err) {
        *ret_err = x->err ? x->err : xstrdup("XML-RPC parse error");
        x->err = NULL;
    }
    free(x->err);
    ds_destroy(&x->scratch);
}

int
xmlrpc_parse_call(const char *buf, size_t len,
                  const struct codec_limits *lim, char **ret_method,
                  struct value **ret_params, char **ret_err)
{
    struct value *params = NULL;
    struct xml_parser x;
    char *method = NULL;
    struct xml_tag tag;
    const char *s;
    size_t n;
    bool empty;
    int rc;

    rc = xml_parser_init(&x, buf, len, lim);
    if (rc) {
        goto out;
    }
    rc = xml_expect_start(&x, EL_METHOD_CALL, &empty);
    if (rc) {
        goto out;
    }
    if (empty) {
        rc = xml_fail(&x, -EINVAL, "<methodCall> has no <methodName>");
        goto out;
    }
    rc = xml_expect_start(&x, EL_METHOD_NAME, &empty);
    if (rc) {
        goto out;
    }
    rc = xml_read_content(&x, EL_METHOD_NAME, empty, &s, &n);
    if (rc) {
        goto out;
    }
    xml_trim(&s, &n);
    if (!n) {
        rc = xml_fail(&x, -EINVAL, "empty <methodName>");
        goto out;
    }
    method = xmemdup0(s, n);

    params = value_array(0);
    rc = xml_next_tag(&x, &tag);
    if (rc) {
        goto out;
    }
    if (tag.kind == TAG_START && tag.el == EL_PARAMS) {
        for (;;) {
            struct value *v;

            rc = xml_next_tag(&x, &tag);
            if (rc) {
                goto out;
            }
            if (tag.kind == TAG_END && tag.el == EL_PARAMS) {
                break;
            }
            if (tag.kind != TAG_START || tag.el != EL_PARAM) {
                rc = xml_fail(&x, -EINVAL, "expected <param> or </params>");
                goto out;
            }
            rc = xml_expect_start(&x, EL_VALUE, &empty);
            if (rc) {
                goto out;
            }
            rc = xml_parse_value(&x, empty, &v);
            if (rc) {
                goto out;
            }
            value_array_append(params, v);
            rc = xml_expect_end(&x, EL_PARAM);
            if (rc) {
                goto out;
            }
        }
        rc = xml_expect_end(&x, EL_METHOD_CALL);
    } else if (tag.kind == TAG_EMPTY && tag.el == EL_PARAMS) {
        rc = xml_expect_end(&x, EL_METHOD_CALL);
    } else if (tag.kind != TAG_END || tag.el != EL_METHOD_CALL) {
        rc = xml_fail(&x, -EINVAL, "expected <params> or </methodCall>");
    }
    if (rc) {
        goto out;
    }
    rc = xml_finish(&x, EL_METHOD_CALL);
    if (rc) {
        goto out;
    }
    *ret_method = method;
    method = NULL;
    *ret_params = params;
    params = NULL;
out:
    xml_parser_destroy(&x, rc, ret_err);
    free(method);
    value_unref(params);
    return rc;
}

int
xmlrpc_parse_response(const char *buf, size_t len,
                      const struct codec_limits *lim,
                      struct value **ret_value, bool *ret_fault,
                      char **ret_err)
{
    struct value *v = NULL;
    struct xml_parser x;
    struct xml_tag tag;
    bool empty, fault;
    int rc;

    rc = xml_parser_init(&x, buf, len, lim);
    if (rc) {
        goto out;
    }
    rc = xml_expect_start(&x, EL_METHOD_RESPONSE, &empty);
    if (rc) {
        goto out;
    }
    if (empty) {
        rc = xml_fail(&x, -EINVAL, "empty <methodResponse>");
        goto out;
    }
    rc = xml_next_tag(&x, &tag);
    if (rc) {
        goto out;
    }
    if (tag.kind == TAG_START && tag.el == EL_PARAMS) {
        fault = false;
        rc = xml_expect_start(&x, EL_PARAM, &empty);
        if (!rc && empty) {
            rc = xml_fail(&x, -EINVAL, "empty <param>");
        }
    } else if (tag.kind == TAG_START && tag.el == EL_FAULT) {
        fault = true;
    } else {
        rc = xml_fail(&x, -EINVAL, "expected <params> or <fault>");
    }
    if (rc) {
        goto out;
    }
    rc = xml_expect_start(&x, EL_VALUE, &empty);
    if (rc) {
        goto out;
    }
    rc = xml_parse_value(&x, empty, &v);
    if (rc) {
        goto out;
    }
    if (fault) {
        if (v->type != VALUE_STRUCT) {
            rc = xml_fail(&x, -EINVAL, "<fault> does not hold a struct");
            goto out;
        }
        rc = xml_expect_end(&x, EL_FAULT);
    } else {
        rc = xml_expect_end(&x, EL_PARAM);
        if (!rc) {
            rc = xml_expect_end(&x, EL_PARAMS);
        }
    }
    if (!rc) {
        rc = xml_expect_end(&x, EL_METHOD_RESPONSE);
    }
    if (!rc) {
        rc = xml_finish(&x, EL_METHOD_RESPONSE);
    }
    if (rc) {
        goto out;
    }
    *ret_value = v;
    v = NULL;
    *ret_fault = fault;
out:
    xml_parser_destroy(&x, rc, ret_err);
    value_unref(v);
    return rc;
}

/* ---- Encoder ----
 *
 * A get_all_records answer for 10,000 VMs is some 60 MB of XML, written
 * while the client waits, so the writer avoids per-byte work: it reserves
 * room in the struct ds for a whole member or scalar at a time (the worst
 * case, with every byte escaped), then writes through a local pointer with
 * no further checks, and scans for characters to escape a word at a time.
 * The NUL terminator is added once, when a public function returns. */

/* Strings longer than this are written in pieces rather than reserving
 * five times their length up front. */
#define XML_INLINE_STRING_MAX 65536

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
out_put(struct ds *out, const char *s, size_t n)
{
    out_commit(out, put_bytes(out_room(out, n), s, n));
}

#define OUT_LITERAL(OUT, LIT) out_put(OUT, LIT, sizeof LIT - 1)

static inline void
out_terminate(struct ds *out)
{
    out_room(out, 0)[0] = '\0';
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

/* Word-at-a-time helpers for the escaping scan: a mask with the top bit
 * set in each byte of w that equals c (exact for the lowest such byte,
 * which is all the scan uses). */
#define BYTES_ONES 0x0101010101010101ULL
#define BYTES_HIGHS 0x8080808080808080ULL

static inline uint64_t
bytes_equal_mask(uint64_t w, unsigned char c)
{
    uint64_t x = w ^ (BYTES_ONES * c);

    return (x - BYTES_ONES) & ~x & BYTES_HIGHS;
}

/* Characters that text content must escape.  '\r' is written as a
 * reference because parsers normalise a literal CR away. */
static const uint8_t xml_needs_escape[256] = {
    ['&'] = 1, ['<'] = 1, ['>'] = 1, ['\r'] = 1,
};

static inline uint64_t
xml_escape_mask(uint64_t w)
{
    return bytes_equal_mask(w, '&') | bytes_equal_mask(w, '<')
           | bytes_equal_mask(w, '>') | bytes_equal_mask(w, '\r');
}

/* Returns the first byte in [p, end) that needs escaping, or end.  Most
 * strings need none, so whole words are checked at once; a string's last
 * few bytes are checked by re-reading its last word, shifted. */
static inline const char *
xml_find_escape(const char *p, const char *end)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const char *start = p;
    uint64_t w, m;

    while (end - p >= 8) {
        memcpy(&w, p, 8);
        m = xml_escape_mask(w);
        if (m) {
            return p + __builtin_ctzll(m) / 8;
        }
        p += 8;
    }
    if (p < end && end - start >= 8) {
        memcpy(&w, end - 8, 8);
        w >>= 8 * (8 - (end - p));
        m = xml_escape_mask(w);
        return m ? p + __builtin_ctzll(m) / 8 : end;
    }
#endif
    while (p < end && !xml_needs_escape[(unsigned char) *p]) {
        p++;
    }
    return p;
}

/* Writes s escaped; needs 5 * n bytes. */
static char *
put_escaped(char *o, const char *s, size_t n)
{
    const char *end = s + n;

    for (;;) {
        const char *p = xml_find_escape(s, end);

        o = put_bytes(o, s, p - s);
        if (p == end) {
            return o;
        }
        switch (*p) {
        case '&': o = PUT_LITERAL(o, "&amp;"); break;
        case '<': o = PUT_LITERAL(o, "&lt;"); break;
        case '>': o = PUT_LITERAL(o, "&gt;"); break;
        default: o = PUT_LITERAL(o, "&#13;"); break;
        }
        s = p + 1;
    }
}

/* Writes s escaped, reserving room piece by piece (for long strings). */
static void
out_put_escaped(struct ds *out, const char *s, size_t n)
{
    while (n) {
        size_t chunk = MIN(n, XML_INLINE_STRING_MAX);
        char *o = out_room(out, 5 * chunk);

        out_commit(out, put_escaped(o, s, chunk));
        s += chunk;
        n -= chunk;
    }
}

static bool
xml_is_scalar(const struct value *v)
{
    return !v || v->type < VALUE_ARRAY;
}

/* Bytes that xml_put_scalar() may write for v, or 0 if v is a string too
 * long to write in one go. */
static size_t
xml_scalar_room(const struct value *v)
{
    if (v && (v->type == VALUE_STRING || v->type == VALUE_DATETIME)) {
        return v->u.str.len <= XML_INLINE_STRING_MAX
               ? 5 * v->u.str.len + 64 : 0;
    }
    return 64;
}

/* Writes the <value> element for a scalar, given xml_scalar_room(v)
 * bytes. */
static char *
xml_put_scalar(char *o, const struct value *v)
{
    char buf[32];

    if (!v) {
        return PUT_LITERAL(o, "<value></value>");
    }
    switch (v->type) {
    case VALUE_NIL:
        /* XenAPI transmits "void" as an empty string. */
        return PUT_LITERAL(o, "<value></value>");
    case VALUE_BOOL:
        return v->u.b ? PUT_LITERAL(o, "<value><boolean>1</boolean></value>")
                      : PUT_LITERAL(o, "<value><boolean>0</boolean></value>");
    case VALUE_INT:
        /* XenAPI's ints are 64-bit, beyond <i4>, so they go as strings. */
        o = PUT_LITERAL(o, "<value>");
        o = put_int(o, v->u.i);
        return PUT_LITERAL(o, "</value>");
    case VALUE_DOUBLE:
        /* %.17g round-trips every finite double.  NaN and infinities
         * have no XML-RPC form; 0 is what a client can at least parse. */
        o = PUT_LITERAL(o, "<value><double>");
        o = put_bytes(o, buf, snprintf(buf, sizeof buf, "%.17g",
                                       isfinite(v->u.d) ? v->u.d : 0.0));
        return PUT_LITERAL(o, "</double></value>");
    case VALUE_STRING:
        o = PUT_LITERAL(o, "<value>");
        o = put_escaped(o, v->u.str.s, v->u.str.len);
        return PUT_LITERAL(o, "</value>");
    case VALUE_DATETIME:
        o = PUT_LITERAL(o, "<value><dateTime.iso8601>");
        o = put_escaped(o, v->u.str.s, v->u.str.len);
        return PUT_LITERAL(o, "</dateTime.iso8601></value>");
    case VALUE_ARRAY:
    case VALUE_STRUCT:
        break;
    }
    return o;
}

static void xml_write(struct ds *out, const struct value *v);

static void
xml_write_struct(struct ds *out, const struct value *v)
{
    OUT_LITERAL(out, "<value><struct>");
    for (size_t i = 0; i < v->u.st.n; i++) {
        const char *name = v->u.st.m[i].name;
        const struct value *mv = v->u.st.m[i].v;
        size_t name_len = strlen(name);
        size_t room = xml_scalar_room(mv);
        char *o;

        if (xml_is_scalar(mv) && room && name_len <= XML_INLINE_STRING_MAX) {
            /* The common case, a record field: one reservation for the
             * whole member. */
            o = out_room(out, 5 * name_len + room + 64);
            o = PUT_LITERAL(o, "<member><name>");
            o = put_escaped(o, name, name_len);
            o = PUT_LITERAL(o, "</name>");
            o = xml_put_scalar(o, mv);
            o = PUT_LITERAL(o, "</member>");
            out_commit(out, o);
        } else {
            OUT_LITERAL(out, "<member><name>");
            out_put_escaped(out, name, name_len);
            OUT_LITERAL(out, "</name>");
            xml_write(out, mv);
            OUT_LITERAL(out, "</member>");
        }
    }
    OUT_LITERAL(out, "</struct></value>");
}

static void
xml_write(struct ds *out, const struct value *v)
{
    size_t room;

    if (!xml_is_scalar(v)) {
        if (v->type == VALUE_STRUCT) {
            xml_write_struct(out, v);
        } else {
            OUT_LITERAL(out, "<value><array><data>");
            for (size_t i = 0; i < v->u.arr.n; i++) {
                xml_write(out, v->u.arr.items[i]);
            }
            OUT_LITERAL(out, "</data></array></value>");
        }
        return;
    }
    room = xml_scalar_room(v);
    if (room) {
        out_commit(out, xml_put_scalar(out_room(out, room), v));
    } else if (v->type == VALUE_STRING) {
        OUT_LITERAL(out, "<value>");
        out_put_escaped(out, v->u.str.s, v->u.str.len);
        OUT_LITERAL(out, "</value>");
    } else {
        OUT_LITERAL(out, "<value><dateTime.iso8601>");
        out_put_escaped(out, v->u.str.s, v->u.str.len);
        OUT_LITERAL(out, "</dateTime.iso8601></value>");
    }
}

void
xmlrpc_write_value(struct ds *out, const struct value *v)
{
    xml_write(out, v);
    out_terminate(out);
}

void
xmlrpc_write_call(struct ds *out, const char *method,
                  const struct value *params)
{
    OUT_LITERAL(out, "<?xml version=\"1.0\"?><methodCall><methodName>");
    out_put_escaped(out, method, strlen(method));
    OUT_LITERAL(out, "</methodName><params>");
    if (params && params->type == VALUE_ARRAY) {
        for (size_t i = 0; i < params->u.arr.n; i++) {
            OUT_LITERAL(out, "<param>");
            xml_write(out, params->u.arr.items[i]);
            OUT_LITERAL(out, "</param>");
        }
    }
    OUT_LITERAL(out, "</params></methodCall>\n");
    out_terminate(out);
}

static void
xml_write_response(struct ds *out, const char *status, const char *field,
                   const struct value *v)
{
    OUT_LITERAL(out, "<?xml version=\"1.0\"?><methodResponse><params><param>"
                "<value><struct><member><name>Status</name><value>");
    out_put(out, status, strlen(status));
    OUT_LITERAL(out, "</value></member><member><name>");
    out_put(out, field, strlen(field));
    OUT_LITERAL(out, "</name>");
    xml_write(out, v);
    OUT_LITERAL(out, "</member></struct></value></param></params>"
                "</methodResponse>\n");
    out_terminate(out);
}

void
xmlrpc_write_success(struct ds *out, const struct value *v)
{
    xml_write_response(out, "Success", "Value", v);
}

void
xmlrpc_write_failure(struct ds *out, const struct value *error)
{
    xml_write_response(out, "Failure", "ErrorDescription", error);
}

void
xmlrpc_write_plain(struct ds *out, const struct value *v)
{
    OUT_LITERAL(out, "<?xml version=\"1.0\"?><methodResponse><params><param>");
    xml_write(out, v);
    OUT_LITERAL(out, "</param></params></methodResponse>\n");
    out_terminate(out);
}
