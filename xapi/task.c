/* task.c — the task engine: Async.* calls, client-made tasks, progress,
 * cooperative cancellation and pruning.
 *
 * rpc.c checks an Async call's arguments, asks task_create_for_call() for
 * a task row, answers the task ref, and queues the work here; a fixed pool
 * of executor threads runs it with ctx->task set, and task_complete_ref()
 * records the outcome (status, progress 1.0, finished time, the result
 * encoded as an XML-RPC <value> as XenAPI does, or error_info).
 *
 * Long work reports progress with api_task_set_progress() and checks
 * api_task_cancelled() at safe points; task.cancel only raises a flag
 * (status "cancelling"), and the work ends with TASK_CANCELLED, which
 * becomes status "cancelled".  Task rows are not persisted.  Completed
 * tasks of a session beyond TASKS_KEPT are pruned, oldest first, and a
 * session's completed tasks go with it when it ends. */
#include <config.h>
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "strmap.h"

#define TASKS_KEPT 200

struct task_job {
    struct task_job *next;
    void (*fn)(void *aux);
    void *aux;
};

/* Per-task state that is not in the row: who owns it, and the cancel
 * flag (read by the running work without touching the database). */
struct task_state {
    char ref[48];
    char session[48];           /* "" for tasks of no session */
    bool cancel_requested;
    bool done;
    int64_t finished_ms;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct task_job *head, *tail;
    pthread_t *threads;
    size_t n_threads;
    bool stopping;
    struct strmap tasks;        /* ref -> struct task_state */
    struct xapi *x;
} te = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void *
executor_main(void *arg)
{
    (void) arg;
    pthread_mutex_lock(&te.mu);
    for (;;) {
        struct task_job *job;
        while (!te.head && !te.stopping) {
            pthread_cond_wait(&te.cv, &te.mu);
        }
        if (!te.head) {
            break;
        }
        job = te.head;
        te.head = job->next;
        if (!te.head) {
            te.tail = NULL;
        }
        pthread_mutex_unlock(&te.mu);
        job->fn(job->aux);
        free(job);
        pthread_mutex_lock(&te.mu);
    }
    pthread_mutex_unlock(&te.mu);
    return NULL;
}

int
task_executor_start(struct xapi *x, size_t n_threads)
{
    te.x = x;
    strmap_init(&te.tasks);
    te.threads = xcalloc(n_threads, sizeof *te.threads);
    for (size_t i = 0; i < n_threads; i++) {
        int r = pthread_create(&te.threads[i], NULL, executor_main, NULL);
        if (r) {
            return -r;
        }
        te.n_threads++;
    }
    return 0;
}

void
task_executor_stop(struct xapi *x)
{
    const char *key;
    void *data;

    (void) x;
    pthread_mutex_lock(&te.mu);
    te.stopping = true;
    pthread_cond_broadcast(&te.cv);
    pthread_mutex_unlock(&te.mu);
    for (size_t i = 0; i < te.n_threads; i++) {
        pthread_join(te.threads[i], NULL);
    }
    free(te.threads);
    te.threads = NULL;
    te.n_threads = 0;
    for (size_t pos = 0; strmap_next(&te.tasks, &pos, &key, &data);) {
        free(data);
    }
    strmap_destroy(&te.tasks);
}

void
task_submit(struct xapi *x, void (*fn)(void *aux), void *aux)
{
    struct task_job *job = xcalloc(1, sizeof *job);

    (void) x;
    job->fn = fn;
    job->aux = aux;
    pthread_mutex_lock(&te.mu);
    if (te.tail) {
        te.tail->next = job;
    } else {
        te.head = job;
    }
    te.tail = job;
    pthread_cond_signal(&te.cv);
    pthread_mutex_unlock(&te.mu);
}

/* Deletes a task row and drops it from its session's task list. */
static void
delete_task(struct db_txn *txn, struct xapi *x, const char *ref,
            const char *session)
{
    struct db_row *s = *session ? db_lookup(x->db, CLS_session, session) : NULL;

    db_delete(txn, CLS_task, ref);
    if (s) {
        const struct value *cur = s->fields[F_session_tasks];
        struct value *nv = value_array(cur->u.arr.n);
        for (size_t i = 0; i < cur->u.arr.n; i++) {
            if (strcmp(cur->u.arr.items[i]->u.str.s, ref)) {
                value_array_append(nv, value_ref(cur->u.arr.items[i]));
            }
        }
        db_update(txn, CLS_session, session, F_session_tasks, nv);
    }
}

/* Removes completed tasks of a session beyond the bound, oldest first. */
static void
prune_session_tasks(struct xapi *x, const char *session)
{
    struct task_state **done = NULL;
    size_t n = 0;
    const char *key;
    void *data;

    pthread_mutex_lock(&te.mu);
    for (size_t pos = 0; strmap_next(&te.tasks, &pos, &key, &data);) {
        struct task_state *t = data;
        if (t->done && !strcmp(t->session, session)) {
            done = xrealloc(done, (n + 1) * sizeof *done);
            done[n++] = t;
        }
    }
    if (n > TASKS_KEPT) {
        struct db_txn *txn;
        /* Selection of the oldest by a simple sort on finishing time. */
        for (size_t i = 1; i < n; i++) {
            for (size_t j = i; j > 0 && done[j - 1]->finished_ms > done[j]->finished_ms; j--) {
                struct task_state *tmp = done[j];
                done[j] = done[j - 1];
                done[j - 1] = tmp;
            }
        }
        txn = db_begin(x->db);
        for (size_t i = 0; i < n - TASKS_KEPT; i++) {
            delete_task(txn, x, done[i]->ref, done[i]->session);
            strmap_remove(&te.tasks, done[i]->ref);
            free(done[i]);
        }
        db_commit(txn);
    }
    pthread_mutex_unlock(&te.mu);
    free(done);
}

static int
task_insert(struct xapi *x, const char *label, const char *description,
            const char *session, const char *parent, char *ret_ref)
{
    struct value **f = xcalloc(api_classes[CLS_task].n_fields, sizeof *f);
    struct task_state *t = xcalloc(1, sizeof *t);
    struct db_txn *txn;
    char uuid[40], ref[48];
    int rc;

    db_new_ref(ref);
    uuid_generate(uuid);
    f[F_task_uuid] = value_string(uuid);
    f[F_task_name_label] = value_string(label);
    f[F_task_name_description] = value_string(description);
    f[F_task_allowed_operations] = value_array(1);
    value_array_append(f[F_task_allowed_operations], value_string("cancel"));
    f[F_task_created] = value_datetime_secs(time_wall_ms() / 1000);
    f[F_task_finished] = value_datetime_secs(0);
    f[F_task_status] = value_string("pending");
    f[F_task_resident_on] = value_string(x->host_ref);
    f[F_task_progress] = value_double(0);
    f[F_task_type] = value_string("<none/>");
    f[F_task_result] = value_empty_string();
    f[F_task_error_info] = value_empty_array();
    if (parent && *parent) {
        f[F_task_subtask_of] = value_string(parent);
    }
    txn = db_begin(x->db);
    rc = db_insert(txn, CLS_task, ref, f, NULL);
    free(f);
    if (!rc && session && *session && db_lookup(x->db, CLS_session, session)) {
        struct db_row *s = db_lookup(x->db, CLS_session, session);
        struct value *tasks = value_copy_shallow(s->fields[F_session_tasks]);
        value_array_append(tasks, value_string(ref));
        db_update(txn, CLS_session, session, F_session_tasks, tasks);
    }
    if (rc) {
        db_abort(txn);
        free(t);
        return rc;
    }
    db_commit(txn);
    snprintf(t->ref, sizeof t->ref, "%s", ref);
    snprintf(t->session, sizeof t->session, "%s", session ? session : "");
    pthread_mutex_lock(&te.mu);
    strmap_put(&te.tasks, t->ref, t);
    pthread_mutex_unlock(&te.mu);
    memcpy(ret_ref, ref, 48);
    return 0;
}

int
task_create_for_call(struct api_ctx *ctx, char *ret_ref)
{
    const char *session = ctx->session ? session_ref(ctx->session) : "";

    if (task_insert(ctx->x, ctx->method, "", session, NULL, ret_ref)) {
        return api_fail_internal(ctx, "cannot create a task");
    }
    return 0;
}

void
task_started(struct xapi *x, const char *task_ref)
{
    (void) x;
    (void) task_ref;
}

static struct task_state *
task_state_get(const char *ref)
{
    struct task_state *t;

    pthread_mutex_lock(&te.mu);
    t = strmap_get(&te.tasks, ref);
    pthread_mutex_unlock(&te.mu);
    return t;
}

void
task_complete_ref(const char *task_ref, struct value *result,
                  struct value *error)
{
    struct xapi *x = te.x;
    struct db_txn *txn = db_begin(x->db);
    struct db_row *row = db_lookup(x->db, CLS_task, task_ref);
    struct task_state *t;
    char session[48] = "";
    const char *status;

    if (!row) {
        db_abort(txn);     /* destroyed while it ran */
        return;
    }
    if (error) {
        const char *code = error->u.arr.items[0]->u.str.s;
        status = !strcmp(code, "TASK_CANCELLED") ? "cancelled" : "failure";
        db_update(txn, CLS_task, task_ref, F_task_error_info, value_ref(error));
    } else {
        struct ds ds = DS_EMPTY;
        status = "success";
        /* XenAPI keeps the result as an XML-RPC <value>, whatever protocol
         * the client speaks. */
        xmlrpc_write_value(&ds, result);
        db_update(txn, CLS_task, task_ref, F_task_result,
                  value_string_n(ds_cstr(&ds), ds.len));
        ds_destroy(&ds);
    }
    db_update(txn, CLS_task, task_ref, F_task_status, value_string(status));
    db_update(txn, CLS_task, task_ref, F_task_progress, value_double(1.0));
    db_update(txn, CLS_task, task_ref, F_task_finished,
              value_datetime_secs(time_wall_ms() / 1000));
    db_update(txn, CLS_task, task_ref, F_task_allowed_operations,
              value_empty_array());
    db_commit(txn);
    pthread_mutex_lock(&te.mu);
    t = strmap_get(&te.tasks, task_ref);
    if (t) {
        t->done = true;
        t->finished_ms = time_wall_ms();
        snprintf(session, sizeof session, "%s", t->session);
    }
    pthread_mutex_unlock(&te.mu);
    if (*session) {
        prune_session_tasks(x, session);
    }
}

/* ---- for long-running work ---- */

void
api_task_set_progress(struct api_ctx *ctx, double progress)
{
    struct db_txn *txn;

    if (!*ctx->task) {
        return;
    }
    txn = db_begin(ctx->x->db);
    if (db_lookup(ctx->x->db, CLS_task, ctx->task)) {
        db_update(txn, CLS_task, ctx->task, F_task_progress,
                  value_double(progress < 0 ? 0 : progress > 1 ? 1 : progress));
    }
    db_commit(txn);
}

bool
api_task_cancelled(struct api_ctx *ctx)
{
    struct task_state *t;
    bool c = false;

    if (!*ctx->task) {
        return false;
    }
    pthread_mutex_lock(&te.mu);
    t = strmap_get(&te.tasks, ctx->task);
    c = t && t->cancel_requested;
    pthread_mutex_unlock(&te.mu);
    return c;
}

/* A step of a long operation, shown as a task whose subtask_of is the
 * operation's task (XenAPI clients display them as progress detail). */
void
api_subtask_begin(struct api_ctx *ctx, const char *label, char *ret_ref)
{
    ret_ref[0] = '\0';
    if (!*ctx->task) {
        return;
    }
    if (task_insert(ctx->x, label, "", "", ctx->task, ret_ref)) {
        ret_ref[0] = '\0';
    }
}

void
api_subtask_end(struct api_ctx *ctx, const char *ref, const struct value *error)
{
    if (!*ref) {
        return;
    }
    task_complete_ref(ref, error ? NULL : value_empty_string(),
                      (struct value *) error);
}

/* ---- task.* messages ---- */

static struct db_row *
task_row(struct api_ctx *ctx, struct value *ref)
{
    return db_lookup(ctx->x->db, CLS_task, ref->u.str.s);
}

int
api_task_create(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    char ref[48];

    if (task_insert(ctx->x, args[1]->u.str.s, args[2]->u.str.s,
                    session_ref(ctx->session), NULL, ref)) {
        return api_fail_internal(ctx, "cannot create a task");
    }
    *ret = value_string(ref);
    return 0;
}

int
api_task_destroy(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    struct db_txn *txn = db_begin(ctx->x->db);
    const char *ref = args[1]->u.str.s;
    struct task_state *t;

    if (!db_lookup(ctx->x->db, CLS_task, ref)) {
        db_abort(txn);
        return api_fail_handle(ctx, CLS_task, ref);
    }
    pthread_mutex_lock(&te.mu);
    t = strmap_remove(&te.tasks, ref);
    pthread_mutex_unlock(&te.mu);
    delete_task(txn, ctx->x, ref, t ? t->session : "");
    free(t);
    return api_commit(ctx, txn);
}

int
api_task_cancel(struct api_ctx *ctx, struct value **args, struct value **ret)
{
    const char *ref = args[1]->u.str.s;
    struct db_txn *txn = db_begin(ctx->x->db);
    struct db_row *row = task_row(ctx, args[1]);
    struct task_state *t;

    if (!row) {
        db_abort(txn);
        return api_fail_handle(ctx, CLS_task, ref);
    }
    if (strcmp(row->fields[F_task_status]->u.str.s, "pending")) {
        db_abort(txn);
        return api_fail(ctx, ERR_OPERATION_NOT_ALLOWED,
                        "the task is not pending");
    }
    db_update(txn, CLS_task, ref, F_task_status, value_string("cancelling"));
    if (api_commit(ctx, txn)) {
        return -1;
    }
    pthread_mutex_lock(&te.mu);
    t = strmap_get(&te.tasks, ref);
    if (t) {
        t->cancel_requested = true;
    }
    pthread_mutex_unlock(&te.mu);
    return 0;
}

static int
task_set(struct api_ctx *ctx, struct value **args, int field,
         struct value *v)
{
    struct db_txn *txn = db_begin(ctx->x->db);

    if (!task_row(ctx, args[1])) {
        db_abort(txn);
        value_unref(v);
        return api_fail_handle(ctx, CLS_task, args[1]->u.str.s);
    }
    db_update(txn, CLS_task, args[1]->u.str.s, field, v);
    return api_commit(ctx, txn);
}

int
api_task_set_status(struct api_ctx *ctx, struct value **args,
                    struct value **ret)
{
    struct task_state *t = task_state_get(args[1]->u.str.s);

    if (t && strcmp(args[2]->u.str.s, "pending")
        && strcmp(args[2]->u.str.s, "cancelling")) {
        t->done = true;
        t->finished_ms = time_wall_ms();
    }
    return task_set(ctx, args, F_task_status, value_ref(args[2]));
}

int
api_task_set_progress_msg(struct api_ctx *ctx, struct value **args,
                          struct value **ret)
{
    double p = args[2]->u.d;

    if (p < 0 || p > 1) {
        return api_fail(ctx, ERR_INVALID_VALUE, "value", "progress must be in 0..1");
    }
    return task_set(ctx, args, F_task_progress, value_ref(args[2]));
}

int
api_task_set_result(struct api_ctx *ctx, struct value **args,
                    struct value **ret)
{
    return task_set(ctx, args, F_task_result, value_ref(args[2]));
}

int
api_task_set_error_info(struct api_ctx *ctx, struct value **args,
                        struct value **ret)
{
    return task_set(ctx, args, F_task_error_info, value_ref(args[2]));
}

/* Called when a session ends: its completed tasks go with it. */
void
task_session_ended(struct xapi *x, const char *session)
{
    struct task_state **victims = NULL;
    size_t n = 0;
    const char *key;
    void *data;

    pthread_mutex_lock(&te.mu);
    for (size_t pos = 0; strmap_next(&te.tasks, &pos, &key, &data);) {
        struct task_state *t = data;
        if (!strcmp(t->session, session)) {
            if (t->done) {
                victims = xrealloc(victims, (n + 1) * sizeof *victims);
                victims[n++] = t;
            } else {
                t->session[0] = '\0';
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        strmap_remove(&te.tasks, victims[i]->ref);
    }
    pthread_mutex_unlock(&te.mu);
    if (n) {
        struct db_txn *txn = db_begin(x->db);
        for (size_t i = 0; i < n; i++) {
            db_delete(txn, CLS_task, victims[i]->ref);
            free(victims[i]);
        }
        db_commit(txn);
    }
    free(victims);
}
