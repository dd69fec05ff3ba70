/* fuzz-json.c — libFuzzer target for the JSON parser and writer
 * (lib/json.c), which see every JSON-RPC request from the network.
 *
 * A parse that fails must say why and leave its output alone.  A parse
 * that succeeds is written out and re-parsed: the second parse must
 * succeed and give an equal value, and writing that again must give the
 * same bytes.  Sanitizers check memory.  Seeds live in
 * tests/fuzz/corpus/json/.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -I... \
 *        tests/fuzz/fuzz-json.c lib/json.c lib/value.c lib/util.c */
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
        fprintf(stderr, "fuzz-json: %s\n", what);
        abort();
    }
}

static void
fuzz_one(const char *buf, size_t len, const struct codec_limits *lim)
{
    struct codec_limits relaxed = *lim;
    struct value *v = (struct value *) 1, *v2 = NULL;
    struct ds out = DS_EMPTY, out2 = DS_EMPTY;
    char *err = NULL;
    int rc;

    rc = json_parse(buf, len, lim, &v, &err);
    if (rc) {
        require(rc == -EINVAL || rc == -E2BIG, "unexpected error code");
        require(err && *err, "error without a message");
        require(v == (struct value *) 1, "output written on failure");
        free(err);
        return;
    }
    require(!err, "message on success");

    json_write(&out, v);
    require(strlen(out.s) == out.len, "output length or NUL wrong");
    /* Escaping may make the output larger than the input was. */
    relaxed.max_input = SIZE_MAX;
    rc = json_parse(out.s, out.len, &relaxed, &v2, &err);
    if (rc) {
        fprintf(stderr, "re-parse failed: %s\n%s\n", err, out.s);
    }
    require(rc == 0, "re-parsing written JSON failed");
    require(value_equal(v, v2), "round trip changed the value");

    json_write(&out2, v2);
    require(out.len == out2.len && !memcmp(out.s, out2.s, out.len),
            "writing the re-parsed value gave different bytes");

    value_unref(v);
    value_unref(v2);
    ds_destroy(&out);
    ds_destroy(&out2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Small limits, so that the fuzzer reaches them with small inputs,
     * then the defaults codec.h documents. */
    static const struct codec_limits small = {
        .max_input = 1 << 20,
        .max_depth = 16,
        .max_string = 1000,
        .max_items = 2000,
    };
    static const struct codec_limits defaults = {
        .max_input = 64 * 1024 * 1024,
        .max_depth = 64,
        .max_string = 16 * 1024 * 1024,
        .max_items = 4000000,
    };

    fuzz_one((const char *) data, size, &small);
    fuzz_one((const char *) data, size, &defaults);
    return 0;
}
