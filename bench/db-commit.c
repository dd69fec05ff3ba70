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
 * Latency is from submit (or lock) to durable.  glibc mutexes are not
 * fair, so in raw-shared one thread can keep the lock for long stretches:
 * its mean latency looks good while its maximum shows the starvation.
 *
 * Usage: db-commit [-t SECONDS | -n COMMITS] [-j THREADS] [-r ROUNDS] [DIR]
 * Each mode gets SECONDS (default 5) or COMMITS in total, split over
 * ROUNDS (default 5) rounds that take the modes in turn, so that load
 * from other programs on the machine does not favour one mode.  DIR
 * defaults to a new directory under /tmp, removed afterwards. */
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
    /* How long each mode runs in one round: whichever limit is set. */
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

enum mode { MODE_STORE, MODE_RAW_SHARED, MODE_RAW_SINGLE, N_MODES };

/* Totals for one mode over all rounds. */
struct result {
    uint64_t commits;
    int64_t elapsed_us;
    int64_t total_latency_us;
    int64_t max_latency_us;
    uint64_t sqlite_commits;    /* db_store only */
    double min_rate, max_rate;  /* commits/s of the slowest, fastest round */
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

/* Runs one mode for one round on a fresh file and adds to *result. */
static int
run_mode(const struct bench *bench, enum mode mode, struct result *result)
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
    uint64_t sqlite_commits_before = 0;
    int64_t start, elapsed;
    double rate;
    int rc, started = 0;

    pthread_mutex_init(&run.mutex, NULL);
    remove_db_files(path);
    rc = mode == MODE_STORE ? store_setup(&run, path) : raw_setup(&run, path);
    if (rc) {
        goto out;
    }
    if (run.store) {
        sqlite_commits_before = db_store_commit_count(run.store);
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
    elapsed = MAX(time_mono_us() - start, 1);

    rate = run.commits * 1e6 / elapsed;
    result->min_rate = result->elapsed_us ? MIN(result->min_rate, rate) : rate;
    result->max_rate = result->elapsed_us ? MAX(result->max_rate, rate) : rate;
    result->commits += run.commits;
    result->elapsed_us += elapsed;
    result->total_latency_us += run.total_latency_us;
    result->max_latency_us = MAX(result->max_latency_us, run.max_latency_us);
    result->failures += run.failures;
    if (run.store) {
        result->sqlite_commits += db_store_commit_count(run.store)
                                  - sqlite_commits_before;
    }
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

static double
result_rate(const struct result *r)
{
    return r->elapsed_us ? r->commits * 1e6 / r->elapsed_us : 0;
}

static void
print_result(const char *label, const struct result *r)
{
    printf("  %-36s %7.0f commits/s (rounds %.0f..%.0f)  latency mean "
           "%.2f ms, max %.1f ms", label, result_rate(r), r->min_rate,
           r->max_rate,
           r->commits ? r->total_latency_us / 1e3 / r->commits : 0.0,
           r->max_latency_us / 1e3);
    if (r->sqlite_commits) {
        printf(", %.1f txns per SQLite commit",
               (double) r->commits / r->sqlite_commits);
    }
    if (r->failures) {
        printf("  (%d FAILED)", r->failures);
    }
    putchar('\n');
}

static void NORETURN
usage(void)
{
    fprintf(stderr, "usage: db-commit [-t SECONDS | -n COMMITS] "
            "[-j THREADS] [-r ROUNDS] [DIR]\n");
    exit(2);
}

int
main(int argc, char *argv[])
{
    struct bench *bench = xcalloc(1, sizeof *bench);
    struct result results[N_MODES] = { { 0 } };
    int64_t total_us = 5 * 1000000;
    uint64_t total_commits = 0;
    int rounds = 5;
    bool made_dir = false;
    char label[64];
    int64_t v;
    double secs;
    int opt, rc = 1;

    bench->n_threads = 8;
    while ((opt = getopt(argc, argv, "t:n:j:r:h")) != -1) {
        switch (opt) {
        case 't':
            if (str_to_double(optarg, &secs) || secs <= 0) {
                usage();
            }
            total_us = (int64_t) (secs * 1e6);
            total_commits = 0;
            break;
        case 'n':
            if (str_to_int64(optarg, &v) || v <= 0) {
                usage();
            }
            total_commits = (uint64_t) v;
            break;
        case 'j':
            if (str_to_int64(optarg, &v) || v <= 0 || v > 1024) {
                usage();
            }
            bench->n_threads = (int) v;
            break;
        case 'r':
            if (str_to_int64(optarg, &v) || v <= 0 || v > 1000) {
                usage();
            }
            rounds = (int) v;
            break;
        default:
            usage();
        }
    }
    if (optind + 1 < argc) {
        usage();
    }
    /* Each mode gets the whole budget, split over the rounds. */
    if (total_commits) {
        bench->max_commits = MAX(total_commits / rounds, 1);
    } else {
        bench->duration_us = total_us / rounds;
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

    printf("durable commits, %d-byte rows, WAL + synchronous=FULL, in %s\n",
           ROW_SIZE, bench->dir);
    if (total_commits) {
        printf("%" PRIu64 " commits per mode", total_commits);
    } else {
        printf("%.1f s per mode", total_us / 1e6);
    }
    printf(", in %d interleaved rounds so that changing background load "
           "hits every mode alike\n", rounds);
    fflush(stdout);

    for (int r = 0; r < rounds; r++) {
        for (int m = 0; m < N_MODES; m++) {
            if (run_mode(bench, m, &results[m])) {
                goto out;
            }
        }
    }
    snprintf(label, sizeof label, "db_store, %d threads, group commit",
             bench->n_threads);
    print_result(label, &results[MODE_STORE]);
    snprintf(label, sizeof label, "raw SQLite, %d threads, shared conn",
             bench->n_threads);
    print_result(label, &results[MODE_RAW_SHARED]);
    print_result("raw SQLite, 1 thread, autocommit",
                 &results[MODE_RAW_SINGLE]);
    if (result_rate(&results[MODE_RAW_SHARED]) > 0) {
        printf("  ratio db_store / raw %d-thread: %.2fx\n", bench->n_threads,
               result_rate(&results[MODE_STORE])
               / result_rate(&results[MODE_RAW_SHARED]));
    }
    if (result_rate(&results[MODE_RAW_SINGLE]) > 0) {
        printf("  ratio db_store / raw 1-thread:  %.2fx\n",
               result_rate(&results[MODE_STORE])
               / result_rate(&results[MODE_RAW_SINGLE]));
    }
    rc = 0;
out:
    if (made_dir) {
        rmdir(bench->dir);
    }
    free(bench->dir);
    free(bench);
    return rc;
}
