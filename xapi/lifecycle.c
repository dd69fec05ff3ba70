/* lifecycle.c — the VM power operations: start, shutdown, reboot, pause,
 * suspend, resume and their variants, on top of the xenops provider.
 *
 * Each VM has a small run-time record here (its domid and the operation in
 * progress).  An operation first checks and marks the VM in one database
 * transaction (power state, OTHER_OPERATION_IN_PROGRESS, current_operations
 * and allowed_operations), then drives the provider without holding any
 * lock, then records the outcome in a second transaction.  Operations that
 * wait for the guest run on the task executor, never on an HTTP worker: a
 * synchronous call defers its answer (api_defer) and hands the work over.
 *
 * The provider reports what guests do by themselves (shut down, reboot,
 * crash, guest agent data, statistics) through an update callback; a
 * reaction job then applies the VM's actions_after_* settings or refreshes
 * VM_guest_metrics and VM_metrics.  xapi/vm.c has the VM messages that do
 * not involve a domain. */
#include <config.h>
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strmap.h"
#include "xenops/xenops.h"

/* Set from the command line (--shutdown-timeout): how long a clean
 * shutdown or reboot waits for the guest. */
int64_t lifecycle_shutdown_timeout_ms = 1200 * 1000;

struct vm_rt {
    char ref[48];
    char uuid[40];
    uint32_t domid;
    bool has_domain;
    char op[40];                /* operation in progress, "" if none */
    char op_id[48];             /* its key in current_operations */
    uint64_t seq;               /* bumped by every domain update */
    int device_ops;             /* device operations in progress */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct strmap by_ref;
    struct strmap by_uuid;
    struct xapi *x;
} lc = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

/* Returns the run-time record of a VM, creating it; lc.mu held. */
static struct vm_rt *
rt_get(const char *ref, const char *uuid)
{
    struct vm_rt *rt = strmap_get(&lc.by_ref, ref);

    if (!rt) {
        rt = xcalloc(1, sizeof *rt);
        snprintf(rt->ref, sizeof rt->ref, "%s", ref);
        snprintf(rt->uuid, sizeof rt->uuid, "%s", uuid);
        strmap_put(&lc.by_ref, rt->ref, rt);
        strmap_put(&lc.by_uuid, rt->uuid, rt);
    }
    return rt;
}

/* ---- allowed operations ---- */

static const char *const ops_halted[] = {
    "start", "start_on", "clone", "copy", "snapshot", "provision",
    "changing_memory_limits", "changing_static_range",
    "changing_dynamic_range", "changing_VCPUs", "changing_shadow_memory",
    "changing_NVRAM", "create_template", "get_boot_record",
    "power_state_reset", "query_services", "call_plugin", NULL,
};
static const char *const ops_running[] = {
    "clean_shutdown", "clean_reboot", "hard_shutdown", "hard_reboot",
    "shutdown", "suspend", "pause", "snapshot", "checkpoint",
    "changing_dynamic_range", "changing_memory_live", "changing_VCPUs_live",
    "changing_shadow_memory_live", "send_sysrq", "send_trigger",
    "get_boot_record", "power_state_reset", "query_services", "call_plugin",
    NULL,
};
static const char *const ops_paused[] = {
    "unpause", "hard_shutdown", "hard_reboot", "shutdown",
    "get_boot_record", "power_state_reset", "changing_dynamic_range", NULL,
};
static const char *const ops_suspended[] = {
    "resume", "resume_on", "hard_shutdown", "shutdown", "clone", "copy",
    "snapshot", "get_boot_record", "power_state_reset", NULL,
};
static const char *const ops_template[] = {
    "clone", "copy", "provision", "get_boot_record", NULL,
};

/* What a client may do with a VM in this state; empty while another
 * operation runs, as in XenAPI. */
static struct value *
allowed_ops(const char *power, bool template, bool control, bool busy)
{
    const char *const *list = NULL;
    struct value *arr = value_array(24);

    if (busy || control) {
        return arr;
    }
    if (template) {
        list = ops_template;
    } else if (!strcmp(power, "Halted")) {
        list = ops_halted;
    } else if (!strcmp(power, "Running")) {
        list = ops_running;
    } else if (!strcmp(power, "Paused")) {
        list = ops_paused;
    } else if (!strcmp(power, "Suspended")) {
        list = ops_suspended;
    }
    for (size_t i = 0; list && list[i]; i++) {
        if (api_enum_value_find(ENUM_vm_operations, list[i]) >= 0) {
            value_array_append(arr, value_string(list[i]));
        }
    }
    return arr;
}

static void refresh_allowed(struct db_txn *txn, const char *ref, bool busy);

struct value *
lifecycle_allowed_ops(const char *power, bool template, bool control)
{
    return allowed_ops(power, template, control, false);
}

/* Recomputes allowed_operations of a VM inside txn. */
void
lifecycle_refresh_allowed(struct db_txn *txn, const char *ref, bool busy)
{
    refresh_allowed(txn, ref, busy);
}

/* Recomputes allowed_operations of a VM inside txn. */
static void
refresh_allowed(struct db_txn *txn, const char *ref, bool busy)
{
    struct db_row *row = db_lookup(db_txn_db(txn), CLS_VM, ref);

    if (!row) {
        return;
    }
    db_update(txn, CLS_VM, ref, F_VM_allowed_operations,
              allowed_ops(row->fields[F_VM_power_state]->u.str.s,
                          row->fields[F_VM_is_a_template]->u.b,
                          row->fields[F_VM_is_control_domain]->u.b, busy));
}

/* ---- operation begin / end ---- */

/* Checks that the VM exists, is not a template or the control domain, is
 * in one of the allowed power states, and has no operation in progress;
 * then marks op as in progress.  Returns the run-time record, or NULL after
 * api_fail(). */
static struct vm_rt *
op_begin(struct api_ctx *ctx, const char *ref, const char *op,
         const char *const *states)
{
    struct xapi *x = ctx->x;
    struct db_txn *txn;
    struct db_row *row;
    const char *power;
    struct vm_rt *rt;
    struct value *cur;
    bool ok = false;

    /* A reaction to what the guest did (a restart after a crash, say) is
     * short: wait for it rather than fail, since the client cannot know
     * it was running. */
    db_read_lock(x->db);
    row = db_lookup(x->db, CLS_VM, ref);
    if (row) {
        char uuid[40];
        int64_t deadline = time_mono_ms() + 5000;
        snprintf(uuid, sizeof uuid, "%s", row->fields[F_VM_uuid]->u.str.s);
        db_read_unlock(x->db);
        pthread_mutex_lock(&lc.mu);
        rt = rt_get(ref, uuid);
        while (!strcmp(rt->op, "internal") && time_mono_ms() < deadline) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&lc.cv, &lc.mu, &ts);
        }
        pthread_mutex_unlock(&lc.mu);
    } else {
        db_read_unlock(x->db);
    }
    txn = db_begin(x->db);
    row = db_lookup(x->db, CLS_VM, ref);
    if (!row) {
        db_abort(txn);
        api_fail_handle(ctx, CLS_VM, ref);
        return NULL;
    }
    if (row->fields[F_VM_is_a_template]->u.b) {
        db_abort(txn);
        api_fail(ctx, ERR_VM_IS_TEMPLATE, ref);
        return NULL;
    }
    if (row->fields[F_VM_is_control_domain]->u.b) {
        db_abort(txn);
        api_fail(ctx, ERR_OPERATION_NOT_ALLOWED,
                 "not allowed on the control domain");
        return NULL;
    }
    power = row->fields[F_VM_power_state]->u.str.s;
    for (size_t i = 0; states[i]; i++) {
        ok |= !strcmp(power, states[i]);
    }
    if (!ok) {
        char *actual = xstrdup(power);
        db_abort(txn);
        api_fail(ctx, ERR_VM_BAD_POWER_STATE, ref, states[0], actual);
        free(actual);
        return NULL;
    }
    pthread_mutex_lock(&lc.mu);
    rt = rt_get(ref, row->fields[F_VM_uuid]->u.str.s);
    if (rt->op[0] || rt->device_ops) {
        char op_now[40], id_now[48];
        snprintf(op_now, sizeof op_now, "%s", rt->op[0] ? rt->op : "device");
        snprintf(id_now, sizeof id_now, "%s", rt->op_id);
        pthread_mutex_unlock(&lc.mu);
        db_abort(txn);
        api_fail(ctx, ERR_OTHER_OPERATION_IN_PROGRESS, "VM", ref, op_now,
                 id_now);
        return NULL;
    }
    snprintf(rt->op, sizeof rt->op, "%s", op);
    if (*ctx->task) {
        snprintf(rt->op_id, sizeof rt->op_id, "%s", ctx->task);
    } else {
        char uuid[40];
        uuid_generate(uuid);
        snprintf(rt->op_id, sizeof rt->op_id, "%s", uuid);
    }
    pthread_mutex_unlock(&lc.mu);
    cur = value_struct(1);
    value_struct_put(cur, rt->op_id, value_string(op));
    db_update(txn, CLS_VM, ref, F_VM_current_operations, cur);
    refresh_allowed(txn, ref, true);
    db_commit(txn);
    return rt;
}

/* Clears the operation in progress and recomputes allowed_operations; the
 * caller's txn (may carry other changes) is committed. */
static void
op_end(struct vm_rt *rt, struct db_txn *txn)
{
    db_update(txn, CLS_VM, rt->ref, F_VM_current_operations,
              value_empty_struct());
    refresh_allowed(txn, rt->ref, false);
    db_commit(txn);
    pthread_mutex_lock(&lc.mu);
    rt->op[0] = rt->op_id[0] = '\0';
    pthread_mutex_unlock(&lc.mu);
}

int
lifecycle_device_op_begin(const char *ref, uint32_t *ret_domid)
{
    struct vm_rt *rt;
    int rc = 0;

    pthread_mutex_lock(&lc.mu);
    rt = strmap_get(&lc.by_ref, ref);
    if (!rt || !rt->has_domain) {
        rc = -ENOENT;
    } else if (rt->op[0]) {
        rc = -EBUSY;
    } else {
        rt->device_ops++;
        *ret_domid = rt->domid;
    }
    pthread_mutex_unlock(&lc.mu);
    return rc;
}

void
lifecycle_device_op_end(const char *ref)
{
    struct vm_rt *rt;

    pthread_mutex_lock(&lc.mu);
    rt = strmap_get(&lc.by_ref, ref);
    if (rt && rt->device_ops > 0) {
        rt->device_ops--;
    }
    pthread_mutex_unlock(&lc.mu);
}

/* ---- specs from the database ---- */

static char *
map_get_dup(const struct value *m, const char *key)
{
    const char *v = value_struct_get_string(m, key);

    return v ? xstrdup(v) : NULL;
}

static struct xenops_kv *
kvs_of(const struct value *m, size_t *ret_n)
{
    struct xenops_kv *kv = xcalloc(m->u.st.n ? m->u.st.n : 1, sizeof *kv);

    for (size_t i = 0; i < m->u.st.n; i++) {
        kv[i].key = xstrdup(m->u.st.m[i].name);
        kv[i].value = xstrdup(m->u.st.m[i].v->type == VALUE_STRING
                              ? m->u.st.m[i].v->u.str.s : "");
    }
    *ret_n = m->u.st.n;
    return kv;
}

/* Builds the provider's spec of a VM; db read lock held. */
static struct xenops_vm_spec *
build_spec(struct db *db, const struct db_row *vm)
{
    struct xenops_vm_spec *s = xcalloc(1, sizeof *s);
    struct value *const *f = vm->fields;
    const char *dt = f[F_VM_domain_type]->u.str.s;
    const struct value *vbds = f[F_VM_VBDs], *vifs = f[F_VM_VIFs];

    snprintf(s->uuid, sizeof s->uuid, "%s", f[F_VM_uuid]->u.str.s);
    s->name = xstrdup(f[F_VM_name_label]->u.str.s);
    if (!strcmp(dt, "hvm")) {
        s->type = XENOPS_HVM;
    } else if (!strcmp(dt, "pvh")) {
        s->type = XENOPS_PVH;
    } else if (!strcmp(dt, "pv") || !strcmp(dt, "pv_in_pvh")) {
        s->type = XENOPS_PV;
    } else {
        s->type = f[F_VM_HVM_boot_policy]->u.str.len ? XENOPS_HVM : XENOPS_PV;
    }
    s->memory_static_max = f[F_VM_memory_static_max]->u.i;
    s->memory_dynamic_max = f[F_VM_memory_dynamic_max]->u.i;
    s->memory_dynamic_min = f[F_VM_memory_dynamic_min]->u.i;
    s->memory_static_min = f[F_VM_memory_static_min]->u.i;
    s->memory_target = f[F_VM_memory_dynamic_max]->u.i;
    s->vcpus_max = (int) f[F_VM_VCPUs_max]->u.i;
    s->vcpus_at_startup = (int) f[F_VM_VCPUs_at_startup]->u.i;
    s->vcpus_params = kvs_of(f[F_VM_VCPUs_params], &s->n_vcpus_params);
    s->pv_kernel = xstrdup(f[F_VM_PV_kernel]->u.str.s);
    s->pv_ramdisk = xstrdup(f[F_VM_PV_ramdisk]->u.str.s);
    s->pv_args = xstrdup(f[F_VM_PV_args]->u.str.s);
    s->pv_bootloader = xstrdup(f[F_VM_PV_bootloader]->u.str.s);
    s->pv_bootloader_args = xstrdup(f[F_VM_PV_bootloader_args]->u.str.s);
    s->hvm_boot_order = map_get_dup(f[F_VM_HVM_boot_params], "order");
    s->hvm_firmware = map_get_dup(f[F_VM_HVM_boot_params], "firmware");
    s->shadow_multiplier = f[F_VM_HVM_shadow_multiplier]->u.d;
    s->platform = kvs_of(f[F_VM_platform], &s->n_platform);
    s->vbds = xcalloc(vbds->u.arr.n + 1, sizeof *s->vbds);
    for (size_t i = 0; i < vbds->u.arr.n; i++) {
        struct db_row *b = db_lookup(db, CLS_VBD, vbds->u.arr.items[i]->u.str.s);
        struct xenops_vbd_spec *v = &s->vbds[s->n_vbds];
        struct db_row *vdi;
        if (!b) {
            continue;
        }
        v->ref = xstrdup(b->ref);
        v->device = xstrdup(b->fields[F_VBD_device]->u.str.s);
        v->position = atoi(b->fields[F_VBD_userdevice]->u.str.s);
        v->read_only = !strcmp(b->fields[F_VBD_mode]->u.str.s, "RO");
        v->cdrom = !strcmp(b->fields[F_VBD_type]->u.str.s, "CD");
        v->empty = b->fields[F_VBD_empty]->u.b;
        vdi = db_lookup(db, CLS_VDI, b->fields[F_VBD_VDI]->u.str.s);
        if (vdi && !v->empty) {
            v->target = xstrdup(vdi->fields[F_VDI_location]->u.str.s);
        }
        v->format = xstrdup("raw");
        s->n_vbds++;
    }
    s->vifs = xcalloc(vifs->u.arr.n + 1, sizeof *s->vifs);
    for (size_t i = 0; i < vifs->u.arr.n; i++) {
        struct db_row *v = db_lookup(db, CLS_VIF, vifs->u.arr.items[i]->u.str.s);
        struct xenops_vif_spec *n = &s->vifs[s->n_vifs];
        struct db_row *net;
        if (!v) {
            continue;
        }
        n->ref = xstrdup(v->ref);
        n->position = atoi(v->fields[F_VIF_device]->u.str.s);
        snprintf(n->mac, sizeof n->mac, "%s", v->fields[F_VIF_MAC]->u.str.s);
        net = db_lookup(db, CLS_network, v->fields[F_VIF_network]->u.str.s);
        n->bridge = xstrdup(net ? net->fields[F_network_bridge]->u.str.s : "");
        n->mtu = v->fields[F_VIF_MTU]->u.i;
        s->n_vifs++;
    }
    return s;
}

static struct xenops_vm_spec *
spec_of(struct xapi *x, const char *ref)
{
    struct xenops_vm_spec *s = NULL;
    struct db_row *vm;

    db_read_lock(x->db);
    vm = db_lookup(x->db, CLS_VM, ref);
    if (vm) {
        s = build_spec(x->db, vm);
    }
    db_read_unlock(x->db);
    return s;
}

/* ---- recording domains in the database ---- */

/* Marks the VM's devices attached or not. */
static void
set_devices_attached(struct db_txn *txn, const char *ref, bool attached)
{
    struct db *db = db_txn_db(txn);
    struct db_row *vm = db_lookup(db, CLS_VM, ref);
    static const struct { int set; int cls; int field; } devs[] = {
        { F_VM_VBDs, CLS_VBD, F_VBD_currently_attached },
        { F_VM_VIFs, CLS_VIF, F_VIF_currently_attached },
    };

    for (size_t d = 0; vm && d < ARRAY_SIZE(devs); d++) {
        struct value *set = value_ref(vm->fields[devs[d].set]);
        for (size_t i = 0; i < set->u.arr.n; i++) {
            db_update(txn, devs[d].cls, set->u.arr.items[i]->u.str.s,
                      devs[d].field, value_bool(attached));
        }
        value_unref(set);
        vm = db_lookup(db, CLS_VM, ref);
    }
}

/* Creates or removes the VM's text console. */
static void
set_console(struct db_txn *txn, struct xapi *x, const char *ref, bool present)
{
    struct db_row *vm = db_lookup(x->db, CLS_VM, ref);
    struct value *consoles = vm ? value_ref(vm->fields[F_VM_consoles]) : NULL;

    if (!vm) {
        return;
    }
    if (present && consoles->u.arr.n == 0) {
        struct value **f = xcalloc(api_classes[CLS_console].n_fields, sizeof *f);
        char cref[48], uuid[40];
        db_new_ref(cref);
        uuid_generate(uuid);
        f[F_console_uuid] = value_string(uuid);
        f[F_console_protocol] = value_string("vt100");
        f[F_console_location] = value_stringf("https://%s/console?ref=%s",
                                              "127.0.0.1", cref);
        f[F_console_VM] = value_string(ref);
        db_insert(txn, CLS_console, cref, f, NULL);
        free(f);
    } else if (!present) {
        for (size_t i = 0; i < consoles->u.arr.n; i++) {
            db_delete(txn, CLS_console, consoles->u.arr.items[i]->u.str.s);
        }
    }
    value_unref(consoles);
}

/* Records that the VM now runs (or is paused) as domid. */
static void
record_running(struct db_txn *txn, struct xapi *x, struct vm_rt *rt,
               bool paused, bool fresh_start)
{
    struct db_row *vm = db_lookup(x->db, CLS_VM, rt->ref);
    int64_t now = time_wall_ms() / 1000;

    db_update(txn, CLS_VM, rt->ref, F_VM_power_state,
              value_string(paused ? "Paused" : "Running"));
    db_update(txn, CLS_VM, rt->ref, F_VM_domid, value_int(rt->domid));
    db_update(txn, CLS_VM, rt->ref, F_VM_resident_on, value_string(x->host_ref));
    set_devices_attached(txn, rt->ref, true);
    set_console(txn, x, rt->ref, true);
    vmops_refresh_devices(txn, rt->ref);
    vm = db_lookup(x->db, CLS_VM, rt->ref);
    if (vm && db_lookup(x->db, CLS_VM_metrics, vm->fields[F_VM_metrics]->u.str.s)) {
        char *m = xstrdup(vm->fields[F_VM_metrics]->u.str.s);
        struct value *state = value_array(1);
        value_array_append(state, value_string(paused ? "paused" : "running"));
        if (fresh_start) {
            db_update(txn, CLS_VM_metrics, m, F_VM_metrics_start_time,
                      value_datetime_secs(now));
        }
        db_update(txn, CLS_VM_metrics, m, F_VM_metrics_state, state);
        db_update(txn, CLS_VM_metrics, m, F_VM_metrics_VCPUs_number,
                  value_int(vm->fields[F_VM_VCPUs_at_startup]->u.i));
        db_update(txn, CLS_VM_metrics, m, F_VM_metrics_memory_actual,
                  value_int(vm->fields[F_VM_memory_dynamic_max]->u.i));
        db_update(txn, CLS_VM_metrics, m, F_VM_metrics_last_updated,
                  value_datetime_secs(now));
        free(m);
    }
}

/* Records that the VM has no domain any more. */
static void
record_stopped(struct db_txn *txn, struct xapi *x, struct vm_rt *rt,
               const char *power)
{
    struct db_row *vm;

    db_update(txn, CLS_VM, rt->ref, F_VM_power_state, value_string(power));
    db_update(txn, CLS_VM, rt->ref, F_VM_domid, value_int(-1));
    db_update(txn, CLS_VM, rt->ref, F_VM_resident_on, value_null_ref());
    set_devices_attached(txn, rt->ref, false);
    set_console(txn, x, rt->ref, false);
    vmops_refresh_devices(txn, rt->ref);
    vm = db_lookup(x->db, CLS_VM, rt->ref);
    if (vm && db_lookup(x->db, CLS_VM_metrics, vm->fields[F_VM_metrics]->u.str.s)) {
        char *m = xstrdup(vm->fields[F_VM_metrics]->u.str.s);
        struct value *state = value_array(1);
        value_array_append(state, value_string("halted"));
        db_update(txn, CLS_VM_metrics, m, F_VM_metrics_state, state);
        db_update(txn, CLS_VM_metrics, m, F_VM_metrics_memory_actual,
                  value_int(0));
        free(m);
    }
    pthread_mutex_lock(&lc.mu);
    rt->has_domain = false;
    pthread_mutex_unlock(&lc.mu);
}

/* ---- provider helpers ---- */

static int
fail_provider(struct api_ctx *ctx, const char *what, int rc, char *err)
{
    api_fail_internal(ctx, "%s: %s", what, err ? err : strerror(-rc));
    free(err);
    return -1;
}

/* Builds and (unless paused) unpauses a domain for the VM. */
static int
create_domain(struct api_ctx *ctx, struct vm_rt *rt, bool paused)
{
    struct xenops_host *h = ctx->x->xenops;
    struct xenops_vm_spec *spec = spec_of(ctx->x, rt->ref);
    uint32_t domid = 0;
    char *err = NULL;
    int rc;

    if (!spec) {
        return api_fail_handle(ctx, CLS_VM, rt->ref);
    }
    rc = h->provider->domain_create(h, spec, &domid, &err);
    if (rc == -ENOMEM) {
        struct xenops_host_info info;
        char need[32], avail[32], *e2 = NULL;
        snprintf(need, sizeof need, "%lld", (long long) spec->memory_target);
        if (!xenops_host_info(h, &info, &e2)) {
            snprintf(avail, sizeof avail, "%lld", (long long) info.memory_free);
        } else {
            snprintf(avail, sizeof avail, "0");
        }
        free(e2);
        free(err);
        xenops_vm_spec_free(spec);
        return api_fail(ctx, ERR_HOST_NOT_ENOUGH_FREE_MEMORY, need, avail);
    }
    xenops_vm_spec_free(spec);
    if (rc) {
        return fail_provider(ctx, "cannot build the domain", rc, err);
    }
    if (!paused) {
        rc = h->provider->domain_unpause(h, domid, &err);
        if (rc) {
            h->provider->domain_destroy(h, domid, NULL);
            return fail_provider(ctx, "cannot unpause the domain", rc, err);
        }
    }
    pthread_mutex_lock(&lc.mu);
    rt->domid = domid;
    rt->has_domain = true;
    pthread_mutex_unlock(&lc.mu);
    return 0;
}

static int
destroy_domain(struct api_ctx *ctx, struct vm_rt *rt)
{
    struct xenops_host *h = ctx->x->xenops;
    char *err = NULL;
    int rc;

    if (!rt->has_domain) {
        return 0;
    }
    rc = h->provider->domain_destroy(h, rt->domid, &err);
    if (rc && rc != -ENOENT) {
        return fail_provider(ctx, "cannot destroy the domain", rc, err);
    }
    free(err);
    pthread_mutex_lock(&lc.mu);
    rt->has_domain = false;
    pthread_mutex_unlock(&lc.mu);
    return 0;
}

/* Waits until the domain has shut down; returns its reason, or -ETIMEDOUT. */
static int
wait_shutdown(struct api_ctx *ctx, struct vm_rt *rt, int64_t timeout_ms)
{
    struct xenops_host *h = ctx->x->xenops;
    int64_t start = time_mono_ms(), deadline = start + timeout_ms;

    for (;;) {
        struct xenops_domain_info info;
        char *err = NULL;
        uint64_t seq;
        int rc;

        pthread_mutex_lock(&lc.mu);
        seq = rt->seq;
        pthread_mutex_unlock(&lc.mu);
        memset(&info, 0, sizeof info);
        rc = h->provider->domain_info(h, rt->domid, &info, &err);
        free(err);
        xenops_domain_info_clear(&info);
        if (rc) {
            return rc;
        }
        if (info.power == XENOPS_SHUTDOWN) {
            return info.reason;
        }
        /* A safe point: nothing has changed yet, the guest keeps running. */
        if (api_task_cancelled(ctx)) {
            return -ECANCELED;
        }
        /* The progress of a wait is the share of the timeout used, which
         * moves, and never reaches the end before the guest answers. */
        api_task_set_progress(ctx, 0.1 + 0.8 * (double) (time_mono_ms() - start)
                                         / (double) MAX(timeout_ms, 1));
        pthread_mutex_lock(&lc.mu);
        while (rt->seq == seq) {
            struct timespec ts;
            int64_t left = deadline - time_mono_ms();
            if (left <= 0) {
                pthread_mutex_unlock(&lc.mu);
                return -ETIMEDOUT;
            }
            clock_gettime(CLOCK_REALTIME, &ts);
            left = MIN(left, 200);   /* re-poll: updates may be lost */
            ts.tv_sec += left / 1000;
            ts.tv_nsec += (left % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            if (pthread_cond_timedwait(&lc.cv, &lc.mu, &ts)) {
                break;
            }
        }
        pthread_mutex_unlock(&lc.mu);
    }
}

/* Asks the guest to shut down in the given way and waits for it. */
static int
clean_request(struct api_ctx *ctx, struct vm_rt *rt,
              enum xenops_shutdown_kind kind, int want_reason)
{
    struct xenops_host *h = ctx->x->xenops;
    char *err = NULL, timeout[32];
    int rc;

    rc = h->provider->domain_shutdown(h, rt->domid, kind, &err);
    if (rc == -EOPNOTSUPP) {
        free(err);
        return api_fail(ctx, ERR_VM_MISSING_PV_DRIVERS, rt->ref);
    }
    if (rc) {
        return fail_provider(ctx, "cannot ask the guest to shut down", rc, err);
    }
    rc = wait_shutdown(ctx, rt, lifecycle_shutdown_timeout_ms);
    if (rc == -ECANCELED) {
        return api_fail(ctx, ERR_TASK_CANCELLED, ctx->task);
    }
    if (rc == -ETIMEDOUT) {
        snprintf(timeout, sizeof timeout, "%.1f",
                 lifecycle_shutdown_timeout_ms / 1000.0);
        return api_fail(ctx, ERR_VM_SHUTDOWN_TIMEOUT, rt->ref, timeout);
    }
    if (rc < 0) {
        return fail_provider(ctx, "cannot watch the domain", rc, NULL);
    }
    if (rc != want_reason) {
        /* The guest did something else (crashed, rebooted...): that is
         * not the acknowledgement we asked for. */
        return api_fail(ctx, ERR_VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT, rt->ref);
    }
    return 0;
}

static char *
suspend_image_path(struct xapi *x, const struct vm_rt *rt)
{
    char *dir = xasprintf("%s/suspend", x->state_dir);
    char *path;

    mkdir(dir, 0700);
    path = xasprintf("%s/%s.img", dir, rt->uuid);
    free(dir);
    return path;
}

/* ---- the operations ---- */

static const char *const st_halted[] = { "Halted", NULL };
static const char *const st_running[] = { "Running", NULL };
static const char *const st_paused[] = { "Paused", NULL };
static const char *const st_suspended[] = { "Suspended", NULL };
static const char *const st_running_paused[] = { "Running", "Paused", NULL };
static const char *const st_any_on[] = { "Running", "Paused", "Suspended", NULL };

enum lc_op {
    OP_START, OP_HARD_SHUTDOWN, OP_CLEAN_SHUTDOWN, OP_SHUTDOWN,
    OP_CLEAN_REBOOT, OP_HARD_REBOOT, OP_PAUSE, OP_UNPAUSE, OP_SUSPEND,
    OP_RESUME,
};

static int
do_op(struct api_ctx *ctx, enum lc_op op, const char *ref, bool paused,
      const char *host)
{
    static const struct {
        const char *name;
        const char *const *states;
    } ops[] = {
        [OP_START] = { "start", st_halted },
        [OP_HARD_SHUTDOWN] = { "hard_shutdown", st_any_on },
        [OP_CLEAN_SHUTDOWN] = { "clean_shutdown", st_running },
        [OP_SHUTDOWN] = { "shutdown", st_any_on },
        [OP_CLEAN_REBOOT] = { "clean_reboot", st_running },
        [OP_HARD_REBOOT] = { "hard_reboot", st_running_paused },
        [OP_PAUSE] = { "pause", st_running },
        [OP_UNPAUSE] = { "unpause", st_paused },
        [OP_SUSPEND] = { "suspend", st_running },
        [OP_RESUME] = { "resume", st_suspended },
    };
    struct xapi *x = ctx->x;
    struct xenops_host *h = x->xenops;
    const struct xenops_provider *p = h->provider;
    struct vm_rt *rt;
    struct db_txn *txn;
    char *err = NULL, *path = NULL;
    const char *power;
    int rc = 0;

    /* A provider that cannot do this at all (a member is NULL) answers
     * before anything is marked. */
    if (!p->domain_create || !p->domain_destroy || !p->domain_unpause
        || !p->domain_pause || !p->domain_shutdown || !p->domain_info
        || !p->domain_save || !p->domain_restore) {
        return api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
    }
    rt = op_begin(ctx, ref, ops[op].name, ops[op].states);
    if (!rt) {
        return -1;
    }
    /* The state the operation starts from (op_begin checked it). */
    db_read_lock(x->db);
    power = db_lookup(x->db, CLS_VM, ref)->fields[F_VM_power_state]->u.str.s;
    power = !strcmp(power, "Suspended") ? "Suspended"
            : !strcmp(power, "Paused") ? "Paused" : "Running";
    db_read_unlock(x->db);
    /* Where it will run: after the VM's own checks, as in XenAPI. */
    if ((op == OP_START || op == OP_RESUME) && host_assert_can_boot(ctx, host)) {
        op_end(rt, db_begin(x->db));
        return -1;
    }

    switch (op) {
    case OP_START:
        api_task_set_progress(ctx, 0.2);
        rc = create_domain(ctx, rt, paused);
        api_task_set_progress(ctx, 0.9);
        txn = db_begin(x->db);
        if (!rc) {
            record_running(txn, x, rt, paused, true);
        }
        op_end(rt, txn);
        return rc;
    case OP_SHUTDOWN:
    case OP_CLEAN_SHUTDOWN:
        if (!strcmp(power, "Running")) {
            rc = clean_request(ctx, rt, XENOPS_SHUTDOWN_POWEROFF,
                               XENOPS_REASON_POWEROFF);
            if (rc && op == OP_SHUTDOWN
                && strcmp(ctx->error->u.arr.items[0]->u.str.s, "TASK_CANCELLED")) {
                /* VM.shutdown: a guest that does not shut down cleanly in
                 * time is stopped the hard way. */
                value_unref(ctx->error);
                ctx->error = NULL;
                rc = 0;
            }
        }
        if (!rc) {
            rc = destroy_domain(ctx, rt);
        }
        txn = db_begin(x->db);
        if (!rc) {
            record_stopped(txn, x, rt, "Halted");
        }
        op_end(rt, txn);
        if (!rc && !strcmp(power, "Suspended")) {
            path = suspend_image_path(x, rt);
            unlink(path);
        }
        break;
    case OP_HARD_SHUTDOWN:
        rc = destroy_domain(ctx, rt);
        txn = db_begin(x->db);
        if (!rc) {
            record_stopped(txn, x, rt, "Halted");
        }
        op_end(rt, txn);
        if (!rc && !strcmp(power, "Suspended")) {
            path = suspend_image_path(x, rt);
            unlink(path);
        }
        break;
    case OP_CLEAN_REBOOT:
    case OP_HARD_REBOOT: {
        char sub[48];
        /* A reboot shows its two steps as subtasks. */
        api_subtask_begin(ctx, "shutdown", sub);
        if (op == OP_CLEAN_REBOOT) {
            rc = clean_request(ctx, rt, XENOPS_SHUTDOWN_REBOOT,
                               XENOPS_REASON_REBOOT);
        }
        if (!rc) {
            rc = destroy_domain(ctx, rt);
        }
        api_subtask_end(ctx, sub, rc ? ctx->error : NULL);
        api_task_set_progress(ctx, 0.5);
        if (!rc) {
            api_subtask_begin(ctx, "start", sub);
            rc = create_domain(ctx, rt, false);
            api_subtask_end(ctx, sub, rc ? ctx->error : NULL);
        }
        txn = db_begin(x->db);
        if (!rc) {
            record_running(txn, x, rt, false, true);
        } else if (!rt->has_domain) {
            record_stopped(txn, x, rt, "Halted");
        }
        op_end(rt, txn);
        break;
    }
    case OP_PAUSE:
    case OP_UNPAUSE:
        rc = op == OP_PAUSE ? h->provider->domain_pause(h, rt->domid, &err)
                            : h->provider->domain_unpause(h, rt->domid, &err);
        if (rc) {
            fail_provider(ctx, op == OP_PAUSE ? "cannot pause" : "cannot unpause",
                          rc, err);
            rc = -1;
        }
        txn = db_begin(x->db);
        if (!rc) {
            record_running(txn, x, rt, op == OP_PAUSE, false);
        }
        op_end(rt, txn);
        break;
    case OP_SUSPEND:
        rc = clean_request(ctx, rt, XENOPS_SHUTDOWN_SUSPEND,
                           XENOPS_REASON_SUSPEND);
        if (!rc) {
            path = suspend_image_path(x, rt);
            rc = h->provider->domain_save(h, rt->domid, path, &err);
            if (rc) {
                fail_provider(ctx, "cannot save the suspend image", rc, err);
                rc = -1;
            }
        }
        if (!rc) {
            rc = destroy_domain(ctx, rt);
        }
        txn = db_begin(x->db);
        if (!rc) {
            record_stopped(txn, x, rt, "Suspended");
        }
        op_end(rt, txn);
        break;
    case OP_RESUME: {
        struct xenops_vm_spec *spec = spec_of(x, ref);
        uint32_t domid = 0;
        path = suspend_image_path(x, rt);
        rc = h->provider->domain_restore(h, spec, path, &domid, &err);
        xenops_vm_spec_free(spec);
        if (rc == -ENOMEM) {
            struct xenops_host_info hi;
            char need[32], avail[32], *e2 = NULL;
            free(err);
            db_read_lock(x->db);
            snprintf(need, sizeof need, "%lld", (long long)
                     db_lookup(x->db, CLS_VM, ref)->fields[F_VM_memory_dynamic_max]->u.i);
            db_read_unlock(x->db);
            snprintf(avail, sizeof avail, "%lld",
                     xenops_host_info(h, &hi, &e2) ? 0LL
                     : (long long) hi.memory_free);
            free(e2);
            rc = api_fail(ctx, ERR_HOST_NOT_ENOUGH_FREE_MEMORY, need, avail);
        } else if (rc) {
            rc = fail_provider(ctx, "cannot restore the suspend image", rc, err);
        } else if (!paused) {
            rc = h->provider->domain_unpause(h, domid, &err);
            if (rc) {
                h->provider->domain_destroy(h, domid, NULL);
                rc = fail_provider(ctx, "cannot unpause", rc, err);
            }
        }
        if (!rc) {
            pthread_mutex_lock(&lc.mu);
            rt->domid = domid;
            rt->has_domain = true;
            pthread_mutex_unlock(&lc.mu);
        }
        txn = db_begin(x->db);
        if (!rc) {
            record_running(txn, x, rt, paused, true);
        }
        op_end(rt, txn);
        if (!rc) {
            unlink(path);
        }
        break;
    }
    }
    free(path);
    return rc ? -1 : 0;
}

/* ---- running on the executor ---- */

struct lc_job {
    struct api_deferred *d;
    struct xapi *x;
    const struct api_message *msg;
    struct session *session;
    char method[96];
    char peer[64];
    enum lc_op op;
    char ref[48];
    char host[48];              /* start_on, resume_on: the host; else "" */
    bool paused;
};

static void
lc_job_run(void *aux)
{
    struct lc_job *job = aux;
    struct api_ctx ctx = { .x = job->x, .msg = job->msg,
                           .method = job->method, .session = job->session,
                           .peer = job->peer };
    int rc = do_op(&ctx, job->op, job->ref, job->paused,
                   job->host[0] ? job->host : NULL);

    if (rc) {
        api_complete(job->d, NULL, ctx.error);
    } else {
        api_complete(job->d, value_empty_string(), NULL);
    }
    session_unref(job->session);
    free(job);
}

/* Runs op now when already on the executor (an Async call), else defers
 * the answer and hands the work to the executor, so no HTTP worker waits
 * for a guest. */
static int
run_op(struct api_ctx *ctx, enum lc_op op, struct value *vm, bool paused,
       const char *host)
{
    struct lc_job *job;

    if (*ctx->task) {
        return do_op(ctx, op, vm->u.str.s, paused, host);
    }
    job = xcalloc(1, sizeof *job);
    job->x = ctx->x;
    job->msg = ctx->msg;
    job->session = session_dup(ctx->session);
    snprintf(job->method, sizeof job->method, "%s", ctx->method);
    snprintf(job->peer, sizeof job->peer, "%s", ctx->peer ? ctx->peer : "");
    job->op = op;
    snprintf(job->ref, sizeof job->ref, "%s", vm->u.str.s);
    job->paused = paused;
    snprintf(job->host, sizeof job->host, "%s", host ? host : "");
    job->d = api_defer(ctx);
    task_submit(ctx->x, lc_job_run, job);
    return API_DEFERRED;
}

static int
check_host(struct api_ctx *ctx, struct value *host)
{
    struct db_row *h;

    db_read_lock(ctx->x->db);
    h = db_lookup(ctx->x->db, CLS_host, host->u.str.s);
    db_read_unlock(ctx->x->db);
    if (!h) {
        return api_fail_handle(ctx, CLS_host, host->u.str.s);
    }
    return 0;
}

static int
api_vm_start(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return run_op(ctx, OP_START, args[1], args[2]->u.b, NULL);
}

static int
api_vm_start_on(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    if (check_host(ctx, args[2])) {
        return -1;
    }
    return run_op(ctx, OP_START, args[1], args[3]->u.b, args[2]->u.str.s);
}

static int
api_vm_clean_shutdown(struct api_ctx *ctx, struct value **args,
                      struct value **ret)
{
    return run_op(ctx, OP_CLEAN_SHUTDOWN, args[1], false, NULL);
}

static int
api_vm_hard_shutdown(struct api_ctx *ctx, struct value **args,
                     struct value **ret)
{
    return run_op(ctx, OP_HARD_SHUTDOWN, args[1], false, NULL);
}

static int
api_vm_shutdown(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return run_op(ctx, OP_SHUTDOWN, args[1], false, NULL);
}

static int
api_vm_clean_reboot(struct api_ctx *ctx, struct value **args,
                    struct value **ret)
{
    return run_op(ctx, OP_CLEAN_REBOOT, args[1], false, NULL);
}

static int
api_vm_hard_reboot(struct api_ctx *ctx, struct value **args,
                   struct value **ret)
{
    return run_op(ctx, OP_HARD_REBOOT, args[1], false, NULL);
}

static int
api_vm_pause(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return run_op(ctx, OP_PAUSE, args[1], false, NULL);
}

static int
api_vm_unpause(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return run_op(ctx, OP_UNPAUSE, args[1], false, NULL);
}

static int
api_vm_suspend(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return run_op(ctx, OP_SUSPEND, args[1], false, NULL);
}

static int
api_vm_resume(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return run_op(ctx, OP_RESUME, args[1], args[2]->u.b, NULL);
}

static int
api_vm_resume_on(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    if (check_host(ctx, args[2])) {
        return -1;
    }
    return run_op(ctx, OP_RESUME, args[1], args[3]->u.b, args[2]->u.str.s);
}

/* VM.set_is_a_template: the generic setter, plus what a template may do. */
static int
api_vm_set_is_a_template(struct api_ctx *ctx, struct value **args,
                         struct value **ret)
{
    struct db_txn *txn;

    if (api_generic(ctx, args, ret)) {
        return -1;
    }
    txn = db_begin(ctx->x->db);
    refresh_allowed(txn, args[1]->u.str.s, false);
    db_commit(txn);
    return 0;
}

/* VM.power_state_reset: the database only, for a VM whose domain is gone
 * (the host crashed, say); a domain this host still runs is destroyed. */
static int
api_vm_power_state_reset(struct api_ctx *ctx, struct value **args,
                         struct value **ret)
{
    static const char *const any[] = { "Halted", "Running", "Paused",
                                       "Suspended", NULL };
    struct vm_rt *rt = op_begin(ctx, args[1]->u.str.s, "power_state_reset", any);
    struct db_txn *txn;

    if (!rt) {
        return -1;
    }
    if (rt->has_domain) {
        ctx->x->xenops->provider->domain_destroy(ctx->x->xenops, rt->domid, NULL);
    }
    txn = db_begin(ctx->x->db);
    record_stopped(txn, ctx->x, rt, "Halted");
    op_end(rt, txn);
    return 0;
}

/* ---- reacting to what guests do ---- */

struct react_job {
    char uuid[40];
    enum xenops_update_kind kind;
};

/* A guest shut down, rebooted or crashed by itself: apply the VM's
 * actions_after_* setting. */
static void
react_domain(struct xapi *x, struct vm_rt *rt)
{
    struct xenops_host *h = x->xenops;
    struct api_ctx ctx = { .x = x, .method = "internal" };
    struct xenops_domain_info info;
    const char *action = "destroy";
    const char *names[] = { "actions_after_shutdown", "actions_after_reboot",
                            "actions_after_crash" };
    char *err = NULL, *act = NULL;
    bool preserve, running = false;
    struct db_row *vm;
    struct db_txn *txn;
    int which;

    memset(&info, 0, sizeof info);
    if (h->provider->domain_info(h, rt->domid, &info, &err) == -ENOENT) {
        /* Destroyed behind our back (xl destroy, say): the VM is halted. */
        free(err);
        xenops_domain_info_clear(&info);
        pthread_mutex_lock(&lc.mu);
        rt->has_domain = false;
        pthread_mutex_unlock(&lc.mu);
        txn = db_begin(x->db);
        record_stopped(txn, x, rt, "Halted");
        refresh_allowed(txn, rt->ref, false);
        db_commit(txn);
        return;
    }
    if (info.power != XENOPS_SHUTDOWN) {
        free(err);
        xenops_domain_info_clear(&info);
        return;
    }
    xenops_domain_info_clear(&info);
    which = info.reason == XENOPS_REASON_REBOOT ? 1
            : info.reason == XENOPS_REASON_CRASH ? 2 : 0;
    if (info.reason == XENOPS_REASON_SUSPEND) {
        return;     /* only VM.suspend suspends; it is waiting for this */
    }
    db_read_lock(x->db);
    vm = db_lookup(x->db, CLS_VM, rt->ref);
    if (vm) {
        int f = which == 0 ? F_VM_actions_after_shutdown
                : which == 1 ? F_VM_actions_after_reboot
                             : F_VM_actions_after_crash;
        act = xstrdup(vm->fields[f]->u.str.s);
    }
    db_read_unlock(x->db);
    if (!act) {
        return;
    }
    action = act;
    LOG_INFO("VM %s: guest %s; %s is %s", rt->uuid,
             which == 0 ? "shut down" : which == 1 ? "rebooted" : "crashed",
             names[which], action);
    preserve = !strcmp(action, "preserve");
    if (!preserve) {
        destroy_domain(&ctx, rt);
        running = strstr(action, "restart") && !create_domain(&ctx, rt, false);
    }
    txn = db_begin(x->db);
    if (preserve) {
        /* Keep the crashed domain for inspection; the VM shows Paused. */
        db_update(txn, CLS_VM, rt->ref, F_VM_power_state, value_string("Paused"));
    } else if (running) {
        record_running(txn, x, rt, false, true);
    } else {
        record_stopped(txn, x, rt, "Halted");
    }
    refresh_allowed(txn, rt->ref, false);
    db_commit(txn);
    value_unref(ctx.error);
    free(act);
}

static struct value *
kv_map(const struct xenops_kv *kv, size_t n)
{
    struct value *m = value_struct(n);

    for (size_t i = 0; i < n; i++) {
        value_struct_set(m, kv[i].key, value_string(kv[i].value));
    }
    return m;
}

/* Copies guest agent data and statistics into VM_guest_metrics and
 * VM_metrics. */
static void
react_metrics(struct xapi *x, struct vm_rt *rt, bool guest)
{
    struct xenops_host *h = x->xenops;
    struct xenops_domain_info info;
    struct db_txn *txn;
    struct db_row *vm;
    char *err = NULL;
    int64_t now = time_wall_ms() / 1000;

    memset(&info, 0, sizeof info);
    if (h->provider->domain_info(h, rt->domid, &info, &err)) {
        free(err);
        xenops_domain_info_clear(&info);
        return;
    }
    txn = db_begin(x->db);
    vm = db_lookup(x->db, CLS_VM, rt->ref);
    if (vm && db_lookup(x->db, CLS_VM_metrics, vm->fields[F_VM_metrics]->u.str.s)) {
        char *m = xstrdup(vm->fields[F_VM_metrics]->u.str.s);
        struct value *util = value_struct(info.vcpus_online);
        for (int i = 0; i < info.vcpus_online && i < 64; i++) {
            char key[16];
            snprintf(key, sizeof key, "%d", i);
            value_struct_put(util, key, value_double(info.vcpu_utilisation[i]));
        }
        db_update(txn, CLS_VM_metrics, m, F_VM_metrics_memory_actual,
                  value_int(info.memory_actual));
        db_update(txn, CLS_VM_metrics, m, F_VM_metrics_VCPUs_number,
                  value_int(info.vcpus_online));
        db_update(txn, CLS_VM_metrics, m, F_VM_metrics_VCPUs_utilisation, util);
        db_update(txn, CLS_VM_metrics, m, F_VM_metrics_last_updated,
                  value_datetime_secs(now));
        free(m);
    }
    vm = db_lookup(x->db, CLS_VM, rt->ref);
    if (vm && guest && info.guest.pv_drivers) {
        const char *gm = vm->fields[F_VM_guest_metrics]->u.str.s;
        char gref[48];
        struct value *ver = value_struct(2), *mem = value_struct(2);
        char buf[32];
        value_struct_put(ver, "version", value_string(info.guest.pv_drivers_version));
        snprintf(buf, sizeof buf, "%lld", (long long) info.guest.memory_free);
        value_struct_put(mem, "free", value_string(buf));
        snprintf(buf, sizeof buf, "%lld", (long long) info.guest.memory_total);
        value_struct_put(mem, "total", value_string(buf));
        if (!db_lookup(x->db, CLS_VM_guest_metrics, gm)) {
            struct value **f = xcalloc(api_classes[CLS_VM_guest_metrics].n_fields,
                                       sizeof *f);
            char uuid[40];
            db_new_ref(gref);
            uuid_generate(uuid);
            f[F_VM_guest_metrics_uuid] = value_string(uuid);
            db_insert(txn, CLS_VM_guest_metrics, gref, f, NULL);
            free(f);
            db_update(txn, CLS_VM, rt->ref, F_VM_guest_metrics, value_string(gref));
        } else {
            snprintf(gref, sizeof gref, "%s", gm);
        }
        db_update(txn, CLS_VM_guest_metrics, gref, F_VM_guest_metrics_os_version,
                  kv_map(info.guest.os_version, info.guest.n_os_version));
        db_update(txn, CLS_VM_guest_metrics, gref, F_VM_guest_metrics_networks,
                  kv_map(info.guest.networks, info.guest.n_networks));
        db_update(txn, CLS_VM_guest_metrics, gref,
                  F_VM_guest_metrics_PV_drivers_version, ver);
        db_update(txn, CLS_VM_guest_metrics, gref, F_VM_guest_metrics_memory, mem);
        db_update(txn, CLS_VM_guest_metrics, gref,
                  F_VM_guest_metrics_PV_drivers_detected, value_true());
        db_update(txn, CLS_VM_guest_metrics, gref,
                  F_VM_guest_metrics_PV_drivers_up_to_date, value_true());
        db_update(txn, CLS_VM_guest_metrics, gref, F_VM_guest_metrics_live,
                  value_true());
        db_update(txn, CLS_VM_guest_metrics, gref,
                  F_VM_guest_metrics_last_updated, value_datetime_secs(now));
    }
    db_commit(txn);
    xenops_domain_info_clear(&info);
}

static void
react_run(void *aux)
{
    struct react_job *job = aux;
    struct vm_rt *rt;
    bool busy;

    pthread_mutex_lock(&lc.mu);
    rt = strmap_get(&lc.by_uuid, job->uuid);
    busy = rt && rt->op[0];
    if (rt && !busy && rt->has_domain && job->kind == XENOPS_UPDATE_DOMAIN) {
        /* Claim the VM so no API operation starts while we react. */
        snprintf(rt->op, sizeof rt->op, "%s", "internal");
    }
    pthread_mutex_unlock(&lc.mu);
    if (!rt || !rt->has_domain) {
        free(job);
        return;
    }
    if (job->kind == XENOPS_UPDATE_DOMAIN) {
        if (!busy) {
            react_domain(lc.x, rt);
            pthread_mutex_lock(&lc.mu);
            rt->op[0] = '\0';
            pthread_cond_broadcast(&lc.cv);
            pthread_mutex_unlock(&lc.mu);
        }
    } else {
        react_metrics(lc.x, rt, job->kind == XENOPS_UPDATE_GUEST);
    }
    free(job);
}

static void
on_update(void *aux, const struct xenops_update *u)
{
    struct react_job *job;

    (void) aux;
    pthread_mutex_lock(&lc.mu);
    {
        struct vm_rt *rt = strmap_get(&lc.by_uuid, u->uuid);
        if (rt) {
            rt->seq++;
        }
    }
    pthread_cond_broadcast(&lc.cv);
    pthread_mutex_unlock(&lc.mu);
    job = xcalloc(1, sizeof *job);
    snprintf(job->uuid, sizeof job->uuid, "%s", u->uuid);
    job->kind = u->kind;
    task_submit(lc.x, react_run, job);
}

/* At start-up the database may say a VM runs whose domain is gone (the
 * simulator's domains die with the daemon; a Xen host may have rebooted):
 * find each domain again, or record the VM as halted. */
static void
resync(struct xapi *x)
{
    struct xenops_host *h = x->xenops;
    struct db_txn *txn = db_begin(x->db);

    /* Updating a row replaces it in place in the VM table, so the
     * iteration is not disturbed. */
    for (size_t i = 0; i < db_table_count(x->db, CLS_VM); i++) {
        struct db_row *vm = db_table_row(x->db, CLS_VM, i);
        const char *power = vm->fields[F_VM_power_state]->u.str.s;
        struct vm_rt *rt;
        uint32_t domid = 0;
        char *err = NULL;

        if (vm->fields[F_VM_is_control_domain]->u.b
            || (strcmp(power, "Running") && strcmp(power, "Paused"))) {
            continue;
        }
        pthread_mutex_lock(&lc.mu);
        rt = rt_get(vm->ref, vm->fields[F_VM_uuid]->u.str.s);
        pthread_mutex_unlock(&lc.mu);
        if (h->provider->domain_lookup
            && !h->provider->domain_lookup(h, rt->uuid, &domid, &err)) {
            rt->domid = domid;
            rt->has_domain = true;
            continue;
        }
        free(err);
        LOG_INFO("VM %s was %s but has no domain: now Halted", rt->uuid, power);
        record_stopped(txn, x, rt, "Halted");
        refresh_allowed(txn, rt->ref, false);
        db_update(txn, CLS_VM, rt->ref, F_VM_current_operations,
                  value_empty_struct());
    }
    db_commit(txn);
}

int
lifecycle_init(struct xapi *x)
{
    struct xenops_host *h = x->xenops;

    lc.x = x;
    strmap_init(&lc.by_ref);
    strmap_init(&lc.by_uuid);
    resync(x);
    if (h->provider->set_update_callback) {
        h->provider->set_update_callback(h, on_update, NULL);
    }
    return 0;
}

void
lifecycle_shutdown(struct xapi *x)
{
    struct xenops_host *h = x->xenops;
    const char *key;
    void *data;

    if (h && h->provider->set_update_callback) {
        h->provider->set_update_callback(h, NULL, NULL);
    }
    for (size_t pos = 0; strmap_next(&lc.by_ref, &pos, &key, &data);) {
        free(data);
    }
    strmap_destroy(&lc.by_ref);
    strmap_destroy(&lc.by_uuid);
}

const struct api_handler_entry lifecycle_handlers[] = {
    { "VM.clean_reboot", api_vm_clean_reboot },
    { "VM.clean_shutdown", api_vm_clean_shutdown },
    { "VM.hard_reboot", api_vm_hard_reboot },
    { "VM.hard_shutdown", api_vm_hard_shutdown },
    { "VM.set_is_a_template", api_vm_set_is_a_template },
    { "VM.pause", api_vm_pause },
    { "VM.power_state_reset", api_vm_power_state_reset },
    { "VM.resume", api_vm_resume },
    { "VM.resume_on", api_vm_resume_on },
    { "VM.shutdown", api_vm_shutdown },
    { "VM.start", api_vm_start },
    { "VM.start_on", api_vm_start_on },
    { "VM.suspend", api_vm_suspend },
    { "VM.unpause", api_vm_unpause },
    { NULL, NULL },
};
