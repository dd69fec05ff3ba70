/* sm-sim.c — the sim SR driver, for tests of the daemon's failure paths:
 * a file SR (sm-file.c does all the work) whose device_config can shrink
 * it, make operations fail and make them slow.
 *
 *   location  directory of the SR (default STATE_DIR/sr-sim/UUID)
 *   size      bytes: stat() reports this as physical_size and counts every
 *             VDI's virtual size in full (thick), and vdi_create,
 *             vdi_snapshot and vdi_clone fail -ENOSPC beyond it
 *   fail      comma-separated operations that fail -EIO: create, attach,
 *             vdi_create, vdi_snapshot, vdi_clone, vdi_resize, vdi_attach,
 *             vdi_destroy, scan, gc
 *   slow      milliseconds every metadata operation sleeps first
 *
 * The struct sm_sr pointers it hands out are the file driver's; the
 * simulated settings of each live in a small table beside them. */
#include <config.h>

#include "sm.h"
#include "sm-int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

enum sim_op {
    SIM_CREATE,
    SIM_ATTACH,
    SIM_VDI_CREATE,
    SIM_VDI_SNAPSHOT,
    SIM_VDI_CLONE,
    SIM_VDI_RESIZE,
    SIM_VDI_ATTACH,
    SIM_VDI_DESTROY,
    SIM_SCAN,
    SIM_GC,
    SIM_N_OPS
};

static const char *const sim_op_names[SIM_N_OPS] = {
    "create", "attach", "vdi_create", "vdi_snapshot", "vdi_clone",
    "vdi_resize", "vdi_attach", "vdi_destroy", "scan", "gc",
};

struct sim_config {
    uint64_t size;              /* 0: the real filesystem's */
    unsigned int fail;          /* bit per enum sim_op */
    int slow_ms;
};

struct sim_sr {
    struct sm_sr *sr;           /* the file driver's */
    struct sim_config config;
    struct sim_sr *next;
};

static pthread_mutex_t sim_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sim_sr *sim_srs;

static int
sim_parse(const struct sm_map *device_config, struct sim_config *ret,
          char **ret_err)
{
    const char *size = sm_map_get(device_config, "size");
    const char *failing = sm_map_get(device_config, "fail");
    const char *slow = sm_map_get(device_config, "slow");
    struct sim_config c = { 0, 0, 0 };
    int64_t v;

    if (size && size[0]) {
        if (str_to_int64(size, &v) || v <= 0) {
            return sm_fail(ret_err, -EINVAL, "device_config:size must be a "
                           "positive number of bytes");
        }
        c.size = v;
    }
    if (slow && slow[0]) {
        if (str_to_int64(slow, &v) || v < 0 || v > 600000) {
            return sm_fail(ret_err, -EINVAL, "device_config:slow must be "
                           "milliseconds");
        }
        c.slow_ms = v;
    }
    if (failing && failing[0]) {
        char *copy = xstrdup(failing);

        for (char *save = NULL, *op = strtok_r(copy, ",", &save); op;
             op = strtok_r(NULL, ",", &save)) {
            int i;

            for (i = 0; i < SIM_N_OPS; i++) {
                if (!strcmp(op, sim_op_names[i])) {
                    c.fail |= 1u << i;
                    break;
                }
            }
            if (i == SIM_N_OPS) {
                int rc = sm_fail(ret_err, -EINVAL, "device_config:fail: "
                                 "unknown operation \"%s\"", op);

                free(copy);
                return rc;
            }
        }
        free(copy);
    }
    *ret = c;
    return 0;
}

/* device_config for the file driver: location filled in. */
struct sim_map {
    struct sm_kv *kv;
    struct sm_map map;
    char *location;
};

static void
sim_map_init(struct sim_map *m, const char *state_dir, const char *sr_uuid,
             const struct sm_map *device_config)
{
    size_t n = device_config ? device_config->n : 0;

    m->kv = xcalloc(n + 1, sizeof *m->kv);
    m->location = NULL;
    for (size_t i = 0; i < n; i++) {
        m->kv[i] = device_config->kv[i];
    }
    if (!sm_map_get(device_config, "location")) {
        m->location = xasprintf("%s/sr-sim/%s", state_dir, sr_uuid);
        m->kv[n].key = "location";
        m->kv[n].value = m->location;
        n++;
    }
    m->map.kv = m->kv;
    m->map.n = n;
}

static void
sim_map_clear(struct sim_map *m)
{
    free(m->kv);
    free(m->location);
}

static void
sim_sleep(int ms)
{
    struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000 };

    while (ms > 0 && nanosleep(&ts, &ts) && errno == EINTR) {
        continue;
    }
}

/* Applies settings c to operation op: sleeps "slow" first if slow, then
 * fails -EIO if "fail" names op (SIM_N_OPS: no operation of the list). */
static int
sim_apply(const struct sim_config *c, enum sim_op op, bool slow,
          char **ret_err)
{
    if (slow) {
        sim_sleep(c->slow_ms);
    }
    if (op < SIM_N_OPS && (c->fail & (1u << op))) {
        return sm_fail(ret_err, -EIO, "simulated failure of %s",
                       sim_op_names[op]);
    }
    return 0;
}

/* The settings of sr; applies "slow" and "fail" for op.  Returns 0 or
 * -EIO. */
static int
sim_enter(struct sm_sr *sr, enum sim_op op, bool metadata,
          struct sim_config *ret_config, char **ret_err)
{
    struct sim_config c = { 0, 0, 0 };

    pthread_mutex_lock(&sim_lock);
    for (struct sim_sr *s = sim_srs; s; s = s->next) {
        if (s->sr == sr) {
            c = s->config;
            break;
        }
    }
    pthread_mutex_unlock(&sim_lock);
    if (ret_config) {
        *ret_config = c;
    }
    return sim_apply(&c, op, metadata, ret_err);
}

/* Sum of the virtual sizes of every VDI: the thick utilisation. */
static int
sim_used(struct sm_sr *sr, uint64_t *ret_used, char **ret_err)
{
    struct sm_vdi_info *vdis = NULL;
    uint64_t used = 0;
    size_t n = 0;
    int rc;

    rc = sm_file_driver.scan(sr, &vdis, &n, ret_err);
    if (rc) {
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        used += vdis[i].virtual_size;
        sm_vdi_info_clear(&vdis[i]);
    }
    free(vdis);
    *ret_used = used;
    return 0;
}

static int
sim_check_space(struct sm_sr *sr, const struct sim_config *c, uint64_t more,
                char **ret_err)
{
    uint64_t used;
    int rc;

    if (!c->size) {
        return 0;
    }
    rc = sim_used(sr, &used, ret_err);
    if (rc) {
        return rc;
    }
    if (used + more > c->size || used + more < used) {
        return sm_fail(ret_err, -ENOSPC, "simulated SR full: %llu bytes "
                       "needed, %llu free", (unsigned long long) more,
                       (unsigned long long) (c->size > used ? c->size - used
                                             : 0));
    }
    return 0;
}

static int
sim_probe(const struct sm_map *device_config, const struct sm_map *sm_config,
          char **ret_xml, char **ret_err)
{
    if (!sm_map_get(device_config, "location")) {
        /* Without a location the SRs live under a state directory the
         * probe does not know. */
        *ret_xml = sm_srlist_xml(NULL, 0);
        return 0;
    }
    return sm_file_driver.probe(device_config, sm_config, ret_xml, ret_err);
}

static int
sim_create(const char *state_dir, const char *sr_uuid,
           const struct sm_map *device_config, uint64_t physical_size,
           char **ret_err)
{
    struct sim_config c;
    struct sim_map m;
    int rc;

    rc = sim_parse(device_config, &c, ret_err);
    if (!rc) {
        rc = sim_apply(&c, SIM_CREATE, true, ret_err);
    }
    if (rc) {
        return rc;
    }
    sim_map_init(&m, state_dir, sr_uuid, device_config);
    rc = sm_file_driver.create(state_dir, sr_uuid, &m.map, physical_size,
                               ret_err);
    sim_map_clear(&m);
    return rc;
}

static int
sim_destroy(const char *state_dir, const char *sr_uuid,
            const struct sm_map *device_config, char **ret_err)
{
    struct sim_map m;
    int rc;

    sim_map_init(&m, state_dir, sr_uuid, device_config);
    rc = sm_file_driver.destroy(state_dir, sr_uuid, &m.map, ret_err);
    sim_map_clear(&m);
    return rc;
}

static int
sim_attach(const char *state_dir, const char *sr_uuid,
           const struct sm_map *device_config, struct sm_sr **ret_sr,
           char **ret_err)
{
    struct sm_sr *sr = NULL;
    struct sim_config c;
    struct sim_sr *s;
    struct sim_map m;
    int rc;

    rc = sim_parse(device_config, &c, ret_err);
    if (!rc) {
        rc = sim_apply(&c, SIM_ATTACH, false, ret_err);
    }
    if (rc) {
        return rc;
    }
    sim_map_init(&m, state_dir, sr_uuid, device_config);
    rc = sm_file_driver.attach(state_dir, sr_uuid, &m.map, &sr, ret_err);
    sim_map_clear(&m);
    if (rc) {
        return rc;
    }
    s = xcalloc(1, sizeof *s);
    s->sr = sr;
    s->config = c;
    pthread_mutex_lock(&sim_lock);
    s->next = sim_srs;
    sim_srs = s;
    pthread_mutex_unlock(&sim_lock);
    *ret_sr = sr;
    return 0;
}

static void
sim_detach(struct sm_sr *sr)
{
    struct sim_sr *found = NULL;

    if (!sr) {
        return;
    }
    pthread_mutex_lock(&sim_lock);
    for (struct sim_sr **p = &sim_srs; *p; p = &(*p)->next) {
        if ((*p)->sr == sr) {
            found = *p;
            *p = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&sim_lock);
    free(found);
    sm_file_driver.detach(sr);
}

static int
sim_stat(struct sm_sr *sr, struct sm_sr_stat *ret_stat, char **ret_err)
{
    struct sim_config c;
    uint64_t used;
    int rc;

    sim_enter(sr, SIM_N_OPS, false, &c, NULL);
    if (!c.size) {
        return sm_file_driver.stat(sr, ret_stat, ret_err);
    }
    rc = sim_used(sr, &used, ret_err);
    if (rc) {
        return rc;
    }
    ret_stat->physical_size = c.size;
    ret_stat->physical_utilisation = MIN(used, c.size);
    ret_stat->free_space = c.size > used ? c.size - used : 0;
    return 0;
}

static int
sim_scan(struct sm_sr *sr, struct sm_vdi_info **ret_vdis, size_t *ret_n,
         char **ret_err)
{
    int rc = sim_enter(sr, SIM_SCAN, true, NULL, ret_err);

    return rc ? rc : sm_file_driver.scan(sr, ret_vdis, ret_n, ret_err);
}

static int
sim_vdi_create(struct sm_sr *sr, const char *uuid, uint64_t virtual_size,
               const struct sm_map *sm_config, struct sm_vdi_info *ret_info,
               char **ret_err)
{
    struct sim_config c;
    int rc;

    rc = sim_enter(sr, SIM_VDI_CREATE, true, &c, ret_err);
    if (!rc && virtual_size <= UINT64_MAX - 511) {
        rc = sim_check_space(sr, &c, (virtual_size + 511) / 512 * 512,
                             ret_err);
    }
    return rc ? rc : sm_file_driver.vdi_create(sr, uuid, virtual_size,
                                               sm_config, ret_info, ret_err);
}

static int
sim_vdi_introduce(struct sm_sr *sr, const char *uuid, const char *location,
                  struct sm_vdi_info *ret_info, char **ret_err)
{
    return sm_file_driver.vdi_introduce(sr, uuid, location, ret_info,
                                        ret_err);
}

static int
sim_vdi_info(struct sm_sr *sr, const char *location,
             struct sm_vdi_info *ret_info, char **ret_err)
{
    return sm_file_driver.vdi_info(sr, location, ret_info, ret_err);
}

static int
sim_vdi_destroy(struct sm_sr *sr, const char *location, char **ret_err)
{
    int rc = sim_enter(sr, SIM_VDI_DESTROY, true, NULL, ret_err);

    return rc ? rc : sm_file_driver.vdi_destroy(sr, location, ret_err);
}

/* Snapshot and clone: the new VDI counts in full against size. */
static int
sim_copy_check(struct sm_sr *sr, enum sim_op op, const char *location,
               char **ret_err)
{
    struct sm_vdi_info info;
    struct sim_config c;
    int rc;

    rc = sim_enter(sr, op, true, &c, ret_err);
    if (rc || !c.size) {
        return rc;
    }
    rc = sm_file_driver.vdi_info(sr, location, &info, ret_err);
    if (rc) {
        return rc;
    }
    rc = sim_check_space(sr, &c, info.virtual_size, ret_err);
    sm_vdi_info_clear(&info);
    return rc;
}

static int
sim_vdi_snapshot(struct sm_sr *sr, const char *location, const char *new_uuid,
                 struct sm_vdi_info *ret_info, char **ret_err)
{
    int rc = sim_copy_check(sr, SIM_VDI_SNAPSHOT, location, ret_err);

    return rc ? rc : sm_file_driver.vdi_snapshot(sr, location, new_uuid,
                                                 ret_info, ret_err);
}

static int
sim_vdi_clone(struct sm_sr *sr, const char *location, const char *new_uuid,
              struct sm_vdi_info *ret_info, char **ret_err)
{
    int rc = sim_copy_check(sr, SIM_VDI_CLONE, location, ret_err);

    return rc ? rc : sm_file_driver.vdi_clone(sr, location, new_uuid,
                                              ret_info, ret_err);
}

static int
sim_vdi_resize(struct sm_sr *sr, const char *location, uint64_t new_size,
               struct sm_vdi_info *ret_info, char **ret_err)
{
    struct sm_vdi_info info;
    struct sim_config c;
    int rc;

    rc = sim_enter(sr, SIM_VDI_RESIZE, true, &c, ret_err);
    if (rc) {
        return rc;
    }
    if (c.size) {
        rc = sm_file_driver.vdi_info(sr, location, &info, ret_err);
        if (rc) {
            return rc;
        }
        if (new_size > info.virtual_size) {
            rc = sim_check_space(sr, &c, new_size - info.virtual_size,
                                 ret_err);
        }
        sm_vdi_info_clear(&info);
        if (rc) {
            return rc;
        }
    }
    return sm_file_driver.vdi_resize(sr, location, new_size, ret_info,
                                     ret_err);
}

static int
sim_vdi_data_destroy(struct sm_sr *sr, const char *location, char **ret_err)
{
    int rc = sim_enter(sr, SIM_N_OPS, true, NULL, ret_err);

    return rc ? rc : sm_file_driver.vdi_data_destroy(sr, location, ret_err);
}

static int
sim_vdi_attach(struct sm_sr *sr, const char *location, bool read_write,
               struct sm_attach *ret_attach, char **ret_err)
{
    int rc = sim_enter(sr, SIM_VDI_ATTACH, false, NULL, ret_err);

    return rc ? rc : sm_file_driver.vdi_attach(sr, location, read_write,
                                               ret_attach, ret_err);
}

static void
sim_vdi_detach(struct sm_sr *sr, const char *location)
{
    sm_file_driver.vdi_detach(sr, location);
}

static int
sim_gc_step(struct sm_sr *sr, const struct sm_gc_hooks *hooks, bool *ret_more,
            char **ret_err)
{
    int rc = sim_enter(sr, SIM_GC, true, NULL, ret_err);

    return rc ? rc : sm_file_driver.gc_step(sr, hooks, ret_more, ret_err);
}

static int
sim_chain_length(struct sm_sr *sr, const char *location, int *ret_len,
                 char **ret_err)
{
    return sm_file_driver.chain_length(sr, location, ret_len, ret_err);
}

static const char *const sim_capabilities[] = {
    "SR_PROBE", "SR_UPDATE", "VDI_CREATE", "VDI_DELETE", "VDI_ATTACH",
    "VDI_DETACH", "VDI_RESIZE", "VDI_CLONE", "VDI_SNAPSHOT",
    "VDI_INTRODUCE", "VDI_UPDATE", "ATOMIC_PAUSE", NULL
};

static const struct sm_kv sim_configuration[] = {
    { "location", "directory of the SR (default STATE_DIR/sr-sim/UUID)" },
    { "size", "simulated size in bytes: VDIs count their full virtual "
      "size against it" },
    { "fail", "comma-separated operations that fail with an I/O error: "
      "create, attach, vdi_create, vdi_snapshot, vdi_clone, vdi_resize, "
      "vdi_attach, vdi_destroy, scan, gc" },
    { "slow", "milliseconds each metadata operation waits first" },
    { NULL, NULL },
};

const struct sm_driver sm_sim_driver = {
    .type = "sim",
    .name_label = "Simulated storage",
    .name_description = "SR plugin for tests: a directory of VHD files "
                        "with simulated size limits, failures and delays",
    .vendor = SM_VENDOR,
    .copyright = SM_COPYRIGHT,
    .version = "1.0",
    .required_api_version = "1.0",
    .capabilities = sim_capabilities,
    .configuration = sim_configuration,
    .content_type = "user",
    .shared = false,
    .thin = false,
    .probe = sim_probe,
    .create = sim_create,
    .destroy = sim_destroy,
    .attach = sim_attach,
    .detach = sim_detach,
    .stat = sim_stat,
    .scan = sim_scan,
    .vdi_create = sim_vdi_create,
    .vdi_introduce = sim_vdi_introduce,
    .vdi_info = sim_vdi_info,
    .vdi_destroy = sim_vdi_destroy,
    .vdi_snapshot = sim_vdi_snapshot,
    .vdi_clone = sim_vdi_clone,
    .vdi_resize = sim_vdi_resize,
    .vdi_data_destroy = sim_vdi_data_destroy,
    .vdi_attach = sim_vdi_attach,
    .vdi_detach = sim_vdi_detach,
    .gc_step = sim_gc_step,
    .chain_length = sim_chain_length,
};
