/* vdi-io.c — PUT /import_raw_vdi and GET /export_raw_vdi: a disk's data
 * over HTTP, raw or as a VHD stream, as XenAPI's handlers of those names;
 * and the parts that every import and export handler shares
 * (import-export.h: authentication, tasks, errors).
 *
 * The data goes through the VDI's block device (storage_vdi_open(),
 * storage.h) on a thread per transfer that owns the taken-over connection
 * (http.h), so no HTTP worker waits on a disk and nothing holds a whole
 * image in memory.  Imports keep disks sparse: runs of zeros become
 * write_zeroes (which leaves VHD blocks unallocated), and a VHD stream
 * only brings its allocated blocks.  Exports as VHD write a dynamic disk
 * holding the blocks the chain has data in, whose length is known before
 * the first byte goes out (Content-Length).
 *
 * The HTTP answer follows XenAPI: an upload is answered "200 OK" as soon
 * as it is accepted, before its body is read (XenAPI's clients wait for
 * that head before they send), and its outcome is the task's; a client
 * that sent "Expect: 100-continue" gets "100 Continue" instead and the
 * final status after the body.  Requests refused before the transfer
 * starts get a 4xx/5xx status; the task fails in every case. */
#include <config.h>
#include "import-export.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "storage.h"
#include "storage/blockdev.h"
#include "storage/sm.h"
#include "storage/vhd.h"

/* Bytes moved per read or write of the disk. */
#define IO_SIZE (2u * 1024 * 1024)
/* Granularity of zero detection on import (a VHD sector bitmap bit is
 * 512 bytes, but 64 KiB keeps the scan cheap and the writes large). */
#define ZERO_GRAIN (64u * 1024)
/* The block size of the VHD streams we write (XenServer's). */
#define VHD_BLOCK ((uint64_t) VHD_DEFAULT_BLOCK_SIZE)

/* ---- shared by the import and export handlers ---- */

char *
ie_param(const struct http_request *req, const char *key)
{
    char *v = http_request_query_param(req, key);
    const char *cookie;
    size_t kl = strlen(key);

    if (v) {
        return v;
    }
    cookie = http_request_header(req, "Cookie");
    while (cookie && *cookie) {
        const char *end = strchr(cookie, ';');
        size_t n = end ? (size_t) (end - cookie) : strlen(cookie);
        while (n && *cookie == ' ') {
            cookie++;
            n--;
        }
        if (n > kl && !memcmp(cookie, key, kl) && cookie[kl] == '=') {
            return xmemdup0(cookie + kl + 1, n - kl - 1);
        }
        cookie = end ? end + 1 : NULL;
    }
    return NULL;
}

bool
ie_param_true(const struct http_request *req, const char *key)
{
    char *v = ie_param(req, key);
    bool t = v && (!strcasecmp(v, "true") || !strcmp(v, "1")
                   || !strcasecmp(v, "yes") || !strcasecmp(v, "on"));

    free(v);
    return t;
}

static int
b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    } else if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    } else if (c == '+') {
        return 62;
    } else if (c == '/') {
        return 63;
    }
    return -1;
}

/* "Basic dXNlcjpwdw==" -> user and password; false if malformed. */
static bool
parse_basic_auth(const char *h, char **ret_user, char **ret_pw)
{
    struct ds ds = DS_EMPTY;
    unsigned bits = 0, acc = 0;
    char *colon;

    if (strncasecmp(h, "Basic ", 6)) {
        return false;
    }
    for (h += 6; *h == ' '; h++) {
        continue;
    }
    for (; *h && *h != '='; h++) {
        int v = b64_value(*h);
        if (v < 0) {
            ds_destroy(&ds);
            return false;
        }
        acc = (acc << 6) | (unsigned) v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            ds_put_char(&ds, (char) ((acc >> bits) & 0xff));
        }
    }
    colon = memchr(ds_cstr(&ds), ':', ds.len);
    if (!colon || memchr(ds.s, '\0', ds.len)) {
        ds_destroy(&ds);
        return false;
    }
    *ret_user = xmemdup0(ds.s, colon - ds.s);
    *ret_pw = xstrdup(colon + 1);
    ds_destroy(&ds);
    return true;
}

struct sync_call {
    struct value *result;
    struct value *error;
};

static void
sync_done(void *aux, struct value *result, struct value *error)
{
    struct sync_call *sc = aux;

    sc->result = result;
    sc->error = error;
}

/* A session for the user and password of a Basic authentication, made
 * by session.login_with_password as XenAPI's handlers do. */
static struct session *
basic_login(struct xapi *x, const char *user, const char *pw,
            const char *peer)
{
    struct value *params = value_array(4);
    struct sync_call sc = { NULL, NULL };
    struct session *s = NULL;

    value_array_append(params, value_string(user));
    value_array_append(params, value_string(pw));
    value_array_append(params, value_string("1.0"));
    value_array_append(params, value_string("xapi-http-import-export"));
    api_dispatch(x, "session.login_with_password", params, peer, sync_done,
                 &sc);
    if (sc.result && sc.result->type == VALUE_STRING) {
        s = session_lookup(x, sc.result->u.str.s);
    }
    value_unref(params);
    value_unref(sc.result);
    value_unref(sc.error);
    return s;
}

static void
basic_logout(struct xapi *x, const char *ref, const char *peer)
{
    struct value *params = value_array(1);
    struct sync_call sc = { NULL, NULL };

    value_array_append(params, value_string(ref));
    api_dispatch(x, "session.logout", params, peer, sync_done, &sc);
    value_unref(params);
    value_unref(sc.result);
    value_unref(sc.error);
}

static void
respond_text(struct http_exchange *hx, int status, const char *extra,
             const char *text)
{
    http_respond(hx, status, "text/plain; charset=utf-8", extra, text,
                 strlen(text));
}

int
ie_begin(struct ie_call *c, struct xapi *x, struct http_exchange *hx,
         const char *label, const char *permission)
{
    const struct http_request *req = http_exchange_request(hx);
    char *sid = NULL, *task = NULL, *user = NULL, *pw = NULL, *msg = NULL;
    const char *auth = http_request_header(req, "Authorization");
    bool root_unix = false;
    int rc = -1;

    memset(c, 0, sizeof *c);
    c->x = x;
    snprintf(c->peer, sizeof c->peer, "%s", req->peer);
    snprintf(c->label, sizeof c->label, "%s", label);
    sid = ie_param(req, "session_id");
    if (sid) {
        c->session = session_lookup(x, sid);
    } else if (auth && parse_basic_auth(auth, &user, &pw)) {
        c->session = basic_login(x, user, pw, req->peer);
        c->temp_session = c->session != NULL;
    } else if (req->is_unix) {
        /* The Unix socket is only reachable by root on the host. */
        root_unix = true;
    }
    if (!c->session && !root_unix) {
        respond_text(hx, 401, "WWW-Authenticate: Basic realm=\"xapi\"",
                     sid || auth ? "SESSION_AUTHENTICATION_FAILED\n"
                     : "give session_id=OpaqueRef:... (in the query or a "
                       "cookie) or HTTP Basic credentials\n");
        goto out;
    }
    c->ctx.x = x;
    c->ctx.method = c->label;
    c->ctx.session = c->session;
    c->ctx.peer = c->peer;

    task = ie_param(req, "task_id");
    if (task && *task) {
        bool found;
        db_read_lock(x->db);
        found = db_lookup(x->db, CLS_task, task) != NULL;
        db_read_unlock(x->db);
        if (!found) {
            msg = xasprintf("HANDLE_INVALID\ntask\n%s\n", task);
            respond_text(hx, 404, NULL, msg);
            goto out;
        }
        snprintf(c->task, sizeof c->task, "%s", task);
    } else {
        if (task_create_for_call(&c->ctx, c->task)) {
            respond_text(hx, 500, NULL, "INTERNAL_ERROR\ncannot create a "
                         "task\n");
            goto out;
        }
        c->own_task = true;
    }
    snprintf(c->ctx.task, sizeof c->ctx.task, "%s", c->task);

    if (c->session && !session_is_superuser(c->session)
        && !(session_roles(c->session) & IE_ROLES)) {
        char hdr[96];
        api_fail(&c->ctx, ERR_RBAC_PERMISSION_DENIED, permission,
                 "The role of the session does not allow this HTTP "
                 "handler");
        respond_text(hx, 403, ie_task_header(c, hdr, sizeof hdr),
                     "RBAC_PERMISSION_DENIED\n");
        ie_end(c, NULL);
        goto out;
    }
    rc = 0;
out:
    if (rc && !c->ctx.task[0]) {
        /* Nothing to complete: release what was taken. */
        if (c->temp_session) {
            basic_logout(x, session_ref(c->session), c->peer);
        }
        session_unref(c->session);
        c->session = NULL;
    }
    free(sid);
    free(task);
    free(user);
    free(pw);
    free(msg);
    return rc;
}

int
ie_error_status(const struct value *error)
{
    const char *code = error && error->type == VALUE_ARRAY && error->u.arr.n
                       ? error->u.arr.items[0]->u.str.s : "";

    if (!strcmp(code, "SESSION_AUTHENTICATION_FAILED")
        || !strcmp(code, "SESSION_INVALID")) {
        return 401;
    } else if (!strcmp(code, "RBAC_PERMISSION_DENIED")) {
        return 403;
    } else if (!strcmp(code, "HANDLE_INVALID")
               || !strcmp(code, "UUID_INVALID")) {
        return 404;
    } else if (!strcmp(code, "FIELD_TYPE_ERROR")
               || !strcmp(code, "INVALID_VALUE")
               || !strncmp(code, "IMPORT_", 7)) {
        return 400;
    } else if (!strcmp(code, "VDI_IN_USE")
               || !strcmp(code, "OTHER_OPERATION_IN_PROGRESS")
               || !strcmp(code, "VM_BAD_POWER_STATE")) {
        return 409;
    } else if (!strcmp(code, "VDI_TOO_SMALL") || !strcmp(code, "SR_FULL")) {
        return 413;
    }
    return 500;
}

const char *
ie_task_header(struct ie_call *c, char *buf, size_t size)
{
    snprintf(buf, size, "task-id: %s", c->task);
    return buf;
}

static char *
error_text(const struct value *error)
{
    struct ds ds = DS_EMPTY;

    if (error && error->type == VALUE_ARRAY) {
        for (size_t i = 0; i < error->u.arr.n; i++) {
            const struct value *v = error->u.arr.items[i];
            ds_put_cstr(&ds, v->type == VALUE_STRING ? v->u.str.s : "?");
            ds_put_char(&ds, '\n');
        }
    } else {
        ds_put_cstr(&ds, "INTERNAL_ERROR\n");
    }
    return ds_steal(&ds);
}

void
ie_respond_error(struct ie_call *c, struct http_exchange *hx)
{
    char *text = error_text(c->ctx.error);
    char hdr[96];

    respond_text(hx, ie_error_status(c->ctx.error),
                 ie_task_header(c, hdr, sizeof hdr), text);
    free(text);
}

void
ie_stream_respond_error(struct ie_call *c, struct http_stream *s)
{
    char *text = error_text(c->ctx.error);
    char hdr[96];

    http_stream_respond(s, ie_error_status(c->ctx.error),
                        "text/plain; charset=utf-8",
                        ie_task_header(c, hdr, sizeof hdr), text,
                        strlen(text), 10000);
    free(text);
}

int
ie_progress(struct ie_call *c, uint64_t done, uint64_t total)
{
    int64_t now = time_mono_ms();

    if (now - c->last_progress_ms >= 250) {
        c->last_progress_ms = now;
        /* Never 1.0 before the end: completion says that. */
        api_task_set_progress(&c->ctx, total ? 0.99 * done / total : 0);
        if (api_task_cancelled(&c->ctx)) {
            return api_fail(&c->ctx, ERR_TASK_CANCELLED, c->task);
        }
    }
    return 0;
}

void
ie_end(struct ie_call *c, const struct value *result)
{
    if (c->task[0]) {
        struct value *empty = value_empty_string();
        if (c->ctx.error) {
            char *text = value_to_text(c->ctx.error);
            LOG_INFO("%s from %s failed: %s", c->label, c->peer, text);
            free(text);
            task_complete_ref(c->task, NULL, c->ctx.error);
        } else {
            task_complete_ref(c->task, (struct value *) (result ? result
                                                                : empty),
                              NULL);
        }
        value_unref(empty);
        c->task[0] = '\0';
    }
    value_unref(c->ctx.error);
    c->ctx.error = NULL;
    if (c->temp_session) {
        basic_logout(c->x, session_ref(c->session), c->peer);
        c->temp_session = false;
    }
    session_unref(c->session);
    c->session = NULL;
}

int
ie_spawn(void *(*fn)(void *), void *aux)
{
    pthread_attr_t attr;
    pthread_t t;
    int r;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    r = pthread_create(&t, &attr, fn, aux);
    pthread_attr_destroy(&attr);
    return -r;
}

int
ie_start_upload(struct ie_call *c, struct http_stream *s,
                struct http_stream **ret_slot, void *(*fn)(void *),
                void *job)
{
    if (!s) {
        return api_fail(&c->ctx, ERR_IMPORT_ERROR_PREMATURE_EOF);
    }
    *ret_slot = s;
    if (ie_spawn(fn, job)) {
        return api_fail_internal(&c->ctx, "cannot start a thread");
    }
    return 0;
}

/* ---- the VDI named by a request ---- */

/* Finds the VDI given as ref or uuid (XenAPI accepts both).  Returns 0
 * with the ref in ret_ref (48 bytes), or fails HANDLE_INVALID. */
static int
find_vdi(struct ie_call *c, const char *vdi, char *ret_ref,
         int64_t *ret_size, char *ret_uuid)
{
    struct db *db = c->x->db;
    const struct db_row *row;

    db_read_lock(db);
    row = db_lookup(db, CLS_VDI, vdi);
    if (!row) {
        row = db_lookup_uuid(db, CLS_VDI, vdi);
    }
    if (row) {
        snprintf(ret_ref, 48, "%s", row->ref);
        snprintf(ret_uuid, 40, "%s", row->fields[F_VDI_uuid]->u.str.s);
        *ret_size = row->fields[F_VDI_virtual_size]->u.i;
    }
    db_read_unlock(db);
    return row ? 0 : api_fail_handle(&c->ctx, CLS_VDI, vdi);
}

/* ---- VHD structures (docs/vhd.md; big-endian) ---- */

static void
put_be32(unsigned char *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static void
put_be64(unsigned char *p, uint64_t v)
{
    put_be32(p, v >> 32);
    put_be32(p + 4, (uint32_t) v);
}

static uint32_t
get_be32(const unsigned char *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
           | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t
get_be64(const unsigned char *p)
{
    return (uint64_t) get_be32(p) << 32 | get_be32(p + 4);
}

static uint32_t
vhd_checksum(const unsigned char *p, size_t n, size_t csum_off)
{
    uint32_t sum = 0;

    for (size_t i = 0; i < n; i++) {
        if (i < csum_off || i >= csum_off + 4) {
            sum += p[i];
        }
    }
    return ~sum;
}

/* The CHS geometry the VHD specification derives from a size. */
static uint32_t
vhd_geometry(uint64_t size)
{
    uint64_t sectors = size / 512;
    uint32_t spt, heads, cth, cyl;

    if (sectors > 65535ull * 16 * 255) {
        sectors = 65535ull * 16 * 255;
    }
    if (sectors >= 65535ull * 16 * 63) {
        spt = 255;
        heads = 16;
        cth = (uint32_t) (sectors / spt);
    } else {
        spt = 17;
        cth = (uint32_t) (sectors / spt);
        heads = (cth + 1023) / 1024;
        if (heads < 4) {
            heads = 4;
        }
        if (cth >= heads * 1024 || heads > 16) {
            spt = 31;
            heads = 16;
            cth = (uint32_t) (sectors / spt);
        }
        if (cth >= heads * 1024) {
            spt = 63;
            heads = 16;
            cth = (uint32_t) (sectors / spt);
        }
    }
    cyl = cth / heads;
    if (cyl > 65535) {
        cyl = 65535;
    }
    return cyl << 16 | heads << 8 | spt;
}

/* Seconds since 2000-01-01, the VHD epoch. */
static uint32_t
vhd_now(void)
{
    return (uint32_t) (time(NULL) - 946684800);
}

static void
vhd_make_footer(unsigned char f[512], uint64_t size, const unsigned char
                uuid[16])
{
    memset(f, 0, 512);
    memcpy(f, "conectix", 8);
    put_be32(f + 8, 2);                 /* features: reserved bit */
    put_be32(f + 12, 0x00010000);       /* format version 1.0 */
    put_be64(f + 16, 512);              /* the dynamic header */
    put_be32(f + 24, vhd_now());
    memcpy(f + 28, "tap", 4);           /* creator, see docs/vhd.md */
    put_be32(f + 32, 0x00010000);
    memcpy(f + 36, "Wi2k", 4);
    put_be64(f + 40, size);
    put_be64(f + 48, size);
    put_be32(f + 56, vhd_geometry(size));
    put_be32(f + 60, VHD_TYPE_DYNAMIC);
    memcpy(f + 68, uuid, 16);
    put_be32(f + 64, vhd_checksum(f, 512, 64));
}

static void
vhd_make_header(unsigned char h[1024], uint32_t max_entries)
{
    memset(h, 0, 1024);
    memcpy(h, "cxsparse", 8);
    put_be64(h + 8, UINT64_MAX);
    put_be64(h + 16, 1536);             /* the BAT follows the header */
    put_be32(h + 24, 0x00010000);
    put_be32(h + 28, max_entries);
    put_be32(h + 32, (uint32_t) VHD_BLOCK);
    put_be32(h + 36, vhd_checksum(h, 1024, 36));
}

/* ---- which blocks of a disk hold data ---- */

static void
block_map_set_range(struct ie_block_map *m, uint64_t off, uint64_t len)
{
    uint64_t first = off / VHD_BLOCK, last = (off + len - 1) / VHD_BLOCK;

    for (uint64_t b = first; b <= last && b < m->n_blocks; b++) {
        if (!(m->bits[b / 8] & (1u << (b % 8)))) {
            m->bits[b / 8] |= 1u << (b % 8);
            m->n_set++;
        }
    }
}

bool
ie_block_map_test(const struct ie_block_map *m, uint64_t b)
{
    return m->bits[b / 8] & (1u << (b % 8));
}

int
ie_block_map_build(struct ie_block_map *m, const struct sm_attach *att,
                uint64_t size)
{
    m->n_blocks = (size + VHD_BLOCK - 1) / VHD_BLOCK;
    m->bits = xcalloc(1, m->n_blocks / 8 + 1);
    m->n_set = 0;
    if (att && att->format && !strcmp(att->format, "vhd")) {
        struct vhd *vhd = NULL;
        char *err = NULL;
        uint64_t off = 0;
        int rc = vhd_chain_open(att->path, true, &vhd, &err);
        if (rc) {
            LOG_WARN("export: %s", err ? err : strerror(-rc));
            free(err);
            goto everything;
        }
        while (off < size && off < vhd_virtual_size(vhd)) {
            uint64_t len;
            bool data;
            rc = vhd_extent(vhd, off, &len, &data);
            if (rc || !len) {
                vhd_close(vhd);
                goto everything;
            }
            if (data) {
                block_map_set_range(m, off, len);
            }
            off += len;
        }
        vhd_close(vhd);
        return 0;
    } else if (att && att->path) {
        int fd = open(att->path, O_RDONLY | O_CLOEXEC);
        off_t off = 0;
        if (fd < 0) {
            goto everything;
        }
        while ((uint64_t) off < size) {
            off_t d = lseek(fd, off, SEEK_DATA), h;
            if (d < 0) {
                if (errno == ENXIO) {
                    break;
                }
                close(fd);
                goto everything;
            }
            h = lseek(fd, d, SEEK_HOLE);
            if (h < 0) {
                h = (off_t) size;
            }
            if ((uint64_t) d < size && h > d) {
                block_map_set_range(m, d, MIN((uint64_t) h, size) - d);
            }
            off = h;
        }
        close(fd);
        return 0;
    }
everything:
    memset(m->bits, 0xff, m->n_blocks / 8 + 1);
    m->n_set = m->n_blocks;
    return 0;
}

/* ---- export ---- */

enum vdi_format { FORMAT_RAW, FORMAT_VHD };

struct export_job {
    struct ie_call call;
    struct storage_vdi_handle *h;
    enum vdi_format format;
    uint64_t size;
    struct ie_block_map map;
    uint64_t length;            /* of the response body */
    struct http_stream *s;
    bool head_only;
};

static void
export_job_free(struct export_job *j)
{
    if (!j) {
        return;
    }
    storage_vdi_close(j->h);
    free(j->map.bits);
    ie_end(&j->call, NULL);
    http_stream_close(j->s);
    free(j);
}

static int
export_write(struct export_job *j, const void *p, size_t n)
{
    int rc = http_stream_write_all(j->s, p, n, IE_IO_TIMEOUT_MS);

    if (rc) {
        /* Only the task can still hear about it. */
        /* A client going away is not the daemon's fault: no error log,
         * the task (logged at info by ie_end) says it. */
        char msg[96];
        snprintf(msg, sizeof msg, "the client stopped reading: %s",
                 strerror(-rc));
        return api_fail(&j->call.ctx, ERR_INTERNAL_ERROR, msg);
    }
    return 0;
}

static int
export_range(struct export_job *j, struct blockdev *dev, char *buf,
             uint64_t off, uint64_t len, uint64_t *done)
{
    while (len) {
        size_t k = (size_t) MIN(len, (uint64_t) IO_SIZE);
        int rc = dev->ops->read(dev, buf, off, k);
        if (rc) {
            return api_fail_internal(&j->call.ctx, "reading the disk at "
                                     "%" PRIu64 ": %s", off, strerror(-rc));
        }
        if (export_write(j, buf, k)) {
            return -1;
        }
        off += k;
        len -= k;
        *done += k;
        if (ie_progress(&j->call, *done, j->length)) {
            return -1;
        }
    }
    return 0;
}

static int
export_vhd(struct export_job *j, struct blockdev *dev, char *buf)
{
    unsigned char footer[512], header[1024], uuid[16], bitmap[512];
    uint32_t n_entries = (uint32_t) j->map.n_blocks;
    size_t bat_bytes = ((size_t) n_entries * 4 + 511) / 512 * 512;
    unsigned char *bat = xmalloc(bat_bytes);
    uint64_t sector = (1536 + bat_bytes) / 512, done = 0;
    int rc = -1;

    random_bytes(uuid, sizeof uuid);
    vhd_make_footer(footer, j->size, uuid);
    vhd_make_header(header, n_entries);
    memset(bat, 0xff, bat_bytes);
    for (uint64_t b = 0; b < j->map.n_blocks; b++) {
        if (ie_block_map_test(&j->map, b)) {
            put_be32(bat + 4 * b, (uint32_t) sector);
            sector += (512 + VHD_BLOCK) / 512;
        }
    }
    memset(bitmap, 0xff, sizeof bitmap);
    if (export_write(j, footer, 512) || export_write(j, header, 1024)
        || export_write(j, bat, bat_bytes)) {
        goto out;
    }
    for (uint64_t b = 0; b < j->map.n_blocks; b++) {
        uint64_t off = b * VHD_BLOCK;
        uint64_t len = MIN(VHD_BLOCK, j->size - off);
        if (!ie_block_map_test(&j->map, b)) {
            continue;
        }
        if (export_write(j, bitmap, sizeof bitmap)
            || export_range(j, dev, buf, off, len, &done)) {
            goto out;
        }
        if (len < VHD_BLOCK) {
            /* The last block of a disk whose size is not a multiple of
             * the block size is still whole in the file. */
            memset(buf, 0, VHD_BLOCK - len);
            if (export_write(j, buf, VHD_BLOCK - len)) {
                goto out;
            }
        }
    }
    if (export_write(j, footer, 512)) {
        goto out;
    }
    rc = 0;
out:
    free(bat);
    return rc;
}

static void *
export_thread(void *j_)
{
    struct export_job *j = j_;
    struct blockdev *dev = storage_vdi_blockdev(j->h);
    char *buf = xmalloc(IO_SIZE);
    uint64_t done = 0;
    int one = 1;

    setsockopt(http_stream_fd(j->s), SOL_SOCKET, SO_KEEPALIVE, &one,
               sizeof one);
    if (j->head_only) {
        /* HEAD: the head said it all. */
    } else if (j->format == FORMAT_RAW) {
        export_range(j, dev, buf, 0, j->size, &done);
    } else {
        export_vhd(j, dev, buf);
    }
    free(buf);
    export_job_free(j);
    return NULL;
}

static void
export_taken(struct http_stream *s, void *j_)
{
    struct export_job *j = j_;

    if (!s) {
        api_fail_internal(&j->call.ctx, "the client went away");
        export_job_free(j);
        return;
    }
    j->s = s;
    if (ie_spawn(export_thread, j)) {
        api_fail_internal(&j->call.ctx, "cannot start a thread");
        export_job_free(j);
    }
}

static void
export_raw_vdi(struct http_exchange *hx, struct xapi *x)
{
    const struct http_request *req = http_exchange_request(hx);
    struct export_job *j = xcalloc(1, sizeof *j);
    char *vdi = NULL, *format = NULL, vdi_ref[48], uuid[40], *headers = NULL;
    int64_t size;

    if (ie_begin(&j->call, x, hx, "VDI.export_raw",
                 "http/get_export_raw_vdi")) {
        free(j);
        return;
    }
    j->head_only = !strcmp(req->method, "HEAD");
    vdi = ie_param(req, "vdi");
    format = ie_param(req, "format");
    if (!vdi) {
        api_fail(&j->call.ctx, ERR_INVALID_VALUE, "vdi", "");
        goto fail;
    }
    if (!format || !strcasecmp(format, "raw")) {
        j->format = FORMAT_RAW;
    } else if (!strcasecmp(format, "vhd")) {
        j->format = FORMAT_VHD;
    } else {
        api_fail(&j->call.ctx, ERR_INVALID_VALUE, "format", format);
        goto fail;
    }
    if (find_vdi(&j->call, vdi, vdi_ref, &size, uuid)
        || storage_vdi_open(&j->call.ctx, vdi_ref, false, NULL, &j->h)) {
        goto fail;
    }
    j->size = storage_vdi_blockdev(j->h)->size;
    if (j->format == FORMAT_RAW) {
        j->length = j->size;
    } else {
        if (j->size > VHD_MAX_SIZE) {
            char max[32];
            snprintf(max, sizeof max, "%llu", (unsigned long long)
                     VHD_MAX_SIZE);
            api_fail(&j->call.ctx, ERR_VDI_TOO_LARGE, vdi_ref, max);
            goto fail;
        }
        ie_block_map_build(&j->map, storage_vdi_attachment(j->h), j->size);
        j->length = 1536 + (j->map.n_blocks * 4 + 511) / 512 * 512
                    + j->map.n_set * (512 + VHD_BLOCK) + 512;
    }
    headers = xasprintf("task-id: %s\r\nContent-Type: %s\r\n"
                        "Content-Length: %" PRIu64 "\r\n"
                        "Content-Disposition: attachment; "
                        "filename=\"%s.%s\"\r\nConnection: close",
                        j->call.task, j->format == FORMAT_RAW
                        ? "application/octet-stream" : "application/vhd",
                        j->length, uuid, j->format == FORMAT_RAW ? "raw" : "vhd");
    api_task_set_progress(&j->call.ctx, 0);
    http_respond_takeover(hx, 200, headers, export_taken, j);
    j = NULL;
    goto out;
fail:
    ie_respond_error(&j->call, hx);
    export_job_free(j);
    j = NULL;
out:
    free(vdi);
    free(format);
    free(headers);
}

/* ---- import ---- */

struct import_job {
    struct ie_call call;
    struct http_request req;    /* the framing of the body */
    struct storage_vdi_handle *h;
    enum vdi_format format;
    char vdi_ref[48];
    bool expect_continue;
    bool plain;                 /* not TLS: the socket carries the body */
    struct http_stream *s;
};

static void
import_job_free(struct import_job *j)
{
    if (!j) {
        return;
    }
    storage_vdi_close(j->h);
    ie_end(&j->call, NULL);
    http_stream_close(j->s);
    free(j->req.body);
    free(j);
}

bool
ie_all_zero(const char *p, size_t n)
{
    static const char zeros[4096];

    while (n >= sizeof zeros) {
        if (memcmp(p, zeros, sizeof zeros)) {
            return false;
        }
        p += sizeof zeros;
        n -= sizeof zeros;
    }
    return !memcmp(p, zeros, n);
}

int
ie_write_sparse(struct api_ctx *ctx, struct blockdev *dev, const char *buf,
             uint64_t off, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t k = MIN((size_t) ZERO_GRAIN, n - i), run = k;
        bool zero = ie_all_zero(buf + i, k);
        int rc;

        /* Extend the run while its kind continues. */
        while (i + run < n) {
            size_t k2 = MIN((size_t) ZERO_GRAIN, n - i - run);
            if (ie_all_zero(buf + i + run, k2) != zero) {
                break;
            }
            run += k2;
        }
        if (zero) {
            rc = dev->ops->write_zeroes
                 ? dev->ops->write_zeroes(dev, off + i, run) : 0;
        } else {
            rc = dev->ops->write(dev, buf + i, off + i, run);
        }
        if (rc) {
            return api_fail_internal(ctx, "writing the disk at %" PRIu64
                                     ": %s", off + i, strerror(-rc));
        }
        i += run;
    }
    return 0;
}

int
ie_body_error(struct ie_call *c, int rc)
{
    if (rc == -EPIPE) {
        return api_fail(&c->ctx, ERR_IMPORT_ERROR_PREMATURE_EOF);
    } else if (rc == -EBADMSG) {
        return api_fail(&c->ctx, ERR_IMPORT_ERROR,
                        "malformed chunked encoding");
    }
    return api_fail(&c->ctx, ERR_IMPORT_ERROR, strerror(-rc));
}

/* ---- writing a disk while the next piece arrives ---- */

struct ie_writer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct api_ctx ctx;         /* a copy: errors stay here until taken */
    struct blockdev *dev;
    const char *buf;            /* the piece being written, if pending */
    uint64_t off;
    size_t len;
    bool pending, stop, failed;
};

static void *
ie_writer_main(void *w_)
{
    struct ie_writer *w = w_;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        bool failed;
        while (!w->pending && !w->stop) {
            pthread_cond_wait(&w->cv, &w->mu);
        }
        if (!w->pending) {
            break;
        }
        pthread_mutex_unlock(&w->mu);
        failed = !w->failed
                 && ie_write_sparse(&w->ctx, w->dev, w->buf, w->off, w->len);
        pthread_mutex_lock(&w->mu);
        w->failed = w->failed || failed;
        w->pending = false;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct ie_writer *
ie_writer_start(struct api_ctx *ctx, struct blockdev *dev)
{
    struct ie_writer *w = xcalloc(1, sizeof *w);
    int r;

    w->ctx = *ctx;
    w->ctx.error = NULL;
    w->dev = dev;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    r = pthread_create(&w->thread, NULL, ie_writer_main, w);
    if (r) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        api_fail_internal(ctx, "cannot start a thread: %s", strerror(r));
        return NULL;
    }
    return w;
}

int
ie_writer_wait(struct ie_writer *w, struct api_ctx *ctx)
{
    int rc = 0;

    pthread_mutex_lock(&w->mu);
    while (w->pending) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    if (w->failed) {
        rc = -1;
        if (w->ctx.error && !ctx->error) {
            ctx->error = w->ctx.error;
            w->ctx.error = NULL;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int
ie_writer_submit(struct ie_writer *w, struct api_ctx *ctx, const char *buf,
                 uint64_t off, size_t len)
{
    if (ie_writer_wait(w, ctx)) {
        return -1;
    }
    pthread_mutex_lock(&w->mu);
    w->buf = buf;
    w->off = off;
    w->len = len;
    w->pending = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int
ie_writer_finish(struct ie_writer *w, struct api_ctx *ctx)
{
    int rc;

    if (!w) {
        return 0;
    }
    rc = ie_writer_wait(w, ctx);
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    value_unref(w->ctx.error);
    free(w);
    return rc;
}

/* ---- raw import straight from the socket into the VHD ----
 *
 * A raw import through a buffer costs two copies by the kernel for every
 * byte: socket to buffer, buffer to the page cache of the VHD, about half
 * of the daemon's time (qemu-img convert pays the same two, file to
 * buffer to file, but no network).  splice() moves the socket's pages into
 * a pipe without copying and from there into the file with one copy.
 * What goes around the buffer cannot be checked for zeros, and a block of
 * zeros must stay unallocated, so a piece goes this way only when its
 * first bytes (peeked at, not consumed) are not all zeros: then its block
 * holds data and is allocated anyway, and zero runs inside it are written
 * as they come, which reads the same.  Pieces that start with zeros take
 * the buffer and the writer thread as before.  On the 2-CPU development
 * VM this saves about a tenth of the daemon's CPU time per GB; the copy
 * into the page cache that remains is a third of it (docs/block-server.md
 * has the figures). */

/* Bytes peeked at the start of a piece to tell data from zeros. */
#define PEEK_SIZE 4096u
/* The pipe between socket and file; larger pipes need CAP_SYS_RESOURCE
 * beyond /proc/sys/fs/pipe-max-size (1 MiB by default). */
#define SPLICE_PIPE_SIZE (1u << 20)

struct splicer {
    int sock;
    int pipe[2];
    size_t pipe_size;
};

/* Sets sp up for the socket of j; false when this import cannot splice:
 * TLS (the socket carries ciphertext), a chunked body (framing between
 * the data), or no pipe. */
static bool
splicer_open(struct splicer *sp, const struct import_job *j)
{
    int size;

    sp->sock = sp->pipe[0] = sp->pipe[1] = -1;
    if (!j->plain || !j->req.body_streamed || j->req.body_chunked
        || pipe2(sp->pipe, O_CLOEXEC) < 0) {
        return false;
    }
    fcntl(sp->pipe[1], F_SETPIPE_SZ, (int) SPLICE_PIPE_SIZE);
    size = fcntl(sp->pipe[1], F_GETPIPE_SZ);
    sp->pipe_size = size > 0 ? (size_t) size : 65536;
    sp->sock = http_stream_fd(j->s);
    return true;
}

static void
splicer_close(struct splicer *sp)
{
    if (sp->pipe[0] >= 0) {
        close(sp->pipe[0]);
        close(sp->pipe[1]);
    }
    sp->sock = sp->pipe[0] = sp->pipe[1] = -1;
}

/* Waits until the (non-blocking) socket has input: 0, -ETIMEDOUT or
 * -errno. */
static int
wait_readable(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };

    for (;;) {
        int r = poll(&pfd, 1, IE_IO_TIMEOUT_MS);
        if (r > 0) {
            return 0;
        } else if (r == 0) {
            return -ETIMEDOUT;
        } else if (errno != EINTR) {
            return -errno;
        }
    }
}

/* Whether the next body bytes on the socket start with something other
 * than zeros (false at the end of input: the buffered path reports it). */
static int
peek_is_data(int sock, bool *ret_data)
{
    char b[PEEK_SIZE];

    for (;;) {
        ssize_t r = recv(sock, b, sizeof b, MSG_PEEK | MSG_DONTWAIT);
        if (r >= 0) {
            *ret_data = r > 0 && !ie_all_zero(b, (size_t) r);
            return 0;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_readable(sock);
            if (rc) {
                return rc;
            }
        } else if (errno != EINTR) {
            return -errno;
        }
    }
}

/* Moves len body bytes from the socket to fd at foff.  Returns 0, or
 * -errno with *ret_disk telling whether the file (rather than the
 * client) failed; -EPIPE when the client's input ends first. */
static int
splice_range(struct splicer *sp, int fd, uint64_t foff, uint64_t len,
             bool *ret_disk)
{
    *ret_disk = false;
    while (len) {
        ssize_t got = splice(sp->sock, NULL, sp->pipe[1], NULL,
                             (size_t) MIN(len, (uint64_t) sp->pipe_size),
                             SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (got == 0) {
            return -EPIPE;
        } else if (got < 0) {
            int rc;
            if (errno == EINTR) {
                continue;
            } else if (errno != EAGAIN) {
                return -errno;
            }
            rc = wait_readable(sp->sock);
            if (rc) {
                return rc;
            }
            continue;
        }
        len -= (uint64_t) got;
        /* Empty the pipe each time, so the socket side never finds it
         * full and EAGAIN always means "no input yet". */
        while (got) {
            loff_t o = (loff_t) foff;
            ssize_t put = splice(sp->pipe[0], NULL, fd, &o, (size_t) got,
                                 SPLICE_F_MOVE);
            if (put < 0 && errno == EINTR) {
                continue;
            } else if (put <= 0) {
                *ret_disk = true;
                return put < 0 ? -errno : -EIO;
            }
            foff += (uint64_t) put;
            got -= put;
        }
    }
    return 0;
}

/* Moves the piece [off, off + len) of the body from the socket into the
 * disk when it starts with data.  Returns 1 when it did, 0 when the piece
 * is to go through a buffer (it starts with zeros, or dev is not a VHD:
 * then sp is closed), or -1 after api_fail(). */
static int
splice_piece(struct import_job *j, struct splicer *sp, struct ie_writer *w,
             struct blockdev *dev, uint64_t off, uint64_t len)
{
    struct api_ctx *ctx = &j->call.ctx;
    bool data, disk;
    int rc = peek_is_data(sp->sock, &data);

    if (rc) {
        return ie_body_error(&j->call, rc);
    }
    if (!data || len % VHD_SECTOR_SIZE) {
        return 0;
    }
    /* The device is one thread's at a time: the writer must be done with
     * the previous piece. */
    if (ie_writer_wait(w, ctx)) {
        return -1;
    }
    while (len) {
        uint64_t foff, n;
        int fd;

        rc = blockdev_vhd_map_write(dev, off, len, &fd, &foff, &n);
        if (rc == -EOPNOTSUPP) {
            /* Not a VHD (a raw SR): the same for every piece, and this
             * one has not started, since dev never changes. */
            splicer_close(sp);
            return 0;
        } else if (rc) {
            return api_fail_internal(ctx, "writing the disk at %" PRIu64
                                     ": %s", off, strerror(-rc));
        }
        rc = splice_range(sp, fd, foff, n, &disk);
        if (!rc) {
            /* Start writing the piece to the disk now (without waiting
             * for it): the import's final flush must make every byte
             * durable, and writeback that overlaps the transfer leaves it
             * little to do instead of gigabytes of dirty page cache.  An
             * error here shows again in that flush. */
            sync_file_range(fd, (off64_t) foff, (off64_t) n,
                            SYNC_FILE_RANGE_WRITE);
        }
        if (rc && disk) {
            return api_fail_internal(ctx, "writing the disk at %" PRIu64
                                     ": %s", off, strerror(-rc));
        } else if (rc) {
            return ie_body_error(&j->call, rc);
        }
        off += n;
        len -= n;
    }
    return 1;
}

/* Reads exactly n body bytes from the stream, past the body reader (which
 * no longer counts what went by splice()). */
static int
read_piece(struct import_job *j, char *buf, size_t n)
{
    while (n) {
        ssize_t got = http_stream_read_wait(j->s, buf, n, IE_IO_TIMEOUT_MS);
        if (got <= 0) {
            return ie_body_error(&j->call, got ? (int) got : -EPIPE);
        }
        buf += got;
        n -= (size_t) got;
    }
    return 0;
}

static int
import_raw(struct import_job *j, struct http_body_reader *r,
           struct blockdev *dev, char *buf0)
{
    struct api_ctx *ctx = &j->call.ctx;
    struct ie_writer *w = ie_writer_start(ctx, dev);
    uint64_t off = 0, total = j->req.body_chunked ? dev->size
                                                   : j->req.body_length;
    char *bufs[2] = { buf0, xmalloc(IO_SIZE) };
    struct splicer sp = { -1, { -1, -1 }, 0 };
    bool splicing = false;
    int k = 0, rc = -1;

    if (!w) {
        goto out;
    }
    for (;;) {
        char *buf = bufs[k];
        size_t have = 0;
        ssize_t got = 0;

        if (splicing && sp.sock >= 0) {
            uint64_t left = j->req.body_length - off;
            size_t n = (size_t) MIN(left, (uint64_t) IO_SIZE);
            int done;

            if (!left) {
                rc = 0;
                goto out;
            }
            if (off + n > dev->size) {
                char min[32];
                snprintf(min, sizeof min, "%" PRIu64, off + n);
                api_fail(ctx, ERR_VDI_TOO_SMALL, j->vdi_ref, min);
                goto out;
            }
            done = splice_piece(j, &sp, w, dev, off, n);
            if (done < 0) {
                goto out;
            } else if (!done) {
                if (read_piece(j, buf, n)
                    || ie_writer_submit(w, ctx, buf, off, n)) {
                    goto out;
                }
                k ^= 1;
            }
            off += n;
            if (ie_progress(&j->call, off, total)) {
                goto out;
            }
            continue;
        } else if (splicing) {
            /* Not a VHD after all: the rest through buffers, still past
             * the body reader. */
            uint64_t left = j->req.body_length - off;
            size_t n = (size_t) MIN(left, (uint64_t) IO_SIZE);

            if (!left) {
                rc = 0;
                goto out;
            }
            if (read_piece(j, buf, n)
                || ie_writer_submit(w, ctx, buf, off, n)) {
                goto out;
            }
            k ^= 1;
            off += n;
            if (ie_progress(&j->call, off, total)) {
                goto out;
            }
            continue;
        }

        /* Fill a whole buffer, so zero detection sees aligned runs. */
        while (have < IO_SIZE) {
            got = http_body_read(r, buf + have, IO_SIZE - have);
            if (got <= 0) {
                break;
            }
            have += got;
        }
        if (got < 0) {
            ie_body_error(&j->call, (int) got);
            goto out;
        }
        if (have) {
            if (off + have > dev->size) {
                char min[32];
                snprintf(min, sizeof min, "%" PRIu64, off + have);
                api_fail(ctx, ERR_VDI_TOO_SMALL, j->vdi_ref, min);
                goto out;
            }
            /* The other buffer is free once this is accepted. */
            if (ie_writer_submit(w, ctx, buf, off, have)) {
                goto out;
            }
            k ^= 1;
            off += have;
            if (ie_progress(&j->call, off, total)) {
                goto out;
            }
        }
        if (got == 0) {
            rc = 0;
            goto out;
        }
        /* The first piece went through the body reader, which took the
         * bytes the server had read past the request head (a part of its
         * input buffer, far less than a piece); from here on the body
         * is on the socket only, and a Content-Length body was checked
         * against the disk's size before the transfer started. */
        if (have == IO_SIZE && off < j->req.body_length
            && splicer_open(&sp, j)) {
            splicing = true;
        }
    }
out:
    /* A write error counts only if nothing failed first. */
    if (ie_writer_finish(w, ctx)) {
        rc = -1;
    }
    splicer_close(&sp);
    free(bufs[1]);
    return rc;
}

/* Skips body bytes up to the stream offset want. */
static int
skip_to(struct import_job *j, struct http_body_reader *r, char *buf,
        uint64_t *pos, uint64_t want)
{
    while (*pos < want) {
        size_t k = (size_t) MIN(want - *pos, (uint64_t) IO_SIZE);
        int rc = http_body_read_full(r, buf, k);
        if (rc) {
            return ie_body_error(&j->call, rc);
        }
        *pos += k;
    }
    return 0;
}

struct vhd_block_ref {
    uint64_t offset;            /* in the stream, bytes */
    uint32_t index;
};

static int
cmp_block_ref(const void *a_, const void *b_)
{
    const struct vhd_block_ref *a = a_, *b = b_;

    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

/* A VHD stream: footer copy, dynamic header, BAT, then the blocks in the
 * order they lie in the file (anything in between is skipped); each
 * allocated block's sectors whose bitmap bit is set are written. */
static int
import_vhd(struct import_job *j, struct http_body_reader *r,
           struct blockdev *dev, char *buf)
{
    struct ie_call *c = &j->call;
    unsigned char footer[512], header[1024], *bat = NULL, *bitmap = NULL;
    struct vhd_block_ref *blocks = NULL;
    uint64_t pos = 0, data_offset, table_offset, size, done = 0;
    uint32_t max_entries, block_size, type, bitmap_bytes;
    size_t n_blocks = 0;
    int rc = -1;

    if (http_body_read_full(r, footer, sizeof footer)) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR_PREMATURE_EOF);
        goto out;
    }
    pos = 512;
    type = get_be32(footer + 60);
    if (memcmp(footer, "conectix", 8)
        || vhd_checksum(footer, 512, 64) != get_be32(footer + 64)) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR, "not a VHD stream (bad footer)");
        goto out;
    }
    if (type != VHD_TYPE_DYNAMIC && type != VHD_TYPE_DIFF) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR, "only dynamic and differencing "
                 "VHD streams can be imported");
        goto out;
    }
    size = get_be64(footer + 48);
    data_offset = get_be64(footer + 16);
    if (size > dev->size) {
        char min[32];
        snprintf(min, sizeof min, "%" PRIu64, size);
        api_fail(&c->ctx, ERR_VDI_TOO_SMALL, j->vdi_ref, min);
        goto out;
    }
    if (data_offset < pos || skip_to(j, r, buf, &pos, data_offset)) {
        if (!c->ctx.error) {
            api_fail(&c->ctx, ERR_IMPORT_ERROR, "bad VHD header offset");
        }
        goto out;
    }
    if (http_body_read_full(r, header, sizeof header)) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR_PREMATURE_EOF);
        goto out;
    }
    pos += sizeof header;
    table_offset = get_be64(header + 16);
    max_entries = get_be32(header + 28);
    block_size = get_be32(header + 32);
    if (memcmp(header, "cxsparse", 8)
        || vhd_checksum(header, 1024, 36) != get_be32(header + 36)
        || block_size < 512 || block_size > (256u << 20)
        || (block_size & (block_size - 1))
        || (uint64_t) max_entries * block_size < size
        || table_offset < pos) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR, "bad VHD dynamic header");
        goto out;
    }
    if (skip_to(j, r, buf, &pos, table_offset)) {
        goto out;
    }
    bat = xmalloc((size_t) max_entries * 4 + 1);
    if (http_body_read_full(r, bat, (size_t) max_entries * 4)) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR_PREMATURE_EOF);
        goto out;
    }
    pos += (uint64_t) max_entries * 4;
    blocks = xcalloc(max_entries + 1, sizeof *blocks);
    for (uint32_t i = 0; i < max_entries; i++) {
        uint32_t e = get_be32(bat + 4 * i);
        if (e != UINT32_MAX && (uint64_t) i * block_size < size) {
            blocks[n_blocks].offset = (uint64_t) e * 512;
            blocks[n_blocks].index = i;
            n_blocks++;
        }
    }
    qsort(blocks, n_blocks, sizeof *blocks, cmp_block_ref);
    bitmap_bytes = (block_size / 512 / 8 + 511) / 512 * 512;
    bitmap = xmalloc(bitmap_bytes);
    /* What the VDI held before is replaced: sectors the stream does not
     * carry read as zeros afterwards. */
    if (dev->ops->write_zeroes) {
        int zr = dev->ops->write_zeroes(dev, 0, dev->size);
        if (zr) {
            api_fail_internal(&c->ctx, "clearing the disk: %s",
                              strerror(-zr));
            goto out;
        }
    }
    for (size_t b = 0; b < n_blocks; b++) {
        uint64_t voff = (uint64_t) blocks[b].index * block_size;
        uint64_t vlen = MIN((uint64_t) block_size, size - voff);
        uint64_t sec = 0, nsec = (vlen + 511) / 512;

        if (blocks[b].offset < pos) {
            api_fail(&c->ctx, ERR_IMPORT_ERROR, "VHD blocks overlap");
            goto out;
        }
        if (skip_to(j, r, buf, &pos, blocks[b].offset)) {
            goto out;
        }
        if (http_body_read_full(r, bitmap, bitmap_bytes)) {
            api_fail(&c->ctx, ERR_IMPORT_ERROR_PREMATURE_EOF);
            goto out;
        }
        pos += bitmap_bytes;
        /* The block's data, in pieces of at most IO_SIZE. */
        for (uint64_t boff = 0; boff < block_size; ) {
            size_t k = (size_t) MIN((uint64_t) IO_SIZE, block_size - boff);
            uint64_t first = boff / 512, last = (boff + k) / 512;
            if (http_body_read_full(r, buf, k)) {
                api_fail(&c->ctx, ERR_IMPORT_ERROR_PREMATURE_EOF);
                goto out;
            }
            pos += k;
            for (sec = first; sec < last && sec < nsec; ) {
                uint64_t run = sec;
                bool set = bitmap[sec / 8] & (0x80 >> (sec % 8));
                while (run < last && run < nsec
                       && (bool) (bitmap[run / 8] & (0x80 >> (run % 8)))
                          == set) {
                    run++;
                }
                if (set && ie_write_sparse(&c->ctx, dev,
                                        buf + (sec - first) * 512,
                                        voff + sec * 512,
                                        (size_t) MIN((run - sec) * 512,
                                                     vlen - sec * 512))) {
                    goto out;
                }
                sec = run;
            }
            boff += k;
            done += k;
            if (ie_progress(c, done, (uint64_t) n_blocks * block_size)) {
                goto out;
            }
        }
    }
    /* The rest (the footer) is read and dropped. */
    for (;;) {
        ssize_t got = http_body_read(r, buf, IO_SIZE);
        if (got == 0) {
            break;
        } else if (got < 0) {
            ie_body_error(c, (int) got);
            goto out;
        }
    }
    rc = 0;
out:
    free(bat);
    free(bitmap);
    free(blocks);
    return rc;
}

static void *
import_thread(void *j_)
{
    struct import_job *j = j_;
    struct blockdev *dev = storage_vdi_blockdev(j->h);
    struct http_body_reader *r = http_body_reader_create(j->s, &j->req,
                                                         IE_IO_TIMEOUT_MS);
    char *buf = xmalloc(IO_SIZE);
    char hdr[96];
    int rc;

    rc = j->format == FORMAT_RAW ? import_raw(j, r, dev, buf)
                                 : import_vhd(j, r, dev, buf);
    if (!rc && dev->ops->flush && (rc = dev->ops->flush(dev))) {
        api_fail_internal(&j->call.ctx, "flushing the disk: %s",
                          strerror(-rc));
    }
    if (j->expect_continue) {
        if (j->call.ctx.error) {
            ie_stream_respond_error(&j->call, j->s);
        } else {
            http_stream_respond(j->s, 200, NULL,
                                ie_task_header(&j->call, hdr, sizeof hdr),
                                "", 0, 10000);
        }
    }
    http_body_reader_destroy(r);
    free(buf);
    import_job_free(j);
    return NULL;
}

static void
import_taken(struct http_stream *s, void *j_)
{
    struct import_job *j = j_;

    if (ie_start_upload(&j->call, s, &j->s, import_thread, j)) {
        import_job_free(j);
    }
}

static void
import_raw_vdi(struct http_exchange *hx, struct xapi *x)
{
    const struct http_request *req = http_exchange_request(hx);
    struct import_job *j = xcalloc(1, sizeof *j);
    char *vdi = NULL, *format = NULL, *headers = NULL, uuid[40];
    int64_t size;

    if (ie_begin(&j->call, x, hx, "VDI.import_raw",
                 "http/put_import_raw_vdi")) {
        free(j);
        return;
    }
    vdi = ie_param(req, "vdi");
    format = ie_param(req, "format");
    if (!vdi) {
        api_fail(&j->call.ctx, ERR_INVALID_VALUE, "vdi", "");
        goto fail;
    }
    if (!format || !strcasecmp(format, "raw")) {
        j->format = FORMAT_RAW;
    } else if (!strcasecmp(format, "vhd")) {
        j->format = FORMAT_VHD;
    } else {
        api_fail(&j->call.ctx, ERR_INVALID_VALUE, "format", format);
        goto fail;
    }
    if (find_vdi(&j->call, vdi, j->vdi_ref, &size, uuid)) {
        goto fail;
    }
    if (req->body_streamed && !req->body_chunked && j->format == FORMAT_RAW
        && req->body_length > (uint64_t) size) {
        char min[32];
        snprintf(min, sizeof min, "%" PRIu64, req->body_length);
        api_fail(&j->call.ctx, ERR_VDI_TOO_SMALL, j->vdi_ref, min);
        goto fail;
    }
    if (storage_vdi_open(&j->call.ctx, j->vdi_ref, true, NULL, &j->h)) {
        goto fail;
    }
    j->req.body_streamed = req->body_streamed;
    j->req.body_chunked = req->body_chunked;
    j->req.body_length = req->body_length;
    if (!req->body_streamed) {
        /* A body the server read itself (an empty one): nothing to wait
         * for on the stream. */
        j->req.body = xmemdup0(req->body ? req->body : "", req->body_len);
        j->req.body_len = req->body_len;
    }
    j->expect_continue = req->expect_continue;
    j->plain = !req->is_tls;
    api_task_set_progress(&j->call.ctx, 0);
    if (j->expect_continue) {
        http_respond_takeover(hx, 100, NULL, import_taken, j);
    } else {
        headers = xasprintf("task-id: %s\r\nContent-Type: "
                            "application/octet-stream\r\nConnection: close",
                            j->call.task);
        http_respond_takeover(hx, 200, headers, import_taken, j);
    }
    j = NULL;
    goto out;
fail:
    ie_respond_error(&j->call, hx);
    import_job_free(j);
out:
    free(vdi);
    free(format);
    free(headers);
}

void
vdi_io_http_handler(struct http_exchange *hx, struct xapi *x)
{
    const struct http_request *req = http_exchange_request(hx);

    if (!strcmp(req->path, "/import_raw_vdi")) {
        if (strcmp(req->method, "PUT") && strcmp(req->method, "POST")) {
            respond_text(hx, 405, "Allow: PUT", "method not allowed\n");
            return;
        }
        import_raw_vdi(hx, x);
    } else {
        if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
            respond_text(hx, 405, "Allow: GET, HEAD", "method not allowed\n");
            return;
        }
        export_raw_vdi(hx, x);
    }
}
