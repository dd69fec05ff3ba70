/* vm.c — hand-written VM messages that involve no domain and no disk
 * work: VM.destroy and the setters whose generic form would break the
 * database's invariants.  The power operations are in lifecycle.c; clone,
 * copy, snapshot, revert and provision in vm-snapshot.c. */
#include <config.h>
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"
#include "xenops/xenops.h"

/* Appends the refs held in a set field of row to refs[]. */
static void
collect_set(const struct db_row *row, int field, char ***refs, size_t *n)
{
    const struct value *set = row->fields[field];

    for (size_t i = 0; set->type == VALUE_ARRAY && i < set->u.arr.n; i++) {
        *refs = xrealloc(*refs, (*n + 1) * sizeof **refs);
        (*refs)[(*n)++] = xstrdup(set->u.arr.items[i]->u.str.s);
    }
}

/* VM.destroy removes the VM's devices and metrics with it, as XenAPI
 * does, so that no VBD or VIF is left pointing at a VM that is gone.
 * Disks (VDIs) are not touched, except the memory image of a suspended VM
 * or a checkpoint, which nothing else can use.  The VM's children in the
 * snapshot tree move up to its parent.  Only a halted or suspended VM that
 * is not the control domain can be destroyed. */
int
api_vm_destroy(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    static const struct {
        int set_field;
        int cls;
    } devices[] = {
        { F_VM_VBDs, CLS_VBD }, { F_VM_VIFs, CLS_VIF },
        { F_VM_VGPUs, CLS_VGPU }, { F_VM_VUSBs, CLS_VUSB },
        { F_VM_VTPMs, CLS_VTPM }, { F_VM_consoles, CLS_console },
        { F_VM_crash_dumps, CLS_crashdump },
    };
    const char *ref = args[1]->u.str.s;
    struct db_txn *txn = db_begin(ctx->x->db);
    struct db *db = ctx->x->db;
    struct db_row *vm = db_lookup(db, CLS_VM, ref);
    const char *state;
    char suspend_vdi[48] = "";
    int rc = -1;

    if (!vm) {
        db_abort(txn);
        return api_fail_handle(ctx, CLS_VM, ref);
    }
    state = vm->fields[F_VM_power_state]->u.str.s;
    if (vm->fields[F_VM_is_control_domain]->u.b) {
        db_abort(txn);
        return api_fail(ctx, ERR_OPERATION_NOT_ALLOWED,
                        "the control domain cannot be destroyed");
    }
    if (strcmp(state, "Halted") && strcmp(state, "Suspended")) {
        db_abort(txn);
        return api_fail(ctx, ERR_VM_BAD_POWER_STATE, ref, "Halted", state);
    }
    for (size_t d = 0; d < ARRAY_SIZE(devices); d++) {
        char **refs = NULL;
        size_t n = 0;
        vm = db_lookup(db, CLS_VM, ref);
        collect_set(vm, devices[d].set_field, &refs, &n);
        for (size_t i = 0; i < n; i++) {
            db_delete(txn, devices[d].cls, refs[i]);
            free(refs[i]);
        }
        free(refs);
    }
    vm = db_lookup(db, CLS_VM, ref);
    {
        struct value *kids = value_ref(vm->fields[F_VM_children]);
        struct value *parent = value_ref(vm->fields[F_VM_parent]);
        for (size_t i = 0; i < kids->u.arr.n; i++) {
            db_update(txn, CLS_VM, kids->u.arr.items[i]->u.str.s, F_VM_parent,
                      value_ref(parent));
        }
        value_unref(kids);
        value_unref(parent);
    }
    vm = db_lookup(db, CLS_VM, ref);
    if (!strcmp(vm->fields[F_VM_power_state]->u.str.s, "Suspended")) {
        snprintf(suspend_vdi, sizeof suspend_vdi, "%s",
                 vm->fields[F_VM_suspend_VDI]->u.str.s);
    }
    {
        char *metrics = xstrdup(vm->fields[F_VM_metrics]->u.str.s);
        char *guest = xstrdup(vm->fields[F_VM_guest_metrics]->u.str.s);
        db_delete(txn, CLS_VM_metrics, metrics);
        db_delete(txn, CLS_VM_guest_metrics, guest);
        free(metrics);
        free(guest);
    }
    db_delete(txn, CLS_VM, ref);
    rc = api_commit(ctx, txn);
    if (!rc && *suspend_vdi && strcmp(suspend_vdi, "OpaqueRef:NULL")) {
        if (storage_vdi_destroy(ctx, suspend_vdi)) {
            LOG_WARN("VM %s destroyed; its suspend VDI %s stays", ref,
                     suspend_vdi);
            value_unref(ctx->error);
            ctx->error = NULL;
        }
    }
    return rc;
}

/* ---- explicit setters with XenAPI's checks ---- */

/* Changes fields of one VM in one transaction after checking, under the
 * write lock, that the VM is halted (when halted_only) and that the memory
 * limits stay ordered.  values[i] goes to fields[i]; ownership moves in. */
static int
set_vm_fields(struct api_ctx *ctx, const char *ref, const int *fields,
              struct value **values, size_t n, bool halted_only)
{
    struct db *db = ctx->x->db;
    struct db_txn *txn = db_begin(db);
    struct db_row *vm = db_lookup(db, CLS_VM, ref);
    int64_t mem[4];
    static const int mem_fields[4] = {
        F_VM_memory_static_min, F_VM_memory_dynamic_min,
        F_VM_memory_dynamic_max, F_VM_memory_static_max,
    };
    int rc = -1;

    if (!vm) {
        api_fail_handle(ctx, CLS_VM, ref);
        goto out;
    }
    if (halted_only && !vm->fields[F_VM_is_a_template]->u.b
        && strcmp(vm->fields[F_VM_power_state]->u.str.s, "Halted")) {
        char *actual = xstrdup(vm->fields[F_VM_power_state]->u.str.s);
        api_fail(ctx, ERR_VM_BAD_POWER_STATE, ref, "Halted", actual);
        free(actual);
        goto out;
    }
    for (int k = 0; k < 4; k++) {
        mem[k] = vm->fields[mem_fields[k]]->u.i;
        for (size_t i = 0; i < n; i++) {
            if (fields[i] == mem_fields[k]) {
                mem[k] = values[i]->u.i;
            }
        }
    }
    if (!(mem[0] <= mem[1] && mem[1] <= mem[2] && mem[2] <= mem[3])
        || mem[0] < 0) {
        api_fail(ctx, ERR_MEMORY_CONSTRAINT_VIOLATION,
                 "Memory limits must satisfy: static_min <= dynamic_min <= "
                 "dynamic_max <= static_max");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        db_update(txn, CLS_VM, ref, fields[i], values[i]);
        values[i] = NULL;
    }
    rc = api_commit(ctx, txn);
    txn = NULL;
out:
    db_abort(txn);
    for (size_t i = 0; i < n; i++) {
        value_unref(values[i]);
    }
    return rc ? -1 : 0;
}

static int
vm_set_memory_limits(struct api_ctx *ctx, struct value **args,
                     struct value **ret)
{
    static const int f[] = { F_VM_memory_static_min, F_VM_memory_static_max,
                             F_VM_memory_dynamic_min, F_VM_memory_dynamic_max };
    struct value *v[] = { value_ref(args[2]), value_ref(args[3]),
                          value_ref(args[4]), value_ref(args[5]) };

    return set_vm_fields(ctx, args[1]->u.str.s, f, v, 4, true);
}

static int
vm_set_memory_static_range(struct api_ctx *ctx, struct value **args,
                           struct value **ret)
{
    static const int f[] = { F_VM_memory_static_min, F_VM_memory_static_max };
    struct value *v[] = { value_ref(args[2]), value_ref(args[3]) };

    return set_vm_fields(ctx, args[1]->u.str.s, f, v, 2, true);
}

/* The dynamic range may change while the VM runs: the balloon follows. */
static int
vm_set_memory_dynamic_range(struct api_ctx *ctx, struct value **args,
                            struct value **ret)
{
    static const int f[] = { F_VM_memory_dynamic_min, F_VM_memory_dynamic_max };
    struct value *v[] = { value_ref(args[2]), value_ref(args[3]) };
    struct xenops_host *h = ctx->x->xenops;
    struct db_row *vm;
    int64_t domid = -1;

    if (set_vm_fields(ctx, args[1]->u.str.s, f, v, 2, false)) {
        return -1;
    }
    db_read_lock(ctx->x->db);
    vm = db_lookup(ctx->x->db, CLS_VM, args[1]->u.str.s);
    if (vm && !strcmp(vm->fields[F_VM_power_state]->u.str.s, "Running")) {
        domid = vm->fields[F_VM_domid]->u.i;
    }
    db_read_unlock(ctx->x->db);
    if (domid > 0 && h->provider->set_memory_target) {
        char *err = NULL;
        if (h->provider->set_memory_target(h, (uint32_t) domid,
                                           args[3]->u.i, &err)) {
            LOG_WARN("VM %s: balloon target not applied: %s",
                     args[1]->u.str.s, err ? err : "?");
        }
        free(err);
    }
    return 0;
}

static int
vm_set_memory(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    static const int f[] = { F_VM_memory_static_max, F_VM_memory_dynamic_max,
                             F_VM_memory_dynamic_min };
    struct value *v[] = { value_ref(args[2]), value_ref(args[2]),
                          value_ref(args[2]) };

    return set_vm_fields(ctx, args[1]->u.str.s, f, v, 3, true);
}

struct plain_setter {
    const char *name;
    int field;
    bool halted_only;
};

/* Explicit setters whose only behaviour is a check of the power state (or
 * none); the memory ones also keep the limits ordered. */
static const struct plain_setter plain_setters[] = {
    { "VM.set_HVM_boot_policy", F_VM_HVM_boot_policy, true },
    { "VM.set_HVM_shadow_multiplier", F_VM_HVM_shadow_multiplier, true },
    { "VM.set_NVRAM", F_VM_NVRAM, true },
    { "VM.set_actions_after_crash", F_VM_actions_after_crash, false },
    { "VM.set_appliance", F_VM_appliance, false },
    { "VM.set_bios_strings", F_VM_bios_strings, true },
    { "VM.set_domain_type", F_VM_domain_type, true },
    { "VM.set_ha_always_run", F_VM_ha_always_run, false },
    { "VM.set_ha_restart_priority", F_VM_ha_restart_priority, false },
    { "VM.set_has_vendor_device", F_VM_has_vendor_device, true },
    { "VM.set_memory_dynamic_max", F_VM_memory_dynamic_max, false },
    { "VM.set_memory_dynamic_min", F_VM_memory_dynamic_min, false },
    { "VM.set_memory_static_max", F_VM_memory_static_max, true },
    { "VM.set_memory_static_min", F_VM_memory_static_min, true },
    { "VM.set_order", F_VM_order, false },
    { "VM.set_shutdown_delay", F_VM_shutdown_delay, false },
    { "VM.set_snapshot_schedule", F_VM_snapshot_schedule, false },
    { "VM.set_start_delay", F_VM_start_delay, false },
    { "VM.set_suspend_VDI", F_VM_suspend_VDI, false },
};

static int
vm_plain_set(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    for (size_t i = 0; i < ARRAY_SIZE(plain_setters); i++) {
        if (!strcmp(plain_setters[i].name, ctx->msg->name)) {
            int f = plain_setters[i].field;
            struct value *v = value_ref(args[2]);
            const struct api_type *t = api_classes[CLS_VM].fields[f].type;
            if (t->kind == API_REF && t->cls >= 0
                && strcmp(args[2]->u.str.s, "OpaqueRef:NULL")) {
                struct db_row *target;
                db_read_lock(ctx->x->db);
                target = db_lookup(ctx->x->db, t->cls, args[2]->u.str.s);
                db_read_unlock(ctx->x->db);
                if (!target) {
                    value_unref(v);
                    return api_fail_handle(ctx, t->cls, args[2]->u.str.s);
                }
            }
            return set_vm_fields(ctx, args[1]->u.str.s, &f, &v, 1,
                                 plain_setters[i].halted_only);
        }
    }
    return api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
}

/* vCPUs: at most VCPUs_max at start-up, at least one; VCPUs_max may only
 * change while halted and not below VCPUs_at_startup. */
static int
vm_set_vcpus(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    bool max = !strcmp(ctx->msg->short_name, "set_VCPUs_max");
    int64_t v = args[2]->u.i, other;
    struct db_row *vm;
    int f = max ? F_VM_VCPUs_max : F_VM_VCPUs_at_startup;
    struct value *val;

    db_read_lock(ctx->x->db);
    vm = db_lookup(ctx->x->db, CLS_VM, args[1]->u.str.s);
    other = vm ? vm->fields[max ? F_VM_VCPUs_at_startup : F_VM_VCPUs_max]->u.i : 0;
    db_read_unlock(ctx->x->db);
    if (!vm) {
        return api_fail_handle(ctx, CLS_VM, args[1]->u.str.s);
    }
    if (v < 1 || (max ? v < other : v > other)) {
        char buf[24];
        snprintf(buf, sizeof buf, "%lld", (long long) v);
        return api_fail(ctx, ERR_INVALID_VALUE,
                        max ? "VCPUs_max" : "VCPUs_at_startup", buf);
    }
    val = value_ref(args[2]);
    return set_vm_fields(ctx, args[1]->u.str.s, &f, &val, 1, true);
}

static int
vm_set_vcpus_number_live(struct api_ctx *ctx, struct value **args,
                         struct value **ret)
{
    struct xenops_host *h = ctx->x->xenops;
    int64_t n = args[2]->u.i, vmax = 0, domid = -1;
    struct db_row *vm;
    char *err = NULL;
    int rc;

    db_read_lock(ctx->x->db);
    vm = db_lookup(ctx->x->db, CLS_VM, args[1]->u.str.s);
    if (vm) {
        vmax = vm->fields[F_VM_VCPUs_max]->u.i;
        if (!strcmp(vm->fields[F_VM_power_state]->u.str.s, "Running")) {
            domid = vm->fields[F_VM_domid]->u.i;
        }
    }
    db_read_unlock(ctx->x->db);
    if (!vm) {
        return api_fail_handle(ctx, CLS_VM, args[1]->u.str.s);
    }
    if (domid < 0) {
        return api_fail(ctx, ERR_VM_BAD_POWER_STATE, args[1]->u.str.s,
                        "Running", "Halted");
    }
    if (n < 1 || n > vmax) {
        char buf[24];
        snprintf(buf, sizeof buf, "%lld", (long long) n);
        return api_fail(ctx, ERR_INVALID_VALUE, "nvcpu", buf);
    }
    if (!h->provider->set_vcpus) {
        return api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
    }
    rc = h->provider->set_vcpus(h, (uint32_t) domid, (int) n, &err);
    free(err);
    if (rc == -EOPNOTSUPP) {
        return api_fail(ctx, ERR_VM_MISSING_PV_DRIVERS, args[1]->u.str.s);
    }
    if (rc) {
        return api_fail_internal(ctx, "cannot change the vCPUs: %s",
                                 strerror(-rc));
    }
    {
        struct db_txn *txn = db_begin(ctx->x->db);
        struct db_row *row = db_lookup(ctx->x->db, CLS_VM, args[1]->u.str.s);
        if (row && db_lookup(ctx->x->db, CLS_VM_metrics,
                             row->fields[F_VM_metrics]->u.str.s)) {
            char *m = xstrdup(row->fields[F_VM_metrics]->u.str.s);
            db_update(txn, CLS_VM_metrics, m, F_VM_metrics_VCPUs_number,
                      value_int(n));
            free(m);
        }
        return api_commit(ctx, txn);
    }
}

/* VM.set_memory_target_live (deprecated): balloon a running VM to a
 * target inside its static range; the target is recorded in
 * memory_target. */
static int
vm_set_memory_target_live(struct api_ctx *ctx, struct value **args,
                          struct value **ret)
{
    struct xenops_host *h = ctx->x->xenops;
    const char *ref = args[1]->u.str.s;
    int64_t target = args[2]->u.i, smin = 0, smax = 0, domid = -1;
    char power[16] = "";
    struct db_row *vm;
    struct db_txn *txn;
    char *err = NULL;
    int rc;

    db_read_lock(ctx->x->db);
    vm = db_lookup(ctx->x->db, CLS_VM, ref);
    if (vm) {
        smin = vm->fields[F_VM_memory_static_min]->u.i;
        smax = vm->fields[F_VM_memory_static_max]->u.i;
        domid = vm->fields[F_VM_domid]->u.i;
        snprintf(power, sizeof power, "%s", vm->fields[F_VM_power_state]->u.str.s);
    }
    db_read_unlock(ctx->x->db);
    if (!vm) {
        return api_fail_handle(ctx, CLS_VM, ref);
    }
    if (strcmp(power, "Running")) {
        return api_fail(ctx, ERR_VM_BAD_POWER_STATE, ref, "Running", power);
    }
    if (target < smin || target > smax) {
        return api_fail(ctx, ERR_MEMORY_CONSTRAINT_VIOLATION,
                        "the target must lie within the static range");
    }
    if (!h->provider->set_memory_target) {
        return api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
    }
    rc = h->provider->set_memory_target(h, (uint32_t) domid, target, &err);
    if (rc == -EOPNOTSUPP) {
        free(err);
        return api_fail(ctx, ERR_VM_MISSING_PV_DRIVERS, ref);
    }
    if (rc) {
        api_fail_internal(ctx, "cannot set the balloon target: %s",
                          err ? err : strerror(-rc));
        free(err);
        return -1;
    }
    txn = db_begin(ctx->x->db);
    db_update(txn, CLS_VM, ref, F_VM_memory_target, value_int(target));
    return api_commit(ctx, txn);
}

const struct api_handler_entry vm_handlers[] = {
    { "VM.set_HVM_boot_policy", vm_plain_set },
    { "VM.set_HVM_shadow_multiplier", vm_plain_set },
    { "VM.set_NVRAM", vm_plain_set },
    { "VM.set_VCPUs_at_startup", vm_set_vcpus },
    { "VM.set_VCPUs_max", vm_set_vcpus },
    { "VM.set_VCPUs_number_live", vm_set_vcpus_number_live },
    { "VM.set_actions_after_crash", vm_plain_set },
    { "VM.set_appliance", vm_plain_set },
    { "VM.set_bios_strings", vm_plain_set },
    { "VM.set_domain_type", vm_plain_set },
    { "VM.set_ha_always_run", vm_plain_set },
    { "VM.set_ha_restart_priority", vm_plain_set },
    { "VM.set_has_vendor_device", vm_plain_set },
    { "VM.set_memory", vm_set_memory },
    { "VM.set_memory_dynamic_max", vm_plain_set },
    { "VM.set_memory_dynamic_min", vm_plain_set },
    { "VM.set_memory_dynamic_range", vm_set_memory_dynamic_range },
    { "VM.set_memory_limits", vm_set_memory_limits },
    { "VM.set_memory_static_max", vm_plain_set },
    { "VM.set_memory_static_min", vm_plain_set },
    { "VM.set_memory_static_range", vm_set_memory_static_range },
    { "VM.set_memory_target_live", vm_set_memory_target_live },
    { "VM.set_order", vm_plain_set },
    { "VM.set_shutdown_delay", vm_plain_set },
    { "VM.set_snapshot_schedule", vm_plain_set },
    { "VM.set_start_delay", vm_plain_set },
    { "VM.set_suspend_VDI", vm_plain_set },
    { NULL, NULL },
};
