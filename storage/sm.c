/* sm.c — the SR driver registry and the helpers every driver shares
 * (storage/sm.h): maps, VDI infos, attachments, running helper programs
 * (mount, mkfs, showmount...) and the crash points that the crash-safety
 * tests use to kill a driver between two steps of an operation; and the
 * drivers' internal helpers (storage/sm-int.h).
 *
 * The drivers themselves live in sm-file.c (file, ext, nfs), sm-iso.c,
 * sm-lvm.c and sm-sim.c. */
#include <config.h>

#include "sm.h"
#include "sm-int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

extern char **environ;

/* The order in which SM records are listed. */
static const struct sm_driver *const drivers[] = {
    &sm_ext_driver,
    &sm_file_driver,
    &sm_nfs_driver,
    &sm_lvm_driver,
    &sm_iso_driver,
    &sm_sim_driver,
};

const struct sm_driver *const *
sm_drivers(size_t *ret_n)
{
    *ret_n = ARRAY_SIZE(drivers);
    return drivers;
}

const struct sm_driver *
sm_driver_find(const char *type)
{
    for (size_t i = 0; i < ARRAY_SIZE(drivers); i++) {
        if (type && !strcmp(drivers[i]->type, type)) {
            return drivers[i];
        }
    }
    return NULL;
}

const char *
sm_map_get(const struct sm_map *map, const char *key)
{
    if (!map) {
        return NULL;
    }
    for (size_t i = 0; i < map->n; i++) {
        if (map->kv[i].key && !strcmp(map->kv[i].key, key)) {
            return map->kv[i].value;
        }
    }
    return NULL;
}

void
sm_vdi_info_clear(struct sm_vdi_info *info)
{
    if (!info) {
        return;
    }
    free(info->location);
    free(info->format);
    for (size_t i = 0; i < info->n_sm_config; i++) {
        free((char *) info->sm_config[i].key);
        free((char *) info->sm_config[i].value);
    }
    free(info->sm_config);
    memset(info, 0, sizeof *info);
}

void
sm_vdi_info_set_config(struct sm_vdi_info *info, const char *key,
                       const char *value)
{
    for (size_t i = 0; i < info->n_sm_config; i++) {
        if (!strcmp(info->sm_config[i].key, key)) {
            free((char *) info->sm_config[i].value);
            info->sm_config[i].value = xstrdup(value);
            return;
        }
    }
    info->sm_config = xrealloc(info->sm_config, (info->n_sm_config + 1)
                               * sizeof *info->sm_config);
    info->sm_config[info->n_sm_config].key = xstrdup(key);
    info->sm_config[info->n_sm_config].value = xstrdup(value);
    info->n_sm_config++;
}

void
sm_attach_clear(struct sm_attach *a)
{
    if (!a) {
        return;
    }
    free(a->path);
    free(a->format);
    memset(a, 0, sizeof *a);
}

void
sm_crash_point(const char *name)
{
    /* One getenv per step: negligible next to the fsyncs around it. */
    const char *at = getenv("SM_CRASH_AT");

    if (at && !strcmp(at, name)) {
        _exit(137);
    }
}

/* ---- the drivers' internal helpers (sm-int.h) ---- */

const char *const sm_vhd_capabilities[] = {
    "SR_PROBE", "SR_UPDATE", "VDI_CREATE", "VDI_DELETE", "VDI_ATTACH",
    "VDI_DETACH", "VDI_RESIZE", "VDI_CLONE", "VDI_SNAPSHOT",
    "VDI_INTRODUCE", "VDI_UPDATE", "ATOMIC_PAUSE", "THIN_PROVISIONING",
    NULL
};

int
sm_fail(char **ret_err, int rc, const char *fmt, ...)
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

int
sm_mkdir_p(const char *path, mode_t mode)
{
    char *copy = xstrdup(path);
    int rc = 0;

    for (char *p = copy + 1; ; p++) {
        if (*p == '/' || !*p) {
            char c = *p;

            *p = '\0';
            if (mkdir(copy, mode) && errno != EEXIST) {
                rc = -errno;
                break;
            }
            *p = c;
            if (!c) {
                break;
            }
        }
    }
    free(copy);
    return rc;
}

int
sm_stat_filesystem(const char *dir, struct sm_sr_stat *ret_stat,
                   char **ret_err)
{
    struct statvfs vfs;

    if (statvfs(dir, &vfs)) {
        return sm_fail(ret_err, -errno, "%s: %s", dir, strerror(errno));
    }
    ret_stat->physical_size = (uint64_t) vfs.f_blocks * vfs.f_frsize;
    ret_stat->physical_utilisation = (uint64_t) (vfs.f_blocks - vfs.f_bfree)
                                     * vfs.f_frsize;
    ret_stat->free_space = (uint64_t) vfs.f_bavail * vfs.f_frsize;
    return 0;
}

int
sm_mount(const char *type, const char *options, const char *source,
         const char *mount_point, char **ret_err)
{
    const char *argv[] = { "mount", "-t", type, "-o", options, source,
                           mount_point, NULL };
    int rc;

    rc = sm_mkdir_p(mount_point, 0755);
    if (rc) {
        return sm_fail(ret_err, rc, "%s: %s", mount_point, strerror(-rc));
    }
    return sm_run(argv, NULL, ret_err);
}

char *
sm_srlist_xml(const char *const *uuids, size_t n)
{
    struct ds xml = DS_EMPTY;

    ds_put_cstr(&xml, "<?xml version=\"1.0\" ?>\n<SRlist>\n");
    for (size_t i = 0; i < n; i++) {
        ds_put_cstr(&xml, "\t<SR>\n\t\t<UUID>");
        ds_put_xml_escaped(&xml, uuids[i], strlen(uuids[i]));
        ds_put_cstr(&xml, "</UUID>\n\t</SR>\n");
    }
    ds_put_cstr(&xml, "</SRlist>\n");
    return ds_steal(&xml);
}

void
sm_umount(const char *mount_point)
{
    const char *argv[] = { "umount", mount_point, NULL };
    char *err = NULL;

    if (sm_run(argv, NULL, &err)) {
        LOG_WARN("%s", err);
    }
    free(err);
}

bool
sm_gc_hooks_attached(const struct sm_gc_hooks *hooks, const char *vdi_uuid)
{
    return hooks && hooks->is_attached
           && hooks->is_attached(hooks->aux, vdi_uuid);
}

/* ---- running helper programs ---- */

sm_run_fn *sm_run_hook;

/* Set while this thread runs the hook, so that a hook which wants the real
 * program (a test that turns an NFS mount into a bind mount) can call
 * sm_run() without coming back to itself. */
static __thread bool in_hook;

/* Finds a program the way a shell would, and then in the system
 * directories, which a daemon started with a short PATH may lack. */
static char *
find_program(const char *name)
{
    const char *path = getenv("PATH");
    struct ds dirs = DS_EMPTY;
    char *result = NULL;

    if (strchr(name, '/')) {
        return access(name, X_OK) ? NULL : xstrdup(name);
    }
    ds_put_fmt(&dirs, "%s:/usr/sbin:/sbin:/usr/bin:/bin",
               path ? path : "");
    for (char *save = NULL, *dir = strtok_r(dirs.s, ":", &save); dir;
         dir = strtok_r(NULL, ":", &save)) {
        char *candidate = xasprintf("%s/%s", dir, name);
        struct stat st;

        if (!stat(candidate, &st) && S_ISREG(st.st_mode)
            && !access(candidate, X_OK)) {
            result = candidate;
            break;
        }
        free(candidate);
    }
    ds_destroy(&dirs);
    return result;
}

static int
run_program(const char *const *argv, char **ret_stdout, char **ret_err)
{
    posix_spawn_file_actions_t actions;
    struct ds out = DS_EMPTY, err = DS_EMPTY;
    int out_pipe[2] = { -1, -1 }, err_pipe[2] = { -1, -1 };
    bool have_actions = false;
    char *program = NULL;
    pid_t pid = -1;
    int rc, status;

    program = find_program(argv[0]);
    if (!program) {
        rc = -ENOENT;
        *ret_err = xasprintf("%s: program not found", argv[0]);
        goto out;
    }
    if (pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC)) {
        rc = -errno;
        *ret_err = xasprintf("%s: pipe: %s", argv[0], strerror(errno));
        goto out;
    }
    posix_spawn_file_actions_init(&actions);
    have_actions = true;
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
    rc = posix_spawn(&pid, program, &actions, NULL, (char *const *) argv,
                     environ);
    if (rc) {
        *ret_err = xasprintf("%s: %s", argv[0], strerror(rc));
        rc = rc == ENOENT ? -ENOENT : -EIO;
        pid = -1;
        goto out;
    }
    close(out_pipe[1]);
    close(err_pipe[1]);
    out_pipe[1] = err_pipe[1] = -1;

    /* Read both pipes together: a program that fills one while we wait on
     * the other would block for ever. */
    for (int open_fds = 2; open_fds > 0;) {
        struct pollfd pfd[2] = {
            { .fd = out_pipe[0], .events = POLLIN },
            { .fd = err_pipe[0], .events = POLLIN },
        };

        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        for (int i = 0; i < 2; i++) {
            char buf[4096];
            ssize_t n;

            if (pfd[i].fd < 0 || !pfd[i].revents) {
                continue;
            }
            n = read(pfd[i].fd, buf, sizeof buf);
            if (n > 0) {
                ds_put(i ? &err : &out, buf, n);
            } else if (n == 0 || errno != EINTR) {
                close(pfd[i].fd);
                if (i) {
                    err_pipe[0] = -1;
                } else {
                    out_pipe[0] = -1;
                }
                open_fds--;
            }
        }
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            status = -1;
            break;
        }
    }
    pid = -1;
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status)) {
        size_t len = err.len;

        while (len && (err.s[len - 1] == '\n' || err.s[len - 1] == ' ')) {
            len--;
        }
        *ret_err = xasprintf("%s: %.*s", argv[0], (int) len,
                             len ? err.s : "failed");
        rc = -EIO;
        goto out;
    }
    if (ret_stdout) {
        *ret_stdout = out.s ? ds_steal(&out) : xstrdup("");
    }
    rc = 0;
out:
    if (have_actions) {
        posix_spawn_file_actions_destroy(&actions);
    }
    for (int i = 0; i < 2; i++) {
        if (out_pipe[i] >= 0) {
            close(out_pipe[i]);
        }
        if (err_pipe[i] >= 0) {
            close(err_pipe[i]);
        }
    }
    ds_destroy(&out);
    ds_destroy(&err);
    free(program);
    return rc;
}

int
sm_run(const char *const *argv, char **ret_stdout, char **ret_err)
{
    int rc;

    if (sm_run_hook && !in_hook) {
        in_hook = true;
        rc = sm_run_hook(argv, ret_stdout, ret_err);
        in_hook = false;
        return rc;
    }
    return run_program(argv, ret_stdout, ret_err);
}
