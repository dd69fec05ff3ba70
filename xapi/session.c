/* session.c — login, logout and the table of live sessions.
 *
 * A session is a row of the `session` class (not persisted: a restart
 * logs everybody out, as XenAPI does) plus an entry in the in-memory
 * session table, which every call consults to validate its session
 * reference.  The table is read-mostly (a read-write lock); the time of
 * last activity is an atomic store, copied into the database row by the
 * periodic expiry sweep rather than on every call.
 *
 * The local root account's password is kept as a salted yescrypt hash
 * (libcrypt) in STATE_DIR/root.passwd, set on first start from the
 * --root-password-file.  Other users log in through external
 * authentication (rbac_login in rbac.c: PAM, subjects and their roles);
 * their sessions carry the roles and permissions they had at login, and
 * end when the subjects granting them are destroyed or external
 * authentication is disabled (session_revalidate_external). */
#include <config.h>
#include "api.h"

#include <crypt.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "strmap.h"

#define SESSIONS_PER_USER 500

struct session {
    int refcnt;                 /* atomic */
    char ref[48];
    char *user;
    char *originator;
    unsigned roles;
    bool superuser;             /* the local root account */
    char **subjects;            /* external users: the subjects granting */
    size_t n_subjects;          /* access (refs) */
    int64_t last_active_ms;     /* atomic */
    int64_t synced_active_ms;   /* last value written to the row */
    bool dead;
};

struct session_table {
    pthread_rwlock_t lock;
    struct strmap by_ref;
    int64_t idle_timeout_ms;
};

/* Set by main from --session-idle-timeout; 24 hours by default. */
int64_t session_idle_timeout_s = 24 * 3600;

struct session_table *
session_table_create(void)
{
    struct session_table *t = xcalloc(1, sizeof *t);

    pthread_rwlock_init(&t->lock, NULL);
    strmap_init(&t->by_ref);
    t->idle_timeout_ms = session_idle_timeout_s * 1000;
    return t;
}

static void
session_free(struct session *s)
{
    free(s->user);
    free(s->originator);
    for (size_t i = 0; i < s->n_subjects; i++) {
        free(s->subjects[i]);
    }
    free(s->subjects);
    free(s);
}

struct session *
session_dup(struct session *s)
{
    if (s) {
        __atomic_add_fetch(&s->refcnt, 1, __ATOMIC_RELAXED);
    }
    return s;
}

void
session_unref(struct session *s)
{
    if (s && !__atomic_sub_fetch(&s->refcnt, 1, __ATOMIC_ACQ_REL)) {
        session_free(s);
    }
}

void
session_table_destroy(struct session_table *t)
{
    const char *key;
    void *data;

    if (!t) {
        return;
    }
    for (size_t pos = 0; strmap_next(&t->by_ref, &pos, &key, &data);) {
        session_unref(data);
    }
    strmap_destroy(&t->by_ref);
    pthread_rwlock_destroy(&t->lock);
    free(t);
}

struct session *
session_lookup(struct xapi *x, const char *ref)
{
    struct session_table *t = x->sessions;
    struct session *s;

    pthread_rwlock_rdlock(&t->lock);
    s = strmap_get(&t->by_ref, ref);
    if (s) {
        __atomic_add_fetch(&s->refcnt, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&s->last_active_ms, time_wall_ms(), __ATOMIC_RELAXED);
    }
    pthread_rwlock_unlock(&t->lock);
    return s;
}

const char *
session_ref(const struct session *s)
{
    return s->ref;
}

unsigned
session_roles(const struct session *s)
{
    return s->roles;
}

bool
session_is_superuser(const struct session *s)
{
    return s->superuser;
}

const char *
session_user(const struct session *s)
{
    return s->user;
}

/* ---- passwords ---- */

static char *
hash_password(const char *password)
{
    struct crypt_data *cd = xcalloc(1, sizeof *cd);
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    char *out = NULL;

    if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof salt)) {
        const char *h = crypt_r(password, salt, cd);
        if (h && h[0] == '$') {
            out = xstrdup(h);
        }
    }
    free(cd);
    return out;
}

static bool
check_password(const char *hash, const char *password)
{
    struct crypt_data *cd = xcalloc(1, sizeof *cd);
    const char *h = crypt_r(password, hash, cd);
    bool ok = false;

    if (h && h[0] == '$' && strlen(h) == strlen(hash)) {
        /* Constant-time comparison of the two hashes. */
        unsigned char diff = 0;
        for (size_t i = 0; hash[i]; i++) {
            diff |= (unsigned char) (h[i] ^ hash[i]);
        }
        ok = diff == 0;
    }
    free(cd);
    return ok;
}

int
session_set_root_password(struct xapi *x, const char *password,
                          char **ret_err)
{
    char *hash = hash_password(password);
    char *text;
    int rc;

    if (!hash) {
        *ret_err = xstrdup("cannot hash the password (libcrypt)");
        return -EINVAL;
    }
    text = xasprintf("root:%s\n", hash);
    rc = write_file_atomic(x->root_hash_file, text, strlen(text), 0600);
    if (rc) {
        *ret_err = xasprintf("cannot write %s: %s", x->root_hash_file,
                             strerror(-rc));
    }
    free(text);
    free(hash);
    return rc;
}

static char *
read_root_hash(struct xapi *x)
{
    char *data = NULL, *nl;
    size_t len;

    if (read_file(x->root_hash_file, 4096, &data, &len)) {
        return NULL;
    }
    if (!str_starts_with(data, "root:")) {
        free(data);
        return NULL;
    }
    memmove(data, data + 5, len - 4);
    nl = strchr(data, '\n');
    if (nl) {
        *nl = '\0';
    }
    return data;
}

/* ---- session rows ---- */

/* The row of a new session; id is NULL for the local superuser (whose
 * rbac_permissions are empty, as in XenAPI: it passes every check). */
static struct value **
session_fields(struct xapi *x, const struct session *s, const char *uuid,
               const struct rbac_identity *id)
{
    struct value **f = xcalloc(api_classes[CLS_session].n_fields,
                               sizeof *f);
    int64_t now = time_wall_ms() / 1000;

    f[F_session_uuid] = value_string(uuid);
    f[F_session_this_host] = value_string(x->host_ref);
    f[F_session_this_user] = value_null_ref();
    f[F_session_last_active] = value_datetime_secs(now);
    f[F_session_pool] = value_false();
    f[F_session_is_local_superuser] = id ? value_false() : value_true();
    f[F_session_subject] = id ? value_string(id->subjects[0])
                              : value_null_ref();
    f[F_session_validation_time] = value_datetime_secs(now);
    f[F_session_auth_user_sid] = id ? value_string(id->sid)
                                    : value_empty_string();
    f[F_session_auth_user_name] = value_string(s->user);
    f[F_session_rbac_permissions] = id ? value_ref(id->permissions)
                                       : value_empty_array();
    f[F_session_parent] = value_null_ref();
    f[F_session_originator] = value_string(s->originator);
    return f;
}

/* Removes sessions from the table and the database. */
static void
destroy_sessions(struct xapi *x, struct session **victims, size_t n)
{
    struct db_txn *txn;

    if (!n) {
        return;
    }
    pthread_rwlock_wrlock(&x->sessions->lock);
    for (size_t i = 0; i < n; i++) {
        if (strmap_get(&x->sessions->by_ref, victims[i]->ref) == victims[i]) {
            strmap_remove(&x->sessions->by_ref, victims[i]->ref);
            victims[i]->dead = true;
            session_unref(victims[i]);     /* the table's reference */
        }
    }
    pthread_rwlock_unlock(&x->sessions->lock);
    txn = db_begin(x->db);
    for (size_t i = 0; i < n; i++) {
        db_delete(txn, CLS_session, victims[i]->ref);
    }
    db_commit(txn);
    for (size_t i = 0; i < n; i++) {
        task_session_ended(x, victims[i]->ref);
    }
}

int
api_session_login_with_password(struct api_ctx *ctx, struct value **args,
                                struct value **ret)
{
    struct xapi *x = ctx->x;
    const char *user = args[0]->u.str.s;
    const char *pwd = args[1]->u.str.s;
    const char *originator = args[3]->u.str.s;
    struct session *s, *oldest = NULL;
    struct rbac_identity id = { 0 };
    struct value **fields;
    struct db_txn *txn;
    bool root = !strcmp(user, "root");
    char uuid[40];
    size_t count = 0;
    int rc;

    if (root) {
        /* The local superuser is always checked locally, never by the
         * external service, as in XenAPI.  Over the Unix socket no
         * password is asked: only root can connect to it (the socket is
         * not writable by others), and Dom0 tools such as xe and
         * XenAPI.xapi_local() log in that way, as on XenServer. */
        bool local = ctx->peer && !strcmp(ctx->peer, "unix");
        char *hash = local ? NULL : read_root_hash(x);
        bool ok = local || (hash && check_password(hash, pwd));
        free(hash);
        audit_login(x, user, originator, ctx->peer, ok);
        if (!ok) {
            LOG_INFO("login failed for user '%s' from %s", user, ctx->peer);
            return api_fail(ctx, ERR_SESSION_AUTHENTICATION_FAILED);
        }
    } else {
        rc = rbac_login(ctx, user, pwd, &id);
        audit_login(x, user, originator, ctx->peer, rc == 0);
        if (rc) {
            return -1;
        }
    }
    s = xcalloc(1, sizeof *s);
    s->refcnt = 1;
    db_new_ref(s->ref);
    s->user = xstrdup(user);
    s->originator = xstrdup(originator);
    s->superuser = root;
    s->roles = root ? 0x7f : id.roles;  /* root holds every role */
    s->last_active_ms = s->synced_active_ms = time_wall_ms();
    uuid_generate(uuid);
    fields = session_fields(x, s, uuid, root ? NULL : &id);
    s->subjects = id.subjects;
    s->n_subjects = id.n_subjects;
    id.subjects = NULL;
    id.n_subjects = 0;
    rbac_identity_clear(&id);
    txn = db_begin(x->db);
    rc = db_insert(txn, CLS_session, s->ref, fields, NULL);
    free(fields);
    if (rc) {
        db_abort(txn);
        session_free(s);
        return api_fail_internal(ctx, "cannot record the session");
    }
    db_commit(txn);

    /* Bound the sessions of one user: a client that logs in on every
     * request and never logs out must not exhaust memory.  The least
     * recently used session goes, as in XenAPI. */
    pthread_rwlock_wrlock(&x->sessions->lock);
    {
        const char *key;
        void *data;
        for (size_t pos = 0; strmap_next(&x->sessions->by_ref, &pos, &key, &data);) {
            struct session *o = data;
            if (!strcmp(o->user, user)) {
                count++;
                if (!oldest || o->last_active_ms < oldest->last_active_ms) {
                    oldest = o;
                }
            }
        }
    }
    if (count < SESSIONS_PER_USER) {
        oldest = NULL;
    } else {
        __atomic_add_fetch(&oldest->refcnt, 1, __ATOMIC_RELAXED);
    }
    strmap_put(&x->sessions->by_ref, s->ref, s);
    pthread_rwlock_unlock(&x->sessions->lock);
    if (oldest) {
        LOG_INFO("user %s has %d sessions: logging out the oldest",
                 user, SESSIONS_PER_USER);
        destroy_sessions(x, &oldest, 1);
        session_unref(oldest);
    }
    LOG_DBG("login: %s from %s (%s)", user, ctx->peer, originator);
    *ret = value_string(s->ref);
    return 0;
}

int
api_session_logout(struct api_ctx *ctx, struct value **args,
                   struct value **ret)
{
    struct session *s = ctx->session;

    destroy_sessions(ctx->x, &s, 1);
    return 0;
}

int
api_session_local_logout(struct api_ctx *ctx, struct value **args,
                         struct value **ret)
{
    return api_session_logout(ctx, args, ret);
}

int
api_session_change_password(struct api_ctx *ctx, struct value **args,
                            struct value **ret)
{
    const char *old_pwd = args[1]->u.str.s, *new_pwd = args[2]->u.str.s;
    char *hash, *err = NULL;
    bool ok;

    /* The datamodel grants this message to no role, so only the local
     * superuser gets here through the dispatcher; the check stays for
     * callers that bypass it. */
    if (!session_is_superuser(ctx->session)) {
        char *msg = xasprintf("Failed to change password for user %s: not "
                              "the local superuser",
                              session_user(ctx->session));
        api_fail(ctx, ERR_USER_IS_NOT_LOCAL_SUPERUSER, msg);
        free(msg);
        return -1;
    }
    hash = read_root_hash(ctx->x);
    ok = hash && check_password(hash, old_pwd);
    free(hash);
    if (!ok) {
        return api_fail(ctx, ERR_SESSION_AUTHENTICATION_FAILED);
    }
    if (!*new_pwd) {
        return api_fail(ctx, ERR_INVALID_VALUE, "new_pwd", "");
    }
    if (session_set_root_password(ctx->x, new_pwd, &err)) {
        api_fail_internal(ctx, "%s", err);
        free(err);
        return -1;
    }
    return 0;
}

int
api_session_get_all_subject_identifiers(struct api_ctx *ctx,
                                        struct value **args,
                                        struct value **ret)
{
    struct db *db = ctx->x->db;
    struct value *arr = value_array(4);

    /* Only externally authenticated sessions have a subject identifier. */
    db_read_lock(db);
    for (size_t i = 0; i < db_table_count(db, CLS_session); i++) {
        struct db_row *row = db_table_row(db, CLS_session, i);
        struct value *sid = row->fields[F_session_auth_user_sid];
        bool seen = false;
        if (!sid->u.str.len) {
            continue;
        }
        for (size_t j = 0; j < arr->u.arr.n; j++) {
            seen |= value_equal(arr->u.arr.items[j], sid);
        }
        if (!seen) {
            value_array_append(arr, value_ref(sid));
        }
    }
    db_read_unlock(db);
    *ret = arr;
    return 0;
}

int
api_session_logout_subject_identifier(struct api_ctx *ctx,
                                      struct value **args,
                                      struct value **ret)
{
    struct xapi *x = ctx->x;
    const char *sid = args[1]->u.str.s;
    struct session **victims = NULL;
    size_t n = 0;

    db_read_lock(x->db);
    for (size_t i = 0; i < db_table_count(x->db, CLS_session); i++) {
        struct db_row *row = db_table_row(x->db, CLS_session, i);
        struct session *s;
        if (strcmp(row->fields[F_session_auth_user_sid]->u.str.s, sid)
            || !strcmp(row->ref, session_ref(ctx->session))) {
            continue;
        }
        s = session_lookup(x, row->ref);
        if (s) {
            victims = xrealloc(victims, (n + 1) * sizeof *victims);
            victims[n++] = s;
        }
    }
    db_read_unlock(x->db);
    destroy_sessions(x, victims, n);
    for (size_t i = 0; i < n; i++) {
        session_unref(victims[i]);
    }
    free(victims);
    return 0;
}

void
session_expire(struct xapi *x)
{
    struct session_table *t = x->sessions;
    struct session **victims = NULL, **stale = NULL;
    size_t n = 0, n_stale = 0;
    int64_t now = time_wall_ms();
    const char *key;
    void *data;

    pthread_rwlock_rdlock(&t->lock);
    for (size_t pos = 0; strmap_next(&t->by_ref, &pos, &key, &data);) {
        struct session *s = data;
        int64_t last = __atomic_load_n(&s->last_active_ms, __ATOMIC_RELAXED);
        if (now - last > session_idle_timeout_s * 1000) {
            victims = xrealloc(victims, (n + 1) * sizeof *victims);
            victims[n++] = s;
            __atomic_add_fetch(&s->refcnt, 1, __ATOMIC_RELAXED);
        } else if (last - s->synced_active_ms >= 1000) {
            stale = xrealloc(stale, (n_stale + 1) * sizeof *stale);
            stale[n_stale++] = s;
            __atomic_add_fetch(&s->refcnt, 1, __ATOMIC_RELAXED);
        }
    }
    pthread_rwlock_unlock(&t->lock);
    if (n) {
        LOG_INFO("expiring %zu idle sessions", n);
    }
    destroy_sessions(x, victims, n);
    /* Copy recent activity into the rows, in one transaction. */
    if (n_stale) {
        struct db_txn *txn = db_begin(x->db);
        for (size_t i = 0; i < n_stale; i++) {
            int64_t last = __atomic_load_n(&stale[i]->last_active_ms,
                                           __ATOMIC_RELAXED);
            stale[i]->synced_active_ms = last;
            db_update(txn, CLS_session, stale[i]->ref, F_session_last_active,
                      value_datetime_secs(last / 1000));
        }
        db_commit(txn);
    }
    for (size_t i = 0; i < n; i++) {
        session_unref(victims[i]);
    }
    for (size_t i = 0; i < n_stale; i++) {
        session_unref(stale[i]);
    }
    free(victims);
    free(stale);
}

void
session_revalidate_external(struct xapi *x)
{
    struct session_table *t = x->sessions;
    struct session **ext = NULL, **victims = NULL;
    size_t n_ext = 0, n = 0;
    struct db_row *host;
    bool enabled;
    const char *key;
    void *data;

    pthread_rwlock_rdlock(&t->lock);
    for (size_t pos = 0; strmap_next(&t->by_ref, &pos, &key, &data);) {
        struct session *s = data;
        if (!s->superuser) {
            ext = xrealloc(ext, (n_ext + 1) * sizeof *ext);
            ext[n_ext++] = s;
            __atomic_add_fetch(&s->refcnt, 1, __ATOMIC_RELAXED);
        }
    }
    pthread_rwlock_unlock(&t->lock);

    db_read_lock(x->db);
    host = db_lookup(x->db, CLS_host, x->host_ref);
    enabled = host && *host->fields[F_host_external_auth_type]->u.str.s;
    for (size_t i = 0; i < n_ext; i++) {
        bool alive = false;
        for (size_t j = 0; enabled && j < ext[i]->n_subjects && !alive; j++) {
            alive = db_lookup(x->db, CLS_subject,
                              ext[i]->subjects[j]) != NULL;
        }
        if (!alive) {
            victims = xrealloc(victims, (n + 1) * sizeof *victims);
            victims[n++] = ext[i];
        }
    }
    db_read_unlock(x->db);
    if (n) {
        LOG_INFO("ending %zu sessions of external users who lost their "
                 "access", n);
    }
    destroy_sessions(x, victims, n);

    /* A survivor whose recorded subject is gone names another of its
     * subjects, so that session.subject never dangles. */
    if (n_ext > n) {
        struct db_txn *txn = db_begin(x->db);
        for (size_t i = 0; i < n_ext; i++) {
            struct db_row *row = db_lookup(x->db, CLS_session, ext[i]->ref);
            const char *cur;
            if (!row) {
                continue;
            }
            cur = row->fields[F_session_subject]->u.str.s;
            if (db_lookup(x->db, CLS_subject, cur)) {
                continue;
            }
            for (size_t j = 0; j < ext[i]->n_subjects; j++) {
                if (db_lookup(x->db, CLS_subject, ext[i]->subjects[j])) {
                    db_update(txn, CLS_session, ext[i]->ref,
                              F_session_subject,
                              value_string(ext[i]->subjects[j]));
                    break;
                }
            }
        }
        db_commit(txn);
    }
    for (size_t i = 0; i < n_ext; i++) {
        session_unref(ext[i]);
    }
    free(ext);
    free(victims);
}
