/* sim.c — the simulator provider: a Xen host that exists only in memory.
 *
 * It implements every member of struct xenops_provider (xenops.h) well
 * enough that everything above it — xapi/vm.c and the API tests — runs
 * without Xen: domids, memory accounting, vCPUs, device hotplug, a guest
 * agent, clean shutdowns that take time or are ignored, crashes, suspend
 * images in files and migration streams to another simulated host.  A
 * background thread advances time ("ticks") and answers a control socket
 * through which tests inject crashes and change how a guest behaves.
 * docs/simulator.md describes the configuration keys, the control protocol
 * and the image format; tests/unit/test-xenops-sim.c exercises all of it.
 * Each domain also has a text console (console_open): a socketpair whose
 * far end the same thread serves with a tiny getty and shell.
 *
 * Locking: h->lock protects the domains, the per-VM behaviour settings and
 * the queue of updates.  Updates are queued under h->lock and delivered by
 * the ticker thread after it drops h->lock, holding only h->cb_lock, so a
 * callback that takes its own locks cannot deadlock against a caller that
 * holds those locks while calling into us.  Console sockets are closed
 * only by the ticker thread (or by close() once it has stopped), so the
 * descriptors it polls outside the lock stay its own. */
#include <config.h>
#include "xenops.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define MIB (INT64_C(1) << 20)
#define SIM_MAX_VCPUS ((int) ARRAY_SIZE(((struct xenops_domain_info *) 0) \
                                        ->vcpu_utilisation))
/* Images carry min(memory, this) bytes of pseudo-memory: enough that a
 * stream is not written in one go, small enough for fast tests. */
#define SIM_PAYLOAD_MAX (4 * MIB)
#define SIM_STATE_MAX 65536
#define SIM_IMAGE_MAGIC "XAPISIM1"
#define SIM_MAX_CLIENTS 16
#define SIM_LINE_MAX 4096
#define SIM_SYSRQ_LOG 64
#define SIM_MAX_CONSOLES 64
/* A console stops reading keys while this much output waits for the
 * client, so a client that types without reading cannot grow it. */
#define SIM_CONSOLE_OUT_HIGH 4096

/* What a pending action waits for before its delay starts counting. */
enum sim_need {
    SIM_NEED_RUNNING,   /* hypervisor-level: just CPU time (NMI, sysrq) */
    SIM_NEED_BOOTED,    /* the OS must be up (ACPI power button) */
    SIM_NEED_AGENT,     /* the PV drivers must be up (clean shutdown) */
};

/* Something the guest will do on its own after a delay: shut down with
 * the given reason.  The delay counts only while the domain runs. */
struct sim_pending {
    enum xenops_shutdown_reason reason;     /* NONE: nothing pending */
    enum sim_need need;
    int64_t at;             /* the domain's run clock at the request */
    int64_t delay_ms;
};

struct sim_domain {
    struct sim_domain *next;
    uint32_t domid;
    struct xenops_vm_spec *spec;    /* our copy; devices follow hotplug */
    enum xenops_power power;
    enum xenops_shutdown_reason reason;
    int64_t memory_actual;
    int64_t memory_target;
    int64_t overhead;               /* fixed at build time */
    int vcpus_online;
    uint64_t cpu_time_ns;
    double util[SIM_MAX_VCPUS];
    double guest_used;              /* fraction of memory_actual in use */
    int64_t start_time;
    uint64_t rng;

    /* Time: the run clock is how long the domain has been RUNNING, so a
     * paused guest neither boots nor acts on requests. */
    int64_t run_ms;                 /* run clock when last paused */
    int64_t resumed_at;             /* monotonic ms of the last unpause */
    int64_t stats_clock;            /* run clock at the last tick */

    /* The guest's behaviour (from the host defaults, then the VM's
     * settings made through the control socket, then a saved image). */
    bool pv_drivers;
    bool ignore_shutdown;
    int64_t shutdown_ms;
    int64_t boot_ms;

    bool booted;
    int64_t booted_at;              /* run clock when the OS came up */
    bool announce_guest;            /* send a GUEST update when running */
    bool migrating;
    struct sim_pending pending;
    char sysrq_log[SIM_SYSRQ_LOG + 1];
};

/* Behaviour set for a VM through the control socket, by uuid; -1 means
 * "not set, use the host's default". */
struct sim_prefs {
    struct sim_prefs *next;
    char uuid[37];
    int pv_drivers;
    int ignore_shutdown;
    int64_t shutdown_ms;
    int64_t boot_ms;
};

struct sim_client {
    int fd;
    size_t len;
    char buf[SIM_LINE_MAX];
};

/* What the guest's console is showing: the boot, getty's login and
 * password prompts, or a shell. */
enum sim_tty_state {
    SIM_TTY_BOOTING,
    SIM_TTY_LOGIN,
    SIM_TTY_PASSWORD,
    SIM_TTY_SHELL,
};

/* One connection to a domain's text console (console_open). */
struct sim_console {
    struct sim_console *next;
    int fd;                     /* our end of the socketpair */
    uint32_t domid;
    enum sim_tty_state state;
    bool closing;               /* the client left: free at the next sweep */
    bool last_cr;               /* CR LF is one Enter */
    char user[33];
    char line[256];             /* the line being typed */
    size_t line_len;
    struct ds out;              /* output the client has not taken yet */
};

struct sim_host {
    struct xenops_host up;      /* must be first */

    /* Configuration: fixed once open() returns. */
    int cpus;
    int64_t memory_mib;
    int64_t dom0_memory_mib;
    char hostname[256];
    int64_t boot_ms;
    int64_t shutdown_ms;
    int64_t tick_ms;
    int64_t stats_ms;
    bool pv_drivers;
    char *control_path;

    pthread_mutex_t lock;       /* protects the members below */
    struct sim_domain *domains;
    struct sim_prefs *prefs;
    uint32_t next_domid;
    struct xenops_update *queue;
    size_t n_queue, cap_queue;
    struct sim_console *consoles;
    int n_consoles;
    bool stopping;

    pthread_mutex_t cb_lock;    /* protects the callback */
    xenops_update_fn *cb;
    void *cb_aux;

    /* Owned by the ticker thread once it runs. */
    pthread_t ticker;
    bool ticker_started;
    int wake[2];                /* close() writes to wake[1] */
    int listen_fd;
    struct sim_client clients[SIM_MAX_CLIENTS];
    int64_t last_stats;
};

/* The guest state a suspend image or migration stream carries. */
struct sim_image {
    char uuid[37];
    int64_t memory_actual;
    int64_t memory_target;
    int vcpus_online;
    bool pv_drivers;
    bool booted;
    bool ignore_shutdown;
    int64_t shutdown_ms;
    int64_t guest_used_ppm;
    char sysrq_log[SIM_SYSRQ_LOG + 1];
};

static struct sim_host *
sim_host_cast(struct xenops_host *host)
{
    return (struct sim_host *) host;
}

static int PRINTF_FMT(3, 4)
sim_fail(char **ret_err, int rc, const char *fmt, ...)
{
    struct ds ds = DS_EMPTY;
    va_list ap;

    va_start(ap, fmt);
    ds_put_vfmt(&ds, fmt, ap);
    va_end(ap);
    if (ret_err) {
        *ret_err = ds_steal(&ds);
    }
    ds_destroy(&ds);
    return rc;
}

static const char *
power_name(enum xenops_power p)
{
    switch (p) {
    case XENOPS_RUNNING: return "running";
    case XENOPS_PAUSED: return "paused";
    case XENOPS_SHUTDOWN: return "shutdown";
    }
    return "unknown";
}

static const char *
reason_name(enum xenops_shutdown_reason r)
{
    switch (r) {
    case XENOPS_REASON_NONE: return "none";
    case XENOPS_REASON_POWEROFF: return "poweroff";
    case XENOPS_REASON_REBOOT: return "reboot";
    case XENOPS_REASON_SUSPEND: return "suspend";
    case XENOPS_REASON_CRASH: return "crash";
    case XENOPS_REASON_HALT: return "halt";
    }
    return "unknown";
}

/* A small fast generator (xorshift64*) for the statistics' random walks
 * and the images' pseudo-memory: deterministic for a given seed. */
static uint64_t
rng_next(uint64_t *s)
{
    uint64_t x = *s ? *s : UINT64_C(0x9e3779b97f4a7c15);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(0x2545f4914f6cdd1d);
}

/* Uniform in [-1, 1). */
static double
rng_unit(uint64_t *s)
{
    return (double) (rng_next(s) >> 11) / (double) (UINT64_C(1) << 52) - 1.0;
}

/* One step of a random walk that bounces off lo and hi rather than
 * sticking to them, so that successive samples differ. */
static double
random_walk(double v, double step, double lo, double hi, uint64_t *s)
{
    v += step * rng_unit(s);
    if (v < lo) {
        v = 2 * lo - v;
    } else if (v > hi) {
        v = 2 * hi - v;
    }
    return MIN(MAX(v, lo), hi);
}

/* FNV-1a, 64 bits: the images' checksum.  Any single changed byte changes
 * the result, and it needs no library. */
#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
static uint64_t
fnv1a(uint64_t h, const void *p_, size_t n)
{
    const unsigned char *p = p_;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* ---- specs ---- */

static char *
strdup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static struct xenops_kv *
kvs_copy(const struct xenops_kv *kv, size_t n)
{
    struct xenops_kv *c = n ? xcalloc(n, sizeof *c) : NULL;
    for (size_t i = 0; i < n; i++) {
        c[i].key = xstrdup(kv[i].key ? kv[i].key : "");
        c[i].value = xstrdup(kv[i].value ? kv[i].value : "");
    }
    return c;
}

static void
vbd_copy(struct xenops_vbd_spec *dst, const struct xenops_vbd_spec *src)
{
    *dst = *src;
    dst->ref = strdup_or_null(src->ref);
    dst->device = strdup_or_null(src->device);
    dst->target = strdup_or_null(src->target);
    dst->format = strdup_or_null(src->format);
}

static void
vbd_free_fields(struct xenops_vbd_spec *v)
{
    free(v->ref);
    free(v->device);
    free(v->target);
    free(v->format);
}

static void
vif_copy(struct xenops_vif_spec *dst, const struct xenops_vif_spec *src)
{
    *dst = *src;
    dst->ref = strdup_or_null(src->ref);
    dst->bridge = strdup_or_null(src->bridge);
}

static void
vif_free_fields(struct xenops_vif_spec *v)
{
    free(v->ref);
    free(v->bridge);
}

static struct xenops_vm_spec *
spec_copy(const struct xenops_vm_spec *s)
{
    struct xenops_vm_spec *c = xmalloc(sizeof *c);

    *c = *s;
    c->name = xstrdup(s->name ? s->name : "");
    c->vcpus_params = kvs_copy(s->vcpus_params, s->n_vcpus_params);
    c->pv_kernel = strdup_or_null(s->pv_kernel);
    c->pv_ramdisk = strdup_or_null(s->pv_ramdisk);
    c->pv_args = strdup_or_null(s->pv_args);
    c->pv_bootloader = strdup_or_null(s->pv_bootloader);
    c->pv_bootloader_args = strdup_or_null(s->pv_bootloader_args);
    c->hvm_boot_order = strdup_or_null(s->hvm_boot_order);
    c->hvm_firmware = strdup_or_null(s->hvm_firmware);
    c->platform = kvs_copy(s->platform, s->n_platform);
    c->vbds = s->n_vbds ? xcalloc(s->n_vbds, sizeof *c->vbds) : NULL;
    for (size_t i = 0; i < s->n_vbds; i++) {
        vbd_copy(&c->vbds[i], &s->vbds[i]);
    }
    c->vifs = s->n_vifs ? xcalloc(s->n_vifs, sizeof *c->vifs) : NULL;
    for (size_t i = 0; i < s->n_vifs; i++) {
        vif_copy(&c->vifs[i], &s->vifs[i]);
    }
    return c;
}

/* The memory the domain needs besides its RAM: page tables, the device
 * model's and Xen's own structures.  Kept simple and documented in
 * docs/simulator.md so that callers can predict it: 1 MiB plus 8 KiB per
 * MiB of static_max, the per-MiB part scaled by shadow_multiplier for
 * HVM guests (shadow page tables). */
static int64_t
sim_overhead(const struct xenops_vm_spec *spec, int64_t memory)
{
    int64_t max = MAX(spec->memory_static_max, memory);
    double per_mib = 8192;

    if (spec->type == XENOPS_HVM && spec->shadow_multiplier > 1) {
        per_mib *= spec->shadow_multiplier;
    }
    return MIB + (int64_t) (per_mib * (double) ((max + MIB - 1) / MIB));
}

/* ---- domains (h->lock held) ---- */

static int64_t
footprint(const struct sim_domain *d)
{
    return MAX(d->memory_actual, d->memory_target) + d->overhead;
}

static int64_t
host_free_memory(const struct sim_host *h)
{
    int64_t free_mem = (h->memory_mib - h->dom0_memory_mib) * MIB;
    for (const struct sim_domain *d = h->domains; d; d = d->next) {
        free_mem -= footprint(d);
    }
    return free_mem;
}

static struct sim_domain *
find_domain(struct sim_host *h, uint32_t domid)
{
    for (struct sim_domain *d = h->domains; d; d = d->next) {
        if (d->domid == domid) {
            return d;
        }
    }
    return NULL;
}

/* The newest domain of the VM: during a migration on one host there are
 * two, and the arriving one is the one that will stay. */
static struct sim_domain *
find_domain_by_uuid(struct sim_host *h, const char *uuid)
{
    struct sim_domain *best = NULL;
    for (struct sim_domain *d = h->domains; d; d = d->next) {
        if (!strcasecmp(d->spec->uuid, uuid)
            && (!best || d->domid > best->domid)) {
            best = d;
        }
    }
    return best;
}

static int
no_domain(uint32_t domid, char **ret_err)
{
    return sim_fail(ret_err, -ENOENT, "no domain with domid %"PRIu32, domid);
}

static struct sim_prefs *
find_prefs(struct sim_host *h, const char *uuid, bool create)
{
    struct sim_prefs *p;

    for (p = h->prefs; p; p = p->next) {
        if (!strcasecmp(p->uuid, uuid)) {
            return p;
        }
    }
    if (!create) {
        return NULL;
    }
    p = xcalloc(1, sizeof *p);
    snprintf(p->uuid, sizeof p->uuid, "%s", uuid);
    p->pv_drivers = p->ignore_shutdown = -1;
    p->shutdown_ms = p->boot_ms = -1;
    p->next = h->prefs;
    h->prefs = p;
    return p;
}

static int64_t
run_clock(const struct sim_domain *d, int64_t now)
{
    return d->run_ms + (d->power == XENOPS_RUNNING ? now - d->resumed_at : 0);
}

static bool
agent_up(const struct sim_domain *d)
{
    return d->pv_drivers && d->booted && d->power != XENOPS_SHUTDOWN;
}

static void
queue_update(struct sim_host *h, enum xenops_update_kind kind,
             const struct sim_domain *d)
{
    struct xenops_update *u;

    /* One update of a kind per domain per delivery is enough: the
     * receiver reads the current state anyway. */
    for (size_t i = 0; i < h->n_queue; i++) {
        if (h->queue[i].kind == kind && h->queue[i].domid == d->domid) {
            return;
        }
    }
    if (h->n_queue == h->cap_queue) {
        h->cap_queue = h->cap_queue ? 2 * h->cap_queue : 16;
        h->queue = xrealloc(h->queue, h->cap_queue * sizeof *h->queue);
    }
    u = &h->queue[h->n_queue++];
    memset(u, 0, sizeof *u);
    u->kind = kind;
    u->domid = d->domid;
    snprintf(u->uuid, sizeof u->uuid, "%s", d->spec->uuid);
}

static void
domain_shut_down(struct sim_host *h, struct sim_domain *d,
                 enum xenops_shutdown_reason reason, int64_t now)
{
    d->run_ms = run_clock(d, now);
    d->power = XENOPS_SHUTDOWN;
    d->reason = reason;
    d->pending.reason = XENOPS_REASON_NONE;
    memset(d->util, 0, sizeof d->util);
    queue_update(h, XENOPS_UPDATE_DOMAIN, d);
}

/* Arms a pending action.  When one is already pending, the one that would
 * happen first wins: a crash injected during a slow clean shutdown must
 * not be postponed by it, nor a repeated request restart the delay. */
static void
set_pending(struct sim_domain *d, enum xenops_shutdown_reason reason,
            enum sim_need need, int64_t delay_ms, int64_t now)
{
    struct sim_pending p = {
        .reason = reason,
        .need = need,
        .at = run_clock(d, now),
        .delay_ms = delay_ms,
    };

    if (d->pending.reason != XENOPS_REASON_NONE
        && d->pending.at + d->pending.delay_ms <= p.at + p.delay_ms) {
        return;
    }
    d->pending = p;
}

static void
domain_free(struct sim_domain *d)
{
    if (d) {
        xenops_vm_spec_free(d->spec);
        free(d);
    }
}

/* Makes the ticker thread go round its loop now. */
static void
wake_ticker(struct sim_host *h)
{
    if (h->wake[1] >= 0) {
        (void) !write(h->wake[1], "x", 1);
    }
}

static void
domain_remove(struct sim_host *h, struct sim_domain *d)
{
    for (struct sim_domain **pp = &h->domains; *pp; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    }
    /* Its consoles reach end of file at the ticker's next round. */
    for (const struct sim_console *c = h->consoles; c; c = c->next) {
        if (c->domid == d->domid) {
            wake_ticker(h);
            break;
        }
    }
    domain_free(d);
}

static void
apply_prefs(struct sim_host *h, struct sim_domain *d)
{
    const struct sim_prefs *p = find_prefs(h, d->spec->uuid, false);

    if (!p) {
        return;
    }
    if (p->pv_drivers >= 0) {
        d->pv_drivers = p->pv_drivers;
    }
    if (p->ignore_shutdown >= 0) {
        d->ignore_shutdown = p->ignore_shutdown;
    }
    if (p->shutdown_ms >= 0) {
        d->shutdown_ms = p->shutdown_ms;
    }
    if (p->boot_ms >= 0) {
        d->boot_ms = p->boot_ms;
    }
}

static int
check_spec(const struct xenops_vm_spec *spec, char **ret_err)
{
    if (!spec) {
        return sim_fail(ret_err, -EINVAL, "no VM spec");
    }
    if (spec->vcpus_max < 1 || spec->vcpus_max > SIM_MAX_VCPUS) {
        return sim_fail(ret_err, -EINVAL, "VM %s: vcpus_max %d is not in "
                        "1..%d", spec->uuid, spec->vcpus_max, SIM_MAX_VCPUS);
    }
    if (spec->vcpus_at_startup < 1
        || spec->vcpus_at_startup > spec->vcpus_max) {
        return sim_fail(ret_err, -EINVAL, "VM %s: vcpus_at_startup %d is "
                        "not in 1..%d", spec->uuid, spec->vcpus_at_startup,
                        spec->vcpus_max);
    }
    return 0;
}

/* Builds a paused domain from spec; img, when not NULL, is the state of a
 * restored or arriving guest.  Called with h->lock held. */
static int
domain_build(struct sim_host *h, const struct xenops_vm_spec *spec,
             const struct sim_image *img, uint32_t *ret_domid,
             char **ret_err)
{
    struct sim_domain *d = NULL;
    int64_t memory, target, overhead, free_mem;
    int rc;

    if (img) {
        memory = img->memory_actual;
        target = img->memory_target;
    } else {
        memory = target = spec->memory_target ? spec->memory_target
                                              : spec->memory_dynamic_max;
    }
    if (memory <= 0) {
        rc = sim_fail(ret_err, -EINVAL, "VM %s: no memory target (target "
                      "and dynamic_max are 0)", spec->uuid);
        goto out;
    }
    if (img && img->vcpus_online > spec->vcpus_max) {
        rc = sim_fail(ret_err, -EINVAL, "image has %d vCPUs online but VM %s "
                      "has vcpus_max %d", img->vcpus_online, spec->uuid,
                      spec->vcpus_max);
        goto out;
    }
    overhead = sim_overhead(spec, memory);
    free_mem = host_free_memory(h);
    if (MAX(memory, target) + overhead > free_mem) {
        rc = sim_fail(ret_err, -ENOMEM, "VM %s needs %"PRId64" bytes "
                      "(%"PRId64" + %"PRId64" overhead) but the host has "
                      "%"PRId64" bytes free", spec->uuid,
                      MAX(memory, target) + overhead, MAX(memory, target),
                      overhead, free_mem);
        goto out;
    }

    d = xcalloc(1, sizeof *d);
    d->domid = h->next_domid++;
    d->spec = spec_copy(spec);
    d->power = XENOPS_PAUSED;
    d->reason = XENOPS_REASON_NONE;
    d->memory_actual = memory;
    d->memory_target = target;
    d->overhead = overhead;
    d->vcpus_online = spec->vcpus_at_startup;
    d->start_time = time_wall_ms() / 1000;
    d->rng = hash_string(spec->uuid, d->domid) | 1;
    d->guest_used = 0.3;
    for (int i = 0; i < d->vcpus_online; i++) {
        d->util[i] = 0.1;
    }
    d->pv_drivers = h->pv_drivers;
    d->shutdown_ms = h->shutdown_ms;
    d->boot_ms = h->boot_ms;
    if (img) {
        d->vcpus_online = img->vcpus_online;
        d->pv_drivers = img->pv_drivers;
        d->ignore_shutdown = img->ignore_shutdown;
        d->shutdown_ms = img->shutdown_ms;
        d->guest_used = (double) img->guest_used_ppm / 1e6;
        snprintf(d->sysrq_log, sizeof d->sysrq_log, "%s", img->sysrq_log);
        /* A resumed guest carries on where it was: no boot, and its agent
         * reports at once. */
        d->booted = img->booted;
        d->announce_guest = img->booted;
    }
    apply_prefs(h, d);
    d->next = h->domains;
    h->domains = d;
    *ret_domid = d->domid;
    d = NULL;
    rc = 0;
out:
    domain_free(d);
    return rc;
}

/* ---- suspend images and migration streams ---- */

static void
image_snapshot(const struct sim_domain *d, struct sim_image *img)
{
    memset(img, 0, sizeof *img);
    snprintf(img->uuid, sizeof img->uuid, "%s", d->spec->uuid);
    img->memory_actual = d->memory_actual;
    img->memory_target = d->memory_target;
    img->vcpus_online = d->vcpus_online;
    img->pv_drivers = d->pv_drivers;
    img->booted = d->booted;
    img->ignore_shutdown = d->ignore_shutdown;
    img->shutdown_ms = d->shutdown_ms;
    img->guest_used_ppm = (int64_t) (d->guest_used * 1e6);
    snprintf(img->sysrq_log, sizeof img->sysrq_log, "%s", d->sysrq_log);
}

static size_t
payload_size(int64_t memory)
{
    return (size_t) MIN(MAX(memory, 0), SIM_PAYLOAD_MAX);
}

static void
put_le(struct ds *ds, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) {
        ds_put_char(ds, (char) (v >> (8 * i)));
    }
}

static uint64_t
get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        v |= (uint64_t) p[i] << (8 * i);
    }
    return v;
}

/* Serializes img: magic, state text, pseudo-memory, checksum (see
 * docs/simulator.md). */
static void
image_build(const struct sim_image *img, uint32_t domid, const char *name,
            struct ds *out)
{
    struct ds state = DS_EMPTY;
    size_t n = payload_size(img->memory_actual);
    uint64_t seed = fnv1a(FNV_OFFSET, img->uuid, strlen(img->uuid))
                    ^ (uint64_t) img->memory_actual;

    /* The name may hold anything; keep the state one key per line, and
     * short. */
    ds_put_fmt(&state, "uuid=%s\nname=", img->uuid);
    for (const char *c = name; *c && c - name < 256; c++) {
        ds_put_char(&state, *c == '\n' || *c == '\r' ? ' ' : *c);
    }
    ds_put_fmt(&state, "\ndomid=%"PRIu32"\nmemory_actual=%"PRId64
               "\nmemory_target=%"PRId64"\nvcpus_online=%d\npv_drivers=%d"
               "\nbooted=%d\nignore_shutdown=%d\nshutdown_ms=%"PRId64
               "\nguest_used_ppm=%"PRId64"\nsysrq=%s\n",
               domid, img->memory_actual, img->memory_target,
               img->vcpus_online, img->pv_drivers, img->booted,
               img->ignore_shutdown, img->shutdown_ms, img->guest_used_ppm,
               img->sysrq_log);

    ds_put(out, SIM_IMAGE_MAGIC, 8);
    put_le(out, state.len, 4);
    ds_put(out, state.s, state.len);
    put_le(out, n, 8);
    ds_reserve(out, n + 8);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rng_next(&seed);
        unsigned char b[8];
        for (int k = 0; k < 8; k++) {
            b[k] = (unsigned char) (v >> (8 * k));
        }
        ds_put(out, b, MIN(8, n - i));
    }
    put_le(out, fnv1a(FNV_OFFSET, out->s, out->len), 8);
    ds_destroy(&state);
}

/* Reads exactly n bytes; a short stream is a corrupt image.  Waits on a
 * non-blocking fd instead of failing with EAGAIN. */
static int
read_exact(int fd, void *buf, size_t n, char **ret_err)
{
    char *p = buf;

    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                poll(&pfd, 1, -1);
                continue;
            }
            return sim_fail(ret_err, -errno, "reading image: %s",
                            strerror(errno));
        }
        if (r == 0) {
            return sim_fail(ret_err, -EINVAL, "image is truncated");
        }
        p += r;
        n -= r;
    }
    return 0;
}

/* Writes all of buf to fd, which may be a file, a pipe or a socket.  A
 * peer that went away gives -EPIPE, not a SIGPIPE that would kill the
 * daemon: sockets get MSG_NOSIGNAL; for pipes SIGPIPE is blocked in this
 * thread for the duration and a pending one consumed. */
static int
write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    bool is_socket = true, blocked = false;
    sigset_t pipe_set, old_set;
    int rc = 0;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    while (n > 0) {
        ssize_t r;
        if (is_socket) {
            r = send(fd, p, n, MSG_NOSIGNAL);
            if (r < 0 && errno == ENOTSOCK) {
                is_socket = false;
                pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
                blocked = true;
                continue;
            }
        } else {
            r = write(fd, p, n);
        }
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = { .fd = fd, .events = POLLOUT };
                poll(&pfd, 1, -1);
                continue;
            }
            rc = -errno;
            break;
        }
        p += r;
        n -= r;
    }
    if (blocked) {
        if (rc == -EPIPE) {
            struct timespec zero = { 0, 0 };
            while (sigtimedwait(&pipe_set, NULL, &zero) < 0
                   && errno == EINTR) {
                continue;
            }
        }
        pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    }
    return rc;
}

/* On a socket, a migration ends with the receiver's verdict, "OK\n" or
 * "ERR <errno> <message>\n", and the sender destroys its domain only
 * after an OK: a receiver that fails after the whole stream has arrived
 * (no memory, wrong VM) must not cost the VM.  A pipe has no way back;
 * there the sender trusts a complete write. */
static bool
is_stream_socket(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;

    return !getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len)
           && type == SOCK_STREAM;
}

static void
send_verdict(int fd, int rc, const char *err)
{
    struct ds ds = DS_EMPTY;

    if (!rc) {
        ds_put_cstr(&ds, "OK\n");
    } else {
        ds_put_fmt(&ds, "ERR %d ", -rc);
        for (const char *c = err ? err : ""; *c && ds.len < 400; c++) {
            ds_put_char(&ds, *c == '\n' ? ' ' : *c);
        }
        ds_put_char(&ds, '\n');
    }
    /* Best effort: a sender that has gone finds out by itself. */
    (void) write_all(fd, ds.s, ds.len);
    ds_destroy(&ds);
}

static int
read_verdict(int fd, char **ret_err)
{
    char line[512];
    size_t n = 0;
    int code = 0, off = 0;

    while (n < sizeof line - 1) {
        ssize_t r = read(fd, &line[n], 1);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = { .fd = fd, .events = POLLIN };
            poll(&pfd, 1, -1);
            continue;
        }
        if (r <= 0) {
            return sim_fail(ret_err, r < 0 ? -errno : -EPIPE, "the receiver "
                            "hung up before confirming the migration");
        }
        if (line[n] == '\n') {
            break;
        }
        n++;
    }
    line[n] = '\0';
    if (!strcmp(line, "OK")) {
        return 0;
    }
    if (sscanf(line, "ERR %d %n", &code, &off) >= 1 && off > 0 && code > 0) {
        return sim_fail(ret_err, -code, "the receiving host refused the "
                        "domain: %s", line + off);
    }
    return sim_fail(ret_err, -EPROTO, "bad migration verdict '%.60s'", line);
}

static int
parse_bool_value(const char *s, bool *ret)
{
    if (!strcmp(s, "1") || !strcmp(s, "yes") || !strcmp(s, "true")) {
        *ret = true;
    } else if (!strcmp(s, "0") || !strcmp(s, "no") || !strcmp(s, "false")) {
        *ret = false;
    } else {
        return -EINVAL;
    }
    return 0;
}

static int
image_parse_state(char *text, struct sim_image *img, char **ret_err)
{
    char *save = NULL;
    int seen = 0;

    memset(img, 0, sizeof *img);
    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        const char *v;
        int64_t n = 0;
        bool b = false;
        bool is_int, is_bool;

        if (!eq) {
            return sim_fail(ret_err, -EINVAL, "image state line '%.40s' is "
                            "not key=value", line);
        }
        *eq = '\0';
        v = eq + 1;
        is_int = !str_to_int64(v, &n);
        is_bool = !parse_bool_value(v, &b);
        if (!strcmp(line, "uuid")) {
            if (!*v || strlen(v) >= sizeof img->uuid) {
                return sim_fail(ret_err, -EINVAL, "image has a bad uuid");
            }
            snprintf(img->uuid, sizeof img->uuid, "%s", v);
            seen |= 1;
        } else if (!strcmp(line, "memory_actual") && is_int && n > 0) {
            img->memory_actual = n;
            seen |= 2;
        } else if (!strcmp(line, "memory_target") && is_int && n > 0) {
            img->memory_target = n;
            seen |= 4;
        } else if (!strcmp(line, "vcpus_online") && is_int && n > 0
                   && n <= SIM_MAX_VCPUS) {
            img->vcpus_online = (int) n;
            seen |= 8;
        } else if (!strcmp(line, "pv_drivers") && is_bool) {
            img->pv_drivers = b;
        } else if (!strcmp(line, "booted") && is_bool) {
            img->booted = b;
        } else if (!strcmp(line, "ignore_shutdown") && is_bool) {
            img->ignore_shutdown = b;
        } else if (!strcmp(line, "shutdown_ms") && is_int && n >= 0) {
            img->shutdown_ms = n;
        } else if (!strcmp(line, "guest_used_ppm") && is_int && n >= 0
                   && n <= 1000000) {
            img->guest_used_ppm = n;
        } else if (!strcmp(line, "sysrq")) {
            snprintf(img->sysrq_log, sizeof img->sysrq_log, "%s", v);
        } else if (!strcmp(line, "name") || !strcmp(line, "domid")) {
            /* Informational: the receiver's spec and domid are used. */
        } else {
            return sim_fail(ret_err, -EINVAL, "image state has a bad or "
                            "unknown entry '%.40s'", line);
        }
    }
    if (seen != 15) {
        return sim_fail(ret_err, -EINVAL, "image state lacks uuid, memory "
                        "or vCPUs");
    }
    return 0;
}

/* Reads and checks an image from fd for the VM want_uuid.  Stops right
 * after the checksum, so a stream may carry more after it. */
static int
image_read(int fd, const char *want_uuid, struct sim_image *ret_img,
           char **ret_err)
{
    unsigned char hdr[12], len8[8], sum8[8];
    char *state = NULL, *chunk = NULL;
    struct sim_image img;
    uint64_t sum = FNV_OFFSET, payload_len;
    uint32_t state_len;
    int rc;

    rc = read_exact(fd, hdr, sizeof hdr, ret_err);
    if (rc) {
        goto out;
    }
    if (memcmp(hdr, SIM_IMAGE_MAGIC, 8)) {
        rc = sim_fail(ret_err, -EINVAL, "not a simulator image (bad magic)");
        goto out;
    }
    sum = fnv1a(sum, hdr, sizeof hdr);
    state_len = (uint32_t) get_le(hdr + 8, 4);
    if (state_len == 0 || state_len > SIM_STATE_MAX) {
        rc = sim_fail(ret_err, -EINVAL, "image state length %"PRIu32" is "
                      "out of range", state_len);
        goto out;
    }
    state = xmalloc(state_len + 1);
    rc = read_exact(fd, state, state_len, ret_err);
    if (rc) {
        goto out;
    }
    sum = fnv1a(sum, state, state_len);
    state[state_len] = '\0';
    if (strlen(state) != state_len) {
        rc = sim_fail(ret_err, -EINVAL, "image state holds a NUL byte");
        goto out;
    }
    rc = image_parse_state(state, &img, ret_err);
    if (rc) {
        goto out;
    }
    if (strcasecmp(img.uuid, want_uuid)) {
        rc = sim_fail(ret_err, -EINVAL, "image is of VM %s, not %s",
                      img.uuid, want_uuid);
        goto out;
    }

    rc = read_exact(fd, len8, sizeof len8, ret_err);
    if (rc) {
        goto out;
    }
    sum = fnv1a(sum, len8, sizeof len8);
    payload_len = get_le(len8, 8);
    if (payload_len != payload_size(img.memory_actual)) {
        rc = sim_fail(ret_err, -EINVAL, "image memory payload is %"PRIu64
                      " bytes, expected %zu", payload_len,
                      payload_size(img.memory_actual));
        goto out;
    }
    chunk = xmalloc(65536);
    while (payload_len > 0) {
        size_t n = MIN(payload_len, 65536);
        rc = read_exact(fd, chunk, n, ret_err);
        if (rc) {
            goto out;
        }
        sum = fnv1a(sum, chunk, n);
        payload_len -= n;
    }
    rc = read_exact(fd, sum8, sizeof sum8, ret_err);
    if (rc) {
        goto out;
    }
    if (get_le(sum8, 8) != sum) {
        rc = sim_fail(ret_err, -EINVAL, "image checksum mismatch (corrupt "
                      "image)");
        goto out;
    }
    *ret_img = img;
    rc = 0;
out:
    free(state);
    free(chunk);
    return rc;
}

/* ---- the ticker ---- */

static void
tick_domain(struct sim_host *h, struct sim_domain *d, int64_t now)
{
    int64_t clock, dt;
    double sum = 0;

    if (d->power != XENOPS_RUNNING || d->migrating) {
        return;
    }
    clock = run_clock(d, now);
    if (!d->booted && clock >= d->boot_ms) {
        d->booted = true;
        d->booted_at = d->boot_ms;
        d->announce_guest = true;
    }
    if (d->announce_guest) {
        d->announce_guest = false;
        if (agent_up(d)) {
            queue_update(h, XENOPS_UPDATE_GUEST, d);
        }
    }
    if (d->pending.reason != XENOPS_REASON_NONE) {
        const struct sim_pending *p = &d->pending;
        bool ready = p->need == SIM_NEED_RUNNING
                     || (p->need == SIM_NEED_BOOTED && d->booted)
                     || (p->need == SIM_NEED_AGENT && agent_up(d));
        int64_t start = p->need == SIM_NEED_RUNNING ? p->at
                        : MAX(p->at, d->booted_at);
        if (ready && clock >= start + p->delay_ms) {
            domain_shut_down(h, d, p->reason, now);
            return;
        }
    }

    /* Statistics: each online vCPU's load takes a bounded random walk and
     * CPU time grows with it. */
    dt = clock - d->stats_clock;
    d->stats_clock = clock;
    for (int i = 0; i < d->vcpus_online; i++) {
        d->util[i] = random_walk(d->util[i], 0.08, 0.01, 0.99, &d->rng);
        sum += d->util[i];
    }
    d->cpu_time_ns += (uint64_t) ((double) dt * 1e6 * sum);
    d->guest_used = random_walk(d->guest_used, 0.02, 0.15, 0.6, &d->rng);

    /* Ballooning needs the guest's balloon driver; each tick closes half
     * the gap (at least 1 MiB), so a target is reached in a few ticks. */
    if (agent_up(d) && d->memory_actual != d->memory_target) {
        int64_t gap = d->memory_target - d->memory_actual;
        int64_t step = MIN(MAX(llabs(gap) / 2, MIB), llabs(gap));
        d->memory_actual += gap > 0 ? step : -step;
    }
}

/* Advances every domain; called by the ticker thread. */
static void
sim_tick(struct sim_host *h, int64_t now)
{
    pthread_mutex_lock(&h->lock);
    for (struct sim_domain *d = h->domains; d; d = d->next) {
        tick_domain(h, d, now);
    }
    if (now - h->last_stats >= h->stats_ms) {
        h->last_stats = now;
        for (struct sim_domain *d = h->domains; d; d = d->next) {
            if (d->power == XENOPS_RUNNING) {
                queue_update(h, XENOPS_UPDATE_STATS, d);
            }
        }
    }
    pthread_mutex_unlock(&h->lock);
}

static void
deliver_updates(struct sim_host *h)
{
    struct xenops_update *q;
    size_t n;

    pthread_mutex_lock(&h->lock);
    q = h->queue;
    n = h->n_queue;
    h->queue = NULL;
    h->n_queue = h->cap_queue = 0;
    pthread_mutex_unlock(&h->lock);

    if (n) {
        pthread_mutex_lock(&h->cb_lock);
        if (h->cb) {
            for (size_t i = 0; i < n; i++) {
                h->cb(h->cb_aux, &q[i]);
            }
        }
        pthread_mutex_unlock(&h->cb_lock);
    }
    free(q);
}

/* ---- the control socket ---- */

/* Resolves a control-socket ID: a domid or a VM uuid.  *ret_uuid gets the
 * VM's uuid even when no domain exists (for "set"). */
static struct sim_domain *
resolve_id(struct sim_host *h, const char *id, const char **ret_uuid)
{
    struct sim_domain *d = NULL;
    int64_t n;

    *ret_uuid = NULL;
    if (!str_to_int64(id, &n)) {
        if (n >= 0 && n <= UINT32_MAX) {
            d = find_domain(h, (uint32_t) n);
        }
        if (d) {
            *ret_uuid = d->spec->uuid;
        }
    } else if (uuid_is_valid(id)) {
        d = find_domain_by_uuid(h, id);
        *ret_uuid = id;
    }
    return d;
}

/* The guest's host name: "sim-" and the VM's name with every character
 * other than a letter or digit made a dash (the domid if it has none). */
static void
guest_hostname(const struct sim_domain *d, struct ds *out)
{
    const char *name = d->spec->name;

    ds_put_cstr(out, "sim-");
    if (!*name) {
        ds_put_int(out, d->domid);
    }
    for (const char *c = name; *c; c++) {
        ds_put_char(out, isalnum((unsigned char) *c) ? *c : '-');
    }
}

static void
console_text(const struct sim_domain *d, struct ds *out)
{
    const char *tty = d->spec->type == XENOPS_HVM ? "ttyS0" : "hvc0";

    if (!d->booted) {
        ds_put_cstr(out, "Booting...\n");
        return;
    }
    ds_put_cstr(out, "Debian GNU/Linux 12 ");
    guest_hostname(d, out);
    ds_put_fmt(out, " %s\n\nsim login: ", tty);
}

/* ---- text consoles ---- */

/* Queues text for the client as a terminal shows it: "\n" becomes
 * "\r\n". */
static void
console_put(struct sim_console *c, const char *text)
{
    for (const char *p = text; *p; p++) {
        if (*p == '\n') {
            ds_put_char(&c->out, '\r');
        }
        ds_put_char(&c->out, *p);
    }
}

static void PRINTF_FMT(2, 3)
console_putf(struct sim_console *c, const char *fmt, ...)
{
    struct ds ds = DS_EMPTY;
    va_list ap;

    va_start(ap, fmt);
    ds_put_vfmt(&ds, fmt, ap);
    va_end(ap);
    console_put(c, ds_cstr(&ds));
    ds_destroy(&ds);
}

/* Shows what the control command "console" shows: "Booting..." or the
 * banner and getty's login prompt. */
static void
console_show_screen(struct sim_console *c, const struct sim_domain *d)
{
    struct ds text = DS_EMPTY;

    console_text(d, &text);
    console_put(c, ds_cstr(&text));
    ds_destroy(&text);
    c->state = d->booted ? SIM_TTY_LOGIN : SIM_TTY_BOOTING;
    c->line_len = 0;
}

static void
console_prompt(struct sim_console *c, const struct sim_domain *d)
{
    struct ds host = DS_EMPTY;

    switch (c->state) {
    case SIM_TTY_BOOTING:
        break;
    case SIM_TTY_LOGIN:
        console_put(c, "sim login: ");
        break;
    case SIM_TTY_PASSWORD:
        console_put(c, "Password: ");
        break;
    case SIM_TTY_SHELL:
        guest_hostname(d, &host);
        console_putf(c, "%s@%s:~%c ", c->user, ds_cstr(&host),
                     strcmp(c->user, "root") ? '$' : '#');
        break;
    }
    ds_destroy(&host);
}

static void
console_logout(struct sim_console *c, const struct sim_domain *d)
{
    console_put(c, "logout\n\n");
    console_show_screen(c, d);
}

/* Runs one shell command line: a handful of commands, enough to see that
 * keys reach the guest and its answers come back. */
static void
console_shell(struct sim_console *c, const struct sim_domain *d, char *line)
{
    struct ds host = DS_EMPTY;
    char *cmd = line + strspn(line, " \t");
    char *args = cmd + strcspn(cmd, " \t");

    if (*args) {
        *args++ = '\0';
        args += strspn(args, " \t");
    }
    guest_hostname(d, &host);
    if (!*cmd) {
        /* An empty line: just the prompt again. */
    } else if (!strcmp(cmd, "exit") || !strcmp(cmd, "logout")) {
        console_logout(c, d);
        goto out;
    } else if (!strcmp(cmd, "echo")) {
        console_putf(c, "%s\n", args);
    } else if (!strcmp(cmd, "hostname") || !strcmp(cmd, "uname")) {
        if (!strcmp(cmd, "hostname") || !strcmp(args, "-n")) {
            console_putf(c, "%s\n", ds_cstr(&host));
        } else if (!strcmp(args, "-r")) {
            console_put(c, "6.1.0-sim\n");
        } else if (!strcmp(args, "-a")) {
            console_putf(c, "Linux %s 6.1.0-sim #1 SMP x86_64 GNU/Linux\n",
                         ds_cstr(&host));
        } else {
            console_put(c, "Linux\n");
        }
    } else if (!strcmp(cmd, "whoami")) {
        console_putf(c, "%s\n", c->user);
    } else if (!strcmp(cmd, "help")) {
        console_put(c, "echo TEXT, hostname, uname [-a|-n|-r], whoami, "
                    "exit\n");
    } else {
        console_putf(c, "-bash: %s: command not found\n", cmd);
    }
    console_prompt(c, d);
out:
    ds_destroy(&host);
}

/* Acts on Enter: getty takes a user name, login a password (any but an
 * empty one), the shell a command. */
static void
console_enter(struct sim_console *c, const struct sim_domain *d)
{
    char *line = c->line;

    c->line[c->line_len] = '\0';
    c->line_len = 0;
    switch (c->state) {
    case SIM_TTY_BOOTING:
        break;
    case SIM_TTY_LOGIN:
        line += strspn(line, " \t");
        line[strcspn(line, " \t")] = '\0';
        if (*line) {
            snprintf(c->user, sizeof c->user, "%s", line);
            c->state = SIM_TTY_PASSWORD;
        }
        console_prompt(c, d);
        break;
    case SIM_TTY_PASSWORD:
        if (!*line) {
            console_put(c, "\nLogin incorrect\n");
            c->state = SIM_TTY_LOGIN;
        } else {
            struct ds host = DS_EMPTY;
            guest_hostname(d, &host);
            console_putf(c, "Linux %s 6.1.0-sim #1 SMP x86_64\n\n",
                         ds_cstr(&host));
            ds_destroy(&host);
            c->state = SIM_TTY_SHELL;
        }
        console_prompt(c, d);
        break;
    case SIM_TTY_SHELL:
        console_shell(c, d, line);
        break;
    }
}

/* One key from the client, handled as a terminal in canonical mode with
 * echo would (no echo at the password prompt). */
static void
console_key(struct sim_console *c, const struct sim_domain *d,
            unsigned char k)
{
    bool after_cr = c->last_cr;

    c->last_cr = k == '\r';
    if (c->state == SIM_TTY_BOOTING) {
        return;                 /* nothing reads the keyboard yet */
    }
    if (k == '\r' || k == '\n') {
        if (k == '\n' && after_cr) {
            return;
        }
        console_put(c, "\n");
        console_enter(c, d);
    } else if (k == 0x7f || k == '\b') {
        if (c->line_len) {
            c->line_len--;
            if (c->state != SIM_TTY_PASSWORD) {
                console_put(c, "\b \b");
            }
        }
    } else if (k == 0x03) {     /* ^C drops the line */
        console_put(c, "^C\n");
        c->line_len = 0;
        if (c->state == SIM_TTY_PASSWORD) {
            c->state = SIM_TTY_LOGIN;
        }
        console_prompt(c, d);
    } else if (k == 0x04 && !c->line_len && c->state == SIM_TTY_SHELL) {
        console_logout(c, d);   /* ^D on an empty line */
    } else if (k >= 0x20 && k < 0x7f && c->line_len < sizeof c->line - 1) {
        c->line[c->line_len++] = (char) k;
        if (c->state != SIM_TTY_PASSWORD) {
            ds_put_char(&c->out, (char) k);
        }
    }
}

static void
console_free(struct sim_console *c)
{
    if (c) {
        close(c->fd);
        ds_destroy(&c->out);
        free(c);
    }
}

/* Sends what it can of the pending output without blocking. */
static void
console_flush(struct sim_console *c)
{
    while (c->out.len) {
        ssize_t r = send(c->fd, c->out.s, c->out.len,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            memmove(c->out.s, c->out.s + r, c->out.len - r + 1);
            c->out.len -= r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                c->closing = true;      /* the client is gone */
            }
            return;
        }
    }
}

/* Whether the guest takes keys now: only a running guest does; a paused
 * one leaves them in the socket. */
static bool
console_reading(const struct sim_console *c, const struct sim_domain *d)
{
    return d && d->power == XENOPS_RUNNING && !c->closing
           && c->out.len < SIM_CONSOLE_OUT_HIGH;
}

/* Frees the consoles whose client left or whose domain is gone (the
 * client sees end of file), and shows the login prompt on those whose
 * guest has just booted.  Ticker thread, h->lock held. */
static void
consoles_sweep(struct sim_host *h)
{
    struct sim_console **pp = &h->consoles;

    while (*pp) {
        struct sim_console *c = *pp;
        struct sim_domain *d = find_domain(h, c->domid);

        if (!d || c->closing) {
            *pp = c->next;
            h->n_consoles--;
            console_free(c);
            continue;
        }
        if (c->state == SIM_TTY_BOOTING && d->booted) {
            console_show_screen(c, d);
        }
        pp = &c->next;
    }
}

/* Handles poll()'s report on a console.  Ticker thread, h->lock held. */
static void
console_io(struct sim_host *h, struct sim_console *c, short revents)
{
    const struct sim_domain *d = find_domain(h, c->domid);

    console_flush(c);
    while (console_reading(c, d)) {
        unsigned char buf[512];
        ssize_t r = read(c->fd, buf, sizeof buf);

        if (r > 0) {
            for (ssize_t i = 0; i < r; i++) {
                console_key(c, d, buf[i]);
            }
            console_flush(c);
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                /* The client hung up (maybe only its sending side): what
                 * the guest answered is already sent, if it fit. */
                c->closing = true;
            }
            break;
        }
    }
    if (revents & (POLLERR | POLLHUP | POLLNVAL)) {
        c->closing = true;
    }
}

static short
console_poll_events(struct sim_host *h, const struct sim_console *c)
{
    short events = c->out.len ? POLLOUT : 0;

    if (console_reading(c, find_domain(h, c->domid))) {
        events |= POLLIN;
    }
    return events;
}

/* Appends "OK N" and the N lines of text (which need not end in a
 * newline). */
static void
reply_lines(struct ds *out, const char *text)
{
    size_t n = 0;
    const char *p;

    for (p = text; *p; ) {
        const char *nl = strchr(p, '\n');
        n++;
        p = nl ? nl + 1 : p + strlen(p);
    }
    ds_put_fmt(out, "OK %zu\n%s", n, text);
    if (*text && text[strlen(text) - 1] != '\n') {
        ds_put_char(out, '\n');
    }
}

static int
set_behaviour(struct sim_host *h, struct sim_domain *d, const char *uuid,
              const char *key, const char *value, struct ds *err)
{
    struct sim_prefs *p;
    int64_t n = 0;
    bool b = false;
    bool agent_before = d && agent_up(d);

    if (!strcmp(key, "pv_drivers") || !strcmp(key, "ignore_shutdown")) {
        if (parse_bool_value(value, &b)) {
            ds_put_fmt(err, "%s takes yes or no", key);
            return -EINVAL;
        }
    } else if (!strcmp(key, "shutdown_ms") || !strcmp(key, "boot_ms")) {
        if (str_to_int64(value, &n) || n < 0) {
            ds_put_fmt(err, "%s takes milliseconds", key);
            return -EINVAL;
        }
    } else {
        ds_put_fmt(err, "unknown setting '%s' (pv_drivers, ignore_shutdown, "
                   "shutdown_ms, boot_ms)", key);
        return -EINVAL;
    }

    /* Behaviour belongs to the VM (the guest OS), so it is kept by uuid
     * and survives a reboot or migration onto this host. */
    p = find_prefs(h, uuid, true);
    if (!strcmp(key, "pv_drivers")) {
        p->pv_drivers = b;
    } else if (!strcmp(key, "ignore_shutdown")) {
        p->ignore_shutdown = b;
    } else if (!strcmp(key, "shutdown_ms")) {
        p->shutdown_ms = n;
    } else {
        p->boot_ms = n;
    }
    for (struct sim_domain *x = h->domains; x; x = x->next) {
        if (!strcasecmp(x->spec->uuid, uuid)) {
            bool before = x == d ? agent_before : agent_up(x);
            apply_prefs(h, x);
            if (before != agent_up(x)) {
                queue_update(h, XENOPS_UPDATE_GUEST, x);
            }
        }
    }
    return 0;
}

static void
control_command(struct sim_host *h, char *line, struct ds *out)
{
    char *argv[8], *save = NULL, *tok;
    int argc = 0;
    struct sim_domain *d = NULL;
    const char *uuid = NULL;
    struct ds text = DS_EMPTY;
    int64_t now = time_mono_ms();

    for (tok = strtok_r(line, " \t\r", &save); tok && argc < 8;
         tok = strtok_r(NULL, " \t\r", &save)) {
        argv[argc++] = tok;
    }
    if (!argc) {
        ds_put_cstr(out, "ERR empty command\n");
        return;
    }
    pthread_mutex_lock(&h->lock);
    if (argc >= 2) {
        d = resolve_id(h, argv[1], &uuid);
    }
    if (!strcmp(argv[0], "help") && argc == 1) {
        reply_lines(out, "list\ncrash ID\nguest-shutdown ID poweroff|reboot|"
                    "halt\nset ID pv_drivers|ignore_shutdown yes|no\n"
                    "set ID shutdown_ms|boot_ms N\nconsole ID\nstats ID\n");
    } else if (!strcmp(argv[0], "list") && argc == 1) {
        for (struct sim_domain *x = h->domains; x; x = x->next) {
            ds_put_fmt(&text, "%"PRIu32" %s %s %s\n", x->domid, x->spec->uuid,
                       power_name(x->power), reason_name(x->reason));
        }
        reply_lines(out, ds_cstr(&text));
    } else if (!strcmp(argv[0], "set") && argc == 4) {
        if (!uuid) {
            ds_put_fmt(out, "ERR no domain %s\n", argv[1]);
        } else if (set_behaviour(h, d, uuid, argv[2], argv[3], &text)) {
            ds_put_fmt(out, "ERR %s\n", ds_cstr(&text));
        } else {
            ds_put_cstr(out, d ? "OK\n" : "OK no domain yet; applies when "
                        "it is created\n");
        }
    } else if (argc == 2 && (!strcmp(argv[0], "crash")
                             || !strcmp(argv[0], "console")
                             || !strcmp(argv[0], "stats"))) {
        if (!d) {
            ds_put_fmt(out, "ERR no domain %s\n", argv[1]);
        } else if (!strcmp(argv[0], "crash")) {
            if (d->power == XENOPS_SHUTDOWN) {
                ds_put_fmt(out, "ERR domain %"PRIu32" has already shut "
                           "down\n", d->domid);
            } else {
                domain_shut_down(h, d, XENOPS_REASON_CRASH, now);
                ds_put_cstr(out, "OK\n");
            }
        } else if (!strcmp(argv[0], "console")) {
            console_text(d, &text);
            reply_lines(out, ds_cstr(&text));
        } else {
            ds_put_fmt(&text, "power=%s\nreason=%s\nmemory_actual=%"PRId64
                       "\nmemory_target=%"PRId64"\nvcpus_online=%d\n"
                       "cpu_time_ns=%"PRIu64"\n", power_name(d->power),
                       reason_name(d->reason), d->memory_actual,
                       d->memory_target, d->vcpus_online, d->cpu_time_ns);
            for (int i = 0; i < d->vcpus_online; i++) {
                ds_put_fmt(&text, "vcpu%d=%.3f\n", i, d->util[i]);
            }
            ds_put_fmt(&text, "pv_drivers=%s\nbooted=%s\nsysrq=%s\n",
                       agent_up(d) ? "yes" : "no", d->booted ? "yes" : "no",
                       d->sysrq_log);
            reply_lines(out, ds_cstr(&text));
        }
    } else if (!strcmp(argv[0], "guest-shutdown") && argc == 3) {
        enum xenops_shutdown_reason r = XENOPS_REASON_NONE;
        if (!strcmp(argv[2], "poweroff")) {
            r = XENOPS_REASON_POWEROFF;
        } else if (!strcmp(argv[2], "reboot")) {
            r = XENOPS_REASON_REBOOT;
        } else if (!strcmp(argv[2], "halt")) {
            r = XENOPS_REASON_HALT;
        }
        if (!d) {
            ds_put_fmt(out, "ERR no domain %s\n", argv[1]);
        } else if (r == XENOPS_REASON_NONE) {
            ds_put_cstr(out, "ERR guest-shutdown takes poweroff, reboot or "
                        "halt\n");
        } else if (d->power != XENOPS_RUNNING) {
            /* Only a running guest can decide anything. */
            ds_put_fmt(out, "ERR domain %"PRIu32" is %s\n", d->domid,
                       power_name(d->power));
        } else {
            domain_shut_down(h, d, r, now);
            ds_put_cstr(out, "OK\n");
        }
    } else {
        ds_put_fmt(out, "ERR unknown command or wrong arguments: %s (try "
                   "help)\n", argv[0]);
    }
    pthread_mutex_unlock(&h->lock);
    ds_destroy(&text);
}

static void
client_close(struct sim_client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
        c->len = 0;
    }
}

/* Reads what a client sent and answers each complete line.  Answers are
 * small; a client that does not read them is dropped rather than allowed
 * to stall the ticker. */
static void
client_input(struct sim_host *h, struct sim_client *c)
{
    ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
    char *nl;

    if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
        return;
    }
    if (r <= 0) {
        client_close(c);
        return;
    }
    c->len += r;
    while ((nl = memchr(c->buf, '\n', c->len))) {
        struct ds out = DS_EMPTY;
        size_t used = nl - c->buf + 1;
        bool ok;

        *nl = '\0';
        control_command(h, c->buf, &out);
        ok = send(c->fd, out.s, out.len, MSG_NOSIGNAL | MSG_DONTWAIT)
             == (ssize_t) out.len;
        ds_destroy(&out);
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
        if (!ok) {
            client_close(c);
            return;
        }
    }
    if (c->len == sizeof c->buf) {
        static const char msg[] = "ERR line too long\n";
        (void) !send(c->fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        client_close(c);
    }
}

static void
accept_clients(struct sim_host *h)
{
    for (;;) {
        int fd = accept4(h->listen_fd, NULL, NULL,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        size_t i;

        if (fd < 0) {
            return;
        }
        for (i = 0; i < SIM_MAX_CLIENTS; i++) {
            if (h->clients[i].fd < 0) {
                h->clients[i].fd = fd;
                h->clients[i].len = 0;
                break;
            }
        }
        if (i == SIM_MAX_CLIENTS) {
            static const char msg[] = "ERR too many control clients\n";
            (void) !send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            close(fd);
        }
    }
}

static void *
sim_ticker(void *h_)
{
    struct sim_host *h = h_;
    int64_t next_tick = time_mono_ms() + h->tick_ms;

    for (;;) {
        struct pollfd pfds[2 + SIM_MAX_CLIENTS + SIM_MAX_CONSOLES];
        int map[2 + SIM_MAX_CLIENTS];
        struct sim_console *cons[SIM_MAX_CONSOLES];
        int n = 0, n_cons = 0, first_console, timeout;
        int64_t now = time_mono_ms();
        bool stop;

        pfds[n].fd = h->wake[0];
        pfds[n].events = POLLIN;
        map[n++] = -1;
        if (h->listen_fd >= 0) {
            pfds[n].fd = h->listen_fd;
            pfds[n].events = POLLIN;
            map[n++] = -2;
        }
        for (int i = 0; i < SIM_MAX_CLIENTS; i++) {
            if (h->clients[i].fd >= 0) {
                pfds[n].fd = h->clients[i].fd;
                pfds[n].events = POLLIN;
                map[n++] = i;
            }
        }
        /* Consoles come last; only this thread frees them, so the
         * pointers stay valid after the lock is dropped. */
        pthread_mutex_lock(&h->lock);
        consoles_sweep(h);
        first_console = n;
        for (struct sim_console *c = h->consoles; c; c = c->next) {
            pfds[n].fd = c->fd;
            pfds[n].events = console_poll_events(h, c);
            cons[n_cons++] = c;
            n++;
        }
        pthread_mutex_unlock(&h->lock);
        timeout = (int) MAX(0, next_tick - now);
        if (poll(pfds, n, timeout) < 0 && errno != EINTR) {
            LOG_DBG("sim: poll: %s", strerror(errno));
        }

        pthread_mutex_lock(&h->lock);
        stop = h->stopping;
        pthread_mutex_unlock(&h->lock);
        if (stop) {
            break;
        }
        if (pfds[0].revents) {
            char drain[64];
            while (read(h->wake[0], drain, sizeof drain) > 0) {
                continue;
            }
        }
        for (int i = 0; i < first_console; i++) {
            if (!pfds[i].revents) {
                continue;
            }
            if (map[i] == -2) {
                accept_clients(h);
            } else if (map[i] >= 0) {
                client_input(h, &h->clients[map[i]]);
            }
        }
        pthread_mutex_lock(&h->lock);
        for (int i = 0; i < n_cons; i++) {
            if (pfds[first_console + i].revents) {
                console_io(h, cons[i], pfds[first_console + i].revents);
            }
        }
        pthread_mutex_unlock(&h->lock);

        now = time_mono_ms();
        if (now >= next_tick) {
            sim_tick(h, now);
            next_tick += h->tick_ms;
            if (next_tick <= now) {
                next_tick = now + h->tick_ms;   /* we fell behind */
            }
        }
        deliver_updates(h);
    }
    for (int i = 0; i < SIM_MAX_CLIENTS; i++) {
        client_close(&h->clients[i]);
    }
    return NULL;
}

/* ---- configuration ---- */

static int
apply_config_key(struct sim_host *h, const char *key, const char *value,
                 char **ret_detail)
{
    int64_t v = 0;
    bool b;

    if (!strcmp(key, "hostname")) {
        snprintf(h->hostname, sizeof h->hostname, "%s", value);
        return 0;
    }
    if (!strcmp(key, "control")) {
        if (!*value) {
            *ret_detail = xstrdup("control needs a socket path");
            return -EINVAL;
        }
        free(h->control_path);
        h->control_path = xstrdup(value);
        return 0;
    }
    if (!strcmp(key, "pv_drivers")) {
        if (parse_bool_value(value, &b)) {
            *ret_detail = xstrdup("pv_drivers takes yes or no");
            return -EINVAL;
        }
        h->pv_drivers = b;
        return 0;
    }
    if (str_to_int64(value, &v) || v < 0) {
        *ret_detail = xasprintf("%s=%s is not a number", key, value);
        return -EINVAL;
    }
    if (!strcmp(key, "cpus") && v >= 1 && v <= 4096) {
        h->cpus = (int) v;
    } else if (!strcmp(key, "memory_mib") && v > 0
               && v <= (INT64_C(1) << 30)) {
        h->memory_mib = v;
    } else if (!strcmp(key, "dom0_memory_mib") && v > 0
               && v <= (INT64_C(1) << 30)) {
        h->dom0_memory_mib = v;
    } else if (!strcmp(key, "boot_ms") && v <= 3600000) {
        h->boot_ms = v;
    } else if (!strcmp(key, "shutdown_ms") && v <= 3600000) {
        h->shutdown_ms = v;
    } else if (!strcmp(key, "tick_ms") && v >= 1 && v <= 60000) {
        h->tick_ms = v;
    } else if (!strcmp(key, "stats_ms") && v >= 1 && v <= 3600000) {
        h->stats_ms = v;
    } else {
        *ret_detail = xasprintf("unknown key or value out of range: %s=%s",
                                key, value);
        return -EINVAL;
    }
    return 0;
}

/* config_file=PATH holds the same keys, one key=value per line, with
 * blank lines and # comments. */
static int
load_config_file(struct sim_host *h, const char *path, char **ret_detail)
{
    char *data = NULL, *save = NULL;
    size_t len;
    int rc;

    rc = read_file(path, 1 << 20, &data, &len);
    if (rc) {
        *ret_detail = xasprintf("cannot read %s: %s", path, strerror(-rc));
        goto out;
    }
    for (char *line = strtok_r(data, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq, *end, *value;

        while (isspace((unsigned char) *line)) {
            line++;
        }
        end = line + strlen(line);
        while (end > line && isspace((unsigned char) end[-1])) {
            *--end = '\0';
        }
        if (!*line || *line == '#') {
            continue;
        }
        eq = strchr(line, '=');
        if (!eq || !strncmp(line, "config_file=", 12)) {
            *ret_detail = xasprintf("%s: bad line '%s'", path, line);
            rc = -EINVAL;
            goto out;
        }
        value = eq + 1;
        while (eq > line && isspace((unsigned char) eq[-1])) {
            eq--;
        }
        *eq = '\0';
        while (isspace((unsigned char) *value)) {
            value++;
        }
        rc = apply_config_key(h, line, value, ret_detail);
        if (rc) {
            goto out;
        }
    }
    rc = 0;
out:
    free(data);
    return rc;
}

/* The config string's own keys override the file's, wherever config_file
 * appears in it. */
static int
parse_config(struct sim_host *h, const char *config, char **ret_detail)
{
    char *copy = xstrdup(config ? config : ""), *save = NULL, *tok;
    int rc = 0;

    for (tok = strtok_r(copy, ",", &save); tok && !rc;
         tok = strtok_r(NULL, ",", &save)) {
        if (str_starts_with(tok, "config_file=")) {
            rc = load_config_file(h, tok + 12, ret_detail);
        }
    }
    free(copy);
    copy = xstrdup(config ? config : "");
    save = NULL;
    for (tok = strtok_r(copy, ",", &save); tok && !rc;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            *ret_detail = xasprintf("'%s' is not key=value", tok);
            rc = -EINVAL;
        } else if (!str_starts_with(tok, "config_file=")) {
            *eq = '\0';
            rc = apply_config_key(h, tok, eq + 1, ret_detail);
        }
    }
    if (!rc && h->dom0_memory_mib >= h->memory_mib) {
        *ret_detail = xasprintf("dom0_memory_mib (%"PRId64") must be less "
                                "than memory_mib (%"PRId64")",
                                h->dom0_memory_mib, h->memory_mib);
        rc = -EINVAL;
    }
    free(copy);
    return rc;
}

static int
open_control_socket(struct sim_host *h, char **ret_err)
{
    struct sockaddr_un sun;
    struct stat st;
    int fd = -1, rc;

    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(h->control_path) >= sizeof sun.sun_path) {
        rc = sim_fail(ret_err, -ENAMETOOLONG, "control socket path %s is too "
                      "long", h->control_path);
        goto out;
    }
    strcpy(sun.sun_path, h->control_path);
    /* A socket left by an earlier run is stale; anything else is not ours
     * to remove. */
    if (!lstat(h->control_path, &st) && S_ISSOCK(st.st_mode)) {
        unlink(h->control_path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *) &sun, sizeof sun) < 0
        || chmod(h->control_path, 0600) < 0 || listen(fd, 16) < 0) {
        rc = sim_fail(ret_err, -errno, "control socket %s: %s",
                      h->control_path, strerror(errno));
        goto out;
    }
    h->listen_fd = fd;
    fd = -1;
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

/* ---- the provider ---- */

static void sim_close(struct xenops_host *host);

static int
sim_open(const char *config, struct xenops_host **ret_host, char **ret_err)
{
    struct sim_host *h = xcalloc(1, sizeof *h);
    char *detail = NULL;
    int rc;

    h->cpus = 4;
    h->memory_mib = 16384;
    h->dom0_memory_mib = 1024;
    if (gethostname(h->hostname, sizeof h->hostname - 1)) {
        strcpy(h->hostname, "localhost");
    }
    h->boot_ms = 100;
    h->shutdown_ms = 200;
    h->tick_ms = 50;
    h->stats_ms = 1000;
    h->pv_drivers = true;
    h->next_domid = 1;
    h->listen_fd = -1;
    h->wake[0] = h->wake[1] = -1;
    for (int i = 0; i < SIM_MAX_CLIENTS; i++) {
        h->clients[i].fd = -1;
    }
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->cb_lock, NULL);

    rc = parse_config(h, config, &detail);
    if (rc) {
        sim_fail(ret_err, rc, "bad simulator configuration '%s': %s (keys: "
                 "cpus, memory_mib, dom0_memory_mib, hostname, boot_ms, "
                 "shutdown_ms, tick_ms, stats_ms, pv_drivers, control, "
                 "config_file)", config ? config : "", detail);
        goto out;
    }
    if (h->control_path) {
        rc = open_control_socket(h, ret_err);
        if (rc) {
            goto out;
        }
    }
    if (pipe2(h->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        rc = sim_fail(ret_err, -errno, "pipe: %s", strerror(errno));
        goto out;
    }
    h->last_stats = time_mono_ms();
    rc = -pthread_create(&h->ticker, NULL, sim_ticker, h);
    if (rc) {
        sim_fail(ret_err, rc, "cannot start the simulator thread: %s",
                 strerror(-rc));
        goto out;
    }
    h->ticker_started = true;
    *ret_host = &h->up;
    h = NULL;
    rc = 0;
out:
    free(detail);
    if (h) {
        sim_close(&h->up);
    }
    return rc;
}

static void
sim_close(struct xenops_host *host)
{
    struct sim_host *h = sim_host_cast(host);

    if (!h) {
        return;
    }
    if (h->ticker_started) {
        pthread_mutex_lock(&h->lock);
        h->stopping = true;
        pthread_mutex_unlock(&h->lock);
        (void) !write(h->wake[1], "x", 1);
        pthread_join(h->ticker, NULL);
    }
    if (h->listen_fd >= 0) {
        close(h->listen_fd);
        unlink(h->control_path);
    }
    for (int i = 0; i < 2; i++) {
        if (h->wake[i] >= 0) {
            close(h->wake[i]);
        }
    }
    while (h->consoles) {
        struct sim_console *c = h->consoles;
        h->consoles = c->next;
        console_free(c);
    }
    while (h->domains) {
        struct sim_domain *d = h->domains;
        h->domains = d->next;
        domain_free(d);
    }
    while (h->prefs) {
        struct sim_prefs *p = h->prefs;
        h->prefs = p->next;
        free(p);
    }
    free(h->queue);
    free(h->control_path);
    pthread_mutex_destroy(&h->lock);
    pthread_mutex_destroy(&h->cb_lock);
    free(h);
}

static int
sim_host_info(struct xenops_host *host, struct xenops_host_info *info,
              char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);

    memset(info, 0, sizeof *info);
    snprintf(info->hostname, sizeof info->hostname, "%s", h->hostname);
    strcpy(info->xen_version, "4.17.0-sim");
    strcpy(info->capabilities,
           "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64");
    info->n_cpus = h->cpus;
    strcpy(info->cpu.vendor, "GenuineIntel");
    strcpy(info->cpu.model_name, "Simulated CPU @ 2.40GHz");
    info->cpu.family = 6;
    info->cpu.model = 85;
    info->cpu.stepping = 4;
    info->cpu.speed_mhz = 2400;
    strcpy(info->cpu.flags, "fpu de tsc msr pae mce cx8 apic sep mca cmov "
           "pat clflush mmx fxsr sse sse2 ht syscall nx lm constant_tsc "
           "nopl pni pclmulqdq ssse3 cx16 sse4_1 sse4_2 popcnt aes xsave avx "
           "hypervisor");
    info->memory_total = h->memory_mib * MIB;
    info->dom0_memory = h->dom0_memory_mib * MIB;
    pthread_mutex_lock(&h->lock);
    info->memory_free = host_free_memory(h);
    pthread_mutex_unlock(&h->lock);
    info->dom0_vcpus = h->cpus < 16 ? h->cpus : 16;
    return 0;
}

static void
sim_set_update_callback(struct xenops_host *host, xenops_update_fn *fn,
                        void *aux)
{
    struct sim_host *h = sim_host_cast(host);

    /* Taking cb_lock means that once we return no delivery to the old
     * callback is still running, so its aux may be freed. */
    pthread_mutex_lock(&h->cb_lock);
    h->cb = fn;
    h->cb_aux = aux;
    pthread_mutex_unlock(&h->cb_lock);
}

static int
sim_domain_create(struct xenops_host *host, const struct xenops_vm_spec *spec,
                  uint32_t *ret_domid, char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    int rc;

    rc = check_spec(spec, ret_err);
    if (rc) {
        return rc;
    }
    pthread_mutex_lock(&h->lock);
    rc = domain_build(h, spec, NULL, ret_domid, ret_err);
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int
sim_domain_unpause(struct xenops_host *host, uint32_t domid, char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct sim_domain *d;
    int rc;

    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
        goto out;
    }
    if (d->power == XENOPS_SHUTDOWN) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has shut down",
                      domid);
        goto out;
    }
    if (d->power == XENOPS_PAUSED) {
        d->power = XENOPS_RUNNING;
        d->resumed_at = time_mono_ms();
    }
    rc = 0;
out:
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int
sim_domain_pause(struct xenops_host *host, uint32_t domid, char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct sim_domain *d;
    int rc;

    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
        goto out;
    }
    if (d->power == XENOPS_SHUTDOWN) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has shut down",
                      domid);
        goto out;
    }
    if (d->power == XENOPS_RUNNING) {
        d->run_ms = run_clock(d, time_mono_ms());
        d->power = XENOPS_PAUSED;
    }
    rc = 0;
out:
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int
sim_domain_shutdown(struct xenops_host *host, uint32_t domid,
                    enum xenops_shutdown_kind kind, char **ret_err)
{
    static const enum xenops_shutdown_reason reasons[] = {
        [XENOPS_SHUTDOWN_POWEROFF] = XENOPS_REASON_POWEROFF,
        [XENOPS_SHUTDOWN_REBOOT] = XENOPS_REASON_REBOOT,
        [XENOPS_SHUTDOWN_SUSPEND] = XENOPS_REASON_SUSPEND,
        [XENOPS_SHUTDOWN_HALT] = XENOPS_REASON_HALT,
    };
    struct sim_host *h = sim_host_cast(host);
    struct sim_domain *d;
    int rc;

    if ((unsigned) kind >= ARRAY_SIZE(reasons)) {
        return sim_fail(ret_err, -EINVAL, "bad shutdown kind %d", (int) kind);
    }
    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
        goto out;
    }
    if (d->power == XENOPS_SHUTDOWN) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has already shut "
                      "down", domid);
        goto out;
    }
    /* The request goes where the PV drivers look for it: without them
     * there is no one to ask (the caller answers VM_MISSING_PV_DRIVERS).
     * A guest told to ignore requests takes them and never answers, which
     * is how callers' timeouts get tested. */
    if (!d->pv_drivers) {
        rc = sim_fail(ret_err, -EOPNOTSUPP, "domain %"PRIu32" has no PV "
                      "drivers for a clean shutdown", domid);
        goto out;
    }
    if (d->ignore_shutdown) {
        LOG_DBG("sim: domain %"PRIu32" ignores the shutdown request",
                domid);
    } else {
        set_pending(d, reasons[kind], SIM_NEED_AGENT, d->shutdown_ms,
                    time_mono_ms());
    }
    rc = 0;
out:
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int
sim_domain_destroy(struct xenops_host *host, uint32_t domid, char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct sim_domain *d;
    int rc;

    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
    } else {
        domain_remove(h, d);
        rc = 0;
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static void
kv_put(struct xenops_kv **kv, size_t *n, const char *key, const char *value)
{
    *kv = xrealloc(*kv, (*n + 1) * sizeof **kv);
    (*kv)[*n].key = xstrdup(key);
    (*kv)[*n].value = xstrdup(value);
    (*n)++;
}

static int
sim_domain_info(struct xenops_host *host, uint32_t domid,
                struct xenops_domain_info *info, char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct xenops_guest_info *g = &info->guest;
    struct sim_domain *d;
    int rc;

    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
        goto out;
    }
    memset(info, 0, sizeof *info);
    info->domid = d->domid;
    info->power = d->power;
    info->reason = d->reason;
    info->memory_actual = d->memory_actual;
    info->memory_target = d->memory_target;
    info->vcpus_online = d->vcpus_online;
    info->cpu_time_ns = d->cpu_time_ns;
    if (d->power == XENOPS_RUNNING) {
        memcpy(info->vcpu_utilisation, d->util, sizeof d->util);
    }
    info->start_time = d->start_time;
    if (agent_up(d)) {
        char ip[32];

        g->pv_drivers = true;
        strcpy(g->pv_drivers_version, "9.4.0");
        kv_put(&g->os_version, &g->n_os_version, "name",
               "Debian GNU/Linux 12");
        kv_put(&g->os_version, &g->n_os_version, "distro", "debian");
        kv_put(&g->os_version, &g->n_os_version, "major", "12");
        kv_put(&g->os_version, &g->n_os_version, "minor", "0");
        kv_put(&g->os_version, &g->n_os_version, "uname", "6.1.0-sim");
        snprintf(ip, sizeof ip, "198.51.100.%u", 10 + d->domid % 200);
        for (size_t i = 0; i < d->spec->n_vifs; i++) {
            char key[32];
            int pos = d->spec->vifs[i].position;
            snprintf(key, sizeof key, "%d/ip", pos);
            kv_put(&g->networks, &g->n_networks, key, ip);
            snprintf(key, sizeof key, "%d/ipv4/0", pos);
            kv_put(&g->networks, &g->n_networks, key, ip);
        }
        g->memory_total = d->memory_actual;
        g->memory_free = d->memory_actual
                         - (int64_t) ((double) d->memory_actual
                                      * d->guest_used);
    }
    rc = 0;
out:
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int
sim_domain_save(struct xenops_host *host, uint32_t domid, const char *path,
                char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct ds image = DS_EMPTY;
    struct sim_image img;
    struct sim_domain *d;
    char *name = NULL;
    int rc;

    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
    } else if (d->power != XENOPS_SHUTDOWN
               || d->reason != XENOPS_REASON_SUSPEND) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has not suspended "
                      "(power %s, reason %s)", domid, power_name(d->power),
                      reason_name(d->reason));
    } else {
        image_snapshot(d, &img);
        name = xstrdup(d->spec->name);
        rc = 0;
    }
    pthread_mutex_unlock(&h->lock);
    if (rc) {
        goto out;
    }
    /* The domain stays (shut down, suspended) until the caller destroys
     * it, as after a real save. */
    image_build(&img, domid, name, &image);
    rc = write_file_atomic(path, image.s, image.len, 0600);
    if (rc) {
        sim_fail(ret_err, rc, "writing suspend image %s: %s", path,
                 strerror(-rc));
    }
out:
    ds_destroy(&image);
    free(name);
    return rc;
}

/* Builds a paused domain from the image read from fd; shared by restore
 * and migrate_receive. */
static int
build_from_stream(struct sim_host *h, const struct xenops_vm_spec *spec,
                  int fd, const char *what, bool verdict,
                  uint32_t *ret_domid, char **ret_err)
{
    struct sim_image img;
    char *err = NULL;
    int rc;

    rc = check_spec(spec, &err);
    if (rc) {
        goto out;
    }
    rc = image_read(fd, spec->uuid, &img, &err);
    if (rc) {
        char *tmp = xasprintf("%s: %s", what, err);
        free(err);
        err = tmp;
        goto out;
    }
    pthread_mutex_lock(&h->lock);
    rc = domain_build(h, spec, &img, ret_domid, &err);
    pthread_mutex_unlock(&h->lock);
out:
    if (verdict && is_stream_socket(fd)) {
        send_verdict(fd, rc, err);
    }
    if (rc && ret_err) {
        *ret_err = err;
        err = NULL;
    }
    free(err);
    return rc;
}

static int
sim_domain_restore(struct xenops_host *host, const struct xenops_vm_spec *spec,
                   const char *path, uint32_t *ret_domid, char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    char *what = NULL;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return sim_fail(ret_err, -errno, "opening suspend image %s: %s",
                        path, strerror(errno));
    }
    what = xasprintf("suspend image %s", path);
    rc = build_from_stream(h, spec, fd, what, false, ret_domid, ret_err);
    close(fd);
    free(what);
    return rc;
}

static int
sim_migrate_send(struct xenops_host *host, uint32_t domid, int fd,
                 char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct ds image = DS_EMPTY;
    struct sim_image img;
    struct sim_domain *d;
    enum xenops_power was = XENOPS_RUNNING;
    char *name = NULL;
    int rc;

    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
    } else if (d->power == XENOPS_SHUTDOWN) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has shut down",
                      domid);
    } else if (d->migrating) {
        rc = sim_fail(ret_err, -EBUSY, "domain %"PRIu32" is already being "
                      "migrated", domid);
    } else {
        /* The stream is the final stop-and-copy round: the guest is paused
         * while it is written and resumes if the stream fails. */
        was = d->power;
        if (d->power == XENOPS_RUNNING) {
            d->run_ms = run_clock(d, time_mono_ms());
            d->power = XENOPS_PAUSED;
        }
        d->migrating = true;
        image_snapshot(d, &img);
        name = xstrdup(d->spec->name);
        rc = 0;
    }
    pthread_mutex_unlock(&h->lock);
    if (rc) {
        goto out;
    }

    image_build(&img, domid, name, &image);
    rc = write_all(fd, image.s, image.len);
    if (rc) {
        sim_fail(ret_err, rc, "writing migration stream of domain %"PRIu32
                 ": %s", domid, strerror(-rc));
    } else if (is_stream_socket(fd)) {
        rc = read_verdict(fd, ret_err);
    }

    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (d && !rc) {
        domain_remove(h, d);
    } else if (d) {
        d->migrating = false;
        if (was == XENOPS_RUNNING && d->power == XENOPS_PAUSED) {
            d->power = XENOPS_RUNNING;
            d->resumed_at = time_mono_ms();
        }
    }
    pthread_mutex_unlock(&h->lock);
out:
    ds_destroy(&image);
    free(name);
    return rc;
}

static int
sim_migrate_receive(struct xenops_host *host,
                    const struct xenops_vm_spec *spec, int fd,
                    uint32_t *ret_domid, char **ret_err)
{
    return build_from_stream(sim_host_cast(host), spec, fd,
                             "migration stream", true, ret_domid, ret_err);
}

static int
sim_set_memory_target(struct xenops_host *host, uint32_t domid, int64_t bytes,
                      char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct sim_domain *d;
    int64_t lo, hi, need, free_mem;
    int rc;

    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
        goto out;
    }
    if (d->power == XENOPS_SHUTDOWN) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has shut down",
                      domid);
        goto out;
    }
    lo = MAX(d->spec->memory_static_min, 1);
    hi = d->spec->memory_static_max ? d->spec->memory_static_max : INT64_MAX;
    if (bytes < lo || bytes > hi) {
        rc = sim_fail(ret_err, -EINVAL, "memory target %"PRId64" is outside "
                      "the static range %"PRId64"..%"PRId64, bytes, lo, hi);
        goto out;
    }
    /* Reserve a rise at once so that two guests cannot both balloon into
     * the same free memory. */
    need = MAX(d->memory_actual, bytes) - MAX(d->memory_actual,
                                              d->memory_target);
    free_mem = host_free_memory(h);
    if (need > free_mem) {
        rc = sim_fail(ret_err, -ENOMEM, "raising the target of domain "
                      "%"PRIu32" needs %"PRId64" more bytes but the host has "
                      "%"PRId64" free", domid, need, free_mem);
        goto out;
    }
    d->memory_target = bytes;
    rc = 0;
out:
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int
sim_set_vcpus(struct xenops_host *host, uint32_t domid, int n, char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct sim_domain *d;
    int rc;

    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
    } else if (d->power == XENOPS_SHUTDOWN) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has shut down",
                      domid);
    } else if (n < 1 || n > d->spec->vcpus_max) {
        rc = sim_fail(ret_err, -EINVAL, "%d vCPUs is outside 1..%d", n,
                      d->spec->vcpus_max);
    } else if (!d->pv_drivers) {
        rc = sim_fail(ret_err, -EOPNOTSUPP, "domain %"PRIu32" has no PV "
                      "drivers for vCPU hotplug", domid);
    } else {
        for (int i = d->vcpus_online; i < n; i++) {
            d->util[i] = 0.1;
        }
        for (int i = n; i < SIM_MAX_VCPUS; i++) {
            d->util[i] = 0;
        }
        d->vcpus_online = n;
        rc = 0;
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

/* Index of the device at position, or -1. */
static int
find_device(const struct xenops_vm_spec *s, enum xenops_device kind,
            int position)
{
    if (kind == XENOPS_DEV_VBD) {
        for (size_t i = 0; i < s->n_vbds; i++) {
            if (s->vbds[i].position == position) {
                return (int) i;
            }
        }
    } else if (kind == XENOPS_DEV_VIF) {
        for (size_t i = 0; i < s->n_vifs; i++) {
            if (s->vifs[i].position == position) {
                return (int) i;
            }
        }
    }
    return -1;
}

static int
sim_device_plug(struct xenops_host *host, uint32_t domid,
                enum xenops_device kind, const void *dev, char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct xenops_vm_spec *s;
    struct sim_domain *d;
    int position, rc;

    if (kind != XENOPS_DEV_VBD && kind != XENOPS_DEV_VIF) {
        return sim_fail(ret_err, -EOPNOTSUPP, "the simulator has no PCI "
                        "passthrough");
    }
    if (!dev) {
        return sim_fail(ret_err, -EINVAL, "no device spec");
    }
    position = kind == XENOPS_DEV_VBD
               ? ((const struct xenops_vbd_spec *) dev)->position
               : ((const struct xenops_vif_spec *) dev)->position;
    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
        goto out;
    }
    s = d->spec;
    if (d->power == XENOPS_SHUTDOWN) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has shut down",
                      domid);
    } else if (!d->pv_drivers) {
        rc = sim_fail(ret_err, -EOPNOTSUPP, "domain %"PRIu32" has no PV "
                      "drivers for hotplug", domid);
    } else if (find_device(s, kind, position) >= 0) {
        rc = sim_fail(ret_err, -EEXIST, "domain %"PRIu32" already has a %s "
                      "at position %d", domid,
                      kind == XENOPS_DEV_VBD ? "VBD" : "VIF", position);
    } else if (kind == XENOPS_DEV_VBD) {
        s->vbds = xrealloc(s->vbds, (s->n_vbds + 1) * sizeof *s->vbds);
        vbd_copy(&s->vbds[s->n_vbds++], dev);
        rc = 0;
    } else {
        s->vifs = xrealloc(s->vifs, (s->n_vifs + 1) * sizeof *s->vifs);
        vif_copy(&s->vifs[s->n_vifs++], dev);
        if (agent_up(d)) {
            queue_update(h, XENOPS_UPDATE_GUEST, d);    /* a new network */
        }
        rc = 0;
    }
out:
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int
sim_device_unplug(struct xenops_host *host, uint32_t domid,
                  enum xenops_device kind, int position, bool force,
                  char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct xenops_vm_spec *s;
    struct sim_domain *d;
    int i, rc;

    if (kind != XENOPS_DEV_VBD && kind != XENOPS_DEV_VIF) {
        return sim_fail(ret_err, -EOPNOTSUPP, "the simulator has no PCI "
                        "passthrough");
    }
    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
        goto out;
    }
    s = d->spec;
    i = find_device(s, kind, position);
    if (i < 0) {
        rc = sim_fail(ret_err, -ENOENT, "domain %"PRIu32" has no %s at "
                      "position %d", domid,
                      kind == XENOPS_DEV_VBD ? "VBD" : "VIF", position);
    } else if (!force && d->power != XENOPS_SHUTDOWN && !d->pv_drivers) {
        /* A clean unplug needs the guest to let go of the device; a shut
         * down guest holds nothing. */
        rc = sim_fail(ret_err, -EOPNOTSUPP, "domain %"PRIu32" has no PV "
                      "drivers for a clean unplug", domid);
    } else if (kind == XENOPS_DEV_VBD) {
        vbd_free_fields(&s->vbds[i]);
        memmove(&s->vbds[i], &s->vbds[i + 1],
                (s->n_vbds - i - 1) * sizeof *s->vbds);
        s->n_vbds--;
        rc = 0;
    } else {
        vif_free_fields(&s->vifs[i]);
        memmove(&s->vifs[i], &s->vifs[i + 1],
                (s->n_vifs - i - 1) * sizeof *s->vifs);
        s->n_vifs--;
        if (agent_up(d)) {
            queue_update(h, XENOPS_UPDATE_GUEST, d);
        }
        rc = 0;
    }
out:
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int
sim_send_sysrq(struct xenops_host *host, uint32_t domid, char key,
               char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct sim_domain *d;
    int64_t now = time_mono_ms();
    int rc;

    if (!isgraph((unsigned char) key)) {
        return sim_fail(ret_err, -EINVAL, "bad sysrq key 0x%02x",
                        (unsigned char) key);
    }
    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
    } else if (d->power == XENOPS_SHUTDOWN) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has shut down",
                      domid);
    } else if (!d->pv_drivers) {
        /* Keys travel through xenstore to the guest kernel's drivers. */
        rc = sim_fail(ret_err, -EOPNOTSUPP, "domain %"PRIu32" has no PV "
                      "drivers to receive sysrq keys", domid);
    } else {
        size_t n = strlen(d->sysrq_log);
        if (n == SIM_SYSRQ_LOG) {
            memmove(d->sysrq_log, d->sysrq_log + 1, n);
            n--;
        }
        d->sysrq_log[n] = key;
        d->sysrq_log[n + 1] = '\0';
        /* The kernel acts at once, without asking anyone, as soon as it
         * runs: 'b' reboots, 'o' powers off, 'c' crashes. */
        if (key == 'b') {
            set_pending(d, XENOPS_REASON_REBOOT, SIM_NEED_RUNNING, 0, now);
        } else if (key == 'o') {
            set_pending(d, XENOPS_REASON_POWEROFF, SIM_NEED_RUNNING, 0, now);
        } else if (key == 'c') {
            set_pending(d, XENOPS_REASON_CRASH, SIM_NEED_RUNNING, 0, now);
        }
        rc = 0;
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int
sim_send_trigger(struct xenops_host *host, uint32_t domid,
                 const char *trigger, char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct sim_domain *d;
    int64_t now = time_mono_ms();
    int rc;

    if (!trigger || (strcmp(trigger, "power") && strcmp(trigger, "reset")
                     && strcmp(trigger, "nmi"))) {
        return sim_fail(ret_err, -EINVAL, "unknown trigger '%s' (power, "
                        "reset, nmi)", trigger ? trigger : "");
    }
    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
    } else if (d->power == XENOPS_SHUTDOWN) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has shut down",
                      domid);
    } else if (!strcmp(trigger, "power")) {
        /* An ACPI power button: PV guests have none; any OS that has
         * booted handles it, drivers or not, unless it ignores requests. */
        if (d->spec->type == XENOPS_PV) {
            rc = sim_fail(ret_err, -EOPNOTSUPP, "a PV guest has no power "
                          "button");
        } else {
            if (!d->ignore_shutdown) {
                set_pending(d, XENOPS_REASON_POWEROFF, SIM_NEED_BOOTED,
                            d->shutdown_ms, now);
            }
            rc = 0;
        }
    } else if (!strcmp(trigger, "reset")) {
        /* A hardware reset needs no cooperation, nor a running vCPU. */
        domain_shut_down(h, d, XENOPS_REASON_REBOOT, now);
        rc = 0;
    } else {
        set_pending(d, XENOPS_REASON_CRASH, SIM_NEED_RUNNING, 0, now);
        rc = 0;
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int
sim_console_open(struct xenops_host *host, uint32_t domid, int *ret_fd,
                 char **ret_err)
{
    struct sim_host *h = sim_host_cast(host);
    struct sim_console *c;
    struct sim_domain *d;
    int sv[2] = { -1, -1 };
    int rc;

    pthread_mutex_lock(&h->lock);
    d = find_domain(h, domid);
    if (!d) {
        rc = no_domain(domid, ret_err);
        goto out;
    }
    if (d->power == XENOPS_SHUTDOWN) {
        rc = sim_fail(ret_err, -EINVAL, "domain %"PRIu32" has shut down",
                      domid);
        goto out;
    }
    if (h->n_consoles >= SIM_MAX_CONSOLES) {
        rc = sim_fail(ret_err, -EBUSY, "%d consoles are open already",
                      h->n_consoles);
        goto out;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0
        || fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
        rc = sim_fail(ret_err, -errno, "socketpair: %s", strerror(errno));
        goto out;
    }
    /* Every connection gets a terminal of its own, showing the current
     * screen: the boot, or the banner and the login prompt. */
    c = xcalloc(1, sizeof *c);
    c->fd = sv[0];
    sv[0] = -1;
    c->domid = domid;
    console_show_screen(c, d);
    c->next = h->consoles;
    h->consoles = c;
    h->n_consoles++;
    wake_ticker(h);
    *ret_fd = sv[1];
    sv[1] = -1;
    rc = 0;
out:
    pthread_mutex_unlock(&h->lock);
    for (int i = 0; i < 2; i++) {
        if (sv[i] >= 0) {
            close(sv[i]);
        }
    }
    return rc;
}

const struct xenops_provider xenops_sim_provider = {
    .name = "sim",
    .open = sim_open,
    .close = sim_close,
    .host_info = sim_host_info,
    .set_update_callback = sim_set_update_callback,
    .domain_create = sim_domain_create,
    .domain_unpause = sim_domain_unpause,
    .domain_pause = sim_domain_pause,
    .domain_shutdown = sim_domain_shutdown,
    .domain_destroy = sim_domain_destroy,
    .domain_info = sim_domain_info,
    .domain_save = sim_domain_save,
    .domain_restore = sim_domain_restore,
    .migrate_send = sim_migrate_send,
    .migrate_receive = sim_migrate_receive,
    .set_memory_target = sim_set_memory_target,
    .set_vcpus = sim_set_vcpus,
    .device_plug = sim_device_plug,
    .device_unplug = sim_device_unplug,
    .send_sysrq = sim_send_sysrq,
    .send_trigger = sim_send_trigger,
    .console_open = sim_console_open,
};
