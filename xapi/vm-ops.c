/* vm-ops.c — VM messages besides the power operations: hotplug of VBDs and
 * VIFs, CD insert and eject, sysrq keys and triggers, placement checks
 * (assert_can_boot_here, get_possible_hosts), memory arithmetic, the free
 * device slots, and the allowed-operation checks.
 *
 * lifecycle.c owns the VM's domain and serializes power operations with a
 * run-time record this file cannot see; here a power operation in progress
 * shows as VM.current_operations, and the domain as VM.domid.  Device
 * operations mark the device's own current_operations while they drive the
 * provider, as XenAPI does, and keep its allowed_operations up to date
 * with the same checks that refuse a call (device_check), so the hint a
 * client reads and the error it gets always agree. */
#include <config.h>
#include "api.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"
#include "xenops/xenops.h"

#define MiB (INT64_C(1) << 20)

/* Device slots XenAPI offers for new VBDs and VIFs (get_allowed_*). */
#define VBD_SLOTS 16
#define VIF_SLOTS 7

static bool
str_in(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++) {
        if (!strcmp(s, list[i])) {
            return true;
        }
    }
    return false;
}

static bool
set_has(const struct value *set, const char *s)
{
    for (size_t i = 0; set && set->type == VALUE_ARRAY && i < set->u.arr.n; i++) {
        if (value_is_string(set->u.arr.items[i])
            && !strcmp(set->u.arr.items[i]->u.str.s, s)) {
            return true;
        }
    }
    return false;
}

static void
int_str(char *buf, size_t size, int64_t v)
{
    snprintf(buf, size, "%lld", (long long) v);
}

/* ---- what we need to know about a VM ---- */

struct vm_facts {
    char ref[48];
    char uuid[40];
    char power[16];
    int64_t domid;
    bool template;
    bool control;
    bool hvm;
    char domain_type[16];
    char op[40];            /* a power operation in progress, or "" */
    char op_id[48];
    bool has_guest_metrics;
    bool pv_detected;
    char hotplug_vbd[16];   /* tristate: yes, no, unspecified */
    char hotplug_vif[16];
};

/* Whether the VM boots as an HVM guest: its domain_type, or for an old
 * record without one, whether it has an HVM boot policy. */
static bool
row_is_hvm(const struct db_row *vm)
{
    const char *dt = vm->fields[F_VM_domain_type]->u.str.s;

    if (!strcmp(dt, "hvm")) {
        return true;
    }
    if (!strcmp(dt, "pv") || !strcmp(dt, "pvh") || !strcmp(dt, "pv_in_pvh")) {
        return false;
    }
    return vm->fields[F_VM_HVM_boot_policy]->u.str.len > 0;
}

/* Fills f from the VM's row; the read lock or a transaction is held. */
static bool
vm_facts_get(struct db *db, const char *ref, struct vm_facts *f)
{
    struct db_row *vm = db_lookup(db, CLS_VM, ref);
    const struct value *cur;
    struct db_row *gm;

    memset(f, 0, sizeof *f);
    if (!vm) {
        return false;
    }
    snprintf(f->ref, sizeof f->ref, "%s", vm->ref);
    snprintf(f->uuid, sizeof f->uuid, "%s", vm->fields[F_VM_uuid]->u.str.s);
    snprintf(f->power, sizeof f->power, "%s",
             vm->fields[F_VM_power_state]->u.str.s);
    f->domid = vm->fields[F_VM_domid]->u.i;
    f->template = vm->fields[F_VM_is_a_template]->u.b;
    f->control = vm->fields[F_VM_is_control_domain]->u.b;
    f->hvm = row_is_hvm(vm);
    snprintf(f->domain_type, sizeof f->domain_type, "%s",
             vm->fields[F_VM_domain_type]->u.str.s);
    cur = vm->fields[F_VM_current_operations];
    if (cur->type == VALUE_STRUCT && cur->u.st.n > 0) {
        snprintf(f->op_id, sizeof f->op_id, "%s", cur->u.st.m[0].name);
        snprintf(f->op, sizeof f->op, "%s",
                 value_is_string(cur->u.st.m[0].v) ? cur->u.st.m[0].v->u.str.s
                                                   : "");
    }
    gm = db_lookup(db, CLS_VM_guest_metrics,
                   vm->fields[F_VM_guest_metrics]->u.str.s);
    if (gm) {
        f->has_guest_metrics = true;
        f->pv_detected = gm->fields[F_VM_guest_metrics_PV_drivers_detected]->u.b;
        snprintf(f->hotplug_vbd, sizeof f->hotplug_vbd, "%s",
                 gm->fields[F_VM_guest_metrics_can_use_hotplug_vbd]->u.str.s);
        snprintf(f->hotplug_vif, sizeof f->hotplug_vif, "%s",
                 gm->fields[F_VM_guest_metrics_can_use_hotplug_vif]->u.str.s);
    }
    return true;
}

static bool
vm_running(const struct vm_facts *vm)
{
    return !strcmp(vm->power, "Running");
}

/* Checks common to the messages that act on a running VM's domain:
 * not a template, not the control domain, Running, and no power
 * operation in progress. */
static void
check_running_vm(const struct vm_facts *vm, struct refusal *r)
{
    if (vm->template) {
        refuse(r, ERR_VM_IS_TEMPLATE, 1, vm->ref);
    }
    if (vm->control) {
        refuse(r, ERR_OPERATION_NOT_ALLOWED, 1,
               "not allowed on the control domain");
    }
    if (!vm_running(vm)) {
        refuse(r, ERR_VM_BAD_POWER_STATE, 3, vm->ref, "Running", vm->power);
    }
    if (vm->op[0]) {
        refuse(r, ERR_OTHER_OPERATION_IN_PROGRESS, 4, "VM", vm->ref, vm->op,
               vm->op_id);
    }
}

/* ---- which device operations are allowed ---- */

enum dev_op { DEV_PLUG, DEV_UNPLUG, DEV_UNPLUG_FORCE, DEV_INSERT, DEV_EJECT };

static const char *const dev_op_names[] = {
    [DEV_PLUG] = "plug", [DEV_UNPLUG] = "unplug",
    [DEV_UNPLUG_FORCE] = "unplug_force", [DEV_INSERT] = "insert",
    [DEV_EJECT] = "eject",
};

/* The name an operation has in the class's operations enum: a VIF has no
 * unplug_force of its own, it is an unplug. */
static const char *
dev_op_enum_name(int cls, enum dev_op op)
{
    return cls == CLS_VIF && op == DEV_UNPLUG_FORCE ? "unplug"
                                                    : dev_op_names[op];
}

/* Why op may not run on the device (a VBD or VIF row) now, following
 * XenAPI's xapi_vbd_helpers/xapi_vif_helpers in order; "attach" is the
 * check VM.start makes.  The read lock or a transaction is held. */
static void
device_check(const struct db_row *dev, const struct vm_facts *vm,
             const char *op, struct refusal *r)
{
    static const char *const plug_ops[] = { "plug", "unplug", "unplug_force",
                                            NULL };
    static const char *const unplug_ops[] = { "unplug", "unplug_force", NULL };
    static const char *const media_ops[] = { "insert", "eject", NULL };
    bool vbd = dev->cls == CLS_VBD;
    const struct value *cur = dev->fields[vbd ? F_VBD_current_operations
                                              : F_VIF_current_operations];
    bool attached = dev->fields[vbd ? F_VBD_currently_attached
                                    : F_VIF_currently_attached]->u.b;
    bool cd = vbd && !strcmp(dev->fields[F_VBD_type]->u.str.s, "CD");

    if (vm->control) {
        /* The providers build guest domains only; the control domain's
         * devices are the host's own. */
        refuse(r, ERR_OPERATION_NOT_ALLOWED, 1,
               "not allowed on the control domain");
    }
    if (cur->type == VALUE_STRUCT && cur->u.st.n > 0) {
        const struct value *v = cur->u.st.m[0].v;
        refuse(r, ERR_OTHER_OPERATION_IN_PROGRESS, 4, vbd ? "VBD" : "VIF",
               dev->ref, value_is_string(v) ? v->u.str.s : "",
               cur->u.st.m[0].name);
    }
    if (vbd) {
        if (!dev->fields[F_VBD_unpluggable]->u.b && str_in(op, unplug_ops)) {
            refuse(r, ERR_VBD_NOT_UNPLUGGABLE, 1, dev->ref);
        }
        if (!cd && str_in(op, media_ops)) {
            refuse(r, ERR_VBD_NOT_REMOVABLE_MEDIA, 1, dev->ref);
        }
        if (dev->fields[F_VBD_empty]->u.b) {
            if (!strcmp(op, "eject")) {
                refuse(r, ERR_VBD_IS_EMPTY, 1, dev->ref);
            }
        } else if (!strcmp(op, "insert")) {
            refuse(r, ERR_VBD_NOT_EMPTY, 1, dev->ref);
        }
    }
    if (vm_running(vm)) {
        if (attached && !strcmp(op, "plug")) {
            refuse(r, ERR_DEVICE_ALREADY_ATTACHED, 1, dev->ref);
        } else if (!attached && str_in(op, unplug_ops)) {
            refuse(r, ERR_DEVICE_ALREADY_DETACHED, 1, dev->ref);
        }
    } else if (str_in(op, plug_ops)) {
        refuse(r, ERR_VM_BAD_POWER_STATE, 3, vm->ref, "Running", vm->power);
    }
    /* XenAPI refuses only plug and unplug during a shutdown, suspend or
     * pause; here nothing else serializes a device operation with a power
     * operation (the VM's lock is lifecycle.c's), so any device change
     * waits until the power operation is over. */
    if (vm->op[0] && strcmp(op, "attach")) {
        char why[160];
        snprintf(why, sizeof why, "Current operation on VM:%s is %s", vm->ref,
                 vm->op);
        refuse(r, ERR_OPERATION_NOT_ALLOWED, 1, why);
    }
    /* An HVM guest can take hotplugged devices only through its PV
     * drivers; what the guest agent reported decides, as in XenAPI.  A PV
     * guest is asked directly (the provider answers -EOPNOTSUPP). */
    if (vm_running(vm) && vm->hvm && str_in(op, plug_ops)) {
        const char *can = vbd ? vm->hotplug_vbd : vm->hotplug_vif;
        if (!strcmp(can, "no")) {
            refuse(r, ERR_OPERATION_NOT_ALLOWED, 1, vbd
                   ? "VM states it does not support VBD hotplug."
                   : "VM states it does not support VIF hotplug.");
        } else if (strcmp(can, "yes") && !vm->pv_detected) {
            refuse(r, ERR_VM_MISSING_PV_DRIVERS, 1, vm->ref);
        }
        if (cd) {
            refuse(r, ERR_OPERATION_NOT_ALLOWED, 1, "HVM CDROMs cannot be "
                   "hotplugged/unplugged, only inserted or ejected");
        }
    }
    if (cd && !strcmp(vm->power, "Suspended") && str_in(op, media_ops)) {
        refuse(r, ERR_VM_BAD_POWER_STATE, 3, vm->ref, "Halted, Running",
               "Suspended");
    }
}

/* allowed_operations of a device: every operation of its enum that
 * device_check lets through (a VBD's pause/unpause are left out: no
 * provider can pause a block backend). */
static struct value *
device_allowed(const struct db_row *dev, const struct vm_facts *vm)
{
    const struct api_enum *e = &api_enums[dev->cls == CLS_VBD
                                          ? ENUM_vbd_operations
                                          : ENUM_vif_operations];
    struct value *arr = value_array(e->n_values);

    for (size_t i = 0; i < e->n_values; i++) {
        struct refusal r;
        if (!strcmp(e->values[i], "pause") || !strcmp(e->values[i], "unpause")) {
            continue;
        }
        refusal_init(&r);
        device_check(dev, vm, e->values[i], &r);
        if (r.err < 0) {
            value_array_append(arr, value_string(e->values[i]));
        }
    }
    return arr;
}

static void
refresh_device(struct db_txn *txn, int cls, const char *ref)
{
    struct db *db = db_txn_db(txn);
    struct db_row *dev = db_lookup(db, cls, ref);
    struct vm_facts vm;

    if (!dev || !vm_facts_get(db, dev->fields[cls == CLS_VBD ? F_VBD_VM
                                                           : F_VIF_VM]->u.str.s,
                              &vm)) {
        return;
    }
    db_update(txn, cls, ref, cls == CLS_VBD ? F_VBD_allowed_operations
                                            : F_VIF_allowed_operations,
              device_allowed(dev, &vm));
}

void
vmops_refresh_devices(struct db_txn *txn, const char *vm_ref)
{
    struct db *db = db_txn_db(txn);
    static const struct { int set; int cls; } devs[] = {
        { F_VM_VBDs, CLS_VBD }, { F_VM_VIFs, CLS_VIF },
    };

    for (size_t d = 0; d < ARRAY_SIZE(devs); d++) {
        struct db_row *vm = db_lookup(db, CLS_VM, vm_ref);
        struct value *set;
        if (!vm) {
            return;
        }
        /* Updating a device does not touch the VM row, but keep our own
         * reference to the set all the same. */
        set = value_ref(vm->fields[devs[d].set]);
        for (size_t i = 0; i < set->u.arr.n; i++) {
            refresh_device(txn, devs[d].cls, set->u.arr.items[i]->u.str.s);
        }
        value_unref(set);
    }
}

/* ---- device specs for the provider ---- */

/* The same translation as lifecycle.c's build_spec, for one device.  The
 * target is what the storage layer serves the disk on (storage.h): the
 * block server running for the VBD now, if any; a plug starts one. */
static void
vbd_spec_of(struct xapi *x, const struct db_row *b, struct xenops_vbd_spec *v)
{
    memset(v, 0, sizeof *v);
    v->ref = xstrdup(b->ref);
    v->device = xstrdup(b->fields[F_VBD_device]->u.str.s);
    /* atoi, as lifecycle.c numbers the devices it plugs at start. */
    v->position = atoi(b->fields[F_VBD_userdevice]->u.str.s);
    v->read_only = !strcmp(b->fields[F_VBD_mode]->u.str.s, "RO");
    v->cdrom = !strcmp(b->fields[F_VBD_type]->u.str.s, "CD");
    v->empty = b->fields[F_VBD_empty]->u.b;
    if (!v->empty) {
        v->target = storage_vbd_target(x, b->ref);
    }
    v->format = xstrdup("nbd");
}

static void
vbd_spec_clear(struct xenops_vbd_spec *v)
{
    free(v->ref);
    free(v->device);
    free(v->target);
    free(v->format);
    memset(v, 0, sizeof *v);
}

static void
vif_spec_of(struct db *db, const struct db_row *v, struct xenops_vif_spec *n)
{
    struct db_row *net = db_lookup(db, CLS_network,
                                   v->fields[F_VIF_network]->u.str.s);

    memset(n, 0, sizeof *n);
    n->ref = xstrdup(v->ref);
    n->position = atoi(v->fields[F_VIF_device]->u.str.s);
    snprintf(n->mac, sizeof n->mac, "%s", v->fields[F_VIF_MAC]->u.str.s);
    n->bridge = xstrdup(net ? net->fields[F_network_bridge]->u.str.s : "");
    n->mtu = v->fields[F_VIF_MTU]->u.i;
}

static void
vif_spec_clear(struct xenops_vif_spec *n)
{
    free(n->ref);
    free(n->bridge);
    memset(n, 0, sizeof *n);
}

/* ---- device operations ---- */

struct dev_call {
    int cls;                    /* CLS_VBD or CLS_VIF */
    enum dev_op op;
    char ref[48];
    char vdi[48];               /* DEV_INSERT: the disc */
};

/* What a device operation found when it began. */
struct dev_state {
    struct vm_facts vm;
    bool attached;
    bool use_provider;
    struct xenops_vbd_spec vbd;     /* as attached now */
    struct xenops_vbd_spec media;   /* DEV_INSERT/DEV_EJECT: what it becomes */
    struct xenops_vif_spec vif;
    char op_id[48];
};

static void
dev_state_clear(struct dev_state *st)
{
    vbd_spec_clear(&st->vbd);
    vbd_spec_clear(&st->media);
    vif_spec_clear(&st->vif);
}

/* Checks the operation and marks it in the device's current_operations.
 * Returns 0, or -1 after api_fail(). */
static int
dev_begin(struct api_ctx *ctx, const struct dev_call *call,
          struct dev_state *st)
{
    struct db *db = ctx->x->db;
    struct db_txn *txn = db_begin(db);
    const char *op = dev_op_enum_name(call->cls, call->op);
    bool vbd = call->cls == CLS_VBD;
    struct db_row *dev = db_lookup(db, call->cls, call->ref);
    struct db_row *vdi = NULL;
    struct value *cur;
    struct refusal r;

    refusal_init(&r);
    if (!dev) {
        db_abort(txn);
        return api_fail_handle(ctx, call->cls, call->ref);
    }
    if (call->op == DEV_INSERT) {
        vdi = db_lookup(db, CLS_VDI, call->vdi);
        if (!vdi) {
            db_abort(txn);
            return api_fail_handle(ctx, CLS_VDI, call->vdi);
        }
    }
    if (!vm_facts_get(db, dev->fields[vbd ? F_VBD_VM : F_VIF_VM]->u.str.s,
                      &st->vm)) {
        char *vm = xstrdup(dev->fields[vbd ? F_VBD_VM : F_VIF_VM]->u.str.s);
        db_abort(txn);
        api_fail_handle(ctx, CLS_VM, vm);
        free(vm);
        return -1;
    }
    device_check(dev, &st->vm, op, &r);
    if (r.err >= 0) {
        db_abort(txn);
        return fail_refusal(ctx, &r);
    }
    st->attached = dev->fields[vbd ? F_VBD_currently_attached
                                   : F_VIF_currently_attached]->u.b;
    if (vbd) {
        vbd_spec_of(ctx->x, dev, &st->vbd);
        if (!st->vbd.empty && call->op == DEV_PLUG
            && !db_lookup(db, CLS_VDI, dev->fields[F_VBD_VDI]->u.str.s)) {
            char *vdi_ref = xstrdup(dev->fields[F_VBD_VDI]->u.str.s);
            db_abort(txn);
            api_fail_handle(ctx, CLS_VDI, vdi_ref);
            free(vdi_ref);
            return -1;
        }
    } else {
        vif_spec_of(db, dev, &st->vif);
    }
    if (call->op == DEV_INSERT || call->op == DEV_EJECT) {
        vbd_spec_of(ctx->x, dev, &st->media);
        free(st->media.target);
        st->media.target = NULL;
        st->media.empty = call->op == DEV_EJECT;
        /* A halted VM, or a drive not plugged in now, only changes in the
         * database; the disc is there when the drive is next attached. */
        st->use_provider = st->attached && (vm_running(&st->vm)
                                            || !strcmp(st->vm.power, "Paused"));
    } else {
        st->use_provider = true;
    }
    if (*ctx->task) {
        snprintf(st->op_id, sizeof st->op_id, "%s", ctx->task);
    } else {
        uuid_generate(st->op_id);
    }
    cur = value_struct(1);
    value_struct_put(cur, st->op_id, value_string(op));
    db_update(txn, call->cls, call->ref,
              vbd ? F_VBD_current_operations : F_VIF_current_operations, cur);
    refresh_device(txn, call->cls, call->ref);
    return api_commit(ctx, txn);
}

/* A media change on a provider that cannot swap a disc in place (it
 * answers -EEXIST for a plug at an occupied position, where xen.c inserts
 * the disc): take the drive out and put it back with the new disc.  That
 * needs the guest's drivers for the plug, so it is only tried while the
 * guest agent is up; if the new drive cannot be plugged, the old one is
 * put back. */
static int
change_media(struct xenops_host *h, uint32_t domid,
             const struct xenops_vbd_spec *old, const struct xenops_vbd_spec *new,
             char **ret_err)
{
    const struct xenops_provider *p = h->provider;
    struct xenops_domain_info info;
    int rc;

    rc = p->device_plug(h, domid, XENOPS_DEV_VBD, new, ret_err);
    if (rc != -EEXIST) {
        return rc;
    }
    free(*ret_err);
    *ret_err = NULL;
    memset(&info, 0, sizeof info);
    rc = p->domain_info(h, domid, &info, ret_err);
    if (!rc && !info.guest.pv_drivers) {
        rc = -EOPNOTSUPP;
    }
    xenops_domain_info_clear(&info);
    if (rc) {
        return rc;
    }
    rc = p->device_unplug(h, domid, XENOPS_DEV_VBD, old->position, true,
                          ret_err);
    if (rc) {
        return rc;
    }
    rc = p->device_plug(h, domid, XENOPS_DEV_VBD, new, ret_err);
    if (rc) {
        char *err2 = NULL;
        if (p->device_plug(h, domid, XENOPS_DEV_VBD, old, &err2)) {
            LOG_WARN("domain %u: the drive at %d could not be put back: %s",
                     domid, old->position, err2 ? err2 : "?");
        }
        free(err2);
    }
    return rc;
}

/* Drives the provider; returns 0 or a negative errno with *ret_err. */
static int
dev_provider_call(struct xapi *x, const struct dev_call *call,
                  struct dev_state *st, char **ret_err)
{
    struct xenops_host *h = x->xenops;
    const struct xenops_provider *p = h->provider;
    enum xenops_device kind = call->cls == CLS_VBD ? XENOPS_DEV_VBD
                                                   : XENOPS_DEV_VIF;
    uint32_t domid = (uint32_t) st->vm.domid;
    int position = call->cls == CLS_VBD ? st->vbd.position : st->vif.position;
    int rc;

    if (!st->use_provider) {
        return 0;
    }
    switch (call->op) {
    case DEV_PLUG:
        return p->device_plug(h, domid, kind, call->cls == CLS_VBD
                              ? (const void *) &st->vbd
                              : (const void *) &st->vif, ret_err);
    case DEV_UNPLUG:
    case DEV_UNPLUG_FORCE:
        rc = p->device_unplug(h, domid, kind, position,
                              call->op == DEV_UNPLUG_FORCE, ret_err);
        if (rc == -ENOENT || rc == -ENODEV) {
            /* The domain holds no such device: it is detached already,
             * which is what was asked. */
            LOG_INFO("VM %s: %s %s was not in domain %u: %s", st->vm.uuid,
                     api_classes[call->cls].name, call->ref, domid,
                     *ret_err ? *ret_err : "");
            free(*ret_err);
            *ret_err = NULL;
            rc = 0;
        }
        return rc;
    case DEV_INSERT:
    case DEV_EJECT:
        return change_media(h, domid, &st->vbd, &st->media, ret_err);
    }
    return -EINVAL;
}

/* Runs the provider call while holding off power operations on the VM
 * (lifecycle.c), so a VM is not shut down under a device change. */
static int
dev_provider(struct xapi *x, const struct dev_call *call, struct dev_state *st,
             char **ret_err)
{
    uint32_t domid;
    int g, rc;

    if (!st->use_provider) {
        return 0;
    }
    g = lifecycle_device_op_begin(st->vm.ref, &domid);
    if (g == -EBUSY) {
        return -EAGAIN;
    }
    rc = dev_provider_call(x, call, st, ret_err);
    if (!g) {
        lifecycle_device_op_end(st->vm.ref);
    }
    return rc;
}

/* The API's answer to a provider failure. */
static int
fail_device(struct api_ctx *ctx, const struct dev_call *call,
            const struct dev_state *st, int rc, const char *err)
{
    const char *cls = api_classes[call->cls].name;
    char dev[16];

    switch (rc) {
    case -EAGAIN:
        return api_fail(ctx, ERR_OPERATION_NOT_ALLOWED,
                        "a power operation on the VM is in progress");
    case -EOPNOTSUPP:
        return api_fail(ctx, ERR_VM_MISSING_PV_DRIVERS, st->vm.ref);
    case -EEXIST:
        snprintf(dev, sizeof dev, "%d", call->cls == CLS_VBD
                 ? st->vbd.position : st->vif.position);
        return api_fail(ctx, ERR_DEVICE_ALREADY_EXISTS, dev);
    case -ETIMEDOUT:
        return api_fail(ctx, call->op == DEV_PLUG ? ERR_DEVICE_ATTACH_TIMEOUT
                                                  : ERR_DEVICE_DETACH_TIMEOUT,
                        cls, call->ref);
    }
    if (call->op == DEV_UNPLUG) {
        return api_fail(ctx, ERR_DEVICE_DETACH_REJECTED, cls, call->ref,
                        err ? err : strerror(-rc));
    }
    return api_fail_internal(ctx, "%s.%s: %s", cls, dev_op_names[call->op],
                             err ? err : strerror(-rc));
}

/* Records the outcome and clears the operation. */
static int
dev_end(struct api_ctx *ctx, const struct dev_call *call,
        const struct dev_state *st, bool ok)
{
    struct db *db = ctx->x->db;
    struct db_txn *txn = db_begin(db);
    bool vbd = call->cls == CLS_VBD;
    struct db_row *dev = db_lookup(db, call->cls, call->ref);
    struct vm_facts now;
    int rc = ok ? 0 : -1;

    if (!dev) {
        /* Destroyed meanwhile: nothing left to record. */
        db_abort(txn);
        return rc;
    }
    db_update(txn, call->cls, call->ref,
              vbd ? F_VBD_current_operations : F_VIF_current_operations,
              value_empty_struct());
    if (ok && (call->op == DEV_PLUG || call->op == DEV_UNPLUG
               || call->op == DEV_UNPLUG_FORCE)) {
        bool plug = call->op == DEV_PLUG;
        /* A power operation may have replaced or removed the domain while
         * the provider worked: then lifecycle.c has recorded the devices,
         * and this plug did not survive. */
        if (!vm_facts_get(db, st->vm.ref, &now) || !vm_running(&now)
            || now.domid != st->vm.domid) {
            if (plug) {
                api_fail(ctx, ERR_VM_BAD_POWER_STATE, st->vm.ref, "Running",
                         now.power[0] ? now.power : "Halted");
                rc = -1;
            }
        } else {
            db_update(txn, call->cls, call->ref,
                      vbd ? F_VBD_currently_attached : F_VIF_currently_attached,
                      plug ? value_true() : value_false());
        }
    } else if (ok && call->op == DEV_INSERT) {
        db_update(txn, CLS_VBD, call->ref, F_VBD_VDI, value_string(call->vdi));
        db_update(txn, CLS_VBD, call->ref, F_VBD_empty, value_false());
    } else if (ok && call->op == DEV_EJECT) {
        db_update(txn, CLS_VBD, call->ref, F_VBD_VDI, value_null_ref());
        db_update(txn, CLS_VBD, call->ref, F_VBD_empty, value_true());
    }
    refresh_device(txn, call->cls, call->ref);
    if (db_commit(txn)) {
        if (!rc) {
            rc = api_fail_internal(ctx, "cannot record the %s",
                                   dev_op_names[call->op]);
        }
    }
    return rc;
}

/* The data path of a disk being plugged or a disc being inserted: the
 * storage layer starts its block server, whose address becomes the
 * provider's target.  Returns 0, or -1 after api_fail(). */
static int
dev_storage_attach(struct api_ctx *ctx, const struct dev_call *call,
                   struct dev_state *st)
{
    struct xenops_vbd_spec *v;
    char *target = NULL, *format = NULL, *err = NULL;
    char vdi[48] = "", sr[48] = "";
    int rc;

    if (call->cls != CLS_VBD || !st->use_provider
        || (call->op != DEV_PLUG && call->op != DEV_INSERT)) {
        return 0;
    }
    v = call->op == DEV_PLUG ? &st->vbd : &st->media;
    if (call->op == DEV_PLUG && v->empty) {
        return 0;
    }
    rc = storage_vbd_attach_vdi(ctx->x, call->ref,
                                call->op == DEV_INSERT ? call->vdi : NULL,
                                &target, &format, &err);
    if (!rc) {
        free(v->target);
        free(v->format);
        v->target = target;
        v->format = format ? format : xstrdup("nbd");
        v->empty = target == NULL;
        return 0;
    }
    db_read_lock(ctx->x->db);
    {
        struct db_row *b = db_lookup(ctx->x->db, CLS_VBD, call->ref);
        struct db_row *d = call->op == DEV_INSERT
                           ? db_lookup(ctx->x->db, CLS_VDI, call->vdi)
                           : b ? db_lookup(ctx->x->db, CLS_VDI,
                                           b->fields[F_VBD_VDI]->u.str.s)
                               : NULL;
        if (d) {
            snprintf(vdi, sizeof vdi, "%s", d->ref);
            snprintf(sr, sizeof sr, "%s", d->fields[F_VDI_SR]->u.str.s);
        }
    }
    db_read_unlock(ctx->x->db);
    switch (rc) {
    case -EBUSY:
        api_fail(ctx, ERR_VDI_IN_USE, vdi, "attach");
        break;
    case -EROFS:
        api_fail(ctx, ERR_VDI_READONLY, vdi);
        break;
    case -ENODEV:
        api_fail(ctx, ERR_SR_NOT_ATTACHED, sr);
        break;
    case -ENOENT:
        api_fail(ctx, ERR_VDI_MISSING, sr, vdi);
        break;
    default:
        api_fail(ctx, ERR_SR_BACKEND_FAILURE, "EIO", "",
                 err ? err : strerror(-rc));
        break;
    }
    free(err);
    return -1;
}

/* After the provider call: a disk that left the domain (unplug, eject)
 * or never got into it (a failed plug or insert) has its block server
 * stopped. */
static void
dev_storage_settle(struct xapi *x, const struct dev_call *call,
                   const struct dev_state *st, bool ok)
{
    if (call->cls != CLS_VBD || !st->use_provider) {
        return;
    }
    switch (call->op) {
    case DEV_PLUG:
    case DEV_INSERT:
        if (!ok) {
            storage_vbd_detach(x, call->ref);
        }
        break;
    case DEV_UNPLUG:
    case DEV_UNPLUG_FORCE:
    case DEV_EJECT:
        if (ok) {
            storage_vbd_detach(x, call->ref);
        }
        break;
    }
}

static int
dev_run(struct api_ctx *ctx, const struct dev_call *call)
{
    const struct xenops_provider *p = ctx->x->xenops->provider;
    struct dev_state st;
    char *err = NULL;
    int rc;

    memset(&st, 0, sizeof st);
    if (!p->device_plug || !p->device_unplug || !p->domain_info) {
        return api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
    }
    if (dev_begin(ctx, call, &st)) {
        dev_state_clear(&st);
        return -1;
    }
    rc = dev_storage_attach(ctx, call, &st);
    if (rc) {
        rc = dev_end(ctx, call, &st, false);
        dev_state_clear(&st);
        return rc;
    }
    rc = dev_provider(ctx->x, call, &st, &err);
    if (rc) {
        fail_device(ctx, call, &st, rc, err);
    }
    dev_storage_settle(ctx->x, call, &st, rc == 0);
    rc = dev_end(ctx, call, &st, rc == 0);
    free(err);
    dev_state_clear(&st);
    return rc;
}

/* Device operations wait for the guest (an unplug until it lets go), so
 * like lifecycle.c's operations they run on the task executor, never on
 * an HTTP worker: a synchronous call defers its answer. */
struct dev_job {
    struct api_deferred *d;
    struct xapi *x;
    const struct api_message *msg;
    struct session *session;
    char method[96];
    char peer[64];
    struct dev_call call;
};

static void
dev_job_run(void *aux)
{
    struct dev_job *job = aux;
    struct api_ctx ctx = { .x = job->x, .msg = job->msg,
                           .method = job->method, .session = job->session,
                           .peer = job->peer };

    if (dev_run(&ctx, &job->call)) {
        api_complete(job->d, NULL, ctx.error);
    } else {
        api_complete(job->d, value_empty_string(), NULL);
    }
    session_unref(job->session);
    free(job);
}

static int
dev_start(struct api_ctx *ctx, int cls, enum dev_op op, const struct value *dev,
          const struct value *vdi)
{
    struct dev_call call = { .cls = cls, .op = op };
    struct dev_job *job;

    snprintf(call.ref, sizeof call.ref, "%s", dev->u.str.s);
    if (vdi) {
        snprintf(call.vdi, sizeof call.vdi, "%s", vdi->u.str.s);
    }
    if (*ctx->task) {
        return dev_run(ctx, &call);
    }
    job = xcalloc(1, sizeof *job);
    job->x = ctx->x;
    job->msg = ctx->msg;
    job->session = ctx->session ? session_dup(ctx->session) : NULL;
    snprintf(job->method, sizeof job->method, "%s", ctx->method);
    snprintf(job->peer, sizeof job->peer, "%s", ctx->peer ? ctx->peer : "");
    job->call = call;
    job->d = api_defer(ctx);
    task_submit(ctx->x, dev_job_run, job);
    return API_DEFERRED;
}

static int
api_vbd_plug(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return dev_start(ctx, CLS_VBD, DEV_PLUG, args[1], NULL);
}

static int
api_vbd_unplug(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return dev_start(ctx, CLS_VBD, DEV_UNPLUG, args[1], NULL);
}

static int
api_vbd_unplug_force(struct api_ctx *ctx, struct value **args,
                     struct value **ret)
{
    return dev_start(ctx, CLS_VBD, DEV_UNPLUG_FORCE, args[1], NULL);
}

static int
api_vbd_insert(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return dev_start(ctx, CLS_VBD, DEV_INSERT, args[1], args[2]);
}

static int
api_vbd_eject(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return dev_start(ctx, CLS_VBD, DEV_EJECT, args[1], NULL);
}

static int
api_vif_plug(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return dev_start(ctx, CLS_VIF, DEV_PLUG, args[1], NULL);
}

static int
api_vif_unplug(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return dev_start(ctx, CLS_VIF, DEV_UNPLUG, args[1], NULL);
}

static int
api_vif_unplug_force(struct api_ctx *ctx, struct value **args,
                     struct value **ret)
{
    return dev_start(ctx, CLS_VIF, DEV_UNPLUG_FORCE, args[1], NULL);
}

/* ---- sysrq and triggers ---- */

/* Reads the VM and checks that it runs; returns 0 with *vm filled, or -1
 * after api_fail(). */
static int
running_vm(struct api_ctx *ctx, const char *ref, struct vm_facts *vm)
{
    struct refusal r;
    bool found;

    refusal_init(&r);
    db_read_lock(ctx->x->db);
    found = vm_facts_get(ctx->x->db, ref, vm);
    db_read_unlock(ctx->x->db);
    if (!found) {
        return api_fail_handle(ctx, CLS_VM, ref);
    }
    check_running_vm(vm, &r);
    return r.err >= 0 ? fail_refusal(ctx, &r) : 0;
}

static int
api_vm_send_sysrq(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct xenops_host *h = ctx->x->xenops;
    const char *key = args[2]->u.str.s;
    struct vm_facts vm;
    char *err = NULL;
    int rc;

    if (running_vm(ctx, args[1]->u.str.s, &vm)) {
        return -1;
    }
    if (strlen(key) != 1 || !isgraph((unsigned char) key[0])) {
        return api_fail(ctx, ERR_INVALID_VALUE, "key", key);
    }
    if (!h->provider->send_sysrq) {
        return api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
    }
    rc = h->provider->send_sysrq(h, (uint32_t) vm.domid, key[0], &err);
    if (rc == -EOPNOTSUPP) {
        /* The key travels to the guest kernel through its PV drivers. */
        api_fail(ctx, ERR_VM_MISSING_PV_DRIVERS, vm.ref);
    } else if (rc) {
        api_fail_internal(ctx, "cannot send sysrq '%s': %s", key,
                          err ? err : strerror(-rc));
    }
    free(err);
    return rc ? -1 : 0;
}

/* Whether the domain exists and has not shut down (the database may not
 * have caught up with a guest that just did). */
static bool
domain_alive(struct xenops_host *h, uint32_t domid)
{
    struct xenops_domain_info info;
    char *err = NULL;
    bool alive;

    memset(&info, 0, sizeof info);
    alive = h->provider->domain_info
            && !h->provider->domain_info(h, domid, &info, &err)
            && info.power != XENOPS_SHUTDOWN;
    free(err);
    xenops_domain_info_clear(&info);
    return alive;
}

static int
api_vm_send_trigger(struct api_ctx *ctx, struct value **args,
                    struct value **ret)
{
    struct xenops_host *h = ctx->x->xenops;
    const char *trigger = args[2]->u.str.s;
    struct vm_facts vm;
    char *err = NULL;
    int rc;

    if (running_vm(ctx, args[1]->u.str.s, &vm)) {
        return -1;
    }
    if (!h->provider->send_trigger) {
        return api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
    }
    rc = h->provider->send_trigger(h, (uint32_t) vm.domid, trigger, &err);
    if (rc == -EINVAL && domain_alive(h, (uint32_t) vm.domid)) {
        /* The domain is there and running: the trigger is what it does
         * not know. */
        api_fail(ctx, ERR_INVALID_VALUE, "trigger", trigger);
    } else if (rc == -EOPNOTSUPP) {
        /* Triggers are virtual hardware (an ACPI power button, say), which
         * a PV guest does not have. */
        api_fail(ctx, ERR_VM_HVM_REQUIRED, vm.ref);
    } else if (rc) {
        api_fail_internal(ctx, "cannot send trigger '%s': %s", trigger,
                          err ? err : strerror(-rc));
    }
    free(err);
    return rc ? -1 : 0;
}

/* ---- memory arithmetic ---- */

static int64_t
mib_up(int64_t bytes)
{
    return bytes <= 0 ? 0 : (bytes + MiB - 1) / MiB;
}

/* Memory Xen needs for a domain besides its RAM, in bytes, with XenAPI's
 * model (xenopsd's memory.ml): 1 MiB for the device model's extras (HVM
 * only), 1 MiB outside the domain, and the shadow/p2m tables — 256 pages
 * per vCPU plus two pages per MiB of RAM, times the shadow multiplier, at
 * least 1 MiB; a PV guest in a PVH shim also pays the shim.  It is a bound
 * on what the providers reserve (the simulator's 1 MiB + 8 KiB per MiB is
 * below it), so a VM that passes assert_can_boot_here does start. */
static int64_t
memory_overhead(const char *domain_type, bool hvm, int64_t static_max,
                int64_t vcpus, double multiplier)
{
    int64_t smax = mib_up(static_max);
    int64_t pages = 256 * MAX(vcpus, 0) + 2 * smax;
    int64_t shadow = (int64_t) ((double) ((pages + 255) / 256) * multiplier);
    int64_t mib = (hvm || !strcmp(domain_type, "pv_in_pvh") ? 1 : 0) + 1
                  + MAX(shadow, 1);

    if (!strcmp(domain_type, "pv_in_pvh")) {
        mib += 20 + smax / 110;
    }
    return mib * MiB;
}

static int64_t
row_overhead(const struct db_row *vm, int64_t static_max, int64_t vcpus)
{
    return memory_overhead(vm->fields[F_VM_domain_type]->u.str.s,
                           row_is_hvm(vm), static_max, vcpus,
                           vm->fields[F_VM_HVM_shadow_multiplier]->u.d);
}

static int
api_vm_compute_memory_overhead(struct api_ctx *ctx, struct value **args,
                               struct value **ret)
{
    struct db_row *vm;
    int64_t v = 0;

    db_read_lock(ctx->x->db);
    vm = db_lookup(ctx->x->db, CLS_VM, args[1]->u.str.s);
    if (vm) {
        v = row_overhead(vm, vm->fields[F_VM_memory_static_max]->u.i,
                         vm->fields[F_VM_VCPUs_max]->u.i);
    }
    db_read_unlock(ctx->x->db);
    if (!vm) {
        return api_fail_handle(ctx, CLS_VM, args[1]->u.str.s);
    }
    *ret = value_int(v);
    return 0;
}

/* The largest memory_static_max that fits in total bytes together with its
 * overhead, rounded down to a MiB; approximate allows for 64 vCPUs, so the
 * answer still holds after the vCPUs change (XenAPI's rule). */
static int
api_vm_maximise_memory(struct api_ctx *ctx, struct value **args,
                       struct value **ret)
{
    int64_t total = args[2]->u.i, lo = 0, hi, vcpus;
    bool approximate = args[3]->u.b;
    struct db_row *vm;

    db_read_lock(ctx->x->db);
    vm = db_lookup(ctx->x->db, CLS_VM, args[1]->u.str.s);
    if (!vm) {
        db_read_unlock(ctx->x->db);
        return api_fail_handle(ctx, CLS_VM, args[1]->u.str.s);
    }
    vcpus = approximate ? 64 : vm->fields[F_VM_VCPUs_max]->u.i;
    hi = MAX(total, 0);
    /* Overhead grows with static_max, so "fits" is monotonic. */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (mid + row_overhead(vm, mid, vcpus) <= total) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    db_read_unlock(ctx->x->db);
    *ret = value_int(lo / MiB * MiB);
    return 0;
}

/* ---- placement ---- */

/* Why the VM cannot start on host now (r->err < 0: it can).  Follows
 * XenAPI's assert_can_boot_here as far as this toolstack knows the host:
 * liveness, enabled, pCPUs, storage, networks, then free memory. */
static void
boot_check(struct xapi *x, const char *vm_ref, const char *host_ref,
           struct refusal *r)
{
    struct xenops_host_info info;
    struct db *db = x->db;
    struct db_row *vm, *host, *hm;
    char *err = NULL;
    int64_t needed = 0, vcpus = 0;
    bool have_info;

    memset(&info, 0, sizeof info);
    have_info = !strcmp(host_ref, x->host_ref)
                && !xenops_host_info(x->xenops, &info, &err);
    free(err);
    db_read_lock(db);
    vm = db_lookup(db, CLS_VM, vm_ref);
    host = db_lookup(db, CLS_host, host_ref);
    if (!vm) {
        refuse(r, ERR_HANDLE_INVALID, 2, "VM", vm_ref);
        goto out;
    }
    if (!host) {
        refuse(r, ERR_HANDLE_INVALID, 2, "host", host_ref);
        goto out;
    }
    if (vm->fields[F_VM_is_a_template]->u.b) {
        refuse(r, ERR_VM_IS_TEMPLATE, 1, vm_ref);
    }
    if (vm->fields[F_VM_is_control_domain]->u.b) {
        refuse(r, ERR_OPERATION_NOT_ALLOWED, 1,
               "the control domain cannot be started");
    }
    hm = db_lookup(db, CLS_host_metrics, host->fields[F_host_metrics]->u.str.s);
    if (hm && !hm->fields[F_host_metrics_live]->u.b) {
        refuse(r, ERR_HOST_NOT_LIVE, 0);
    }
    if (!host->fields[F_host_enabled]->u.b) {
        refuse(r, ERR_HOST_DISABLED, 1, host_ref);
    }
    if (strcmp(host_ref, x->host_ref)) {
        /* Only the host this daemon runs on can be measured. */
        refuse(r, ERR_OPERATION_NOT_ALLOWED, 1,
               "this toolstack can only place VMs on the host it runs on");
    } else if (!have_info) {
        refuse(r, ERR_HOST_NOT_LIVE, 0);
    }
    vcpus = vm->fields[F_VM_VCPUs_max]->u.i;
    if (have_info && vcpus > info.n_cpus) {
        const char *u = value_struct_get_string(vm->fields[F_VM_platform],
                                                "vcpu-unrestricted");
        if (!u || (strcmp(u, "true") && strcmp(u, "1"))) {
            char v[24], p[24];
            int_str(v, sizeof v, vcpus);
            int_str(p, sizeof p, info.n_cpus);
            refuse(r, ERR_HOST_NOT_ENOUGH_PCPUS, 2, v, p);
        }
    }
    /* Every disk's SR must be plugged on the host. */
    for (size_t i = 0; i < vm->fields[F_VM_VBDs]->u.arr.n; i++) {
        struct db_row *b = db_lookup(db, CLS_VBD,
                                     vm->fields[F_VM_VBDs]->u.arr.items[i]->u.str.s);
        struct db_row *vdi, *sr;
        bool seen = false;
        if (!b || b->fields[F_VBD_empty]->u.b) {
            continue;
        }
        vdi = db_lookup(db, CLS_VDI, b->fields[F_VBD_VDI]->u.str.s);
        sr = vdi ? db_lookup(db, CLS_SR, vdi->fields[F_VDI_SR]->u.str.s) : NULL;
        if (!sr) {
            continue;
        }
        for (size_t k = 0; k < sr->fields[F_SR_PBDs]->u.arr.n; k++) {
            struct db_row *pbd = db_lookup(db, CLS_PBD,
                                           sr->fields[F_SR_PBDs]->u.arr.items[k]->u.str.s);
            seen |= pbd && !strcmp(pbd->fields[F_PBD_host]->u.str.s, host_ref)
                    && pbd->fields[F_PBD_currently_attached]->u.b;
        }
        if (!seen) {
            refuse(r, ERR_VM_REQUIRES_SR, 2, vm_ref, sr->ref);
        }
    }
    /* Every network with PIFs must have one on the host; a network with
     * none is internal and exists on every host. */
    for (size_t i = 0; i < vm->fields[F_VM_VIFs]->u.arr.n; i++) {
        struct db_row *v = db_lookup(db, CLS_VIF,
                                     vm->fields[F_VM_VIFs]->u.arr.items[i]->u.str.s);
        struct db_row *net = v ? db_lookup(db, CLS_network,
                                           v->fields[F_VIF_network]->u.str.s)
                               : NULL;
        const struct value *pifs = net ? net->fields[F_network_PIFs] : NULL;
        bool seen = false;
        if (!pifs || !pifs->u.arr.n) {
            continue;
        }
        for (size_t k = 0; k < pifs->u.arr.n; k++) {
            struct db_row *pif = db_lookup(db, CLS_PIF,
                                           pifs->u.arr.items[k]->u.str.s);
            seen |= pif && !strcmp(pif->fields[F_PIF_host]->u.str.s, host_ref);
        }
        if (!seen) {
            refuse(r, ERR_VM_REQUIRES_NETWORK, 2, vm_ref, net->ref);
        }
    }
    /* What the VM takes at start: dynamic_max plus the overhead, against
     * what the host has free now.  A VM running here already holds its
     * memory, so for it the check is whether it could start once more. */
    needed = vm->fields[F_VM_memory_dynamic_max]->u.i
             + row_overhead(vm, vm->fields[F_VM_memory_static_max]->u.i, vcpus);
    if (have_info && needed > info.memory_free) {
        char n[24], a[24];
        int_str(n, sizeof n, needed);
        int_str(a, sizeof a, info.memory_free);
        refuse(r, ERR_HOST_NOT_ENOUGH_FREE_MEMORY, 2, n, a);
    }
out:
    db_read_unlock(db);
}

static int
api_vm_assert_can_boot_here(struct api_ctx *ctx, struct value **args,
                            struct value **ret)
{
    struct refusal r;

    refusal_init(&r);
    boot_check(ctx->x, args[1]->u.str.s, args[2]->u.str.s, &r);
    return r.err >= 0 ? fail_refusal(ctx, &r) : 0;
}

static int
api_vm_get_possible_hosts(struct api_ctx *ctx, struct value **args,
                          struct value **ret)
{
    struct db *db = ctx->x->db;
    struct value *hosts = value_array(1), *result;
    bool found;

    db_read_lock(db);
    found = db_lookup(db, CLS_VM, args[1]->u.str.s) != NULL;
    for (size_t i = 0; found && i < db_table_count(db, CLS_host); i++) {
        value_array_append(hosts, value_string(db_table_row(db, CLS_host, i)->ref));
    }
    db_read_unlock(db);
    if (!found) {
        value_unref(hosts);
        return api_fail_handle(ctx, CLS_VM, args[1]->u.str.s);
    }
    result = value_array(hosts->u.arr.n);
    for (size_t i = 0; i < hosts->u.arr.n; i++) {
        struct refusal r;
        refusal_init(&r);
        boot_check(ctx->x, args[1]->u.str.s, hosts->u.arr.items[i]->u.str.s, &r);
        if (r.err < 0) {
            value_array_append(result, value_ref(hosts->u.arr.items[i]));
        }
    }
    value_unref(hosts);
    *ret = result;
    return 0;
}

/* ---- records and services ---- */

/* XenAPI answers the VM's current record: the boot-time copy it once kept
 * (last_booted_record) is no longer consulted. */
static int
api_vm_get_boot_record(struct api_ctx *ctx, struct value **args,
                       struct value **ret)
{
    struct db_row *vm;

    db_read_lock(ctx->x->db);
    vm = db_lookup(ctx->x->db, CLS_VM, args[1]->u.str.s);
    if (vm) {
        *ret = api_row_record(vm);
    }
    db_read_unlock(ctx->x->db);
    return vm ? 0 : api_fail_handle(ctx, CLS_VM, args[1]->u.str.s);
}

/* Only a system domain offers services.  This toolstack has no registry
 * of services offered by driver domains, so the control domain's answer
 * is the empty map: nothing is claimed that is not there. */
static int
api_vm_query_services(struct api_ctx *ctx, struct value **args,
                      struct value **ret)
{
    struct db_row *vm;
    bool system = false;

    db_read_lock(ctx->x->db);
    vm = db_lookup(ctx->x->db, CLS_VM, args[1]->u.str.s);
    if (vm) {
        const char *s = value_struct_get_string(vm->fields[F_VM_other_config],
                                                "is_system_domain");
        system = vm->fields[F_VM_is_control_domain]->u.b
                 || (s && !strcmp(s, "true"));
    }
    db_read_unlock(ctx->x->db);
    if (!vm) {
        return api_fail_handle(ctx, CLS_VM, args[1]->u.str.s);
    }
    if (!system) {
        return api_fail(ctx, ERR_NOT_SYSTEM_DOMAIN, args[1]->u.str.s);
    }
    *ret = value_empty_struct();
    return 0;
}

/* ---- vCPU parameters ---- */

static bool
valid_cpu_mask(const char *s)
{
    bool digit = false;

    for (; *s; s++) {
        if (isdigit((unsigned char) *s)) {
            digit = true;
        } else if (*s != ',' || !digit) {
            return false;
        } else {
            digit = false;
        }
    }
    return digit;
}

/* VM.add_to_VCPUs_params_live: the provider interface has no scheduler
 * call, so the new weight, cap or mask is recorded in VCPUs_params and
 * applies from the next start of the domain; the log says so. */
static int
api_vm_add_to_vcpus_params_live(struct api_ctx *ctx, struct value **args,
                                struct value **ret)
{
    const char *ref = args[1]->u.str.s, *key = args[2]->u.str.s;
    const char *val = args[3]->u.str.s;
    struct db *db = ctx->x->db;
    struct vm_facts vm;
    struct db_txn *txn;
    struct db_row *row;
    struct value *params;
    int64_t n;

    if (running_vm(ctx, ref, &vm)) {
        return -1;
    }
    if (!strcmp(key, "weight") && (str_to_int64(val, &n) || n < 1 || n > 65535)) {
        return api_fail(ctx, ERR_INVALID_VALUE, key, val);
    }
    if (!strcmp(key, "cap") && (str_to_int64(val, &n) || n < 0)) {
        return api_fail(ctx, ERR_INVALID_VALUE, key, val);
    }
    if (!strcmp(key, "mask") && !valid_cpu_mask(val)) {
        return api_fail(ctx, ERR_INVALID_VALUE, key, val);
    }
    txn = db_begin(db);
    row = db_lookup(db, CLS_VM, ref);
    if (!row) {
        db_abort(txn);
        return api_fail_handle(ctx, CLS_VM, ref);
    }
    params = value_copy_shallow(row->fields[F_VM_VCPUs_params]);
    value_struct_set(params, key, value_string(val));
    db_update(txn, CLS_VM, ref, F_VM_VCPUs_params, params);
    if (api_commit(ctx, txn)) {
        return -1;
    }
    LOG_INFO("VM %s: VCPUs_params %s=%s recorded; the %s provider has no "
             "scheduler call, so it applies from the next start", vm.uuid,
             key, val, ctx->x->xenops->provider->name);
    return 0;
}

/* ---- free device slots ---- */

/* The slot number of a userdevice: "3", or a disk name as XenAPI's
 * Device_number reads it ("xvdd", "hdd", "sdd" are 3); -1 if neither. */
static int
device_number(const char *s)
{
    int64_t n;

    if (!str_to_int64(s, &n)) {
        return n >= 0 && n < 1024 ? (int) n : -1;
    }
    if ((str_starts_with(s, "xvd") && strlen(s) == 4)
        || ((str_starts_with(s, "hd") || str_starts_with(s, "sd"))
            && strlen(s) == 3)) {
        char c = s[strlen(s) - 1];
        return c >= 'a' && c <= 'p' ? c - 'a' : -1;
    }
    return -1;
}

static int
allowed_devices(struct api_ctx *ctx, const char *ref, int set_field, int cls,
                int dev_field, int slots, struct value **ret)
{
    struct db *db = ctx->x->db;
    bool used[32] = { false };
    struct value *out;
    struct db_row *vm;

    db_read_lock(db);
    vm = db_lookup(db, CLS_VM, ref);
    for (size_t i = 0; vm && i < vm->fields[set_field]->u.arr.n; i++) {
        struct db_row *d = db_lookup(db, cls,
                                     vm->fields[set_field]->u.arr.items[i]->u.str.s);
        int n = d ? device_number(d->fields[dev_field]->u.str.s) : -1;
        if (n >= 0 && n < (int) ARRAY_SIZE(used)) {
            used[n] = true;
        }
    }
    db_read_unlock(db);
    if (!vm) {
        return api_fail_handle(ctx, CLS_VM, ref);
    }
    out = value_array(slots);
    for (int i = 0; i < slots; i++) {
        if (!used[i]) {
            value_array_append(out, value_stringf("%d", i));
        }
    }
    *ret = out;
    return 0;
}

static int
api_vm_get_allowed_vbd_devices(struct api_ctx *ctx, struct value **args,
                               struct value **ret)
{
    return allowed_devices(ctx, args[1]->u.str.s, F_VM_VBDs, CLS_VBD,
                           F_VBD_userdevice, VBD_SLOTS, ret);
}

static int
api_vm_get_allowed_vif_devices(struct api_ctx *ctx, struct value **args,
                               struct value **ret)
{
    return allowed_devices(ctx, args[1]->u.str.s, F_VM_VIFs, CLS_VIF,
                           F_VIF_device, VIF_SLOTS, ret);
}

/* ---- allowed operations ---- */

/* VM.assert_operation_valid: the operation must be in the VM's
 * allowed_operations (as lifecycle.c computes them); the error says why
 * not in XenAPI's terms — blocked, another operation in progress, a
 * template, the wrong power state — or OPERATION_NOT_ALLOWED. */
static int
api_vm_assert_operation_valid(struct api_ctx *ctx, struct value **args,
                              struct value **ret)
{
    static const char *const states[] = { "Halted", "Running", "Paused",
                                          "Suspended" };
    const char *ref = args[1]->u.str.s, *op = args[2]->u.str.s;
    struct vm_facts vm;
    struct value *allowed, *blocked = NULL;
    struct db_row *row;
    char why[160];
    bool ok;

    db_read_lock(ctx->x->db);
    row = db_lookup(ctx->x->db, CLS_VM, ref);
    if (row) {
        vm_facts_get(ctx->x->db, ref, &vm);
        blocked = value_ref(row->fields[F_VM_blocked_operations]);
    }
    db_read_unlock(ctx->x->db);
    if (!row) {
        return api_fail_handle(ctx, CLS_VM, ref);
    }
    if (blocked->type == VALUE_STRUCT && value_struct_get(blocked, op)) {
        const char *code = value_struct_get_string(blocked, op);
        api_fail(ctx, ERR_OPERATION_BLOCKED, ref, code ? code : "");
        value_unref(blocked);
        return -1;
    }
    value_unref(blocked);
    if (vm.op[0]) {
        return api_fail(ctx, ERR_OTHER_OPERATION_IN_PROGRESS, "VM", ref, vm.op,
                        vm.op_id);
    }
    allowed = lifecycle_allowed_ops(vm.power, vm.template, vm.control);
    ok = set_has(allowed, op);
    value_unref(allowed);
    if (ok) {
        return 0;
    }
    if (vm.control) {
        return api_fail(ctx, ERR_OPERATION_NOT_ALLOWED,
                        "not allowed on the control domain");
    }
    if (vm.template) {
        allowed = lifecycle_allowed_ops(vm.power, false, false);
        ok = set_has(allowed, op);
        value_unref(allowed);
        if (ok) {
            return api_fail(ctx, ERR_VM_IS_TEMPLATE, ref);
        }
    }
    for (size_t i = 0; !vm.template && i < ARRAY_SIZE(states); i++) {
        allowed = lifecycle_allowed_ops(states[i], false, false);
        ok = set_has(allowed, op);
        value_unref(allowed);
        if (ok) {
            return api_fail(ctx, ERR_VM_BAD_POWER_STATE, ref, states[i],
                            vm.power);
        }
    }
    snprintf(why, sizeof why, "%s is not an allowed operation on this VM", op);
    return api_fail(ctx, ERR_OPERATION_NOT_ALLOWED, why);
}

static int
api_vm_update_allowed_operations(struct api_ctx *ctx, struct value **args,
                                 struct value **ret)
{
    struct db *db = ctx->x->db;
    struct db_txn *txn = db_begin(db);
    const char *ref = args[1]->u.str.s;
    struct db_row *vm = db_lookup(db, CLS_VM, ref);
    const struct value *cur;

    if (!vm) {
        db_abort(txn);
        return api_fail_handle(ctx, CLS_VM, ref);
    }
    cur = vm->fields[F_VM_current_operations];
    lifecycle_refresh_allowed(txn, ref,
                              cur->type == VALUE_STRUCT && cur->u.st.n > 0);
    vmops_refresh_devices(txn, ref);
    return api_commit(ctx, txn);
}

const struct api_handler_entry vmops_handlers[] = {
    { "VBD.eject", api_vbd_eject },
    { "VBD.insert", api_vbd_insert },
    { "VBD.plug", api_vbd_plug },
    { "VBD.unplug", api_vbd_unplug },
    { "VBD.unplug_force", api_vbd_unplug_force },
    { "VIF.plug", api_vif_plug },
    { "VIF.unplug", api_vif_unplug },
    { "VIF.unplug_force", api_vif_unplug_force },
    { "VM.add_to_VCPUs_params_live", api_vm_add_to_vcpus_params_live },
    { "VM.assert_can_boot_here", api_vm_assert_can_boot_here },
    { "VM.assert_operation_valid", api_vm_assert_operation_valid },
    { "VM.compute_memory_overhead", api_vm_compute_memory_overhead },
    { "VM.get_allowed_VBD_devices", api_vm_get_allowed_vbd_devices },
    { "VM.get_allowed_VIF_devices", api_vm_get_allowed_vif_devices },
    { "VM.get_boot_record", api_vm_get_boot_record },
    { "VM.get_possible_hosts", api_vm_get_possible_hosts },
    { "VM.maximise_memory", api_vm_maximise_memory },
    { "VM.query_services", api_vm_query_services },
    { "VM.send_sysrq", api_vm_send_sysrq },
    { "VM.send_trigger", api_vm_send_trigger },
    { "VM.update_allowed_operations", api_vm_update_allowed_operations },
    { NULL, NULL },
};
