/* import-export.h — what the HTTP import and export handlers share: the
 * raw disk handlers (vdi-io.c, which implements this) and the VM handlers
 * in the XVA format (xva.c).
 *
 * An import or export is one HTTP request whose data is too large for the
 * request/response server: the handler checks the request on an HTTP
 * worker (ie_begin: who is calling, may they, which task reports the
 * progress), then takes the connection over (http.h) and moves the data
 * on a thread of its own, which reads a streamed request body or writes a
 * response of any length, and completes the task at the end (ie_end).
 *
 * Errors reach the client twice, as in XenAPI: as the task's error_info
 * ([CODE, params...]) and, while the response head has not been sent yet,
 * as the HTTP status (ie_error_status). */
#ifndef IMPORT_EXPORT_H
#define IMPORT_EXPORT_H 1

#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "http.h"

/* How long a transfer waits for the client before giving up. */
#define IE_IO_TIMEOUT_MS (5 * 60 * 1000)

/* Roles that may use the import and export handlers: XenAPI's
 * http/put_import, http/get_export, http/put_import_raw_vdi and
 * http/get_export_raw_vdi permissions belong to vm-admin and above. */
#define IE_ROLES (ROLE_POOL_ADMIN | ROLE_POOL_OPERATOR \
                  | ROLE_VM_POWER_ADMIN | ROLE_VM_ADMIN)

struct ie_call {
    struct xapi *x;
    struct api_ctx ctx;         /* for storage_*(), api_fail(), progress */
    struct session *session;    /* NULL for root over the Unix socket */
    bool temp_session;          /* a Basic-auth login, ended by ie_end */
    bool own_task;              /* created here rather than given */
    char task[48];
    char peer[64];
    char label[32];
    int64_t last_progress_ms;
};

/* Checks the request (session_id in the query or a cookie, or HTTP Basic
 * authentication, or the Unix socket, which is root's as in XenAPI),
 * checks that the caller holds permission ("http/put_import"...), and
 * takes the task given as task_id or creates one labelled label
 * ("VM.import").  Returns 0, or answers hx itself (400, 401, 403, 404)
 * and returns -1 after releasing what it took. */
int ie_begin(struct ie_call *c, struct xapi *x, struct http_exchange *hx,
             const char *label, const char *permission);
/* The HTTP status that answers an error [CODE, params...]. */
int ie_error_status(const struct value *error);
/* Answers hx with the status and text of c->ctx.error (and the task-id
 * header). */
void ie_respond_error(struct ie_call *c, struct http_exchange *hx);
/* The same on a taken-over stream, before any response head went out. */
void ie_stream_respond_error(struct ie_call *c, struct http_stream *s);
/* "task-id: OpaqueRef:..." for response heads (a static buffer per
 * call). */
const char *ie_task_header(struct ie_call *c, char *buf, size_t size);
/* A query parameter, or the cookie of that name (malloc'd or NULL). */
char *ie_param(const struct http_request *req, const char *key);
bool ie_param_true(const struct http_request *req, const char *key);
/* Records progress on the task (at most a few times a second).  Returns
 * -1 after api_fail(TASK_CANCELLED) if the client cancelled the task. */
int ie_progress(struct ie_call *c, uint64_t done, uint64_t total);
/* Completes the task (with result, or with c->ctx.error when set), ends a
 * temporary session and releases the call.  result may be NULL (an empty
 * result) and is borrowed. */
void ie_end(struct ie_call *c, const struct value *result);
struct blockdev;

/* One bit per 2 MiB block of a disk (VHD_DEFAULT_BLOCK_SIZE): set where
 * its chain (or raw file) holds data, so that exports can leave out what
 * reads as zeros without reading it. */
struct ie_block_map {
    uint8_t *bits;
    uint64_t n_blocks;
    uint64_t n_set;
};
struct sm_attach;
/* Fills the map from what the SR driver attached (storage_vdi_
 * attachment()): VHD extents through the chain, or the data regions of a
 * raw file (SEEK_DATA); failing both, every block counts as data.  Free
 * m->bits afterwards. */
int ie_block_map_build(struct ie_block_map *m, const struct sm_attach *att,
                       uint64_t size);
bool ie_block_map_test(const struct ie_block_map *m, uint64_t block);

/* Whether p[0..n) is all zero bytes. */
bool ie_all_zero(const char *p, size_t n);
/* Writes buf[0..n) at off on dev, turning runs of zeros into
 * write_zeroes (or nothing, on a device that cannot: new disks read as
 * zeros), which keeps VHD images sparse.  Returns 0, or -1 after
 * api_fail(). */
int ie_write_sparse(struct api_ctx *ctx, struct blockdev *dev,
                    const char *buf, uint64_t off, size_t n);
/* A thread that writes pieces of a disk (with ie_write_sparse) while
 * the caller reads the next piece from the network: both are copies by
 * the kernel, and overlapping them nearly doubles an import's rate.  One
 * piece at a time is with the writer; submit waits until the previous
 * one is written, so with two buffers the caller always fills the one
 * the writer is not using.  A failed write is reported by the next
 * submit, wait or finish (-1, its error moved into ctx unless ctx has
 * one already); later pieces are then dropped. */
struct ie_writer;
struct ie_writer *ie_writer_start(struct api_ctx *ctx, struct blockdev *dev);
int ie_writer_submit(struct ie_writer *w, struct api_ctx *ctx,
                     const char *buf, uint64_t off, size_t len);
int ie_writer_wait(struct ie_writer *w, struct api_ctx *ctx);
/* Waits, stops the thread, frees; accepts NULL. */
int ie_writer_finish(struct ie_writer *w, struct api_ctx *ctx);
/* Fails the call for an http_body_read() error: IMPORT_ERROR_PREMATURE_EOF
 * for a body cut short, IMPORT_ERROR otherwise.  Returns -1. */
int ie_body_error(struct ie_call *c, int rc);
/* Runs fn(aux) on a new detached thread; returns 0 or -errno. */
int ie_spawn(void *(*fn)(void *), void *aux);
/* What the take-over callback of an upload does: with no stream (the
 * client went away first) it fails the call IMPORT_ERROR_PREMATURE_EOF;
 * otherwise it keeps the stream in *ret_slot and runs fn(job) on its own
 * thread.  Returns 0 when the thread owns the job, or -1 after failing
 * the call, when the caller frees the job. */
int ie_start_upload(struct ie_call *c, struct http_stream *s,
                    struct http_stream **ret_slot, void *(*fn)(void *),
                    void *job);

/* GET /export and PUT /import (xva.c). */
void xva_http_handler(struct http_exchange *hx, struct xapi *x);

#endif
