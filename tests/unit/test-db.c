/* test-db.c — unit tests of the in-memory database (db.c): transactions,
 * abort, indices, relation mirroring in both directions, generations,
 * durability across close and reopen, and the default values taken from
 * the datamodel. */
#include <config.h>
#define TEST_MAIN
#include "test.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "db.h"

static char *
temp_dir(void)
{
    char tmpl[] = "/tmp/test-db-XXXXXX";
    return xstrdup(mkdtemp(tmpl));
}

static void
remove_dir(char *dir)
{
    char *cmd = xasprintf("rm -rf '%s'", dir);
    if (system(cmd)) {
        fprintf(stderr, "cannot remove %s\n", dir);
    }
    free(cmd);
    free(dir);
}

static struct value **
fields_for(int cls, const char *uuid)
{
    struct value **f = xcalloc(api_classes[cls].n_fields, sizeof *f);
    f[api_classes[cls].uuid_field] = value_string(uuid);
    return f;
}

static void
insert_vm(struct db_txn *txn, const char *ref, const char *uuid,
          const char *name)
{
    struct value **f = fields_for(CLS_VM, uuid);
    f[F_VM_name_label] = value_string(name);
    CHECK_INT(db_insert(txn, CLS_VM, ref, f, NULL), 0);
    free(f);
}

static void
insert_vbd(struct db_txn *txn, const char *ref, const char *uuid,
           const char *vm)
{
    struct value **f = fields_for(CLS_VBD, uuid);
    f[F_VBD_VM] = value_string(vm);
    CHECK_INT(db_insert(txn, CLS_VBD, ref, f, NULL), 0);
    free(f);
}

TEST(test_db_insert_lookup_and_defaults)
{
    struct db *db = NULL;
    struct db_txn *txn;
    struct db_row *row;

    CHECK_INT(db_open(NULL, &db, NULL), 0);
    txn = db_begin(db);
    insert_vm(txn, "OpaqueRef:vm1", "11111111-1111-1111-1111-111111111111", "a");
    CHECK_INT(db_commit(txn), 0);
    CHECK_INT(db_generation(db), 1);

    db_read_lock(db);
    row = db_lookup(db, CLS_VM, "OpaqueRef:vm1");
    CHECK(row != NULL);
    CHECK(row == db_lookup_uuid(db, CLS_VM, "11111111-1111-1111-1111-111111111111"));
    CHECK_STR(row->fields[F_VM_name_label]->u.str.s, "a");
    /* Defaults come from the datamodel: power_state = Halted. */
    CHECK_STR(row->fields[F_VM_power_state]->u.str.s, "Halted");
    CHECK_INT(row->fields[F_VM_memory_overhead]->u.i, 0);
    CHECK_INT(row->gen_created, 1);
    CHECK_INT(row->gen_modified, 1);
    CHECK_INT(db_class_of_ref(db, "OpaqueRef:vm1"), CLS_VM);
    db_read_unlock(db);
    db_close(db);
}

TEST(test_db_abort_restores_everything)
{
    struct db *db = NULL;
    struct db_txn *txn;

    CHECK_INT(db_open(NULL, &db, NULL), 0);
    txn = db_begin(db);
    insert_vm(txn, "OpaqueRef:vm1", "11111111-1111-1111-1111-111111111111", "a");
    CHECK_INT(db_commit(txn), 0);

    txn = db_begin(db);
    CHECK_INT(db_update(txn, CLS_VM, "OpaqueRef:vm1", F_VM_name_label,
                        value_string("b")), 0);
    insert_vbd(txn, "OpaqueRef:vbd1", "22222222-2222-2222-2222-222222222222",
               "OpaqueRef:vm1");
    CHECK_INT(db_delete(txn, CLS_VM, "OpaqueRef:vm1"), 0);
    db_abort(txn);

    db_read_lock(db);
    CHECK(db_lookup(db, CLS_VBD, "OpaqueRef:vbd1") == NULL);
    CHECK(db_lookup(db, CLS_VM, "OpaqueRef:vm1") != NULL);
    CHECK_STR(db_lookup(db, CLS_VM, "OpaqueRef:vm1")->fields[F_VM_name_label]->u.str.s, "a");
    CHECK_INT(db_lookup(db, CLS_VM, "OpaqueRef:vm1")->fields[F_VM_VBDs]->u.arr.n, 0);
    db_read_unlock(db);
    CHECK_INT(db_generation(db), 1);
    db_close(db);
}

TEST(test_db_relation_follows_the_ref_side)
{
    struct db *db = NULL;
    struct db_txn *txn;
    struct db_row *vm1, *vm2;

    CHECK_INT(db_open(NULL, &db, NULL), 0);
    txn = db_begin(db);
    insert_vm(txn, "OpaqueRef:vm1", "11111111-1111-1111-1111-111111111111", "a");
    insert_vm(txn, "OpaqueRef:vm2", "11111111-1111-1111-1111-111111111112", "b");
    insert_vbd(txn, "OpaqueRef:vbd1", "22222222-2222-2222-2222-222222222221",
               "OpaqueRef:vm1");
    insert_vbd(txn, "OpaqueRef:vbd2", "22222222-2222-2222-2222-222222222222",
               "OpaqueRef:vm1");
    CHECK_INT(db_commit(txn), 0);

    db_read_lock(db);
    vm1 = db_lookup(db, CLS_VM, "OpaqueRef:vm1");
    CHECK_INT(vm1->fields[F_VM_VBDs]->u.arr.n, 2);
    db_read_unlock(db);

    /* Moving a VBD updates both VMs; deleting one shrinks the set. */
    txn = db_begin(db);
    CHECK_INT(db_update(txn, CLS_VBD, "OpaqueRef:vbd2", F_VBD_VM,
                        value_string("OpaqueRef:vm2")), 0);
    CHECK_INT(db_delete(txn, CLS_VBD, "OpaqueRef:vbd1"), 0);
    CHECK_INT(db_commit(txn), 0);
    db_read_lock(db);
    vm1 = db_lookup(db, CLS_VM, "OpaqueRef:vm1");
    vm2 = db_lookup(db, CLS_VM, "OpaqueRef:vm2");
    CHECK_INT(vm1->fields[F_VM_VBDs]->u.arr.n, 0);
    CHECK_INT(vm2->fields[F_VM_VBDs]->u.arr.n, 1);
    CHECK_STR(vm2->fields[F_VM_VBDs]->u.arr.items[0]->u.str.s, "OpaqueRef:vbd2");
    /* The VMs changed too, so they carry the new generation. */
    CHECK_INT(vm1->gen_modified, 2);
    CHECK_INT(vm2->gen_modified, 2);
    db_read_unlock(db);
    db_close(db);
}

TEST(test_db_many_to_many_relation_is_mirrored)
{
    struct db *db = NULL;
    struct db_txn *txn;
    struct value **f;
    struct value *set;

    CHECK_INT(db_open(NULL, &db, NULL), 0);
    txn = db_begin(db);
    f = fields_for(CLS_host, "33333333-3333-3333-3333-333333333333");
    CHECK_INT(db_insert(txn, CLS_host, "OpaqueRef:h", f, NULL), 0);
    free(f);
    f = fields_for(CLS_pool_update, "44444444-4444-4444-4444-444444444444");
    CHECK_INT(db_insert(txn, CLS_pool_update, "OpaqueRef:u", f, NULL), 0);
    free(f);
    set = value_array(1);
    value_array_append(set, value_string("OpaqueRef:u"));
    CHECK_INT(db_update(txn, CLS_host, "OpaqueRef:h", F_host_updates, set), 0);
    CHECK_INT(db_commit(txn), 0);
    db_read_lock(db);
    set = db_lookup(db, CLS_pool_update, "OpaqueRef:u")->fields[F_pool_update_hosts];
    CHECK_INT(set->u.arr.n, 1);
    CHECK_STR(set->u.arr.items[0]->u.str.s, "OpaqueRef:h");
    db_read_unlock(db);
    db_close(db);
}

TEST(test_db_uuid_must_be_unique)
{
    struct db *db = NULL;
    struct db_txn *txn;
    struct value **f;
    const char *dup = NULL;

    CHECK_INT(db_open(NULL, &db, NULL), 0);
    txn = db_begin(db);
    insert_vm(txn, "OpaqueRef:vm1", "11111111-1111-1111-1111-111111111111", "a");
    f = fields_for(CLS_VM, "11111111-1111-1111-1111-111111111111");
    CHECK_INT(db_insert(txn, CLS_VM, "OpaqueRef:vm2", f, &dup), -EEXIST);
    free(f);
    CHECK_STR(dup, "uuid");
    CHECK_INT(db_commit(txn), 0);
    db_close(db);
}

TEST(test_db_reload_keeps_committed_state)
{
    char *dir = temp_dir();
    struct db *db = NULL;
    struct db_txn *txn;
    struct db_row *row;
    struct value *m;

    CHECK_INT(db_open(dir, &db, NULL), 0);
    txn = db_begin(db);
    insert_vm(txn, "OpaqueRef:vm1", "11111111-1111-1111-1111-111111111111", "a");
    insert_vbd(txn, "OpaqueRef:vbd1", "22222222-2222-2222-2222-222222222221",
               "OpaqueRef:vm1");
    CHECK_INT(db_commit(txn), 0);
    txn = db_begin(db);
    m = value_struct(1);
    value_struct_put(m, "key", value_string("v\"al<ue>"));
    CHECK_INT(db_update(txn, CLS_VM, "OpaqueRef:vm1", F_VM_other_config, m), 0);
    CHECK_INT(db_update(txn, CLS_VM, "OpaqueRef:vm1", F_VM_memory_static_max,
                        value_int(INT64_C(1) << 40)), 0);
    CHECK_INT(db_commit(txn), 0);
    /* Sessions are not persisted: this row must not come back. */
    txn = db_begin(db);
    {
        struct value **sf = fields_for(CLS_session, "55555555-5555-5555-5555-555555555555");
        CHECK_INT(db_insert(txn, CLS_session, "OpaqueRef:s", sf, NULL), 0);
        free(sf);
    }
    CHECK_INT(db_commit(txn), 0);
    db_close(db);

    db = NULL;
    CHECK_INT(db_open(dir, &db, NULL), 0);
    CHECK(db != NULL);
    if (db) {
        db_read_lock(db);
        row = db_lookup(db, CLS_VM, "OpaqueRef:vm1");
        CHECK(row != NULL);
        if (row) {
            CHECK_STR(value_struct_get_string(row->fields[F_VM_other_config], "key"),
                      "v\"al<ue>");
            CHECK_INT(row->fields[F_VM_memory_static_max]->u.i, INT64_C(1) << 40);
            /* The computed side is rebuilt on load. */
            CHECK_INT(row->fields[F_VM_VBDs]->u.arr.n, 1);
        }
        CHECK(db_lookup(db, CLS_session, "OpaqueRef:s") == NULL);
        db_read_unlock(db);
        CHECK(db_generation(db) >= 2);
        db_close(db);
    }
    remove_dir(dir);
}

TEST(test_db_snapshots_survive_later_writes)
{
    struct db *db = NULL;
    struct db_txn *txn;
    struct db_row *snap;

    CHECK_INT(db_open(NULL, &db, NULL), 0);
    txn = db_begin(db);
    insert_vm(txn, "OpaqueRef:vm1", "11111111-1111-1111-1111-111111111111", "a");
    CHECK_INT(db_commit(txn), 0);
    db_read_lock(db);
    snap = db_row_ref(db_lookup(db, CLS_VM, "OpaqueRef:vm1"));
    db_read_unlock(db);
    txn = db_begin(db);
    CHECK_INT(db_update(txn, CLS_VM, "OpaqueRef:vm1", F_VM_name_label,
                        value_string("b")), 0);
    CHECK_INT(db_delete(txn, CLS_VM, "OpaqueRef:vm1"), 0);
    CHECK_INT(db_commit(txn), 0);
    CHECK_STR(snap->fields[F_VM_name_label]->u.str.s, "a");
    db_row_unref(snap);
    db_close(db);
}

TEST(test_db_query_string_forms)
{
    struct ds ds = DS_EMPTY;
    struct value *set = value_array(2), *map = value_struct(1);

    value_array_append(set, value_string("a"));
    value_array_append(set, value_string("b"));
    value_struct_put(map, "k", value_string("v"));
    db_value_to_query_string(set, &ds);
    CHECK_STR(ds_cstr(&ds), "('a' 'b')");
    ds_clear(&ds);
    db_value_to_query_string(map, &ds);
    CHECK_STR(ds_cstr(&ds), "(('k' 'v'))");
    ds_clear(&ds);
    db_value_to_query_string(value_true(), &ds);
    CHECK_STR(ds_cstr(&ds), "true");
    value_unref(set);
    value_unref(map);
    ds_destroy(&ds);
}

TEST(test_db_name_label_index_follows_changes)
{
    struct db *db = NULL;
    struct db_txn *txn;
    struct db_row **rows = NULL;
    size_t n = 0;

    CHECK_INT(db_open(NULL, &db, NULL), 0);
    txn = db_begin(db);
    insert_vm(txn, "OpaqueRef:vm1", "11111111-1111-1111-1111-111111111111", "same");
    insert_vm(txn, "OpaqueRef:vm2", "11111111-1111-1111-1111-111111111112", "same");
    CHECK_INT(db_commit(txn), 0);
    db_read_lock(db);
    db_lookup_name_label(db, CLS_VM, "same", &rows, &n);
    db_read_unlock(db);
    CHECK_INT(n, 2);

    txn = db_begin(db);
    CHECK_INT(db_update(txn, CLS_VM, "OpaqueRef:vm1", F_VM_name_label,
                        value_string("other")), 0);
    CHECK_INT(db_commit(txn), 0);
    n = 0;
    db_read_lock(db);
    db_lookup_name_label(db, CLS_VM, "same", &rows, &n);
    CHECK_INT(n, 1);
    CHECK_STR(rows[0]->ref, "OpaqueRef:vm2");
    n = 0;
    db_lookup_name_label(db, CLS_VM, "other", &rows, &n);
    CHECK_INT(n, 1);
    db_read_unlock(db);

    /* An aborted rename leaves the index as it was. */
    txn = db_begin(db);
    CHECK_INT(db_update(txn, CLS_VM, "OpaqueRef:vm2", F_VM_name_label,
                        value_string("gone")), 0);
    db_abort(txn);
    n = 0;
    db_read_lock(db);
    db_lookup_name_label(db, CLS_VM, "same", &rows, &n);
    CHECK_INT(n, 1);
    n = 0;
    db_lookup_name_label(db, CLS_VM, "gone", &rows, &n);
    CHECK_INT(n, 0);
    db_read_unlock(db);
    free(rows);
    db_close(db);
}

TEST(test_db_runtime_fields_are_not_written_to_disk)
{
    char *dir = temp_dir();
    struct db *db = NULL;
    struct db_txn *txn;
    struct value **f;
    uint64_t gen;

    CHECK_INT(db_open(dir, &db, NULL), 0);
    txn = db_begin(db);
    f = fields_for(CLS_VM_metrics, "66666666-6666-6666-6666-666666666666");
    f[F_VM_metrics_VCPUs_number] = value_int(2);
    CHECK_INT(db_insert(txn, CLS_VM_metrics, "OpaqueRef:m", f, NULL), 0);
    free(f);
    CHECK_INT(db_commit(txn), 0);
    /* A statistics update changes the row in memory (and its generation,
     * for events) but is not a durable write. */
    txn = db_begin(db);
    CHECK_INT(db_update(txn, CLS_VM_metrics, "OpaqueRef:m",
                        F_VM_metrics_memory_actual, value_int(12345)), 0);
    CHECK_INT(db_commit(txn), 0);
    gen = db_generation(db);
    CHECK_INT(gen, 2);
    db_close(db);

    db = NULL;
    CHECK_INT(db_open(dir, &db, NULL), 0);
    if (db) {
        struct db_row *row;
        db_read_lock(db);
        row = db_lookup(db, CLS_VM_metrics, "OpaqueRef:m");
        CHECK(row != NULL);
        if (row) {
            CHECK_INT(row->fields[F_VM_metrics_VCPUs_number]->u.i, 2);
            CHECK_INT(row->fields[F_VM_metrics_memory_actual]->u.i, 0);
        }
        db_read_unlock(db);
        db_close(db);
    }
    remove_dir(dir);
}
