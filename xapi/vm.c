/* vm.c — hand-written VM messages.  The lifecycle (start, shutdown...)
 * arrives with the xenops issue; what is here are the VM messages whose
 * generic form would break the database's invariants. */
#include <config.h>
#include "api.h"

#include <stdlib.h>
#include <string.h>

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
 * Disks (VDIs) are not touched.  Only a halted or suspended VM that is not
 * the control domain can be destroyed. */
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
        char *metrics = xstrdup(vm->fields[F_VM_metrics]->u.str.s);
        char *guest = xstrdup(vm->fields[F_VM_guest_metrics]->u.str.s);
        db_delete(txn, CLS_VM_metrics, metrics);
        db_delete(txn, CLS_VM_guest_metrics, guest);
        free(metrics);
        free(guest);
    }
    db_delete(txn, CLS_VM, ref);
    rc = api_commit(ctx, txn);
    return rc;
}
