/* test-events.c — unit tests of events.c for what the integration tests
 * (tests/integration/test_events.py) cannot reach quickly: the bounded
 * history of deletions (a token older than the forgotten ones is
 * EVENTS_LOST, newer ones stay exact), collapsing over thousands of
 * changes, the exact bound of the legacy ring, and events_shutdown()
 * answering a waiting call.  The calls go through api_dispatch() on a
 * memory-only database, so tens of thousands of commits take a second. */
#include <config.h>
#define TEST_MAIN
#include "test.h"

#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>

#include "api.h"

/* Must match events.c. */
#define MAX_TOMBSTONES 16384
#define LEGACY_MAX 1024

static struct xapi x;
static char session[48];
static char *tmp_dir;

/* The outcome of one call, which may come from another thread. */
struct answer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    struct value *result;
    struct value *error;
};

static void
answer_done(void *aux, struct value *result, struct value *error)
{
    struct answer *a = aux;

    pthread_mutex_lock(&a->mu);
    a->result = result;
    a->error = error;
    a->done = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static struct answer *
answer_new(void)
{
    struct answer *a = xcalloc(1, sizeof *a);

    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    return a;
}

/* Waits up to ms for the answer; returns whether it came. */
static bool
answer_wait(struct answer *a, int ms)
{
    bool done;

    for (int i = 0; i < ms; i++) {
        pthread_mutex_lock(&a->mu);
        done = a->done;
        pthread_mutex_unlock(&a->mu);
        if (done) {
            return true;
        }
        usleep(1000);
    }
    return false;
}

static void
answer_free(struct answer *a)
{
    if (a) {
        value_unref(a->result);
        value_unref(a->error);
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        free(a);
    }
}

/* Starts a call; params is consumed. */
static struct answer *
start_call(const char *method, struct value *params)
{
    struct answer *a = answer_new();

    api_dispatch(&x, method, params, "unit", answer_done, a);
    value_unref(params);
    return a;
}

/* Makes a call and waits for its answer. */
static struct answer *
call(const char *method, struct value *params)
{
    struct answer *a = start_call(method, params);

    if (!answer_wait(a, 10000)) {
        fprintf(stderr, "  %s: no answer\n", method);
        abort();
    }
    return a;
}

static const char *
error_code(const struct answer *a)
{
    return a->error ? a->error->u.arr.items[0]->u.str.s : NULL;
}

static struct value *
strings(const char *a, const char *b)
{
    struct value *arr = value_array(2);

    if (a) {
        value_array_append(arr, value_string(a));
    }
    if (b) {
        value_array_append(arr, value_string(b));
    }
    return arr;
}

/* event.from(session, [cls], token, timeout) */
static struct answer *
event_from(const char *cls, const char *token, double timeout)
{
    struct value *p = value_array(4);

    value_array_append(p, value_string(session));
    value_array_append(p, strings(cls, NULL));
    value_array_append(p, value_string(token));
    value_array_append(p, value_double(timeout));
    return call("event.from", p);
}

static char *
current_token(void)
{
    struct answer *a = event_from("secret", "", 0);
    char *t = xstrdup(value_struct_get_string(a->result, "token"));

    answer_free(a);
    return t;
}

static size_t
n_events(const struct answer *a)
{
    struct value *evs = a->result ? value_struct_get(a->result, "events")
                                  : NULL;
    return evs ? evs->u.arr.n : 0;
}

/* Inserts a secret row (a small class no other code touches). */
static void
insert_secret(const char *ref)
{
    struct value **f = xcalloc(api_classes[CLS_secret].n_fields, sizeof *f);
    struct db_txn *txn = db_begin(x.db);
    char uuid[40];

    uuid_generate(uuid);
    f[F_secret_uuid] = value_string(uuid);
    CHECK_INT(db_insert(txn, CLS_secret, ref, f, NULL), 0);
    free(f);
    CHECK_INT(db_commit(txn), 0);
}

static void
delete_secret(const char *ref)
{
    struct db_txn *txn = db_begin(x.db);

    CHECK_INT(db_delete(txn, CLS_secret, ref), 0);
    CHECK_INT(db_commit(txn), 0);
}

static void
set_secret_value(const char *ref, const char *v)
{
    struct db_txn *txn = db_begin(x.db);

    CHECK_INT(db_update(txn, CLS_secret, ref, F_secret_value, value_string(v)),
              0);
    CHECK_INT(db_commit(txn), 0);
}

/* Starts the pieces events.c needs, once, from the first test. */
static void
setup(void)
{
    char tmpl[] = "/tmp/test-events-XXXXXX";
    struct value *p;
    struct answer *a;
    char *err = NULL;

    if (tmp_dir) {
        return;
    }
    tmp_dir = xstrdup(mkdtemp(tmpl));
    x.state_dir = tmp_dir;
    x.root_hash_file = xasprintf("%s/root.passwd", tmp_dir);
    x.sessions = session_table_create();
    if (db_open(NULL, &x.db, &err)
        || session_set_root_password(&x, "unit-pw", &err)
        || task_executor_start(&x, 2) || events_init(&x)) {
        fprintf(stderr, "setup: %s\n", err ? err : "failed");
        exit(1);
    }
    p = value_array(4);
    value_array_append(p, value_string("root"));
    value_array_append(p, value_string("unit-pw"));
    value_array_append(p, value_string("1.0"));
    value_array_append(p, value_string("test-events"));
    a = call("session.login_with_password", p);
    if (!a->result) {
        fprintf(stderr, "setup: login failed\n");
        exit(1);
    }
    snprintf(session, sizeof session, "%s", a->result->u.str.s);
    answer_free(a);
}

__attribute__((destructor)) static void
teardown(void)
{
    char *cmd;

    if (!tmp_dir) {
        return;
    }
    cmd = xasprintf("rm -rf '%s'", tmp_dir);

    events_shutdown(&x);
    task_executor_stop(&x);
    session_table_destroy(x.sessions);
    db_close(x.db);
    free(x.root_hash_file);
    if (system(cmd)) {
        fprintf(stderr, "cannot remove %s\n", tmp_dir);
    }
    free(cmd);
    free(tmp_dir);
}

TEST(test_deletions_within_the_bound_are_delivered)
{
    char refs[100][48];
    char *token;
    struct answer *a;

    setup();
    for (int i = 0; i < 100; i++) {
        db_new_ref(refs[i]);
        insert_secret(refs[i]);
    }
    token = current_token();
    for (int i = 0; i < 100; i++) {
        delete_secret(refs[i]);
    }
    a = event_from("secret", token, 5);
    CHECK(!a->error);
    CHECK_INT(n_events(a), 100);
    if (n_events(a) == 100) {
        struct value *e = value_struct_get(a->result, "events")->u.arr.items[0];
        CHECK_STR(value_struct_get_string(e, "operation"), "del");
        CHECK_STR(value_struct_get_string(e, "ref"), refs[0]);
    }
    answer_free(a);
    free(token);
}

TEST(test_token_older_than_forgotten_deletions_is_events_lost)
{
    char *old_token, *recent = NULL;
    struct answer *a;
    char ref[48];

    setup();
    old_token = current_token();
    /* More deletions than the history keeps. */
    for (int i = 0; i < MAX_TOMBSTONES + 10; i++) {
        db_new_ref(ref);
        insert_secret(ref);
        delete_secret(ref);
        if (i == MAX_TOMBSTONES + 5) {
            recent = current_token();
        }
    }
    a = event_from("secret", old_token, 0);
    CHECK_STR(error_code(a), "EVENTS_LOST");
    answer_free(a);
    /* A token after the forgotten ones is still served. */
    a = event_from("secret", recent, 0);
    CHECK(!a->error);
    answer_free(a);
    free(old_token);
    free(recent);
}

TEST(test_thousands_of_changes_collapse_into_one_event)
{
    char ref[48], *token;
    struct answer *a;

    setup();
    db_new_ref(ref);
    insert_secret(ref);
    token = current_token();
    for (int i = 0; i < 5000; i++) {
        char v[32];
        snprintf(v, sizeof v, "v%d", i);
        set_secret_value(ref, v);
    }
    a = event_from("secret", token, 5);
    CHECK_INT(n_events(a), 1);
    if (n_events(a) == 1) {
        struct value *e = value_struct_get(a->result, "events")->u.arr.items[0];
        struct value *snap = value_struct_get(e, "snapshot");
        CHECK_STR(value_struct_get_string(e, "operation"), "mod");
        CHECK_STR(value_struct_get_string(snap, "value"), "v4999");
    }
    answer_free(a);
    delete_secret(ref);
    free(token);
}

static struct answer *
legacy(const char *method, const char *cls)
{
    struct value *p = value_array(2);

    value_array_append(p, value_string(session));
    if (cls) {
        value_array_append(p, strings(cls, NULL));
    }
    return call(method, p);
}

TEST(test_legacy_ring_keeps_exactly_its_bound)
{
    char ref[48];
    struct answer *a;

    setup();
    db_new_ref(ref);
    insert_secret(ref);
    answer_free(legacy("event.register", "secret"));
    for (int i = 0; i < LEGACY_MAX; i++) {
        set_secret_value(ref, i % 2 ? "a" : "b");
    }
    a = legacy("event.next", NULL);
    CHECK(!a->error);
    CHECK_INT(a->result ? a->result->u.arr.n : 0, LEGACY_MAX);
    answer_free(a);
    for (int i = 0; i < LEGACY_MAX + 1; i++) {
        set_secret_value(ref, i % 2 ? "a" : "b");
    }
    a = legacy("event.next", NULL);
    CHECK_STR(error_code(a), "EVENTS_LOST");
    answer_free(a);
    /* Reset to the present: the next change is delivered. */
    set_secret_value(ref, "c");
    a = legacy("event.next", NULL);
    CHECK_INT(a->result ? a->result->u.arr.n : 0, 1);
    answer_free(a);
    answer_free(legacy("event.unregister", "secret"));
    delete_secret(ref);
}

TEST(test_waiting_call_is_answered_on_change_and_at_shutdown)
{
    char *token, ref[48];
    struct value *p = value_array(4);
    struct answer *a, *b;

    setup();
    token = current_token();
    value_array_append(p, value_string(session));
    value_array_append(p, strings("secret", NULL));
    value_array_append(p, value_string(token));
    value_array_append(p, value_double(30));
    a = start_call("event.from", value_ref(p));
    CHECK(!answer_wait(a, 100));        /* it waits */
    db_new_ref(ref);
    insert_secret(ref);
    CHECK(answer_wait(a, 5000));
    CHECK_INT(n_events(a), 1);
    answer_free(a);

    b = start_call("event.from", p);    /* same token: answered at once */
    CHECK(answer_wait(b, 5000));
    answer_free(b);

    free(token);
    token = current_token();
    p = value_array(4);
    value_array_append(p, value_string(session));
    value_array_append(p, strings("secret", NULL));
    value_array_append(p, value_string(token));
    value_array_append(p, value_double(30));
    a = start_call("event.from", p);
    CHECK(!answer_wait(a, 100));
    events_shutdown(&x);
    CHECK(answer_wait(a, 1000));
    answer_free(a);
    free(token);
    CHECK_INT(events_init(&x), 0);      /* for any later test */
}

