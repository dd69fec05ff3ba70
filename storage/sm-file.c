/* sm-file.c — the file, ext and nfs SR drivers: VDIs as VHD files
 * ("UUID.vhd", or sparse "UUID.raw") in one directory, as XenServer's and
 * XCP-ng's file-based SRs keep them.
 *
 * The three drivers differ only in where that directory is: "file" uses
 * device_config:location itself, "ext" formats a block device with ext4
 * and mounts it at STATE_DIR/sr-mount/UUID, "nfs" mounts
 * SERVER:SERVERPATH/UUID there.  Everything below the directory — VHD
 * chains, snapshots, the garbage collector and crash recovery — is one
 * implementation on top of storage/vhd.h; docs/storage-drivers.md gives
 * the order of every step and why a crash anywhere loses nothing.  The sim
 * driver (sm-sim.c) wraps the file driver's table. */
#include <config.h>

#include "sm.h"
#include "sm-int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"
#include "vhd.h"

/* Marks a directory as an SR and says which (its uuid and a newline). */
#define SR_MARKER ".xapi-sr"
/* Intent records of the operations that take several steps: one for
 * snapshot/clone, one for the garbage collector, so that a coalesce left
 * to finish later does not block snapshots. */
#define OP_JOURNAL ".journal"
#define GC_JOURNAL ".gc-journal"
/* An attached leaf is paused for the final coalesce and swap only if it
 * holds less than this much data, so that its guest stalls for well under
 * a second; bigger ones wait until they are detached. */
#define GC_SMALL_LEAF (64ull << 20)

enum sm_file_kind {
    SM_FILE_KIND_FILE,
    SM_FILE_KIND_EXT,
    SM_FILE_KIND_NFS,
};

struct sm_sr {
    enum sm_file_kind kind;
    char uuid[37];
    char *dir;              /* where the images are */
    char *mount_point;      /* what detach() unmounts, or NULL */
};

/* ---- small helpers ---- */

/* Moves a message from a callee into *ret_err. */
static void
pass_err(char **ret_err, char **err)
{
    if (ret_err && !*ret_err && *err) {
        *ret_err = *err;
    } else {
        free(*err);
    }
    *err = NULL;
}

static int
fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0) {
        return -errno;
    }
    if (fsync(fd)) {
        rc = -errno;
    }
    close(fd);
    return rc;
}

static bool
exists(const char *path)
{
    struct stat st;

    return !lstat(path, &st);
}

static char *
image_path(const struct sm_sr *sr, const char *uuid, const char *ext)
{
    return xasprintf("%s/%s.%s", sr->dir, uuid, ext);
}

static char *
temp_path(const struct sm_sr *sr, const char *uuid, const char *ext)
{
    return xasprintf("%s/%s.%s.tmp", sr->dir, uuid, ext);
}

/* The uuid of a "UUID.vhd" or "UUID.raw" name, or false. */
static bool
parse_image_name(const char *name, char *ret_uuid, bool *ret_raw)
{
    char uuid[37];

    if (strlen(name) != 40) {
        return false;
    }
    memcpy(uuid, name, 36);
    uuid[36] = '\0';
    if (!uuid_is_valid(uuid)) {
        return false;
    }
    if (!strcmp(name + 36, ".vhd")) {
        *ret_raw = false;
    } else if (!strcmp(name + 36, ".raw")) {
        *ret_raw = true;
    } else {
        return false;
    }
    memcpy(ret_uuid, uuid, 37);
    return true;
}

static int
check_location(const char *location, char **ret_err)
{
    if (!location || !uuid_is_valid(location)) {
        return sm_fail(ret_err, -ENOENT, "no VDI at location \"%s\"",
                       location ? location : "");
    }
    return 0;
}

/* ---- SR marker and journals ---- */

static int
marker_read(const char *dir, char *ret_uuid)
{
    char *path = xasprintf("%s/" SR_MARKER, dir);
    char *data = NULL;
    size_t len;
    int rc;

    rc = read_file(path, 64, &data, &len);
    if (rc) {
        goto out;
    }
    while (len && (data[len - 1] == '\n' || data[len - 1] == ' ')) {
        data[--len] = '\0';
    }
    if (!uuid_is_valid(data)) {
        rc = -EINVAL;
        goto out;
    }
    memcpy(ret_uuid, data, 37);
    rc = 0;
out:
    free(data);
    free(path);
    return rc;
}

static int
marker_write(const char *dir, const char *uuid)
{
    char *path = xasprintf("%s/" SR_MARKER, dir);
    char *data = xasprintf("%s\n", uuid);
    int rc;

    rc = write_file_atomic(path, data, strlen(data), 0644);
    if (!rc) {
        rc = fsync_dir(dir);
    }
    free(data);
    free(path);
    return rc;
}

/* Whether dir holds the SR sr_uuid (its marker names it). */
static bool
marker_is(const char *dir, const char *sr_uuid)
{
    char found[37];

    return !marker_read(dir, found) && !strcmp(found, sr_uuid);
}

/* A journal holds one line: an operation name and three uuids (the last
 * may be "-"). */
struct journal {
    char op[16];
    char a[37], b[37], c[37];
};

/* Records the intent "op a b c" (c may be NULL) durably in the journal
 * called name, and fills *ret_j with it (even on failure) for the
 * rollback or recovery that may follow. */
static int
journal_write(const struct sm_sr *sr, const char *name, const char *op,
              const char *a, const char *b, const char *c,
              struct journal *ret_j, char **ret_err)
{
    char *path = xasprintf("%s/%s", sr->dir, name);
    char *line = NULL;
    int rc;

    memset(ret_j, 0, sizeof *ret_j);
    snprintf(ret_j->op, sizeof ret_j->op, "%s", op);
    memcpy(ret_j->a, a, 37);
    memcpy(ret_j->b, b, 37);
    if (c) {
        memcpy(ret_j->c, c, 37);
    }
    line = xasprintf("%s %s %s %s\n", op, a, b, c ? c : "-");
    rc = write_file_atomic(path, line, strlen(line), 0600);
    if (!rc) {
        rc = fsync_dir(sr->dir);
    }
    if (rc) {
        sm_fail(ret_err, rc, "%s: cannot write the journal: %s", sr->dir,
                strerror(-rc));
    }
    free(line);
    free(path);
    return rc;
}

/* Returns 1 with *ret filled, 0 if there is no journal, or -errno. */
static int
journal_read(const struct sm_sr *sr, const char *name, struct journal *ret)
{
    char *path = xasprintf("%s/%s", sr->dir, name);
    char *data = NULL;
    size_t len;
    int rc;

    rc = read_file(path, 512, &data, &len);
    if (rc == -ENOENT) {
        rc = 0;
        goto out;
    } else if (rc) {
        goto out;
    }
    memset(ret, 0, sizeof *ret);
    if (sscanf(data, "%15s %36s %36s %36s", ret->op, ret->a, ret->b,
               ret->c) != 4
        || !uuid_is_valid(ret->a) || !uuid_is_valid(ret->b)
        || (strcmp(ret->c, "-") && !uuid_is_valid(ret->c))) {
        rc = -EINVAL;
        goto out;
    }
    if (!strcmp(ret->c, "-")) {
        ret->c[0] = '\0';
    }
    rc = 1;
out:
    free(data);
    free(path);
    return rc;
}

static int
journal_remove(const struct sm_sr *sr, const char *name)
{
    char *path = xasprintf("%s/%s", sr->dir, name);
    int rc = 0;

    if (unlink(path) && errno != ENOENT) {
        rc = -errno;
    } else {
        rc = fsync_dir(sr->dir);
    }
    free(path);
    return rc;
}

/* Renames from to to (or, with link_only, gives from the second name to)
 * and makes the change durable: every step of a multi-step operation
 * must be on disk before the next one relies on it. */
static int
name_durably(const struct sm_sr *sr, const char *from, const char *to,
             bool link_only, char **ret_err)
{
    int rc;

    if (link_only ? link(from, to) : rename(from, to)) {
        rc = -errno;
    } else {
        rc = fsync_dir(sr->dir);
    }
    if (rc) {
        sm_fail(ret_err, rc, "%s: %s: %s", link_only ? to : from,
                link_only ? "link" : "rename", strerror(-rc));
    }
    return rc;
}

/* ---- images ---- */

/* What the SR directory holds about one image file. */
struct image {
    char uuid[37];              /* from the file name */
    bool raw;
    bool hidden;                /* a base, not a VDI */
    bool differencing;
    char vhd_uuid[37];          /* the footer's */
    char parent_vhd_uuid[37];
    char parent_file[37];       /* uuid in the header's parent name */
    int parent;                 /* index in the catalog, or -1 */
    int n_children;
    uint64_t virtual_size;
    uint64_t allocated;         /* bytes the file occupies */
};

static int
image_read(const struct sm_sr *sr, const char *uuid, bool raw,
           struct image *ret, char **ret_err)
{
    char *path = image_path(sr, uuid, raw ? "raw" : "vhd");
    struct vhd_info info = { .type = 0 };
    struct vhd *v = NULL;
    struct image img;
    struct stat st;
    int rc;

    memset(&img, 0, sizeof img);
    memcpy(img.uuid, uuid, 37);
    img.raw = raw;
    img.parent = -1;
    if (stat(path, &st)) {
        rc = sm_fail(ret_err, -errno, "%s: %s", path, strerror(errno));
        goto out;
    }
    img.allocated = (uint64_t) st.st_blocks * 512;
    if (raw) {
        img.virtual_size = st.st_size;
    } else {
        rc = vhd_open(path, true, &v, ret_err);
        if (rc) {
            goto out;
        }
        rc = vhd_get_info(v, &info);
        if (rc) {
            rc = sm_fail(ret_err, rc, "%s: cannot read its header", path);
            goto out;
        }
        img.hidden = info.hidden;
        img.differencing = info.type == VHD_TYPE_DIFF;
        img.virtual_size = info.virtual_size;
        memcpy(img.vhd_uuid, info.uuid, 37);
        memcpy(img.parent_vhd_uuid, info.parent_uuid, 37);
        if (info.parent_name) {
            bool parent_raw;

            if (!parse_image_name(info.parent_name, img.parent_file,
                                  &parent_raw)) {
                img.parent_file[0] = '\0';
            }
        }
    }
    *ret = img;
    rc = 0;
out:
    vhd_info_clear(&info);
    vhd_close(v);
    free(path);
    return rc;
}

/* Every image of the SR, with parents resolved by VHD uuid. */
struct catalog {
    struct image *images;
    size_t n;
};

static void
catalog_clear(struct catalog *c)
{
    if (c) {
        free(c->images);
        c->images = NULL;
        c->n = 0;
    }
}

static int
catalog_find(const struct catalog *c, const char *uuid)
{
    for (size_t i = 0; i < c->n; i++) {
        if (!strcmp(c->images[i].uuid, uuid)) {
            return i;
        }
    }
    return -1;
}

static int
catalog_load(const struct sm_sr *sr, struct catalog *ret, char **ret_err)
{
    struct catalog c = { NULL, 0 };
    size_t cap = 0;
    struct dirent *de;
    DIR *d = NULL;
    int rc;

    d = opendir(sr->dir);
    if (!d) {
        rc = sm_fail(ret_err, -errno, "%s: %s", sr->dir, strerror(errno));
        goto out;
    }
    while ((de = readdir(d))) {
        struct image img;
        char uuid[37];
        char *err = NULL;
        bool raw;

        if (!parse_image_name(de->d_name, uuid, &raw)) {
            continue;
        }
        rc = image_read(sr, uuid, raw, &img, &err);
        if (rc) {
            /* A damaged image must not stop the rest of the SR from
             * being listed or collected; it is left alone. */
            LOG_WARN("SR %s: skipping %s: %s", sr->uuid, de->d_name,
                     err ? err : strerror(-rc));
            free(err);
            continue;
        }
        if (c.n == cap) {
            cap = cap ? cap * 2 : 16;
            c.images = xrealloc(c.images, cap * sizeof *c.images);
        }
        c.images[c.n++] = img;
    }
    for (size_t i = 0; i < c.n; i++) {
        struct image *img = &c.images[i];

        if (!img->differencing) {
            continue;
        }
        for (size_t j = 0; j < c.n; j++) {
            if (j != i && !c.images[j].raw
                && !strcmp(c.images[j].vhd_uuid, img->parent_vhd_uuid)) {
                img->parent = j;
                c.images[j].n_children++;
                break;
            }
        }
    }
    *ret = c;
    c.images = NULL;
    rc = 0;
out:
    if (d) {
        closedir(d);
    }
    catalog_clear(&c);
    return rc;
}

static int
set_hidden(const char *path, bool hidden, char **ret_err)
{
    struct vhd *v = NULL;
    int rc;

    rc = vhd_open(path, false, &v, ret_err);
    if (rc) {
        return rc;
    }
    rc = vhd_set_hidden(v, hidden);
    if (rc) {
        sm_fail(ret_err, rc, "%s: cannot set the hidden flag: %s", path,
                strerror(-rc));
    }
    vhd_close(v);
    return rc;
}

static int
chain_length_of(const char *leaf, int *ret_len, char **ret_err)
{
    char *path = xstrdup(leaf);
    int len = 0, rc;

    for (;;) {
        struct vhd_info info = { .type = 0 };
        struct vhd *v = NULL;
        char *parent = NULL;

        rc = vhd_open(path, true, &v, ret_err);
        if (rc) {
            goto out;
        }
        len++;
        rc = vhd_get_info(v, &info);
        if (!rc && info.type == VHD_TYPE_DIFF) {
            if (len >= VHD_MAX_CHAIN_DEPTH) {
                rc = sm_fail(ret_err, -ELOOP, "%s: chain too long", leaf);
            } else {
                rc = vhd_find_parent(v, &parent, ret_err);
            }
        }
        vhd_info_clear(&info);
        vhd_close(v);
        if (rc) {
            goto out;
        }
        if (!parent) {
            break;
        }
        free(path);
        path = parent;
    }
    *ret_len = len;
    rc = 0;
out:
    free(path);
    return rc;
}

/* ---- VDI info ---- */

static int
vdi_info_fill(struct sm_sr *sr, const char *location,
              struct sm_vdi_info *ret_info, char **ret_err)
{
    struct sm_vdi_info info;
    struct image img;
    char *path = NULL;
    bool raw = false;
    int rc;

    memset(&info, 0, sizeof info);
    rc = check_location(location, ret_err);
    if (rc) {
        goto out;
    }
    path = image_path(sr, location, "vhd");
    if (!exists(path)) {
        free(path);
        path = image_path(sr, location, "raw");
        raw = true;
        if (!exists(path)) {
            rc = sm_fail(ret_err, -ENOENT, "no VDI %s in SR %s", location,
                         sr->uuid);
            goto out;
        }
    }
    rc = image_read(sr, location, raw, &img, ret_err);
    if (rc) {
        goto out;
    }
    if (img.hidden) {
        rc = sm_fail(ret_err, -ENOENT, "%s is a snapshot base, not a VDI",
                     location);
        goto out;
    }
    memcpy(info.uuid, location, 37);
    info.location = xstrdup(location);
    info.virtual_size = img.virtual_size;
    info.physical_utilisation = img.allocated;
    info.read_only = false;
    info.format = xstrdup(raw ? "raw" : "vhd");
    sm_vdi_info_set_config(&info, "vdi_type", raw ? "raw" : "vhd");
    if (img.differencing) {
        sm_vdi_info_set_config(&info, "vhd-parent",
                               img.parent_file[0] ? img.parent_file
                               : img.parent_vhd_uuid);
    }
    *ret_info = info;
    memset(&info, 0, sizeof info);
    rc = 0;
out:
    sm_vdi_info_clear(&info);
    free(path);
    return rc;
}

/* ---- crash recovery ---- */

/* The files of a snapshot or clone of VDI X (journal "snapshot X B N"):
 * X's image and the temporary of its new leaf, the base B, the new VDI N
 * and its temporary. */
struct cow_files {
    char *x, *x_tmp, *b, *n, *n_tmp;
};

static void
cow_files_init(const struct sm_sr *sr, const char *x, const char *b,
               const char *n, struct cow_files *ret)
{
    ret->x = image_path(sr, x, "vhd");
    ret->x_tmp = temp_path(sr, x, "vhd");
    ret->b = image_path(sr, b, "vhd");
    ret->n = image_path(sr, n, "vhd");
    ret->n_tmp = temp_path(sr, n, "vhd");
}

static void
cow_files_clear(struct cow_files *f)
{
    free(f->x);
    free(f->x_tmp);
    free(f->b);
    free(f->n);
    free(f->n_tmp);
    memset(f, 0, sizeof *f);
}

/* Undoes an interrupted snapshot or clone (journal "snapshot X B N": the
 * VDI X, its new base B, the new VDI N).  Rolling back is always
 * possible: until the call returns, the data path of X is paused, so the
 * new leaf of X holds nothing the base does not. */
static int
recover_snapshot(struct sm_sr *sr, const struct journal *j, char **ret_err)
{
    struct cow_files f;
    struct stat st_x, st_b;
    int rc;

    cow_files_init(sr, j->a, j->b, j->c, &f);
    /* Every step here is idempotent and the journal goes last, so a crash
     * during recovery is recovered the same way. */
    if (unlink(f.x_tmp) && errno != ENOENT) {
        rc = sm_fail(ret_err, -errno, "%s: %s", f.x_tmp, strerror(errno));
        goto out;
    }
    if ((unlink(f.n_tmp) && errno != ENOENT)
        || (unlink(f.n) && errno != ENOENT)) {
        rc = sm_fail(ret_err, -errno, "%s: %s", f.n, strerror(errno));
        goto out;
    }
    sm_crash_point("recover-snapshot-cleaned");
    if (!stat(f.b, &st_b)) {
        if (stat(f.x, &st_x)) {
            rc = sm_fail(ret_err, -errno, "%s: %s", f.x, strerror(errno));
            goto out;
        }
        if (st_x.st_ino == st_b.st_ino && st_x.st_dev == st_b.st_dev) {
            /* Not committed: B is only a second name of X. */
            if (unlink(f.b)) {
                rc = sm_fail(ret_err, -errno, "%s: %s", f.b, strerror(errno));
                goto out;
            }
        } else {
            /* Committed: X is an empty child of B; put B back in its
             * place. */
            rc = set_hidden(f.b, false, ret_err);
            if (rc) {
                goto out;
            }
            sm_crash_point("recover-snapshot-unhidden");
            if (rename(f.b, f.x)) {
                rc = sm_fail(ret_err, -errno, "%s: %s", f.b, strerror(errno));
                goto out;
            }
            sm_crash_point("recover-snapshot-renamed");
        }
    }
    rc = fsync_dir(sr->dir);
    if (rc) {
        sm_fail(ret_err, rc, "%s: fsync: %s", sr->dir, strerror(-rc));
        goto out;
    }
    rc = journal_remove(sr, OP_JOURNAL);
out:
    cow_files_clear(&f);
    return rc;
}

static int gc_reparent(struct sm_sr *sr, const char *base, const char *child,
                       const struct sm_gc_hooks *hooks, char **ret_err);

/* Finishes or undoes what the garbage collector was doing. */
static int
recover_gc(struct sm_sr *sr, const struct journal *j,
           const struct sm_gc_hooks *hooks, char **ret_err)
{
    char *p = image_path(sr, j->a, "vhd");
    int rc;

    if (!strcmp(j->op, "reparent")) {
        /* The coalesce is complete: finish moving the children. */
        rc = gc_reparent(sr, j->a, j->b, hooks, ret_err);
        if (rc) {
            goto out;
        }
    } else if (!strcmp(j->op, "swap")) {
        /* Before the rename the leaf still reads right over its base;
         * make the base a base again and let the GC start over. */
        if (exists(p)) {
            rc = set_hidden(p, true, ret_err);
            if (rc) {
                goto out;
            }
        }
    } else {
        rc = sm_fail(ret_err, -EINVAL, "%s: unknown journal \"%s\"", sr->dir,
                     j->op);
        goto out;
    }
    rc = journal_remove(sr, GC_JOURNAL);
out:
    free(p);
    return rc;
}

static bool
is_temp_name(const char *name)
{
    size_t len = strlen(name);

    return (len > 4 && !strcmp(name + len - 4, ".tmp"))
           || strstr(name, ".tmp.");
}

/* Runs at attach: completes or rolls back interrupted operations and
 * removes their temporary files. */
static int
sr_recover(struct sm_sr *sr, char **ret_err)
{
    struct journal j;
    struct dirent *de;
    DIR *d = NULL;
    int rc;

    rc = journal_read(sr, OP_JOURNAL, &j);
    if (rc < 0) {
        rc = sm_fail(ret_err, rc, "%s/" OP_JOURNAL ": unreadable", sr->dir);
        goto out;
    } else if (rc) {
        LOG_INFO("SR %s: rolling back an interrupted %s of %s", sr->uuid,
                 j.op, j.a);
        rc = recover_snapshot(sr, &j, ret_err);
        if (rc) {
            goto out;
        }
    }
    rc = journal_read(sr, GC_JOURNAL, &j);
    if (rc < 0) {
        rc = sm_fail(ret_err, rc, "%s/" GC_JOURNAL ": unreadable", sr->dir);
        goto out;
    } else if (rc) {
        char *err = NULL;

        LOG_INFO("SR %s: finishing an interrupted GC %s", sr->uuid, j.op);
        rc = recover_gc(sr, &j, NULL, &err);
        if (rc == -EBUSY) {
            /* A child is open in a block server that outlived a restart;
             * the GC finishes the job with the pause hooks. */
            LOG_INFO("SR %s: %s", sr->uuid, err);
            free(err);
        } else if (rc) {
            pass_err(ret_err, &err);
            goto out;
        }
    }
    d = opendir(sr->dir);
    if (!d) {
        rc = sm_fail(ret_err, -errno, "%s: %s", sr->dir, strerror(errno));
        goto out;
    }
    while ((de = readdir(d))) {
        if (is_temp_name(de->d_name)) {
            if (unlinkat(dirfd(d), de->d_name, 0) && errno != ENOENT) {
                LOG_WARN("SR %s: cannot remove %s: %s", sr->uuid,
                         de->d_name, strerror(errno));
            }
        }
    }
    rc = fsync_dir(sr->dir);
out:
    if (d) {
        closedir(d);
    }
    return rc;
}

/* ---- the shared SR operations ---- */

static void
sr_free(struct sm_sr *sr)
{
    if (sr) {
        free(sr->dir);
        free(sr->mount_point);
        free(sr);
    }
}

/* Opens the SR whose images are in dir (checks the marker, recovers). */
static int
sr_open(enum sm_file_kind kind, const char *sr_uuid, const char *dir,
        char *mount_point, struct sm_sr **ret_sr, char **ret_err)
{
    struct sm_sr *sr = xcalloc(1, sizeof *sr);
    int rc;

    sr->kind = kind;
    memcpy(sr->uuid, sr_uuid, 37);
    sr->dir = xstrdup(dir);
    sr->mount_point = mount_point;
    if (!marker_is(dir, sr_uuid)) {
        rc = sm_fail(ret_err, -ENOENT, "no SR %s in %s", sr_uuid, dir);
        sr->mount_point = NULL;
        goto out;
    }
    rc = sr_recover(sr, ret_err);
    if (rc) {
        sr->mount_point = NULL;
        goto out;
    }
    *ret_sr = sr;
    sr = NULL;
out:
    sr_free(sr);
    return rc;
}

/* Makes dir an SR: refuses one that is already an SR unless forced. */
static int
sr_format(const char *dir, const char *sr_uuid,
          const struct sm_map *device_config, char **ret_err)
{
    const char *force = sm_map_get(device_config, "force");
    char found[37];
    int rc;

    rc = sm_mkdir_p(dir, 0755);
    if (rc) {
        return sm_fail(ret_err, rc, "%s: %s", dir, strerror(-rc));
    }
    if (!marker_read(dir, found) && !(force && !strcmp(force, "true"))) {
        return sm_fail(ret_err, -EEXIST, "%s already holds SR %s", dir, found);
    }
    rc = marker_write(dir, sr_uuid);
    if (rc) {
        return sm_fail(ret_err, rc, "%s: cannot write the SR marker: %s", dir,
                       strerror(-rc));
    }
    return 0;
}

/* Removes the SR's files (images, journals, marker) from dir. */
static int
sr_wipe(const char *dir, char **ret_err)
{
    struct dirent *de;
    DIR *d;
    int rc = 0;

    d = opendir(dir);
    if (!d) {
        return sm_fail(ret_err, -errno, "%s: %s", dir, strerror(errno));
    }
    while ((de = readdir(d))) {
        char uuid[37];
        bool raw;

        if (parse_image_name(de->d_name, uuid, &raw)
            || is_temp_name(de->d_name)
            || !strcmp(de->d_name, OP_JOURNAL)
            || !strcmp(de->d_name, GC_JOURNAL)) {
            if (unlinkat(dirfd(d), de->d_name, 0) && errno != ENOENT) {
                rc = sm_fail(ret_err, -errno, "%s/%s: %s", dir, de->d_name,
                             strerror(errno));
                goto out;
            }
        }
    }
    /* The marker goes last: until then the SR is still recognisable. */
    {
        char *marker = xasprintf("%s/" SR_MARKER, dir);

        if (unlink(marker) && errno != ENOENT) {
            rc = sm_fail(ret_err, -errno, "%s: %s", marker, strerror(errno));
        }
        free(marker);
    }
    fsync_dir(dir);
out:
    closedir(d);
    return rc;
}

static void
sr_detach(struct sm_sr *sr)
{
    if (!sr) {
        return;
    }
    if (sr->mount_point) {
        sm_umount(sr->mount_point);
    }
    sr_free(sr);
}

static int
sr_stat(struct sm_sr *sr, struct sm_sr_stat *ret_stat, char **ret_err)
{
    return sm_stat_filesystem(sr->dir, ret_stat, ret_err);
}

/* Images an operation in progress has made but not published: the
 * base-to-be and the new VDI of a snapshot, the base of a GC swap (which
 * is briefly not hidden). */
struct in_flight {
    char uuids[6][37];
    int n;
};

static void
in_flight_add(const struct sm_sr *sr, struct in_flight *f)
{
    struct journal j;

    if (journal_read(sr, OP_JOURNAL, &j) > 0 && f->n <= 4) {
        memcpy(f->uuids[f->n++], j.b, 37);
        memcpy(f->uuids[f->n++], j.c, 37);
    }
    if (journal_read(sr, GC_JOURNAL, &j) > 0 && !strcmp(j.op, "swap")
        && f->n <= 5) {
        memcpy(f->uuids[f->n++], j.a, 37);
    }
}

static bool
in_flight_has(const struct in_flight *f, const char *uuid)
{
    for (int i = 0; i < f->n; i++) {
        if (!strcmp(f->uuids[i], uuid)) {
            return true;
        }
    }
    return false;
}

static int
sr_scan(struct sm_sr *sr, struct sm_vdi_info **ret_vdis, size_t *ret_n,
        char **ret_err)
{
    struct catalog c = { NULL, 0 };
    struct sm_vdi_info *vdis = NULL;
    struct in_flight flight = { .n = 0 };
    size_t n = 0;
    int rc;

    /* The journals are read before and after listing, so that a scan
     * running beside a snapshot does not report its half-made images. */
    in_flight_add(sr, &flight);
    rc = catalog_load(sr, &c, ret_err);
    if (rc) {
        goto out;
    }
    in_flight_add(sr, &flight);
    vdis = xcalloc(c.n ? c.n : 1, sizeof *vdis);
    for (size_t i = 0; i < c.n; i++) {
        const struct image *img = &c.images[i];
        struct sm_vdi_info *info = &vdis[n];

        if (img->hidden || in_flight_has(&flight, img->uuid)) {
            continue;
        }
        memcpy(info->uuid, img->uuid, 37);
        info->location = xstrdup(img->uuid);
        info->virtual_size = img->virtual_size;
        info->physical_utilisation = img->allocated;
        info->format = xstrdup(img->raw ? "raw" : "vhd");
        sm_vdi_info_set_config(info, "vdi_type", img->raw ? "raw" : "vhd");
        if (img->differencing) {
            sm_vdi_info_set_config(info, "vhd-parent",
                                   img->parent >= 0
                                   ? c.images[img->parent].uuid
                                   : img->parent_vhd_uuid);
        }
        n++;
    }
    *ret_vdis = vdis;
    *ret_n = n;
    vdis = NULL;
    rc = 0;
out:
    catalog_clear(&c);
    free(vdis);
    return rc;
}

/* Bytes of a new dynamic VHD before any data: footer copy, header, BAT,
 * footer. */
static uint64_t
vhd_metadata_bytes(uint64_t virtual_size)
{
    uint64_t blocks = (virtual_size + VHD_DEFAULT_BLOCK_SIZE - 1)
                      / VHD_DEFAULT_BLOCK_SIZE;
    uint64_t bat = (blocks * 4 + VHD_SECTOR_SIZE - 1) / VHD_SECTOR_SIZE
                   * VHD_SECTOR_SIZE;

    return VHD_SECTOR_SIZE + 1024 + bat + VHD_SECTOR_SIZE;
}

static int
check_space(struct sm_sr *sr, uint64_t need, char **ret_err)
{
    struct sm_sr_stat st = { 0, 0, 0 };
    int rc;

    rc = sr_stat(sr, &st, ret_err);
    if (rc) {
        return rc;
    }
    if (st.free_space < need) {
        return sm_fail(ret_err, -ENOSPC, "SR %s: %llu bytes needed, %llu free",
                       sr->uuid, (unsigned long long) need,
                       (unsigned long long) st.free_space);
    }
    return 0;
}

/* Writes an empty image of virtual_size at tmp (raw: a sparse file;
 * otherwise a dynamic VHD whose uuid is vhd_uuid, random if NULL) and
 * renames it to path, so that a crash never leaves a half-made image
 * under path (recovery removes temporaries).  The caller syncs the
 * directory. */
static int
image_build(const char *tmp, const char *path, bool raw,
            uint64_t virtual_size, const char *vhd_uuid, char **ret_err)
{
    int fd = -1, rc = 0;

    unlink(tmp);
    if (raw) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, virtual_size) || fsync(fd)) {
            rc = sm_fail(ret_err, errno == EFBIG ? -EINVAL : -errno,
                         "%s: %s", tmp, strerror(errno));
        }
    } else {
        struct vhd_create_opts opts = {
            .virtual_size = virtual_size,
            .uuid = vhd_uuid,
        };

        rc = vhd_create(tmp, &opts, ret_err);
    }
    if (!rc && rename(tmp, path)) {
        rc = sm_fail(ret_err, -errno, "%s: %s", tmp, strerror(errno));
    }
    if (rc) {
        unlink(tmp);
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

static int
sr_vdi_create(struct sm_sr *sr, const char *uuid, uint64_t virtual_size,
              const struct sm_map *sm_config, struct sm_vdi_info *ret_info,
              char **ret_err)
{
    const char *type = sm_map_get(sm_config, "type");
    char *vhd_path = NULL, *raw_path = NULL, *tmp = NULL;
    bool raw;
    int rc;

    if (!uuid || !uuid_is_valid(uuid)) {
        rc = sm_fail(ret_err, -EINVAL, "bad VDI uuid \"%s\"",
                     uuid ? uuid : "");
        goto out;
    }
    if (type && strcmp(type, "raw") && strcmp(type, "vhd")) {
        rc = sm_fail(ret_err, -EINVAL, "unknown VDI type \"%s\"", type);
        goto out;
    }
    raw = type && !strcmp(type, "raw");
    /* Round up to whole sectors, as XenServer does. */
    if (virtual_size > UINT64_MAX - (VHD_SECTOR_SIZE - 1)) {
        rc = sm_fail(ret_err, -EINVAL, "virtual size too large");
        goto out;
    }
    virtual_size = (virtual_size + VHD_SECTOR_SIZE - 1)
                   / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
    if (!raw && virtual_size > VHD_MAX_SIZE) {
        rc = sm_fail(ret_err, -EINVAL,
                     "virtual size %llu exceeds the VHD maximum %llu",
                     (unsigned long long) virtual_size,
                     (unsigned long long) VHD_MAX_SIZE);
        goto out;
    }
    if (raw && virtual_size > (uint64_t) INT64_MAX) {
        rc = sm_fail(ret_err, -EINVAL, "virtual size too large");
        goto out;
    }
    vhd_path = image_path(sr, uuid, "vhd");
    raw_path = image_path(sr, uuid, "raw");
    if (exists(vhd_path) || exists(raw_path)) {
        rc = sm_fail(ret_err, -EEXIST, "VDI %s exists in SR %s", uuid,
                     sr->uuid);
        goto out;
    }
    /* Thin provisioning: only the metadata has to fit now. */
    rc = check_space(sr, raw ? 0 : vhd_metadata_bytes(virtual_size),
                     ret_err);
    if (rc) {
        goto out;
    }
    tmp = temp_path(sr, uuid, raw ? "raw" : "vhd");
    rc = image_build(tmp, raw ? raw_path : vhd_path, raw, virtual_size, uuid,
                     ret_err);
    if (rc) {
        goto out;
    }
    fsync_dir(sr->dir);
    rc = vdi_info_fill(sr, uuid, ret_info, ret_err);
out:
    free(tmp);
    free(vhd_path);
    free(raw_path);
    return rc;
}

static int
sr_vdi_introduce(struct sm_sr *sr, const char *uuid, const char *location,
                 struct sm_vdi_info *ret_info, char **ret_err)
{
    int rc = vdi_info_fill(sr, location, ret_info, ret_err);

    if (!rc && uuid && uuid_is_valid(uuid)) {
        memcpy(ret_info->uuid, uuid, 37);
    }
    return rc;
}

static int
sr_vdi_destroy(struct sm_sr *sr, const char *location, char **ret_err)
{
    struct sm_vdi_info info;
    char *path = NULL;
    int rc;

    memset(&info, 0, sizeof info);
    /* Refuses bases and unknown names with -ENOENT. */
    rc = vdi_info_fill(sr, location, &info, ret_err);
    if (rc) {
        goto out;
    }
    path = image_path(sr, location, info.format);
    sm_crash_point("destroy-start");
    /* One unlink is the whole operation: a base that loses its last child
     * is the garbage collector's business. */
    if (unlink(path)) {
        rc = sm_fail(ret_err, -errno, "%s: %s", path, strerror(errno));
        goto out;
    }
    sm_crash_point("destroy-unlinked");
    rc = fsync_dir(sr->dir);
    if (rc) {
        sm_fail(ret_err, rc, "%s: fsync: %s", sr->dir, strerror(-rc));
    }
    sm_crash_point("destroy-done");
out:
    sm_vdi_info_clear(&info);
    free(path);
    return rc;
}

/* Crash point "OP-STEP" ("snapshot-link", "clone-commit"...). */
static void
op_crash_point(const char *op, const char *step)
{
    char name[64];

    snprintf(name, sizeof name, "%s-%s", op, step);
    sm_crash_point(name);
}

/* Snapshot and clone: X (location) becomes a differencing child of a new
 * hidden base B, which holds X's image as it was, and a new VDI N becomes
 * B's second child.  The order (docs/storage-drivers.md):
 *   journal "snapshot X B N"; link X.vhd to B.vhd; create X.vhd.tmp and
 *   N.vhd.tmp over B.vhd; rename X.vhd.tmp over X.vhd (the commit point);
 *   hide B; rename N.vhd.tmp to N.vhd; remove the journal.
 * X.vhd is a complete image at every moment; recovery rolls back. */
static int
sr_copy_on_write(struct sm_sr *sr, const char *op, const char *location,
                 const char *new_uuid, struct sm_vdi_info *ret_info,
                 char **ret_err)
{
    struct sm_vdi_info old;
    struct journal j = { .op = "" };
    struct vhd *guard = NULL;
    struct cow_files f = { NULL, NULL, NULL, NULL, NULL };
    char *err = NULL;
    bool journaled = false;
    char base[37];
    int len, rc;

    memset(&old, 0, sizeof old);
    rc = vdi_info_fill(sr, location, &old, ret_err);
    if (rc) {
        goto out;
    }
    if (strcmp(old.format, "vhd")) {
        rc = sm_fail(ret_err, -EOPNOTSUPP, "VDI %s is raw: no %s", location,
                     op);
        goto out;
    }
    if (!new_uuid || !uuid_is_valid(new_uuid)) {
        rc = sm_fail(ret_err, -EINVAL, "bad VDI uuid \"%s\"",
                     new_uuid ? new_uuid : "");
        goto out;
    }
    uuid_generate(base);
    cow_files_init(sr, location, base, new_uuid, &f);
    {
        char *n_raw = image_path(sr, new_uuid, "raw");
        bool taken = exists(f.n) || exists(n_raw);

        free(n_raw);
        if (taken) {
            rc = sm_fail(ret_err, -EEXIST, "VDI %s exists in SR %s", new_uuid,
                         sr->uuid);
            goto out;
        }
    }
    rc = chain_length_of(f.x, &len, ret_err);
    if (rc) {
        goto out;
    }
    if (len + 1 > SM_MAX_CHAIN_LENGTH) {
        rc = sm_fail(ret_err, -ELOOP, "The snapshot chain is too long "
                     "(VDI %s: %d images, at most %d)", location, len + 1,
                     SM_MAX_CHAIN_LENGTH);
        goto out;
    }
    /* Two empty differencing disks: their headers, BATs and locators. */
    rc = check_space(sr, 2 * (vhd_metadata_bytes(old.virtual_size) + 4096),
                     ret_err);
    if (rc) {
        goto out;
    }
    /* The caller has paused X's data path; holding X's writer lock until
     * the commit makes sure nothing writes the image that becomes the
     * base (a writer that slipped in gets -EBUSY, or makes us fail). */
    rc = vhd_open(f.x, false, &guard, &err);
    if (rc) {
        rc = sm_fail(ret_err, rc, "VDI %s: %s", location,
                     err ? err : strerror(-rc));
        free(err);
        err = NULL;
        goto out;
    }

    op_crash_point(op, "start");
    unlink(f.x_tmp);
    unlink(f.n_tmp);
    rc = journal_write(sr, OP_JOURNAL, "snapshot", location, base, new_uuid,
                       &j, ret_err);
    if (rc) {
        goto out;
    }
    journaled = true;
    op_crash_point(op, "journal");
    rc = name_durably(sr, f.x, f.b, true, ret_err);
    if (rc) {
        goto out;
    }
    op_crash_point(op, "link");
    rc = vhd_snapshot(f.b, f.x_tmp, ret_err);
    if (rc) {
        goto out;
    }
    op_crash_point(op, "leaf");
    rc = vhd_snapshot(f.b, f.n_tmp, ret_err);
    if (rc) {
        goto out;
    }
    op_crash_point(op, "new");
    /* The commit point: from here X reads through B. */
    rc = name_durably(sr, f.x_tmp, f.x, false, ret_err);
    if (rc) {
        goto out;
    }
    op_crash_point(op, "commit");
    vhd_close(guard);
    guard = NULL;
    rc = set_hidden(f.b, true, ret_err);
    if (rc) {
        goto out;
    }
    op_crash_point(op, "hide");
    rc = name_durably(sr, f.n_tmp, f.n, false, ret_err);
    if (rc) {
        goto out;
    }
    op_crash_point(op, "publish");
    rc = journal_remove(sr, OP_JOURNAL);
    if (rc) {
        sm_fail(ret_err, rc, "%s: cannot remove the journal: %s", sr->dir,
                strerror(-rc));
        goto out;
    }
    journaled = false;
    op_crash_point(op, "done");
    rc = vdi_info_fill(sr, new_uuid, ret_info, ret_err);
out:
    vhd_close(guard);
    if (rc && journaled) {
        /* Put everything back as it was, as recovery would. */
        if (recover_snapshot(sr, &j, &err)) {
            LOG_ERR("SR %s: rolling back the %s of %s: %s", sr->uuid, op,
                    location, err);
        }
        free(err);
    }
    sm_vdi_info_clear(&old);
    cow_files_clear(&f);
    return rc;
}

static int
sr_vdi_snapshot(struct sm_sr *sr, const char *location, const char *new_uuid,
                struct sm_vdi_info *ret_info, char **ret_err)
{
    return sr_copy_on_write(sr, "snapshot", location, new_uuid, ret_info,
                            ret_err);
}

static int
sr_vdi_clone(struct sm_sr *sr, const char *location, const char *new_uuid,
             struct sm_vdi_info *ret_info, char **ret_err)
{
    return sr_copy_on_write(sr, "clone", location, new_uuid, ret_info,
                            ret_err);
}

static int
sr_vdi_resize(struct sm_sr *sr, const char *location, uint64_t new_size,
              struct sm_vdi_info *ret_info, char **ret_err)
{
    struct sm_vdi_info old;
    struct vhd *v = NULL;
    char *path = NULL;
    int rc;

    memset(&old, 0, sizeof old);
    rc = vdi_info_fill(sr, location, &old, ret_err);
    if (rc) {
        goto out;
    }
    if (new_size > UINT64_MAX - (VHD_SECTOR_SIZE - 1)) {
        rc = sm_fail(ret_err, -EINVAL, "virtual size too large");
        goto out;
    }
    new_size = (new_size + VHD_SECTOR_SIZE - 1) / VHD_SECTOR_SIZE
               * VHD_SECTOR_SIZE;
    if (new_size < old.virtual_size) {
        rc = sm_fail(ret_err, -EINVAL, "VDI %s: shrinking from %llu to %llu "
                     "is not supported", location,
                     (unsigned long long) old.virtual_size,
                     (unsigned long long) new_size);
        goto out;
    }
    path = image_path(sr, location, old.format);
    if (!strcmp(old.format, "raw")) {
        if (new_size > (uint64_t) INT64_MAX || truncate(path, new_size)) {
            rc = sm_fail(ret_err, new_size > (uint64_t) INT64_MAX ? -EINVAL
                         : -errno, "%s: cannot grow", path);
            goto out;
        }
    } else {
        if (new_size > VHD_MAX_SIZE) {
            rc = sm_fail(ret_err, -EINVAL, "virtual size %llu exceeds the VHD "
                         "maximum %llu", (unsigned long long) new_size,
                         (unsigned long long) VHD_MAX_SIZE);
            goto out;
        }
        if (new_size > old.virtual_size) {
            rc = check_space(sr, vhd_metadata_bytes(new_size), ret_err);
            if (rc) {
                goto out;
            }
            rc = vhd_open(path, false, &v, ret_err);
            if (rc) {
                goto out;
            }
            rc = vhd_resize(v, new_size, ret_err);
            if (rc) {
                goto out;
            }
        }
    }
    rc = vdi_info_fill(sr, location, ret_info, ret_err);
out:
    vhd_close(v);
    sm_vdi_info_clear(&old);
    free(path);
    return rc;
}

static int
sr_vdi_data_destroy(struct sm_sr *sr, const char *location, char **ret_err)
{
    struct sm_vdi_info old;
    char *path = NULL, *tmp = NULL;
    int rc;

    memset(&old, 0, sizeof old);
    rc = vdi_info_fill(sr, location, &old, ret_err);
    if (rc) {
        goto out;
    }
    path = image_path(sr, location, old.format);
    tmp = temp_path(sr, location, old.format);
    /* A new empty image of the same size replaces the old one in one
     * rename; the old chain's base, if any, is left to the GC. */
    rc = image_build(tmp, path, !strcmp(old.format, "raw"), old.virtual_size,
                     NULL, ret_err);
    if (rc) {
        goto out;
    }
    rc = fsync_dir(sr->dir);
out:
    sm_vdi_info_clear(&old);
    free(path);
    free(tmp);
    return rc;
}

static int
sr_vdi_attach(struct sm_sr *sr, const char *location, bool read_write,
              struct sm_attach *ret_attach, char **ret_err)
{
    struct sm_vdi_info info;
    int rc;

    memset(&info, 0, sizeof info);
    rc = vdi_info_fill(sr, location, &info, ret_err);
    if (rc) {
        goto out;
    }
    ret_attach->path = image_path(sr, location, info.format);
    ret_attach->format = xstrdup(info.format);
    ret_attach->read_only = !read_write;
out:
    sm_vdi_info_clear(&info);
    return rc;
}

static void
sr_vdi_detach(struct sm_sr *sr, const char *location)
{
    /* Nothing to undo: attach only named the file. */
    (void) sr;
    (void) location;
}

static int
sr_chain_length(struct sm_sr *sr, const char *location, int *ret_len,
                char **ret_err)
{
    struct sm_vdi_info info;
    char *path = NULL;
    int rc;

    memset(&info, 0, sizeof info);
    rc = vdi_info_fill(sr, location, &info, ret_err);
    if (rc) {
        goto out;
    }
    if (!strcmp(info.format, "raw")) {
        *ret_len = 1;
        goto out;
    }
    path = image_path(sr, location, "vhd");
    rc = chain_length_of(path, ret_len, ret_err);
out:
    sm_vdi_info_clear(&info);
    free(path);
    return rc;
}

/* ---- garbage collection ---- */

/* Pauses the data path of VDI uuid if the caller has it attached, and
 * then sets *ret_paused: the caller unpauses it when done.  -EBUSY if it
 * cannot be paused now. */
static int
gc_pause(const struct sm_gc_hooks *hooks, const char *uuid, bool *ret_paused,
         char **ret_err)
{
    *ret_paused = false;
    if (!sm_gc_hooks_attached(hooks, uuid)) {
        return 0;
    }
    if (!hooks->pause || hooks->pause(hooks->aux, uuid)) {
        return sm_fail(ret_err, -EBUSY, "VDI %s cannot be paused", uuid);
    }
    *ret_paused = true;
    return 0;
}

/* Points every child of child at base, then deletes child (whose data
 * vhd_coalesce() has merged into base).  Attached children are paused
 * around their header change. */
static int
gc_reparent(struct sm_sr *sr, const char *base, const char *child,
            const struct sm_gc_hooks *hooks, char **ret_err)
{
    struct catalog c = { NULL, 0 };
    char *base_path = image_path(sr, base, "vhd");
    char *child_path = image_path(sr, child, "vhd");
    int ci, rc;

    rc = catalog_load(sr, &c, ret_err);
    if (rc) {
        goto out;
    }
    ci = catalog_find(&c, child);
    for (size_t i = 0; ci >= 0 && i < c.n; i++) {
        const struct image *g = &c.images[i];
        bool paused = false;
        struct vhd *v = NULL;
        char *path;

        if (g->parent != ci) {
            continue;
        }
        if (!g->hidden) {
            rc = gc_pause(hooks, g->uuid, &paused, ret_err);
            if (rc) {
                goto out;
            }
        }
        path = image_path(sr, g->uuid, "vhd");
        rc = vhd_open(path, false, &v, ret_err);
        if (!rc) {
            rc = vhd_set_parent(v, base_path, ret_err);
            vhd_close(v);
        }
        free(path);
        if (paused) {
            hooks->unpause(hooks->aux, g->uuid);
        }
        if (rc) {
            goto out;
        }
        sm_crash_point("gc-reparented");
    }
    if (unlink(child_path) && errno != ENOENT) {
        rc = sm_fail(ret_err, -errno, "%s: %s", child_path, strerror(errno));
        goto out;
    }
    rc = fsync_dir(sr->dir);
    sm_crash_point("gc-unlinked");
out:
    catalog_clear(&c);
    free(base_path);
    free(child_path);
    return rc;
}

/* What one GC step would do. */
enum gc_action {
    GC_NOTHING,
    GC_REMOVE,          /* a base without children */
    GC_MERGE_BASE,      /* a base's only child is a base */
    GC_MERGE_LEAF,      /* a base's only child is a VDI */
};

static enum gc_action
gc_plan(const struct catalog *c, const struct sm_gc_hooks *hooks,
        const bool *skip, int *ret_base, int *ret_child)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->images[i].hidden && !c->images[i].n_children) {
            *ret_base = i;
            return GC_REMOVE;
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        const struct image *child = &c->images[i];
        int p = child->parent;

        if (p < 0 || !c->images[p].hidden || c->images[p].n_children != 1
            || (skip && skip[i])) {
            continue;
        }
        if (!child->hidden && sm_gc_hooks_attached(hooks, child->uuid)
            && child->allocated >= GC_SMALL_LEAF) {
            /* Too much to coalesce while the guest waits; later. */
            continue;
        }
        *ret_base = p;
        *ret_child = i;
        return child->hidden ? GC_MERGE_BASE : GC_MERGE_LEAF;
    }
    return GC_NOTHING;
}

/* The first half of both merges: coalesces child into its parent base,
 * then journals "op base child" (*ret_j), from which on the base holds
 * everything.  Nothing reads the base except through child (its only
 * child), and coalescing only copies sectors child holds, so every chain
 * reads the same before, during and after.  what ("gc-base", "gc-leaf")
 * names the crash points. */
static int
gc_coalesce(struct sm_sr *sr, const char *what, const char *op,
            const char *base, const char *child,
            const struct sm_gc_hooks *hooks, struct journal *ret_j,
            char **ret_err)
{
    char *child_path = image_path(sr, child, "vhd");
    int rc;

    op_crash_point(what, "start");
    rc = vhd_coalesce(child_path, hooks ? hooks->progress : NULL,
                      hooks ? hooks->aux : NULL, ret_err);
    if (!rc) {
        op_crash_point(what, "coalesced");
        rc = journal_write(sr, GC_JOURNAL, op, base, child, NULL, ret_j,
                           ret_err);
    }
    if (!rc) {
        op_crash_point(what, "journal");
    }
    free(child_path);
    return rc;
}

static int
gc_merge_leaf(struct sm_sr *sr, const char *base, const char *leaf,
              const struct sm_gc_hooks *hooks, char **ret_err)
{
    char *base_path = image_path(sr, base, "vhd");
    char *leaf_path = image_path(sr, leaf, "vhd");
    bool paused = false, journaled = false;
    struct vhd *guard = NULL;
    struct journal j = { .op = "" };
    char *err = NULL;
    int rc;

    rc = gc_pause(hooks, leaf, &paused, ret_err);
    if (rc) {
        goto out;
    }
    /* Holding the leaf open for writing takes its writer lock: a block
     * server that opened it behind our back (or opens it now) would write
     * where the coalesce no longer looks, and the rename would drop those
     * writes.  Either it holds the lock and we skip the leaf, or it cannot
     * open the leaf until the swap is done. */
    rc = vhd_open(leaf_path, false, &guard, &err);
    if (rc) {
        rc = sm_fail(ret_err, rc == -EBUSY ? -EBUSY : rc, "VDI %s: %s", leaf,
                     err ? err : strerror(-rc));
        goto out;
    }
    rc = gc_coalesce(sr, "gc-leaf", "swap", base, leaf, hooks, &j, ret_err);
    if (rc) {
        goto out;
    }
    journaled = true;
    rc = set_hidden(base_path, false, ret_err);
    if (rc) {
        goto out;
    }
    sm_crash_point("gc-leaf-unhidden");
    /* The commit point: the base, now holding the leaf's data too, takes
     * the leaf's name; the block server reopens that path. */
    rc = name_durably(sr, base_path, leaf_path, false, ret_err);
    if (rc) {
        goto out;
    }
    sm_crash_point("gc-leaf-renamed");
    rc = journal_remove(sr, GC_JOURNAL);
    if (!rc) {
        journaled = false;
    }
    sm_crash_point("gc-leaf-done");
out:
    if (rc && journaled) {
        char *rerr = NULL;

        if (recover_gc(sr, &j, NULL, &rerr)) {
            LOG_ERR("SR %s: %s", sr->uuid, rerr);
        }
        free(rerr);
    }
    vhd_close(guard);
    if (paused) {
        hooks->unpause(hooks->aux, leaf);
    }
    free(err);
    free(base_path);
    free(leaf_path);
    return rc;
}

static int
gc_merge_base(struct sm_sr *sr, const char *base, const char *child,
              const struct sm_gc_hooks *hooks, char **ret_err)
{
    struct journal j;
    int rc;

    rc = gc_coalesce(sr, "gc-base", "reparent", base, child, hooks, &j,
                     ret_err);
    if (rc) {
        return rc;
    }
    /* From here the job is finished, now or by a later step. */
    rc = recover_gc(sr, &j, hooks, ret_err);
    sm_crash_point("gc-base-done");
    return rc;
}

static int
sr_gc_step(struct sm_sr *sr, const struct sm_gc_hooks *hooks, bool *ret_more,
           char **ret_err)
{
    struct catalog c = { NULL, 0 };
    char (*skipped)[37] = NULL;
    size_t n_skipped = 0;
    bool *skip = NULL;
    struct journal j;
    int rc;

    rc = journal_read(sr, GC_JOURNAL, &j);
    if (rc < 0) {
        sm_fail(ret_err, rc, "%s/" GC_JOURNAL ": unreadable", sr->dir);
        goto out;
    } else if (rc) {
        char *err = NULL;

        /* A reparent that a child in use held up. */
        rc = recover_gc(sr, &j, hooks, &err);
        if (rc == -EBUSY) {
            /* Still in use: the next GC run tries again. */
            LOG_DBG("SR %s: %s", sr->uuid, err);
            free(err);
            *ret_more = false;
            rc = 0;
        } else if (rc) {
            pass_err(ret_err, &err);
        } else {
            *ret_more = true;
        }
        goto out;
    }
    rc = catalog_load(sr, &c, ret_err);
    if (rc) {
        goto out;
    }
    skip = xcalloc(c.n + 1, sizeof *skip);
    skipped = xcalloc(c.n + 1, sizeof *skipped);
    for (;;) {
        char base_uuid[37], child_uuid[37], *err = NULL;
        int base = -1, child = -1;
        enum gc_action action = gc_plan(&c, hooks, skip, &base, &child);

        if (action == GC_NOTHING) {
            *ret_more = false;
            rc = 0;
            goto out;
        }
        memcpy(base_uuid, c.images[base].uuid, 37);
        if (child >= 0) {
            memcpy(child_uuid, c.images[child].uuid, 37);
        }
        if (action == GC_REMOVE) {
            char *path = image_path(sr, base_uuid, "vhd");

            sm_crash_point("gc-remove-start");
            if (unlink(path) && errno != ENOENT) {
                rc = sm_fail(ret_err, -errno, "%s: %s", path, strerror(errno));
            } else {
                rc = fsync_dir(sr->dir);
            }
            free(path);
            sm_crash_point("gc-remove-done");
        } else if (action == GC_MERGE_BASE) {
            rc = gc_merge_base(sr, base_uuid, child_uuid, hooks, &err);
            if (rc == -EBUSY) {
                /* Coalesced, but a child in use could not be reparented:
                 * the journal makes a later run finish the job. */
                LOG_DBG("SR %s: %s", sr->uuid, err);
                free(err);
                *ret_more = false;
                rc = 0;
                goto out;
            }
        } else {
            rc = gc_merge_leaf(sr, base_uuid, child_uuid, hooks, &err);
            if (rc == -EBUSY) {
                /* In use and not pausable now: leave it for a later run
                 * and look for other work. */
                LOG_DBG("SR %s: %s", sr->uuid, err);
                free(err);
                skip[child] = true;
                memcpy(skipped[n_skipped++], child_uuid, 37);
                continue;
            }
        }
        if (rc) {
            pass_err(ret_err, &err);
            goto out;
        }
        break;
    }
    catalog_clear(&c);
    rc = catalog_load(sr, &c, ret_err);
    if (rc) {
        goto out;
    }
    {
        int base, child;

        /* What was skipped as busy does not count as more work now. */
        free(skip);
        skip = xcalloc(c.n + 1, sizeof *skip);
        for (size_t i = 0; i < c.n; i++) {
            for (size_t k = 0; k < n_skipped; k++) {
                skip[i] = skip[i] || !strcmp(c.images[i].uuid, skipped[k]);
            }
        }
        *ret_more = gc_plan(&c, hooks, skip, &base, &child) != GC_NOTHING;
    }
out:
    free(skip);
    free(skipped);
    catalog_clear(&c);
    return rc;
}

/* ---- the file driver ---- */

static int
file_dir(const struct sm_map *device_config, const char **ret_dir,
         char **ret_err)
{
    const char *location = sm_map_get(device_config, "location");

    if (!location || location[0] != '/') {
        return sm_fail(ret_err, -EINVAL, "device_config:location must be an "
                       "absolute directory path");
    }
    *ret_dir = location;
    return 0;
}

static int
file_probe(const struct sm_map *device_config, const struct sm_map *sm_config,
           char **ret_xml, char **ret_err)
{
    const char *dir = NULL;
    char uuid[37];
    const char *list[1] = { uuid };
    int rc;

    (void) sm_config;
    rc = file_dir(device_config, &dir, ret_err);
    if (rc) {
        return rc;
    }
    *ret_xml = sm_srlist_xml(list, marker_read(dir, uuid) ? 0 : 1);
    return 0;
}

static int
file_create(const char *state_dir, const char *sr_uuid,
            const struct sm_map *device_config, uint64_t physical_size,
            char **ret_err)
{
    const char *dir = NULL;
    int rc;

    (void) state_dir;
    (void) physical_size;
    rc = file_dir(device_config, &dir, ret_err);
    return rc ? rc : sr_format(dir, sr_uuid, device_config, ret_err);
}

static int
file_destroy(const char *state_dir, const char *sr_uuid,
             const struct sm_map *device_config, char **ret_err)
{
    const char *dir = NULL;
    int rc;

    (void) state_dir;
    rc = file_dir(device_config, &dir, ret_err);
    if (rc) {
        return rc;
    }
    if (!marker_is(dir, sr_uuid)) {
        return sm_fail(ret_err, -ENOENT, "no SR %s in %s", sr_uuid, dir);
    }
    rc = sr_wipe(dir, ret_err);
    if (!rc) {
        /* The directory may hold other things; then it stays. */
        rmdir(dir);
    }
    return rc;
}

static int
file_attach(const char *state_dir, const char *sr_uuid,
            const struct sm_map *device_config, struct sm_sr **ret_sr,
            char **ret_err)
{
    const char *dir = NULL;
    int rc;

    (void) state_dir;
    rc = file_dir(device_config, &dir, ret_err);
    return rc ? rc : sr_open(SM_FILE_KIND_FILE, sr_uuid, dir, NULL, ret_sr,
                             ret_err);
}

static const struct sm_kv file_configuration[] = {
    { "location", "local directory path (required): the SR's VHD files "
      "are kept directly in it" },
    { NULL, NULL },
};

/* What the file, ext and nfs SM records share: everything but their
 * names, configuration, sharing and how the SR's directory is reached. */
#define FILE_DRIVER_COMMON                          \
    .vendor = SM_VENDOR,                            \
    .copyright = SM_COPYRIGHT,                      \
    .version = "1.0",                               \
    .required_api_version = "1.0",                  \
    .capabilities = sm_vhd_capabilities,            \
    .content_type = "user",                         \
    .thin = true,                                   \
    .detach = sr_detach,                            \
    .stat = sr_stat,                                \
    .scan = sr_scan,                                \
    .vdi_create = sr_vdi_create,                    \
    .vdi_introduce = sr_vdi_introduce,              \
    .vdi_info = vdi_info_fill,                      \
    .vdi_destroy = sr_vdi_destroy,                  \
    .vdi_snapshot = sr_vdi_snapshot,                \
    .vdi_clone = sr_vdi_clone,                      \
    .vdi_resize = sr_vdi_resize,                    \
    .vdi_data_destroy = sr_vdi_data_destroy,        \
    .vdi_attach = sr_vdi_attach,                    \
    .vdi_detach = sr_vdi_detach,                    \
    .gc_step = sr_gc_step,                          \
    .chain_length = sr_chain_length

const struct sm_driver sm_file_driver = {
    .type = "file",
    .name_label = "Local Path VHD",
    .name_description = "SR plugin keeping disks as VHD files in a local "
                        "directory",
    .configuration = file_configuration,
    .shared = false,
    .probe = file_probe,
    .create = file_create,
    .destroy = file_destroy,
    .attach = file_attach,
    FILE_DRIVER_COMMON,
};

/* ---- mounting (ext, nfs) ---- */

static char *
mount_point_of(const char *state_dir, const char *sr_uuid)
{
    return xasprintf("%s/sr-mount/%s", state_dir, sr_uuid);
}

/* True if path is the root of a mounted filesystem (another device than
 * its parent directory), as after a restart that left the SR mounted. */
static bool
is_mounted(const char *path)
{
    char *parent = xasprintf("%s/..", path);
    struct stat st, pst;
    bool mounted;

    mounted = !stat(path, &st) && !stat(parent, &pst)
              && (st.st_dev != pst.st_dev || st.st_ino == pst.st_ino);
    free(parent);
    return mounted;
}

/* Unmounts a mount point the driver made for itself, and removes it. */
static void
do_umount(const char *mount_point)
{
    sm_umount(mount_point);
    rmdir(mount_point);
}

/* Opens the SR mounted at mount_point (malloc'd), which the SR then owns
 * and unmounts at detach; on failure, unmounts and frees it at once. */
static int
sr_open_mounted(enum sm_file_kind kind, const char *sr_uuid,
                char *mount_point, struct sm_sr **ret_sr, char **ret_err)
{
    int rc = sr_open(kind, sr_uuid, mount_point, mount_point, ret_sr,
                     ret_err);

    if (rc) {
        do_umount(mount_point);
        free(mount_point);
    }
    return rc;
}

/* ---- the ext driver ---- */

static int
ext_device(const struct sm_map *device_config, const char **ret_device,
           bool *ret_is_file, char **ret_err)
{
    const char *device = sm_map_get(device_config, "device");
    struct stat st;

    if (!device || device[0] != '/') {
        return sm_fail(ret_err, -EINVAL, "device_config:device must be the "
                       "absolute path of a block device");
    }
    if (stat(device, &st)) {
        return sm_fail(ret_err, errno == ENOENT ? -EINVAL : -errno,
                       "%s: %s", device, strerror(errno));
    }
    if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode)) {
        return sm_fail(ret_err, -EINVAL, "%s is not a block device", device);
    }
    *ret_device = device;
    *ret_is_file = S_ISREG(st.st_mode);
    return 0;
}

static int
ext_mount(const struct sm_map *device_config, const char *mount_point,
          char **ret_err)
{
    const char *device;
    bool is_file;
    int rc;

    rc = ext_device(device_config, &device, &is_file, ret_err);
    if (rc) {
        return rc;
    }
    return sm_mount("ext4", is_file ? "loop" : "defaults", device,
                    mount_point, ret_err);
}

/* Mounts the device at a private temporary point and reads its marker:
 * 0 with *ret_uuid, -ENOENT if it holds no SR (or no filesystem). */
static int
ext_peek(const struct sm_map *device_config, char *ret_uuid, char **ret_err)
{
    char tmpl[] = "/tmp/sm-ext-probe.XXXXXX";
    char *err = NULL;
    int rc;

    if (!mkdtemp(tmpl)) {
        return sm_fail(ret_err, -errno, "mkdtemp: %s", strerror(errno));
    }
    rc = ext_mount(device_config, tmpl, &err);
    if (rc == -EINVAL) {
        pass_err(ret_err, &err);
        rmdir(tmpl);
        return rc;
    } else if (rc) {
        free(err);
        rmdir(tmpl);
        return -ENOENT;
    }
    rc = marker_read(tmpl, ret_uuid) ? -ENOENT : 0;
    do_umount(tmpl);
    return rc;
}

static int
ext_probe(const struct sm_map *device_config, const struct sm_map *sm_config,
          char **ret_xml, char **ret_err)
{
    char uuid[37];
    const char *list[1] = { uuid };
    int rc;

    (void) sm_config;
    rc = ext_peek(device_config, uuid, ret_err);
    if (rc && rc != -ENOENT) {
        return rc;
    }
    *ret_xml = sm_srlist_xml(list, rc ? 0 : 1);
    return 0;
}

static int
ext_create(const char *state_dir, const char *sr_uuid,
           const struct sm_map *device_config, uint64_t physical_size,
           char **ret_err)
{
    const char *force = sm_map_get(device_config, "force");
    char *mount_point = mount_point_of(state_dir, sr_uuid);
    const char *device;
    char found[37];
    bool is_file;
    int rc;

    (void) physical_size;
    rc = ext_device(device_config, &device, &is_file, ret_err);
    if (rc) {
        goto out;
    }
    if (!(force && !strcmp(force, "true"))) {
        rc = ext_peek(device_config, found, ret_err);
        if (!rc) {
            rc = sm_fail(ret_err, -EEXIST, "%s already holds SR %s", device,
                         found);
            goto out;
        } else if (rc != -ENOENT) {
            goto out;
        }
    }
    {
        const char *argv[] = { "mkfs.ext4", "-F", "-q", "-L", "xapi-sr",
                               device, NULL };

        rc = sm_run(argv, NULL, ret_err);
        if (rc) {
            goto out;
        }
    }
    rc = ext_mount(device_config, mount_point, ret_err);
    if (rc) {
        goto out;
    }
    rc = marker_write(mount_point, sr_uuid);
    if (rc) {
        sm_fail(ret_err, rc, "%s: cannot write the SR marker: %s", mount_point,
                strerror(-rc));
    }
    do_umount(mount_point);
out:
    free(mount_point);
    return rc;
}

static int
ext_attach(const char *state_dir, const char *sr_uuid,
           const struct sm_map *device_config, struct sm_sr **ret_sr,
           char **ret_err)
{
    char *mount_point = mount_point_of(state_dir, sr_uuid);
    int rc;

    if (!is_mounted(mount_point)) {
        rc = ext_mount(device_config, mount_point, ret_err);
        if (rc) {
            free(mount_point);
            return rc;
        }
    }
    return sr_open_mounted(SM_FILE_KIND_EXT, sr_uuid, mount_point, ret_sr,
                           ret_err);
}

static int
ext_destroy(const char *state_dir, const char *sr_uuid,
            const struct sm_map *device_config, char **ret_err)
{
    char *mount_point = mount_point_of(state_dir, sr_uuid);
    bool mounted = is_mounted(mount_point);
    int rc;

    if (!mounted) {
        rc = ext_mount(device_config, mount_point, ret_err);
        if (rc) {
            goto out;
        }
    }
    if (!marker_is(mount_point, sr_uuid)) {
        rc = sm_fail(ret_err, -ENOENT, "no SR %s on the device", sr_uuid);
    } else {
        rc = sr_wipe(mount_point, ret_err);
    }
    if (!mounted) {
        do_umount(mount_point);
    }
out:
    free(mount_point);
    return rc;
}

static const struct sm_kv ext_configuration[] = {
    { "device", "local block device (required): formatted with ext4 on "
      "SR.create; a regular file is mounted through a loop device" },
    { NULL, NULL },
};

const struct sm_driver sm_ext_driver = {
    .type = "ext",
    .name_label = "Local EXT4 VHD",
    .name_description = "SR plugin keeping disks as VHD files on a local "
                        "ext4 filesystem",
    .configuration = ext_configuration,
    .shared = false,
    .probe = ext_probe,
    .create = ext_create,
    .destroy = ext_destroy,
    .attach = ext_attach,
    FILE_DRIVER_COMMON,
};

/* ---- the nfs driver ---- */

/* XenServer's soft mount: 13.3 s before a retry (timeo is in tenths of a
 * second), retrying for ever, and no attribute caching of directories so
 * that every host sees new VHD files at once. */
#define NFS_TIMEO "133"
#define NFS_RETRANS "2147483647"

struct nfs_target {
    const char *server;
    const char *serverpath;
    const char *version;
    const char *options;
};

static int
nfs_target(const struct sm_map *device_config, bool need_path,
           struct nfs_target *ret, char **ret_err)
{
    static const char *const versions[] = { "3", "4", "4.0", "4.1", "4.2" };
    struct nfs_target t;
    bool ok = false;

    t.server = sm_map_get(device_config, "server");
    t.serverpath = sm_map_get(device_config, "serverpath");
    t.version = sm_map_get(device_config, "nfsversion");
    t.options = sm_map_get(device_config, "options");
    if (!t.server || !t.server[0] || strpbrk(t.server, " ,/\t\n")) {
        return sm_fail(ret_err, -EINVAL, "device_config:server is required");
    }
    if (need_path && (!t.serverpath || t.serverpath[0] != '/')) {
        return sm_fail(ret_err, -EINVAL, "device_config:serverpath must be an "
                       "absolute path on the server");
    }
    if (t.serverpath && (t.serverpath[0] != '/'
                         || strstr(t.serverpath, "/../"))) {
        return sm_fail(ret_err, -EINVAL, "bad device_config:serverpath");
    }
    if (!t.version || !t.version[0]) {
        t.version = "3";
    }
    for (size_t i = 0; i < ARRAY_SIZE(versions); i++) {
        ok = ok || !strcmp(t.version, versions[i]);
    }
    if (!ok) {
        return sm_fail(ret_err, -EINVAL, "unsupported nfsversion \"%s\"",
                       t.version);
    }
    if (t.options && strpbrk(t.options, " \t\n")) {
        return sm_fail(ret_err, -EINVAL, "bad device_config:options");
    }
    *ret = t;
    return 0;
}

static int
nfs_mount(const struct nfs_target *t, const char *subdir,
          const char *mount_point, char **ret_err)
{
    struct ds source = DS_EMPTY, options = DS_EMPTY;
    size_t len = strlen(t->serverpath);
    int rc;

    /* An IPv6 address is bracketed so that mount finds the path. */
    if (strchr(t->server, ':') && t->server[0] != '[') {
        ds_put_fmt(&source, "[%s]:", t->server);
    } else {
        ds_put_fmt(&source, "%s:", t->server);
    }
    while (len > 1 && t->serverpath[len - 1] == '/') {
        len--;
    }
    ds_put(&source, t->serverpath, len);
    if (subdir) {
        ds_put_fmt(&source, "%s%s", len > 1 ? "/" : "", subdir);
    }
    ds_put_fmt(&options, "soft,proto=tcp,vers=%s,acdirmin=0,acdirmax=0,"
               "timeo=" NFS_TIMEO ",retrans=" NFS_RETRANS, t->version);
    if (t->options && t->options[0]) {
        ds_put_fmt(&options, ",%s", t->options);
    }
    rc = sm_mount("nfs", ds_cstr(&options), ds_cstr(&source), mount_point,
                  ret_err);
    ds_destroy(&source);
    ds_destroy(&options);
    return rc;
}

static int
nfs_probe_exports(const struct nfs_target *t, char **ret_xml, char **ret_err)
{
    const char *argv[] = { "showmount", "-e", "--no-headers", t->server,
                           NULL };
    struct ds xml = DS_EMPTY;
    char *out = NULL;
    int rc;

    rc = sm_run(argv, &out, ret_err);
    if (rc) {
        goto out;
    }
    ds_put_cstr(&xml, "<?xml version=\"1.0\" ?>\n<nfs-exports>\n");
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *path = line, *acl;

        while (*path == ' ' || *path == '\t') {
            path++;
        }
        if (!*path) {
            continue;
        }
        acl = path + strcspn(path, " \t");
        if (*acl) {
            *acl++ = '\0';
            acl += strspn(acl, " \t");
        }
        ds_put_cstr(&xml, "\t<Export>\n\t\t<Target>");
        ds_put_xml_escaped(&xml, t->server, strlen(t->server));
        ds_put_cstr(&xml, "</Target>\n\t\t<Path>");
        ds_put_xml_escaped(&xml, path, strlen(path));
        ds_put_cstr(&xml, "</Path>\n\t\t<Accesslist>");
        ds_put_xml_escaped(&xml, acl, strlen(acl));
        ds_put_cstr(&xml, "</Accesslist>\n\t</Export>\n");
    }
    ds_put_cstr(&xml, "</nfs-exports>\n");
    *ret_xml = ds_steal(&xml);
out:
    ds_destroy(&xml);
    free(out);
    return rc;
}

static int
nfs_probe(const struct sm_map *device_config, const struct sm_map *sm_config,
          char **ret_xml, char **ret_err)
{
    char tmpl[] = "/tmp/sm-nfs-probe.XXXXXX";
    const char **uuids = NULL;
    struct nfs_target t;
    struct dirent *de;
    size_t n = 0;
    DIR *d = NULL;
    bool mounted = false;
    int rc;

    (void) sm_config;
    rc = nfs_target(device_config, false, &t, ret_err);
    if (rc) {
        return rc;
    }
    if (!t.serverpath) {
        return nfs_probe_exports(&t, ret_xml, ret_err);
    }
    if (!mkdtemp(tmpl)) {
        return sm_fail(ret_err, -errno, "mkdtemp: %s", strerror(errno));
    }
    rc = nfs_mount(&t, NULL, tmpl, ret_err);
    if (rc) {
        goto out;
    }
    mounted = true;
    d = opendir(tmpl);
    if (!d) {
        rc = sm_fail(ret_err, -errno, "%s: %s", tmpl, strerror(errno));
        goto out;
    }
    while ((de = readdir(d))) {
        if (uuid_is_valid(de->d_name)) {
            uuids = xrealloc(uuids, (n + 1) * sizeof *uuids);
            uuids[n++] = xstrdup(de->d_name);
        }
    }
    *ret_xml = sm_srlist_xml(uuids, n);
    rc = 0;
out:
    if (d) {
        closedir(d);
    }
    for (size_t i = 0; i < n; i++) {
        free((char *) uuids[i]);
    }
    free(uuids);
    if (mounted) {
        do_umount(tmpl);
    } else {
        rmdir(tmpl);
    }
    return rc;
}

/* Mounts the export device_config names at mount_point, and says where
 * the directory of SR sr_uuid is in it (malloc'd). */
static int
nfs_mount_export(const struct sm_map *device_config, const char *sr_uuid,
                 const char *mount_point, struct nfs_target *ret_t,
                 char **ret_dir, char **ret_err)
{
    int rc = nfs_target(device_config, true, ret_t, ret_err);

    if (!rc) {
        rc = nfs_mount(ret_t, NULL, mount_point, ret_err);
    }
    if (!rc) {
        *ret_dir = xasprintf("%s/%s", mount_point, sr_uuid);
    }
    return rc;
}

static int
nfs_create(const char *state_dir, const char *sr_uuid,
           const struct sm_map *device_config, uint64_t physical_size,
           char **ret_err)
{
    char *mount_point = mount_point_of(state_dir, sr_uuid);
    char *dir = NULL;
    struct nfs_target t;
    int rc;

    (void) physical_size;
    /* The export itself is mounted just long enough to make the SR's
     * directory in it. */
    rc = nfs_mount_export(device_config, sr_uuid, mount_point, &t, &dir,
                          ret_err);
    if (rc) {
        goto out;
    }
    if (mkdir(dir, 0755) && errno != EEXIST) {
        rc = sm_fail(ret_err, -errno, "%s: %s", dir, strerror(errno));
    } else {
        rc = sr_format(dir, sr_uuid, device_config, ret_err);
    }
    do_umount(mount_point);
out:
    free(dir);
    free(mount_point);
    return rc;
}

static int
nfs_attach(const char *state_dir, const char *sr_uuid,
           const struct sm_map *device_config, struct sm_sr **ret_sr,
           char **ret_err)
{
    char *mount_point = mount_point_of(state_dir, sr_uuid);
    struct nfs_target t;
    int rc;

    rc = nfs_target(device_config, true, &t, ret_err);
    if (rc) {
        free(mount_point);
        return rc;
    }
    if (!is_mounted(mount_point)) {
        rc = nfs_mount(&t, sr_uuid, mount_point, ret_err);
        if (rc) {
            free(mount_point);
            return rc;
        }
    }
    return sr_open_mounted(SM_FILE_KIND_NFS, sr_uuid, mount_point, ret_sr,
                           ret_err);
}

static int
nfs_destroy(const char *state_dir, const char *sr_uuid,
            const struct sm_map *device_config, char **ret_err)
{
    char *mount_point = xasprintf("%s/sr-mount/%s-destroy", state_dir,
                                  sr_uuid);
    char *dir = NULL;
    struct nfs_target t;
    int rc;

    rc = nfs_mount_export(device_config, sr_uuid, mount_point, &t, &dir,
                          ret_err);
    if (rc) {
        goto out;
    }
    if (!marker_is(dir, sr_uuid)) {
        rc = sm_fail(ret_err, -ENOENT, "no SR %s on %s:%s", sr_uuid, t.server,
                     t.serverpath);
    } else {
        rc = sr_wipe(dir, ret_err);
        if (!rc) {
            rmdir(dir);
        }
    }
    do_umount(mount_point);
out:
    free(dir);
    free(mount_point);
    return rc;
}

static const struct sm_kv nfs_configuration[] = {
    { "server", "hostname or IP address of the NFS server (required)" },
    { "serverpath", "path of the export on the server (required); the SR "
      "lives in SERVERPATH/SR-UUID" },
    { "nfsversion", "NFS protocol version: 3 (default), 4, 4.0, 4.1 or "
      "4.2" },
    { "options", "extra mount options, appended to the defaults" },
    { NULL, NULL },
};

const struct sm_driver sm_nfs_driver = {
    .type = "nfs",
    .name_label = "NFS VHD",
    .name_description = "SR plugin keeping disks as VHD files on an NFS "
                        "export",
    .configuration = nfs_configuration,
    .shared = true,
    .probe = nfs_probe,
    .create = nfs_create,
    .destroy = nfs_destroy,
    .attach = nfs_attach,
    FILE_DRIVER_COMMON,
};
