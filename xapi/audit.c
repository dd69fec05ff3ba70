/* audit.c — the tamper-evident audit log.
 *
 * Every call that may change something, every login attempt and every
 * read of the log itself becomes one JSON record on one line of
 * STATE_DIR/audit.log.  Each record carries its sequence number, the
 * SHA-256 of the record before it and its own SHA-256, so a record that is
 * changed, deleted, inserted or moved breaks the chain;
 * tools/xapi-audit-verify.c checks a file, docs/audit-log.md describes the
 * format and the guarantees.
 *
 * rpc.c reports calls through api_call_hook (set here), session.c reports
 * logins through audit_login, and rpc.c routes GET /audit_log to
 * audit_http_handler.  Appends are serialized by one mutex and written
 * with one write() each; a call returns only after its record is on disk
 * (fdatasync, shared by the calls that finish together: group commit). */
#include <config.h>
#include "api.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "codec.h"
#include "http.h"

/* A record larger than this keeps a digest of its parameters instead of
 * the parameters themselves, so that one client cannot make the log (and
 * every reader of it) hold a 16 MiB string per call. */
#define MAX_RECORD 65536
/* Results whose JSON form is longer than this are summarized; so are sets
 * and maps of more entries (without encoding them first). */
#define MAX_RESULT 512
#define MAX_RESULT_ITEMS 32
/* Strings outside the parameters (user, name labels, error parameters...)
 * are cut to this many bytes, with a note of their length. */
#define MAX_FIELD 1024
/* At most this many refs of one set parameter are named in "objects". */
#define MAX_SET_OBJECTS 16
/* A GET /audit_log answer stops at a record boundary past this size and
 * tells the client where to continue (X-Audit-Next-Seq). */
#define MAX_RESPONSE (64u * 1024 * 1024)

#define MASK "********"
#define HASH_SUFFIX_LEN (sizeof ",\"hash\":\"" - 1 + 64 + 2)

/* A login reported by session.c, waiting for the call hook of the same
 * call (same thread) to complete it with the parameters and outcome. */
struct pending_login {
    struct pending_login *next;
    pthread_t thread;
    char *user;
    char *originator;
    char *peer;
    bool ok;
};

static struct audit {
    pthread_mutex_t mu;
    pthread_cond_t synced_cv;
    struct xapi *x;
    char *path;
    int fd;                     /* -1 when the log is not open */
    uint64_t seq;               /* of the last record in the file */
    char head[65];              /* its hash (the genesis hash if none) */
    off_t size;                 /* bytes in the file that readers may see */
    bool broken;                /* a write failed: recover before the next */
    uint64_t lost;              /* records that could not be written */
    uint64_t synced_seq;        /* records known to be on disk */
    bool syncing;               /* a thread is in fdatasync */
    bool *reads;                /* per api_messages[] entry: not audited */
    struct pending_login *pending;
} au = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .synced_cv = PTHREAD_COND_INITIALIZER,
    .fd = -1,
};

/* ---- small helpers ---- */

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

    if (!EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL)
        || md_len != 32) {
        xabort("audit: SHA-256 failed");
    }
    hex_encode(md, 32, out);
}

static bool
is_hex64(const char *s)
{
    for (int i = 0; i < 64; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

/* The hash the first record of a host's log chains to. */
static void
genesis_hash(const char *host_uuid, char out[65])
{
    char *g = xasprintf("xapi-audit-log genesis host %s", host_uuid);

    sha256_hex(g, strlen(g), out);
    free(g);
}

/* Session refs are bearer secrets: records name a session by a digest of
 * its ref (XenAPI calls this a trackid), which links the records of one
 * session without letting a reader of the log use it. */
static void
trackid(const char *ref, char out[33])
{
    char h[65];

    sha256_hex(ref, strlen(ref), h);
    memcpy(out, h, 32);
    out[32] = '\0';
}

/* 2024-01-31T23:59:59.123Z; buf holds at least 40 bytes. */
static void
format_time_ms(int64_t ms, char buf[40])
{
    time_t t = (time_t) (ms / 1000);
    struct tm tm;

    if (!gmtime_r(&t, &tm)) {
        memset(&tm, 0, sizeof tm);
        tm.tm_year = 70;
        tm.tm_mday = 1;
    }
    snprintf(buf, 40, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ",
             (unsigned short) (tm.tm_year + 1900),
             (unsigned char) (tm.tm_mon + 1), (unsigned char) tm.tm_mday,
             (unsigned char) tm.tm_hour, (unsigned char) tm.tm_min,
             (unsigned char) tm.tm_sec, (unsigned short) (ms % 1000));
}

/* Parses an ISO 8601 time (or XenAPI's 20240131T23:59:59Z form), keeping
 * milliseconds. */
static int
parse_time_ms(const char *s, int64_t *ret_ms)
{
    const char *t = strpbrk(s, "Tt "), *dot;
    int64_t secs, ms = 0;

    if (time_parse_xenapi(s, &secs)) {
        return -EINVAL;
    }
    dot = t ? strchr(t, '.') : NULL;
    if (dot) {
        int scale = 100;
        for (const char *p = dot + 1; *p >= '0' && *p <= '9'; p++) {
            ms += (*p - '0') * scale;
            scale /= 10;
        }
    }
    *ret_ms = secs * 1000 + ms;
    return 0;
}

/* Parameters and map keys whose values are secrets. */
static bool
is_sensitive_name(const char *name)
{
    static const char *const exact[] = { "pass" };
    static const char *const parts[] = {
        "pwd", "passwd", "password", "passphrase", "secret", "private_key",
    };

    for (size_t i = 0; i < ARRAY_SIZE(exact); i++) {
        if (!strcasecmp(name, exact[i])) {
            return true;
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(parts); i++) {
        if (strcasestr(name, parts[i])) {
            return true;
        }
    }
    return false;
}

/* How values are written into a record. */
#define MAX_SECRETS 16
struct mask {
    const char *session_ref;    /* replaced by its trackid, or NULL */
    bool secret_value;          /* a parameter or member "value" is secret
                                   (the secret class; add_to_<map> with a
                                   secret key) */
    size_t max_string;          /* cut longer strings (0: never) */
    /* The secrets among the call's arguments: wherever else they appear
     * (an error that quotes a parameter, a result) they are masked too. */
    const char *secrets[MAX_SECRETS];
    size_t n_secrets;
};

/* The length of the longest prefix of s[0..n) of at most max bytes that
 * ends on a UTF-8 character boundary. */
static size_t
utf8_prefix(const char *s, size_t n, size_t max)
{
    if (n <= max) {
        return n;
    }
    while (max && ((unsigned char) s[max] & 0xc0) == 0x80) {
        max--;
    }
    return max;
}

/* Writes s as a JSON string, cut to max bytes (0: whole) with a note of
 * its length. */
static void
put_json_capped(struct ds *out, const char *s, size_t len, size_t max)
{
    struct ds t = DS_EMPTY;

    if (!max || len <= max) {
        ds_put_json_string(out, s, len);
        return;
    }
    ds_put(&t, s, utf8_prefix(s, len, max));
    ds_put_fmt(&t, "...[%zu bytes]", len);
    ds_put_json_string(out, t.s, t.len);
    ds_destroy(&t);
}

static void
put_trackid(struct ds *out, const char *ref)
{
    char t[33];

    trackid(ref, t);
    ds_put_fmt(out, "\"trackid:%s\"", t);
}

/* Writes v as JSON, masking the values of sensitive struct members and
 * replacing the caller's session ref by its trackid. */
static void
put_masked(struct ds *out, const struct value *v, const struct mask *mk)
{
    switch (v->type) {
    case VALUE_NIL:
        ds_put_cstr(out, "null");
        break;
    case VALUE_BOOL:
        ds_put_cstr(out, v->u.b ? "true" : "false");
        break;
    case VALUE_INT:
        ds_put_int(out, v->u.i);
        break;
    case VALUE_DOUBLE:
        if (isfinite(v->u.d)) {
            ds_put_fmt(out, "%.17g", v->u.d);
        } else {
            ds_put_cstr(out, "null");
        }
        break;
    case VALUE_STRING:
        for (size_t i = 0; i < mk->n_secrets; i++) {
            if (!strcmp(v->u.str.s, mk->secrets[i])) {
                ds_put_cstr(out, "\"" MASK "\"");
                return;
            }
        }
        if (mk->session_ref && !strcmp(v->u.str.s, mk->session_ref)) {
            put_trackid(out, v->u.str.s);
        } else {
            put_json_capped(out, v->u.str.s, v->u.str.len, mk->max_string);
        }
        break;
    case VALUE_DATETIME:
        ds_put_json_string(out, v->u.str.s, v->u.str.len);
        break;
    case VALUE_ARRAY:
        ds_put_char(out, '[');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i) {
                ds_put_char(out, ',');
            }
            put_masked(out, v->u.arr.items[i], mk);
        }
        ds_put_char(out, ']');
        break;
    case VALUE_STRUCT:
        ds_put_char(out, '{');
        for (size_t i = 0; i < v->u.st.n; i++) {
            const char *name = v->u.st.m[i].name;
            if (i) {
                ds_put_char(out, ',');
            }
            ds_put_json_string(out, name, strlen(name));
            ds_put_char(out, ':');
            if (is_sensitive_name(name)
                || (mk->secret_value && !strcmp(name, "value"))) {
                ds_put_cstr(out, "\"" MASK "\"");
            } else {
                put_masked(out, v->u.st.m[i].v, mk);
            }
        }
        ds_put_char(out, '}');
        break;
    }
}

static void
put_member_string(struct ds *out, const char *name, const char *s)
{
    ds_put_fmt(out, ",\"%s\":", name);
    if (s) {
        put_json_capped(out, s, strlen(s), MAX_FIELD);
    } else {
        ds_put_cstr(out, "null");
    }
}

/* ---- which calls are audited ---- */

/* Pure reads are not audited: the generated readers, and hand-written
 * messages named as queries.  Everything else is, even when it fails: an
 * attempt to change something is worth a record too. */
static bool
message_is_read(const struct api_message *m)
{
    static const char *const read_prefixes[] = {
        "get_", "assert_", "query_", "compute_", "has_", "list_",
        "retrieve_",
    };

    switch (m->kind) {
    case MSG_GET:
    case MSG_GET_RECORD:
    case MSG_GET_ALL:
    case MSG_GET_ALL_RECORDS:
    case MSG_GET_ALL_RECORDS_WHERE:
    case MSG_GET_BY_UUID:
    case MSG_GET_BY_NAME_LABEL:
        return true;
    case MSG_CUSTOM:
        break;
    default:
        return false;
    }
    if (!strcmp(m->name, "event.from") || !strcmp(m->name, "event.next")) {
        return true;
    }
    for (size_t i = 0; i < ARRAY_SIZE(read_prefixes); i++) {
        if (str_starts_with(m->short_name, read_prefixes[i])) {
            return true;
        }
    }
    return false;
}

static bool
message_is_login(const struct api_message *m)
{
    return str_starts_with(m->name, "session.") && strstr(m->name, "login")
           && !strstr(m->name, "logout");
}

/* ---- the file ---- */

/* Writes all of buf with one write() (retried only when nothing was
 * written, as after EINTR).  Returns 0 or -errno; -EIO for a short write,
 * which leaves a torn line behind. */
static int
write_once(int fd, const char *buf, size_t len)
{
    ssize_t r;

    do {
        r = write(fd, buf, len);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        return -errno;
    }
    return (size_t) r == len ? 0 : -EIO;
}

/* True if line (without its newline) is a whole record: it ends with
 * ,"hash":"<64 hex>"} over the SHA-256 of what precedes that member,
 * starts with {"seq":N,"prev":"<64 hex>", and is a JSON object. */
static bool
record_valid(const char *line, size_t len, uint64_t *ret_seq,
             char ret_hash[65])
{
    const char *suffix, *p;
    char want[65];
    uint64_t seq = 0;
    struct value *v = NULL;
    char *err = NULL;
    bool ok;

    if (len < HASH_SUFFIX_LEN + 16 || line[0] != '{') {
        return false;
    }
    suffix = line + len - HASH_SUFFIX_LEN;
    if (memcmp(suffix, ",\"hash\":\"", 9) || !is_hex64(suffix + 9)
        || memcmp(suffix + 73, "\"}", 2)) {
        return false;
    }
    if (memcmp(line, "{\"seq\":", 7)) {
        return false;
    }
    for (p = line + 7; p < suffix && *p >= '0' && *p <= '9'; p++) {
        if (seq > (UINT64_MAX - 9) / 10) {
            return false;
        }
        seq = seq * 10 + (uint64_t) (*p - '0');
    }
    if (p == line + 7 || suffix - p < 10 + 64 || memcmp(p, ",\"prev\":\"", 9)
        || !is_hex64(p + 9) || p[73] != '"') {
        return false;
    }
    sha256_hex(line, suffix - line, want);
    if (memcmp(want, suffix + 9, 64)) {
        return false;
    }
    ok = !json_parse(line, len, &(struct codec_limits) { len + 1, 64, len + 1,
                                                         len + 1 },
                     &v, &err) && v->type == VALUE_STRUCT;
    value_unref(v);
    free(err);
    if (ok) {
        *ret_seq = seq;
        memcpy(ret_hash, suffix + 9, 64);
        ret_hash[64] = '\0';
    }
    return ok;
}

/* Appends one record of the given type: the chain members, then members
 * (JSON text starting with ',' or empty), then the record's own hash.
 * Called with au.mu held; returns with it held.  On success *ret_seq is the
 * record's sequence number. */
static int append_locked(const char *type, const char *members,
                         uint64_t *ret_seq);

/* Looks at the end of the file: finds the last whole record (the anchor
 * of the chain) and the lines after it that are not records (a line torn
 * by a crash, or damage), so that a new record can continue the chain and
 * say what it found.  Called with au.mu held. */
static int
recover_locked(const char *reason_if_clean)
{
    struct stat st;
    char *data = NULL;
    size_t size, pos, damaged_from = 0, n_bad = 0;
    uint64_t anchor_seq = 0;
    char anchor_hash[65];
    bool torn = false, found = false;
    struct ds m = DS_EMPTY;
    int rc;

    genesis_hash(au.x->host_uuid, anchor_hash);
    if (fstat(au.fd, &st)) {
        return -errno;
    }
    size = (size_t) st.st_size;
    if (size) {
        data = mmap(NULL, size, PROT_READ, MAP_SHARED, au.fd, 0);
        if (data == MAP_FAILED) {
            return -errno;
        }
        torn = data[size - 1] != '\n';
        pos = size;
        while (pos > 0) {
            size_t end = data[pos - 1] == '\n' ? pos - 1 : pos;
            const char *nl = memrchr(data, '\n', end);
            size_t start = nl ? (size_t) (nl - data) + 1 : 0;
            /* An unterminated last line is never a record: a record is
             * written with its newline in one write(). */
            if (!(pos == size && torn)
                && record_valid(data + start, end - start, &anchor_seq,
                                anchor_hash)) {
                found = true;
                damaged_from = pos;
                break;
            }
            n_bad++;
            pos = start;
        }
        if (!found) {
            damaged_from = 0;
        }
    }
    au.seq = anchor_seq;
    au.synced_seq = MIN(au.synced_seq, anchor_seq);
    memcpy(au.head, anchor_hash, sizeof au.head);

    ds_put_fmt(&m, ",\"host\":\"%s\",\"version\":\"%s\",\"pid\":%ld",
               au.x->host_uuid, PACKAGE_VERSION, (long) getpid());
    if (n_bad) {
        /* Keep the damaged bytes where they are (the file is only ever
         * appended to, so it may be made append-only with chattr +a) and
         * describe them, so that a verifier can tell this crash damage,
         * noted by the daemon, from tampering. */
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int dlen = 0;
        char hex[65];

        if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)
            || !EVP_DigestUpdate(md, data + damaged_from, size - damaged_from)
            || (torn && !EVP_DigestUpdate(md, "\n", 1))
            || !EVP_DigestFinal_ex(md, digest, &dlen)) {
            xabort("audit: SHA-256 failed");
        }
        EVP_MD_CTX_free(md);
        hex_encode(digest, 32, hex);
        LOG_WARN("%s: %zu line(s) at the end are not whole records%s; "
                 "noting them and continuing the chain after record %llu",
                 au.path, n_bad, torn ? " (torn write)" : "",
                 (unsigned long long) anchor_seq);
        if (torn) {
            rc = write_once(au.fd, "\n", 1);
            if (rc) {
                goto out;
            }
        }
        ds_put_fmt(&m, ",\"reason\":\"damaged-tail\",\"damaged\":"
                   "{\"lines\":%zu,\"bytes\":%zu,\"sha256\":\"%s\","
                   "\"torn\":%s,\"after_seq\":%llu}",
                   n_bad, size - damaged_from + (torn ? 1 : 0), hex,
                   torn ? "true" : "false", (unsigned long long) anchor_seq);
    } else {
        ds_put_fmt(&m, ",\"reason\":\"%s\"", size ? reason_if_clean : "new");
    }
    if (au.lost) {
        /* Records whose write failed are gone; say how many. */
        ds_put_fmt(&m, ",\"lost\":%llu", (unsigned long long) au.lost);
    }
    if (fstat(au.fd, &st)) {
        rc = -errno;
        goto out;
    }
    au.size = st.st_size;
    au.broken = false;
    rc = append_locked("start", ds_cstr(&m), NULL);
    if (!rc) {
        au.lost = 0;
    }
out:
    if (data) {
        munmap(data, size);
    }
    ds_destroy(&m);
    return rc;
}

/* Waits until record seq is on disk, syncing for everybody who waits
 * (group commit).  Called with au.mu held. */
static void
sync_locked(uint64_t seq)
{
    while (au.synced_seq < seq) {
        if (au.syncing) {
            pthread_cond_wait(&au.synced_cv, &au.mu);
            continue;
        }
        uint64_t target = au.seq;
        int fd = au.fd, r;
        au.syncing = true;
        pthread_mutex_unlock(&au.mu);
        r = fdatasync(fd);
        if (r) {
            LOG_ERR("%s: fdatasync: %s", au.path, strerror(errno));
        }
        pthread_mutex_lock(&au.mu);
        au.syncing = false;
        /* After a failed sync there is nothing better to do than to go on:
         * the error is logged, and a caller cannot be failed after the
         * fact. */
        au.synced_seq = MAX(au.synced_seq, target);
        pthread_cond_broadcast(&au.synced_cv);
    }
}

static int
append_locked(const char *type, const char *members, uint64_t *ret_seq)
{
    struct ds line = DS_EMPTY;
    char when[40], hash[65];
    uint64_t seq;
    int rc;

    if (au.fd < 0) {
        return -EBADF;
    }
    if (au.broken) {
        rc = recover_locked("recovered");
        if (rc) {
            return rc;
        }
    }
    seq = au.seq + 1;
    format_time_ms(time_wall_ms(), when);
    ds_reserve(&line, strlen(members) + 256);
    ds_put_fmt(&line, "{\"seq\":%llu,\"prev\":\"%s\",\"time\":\"%s\","
               "\"type\":\"%s\"", (unsigned long long) seq, au.head, when,
               type);
    ds_put_cstr(&line, members);
    sha256_hex(line.s, line.len, hash);
    ds_put_fmt(&line, ",\"hash\":\"%s\"}\n", hash);
    rc = write_once(au.fd, line.s, line.len);
    if (rc) {
        LOG_ERR("%s: cannot append record %llu: %s (the next record "
                "will say so)", au.path, (unsigned long long) seq,
                rc == -EIO ? "short write" : strerror(-rc));
        au.broken = true;
        ds_destroy(&line);
        return rc;
    }
    au.seq = seq;
    memcpy(au.head, hash, sizeof au.head);
    au.size += (off_t) line.len;
    ds_destroy(&line);
    if (ret_seq) {
        *ret_seq = seq;
    }
    return 0;
}

/* Appends a record and returns once it is on disk. */
static int
append_record(const char *type, const char *members)
{
    uint64_t seq;
    int rc;

    pthread_mutex_lock(&au.mu);
    rc = append_locked(type, members, &seq);
    if (!rc) {
        sync_locked(seq);
    } else if (au.fd >= 0) {
        au.lost++;
    }
    pthread_mutex_unlock(&au.mu);
    return rc;
}

/* ---- who made a call ---- */

/* What a call's record needs from before its handler ran: the name labels
 * of the objects it names, for those that are gone when the call hook runs
 * (after a destroy), and the originator of the caller's session (gone
 * after session.logout).  Fixed-size and per thread, so a worker that
 * exits leaves nothing to free.  Filled by the begin hook of rpc.c
 * (api_call_begin_hook) where it exists; without it, a destroyed object
 * is recorded without its name. */
#define PRE_NAMES 8
static __thread struct {
    const struct api_ctx *ctx;
    char originator[256];       /* of the caller's session */
    bool have_originator;
    size_t n;
    struct {
        char ref[48];
        char name[256];
    } items[PRE_NAMES];
} pre;

static const char *
pre_name(const struct api_ctx *ctx, const char *ref)
{
    if (pre.ctx != ctx) {
        return NULL;
    }
    for (size_t i = 0; i < pre.n; i++) {
        if (!strcmp(pre.items[i].ref, ref)) {
            return pre.items[i].name;
        }
    }
    return NULL;
}

#ifdef API_HAVE_CALL_BEGIN_HOOK
/* Copies s into buf (size n), cut at a UTF-8 character boundary. */
static void
copy_utf8(char *buf, size_t n, const char *s)
{
    size_t len = utf8_prefix(s, strlen(s), n - 1);

    memcpy(buf, s, len);
    buf[len] = '\0';
}

static void
audit_call_begin_hook(struct api_ctx *ctx, struct value **args)
{
    const struct api_message *m = ctx->msg;
    struct db *db = ctx->x->db;

    pre.ctx = NULL;
    pre.n = 0;
    pre.have_originator = false;
    if (!m || !args || au.reads[m - api_messages]) {
        return;
    }
    pre.ctx = ctx;
    db_read_lock(db);
    /* session.logout removes the row that names the originator. */
    if (ctx->session) {
        struct db_row *row = db_lookup(db, CLS_session,
                                       session_ref(ctx->session));
        if (row) {
            copy_utf8(pre.originator, sizeof pre.originator,
                      row->fields[F_session_originator]->u.str.s);
            pre.have_originator = true;
        }
    }
    for (size_t i = 0; i < m->n_params && pre.n < PRE_NAMES; i++) {
        const struct api_type *t = m->params[i].type;
        const struct value *v = args[i];
        int cls = t->cls, f;
        struct db_row *row;
        if (t->kind != API_REF || !v || v->type != VALUE_STRING
            || v->u.str.len >= sizeof pre.items[0].ref) {
            continue;
        }
        if (cls < 0) {
            cls = db_class_of_ref(db, v->u.str.s);
        }
        row = cls >= 0 ? db_lookup(db, cls, v->u.str.s) : NULL;
        f = cls >= 0 ? api_classes[cls].name_label_field : -1;
        if (row && f >= 0 && row->fields[f]->type == VALUE_STRING) {
            memcpy(pre.items[pre.n].ref, v->u.str.s, v->u.str.len + 1);
            copy_utf8(pre.items[pre.n].name, sizeof pre.items[0].name,
                      row->fields[f]->u.str.s);
            pre.n++;
        }
    }
    db_read_unlock(db);
}
#endif

/* Appends the members that say who acts: user, whether it is the local
 * superuser, the subject, the session's trackid and the originator. */
static void
put_actor(struct ds *out, struct xapi *x, const struct api_ctx *ctx,
          struct session *s, const char *fallback_user,
          const char *fallback_originator)
{
    char *subject = NULL, *sid = NULL, *originator = NULL;
    struct db_row *row;

    if (s) {
        db_read_lock(x->db);
        row = db_lookup(x->db, CLS_session, session_ref(s));
        if (row) {
            const char *subj = row->fields[F_session_subject]->u.str.s;
            if (strcmp(subj, "OpaqueRef:NULL") && *subj) {
                subject = xstrdup(subj);
            }
            if (row->fields[F_session_auth_user_sid]->u.str.len) {
                sid = xstrdup(row->fields[F_session_auth_user_sid]->u.str.s);
            }
            originator = xstrdup(row->fields[F_session_originator]->u.str.s);
        }
        db_read_unlock(x->db);
        if (!row && ctx && pre.ctx == ctx && pre.have_originator
            && s == ctx->session) {
            originator = xstrdup(pre.originator);
        }
    }
    put_member_string(out, "user", s ? session_user(s) : fallback_user);
    ds_put_fmt(out, ",\"superuser\":%s",
               s && session_is_superuser(s) ? "true" : "false");
    put_member_string(out, "subject", subject);
    if (sid) {
        put_member_string(out, "auth_user_sid", sid);
    }
    if (s) {
        ds_put_cstr(out, ",\"session\":");
        put_trackid(out, session_ref(s));
    } else {
        ds_put_cstr(out, ",\"session\":null");
    }
    put_member_string(out, "originator",
                      originator ? originator : fallback_originator);
    free(subject);
    free(sid);
    free(originator);
}

/* ---- call records ---- */


/* Appends {"param":..,"class":..,"ref":..,"name_label":..} for one ref. */
static void
put_object(struct ds *out, bool *first, const struct api_ctx *ctx,
           const char *param, int cls, const char *ref)
{
    struct xapi *x = ctx->x;
    char *label = NULL;
    bool found = false;

    if (!str_starts_with(ref, "OpaqueRef:") || !strcmp(ref, "OpaqueRef:NULL")) {
        return;
    }
    db_read_lock(x->db);
    if (cls < 0) {
        cls = db_class_of_ref(x->db, ref);
    }
    if (cls >= 0 && cls != CLS_session) {
        struct db_row *row = db_lookup(x->db, cls, ref);
        int f = api_classes[cls].name_label_field;
        found = row != NULL;
        if (row && f >= 0 && row->fields[f]->type == VALUE_STRING) {
            label = xstrdup(row->fields[f]->u.str.s);
        }
    }
    db_read_unlock(x->db);
    if (cls == CLS_session) {
        return;     /* sessions are named by trackid, never by ref */
    }
    ds_put_cstr(out, *first ? "" : ",");
    *first = false;
    ds_put_cstr(out, "{\"param\":");
    ds_put_json_string(out, param, strlen(param));
    put_member_string(out, "class", cls >= 0 ? api_classes[cls].name : NULL);
    put_member_string(out, "ref", ref);
    if (!found && pre_name(ctx, ref)) {
        label = xstrdup(pre_name(ctx, ref));
    }
    if (label) {
        put_member_string(out, "name_label", label);
    }
    if (!found) {
        ds_put_cstr(out, ",\"exists\":false");
    }
    ds_put_char(out, '}');
    free(label);
}

static void
put_objects(struct ds *out, struct api_ctx *ctx, struct value **args,
            const struct value *result)
{
    const struct api_message *m = ctx->msg;
    bool first = true;

    ds_put_cstr(out, ",\"objects\":[");
    for (size_t i = 0; args && i < m->n_params; i++) {
        const struct api_type *t = m->params[i].type;
        const struct value *v = args[i];
        if (!v) {
            continue;
        }
        if (t->kind == API_REF && v->type == VALUE_STRING) {
            put_object(out, &first, ctx, m->params[i].name, t->cls,
                       v->u.str.s);
        } else if (t->kind == API_SET && t->elem->kind == API_REF
                   && v->type == VALUE_ARRAY) {
            for (size_t j = 0; j < v->u.arr.n && j < MAX_SET_OBJECTS; j++) {
                if (v->u.arr.items[j]->type == VALUE_STRING) {
                    put_object(out, &first, ctx, m->params[i].name,
                               t->elem->cls, v->u.arr.items[j]->u.str.s);
                }
            }
        }
    }
    if (result && result->type == VALUE_STRING && m->result
        && m->result->kind == API_REF) {
        put_object(out, &first, ctx, "(result)", m->result->cls,
                   result->u.str.s);
    }
    ds_put_char(out, ']');
}

static bool
param_is_secret(const struct api_message *m, size_t i, const struct mask *mk)
{
    return is_sensitive_name(m->params[i].name)
           || (mk->secret_value && !strcmp(m->params[i].name, "value"));
}

static void
note_secret(struct mask *mk, const struct value *v)
{
    if (v && v->type == VALUE_STRING && v->u.str.len
        && mk->n_secrets < MAX_SECRETS) {
        mk->secrets[mk->n_secrets++] = v->u.str.s;
    }
}

/* Notes the strings under sensitive names inside v. */
static void
collect_secrets(struct mask *mk, const struct value *v, int depth)
{
    if (depth > 8) {
        return;
    }
    if (v->type == VALUE_ARRAY) {
        for (size_t i = 0; i < v->u.arr.n; i++) {
            collect_secrets(mk, v->u.arr.items[i], depth + 1);
        }
    } else if (v->type == VALUE_STRUCT) {
        for (size_t i = 0; i < v->u.st.n; i++) {
            const char *name = v->u.st.m[i].name;
            if (is_sensitive_name(name)
                || (mk->secret_value && !strcmp(name, "value"))) {
                note_secret(mk, v->u.st.m[i].v);
            } else {
                collect_secrets(mk, v->u.st.m[i].v, depth + 1);
            }
        }
    }
}

/* Sets up the masking of a call's secrets. */
static void
mask_init(struct mask *mk, const struct api_ctx *ctx, struct value **args)
{
    const struct api_message *m = ctx->msg;

    memset(mk, 0, sizeof *mk);
    mk->session_ref = ctx->session ? session_ref(ctx->session) : NULL;
    mk->secret_value = m->cls == CLS_secret;
    if (!args) {
        return;
    }
    /* A map entry given as separate key and value parameters (the
     * add_to_<map> messages): the key says whether the value is secret. */
    for (size_t i = 0; i < m->n_params; i++) {
        if (!strcmp(m->params[i].name, "key") && value_is_string(args[i])
            && is_sensitive_name(args[i]->u.str.s)) {
            mk->secret_value = true;
        }
    }
    for (size_t i = 0; i < m->n_params; i++) {
        if (!args[i]) {
            continue;
        }
        if (param_is_secret(m, i, mk)) {
            note_secret(mk, args[i]);
        } else {
            collect_secrets(mk, args[i], 0);
        }
    }
}

/* Appends "params":{name: value...}, secrets masked and session refs
 * replaced by their trackids; a digest instead when they are too large. */
static void
put_params(struct ds *out, const struct api_message *m, struct value **args,
           const struct mask *mk)
{
    struct ds p = DS_EMPTY;

    if (!args) {
        ds_put_cstr(out, ",\"params\":null");
        return;
    }
    ds_put_char(&p, '{');
    for (size_t i = 0; i < m->n_params; i++) {
        const struct api_param *prm = &m->params[i];
        if (i) {
            ds_put_char(&p, ',');
        }
        ds_put_json_string(&p, prm->name, strlen(prm->name));
        ds_put_char(&p, ':');
        if (!args[i]) {
            ds_put_cstr(&p, "null");
        } else if (param_is_secret(m, i, mk)) {
            ds_put_cstr(&p, "\"" MASK "\"");
        } else if (prm->type->kind == API_REF && prm->type->cls == CLS_session
                   && args[i]->type == VALUE_STRING) {
            put_trackid(&p, args[i]->u.str.s);
        } else {
            put_masked(&p, args[i], mk);
        }
    }
    ds_put_char(&p, '}');
    if (p.len > MAX_RECORD / 2) {
        char h[65];
        sha256_hex(p.s, p.len, h);
        ds_put_fmt(out, ",\"params\":{\"truncated\":true,\"bytes\":%zu,"
                   "\"sha256\":\"%s\"}", p.len, h);
    } else {
        ds_put_cstr(out, ",\"params\":");
        ds_put(out, p.s, p.len);
    }
    ds_destroy(&p);
}

/* Appends "status" and the result or the error. */
static void
put_outcome(struct ds *out, const struct api_message *m,
            const struct value *result, const struct value *error,
            const struct mask *mk)
{
    struct ds r = DS_EMPTY;

    if (error) {
        struct mask capped = *mk;
        capped.max_string = MAX_FIELD;
        ds_put_cstr(out, ",\"status\":\"ERROR\",\"error\":");
        put_masked(out, error, &capped);
        return;
    }
    ds_put_cstr(out, ",\"status\":\"OK\"");
    if (!result) {
        return;
    }
    if (result->type == VALUE_STRING && m && m->result
        && m->result->kind == API_REF && m->result->cls == CLS_session) {
        ds_put_cstr(out, ",\"result\":");
        put_trackid(out, result->u.str.s);
        return;
    }
    /* Large sets and maps are summarized without being encoded. */
    if (!((result->type == VALUE_ARRAY && result->u.arr.n > MAX_RESULT_ITEMS)
          || (result->type == VALUE_STRUCT
              && result->u.st.n > MAX_RESULT_ITEMS))) {
        put_masked(&r, result, mk);
        if (r.len <= MAX_RESULT) {
            ds_put_cstr(out, ",\"result\":");
            ds_put(out, r.s, r.len);
            ds_destroy(&r);
            return;
        }
    }
    if (result->type == VALUE_ARRAY) {
        ds_put_fmt(out, ",\"result_summary\":\"set of %zu items\"",
                   result->u.arr.n);
    } else if (result->type == VALUE_STRUCT) {
        ds_put_fmt(out, ",\"result_summary\":\"map of %zu entries\"",
                   result->u.st.n);
    } else {
        ds_put_fmt(out, ",\"result_summary\":\"%zu bytes\"", r.len);
    }
    ds_destroy(&r);
}

static struct pending_login *
take_pending_login(void)
{
    struct pending_login **pp, *p = NULL;

    pthread_mutex_lock(&au.mu);
    for (pp = &au.pending; *pp; pp = &(*pp)->next) {
        if (pthread_equal((*pp)->thread, pthread_self())) {
            p = *pp;
            *pp = p->next;
            break;
        }
    }
    pthread_mutex_unlock(&au.mu);
    return p;
}

static void
pending_login_free(struct pending_login *p)
{
    if (p) {
        free(p->user);
        free(p->originator);
        free(p->peer);
        free(p);
    }
}

/* A login that no call record completed (reported outside an API call). */
static void
write_bare_login(struct pending_login *p)
{
    struct ds m = DS_EMPTY;

    put_member_string(&m, "user", p->user);
    put_member_string(&m, "originator", p->originator);
    put_member_string(&m, "peer", p->peer);
    if (p->ok) {
        ds_put_cstr(&m, ",\"status\":\"OK\"");
    } else {
        ds_put_cstr(&m, ",\"status\":\"ERROR\","
                    "\"error\":[\"SESSION_AUTHENTICATION_FAILED\"]");
    }
    append_record("login", ds_cstr(&m));
    ds_destroy(&m);
}

static void
audit_call_hook(struct api_ctx *ctx, struct value **args,
                const struct value *result, const struct value *error)
{
    const struct api_message *m = ctx->msg;
    struct pending_login *login = take_pending_login();
    struct session *new_session = NULL;
    struct mask mk;
    struct ds rec = DS_EMPTY;

    if (login && (!m || !message_is_login(m))) {
        write_bare_login(login);
        pending_login_free(login);
        login = NULL;
    }
    /* A call refused before its handler ran (args NULL) is audited even
     * when it is a read: the refusal is the news. */
    if (!m || (!login && args && au.reads[m - api_messages])) {
        return;
    }
    mask_init(&mk, ctx, args);

    if (login) {
        /* The new session, to say who it belongs to. */
        if (!error && result && result->type == VALUE_STRING) {
            new_session = session_lookup(ctx->x, result->u.str.s);
        }
        put_actor(&rec, ctx->x, NULL, new_session, login->user,
                  login->originator);
        ds_put_fmt(&rec, ",\"authenticated\":%s",
                   login->ok ? "true" : "false");
    } else {
        put_actor(&rec, ctx->x, ctx, ctx->session, NULL, NULL);
    }
    put_member_string(&rec, "peer", ctx->peer);
    put_member_string(&rec, "message", ctx->method);
    if (ctx->task[0]) {
        put_member_string(&rec, "task", ctx->task);
    }
    put_objects(&rec, ctx, args, error ? NULL : result);
    put_params(&rec, m, args, &mk);
    put_outcome(&rec, m, result, error, &mk);
    append_record(login ? "login" : "call", ds_cstr(&rec));
    ds_destroy(&rec);
    session_unref(new_session);
    pending_login_free(login);
}

void
audit_login(struct xapi *x, const char *user, const char *originator,
            const char *peer, bool ok)
{
    struct pending_login *p = take_pending_login();

    if (p) {
        write_bare_login(p);
        pending_login_free(p);
    }
    p = xcalloc(1, sizeof *p);
    p->thread = pthread_self();
    p->user = xstrdup(user ? user : "");
    p->originator = xstrdup(originator ? originator : "");
    p->peer = xstrdup(peer ? peer : "");
    p->ok = ok;
    pthread_mutex_lock(&au.mu);
    if (au.fd < 0) {
        pthread_mutex_unlock(&au.mu);
        pending_login_free(p);
        return;
    }
    p->next = au.pending;
    au.pending = p;
    pthread_mutex_unlock(&au.mu);
}

/* ---- start and stop ---- */

int
audit_init(struct xapi *x)
{
    int dfd, rc;

    au.x = x;
    au.synced_seq = 0;
    au.broken = false;
    au.lost = 0;
    au.path = xasprintf("%s/audit.log", x->state_dir);
    au.reads = xcalloc(api_n_messages, sizeof *au.reads);
    for (size_t i = 0; i < api_n_messages; i++) {
        au.reads[i] = message_is_read(&api_messages[i]);
    }
    au.fd = open(au.path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (au.fd < 0) {
        rc = -errno;
        LOG_ERR("cannot open %s: %s", au.path, strerror(errno));
        goto fail;
    }
    /* The file's directory entry must be durable too. */
    dfd = open(x->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    pthread_mutex_lock(&au.mu);
    rc = recover_locked("restart");
    if (!rc) {
        sync_locked(au.seq);
    }
    pthread_mutex_unlock(&au.mu);
    if (rc) {
        LOG_ERR("cannot start the audit log %s: %s", au.path, strerror(-rc));
        goto fail;
    }
    LOG_INFO("audit log %s: record %llu, head %s", au.path,
             (unsigned long long) au.seq, au.head);
    api_call_hook = audit_call_hook;
#ifdef API_HAVE_CALL_BEGIN_HOOK
    api_call_begin_hook = audit_call_begin_hook;
#endif
    return 0;
fail:
    if (au.fd >= 0) {
        close(au.fd);
        au.fd = -1;
    }
    return rc;
}

void
audit_shutdown(struct xapi *x)
{
    struct pending_login *p;

    if (!au.path) {
        return;     /* audit_init never ran */
    }
    api_call_hook = NULL;
#ifdef API_HAVE_CALL_BEGIN_HOOK
    api_call_begin_hook = NULL;
#endif
    pthread_mutex_lock(&au.mu);
    p = au.pending;
    au.pending = NULL;
    pthread_mutex_unlock(&au.mu);
    while (p) {
        struct pending_login *next = p->next;
        write_bare_login(p);
        pending_login_free(p);
        p = next;
    }
    pthread_mutex_lock(&au.mu);
    if (au.fd >= 0) {
        struct ds m = DS_EMPTY;
        uint64_t seq;
        ds_put_fmt(&m, ",\"host\":\"%s\"", x->host_uuid);
        if (!append_locked("stop", ds_cstr(&m), &seq)) {
            sync_locked(seq);
        }
        ds_destroy(&m);
        while (au.syncing) {
            pthread_cond_wait(&au.synced_cv, &au.mu);
        }
        LOG_INFO("audit log closed at record %llu, head %s",
                 (unsigned long long) au.seq, au.head);
        close(au.fd);
        au.fd = -1;
    }
    pthread_mutex_unlock(&au.mu);
    free(au.path);
    au.path = NULL;
    free(au.reads);
    au.reads = NULL;
}

/* ---- GET /audit_log ---- */

/* Reads {"seq":N,"prev":"...","time":"..." at the start of a line. */
static bool
parse_record_prefix(const char *line, size_t len, uint64_t *ret_seq,
                    int64_t *ret_ms)
{
    char buf[40];
    const char *p;
    uint64_t seq = 0;

    if (len < 7 + 9 + 64 + 10 + 24 || memcmp(line, "{\"seq\":", 7)) {
        return false;
    }
    for (p = line + 7; p < line + len && *p >= '0' && *p <= '9'; p++) {
        seq = seq * 10 + (uint64_t) (*p - '0');
    }
    if (line + len - p < 9 + 64 + 10 + 24
        || memcmp(p, ",\"prev\":\"", 9) || memcmp(p + 73, "\",\"time\":\"", 10)) {
        return false;
    }
    memcpy(buf, p + 83, 24);
    buf[24] = '\0';
    *ret_seq = seq;
    return !parse_time_ms(buf, ret_ms);
}

/* Finds the offset of the first line at or after the point named by
 * since, reading [0, end) with pread. */
static int
find_start(int fd, off_t end, bool by_seq, uint64_t since_seq,
           int64_t since_ms, off_t *ret_off)
{
    size_t cap = 1024 * 1024, have = 0;
    char *buf = xmalloc(cap);
    off_t file_off = 0, line_off = 0;
    int rc = 0;

    for (;;) {
        char *nl;
        size_t used = 0;
        if (have == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        if (file_off < end) {
            size_t want = MIN(cap - have, (size_t) (end - file_off));
            ssize_t r = pread(fd, buf + have, want, file_off);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                rc = r < 0 ? -errno : -EIO;
                break;
            }
            have += (size_t) r;
            file_off += r;
        } else if (!have) {
            break;
        }
        while ((nl = memchr(buf + used, '\n', have - used))) {
            size_t len = (size_t) (nl - (buf + used));
            uint64_t seq;
            int64_t ms;
            if (parse_record_prefix(buf + used, len, &seq, &ms)
                && (by_seq ? seq >= since_seq : ms >= since_ms)) {
                *ret_off = line_off;
                free(buf);
                return 0;
            }
            used += len + 1;
            line_off += (off_t) len + 1;
        }
        memmove(buf, buf + used, have - used);
        have -= used;
        if (file_off >= end) {
            break;      /* what is left has no newline: not a record */
        }
    }
    free(buf);
    *ret_off = end;
    return rc;
}

static void
respond_text(struct http_exchange *hx, int status, const char *text)
{
    http_respond(hx, status, "text/plain; charset=utf-8", NULL, text,
                 strlen(text));
}

/* The session of an HTTP request: ?session_id=, or the session_id
 * cookie, as XenAPI's HTTP handlers accept. */
static char *
request_session_id(const struct http_request *req)
{
    char *sid = http_request_query_param(req, "session_id");
    const char *cookie;

    if (sid) {
        return sid;
    }
    cookie = http_request_header(req, "Cookie");
    while (cookie && *cookie) {
        const char *end = strchr(cookie, ';');
        size_t n = end ? (size_t) (end - cookie) : strlen(cookie);
        while (*cookie == ' ') {
            cookie++;
            n--;
        }
        if (n > 11 && !memcmp(cookie, "session_id=", 11)) {
            return xmemdup0(cookie + 11, n - 11);
        }
        cookie = end ? end + 1 : NULL;
    }
    return NULL;
}

static void
audit_http_read(struct xapi *x, const struct http_request *req,
                struct session *s, const char *sid, const char *since,
                const char *error_json, long n_records)
{
    struct ds m = DS_EMPTY;

    put_actor(&m, x, NULL, s, NULL, NULL);
    if (!s && sid) {
        ds_put_cstr(&m, ",\"session_given\":");
        put_trackid(&m, sid);
    }
    put_member_string(&m, "peer", req->peer);
    put_member_string(&m, "message", "GET /audit_log");
    ds_put_cstr(&m, ",\"params\":{");
    if (since) {
        ds_put_cstr(&m, "\"since\":");
        put_json_capped(&m, since, strlen(since), MAX_FIELD);
    }
    ds_put_char(&m, '}');
    if (error_json) {
        ds_put_fmt(&m, ",\"status\":\"ERROR\",\"error\":%s", error_json);
    } else {
        ds_put_fmt(&m, ",\"status\":\"OK\",\"result\":{\"records\":%ld}",
                   n_records);
    }
    append_record("http", ds_cstr(&m));
    ds_destroy(&m);
}

void
audit_http_handler(struct http_exchange *hx, struct xapi *x)
{
    const struct http_request *req = http_exchange_request(hx);
    char *sid = NULL, *since = NULL, *body = NULL, headers[64] = "";
    struct session *s = NULL;
    bool by_seq = true;
    uint64_t since_seq = 0;
    int64_t since_ms = 0;
    off_t end, start;
    size_t len = 0;
    long n = 0;

    if (strcmp(req->method, "GET")) {
        http_respond(hx, 405, "text/plain", "Allow: GET",
                     "method not allowed\n", 19);
        return;
    }
    sid = request_session_id(req);
    since = http_request_query_param(req, "since");
    s = sid ? session_lookup(x, sid) : NULL;
    if (!s) {
        audit_http_read(x, req, NULL, sid, since, "[\"SESSION_INVALID\"]", 0);
        respond_text(hx, 401, sid ? "session_id is not a valid session\n"
                     : "give session_id=OpaqueRef:... (a session of a "
                       "pool administrator)\n");
        goto out;
    }
    /* Reading the audit log is a permission of its own, as in XenAPI
     * (http/get_audit_log): pool administrators only. */
    if (!session_is_superuser(s) && !(session_roles(s) & ROLE_POOL_ADMIN)) {
        audit_http_read(x, req, s, sid, since, "[\"RBAC_PERMISSION_DENIED\","
                        "\"http/get_audit_log\",\"/audit_log\"]", 0);
        respond_text(hx, 403, "reading the audit log needs the pool-admin "
                     "role\n");
        goto out;
    }
    if (since && *since) {
        int64_t v;
        if (strspn(since, "0123456789") == strlen(since)
            && !str_to_int64(since, &v)) {
            since_seq = (uint64_t) v;
        } else if (!parse_time_ms(since, &since_ms)) {
            by_seq = false;
        } else {
            audit_http_read(x, req, s, sid, since,
                            "[\"INVALID_VALUE\",\"since\"]", 0);
            respond_text(hx, 400, "since must be a sequence number or an "
                         "ISO 8601 time such as 2024-01-31T23:59:59Z\n");
            goto out;
        }
    }
    pthread_mutex_lock(&au.mu);
    end = au.fd >= 0 ? au.size : -1;
    pthread_mutex_unlock(&au.mu);
    if (end < 0) {
        respond_text(hx, 503, "the audit log is not open\n");
        goto out;
    }
    /* The bytes before end are whole records that never change, so they
     * are read without holding the writers' lock. */
    if (find_start(au.fd, end, by_seq, since_seq, since_ms, &start)) {
        respond_text(hx, 500, "cannot read the audit log\n");
        goto out;
    }
    len = (size_t) MIN((off_t) MAX_RESPONSE, end - start);
    body = xmalloc(len + 1);
    for (size_t got = 0; got < len;) {
        ssize_t r = pread(au.fd, body + got, len - got, start + (off_t) got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            respond_text(hx, 500, "cannot read the audit log\n");
            goto out;
        }
        got += (size_t) r;
    }
    if ((off_t) len < end - start) {
        /* Cut at the last whole line and say where to go on. */
        char *last = memrchr(body, '\n', len);
        uint64_t next_seq;
        int64_t ms;
        char probe[256];
        ssize_t r;
        len = last ? (size_t) (last - body) + 1 : 0;
        r = pread(au.fd, probe, sizeof probe, start + (off_t) len);
        if (r > 0 && parse_record_prefix(probe, (size_t) r, &next_seq, &ms)) {
            snprintf(headers, sizeof headers, "X-Audit-Next-Seq: %llu",
                     (unsigned long long) next_seq);
        }
    }
    for (size_t i = 0; i < len; i++) {
        n += body[i] == '\n';
    }
    audit_http_read(x, req, s, sid, since, NULL, n);
    http_respond_take(hx, 200, "text/plain; charset=utf-8",
                      headers[0] ? headers : NULL, body, len);
    body = NULL;
out:
    session_unref(s);
    free(body);
    free(sid);
    free(since);
}
