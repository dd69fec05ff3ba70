/* sm-lvm.c — the lvm SR driver: XenServer's LVHD, VHD images inside the
 * logical volumes of one volume group.
 *
 * The driver logic (thin provisioning by inflating and deflating volumes,
 * snapshots and clones as chains of volumes, garbage collection, crash
 * recovery through journal volumes) is written once over a small volume
 * manager interface with two backends: the real one runs the lvm2 tools
 * through sm_run(), the simulator keeps a volume group as a directory of
 * files (device_config device = "sim:/some/dir"), so that every path of
 * the logic is tested on machines without device-mapper.  docs/lvhd.md
 * gives the layout, the size rules and the order of every update. */
#include <config.h>
#include "sm.h"
#include "sm-int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"
#include "vhd.h"

/* lvm2's default extent size, which the simulator copies. */
#define LVM_EXTENT ((uint64_t) 4 << 20)
/* A simulated volume group's size unless device_config gives "size". */
#define SIM_DEFAULT_CAPACITY (64ull << 30)
#define VG_PREFIX "VG_XenStorage-"
#define LV_VHD "VHD-"
/* A VDI being created, renamed to VHD-<uuid> once its image is whole. */
#define LV_NEW "NEW-"
#define LV_MGT "MGT"
/* Journal volumes (one extent each; the name is the record):
 * JI_<uuid>_<old size>            inflate of VHD-<uuid> in progress
 * JC_<leaf>_<base>_<new>          snapshot or clone in progress
 * JL_<leaf>_<base>                leaf coalesce: base replaces leaf
 * JB_<base>_<parent>              base merged into its parent: its
 *                                 children move to the parent
 * JD_<uuid>_<size>, JT_<uuid>_<size>  data destroy: VDI <uuid> becomes
 *                                 an empty thin (JD) or thick (JT) image */
#define J_INFLATE "JI_"
#define J_CLONE "JC_"
#define J_LEAF "JL_"
#define J_BASE "JB_"
#define J_DATA_THIN "JD_"
#define J_DATA_THICK "JT_"
/* Tags: on a leaf volume, its allocation; on the volume group, the SR's
 * default. */
#define TAG_THICK "lvhd_thick"
#define TAG_THIN "lvhd_thin"
#define LVHD_MAX_SIZE VHD_MAX_SIZE
/* Every image reserves BAT entries for at least this virtual size, so
 * that resizing up to it never moves blocks.  XenServer reserves for
 * 2 TiB; that BAT (4 MB) is read at every open, and the driver opens
 * images often (every chain walk), so we reserve 256 GiB (512 KiB) and let
 * larger resizes move the few blocks in the BAT's way (see resize). */
#define LVHD_RESERVE (256ull << 30)
/* Locator data each image may hold: three at creation, and more appended
 * by reparenting (one set per garbage collection that touches it). */
#define LOCATOR_ROOM (64u << 10)

/* ---- the volume manager interface ---- */

struct lv {
    char *name;
    uint64_t size;
    char *tags;                     /* comma-separated, "" if none */
};

struct vg;

/* A volume manager backend.  Every call returns 0 or a negative errno
 * value and sets *ret_err on failure.  Calls on one VG are serialized by
 * the driver (struct vg's lock) where they change metadata the simulator
 * keeps in one file; lvm2 has its own locking. */
struct lvm_backend {
    const char *name;               /* "lvm", "sim" */
    /* Whether the device holds a volume group (its name, malloc'd, or
     * NULL). */
    int (*device_vg)(struct vg *vg, char **ret_vg_name, char **ret_err);
    int (*vg_create)(struct vg *vg, const char *tag, bool force,
                     char **ret_err);
    int (*vg_remove)(struct vg *vg, char **ret_err);
    int (*vg_stat)(struct vg *vg, uint64_t *ret_size, uint64_t *ret_free,
                   char **ret_tags, char **ret_err);
    int (*lv_list)(struct vg *vg, struct lv **ret_lvs, size_t *ret_n,
                   char **ret_err);
    /* Created inactive, not zeroed, tagged with tag if not NULL. */
    int (*lv_create)(struct vg *vg, const char *name, uint64_t size,
                     const char *tag, char **ret_err);
    int (*lv_remove)(struct vg *vg, const char *name, char **ret_err);
    int (*lv_resize)(struct vg *vg, const char *name, uint64_t size,
                     char **ret_err);
    int (*lv_rename)(struct vg *vg, const char *from, const char *to,
                     char **ret_err);
    int (*lv_tag)(struct vg *vg, const char *name, const char *tag,
                  bool add, char **ret_err);
    /* Activates (idempotent) and says where the volume is. */
    int (*lv_activate)(struct vg *vg, const char *name, char **ret_path,
                       char **ret_err);
    int (*lv_deactivate)(struct vg *vg, const char *name, char **ret_err);
};

struct vg {
    const struct lvm_backend *be;
    char *name;                     /* VG_XenStorage-<sr uuid> */
    char *device;                   /* the PV, or the simulator's dir */
    char *dir;                      /* simulator: device/name */
    uint64_t sim_capacity;          /* simulator: bytes, at create */
    pthread_mutex_t lock;
};

static void
lv_clear(struct lv *lv)
{
    free(lv->name);
    free(lv->tags);
    lv->name = lv->tags = NULL;
}

static void
lvs_free(struct lv *lvs, size_t n)
{
    for (size_t i = 0; lvs && i < n; i++) {
        lv_clear(&lvs[i]);
    }
    free(lvs);
}

static uint64_t
round_up(uint64_t x, uint64_t align)
{
    return (x + align - 1) / align * align;
}

static bool
has_tag(const char *tags, const char *tag)
{
    size_t n = strlen(tag);

    for (const char *p = tags; p && *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && !strncmp(p, tag, n)) {
            return true;
        }
        p += len + (p[len] == ',');
    }
    return false;
}

/* ---- the real backend: lvm2 commands ---- */

/* Runs an lvm2 command; its output (may be NULL) in *ret_out. */
static int
lvm_cmd(const char *const *argv, char **ret_out, char **ret_err)
{
    char *out = NULL;
    int rc = sm_run(argv, &out, ret_err);

    if (ret_out && !rc) {
        *ret_out = out ? out : xstrdup("");
        out = NULL;
    }
    free(out);
    return rc;
}

static char *
lv_ref(const struct vg *vg, const char *name)
{
    return xasprintf("%s/%s", vg->name, name);
}

static char *
size_arg(uint64_t size)
{
    return xasprintf("%" PRIu64 "b", size);
}

/* Strips the blanks lvm2 pads its reports with. */
static char *
trim(char *s)
{
    char *end;

    while (*s == ' ' || *s == '\t') {
        s++;
    }
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n'
                       || end[-1] == '\r')) {
        *--end = 0;
    }
    return s;
}

static int
real_device_vg(struct vg *vg, char **ret_vg_name, char **ret_err)
{
    const char *argv[] = { "pvs", "--noheadings", "-o", "vg_name",
                           vg->device, NULL };
    char *out = NULL;
    int rc = lvm_cmd(argv, &out, ret_err);

    if (rc) {
        /* Not a physical volume at all: no volume group either. */
        free(*ret_err);
        *ret_err = NULL;
        *ret_vg_name = NULL;
        return 0;
    }
    *ret_vg_name = *trim(out) ? xstrdup(trim(out)) : NULL;
    free(out);
    return 0;
}

static int
real_vg_create(struct vg *vg, const char *tag, bool force, char **ret_err)
{
    const char *pv[] = { "pvcreate", "-y", force ? "-ff" : "-f", vg->device,
                         NULL };
    const char *vgc[] = { "vgcreate", "-s", "4m", "--addtag", tag, vg->name,
                          vg->device, NULL };
    char *old = NULL;
    int rc = 0;

    /* A forced create replaces the group the device holds: removed first,
     * so that lvm2 is not left with a group missing its volume. */
    if (force && !real_device_vg(vg, &old, NULL) && old) {
        const char *vgr[] = { "vgremove", "-f", old, NULL };
        rc = lvm_cmd(vgr, NULL, ret_err);
    }
    free(old);
    if (!rc) {
        rc = lvm_cmd(pv, NULL, ret_err);
    }
    return rc ? rc : lvm_cmd(vgc, NULL, ret_err);
}

static int
real_vg_remove(struct vg *vg, char **ret_err)
{
    const char *vgr[] = { "vgremove", "-f", vg->name, NULL };
    const char *pvr[] = { "pvremove", "-y", "-ff", vg->device, NULL };
    int rc = lvm_cmd(vgr, NULL, ret_err);

    return rc ? rc : lvm_cmd(pvr, NULL, ret_err);
}

static int
real_vg_stat(struct vg *vg, uint64_t *ret_size, uint64_t *ret_free,
             char **ret_tags, char **ret_err)
{
    const char *argv[] = { "vgs", "--noheadings", "--units", "b",
                           "--nosuffix", "--separator", ";", "-o",
                           "vg_size,vg_free,vg_tags", vg->name, NULL };
    char *out = NULL, tags[256] = "";
    unsigned long long size, free_;
    int rc = lvm_cmd(argv, &out, ret_err);

    if (rc) {
        return rc == -EIO ? -ENOENT : rc;
    }
    if (sscanf(trim(out), "%llu;%llu;%255s", &size, &free_, tags) < 2) {
        rc = sm_fail(ret_err, -EIO, "vgs: cannot parse \"%s\"", out);
        goto out;
    }
    *ret_size = size;
    *ret_free = free_;
    if (ret_tags) {
        *ret_tags = xstrdup(tags);
    }
out:
    free(out);
    return rc;
}

static int
real_lv_list(struct vg *vg, struct lv **ret_lvs, size_t *ret_n,
             char **ret_err)
{
    const char *argv[] = { "lvs", "--noheadings", "--units", "b",
                           "--nosuffix", "--separator", ";", "-o",
                           "lv_name,lv_size,lv_tags", vg->name, NULL };
    struct lv *lvs = NULL;
    size_t n = 0;
    char *out = NULL, *save = NULL;
    int rc = lvm_cmd(argv, &out, ret_err);

    if (rc) {
        return rc;
    }
    for (char *line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *f[3] = { NULL, NULL, NULL }, *s = trim(line);
        int k = 0;

        if (!*s) {
            continue;
        }
        for (char *p = s; k < 3 && p; k++) {
            f[k] = p;
            p = strchr(p, ';');
            if (p) {
                *p++ = 0;
            }
        }
        if (!f[1]) {
            continue;
        }
        lvs = xrealloc(lvs, (n + 1) * sizeof *lvs);
        lvs[n].name = xstrdup(trim(f[0]));
        lvs[n].size = strtoull(f[1], NULL, 10);
        lvs[n].tags = xstrdup(f[2] ? trim(f[2]) : "");
        n++;
    }
    free(out);
    *ret_lvs = lvs;
    *ret_n = n;
    return 0;
}

static int
real_lv_create(struct vg *vg, const char *name, uint64_t size,
               const char *tag, char **ret_err)
{
    /* Inactive and unzeroed: the image is written through an activation
     * later, and lvm2 can only zero an active volume. */
    char *sz = size_arg(size);
    const char *argv[] = { "lvcreate", "-y", "-an", "-Zn", "-n", name, "-L",
                           sz, vg->name, tag ? "--addtag" : NULL, tag,
                           NULL };
    int rc = lvm_cmd(argv, NULL, ret_err);

    free(sz);
    return rc;
}

static int
real_lv_remove(struct vg *vg, const char *name, char **ret_err)
{
    char *ref = lv_ref(vg, name);
    const char *argv[] = { "lvremove", "-f", ref, NULL };
    int rc = lvm_cmd(argv, NULL, ret_err);

    free(ref);
    return rc;
}

static int
real_lv_resize(struct vg *vg, const char *name, uint64_t size,
               char **ret_err)
{
    char *ref = lv_ref(vg, name), *sz = size_arg(size);
    const char *argv[] = { "lvresize", "-f", "-L", sz, ref, NULL };
    int rc = lvm_cmd(argv, NULL, ret_err);

    free(ref);
    free(sz);
    return rc;
}

static int
real_lv_rename(struct vg *vg, const char *from, const char *to,
               char **ret_err)
{
    const char *argv[] = { "lvrename", vg->name, from, to, NULL };

    return lvm_cmd(argv, NULL, ret_err);
}

static int
real_lv_tag(struct vg *vg, const char *name, const char *tag, bool add,
            char **ret_err)
{
    char *ref = lv_ref(vg, name);
    const char *argv[] = { "lvchange", add ? "--addtag" : "--deltag", tag,
                           ref, NULL };
    int rc = lvm_cmd(argv, NULL, ret_err);

    free(ref);
    return rc;
}

static int
real_lv_activate(struct vg *vg, const char *name, char **ret_path,
                 char **ret_err)
{
    char *ref = lv_ref(vg, name);
    const char *argv[] = { "lvchange", "-ay", ref, NULL };
    int rc = lvm_cmd(argv, NULL, ret_err);

    free(ref);
    if (!rc) {
        *ret_path = xasprintf("/dev/%s/%s", vg->name, name);
    }
    return rc;
}

static int
real_lv_deactivate(struct vg *vg, const char *name, char **ret_err)
{
    char *ref = lv_ref(vg, name);
    const char *argv[] = { "lvchange", "-an", ref, NULL };
    int rc = lvm_cmd(argv, NULL, ret_err);

    free(ref);
    return rc;
}

static const struct lvm_backend real_backend = {
    .name = "lvm",
    .device_vg = real_device_vg,
    .vg_create = real_vg_create,
    .vg_remove = real_vg_remove,
    .vg_stat = real_vg_stat,
    .lv_list = real_lv_list,
    .lv_create = real_lv_create,
    .lv_remove = real_lv_remove,
    .lv_resize = real_lv_resize,
    .lv_rename = real_lv_rename,
    .lv_tag = real_lv_tag,
    .lv_activate = real_lv_activate,
    .lv_deactivate = real_lv_deactivate,
};

/* ---- the simulator: a volume group is a directory ----
 *
 * DEVICE/VG_XenStorage-<uuid>/ holds one file per volume, of exactly the
 * volume's size (sparse), and ".meta": the capacity, the extent size and
 * the tags ("capacity N", "extent N", "tag NAME TAG"; NAME "-" for the
 * VG).  Creating a volume writes ".new.NAME" and renames it, so a killed
 * process never leaves a volume of the wrong size. */

struct sim_meta {
    uint64_t capacity;
    char **tag_lv, **tag;           /* parallel arrays */
    size_t n_tags;
};

static void
sim_meta_clear(struct sim_meta *m)
{
    for (size_t i = 0; i < m->n_tags; i++) {
        free(m->tag_lv[i]);
        free(m->tag[i]);
    }
    free(m->tag_lv);
    free(m->tag);
    memset(m, 0, sizeof *m);
}

static void
sim_meta_add(struct sim_meta *m, const char *lv, const char *tag)
{
    m->tag_lv = xrealloc(m->tag_lv, (m->n_tags + 1) * sizeof *m->tag_lv);
    m->tag = xrealloc(m->tag, (m->n_tags + 1) * sizeof *m->tag);
    m->tag_lv[m->n_tags] = xstrdup(lv);
    m->tag[m->n_tags] = xstrdup(tag);
    m->n_tags++;
}

static int
sim_meta_read(struct vg *vg, struct sim_meta *m, char **ret_err)
{
    char *path = xasprintf("%s/.meta", vg->dir), line[512];
    FILE *f = fopen(path, "r");
    int rc = 0;

    memset(m, 0, sizeof *m);
    if (!f) {
        rc = sm_fail(ret_err, errno == ENOENT ? -ENOENT : -errno,
                     "%s: %s", path, strerror(errno));
        goto out;
    }
    while (fgets(line, sizeof line, f)) {
        char a[256], b[256];
        unsigned long long n;

        if (sscanf(line, "capacity %llu", &n) == 1) {
            m->capacity = n;
        } else if (sscanf(line, "tag %255s %255s", a, b) == 2) {
            sim_meta_add(m, a, b);
        }
    }
    fclose(f);
out:
    free(path);
    return rc;
}

/* Rewrites .meta through a temporary file and a rename: atomic against a
 * killed process, which is the crash the simulator stands for (it does
 * not pretend to survive power loss, so it does not sync). */
static int
sim_meta_write(struct vg *vg, const struct sim_meta *m, char **ret_err)
{
    char *path = xasprintf("%s/.meta", vg->dir);
    char *tmp = xasprintf("%s/.meta.tmp", vg->dir);
    FILE *f = fopen(tmp, "w");
    int rc = 0;

    if (!f) {
        rc = sm_fail(ret_err, -errno, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    fprintf(f, "capacity %" PRIu64 "\nextent %" PRIu64 "\n", m->capacity,
            LVM_EXTENT);
    for (size_t i = 0; i < m->n_tags; i++) {
        fprintf(f, "tag %s %s\n", m->tag_lv[i], m->tag[i]);
    }
    if (fflush(f)) {
        rc = sm_fail(ret_err, -errno, "%s: %s", tmp, strerror(errno));
    }
    if (fclose(f) && !rc) {
        rc = sm_fail(ret_err, -errno, "%s: %s", tmp, strerror(errno));
    }
    if (!rc && rename(tmp, path)) {
        rc = sm_fail(ret_err, -errno, "%s: %s", path, strerror(errno));
    }
out:
    free(path);
    free(tmp);
    return rc;
}

static char *
sim_lv_path(const struct vg *vg, const char *name)
{
    return xasprintf("%s/%s", vg->dir, name);
}

static bool
sim_lv_name_ok(const char *name)
{
    return *name && *name != '.' && !strchr(name, '/')
           && strlen(name) < 128;
}

static int
sim_device_vg(struct vg *vg, char **ret_vg_name, char **ret_err)
{
    DIR *d = opendir(vg->device);
    struct dirent *e;

    (void) ret_err;
    *ret_vg_name = NULL;
    if (!d) {
        return 0;
    }
    while ((e = readdir(d))) {
        if (str_starts_with(e->d_name, VG_PREFIX)) {
            *ret_vg_name = xstrdup(e->d_name);
            break;
        }
    }
    closedir(d);
    return 0;
}

static int
sim_vg_create(struct vg *vg, const char *tag, bool force, char **ret_err)
{
    struct sim_meta m;
    char *old = NULL;
    int rc;

    if (mkdir(vg->device, 0755) && errno != EEXIST) {
        return sm_fail(ret_err, -errno, "%s: %s", vg->device, strerror(errno));
    }
    /* "pvcreate -ff": whatever group the device held is gone. */
    sim_device_vg(vg, &old, NULL);
    if (old && force) {
        char *cmd_dir = xasprintf("%s/%s", vg->device, old);
        DIR *d = opendir(cmd_dir);
        struct dirent *e;

        while (d && (e = readdir(d))) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                char *p = xasprintf("%s/%s", cmd_dir, e->d_name);
                unlink(p);
                free(p);
            }
        }
        if (d) {
            closedir(d);
        }
        rmdir(cmd_dir);
        free(cmd_dir);
    }
    free(old);
    if (mkdir(vg->dir, 0755)) {
        return sm_fail(ret_err, errno == EEXIST ? -EEXIST : -errno, "%s: %s",
                       vg->dir, strerror(errno));
    }
    memset(&m, 0, sizeof m);
    m.capacity = vg->sim_capacity / LVM_EXTENT * LVM_EXTENT;
    sim_meta_add(&m, "-", tag);
    rc = sim_meta_write(vg, &m, ret_err);
    sim_meta_clear(&m);
    return rc;
}

static int
sim_vg_remove(struct vg *vg, char **ret_err)
{
    DIR *d = opendir(vg->dir);
    struct dirent *e;

    if (!d) {
        return sm_fail(ret_err, -errno, "%s: %s", vg->dir, strerror(errno));
    }
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            char *p = sim_lv_path(vg, e->d_name);
            unlink(p);
            free(p);
        }
    }
    closedir(d);
    if (rmdir(vg->dir)) {
        return sm_fail(ret_err, -errno, "%s: %s", vg->dir, strerror(errno));
    }
    return 0;
}

static int
sim_lv_list(struct vg *vg, struct lv **ret_lvs, size_t *ret_n,
            char **ret_err)
{
    struct sim_meta m;
    struct lv *lvs = NULL;
    size_t n = 0;
    DIR *d;
    struct dirent *e;
    int rc;

    rc = sim_meta_read(vg, &m, ret_err);
    if (rc) {
        return rc;
    }
    d = opendir(vg->dir);
    if (!d) {
        rc = sm_fail(ret_err, -errno, "%s: %s", vg->dir, strerror(errno));
        goto out;
    }
    while ((e = readdir(d))) {
        struct ds tags = DS_EMPTY;
        struct stat st;
        char *p;

        if (e->d_name[0] == '.') {
            continue;
        }
        p = sim_lv_path(vg, e->d_name);
        if (stat(p, &st) || !S_ISREG(st.st_mode)) {
            free(p);
            continue;
        }
        free(p);
        for (size_t i = 0; i < m.n_tags; i++) {
            if (!strcmp(m.tag_lv[i], e->d_name)) {
                ds_put_fmt(&tags, "%s%s", tags.len ? "," : "", m.tag[i]);
            }
        }
        lvs = xrealloc(lvs, (n + 1) * sizeof *lvs);
        lvs[n].name = xstrdup(e->d_name);
        lvs[n].size = st.st_size;
        lvs[n].tags = xstrdup(ds_cstr(&tags));
        ds_destroy(&tags);
        n++;
    }
    closedir(d);
    *ret_lvs = lvs;
    *ret_n = n;
    lvs = NULL;
out:
    lvs_free(lvs, n);
    sim_meta_clear(&m);
    return rc;
}

/* Bytes in use: every volume rounded up to whole extents. */
static int
sim_used(struct vg *vg, uint64_t *ret_used, char **ret_err)
{
    struct lv *lvs = NULL;
    size_t n = 0;
    uint64_t used = 0;
    int rc = sim_lv_list(vg, &lvs, &n, ret_err);

    for (size_t i = 0; !rc && i < n; i++) {
        used += round_up(lvs[i].size, LVM_EXTENT);
    }
    if (!rc) {
        *ret_used = used;
    }
    lvs_free(lvs, n);
    return rc;
}

static int
sim_vg_stat(struct vg *vg, uint64_t *ret_size, uint64_t *ret_free,
            char **ret_tags, char **ret_err)
{
    struct sim_meta m;
    uint64_t used = 0;
    int rc = sim_meta_read(vg, &m, ret_err);

    if (!rc) {
        rc = sim_used(vg, &used, ret_err);
    }
    if (!rc) {
        *ret_size = m.capacity;
        *ret_free = used < m.capacity ? m.capacity - used : 0;
        if (ret_tags) {
            struct ds tags = DS_EMPTY;
            for (size_t i = 0; i < m.n_tags; i++) {
                if (!strcmp(m.tag_lv[i], "-")) {
                    ds_put_fmt(&tags, "%s%s", tags.len ? "," : "",
                               m.tag[i]);
                }
            }
            ds_cstr(&tags);
            *ret_tags = ds_steal(&tags);
        }
    }
    sim_meta_clear(&m);
    return rc;
}

/* Fails like lvcreate/lvextend when the group lacks the extents. */
static int
sim_check_room(struct vg *vg, uint64_t more, char **ret_err)
{
    uint64_t size, free_;
    int rc = sim_vg_stat(vg, &size, &free_, NULL, ret_err);

    if (!rc && more > free_) {
        rc = sm_fail(ret_err, -ENOSPC, "Volume group \"%s\" has insufficient "
                     "free space (%" PRIu64 " extents): %" PRIu64 " required.",
                     vg->name, free_ / LVM_EXTENT, more / LVM_EXTENT);
    }
    return rc;
}

static int
sim_set_tags(struct vg *vg, const char *name, const char *tag, bool add,
             const char *rename_to, char **ret_err)
{
    struct sim_meta m, n;
    int rc = sim_meta_read(vg, &m, ret_err);

    if (rc) {
        return rc;
    }
    memset(&n, 0, sizeof n);
    n.capacity = m.capacity;
    for (size_t i = 0; i < m.n_tags; i++) {
        bool same = !strcmp(m.tag_lv[i], name);
        if (same && rename_to) {
            sim_meta_add(&n, rename_to, m.tag[i]);
        } else if (!same || (tag && strcmp(m.tag[i], tag))) {
            if (!rename_to || strcmp(m.tag_lv[i], rename_to)) {
                sim_meta_add(&n, m.tag_lv[i], m.tag[i]);
            }
        }
    }
    if (add && tag) {
        sim_meta_add(&n, name, tag);
    }
    rc = sim_meta_write(vg, &n, ret_err);
    sim_meta_clear(&m);
    sim_meta_clear(&n);
    return rc;
}

/* Drops every tag of volume name, then gives it tag (if not NULL). */
static int
sim_replace_tags(struct vg *vg, const char *name, const char *tag,
                 char **ret_err)
{
    struct sim_meta m, n;
    int rc = sim_meta_read(vg, &m, ret_err);

    if (rc) {
        return rc;
    }
    memset(&n, 0, sizeof n);
    n.capacity = m.capacity;
    for (size_t i = 0; i < m.n_tags; i++) {
        if (strcmp(m.tag_lv[i], name)) {
            sim_meta_add(&n, m.tag_lv[i], m.tag[i]);
        }
    }
    if (tag) {
        sim_meta_add(&n, name, tag);
    }
    rc = sim_meta_write(vg, &n, ret_err);
    sim_meta_clear(&m);
    sim_meta_clear(&n);
    return rc;
}

static int
sim_lv_create(struct vg *vg, const char *name, uint64_t size,
              const char *tag, char **ret_err)
{
    char *path = sim_lv_path(vg, name);
    char *tmp = xasprintf("%s/.new.%s", vg->dir, name);
    int fd = -1, rc;

    size = round_up(size, LVM_EXTENT);
    if (!sim_lv_name_ok(name)) {
        rc = sm_fail(ret_err, -EINVAL, "bad volume name %s", name);
        goto out;
    }
    if (!access(path, F_OK)) {
        rc = sm_fail(ret_err, -EEXIST, "Logical volume \"%s\" already exists "
                     "in volume group \"%s\"", name, vg->name);
        goto out;
    }
    rc = sim_check_room(vg, size, ret_err);
    if (rc) {
        goto out;
    }
    /* Tags first: tags of a volume that does not exist are ignored, and
     * replaced when it is created. */
    rc = sim_replace_tags(vg, name, tag, ret_err);
    if (rc) {
        goto out;
    }
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, size) || rename(tmp, path)) {
        rc = sm_fail(ret_err, -errno, "%s: %s", path, strerror(errno));
        unlink(tmp);
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    free(path);
    free(tmp);
    return rc;
}

static int
sim_lv_remove(struct vg *vg, const char *name, char **ret_err)
{
    char *path = sim_lv_path(vg, name);
    int rc = 0;

    if (unlink(path)) {
        rc = sm_fail(ret_err, -errno, "%s: %s", path, strerror(errno));
    }
    free(path);
    return rc;
}

static int
sim_lv_resize(struct vg *vg, const char *name, uint64_t size,
              char **ret_err)
{
    char *path = sim_lv_path(vg, name);
    struct stat st;
    int rc = 0;

    size = round_up(size, LVM_EXTENT);
    if (stat(path, &st)) {
        rc = sm_fail(ret_err, -errno, "%s: %s", path, strerror(errno));
        goto out;
    }
    if ((uint64_t) st.st_size < size) {
        rc = sim_check_room(vg, size - round_up(st.st_size, LVM_EXTENT),
                            ret_err);
    }
    if (!rc && truncate(path, size)) {
        rc = sm_fail(ret_err, -errno, "%s: %s", path, strerror(errno));
    }
out:
    free(path);
    return rc;
}

static int
sim_lv_rename(struct vg *vg, const char *from, const char *to,
              char **ret_err)
{
    char *a = sim_lv_path(vg, from), *b = sim_lv_path(vg, to);
    int rc = 0;

    if (!sim_lv_name_ok(to)) {
        rc = sm_fail(ret_err, -EINVAL, "bad volume name %s", to);
    } else if (!access(b, F_OK)) {
        rc = sm_fail(ret_err, -EEXIST, "Logical volume \"%s\" already exists",
                     to);
    } else if (access(a, F_OK)) {
        rc = sm_fail(ret_err, -ENOENT, "Logical volume \"%s\" not found",
                     from);
    } else {
        /* Tags follow the volume; moving them first is harmless, since
         * tags of a missing volume are ignored. */
        rc = sim_set_tags(vg, from, NULL, false, to, ret_err);
        if (!rc && rename(a, b)) {
            rc = sm_fail(ret_err, -errno, "%s: %s", b, strerror(errno));
        }
    }
    free(a);
    free(b);
    return rc;
}

static int
sim_lv_tag(struct vg *vg, const char *name, const char *tag, bool add,
           char **ret_err)
{
    return sim_set_tags(vg, name, tag, add, NULL, ret_err);
}

static int
sim_lv_activate(struct vg *vg, const char *name, char **ret_path,
                char **ret_err)
{
    char *path = sim_lv_path(vg, name);

    if (access(path, F_OK)) {
        int rc = sm_fail(ret_err, -ENOENT, "Logical volume %s/%s not found",
                         vg->name, name);
        free(path);
        return rc;
    }
    *ret_path = path;
    return 0;
}

static int
sim_lv_deactivate(struct vg *vg, const char *name, char **ret_err)
{
    (void) vg;
    (void) name;
    (void) ret_err;
    return 0;
}

static const struct lvm_backend sim_backend = {
    .name = "sim",
    .device_vg = sim_device_vg,
    .vg_create = sim_vg_create,
    .vg_remove = sim_vg_remove,
    .vg_stat = sim_vg_stat,
    .lv_list = sim_lv_list,
    .lv_create = sim_lv_create,
    .lv_remove = sim_lv_remove,
    .lv_resize = sim_lv_resize,
    .lv_rename = sim_lv_rename,
    .lv_tag = sim_lv_tag,
    .lv_activate = sim_lv_activate,
    .lv_deactivate = sim_lv_deactivate,
};

/* ---- volume groups ---- */

static int
vg_init(struct vg *vg, const char *sr_uuid, const struct sm_map *dc,
        char **ret_err)
{
    const char *device = sm_map_get(dc, "device");
    const char *size = sm_map_get(dc, "size");

    memset(vg, 0, sizeof *vg);
    pthread_mutex_init(&vg->lock, NULL);
    if (!device || !*device) {
        return sm_fail(ret_err, -EINVAL, "device_config has no \"device\"");
    }
    if (!uuid_is_valid(sr_uuid)) {
        return sm_fail(ret_err, -EINVAL, "bad SR uuid %s", sr_uuid);
    }
    vg->name = xasprintf(VG_PREFIX "%s", sr_uuid);
    if (str_starts_with(device, "sim:")) {
        vg->be = &sim_backend;
        vg->device = xstrdup(device + 4);
        vg->dir = xasprintf("%s/%s", vg->device, vg->name);
        vg->sim_capacity = SIM_DEFAULT_CAPACITY;
        if (size) {
            char *end;
            unsigned long long n = strtoull(size, &end, 10);
            if (*end || n < 4 * LVM_EXTENT) {
                return sm_fail(ret_err, -EINVAL, "bad size %s", size);
            }
            vg->sim_capacity = n;
        }
    } else {
        vg->be = &real_backend;
        vg->device = xstrdup(device);
    }
    return 0;
}

static void
vg_destroy(struct vg *vg)
{
    free(vg->name);
    free(vg->device);
    free(vg->dir);
    pthread_mutex_destroy(&vg->lock);
}

/* ---- the SR ---- */

struct attached {
    char uuid[37];
    bool read_write;
};

struct sm_sr {
    char uuid[37];
    struct vg vg;
    bool thin_default;              /* the SR's allocation */
    pthread_mutex_t lock;           /* the attached set */
    struct attached *att;
    size_t n_att;
};

static char *
vhd_lv(const char *uuid)
{
    return xasprintf(LV_VHD "%s", uuid);
}

/* The volume group's calls, serialized: the simulator rewrites one
 * metadata file, and lvm2 would serialize them anyway. */
#define VG_CALL(sr, call, ...)                                           \
    ({                                                                   \
        pthread_mutex_lock(&(sr)->vg.lock);                              \
        int rc_ = (sr)->vg.be->call(&(sr)->vg, __VA_ARGS__);             \
        pthread_mutex_unlock(&(sr)->vg.lock);                            \
        rc_;                                                             \
    })

static int
lv_find(struct sm_sr *sr, const char *name, struct lv *ret_lv,
        char **ret_err)
{
    struct lv *lvs = NULL;
    size_t n = 0;
    int rc = VG_CALL(sr, lv_list, &lvs, &n, ret_err);

    if (rc) {
        return rc;
    }
    rc = -ENOENT;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(lvs[i].name, name)) {
            if (ret_lv) {
                ret_lv->name = lvs[i].name;
                ret_lv->size = lvs[i].size;
                ret_lv->tags = lvs[i].tags;
                lvs[i].name = lvs[i].tags = NULL;
            }
            rc = 0;
            break;
        }
    }
    lvs_free(lvs, n);
    return rc;
}

static bool
lv_exists(struct sm_sr *sr, const char *name)
{
    return !lv_find(sr, name, NULL, NULL);
}

static int
vg_free(struct sm_sr *sr, uint64_t *ret_free, char **ret_err)
{
    uint64_t size;

    return VG_CALL(sr, vg_stat, &size, ret_free, NULL, ret_err);
}

/* -ENOSPC unless the group has `more` bytes (whole extents) free. */
static int
need_room(struct sm_sr *sr, uint64_t more, char **ret_err)
{
    uint64_t free_;
    int rc = vg_free(sr, &free_, ret_err);

    if (!rc && round_up(more, LVM_EXTENT) > free_) {
        rc = sm_fail(ret_err, -ENOSPC, "SR %s needs %" PRIu64 " bytes, has %"
                     PRIu64 " free", sr->uuid, round_up(more, LVM_EXTENT),
                     free_);
    }
    return rc;
}

static int
lv_path(struct sm_sr *sr, const char *name, char **ret_path, char **ret_err)
{
    return VG_CALL(sr, lv_activate, name, ret_path, ret_err);
}

static int
lv_create(struct sm_sr *sr, const char *name, uint64_t size,
          const char *tag, char **ret_err)
{
    int rc = need_room(sr, size, ret_err);

    return rc ? rc : VG_CALL(sr, lv_create, name,
                             round_up(size, LVM_EXTENT), tag, ret_err);
}

static int
lv_remove(struct sm_sr *sr, const char *name, char **ret_err)
{
    /* An active volume cannot be removed; inactive ones ignore this. */
    VG_CALL(sr, lv_deactivate, name, NULL);
    return VG_CALL(sr, lv_remove, name, ret_err);
}

static int
lv_rename(struct sm_sr *sr, const char *from, const char *to,
          char **ret_err)
{
    return VG_CALL(sr, lv_rename, from, to, ret_err);
}

/* Removes volume name if it exists: recovery, which may run again after a
 * crash, must not fail on what an earlier run already removed. */
static int
lv_remove_if_exists(struct sm_sr *sr, const char *name, char **ret_err)
{
    return lv_exists(sr, name) ? lv_remove(sr, name, ret_err) : 0;
}

/* Gives volume from the name to, removing whatever had that name. */
static int
lv_replace(struct sm_sr *sr, const char *from, const char *to,
           char **ret_err)
{
    int rc = lv_remove_if_exists(sr, to, ret_err);

    return rc ? rc : lv_rename(sr, from, to, ret_err);
}

static void
crash_point(const char *step)
{
    char name[64];

    snprintf(name, sizeof name, "lvm-%s", step);
    sm_crash_point(name);
}

/* A journal volume: one extent whose name records an operation. */
static int
journal_add(struct sm_sr *sr, const char *name, char **ret_err)
{
    return lv_create(sr, name, LVM_EXTENT, NULL, ret_err);
}

static bool
is_attached(struct sm_sr *sr, const char *uuid, bool *ret_rw)
{
    bool found = false;

    pthread_mutex_lock(&sr->lock);
    for (size_t i = 0; i < sr->n_att; i++) {
        if (!strcmp(sr->att[i].uuid, uuid)) {
            found = true;
            if (ret_rw) {
                *ret_rw = sr->att[i].read_write;
            }
        }
    }
    pthread_mutex_unlock(&sr->lock);
    return found;
}

/* ---- images in volumes: sizes, inflate, deflate ---- */

/* BAT entries an image of virtual_size reserves. */
static uint64_t
bat_entries_for(uint64_t virtual_size)
{
    uint64_t reserve = MAX(virtual_size, LVHD_RESERVE);

    return (reserve + VHD_DEFAULT_BLOCK_SIZE - 1) / VHD_DEFAULT_BLOCK_SIZE;
}

/* Bytes of metadata before the first block of a new image: footer copy,
 * header, locators and the reserved BAT. */
static uint64_t
new_image_data_end(uint64_t virtual_size)
{
    return 512 + 1024 + 3 * 2048
           + round_up(bat_entries_for(virtual_size) * 4, 512);
}

static uint64_t
block_span(uint32_t block_size)
{
    return round_up((block_size / 512 + 7) / 8, 512) + block_size;
}

/* The volume a thin image needs when deflated, and the one that lets it
 * hold every block of its virtual size (inflated), from where its data
 * ends and how many blocks it has. */
static uint64_t
deflated_size(uint64_t data_end)
{
    return round_up(data_end + 512, LVM_EXTENT);
}

static uint64_t
inflated_size(uint64_t data_end, uint64_t virtual_size,
              uint32_t allocated, uint32_t block_size)
{
    uint64_t blocks = (virtual_size + block_size - 1) / block_size;
    uint64_t missing = blocks > allocated ? blocks - allocated : 0;

    return round_up(data_end + missing * block_span(block_size)
                    + LOCATOR_ROOM + 512, LVM_EXTENT);
}

struct image {
    char uuid[37];                  /* from the volume's name */
    char *lv;                       /* VHD-<uuid> */
    uint64_t lv_size;
    bool thick;
    bool hidden;
    uint64_t virtual_size;
    uint64_t data_end;
    uint32_t allocated, block_size;
    uint32_t max_blocks;            /* BAT entries */
    char parent[37];                /* the parent volume's uuid, or "" */
    int parent_index;               /* in the catalog, or -1 */
    size_t n_children;
};

static void
image_clear(struct image *img)
{
    if (img) {
        free(img->lv);
        img->lv = NULL;
    }
}

/* The uuid in a parent's name "VHD-<uuid>" (what the header records: the
 * base name of the parent's path). */
static void
parent_uuid_from(const struct vhd_info *info, char *ret_uuid)
{
    const char *name = info->parent_name;

    ret_uuid[0] = 0;
    if (name && str_starts_with(name, LV_VHD)
        && uuid_is_valid(name + strlen(LV_VHD))) {
        snprintf(ret_uuid, 37, "%s", name + strlen(LV_VHD));
    } else if (info->type == VHD_TYPE_DIFF) {
        snprintf(ret_uuid, 37, "%s", info->parent_uuid);
    }
}

/* Opens the image in volume name (activating it) with vhd_open_ex()
 * flags. */
static int
image_open(struct sm_sr *sr, const char *name, unsigned flags,
           struct vhd **ret_v, char **ret_err)
{
    char *path = NULL;
    int rc = lv_path(sr, name, &path, ret_err);

    if (!rc) {
        rc = vhd_open_ex(path, flags, ret_v, ret_err);
    }
    free(path);
    return rc;
}

/* Reads the image in volume name (activating it). */
static int
image_read(struct sm_sr *sr, const char *name, struct image *ret,
           char **ret_err)
{
    struct image img;
    struct vhd_info info;
    struct vhd *v = NULL;
    struct lv lv = { NULL, 0, NULL };
    int rc;

    memset(&img, 0, sizeof img);
    memset(&info, 0, sizeof info);
    rc = lv_find(sr, name, &lv, ret_err);
    if (rc == -ENOENT) {
        rc = sm_fail(ret_err, -ENOENT, "no volume %s in SR %s", name,
                     sr->uuid);
    }
    if (rc) {
        goto out;
    }
    rc = image_open(sr, name, VHD_OPEN_READ_ONLY | VHD_OPEN_CONTAINER, &v,
                    ret_err);
    if (rc) {
        goto out;
    }
    vhd_get_info(v, &info);
    if (str_starts_with(name, LV_VHD)) {
        snprintf(img.uuid, sizeof img.uuid, "%s", name + strlen(LV_VHD));
    }
    img.lv = xstrdup(name);
    img.lv_size = lv.size;
    img.thick = has_tag(lv.tags, TAG_THICK)
                || (!has_tag(lv.tags, TAG_THIN) && !sr->thin_default);
    img.hidden = info.hidden;
    img.virtual_size = info.virtual_size;
    img.data_end = info.data_end;
    img.allocated = info.allocated_blocks;
    img.max_blocks = info.max_blocks;
    img.block_size = info.block_size ? info.block_size
                                     : VHD_DEFAULT_BLOCK_SIZE;
    parent_uuid_from(&info, img.parent);
    img.parent_index = -1;
    *ret = img;
    memset(&img, 0, sizeof img);
out:
    vhd_info_clear(&info);
    vhd_close(v);
    image_clear(&img);
    lv_clear(&lv);
    return rc;
}

/* Grows volume name to size bytes and moves the image's footer to the new
 * end.  The journal records the old size: a crash before the footer moved
 * leaves an end without a footer, and recovery shrinks the volume back to
 * where the old footer still is. */
static int
inflate(struct sm_sr *sr, const char *name, uint64_t size, char **ret_err)
{
    struct lv lv = { NULL, 0, NULL };
    struct vhd *v = NULL;
    char *journal = NULL;
    int rc;

    size = round_up(size, LVM_EXTENT);
    rc = lv_find(sr, name, &lv, ret_err);
    if (rc || lv.size >= size) {
        goto out;
    }
    rc = need_room(sr, size - lv.size + LVM_EXTENT, ret_err);
    if (rc) {
        goto out;
    }
    /* Opened before the volume grows, while its end is the footer. */
    rc = image_open(sr, name, VHD_OPEN_CONTAINER, &v, ret_err);
    if (rc) {
        goto out;
    }
    journal = xasprintf(J_INFLATE "%s_%" PRIu64, name + strlen(LV_VHD),
                        lv.size);
    rc = journal_add(sr, journal, ret_err);
    if (rc) {
        goto out;
    }
    crash_point("inflate-journal");
    rc = VG_CALL(sr, lv_resize, name, size, ret_err);
    if (rc) {
        goto out;
    }
    crash_point("inflate-resized");
    rc = vhd_move_footer(v, size, ret_err);
    if (rc) {
        goto out;
    }
    vhd_close(v);
    v = NULL;
    crash_point("inflate-footer");
    rc = lv_remove(sr, journal, ret_err);
out:
    vhd_close(v);
    lv_clear(&lv);
    free(journal);
    return rc;
}

/* Shrinks volume name to its image's data and footer.  The footer is
 * written at the new end first; until the volume shrinks, both ends hold
 * a valid footer, so no journal is needed. */
static int
deflate(struct sm_sr *sr, const char *name, char **ret_err)
{
    struct lv lv = { NULL, 0, NULL };
    struct vhd_info info;
    struct vhd *v = NULL;
    uint64_t size;
    int rc;

    memset(&info, 0, sizeof info);
    rc = lv_find(sr, name, &lv, ret_err);
    if (!rc) {
        rc = image_open(sr, name, VHD_OPEN_CONTAINER, &v, ret_err);
    }
    if (rc) {
        goto out;
    }
    vhd_get_info(v, &info);
    size = deflated_size(info.data_end);
    if (size >= lv.size) {
        goto out;
    }
    rc = vhd_move_footer(v, size, ret_err);
    vhd_close(v);
    v = NULL;
    if (rc) {
        goto out;
    }
    crash_point("deflate-footer");
    rc = VG_CALL(sr, lv_resize, name, size, ret_err);
out:
    vhd_info_clear(&info);
    vhd_close(v);
    lv_clear(&lv);
    return rc;
}

/* Inflates an image to hold every block of its virtual size. */
static int
inflate_full(struct sm_sr *sr, const struct image *img, uint64_t vsize,
             char **ret_err)
{
    return inflate(sr, img->lv, inflated_size(img->data_end,
                                              MAX(vsize, img->virtual_size),
                                              img->allocated,
                                              img->block_size), ret_err);
}

/* Activates the chain under volume name (parents first need to be
 * reachable for vhd_chain_open) and counts it. */
static int
chain_walk(struct sm_sr *sr, const char *name, int *ret_len, char **ret_err)
{
    char *cur = xstrdup(name);
    int len = 0, rc = 0;

    while (cur) {
        struct image img;

        if (++len > VHD_MAX_CHAIN_DEPTH) {
            rc = sm_fail(ret_err, -ELOOP, "chain under %s is too deep", name);
            break;
        }
        rc = image_read(sr, cur, &img, ret_err);
        if (rc) {
            break;
        }
        free(cur);
        cur = img.parent[0] ? vhd_lv(img.parent) : NULL;
        image_clear(&img);
    }
    free(cur);
    if (!rc) {
        *ret_len = len;
    }
    return rc;
}

/* ---- crash recovery ---- */

/* Splits "PREFIX<uuid>_<uuid>..." into n uuids (or a uuid and a number
 * for the last field when last_is_number). */
static bool
journal_fields(const char *name, const char *prefix, char (*uuids)[37],
               int n, uint64_t *ret_number)
{
    const char *p = name + strlen(prefix);

    for (int i = 0; i < n; i++) {
        if (strlen(p) < 36) {
            return false;
        }
        memcpy(uuids[i], p, 36);
        uuids[i][36] = 0;
        if (!uuid_is_valid(uuids[i])) {
            return false;
        }
        p += 36;
        if (i + 1 < n || ret_number) {
            if (*p++ != '_') {
                return false;
            }
        }
    }
    if (ret_number) {
        char *end;
        *ret_number = strtoull(p, &end, 10);
        return !*end;
    }
    return !*p;
}

static int
image_set_hidden(struct sm_sr *sr, const char *name, bool hidden,
                 char **ret_err)
{
    struct vhd *v = NULL;
    int rc = image_open(sr, name, VHD_OPEN_CONTAINER, &v, ret_err);

    if (!rc) {
        rc = vhd_set_hidden(v, hidden);
        if (rc) {
            sm_fail(ret_err, rc, "%s: cannot set the hidden flag: %s", name,
                    strerror(-rc));
        }
    }
    vhd_close(v);
    return rc;
}

/* Undoes or finishes an interrupted snapshot or clone (see
 * snapshot_or_clone()).  Once the base is hidden, both children are
 * whole: finish.  Before, undo: the new children go and the base gets
 * the leaf's name back. */
static int
recover_clone(struct sm_sr *sr, const char *journal, char **ret_err)
{
    char u[3][37];
    char *leaf = NULL, *base = NULL, *child = NULL, *tmp = NULL;
    struct image b;
    int rc = 0;

    memset(&b, 0, sizeof b);
    if (!journal_fields(journal, J_CLONE, u, 3, NULL)) {
        return lv_remove(sr, journal, ret_err);
    }
    leaf = vhd_lv(u[0]);
    base = vhd_lv(u[1]);
    child = vhd_lv(u[2]);
    if (lv_exists(sr, base)) {
        rc = image_read(sr, base, &b, ret_err);
        if (rc) {
            goto out;
        }
        if (b.hidden) {
            rc = deflate(sr, base, ret_err);
        } else {
            tmp = xasprintf(LV_NEW "%s", u[2]);
            rc = lv_remove_if_exists(sr, tmp, ret_err);
            if (!rc) {
                rc = lv_remove_if_exists(sr, child, ret_err);
            }
            if (!rc) {
                rc = lv_replace(sr, base, leaf, ret_err);
            }
        }
    }
    if (!rc) {
        rc = lv_remove(sr, journal, ret_err);
    }
out:
    image_clear(&b);
    free(leaf);
    free(base);
    free(child);
    free(tmp);
    return rc;
}

/* Finishes an interrupted leaf coalesce (see gc_merge_leaf()): the base
 * holds everything the leaf held once the journal exists. */
static int
recover_leaf(struct sm_sr *sr, const char *journal, char **ret_err)
{
    char u[2][37];
    char *leaf = NULL, *base = NULL;
    int rc = 0;

    if (!journal_fields(journal, J_LEAF, u, 2, NULL)) {
        return lv_remove(sr, journal, ret_err);
    }
    leaf = vhd_lv(u[0]);
    base = vhd_lv(u[1]);
    if (lv_exists(sr, base)) {
        rc = lv_replace(sr, base, leaf, ret_err);
    }
    if (!rc && lv_exists(sr, leaf)) {
        rc = image_set_hidden(sr, leaf, false, ret_err);
    }
    if (!rc) {
        rc = lv_remove(sr, journal, ret_err);
    }
    free(leaf);
    free(base);
    return rc;
}

static int
recover_inflate(struct sm_sr *sr, const char *journal, char **ret_err)
{
    char u[1][37];
    uint64_t old_size;
    char *name = NULL;
    struct lv lv = { NULL, 0, NULL };
    int rc = 0;

    if (journal_fields(journal, J_INFLATE, u, 1, &old_size)) {
        name = vhd_lv(u[0]);
        if (!lv_find(sr, name, &lv, NULL) && lv.size > old_size) {
            rc = VG_CALL(sr, lv_resize, name, old_size, ret_err);
        }
    }
    if (!rc) {
        rc = lv_remove(sr, journal, ret_err);
    }
    lv_clear(&lv);
    free(name);
    return rc;
}

static int finish_base_merge(struct sm_sr *, const char *c_uuid,
                             const char *p_uuid, const struct sm_gc_hooks *,
                             char **ret_err);
static int finish_data_destroy(struct sm_sr *, const char *journal,
                               char **ret_err);

/* Finishes or undoes what a crash interrupted: inflates first (they may
 * be part of the others), then clones, leaf coalesces and base merges;
 * volumes of VDIs whose creation never finished go. */
static int
recover(struct sm_sr *sr, char **ret_err)
{
    static const char *const order[] = { J_INFLATE, J_CLONE, J_LEAF,
                                         J_BASE, J_DATA_THIN, J_DATA_THICK,
                                         LV_NEW };
    int rc = 0;

    for (size_t k = 0; !rc && k < ARRAY_SIZE(order); k++) {
        struct lv *lvs = NULL;
        size_t n = 0;

        /* Listed again for each kind: recovering one kind may remove
         * volumes of the next (a clone's half-made NEW- child). */
        rc = VG_CALL(sr, lv_list, &lvs, &n, ret_err);
        for (size_t i = 0; !rc && i < n; i++) {
            const char *name = lvs[i].name;
            if (!str_starts_with(name, order[k])) {
                continue;
            }
            if (k == 0) {
                rc = recover_inflate(sr, name, ret_err);
            } else if (k == 1) {
                rc = recover_clone(sr, name, ret_err);
            } else if (k == 2) {
                rc = recover_leaf(sr, name, ret_err);
            } else if (k == 3) {
                char u[2][37];
                rc = journal_fields(name, J_BASE, u, 2, NULL)
                     ? finish_base_merge(sr, u[0], u[1], NULL, ret_err)
                     : lv_remove(sr, name, ret_err);
            } else if (k == 4 || k == 5) {
                rc = finish_data_destroy(sr, name, ret_err);
            } else {
                rc = lv_remove(sr, name, ret_err);
            }
        }
        lvs_free(lvs, n);
    }
    return rc;
}

/* ---- SR operations ---- */

static bool
allocation_thin(const char *value, bool dflt)
{
    if (value && !strcmp(value, "thin")) {
        return true;
    }
    if (value && !strcmp(value, "thick")) {
        return false;
    }
    return dflt;
}

static int
sr_create(const char *state_dir, const char *sr_uuid,
          const struct sm_map *dc, uint64_t physical_size, char **ret_err)
{
    const char *alloc = sm_map_get(dc, "allocation");
    const char *force = sm_map_get(dc, "force");
    char *old = NULL;
    struct vg vg;
    int rc;

    (void) state_dir;
    (void) physical_size;
    rc = vg_init(&vg, sr_uuid, dc, ret_err);
    if (rc) {
        goto out;
    }
    if (alloc && strcmp(alloc, "thin") && strcmp(alloc, "thick")) {
        rc = sm_fail(ret_err, -EINVAL, "allocation must be thin or thick, "
                     "not %s", alloc);
        goto out;
    }
    rc = vg.be->device_vg(&vg, &old, ret_err);
    if (rc) {
        goto out;
    }
    if (old && !(force && !strcmp(force, "true"))) {
        rc = sm_fail(ret_err, -EEXIST, "%s already holds volume group %s",
                     vg.device, old);
        goto out;
    }
    rc = vg.be->vg_create(&vg, allocation_thin(alloc, false) ? TAG_THIN
                                                             : TAG_THICK,
                          old != NULL, ret_err);
    if (rc) {
        goto out;
    }
    /* XenServer keeps the SR's metadata in MGT; we create it so that the
     * layout matches, and keep the allocation in the group's tags, which
     * lvm2 reads without device-mapper. */
    rc = vg.be->lv_create(&vg, LV_MGT, LVM_EXTENT, NULL, ret_err);
out:
    free(old);
    vg_destroy(&vg);
    return rc;
}

static int
sr_destroy(const char *state_dir, const char *sr_uuid,
           const struct sm_map *dc, char **ret_err)
{
    struct vg vg;
    int rc;

    (void) state_dir;
    rc = vg_init(&vg, sr_uuid, dc, ret_err);
    if (!rc) {
        rc = vg.be->vg_remove(&vg, ret_err);
    }
    vg_destroy(&vg);
    return rc;
}

static void
sr_detach(struct sm_sr *sr)
{
    if (!sr) {
        return;
    }
    vg_destroy(&sr->vg);
    pthread_mutex_destroy(&sr->lock);
    free(sr->att);
    free(sr);
}

static int
sr_attach(const char *state_dir, const char *sr_uuid,
          const struct sm_map *dc, struct sm_sr **ret_sr, char **ret_err)
{
    struct sm_sr *sr = xcalloc(1, sizeof *sr);
    uint64_t size, free_;
    char *tags = NULL, *mgt = NULL;
    int rc;

    (void) state_dir;
    pthread_mutex_init(&sr->lock, NULL);
    rc = vg_init(&sr->vg, sr_uuid, dc, ret_err);
    if (rc) {
        goto out;
    }
    snprintf(sr->uuid, sizeof sr->uuid, "%s", sr_uuid);
    rc = sr->vg.be->vg_stat(&sr->vg, &size, &free_, &tags, ret_err);
    if (rc == -ENOENT) {
        rc = sm_fail(ret_err, -ENOENT, "no volume group %s on %s",
                     sr->vg.name, sr->vg.device);
    }
    if (rc) {
        goto out;
    }
    sr->thin_default = allocation_thin(sm_map_get(dc, "allocation"),
                                       has_tag(tags, TAG_THIN));
    rc = lv_path(sr, LV_MGT, &mgt, ret_err);
    if (!rc) {
        rc = recover(sr, ret_err);
    }
    if (rc) {
        goto out;
    }
    *ret_sr = sr;
    sr = NULL;
out:
    sr_detach(sr);
    free(tags);
    free(mgt);
    return rc;
}

static int
sr_stat(struct sm_sr *sr, struct sm_sr_stat *ret, char **ret_err)
{
    uint64_t size, free_;
    int rc = VG_CALL(sr, vg_stat, &size, &free_, NULL, ret_err);

    if (!rc) {
        ret->physical_size = size;
        ret->physical_utilisation = size - free_;
        ret->free_space = free_;
    }
    return rc;
}

static void
fill_info(const struct image *img, struct sm_vdi_info *ret)
{
    memset(ret, 0, sizeof *ret);
    snprintf(ret->uuid, sizeof ret->uuid, "%s", img->uuid);
    ret->location = xstrdup(img->uuid);
    ret->virtual_size = img->virtual_size;
    /* The volume is what the VDI takes from the group. */
    ret->physical_utilisation = img->lv_size;
    ret->read_only = false;
    ret->format = xstrdup("vhd");
    sm_vdi_info_set_config(ret, "vdi_type", "vhd");
    sm_vdi_info_set_config(ret, "allocation", img->thick ? "thick" : "thin");
    if (img->parent[0]) {
        sm_vdi_info_set_config(ret, "vhd-parent", img->parent);
    }
}

/* The leaf image of VDI location (-ENOENT for bases and unknown names). */
static int
leaf_read(struct sm_sr *sr, const char *location, struct image *ret,
          char **ret_err)
{
    char *name;
    int rc;

    if (!location || !uuid_is_valid(location)) {
        return sm_fail(ret_err, -ENOENT, "no VDI %s in SR %s",
                       location ? location : "(null)", sr->uuid);
    }
    name = vhd_lv(location);
    rc = image_read(sr, name, ret, ret_err);
    free(name);
    if (!rc && ret->hidden) {
        image_clear(ret);
        rc = sm_fail(ret_err, -ENOENT, "%s is a snapshot base, not a VDI",
                     location);
    }
    return rc;
}

static int
sr_vdi_info(struct sm_sr *sr, const char *location,
            struct sm_vdi_info *ret_info, char **ret_err)
{
    struct image img;
    int rc = leaf_read(sr, location, &img, ret_err);

    if (!rc) {
        fill_info(&img, ret_info);
        image_clear(&img);
    }
    return rc;
}

static int
sr_vdi_introduce(struct sm_sr *sr, const char *uuid, const char *location,
                 struct sm_vdi_info *ret_info, char **ret_err)
{
    if (!uuid || !location || strcmp(uuid, location)) {
        return sm_fail(ret_err, -EINVAL, "an LVHD VDI's location is its uuid");
    }
    return sr_vdi_info(sr, location, ret_info, ret_err);
}

static int
sr_scan(struct sm_sr *sr, struct sm_vdi_info **ret_vdis, size_t *ret_n,
        char **ret_err)
{
    struct sm_vdi_info *vdis = NULL;
    struct lv *lvs = NULL;
    size_t n = 0, n_vdis = 0;
    int rc = VG_CALL(sr, lv_list, &lvs, &n, ret_err);

    for (size_t i = 0; !rc && i < n; i++) {
        struct image img;

        if (!str_starts_with(lvs[i].name, LV_VHD)) {
            continue;
        }
        rc = image_read(sr, lvs[i].name, &img, ret_err);
        if (rc) {
            break;
        }
        if (!img.hidden) {
            vdis = xrealloc(vdis, (n_vdis + 1) * sizeof *vdis);
            fill_info(&img, &vdis[n_vdis++]);
        }
        image_clear(&img);
    }
    if (!rc) {
        *ret_vdis = vdis;
        *ret_n = n_vdis;
        vdis = NULL;
        n_vdis = 0;
    }
    for (size_t i = 0; i < n_vdis; i++) {
        sm_vdi_info_clear(&vdis[i]);
    }
    free(vdis);
    lvs_free(lvs, n);
    return rc;
}

/* Creates the image of a new volume name: a dynamic disk of
 * virtual_size, or a child of parent_lv (virtual_size 0).  The volume is
 * made as NEW-<uuid> and renamed once whole, so that a crash never leaves
 * a VHD-<uuid> volume without a valid image (recovery removes NEW-*). */
static int
image_create(struct sm_sr *sr, const char *uuid, uint64_t virtual_size,
             const char *parent_lv, bool thick, bool full, char **ret_err)
{
    struct vhd_create_opts opts;
    char *tmp = xasprintf(LV_NEW "%s", uuid), *name = vhd_lv(uuid);
    char *path = NULL, *parent_path = NULL;
    struct image parent;
    uint64_t size;
    int rc = 0;

    memset(&parent, 0, sizeof parent);
    memset(&opts, 0, sizeof opts);
    if (parent_lv) {
        rc = image_read(sr, parent_lv, &parent, ret_err);
        if (!rc) {
            rc = lv_path(sr, parent_lv, &parent_path, ret_err);
        }
        if (rc) {
            goto out;
        }
        virtual_size = parent.virtual_size;
    }
    size = deflated_size(new_image_data_end(virtual_size));
    if (full) {
        size = inflated_size(new_image_data_end(virtual_size), virtual_size,
                             0, VHD_DEFAULT_BLOCK_SIZE);
    }
    rc = lv_create(sr, tmp, size, thick ? TAG_THICK : TAG_THIN, ret_err);
    if (rc) {
        goto out;
    }
    rc = lv_path(sr, tmp, &path, ret_err);
    if (rc) {
        goto undo;
    }
    opts.virtual_size = parent_lv ? 0 : virtual_size;
    opts.parent_path = parent_path;
    opts.uuid = parent_lv ? NULL : uuid;
    opts.max_size = MAX(virtual_size, LVHD_RESERVE);
    opts.container = true;
    rc = vhd_create(path, &opts, ret_err);
    if (rc) {
        goto undo;
    }
    crash_point("create-written");
    rc = lv_rename(sr, tmp, name, ret_err);
    if (!rc) {
        goto out;
    }
undo:
    lv_remove(sr, tmp, NULL);
out:
    image_clear(&parent);
    free(parent_path);
    free(path);
    free(tmp);
    free(name);
    return rc;
}

static int
sr_vdi_create(struct sm_sr *sr, const char *uuid, uint64_t virtual_size,
              const struct sm_map *sm_config, struct sm_vdi_info *ret_info,
              char **ret_err)
{
    const char *alloc = sm_map_get(sm_config, "allocation");
    const char *type = sm_map_get(sm_config, "type");
    char *name = NULL;
    bool thin;
    int rc;

    if (!uuid || !uuid_is_valid(uuid)) {
        return sm_fail(ret_err, -EINVAL, "bad VDI uuid %s",
                       uuid ? uuid : "(null)");
    }
    if (type && strcmp(type, "vhd")) {
        return sm_fail(ret_err, -EOPNOTSUPP, "LVHD SRs hold VHD images only, "
                       "not %s", type);
    }
    if (alloc && strcmp(alloc, "thin") && strcmp(alloc, "thick")) {
        return sm_fail(ret_err, -EINVAL, "allocation must be thin or thick, "
                       "not %s", alloc);
    }
    virtual_size = round_up(virtual_size, 512);
    if (!virtual_size || virtual_size > LVHD_MAX_SIZE) {
        return sm_fail(ret_err, -EINVAL, "bad virtual size %" PRIu64,
                       virtual_size);
    }
    thin = allocation_thin(alloc, sr->thin_default);
    name = vhd_lv(uuid);
    if (lv_exists(sr, name)) {
        rc = sm_fail(ret_err, -EEXIST, "VDI %s exists in SR %s", uuid,
                     sr->uuid);
        goto out;
    }
    rc = image_create(sr, uuid, virtual_size, NULL, !thin, !thin, ret_err);
    if (!rc) {
        rc = sr_vdi_info(sr, uuid, ret_info, ret_err);
    }
out:
    free(name);
    return rc;
}

/* leaf_read() of a VDI whose image is about to go: -EBUSY while it is
 * attached. */
static int
leaf_read_detached(struct sm_sr *sr, const char *location,
                   struct image *ret, char **ret_err)
{
    int rc = leaf_read(sr, location, ret, ret_err);

    if (!rc && is_attached(sr, location, NULL)) {
        image_clear(ret);
        rc = sm_fail(ret_err, -EBUSY, "VDI %s is attached", location);
    }
    return rc;
}

static int
sr_vdi_destroy(struct sm_sr *sr, const char *location, char **ret_err)
{
    struct image img;
    int rc = leaf_read_detached(sr, location, &img, ret_err);

    if (rc) {
        return rc;
    }
    /* One lvremove: a base that loses its last child is the garbage
     * collector's business. */
    rc = lv_remove(sr, img.lv, ret_err);
    image_clear(&img);
    return rc;
}

/* Snapshot and clone (the same on disk).  Leaf A (VHD-A) becomes the
 * hidden base B; A and the new VDI N are new children of B.  Order:
 *  1. journal JC_A_B_N;
 *  2. rename VHD-A to VHD-B;
 *  3. create VHD-N and VHD-A as children of VHD-B (each made under a
 *     NEW- name and renamed when whole);
 *  4. hide B (from here on recovery finishes instead of undoing);
 *  5. deflate B, drop the journal.
 * A crash before 4 is undone (N and the new A removed, B renamed back to
 * A); after, finished. */
static int
snapshot_or_clone(struct sm_sr *sr, const char *location,
                  const char *new_uuid, struct sm_vdi_info *ret_info,
                  char **ret_err)
{
    struct image leaf;
    char base_uuid[37];
    char *journal = NULL, *base = NULL, *new_name = NULL;
    bool rw = false, attached, full;
    uint64_t need;
    int len, rc;

    memset(&leaf, 0, sizeof leaf);
    if (!new_uuid || !uuid_is_valid(new_uuid)) {
        return sm_fail(ret_err, -EINVAL, "bad VDI uuid %s",
                       new_uuid ? new_uuid : "(null)");
    }
    rc = leaf_read(sr, location, &leaf, ret_err);
    if (rc) {
        goto out;
    }
    new_name = vhd_lv(new_uuid);
    if (lv_exists(sr, new_name)) {
        rc = sm_fail(ret_err, -EEXIST, "VDI %s exists in SR %s", new_uuid,
                     sr->uuid);
        goto out;
    }
    rc = chain_walk(sr, leaf.lv, &len, ret_err);
    if (rc) {
        goto out;
    }
    if (len + 1 > SM_MAX_CHAIN_LENGTH) {
        rc = sm_fail(ret_err, -ELOOP, "The snapshot chain is too long: VDI %s "
                     "has %d images", location, len);
        goto out;
    }
    attached = is_attached(sr, location, &rw);
    /* The new leaf of an attached writable VDI, and thick VDIs, are
     * inflated at once; other new leaves are deflated.  The base keeps its
     * volume until it is deflated at the end. */
    full = leaf.thick || (attached && rw);
    need = LVM_EXTENT
           + (leaf.thick ? inflated_size(new_image_data_end(
                                             leaf.virtual_size),
                                         leaf.virtual_size, 0,
                                         VHD_DEFAULT_BLOCK_SIZE)
                         : deflated_size(new_image_data_end(
                                             leaf.virtual_size)))
           + (full ? inflated_size(new_image_data_end(leaf.virtual_size),
                                   leaf.virtual_size,
                                   0, VHD_DEFAULT_BLOCK_SIZE)
                   : deflated_size(new_image_data_end(leaf.virtual_size)));
    rc = need_room(sr, need, ret_err);
    if (rc) {
        goto out;
    }

    uuid_generate(base_uuid);
    base = vhd_lv(base_uuid);
    journal = xasprintf(J_CLONE "%s_%s_%s", location, base_uuid, new_uuid);
    rc = journal_add(sr, journal, ret_err);
    if (rc) {
        goto out;
    }
    crash_point("clone-journal");
    rc = lv_rename(sr, leaf.lv, base, ret_err);
    if (rc) {
        goto undo;
    }
    crash_point("clone-renamed");
    rc = image_create(sr, new_uuid, 0, base, leaf.thick, leaf.thick,
                      ret_err);
    if (rc) {
        goto undo;
    }
    crash_point("clone-new-child");
    rc = image_create(sr, location, 0, base, leaf.thick, full, ret_err);
    if (rc) {
        goto undo;
    }
    crash_point("clone-children");
    rc = image_set_hidden(sr, base, true, ret_err);
    if (rc) {
        goto undo;
    }
    crash_point("clone-hidden");
    /* Past the point of no return: a failure from here on leaves a valid
     * SR that recovery or the next deflate tidies. */
    rc = deflate(sr, base, ret_err);
    if (!rc) {
        crash_point("clone-deflated");
        rc = lv_remove(sr, journal, ret_err);
    }
    if (!rc) {
        rc = sr_vdi_info(sr, new_uuid, ret_info, ret_err);
    }
    goto out;
undo:
    recover_clone(sr, journal, NULL);
out:
    image_clear(&leaf);
    free(journal);
    free(base);
    free(new_name);
    return rc;
}

static int
sr_vdi_snapshot(struct sm_sr *sr, const char *location, const char *new_uuid,
                struct sm_vdi_info *ret_info, char **ret_err)
{
    return snapshot_or_clone(sr, location, new_uuid, ret_info, ret_err);
}

static int
sr_vdi_clone(struct sm_sr *sr, const char *location, const char *new_uuid,
             struct sm_vdi_info *ret_info, char **ret_err)
{
    return snapshot_or_clone(sr, location, new_uuid, ret_info, ret_err);
}

static int
sr_vdi_resize(struct sm_sr *sr, const char *location, uint64_t new_size,
              struct sm_vdi_info *ret_info, char **ret_err)
{
    struct image img;
    struct vhd *v = NULL;
    uint64_t entries, target;
    bool rw = false;
    int rc;

    rc = leaf_read(sr, location, &img, ret_err);
    if (rc) {
        return rc;
    }
    new_size = round_up(new_size, 512);
    if (new_size < img.virtual_size || new_size > LVHD_MAX_SIZE) {
        rc = sm_fail(ret_err, -EINVAL, "cannot resize VDI %s from %" PRIu64
                     " to %" PRIu64 " bytes", location, img.virtual_size,
                     new_size);
        goto out;
    }
    /* The volume grows first: to hold every block of the new size if it
     * must stay inflated (thick, or attached for writing), and, if the
     * BAT must grow past its reservation, by the larger BAT and the blocks
     * it displaces (each moved to the end of the data). */
    entries = (new_size + img.block_size - 1) / img.block_size;
    target = img.thick || (is_attached(sr, location, &rw) && rw)
             ? inflated_size(img.data_end, new_size, img.allocated,
                             img.block_size)
             : deflated_size(img.data_end);
    if (entries > img.max_blocks) {
        target += 2 * round_up(entries * 4, 512)
                  + 2 * block_span(img.block_size);
    }
    rc = inflate(sr, img.lv, target, ret_err);
    if (!rc) {
        rc = image_open(sr, img.lv, VHD_OPEN_CONTAINER, &v, ret_err);
    }
    if (!rc) {
        rc = vhd_resize(v, new_size, ret_err);
    }
    vhd_close(v);
    /* A thin VDI nobody writes to gives the room back. */
    if (!rc && !img.thick && !(is_attached(sr, location, &rw) && rw)) {
        rc = deflate(sr, img.lv, ret_err);
    }
    if (!rc) {
        rc = sr_vdi_info(sr, location, ret_info, ret_err);
    }
out:
    image_clear(&img);
    return rc;
}

/* The second half of data destroy, which recovery repeats until it is
 * done: whatever the volume holds (the old image, or an empty one a crash
 * left before the journal went) is replaced by an empty image of the
 * recorded size.  Repeating it is harmless: the result is the same. */
static int
finish_data_destroy(struct sm_sr *sr, const char *journal, char **ret_err)
{
    bool thick = str_starts_with(journal, J_DATA_THICK);
    char u[1][37];
    char *name = NULL, *tmp = NULL;
    uint64_t size;
    int rc = 0;

    if (!journal_fields(journal, thick ? J_DATA_THICK : J_DATA_THIN, u, 1,
                        &size) || !size) {
        return lv_remove(sr, journal, ret_err);
    }
    name = vhd_lv(u[0]);
    tmp = xasprintf(LV_NEW "%s", u[0]);
    rc = lv_remove_if_exists(sr, tmp, ret_err);
    if (!rc) {
        rc = lv_remove_if_exists(sr, name, ret_err);
    }
    if (!rc) {
        crash_point("data-destroy-removed");
        rc = image_create(sr, u[0], size, NULL, thick, thick, ret_err);
    }
    if (!rc) {
        crash_point("data-destroy-created");
        rc = lv_remove(sr, journal, ret_err);
    }
    free(name);
    free(tmp);
    return rc;
}

/* VDI.data_destroy: the VDI keeps its uuid, size and allocation but its
 * image becomes an empty dynamic disk; the chain it stood on is left to
 * the GC.  Journal first (the old volume goes before the new image is
 * made), so that a crash in between is finished by recovery. */
static int
sr_vdi_data_destroy(struct sm_sr *sr, const char *location, char **ret_err)
{
    struct image img;
    char *journal = NULL;
    int rc = leaf_read_detached(sr, location, &img, ret_err);

    if (rc) {
        return rc;
    }
    journal = xasprintf("%s%s_%" PRIu64, img.thick ? J_DATA_THICK
                                                   : J_DATA_THIN,
                        location, img.virtual_size);
    rc = journal_add(sr, journal, ret_err);
    if (!rc) {
        crash_point("data-destroy-journal");
        rc = finish_data_destroy(sr, journal, ret_err);
    }
    image_clear(&img);
    free(journal);
    return rc;
}

static int
sr_vdi_attach(struct sm_sr *sr, const char *location, bool read_write,
              struct sm_attach *ret, char **ret_err)
{
    struct image img;
    char *path = NULL;
    int len, rc;

    rc = leaf_read(sr, location, &img, ret_err);
    if (rc) {
        return rc;
    }
    /* Parents must be active for the data path to open the chain. */
    rc = chain_walk(sr, img.lv, &len, ret_err);
    if (!rc && read_write && !img.thick) {
        rc = inflate_full(sr, &img, 0, ret_err);
    }
    if (!rc) {
        rc = lv_path(sr, img.lv, &path, ret_err);
    }
    if (rc) {
        goto out;
    }
    pthread_mutex_lock(&sr->lock);
    sr->att = xrealloc(sr->att, (sr->n_att + 1) * sizeof *sr->att);
    snprintf(sr->att[sr->n_att].uuid, 37, "%s", location);
    sr->att[sr->n_att].read_write = read_write;
    sr->n_att++;
    pthread_mutex_unlock(&sr->lock);
    memset(ret, 0, sizeof *ret);
    ret->path = path;
    path = NULL;
    ret->format = xstrdup("vhd");
    ret->read_only = !read_write;
out:
    image_clear(&img);
    free(path);
    return rc;
}

static void
sr_vdi_detach(struct sm_sr *sr, const char *location)
{
    struct image img;
    bool found = false, rw = false, still = false;

    pthread_mutex_lock(&sr->lock);
    for (size_t i = 0; i < sr->n_att; i++) {
        if (!strcmp(sr->att[i].uuid, location)) {
            found = true;
            rw = sr->att[i].read_write;
            sr->att[i] = sr->att[--sr->n_att];
            break;
        }
    }
    for (size_t i = 0; i < sr->n_att; i++) {
        still |= !strcmp(sr->att[i].uuid, location);
    }
    pthread_mutex_unlock(&sr->lock);
    if (!found || still || leaf_read(sr, location, &img, NULL)) {
        return;
    }
    /* A thin VDI gives back what its writes did not use. */
    if (rw && !img.thick) {
        char *err = NULL;
        if (deflate(sr, img.lv, &err)) {
            LOG_WARN("SR %s: deflating %s: %s", sr->uuid, img.lv, err);
        }
        free(err);
    }
    VG_CALL(sr, lv_deactivate, img.lv, NULL);
    image_clear(&img);
}

static int
sr_chain_length(struct sm_sr *sr, const char *location, int *ret_len,
                char **ret_err)
{
    struct image img;
    int rc = leaf_read(sr, location, &img, ret_err);

    if (!rc) {
        rc = chain_walk(sr, img.lv, ret_len, ret_err);
        image_clear(&img);
    }
    return rc;
}

/* ---- garbage collection ---- */

struct catalog {
    struct image *images;
    size_t n;
};

static void
catalog_clear(struct catalog *c)
{
    for (size_t i = 0; i < c->n; i++) {
        image_clear(&c->images[i]);
    }
    free(c->images);
    c->images = NULL;
    c->n = 0;
}

static int
catalog_read(struct sm_sr *sr, struct catalog *c, char **ret_err)
{
    struct lv *lvs = NULL;
    size_t n = 0;
    int rc = VG_CALL(sr, lv_list, &lvs, &n, ret_err);

    memset(c, 0, sizeof *c);
    for (size_t i = 0; !rc && i < n; i++) {
        if (!str_starts_with(lvs[i].name, LV_VHD)) {
            continue;
        }
        c->images = xrealloc(c->images, (c->n + 1) * sizeof *c->images);
        rc = image_read(sr, lvs[i].name, &c->images[c->n], ret_err);
        if (!rc) {
            c->n++;
        }
    }
    for (size_t i = 0; !rc && i < c->n; i++) {
        for (size_t j = 0; j < c->n; j++) {
            if (c->images[i].parent[0]
                && !strcmp(c->images[i].parent, c->images[j].uuid)) {
                c->images[i].parent_index = j;
                c->images[j].n_children++;
            }
        }
    }
    lvs_free(lvs, n);
    return rc;
}

/* Quiesces the data path of a VDI the GC is about to change.  A VDI this
 * SR attached but the caller cannot pause is skipped too: -EAGAIN, which
 * gc_step() takes as "leave this one for later". */
static int
gc_pause(struct sm_sr *sr, const struct sm_gc_hooks *hooks, const char *uuid)
{
    if (sm_gc_hooks_attached(hooks, uuid) && hooks->pause) {
        return hooks->pause(hooks->aux, uuid) ? -EAGAIN : 0;
    }
    return is_attached(sr, uuid, NULL) ? -EAGAIN : 0;
}

static void
hooks_unpause(const struct sm_gc_hooks *hooks, const char *uuid)
{
    if (sm_gc_hooks_attached(hooks, uuid) && hooks->unpause) {
        hooks->unpause(hooks->aux, uuid);
    }
}

static int
coalesce_into_parent(struct sm_sr *sr, const struct image *child,
                     const struct image *parent,
                     const struct sm_gc_hooks *hooks, char **ret_err)
{
    char *path = NULL;
    int len, rc;

    /* The parent receives up to every block of the child's size. */
    rc = inflate_full(sr, parent, child->virtual_size, ret_err);
    if (!rc) {
        rc = chain_walk(sr, child->lv, &len, ret_err);
    }
    if (!rc) {
        rc = lv_path(sr, child->lv, &path, ret_err);
    }
    if (!rc) {
        rc = vhd_coalesce(path, hooks ? hooks->progress : NULL,
                          hooks ? hooks->aux : NULL, ret_err);
    }
    free(path);
    return rc;
}

/* The first half of both merges: coalesces child into parent (the chains
 * read the same whatever a crash leaves), then adds the journal
 * PREFIX<child>_<parent> (malloc'd in *ret_journal), which says that the
 * parent now holds everything.  what ("base", "leaf") names the crash
 * points. */
static int
merge_and_journal(struct sm_sr *sr, const struct image *child,
                  const struct image *parent, const struct sm_gc_hooks *hooks,
                  const char *prefix, const char *what, char **ret_journal,
                  char **ret_err)
{
    char step[32];
    int rc;

    *ret_journal = NULL;
    rc = coalesce_into_parent(sr, child, parent, hooks, ret_err);
    if (rc) {
        return rc;
    }
    snprintf(step, sizeof step, "gc-%s-coalesced", what);
    crash_point(step);
    *ret_journal = xasprintf("%s%s_%s", prefix, child->uuid, parent->uuid);
    rc = journal_add(sr, *ret_journal, ret_err);
    if (!rc) {
        snprintf(step, sizeof step, "gc-%s-journal", what);
        crash_point(step);
    }
    return rc;
}

/* Points every image whose parent is base C at P instead, then removes C
 * and the journal JB_C_P: the second half of a base merge, which a crash
 * or a VDI that cannot be paused may interrupt; recovery and the next GC
 * step finish it.  Reparenting an image whose parent C was merged into P
 * does not change what it reads. */
static int
finish_base_merge(struct sm_sr *sr, const char *c_uuid, const char *p_uuid,
                  const struct sm_gc_hooks *hooks, char **ret_err)
{
    struct catalog c;
    char *c_lv = vhd_lv(c_uuid), *p_lv = vhd_lv(p_uuid);
    char *p_path = NULL, *journal = NULL;
    int rc;

    journal = xasprintf(J_BASE "%s_%s", c_uuid, p_uuid);
    rc = catalog_read(sr, &c, ret_err);
    if (!rc && lv_exists(sr, p_lv)) {
        rc = lv_path(sr, p_lv, &p_path, ret_err);
    }
    for (size_t g = 0; !rc && p_path && g < c.n; g++) {
        struct image *gi = &c.images[g];
        struct vhd *v = NULL;
        bool rw = false;

        if (strcmp(gi->parent, c_uuid)) {
            continue;
        }
        if (!gi->hidden) {
            rc = gc_pause(sr, hooks, gi->uuid);
            if (rc) {
                break;
            }
        }
        /* Reparenting appends locators: make sure there is room. */
        rc = inflate(sr, gi->lv, MAX(gi->lv_size, gi->data_end
                                     + LOCATOR_ROOM + 512), ret_err);
        if (!rc) {
            rc = image_open(sr, gi->lv, VHD_OPEN_CONTAINER, &v, ret_err);
        }
        if (!rc) {
            rc = vhd_set_parent(v, p_path, ret_err);
        }
        vhd_close(v);
        if (!gi->hidden) {
            hooks_unpause(hooks, gi->uuid);
        }
        crash_point("gc-base-reparented");
        /* Give back the room the locators did not need, unless the image
         * must stay inflated (a thick VDI, or one attached for writing). */
        if (!rc && (gi->hidden || (!gi->thick
                                   && !(is_attached(sr, gi->uuid, &rw)
                                        && rw)))) {
            rc = deflate(sr, gi->lv, ret_err);
        }
    }
    if (!rc && lv_exists(sr, c_lv)) {
        rc = lv_remove(sr, c_lv, ret_err);
        crash_point("gc-base-removed");
    }
    if (!rc && lv_exists(sr, p_lv)) {
        rc = deflate(sr, p_lv, ret_err);
    }
    if (!rc) {
        rc = lv_remove(sr, journal, ret_err);
    }
    catalog_clear(&c);
    free(c_lv);
    free(p_lv);
    free(p_path);
    free(journal);
    return rc;
}

/* A hidden base P with one hidden child C: C's data goes into P (the
 * chains read the same whatever a crash leaves), then the journal JB_C_P
 * records that C is redundant, and finish_base_merge() moves C's children
 * to P and removes C. */
static int
gc_merge_base(struct sm_sr *sr, struct catalog *c, int p, int ch,
              const struct sm_gc_hooks *hooks, char **ret_err)
{
    const struct image *parent = &c->images[p], *child = &c->images[ch];
    char *journal = NULL;
    int rc;

    rc = merge_and_journal(sr, child, parent, hooks, J_BASE, "base", &journal,
                           ret_err);
    if (!rc) {
        rc = finish_base_merge(sr, child->uuid, parent->uuid, hooks,
                               ret_err);
    }
    free(journal);
    return rc;
}

/* Finishes base merges a previous step left (see finish_base_merge()). */
static int
gc_pending_merges(struct sm_sr *sr, const struct sm_gc_hooks *hooks,
                  bool *ret_did, char **ret_err)
{
    struct lv *lvs = NULL;
    size_t n = 0;
    int rc = VG_CALL(sr, lv_list, &lvs, &n, ret_err);

    *ret_did = false;
    for (size_t i = 0; !rc && i < n; i++) {
        char u[2][37];

        if (!str_starts_with(lvs[i].name, J_BASE)) {
            continue;
        }
        if (!journal_fields(lvs[i].name, J_BASE, u, 2, NULL)) {
            rc = lv_remove(sr, lvs[i].name, ret_err);
            continue;
        }
        rc = finish_base_merge(sr, u[0], u[1], hooks, ret_err);
        if (rc == -EAGAIN) {
            rc = 0;
        } else if (!rc) {
            *ret_did = true;
        }
    }
    lvs_free(lvs, n);
    return rc;
}

/* A hidden base B whose one child is the leaf of VDI L: L's data goes
 * into B, then B takes L's place.  Order: coalesce (the chain reads the
 * same), journal JL_L_B (from here on B holds everything), remove VHD-L,
 * rename VHD-B to VHD-L, unhide it, drop the journal.  Recovery finishes
 * a journalled merge. */
static int
gc_merge_leaf(struct sm_sr *sr, struct catalog *c, int p, int ch,
              const struct sm_gc_hooks *hooks, char **ret_err)
{
    const struct image *base = &c->images[p], *leaf = &c->images[ch];
    char *journal = NULL;
    bool rw = false, attached = is_attached(sr, leaf->uuid, &rw);
    int rc;

    rc = gc_pause(sr, hooks, leaf->uuid);
    if (rc) {
        return rc;
    }
    rc = merge_and_journal(sr, leaf, base, hooks, J_LEAF, "leaf", &journal,
                           ret_err);
    if (rc) {
        goto out;
    }
    rc = lv_remove(sr, leaf->lv, ret_err);
    if (rc) {
        goto out;
    }
    crash_point("gc-leaf-removed");
    rc = lv_rename(sr, base->lv, leaf->lv, ret_err);
    if (rc) {
        goto out;
    }
    crash_point("gc-leaf-renamed");
    rc = image_set_hidden(sr, leaf->lv, false, ret_err);
    if (!rc) {
        /* The merged volume carries the base's tags; the VDI keeps its
         * own allocation. */
        VG_CALL(sr, lv_tag, leaf->lv, leaf->thick ? TAG_THIN : TAG_THICK,
                false, NULL);
        rc = VG_CALL(sr, lv_tag, leaf->lv,
                     leaf->thick ? TAG_THICK : TAG_THIN, true, ret_err);
    }
    if (!rc && !leaf->thick && !(attached && rw)) {
        rc = deflate(sr, leaf->lv, ret_err);
    }
    if (!rc) {
        crash_point("gc-leaf-unhidden");
        rc = lv_remove(sr, journal, ret_err);
    }
out:
    hooks_unpause(hooks, leaf->uuid);
    free(journal);
    return rc;
}

static int
sr_gc_step(struct sm_sr *sr, const struct sm_gc_hooks *hooks,
           bool *ret_more, char **ret_err)
{
    struct catalog c;
    bool did = false;
    int rc = gc_pending_merges(sr, hooks, &did, ret_err);

    if (rc || did) {
        if (!rc) {
            *ret_more = true;
        }
        return rc;
    }
    rc = catalog_read(sr, &c, ret_err);
    /* First, bases nothing needs any more. */
    for (size_t i = 0; !rc && !did && i < c.n; i++) {
        if (c.images[i].hidden && !c.images[i].n_children) {
            rc = lv_remove(sr, c.images[i].lv, ret_err);
            did = true;
        }
    }
    /* Then one base with a single child. */
    for (size_t i = 0; !rc && !did && i < c.n; i++) {
        int p = c.images[i].parent_index;

        if (p < 0 || !c.images[p].hidden || c.images[p].n_children != 1) {
            continue;
        }
        if (c.images[i].hidden) {
            rc = gc_merge_base(sr, &c, p, i, hooks, ret_err);
        } else {
            rc = gc_merge_leaf(sr, &c, p, i, hooks, ret_err);
        }
        if (rc == -EAGAIN) {
            /* A VDI that cannot be paused now: try the next candidate. */
            rc = 0;
            continue;
        }
        did = true;
    }
    catalog_clear(&c);
    if (!rc) {
        *ret_more = did;
    }
    return rc;
}

/* ---- probe ---- */

/* The SR on the device, if any, in XenServer's <SRlist> format: a volume
 * group named VG_XenStorage-<uuid> is the SR <uuid>. */
static int
sr_probe(const struct sm_map *dc, const struct sm_map *sm_config,
         char **ret_xml, char **ret_err)
{
    static const char zero_uuid[] = "00000000-0000-0000-0000-000000000000";
    const char *found[1] = { NULL };
    char *old = NULL;
    struct vg vg;
    int rc;

    (void) sm_config;
    rc = vg_init(&vg, zero_uuid, dc, ret_err);
    if (!rc) {
        rc = vg.be->device_vg(&vg, &old, ret_err);
    }
    if (rc) {
        goto out;
    }
    if (old && str_starts_with(old, VG_PREFIX)
        && uuid_is_valid(old + strlen(VG_PREFIX))) {
        found[0] = old + strlen(VG_PREFIX);
    }
    *ret_xml = sm_srlist_xml(found, found[0] ? 1 : 0);
out:
    free(old);
    vg_destroy(&vg);
    return rc;
}

/* ---- the SM record ---- */

static const struct sm_kv sm_lvm_configuration[] = {
    { "device", "the block device to hold the volume group (a physical "
                "volume is made on it); \"sim:DIR\" simulates one in DIR" },
    { "allocation", "thick (default) or thin: whether VDIs take their full "
                    "size at once or grow as they are written (set at SR "
                    "creation; a VDI's sm-config may override)" },
    { "size", "simulated devices only: the group's size in bytes" },
    { "force", "true: create over a device that holds a volume group" },
    { NULL, NULL },
};

const struct sm_driver sm_lvm_driver = {
    .type = "lvm",
    .name_label = "Local LVM (LVHD)",
    .name_description = "SR plugin which represents disks as VHD images "
                        "inside logical volumes of a local volume group",
    .vendor = "xapi-c",
    .copyright = "(C) the xapi-c authors",
    .version = "1.0",
    .required_api_version = "1.0",
    .capabilities = sm_vhd_capabilities,
    .configuration = sm_lvm_configuration,
    .content_type = "user",
    .shared = false,
    .thin = true,
    .probe = sr_probe,
    .create = sr_create,
    .destroy = sr_destroy,
    .attach = sr_attach,
    .detach = sr_detach,
    .stat = sr_stat,
    .scan = sr_scan,
    .vdi_create = sr_vdi_create,
    .vdi_introduce = sr_vdi_introduce,
    .vdi_info = sr_vdi_info,
    .vdi_destroy = sr_vdi_destroy,
    .vdi_snapshot = sr_vdi_snapshot,
    .vdi_clone = sr_vdi_clone,
    .vdi_resize = sr_vdi_resize,
    .vdi_data_destroy = sr_vdi_data_destroy,
    .vdi_attach = sr_vdi_attach,
    .vdi_detach = sr_vdi_detach,
    .gc_step = sr_gc_step,
    .chain_length = sr_chain_length,
};
