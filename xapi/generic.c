/* generic.c — one implementation, over the schema, of every generated
 * message: field getters and setters, map and set mutators, get_record,
 * get_all, get_all_records(_where), get_by_uuid, get_by_name_label,
 * create and destroy.  About 1,350 messages of the API are served here;
 * rpc.c calls api_generic() when no hand-written handler is registered. */
#include <config.h>
#include "api.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "query.h"
#include "types.h"

static const char *
arg_str(struct value **args, size_t i)
{
    return args[i]->type == VALUE_STRING ? args[i]->u.str.s : "";
}

static bool
is_null_ref(const char *ref)
{
    return !*ref || !strcmp(ref, "OpaqueRef:NULL");
}

/* Checks that every non-null ref inside v (of type t) names a row of the
 * right class; sets *ret_bad to the first dangling one. */
static bool
refs_valid(struct db *db, const struct api_type *t, const struct value *v,
           int *ret_cls, const char **ret_bad)
{
    switch (t->kind) {
    case API_REF:
        if (v->type != VALUE_STRING || is_null_ref(v->u.str.s) || t->cls < 0) {
            return true;
        }
        if (!db_lookup(db, t->cls, v->u.str.s)) {
            *ret_cls = t->cls;
            *ret_bad = v->u.str.s;
            return false;
        }
        return true;
    case API_SET:
        for (size_t i = 0; v->type == VALUE_ARRAY && i < v->u.arr.n; i++) {
            if (!refs_valid(db, t->elem, v->u.arr.items[i], ret_cls, ret_bad)) {
                return false;
            }
        }
        return true;
    case API_MAP:
        for (size_t i = 0; v->type == VALUE_STRUCT && i < v->u.st.n; i++) {
            if (!refs_valid(db, t->elem, v->u.st.m[i].v, ret_cls, ret_bad)) {
                return false;
            }
        }
        return true;
    default:
        return true;
    }
}

static const char *
row_uuid_or_ref(const struct db_row *row)
{
    int f = api_classes[row->cls].uuid_field;

    return f >= 0 ? row->fields[f]->u.str.s : row->ref;
}

static int
generic_get(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct db *db = ctx->x->db;
    const char *ref = arg_str(args, 1);
    struct db_row *row;

    db_read_lock(db);
    row = db_lookup(db, ctx->msg->cls, ref);
    if (row) {
        *ret = value_ref(row->fields[ctx->msg->field]);
    }
    db_read_unlock(db);
    return row ? 0 : api_fail_handle(ctx, ctx->msg->cls, ref);
}

/* Applies a change to one field of one row inside a transaction; compute
 * builds the new value from the current one (or fails). */
typedef int field_change_fn(struct api_ctx *ctx, struct value **args,
                            const struct db_row *row, struct value **ret_new);

static int
change_field(struct api_ctx *ctx, struct value **args, field_change_fn *fn)
{
    struct db *db = ctx->x->db;
    const struct api_message *m = ctx->msg;
    const struct api_field *fd = &api_classes[m->cls].fields[m->field];
    const char *ref = arg_str(args, 1);
    struct db_txn *txn = db_begin(db);
    struct value *nv = NULL;
    struct db_row *row;
    const char *bad = NULL;
    int bad_cls = -1, rc;

    row = db_lookup(db, m->cls, ref);
    if (!row) {
        db_abort(txn);
        return api_fail_handle(ctx, m->cls, ref);
    }
    if (fn(ctx, args, row, &nv)) {
        db_abort(txn);
        return -1;
    }
    if (!refs_valid(db, fd->type, nv, &bad_cls, &bad)) {
        value_unref(nv);
        db_abort(txn);
        return api_fail_handle(ctx, bad_cls, bad);
    }
    rc = db_update(txn, m->cls, ref, m->field, nv);
    if (rc == -EEXIST) {
        db_abort(txn);
        return api_fail(ctx, ERR_DB_UNIQUENESS_CONSTRAINT_VIOLATION,
                        api_classes[m->cls].name, fd->name, "");
    }
    if (rc) {
        db_abort(txn);
        return api_fail_internal(ctx, "update failed: %s", strerror(-rc));
    }
    return api_commit(ctx, txn);
}

static int
compute_set(struct api_ctx *ctx, struct value **args,
            const struct db_row *row, struct value **ret_new)
{
    *ret_new = value_ref(args[2]);
    return 0;
}

static int
compute_add_to(struct api_ctx *ctx, struct value **args,
               const struct db_row *row, struct value **ret_new)
{
    const struct value *cur = row->fields[ctx->msg->field];
    const char *key = arg_str(args, 2);
    struct value *old = value_struct_get(cur, key);
    struct value *nv;

    if (old) {
        return api_fail(ctx, ERR_MAP_DUPLICATE_KEY,
                        api_classes[ctx->msg->cls].name,
                        api_classes[ctx->msg->cls].fields[ctx->msg->field].name,
                        row_uuid_or_ref(row), key);
    }
    nv = value_copy_shallow(cur);
    value_struct_put(nv, key, value_ref(args[3]));
    *ret_new = nv;
    return 0;
}

static int
compute_remove_from(struct api_ctx *ctx, struct value **args,
                    const struct db_row *row, struct value **ret_new)
{
    struct value *nv = value_copy_shallow(row->fields[ctx->msg->field]);

    value_struct_remove(nv, arg_str(args, 2));
    *ret_new = nv;
    return 0;
}

static int
compute_add(struct api_ctx *ctx, struct value **args,
            const struct db_row *row, struct value **ret_new)
{
    const struct value *cur = row->fields[ctx->msg->field];

    for (size_t i = 0; i < cur->u.arr.n; i++) {
        if (value_equal(cur->u.arr.items[i], args[2])) {
            *ret_new = value_ref((struct value *) cur);
            return 0;
        }
    }
    *ret_new = value_copy_shallow(cur);
    value_array_append(*ret_new, value_ref(args[2]));
    return 0;
}

static int
compute_remove(struct api_ctx *ctx, struct value **args,
               const struct db_row *row, struct value **ret_new)
{
    const struct value *cur = row->fields[ctx->msg->field];
    struct value *nv = value_array(cur->u.arr.n);

    for (size_t i = 0; i < cur->u.arr.n; i++) {
        if (!value_equal(cur->u.arr.items[i], args[2])) {
            value_array_append(nv, value_ref(cur->u.arr.items[i]));
        }
    }
    *ret_new = nv;
    return 0;
}

static int
generic_get_record(struct api_ctx *ctx, struct value **args,
                   struct value **ret)
{
    struct db *db = ctx->x->db;
    const char *ref = arg_str(args, 1);
    struct db_row *row;

    db_read_lock(db);
    row = db_row_ref(db_lookup(db, ctx->msg->cls, ref));
    db_read_unlock(db);
    if (!row) {
        return api_fail_handle(ctx, ctx->msg->cls, ref);
    }
    *ret = api_row_record(row);
    db_row_unref(row);
    return 0;
}

/* Takes references to every row of the class under the read lock, so the
 * records can be built without holding it. */
static size_t
snapshot_rows(struct db *db, int cls, struct db_row ***ret_rows)
{
    struct db_row **rows;
    size_t n;

    db_read_lock(db);
    n = db_table_count(db, cls);
    rows = xmalloc((n ? n : 1) * sizeof *rows);
    for (size_t i = 0; i < n; i++) {
        rows[i] = db_row_ref(db_table_row(db, cls, i));
    }
    db_read_unlock(db);
    *ret_rows = rows;
    return n;
}

static void
free_rows(struct db_row **rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        db_row_unref(rows[i]);
    }
    free(rows);
}

static int
generic_get_all(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct db_row **rows;
    size_t n = snapshot_rows(ctx->x->db, ctx->msg->cls, &rows);
    struct value *arr = value_array(n);

    for (size_t i = 0; i < n; i++) {
        value_array_append(arr, value_string(rows[i]->ref));
    }
    free_rows(rows, n);
    *ret = arr;
    return 0;
}

struct where_ctx {
    const struct db_row *row;
};

static bool
where_get_field(void *aux, const char *name, struct ds *out)
{
    struct where_ctx *w = aux;
    int f = api_field_find(w->row->cls, name);

    if (f < 0 && strstr(name, "__")) {
        /* XenServer's queries name fields by their database columns,
         * where a namespace is joined with "__" ("name__label",
         * "PV__kernel"); the API joins it with "_". */
        struct ds api = DS_EMPTY;
        for (const char *p = name; *p; p++) {
            ds_put_char(&api, *p);
            if (p[0] == '_' && p[1] == '_') {
                p++;
            }
        }
        f = api_field_find(w->row->cls, ds_cstr(&api));
        ds_destroy(&api);
    }
    if (f < 0) {
        return false;
    }
    db_value_to_query_string(w->row->fields[f], out);
    return true;
}

static int
generic_get_all_records(struct api_ctx *ctx, struct value **args,
                        struct value **ret, bool where)
{
    struct query *q = NULL;
    struct db_row **rows;
    struct value *st;
    char *err = NULL;
    size_t n;

    if (where && query_parse(arg_str(args, 1), &q, &err)) {
        api_fail(ctx, ERR_INVALID_VALUE, "expr", err);
        free(err);
        return -1;
    }
    n = snapshot_rows(ctx->x->db, ctx->msg->cls, &rows);
    st = value_struct(n);
    for (size_t i = 0; i < n; i++) {
        if (q) {
            struct where_ctx w = { rows[i] };
            const char *missing = NULL;
            int r = query_eval(q, where_get_field, &w, &missing);
            if (r < 0) {
                api_fail(ctx, ERR_INVALID_VALUE, "field", missing ? missing : "");
                value_unref(st);
                free_rows(rows, n);
                query_free(q);
                return -1;
            }
            if (!r) {
                continue;
            }
        }
        value_struct_put(st, rows[i]->ref, api_row_record(rows[i]));
    }
    free_rows(rows, n);
    query_free(q);
    *ret = st;
    return 0;
}

static int
generic_get_by_uuid(struct api_ctx *ctx, struct value **args,
                    struct value **ret)
{
    struct db *db = ctx->x->db;
    const char *uuid = arg_str(args, 1);
    struct db_row *row;

    db_read_lock(db);
    row = db_lookup_uuid(db, ctx->msg->cls, uuid);
    if (row) {
        *ret = value_string(row->ref);
    }
    db_read_unlock(db);
    if (!row) {
        return api_fail(ctx, ERR_UUID_INVALID, api_classes[ctx->msg->cls].name,
                        uuid);
    }
    return 0;
}

static int
generic_get_by_name_label(struct api_ctx *ctx, struct value **args,
                          struct value **ret)
{
    struct db *db = ctx->x->db;
    struct db_row **rows = NULL;
    struct value *arr;
    size_t n = 0;

    db_read_lock(db);
    db_lookup_name_label(db, ctx->msg->cls, arg_str(args, 1), &rows, &n);
    arr = value_array(n);
    for (size_t i = 0; i < n; i++) {
        value_array_append(arr, value_string(rows[i]->ref));
    }
    db_read_unlock(db);
    free(rows);
    *ret = arr;
    return 0;
}

/* Runtime fields that XenAPI sets when an object is created although the
 * datamodel gives them no default: a new VM has no domain (domid -1). */
static const struct {
    int cls;
    int field;
    int64_t value;
} create_initial_ints[] = {
    { CLS_VM, F_VM_domid, -1 },
};

static int
generic_create(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const int cls = ctx->msg->cls;
    const struct api_class *c = &api_classes[cls];
    struct db *db = ctx->x->db;
    struct value *rec = args[1];
    struct value *fields[128] = { NULL };
    struct db_txn *txn = NULL;
    const char *dup = NULL, *bad = NULL;
    char ref[48], uuid[40];
    int bad_cls = -1, rc = -1;

    for (size_t i = 0; i < c->n_fields; i++) {
        const struct api_field *fd = &c->fields[i];
        struct value *v;
        if (fd->qualifier == API_RO_RUNTIME || fd->relation_set) {
            continue;
        }
        v = value_struct_get(rec, fd->name);
        if (!v) {
            if (!fd->default_text) {
                api_fail(ctx, ERR_FIELD_TYPE_ERROR, fd->name);
                goto out;
            }
            continue;
        }
        if (api_coerce(fd->type, v, &fields[i])) {
            api_fail(ctx, ERR_FIELD_TYPE_ERROR, fd->name);
            goto out;
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(create_initial_ints); i++) {
        if (create_initial_ints[i].cls == cls) {
            value_unref(fields[create_initial_ints[i].field]);
            fields[create_initial_ints[i].field] =
                value_int(create_initial_ints[i].value);
        }
    }
    db_new_ref(ref);
    if (c->uuid_field >= 0) {
        uuid_generate(uuid);
        value_unref(fields[c->uuid_field]);
        fields[c->uuid_field] = value_string(uuid);
    }
    txn = db_begin(db);
    for (size_t i = 0; i < c->n_fields; i++) {
        if (fields[i] && !refs_valid(db, c->fields[i].type, fields[i],
                                     &bad_cls, &bad)) {
            api_fail_handle(ctx, bad_cls, bad);
            goto out;
        }
    }
    rc = db_insert(txn, cls, ref, fields, &dup);
    if (!rc && cls == CLS_VM) {
        lifecycle_refresh_allowed(txn, ref, false);
    }
    if (!rc && (cls == CLS_VBD || cls == CLS_VIF)) {
        const char *vm = value_struct_get_string(rec, "VM");
        if (vm) {
            vmops_refresh_devices(txn, vm);
        }
    }
    if (rc) {
        api_fail(ctx, ERR_DB_UNIQUENESS_CONSTRAINT_VIOLATION, c->name,
                 dup ? dup : "", "");
        rc = -1;
        goto out;
    }
    rc = api_commit(ctx, txn);
    txn = NULL;
    if (!rc) {
        *ret = value_string(ref);
    }
out:
    db_abort(txn);
    for (size_t i = 0; i < c->n_fields; i++) {
        value_unref(fields[i]);
    }
    return rc ? -1 : 0;
}

static int
generic_destroy(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct db_txn *txn = db_begin(ctx->x->db);
    const char *ref = arg_str(args, 1);

    if (db_delete(txn, ctx->msg->cls, ref)) {
        db_abort(txn);
        return api_fail_handle(ctx, ctx->msg->cls, ref);
    }
    return api_commit(ctx, txn);
}

int
api_generic(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    switch (ctx->msg->kind) {
    case MSG_GET:
        return generic_get(ctx, args, ret);
    case MSG_SET:
        return change_field(ctx, args, compute_set);
    case MSG_ADD_TO:
        return change_field(ctx, args, compute_add_to);
    case MSG_REMOVE_FROM:
        return change_field(ctx, args, compute_remove_from);
    case MSG_ADD:
        return change_field(ctx, args, compute_add);
    case MSG_REMOVE:
        return change_field(ctx, args, compute_remove);
    case MSG_GET_RECORD:
        return generic_get_record(ctx, args, ret);
    case MSG_GET_ALL:
        return generic_get_all(ctx, args, ret);
    case MSG_GET_ALL_RECORDS:
        return generic_get_all_records(ctx, args, ret, false);
    case MSG_GET_ALL_RECORDS_WHERE:
        return generic_get_all_records(ctx, args, ret, true);
    case MSG_GET_BY_UUID:
        return generic_get_by_uuid(ctx, args, ret);
    case MSG_GET_BY_NAME_LABEL:
        return generic_get_by_name_label(ctx, args, ret);
    case MSG_CREATE:
        return generic_create(ctx, args, ret);
    case MSG_DESTROY:
        return generic_destroy(ctx, args, ret);
    case MSG_CUSTOM:
        break;
    }
    return api_fail(ctx, ERR_NOT_IMPLEMENTED, ctx->msg->name);
}
