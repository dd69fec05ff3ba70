/* db-commit.c — benchmark: durable commits per second through db_store
 * (xapi/db-store.c) against raw SQLite with the same sync settings.
 *
 * Not a test: it prints figures and never passes or fails.  Three runs,
 * each on a fresh database file in WAL mode with synchronous=FULL:
 *
 *   db_store   N threads, each submitting a ~2 KB row and waiting for it
 *              to be durable; the writer thread groups what is queued.
 *   raw-shared N threads, each doing BEGIN; INSERT; COMMIT on one shared
 *              connection under a mutex (one fsync per commit).
 *   raw-single one thread doing autocommit INSERTs.
 *
 * Usage: db-commit [-t SECONDS | -n COMMITS] [-j THREADS] [DIR]
 * DIR defaults to a new directory under /tmp, removed afterwards. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db-store.h"
#include "util.h"

#define ROW_SIZE 2048

struct bench {
    /* How long each run lasts: whichever limit is set. */
    int64_t duration_us;        /* 0 if counting commits */
    uint64_t max_commits;       /* 0 if timing */
    int n_threads;
    char *dir;
    char row[ROW_SIZE + 1];
};

/* One run's shared state. */
struct run {
    const struct bench *bench;
    int64_t deadline_us;
    uint64_t tickets;           /* commits claimed so far (atomic) */
    uint64_t commits;           /* commits done (atomic) */
    int64_t max_latency_us;     /* protected by mutex */
    int64_t total_latency_us;   /* protected by mutex */
    int failures;               /* protected by mutex */
    pthread_mutex_t mutex;

    /* db_store run. */
    struct db_store *store;
    uint64_t last_generation;   /* protected by mutex, as db.c does */

    /* raw runs: one connection and its statements, used under mutex. */
    sqlite3 *db;
    sqlite3_stmt *begin, *insert, *commit;
};

struct worker {
    struct run *run;
    int id;
};

/* Claims the right to make one more commit, or says the run is over. */
static bool
run_continue(struct run *run)
{
    if (run->bench->max_commits) {
        return __atomic_fetch_add(&run->tickets, 1, __ATOMIC_RELAXED)
               < run->bench->max_commits;
    }
    return time_mono_us() < run->deadline_us;
}

static void
run_record(struct run *run, int64_t latency_us, bool ok)
{
    __atomic_fetch_add(&run->commits, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&run->mutex);
    run->total_latency_us += latency_us;
    run->max_latency_us = MAX(run->max_latency_us, latency_us);
    if (!ok) {
        run->failures++;
    }
    pthread_mutex_unlock(&run->mutex);
}

static int
exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int src = sqlite3_exec(db, sql, NULL, NULL, &msg);

    if (src != SQLITE_OK) {
        fprintf(stderr, "db-commit: %s: %s\n", sql, msg ? msg : "?");
    }
    sqlite3_free(msg);
    return src == SQLITE_OK ? 0 : -EIO;
}

/* ---- db_store ---- */

static void *
store_worker(void *worker_)
{
    struct worker *w = worker_;
    struct run *run = w->run;

    for (uint64_t i = 0; run_continue(run); i++) {
        char ref[64];
        struct db_store_change change = { "VM", ref, run->bench->row };
        uint64_t generation;
        int64_t start = time_mono_us();
        int rc;

        snprintf(ref, sizeof ref, "OpaqueRef:bench-%d-%" PRIu64, w->id, i);
        pthread_mutex_lock(&run->mutex);
        generation = ++run->last_generation;
        db_store_submit(run->store, generation, &change, 1);
        pthread_mutex_unlock(&run->mutex);
        rc = db_store_wait(run->store, generation);
        run_record(run, time_mono_us() - start, rc == 0);
    }
    return NULL;
}

static void
ignore_row(void *aux, const char *cls, const char *ref, const char *data)
{
}

static int
store_setup(struct run *run, const char *path)
{
    char *err = NULL;
    int rc;

    rc = db_store_open(path, &run->store, &err);
    if (rc) {
        fprintf(stderr, "db-commit: %s\n", err);
        free(err);
        return rc;
    }
    return db_store_load(run->store, ignore_row, NULL, &run->last_generation);
}

/* ---- raw SQLite ---- */

static int
raw_setup(struct run *run, const char *path)
{
    int src;

    src = sqlite3_open_v2(path, &run->db,
                          SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                          | SQLITE_OPEN_FULLMUTEX, NULL);
    if (src != SQLITE_OK) {
        fprintf(stderr, "db-commit: %s: %s\n", path, sqlite3_errstr(src));
        return -EIO;
    }
    /* The same settings and table as db-store.c. */
    if (exec_sql(run->db, "PRAGMA journal_mode=WAL")
        || exec_sql(run->db, "PRAGMA synchronous=FULL")
        || exec_sql(run->db, "CREATE TABLE rows (class TEXT NOT NULL, "
                    "ref TEXT NOT NULL, data TEXT NOT NULL, "
                    "PRIMARY KEY (class, ref))")) {
        return -EIO;
    }
    if (sqlite3_prepare_v2(run->db, "BEGIN IMMEDIATE", -1, &run->begin,
                           NULL) != SQLITE_OK
        || sqlite3_prepare_v2(run->db, "INSERT OR REPLACE INTO rows "
                              "(class, ref, data) VALUES (?1, ?2, ?3)", -1,
                              &run->insert, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(run->db, "COMMIT", -1, &run->commit,
                              NULL) != SQLITE_OK) {
        fprintf(stderr, "db-commit: prepare: %s\n", sqlite3_errmsg(run->db));
        return -EIO;
    }
    return 0;
}

static bool
step_reset(sqlite3_stmt *stmt)
{
    int src = sqlite3_step(stmt);

    sqlite3_reset(stmt);
    return src == SQLITE_DONE;
}

static bool
raw_insert(struct run *run, const char *ref)
{
    sqlite3_bind_text(run->insert, 1, "VM", -1, SQLITE_STATIC);
    sqlite3_bind_text(run->insert, 2, ref, -1, SQLITE_STATIC);
    sqlite3_bind_text(run->insert, 3, run->bench->row, ROW_SIZE,
                      SQLITE_STATIC);
    return step_reset(run->insert);
}

static void *
raw_shared_worker(void *worker_)
{
    struct worker *w = worker_;
    struct run *run = w->run;

    for (uint64_t i = 0; run_continue(run); i++) {
        char ref[64];
        int64_t start = time_mono_us();
        bool ok;

        snprintf(ref, sizeof ref, "OpaqueRef:bench-%d-%" PRIu64, w->id, i);
        pthread_mutex_lock(&run->mutex);
        ok = step_reset(run->begin) && raw_insert(run, ref)
             && step_reset(run->commit);
        pthread_mutex_unlock(&run->mutex);
        run_record(run, time_mono_us() - start, ok);
    }
    return NULL;
}

static void *
raw_single_worker(void *worker_)
{
    struct worker *w = worker_;
    struct run *run = w->run;

    for (uint64_t i = 0; run_continue(run); i++) {
        char ref[64];
        int64_t start = time_mono_us();
        bool ok;

        snprintf(ref, sizeof ref, "OpaqueRef:bench-%d-%" PRIu64, w->id, i);
        ok = raw_insert(run, ref);      /* autocommit: one fsync each */
        run_record(run, time_mono_us() - start, ok);
    }
    return NULL;
}

/* ---- driver ---- */

enum mode { MODE_STORE, MODE_RAW_SHARED, MODE_RAW_SINGLE };

struct result {
    double commits_per_s;
    double mean_latency_ms;
    double max_latency_ms;
    double txns_per_fsync;      /* db_store only */
    int failures;
};

static void
remove_db_files(const char *path)
{
    static const char *const suffixes[] = { "", "-wal", "-shm" };

    for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
        char *file = xasprintf("%s%s", path, suffixes[i]);

        unlink(file);
        free(file);
    }
}

static int
run_mode(const struct bench *bench, enum mode mode, struct result *ret)
{
    static const char *const names[] = { "store", "raw-shared",
                                         "raw-single" };
    void *(*const fns[])(void *) = { store_worker, raw_shared_worker,
                                     raw_single_worker };
    struct run run = { .bench = bench };
    int n_threads = mode == MODE_RAW_SINGLE ? 1 : bench->n_threads;
    struct worker *workers = xcalloc(n_threads, sizeof *workers);
    pthread_t *tids = xcalloc(n_threads, sizeof *tids);
    char *path = xasprintf("%s/bench-%s.db", bench->dir, names[mode]);
    struct result result = { 0 };
    uint64_t fsyncs_before = 0;
    int64_t start, elapsed;
    int rc, started = 0;

    pthread_mutex_init(&run.mutex, NULL);
    remove_db_files(path);
    rc = mode == MODE_STORE ? store_setup(&run, path) : raw_setup(&run, path);
    if (rc) {
        goto out;
    }
    if (run.store) {
        fsyncs_before = db_store_commit_count(run.store);
    }

    start = time_mono_us();
    run.deadline_us = start + bench->duration_us;
    for (int i = 0; i < n_threads; i++) {
        workers[i] = (struct worker) { .run = &run, .id = i };
        rc = -pthread_create(&tids[i], NULL, fns[mode], &workers[i]);
        if (rc) {
            fprintf(stderr, "db-commit: pthread_create: %s\n", strerror(-rc));
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(tids[i], NULL);
    }
    if (rc) {
        goto out;
    }
    elapsed = time_mono_us() - start;

    result.commits_per_s = run.commits * 1e6 / (double) MAX(elapsed, 1);
    result.mean_latency_ms = run.commits
                             ? run.total_latency_us / 1e3 / run.commits : 0;
    result.max_latency_ms = run.max_latency_us / 1e3;
    result.failures = run.failures;
    if (run.store) {
        uint64_t fsyncs = db_store_commit_count(run.store) - fsyncs_before;

        result.txns_per_fsync = fsyncs ? (double) run.commits / fsyncs : 0;
    }
    *ret = result;
out:
    db_store_close(run.store);
    sqlite3_finalize(run.begin);
    sqlite3_finalize(run.insert);
    sqlite3_finalize(run.commit);
    sqlite3_close(run.db);
    remove_db_files(path);
    pthread_mutex_destroy(&run.mutex);
    free(path);
    free(tids);
    free(workers);
    return rc;
}

static void
print_result(const char *label, const struct result *r)
{
    printf("  %-40s %9.0f commits/s   latency mean %6.2f ms, max %7.2f ms",
           label, r->commits_per_s, r->mean_latency_ms, r->max_latency_ms);
    if (r->txns_per_fsync > 0) {
        printf("   %.1f txns/commit", r->txns_per_fsync);
    }
    if (r->failures) {
        printf("   (%d FAILED)", r->failures);
    }
    putchar('\n');
}

static void NORETURN
usage(void)
{
    fprintf(stderr, "usage: db-commit [-t SECONDS | -n COMMITS] "
            "[-j THREADS] [DIR]\n");
    exit(2);
}

int
main(int argc, char *argv[])
{
    struct bench *bench = xcalloc(1, sizeof *bench);
    struct result store, shared, single;
    bool made_dir = false;
    char label[64];
    int64_t v;
    double secs;
    int opt, rc = 1;

    bench->duration_us = 5 * 1000000;
    bench->n_threads = 8;
    while ((opt = getopt(argc, argv, "t:n:j:h")) != -1) {
        switch (opt) {
        case 't':
            if (str_to_double(optarg, &secs) || secs <= 0) {
                usage();
            }
            bench->duration_us = (int64_t) (secs * 1e6);
            bench->max_commits = 0;
            break;
        case 'n':
            if (str_to_int64(optarg, &v) || v <= 0) {
                usage();
            }
            bench->max_commits = (uint64_t) v;
            bench->duration_us = 0;
            break;
        case 'j':
            if (str_to_int64(optarg, &v) || v <= 0 || v > 1024) {
                usage();
            }
            bench->n_threads = (int) v;
            break;
        default:
            usage();
        }
    }
    if (optind + 1 < argc) {
        usage();
    }
    if (optind < argc) {
        bench->dir = xstrdup(argv[optind]);
        if (mkdir(bench->dir, 0700) && errno != EEXIST) {
            fprintf(stderr, "db-commit: %s: %s\n", bench->dir,
                    strerror(errno));
            goto out;
        }
    } else {
        bench->dir = xstrdup("/tmp/db-commit.XXXXXX");
        if (!mkdtemp(bench->dir)) {
            fprintf(stderr, "db-commit: mkdtemp: %s\n", strerror(errno));
            goto out;
        }
        made_dir = true;
    }

    /* Rows of realistic size: about what db.c writes for a VM record. */
    for (size_t i = 0; i < ROW_SIZE; i++) {
        bench->row[i] = "abcdefghijklmnopqrstuvwxyz<>/=\" 0123456789"[i % 42];
    }
    bench->row[ROW_SIZE] = '\0';

    printf("durable commits, %d-byte rows, WAL + synchronous=FULL, in %s, ",
           ROW_SIZE, bench->dir);
    if (bench->max_commits) {
        printf("%" PRIu64 " commits per run\n", bench->max_commits);
    } else {
        printf("%.1f s per run\n", bench->duration_us / 1e6);
    }
    fflush(stdout);

    if (run_mode(bench, MODE_STORE, &store)
        || run_mode(bench, MODE_RAW_SHARED, &shared)
        || run_mode(bench, MODE_RAW_SINGLE, &single)) {
        goto out;
    }
    snprintf(label, sizeof label, "db_store, %d threads (group commit)",
             bench->n_threads);
    print_result(label, &store);
    snprintf(label, sizeof label, "raw SQLite, %d threads, shared conn",
             bench->n_threads);
    print_result(label, &shared);
    print_result("raw SQLite, 1 thread, autocommit", &single);
    printf("  ratio db_store / raw %d-thread: %.2fx\n", bench->n_threads,
           shared.commits_per_s > 0
           ? store.commits_per_s / shared.commits_per_s : 0);
    printf("  ratio db_store / raw 1-thread:  %.2fx\n",
           single.commits_per_s > 0
           ? store.commits_per_s / single.commits_per_s : 0);
    rc = 0;
out:
    if (made_dir) {
        rmdir(bench->dir);
    }
    free(bench->dir);
    free(bench);
    return rc;
}
