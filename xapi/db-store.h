/* db-store.h — durable storage of the database in SQLite (WAL mode).
 *
 * db.c keeps every table in memory; this module makes each committed
 * transaction durable before the call that made it returns.  A writer
 * thread takes all transactions queued since its last commit and writes
 * them in one SQLite transaction (group commit), so eight concurrent
 * writers cost about one fsync, not eight.  Rows are stored whole, keyed by
 * (class, ref), as opaque text produced by db.c; the current generation is
 * stored with them in the same SQLite transaction, so a reload sees exactly
 * the state after some prefix of the submitted transactions.
 *
 * Threading: db_store_submit() may be called from any thread but calls
 * must be made in increasing generation order (db.c submits under its
 * write lock).  db_store_wait() may be called from any thread.  Functions
 * return 0 or a negative errno value. */
#ifndef DB_STORE_H
#define DB_STORE_H 1

#include <stddef.h>
#include <stdint.h>

struct db_store;

struct db_store_change {
    const char *cls;        /* class name, e.g. "VM" */
    const char *ref;        /* "OpaqueRef:..." */
    const char *data;       /* row image; NULL deletes the row */
};

/* Opens (creating if needed) the database file at path, in WAL mode with
 * synchronous=FULL, and starts the writer thread. */
int db_store_open(const char *path, struct db_store **ret_store,
                  char **ret_err);

/* Calls cb once for every stored row, then sets *ret_generation to the
 * generation of the last durable transaction (0 for a new file).  Call
 * before the first submit. */
int db_store_load(struct db_store *store,
                  void (*cb)(void *aux, const char *cls, const char *ref,
                             const char *data),
                  void *aux, uint64_t *ret_generation);

/* Queues the changes of one transaction (all strings are copied).  Never
 * blocks on I/O. */
void db_store_submit(struct db_store *store, uint64_t generation,
                     const struct db_store_change *changes, size_t n);

/* Blocks until the transaction with this generation (and every earlier
 * one) is durable.  Returns 0, or -EIO if the write failed (the store is
 * then broken and every later wait fails too). */
int db_store_wait(struct db_store *store, uint64_t generation);

/* Generation of the last durable transaction. */
uint64_t db_store_durable_generation(struct db_store *store);

/* Number of SQLite transactions the writer has committed since open, for
 * tests and benchmarks that check that group commit really groups. */
uint64_t db_store_commit_count(struct db_store *store);

/* Flushes what is queued, stops the writer, closes the file.  Accepts
 * NULL. */
void db_store_close(struct db_store *store);

#endif
