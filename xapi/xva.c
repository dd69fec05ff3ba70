/* xva.c — GET /export and PUT /import: a VM and its disks as one stream
 * in XenServer's XVA format (docs/xva.md), so that a VM exported here
 * imports into XenServer and the reverse.
 *
 * An XVA is a tar archive: first "ova.xml", an XML-RPC <value> holding
 * the export's version and the database records of the VM and what it
 * uses (VBDs, VDIs, SRs, VIFs, networks), with refs replaced by ids
 * "Ref:N"; then, for each disk in the order of its id, its data in 1 MiB
 * chunks "Ref:N/00000000", each followed by "Ref:N/00000000.checksum"
 * (SHA-1, in hex).  Chunks of zeros are left out except the first and the
 * last.
 *
 * Both directions run on a thread of their own that owns the taken-over
 * connection (import-export.h); the disks go through their block devices
 * (storage.h).  An import creates every record in one transaction once
 * the disks exist, and on any failure destroys what it created, so a
 * failed import leaves nothing behind. */
#include <config.h>
#include "import-export.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/evp.h>
#ifdef HAVE_ZLIB
#include <zlib.h>
#endif

#include "codec.h"
#include "storage.h"
#include "storage/blockdev.h"
#include "storage/vhd.h"
#include "types.h"

#define CHUNK_SIZE (1024u * 1024)
#define TAR_BLOCK 512
/* Largest ova.xml accepted. */
#define MAX_OVA_XML (64u * 1024 * 1024)
/* Largest disk chunk accepted on import (XenServer writes 1 MiB). */
#define MAX_CHUNK (64u * 1024 * 1024)
/* What we write in the version record: export format 2 (inline
 * checksums), and an xapi version no XenServer release is below, since a
 * XenServer refuses exports whose xapi version is above its own. */
#define EXPORT_VSN 2
#define XAPI_VSN_MAJOR 1
#define XAPI_VSN_MINOR 1
/* What we accept: any format up to 2 and xapi versions up to major 2
 * (XenServer's exports carry 1.x or 2.x). */
#define MAX_IMPORT_XAPI_MAJOR 2

/* ---- tar (POSIX ustar) ---- */

static void
tar_octal(char *field, size_t width, uint64_t v)
{
    /* width - 1 octal digits and a NUL (callers keep v in range). */
    for (size_t i = width - 1; i-- > 0; v >>= 3) {
        field[i] = (char) ('0' + (v & 7));
    }
    field[width - 1] = '\0';
}

static void
tar_header(unsigned char h[TAR_BLOCK], const char *name, uint64_t size)
{
    unsigned sum = 0;

    memset(h, 0, TAR_BLOCK);
    snprintf((char *) h, 100, "%s", name);
    tar_octal((char *) h + 100, 8, 0644);
    tar_octal((char *) h + 108, 8, 0);
    tar_octal((char *) h + 116, 8, 0);
    tar_octal((char *) h + 124, 12, size);
    tar_octal((char *) h + 136, 12, (uint64_t) time(NULL));
    memset(h + 148, ' ', 8);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    for (int i = 0; i < TAR_BLOCK; i++) {
        sum += h[i];
    }
    snprintf((char *) h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

static uint64_t
tar_parse_number(const unsigned char *f, size_t n, bool *ok)
{
    uint64_t v = 0;
    size_t i = 0;

    if (f[0] & 0x80) {
        /* GNU base-256 for large sizes. */
        v = f[0] & 0x7f;
        for (i = 1; i < n; i++) {
            if (v >> 56) {
                *ok = false;
                return 0;
            }
            v = v << 8 | f[i];
        }
        return v;
    }
    while (i < n && f[i] == ' ') {
        i++;
    }
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v >> 60) {
            *ok = false;
            return 0;
        }
        v = v * 8 + (f[i] - '0');
    }
    if (i < n && f[i] != ' ' && f[i] != '\0') {
        *ok = false;
    }
    return v;
}

/* Parses a header block: 1 with name and size, 0 for an end-of-archive
 * (zero) block, -1 if it is not a valid header. */
static int
tar_parse_header(const unsigned char h[TAR_BLOCK], char *name, size_t size,
                 uint64_t *ret_size)
{
    unsigned sum = 0;
    int ssum = 0;
    bool ok = true, zero = true;
    uint64_t want;

    for (int i = 0; i < TAR_BLOCK; i++) {
        unsigned char c = (i >= 148 && i < 156) ? ' ' : h[i];
        sum += c;
        ssum += (signed char) c;
        zero = zero && !h[i];
    }
    if (zero) {
        return 0;
    }
    want = tar_parse_number(h + 148, 8, &ok);
    if (!ok || (want != sum && (int64_t) want != ssum)) {
        return -1;
    }
    *ret_size = tar_parse_number(h + 124, 12, &ok);
    if (!ok) {
        return -1;
    }
    /* Only POSIX ustar has a name prefix; GNU tar ("ustar  ") keeps
     * times there. */
    if (!memcmp(h + 257, "ustar\0", 6) && h[345]) {
        snprintf(name, size, "%.155s/%.100s", (const char *) h + 345,
                 (const char *) h);
    } else {
        snprintf(name, size, "%.100s", (const char *) h);
    }
    return 1;
}

/* ---- checksums ---- */

static void
hex_lower(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void
sha1_hex(const void *p, size_t n, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    if (!EVP_Digest(p, n, md, &len, EVP_sha1(), NULL) || len != 20) {
        xabort("xva: SHA-1 failed");
    }
    hex_lower(md, 20, out);
}

/* XXH64 with seed 0, which newer XenServers write as ".xxhash" files
 * ("%016LX"): the published algorithm, written from its description. */
#define XXP1 11400714785074694791ull
#define XXP2 14029467366897019727ull
#define XXP3 1609587929392839161ull
#define XXP4 9650029242287828579ull
#define XXP5 2870177450012600261ull

static uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t
le64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static uint32_t
le32(const unsigned char *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}

static uint64_t
xxh_round(uint64_t acc, uint64_t in)
{
    acc += in * XXP2;
    acc = rotl64(acc, 31);
    return acc * XXP1;
}

static uint64_t
xxh_merge(uint64_t acc, uint64_t v)
{
    acc ^= xxh_round(0, v);
    return acc * XXP1 + XXP4;
}

static uint64_t
xxh64(const void *data, size_t len)
{
    const unsigned char *p = data, *end = p + len;
    uint64_t h;

    if (len >= 32) {
        uint64_t v1 = XXP1 + XXP2, v2 = XXP2, v3 = 0, v4 = -XXP1;
        while (p + 32 <= end) {
            v1 = xxh_round(v1, le64(p));
            v2 = xxh_round(v2, le64(p + 8));
            v3 = xxh_round(v3, le64(p + 16));
            v4 = xxh_round(v4, le64(p + 24));
            p += 32;
        }
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        h = xxh_merge(h, v4);
    } else {
        h = XXP5;
    }
    h += len;
    while (p + 8 <= end) {
        h ^= xxh_round(0, le64(p));
        h = rotl64(h, 27) * XXP1 + XXP4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t) le32(p) * XXP1;
        h = rotl64(h, 23) * XXP2 + XXP3;
        p += 4;
    }
    while (p < end) {
        h ^= *p * XXP5;
        h = rotl64(h, 11) * XXP1;
        p++;
    }
    h ^= h >> 33;
    h *= XXP2;
    h ^= h >> 29;
    h *= XXP3;
    h ^= h >> 32;
    return h;
}

/* ---- the objects of an export ---- */

struct xva_entry {
    char ref[48];               /* in this database */
    char id[16];                /* "Ref:N" in the export */
    int cls;
};

struct xva_table {
    struct xva_entry *e;
    size_t n, cap;
};

static const char *
table_id(const struct xva_table *t, const char *ref)
{
    for (size_t i = 0; i < t->n; i++) {
        if (!strcmp(t->e[i].ref, ref)) {
            return t->e[i].id;
        }
    }
    return NULL;
}

static void
table_add(struct xva_table *t, struct db *db, int cls, const char *ref)
{
    if (!ref || table_id(t, ref) || !db_lookup(db, cls, ref)) {
        return;
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->e = xrealloc(t->e, t->cap * sizeof *t->e);
    }
    snprintf(t->e[t->n].ref, sizeof t->e[t->n].ref, "%s", ref);
    snprintf(t->e[t->n].id, sizeof t->e[t->n].id, "Ref:%zu", t->n);
    t->e[t->n].cls = cls;
    t->n++;
}

static const char *
row_str(const struct db_row *row, int f)
{
    return row->fields[f]->u.str.s;
}

/* Walks from the VM to what the export holds, in XenServer's order:
 * the VM, its VIFs and their networks, its VBDs and their VDIs and SRs,
 * its guest metrics.  Needs the read lock. */
static void
table_fill(struct xva_table *t, struct db *db, const struct db_row *vm)
{
    const struct value *vifs = vm->fields[F_VM_VIFs];
    const struct value *vbds = vm->fields[F_VM_VBDs];

    table_add(t, db, CLS_VM, vm->ref);
    for (size_t i = 0; i < vifs->u.arr.n; i++) {
        const struct db_row *vif = db_lookup(db, CLS_VIF,
                                             vifs->u.arr.items[i]->u.str.s);
        if (vif) {
            table_add(t, db, CLS_VIF, vif->ref);
            table_add(t, db, CLS_network, row_str(vif, F_VIF_network));
        }
    }
    for (size_t i = 0; i < vbds->u.arr.n; i++) {
        const struct db_row *vbd = db_lookup(db, CLS_VBD,
                                             vbds->u.arr.items[i]->u.str.s);
        const struct db_row *vdi;
        if (!vbd) {
            continue;
        }
        table_add(t, db, CLS_VBD, vbd->ref);
        vdi = vbd->fields[F_VBD_empty]->u.b
              ? NULL : db_lookup(db, CLS_VDI, row_str(vbd, F_VBD_VDI));
        if (vdi) {
            table_add(t, db, CLS_VDI, vdi->ref);
            table_add(t, db, CLS_SR, row_str(vdi, F_VDI_SR));
        }
    }
    table_add(t, db, CLS_VM_guest_metrics, row_str(vm, F_VM_guest_metrics));
}

/* The record of row as exported: refs to objects of the export become
 * their ids, other refs OpaqueRef:NULL (sets drop them), operations are
 * cleared, and the VM is a halted, plain VM (not a snapshot), as
 * XenServer exports it. */
static struct value *
export_record(const struct db_row *row, const struct xva_table *t)
{
    const struct api_class *c = &api_classes[row->cls];
    struct value *rec = value_struct_static(c->n_fields);

    for (size_t i = 0; i < c->n_fields; i++) {
        const struct api_field *fd = &c->fields[i];
        const struct value *v = row->fields[i];
        struct value *out;

        if (!strcmp(fd->name, "current_operations")) {
            out = value_empty_struct();
        } else if (!strcmp(fd->name, "allowed_operations")) {
            out = value_empty_array();
        } else if (fd->type->kind == API_REF) {
            const char *id = table_id(t, v->u.str.s);
            out = id ? value_string(id) : value_null_ref();
        } else if (fd->type->kind == API_SET
                   && fd->type->elem->kind == API_REF) {
            out = value_array(v->u.arr.n);
            for (size_t k = 0; k < v->u.arr.n; k++) {
                const char *id = table_id(t, v->u.arr.items[k]->u.str.s);
                if (id) {
                    value_array_append(out, value_string(id));
                }
            }
        } else {
            out = value_ref((struct value *) v);
        }
        if (row->cls == CLS_VM) {
            if (!strcmp(fd->name, "power_state")) {
                value_unref(out);
                out = value_string("Halted");
            } else if (!strcmp(fd->name, "is_a_snapshot")) {
                value_unref(out);
                out = value_false();
            } else if (!strcmp(fd->name, "snapshot_time")) {
                value_unref(out);
                out = value_datetime_secs(0);
            } else if (!strcmp(fd->name, "transportable_snapshot_id")) {
                value_unref(out);
                out = value_empty_string();
            }
        } else if ((row->cls == CLS_VBD || row->cls == CLS_VIF)
                   && !strcmp(fd->name, "currently_attached")) {
            value_unref(out);
            out = value_false();
        }
        value_struct_put_static(rec, fd->name, out);
    }
    return rec;
}

static void
put_member_string(struct ds *ds, const char *name, const char *s)
{
    struct value *v = value_string(s);

    ds_put_fmt(ds, "<member><name>%s</name>", name);
    xmlrpc_write_value(ds, v);
    ds_put_cstr(ds, "</member>");
    value_unref(v);
}

/* ova.xml for the objects of t, in XenServer's class order. */
static char *
ova_xml(struct db *db, const struct xva_table *t, const char *host_ref)
{
    static const int order[] = {
        CLS_VM, CLS_VM_guest_metrics, CLS_VBD, CLS_VIF, CLS_network,
        CLS_VDI, CLS_SR,
    };
    const struct db_row *host = db_lookup(db, CLS_host, host_ref);
    const struct value *sw = host ? host->fields[F_host_software_version]
                                  : NULL;
    const char *pv = sw ? value_struct_get_string(sw, "product_version")
                        : NULL;
    const char *pb = sw ? value_struct_get_string(sw, "product_brand")
                        : NULL;
    const char *bn = sw ? value_struct_get_string(sw, "build_number") : NULL;
    struct ds ds = DS_EMPTY;
    char date[16];
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%d", &tm);
    ds_put_cstr(&ds, "<value><struct><member><name>version</name>"
                     "<value><struct>");
    put_member_string(&ds, "hostname",
                      host ? row_str(host, F_host_hostname) : "");
    put_member_string(&ds, "date", date);
    put_member_string(&ds, "product_version", pv ? pv : "");
    put_member_string(&ds, "product_brand", pb ? pb : "");
    put_member_string(&ds, "build_number", bn ? bn : "");
    ds_put_fmt(&ds, "<member><name>xapi_major</name><value><i4>%d</i4>"
               "</value></member><member><name>xapi_minor</name><value>"
               "<i4>%d</i4></value></member><member><name>export_vsn"
               "</name><value><i4>%d</i4></value></member>",
               XAPI_VSN_MAJOR, XAPI_VSN_MINOR, EXPORT_VSN);
    ds_put_cstr(&ds, "</struct></value></member><member><name>objects"
                     "</name><value><array><data>");
    for (size_t k = 0; k < ARRAY_SIZE(order); k++) {
        for (size_t i = 0; i < t->n; i++) {
            const struct db_row *row;
            struct value *rec;
            if (t->e[i].cls != order[k]) {
                continue;
            }
            row = db_lookup(db, t->e[i].cls, t->e[i].ref);
            if (!row) {
                continue;
            }
            rec = export_record(row, t);
            ds_put_cstr(&ds, "<value><struct>");
            put_member_string(&ds, "class", api_classes[row->cls].name);
            put_member_string(&ds, "id", t->e[i].id);
            ds_put_cstr(&ds, "<member><name>snapshot</name>");
            xmlrpc_write_value(&ds, rec);
            ds_put_cstr(&ds, "</member></struct></value>");
            value_unref(rec);
        }
    }
    ds_put_cstr(&ds, "</data></array></value></member></struct></value>");
    return ds_steal(&ds);
}

/* ---- export ---- */

struct export_disk {
    char id[16];
    char ref[48];
    uint64_t size;
};

struct export_job {
    struct ie_call call;
    char vm_ref[48];
    char *ova;
    struct export_disk *disks;
    size_t n_disks;
    uint64_t total, done;
    bool marked;                /* "export" in VM.current_operations */
    struct http_stream *s;
    char *buf;
#ifdef HAVE_ZLIB
    bool gzip;                  /* use_compression: the tar is gzipped */
    z_stream z;
    unsigned char *zout;
#endif
};

#define ZBUF_SIZE (256u * 1024)

static int
cmp_disk(const void *a_, const void *b_)
{
    const struct export_disk *a = a_, *b = b_;

    return strcmp(a->id, b->id);
}

/* Adds or removes our task's operation in VM.current_operations. */
static void
vm_mark(struct ie_call *c, const char *vm_ref, const char *op)
{
    struct db *db = c->x->db;
    struct db_txn *txn = db_begin(db);
    const struct db_row *vm = db_lookup(db, CLS_VM, vm_ref);

    if (vm) {
        struct value *ops = value_copy_shallow(
            vm->fields[F_VM_current_operations]);
        if (op) {
            value_struct_set(ops, c->task, value_string(op));
        } else {
            value_struct_remove(ops, c->task);
        }
        db_update(txn, CLS_VM, vm_ref, F_VM_current_operations, ops);
        lifecycle_refresh_allowed(txn, vm_ref, op != NULL);
    }
    db_commit(txn);
}

static void
export_job_free(struct export_job *j)
{
    if (!j) {
        return;
    }
    if (j->marked) {
        vm_mark(&j->call, j->vm_ref, NULL);
    }
    ie_end(&j->call, NULL);
    http_stream_close(j->s);
    free(j->ova);
    free(j->disks);
    free(j->buf);
#ifdef HAVE_ZLIB
    if (j->gzip) {
        deflateEnd(&j->z);
        free(j->zout);
    }
#endif
    free(j);
}

static int
export_send(struct export_job *j, const void *p, size_t n)
{
    int rc = http_stream_write_all(j->s, p, n, IE_IO_TIMEOUT_MS);

    if (rc) {
        /* A client going away is not the daemon's fault: no error log,
         * the task (logged at info by ie_end) says it. */
        char msg[96];
        snprintf(msg, sizeof msg, "the client stopped reading: %s",
                 strerror(-rc));
        return api_fail(&j->call.ctx, ERR_INTERNAL_ERROR, msg);
    }
    return 0;
}

#ifdef HAVE_ZLIB
/* Compresses p[0..n) (or, with finish, the end of the stream) into the
 * response. */
static int
export_deflate(struct export_job *j, const void *p, size_t n, bool finish)
{
    j->z.next_in = (unsigned char *) p;
    j->z.avail_in = (uInt) n;
    do {
        int zr;
        j->z.next_out = j->zout;
        j->z.avail_out = ZBUF_SIZE;
        zr = deflate(&j->z, finish ? Z_FINISH : Z_NO_FLUSH);
        if (zr == Z_STREAM_ERROR) {
            return api_fail_internal(&j->call.ctx, "gzip failed");
        }
        if (j->z.avail_out < ZBUF_SIZE
            && export_send(j, j->zout, ZBUF_SIZE - j->z.avail_out)) {
            return -1;
        }
    } while (j->z.avail_out == 0 || j->z.avail_in);
    return 0;
}
#endif

static int
export_put(struct export_job *j, const void *p, size_t n)
{
#ifdef HAVE_ZLIB
    if (j->gzip) {
        return export_deflate(j, p, n, false);
    }
#endif
    return export_send(j, p, n);
}

/* One tar member: header, data, padding to the block size. */
static int
export_member(struct export_job *j, const char *name, const void *data,
              size_t n)
{
    static const unsigned char zeros[TAR_BLOCK];
    unsigned char h[TAR_BLOCK];

    tar_header(h, name, n);
    if (export_put(j, h, sizeof h) || export_put(j, data, n)) {
        return -1;
    }
    return n % TAR_BLOCK ? export_put(j, zeros, TAR_BLOCK - n % TAR_BLOCK)
                         : 0;
}

static int
export_disk(struct export_job *j, const struct export_disk *d)
{
    struct storage_vdi_handle *h = NULL;
    struct ie_block_map map = { NULL, 0, 0 };
    struct blockdev *dev;
    uint64_t off = 0;
    unsigned chunk = 0;
    int rc = -1;

    if (storage_vdi_open(&j->call.ctx, d->ref, false, NULL, &h)) {
        goto out;
    }
    dev = storage_vdi_blockdev(h);
    /* Where the disk holds no data there is nothing to read: an empty
     * 100 GiB disk exports in a moment. */
    ie_block_map_build(&map, storage_vdi_attachment(h), d->size);
    for (off = 0; off < d->size; off += CHUNK_SIZE, chunk++) {
        size_t len = (size_t) MIN((uint64_t) CHUNK_SIZE, d->size - off);
        bool last = off + len >= d->size;
        uint64_t b0 = off / VHD_DEFAULT_BLOCK_SIZE;
        uint64_t b1 = (off + len - 1) / VHD_DEFAULT_BLOCK_SIZE;
        char name[64], sum[41];
        int r;

        if (chunk != 0 && !last && !ie_block_map_test(&map, b0)
            && !ie_block_map_test(&map, b1)) {
            j->done += len;
            if (ie_progress(&j->call, j->done, j->total)) {
                goto out;
            }
            continue;
        }
        r = off + len <= dev->size ? dev->ops->read(dev, j->buf, off, len)
                                   : -EIO;

        if (r) {
            api_fail_internal(&j->call.ctx, "reading VDI %s at %" PRIu64
                              ": %s", d->ref, off, strerror(-r));
            goto out;
        }
        /* XenServer always writes the first and the last chunk: an
         * importer takes the chunk size from the first and knows the
         * disk is complete at the last. */
        if (chunk == 0 || last || !ie_all_zero(j->buf, len)) {
            snprintf(name, sizeof name, "%s/%08u", d->id, chunk);
            sha1_hex(j->buf, len, sum);
            if (export_member(j, name, j->buf, len)) {
                goto out;
            }
            snprintf(name, sizeof name, "%s/%08u.checksum", d->id, chunk);
            if (export_member(j, name, sum, 40)) {
                goto out;
            }
        }
        j->done += len;
        if (ie_progress(&j->call, j->done, j->total)) {
            goto out;
        }
    }
    rc = 0;
out:
    free(map.bits);
    storage_vdi_close(h);
    return rc;
}

static void *
export_thread(void *j_)
{
    struct export_job *j = j_;
    static const unsigned char end[2 * TAR_BLOCK];
    int one = 1;

    setsockopt(http_stream_fd(j->s), SOL_SOCKET, SO_KEEPALIVE, &one,
               sizeof one);
    j->buf = xmalloc(CHUNK_SIZE);
    if (export_member(j, "ova.xml", j->ova, strlen(j->ova))) {
        goto out;
    }
    for (size_t i = 0; i < j->n_disks; i++) {
        if (export_disk(j, &j->disks[i])) {
            goto out;
        }
    }
    if (export_put(j, end, sizeof end)) {
        goto out;
    }
#ifdef HAVE_ZLIB
    if (j->gzip) {
        export_deflate(j, NULL, 0, true);
    }
#endif
out:
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

static char *
lower(const char *s)
{
    char *l = xstrdup(s);

    for (char *p = l; *p; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            *p += 'a' - 'A';
        }
    }
    return l;
}

/* Checks the VM, collects its objects and disks, and marks it.  Returns 0
 * or -1 after api_fail(). */
static int
export_prepare(struct export_job *j, const char *ref, const char *uuid)
{
    struct ie_call *c = &j->call;
    struct db *db = c->x->db;
    struct xva_table t = { NULL, 0, 0 };
    const struct db_row *vm;
    const char *power;
    int rc = -1;

    db_read_lock(db);
    vm = ref ? db_lookup(db, CLS_VM, ref) : db_lookup_uuid(db, CLS_VM, uuid);
    if (!vm) {
        db_read_unlock(db);
        return ref ? api_fail_handle(&c->ctx, CLS_VM, ref)
                   : api_fail(&c->ctx, ERR_UUID_INVALID, "VM", uuid);
    }
    snprintf(j->vm_ref, sizeof j->vm_ref, "%s", vm->ref);
    power = row_str(vm, F_VM_power_state);
    if (vm->fields[F_VM_is_control_domain]->u.b) {
        api_fail(&c->ctx, ERR_OPERATION_NOT_ALLOWED,
                 "The control domain cannot be exported");
        goto out;
    }
    if (strcmp(power, "Halted")) {
        /* Running, paused and suspended VMs have state outside their
         * disks; XenServer exports only halted ones (and snapshots and
         * templates, which are always halted). */
        char *actual = lower(power);
        api_fail(&c->ctx, ERR_VM_BAD_POWER_STATE, vm->ref, "halted", actual);
        free(actual);
        goto out;
    }
    if (vm->fields[F_VM_current_operations]->u.st.n) {
        const struct value_member *m =
            &vm->fields[F_VM_current_operations]->u.st.m[0];
        api_fail(&c->ctx, ERR_OTHER_OPERATION_IN_PROGRESS, "VM", vm->ref,
                 m->v->u.str.s, m->name);
        goto out;
    }
    table_fill(&t, db, vm);
    j->ova = ova_xml(db, &t, c->x->host_ref);
    /* The disks to stream: those of the export's VBDs that are not CDs,
     * outside ISO SRs. */
    j->disks = xcalloc(t.n + 1, sizeof *j->disks);
    for (size_t i = 0; i < t.n; i++) {
        const struct db_row *vbd, *vdi, *sr;
        if (t.e[i].cls != CLS_VBD) {
            continue;
        }
        vbd = db_lookup(db, CLS_VBD, t.e[i].ref);
        if (!strcmp(row_str(vbd, F_VBD_type), "CD")
            || vbd->fields[F_VBD_empty]->u.b) {
            continue;
        }
        vdi = db_lookup(db, CLS_VDI, row_str(vbd, F_VBD_VDI));
        sr = vdi ? db_lookup(db, CLS_SR, row_str(vdi, F_VDI_SR)) : NULL;
        if (!vdi || (sr && !strcmp(row_str(sr, F_SR_content_type), "iso"))) {
            continue;
        }
        snprintf(j->disks[j->n_disks].id, sizeof j->disks[0].id, "%s",
                 table_id(&t, vdi->ref));
        snprintf(j->disks[j->n_disks].ref, sizeof j->disks[0].ref, "%s",
                 vdi->ref);
        j->disks[j->n_disks].size = vdi->fields[F_VDI_virtual_size]->u.i;
        j->total += j->disks[j->n_disks].size;
        j->n_disks++;
    }
    /* Disks go out in the order of their ids, as XenServer sends them and
     * expects them. */
    qsort(j->disks, j->n_disks, sizeof *j->disks, cmp_disk);
    rc = 0;
out:
    db_read_unlock(db);
    free(t.e);
    if (!rc) {
        vm_mark(c, j->vm_ref, "export");
        j->marked = true;
    }
    return rc;
}

static void
xva_export(struct http_exchange *hx, struct xapi *x)
{
    const struct http_request *req = http_exchange_request(hx);
    struct export_job *j = xcalloc(1, sizeof *j);
    char *ref = NULL, *uuid = NULL, *comp = NULL, *headers = NULL;

    if (ie_begin(&j->call, x, hx, "VM.export", "http/get_export")) {
        free(j);
        return;
    }
    ref = ie_param(req, "ref");
    uuid = ref ? NULL : ie_param(req, "uuid");
    comp = ie_param(req, "use_compression");
    if (!ref && !uuid) {
        api_fail(&j->call.ctx, ERR_INVALID_VALUE, "ref", "");
        goto fail;
    }
    if (comp && strcasecmp(comp, "false")) {
#ifdef HAVE_ZLIB
        if (!strcasecmp(comp, "true") || !strcasecmp(comp, "gzip")) {
            /* gzip at level 1: the disks dominate, and speed matters more
             * than the last percent (zeros compress well anyway). */
            if (deflateInit2(&j->z, 1, Z_DEFLATED, 15 + 16, 8,
                             Z_DEFAULT_STRATEGY) != Z_OK) {
                api_fail_internal(&j->call.ctx, "gzip cannot start");
                goto fail;
            }
            j->gzip = true;
            j->zout = xmalloc(ZBUF_SIZE);
        } else
#endif
        {
            /* zstd is not linked into this daemon (nor gzip, in a build
             * without zlib). */
            api_fail(&j->call.ctx, ERR_INVALID_VALUE, "use_compression",
                     comp);
            goto fail;
        }
    }
    if (export_prepare(j, ref, uuid)) {
        goto fail;
    }
    headers = xasprintf("task-id: %s\r\nContent-Type: "
                        "application/octet-stream\r\nContent-Disposition: "
                        "attachment; filename=\"export.xva\"\r\n"
                        "Connection: close", j->call.task);
    api_task_set_progress(&j->call.ctx, 0);
    /* No Content-Length: the length depends on which chunks hold data;
     * the end of the connection ends the archive, as with XenServer. */
    http_respond_takeover(hx, 200, headers, export_taken, j);
    j = NULL;
    goto out;
fail:
    ie_respond_error(&j->call, hx);
    export_job_free(j);
out:
    free(ref);
    free(uuid);
    free(comp);
    free(headers);
}

/* ---- import ---- */

struct import_obj {
    const char *cls;            /* borrowed from the parsed ova.xml */
    const char *id;
    struct value *snap;
    char ref[48];               /* what it became here, or "" */
    bool created;               /* a row we inserted (or a VDI) */
};

struct import_job {
    struct ie_call call;
    struct http_request req;
    bool expect_continue;
    bool restore, force;
    char sr[48];
    struct http_stream *s;
    struct http_body_reader *r;
    struct value *ova;
    struct import_obj *objs;
    size_t n_objs;
    int64_t export_vsn;
    char *buf;
    int64_t first_chunk_len;
    bool rows_created;
    unsigned char peek[2];      /* read ahead to find compression */
    size_t peek_off, peek_len;
    bool compressed;
#ifdef HAVE_ZLIB
    bool gzip;
    z_stream z;
    unsigned char *zin;
#endif
};

static void
import_job_free(struct import_job *j)
{
    if (!j) {
        return;
    }
    ie_end(&j->call, NULL);
    http_body_reader_destroy(j->r);
    http_stream_close(j->s);
    value_unref(j->ova);
    free(j->objs);
    free(j->buf);
    free(j->req.body);
#ifdef HAVE_ZLIB
    if (j->gzip) {
        inflateEnd(&j->z);
        free(j->zin);
    }
#endif
    free(j);
}

/* Body bytes as sent: the bytes read ahead first. */
static ssize_t
in_raw(struct import_job *j, void *buf, size_t n)
{
    if (j->peek_off < j->peek_len) {
        size_t k = MIN(n, j->peek_len - j->peek_off);
        memcpy(buf, j->peek + j->peek_off, k);
        j->peek_off += k;
        return (ssize_t) k;
    }
    return http_body_read(j->r, buf, n);
}

/* Up to n bytes of the archive (decompressed): > 0, 0 at its end, or a
 * negative errno value. */
static ssize_t
in_some(struct import_job *j, void *buf, size_t n)
{
#ifdef HAVE_ZLIB
    if (j->gzip) {
        j->z.next_out = buf;
        j->z.avail_out = (uInt) MIN(n, (size_t) UINT32_MAX);
        while (j->z.avail_out == MIN(n, (size_t) UINT32_MAX)) {
            int zr;
            if (!j->z.avail_in) {
                ssize_t got = in_raw(j, j->zin, ZBUF_SIZE);
                if (got <= 0) {
                    return got;
                }
                j->z.next_in = j->zin;
                j->z.avail_in = (uInt) got;
            }
            zr = inflate(&j->z, Z_NO_FLUSH);
            if (zr == Z_STREAM_END) {
                /* Another gzip member may follow (concatenated files). */
                if (inflateReset(&j->z) != Z_OK) {
                    return -EBADMSG;
                }
            } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
                return -EBADMSG;
            }
        }
        return (ssize_t) (MIN(n, (size_t) UINT32_MAX) - j->z.avail_out);
    }
#endif
    return in_raw(j, buf, n);
}

static int
in_read(struct import_job *j, void *buf, size_t n)
{
    char *p = buf;

    while (n) {
        ssize_t got = in_some(j, p, n);
        if (got <= 0) {
            if (got == -EBADMSG && j->compressed) {
                return api_fail(&j->call.ctx, ERR_IMPORT_ERROR,
                                "corrupt gzip stream");
            }
            return ie_body_error(&j->call, got ? (int) got : -EPIPE);
        }
        p += got;
        n -= got;
    }
    return 0;
}

/* Reads the next member's header; 1 with name and size, 0 at the end of
 * the archive, -1 after api_fail(). */
static int
in_header(struct import_job *j, char *name, size_t size, uint64_t *ret_size)
{
    unsigned char h[TAR_BLOCK];
    int rc;

    if (in_read(j, h, sizeof h)) {
        return -1;
    }
    rc = tar_parse_header(h, name, size, ret_size);
    if (rc < 0) {
        return api_fail(&j->call.ctx, ERR_IMPORT_ERROR,
                        "not a tar archive (bad header checksum)");
    }
    return rc;
}

static int
in_skip_padding(struct import_job *j, uint64_t size)
{
    char pad[TAR_BLOCK];

    return size % TAR_BLOCK ? in_read(j, pad, TAR_BLOCK - size % TAR_BLOCK)
                            : 0;
}

static const char *
snap_str(const struct value *snap, const char *name)
{
    const char *s = value_struct_get_string(snap, name);

    return s ? s : "";
}

static int64_t
value_int_of(const struct value *v, int64_t dflt)
{
    if (!v) {
        return dflt;
    } else if (v->type == VALUE_INT) {
        return v->u.i;
    } else if (v->type == VALUE_STRING) {
        return strtoll(v->u.str.s, NULL, 10);
    }
    return dflt;
}

static struct import_obj *
find_obj(struct import_job *j, const char *id)
{
    for (size_t i = 0; i < j->n_objs; i++) {
        if (!strcmp(j->objs[i].id, id)) {
            return &j->objs[i];
        }
    }
    return NULL;
}

/* Parses ova.xml (an XML-RPC <value>) and checks its version. */
static int
parse_ova(struct import_job *j, const char *xml, size_t len)
{
    struct ie_call *c = &j->call;
    struct ds call = DS_EMPTY;
    struct value *params = NULL, *top, *version, *objects;
    char *method = NULL, *err = NULL;
    const char *p = xml, *end = xml + len;
    int rc = -1;

    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }
    if (end - p > 5 && !memcmp(p, "<?xml", 5)) {
        const char *q = strstr(p, "?>");
        p = q ? q + 2 : end;
    }
    ds_put_cstr(&call, "<?xml version=\"1.0\"?><methodCall><methodName>ova"
                       "</methodName><params><param>");
    ds_put(&call, p, end - p);
    ds_put_cstr(&call, "</param></params></methodCall>");
    if (xmlrpc_parse_call(call.s, call.len, &codec_default_limits, &method,
                          &params, &err)) {
        char *msg = xasprintf("ova.xml is not an XenAPI export (legacy XVA "
                              "formats are not supported): %s", err);
        api_fail(&c->ctx, ERR_IMPORT_ERROR, msg);
        free(msg);
        goto out;
    }
    top = params->u.arr.n == 1 ? params->u.arr.items[0] : NULL;
    version = top && top->type == VALUE_STRUCT
              ? value_struct_get(top, "version") : NULL;
    objects = top && top->type == VALUE_STRUCT
              ? value_struct_get(top, "objects") : NULL;
    if (!version || version->type != VALUE_STRUCT || !objects
        || objects->type != VALUE_ARRAY) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR, "ova.xml lacks the version or "
                 "the objects");
        goto out;
    }
    j->export_vsn = value_int_of(value_struct_get(version, "export_vsn"), 0);
    if (value_int_of(value_struct_get(version, "xapi_major"), 0)
        > MAX_IMPORT_XAPI_MAJOR || j->export_vsn > EXPORT_VSN) {
        api_fail(&c->ctx, ERR_IMPORT_INCOMPATIBLE_VERSION);
        goto out;
    }
    j->objs = xcalloc(objects->u.arr.n + 1, sizeof *j->objs);
    for (size_t i = 0; i < objects->u.arr.n; i++) {
        const struct value *o = objects->u.arr.items[i];
        const struct value *cls = o->type == VALUE_STRUCT
                                  ? value_struct_get(o, "class") : NULL;
        const struct value *id = o->type == VALUE_STRUCT
                                 ? value_struct_get(o, "id") : NULL;
        struct value *snap = o->type == VALUE_STRUCT
                             ? value_struct_get(o, "snapshot") : NULL;
        if (!cls || !id || !snap || cls->type != VALUE_STRING
            || id->type != VALUE_STRING || snap->type != VALUE_STRUCT) {
            api_fail(&c->ctx, ERR_IMPORT_ERROR, "ova.xml has a malformed "
                     "object");
            goto out;
        }
        j->objs[j->n_objs].cls = cls->u.str.s;
        j->objs[j->n_objs].id = id->u.str.s;
        j->objs[j->n_objs].snap = snap;
        j->n_objs++;
    }
    j->ova = params;
    params = NULL;
    rc = 0;
out:
    ds_destroy(&call);
    value_unref(params);
    free(method);
    free(err);
    return rc;
}

/* The ref an id of the export became here ("OpaqueRef:NULL" if none). */
static const char *
mapped(struct import_job *j, const char *id)
{
    struct import_obj *o = id ? find_obj(j, id) : NULL;

    return o && o->ref[0] ? o->ref : "OpaqueRef:NULL";
}

/* The fields of a new row of cls from an exported record: every field a
 * client may give at creation, coerced to its type, with refs mapped to
 * what their objects became (others OpaqueRef:NULL, dropped from sets);
 * fields absent or malformed get their defaults. */
static struct value **
import_fields(struct import_job *j, int cls, const struct value *snap)
{
    const struct api_class *c = &api_classes[cls];
    struct value **f = db_fields_new(cls, NULL);
    char uuid[40];

    for (size_t i = 0; i < c->n_fields; i++) {
        const struct api_field *fd = &c->fields[i];
        struct value *v = value_struct_get(snap, fd->name), *out = NULL;

        if (!v || fd->relation_set || (int) i == c->uuid_field
            || !strcmp(fd->name, "current_operations")
            || !strcmp(fd->name, "allowed_operations")) {
            continue;
        }
        if (fd->type->kind == API_REF) {
            out = value_string(v->type == VALUE_STRING
                               ? mapped(j, v->u.str.s) : "OpaqueRef:NULL");
        } else if (fd->type->kind == API_SET
                   && fd->type->elem->kind == API_REF) {
            out = value_array(0);
            for (size_t k = 0; v->type == VALUE_ARRAY && k < v->u.arr.n;
                 k++) {
                const struct value *e = v->u.arr.items[k];
                const char *m = e->type == VALUE_STRING
                                ? mapped(j, e->u.str.s) : "OpaqueRef:NULL";
                if (strcmp(m, "OpaqueRef:NULL")) {
                    value_array_append(out, value_string(m));
                }
            }
        } else if (fd->qualifier == API_RO_RUNTIME
                   || api_coerce(fd->type, v, &out)) {
            /* Run-time state starts afresh; malformed values get the
             * default. */
            out = NULL;
        } else if (fd->type->kind == API_MAP && fd->type->key->kind
                   == API_REF) {
            value_unref(out);
            out = NULL;
        }
        f[i] = out;
    }
    if (c->uuid_field >= 0) {
        const char *old = snap_str(snap, "uuid");
        bool keep = j->restore && *old
                    && !db_lookup_uuid(j->call.x->db, cls, old);
        if (keep) {
            snprintf(uuid, sizeof uuid, "%s", old);
        } else {
            uuid_generate(uuid);
        }
        f[c->uuid_field] = value_string(uuid);
    }
    return f;
}

static void
set_field(struct value **f, int cls, const char *name, struct value *v)
{
    int i = api_field_find(cls, name);

    if (i < 0) {
        value_unref(v);
        return;
    }
    value_unref(f[i]);
    f[i] = v;
}

static void
random_mac(char *out)
{
    unsigned char b[6];

    random_bytes(b, sizeof b);
    b[0] = (b[0] & 0xfc) | 0x02;    /* locally administered, unicast */
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2],
             b[3], b[4], b[5]);
}

/* Whether the VDI object is in an ISO SR of the export. */
static bool
vdi_in_iso_sr(struct import_job *j, const struct import_obj *vdi)
{
    struct import_obj *sr = find_obj(j, snap_str(vdi->snap, "SR"));

    return sr && !strcmp(snap_str(sr->snap, "content_type"), "iso");
}

/* The VDIs whose data follows in the archive: those of VBDs that are not
 * CDs (and suspend images), outside ISO SRs. */
static bool
vdi_streamed(struct import_job *j, const struct import_obj *vdi)
{
    if (vdi_in_iso_sr(j, vdi)) {
        return false;
    }
    if (!strcmp(snap_str(vdi->snap, "type"), "suspend")) {
        return true;
    }
    for (size_t i = 0; i < j->n_objs; i++) {
        const struct import_obj *o = &j->objs[i];
        if (!strcmp(o->cls, "VBD")
            && !strcmp(snap_str(o->snap, "VDI"), vdi->id)
            && strcmp(snap_str(o->snap, "type"), "CD")) {
            return true;
        }
    }
    return false;
}

/* Creates the disks (on the target SR) and then every row in one
 * transaction. */
static int
import_create(struct import_job *j)
{
    struct ie_call *c = &j->call;
    struct db *db = c->x->db;
    struct db_txn *txn = NULL;
    int rc = -1;

    /* Disks first: storage_vdi_create commits its own rows. */
    for (size_t i = 0; i < j->n_objs; i++) {
        struct import_obj *o = &j->objs[i];
        struct storage_vdi_spec spec = { 0 };
        const struct value *snap = o->snap;
        const char *type = snap_str(snap, "type");

        if (strcmp(o->cls, "VDI")) {
            continue;
        }
        if (vdi_in_iso_sr(j, o)) {
            /* A CD: find the same ISO here by location, else eject. */
            const char *loc = snap_str(snap, "location");
            db_read_lock(db);
            for (size_t k = 0; k < db_table_count(db, CLS_VDI); k++) {
                const struct db_row *v = db_table_row(db, CLS_VDI, k);
                const struct db_row *sr = db_lookup(db, CLS_SR,
                                                    row_str(v, F_VDI_SR));
                if (*loc && sr && !strcmp(row_str(v, F_VDI_location), loc)
                    && !strcmp(row_str(sr, F_SR_content_type), "iso")) {
                    snprintf(o->ref, sizeof o->ref, "%s", v->ref);
                    break;
                }
            }
            db_read_unlock(db);
            continue;
        }
        spec.sr = j->sr;
        spec.name_label = snap_str(snap, "name_label");
        spec.name_description = snap_str(snap, "name_description");
        spec.virtual_size = value_int_of(value_struct_get(snap,
                                                          "virtual_size"), 0);
        spec.type = *type ? type : "user";
        spec.sharable = value_struct_get(snap, "sharable")
                        && value_struct_get(snap, "sharable")->type
                           == VALUE_BOOL
                        && value_struct_get(snap, "sharable")->u.b;
        spec.read_only = false;
        spec.other_config = value_struct_get(snap, "other_config");
        if (spec.other_config && spec.other_config->type != VALUE_STRUCT) {
            spec.other_config = NULL;
        }
        if (spec.virtual_size < 0) {
            api_fail(&c->ctx, ERR_IMPORT_ERROR, "a VDI has a negative size");
            goto out;
        }
        if (storage_vdi_create(&c->ctx, &spec, o->ref)) {
            o->ref[0] = '\0';
            goto out;
        }
        o->created = true;
    }

    /* Then the rows, all or none. */
    txn = db_begin(db);
    for (size_t i = 0; i < j->n_objs; i++) {
        struct import_obj *o = &j->objs[i];
        struct value **f;
        char ref[48];

        if (!strcmp(o->cls, "SR")) {
            /* Disks land on the target SR; ISO SRs are looked up above. */
            if (strcmp(snap_str(o->snap, "content_type"), "iso")) {
                snprintf(o->ref, sizeof o->ref, "%s", j->sr);
            }
        } else if (!strcmp(o->cls, "network")) {
            const char *label = snap_str(o->snap, "name_label");
            const char *bridge = snap_str(o->snap, "bridge");
            /* Networks are matched by name, then by bridge, as XenServer
             * does; only a network found nowhere is created. */
            for (size_t k = 0; k < db_table_count(db, CLS_network); k++) {
                const struct db_row *n = db_table_row(db, CLS_network, k);
                if (!strcmp(row_str(n, F_network_name_label), label)) {
                    snprintf(o->ref, sizeof o->ref, "%s", n->ref);
                    break;
                }
            }
            for (size_t k = 0; !o->ref[0] && *bridge
                 && k < db_table_count(db, CLS_network); k++) {
                const struct db_row *n = db_table_row(db, CLS_network, k);
                if (!strcmp(row_str(n, F_network_bridge), bridge)) {
                    snprintf(o->ref, sizeof o->ref, "%s", n->ref);
                }
            }
            if (!o->ref[0]) {
                db_new_ref(ref);
                f = import_fields(j, CLS_network, o->snap);
                if (db_insert_fields(txn, CLS_network, ref, f)) {
                    api_fail(&c->ctx, ERR_IMPORT_ERROR,
                             "cannot create a network");
                    goto out;
                }
                snprintf(o->ref, sizeof o->ref, "%s", ref);
                o->created = true;
            }
        }
    }
    for (size_t i = 0; i < j->n_objs; i++) {
        struct import_obj *o = &j->objs[i];
        struct value **f, *ops, *oc;
        char ref[48];

        if (strcmp(o->cls, "VM")) {
            continue;
        }
        db_new_ref(ref);
        snprintf(o->ref, sizeof o->ref, "%s", ref);
        f = import_fields(j, CLS_VM, o->snap);
        set_field(f, CLS_VM, "power_state", value_string("Halted"));
        set_field(f, CLS_VM, "resident_on", value_null_ref());
        set_field(f, CLS_VM, "affinity", value_null_ref());
        set_field(f, CLS_VM, "guest_metrics", value_null_ref());
        set_field(f, CLS_VM, "suspend_VDI", value_null_ref());
        set_field(f, CLS_VM, "domid", value_int(-1));
        ops = value_struct(1);
        value_struct_put(ops, j->call.task, value_string("import"));
        set_field(f, CLS_VM, "current_operations", ops);
        /* A fresh MAC seed unless the import restores the VM itself. */
        oc = f[F_VM_other_config] ? value_copy_shallow(f[F_VM_other_config])
                                  : value_struct(1);
        if (!j->restore) {
            char seed[40];
            uuid_generate(seed);
            value_struct_set(oc, "mac_seed", value_string(seed));
        }
        value_struct_remove(oc, "import_task");
        value_struct_set(oc, "import_task", value_string(j->call.task));
        set_field(f, CLS_VM, "other_config", oc);
        if (db_insert_fields(txn, CLS_VM, ref, f)) {
            api_fail(&c->ctx, ERR_IMPORT_ERROR, "cannot create the VM (its "
                     "uuid is taken?)");
            o->ref[0] = '\0';
            goto out;
        }
        o->created = true;
        lifecycle_refresh_allowed(txn, ref, true);
    }
    for (size_t i = 0; i < j->n_objs; i++) {
        struct import_obj *o = &j->objs[i];
        struct value **f;
        char ref[48];
        bool vbd = !strcmp(o->cls, "VBD"), vif = !strcmp(o->cls, "VIF");
        const char *vm;

        if (!vbd && !vif) {
            continue;
        }
        vm = mapped(j, snap_str(o->snap, "VM"));
        if (!strcmp(vm, "OpaqueRef:NULL")) {
            api_fail(&c->ctx, ERR_IMPORT_ERROR_FAILED_TO_FIND_OBJECT,
                     snap_str(o->snap, "VM"));
            goto out;
        }
        f = import_fields(j, vbd ? CLS_VBD : CLS_VIF, o->snap);
        if (vbd) {
            const char *vdi = mapped(j, snap_str(o->snap, "VDI"));
            bool cd = !strcmp(snap_str(o->snap, "type"), "CD");
            if (!strcmp(vdi, "OpaqueRef:NULL")) {
                if (!cd) {
                    /* A disk whose VDI is not in the export: XenServer
                     * leaves it out too. */
                    for (size_t k = 0; k < api_classes[CLS_VBD].n_fields;
                         k++) {
                        value_unref(f[k]);
                    }
                    free(f);
                    continue;
                }
                set_field(f, CLS_VBD, "empty", value_true());
            }
            set_field(f, CLS_VBD, "currently_attached", value_false());
        } else {
            const char *mac = snap_str(o->snap, "MAC");
            if (!strcmp(mapped(j, snap_str(o->snap, "network")),
                        "OpaqueRef:NULL")) {
                api_fail(&c->ctx, ERR_IMPORT_ERROR_FAILED_TO_FIND_OBJECT,
                         snap_str(o->snap, "network"));
                for (size_t k = 0; k < api_classes[CLS_VIF].n_fields; k++) {
                    value_unref(f[k]);
                }
                free(f);
                goto out;
            }
            if (!j->restore || !*mac) {
                char m[18];
                random_mac(m);
                set_field(f, CLS_VIF, "MAC", value_string(m));
                set_field(f, CLS_VIF, "MAC_autogenerated", value_true());
            }
            set_field(f, CLS_VIF, "currently_attached", value_false());
        }
        db_new_ref(ref);
        if (db_insert_fields(txn, vbd ? CLS_VBD : CLS_VIF, ref, f)) {
            api_fail(&c->ctx, ERR_IMPORT_ERROR, "cannot create a device");
            goto out;
        }
        snprintf(o->ref, sizeof o->ref, "%s", ref);
        o->created = true;
    }
    for (size_t i = 0; i < j->n_objs; i++) {
        if (!strcmp(j->objs[i].cls, "VM") && j->objs[i].created) {
            vmops_refresh_devices(txn, j->objs[i].ref);
        }
    }
    if (api_commit(&c->ctx, txn)) {
        txn = NULL;
        goto out;
    }
    txn = NULL;
    j->rows_created = true;
    rc = 0;
out:
    if (txn) {
        db_abort(txn);
        /* The rows went with the transaction; the disks remain for the
         * cleanup. */
        for (size_t i = 0; i < j->n_objs; i++) {
            if (strcmp(j->objs[i].cls, "VDI")) {
                j->objs[i].created = false;
            }
        }
    }
    return rc;
}

/* Undoes a failed import: rows in one transaction, then the disks. */
static void
import_cleanup(struct import_job *j)
{
    struct db *db = j->call.x->db;
    struct db_txn *txn;
    static const char *const order[] = { "VBD", "VIF", "VM", "network" };
    struct api_ctx ctx = j->call.ctx;

    if (j->rows_created) {
        txn = db_begin(db);
        for (size_t k = 0; k < ARRAY_SIZE(order); k++) {
            int cls = api_class_find(order[k]);
            for (size_t i = 0; i < j->n_objs; i++) {
                struct import_obj *o = &j->objs[i];
                if (o->created && !strcmp(o->cls, order[k])
                    && db_lookup(db, cls, o->ref)) {
                    db_delete(txn, cls, o->ref);
                }
            }
        }
        db_commit(txn);
    }
    ctx.error = NULL;
    for (size_t i = 0; i < j->n_objs; i++) {
        struct import_obj *o = &j->objs[i];
        if (o->created && !strcmp(o->cls, "VDI")) {
            if (storage_vdi_destroy(&ctx, o->ref)) {
                LOG_WARN("import: cannot remove VDI %s after a failed "
                         "import", o->ref);
            }
            value_unref(ctx.error);
            ctx.error = NULL;
        }
    }
}

static int
cmp_obj_id(const void *a_, const void *b_)
{
    const struct import_obj *const *a = a_, *const *b = b_;

    return strcmp((*a)->id, (*b)->id);
}

/* Reads the chunks of one disk into it (XenServer's rules: a chunk's
 * number may jump; the gap is that many chunks of zeros of the first
 * chunk's size; the disk is complete when its size is reached). */
static int
import_disk(struct import_job *j, struct import_obj *o, uint64_t size,
            uint64_t *done, uint64_t total)
{
    struct ie_call *c = &j->call;
    struct storage_vdi_handle *h = NULL;
    struct ie_writer *w = NULL;
    struct blockdev *dev;
    uint64_t off = 0;
    int64_t last = -1;
    size_t plen = strlen(o->id), caps[2] = { 0, 0 };
    char *bufs[2] = { NULL, NULL };
    int k = 0, rc = -1;

    if (storage_vdi_open(&c->ctx, o->ref, true, NULL, &h)) {
        goto out;
    }
    dev = storage_vdi_blockdev(h);
    /* Chunks are written on a thread of their own while the next one
     * arrives (ie_writer); two buffers, sized to the chunks seen. */
    w = ie_writer_start(&c->ctx, dev);
    if (!w) {
        goto out;
    }
    while (off < size) {
        char name[512], cname[512], sum[64], want[64];
        uint64_t len, clen;
        char *endp = NULL, *buf;
        long long n;
        int hr = in_header(j, name, sizeof name, &len);

        if (hr <= 0) {
            if (hr == 0) {
                api_fail(&c->ctx, ERR_IMPORT_ERROR_PREMATURE_EOF);
            }
            goto out;
        }
        n = strncmp(name, o->id, plen) || name[plen] != '/'
            || name[plen + 1] < '0' || name[plen + 1] > '9'
            ? -1 : strtoll(name + plen + 1, &endp, 10);
        if (n < 0 || *endp || n <= last) {
            char expected[64];
            snprintf(expected, sizeof expected, "%s/%08lld", o->id,
                     (long long) last + 1);
            api_fail(&c->ctx, ERR_IMPORT_ERROR_UNEXPECTED_FILE, expected,
                     name);
            goto out;
        }
        if (len > MAX_CHUNK) {
            api_fail(&c->ctx, ERR_IMPORT_ERROR, "a disk chunk is too large");
            goto out;
        }
        if (j->first_chunk_len < 0) {
            j->first_chunk_len = (int64_t) len;
        }
        off += (uint64_t) (n - last - 1) * (uint64_t) j->first_chunk_len;
        if (off + len > size || off + len > dev->size) {
            api_fail(&c->ctx, ERR_IMPORT_ERROR, "a disk chunk lies beyond "
                     "the end of its disk");
            goto out;
        }
        if (caps[k] < len) {
            /* The writer has the other buffer, never this one. */
            free(bufs[k]);
            bufs[k] = xmalloc(len);
            caps[k] = len;
        }
        buf = bufs[k];
        if (in_read(j, buf, len) || in_skip_padding(j, len)) {
            goto out;
        }
        if (j->export_vsn > 0) {
            /* The chunk's checksum, in a member of its own. */
            hr = in_header(j, cname, sizeof cname, &clen);
            if (hr <= 0) {
                if (hr == 0) {
                    api_fail(&c->ctx, ERR_IMPORT_ERROR_PREMATURE_EOF);
                }
                goto out;
            }
            snprintf(want, sizeof want, "%s", "");
            if (clen >= sizeof sum) {
                api_fail(&c->ctx, ERR_IMPORT_ERROR, "a checksum file is too "
                         "large");
                goto out;
            }
            if (in_read(j, sum, clen) || in_skip_padding(j, clen)) {
                goto out;
            }
            sum[clen] = '\0';
            if (strlen(cname) == strlen(name) + 9
                && !strncmp(cname, name, strlen(name))
                && !strcmp(cname + strlen(name), ".checksum")) {
                sha1_hex(buf, len, want);
            } else if (strlen(cname) == strlen(name) + 7
                       && !strncmp(cname, name, strlen(name))
                       && !strcmp(cname + strlen(name), ".xxhash")) {
                snprintf(want, sizeof want, "%016" PRIX64, xxh64(buf, len));
            } else {
                char expected[600];
                snprintf(expected, sizeof expected, "%s.checksum", name);
                api_fail(&c->ctx, ERR_IMPORT_ERROR_UNEXPECTED_FILE, expected,
                         cname);
                goto out;
            }
            if (strcmp(want, sum) && !j->force) {
                LOG_WARN("import: %s: checksum %s, expected %s", name, want,
                         sum);
                api_fail(&c->ctx, ERR_IMPORT_ERROR_SOME_CHECKSUMS_FAILED);
                goto out;
            }
        }
        if (len) {
            if (ie_writer_submit(w, &c->ctx, buf, off, len)) {
                goto out;
            }
            k ^= 1;
        }
        off += len;
        *done += len;
        last = n;
        if (ie_progress(c, *done, total)) {
            goto out;
        }
    }
    if (ie_writer_finish(w, &c->ctx)) {
        w = NULL;
        goto out;
    }
    w = NULL;
    if (dev->ops->flush && (rc = dev->ops->flush(dev))) {
        api_fail_internal(&c->ctx, "flushing a disk: %s", strerror(-rc));
        rc = -1;
        goto out;
    }
    rc = 0;
out:
    if (ie_writer_finish(w, &c->ctx)) {
        rc = -1;
    }
    free(bufs[0]);
    free(bufs[1]);
    storage_vdi_close(h);
    return rc;
}

static int
import_run(struct import_job *j)
{
    struct ie_call *c = &j->call;
    unsigned char h[TAR_BLOCK];
    struct import_obj **disks = NULL;
    size_t n_disks = 0;
    uint64_t size, total = 0, done = 0;
    char name[512], *xml = NULL;
    int rc = -1, hr;

    /* A compressed archive is recognised by its first bytes, as XenServer
     * does (the client need not say). */
    if (http_body_read_full(j->r, j->peek, 2)) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR_PREMATURE_EOF);
        goto out;
    }
    j->peek_len = 2;
    if (j->peek[0] == 0x1f && j->peek[1] == 0x8b) {
#ifdef HAVE_ZLIB
        memset(&j->z, 0, sizeof j->z);
        if (inflateInit2(&j->z, 15 + 16) != Z_OK) {
            api_fail_internal(&c->ctx, "gunzip cannot start");
            goto out;
        }
        j->gzip = true;
        j->compressed = true;
        j->zin = xmalloc(ZBUF_SIZE);
#else
        api_fail(&c->ctx, ERR_IMPORT_ERROR, "the XVA is gzip-compressed, "
                 "which this host cannot decompress; send it "
                 "uncompressed");
        goto out;
#endif
    }
    /* The two bytes come first again (through the decompressor, if). */
    if (in_read(j, h, sizeof h)) {
        goto out;
    }
    if (h[0] == 0x28 && h[1] == 0xb5 && h[2] == 0x2f && h[3] == 0xfd) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR, "the XVA is zstd-compressed, "
                 "which this host cannot decompress; send it "
                 "uncompressed");
        goto out;
    }
    hr = tar_parse_header(h, name, sizeof name, &size);
    if (hr <= 0) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR, "not a tar archive");
        goto out;
    }
    if (strcmp(name, "ova.xml")) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR_UNEXPECTED_FILE, "ova.xml", name);
        goto out;
    }
    if (size > MAX_OVA_XML) {
        api_fail(&c->ctx, ERR_IMPORT_ERROR, "ova.xml is too large");
        goto out;
    }
    xml = xmalloc(size + 1);
    if (in_read(j, xml, size) || in_skip_padding(j, size)) {
        goto out;
    }
    xml[size] = '\0';
    if (parse_ova(j, xml, size)) {
        goto out;
    }
    free(xml);
    xml = NULL;
    if (import_create(j)) {
        goto out;
    }
    /* The disks whose data follows, in the order of their ids. */
    disks = xcalloc(j->n_objs + 1, sizeof *disks);
    for (size_t i = 0; i < j->n_objs; i++) {
        struct import_obj *o = &j->objs[i];
        if (!strcmp(o->cls, "VDI") && o->created && vdi_streamed(j, o)) {
            disks[n_disks++] = o;
            total += value_int_of(value_struct_get(o->snap, "virtual_size"),
                                  0);
        }
    }
    qsort(disks, n_disks, sizeof *disks, cmp_obj_id);
    j->buf = xmalloc(CHUNK_SIZE);
    j->first_chunk_len = -1;
    for (size_t i = 0; i < n_disks; i++) {
        uint64_t dsize = value_int_of(value_struct_get(disks[i]->snap,
                                                       "virtual_size"), 0);
        if (import_disk(j, disks[i], dsize, &done, total)) {
            goto out;
        }
    }
    /* The rest (the end of the archive, or the checksum table of old
     * exports) is read and dropped, so the client can finish sending. */
    for (;;) {
        ssize_t got = in_some(j, j->buf, CHUNK_SIZE);
        if (got <= 0) {
            break;
        }
    }
    rc = 0;
out:
    free(xml);
    free(disks);
    return rc;
}

static void *
import_thread(void *j_)
{
    struct import_job *j = j_;
    struct value *result = NULL;
    char hdr[96];
    int rc;

    j->r = http_body_reader_create(j->s, &j->req, IE_IO_TIMEOUT_MS);
    rc = import_run(j);
    if (rc) {
        import_cleanup(j);
    } else {
        /* Done: the VMs lose their "import" operation, and the task's
         * result is the set of VMs made (not snapshots), as XenServer
         * answers. */
        result = value_array(1);
        for (size_t i = 0; i < j->n_objs; i++) {
            struct import_obj *o = &j->objs[i];
            const struct value *snap_flag;
            if (strcmp(o->cls, "VM") || !o->created) {
                continue;
            }
            vm_mark(&j->call, o->ref, NULL);
            snap_flag = value_struct_get(o->snap, "is_a_snapshot");
            if (!(snap_flag && snap_flag->type == VALUE_BOOL
                  && snap_flag->u.b)) {
                value_array_append(result, value_string(o->ref));
            }
        }
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
    ie_end(&j->call, result);
    value_unref(result);
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

/* The SR the disks go to: sr_id, sr_uuid, or the pool's default SR. */
static int
import_sr(struct import_job *j, const struct http_request *req)
{
    struct ie_call *c = &j->call;
    struct db *db = c->x->db;
    char *id = ie_param(req, "sr_id"), *uuid = ie_param(req, "sr_uuid");
    const struct db_row *sr = NULL, *pool;
    int rc = -1;

    db_read_lock(db);
    if (id && *id) {
        sr = db_lookup(db, CLS_SR, id);
        if (!sr) {
            api_fail_handle(&c->ctx, CLS_SR, id);
            goto out;
        }
    } else if (uuid && *uuid) {
        sr = db_lookup_uuid(db, CLS_SR, uuid);
        if (!sr) {
            api_fail(&c->ctx, ERR_UUID_INVALID, "SR", uuid);
            goto out;
        }
    } else {
        pool = db_lookup(db, CLS_pool, c->x->pool_ref);
        const char *def = pool ? row_str(pool, F_pool_default_SR)
                               : "OpaqueRef:NULL";
        sr = db_lookup(db, CLS_SR, def);
        if (!sr) {
            api_fail(&c->ctx, ERR_DEFAULT_SR_NOT_FOUND, def);
            goto out;
        }
    }
    if (!strcmp(row_str(sr, F_SR_content_type), "iso")) {
        api_fail(&c->ctx, ERR_SR_OPERATION_NOT_SUPPORTED, sr->ref);
        goto out;
    }
    snprintf(j->sr, sizeof j->sr, "%s", sr->ref);
    rc = 0;
out:
    db_read_unlock(db);
    free(id);
    free(uuid);
    return rc;
}

static void
xva_import(struct http_exchange *hx, struct xapi *x)
{
    const struct http_request *req = http_exchange_request(hx);
    struct import_job *j = xcalloc(1, sizeof *j);
    char *headers = NULL;

    if (ie_begin(&j->call, x, hx, "VM.import", "http/put_import")) {
        free(j);
        return;
    }
    j->restore = ie_param_true(req, "restore");
    j->force = ie_param_true(req, "force");
    if (import_sr(j, req)) {
        ie_respond_error(&j->call, hx);
        import_job_free(j);
        return;
    }
    j->req.body_streamed = req->body_streamed;
    j->req.body_chunked = req->body_chunked;
    j->req.body_length = req->body_length;
    if (!req->body_streamed) {
        j->req.body = xmemdup0(req->body ? req->body : "", req->body_len);
        j->req.body_len = req->body_len;
    }
    j->expect_continue = req->expect_continue;
    api_task_set_progress(&j->call.ctx, 0);
    if (j->expect_continue) {
        http_respond_takeover(hx, 100, NULL, import_taken, j);
    } else {
        /* XenServer answers at once and reports the outcome on the task;
         * its clients wait for this head before they send the archive. */
        headers = xasprintf("task-id: %s\r\nContent-Type: "
                            "application/octet-stream\r\nConnection: close",
                            j->call.task);
        http_respond_takeover(hx, 200, headers, import_taken, j);
    }
    free(headers);
}

void
xva_http_handler(struct http_exchange *hx, struct xapi *x)
{
    const struct http_request *req = http_exchange_request(hx);

    if (!strcmp(req->path, "/import")) {
        if (strcmp(req->method, "PUT") && strcmp(req->method, "POST")) {
            http_respond(hx, 405, "text/plain", "Allow: PUT",
                         "method not allowed\n", 19);
            return;
        }
        xva_import(hx, x);
    } else {
        if (strcmp(req->method, "GET")) {
            http_respond(hx, 405, "text/plain", "Allow: GET",
                         "method not allowed\n", 19);
            return;
        }
        xva_export(hx, x);
    }
}
