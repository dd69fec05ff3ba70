/* test-db-store.c — tests of xapi/db-store.c, the SQLite store that makes
 * db.c's transactions durable.
 *
 * Each test works in its own directory under /tmp.  Besides the round
 * trips, the tests check the two promises the store exists for: a waiter
 * returns only when its transaction is on disk (checked by killing a
 * writing child process with SIGKILL and reloading), and concurrent
 * writers share commits (checked with db_store_commit_count()). */
#include <config.h>

#define TEST_MAIN
#include "tests/unit/test.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "db-store.h"
#include "util.h"

/* ---- scratch directories ---- */

struct scratch {
    char dir[64];
    char *path;             /* the database file inside dir */
};

static void
scratch_init(struct scratch *s)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/test-db-store.XXXXXX");
    if (!mkdtemp(s->dir)) {
        xabort("mkdtemp: %s", strerror(errno));
    }
    s->path = xasprintf("%s/state.db", s->dir);
}

/* Removes the database, its WAL and shared-memory files, and the
 * directory; SQLite creates nothing else. */
static void
scratch_destroy(struct scratch *s)
{
    static const char *const suffixes[] = { "", "-wal", "-shm", "-journal" };

    for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
        char *file = xasprintf("%s%s", s->path, suffixes[i]);

        unlink(file);
        free(file);
    }
    if (rmdir(s->dir)) {
        fprintf(stderr, "  rmdir %s: %s\n", s->dir, strerror(errno));
    }
    free(s->path);
}

/* ---- sets of rows, to compare what was written with what loads ---- */

struct row {
    char *cls, *ref, *data;
};

struct rowset {
    struct row *rows;
    size_t n, cap;
};

static struct row *
rowset_find(struct rowset *set, const char *cls, const char *ref)
{
    for (size_t i = 0; i < set->n; i++) {
        if (!strcmp(set->rows[i].cls, cls) && !strcmp(set->rows[i].ref, ref)) {
            return &set->rows[i];
        }
    }
    return NULL;
}

/* The data of a row, or NULL if the set lacks it. */
static const char *
rowset_data(struct rowset *set, const char *cls, const char *ref)
{
    struct row *row = rowset_find(set, cls, ref);

    return row ? row->data : NULL;
}

/* Adds or replaces a row, or deletes it if data is NULL, the way the
 * store applies a change. */
static void
rowset_apply(struct rowset *set, const char *cls, const char *ref,
             const char *data)
{
    struct row *row = rowset_find(set, cls, ref);

    if (row && data) {
        free(row->data);
        row->data = xstrdup(data);
    } else if (row) {
        free(row->cls);
        free(row->ref);
        free(row->data);
        *row = set->rows[--set->n];
    } else if (data) {
        if (set->n == set->cap) {
            set->cap = set->cap ? 2 * set->cap : 16;
            set->rows = xrealloc(set->rows, set->cap * sizeof *set->rows);
        }
        set->rows[set->n++] = (struct row) {
            xstrdup(cls), xstrdup(ref), xstrdup(data)
        };
    }
}

static void
rowset_destroy(struct rowset *set)
{
    for (size_t i = 0; i < set->n; i++) {
        free(set->rows[i].cls);
        free(set->rows[i].ref);
        free(set->rows[i].data);
    }
    free(set->rows);
    memset(set, 0, sizeof *set);
}

/* Load callback: a stored row must appear only once. */
static void
load_into_rowset(void *set_, const char *cls, const char *ref,
                 const char *data)
{
    struct rowset *set = set_;

    if (rowset_find(set, cls, ref)) {
        fprintf(stderr, "  row %s/%s loaded twice\n", cls, ref);
        test_failures_++;
    }
    rowset_apply(set, cls, ref, data);
}

/* True if the two sets hold exactly the same rows; reports differences. */
static bool
rowsets_equal(struct rowset *expected, struct rowset *actual)
{
    bool equal = true;

    for (size_t i = 0; i < expected->n; i++) {
        const struct row *e = &expected->rows[i];
        const struct row *a = rowset_find(actual, e->cls, e->ref);

        if (!a) {
            fprintf(stderr, "  row %s/%s missing\n", e->cls, e->ref);
            equal = false;
        } else if (strcmp(a->data, e->data)) {
            fprintf(stderr, "  row %s/%s is \"%.40s\", expected \"%.40s\"\n",
                    e->cls, e->ref, a->data, e->data);
            equal = false;
        }
    }
    for (size_t i = 0; i < actual->n; i++) {
        const struct row *a = &actual->rows[i];

        if (!rowset_find(expected, a->cls, a->ref)) {
            fprintf(stderr, "  unexpected row %s/%s\n", a->cls, a->ref);
            equal = false;
        }
    }
    return equal;
}

/* Opens the store at path, or fails the test and returns NULL. */
static struct db_store *
open_store(const char *path)
{
    struct db_store *store = NULL;
    char *err = NULL;
    int rc;

    rc = db_store_open(path, &store, &err);
    if (rc) {
        fprintf(stderr, "  db_store_open: %s (%d)\n", err, rc);
        free(err);
        test_failures_++;
        return NULL;
    }
    return store;
}

/* Opens the store at path and loads it into *set; returns the generation
 * through *ret_generation.  The store is closed again. */
static int
reload(const char *path, struct rowset *set, uint64_t *ret_generation)
{
    struct db_store *store = open_store(path);
    int rc;

    if (!store) {
        return -EIO;
    }
    rc = db_store_load(store, load_into_rowset, set, ret_generation);
    db_store_close(store);
    return rc;
}

static void
submit1(struct db_store *store, uint64_t generation, const char *cls,
        const char *ref, const char *data)
{
    struct db_store_change change = { cls, ref, data };

    db_store_submit(store, generation, &change, 1);
}

/* ---- round trips ---- */

TEST(test_new_file_loads_empty_at_generation_zero)
{
    struct scratch s;
    struct rowset set = { 0 };
    uint64_t generation = 99;

    scratch_init(&s);
    CHECK_INT(reload(s.path, &set, &generation), 0);
    CHECK_INT(generation, 0);
    CHECK_INT(set.n, 0);
    rowset_destroy(&set);
    scratch_destroy(&s);
}

TEST(test_create_replace_delete_survive_close_and_reopen)
{
    struct scratch s;
    struct rowset expected = { 0 }, loaded = { 0 };
    struct db_store *store;
    uint64_t generation = 0;

    scratch_init(&s);
    store = open_store(s.path);
    if (!store) {
        goto out;
    }
    CHECK_INT(db_store_load(store, load_into_rowset, &loaded, &generation),
              0);

    {
        /* Data with quotes, newlines and non-ASCII text must come back
         * byte for byte. */
        struct db_store_change create[] = {
            { "VM", "OpaqueRef:a", "name='a'\n\"x\" \xc3\xa9" },
            { "VM", "OpaqueRef:b", "b1" },
            { "host", "OpaqueRef:h", "h1" },
            /* Same ref in another class is another row. */
            { "SR", "OpaqueRef:a", "sr" },
        };
        db_store_submit(store, 1, create, ARRAY_SIZE(create));
    }
    {
        struct db_store_change change[] = {
            { "VM", "OpaqueRef:a", "a2" },
            { "VM", "OpaqueRef:b", NULL },
        };
        db_store_submit(store, 2, change, ARRAY_SIZE(change));
    }
    {
        /* Created and deleted within one transaction: leaves nothing.
         * Deleting a row that never existed is not an error. */
        struct db_store_change change[] = {
            { "VM", "OpaqueRef:c", "c1" },
            { "VM", "OpaqueRef:c", NULL },
            { "VM", "OpaqueRef:never", NULL },
        };
        db_store_submit(store, 3, change, ARRAY_SIZE(change));
    }
    CHECK_INT(db_store_wait(store, 3), 0);
    CHECK_INT(db_store_durable_generation(store), 3);
    db_store_close(store);

    rowset_apply(&expected, "VM", "OpaqueRef:a", "a2");
    rowset_apply(&expected, "host", "OpaqueRef:h", "h1");
    rowset_apply(&expected, "SR", "OpaqueRef:a", "sr");
    rowset_destroy(&loaded);
    CHECK_INT(reload(s.path, &loaded, &generation), 0);
    CHECK_INT(generation, 3);
    CHECK(rowsets_equal(&expected, &loaded));

out:
    rowset_destroy(&expected);
    rowset_destroy(&loaded);
    scratch_destroy(&s);
}

TEST(test_generation_persists_even_without_row_changes)
{
    struct scratch s;
    struct rowset loaded = { 0 };
    struct db_store *store;
    uint64_t generation = 0;

    scratch_init(&s);
    store = open_store(s.path);
    if (!store) {
        goto out;
    }
    /* Generations need not be consecutive, only increasing. */
    submit1(store, 7, "VM", "OpaqueRef:a", "a");
    db_store_submit(store, 42, NULL, 0);
    CHECK_INT(db_store_wait(store, 42), 0);
    db_store_close(store);

    /* The durable generation is known straight after open, before load. */
    store = open_store(s.path);
    if (!store) {
        goto out;
    }
    CHECK_INT(db_store_durable_generation(store), 42);
    CHECK_INT(db_store_load(store, load_into_rowset, &loaded, &generation),
              0);
    CHECK_INT(generation, 42);
    CHECK_INT(loaded.n, 1);
    /* Later transactions continue from there. */
    submit1(store, 43, "VM", "OpaqueRef:b", "b");
    CHECK_INT(db_store_wait(store, 43), 0);
    db_store_close(store);

    rowset_destroy(&loaded);
    CHECK_INT(reload(s.path, &loaded, &generation), 0);
    CHECK_INT(generation, 43);
    CHECK_INT(loaded.n, 2);
out:
    rowset_destroy(&loaded);
    scratch_destroy(&s);
}

TEST(test_close_flushes_what_is_queued)
{
    struct scratch s;
    struct rowset loaded = { 0 };
    struct db_store *store;
    uint64_t generation = 0;

    scratch_init(&s);
    store = open_store(s.path);
    if (!store) {
        goto out;
    }
    for (uint64_t g = 1; g <= 500; g++) {
        char ref[32], data[32];

        snprintf(ref, sizeof ref, "OpaqueRef:%" PRIu64, g % 50);
        snprintf(data, sizeof data, "%" PRIu64, g);
        submit1(store, g, "VM", ref, data);
    }
    /* No wait: close itself must write everything. */
    db_store_close(store);

    CHECK_INT(reload(s.path, &loaded, &generation), 0);
    CHECK_INT(generation, 500);
    CHECK_INT(loaded.n, 50);
    CHECK_STR(rowset_data(&loaded, "VM", "OpaqueRef:0"), "500");
    CHECK_STR(rowset_data(&loaded, "VM", "OpaqueRef:1"), "451");
out:
    rowset_destroy(&loaded);
    scratch_destroy(&s);
}

TEST(test_large_rows_round_trip)
{
    struct scratch s;
    struct rowset loaded = { 0 };
    struct db_store *store;
    uint64_t generation = 0;
    size_t len = 3 * 1024 * 1024;
    char *big = xmalloc(len + 1);

    for (size_t i = 0; i < len; i++) {
        big[i] = 'a' + i % 26;
    }
    big[len] = '\0';
    scratch_init(&s);
    store = open_store(s.path);
    if (!store) {
        goto out;
    }
    submit1(store, 1, "blob", "OpaqueRef:big", big);
    CHECK_INT(db_store_wait(store, 1), 0);
    db_store_close(store);
    CHECK_INT(reload(s.path, &loaded, &generation), 0);
    CHECK_INT(loaded.n, 1);
    CHECK(loaded.n == 1 && !strcmp(loaded.rows[0].data, big));
out:
    free(big);
    rowset_destroy(&loaded);
    scratch_destroy(&s);
}

TEST(test_file_is_in_wal_mode)
{
    struct scratch s;
    struct db_store *store;
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;

    scratch_init(&s);
    store = open_store(s.path);
    db_store_close(store);
    CHECK_INT(sqlite3_open(s.path, &db), SQLITE_OK);
    CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_step(stmt), SQLITE_ROW);
    CHECK_STR((const char *) sqlite3_column_text(stmt, 0), "wal");
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    scratch_destroy(&s);
}

TEST(test_open_fails_with_a_message_for_a_bad_path)
{
    struct db_store *store = NULL;
    char *err = NULL;
    int rc;

    rc = db_store_open("/nonexistent-dir-for-test/state.db", &store, &err);
    CHECK(rc < 0);
    CHECK(store == NULL);
    CHECK(err && strstr(err, "/nonexistent-dir-for-test/state.db"));
    free(err);
}

TEST(test_open_refuses_a_file_that_is_not_a_database)
{
    struct scratch s;
    struct db_store *store = NULL;
    char *err = NULL;
    char junk[4096];

    scratch_init(&s);
    memset(junk, 'x', sizeof junk);
    CHECK_INT(write_file_atomic(s.path, junk, sizeof junk, 0600), 0);
    CHECK(db_store_open(s.path, &store, &err) < 0);
    CHECK(store == NULL);
    CHECK(err != NULL);
    free(err);
    scratch_destroy(&s);
}

TEST(test_wait_for_a_generation_never_submitted_is_einval)
{
    struct scratch s;
    struct db_store *store;

    scratch_init(&s);
    store = open_store(s.path);
    if (store) {
        CHECK_INT(db_store_wait(store, 0), 0);
        CHECK_INT(db_store_wait(store, 1), -EINVAL);
        db_store_close(store);
    }
    scratch_destroy(&s);
}

TEST(test_load_after_submit_is_refused)
{
    struct scratch s;
    struct rowset loaded = { 0 };
    struct db_store *store;
    uint64_t generation = 0;

    scratch_init(&s);
    store = open_store(s.path);
    if (store) {
        submit1(store, 1, "VM", "OpaqueRef:a", "a");
        CHECK_INT(db_store_load(store, load_into_rowset, &loaded,
                                &generation), -EBUSY);
        db_store_close(store);
    }
    rowset_destroy(&loaded);
    scratch_destroy(&s);
}

TEST(test_close_accepts_null)
{
    db_store_close(NULL);
}

/* ---- concurrency and group commit ---- */

enum { N_THREADS = 8, TXNS_PER_THREAD = 250, ROWS_PER_THREAD = 10 };

/* What db.c does: generations are assigned and submitted under one
 * lock, in order; the wait happens outside it. */
struct submitters {
    struct db_store *store;
    pthread_mutex_t mutex;
    uint64_t last_generation;
};

struct submitter {
    struct submitters *shared;
    int id;
    int failures;
    struct rowset written;  /* this thread's rows as it last wrote them */
};

static void *
submitter_main(void *self_)
{
    struct submitter *self = self_;
    struct submitters *shared = self->shared;
    char pad[512];

    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int j = 0; j < TXNS_PER_THREAD; j++) {
        char ref[64], other[64], *data;
        uint64_t generation;

        snprintf(ref, sizeof ref, "OpaqueRef:t%d-%d", self->id,
                 j % ROWS_PER_THREAD);
        snprintf(other, sizeof other, "OpaqueRef:t%d-%d", self->id,
                 (j + 3) % ROWS_PER_THREAD);

        pthread_mutex_lock(&shared->mutex);
        generation = ++shared->last_generation;
        data = xasprintf("%" PRIu64 ":%d:%d:%s", generation, self->id, j,
                         pad);
        {
            /* Every seventh transaction also deletes one of the thread's
             * other rows, so deletes race with writes too. */
            struct db_store_change changes[] = {
                { "VM", ref, data },
                { "VM", other, NULL },
            };
            db_store_submit(shared->store, generation, changes,
                            j % 7 == 6 ? 2 : 1);
        }
        pthread_mutex_unlock(&shared->mutex);

        rowset_apply(&self->written, "VM", ref, data);
        if (j % 7 == 6) {
            rowset_apply(&self->written, "VM", other, NULL);
        }
        free(data);

        if (db_store_wait(shared->store, generation)
            || db_store_durable_generation(shared->store) < generation) {
            self->failures++;
        }
    }
    return NULL;
}

TEST(test_concurrent_submitters_all_become_durable)
{
    struct submitter threads[N_THREADS];
    pthread_t tids[N_THREADS];
    struct submitters shared;
    struct rowset expected = { 0 }, loaded = { 0 };
    struct scratch s;
    uint64_t generation = 0, commits;
    int total = N_THREADS * TXNS_PER_THREAD;

    scratch_init(&s);
    shared.store = open_store(s.path);
    if (!shared.store) {
        goto out;
    }
    pthread_mutex_init(&shared.mutex, NULL);
    shared.last_generation = 0;

    for (int i = 0; i < N_THREADS; i++) {
        threads[i] = (struct submitter) { .shared = &shared, .id = i };
        CHECK_INT(pthread_create(&tids[i], NULL, submitter_main,
                                 &threads[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(tids[i], NULL);
        CHECK_INT(threads[i].failures, 0);
        for (size_t k = 0; k < threads[i].written.n; k++) {
            const struct row *r = &threads[i].written.rows[k];

            rowset_apply(&expected, r->cls, r->ref, r->data);
        }
        rowset_destroy(&threads[i].written);
    }
    CHECK_INT(db_store_durable_generation(shared.store), total);
    commits = db_store_commit_count(shared.store);
    printf("# %d transactions from %d threads in %" PRIu64 " commits\n",
           total, N_THREADS, commits);
    /* Eight threads each waiting on the one before: unless every thread
     * was always the only one queued, some commits carried several. */
    CHECK(commits >= 1 && commits < (uint64_t) total);
    db_store_close(shared.store);
    pthread_mutex_destroy(&shared.mutex);

    CHECK_INT(reload(s.path, &loaded, &generation), 0);
    CHECK_INT(generation, total);
    CHECK(rowsets_equal(&expected, &loaded));
out:
    rowset_destroy(&expected);
    rowset_destroy(&loaded);
    scratch_destroy(&s);
}

/* Runs one SQL statement on a second connection of our own. */
static int
exec_other(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int src = sqlite3_exec(db, sql, NULL, NULL, &msg);

    if (src != SQLITE_OK) {
        fprintf(stderr, "  %s: %s\n", sql, msg ? msg : "?");
    }
    sqlite3_free(msg);
    return src;
}

TEST(test_group_commit_writes_queued_transactions_together)
{
    struct scratch s;
    struct rowset loaded = { 0 };
    struct db_store *store;
    sqlite3 *other = NULL;
    uint64_t before, generation = 0;
    enum { N = 200 };

    scratch_init(&s);
    store = open_store(s.path);
    if (!store) {
        goto out;
    }
    /* A second connection holds the write lock, so the writer is stuck
     * in its first BEGIN while the rest of the transactions queue up;
     * once the lock goes, everything queued must go in one commit. */
    CHECK_INT(sqlite3_open(s.path, &other), SQLITE_OK);
    CHECK_INT(exec_other(other, "BEGIN IMMEDIATE"), SQLITE_OK);
    before = db_store_commit_count(store);
    for (uint64_t g = 1; g <= N; g++) {
        char ref[32];

        snprintf(ref, sizeof ref, "OpaqueRef:%" PRIu64, g);
        submit1(store, g, "VM", ref, "x");
    }
    usleep(20 * 1000);
    CHECK_INT(db_store_durable_generation(store), 0);
    CHECK_INT(exec_other(other, "COMMIT"), SQLITE_OK);
    CHECK_INT(db_store_wait(store, N), 0);
    /* The writer may have taken the first transaction alone before the
     * others arrived; everything else comes in the next commit. */
    CHECK(db_store_commit_count(store) - before <= 2);
    printf("# %d queued transactions in %" PRIu64 " commits\n", N,
           db_store_commit_count(store) - before);
    db_store_close(store);

    CHECK_INT(reload(s.path, &loaded, &generation), 0);
    CHECK_INT(generation, N);
    CHECK_INT(loaded.n, N);
out:
    sqlite3_close(other);
    rowset_destroy(&loaded);
    scratch_destroy(&s);
}

/* ---- failure ---- */

TEST(test_failed_write_breaks_the_store_and_fails_waiters)
{
    struct scratch s;
    struct rowset loaded = { 0 };
    struct db_store *store;
    sqlite3 *other = NULL;
    uint64_t generation = 0;

    scratch_init(&s);
    store = open_store(s.path);
    if (!store) {
        goto out;
    }
    submit1(store, 1, "VM", "OpaqueRef:a", "good");
    CHECK_INT(db_store_wait(store, 1), 0);

    /* A trigger added behind the store's back makes one particular
     * INSERT fail, the way a full disk or an I/O error would. */
    CHECK_INT(sqlite3_open(s.path, &other), SQLITE_OK);
    CHECK_INT(exec_other(other,
                         "CREATE TRIGGER poison BEFORE INSERT ON rows "
                         "WHEN NEW.data = 'poison' "
                         "BEGIN SELECT RAISE(ABORT, 'injected failure'); "
                         "END"), SQLITE_OK);
    sqlite3_close(other);
    other = NULL;

    printf("# an error about 'injected failure' is expected below\n");
    fflush(stdout);
    submit1(store, 2, "VM", "OpaqueRef:b", "poison");
    CHECK_INT(db_store_wait(store, 2), -EIO);
    /* What was durable stays durable; nothing later is written. */
    CHECK_INT(db_store_wait(store, 1), 0);
    submit1(store, 3, "VM", "OpaqueRef:c", "fine");
    CHECK_INT(db_store_wait(store, 3), -EIO);
    CHECK_INT(db_store_durable_generation(store), 1);
    db_store_close(store);

    CHECK_INT(reload(s.path, &loaded, &generation), 0);
    CHECK_INT(generation, 1);
    CHECK_INT(loaded.n, 1);
    CHECK(rowset_find(&loaded, "VM", "OpaqueRef:a") != NULL);
out:
    sqlite3_close(other);
    rowset_destroy(&loaded);
    scratch_destroy(&s);
}

/* ---- crash safety ---- */

/* The rows every generation writes, as a pure function of the generation,
 * so the parent can replay what the state must be at any generation
 * without hearing from the child: one of 64 rows gets a new value of
 * varying size, every fifth generation deletes another, and a counter row
 * always holds the generation, which checks that rows and the stored
 * generation are committed together. */
enum { CRASH_SLOTS = 64 };

struct crash_txn {
    char ref[32], other[32], counter[32];
    char *data;
    struct db_store_change changes[3];
    size_t n;
};

static void
crash_txn_init(struct crash_txn *t, uint64_t g)
{
    size_t pad = 100 + (g * 37) % 1900;

    snprintf(t->ref, sizeof t->ref, "OpaqueRef:r%" PRIu64, g % CRASH_SLOTS);
    snprintf(t->other, sizeof t->other, "OpaqueRef:r%" PRIu64,
             (g * 7 + 1) % CRASH_SLOTS);
    snprintf(t->counter, sizeof t->counter, "%" PRIu64, g);
    t->data = xasprintf("%" PRIu64 ":%0*d", g, (int) pad, 0);
    t->n = 0;
    t->changes[t->n++] = (struct db_store_change) { "VM", t->ref, t->data };
    if (g % 5 == 0) {
        t->changes[t->n++] = (struct db_store_change) { "VM", t->other, NULL };
    }
    t->changes[t->n++] = (struct db_store_change) {
        "pool", "OpaqueRef:counter", t->counter
    };
}

static void
crash_txn_destroy(struct crash_txn *t)
{
    free(t->data);
}

struct crash_child {
    struct db_store *store;
    pthread_mutex_t mutex;
    uint64_t last_generation;
    int report_fd;
};

static void *
crash_child_writer(void *child_)
{
    struct crash_child *child = child_;

    for (;;) {
        struct crash_txn t;
        uint64_t g;

        pthread_mutex_lock(&child->mutex);
        g = ++child->last_generation;
        crash_txn_init(&t, g);
        db_store_submit(child->store, g, t.changes, t.n);
        pthread_mutex_unlock(&child->mutex);
        crash_txn_destroy(&t);

        if (db_store_wait(child->store, g)) {
            _exit(2);
        }
        /* Eight bytes to a pipe are written atomically, so reports from
         * several threads never interleave. */
        if (write(child->report_fd, &g, sizeof g) != sizeof g) {
            _exit(3);
        }
    }
    return NULL;
}

/* The child: continue from whatever the file holds, with four writers,
 * until killed. */
static void NORETURN
crash_child_main(const char *path, int report_fd)
{
    struct crash_child child = { .report_fd = report_fd };
    struct rowset ignored = { 0 };
    pthread_t tids[4];
    char *err = NULL;

    if (db_store_open(path, &child.store, &err)) {
        fprintf(stderr, "child: %s\n", err);
        _exit(4);
    }
    if (db_store_load(child.store, load_into_rowset, &ignored,
                      &child.last_generation)) {
        _exit(5);
    }
    pthread_mutex_init(&child.mutex, NULL);
    for (size_t i = 0; i < ARRAY_SIZE(tids); i++) {
        if (pthread_create(&tids[i], NULL, crash_child_writer, &child)) {
            _exit(6);
        }
    }
    for (;;) {
        pause();
    }
}

/* Reads reports until the deadline, keeping the largest generation. */
static void
read_reports(int fd, int64_t deadline_ms, uint64_t *max_reported)
{
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int64_t left = deadline_ms - time_mono_ms();
        uint64_t g;
        ssize_t n;

        if (deadline_ms >= 0 && left <= 0) {
            return;
        }
        if (deadline_ms >= 0 && poll(&pfd, 1, (int) left) <= 0) {
            continue;
        }
        n = read(fd, &g, sizeof g);
        if (n != sizeof g) {
            return;         /* end of file: the child is gone */
        }
        *max_reported = MAX(*max_reported, g);
    }
}

TEST(test_sigkill_while_writing_loses_nothing_reported_durable)
{
    /* Kill times from "during open" to "in full flow". */
    static const int delays_ms[] = { 1, 5, 20, 50, 100, 200, 300, 150 };
    struct scratch s;
    uint64_t max_reported = 0;

    scratch_init(&s);
    for (size_t round = 0; round < ARRAY_SIZE(delays_ms); round++) {
        struct rowset expected = { 0 }, loaded = { 0 };
        uint64_t generation = 0;
        int fds[2], status = 0;
        pid_t pid;

        if (pipe(fds)) {
            xabort("pipe: %s", strerror(errno));
        }
        fflush(NULL);
        pid = fork();
        if (pid < 0) {
            xabort("fork: %s", strerror(errno));
        }
        if (pid == 0) {
            close(fds[0]);
            crash_child_main(s.path, fds[1]);
        }
        close(fds[1]);
        read_reports(fds[0], time_mono_ms() + delays_ms[round],
                     &max_reported);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        /* Whatever the child reported before it died is still in the
         * pipe; those generations were durable too. */
        read_reports(fds[0], -1, &max_reported);
        close(fds[0]);

        CHECK_INT(reload(s.path, &loaded, &generation), 0);
        printf("# round %zu: killed after %d ms, %" PRIu64 " reported "
               "durable, %" PRIu64 " on disk\n", round, delays_ms[round],
               max_reported, generation);
        CHECK(generation >= max_reported);
        for (uint64_t g = 1; g <= generation; g++) {
            struct crash_txn t;

            crash_txn_init(&t, g);
            for (size_t i = 0; i < t.n; i++) {
                rowset_apply(&expected, t.changes[i].cls, t.changes[i].ref,
                             t.changes[i].data);
            }
            crash_txn_destroy(&t);
        }
        CHECK(rowsets_equal(&expected, &loaded));
        rowset_destroy(&expected);
        rowset_destroy(&loaded);
    }
    CHECK(max_reported > 0);
    scratch_destroy(&s);
}
