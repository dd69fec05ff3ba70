/* lifecycle.c — the VM power operations: start, shutdown, reboot, pause,
 * suspend, resume, pool_migrate (to this host) and their variants, on top
 * of the xenops provider.
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
 * not involve a domain.
 *
 * Disks: every time a domain is built (start, reboot, resume, a restart
 * after a crash) each VBD's block server is started by the storage layer
 * (storage_vbd_attach) and the domain's disk backend is pointed at it;
 * every time a domain goes away the block servers are stopped again.
 * VM.pool_migrate to this same host is the exception: the new domain is
 * pointed at the block servers that already serve the old one (they
 * accept several clients), so the disks are never detached.  A
 * suspended VM's memory image lives in a VDI of type "suspend"
 * (VM.suspend_VDI), as in XenServer, so it follows the storage rather
 * than the host. */
#include <config.h>
#include "lifecycle.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage.h"
#include "storage/blockdev.h"
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
    "pool_migrate", NULL,
};
static const char *const ops_paused[] = {
    "unpause", "hard_shutdown", "hard_reboot", "shutdown",
    "get_boot_record", "power_state_reset", "changing_dynamic_range", NULL,
};
/* No clone or copy: the memory image belongs to this VM (the domain it
 * restores carries the VM's identity), so VM.clone and VM.copy want a
 * halted VM. */
static const char *const ops_suspended[] = {
    "resume", "resume_on", "hard_shutdown", "shutdown", "snapshot",
    "get_boot_record", "power_state_reset", NULL,
};
static const char *const ops_template[] = {
    "clone", "copy", "provision", "get_boot_record", NULL,
};
/* A snapshot is a template that can also be reverted to. */
static const char *const ops_snapshot[] = {
    "revert", "clone", "copy", "export", "get_boot_record", NULL,
};

/* What a client may do with a VM in this state; empty while another
 * operation runs, as in XenAPI. */
static struct value *
allowed_ops_ex(const char *power, bool template, bool snapshot, bool control,
               bool busy)
{
    const char *const *list = NULL;
    struct value *arr = value_array(24);

    if (busy || control) {
        return arr;
    }
    if (snapshot) {
        list = ops_snapshot;
    } else if (template) {
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

static struct value *
allowed_ops(const char *power, bool template, bool control, bool busy)
{
    return allowed_ops_ex(power, template, false, control, busy);
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
              allowed_ops_ex(row->fields[F_VM_power_state]->u.str.s,
                             row->fields[F_VM_is_a_template]->u.b,
                             row->fields[F_VM_is_a_snapshot]->u.b,
                             row->fields[F_VM_is_control_domain]->u.b, busy));
}

/* ---- operation begin / end ---- */

/* Checks that the VM exists, is not the control domain nor (unless
 * templates_ok) a template, is
 * in one of the allowed power states, and has no operation in progress;
 * then marks op as in progress.  Returns the run-time record, or NULL after
 * api_fail(). */
static struct vm_rt *
op_begin_ex(struct api_ctx *ctx, const char *ref, const char *op,
            const char *const *states, bool templates_ok)
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
    if (row->fields[F_VM_is_a_template]->u.b && !templates_ok) {
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

static struct vm_rt *
op_begin(struct api_ctx *ctx, const char *ref, const char *op,
         const char *const *states)
{
    return op_begin_ex(ctx, ref, op, states, false);
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
        if (!b) {
            continue;
        }
        v->ref = xstrdup(b->ref);
        v->device = xstrdup(b->fields[F_VBD_device]->u.str.s);
        v->position = atoi(b->fields[F_VBD_userdevice]->u.str.s);
        v->read_only = !strcmp(b->fields[F_VBD_mode]->u.str.s, "RO");
        v->cdrom = !strcmp(b->fields[F_VBD_type]->u.str.s, "CD");
        v->empty = b->fields[F_VBD_empty]->u.b
                   || !db_lookup(db, CLS_VDI, b->fields[F_VBD_VDI]->u.str.s);
        /* The target and format come from attach_disks(), once the
         * storage layer has started the disk's block server. */
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

/* ---- disks ---- */

/* Stops the block servers of the VM's VBDs (no-op for those without). */
static void
detach_disks(struct xapi *x, const char *ref)
{
    struct value *vbds = NULL;
    struct db_row *vm;

    db_read_lock(x->db);
    vm = db_lookup(x->db, CLS_VM, ref);
    if (vm) {
        vbds = value_ref(vm->fields[F_VM_VBDs]);
    }
    db_read_unlock(x->db);
    for (size_t i = 0; vbds && i < vbds->u.arr.n; i++) {
        storage_vbd_detach(x, vbds->u.arr.items[i]->u.str.s);
    }
    value_unref(vbds);
}

/* Starts the block server of every VBD in spec and points the domain's
 * disk backend at it; an empty CD drive gets no target.  On failure the
 * servers already started are stopped again. */
static int
attach_disks(struct api_ctx *ctx, const char *vm_ref,
             struct xenops_vm_spec *spec)
{
    for (size_t i = 0; i < spec->n_vbds; i++) {
        struct xenops_vbd_spec *v = &spec->vbds[i];
        char *target = NULL, *format = NULL, *err = NULL;
        char vdi[48] = "OpaqueRef:NULL", sr[48] = "OpaqueRef:NULL";
        struct db_row *b, *vr;
        int rc;

        /* No retry: storage.c makes an attach wait for a GC step that
         * may hold the image open, so every failure here is final. */
        rc = storage_vbd_attach(ctx->x, v->ref, &target, &format, &err);
        if (!rc) {
            free(v->target);
            free(v->format);
            v->target = target;
            v->format = format ? format : xstrdup("raw");
            v->empty = !target;
            continue;
        }
        db_read_lock(ctx->x->db);
        b = db_lookup(ctx->x->db, CLS_VBD, v->ref);
        if (b) {
            snprintf(vdi, sizeof vdi, "%s", b->fields[F_VBD_VDI]->u.str.s);
        }
        vr = db_lookup(ctx->x->db, CLS_VDI, vdi);
        if (vr) {
            snprintf(sr, sizeof sr, "%s", vr->fields[F_VDI_SR]->u.str.s);
        }
        db_read_unlock(ctx->x->db);
        LOG_WARN("VM %s: cannot attach VBD %s: %s", spec->uuid, v->ref,
                 err ? err : strerror(-rc));
        free(err);
        detach_disks(ctx->x, vm_ref);
        switch (rc) {
        case -EBUSY:
            /* Another VM writes the disk. */
            return api_fail(ctx, ERR_VDI_IN_USE, vdi, "start");
        case -EROFS:
            return api_fail(ctx, ERR_VDI_READONLY, vdi);
        case -ENODEV:
            return api_fail(ctx, ERR_SR_NOT_ATTACHED, sr);
        case -ENOENT:
            /* The image is gone from the storage (or the VBD names no
             * VDI): XenAPI's VDI_MISSING [sr, vdi]. */
            return api_fail(ctx, ERR_VDI_MISSING, sr, vdi);
        default:
            return api_fail(ctx, ERR_VM_REQUIRES_VDI, vm_ref, vdi);
        }
    }
    return 0;
}

/* The VM's spec with its disks attached, or NULL after api_fail(). */
static struct xenops_vm_spec *
attached_spec(struct api_ctx *ctx, const char *ref)
{
    struct xenops_vm_spec *spec = spec_of(ctx->x, ref);

    if (!spec) {
        api_fail_handle(ctx, CLS_VM, ref);
        return NULL;
    }
    if (attach_disks(ctx, ref, spec)) {
        xenops_vm_spec_free(spec);
        return NULL;
    }
    return spec;
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
    struct xenops_vm_spec *spec = attached_spec(ctx, rt->ref);
    uint32_t domid = 0;
    char *err = NULL;
    int rc;

    if (!spec) {
        return -1;
    }
    rc = h->provider->domain_create(h, spec, &domid, &err);
    if (rc) {
        detach_disks(ctx->x, rt->ref);
    }
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
            detach_disks(ctx->x, rt->ref);
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
    detach_disks(ctx->x, rt->ref);
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

/* ---- memory images in VDIs ---- */

/* A suspend VDI holds a header (a magic string and the image's length,
 * since the VDI is rounded up to whole MiB) and the image after it, so
 * that a clone or copy of the VDI stays readable without the database. */
#define IMAGE_MAGIC "XAPI-SUSPEND-IMAGE-1"
#define IMAGE_HEADER 512
#define IMAGE_CHUNK (1 << 20)

char *
lifecycle_image_path(struct xapi *x, const char *vm_uuid)
{
    char *dir = xasprintf("%s/suspend", x->state_dir);
    char suffix[40], *path;

    mkdir(dir, 0700);
    uuid_generate(suffix);
    path = xasprintf("%s/%s.%.8s.img", dir, vm_uuid, suffix);
    free(dir);
    return path;
}

/* The image file of a VM suspended by an older release, which kept it in
 * STATE_DIR/suspend/UUID.img instead of a VDI. */
static char *
legacy_image_path(struct xapi *x, const char *vm_uuid)
{
    return xasprintf("%s/suspend/%s.img", x->state_dir, vm_uuid);
}

static bool
is_null_ref(const char *ref)
{
    return !ref || !*ref || !strcmp(ref, "OpaqueRef:NULL");
}

/* Where a VM's memory image goes: pool.suspend_image_SR, else the SR of
 * the VM's first disk, else pool.default_SR; db read lock held. */
static const char *
suspend_sr_of(struct xapi *x, const struct db_row *vm)
{
    struct db_row *pool = db_lookup(x->db, CLS_pool, x->pool_ref);
    const struct value *vbds = vm->fields[F_VM_VBDs];
    const char *sr, *best_sr = NULL;
    int best = -1;

    sr = pool ? pool->fields[F_pool_suspend_image_SR]->u.str.s : NULL;
    if (!is_null_ref(sr) && db_lookup(x->db, CLS_SR, sr)) {
        return sr;
    }
    for (size_t i = 0; i < vbds->u.arr.n; i++) {
        struct db_row *b = db_lookup(x->db, CLS_VBD, vbds->u.arr.items[i]->u.str.s);
        struct db_row *vdi;
        int pos;
        if (!b || strcmp(b->fields[F_VBD_type]->u.str.s, "Disk")
            || b->fields[F_VBD_empty]->u.b) {
            continue;
        }
        vdi = db_lookup(x->db, CLS_VDI, b->fields[F_VBD_VDI]->u.str.s);
        pos = atoi(b->fields[F_VBD_userdevice]->u.str.s);
        if (vdi && db_lookup(x->db, CLS_SR, vdi->fields[F_VDI_SR]->u.str.s)
            && (best < 0 || pos < best)) {
            best = pos;
            best_sr = vdi->fields[F_VDI_SR]->u.str.s;
        }
    }
    if (best_sr) {
        return best_sr;
    }
    sr = pool ? pool->fields[F_pool_default_SR]->u.str.s : NULL;
    if (!is_null_ref(sr) && db_lookup(x->db, CLS_SR, sr)) {
        return sr;
    }
    return NULL;
}

static void
put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char) (v >> (8 * i));
    }
}

static uint64_t
get_le64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* Writes all of buf to fd. */
static int
write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t r = write(fd, p, len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        p += r;
        len -= (size_t) r;
    }
    return 0;
}

/* Copies the file at fd (len bytes) into the opened VDI after the
 * header. */
static int
write_image(struct blockdev *dev, int fd, uint64_t len)
{
    unsigned char *buf = xcalloc(1, IMAGE_CHUNK);
    uint64_t done = 0;
    int rc;

    memcpy(buf, IMAGE_MAGIC, sizeof IMAGE_MAGIC);
    put_le64(buf + 32, len);
    rc = dev->ops->write(dev, buf, 0, IMAGE_HEADER);
    while (!rc && done < len) {
        size_t n = (size_t) MIN((uint64_t) IMAGE_CHUNK, len - done);
        ssize_t r = pread(fd, buf, n, (off_t) done);
        if (r <= 0) {
            rc = r < 0 ? -errno : -EIO;
            break;
        }
        rc = dev->ops->write(dev, buf, IMAGE_HEADER + done, (size_t) r);
        done += (uint64_t) r;
    }
    if (!rc && dev->ops->flush) {
        rc = dev->ops->flush(dev);
    }
    free(buf);
    return rc;
}

int
lifecycle_image_to_vdi(struct api_ctx *ctx, const char *vm_ref,
                       const char *sr, const char *path, char *ret_vdi)
{
    struct xapi *x = ctx->x;
    struct storage_vdi_handle *h = NULL;
    struct storage_vdi_spec spec;
    char sr_ref[48] = "", vdi[48] = "", *name = NULL;
    struct db_row *vm;
    struct stat st;
    int fd = -1, rc = -1, r;

    db_read_lock(x->db);
    vm = db_lookup(x->db, CLS_VM, vm_ref);
    if (vm) {
        const char *pick = is_null_ref(sr) ? suspend_sr_of(x, vm) : sr;
        snprintf(sr_ref, sizeof sr_ref, "%s", pick ? pick : "");
        name = xasprintf("Suspend image of %s",
                         vm->fields[F_VM_name_label]->u.str.s);
    }
    db_read_unlock(x->db);
    if (!vm) {
        return api_fail_handle(ctx, CLS_VM, vm_ref);
    }
    if (!sr_ref[0]) {
        api_fail(ctx, ERR_VM_NO_SUSPEND_SR, vm_ref);
        goto out;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st)) {
        api_fail_internal(ctx, "cannot read the memory image %s: %s", path,
                          strerror(errno));
        goto out;
    }
    memset(&spec, 0, sizeof spec);
    spec.sr = sr_ref;
    spec.name_label = name;
    spec.name_description = "Memory image of a suspended VM or checkpoint";
    /* Whole MiB: every SR driver can make a disk of that size. */
    spec.virtual_size = (int64_t) ((IMAGE_HEADER + (uint64_t) st.st_size
                                    + (1 << 20) - 1) & ~(uint64_t) ((1 << 20) - 1));
    spec.type = "suspend";
    if (storage_vdi_create(ctx, &spec, vdi)) {
        /* XenServer names the suspend SR when the image does not fit. */
        if (ctx->error && !strcmp(ctx->error->u.arr.items[0]->u.str.s, "SR_FULL")) {
            value_unref(ctx->error);
            ctx->error = NULL;
            api_fail(ctx, ERR_SR_SUSPEND_SPACE_INSUFFICIENT, sr_ref);
        }
        vdi[0] = '\0';
        goto out;
    }
    if (storage_vdi_open(ctx, vdi, true, NULL, &h)) {
        goto out;
    }
    r = write_image(storage_vdi_blockdev(h), fd, (uint64_t) st.st_size);
    if (r) {
        api_fail_internal(ctx, "cannot write the memory image into VDI %s: %s",
                          vdi, strerror(-r));
        goto out;
    }
    storage_vdi_close(h);
    h = NULL;
    snprintf(ret_vdi, 48, "%s", vdi);
    vdi[0] = '\0';
    rc = 0;
out:
    storage_vdi_close(h);
    if (vdi[0]) {
        /* Undo: no half-written image stays behind. */
        struct value *keep = ctx->error;
        ctx->error = NULL;
        storage_vdi_destroy(ctx, vdi);
        value_unref(ctx->error);
        ctx->error = keep;
    }
    if (fd >= 0) {
        close(fd);
    }
    free(name);
    return rc;
}

int
lifecycle_image_from_vdi(struct api_ctx *ctx, const char *vdi_ref,
                         const char *path)
{
    struct storage_vdi_handle *h = NULL;
    unsigned char *buf = xcalloc(1, IMAGE_CHUNK);
    struct blockdev *dev;
    uint64_t len, done = 0;
    int fd = -1, rc = -1, r;

    if (storage_vdi_open(ctx, vdi_ref, false, NULL, &h)) {
        goto out;
    }
    dev = storage_vdi_blockdev(h);
    r = dev->ops->read(dev, buf, 0, IMAGE_HEADER);
    len = get_le64(buf + 32);
    if (r || memcmp(buf, IMAGE_MAGIC, sizeof IMAGE_MAGIC)
        || dev->size < IMAGE_HEADER || len > dev->size - IMAGE_HEADER) {
        api_fail(ctx, ERR_SUSPEND_IMAGE_NOT_ACCESSIBLE, vdi_ref);
        goto out;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        api_fail_internal(ctx, "cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    while (done < len) {
        size_t n = (size_t) MIN((uint64_t) IMAGE_CHUNK, len - done);
        r = dev->ops->read(dev, buf, IMAGE_HEADER + done, n);
        if (r || write_all(fd, buf, n)) {
            api_fail_internal(ctx, "cannot copy the memory image of VDI %s",
                              vdi_ref);
            goto out;
        }
        done += n;
    }
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
        if (rc) {
            unlink(path);
        }
    }
    storage_vdi_close(h);
    free(buf);
    return rc;
}

/* Destroys a suspend VDI that is no longer needed and clears the VM's
 * suspend_VDI; a failure leaves the VDI for the operator and is logged. */
static void
drop_suspend_vdi(struct xapi *x, const char *vm_ref)
{
    struct api_ctx ctx = { .x = x, .method = "internal" };
    char vdi[48] = "";
    struct db_txn *txn;
    struct db_row *vm;

    txn = db_begin(x->db);
    vm = db_lookup(x->db, CLS_VM, vm_ref);
    if (vm) {
        snprintf(vdi, sizeof vdi, "%s", vm->fields[F_VM_suspend_VDI]->u.str.s);
        db_update(txn, CLS_VM, vm_ref, F_VM_suspend_VDI, value_null_ref());
    }
    db_commit(txn);
    if (!is_null_ref(vdi) && storage_vdi_destroy(&ctx, vdi)) {
        LOG_WARN("VM %s: suspend VDI %s not destroyed", vm_ref, vdi);
    }
    value_unref(ctx.error);
}

/* Asks the guest to suspend, saves its memory image to path and destroys
 * the domain, detaching its disks. */
static int
suspend_domain(struct api_ctx *ctx, struct vm_rt *rt, const char *path)
{
    struct xenops_host *h = ctx->x->xenops;
    char *err = NULL;
    int rc;

    rc = clean_request(ctx, rt, XENOPS_SHUTDOWN_SUSPEND, XENOPS_REASON_SUSPEND);
    if (rc) {
        return rc;
    }
    rc = h->provider->domain_save(h, rt->domid, path, &err);
    if (rc) {
        return fail_provider(ctx, "cannot save the memory image", rc, err);
    }
    return destroy_domain(ctx, rt);
}

/* Builds a domain from the memory image at path with the VM's disks
 * attached, and unpauses it unless paused. */
static int
restore_domain(struct api_ctx *ctx, struct vm_rt *rt, const char *path,
               bool paused)
{
    struct xapi *x = ctx->x;
    struct xenops_host *h = x->xenops;
    struct xenops_vm_spec *spec = attached_spec(ctx, rt->ref);
    uint32_t domid = 0;
    char *err = NULL;
    int rc;

    if (!spec) {
        return -1;
    }
    rc = h->provider->domain_restore(h, spec, path, &domid, &err);
    if (rc == -ENOMEM) {
        struct xenops_host_info hi;
        char need[32], avail[32], *e2 = NULL;
        free(err);
        snprintf(need, sizeof need, "%lld", (long long) spec->memory_target);
        snprintf(avail, sizeof avail, "%lld",
                 xenops_host_info(h, &hi, &e2) ? 0LL
                 : (long long) hi.memory_free);
        free(e2);
        rc = api_fail(ctx, ERR_HOST_NOT_ENOUGH_FREE_MEMORY, need, avail);
    } else if (rc) {
        rc = fail_provider(ctx, "cannot restore the memory image", rc, err);
    } else if (!paused) {
        rc = h->provider->domain_unpause(h, domid, &err);
        if (rc) {
            h->provider->domain_destroy(h, domid, NULL);
            rc = fail_provider(ctx, "cannot unpause", rc, err);
        }
    }
    xenops_vm_spec_free(spec);
    if (rc) {
        detach_disks(x, rt->ref);
        return -1;
    }
    pthread_mutex_lock(&lc.mu);
    rt->domid = domid;
    rt->has_domain = true;
    pthread_mutex_unlock(&lc.mu);
    return 0;
}

/* ---- for the other VM modules (lifecycle.h) ---- */

struct vm_rt *
lifecycle_op_begin(struct api_ctx *ctx, const char *ref, const char *op,
                   const char *const *states, bool templates_ok)
{
    return op_begin_ex(ctx, ref, op, states, templates_ok);
}

void
lifecycle_op_end(struct vm_rt *rt, struct db_txn *txn)
{
    op_end(rt, txn ? txn : db_begin(lc.x->db));
}

bool
lifecycle_has_domain(struct vm_rt *rt)
{
    bool has;

    pthread_mutex_lock(&lc.mu);
    has = rt->has_domain;
    pthread_mutex_unlock(&lc.mu);
    return has;
}

int
lifecycle_stop(struct api_ctx *ctx, struct vm_rt *rt)
{
    struct db_txn *txn;

    if (destroy_domain(ctx, rt)) {
        return -1;
    }
    txn = db_begin(ctx->x->db);
    record_stopped(txn, ctx->x, rt, "Halted");
    db_commit(txn);
    return 0;
}

int
lifecycle_suspend_to_file(struct api_ctx *ctx, struct vm_rt *rt,
                          const char *path)
{
    return suspend_domain(ctx, rt, path);
}

int
lifecycle_restore_from_file(struct api_ctx *ctx, struct vm_rt *rt,
                            const char *path, bool paused)
{
    struct db_txn *txn;

    if (restore_domain(ctx, rt, path, paused)) {
        return -1;
    }
    txn = db_begin(ctx->x->db);
    record_running(txn, ctx->x, rt, paused, false);
    db_commit(txn);
    return 0;
}

void
lifecycle_record_stopped(struct xapi *x, struct vm_rt *rt, const char *power)
{
    struct db_txn *txn = db_begin(x->db);

    record_stopped(txn, x, rt, power);
    db_commit(txn);
}

/* ---- localhost migration ---- */

/* The sending half of a migration, run on its own thread because the
 * stream has a reader and a writer that must progress together. */
struct migrate_sender {
    struct xenops_host *host;
    uint32_t domid;
    int fd;
    int rc;
    char *err;
};

static void *
migrate_send_thread(void *aux)
{
    struct migrate_sender *ms = aux;

    ms->rc = ms->host->provider->migrate_send(ms->host, ms->domid, ms->fd,
                                              &ms->err);
    /* Closing our end lets a receiver still waiting for data see the end
     * of the stream instead of blocking for ever. */
    close(ms->fd);
    ms->fd = -1;
    return NULL;
}

/* The VM's spec with each disk pointed at the block server that already
 * serves the running domain, or NULL after api_fail(). */
static struct xenops_vm_spec *
served_spec(struct api_ctx *ctx, const char *ref)
{
    struct xenops_vm_spec *spec = spec_of(ctx->x, ref);

    if (!spec) {
        api_fail_handle(ctx, CLS_VM, ref);
        return NULL;
    }
    for (size_t i = 0; i < spec->n_vbds; i++) {
        struct xenops_vbd_spec *v = &spec->vbds[i];
        char *target = storage_vbd_target(ctx->x, v->ref);

        free(v->target);
        free(v->format);
        v->target = target;
        v->format = xstrdup(target ? "nbd" : "raw");
        v->empty = !target;
    }
    return spec;
}

/* Moves the VM's running domain into a new domain on this host through a
 * migration stream (migrate_send into migrate_receive over a socketpair)
 * and unpauses the new one.  On return rt says where the VM is: on the
 * new domain after success; after a failure on the old domain if it is
 * still alive, else nowhere (its disks detached), as XenServer leaves a
 * VM whose source domain went away halted. */
static int
migrate_domain(struct api_ctx *ctx, struct vm_rt *rt)
{
    struct xapi *x = ctx->x;
    struct xenops_host *h = x->xenops;
    const struct xenops_provider *p = h->provider;
    struct xenops_vm_spec *spec = NULL;
    struct migrate_sender ms = { .host = h, .domid = rt->domid, .fd = -1 };
    struct xenops_domain_info info;
    pthread_t sender;
    bool sending = false, alive;
    uint32_t new_domid = 0;
    char *err = NULL, *what = NULL;
    int fds[2] = { -1, -1 };
    int rc, r;

    spec = served_spec(ctx, rt->ref);
    if (!spec) {
        rc = -1;
        goto out;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds)) {
        rc = -errno;
        what = xasprintf("cannot make the migration stream: %s",
                         strerror(-rc));
        goto fail;
    }
    ms.fd = fds[0];
    fds[0] = -1;
    r = pthread_create(&sender, NULL, migrate_send_thread, &ms);
    if (r) {
        close(ms.fd);
        ms.fd = -1;
        rc = -r;
        what = xasprintf("cannot start the sender: %s", strerror(r));
        goto fail;
    }
    sending = true;
    api_task_set_progress(ctx, 0.2);
    rc = p->migrate_receive(h, spec, fds[1], &new_domid, &err);
    close(fds[1]);
    fds[1] = -1;
    pthread_join(sender, NULL);
    sending = false;
    api_task_set_progress(ctx, 0.7);
    if (!rc && !ms.rc) {
        rc = p->domain_unpause(h, new_domid, &err);
        if (!rc) {
            LOG_INFO("VM %s: migrated from domain %"PRIu32" to %"PRIu32,
                     rt->uuid, rt->domid, new_domid);
            pthread_mutex_lock(&lc.mu);
            rt->domid = new_domid;
            rt->has_domain = true;
            pthread_mutex_unlock(&lc.mu);
            goto out;
        }
        what = xasprintf("cannot unpause the new domain: %s",
                         err ? err : strerror(-rc));
        /* The old domain is gone: the new one is destroyed below and the
         * VM ends halted. */
        p->domain_destroy(h, new_domid, NULL);
        goto fail;
    }
    if (!rc) {
        /* The stream arrived but the sender failed afterwards: keep the
         * old domain if it survived, never two copies of the guest. */
        p->domain_destroy(h, new_domid, NULL);
        rc = ms.rc;
    }
    what = xasprintf("%s", ms.rc ? (ms.err ? ms.err : strerror(-ms.rc))
                     : (err ? err : strerror(-rc)));
fail:
    memset(&info, 0, sizeof info);
    alive = !p->domain_info(h, rt->domid, &info, NULL)
            && info.power != XENOPS_SHUTDOWN;
    xenops_domain_info_clear(&info);
    if (!alive) {
        LOG_WARN("VM %s: domain %"PRIu32" gone after a failed migration",
                 rt->uuid, rt->domid);
        pthread_mutex_lock(&lc.mu);
        rt->has_domain = false;
        pthread_mutex_unlock(&lc.mu);
        detach_disks(x, rt->ref);
    }
    LOG_WARN("VM %s: migration failed: %s", rt->uuid, what);
    api_fail(ctx, ERR_VM_MIGRATE_FAILED, rt->ref, x->host_ref, x->host_ref,
             what);
    rc = -1;
out:
    if (sending) {
        pthread_join(sender, NULL);
    }
    if (fds[0] >= 0) {
        close(fds[0]);
    }
    if (fds[1] >= 0) {
        close(fds[1]);
    }
    free(ms.err);
    free(err);
    free(what);
    xenops_vm_spec_free(spec);
    return rc;
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
    OP_RESUME, OP_POOL_MIGRATE,
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
        [OP_POOL_MIGRATE] = { "pool_migrate", st_running },
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
    if (op == OP_POOL_MIGRATE && (!p->migrate_send || !p->migrate_receive)) {
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
        /* fall through */
    case OP_HARD_SHUTDOWN:
        if (!rc) {
            rc = destroy_domain(ctx, rt);
        }
        txn = db_begin(x->db);
        if (!rc) {
            record_stopped(txn, x, rt, "Halted");
        }
        op_end(rt, txn);
        if (!rc && !strcmp(power, "Suspended")) {
            /* The memory image of a suspended VM that is shut down is
             * of no use any more. */
            drop_suspend_vdi(x, ref);
            path = legacy_image_path(x, rt->uuid);
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
    case OP_SUSPEND: {
        char vdi[48] = "";
        path = lifecycle_image_path(x, rt->uuid);
        rc = suspend_domain(ctx, rt, path);
        api_task_set_progress(ctx, 0.5);
        if (!rc) {
            rc = lifecycle_image_to_vdi(ctx, ref, NULL, path, vdi);
            if (rc) {
                /* The image could not be kept: the guest goes on running
                 * from it rather than being lost. */
                struct api_ctx again = { .x = x, .method = "internal" };
                if (restore_domain(&again, rt, path, false)) {
                    LOG_WARN("VM %s: cannot resume after a failed suspend",
                             rt->uuid);
                }
                value_unref(again.error);
            }
        }
        txn = db_begin(x->db);
        if (!rc) {
            record_stopped(txn, x, rt, "Suspended");
            db_update(txn, CLS_VM, ref, F_VM_suspend_VDI, value_string(vdi));
        } else if (rt->has_domain) {
            record_running(txn, x, rt, false, false);
        } else {
            record_stopped(txn, x, rt, "Halted");
        }
        op_end(rt, txn);
        unlink(path);
        break;
    }
    case OP_RESUME: {
        char vdi[48] = "";
        db_read_lock(x->db);
        snprintf(vdi, sizeof vdi, "%s", db_lookup(x->db, CLS_VM, ref)
                 ->fields[F_VM_suspend_VDI]->u.str.s);
        db_read_unlock(x->db);
        if (!is_null_ref(vdi)) {
            path = lifecycle_image_path(x, rt->uuid);
            rc = lifecycle_image_from_vdi(ctx, vdi, path);
        } else {
            path = legacy_image_path(x, rt->uuid);
            if (access(path, R_OK)) {
                rc = api_fail(ctx, ERR_VM_HAS_NO_SUSPEND_VDI, ref);
            }
        }
        api_task_set_progress(ctx, 0.4);
        if (!rc) {
            rc = restore_domain(ctx, rt, path, paused);
        }
        txn = db_begin(x->db);
        if (!rc) {
            record_running(txn, x, rt, paused, true);
        }
        op_end(rt, txn);
        if (!rc || !is_null_ref(vdi)) {
            unlink(path);
        }
        if (!rc) {
            drop_suspend_vdi(x, ref);
        }
        break;
    }
    case OP_POOL_MIGRATE:
        api_task_set_progress(ctx, 0.1);
        rc = migrate_domain(ctx, rt);
        api_task_set_progress(ctx, 0.9);
        txn = db_begin(x->db);
        if (rt->has_domain) {
            record_running(txn, x, rt, false, false);
        } else {
            record_stopped(txn, x, rt, "Halted");
        }
        op_end(rt, txn);
        break;
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

/* VM.pool_migrate: on this one-host pool the only destination is this
 * host, so the VM moves into a new domain here (XenServer's localhost
 * migration).  The options (live, force, copy, compress) change nothing:
 * the stream is always the live one. */
static int
api_vm_pool_migrate(struct api_ctx *ctx, struct value **args,
                    struct value **ret)
{
    if (check_host(ctx, args[2])) {
        return -1;
    }
    return run_op(ctx, OP_POOL_MIGRATE, args[1], false, args[2]->u.str.s);
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
        detach_disks(x, rt->ref);
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
    char **gone = NULL;
    size_t n_gone = 0;

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
        gone = xrealloc(gone, (n_gone + 1) * sizeof *gone);
        gone[n_gone++] = xstrdup(rt->ref);
    }
    db_commit(txn);
    /* Block servers that outlived their domain serve nobody. */
    for (size_t i = 0; i < n_gone; i++) {
        detach_disks(x, gone[i]);
        free(gone[i]);
    }
    free(gone);
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
        struct vm_rt *rt = data;
        /* Domains of a provider that cannot find them again (the
         * simulator) end with the toolstack: so do their disks' block
         * servers.  Xen domains outlive it and keep theirs. */
        if (rt->has_domain && h && !h->provider->domain_lookup) {
            detach_disks(x, rt->ref);
        }
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
    { "VM.pool_migrate", api_vm_pool_migrate },
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
