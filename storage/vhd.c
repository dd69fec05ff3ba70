/* vhd.c — the VHD library: parsing and checking images, reads through
 * differencing chains, crash-safe writes and allocation, and the
 * operations the SR drivers build on (snapshot, coalesce, resize,
 * reparent, raw import/export).  vhd.h gives the API; docs/vhd.md the
 * on-disk layout we write and why each update order is crash-safe.
 *
 * Everything on disk is big-endian; the footer and header are kept as raw
 * bytes with a valid checksum (so that rewriting them is a plain copy) and
 * the fields we use are decoded into struct vhd. */
#include <config.h>
#include "vhd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#include "blockdev.h"
#include "util.h"

#define SECTOR 512u
#define FOOTER_SIZE 512
#define HEADER_SIZE 1024
#define BAT_UNUSED 0xffffffffu
#define VHD_EPOCH 946684800         /* 2000-01-01T00:00:00Z in Unix time */
#define MAX_BLOCK_SIZE (256u << 20)
/* Bitmaps cached per image before the cache is emptied: 16 MiB holds the
 * bitmaps of 32 GiB of 2 MiB blocks. */
#define BITMAP_CACHE_BYTES (16u << 20)
/* Largest buffer the bulk operations (import, export, coalesce) use. */
#define MAX_CHUNK (4u << 20)
#define MAX_PROBLEMS 20

/* Footer fields (byte offsets). */
enum {
    F_COOKIE = 0, F_FEATURES = 8, F_VERSION = 12, F_DATA_OFFSET = 16,
    F_TIMESTAMP = 24, F_CREATOR_APP = 28, F_CREATOR_VER = 32,
    F_CREATOR_OS = 36, F_ORIG_SIZE = 40, F_CUR_SIZE = 48, F_GEOMETRY = 56,
    F_TYPE = 60, F_CHECKSUM = 64, F_UUID = 68, F_SAVED_STATE = 84,
    F_HIDDEN = 85,
};

/* Dynamic disk header fields. */
enum {
    H_COOKIE = 0, H_DATA_OFFSET = 8, H_TABLE_OFFSET = 16, H_VERSION = 24,
    H_MAX_ENTRIES = 28, H_BLOCK_SIZE = 32, H_CHECKSUM = 36,
    H_PARENT_UUID = 40, H_PARENT_TS = 56, H_PARENT_NAME = 64,
    H_LOCATORS = 576,
};
#define PARENT_NAME_BYTES 512
#define N_LOCATORS 8
#define LOCATOR_SIZE 24
/* Locator entry fields. */
enum { L_CODE = 0, L_SPACE = 4, L_LEN = 8, L_OFFSET = 16 };

/* Platform codes. */
#define PLAT_NONE 0u
#define PLAT_WI2R 0x57693272u       /* "Wi2r", deprecated */
#define PLAT_WI2K 0x5769326bu       /* "Wi2k", deprecated */
#define PLAT_W2RU 0x57327275u       /* "W2ru": relative, UTF-16LE */
#define PLAT_W2KU 0x57326b75u       /* "W2ku": absolute, UTF-16LE */
#define PLAT_MAC  0x4d616320u       /* "Mac ": alias blob */
#define PLAT_MACX 0x4d616358u       /* "MacX": file:// URL, UTF-8 */

struct vhd {
    char *path;
    int fd;
    bool read_only;
    enum vhd_type type;
    uint8_t footer[FOOTER_SIZE];    /* as on disk, valid checksum */
    uint8_t header[HEADER_SIZE];    /* as on disk (not for fixed disks) */
    uint64_t size;                  /* virtual size, multiple of 512 */
    uint64_t file_size;             /* when opened */
    /* Where the footer at the end lives; new blocks go here unless they
     * fit below it (see data_end). */
    uint64_t footer_off;
    /* The end of the last structure (header, BAT, batmap, locators,
     * blocks), sector-aligned.  Normally the footer follows at once; in
     * a container (a logical volume, docs/lvhd.md) the footer sits at the
     * container's end and new blocks go into the room between. */
    uint64_t data_end;
    /* The file cannot grow: a block device, or opened with
     * VHD_OPEN_CONTAINER.  The footer stays at the end and writes that
     * would need more room fail with -ENOSPC. */
    bool container;
    bool footer_bad;                /* end footer damaged: copy at 0 used */
    bool copy_bad;                  /* copy at 0 damaged or different */
    bool hidden_in_copy;            /* see footers_match() */

    uint64_t header_off;
    uint64_t bat_off;
    uint32_t bat_entries;
    uint32_t *bat;                  /* host order; BAT_UNUSED or sector */
    uint32_t block_size;
    unsigned block_shift;
    uint32_t spb;                   /* sectors per block */
    uint32_t bitmap_size;           /* bytes, a multiple of 512 */

    /* Bitmap cache, indexed by block; dirty ones are written by
     * vhd_flush(). */
    uint8_t **bitmaps;
    uint8_t *bitmap_dirty;
    uint32_t *dirty_list;
    size_t n_dirty, dirty_cap;
    size_t n_cached;
    size_t cache_limit;             /* bytes */
    /* BAT entries changed in memory since the last flush: [lo, hi). */
    uint32_t bat_dirty_lo, bat_dirty_hi;
    bool data_dirty;                /* written since the last fdatasync */

    struct vhd *parent;             /* open parent (a chain), or NULL */
    char *parent_path;
};

/* ---- small helpers ---- */

static uint16_t
get_be16(const uint8_t *p)
{
    return (uint16_t) (p[0] << 8 | p[1]);
}

static uint32_t
get_be32(const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
           | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t
get_be64(const uint8_t *p)
{
    return (uint64_t) get_be32(p) << 32 | get_be32(p + 4);
}

static void
put_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static void
put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, v >> 32);
    put_be32(p + 4, v);
}

static uint64_t
round_up(uint64_t x, uint64_t align)
{
    return (x + align - 1) / align * align;
}

/* The format's checksum: the one's complement of the byte sum, the
 * checksum field itself counted as zeros. */
static uint32_t
vhd_checksum(const uint8_t *p, size_t n, size_t csum_off)
{
    uint32_t sum = 0;

    for (size_t i = 0; i < n; i++) {
        if (i < csum_off || i >= csum_off + 4) {
            sum += p[i];
        }
    }
    return ~sum;
}

static void
seal_footer(uint8_t *f)
{
    put_be32(f + F_CHECKSUM, vhd_checksum(f, FOOTER_SIZE, F_CHECKSUM));
}

static void
seal_header(uint8_t *h)
{
    put_be32(h + H_CHECKSUM, vhd_checksum(h, HEADER_SIZE, H_CHECKSUM));
}

static bool
footer_valid(const uint8_t *f)
{
    uint32_t sum = get_be32(f + F_CHECKSUM);

    if (memcmp(f + F_COOKIE, "conectix", 8)) {
        return false;
    }
    if (vhd_checksum(f, FOOTER_SIZE, F_CHECKSUM) == sum) {
        return true;
    }
    /* Early XenServer tools set the hidden byte without updating the
     * checksum; their images are still sound. */
    if (f[F_HIDDEN] && !memcmp(f + F_CREATOR_APP, "tap", 3)) {
        uint8_t copy[FOOTER_SIZE];

        memcpy(copy, f, FOOTER_SIZE);
        copy[F_HIDDEN] = 0;
        return vhd_checksum(copy, FOOTER_SIZE, F_CHECKSUM) == sum;
    }
    return false;
}

/* Whether the footer copy agrees with the end footer.  Early XenServer
 * tools set the hidden flag in the copy only, so that byte (and so the
 * checksum) may differ. */
static bool
footers_match(const uint8_t *copy, const uint8_t *end)
{
    return !memcmp(copy, end, F_CHECKSUM)
           && !memcmp(copy + F_UUID, end + F_UUID, F_HIDDEN - F_UUID)
           && !memcmp(copy + F_HIDDEN + 1, end + F_HIDDEN + 1,
                      FOOTER_SIZE - F_HIDDEN - 1);
}

static int PRINTF_FMT(3, 4)
set_err(char **ret_err, int rc, const char *fmt, ...)
{
    if (ret_err) {
        struct ds ds = DS_EMPTY;
        va_list ap;

        va_start(ap, fmt);
        ds_put_vfmt(&ds, fmt, ap);
        va_end(ap);
        free(*ret_err);
        *ret_err = ds_steal(&ds);
    }
    return rc;
}

static int
pread_all(int fd, void *buf_, size_t len, uint64_t off)
{
    uint8_t *buf = buf_;

    while (len) {
        ssize_t r = pread(fd, buf, len, off);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (r == 0) {
            return -EIO;
        }
        buf += r;
        len -= r;
        off += r;
    }
    return 0;
}

static int
pwrite_all(int fd, const void *buf_, size_t len, uint64_t off)
{
    const uint8_t *buf = buf_;

    while (len) {
        ssize_t r = pwrite(fd, buf, len, off);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        buf += r;
        len -= r;
        off += r;
    }
    return 0;
}

/* Vectored I/O over at most 2 buffers, resumed after short transfers. */
static int
pv_all(int fd, struct iovec *iov, int n, uint64_t off, bool write)
{
    while (n > 0) {
        ssize_t r = write ? pwritev(fd, iov, n, off) : preadv(fd, iov, n, off);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (r == 0) {
            return -EIO;
        }
        off += r;
        while (n > 0 && (size_t) r >= iov->iov_len) {
            r -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *) iov->iov_base + r;
            iov->iov_len -= r;
        }
    }
    return 0;
}

static bool
is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;

    /* Compare the buffer with itself shifted by 16 bytes once its first
     * 16 bytes are known to be zero: memcmp is much faster than a loop. */
    if (len <= 16) {
        for (size_t i = 0; i < len; i++) {
            if (p[i]) {
                return false;
            }
        }
        return true;
    }
    for (size_t i = 0; i < 16; i++) {
        if (p[i]) {
            return false;
        }
    }
    return !memcmp(p, p + 16, len - 16);
}

static void
uuid_format(const uint8_t *u, char *buf)
{
    snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2], u[3], u[4], u[5],
             u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
}

static int
uuid_parse(const char *s, uint8_t *u)
{
    int n = 0;

    if (!uuid_is_valid(s)) {
        return -EINVAL;
    }
    for (const char *p = s; *p && n < 16; p++) {
        if (*p == '-') {
            continue;
        }
        unsigned hi, lo;
        if (sscanf(p, "%1x%1x", &hi, &lo) != 2) {
            return -EINVAL;
        }
        u[n++] = hi << 4 | lo;
        p++;
    }
    return n == 16 ? 0 : -EINVAL;
}

/* The CHS geometry the specification derives from a size; readers that
 * trust geometry over current_size (Virtual PC) see this many sectors. */
static uint32_t
chs_geometry(uint64_t size)
{
    uint64_t secs = size / SECTOR;
    uint32_t spt, heads, cth;

    if (secs > 65535ull * 16 * 255) {
        secs = 65535ull * 16 * 255;
    }
    if (secs >= 65535ull * 16 * 63) {
        spt = 255;
        heads = 16;
        cth = secs / spt;
    } else {
        spt = 17;
        cth = secs / spt;
        heads = (cth + 1023) / 1024;
        if (heads < 4) {
            heads = 4;
        }
        if (cth >= heads * 1024 || heads > 16) {
            spt = 31;
            heads = 16;
            cth = secs / spt;
        }
        if (cth >= heads * 1024) {
            spt = 63;
            heads = 16;
            cth = secs / spt;
        }
    }
    return (cth / heads) << 16 | heads << 8 | spt;
}

static uint32_t
vhd_time(int64_t unix_secs)
{
    return (uint32_t) (unix_secs - VHD_EPOCH);
}

static char *
dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (!slash) {
        return xstrdup(".");
    }
    if (slash == path) {
        return xstrdup("/");
    }
    return xmemdup0(path, slash - path);
}

static const char *
base_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash ? slash + 1 : path;
}

/* The absolute, symlink-free form of a path whose last component need not
 * exist yet (a file being created). */
static int
absolute_path(const char *path, char **ret_path)
{
    char *dir = dir_of(path), *real;
    int rc = 0;

    real = realpath(dir, NULL);
    if (!real) {
        rc = -errno;
        goto out;
    }
    *ret_path = xasprintf("%s/%s", strcmp(real, "/") ? real : "",
                          base_of(path));
out:
    free(real);
    free(dir);
    return rc;
}

/* The absolute path of an existing image as locators record it: symlinks
 * resolved for files, but not for a block device, whose /dev/VG/LV name
 * is a link to a dm-N node that changes at each activation. */
static int
image_path(const char *path, char **ret_path)
{
    struct stat st;
    char *real;

    if (!stat(path, &st) && S_ISBLK(st.st_mode)) {
        return absolute_path(path, ret_path);
    }
    real = realpath(path, NULL);
    if (!real) {
        return -errno;
    }
    *ret_path = real;
    return 0;
}

/* ---- UTF-8 / UTF-16 for locators and the parent name ---- */

/* Decodes one UTF-8 character; returns its length or 0 if invalid. */
static int
utf8_decode(const uint8_t *s, uint32_t *ret_cp)
{
    uint32_t cp;
    int n;

    if (s[0] < 0x80) {
        *ret_cp = s[0];
        return 1;
    } else if ((s[0] & 0xe0) == 0xc0) {
        cp = s[0] & 0x1f;
        n = 2;
    } else if ((s[0] & 0xf0) == 0xe0) {
        cp = s[0] & 0x0f;
        n = 3;
    } else if ((s[0] & 0xf8) == 0xf0) {
        cp = s[0] & 0x07;
        n = 4;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800)
        || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
        || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    *ret_cp = cp;
    return n;
}

static void
put_utf16_unit(struct ds *out, uint16_t u, bool big_endian)
{
    char b[2];

    b[big_endian ? 0 : 1] = u >> 8;
    b[big_endian ? 1 : 0] = u & 0xff;
    ds_put(out, b, 2);
}

/* Appends s as UTF-16; -EINVAL if s is not UTF-8. */
static int
utf8_to_utf16(const char *s, bool big_endian, struct ds *out)
{
    const uint8_t *p = (const uint8_t *) s;

    while (*p) {
        uint32_t cp;
        int n = utf8_decode(p, &cp);
        if (!n) {
            return -EINVAL;
        }
        p += n;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            put_utf16_unit(out, 0xd800 | cp >> 10, big_endian);
            put_utf16_unit(out, 0xdc00 | (cp & 0x3ff), big_endian);
        } else {
            put_utf16_unit(out, cp, big_endian);
        }
    }
    return 0;
}

/* Decodes UTF-16 up to len bytes or a NUL unit; NULL if malformed. */
static char *
utf16_to_utf8(const uint8_t *p, size_t len, bool big_endian)
{
    struct ds out = DS_EMPTY;

    for (size_t i = 0; i + 1 < len; i += 2) {
        uint32_t u = big_endian ? get_be16(p + i)
                                : (uint32_t) (p[i + 1] << 8 | p[i]);
        if (!u) {
            break;
        }
        if (u >= 0xd800 && u <= 0xdbff && i + 3 < len) {
            uint32_t lo = big_endian ? get_be16(p + i + 2)
                                     : (uint32_t) (p[i + 3] << 8 | p[i + 2]);
            if (lo < 0xdc00 || lo > 0xdfff) {
                goto bad;
            }
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            i += 2;
        } else if (u >= 0xd800 && u <= 0xdfff) {
            goto bad;
        }
        if (u < 0x80) {
            ds_put_char(&out, u);
        } else if (u < 0x800) {
            ds_put_char(&out, 0xc0 | u >> 6);
            ds_put_char(&out, 0x80 | (u & 0x3f));
        } else if (u < 0x10000) {
            ds_put_char(&out, 0xe0 | u >> 12);
            ds_put_char(&out, 0x80 | ((u >> 6) & 0x3f));
            ds_put_char(&out, 0x80 | (u & 0x3f));
        } else {
            ds_put_char(&out, 0xf0 | u >> 18);
            ds_put_char(&out, 0x80 | ((u >> 12) & 0x3f));
            ds_put_char(&out, 0x80 | ((u >> 6) & 0x3f));
            ds_put_char(&out, 0x80 | (u & 0x3f));
        }
    }
    return ds_steal(&out);
bad:
    ds_destroy(&out);
    return NULL;
}

/* ---- sector bitmaps (bit 7 of byte 0 is the block's first sector) ---- */

static bool
bit_test(const uint8_t *bm, uint32_t i)
{
    return bm[i >> 3] & (0x80 >> (i & 7));
}

static void
bits_set(uint8_t *bm, uint32_t from, uint32_t to)
{
    while (from < to && (from & 7)) {
        bm[from >> 3] |= 0x80 >> (from & 7);
        from++;
    }
    if (to - from >= 8) {
        memset(bm + (from >> 3), 0xff, (to - from) >> 3);
        from += (to - from) & ~7u;
    }
    while (from < to) {
        bm[from >> 3] |= 0x80 >> (from & 7);
        from++;
    }
}

/* The first index in [i, end) whose bit differs from bit, or end. */
static uint32_t
run_end(const uint8_t *bm, uint32_t i, uint32_t end, bool bit)
{
    uint8_t same = bit ? 0xff : 0;

    while (i < end && (i & 7)) {
        if (bit_test(bm, i) != bit) {
            return i;
        }
        i++;
    }
    while (i + 8 <= end && bm[i >> 3] == same) {
        i += 8;
    }
    while (i < end && bit_test(bm, i) == bit) {
        i++;
    }
    return i;
}

/* ---- parsing and checking ---- */

struct problems {
    struct ds ds;
    int n;
};

static void PRINTF_FMT(2, 3)
problem(struct problems *pb, const char *fmt, ...)
{
    va_list ap;

    if (pb->n++ >= MAX_PROBLEMS) {
        return;
    }
    if (pb->ds.len) {
        ds_put_cstr(&pb->ds, "; ");
    }
    va_start(ap, fmt);
    ds_put_vfmt(&pb->ds, fmt, ap);
    va_end(ap);
}

static char *
problems_steal(struct problems *pb)
{
    if (pb->n > MAX_PROBLEMS) {
        ds_put_fmt(&pb->ds, "; and %d more", pb->n - MAX_PROBLEMS);
    }
    return ds_steal(&pb->ds);
}

struct extent {
    uint64_t start, end;
    int kind;                       /* enum extent_kind */
    uint32_t index;
};

enum extent_kind { X_COPY, X_HEADER, X_BAT, X_LOCATOR, X_BLOCK, X_FOOTER };

static void
describe_extent(const struct extent *x, char *buf, size_t size)
{
    static const char *const names[] = {
        "the footer copy", "the header", "the BAT", "locator", "block",
        "the footer",
    };

    if (x->kind == X_LOCATOR || x->kind == X_BLOCK) {
        snprintf(buf, size, "%s %u", names[x->kind], x->index);
    } else {
        snprintf(buf, size, "%s", names[x->kind]);
    }
}

static int
compare_extents(const void *a_, const void *b_)
{
    const struct extent *a = a_, *b = b_;

    return a->start < b->start ? -1 : a->start > b->start;
}

static uint32_t
locator_code(const struct vhd *v, int i)
{
    return get_be32(v->header + H_LOCATORS + i * LOCATOR_SIZE + L_CODE);
}

static uint32_t
locator_len(const struct vhd *v, int i)
{
    return get_be32(v->header + H_LOCATORS + i * LOCATOR_SIZE + L_LEN);
}

static uint64_t
locator_offset(const struct vhd *v, int i)
{
    return get_be64(v->header + H_LOCATORS + i * LOCATOR_SIZE + L_OFFSET);
}

/* XenServer's batmap (a header sector right after the BAT, then the map)
 * is not ours to reuse: where it ends, or 0 without one. */
static uint64_t
batmap_end(const struct vhd *v)
{
    uint64_t at = round_up(v->bat_off + (uint64_t) v->bat_entries * 4,
                           SECTOR);
    uint8_t h[SECTOR];
    uint64_t off, len, end = 0;

    if (at > v->file_size || v->file_size - at < SECTOR
        || pread_all(v->fd, h, SECTOR, at) || memcmp(h, "tdbatmap", 8)) {
        return 0;
    }
    off = get_be64(h + 8);
    len = (uint64_t) get_be32(h + 16) * SECTOR;
    end = at + SECTOR;
    if (off <= v->file_size && len <= v->file_size - off) {
        end = MAX(end, off + len);
    }
    return end;
}

/* Checks that every structure lies inside the file and that none
 * overlaps another; computes the footer's place when the end footer was
 * damaged (just past the last structure). */
static void
check_layout(struct vhd *v, struct problems *pb)
{
    size_t n = 0, cap = v->bat_entries + 4 + N_LOCATORS;
    struct extent *xs = xmalloc(cap * sizeof *xs);
    uint64_t span = (uint64_t) v->bitmap_size + v->block_size;
    uint64_t max_end = 0;
    char a[32], b[32];

    xs[n++] = (struct extent) { 0, FOOTER_SIZE, X_COPY, 0 };
    xs[n++] = (struct extent) { v->header_off, v->header_off + HEADER_SIZE,
                                X_HEADER, 0 };
    xs[n++] = (struct extent) { v->bat_off,
                                v->bat_off + (uint64_t) v->bat_entries * 4,
                                X_BAT, 0 };
    for (int i = 0; i < N_LOCATORS; i++) {
        uint64_t off = locator_offset(v, i), len = locator_len(v, i);
        if (locator_code(v, i) == PLAT_NONE || !len) {
            continue;
        }
        if (off > v->file_size || len > v->file_size - off) {
            problem(pb, "locator %d lies past the end of the file", i);
            continue;
        }
        xs[n++] = (struct extent) { off, off + len, X_LOCATOR, i };
    }
    for (uint32_t i = 0; i < v->bat_entries; i++) {
        uint64_t off = (uint64_t) v->bat[i] * SECTOR;
        if (v->bat[i] == BAT_UNUSED) {
            continue;
        }
        if (off + span > v->file_size) {
            problem(pb, "BAT entry %u points past the end of the file", i);
            continue;
        }
        xs[n++] = (struct extent) { off, off + span, X_BLOCK, i };
    }
    for (size_t i = 0; i < n; i++) {
        max_end = MAX(max_end, xs[i].end);
    }
    max_end = MAX(max_end, batmap_end(v));
    v->data_end = round_up(max_end, SECTOR);
    if (v->footer_bad) {
        /* In a container the footer belongs at the container's end, not
         * after the data. */
        v->footer_off = v->container ? v->file_size - FOOTER_SIZE
                                     : v->data_end;
    }
    xs[n++] = (struct extent) { v->footer_off, v->footer_off + FOOTER_SIZE,
                                X_FOOTER, 0 };

    qsort(xs, n, sizeof *xs, compare_extents);
    for (size_t i = 1, last = 0; i < n; i++) {
        if (xs[i].start < xs[last].end) {
            describe_extent(&xs[i], a, sizeof a);
            describe_extent(&xs[last], b, sizeof b);
            problem(pb, "%s overlaps %s", a, b);
        }
        if (xs[i].end > xs[last].end) {
            last = i;
        }
    }
    free(xs);
}

/* Reads and validates the footer(s), header and BAT.  Problems that make
 * the image unsafe to use go to pb; a nonzero return means parsing could
 * not go on (-EINVAL) or the file could not be read. */
static int
parse_image(struct vhd *v, struct problems *pb)
{
    uint8_t end[FOOTER_SIZE], copy[FOOTER_SIZE];
    bool end_ok, copy_ok;
    struct stat st;
    uint64_t needed;
    uint32_t bs;
    int rc;

    if (fstat(v->fd, &st)) {
        return -errno;
    }
    if (S_ISBLK(st.st_mode)) {
        /* A logical volume: its size is fixed, so it is a container. */
        uint64_t bytes;

        if (ioctl(v->fd, BLKGETSIZE64, &bytes)) {
            return -errno;
        }
        v->file_size = bytes;
        v->container = true;
    } else if (!S_ISREG(st.st_mode)) {
        problem(pb, "not a regular file or block device");
        return -EINVAL;
    } else {
        v->file_size = st.st_size;
    }
    if (v->file_size < FOOTER_SIZE) {
        problem(pb, "file too small (%llu bytes)",
                (unsigned long long) v->file_size);
        return -EINVAL;
    }
    rc = pread_all(v->fd, end, FOOTER_SIZE, v->file_size - FOOTER_SIZE);
    if (!rc) {
        rc = pread_all(v->fd, copy, FOOTER_SIZE, 0);
    }
    if (rc) {
        return rc;
    }
    end_ok = footer_valid(end);
    copy_ok = footer_valid(copy);
    if (end_ok) {
        memcpy(v->footer, end, FOOTER_SIZE);
        v->footer_off = v->file_size - FOOTER_SIZE;
    } else if (copy_ok && get_be32(copy + F_TYPE) != VHD_TYPE_FIXED) {
        /* A crash or a torn write at the end of the file: the copy at the
         * start describes the same image. */
        memcpy(v->footer, copy, FOOTER_SIZE);
        v->footer_bad = true;
    } else {
        problem(pb, "no valid footer (bad cookie or checksum)");
        return -EINVAL;
    }

    v->type = get_be32(v->footer + F_TYPE);
    if (v->type != VHD_TYPE_FIXED && v->type != VHD_TYPE_DYNAMIC
        && v->type != VHD_TYPE_DIFF) {
        problem(pb, "unsupported disk type %u", (unsigned) v->type);
        return -EINVAL;
    }
    if (get_be32(v->footer + F_VERSION) >> 16 != 1) {
        problem(pb, "unsupported format version %#x",
                get_be32(v->footer + F_VERSION));
        return -EINVAL;
    }
    v->size = get_be64(v->footer + F_CUR_SIZE) & ~(uint64_t) (SECTOR - 1);
    if (v->type == VHD_TYPE_FIXED) {
        if (v->size > v->footer_off) {
            problem(pb, "virtual size %llu exceeds the data in the file",
                    (unsigned long long) v->size);
            return -EINVAL;
        }
        return 0;
    }
    if (end_ok) {
        v->copy_bad = !copy_ok || !footers_match(copy, end);
        v->hidden_in_copy = copy_ok && copy[F_HIDDEN];
    }

    v->header_off = get_be64(v->footer + F_DATA_OFFSET);
    if (v->header_off > v->file_size
        || v->file_size - v->header_off < HEADER_SIZE) {
        problem(pb, "header offset %llu lies outside the file",
                (unsigned long long) v->header_off);
        return -EINVAL;
    }
    rc = pread_all(v->fd, v->header, HEADER_SIZE, v->header_off);
    if (rc) {
        return rc;
    }
    if (memcmp(v->header + H_COOKIE, "cxsparse", 8)) {
        problem(pb, "bad header cookie");
        return -EINVAL;
    }
    if (vhd_checksum(v->header, HEADER_SIZE, H_CHECKSUM)
        != get_be32(v->header + H_CHECKSUM)) {
        problem(pb, "bad header checksum");
        return -EINVAL;
    }
    if (get_be32(v->header + H_VERSION) >> 16 != 1) {
        problem(pb, "unsupported header version %#x",
                get_be32(v->header + H_VERSION));
        return -EINVAL;
    }
    bs = get_be32(v->header + H_BLOCK_SIZE);
    if (bs < SECTOR || bs > MAX_BLOCK_SIZE || (bs & (bs - 1))) {
        problem(pb, "unsupported block size %u", bs);
        return -EINVAL;
    }
    v->block_size = bs;
    v->block_shift = __builtin_ctz(bs);
    v->spb = bs / SECTOR;
    v->bitmap_size = round_up((v->spb + 7) / 8, SECTOR);
    v->bat_entries = get_be32(v->header + H_MAX_ENTRIES);
    v->bat_off = get_be64(v->header + H_TABLE_OFFSET);
    needed = (v->size + bs - 1) / bs;
    if (needed > v->bat_entries) {
        problem(pb, "BAT has %u entries, the virtual size needs %llu",
                v->bat_entries, (unsigned long long) needed);
        return -EINVAL;
    }
    if (v->bat_off > v->file_size
        || (v->file_size - v->bat_off) / 4 < v->bat_entries) {
        problem(pb, "BAT lies past the end of the file");
        return -EINVAL;
    }
    v->bat = xmalloc((size_t) v->bat_entries * 4 + 1);
    rc = pread_all(v->fd, v->bat, (size_t) v->bat_entries * 4, v->bat_off);
    if (rc) {
        return rc;
    }
    for (uint32_t i = 0; i < v->bat_entries; i++) {
        v->bat[i] = get_be32((const uint8_t *) &v->bat[i]);
    }
    v->bitmaps = xcalloc(v->bat_entries + 1, sizeof *v->bitmaps);
    v->bitmap_dirty = xcalloc(v->bat_entries + 1, 1);

    if (v->type == VHD_TYPE_DIFF
        && is_zero(v->header + H_PARENT_UUID, 16)) {
        problem(pb, "differencing disk without a parent UUID");
    }
    for (int i = 0; i < N_LOCATORS; i++) {
        switch (locator_code(v, i)) {
        case PLAT_NONE: case PLAT_WI2R: case PLAT_WI2K: case PLAT_W2RU:
        case PLAT_W2KU: case PLAT_MAC: case PLAT_MACX:
            break;
        default:
            problem(pb, "locator %d has unknown platform code %#x", i,
                    locator_code(v, i));
        }
    }
    check_layout(v, pb);
    return 0;
}

static struct vhd *
vhd_alloc(const char *path)
{
    struct vhd *v = xcalloc(1, sizeof *v);

    v->path = xstrdup(path);
    v->fd = -1;
    v->cache_limit = BITMAP_CACHE_BYTES;
    return v;
}

static void
vhd_free(struct vhd *v)
{
    if (!v) {
        return;
    }
    if (v->bitmaps) {
        for (uint32_t i = 0; i < v->bat_entries; i++) {
            free(v->bitmaps[i]);
        }
    }
    free(v->bitmaps);
    free(v->bitmap_dirty);
    free(v->dirty_list);
    free(v->bat);
    if (v->fd >= 0) {
        close(v->fd);
    }
    vhd_free(v->parent);
    free(v->parent_path);
    free(v->path);
    free(v);
}

/* Puts a valid footer back at the end of the file and at offset 0 after a
 * crash damaged either.  The end footer is authoritative: every update
 * writes it before the copy. */
static int
repair_footers(struct vhd *v)
{
    int rc;

    if (v->footer_bad) {
        rc = pwrite_all(v->fd, v->footer, FOOTER_SIZE, v->footer_off);
        if (rc) {
            return rc;
        }
        if (!v->container) {
            if (ftruncate(v->fd, v->footer_off + FOOTER_SIZE)) {
                return -errno;
            }
            v->file_size = v->footer_off + FOOTER_SIZE;
        }
    }
    if (v->footer_bad || v->copy_bad) {
        rc = pwrite_all(v->fd, v->footer, FOOTER_SIZE, 0);
        if (rc) {
            return rc;
        }
        if (fdatasync(v->fd)) {
            return -errno;
        }
    }
    v->footer_bad = v->copy_bad = false;
    return 0;
}

int
vhd_open(const char *path, bool read_only, struct vhd **ret_vhd,
         char **ret_err)
{
    return vhd_open_ex(path, read_only ? VHD_OPEN_READ_ONLY : 0, ret_vhd,
                       ret_err);
}

int
vhd_open_ex(const char *path, unsigned flags, struct vhd **ret_vhd,
            char **ret_err)
{
    struct problems pb = { DS_EMPTY, 0 };
    struct vhd *v = vhd_alloc(path);
    bool read_only = flags & VHD_OPEN_READ_ONLY;
    int rc;

    v->read_only = read_only;
    /* Set before parsing: it decides where a damaged footer belongs. */
    v->container = flags & VHD_OPEN_CONTAINER;
    v->fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (v->fd < 0) {
        rc = set_err(ret_err, -errno, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!read_only && flock(v->fd, LOCK_EX | LOCK_NB)) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        set_err(ret_err, rc, "%s: open for writing elsewhere", path);
        goto out;
    }
    rc = parse_image(v, &pb);
    if (!rc && pb.n) {
        rc = -EINVAL;
    }
    if (rc) {
        if (pb.n) {
            char *msg = problems_steal(&pb);
            set_err(ret_err, rc, "%s: not a valid VHD: %s", path, msg);
            free(msg);
        } else {
            set_err(ret_err, rc, "%s: %s", path, strerror(-rc));
        }
        goto out;
    }
    if (!read_only) {
        rc = repair_footers(v);
        if (rc) {
            set_err(ret_err, rc, "%s: repairing the footer: %s", path,
                    strerror(-rc));
            goto out;
        }
    }
    *ret_vhd = v;
    v = NULL;
    rc = 0;
out:
    ds_destroy(&pb.ds);
    vhd_free(v);
    return rc;
}

void
vhd_close(struct vhd *v)
{
    if (!v) {
        return;
    }
    if (!v->read_only) {
        int rc = vhd_flush(v);
        if (rc) {
            LOG_ERR("%s: flush on close failed: %s", v->path, strerror(-rc));
        }
    }
    vhd_free(v);
}

uint64_t
vhd_virtual_size(const struct vhd *v)
{
    return v->size;
}

const char *
vhd_type_name(enum vhd_type type)
{
    switch (type) {
    case VHD_TYPE_FIXED:
        return "fixed";
    case VHD_TYPE_DYNAMIC:
        return "dynamic";
    case VHD_TYPE_DIFF:
        return "differencing";
    }
    return "unknown";
}

/* ---- parent locators ---- */

/* A candidate path for the parent from locator i, or NULL. */
static char *
locator_path(struct vhd *v, int i, const char *child_dir)
{
    uint32_t code = locator_code(v, i), len = locator_len(v, i);
    uint64_t off = locator_offset(v, i);
    char *raw_path = NULL, *path = NULL;
    uint8_t *data;

    if ((code != PLAT_MACX && code != PLAT_W2KU && code != PLAT_W2RU)
        || !len || len > 65536
        || off > v->file_size || len > v->file_size - off) {
        return NULL;
    }
    data = xmalloc(len + 1);
    if (pread_all(v->fd, data, len, off)) {
        goto out;
    }
    if (code == PLAT_MACX) {
        data[len] = 0;
        if (str_starts_with((char *) data, "file://")) {
            raw_path = xstrdup((char *) data + 7);
        }
    } else {
        raw_path = utf16_to_utf8(data, len, false);
        if (raw_path) {
            for (char *p = raw_path; *p; p++) {
                if (*p == '\\') {
                    *p = '/';
                }
            }
            /* Windows absolute paths carry a drive letter. */
            if (((raw_path[0] | 0x20) >= 'a' && (raw_path[0] | 0x20) <= 'z')
                && raw_path[1] == ':') {
                memmove(raw_path, raw_path + 2, strlen(raw_path + 2) + 1);
            }
        }
    }
    if (!raw_path || !*raw_path) {
        goto out;
    }
    path = raw_path[0] == '/' ? xstrdup(raw_path)
                              : xasprintf("%s/%s", child_dir, raw_path);
out:
    free(raw_path);
    free(data);
    return path;
}

/* Finds and opens (read-only) the parent of a differencing disk: the first
 * locator leading to an image whose UUID is the one the header records,
 * then the header's parent name next to the child. */
static int
open_parent(struct vhd *v, struct vhd **ret_parent, char **ret_path,
            char **ret_err)
{
    struct ds tried = DS_EMPTY;
    char *child_abs = NULL, *child_dir = NULL, *name = NULL;
    char want[37];
    int rc;

    if (v->type != VHD_TYPE_DIFF) {
        return set_err(ret_err, -EINVAL, "%s: not a differencing disk",
                       v->path);
    }
    uuid_format(v->header + H_PARENT_UUID, want);
    if (image_path(v->path, &child_abs)) {
        child_abs = NULL;
    }
    child_dir = dir_of(child_abs ? child_abs : v->path);
    name = utf16_to_utf8(v->header + H_PARENT_NAME, PARENT_NAME_BYTES, true);

    for (int i = 0; i <= N_LOCATORS; i++) {
        struct vhd *p = NULL;
        char *path;

        if (i < N_LOCATORS) {
            path = locator_path(v, i, child_dir);
        } else if (name && *name && !strchr(name, '/')) {
            path = xasprintf("%s/%s", child_dir, name);
        } else {
            path = NULL;
        }
        if (!path) {
            continue;
        }
        ds_put_fmt(&tried, "%s%s", tried.len ? ", " : "", path);
        if (!vhd_open(path, true, &p, NULL)) {
            if (!memcmp(p->footer + F_UUID, v->header + H_PARENT_UUID, 16)) {
                *ret_parent = p;
                *ret_path = path;
                rc = 0;
                goto out;
            }
            vhd_free(p);
        }
        free(path);
    }
    rc = set_err(ret_err, -ENOENT, "%s: parent %s not found (tried: %s)",
                 v->path, want, tried.len ? ds_cstr(&tried) : "nothing");
out:
    ds_destroy(&tried);
    free(child_abs);
    free(child_dir);
    free(name);
    return rc;
}

int
vhd_find_parent(struct vhd *v, char **ret_path, char **ret_err)
{
    struct vhd *p = NULL;
    int rc = open_parent(v, &p, ret_path, ret_err);

    vhd_free(p);
    return rc;
}

int
vhd_chain_open(const char *leaf, bool read_only, struct vhd **ret_vhd,
               char **ret_err)
{
    struct vhd *top = NULL, *cur;
    int rc, depth = 1;

    rc = vhd_open(leaf, read_only, &top, ret_err);
    if (rc) {
        goto out;
    }
    for (cur = top; cur->type == VHD_TYPE_DIFF; cur = cur->parent) {
        if (++depth > VHD_MAX_CHAIN_DEPTH) {
            rc = set_err(ret_err, -ELOOP, "%s: chain deeper than %d", leaf,
                         VHD_MAX_CHAIN_DEPTH);
            goto out;
        }
        rc = open_parent(cur, &cur->parent, &cur->parent_path, ret_err);
        if (rc) {
            goto out;
        }
    }
    *ret_vhd = top;
    top = NULL;
out:
    vhd_close(top);
    return rc;
}

/* ---- bitmap cache and flushing ---- */

static void
mark_bitmap_dirty(struct vhd *v, uint32_t blk)
{
    if (v->bitmap_dirty[blk]) {
        return;
    }
    v->bitmap_dirty[blk] = 1;
    if (v->n_dirty == v->dirty_cap) {
        v->dirty_cap = v->dirty_cap ? v->dirty_cap * 2 : 64;
        v->dirty_list = xrealloc(v->dirty_list,
                                 v->dirty_cap * sizeof *v->dirty_list);
    }
    v->dirty_list[v->n_dirty++] = blk;
}

static void
mark_bat_dirty(struct vhd *v, uint32_t blk)
{
    if (v->bat_dirty_hi == 0) {
        v->bat_dirty_lo = blk;
        v->bat_dirty_hi = blk + 1;
    } else {
        v->bat_dirty_lo = MIN(v->bat_dirty_lo, blk);
        v->bat_dirty_hi = MAX(v->bat_dirty_hi, blk + 1);
    }
}

static int
write_bat_range(struct vhd *v, uint32_t lo, uint32_t hi)
{
    size_t n = hi - lo;
    uint8_t *buf = xmalloc(n * 4);
    int rc;

    for (size_t i = 0; i < n; i++) {
        put_be32(buf + i * 4, v->bat[lo + i]);
    }
    rc = pwrite_all(v->fd, buf, n * 4, v->bat_off + (uint64_t) lo * 4);
    free(buf);
    return rc;
}

/* Makes every write so far durable.  Data and the bitmaps of new blocks
 * were written by vhd_write(); one fdatasync makes them durable before
 * any metadata that refers to them (bitmap bits of existing blocks, BAT
 * entries of new ones) is written, and a second makes that durable. */
int
vhd_flush(struct vhd *v)
{
    int rc;

    if (!v || v->read_only) {
        return 0;
    }
    if (!v->data_dirty && !v->n_dirty && !v->bat_dirty_hi) {
        return 0;
    }
    if (fdatasync(v->fd)) {
        return -errno;
    }
    v->data_dirty = false;
    if (!v->n_dirty && !v->bat_dirty_hi) {
        return 0;
    }
    while (v->n_dirty) {
        uint32_t blk = v->dirty_list[v->n_dirty - 1];
        rc = pwrite_all(v->fd, v->bitmaps[blk], v->bitmap_size,
                        (uint64_t) v->bat[blk] * SECTOR);
        if (rc) {
            return rc;
        }
        v->bitmap_dirty[blk] = 0;
        v->n_dirty--;
    }
    if (v->bat_dirty_hi) {
        rc = write_bat_range(v, v->bat_dirty_lo, v->bat_dirty_hi);
        if (rc) {
            return rc;
        }
        v->bat_dirty_lo = v->bat_dirty_hi = 0;
    }
    if (fdatasync(v->fd)) {
        return -errno;
    }
    return 0;
}

void
vhd_set_bitmap_cache_size(struct vhd *v, size_t bytes)
{
    for (; v; v = v->parent) {
        v->cache_limit = bytes;
    }
}

/* Empties the bitmap cache when it is full, writing dirty bitmaps first. */
static int
cache_make_room(struct vhd *v)
{
    int rc;

    if ((uint64_t) v->n_cached * v->bitmap_size < v->cache_limit) {
        return 0;
    }
    rc = vhd_flush(v);
    if (rc) {
        return rc;
    }
    for (uint32_t i = 0; i < v->bat_entries; i++) {
        free(v->bitmaps[i]);
        v->bitmaps[i] = NULL;
    }
    v->n_cached = 0;
    return 0;
}

static int
get_bitmap(struct vhd *v, uint32_t blk, uint8_t **ret_bm)
{
    uint8_t *bm;
    int rc;

    if (v->bitmaps[blk]) {
        *ret_bm = v->bitmaps[blk];
        return 0;
    }
    rc = cache_make_room(v);
    if (rc) {
        return rc;
    }
    bm = xmalloc(v->bitmap_size);
    rc = pread_all(v->fd, bm, v->bitmap_size, (uint64_t) v->bat[blk] * SECTOR);
    if (rc) {
        free(bm);
        return rc;
    }
    v->bitmaps[blk] = bm;
    v->n_cached++;
    *ret_bm = bm;
    return 0;
}

/* ---- reading ---- */

static int read_range(struct vhd *v, uint8_t *buf, uint64_t off,
                      uint64_t len);
static bool range_has_data(const struct vhd *v, uint64_t off, uint64_t len);

/* Reads what lies under v: its parent's data, zeros past the parent's
 * end or without a parent. */
static int
read_below(struct vhd *v, uint8_t *buf, uint64_t off, uint64_t len)
{
    struct vhd *p = v->parent;
    uint64_t n;
    int rc;

    if (!p || off >= p->size) {
        memset(buf, 0, len);
        return 0;
    }
    n = MIN(len, p->size - off);
    rc = read_range(p, buf, off, n);
    if (!rc && n < len) {
        memset(buf + n, 0, len - n);
    }
    return rc;
}

static int
read_block(struct vhd *v, uint32_t blk, uint32_t s0, uint32_t n,
           uint8_t *buf)
{
    uint64_t base = (uint64_t) v->bat[blk] * SECTOR;
    uint64_t data = base + v->bitmap_size;
    bool have_data = false;
    uint8_t *bm;
    int rc;

    if (v->bat[blk] == BAT_UNUSED) {
        return read_below(v, buf,
                          ((uint64_t) blk << v->block_shift) + s0 * SECTOR,
                          (uint64_t) n * SECTOR);
    }
    if (v->type == VHD_TYPE_DYNAMIC) {
        /* Sectors a dynamic disk never wrote are zeros in the block (we
         * and every other writer zero-fill), so the bitmap need not be
         * read: this is what makes exporting fast. */
        return pread_all(v->fd, buf, (size_t) n * SECTOR,
                         data + (uint64_t) s0 * SECTOR);
    }
    if (!v->bitmaps[blk] && s0 == 0 && n == v->spb) {
        /* A whole block: bitmap and data in one system call. */
        struct iovec iov[2];

        rc = cache_make_room(v);
        if (rc) {
            return rc;
        }
        bm = xmalloc(v->bitmap_size);
        iov[0] = (struct iovec) { bm, v->bitmap_size };
        iov[1] = (struct iovec) { buf, v->block_size };
        rc = pv_all(v->fd, iov, 2, base, false);
        if (rc) {
            free(bm);
            return rc;
        }
        v->bitmaps[blk] = bm;
        v->n_cached++;
        have_data = true;
    } else {
        rc = get_bitmap(v, blk, &bm);
        if (rc) {
            return rc;
        }
    }
    for (uint32_t i = s0; i < s0 + n;) {
        bool set = bit_test(bm, i);
        uint32_t j = run_end(bm, i, s0 + n, set);
        uint8_t *dst = buf + (uint64_t) (i - s0) * SECTOR;
        uint64_t len = (uint64_t) (j - i) * SECTOR;

        if (set) {
            rc = have_data ? 0 : pread_all(v->fd, dst, len,
                                           data + (uint64_t) i * SECTOR);
        } else {
            rc = read_below(v, dst,
                            ((uint64_t) blk << v->block_shift) + i * SECTOR,
                            len);
        }
        if (rc) {
            return rc;
        }
        i = j;
    }
    return 0;
}

static int
read_range(struct vhd *v, uint8_t *buf, uint64_t off, uint64_t len)
{
    if (v->type == VHD_TYPE_FIXED) {
        return pread_all(v->fd, buf, len, off);
    }
    while (len) {
        uint32_t blk = off >> v->block_shift;
        uint64_t in = off & (v->block_size - 1);
        uint64_t n = MIN(len, v->block_size - in);
        int rc = read_block(v, blk, in / SECTOR, n / SECTOR, buf);
        if (rc) {
            return rc;
        }
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

static int
check_range(const struct vhd *v, uint64_t offset, uint64_t len)
{
    if ((offset | len) & (SECTOR - 1)) {
        return -EINVAL;
    }
    if (offset > v->size || len > v->size - offset) {
        return -EINVAL;
    }
    return 0;
}

int
vhd_read(struct vhd *v, void *buf, uint64_t offset, size_t len)
{
    int rc = check_range(v, offset, len);

    return rc ? rc : read_range(v, buf, offset, len);
}

/* ---- writing ---- */

/* Gives block blk space at the end of the file and writes its bitmap
 * (bits [s0, s0 + n) set) and those sectors.  The footer goes first to
 * its new place past the block, so the file always ends with a valid
 * footer; the block then overwrites the old footer.  The rest of the
 * block lies past the old end of the file and reads as zeros.  The BAT
 * entry changes in memory only: vhd_flush() writes it once the block is
 * durable, so the on-disk BAT never points at a block that is not. */
/* Where len bytes of new structure go: into the room between the data and
 * the footer if they fit there (an image in a container, or space a crash
 * leaked), else at the footer's place, which is then moved past them.  A
 * container cannot grow: -ENOSPC. */
static int
place_new(struct vhd *v, uint64_t len, uint64_t *ret_at, bool *ret_in_room)
{
    uint64_t at = round_up(v->data_end, SECTOR);

    if (at <= v->footer_off && len <= v->footer_off - at) {
        *ret_at = at;
        *ret_in_room = true;
        return 0;
    }
    if (v->container) {
        return -ENOSPC;
    }
    *ret_at = round_up(v->footer_off, SECTOR);
    *ret_in_room = false;
    return 0;
}

/* Records that [at, at + len) now holds a structure. */
static void
placed(struct vhd *v, uint64_t at, uint64_t len)
{
    v->data_end = MAX(v->data_end, round_up(at + len, SECTOR));
}

/* Allocates block blk inside the room below the footer.  That room holds
 * whatever the volume held before, so the whole block is written, zeros
 * where buf has nothing: unwritten sectors of a block must read as zeros
 * (docs/vhd.md).  Nothing refers to the room until the BAT entry is
 * flushed, so a crash here only leaves unused space. */
static int
alloc_block_in_room(struct vhd *v, uint64_t at, uint8_t *bm, uint32_t s0,
                    uint32_t n, const uint8_t *buf)
{
    uint8_t *blk = xcalloc(1, v->block_size);
    struct iovec iov[2] = {
        { bm, v->bitmap_size },
        { blk, v->block_size },
    };
    int rc;

    memcpy(blk + (uint64_t) s0 * SECTOR, buf, (size_t) n * SECTOR);
    rc = pv_all(v->fd, iov, 2, at, true);
    free(blk);
    return rc;
}

static int
alloc_block(struct vhd *v, uint32_t blk, uint32_t s0, uint32_t n,
            const uint8_t *buf)
{
    uint64_t span = (uint64_t) v->bitmap_size + v->block_size;
    uint64_t at, new_footer;
    bool in_room;
    uint8_t *bm;
    int rc;

    rc = place_new(v, span, &at, &in_room);
    if (rc) {
        return rc;
    }
    new_footer = at + span;
    if (at / SECTOR >= BAT_UNUSED) {
        return -EFBIG;
    }
    rc = cache_make_room(v);
    if (rc) {
        return rc;
    }
    if (in_room) {
        bm = xcalloc(1, v->bitmap_size);
        bits_set(bm, s0, s0 + n);
        rc = alloc_block_in_room(v, at, bm, s0, n, buf);
        v->data_end = MAX(v->data_end, at + span);
        v->data_dirty = true;
        goto done;
    }
    rc = pwrite_all(v->fd, v->footer, FOOTER_SIZE, new_footer);
    if (rc) {
        return rc;
    }
    v->footer_off = new_footer;
    placed(v, at, span);
    bm = xcalloc(1, v->bitmap_size);
    bits_set(bm, s0, s0 + n);
    if (s0 == 0) {
        struct iovec iov[2] = {
            { bm, v->bitmap_size },
            { (void *) buf, (size_t) n * SECTOR },
        };
        rc = pv_all(v->fd, iov, 2, at, true);
    } else {
        rc = pwrite_all(v->fd, bm, v->bitmap_size, at);
        if (!rc) {
            rc = pwrite_all(v->fd, buf, (size_t) n * SECTOR,
                            at + v->bitmap_size + (uint64_t) s0 * SECTOR);
        }
    }
    v->data_dirty = true;
done:
    if (rc) {
        free(bm);
        return rc;
    }
    v->bat[blk] = at / SECTOR;
    mark_bat_dirty(v, blk);
    v->bitmaps[blk] = bm;
    v->n_cached++;
    return 0;
}

/* Writes sectors [s0, s0 + n) of block blk.  In an allocated block the
 * data is written in place first and the bitmap bits are set in memory
 * afterwards, so a crash before the next flush shows the old contents of
 * the sectors (zeros or the parent's), never unwritten ones. */
static int
write_block(struct vhd *v, uint32_t blk, uint32_t s0, uint32_t n,
            const uint8_t *buf)
{
    uint64_t data;
    uint8_t *bm;
    int rc;

    if (v->bat[blk] == BAT_UNUSED) {
        /* An unallocated block of a dynamic disk reads as zeros already,
         * and so does one of a differencing disk over parents holding no
         * data there; otherwise zeros must hide the parents' data. */
        uint64_t off = ((uint64_t) blk << v->block_shift) + s0 * SECTOR;
        if (is_zero(buf, (size_t) n * SECTOR)
            && (v->type == VHD_TYPE_DYNAMIC
                || (v->parent && !range_has_data(v->parent, off,
                                                 (uint64_t) n * SECTOR)))) {
            return 0;
        }
        return alloc_block(v, blk, s0, n, buf);
    }
    data = (uint64_t) v->bat[blk] * SECTOR + v->bitmap_size;
    rc = pwrite_all(v->fd, buf, (size_t) n * SECTOR,
                    data + (uint64_t) s0 * SECTOR);
    v->data_dirty = true;
    if (rc) {
        return rc;
    }
    rc = get_bitmap(v, blk, &bm);
    if (rc) {
        return rc;
    }
    if (run_end(bm, s0, s0 + n, true) < s0 + n) {
        bits_set(bm, s0, s0 + n);
        mark_bitmap_dirty(v, blk);
    }
    return 0;
}

int
vhd_write(struct vhd *v, const void *buf_, uint64_t offset, size_t len)
{
    const uint8_t *buf = buf_;
    int rc;

    if (v->read_only) {
        return -EROFS;
    }
    rc = check_range(v, offset, len);
    if (rc) {
        return rc;
    }
    if (v->type == VHD_TYPE_FIXED) {
        v->data_dirty = true;
        return pwrite_all(v->fd, buf, len, offset);
    }
    while (len) {
        uint32_t blk = offset >> v->block_shift;
        uint64_t in = offset & (v->block_size - 1);
        uint64_t n = MIN(len, v->block_size - in);

        rc = write_block(v, blk, in / SECTOR, n / SECTOR, buf);
        if (rc) {
            return rc;
        }
        buf += n;
        offset += n;
        len -= n;
    }
    return 0;
}

int
vhd_write_zeroes(struct vhd *v, uint64_t offset, uint64_t len)
{
    size_t zlen;
    uint8_t *zeros;
    int rc;

    if (v->read_only) {
        return -EROFS;
    }
    rc = check_range(v, offset, len);
    if (rc || !len) {
        return rc;
    }
    zlen = MIN(len, v->type == VHD_TYPE_FIXED ? MAX_CHUNK : v->block_size);
    zeros = xcalloc(1, zlen);
    while (len) {
        uint64_t n = MIN(len, zlen);

        if (v->type != VHD_TYPE_FIXED) {
            uint32_t blk = offset >> v->block_shift;
            n = MIN(n, v->block_size - (offset & (v->block_size - 1)));
            if (v->type == VHD_TYPE_DYNAMIC && v->bat[blk] == BAT_UNUSED) {
                offset += n;
                len -= n;
                continue;
            }
        }
        rc = vhd_write(v, zeros, offset, n);
        if (rc) {
            break;
        }
        offset += n;
        len -= n;
    }
    free(zeros);
    return rc;
}

/* ---- allocation queries and info ---- */

static bool
range_has_data(const struct vhd *v, uint64_t off, uint64_t len)
{
    if (off >= v->size) {
        return false;
    }
    len = MIN(len, v->size - off);
    if (v->type == VHD_TYPE_FIXED) {
        return len > 0;
    }
    for (uint64_t b = off >> v->block_shift;
         len && b <= (off + len - 1) >> v->block_shift; b++) {
        if (v->bat[b] != BAT_UNUSED) {
            return true;
        }
    }
    return v->parent && range_has_data(v->parent, off, len);
}

int
vhd_extent(struct vhd *v, uint64_t offset, uint64_t *ret_len,
           bool *ret_data)
{
    uint64_t start, pos;
    bool data;

    if (offset >= v->size) {
        return -EINVAL;
    }
    if (v->type == VHD_TYPE_FIXED) {
        *ret_len = v->size - offset;
        *ret_data = true;
        return 0;
    }
    start = offset >> v->block_shift << v->block_shift;
    data = range_has_data(v, start, v->block_size);
    for (pos = start + v->block_size; pos < v->size; pos += v->block_size) {
        if (range_has_data(v, pos, v->block_size) != data) {
            break;
        }
    }
    *ret_len = MIN(pos, v->size) - offset;
    *ret_data = data;
    return 0;
}

int
vhd_get_info(const struct vhd *v, struct vhd_info *ret)
{
    struct vhd_info info;

    memset(&info, 0, sizeof info);
    info.type = v->type;
    info.virtual_size = v->size;
    info.physical_size = v->file_size;
    {
        struct stat st;
        if (!fstat(v->fd, &st) && S_ISREG(st.st_mode)) {
            info.physical_size = st.st_size;
        }
    }
    info.data_end = v->type == VHD_TYPE_FIXED ? v->size : v->data_end;
    info.physical_utilisation = info.physical_size;
    uuid_format(v->footer + F_UUID, info.uuid);
    info.timestamp = (int64_t) get_be32(v->footer + F_TIMESTAMP) + VHD_EPOCH;
    info.hidden = v->footer[F_HIDDEN] || v->hidden_in_copy;
    memcpy(info.creator, v->footer + F_CREATOR_APP, 4);
    if (v->type != VHD_TYPE_FIXED) {
        uint64_t span = (uint64_t) v->bitmap_size + v->block_size;

        info.block_size = v->block_size;
        info.max_blocks = v->bat_entries;
        info.physical_utilisation = FOOTER_SIZE * 2 + HEADER_SIZE
            + round_up((uint64_t) v->bat_entries * 4, SECTOR);
        for (int i = 0; i < N_LOCATORS; i++) {
            if (locator_code(v, i) != PLAT_NONE) {
                info.physical_utilisation += locator_len(v, i);
            }
        }
        for (uint32_t i = 0; i < v->bat_entries; i++) {
            if (v->bat[i] != BAT_UNUSED) {
                info.allocated_blocks++;
                info.physical_utilisation += span;
            }
        }
    }
    if (v->type == VHD_TYPE_DIFF) {
        uuid_format(v->header + H_PARENT_UUID, info.parent_uuid);
        info.parent_name = utf16_to_utf8(v->header + H_PARENT_NAME,
                                         PARENT_NAME_BYTES, true);
        if (v->parent_path) {
            info.parent_path = xstrdup(v->parent_path);
        }
    }
    *ret = info;
    return 0;
}

void
vhd_info_clear(struct vhd_info *info)
{
    if (info) {
        free(info->parent_name);
        free(info->parent_path);
        info->parent_name = info->parent_path = NULL;
    }
}

int
vhd_check(const char *path, bool check_parent, char **ret_report)
{
    struct problems pb = { DS_EMPTY, 0 };
    struct vhd *v = vhd_alloc(path);
    int rc;

    v->read_only = true;
    v->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (v->fd < 0) {
        rc = set_err(ret_report, -errno, "%s: %s", path, strerror(errno));
        goto out;
    }
    rc = parse_image(v, &pb);
    if (rc && rc != -EINVAL) {
        set_err(ret_report, rc, "%s: %s", path, strerror(-rc));
        goto out;
    }
    if (v->footer_bad) {
        problem(&pb, "the footer at the end is damaged "
                "(the copy at offset 0 is intact)");
    }
    if (v->copy_bad) {
        problem(&pb, "the footer copy at offset 0 is damaged or differs "
                "from the footer at the end");
    }
    if (!rc && !pb.n && check_parent && v->type == VHD_TYPE_DIFF) {
        char *parent = NULL, *err = NULL;
        if (vhd_find_parent(v, &parent, &err)) {
            problem(&pb, "%s", err);
        }
        free(parent);
        free(err);
    }
    if (pb.n) {
        char *msg = problems_steal(&pb);
        rc = set_err(ret_report, -EINVAL, "%s: %s", path, msg);
        free(msg);
    }
out:
    ds_destroy(&pb.ds);
    vhd_free(v);
    return rc;
}

/* ---- creating ---- */

struct locator {
    uint32_t code;
    struct ds data;
};

/* The relative path from directory from (absolute, canonical) to the file
 * to (the same), "./name" for a sibling as XenServer writes it. */
static char *
relative_path(const char *from, const char *to)
{
    struct ds out = DS_EMPTY;
    const char *f = from, *t = to, *t_last = strrchr(to, '/');

    /* Skip the components the two share. */
    for (;;) {
        while (*f == '/') {
            f++;
        }
        while (*t == '/') {
            t++;
        }
        size_t fl = strcspn(f, "/"), tl = strcspn(t, "/");
        if (!fl || t + tl > t_last || fl != tl || strncmp(f, t, fl)) {
            break;
        }
        f += fl;
        t += tl;
    }
    if (!*f) {
        ds_put_cstr(&out, "./");
    }
    while (*f) {
        size_t fl = strcspn(f, "/");
        if (fl) {
            ds_put_cstr(&out, "../");
        }
        f += fl;
        while (*f == '/') {
            f++;
        }
    }
    ds_put_cstr(&out, t);
    return ds_steal(&out);
}

static void
backslashes(char *s)
{
    for (; *s; s++) {
        if (*s == '/') {
            *s = '\\';
        }
    }
}

/* Builds the three locators XenServer writes: MacX (a file:// URL of the
 * relative path), W2ku (the absolute path) and W2ru (the relative path,
 * ".\" first), the Windows ones UTF-16LE with backslashes. */
static int
make_locators(const char *child_abs, const char *parent_abs,
              struct locator locs[3])
{
    char *dir = dir_of(child_abs);
    char *rel = relative_path(dir, parent_abs);
    char *abs_w = xstrdup(parent_abs);
    char *rel_w = xasprintf(".\\%s", str_starts_with(rel, "./")
                            ? rel + 2 : rel);
    int rc;

    backslashes(abs_w);
    backslashes(rel_w);
    for (int i = 0; i < 3; i++) {
        ds_init(&locs[i].data);
    }
    locs[0].code = PLAT_MACX;
    ds_put_fmt(&locs[0].data, "file://%s", rel);
    locs[1].code = PLAT_W2KU;
    rc = utf8_to_utf16(abs_w, false, &locs[1].data);
    locs[2].code = PLAT_W2RU;
    if (!rc) {
        rc = utf8_to_utf16(rel_w, false, &locs[2].data);
    }
    free(dir);
    free(rel);
    free(abs_w);
    free(rel_w);
    return rc;
}

static void
locators_destroy(struct locator locs[3])
{
    for (int i = 0; i < 3; i++) {
        ds_destroy(&locs[i].data);
    }
}

/* Fills the parent fields of a header: UUID, time stamp, name, and the
 * locator entries for data placed at loc_off onwards. */
static void
fill_parent_fields(uint8_t *h, const uint8_t *parent_uuid,
                   uint32_t parent_ts, const char *parent_abs,
                   struct locator locs[3], uint64_t loc_off)
{
    struct ds name = DS_EMPTY;

    memcpy(h + H_PARENT_UUID, parent_uuid, 16);
    put_be32(h + H_PARENT_TS, parent_ts);
    memset(h + H_PARENT_NAME, 0, PARENT_NAME_BYTES);
    if (!utf8_to_utf16(base_of(parent_abs), true, &name)) {
        memcpy(h + H_PARENT_NAME, name.s, MIN(name.len, PARENT_NAME_BYTES));
    }
    ds_destroy(&name);
    memset(h + H_LOCATORS, 0, N_LOCATORS * LOCATOR_SIZE);
    for (int i = 0; i < 3; i++) {
        uint8_t *l = h + H_LOCATORS + i * LOCATOR_SIZE;
        uint32_t space = round_up(locs[i].data.len, SECTOR);

        put_be32(l + L_CODE, locs[i].code);
        /* Bytes, not sectors as the specification says: what XenServer
         * and Microsoft's tools write. */
        put_be32(l + L_SPACE, space);
        put_be32(l + L_LEN, locs[i].data.len);
        put_be64(l + L_OFFSET, loc_off);
        loc_off += space;
    }
}

struct parent_facts {
    uint8_t uuid[16];
    uint32_t ts;
    uint64_t size;
    uint32_t block_size;
    char *abs;
};

static int
read_parent_facts(const char *parent_path, struct parent_facts *ret,
                  char **ret_err)
{
    struct vhd *p = NULL;
    struct stat st;
    int rc;

    rc = vhd_open(parent_path, true, &p, ret_err);
    if (rc) {
        return rc;
    }
    memcpy(ret->uuid, p->footer + F_UUID, 16);
    ret->size = p->size;
    ret->block_size = p->type == VHD_TYPE_FIXED ? 0 : p->block_size;
    ret->ts = vhd_time(fstat(p->fd, &st) ? time(NULL) : st.st_mtime);
    rc = image_path(parent_path, &ret->abs);
    if (rc) {
        ret->abs = NULL;
        set_err(ret_err, rc, "%s: %s", parent_path, strerror(-rc));
    }
    vhd_free(p);
    return rc;
}

static int
fsync_dir_of(const char *path)
{
    char *dir = dir_of(path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

    if (fd < 0 || fsync(fd)) {
        rc = -errno;
    }
    if (fd >= 0) {
        close(fd);
    }
    free(dir);
    return rc;
}

/* The size of an open file or block device. */
static int
container_size(int fd, uint64_t *ret_size)
{
    struct stat st;

    if (fstat(fd, &st)) {
        return -errno;
    }
    if (S_ISBLK(st.st_mode)) {
        return ioctl(fd, BLKGETSIZE64, ret_size) ? -errno : 0;
    }
    *ret_size = st.st_size;
    return 0;
}

/* Writes a new image (img: everything up to and including a footer, total
 * bytes) into an existing container: the metadata at the start, the
 * footer at the container's end.  The container's old contents between
 * them never matter: blocks allocated there are written whole. */
static int
write_in_container(const char *path, const uint8_t *img, uint64_t total,
                   char **ret_err)
{
    uint64_t size;
    int fd, rc;

    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return set_err(ret_err, -errno, "%s: %s", path, strerror(errno));
    }
    rc = container_size(fd, &size);
    if (!rc && size < total) {
        rc = set_err(ret_err, -ENOSPC, "%s: a volume of %llu bytes cannot "
                     "hold a %llu-byte image", path,
                     (unsigned long long) size, (unsigned long long) total);
        goto out;
    }
    /* The footer at the end first: until the copy at 0 is written the
     * container does not look like an image. */
    if (!rc) {
        rc = pwrite_all(fd, img + total - FOOTER_SIZE, FOOTER_SIZE,
                        size - FOOTER_SIZE);
    }
    if (!rc) {
        rc = pwrite_all(fd, img + FOOTER_SIZE, total - 2 * FOOTER_SIZE,
                        FOOTER_SIZE);
    }
    if (!rc && fdatasync(fd)) {
        rc = -errno;
    }
    if (!rc) {
        rc = pwrite_all(fd, img, FOOTER_SIZE, 0);
    }
    if (!rc && fdatasync(fd)) {
        rc = -errno;
    }
    if (rc) {
        set_err(ret_err, rc, "%s: %s", path, strerror(-rc));
    }
out:
    close(fd);
    return rc;
}

int
vhd_create(const char *path, const struct vhd_create_opts *opts,
           char **ret_err)
{
    struct parent_facts pf = { .abs = NULL };
    struct locator locs[3];
    bool have_locs = false, created = false;
    uint64_t size = opts->virtual_size, reserve, loc_bytes = 0;
    uint64_t bat_off, bat_bytes, total;
    uint32_t bs = opts->block_size, entries;
    uint8_t uuid[16], *img = NULL, *f, *h;
    char *child_abs = NULL;
    int fd = -1, rc;

    if (opts->parent_path) {
        rc = read_parent_facts(opts->parent_path, &pf, ret_err);
        if (rc) {
            goto out;
        }
        if (!size) {
            size = pf.size;
        }
        if (!bs) {
            bs = pf.block_size;
        }
    }
    if (!bs) {
        bs = VHD_DEFAULT_BLOCK_SIZE;
    }
    reserve = MAX(size, opts->max_size);
    if (!size || size % SECTOR || reserve > VHD_MAX_SIZE) {
        rc = set_err(ret_err, -EINVAL, "%s: bad virtual size %llu", path,
                     (unsigned long long) size);
        goto out;
    }
    if (bs < SECTOR || bs > MAX_BLOCK_SIZE || (bs & (bs - 1))) {
        rc = set_err(ret_err, -EINVAL, "%s: bad block size %u", path, bs);
        goto out;
    }
    if (opts->uuid) {
        if (uuid_parse(opts->uuid, uuid)) {
            rc = set_err(ret_err, -EINVAL, "%s: bad uuid %s", path,
                         opts->uuid);
            goto out;
        }
    } else {
        char s[37];
        uuid_generate(s);
        uuid_parse(s, uuid);
    }
    rc = absolute_path(path, &child_abs);
    if (rc) {
        set_err(ret_err, rc, "%s: %s", path, strerror(-rc));
        goto out;
    }
    if (opts->parent_path) {
        rc = make_locators(child_abs, pf.abs, locs);
        have_locs = true;
        if (rc) {
            set_err(ret_err, rc, "%s: parent path is not UTF-8", path);
            goto out;
        }
        for (int i = 0; i < 3; i++) {
            loc_bytes += round_up(locs[i].data.len, SECTOR);
        }
    }

    /* Layout: footer copy, header, locator data, BAT, footer.  Locators go
     * before the BAT so that growing the BAT only ever displaces data
     * blocks (docs/vhd.md). */
    entries = (reserve + bs - 1) / bs;
    bat_off = FOOTER_SIZE + HEADER_SIZE + loc_bytes;
    bat_bytes = round_up((uint64_t) entries * 4, SECTOR);
    total = bat_off + bat_bytes + FOOTER_SIZE;
    img = xcalloc(1, total);
    f = img;
    h = img + FOOTER_SIZE;

    memcpy(f + F_COOKIE, "conectix", 8);
    put_be32(f + F_FEATURES, 2);
    put_be32(f + F_VERSION, 0x00010000);
    put_be64(f + F_DATA_OFFSET, FOOTER_SIZE);
    put_be32(f + F_TIMESTAMP, vhd_time(opts->timestamp ? opts->timestamp
                                                       : time(NULL)));
    /* "tap" (XenServer) makes qemu and Hyper-V take the size from
     * current_size rather than from the CHS geometry. */
    memcpy(f + F_CREATOR_APP, "tap\0", 4);
    put_be32(f + F_CREATOR_VER, 0x00010000);
    memcpy(f + F_CREATOR_OS, "Wi2k", 4);
    put_be64(f + F_ORIG_SIZE, size);
    put_be64(f + F_CUR_SIZE, size);
    put_be32(f + F_GEOMETRY, chs_geometry(size));
    put_be32(f + F_TYPE, opts->parent_path ? VHD_TYPE_DIFF
                                           : VHD_TYPE_DYNAMIC);
    memcpy(f + F_UUID, uuid, 16);
    seal_footer(f);
    memcpy(img + total - FOOTER_SIZE, f, FOOTER_SIZE);

    memcpy(h + H_COOKIE, "cxsparse", 8);
    put_be64(h + H_DATA_OFFSET, UINT64_MAX);
    put_be64(h + H_TABLE_OFFSET, bat_off);
    put_be32(h + H_VERSION, 0x00010000);
    put_be32(h + H_MAX_ENTRIES, entries);
    put_be32(h + H_BLOCK_SIZE, bs);
    if (opts->parent_path) {
        uint64_t at = FOOTER_SIZE + HEADER_SIZE;

        fill_parent_fields(h, pf.uuid, pf.ts, pf.abs, locs, at);
        for (int i = 0; i < 3; i++) {
            memcpy(img + at, locs[i].data.s, locs[i].data.len);
            at += round_up(locs[i].data.len, SECTOR);
        }
    }
    seal_header(h);
    memset(img + bat_off, 0xff, bat_bytes);

    if (opts->container) {
        rc = write_in_container(path, img, total, ret_err);
        goto out;
    }
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = set_err(ret_err, -errno, "%s: %s", path, strerror(errno));
        goto out;
    }
    created = true;
    rc = pwrite_all(fd, img, total, 0);
    if (!rc && fsync(fd)) {
        rc = -errno;
    }
    if (!rc) {
        rc = fsync_dir_of(path);
    }
    if (rc) {
        set_err(ret_err, rc, "%s: %s", path, strerror(-rc));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    if (rc && created) {
        unlink(path);
    }
    if (have_locs) {
        locators_destroy(locs);
    }
    free(pf.abs);
    free(child_abs);
    free(img);
    return rc;
}

int
vhd_snapshot(const char *parent_path, const char *child_path,
             char **ret_err)
{
    struct vhd_create_opts opts = { .parent_path = parent_path };

    return vhd_create(child_path, &opts, ret_err);
}

int
vhd_move_footer(struct vhd *v, uint64_t new_size, char **ret_err)
{
    uint64_t size, at = new_size - FOOTER_SIZE;
    int rc;

    if (v->read_only || !v->container || v->type == VHD_TYPE_FIXED) {
        return set_err(ret_err, -EINVAL, "%s: not a writable dynamic image "
                       "in a container", v->path);
    }
    rc = vhd_flush(v);
    if (!rc) {
        rc = container_size(v->fd, &size);
    }
    if (rc) {
        return set_err(ret_err, rc, "%s: %s", v->path, strerror(-rc));
    }
    if (new_size % SECTOR || new_size < FOOTER_SIZE
        || at < v->data_end || new_size > size) {
        return set_err(ret_err, -EINVAL, "%s: the footer cannot end at %llu "
                       "(data ends at %llu, the volume at %llu)", v->path,
                       (unsigned long long) new_size,
                       (unsigned long long) v->data_end,
                       (unsigned long long) size);
    }
    /* The old footer stays valid until the caller resizes the volume:
     * whichever end a reader finds, it finds a footer. */
    rc = pwrite_all(v->fd, v->footer, FOOTER_SIZE, at);
    if (!rc && fdatasync(v->fd)) {
        rc = -errno;
    }
    if (rc) {
        return set_err(ret_err, rc, "%s: writing the footer: %s", v->path,
                       strerror(-rc));
    }
    v->footer_off = at;
    v->file_size = new_size;
    return 0;
}

/* ---- metadata updates ---- */

/* Appends data at the end of the file (footer first, like a block) and
 * makes it durable; returns where it went. */
static int
append_durable(struct vhd *v, const void *data, size_t len,
               uint64_t *ret_off)
{
    uint64_t at, new_footer;
    bool in_room;
    int rc;

    rc = place_new(v, round_up(len, SECTOR), &at, &in_room);
    if (rc) {
        return rc;
    }
    new_footer = at + round_up(len, SECTOR);
    if (!in_room) {
        rc = pwrite_all(v->fd, v->footer, FOOTER_SIZE, new_footer);
        if (rc) {
            return rc;
        }
        v->footer_off = new_footer;
    }
    placed(v, at, len);
    rc = pwrite_all(v->fd, data, len, at);
    if (!rc && fdatasync(v->fd)) {
        rc = -errno;
    }
    if (!rc) {
        *ret_off = at;
    }
    return rc;
}

/* Rewrites the header with one write inside the file's first page, which
 * a crash cannot tear (docs/vhd.md). */
static int
write_header(struct vhd *v, const uint8_t *h)
{
    int rc = pwrite_all(v->fd, h, HEADER_SIZE, v->header_off);

    if (!rc && fdatasync(v->fd)) {
        rc = -errno;
    }
    if (!rc) {
        memcpy(v->header, h, HEADER_SIZE);
    }
    return rc;
}

/* Writes the footer at the end, then its copy at 0, then syncs: after a
 * crash in between, the end footer (which readers prefer) is the new one
 * and opening the image for writing repairs the copy. */
static int
write_footers(struct vhd *v, uint8_t *f)
{
    int rc;

    /* Keep a hidden flag found in the copy only (footers_match()). */
    if (v->hidden_in_copy) {
        f[F_HIDDEN] = 1;
    }
    seal_footer(f);
    rc = pwrite_all(v->fd, f, FOOTER_SIZE, v->footer_off);
    if (!rc && v->type != VHD_TYPE_FIXED) {
        rc = pwrite_all(v->fd, f, FOOTER_SIZE, 0);
    }
    if (!rc && fdatasync(v->fd)) {
        rc = -errno;
    }
    if (!rc) {
        memcpy(v->footer, f, FOOTER_SIZE);
    }
    return rc;
}

int
vhd_set_hidden(struct vhd *v, bool hidden)
{
    uint8_t f[FOOTER_SIZE];

    if (v->read_only) {
        return -EROFS;
    }
    memcpy(f, v->footer, FOOTER_SIZE);
    f[F_HIDDEN] = hidden;
    v->hidden_in_copy = false;
    return write_footers(v, f);
}

int
vhd_set_parent(struct vhd *v, const char *parent_path, char **ret_err)
{
    struct parent_facts pf = { .abs = NULL };
    struct locator locs[3];
    bool have_locs = false;
    struct ds blob = DS_EMPTY;
    uint8_t h[HEADER_SIZE];
    char *child_abs = NULL;
    uint64_t at;
    int rc;

    if (v->read_only || v->type != VHD_TYPE_DIFF) {
        return set_err(ret_err, v->read_only ? -EROFS : -EINVAL,
                       "%s: not a writable differencing disk", v->path);
    }
    rc = read_parent_facts(parent_path, &pf, ret_err);
    if (rc) {
        goto out;
    }
    rc = image_path(v->path, &child_abs);
    if (rc) {
        set_err(ret_err, rc, "%s: %s", v->path, strerror(-rc));
        goto out;
    }
    rc = make_locators(child_abs, pf.abs, locs);
    have_locs = true;
    if (rc) {
        set_err(ret_err, rc, "%s: parent path is not UTF-8", v->path);
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        ds_put(&blob, locs[i].data.s, locs[i].data.len);
        ds_reserve(&blob, SECTOR);
        while (blob.len % SECTOR) {
            ds_put_char(&blob, 0);
        }
    }
    /* New locator data goes to fresh space and is durable before the
     * header points at it: a crash leaves the old header, whose old
     * locators are untouched. */
    rc = vhd_flush(v);
    if (!rc) {
        rc = append_durable(v, blob.s, blob.len, &at);
    }
    if (rc) {
        set_err(ret_err, rc, "%s: writing locators: %s", v->path,
                strerror(-rc));
        goto out;
    }
    memcpy(h, v->header, HEADER_SIZE);
    fill_parent_fields(h, pf.uuid, pf.ts, pf.abs, locs, at);
    seal_header(h);
    rc = write_header(v, h);
    if (rc) {
        set_err(ret_err, rc, "%s: writing header: %s", v->path,
                strerror(-rc));
        goto out;
    }
    /* An open parent is no longer this image's parent. */
    vhd_close(v->parent);
    v->parent = NULL;
    free(v->parent_path);
    v->parent_path = NULL;
out:
    if (have_locs) {
        locators_destroy(locs);
    }
    ds_destroy(&blob);
    free(pf.abs);
    free(child_abs);
    return rc;
}

/* ---- resize ---- */

/* Moves block blk to the end of the file: copy, sync, then repoint the
 * BAT entry and sync.  Until the entry changes the old copy is the live
 * one; after, the new one; the data is the same. */
static int
move_block(struct vhd *v, uint32_t blk)
{
    uint64_t span = (uint64_t) v->bitmap_size + v->block_size;
    uint8_t *buf = xmalloc(span);
    uint64_t at;
    int rc;

    rc = pread_all(v->fd, buf, span, (uint64_t) v->bat[blk] * SECTOR);
    if (!rc) {
        rc = append_durable(v, buf, span, &at);
    }
    if (!rc && at / SECTOR >= BAT_UNUSED) {
        rc = -EFBIG;
    }
    if (!rc) {
        v->bat[blk] = at / SECTOR;
        rc = write_bat_range(v, blk, blk + 1);
    }
    if (!rc && fdatasync(v->fd)) {
        rc = -errno;
    }
    free(buf);
    return rc;
}

/* Moves locator i's data to the end of the file and repoints the header. */
static int
move_locator(struct vhd *v, int i)
{
    uint32_t len = locator_len(v, i);
    uint8_t *buf = xmalloc(len), h[HEADER_SIZE];
    uint64_t at;
    int rc;

    rc = pread_all(v->fd, buf, len, locator_offset(v, i));
    if (!rc) {
        rc = append_durable(v, buf, len, &at);
    }
    if (!rc) {
        memcpy(h, v->header, HEADER_SIZE);
        put_be64(h + H_LOCATORS + i * LOCATOR_SIZE + L_OFFSET, at);
        seal_header(h);
        rc = write_header(v, h);
    }
    free(buf);
    return rc;
}

/* Makes room for the BAT to hold `entries` entries: everything in its way
 * moves to the end of the file, then the new entries are written as
 * unused, then the header records the new size.  Each step is durable
 * before the next, so a crash leaves a valid image with at most some
 * space leaked. */
static int
grow_bat(struct vhd *v, uint32_t entries, char **ret_err)
{
    uint64_t old_end = v->bat_off + (uint64_t) v->bat_entries * 4;
    uint64_t new_end = v->bat_off + (uint64_t) entries * 4;
    uint8_t h[HEADER_SIZE], cookie[8];
    int rc;

    if (v->header_off >= v->bat_off && v->header_off < new_end) {
        return set_err(ret_err, -ENOTSUP, "%s: the header follows the BAT",
                       v->path);
    }
    /* XenServer's batmap sits right after the BAT; we do not move it. */
    if (!pread_all(v->fd, cookie, 8, round_up(old_end, SECTOR))
        && !memcmp(cookie, "tdbatmap", 8)
        && new_end > round_up(old_end, SECTOR)) {
        return set_err(ret_err, -ENOTSUP, "%s: the BAT cannot grow past "
                       "XenServer's batmap", v->path);
    }
    if (v->container && round_up(new_end, SECTOR) > v->footer_off) {
        return set_err(ret_err, -ENOSPC, "%s: no room for a larger BAT "
                       "in the volume", v->path);
    }
    /* Blocks moved out of the BAT's way must land past its new end. */
    v->data_end = MAX(v->data_end, round_up(new_end, SECTOR));
    if (round_up(v->footer_off, SECTOR) < new_end) {
        /* The end of the file is in the way: the footer moves past the
         * new BAT first, so that blocks moved below land beyond it. */
        uint64_t at = round_up(new_end, SECTOR);
        rc = pwrite_all(v->fd, v->footer, FOOTER_SIZE, at);
        if (!rc && fdatasync(v->fd)) {
            rc = -errno;
        }
        if (rc) {
            goto out;
        }
        v->footer_off = at;
    }
    for (uint32_t b = 0; b < v->bat_entries; b++) {
        uint64_t off = (uint64_t) v->bat[b] * SECTOR;
        if (v->bat[b] != BAT_UNUSED && off < new_end
            && off + v->bitmap_size + v->block_size > old_end) {
            rc = move_block(v, b);
            if (rc) {
                goto out;
            }
        }
    }
    for (int i = 0; i < N_LOCATORS; i++) {
        uint64_t off = locator_offset(v, i);
        if (locator_code(v, i) != PLAT_NONE && locator_len(v, i)
            && off < new_end && off + locator_len(v, i) > old_end) {
            rc = move_locator(v, i);
            if (rc) {
                goto out;
            }
        }
    }

    v->bat = xrealloc(v->bat, (size_t) entries * 4 + 1);
    v->bitmaps = xrealloc(v->bitmaps,
                          ((size_t) entries + 1) * sizeof *v->bitmaps);
    v->bitmap_dirty = xrealloc(v->bitmap_dirty, (size_t) entries + 1);
    for (uint32_t b = v->bat_entries; b < entries; b++) {
        v->bat[b] = BAT_UNUSED;
        v->bitmaps[b] = NULL;
        v->bitmap_dirty[b] = 0;
    }
    rc = write_bat_range(v, v->bat_entries, entries);
    if (!rc && fdatasync(v->fd)) {
        rc = -errno;
    }
    if (rc) {
        goto out;
    }
    memcpy(h, v->header, HEADER_SIZE);
    put_be32(h + H_MAX_ENTRIES, entries);
    seal_header(h);
    rc = write_header(v, h);
    if (rc) {
        goto out;
    }
    v->bat_entries = entries;
out:
    if (rc) {
        set_err(ret_err, rc, "%s: growing the BAT: %s", v->path,
                strerror(-rc));
    }
    return rc;
}

int
vhd_resize(struct vhd *v, uint64_t new_size, char **ret_err)
{
    uint8_t f[FOOTER_SIZE];
    uint64_t entries;
    int rc;

    if (v->read_only) {
        return set_err(ret_err, -EROFS, "%s: read-only", v->path);
    }
    if (v->type == VHD_TYPE_FIXED) {
        return set_err(ret_err, -ENOTSUP, "%s: cannot resize a fixed disk",
                       v->path);
    }
    if (new_size % SECTOR || new_size < v->size) {
        return set_err(ret_err, -EINVAL, "%s: cannot resize from %llu to "
                       "%llu bytes", v->path, (unsigned long long) v->size,
                       (unsigned long long) new_size);
    }
    if (new_size > VHD_MAX_SIZE) {
        return set_err(ret_err, -EFBIG, "%s: %llu bytes is more than a VHD "
                       "holds", v->path, (unsigned long long) new_size);
    }
    rc = vhd_flush(v);
    if (rc) {
        return set_err(ret_err, rc, "%s: flush: %s", v->path, strerror(-rc));
    }
    entries = (new_size + v->block_size - 1) / v->block_size;
    if (entries > v->bat_entries) {
        rc = grow_bat(v, entries, ret_err);
        if (rc) {
            return rc;
        }
    }
    memcpy(f, v->footer, FOOTER_SIZE);
    put_be64(f + F_CUR_SIZE, new_size);
    put_be32(f + F_GEOMETRY, chs_geometry(new_size));
    rc = write_footers(v, f);
    if (rc) {
        return set_err(ret_err, rc, "%s: writing the footer: %s", v->path,
                       strerror(-rc));
    }
    v->size = new_size;
    return 0;
}

/* ---- coalesce ---- */

int
vhd_coalesce(const char *child_path, vhd_progress_fn *progress, void *aux,
             char **ret_err)
{
    struct vhd *child = NULL, *parent = NULL;
    char *parent_path = NULL;
    uint8_t *buf = NULL;
    uint64_t done = 0, total = 0;
    int rc;

    rc = vhd_open(child_path, true, &child, ret_err);
    if (rc) {
        goto out;
    }
    if (child->type != VHD_TYPE_DIFF) {
        rc = set_err(ret_err, -EINVAL, "%s: not a differencing disk",
                     child_path);
        goto out;
    }
    rc = open_parent(child, &parent, &parent_path, ret_err);
    if (rc) {
        goto out;
    }
    /* Reopen the parent writable (open_parent opened it read-only). */
    vhd_free(parent);
    parent = NULL;
    rc = vhd_open(parent_path, false, &parent, ret_err);
    if (rc) {
        goto out;
    }
    if (child->size > parent->size) {
        rc = vhd_resize(parent, child->size, ret_err);
        if (rc) {
            goto out;
        }
    }
    for (uint32_t b = 0; b < child->bat_entries; b++) {
        total += child->bat[b] != BAT_UNUSED;
    }
    /* The parent only receives sectors the child holds, which the chain
     * reads from the child: whatever state a crash leaves the parent in,
     * the chain reads the same, and the parent is valid because each of
     * its writes is crash-safe. */
    buf = xmalloc(child->block_size);
    for (uint32_t b = 0; b < child->bat_entries; b++) {
        uint64_t base = (uint64_t) b << child->block_shift;
        uint64_t data = (uint64_t) child->bat[b] * SECTOR + child->bitmap_size;
        uint32_t spb = child->spb;
        uint8_t *bm;

        if (child->bat[b] == BAT_UNUSED) {
            continue;
        }
        if (base + child->block_size > child->size) {
            spb = (child->size - base) / SECTOR;
        }
        rc = get_bitmap(child, b, &bm);
        for (uint32_t i = 0; !rc && i < spb;) {
            bool set = bit_test(bm, i);
            uint32_t j = run_end(bm, i, spb, set);
            if (set) {
                size_t len = (size_t) (j - i) * SECTOR;
                uint64_t at = (uint64_t) i * SECTOR;

                rc = pread_all(child->fd, buf, len, data + at);
                if (!rc) {
                    rc = vhd_write(parent, buf, base + at, len);
                }
            }
            i = j;
        }
        /* The bitmap is not needed again. */
        if (child->bitmaps[b]) {
            free(child->bitmaps[b]);
            child->bitmaps[b] = NULL;
            child->n_cached--;
        }
        if (rc) {
            set_err(ret_err, rc, "%s: coalescing block %u: %s", child_path,
                    b, strerror(-rc));
            goto out;
        }
        done++;
        if (progress && progress(aux, done, total)) {
            rc = set_err(ret_err, -ECANCELED, "%s: coalesce cancelled",
                         child_path);
            goto out;
        }
    }
    rc = vhd_flush(parent);
    if (rc) {
        set_err(ret_err, rc, "%s: flush: %s", parent_path, strerror(-rc));
    }
out:
    /* Closing flushes what was merged, even after a failure part way. */
    vhd_close(parent);
    vhd_close(child);
    free(parent_path);
    free(buf);
    return rc;
}

/* ---- raw import and export ---- */

/* Reads exactly len bytes from a stream; -EIO if it ends early. */
static int
read_stream(int fd, uint8_t *buf, size_t len)
{
    while (len) {
        ssize_t r = read(fd, buf, len);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (r == 0) {
            return -EIO;
        }
        buf += r;
        len -= r;
    }
    return 0;
}

static int
write_stream(int fd, const uint8_t *buf, size_t len)
{
    while (len) {
        ssize_t r = write(fd, buf, len);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        buf += r;
        len -= r;
    }
    return 0;
}

/* The size of a file or block device. */
static int
fd_size(int fd, uint64_t *ret_size, bool *ret_seekable)
{
    struct stat st;
    off_t end;

    if (fstat(fd, &st)) {
        return -errno;
    }
    if (S_ISREG(st.st_mode)) {
        *ret_size = st.st_size;
        *ret_seekable = true;
        return 0;
    }
    if (S_ISBLK(st.st_mode)) {
        off_t pos = lseek(fd, 0, SEEK_CUR);

        end = lseek(fd, 0, SEEK_END);
        if (pos < 0 || end < 0 || lseek(fd, pos, SEEK_SET) < 0) {
            return -errno;
        }
        *ret_size = end;
        *ret_seekable = true;
        return 0;
    }
    *ret_size = 0;
    *ret_seekable = false;
    return 0;
}

int
vhd_import_raw(const char *path, int fd, const struct vhd_create_opts *opts_,
               vhd_progress_fn *progress, void *aux, char **ret_err)
{
    struct vhd_create_opts opts = { .virtual_size = 0 };
    struct vhd *v = NULL;
    uint64_t src_size, off = 0;
    bool seekable, created = false;
    uint8_t *buf = NULL;
    size_t chunk;
    int rc;

    if (opts_) {
        opts = *opts_;
    }
    opts.parent_path = NULL;
    rc = fd_size(fd, &src_size, &seekable);
    if (rc) {
        set_err(ret_err, rc, "%s: source: %s", path, strerror(-rc));
        goto out;
    }
    if (!opts.virtual_size) {
        if (!seekable) {
            rc = set_err(ret_err, -EINVAL, "%s: the size of a stream must "
                         "be given", path);
            goto out;
        }
        opts.virtual_size = round_up(src_size, SECTOR);
    }
    rc = vhd_create(path, &opts, ret_err);
    if (rc) {
        goto out;
    }
    created = true;
    rc = vhd_open(path, false, &v, ret_err);
    if (rc) {
        goto out;
    }
    chunk = MIN(v->block_size, MAX_CHUNK);
    buf = xmalloc(chunk);
    while (off < v->size) {
        size_t n = MIN(chunk, v->size - off);

        if (seekable) {
            size_t have = off < src_size ? MIN(n, src_size - off) : 0;
            rc = have ? pread_all(fd, buf, have, off) : 0;
            memset(buf + have, 0, n - have);
        } else {
            rc = read_stream(fd, buf, n);
        }
        if (rc) {
            set_err(ret_err, rc, "%s: reading the source at %llu: %s", path,
                    (unsigned long long) off, strerror(-rc));
            goto out;
        }
        if (!is_zero(buf, n)) {
            rc = vhd_write(v, buf, off, n);
            if (rc) {
                set_err(ret_err, rc, "%s: %s", path, strerror(-rc));
                goto out;
            }
        }
        off += n;
        if (progress && progress(aux, off, v->size)) {
            rc = set_err(ret_err, -ECANCELED, "%s: import cancelled", path);
            goto out;
        }
    }
    rc = vhd_flush(v);
    if (rc) {
        set_err(ret_err, rc, "%s: flush: %s", path, strerror(-rc));
    }
out:
    vhd_free(v);
    if (rc && created) {
        unlink(path);
    }
    free(buf);
    return rc;
}

int
vhd_export_raw(struct vhd *v, int fd, vhd_progress_fn *progress, void *aux,
               char **ret_err)
{
    uint64_t off = 0, old_size;
    bool sparse;
    uint8_t *buf = NULL;
    size_t chunk;
    int rc;

    rc = fd_size(fd, &old_size, &sparse);
    if (!rc && sparse) {
        struct stat st;
        sparse = !fstat(fd, &st) && S_ISREG(st.st_mode);
    }
    /* Truncate only a file that has data: on ext4, truncating to zero
     * makes close() wait for the new data to reach the disk. */
    if (!rc && sparse && ((old_size && ftruncate(fd, 0))
                          || ftruncate(fd, v->size))) {
        rc = -errno;
    }
    if (rc) {
        return set_err(ret_err, rc, "export of %s: %s", v->path,
                       strerror(-rc));
    }
    chunk = v->type == VHD_TYPE_FIXED ? MAX_CHUNK
                                      : MIN(v->block_size, MAX_CHUNK);
    buf = xmalloc(chunk);
    while (off < v->size) {
        uint64_t run;
        bool data;

        rc = vhd_extent(v, off, &run, &data);
        if (rc) {
            goto out;
        }
        if (!data && sparse) {
            off += run;
            if (progress && progress(aux, off, v->size)) {
                rc = -ECANCELED;
                goto out;
            }
        } else if (!data) {
            memset(buf, 0, chunk);
            while (run) {
                size_t n = MIN(run, chunk);
                rc = write_stream(fd, buf, n);
                if (rc) {
                    goto out;
                }
                off += n;
                run -= n;
            }
        } else {
            while (run) {
                /* Chunks end on chunk boundaries, so they are whole blocks
                 * once the first is. */
                size_t n = MIN(run, chunk - off % chunk);
                rc = read_range(v, buf, off, n);
                if (rc) {
                    goto out;
                }
                if (!sparse) {
                    rc = write_stream(fd, buf, n);
                } else if (!is_zero(buf, n)) {
                    rc = pwrite_all(fd, buf, n, off);
                }
                if (rc) {
                    goto out;
                }
                off += n;
                run -= n;
                if (progress && progress(aux, off, v->size)) {
                    rc = -ECANCELED;
                    goto out;
                }
            }
        }
    }
out:
    if (rc) {
        set_err(ret_err, rc, "export of %s at %llu: %s", v->path,
                (unsigned long long) off, strerror(-rc));
    }
    free(buf);
    return rc;
}

/* ---- struct blockdev ---- */

struct vhd_blockdev {
    struct blockdev up;
    struct vhd *vhd;
};

static struct vhd *
bd_vhd(struct blockdev *dev)
{
    return ((struct vhd_blockdev *) dev)->vhd;
}

static int
bd_check(struct blockdev *dev, uint64_t offset, uint64_t len)
{
    return offset > dev->size || len > dev->size - offset ? -EINVAL : 0;
}

/* The sector-aligned middle of [offset, offset + len) and the partial
 * sectors at either end, which are read-modify-written. */
static int
bd_read(struct blockdev *dev, void *buf_, uint64_t offset, size_t len)
{
    struct vhd *v = bd_vhd(dev);
    uint8_t *buf = buf_, sector[SECTOR];
    int rc = bd_check(dev, offset, len);

    while (!rc && len) {
        uint64_t in = offset % SECTOR;
        if (in || len < SECTOR) {
            size_t n = MIN(len, SECTOR - in);
            rc = read_range(v, sector, offset - in, SECTOR);
            memcpy(buf, sector + in, n);
            buf += n;
            offset += n;
            len -= n;
        } else {
            size_t n = len & ~(size_t) (SECTOR - 1);
            rc = read_range(v, buf, offset, n);
            buf += n;
            offset += n;
            len -= n;
        }
    }
    return rc;
}

static int
bd_write_common(struct blockdev *dev, const uint8_t *buf, uint64_t offset,
                uint64_t len)
{
    struct vhd *v = bd_vhd(dev);
    uint8_t sector[SECTOR];
    int rc = bd_check(dev, offset, len);

    while (!rc && len) {
        uint64_t in = offset % SECTOR;
        if (in || len < SECTOR) {
            size_t n = MIN(len, SECTOR - in);
            rc = read_range(v, sector, offset - in, SECTOR);
            if (!rc) {
                if (buf) {
                    memcpy(sector + in, buf, n);
                } else {
                    memset(sector + in, 0, n);
                }
                rc = vhd_write(v, sector, offset - in, SECTOR);
            }
            offset += n;
            len -= n;
            buf = buf ? buf + n : NULL;
        } else {
            uint64_t n = len & ~(uint64_t) (SECTOR - 1);
            rc = buf ? vhd_write(v, buf, offset, n)
                     : vhd_write_zeroes(v, offset, n);
            offset += n;
            len -= n;
            buf = buf ? buf + n : NULL;
        }
    }
    return rc;
}

static int
bd_write(struct blockdev *dev, const void *buf, uint64_t offset, size_t len)
{
    return bd_write_common(dev, buf, offset, len);
}

static int
bd_write_zeroes(struct blockdev *dev, uint64_t offset, uint64_t len)
{
    return bd_write_common(dev, NULL, offset, len);
}

static int
bd_flush(struct blockdev *dev)
{
    return vhd_flush(bd_vhd(dev));
}

static void
bd_close(struct blockdev *dev)
{
    vhd_close(bd_vhd(dev));
    free(dev);
}

static const struct blockdev_ops vhd_blockdev_ops = {
    .read = bd_read,
    .write = bd_write,
    .flush = bd_flush,
    .trim = NULL,
    .write_zeroes = bd_write_zeroes,
    .close = bd_close,
};

int
blockdev_open_vhd(const char *leaf, bool read_only, struct blockdev **ret_dev,
                  char **ret_err)
{
    struct vhd_blockdev *bd;
    struct vhd *v = NULL;
    int rc;

    rc = vhd_chain_open(leaf, read_only, &v, ret_err);
    if (rc) {
        return rc;
    }
    bd = xcalloc(1, sizeof *bd);
    bd->up.ops = &vhd_blockdev_ops;
    bd->up.size = v->size;
    bd->up.read_only = read_only;
    bd->vhd = v;
    *ret_dev = &bd->up;
    return 0;
}

/* ---- writing a block's data around the library ---- */

int
blockdev_vhd_map_write(struct blockdev *dev, uint64_t offset, uint64_t len,
                       int *ret_fd, uint64_t *ret_file_offset,
                       uint64_t *ret_len)
{
    static const uint8_t zero_sector[SECTOR];
    struct vhd *v;
    uint64_t in;
    uint32_t blk, s0, n;
    uint8_t *bm;
    int rc;

    if (dev->ops != &vhd_blockdev_ops) {
        return -EOPNOTSUPP;
    }
    v = bd_vhd(dev);
    if (v->read_only) {
        return -EROFS;
    }
    rc = check_range(v, offset, len);
    if (rc || !len) {
        return rc ? rc : -EINVAL;
    }
    if (v->type == VHD_TYPE_FIXED) {
        in = offset;
    } else {
        blk = offset >> v->block_shift;
        in = offset & (v->block_size - 1);
        len = MIN(len, v->block_size - in);
        s0 = in / SECTOR;
        n = len / SECTOR;
        /* Allocating with one zero sector keeps alloc_block()'s rules
         * (room below the footer is cleared, the footer moves first);
         * the caller writes every sector of the range afterwards. */
        if (v->bat[blk] == BAT_UNUSED) {
            rc = alloc_block(v, blk, s0, 1, zero_sector);
            if (rc) {
                return rc;
            }
        }
        rc = get_bitmap(v, blk, &bm);
        if (rc) {
            return rc;
        }
        /* Only in memory until the next vhd_flush(), which syncs the
         * data first: the bits never reach the disk before the data. */
        if (run_end(bm, s0, s0 + n, true) < s0 + n) {
            bits_set(bm, s0, s0 + n);
            mark_bitmap_dirty(v, blk);
        }
        in += (uint64_t) v->bat[blk] * SECTOR + v->bitmap_size;
    }
    v->data_dirty = true;
    *ret_fd = v->fd;
    *ret_file_offset = in;
    *ret_len = len;
    return 0;
}
