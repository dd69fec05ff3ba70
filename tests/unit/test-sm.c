/* test-sm.c — tests of the SR drivers (storage/sm*.c): the file driver's
 * whole VDI life cycle, chains and their limit, the garbage collector,
 * crash safety at every crash point of snapshot, clone, destroy and GC,
 * and the iso, sim, nfs and ext drivers.
 *
 * Every VDI's content is checked against the test's own model after each
 * step, twice: through our VHD library (blockdev_open_vhd) and through
 * qemu-img, the independent implementation.  qemu's "vpc" driver reads a
 * differencing disk as if it stood alone, so the qemu view of a chain is
 * composed layer by layer: the tests write whole 2 MiB blocks, so each
 * block of the chain comes from the topmost layer that holds it.  Every
 * image also passes vhd_check(). */
#define TEST_MAIN
#include <config.h>
#include "test.h"
#include "test-storage-util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/blockdev.h"
#include "storage/sm.h"
#include "storage/vhd.h"
#include "util.h"

#define MiB (1024ull * 1024)
#define BLK (2 * MiB)
#define VSIZE (16 * MiB)
#define CRASH_VSIZE (8 * MiB)

#define MAP(...)                                                          \
    (&(struct sm_map) { (const struct sm_kv[]) { __VA_ARGS__ },           \
                        sizeof((const struct sm_kv[]) { __VA_ARGS__ })    \
                        / sizeof(struct sm_kv) })
#define EMPTY_MAP (&(struct sm_map) { NULL, 0 })

/* ---- helpers ---- */

/* Whether checks also ask qemu-img (crash tests ask it once per crash, to
 * stay fast). */
static bool qemu_wanted = true;

static bool
have_qemu(void)
{
    return have_qemu_img() && qemu_wanted;
}

static char *
make_temp_dir(void)
{
    char tmpl[] = "/tmp/test-sm.XXXXXX";

    if (!mkdtemp(tmpl)) {
        abort();
    }
    return xstrdup(tmpl);
}

/* The crash tests kill processes, not the power: they and the other long
 * tests run on tmpfs when there is one, where fsync costs nothing, to stay
 * fast on a busy disk.
 * The driver tests stay on /tmp's filesystem, and the ext test runs a
 * full cycle on a real ext4 filesystem. */
static bool fast_dirs;

static char *
make_test_dir(void)
{
    char tmpl[] = "/dev/shm/test-sm.XXXXXX";

    if (fast_dirs && !access("/dev/shm", W_OK) && mkdtemp(tmpl)) {
        return xstrdup(tmpl);
    }
    return make_temp_dir();
}

static void
remove_tree(const char *dir)
{
    if (dir && (!strncmp(dir, "/tmp/test-sm.", 13)
                || !strncmp(dir, "/dev/shm/test-sm.", 17))) {
        sh("rm -rf '%s'", dir);
    }
}

static void
fill_block(uint8_t *p, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

    for (size_t i = 0; i < BLK; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 2685821657736338717ull;
        memcpy(p + i, &v, 8);
    }
}

/* What the test expects each VDI to hold. */
struct model {
    char uuid[37];
    uint8_t *data;
    uint64_t size;
    bool present;
};

#define MAX_VDIS 40

struct fixture {
    const struct sm_driver *drv;
    char *dir;                  /* temp dir (state dir and SR location) */
    char *location;
    const struct sm_map *config;    /* NULL: location only */
    char sr_uuid[37];
    struct sm_sr *sr;
    struct model vdis[MAX_VDIS];
    int n;
};

static const struct sm_map *
fixture_config(struct fixture *f)
{
    static struct sm_kv kv[1];
    static struct sm_map map;

    if (f->config) {
        return f->config;
    }
    kv[0].key = "location";
    kv[0].value = f->location;
    map.kv = kv;
    map.n = 1;
    return &map;
}

static bool
fixture_attach(struct fixture *f)
{
    char *err = NULL;
    int rc;

    rc = f->drv->attach(f->dir, f->sr_uuid, fixture_config(f), &f->sr,
                        &err);
    if (rc) {
        fprintf(stderr, "  attach: %d %s\n", rc, err ? err : "");
    }
    free(err);
    return rc == 0;
}

static void
fixture_detach(struct fixture *f)
{
    f->drv->detach(f->sr);
    f->sr = NULL;
}

static bool
fixture_init(struct fixture *f)
{
    char *err = NULL;
    int rc;

    memset(f, 0, sizeof *f);
    f->drv = &sm_file_driver;
    f->dir = make_test_dir();
    f->location = xasprintf("%s/sr", f->dir);
    uuid_generate(f->sr_uuid);
    rc = f->drv->create(f->dir, f->sr_uuid, fixture_config(f), 0, &err);
    if (rc) {
        fprintf(stderr, "  create: %d %s\n", rc, err ? err : "");
        free(err);
        return false;
    }
    return fixture_attach(f);
}

/* A fixture on tmpfs (when there is one), for tests that do a lot. */
static bool
fixture_init_fast(struct fixture *f)
{
    bool ok;

    fast_dirs = true;
    ok = fixture_init(f);
    fast_dirs = false;
    return ok;
}

static void
fixture_destroy(struct fixture *f)
{
    fixture_detach(f);
    for (int i = 0; i < f->n; i++) {
        free(f->vdis[i].data);
    }
    remove_tree(f->dir);
    free(f->dir);
    free(f->location);
}

static struct model *
model_add(struct fixture *f, const char *uuid, uint64_t size,
          const uint8_t *data)
{
    struct model *m = &f->vdis[f->n++];

    memcpy(m->uuid, uuid, 37);
    m->size = size;
    m->data = xcalloc(1, size);
    if (data) {
        memcpy(m->data, data, size);
    }
    m->present = true;
    return m;
}

static struct model *
create_vdi(struct fixture *f, uint64_t size, const char *type)
{
    struct sm_vdi_info info;
    char uuid[37], *err = NULL;
    int rc;

    uuid_generate(uuid);
    memset(&info, 0, sizeof info);
    rc = type ? f->drv->vdi_create(f->sr, uuid, size,
                                   MAP({ "type", type }), &info, &err)
              : f->drv->vdi_create(f->sr, uuid, size, EMPTY_MAP, &info,
                                   &err);
    if (rc) {
        fprintf(stderr, "  vdi_create: %d %s\n", rc, err ? err : "");
        free(err);
        return NULL;
    }
    CHECK_STR(info.uuid, uuid);
    CHECK_INT(info.virtual_size, size);
    sm_vdi_info_clear(&info);
    return model_add(f, uuid, size, NULL);
}

/* Writes whole blocks (seeded) to a VDI through the data path. */
static bool
write_blocks(struct fixture *f, struct model *m, const int *blocks, int n,
             uint64_t seed)
{
    struct sm_attach a = { NULL, NULL, false };
    struct blockdev *dev = NULL;
    char *err = NULL;
    bool ok = false;
    int rc;

    rc = f->drv->vdi_attach(f->sr, m->uuid, true, &a, &err);
    if (rc) {
        fprintf(stderr, "  vdi_attach: %d %s\n", rc, err ? err : "");
        goto out;
    }
    rc = !strcmp(a.format, "vhd") ? blockdev_open_vhd(a.path, false, &dev,
                                                      &err)
         : blockdev_open_raw(a.path, false, &dev, &err);
    if (rc) {
        fprintf(stderr, "  open %s: %d %s\n", a.path, rc, err ? err : "");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        uint8_t *p = m->data + (uint64_t) blocks[i] * BLK;

        fill_block(p, seed + blocks[i]);
        if (dev->ops->write(dev, p, (uint64_t) blocks[i] * BLK, BLK)) {
            fprintf(stderr, "  write failed\n");
            goto out;
        }
    }
    ok = dev->ops->flush(dev) == 0;
out:
    blockdev_close(dev);
    if (a.path) {
        f->drv->vdi_detach(f->sr, m->uuid);
    }
    sm_attach_clear(&a);
    free(err);
    return ok;
}

static uint8_t *
read_whole_file(const char *path, size_t *ret_len)
{
    char *data = NULL;
    size_t len = 0;

    if (read_file(path, 1ull << 30, &data, &len)) {
        return NULL;
    }
    *ret_len = len;
    return (uint8_t *) data;
}

/* qemu's views of image files, kept while the files do not change: the
 * bases shared by several VDIs are converted once per check. */
struct qemu_cached {
    char *path;
    struct stat st;
    uint8_t *view;
    size_t len;
};
static struct qemu_cached qemu_cache[64];
static int qemu_cache_n;

static void
qemu_cache_clear(void)
{
    for (int i = 0; i < qemu_cache_n; i++) {
        free(qemu_cache[i].path);
        free(qemu_cache[i].view);
    }
    qemu_cache_n = 0;
}

/* qemu's view of one image alone, as raw bytes (owned by the cache). */
static bool
qemu_view(const char *path, uint8_t **ret_view, size_t *ret_len)
{
    struct qemu_cached *c;
    struct stat st;
    char *raw;
    bool ok;

    if (stat(path, &st)) {
        return false;
    }
    for (int i = 0; i < qemu_cache_n; i++) {
        c = &qemu_cache[i];
        if (!strcmp(c->path, path) && c->st.st_ino == st.st_ino
            && c->st.st_size == st.st_size
            && c->st.st_mtim.tv_sec == st.st_mtim.tv_sec
            && c->st.st_mtim.tv_nsec == st.st_mtim.tv_nsec) {
            *ret_view = c->view;
            *ret_len = c->len;
            return true;
        }
    }
    if (qemu_cache_n == ARRAY_SIZE(qemu_cache)) {
        qemu_cache_clear();
    }
    raw = xasprintf("%s/test-sm-qemu.%d.raw",
                    access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm",
                    (int) getpid());
    {
        /* Spawned (not system()): forking a sanitized process is slow. */
        const char *argv[] = { "qemu-img", "convert", "-f", "vpc", "-O",
                               "raw", path, raw, NULL };
        char *err = NULL;

        if (sm_run(argv, NULL, &err)) {
            fprintf(stderr, "  qemu-img cannot read %s: %s\n", path, err);
            free(err);
            free(raw);
            return false;
        }
    }
    c = &qemu_cache[qemu_cache_n];
    c->view = read_whole_file(raw, &c->len);
    unlink(raw);
    free(raw);
    ok = c->view != NULL;
    if (ok) {
        c->path = xstrdup(path);
        c->st = st;
        qemu_cache_n++;
        *ret_view = c->view;
        *ret_len = c->len;
    }
    return ok;
}

/* The chain's content as qemu reads it, composed from each layer alone:
 * block by block, from the topmost layer that holds the block. */
static bool
qemu_check_chain(const char *leaf, const uint8_t *want, uint64_t size)
{
    char *layers[VHD_MAX_CHAIN_DEPTH + 1];
    uint8_t *views[VHD_MAX_CHAIN_DEPTH + 1];
    size_t view_len[VHD_MAX_CHAIN_DEPTH + 1];
    struct vhd *opened[VHD_MAX_CHAIN_DEPTH + 1];
    uint8_t *got = xcalloc(1, size);
    int n = 0;
    bool ok = false;

    memset(opened, 0, sizeof opened);
    memset(views, 0, sizeof views);
    layers[n++] = xstrdup(leaf);
    for (;;) {
        struct vhd_info info;
        struct vhd *v = NULL;
        char *parent = NULL, *err = NULL;

        if (vhd_open(layers[n - 1], true, &v, &err)) {
            fprintf(stderr, "  open %s: %s\n", layers[n - 1], err);
            free(err);
            goto out;
        }
        opened[n - 1] = v;
        vhd_get_info(v, &info);
        if (info.type == VHD_TYPE_DIFF) {
            if (vhd_find_parent(v, &parent, &err)) {
                fprintf(stderr, "  parent of %s: %s\n", layers[n - 1], err);
                free(err);
                vhd_info_clear(&info);
                goto out;
            }
        }
        vhd_info_clear(&info);
        if (!parent) {
            break;
        }
        layers[n++] = parent;
    }
    for (int i = 0; i < n; i++) {
        if (!qemu_view(layers[i], &views[i], &view_len[i])) {
            goto out;
        }
    }
    for (uint64_t off = 0; off < size; off += BLK) {
        for (int i = 0; i < n; i++) {
            uint64_t len;
            bool data;

            if (off >= vhd_virtual_size(opened[i])
                || vhd_extent(opened[i], off, &len, &data)) {
                continue;
            }
            if (data) {
                memcpy(got + off, views[i] + off,
                       MIN(BLK, MIN(size, view_len[i]) - off));
                break;
            }
        }
    }
    ok = !memcmp(got, want, size);
    if (!ok) {
        for (uint64_t off = 0; off < size; off += BLK) {
            if (memcmp(got + off, want + off, MIN(BLK, size - off))) {
                fprintf(stderr, "  %s: qemu's view differs in block %llu\n",
                        leaf, (unsigned long long) (off / BLK));
                break;
            }
        }
    }
out:
    for (int i = 0; i < n; i++) {
        vhd_close(opened[i]);
        free(layers[i]);
    }
    free(got);
    return ok;
}

/* Every image of the chain passes vhd_check(). */
static bool
vhd_check_chain(const char *leaf)
{
    char *path = xstrdup(leaf);
    bool ok = true;

    while (path) {
        struct vhd *v = NULL;
        char *report = NULL, *parent = NULL, *err = NULL;

        if (vhd_check(path, true, &report)) {
            fprintf(stderr, "  vhd_check %s: %s\n", path, report);
            ok = false;
        }
        free(report);
        if (!vhd_open(path, true, &v, &err)) {
            struct vhd_info info;

            vhd_get_info(v, &info);
            if (info.type == VHD_TYPE_DIFF) {
                vhd_find_parent(v, &parent, &err);
            }
            vhd_info_clear(&info);
            vhd_close(v);
        }
        free(err);
        free(path);
        path = parent;
    }
    return ok;
}

/* Checks one VDI: own reads, qemu's composed view, vhd_check. */
static bool
check_vdi(struct fixture *f, const struct model *m)
{
    struct sm_attach a = { NULL, NULL, false };
    struct blockdev *dev = NULL;
    struct sm_vdi_info info;
    uint8_t *got = NULL;
    char *err = NULL;
    bool ok = false;
    int rc;

    memset(&info, 0, sizeof info);
    rc = f->drv->vdi_info(f->sr, m->uuid, &info, &err);
    if (rc) {
        fprintf(stderr, "  vdi_info %s: %d %s\n", m->uuid, rc, err);
        goto out;
    }
    if (info.virtual_size != m->size) {
        fprintf(stderr, "  %s: size %llu, want %llu\n", m->uuid,
                (unsigned long long) info.virtual_size,
                (unsigned long long) m->size);
        goto out;
    }
    rc = f->drv->vdi_attach(f->sr, m->uuid, false, &a, &err);
    if (rc) {
        fprintf(stderr, "  vdi_attach %s: %d %s\n", m->uuid, rc, err);
        goto out;
    }
    rc = !strcmp(a.format, "vhd") ? blockdev_open_vhd(a.path, true, &dev,
                                                      &err)
         : blockdev_open_raw(a.path, true, &dev, &err);
    if (rc) {
        fprintf(stderr, "  open %s: %d %s\n", a.path, rc, err);
        goto out;
    }
    got = xmalloc(m->size);
    if (dev->size != m->size || dev->ops->read(dev, got, 0, m->size)
        || memcmp(got, m->data, m->size)) {
        fprintf(stderr, "  %s: our read differs\n", m->uuid);
        goto out;
    }
    if (!strcmp(a.format, "vhd")) {
        if (!vhd_check_chain(a.path)) {
            goto out;
        }
        if (have_qemu() && !qemu_check_chain(a.path, m->data, m->size)) {
            goto out;
        }
    }
    ok = true;
out:
    blockdev_close(dev);
    if (a.path) {
        f->drv->vdi_detach(f->sr, m->uuid);
    }
    sm_attach_clear(&a);
    sm_vdi_info_clear(&info);
    free(got);
    free(err);
    return ok;
}

/* Checks every VDI of the model and that scan reports exactly those. */
static bool
check_all(struct fixture *f)
{
    struct sm_vdi_info *vdis = NULL;
    char *err = NULL;
    size_t n = 0;
    int present = 0;
    bool ok = true;

    if (f->drv->scan(f->sr, &vdis, &n, &err)) {
        fprintf(stderr, "  scan: %s\n", err);
        free(err);
        return false;
    }
    for (int i = 0; i < f->n; i++) {
        bool found = false;

        for (size_t j = 0; j < n; j++) {
            found = found || !strcmp(vdis[j].uuid, f->vdis[i].uuid);
        }
        if (found != f->vdis[i].present) {
            fprintf(stderr, "  scan: %s %s\n", f->vdis[i].uuid,
                    found ? "unexpected" : "missing");
            ok = false;
        }
        if (f->vdis[i].present) {
            present++;
            if (!check_vdi(f, &f->vdis[i])) {
                ok = false;
            }
        }
    }
    if ((int) n != present) {
        fprintf(stderr, "  scan: %zu VDIs, want %d\n", n, present);
        ok = false;
    }
    for (size_t j = 0; j < n; j++) {
        sm_vdi_info_clear(&vdis[j]);
    }
    free(vdis);
    qemu_cache_clear();
    return ok;
}

static struct model *
copy_vdi(struct fixture *f, struct model *m, bool clone)
{
    struct sm_vdi_info info;
    char uuid[37], *err = NULL;
    int rc;

    uuid_generate(uuid);
    memset(&info, 0, sizeof info);
    rc = clone ? f->drv->vdi_clone(f->sr, m->uuid, uuid, &info, &err)
               : f->drv->vdi_snapshot(f->sr, m->uuid, uuid, &info, &err);
    if (rc) {
        fprintf(stderr, "  %s: %d %s\n", clone ? "clone" : "snapshot", rc,
                err ? err : "");
        free(err);
        return NULL;
    }
    CHECK_STR(info.uuid, uuid);
    CHECK_STR(info.format, "vhd");
    sm_vdi_info_clear(&info);
    return model_add(f, uuid, m->size, m->data);
}

static bool
destroy_vdi(struct fixture *f, struct model *m)
{
    char *err = NULL;
    int rc = f->drv->vdi_destroy(f->sr, m->uuid, &err);

    if (rc) {
        fprintf(stderr, "  vdi_destroy: %d %s\n", rc, err ? err : "");
        free(err);
        return false;
    }
    m->present = false;
    return true;
}

/* Runs the GC until it has nothing to do; returns the number of steps or
 * -1. */
static int
gc_all(struct fixture *f, const struct sm_gc_hooks *hooks)
{
    for (int steps = 0; steps < 100; steps++) {
        char *err = NULL;
        bool more = false;
        int rc = f->drv->gc_step(f->sr, hooks, &more, &err);

        if (rc) {
            fprintf(stderr, "  gc_step: %d %s\n", rc, err ? err : "");
            free(err);
            return -1;
        }
        if (!more) {
            return steps + 1;
        }
    }
    return -1;
}

/* Counts the files in the SR directory with a suffix. */
static int
count_files(const char *dir, const char *suffix)
{
    struct dirent *de;
    DIR *d = opendir(dir);
    int n = 0;

    if (!d) {
        return -1;
    }
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name), slen = strlen(suffix);

        if (len >= slen && !strcmp(de->d_name + len - slen, suffix)) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static int
chain_length(struct fixture *f, const struct model *m)
{
    char *err = NULL;
    int len = -1;

    if (f->drv->chain_length(f->sr, m->uuid, &len, &err)) {
        fprintf(stderr, "  chain_length: %s\n", err);
        free(err);
        return -1;
    }
    return len;
}

/* ---- registry and helpers ---- */

TEST(test_registry_lists_every_driver)
{
    size_t n;
    const struct sm_driver *const *d = sm_drivers(&n);
    const char *want[] = { "ext", "file", "nfs", "lvm", "iso", "sim" };

    CHECK_INT(n, 6);
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        const struct sm_driver *drv = sm_driver_find(want[i]);

        CHECK(drv != NULL);
        if (drv) {
            CHECK_STR(drv->type, want[i]);
            CHECK(drv->capabilities && drv->capabilities[0]);
            CHECK(drv->configuration && drv->configuration[0].key);
            CHECK(drv->attach && drv->detach && drv->scan);
        }
    }
    for (size_t i = 0; i < n; i++) {
        CHECK(sm_driver_find(d[i]->type) == d[i]);
    }
    CHECK(sm_driver_find("nonesuch") == NULL);
    CHECK_STR(sm_driver_find("iso")->content_type, "iso");
    CHECK(sm_driver_find("nfs")->shared);
}

TEST(test_run_collects_output_and_status)
{
    const char *ok_argv[] = { "sh", "-c", "echo out; echo err >&2", NULL };
    const char *bad_argv[] = { "sh", "-c", "echo out; echo oops >&2; exit 3",
                               NULL };
    const char *missing[] = { "no-such-program-here", NULL };
    char *out = NULL, *err = NULL;

    CHECK_INT(sm_run(ok_argv, &out, &err), 0);
    CHECK_STR(out, "out\n");
    CHECK(err == NULL);
    free(out);
    out = NULL;
    CHECK_INT(sm_run(bad_argv, &out, &err), -EIO);
    CHECK_STR(err, "sh: oops");
    CHECK(out == NULL);
    free(err);
    err = NULL;
    CHECK_INT(sm_run(missing, &out, &err), -ENOENT);
    CHECK(err && strstr(err, "no-such-program-here"));
    free(err);
}

TEST(test_map_and_info_helpers)
{
    struct sm_vdi_info info;

    CHECK_STR(sm_map_get(MAP({ "a", "1" }, { "b", "2" }), "b"), "2");
    CHECK(sm_map_get(MAP({ "a", "1" }), "c") == NULL);
    CHECK(sm_map_get(NULL, "a") == NULL);
    memset(&info, 0, sizeof info);
    sm_vdi_info_set_config(&info, "k", "v1");
    sm_vdi_info_set_config(&info, "k", "v2");
    sm_vdi_info_set_config(&info, "j", "x");
    CHECK_INT(info.n_sm_config, 2);
    CHECK_STR(info.sm_config[0].value, "v2");
    sm_vdi_info_clear(&info);
    sm_vdi_info_clear(NULL);
    sm_attach_clear(NULL);
}

/* ---- the file driver ---- */

TEST(test_file_sr_create_attach_and_probe)
{
    struct fixture f;
    char other[37], *err = NULL, *xml = NULL;
    struct sm_sr *sr = NULL;
    struct sm_sr_stat st;

    if (!fixture_init(&f)) {
        CHECK(!"fixture");
        return;
    }
    /* A second SR in the same place is refused unless forced. */
    uuid_generate(other);
    CHECK_INT(f.drv->create(f.dir, other, fixture_config(&f), 0, &err),
              -EEXIST);
    free(err);
    err = NULL;
    CHECK_INT(f.drv->attach(f.dir, other, fixture_config(&f), &sr, &err),
              -ENOENT);
    free(err);
    err = NULL;
    CHECK_INT(f.drv->attach(f.dir, f.sr_uuid, MAP({ "location", "rel" }),
                            &sr, &err), -EINVAL);
    free(err);
    err = NULL;
    CHECK_INT(f.drv->probe(fixture_config(&f), EMPTY_MAP, &xml, &err), 0);
    CHECK(xml && strstr(xml, "<SRlist>") && strstr(xml, f.sr_uuid));
    free(xml);
    CHECK_INT(f.drv->stat(f.sr, &st, &err), 0);
    CHECK(st.physical_size > 0 && st.free_space <= st.physical_size);
    CHECK(st.physical_utilisation <= st.physical_size);
    fixture_destroy(&f);
}

TEST(test_file_vdi_create_sizes)
{
    struct fixture f;
    struct sm_vdi_info info;
    char uuid[37], *err = NULL;

    if (!fixture_init(&f)) {
        CHECK(!"fixture");
        return;
    }
    memset(&info, 0, sizeof info);
    uuid_generate(uuid);
    /* Rounded up to whole sectors, as XenServer does. */
    CHECK_INT(f.drv->vdi_create(f.sr, uuid, 1000, EMPTY_MAP, &info, &err),
              0);
    CHECK_INT(info.virtual_size, 1024);
    CHECK_STR(info.location, uuid);
    CHECK_STR(info.format, "vhd");
    sm_vdi_info_clear(&info);
    CHECK_INT(f.drv->vdi_create(f.sr, uuid, 1024, EMPTY_MAP, &info, &err),
              -EEXIST);
    free(err);
    err = NULL;
    uuid_generate(uuid);
    CHECK_INT(f.drv->vdi_create(f.sr, uuid, VHD_MAX_SIZE + 512, EMPTY_MAP,
                                &info, &err), -EINVAL);
    free(err);
    err = NULL;
    /* Thin: the largest VHD fits however small the filesystem. */
    CHECK_INT(f.drv->vdi_create(f.sr, uuid, VHD_MAX_SIZE, EMPTY_MAP, &info,
                                &err), 0);
    CHECK(info.physical_utilisation < 8 * MiB);
    sm_vdi_info_clear(&info);
    CHECK_INT(f.drv->vdi_create(f.sr, "not-a-uuid", 1024, EMPTY_MAP, &info,
                                &err), -EINVAL);
    free(err);
    err = NULL;
    CHECK_INT(f.drv->vdi_info(f.sr, "../../etc/passwd", &info, &err),
              -ENOENT);
    free(err);
    fixture_destroy(&f);
}

TEST(test_file_full_cycle_keeps_data)
{
    struct fixture f;
    struct model *a, *s1, *c1, *s2;
    struct sm_vdi_info info;
    char *err = NULL;
    const int b1[] = { 0, 3, 7 }, b2[] = { 3, 5 }, b3[] = { 1, 7 },
              b4[] = { 8, 9 };

    if (!fixture_init_fast(&f)) {
        CHECK(!"fixture");
        return;
    }
    a = create_vdi(&f, VSIZE, NULL);
    CHECK(a && write_blocks(&f, a, b1, 3, 100));
    CHECK(check_all(&f));
    CHECK_INT(chain_length(&f, a), 1);

    /* Snapshot: A keeps its uuid and path and reads through the base. */
    s1 = copy_vdi(&f, a, false);
    CHECK(s1 != NULL);
    CHECK_INT(chain_length(&f, a), 2);
    CHECK_INT(chain_length(&f, s1), 2);
    CHECK(write_blocks(&f, a, b2, 2, 200));
    CHECK(check_all(&f));
    memset(&info, 0, sizeof info);
    CHECK_INT(f.drv->vdi_info(f.sr, a->uuid, &info, &err), 0);
    CHECK(sm_map_get(&(struct sm_map) { info.sm_config, info.n_sm_config },
                     "vhd-parent") != NULL);
    CHECK_STR(sm_map_get(&(struct sm_map) { info.sm_config,
                                            info.n_sm_config },
                         "vdi_type"), "vhd");
    /* Its own allocation: the two blocks written since the snapshot. */
    CHECK(info.physical_utilisation >= 2 * BLK
          && info.physical_utilisation < 3 * BLK);
    sm_vdi_info_clear(&info);

    /* Clone of the snapshot, written independently. */
    c1 = copy_vdi(&f, s1, true);
    CHECK(c1 && write_blocks(&f, c1, b3, 2, 300));
    CHECK(check_all(&f));
    s2 = copy_vdi(&f, a, false);
    CHECK(s2 != NULL);
    CHECK_INT(chain_length(&f, a), 3);

    /* Resize: grows; shrinking is refused. */
    memset(&info, 0, sizeof info);
    CHECK_INT(f.drv->vdi_resize(f.sr, a->uuid, VSIZE + 4 * MiB, &info,
                                &err), 0);
    CHECK_INT(info.virtual_size, VSIZE + 4 * MiB);
    sm_vdi_info_clear(&info);
    a->data = xrealloc(a->data, VSIZE + 4 * MiB);
    memset(a->data + VSIZE, 0, 4 * MiB);
    a->size = VSIZE + 4 * MiB;
    CHECK(write_blocks(&f, a, b4, 2, 400));
    CHECK_INT(f.drv->vdi_resize(f.sr, a->uuid, VSIZE, &info, &err),
              -EINVAL);
    free(err);
    err = NULL;
    CHECK(check_all(&f));

    /* Destroy and collect: every step keeps every VDI's data. */
    CHECK(destroy_vdi(&f, s1));
    CHECK(check_all(&f));
    CHECK(gc_all(&f, NULL) > 0);
    CHECK(check_all(&f));
    CHECK(destroy_vdi(&f, s2));
    CHECK(gc_all(&f, NULL) > 0);
    CHECK(check_all(&f));
    /* A and the clone share the first snapshot's base ... */
    CHECK_INT(chain_length(&f, a), 2);
    CHECK_INT(chain_length(&f, c1), 2);
    CHECK(destroy_vdi(&f, a));
    CHECK(gc_all(&f, NULL) > 0);
    CHECK(check_all(&f));
    CHECK_INT(chain_length(&f, c1), 1);
    /* ... and only the clone's image is left. */
    CHECK_INT(count_files(f.location, ".vhd"), 1);
    CHECK_INT(f.drv->vdi_destroy(f.sr, a->uuid, &err), -ENOENT);
    free(err);
    err = NULL;
    CHECK(destroy_vdi(&f, c1));
    CHECK_INT(gc_all(&f, NULL), 1);
    CHECK_INT(count_files(f.location, ".vhd"), 0);
    fixture_detach(&f);
    CHECK_INT(f.drv->destroy(f.dir, f.sr_uuid, fixture_config(&f), &err), 0);
    CHECK(access(f.location, F_OK) != 0);
    free(err);
    fixture_destroy(&f);
}

TEST(test_file_raw_vdi)
{
    struct fixture f;
    struct model *r;
    struct sm_vdi_info info;
    char uuid[37], *err = NULL;
    const int blocks[] = { 1, 2 };

    if (!fixture_init(&f)) {
        CHECK(!"fixture");
        return;
    }
    r = create_vdi(&f, VSIZE, "raw");
    CHECK(r && write_blocks(&f, r, blocks, 2, 7));
    CHECK(check_all(&f));
    memset(&info, 0, sizeof info);
    CHECK_INT(f.drv->vdi_info(f.sr, r->uuid, &info, &err), 0);
    CHECK_STR(info.format, "raw");
    CHECK(info.physical_utilisation <= 2 * BLK + 65536);
    sm_vdi_info_clear(&info);
    uuid_generate(uuid);
    CHECK_INT(f.drv->vdi_snapshot(f.sr, r->uuid, uuid, &info, &err),
              -EOPNOTSUPP);
    free(err);
    err = NULL;
    CHECK_INT(f.drv->vdi_resize(f.sr, r->uuid, 2 * VSIZE, &info, &err), 0);
    sm_vdi_info_clear(&info);
    r->data = xrealloc(r->data, 2 * VSIZE);
    memset(r->data + VSIZE, 0, VSIZE);
    r->size = 2 * VSIZE;
    CHECK(check_all(&f));
    CHECK(destroy_vdi(&f, r));
    CHECK(check_all(&f));
    fixture_destroy(&f);
}

TEST(test_file_chain_length_limit)
{
    struct fixture f;
    struct model *a;
    struct sm_vdi_info info;
    char uuid[37], *err = NULL;
    int i, rc = 0;
    const int blocks[] = { 0 };

    if (!fixture_init_fast(&f)) {
        CHECK(!"fixture");
        return;
    }
    a = create_vdi(&f, 4 * MiB, NULL);
    CHECK(a && write_blocks(&f, a, blocks, 1, 1));
    for (i = 1; i < 40; i++) {
        uuid_generate(uuid);
        memset(&info, 0, sizeof info);
        rc = f.drv->vdi_snapshot(f.sr, a->uuid, uuid, &info, &err);
        if (rc) {
            break;
        }
        sm_vdi_info_clear(&info);
        /* Destroy the snapshot at once: the chain still grows. */
        CHECK_INT(f.drv->vdi_destroy(f.sr, uuid, &err), 0);
    }
    CHECK_INT(rc, -ELOOP);
    CHECK(err && strstr(err, "too long"));
    free(err);
    CHECK_INT(i, SM_MAX_CHAIN_LENGTH);
    CHECK_INT(chain_length(&f, a), SM_MAX_CHAIN_LENGTH);
    CHECK(check_all(&f));
    /* The GC folds the whole chain back into one image. */
    CHECK(gc_all(&f, NULL) > 0);
    CHECK_INT(chain_length(&f, a), 1);
    CHECK(check_all(&f));
    fixture_destroy(&f);
}

/* ---- GC with attached VDIs ---- */

struct hook_log {
    const char *attached;
    int pauses, unpauses, progress_calls;
    bool refuse;
    bool cancel;
};

static bool
hook_is_attached(void *aux, const char *uuid)
{
    struct hook_log *log = aux;

    return log->attached && !strcmp(log->attached, uuid);
}

static int
hook_pause(void *aux, const char *uuid)
{
    struct hook_log *log = aux;

    (void) uuid;
    if (log->refuse) {
        return -EBUSY;
    }
    log->pauses++;
    return 0;
}

static void
hook_unpause(void *aux, const char *uuid)
{
    struct hook_log *log = aux;

    (void) uuid;
    log->unpauses++;
}

static int
hook_progress(void *aux, uint64_t done, uint64_t total)
{
    struct hook_log *log = aux;

    (void) done;
    (void) total;
    log->progress_calls++;
    return log->cancel;
}

TEST(test_gc_pauses_small_attached_leaf_and_skips_big_one)
{
    struct fixture f;
    struct model *a, *s, *big, *bs;
    struct hook_log log = { NULL, 0, 0, 0, false, false };
    struct sm_gc_hooks hooks = { hook_is_attached, hook_pause, hook_unpause,
                                 hook_progress, &log };
    int blocks[40];

    if (!fixture_init_fast(&f)) {
        CHECK(!"fixture");
        return;
    }
    for (int i = 0; i < 40; i++) {
        blocks[i] = i;
    }
    a = create_vdi(&f, VSIZE, NULL);
    CHECK(a && write_blocks(&f, a, blocks, 2, 1));
    s = copy_vdi(&f, a, false);
    CHECK(s && write_blocks(&f, a, blocks + 2, 1, 2));
    CHECK(destroy_vdi(&f, s));
    log.attached = a->uuid;
    CHECK(gc_all(&f, &hooks) > 0);
    CHECK_INT(log.pauses, 1);
    CHECK_INT(log.unpauses, 1);
    CHECK(log.progress_calls > 0);
    CHECK_INT(chain_length(&f, a), 1);
    CHECK(check_all(&f));

    /* A leaf holding 80 MiB of its own is not paused: GC leaves it. */
    big = create_vdi(&f, 96 * MiB, NULL);
    CHECK(big != NULL);
    bs = copy_vdi(&f, big, false);
    CHECK(bs && write_blocks(&f, big, blocks, 40, 3));
    CHECK(destroy_vdi(&f, bs));
    log.attached = big->uuid;
    log.pauses = log.unpauses = 0;
    CHECK_INT(gc_all(&f, &hooks), 1);
    CHECK_INT(log.pauses, 0);
    CHECK_INT(chain_length(&f, big), 2);
    /* A small leaf whose pause is refused is left too. */
    {
        struct model *r = create_vdi(&f, VSIZE, NULL), *rs;

        rs = r ? copy_vdi(&f, r, false) : NULL;
        CHECK(rs && destroy_vdi(&f, rs));
        log.attached = r ? r->uuid : NULL;
        log.refuse = true;
        /* (The big leaf, no longer attached, is collected meanwhile.) */
        CHECK(gc_all(&f, &hooks) > 0);
        CHECK(r && chain_length(&f, r) == 2);
        CHECK_INT(chain_length(&f, big), 1);
        log.refuse = false;
    }
    /* Once detached, it is collected. */
    log.attached = NULL;
    CHECK(gc_all(&f, &hooks) > 0);
    CHECK_INT(chain_length(&f, &f.vdis[f.n - 2]), 1);
    CHECK(check_all(&f));
    fixture_destroy(&f);
}

/* A VDI some writer holds open (its writer lock) is neither snapshotted
 * nor swapped by the GC: either would lose that writer's data. */
TEST(test_file_vdi_open_for_writing_is_left_alone)
{
    struct fixture f;
    struct model *a, *s;
    struct vhd *writer = NULL;
    struct sm_vdi_info info;
    char uuid[37], *err = NULL, *path;
    const int blocks[] = { 0 };

    if (!fixture_init(&f)) {
        CHECK(!"fixture");
        return;
    }
    a = create_vdi(&f, VSIZE, NULL);
    CHECK(a && write_blocks(&f, a, blocks, 1, 1));
    s = a ? copy_vdi(&f, a, false) : NULL;
    CHECK(s && destroy_vdi(&f, s));
    path = xasprintf("%s/%s.vhd", f.location, a ? a->uuid : "");
    CHECK_INT(vhd_open(path, false, &writer, &err), 0);
    uuid_generate(uuid);
    memset(&info, 0, sizeof info);
    CHECK_INT(f.drv->vdi_snapshot(f.sr, a->uuid, uuid, &info, &err),
              -EBUSY);
    free(err);
    err = NULL;
    CHECK_INT(count_files(f.location, "journal"), 0);
    CHECK_INT(gc_all(&f, NULL), 1);
    CHECK_INT(chain_length(&f, a), 2);
    vhd_close(writer);
    CHECK(gc_all(&f, NULL) > 0);
    CHECK_INT(chain_length(&f, a), 1);
    CHECK(check_all(&f));
    free(path);
    fixture_destroy(&f);
}

TEST(test_gc_cancelled_by_progress_keeps_data)
{
    struct fixture f;
    struct model *a, *s;
    struct hook_log log = { NULL, 0, 0, 0, false, true };
    struct sm_gc_hooks hooks = { hook_is_attached, hook_pause, hook_unpause,
                                 hook_progress, &log };
    const int blocks[] = { 0, 1, 2, 3 };
    char *err = NULL;
    bool more = false;

    if (!fixture_init_fast(&f)) {
        CHECK(!"fixture");
        return;
    }
    a = create_vdi(&f, VSIZE, NULL);
    CHECK(a && write_blocks(&f, a, blocks, 2, 1));
    s = a ? copy_vdi(&f, a, false) : NULL;
    CHECK(s && write_blocks(&f, a, blocks + 2, 2, 2));
    CHECK(s && destroy_vdi(&f, s));
    CHECK_INT(f.drv->gc_step(f.sr, &hooks, &more, &err), -ECANCELED);
    free(err);
    CHECK(log.progress_calls > 0);
    CHECK_INT(count_files(f.location, "journal"), 0);
    CHECK(check_all(&f));
    log.cancel = false;
    CHECK(gc_all(&f, &hooks) > 0);
    CHECK_INT(chain_length(&f, a), 1);
    CHECK(check_all(&f));
    fixture_destroy(&f);
}

TEST(test_file_data_destroy_empties_the_vdi)
{
    struct fixture f;
    struct model *a, *s;
    const int blocks[] = { 0, 5 };
    char *err = NULL;

    if (!fixture_init_fast(&f)) {
        CHECK(!"fixture");
        return;
    }
    a = create_vdi(&f, VSIZE, NULL);
    CHECK(a && write_blocks(&f, a, blocks, 2, 1));
    s = a ? copy_vdi(&f, a, false) : NULL;
    CHECK(s != NULL);
    CHECK_INT(f.drv->vdi_data_destroy(f.sr, s->uuid, &err), 0);
    free(err);
    memset(s->data, 0, s->size);
    CHECK_INT(chain_length(&f, s), 1);
    CHECK(check_all(&f));
    CHECK(gc_all(&f, NULL) > 0);
    CHECK_INT(chain_length(&f, a), 1);
    CHECK(check_all(&f));
    fixture_destroy(&f);
}

/* A base merged into its parent whose children cannot all be paused for
 * their reparenting: the journal keeps the job, reads stay right, and a
 * later run finishes it. */
TEST(test_gc_reparent_waits_for_a_busy_child)
{
    struct fixture f;
    struct model *a, *s1, *s2;
    struct hook_log log = { NULL, 0, 0, 0, true, false };
    struct sm_gc_hooks hooks = { hook_is_attached, hook_pause, hook_unpause,
                                 hook_progress, &log };
    const int b1[] = { 0, 1 }, b2[] = { 1, 2 }, b3[] = { 3 };

    if (!fixture_init_fast(&f)) {
        CHECK(!"fixture");
        return;
    }
    a = create_vdi(&f, VSIZE, NULL);
    CHECK(a && write_blocks(&f, a, b1, 2, 1));
    s1 = a ? copy_vdi(&f, a, false) : NULL;
    CHECK(s1 && write_blocks(&f, a, b2, 2, 2));
    s2 = a ? copy_vdi(&f, a, false) : NULL;
    CHECK(s2 && write_blocks(&f, a, b3, 1, 3));
    CHECK(s1 && destroy_vdi(&f, s1));
    log.attached = a ? a->uuid : NULL;
    CHECK_INT(gc_all(&f, &hooks), 1);
    CHECK_INT(count_files(f.location, ".gc-journal"), 1);
    CHECK(check_all(&f));
    log.refuse = false;
    CHECK(gc_all(&f, &hooks) > 0);
    CHECK_INT(count_files(f.location, "journal"), 0);
    CHECK_INT(chain_length(&f, a), 2);
    CHECK_INT(chain_length(&f, s2), 2);
    CHECK(check_all(&f));
    fixture_destroy(&f);
}

/* ---- crash safety ---- */

/* Runs op in a child process that dies at crash point `point`; returns
 * true if the child died there (false if it finished). */
typedef void crash_op_fn(struct fixture *f, void *aux);

static int
run_crashing(struct fixture *f, const char *point, crash_op_fn *op,
             void *aux)
{
    pid_t pid;
    int status;

    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        setenv("SM_CRASH_AT", point, 1);
        op(f, aux);
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        return -1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 137) {
        return 1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return 0;
    }
    return -1;
}

/* After a crash: recovery by re-attaching, then the check of every VDI,
 * no temporaries or journals left, and the GC finishing cleanly. */
static bool
recover_and_check(struct fixture *f)
{
    bool ok = true;

    fixture_detach(f);
    if (!fixture_attach(f)) {
        return false;
    }
    if (count_files(f->location, ".tmp") || count_files(f->location,
                                                         "journal")) {
        fprintf(stderr, "  temporaries or journal left after recovery\n");
        ok = false;
    }
    ok = check_all(f) && ok;
    if (gc_all(f, NULL) < 0) {
        ok = false;
    }
    qemu_wanted = false;
    ok = check_all(f) && ok;
    qemu_wanted = true;
    return ok;
}

/* Runs op in a child process that must die at crash point `point`. */
static void
crash_at(struct fixture *f, const char *point, crash_op_fn *op, void *aux)
{
    int died = run_crashing(f, point, op, aux);

    if (died != 1) {
        fprintf(stderr, "  %s: not hit (%d)\n", point, died);
    }
    CHECK_INT(died, 1);
}

/* recover_and_check() after a crash at point, saying which point a
 * failure follows. */
static void
check_recovered(struct fixture *f, const char *point)
{
    if (!recover_and_check(f)) {
        fprintf(stderr, "  after a crash at %s\n", point);
        CHECK(!"recovered");
    }
}

/* A is on a chain of 2 (a snapshot taken and destroyed) with data in both
 * layers; B stands alone. */
static bool
crash_fixture(struct fixture *f)
{
    struct model *a, *b, *s;
    const int b1[] = { 0, 1, 3 }, b2[] = { 1, 2 }, b3[] = { 2 };

    if (!fixture_init_fast(f)) {
        return false;
    }
    a = create_vdi(f, CRASH_VSIZE, NULL);
    b = create_vdi(f, CRASH_VSIZE, NULL);
    if (!a || !b || !write_blocks(f, a, b1, 3, 10)
        || !write_blocks(f, b, b3, 1, 20)) {
        return false;
    }
    s = copy_vdi(f, a, false);
    return s && write_blocks(f, a, b2, 2, 30) && destroy_vdi(f, s);
}

struct copy_args {
    const char *uuid;
    const char *new_uuid;
    bool clone;
};

static void
crash_copy_op(struct fixture *f, void *aux)
{
    struct copy_args *args = aux;
    struct sm_vdi_info info;
    char *err = NULL;

    memset(&info, 0, sizeof info);
    if (args->clone) {
        f->drv->vdi_clone(f->sr, args->uuid, args->new_uuid, &info, &err);
    } else {
        f->drv->vdi_snapshot(f->sr, args->uuid, args->new_uuid, &info, &err);
    }
}

/* A snapshot (or clone) of the crash fixture's A, whose new VDI is to
 * be new_uuid (generated here); returns A. */
static struct model *
copy_args_init(struct fixture *f, struct copy_args *args, char *new_uuid,
               bool clone)
{
    struct model *a = &f->vdis[0];

    uuid_generate(new_uuid);
    args->uuid = a->uuid;
    args->new_uuid = new_uuid;
    args->clone = clone;
    return a;
}

static void
crash_copy(bool clone)
{
    static const char *const steps[] = {
        "start", "journal", "link", "leaf", "new", "commit", "hide",
        "publish", "done",
    };
    const char *op = clone ? "clone" : "snapshot";

    for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
        struct fixture f;
        struct copy_args args;
        char point[64], new_uuid[37];
        struct model *a, *n;

        if (!crash_fixture(&f)) {
            CHECK(!"fixture");
            return;
        }
        a = copy_args_init(&f, &args, new_uuid, clone);
        snprintf(point, sizeof point, "%s-%s", op, steps[i]);
        crash_at(&f, point, crash_copy_op, &args);
        /* Until the call returns the new VDI may or may not survive; if it
         * does, it holds A's data. */
        n = model_add(&f, new_uuid, a->size, a->data);
        {
            char *path = xasprintf("%s/%s.vhd", f.location, new_uuid);

            fixture_detach(&f);
            fixture_attach(&f);
            n->present = access(path, F_OK) == 0;
            free(path);
        }
        check_recovered(&f, point);
        /* The SR is usable: the operation works now. */
        CHECK(copy_vdi(&f, a, clone) != NULL);
        qemu_wanted = false;
        CHECK(check_all(&f));
        qemu_wanted = true;
        fixture_destroy(&f);
    }
}

TEST(test_crash_at_every_point_of_snapshot)
{
    crash_copy(false);
}

TEST(test_crash_at_every_point_of_clone)
{
    crash_copy(true);
}

static void
crash_attach_op(struct fixture *f, void *aux)
{
    (void) aux;
    fixture_detach(f);
    fixture_attach(f);
}

/* Recovery itself may be killed: a second recovery finishes the job. */
TEST(test_crash_during_recovery_of_a_snapshot)
{
    static const char *const points[] = {
        "recover-snapshot-cleaned", "recover-snapshot-unhidden",
        "recover-snapshot-renamed",
    };

    for (size_t i = 0; i < ARRAY_SIZE(points); i++) {
        struct fixture f;
        struct copy_args args;
        char new_uuid[37];

        if (!crash_fixture(&f)) {
            CHECK(!"fixture");
            return;
        }
        copy_args_init(&f, &args, new_uuid, false);
        crash_at(&f, "snapshot-publish", crash_copy_op, &args);
        crash_at(&f, points[i], crash_attach_op, NULL);
        check_recovered(&f, points[i]);
        fixture_destroy(&f);
    }
}

static void
crash_destroy_op(struct fixture *f, void *aux)
{
    char *err = NULL;

    f->drv->vdi_destroy(f->sr, aux, &err);
}

TEST(test_crash_at_every_point_of_destroy)
{
    static const char *const points[] = {
        "destroy-start", "destroy-unlinked", "destroy-done",
    };

    for (size_t i = 0; i < ARRAY_SIZE(points); i++) {
        struct fixture f;
        struct model *a;
        char *path;

        if (!crash_fixture(&f)) {
            CHECK(!"fixture");
            return;
        }
        a = &f.vdis[0];
        crash_at(&f, points[i], crash_destroy_op, a->uuid);
        path = xasprintf("%s/%s.vhd", f.location, a->uuid);
        a->present = access(path, F_OK) == 0;
        CHECK(a->present == (i == 0));
        free(path);
        check_recovered(&f, points[i]);
        fixture_destroy(&f);
    }
}

static void
crash_gc_op(struct fixture *f, void *aux)
{
    (void) aux;
    gc_all(f, NULL);
}

/* The GC's fixture: a base with one hidden child (A's chain after two
 * snapshots, the first destroyed), a leaf to fold into its base (C), and
 * a base without children (D and its snapshot both destroyed). */
static bool
gc_fixture(struct fixture *f)
{
    struct model *a, *s1, *s2, *c, *cs, *d, *ds;
    const int b1[] = { 0, 2 }, b2[] = { 2, 3 }, b3[] = { 1 }, b4[] = { 3 };

    if (!fixture_init_fast(f)) {
        return false;
    }
    a = create_vdi(f, CRASH_VSIZE, NULL);
    c = create_vdi(f, CRASH_VSIZE, NULL);
    d = create_vdi(f, CRASH_VSIZE, NULL);
    if (!a || !c || !d || !write_blocks(f, a, b1, 2, 1)
        || !write_blocks(f, c, b3, 1, 2) || !write_blocks(f, d, b4, 1, 3)) {
        return false;
    }
    s1 = copy_vdi(f, a, false);
    if (!s1 || !write_blocks(f, a, b2, 2, 4)) {
        return false;
    }
    s2 = copy_vdi(f, a, false);
    if (!s2 || !write_blocks(f, a, b3, 1, 5) || !destroy_vdi(f, s1)) {
        return false;
    }
    cs = copy_vdi(f, c, true);
    if (!cs || !write_blocks(f, c, b4, 1, 6) || !destroy_vdi(f, cs)) {
        return false;
    }
    ds = copy_vdi(f, d, false);
    return ds && destroy_vdi(f, ds) && destroy_vdi(f, d);
}

TEST(test_crash_at_every_point_of_gc)
{
    static const char *const points[] = {
        "gc-remove-start", "gc-remove-done",
        "gc-base-start", "gc-base-coalesced", "gc-base-journal",
        "gc-reparented", "gc-unlinked", "gc-base-done",
        "gc-leaf-start", "gc-leaf-coalesced", "gc-leaf-journal",
        "gc-leaf-unhidden", "gc-leaf-renamed", "gc-leaf-done",
    };

    for (size_t i = 0; i < ARRAY_SIZE(points); i++) {
        struct fixture f;

        if (!gc_fixture(&f)) {
            CHECK(!"fixture");
            return;
        }
        crash_at(&f, points[i], crash_gc_op, NULL);
        check_recovered(&f, points[i]);
        /* Everything collectable is collected: one image per VDI except
         * A and S2, which share a base. */
        CHECK_INT(count_files(f.location, ".vhd"), 4);
        fixture_destroy(&f);
    }
}

/* ---- the sim driver ---- */

/* Creates and attaches an SR of drv with config, for the tests of drivers
 * that the file fixture does not cover; NULL (a failed check) if either
 * step fails. */
static struct sm_sr *
create_and_attach(const struct sm_driver *drv, const char *state,
                  const char *sr_uuid, const struct sm_map *config)
{
    struct sm_sr *sr = NULL;
    char *err = NULL;

    CHECK_INT(drv->create(state, sr_uuid, config, 0, &err), 0);
    free(err);
    err = NULL;
    CHECK_INT(drv->attach(state, sr_uuid, config, &sr, &err), 0);
    free(err);
    return sr;
}

TEST(test_sim_size_is_thick_and_enforced)
{
    const struct sm_driver *drv = &sm_sim_driver;
    char *state = make_temp_dir(), *err = NULL;
    const struct sm_map *config = MAP({ "size", "67108864" });
    struct sm_vdi_info info;
    struct sm_sr *sr = NULL;
    struct sm_sr_stat st;
    char sr_uuid[37], a[37], b[37], c[37];

    uuid_generate(sr_uuid);
    uuid_generate(a);
    uuid_generate(b);
    uuid_generate(c);
    memset(&info, 0, sizeof info);
    sr = create_and_attach(drv, state, sr_uuid, config);
    if (!sr) {
        remove_tree(state);
        free(state);
        return;
    }
    /* The default location is under the state directory. */
    {
        char *marker = xasprintf("%s/sr-sim/%s/.xapi-sr", state, sr_uuid);

        CHECK(access(marker, F_OK) == 0);
        free(marker);
    }
    CHECK_INT(drv->vdi_create(sr, a, 40 * MiB, EMPTY_MAP, &info, &err), 0);
    sm_vdi_info_clear(&info);
    CHECK_INT(drv->stat(sr, &st, &err), 0);
    CHECK_INT(st.physical_size, 64 * MiB);
    CHECK_INT(st.physical_utilisation, 40 * MiB);
    CHECK_INT(st.free_space, 24 * MiB);
    CHECK_INT(drv->vdi_create(sr, b, 30 * MiB, EMPTY_MAP, &info, &err),
              -ENOSPC);
    free(err);
    err = NULL;
    CHECK_INT(drv->vdi_snapshot(sr, a, c, &info, &err), -ENOSPC);
    free(err);
    err = NULL;
    CHECK_INT(drv->vdi_create(sr, b, 24 * MiB, EMPTY_MAP, &info, &err), 0);
    sm_vdi_info_clear(&info);
    CHECK_INT(drv->vdi_resize(sr, b, 25 * MiB, &info, &err), -ENOSPC);
    free(err);
    err = NULL;
    CHECK_INT(drv->vdi_destroy(sr, b, &err), 0);
    CHECK_INT(drv->vdi_snapshot(sr, a, c, &info, &err), -ENOSPC);
    free(err);
    err = NULL;
    CHECK_INT(drv->vdi_resize(sr, a, 20 * MiB, &info, &err), -EINVAL);
    free(err);
    err = NULL;
    drv->detach(sr);
    CHECK_INT(drv->destroy(state, sr_uuid, config, &err), 0);
    free(err);
    remove_tree(state);
    free(state);
}

TEST(test_sim_fail_and_slow_keys)
{
    const struct sm_driver *drv = &sm_sim_driver;
    char *state = make_temp_dir(), *err = NULL;
    const struct sm_map *failing = MAP({ "fail", "vdi_create,scan,gc" },
                                       { "slow", "50" });
    struct sm_vdi_info info, *vdis = NULL;
    struct sm_sr *sr = NULL;
    char sr_uuid[37], a[37];
    int64_t t0;
    size_t n;
    bool more;

    uuid_generate(sr_uuid);
    uuid_generate(a);
    memset(&info, 0, sizeof info);
    CHECK_INT(drv->create(state, sr_uuid, MAP({ "fail", "create" }), 0,
                          &err), -EIO);
    free(err);
    err = NULL;
    CHECK_INT(drv->create(state, sr_uuid, MAP({ "fail", "nonsense" }), 0,
                          &err), -EINVAL);
    free(err);
    err = NULL;
    CHECK_INT(drv->create(state, sr_uuid, EMPTY_MAP, 0, &err), 0);
    CHECK_INT(drv->attach(state, sr_uuid, MAP({ "fail", "attach" }), &sr,
                          &err), -EIO);
    free(err);
    err = NULL;
    CHECK_INT(drv->attach(state, sr_uuid, failing, &sr, &err), 0);
    if (!sr) {
        free(err);
        remove_tree(state);
        free(state);
        return;
    }
    t0 = time_mono_ms();
    CHECK_INT(drv->vdi_create(sr, a, MiB, EMPTY_MAP, &info, &err), -EIO);
    CHECK(time_mono_ms() - t0 >= 50);
    CHECK(err && strstr(err, "vdi_create"));
    free(err);
    err = NULL;
    CHECK_INT(drv->scan(sr, &vdis, &n, &err), -EIO);
    free(err);
    err = NULL;
    CHECK_INT(drv->gc_step(sr, NULL, &more, &err), -EIO);
    free(err);
    err = NULL;
    drv->detach(sr);
    /* The same SR without the failures works. */
    CHECK_INT(drv->attach(state, sr_uuid, EMPTY_MAP, &sr, &err), 0);
    CHECK_INT(drv->vdi_create(sr, a, MiB, EMPTY_MAP, &info, &err), 0);
    sm_vdi_info_clear(&info);
    CHECK_INT(drv->scan(sr, &vdis, &n, &err), 0);
    CHECK_INT(n, 1);
    for (size_t i = 0; i < n; i++) {
        sm_vdi_info_clear(&vdis[i]);
    }
    free(vdis);
    drv->detach(sr);
    free(err);
    remove_tree(state);
    free(state);
}

/* ---- simulated programs (mount, showmount) ---- */

static struct {
    char *export_root;          /* local directory standing for the server */
    char *options;              /* of the last mount */
    char *type;
    char *source;
    char *credentials;          /* content of a CIFS credentials file */
    bool really_mount;
    int mounts;
} fake;

static void
fake_reset(void)
{
    free(fake.options);
    free(fake.type);
    free(fake.source);
    free(fake.credentials);
    fake.options = fake.type = fake.source = fake.credentials = NULL;
    fake.mounts = 0;
}

static int
fake_run(const char *const *argv, char **ret_stdout, char **ret_err)
{
    if (!strcmp(argv[0], "mount") && argv[1] && !strcmp(argv[1], "-t")
        && argv[2] && argv[3] && argv[4] && argv[5] && argv[6]) {
        const char *opt;

        fake_reset();
        fake.type = xstrdup(argv[2]);
        fake.options = xstrdup(argv[4]);
        fake.source = xstrdup(argv[5]);
        fake.mounts++;
        opt = strstr(argv[4], "credentials=");
        if (opt) {
            char *path = xstrdup(opt + 12), *data = NULL;
            size_t len;

            path[strcspn(path, ",")] = '\0';
            if (!read_file(path, 4096, &data, &len)) {
                fake.credentials = data;
            }
            free(path);
        }
        if (!strcmp(argv[2], "nfs") && fake.really_mount) {
            /* The kernel here has no NFS client: the export is a local
             * directory, bind-mounted. */
            const char *path = strchr(argv[5], ':') + 1;
            char *local = xasprintf("%s%s", fake.export_root, path);
            const char *bind[] = { "mount", "--bind", local, argv[6], NULL };
            int rc = sm_run(bind, ret_stdout, ret_err);

            free(local);
            return rc;
        }
        return 0;
    }
    if (!strcmp(argv[0], "umount") && !fake.really_mount) {
        return 0;
    }
    if (!strcmp(argv[0], "showmount")) {
        CHECK_STR(argv[1], "-e");
        CHECK_STR(argv[2], "--no-headers");
        if (ret_stdout) {
            *ret_stdout = xstrdup("/export      *\n"
                                  "/srv/isos    10.0.0.0/8,host<1>\n");
        }
        return 0;
    }
    return sm_run(argv, ret_stdout, ret_err);
}

/* ---- the iso driver ---- */

static void
put_file(const char *dir, const char *name, size_t size)
{
    char *path = xasprintf("%s/%s", dir, name);
    char *data = xcalloc(1, size + 1);

    memset(data, 'i', size);
    CHECK_INT(write_file_atomic(path, data, size, 0644), 0);
    free(data);
    free(path);
}

TEST(test_iso_lists_images_read_only)
{
    const struct sm_driver *drv = &sm_iso_driver;
    char *dir = make_temp_dir(), *err = NULL, *sub;
    struct sm_vdi_info info, *vdis = NULL, *again = NULL;
    struct sm_attach a = { NULL, NULL, false };
    const struct sm_map *config = MAP({ "location", dir });
    struct sm_sr *sr = NULL;
    char sr_uuid[37];
    size_t n = 0, n2 = 0;

    uuid_generate(sr_uuid);
    put_file(dir, "debian.iso", 4096);
    put_file(dir, "tools.IMG", 1024);
    put_file(dir, "notes.txt", 10);
    put_file(dir, ".hidden.iso", 10);
    sub = xasprintf("%s/dir.iso", dir);
    mkdir(sub, 0755);
    free(sub);
    memset(&info, 0, sizeof info);
    sr = create_and_attach(drv, dir, sr_uuid, config);
    if (!sr) {
        remove_tree(dir);
        free(dir);
        return;
    }
    CHECK_INT(drv->scan(sr, &vdis, &n, &err), 0);
    CHECK_INT(n, 2);
    CHECK_INT(drv->scan(sr, &again, &n2, &err), 0);
    for (size_t i = 0; i < n; i++) {
        bool same = false;

        CHECK(vdis[i].read_only);
        CHECK_STR(vdis[i].format, "iso");
        CHECK(!strcmp(vdis[i].location, "debian.iso")
              || !strcmp(vdis[i].location, "tools.IMG"));
        CHECK(uuid_is_valid(vdis[i].uuid));
        /* Stable: the same file gets the same uuid at every scan. */
        for (size_t j = 0; j < n2; j++) {
            same = same || (!strcmp(vdis[i].uuid, again[j].uuid)
                            && !strcmp(vdis[i].location,
                                       again[j].location));
        }
        CHECK(same);
    }
    for (size_t i = 0; i < n; i++) {
        sm_vdi_info_clear(&vdis[i]);
    }
    for (size_t i = 0; i < n2; i++) {
        sm_vdi_info_clear(&again[i]);
    }
    free(vdis);
    free(again);
    CHECK_INT(drv->vdi_info(sr, "debian.iso", &info, &err), 0);
    CHECK_INT(info.virtual_size, 4096);
    sm_vdi_info_clear(&info);
    CHECK_INT(drv->vdi_info(sr, "../debian.iso", &info, &err), -ENOENT);
    free(err);
    err = NULL;
    CHECK_INT(drv->vdi_attach(sr, "debian.iso", true, &a, &err), -EROFS);
    free(err);
    err = NULL;
    CHECK_INT(drv->vdi_attach(sr, "debian.iso", false, &a, &err), 0);
    CHECK_STR(a.format, "raw");
    CHECK(a.read_only && a.path && strstr(a.path, "/debian.iso"));
    sm_attach_clear(&a);
    CHECK_INT(drv->vdi_create(sr, sr_uuid, MiB, EMPTY_MAP, &info, &err),
              -EROFS);
    free(err);
    err = NULL;
    CHECK_INT(drv->vdi_destroy(sr, "debian.iso", &err), -EROFS);
    free(err);
    err = NULL;
    CHECK(drv->vdi_snapshot == NULL && drv->vdi_clone == NULL);
    drv->detach(sr);
    remove_tree(dir);
    free(dir);
}

TEST(test_iso_mounts_nfs_and_cifs_read_only)
{
    const struct sm_driver *drv = &sm_iso_driver;
    char *state = make_temp_dir(), *err = NULL;
    struct sm_sr *sr = NULL;
    char sr_uuid[37];

    uuid_generate(sr_uuid);
    sm_run_hook = fake_run;
    fake.really_mount = false;
    CHECK_INT(drv->attach(state, sr_uuid,
                          MAP({ "location", "nas:/srv/isos" }), &sr, &err),
              0);
    CHECK_STR(fake.type, "nfs");
    CHECK_STR(fake.source, "nas:/srv/isos");
    CHECK(fake.options && str_starts_with(fake.options, "ro,"));
    drv->detach(sr);
    sr = NULL;
    CHECK_INT(drv->attach(state, sr_uuid,
                          MAP({ "location", "//nas/isos" },
                              { "username", "alice" },
                              { "cifspassword", "s3cret" }), &sr, &err), 0);
    CHECK_STR(fake.type, "cifs");
    CHECK_STR(fake.source, "//nas/isos");
    /* The password goes through a private file, not the command line. */
    CHECK(fake.options && !strstr(fake.options, "s3cret"));
    CHECK(fake.credentials && strstr(fake.credentials, "username=alice")
          && strstr(fake.credentials, "password=s3cret"));
    drv->detach(sr);
    CHECK_INT(drv->attach(state, sr_uuid, MAP({ "location", "relative" }),
                          &sr, &err), -EINVAL);
    free(err);
    sm_run_hook = NULL;
    fake_reset();
    remove_tree(state);
    free(state);
}

/* ---- the nfs driver ---- */

TEST(test_nfs_real_mount)
{
    char *data = NULL;
    size_t len;
    bool nfs = false;

    if (!read_file("/proc/filesystems", 65536, &data, &len)) {
        nfs = strstr(data, "\tnfs\n") != NULL;
        free(data);
    }
    if (!nfs || system("command -v mount.nfs >/dev/null 2>&1")) {
        SKIP("this kernel has no nfs filesystem (or nfs-common is "
             "missing): the nfs driver is tested with its mounts turned "
             "into bind mounts of a local export");
    }
    SKIP("no NFS server to mount in the unit tests");
}

TEST(test_nfs_mounts_with_xenserver_options)
{
    struct fixture f;
    struct model *a, *s;
    char *err = NULL, *xml = NULL, *export_dir;
    const int blocks[] = { 0, 4 };
    struct sm_kv kv[] = {
        { "server", "nas.example" },
        { "serverpath", "/export" },
        { "options", "noatime" },
    };
    struct sm_map config = { kv, ARRAY_SIZE(kv) };

    if (geteuid() != 0) {
        SKIP("bind mounts need root");
    }
    memset(&f, 0, sizeof f);
    f.drv = &sm_nfs_driver;
    f.dir = make_temp_dir();
    f.config = &config;
    uuid_generate(f.sr_uuid);
    fake.export_root = xasprintf("%s/server", f.dir);
    fake.really_mount = true;
    export_dir = xasprintf("%s/export", fake.export_root);
    CHECK_INT(sh("mkdir -p '%s'", export_dir), 0);
    sm_run_hook = fake_run;

    CHECK_INT(f.drv->create(f.dir, f.sr_uuid, &config, 0, &err), 0);
    CHECK_STR(fake.type, "nfs");
    CHECK_STR(fake.source, "nas.example:/export");
    CHECK_STR(fake.options, "soft,proto=tcp,vers=3,acdirmin=0,acdirmax=0,"
              "timeo=133,retrans=2147483647,noatime");
    f.location = xasprintf("%s/%s", export_dir, f.sr_uuid);
    CHECK(access(f.location, F_OK) == 0);
    CHECK(fixture_attach(&f));
    {
        char *want = xasprintf("nas.example:/export/%s", f.sr_uuid);

        CHECK_STR(fake.source, want);
        free(want);
    }
    if (f.sr) {
        a = create_vdi(&f, VSIZE, NULL);
        CHECK(a && write_blocks(&f, a, blocks, 2, 5));
        s = a ? copy_vdi(&f, a, false) : NULL;
        CHECK(s && write_blocks(&f, a, blocks + 1, 1, 6));
        CHECK(check_all(&f));
        /* The images are on the "server". */
        CHECK_INT(count_files(f.location, ".vhd"), 3);
        fixture_detach(&f);
    }

    /* Probe: the exports, then the SRs of one export. */
    CHECK_INT(f.drv->probe(MAP({ "server", "nas.example" }), EMPTY_MAP, &xml,
                           &err), 0);
    CHECK(xml && strstr(xml, "<nfs-exports>")
          && strstr(xml, "<Path>/export</Path>")
          && strstr(xml, "<Accesslist>*</Accesslist>")
          && strstr(xml, "<Target>nas.example</Target>")
          && strstr(xml, "10.0.0.0/8,host&lt;1&gt;"));
    free(xml);
    xml = NULL;
    CHECK_INT(f.drv->probe(MAP({ "server", "nas.example" },
                               { "serverpath", "/export" },
                               { "nfsversion", "4.1" }), EMPTY_MAP, &xml,
                           &err), 0);
    CHECK(xml && strstr(xml, "<SRlist>") && strstr(xml, f.sr_uuid));
    CHECK(fake.options && strstr(fake.options, "vers=4.1"));
    free(xml);
    CHECK_INT(f.drv->probe(MAP({ "server", "nas.example" },
                               { "nfsversion", "2" }), EMPTY_MAP, &xml,
                           &err), -EINVAL);
    free(err);
    err = NULL;
    CHECK_INT(f.drv->destroy(f.dir, f.sr_uuid, &config, &err), 0);
    CHECK(access(f.location, F_OK) != 0);
    free(err);
    sm_run_hook = NULL;
    fake.really_mount = false;
    fake_reset();
    free(fake.export_root);
    fake.export_root = NULL;
    free(export_dir);
    f.config = NULL;
    fixture_destroy(&f);
}

/* ---- the ext driver ---- */

TEST(test_ext_on_a_loop_device)
{
    struct fixture f;
    struct model *a, *s;
    char *err = NULL, *xml = NULL, *image, *out = NULL;
    char loopdev[64] = "";
    const int blocks[] = { 1, 2 };
    struct sm_sr_stat st;
    struct sm_kv kv[1];
    struct sm_map config = { kv, 1 };
    FILE *p;

    if (geteuid() != 0) {
        SKIP("needs root for losetup and mount");
    }
    if (system("command -v losetup >/dev/null && "
               "command -v mkfs.ext4 >/dev/null")) {
        SKIP("losetup or mkfs.ext4 (e2fsprogs) missing");
    }
    memset(&f, 0, sizeof f);
    f.drv = &sm_ext_driver;
    f.dir = make_temp_dir();
    image = xasprintf("%s/disk.img", f.dir);
    CHECK_INT(sh("truncate -s 96M '%s'", image), 0);
    out = xasprintf("losetup -f --show '%s' 2>/dev/null", image);
    p = popen(out, "r");
    free(out);
    if (!p || !fgets(loopdev, sizeof loopdev, p)) {
        if (p) {
            pclose(p);
        }
        remove_tree(f.dir);
        free(f.dir);
        free(image);
        SKIP("no free loop device");
    }
    pclose(p);
    loopdev[strcspn(loopdev, "\n")] = '\0';
    if (access(loopdev, F_OK)) {
        sh("losetup -d '%s' 2>/dev/null", loopdev);
        remove_tree(f.dir);
        free(f.dir);
        free(image);
        SKIP("losetup's device node is missing in this container");
    }
    kv[0].key = "device";
    kv[0].value = loopdev;
    f.config = &config;
    uuid_generate(f.sr_uuid);

    CHECK_INT(f.drv->create(f.dir, f.sr_uuid, &config, 0, &err), 0);
    if (err) {
        fprintf(stderr, "  create: %s\n", err);
        free(err);
        err = NULL;
    }
    /* The device now holds an SR: a second create is refused. */
    {
        char other[37];

        uuid_generate(other);
        CHECK_INT(f.drv->create(f.dir, other, &config, 0, &err), -EEXIST);
        free(err);
        err = NULL;
    }
    CHECK_INT(f.drv->probe(&config, EMPTY_MAP, &xml, &err), 0);
    CHECK(xml && strstr(xml, f.sr_uuid));
    free(xml);
    f.location = xasprintf("%s/sr-mount/%s", f.dir, f.sr_uuid);
    CHECK(fixture_attach(&f));
    if (f.sr) {
        struct stat root, mp;

        CHECK(stat(f.location, &mp) == 0 && stat(f.dir, &root) == 0
              && mp.st_dev != root.st_dev);
        CHECK_INT(f.drv->stat(f.sr, &st, &err), 0);
        CHECK(st.physical_size > 64 * MiB && st.physical_size <= 96 * MiB);
        {
            struct sm_vdi_info info;
            struct statvfs vfs;
            char big[37], small[37], *filler;
            int fd;

            /* Thin: a VDI far larger than the filesystem is created ... */
            uuid_generate(big);
            uuid_generate(small);
            memset(&info, 0, sizeof info);
            CHECK_INT(f.drv->vdi_create(f.sr, big, 1ull << 40, EMPTY_MAP,
                                        &info, &err), 0);
            sm_vdi_info_clear(&info);
            CHECK_INT(f.drv->vdi_destroy(f.sr, big, &err), 0);
            /* ... as long as its metadata (a 4 MiB BAT here) fits. */
            filler = xasprintf("%s/filler", f.location);
            fd = open(filler, O_WRONLY | O_CREAT, 0600);
            CHECK(fd >= 0 && !statvfs(f.location, &vfs));
            CHECK(fd >= 0 && !posix_fallocate(fd, 0, (off_t) vfs.f_bavail
                                              * vfs.f_frsize - 256 * 1024));
            if (fd >= 0) {
                close(fd);
            }
            CHECK_INT(f.drv->vdi_create(f.sr, big, VHD_MAX_SIZE, EMPTY_MAP,
                                        &info, &err), -ENOSPC);
            free(err);
            err = NULL;
            CHECK_INT(f.drv->vdi_create(f.sr, small, MiB, EMPTY_MAP, &info,
                                        &err), 0);
            sm_vdi_info_clear(&info);
            CHECK_INT(f.drv->vdi_destroy(f.sr, small, &err), 0);
            unlink(filler);
            free(filler);
        }
        a = create_vdi(&f, VSIZE, NULL);
        CHECK(a && write_blocks(&f, a, blocks, 2, 8));
        s = a ? copy_vdi(&f, a, true) : NULL;
        CHECK(s && write_blocks(&f, s, blocks, 1, 9));
        CHECK(check_all(&f));
        CHECK(s && destroy_vdi(&f, s));
        CHECK(gc_all(&f, NULL) > 0);
        CHECK(check_all(&f));
        fixture_detach(&f);
        /* Detached: unmounted, and the data is still there next time. */
        CHECK(stat(f.location, &mp) != 0 || mp.st_dev == root.st_dev);
        CHECK(fixture_attach(&f));
        CHECK(check_all(&f));
        fixture_detach(&f);
    }
    CHECK_INT(f.drv->destroy(f.dir, f.sr_uuid, &config, &err), 0);
    free(err);
    CHECK_INT(sh("losetup -d '%s'", loopdev), 0);
    free(image);
    f.config = NULL;
    fixture_destroy(&f);
}
