/* host.c — the host messages with behaviour: enable and disable,
 * evacuate and its checks, reboot and shutdown, the memory computations,
 * the clocks, dmesg and set_hostname_live; and host_tick(), which keeps
 * the host's run-time fields (host_metrics.memory_free/total,
 * host.memory_overhead, allowed_operations) in line with what the xenops
 * provider reports.
 *
 * The host's power state.  On a real hypervisor (any provider but "sim")
 * host.reboot and host.shutdown do what they say: the host is marked (its
 * current_operations name the operation, it cannot be re-enabled:
 * HOST_DISABLED_UNTIL_REBOOT) and two seconds later, so that the call is
 * answered first, /sbin/shutdown -r|-h now is run, as xapi does.  The
 * simulator never touches the machine it runs on; it simulates the power
 * cycle of its own host instead: the host goes down at once
 * (host_metrics.live false, no allowed operations); a reboot comes back
 * after SIM_BOOT_MS (live, enabled, operation cleared, as a host that has
 * booted); a shutdown stays down until the daemon is restarted, which is
 * the simulated power-on (the simulator's domains die with the daemon
 * anyway).  The daemon keeps answering meanwhile, so clients can watch.
 * Either way, a start that finds reboot or shutdown still in the host's
 * current_operations is the boot that followed: the operation is cleared
 * and the host enabled (on a real host, a toolstack restart in the two
 * seconds before shutdown(8) runs is mistaken for that boot, and the
 * reboot does not happen).
 *
 * A pool here has one host, so host.evacuate can move nothing: each
 * resident guest is reported as XenAPI reports it when no other enabled
 * host exists (NO_HOSTS_AVAILABLE [vm]), and an evacuation with no guests
 * succeeds.  xapi/lifecycle.c owns the VMs; this file only reads them. */
#include <config.h>
#include "api.h"

#include <ctype.h>
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "xenops/xenops.h"

extern char **environ;

/* The two entry points other modules use; they belong in api.h and are
 * declared here until they are there.
 *
 * host_tick() is for the daemon's main loop, every second (see the file
 * comment); the handlers below call it too, so that what they read is
 * current. */
void host_tick(struct xapi *x);
/* For VM.start, start_on, resume and resume_on (xapi/lifecycle.c), once
 * the VM's own checks have passed: can the host take a new domain?  With
 * host_ref NULL (the call names no host, XenAPI picks an enabled live
 * one) the answer is NO_HOSTS_AVAILABLE when this host cannot; with a
 * host named, HANDLE_INVALID, HOST_NOT_LIVE or HOST_DISABLED [host], in
 * XenAPI's order.  Returns 0, or -1 after api_fail().  Takes only the
 * database's read lock. */
int host_assert_can_boot(struct api_ctx *ctx, const char *host_ref);

/* How long a simulated reboot takes. */
#define SIM_BOOT_MS 1500
/* How long a real host waits before it runs shutdown(8): long enough for
 * the answer to reach the client. */
#define POWER_DELAY_MS 2000

enum host_power {
    HOST_UP,
    HOST_POWER_PENDING,     /* real host: shutdown(8) runs at the deadline */
    HOST_GOING_DOWN,        /* real host: shutdown(8) was run */
    HOST_REBOOTING,         /* simulator: back up at the deadline */
    HOST_OFF,               /* simulator: down until the daemon restarts */
};

/* The host's run-time state.  Lock order: hs.mu before the database's
 * write lock; nothing here is called with a database lock held. */
static struct {
    pthread_mutex_t mu;
    bool started;               /* start-of-day work done */
    bool disabled_until_reboot; /* reboot or shutdown was asked for */
    enum host_power power;
    char op[16];                /* "reboot", "shutdown" or "" */
    char op_id[48];             /* its key in current_operations */
    int64_t deadline;           /* time_mono_ms() of the next step */
    pid_t child;                /* shutdown(8), until reaped */
    bool overhead_known;
} hs = { .mu = PTHREAD_MUTEX_INITIALIZER };

static bool
is_simulator(const struct xapi *x)
{
    return !strcmp(x->xenops->provider->name, "sim");
}

static bool
is_null_ref(const char *ref)
{
    return !*ref || !strcmp(ref, "OpaqueRef:NULL");
}

/* Fails with HANDLE_INVALID unless ref names a host. */
static int
check_host(struct api_ctx *ctx, const char *ref)
{
    struct db_row *row;

    db_read_lock(ctx->x->db);
    row = db_lookup(ctx->x->db, CLS_host, ref);
    db_read_unlock(ctx->x->db);
    return row ? 0 : api_fail_handle(ctx, CLS_host, ref);
}

/* ---- allowed operations ---- */

/* What a client may do with the host now, in the enum's order.  A host
 * that is going down or is down allows nothing; reboot and shutdown need
 * a disabled host (HOST_NOT_DISABLED otherwise, as in XenAPI).  power_on
 * needs a remote power-on method and apply_updates an update repository,
 * neither of which exists here.  hs.mu held. */
static struct value *
host_allowed_ops(bool enabled)
{
    const struct api_enum *e = &api_enums[ENUM_host_allowed_operations];
    struct value *arr = value_array(e->n_values);

    if (hs.power != HOST_UP) {
        return arr;
    }
    for (size_t i = 0; i < e->n_values; i++) {
        const char *op = e->values[i];
        if (!strcmp(op, "power_on") || !strcmp(op, "apply_updates")
            || (enabled && (!strcmp(op, "reboot")
                            || !strcmp(op, "shutdown")))) {
            continue;
        }
        value_array_append(arr, value_string(op));
    }
    return arr;
}

/* Brings allowed_operations of this host in line inside txn. hs.mu held. */
static void
refresh_allowed(struct db_txn *txn, struct xapi *x)
{
    struct db_row *host = db_lookup(x->db, CLS_host, x->host_ref);
    struct value *ops;

    if (!host) {
        return;
    }
    ops = host_allowed_ops(host->fields[F_host_enabled]->u.b);
    if (value_equal(ops, host->fields[F_host_allowed_operations])) {
        value_unref(ops);
        return;
    }
    db_update(txn, CLS_host, x->host_ref, F_host_allowed_operations, ops);
}

/* Copies the host's metrics ref; database lock or transaction held. */
static bool
metrics_ref_of(struct xapi *x, char *buf, size_t size)
{
    struct db_row *host = db_lookup(x->db, CLS_host, x->host_ref);
    const char *m;

    if (!host) {
        return false;
    }
    m = host->fields[F_host_metrics]->u.str.s;
    if (!db_lookup(x->db, CLS_host_metrics, m)) {
        return false;
    }
    snprintf(buf, size, "%s", m);
    return true;
}

static void
set_live(struct db_txn *txn, struct xapi *x, bool live)
{
    char mref[48];

    if (metrics_ref_of(x, mref, sizeof mref)) {
        db_update(txn, CLS_host_metrics, mref, F_host_metrics_live,
                  value_bool(live));
        db_update(txn, CLS_host_metrics, mref, F_host_metrics_last_updated,
                  value_datetime_secs(time_wall_ms() / 1000));
    }
}

/* ---- keeping the run-time fields current ---- */

/* True if a guest has (or may be about to have) a domain: running,
 * paused, or with an operation under way.  Database lock held. */
static bool
guests_present(struct db *db)
{
    for (size_t i = 0; i < db_table_count(db, CLS_VM); i++) {
        struct db_row *vm = db_table_row(db, CLS_VM, i);
        const char *power = vm->fields[F_VM_power_state]->u.str.s;
        if (vm->fields[F_VM_is_control_domain]->u.b
            || vm->fields[F_VM_is_a_template]->u.b) {
            continue;
        }
        if (!strcmp(power, "Running") || !strcmp(power, "Paused")
            || vm->fields[F_VM_current_operations]->u.st.n) {
            return true;
        }
    }
    return false;
}

/* Copies what the provider reports into host_metrics and the host's
 * memory_overhead, writing only what changed (a write costs a commit).
 * The overhead is what the host uses besides the control domain and the
 * guests: total - dom0 - free, measured once while no guest has a domain
 * (xapi measures it once at boot); the simulator has none.  hs.mu held. */
static void
refresh_metrics(struct xapi *x)
{
    struct xenops_host_info info;
    struct db_txn *txn;
    struct db_row *host, *m;
    char mref[48], *err = NULL;
    uint64_t gen = 0;
    bool measure = false, memory_changed, overhead_changed;
    int64_t overhead = 0;

    if (!hs.overhead_known) {
        gen = db_generation(x->db);
        db_read_lock(x->db);
        measure = !guests_present(x->db);
        db_read_unlock(x->db);
    }
    memset(&info, 0, sizeof info);
    if (xenops_host_info(x->xenops, &info, &err)) {
        LOG_WARN("cannot read the host's memory: %s", err ? err : "?");
        free(err);
        return;
    }
    /* A commit in between may have started a guest: measure next time. */
    measure = measure && db_generation(x->db) == gen;
    if (measure) {
        overhead = MAX(0, info.memory_total - info.dom0_memory
                       - info.memory_free);
    }
    /* Compare under the read lock: most ticks change nothing, and readers
     * calling us must not queue for the write lock. */
    db_read_lock(x->db);
    host = db_lookup(x->db, CLS_host, x->host_ref);
    if (!host || !metrics_ref_of(x, mref, sizeof mref)) {
        db_read_unlock(x->db);
        return;
    }
    m = db_lookup(x->db, CLS_host_metrics, mref);
    overhead_changed = measure
                       && host->fields[F_host_memory_overhead]->u.i != overhead;
    memory_changed = m->fields[F_host_metrics_memory_free]->u.i != info.memory_free
        || m->fields[F_host_metrics_memory_total]->u.i != info.memory_total;
    db_read_unlock(x->db);
    if (overhead_changed || memory_changed) {
        txn = db_begin(x->db);
        if (overhead_changed) {
            db_update(txn, CLS_host, x->host_ref, F_host_memory_overhead,
                      value_int(overhead));
        }
        if (memory_changed && db_lookup(x->db, CLS_host_metrics, mref)) {
            db_update(txn, CLS_host_metrics, mref, F_host_metrics_memory_free,
                      value_int(info.memory_free));
            db_update(txn, CLS_host_metrics, mref, F_host_metrics_memory_total,
                      value_int(info.memory_total));
            db_update(txn, CLS_host_metrics, mref, F_host_metrics_last_updated,
                      value_datetime_secs(time_wall_ms() / 1000));
        }
        if (db_commit(txn)) {
            LOG_WARN("cannot record the host's memory");
            return;
        }
    }
    hs.overhead_known |= measure;
}

/* The first tick after a start: a host whose current_operations still
 * name reboot or shutdown has just booted after that request, so it is
 * enabled again, as xapi does; any other stale operation is cleared too.
 * hs.mu held. */
static void
start_of_day(struct xapi *x)
{
    struct db_txn *txn = db_begin(x->db);
    struct db_row *host = db_lookup(x->db, CLS_host, x->host_ref);
    const struct value *ops;
    bool booted = false;

    hs.started = true;
    if (!host) {
        db_abort(txn);
        return;
    }
    ops = host->fields[F_host_current_operations];
    for (size_t i = 0; i < ops->u.st.n; i++) {
        const struct value *v = ops->u.st.m[i].v;
        booted |= v->type == VALUE_STRING && (!strcmp(v->u.str.s, "reboot")
                                              || !strcmp(v->u.str.s, "shutdown"));
    }
    if (ops->u.st.n) {
        db_update(txn, CLS_host, x->host_ref, F_host_current_operations,
                  value_empty_struct());
    }
    if (booted && !host->fields[F_host_enabled]->u.b) {
        LOG_INFO("host booted after a reboot or shutdown request: enabled");
        db_update(txn, CLS_host, x->host_ref, F_host_enabled, value_true());
    }
    refresh_allowed(txn, x);
    if (db_commit(txn)) {
        LOG_WARN("cannot record the host's state at start");
    }
}

/* Ends a reboot or shutdown that did not happen (shutdown(8) failed):
 * the host may be enabled again.  hs.mu held. */
static void
power_request_failed(struct xapi *x)
{
    struct db_txn *txn;

    hs.power = HOST_UP;
    hs.disabled_until_reboot = false;
    hs.op[0] = hs.op_id[0] = '\0';
    txn = db_begin(x->db);
    if (db_lookup(x->db, CLS_host, x->host_ref)) {
        db_update(txn, CLS_host, x->host_ref, F_host_current_operations,
                  value_empty_struct());
    }
    refresh_allowed(txn, x);
    db_commit(txn);
}

/* Runs shutdown(8) on a real host.  hs.mu held. */
static void
run_shutdown_command(struct xapi *x)
{
    const char *flag = !strcmp(hs.op, "reboot") ? "-r" : "-h";
    char *argv[] = { "shutdown", (char *) flag, "now", NULL };
    pid_t pid;
    int r;

    LOG_INFO("host.%s: running /sbin/shutdown %s now", hs.op, flag);
    r = posix_spawn(&pid, "/sbin/shutdown", NULL, NULL, argv, environ);
    if (r) {
        LOG_ERR("host.%s: cannot run /sbin/shutdown: %s", hs.op, strerror(r));
        power_request_failed(x);
        return;
    }
    hs.child = pid;
    hs.power = HOST_GOING_DOWN;
}

/* Moves a reboot or shutdown on when its time has come.  hs.mu held. */
static void
advance_power(struct xapi *x)
{
    int64_t now = time_mono_ms();
    int status;

    if (hs.child > 0 && waitpid(hs.child, &status, WNOHANG) == hs.child) {
        hs.child = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status)) {
            LOG_ERR("host.%s: /sbin/shutdown failed (status %d)", hs.op,
                    status);
            power_request_failed(x);
        }
    }
    if (hs.power == HOST_POWER_PENDING && now >= hs.deadline) {
        run_shutdown_command(x);
    } else if (hs.power == HOST_REBOOTING && now >= hs.deadline) {
        struct db_txn *txn = db_begin(x->db);
        hs.power = HOST_UP;
        hs.disabled_until_reboot = false;
        hs.op[0] = hs.op_id[0] = '\0';
        if (db_lookup(x->db, CLS_host, x->host_ref)) {
            db_update(txn, CLS_host, x->host_ref, F_host_current_operations,
                      value_empty_struct());
            db_update(txn, CLS_host, x->host_ref, F_host_enabled,
                      value_true());
        }
        set_live(txn, x, true);
        refresh_allowed(txn, x);
        if (db_commit(txn)) {
            LOG_WARN("cannot record the end of the simulated reboot");
        }
        LOG_INFO("simulated host rebooted: live and enabled");
    }
}

void
host_tick(struct xapi *x)
{
    pthread_mutex_lock(&hs.mu);
    if (!hs.started) {
        start_of_day(x);
    }
    advance_power(x);
    if (hs.power == HOST_UP) {
        refresh_metrics(x);
    }
    pthread_mutex_unlock(&hs.mu);
}

/* Reads of the host's run-time fields: current first (until the main loop
 * calls host_tick, this is what keeps them so), then the generic getter. */
static int
api_host_fresh_read(struct api_ctx *ctx, struct value **args,
                    struct value **ret)
{
    host_tick(ctx->x);
    return api_generic(ctx, args, ret);
}

/* ---- enable, disable ---- */

static int
api_host_disable(struct api_ctx *ctx, struct value **args,
                 struct value **ret)
{
    const char *ref = args[1]->u.str.s;
    struct db_txn *txn;
    struct db_row *host;
    int rc = -1;

    host_tick(ctx->x);
    pthread_mutex_lock(&hs.mu);
    txn = db_begin(ctx->x->db);
    host = db_lookup(ctx->x->db, CLS_host, ref);
    if (!host) {
        api_fail_handle(ctx, CLS_host, ref);
        goto out;
    }
    if (host->fields[F_host_enabled]->u.b) {
        LOG_INFO("host %s disabled at the request of %s",
                 host->fields[F_host_uuid]->u.str.s, ctx->peer ? ctx->peer : "?");
        db_update(txn, CLS_host, ref, F_host_enabled, value_false());
    }
    refresh_allowed(txn, ctx->x);
    rc = api_commit(ctx, txn);
    txn = NULL;
out:
    db_abort(txn);
    pthread_mutex_unlock(&hs.mu);
    return rc;
}

/* A host that was asked to reboot or shut down stays disabled until it
 * has booted (HOST_DISABLED_UNTIL_REBOOT), as in xapi. */
static int
api_host_enable(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const char *ref = args[1]->u.str.s;
    struct db_txn *txn;
    struct db_row *host;
    int rc = -1;

    host_tick(ctx->x);
    pthread_mutex_lock(&hs.mu);
    txn = db_begin(ctx->x->db);
    host = db_lookup(ctx->x->db, CLS_host, ref);
    if (!host) {
        api_fail_handle(ctx, CLS_host, ref);
        goto out;
    }
    if (!host->fields[F_host_enabled]->u.b) {
        if (hs.disabled_until_reboot) {
            api_fail(ctx, ERR_HOST_DISABLED_UNTIL_REBOOT, ref);
            goto out;
        }
        LOG_INFO("host %s enabled at the request of %s",
                 host->fields[F_host_uuid]->u.str.s, ctx->peer ? ctx->peer : "?");
        db_update(txn, CLS_host, ref, F_host_enabled, value_true());
    }
    refresh_allowed(txn, ctx->x);
    rc = api_commit(ctx, txn);
    txn = NULL;
out:
    db_abort(txn);
    pthread_mutex_unlock(&hs.mu);
    return rc;
}

int
host_assert_can_boot(struct api_ctx *ctx, const char *host_ref)
{
    struct db *db = ctx->x->db;
    const char *ref = host_ref ? host_ref : ctx->x->host_ref;
    struct db_row *host, *m;
    bool found, enabled = false, live = false;

    db_read_lock(db);
    host = db_lookup(db, CLS_host, ref);
    found = host != NULL;
    if (host) {
        enabled = host->fields[F_host_enabled]->u.b;
        m = db_lookup(db, CLS_host_metrics, host->fields[F_host_metrics]->u.str.s);
        live = m && m->fields[F_host_metrics_live]->u.b;
    }
    db_read_unlock(db);
    if (!host_ref) {
        return enabled && live ? 0 : api_fail(ctx, ERR_NO_HOSTS_AVAILABLE);
    }
    if (!found) {
        return api_fail_handle(ctx, CLS_host, ref);
    }
    if (!live) {
        return api_fail(ctx, ERR_HOST_NOT_LIVE);
    }
    return enabled ? 0 : api_fail(ctx, ERR_HOST_DISABLED, ref);
}

/* ---- reboot, shutdown ---- */

/* Finds a guest that keeps the host in use: one resident on it (running
 * or paused), or one being started or resumed, which is about to have a
 * domain here.  Database lock held. */
static bool
find_guest_in_use(struct db *db, const char *host_ref, char *ret_ref,
                  size_t size)
{
    static const char *const arriving[] = {
        "start", "start_on", "resume", "resume_on",
    };

    for (size_t i = 0; i < db_table_count(db, CLS_VM); i++) {
        struct db_row *vm = db_table_row(db, CLS_VM, i);
        const struct value *ops = vm->fields[F_VM_current_operations];
        bool in_use;
        if (vm->fields[F_VM_is_control_domain]->u.b
            || vm->fields[F_VM_is_a_template]->u.b) {
            continue;
        }
        in_use = !strcmp(vm->fields[F_VM_resident_on]->u.str.s, host_ref);
        for (size_t j = 0; !in_use && j < ops->u.st.n; j++) {
            const struct value *op = ops->u.st.m[j].v;
            for (size_t k = 0; op->type == VALUE_STRING
                               && k < ARRAY_SIZE(arriving); k++) {
                in_use |= !strcmp(op->u.str.s, arriving[k]);
            }
        }
        if (in_use) {
            snprintf(ret_ref, size, "%s", vm->ref);
            return true;
        }
    }
    return false;
}

/* host.reboot and host.shutdown: checked in XenAPI's order (another
 * power operation, HOST_NOT_DISABLED, then HOST_IN_USE), then marked and
 * carried out as the file comment says.  The API has no force flag: the
 * guests must be stopped or moved first, as the messages' documentation
 * says. */
static int
power_request(struct api_ctx *ctx, const char *ref, const char *op)
{
    struct xapi *x = ctx->x;
    struct db_txn *txn;
    struct db_row *host;
    struct value *cur;
    char vm[48];
    int rc = -1;

    host_tick(x);
    pthread_mutex_lock(&hs.mu);
    txn = db_begin(x->db);
    host = db_lookup(x->db, CLS_host, ref);
    if (!host) {
        api_fail_handle(ctx, CLS_host, ref);
        goto out;
    }
    if (hs.op[0]) {
        api_fail(ctx, ERR_OTHER_OPERATION_IN_PROGRESS, "host", ref, hs.op,
                 hs.op_id);
        goto out;
    }
    if (host->fields[F_host_enabled]->u.b) {
        api_fail(ctx, ERR_HOST_NOT_DISABLED);
        goto out;
    }
    if (find_guest_in_use(x->db, ref, vm, sizeof vm)) {
        api_fail(ctx, ERR_HOST_IN_USE, ref, "vm", vm);
        goto out;
    }
    snprintf(hs.op, sizeof hs.op, "%s", op);
    if (*ctx->task) {
        snprintf(hs.op_id, sizeof hs.op_id, "%s", ctx->task);
    } else {
        uuid_generate(hs.op_id);
    }
    hs.disabled_until_reboot = true;
    if (is_simulator(x)) {
        hs.power = !strcmp(op, "reboot") ? HOST_REBOOTING : HOST_OFF;
        hs.deadline = time_mono_ms() + SIM_BOOT_MS;
        set_live(txn, x, false);
        LOG_INFO("host.%s: the simulated host goes down%s", op,
                 hs.power == HOST_REBOOTING ? " and will boot again"
                 : " until the daemon restarts");
    } else {
        hs.power = HOST_POWER_PENDING;
        hs.deadline = time_mono_ms() + POWER_DELAY_MS;
        LOG_INFO("host.%s requested by %s", op, ctx->peer ? ctx->peer : "?");
    }
    cur = value_struct(1);
    value_struct_put(cur, hs.op_id, value_string(op));
    db_update(txn, CLS_host, ref, F_host_current_operations, cur);
    refresh_allowed(txn, x);
    rc = api_commit(ctx, txn);
    txn = NULL;
out:
    db_abort(txn);
    pthread_mutex_unlock(&hs.mu);
    return rc;
}

static int
api_host_reboot(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return power_request(ctx, args[1]->u.str.s, "reboot");
}

static int
api_host_shutdown(struct api_ctx *ctx, struct value **args,
                  struct value **ret)
{
    return power_request(ctx, args[1]->u.str.s, "shutdown");
}

/* ---- evacuation ---- */

/* The evacuation plan's failures: VM ref -> [CODE, params...] for every
 * guest that cannot be moved, as host.get_vms_which_prevent_evacuation
 * answers.  With no other enabled host, every resident guest gets
 * NO_HOSTS_AVAILABLE [vm] (xapi adds the VM although the error is
 * declared without parameters).  VM.pool_migrate moves guests only within
 * this host (a pool of one), so guests that would need another host get
 * NOT_IMPLEMENTED until pools have members. */
static int
evacuation_failures(struct api_ctx *ctx, const char *ref,
                    struct value **ret_plan)
{
    struct db *db = ctx->x->db;
    struct value *plan = value_struct(4);
    struct db_row *host;
    bool targets = false;
    const struct value *resident;

    db_read_lock(db);
    host = db_lookup(db, CLS_host, ref);
    if (!host) {
        db_read_unlock(db);
        value_unref(plan);
        return api_fail_handle(ctx, CLS_host, ref);
    }
    for (size_t i = 0; i < db_table_count(db, CLS_host); i++) {
        struct db_row *h = db_table_row(db, CLS_host, i);
        targets |= h != host && h->fields[F_host_enabled]->u.b;
    }
    resident = host->fields[F_host_resident_VMs];
    for (size_t i = 0; i < resident->u.arr.n; i++) {
        const char *vref = resident->u.arr.items[i]->u.str.s;
        struct db_row *vm = db_lookup(db, CLS_VM, vref);
        struct value *err;
        if (!vm || vm->fields[F_VM_is_control_domain]->u.b) {
            continue;
        }
        if (targets) {
            db_read_unlock(db);
            value_unref(plan);
            return api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
        }
        err = value_array(2);
        value_array_append(err, value_string("NO_HOSTS_AVAILABLE"));
        value_array_append(err, value_string(vref));
        value_struct_put(plan, vref, err);
    }
    db_read_unlock(db);
    *ret_plan = plan;
    return 0;
}

static int
api_host_get_vms_which_prevent_evacuation(struct api_ctx *ctx,
                                          struct value **args,
                                          struct value **ret)
{
    return evacuation_failures(ctx, args[1]->u.str.s, ret);
}

/* The old form: CANNOT_EVACUATE_HOST with every failure as
 * "CODE,param,..." joined by "|". */
static int
api_host_assert_can_evacuate(struct api_ctx *ctx, struct value **args,
                             struct value **ret)
{
    struct value *plan = NULL;
    struct ds text = DS_EMPTY;
    int rc;

    if (evacuation_failures(ctx, args[1]->u.str.s, &plan)) {
        return -1;
    }
    for (size_t i = 0; i < plan->u.st.n; i++) {
        const struct value *err = plan->u.st.m[i].v;
        if (i) {
            ds_put_char(&text, '|');
        }
        for (size_t j = 0; j < err->u.arr.n; j++) {
            ds_put_fmt(&text, "%s%s", j ? "," : "", err->u.arr.items[j]->u.str.s);
        }
    }
    rc = plan->u.st.n ? api_fail(ctx, ERR_CANNOT_EVACUATE_HOST, ds_cstr(&text))
                      : 0;
    ds_destroy(&text);
    value_unref(plan);
    return rc;
}

static int
api_host_evacuate(struct api_ctx *ctx, struct value **args,
                  struct value **ret)
{
    const char *ref = args[1]->u.str.s, *net = args[2]->u.str.s;
    struct value *plan = NULL;
    bool net_ok = true;
    int rc = -1;

    host_tick(ctx->x);
    if (check_host(ctx, ref)) {
        return -1;
    }
    if (!is_null_ref(net)) {
        db_read_lock(ctx->x->db);
        net_ok = db_lookup(ctx->x->db, CLS_network, net) != NULL;
        db_read_unlock(ctx->x->db);
    }
    if (!net_ok) {
        return api_fail_handle(ctx, CLS_network, net);
    }
    /* Under hs.mu, so that no reboot or shutdown starts meanwhile. */
    pthread_mutex_lock(&hs.mu);
    if (hs.op[0]) {
        api_fail(ctx, ERR_OTHER_OPERATION_IN_PROGRESS, "host", ref, hs.op,
                 hs.op_id);
        goto out;
    }
    if (evacuation_failures(ctx, ref, &plan)) {
        goto out;
    }
    if (plan->u.st.n) {
        /* The first failure, with its parameters as the plan has them. */
        value_unref(ctx->error);
        ctx->error = value_ref(plan->u.st.m[0].v);
        goto out;
    }
    api_task_set_progress(ctx, 1.0);
    rc = 0;
out:
    pthread_mutex_unlock(&hs.mu);
    value_unref(plan);
    return rc;
}

/* ---- memory ---- */

/* The memory a new VM could have now.  Nothing here balloons running
 * guests down, so this is the hypervisor's free memory. */
static int
api_host_compute_free_memory(struct api_ctx *ctx, struct value **args,
                             struct value **ret)
{
    struct xenops_host_info info;
    char *err = NULL;

    if (check_host(ctx, args[1]->u.str.s)) {
        return -1;
    }
    host_tick(ctx->x);
    if (xenops_host_info(ctx->x->xenops, &info, &err)) {
        api_fail_internal(ctx, "cannot read the host's memory: %s",
                          err ? err : "?");
        free(err);
        return -1;
    }
    *ret = value_int(MAX(0, info.memory_free));
    return 0;
}

/* As in xapi, the overhead measured once (see refresh_metrics). */
static int
api_host_compute_memory_overhead(struct api_ctx *ctx, struct value **args,
                                 struct value **ret)
{
    const char *ref = args[1]->u.str.s;
    struct db_row *host;

    host_tick(ctx->x);
    db_read_lock(ctx->x->db);
    host = db_lookup(ctx->x->db, CLS_host, ref);
    if (host) {
        *ret = value_int(host->fields[F_host_memory_overhead]->u.i);
    }
    db_read_unlock(ctx->x->db);
    return host ? 0 : api_fail_handle(ctx, CLS_host, ref);
}

/* Deprecated: no guest is uncooperative, as nothing here balloons. */
static int
api_host_get_uncooperative_resident_vms(struct api_ctx *ctx,
                                        struct value **args,
                                        struct value **ret)
{
    if (check_host(ctx, args[1]->u.str.s)) {
        return -1;
    }
    *ret = value_array(0);
    return 0;
}

/* ---- clocks, dmesg, hostname ---- */

static int
api_host_get_servertime(struct api_ctx *ctx, struct value **args,
                        struct value **ret)
{
    if (check_host(ctx, args[1]->u.str.s)) {
        return -1;
    }
    *ret = value_datetime_secs(time_wall_ms() / 1000);
    return 0;
}

/* The host's wall clock in its own time zone: XenAPI's form without the
 * Z, which would claim UTC. */
static int
api_host_get_server_localtime(struct api_ctx *ctx, struct value **args,
                              struct value **ret)
{
    time_t now = (time_t) (time_wall_ms() / 1000);
    struct tm tm;
    char buf[32];

    if (check_host(ctx, args[1]->u.str.s)) {
        return -1;
    }
    if (!localtime_r(&now, &tm)) {
        return api_fail_internal(ctx, "cannot read the local time");
    }
    strftime(buf, sizeof buf, "%Y%m%dT%H:%M:%S", &tm);
    *ret = value_datetime(buf);
    return 0;
}

/* Xen's console ring.  The simulator has no Xen: it answers a few lines
 * in the ring's style describing the simulated machine.  Other providers
 * cannot read the ring yet (xenops has no call for it). */
static int
api_host_dmesg(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct xenops_host_info info;
    struct ds text = DS_EMPTY;
    char *err = NULL;

    if (check_host(ctx, args[1]->u.str.s)) {
        return -1;
    }
    if (!is_simulator(ctx->x)) {
        return api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
    }
    if (xenops_host_info(ctx->x->xenops, &info, &err)) {
        api_fail_internal(ctx, "cannot read the host: %s", err ? err : "?");
        free(err);
        return -1;
    }
    ds_put_fmt(&text, "(XEN) Xen version %s (simulated; no hypervisor runs "
               "here)\n", info.xen_version);
    ds_put_fmt(&text, "(XEN) Command line: dom0_mem=%lldM dom0_max_vcpus=%d\n",
               (long long) (info.dom0_memory >> 20), info.dom0_vcpus);
    ds_put_fmt(&text, "(XEN) CPU Vendor: %s, %s\n", info.cpu.vendor,
               info.cpu.model_name);
    ds_put_fmt(&text, "(XEN) Brought up %d CPUs\n", info.n_cpus);
    ds_put_fmt(&text, "(XEN) System RAM: %lldMB (%lldkB)\n",
               (long long) (info.memory_total >> 20),
               (long long) (info.memory_total >> 10));
    ds_put_fmt(&text, "(XEN) Dom0 has maximum %d VCPUs\n", info.dom0_vcpus);
    ds_put_cstr(&text, "(XEN) Scheduler: SMP Credit Scheduler (credit)\n");
    *ret = value_string_take(ds_steal(&text));
    return 0;
}

/* A host name as xapi accepts it: letters, digits, '-' and '.', labels of
 * 1 to 63 characters not starting or ending with '-'. */
static const char *
hostname_problem(const char *name)
{
    size_t len = strlen(name), label = 0;

    if (!len) {
        return "hostname empty";
    }
    if (len > 255) {
        return "hostname is too long";
    }
    for (size_t i = 0; i <= len; i++) {
        char c = name[i];
        if (c == '.' || !c) {
            if (!label || name[i - 1] == '-') {
                return "hostname contains invalid characters";
            }
            label = 0;
        } else if (isalnum((unsigned char) c) || (c == '-' && label)) {
            if (++label > 63) {
                return "hostname contains invalid characters";
            }
        } else {
            return "hostname contains invalid characters";
        }
    }
    return NULL;
}

/* Renames the host at once: the system's host name (never on the
 * simulator, whose host is not the machine it runs on), host.hostname,
 * and the control domain's default name, as xapi does. */
static int
api_host_set_hostname_live(struct api_ctx *ctx, struct value **args,
                           struct value **ret)
{
    static const char stem[] = "Control domain on host: ";
    struct xapi *x = ctx->x;
    const char *ref = args[1]->u.str.s, *name = args[2]->u.str.s;
    const char *problem;
    struct db_txn *txn;
    struct db_row *host, *dom0;
    char dom0_ref[48];

    if (check_host(ctx, ref)) {
        return -1;
    }
    problem = hostname_problem(name);
    if (problem) {
        return api_fail(ctx, ERR_HOST_NAME_INVALID, problem);
    }
    if (!is_simulator(x)) {
        char *line = xasprintf("%s\n", name);
        int rc = sethostname(name, strlen(name)) ? -errno : 0;
        if (!rc) {
            rc = write_file_atomic("/etc/hostname", line, strlen(line), 0644);
        }
        free(line);
        if (rc) {
            return api_fail_internal(ctx, "cannot set the host name: %s",
                                     strerror(-rc));
        }
    }
    txn = db_begin(x->db);
    host = db_lookup(x->db, CLS_host, ref);
    if (!host) {
        db_abort(txn);
        return api_fail_handle(ctx, CLS_host, ref);
    }
    snprintf(dom0_ref, sizeof dom0_ref, "%s",
             host->fields[F_host_control_domain]->u.str.s);
    db_update(txn, CLS_host, ref, F_host_hostname, value_string(name));
    dom0 = db_lookup(x->db, CLS_VM, dom0_ref);
    if (dom0 && str_starts_with(dom0->fields[F_VM_name_label]->u.str.s, stem)) {
        db_update(txn, CLS_VM, dom0_ref, F_VM_name_label,
                  value_stringf("%s%s", stem, name));
    }
    LOG_INFO("host %s renamed %s", x->host_uuid, name);
    return api_commit(ctx, txn);
}

const struct api_handler_entry host_handlers[] = {
    { "host.assert_can_evacuate", api_host_assert_can_evacuate },
    { "host.compute_free_memory", api_host_compute_free_memory },
    { "host.compute_memory_overhead", api_host_compute_memory_overhead },
    { "host.disable", api_host_disable },
    { "host.dmesg", api_host_dmesg },
    { "host.enable", api_host_enable },
    { "host.evacuate", api_host_evacuate },
    { "host.get_all_records", api_host_fresh_read },
    { "host.get_allowed_operations", api_host_fresh_read },
    { "host.get_current_operations", api_host_fresh_read },
    { "host.get_enabled", api_host_fresh_read },
    { "host.get_memory_overhead", api_host_fresh_read },
    { "host.get_record", api_host_fresh_read },
    { "host.get_server_localtime", api_host_get_server_localtime },
    { "host.get_servertime", api_host_get_servertime },
    { "host.get_uncooperative_resident_VMs",
      api_host_get_uncooperative_resident_vms },
    { "host.get_vms_which_prevent_evacuation",
      api_host_get_vms_which_prevent_evacuation },
    { "host.reboot", api_host_reboot },
    { "host.set_hostname_live", api_host_set_hostname_live },
    { "host.shutdown", api_host_shutdown },
    { "host_metrics.get_all_records", api_host_fresh_read },
    { "host_metrics.get_live", api_host_fresh_read },
    { "host_metrics.get_memory_total", api_host_fresh_read },
    { "host_metrics.get_record", api_host_fresh_read },
    { NULL, NULL },
};
