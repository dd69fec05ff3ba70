/* events.c — event.from, event.inject, event.get_current_id and the
 * legacy event.register/next/unregister, fed by the database's commit hook
 * (db.h) and answered through deferred calls (api_defer/api_complete in
 * rpc.c), so that a waiting client holds no worker thread.
 *
 * The index.  One struct ev_obj per object ever seen (every live row, and
 * a bounded number of deleted ones, "tombstones"), holding the row's
 * latest snapshot and the generation of its latest change, in one list
 * ordered by that generation.  The commit hook moves a changed object to
 * the tail, so the changes newer than a token are exactly the tail of the
 * list, each object once with its current snapshot: repeated changes
 * collapse, as XenAPI does, and answering costs O(changes), not O(rows).
 * Deleted objects keep their last snapshot.  When more than
 * MAX_TOMBSTONES deletions are kept the oldest is forgotten and the
 * "horizon" rises to its generation: a token below the horizon could miss
 * a deletion, so it is answered EVENTS_LOST (XenAPI would silently return
 * what it still has; a client that handles EVENTS_LOST by starting again
 * from "" — Xen Orchestra does — then stays exact).  Tokens carry the
 * daemon's boot id, so a token from before a restart is also EVENTS_LOST.
 *
 * Locking.  ev.mu guards everything here.  The hook runs under the
 * database write lock and takes ev.mu for O(1) work per changed row; lock
 * order is database lock, then ev.mu, never the reverse.  Nothing heavier
 * (building records, encoding, answering) happens under either lock.
 *
 * Waking.  Waiting event.from and event.next calls are records on lists,
 * not threads.  One dispatcher thread sleeps on ev.cv until the hook
 * reports a new generation, a session ends, or the nearest timeout
 * passes.  The hook signals before db.c publishes the generation, so the
 * dispatcher first takes and drops the database read lock — a barrier that
 * waits for the commit to finish — and then delivers only changes up to
 * the published generation, never half a transaction.  It then checks
 * each waiter against the changes since that waiter last looked (O(new
 * changes) per waiter), collects the rows to send under ev.mu, and builds
 * the answers after dropping it; records shared by several answers are
 * built once.  Encoding them (rpc.c's completion callback) is the costly
 * part, so a large batch is spread over N_SENDERS sender threads.
 *
 * Legacy events (register/next) are one global ring of the last
 * LEGACY_MAX individual changes (not collapsed), filled only while some
 * session is registered; each subscription keeps a cursor into it, and a
 * cursor that fell off the ring gets EVENTS_LOST and is moved to the
 * present. */
#include <config.h>
#include "api.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "strmap.h"

/* Threads that encode and send answers beside the dispatcher, and the
 * smallest batch worth handing to them. */
#define N_SENDERS 2
#define PARALLEL_MIN 16
/* Deletions remembered for event.from tokens. */
#define MAX_TOMBSTONES 16384
/* Individual changes remembered for event.next (XenAPI keeps 500). */
#define LEGACY_MAX 1024
/* The longest wait an event.from may ask for (a year): larger values
 * would overflow the deadline arithmetic and mean "forever" anyway. */
#define MAX_TIMEOUT_S (365.0 * 24 * 3600)

enum ev_op { OP_ADD, OP_MOD, OP_DEL };
static const char *const op_names[] = { "add", "mod", "del" };

/* The latest change of one object. */
struct ev_obj {
    struct ev_obj *prev, *next;         /* the list, by generation */
    struct ev_obj *tprev, *tnext;       /* tombstones, by deletion */
    char *ref;                          /* key in ev.objs */
    int cls;
    bool deleted;
    uint64_t gen;                       /* of the latest change */
    uint64_t gen_created;               /* 0 for rows loaded at start */
    int64_t time_ms;                    /* wall time of the latest change */
    struct db_row *row;                 /* current, or last before delete */
};

/* What a client subscribed to: "*", whole classes, or single objects. */
struct ev_filter {
    bool all;
    bool cls[CLS__COUNT];
    struct strmap refs;                 /* ref -> struct ev_filter_ref */
};

struct ev_filter_ref {
    char *ref;                          /* the key */
    int cls;
};

/* One change to send. */
struct ev_item {
    struct db_row *row;                 /* a reference */
    uint64_t id;
    int64_t time_ms;
    enum ev_op op;
};

struct ev_items {
    struct ev_item *v;
    size_t n, cap;
};

/* A waiting event.from. */
struct ev_waiter {
    struct ev_waiter *prev, *next;
    struct api_deferred *d;
    char session[48];
    struct ev_filter filter;
    uint64_t token;                     /* as the client gave it */
    bool full;                          /* token "": everything is new */
    uint64_t checked;                   /* nothing matched up to here */
    int64_t deadline_ms;                /* monotonic */
};

/* A session registered for legacy events. */
struct ev_sub {
    char session[48];                   /* key in ev.subs */
    struct ev_filter filter;
    uint64_t cursor;                    /* next ring id to look at */
    struct api_deferred *next_d;        /* a waiting event.next, or NULL */
};

/* One entry of the legacy ring. */
struct ev_legacy {
    uint64_t gen;
    int64_t time_ms;
    enum ev_op op;
    struct db_row *row;
};

/* An answer prepared under ev.mu and sent after it is dropped. */
struct ev_delivery {
    struct ev_delivery *next;
    struct api_deferred *d;
    struct value *result;               /* the built answer, or */
    struct value *error;                /* answer this error, or else */
    bool legacy;                        /* an event.next answer */
    struct ev_items items;
    uint64_t token;                     /* event.from's new token */
    struct ev_filter *filter;           /* event.from: for the ref counts */
};

/* Sessions that ended, for the dispatcher to release their waiters. */
struct ev_dead {
    struct ev_dead *next;
    char session[48];
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;                  /* wakes the dispatcher */
    bool initialized;
    bool stopping;
    pthread_t thread;
    struct xapi *x;
    char boot_id[17];

    /* The index. */
    struct strmap objs;                 /* ref -> struct ev_obj */
    struct ev_obj *head, *tail;
    struct ev_obj *thead, *ttail;       /* tombstones, oldest first */
    size_t n_tombstones;
    uint64_t horizon;                   /* oldest token still exact */

    /* The dispatcher's view. */
    uint64_t hook_gen;                  /* last generation the hook saw */
    uint64_t pass_gen;                  /* last generation dispatched */
    bool rescan;                        /* a waiter needs a fresh pass */
    struct ev_waiter *waiters;          /* waiting event.from calls */
    size_t n_waiters;
    size_t n_next_waiters;              /* subscriptions in event.next */
    int64_t next_deadline_ms;           /* earliest waiter deadline */
    struct ev_dead *dead;

    /* Answers being sent (under send_mu, not ev.mu). */
    pthread_mutex_t send_mu;
    pthread_cond_t send_cv;
    struct ev_delivery *send_q;
    bool send_stopping;
    pthread_t senders[N_SENDERS];
    size_t n_senders;

    /* Legacy events. */
    struct strmap subs;                 /* session ref -> struct ev_sub */
    size_t n_subs;
    struct ev_legacy ring[LEGACY_MAX];
    uint64_t ring_head;                 /* id of the next entry */
    uint64_t ring_count;
} ev = { .mu = PTHREAD_MUTEX_INITIALIZER,
         .send_mu = PTHREAD_MUTEX_INITIALIZER,
         .send_cv = PTHREAD_COND_INITIALIZER };

/* The generation of the last row the commit hook saw on this thread:
 * event.inject learns the generation of its own commit from it. */
static __thread uint64_t hook_gen_tls;

/* Events name classes in lower case, as XenAPI does. */
static char lower_names[CLS__COUNT][64];

static void
init_lower_names(void)
{
    for (size_t c = 0; c < api_n_classes && c < CLS__COUNT; c++) {
        const char *s = api_classes[c].name;
        size_t i;
        for (i = 0; s[i] && i < sizeof lower_names[c] - 1; i++) {
            lower_names[c][i] = s[i] >= 'A' && s[i] <= 'Z'
                                ? s[i] + ('a' - 'A') : s[i];
        }
        lower_names[c][i] = '\0';
    }
}

/* ---- filters ---- */

static void
filter_init(struct ev_filter *f)
{
    memset(f, 0, sizeof *f);
    strmap_init(&f->refs);
}

static void
filter_clear_refs(struct ev_filter *f)
{
    const char *key;
    void *data;

    for (size_t pos = 0; strmap_next(&f->refs, &pos, &key, &data);) {
        struct ev_filter_ref *fr = data;
        free(fr->ref);
        free(fr);
    }
    strmap_destroy(&f->refs);
    strmap_init(&f->refs);
}

static void
filter_destroy(struct ev_filter *f)
{
    if (f) {
        filter_clear_refs(f);
        strmap_destroy(&f->refs);
    }
}

static void
filter_add_ref(struct ev_filter *f, int cls, const char *ref)
{
    struct ev_filter_ref *fr = strmap_get(&f->refs, ref);

    if (!fr) {
        fr = xmalloc(sizeof *fr);
        fr->ref = xstrdup(ref);
        strmap_put(&f->refs, fr->ref, fr);
    }
    fr->cls = cls;
}

static void
filter_remove_ref(struct ev_filter *f, const char *ref)
{
    struct ev_filter_ref *fr = strmap_remove(&f->refs, ref);

    if (fr) {
        free(fr->ref);
        free(fr);
    }
}

/* Parses one subscription: "*", a class name in any case, or
 * "class/ref".  As in XenAPI only the form is checked: a well-formed name
 * of a class this datamodel lacks (or one without rows) is accepted and
 * matches nothing (*ret_cls is then -2), so that a client subscribing to
 * a fixed list of classes keeps working.  Returns -EINVAL if malformed. */
static int
filter_parse_one(const char *s, int *ret_cls, const char **ret_ref)
{
    const char *slash = strchr(s, '/');
    char name[64];
    size_t len = slash ? (size_t) (slash - s) : strlen(s);
    int cls;

    if (!strcmp(s, "*")) {
        *ret_cls = -1;
        *ret_ref = NULL;
        return 0;
    }
    if (!len || len >= sizeof name || (slash && !slash[1])) {
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_')) {
            return -EINVAL;
        }
    }
    memcpy(name, s, len);
    name[len] = '\0';
    cls = api_class_find_nocase(name);
    *ret_cls = cls >= 0 && cls < CLS__COUNT ? cls : -2;
    *ret_ref = slash ? slash + 1 : NULL;
    return 0;
}

/* Adds every subscription of a string set to f; on a malformed one sets
 * *ret_bad to it and returns -EINVAL. */
static int
filter_add(struct ev_filter *f, const struct value *classes,
           const char **ret_bad)
{
    for (size_t i = 0; i < classes->u.arr.n; i++) {
        const struct value *v = classes->u.arr.items[i];
        const char *ref;
        int cls;

        if (v->type != VALUE_STRING || filter_parse_one(v->u.str.s, &cls, &ref)) {
            *ret_bad = v->type == VALUE_STRING ? v->u.str.s : "";
            return -EINVAL;
        }
        if (cls == -1) {
            f->all = true;
        } else if (cls < 0) {
            continue;                   /* a class we do not have */
        } else if (!ref) {
            f->cls[cls] = true;
        } else {
            filter_add_ref(f, cls, ref);
        }
    }
    return 0;
}

/* Removes subscriptions (event.unregister).  Malformed ones are ignored:
 * they cannot be subscribed. */
static void
filter_remove(struct ev_filter *f, const struct value *classes)
{
    for (size_t i = 0; i < classes->u.arr.n; i++) {
        const struct value *v = classes->u.arr.items[i];
        const char *ref;
        int cls;

        if (v->type != VALUE_STRING || filter_parse_one(v->u.str.s, &cls, &ref)) {
            continue;
        }
        if (cls == -1) {
            f->all = false;
            memset(f->cls, 0, sizeof f->cls);
            filter_clear_refs(f);
        } else if (cls < 0) {
            continue;
        } else if (!ref) {
            f->cls[cls] = false;
        } else {
            filter_remove_ref(f, ref);
        }
    }
}

static bool
filter_match(const struct ev_filter *f, int cls, const char *ref)
{
    const struct ev_filter_ref *fr;

    if (f->all || f->cls[cls]) {
        return true;
    }
    if (!f->refs.n) {
        return false;
    }
    fr = strmap_get(&f->refs, ref);
    return fr && fr->cls == cls;
}

/* Whether valid_ref_counts reports class cls. */
static bool
filter_covers_class(const struct ev_filter *f, int cls)
{
    const char *key;
    void *data;

    if (f->all || f->cls[cls]) {
        return true;
    }
    for (size_t pos = 0; strmap_next(&f->refs, &pos, &key, &data);) {
        if (((const struct ev_filter_ref *) data)->cls == cls) {
            return true;
        }
    }
    return false;
}

/* ---- items and records ---- */

static void
items_add(struct ev_items *it, struct db_row *row, uint64_t id,
          int64_t time_ms, enum ev_op op)
{
    if (it->n == it->cap) {
        it->cap = it->cap ? it->cap * 2 : 8;
        it->v = xrealloc(it->v, it->cap * sizeof *it->v);
    }
    it->v[it->n].row = db_row_ref(row);
    it->v[it->n].id = id;
    it->v[it->n].time_ms = time_ms;
    it->v[it->n].op = op;
    it->n++;
}

static void
items_destroy(struct ev_items *it)
{
    for (size_t i = 0; i < it->n; i++) {
        db_row_unref(it->v[i].row);
    }
    free(it->v);
    it->v = NULL;
    it->n = it->cap = 0;
}

/* The wire form of one event: the fields of the event class. */
static struct value *
event_record(const struct ev_item *item)
{
    const struct db_row *row = item->row;
    int uf = api_classes[row->cls].uuid_field;
    struct value *rec = value_struct_static(7);
    struct value *uuid = uf >= 0 && row->fields[uf]->type == VALUE_STRING
                         ? value_ref(row->fields[uf]) : value_empty_string();

    value_struct_put_static(rec, "id", value_int((int64_t) item->id));
    value_struct_put_static(rec, "timestamp",
                            value_datetime_secs(item->time_ms / 1000));
    value_struct_put_static(rec, "class", value_string(lower_names[row->cls]));
    value_struct_put_static(rec, "operation", value_string(op_names[item->op]));
    value_struct_put_static(rec, "ref", value_string(row->ref));
    value_struct_put_static(rec, "obj_uuid", uuid);
    value_struct_put_static(rec, "snapshot", api_row_record(row));
    return rec;
}

/* What the answers of one dispatcher pass share.  Watchers woken by the
 * same commit mostly receive the same changes: each record is built once
 * and the answers hold references to it (values are immutable once
 * shared), and so is the ref-count map of "*". */
struct ev_share {
    struct strmap recs;                 /* ref -> struct ev_shared_rec */
    struct value *all_counts;           /* valid_ref_counts of "*" */
};

struct ev_shared_rec {
    struct db_row *row;                 /* a reference: it holds the key */
    uint64_t id;
    struct value *rec[3];               /* by operation */
};

static void
share_init(struct ev_share *sh)
{
    strmap_init(&sh->recs);
    sh->all_counts = NULL;
}

static void
share_destroy(struct ev_share *sh)
{
    const char *key;
    void *data;

    for (size_t pos = 0; strmap_next(&sh->recs, &pos, &key, &data);) {
        struct ev_shared_rec *sr = data;
        for (size_t i = 0; i < ARRAY_SIZE(sr->rec); i++) {
            value_unref(sr->rec[i]);
        }
        db_row_unref(sr->row);
        free(sr);
    }
    strmap_destroy(&sh->recs);
    value_unref(sh->all_counts);
}

/* The record of item, from the share when it has it. */
static struct value *
shared_record(struct ev_share *sh, const struct ev_item *item)
{
    struct ev_shared_rec *sr;

    if (!sh) {
        return event_record(item);
    }
    sr = strmap_get(&sh->recs, item->row->ref);
    if (!sr) {
        sr = xcalloc(1, sizeof *sr);
        sr->row = db_row_ref(item->row);
        sr->id = item->id;
        strmap_put(&sh->recs, sr->row->ref, sr);
    } else if (sr->row != item->row || sr->id != item->id) {
        return event_record(item);      /* another version of the object */
    }
    if (!sr->rec[item->op]) {
        sr->rec[item->op] = event_record(item);
    }
    return value_ref(sr->rec[item->op]);
}

static struct value *
event_records(const struct ev_items *items, struct ev_share *sh)
{
    struct value *arr = value_array(items->n);

    for (size_t i = 0; i < items->n; i++) {
        value_array_append(arr, shared_record(sh, &items->v[i]));
    }
    return arr;
}

static void
format_token(uint64_t gen, char *buf, size_t size)
{
    snprintf(buf, size, "%020" PRIu64 ",%s", gen, ev.boot_id);
}

/* valid_ref_counts: the number of rows of each subscribed class. */
static struct value *
ref_counts(const struct ev_filter *f, const size_t *counts)
{
    struct value *vrc = value_struct_static(8);

    for (size_t c = 0; c < api_n_classes && c < CLS__COUNT; c++) {
        if (api_classes[c].in_database && filter_covers_class(f, c)) {
            value_struct_put_static(vrc, lower_names[c],
                                    value_int((int64_t) counts[c]));
        }
    }
    return vrc;
}

/* The event batch of event.from. */
static struct value *
event_batch(const struct ev_items *items, const struct ev_filter *f,
            const size_t *counts, uint64_t token, struct ev_share *sh)
{
    struct value *batch = value_struct_static(3);
    struct value *vrc;
    char buf[64];

    if (sh && f->all) {
        if (!sh->all_counts) {
            sh->all_counts = ref_counts(f, counts);
        }
        vrc = value_ref(sh->all_counts);
    } else {
        vrc = ref_counts(f, counts);
    }
    format_token(token, buf, sizeof buf);
    value_struct_put_static(batch, "events", event_records(items, sh));
    value_struct_put_static(batch, "valid_ref_counts", vrc);
    value_struct_put_static(batch, "token", value_string(buf));
    return batch;
}

static struct value *
make_error(int err, const char *param)
{
    struct value *e = value_array(2);

    value_array_append(e, value_string(api_errors[err].code));
    if (param) {
        value_array_append(e, value_string(param));
    }
    return e;
}

/* The database's generation and table sizes.  The caller holds the read
 * lock: then no commit is half-applied, so the index holds exactly the
 * changes up to that generation (the hook reports rows before db.c
 * publishes their generation).  Collecting under the same lock means an
 * object cannot move past the returned token while it is collected. */
static uint64_t
db_counts(struct db *db, size_t *counts)
{
    for (size_t c = 0; c < api_n_classes && c < CLS__COUNT; c++) {
        counts[c] = api_classes[c].in_database ? db_table_count(db, c) : 0;
    }
    return db_generation(db);
}

/* ---- the index (under ev.mu) ---- */

static void
list_unlink(struct ev_obj *o)
{
    if (o->prev) {
        o->prev->next = o->next;
    } else {
        ev.head = o->next;
    }
    if (o->next) {
        o->next->prev = o->prev;
    } else {
        ev.tail = o->prev;
    }
    o->prev = o->next = NULL;
}

static void
list_append(struct ev_obj *o)
{
    o->prev = ev.tail;
    o->next = NULL;
    if (ev.tail) {
        ev.tail->next = o;
    } else {
        ev.head = o;
    }
    ev.tail = o;
}

static void
tomb_unlink(struct ev_obj *o)
{
    if (o->tprev) {
        o->tprev->tnext = o->tnext;
    } else {
        ev.thead = o->tnext;
    }
    if (o->tnext) {
        o->tnext->tprev = o->tprev;
    } else {
        ev.ttail = o->tprev;
    }
    o->tprev = o->tnext = NULL;
    ev.n_tombstones--;
}

static void
tomb_append(struct ev_obj *o)
{
    o->tprev = ev.ttail;
    o->tnext = NULL;
    if (ev.ttail) {
        ev.ttail->tnext = o;
    } else {
        ev.thead = o;
    }
    ev.ttail = o;
    ev.n_tombstones++;
}

static void
obj_free(struct ev_obj *o)
{
    if (o) {
        db_row_unref(o->row);
        free(o->ref);
        free(o);
    }
}

/* Forgets the oldest deletions beyond the bound; tokens older than the
 * last forgotten one can no longer be answered exactly. */
static void
prune_tombstones(void)
{
    while (ev.n_tombstones > MAX_TOMBSTONES) {
        struct ev_obj *o = ev.thead;
        tomb_unlink(o);
        list_unlink(o);
        strmap_remove(&ev.objs, o->ref);
        ev.horizon = MAX(ev.horizon, o->gen);
        obj_free(o);
    }
}

/* Appends one change to the legacy ring, dropping the oldest. */
static void
ring_append(uint64_t gen, int64_t time_ms, enum ev_op op, struct db_row *row)
{
    struct ev_legacy *e = &ev.ring[ev.ring_head % LEGACY_MAX];

    if (ev.ring_count == LEGACY_MAX) {
        db_row_unref(e->row);
    } else {
        ev.ring_count++;
    }
    e->gen = gen;
    e->time_ms = time_ms;
    e->op = op;
    e->row = db_row_ref(row);
    ev.ring_head++;
}

/* Drops the legacy ring (nobody is registered any more). */
static void
ring_clear(void)
{
    for (uint64_t i = ev.ring_head - ev.ring_count; i < ev.ring_head; i++) {
        db_row_unref(ev.ring[i % LEGACY_MAX].row);
        ev.ring[i % LEGACY_MAX].row = NULL;
    }
    ev.ring_count = 0;
}

/* Collects, in generation order, the objects matching f whose latest
 * change lies in (lo, hi], as seen by a client holding token.  Objects
 * created after the token and deleted since are left out (the client never
 * saw them), as XenAPI does; with full (token "") every live object is an
 * "add" and no deletion is reported. */
static void
collect(const struct ev_filter *f, uint64_t token, bool full, uint64_t lo,
        uint64_t hi, struct ev_items *out)
{
    struct ev_obj *first = NULL;

    if (full && !lo) {
        first = ev.head;    /* rows loaded at start have generation 0 */
    } else {
        for (struct ev_obj *o = ev.tail; o && o->gen > lo; o = o->prev) {
            first = o;
        }
    }
    for (struct ev_obj *o = first; o && o->gen <= hi; o = o->next) {
        enum ev_op op;

        if (!filter_match(f, o->cls, o->ref)) {
            continue;
        }
        if (o->deleted) {
            if (full || o->gen_created > token) {
                continue;
            }
            op = OP_DEL;
        } else {
            op = full || o->gen_created > token ? OP_ADD : OP_MOD;
        }
        items_add(out, o->row, o->gen, o->time_ms, op);
    }
}

/* Collects the legacy events for sub up to generation hi and moves its
 * cursor past them.  Returns -ENOENT if events it had not seen were
 * dropped from the ring (the cursor then moves to the present). */
static int
collect_legacy(struct ev_sub *sub, uint64_t hi, struct ev_items *out)
{
    uint64_t oldest = ev.ring_head - ev.ring_count;
    uint64_t id;

    if (sub->cursor < oldest) {
        sub->cursor = ev.ring_head;
        return -ENOENT;
    }
    for (id = sub->cursor; id < ev.ring_head; id++) {
        const struct ev_legacy *e = &ev.ring[id % LEGACY_MAX];
        if (e->gen > hi) {
            break;
        }
        if (filter_match(&sub->filter, e->row->cls, e->row->ref)) {
            items_add(out, e->row, id, e->time_ms, e->op);
        }
    }
    sub->cursor = id;
    return 0;
}

static bool
session_alive(const char *session)
{
    struct ev_obj *o = strmap_get(&ev.objs, session);

    return o && !o->deleted && o->cls == CLS_session;
}

/* ---- the commit hook (under the database write lock) ---- */

static void
events_commit_hook(void *aux, uint64_t gen, int cls, const char *ref,
                   struct db_row *old_row, struct db_row *new_row)
{
    int64_t now = time_wall_ms();
    struct ev_obj *o;
    enum ev_op op = !old_row ? OP_ADD : !new_row ? OP_DEL : OP_MOD;
    bool wake = false;

    (void) aux;
    hook_gen_tls = gen;
    pthread_mutex_lock(&ev.mu);
    o = strmap_get(&ev.objs, ref);
    if (!o) {
        o = xcalloc(1, sizeof *o);
        o->ref = xstrdup(ref);
        o->gen_created = old_row ? old_row->gen_created : gen;
        strmap_put(&ev.objs, o->ref, o);
    } else {
        list_unlink(o);
        if (o->deleted) {
            tomb_unlink(o);
        }
    }
    o->cls = cls;
    db_row_unref(o->row);
    if (new_row) {
        o->deleted = false;
        o->row = db_row_ref(new_row);
        if (!old_row) {
            o->gen_created = gen;
        }
    } else {
        o->deleted = true;
        o->row = db_row_ref(old_row);
        tomb_append(o);
    }
    o->gen = gen;
    o->time_ms = now;
    list_append(o);
    if (ev.n_subs) {
        ring_append(gen, now, op, new_row ? new_row : old_row);
    }
    if (cls == CLS_session && !new_row && (ev.n_waiters || ev.n_subs)) {
        struct ev_dead *dd = xcalloc(1, sizeof *dd);
        snprintf(dd->session, sizeof dd->session, "%s", ref);
        dd->next = ev.dead;
        ev.dead = dd;
        wake = true;
    }
    if (gen != ev.hook_gen) {
        ev.hook_gen = gen;
        wake |= ev.n_waiters || ev.n_next_waiters;
    }
    if (wake) {
        pthread_cond_signal(&ev.cv);
    }
    prune_tombstones();
    pthread_mutex_unlock(&ev.mu);
}

/* ---- answering ---- */

/* Builds the answer of a delivery (outside ev.mu). */
static void
delivery_build(struct ev_delivery *dl, const size_t *counts,
               struct ev_share *sh)
{
    if (dl->error || dl->result) {
        return;
    }
    if (dl->legacy) {
        dl->result = event_records(&dl->items, sh);
    } else {
        dl->result = event_batch(&dl->items, dl->filter, counts, dl->token,
                                 sh);
    }
}

/* Sends a built answer and frees the delivery.  The encoding happens
 * here, in rpc.c's completion callback: the expensive part. */
static void
delivery_finish(struct ev_delivery *dl)
{
    api_complete(dl->d, dl->error ? NULL : dl->result, dl->error);
    items_destroy(&dl->items);
    filter_destroy(dl->filter);
    free(dl->filter);
    free(dl);
}

static void
delivery_send(struct ev_delivery *dl, const size_t *counts)
{
    delivery_build(dl, counts, NULL);
    delivery_finish(dl);
}

/* Moves a waiter into a delivery (under ev.mu). */
static struct ev_delivery *
waiter_to_delivery(struct ev_waiter *w, struct ev_delivery *next)
{
    struct ev_delivery *dl = xcalloc(1, sizeof *dl);

    if (w->prev) {
        w->prev->next = w->next;
    } else {
        ev.waiters = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    }
    ev.n_waiters--;
    dl->next = next;
    dl->d = w->d;
    dl->token = w->checked;
    dl->filter = xmalloc(sizeof *dl->filter);
    *dl->filter = w->filter;        /* moves the filter's storage */
    free(w);
    return dl;
}

static struct ev_delivery *
next_to_delivery(struct ev_sub *sub, struct ev_delivery *next)
{
    struct ev_delivery *dl = xcalloc(1, sizeof *dl);

    dl->next = next;
    dl->d = sub->next_d;
    dl->legacy = true;
    sub->next_d = NULL;
    ev.n_next_waiters--;
    return dl;
}

static void
sub_free(struct ev_sub *sub)
{
    if (sub) {
        filter_destroy(&sub->filter);
        free(sub);
    }
}

/* Answers the waiters of sessions that ended with SESSION_INVALID and
 * drops their subscriptions (under ev.mu). */
static struct ev_delivery *
release_dead_sessions(struct ev_delivery *out)
{
    while (ev.dead) {
        struct ev_dead *dd = ev.dead;
        struct ev_sub *sub;

        ev.dead = dd->next;
        for (struct ev_waiter *w = ev.waiters, *wn; w; w = wn) {
            wn = w->next;
            if (!strcmp(w->session, dd->session)) {
                out = waiter_to_delivery(w, out);
                out->error = make_error(ERR_SESSION_INVALID, dd->session);
            }
        }
        sub = strmap_remove(&ev.subs, dd->session);
        if (sub) {
            if (sub->next_d) {
                out = next_to_delivery(sub, out);
                out->error = make_error(ERR_SESSION_INVALID, dd->session);
            }
            ev.n_subs--;
            sub_free(sub);
        }
        free(dd);
    }
    if (!ev.n_subs) {
        ring_clear();
    }
    return out;
}

/* One pass of the dispatcher over every waiter (under ev.mu), with gen
 * the latest complete generation. */
static struct ev_delivery *
dispatch_pass(uint64_t gen, int64_t now_ms)
{
    struct ev_delivery *out = release_dead_sessions(NULL);
    int64_t next_deadline = INT64_MAX;

    for (struct ev_waiter *w = ev.waiters, *wn; w; w = wn) {
        struct ev_items items = { NULL, 0, 0 };

        wn = w->next;
        if (w->checked < gen) {
            collect(&w->filter, w->token, w->full, w->checked, gen, &items);
            w->checked = gen;
        }
        if (items.n || w->deadline_ms <= now_ms) {
            out = waiter_to_delivery(w, out);
            out->items = items;
        } else {
            next_deadline = MIN(next_deadline, w->deadline_ms);
        }
    }
    ev.next_deadline_ms = next_deadline;
    if (ev.n_next_waiters) {
        const char *key;
        void *data;
        for (size_t pos = 0; strmap_next(&ev.subs, &pos, &key, &data);) {
            struct ev_sub *sub = data;
            struct ev_items items = { NULL, 0, 0 };
            int rc;
            if (!sub->next_d) {
                continue;
            }
            rc = collect_legacy(sub, gen, &items);
            if (rc || items.n) {
                out = next_to_delivery(sub, out);
                out->items = items;
                if (rc) {
                    out->error = make_error(ERR_EVENTS_LOST, NULL);
                }
            }
        }
    }
    return out;
}

static bool
work_pending(int64_t now_ms)
{
    return ev.dead || ev.rescan
           || ((ev.n_waiters || ev.n_next_waiters) && ev.hook_gen > ev.pass_gen)
           || (ev.n_waiters && now_ms >= ev.next_deadline_ms);
}

static void
wait_for_work(void)
{
    int64_t now = time_mono_ms();

    while (!ev.stopping && !work_pending(now)) {
        if (ev.n_waiters && ev.next_deadline_ms != INT64_MAX) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t wait = ev.next_deadline_ms - now;
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&ev.cv, &ev.mu, &ts);
        } else {
            pthread_cond_wait(&ev.cv, &ev.mu);
        }
        now = time_mono_ms();
    }
}

/* Takes answers off the send queue until it is empty, or, in a sender
 * thread (wait), until the pool stops. */
static void
send_loop(bool wait)
{
    pthread_mutex_lock(&ev.send_mu);
    for (;;) {
        struct ev_delivery *dl = ev.send_q;
        if (!dl) {
            if (!wait || ev.send_stopping) {
                break;
            }
            pthread_cond_wait(&ev.send_cv, &ev.send_mu);
            continue;
        }
        ev.send_q = dl->next;
        pthread_mutex_unlock(&ev.send_mu);
        delivery_finish(dl);
        pthread_mutex_lock(&ev.send_mu);
    }
    pthread_mutex_unlock(&ev.send_mu);
}

static void *
sender_main(void *aux)
{
    (void) aux;
    send_loop(true);
    return NULL;
}

/* Sends built answers: a few directly, many spread over the senders
 * (encoding is the costly part, and a hundred watchers woken by one
 * commit should not wait for each other on one core). */
static void
send_all(struct ev_delivery *out, size_t n)
{
    if (n < PARALLEL_MIN || !ev.n_senders) {
        while (out) {
            struct ev_delivery *next = out->next;
            delivery_finish(out);
            out = next;
        }
        return;
    }
    pthread_mutex_lock(&ev.send_mu);
    if (ev.send_q) {
        struct ev_delivery *last = out;
        while (last->next) {
            last = last->next;
        }
        last->next = ev.send_q;
    }
    ev.send_q = out;
    pthread_cond_broadcast(&ev.send_cv);
    pthread_mutex_unlock(&ev.send_mu);
    send_loop(false);
}

static void *
dispatcher_main(void *aux)
{
    struct db *db = ev.x->db;
    size_t counts[CLS__COUNT];

    (void) aux;
    pthread_mutex_lock(&ev.mu);
    for (;;) {
        struct ev_delivery *out;
        uint64_t gen;

        wait_for_work();
        if (ev.stopping) {
            break;
        }
        ev.rescan = false;
        pthread_mutex_unlock(&ev.mu);
        /* Taking the read lock also waits for the commit whose rows woke
         * us to finish. */
        db_read_lock(db);
        gen = db_counts(db, counts);
        pthread_mutex_lock(&ev.mu);
        ev.pass_gen = MAX(ev.pass_gen, gen);
        out = dispatch_pass(gen, time_mono_ms());
        pthread_mutex_unlock(&ev.mu);
        db_read_unlock(db);
        if (out) {
            struct ev_share sh;
            size_t n = 0;
            share_init(&sh);
            for (struct ev_delivery *dl = out; dl; dl = dl->next) {
                delivery_build(dl, counts, &sh);
                n++;
            }
            share_destroy(&sh);
            send_all(out, n);
        }
        pthread_mutex_lock(&ev.mu);
    }
    pthread_mutex_unlock(&ev.mu);
    return NULL;
}

/* ---- tokens ---- */

/* Parses a token: "" (from the start), or a generation in decimal,
 * optionally followed by "," and the boot id of the daemon that made it.
 * Returns 0, -EINVAL if malformed, -ESTALE if made by another daemon. */
static int
parse_token(const char *s, uint64_t *ret_gen, bool *ret_full)
{
    uint64_t gen = 0;
    size_t i;

    if (!*s) {
        *ret_gen = 0;
        *ret_full = true;
        return 0;
    }
    for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = s[i] - '0';
        if (i >= 20 || gen > (UINT64_MAX - d) / 10) {
            return -EINVAL;
        }
        gen = gen * 10 + d;
    }
    if (!i) {
        return -EINVAL;
    }
    if (s[i] == ',') {
        const char *suffix = s + i + 1;
        size_t n = strlen(suffix);
        if (!n || n > 32) {
            return -EINVAL;
        }
        for (size_t j = 0; j < n; j++) {
            char c = suffix[j];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
                  || (c >= 'A' && c <= 'Z'))) {
                return -EINVAL;
            }
        }
        if (strcmp(suffix, ev.boot_id)) {
            return -ESTALE;
        }
    } else if (s[i]) {
        return -EINVAL;
    }
    *ret_gen = gen;
    *ret_full = false;
    return 0;
}

/* ---- messages ---- */

static int
not_running(struct api_ctx *ctx)
{
    return api_fail_internal(ctx, "the event subsystem is not running");
}

/* event.from(session, classes, token, timeout) */
static int
api_event_from(struct api_ctx *ctx, struct value **args,
               struct value **ret_result)
{
    const char *token_s = args[2]->u.str.s;
    double timeout = args[3]->u.d;
    struct ev_items items = { NULL, 0, 0 };
    struct ev_waiter *w = NULL;
    struct ev_filter filter;
    size_t counts[CLS__COUNT];
    const char *bad = NULL;
    uint64_t token, gen;
    bool full;
    int rc;

    if (!ev.initialized) {
        return not_running(ctx);
    }
    filter_init(&filter);
    if (filter_add(&filter, args[1], &bad)) {
        rc = api_fail(ctx, ERR_EVENT_SUBSCRIPTION_PARSE_FAILURE, bad);
        goto out;
    }
    rc = parse_token(token_s, &token, &full);
    if (rc == -EINVAL) {
        rc = api_fail(ctx, ERR_EVENT_FROM_TOKEN_PARSE_FAILURE, token_s);
        goto out;
    } else if (rc) {
        rc = api_fail(ctx, ERR_EVENTS_LOST);
        goto out;
    }
    if (!(timeout > 0)) {           /* also NaN */
        timeout = 0;
    } else if (timeout > MAX_TIMEOUT_S) {
        timeout = MAX_TIMEOUT_S;
    }

    db_read_lock(ctx->x->db);
    gen = db_counts(ctx->x->db, counts);
    pthread_mutex_lock(&ev.mu);
    if (!full && (token < ev.horizon || token > gen)) {
        pthread_mutex_unlock(&ev.mu);
        db_read_unlock(ctx->x->db);
        rc = api_fail(ctx, ERR_EVENTS_LOST);
        goto out;
    }
    collect(&filter, token, full, full ? 0 : token, gen, &items);
    if (items.n || timeout == 0) {
        pthread_mutex_unlock(&ev.mu);
        db_read_unlock(ctx->x->db);
        *ret_result = event_batch(&items, &filter, counts, gen, NULL);
        rc = 0;
        goto out;
    }
    if (!session_alive(session_ref(ctx->session))) {
        pthread_mutex_unlock(&ev.mu);
        db_read_unlock(ctx->x->db);
        rc = api_fail(ctx, ERR_SESSION_INVALID, session_ref(ctx->session));
        goto out;
    }
    /* Nothing yet: wait on the list, holding no thread. */
    w = xcalloc(1, sizeof *w);
    w->d = api_defer(ctx);
    snprintf(w->session, sizeof w->session, "%s", session_ref(ctx->session));
    w->filter = filter;
    filter_init(&filter);
    w->token = token;
    w->full = full;
    w->checked = gen;
    w->deadline_ms = time_mono_ms() + (int64_t) (timeout * 1000 + 0.5);
    w->next = ev.waiters;
    if (ev.waiters) {
        ev.waiters->prev = w;
    }
    ev.waiters = w;
    ev.n_waiters++;
    /* Listed under the read lock, it sees every commit after gen; the
     * signal tells the dispatcher about the new deadline. */
    ev.next_deadline_ms = ev.n_waiters == 1
                          ? w->deadline_ms
                          : MIN(ev.next_deadline_ms, w->deadline_ms);
    pthread_cond_signal(&ev.cv);
    pthread_mutex_unlock(&ev.mu);
    db_read_unlock(ctx->x->db);
    rc = API_DEFERRED;
out:
    items_destroy(&items);
    filter_destroy(&filter);
    return rc;
}

/* Whether touch_row may use field f of class c: no relation to mirror
 * and no index to update. */
static bool
touchable(const struct api_class *c, size_t f)
{
    return c->fields[f].inverse_cls < 0 && !c->fields[f].relation_set
           && (int) f != c->uuid_field && (int) f != c->name_label_field;
}

/* Makes one row change without changing its content, so that the commit
 * reports it as modified: a field without relations or indices is set to
 * a placeholder and back within the transaction.  A runtime field is
 * preferred: the commit then writes nothing to disk. */
static int
touch_row(struct db_txn *txn, int cls, const struct db_row *row)
{
    const struct api_class *c = &api_classes[cls];
    struct value *cur, *other;
    size_t f;
    int rc;

    for (f = 0; f < c->n_fields; f++) {
        if (touchable(c, f) && !c->fields[f].persist) {
            break;
        }
    }
    if (f == c->n_fields) {
        for (f = 0; f < c->n_fields && !touchable(c, f); f++) {
            continue;
        }
    }
    if (f == c->n_fields) {
        return -ENOTSUP;
    }
    cur = value_ref(row->fields[f]);
    other = cur->type == VALUE_NIL ? value_false() : value_nil();
    rc = db_update(txn, cls, row->ref, f, other);
    if (rc) {
        value_unref(cur);
        return rc;
    }
    return db_update(txn, cls, row->ref, f, cur);
}

/* event.inject(session, class, ref) */
static int
api_event_inject(struct api_ctx *ctx, struct value **args,
                 struct value **ret_result)
{
    const char *cls_s = args[1]->u.str.s, *ref = args[2]->u.str.s;
    int cls = api_class_find_nocase(cls_s);
    struct db_txn *txn;
    struct db_row *row;
    char buf[64];
    int rc;

    if (!ev.initialized) {
        return not_running(ctx);
    }
    if (cls < 0 || cls >= CLS__COUNT || !api_classes[cls].in_database) {
        return api_fail(ctx, ERR_HANDLE_INVALID, cls_s, ref);
    }
    txn = db_begin(ctx->x->db);
    row = db_lookup(ctx->x->db, cls, ref);
    if (!row) {
        db_abort(txn);
        return api_fail(ctx, ERR_HANDLE_INVALID, api_classes[cls].name, ref);
    }
    rc = touch_row(txn, cls, row);
    if (rc) {
        db_abort(txn);
        return api_fail_internal(ctx, "cannot touch %s %s: %s",
                                 api_classes[cls].name, ref, strerror(-rc));
    }
    hook_gen_tls = 0;
    if (api_commit(ctx, txn)) {
        return -1;
    }
    /* The token just before the injected change: event.from returns a
     * token past it exactly when it has returned that change. */
    format_token(hook_gen_tls ? hook_gen_tls - 1 : db_generation(ctx->x->db),
                 buf, sizeof buf);
    *ret_result = value_string(buf);
    return 0;
}

/* event.get_current_id(session) */
static int
api_event_get_current_id(struct api_ctx *ctx, struct value **args,
                         struct value **ret_result)
{
    (void) args;
    *ret_result = value_int((int64_t) db_generation(ctx->x->db));
    return 0;
}

/* event.register(session, classes) */
static int
api_event_register(struct api_ctx *ctx, struct value **args,
                   struct value **ret_result)
{
    const char *session = session_ref(ctx->session);
    struct ev_filter add;
    struct ev_sub *sub;
    const char *bad = NULL;
    int rc;

    (void) ret_result;
    if (!ev.initialized) {
        return not_running(ctx);
    }
    /* Parse first, so that a bad subscription changes nothing. */
    filter_init(&add);
    if (filter_add(&add, args[1], &bad)) {
        rc = api_fail(ctx, ERR_EVENT_SUBSCRIPTION_PARSE_FAILURE, bad);
        goto out;
    }
    pthread_mutex_lock(&ev.mu);
    if (!session_alive(session)) {
        pthread_mutex_unlock(&ev.mu);
        rc = api_fail(ctx, ERR_SESSION_INVALID, session);
        goto out;
    }
    sub = strmap_get(&ev.subs, session);
    if (!sub) {
        sub = xcalloc(1, sizeof *sub);
        snprintf(sub->session, sizeof sub->session, "%s", session);
        filter_init(&sub->filter);
        sub->cursor = ev.ring_head;
        strmap_put(&ev.subs, sub->session, sub);
        ev.n_subs++;
    }
    filter_add(&sub->filter, args[1], &bad);
    pthread_mutex_unlock(&ev.mu);
    rc = 0;
out:
    filter_destroy(&add);
    return rc;
}

/* event.unregister(session, classes) */
static int
api_event_unregister(struct api_ctx *ctx, struct value **args,
                     struct value **ret_result)
{
    struct ev_sub *sub;

    (void) ret_result;
    if (!ev.initialized) {
        return not_running(ctx);
    }
    pthread_mutex_lock(&ev.mu);
    sub = strmap_get(&ev.subs, session_ref(ctx->session));
    if (sub) {
        filter_remove(&sub->filter, args[1]);
    }
    pthread_mutex_unlock(&ev.mu);
    return 0;
}

/* event.next(session) */
static int
api_event_next(struct api_ctx *ctx, struct value **args,
               struct value **ret_result)
{
    const char *session = session_ref(ctx->session);
    struct ev_items items = { NULL, 0, 0 };
    struct ev_delivery *older = NULL;
    struct ev_sub *sub;
    uint64_t gen;
    int rc;

    (void) args;
    if (!ev.initialized) {
        return not_running(ctx);
    }
    /* Hooks for every generation up to the published one have run. */
    gen = db_generation(ctx->x->db);
    pthread_mutex_lock(&ev.mu);
    sub = strmap_get(&ev.subs, session);
    if (!sub) {
        pthread_mutex_unlock(&ev.mu);
        return api_fail(ctx, ERR_SESSION_NOT_REGISTERED, session);
    }
    if (collect_legacy(sub, gen, &items)) {
        pthread_mutex_unlock(&ev.mu);
        rc = api_fail(ctx, ERR_EVENTS_LOST);
        goto out;
    }
    if (items.n) {
        pthread_mutex_unlock(&ev.mu);
        *ret_result = event_records(&items, NULL);
        rc = 0;
        goto out;
    }
    /* One event.next waits per session: an earlier one still waiting is
     * answered with an empty batch (the client has moved on). */
    if (sub->next_d) {
        older = next_to_delivery(sub, NULL);
    }
    sub->next_d = api_defer(ctx);
    ev.n_next_waiters++;
    if (ev.hook_gen > gen) {
        ev.rescan = true;
        pthread_cond_signal(&ev.cv);
    }
    pthread_mutex_unlock(&ev.mu);
    if (older) {
        delivery_send(older, NULL);
    }
    rc = API_DEFERRED;
out:
    items_destroy(&items);
    return rc;
}

/* ---- start and stop ---- */

static int
compare_by_gen(const void *a, const void *b)
{
    const struct ev_obj *x = *(struct ev_obj *const *) a;
    const struct ev_obj *y = *(struct ev_obj *const *) b;

    return x->gen < y->gen ? -1 : x->gen > y->gen;
}

/* Fills the index with the rows that exist at start.  The hook is already
 * installed, so rows it reported meanwhile are newer and kept; the rows
 * found here are older than all of them and go to the head. */
static void
load_index(struct db *db)
{
    struct ev_obj **found = NULL;
    size_t n = 0, cap = 0;
    uint64_t gen;

    db_read_lock(db);
    pthread_mutex_lock(&ev.mu);
    gen = db_generation(db);
    for (size_t c = 0; c < api_n_classes && c < CLS__COUNT; c++) {
        if (!api_classes[c].in_database) {
            continue;
        }
        for (size_t i = 0; i < db_table_count(db, c); i++) {
            struct db_row *row = db_table_row(db, c, i);
            struct ev_obj *o;
            if (strmap_get(&ev.objs, row->ref)) {
                continue;
            }
            o = xcalloc(1, sizeof *o);
            o->ref = xstrdup(row->ref);
            o->cls = c;
            o->gen = row->gen_modified;
            o->gen_created = row->gen_created;
            o->time_ms = time_wall_ms();
            o->row = db_row_ref(row);
            strmap_put(&ev.objs, o->ref, o);
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                found = xrealloc(found, cap * sizeof *found);
            }
            found[n++] = o;
        }
    }
    if (n) {
        qsort(found, n, sizeof *found, compare_by_gen);
    }
    for (size_t i = n; i-- > 0;) {
        found[i]->next = ev.head;
        if (ev.head) {
            ev.head->prev = found[i];
        } else {
            ev.tail = found[i];
        }
        ev.head = found[i];
    }
    /* Deletions before now are unknown: older tokens are not exact. */
    ev.horizon = gen;
    ev.hook_gen = ev.pass_gen = MAX(ev.hook_gen, gen);
    pthread_mutex_unlock(&ev.mu);
    db_read_unlock(db);
    free(found);
    LOG_INFO("events: indexed %zu objects at generation %" PRIu64, n, gen);
}

/* Stops the sender threads once the queue is empty. */
static void
stop_senders(void)
{
    pthread_mutex_lock(&ev.send_mu);
    ev.send_stopping = true;
    pthread_cond_broadcast(&ev.send_cv);
    pthread_mutex_unlock(&ev.send_mu);
    for (size_t i = 0; i < ev.n_senders; i++) {
        pthread_join(ev.senders[i], NULL);
    }
    ev.n_senders = 0;
    send_loop(false);
}

int
events_init(struct xapi *x)
{
    static pthread_once_t names_once = PTHREAD_ONCE_INIT;
    pthread_condattr_t attr;
    unsigned char id[8];
    int r;

    pthread_once(&names_once, init_lower_names);
    random_bytes(id, sizeof id);
    for (size_t i = 0; i < sizeof id; i++) {
        snprintf(ev.boot_id + 2 * i, 3, "%02x", id[i]);
    }
    ev.x = x;
    ev.stopping = false;
    ev.next_deadline_ms = INT64_MAX;
    strmap_init(&ev.objs);
    strmap_init(&ev.subs);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ev.cv, &attr);
    pthread_condattr_destroy(&attr);

    ev.send_stopping = false;
    for (size_t i = 0; i < N_SENDERS; i++) {
        r = pthread_create(&ev.senders[i], NULL, sender_main, NULL);
        if (r) {
            LOG_WARN("events: cannot start a sender thread: %s", strerror(r));
            break;
        }
        ev.n_senders++;
    }
    db_set_commit_hook(x->db, events_commit_hook, NULL);
    load_index(x->db);
    r = pthread_create(&ev.thread, NULL, dispatcher_main, NULL);
    if (r) {
        LOG_ERR("events: cannot start the dispatcher: %s", strerror(r));
        db_set_commit_hook(x->db, NULL, NULL);
        stop_senders();
        return -r;
    }
    ev.initialized = true;
    return 0;
}

void
events_shutdown(struct xapi *x)
{
    struct ev_delivery *out = NULL;
    const char *key;
    void *data;

    if (!ev.initialized) {
        return;
    }
    db_set_commit_hook(x->db, NULL, NULL);
    pthread_mutex_lock(&ev.mu);
    ev.stopping = true;
    pthread_cond_signal(&ev.cv);
    pthread_mutex_unlock(&ev.mu);
    pthread_join(ev.thread, NULL);
    stop_senders();

    /* Nobody else runs now: answer every waiter (the HTTP server is gone,
     * so the answers are dropped, but their memory is released). */
    pthread_mutex_lock(&ev.mu);
    while (ev.waiters) {
        out = waiter_to_delivery(ev.waiters, out);
        out->token = ev.pass_gen;
    }
    for (size_t pos = 0; strmap_next(&ev.subs, &pos, &key, &data);) {
        struct ev_sub *sub = data;
        if (sub->next_d) {
            out = next_to_delivery(sub, out);
        }
        sub_free(sub);
    }
    strmap_destroy(&ev.subs);
    ev.n_subs = 0;
    while (ev.dead) {
        struct ev_dead *dd = ev.dead;
        ev.dead = dd->next;
        free(dd);
    }
    for (struct ev_obj *o = ev.head, *next; o; o = next) {
        next = o->next;
        obj_free(o);
    }
    ev.head = ev.tail = ev.thead = ev.ttail = NULL;
    ev.n_tombstones = 0;
    strmap_destroy(&ev.objs);
    ring_clear();
    ev.initialized = false;
    pthread_mutex_unlock(&ev.mu);
    {
        size_t counts[CLS__COUNT] = { 0 };
        while (out) {
            struct ev_delivery *next = out->next;
            delivery_send(out, counts);
            out = next;
        }
    }
    pthread_cond_destroy(&ev.cv);
}

const struct api_handler_entry events_handlers[] = {
    { "event.from", api_event_from },
    { "event.get_current_id", api_event_get_current_id },
    { "event.inject", api_event_inject },
    { "event.next", api_event_next },
    { "event.register", api_event_register },
    { "event.unregister", api_event_unregister },
    { NULL, NULL },
};
