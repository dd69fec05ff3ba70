/* xapi-audit-verify.c — checks the hash chain of an xapi audit log.
 *
 *   xapi-audit-verify FILE [--host-uuid UUID]
 *
 * Recomputes every record's hash and follows the chain from the genesis of
 * the host (docs/audit-log.md describes the format; xapi/audit.c writes
 * it).  Prints "OK: N records" and the head of the chain, exit status 0;
 * or the first broken record ("record 123 (line 124): hash mismatch:
 * previous record was changed or deleted", "line 57 does not parse"),
 * exit status 1.  Usage or I/O errors exit with status 2.
 *
 * Lines that are not records are accepted only where xapi noted them: a
 * "start" record with reason "damaged-tail" right after them, whose
 * "damaged" member gives their number, size and SHA-256.  A crash can only
 * leave one unterminated line (a torn write), which is reported as a note;
 * any other noted damage means records were changed or lost while xapi was
 * stopped, and fails unless --accept-damage is given (to check the rest of
 * the chain).  Standalone: it needs only lib/ (JSON) and OpenSSL's
 * SHA-256. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "codec.h"
#include "util.h"
#include "value.h"

#define HASH_SUFFIX_LEN (sizeof ",\"hash\":\"" - 1 + 64 + 2)

static void
hex_encode(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void
sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;

    if (!EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL)) {
        fprintf(stderr, "xapi-audit-verify: SHA-256 failed\n");
        exit(2);
    }
    hex_encode(md, 32, out);
}

static bool
is_hex64(const char *s)
{
    if (!s || strlen(s) != 64) {
        return false;
    }
    for (int i = 0; i < 64; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

static void
genesis_hash(const char *host_uuid, char out[65])
{
    char *g = xasprintf("xapi-audit-log genesis host %s", host_uuid);

    sha256_hex(g, strlen(g), out);
    free(g);
}

/* One line that is a well-formed record. */
struct record {
    uint64_t seq;
    char prev[65];
    char hash[65];
    struct value *v;            /* the parsed object */
};

static const char *
get_string(const struct value *v, const char *name)
{
    const struct value *m = value_struct_get(v, name);

    return m && m->type == VALUE_STRING ? m->u.str.s : NULL;
}

static bool
get_int(const struct value *v, const char *name, int64_t *ret)
{
    const struct value *m = value_struct_get(v, name);

    if (!m || m->type != VALUE_INT) {
        return false;
    }
    *ret = m->u.i;
    return true;
}

/* Classifies one line (without its newline).  Returns NULL and fills rec
 * for a record whose own hash is right, or a malloc'd description of what
 * is wrong, with the sequence number in *ret_seq when it could be read. */
static char *
check_line(const char *line, size_t len, struct record *rec,
           int64_t *ret_seq)
{
    const struct codec_limits lim = { len + 1, 64, len + 1, len + 1 };
    const char *suffix;
    struct value *v = NULL;
    char *err = NULL, want[65];
    int64_t seq;

    *ret_seq = -1;
    if (memchr(line, '\0', len)) {
        return xstrdup("does not parse: NUL byte");
    }
    if (json_parse(line, len, &lim, &v, &err)) {
        char *msg = xasprintf("does not parse: %s", err);
        free(err);
        return msg;
    }
    if (v->type != VALUE_STRUCT) {
        value_unref(v);
        return xstrdup("does not parse: not a JSON object");
    }
    if (get_int(v, "seq", &seq) && seq > 0) {
        *ret_seq = seq;
    }
    suffix = len >= HASH_SUFFIX_LEN ? line + len - HASH_SUFFIX_LEN : NULL;
    if (*ret_seq < 0 || !is_hex64(get_string(v, "prev"))
        || !is_hex64(get_string(v, "hash")) || !suffix
        || memcmp(suffix, ",\"hash\":\"", 9) || memcmp(line + len - 2, "\"}", 2)
        || memcmp(suffix + 9, get_string(v, "hash"), 64)) {
        value_unref(v);
        return xstrdup("does not parse as an audit record (seq, prev and a "
                       "last member hash are required)");
    }
    sha256_hex(line, (size_t) (suffix - line), want);
    if (strcmp(want, get_string(v, "hash"))) {
        value_unref(v);
        return xstrdup("hash mismatch: the record was changed");
    }
    rec->seq = (uint64_t) seq;
    snprintf(rec->prev, sizeof rec->prev, "%s", get_string(v, "prev"));
    snprintf(rec->hash, sizeof rec->hash, "%s", get_string(v, "hash"));
    rec->v = v;
    return NULL;
}

/* A run of lines that are not records. */
struct bad_run {
    size_t n_lines;
    size_t bytes;
    size_t first_line;
    char *first_error;
    EVP_MD_CTX *md;
};

static void
bad_run_reset(struct bad_run *b)
{
    free(b->first_error);
    EVP_MD_CTX_free(b->md);
    memset(b, 0, sizeof *b);
}

/* True if rec is xapi's note of exactly the lines in b; *ret_torn tells
 * whether they are one line torn by a crash. */
static bool
notes_damage(const struct record *rec, struct bad_run *b, bool *ret_torn)
{
    const struct value *d = value_struct_get(rec->v, "damaged");
    const char *type = get_string(rec->v, "type");
    const char *reason = get_string(rec->v, "reason");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char hex[65];
    int64_t lines, bytes;

    if (!type || strcmp(type, "start") || !reason
        || strcmp(reason, "damaged-tail") || !d || d->type != VALUE_STRUCT
        || !get_int(d, "lines", &lines) || !get_int(d, "bytes", &bytes)
        || !get_string(d, "sha256")) {
        return false;
    }
    if (!EVP_DigestFinal_ex(b->md, md, &md_len)) {
        return false;
    }
    hex_encode(md, 32, hex);
    {
        const struct value *torn = value_struct_get(d, "torn");
        *ret_torn = lines == 1 && torn && torn->type == VALUE_BOOL
                    && torn->u.b;
    }
    return (size_t) lines == b->n_lines && (size_t) bytes == b->bytes
           && !strcmp(hex, get_string(d, "sha256"));
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: xapi-audit-verify FILE [--host-uuid UUID] "
            "[--accept-damage]\n"
            "Checks the hash chain of an xapi audit log (STATE_DIR/audit.log)."
            "\n");
}

int
main(int argc, char *argv[])
{
    static const struct option longopts[] = {
        { "host-uuid", required_argument, NULL, 'u' },
        { "accept-damage", no_argument, NULL, 'a' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *path = NULL, *host_uuid = NULL;
    struct bad_run bad = { 0 };
    struct ds notes = DS_EMPTY;
    char expect_prev[65] = "", *line = NULL;
    uint64_t expect_seq = 1;
    size_t cap = 0, lineno = 0, n_records = 0;
    bool have_genesis = false, accept_damage = false;
    ssize_t n;
    FILE *f;
    int c, rc = 1;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'u':
            host_uuid = optarg;
            break;
        case 'a':
            accept_damage = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    path = argv[optind];
    f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "xapi-audit-verify: %s: %s\n", path, strerror(errno));
        return 2;
    }
    if (host_uuid) {
        genesis_hash(host_uuid, expect_prev);
        have_genesis = true;
    }

    while ((n = getline(&line, &cap, f)) > 0) {
        struct record rec = { 0 };
        bool torn = line[n - 1] != '\n';
        size_t len = torn ? (size_t) n : (size_t) n - 1;
        int64_t seq = -1;
        char *err;

        lineno++;
        err = torn ? xstrdup("does not parse: incomplete last line (a write "
                             "cut short by a crash; xapi notes it at its next "
                             "start)")
                   : check_line(line, len, &rec, &seq);
        if (err) {
            if (!bad.n_lines) {
                bad.first_line = lineno;
                bad.first_error = torn || seq < 0
                    ? xasprintf("line %zu %s", lineno, err)
                    : xasprintf("record %lld (line %zu): %s", (long long) seq,
                                lineno, err);
                bad.md = EVP_MD_CTX_new();
                if (!bad.md || !EVP_DigestInit_ex(bad.md, EVP_sha256(), NULL)) {
                    fprintf(stderr, "xapi-audit-verify: SHA-256 failed\n");
                    return 2;
                }
            }
            bad.n_lines++;
            bad.bytes += len + 1;
            EVP_DigestUpdate(bad.md, line, len);
            EVP_DigestUpdate(bad.md, "\n", 1);
            free(err);
            continue;
        }
        if (bad.n_lines) {
            struct ds what = DS_EMPTY;
            bool crash = false;
            if (!notes_damage(&rec, &bad, &crash)) {
                printf("%s\n", bad.first_error);
                value_unref(rec.v);
                goto out;
            }
            if (bad.n_lines == 1) {
                ds_put_fmt(&what, "line %zu is not a record", bad.first_line);
            } else {
                ds_put_fmt(&what, "lines %zu-%zu are not records",
                           bad.first_line, bad.first_line + bad.n_lines - 1);
            }
            ds_put_fmt(&what, " (noted by xapi in record %llu (line %zu))",
                       (unsigned long long) rec.seq, lineno);
            if (crash) {
                ds_put_fmt(&notes, "note: %s: a write torn by a crash\n",
                           ds_cstr(&what));
            } else if (accept_damage) {
                ds_put_fmt(&notes, "note: %s: damage accepted\n",
                           ds_cstr(&what));
            } else {
                printf("%s: %s: not a write torn by a crash, so records were "
                       "changed or lost while xapi was stopped "
                       "(--accept-damage checks the rest)\n",
                       bad.first_error, ds_cstr(&what));
                ds_destroy(&what);
                value_unref(rec.v);
                goto out;
            }
            ds_destroy(&what);
            bad_run_reset(&bad);
        }
        if (rec.seq != expect_seq) {
            printf("record %llu (line %zu): sequence number %llu where %llu "
                   "was expected: %s\n", (unsigned long long) rec.seq, lineno,
                   (unsigned long long) rec.seq,
                   (unsigned long long) expect_seq,
                   rec.seq > expect_seq ? "records were deleted"
                                        : "records were moved or inserted");
            value_unref(rec.v);
            goto out;
        }
        if (!have_genesis) {
            const char *host = get_string(rec.v, "host");
            if (!host) {
                printf("record %llu (line %zu): the first record names no "
                       "host; give --host-uuid\n",
                       (unsigned long long) rec.seq, lineno);
                value_unref(rec.v);
                goto out;
            }
            genesis_hash(host, expect_prev);
            have_genesis = true;
        }
        if (strcmp(rec.prev, expect_prev)) {
            if (rec.seq == 1) {
                printf("record 1 (line %zu): hash mismatch: the chain does "
                       "not start at the genesis of host %s (wrong host, or "
                       "the first records were replaced)\n", lineno,
                       host_uuid ? host_uuid : "named in the record");
            } else {
                printf("record %llu (line %zu): hash mismatch: previous "
                       "record was changed or deleted\n",
                       (unsigned long long) rec.seq, lineno);
            }
            value_unref(rec.v);
            goto out;
        }
        memcpy(expect_prev, rec.hash, sizeof expect_prev);
        expect_seq = rec.seq + 1;
        n_records++;
        value_unref(rec.v);
    }
    if (ferror(f)) {
        fprintf(stderr, "xapi-audit-verify: %s: %s\n", path, strerror(errno));
        rc = 2;
        goto out;
    }
    if (bad.n_lines) {
        printf("%s\n", bad.first_error);
        goto out;
    }
    printf("OK: %zu records\n", n_records);
    if (n_records) {
        printf("head: record %llu, hash %s\n",
               (unsigned long long) (expect_seq - 1), expect_prev);
    }
    fputs(ds_cstr(&notes), stdout);
    rc = 0;
out:
    bad_run_reset(&bad);
    ds_destroy(&notes);
    free(line);
    fclose(f);
    return rc;
}
