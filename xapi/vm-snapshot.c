/* vm-snapshot.c — the VM messages that copy or replace a VM's disks:
 * VM.clone and VM.copy, VM.snapshot and VM.checkpoint, VM.revert and
 * VM.provision, as XenServer does them.  (VM.snapshot_with_quiesce is
 * removed from the API, as in XenServer 8: the dispatcher answers
 * MESSAGE_REMOVED.)
 *
 * The disks are handled by the storage layer (xapi/storage.h: VDI
 * snapshot, clone and copy, each slow enough to run outside any database
 * lock); the records by one transaction at the end, so a client never sees
 * a half-made VM, and VDIs made for an operation that fails are destroyed
 * again.  The VM is marked busy with the operation (lifecycle.h) for the
 * whole time, so it cannot be started or shut down underneath.  A
 * checkpoint also moves the running domain's memory into a VDI and back,
 * through lifecycle.c.  docs/snapshots.md describes what each operation
 * does to the records and to the VHD chains. */
#include <config.h>
#include "lifecycle.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage.h"

enum disk_op {
    DISK_CLONE,         /* VM.clone: linked clones of the disks */
    DISK_COPY,          /* VM.copy: full copies */
    DISK_SNAPSHOT,      /* VM.snapshot: read-only snapshots */
    DISK_CHECKPOINT,    /* VM.checkpoint: snapshots plus the memory */
};

static bool
is_null_ref(const char *ref)
{
    return !ref || !*ref || !strcmp(ref, "OpaqueRef:NULL");
}

/* One VBD of the source VM and what the operation makes of its VDI. */
struct disk {
    char vbd[48];
    char vdi[48];           /* the source VDI, "" for an empty drive */
    char new_vdi[48];       /* the VDI the new VBD points to */
    char of[48];            /* the source VDI's snapshot_of, or "" */
    bool made;              /* new_vdi was made here (undo destroys it) */
    bool is_cd;
};

struct disk_set {
    struct disk *d;
    size_t n;
};

static void
disk_set_clear(struct disk_set *ds)
{
    free(ds->d);
    ds->d = NULL;
    ds->n = 0;
}

/* Reads the VBDs of a VM; db read lock held.  VBDs whose VDI is in
 * ignore (a VDI ref set, or NULL) are left out. */
static void
disk_set_read(struct db *db, const struct db_row *vm, const struct value *ignore,
              struct disk_set *ret)
{
    const struct value *vbds = vm->fields[F_VM_VBDs];

    memset(ret, 0, sizeof *ret);
    ret->d = xcalloc(vbds->u.arr.n + 1, sizeof *ret->d);
    for (size_t i = 0; i < vbds->u.arr.n; i++) {
        struct db_row *b = db_lookup(db, CLS_VBD, vbds->u.arr.items[i]->u.str.s);
        struct disk *d = &ret->d[ret->n];
        const char *vdi;
        bool skip = false;
        if (!b) {
            continue;
        }
        vdi = b->fields[F_VBD_VDI]->u.str.s;
        for (size_t k = 0; ignore && k < ignore->u.arr.n; k++) {
            skip |= !strcmp(ignore->u.arr.items[k]->u.str.s, vdi);
        }
        if (skip && !is_null_ref(vdi)) {
            continue;
        }
        snprintf(d->vbd, sizeof d->vbd, "%s", b->ref);
        if (!b->fields[F_VBD_empty]->u.b) {
            struct db_row *v = db_lookup(db, CLS_VDI, vdi);
            const char *of = v ? v->fields[F_VDI_snapshot_of]->u.str.s : NULL;
            if (v) {
                snprintf(d->vdi, sizeof d->vdi, "%s", vdi);
            }
            if (!is_null_ref(of)) {
                snprintf(d->of, sizeof d->of, "%s", of);
            }
        }
        snprintf(d->new_vdi, sizeof d->new_vdi, "%s",
                 d->vdi[0] ? d->vdi : "OpaqueRef:NULL");
        d->is_cd = !strcmp(b->fields[F_VBD_type]->u.str.s, "CD");
        ret->n++;
    }
}

/* Destroys the VDIs an operation made, keeping the error already
 * recorded in ctx. */
static void
undo_vdis(struct api_ctx *ctx, struct disk_set *ds, const char *extra)
{
    struct value *keep = ctx->error;

    ctx->error = NULL;
    for (size_t i = 0; i < ds->n; i++) {
        if (ds->d[i].made) {
            storage_vdi_destroy(ctx, ds->d[i].new_vdi);
            value_unref(ctx->error);
            ctx->error = NULL;
            ds->d[i].made = false;
        }
    }
    if (!is_null_ref(extra)) {
        storage_vdi_destroy(ctx, extra);
        value_unref(ctx->error);
        ctx->error = NULL;
    }
    ctx->error = keep;
}

/* Makes the new VDI of every disk (CD drives keep their image, which is
 * shared media), reporting progress between from and to. */
static int
disks_run(struct api_ctx *ctx, struct disk_set *ds, enum disk_op op,
          const char *sr, double from, double to)
{
    size_t n_disks = 0, done = 0;
    double step;

    for (size_t i = 0; i < ds->n; i++) {
        n_disks += ds->d[i].vdi[0] && !ds->d[i].is_cd;
    }
    step = (to - from) / (double) MAX(n_disks, 1);
    for (size_t i = 0; i < ds->n; i++) {
        struct disk *d = &ds->d[i];
        int rc;
        if (!d->vdi[0] || d->is_cd) {
            continue;
        }
        if (api_task_cancelled(ctx)) {
            return api_fail(ctx, ERR_TASK_CANCELLED, ctx->task);
        }
        switch (op) {
        case DISK_CLONE:
            rc = storage_vdi_clone(ctx, d->vdi, d->new_vdi);
            break;
        case DISK_COPY:
            /* Each disk's copy reports progress within its own slice, so
             * the task's progress rises steadily across the disks. */
            rc = storage_vdi_copy_range(ctx, d->vdi,
                                        is_null_ref(sr) ? NULL : sr, NULL,
                                        from + step * (double) done,
                                        from + step * (double) (done + 1),
                                        d->new_vdi);
            break;
        default:
            rc = storage_vdi_snapshot(ctx, d->vdi, d->new_vdi);
            break;
        }
        if (rc) {
            return -1;
        }
        d->made = true;
        done++;
        api_task_set_progress(ctx, from + step * (double) done);
    }
    return 0;
}

static void
random_mac(char *buf)
{
    unsigned char b[6];

    random_bytes(b, sizeof b);
    /* Locally administered, unicast. */
    snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x",
             (b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]);
}

/* Copies the VIFs of VM src to dst inside txn; a snapshot keeps their MAC
 * addresses (a revert must give the guest the same network identity),
 * other copies get new ones. */
static int
copy_vifs(struct db_txn *txn, const char *src, const char *dst, bool keep_mac)
{
    struct db *db = db_txn_db(txn);
    struct db_row *vm = db_lookup(db, CLS_VM, src);
    struct value *vifs = vm ? value_ref(vm->fields[F_VM_VIFs]) : value_empty_array();
    int rc = 0;

    for (size_t i = 0; !rc && i < vifs->u.arr.n; i++) {
        struct db_row *v = db_lookup(db, CLS_VIF, vifs->u.arr.items[i]->u.str.s);
        struct value **f;
        char ref[48], uuid[40], mac[18];
        if (!v) {
            continue;
        }
        f = xcalloc(api_classes[CLS_VIF].n_fields, sizeof *f);
        for (size_t k = 0; k < api_classes[CLS_VIF].n_fields; k++) {
            if (api_classes[CLS_VIF].fields[k].qualifier != API_RO_RUNTIME) {
                f[k] = value_ref(v->fields[k]);
            }
        }
        db_new_ref(ref);
        uuid_generate(uuid);
        value_unref(f[F_VIF_uuid]);
        f[F_VIF_uuid] = value_string(uuid);
        value_unref(f[F_VIF_VM]);
        f[F_VIF_VM] = value_string(dst);
        value_unref(f[F_VIF_currently_attached]);
        f[F_VIF_currently_attached] = value_false();
        if (!keep_mac) {
            random_mac(mac);
            value_unref(f[F_VIF_MAC]);
            f[F_VIF_MAC] = value_string(mac);
            value_unref(f[F_VIF_MAC_autogenerated]);
            f[F_VIF_MAC_autogenerated] = value_true();
        }
        rc = db_insert(txn, CLS_VIF, ref, f, NULL);
        free(f);
    }
    value_unref(vifs);
    return rc;
}

/* Copies the VBDs listed in ds to VM dst, each pointing to its disk's
 * new_vdi. */
static int
copy_vbds(struct db_txn *txn, const struct disk_set *ds, const char *dst)
{
    struct db *db = db_txn_db(txn);
    int rc = 0;

    for (size_t i = 0; !rc && i < ds->n; i++) {
        struct db_row *b = db_lookup(db, CLS_VBD, ds->d[i].vbd);
        struct value **f;
        char ref[48], uuid[40];
        if (!b) {
            continue;
        }
        f = xcalloc(api_classes[CLS_VBD].n_fields, sizeof *f);
        for (size_t k = 0; k < api_classes[CLS_VBD].n_fields; k++) {
            if (api_classes[CLS_VBD].fields[k].qualifier != API_RO_RUNTIME) {
                f[k] = value_ref(b->fields[k]);
            }
        }
        db_new_ref(ref);
        uuid_generate(uuid);
        value_unref(f[F_VBD_uuid]);
        f[F_VBD_uuid] = value_string(uuid);
        value_unref(f[F_VBD_VM]);
        f[F_VBD_VM] = value_string(dst);
        value_unref(f[F_VBD_VDI]);
        f[F_VBD_VDI] = value_string(ds->d[i].new_vdi);
        value_unref(f[F_VBD_currently_attached]);
        f[F_VBD_currently_attached] = value_false();
        rc = db_insert(txn, CLS_VBD, ref, f, NULL);
        free(f);
    }
    return rc;
}

/* Fields a new VM does not take from its source: identity, run-time
 * state, relations (rebuilt from the devices), metrics and snapshot
 * links. */
static bool
copy_skips(int f)
{
    static const int skip[] = {
        F_VM_uuid, F_VM_allowed_operations, F_VM_current_operations,
        F_VM_power_state, F_VM_resident_on, F_VM_scheduled_to_be_resident_on,
        F_VM_domid, F_VM_metrics, F_VM_guest_metrics, F_VM_is_default_template,
        F_VM_is_control_domain, F_VM_snapshot_of, F_VM_snapshot_time,
        F_VM_is_a_snapshot, F_VM_transportable_snapshot_id, F_VM_suspend_VDI,
        F_VM_parent, F_VM_name_label, F_VM_snapshot_info,
        F_VM_snapshot_metadata,
    };

    for (size_t i = 0; i < ARRAY_SIZE(skip); i++) {
        if (skip[i] == f) {
            return true;
        }
    }
    return api_classes[CLS_VM].fields[f].relation_set;
}

/* Inserts the new VM record (with its metrics, VIFs and VBDs) inside
 * txn; with a suspend_vdi (a snapshot with memory) it is Suspended. */
static int
insert_vm(struct db_txn *txn, const char *src_ref, const char *new_ref,
          const char *name, enum disk_op op, const struct disk_set *ds,
          const char *suspend_vdi)
{
    struct db *db = db_txn_db(txn);
    struct db_row *src = db_lookup(db, CLS_VM, src_ref);
    bool snap = op == DISK_SNAPSHOT || op == DISK_CHECKPOINT;
    struct value **f = xcalloc(api_classes[CLS_VM].n_fields, sizeof *f);
    struct value **mf;
    struct value *oc;
    char uuid[40], mref[48], muuid[40];
    const char *power = suspend_vdi ? "Suspended" : "Halted";
    bool template;
    int rc;

    for (size_t i = 0; i < api_classes[CLS_VM].n_fields; i++) {
        if (!copy_skips(i)) {
            f[i] = value_ref(src->fields[i]);
        }
    }
    /* Snapshots are templates, as in XenServer: they cannot be started,
     * only reverted to, cloned or exported. */
    template = snap || src->fields[F_VM_is_a_template]->u.b;
    uuid_generate(uuid);
    db_new_ref(mref);
    uuid_generate(muuid);
    value_unref(f[F_VM_is_a_template]);
    f[F_VM_is_a_template] = value_bool(template);
    f[F_VM_uuid] = value_string(uuid);
    f[F_VM_name_label] = value_string(name);
    f[F_VM_power_state] = value_string(power);
    f[F_VM_domid] = value_int(-1);
    f[F_VM_metrics] = value_string(mref);
    f[F_VM_suspend_VDI] = value_string(suspend_vdi ? suspend_vdi
                                                   : "OpaqueRef:NULL");
    oc = value_copy_shallow(src->fields[F_VM_other_config]);
    value_struct_remove(oc, "default_template");
    value_unref(f[F_VM_other_config]);
    f[F_VM_other_config] = oc;
    if (snap) {
        struct value *info = value_struct(1);
        value_struct_put(info, "power-state-at-snapshot",
                         value_string(src->fields[F_VM_power_state]->u.str.s));
        f[F_VM_is_a_snapshot] = value_true();
        f[F_VM_snapshot_of] = value_string(src_ref);
        f[F_VM_snapshot_time] = value_datetime_secs(time_wall_ms() / 1000);
        f[F_VM_snapshot_info] = info;
        f[F_VM_transportable_snapshot_id] = value_empty_string();
        /* The snapshot takes the VM's place in its snapshot tree: it
         * hangs under the VM's previous parent, and the VM under it. */
        f[F_VM_parent] = value_ref(src->fields[F_VM_parent]);
    } else {
        f[F_VM_parent] = value_string(src_ref);
    }
    f[F_VM_allowed_operations] = lifecycle_allowed_ops(power, template, false);
    mf = db_fields_new(CLS_VM_metrics, muuid);
    rc = db_insert_fields(txn, CLS_VM_metrics, mref, mf);
    if (!rc) {
        rc = db_insert(txn, CLS_VM, new_ref, f, NULL);
    } else {
        for (size_t i = 0; i < api_classes[CLS_VM].n_fields; i++) {
            value_unref(f[i]);
        }
    }
    free(f);
    if (!rc) {
        rc = copy_vifs(txn, src_ref, new_ref, snap);
    }
    if (!rc) {
        rc = copy_vbds(txn, ds, new_ref);
    }
    if (!rc && snap) {
        rc = db_update(txn, CLS_VM, src_ref, F_VM_parent, value_string(new_ref));
    }
    if (!rc) {
        lifecycle_refresh_allowed(txn, new_ref, false);
    }
    return rc;
}

static const char *const st_halted[] = { "Halted", NULL };
static const char *const st_running[] = { "Running", NULL };
static const char *const st_snapshot[] = { "Halted", "Running", "Suspended",
                                           NULL };
static const char *const st_any[] = { "Halted", "Running", "Paused",
                                      "Suspended", NULL };

/* The work of clone, copy, snapshot and checkpoint: new disks, then the
 * new record.  ignore is VM.snapshot's ignore_vdis (or NULL); sr is
 * VM.copy's SR (or NULL). */
static int
vm_copy(struct api_ctx *ctx, const char *ref, const char *name,
        enum disk_op op, const char *sr, const struct value *ignore,
        struct value **ret)
{
    static const char *const op_names[] = {
        [DISK_CLONE] = "clone", [DISK_COPY] = "copy",
        [DISK_SNAPSHOT] = "snapshot", [DISK_CHECKPOINT] = "checkpoint",
    };
    struct xapi *x = ctx->x;
    struct disk_set ds = { NULL, 0 };
    struct vm_rt *rt = NULL;
    struct db_txn *txn = NULL;
    struct db_row *vm;
    char new_ref[48], memory_vdi[48] = "OpaqueRef:NULL", uuid[40];
    char src_memory[48] = "OpaqueRef:NULL";
    char *image = NULL;
    const char *const *states;
    bool template = false, snap = op == DISK_SNAPSHOT || op == DISK_CHECKPOINT;
    bool suspended_domain = false;
    int rc = -1;

    db_read_lock(x->db);
    vm = db_lookup(x->db, CLS_VM, ref);
    if (vm) {
        template = vm->fields[F_VM_is_a_template]->u.b;
        snprintf(uuid, sizeof uuid, "%s", vm->fields[F_VM_uuid]->u.str.s);
    }
    db_read_unlock(x->db);
    if (!vm) {
        return api_fail_handle(ctx, CLS_VM, ref);
    }
    if (snap && template) {
        return api_fail(ctx, ERR_VM_IS_TEMPLATE, ref);
    }
    states = op == DISK_CHECKPOINT ? st_running
             : op == DISK_SNAPSHOT ? st_snapshot : st_halted;
    /* Templates and snapshots are read-only sources that many clients
     * clone at once (a pool filling up from one template), so only a VM
     * is marked busy: it must not start or stop while its disks are
     * copied. */
    if (!template) {
        rt = lifecycle_op_begin(ctx, ref, op_names[op], states, false);
        if (!rt) {
            return -1;
        }
    }
    if (op == DISK_COPY && !is_null_ref(sr)) {
        struct db_row *sr_row;
        db_read_lock(x->db);
        sr_row = db_lookup(x->db, CLS_SR, sr);
        db_read_unlock(x->db);
        if (!sr_row) {
            api_fail_handle(ctx, CLS_SR, sr);
            goto out;
        }
    }
    db_read_lock(x->db);
    vm = db_lookup(x->db, CLS_VM, ref);
    if (vm) {
        disk_set_read(x->db, vm, ignore, &ds);
        /* A snapshot of a suspended VM keeps its memory too, as a
         * checkpoint does. */
        if (op == DISK_SNAPSHOT
            && !strcmp(vm->fields[F_VM_power_state]->u.str.s, "Suspended")
            && db_lookup(x->db, CLS_VDI,
                         vm->fields[F_VM_suspend_VDI]->u.str.s)) {
            snprintf(src_memory, sizeof src_memory, "%s",
                     vm->fields[F_VM_suspend_VDI]->u.str.s);
        }
    }
    db_read_unlock(x->db);
    if (!vm) {
        api_fail_handle(ctx, CLS_VM, ref);
        goto out;
    }

    if (op == DISK_CHECKPOINT) {
        /* The memory first, then the disks while the guest is stopped, so
         * both show the same moment. */
        image = lifecycle_image_path(x, uuid);
        if (lifecycle_suspend_to_file(ctx, rt, image)) {
            value_unref(ctx->error);
            ctx->error = NULL;
            api_fail(ctx, ERR_VM_CHECKPOINT_SUSPEND_FAILED, ref);
            goto out;
        }
        suspended_domain = true;
        api_task_set_progress(ctx, 0.3);
    }
    if (disks_run(ctx, &ds, op, sr, op == DISK_CHECKPOINT ? 0.3 : 0.0, 0.8)) {
        goto out;
    }
    if (op == DISK_CHECKPOINT
        && lifecycle_image_to_vdi(ctx, ref, NULL, image, memory_vdi)) {
        snprintf(memory_vdi, sizeof memory_vdi, "OpaqueRef:NULL");
        goto out;
    }
    if (!is_null_ref(src_memory)
        && storage_vdi_clone(ctx, src_memory, memory_vdi)) {
        snprintf(memory_vdi, sizeof memory_vdi, "OpaqueRef:NULL");
        goto out;
    }
    db_new_ref(new_ref);
    txn = db_begin(x->db);
    if (!db_lookup(x->db, CLS_VM, ref)) {
        api_fail_handle(ctx, CLS_VM, ref);
        goto out;
    }
    rc = insert_vm(txn, ref, new_ref, name, op, &ds,
                   is_null_ref(memory_vdi) ? NULL : memory_vdi);
    if (rc) {
        api_fail_internal(ctx, "cannot record the new VM: %s", strerror(-rc));
        rc = -1;
        goto out;
    }
    rc = api_commit(ctx, txn);
    txn = NULL;
    if (rc) {
        goto out;
    }
    *ret = value_string(new_ref);
    for (size_t i = 0; i < ds.n; i++) {
        ds.d[i].made = false;       /* they belong to the new VM now */
    }
    snprintf(memory_vdi, sizeof memory_vdi, "OpaqueRef:NULL");
    rc = 0;
out:
    db_abort(txn);
    if (rc) {
        undo_vdis(ctx, &ds, memory_vdi);
    }
    if (suspended_domain) {
        /* The original goes on running from its memory image, whether or
         * not the checkpoint could be recorded. */
        struct api_ctx again = { .x = x, .method = "internal" };
        if (lifecycle_restore_from_file(&again, rt, image, false)) {
            lifecycle_record_stopped(x, rt, "Halted");
            if (!rc) {
                value_unref(*ret);
                *ret = NULL;
            }
            value_unref(ctx->error);
            ctx->error = NULL;
            api_fail(ctx, ERR_VM_CHECKPOINT_RESUME_FAILED, ref);
            rc = -1;
        }
        value_unref(again.error);
    }
    if (image) {
        unlink(image);
        free(image);
    }
    if (rt) {
        lifecycle_op_end(rt, NULL);
    }
    disk_set_clear(&ds);
    return rc ? -1 : 0;
}

int
api_vm_clone(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return vm_copy(ctx, args[1]->u.str.s, args[2]->u.str.s, DISK_CLONE, NULL,
                   NULL, ret);
}

/* VM.copy: full copies of the disks on sr, or each on its own SR when sr
 * is not a valid reference. */
int
api_vm_copy(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return vm_copy(ctx, args[1]->u.str.s, args[2]->u.str.s, DISK_COPY,
                   args[3]->u.str.s, NULL, ret);
}

static int
api_vm_snapshot(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const struct value *ignore = ctx->msg->n_params > 3 ? args[3] : NULL;

    return vm_copy(ctx, args[1]->u.str.s, args[2]->u.str.s, DISK_SNAPSHOT,
                   NULL, ignore, ret);
}

static int
api_vm_checkpoint(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return vm_copy(ctx, args[1]->u.str.s, args[2]->u.str.s, DISK_CHECKPOINT,
                   NULL, NULL, ret);
}

/* ---- VM.revert ---- */

/* Fields a revert leaves as they are on the VM: its identity, its place
 * among snapshots, run-time state and devices (reverted separately). */
static bool
revert_keeps(int f)
{
    static const int keep[] = {
        F_VM_uuid, F_VM_name_label, F_VM_name_description, F_VM_tags,
        F_VM_is_a_template, F_VM_is_default_template, F_VM_is_a_snapshot,
        F_VM_snapshot_of, F_VM_snapshot_time, F_VM_snapshot_info,
        F_VM_snapshot_metadata, F_VM_transportable_snapshot_id,
        F_VM_allowed_operations, F_VM_current_operations, F_VM_power_state,
        F_VM_resident_on, F_VM_scheduled_to_be_resident_on, F_VM_domid,
        F_VM_metrics, F_VM_guest_metrics, F_VM_is_control_domain,
        F_VM_suspend_VDI, F_VM_parent, F_VM_blocked_operations,
    };

    for (size_t i = 0; i < ARRAY_SIZE(keep); i++) {
        if (keep[i] == f) {
            return true;
        }
    }
    return api_classes[CLS_VM].fields[f].relation_set;
}

/* Deletes the VM's VBDs and VIFs inside txn. */
static void
delete_devices(struct db_txn *txn, const char *vm_ref)
{
    static const struct { int set; int cls; } devs[] = {
        { F_VM_VBDs, CLS_VBD }, { F_VM_VIFs, CLS_VIF },
    };
    struct db *db = db_txn_db(txn);

    for (size_t d = 0; d < ARRAY_SIZE(devs); d++) {
        struct db_row *vm = db_lookup(db, CLS_VM, vm_ref);
        struct value *set = value_ref(vm->fields[devs[d].set]);
        for (size_t i = 0; i < set->u.arr.n; i++) {
            db_delete(txn, devs[d].cls, set->u.arr.items[i]->u.str.s);
        }
        value_unref(set);
    }
}

/* VM.revert: the VM takes the snapshot's configuration, clones of its
 * disks and (for a checkpoint) of its memory; the VM's disks that the
 * snapshot's are snapshots of are destroyed.  Following XenServer's
 * design note, other snapshots of those disks are re-pointed at the new
 * clones so the snapshot tree stays connected.  Unlike XenServer, the
 * clones are made before the old disks are destroyed: a revert that fails
 * half-way then leaves the VM as it was, at the cost of needing the space
 * for both for a moment. */
static int
api_vm_revert(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct xapi *x = ctx->x;
    const char *snap = args[1]->u.str.s;
    struct disk_set ds = { NULL, 0 }, old = { NULL, 0 };
    char vm_ref[48] = "OpaqueRef:NULL", memory[48] = "OpaqueRef:NULL";
    char snap_memory[48] = "OpaqueRef:NULL", old_memory[48] = "";
    char power[16] = "Halted";
    struct vm_rt *rt = NULL;
    struct db_txn *txn = NULL;
    struct db_row *row, *vm;
    bool is_snap = false;
    int rc = -1;

    db_read_lock(x->db);
    row = db_lookup(x->db, CLS_VM, snap);
    if (row) {
        is_snap = row->fields[F_VM_is_a_snapshot]->u.b;
        snprintf(vm_ref, sizeof vm_ref, "%s", row->fields[F_VM_snapshot_of]->u.str.s);
        vm = db_lookup(x->db, CLS_VM, vm_ref);
        if (!vm) {
            is_snap = false;
        }
    }
    db_read_unlock(x->db);
    if (!row) {
        return api_fail_handle(ctx, CLS_VM, snap);
    }
    if (!is_snap) {
        return api_fail(ctx, ERR_VM_REVERT_FAILED, vm_ref, snap);
    }
    rt = lifecycle_op_begin(ctx, vm_ref, "revert", st_any, false);
    if (!rt) {
        return -1;
    }
    if (lifecycle_has_domain(rt) && lifecycle_stop(ctx, rt)) {
        goto out;
    }
    db_read_lock(x->db);
    row = db_lookup(x->db, CLS_VM, snap);
    vm = db_lookup(x->db, CLS_VM, vm_ref);
    if (row && vm) {
        disk_set_read(x->db, row, NULL, &ds);
        disk_set_read(x->db, vm, NULL, &old);
        if (!strcmp(row->fields[F_VM_power_state]->u.str.s, "Suspended")) {
            snprintf(snap_memory, sizeof snap_memory, "%s",
                     row->fields[F_VM_suspend_VDI]->u.str.s);
        }
        snprintf(old_memory, sizeof old_memory, "%s",
                 vm->fields[F_VM_suspend_VDI]->u.str.s);
    }
    db_read_unlock(x->db);
    if (!row || !vm) {
        api_fail(ctx, ERR_VM_REVERT_FAILED, vm_ref, snap);
        goto out;
    }
    if (disks_run(ctx, &ds, DISK_CLONE, NULL, 0.1, 0.7)) {
        goto out;
    }
    if (!is_null_ref(snap_memory)) {
        if (storage_vdi_clone(ctx, snap_memory, memory)) {
            snprintf(memory, sizeof memory, "OpaqueRef:NULL");
            goto out;
        }
        snprintf(power, sizeof power, "Suspended");
    }

    txn = db_begin(x->db);
    row = db_lookup(x->db, CLS_VM, snap);
    vm = db_lookup(x->db, CLS_VM, vm_ref);
    if (!row || !vm) {
        api_fail(ctx, ERR_VM_REVERT_FAILED, vm_ref, snap);
        goto out;
    }
    for (size_t i = 0; i < api_classes[CLS_VM].n_fields; i++) {
        if (!revert_keeps(i)) {
            db_update(txn, CLS_VM, vm_ref, i, value_ref(row->fields[i]));
            row = db_lookup(x->db, CLS_VM, snap);
        }
    }
    delete_devices(txn, vm_ref);
    rc = copy_vifs(txn, snap, vm_ref, true);
    if (!rc) {
        rc = copy_vbds(txn, &ds, vm_ref);
    }
    /* Snapshots of the disks about to go now hang off their successors. */
    for (size_t i = 0; !rc && i < ds.n; i++) {
        struct db_row *orig = ds.d[i].made && ds.d[i].of[0]
                              ? db_lookup(x->db, CLS_VDI, ds.d[i].of) : NULL;
        struct value *kids;
        if (!orig) {
            continue;
        }
        kids = value_ref(orig->fields[F_VDI_snapshots]);
        for (size_t k = 0; !rc && k < kids->u.arr.n; k++) {
            rc = db_update(txn, CLS_VDI, kids->u.arr.items[k]->u.str.s,
                           F_VDI_snapshot_of, value_string(ds.d[i].new_vdi));
        }
        value_unref(kids);
    }
    if (!rc) {
        db_update(txn, CLS_VM, vm_ref, F_VM_power_state, value_string(power));
        db_update(txn, CLS_VM, vm_ref, F_VM_suspend_VDI, value_string(memory));
        db_update(txn, CLS_VM, vm_ref, F_VM_parent, value_string(snap));
    }
    if (rc) {
        api_fail_internal(ctx, "cannot record the revert: %s", strerror(-rc));
        rc = -1;
        goto out;
    }
    rc = api_commit(ctx, txn);
    txn = NULL;
    if (rc) {
        goto out;
    }
    for (size_t i = 0; i < ds.n; i++) {
        ds.d[i].made = false;
    }
    snprintf(memory, sizeof memory, "OpaqueRef:NULL");
    /* The VM's former disks that the snapshot replaced, and its former
     * memory image, are gone; disks added after the snapshot stay (their
     * VBDs went with the rest of the VM's devices). */
    for (size_t i = 0; i < old.n; i++) {
        bool replaced = false;
        if (!old.d[i].vdi[0] || old.d[i].is_cd) {
            continue;
        }
        for (size_t k = 0; k < ds.n; k++) {
            replaced |= ds.d[k].of[0] && !strcmp(ds.d[k].of, old.d[i].vdi);
        }
        if (replaced) {
            struct value *keep = ctx->error;
            ctx->error = NULL;
            if (storage_vdi_destroy(ctx, old.d[i].vdi)) {
                LOG_WARN("revert of %s: old disk %s not destroyed", vm_ref,
                         old.d[i].vdi);
            }
            value_unref(ctx->error);
            ctx->error = keep;
        }
    }
    if (!is_null_ref(old_memory)) {
        struct value *keep = ctx->error;
        ctx->error = NULL;
        storage_vdi_destroy(ctx, old_memory);
        value_unref(ctx->error);
        ctx->error = keep;
    }
    rc = 0;
out:
    db_abort(txn);
    if (rc) {
        undo_vdis(ctx, &ds, memory);
    }
    lifecycle_op_end(rt, NULL);
    disk_set_clear(&ds);
    disk_set_clear(&old);
    return rc ? -1 : 0;
}

/* ---- VM.provision ---- */

/* One <disk .../> of a template's other_config "disks". */
struct prov_disk {
    char device[16];
    int64_t size;
    char sr_uuid[40];
    bool bootable;
    char type[32];
};

/* Finds attribute name="..." inside one element's text [p, end). */
static bool
xml_attr(const char *p, const char *end, const char *name, char *buf,
         size_t size)
{
    size_t n = strlen(name);

    for (const char *q = p; q + n + 2 < end; q++) {
        if (!strncmp(q, name, n) && q[n] == '=' && (q[n + 1] == '"'
                                                    || q[n + 1] == '\'')
            && (q == p || q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\n')) {
            char quote = q[n + 1];
            const char *v = q + n + 2, *e = memchr(v, quote, (size_t) (end - v));
            if (!e || (size_t) (e - v) >= size) {
                return false;
            }
            memcpy(buf, v, (size_t) (e - v));
            buf[e - v] = '\0';
            return true;
        }
    }
    return false;
}

/* Parses XenServer's <provision><disk device="0" size="..." sr="..."
 * bootable="true" type="system"/>...</provision>.  Returns 0, or -EINVAL
 * for a description that cannot be used. */
static int
parse_disks(const char *xml, struct prov_disk **ret, size_t *ret_n)
{
    struct prov_disk *disks = NULL;
    size_t n = 0;
    const char *p = xml;

    if (!strstr(xml, "<provision")) {
        return -EINVAL;
    }
    while ((p = strstr(p, "<disk"))) {
        const char *end = strchr(p, '>');
        struct prov_disk d;
        char size[32] = "", boot[16] = "false";
        char *e;
        if (!end) {
            free(disks);
            return -EINVAL;
        }
        memset(&d, 0, sizeof d);
        if (!xml_attr(p, end, "device", d.device, sizeof d.device)
            || !xml_attr(p, end, "size", size, sizeof size)) {
            free(disks);
            return -EINVAL;
        }
        xml_attr(p, end, "sr", d.sr_uuid, sizeof d.sr_uuid);
        xml_attr(p, end, "bootable", boot, sizeof boot);
        if (!xml_attr(p, end, "type", d.type, sizeof d.type)) {
            snprintf(d.type, sizeof d.type, "system");
        }
        d.bootable = !strcmp(boot, "true");
        d.size = strtoll(size, &e, 10);
        if (*e || d.size <= 0 || atoi(d.device) < 0
            || api_enum_value_find(ENUM_vdi_type, d.type) < 0) {
            free(disks);
            return -EINVAL;
        }
        disks = xrealloc(disks, (n + 1) * sizeof *disks);
        disks[n++] = d;
        p = end;
    }
    *ret = disks;
    *ret_n = n;
    return 0;
}

/* VM.provision: makes the disks a template's other_config "disks"
 * describes (on the named SR, or pool.default_SR) with VBDs for them, and
 * removes the key, as XenServer does, so that provisioning twice does not
 * make the disks twice.  xe vm-install clones a template and provisions
 * the clone. */
static int
api_vm_provision(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct xapi *x = ctx->x;
    const char *ref = args[1]->u.str.s;
    struct prov_disk *disks = NULL;
    struct disk_set made = { NULL, 0 };
    struct vm_rt *rt;
    struct db_txn *txn = NULL;
    struct db_row *vm, *pool;
    char **srs = NULL, *xml = NULL, *vm_name = NULL;
    size_t n = 0;
    int rc = -1;

    rt = lifecycle_op_begin(ctx, ref, "provision", st_halted, true);
    if (!rt) {
        return -1;
    }
    db_read_lock(x->db);
    vm = db_lookup(x->db, CLS_VM, ref);
    if (vm) {
        const char *v = value_struct_get_string(vm->fields[F_VM_other_config],
                                                "disks");
        xml = v ? xstrdup(v) : NULL;
        vm_name = xstrdup(vm->fields[F_VM_name_label]->u.str.s);
    }
    db_read_unlock(x->db);
    if (!xml) {
        rc = 0;                 /* nothing to provision */
        goto out;
    }
    if (parse_disks(xml, &disks, &n)) {
        api_fail(ctx, ERR_INVALID_VALUE, "other_config:disks", xml);
        goto out;
    }
    /* Every SR is checked before any disk is made. */
    srs = xcalloc(n + 1, sizeof *srs);
    db_read_lock(x->db);
    pool = db_lookup(x->db, CLS_pool, x->pool_ref);
    for (size_t i = 0; i < n; i++) {
        struct db_row *sr;
        if (disks[i].sr_uuid[0]) {
            sr = db_lookup_uuid(x->db, CLS_SR, disks[i].sr_uuid);
            if (!sr) {
                db_read_unlock(x->db);
                api_fail(ctx, ERR_UUID_INVALID, "SR", disks[i].sr_uuid);
                goto out;
            }
        } else {
            const char *def = pool ? pool->fields[F_pool_default_SR]->u.str.s
                                   : "OpaqueRef:NULL";
            sr = db_lookup(x->db, CLS_SR, def);
            if (!sr) {
                char *d = xstrdup(def);
                db_read_unlock(x->db);
                api_fail(ctx, ERR_DEFAULT_SR_NOT_FOUND, d);
                free(d);
                goto out;
            }
        }
        srs[i] = xstrdup(sr->ref);
    }
    db_read_unlock(x->db);

    made.d = xcalloc(n + 1, sizeof *made.d);
    for (size_t i = 0; i < n; i++) {
        struct storage_vdi_spec spec;
        struct value *oc = value_struct(1);
        char *label = xasprintf("%s %s", vm_name, disks[i].device);
        int r;
        memset(&spec, 0, sizeof spec);
        spec.sr = srs[i];
        spec.name_label = label;
        spec.name_description = "Created by template provisioner";
        spec.virtual_size = disks[i].size;
        spec.type = disks[i].type;
        value_struct_put(oc, "provisioned-for", value_string(ref));
        spec.other_config = oc;
        r = storage_vdi_create(ctx, &spec, made.d[i].new_vdi);
        value_unref(oc);
        free(label);
        if (r) {
            goto out;
        }
        made.d[i].made = true;
        made.n++;
        api_task_set_progress(ctx, 0.9 * (double) (i + 1) / (double) n);
    }
    txn = db_begin(x->db);
    if (!db_lookup(x->db, CLS_VM, ref)) {
        api_fail_handle(ctx, CLS_VM, ref);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct value **f;
        struct value *oc = value_struct(1);
        char bref[48], buuid[40];
        int r;
        uuid_generate(buuid);
        db_new_ref(bref);
        f = db_fields_new(CLS_VBD, buuid);
        /* owner: xe vm-uninstall destroys the disks the VM owns. */
        value_struct_put(oc, "owner", value_string("true"));
        f[F_VBD_VM] = value_string(ref);
        f[F_VBD_VDI] = value_string(made.d[i].new_vdi);
        f[F_VBD_userdevice] = value_string(disks[i].device);
        f[F_VBD_bootable] = value_bool(disks[i].bootable);
        f[F_VBD_mode] = value_string("RW");
        f[F_VBD_type] = value_string("Disk");
        f[F_VBD_empty] = value_false();
        f[F_VBD_other_config] = oc;
        r = db_insert_fields(txn, CLS_VBD, bref, f);
        if (r) {
            api_fail_internal(ctx, "cannot record a VBD: %s", strerror(-r));
            goto out;
        }
    }
    vm = db_lookup(x->db, CLS_VM, ref);
    {
        struct value *oc = value_copy_shallow(vm->fields[F_VM_other_config]);
        value_struct_remove(oc, "disks");
        db_update(txn, CLS_VM, ref, F_VM_other_config, oc);
    }
    rc = api_commit(ctx, txn);
    txn = NULL;
    if (!rc) {
        for (size_t i = 0; i < made.n; i++) {
            made.d[i].made = false;
        }
    }
out:
    db_abort(txn);
    if (rc) {
        undo_vdis(ctx, &made, NULL);
    }
    lifecycle_op_end(rt, NULL);
    for (size_t i = 0; srs && i < n; i++) {
        free(srs[i]);
    }
    free(srs);
    free(disks);
    free(xml);
    free(vm_name);
    disk_set_clear(&made);
    return rc ? -1 : 0;
}

const struct api_handler_entry vmsnap_handlers[] = {
    { "VM.checkpoint", api_vm_checkpoint },
    { "VM.provision", api_vm_provision },
    { "VM.revert", api_vm_revert },
    { "VM.snapshot", api_vm_snapshot },
    { NULL, NULL },
};
