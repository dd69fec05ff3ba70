/* storage.h — the storage layer of the daemon (xapi/storage.c): SR, PBD,
 * VDI and SM records over the SR drivers of storage/sm.h, the per-SR and
 * per-VDI locks, space accounting, the garbage collector's thread, and the
 * block servers (storage/tapdisk-ctl.h) of plugged VBDs.
 *
 * Other modules use it for disks: VM.snapshot/clone/copy/provision and
 * checkpoint (xapi/vm-snapshot.c), VM start and shutdown
 * (xapi/lifecycle.c), VBD hotplug and CDs (xapi/vm-ops.c), import and
 * export over HTTP (xapi/vdi-io.c, xapi/xva.c).
 *
 * The functions that take a struct api_ctx report failures with api_fail()
 * (XenAPI's codes: VDI_IN_USE, SR_FULL, VDI_READONLY, SR_NOT_ATTACHED,
 * SR_BACKEND_FAILURE...) and return -1; they take database and storage
 * locks themselves, so callers must hold none.  Refs are written into
 * 48-byte buffers. */
#ifndef STORAGE_H
#define STORAGE_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api.h"

struct blockdev;
struct sm_attach;

/* Start-up: SM records for every driver, the default local SR ("Local
 * storage", type file on STATE_DIR/sr/local, as pool.default_SR,
 * suspend_image_SR and crash_dump_SR) on first start (no ISO library SR:
 * XenServer has none by default), plugs this host's PBDs, finds block
 * servers still running from before a restart, starts the GC thread.
 * Called after firstboot_init. */
int storage_init(struct xapi *x, char **ret_err);
/* Stops the GC thread and the block servers, detaches SRs. */
void storage_shutdown(struct xapi *x);

/* A new VDI; other_config and sm_config are maps or NULL (borrowed);
 * type is a vdi_type name ("user", "system", "suspend"...). */
struct storage_vdi_spec {
    const char *sr;             /* SR ref */
    const char *name_label;
    const char *name_description;
    int64_t virtual_size;
    const char *type;
    bool sharable;
    bool read_only;
    const struct value *other_config;
    const struct value *sm_config;
};
int storage_vdi_create(struct api_ctx *ctx,
                       const struct storage_vdi_spec *spec, char *ret_ref);
/* VDI.snapshot: a read-only snapshot (is_a_snapshot, snapshot_of,
 * snapshot_time set), also of a VDI in use (its block server is paused
 * around the driver call). */
int storage_vdi_snapshot(struct api_ctx *ctx, const char *vdi_ref,
                         char *ret_ref);
/* VDI.clone: a writable linked copy. */
int storage_vdi_clone(struct api_ctx *ctx, const char *vdi_ref,
                      char *ret_ref);
/* VDI.copy: a full copy of the data into a new VDI on sr (task progress
 * from ctx); with into_ref not NULL/empty, into that existing VDI. */
int storage_vdi_copy(struct api_ctx *ctx, const char *vdi_ref,
                     const char *sr_ref, const char *into_ref,
                     char *ret_ref);
/* The same, reporting task progress from from to to (0 <= from <= to <= 1)
 * instead of from 0 to 1, for a caller that copies several VDIs under one
 * task (VM.copy gives each disk its slice, so the progress a client polls
 * never goes back). */
int storage_vdi_copy_range(struct api_ctx *ctx, const char *vdi_ref,
                           const char *sr_ref, const char *into_ref,
                           double from, double to, char *ret_ref);
/* VDI.destroy: VDI_IN_USE while a VBD of a running VM uses it. */
int storage_vdi_destroy(struct api_ctx *ctx, const char *vdi_ref);

/* Direct access to a VDI's data (import, export, copy, suspend images):
 * attaches it with the driver, marks op in VDI.current_operations while
 * open, and fails VDI_IN_USE if a VBD has it attached (for writing, any
 * attachment; for reading, a read-write one that is not paused).  op is a
 * vdi_operations name ("copy", ...) or NULL for none.  It first waits
 * for a GC step that may hold the VDI's image open for writing; while the
 * handle is open the GC leaves the VDI's chain alone. */
struct storage_vdi_handle;
int storage_vdi_open(struct api_ctx *ctx, const char *vdi_ref, bool write,
                     const char *op, struct storage_vdi_handle **ret);
/* The opened image as a block device (the VHD chain, or the raw file). */
struct blockdev *storage_vdi_blockdev(struct storage_vdi_handle *h);
/* What the driver attached (path and format), for export as VHD. */
const struct sm_attach *storage_vdi_attachment(struct storage_vdi_handle *h);
/* Flushes, detaches, clears the operation and refreshes
 * physical_utilisation of the VDI and its SR.  Accepts NULL. */
void storage_vdi_close(struct storage_vdi_handle *h);

/* Data path of a plugged VBD: starts the VDI's block server (with the
 * VBD's qos_algorithm_params) and returns what the domain's disk backend
 * connects to (*ret_target "nbd+unix:///?socket=...", *ret_format "nbd").
 * An empty CD drive gets *ret_target NULL.  Waits for a snapshot or a GC
 * step busy with the VDI's image to end, so a failure is never transient.
 * Returns 0 or -errno with a message. */
int storage_vbd_attach(struct xapi *x, const char *vbd_ref,
                       char **ret_target, char **ret_format, char **ret_err);
/* The same for a disc about to be inserted into a CD drive: vdi_ref (not
 * NULL) is served instead of the VBD's current VDI.  With vdi_ref NULL it
 * is storage_vbd_attach.  Errors: -EBUSY (the VDI is written by another
 * VBD and not sharable: VDI_IN_USE), -EROFS (a read-write VBD of a
 * read-only VDI: VDI_READONLY), -ENODEV (its SR is not plugged here:
 * SR_NOT_ATTACHED), -ENOENT (no such VBD or VDI). */
int storage_vbd_attach_vdi(struct xapi *x, const char *vbd_ref,
                           const char *vdi_ref, char **ret_target,
                           char **ret_format, char **ret_err);
/* Stops the block server of a VBD (no-op if none). */
void storage_vbd_detach(struct xapi *x, const char *vbd_ref);
/* What a VBD's block server serves on now (malloc'd), or NULL. */
char *storage_vbd_target(struct xapi *x, const char *vbd_ref);

/* Runs the garbage collector of one SR now until it has nothing left to
 * do (tests; SR.scan also kicks it). */
int storage_gc_run(struct xapi *x, const char *sr_ref, char **ret_err);

/* The first reason an operation is not allowed, as XenAPI's check tables
 * keep it: [CODE, params...].  err is -1 while nothing forbids it.  The
 * storage and VM checks (storage.c, vm-ops.c) share it so that a refusal
 * reads the same whichever object it is about. */
struct refusal {
    int err;
    size_t n;
    char params[4][192];
};

void refusal_init(struct refusal *r);
/* Records a reason (n string parameters) unless an earlier check already
 * gave one. */
void refuse(struct refusal *r, int err, size_t n, ...);
/* Answers the call with the recorded reason. */
int fail_refusal(struct api_ctx *ctx, const struct refusal *r);

/* Hand-written messages (storage.c). */
extern const struct api_handler_entry storage_handlers[];

#endif
