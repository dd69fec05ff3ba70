/* test-vhd.c — tests of the VHD library (storage/vhd.c) against qemu-img,
 * the independent implementation: every image we write is converted to
 * raw by qemu and compared with what the test wrote, and images qemu
 * writes are read by us.
 *
 * qemu's "vpc" driver reads a differencing disk as if it stood alone (it
 * does not follow parents and ignores sector bitmaps), so chain views are
 * compared with the test's own model of what each layer holds, each layer
 * with qemu's view of it alone, and coalesced bases with qemu in full.
 * Tests that need qemu-img skip when it is missing (qemu-utils). */
#define TEST_MAIN
#include <config.h>
#include "test.h"
#include "test-storage-util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/blockdev.h"
#include "storage/vhd.h"
#include "util.h"

#define MiB (1024ull * 1024)
#define SEC 512u

/* ---- helpers ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t
rnd(void)
{
    /* xorshift64*: deterministic, so a failure can be replayed. */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static uint64_t
rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

static void
rnd_fill(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = rnd();
        memcpy(p + i, &r, MIN(8, n - i));
    }
}

static bool
have_qemu(void)
{
    static int have = -1;

    if (have < 0) {
        have = have_qemu_img()
               && system("qemu-io --version >/dev/null 2>&1") == 0;
    }
    return have;
}

#define NEED_QEMU()                                                   \
    do {                                                              \
        if (!have_qemu()) {                                           \
            SKIP("qemu-img is not installed (qemu-utils)");           \
        }                                                             \
    } while (0)

/* A fresh directory per test. */
static char *
test_dir(const char *name)
{
    char *dir = xasprintf("/tmp/test-vhd.%d.%s", (int) getpid(), name);

    sh("rm -rf '%s' && mkdir -p '%s'", dir, dir);
    return dir;
}

static void
remove_dir(char *dir)
{
    if (!test_failures_) {
        sh("rm -rf '%s'", dir);
    } else {
        fprintf(stderr, "  files kept in %s\n", dir);
    }
    free(dir);
}

static bool
same(const uint8_t *got, const uint8_t *want, size_t n, const char *what)
{
    if (!memcmp(got, want, n)) {
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            fprintf(stderr, "  %s: first difference at byte %zu "
                    "(got %02x, want %02x)\n", what, i, got[i], want[i]);
            return false;
        }
    }
    return true;
}

/* qemu's view of an image, as raw bytes. */
static uint8_t *
qemu_view(const char *img, size_t *ret_len)
{
    char *raw = xasprintf("%s.qemu.raw", img);
    char *cmd = xasprintf("qemu-img convert -f vpc -O raw '%s' '%s'", img,
                          raw);
    char *data = NULL;
    size_t len = 0;

    unlink(raw);
    if (sh("%s", cmd) == 0) {
        if (read_file(raw, 1ull << 31, &data, &len)) {
            data = NULL;
        }
    }
    unlink(raw);
    free(raw);
    free(cmd);
    *ret_len = len;
    return (uint8_t *) data;
}

/* Checks that qemu reads img as exactly want[0, len). */
static bool
qemu_matches(const char *img, const uint8_t *want, size_t len)
{
    size_t got_len;
    uint8_t *got = qemu_view(img, &got_len);
    bool ok = got && got_len == len && same(got, want, len, img);

    if (got && got_len != len) {
        fprintf(stderr, "  %s: qemu sees %zu bytes, want %zu\n", img,
                got_len, len);
    }
    free(got);
    return ok;
}

static uint64_t
qemu_virtual_size(const char *img)
{
    char *cmd = xasprintf("qemu-img info --output=json '%s'", img);
    FILE *f = popen(cmd, "r");
    char line[512];
    unsigned long long size = 0;

    while (f && fgets(line, sizeof line, f)) {
        char *p = strstr(line, "\"virtual-size\":");
        if (p) {
            size = strtoull(p + 15, NULL, 10);
        }
    }
    if (f) {
        pclose(f);
    }
    free(cmd);
    return size;
}

static bool
check_ok(const char *img)
{
    char *report = NULL;
    int rc = vhd_check(img, true, &report);

    if (rc) {
        fprintf(stderr, "  vhd_check(%s) = %d: %s\n", img, rc,
                report ? report : "");
    }
    free(report);
    return rc == 0;
}

static struct vhd *
open_or_die(const char *path, bool chain, bool read_only)
{
    struct vhd *v = NULL;
    char *err = NULL;
    int rc = chain ? vhd_chain_open(path, read_only, &v, &err)
                   : vhd_open(path, read_only, &v, &err);

    if (rc) {
        fprintf(stderr, "  open %s: %s\n", path, err);
        free(err);
        exit(1);
    }
    return v;
}

static void
create_or_die(const char *path, uint64_t size, uint32_t block_size,
              const char *parent)
{
    struct vhd_create_opts opts = {
        .virtual_size = size, .block_size = block_size, .parent_path = parent,
    };
    char *err = NULL;

    if (vhd_create(path, &opts, &err)) {
        fprintf(stderr, "  create %s: %s\n", path, err);
        exit(1);
    }
}

/* Random writes (sector aligned, often straddling blocks) to v and to the
 * model; a quarter are all zeros, to exercise the sparse paths. */
static void
random_writes(struct vhd *v, uint8_t *model, uint64_t size, int count,
              uint64_t max_len, uint8_t *layer, uint8_t *written)
{
    uint8_t *buf = xmalloc(max_len);

    for (int i = 0; i < count; i++) {
        uint64_t len = (1 + rnd_below(max_len / SEC)) * SEC;
        uint64_t off;

        if (len > size) {
            len = size;
        }
        off = rnd_below((size - len) / SEC + 1) * SEC;
        if (rnd_below(4) == 0) {
            memset(buf, 0, len);
        } else {
            rnd_fill(buf, len);
        }
        int rc = vhd_write(v, buf, off, len);
        CHECK_INT(rc, 0);
        memcpy(model + off, buf, len);
        if (layer) {
            memcpy(layer + off, buf, len);
        }
        if (written) {
            memset(written + off / SEC, 1, len / SEC);
        }
    }
    free(buf);
}

static bool
view_matches(struct vhd *v, const uint8_t *model, uint64_t size,
             const char *what)
{
    uint8_t *buf = xmalloc(size);
    int rc = vhd_read(v, buf, 0, size);
    bool ok = rc == 0 && same(buf, model, size, what);

    if (rc) {
        fprintf(stderr, "  %s: read failed: %s\n", what, strerror(-rc));
    }
    free(buf);
    return ok;
}

static off_t
file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) ? -1 : st.st_size;
}

/* ---- tests ---- */

TEST(test_dynamic_disk_random_writes_read_back_and_match_qemu)
{
    NEED_QEMU();
    char *dir = test_dir("dynamic");
    char *img = xasprintf("%s/d.vhd", dir);
    uint64_t size = 40 * MiB + 3 * SEC;        /* not a whole block */
    uint8_t *model = xcalloc(1, size);
    struct vhd_info info;
    struct vhd *v;

    create_or_die(img, size, 0, NULL);
    v = open_or_die(img, false, false);
    for (int round = 0; round < 4; round++) {
        random_writes(v, model, size, 60, 3 * MiB, NULL, NULL);
        /* Read back before and after a flush. */
        CHECK(view_matches(v, model, size, "our view"));
        CHECK_INT(vhd_flush(v), 0);
    }
    /* Misaligned requests are refused: VHD is sector based. */
    CHECK_INT(vhd_write(v, model, 100, SEC), -EINVAL);
    CHECK_INT(vhd_read(v, model, 0, 100), -EINVAL);
    CHECK_INT(vhd_read(v, model, size, SEC), -EINVAL);
    CHECK_INT(vhd_get_info(v, &info), 0);
    CHECK_INT(info.type, VHD_TYPE_DYNAMIC);
    CHECK_INT(info.virtual_size, size);
    CHECK_INT(info.block_size, 2 * MiB);
    CHECK_INT(info.max_blocks, 21);
    CHECK(info.allocated_blocks > 0 && info.allocated_blocks <= 21);
    CHECK_STR(info.creator, "tap");
    CHECK(uuid_is_valid(info.uuid));
    vhd_info_clear(&info);
    vhd_close(v);

    CHECK(check_ok(img));
    CHECK_INT(qemu_virtual_size(img), size);
    CHECK(qemu_matches(img, model, size));
    v = open_or_die(img, false, true);
    CHECK(view_matches(v, model, size, "reopened"));
    CHECK_INT(vhd_write(v, model, 0, SEC), -EROFS);
    vhd_close(v);

    free(model);
    free(img);
    remove_dir(dir);
}

TEST(test_small_block_size_matches_qemu)
{
    NEED_QEMU();
    char *dir = test_dir("small-blocks");
    char *img = xasprintf("%s/s.vhd", dir);
    uint64_t size = 3 * MiB;
    uint8_t *model = xcalloc(1, size);
    struct vhd *v;

    create_or_die(img, size, 4096, NULL);
    v = open_or_die(img, false, false);
    random_writes(v, model, size, 200, 20000, NULL, NULL);
    vhd_close(v);
    CHECK(check_ok(img));
    CHECK(qemu_matches(img, model, size));
    free(model);
    free(img);
    remove_dir(dir);
}

TEST(test_images_written_by_qemu_are_read_and_extended)
{
    NEED_QEMU();
    char *dir = test_dir("qemu-made");
    char *img = xasprintf("%s/q.vhd", dir);
    char *chs = xasprintf("%s/chs.vhd", dir);
    size_t len;
    uint8_t *model;
    struct vhd *v;

    CHECK(!sh("qemu-img create -q -f vpc -o subformat=dynamic,force_size=on "
              "'%s' 24M && qemu-io -f vpc -c 'write -P 0x11 0 64k' "
              "-c 'write -P 0x22 3M 1M' -c 'write -P 0x33 20M 512' "
              "-c 'write -P 0x44 8388096 1024' '%s' >/dev/null", img, img));
    model = qemu_view(img, &len);
    CHECK(model && len == 24 * MiB);
    if (!model || len != 24 * MiB) {
        goto out;
    }
    CHECK(check_ok(img));
    v = open_or_die(img, false, false);
    CHECK_INT(vhd_virtual_size(v), 24 * MiB);
    CHECK(view_matches(v, model, len, "qemu-written image"));
    /* Our writes land in qemu's blocks and in new ones. */
    random_writes(v, model, len, 40, 1 * MiB, NULL, NULL);
    vhd_close(v);
    CHECK(check_ok(img));
    CHECK(qemu_matches(img, model, len));

    /* Without force_size qemu rounds the size to the CHS geometry and
     * writes that into current_size: both readers agree. */
    CHECK(!sh("qemu-img create -q -f vpc -o subformat=dynamic '%s' 10M", chs));
    v = open_or_die(chs, false, true);
    CHECK_INT(vhd_virtual_size(v), qemu_virtual_size(chs));
    vhd_close(v);
out:
    free(model);
    free(img);
    free(chs);
    remove_dir(dir);
}

/* A chain of depth 3 over a base, with writes at every level. */
TEST(test_chain_of_depth_three_reads_through_parents)
{
    NEED_QEMU();
    char *dir = test_dir("chain");
    uint64_t size = 24 * MiB;
    const char *names[4] = { "base.vhd", "c1.vhd", "c2.vhd", "c3.vhd" };
    char *paths[4];
    uint8_t *model = xcalloc(1, size);
    uint8_t *layers[4];
    struct vhd_info info, base_info;
    char *err = NULL;
    struct vhd *v;

    for (int i = 0; i < 4; i++) {
        paths[i] = xasprintf("%s/%s", dir, names[i]);
        layers[i] = xcalloc(1, size);
    }
    create_or_die(paths[0], size, 0, NULL);
    for (int i = 0; i < 4; i++) {
        if (i) {
            CHECK_INT(vhd_snapshot(paths[i - 1], paths[i], &err), 0);
        }
        v = open_or_die(paths[i], true, false);
        if (i == 2) {
            vhd_set_bitmap_cache_size(v, 4096);   /* 8 bitmaps: write-back */
        }
        random_writes(v, model, size, 25, 2 * MiB, layers[i], NULL);
        CHECK(view_matches(v, model, size, names[i]));
        vhd_close(v);
    }

    v = open_or_die(paths[3], true, true);
    CHECK(view_matches(v, model, size, "chain view of c3"));
    CHECK_INT(vhd_get_info(v, &info), 0);
    CHECK_INT(info.type, VHD_TYPE_DIFF);
    CHECK_STR(info.parent_name, "c2.vhd");
    CHECK(info.parent_path && strstr(info.parent_path, "c2.vhd"));
    vhd_info_clear(&info);
    vhd_close(v);

    v = open_or_die(paths[0], false, true);
    vhd_get_info(v, &base_info);
    vhd_close(v);
    v = open_or_die(paths[1], false, true);
    vhd_get_info(v, &info);
    CHECK_STR(info.parent_uuid, base_info.uuid);
    CHECK(!info.parent_path);       /* opened alone */
    vhd_info_clear(&info);
    vhd_info_clear(&base_info);
    vhd_close(v);

    /* Each layer alone, as qemu reads it, holds what was written to it. */
    for (int i = 0; i < 4; i++) {
        CHECK(check_ok(paths[i]));
        CHECK(qemu_matches(paths[i], layers[i], size));
    }

    /* The relative locators survive moving the whole directory ... */
    char *moved = xasprintf("%s.moved", dir);
    char *leaf = xasprintf("%s/c3.vhd", moved);
    CHECK(!sh("rm -rf '%s' && mv '%s' '%s'", moved, dir, moved));
    v = open_or_die(leaf, true, true);
    CHECK(view_matches(v, model, size, "chain view after a move"));
    vhd_close(v);
    /* ... and the absolute one moving the leaf alone. */
    CHECK(!sh("mv '%s' '%s'", moved, dir));
    char *alone = xasprintf("%s.leaf", dir);
    char *alone_leaf = xasprintf("%s/c3.vhd", alone);
    CHECK(!sh("rm -rf '%s' && mkdir '%s' && mv '%s' '%s'", alone, alone,
              paths[3], alone_leaf));
    v = open_or_die(alone_leaf, true, true);
    CHECK(view_matches(v, model, size, "chain view of a moved leaf"));
    vhd_close(v);
    sh("rm -rf '%s'", alone);

    /* A parent replaced by another image is refused (UUID check). */
    CHECK(!sh("mv '%s' '%s.old'", paths[0], paths[0]));
    create_or_die(paths[0], size, 0, NULL);
    CHECK_INT(vhd_chain_open(paths[2], true, &v, &err), -ENOENT);
    CHECK(err && strstr(err, "not found"));
    free(err);
    err = NULL;
    CHECK(!sh("mv '%s.old' '%s'", paths[0], paths[0]));

    for (int i = 0; i < 4; i++) {
        free(paths[i]);
        free(layers[i]);
    }
    free(moved);
    free(leaf);
    free(alone);
    free(alone_leaf);
    free(model);
    remove_dir(dir);
}

TEST(test_coalesce_merges_children_into_the_base)
{
    NEED_QEMU();
    char *dir = test_dir("coalesce");
    uint64_t size = 20 * MiB;
    char *base = xasprintf("%s/base.vhd", dir);
    char *c1 = xasprintf("%s/c1.vhd", dir);
    char *c2 = xasprintf("%s/c2.vhd", dir);
    char *c3 = xasprintf("%s/c3.vhd", dir);
    uint8_t *model = xcalloc(1, size);
    char *err = NULL;
    struct vhd *v;

    create_or_die(base, size, 0, NULL);
    v = open_or_die(base, true, false);
    random_writes(v, model, size, 20, 2 * MiB, NULL, NULL);
    vhd_close(v);
    CHECK_INT(vhd_snapshot(base, c1, &err), 0);
    v = open_or_die(c1, true, false);
    random_writes(v, model, size, 20, 2 * MiB, NULL, NULL);
    vhd_close(v);
    CHECK_INT(vhd_snapshot(c1, c2, &err), 0);
    v = open_or_die(c2, true, false);
    random_writes(v, model, size, 20, 1 * MiB, NULL, NULL);
    vhd_close(v);
    CHECK_INT(vhd_snapshot(c2, c3, &err), 0);
    v = open_or_die(c3, true, false);
    random_writes(v, model, size, 20, 1 * MiB, NULL, NULL);
    vhd_close(v);

    /* Leaf coalesce: c3 into c2; c2's chain then reads as c3's did. */
    CHECK_INT(vhd_coalesce(c3, NULL, NULL, &err), 0);
    v = open_or_die(c2, true, true);
    CHECK(view_matches(v, model, size, "c2 after coalescing c3"));
    vhd_close(v);
    unlink(c3);

    /* Non-leaf coalesce: c1 into base, then c2 is reparented to base. */
    CHECK_INT(vhd_coalesce(c1, NULL, NULL, &err), 0);
    v = open_or_die(c2, false, false);
    CHECK_INT(vhd_set_parent(v, base, &err), 0);
    vhd_close(v);
    unlink(c1);
    CHECK(check_ok(c2));
    v = open_or_die(c2, true, true);
    CHECK(view_matches(v, model, size, "c2 reparented to base"));
    vhd_close(v);

    /* Last, c2 into base: a dynamic disk qemu reads in full. */
    CHECK_INT(vhd_coalesce(c2, NULL, NULL, &err), 0);
    CHECK(check_ok(base));
    CHECK(qemu_matches(base, model, size));
    if (err) {
        fprintf(stderr, "  %s\n", err);
    }
    free(err);
    free(model);
    free(base);
    free(c1);
    free(c2);
    free(c3);
    remove_dir(dir);
}

TEST(test_coalesce_grows_a_smaller_parent)
{
    NEED_QEMU();
    char *dir = test_dir("coalesce-grow");
    char *base = xasprintf("%s/base.vhd", dir);
    char *leaf = xasprintf("%s/leaf.vhd", dir);
    uint64_t small = 6 * MiB, big = 10 * MiB;
    uint8_t *model = xcalloc(1, big);
    char *err = NULL;
    struct vhd *v;

    create_or_die(base, small, 0, NULL);
    v = open_or_die(base, false, false);
    random_writes(v, model, small, 10, MiB, NULL, NULL);
    vhd_close(v);
    CHECK_INT(vhd_snapshot(base, leaf, &err), 0);
    v = open_or_die(leaf, true, false);
    CHECK_INT(vhd_resize(v, big, &err), 0);
    /* The area past the parent's end reads as zeros ... */
    CHECK(view_matches(v, model, big, "grown leaf"));
    /* ... and takes writes. */
    random_writes(v, model, big, 20, MiB, NULL, NULL);
    vhd_close(v);
    CHECK_INT(vhd_coalesce(leaf, NULL, NULL, &err), 0);
    CHECK_INT(qemu_virtual_size(base), big);
    CHECK(qemu_matches(base, model, big));
    CHECK(check_ok(base));
    free(err);
    free(model);
    free(base);
    free(leaf);
    remove_dir(dir);
}

TEST(test_resize_moves_blocks_when_the_bat_must_grow)
{
    NEED_QEMU();
    char *dir = test_dir("resize");
    char *img = xasprintf("%s/r.vhd", dir);
    char *roomy = xasprintf("%s/roomy.vhd", dir);
    uint64_t small = 8 * MiB, big = 100 * MiB;
    uint8_t *model = xcalloc(1, big);
    struct vhd_create_opts opts = { .virtual_size = small, .max_size = big };
    char *err = NULL;
    struct vhd *v;
    off_t before;

    /* With 512 KiB blocks, 16 BAT entries fill one sector, which holds
     * 128: growing to 200 entries needs a second sector, where the first
     * block lies. */
    create_or_die(img, small, 512 * 1024, NULL);
    v = open_or_die(img, false, false);
    for (uint64_t off = 0; off < small; off += MiB) {
        rnd_fill(model + off, MiB);
        CHECK_INT(vhd_write(v, model + off, off, MiB), 0);
    }
    CHECK_INT(vhd_resize(v, 4 * MiB, &err), -EINVAL);   /* no shrinking */
    free(err);
    err = NULL;
    CHECK_INT(vhd_resize(v, big, &err), 0);
    CHECK_INT(vhd_virtual_size(v), big);
    CHECK(view_matches(v, model, big, "after resize"));
    random_writes(v, model, big, 30, 4 * MiB, NULL, NULL);
    vhd_close(v);
    CHECK(check_ok(img));
    CHECK_INT(qemu_virtual_size(img), big);
    CHECK(qemu_matches(img, model, big));
    v = open_or_die(img, false, true);
    CHECK(view_matches(v, model, big, "reopened after resize"));
    vhd_close(v);

    /* With the BAT reserved up front, growing only rewrites footers. */
    CHECK_INT(vhd_create(roomy, &opts, &err), 0);
    before = file_size(roomy);
    v = open_or_die(roomy, false, false);
    CHECK_INT(vhd_resize(v, big, &err), 0);
    vhd_close(v);
    CHECK_INT(file_size(roomy), before);
    CHECK_INT(qemu_virtual_size(roomy), big);
    CHECK(check_ok(roomy));
    free(err);
    free(model);
    free(img);
    free(roomy);
    remove_dir(dir);
}

/* Overwrites len bytes at off (from the end if negative) with data. */
static void
poke(const char *path, off_t off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY);

    if (off < 0) {
        off += lseek(fd, 0, SEEK_END);
    }
    CHECK(pwrite(fd, data, len, off) == (ssize_t) len);
    close(fd);
}

/* Copies src to dst, then pokes dst. */
static void
corrupt_copy(const char *src, const char *dst, off_t off, const void *data,
             size_t len)
{
    sh("cp '%s' '%s'", src, dst);
    poke(dst, off, data, len);
}

static bool
check_says(const char *img, const char *words)
{
    char *report = NULL;
    int rc = vhd_check(img, false, &report);
    bool ok = rc == -EINVAL && report && strstr(report, words);

    if (!ok) {
        fprintf(stderr, "  vhd_check(%s) = %d \"%s\", wanted \"%s\"\n", img,
                rc, report ? report : "", words);
    }
    free(report);
    return ok;
}

TEST(test_check_catches_corruption)
{
    char *dir = test_dir("check");
    char *img = xasprintf("%s/good.vhd", dir);
    char *bad = xasprintf("%s/bad.vhd", dir);
    uint8_t buf[64 * 1024], b;
    uint8_t entry[4];
    uint64_t bat_off = 1536;
    char *err = NULL;
    struct vhd *v;

    create_or_die(img, 16 * MiB, 0, NULL);
    v = open_or_die(img, false, false);
    memset(buf, 0x5a, sizeof buf);
    for (int i = 0; i < 4; i++) {
        CHECK_INT(vhd_write(v, buf, i * 2 * MiB, sizeof buf), 0);
    }
    vhd_close(v);
    CHECK(check_ok(img));

    b = 0x77;
    corrupt_copy(img, bad, 512 + 100, &b, 1);             /* header */
    CHECK(check_says(bad, "header checksum"));
    CHECK_INT(vhd_open(bad, true, &v, &err), -EINVAL);
    CHECK(err && strstr(err, "header checksum"));
    free(err);
    err = NULL;

    corrupt_copy(img, bad, -512 + 70, &b, 1);             /* end footer */
    CHECK(check_says(bad, "footer at the end is damaged"));
    v = open_or_die(bad, false, false);                   /* repairs */
    vhd_close(v);
    CHECK(check_ok(bad));

    corrupt_copy(img, bad, 70, &b, 1);                    /* footer copy */
    CHECK(check_says(bad, "footer copy"));
    v = open_or_die(bad, false, false);
    vhd_close(v);
    CHECK(check_ok(bad));

    memcpy(entry, "\x00\x10\x00\x00", 4);                 /* 512 MiB on */
    corrupt_copy(img, bad, bat_off + 4, entry, 4);
    CHECK(check_says(bad, "BAT entry 1 points past the end"));
    CHECK_INT(vhd_open(bad, true, &v, &err), -EINVAL);
    free(err);
    err = NULL;

    {
        /* Entry 2 made equal to entry 1: two blocks in one place. */
        int fd = open(img, O_RDONLY);
        CHECK(pread(fd, entry, 4, bat_off + 4) == 4);
        close(fd);
        corrupt_copy(img, bad, bat_off + 8, entry, 4);
        CHECK(check_says(bad, "overlaps block"));
    }

    memcpy(entry, "\x00\x00\x00\x01", 4);                 /* the header */
    corrupt_copy(img, bad, bat_off, entry, 4);
    CHECK(check_says(bad, "overlaps"));

    sh("cp '%s' '%s' && truncate -s -1M '%s'", img, bad, bad);
    CHECK_INT(vhd_check(bad, false, &err), -EINVAL);
    free(err);
    err = NULL;

    corrupt_copy(img, bad, 0, "garbage!", 8);             /* both footers */
    poke(bad, -512, "garbage!", 8);
    CHECK(check_says(bad, "no valid footer"));

    sh("head -c 300 /dev/urandom > '%s'", bad);
    CHECK(check_says(bad, "too small"));
    free(img);
    free(bad);
    remove_dir(dir);
}

/* ---- crash safety ---- */

/* Each sector a crash test writes names its writer and itself, so any
 * sector read back says where it came from. */
static void
crash_sector(uint8_t *p, uint64_t id, uint64_t sector)
{
    uint64_t x = id * 0x9e3779b97f4a7c15ull ^ sector;

    memcpy(p, &id, 8);
    memcpy(p + 8, &sector, 8);
    for (unsigned i = 16; i < SEC; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
}

struct crash_write {
    uint64_t sector, count;
};

/* The writes of one round, the same in the child and the parent. */
static void
crash_plan(uint64_t seed, uint64_t sectors, struct crash_write *w, int n)
{
    rng = seed;
    for (int i = 0; i < n; i++) {
        w[i].count = 1 + rnd_below(rnd_below(4) ? 16 : 300);
        w[i].sector = rnd_below(sectors - w[i].count + 1);
    }
}

#define CRASH_WRITES 4000

/* The child: writes the plan through the chain, flushing now and then and
 * reporting each flushed write count on fd. */
static void NORETURN
crash_child(const char *leaf, const struct crash_write *plan,
            uint64_t first_id, int fd)
{
    struct vhd *v = open_or_die(leaf, true, false);
    uint8_t *buf = xmalloc(300 * SEC);

    /* A cache of two bitmaps: dirty ones are written back (with the
     * flush that must precede them) in the middle of writes. */
    vhd_set_bitmap_cache_size(v, 1024);

    for (int i = 0; i < CRASH_WRITES; i++) {
        for (uint64_t s = 0; s < plan[i].count; s++) {
            crash_sector(buf + s * SEC, first_id + i, plan[i].sector + s);
        }
        if (vhd_write(v, buf, plan[i].sector * SEC, plan[i].count * SEC)) {
            _exit(2);
        }
        if (i % 5 == 4) {
            uint32_t done = i + 1;
            if (vhd_flush(v) || write(fd, &done, 4) != 4) {
                _exit(3);
            }
        }
    }
    vhd_close(v);
    _exit(0);
}

/* One crash round: returns false on a failed check.  owner[] holds the
 * writer id of every sector as last acknowledged, and is updated to what
 * the image now holds. */
static bool
crash_round(const char *leaf, uint64_t *owner, uint64_t sectors,
            uint64_t first_id, uint64_t seed, int delay_us)
{
    struct crash_write *plan = xmalloc(CRASH_WRITES * sizeof *plan);
    uint8_t *img = xmalloc(sectors * SEC), want[SEC];
    uint32_t acked = 0, n;
    int pipefd[2], status;
    bool ok = true;
    struct vhd *v;
    pid_t pid;

    crash_plan(seed, sectors, plan, CRASH_WRITES);
    CHECK(!pipe(pipefd));
    pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        crash_child(leaf, plan, first_id, pipefd[1]);
    }
    close(pipefd[1]);
    usleep(delay_us);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    while (read(pipefd[0], &n, 4) == 4) {
        acked = n;
    }
    close(pipefd[0]);
    if (getenv("TEST_VHD_VERBOSE")) {
        fprintf(stderr, "  killed after %d us: %u writes acknowledged, "
                "status %#x\n", delay_us, acked, status);
    }

    ok = check_ok(leaf);
    /* Every acknowledged write reads back; a sector may also hold any
     * later write that covered it. */
    for (uint32_t i = 0; i < acked; i++) {
        for (uint64_t s = 0; s < plan[i].count; s++) {
            owner[plan[i].sector + s] = first_id + i;
        }
    }
    v = open_or_die(leaf, true, true);
    CHECK_INT(vhd_read(v, img, 0, sectors * SEC), 0);
    vhd_close(v);
    for (uint64_t s = 0; ok && s < sectors; s++) {
        uint8_t *got = img + s * SEC;
        uint64_t id;
        memcpy(&id, got, 8);
        if (id != owner[s]) {
            bool later = false;
            for (uint32_t i = acked; i < CRASH_WRITES && !later; i++) {
                later = first_id + i == id && plan[i].sector <= s
                        && s < plan[i].sector + plan[i].count;
            }
            if (!later) {
                fprintf(stderr, "  sector %llu holds write %llu, want %llu "
                        "(acked %u writes of round from id %llu)\n",
                        (unsigned long long) s, (unsigned long long) id,
                        (unsigned long long) owner[s], acked,
                        (unsigned long long) first_id);
                ok = false;
                break;
            }
            owner[s] = id;
        }
        if (owner[s]) {
            crash_sector(want, owner[s], s);
        } else {
            memset(want, 0, SEC);       /* never written */
        }
        if (memcmp(got, want, SEC)) {
            fprintf(stderr, "  sector %llu: content of write %llu torn\n",
                    (unsigned long long) s, (unsigned long long) owner[s]);
            ok = false;
        }
    }
    free(plan);
    free(img);
    return ok;
}

static void
crash_test(bool differencing)
{
    char *dir = test_dir(differencing ? "crash-diff" : "crash-dyn");
    char *base = xasprintf("%s/base.vhd", dir);
    char *leaf = xasprintf("%s/leaf.vhd", dir);
    uint64_t size = 8 * MiB, sectors = size / SEC;
    uint64_t *owner = xcalloc(sectors, sizeof *owner);
    uint8_t *buf = xmalloc(size);
    uint64_t seed = 12345 + differencing;
    char *err = NULL;
    struct vhd *v;

    /* 64 KiB blocks: many allocations in a short run. */
    create_or_die(base, size, 64 * 1024, NULL);
    v = open_or_die(base, false, false);
    for (uint64_t s = 0; s < sectors; s++) {
        crash_sector(buf + s * SEC, 1, s);
        owner[s] = 1;
    }
    if (differencing) {
        /* The parent full; the leaf's unwritten sectors must show it. */
        CHECK_INT(vhd_write(v, buf, 0, size), 0);
    } else {
        /* A few blocks, so that the rest is allocated under fire. */
        CHECK_INT(vhd_write(v, buf, 0, MiB), 0);
        memset(owner + MiB / SEC, 0, (sectors - MiB / SEC) * sizeof *owner);
    }
    vhd_close(v);
    if (differencing) {
        CHECK_INT(vhd_snapshot(base, leaf, &err), 0);
    } else {
        CHECK(!rename(base, leaf));
    }

    for (int round = 0; round < 8 && !test_failures_; round++) {
        int delay = 2000 + (int) ((seed * 7919 + round * 104729) % 40000);
        if (!crash_round(leaf, owner, sectors, 2 + round * CRASH_WRITES,
                         seed * 1000 + round, delay)) {
            test_failures_++;
        }
    }
    free(err);
    free(owner);
    free(buf);
    free(base);
    free(leaf);
    remove_dir(dir);
}

TEST(test_crash_while_writing_a_dynamic_disk_keeps_flushed_writes)
{
    crash_test(false);
}

TEST(test_crash_while_writing_a_differencing_disk_keeps_flushed_writes)
{
    crash_test(true);
}

TEST(test_crash_during_coalesce_leaves_both_images_valid)
{
    NEED_QEMU();
    char *dir = test_dir("crash-coalesce");
    char *base = xasprintf("%s/base.vhd", dir);
    char *leaf = xasprintf("%s/leaf.vhd", dir);
    uint64_t size = 24 * MiB;
    uint8_t *model = xcalloc(1, size);
    char *err = NULL;
    struct vhd *v;

    create_or_die(base, size, 0, NULL);
    v = open_or_die(base, false, false);
    random_writes(v, model, size, 10, 2 * MiB, NULL, NULL);
    vhd_close(v);
    CHECK_INT(vhd_snapshot(base, leaf, &err), 0);
    v = open_or_die(leaf, true, false);
    random_writes(v, model, size, 40, 3 * MiB, NULL, NULL);
    vhd_close(v);

    for (int round = 0; round < 5; round++) {
        pid_t pid = fork();
        int status;
        if (pid == 0) {
            _exit(vhd_coalesce(leaf, NULL, NULL, NULL) ? 1 : 0);
        }
        usleep(1000 + round * 3000);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        CHECK(check_ok(base));
        CHECK(check_ok(leaf));
        v = open_or_die(leaf, true, true);
        CHECK(view_matches(v, model, size, "chain after a killed coalesce"));
        vhd_close(v);
    }
    CHECK_INT(vhd_coalesce(leaf, NULL, NULL, &err), 0);
    CHECK(qemu_matches(base, model, size));
    free(err);
    free(model);
    free(base);
    free(leaf);
    remove_dir(dir);
}

/* ---- import, export, block device ---- */

static int
count_progress(void *aux, uint64_t done, uint64_t total)
{
    int *calls = aux;

    (*calls)++;
    return done > total;
}

static int
cancel_progress(void *aux, uint64_t done, uint64_t total)
{
    return 1;
}

TEST(test_raw_import_and_export_round_trip)
{
    NEED_QEMU();
    char *dir = test_dir("raw");
    char *raw = xasprintf("%s/in.raw", dir);
    char *img = xasprintf("%s/imp.vhd", dir);
    char *img2 = xasprintf("%s/imp2.vhd", dir);
    char *out = xasprintf("%s/out.raw", dir);
    char *cmd;
    size_t raw_len = 20 * MiB + 1000, size = 20 * MiB + 1024;
    uint8_t *model = xcalloc(1, size);
    struct vhd_create_opts opts = { .virtual_size = size };
    struct vhd_info info;
    char *err = NULL, *data = NULL;
    size_t len;
    int calls = 0, fd;
    struct vhd *v;
    FILE *p;

    /* Data in some blocks, zeros in others. */
    for (uint64_t off = 0; off < raw_len; off += 2 * MiB) {
        if (off / (2 * MiB) % 3 != 1) {
            rnd_fill(model + off, MIN(MiB + 4096, raw_len - off));
        }
    }
    CHECK_INT(write_file_atomic(raw, model, raw_len, 0644), 0);
    fd = open(raw, O_RDONLY);
    CHECK_INT(vhd_import_raw(img, fd, NULL, count_progress, &calls, &err), 0);
    close(fd);
    CHECK(calls > 0);
    CHECK(qemu_matches(img, model, size));
    CHECK(check_ok(img));
    v = open_or_die(img, false, true);
    vhd_get_info(v, &info);
    CHECK_INT(info.virtual_size, size);
    CHECK_INT(info.allocated_blocks, 7);     /* 3 of 11 blocks were zeros */

    /* Export to a file (sparse) and to a pipe (every byte). */
    fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK_INT(vhd_export_raw(v, fd, NULL, NULL, &err), 0);
    close(fd);
    CHECK_INT(read_file(out, 1 << 30, &data, &len), 0);
    CHECK(len == size && same((uint8_t *) data, model, size, "export"));
    free(data);
    unlink(out);
    cmd = xasprintf("cat > '%s'", out);
    p = popen(cmd, "w");
    CHECK_INT(vhd_export_raw(v, fileno(p), NULL, NULL, &err), 0);
    pclose(p);
    CHECK_INT(read_file(out, 1 << 30, &data, &len), 0);
    CHECK(len == size
          && same((uint8_t *) data, model, size, "export to a pipe"));
    free(data);
    free(cmd);
    vhd_close(v);

    /* Import from a pipe, with the size given. */
    cmd = xasprintf("cat '%s'", raw);
    p = popen(cmd, "r");
    opts.virtual_size = size;
    CHECK_INT(vhd_import_raw(img2, fileno(p), &opts, NULL, NULL, &err), -EIO);
    pclose(p);                       /* the stream is 24 bytes short */
    CHECK(access(img2, F_OK) != 0);  /* removed on failure */
    free(err);
    err = NULL;
    opts.virtual_size = 20 * MiB;
    p = popen(cmd, "r");
    CHECK_INT(vhd_import_raw(img2, fileno(p), &opts, NULL, NULL, &err), 0);
    pclose(p);
    CHECK(qemu_matches(img2, model, 20 * MiB));
    unlink(img2);

    /* A cancelled import leaves nothing behind. */
    fd = open(raw, O_RDONLY);
    CHECK_INT(vhd_import_raw(img2, fd, NULL, cancel_progress, NULL, &err),
              -ECANCELED);
    close(fd);
    CHECK(access(img2, F_OK) != 0);
    free(err);
    free(cmd);
    free(model);
    free(raw);
    free(img);
    free(img2);
    free(out);
    remove_dir(dir);
}

TEST(test_blockdev_view_of_a_chain_takes_unaligned_io)
{
    char *dir = test_dir("blockdev");
    char *base = xasprintf("%s/base.vhd", dir);
    char *leaf = xasprintf("%s/leaf.vhd", dir);
    uint64_t size = 6 * MiB;
    uint8_t *model = xcalloc(1, size), *buf = xmalloc(300000);
    struct blockdev *dev = NULL;
    char *err = NULL;
    struct vhd *v;

    create_or_die(base, size, 0, NULL);
    v = open_or_die(base, false, false);
    random_writes(v, model, size, 10, MiB, NULL, NULL);
    vhd_close(v);
    CHECK_INT(vhd_snapshot(base, leaf, &err), 0);
    CHECK_INT(blockdev_open_vhd(leaf, false, &dev, &err), 0);
    CHECK_INT(dev->size, size);
    for (int i = 0; i < 300; i++) {
        uint64_t len = 1 + rnd_below(300000);
        uint64_t off = rnd_below(size - len + 1);
        switch (rnd_below(3)) {
        case 0:
            rnd_fill(buf, len);
            CHECK_INT(dev->ops->write(dev, buf, off, len), 0);
            memcpy(model + off, buf, len);
            break;
        case 1:
            CHECK_INT(dev->ops->write_zeroes(dev, off, len), 0);
            memset(model + off, 0, len);
            break;
        default:
            CHECK_INT(dev->ops->read(dev, buf, off, len), 0);
            CHECK(same(buf, model + off, len, "blockdev read"));
        }
    }
    CHECK_INT(dev->ops->read(dev, buf, size - 10, 11), -EINVAL);
    CHECK_INT(dev->ops->flush(dev), 0);
    blockdev_close(dev);
    CHECK_INT(blockdev_open_vhd(leaf, true, &dev, &err), 0);
    CHECK(dev->read_only);
    blockdev_close(dev);
    v = open_or_die(leaf, true, true);
    CHECK(view_matches(v, model, size, "chain after blockdev writes"));
    vhd_close(v);
    CHECK(check_ok(leaf));
    free(err);
    free(buf);
    free(model);
    free(base);
    free(leaf);
    remove_dir(dir);
}

TEST(test_hidden_flag_and_extents)
{
    NEED_QEMU();
    char *dir = test_dir("hidden");
    char *img = xasprintf("%s/h.vhd", dir);
    struct vhd_info info;
    uint8_t buf[SEC];
    struct vhd *v;
    uint64_t len;
    bool data;

    create_or_die(img, 10 * MiB, 0, NULL);
    v = open_or_die(img, false, false);
    CHECK_INT(vhd_extent(v, 0, &len, &data), 0);
    CHECK(!data && len == 10 * MiB);
    memset(buf, 1, sizeof buf);
    CHECK_INT(vhd_write(v, buf, 4 * MiB + SEC, SEC), 0);
    CHECK_INT(vhd_extent(v, SEC, &len, &data), 0);
    CHECK(!data && len == 4 * MiB - SEC);
    CHECK_INT(vhd_extent(v, 4 * MiB, &len, &data), 0);
    CHECK(data && len == 2 * MiB);
    CHECK_INT(vhd_extent(v, 6 * MiB, &len, &data), 0);
    CHECK(!data && len == 4 * MiB);
    CHECK_INT(vhd_set_hidden(v, true), 0);
    vhd_close(v);
    v = open_or_die(img, false, true);
    vhd_get_info(v, &info);
    CHECK(info.hidden);
    vhd_close(v);
    CHECK(check_ok(img));
    CHECK_INT(qemu_virtual_size(img), 10 * MiB);
    free(img);
    remove_dir(dir);
}

TEST(test_second_writer_is_refused)
{
    char *dir = test_dir("lock");
    char *img = xasprintf("%s/l.vhd", dir);
    struct vhd *a, *b = NULL;
    char *err = NULL;

    create_or_die(img, MiB, 0, NULL);
    a = open_or_die(img, false, false);
    CHECK_INT(vhd_open(img, false, &b, &err), -EBUSY);
    free(err);
    b = open_or_die(img, false, true);       /* readers are fine */
    vhd_close(b);
    vhd_close(a);
    free(img);
    remove_dir(dir);
}

/* An image whose footer sits past its data (one made in a logical volume,
 * or a file with room a crash leaked) fills that room before the file
 * grows, and reads back the same; opened as a container it never grows. */
TEST(test_room_below_the_footer_is_used_before_the_file_grows)
{
    char *dir = test_dir("room");
    char *img = xasprintf("%s/r.vhd", dir);
    struct vhd_create_opts opts = { .virtual_size = 16 * MiB,
                                    .container = true };
    uint8_t *buf = xmalloc(2 * MiB), *model = xcalloc(1, 16 * MiB);
    struct vhd *v = NULL;
    struct stat st;
    char *err = NULL;

    CHECK(!sh("truncate -s 5M '%s'", img));
    CHECK(!vhd_create(img, &opts, &err));
    v = open_or_die(img, false, false);
    /* 5 MiB hold the metadata and two 2 MiB blocks. */
    for (int i = 0; i < 2; i++) {
        memset(buf, 0x21 + i, 2 * MiB);
        memset(model + i * 4 * MiB, 0x21 + i, 2 * MiB);
        CHECK(!vhd_write(v, buf, (uint64_t) i * 4 * MiB, 2 * MiB));
    }
    CHECK(!vhd_flush(v));
    CHECK(!stat(img, &st) && (uint64_t) st.st_size == 5 * MiB);
    /* The third grows the file, as for any image. */
    memset(buf, 0x23, 2 * MiB);
    memset(model + 8 * MiB, 0x23, 2 * MiB);
    CHECK(!vhd_write(v, buf, 8 * MiB, 2 * MiB));
    vhd_close(v);
    CHECK(!stat(img, &st) && (uint64_t) st.st_size > 5 * MiB);
    CHECK(!vhd_check(img, true, &err));
    v = open_or_die(img, false, true);
    CHECK(view_matches(v, model, 16 * MiB, "image with room"));
    vhd_close(v);
    if (have_qemu()) {
        CHECK(qemu_matches(img, model, 16 * MiB));
    }
    /* As a container, the full file refuses a new block. */
    CHECK(!vhd_open_ex(img, VHD_OPEN_CONTAINER, &v, &err));
    if (v) {
        CHECK_INT(vhd_write(v, buf, 12 * MiB, 2 * MiB), -ENOSPC);
        vhd_close(v);
    }
    free(err);
    free(buf);
    free(model);
    free(img);
    remove_dir(dir);
}
