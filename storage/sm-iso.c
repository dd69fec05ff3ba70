/* sm-iso.c — the iso SR driver: a read-only library of CD images (*.iso,
 * *.img) in a local directory, an NFS export ("server:/path") or a CIFS
 * share ("//server/share"), as XenServer's ISO SRs.
 *
 * Remote libraries are mounted read-only at STATE_DIR/sr-mount/UUID.  A
 * VDI's location is its file name; its uuid is derived from the SR's uuid
 * and that name, so that every scan reports the same uuid for the same
 * file.  Nothing is ever written: creating or deleting VDIs fails -EROFS. */
#include <config.h>

#include "sm.h"
#include "sm-int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

struct sm_sr {
    char uuid[37];
    char *dir;              /* where the images are */
    char *mount_point;      /* what detach() unmounts, or NULL */
    char *credentials;      /* CIFS credentials file to remove, or NULL */
};

enum iso_kind {
    ISO_LOCAL,
    ISO_NFS,
    ISO_CIFS,
};

static int
iso_kind_of(const char *location, enum iso_kind *ret_kind, char **ret_err)
{
    if (!location || !location[0] || strpbrk(location, "\n\t")) {
        return sm_fail(ret_err, -EINVAL, "device_config:location is required: "
                       "a directory, server:/path or //server/share");
    }
    if (!strncmp(location, "//", 2)) {
        *ret_kind = ISO_CIFS;
    } else if (location[0] == '/') {
        *ret_kind = ISO_LOCAL;
    } else if (strchr(location, ':') && strstr(location, ":/")) {
        *ret_kind = ISO_NFS;
    } else {
        return sm_fail(ret_err, -EINVAL, "device_config:location \"%s\" is "
                       "neither a directory, server:/path nor //server/share",
                       location);
    }
    return 0;
}

/* True if name is an image this SR lists: a plain file name (no path,
 * not hidden) ending in .iso or .img. */
static bool
is_image_name(const char *name)
{
    size_t len = strlen(name);

    return len > 4 && name[0] != '.' && !strchr(name, '/')
           && (!strcasecmp(name + len - 4, ".iso")
               || !strcasecmp(name + len - 4, ".img"));
}

/* A stable uuid for (SR, file name): two 64-bit hashes shaped as a
 * version 4 uuid. */
static void
iso_uuid(const char *sr_uuid, const char *name, char *buf)
{
    uint8_t b[16];
    uint64_t h1 = hash_string(name, hash_string(sr_uuid, 0x150150));
    uint64_t h2 = hash_string(name, h1 ^ 0x9e3779b97f4a7c15ull);

    memcpy(b, &h1, 8);
    memcpy(b + 8, &h2, 8);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5],
             b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

static int
iso_info(struct sm_sr *sr, const char *location, struct sm_vdi_info *ret_info,
         char **ret_err)
{
    struct sm_vdi_info info;
    struct stat st;
    char *path;
    int rc;

    if (!location || !is_image_name(location)) {
        return sm_fail(ret_err, -ENOENT, "no image \"%s\" in ISO SR %s",
                       location ? location : "", sr->uuid);
    }
    path = xasprintf("%s/%s", sr->dir, location);
    if (stat(path, &st) || !S_ISREG(st.st_mode)) {
        rc = sm_fail(ret_err, -ENOENT, "no image \"%s\" in ISO SR %s",
                     location, sr->uuid);
        goto out;
    }
    memset(&info, 0, sizeof info);
    iso_uuid(sr->uuid, location, info.uuid);
    info.location = xstrdup(location);
    info.virtual_size = st.st_size;
    info.physical_utilisation = st.st_size;
    info.read_only = true;
    info.format = xstrdup("iso");
    *ret_info = info;
    rc = 0;
out:
    free(path);
    return rc;
}

static void
iso_sr_free(struct sm_sr *sr)
{
    if (sr) {
        free(sr->dir);
        free(sr->mount_point);
        free(sr->credentials);
        free(sr);
    }
}

/* Writes the CIFS credentials to a private file, so that the password
 * does not appear in the process list. */
static int
write_credentials(const char *path, const char *username,
                  const char *password, char **ret_err)
{
    struct ds ds = DS_EMPTY;
    int rc;

    ds_put_fmt(&ds, "username=%s\n", username ? username : "guest");
    if (password) {
        ds_put_fmt(&ds, "password=%s\n", password);
    }
    rc = write_file_atomic(path, ds.s, ds.len, 0600);
    ds_destroy(&ds);
    if (rc) {
        return sm_fail(ret_err, rc, "%s: %s", path, strerror(-rc));
    }
    return 0;
}

static int
iso_attach(const char *state_dir, const char *sr_uuid,
           const struct sm_map *device_config, struct sm_sr **ret_sr,
           char **ret_err)
{
    const char *location = sm_map_get(device_config, "location");
    struct sm_sr *sr = xcalloc(1, sizeof *sr);
    struct ds options = DS_EMPTY;
    const char *type = NULL;
    enum iso_kind kind;
    struct stat st;
    int rc;

    memcpy(sr->uuid, sr_uuid, 37);
    rc = iso_kind_of(location, &kind, ret_err);
    if (rc) {
        goto out;
    }
    if (kind == ISO_LOCAL) {
        if (stat(location, &st) || !S_ISDIR(st.st_mode)) {
            rc = sm_fail(ret_err, -ENOENT, "%s is not a directory", location);
            goto out;
        }
        sr->dir = xstrdup(location);
        *ret_sr = sr;
        sr = NULL;
        goto out;
    }
    sr->mount_point = xasprintf("%s/sr-mount/%s", state_dir, sr_uuid);
    rc = sm_mkdir_p(sr->mount_point, 0755);
    if (rc) {
        rc = sm_fail(ret_err, rc, "%s: %s", sr->mount_point, strerror(-rc));
        goto out;
    }
    if (kind == ISO_NFS) {
        const char *version = sm_map_get(device_config, "nfsversion");

        type = "nfs";
        ds_put_fmt(&options, "ro,soft,proto=tcp,vers=%s,timeo=133,"
                   "retrans=2147483647", version && version[0] ? version
                   : "3");
    } else {
        const char *version = sm_map_get(device_config, "vers");

        type = "cifs";
        sr->credentials = xasprintf("%s/sr-mount/.%s.cred", state_dir,
                                    sr_uuid);
        rc = write_credentials(sr->credentials,
                               sm_map_get(device_config, "username"),
                               sm_map_get(device_config, "cifspassword"),
                               ret_err);
        if (rc) {
            goto out;
        }
        ds_put_fmt(&options, "ro,credentials=%s", sr->credentials);
        if (version && version[0]) {
            ds_put_fmt(&options, ",vers=%s", version);
        }
    }
    rc = sm_mount(type, ds_cstr(&options), location, sr->mount_point,
                  ret_err);
    if (rc) {
        goto out;
    }
    sr->dir = xstrdup(sr->mount_point);
    *ret_sr = sr;
    sr = NULL;
    rc = 0;
out:
    if (sr && sr->credentials) {
        unlink(sr->credentials);
    }
    iso_sr_free(sr);
    ds_destroy(&options);
    return rc;
}

static void
iso_detach(struct sm_sr *sr)
{
    if (!sr) {
        return;
    }
    if (sr->mount_point) {
        sm_umount(sr->mount_point);
        rmdir(sr->mount_point);
    }
    if (sr->credentials) {
        unlink(sr->credentials);
    }
    iso_sr_free(sr);
}

/* An ISO library is not formatted: creating one checks that it can be
 * reached. */
static int
iso_create(const char *state_dir, const char *sr_uuid,
           const struct sm_map *device_config, uint64_t physical_size,
           char **ret_err)
{
    struct sm_sr *sr = NULL;
    int rc;

    (void) physical_size;
    rc = iso_attach(state_dir, sr_uuid, device_config, &sr, ret_err);
    iso_detach(sr);
    return rc;
}

static int
iso_destroy(const char *state_dir, const char *sr_uuid,
            const struct sm_map *device_config, char **ret_err)
{
    /* The images belong to whoever put them there: nothing to remove. */
    (void) state_dir;
    (void) sr_uuid;
    (void) device_config;
    (void) ret_err;
    return 0;
}

static int
iso_stat(struct sm_sr *sr, struct sm_sr_stat *ret_stat, char **ret_err)
{
    int rc = sm_stat_filesystem(sr->dir, ret_stat, ret_err);

    if (!rc) {
        /* Nothing can be created in a library. */
        ret_stat->free_space = 0;
    }
    return rc;
}

static int
iso_scan(struct sm_sr *sr, struct sm_vdi_info **ret_vdis, size_t *ret_n,
         char **ret_err)
{
    struct sm_vdi_info *vdis = NULL;
    struct dirent *de;
    size_t n = 0;
    DIR *d;

    d = opendir(sr->dir);
    if (!d) {
        return sm_fail(ret_err, -errno, "%s: %s", sr->dir, strerror(errno));
    }
    while ((de = readdir(d))) {
        struct sm_vdi_info info;

        if (!is_image_name(de->d_name)
            || iso_info(sr, de->d_name, &info, NULL)) {
            continue;
        }
        vdis = xrealloc(vdis, (n + 1) * sizeof *vdis);
        vdis[n++] = info;
    }
    closedir(d);
    *ret_vdis = vdis ? vdis : xcalloc(1, sizeof *vdis);
    *ret_n = n;
    return 0;
}

static int
iso_vdi_create(struct sm_sr *sr, const char *uuid, uint64_t virtual_size,
               const struct sm_map *sm_config, struct sm_vdi_info *ret_info,
               char **ret_err)
{
    (void) uuid;
    (void) virtual_size;
    (void) sm_config;
    (void) ret_info;
    return sm_fail(ret_err, -EROFS, "ISO SR %s is read-only", sr->uuid);
}

static int
iso_vdi_introduce(struct sm_sr *sr, const char *uuid, const char *location,
                  struct sm_vdi_info *ret_info, char **ret_err)
{
    int rc = iso_info(sr, location, ret_info, ret_err);

    if (!rc && uuid && uuid_is_valid(uuid)) {
        memcpy(ret_info->uuid, uuid, 37);
    }
    return rc;
}

static int
iso_vdi_destroy(struct sm_sr *sr, const char *location, char **ret_err)
{
    (void) location;
    return sm_fail(ret_err, -EROFS, "ISO SR %s is read-only", sr->uuid);
}

static int
iso_vdi_attach(struct sm_sr *sr, const char *location, bool read_write,
               struct sm_attach *ret_attach, char **ret_err)
{
    struct sm_vdi_info info;
    int rc;

    if (read_write) {
        return sm_fail(ret_err, -EROFS, "ISO SR %s is read-only", sr->uuid);
    }
    rc = iso_info(sr, location, &info, ret_err);
    if (rc) {
        return rc;
    }
    sm_vdi_info_clear(&info);
    ret_attach->path = xasprintf("%s/%s", sr->dir, location);
    ret_attach->format = xstrdup("raw");
    ret_attach->read_only = true;
    return 0;
}

static void
iso_vdi_detach(struct sm_sr *sr, const char *location)
{
    (void) sr;
    (void) location;
}

static const char *const iso_capabilities[] = {
    "VDI_INTRODUCE", "VDI_ATTACH", "VDI_DETACH", "VDI_UPDATE", NULL
};

static const struct sm_kv iso_configuration[] = {
    { "location", "the library (required): a local directory, an NFS "
      "export as server:/path, or a CIFS share as //server/share" },
    { "username", "CIFS user name" },
    { "cifspassword", "CIFS password" },
    { "cifspassword_secret", "CIFS password as a secret's uuid (not "
      "resolved by this driver: use cifspassword)" },
    { "vers", "CIFS protocol version (mount.cifs vers=)" },
    { "nfsversion", "NFS protocol version: 3 (default) or 4" },
    { NULL, NULL },
};

const struct sm_driver sm_iso_driver = {
    .type = "iso",
    .name_label = "ISO",
    .name_description = "SR plugin sharing a read-only library of CD "
                        "images (.iso, .img) from a directory, NFS or CIFS",
    .vendor = SM_VENDOR,
    .copyright = SM_COPYRIGHT,
    .version = "1.0",
    .required_api_version = "1.0",
    .capabilities = iso_capabilities,
    .configuration = iso_configuration,
    .content_type = "iso",
    .shared = true,
    .thin = false,
    .probe = NULL,
    .create = iso_create,
    .destroy = iso_destroy,
    .attach = iso_attach,
    .detach = iso_detach,
    .stat = iso_stat,
    .scan = iso_scan,
    .vdi_create = iso_vdi_create,
    .vdi_introduce = iso_vdi_introduce,
    .vdi_info = iso_info,
    .vdi_destroy = iso_vdi_destroy,
    .vdi_attach = iso_vdi_attach,
    .vdi_detach = iso_vdi_detach,
};
