/* storage.c — the daemon's storage layer: SR, PBD, VDI and SM records over
 * the SR drivers of storage/sm.h, and the block servers of plugged VBDs
 * (storage/tapdisk-ctl.h).
 *
 * The database holds what clients see; this file keeps the run-time side
 * that the database cannot: the attached SRs of this host (a plugged PBD
 * is a driver handle, struct sr_att, with the per-SR mutex that
 * serializes the driver's metadata calls), the running block servers
 * (struct blk, keyed by VBD and findable by VDI so a snapshot or the GC
 * can pause them) and the garbage collector's thread.  Operations on one
 * VDI exclude each other through VDI.current_operations; SR-wide
 * operations (destroy, forget, plug, unplug) exclude everything on the SR
 * through SR.current_operations.  After every driver call that changes
 * data, the SR's sizes are read back from the driver and written with the
 * VDI rows in the same transaction, so the space accounting a client
 * reads is always the driver's.  docs/storage.md describes the design. */
#include <config.h>
#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blockdev.h"
#include "sm.h"
#include "tapdisk-ctl.h"
#include "types.h"
#include "vhd.h"
#include "xenops/xenops.h"

/* How often the garbage collector looks at every attached SR unasked. */
#define GC_INTERVAL_MS 30000
/* Unit of VDI.copy: large enough to keep the copy fast, small enough to
 * report progress and notice a cancel often. */
#define COPY_CHUNK (2u << 20)

/* An attached SR: a plugged PBD of this host. */
struct sr_att {
    struct sr_att *next;
    char ref[48];
    char uuid[40];
    const struct sm_driver *drv;
    struct sm_sr *sm;
    /* Serializes the driver's metadata calls on this SR (sm.h, "Threads")
     * together with the database transaction that records their outcome,
     * so a scan never sees a VDI the database does not have yet. */
    pthread_mutex_t lock;
    int users;                  /* holders of a pointer (st.mu) */
};

/* A running block server: the data path of one plugged VBD. */
struct blk {
    struct blk *next;
    char vbd_ref[48];
    char vbd_uuid[40];
    char vdi_uuid[40];
    char vdi_ref[48];
    char sr_ref[48];
    char *location;
    struct tapdisk *td;         /* NULL: a leftover adopted after a restart */
    pid_t pid;
    bool read_write;
    int paused;                 /* nesting of pauses */
};

/* A mark on a VDI in one of the lists of st below; owner tells whose it
 * is where several holders may mark the same VDI. */
struct changing {
    struct changing *next;
    char vdi_uuid[40];
    const void *owner;
};

static struct {
    pthread_mutex_t mu;         /* srs and their users counts */
    pthread_cond_t cond;
    struct sr_att *srs;
    /* The block servers; taken after an SR's lock, never before. */
    pthread_mutex_t blk_mu;
    pthread_cond_t blk_cond;
    struct blk *blks;
    /* VDIs whose image a driver call is changing (snapshot, clone,
     * resize, a GC swap): their block servers stay paused, and no new one
     * starts, until the change is over. */
    struct changing *changing;
    /* VDIs that the running GC step of an SR found idle and may now hold
     * open for writing while it relinks their chain (owner: the step's
     * struct gc_run).  A block server or a storage_vdi_open() of such a
     * VDI waits until the step is over, as it would find the image locked
     * for writing; and since none can start, the step's view that the VDI
     * is idle stays true. */
    struct changing *gc_claims;
    /* VDIs open through storage_vdi_open() (owner: the handle).  The GC
     * leaves their chains alone: it cannot pause such a reader or writer
     * the way it pauses a block server. */
    struct changing *opened;
    struct xapi *x;
    pthread_t gc_thread;
    bool gc_started;
    bool gc_stop;
    bool gc_kick;
    pthread_cond_t gc_cond;
} st = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .blk_mu = PTHREAD_MUTEX_INITIALIZER,
    .blk_cond = PTHREAD_COND_INITIALIZER,
    .gc_cond = PTHREAD_COND_INITIALIZER,
};

/* ---- small helpers ---- */

static bool
null_ref(const char *ref)
{
    return !ref || !*ref || !strcmp(ref, "OpaqueRef:NULL");
}

static const char *
fstr(const struct db_row *row, int f)
{
    const struct value *v = row->fields[f];
    return v && (v->type == VALUE_STRING || v->type == VALUE_DATETIME)
           ? v->u.str.s : "";
}

/* A library of read-only images (ISO SRs): its VDIs are never created,
 * changed or deleted through the API. */
static bool
drv_read_only(const struct sm_driver *drv)
{
    return drv && drv->content_type && !strcmp(drv->content_type, "iso");
}

static void
i64_str(char *buf, size_t size, int64_t v)
{
    snprintf(buf, size, "%lld", (long long) v);
}

static const char *
errno_name(int e)
{
    switch (e) {
    case ENOSPC: return "ENOSPC";
    case EBUSY: return "EBUSY";
    case EROFS: return "EROFS";
    case ENOENT: return "ENOENT";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ELOOP: return "ELOOP";
    case EEXIST: return "EEXIST";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case EFBIG: return "EFBIG";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECANCELED: return "ECANCELED";
    case ENODEV: return "ENODEV";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    default: return "EIO";
    }
}

static int
mkdir_p(const char *path)
{
    char *p = xstrdup(path);
    int rc = 0;

    for (char *s = p + 1; ; s++) {
        if (*s == '/' || !*s) {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0700) && errno != EEXIST) {
                rc = -errno;
                break;
            }
            *s = c;
            if (!c) {
                break;
            }
        }
    }
    free(p);
    return rc;
}

/* A (string -> string) map value as the driver receives it; the strings
 * stay owned by v, which must outlive the map. */
struct kvbuf {
    struct sm_kv *kv;
    struct sm_map map;
};

static void
kvbuf_init(struct kvbuf *b, const struct value *v)
{
    size_t n = v && v->type == VALUE_STRUCT ? v->u.st.n : 0;

    b->kv = xcalloc(n + 1, sizeof *b->kv);
    b->map.kv = b->kv;
    b->map.n = 0;
    for (size_t i = 0; i < n; i++) {
        if (value_is_string(v->u.st.m[i].v)) {
            b->kv[b->map.n].key = v->u.st.m[i].name;
            b->kv[b->map.n].value = v->u.st.m[i].v->u.str.s;
            b->map.n++;
        }
    }
}

static void
kvbuf_clear(struct kvbuf *b)
{
    free(b->kv);
    b->kv = NULL;
}

/* The operation id recorded in current_operations: the task of an Async
 * call (as XenAPI does), else a fresh id. */
static void
op_id_of(struct api_ctx *ctx, char *buf)
{
    if (ctx && *ctx->task) {
        snprintf(buf, 48, "%s", ctx->task);
    } else {
        uuid_generate(buf);
    }
}

/* ---- errors ---- */

/* Context for mapping a driver failure (sm.h, "Errors"). */
struct sm_fail {
    const char *sr;             /* SR ref */
    const char *vdi;            /* VDI ref, or NULL */
    const char *op;             /* vdi_operations name for VDI_IN_USE */
    int64_t requested;          /* SR_FULL: bytes asked for */
    int64_t maximum;            /* SR_FULL: bytes available */
};

static int
fail_sm(struct api_ctx *ctx, int rc, const char *err, const struct sm_fail *f)
{
    char req[24], max[24];
    const char *msg = err ? err : strerror(-rc);

    LOG_INFO("%s: storage driver: %s (%d)", ctx->method, msg, rc);
    switch (rc) {
    case -ENOSPC:
        i64_str(req, sizeof req, f->requested);
        i64_str(max, sizeof max, f->maximum);
        return api_fail(ctx, ERR_SR_FULL, req, max);
    case -EBUSY:
        if (f->vdi) {
            return api_fail(ctx, ERR_VDI_IN_USE, f->vdi, f->op ? f->op : "");
        }
        return api_fail(ctx, ERR_SR_DEVICE_IN_USE);
    case -EROFS:
        if (f->vdi) {
            return api_fail(ctx, ERR_VDI_READONLY, f->vdi);
        }
        return api_fail(ctx, ERR_SR_OPERATION_NOT_SUPPORTED, f->sr);
    case -ENOENT:
        if (f->vdi) {
            return api_fail(ctx, ERR_VDI_MISSING, f->sr, f->vdi);
        }
        return api_fail(ctx, ERR_SR_BACKEND_FAILURE, "ENOENT", "", msg);
    case -EOPNOTSUPP:
        return api_fail(ctx, ERR_SR_OPERATION_NOT_SUPPORTED, f->sr);
    case -ELOOP:
        return api_fail(ctx, ERR_SR_BACKEND_FAILURE, "SR_BACKEND_FAILURE_109",
                        "", "The snapshot chain is too long");
    case -ECANCELED:
        if (*ctx->task) {
            return api_fail(ctx, ERR_TASK_CANCELLED, ctx->task);
        }
        break;
    }
    return api_fail(ctx, ERR_SR_BACKEND_FAILURE, errno_name(-rc), "", msg);
}

/* ---- attached SRs ---- */

/* Finds the attached SR of ref and takes a use of it (sr_put gives it
 * back); NULL when it is not plugged here. */
static struct sr_att *
sr_get(const char *ref)
{
    struct sr_att *a;

    pthread_mutex_lock(&st.mu);
    for (a = st.srs; a && strcmp(a->ref, ref); a = a->next) {
    }
    if (a) {
        a->users++;
    }
    pthread_mutex_unlock(&st.mu);
    return a;
}

static void
sr_put(struct sr_att *a)
{
    if (!a) {
        return;
    }
    pthread_mutex_lock(&st.mu);
    a->users--;
    pthread_cond_broadcast(&st.cond);
    pthread_mutex_unlock(&st.mu);
}

static void
sr_register(struct sr_att *a)
{
    pthread_mutex_lock(&st.mu);
    a->next = st.srs;
    st.srs = a;
    pthread_mutex_unlock(&st.mu);
}

/* Takes an SR out of the list once nobody uses it; the caller detaches. */
static struct sr_att *
sr_unregister(const char *ref)
{
    struct sr_att **p, *a = NULL;

    pthread_mutex_lock(&st.mu);
    for (p = &st.srs; *p; p = &(*p)->next) {
        if (!strcmp((*p)->ref, ref)) {
            a = *p;
            *p = a->next;
            break;
        }
    }
    while (a && a->users > 0) {
        pthread_cond_wait(&st.cond, &st.mu);
    }
    pthread_mutex_unlock(&st.mu);
    return a;
}

static void
sr_att_free(struct sr_att *a)
{
    if (!a) {
        return;
    }
    if (a->drv->detach) {
        a->drv->detach(a->sm);
    }
    pthread_mutex_destroy(&a->lock);
    free(a);
}

/* Attaches an SR with its driver; the caller registers it. */
static int
sr_attach(struct xapi *x, const struct sm_driver *drv, const char *ref,
          const char *uuid, const struct value *device_config,
          struct sr_att **ret, char **ret_err)
{
    struct kvbuf dc;
    struct sm_sr *sm = NULL;
    struct sr_att *a;
    int rc;

    if (!drv->attach) {
        *ret_err = xstrdup("the driver cannot attach SRs");
        return -EOPNOTSUPP;
    }
    kvbuf_init(&dc, device_config);
    rc = drv->attach(x->state_dir, uuid, &dc.map, &sm, ret_err);
    kvbuf_clear(&dc);
    if (rc) {
        return rc;
    }
    a = xcalloc(1, sizeof *a);
    snprintf(a->ref, sizeof a->ref, "%s", ref);
    snprintf(a->uuid, sizeof a->uuid, "%s", uuid);
    a->drv = drv;
    a->sm = sm;
    pthread_mutex_init(&a->lock, NULL);
    *ret = a;
    return 0;
}

static void
gc_kick(void)
{
    pthread_mutex_lock(&st.mu);
    st.gc_kick = true;
    pthread_cond_broadcast(&st.gc_cond);
    pthread_mutex_unlock(&st.mu);
}

/* ---- refusals and allowed operations ---- */

/* struct refusal and its helpers are declared in storage.h so that
 * vm-ops.c keeps its check tables the same way. */

void
refusal_init(struct refusal *r)
{
    r->err = -1;
    r->n = 0;
}

void
refuse(struct refusal *r, int err, size_t n, ...)
{
    va_list ap;

    if (r->err >= 0) {
        return;
    }
    r->err = err;
    r->n = MIN(n, ARRAY_SIZE(r->params));
    va_start(ap, n);
    for (size_t i = 0; i < r->n; i++) {
        snprintf(r->params[i], sizeof r->params[i], "%s",
                 va_arg(ap, const char *));
    }
    va_end(ap);
}

int
fail_refusal(struct api_ctx *ctx, const struct refusal *r)
{
    const char *p[ARRAY_SIZE(r->params)];

    for (size_t i = 0; i < r->n; i++) {
        p[i] = r->params[i];
    }
    return api_failv(ctx, r->err, p, r->n);
}

/* SR operations that run alone on their SR: nothing else may be in
 * progress when they begin, and nothing may begin while they run. */
static bool
sr_op_exclusive(const char *op)
{
    return !strcmp(op, "destroy") || !strcmp(op, "forget")
           || !strcmp(op, "plug") || !strcmp(op, "unplug");
}

/* The first entry of a current_operations map, or false. */
static bool
first_op(const struct value *cur, const char **ret_id, const char **ret_op)
{
    if (!cur || cur->type != VALUE_STRUCT || !cur->u.st.n) {
        return false;
    }
    *ret_id = cur->u.st.m[0].name;
    *ret_op = value_is_string(cur->u.st.m[0].v) ? cur->u.st.m[0].v->u.str.s : "";
    return true;
}

/* The exclusive operation running on an SR, if any. */
static bool
sr_exclusive_running(const struct db_row *sr, const char **ret_id,
                     const char **ret_op)
{
    const struct value *cur = sr->fields[F_SR_current_operations];

    for (size_t i = 0; cur->type == VALUE_STRUCT && i < cur->u.st.n; i++) {
        const struct value *v = cur->u.st.m[i].v;
        if (value_is_string(v) && sr_op_exclusive(v->u.str.s)) {
            *ret_id = cur->u.st.m[i].name;
            *ret_op = v->u.str.s;
            return true;
        }
    }
    return false;
}

/* This host's PBD of an SR (borrowed), or NULL. */
static struct db_row *
my_pbd(struct xapi *x, const struct db_row *sr)
{
    const struct value *pbds = sr->fields[F_SR_PBDs];

    for (size_t i = 0; i < pbds->u.arr.n; i++) {
        struct db_row *p = db_lookup(x->db, CLS_PBD, pbds->u.arr.items[i]->u.str.s);
        if (p && !strcmp(fstr(p, F_PBD_host), x->host_ref)) {
            return p;
        }
    }
    return NULL;
}

static bool
sr_attached_here(struct xapi *x, const struct db_row *sr)
{
    struct db_row *p = my_pbd(x, sr);
    return p && p->fields[F_PBD_currently_attached]->u.b;
}

/* SR_HAS_NO_PBDS or SR_NOT_ATTACHED unless the SR is plugged here. */
static void
check_sr_attached(struct xapi *x, const struct db_row *sr, struct refusal *r)
{
    if (!sr_attached_here(x, sr)) {
        if (!sr->fields[F_SR_PBDs]->u.arr.n) {
            refuse(r, ERR_SR_HAS_NO_PBDS, 1, sr->ref);
        } else {
            refuse(r, ERR_SR_NOT_ATTACHED, 1, sr->ref);
        }
    }
}

/* Whether a VBD of a VDI has its data path up (the database's view). */
static const struct db_row *
vdi_attached_vbd(struct db *db, const struct db_row *vdi, bool rw_only)
{
    const struct value *vbds = vdi->fields[F_VDI_VBDs];

    for (size_t i = 0; i < vbds->u.arr.n; i++) {
        struct db_row *b = db_lookup(db, CLS_VBD, vbds->u.arr.items[i]->u.str.s);
        if (b && b->fields[F_VBD_currently_attached]->u.b
            && (!rw_only || !strcmp(fstr(b, F_VBD_mode), "RW"))) {
            return b;
        }
    }
    return NULL;
}

/* Why op (a vdi_operations name) may not run on the VDI now.  The read
 * lock or a transaction is held. */
static void
vdi_check(struct xapi *x, const struct db_row *vdi, const char *op,
          struct refusal *r)
{
    struct db *db = x->db;
    struct db_row *sr = db_lookup(db, CLS_SR, fstr(vdi, F_VDI_SR));
    const struct sm_driver *drv = sr ? sm_driver_find(fstr(sr, F_SR_type)) : NULL;
    const char *id, *cur;

    if (first_op(vdi->fields[F_VDI_current_operations], &id, &cur)) {
        refuse(r, ERR_OTHER_OPERATION_IN_PROGRESS, 4, "VDI", vdi->ref, cur, id);
    }
    if (!sr) {
        refuse(r, ERR_HANDLE_INVALID, 2, "SR", fstr(vdi, F_VDI_SR));
        return;
    }
    if (sr_exclusive_running(sr, &id, &cur)) {
        refuse(r, ERR_OTHER_OPERATION_IN_PROGRESS, 4, "SR", sr->ref, cur, id);
    }
    if (!strcmp(op, "forget") || !strcmp(op, "set_on_boot")) {
        if (!strcmp(op, "forget") && vdi_attached_vbd(db, vdi, false)) {
            refuse(r, ERR_VDI_IN_USE, 2, vdi->ref, op);
        }
        return;
    }
    check_sr_attached(x, sr, r);
    if (drv_read_only(drv) && strcmp(op, "copy") && strcmp(op, "update")) {
        refuse(r, ERR_SR_OPERATION_NOT_SUPPORTED, 1, sr->ref);
    }
    if ((!strcmp(op, "snapshot") && (!drv || !drv->vdi_snapshot))
        || (!strcmp(op, "clone") && (!drv || !drv->vdi_clone))
        || ((!strcmp(op, "resize") || !strcmp(op, "resize_online"))
            && (!drv || !drv->vdi_resize))
        || (!strcmp(op, "destroy") && (!drv || !drv->vdi_destroy))
        || (!strcmp(op, "update") && (!drv || !drv->vdi_info))
        || (!strcmp(op, "data_destroy") && (!drv || !drv->vdi_data_destroy))
        || (!strcmp(op, "copy") && (!drv || !drv->vdi_attach))) {
        refuse(r, ERR_SR_OPERATION_NOT_SUPPORTED, 1, sr->ref);
    }
    if (!strcmp(op, "destroy") || !strcmp(op, "resize")
        || !strcmp(op, "data_destroy")) {
        if (vdi_attached_vbd(db, vdi, false)) {
            refuse(r, ERR_VDI_IN_USE, 2, vdi->ref, op);
        }
    }
    if ((!strcmp(op, "resize") || !strcmp(op, "resize_online"))
        && vdi->fields[F_VDI_read_only]->u.b) {
        refuse(r, ERR_VDI_READONLY, 1, vdi->ref);
    }
    if (!strcmp(op, "data_destroy") && !vdi->fields[F_VDI_cbt_enabled]->u.b) {
        refuse(r, ERR_VDI_NO_CBT_METADATA, 1, vdi->ref);
    }
}

/* The operations this layer implements, in the enum's order. */
static const char *const vdi_ops_offered[] = {
    "clone", "copy", "resize", "resize_online", "snapshot", "destroy",
    "forget", "update", "data_destroy", "set_on_boot", NULL,
};

static struct value *
vdi_allowed(struct xapi *x, const struct db_row *vdi)
{
    struct value *arr = value_array(8);

    for (size_t i = 0; vdi_ops_offered[i]; i++) {
        struct refusal r;
        refusal_init(&r);
        vdi_check(x, vdi, vdi_ops_offered[i], &r);
        if (r.err < 0) {
            value_array_append(arr, value_string(vdi_ops_offered[i]));
        }
    }
    return arr;
}

static void
vdi_refresh_allowed(struct xapi *x, struct db_txn *txn, const char *ref)
{
    struct db_row *vdi = db_lookup(x->db, CLS_VDI, ref);

    if (vdi) {
        db_update(txn, CLS_VDI, ref, F_VDI_allowed_operations,
                  vdi_allowed(x, vdi));
    }
}

/* Why op (a storage_operations name) may not begin on the SR now. */
static void
sr_check(struct xapi *x, const struct db_row *sr, const char *op,
         struct refusal *r)
{
    const struct sm_driver *drv = sm_driver_find(fstr(sr, F_SR_type));
    const struct value *cur = sr->fields[F_SR_current_operations];
    const char *id, *o;
    bool attached = sr_attached_here(x, sr);

    if (sr_exclusive_running(sr, &id, &o)) {
        refuse(r, ERR_OTHER_OPERATION_IN_PROGRESS, 4, "SR", sr->ref, o, id);
    }
    if (sr_op_exclusive(op)) {
        const struct value *vdis = sr->fields[F_SR_VDIs];
        if (first_op(cur, &id, &o)) {
            refuse(r, ERR_OTHER_OPERATION_IN_PROGRESS, 4, "SR", sr->ref, o, id);
        }
        for (size_t i = 0; i < vdis->u.arr.n; i++) {
            struct db_row *v = db_lookup(x->db, CLS_VDI,
                                         vdis->u.arr.items[i]->u.str.s);
            if (v && first_op(v->fields[F_VDI_current_operations], &id, &o)) {
                refuse(r, ERR_OTHER_OPERATION_IN_PROGRESS, 4, "VDI", v->ref,
                       o, id);
            }
        }
    }
    if (!strcmp(op, "destroy") || !strcmp(op, "forget")) {
        if (attached || sr->fields[F_SR_PBDs]->u.arr.n > 0) {
            const struct value *pbds = sr->fields[F_SR_PBDs];
            for (size_t i = 0; i < pbds->u.arr.n; i++) {
                struct db_row *p = db_lookup(x->db, CLS_PBD,
                                             pbds->u.arr.items[i]->u.str.s);
                if (p && p->fields[F_PBD_currently_attached]->u.b) {
                    refuse(r, ERR_SR_HAS_PBD, 1, sr->ref);
                }
            }
        }
        if (!strcmp(op, "destroy")) {
            if (!drv) {
                refuse(r, ERR_SR_UNKNOWN_DRIVER, 1, fstr(sr, F_SR_type));
            } else if (!drv->destroy) {
                refuse(r, ERR_SR_OPERATION_NOT_SUPPORTED, 1, sr->ref);
            } else if (!my_pbd(x, sr)) {
                refuse(r, ERR_SR_HAS_NO_PBDS, 1, sr->ref);
            }
        }
        return;
    }
    if (!strcmp(op, "plug") || !strcmp(op, "unplug")
        || !strcmp(op, "pbd_create") || !strcmp(op, "pbd_destroy")) {
        if (!strcmp(op, "plug") && attached) {
            refuse(r, ERR_OPERATION_NOT_ALLOWED, 1, "the SR is already plugged");
        }
        if (!strcmp(op, "unplug") && !attached) {
            refuse(r, ERR_OPERATION_NOT_ALLOWED, 1, "the SR is not plugged");
        }
        if (!strcmp(op, "plug") && !drv) {
            refuse(r, ERR_SR_UNKNOWN_DRIVER, 1, fstr(sr, F_SR_type));
        }
        return;
    }
    check_sr_attached(x, sr, r);
    if (!drv) {
        refuse(r, ERR_SR_UNKNOWN_DRIVER, 1, fstr(sr, F_SR_type));
        return;
    }
    if (drv_read_only(drv) && str_starts_with(op, "vdi_")
        && strcmp(op, "vdi_introduce")) {
        refuse(r, ERR_SR_OPERATION_NOT_SUPPORTED, 1, sr->ref);
    }
    if ((!strcmp(op, "vdi_create") && !drv->vdi_create)
        || (!strcmp(op, "vdi_introduce") && !drv->vdi_introduce)
        || (!strcmp(op, "vdi_destroy") && !drv->vdi_destroy)
        || (!strcmp(op, "vdi_resize") && !drv->vdi_resize)
        || (!strcmp(op, "vdi_clone") && !drv->vdi_clone)
        || (!strcmp(op, "vdi_snapshot") && !drv->vdi_snapshot)
        || (!strcmp(op, "vdi_data_destroy") && !drv->vdi_data_destroy)
        || (!strcmp(op, "scan") && !drv->scan)
        || (!strcmp(op, "update") && !drv->stat)) {
        refuse(r, ERR_SR_OPERATION_NOT_SUPPORTED, 1, sr->ref);
    }
}

static const char *const sr_ops_offered[] = {
    "scan", "destroy", "forget", "plug", "unplug", "update", "vdi_create",
    "vdi_introduce", "vdi_destroy", "vdi_resize", "vdi_clone", "vdi_snapshot",
    "vdi_set_on_boot", "pbd_create", "pbd_destroy", NULL,
};

static void
sr_refresh_allowed(struct xapi *x, struct db_txn *txn, const char *ref)
{
    struct db_row *sr = db_lookup(x->db, CLS_SR, ref);
    struct value *arr;

    if (!sr) {
        return;
    }
    arr = value_array(16);
    for (size_t i = 0; sr_ops_offered[i]; i++) {
        struct refusal r;
        refusal_init(&r);
        sr_check(x, sr, sr_ops_offered[i], &r);
        if (r.err < 0) {
            value_array_append(arr, value_string(sr_ops_offered[i]));
        }
    }
    db_update(txn, CLS_SR, ref, F_SR_allowed_operations, arr);
}

/* Refreshes the SR's allowed operations and those of all its VDIs. */
static void
sr_refresh_all(struct xapi *x, struct db_txn *txn, const char *ref)
{
    struct db_row *sr = db_lookup(x->db, CLS_SR, ref);
    struct value *vdis;

    if (!sr) {
        return;
    }
    vdis = value_ref(sr->fields[F_SR_VDIs]);
    sr_refresh_allowed(x, txn, ref);
    for (size_t i = 0; i < vdis->u.arr.n; i++) {
        vdi_refresh_allowed(x, txn, vdis->u.arr.items[i]->u.str.s);
    }
    value_unref(vdis);
}

/* ---- current operations ---- */

static void
ops_add(struct db_txn *txn, int cls, const char *ref, int field,
        const char *id, const char *op)
{
    struct db_row *row = db_lookup(db_txn_db(txn), cls, ref);
    struct value *cur;

    if (!row) {
        return;
    }
    cur = row->fields[field]->type == VALUE_STRUCT
          ? value_copy_shallow(row->fields[field]) : value_struct(1);
    value_struct_set(cur, id, value_string(op));
    db_update(txn, cls, ref, field, cur);
}

static void
ops_remove(struct db_txn *txn, int cls, const char *ref, int field,
           const char *id)
{
    struct db_row *row = db_lookup(db_txn_db(txn), cls, ref);
    struct value *cur;

    if (!row || row->fields[field]->type != VALUE_STRUCT
        || !value_struct_get(row->fields[field], id)) {
        return;
    }
    cur = value_copy_shallow(row->fields[field]);
    value_struct_remove(cur, id);
    db_update(txn, cls, ref, field, cur);
}

/* Whether a block server of this host serves the VDI (read-write only
 * when rw_only); blk_mu is held. */
static bool
blk_serves_locked(const char *vdi_uuid, bool rw_only)
{
    for (struct blk *b = st.blks; b; b = b->next) {
        if (!strcmp(b->vdi_uuid, vdi_uuid) && (!rw_only || b->read_write)) {
            return true;
        }
    }
    return false;
}

/* The same, taking blk_mu. */
static bool
blk_serves(const char *vdi_uuid, bool rw_only)
{
    bool found;

    pthread_mutex_lock(&st.blk_mu);
    found = blk_serves_locked(vdi_uuid, rw_only);
    pthread_mutex_unlock(&st.blk_mu);
    return found;
}

/* Checks op on a VDI and marks it in VDI.current_operations; *ret_sr gets
 * the VDI's SR.  Returns 0, or -1 after api_fail(). */
static int
vdi_op_begin(struct api_ctx *ctx, const char *ref, const char *op,
             char *ret_op_id, char *ret_sr)
{
    struct xapi *x = ctx->x;
    struct db_txn *txn;
    struct db_row *vdi;
    struct refusal r;
    bool in_use_check = !strcmp(op, "destroy") || !strcmp(op, "resize")
                        || !strcmp(op, "data_destroy") || !strcmp(op, "forget");
    char uuid[40] = "";
    bool served;

    refusal_init(&r);
    db_read_lock(x->db);
    vdi = db_lookup(x->db, CLS_VDI, ref);
    if (vdi) {
        snprintf(uuid, sizeof uuid, "%s", fstr(vdi, F_VDI_uuid));
    }
    db_read_unlock(x->db);
    if (!*uuid) {
        return api_fail_handle(ctx, CLS_VDI, ref);
    }
    /* The block server table is looked at outside the transaction: no
     * database lock is ever taken while holding it, nor it under one. */
    served = in_use_check && blk_serves(uuid, false);
    txn = db_begin(x->db);
    vdi = db_lookup(x->db, CLS_VDI, ref);
    if (!vdi) {
        db_abort(txn);
        return api_fail_handle(ctx, CLS_VDI, ref);
    }
    vdi_check(x, vdi, op, &r);
    if (r.err < 0 && served) {
        refuse(&r, ERR_VDI_IN_USE, 2, ref, op);
    }
    if (r.err >= 0) {
        db_abort(txn);
        return fail_refusal(ctx, &r);
    }
    op_id_of(ctx, ret_op_id);
    snprintf(ret_sr, 48, "%s", fstr(vdi, F_VDI_SR));
    ops_add(txn, CLS_VDI, ref, F_VDI_current_operations, ret_op_id, op);
    vdi_refresh_allowed(x, txn, ref);
    return api_commit(ctx, txn);
}

static void
vdi_op_end(struct xapi *x, const char *ref, const char *op_id)
{
    struct db_txn *txn = db_begin(x->db);

    ops_remove(txn, CLS_VDI, ref, F_VDI_current_operations, op_id);
    vdi_refresh_allowed(x, txn, ref);
    if (db_commit(txn)) {
        LOG_ERR("cannot clear an operation of VDI %s", ref);
    }
}

static int
sr_op_begin(struct api_ctx *ctx, const char *ref, const char *op,
            char *ret_op_id)
{
    struct xapi *x = ctx->x;
    struct db_txn *txn = db_begin(x->db);
    struct db_row *sr = db_lookup(x->db, CLS_SR, ref);
    struct refusal r;

    refusal_init(&r);
    if (!sr) {
        db_abort(txn);
        return api_fail_handle(ctx, CLS_SR, ref);
    }
    sr_check(x, sr, op, &r);
    if (r.err >= 0) {
        db_abort(txn);
        return fail_refusal(ctx, &r);
    }
    op_id_of(ctx, ret_op_id);
    ops_add(txn, CLS_SR, ref, F_SR_current_operations, ret_op_id, op);
    if (sr_op_exclusive(op)) {
        sr_refresh_all(x, txn, ref);
    } else {
        sr_refresh_allowed(x, txn, ref);
    }
    return api_commit(ctx, txn);
}

static void
sr_op_end(struct xapi *x, const char *ref, const char *op_id)
{
    struct db_txn *txn = db_begin(x->db);

    ops_remove(txn, CLS_SR, ref, F_SR_current_operations, op_id);
    sr_refresh_all(x, txn, ref);
    if (db_commit(txn)) {
        LOG_ERR("cannot clear an operation of SR %s", ref);
    }
}

/* ---- space accounting ---- */

/* Writes the driver's figures and the sum of the VDIs' virtual sizes into
 * the SR row (inside txn, so they agree with the VDI rows it changes). */
static void
sr_write_space(struct xapi *x, struct db_txn *txn, const char *ref,
               const struct sm_sr_stat *s)
{
    struct db_row *sr = db_lookup(x->db, CLS_SR, ref);
    int64_t alloc = 0;

    if (!sr) {
        return;
    }
    for (size_t i = 0; i < sr->fields[F_SR_VDIs]->u.arr.n; i++) {
        struct db_row *v = db_lookup(x->db, CLS_VDI,
                                     sr->fields[F_SR_VDIs]->u.arr.items[i]->u.str.s);
        if (v) {
            alloc += v->fields[F_VDI_virtual_size]->u.i;
        }
    }
    if (s) {
        db_update(txn, CLS_SR, ref, F_SR_physical_size,
                  value_int((int64_t) s->physical_size));
        db_update(txn, CLS_SR, ref, F_SR_physical_utilisation,
                  value_int((int64_t) s->physical_utilisation));
    }
    db_update(txn, CLS_SR, ref, F_SR_virtual_allocation, value_int(alloc));
}

/* The driver's stat, or false (logged) when it has none or fails. */
static bool
sr_stat(struct sr_att *a, struct sm_sr_stat *ret)
{
    char *err = NULL;
    int rc;

    memset(ret, 0, sizeof *ret);
    if (!a->drv->stat) {
        return false;
    }
    rc = a->drv->stat(a->sm, ret, &err);
    if (rc) {
        LOG_WARN("SR %s: stat: %s", a->uuid, err ? err : strerror(-rc));
    }
    free(err);
    return rc == 0;
}

/* ---- VDI rows ---- */

/* VDI.sm_config: what the caller asked for, overlaid with what the
 * driver reports. */
static struct value *
sm_config_merge(const struct value *base, const struct sm_vdi_info *info)
{
    struct value *m = base && base->type == VALUE_STRUCT
                      ? value_clone(base) : value_struct(4);

    for (size_t i = 0; info && i < info->n_sm_config; i++) {
        value_struct_set(m, info->sm_config[i].key,
                         value_string(info->sm_config[i].value));
    }
    return m;
}

/* Brings an existing VDI row in line with the driver's info. */
static void
vdi_update_from_info(struct db_txn *txn, const char *ref,
                     const struct sm_vdi_info *info)
{
    struct db_row *vdi = db_lookup(db_txn_db(txn), CLS_VDI, ref);

    if (!vdi) {
        return;
    }
    db_update(txn, CLS_VDI, ref, F_VDI_virtual_size,
              value_int((int64_t) info->virtual_size));
    db_update(txn, CLS_VDI, ref, F_VDI_physical_utilisation,
              value_int((int64_t) info->physical_utilisation));
    db_update(txn, CLS_VDI, ref, F_VDI_sm_config,
              sm_config_merge(vdi->fields[F_VDI_sm_config], info));
    if (info->location && strcmp(info->location, fstr(vdi, F_VDI_location))) {
        db_update(txn, CLS_VDI, ref, F_VDI_location, value_string(info->location));
    }
    if (vdi->fields[F_VDI_missing]->u.b) {
        db_update(txn, CLS_VDI, ref, F_VDI_missing, value_false());
    }
}

/* Fields of a new VDI row from a spec and the driver's info. */
static struct value **
vdi_fields_new(const struct storage_vdi_spec *spec,
               const struct sm_vdi_info *info)
{
    struct value **f = db_fields_new(CLS_VDI, info->uuid);

    f[F_VDI_name_label] = value_string(spec->name_label ? spec->name_label : "");
    f[F_VDI_name_description] = value_string(spec->name_description
                                             ? spec->name_description : "");
    f[F_VDI_SR] = value_string(spec->sr);
    f[F_VDI_virtual_size] = value_int((int64_t) info->virtual_size);
    f[F_VDI_physical_utilisation] = value_int((int64_t) info->physical_utilisation);
    f[F_VDI_type] = value_string(spec->type && *spec->type ? spec->type : "user");
    f[F_VDI_sharable] = value_bool(spec->sharable);
    f[F_VDI_read_only] = value_bool(spec->read_only || info->read_only);
    f[F_VDI_other_config] = spec->other_config
                            && spec->other_config->type == VALUE_STRUCT
                            ? value_ref((struct value *) spec->other_config)
                            : value_empty_struct();
    f[F_VDI_location] = value_string(info->location ? info->location : info->uuid);
    f[F_VDI_managed] = value_true();
    f[F_VDI_missing] = value_false();
    f[F_VDI_storage_lock] = value_false();
    f[F_VDI_sm_config] = sm_config_merge(spec->sm_config, info);
    return f;
}

/* What callers need of a VDI row, copied out of the database. */
struct vdi_facts {
    char ref[48];
    char uuid[40];
    char sr[48];
    char *location;
    char *name_label;
    char *name_description;
    char type[32];
    int64_t virtual_size;
    bool read_only;
    bool sharable;
    bool is_a_snapshot;
    struct value *other_config;
    struct value *sm_config;
};

static void
vdi_facts_clear(struct vdi_facts *f)
{
    free(f->location);
    free(f->name_label);
    free(f->name_description);
    value_unref(f->other_config);
    value_unref(f->sm_config);
    memset(f, 0, sizeof *f);
}

static bool
vdi_facts_get(struct db *db, const char *ref, struct vdi_facts *f)
{
    struct db_row *vdi;

    memset(f, 0, sizeof *f);
    db_read_lock(db);
    vdi = db_lookup(db, CLS_VDI, ref);
    if (vdi) {
        snprintf(f->ref, sizeof f->ref, "%s", vdi->ref);
        snprintf(f->uuid, sizeof f->uuid, "%s", fstr(vdi, F_VDI_uuid));
        snprintf(f->sr, sizeof f->sr, "%s", fstr(vdi, F_VDI_SR));
        snprintf(f->type, sizeof f->type, "%s", fstr(vdi, F_VDI_type));
        f->location = xstrdup(fstr(vdi, F_VDI_location));
        f->name_label = xstrdup(fstr(vdi, F_VDI_name_label));
        f->name_description = xstrdup(fstr(vdi, F_VDI_name_description));
        f->virtual_size = vdi->fields[F_VDI_virtual_size]->u.i;
        f->read_only = vdi->fields[F_VDI_read_only]->u.b;
        f->sharable = vdi->fields[F_VDI_sharable]->u.b;
        f->is_a_snapshot = vdi->fields[F_VDI_is_a_snapshot]->u.b;
        f->other_config = value_ref(vdi->fields[F_VDI_other_config]);
        f->sm_config = value_ref(vdi->fields[F_VDI_sm_config]);
    }
    db_read_unlock(db);
    return vdi != NULL;
}

/* Gets the attached SR of a VDI's SR or fails SR_NOT_ATTACHED /
 * SR_HAS_NO_PBDS. */
static struct sr_att *
sr_get_or_fail(struct api_ctx *ctx, const char *sr_ref)
{
    struct sr_att *a = sr_get(sr_ref);
    struct db_row *sr;
    struct refusal r;

    if (a) {
        return a;
    }
    refusal_init(&r);
    db_read_lock(ctx->x->db);
    sr = db_lookup(ctx->x->db, CLS_SR, sr_ref);
    if (sr) {
        check_sr_attached(ctx->x, sr, &r);
    }
    db_read_unlock(ctx->x->db);
    if (!sr) {
        api_fail_handle(ctx, CLS_SR, sr_ref);
    } else if (r.err >= 0) {
        fail_refusal(ctx, &r);
    } else {
        api_fail(ctx, ERR_SR_NOT_ATTACHED, sr_ref);
    }
    return NULL;
}

/* Removes the rows that depend on a VDI about to be deleted: its VBDs
 * (none is attached: callers checked) and the snapshot_of links of its
 * snapshots, so no reference is left dangling. */
static void
vdi_delete_rows(struct db_txn *txn, const char *ref)
{
    struct db *db = db_txn_db(txn);
    struct db_row *vdi = db_lookup(db, CLS_VDI, ref);
    struct value *vbds, *snaps;

    if (!vdi) {
        return;
    }
    vbds = value_ref(vdi->fields[F_VDI_VBDs]);
    snaps = value_ref(vdi->fields[F_VDI_snapshots]);
    for (size_t i = 0; i < vbds->u.arr.n; i++) {
        const char *b = vbds->u.arr.items[i]->u.str.s;
        struct db_row *vbd = db_lookup(db, CLS_VBD, b);
        if (vbd && !strcmp(fstr(vbd, F_VBD_type), "CD")) {
            /* A CD drive stays, empty: the VM keeps its drive. */
            db_update(txn, CLS_VBD, b, F_VBD_VDI, value_null_ref());
            db_update(txn, CLS_VBD, b, F_VBD_empty, value_true());
        } else if (vbd) {
            char *m = xstrdup(fstr(vbd, F_VBD_metrics));
            db_delete(txn, CLS_VBD, b);
            if (!null_ref(m)) {
                db_delete(txn, CLS_VBD_metrics, m);
            }
            free(m);
        }
    }
    for (size_t i = 0; i < snaps->u.arr.n; i++) {
        db_update(txn, CLS_VDI, snaps->u.arr.items[i]->u.str.s,
                  F_VDI_snapshot_of, value_null_ref());
    }
    value_unref(vbds);
    value_unref(snaps);
    db_delete(txn, CLS_VDI, ref);
}

/* ---- VDI operations for other modules ---- */

/* The largest VDI a VHD-based driver makes (vhd.h). */
#define VDI_MAX_SIZE ((int64_t) VHD_MAX_SIZE)

/* Whether a VDI's sm_config asks for (or reports) a raw image, which the
 * VHD size limit does not bound. */
static bool
vhd_format_raw(const struct value *sm_config)
{
    const char *t = sm_config && sm_config->type == VALUE_STRUCT
                    ? value_struct_get_string(sm_config, "type") : NULL;
    const char *v = sm_config && sm_config->type == VALUE_STRUCT
                    ? value_struct_get_string(sm_config, "vdi_type") : NULL;

    return (t && !strcmp(t, "raw")) || (v && !strcmp(v, "raw"));
}

/* Removes the image of a VDI whose creation failed after the driver made
 * it, so that a failed create, snapshot or clone leaves nothing behind.
 * The image is found by info->location where the driver gave one, else
 * by uuid.  Failure is only logged: the caller is already failing. */
static void
vdi_remove_half_made(struct sr_att *a, const struct sm_vdi_info *info,
                     const char *uuid)
{
    char *err = NULL;

    if (!a->drv->vdi_destroy) {
        return;
    }
    if (a->drv->vdi_destroy(a->sm, info->location ? info->location : uuid,
                            &err)) {
        LOG_WARN("SR %s: cannot remove the half-made VDI %s: %s", a->uuid,
                 uuid, err ? err : "?");
    }
    free(err);
}

int
storage_vdi_create(struct api_ctx *ctx, const struct storage_vdi_spec *spec,
                   char *ret_ref)
{
    struct xapi *x = ctx->x;
    struct sm_vdi_info info;
    struct sm_sr_stat s;
    struct sr_att *a = NULL;
    struct kvbuf smc;
    struct db_txn *txn;
    char op_id[48], ref[48], uuid[40], *err = NULL;
    bool have_stat, op = false, locked = false, made = false;
    int rc = -1, r;

    memset(&info, 0, sizeof info);
    smc.kv = NULL;
    if (spec->virtual_size < 0) {
        char v[24];
        i64_str(v, sizeof v, spec->virtual_size);
        return api_fail(ctx, ERR_INVALID_VALUE, "virtual_size", v);
    }
    if (sr_op_begin(ctx, spec->sr, "vdi_create", op_id)) {
        return -1;
    }
    op = true;
    a = sr_get_or_fail(ctx, spec->sr);
    if (!a) {
        goto out;
    }
    if (!a->drv->vdi_create) {
        api_fail(ctx, ERR_SR_OPERATION_NOT_SUPPORTED, spec->sr);
        goto out;
    }
    uuid_generate(uuid);
    kvbuf_init(&smc, spec->sm_config);
    pthread_mutex_lock(&a->lock);
    locked = true;
    r = a->drv->vdi_create(a->sm, uuid, (uint64_t) spec->virtual_size,
                           &smc.map, &info, &err);
    if (r) {
        struct sm_fail f = { .sr = spec->sr, .op = "create",
                             .requested = spec->virtual_size };
        if (r == -EFBIG || (r == -EINVAL && spec->virtual_size > VDI_MAX_SIZE
                            && !vhd_format_raw(spec->sm_config))) {
            char max[24];
            i64_str(max, sizeof max, VDI_MAX_SIZE);
            api_fail(ctx, ERR_VDI_TOO_LARGE, "OpaqueRef:NULL", max);
            goto out;
        }
        if (r == -ENOSPC && sr_stat(a, &s)) {
            f.maximum = (int64_t) s.free_space;
        }
        fail_sm(ctx, r, err, &f);
        goto out;
    }
    made = true;
    if (!info.uuid[0]) {
        snprintf(info.uuid, sizeof info.uuid, "%.36s", uuid);
    }
    have_stat = sr_stat(a, &s);
    db_new_ref(ref);
    txn = db_begin(x->db);
    if (db_insert_fields(txn, CLS_VDI, ref, vdi_fields_new(spec, &info))) {
        db_abort(txn);
        api_fail(ctx, ERR_UUID_INVALID, "VDI", info.uuid);
        goto out;
    }
    sr_write_space(x, txn, spec->sr, have_stat ? &s : NULL);
    vdi_refresh_allowed(x, txn, ref);
    if (api_commit(ctx, txn)) {
        goto out;
    }
    made = false;
    memcpy(ret_ref, ref, 48);
    rc = 0;
out:
    if (made) {
        vdi_remove_half_made(a, &info, uuid);
    }
    if (locked) {
        pthread_mutex_unlock(&a->lock);
    }
    kvbuf_clear(&smc);
    sm_vdi_info_clear(&info);
    free(err);
    sr_put(a);
    if (op) {
        sr_op_end(x, spec->sr, op_id);
    }
    return rc;
}

/* Pauses (pause true) or unpauses every block server of a VDI; blk_mu is
 * held.  Pauses nest.  Returns 0 or -errno with *ret_err; when one pause
 * fails, the servers this call paused before it are resumed. */
static int
blk_pause_vdi(const char *vdi_uuid, bool pause, char **ret_err)
{
    struct blk *failed = NULL;
    int rc = 0;

    for (struct blk *b = st.blks; b; b = b->next) {
        if (strcmp(b->vdi_uuid, vdi_uuid)) {
            continue;
        }
        if (!pause) {
            if (b->td && b->paused > 0 && --b->paused == 0) {
                char *err = NULL;
                if (tapdisk_unpause(b->td, &err)) {
                    LOG_ERR("VBD %s: cannot resume its block server: %s",
                            b->vbd_uuid, err ? err : "?");
                }
                free(err);
            }
            continue;
        }
        if (!b->td) {
            /* Adopted after a restart: it cannot be steered. */
            *ret_err = xstrdup("the block server of the VDI was started "
                               "before the toolstack restarted");
            rc = -EBUSY;
            failed = b;
            break;
        }
        if (b->paused++ == 0) {
            rc = tapdisk_pause(b->td, ret_err);
            if (rc) {
                b->paused--;
                failed = b;
                break;
            }
        }
    }
    for (struct blk *b = st.blks; failed && b != failed; b = b->next) {
        if (!strcmp(b->vdi_uuid, vdi_uuid) && b->td && --b->paused == 0) {
            char *err = NULL;
            tapdisk_unpause(b->td, &err);
            free(err);
        }
    }
    return rc;
}

/* Whether list holds a mark of the VDI (vdi_uuid NULL: any VDI) by owner
 * (NULL: anyone); blk_mu is held, as for the other mark helpers. */
static bool
mark_find(const struct changing *list, const char *vdi_uuid,
          const void *owner)
{
    for (const struct changing *c = list; c; c = c->next) {
        if ((!vdi_uuid || !strcmp(c->vdi_uuid, vdi_uuid))
            && (!owner || c->owner == owner)) {
            return true;
        }
    }
    return false;
}

static void
mark_add(struct changing **list, const char *vdi_uuid, const void *owner)
{
    struct changing *c = xcalloc(1, sizeof *c);

    snprintf(c->vdi_uuid, sizeof c->vdi_uuid, "%s", vdi_uuid);
    c->owner = owner;
    c->next = *list;
    *list = c;
}

/* Removes the first mark of the VDI by owner (vdi_uuid NULL: every mark
 * of owner; owner NULL: anyone's) and wakes the waiters. */
static void
mark_remove(struct changing **list, const char *vdi_uuid, const void *owner)
{
    struct changing **p = list;

    while (*p) {
        struct changing *c = *p;
        if ((!vdi_uuid || !strcmp(c->vdi_uuid, vdi_uuid))
            && (!owner || c->owner == owner)) {
            *p = c->next;
            free(c);
            if (vdi_uuid) {
                break;
            }
        } else {
            p = &c->next;
        }
    }
    pthread_cond_broadcast(&st.blk_cond);
}

static bool
vdi_changing(const char *vdi_uuid)
{
    return mark_find(st.changing, vdi_uuid, NULL);
}

/* Whether a block server or a direct open of the VDI must wait: its image
 * is changing, or a GC step may hold it open for writing. */
static bool
vdi_busy(const char *vdi_uuid)
{
    return vdi_changing(vdi_uuid) || mark_find(st.gc_claims, vdi_uuid, NULL);
}

/* Marks or unmarks a VDI as changing; blk_mu is held. */
static void
changing_add(const char *vdi_uuid)
{
    mark_add(&st.changing, vdi_uuid, NULL);
}

static void
changing_remove(const char *vdi_uuid)
{
    mark_remove(&st.changing, vdi_uuid, NULL);
}

/* Starts a change of a VDI's image: waits for another change of it to
 * end, then pauses its block servers.  The lock is not held during the
 * driver call, so readers of the table (in-use checks) never wait for a
 * slow driver. */
static int
blk_begin_change(const char *vdi_uuid, char **ret_err)
{
    int rc;

    pthread_mutex_lock(&st.blk_mu);
    while (vdi_changing(vdi_uuid)) {
        pthread_cond_wait(&st.blk_cond, &st.blk_mu);
    }
    rc = blk_pause_vdi(vdi_uuid, true, ret_err);
    if (!rc) {
        changing_add(vdi_uuid);
    }
    pthread_mutex_unlock(&st.blk_mu);
    return rc;
}

static void
blk_end_change(const char *vdi_uuid)
{
    pthread_mutex_lock(&st.blk_mu);
    changing_remove(vdi_uuid);
    blk_pause_vdi(vdi_uuid, false, NULL);
    pthread_mutex_unlock(&st.blk_mu);
}

static int
vdi_snap_or_clone(struct api_ctx *ctx, const char *ref, bool snapshot,
                  char *ret_ref)
{
    struct xapi *x = ctx->x;
    const char *op = snapshot ? "snapshot" : "clone";
    struct sm_vdi_info info, src;
    struct vdi_facts vf;
    struct sm_sr_stat s;
    struct sr_att *a = NULL;
    struct db_txn *txn;
    char op_id[48], sr_ref[48], new_ref[48], new_uuid[40], *err = NULL;
    bool have_stat, have_src = false, made = false, locked = false;
    int rc = -1, r;

    memset(&info, 0, sizeof info);
    memset(&src, 0, sizeof src);
    memset(&vf, 0, sizeof vf);
    if (vdi_op_begin(ctx, ref, op, op_id, sr_ref)) {
        return -1;
    }
    if (!vdi_facts_get(x->db, ref, &vf)) {
        api_fail_handle(ctx, CLS_VDI, ref);
        goto out;
    }
    a = sr_get_or_fail(ctx, sr_ref);
    if (!a) {
        goto out;
    }
    uuid_generate(new_uuid);
    pthread_mutex_lock(&a->lock);
    locked = true;
    /* The chain under the VDI changes: its block servers let go of the
     * image for the driver call and reopen the new leaf after it. */
    r = blk_begin_change(vf.uuid, &err);
    if (!r) {
        r = (snapshot ? a->drv->vdi_snapshot : a->drv->vdi_clone)
            (a->sm, vf.location, new_uuid, &info, &err);
        blk_end_change(vf.uuid);
    }
    if (r) {
        struct sm_fail f = { .sr = sr_ref, .vdi = ref, .op = op,
                             .requested = vf.virtual_size };
        if (r == -ENOSPC && sr_stat(a, &s)) {
            f.maximum = (int64_t) s.free_space;
        }
        fail_sm(ctx, r, err, &f);
        goto out;
    }
    made = true;
    if (!info.uuid[0]) {
        snprintf(info.uuid, sizeof info.uuid, "%.36s", new_uuid);
    }
    if (a->drv->vdi_info) {
        char *e2 = NULL;
        have_src = !a->drv->vdi_info(a->sm, vf.location, &src, &e2);
        free(e2);
    }
    have_stat = sr_stat(a, &s);
    db_new_ref(new_ref);
    txn = db_begin(x->db);
    {
        struct storage_vdi_spec spec = {
            .sr = sr_ref, .name_label = vf.name_label,
            .name_description = vf.name_description,
            .virtual_size = vf.virtual_size, .type = vf.type,
            .sharable = vf.sharable,
            /* A snapshot is read-only; a clone is as writable as its
             * original, and a clone of a snapshot is a new writable disk
             * (as VM.clone of a snapshot makes). */
            .read_only = snapshot || (vf.read_only && !vf.is_a_snapshot),
            .other_config = vf.other_config, .sm_config = vf.sm_config,
        };
        struct value **f = vdi_fields_new(&spec, &info);
        if (snapshot) {
            value_unref(f[F_VDI_is_a_snapshot]);
            f[F_VDI_is_a_snapshot] = value_true();
            value_unref(f[F_VDI_snapshot_of]);
            f[F_VDI_snapshot_of] = value_string(ref);
            value_unref(f[F_VDI_snapshot_time]);
            f[F_VDI_snapshot_time] = value_datetime_secs(time_wall_ms() / 1000);
        }
        if (db_insert_fields(txn, CLS_VDI, new_ref, f)) {
            db_abort(txn);
            api_fail(ctx, ERR_UUID_INVALID, "VDI", info.uuid);
            goto out;
        }
    }
    if (have_src) {
        vdi_update_from_info(txn, ref, &src);
    }
    sr_write_space(x, txn, sr_ref, have_stat ? &s : NULL);
    vdi_refresh_allowed(x, txn, new_ref);
    if (api_commit(ctx, txn)) {
        goto out;
    }
    made = false;
    memcpy(ret_ref, new_ref, 48);
    rc = 0;
out:
    if (made) {
        vdi_remove_half_made(a, &info, new_uuid);
    }
    if (locked) {
        pthread_mutex_unlock(&a->lock);
    }
    sm_vdi_info_clear(&info);
    sm_vdi_info_clear(&src);
    vdi_facts_clear(&vf);
    free(err);
    sr_put(a);
    vdi_op_end(x, ref, op_id);
    return rc;
}

int
storage_vdi_snapshot(struct api_ctx *ctx, const char *vdi_ref, char *ret_ref)
{
    return vdi_snap_or_clone(ctx, vdi_ref, true, ret_ref);
}

int
storage_vdi_clone(struct api_ctx *ctx, const char *vdi_ref, char *ret_ref)
{
    return vdi_snap_or_clone(ctx, vdi_ref, false, ret_ref);
}

int
storage_vdi_destroy(struct api_ctx *ctx, const char *ref)
{
    struct xapi *x = ctx->x;
    struct vdi_facts vf;
    struct sm_sr_stat s;
    struct sr_att *a = NULL;
    struct db_txn *txn;
    char op_id[48], sr_ref[48], *err = NULL;
    bool have_stat, locked = false, gone = false;
    int rc = -1, r;

    memset(&vf, 0, sizeof vf);
    if (vdi_op_begin(ctx, ref, "destroy", op_id, sr_ref)) {
        return -1;
    }
    if (!vdi_facts_get(x->db, ref, &vf)) {
        api_fail_handle(ctx, CLS_VDI, ref);
        goto out;
    }
    a = sr_get_or_fail(ctx, sr_ref);
    if (!a) {
        goto out;
    }
    pthread_mutex_lock(&a->lock);
    locked = true;
    r = a->drv->vdi_destroy(a->sm, vf.location, &err);
    if (r == -ENOENT) {
        /* Gone from the storage already: the record follows. */
        LOG_INFO("VDI %s was not in SR %s any more", vf.uuid, a->uuid);
        r = 0;
    }
    if (r) {
        struct sm_fail f = { .sr = sr_ref, .vdi = ref, .op = "destroy" };
        fail_sm(ctx, r, err, &f);
        goto out;
    }
    gone = true;
    have_stat = sr_stat(a, &s);
    txn = db_begin(x->db);
    vdi_delete_rows(txn, ref);
    sr_write_space(x, txn, sr_ref, have_stat ? &s : NULL);
    sr_refresh_allowed(x, txn, sr_ref);
    rc = api_commit(ctx, txn);
out:
    if (locked) {
        pthread_mutex_unlock(&a->lock);
    }
    vdi_facts_clear(&vf);
    free(err);
    sr_put(a);
    if (!gone) {
        vdi_op_end(x, ref, op_id);
    } else {
        gc_kick();
    }
    return rc;
}

/* ---- sizes after data changes ---- */

/* Re-reads one VDI's figures and the SR's from the driver and records
 * them.  The SR's lock is not needed: vdi_info and stat may run at any
 * time (sm.h). */
static void
vdi_refresh_size(struct xapi *x, struct sr_att *a, const char *vdi_ref,
                 const char *location)
{
    struct sm_vdi_info info;
    struct sm_sr_stat s;
    struct db_txn *txn;
    char *err = NULL;
    bool have_info = false, have_stat;

    memset(&info, 0, sizeof info);
    if (a->drv->vdi_info && location) {
        have_info = !a->drv->vdi_info(a->sm, location, &info, &err);
    }
    have_stat = sr_stat(a, &s);
    txn = db_begin(x->db);
    if (have_info && db_lookup(x->db, CLS_VDI, vdi_ref)) {
        vdi_update_from_info(txn, vdi_ref, &info);
    }
    sr_write_space(x, txn, a->ref, have_stat ? &s : NULL);
    if (db_commit(txn)) {
        LOG_ERR("SR %s: cannot record sizes", a->uuid);
    }
    sm_vdi_info_clear(&info);
    free(err);
}

/* Re-reads every VDI's figures (after the GC, SR.update). */
static void
sr_refresh_sizes(struct xapi *x, struct sr_att *a)
{
    struct value *vdis = NULL;
    struct db_row *sr;
    size_t n = 0;
    char **refs = NULL, **locs = NULL;
    struct sm_vdi_info *infos;
    bool *ok;
    struct sm_sr_stat s;
    struct db_txn *txn;
    bool have_stat;

    db_read_lock(x->db);
    sr = db_lookup(x->db, CLS_SR, a->ref);
    if (sr) {
        vdis = value_ref(sr->fields[F_SR_VDIs]);
        n = vdis->u.arr.n;
        refs = xcalloc(n + 1, sizeof *refs);
        locs = xcalloc(n + 1, sizeof *locs);
        for (size_t i = 0; i < n; i++) {
            struct db_row *v = db_lookup(x->db, CLS_VDI,
                                         vdis->u.arr.items[i]->u.str.s);
            refs[i] = xstrdup(vdis->u.arr.items[i]->u.str.s);
            locs[i] = v ? xstrdup(fstr(v, F_VDI_location)) : NULL;
        }
    }
    db_read_unlock(x->db);
    value_unref(vdis);
    if (!sr) {
        return;
    }
    infos = xcalloc(n + 1, sizeof *infos);
    ok = xcalloc(n + 1, sizeof *ok);
    for (size_t i = 0; i < n; i++) {
        char *err = NULL;
        ok[i] = a->drv->vdi_info && locs[i]
                && !a->drv->vdi_info(a->sm, locs[i], &infos[i], &err);
        free(err);
    }
    have_stat = sr_stat(a, &s);
    txn = db_begin(x->db);
    for (size_t i = 0; i < n; i++) {
        if (ok[i] && db_lookup(x->db, CLS_VDI, refs[i])) {
            vdi_update_from_info(txn, refs[i], &infos[i]);
        }
    }
    sr_write_space(x, txn, a->ref, have_stat ? &s : NULL);
    if (db_commit(txn)) {
        LOG_ERR("SR %s: cannot record sizes", a->uuid);
    }
    for (size_t i = 0; i < n; i++) {
        sm_vdi_info_clear(&infos[i]);
        free(refs[i]);
        free(locs[i]);
    }
    free(infos);
    free(ok);
    free(refs);
    free(locs);
}

/* ---- direct access to a VDI's data ---- */

struct storage_vdi_handle {
    struct xapi *x;
    struct sr_att *a;
    char ref[48];
    char op_id[48];
    char vdi_uuid[40];
    bool op;
    bool write;
    bool marked;                /* in st.opened */
    char *location;
    struct sm_attach att;
    bool attached;
    struct blockdev *dev;
};

/* Whether a read-write block server of the VDI runs and is not paused. */
static bool
blk_serves_rw_live(const char *vdi_uuid)
{
    bool found = false;

    pthread_mutex_lock(&st.blk_mu);
    for (struct blk *b = st.blks; b && !found; b = b->next) {
        found = !strcmp(b->vdi_uuid, vdi_uuid) && b->read_write && !b->paused;
    }
    pthread_mutex_unlock(&st.blk_mu);
    return found;
}

int
storage_vdi_open(struct api_ctx *ctx, const char *vdi_ref, bool write,
                 const char *op, struct storage_vdi_handle **ret)
{
    struct xapi *x = ctx->x;
    struct storage_vdi_handle *h = xcalloc(1, sizeof *h);
    struct vdi_facts vf;
    char sr_ref[48], *err = NULL;
    bool in_use;
    int r;

    h->x = x;
    h->write = write;
    snprintf(h->ref, sizeof h->ref, "%s", vdi_ref);
    if (!vdi_facts_get(x->db, vdi_ref, &vf)) {
        free(h);
        return api_fail_handle(ctx, CLS_VDI, vdi_ref);
    }
    if (write && vf.read_only) {
        api_fail(ctx, ERR_VDI_READONLY, vdi_ref);
        goto fail;
    }
    /* A GC step relinking the VDI's chain may hold its image open for
     * writing: wait for it (a step is one coalesce at most), then keep the
     * GC away from the chain until the handle is closed. */
    snprintf(h->vdi_uuid, sizeof h->vdi_uuid, "%s", vf.uuid);
    pthread_mutex_lock(&st.blk_mu);
    while (vdi_busy(vf.uuid)) {
        pthread_cond_wait(&st.blk_cond, &st.blk_mu);
    }
    mark_add(&st.opened, vf.uuid, h);
    h->marked = true;
    pthread_mutex_unlock(&st.blk_mu);
    in_use = write ? blk_serves(vf.uuid, false) : blk_serves_rw_live(vf.uuid);
    if (!in_use && write) {
        db_read_lock(x->db);
        struct db_row *row = db_lookup(x->db, CLS_VDI, vdi_ref);
        in_use = row && vdi_attached_vbd(x->db, row, false);
        db_read_unlock(x->db);
    }
    if (in_use) {
        api_fail(ctx, ERR_VDI_IN_USE, vdi_ref, op ? op : "copy");
        goto fail;
    }
    if (op) {
        if (vdi_op_begin(ctx, vdi_ref, op, h->op_id, sr_ref)) {
            goto fail;
        }
        h->op = true;
    } else {
        snprintf(sr_ref, sizeof sr_ref, "%s", vf.sr);
    }
    h->a = sr_get_or_fail(ctx, sr_ref);
    if (!h->a) {
        goto fail;
    }
    if (!h->a->drv->vdi_attach) {
        api_fail(ctx, ERR_SR_OPERATION_NOT_SUPPORTED, sr_ref);
        goto fail;
    }
    h->location = xstrdup(vf.location);
    r = h->a->drv->vdi_attach(h->a->sm, h->location, write, &h->att, &err);
    if (r) {
        struct sm_fail f = { .sr = sr_ref, .vdi = vdi_ref, .op = op };
        fail_sm(ctx, r, err, &f);
        goto fail;
    }
    h->attached = true;
    if (h->att.format && !strcmp(h->att.format, "vhd")) {
        r = blockdev_open_vhd(h->att.path, !write, &h->dev, &err);
    } else {
        r = blockdev_open_raw(h->att.path, !write || h->att.read_only, &h->dev,
                              &err);
    }
    if (r) {
        struct sm_fail f = { .sr = sr_ref, .vdi = vdi_ref, .op = op };
        fail_sm(ctx, r, err, &f);
        goto fail;
    }
    vdi_facts_clear(&vf);
    free(err);
    *ret = h;
    return 0;
fail:
    vdi_facts_clear(&vf);
    free(err);
    h->write = false;       /* nothing was written */
    storage_vdi_close(h);
    return -1;
}

struct blockdev *
storage_vdi_blockdev(struct storage_vdi_handle *h)
{
    return h->dev;
}

const struct sm_attach *
storage_vdi_attachment(struct storage_vdi_handle *h)
{
    return &h->att;
}

void
storage_vdi_close(struct storage_vdi_handle *h)
{
    if (!h) {
        return;
    }
    if (h->dev) {
        if (h->write && h->dev->ops->flush) {
            int r = h->dev->ops->flush(h->dev);
            if (r) {
                LOG_ERR("VDI %s: flush: %s", h->ref, strerror(-r));
            }
        }
        blockdev_close(h->dev);
    }
    if (h->attached && h->a->drv->vdi_detach) {
        h->a->drv->vdi_detach(h->a->sm, h->location);
    }
    sm_attach_clear(&h->att);
    if (h->a && h->write) {
        vdi_refresh_size(h->x, h->a, h->ref, h->location);
    }
    sr_put(h->a);
    if (h->op) {
        vdi_op_end(h->x, h->ref, h->op_id);
    }
    if (h->marked) {
        pthread_mutex_lock(&st.blk_mu);
        mark_remove(&st.opened, h->vdi_uuid, h);
        pthread_mutex_unlock(&st.blk_mu);
    }
    free(h->location);
    free(h);
}

/* ---- VDI.copy ---- */

static bool
all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

/* The part of a task's progress that one copy reports: VM.copy gives
 * each disk its own slice, so the task's progress never goes back. */
struct copy_range {
    double from;
    double to;
};

/* Copies src into dst (the first size bytes); with base, only where src
 * differs from base; fresh means dst reads as zeros so zero runs are
 * skipped.  Progress goes from range->from towards range->to. */
static int
copy_data(struct api_ctx *ctx, struct blockdev *src, struct blockdev *base,
          struct blockdev *dst, uint64_t size, bool fresh,
          const struct copy_range *range)
{
    unsigned char *buf = xmalloc(COPY_CHUNK);
    unsigned char *bbuf = base ? xmalloc(COPY_CHUNK) : NULL;
    int rc = 0;

    for (uint64_t off = 0; off < size; off += COPY_CHUNK) {
        size_t n = (size_t) MIN((uint64_t) COPY_CHUNK, size - off);
        bool zero;
        /* Every 32 MiB, skipped or not: progress, and a chance to stop. */
        if (off && ((off / COPY_CHUNK) & 15) == 0) {
            api_task_set_progress(ctx, range->from
                                       + (range->to - range->from)
                                         * (double) off / (double) size);
            if (api_task_cancelled(ctx)) {
                rc = -ECANCELED;
                break;
            }
        }
        rc = src->ops->read(src, buf, off, n);
        if (rc) {
            break;
        }
        if (base && off < base->size) {
            size_t bn = (size_t) MIN((uint64_t) n, base->size - off);
            memset(bbuf, 0, n);
            rc = base->ops->read(base, bbuf, off, bn);
            if (rc) {
                break;
            }
            if (!memcmp(buf, bbuf, n)) {
                continue;
            }
        }
        zero = all_zero(buf, n);
        if (zero && fresh && !base) {
            continue;
        }
        if (zero && dst->ops->write_zeroes) {
            rc = dst->ops->write_zeroes(dst, off, n);
        } else {
            rc = dst->ops->write(dst, buf, off, n);
        }
        if (rc) {
            break;
        }
    }
    free(buf);
    free(bbuf);
    return rc;
}

/* Runs f on a scratch context so that a clean-up's failure does not
 * replace the error the caller is about to report. */
static void
destroy_quietly(struct api_ctx *ctx, const char *vdi_ref)
{
    struct api_ctx scratch = *ctx;

    scratch.error = NULL;
    scratch.task[0] = '\0';
    if (storage_vdi_destroy(&scratch, vdi_ref)) {
        LOG_WARN("cannot remove the partial copy %s", vdi_ref);
    }
    value_unref(scratch.error);
}

static int
vdi_copy(struct api_ctx *ctx, const char *vdi_ref, const char *sr_ref,
         const char *base_ref, const char *into_ref,
         const struct copy_range *range, char *ret_ref)
{
    struct xapi *x = ctx->x;
    struct storage_vdi_handle *src = NULL, *dst = NULL, *base = NULL;
    struct vdi_facts vf, into;
    char new_ref[48] = "";
    bool fresh = null_ref(into_ref);
    int rc = -1, r;

    memset(&into, 0, sizeof into);
    if (!vdi_facts_get(x->db, vdi_ref, &vf)) {
        return api_fail_handle(ctx, CLS_VDI, vdi_ref);
    }
    if (!fresh) {
        if (!vdi_facts_get(x->db, into_ref, &into)) {
            api_fail_handle(ctx, CLS_VDI, into_ref);
            goto out;
        }
        if (into.read_only) {
            api_fail(ctx, ERR_VDI_READONLY, into_ref);
            goto out;
        }
        if (into.virtual_size < vf.virtual_size) {
            char min[24];
            i64_str(min, sizeof min, vf.virtual_size);
            api_fail(ctx, ERR_VDI_TOO_SMALL, into_ref, min);
            goto out;
        }
    }
    if (!null_ref(base_ref)) {
        struct vdi_facts bf;
        if (!vdi_facts_get(x->db, base_ref, &bf)) {
            api_fail_handle(ctx, CLS_VDI, base_ref);
            goto out;
        }
        vdi_facts_clear(&bf);
    }
    if (fresh) {
        struct storage_vdi_spec spec = {
            .sr = null_ref(sr_ref) ? vf.sr : sr_ref,
            .name_label = vf.name_label,
            .name_description = vf.name_description,
            .virtual_size = vf.virtual_size, .type = vf.type,
            .sharable = vf.sharable, .read_only = false,
            .other_config = vf.other_config,
        };
        db_read_lock(x->db);
        r = db_lookup(x->db, CLS_SR, spec.sr) != NULL;
        db_read_unlock(x->db);
        if (!r) {
            api_fail_handle(ctx, CLS_SR, spec.sr);
            goto out;
        }
        if (storage_vdi_create(ctx, &spec, new_ref)) {
            goto out;
        }
    } else {
        snprintf(new_ref, sizeof new_ref, "%s", into_ref);
    }
    if (storage_vdi_open(ctx, vdi_ref, false, "copy", &src)
        || (!null_ref(base_ref)
            && storage_vdi_open(ctx, base_ref, false, NULL, &base))
        || storage_vdi_open(ctx, new_ref, true, "copy", &dst)) {
        goto out;
    }
    api_task_set_progress(ctx, range->from);
    r = copy_data(ctx, src->dev, base ? base->dev : NULL, dst->dev,
                  MIN(src->dev->size, dst->dev->size), fresh, range);
    if (r == -ECANCELED) {
        api_fail(ctx, ERR_TASK_CANCELLED, ctx->task);
        goto out;
    }
    if (r) {
        LOG_ERR("VDI.copy %s: %s", vf.uuid, strerror(-r));
        api_fail(ctx, ERR_VDI_COPY_FAILED);
        goto out;
    }
    api_task_set_progress(ctx, range->to);
    rc = 0;
out:
    storage_vdi_close(src);
    storage_vdi_close(base);
    storage_vdi_close(dst);
    if (rc && fresh && *new_ref) {
        destroy_quietly(ctx, new_ref);
    }
    if (!rc) {
        memcpy(ret_ref, new_ref, 48);
    }
    vdi_facts_clear(&vf);
    vdi_facts_clear(&into);
    return rc;
}

int
storage_vdi_copy(struct api_ctx *ctx, const char *vdi_ref, const char *sr_ref,
                 const char *into_ref, char *ret_ref)
{
    return storage_vdi_copy_range(ctx, vdi_ref, sr_ref, into_ref, 0.0, 1.0,
                                  ret_ref);
}

int
storage_vdi_copy_range(struct api_ctx *ctx, const char *vdi_ref,
                       const char *sr_ref, const char *into_ref, double from,
                       double to, char *ret_ref)
{
    struct copy_range range = { from, to };

    /* A range out of order or outside [0, 1] would make the task's
     * progress jump around: clamp rather than trust the caller. */
    range.from = MAX(0.0, MIN(range.from, 1.0));
    range.to = MAX(range.from, MIN(range.to, 1.0));
    return vdi_copy(ctx, vdi_ref, sr_ref, NULL, into_ref, &range, ret_ref);
}

/* VDI.resize and VDI.resize_online: online, the VDI's block servers are
 * paused around the driver call. */
static int
vdi_resize(struct api_ctx *ctx, const char *ref, int64_t size, bool online)
{
    struct xapi *x = ctx->x;
    const char *op = online ? "resize_online" : "resize";
    struct sm_vdi_info info;
    struct vdi_facts vf;
    struct sm_sr_stat s;
    struct sr_att *a = NULL;
    struct db_txn *txn;
    char op_id[48], sr_ref[48], *err = NULL;
    bool have_stat, locked = false;
    int rc = -1, r;

    memset(&info, 0, sizeof info);
    memset(&vf, 0, sizeof vf);
    if (size < 0) {
        char v[24];
        i64_str(v, sizeof v, size);
        return api_fail(ctx, ERR_INVALID_VALUE, "size", v);
    }
    if (vdi_op_begin(ctx, ref, op, op_id, sr_ref)) {
        return -1;
    }
    if (!vdi_facts_get(x->db, ref, &vf)) {
        api_fail_handle(ctx, CLS_VDI, ref);
        goto out;
    }
    if (!online && blk_serves(vf.uuid, false)) {
        api_fail(ctx, ERR_VDI_IN_USE, ref, op);
        goto out;
    }
    a = sr_get_or_fail(ctx, sr_ref);
    if (!a) {
        goto out;
    }
    pthread_mutex_lock(&a->lock);
    locked = true;
    r = blk_begin_change(vf.uuid, &err);
    if (!r) {
        r = a->drv->vdi_resize(a->sm, vf.location, (uint64_t) size, &info,
                               &err);
        blk_end_change(vf.uuid);
    }
    if (r) {
        struct sm_fail f = { .sr = sr_ref, .vdi = ref, .op = op,
                             .requested = size };
        if (r == -EFBIG || (r == -EINVAL && size > VDI_MAX_SIZE
                            && !vhd_format_raw(vf.sm_config))) {
            char max[24];
            i64_str(max, sizeof max, VDI_MAX_SIZE);
            api_fail(ctx, ERR_VDI_TOO_LARGE, ref, max);
            goto out;
        }
        if (r == -ENOSPC && sr_stat(a, &s)) {
            f.maximum = (int64_t) s.free_space;
        }
        fail_sm(ctx, r, err, &f);
        goto out;
    }
    have_stat = sr_stat(a, &s);
    txn = db_begin(x->db);
    vdi_update_from_info(txn, ref, &info);
    sr_write_space(x, txn, sr_ref, have_stat ? &s : NULL);
    rc = api_commit(ctx, txn);
out:
    if (locked) {
        pthread_mutex_unlock(&a->lock);
    }
    sm_vdi_info_clear(&info);
    vdi_facts_clear(&vf);
    free(err);
    sr_put(a);
    vdi_op_end(x, ref, op_id);
    return rc;
}

/* ---- block servers of plugged VBDs ---- */

static char *
blk_path(struct xapi *x, const char *vbd_uuid, const char *suffix)
{
    return xasprintf("%s/tapdisk/%s.%s", x->state_dir, vbd_uuid, suffix);
}

/* What a block server serves on; for one adopted after a restart, the
 * address tapdisk_uri() gave it (its socket is where the table puts it). */
static char *
blk_uri(struct xapi *x, const struct blk *b)
{
    char *sock, *uri;

    if (b->td) {
        return xstrdup(tapdisk_uri(b->td));
    }
    sock = blk_path(x, b->vbd_uuid, "sock");
    uri = xasprintf("nbd+unix:///?socket=%s", sock);
    free(sock);
    return uri;
}

static void
blk_free(struct blk *b)
{
    if (b) {
        free(b->location);
        free(b);
    }
}

/* Ends a block server taken out of the table and releases what it
 * held: the process, the driver's attachment, its files. */
static void
blk_end(struct xapi *x, struct blk *b)
{
    struct sr_att *a = sr_get(b->sr_ref);
    char *path;

    if (b->td) {
        tapdisk_stop(b->td);
    } else if (b->pid > 0) {
        kill(b->pid, SIGTERM);
    }
    path = blk_path(x, b->vbd_uuid, "pid");
    unlink(path);
    free(path);
    path = blk_path(x, b->vbd_uuid, "sock");
    unlink(path);
    free(path);
    if (a) {
        if (a->drv->vdi_detach) {
            a->drv->vdi_detach(a->sm, b->location);
        }
        if (b->read_write) {
            vdi_refresh_size(x, a, b->vdi_ref, b->location);
        }
    }
    sr_put(a);
    blk_free(b);
}

static void
qos_of(const struct db_row *vbd, uint64_t *ret_iops, uint64_t *ret_kbps)
{
    const struct value *p = vbd->fields[F_VBD_qos_algorithm_params];
    const char *s;
    int64_t v;

    *ret_iops = *ret_kbps = 0;
    if (strcmp(fstr(vbd, F_VBD_qos_algorithm_type), "ratelimit")) {
        return;
    }
    s = value_struct_get_string(p, "iops");
    if (s && !str_to_int64(s, &v) && v > 0) {
        *ret_iops = (uint64_t) v;
    }
    s = value_struct_get_string(p, "kbps");
    if (s && !str_to_int64(s, &v) && v > 0) {
        *ret_kbps = (uint64_t) v;
    }
}

int
storage_vbd_attach(struct xapi *x, const char *vbd_ref, char **ret_target,
                   char **ret_format, char **ret_err)
{
    return storage_vbd_attach_vdi(x, vbd_ref, NULL, ret_target, ret_format,
                                  ret_err);
}

char *
storage_vbd_target(struct xapi *x, const char *vbd_ref)
{
    char *target = NULL;

    pthread_mutex_lock(&st.blk_mu);
    for (struct blk *b = st.blks; b; b = b->next) {
        if (!strcmp(b->vbd_ref, vbd_ref)) {
            target = blk_uri(x, b);
            break;
        }
    }
    pthread_mutex_unlock(&st.blk_mu);
    return target;
}

int
storage_vbd_attach_vdi(struct xapi *x, const char *vbd_ref,
                       const char *vdi_ref_in, char **ret_target,
                       char **ret_format, char **ret_err)
{
    struct db_row *vbd, *vdi, *sr;
    char vbd_uuid[40], vdi_uuid[40], vdi_ref[48], sr_ref[48], *location = NULL;
    char *sock = NULL, *pidfile = NULL, *err = NULL, pid_text[128];
    bool empty = false, rw = false, cd = false, sharable = false, vdi_ro = false;
    uint64_t iops = 0, kbps = 0;
    struct tapdisk_params p;
    struct sm_attach att;
    struct tapdisk *td = NULL;
    struct sr_att *a = NULL;
    struct blk *b;
    int rc;

    memset(&att, 0, sizeof att);
    db_read_lock(x->db);
    vbd = db_lookup(x->db, CLS_VBD, vbd_ref);
    vdi = vbd ? db_lookup(x->db, CLS_VDI, vdi_ref_in ? vdi_ref_in
                                                     : fstr(vbd, F_VBD_VDI))
              : NULL;
    sr = vdi ? db_lookup(x->db, CLS_SR, fstr(vdi, F_VDI_SR)) : NULL;
    if (vbd) {
        snprintf(vbd_uuid, sizeof vbd_uuid, "%s", fstr(vbd, F_VBD_uuid));
        empty = !vdi_ref_in && vbd->fields[F_VBD_empty]->u.b;
        cd = !strcmp(fstr(vbd, F_VBD_type), "CD");
        rw = !strcmp(fstr(vbd, F_VBD_mode), "RW") && !cd;
        qos_of(vbd, &iops, &kbps);
    }
    if (vdi && sr) {
        snprintf(vdi_uuid, sizeof vdi_uuid, "%s", fstr(vdi, F_VDI_uuid));
        snprintf(vdi_ref, sizeof vdi_ref, "%s", vdi->ref);
        snprintf(sr_ref, sizeof sr_ref, "%s", sr->ref);
        location = xstrdup(fstr(vdi, F_VDI_location));
        sharable = vdi->fields[F_VDI_sharable]->u.b;
        vdi_ro = vdi->fields[F_VDI_read_only]->u.b;
    }
    db_read_unlock(x->db);
    if (!vbd) {
        *ret_err = xasprintf("no VBD %s", vbd_ref);
        return -ENOENT;
    }
    if (empty) {
        *ret_target = NULL;
        *ret_format = NULL;
        return 0;
    }
    if (!vdi || !sr) {
        *ret_err = xasprintf("VBD %s has no VDI in an SR", vbd_uuid);
        free(location);
        return -ENOENT;
    }
    if (rw && vdi_ro) {
        *ret_err = xasprintf("VDI %s is read-only", vdi_uuid);
        free(location);
        return -EROFS;
    }

    pthread_mutex_lock(&st.blk_mu);
    /* Not while a snapshot swaps the image, nor while a GC step may hold
     * it open for writing (the server could not open it). */
    while (vdi_busy(vdi_uuid)) {
        pthread_cond_wait(&st.blk_cond, &st.blk_mu);
    }
    for (b = st.blks; b; b = b->next) {
        if (!strcmp(b->vbd_ref, vbd_ref)) {
            break;
        }
        /* A disk written by one VM at a time, unless it is sharable. */
        if (!strcmp(b->vdi_uuid, vdi_uuid) && !sharable
            && (rw || b->read_write)) {
            *ret_err = xasprintf("VDI %s is in use by VBD %s", vdi_uuid,
                                 b->vbd_uuid);
            pthread_mutex_unlock(&st.blk_mu);
            free(location);
            return -EBUSY;
        }
    }
    if (b) {
        /* Attached already (a repeated plug): the same server. */
        *ret_target = blk_uri(x, b);
        *ret_format = xstrdup("nbd");
        pthread_mutex_unlock(&st.blk_mu);
        free(location);
        return 0;
    }
    /* The VDI counts as changing while its server starts (up to seconds):
     * no snapshot swaps its image meanwhile and no second attach of it
     * races this one, yet the table's lock is free for others. */
    changing_add(vdi_uuid);
    pthread_mutex_unlock(&st.blk_mu);
    a = sr_get(sr_ref);
    if (!a) {
        *ret_err = xasprintf("SR of VDI %s is not attached", vdi_uuid);
        rc = -ENODEV;
        goto out;
    }
    if (!a->drv->vdi_attach) {
        *ret_err = xstrdup("the SR's driver cannot attach VDIs");
        rc = -EOPNOTSUPP;
        goto out;
    }
    rc = a->drv->vdi_attach(a->sm, location, rw, &att, &err);
    if (rc) {
        *ret_err = err;
        err = NULL;
        goto out;
    }
    sock = blk_path(x, vbd_uuid, "sock");
    pidfile = blk_path(x, vbd_uuid, "pid");
    {
        char *dir = xasprintf("%s/tapdisk", x->state_dir);
        mkdir_p(dir);
        free(dir);
    }
    unlink(sock);
    memset(&p, 0, sizeof p);
    p.socket_path = sock;
    p.image_path = att.path;
    p.format = att.format && !strcmp(att.format, "vhd") ? "vhd" : "raw";
    p.read_only = !rw || att.read_only;
    p.iops = iops;
    p.kbps = kbps;
    p.description = vdi_uuid;
    rc = tapdisk_start(&p, &td, &err);
    if (rc) {
        *ret_err = err;
        err = NULL;
        if (a->drv->vdi_detach) {
            a->drv->vdi_detach(a->sm, location);
        }
        goto out;
    }
    snprintf(pid_text, sizeof pid_text, "%d %s\n", (int) tapdisk_pid(td),
             vdi_uuid);
    if (write_file_atomic(pidfile, pid_text, strlen(pid_text), 0600)) {
        LOG_WARN("VBD %s: cannot write %s", vbd_uuid, pidfile);
    }
    pthread_mutex_lock(&st.blk_mu);
    b = xcalloc(1, sizeof *b);
    snprintf(b->vbd_ref, sizeof b->vbd_ref, "%s", vbd_ref);
    snprintf(b->vbd_uuid, sizeof b->vbd_uuid, "%s", vbd_uuid);
    snprintf(b->vdi_uuid, sizeof b->vdi_uuid, "%s", vdi_uuid);
    snprintf(b->vdi_ref, sizeof b->vdi_ref, "%s", vdi_ref);
    snprintf(b->sr_ref, sizeof b->sr_ref, "%s", sr_ref);
    b->location = location;
    location = NULL;
    b->td = td;
    b->pid = tapdisk_pid(td);
    b->read_write = !p.read_only;
    b->next = st.blks;
    st.blks = b;
    *ret_target = xstrdup(tapdisk_uri(td));
    *ret_format = xstrdup("nbd");
    pthread_mutex_unlock(&st.blk_mu);
    LOG_INFO("VBD %s: block server %d serves VDI %s on %s", vbd_uuid,
             (int) tapdisk_pid(td), vdi_uuid, sock);
    rc = 0;
out:
    pthread_mutex_lock(&st.blk_mu);
    changing_remove(vdi_uuid);
    pthread_mutex_unlock(&st.blk_mu);
    sr_put(a);
    sm_attach_clear(&att);
    free(location);
    free(sock);
    free(pidfile);
    free(err);
    return rc;
}

void
storage_vbd_detach(struct xapi *x, const char *vbd_ref)
{
    struct blk **p, *b = NULL;

    pthread_mutex_lock(&st.blk_mu);
    for (;;) {
        for (p = &st.blks; *p; p = &(*p)->next) {
            if (!strcmp((*p)->vbd_ref, vbd_ref)) {
                b = *p;
                break;
            }
        }
        if (!b || !vdi_changing(b->vdi_uuid)) {
            break;
        }
        /* Not in the middle of a snapshot or a GC swap of its image. */
        pthread_cond_wait(&st.blk_cond, &st.blk_mu);
        b = NULL;
    }
    if (b) {
        *p = b->next;
        /* Until the server has exited (its last writes flushed), no
         * change of the image may begin. */
        changing_add(b->vdi_uuid);
    }
    pthread_mutex_unlock(&st.blk_mu);
    if (!b) {
        return;
    }
    if (b->td) {
        tapdisk_stop(b->td);
        b->td = NULL;
    } else if (b->pid > 0) {
        kill(b->pid, SIGTERM);
    }
    b->pid = 0;
    blk_end_change(b->vdi_uuid);
    LOG_INFO("VBD %s: block server stopped", b->vbd_uuid);
    blk_end(x, b);
}

/* Whether pid is a running xapi-tapdisk. */
static bool
pid_is_tapdisk(pid_t pid)
{
    char path[64], *data = NULL;
    size_t len = 0;
    bool yes;

    snprintf(path, sizeof path, "/proc/%d/cmdline", (int) pid);
    if (read_file(path, 4096, &data, &len)) {
        return false;
    }
    yes = len > 0 && memmem(data, len, "tapdisk", 7) != NULL;
    free(data);
    return yes;
}

/* Block servers left from before a restart: a provider whose domains
 * outlive the toolstack keeps those of VBDs still attached to running
 * VMs (adopted: they serve on, but cannot be paused); every other one is
 * stopped. */
static void
blk_adopt_leftovers(struct xapi *x)
{
    char *dir = xasprintf("%s/tapdisk", x->state_dir);
    bool keep_running = x->xenops && x->xenops->provider->domain_lookup;
    struct dirent *de;
    DIR *d = opendir(dir);

    while (d && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        char uuid[40], *path, *text = NULL, vdi_uuid[40] = "";
        size_t len;
        int pid = 0;
        bool adopt = false;
        struct db_row *vbd, *vm;
        struct blk *b;

        if (n != 36 + 4 || strcmp(de->d_name + 36, ".pid")) {
            continue;
        }
        snprintf(uuid, sizeof uuid, "%.36s", de->d_name);
        path = xasprintf("%s/%s", dir, de->d_name);
        if (!read_file(path, 256, &text, &len)) {
            sscanf(text, "%d %39s", &pid, vdi_uuid);
        }
        free(text);
        if (pid > 0 && !pid_is_tapdisk(pid)) {
            pid = 0;
        }
        db_read_lock(x->db);
        vbd = db_lookup_uuid(x->db, CLS_VBD, uuid);
        vm = vbd ? db_lookup(x->db, CLS_VM, fstr(vbd, F_VBD_VM)) : NULL;
        if (keep_running && pid > 0 && vbd && vm
            && vbd->fields[F_VBD_currently_attached]->u.b
            && (!strcmp(fstr(vm, F_VM_power_state), "Running")
                || !strcmp(fstr(vm, F_VM_power_state), "Paused"))) {
            struct db_row *vdi = db_lookup(x->db, CLS_VDI, fstr(vbd, F_VBD_VDI));
            adopt = vdi != NULL;
            if (adopt) {
                b = xcalloc(1, sizeof *b);
                snprintf(b->vbd_ref, sizeof b->vbd_ref, "%s", vbd->ref);
                snprintf(b->vbd_uuid, sizeof b->vbd_uuid, "%s", uuid);
                snprintf(b->vdi_uuid, sizeof b->vdi_uuid, "%s",
                         fstr(vdi, F_VDI_uuid));
                snprintf(b->vdi_ref, sizeof b->vdi_ref, "%s", vdi->ref);
                snprintf(b->sr_ref, sizeof b->sr_ref, "%s", fstr(vdi, F_VDI_SR));
                b->location = xstrdup(fstr(vdi, F_VDI_location));
                b->pid = pid;
                b->read_write = !strcmp(fstr(vbd, F_VBD_mode), "RW");
                pthread_mutex_lock(&st.blk_mu);
                b->next = st.blks;
                st.blks = b;
                pthread_mutex_unlock(&st.blk_mu);
            }
        }
        db_read_unlock(x->db);
        if (adopt) {
            LOG_INFO("VBD %s: adopted block server %d", uuid, pid);
        } else {
            char *sock = blk_path(x, uuid, "sock");
            if (pid > 0) {
                LOG_INFO("VBD %s: stopping leftover block server %d", uuid, pid);
                kill(pid, SIGTERM);
            }
            unlink(path);
            unlink(sock);
            free(sock);
        }
        free(path);
    }
    if (d) {
        closedir(d);
    }
    free(dir);
}

/* ---- garbage collection ---- */

/* One gc_step call: the owner of the VDIs it claims (st.gc_claims). */
struct gc_run {
    const char *sr_uuid;        /* for the log */
};

/* The driver asks before it touches a VDI's image.  A VDI that a block
 * server serves, that one is starting or stopping for, or that is open
 * through storage_vdi_open() counts as attached (the driver pauses it or
 * leaves it alone).  An idle VDI is claimed for the rest of the step, so
 * that no block server or direct open starts on it while the driver may
 * hold its image open for writing; the answer then stays "idle" for this
 * step. */
static bool
gc_is_attached(void *aux, const char *vdi_uuid)
{
    struct gc_run *g = aux;
    bool attached;

    pthread_mutex_lock(&st.blk_mu);
    if (mark_find(st.gc_claims, vdi_uuid, g)) {
        attached = false;
    } else {
        attached = blk_serves_locked(vdi_uuid, false) || vdi_changing(vdi_uuid)
                   || mark_find(st.opened, vdi_uuid, NULL);
        if (!attached) {
            mark_add(&st.gc_claims, vdi_uuid, g);
        }
    }
    pthread_mutex_unlock(&st.blk_mu);
    return attached;
}

/* Pauses the VDI's block servers for the driver, or refuses (-EBUSY, the
 * GC skips the VDI for now) when the VDI is open through
 * storage_vdi_open(): such a user cannot be told to let go of the image. */
static int
gc_pause(void *aux, const char *vdi_uuid)
{
    struct gc_run *g = aux;
    char *err = NULL;
    int rc;

    pthread_mutex_lock(&st.blk_mu);
    while (vdi_changing(vdi_uuid)) {
        pthread_cond_wait(&st.blk_cond, &st.blk_mu);
    }
    if (mark_find(st.opened, vdi_uuid, NULL)) {
        err = xstrdup("the VDI is open for import, export or copy");
        rc = -EBUSY;
    } else {
        rc = blk_pause_vdi(vdi_uuid, true, &err);
        if (!rc) {
            changing_add(vdi_uuid);
        }
    }
    pthread_mutex_unlock(&st.blk_mu);
    if (rc) {
        LOG_INFO("SR %s: GC: VDI %s not paused: %s", g->sr_uuid, vdi_uuid,
                 err ? err : "?");
    }
    free(err);
    return rc;
}

static void
gc_unpause(void *aux, const char *vdi_uuid)
{
    (void) aux;
    blk_end_change(vdi_uuid);
}

static int
gc_progress(void *aux, uint64_t done, uint64_t total)
{
    bool stop;

    (void) aux;
    (void) done;
    (void) total;
    pthread_mutex_lock(&st.mu);
    stop = st.gc_stop;
    pthread_mutex_unlock(&st.mu);
    return stop;
}

/* Runs gc_step on one SR until it has nothing left to do; refreshes the
 * sizes when it did something. */
static int
gc_sr(struct xapi *x, const char *sr_ref, char **ret_err)
{
    struct gc_run g = { .sr_uuid = NULL };
    struct sm_gc_hooks hooks = {
        .is_attached = gc_is_attached, .pause = gc_pause,
        .unpause = gc_unpause, .progress = gc_progress, .aux = &g,
    };
    struct sr_att *a = sr_get(sr_ref);
    bool more = true, did = false;
    int rc = 0, steps = 0;

    if (!a || !a->drv->gc_step) {
        sr_put(a);
        return 0;
    }
    while (more && steps++ < 10000) {
        char *err = NULL;
        pthread_mutex_lock(&a->lock);
        more = false;
        g.sr_uuid = a->uuid;
        rc = a->drv->gc_step(a->sm, &hooks, &more, &err);
        /* The step has let go of every image: attaches waiting for the
         * VDIs it claimed may start. */
        pthread_mutex_lock(&st.blk_mu);
        mark_remove(&st.gc_claims, NULL, &g);
        pthread_mutex_unlock(&st.blk_mu);
        pthread_mutex_unlock(&a->lock);
        if (rc) {
            LOG_WARN("SR %s: GC: %s", a->uuid, err ? err : strerror(-rc));
            if (ret_err) {
                *ret_err = err;
                err = NULL;
            }
            free(err);
            break;
        }
        free(err);
        did = true;
        if (gc_progress(NULL, 0, 0)) {
            break;
        }
    }
    if (did) {
        sr_refresh_sizes(x, a);
    }
    sr_put(a);
    return rc;
}

int
storage_gc_run(struct xapi *x, const char *sr_ref, char **ret_err)
{
    return gc_sr(x, sr_ref, ret_err);
}

static void *
gc_main(void *aux)
{
    struct xapi *x = aux;

    pthread_mutex_lock(&st.mu);
    while (!st.gc_stop) {
        struct timespec until;
        char (*refs)[48] = NULL;
        size_t n = 0;

        if (!st.gc_kick) {
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += GC_INTERVAL_MS / 1000;
            pthread_cond_timedwait(&st.gc_cond, &st.mu, &until);
        }
        if (st.gc_stop) {
            break;
        }
        st.gc_kick = false;
        for (struct sr_att *a = st.srs; a; a = a->next) {
            refs = xrealloc(refs, (n + 1) * sizeof *refs);
            memcpy(refs[n++], a->ref, 48);
        }
        pthread_mutex_unlock(&st.mu);
        for (size_t i = 0; i < n; i++) {
            gc_sr(x, refs[i], NULL);
        }
        free(refs);
        pthread_mutex_lock(&st.mu);
    }
    pthread_mutex_unlock(&st.mu);
    return NULL;
}

/* ---- scan, plug and unplug ---- */

/* SR.scan: records every VDI the driver reports (new ones introduced,
 * known ones refreshed) and drops the records of VDIs gone from the
 * storage, unless a VBD has them attached (then they are marked
 * missing).  The SR's lock is held from the driver's answer to the
 * commit, so no VDI is created or destroyed in between. */
static int
sr_scan(struct api_ctx *ctx, struct sr_att *a)
{
    struct xapi *x = ctx->x;
    struct sm_vdi_info *infos = NULL;
    struct sm_sr_stat s;
    struct db_txn *txn;
    struct db_row *sr;
    struct value *vdis;
    size_t n = 0;
    char *err = NULL;
    bool have_stat, *seen = NULL;
    int rc = -1, r;

    if (!a->drv->scan) {
        return api_fail(ctx, ERR_SR_OPERATION_NOT_SUPPORTED, a->ref);
    }
    pthread_mutex_lock(&a->lock);
    r = a->drv->scan(a->sm, &infos, &n, &err);
    if (r) {
        struct sm_fail f = { .sr = a->ref };
        fail_sm(ctx, r, err, &f);
        goto out;
    }
    have_stat = sr_stat(a, &s);
    seen = xcalloc(n + 1, sizeof *seen);
    txn = db_begin(x->db);
    sr = db_lookup(x->db, CLS_SR, a->ref);
    if (!sr) {
        db_abort(txn);
        api_fail_handle(ctx, CLS_SR, a->ref);
        goto out;
    }
    vdis = value_ref(sr->fields[F_SR_VDIs]);
    for (size_t i = 0; i < vdis->u.arr.n; i++) {
        const char *ref = vdis->u.arr.items[i]->u.str.s;
        struct db_row *v = db_lookup(x->db, CLS_VDI, ref);
        size_t k;
        if (!v) {
            continue;
        }
        for (k = 0; k < n; k++) {
            if (infos[k].location && !strcmp(infos[k].location,
                                             fstr(v, F_VDI_location))) {
                break;
            }
        }
        if (k < n) {
            seen[k] = true;
            vdi_update_from_info(txn, ref, &infos[k]);
        } else if (vdi_attached_vbd(x->db, v, false)
                   || !v->fields[F_VDI_managed]->u.b) {
            if (v->fields[F_VDI_managed]->u.b && !v->fields[F_VDI_missing]->u.b) {
                db_update(txn, CLS_VDI, ref, F_VDI_missing, value_true());
            }
        } else {
            LOG_INFO("SR %s: VDI %s is gone from the storage", a->uuid,
                     fstr(v, F_VDI_uuid));
            vdi_delete_rows(txn, ref);
        }
    }
    value_unref(vdis);
    for (size_t k = 0; k < n; k++) {
        struct storage_vdi_spec spec = {
            .sr = a->ref, .type = "user", .read_only = infos[k].read_only,
        };
        char ref[48];
        if (seen[k]) {
            continue;
        }
        if (!infos[k].uuid[0] || !uuid_is_valid(infos[k].uuid)
            || db_lookup_uuid(x->db, CLS_VDI, infos[k].uuid)) {
            uuid_generate(infos[k].uuid);
        }
        if (infos[k].format && !strcmp(infos[k].format, "iso")) {
            spec.name_label = infos[k].location;
        }
        db_new_ref(ref);
        if (db_insert_fields(txn, CLS_VDI, ref, vdi_fields_new(&spec, &infos[k]))) {
            LOG_WARN("SR %s: cannot introduce VDI %s", a->uuid, infos[k].uuid);
            continue;
        }
        LOG_INFO("SR %s: introduced VDI %s at %s", a->uuid, infos[k].uuid,
                 infos[k].location ? infos[k].location : "?");
    }
    sr_write_space(x, txn, a->ref, have_stat ? &s : NULL);
    sr_refresh_all(x, txn, a->ref);
    rc = api_commit(ctx, txn);
out:
    pthread_mutex_unlock(&a->lock);
    for (size_t k = 0; k < n; k++) {
        sm_vdi_info_clear(&infos[k]);
    }
    free(infos);
    free(seen);
    free(err);
    if (!rc) {
        gc_kick();
    }
    return rc;
}

/* Attaches an SR through one PBD and records it.  Returns 0 (also when
 * it is attached already), or -1 after api_fail(). */
static int
sr_plug(struct api_ctx *ctx, const char *pbd_ref)
{
    struct xapi *x = ctx->x;
    struct db_row *pbd, *sr;
    const struct sm_driver *drv = NULL;
    struct value *dc = NULL;
    char sr_ref[48] = "", sr_uuid[40] = "", type[64] = "", *err = NULL;
    struct sr_att *a = NULL, *have;
    struct db_txn *txn;
    int r;

    db_read_lock(x->db);
    pbd = db_lookup(x->db, CLS_PBD, pbd_ref);
    sr = pbd ? db_lookup(x->db, CLS_SR, fstr(pbd, F_PBD_SR)) : NULL;
    if (sr) {
        snprintf(sr_ref, sizeof sr_ref, "%s", sr->ref);
        snprintf(sr_uuid, sizeof sr_uuid, "%s", fstr(sr, F_SR_uuid));
        snprintf(type, sizeof type, "%s", fstr(sr, F_SR_type));
        dc = value_ref(pbd->fields[F_PBD_device_config]);
    }
    db_read_unlock(x->db);
    if (!pbd) {
        return api_fail_handle(ctx, CLS_PBD, pbd_ref);
    }
    if (!sr) {
        return api_fail_handle(ctx, CLS_SR, "OpaqueRef:NULL");
    }
    drv = sm_driver_find(type);
    if (!drv) {
        value_unref(dc);
        return api_fail(ctx, ERR_SR_UNKNOWN_DRIVER, type);
    }
    have = sr_get(sr_ref);
    sr_put(have);
    if (!have) {
        r = sr_attach(x, drv, sr_ref, sr_uuid, dc, &a, &err);
        if (r) {
            struct sm_fail f = { .sr = sr_ref };
            LOG_WARN("SR %s: attach failed: %s", sr_uuid, err ? err : "?");
            fail_sm(ctx, r, err, &f);
            free(err);
            value_unref(dc);
            return -1;
        }
        sr_register(a);
    }
    value_unref(dc);
    txn = db_begin(x->db);
    if (db_lookup(x->db, CLS_PBD, pbd_ref)) {
        db_update(txn, CLS_PBD, pbd_ref, F_PBD_currently_attached, value_true());
    }
    sr_refresh_all(x, txn, sr_ref);
    if (api_commit(ctx, txn)) {
        return -1;
    }
    a = sr_get(sr_ref);
    if (a) {
        struct api_ctx scratch = *ctx;
        scratch.error = NULL;
        /* A scan failure does not undo the plug: the SR is reachable,
         * its records are just not refreshed. */
        if (sr_scan(&scratch, a)) {
            char *t = value_to_text(scratch.error);
            LOG_WARN("SR %s: scan after plug: %s", sr_uuid, t);
            free(t);
        }
        value_unref(scratch.error);
        vdi_refresh_size(x, a, "", NULL);
    }
    sr_put(a);
    return 0;
}

/* Detaches an SR plugged through pbd_ref and records it. */
static void
sr_unplug(struct xapi *x, const char *sr_ref, const char *pbd_ref)
{
    struct sr_att *a = sr_unregister(sr_ref);
    struct db_txn *txn;

    sr_att_free(a);
    txn = db_begin(x->db);
    if (db_lookup(x->db, CLS_PBD, pbd_ref)) {
        db_update(txn, CLS_PBD, pbd_ref, F_PBD_currently_attached, value_false());
    }
    sr_refresh_all(x, txn, sr_ref);
    if (db_commit(txn)) {
        LOG_ERR("cannot record the unplug of PBD %s", pbd_ref);
    }
}

/* The first VDI of an SR that a block server of this host or an attached
 * VBD uses, or "". */
static void
sr_vdi_in_use(struct xapi *x, const char *sr_ref, char *ret_vdi)
{
    struct db_row *sr;
    struct value *vdis = NULL;

    *ret_vdi = '\0';
    pthread_mutex_lock(&st.blk_mu);
    for (struct blk *b = st.blks; b; b = b->next) {
        if (!strcmp(b->sr_ref, sr_ref)) {
            snprintf(ret_vdi, 48, "%s", b->vdi_ref);
            break;
        }
    }
    pthread_mutex_unlock(&st.blk_mu);
    if (*ret_vdi) {
        return;
    }
    db_read_lock(x->db);
    sr = db_lookup(x->db, CLS_SR, sr_ref);
    if (sr) {
        vdis = sr->fields[F_SR_VDIs];
        for (size_t i = 0; i < vdis->u.arr.n; i++) {
            struct db_row *v = db_lookup(x->db, CLS_VDI,
                                         vdis->u.arr.items[i]->u.str.s);
            if (v && vdi_attached_vbd(x->db, v, false)) {
                snprintf(ret_vdi, 48, "%s", v->ref);
                break;
            }
        }
    }
    db_read_unlock(x->db);
}

/* ---- start-up and shutdown ---- */

static struct value *
string_set_of(const char *const *list)
{
    struct value *arr = value_array(8);

    for (size_t i = 0; list && list[i]; i++) {
        value_array_append(arr, value_string(list[i]));
    }
    return arr;
}

/* One SM record per registered driver, refreshed on every start; records
 * of drivers no longer built in are removed. */
static int
sm_records_refresh(struct xapi *x)
{
    size_t n;
    const struct sm_driver *const *drvs = sm_drivers(&n);
    struct db_txn *txn = db_begin(x->db);
    char **stale = NULL;
    size_t n_stale = 0;

    for (size_t i = 0; i < db_table_count(x->db, CLS_SM); i++) {
        struct db_row *row = db_table_row(x->db, CLS_SM, i);
        if (!sm_driver_find(fstr(row, F_SM_type))) {
            stale = xrealloc(stale, (n_stale + 1) * sizeof *stale);
            stale[n_stale++] = xstrdup(row->ref);
        }
    }
    for (size_t i = 0; i < n_stale; i++) {
        db_delete(txn, CLS_SM, stale[i]);
        free(stale[i]);
    }
    free(stale);
    for (size_t i = 0; i < n; i++) {
        const struct sm_driver *d = drvs[i];
        struct value *conf = value_struct(4), *feat = value_struct(8);
        struct db_row *row = NULL;
        char ref[48];

        for (size_t k = 0; d->configuration && d->configuration[k].key; k++) {
            value_struct_set(conf, d->configuration[k].key,
                             value_string(d->configuration[k].value
                                          ? d->configuration[k].value : ""));
        }
        for (size_t k = 0; d->capabilities && d->capabilities[k]; k++) {
            value_struct_set(feat, d->capabilities[k], value_int(1));
        }
        for (size_t k = 0; k < db_table_count(x->db, CLS_SM); k++) {
            struct db_row *r = db_table_row(x->db, CLS_SM, k);
            if (!strcmp(fstr(r, F_SM_type), d->type)) {
                row = r;
                break;
            }
        }
        if (row) {
            snprintf(ref, sizeof ref, "%s", row->ref);
        } else {
            char uuid[40];
            struct value **f;
            uuid_generate(uuid);
            db_new_ref(ref);
            f = db_fields_new(CLS_SM, uuid);
            f[F_SM_type] = value_string(d->type);
            if (db_insert_fields(txn, CLS_SM, ref, f)) {
                value_unref(conf);
                value_unref(feat);
                continue;
            }
        }
        db_update(txn, CLS_SM, ref, F_SM_name_label,
                  value_string(d->name_label ? d->name_label : d->type));
        db_update(txn, CLS_SM, ref, F_SM_name_description,
                  value_string(d->name_description ? d->name_description : ""));
        db_update(txn, CLS_SM, ref, F_SM_vendor,
                  value_string(d->vendor ? d->vendor : ""));
        db_update(txn, CLS_SM, ref, F_SM_copyright,
                  value_string(d->copyright ? d->copyright : ""));
        db_update(txn, CLS_SM, ref, F_SM_version,
                  value_string(d->version ? d->version : "1.0"));
        db_update(txn, CLS_SM, ref, F_SM_required_api_version,
                  value_string(d->required_api_version
                               ? d->required_api_version : "1.0"));
        db_update(txn, CLS_SM, ref, F_SM_configuration, conf);
        db_update(txn, CLS_SM, ref, F_SM_capabilities,
                  string_set_of(d->capabilities));
        db_update(txn, CLS_SM, ref, F_SM_features, feat);
        db_update(txn, CLS_SM, ref, F_SM_driver_filename,
                  value_stringf("builtin:%s", d->type));
    }
    return db_commit(txn);
}

/* The uuid an SR probe reports first (<UUID>...</UUID>), or "". */
static void
probe_first_uuid(const char *xml, char *ret_uuid)
{
    const char *p = xml ? strstr(xml, "<UUID>") : NULL;

    *ret_uuid = '\0';
    if (p) {
        p += 6;
        while (*p == ' ' || *p == '\n' || *p == '\t') {
            p++;
        }
        if (strlen(p) >= 36) {
            snprintf(ret_uuid, 37, "%.36s", p);
            if (!uuid_is_valid(ret_uuid)) {
                *ret_uuid = '\0';
            }
        }
    }
}

/* Writes the rows of a new SR and its PBD for this host (and, for the
 * default SR, the pool's pointers to it). */
static int
sr_rows_insert(struct xapi *x, struct db_txn *txn, const char *sr_ref,
               const char *uuid, const char *name_label,
               const char *name_description, const char *type,
               const char *content_type, bool shared,
               const struct value *sm_config, const struct value *other_config,
               const char *pbd_ref, const struct value *device_config,
               int64_t physical_size)
{
    struct value **f = db_fields_new(CLS_SR, uuid);
    char pbd_uuid[40];
    int rc;

    f[F_SR_name_label] = value_string(name_label);
    f[F_SR_name_description] = value_string(name_description);
    f[F_SR_type] = value_string(type);
    f[F_SR_content_type] = value_string(content_type);
    f[F_SR_shared] = value_bool(shared);
    f[F_SR_physical_size] = value_int(physical_size);
    f[F_SR_sm_config] = sm_config && sm_config->type == VALUE_STRUCT
                        ? value_ref((struct value *) sm_config)
                        : value_empty_struct();
    f[F_SR_other_config] = other_config && other_config->type == VALUE_STRUCT
                           ? value_ref((struct value *) other_config)
                           : value_empty_struct();
    rc = db_insert_fields(txn, CLS_SR, sr_ref, f);
    if (rc || !pbd_ref) {
        return rc;
    }
    uuid_generate(pbd_uuid);
    f = db_fields_new(CLS_PBD, pbd_uuid);
    f[F_PBD_host] = value_string(x->host_ref);
    f[F_PBD_SR] = value_string(sr_ref);
    f[F_PBD_device_config] = value_ref((struct value *) device_config);
    f[F_PBD_currently_attached] = value_false();
    return db_insert_fields(txn, CLS_PBD, pbd_ref, f);
}

/* The default local SR, made on the first start. */
static void
default_sr_ensure(struct xapi *x)
{
    const struct sm_driver *drv = sm_driver_find("file");
    char *dir = xasprintf("%s/sr/local", x->state_dir);
    char *marker = xasprintf("%s/sr/.local-created", x->state_dir);
    char uuid[40], sr_ref[48], pbd_ref[48], *err = NULL, *xml = NULL;
    struct value *dc = value_struct(1), *oc = value_struct(1);
    struct kvbuf kv;
    struct db_txn *txn;
    struct stat sb;
    int r;

    if (!drv || !stat(marker, &sb)) {
        goto out;
    }
    mkdir_p(dir);
    value_struct_put(dc, "location", value_string(dir));
    value_struct_put(oc, "i18n-key", value_string("local-storage"));
    kvbuf_init(&kv, dc);
    uuid_generate(uuid);
    r = drv->create ? drv->create(x->state_dir, uuid, &kv.map, 0, &err)
                    : -EOPNOTSUPP;
    if (r == -EEXIST && drv->probe) {
        /* The directory holds an SR already (a database started afresh
         * over an old state directory): take it over. */
        struct sm_map none = { NULL, 0 };
        free(err);
        err = NULL;
        r = drv->probe(&kv.map, &none, &xml, &err);
        probe_first_uuid(xml, uuid);
        if (!r && !*uuid) {
            r = -ENOENT;
        }
    }
    kvbuf_clear(&kv);
    if (r) {
        LOG_ERR("cannot create the local SR in %s: %s", dir,
                err ? err : strerror(-r));
        goto out;
    }
    db_new_ref(sr_ref);
    db_new_ref(pbd_ref);
    txn = db_begin(x->db);
    if (db_lookup_uuid(x->db, CLS_SR, uuid)
        || sr_rows_insert(x, txn, sr_ref, uuid, "Local storage", "",
                          "file", "user", false, NULL, oc, pbd_ref, dc, 0)) {
        db_abort(txn);
        LOG_WARN("the local SR %s is in the database already", uuid);
    } else {
        const char *pool = x->pool_ref;
        if (db_lookup(x->db, CLS_pool, pool)) {
            db_update(txn, CLS_pool, pool, F_pool_default_SR, value_string(sr_ref));
            db_update(txn, CLS_pool, pool, F_pool_suspend_image_SR,
                      value_string(sr_ref));
            db_update(txn, CLS_pool, pool, F_pool_crash_dump_SR,
                      value_string(sr_ref));
        }
        if (db_commit(txn)) {
            LOG_ERR("cannot record the local SR");
            goto out;
        }
        LOG_INFO("created the local SR %s in %s", uuid, dir);
    }
    if (write_file_atomic(marker, "", 0, 0600)) {
        LOG_WARN("cannot write %s", marker);
    }
out:
    value_unref(dc);
    value_unref(oc);
    free(xml);
    free(err);
    free(dir);
    free(marker);
}

int
storage_init(struct xapi *x, char **ret_err)
{
    char **pbds = NULL;
    size_t n = 0;

    st.x = x;
    if (sm_records_refresh(x)) {
        *ret_err = xstrdup("cannot record the storage drivers");
        return -1;
    }
    default_sr_ensure(x);
    db_read_lock(x->db);
    for (size_t i = 0; i < db_table_count(x->db, CLS_PBD); i++) {
        struct db_row *p = db_table_row(x->db, CLS_PBD, i);
        if (!strcmp(fstr(p, F_PBD_host), x->host_ref)) {
            pbds = xrealloc(pbds, (n + 1) * sizeof *pbds);
            pbds[n++] = xstrdup(p->ref);
        }
    }
    db_read_unlock(x->db);
    for (size_t i = 0; i < n; i++) {
        struct api_ctx ctx = { .x = x, .method = "storage_init" };
        struct db_txn *txn;
        /* Recorded as detached until the driver says otherwise. */
        txn = db_begin(x->db);
        db_update(txn, CLS_PBD, pbds[i], F_PBD_currently_attached, value_false());
        db_commit(txn);
        if (sr_plug(&ctx, pbds[i])) {
            char *t = value_to_text(ctx.error);
            LOG_ERR("PBD %s: plug at start failed: %s", pbds[i], t);
            free(t);
            value_unref(ctx.error);
        }
        free(pbds[i]);
    }
    free(pbds);
    blk_adopt_leftovers(x);
    st.gc_stop = false;
    if (pthread_create(&st.gc_thread, NULL, gc_main, x)) {
        *ret_err = xstrdup("cannot start the storage GC thread");
        return -1;
    }
    st.gc_started = true;
    return 0;
}

void
storage_shutdown(struct xapi *x)
{
    bool stop_all = !x->xenops || !x->xenops->provider->domain_lookup;
    struct blk *keep = NULL, *b;

    if (st.gc_started) {
        pthread_mutex_lock(&st.mu);
        st.gc_stop = true;
        pthread_cond_broadcast(&st.gc_cond);
        pthread_mutex_unlock(&st.mu);
        pthread_join(st.gc_thread, NULL);
        st.gc_started = false;
    }
    pthread_mutex_lock(&st.blk_mu);
    b = st.blks;
    st.blks = NULL;
    pthread_mutex_unlock(&st.blk_mu);
    while (b) {
        struct blk *next = b->next;
        bool running = false;
        if (!stop_all && x->db) {
            struct db_row *vbd, *vm;
            db_read_lock(x->db);
            vbd = db_lookup(x->db, CLS_VBD, b->vbd_ref);
            vm = vbd ? db_lookup(x->db, CLS_VM, fstr(vbd, F_VBD_VM)) : NULL;
            running = vm && (!strcmp(fstr(vm, F_VM_power_state), "Running")
                             || !strcmp(fstr(vm, F_VM_power_state), "Paused"));
            db_read_unlock(x->db);
        }
        if (running) {
            /* Its guest keeps the disk across the restart, as on
             * XenServer; the next start adopts the server. */
            b->next = keep;
            keep = b;
        } else {
            blk_end(x, b);
        }
        b = next;
    }
    /* The kept servers are let go without stopping them: their control
     * channels close (which they take as the daemon being gone) and the
     * handles are freed, so nothing of them is left to leak. */
    while (keep) {
        struct blk *next = keep->next;
        tapdisk_release(keep->td);
        blk_free(keep);
        keep = next;
    }
    for (;;) {
        struct sr_att *a;
        pthread_mutex_lock(&st.mu);
        a = st.srs;
        pthread_mutex_unlock(&st.mu);
        if (!a) {
            break;
        }
        sr_att_free(sr_unregister(a->ref));
    }
}

/* ---- SR messages ---- */

static const char *
arg_s(struct value **args, size_t i)
{
    return value_is_string(args[i]) ? args[i]->u.str.s : "";
}

/* Checks that ref names a row of cls; fails HANDLE_INVALID otherwise. */
static int
need_row(struct api_ctx *ctx, int cls, const char *ref)
{
    bool found;

    db_read_lock(ctx->x->db);
    found = db_lookup(ctx->x->db, cls, ref) != NULL;
    db_read_unlock(ctx->x->db);
    return found ? 0 : api_fail_handle(ctx, cls, ref);
}

/* SR.create and SR.make: formats the SR with its driver, records it with
 * a PBD for the host and plugs it.  Anything that fails after the
 * driver's create undoes it, so no half-made SR is left behind. */
static int
sr_create(struct api_ctx *ctx, struct value **args, bool shared,
          const struct value *sm_config, char *ret_ref)
{
    struct xapi *x = ctx->x;
    const char *host = arg_s(args, 1), *type = arg_s(args, 6);
    const char *content_type = arg_s(args, 7);
    const struct value *dc = args[2];
    int64_t size = args[3]->type == VALUE_INT ? args[3]->u.i : 0;
    const struct sm_driver *drv;
    char uuid[40], sr_ref[48], pbd_ref[48], *err = NULL;
    struct kvbuf kv;
    struct db_txn *txn;
    int r;

    if (need_row(ctx, CLS_host, host)) {
        return -1;
    }
    drv = sm_driver_find(type);
    if (!drv) {
        return api_fail(ctx, ERR_SR_UNKNOWN_DRIVER, type);
    }
    if (strcmp(host, x->host_ref)) {
        return api_fail(ctx, ERR_OPERATION_NOT_ALLOWED,
                        "SRs can only be created on the host the call is "
                        "made to");
    }
    if (!drv->create) {
        return api_fail(ctx, ERR_SR_OPERATION_NOT_SUPPORTED, "OpaqueRef:NULL");
    }
    if (size < 0) {
        char v[24];
        i64_str(v, sizeof v, size);
        return api_fail(ctx, ERR_INVALID_VALUE, "physical_size", v);
    }
    uuid_generate(uuid);
    kvbuf_init(&kv, dc);
    r = drv->create(x->state_dir, uuid, &kv.map, (uint64_t) size, &err);
    kvbuf_clear(&kv);
    if (r) {
        struct sm_fail f = { .sr = "OpaqueRef:NULL" };
        fail_sm(ctx, r, err, &f);
        free(err);
        return -1;
    }
    db_new_ref(sr_ref);
    db_new_ref(pbd_ref);
    txn = db_begin(x->db);
    r = sr_rows_insert(x, txn, sr_ref, uuid, arg_s(args, 4), arg_s(args, 5),
                       type, *content_type ? content_type
                       : drv->content_type ? drv->content_type : "",
                       shared, sm_config, NULL, pbd_ref, dc, size);
    if (r) {
        db_abort(txn);
        api_fail(ctx, ERR_SR_UUID_EXISTS, uuid);
        goto undo;
    }
    sr_refresh_allowed(x, txn, sr_ref);
    if (api_commit(ctx, txn)) {
        goto undo;
    }
    if (sr_plug(ctx, pbd_ref)) {
        txn = db_begin(x->db);
        db_delete(txn, CLS_PBD, pbd_ref);
        db_delete(txn, CLS_SR, sr_ref);
        db_commit(txn);
        goto undo;
    }
    memcpy(ret_ref, sr_ref, 48);
    return 0;
undo:
    kvbuf_init(&kv, dc);
    if (drv->destroy(x->state_dir, uuid, &kv.map, &err)) {
        LOG_WARN("SR %s: cannot undo its creation: %s", uuid, err ? err : "?");
    }
    kvbuf_clear(&kv);
    free(err);
    return -1;
}

static int
api_sr_create(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    char ref[48];

    if (sr_create(ctx, args, args[8]->type == VALUE_BOOL && args[8]->u.b,
                  args[9], ref)) {
        return -1;
    }
    *ret = value_string(ref);
    return 0;
}

static int
api_sr_make(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct db_row *sr;
    char ref[48];

    /* The deprecated form of SR.create: the same, answering the uuid. */
    if (sr_create(ctx, args, false, args[8], ref)) {
        return -1;
    }
    db_read_lock(ctx->x->db);
    sr = db_lookup(ctx->x->db, CLS_SR, ref);
    *ret = value_string(sr ? fstr(sr, F_SR_uuid) : "");
    db_read_unlock(ctx->x->db);
    return 0;
}

static int
api_sr_introduce(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct xapi *x = ctx->x;
    const char *uuid = arg_s(args, 1), *type = arg_s(args, 4);
    const struct sm_driver *drv = sm_driver_find(type);
    char ref[48], fresh[40];
    struct db_txn *txn;

    if (!drv) {
        return api_fail(ctx, ERR_SR_UNKNOWN_DRIVER, type);
    }
    if (!*uuid) {
        uuid_generate(fresh);
        uuid = fresh;
    } else if (!uuid_is_valid(uuid)) {
        return api_fail(ctx, ERR_UUID_INVALID, "SR", uuid);
    }
    db_new_ref(ref);
    txn = db_begin(x->db);
    if (db_lookup_uuid(x->db, CLS_SR, uuid)) {
        db_abort(txn);
        return api_fail(ctx, ERR_SR_UUID_EXISTS, uuid);
    }
    if (sr_rows_insert(x, txn, ref, uuid, arg_s(args, 2), arg_s(args, 3), type,
                       arg_s(args, 5), args[6]->type == VALUE_BOOL && args[6]->u.b,
                       args[7], NULL, NULL, NULL, 0)) {
        db_abort(txn);
        return api_fail(ctx, ERR_SR_UUID_EXISTS, uuid);
    }
    sr_refresh_allowed(x, txn, ref);
    if (api_commit(ctx, txn)) {
        return -1;
    }
    *ret = value_string(ref);
    return 0;
}

/* Deletes an SR's rows: its VDIs (with their VBDs), PBDs and the SR, and
 * clears the pool's pointers to it. */
static void
sr_delete_rows(struct xapi *x, struct db_txn *txn, const char *ref)
{
    static const int pool_fields[] = {
        F_pool_default_SR, F_pool_suspend_image_SR, F_pool_crash_dump_SR,
    };
    struct db_row *sr = db_lookup(x->db, CLS_SR, ref);
    struct value *vdis, *pbds;

    if (!sr) {
        return;
    }
    vdis = value_ref(sr->fields[F_SR_VDIs]);
    pbds = value_ref(sr->fields[F_SR_PBDs]);
    for (size_t i = 0; i < vdis->u.arr.n; i++) {
        vdi_delete_rows(txn, vdis->u.arr.items[i]->u.str.s);
    }
    for (size_t i = 0; i < pbds->u.arr.n; i++) {
        db_delete(txn, CLS_PBD, pbds->u.arr.items[i]->u.str.s);
    }
    value_unref(vdis);
    value_unref(pbds);
    for (size_t i = 0; i < db_table_count(x->db, CLS_pool); i++) {
        struct db_row *p = db_table_row(x->db, CLS_pool, i);
        char pref[48];
        snprintf(pref, sizeof pref, "%s", p->ref);
        for (size_t k = 0; k < ARRAY_SIZE(pool_fields); k++) {
            p = db_lookup(x->db, CLS_pool, pref);
            if (p && !strcmp(fstr(p, pool_fields[k]), ref)) {
                db_update(txn, CLS_pool, pref, pool_fields[k], value_null_ref());
            }
        }
    }
    db_delete(txn, CLS_SR, ref);
}

static int
api_sr_forget(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const char *ref = arg_s(args, 1);
    struct db_txn *txn;
    char op_id[48];

    if (sr_op_begin(ctx, ref, "forget", op_id)) {
        return -1;
    }
    txn = db_begin(ctx->x->db);
    sr_delete_rows(ctx->x, txn, ref);
    if (api_commit(ctx, txn)) {
        sr_op_end(ctx->x, ref, op_id);
        return -1;
    }
    return 0;
}

/* SR.destroy, as XenServer: every PBD unplugged (SR_HAS_PBD otherwise);
 * the SR is attached for the time of the call through this host's PBD,
 * every VDI is deleted, then the SR's storage and its records. */
static int
api_sr_destroy(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct xapi *x = ctx->x;
    const char *ref = arg_s(args, 1);
    const struct sm_driver *drv = NULL;
    struct value *dc = NULL;
    struct sr_att *a = NULL;
    struct sm_vdi_info *infos = NULL;
    size_t n = 0;
    char op_id[48], uuid[40] = "", *err = NULL;
    struct db_txn *txn;
    struct kvbuf kv;
    int rc = -1, r;

    if (sr_op_begin(ctx, ref, "destroy", op_id)) {
        return -1;
    }
    db_read_lock(x->db);
    {
        struct db_row *sr = db_lookup(x->db, CLS_SR, ref);
        struct db_row *pbd = sr ? my_pbd(x, sr) : NULL;
        if (sr && pbd) {
            drv = sm_driver_find(fstr(sr, F_SR_type));
            snprintf(uuid, sizeof uuid, "%s", fstr(sr, F_SR_uuid));
            dc = value_ref(pbd->fields[F_PBD_device_config]);
        }
    }
    db_read_unlock(x->db);
    if (!drv || !dc) {
        api_fail(ctx, ERR_SR_HAS_NO_PBDS, ref);
        goto out;
    }
    r = sr_attach(x, drv, ref, uuid, dc, &a, &err);
    if (!r && drv->scan) {
        r = drv->scan(a->sm, &infos, &n, &err);
    }
    for (size_t i = 0; !r && i < n; i++) {
        if (drv->vdi_destroy && infos[i].location) {
            r = drv->vdi_destroy(a->sm, infos[i].location, &err);
        }
    }
    sr_att_free(a);
    if (!r) {
        kvbuf_init(&kv, dc);
        r = drv->destroy(x->state_dir, uuid, &kv.map, &err);
        kvbuf_clear(&kv);
    }
    if (r) {
        struct sm_fail f = { .sr = ref };
        fail_sm(ctx, r, err, &f);
        goto out;
    }
    txn = db_begin(x->db);
    sr_delete_rows(x, txn, ref);
    rc = api_commit(ctx, txn);
out:
    for (size_t i = 0; i < n; i++) {
        sm_vdi_info_clear(&infos[i]);
    }
    free(infos);
    value_unref(dc);
    free(err);
    if (rc) {
        sr_op_end(x, ref, op_id);
    }
    return rc;
}

static int
api_sr_scan(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const char *ref = arg_s(args, 1);
    struct sr_att *a;
    char op_id[48];
    int rc;

    if (sr_op_begin(ctx, ref, "scan", op_id)) {
        return -1;
    }
    a = sr_get_or_fail(ctx, ref);
    rc = a ? sr_scan(ctx, a) : -1;
    sr_put(a);
    sr_op_end(ctx->x, ref, op_id);
    return rc;
}

static int
api_sr_update(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const char *ref = arg_s(args, 1);
    struct sr_att *a;
    char op_id[48];

    if (sr_op_begin(ctx, ref, "update", op_id)) {
        return -1;
    }
    a = sr_get_or_fail(ctx, ref);
    if (a) {
        sr_refresh_sizes(ctx->x, a);
    }
    sr_put(a);
    sr_op_end(ctx->x, ref, op_id);
    return a ? 0 : -1;
}

static int
sr_probe(struct api_ctx *ctx, struct value **args, char **ret_xml)
{
    const char *type = arg_s(args, 3);
    const struct sm_driver *drv;
    struct kvbuf dc, smc;
    char *err = NULL;
    int r;

    if (need_row(ctx, CLS_host, arg_s(args, 1))) {
        return -1;
    }
    drv = sm_driver_find(type);
    if (!drv) {
        return api_fail(ctx, ERR_SR_UNKNOWN_DRIVER, type);
    }
    if (!drv->probe) {
        return api_fail(ctx, ERR_SR_OPERATION_NOT_SUPPORTED, "OpaqueRef:NULL");
    }
    kvbuf_init(&dc, args[2]);
    kvbuf_init(&smc, args[4]);
    r = drv->probe(&dc.map, &smc.map, ret_xml, &err);
    kvbuf_clear(&dc);
    kvbuf_clear(&smc);
    if (r) {
        struct sm_fail f = { .sr = "OpaqueRef:NULL" };
        fail_sm(ctx, r, err, &f);
        free(err);
        return -1;
    }
    free(err);
    return 0;
}

static int
api_sr_probe(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    char *xml = NULL;

    if (sr_probe(ctx, args, &xml)) {
        return -1;
    }
    *ret = value_string_take(xml ? xml : xstrdup(""));
    return 0;
}

/* SR.probe_ext over a driver that answers SR.probe's XML: one complete
 * result per SR found (<UUID> elements), or one result without an SR
 * when there is none, as XenServer does for SMAPIv1 drivers. */
static int
api_sr_probe_ext(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct value *out = value_array(2);
    char *xml = NULL;
    const char *p;

    if (sr_probe(ctx, args, &xml)) {
        value_unref(out);
        return -1;
    }
    for (p = xml ? strstr(xml, "<UUID>") : NULL; p; p = strstr(p + 1, "<UUID>")) {
        char uuid[40];
        struct value *r = value_struct(4), *srs = value_struct(8);
        probe_first_uuid(p, uuid);
        if (!*uuid) {
            value_unref(r);
            value_unref(srs);
            continue;
        }
        value_struct_put(srs, "uuid", value_string(uuid));
        value_struct_put(srs, "name_label", value_empty_string());
        value_struct_put(srs, "name_description", value_empty_string());
        value_struct_put(srs, "free_space", value_int(0));
        value_struct_put(srs, "total_space", value_int(0));
        value_struct_put(srs, "clustered", value_false());
        value_struct_put(srs, "health", value_string("healthy"));
        value_struct_put(r, "configuration", value_ref(args[2]));
        value_struct_put(r, "complete", value_true());
        value_struct_put(r, "sr", srs);
        value_struct_put(r, "extra_info", value_empty_struct());
        value_array_append(out, r);
    }
    if (!out->u.arr.n) {
        struct value *r = value_struct(3);
        value_struct_put(r, "configuration", value_ref(args[2]));
        value_struct_put(r, "complete", value_true());
        value_struct_put(r, "extra_info", value_empty_struct());
        value_array_append(out, r);
    }
    free(xml);
    *ret = out;
    return 0;
}

static int
api_sr_get_supported_types(struct api_ctx *ctx, struct value **args,
                           struct value **ret)
{
    size_t n;
    const struct sm_driver *const *d = sm_drivers(&n);
    struct value *arr = value_array(n);

    (void) ctx;
    for (size_t i = 0; i < n; i++) {
        value_array_append(arr, value_string(d[i]->type));
    }
    *ret = arr;
    return 0;
}

/* Replaces one field of one row. */
static int
set_field(struct api_ctx *ctx, int cls, const char *ref, int field,
          struct value *v)
{
    struct db_txn *txn = db_begin(ctx->x->db);

    if (!db_lookup(ctx->x->db, cls, ref)) {
        db_abort(txn);
        value_unref(v);
        return api_fail_handle(ctx, cls, ref);
    }
    db_update(txn, cls, ref, field, v);
    return api_commit(ctx, txn);
}

static int
api_sr_set_name_label(struct api_ctx *ctx, struct value **args,
                      struct value **ret)
{
    return set_field(ctx, CLS_SR, arg_s(args, 1), F_SR_name_label,
                     value_ref(args[2]));
}

static int
api_sr_set_name_description(struct api_ctx *ctx, struct value **args,
                            struct value **ret)
{
    return set_field(ctx, CLS_SR, arg_s(args, 1), F_SR_name_description,
                     value_ref(args[2]));
}

static int
api_sr_set_physical_size(struct api_ctx *ctx, struct value **args,
                         struct value **ret)
{
    return set_field(ctx, CLS_SR, arg_s(args, 1), F_SR_physical_size,
                     value_ref(args[2]));
}

static int
api_sr_set_shared(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const char *ref = arg_s(args, 1);
    bool v = args[2]->type == VALUE_BOOL && args[2]->u.b;
    struct db_row *sr;
    char pbd[48] = "";

    db_read_lock(ctx->x->db);
    sr = db_lookup(ctx->x->db, CLS_SR, ref);
    if (sr && !v && sr->fields[F_SR_PBDs]->u.arr.n > 1) {
        snprintf(pbd, sizeof pbd, "%s",
                 sr->fields[F_SR_PBDs]->u.arr.items[0]->u.str.s);
    }
    db_read_unlock(ctx->x->db);
    if (*pbd) {
        return api_fail(ctx, ERR_SR_HAS_MULTIPLE_PBDS, pbd);
    }
    return set_field(ctx, CLS_SR, ref, F_SR_shared, value_bool(v));
}

/* An HA statefile needs storage every host reaches: a shared SR. */
static int
api_sr_assert_can_host_ha_statefile(struct api_ctx *ctx, struct value **args,
                                    struct value **ret)
{
    const char *ref = arg_s(args, 1);
    struct db_row *sr;
    bool ok = false;

    db_read_lock(ctx->x->db);
    sr = db_lookup(ctx->x->db, CLS_SR, ref);
    if (sr) {
        ok = sr->fields[F_SR_shared]->u.b && sr_attached_here(ctx->x, sr);
    }
    db_read_unlock(ctx->x->db);
    if (!sr) {
        return api_fail_handle(ctx, CLS_SR, ref);
    }
    return ok ? 0 : api_fail(ctx, ERR_HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED, ref);
}

/* ---- PBD messages ---- */

static int
api_pbd_create(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const struct value *rec = args[1];
    const char *sr_ref = value_struct_get_string(rec, "SR");
    const char *host = value_struct_get_string(rec, "host");
    char dup[48] = "";
    struct db_row *sr;

    if (!sr_ref || !host) {
        return api_fail(ctx, ERR_FIELD_TYPE_ERROR, !sr_ref ? "SR" : "host");
    }
    db_read_lock(ctx->x->db);
    sr = db_lookup(ctx->x->db, CLS_SR, sr_ref);
    for (size_t i = 0; sr && i < sr->fields[F_SR_PBDs]->u.arr.n; i++) {
        struct db_row *p = db_lookup(ctx->x->db, CLS_PBD,
                                     sr->fields[F_SR_PBDs]->u.arr.items[i]->u.str.s);
        if (p && !strcmp(fstr(p, F_PBD_host), host)) {
            snprintf(dup, sizeof dup, "%s", p->ref);
        }
    }
    db_read_unlock(ctx->x->db);
    if (!sr) {
        return api_fail_handle(ctx, CLS_SR, sr_ref);
    }
    if (need_row(ctx, CLS_host, host)) {
        return -1;
    }
    if (*dup) {
        return api_fail(ctx, ERR_PBD_EXISTS, sr_ref, host, dup);
    }
    return api_generic(ctx, args, ret);
}

static int
api_pbd_destroy(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct db_row *p;
    bool attached = false;

    db_read_lock(ctx->x->db);
    p = db_lookup(ctx->x->db, CLS_PBD, arg_s(args, 1));
    attached = p && p->fields[F_PBD_currently_attached]->u.b;
    db_read_unlock(ctx->x->db);
    if (!p) {
        return api_fail_handle(ctx, CLS_PBD, arg_s(args, 1));
    }
    if (attached) {
        return api_fail(ctx, ERR_OPERATION_NOT_ALLOWED,
                        "PBD is currently attached");
    }
    return api_generic(ctx, args, ret);
}

/* The SR and host of a PBD; fails HANDLE_INVALID, or OPERATION_NOT_ALLOWED
 * for a PBD of another host (this daemon drives only its own). */
static int
pbd_facts(struct api_ctx *ctx, const char *ref, char *ret_sr,
          bool *ret_attached)
{
    struct db_row *p;
    bool mine = false;

    db_read_lock(ctx->x->db);
    p = db_lookup(ctx->x->db, CLS_PBD, ref);
    if (p) {
        snprintf(ret_sr, 48, "%s", fstr(p, F_PBD_SR));
        mine = !strcmp(fstr(p, F_PBD_host), ctx->x->host_ref);
        *ret_attached = p->fields[F_PBD_currently_attached]->u.b;
    }
    db_read_unlock(ctx->x->db);
    if (!p) {
        return api_fail_handle(ctx, CLS_PBD, ref);
    }
    if (!mine) {
        return api_fail(ctx, ERR_OPERATION_NOT_ALLOWED,
                        "the PBD belongs to another host");
    }
    return need_row(ctx, CLS_SR, ret_sr);
}

static int
api_pbd_plug(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const char *ref = arg_s(args, 1);
    char sr[48], op_id[48];
    bool attached;
    int rc;

    if (pbd_facts(ctx, ref, sr, &attached)) {
        return -1;
    }
    if (attached) {
        return 0;
    }
    if (sr_op_begin(ctx, sr, "plug", op_id)) {
        return -1;
    }
    rc = sr_plug(ctx, ref);
    sr_op_end(ctx->x, sr, op_id);
    return rc;
}

static int
api_pbd_unplug(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const char *ref = arg_s(args, 1);
    char sr[48], op_id[48], vdi[48];
    bool attached;

    if (pbd_facts(ctx, ref, sr, &attached)) {
        return -1;
    }
    if (!attached) {
        return 0;
    }
    sr_vdi_in_use(ctx->x, sr, vdi);
    if (*vdi) {
        return api_fail(ctx, ERR_VDI_IN_USE, vdi, "unplug");
    }
    if (sr_op_begin(ctx, sr, "unplug", op_id)) {
        return -1;
    }
    sr_unplug(ctx->x, sr, ref);
    sr_op_end(ctx->x, sr, op_id);
    return 0;
}

static int
api_pbd_set_device_config(struct api_ctx *ctx, struct value **args,
                          struct value **ret)
{
    return set_field(ctx, CLS_PBD, arg_s(args, 1), F_PBD_device_config,
                     value_ref(args[2]));
}

/* ---- VDI messages ---- */

/* A field of a create record, coerced to its type; the field's default
 * when absent (or FIELD_TYPE_ERROR when it has none, as generic create
 * answers). */
static int
rec_field(struct api_ctx *ctx, const struct value *rec, int cls, int field,
          struct value **ret)
{
    const struct api_field *fd = &api_classes[cls].fields[field];
    struct value *v = rec && rec->type == VALUE_STRUCT
                      ? value_struct_get(rec, fd->name) : NULL;

    if (!v) {
        if (!fd->default_text) {
            return api_fail(ctx, ERR_FIELD_TYPE_ERROR, fd->name);
        }
        *ret = value_ref(db_field_default(cls, field));
        return 0;
    }
    if (api_coerce(fd->type, v, ret)) {
        return api_fail(ctx, ERR_FIELD_TYPE_ERROR, fd->name);
    }
    return 0;
}

static int
api_vdi_create(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    static const int wanted[] = {
        F_VDI_SR, F_VDI_virtual_size, F_VDI_type, F_VDI_sharable,
        F_VDI_read_only, F_VDI_name_label, F_VDI_name_description,
        F_VDI_other_config, F_VDI_sm_config, F_VDI_xenstore_data, F_VDI_tags,
    };
    struct value *v[ARRAY_SIZE(wanted)] = { NULL };
    struct storage_vdi_spec spec;
    char ref[48];
    int rc = -1;

    for (size_t i = 0; i < ARRAY_SIZE(wanted); i++) {
        if (rec_field(ctx, args[1], CLS_VDI, wanted[i], &v[i])) {
            goto out;
        }
    }
    if (need_row(ctx, CLS_SR, v[0]->u.str.s)) {
        goto out;
    }
    memset(&spec, 0, sizeof spec);
    spec.sr = v[0]->u.str.s;
    spec.virtual_size = v[1]->u.i;
    spec.type = v[2]->u.str.s;
    spec.sharable = v[3]->u.b;
    spec.read_only = v[4]->u.b;
    spec.name_label = v[5]->u.str.s;
    spec.name_description = v[6]->u.str.s;
    spec.other_config = v[7];
    spec.sm_config = v[8];
    if (storage_vdi_create(ctx, &spec, ref)) {
        goto out;
    }
    if ((v[9]->type == VALUE_STRUCT && v[9]->u.st.n)
        || (v[10]->type == VALUE_ARRAY && v[10]->u.arr.n)) {
        struct db_txn *txn = db_begin(ctx->x->db);
        db_update(txn, CLS_VDI, ref, F_VDI_xenstore_data, value_ref(v[9]));
        db_update(txn, CLS_VDI, ref, F_VDI_tags, value_ref(v[10]));
        if (api_commit(ctx, txn)) {
            goto out;
        }
    }
    *ret = value_string(ref);
    rc = 0;
out:
    for (size_t i = 0; i < ARRAY_SIZE(wanted); i++) {
        value_unref(v[i]);
    }
    return rc;
}

static int
api_vdi_destroy(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return storage_vdi_destroy(ctx, arg_s(args, 1));
}

static int
api_vdi_snapshot(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    char ref[48];

    if (storage_vdi_snapshot(ctx, arg_s(args, 1), ref)) {
        return -1;
    }
    *ret = value_string(ref);
    return 0;
}

static int
api_vdi_clone(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    char ref[48];

    if (storage_vdi_clone(ctx, arg_s(args, 1), ref)) {
        return -1;
    }
    *ret = value_string(ref);
    return 0;
}

static int
api_vdi_copy(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct copy_range whole = { 0.0, 1.0 };
    char ref[48];

    if (vdi_copy(ctx, arg_s(args, 1), arg_s(args, 2), arg_s(args, 3),
                 arg_s(args, 4), &whole, ref)) {
        return -1;
    }
    *ret = value_string(ref);
    return 0;
}

static int
api_vdi_resize(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    return vdi_resize(ctx, arg_s(args, 1), args[2]->u.i, false);
}

static int
api_vdi_resize_online(struct api_ctx *ctx, struct value **args,
                      struct value **ret)
{
    return vdi_resize(ctx, arg_s(args, 1), args[2]->u.i, true);
}

/* VDI.introduce: the driver confirms the location and reports the
 * image; the caller's fields make up the rest of the record. */
static int
api_vdi_introduce(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct xapi *x = ctx->x;
    const char *uuid = arg_s(args, 1), *sr_ref = arg_s(args, 4);
    const char *location = arg_s(args, 9);
    struct sm_vdi_info info;
    struct sm_sr_stat s;
    struct sr_att *a = NULL;
    struct db_txn *txn;
    struct db_row *sr;
    char fresh[40], ref[48], dup[48] = "", op_id[48], *err = NULL;
    bool have_stat, op = false;
    int rc = -1, r;

    memset(&info, 0, sizeof info);
    if (!*uuid) {
        uuid_generate(fresh);
        uuid = fresh;
    } else if (!uuid_is_valid(uuid)) {
        return api_fail(ctx, ERR_UUID_INVALID, "VDI", uuid);
    }
    db_read_lock(x->db);
    sr = db_lookup(x->db, CLS_SR, sr_ref);
    for (size_t i = 0; sr && i < sr->fields[F_SR_VDIs]->u.arr.n; i++) {
        struct db_row *v = db_lookup(x->db, CLS_VDI,
                                     sr->fields[F_SR_VDIs]->u.arr.items[i]->u.str.s);
        if (v && !strcmp(fstr(v, F_VDI_location), location)) {
            snprintf(dup, sizeof dup, "%s", v->ref);
        }
    }
    r = db_lookup_uuid(x->db, CLS_VDI, uuid) != NULL;
    db_read_unlock(x->db);
    if (!sr) {
        return api_fail_handle(ctx, CLS_SR, sr_ref);
    }
    if (*dup) {
        return api_fail(ctx, ERR_LOCATION_NOT_UNIQUE, sr_ref, location);
    }
    if (r) {
        return api_fail(ctx, ERR_UUID_INVALID, "VDI", uuid);
    }
    if (sr_op_begin(ctx, sr_ref, "vdi_introduce", op_id)) {
        return -1;
    }
    op = true;
    a = sr_get_or_fail(ctx, sr_ref);
    if (!a) {
        goto out;
    }
    if (!a->drv->vdi_introduce) {
        api_fail(ctx, ERR_SR_OPERATION_NOT_SUPPORTED, sr_ref);
        goto out;
    }
    pthread_mutex_lock(&a->lock);
    r = a->drv->vdi_introduce(a->sm, uuid, location, &info, &err);
    if (r) {
        struct sm_fail f = { .sr = sr_ref };
        pthread_mutex_unlock(&a->lock);
        if (r == -ENOENT) {
            api_fail(ctx, ERR_VDI_LOCATION_MISSING, sr_ref, location);
        } else {
            fail_sm(ctx, r, err, &f);
        }
        goto out;
    }
    snprintf(info.uuid, sizeof info.uuid, "%.36s", uuid);
    have_stat = sr_stat(a, &s);
    db_new_ref(ref);
    txn = db_begin(x->db);
    {
        struct storage_vdi_spec spec = {
            .sr = sr_ref, .name_label = arg_s(args, 2),
            .name_description = arg_s(args, 3), .type = arg_s(args, 5),
            .sharable = args[6]->u.b, .read_only = args[7]->u.b,
            .other_config = args[8], .sm_config = args[11],
        };
        struct value **f = vdi_fields_new(&spec, &info);
        value_unref(f[F_VDI_xenstore_data]);
        f[F_VDI_xenstore_data] = value_ref(args[10]);
        value_unref(f[F_VDI_managed]);
        f[F_VDI_managed] = value_bool(args[12]->u.b);
        if (!null_ref(arg_s(args, 15))) {
            value_unref(f[F_VDI_metadata_of_pool]);
            f[F_VDI_metadata_of_pool] = value_ref(args[15]);
        }
        value_unref(f[F_VDI_is_a_snapshot]);
        f[F_VDI_is_a_snapshot] = value_bool(args[16]->u.b);
        value_unref(f[F_VDI_snapshot_time]);
        f[F_VDI_snapshot_time] = value_ref(args[17]);
        if (!null_ref(arg_s(args, 18))
            && db_lookup(x->db, CLS_VDI, arg_s(args, 18))) {
            value_unref(f[F_VDI_snapshot_of]);
            f[F_VDI_snapshot_of] = value_ref(args[18]);
        }
        if (db_insert_fields(txn, CLS_VDI, ref, f)) {
            db_abort(txn);
            pthread_mutex_unlock(&a->lock);
            api_fail(ctx, ERR_UUID_INVALID, "VDI", uuid);
            goto out;
        }
    }
    sr_write_space(x, txn, sr_ref, have_stat ? &s : NULL);
    vdi_refresh_allowed(x, txn, ref);
    rc = api_commit(ctx, txn);
    pthread_mutex_unlock(&a->lock);
    if (!rc) {
        *ret = value_string(ref);
    }
out:
    sm_vdi_info_clear(&info);
    free(err);
    sr_put(a);
    if (op) {
        sr_op_end(x, sr_ref, op_id);
    }
    return rc;
}

static int
api_vdi_forget(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const char *ref = arg_s(args, 1);
    char op_id[48], sr_ref[48];
    struct db_txn *txn;

    if (vdi_op_begin(ctx, ref, "forget", op_id, sr_ref)) {
        return -1;
    }
    txn = db_begin(ctx->x->db);
    vdi_delete_rows(txn, ref);
    sr_write_space(ctx->x, txn, sr_ref, NULL);
    if (api_commit(ctx, txn)) {
        vdi_op_end(ctx->x, ref, op_id);
        return -1;
    }
    return 0;
}

static int
api_vdi_update(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const char *ref = arg_s(args, 1);
    struct vdi_facts vf;
    struct sr_att *a = NULL;
    char op_id[48], sr_ref[48];
    int rc = -1;

    if (vdi_op_begin(ctx, ref, "update", op_id, sr_ref)) {
        return -1;
    }
    if (!vdi_facts_get(ctx->x->db, ref, &vf)) {
        api_fail_handle(ctx, CLS_VDI, ref);
    } else if ((a = sr_get_or_fail(ctx, sr_ref)) != NULL) {
        struct sm_vdi_info info;
        char *err = NULL;
        int r;
        memset(&info, 0, sizeof info);
        r = a->drv->vdi_info(a->sm, vf.location, &info, &err);
        if (r) {
            struct sm_fail f = { .sr = sr_ref, .vdi = ref, .op = "update" };
            fail_sm(ctx, r, err, &f);
        } else {
            struct sm_sr_stat s;
            bool have_stat = sr_stat(a, &s);
            struct db_txn *txn = db_begin(ctx->x->db);
            vdi_update_from_info(txn, ref, &info);
            sr_write_space(ctx->x, txn, sr_ref, have_stat ? &s : NULL);
            rc = api_commit(ctx, txn);
        }
        sm_vdi_info_clear(&info);
        free(err);
    }
    vdi_facts_clear(&vf);
    sr_put(a);
    vdi_op_end(ctx->x, ref, op_id);
    return rc;
}

static int
api_vdi_data_destroy(struct api_ctx *ctx, struct value **args,
                     struct value **ret)
{
    const char *ref = arg_s(args, 1);
    struct vdi_facts vf;
    struct sr_att *a = NULL;
    char op_id[48], sr_ref[48];
    int rc = -1;

    if (vdi_op_begin(ctx, ref, "data_destroy", op_id, sr_ref)) {
        return -1;
    }
    if (!vdi_facts_get(ctx->x->db, ref, &vf)) {
        api_fail_handle(ctx, CLS_VDI, ref);
    } else if ((a = sr_get_or_fail(ctx, sr_ref)) != NULL) {
        char *err = NULL;
        int r;
        pthread_mutex_lock(&a->lock);
        r = a->drv->vdi_data_destroy(a->sm, vf.location, &err);
        pthread_mutex_unlock(&a->lock);
        if (r) {
            struct sm_fail f = { .sr = sr_ref, .vdi = ref, .op = "data_destroy" };
            fail_sm(ctx, r, err, &f);
        } else {
            struct db_txn *txn = db_begin(ctx->x->db);
            db_update(txn, CLS_VDI, ref, F_VDI_type, value_string("cbt_metadata"));
            rc = api_commit(ctx, txn);
            vdi_refresh_size(ctx->x, a, ref, vf.location);
        }
        free(err);
    }
    vdi_facts_clear(&vf);
    sr_put(a);
    vdi_op_end(ctx->x, ref, op_id);
    return rc;
}

static int
api_vdi_set_name_label(struct api_ctx *ctx, struct value **args,
                       struct value **ret)
{
    return set_field(ctx, CLS_VDI, arg_s(args, 1), F_VDI_name_label,
                     value_ref(args[2]));
}

static int
api_vdi_set_name_description(struct api_ctx *ctx, struct value **args,
                             struct value **ret)
{
    return set_field(ctx, CLS_VDI, arg_s(args, 1), F_VDI_name_description,
                     value_ref(args[2]));
}

static int
api_vdi_set_read_only(struct api_ctx *ctx, struct value **args,
                      struct value **ret)
{
    return set_field(ctx, CLS_VDI, arg_s(args, 1), F_VDI_read_only,
                     value_ref(args[2]));
}

static int
api_vdi_set_sharable(struct api_ctx *ctx, struct value **args,
                     struct value **ret)
{
    return set_field(ctx, CLS_VDI, arg_s(args, 1), F_VDI_sharable,
                     value_ref(args[2]));
}

/* on_boot and allow_caching change how the disk is attached: not while a
 * VBD has it attached. */
static int
set_attach_mode(struct api_ctx *ctx, struct value **args, int field)
{
    const char *ref = arg_s(args, 1);
    struct db_row *vdi;
    bool busy;

    db_read_lock(ctx->x->db);
    vdi = db_lookup(ctx->x->db, CLS_VDI, ref);
    busy = vdi && vdi_attached_vbd(ctx->x->db, vdi, false);
    db_read_unlock(ctx->x->db);
    if (!vdi) {
        return api_fail_handle(ctx, CLS_VDI, ref);
    }
    if (busy) {
        return api_fail(ctx, ERR_VDI_IN_USE, ref,
                        field == F_VDI_on_boot ? "set_on_boot" : "allow_caching");
    }
    return set_field(ctx, CLS_VDI, ref, field, value_ref(args[2]));
}

static int
api_vdi_set_on_boot(struct api_ctx *ctx, struct value **args,
                    struct value **ret)
{
    return set_attach_mode(ctx, args, F_VDI_on_boot);
}

static int
api_vdi_set_allow_caching(struct api_ctx *ctx, struct value **args,
                          struct value **ret)
{
    return set_attach_mode(ctx, args, F_VDI_allow_caching);
}

/* ---- VBD records ---- */

/* VBD.create as XenServer checks it: a CD is read-only, only a CD may be
 * empty, and the disk's type must be one a guest may use. */
static int
api_vbd_create(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const struct value *rec = args[1];
    const char *type = value_struct_get_string(rec, "type");
    const char *mode = value_struct_get_string(rec, "mode");
    const char *vdi_ref = value_struct_get_string(rec, "VDI");
    const struct value *empty = value_struct_get(rec, "empty");
    bool is_empty = empty && ((empty->type == VALUE_BOOL && empty->u.b)
                              || (value_is_string(empty)
                                  && !strcmp(empty->u.str.s, "true")));
    char vdi_type[32] = "";

    if (type && mode && !strcmp(type, "CD") && strcmp(mode, "RO")) {
        return api_fail(ctx, ERR_VBD_CDS_MUST_BE_READONLY);
    }
    if (type && strcmp(type, "CD") && is_empty) {
        return api_fail(ctx, ERR_VBD_NOT_REMOVABLE_MEDIA, "in constructor");
    }
    if (!is_empty && vdi_ref && !null_ref(vdi_ref)) {
        struct db_row *vdi;
        db_read_lock(ctx->x->db);
        vdi = db_lookup(ctx->x->db, CLS_VDI, vdi_ref);
        if (vdi) {
            snprintf(vdi_type, sizeof vdi_type, "%s", fstr(vdi, F_VDI_type));
        }
        db_read_unlock(ctx->x->db);
        if (!vdi) {
            return api_fail_handle(ctx, CLS_VDI, vdi_ref);
        }
        if (!strcmp(vdi_type, "ha_statefile") || !strcmp(vdi_type, "redo_log")
            || !strcmp(vdi_type, "rrd") || !strcmp(vdi_type, "pvs_cache")
            || !strcmp(vdi_type, "cbt_metadata")) {
            return api_fail(ctx, ERR_VDI_INCOMPATIBLE_TYPE, vdi_ref, vdi_type);
        }
    }
    return api_generic(ctx, args, ret);
}

static int
api_vbd_destroy(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct db_row *b;
    bool attached;

    db_read_lock(ctx->x->db);
    b = db_lookup(ctx->x->db, CLS_VBD, arg_s(args, 1));
    attached = b && b->fields[F_VBD_currently_attached]->u.b;
    db_read_unlock(ctx->x->db);
    if (!b) {
        return api_fail_handle(ctx, CLS_VBD, arg_s(args, 1));
    }
    if (attached) {
        return api_fail(ctx, ERR_OPERATION_NOT_ALLOWED,
                        "VBD currently attached to a running VM");
    }
    return api_generic(ctx, args, ret);
}

/* VBD.assert_attachable: what attaching the VBD's disk would refuse. */
static int
api_vbd_assert_attachable(struct api_ctx *ctx, struct value **args,
                          struct value **ret)
{
    struct xapi *x = ctx->x;
    const char *ref = arg_s(args, 1);
    struct db_row *b, *vdi, *sr;
    struct refusal r;
    bool found;

    refusal_init(&r);
    db_read_lock(x->db);
    b = db_lookup(x->db, CLS_VBD, ref);
    found = b != NULL;
    vdi = b && !b->fields[F_VBD_empty]->u.b
          ? db_lookup(x->db, CLS_VDI, fstr(b, F_VBD_VDI)) : NULL;
    sr = vdi ? db_lookup(x->db, CLS_SR, fstr(vdi, F_VDI_SR)) : NULL;
    if (b && !b->fields[F_VBD_empty]->u.b && !vdi) {
        refuse(&r, ERR_HANDLE_INVALID, 2, "VDI", fstr(b, F_VBD_VDI));
    }
    if (vdi) {
        const char *t = fstr(vdi, F_VDI_type);
        bool rw = !strcmp(fstr(b, F_VBD_mode), "RW");
        const struct value *vbds = vdi->fields[F_VDI_VBDs];
        if (!strcmp(t, "ha_statefile") || !strcmp(t, "redo_log")
            || !strcmp(t, "rrd") || !strcmp(t, "pvs_cache")
            || !strcmp(t, "cbt_metadata")) {
            refuse(&r, ERR_VDI_INCOMPATIBLE_TYPE, 2, vdi->ref, t);
        }
        if (rw && vdi->fields[F_VDI_read_only]->u.b) {
            refuse(&r, ERR_VDI_READONLY, 1, vdi->ref);
        }
        for (size_t i = 0; i < vbds->u.arr.n; i++) {
            struct db_row *o = db_lookup(x->db, CLS_VBD,
                                         vbds->u.arr.items[i]->u.str.s);
            if (o && strcmp(o->ref, ref) && o->fields[F_VBD_currently_attached]->u.b
                && (rw || !strcmp(fstr(o, F_VBD_mode), "RW"))
                && !vdi->fields[F_VDI_sharable]->u.b) {
                refuse(&r, ERR_VDI_IN_USE, 2, vdi->ref, "attach");
            }
        }
        if (sr) {
            check_sr_attached(x, sr, &r);
        }
    }
    db_read_unlock(x->db);
    if (!found) {
        return api_fail_handle(ctx, CLS_VBD, ref);
    }
    return r.err >= 0 ? fail_refusal(ctx, &r) : 0;
}

const struct api_handler_entry storage_handlers[] = {
    { "PBD.create", api_pbd_create },
    { "PBD.destroy", api_pbd_destroy },
    { "PBD.plug", api_pbd_plug },
    { "PBD.set_device_config", api_pbd_set_device_config },
    { "PBD.unplug", api_pbd_unplug },
    { "SR.assert_can_host_ha_statefile", api_sr_assert_can_host_ha_statefile },
    { "SR.create", api_sr_create },
    { "SR.destroy", api_sr_destroy },
    { "SR.forget", api_sr_forget },
    { "SR.get_supported_types", api_sr_get_supported_types },
    { "SR.introduce", api_sr_introduce },
    { "SR.make", api_sr_make },
    { "SR.probe", api_sr_probe },
    { "SR.probe_ext", api_sr_probe_ext },
    { "SR.scan", api_sr_scan },
    { "SR.set_name_description", api_sr_set_name_description },
    { "SR.set_name_label", api_sr_set_name_label },
    { "SR.set_physical_size", api_sr_set_physical_size },
    { "SR.set_shared", api_sr_set_shared },
    { "SR.update", api_sr_update },
    { "VBD.assert_attachable", api_vbd_assert_attachable },
    { "VBD.create", api_vbd_create },
    { "VBD.destroy", api_vbd_destroy },
    { "VDI.clone", api_vdi_clone },
    { "VDI.copy", api_vdi_copy },
    { "VDI.create", api_vdi_create },
    { "VDI.data_destroy", api_vdi_data_destroy },
    { "VDI.destroy", api_vdi_destroy },
    { "VDI.forget", api_vdi_forget },
    { "VDI.introduce", api_vdi_introduce },
    { "VDI.resize", api_vdi_resize },
    { "VDI.resize_online", api_vdi_resize_online },
    { "VDI.set_allow_caching", api_vdi_set_allow_caching },
    { "VDI.set_name_description", api_vdi_set_name_description },
    { "VDI.set_name_label", api_vdi_set_name_label },
    { "VDI.set_on_boot", api_vdi_set_on_boot },
    { "VDI.set_read_only", api_vdi_set_read_only },
    { "VDI.set_sharable", api_vdi_set_sharable },
    { "VDI.snapshot", api_vdi_snapshot },
    { "VDI.update", api_vdi_update },
    { NULL, NULL },
};
