/* rbac.c — roles, permissions, subjects and external authentication.
 *
 * Roles and permissions.  As in XenAPI, a permission is a role without
 * subroles, named by the lower-cased name of the message it allows
 * ("vm.start"), and each role is a role row whose subroles are its
 * permissions: the messages whose role list in the datamodel names it.
 * There is one permission row per message (1,885 with the hidden ones),
 * six roles clients can grant and the internal client-cert role.
 * rbac_init keeps these rows equal to the datamodel at every start; their
 * references are derived from their names, so they are the same on every
 * host.  The dispatcher (rpc.c) checks a call against the role bitmask of
 * its session before any handler runs; a bitmask is enough because a
 * subject can hold only the six roles, never single permissions.
 *
 * Subjects and PAM.  pool.enable_external_auth with auth_type "PAM" lets
 * any account of the host's PAM stack (PAM service "xapi-c": the file
 * /etc/pam.d/xapi-c if it exists, else libpam's /etc/pam.d/other) log in,
 * if a subject exists for the account ("u<uid>") or for one of its Unix
 * groups ("g<gid>"), names resolved through NSS as XenAPI's PAM plugin
 * does.  The session gets the union of the roles of those subjects
 * (session.c builds it from rbac_login's answer).  Failed logins of one
 * name are throttled here: after THROTTLE_FAILURES failures within a
 * minute the name is refused at once for a delay that doubles with each
 * further failure, so guessing is slow and no worker thread waits. */
#include <config.h>
#include "api.h"

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <shadow.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "strmap.h"

#define XAPI_PAM_SERVICE "xapi-c"
#define AUTH_TYPE_PAM "PAM"

static bool
set_contains(const struct value *set, const char *s)
{
    for (size_t i = 0; set->type == VALUE_ARRAY && i < set->u.arr.n; i++) {
        const struct value *v = set->u.arr.items[i];
        if (v->type == VALUE_STRING && !strcmp(v->u.str.s, s)) {
            return true;
        }
    }
    return false;
}

static int
compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* A set of distinct strings, collected then turned into a sorted value. */
struct string_set {
    struct strmap map;      /* key -> the key's own copy */
};

static void
string_set_init(struct string_set *ss)
{
    strmap_init(&ss->map);
}

static void
string_set_add(struct string_set *ss, const char *s)
{
    if (!strmap_get(&ss->map, s)) {
        char *copy = xstrdup(s);
        strmap_put(&ss->map, copy, copy);
    }
}

/* Returns the strings as a sorted set value and empties ss. */
static struct value *
string_set_take(struct string_set *ss)
{
    const char **keys = xmalloc((ss->map.n + 1) * sizeof *keys);
    struct value *arr = value_array(ss->map.n);
    const char *key;
    void *data;
    size_t n = 0;

    for (size_t pos = 0; strmap_next(&ss->map, &pos, &key, &data);) {
        keys[n++] = data;
    }
    qsort(keys, n, sizeof *keys, compare_strings);
    for (size_t i = 0; i < n; i++) {
        value_array_append(arr, value_string(keys[i]));
        free((char *) keys[i]);
    }
    free(keys);
    strmap_destroy(&ss->map);
    strmap_init(&ss->map);
    return arr;
}

static void
string_set_destroy(struct string_set *ss)
{
    value_unref(string_set_take(ss));
    strmap_destroy(&ss->map);
}

/* ---- roles and permissions ---- */

/* The roles of XenAPI, in the order of the ROLE_* bits (api_role_names).
 * client-cert is internal: xapi gives it to sessions opened with a client
 * certificate, and clients cannot grant it. */
static const char *const role_descriptions[7] = {
    "Can do everything, including changing roles and users.",
    "Can manage the pool and its hosts, but not users or roles.",
    "Can create and manage VMs, including their placement and migration.",
    "Can create, change and delete VMs and their devices.",
    "Can start, stop and use existing VMs.",
    "Can look at everything and change nothing.",
    "Given to sessions authenticated by a client certificate.",
};
#define N_ROLES 7
#define N_GRANTABLE_ROLES 6     /* all but client-cert */

/* A name-based uuid for a role or permission: pool-admin has the fixed one
 * every XenAPI client knows (the datamodel's default of subject.roles). */
static void
name_uuid(const char *name, char *buf)
{
    unsigned char md[SHA256_DIGEST_LENGTH];

    if (!strcmp(name, "pool-admin")) {
        strcpy(buf, "0165f154-ba3e-034e-6b27-5d271af109ba");
        return;
    }
    SHA256((const unsigned char *) name, strlen(name), md);
    md[6] = (md[6] & 0x0f) | 0x50;     /* a name-based uuid */
    md[8] = (md[8] & 0x3f) | 0x80;
    snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x", md[0], md[1], md[2], md[3], md[4],
             md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12],
             md[13], md[14], md[15]);
}

/* The permission of a message: its name in lower case (as rpc.c reports
 * it in RBAC_PERMISSION_DENIED). */
static char *
message_permission(const struct api_message *m)
{
    char *p = xstrdup(m->name);

    for (char *c = p; *c; c++) {
        if (*c >= 'A' && *c <= 'Z') {
            *c += 'a' - 'A';
        }
    }
    return p;
}

/* The bit of a role row, from its name; 0 for a permission. */
static unsigned
role_bit(const struct db_row *row)
{
    const char *name = row->fields[F_role_name_label]->u.str.s;

    for (unsigned i = 0; i < N_ROLES; i++) {
        if (!strcmp(name, api_role_names[i])) {
            return 1u << i;
        }
    }
    return 0;
}

_Static_assert(F_role_uuid < 5 && F_role_name_label < 5
               && F_role_name_description < 5 && F_role_subroles < 5
               && F_role_is_internal < 5, "the role class has five fields");

/* Makes the row ref (uuid, name, ...) exist with exactly these values:
 * inserts it, or updates the fields that differ.  Takes subroles. */
static int
ensure_role_row(struct db_txn *txn, const char *uuid, const char *name,
                const char *description, struct value *subroles,
                bool internal)
{
    struct db *db = db_txn_db(txn);
    struct value *want[5];      /* by field: the role class has these five */
    struct db_row *row;
    char ref[48];
    int rc = 0;

    snprintf(ref, sizeof ref, "OpaqueRef:%s", uuid);
    want[F_role_uuid] = value_string(uuid);
    want[F_role_name_label] = value_string(name);
    want[F_role_name_description] = value_string(description);
    want[F_role_subroles] = subroles;
    want[F_role_is_internal] = internal ? value_true() : value_false();
    row = db_lookup(db, CLS_role, ref);
    if (!row) {
        struct value **f = xcalloc(ARRAY_SIZE(want), sizeof *f);
        memcpy(f, want, sizeof want);
        memset(want, 0, sizeof want);
        rc = db_insert_fields(txn, CLS_role, ref, f);
    } else {
        for (size_t i = 0; i < ARRAY_SIZE(want) && !rc; i++) {
            if (!value_equal(row->fields[i], want[i])) {
                rc = db_update(txn, CLS_role, ref, (int) i, want[i]);
                want[i] = NULL;
            }
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        value_unref(want[i]);
    }
    return rc;
}

/* Makes the role table what the datamodel says: the seven roles and one
 * permission per message, and nothing else. */
int
rbac_init(struct xapi *x)
{
    char (*perm_uuid)[40] = xcalloc(api_n_messages, sizeof *perm_uuid);
    char (*role_uuid)[40] = xcalloc(N_ROLES, sizeof *role_uuid);
    struct db_txn *txn = db_begin(x->db);
    struct strmap wanted;
    char **stale = NULL;
    size_t n_stale = 0;
    char ref[48];
    int rc = 0;

    strmap_init(&wanted);
    for (size_t i = 0; i < api_n_messages && !rc; i++) {
        const struct api_message *m = &api_messages[i];
        char *name = message_permission(m);
        char *desc = xasprintf("Permission to call %s.", m->name);
        name_uuid(name, perm_uuid[i]);
        rc = ensure_role_row(txn, perm_uuid[i], name, desc,
                             value_empty_array(), false);
        free(name);
        free(desc);
    }
    for (unsigned r = 0; r < N_ROLES && !rc; r++) {
        struct value *subroles = value_array(api_n_messages);
        for (size_t i = 0; i < api_n_messages; i++) {
            if (api_messages[i].roles & (1u << r)) {
                snprintf(ref, sizeof ref, "OpaqueRef:%s", perm_uuid[i]);
                value_array_append(subroles, value_string(ref));
            }
        }
        name_uuid(api_role_names[r], role_uuid[r]);
        rc = ensure_role_row(txn, role_uuid[r], api_role_names[r],
                             role_descriptions[r], subroles,
                             r >= N_GRANTABLE_ROLES);
    }
    if (rc) {
        goto out;
    }

    /* Remove the permissions of messages that no longer exist. */
    for (size_t i = 0; i < api_n_messages; i++) {
        strmap_put(&wanted, perm_uuid[i], perm_uuid);
    }
    for (unsigned r = 0; r < N_ROLES; r++) {
        strmap_put(&wanted, role_uuid[r], role_uuid);
    }
    for (size_t i = 0; i < db_table_count(x->db, CLS_role); i++) {
        struct db_row *row = db_table_row(x->db, CLS_role, i);
        if (!strmap_get(&wanted, row->fields[F_role_uuid]->u.str.s)) {
            stale = xrealloc(stale, (n_stale + 1) * sizeof *stale);
            stale[n_stale++] = xstrdup(row->ref);
        }
    }
    for (size_t i = 0; i < n_stale && !rc; i++) {
        rc = db_delete(txn, CLS_role, stale[i]);
    }
out:
    if (rc) {
        db_abort(txn);
    } else {
        rc = db_commit(txn);
    }
    for (size_t i = 0; i < n_stale; i++) {
        free(stale[i]);
    }
    free(stale);
    strmap_destroy(&wanted);
    free(perm_uuid);
    free(role_uuid);
    return rc;
}

/* Adds the names of the permissions of a role row (and, with
 * with_role_name, the role's own name, as XenAPI's session.rbac_permissions
 * does) to ss.  Needs the read lock. */
static void
add_role_permissions(struct db *db, const struct db_row *role,
                     bool with_role_name, struct string_set *ss)
{
    const struct value *subroles = role->fields[F_role_subroles];

    if (with_role_name) {
        string_set_add(ss, role->fields[F_role_name_label]->u.str.s);
    }
    for (size_t i = 0; i < subroles->u.arr.n; i++) {
        struct db_row *p = db_lookup(db, CLS_role,
                                     subroles->u.arr.items[i]->u.str.s);
        if (p) {
            string_set_add(ss, p->fields[F_role_name_label]->u.str.s);
        }
    }
}

static int
api_role_get_permissions(struct api_ctx *ctx, struct value **args,
                         struct value **ret)
{
    struct db *db = ctx->x->db;
    const char *self = args[1]->u.str.s;
    struct db_row *row;

    db_read_lock(db);
    row = db_lookup(db, CLS_role, self);
    if (row) {
        *ret = value_ref(row->fields[F_role_subroles]);
    }
    db_read_unlock(db);
    return row ? 0 : api_fail_handle(ctx, CLS_role, self);
}

static int
api_role_get_permissions_name_label(struct api_ctx *ctx, struct value **args,
                                    struct value **ret)
{
    struct db *db = ctx->x->db;
    const char *self = args[1]->u.str.s;
    struct string_set ss;
    struct db_row *row;

    string_set_init(&ss);
    db_read_lock(db);
    row = db_lookup(db, CLS_role, self);
    if (row) {
        add_role_permissions(db, row, false, &ss);
    }
    db_read_unlock(db);
    if (!row) {
        string_set_destroy(&ss);
        return api_fail_handle(ctx, CLS_role, self);
    }
    *ret = string_set_take(&ss);
    string_set_destroy(&ss);
    return 0;
}

/* The roles whose subroles hold any of the given permission refs.  Needs
 * the read lock. */
static struct value *
roles_holding(struct db *db, const char *const *perms, size_t n)
{
    struct value *arr = value_array(N_ROLES);

    for (size_t i = 0; i < db_table_count(db, CLS_role); i++) {
        struct db_row *row = db_table_row(db, CLS_role, i);
        const struct value *subroles = row->fields[F_role_subroles];
        if (!subroles->u.arr.n) {
            continue;
        }
        for (size_t j = 0; j < n; j++) {
            if (set_contains(subroles, perms[j])) {
                value_array_append(arr, value_string(row->ref));
                break;
            }
        }
    }
    return arr;
}

static int
api_role_get_by_permission(struct api_ctx *ctx, struct value **args,
                           struct value **ret)
{
    struct db *db = ctx->x->db;
    const char *perm = args[1]->u.str.s;

    db_read_lock(db);
    *ret = roles_holding(db, &perm, 1);
    db_read_unlock(db);
    return 0;
}

static int
api_role_get_by_permission_name_label(struct api_ctx *ctx,
                                      struct value **args,
                                      struct value **ret)
{
    struct db *db = ctx->x->db;
    struct db_row **rows = NULL;
    const char **refs;
    size_t n = 0;

    db_read_lock(db);
    db_lookup_name_label(db, CLS_role, args[1]->u.str.s, &rows, &n);
    refs = xmalloc((n + 1) * sizeof *refs);
    for (size_t i = 0; i < n; i++) {
        refs[i] = rows[i]->ref;
    }
    *ret = roles_holding(db, refs, n);
    db_read_unlock(db);
    free(refs);
    free(rows);
    return 0;
}

/* ---- the directory: Unix accounts and groups through NSS ---- */

/* A user or group as the PAM directory describes it. */
struct nss_entry {
    bool is_group;
    unsigned long id;           /* uid or gid */
    unsigned long gid;          /* a user's primary group */
    char *name;
    char *gecos;
};

static void
nss_entry_clear(struct nss_entry *e)
{
    free(e->name);
    free(e->gecos);
    memset(e, 0, sizeof *e);
}

/* Looks up a user by name (if name) or uid.  Returns 0, -ENOENT or another
 * negative errno value. */
static int
nss_user(const char *name, uid_t uid, struct nss_entry *ret)
{
    size_t size = 1024;
    struct passwd pw, *res = NULL;
    char *buf = NULL;
    int r;

    for (;;) {
        buf = xrealloc(buf, size);
        r = name ? getpwnam_r(name, &pw, buf, size, &res)
                 : getpwuid_r(uid, &pw, buf, size, &res);
        if (r != ERANGE || size >= (1u << 20)) {
            break;
        }
        size *= 2;
    }
    if (!r && res) {
        memset(ret, 0, sizeof *ret);
        ret->id = pw.pw_uid;
        ret->gid = pw.pw_gid;
        ret->name = xstrdup(pw.pw_name);
        ret->gecos = xstrdup(pw.pw_gecos ? pw.pw_gecos : "");
    }
    free(buf);
    return r ? -r : res ? 0 : -ENOENT;
}

static int
nss_group(const char *name, gid_t gid, struct nss_entry *ret)
{
    size_t size = 1024;
    struct group gr, *res = NULL;
    char *buf = NULL;
    int r;

    for (;;) {
        buf = xrealloc(buf, size);
        r = name ? getgrnam_r(name, &gr, buf, size, &res)
                 : getgrgid_r(gid, &gr, buf, size, &res);
        if (r != ERANGE || size >= (1u << 24)) {
            break;
        }
        size *= 2;
    }
    if (!r && res) {
        memset(ret, 0, sizeof *ret);
        ret->is_group = true;
        ret->id = ret->gid = gr.gr_gid;
        ret->name = xstrdup(gr.gr_name);
        ret->gecos = xstrdup("");
    }
    free(buf);
    return r ? -r : res ? 0 : -ENOENT;
}

/* Resolves a subject identifier: "u<uid>" or "g<gid>", decimal. */
static int
nss_resolve(const char *sid, struct nss_entry *ret)
{
    unsigned long id = 0;
    size_t i;

    if ((sid[0] != 'u' && sid[0] != 'g') || !sid[1] || strlen(sid) > 11) {
        return -ENOENT;
    }
    for (i = 1; sid[i]; i++) {
        if (sid[i] < '0' || sid[i] > '9' || (i == 1 && sid[i] == '0'
                                              && sid[2])) {
            return -ENOENT;
        }
        id = id * 10 + (unsigned long) (sid[i] - '0');
    }
    if (id >= 0xffffffffUL) {
        return -ENOENT;
    }
    return sid[0] == 'u' ? nss_user(NULL, (uid_t) id, ret)
                         : nss_group(NULL, (gid_t) id, ret);
}

static char *
entry_sid(const struct nss_entry *e)
{
    return xasprintf("%c%lu", e->is_group ? 'g' : 'u', e->id);
}

/* Whether the account is locked or expired in the shadow file (readable
 * as root; an account without a shadow entry is not). */
static void
shadow_state(const char *name, bool *ret_disabled, bool *ret_expired)
{
    struct spwd sp, *res = NULL;
    char buf[4096];

    *ret_disabled = *ret_expired = false;
    if (getspnam_r(name, &sp, buf, sizeof buf, &res) || !res) {
        return;
    }
    *ret_disabled = !sp.sp_pwdp || sp.sp_pwdp[0] == '!'
                    || sp.sp_pwdp[0] == '*';
    *ret_expired = sp.sp_expire >= 0
                   && sp.sp_expire <= (long) (time(NULL) / 86400);
}

/* The subject information XenAPI's PAM plugin reports. */
static struct value *
entry_info(const struct nss_entry *e)
{
    struct value *m = value_struct(12);

    value_struct_put(m, "subject-name", value_string(e->name));
    if (e->is_group) {
        value_struct_put(m, "subject-uid", value_stringf("g%lu", e->id));
        value_struct_put(m, "subject-gid", value_stringf("g%lu", e->id));
        value_struct_put(m, "subject-is-group", value_string("true"));
    } else {
        size_t len = strcspn(e->gecos, ",");
        bool disabled, expired;
        shadow_state(e->name, &disabled, &expired);
        value_struct_put(m, "subject-uid", value_stringf("u%lu", e->id));
        value_struct_put(m, "subject-gid", value_stringf("g%lu", e->gid));
        value_struct_put(m, "subject-gecos", value_string(e->gecos));
        value_struct_put(m, "subject-displayname",
                         len ? value_string_n(e->gecos, len)
                             : value_string(e->name));
        value_struct_put(m, "subject-is-group", value_string("false"));
        value_struct_put(m, "subject-account-disabled",
                         value_string(disabled ? "true" : "false"));
        value_struct_put(m, "subject-account-expired",
                         value_string(expired ? "true" : "false"));
        value_struct_put(m, "subject-account-locked", value_string("false"));
        value_struct_put(m, "subject-password-expired",
                         value_string("false"));
    }
    return m;
}

/* The groups of a user, as subject identifiers, primary group first (or,
 * for a group, the group itself: Unix groups do not nest). */
static struct value *
entry_groups(const struct nss_entry *e)
{
    struct value *arr;
    gid_t *groups = NULL;
    int n = 32;

    if (e->is_group) {
        arr = value_array(1);
        value_array_append(arr, value_stringf("g%lu", e->id));
        return arr;
    }
    for (;;) {
        int got = n;
        groups = xrealloc(groups, (size_t) n * sizeof *groups);
        if (getgrouplist(e->name, (gid_t) e->gid, groups, &got) >= 0) {
            n = got;
            break;
        }
        if (got <= n || got > 65536) {
            n = 0;      /* keep the primary group only */
            break;
        }
        n = got;
    }
    arr = value_array((size_t) n);
    value_array_append(arr, value_stringf("g%lu", e->gid));
    for (int i = 0; i < n; i++) {
        char sid[24];
        snprintf(sid, sizeof sid, "g%lu", (unsigned long) groups[i]);
        if (!set_contains(arr, sid)) {
            value_array_append(arr, value_string(sid));
        }
    }
    free(groups);
    return arr;
}

/* ---- external authentication settings ---- */

/* Copies this host's external auth type ("" when none). */
static void
host_auth_type(struct xapi *x, char *buf, size_t size)
{
    struct db_row *h;

    db_read_lock(x->db);
    h = db_lookup(x->db, CLS_host, x->host_ref);
    snprintf(buf, size, "%s",
             h ? h->fields[F_host_external_auth_type]->u.str.s : "");
    db_read_unlock(x->db);
}

static bool
pam_enabled(struct xapi *x)
{
    char type[32];

    host_auth_type(x, type, sizeof type);
    return !strcmp(type, AUTH_TYPE_PAM);
}

/* ---- PAM ---- */

/* libpam's modules are not all safe to run in parallel (pam_unix reads the
 * shadow file with non-reentrant calls in places), and XenAPI serializes
 * its authentications too: one at a time.  A check costs one password
 * hash, a few milliseconds. */
static pthread_mutex_t pam_lock = PTHREAD_MUTEX_INITIALIZER;

struct pam_credentials {
    const char *user;
    const char *password;
};

static int
pam_conversation(int n, const struct pam_message **msg,
                 struct pam_response **ret_resp, void *aux)
{
    const struct pam_credentials *cred = aux;
    struct pam_response *resp;

    if (n <= 0 || n > PAM_MAX_NUM_MSG) {
        return PAM_CONV_ERR;
    }
    resp = xcalloc((size_t) n, sizeof *resp);   /* libpam frees with free() */
    for (int i = 0; i < n; i++) {
        switch (msg[i]->msg_style) {
        case PAM_PROMPT_ECHO_OFF:
            resp[i].resp = xstrdup(cred->password);
            break;
        case PAM_PROMPT_ECHO_ON:
            resp[i].resp = xstrdup(cred->user);
            break;
        case PAM_ERROR_MSG:
        case PAM_TEXT_INFO:
            break;
        default:
            for (int j = 0; j < i; j++) {
                free(resp[j].resp);
            }
            free(resp);
            return PAM_CONV_ERR;
        }
    }
    *ret_resp = resp;
    return PAM_SUCCESS;
}

/* pam_unix asks libpam to sleep ~2 s after a failure; our own throttling
 * replaces that delay, which would otherwise hold a worker thread. */
static void
pam_no_delay(int status, unsigned delay_us, void *aux)
{
}

/* Checks a password with PAM and that the account may be used now.
 * Returns 0, or -EACCES with a reason in *ret_why (a static string). */
static int
pam_check(const char *user, const char *password, const char **ret_why)
{
    struct pam_credentials cred = { user, password };
    struct pam_conv conv = { pam_conversation, &cred };
    pam_handle_t *h = NULL;
    int r;

    pthread_mutex_lock(&pam_lock);
    r = pam_start(XAPI_PAM_SERVICE, user, &conv, &h);
    if (r != PAM_SUCCESS) {
        *ret_why = "cannot start PAM";
        goto out;
    }
    pam_set_item(h, PAM_FAIL_DELAY, (const void *) pam_no_delay);
    r = pam_authenticate(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
    if (r != PAM_SUCCESS) {
        *ret_why = pam_strerror(h, r);
        goto out;
    }
    r = pam_acct_mgmt(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
    if (r != PAM_SUCCESS) {
        *ret_why = pam_strerror(h, r);
    }
out:
    if (h) {
        pam_end(h, r);
    }
    pthread_mutex_unlock(&pam_lock);
    return r == PAM_SUCCESS ? 0 : -EACCES;
}

/* ---- throttling of failed logins ---- */

#define THROTTLE_FAILURES 5         /* failures before the first lockout */
#define THROTTLE_WINDOW_MS 60000    /* older failures are forgotten */
#define THROTTLE_FIRST_MS 2000      /* the first lockout; doubles each time */
#define THROTTLE_MAX_MS 60000
#define THROTTLE_MAX_NAMES 10000    /* bound on the memory guessers can use */

struct throttle_entry {
    int failures;
    int64_t last_failure_ms;
    int64_t locked_until_ms;
    char name[];
};

static pthread_mutex_t throttle_lock = PTHREAD_MUTEX_INITIALIZER;
static struct strmap throttle_map;
static bool throttle_ready;

static void
throttle_init_locked(void)
{
    if (!throttle_ready) {
        strmap_init(&throttle_map);
        throttle_ready = true;
    }
}

/* Forgets names whose failures are old and whose lockout is over. */
static void
throttle_prune_locked(int64_t now)
{
    const char *key;
    void *data;
    struct throttle_entry **old = NULL;
    size_t n = 0;

    for (size_t pos = 0; strmap_next(&throttle_map, &pos, &key, &data);) {
        struct throttle_entry *e = data;
        if (now - e->last_failure_ms > THROTTLE_WINDOW_MS
            && now >= e->locked_until_ms) {
            old = xrealloc(old, (n + 1) * sizeof *old);
            old[n++] = e;
        }
    }
    for (size_t i = 0; i < n; i++) {
        strmap_remove(&throttle_map, old[i]->name);
        free(old[i]);
    }
    free(old);
}

/* Returns the milliseconds the name remains locked out, or 0. */
static int64_t
throttle_wait(const char *name)
{
    struct throttle_entry *e;
    int64_t now = time_mono_ms(), left = 0;

    pthread_mutex_lock(&throttle_lock);
    throttle_init_locked();
    e = strmap_get(&throttle_map, name);
    if (e && e->locked_until_ms > now) {
        left = e->locked_until_ms - now;
    }
    pthread_mutex_unlock(&throttle_lock);
    return left;
}

static void
throttle_failure(const char *name)
{
    struct throttle_entry *e;
    int64_t now = time_mono_ms();

    pthread_mutex_lock(&throttle_lock);
    throttle_init_locked();
    e = strmap_get(&throttle_map, name);
    if (!e) {
        if (throttle_map.n >= THROTTLE_MAX_NAMES) {
            throttle_prune_locked(now);
        }
        if (throttle_map.n >= THROTTLE_MAX_NAMES) {
            /* Too many names guessed at once: keep counting the known ones
             * rather than grow without bound. */
            goto out;
        }
        e = xcalloc(1, sizeof *e + strlen(name) + 1);
        strcpy(e->name, name);
        strmap_put(&throttle_map, e->name, e);
    }
    if (now - e->last_failure_ms > THROTTLE_WINDOW_MS
        && now >= e->locked_until_ms) {
        e->failures = 0;
    }
    e->failures++;
    e->last_failure_ms = now;
    if (e->failures >= THROTTLE_FAILURES) {
        int shift = e->failures - THROTTLE_FAILURES;
        int64_t delay = shift >= 10 ? THROTTLE_MAX_MS
                                    : (int64_t) THROTTLE_FIRST_MS << shift;
        if (delay > THROTTLE_MAX_MS) {
            delay = THROTTLE_MAX_MS;
        }
        e->locked_until_ms = now + delay;
        LOG_WARN("%d failed logins for user '%s': refusing its logins for "
                 "%lld s", e->failures, name, (long long) (delay / 1000));
    }
out:
    pthread_mutex_unlock(&throttle_lock);
}

static void
throttle_success(const char *name)
{
    struct throttle_entry *e;

    pthread_mutex_lock(&throttle_lock);
    throttle_init_locked();
    e = strmap_remove(&throttle_map, name);
    pthread_mutex_unlock(&throttle_lock);
    free(e);
}

/* ---- external login ---- */

void
rbac_identity_clear(struct rbac_identity *id)
{
    free(id->sid);
    for (size_t i = 0; i < id->n_subjects; i++) {
        free(id->subjects[i]);
    }
    free(id->subjects);
    value_unref(id->permissions);
    memset(id, 0, sizeof *id);
}

/* Finds the subjects that grant sids (the user's own first) and the union
 * of their roles. */
static void
match_subjects(struct db *db, const struct value *sids,
               struct rbac_identity *id, struct string_set *perms)
{
    struct string_set roles;
    struct value *role_refs;

    string_set_init(&roles);
    db_read_lock(db);
    for (size_t pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < db_table_count(db, CLS_subject); i++) {
            struct db_row *row = db_table_row(db, CLS_subject, i);
            const char *sid =
                row->fields[F_subject_subject_identifier]->u.str.s;
            const struct value *r = row->fields[F_subject_roles];
            bool own = !strcmp(sid, id->sid);
            if (own != (pass == 0) || (!own && !set_contains(sids, sid))) {
                continue;
            }
            id->subjects = xrealloc(id->subjects, (id->n_subjects + 1)
                                    * sizeof *id->subjects);
            id->subjects[id->n_subjects++] = xstrdup(row->ref);
            for (size_t j = 0; j < r->u.arr.n; j++) {
                string_set_add(&roles, r->u.arr.items[j]->u.str.s);
            }
        }
    }
    role_refs = string_set_take(&roles);
    for (size_t i = 0; i < role_refs->u.arr.n; i++) {
        struct db_row *role = db_lookup(db, CLS_role,
                                        role_refs->u.arr.items[i]->u.str.s);
        if (role) {
            id->roles |= role_bit(role);
            add_role_permissions(db, role, true, perms);
        }
    }
    db_read_unlock(db);
    value_unref(role_refs);
    string_set_destroy(&roles);
}

int
rbac_login(struct api_ctx *ctx, const char *user, const char *password,
           struct rbac_identity *ret)
{
    struct rbac_identity id = { 0 };
    struct nss_entry e = { 0 };
    struct string_set perms;
    struct value *sids = NULL;
    const char *why = "";
    int64_t wait;
    int rc = -1;

    string_set_init(&perms);
    if (!pam_enabled(ctx->x)) {
        LOG_INFO("login failed for user '%s' from %s: external "
                 "authentication is disabled", user, ctx->peer);
        api_fail(ctx, ERR_SESSION_AUTHENTICATION_FAILED);
        goto out;
    }
    wait = throttle_wait(user);
    if (wait) {
        LOG_INFO("login refused for user '%s' from %s: too many failures, "
                 "locked out for %lld ms more", user, ctx->peer,
                 (long long) wait);
        api_fail(ctx, ERR_SESSION_AUTHENTICATION_FAILED);
        goto out;
    }
    if (!*password || pam_check(user, password, &why)) {
        LOG_INFO("login failed for user '%s' from %s: %s", user, ctx->peer,
                 *password ? why : "empty password");
        throttle_failure(user);
        api_fail(ctx, ERR_SESSION_AUTHENTICATION_FAILED);
        goto out;
    }
    throttle_success(user);
    if (nss_user(user, 0, &e)) {
        LOG_INFO("login failed for user '%s' from %s: PAM accepts the "
                 "account but NSS does not know it", user, ctx->peer);
        api_fail(ctx, ERR_SESSION_AUTHENTICATION_FAILED);
        goto out;
    }
    id.sid = entry_sid(&e);
    sids = entry_groups(&e);
    match_subjects(ctx->x->db, sids, &id, &perms);
    if (!id.n_subjects) {
        LOG_INFO("login failed for user '%s' (%s) from %s: no subject for "
                 "the user or its groups", user, id.sid, ctx->peer);
        api_fail(ctx, ERR_SESSION_AUTHENTICATION_FAILED);
        goto out;
    }
    if (!id.roles) {
        char *msg = xasprintf("Subject %s (identifier %s) has no roles in "
                              "this pool", user, id.sid);
        LOG_INFO("login failed from %s: %s", ctx->peer, msg);
        api_fail(ctx, ERR_RBAC_PERMISSION_DENIED,
                 "session.login_with_password", msg);
        free(msg);
        goto out;
    }
    id.permissions = string_set_take(&perms);
    *ret = id;
    memset(&id, 0, sizeof id);
    rc = 0;
out:
    rbac_identity_clear(&id);
    nss_entry_clear(&e);
    value_unref(sids);
    string_set_destroy(&perms);
    return rc;
}

/* ---- subjects ---- */

/* Whether a subject with this identifier exists.  Needs the read lock or
 * a transaction. */
static bool
subject_exists(struct db *db, const char *sid)
{
    for (size_t i = 0; i < db_table_count(db, CLS_subject); i++) {
        struct db_row *row = db_table_row(db, CLS_subject, i);
        if (!strcmp(row->fields[F_subject_subject_identifier]->u.str.s,
                    sid)) {
            return true;
        }
    }
    return false;
}

/* As in XenAPI: a duplicate identifier is refused first, then the
 * directory is asked about the subject; its answer replaces the given
 * other_config, and the new subject holds no role until one is added. */
static int
api_subject_create(struct api_ctx *ctx, struct value **args,
                   struct value **ret)
{
    struct value *sidv = value_struct_get(args[1], "subject_identifier");
    struct db *db = ctx->x->db;
    struct nss_entry e = { 0 };
    struct db_txn *txn = NULL;
    struct value **f;
    const char *sid = "";
    char ref[48], uuid[40];
    bool dup;
    int rc = -1;

    if (sidv && sidv->type != VALUE_STRING) {
        return api_fail(ctx, ERR_FIELD_TYPE_ERROR, "subject_identifier");
    }
    if (sidv) {
        sid = sidv->u.str.s;
    }
    db_read_lock(db);
    dup = subject_exists(db, sid);
    db_read_unlock(db);
    if (dup) {
        return api_fail(ctx, ERR_SUBJECT_ALREADY_EXISTS);
    }
    if (!pam_enabled(ctx->x)) {
        return api_fail(ctx, ERR_AUTH_IS_DISABLED);
    }
    if (nss_resolve(sid, &e)) {
        return api_fail(ctx, ERR_SUBJECT_CANNOT_BE_RESOLVED);
    }
    txn = db_begin(db);
    if (subject_exists(db, sid)) {      /* added while we asked NSS */
        api_fail(ctx, ERR_SUBJECT_ALREADY_EXISTS);
        goto out;
    }
    db_new_ref(ref);
    uuid_generate(uuid);
    f = db_fields_new(CLS_subject, uuid);
    f[F_subject_subject_identifier] = value_string(sid);
    f[F_subject_other_config] = entry_info(&e);
    f[F_subject_roles] = value_empty_array();
    if (db_insert_fields(txn, CLS_subject, ref, f)) {
        api_fail_internal(ctx, "cannot insert the subject");
        goto out;
    }
    rc = api_commit(ctx, txn);
    txn = NULL;
    if (!rc) {
        LOG_INFO("subject %s (%s) added", sid, e.name);
        *ret = value_string(ref);
    }
out:
    db_abort(txn);
    nss_entry_clear(&e);
    return rc;
}

static int
api_subject_destroy(struct api_ctx *ctx, struct value **args,
                    struct value **ret)
{
    struct db_txn *txn = db_begin(ctx->x->db);
    const char *self = args[1]->u.str.s;

    if (db_delete(txn, CLS_subject, self)) {
        db_abort(txn);
        return api_fail_handle(ctx, CLS_subject, self);
    }
    if (api_commit(ctx, txn)) {
        return -1;
    }
    /* Users whose access came only from this subject lose their sessions
     * now rather than at the next revalidation. */
    session_revalidate_external(ctx->x);
    return 0;
}

/* Whether a role ref names one of the six roles clients may grant. */
static bool
grantable_role(struct db *db, const char *ref)
{
    struct db_row *row = db_lookup(db, CLS_role, ref);
    unsigned bit = row ? role_bit(row) : 0;

    return bit && !(bit & ROLE_CLIENT_CERT)
           && !row->fields[F_role_is_internal]->u.b;
}

static int
change_roles(struct api_ctx *ctx, struct value **args, bool add)
{
    struct db *db = ctx->x->db;
    const char *self = args[1]->u.str.s, *role = args[2]->u.str.s;
    struct db_txn *txn = db_begin(db);
    const struct value *cur;
    struct value *nv;
    struct db_row *row;
    bool has;

    row = db_lookup(db, CLS_subject, self);
    if (!row) {
        db_abort(txn);
        return api_fail_handle(ctx, CLS_subject, self);
    }
    cur = row->fields[F_subject_roles];
    has = set_contains(cur, role);
    if (add && !grantable_role(db, role)) {
        db_abort(txn);
        return api_fail(ctx, ERR_ROLE_NOT_FOUND);
    }
    if (add && has) {
        db_abort(txn);
        return api_fail(ctx, ERR_ROLE_ALREADY_EXISTS);
    }
    if (!add && !has) {
        db_abort(txn);
        return api_fail(ctx, ERR_ROLE_NOT_FOUND);
    }
    nv = value_array(cur->u.arr.n + 1);
    for (size_t i = 0; i < cur->u.arr.n; i++) {
        if (add || strcmp(cur->u.arr.items[i]->u.str.s, role)) {
            value_array_append(nv, value_ref(cur->u.arr.items[i]));
        }
    }
    if (add) {
        value_array_append(nv, value_string(role));
    }
    if (db_update(txn, CLS_subject, self, F_subject_roles, nv)) {
        db_abort(txn);
        return api_fail_internal(ctx, "cannot update the subject's roles");
    }
    /* Sessions keep the roles they were given at login, as in XenAPI:
     * the change applies to the subject's next sessions. */
    return api_commit(ctx, txn);
}

static int
api_subject_add_to_roles(struct api_ctx *ctx, struct value **args,
                         struct value **ret)
{
    return change_roles(ctx, args, true);
}

static int
api_subject_remove_from_roles(struct api_ctx *ctx, struct value **args,
                              struct value **ret)
{
    return change_roles(ctx, args, false);
}

static int
api_subject_get_permissions_name_label(struct api_ctx *ctx,
                                       struct value **args,
                                       struct value **ret)
{
    struct db *db = ctx->x->db;
    const char *self = args[1]->u.str.s;
    struct string_set ss;
    struct db_row *row;

    string_set_init(&ss);
    db_read_lock(db);
    row = db_lookup(db, CLS_subject, self);
    if (row) {
        const struct value *roles = row->fields[F_subject_roles];
        for (size_t i = 0; i < roles->u.arr.n; i++) {
            struct db_row *role = db_lookup(db, CLS_role,
                                            roles->u.arr.items[i]->u.str.s);
            if (role) {
                add_role_permissions(db, role, false, &ss);
            }
        }
    }
    db_read_unlock(db);
    if (!row) {
        string_set_destroy(&ss);
        return api_fail_handle(ctx, CLS_subject, self);
    }
    *ret = string_set_take(&ss);
    string_set_destroy(&ss);
    return 0;
}

/* ---- auth: queries of the directory ---- */

static int
api_auth_get_subject_identifier(struct api_ctx *ctx, struct value **args,
                                struct value **ret)
{
    const char *name = args[1]->u.str.s;
    struct nss_entry e = { 0 };

    if (!pam_enabled(ctx->x)) {
        return api_fail(ctx, ERR_AUTH_IS_DISABLED);
    }
    /* Users first, then groups, as XenAPI's PAM plugin does. */
    if (!*name || (nss_user(name, 0, &e) && nss_group(name, 0, &e))) {
        return api_fail(ctx, ERR_SUBJECT_CANNOT_BE_RESOLVED);
    }
    *ret = value_string_take(entry_sid(&e));
    nss_entry_clear(&e);
    return 0;
}

/* Resolves args[1] as a subject identifier, or fails. */
static int
resolve_arg(struct api_ctx *ctx, struct value **args, struct nss_entry *e)
{
    if (!pam_enabled(ctx->x)) {
        return api_fail(ctx, ERR_AUTH_IS_DISABLED);
    }
    if (nss_resolve(args[1]->u.str.s, e)) {
        return api_fail(ctx, ERR_SUBJECT_CANNOT_BE_RESOLVED);
    }
    return 0;
}

static int
api_auth_get_subject_information_from_identifier(struct api_ctx *ctx,
                                                 struct value **args,
                                                 struct value **ret)
{
    struct nss_entry e = { 0 };

    if (resolve_arg(ctx, args, &e)) {
        return -1;
    }
    *ret = entry_info(&e);
    nss_entry_clear(&e);
    return 0;
}

static int
api_auth_get_group_membership(struct api_ctx *ctx, struct value **args,
                              struct value **ret)
{
    struct nss_entry e = { 0 };

    if (resolve_arg(ctx, args, &e)) {
        return -1;
    }
    *ret = entry_groups(&e);
    nss_entry_clear(&e);
    return 0;
}

/* ---- enabling and disabling external authentication ---- */

/* Sets the external auth fields of one host in txn (config without any
 * password, which XenAPI does not keep either). */
static int
set_host_auth(struct db_txn *txn, const char *host, const char *type,
              const char *service, const struct value *config)
{
    struct value *cfg = value_struct(config ? config->u.st.n : 0);
    int rc;

    for (size_t i = 0; config && i < config->u.st.n; i++) {
        const char *k = config->u.st.m[i].name;
        if (strcmp(k, "pass") && strcmp(k, "password")) {
            value_struct_put(cfg, k, value_ref(config->u.st.m[i].v));
        }
    }
    rc = db_update(txn, CLS_host, host, F_host_external_auth_type,
                   value_string(type));
    rc = rc ? rc : db_update(txn, CLS_host, host,
                             F_host_external_auth_service_name,
                             value_string(service));
    if (rc) {
        value_unref(cfg);
        return rc;
    }
    return db_update(txn, CLS_host, host, F_host_external_auth_configuration,
                     cfg);
}

/* Checks that PAM can be started for our service; a failure is reported
 * for the pool (POOL_AUTH_ENABLE_FAILED) or for this host. */
static int
check_pam_service(struct api_ctx *ctx, bool pool)
{
    struct pam_credentials cred = { "", "" };
    struct pam_conv conv = { pam_conversation, &cred };
    pam_handle_t *h = NULL;
    int r;

    pthread_mutex_lock(&pam_lock);
    r = pam_start(XAPI_PAM_SERVICE, NULL, &conv, &h);
    if (h) {
        pam_end(h, r);
    }
    pthread_mutex_unlock(&pam_lock);
    if (r != PAM_SUCCESS) {
        const char *msg = "cannot start PAM for service " XAPI_PAM_SERVICE;
        return pool ? api_fail(ctx, ERR_POOL_AUTH_ENABLE_FAILED,
                               ctx->x->host_ref, msg)
                    : api_fail(ctx, ERR_AUTH_ENABLE_FAILED, msg);
    }
    return 0;
}

/* Enables external authentication on one host (host non-NULL) or every
 * host of the pool. */
static int
enable_external_auth(struct api_ctx *ctx, const char *host,
                     const struct value *config, const char *service,
                     const char *type)
{
    struct db *db = ctx->x->db;
    struct db_txn *txn = db_begin(db);
    int rc = 0;

    for (size_t i = 0; i < db_table_count(db, CLS_host); i++) {
        struct db_row *row = db_table_row(db, CLS_host, i);
        const char *cur = row->fields[F_host_external_auth_type]->u.str.s;
        if ((host && strcmp(row->ref, host)) || !*cur) {
            continue;
        }
        db_abort(txn);
        if (host) {
            return api_fail(ctx, ERR_AUTH_ALREADY_ENABLED, cur,
                            row->fields[F_host_external_auth_service_name]
                            ->u.str.s);
        }
        return api_fail(ctx, ERR_POOL_AUTH_ALREADY_ENABLED, row->ref);
    }
    db_abort(txn);
    if (strcmp(type, AUTH_TYPE_PAM)) {
        return api_fail(ctx, ERR_AUTH_UNKNOWN_TYPE, type);
    }
    if (check_pam_service(ctx, !host)) {
        return -1;
    }
    txn = db_begin(db);
    for (size_t i = 0; i < db_table_count(db, CLS_host) && !rc; i++) {
        struct db_row *row = db_table_row(db, CLS_host, i);
        if (!host || !strcmp(row->ref, host)) {
            rc = set_host_auth(txn, row->ref, type, service, config);
        }
    }
    if (rc) {
        db_abort(txn);
        return api_fail_internal(ctx, "cannot update the host: %s",
                                 strerror(-rc));
    }
    if (api_commit(ctx, txn)) {
        return -1;
    }
    LOG_INFO("external authentication %s (service '%s') enabled on %s",
             type, service, host ? host : "the pool");
    return 0;
}

static int
disable_external_auth(struct api_ctx *ctx, const char *host)
{
    struct db *db = ctx->x->db;
    struct db_txn *txn = db_begin(db);
    int rc = 0;

    for (size_t i = 0; i < db_table_count(db, CLS_host) && !rc; i++) {
        struct db_row *row = db_table_row(db, CLS_host, i);
        if ((!host || !strcmp(row->ref, host))
            && *row->fields[F_host_external_auth_type]->u.str.s) {
            rc = set_host_auth(txn, row->ref, "", "", NULL);
        }
    }
    if (rc) {
        db_abort(txn);
        return api_fail_internal(ctx, "cannot update the host: %s",
                                 strerror(-rc));
    }
    if (api_commit(ctx, txn)) {
        return -1;
    }
    /* External users are logged out, as XenAPI's session revalidation
     * does once external authentication is off. */
    session_revalidate_external(ctx->x);
    return 0;
}

static bool
row_exists(struct db *db, int cls, const char *ref)
{
    bool found;

    db_read_lock(db);
    found = db_lookup(db, cls, ref) != NULL;
    db_read_unlock(db);
    return found;
}

static int
api_pool_enable_external_auth(struct api_ctx *ctx, struct value **args,
                              struct value **ret)
{
    if (!row_exists(ctx->x->db, CLS_pool, args[1]->u.str.s)) {
        return api_fail_handle(ctx, CLS_pool, args[1]->u.str.s);
    }
    return enable_external_auth(ctx, NULL, args[2], args[3]->u.str.s,
                                args[4]->u.str.s);
}

static int
api_host_enable_external_auth(struct api_ctx *ctx, struct value **args,
                              struct value **ret)
{
    if (!row_exists(ctx->x->db, CLS_host, args[1]->u.str.s)) {
        return api_fail_handle(ctx, CLS_host, args[1]->u.str.s);
    }
    return enable_external_auth(ctx, args[1]->u.str.s, args[2],
                                args[3]->u.str.s, args[4]->u.str.s);
}

static int
api_pool_disable_external_auth(struct api_ctx *ctx, struct value **args,
                               struct value **ret)
{
    if (!row_exists(ctx->x->db, CLS_pool, args[1]->u.str.s)) {
        return api_fail_handle(ctx, CLS_pool, args[1]->u.str.s);
    }
    return disable_external_auth(ctx, NULL);
}

static int
api_host_disable_external_auth(struct api_ctx *ctx, struct value **args,
                               struct value **ret)
{
    if (!row_exists(ctx->x->db, CLS_host, args[1]->u.str.s)) {
        return api_fail_handle(ctx, CLS_host, args[1]->u.str.s);
    }
    return disable_external_auth(ctx, args[1]->u.str.s);
}

/* Every host of the pool is configured by the same call, so the settings
 * can differ only if a host was changed alone; that is logged. */
static int
api_pool_detect_nonhomogeneous_external_auth(struct api_ctx *ctx,
                                             struct value **args,
                                             struct value **ret)
{
    struct db *db = ctx->x->db;
    const struct db_row *first = NULL;
    bool found;

    db_read_lock(db);
    found = db_lookup(db, CLS_pool, args[1]->u.str.s) != NULL;
    for (size_t i = 0; found && i < db_table_count(db, CLS_host); i++) {
        const struct db_row *row = db_table_row(db, CLS_host, i);
        if (!first) {
            first = row;
        } else if (!value_equal(row->fields[F_host_external_auth_type],
                                first->fields[F_host_external_auth_type])
                   || !value_equal(
                       row->fields[F_host_external_auth_service_name],
                       first->fields[F_host_external_auth_service_name])) {
            LOG_WARN("host %s and host %s have different external "
                     "authentication settings", row->ref, first->ref);
        }
    }
    db_read_unlock(db);
    return found ? 0 : api_fail_handle(ctx, CLS_pool, args[1]->u.str.s);
}

const struct api_handler_entry rbac_handlers[] = {
    { "auth.get_group_membership", api_auth_get_group_membership },
    { "auth.get_subject_identifier", api_auth_get_subject_identifier },
    { "auth.get_subject_information_from_identifier",
      api_auth_get_subject_information_from_identifier },
    { "host.disable_external_auth", api_host_disable_external_auth },
    { "host.enable_external_auth", api_host_enable_external_auth },
    { "pool.detect_nonhomogeneous_external_auth",
      api_pool_detect_nonhomogeneous_external_auth },
    { "pool.disable_external_auth", api_pool_disable_external_auth },
    { "pool.enable_external_auth", api_pool_enable_external_auth },
    { "role.get_by_permission", api_role_get_by_permission },
    { "role.get_by_permission_name_label",
      api_role_get_by_permission_name_label },
    { "role.get_permissions", api_role_get_permissions },
    { "role.get_permissions_name_label",
      api_role_get_permissions_name_label },
    { "subject.add_to_roles", api_subject_add_to_roles },
    { "subject.create", api_subject_create },
    { "subject.destroy", api_subject_destroy },
    { "subject.get_permissions_name_label",
      api_subject_get_permissions_name_label },
    { "subject.remove_from_roles", api_subject_remove_from_roles },
    { NULL, NULL },
};
