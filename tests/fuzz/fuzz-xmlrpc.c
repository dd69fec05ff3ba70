/* fuzz-xmlrpc.c — libFuzzer target for the XML-RPC decoder and encoder
 * (lib/xmlrpc.c), which see every XML-RPC request from the network.
 *
 * Each input is parsed as a <methodCall> and as a <methodResponse>.  A
 * parse that fails must say why and leave its outputs alone.  A parse that
 * succeeds is written out again and re-parsed: the second parse must
 * succeed and give the same value, allowing for the two changes XenAPI's
 * encoding makes on purpose (ints travel as strings, nil as an empty
 * string), and writing that value again must give the same bytes.
 * Sanitizers check memory.  Seeds live in tests/fuzz/corpus/xmlrpc/.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -I... \
 *        tests/fuzz/fuzz-xmlrpc.c lib/xmlrpc.c lib/value.c lib/util.c */
#include <config.h>
#include "codec.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
require(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz-xmlrpc: %s\n", what);
        abort();
    }
}

/* What an XML-RPC round trip makes of v. */
static struct value *
normalise(const struct value *v)
{
    struct value *c;

    switch (v->type) {
    case VALUE_INT:
        return value_stringf("%lld", (long long) v->u.i);
    case VALUE_NIL:
        return value_empty_string();
    case VALUE_ARRAY:
        c = value_array(v->u.arr.n);
        for (size_t i = 0; i < v->u.arr.n; i++) {
            value_array_append(c, normalise(v->u.arr.items[i]));
        }
        return c;
    case VALUE_STRUCT:
        c = value_struct(v->u.st.n);
        for (size_t i = 0; i < v->u.st.n; i++) {
            value_struct_put(c, v->u.st.m[i].name,
                             normalise(v->u.st.m[i].v));
        }
        return c;
    default:
        return value_clone(v);
    }
}

static void
require_same(const struct value *first, const struct value *second)
{
    struct value *expected = normalise(first);

    require(value_equal(expected, second), "round trip changed the value");
    value_unref(expected);
}

/* Limits for re-parsing our own output: escaping may make it larger than
 * the input was, nothing else may grow. */
static struct codec_limits
reparse_limits(const struct codec_limits *lim)
{
    struct codec_limits l = *lim;

    l.max_input = SIZE_MAX;
    return l;
}

static void
fuzz_call(const char *buf, size_t len, const struct codec_limits *lim)
{
    struct codec_limits relaxed = reparse_limits(lim);
    struct value *params = (struct value *) 1, *params2 = NULL;
    char *method = (char *) 1, *method2 = NULL, *err = NULL;
    struct ds out = DS_EMPTY, out2 = DS_EMPTY;
    int rc;

    rc = xmlrpc_parse_call(buf, len, lim, &method, &params, &err);
    if (rc) {
        require(rc == -EINVAL || rc == -E2BIG, "unexpected error code");
        require(err && *err, "error without a message");
        require(method == (char *) 1 && params == (struct value *) 1,
                "outputs written on failure");
        free(err);
        return;
    }
    require(!err, "message on success");
    require(params && params->type == VALUE_ARRAY, "params not an array");

    xmlrpc_write_call(&out, method, params);
    require(strlen(out.s) == out.len, "output length or NUL wrong");
    rc = xmlrpc_parse_call(out.s, out.len, &relaxed, &method2, &params2,
                           &err);
    if (rc) {
        fprintf(stderr, "re-parse failed: %s\n%s\n", err, out.s);
    }
    require(rc == 0, "re-parsing a written call failed");
    require(!strcmp(method, method2), "method name changed");
    require_same(params, params2);

    xmlrpc_write_call(&out2, method2, params2);
    require(out.len == out2.len && !memcmp(out.s, out2.s, out.len),
            "writing the re-parsed call gave different bytes");

    free(method);
    free(method2);
    value_unref(params);
    value_unref(params2);
    ds_destroy(&out);
    ds_destroy(&out2);
}

static void
check_response(const struct ds *out, const struct codec_limits *lim,
               const struct value *expected_inner, const char *status,
               const char *field)
{
    struct value *v = NULL;
    bool fault = true;
    char *err = NULL;
    int rc = xmlrpc_parse_response(out->s, out->len, lim, &v, &fault, &err);

    if (rc) {
        fprintf(stderr, "re-parse failed: %s\n%s\n", err, out->s);
    }
    require(rc == 0, "re-parsing a written response failed");
    require(!fault, "written response parsed as a fault");
    if (status) {
        require(v->type == VALUE_STRUCT && v->u.st.n == 2,
                "envelope is not a two-member struct");
        require(!strcmp(value_struct_get_string(v, "Status"), status),
                "envelope status changed");
        require_same(expected_inner, value_struct_get(v, field));
    } else {
        require_same(expected_inner, v);
    }
    value_unref(v);
}

static void
fuzz_response(const char *buf, size_t len, const struct codec_limits *lim)
{
    struct codec_limits relaxed = reparse_limits(lim);
    struct value *v = (struct value *) 1;
    struct ds out = DS_EMPTY;
    bool fault = false;
    char *err = NULL;
    int rc;

    rc = xmlrpc_parse_response(buf, len, lim, &v, &fault, &err);
    if (rc) {
        require(rc == -EINVAL || rc == -E2BIG, "unexpected error code");
        require(err && *err, "error without a message");
        require(v == (struct value *) 1, "output written on failure");
        free(err);
        return;
    }
    require(!err, "message on success");
    require(!fault || v->type == VALUE_STRUCT, "fault is not a struct");

    xmlrpc_write_plain(&out, v);
    check_response(&out, &relaxed, v, NULL, NULL);
    ds_clear(&out);
    xmlrpc_write_success(&out, v);
    check_response(&out, &relaxed, v, "Success", "Value");
    ds_clear(&out);
    xmlrpc_write_failure(&out, v);
    check_response(&out, &relaxed, v, "Failure", "ErrorDescription");

    value_unref(v);
    ds_destroy(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct codec_limits lim = codec_default_limits;

    /* Small limits, so that the fuzzer reaches them with small inputs. */
    lim.max_depth = 16;
    lim.max_string = 1000;
    lim.max_items = 2000;
    fuzz_call((const char *) data, size, &lim);
    fuzz_response((const char *) data, size, &lim);
    fuzz_call((const char *) data, size, &codec_default_limits);
    return 0;
}
