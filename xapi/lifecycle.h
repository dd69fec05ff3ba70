/* lifecycle.h — what lifecycle.c offers the other VM modules beyond the
 * power messages: marking a VM busy with an operation, moving a running
 * VM's memory into a file and back (VM.checkpoint in vm-snapshot.c), and
 * carrying a suspend image between a file and a VDI (VM.suspend here,
 * checkpoints there).
 *
 * An operation handle is the VM's run-time record; between begin and end
 * no power operation, device operation or other VM operation can start on
 * the VM.  The functions that take a struct api_ctx report failures with
 * api_fail() and return -1; they hold no database lock when they return. */
#ifndef LIFECYCLE_H
#define LIFECYCLE_H 1

#include <stdbool.h>

#include "api.h"

struct vm_rt;

/* Marks op ("snapshot", "clone", "revert"...) in progress on the VM after
 * checking it exists, is in one of states (a NULL-terminated list of
 * power state names, the first one being what VM_BAD_POWER_STATE calls
 * expected), is not the control domain, and (unless templates_ok) is not
 * a template.  Returns the handle or NULL after api_fail(). */
struct vm_rt *lifecycle_op_begin(struct api_ctx *ctx, const char *ref,
                                 const char *op, const char *const *states,
                                 bool templates_ok);
/* Ends the operation: clears current_operations, recomputes
 * allowed_operations and commits txn (which may carry other changes; NULL
 * for a fresh one). */
void lifecycle_op_end(struct vm_rt *rt, struct db_txn *txn);

/* Whether the VM of the handle has a domain on this host. */
bool lifecycle_has_domain(struct vm_rt *rt);

/* Stops the VM's domain, if any, the hard way, detaches its disks and
 * records it halted (VM.revert of a running VM). */
int lifecycle_stop(struct api_ctx *ctx, struct vm_rt *rt);

/* Asks the running guest to suspend, saves its memory image to path and
 * destroys the domain (detaching its disks); the database is not changed,
 * so the caller either restores the domain or records it stopped. */
int lifecycle_suspend_to_file(struct api_ctx *ctx, struct vm_rt *rt,
                              const char *path);
/* Builds the domain back from a memory image (attaching its disks),
 * unpauses it unless paused, and records it running or paused. */
int lifecycle_restore_from_file(struct api_ctx *ctx, struct vm_rt *rt,
                                const char *path, bool paused);
/* Records a VM whose domain is gone as halted (or suspended). */
void lifecycle_record_stopped(struct xapi *x, struct vm_rt *rt,
                              const char *power);

/* A memory image file in a VDI: a new VDI of type "suspend" on sr (SR
 * ref; NULL or "" picks pool.suspend_image_SR, else the SR of the VM's
 * first disk, else pool.default_SR) holding the file, named after the VM.
 * SR_SUSPEND_SPACE_INSUFFICIENT [sr] when the SR cannot hold it. */
int lifecycle_image_to_vdi(struct api_ctx *ctx, const char *vm_ref,
                           const char *sr, const char *path,
                           char *ret_vdi);
/* Writes the image held in a suspend VDI to the file path. */
int lifecycle_image_from_vdi(struct api_ctx *ctx, const char *vdi_ref,
                             const char *path);
/* A fresh temporary path for a memory image of the VM in STATE_DIR
 * (malloc'd); the caller unlinks the file. */
char *lifecycle_image_path(struct xapi *x, const char *vm_uuid);

#endif
