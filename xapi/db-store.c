/* db-store.c — durable storage of the database in SQLite, as db-store.h
 * describes.
 *
 * db.c hands over each committed transaction with db_store_submit(); a
 * single writer thread owns the SQLite connection from then on, and turns
 * everything queued since its last commit into one SQLite transaction
 * (group commit).  Callers block in db_store_wait() on a condition variable
 * until the writer publishes a durable generation at or past theirs.  The
 * file is in WAL mode with synchronous=FULL, so each COMMIT fsyncs the WAL;
 * recovery after a crash is SQLite's own WAL replay on the next open. */
#include <config.h>
#include "db-store.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* The layout version kept in SQLite's user_version, so that a later
 * release can tell which layout a file has and migrate it. */
#define DB_STORE_FORMAT 1

/* How long the writer waits for a lock held by another connection (say, an
 * administrator's sqlite3 shell) before it gives up and breaks the store.
 * Nothing in the daemon itself ever contends for the lock. */
#define DB_STORE_BUSY_TIMEOUT_MS 30000

/* One submitted transaction.  The change array and every string it points
 * to live in the same allocation, right after the struct, so that queuing
 * a transaction costs one malloc and freeing it one free. */
struct pending_txn {
    struct pending_txn *next;
    uint64_t generation;
    size_t n;
    struct db_store_change changes[];
};

struct db_store {
    char *path;
    sqlite3 *db;

    /* Statements the writer runs for every batch; prepared once. */
    sqlite3_stmt *begin_stmt;
    sqlite3_stmt *commit_stmt;
    sqlite3_stmt *rollback_stmt;
    sqlite3_stmt *upsert_stmt;
    sqlite3_stmt *delete_stmt;
    sqlite3_stmt *set_generation_stmt;

    pthread_t writer;
    bool writer_started;

    /* Everything below is protected by mutex. */
    pthread_mutex_t mutex;
    pthread_cond_t work_cond;       /* writer: queue non-empty or stopping */
    pthread_cond_t durable_cond;    /* waiters: durable or broken changed */
    struct pending_txn *queue_head;
    struct pending_txn *queue_tail;
    uint64_t submitted_generation;  /* last generation queued (or loaded) */
    uint64_t durable_generation;    /* last generation committed to disk */
    uint64_t commit_count;          /* SQLite transactions the writer made */
    bool submitted;                 /* anything queued since open */
    bool broken;                    /* a write failed; nothing more is written */
    bool stopping;                  /* db_store_close() wants the writer out */
};

static void *writer_main(void *store_);

static int
sqlite_rc_to_errno(sqlite3 *db, int src)
{
    switch (src & 0xff) {
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_CANTOPEN: {
        int e = db ? sqlite3_system_errno(db) : 0;
        return e > 0 ? -e : -EIO;
    }
    default:
        return -EIO;
    }
}

/* Runs one or more statements that return no rows we care about. */
static int
exec_sql(struct db_store *store, const char *sql, char **ret_err)
{
    int src = sqlite3_exec(store->db, sql, NULL, NULL, NULL);

    if (src != SQLITE_OK) {
        if (ret_err) {
            *ret_err = xasprintf("%s: %s: %s", store->path, sql,
                                 sqlite3_errmsg(store->db));
        }
        return sqlite_rc_to_errno(store->db, src);
    }
    return 0;
}

static int
prepare(struct db_store *store, const char *sql, sqlite3_stmt **ret_stmt,
        char **ret_err)
{
    sqlite3_stmt *stmt = NULL;
    int src;

    /* SQLITE_PREPARE_PERSISTENT: these statements live as long as the
     * connection, which lets SQLite keep them out of its lookaside pool. */
    src = sqlite3_prepare_v3(store->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
                             &stmt, NULL);
    if (src != SQLITE_OK) {
        *ret_err = xasprintf("%s: cannot prepare \"%s\": %s", store->path,
                             sql, sqlite3_errmsg(store->db));
        sqlite3_finalize(stmt);
        return sqlite_rc_to_errno(store->db, src);
    }
    *ret_stmt = stmt;
    return 0;
}

/* Reads the single-valued result of a query such as a PRAGMA. */
static int
query_int64(struct db_store *store, const char *sql, int64_t *ret_v,
            char **ret_err)
{
    sqlite3_stmt *stmt = NULL;
    int rc, src;

    rc = prepare(store, sql, &stmt, ret_err);
    if (rc) {
        goto out;
    }
    src = sqlite3_step(stmt);
    if (src != SQLITE_ROW) {
        *ret_err = xasprintf("%s: %s: %s", store->path, sql,
                             src == SQLITE_DONE ? "no result"
                             : sqlite3_errmsg(store->db));
        rc = src == SQLITE_DONE ? -EIO : sqlite_rc_to_errno(store->db, src);
        goto out;
    }
    *ret_v = sqlite3_column_int64(stmt, 0);
    rc = 0;
out:
    sqlite3_finalize(stmt);
    return rc;
}

/* Switches the file to WAL mode.  The pragma answers with the mode now in
 * force rather than failing, so a file system that cannot do WAL (no
 * shared memory) shows up as an answer other than "wal". */
static int
set_wal_mode(struct db_store *store, char **ret_err)
{
    sqlite3_stmt *stmt = NULL;
    const char *sql = "PRAGMA journal_mode=WAL";
    const unsigned char *mode;
    int rc, src;

    rc = prepare(store, sql, &stmt, ret_err);
    if (rc) {
        goto out;
    }
    src = sqlite3_step(stmt);
    if (src != SQLITE_ROW) {
        *ret_err = xasprintf("%s: %s: %s", store->path, sql,
                             sqlite3_errmsg(store->db));
        rc = sqlite_rc_to_errno(store->db, src);
        goto out;
    }
    mode = sqlite3_column_text(stmt, 0);
    if (!mode || strcmp((const char *) mode, "wal")) {
        *ret_err = xasprintf("%s: cannot use WAL mode (journal mode is %s)",
                             store->path, mode ? (const char *) mode : "?");
        rc = -ENOTSUP;
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(stmt);
    return rc;
}

/* Makes the directory entry of a newly created file durable.  SQLite
 * syncs the directory when it creates a journal or WAL file, but not when
 * it creates the main database file; without this a power cut soon after
 * first start could keep the WAL and lose the file it belongs to. */
static int
sync_parent_dir(const char *path)
{
    char *copy = xstrdup(path);
    int fd = -1;
    int rc;

    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        rc = -errno;
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    free(copy);
    return rc;
}

/* Creates the tables of a new file, or checks the layout of an old one,
 * in one transaction so that a crash cannot leave half a schema. */
static int
init_schema(struct db_store *store, char **ret_err)
{
    char *set_format = NULL;
    bool in_txn = false;
    int64_t format = 0;
    int rc;

    rc = exec_sql(store, "BEGIN IMMEDIATE", ret_err);
    if (rc) {
        goto out;
    }
    in_txn = true;
    rc = query_int64(store, "PRAGMA user_version", &format, ret_err);
    if (rc) {
        goto out;
    }
    if (format > DB_STORE_FORMAT) {
        *ret_err = xasprintf("%s: database format %lld is newer than this "
                             "program's (%d)", store->path,
                             (long long) format, DB_STORE_FORMAT);
        rc = -EPROTO;
        goto out;
    }
    /* The rows table keeps its rowid (no WITHOUT ROWID): rows are
     * kilobytes of text, and SQLite advises rowid tables for large rows. */
    rc = exec_sql(store,
                  "CREATE TABLE IF NOT EXISTS rows ("
                  "  class TEXT NOT NULL,"
                  "  ref TEXT NOT NULL,"
                  "  data TEXT NOT NULL,"
                  "  PRIMARY KEY (class, ref));"
                  "CREATE TABLE IF NOT EXISTS meta ("
                  "  id INTEGER PRIMARY KEY CHECK (id = 0),"
                  "  generation INTEGER NOT NULL);"
                  "INSERT OR IGNORE INTO meta (id, generation) VALUES (0, 0);",
                  ret_err);
    if (rc) {
        goto out;
    }
    set_format = xasprintf("PRAGMA user_version = %d", DB_STORE_FORMAT);
    rc = exec_sql(store, set_format, ret_err);
    if (rc) {
        goto out;
    }
    rc = exec_sql(store, "COMMIT", ret_err);
    if (rc) {
        goto out;
    }
    in_txn = false;
out:
    if (in_txn) {
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
    }
    free(set_format);
    return rc;
}

int
db_store_open(const char *path, struct db_store **ret_store, char **ret_err)
{
    struct db_store *store;
    char *err = NULL;
    struct stat st;
    bool created;
    int64_t generation = 0;
    int rc, src, r;

    store = xcalloc(1, sizeof *store);
    store->path = xstrdup(path);
    pthread_mutex_init(&store->mutex, NULL);
    pthread_cond_init(&store->work_cond, NULL);
    pthread_cond_init(&store->durable_cond, NULL);

    created = stat(path, &st) < 0 && errno == ENOENT;

    /* FULLMUTEX: the caller's thread loads and the writer thread writes.
     * They never overlap (load comes before the first submit), but the
     * serialized mode makes that a matter of speed, not of correctness.
     * NOFOLLOW refuses a symlink planted in place of the database. */
    src = sqlite3_open_v2(path, &store->db,
                          SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                          | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
                          NULL);
    if (src != SQLITE_OK) {
        err = xasprintf("%s: cannot open: %s", path,
                        store->db ? sqlite3_errmsg(store->db)
                        : sqlite3_errstr(src));
        rc = sqlite_rc_to_errno(store->db, src);
        goto out;
    }
    sqlite3_busy_timeout(store->db, DB_STORE_BUSY_TIMEOUT_MS);

    rc = set_wal_mode(store, &err);
    if (rc) {
        goto out;
    }
    /* In WAL mode synchronous=FULL fsyncs the WAL at every commit, which
     * is what makes a returned db_store_wait() mean "on disk".  NORMAL
     * would only sync at checkpoints and could lose recent commits on
     * power failure. */
    rc = exec_sql(store, "PRAGMA synchronous=FULL", &err);
    if (rc) {
        goto out;
    }
    rc = init_schema(store, &err);
    if (rc) {
        goto out;
    }
    if (created) {
        r = sync_parent_dir(path);
        if (r) {
            err = xasprintf("%s: cannot sync directory: %s", path,
                            strerror(-r));
            rc = r;
            goto out;
        }
    }
    rc = query_int64(store, "SELECT generation FROM meta WHERE id = 0",
                     &generation, &err);
    if (rc) {
        goto out;
    }
    store->durable_generation = generation;
    store->submitted_generation = generation;

    if ((rc = prepare(store, "BEGIN IMMEDIATE", &store->begin_stmt, &err))
        || (rc = prepare(store, "COMMIT", &store->commit_stmt, &err))
        || (rc = prepare(store, "ROLLBACK", &store->rollback_stmt, &err))
        || (rc = prepare(store, "INSERT OR REPLACE INTO rows (class, ref, "
                         "data) VALUES (?1, ?2, ?3)", &store->upsert_stmt,
                         &err))
        || (rc = prepare(store, "DELETE FROM rows WHERE class = ?1 AND "
                         "ref = ?2", &store->delete_stmt, &err))
        || (rc = prepare(store, "UPDATE meta SET generation = ?1 WHERE "
                         "id = 0", &store->set_generation_stmt, &err))) {
        goto out;
    }

    r = pthread_create(&store->writer, NULL, writer_main, store);
    if (r) {
        err = xasprintf("%s: cannot start writer thread: %s", path,
                        strerror(r));
        rc = -r;
        goto out;
    }
    store->writer_started = true;

    *ret_store = store;
    store = NULL;
    rc = 0;
out:
    db_store_close(store);
    if (rc) {
        *ret_err = err ? err : xasprintf("%s: cannot open", path);
    } else {
        free(err);
    }
    return rc;
}

/* Logs a failed SQLite call during load and converts its result code. */
static int
load_error(struct db_store *store, int src)
{
    if (src == SQLITE_DONE) {
        LOG_ERR("db-store: %s: load failed: meta row missing", store->path);
        return -EIO;
    }
    LOG_ERR("db-store: %s: load failed: %s", store->path,
            sqlite3_errmsg(store->db));
    return sqlite_rc_to_errno(store->db, src);
}

int
db_store_load(struct db_store *store,
              void (*cb)(void *aux, const char *cls, const char *ref,
                         const char *data),
              void *aux, uint64_t *ret_generation)
{
    sqlite3_stmt *rows = NULL, *meta = NULL;
    bool in_txn = false;
    int64_t generation;
    bool submitted;
    int rc, src;

    /* The writer thread uses the connection once something is submitted;
     * a read transaction here at the same time would collide with its
     * BEGIN. */
    pthread_mutex_lock(&store->mutex);
    submitted = store->submitted;
    pthread_mutex_unlock(&store->mutex);
    if (submitted) {
        LOG_ERR("db-store: %s: load called after submit", store->path);
        rc = -EBUSY;
        goto out;
    }

    /* One read transaction, so the rows and the generation come from the
     * same snapshot even if another process were writing. */
    src = sqlite3_exec(store->db, "BEGIN", NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        rc = load_error(store, src);
        goto out;
    }
    in_txn = true;

    src = sqlite3_prepare_v2(store->db, "SELECT class, ref, data FROM rows",
                             -1, &rows, NULL);
    if (src != SQLITE_OK) {
        rc = load_error(store, src);
        goto out;
    }
    while ((src = sqlite3_step(rows)) == SQLITE_ROW) {
        const char *cls = (const char *) sqlite3_column_text(rows, 0);
        const char *ref = (const char *) sqlite3_column_text(rows, 1);
        const char *data = (const char *) sqlite3_column_text(rows, 2);

        if (!cls || !ref || !data) {
            /* NOT NULL constraints make this impossible unless the file
             * was edited by hand or SQLite ran out of memory. */
            LOG_ERR("db-store: %s: row with a NULL column", store->path);
            rc = -EIO;
            goto out;
        }
        cb(aux, cls, ref, data);
    }
    if (src != SQLITE_DONE) {
        rc = load_error(store, src);
        goto out;
    }

    src = sqlite3_prepare_v2(store->db,
                             "SELECT generation FROM meta WHERE id = 0", -1,
                             &meta, NULL);
    if (src == SQLITE_OK) {
        src = sqlite3_step(meta);
    }
    if (src != SQLITE_ROW) {
        rc = load_error(store, src);
        goto out;
    }
    generation = sqlite3_column_int64(meta, 0);

    src = sqlite3_exec(store->db, "COMMIT", NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        rc = load_error(store, src);
        goto out;
    }
    in_txn = false;

    pthread_mutex_lock(&store->mutex);
    store->durable_generation = generation;
    store->submitted_generation = generation;
    pthread_mutex_unlock(&store->mutex);

    *ret_generation = generation;
    rc = 0;
out:
    sqlite3_finalize(rows);
    sqlite3_finalize(meta);
    if (in_txn) {
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

void
db_store_submit(struct db_store *store, uint64_t generation,
                const struct db_store_change *changes, size_t n)
{
    struct pending_txn *txn;
    size_t size, i;
    char *p;

    /* Size the single allocation: header, change array, then each string
     * with its terminator. */
    size = sizeof *txn + n * sizeof txn->changes[0];
    for (i = 0; i < n; i++) {
        size += strlen(changes[i].cls) + 1 + strlen(changes[i].ref) + 1;
        if (changes[i].data) {
            size += strlen(changes[i].data) + 1;
        }
    }
    txn = xmalloc(size);
    txn->next = NULL;
    txn->generation = generation;
    txn->n = n;
    p = (char *) &txn->changes[n];
    for (i = 0; i < n; i++) {
        const char *srcs[3] = { changes[i].cls, changes[i].ref,
                                changes[i].data };
        const char *dsts[3] = { NULL, NULL, NULL };

        for (int j = 0; j < 3; j++) {
            if (srcs[j]) {
                size_t len = strlen(srcs[j]) + 1;

                memcpy(p, srcs[j], len);
                dsts[j] = p;
                p += len;
            }
        }
        txn->changes[i].cls = dsts[0];
        txn->changes[i].ref = dsts[1];
        txn->changes[i].data = dsts[2];
    }

    pthread_mutex_lock(&store->mutex);
    if (generation <= store->submitted_generation) {
        /* db.c submits under its write lock with a counter it increments,
         * so this is a bug there; carrying on would let a wait for the
         * later generation return before it is durable. */
        xabort("db-store: %s: generation %llu submitted after %llu",
               store->path, (unsigned long long) generation,
               (unsigned long long) store->submitted_generation);
    }
    store->submitted_generation = generation;
    store->submitted = true;
    if (store->broken || store->stopping) {
        /* Nothing more reaches the file once a write has failed: a later
         * transaction committed after a lost earlier one would leave a
         * state that never existed.  Waiters get -EIO. */
        pthread_mutex_unlock(&store->mutex);
        free(txn);
        return;
    }
    if (store->queue_tail) {
        store->queue_tail->next = txn;
    } else {
        store->queue_head = txn;
        pthread_cond_signal(&store->work_cond);
    }
    store->queue_tail = txn;
    pthread_mutex_unlock(&store->mutex);
}

int
db_store_wait(struct db_store *store, uint64_t generation)
{
    int rc;

    pthread_mutex_lock(&store->mutex);
    if (generation > store->submitted_generation) {
        /* Nobody would ever wake us. */
        LOG_ERR("db-store: %s: wait for generation %llu, which was never "
                "submitted", store->path, (unsigned long long) generation);
        rc = -EINVAL;
        goto out;
    }
    while (store->durable_generation < generation && !store->broken) {
        pthread_cond_wait(&store->durable_cond, &store->mutex);
    }
    /* A generation that reached the disk before the store broke is still
     * durable, so its wait succeeds; everything after it fails. */
    rc = store->durable_generation >= generation ? 0 : -EIO;
out:
    pthread_mutex_unlock(&store->mutex);
    return rc;
}

uint64_t
db_store_durable_generation(struct db_store *store)
{
    uint64_t generation;

    pthread_mutex_lock(&store->mutex);
    generation = store->durable_generation;
    pthread_mutex_unlock(&store->mutex);
    return generation;
}

uint64_t
db_store_commit_count(struct db_store *store)
{
    uint64_t count;

    pthread_mutex_lock(&store->mutex);
    count = store->commit_count;
    pthread_mutex_unlock(&store->mutex);
    return count;
}

/* Runs a prepared statement that returns no rows and resets it, so that
 * its bound text (borrowed from the batch) is released before the batch
 * is freed. */
static int
step_done(sqlite3_stmt *stmt)
{
    int src = sqlite3_step(stmt);

    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return src == SQLITE_DONE ? SQLITE_OK : src;
}

static int
write_change(struct db_store *store, const struct db_store_change *c)
{
    sqlite3_stmt *stmt = c->data ? store->upsert_stmt : store->delete_stmt;
    int src;

    src = sqlite3_bind_text(stmt, 1, c->cls, -1, SQLITE_STATIC);
    if (src == SQLITE_OK) {
        src = sqlite3_bind_text(stmt, 2, c->ref, -1, SQLITE_STATIC);
    }
    if (src == SQLITE_OK && c->data) {
        src = sqlite3_bind_text(stmt, 3, c->data, -1, SQLITE_STATIC);
    }
    if (src != SQLITE_OK) {
        sqlite3_clear_bindings(stmt);
        return src;
    }
    return step_done(stmt);
}

/* Writes a whole batch in one SQLite transaction and sets the stored
 * generation to that of its last transaction.  Returns 0 or -EIO after
 * logging and rolling back. */
static int
write_batch(struct db_store *store, const struct pending_txn *batch,
            uint64_t *ret_generation)
{
    const struct pending_txn *txn;
    uint64_t generation = 0, last_generation = 0;
    const char *what;
    int rc, src;

    for (txn = batch; txn; txn = txn->next) {
        last_generation = txn->generation;
    }
    what = "BEGIN";
    src = step_done(store->begin_stmt);
    if (src != SQLITE_OK) {
        goto out;
    }
    what = "write";
    for (txn = batch; txn; txn = txn->next) {
        for (size_t i = 0; i < txn->n; i++) {
            src = write_change(store, &txn->changes[i]);
            if (src != SQLITE_OK) {
                goto out;
            }
        }
        generation = txn->generation;
    }
    what = "generation update";
    src = sqlite3_bind_int64(store->set_generation_stmt, 1,
                             (sqlite3_int64) generation);
    if (src == SQLITE_OK) {
        src = step_done(store->set_generation_stmt);
    }
    if (src != SQLITE_OK) {
        goto out;
    }
    what = "COMMIT";
    src = step_done(store->commit_stmt);
    if (src != SQLITE_OK) {
        goto out;
    }
    *ret_generation = generation;
out:
    if (src != SQLITE_OK) {
        LOG_ERR("db-store: %s: %s failed: %s (generations %llu..%llu not "
                "written; the store accepts no more writes)", store->path,
                what, sqlite3_errmsg(store->db),
                (unsigned long long) batch->generation,
                (unsigned long long) last_generation);
        rc = -EIO;
    } else {
        rc = 0;
    }
    /* A failed statement or COMMIT can leave the transaction open; it must
     * not be committed by anything later. */
    if (!sqlite3_get_autocommit(store->db)) {
        step_done(store->rollback_stmt);
    }
    return rc;
}

static void
free_batch(struct pending_txn *batch)
{
    while (batch) {
        struct pending_txn *next = batch->next;

        free(batch);
        batch = next;
    }
}

/* The writer thread.  Waiting for work and publishing the result happen
 * under the mutex; the SQLite work in between does not, so submitters
 * keep queuing the next batch while this one is being fsynced — that is
 * where group commit comes from. */
static void *
writer_main(void *store_)
{
    struct db_store *store = store_;

    pthread_mutex_lock(&store->mutex);
    for (;;) {
        struct pending_txn *batch;
        uint64_t generation = 0;
        int rc;

        while (!store->queue_head && !store->stopping) {
            pthread_cond_wait(&store->work_cond, &store->mutex);
        }
        if (!store->queue_head) {
            break;
        }
        batch = store->queue_head;
        store->queue_head = store->queue_tail = NULL;
        if (store->broken) {
            free_batch(batch);
            continue;
        }
        pthread_mutex_unlock(&store->mutex);

        rc = write_batch(store, batch, &generation);
        free_batch(batch);

        pthread_mutex_lock(&store->mutex);
        if (rc) {
            store->broken = true;
        } else {
            store->durable_generation = generation;
            store->commit_count++;
        }
        pthread_cond_broadcast(&store->durable_cond);
    }
    pthread_mutex_unlock(&store->mutex);
    return NULL;
}

void
db_store_close(struct db_store *store)
{
    if (!store) {
        return;
    }
    if (store->writer_started) {
        /* The writer drains the queue before it looks at stopping, so
         * everything submitted so far is written (or the store is broken)
         * by the time it exits. */
        pthread_mutex_lock(&store->mutex);
        store->stopping = true;
        pthread_cond_signal(&store->work_cond);
        pthread_mutex_unlock(&store->mutex);
        pthread_join(store->writer, NULL);
    }
    free_batch(store->queue_head);

    sqlite3_finalize(store->begin_stmt);
    sqlite3_finalize(store->commit_stmt);
    sqlite3_finalize(store->rollback_stmt);
    sqlite3_finalize(store->upsert_stmt);
    sqlite3_finalize(store->delete_stmt);
    sqlite3_finalize(store->set_generation_stmt);
    if (store->db) {
        int src = sqlite3_close(store->db);

        if (src != SQLITE_OK) {
            LOG_ERR("db-store: %s: close failed: %s", store->path,
                    sqlite3_errstr(src));
        }
    }
    pthread_cond_destroy(&store->durable_cond);
    pthread_cond_destroy(&store->work_cond);
    pthread_mutex_destroy(&store->mutex);
    free(store->path);
    free(store);
}
