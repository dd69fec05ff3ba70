/* db.c — in-memory tables, indices, transactions and relation mirroring
 * (see db.h).  Durability is delegated to db-store.c: each commit hands it
 * a redo record (whole row images of the persistent rows it changed) and
 * waits for it to be on disk. */
#include <config.h>
#include "db.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "db-store.h"
#include "strmap.h"
#include "types.h"

struct db_table {
    struct db_row **rows;       /* dense array; order is not meaningful */
    size_t n, cap;
    struct strmap by_ref;       /* ref -> index into rows (as uintptr+1) */
    struct strmap by_uuid;      /* uuid -> row */
    struct strmap by_name;      /* name_label -> struct name_bucket */
};

/* Rows sharing one name_label (names need not be unique). */
struct name_bucket {
    char *name;                 /* the key, owned here */
    struct db_row **rows;
    size_t n, cap;
};

struct db_undo {
    int cls;
    char *ref;
    struct db_row *old_row;     /* NULL: the row did not exist */
    bool stored_change;         /* a field kept on disk changed */
};

struct db_txn {
    struct db *db;
    struct db_undo *undo;
    size_t n_undo, cap_undo;
    struct strmap touched;      /* "cls\0ref" keys already in the undo log */
    char **touched_keys;
    size_t n_touched;
};

struct db {
    pthread_rwlock_t lock;
    struct db_table tables[CLS__COUNT];
    uint64_t generation;
    struct db_store *store;     /* NULL: memory only */
    db_commit_hook_fn *hook;
    void *hook_aux;
};

static struct value *field_defaults[CLS__COUNT][128];
static pthread_once_t defaults_once = PTHREAD_ONCE_INIT;

static void
init_defaults(void)
{
    for (size_t c = 0; c < api_n_classes; c++) {
        const struct api_class *cls = &api_classes[c];
        if (cls->n_fields > 128) {
            xabort("class %s has too many fields", cls->name);
        }
        for (size_t f = 0; f < cls->n_fields; f++) {
            const struct api_field *fd = &cls->fields[f];
            struct value *v = NULL;
            if (fd->default_text) {
                v = api_parse_default(fd->type, fd->default_text);
                if (!v) {
                    LOG_WARN("cannot parse default %s of %s.%s",
                             fd->default_text, cls->name, fd->name);
                }
            }
            field_defaults[c][f] = v ? v : api_zero_value(fd->type);
        }
    }
}

struct value *
db_field_default(int cls, int field)
{
    pthread_once(&defaults_once, init_defaults);
    return field_defaults[cls][field];
}

void
db_new_ref(char *buf)
{
    memcpy(buf, "OpaqueRef:", 10);
    uuid_generate(buf + 10);
}

/* ---- rows ---- */

static struct db_row *
row_alloc(int cls, const char *ref)
{
    size_t n = api_classes[cls].n_fields;
    struct db_row *row = xcalloc(1, sizeof *row + n * sizeof row->fields[0]);

    row->refcnt = 1;
    row->cls = cls;
    row->ref = xstrdup(ref);
    return row;
}

struct db_row *
db_row_ref(struct db_row *row)
{
    if (row) {
        __atomic_add_fetch(&row->refcnt, 1, __ATOMIC_RELAXED);
    }
    return row;
}

void
db_row_unref(struct db_row *row)
{
    if (!row || __atomic_sub_fetch(&row->refcnt, 1, __ATOMIC_ACQ_REL)) {
        return;
    }
    for (size_t i = 0; i < api_classes[row->cls].n_fields; i++) {
        value_unref(row->fields[i]);
    }
    free(row->ref);
    free(row);
}

static struct db_row *
row_copy(const struct db_row *old)
{
    struct db_row *row = row_alloc(old->cls, old->ref);

    for (size_t i = 0; i < api_classes[old->cls].n_fields; i++) {
        row->fields[i] = value_ref(old->fields[i]);
    }
    row->gen_created = old->gen_created;
    row->gen_modified = old->gen_modified;
    return row;
}

static const char *
row_uuid(const struct db_row *row)
{
    int f = api_classes[row->cls].uuid_field;

    return f >= 0 && row->fields[f] && row->fields[f]->type == VALUE_STRING
           ? row->fields[f]->u.str.s : NULL;
}

static const char *
row_name(const struct db_row *row)
{
    int f = api_classes[row->cls].name_label_field;

    return f >= 0 && row->fields[f] && row->fields[f]->type == VALUE_STRING
           ? row->fields[f]->u.str.s : NULL;
}

/* ---- tables ---- */

static void
name_index_add(struct db_table *t, struct db_row *row)
{
    const char *name = row_name(row);
    struct name_bucket *b;

    if (!name) {
        return;
    }
    b = strmap_get(&t->by_name, name);
    if (!b) {
        b = xcalloc(1, sizeof *b);
        b->name = xstrdup(name);
        strmap_put(&t->by_name, b->name, b);
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 2;
        b->rows = xrealloc(b->rows, b->cap * sizeof *b->rows);
    }
    b->rows[b->n++] = row;
}

static void
name_index_remove(struct db_table *t, struct db_row *row)
{
    const char *name = row_name(row);
    struct name_bucket *b = name ? strmap_get(&t->by_name, name) : NULL;

    if (!b) {
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        if (b->rows[i] == row) {
            b->rows[i] = b->rows[--b->n];
            break;
        }
    }
    if (!b->n) {
        strmap_remove(&t->by_name, b->name);
        free(b->name);
        free(b->rows);
        free(b);
    }
}

static struct db_row *
table_get(struct db_table *t, const char *ref)
{
    uintptr_t idx = (uintptr_t) strmap_get(&t->by_ref, ref);

    return idx ? t->rows[idx - 1] : NULL;
}

/* Puts row into the table, replacing any row with the same ref.  The table
 * takes the caller's reference; the replaced row (if any) is returned with
 * the table's reference. */
static struct db_row *
table_put(struct db_table *t, struct db_row *row)
{
    uintptr_t idx = (uintptr_t) strmap_get(&t->by_ref, row->ref);
    struct db_row *old = NULL;
    const char *uuid;

    if (idx) {
        old = t->rows[idx - 1];
        name_index_remove(t, old);
        uuid = row_uuid(old);
        if (uuid && strmap_get(&t->by_uuid, uuid) == old) {
            strmap_remove(&t->by_uuid, uuid);
        }
        t->rows[idx - 1] = row;
        /* Keys are borrowed from the row: re-point them at the new one. */
        strmap_put(&t->by_ref, row->ref, (void *) idx);
    } else {
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 16;
            t->rows = xrealloc(t->rows, t->cap * sizeof *t->rows);
        }
        t->rows[t->n++] = row;
        strmap_put(&t->by_ref, row->ref, (void *) (uintptr_t) t->n);
    }
    uuid = row_uuid(row);
    if (uuid) {
        strmap_put(&t->by_uuid, uuid, row);
    }
    name_index_add(t, row);
    return old;
}

/* Removes the row with this ref; returns it with the table's reference. */
static struct db_row *
table_remove(struct db_table *t, const char *ref)
{
    uintptr_t idx = (uintptr_t) strmap_get(&t->by_ref, ref);
    struct db_row *row, *last;
    const char *uuid;

    if (!idx) {
        return NULL;
    }
    row = t->rows[idx - 1];
    name_index_remove(t, row);
    uuid = row_uuid(row);
    if (uuid && strmap_get(&t->by_uuid, uuid) == row) {
        strmap_remove(&t->by_uuid, uuid);
    }
    strmap_remove(&t->by_ref, row->ref);
    last = t->rows[--t->n];
    if (last != row) {
        t->rows[idx - 1] = last;
        strmap_put(&t->by_ref, last->ref, (void *) idx);
    }
    return row;
}

static void
table_destroy(struct db_table *t)
{
    const char *key;
    void *data;

    for (size_t i = 0; i < t->n; i++) {
        db_row_unref(t->rows[i]);
    }
    free(t->rows);
    strmap_destroy(&t->by_ref);
    strmap_destroy(&t->by_uuid);
    for (size_t pos = 0; strmap_next(&t->by_name, &pos, &key, &data);) {
        struct name_bucket *b = data;
        free(b->name);
        free(b->rows);
        free(b);
    }
    strmap_destroy(&t->by_name);
}

/* ---- reads ---- */

void
db_read_lock(struct db *db)
{
    pthread_rwlock_rdlock(&db->lock);
}

void
db_read_unlock(struct db *db)
{
    pthread_rwlock_unlock(&db->lock);
}

struct db_row *
db_lookup(struct db *db, int cls, const char *ref)
{
    return table_get(&db->tables[cls], ref);
}

struct db_row *
db_lookup_uuid(struct db *db, int cls, const char *uuid)
{
    return strmap_get(&db->tables[cls].by_uuid, uuid);
}

int
db_class_of_ref(struct db *db, const char *ref)
{
    for (size_t c = 0; c < api_n_classes; c++) {
        if (table_get(&db->tables[c], ref)) {
            return (int) c;
        }
    }
    return -1;
}

size_t
db_table_count(struct db *db, int cls)
{
    return db->tables[cls].n;
}

struct db_row *
db_table_row(struct db *db, int cls, size_t i)
{
    return db->tables[cls].rows[i];
}

void
db_lookup_name_label(struct db *db, int cls, const char *label,
                     struct db_row ***rows, size_t *n)
{
    struct name_bucket *b = strmap_get(&db->tables[cls].by_name, label);

    if (!b) {
        return;
    }
    *rows = xrealloc(*rows, (*n + b->n) * sizeof **rows);
    memcpy(*rows + *n, b->rows, b->n * sizeof **rows);
    *n += b->n;
}

uint64_t
db_generation(struct db *db)
{
    return __atomic_load_n(&db->generation, __ATOMIC_ACQUIRE);
}

/* ---- transactions ---- */

struct db_txn *
db_begin(struct db *db)
{
    struct db_txn *txn = xcalloc(1, sizeof *txn);

    pthread_rwlock_wrlock(&db->lock);
    txn->db = db;
    strmap_init(&txn->touched);
    return txn;
}

struct db *
db_txn_db(struct db_txn *txn)
{
    return txn->db;
}

/* Records the pre-transaction state of (cls, ref) once, and notes whether
 * this change touches what is kept on disk (runtime statistics are not, so
 * updating them costs no disk write).  Returns the undo entry. */
static struct db_undo *
txn_note_field(struct db_txn *txn, int cls, const char *ref, int field)
{
    char *key = xasprintf("%d:%s", cls, ref);
    bool stored = field < 0 || (api_classes[cls].fields[field].persist
                                && !api_classes[cls].fields[field].relation_set);
    uintptr_t idx = (uintptr_t) strmap_get(&txn->touched, key);
    struct db_row *cur;

    if (idx) {
        free(key);
        txn->undo[idx - 1].stored_change |= stored;
        return &txn->undo[idx - 1];
    }
    txn->touched_keys = xrealloc(txn->touched_keys,
                                 (txn->n_touched + 1) * sizeof (char *));
    txn->touched_keys[txn->n_touched++] = key;
    strmap_put(&txn->touched, key, (void *) (uintptr_t) (txn->n_undo + 1));
    if (txn->n_undo == txn->cap_undo) {
        txn->cap_undo = txn->cap_undo ? txn->cap_undo * 2 : 8;
        txn->undo = xrealloc(txn->undo, txn->cap_undo * sizeof *txn->undo);
    }
    cur = table_get(&txn->db->tables[cls], ref);
    txn->undo[txn->n_undo].cls = cls;
    txn->undo[txn->n_undo].ref = xstrdup(ref);
    txn->undo[txn->n_undo].old_row = db_row_ref(cur);
    txn->undo[txn->n_undo].stored_change = stored;
    return &txn->undo[txn->n_undo++];
}

static void
txn_note(struct db_txn *txn, int cls, const char *ref)
{
    txn_note_field(txn, cls, ref, -1);
}

/* Returns a version of the row that this transaction may modify in place,
 * copying the published version on first write. */
static struct db_row *
txn_writable(struct db_txn *txn, int cls, const char *ref, int field)
{
    struct db_table *t = &txn->db->tables[cls];
    struct db_row *row = table_get(t, ref), *copy, *old;

    if (!row) {
        return NULL;
    }
    txn_note_field(txn, cls, ref, field);
    if (row->txn_owned) {
        return row;
    }
    copy = row_copy(row);
    copy->txn_owned = true;
    old = table_put(t, copy);
    db_row_unref(old);
    return copy;
}

static bool
ref_is_null(const struct value *v)
{
    return !v || v->type != VALUE_STRING || !strcmp(v->u.str.s, "OpaqueRef:NULL")
           || !v->u.str.len;
}

static bool
array_contains(const struct value *arr, const char *s)
{
    if (!arr || arr->type != VALUE_ARRAY) {
        return false;
    }
    for (size_t i = 0; i < arr->u.arr.n; i++) {
        const struct value *v = arr->u.arr.items[i];
        if (v->type == VALUE_STRING && !strcmp(v->u.str.s, s)) {
            return true;
        }
    }
    return false;
}

/* Sets partner field g of row (pcls, pref) to include (add) or exclude
 * (!add) the ref self_ref, without mirroring back. */
static void
mirror_one(struct db_txn *txn, int pcls, const char *pref, int g,
           const char *self_ref, bool add)
{
    const struct api_field *fd = &api_classes[pcls].fields[g];
    struct db_row *row = table_get(&txn->db->tables[pcls], pref);
    struct value *cur, *nv;

    if (!row) {
        return;     /* dangling reference: nothing to mirror */
    }
    cur = row->fields[g];
    if (fd->type->kind == API_SET) {
        if (add == array_contains(cur, self_ref)) {
            return;
        }
        if (add) {
            nv = value_copy_shallow(cur);
            value_array_append(nv, value_string(self_ref));
        } else {
            nv = value_array(cur->u.arr.n);
            for (size_t i = 0; i < cur->u.arr.n; i++) {
                struct value *it = cur->u.arr.items[i];
                if (!(it->type == VALUE_STRING && !strcmp(it->u.str.s, self_ref))) {
                    value_array_append(nv, value_ref(it));
                }
            }
        }
    } else {
        bool is_self = cur->type == VALUE_STRING && !strcmp(cur->u.str.s, self_ref);
        if (add == is_self) {
            return;
        }
        nv = add ? value_string(self_ref) : value_null_ref();
    }
    row = txn_writable(txn, pcls, pref, g);
    value_unref(row->fields[g]);
    row->fields[g] = nv;
}

/* Collects the refs a relation field value points at. */
static void
refs_of(const struct value *v, const char ***refs, size_t *n)
{
    if (!v) {
        return;
    }
    if (v->type == VALUE_STRING) {
        if (!ref_is_null(v)) {
            *refs = xrealloc(*refs, (*n + 1) * sizeof **refs);
            (*refs)[(*n)++] = v->u.str.s;
        }
    } else if (v->type == VALUE_ARRAY) {
        for (size_t i = 0; i < v->u.arr.n; i++) {
            refs_of(v->u.arr.items[i], refs, n);
        }
    }
}

static bool
ref_in(const char *r, const char **refs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(refs[i], r)) {
            return true;
        }
    }
    return false;
}

/* Field f of (cls, ref) changed from oldv to newv: mirror the difference
 * onto the partner field of every row it stops or starts pointing at. */
static void
mirror_relation(struct db_txn *txn, int cls, const char *ref, int f,
                const struct value *oldv, const struct value *newv)
{
    const struct api_field *fd = &api_classes[cls].fields[f];
    const char **o = NULL, **nw = NULL;
    size_t no = 0, nn = 0;

    if (fd->inverse_cls < 0) {
        return;
    }
    refs_of(oldv, &o, &no);
    refs_of(newv, &nw, &nn);
    for (size_t i = 0; i < no; i++) {
        if (!ref_in(o[i], nw, nn)) {
            mirror_one(txn, fd->inverse_cls, o[i], fd->inverse_field, ref, false);
        }
    }
    for (size_t i = 0; i < nn; i++) {
        if (!ref_in(nw[i], o, no)) {
            mirror_one(txn, fd->inverse_cls, nw[i], fd->inverse_field, ref, true);
        }
    }
    free(o);
    free(nw);
}

int
db_insert(struct db_txn *txn, int cls, const char *ref, struct value **fields,
          const char **ret_dup_field)
{
    const struct api_class *c = &api_classes[cls];
    struct db_table *t = &txn->db->tables[cls];
    struct db_row *row;
    const char *uuid;

    if (table_get(t, ref)) {
        for (size_t i = 0; i < c->n_fields; i++) {
            value_unref(fields[i]);
        }
        if (ret_dup_field) {
            *ret_dup_field = "_ref";
        }
        return -EEXIST;
    }
    row = row_alloc(cls, ref);
    for (size_t i = 0; i < c->n_fields; i++) {
        row->fields[i] = fields[i] ? fields[i] : value_ref(db_field_default(cls, i));
        fields[i] = NULL;
    }
    uuid = row_uuid(row);
    if (uuid && strmap_get(&t->by_uuid, uuid)) {
        db_row_unref(row);
        if (ret_dup_field) {
            *ret_dup_field = "uuid";
        }
        return -EEXIST;
    }
    txn_note(txn, cls, ref);
    row->txn_owned = true;
    table_put(t, row);
    /* Relation sets computed from the other side start empty; the refs
     * this row holds are mirrored onto their targets. */
    for (size_t i = 0; i < c->n_fields; i++) {
        if (c->fields[i].relation_set) {
            value_unref(row->fields[i]);
            row->fields[i] = value_empty_array();
        }
    }
    for (size_t i = 0; i < c->n_fields; i++) {
        if (c->fields[i].inverse_cls >= 0 && !c->fields[i].relation_set) {
            mirror_relation(txn, cls, ref, i, NULL, row->fields[i]);
        }
    }
    return 0;
}

struct value **
db_fields_new(int cls, const char *uuid)
{
    struct value **f = xcalloc(api_classes[cls].n_fields, sizeof *f);

    if (uuid && api_classes[cls].uuid_field >= 0) {
        f[api_classes[cls].uuid_field] = value_string(uuid);
    }
    return f;
}

int
db_insert_fields(struct db_txn *txn, int cls, const char *ref,
                 struct value **fields)
{
    int rc = db_insert(txn, cls, ref, fields, NULL);

    free(fields);
    return rc;
}

int
db_update(struct db_txn *txn, int cls, const char *ref, int field,
          struct value *v)
{
    struct db_table *t = &txn->db->tables[cls];
    struct db_row *row = table_get(t, ref);
    struct value *old;

    if (!row) {
        value_unref(v);
        return -ENOENT;
    }
    if (field == api_classes[cls].uuid_field) {
        struct db_row *other;
        if (v->type != VALUE_STRING) {
            value_unref(v);
            return -EINVAL;
        }
        other = strmap_get(&t->by_uuid, v->u.str.s);
        if (other && other != row) {
            value_unref(v);
            return -EEXIST;
        }
    }
    if (value_equal(row->fields[field], v)) {
        value_unref(v);
        return 0;
    }
    row = txn_writable(txn, cls, ref, field);
    if (field == api_classes[cls].name_label_field) {
        name_index_remove(t, row);
    }
    old = row->fields[field];
    row->fields[field] = v;
    if (field == api_classes[cls].name_label_field) {
        name_index_add(t, row);
    }
    if (field == api_classes[cls].uuid_field) {
        if (old->type == VALUE_STRING) {
            strmap_remove(&t->by_uuid, old->u.str.s);
        }
        strmap_put(&t->by_uuid, v->u.str.s, row);
    }
    mirror_relation(txn, cls, ref, field, old, v);
    value_unref(old);
    return 0;
}

int
db_delete(struct db_txn *txn, int cls, const char *ref)
{
    const struct api_class *c = &api_classes[cls];
    struct db_table *t = &txn->db->tables[cls];
    struct db_row *row = table_get(t, ref);

    if (!row) {
        return -ENOENT;
    }
    txn_note(txn, cls, ref);
    for (size_t i = 0; i < c->n_fields; i++) {
        if (c->fields[i].inverse_cls >= 0 && !c->fields[i].relation_set) {
            mirror_relation(txn, cls, ref, i, row->fields[i], NULL);
        }
    }
    row = table_remove(t, ref);
    db_row_unref(row);
    return 0;
}

static void
txn_free(struct db_txn *txn)
{
    for (size_t i = 0; i < txn->n_undo; i++) {
        free(txn->undo[i].ref);
        db_row_unref(txn->undo[i].old_row);
    }
    free(txn->undo);
    for (size_t i = 0; i < txn->n_touched; i++) {
        free(txn->touched_keys[i]);
    }
    free(txn->touched_keys);
    strmap_destroy(&txn->touched);
    free(txn);
}

void
db_abort(struct db_txn *txn)
{
    struct db *db;

    if (!txn) {
        return;
    }
    db = txn->db;
    /* Undo in reverse order so that the oldest saved state wins. */
    for (size_t i = txn->n_undo; i-- > 0;) {
        struct db_undo *u = &txn->undo[i];
        struct db_table *t = &db->tables[u->cls];
        struct db_row *cur = table_remove(t, u->ref);
        db_row_unref(cur);
        if (u->old_row) {
            table_put(t, db_row_ref(u->old_row));
        }
    }
    pthread_rwlock_unlock(&db->lock);
    txn_free(txn);
}

/* Serializes the stored fields of a row as a JSON object. */
static char *
row_serialize(const struct db_row *row)
{
    const struct api_class *c = &api_classes[row->cls];
    struct value *st = value_struct(c->n_fields);
    struct ds ds = DS_EMPTY;

    for (size_t i = 0; i < c->n_fields; i++) {
        if (!c->fields[i].relation_set && c->fields[i].persist) {
            value_struct_put(st, c->fields[i].name, value_ref(row->fields[i]));
        }
    }
    json_write(&ds, st);
    value_unref(st);
    return ds_steal(&ds);
}

int
db_commit(struct db_txn *txn)
{
    struct db *db = txn->db;
    struct db_store_change *changes = NULL;
    char **datas = NULL;
    size_t n_changes = 0;
    uint64_t gen;
    int rc = 0;

    if (txn->n_undo == 0) {
        pthread_rwlock_unlock(&db->lock);
        txn_free(txn);
        return 0;
    }
    gen = db->generation + 1;
    changes = xcalloc(txn->n_undo, sizeof *changes);
    datas = xcalloc(txn->n_undo, sizeof *datas);
    for (size_t i = 0; i < txn->n_undo; i++) {
        struct db_undo *u = &txn->undo[i];
        struct db_row *row = table_get(&db->tables[u->cls], u->ref);
        if (row) {
            row->txn_owned = false;
            row->gen_modified = gen;
            if (!u->old_row) {
                row->gen_created = gen;
            }
        }
        if (!row && !u->old_row) {
            continue;   /* created and deleted within the transaction */
        }
        if (db->hook) {
            db->hook(db->hook_aux, gen, u->cls, u->ref, u->old_row, row);
        }
        if (api_classes[u->cls].persist && db->store && u->stored_change) {
            changes[n_changes].cls = api_classes[u->cls].name;
            changes[n_changes].ref = u->ref;
            datas[n_changes] = row ? row_serialize(row) : NULL;
            changes[n_changes].data = datas[n_changes];
            n_changes++;
        }
    }
    if (n_changes) {
        db_store_submit(db->store, gen, changes, n_changes);
    }
    __atomic_store_n(&db->generation, gen, __ATOMIC_RELEASE);
    pthread_rwlock_unlock(&db->lock);
    if (n_changes) {
        rc = db_store_wait(db->store, gen);
    }
    for (size_t i = 0; i < n_changes; i++) {
        free(datas[i]);
    }
    free(datas);
    free(changes);
    txn_free(txn);
    return rc;
}

void
db_set_commit_hook(struct db *db, db_commit_hook_fn *fn, void *aux)
{
    pthread_rwlock_wrlock(&db->lock);
    db->hook = fn;
    db->hook_aux = aux;
    pthread_rwlock_unlock(&db->lock);
}

/* ---- open / load / close ---- */

struct load_ctx {
    struct db *db;
    size_t n_rows, n_bad;
};

static void
load_row(void *aux, const char *cls_name, const char *ref, const char *data)
{
    struct load_ctx *ctx = aux;
    int cls = api_class_find(cls_name);
    struct value *st = NULL;
    struct db_row *row;
    char *err = NULL;

    if (cls < 0) {
        LOG_WARN("database: dropping row %s of unknown class %s", ref, cls_name);
        ctx->n_bad++;
        return;
    }
    if (json_parse(data, strlen(data), &codec_default_limits, &st, &err)
        || st->type != VALUE_STRUCT) {
        LOG_ERR("database: row %s of %s does not parse: %s", ref, cls_name,
                err ? err : "not an object");
        free(err);
        value_unref(st);
        ctx->n_bad++;
        return;
    }
    row = row_alloc(cls, ref);
    for (size_t i = 0; i < api_classes[cls].n_fields; i++) {
        const struct api_field *fd = &api_classes[cls].fields[i];
        struct value *v = value_struct_get(st, fd->name), *cv = NULL;
        if (v && !fd->relation_set && !api_coerce(fd->type, v, &cv)) {
            row->fields[i] = cv;
        } else {
            /* A field added by a newer schema, or a computed set. */
            row->fields[i] = value_ref(db_field_default(cls, i));
        }
    }
    value_unref(st);
    db_row_unref(table_put(&ctx->db->tables[cls], row));
    ctx->n_rows++;
}

/* Rebuilds every computed relation set from the ref side. */
static void
rebuild_relations(struct db *db)
{
    for (size_t c = 0; c < api_n_classes; c++) {
        const struct api_class *cls = &api_classes[c];
        for (size_t f = 0; f < cls->n_fields; f++) {
            const struct api_field *fd = &cls->fields[f];
            struct db_table *pt;
            if (!fd->relation_set) {
                continue;
            }
            /* Start every row of this class with an empty set... */
            for (size_t i = 0; i < db->tables[c].n; i++) {
                struct db_row *row = db->tables[c].rows[i];
                value_unref(row->fields[f]);
                row->fields[f] = value_empty_array();
            }
            /* ...then add each row of the partner class that points here. */
            pt = &db->tables[fd->inverse_cls];
            for (size_t i = 0; i < pt->n; i++) {
                struct db_row *src = pt->rows[i];
                struct value *target = src->fields[fd->inverse_field];
                struct db_row *dst;
                struct value *nv;
                if (ref_is_null(target) || target->type != VALUE_STRING) {
                    continue;
                }
                dst = table_get(&db->tables[c], target->u.str.s);
                if (!dst) {
                    continue;
                }
                nv = value_copy_shallow(dst->fields[f]);
                value_array_append(nv, value_string(src->ref));
                value_unref(dst->fields[f]);
                dst->fields[f] = nv;
            }
        }
    }
}

int
db_open(const char *dir, struct db **ret_db, char **ret_err)
{
    pthread_rwlockattr_t attr;
    struct db *db = xcalloc(1, sizeof *db);
    struct load_ctx ctx = { db, 0, 0 };
    char *path = NULL;
    int rc;

    pthread_once(&defaults_once, init_defaults);
    pthread_rwlockattr_init(&attr);
    /* Writers must not starve behind a stream of get_all_records. */
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&db->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    for (size_t c = 0; c < CLS__COUNT; c++) {
        strmap_init(&db->tables[c].by_ref);
        strmap_init(&db->tables[c].by_uuid);
        strmap_init(&db->tables[c].by_name);
    }
    if (dir) {
        path = xasprintf("%s/state.db", dir);
        rc = db_store_open(path, &db->store, ret_err);
        if (rc) {
            goto out;
        }
        rc = db_store_load(db->store, load_row, &ctx, &db->generation);
        if (rc) {
            if (ret_err) {
                *ret_err = xasprintf("cannot load %s: %s", path, strerror(-rc));
            }
            goto out;
        }
        rebuild_relations(db);
        LOG_INFO("database: loaded %zu rows at generation %llu from %s",
                 ctx.n_rows, (unsigned long long) db->generation, path);
    }
    *ret_db = db;
    db = NULL;
    rc = 0;
out:
    free(path);
    db_close(db);
    return rc;
}

void
db_close(struct db *db)
{
    if (!db) {
        return;
    }
    db_store_close(db->store);
    for (size_t c = 0; c < CLS__COUNT; c++) {
        table_destroy(&db->tables[c]);
    }
    pthread_rwlock_destroy(&db->lock);
    free(db);
}

/* ---- query strings ---- */

static void
put_quoted(struct ds *out, const struct value *v)
{
    ds_put_char(out, '\'');
    db_value_to_query_string(v, out);
    ds_put_char(out, '\'');
}

void
db_value_to_query_string(const struct value *v, struct ds *out)
{
    switch (v->type) {
    case VALUE_NIL:
        break;
    case VALUE_BOOL:
        ds_put_cstr(out, v->u.b ? "true" : "false");
        break;
    case VALUE_INT:
        ds_put_int(out, v->u.i);
        break;
    case VALUE_DOUBLE:
        ds_put_fmt(out, "%.17g", v->u.d);
        break;
    case VALUE_STRING:
    case VALUE_DATETIME:
        ds_put(out, v->u.str.s, v->u.str.len);
        break;
    case VALUE_ARRAY:
        ds_put_char(out, '(');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i) {
                ds_put_char(out, ' ');
            }
            put_quoted(out, v->u.arr.items[i]);
        }
        ds_put_char(out, ')');
        break;
    case VALUE_STRUCT:
        ds_put_char(out, '(');
        for (size_t i = 0; i < v->u.st.n; i++) {
            struct value *k = value_string(v->u.st.m[i].name);
            if (i) {
                ds_put_char(out, ' ');
            }
            ds_put_char(out, '(');
            put_quoted(out, k);
            ds_put_char(out, ' ');
            put_quoted(out, v->u.st.m[i].v);
            ds_put_char(out, ')');
            value_unref(k);
        }
        ds_put_char(out, ')');
        break;
    }
}
