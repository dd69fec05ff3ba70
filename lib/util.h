/* util.h — small helpers every module uses: allocation that aborts on
 * failure, a growable string buffer (struct ds), logging, time and UUIDs.
 *
 * Allocation failure is not recoverable in a daemon that must keep its
 * database consistent, so the x*() functions abort instead of returning
 * NULL; callers never check them. */
#ifndef UTIL_H
#define UTIL_H 1

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define PRINTF_FMT(f, a) __attribute__((format(printf, f, a)))
#define NORETURN __attribute__((noreturn))

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xmemdup0(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PRINTF_FMT(1, 2);
void NORETURN xabort(const char *fmt, ...) PRINTF_FMT(1, 2);

/* A growable byte string, always NUL-terminated when s is non-NULL. */
struct ds {
    char *s;
    size_t len;
    size_t cap;
};
#define DS_EMPTY { NULL, 0, 0 }

void ds_init(struct ds *ds);
void ds_destroy(struct ds *ds);
void ds_clear(struct ds *ds);
void ds_reserve(struct ds *ds, size_t extra);
void ds_put(struct ds *ds, const void *p, size_t n);
void ds_put_cstr(struct ds *ds, const char *s);
void ds_put_char(struct ds *ds, char c);
void ds_put_fmt(struct ds *ds, const char *fmt, ...) PRINTF_FMT(2, 3);
void ds_put_vfmt(struct ds *ds, const char *fmt, va_list ap);
void ds_put_int(struct ds *ds, int64_t v);
/* Appends s with &, <, >, " and ' escaped for XML text or attributes. */
void ds_put_xml_escaped(struct ds *ds, const char *s, size_t n);
/* Appends s as a JSON string literal, quotes included. */
void ds_put_json_string(struct ds *ds, const char *s, size_t n);
/* Takes the buffer out of ds, leaving it empty; never returns NULL. */
char *ds_steal(struct ds *ds);
const char *ds_cstr(struct ds *ds);

/* Logging.  Levels follow syslog's order; messages go to stderr with a
 * timestamp.  log_set_level() accepts "debug", "info", "warn", "error". */
enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };
void log_set_level(enum log_level level);
int log_level_from_string(const char *s, enum log_level *ret_level);
bool log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) PRINTF_FMT(2, 3);
#define LOG_ERR(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define LOG_WARN(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define LOG_INFO(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define LOG_DBG(...) \
    do { if (log_enabled(LOG_LVL_DEBUG)) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)

/* Time. */
int64_t time_wall_ms(void);   /* milliseconds since the epoch */
int64_t time_mono_ms(void);   /* monotonic milliseconds */
int64_t time_mono_us(void);
/* Formats seconds since the epoch in XenAPI's form, 20240131T23:59:59Z.
 * buf must hold at least 32 bytes. */
void time_format_xenapi(int64_t secs, char *buf);
/* Parses XenAPI's datetime forms (20240131T23:59:59Z, with or without the
 * Z, with dashes or fractional seconds, or a +HH:MM offset).  Returns 0 or
 * -EINVAL. */
int time_parse_xenapi(const char *s, int64_t *ret_secs);

/* UUIDs: random (version 4) in the lower-case 8-4-4-4-12 form. buf must
 * hold at least 37 bytes. */
void uuid_generate(char *buf);
bool uuid_is_valid(const char *s);

/* Fills buf with n cryptographically random bytes; aborts on failure. */
void random_bytes(void *buf, size_t n);

/* Reads a whole file (at most max bytes); returns 0 or -errno. */
int read_file(const char *path, size_t max, char **ret_data, size_t *ret_len);
/* Writes a file atomically (temp file, fsync, rename); returns 0 or -errno. */
int write_file_atomic(const char *path, const void *data, size_t len, int mode);

/* String helpers. */
bool str_starts_with(const char *s, const char *prefix);
int str_to_int64(const char *s, int64_t *ret_v);   /* whole string, base 10 */
int str_to_double(const char *s, double *ret_v);
uint64_t hash_bytes(const void *p, size_t n, uint64_t seed);
/* True if s is valid UTF-8 holding only characters XML 1.0 allows (no C0
 * controls other than tab, LF and CR; no surrogates, U+FFFE or U+FFFF).
 * Strings stored through the API must pass, or an XML-RPC client could
 * no longer read them back. */
bool str_is_xml_text(const char *s, size_t n);
/* The length of the valid UTF-8 sequence starting at s (a lead byte of
 * 0x80 or more), or 0 if it is not valid (overlong, surrogate, beyond
 * U+10FFFF, truncated by end). */
size_t utf8_sequence_length(const unsigned char *s, const unsigned char *end);
/* Writes code point cp as UTF-8 into out (4 bytes room); returns the
 * length. */
size_t utf8_encode(uint32_t cp, char *out);
static inline uint64_t hash_string(const char *s, uint64_t seed);

#include <string.h>
static inline uint64_t
hash_string(const char *s, uint64_t seed)
{
    return hash_bytes(s, strlen(s), seed);
}

#endif
