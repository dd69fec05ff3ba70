/* test-sm-lvm.c — tests of the lvm (LVHD) SR driver (storage/sm-lvm.c).
 *
 * Most tests run the driver on its simulated volume group (device
 * "sim:DIR": a directory of files, one per logical volume, each exactly
 * the volume's size), which exercises all of the LVHD logic: thin and
 * thick allocation, inflate and deflate, snapshot and clone chains,
 * garbage collection, space errors and crash recovery.  Data is checked
 * after every step through the block device view the data path uses and,
 * where an image stands alone (a dynamic disk), with qemu-img reading the
 * volume file directly: the footer sits at the volume's end, where qemu
 * looks for it, so no copy is needed.
 *
 * The real backend needs device-mapper to activate volumes, which this
 * kernel lacks; what lvm2 can do without it (physical volume, volume
 * group and inactive volumes on a loop device) is tested when lvm2 is
 * installed and we are root. */
#include <config.h>

#define TEST_MAIN
#include "test.h"
#include "test-storage-util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blockdev.h"
#include "sm.h"
#include "util.h"
#include "vhd.h"

#define MiB (1ull << 20)
#define EXTENT (4 * MiB)

static uint8_t *
memdup(const uint8_t *p, size_t n)
{
    uint8_t *q = xmalloc(n);

    memcpy(q, p, n);
    return q;
}

/* An SR on a simulated volume group in a fresh directory. */
struct fixture {
    char *dir;
    char *device;                   /* "sim:DIR/pv" */
    char *size;
    char sr_uuid[37];
    struct sm_kv kv[3];
    struct sm_map dc;
    struct sm_sr *sr;
};

static const struct sm_driver *drv = &sm_lvm_driver;

static void
fixture_init(struct fixture *f, const char *name, uint64_t size,
             const char *allocation)
{
    size_t n = 0;

    memset(f, 0, sizeof *f);
    f->dir = xasprintf("/tmp/test-sm-lvm.%d.%s", (int) getpid(), name);
    sh("rm -rf '%s' && mkdir -p '%s'", f->dir, f->dir);
    f->device = xasprintf("sim:%s/pv", f->dir);
    f->size = xasprintf("%" PRIu64, size);
    uuid_generate(f->sr_uuid);
    f->kv[n++] = (struct sm_kv) { "device", f->device };
    f->kv[n++] = (struct sm_kv) { "size", f->size };
    if (allocation) {
        f->kv[n++] = (struct sm_kv) { "allocation", allocation };
    }
    f->dc = (struct sm_map) { f->kv, n };
}

static int
fixture_attach(struct fixture *f)
{
    char *err = NULL;
    int rc = drv->attach(f->dir, f->sr_uuid, &f->dc, &f->sr, &err);

    if (rc) {
        fprintf(stderr, "  attach: %s\n", err);
    }
    free(err);
    return rc;
}

static bool
fixture_setup(struct fixture *f, const char *name, uint64_t size,
              const char *allocation)
{
    char *err = NULL;
    int rc;

    fixture_init(f, name, size, allocation);
    rc = drv->create(f->dir, f->sr_uuid, &f->dc, 0, &err);
    if (rc) {
        fprintf(stderr, "  create: %s\n", err);
        free(err);
        return false;
    }
    return !fixture_attach(f);
}

static void
fixture_done(struct fixture *f)
{
    drv->detach(f->sr);
    if (!test_failures_) {
        sh("rm -rf '%s'", f->dir);
    } else {
        fprintf(stderr, "  files kept in %s\n", f->dir);
    }
    free(f->dir);
    free(f->device);
    free(f->size);
}

/* The file standing for volume VHD-<uuid>. */
static char *
lv_file(const struct fixture *f, const char *prefix, const char *uuid)
{
    return xasprintf("%s/pv/VG_XenStorage-%s/%s%s", f->dir, f->sr_uuid,
                     prefix, uuid);
}

static uint64_t
lv_size(const struct fixture *f, const char *uuid)
{
    char *p = lv_file(f, "VHD-", uuid);
    struct stat st;
    uint64_t size = stat(p, &st) ? 0 : (uint64_t) st.st_size;

    free(p);
    return size;
}

static int
n_lvs(const struct fixture *f, const char *prefix)
{
    char *cmd = xasprintf("ls '%s/pv/VG_XenStorage-%s' | grep -c '^%s'",
                          f->dir, f->sr_uuid, prefix);
    FILE *p = popen(cmd, "r");
    int n = -1;

    if (p) {
        if (fscanf(p, "%d", &n) != 1) {
            n = -1;
        }
        pclose(p);
    }
    free(cmd);
    return n;
}

static int
vdi_create(struct fixture *f, char *uuid, uint64_t size, const char *alloc)
{
    struct sm_kv kv[1] = { { "allocation", alloc } };
    struct sm_map cfg = { kv, alloc ? 1 : 0 };
    struct sm_vdi_info info;
    char *err = NULL;
    int rc;

    uuid_generate(uuid);
    memset(&info, 0, sizeof info);
    rc = drv->vdi_create(f->sr, uuid, size, &cfg, &info, &err);
    if (rc && rc != -ENOSPC) {
        fprintf(stderr, "  vdi_create: %s\n", err);
    }
    if (!rc) {
        CHECK_STR(info.uuid, uuid);
        CHECK_INT(info.virtual_size, size);
    }
    sm_vdi_info_clear(&info);
    free(err);
    return rc;
}

static int
vdi_attach(struct fixture *f, const char *uuid, bool rw, char **ret_path)
{
    struct sm_attach a;
    char *err = NULL;
    int rc;

    memset(&a, 0, sizeof a);
    rc = drv->vdi_attach(f->sr, uuid, rw, &a, &err);
    if (rc && rc != -ENOSPC) {
        fprintf(stderr, "  vdi_attach: %s\n", err);
    }
    if (!rc) {
        CHECK_STR(a.format, "vhd");
        CHECK(a.read_only == !rw);
        *ret_path = a.path;
        a.path = NULL;
    }
    sm_attach_clear(&a);
    free(err);
    return rc;
}

static int
vdi_copy(struct fixture *f, const char *uuid, char *new_uuid, bool clone)
{
    struct sm_vdi_info info;
    char *err = NULL;
    int rc;

    uuid_generate(new_uuid);
    memset(&info, 0, sizeof info);
    rc = (clone ? drv->vdi_clone : drv->vdi_snapshot)(f->sr, uuid, new_uuid,
                                                      &info, &err);
    if (rc && rc != -ELOOP) {
        fprintf(stderr, "  snapshot/clone: %s\n", err);
    }
    sm_vdi_info_clear(&info);
    free(err);
    return rc;
}

/* Writes len bytes of byte at off through the data path's view. */
static int
dev_write(const char *path, uint64_t off, size_t len, uint8_t byte,
          uint8_t *model)
{
    struct blockdev *dev = NULL;
    uint8_t *buf = xmalloc(len);
    char *err = NULL;
    int rc;

    memset(buf, byte, len);
    rc = blockdev_open_vhd(path, false, &dev, &err);
    if (!rc) {
        rc = dev->ops->write(dev, buf, off, len);
    }
    if (!rc) {
        rc = dev->ops->flush(dev);
    }
    if (rc) {
        fprintf(stderr, "  write to %s: %s (%d)\n", path,
                err ? err : strerror(-rc), rc);
    }
    if (!rc && model) {
        memset(model + off, byte, len);
    }
    blockdev_close(dev);
    free(buf);
    free(err);
    return rc;
}

/* Whether the chain at path reads as model[0, size). */
static bool
dev_matches(const char *path, const uint8_t *model, uint64_t size)
{
    struct blockdev *dev = NULL;
    uint8_t *buf = xmalloc(size);
    char *err = NULL;
    bool ok = false;

    if (blockdev_open_vhd(path, true, &dev, &err)) {
        fprintf(stderr, "  open %s: %s\n", path, err);
    } else if (dev->size != size) {
        fprintf(stderr, "  %s: size %" PRIu64 ", want %" PRIu64 "\n", path,
                dev->size, size);
    } else if (dev->ops->read(dev, buf, 0, size)) {
        fprintf(stderr, "  read %s failed\n", path);
    } else {
        ok = !memcmp(buf, model, size);
        if (!ok) {
            fprintf(stderr, "  %s does not read as expected\n", path);
        }
    }
    blockdev_close(dev);
    free(buf);
    free(err);
    return ok;
}

/* Whether qemu-img reads the volume file (a dynamic disk) as model. */
static bool
qemu_matches(const char *path, const uint8_t *model, uint64_t size)
{
    char *raw = xasprintf("%s.raw", path);
    uint8_t *buf = NULL;
    bool ok = false;
    int fd;

    if (sh("qemu-img convert -f vpc -O raw '%s' '%s'", path, raw)) {
        fprintf(stderr, "  qemu-img convert %s failed\n", path);
        goto out;
    }
    fd = open(raw, O_RDONLY);
    buf = xmalloc(size + 1);
    if (fd >= 0) {
        ssize_t n = 0, r;
        while ((r = read(fd, buf + n, size + 1 - n)) > 0) {
            n += r;
        }
        close(fd);
        ok = (uint64_t) n == size && !memcmp(buf, model, size);
        if (!ok) {
            fprintf(stderr, "  qemu reads %s differently (%zd bytes)\n",
                    path, n);
        }
    }
out:
    unlink(raw);
    free(raw);
    free(buf);
    return ok;
}

static bool
image_sound(const char *path)
{
    char *report = NULL;
    int rc = vhd_check(path, true, &report);

    if (rc) {
        fprintf(stderr, "  vhd_check: %s\n", report);
    }
    free(report);
    return !rc;
}

static int
gc_all(struct fixture *f, const struct sm_gc_hooks *hooks)
{
    bool more = true;
    int steps = 0;

    while (more && steps < 100) {
        char *err = NULL;
        int rc = drv->gc_step(f->sr, hooks, &more, &err);
        if (rc) {
            fprintf(stderr, "  gc_step: %s\n", err);
            free(err);
            return rc;
        }
        steps++;
    }
    return steps;
}

static int
chain_len(struct fixture *f, const char *uuid)
{
    int len = -1;
    char *err = NULL;

    if (drv->chain_length(f->sr, uuid, &len, &err)) {
        fprintf(stderr, "  chain_length: %s\n", err);
    }
    free(err);
    return len;
}

static bool
scan_has(struct fixture *f, const char *uuid, int *ret_n)
{
    struct sm_vdi_info *vdis = NULL;
    size_t n = 0;
    char *err = NULL;
    bool found = false;

    if (drv->scan(f->sr, &vdis, &n, &err)) {
        fprintf(stderr, "  scan: %s\n", err);
    }
    for (size_t i = 0; i < n; i++) {
        found |= !strcmp(vdis[i].uuid, uuid);
        sm_vdi_info_clear(&vdis[i]);
    }
    free(vdis);
    free(err);
    if (ret_n) {
        *ret_n = n;
    }
    return found;
}

/* ---- tests ---- */

TEST(test_sm_record_lists_the_configuration)
{
    bool device = false, thin = false;

    CHECK_STR(drv->type, "lvm");
    CHECK(drv->vdi_create && drv->vdi_snapshot && drv->gc_step);
    for (const struct sm_kv *kv = drv->configuration; kv->key; kv++) {
        device |= !strcmp(kv->key, "device");
    }
    for (const char *const *c = drv->capabilities; *c; c++) {
        thin |= !strcmp(*c, "THIN_PROVISIONING");
    }
    CHECK(device && thin);
}

TEST(test_create_refuses_a_device_holding_a_group_unless_forced)
{
    struct fixture f;
    struct sm_sr_stat st;
    struct sm_kv kv[3];
    struct sm_map dc;
    char *err = NULL;
    char other[37];

    CHECK(fixture_setup(&f, "create", 1024 * MiB, NULL));
    CHECK(!drv->stat(f.sr, &st, &err));
    CHECK_INT(st.physical_size, 1024 * MiB);
    /* MGT takes one extent. */
    CHECK_INT(st.free_space, 1024 * MiB - EXTENT);
    CHECK_INT(st.physical_utilisation, EXTENT);

    /* Probe finds the SR on the device. */
    {
        char *xml = NULL;
        CHECK(!drv->probe(&f.dc, NULL, &xml, &err));
        CHECK(xml && strstr(xml, f.sr_uuid) && strstr(xml, "<SRlist>"));
        free(xml);
    }
    uuid_generate(other);
    CHECK_INT(drv->create(f.dir, other, &f.dc, 0, &err), -EEXIST);
    free(err);
    err = NULL;
    kv[0] = f.kv[0];
    kv[1] = f.kv[1];
    kv[2] = (struct sm_kv) { "force", "true" };
    dc = (struct sm_map) { kv, 3 };
    CHECK(!drv->create(f.dir, other, &dc, 0, &err));
    /* The old group is gone; the new one attaches. */
    {
        struct sm_sr *sr = NULL;
        CHECK(!drv->attach(f.dir, other, &dc, &sr, &err));
        drv->detach(sr);
    }
    drv->detach(f.sr);
    f.sr = NULL;
    CHECK_INT(fixture_attach(&f), -ENOENT);
    free(err);
    f.sr = NULL;
    fixture_done(&f);
}

TEST(test_thin_vdi_inflates_on_attach_and_deflates_on_detach)
{
    const uint64_t size = 64 * MiB;
    struct fixture f;
    char uuid[37], *path = NULL;
    uint8_t *model = xcalloc(1, size);
    uint64_t thin_size;

    CHECK(fixture_setup(&f, "thin", 4096 * MiB, "thin"));
    CHECK(!vdi_create(&f, uuid, size, NULL));
    thin_size = lv_size(&f, uuid);
    /* An empty image: its metadata (with a 512 KiB BAT, reserved for
     * 256 GiB) fits one extent. */
    CHECK_INT(thin_size, EXTENT);

    CHECK(!vdi_attach(&f, uuid, true, &path));
    /* Room for all 32 blocks of 2 MiB + 512 bytes, and the metadata. */
    CHECK(lv_size(&f, uuid) >= size + 32 * 512 + 512 * 1024);
    CHECK(lv_size(&f, uuid) <= thin_size + size + EXTENT);
    CHECK(!dev_write(path, 0, 3 * MiB, 0x11, model));
    CHECK(!dev_write(path, 40 * MiB + 512, 4096, 0x22, model));
    CHECK(!dev_write(path, size - 4096, 4096, 0x33, model));
    CHECK(dev_matches(path, model, size));
    CHECK(image_sound(path));
    if (have_qemu_img()) {
        CHECK(qemu_matches(path, model, size));
    }
    drv->vdi_detach(f.sr, uuid);
    /* Deflated to the extents holding the metadata, 4 blocks and the
     * footer. */
    {
        struct vhd *v = NULL;
        struct vhd_info info;
        char *err = NULL;

        CHECK(!vhd_open(path, true, &v, &err));
        if (v) {
            CHECK(!vhd_get_info(v, &info));
            CHECK_INT(info.allocated_blocks, 4);
            CHECK_INT(lv_size(&f, uuid), (info.data_end + 512 + EXTENT - 1)
                                         / EXTENT * EXTENT);
            CHECK(info.data_end >= 4 * (2 * MiB + 512) + 512 * 1024);
            vhd_info_clear(&info);
        }
        vhd_close(v);
        free(err);
    }
    CHECK(dev_matches(path, model, size));
    CHECK(image_sound(path));
    if (have_qemu_img()) {
        CHECK(qemu_matches(path, model, size));
    }
    /* The volume file did not grow past the volume. */
    CHECK_INT(lv_size(&f, uuid) % EXTENT, 0);

    /* A read-only attach does not inflate. */
    free(path);
    CHECK(!vdi_attach(&f, uuid, false, &path));
    CHECK(lv_size(&f, uuid) < 16 * MiB);
    drv->vdi_detach(f.sr, uuid);
    free(path);
    fixture_done(&f);
    free(model);
}

TEST(test_thick_vdi_takes_its_full_size_at_once)
{
    const uint64_t size = 64 * MiB;
    struct fixture f;
    char thick[37], thin[37], *path = NULL;
    uint64_t full;
    uint8_t *model = xcalloc(1, size);

    /* The SR is thin; one VDI asks for thick. */
    CHECK(fixture_setup(&f, "thick", 4096 * MiB, "thin"));
    CHECK(!vdi_create(&f, thick, size, "thick"));
    CHECK(!vdi_create(&f, thin, size, NULL));
    full = lv_size(&f, thick);
    CHECK(full >= size + 32 * 512 + 512 * 1024);
    CHECK(lv_size(&f, thin) < full);
    CHECK(!vdi_attach(&f, thick, true, &path));
    CHECK_INT(lv_size(&f, thick), full);
    /* Every block fits: the whole disk can be written. */
    CHECK(!dev_write(path, 0, size, 0x5a, model));
    drv->vdi_detach(f.sr, thick);
    CHECK_INT(lv_size(&f, thick), full);
    CHECK(dev_matches(path, model, size));
    CHECK(image_sound(path));
    free(path);
    fixture_done(&f);

    /* On a thick SR, VDIs are thick unless they ask. */
    CHECK(fixture_setup(&f, "thick-sr", 4096 * MiB, NULL));
    CHECK(!vdi_create(&f, thick, size, NULL));
    CHECK_INT(lv_size(&f, thick), full);
    CHECK(!vdi_create(&f, thin, size, "thin"));
    CHECK(lv_size(&f, thin) < full);
    fixture_done(&f);
    free(model);
}

TEST(test_full_group_gives_enospc)
{
    struct fixture f;
    struct sm_sr_stat st;
    char a[37], b[37], *path = NULL, *err = NULL;

    /* 64 MiB: MGT, and room for a few small volumes. */
    CHECK(fixture_setup(&f, "full", 64 * MiB, "thin"));
    CHECK_INT(vdi_create(&f, a, 1024 * MiB, "thick"), -ENOSPC);
    CHECK_INT(n_lvs(&f, "NEW-"), 0);
    CHECK(!vdi_create(&f, a, 1024 * MiB, NULL));
    /* Writing needs the full size, which the group lacks. */
    CHECK_INT(vdi_attach(&f, a, true, &path), -ENOSPC);
    CHECK(lv_size(&f, a) <= 2 * EXTENT);
    CHECK_INT(n_lvs(&f, "JI_"), 0);
    /* Read-only needs nothing more. */
    CHECK(!vdi_attach(&f, a, false, &path));
    drv->vdi_detach(f.sr, a);
    free(path);
    path = NULL;
    CHECK(!vdi_create(&f, b, 16 * MiB, NULL));
    CHECK(!vdi_attach(&f, b, true, &path));
    CHECK(!dev_write(path, 0, 16 * MiB, 0x77, NULL));
    drv->vdi_detach(f.sr, b);
    CHECK(!drv->stat(f.sr, &st, &err));
    CHECK(st.free_space < 64 * MiB);
    free(path);
    free(err);
    fixture_done(&f);
}

TEST(test_container_refuses_writes_past_its_end)
{
    /* The VHD library alone: an image in an 8 MiB volume holds what fits
     * below the footer and no more, and the file never grows. */
    char *dir = xasprintf("/tmp/test-sm-lvm.%d.container", (int) getpid());
    char *img = xasprintf("%s/lv", dir);
    struct vhd_create_opts opts = { .virtual_size = 64 * MiB,
                                    .container = true };
    struct vhd *v = NULL;
    uint8_t *buf = xmalloc(MiB);
    struct stat st;
    char *err = NULL;
    int rc = 0, blocks = 0;

    sh("rm -rf '%s' && mkdir -p '%s' && truncate -s 8M '%s'", dir, dir,
       img);
    CHECK(!vhd_create(img, &opts, &err));
    CHECK(!vhd_open_ex(img, VHD_OPEN_CONTAINER, &v, &err));
    memset(buf, 0xab, MiB);
    for (uint64_t off = 0; !rc && off < 64 * MiB; off += 2 * MiB) {
        rc = vhd_write(v, buf, off, MiB);
        blocks += !rc;
    }
    CHECK_INT(rc, -ENOSPC);
    /* 8 MiB less the metadata and footer: three 2 MiB blocks. */
    CHECK_INT(blocks, 3);
    CHECK(!vhd_flush(v));
    vhd_close(v);
    CHECK(!stat(img, &st) && st.st_size == 8 * MiB);
    CHECK(image_sound(img));
    /* Growing the file and moving the footer gives room again. */
    CHECK(!vhd_open_ex(img, VHD_OPEN_CONTAINER, &v, &err));
    CHECK(!truncate(img, 16 * MiB));
    CHECK(!vhd_move_footer(v, 16 * MiB, &err));
    CHECK(!vhd_write(v, buf, 6 * MiB, MiB));
    vhd_close(v);
    CHECK(image_sound(img));
    if (have_qemu_img()) {
        uint8_t *model = xcalloc(1, 64 * MiB);
        for (int i = 0; i < 4; i++) {
            memset(model + i * 2 * MiB, 0xab, MiB);
        }
        CHECK(qemu_matches(img, model, 64 * MiB));
        free(model);
    }
    if (!test_failures_) {
        sh("rm -rf '%s'", dir);
    }
    free(err);
    free(buf);
    free(img);
    free(dir);
}

TEST(test_snapshot_clone_resize_destroy_and_gc_keep_data)
{
    const uint64_t size = 32 * MiB;
    struct fixture f;
    char a[37], s1[37], c1[37], *pa = NULL, *ps = NULL, *pc = NULL;
    uint8_t *ma = xcalloc(1, 2 * size), *ms = NULL, *mc = NULL;
    int n;

    CHECK(fixture_setup(&f, "chain", 4096 * MiB, "thin"));
    CHECK(!vdi_create(&f, a, size, NULL));
    CHECK(!vdi_attach(&f, a, true, &pa));
    CHECK(!dev_write(pa, 0, 5 * MiB, 0x01, ma));

    /* Snapshot while attached (the caller paused the data path). */
    CHECK(!vdi_copy(&f, a, s1, false));
    ms = memdup(ma, size);
    CHECK_INT(chain_len(&f, a), 2);
    CHECK_INT(chain_len(&f, s1), 2);
    /* The base is hidden: not a VDI; it was deflated to its data. */
    CHECK(scan_has(&f, a, &n) && scan_has(&f, s1, NULL));
    CHECK_INT(n, 2);
    CHECK_INT(n_lvs(&f, "VHD-"), 3);
    CHECK_INT(n_lvs(&f, "J"), 0);
    /* The attached writable leaf is inflated, the snapshot is not. */
    CHECK(lv_size(&f, a) > size);
    CHECK(lv_size(&f, s1) <= 2 * EXTENT);
    CHECK(dev_matches(pa, ma, size));
    CHECK(!dev_write(pa, 4 * MiB, 2 * MiB, 0x02, ma));
    CHECK(dev_matches(pa, ma, size));
    CHECK(!vdi_attach(&f, s1, false, &ps));
    CHECK(dev_matches(ps, ms, size));
    drv->vdi_detach(f.sr, s1);
    CHECK(image_sound(pa));

    /* A clone of the snapshot. */
    CHECK(!vdi_copy(&f, s1, c1, true));
    mc = memdup(ms, size);
    CHECK_INT(chain_len(&f, c1), 3);
    CHECK(!vdi_attach(&f, c1, true, &pc));
    CHECK(!dev_write(pc, 10 * MiB, MiB, 0x03, mc));
    drv->vdi_detach(f.sr, c1);
    CHECK(dev_matches(pc, mc, size));
    CHECK(dev_matches(ps, ms, size));
    CHECK(dev_matches(pa, ma, size));

    /* Resize the attached leaf: the volume grows with it. */
    {
        struct sm_vdi_info info;
        char *err = NULL;
        memset(&info, 0, sizeof info);
        CHECK(!drv->vdi_resize(f.sr, a, 2 * size, &info, &err));
        CHECK_INT(info.virtual_size, 2 * size);
        CHECK_INT(drv->vdi_resize(f.sr, a, size, &info, &err), -EINVAL);
        sm_vdi_info_clear(&info);
        free(err);
        CHECK(lv_size(&f, a) > 2 * size);
        CHECK(!dev_write(pa, 2 * size - MiB, MiB, 0x04, ma));
        CHECK(dev_matches(pa, ma, 2 * size));
    }
    drv->vdi_detach(f.sr, a);
    CHECK(lv_size(&f, a) < size);
    CHECK(dev_matches(pa, ma, 2 * size));

    /* Destroy the snapshot; GC then merges what is left. */
    {
        char *err = NULL;
        CHECK(!drv->vdi_destroy(f.sr, s1, &err));
        CHECK_INT(drv->vdi_destroy(f.sr, s1, &err), -ENOENT);
        free(err);
    }
    CHECK(gc_all(&f, NULL) > 1);
    CHECK_INT(n_lvs(&f, "J"), 0);
    CHECK_INT(chain_len(&f, a), 2);
    CHECK_INT(chain_len(&f, c1), 2);
    CHECK(dev_matches(pa, ma, 2 * size));
    CHECK(dev_matches(pc, mc, size));
    CHECK(image_sound(pa) && image_sound(pc));

    /* Without the clone, A becomes a lone dynamic disk qemu reads. */
    {
        char *err = NULL;
        CHECK(!drv->vdi_destroy(f.sr, c1, &err));
        free(err);
    }
    CHECK(gc_all(&f, NULL) > 1);
    CHECK_INT(chain_len(&f, a), 1);
    CHECK_INT(n_lvs(&f, "VHD-"), 1);
    CHECK(dev_matches(pa, ma, 2 * size));
    CHECK(image_sound(pa));
    if (have_qemu_img()) {
        CHECK(qemu_matches(pa, ma, 2 * size));
    }
    /* It went back to thin: deflated. */
    CHECK(lv_size(&f, a) < 2 * size);
    free(pa);
    free(ps);
    free(pc);
    free(ma);
    free(ms);
    free(mc);
    fixture_done(&f);
}

TEST(test_resize_past_the_reserved_bat_moves_blocks_in_the_volume)
{
    const uint64_t size = 16 * MiB, big = 300ull << 30;
    struct fixture f;
    struct sm_vdi_info info;
    char a[37], *pa = NULL, *err = NULL;
    uint8_t *model = xcalloc(1, size), *buf = xmalloc(size);
    struct blockdev *dev = NULL;

    CHECK(fixture_setup(&f, "resize", 4096 * MiB, "thin"));
    CHECK(!vdi_create(&f, a, size, NULL));
    CHECK(!vdi_attach(&f, a, true, &pa));
    /* The first blocks sit right after the BAT, in its way. */
    CHECK(!dev_write(pa, 0, size, 0x61, model));
    drv->vdi_detach(f.sr, a);
    memset(&info, 0, sizeof info);
    CHECK(!drv->vdi_resize(f.sr, a, big, &info, &err));
    CHECK_INT(info.virtual_size, big);
    sm_vdi_info_clear(&info);
    CHECK(image_sound(pa));
    /* Thin and detached: deflated again, though the moved blocks now lie
     * further on. */
    CHECK(lv_size(&f, a) < size + 4 * EXTENT);
    CHECK(!blockdev_open_vhd(pa, true, &dev, &err));
    if (dev) {
        CHECK(dev->size == big);
        CHECK(!dev->ops->read(dev, buf, 0, size));
        CHECK(!memcmp(buf, model, size));
        CHECK(!dev->ops->read(dev, buf, big - size, size));
        memset(model, 0, size);
        CHECK(!memcmp(buf, model, size));
    }
    blockdev_close(dev);
    free(err);
    free(pa);
    free(buf);
    free(model);
    fixture_done(&f);
}

TEST(test_data_destroy_leaves_an_empty_vdi_and_garbage)
{
    const uint64_t size = 16 * MiB;
    struct fixture f;
    char a[37], s1[37], *pa = NULL, *ps = NULL, *err = NULL;
    uint8_t *model = xcalloc(1, size), *zero = xcalloc(1, size);

    CHECK(fixture_setup(&f, "data-destroy", 4096 * MiB, "thin"));
    CHECK(!vdi_create(&f, a, size, NULL));
    CHECK(!vdi_attach(&f, a, true, &pa));
    CHECK(!dev_write(pa, 0, 4 * MiB, 0x3c, model));
    CHECK_INT(drv->vdi_data_destroy(f.sr, a, &err), -EBUSY);
    drv->vdi_detach(f.sr, a);
    CHECK(!vdi_copy(&f, a, s1, false));
    CHECK(!drv->vdi_data_destroy(f.sr, s1, &err));
    CHECK_INT(chain_len(&f, s1), 1);
    CHECK(!vdi_attach(&f, s1, false, &ps));
    CHECK(dev_matches(ps, zero, size));
    drv->vdi_detach(f.sr, s1);
    /* A still reads its data; the base has one child left: merged. */
    CHECK(dev_matches(pa, model, size));
    CHECK(gc_all(&f, NULL) > 1);
    CHECK_INT(chain_len(&f, a), 1);
    CHECK_INT(n_lvs(&f, "VHD-"), 2);
    CHECK(dev_matches(pa, model, size));
    free(pa);
    free(ps);
    free(err);
    free(model);
    free(zero);
    fixture_done(&f);
}

TEST(test_chain_length_is_limited)
{
    struct fixture f;
    char a[37], s[37];
    int rc = 0, n = 0;

    CHECK(fixture_setup(&f, "limit", 4096 * MiB, "thin"));
    CHECK(!vdi_create(&f, a, 8 * MiB, NULL));
    while (!rc && n < SM_MAX_CHAIN_LENGTH + 5) {
        rc = vdi_copy(&f, a, s, false);
        n += !rc;
    }
    CHECK_INT(rc, -ELOOP);
    CHECK_INT(n, SM_MAX_CHAIN_LENGTH - 1);
    CHECK_INT(chain_len(&f, a), SM_MAX_CHAIN_LENGTH);
    CHECK_INT(n_lvs(&f, "J"), 0);
    fixture_done(&f);
}

/* GC hooks that record pauses. */
struct pauses {
    char attached[37];
    int paused, unpaused;
    bool refuse;                    /* the data path cannot pause now */
};

static bool
hook_attached(void *aux, const char *uuid)
{
    return !strcmp(((struct pauses *) aux)->attached, uuid);
}

static int
hook_pause(void *aux, const char *uuid)
{
    struct pauses *p = aux;

    (void) uuid;
    if (p->refuse) {
        return -EBUSY;
    }
    p->paused++;
    return 0;
}

static void
hook_unpause(void *aux, const char *uuid)
{
    (void) uuid;
    ((struct pauses *) aux)->unpaused++;
}

TEST(test_gc_pauses_an_attached_leaf_it_merges)
{
    struct fixture f;
    struct pauses p = { "", 0, 0, false };
    struct sm_gc_hooks hooks = { hook_attached, hook_pause, hook_unpause,
                                 NULL, &p };
    char a[37], s[37], *pa = NULL, *err = NULL;
    uint8_t *model = xcalloc(1, 16 * MiB);

    CHECK(fixture_setup(&f, "pause", 4096 * MiB, "thin"));
    CHECK(!vdi_create(&f, a, 16 * MiB, NULL));
    CHECK(!vdi_attach(&f, a, true, &pa));
    CHECK(!dev_write(pa, MiB, MiB, 0x42, model));
    CHECK(!vdi_copy(&f, a, s, false));
    CHECK(!dev_write(pa, 3 * MiB, MiB, 0x43, model));
    CHECK(!drv->vdi_destroy(f.sr, s, &err));
    snprintf(p.attached, sizeof p.attached, "%s", a);
    CHECK(gc_all(&f, &hooks) > 0);
    CHECK(p.paused >= 1 && p.paused == p.unpaused);
    CHECK_INT(chain_len(&f, a), 1);
    /* Still writable with room for everything. */
    CHECK(lv_size(&f, a) > 16 * MiB);
    CHECK(!dev_write(pa, 12 * MiB, 4 * MiB, 0x44, model));
    CHECK(dev_matches(pa, model, 16 * MiB));
    drv->vdi_detach(f.sr, a);
    CHECK(dev_matches(pa, model, 16 * MiB));
    free(err);
    free(pa);
    free(model);
    fixture_done(&f);
}

TEST(test_gc_merges_a_lone_base_into_its_parent)
{
    const uint64_t size = 16 * MiB;
    struct fixture f;
    struct pauses p = { "", 0, 0, false };
    struct sm_gc_hooks hooks = { hook_attached, hook_pause, hook_unpause,
                                 NULL, &p };
    char a[37], s1[37], s2[37], *pa = NULL, *ps = NULL, *err = NULL;
    uint8_t *ma = xcalloc(1, size), *ms2 = NULL;
    int n;

    CHECK(fixture_setup(&f, "merge-base", 4096 * MiB, "thin"));
    CHECK(!vdi_create(&f, a, size, NULL));
    CHECK(!vdi_attach(&f, a, true, &pa));
    CHECK(!dev_write(pa, 0, MiB, 0x01, ma));
    CHECK(!vdi_copy(&f, a, s1, false));
    CHECK(!dev_write(pa, 2 * MiB, MiB, 0x02, ma));
    CHECK(!vdi_copy(&f, a, s2, false));
    ms2 = memdup(ma, size);
    CHECK(!dev_write(pa, 4 * MiB, MiB, 0x03, ma));
    CHECK_INT(chain_len(&f, a), 3);
    /* Without s1, the first base has one child: the second base. */
    CHECK(!drv->vdi_destroy(f.sr, s1, &err));
    snprintf(p.attached, sizeof p.attached, "%s", a);
    /* While A cannot pause, the merge stops after coalescing: the journal
     * keeps what is left to do, and the data is intact. */
    p.refuse = true;
    CHECK(gc_all(&f, &hooks) >= 1);
    CHECK_INT(n_lvs(&f, "JB_"), 1);
    CHECK(dev_matches(pa, ma, size));
    p.refuse = false;
    CHECK(gc_all(&f, &hooks) > 1);
    CHECK_INT(n_lvs(&f, "J"), 0);
    CHECK(p.paused >= 1 && p.paused == p.unpaused);
    CHECK_INT(chain_len(&f, a), 2);
    CHECK_INT(chain_len(&f, s2), 2);
    CHECK_INT(n_lvs(&f, "VHD-"), 3);
    CHECK(scan_has(&f, a, &n) && scan_has(&f, s2, NULL));
    CHECK_INT(n, 2);
    CHECK(dev_matches(pa, ma, size));
    CHECK(!vdi_attach(&f, s2, false, &ps));
    CHECK(dev_matches(ps, ms2, size));
    CHECK(image_sound(pa) && image_sound(ps));
    /* Reparented children went back to their deflated size. */
    CHECK(lv_size(&f, s2) <= EXTENT);
    drv->vdi_detach(f.sr, s2);
    drv->vdi_detach(f.sr, a);
    free(pa);
    free(ps);
    free(ma);
    free(ms2);
    free(err);
    fixture_done(&f);
}

/* Runs op in a child that the driver kills at crash point `at` (as
 * sm_crash_point() does: exit status 137). */
static int
crash_child(struct fixture *f, const char *at, int (*op)(struct fixture *))
{
    pid_t pid;
    int status = 0;

    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        setenv("SM_CRASH_AT", at, 1);
        drv->detach(f->sr);
        f->sr = NULL;
        _exit(fixture_attach(f) || op(f) ? 1 : 0);
    }
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char crash_a[37], crash_s[37];

/* crash_s is chosen by the parent, which checks for it afterwards. */
static int
crash_op_snapshot(struct fixture *f)
{
    struct sm_vdi_info info;
    char *err = NULL;
    int rc;

    memset(&info, 0, sizeof info);
    rc = drv->vdi_snapshot(f->sr, crash_a, crash_s, &info, &err);
    sm_vdi_info_clear(&info);
    free(err);
    return rc;
}

static int
crash_op_gc(struct fixture *f)
{
    return gc_all(f, NULL) < 0;
}

/* The same, on a chain whose first base has a single (hidden) child. */
static int
crash_op_gc_base(struct fixture *f)
{
    return gc_all(f, NULL) < 0;
}

static int
crash_op_data_destroy(struct fixture *f)
{
    char *err = NULL;
    int rc = drv->vdi_data_destroy(f->sr, crash_a, &err);

    free(err);
    return rc;
}

static int
crash_op_detach(struct fixture *f)
{
    char *path = NULL;
    int rc = vdi_attach(f, crash_a, true, &path);

    if (!rc) {
        drv->vdi_detach(f->sr, crash_a);
    }
    free(path);
    return rc;
}

static int
crash_op_attach(struct fixture *f)
{
    char *path = NULL;
    int rc = vdi_attach(f, crash_a, true, &path);

    free(path);
    return rc;
}

TEST(test_crash_at_any_step_recovers_on_attach)
{
    static const struct {
        const char *at;
        int (*op)(struct fixture *);
        bool snapshot_made;         /* the snapshot exists afterwards */
    } cases[] = {
        { "lvm-clone-journal", crash_op_snapshot, false },
        { "lvm-clone-renamed", crash_op_snapshot, false },
        { "lvm-create-written", crash_op_snapshot, false },
        { "lvm-clone-new-child", crash_op_snapshot, false },
        { "lvm-clone-children", crash_op_snapshot, false },
        { "lvm-clone-hidden", crash_op_snapshot, true },
        { "lvm-deflate-footer", crash_op_detach, false },
        { "lvm-clone-deflated", crash_op_snapshot, true },
        { "lvm-inflate-journal", crash_op_attach, false },
        { "lvm-inflate-resized", crash_op_attach, false },
        { "lvm-inflate-footer", crash_op_attach, false },
        { "lvm-gc-leaf-coalesced", crash_op_gc, false },
        { "lvm-gc-leaf-journal", crash_op_gc, false },
        { "lvm-gc-leaf-removed", crash_op_gc, false },
        { "lvm-gc-leaf-renamed", crash_op_gc, false },
        { "lvm-gc-leaf-unhidden", crash_op_gc, false },
        { "lvm-gc-base-coalesced", crash_op_gc_base, true },
        { "lvm-gc-base-journal", crash_op_gc_base, true },
        { "lvm-gc-base-reparented", crash_op_gc_base, true },
        { "lvm-gc-base-removed", crash_op_gc_base, true },
        { "lvm-data-destroy-journal", crash_op_data_destroy, false },
        { "lvm-data-destroy-removed", crash_op_data_destroy, false },
        { "lvm-create-written", crash_op_data_destroy, false },
        { "lvm-data-destroy-created", crash_op_data_destroy, false },
    };
    const uint64_t size = 16 * MiB;
    uint8_t *model = xcalloc(1, size);

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct fixture f;
        char *pa = NULL, *pa2 = NULL, *err = NULL;
        int status, n;

        memset(model, 0, size);
        CHECK(fixture_setup(&f, "crash", 4096 * MiB, "thin"));
        CHECK(!vdi_create(&f, crash_a, size, NULL));
        CHECK(!vdi_attach(&f, crash_a, true, &pa));
        CHECK(!dev_write(pa, 0, 3 * MiB, 0x10 + i, model));
        drv->vdi_detach(f.sr, crash_a);
        if (cases[i].op == crash_op_gc_base) {
            /* A -> S1, A -> S2, S1 destroyed: base 1 holds base 2 only. */
            char s1[37];
            CHECK(!vdi_copy(&f, crash_a, s1, false));
            free(pa);
            pa = NULL;
            CHECK(!vdi_attach(&f, crash_a, true, &pa));
            CHECK(!dev_write(pa, 2 * MiB, MiB, 0x80 + i, model));
            drv->vdi_detach(f.sr, crash_a);
            CHECK(!vdi_copy(&f, crash_a, crash_s, false));
            CHECK(!vdi_attach(&f, crash_a, true, &pa2));
            CHECK(!dev_write(pa2, 5 * MiB, MiB, 0x90 + i, model));
            drv->vdi_detach(f.sr, crash_a);
            CHECK(!drv->vdi_destroy(f.sr, s1, &err));
        }
        if (cases[i].op == crash_op_gc) {
            /* A base with one leaf child, for the GC to merge. */
            CHECK(!vdi_copy(&f, crash_a, crash_s, false));
            free(pa);
            pa = NULL;
            CHECK(!vdi_attach(&f, crash_a, true, &pa));
            CHECK(!dev_write(pa, 2 * MiB, MiB, 0x80 + i, model));
            drv->vdi_detach(f.sr, crash_a);
            CHECK(!drv->vdi_destroy(f.sr, crash_s, &err));
        }
        free(pa);
        free(pa2);
        pa = NULL;
        /* The snapshot to make (the GC cases keep the one they made). */
        if (cases[i].op == crash_op_snapshot) {
            uuid_generate(crash_s);
        }

        status = crash_child(&f, cases[i].at, cases[i].op);
        if (status != 137) {
            fprintf(stderr, "  %s: the child exited with %d, not at the "
                    "crash point\n", cases[i].at, status);
            test_failures_++;
        }
        /* Attach recovers. */
        drv->detach(f.sr);
        f.sr = NULL;
        if (fixture_attach(&f)) {
            fprintf(stderr, "  %s: attach failed after the crash\n",
                    cases[i].at);
            test_failures_++;
            fixture_done(&f);
            continue;
        }
        CHECK_INT(n_lvs(&f, "J"), 0);
        CHECK_INT(n_lvs(&f, "NEW-"), 0);
        CHECK(scan_has(&f, crash_a, &n));
        if (cases[i].op == crash_op_snapshot
            || cases[i].op == crash_op_gc_base) {
            if (scan_has(&f, crash_s, NULL) != cases[i].snapshot_made
                || n != (cases[i].snapshot_made ? 2 : 1)) {
                fprintf(stderr, "  %s: %d VDIs after recovery\n",
                        cases[i].at, n);
                test_failures_++;
            }
        }
        if (cases[i].op == crash_op_data_destroy) {
            /* Every crash point lies after the journal: recovery
             * finishes the destroy. */
            memset(model, 0, size);
        }
        CHECK(!vdi_attach(&f, crash_a, true, &pa));
        if (!dev_matches(pa, model, size)) {
            fprintf(stderr, "  data lost after a crash at %s\n",
                    cases[i].at);
            test_failures_++;
        }
        CHECK(image_sound(pa));
        drv->vdi_detach(f.sr, crash_a);
        /* What is left is collectable and the data stays. */
        CHECK(gc_all(&f, NULL) >= 1);
        CHECK_INT(chain_len(&f, crash_a), cases[i].snapshot_made ? 2 : 1);
        CHECK(dev_matches(pa, model, size));
        free(pa);
        free(err);
        fixture_done(&f);
    }
    free(model);
}

/* Attaches a loop device to a new file of size bytes; "" if impossible. */
static void
loop_attach(const char *file, uint64_t size, char *ret_dev, size_t n)
{
    char *cmd = xasprintf("truncate -s %" PRIu64 " '%s' && "
                          "losetup -f --show '%s' 2>/dev/null", size, file,
                          file);
    FILE *p = popen(cmd, "r");

    ret_dev[0] = 0;
    if (p) {
        if (!fgets(ret_dev, n, p)) {
            ret_dev[0] = 0;
        }
        pclose(p);
    }
    ret_dev[strcspn(ret_dev, "\n")] = 0;
    free(cmd);
}

/* Logical volumes are block devices reached through /dev/VG/LV symlinks;
 * loop devices behind symlinks stand for them: the library finds their
 * size with BLKGETSIZE64, keeps the footer at their end, refuses to grow
 * them, and records the symlink (not the node it points to) as a parent's
 * path. */
TEST(test_images_on_block_devices_behind_symlinks)
{
    const uint64_t size = 32 * MiB;
    char *dir = xasprintf("/tmp/test-sm-lvm.%d.blk", (int) getpid());
    char *fa = xasprintf("%s/a.img", dir), *fb = xasprintf("%s/b.img", dir);
    char *la = xasprintf("%s/VG/VHD-a", dir), *lb = xasprintf("%s/VG/VHD-b",
                                                               dir);
    char da[64], db[64], *err = NULL;
    struct vhd_create_opts oa = { .virtual_size = size, .container = true };
    struct vhd_create_opts ob = { .parent_path = la, .container = true };
    struct blockdev *dev = NULL;
    struct vhd *v = NULL;
    struct vhd_info info;
    uint8_t *model = xcalloc(1, size), *buf = xmalloc(size);
    int rc = 0, blocks = 0;

    if (getuid() != 0) {
        SKIP("loop devices need root");
    }
    sh("rm -rf '%s' && mkdir -p '%s/VG'", dir, dir);
    loop_attach(fa, 16 * MiB, da, sizeof da);
    loop_attach(fb, 8 * MiB, db, sizeof db);
    if (!da[0] || !db[0]) {
        if (da[0]) {
            sh("losetup -d %s", da);
        }
        sh("rm -rf '%s'", dir);
        SKIP("no loop device available");
    }
    CHECK(!symlink(da, la) && !symlink(db, lb));
    CHECK(!vhd_create(la, &oa, &err));
    CHECK(!blockdev_open_vhd(la, false, &dev, &err));
    if (dev) {
        memset(buf, 0x5c, MiB);
        memset(model, 0x5c, MiB);
        CHECK(!dev->ops->write(dev, buf, 0, MiB));
        CHECK(!dev->ops->flush(dev));
    }
    blockdev_close(dev);
    dev = NULL;
    CHECK(image_sound(la));
    if (have_qemu_img()) {
        CHECK(qemu_matches(la, model, size));
    }
    /* A child on the other device records the symlink as its parent. */
    CHECK(!vhd_create(lb, &ob, &err));
    CHECK(!vhd_chain_open(lb, true, &v, &err));
    if (v) {
        CHECK(!vhd_get_info(v, &info));
        /* Found through the symlink's directory ("VG/./VHD-a", from the
         * relative locator), not through /dev/loopN. */
        CHECK(info.parent_path && strstr(info.parent_path, "/VG/")
              && strstr(info.parent_path, "VHD-a")
              && !strstr(info.parent_path, "loop"));
        CHECK_INT(info.physical_size, 8 * MiB);
        vhd_info_clear(&info);
    }
    vhd_close(v);
    /* Writes fill the 8 MiB device and then fail: it cannot grow. */
    CHECK(!blockdev_open_vhd(lb, false, &dev, &err));
    memset(buf, 0x6d, size);
    for (uint64_t off = 0; dev && !rc && off < size; off += 2 * MiB) {
        rc = dev->ops->write(dev, buf, off, 2 * MiB);
        if (!rc) {
            memset(model + off, 0x6d, 2 * MiB);
            blocks++;
        }
    }
    CHECK_INT(rc, -ENOSPC);
    CHECK_INT(blocks, 3);
    blockdev_close(dev);
    dev = NULL;
    CHECK(image_sound(lb));
    CHECK(dev_matches(lb, model, size));
    sh("losetup -d %s; losetup -d %s", da, db);
    if (!test_failures_) {
        sh("rm -rf '%s'", dir);
    }
    free(err);
    free(model);
    free(buf);
    free(fa);
    free(fb);
    free(la);
    free(lb);
    free(dir);
}

/* ---- the real backend ---- */

static bool
have_lvm(void)
{
    return getuid() == 0
           && system("command -v pvcreate >/dev/null 2>&1 "
                     "&& command -v losetup >/dev/null 2>&1") == 0;
}

TEST(test_real_lvm_data_path)
{
    SKIP("no device-mapper in this kernel (LVs cannot be activated); the "
         "real lvm backend runs under Xen-in-QEMU (issue 7)");
}

/* lvm2 without device-mapper: an lvm.conf (LVM_SYSTEM_DIR, which the
 * driver's lvm2 commands inherit) that turns activation off lets every
 * metadata command run; activation itself then does nothing, so the
 * volumes have no /dev node and images cannot be written. */
TEST(test_real_lvm_commands_without_device_mapper)
{
    char *dir = xasprintf("/tmp/test-sm-lvm.%d.real", (int) getpid());
    char *img = xasprintf("%s/pv.img", dir), loop[64] = "", sr[37];
    char uuid[37], *err = NULL, *cmd;
    struct sm_kv kv[2];
    struct sm_map dc;
    struct sm_sr *s = NULL;
    struct sm_sr_stat st;
    struct sm_vdi_info *vdis = NULL;
    size_t n = 0;
    FILE *p;
    int rc;

    if (!have_lvm()) {
        free(dir);
        free(img);
        SKIP("lvm2 is not installed or we are not root (apt-get install "
             "lvm2)");
    }
    sh("rm -rf '%s' && mkdir -p '%s' && truncate -s 256M '%s' && "
       "printf 'global {\\n    activation = 0\\n}\\n' >'%s/lvm.conf'",
       dir, dir, img, dir);
    setenv("LVM_SYSTEM_DIR", dir, 1);
    setenv("LVM_SUPPRESS_FD_WARNINGS", "1", 1);
    cmd = xasprintf("losetup -f --show '%s' 2>/dev/null", img);
    p = popen(cmd, "r");
    free(cmd);
    if (!p || !fgets(loop, sizeof loop, p)) {
        if (p) {
            pclose(p);
        }
        sh("rm -rf '%s'", dir);
        free(dir);
        free(img);
        SKIP("no loop device available");
    }
    pclose(p);
    loop[strcspn(loop, "\n")] = 0;
    uuid_generate(sr);
    kv[0] = (struct sm_kv) { "device", loop };
    kv[1] = (struct sm_kv) { "allocation", "thin" };
    dc = (struct sm_map) { kv, 2 };

    /* pvcreate, vgcreate (tagged thin) and the MGT volume. */
    rc = drv->create(dir, sr, &dc, 0, &err);
    if (rc) {
        fprintf(stderr, "  create: %s\n", err);
    }
    CHECK(!rc);
    CHECK_INT(drv->create(dir, sr, &dc, 0, &err), -EEXIST);
    CHECK(!sh("vgs --noheadings -o vg_tags VG_XenStorage-%s 2>/dev/null "
              "| grep -q lvhd_thin", sr));
    CHECK(!sh("lvs --noheadings -o lv_name VG_XenStorage-%s 2>/dev/null "
              "| grep -q MGT", sr));
    rc = drv->attach(dir, sr, &dc, &s, &err);
    if (rc) {
        fprintf(stderr, "  attach: %s\n", err);
    }
    CHECK(!rc);
    if (!rc) {
        /* vgs parsed: 256 MiB less lvm2's metadata area, MGT used. */
        CHECK(!drv->stat(s, &st, &err));
        CHECK(st.physical_size > 200 * MiB && st.physical_size <= 256 * MiB);
        CHECK_INT(st.physical_utilisation, EXTENT);
        /* lvs parsed: MGT is no VDI. */
        CHECK(!drv->scan(s, &vdis, &n, &err));
        CHECK_INT(n, 0);
        free(vdis);
        /* lvcreate works, writing the image needs the /dev node that
         * activation would make; the half-made volume is removed. */
        uuid_generate(uuid);
        {
            struct sm_vdi_info info;
            memset(&info, 0, sizeof info);
            rc = drv->vdi_create(s, uuid, 64 * MiB, NULL, &info, &err);
            CHECK_INT(rc, -ENOENT);
            sm_vdi_info_clear(&info);
        }
        CHECK(sh("lvs --noheadings -o lv_name VG_XenStorage-%s 2>/dev/null "
                 "| grep -q NEW-", sr));
        /* More space than the group has: refused before lvcreate. */
        {
            struct sm_kv thick[1] = { { "allocation", "thick" } };
            struct sm_map cfg = { thick, 1 };
            struct sm_vdi_info info;
            memset(&info, 0, sizeof info);
            CHECK_INT(drv->vdi_create(s, uuid, 1024 * MiB, &cfg, &info,
                                      &err), -ENOSPC);
        }
        drv->detach(s);
    }
    /* Forced: the old group goes (vgremove), a new one is made. */
    {
        char sr2[37];
        struct sm_kv fkv[3] = { kv[0], kv[1], { "force", "true" } };
        struct sm_map fdc = { fkv, 3 };

        uuid_generate(sr2);
        CHECK(!drv->create(dir, sr2, &fdc, 0, &err));
        CHECK(sh("vgs VG_XenStorage-%s >/dev/null 2>&1", sr));
        CHECK(!sh("vgs VG_XenStorage-%s >/dev/null 2>&1", sr2));
        snprintf(sr, sizeof sr, "%s", sr2);
    }
    CHECK(!drv->destroy(dir, sr, &dc, &err));
    CHECK(sh("vgs VG_XenStorage-%s >/dev/null 2>&1", sr));
    sh("losetup -d '%s'", loop);
    sh("rm -rf '%s'", dir);
    unsetenv("LVM_SYSTEM_DIR");
    free(err);
    free(dir);
    free(img);
}
