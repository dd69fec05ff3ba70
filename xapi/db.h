/* db.h — the pool database: one in-memory table per datamodel class, with
 * indices on ref, uuid and name_label, kept durable by db-store.c.
 *
 * Rows are immutable, reference-counted snapshots (struct db_row): a write
 * replaces a row by a new version, so a reader that took a reference keeps
 * a consistent view without holding any lock, and events can hand out the
 * last snapshot of a deleted row.
 *
 * Locking: lookups and iteration (db_lookup*, db_table_*) need either the
 * read lock (db_read_lock) or an open transaction.  A transaction
 * (db_begin .. db_commit/db_abort) holds the write lock; its changes are
 * applied in place with an undo log, visible to the writer only.  Commit
 * bumps the generation (one per transaction), stamps every changed row
 * with it, queues the redo record to the store, releases the lock and then
 * waits until the record is durable, so a call that changed the database
 * returns only once its change would survive kill -9.
 *
 * Relations: a field with an inverse (VBD.VM <-> VM.VBDs) is mirrored on
 * the other side by the transaction functions themselves, so both sides
 * always agree.  Computed set sides are not stored on disk; they are
 * rebuilt on load. */
#ifndef DB_H
#define DB_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "schema.h"
#include "value.h"

struct db;
struct db_txn;

struct db_row {
    int refcnt;                 /* atomic */
    int cls;
    bool txn_owned;             /* private to the open transaction */
    char *ref;
    uint64_t gen_created;
    uint64_t gen_modified;
    struct value *fields[];     /* api_classes[cls].n_fields values */
};

struct db_row *db_row_ref(struct db_row *row);
void db_row_unref(struct db_row *row);              /* accepts NULL */

/* Opens the database kept in dir/state.db (creating it if needed) and loads
 * every stored row.  With dir NULL the database is memory-only (tests). */
int db_open(const char *dir, struct db **ret_db, char **ret_err);
void db_close(struct db *db);                       /* accepts NULL */
uint64_t db_generation(struct db *db);

void db_read_lock(struct db *db);
void db_read_unlock(struct db *db);

/* Lookups (see locking above).  Returned rows are borrowed. */
struct db_row *db_lookup(struct db *db, int cls, const char *ref);
struct db_row *db_lookup_uuid(struct db *db, int cls, const char *uuid);
/* Finds the class of a ref in any table; returns -1 if none. */
int db_class_of_ref(struct db *db, const char *ref);
size_t db_table_count(struct db *db, int cls);
struct db_row *db_table_row(struct db *db, int cls, size_t i);
/* Appends to *rows the rows whose name_label is label. */
void db_lookup_name_label(struct db *db, int cls, const char *label,
                          struct db_row ***rows, size_t *n);

/* Transactions. */
struct db_txn *db_begin(struct db *db);
/* Inserts a new row.  fields holds n_fields values (ownership moves in);
 * NULL entries get the field's default.  Returns 0, -EEXIST if the ref or
 * uuid is taken (*ret_dup_field names the field). */
int db_insert(struct db_txn *txn, int cls, const char *ref,
              struct value **fields, const char **ret_dup_field);
/* A fresh field array for a row of cls (all NULL, i.e. defaults), with
 * the uuid set when uuid is not NULL; db_insert_fields inserts it and
 * frees the array (the values move into the row either way). */
struct value **db_fields_new(int cls, const char *uuid);
int db_insert_fields(struct db_txn *txn, int cls, const char *ref,
                     struct value **fields);
/* Replaces one field (ownership of v moves in).  -ENOENT if no row,
 * -EEXIST if a uuid would be duplicated. */
int db_update(struct db_txn *txn, int cls, const char *ref, int field,
              struct value *v);
int db_delete(struct db_txn *txn, int cls, const char *ref);
/* Commits; returns 0 or -EIO if the change could not be made durable (it
 * stays applied in memory, as the store is then broken). */
int db_commit(struct db_txn *txn);
void db_abort(struct db_txn *txn);
struct db *db_txn_db(struct db_txn *txn);

/* Observers of commits (events).  Called under the write lock after the
 * generation is assigned, once per changed row: old is NULL for a new row,
 * new is NULL for a deleted one.  The callee may take references. */
typedef void db_commit_hook_fn(void *aux, uint64_t generation, int cls,
                               const char *ref, struct db_row *old_row,
                               struct db_row *new_row);
void db_set_commit_hook(struct db *db, db_commit_hook_fn *fn, void *aux);

/* Default value of a field (borrowed, immortal for the process). */
struct value *db_field_default(int cls, int field);
/* Converts v (already of the field's value shape) into the string form
 * used by query expressions: ints in decimal, bools true/false, sets and
 * maps in XenAPI's database form ('a' 'b') and (('k' 'v')). */
void db_value_to_query_string(const struct value *v, struct ds *out);

/* Makes a new ref "OpaqueRef:<uuid>"; buf must hold 48 bytes. */
void db_new_ref(char *buf);

#endif
