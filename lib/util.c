/* util.c — allocation, growable strings, logging, time, UUIDs and file
 * helpers declared in util.h.  Nothing here knows about the XenAPI. */
#include <config.h>
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void
xabort(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("fatal: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p) {
        xabort("out of memory (%zu bytes)", n);
    }
    return p;
}

void *
xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (!p) {
        xabort("out of memory (%zu x %zu bytes)", n, size);
    }
    return p;
}

void *
xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        xabort("out of memory (%zu bytes)", n);
    }
    return p;
}

char *
xstrdup(const char *s)
{
    return xmemdup0(s, strlen(s));
}

char *
xmemdup0(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *
xasprintf(const char *fmt, ...)
{
    struct ds ds = DS_EMPTY;
    va_list ap;

    va_start(ap, fmt);
    ds_put_vfmt(&ds, fmt, ap);
    va_end(ap);
    return ds_steal(&ds);
}

/* ---- struct ds ---- */

void
ds_init(struct ds *ds)
{
    ds->s = NULL;
    ds->len = 0;
    ds->cap = 0;
}

void
ds_destroy(struct ds *ds)
{
    free(ds->s);
    ds_init(ds);
}

void
ds_clear(struct ds *ds)
{
    ds->len = 0;
    if (ds->s) {
        ds->s[0] = '\0';
    }
}

void
ds_reserve(struct ds *ds, size_t extra)
{
    size_t need = ds->len + extra + 1;

    if (need > ds->cap) {
        size_t cap = ds->cap ? ds->cap * 2 : 64;
        while (cap < need) {
            cap *= 2;
        }
        ds->s = xrealloc(ds->s, cap);
        ds->cap = cap;
        if (cap >= (8u << 20)) {
            /* Large responses (a 70 MB get_all_records) spend much of
             * their time faulting in fresh pages; transparent huge pages
             * cut that by 500 times where the kernel offers them. */
            uintptr_t start = ((uintptr_t) ds->s + (2u << 20) - 1) & ~(uintptr_t) ((2u << 20) - 1);
            uintptr_t end = ((uintptr_t) ds->s + cap) & ~(uintptr_t) ((2u << 20) - 1);
            if (end > start) {
                madvise((void *) start, end - start, MADV_HUGEPAGE);
            }
        }
    }
}

void
ds_put(struct ds *ds, const void *p, size_t n)
{
    ds_reserve(ds, n);
    memcpy(ds->s + ds->len, p, n);
    ds->len += n;
    ds->s[ds->len] = '\0';
}

void
ds_put_cstr(struct ds *ds, const char *s)
{
    ds_put(ds, s, strlen(s));
}

void
ds_put_char(struct ds *ds, char c)
{
    ds_reserve(ds, 1);
    ds->s[ds->len++] = c;
    ds->s[ds->len] = '\0';
}

void
ds_put_vfmt(struct ds *ds, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;

    va_copy(ap2, ap);
    ds_reserve(ds, 64);
    n = vsnprintf(ds->s + ds->len, ds->cap - ds->len, fmt, ap);
    if (n < 0) {
        xabort("vsnprintf failed");
    }
    if ((size_t) n >= ds->cap - ds->len) {
        ds_reserve(ds, n);
        vsnprintf(ds->s + ds->len, ds->cap - ds->len, fmt, ap2);
    }
    ds->len += n;
    va_end(ap2);
}

void
ds_put_fmt(struct ds *ds, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ds_put_vfmt(ds, fmt, ap);
    va_end(ap);
}

void
ds_put_int(struct ds *ds, int64_t v)
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
    ds_put(ds, p, buf + sizeof buf - p);
}

void
ds_put_xml_escaped(struct ds *ds, const char *s, size_t n)
{
    size_t start = 0;

    ds_reserve(ds, n);
    for (size_t i = 0; i < n; i++) {
        const char *rep;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&apos;"; break;
        case '\r': rep = "&#13;"; break;
        default: continue;
        }
        ds_put(ds, s + start, i - start);
        ds_put_cstr(ds, rep);
        start = i + 1;
    }
    ds_put(ds, s + start, n - start);
}

void
ds_put_json_string(struct ds *ds, const char *s, size_t n)
{
    size_t start = 0;

    ds_reserve(ds, n + 2);
    ds_put_char(ds, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        char esc[8];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        ds_put(ds, s + start, i - start);
        switch (c) {
        case '"': ds_put(ds, "\\\"", 2); break;
        case '\\': ds_put(ds, "\\\\", 2); break;
        case '\n': ds_put(ds, "\\n", 2); break;
        case '\r': ds_put(ds, "\\r", 2); break;
        case '\t': ds_put(ds, "\\t", 2); break;
        case '\b': ds_put(ds, "\\b", 2); break;
        case '\f': ds_put(ds, "\\f", 2); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            ds_put(ds, esc, 6);
            break;
        }
        start = i + 1;
    }
    ds_put(ds, s + start, n - start);
    ds_put_char(ds, '"');
}

char *
ds_steal(struct ds *ds)
{
    char *s = ds->s ? ds->s : xstrdup("");

    ds_init(ds);
    return s;
}

const char *
ds_cstr(struct ds *ds)
{
    if (!ds->s) {
        ds_reserve(ds, 0);
        ds->s[0] = '\0';
    }
    return ds->s;
}

/* ---- logging ---- */

static enum log_level log_current = LOG_LVL_INFO;
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;

void
log_set_level(enum log_level level)
{
    log_current = level;
}

int
log_level_from_string(const char *s, enum log_level *ret_level)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };

    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        if (!strcmp(s, names[i])) {
            *ret_level = (enum log_level) i;
            return 0;
        }
    }
    if (!strcmp(s, "warning")) {
        *ret_level = LOG_LVL_WARN;
        return 0;
    }
    return -EINVAL;
}

bool
log_enabled(enum log_level level)
{
    return level <= log_current;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const tags[] = { "error", "warn", "info", "debug" };
    struct timespec ts;
    struct tm tm;
    char when[32];
    va_list ap;

    if (!log_enabled(level)) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&log_mutex);
    fprintf(stderr, "%s.%03ldZ|%s|", when, ts.tv_nsec / 1000000, tags[level]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&log_mutex);
}

/* ---- time ---- */

int64_t
time_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
time_mono_ms(void)
{
    return time_mono_us() / 1000;
}

int64_t
time_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
time_format_xenapi(int64_t secs, char *buf)
{
    time_t t = (time_t) secs;
    struct tm tm;

    if (!gmtime_r(&t, &tm)) {
        strcpy(buf, "19700101T00:00:00Z");
        return;
    }
    /* The fields are bounded by gmtime_r; unsigned short keeps the
     * compiler's truncation analysis quiet. */
    snprintf(buf, 32, "%04u%02u%02uT%02u:%02u:%02uZ",
             (unsigned short) (tm.tm_year + 1900),
             (unsigned char) (tm.tm_mon + 1), (unsigned char) tm.tm_mday,
             (unsigned char) tm.tm_hour, (unsigned char) tm.tm_min,
             (unsigned char) tm.tm_sec);
}

static bool
take_digits(const char **sp, int n, int *ret_v)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if ((*sp)[i] < '0' || (*sp)[i] > '9') {
            return false;
        }
        v = v * 10 + ((*sp)[i] - '0');
    }
    *sp += n;
    *ret_v = v;
    return true;
}

int
time_parse_xenapi(const char *s, int64_t *ret_secs)
{
    int y, mo, d, h = 0, mi = 0, sec = 0;
    int64_t days, offset = 0;

    if (!take_digits(&s, 4, &y)) {
        return -EINVAL;
    }
    if (*s == '-') {
        s++;
    }
    if (!take_digits(&s, 2, &mo)) {
        return -EINVAL;
    }
    if (*s == '-') {
        s++;
    }
    if (!take_digits(&s, 2, &d)) {
        return -EINVAL;
    }
    if (*s == 'T' || *s == 't' || *s == ' ') {
        s++;
        if (!take_digits(&s, 2, &h)) {
            return -EINVAL;
        }
        if (*s == ':') {
            s++;
        }
        if (!take_digits(&s, 2, &mi)) {
            return -EINVAL;
        }
        if (*s == ':') {
            s++;
        }
        if (!take_digits(&s, 2, &sec)) {
            return -EINVAL;
        }
        if (*s == '.') {
            s++;
            while (*s >= '0' && *s <= '9') {
                s++;
            }
        }
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int oh, om = 0, sign = *s == '-' ? -1 : 1;
        s++;
        if (!take_digits(&s, 2, &oh)) {
            return -EINVAL;
        }
        if (*s == ':') {
            s++;
        }
        if (*s) {
            if (!take_digits(&s, 2, &om)) {
                return -EINVAL;
            }
        }
        offset = sign * (oh * 3600 + om * 60);
    }
    if (*s || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59
        || sec > 60) {
        return -EINVAL;
    }
    /* Days from civil date (proleptic Gregorian), Howard Hinnant's method. */
    {
        int yy = y - (mo <= 2);
        int era = (yy >= 0 ? yy : yy - 399) / 400;
        unsigned yoe = (unsigned) (yy - era * 400);
        unsigned doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        days = (int64_t) era * 146097 + (int64_t) doe - 719468;
    }
    *ret_secs = days * 86400 + h * 3600 + mi * 60 + sec - offset;
    return 0;
}

/* ---- UUIDs and randomness ---- */

void
random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;

    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            xabort("getrandom failed: %s", strerror(errno));
        }
        p += r;
        n -= r;
    }
}

void
uuid_generate(char *buf)
{
    /* Refill a small pool so that creating thousands of rows does not make
     * thousands of system calls. */
    static __thread uint8_t pool[16 * 64];
    static __thread size_t pool_used = sizeof pool;
    uint8_t b[16];

    if (pool_used >= sizeof pool) {
        random_bytes(pool, sizeof pool);
        pool_used = 0;
    }
    memcpy(b, pool + pool_used, 16);
    pool_used += 16;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(buf, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
             b[10], b[11], b[12], b[13], b[14], b[15]);
}

bool
uuid_is_valid(const char *s)
{
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return false;
            }
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
                     || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return s[36] == '\0';
}

/* ---- files ---- */

int
read_file(const char *path, size_t max, char **ret_data, size_t *ret_len)
{
    struct ds ds = DS_EMPTY;
    char buf[65536];
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            goto out;
        }
        if (n == 0) {
            break;
        }
        if (ds.len + n > max) {
            rc = -EFBIG;
            goto out;
        }
        ds_put(&ds, buf, n);
    }
    *ret_len = ds.len;
    *ret_data = ds_steal(&ds);
    rc = 0;
out:
    close(fd);
    ds_destroy(&ds);
    return rc;
}

int
write_file_atomic(const char *path, const void *data, size_t len, int mode)
{
    char *tmp = xasprintf("%s.tmp.%d", path, (int) getpid());
    const char *p = data;
    int fd, rc;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            close(fd);
            unlink(tmp);
            goto out;
        }
        p += n;
        len -= n;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        rc = -errno;
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) < 0) {
        rc = -errno;
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    return rc;
}

/* ---- strings ---- */

bool
str_starts_with(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

int
str_to_int64(const char *s, int64_t *ret_v)
{
    char *end;
    long long v;

    /* Unlike strtoll, accept no leading white space or '+'. */
    if (!*s || !(*s == '-' || (*s >= '0' && *s <= '9'))) {
        return -EINVAL;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || end == s) {
        return -EINVAL;
    }
    *ret_v = v;
    return 0;
}

int
str_to_double(const char *s, double *ret_v)
{
    char *end;
    double v;

    if (!*s) {
        return -EINVAL;
    }
    errno = 0;
    v = strtod(s, &end);
    if (*end || end == s || (errno && !isfinite(v))) {
        return -EINVAL;
    }
    *ret_v = v;
    return 0;
}

/* Returns the length of the valid UTF-8 sequence starting at the non-ASCII
 * byte s[0], or 0 if it is malformed (overlong forms, surrogates and code
 * points above U+10FFFF included).  Both codecs use it. */
size_t
utf8_sequence_length(const unsigned char *s, const unsigned char *end)
{
    size_t avail = end - s;
    unsigned char c = s[0];

    if (c >= 0xc2 && c <= 0xdf) {
        return avail >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    }
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80;
        unsigned char hi = c == 0xed ? 0x9f : 0xbf;
        return (avail >= 3 && s[1] >= lo && s[1] <= hi
                && (s[2] & 0xc0) == 0x80) ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80;
        unsigned char hi = c == 0xf4 ? 0x8f : 0xbf;
        return (avail >= 4 && s[1] >= lo && s[1] <= hi
                && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80) ? 4 : 0;
    }
    return 0;
}

size_t
utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = cp;
        return 1;
    } else if (cp < 0x800) {
        out[0] = 0xc0 | (cp >> 6);
        out[1] = 0x80 | (cp & 0x3f);
        return 2;
    } else if (cp < 0x10000) {
        out[0] = 0xe0 | (cp >> 12);
        out[1] = 0x80 | ((cp >> 6) & 0x3f);
        out[2] = 0x80 | (cp & 0x3f);
        return 3;
    }
    out[0] = 0xf0 | (cp >> 18);
    out[1] = 0x80 | ((cp >> 12) & 0x3f);
    out[2] = 0x80 | ((cp >> 6) & 0x3f);
    out[3] = 0x80 | (cp & 0x3f);
    return 4;
}

bool
str_is_xml_text(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *) s, *end = p + n;

    while (p < end) {
        size_t len;

        if (*p < 0x80) {
            if (*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r') {
                return false;
            }
            p++;
            continue;
        }
        len = utf8_sequence_length(p, end);
        /* U+FFFE and U+FFFF are not characters XML allows. */
        if (!len || (len == 3 && p[0] == 0xef && p[1] == 0xbf
                     && (p[2] == 0xbe || p[2] == 0xbf))) {
            return false;
        }
        p += len;
    }
    return true;
}

uint64_t
hash_bytes(const void *p, size_t n, uint64_t seed)
{
    /* FNV-1a, mixed at the end: fast, and good enough for in-memory
     * indices keyed by random UUIDs and names. */
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;

    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}
