/* xen.c — the Xen provider: builds and runs domains with libxl, reads what
 * the hypervisor reports with libxenctrl, and talks to guests through
 * xenstore.  Built whenever libxen-dev is present; selected with
 * --backend xen on a Xen Dom0.
 *
 * What libxl is asked to build comes from xen-config.c, which also decodes
 * domain flags and guest agent data; this file only makes the calls, keeps
 * a little per-domain state (which vdev a VBD position became, the last
 * vCPU time samples) and runs the watcher thread that turns xenstore
 * watches and a one-second tick into update callbacks.
 * docs/xen-backend.md tells what is tested where.
 *
 * Configuration (the string given to xenops_open()): empty, or
 * comma-separated key=value pairs vif_script=NAME (the vif hotplug script,
 * e.g. vif-openvswitch; libxl's default is vif-bridge) and nbd_script=NAME
 * (replaces XEN_CONFIG_NBD_SCRIPT for NBD disks). */
#include <config.h>
#include "xenops.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <libxl.h>
#include <libxl_utils.h>
#include <xenctrl.h>
#include <xenstore.h>
#include <xentoollog.h>

#include "util.h"
#include "xen-config.h"

#define MAX_SAMPLED_VCPUS 64    /* = ARRAY_SIZE(domain_info.vcpu_utilisation) */
#define TICK_MS 1000            /* vCPU sampling period */
#define STATS_EVERY_TICKS 5     /* XENOPS_UPDATE_STATS period, as RRDs step */
#define INCOMING_SUFFIX "--incoming"

/* ---- Logging ---- */

/* The last error libxl or libxc logged on this thread, for *ret_err:
 * their return codes say little ("ERROR_FAIL"), their log says why. */
static __thread char last_xen_error[512];

static void
logger_vmessage(xentoollog_logger *lg, xentoollog_level level, int errnoval,
                const char *context, const char *format, va_list args)
{
    char msg[480];

    vsnprintf(msg, sizeof msg, format, args);
    if (level >= XTL_ERROR) {
        snprintf(last_xen_error, sizeof last_xen_error, "%s%s%s", msg,
                 errnoval >= 0 ? ": " : "",
                 errnoval >= 0 ? strerror(errnoval) : "");
    }
    /* Providers log at debug level at most; failures reach the caller
     * through *ret_err. */
    LOG_DBG("%s: %s%s%s", context ? context : "xen", msg,
            errnoval >= 0 ? ": " : "", errnoval >= 0 ? strerror(errnoval) : "");
}

static void
logger_progress(xentoollog_logger *lg, const char *context,
                const char *doing_what, int percent, unsigned long done,
                unsigned long total)
{
    (void) lg, (void) done, (void) total;
    LOG_DBG("%s: %s: %d%%", context ? context : "xen", doing_what, percent);
}

static void
logger_destroy(xentoollog_logger *lg)
{
    (void) lg;      /* static */
}

static xentoollog_logger logger = {
    .vmessage = logger_vmessage,
    .progress = logger_progress,
    .destroy = logger_destroy,
};

static void
xen_call_begin(void)
{
    last_xen_error[0] = '\0';
}

/* Maps a libxl error to the interface's -errno. */
static int
errno_from_libxl(int xlrc)
{
    switch (xlrc) {
    case ERROR_DOMAIN_NOTFOUND:
    case ERROR_DOMAIN_DESTROYED:
        return -ENOENT;
    case ERROR_NOPARAVIRT:
    case ERROR_NI:
    case ERROR_FEATURE_REMOVED:
        return -EOPNOTSUPP;
    case ERROR_INVAL:
    case ERROR_VNUMA_CONFIG_INVALID:
        return -EINVAL;
    case ERROR_GUEST_TIMEDOUT:
    case ERROR_TIMEDOUT:
        return -ETIMEDOUT;
    case ERROR_DEVICE_EXISTS:
        return -EEXIST;
    case ERROR_NOTFOUND:
        return -ENODEV;
    default:
        /* ERROR_NOMEM is libxl failing to allocate, not the host lacking
         * memory for the guest: not -ENOMEM. */
        return -EIO;
    }
}

/* Fails a call that libxl failed: the message is what/libxl's last error
 * logged on this thread, or the error's name. */
static int PRINTF_FMT(3, 4)
xl_fail(int xlrc, char **ret_err, const char *fmt, ...)
{
    va_list args;
    char *what;

    va_start(args, fmt);
    if (vasprintf(&what, fmt, args) < 0) {
        xabort("out of memory");
    }
    va_end(args);
    *ret_err = xasprintf("%s: %s", what, last_xen_error[0]
                         ? last_xen_error
                         : libxl_error_to_string(xlrc)
                           ? libxl_error_to_string(xlrc) : "libxl error");
    free(what);
    return errno_from_libxl(xlrc);
}

/* ---- State ---- */

struct vbd_slot {
    int position;
    char *vdev;
};

/* What the provider remembers about a domain. */
struct xen_dom {
    uint32_t domid;
    char uuid[37];
    bool seen;                  /* found by the latest scan */
    bool watched;               /* guest data watches registered */
    enum xenops_power power;
    enum xenops_shutdown_reason reason;
    unsigned int max_vcpu_id;

    struct vbd_slot *vbds;      /* VBD position -> vdev, from plugs */
    size_t n_vbds;

    /* vCPU samples, for utilisation over the last tick. */
    int64_t sample_ns;
    int n_vcpus;
    uint64_t vcpu_time[MAX_SAMPLED_VCPUS];
    double vcpu_util[MAX_SAMPLED_VCPUS];
};

struct xen_host {
    struct xenops_host up;      /* must be first */

    /* Used by callers' threads; libxl ctxs and xenstore handles are
     * thread-safe, and hypercalls through one xc handle may overlap. */
    xc_interface *xch;
    libxl_ctx *ctx;
    struct xs_handle *xsh;
    libxl_childproc_hooks hooks;
    char *vif_script;
    char *nbd_script;

    pthread_mutex_t mutex;      /* protects what follows */
    struct xen_dom *doms;
    size_t n_doms;
    xenops_update_fn *update_fn;
    void *update_aux;

    /* The watcher thread's own handles. */
    pthread_t thread;
    bool thread_started;
    int wake[2];                /* close() writes to wake[1] */
    xc_interface *watch_xch;
    struct xs_handle *watch_xsh;
};

static struct xen_host *
xen_host_cast(struct xenops_host *host)
{
    return (struct xen_host *) host;
}

static struct xen_dom *
dom_find(struct xen_host *h, uint32_t domid)
{
    for (size_t i = 0; i < h->n_doms; i++) {
        if (h->doms[i].domid == domid) {
            return &h->doms[i];
        }
    }
    return NULL;
}

static void
dom_clear_vbds(struct xen_dom *d)
{
    for (size_t i = 0; i < d->n_vbds; i++) {
        free(d->vbds[i].vdev);
    }
    free(d->vbds);
    d->vbds = NULL;
    d->n_vbds = 0;
}

/* Finds or adds the record for domid; the caller holds the mutex. */
static struct xen_dom *
dom_get(struct xen_host *h, uint32_t domid, const char *uuid)
{
    struct xen_dom *d = dom_find(h, domid);

    if (d && uuid && strcmp(d->uuid, uuid)) {
        /* The domid was reused by a new domain. */
        dom_clear_vbds(d);
        memset(d, 0, sizeof *d);
        d->domid = domid;
    }
    if (!d) {
        h->doms = xrealloc(h->doms, (h->n_doms + 1) * sizeof *h->doms);
        d = &h->doms[h->n_doms++];
        memset(d, 0, sizeof *d);
        d->domid = domid;
        d->power = (enum xenops_power) -1;     /* nothing reported yet */
    }
    if (uuid) {
        snprintf(d->uuid, sizeof d->uuid, "%s", uuid);
    }
    return d;
}

static void
dom_remove(struct xen_host *h, struct xen_dom *d)
{
    dom_clear_vbds(d);
    *d = h->doms[--h->n_doms];
}

static void
dom_set_vbd(struct xen_dom *d, int position, const char *vdev)
{
    for (size_t i = 0; i < d->n_vbds; i++) {
        if (d->vbds[i].position == position) {
            free(d->vbds[i].vdev);
            d->vbds[i].vdev = xstrdup(vdev);
            return;
        }
    }
    d->vbds = xrealloc(d->vbds, (d->n_vbds + 1) * sizeof *d->vbds);
    d->vbds[d->n_vbds].position = position;
    d->vbds[d->n_vbds].vdev = xstrdup(vdev);
    d->n_vbds++;
}

/* Remembers which vdev each VBD of a new domain became, so that unplug by
 * position finds it. */
static void
remember_domain(struct xen_host *h, uint32_t domid,
                const struct xenops_vm_spec *spec,
                const libxl_domain_config *cfg)
{
    struct xen_dom *d;

    pthread_mutex_lock(&h->mutex);
    d = dom_get(h, domid, spec->uuid);
    dom_clear_vbds(d);
    for (size_t i = 0; i < spec->n_vbds && i < (size_t) cfg->num_disks; i++) {
        dom_set_vbd(d, spec->vbds[i].position, cfg->disks[i].vdev);
    }
    pthread_mutex_unlock(&h->mutex);
}

static void
format_handle(const xen_domain_handle_t handle, char uuid[37])
{
    libxl_uuid u;

    memcpy(libxl_uuid_bytearray(&u), handle, 16);
    snprintf(uuid, 37, LIBXL_UUID_FMT, LIBXL_UUID_BYTES(u));
}

/* Xen's view of one domain, or -ENOENT. */
static int
get_domaininfo(xc_interface *xch, uint32_t domid, xc_domaininfo_t *ret_info)
{
    xc_domaininfo_t info;

    if (xc_domain_getinfolist(xch, domid, 1, &info) != 1
        || info.domain != domid) {
        return -ENOENT;
    }
    *ret_info = info;
    return 0;
}

/* ---- xenstore access for xen-config's decoders ---- */

struct xs_guest {
    struct xs_handle *xsh;
    uint32_t domid;
};

static char *
xs_guest_read(void *aux, const char *path)
{
    struct xs_guest *g = aux;
    char *full = xasprintf("/local/domain/%u/%s", g->domid, path);
    unsigned int len;
    char *value = xs_read(g->xsh, XBT_NULL, full, &len);

    free(full);
    return value;       /* malloc'd and NUL-terminated by libxenstore */
}

static char **
xs_guest_list(void *aux, const char *path)
{
    struct xs_guest *g = aux;
    char *full = xasprintf("/local/domain/%u/%s", g->domid, path);
    unsigned int n = 0;
    char **dir = xs_directory(g->xsh, XBT_NULL, full, &n);
    char **names = NULL;

    /* xs_directory() returns one allocation holding the pointers and the
     * strings; the reader interface wants separate strings. */
    if (dir) {
        names = xcalloc(n + 1, sizeof *names);
        for (unsigned int i = 0; i < n; i++) {
            names[i] = xstrdup(dir[i]);
        }
        free(dir);
    }
    free(full);
    return names;
}

static struct xen_config_xs_reader
xs_reader(struct xs_guest *g)
{
    struct xen_config_xs_reader r = { xs_guest_read, xs_guest_list, g };
    return r;
}

/* ---- Updates ---- */

struct pending {
    struct xenops_update *u;
    size_t n, cap;
};

static void
pending_add(struct pending *p, enum xenops_update_kind kind, uint32_t domid,
            const char *uuid)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->u[i].kind == kind && p->u[i].domid == domid) {
            return;     /* one update per domain and kind per round */
        }
    }
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->u = xrealloc(p->u, p->cap * sizeof *p->u);
    }
    memset(&p->u[p->n], 0, sizeof p->u[p->n]);
    p->u[p->n].kind = kind;
    p->u[p->n].domid = domid;
    snprintf(p->u[p->n].uuid, sizeof p->u[p->n].uuid, "%s", uuid);
    p->n++;
}

/* Delivers the round's updates without holding the mutex, so that a slow
 * callback delays only the watcher. */
static void
pending_flush(struct xen_host *h, struct pending *p)
{
    xenops_update_fn *fn;
    void *aux;

    pthread_mutex_lock(&h->mutex);
    fn = h->update_fn;
    aux = h->update_aux;
    pthread_mutex_unlock(&h->mutex);
    for (size_t i = 0; fn && i < p->n; i++) {
        fn(aux, &p->u[i]);
    }
    p->n = 0;
}

static void
guest_watch(struct xs_handle *xsh, uint32_t domid, bool on)
{
    static const char *const paths[] = {
        "data", "attr", "control", "memory/target",
    };
    char token[32];

    snprintf(token, sizeof token, "guest:%u", domid);
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
        char *path = xasprintf("/local/domain/%u/%s", domid, paths[i]);

        /* A watch on a path that does not exist yet is valid: it fires
         * when the guest agent creates it. */
        if (on) {
            xs_watch(xsh, path, token);
        } else {
            xs_unwatch(xsh, path, token);
        }
        free(path);
    }
}

/* Compares Xen's domain list with the records: new domains are adopted
 * (including ones that existed before this process started), changed
 * power states and vanished domains are reported. */
static void
scan_domains(struct xen_host *h, struct pending *p)
{
    xc_domaininfo_t infos[256];
    uint32_t next = 1;          /* the control domain is not a VM */
    uint32_t *watch_on = NULL, *watch_off = NULL;
    size_t n_on = 0, n_off = 0;
    int n;

    pthread_mutex_lock(&h->mutex);
    for (size_t i = 0; i < h->n_doms; i++) {
        h->doms[i].seen = false;
    }
    pthread_mutex_unlock(&h->mutex);

    do {
        n = xc_domain_getinfolist(h->watch_xch, next, ARRAY_SIZE(infos),
                                  infos);
        if (n < 0) {
            LOG_DBG("xc_domain_getinfolist: %s", strerror(errno));
            return;     /* try again at the next tick */
        }
        pthread_mutex_lock(&h->mutex);
        for (int i = 0; i < n; i++) {
            char uuid[37];
            enum xenops_power power;
            enum xenops_shutdown_reason reason;
            struct xen_dom *d;

            format_handle(infos[i].handle, uuid);
            d = dom_get(h, infos[i].domain, uuid);
            d->seen = true;
            d->max_vcpu_id = infos[i].max_vcpu_id;
            xen_config_power_from_flags(infos[i].flags, &power, &reason);
            if (power != d->power || reason != d->reason) {
                d->power = power;
                d->reason = reason;
                pending_add(p, XENOPS_UPDATE_DOMAIN, d->domid, d->uuid);
            }
            if (!d->watched) {
                d->watched = true;
                watch_on = xrealloc(watch_on, (n_on + 1) * sizeof *watch_on);
                watch_on[n_on++] = d->domid;
            }
            next = infos[i].domain + 1;
        }
        pthread_mutex_unlock(&h->mutex);
    } while (n == (int) ARRAY_SIZE(infos));

    pthread_mutex_lock(&h->mutex);
    for (size_t i = 0; i < h->n_doms;) {
        struct xen_dom *d = &h->doms[i];

        if (d->seen) {
            i++;
            continue;
        }
        /* Gone: destroyed by us or by someone else. */
        pending_add(p, XENOPS_UPDATE_DOMAIN, d->domid, d->uuid);
        if (d->watched) {
            watch_off = xrealloc(watch_off, (n_off + 1) * sizeof *watch_off);
            watch_off[n_off++] = d->domid;
        }
        dom_remove(h, d);
    }
    pthread_mutex_unlock(&h->mutex);

    for (size_t i = 0; i < n_on; i++) {
        guest_watch(h->watch_xsh, watch_on[i], true);
    }
    for (size_t i = 0; i < n_off; i++) {
        guest_watch(h->watch_xsh, watch_off[i], false);
    }
    free(watch_on);
    free(watch_off);
}

/* Samples every domain's vCPU times; reports statistics every few ticks. */
static void
sample_vcpus(struct xen_host *h, struct pending *p, bool report)
{
    struct { uint32_t domid; int n; } *doms;
    size_t n_doms;
    int64_t now = time_mono_us() * 1000;

    pthread_mutex_lock(&h->mutex);
    n_doms = h->n_doms;
    doms = xcalloc(n_doms + 1, sizeof *doms);
    for (size_t i = 0; i < n_doms; i++) {
        doms[i].domid = h->doms[i].domid;
        doms[i].n = MIN((int) h->doms[i].max_vcpu_id + 1, MAX_SAMPLED_VCPUS);
    }
    pthread_mutex_unlock(&h->mutex);

    for (size_t i = 0; i < n_doms; i++) {
        uint64_t times[MAX_SAMPLED_VCPUS];
        struct xen_dom *d;
        int n = 0;

        for (int v = 0; v < doms[i].n; v++) {
            xc_vcpuinfo_t vi;

            if (xc_vcpu_getinfo(h->watch_xch, doms[i].domid, v, &vi)) {
                break;
            }
            times[n++] = vi.online ? vi.cpu_time : 0;
        }
        pthread_mutex_lock(&h->mutex);
        d = dom_find(h, doms[i].domid);
        if (d) {
            int64_t elapsed = now - d->sample_ns;

            for (int v = 0; v < n; v++) {
                double u = 0;

                if (d->sample_ns && v < d->n_vcpus && elapsed > 0
                    && times[v] >= d->vcpu_time[v]) {
                    u = (double) (times[v] - d->vcpu_time[v]) / elapsed;
                }
                d->vcpu_util[v] = u > 1 ? 1 : u;
                d->vcpu_time[v] = times[v];
            }
            d->n_vcpus = n;
            d->sample_ns = now;
            if (report && d->power == XENOPS_RUNNING) {
                pending_add(p, XENOPS_UPDATE_STATS, d->domid, d->uuid);
            }
        }
        pthread_mutex_unlock(&h->mutex);
    }
    free(doms);
}

static void *
watcher_main(void *h_)
{
    struct xen_host *h = h_;
    struct pending p = { NULL, 0, 0 };
    int64_t next_tick = time_mono_ms();
    unsigned int ticks = 0;
    sigset_t all;

    /* Signals (SIGCHLD for libxl among them) go to other threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    scan_domains(h, &p);
    pending_flush(h, &p);
    for (;;) {
        struct pollfd fds[2] = {
            { .fd = h->wake[0], .events = POLLIN },
            { .fd = xs_fileno(h->watch_xsh), .events = POLLIN },
        };
        int64_t now = time_mono_ms();
        bool rescan = false;
        char **event;

        if (poll(fds, 2, next_tick > now ? (int) (next_tick - now) : 0) < 0
            && errno != EINTR) {
            LOG_DBG("xen watcher: poll: %s", strerror(errno));
        }
        if (fds[0].revents) {
            break;
        }
        while ((event = xs_check_watch(h->watch_xsh))) {
            const char *token = event[XS_WATCH_TOKEN];
            unsigned int domid;

            if (!strcmp(token, "domains")) {
                rescan = true;
            } else if (sscanf(token, "guest:%u", &domid) == 1) {
                struct xen_dom *d;

                pthread_mutex_lock(&h->mutex);
                d = dom_find(h, domid);
                if (d) {
                    pending_add(&p, XENOPS_UPDATE_GUEST, domid, d->uuid);
                }
                pthread_mutex_unlock(&h->mutex);
            }
            free(event);
        }
        now = time_mono_ms();
        if (now >= next_tick) {
            ticks++;
            next_tick = now + TICK_MS;
            /* The tick rescans too: a missed watch must not hide a
             * shutdown for long. */
            scan_domains(h, &p);
            sample_vcpus(h, &p, ticks % STATS_EVERY_TICKS == 0);
        } else if (rescan) {
            scan_domains(h, &p);
        }
        pending_flush(h, &p);
    }
    free(p.u);
    return NULL;
}

/* ---- Lifecycle ---- */

static void
xen_host_destroy(struct xen_host *h)
{
    if (!h) {
        return;
    }
    if (h->thread_started) {
        char c = 'q';

        if (write(h->wake[1], &c, 1) != 1) {
            LOG_DBG("xen: cannot wake the watcher: %s", strerror(errno));
        }
        pthread_join(h->thread, NULL);
    }
    for (int i = 0; i < 2; i++) {
        if (h->wake[i] >= 0) {
            close(h->wake[i]);
        }
    }
    xs_close(h->watch_xsh);
    if (h->watch_xch) {
        xc_interface_close(h->watch_xch);
    }
    libxl_ctx_free(h->ctx);
    xs_close(h->xsh);
    if (h->xch) {
        xc_interface_close(h->xch);
    }
    for (size_t i = 0; i < h->n_doms; i++) {
        dom_clear_vbds(&h->doms[i]);
    }
    free(h->doms);
    free(h->vif_script);
    free(h->nbd_script);
    pthread_mutex_destroy(&h->mutex);
    free(h);
}

static int
parse_config(struct xen_host *h, const char *config, char **ret_err)
{
    char *copy = xstrdup(config ? config : ""), *save = NULL, *tok;
    int rc = 0;

    for (tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');

        if (eq && eq[1] && !strncmp(tok, "vif_script=", 11)) {
            free(h->vif_script);
            h->vif_script = xstrdup(eq + 1);
        } else if (eq && eq[1] && !strncmp(tok, "nbd_script=", 11)) {
            free(h->nbd_script);
            h->nbd_script = xstrdup(eq + 1);
        } else {
            *ret_err = xasprintf("bad xen backend configuration '%s' "
                                 "(expected vif_script=NAME,"
                                 "nbd_script=NAME)", config);
            rc = -EINVAL;
            break;
        }
    }
    free(copy);
    return rc;
}

static int
xen_open(const char *config, struct xenops_host **ret_host, char **ret_err)
{
    struct xen_host *h = xcalloc(1, sizeof *h);
    int rc, xlrc;

    pthread_mutex_init(&h->mutex, NULL);
    h->wake[0] = h->wake[1] = -1;
    rc = parse_config(h, config, ret_err);
    if (rc) {
        goto out;
    }

    xen_call_begin();
    h->xch = xc_interface_open(&logger, &logger, 0);
    if (!h->xch) {
        *ret_err = xasprintf("cannot open libxenctrl: %s (is this a Xen "
                             "Dom0 with the privcmd driver loaded?)",
                             last_xen_error[0] ? last_xen_error
                                               : strerror(errno));
        rc = -ENODEV;
        goto out;
    }
    xen_call_begin();
    xlrc = libxl_ctx_alloc(&h->ctx, LIBXL_VERSION, 0, &logger);
    if (xlrc) {
        h->ctx = NULL;
        xl_fail(xlrc, ret_err, "cannot open libxl");
        rc = -ENODEV;
        goto out;
    }
    /* The daemon starts and reaps children of its own (block servers,
     * helpers) with waitpid() on their pids; libxl reaps only its own. */
    h->hooks.chldowner = libxl_sigchld_owner_libxl_always_selective_reap;
    libxl_childproc_setmode(h->ctx, &h->hooks, h);

    h->xsh = xs_open(0);
    h->watch_xsh = xs_open(0);
    h->watch_xch = xc_interface_open(&logger, &logger, 0);
    if (!h->xsh || !h->watch_xsh || !h->watch_xch) {
        *ret_err = xasprintf("cannot connect to xenstored: %s",
                             strerror(errno));
        rc = -ENODEV;
        goto out;
    }
    /* @introduceDomain and @releaseDomain fire when a domain appears,
     * shuts down or is destroyed. */
    if (!xs_watch(h->watch_xsh, "@introduceDomain", "domains")
        || !xs_watch(h->watch_xsh, "@releaseDomain", "domains")) {
        *ret_err = xasprintf("cannot watch xenstore: %s", strerror(errno));
        rc = -EIO;
        goto out;
    }
    if (pipe2(h->wake, O_CLOEXEC | O_NONBLOCK)) {
        *ret_err = xasprintf("pipe: %s", strerror(errno));
        rc = -errno;
        goto out;
    }
    rc = -pthread_create(&h->thread, NULL, watcher_main, h);
    if (rc) {
        *ret_err = xasprintf("cannot start the xen watcher: %s",
                             strerror(-rc));
        goto out;
    }
    h->thread_started = true;
    *ret_host = &h->up;
    h = NULL;
    rc = 0;
out:
    xen_host_destroy(h);
    return rc;
}

static void
xen_close(struct xenops_host *host)
{
    xen_host_destroy(xen_host_cast(host));
}

static void
xen_set_update_callback(struct xenops_host *host, xenops_update_fn *fn,
                        void *aux)
{
    struct xen_host *h = xen_host_cast(host);

    pthread_mutex_lock(&h->mutex);
    h->update_fn = fn;
    h->update_aux = aux;
    pthread_mutex_unlock(&h->mutex);
}

/* ---- Host ---- */

/* Fills the CPU description from /proc/cpuinfo: a PV Dom0 sees the host's
 * CPUs as they are, apart from features Xen keeps for itself. */
static void
read_cpuinfo(struct xenops_cpu *cpu)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[4096];

    if (!f) {
        return;
    }
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':'), *key_end, *value;

        if (!colon) {
            if (cpu->vendor[0] && line[0] == '\n') {
                break;          /* the first CPU is enough */
            }
            continue;
        }
        for (key_end = colon; key_end > line && (key_end[-1] == ' '
                                                 || key_end[-1] == '\t');) {
            key_end--;
        }
        *key_end = '\0';
        value = colon + 1 + (colon[1] == ' ');
        value[strcspn(value, "\n")] = '\0';
        if (!strcmp(line, "vendor_id")) {
            snprintf(cpu->vendor, sizeof cpu->vendor, "%s", value);
        } else if (!strcmp(line, "model name")) {
            snprintf(cpu->model_name, sizeof cpu->model_name, "%s", value);
        } else if (!strcmp(line, "cpu family")) {
            cpu->family = atoi(value);
        } else if (!strcmp(line, "model")) {
            cpu->model = atoi(value);
        } else if (!strcmp(line, "stepping")) {
            cpu->stepping = atoi(value);
        } else if (!strcmp(line, "flags")) {
            snprintf(cpu->flags, sizeof cpu->flags, "%s", value);
        }
    }
    fclose(f);
}

static int
xen_host_info(struct xenops_host *host, struct xenops_host_info *info,
              char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    xc_physinfo_t pi = { 0 };
    xen_extraversion_t extra;
    xen_capabilities_info_t caps;
    libxl_dominfo dom0;
    int ver;

    memset(info, 0, sizeof *info);
    xen_call_begin();
    if (xc_physinfo(h->xch, &pi)) {
        int err = errno;

        *ret_err = xasprintf("xc_physinfo: %s", strerror(err));
        return -err;
    }
    ver = xc_version(h->xch, XENVER_version, NULL);
    memset(extra, 0, sizeof extra);
    xc_version(h->xch, XENVER_extraversion, &extra);
    snprintf(info->xen_version, sizeof info->xen_version, "%d.%d%s",
             ver >> 16, ver & 0xffff, extra);
    memset(caps, 0, sizeof caps);
    xc_version(h->xch, XENVER_capabilities, &caps);
    snprintf(info->capabilities, sizeof info->capabilities, "%.255s", caps);
    if (gethostname(info->hostname, sizeof info->hostname - 1)) {
        strcpy(info->hostname, "localhost");
    }
    info->n_cpus = pi.nr_cpus;
    strcpy(info->cpu.vendor, "unknown");
    strcpy(info->cpu.model_name, "unknown");
    read_cpuinfo(&info->cpu);
    info->cpu.speed_mhz = pi.cpu_khz / 1000;
    info->memory_total = (int64_t) pi.total_pages * XC_PAGE_SIZE;
    info->memory_free = (int64_t) pi.free_pages * XC_PAGE_SIZE;
    libxl_dominfo_init(&dom0);
    if (!libxl_domain_info(h->ctx, &dom0, 0)) {
        info->dom0_memory = (int64_t) dom0.current_memkb * 1024;
        info->dom0_vcpus = dom0.vcpu_online;
    } else {
        info->dom0_vcpus = pi.nr_cpus < 16 ? pi.nr_cpus : 16;
    }
    libxl_dominfo_dispose(&dom0);
    return 0;
}

/* ---- Building domains ---- */

/* Turns spec into a libxl configuration with this host's settings. */
static int
host_config(struct xen_host *h, const struct xenops_vm_spec *spec,
            bool incoming, libxl_domain_config *ret_cfg, char **ret_err)
{
    libxl_domain_config cfg;
    uint32_t other;
    int rc;

    libxl_domain_config_init(&cfg);
    rc = xen_config_from_spec(spec, &cfg, ret_err);
    if (rc) {
        goto out;
    }
    for (int i = 0; h->vif_script && i < cfg.num_nics; i++) {
        free(cfg.nics[i].script);
        cfg.nics[i].script = xstrdup(h->vif_script);
    }
    for (int i = 0; h->nbd_script && i < cfg.num_disks; i++) {
        if (cfg.disks[i].script
            && !strcmp(cfg.disks[i].script, XEN_CONFIG_NBD_SCRIPT)) {
            free(cfg.disks[i].script);
            cfg.disks[i].script = xstrdup(h->nbd_script);
        }
    }
    /* The domain is named after the VM; a second domain for the VM is a
     * bug unless it is the receiving end of a migration on this host,
     * whose name must differ from the sender's while both exist. */
    if (!libxl_name_to_domid(h->ctx, cfg.c_info.name, &other)) {
        if (!incoming) {
            *ret_err = xasprintf("VM %s already has a domain (%u)",
                                 spec->uuid, other);
            rc = -EEXIST;
            goto out;
        }
        free(cfg.c_info.name);
        cfg.c_info.name = xasprintf("%s%s", spec->uuid, INCOMING_SUFFIX);
    }
    *ret_cfg = cfg;
    libxl_domain_config_init(&cfg);
    rc = 0;
out:
    libxl_domain_config_dispose(&cfg);
    return rc;
}

/* Refuses to start a domain the host has no memory for, as squeezed's
 * reservation does for xenopsd: creation deep in libxl would fail less
 * clearly, and perhaps only after building part of the domain. */
static int
check_free_memory(struct xen_host *h, libxl_domain_config *cfg,
                  char **ret_err)
{
    uint64_t need = 0, free_kib = 0;
    int xlrc;

    xen_call_begin();
    xlrc = libxl_domain_need_memory(h->ctx, cfg, INVALID_DOMID, &need);
    if (!xlrc) {
        xlrc = libxl_get_free_memory(h->ctx, &free_kib);
    }
    if (xlrc) {
        return xl_fail(xlrc, ret_err, "cannot compute the memory needed");
    }
    if (need > free_kib) {
        *ret_err = xasprintf("the domain needs %llu KiB, the host has %llu "
                             "KiB free", (unsigned long long) need,
                             (unsigned long long) free_kib);
        return -ENOMEM;
    }
    return 0;
}

/* A failed creation may leave a domain behind (libxl reports its domid
 * then, as xl relies on): nothing else would ever destroy it. */
static void
destroy_half_built(struct xen_host *h, uint32_t domid)
{
    if (libxl_domid_valid_guest(domid)) {
        xen_call_begin();
        if (libxl_domain_destroy(h->ctx, domid, NULL)) {
            LOG_DBG("xen: cannot destroy half-built domain %u: %s", domid,
                    last_xen_error);
        }
    }
}

static int
xen_domain_create(struct xenops_host *host, const struct xenops_vm_spec *spec,
                  uint32_t *ret_domid, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    libxl_domain_config cfg;
    uint32_t domid = INVALID_DOMID;
    int rc, xlrc;

    libxl_domain_config_init(&cfg);
    rc = host_config(h, spec, false, &cfg, ret_err);
    if (rc) {
        goto out;
    }
    rc = check_free_memory(h, &cfg, ret_err);
    if (rc) {
        goto out;
    }
    /* libxl leaves a new domain paused (xl unpauses it unless given -p),
     * which is what the interface asks for. */
    xen_call_begin();
    xlrc = libxl_domain_create_new(h->ctx, &cfg, &domid, NULL, NULL);
    if (xlrc) {
        rc = xl_fail(xlrc, ret_err, "cannot create a domain for VM %s",
                     spec->uuid);
        destroy_half_built(h, domid);
        goto out;
    }
    remember_domain(h, domid, spec, &cfg);
    *ret_domid = domid;
    rc = 0;
out:
    libxl_domain_config_dispose(&cfg);
    return rc;
}

/* Builds a paused domain from a libxl stream on fd (a save file or a
 * migration connection). */
static int
restore_from_fd(struct xen_host *h, const struct xenops_vm_spec *spec,
                int fd, const char *what, uint32_t *ret_domid,
                char **ret_err)
{
    libxl_domain_config cfg;
    libxl_domain_restore_params params;
    uint32_t domid = INVALID_DOMID;
    int rc, xlrc;

    libxl_domain_config_init(&cfg);
    libxl_domain_restore_params_init(&params);
    rc = host_config(h, spec, true, &cfg, ret_err);
    if (rc) {
        goto out;
    }
    rc = check_free_memory(h, &cfg, ret_err);
    if (rc) {
        goto out;
    }
    /* libxl_domain_suspend() writes migration stream v2; the default
     * (1) is the legacy format. */
    params.stream_version = 2;
    params.checkpointed_stream = LIBXL_CHECKPOINTED_STREAM_NONE;
    xen_call_begin();
    xlrc = libxl_domain_create_restore(h->ctx, &cfg, &domid, fd, -1, &params,
                                       NULL, NULL);
    if (xlrc) {
        rc = xl_fail(xlrc, ret_err, "cannot restore VM %s from %s",
                     spec->uuid, what);
        destroy_half_built(h, domid);
        goto out;
    }
    remember_domain(h, domid, spec, &cfg);
    *ret_domid = domid;
    rc = 0;
out:
    libxl_domain_restore_params_dispose(&params);
    libxl_domain_config_dispose(&cfg);
    return rc;
}

/* Finds the domain of a VM after the toolstack restarted: the newest
 * live domain whose handle is the VM's uuid (two exist only while a
 * migration on this host is under way). */
static int
xen_domain_lookup(struct xenops_host *host, const char *uuid,
                  uint32_t *ret_domid, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    libxl_dominfo *list;
    libxl_uuid want;
    uint32_t found = 0;
    bool have = false;
    int n = 0;

    if (libxl_uuid_from_string(&want, uuid)) {
        *ret_err = xasprintf("'%s' is not a UUID", uuid);
        return -EINVAL;
    }
    xen_call_begin();
    list = libxl_list_domain(h->ctx, &n);
    if (!list) {
        *ret_err = xasprintf("cannot list domains: %s",
                             last_xen_error[0] ? last_xen_error : "libxl");
        return -EIO;
    }
    for (int i = 0; i < n; i++) {
        if (list[i].domid && !list[i].dying
            && !libxl_uuid_compare(&list[i].uuid, &want)
            && (!have || list[i].domid > found)) {
            found = list[i].domid;
            have = true;
        }
    }
    libxl_dominfo_list_free(list, n);
    if (!have) {
        *ret_err = xasprintf("VM %s has no domain", uuid);
        return -ENOENT;
    }
    pthread_mutex_lock(&h->mutex);
    dom_get(h, found, uuid);
    pthread_mutex_unlock(&h->mutex);
    *ret_domid = found;
    return 0;
}

/* ---- Running domains ---- */

static int
xen_domain_unpause(struct xenops_host *host, uint32_t domid, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    int xlrc;

    xen_call_begin();
    xlrc = libxl_domain_unpause(h->ctx, domid, NULL);
    return xlrc ? xl_fail(xlrc, ret_err, "cannot unpause domain %u", domid)
                : 0;
}

static int
xen_domain_pause(struct xenops_host *host, uint32_t domid, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    int xlrc;

    xen_call_begin();
    xlrc = libxl_domain_pause(h->ctx, domid, NULL);
    return xlrc ? xl_fail(xlrc, ret_err, "cannot pause domain %u", domid)
                : 0;
}

static int
domain_type(struct xen_host *h, uint32_t domid,
            enum xenops_domain_type *ret_type, char **ret_err)
{
    libxl_dominfo di;
    int xlrc;

    libxl_dominfo_init(&di);
    xen_call_begin();
    xlrc = libxl_domain_info(h->ctx, &di, domid);
    if (!xlrc) {
        *ret_type = di.domain_type == LIBXL_DOMAIN_TYPE_HVM ? XENOPS_HVM
                    : di.domain_type == LIBXL_DOMAIN_TYPE_PVH ? XENOPS_PVH
                    : XENOPS_PV;
    }
    libxl_dominfo_dispose(&di);
    return xlrc ? xl_fail(xlrc, ret_err, "no domain %u", domid) : 0;
}

static int
xen_domain_shutdown(struct xenops_host *host, uint32_t domid,
                    enum xenops_shutdown_kind kind, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    struct xs_guest g = { h->xsh, domid };
    struct xen_config_xs_reader xs = xs_reader(&g);
    enum xenops_domain_type type;
    const char *word = xen_config_shutdown_word(kind);
    char *path = NULL;
    int rc;

    rc = domain_type(h, domid, &type, ret_err);
    if (rc) {
        goto out;
    }
    /* A PV or PVH kernel always watches control/shutdown; an HVM guest
     * does only once its PV drivers say so.  Suspend needs the guest's
     * explicit support everywhere. */
    if ((type == XENOPS_HVM || kind == XENOPS_SHUTDOWN_SUSPEND)
        && !xen_config_guest_supports(&xs, kind)) {
        *ret_err = xasprintf("domain %u has not announced support for %s "
                             "requests (control/feature-%s)", domid, word,
                             kind == XENOPS_SHUTDOWN_HALT ? "poweroff"
                                                          : word);
        rc = -EOPNOTSUPP;
        goto out;
    }
    /* This is the request libxl_domain_shutdown() and _reboot() write,
     * but they then wait up to a minute for the guest to acknowledge it;
     * the interface returns at once and reports the outcome as an
     * update. */
    path = xasprintf("/local/domain/%u/control/shutdown", domid);
    for (;;) {
        xs_transaction_t t = xs_transaction_start(h->xsh);
        char *home = xasprintf("/local/domain/%u", domid);
        unsigned int len;
        char *exists;

        if (!t) {
            free(home);
            *ret_err = xasprintf("xenstore transaction: %s",
                                 strerror(errno));
            rc = -EIO;
            goto out;
        }
        /* Inside the transaction, so a request cannot outlive its
         * domain as a stray node. */
        exists = xs_read(h->xsh, t, home, &len);
        free(home);
        if (!exists) {
            xs_transaction_end(h->xsh, t, true);
            *ret_err = xasprintf("no domain %u", domid);
            rc = -ENOENT;
            goto out;
        }
        free(exists);
        if (!xs_write(h->xsh, t, path, word, strlen(word))) {
            int err = errno;

            xs_transaction_end(h->xsh, t, true);
            *ret_err = xasprintf("cannot write %s: %s", path, strerror(err));
            rc = -EIO;
            goto out;
        }
        if (xs_transaction_end(h->xsh, t, false)) {
            break;
        }
        if (errno != EAGAIN) {
            *ret_err = xasprintf("cannot write %s: %s", path,
                                 strerror(errno));
            rc = -EIO;
            goto out;
        }
    }
    rc = 0;
out:
    free(path);
    return rc;
}

static int
xen_domain_destroy(struct xenops_host *host, uint32_t domid, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    struct xen_dom *d;
    int xlrc;

    xen_call_begin();
    xlrc = libxl_domain_destroy(h->ctx, domid, NULL);
    if (xlrc) {
        return xl_fail(xlrc, ret_err, "cannot destroy domain %u", domid);
    }
    pthread_mutex_lock(&h->mutex);
    d = dom_find(h, domid);
    if (d) {
        dom_clear_vbds(d);
    }
    pthread_mutex_unlock(&h->mutex);
    return 0;
}

static int
xen_domain_info(struct xenops_host *host, uint32_t domid,
                struct xenops_domain_info *ret_info, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    struct xs_guest g = { h->xsh, domid };
    struct xen_config_xs_reader xs = xs_reader(&g);
    struct xenops_domain_info info;
    xc_domaininfo_t di;
    uint64_t target_kib = 0;
    struct xen_dom *d;

    memset(&info, 0, sizeof info);
    if (get_domaininfo(h->xch, domid, &di)) {
        *ret_err = xasprintf("no domain %u", domid);
        return -ENOENT;
    }
    info.domid = domid;
    xen_config_power_from_flags(di.flags, &info.power, &info.reason);
    info.memory_actual = (int64_t) di.tot_pages * XC_PAGE_SIZE;
    xen_call_begin();
    if (!libxl_get_memory_target(h->ctx, domid, &target_kib)) {
        info.memory_target = (int64_t) target_kib * 1024;
    }
    info.vcpus_online = di.nr_online_vcpus;
    info.cpu_time_ns = di.cpu_time;
    info.start_time = libxl_vm_get_start_time(h->ctx, domid);

    pthread_mutex_lock(&h->mutex);
    d = dom_find(h, domid);
    if (d) {
        for (int v = 0; v < d->n_vcpus && v < MAX_SAMPLED_VCPUS; v++) {
            info.vcpu_utilisation[v] = d->vcpu_util[v];
        }
    }
    pthread_mutex_unlock(&h->mutex);

    xen_config_guest_info(&xs, &info.guest);
    *ret_info = info;
    return 0;
}

/* ---- Suspend, resume, migration ---- */

static int
xen_domain_save(struct xenops_host *host, uint32_t domid, const char *path,
                char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    xc_domaininfo_t di;
    enum xenops_power power;
    enum xenops_shutdown_reason reason;
    int fd = -1, rc, xlrc;

    if (get_domaininfo(h->xch, domid, &di)) {
        *ret_err = xasprintf("no domain %u", domid);
        return -ENOENT;
    }
    xen_config_power_from_flags(di.flags, &power, &reason);
    if (power == XENOPS_SHUTDOWN && reason != XENOPS_REASON_SUSPEND) {
        *ret_err = xasprintf("domain %u has shut down and cannot be saved",
                             domid);
        return -EINVAL;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        *ret_err = xasprintf("cannot create %s: %s", path, strerror(-rc));
        goto out;
    }
    /* libxl saves only a domain it suspends itself: it asks the guest and
     * waits for the answer.  A guest that already suspended on request
     * (shutdown SUSPEND) is resumed cooperatively first (the suspend
     * hypercall returns "cancelled" and the guest carries on), then
     * suspended again by libxl, a matter of milliseconds. */
    if (power == XENOPS_SHUTDOWN) {
        xen_call_begin();
        xlrc = libxl_domain_resume(h->ctx, domid, 1, NULL);
        if (xlrc) {
            rc = xl_fail(xlrc, ret_err, "cannot resume suspended domain %u "
                         "to save it", domid);
            goto out;
        }
    }
    xen_call_begin();
    xlrc = libxl_domain_suspend(h->ctx, domid, fd, 0, NULL);
    if (xlrc) {
        rc = xl_fail(xlrc, ret_err, "cannot save domain %u to %s", domid,
                     path);
        goto out;
    }
    if (fsync(fd)) {
        rc = -errno;
        *ret_err = xasprintf("cannot write %s: %s", path, strerror(-rc));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
        if (rc) {
            unlink(path);
        }
    }
    return rc;
}

static int
xen_domain_restore(struct xenops_host *host,
                   const struct xenops_vm_spec *spec, const char *path,
                   uint32_t *ret_domid, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc;

    if (fd < 0) {
        rc = -errno;
        *ret_err = xasprintf("cannot open %s: %s", path, strerror(-rc));
        return rc;
    }
    rc = restore_from_fd(h, spec, fd, path, ret_domid, ret_err);
    close(fd);
    return rc;
}

static int
xen_migrate_send(struct xenops_host *host, uint32_t domid, int fd,
                 char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    int xlrc;

    /* Live: memory is copied while the guest runs, then the guest is
     * suspended for the last round. */
    xen_call_begin();
    xlrc = libxl_domain_suspend(h->ctx, domid, fd, LIBXL_SUSPEND_LIVE, NULL);
    if (xlrc) {
        int rc = xl_fail(xlrc, ret_err, "cannot migrate domain %u", domid);

        /* As xl does: if the guest got suspended, let it run on here. */
        xen_call_begin();
        if (libxl_domain_resume(h->ctx, domid, 1, NULL)) {
            LOG_DBG("xen: domain %u stays suspended after a failed "
                    "migration: %s", domid, last_xen_error);
        }
        return rc;
    }
    xen_call_begin();
    xlrc = libxl_domain_destroy(h->ctx, domid, NULL);
    if (xlrc) {
        return xl_fail(xlrc, ret_err, "domain %u migrated but cannot be "
                       "destroyed", domid);
    }
    return 0;
}

static int
xen_migrate_receive(struct xenops_host *host,
                    const struct xenops_vm_spec *spec, int fd,
                    uint32_t *ret_domid, char **ret_err)
{
    return restore_from_fd(xen_host_cast(host), spec, fd,
                           "the migration stream", ret_domid, ret_err);
}

/* ---- Resources ---- */

static int
xen_set_memory_target(struct xenops_host *host, uint32_t domid,
                      int64_t bytes, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    int xlrc;

    if (bytes <= 0) {
        *ret_err = xasprintf("memory target %lld is not positive",
                             (long long) bytes);
        return -EINVAL;
    }
    /* enforce=1 also lowers the domain's maximum, so that a guest cannot
     * balloon back above its target, as squeezed arranges for xenopsd. */
    xen_call_begin();
    xlrc = libxl_set_memory_target(h->ctx, domid, (bytes + 1023) / 1024, 0,
                                   1);
    return xlrc ? xl_fail(xlrc, ret_err, "cannot set the memory target of "
                          "domain %u", domid) : 0;
}

static int
xen_set_vcpus(struct xenops_host *host, uint32_t domid, int n,
              char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    libxl_dominfo di;
    libxl_bitmap map;
    int max, rc, xlrc;

    libxl_dominfo_init(&di);
    libxl_bitmap_init(&map);
    xen_call_begin();
    xlrc = libxl_domain_info(h->ctx, &di, domid);
    if (xlrc) {
        rc = xl_fail(xlrc, ret_err, "no domain %u", domid);
        goto out;
    }
    max = (int) di.vcpu_max_id + 1;
    if (n < 1 || n > max) {
        *ret_err = xasprintf("domain %u can have 1 to %d vCPUs, not %d",
                             domid, max, n);
        rc = -EINVAL;
        goto out;
    }
    xen_call_begin();
    xlrc = libxl_bitmap_alloc(h->ctx, &map, max);
    if (!xlrc) {
        for (int i = 0; i < n; i++) {
            libxl_bitmap_set(&map, i);
        }
        xlrc = libxl_set_vcpuonline(h->ctx, domid, &map, NULL);
    }
    rc = xlrc ? xl_fail(xlrc, ret_err, "cannot set domain %u to %d vCPUs",
                        domid, n) : 0;
out:
    libxl_bitmap_dispose(&map);
    libxl_dominfo_dispose(&di);
    return rc;
}

/* ---- Devices ---- */

/* A PCI device address, "dddd:bb:dd.f" or "bb:dd.f". */
static int
parse_bdf(const char *s, libxl_device_pci *pci)
{
    unsigned int dom = 0, bus, dev, func;
    int n = 0;

    if (sscanf(s, "%x:%x:%x.%x%n", &dom, &bus, &dev, &func, &n) != 4
        || s[n]) {
        dom = 0;
        n = 0;
        if (sscanf(s, "%x:%x.%x%n", &bus, &dev, &func, &n) != 3 || s[n]) {
            return -EINVAL;
        }
    }
    if (dom > 0xffff || bus > 0xff || dev > 0x1f || func > 7) {
        return -EINVAL;
    }
    pci->domain = dom;
    pci->bus = bus;
    pci->dev = dev;
    pci->func = func;
    return 0;
}

static int
plug_vbd(struct xen_host *h, uint32_t domid,
         const struct xenops_vbd_spec *vbd, char **ret_err)
{
    libxl_device_disk disk, existing;
    enum xenops_domain_type type;
    struct xen_dom *d;
    bool present;
    int rc, xlrc;

    libxl_device_disk_init(&disk);
    libxl_device_disk_init(&existing);
    rc = domain_type(h, domid, &type, ret_err);
    if (rc) {
        goto out;
    }
    rc = xen_config_disk_from_vbd(vbd, type, &disk, ret_err);
    if (rc) {
        goto out;
    }
    if (h->nbd_script && disk.script
        && !strcmp(disk.script, XEN_CONFIG_NBD_SCRIPT)) {
        free(disk.script);
        disk.script = xstrdup(h->nbd_script);
    }
    xen_call_begin();
    present = !libxl_vdev_to_device_disk(h->ctx, domid, disk.vdev,
                                         &existing);
    xen_call_begin();
    if (present && existing.is_cdrom && disk.is_cdrom) {
        /* A CD drive stays; what changes is the disc in it. */
        xlrc = libxl_cdrom_insert(h->ctx, domid, &disk, NULL);
    } else {
        xlrc = libxl_device_disk_add(h->ctx, domid, &disk, NULL);
    }
    if (xlrc) {
        rc = xl_fail(xlrc, ret_err, "cannot plug %s into domain %u",
                     disk.vdev, domid);
        goto out;
    }
    pthread_mutex_lock(&h->mutex);
    d = dom_get(h, domid, NULL);
    dom_set_vbd(d, vbd->position, disk.vdev);
    pthread_mutex_unlock(&h->mutex);
    rc = 0;
out:
    libxl_device_disk_dispose(&existing);
    libxl_device_disk_dispose(&disk);
    return rc;
}

static int
plug_vif(struct xen_host *h, uint32_t domid,
         const struct xenops_vif_spec *vif, char **ret_err)
{
    libxl_device_nic nic;
    int rc, xlrc;

    libxl_device_nic_init(&nic);
    rc = xen_config_nic_from_vif(vif, &nic, ret_err);
    if (rc) {
        goto out;
    }
    if (h->vif_script) {
        nic.script = xstrdup(h->vif_script);
    }
    xen_call_begin();
    xlrc = libxl_device_nic_add(h->ctx, domid, &nic, NULL);
    rc = xlrc ? xl_fail(xlrc, ret_err, "cannot plug VIF %d into domain %u",
                        vif->position, domid) : 0;
out:
    libxl_device_nic_dispose(&nic);
    return rc;
}

static int
plug_pci(struct xen_host *h, uint32_t domid, const char *bdf,
         char **ret_err)
{
    libxl_device_pci pci;
    int rc, xlrc;

    libxl_device_pci_init(&pci);
    if (!bdf || parse_bdf(bdf, &pci)) {
        *ret_err = xasprintf("'%s' is not a PCI address (dddd:bb:dd.f)",
                             bdf ? bdf : "");
        rc = -EINVAL;
        goto out;
    }
    xen_call_begin();
    xlrc = libxl_device_pci_add(h->ctx, domid, &pci, NULL);
    rc = xlrc ? xl_fail(xlrc, ret_err, "cannot pass %s through to domain %u",
                        bdf, domid) : 0;
out:
    libxl_device_pci_dispose(&pci);
    return rc;
}

/* The spec is a struct xenops_vbd_spec, a struct xenops_vif_spec, or for
 * PCI the device's address as a string ("0000:03:00.0"). */
static int
xen_device_plug(struct xenops_host *host, uint32_t domid,
                enum xenops_device kind, const void *spec, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);

    switch (kind) {
    case XENOPS_DEV_VBD:
        return plug_vbd(h, domid, spec, ret_err);
    case XENOPS_DEV_VIF:
        return plug_vif(h, domid, spec, ret_err);
    case XENOPS_DEV_PCI:
        return plug_pci(h, domid, spec, ret_err);
    }
    *ret_err = xasprintf("unknown device kind %d", (int) kind);
    return -EINVAL;
}

/* The vdev of the VBD at position: the one it was plugged as, or after a
 * restart of this process, the attached disk whose name encodes that
 * position (the naming xen_config_vbd_vdev() gives unnamed VBDs). */
static char *
vbd_vdev(struct xen_host *h, uint32_t domid, int position)
{
    libxl_device_disk *disks;
    struct xen_dom *d;
    char *vdev = NULL;
    int n = 0;

    pthread_mutex_lock(&h->mutex);
    d = dom_find(h, domid);
    for (size_t i = 0; d && i < d->n_vbds; i++) {
        if (d->vbds[i].position == position) {
            vdev = xstrdup(d->vbds[i].vdev);
        }
    }
    pthread_mutex_unlock(&h->mutex);
    if (vdev) {
        return vdev;
    }
    disks = libxl_device_disk_list(h->ctx, domid, &n);
    for (int i = 0; i < n && !vdev; i++) {
        if (xen_config_vdev_index(disks[i].vdev) == position) {
            vdev = xstrdup(disks[i].vdev);
        }
    }
    if (disks) {
        libxl_device_disk_list_free(disks, n);
    }
    return vdev;
}

static int
unplug_vbd(struct xen_host *h, uint32_t domid, int position, bool force,
           char **ret_err)
{
    libxl_device_disk disk;
    struct xen_dom *d;
    char *vdev = vbd_vdev(h, domid, position);
    int rc, xlrc;

    libxl_device_disk_init(&disk);
    xen_call_begin();
    if (!vdev || libxl_vdev_to_device_disk(h->ctx, domid, vdev, &disk)) {
        *ret_err = xasprintf("domain %u has no VBD at position %d", domid,
                             position);
        rc = -ENODEV;
        goto out;
    }
    /* Without force the guest is asked to let go and may refuse; force
     * tears the backend down regardless. */
    xen_call_begin();
    xlrc = force ? libxl_device_disk_destroy(h->ctx, domid, &disk, NULL)
                 : libxl_device_disk_remove(h->ctx, domid, &disk, NULL);
    if (xlrc) {
        rc = xl_fail(xlrc, ret_err, "cannot unplug %s from domain %u", vdev,
                     domid);
        goto out;
    }
    pthread_mutex_lock(&h->mutex);
    d = dom_find(h, domid);
    for (size_t i = 0; d && i < d->n_vbds; i++) {
        if (d->vbds[i].position == position) {
            free(d->vbds[i].vdev);
            d->vbds[i] = d->vbds[--d->n_vbds];
            break;
        }
    }
    pthread_mutex_unlock(&h->mutex);
    rc = 0;
out:
    libxl_device_disk_dispose(&disk);
    free(vdev);
    return rc;
}

static int
unplug_vif(struct xen_host *h, uint32_t domid, int position, bool force,
           char **ret_err)
{
    libxl_device_nic nic;
    int rc, xlrc;

    libxl_device_nic_init(&nic);
    xen_call_begin();
    if (libxl_devid_to_device_nic(h->ctx, domid, position, &nic)) {
        *ret_err = xasprintf("domain %u has no VIF %d", domid, position);
        rc = -ENODEV;
        goto out;
    }
    xen_call_begin();
    xlrc = force ? libxl_device_nic_destroy(h->ctx, domid, &nic, NULL)
                 : libxl_device_nic_remove(h->ctx, domid, &nic, NULL);
    rc = xlrc ? xl_fail(xlrc, ret_err, "cannot unplug VIF %d from domain %u",
                        position, domid) : 0;
out:
    libxl_device_nic_dispose(&nic);
    return rc;
}

/* PCI devices are numbered in the order libxl lists them (the order they
 * were plugged). */
static int
unplug_pci(struct xen_host *h, uint32_t domid, int position, bool force,
           char **ret_err)
{
    libxl_device_pci *list;
    int n = 0, rc, xlrc;

    xen_call_begin();
    list = libxl_device_pci_list(h->ctx, domid, &n);
    if (position < 0 || position >= n) {
        *ret_err = xasprintf("domain %u has no PCI device %d", domid,
                             position);
        rc = -ENODEV;
        goto out;
    }
    xen_call_begin();
    xlrc = force ? libxl_device_pci_destroy(h->ctx, domid, &list[position],
                                            NULL)
                 : libxl_device_pci_remove(h->ctx, domid, &list[position],
                                           NULL);
    rc = xlrc ? xl_fail(xlrc, ret_err, "cannot unplug PCI device %d from "
                        "domain %u", position, domid) : 0;
out:
    if (list) {
        libxl_device_pci_list_free(list, n);
    }
    return rc;
}

static int
xen_device_unplug(struct xenops_host *host, uint32_t domid,
                  enum xenops_device kind, int position, bool force,
                  char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);

    switch (kind) {
    case XENOPS_DEV_VBD:
        return unplug_vbd(h, domid, position, force, ret_err);
    case XENOPS_DEV_VIF:
        return unplug_vif(h, domid, position, force, ret_err);
    case XENOPS_DEV_PCI:
        return unplug_pci(h, domid, position, force, ret_err);
    }
    *ret_err = xasprintf("unknown device kind %d", (int) kind);
    return -EINVAL;
}

/* ---- Debugging aids ---- */

static int
xen_send_sysrq(struct xenops_host *host, uint32_t domid, char key,
               char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    int xlrc;

    xen_call_begin();
    xlrc = libxl_send_sysrq(h->ctx, domid, key);
    return xlrc ? xl_fail(xlrc, ret_err, "cannot send sysrq '%c' to domain "
                          "%u", key, domid) : 0;
}

static int
xen_send_trigger(struct xenops_host *host, uint32_t domid,
                 const char *trigger, char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    libxl_trigger t;
    int xlrc;

    /* power, sleep, nmi, init, reset, s3resume */
    if (!trigger || libxl_trigger_from_string(trigger, &t)) {
        *ret_err = xasprintf("unknown trigger '%s'", trigger ? trigger : "");
        return -EINVAL;
    }
    xen_call_begin();
    xlrc = libxl_send_trigger(h->ctx, domid, t, 0, NULL);
    return xlrc ? xl_fail(xlrc, ret_err, "cannot send trigger %s to domain "
                          "%u", trigger, domid) : 0;
}

/* The domain's primary console is a pty that xenconsoled serves: its path
 * is in xenstore (console/tty of a PV or PVH guest, serial/0/tty of an HVM
 * guest's emulated serial port), which libxl reads for us.  Every opener
 * of the pty shares the one console: keys from all of them reach the
 * guest, and each output byte goes to whichever reads it first (xl
 * console has the same limit). */
static int
xen_console_open(struct xenops_host *host, uint32_t domid, int *ret_fd,
                 char **ret_err)
{
    struct xen_host *h = xen_host_cast(host);
    struct termios tio;
    char *path = NULL;
    int fd = -1, xlrc, rc;

    xen_call_begin();
    xlrc = libxl_primary_console_get_tty(h->ctx, domid, &path);
    if (xlrc) {
        rc = xl_fail(xlrc, ret_err, "no console for domain %u", domid);
        goto out;
    }
    fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        *ret_err = xasprintf("console of domain %u: %s: %s", domid, path,
                             strerror(errno));
        goto out;
    }
    /* Bytes as they are: no echo, no line editing, no CR/LF mapping. */
    if (tcgetattr(fd, &tio) == 0) {
        cfmakeraw(&tio);
        tcsetattr(fd, TCSANOW, &tio);
    }
    *ret_fd = fd;
    fd = -1;
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    free(path);
    return rc;
}

const struct xenops_provider xenops_xen_provider = {
    .name = "xen",
    .open = xen_open,
    .close = xen_close,
    .host_info = xen_host_info,
    .set_update_callback = xen_set_update_callback,
    .domain_create = xen_domain_create,
    .domain_unpause = xen_domain_unpause,
    .domain_pause = xen_domain_pause,
    .domain_shutdown = xen_domain_shutdown,
    .domain_destroy = xen_domain_destroy,
    .domain_info = xen_domain_info,
    .domain_save = xen_domain_save,
    .domain_restore = xen_domain_restore,
    .migrate_send = xen_migrate_send,
    .migrate_receive = xen_migrate_receive,
    .set_memory_target = xen_set_memory_target,
    .set_vcpus = xen_set_vcpus,
    .device_plug = xen_device_plug,
    .device_unplug = xen_device_unplug,
    .send_sysrq = xen_send_sysrq,
    .send_trigger = xen_send_trigger,
    .domain_lookup = xen_domain_lookup,
    .console_open = xen_console_open,
};
