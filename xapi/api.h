/* api.h — what message handlers see: the daemon's shared state (struct
 * xapi), the per-call context (struct api_ctx), the error helpers that
 * produce XenAPI's [CODE, params...] failures, and the entry points of
 * rpc.c (dispatch), generic.c (messages implemented once over the schema),
 * session.c and handlers.c (messages with behaviour). */
#ifndef API_H
#define API_H 1

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "schema.h"
#include "value.h"

struct xenops_host;
struct session_table;

/* The daemon.  Fields are set at start-up and constant afterwards. */
struct xapi {
    struct db *db;
    char *state_dir;
    char host_ref[48];
    char pool_ref[48];
    char host_uuid[40];
    struct session_table *sessions;
    struct xenops_host *xenops;
    char *root_hash_file;       /* salted hash of root's password */
    int64_t start_time;
};

struct session;

/* Receives the outcome of a call: exactly one of result and error is
 * non-NULL, and the callee takes both references. */
typedef void api_done_fn(void *aux, struct value *result,
                         struct value *error);

#define API_MAX_PARAMS 32

/* One API call in progress. */
struct api_ctx {
    struct xapi *x;
    const struct api_message *msg;
    const char *method;         /* as called, e.g. "Async.VM.start" */
    struct session *session;    /* NULL for session-less messages */
    const char *peer;           /* client address for logs and audit */
    struct value *error;        /* set by api_fail: [CODE, params...] */
    char task[48];              /* the task of an Async call, or "" */
    api_done_fn *done;          /* where the answer goes */
    void *done_aux;
    bool deferred;              /* api_defer() was called */
};

/* Handlers receive the coerced arguments (args[0] is the session ref when
 * the message has one) and return 0 with *ret_result set, or -1 after
 * calling api_fail(), or API_DEFERRED after api_defer() when the answer
 * comes later (a long poll must not hold a worker thread).  They never free
 * args (a deferred handler takes references to what it keeps). */
#define API_DEFERRED 1
typedef int api_handler_fn(struct api_ctx *ctx, struct value **args,
                           struct value **ret_result);

/* Records the failure [CODE, params...]; the number of string parameters
 * must match the error's definition.  Always returns -1. */
int api_fail(struct api_ctx *ctx, int err, ...);
/* Variant taking a NULL-terminated array of strings. */
int api_failv(struct api_ctx *ctx, int err, const char *const *params,
              size_t n);
int api_fail_internal(struct api_ctx *ctx, const char *fmt, ...)
    PRINTF_FMT(2, 3);
/* HANDLE_INVALID [class, ref]. */
int api_fail_handle(struct api_ctx *ctx, int cls, const char *ref);

/* Maps a failure from db_commit() (-EIO) to INTERNAL_ERROR. */
int api_commit(struct api_ctx *ctx, struct db_txn *txn);

/* Builds the wire record of a row (every field, computed ones included). */
struct value *api_row_record(const struct db_row *row);

/* Dispatches one call: finds the message, checks the parameter count,
 * the session and its roles, coerces the arguments and runs the handler.
 * The outcome goes to done, now or later from another thread.  An Async
 * call answers its task ref at once and runs on the task executor. */
void api_dispatch(struct xapi *x, const char *method, struct value *params,
                  const char *peer, api_done_fn *done, void *done_aux);

/* Deferred answers: a handler calls api_defer(), returns API_DEFERRED, and
 * later calls api_complete() exactly once from any thread (which takes the
 * references to result/error). */
struct api_deferred;
struct api_deferred *api_defer(struct api_ctx *ctx);
void api_complete(struct api_deferred *d, struct value *result,
                  struct value *error);

/* Called after every call that ran its handler (not deferred ones, which
 * report through api_complete), with its arguments and outcome, and for a
 * call refused by RBAC with args NULL; the audit log hangs here.  NULL
 * when nobody listens. */
typedef void api_call_hook_fn(struct api_ctx *ctx, struct value **args,
                              const struct value *result,
                              const struct value *error);
extern api_call_hook_fn *api_call_hook;
/* Called before the handler of every call, with its coerced arguments
 * (the audit log notes what the call may remove: the name labels of the
 * objects it names, the originator of its session).  NULL when nobody
 * listens. */
#define API_HAVE_CALL_BEGIN_HOOK 1
typedef void api_call_begin_hook_fn(struct api_ctx *ctx, struct value **args);
extern api_call_begin_hook_fn *api_call_begin_hook;

/* Tasks (task.c). */
int task_create_for_call(struct api_ctx *ctx, char *ret_ref);
void task_submit(struct xapi *x, void (*fn)(void *aux), void *aux);
void task_started(struct xapi *x, const char *task_ref);
void task_complete_ref(const char *task_ref, struct value *result,
                       struct value *error);
int task_executor_start(struct xapi *x, size_t n_threads);
void task_executor_stop(struct xapi *x);

/* The HTTP handler for the RPC endpoints (POST / and /RPC2 for XML-RPC,
 * /jsonrpc and /json for JSON-RPC, OPTIONS for CORS); aux is the struct
 * xapi.  Matches http_handler_fn. */
struct http_exchange;
void rpc_http_handler(struct http_exchange *hx, void *aux);

/* Handler registry (handlers.c): every module with hand-written messages
 * exports a table ended by { NULL, NULL }. */
struct api_handler_entry {
    const char *name;           /* "VM.destroy" */
    api_handler_fn *fn;
};
extern const struct api_handler_entry events_handlers[];  /* events.c */
extern const struct api_handler_entry rbac_handlers[];    /* rbac.c */
extern const struct api_handler_entry lifecycle_handlers[]; /* lifecycle.c */
extern const struct api_handler_entry vm_handlers[];      /* vm.c */
extern const struct api_handler_entry host_handlers[];    /* host.c */
extern const struct api_handler_entry vmops_handlers[];   /* vm-ops.c */
extern const struct api_handler_entry vmsnap_handlers[];  /* vm-snapshot.c */
api_handler_fn *api_find_handler(const char *name);
/* Runs the generic implementation of a generated message. */
int api_generic(struct api_ctx *ctx, struct value **args,
                struct value **ret_result);

/* Sessions (session.c). */
struct session_table *session_table_create(void);
void session_table_destroy(struct session_table *t);
/* Finds a live session and marks it active; returns a reference. */
struct session *session_lookup(struct xapi *x, const char *ref);
void session_unref(struct session *s);
struct session *session_dup(struct session *s);    /* a new reference */
const char *session_ref(const struct session *s);
unsigned session_roles(const struct session *s);
bool session_is_superuser(const struct session *s);
const char *session_user(const struct session *s);
/* Expires idle sessions; called periodically. */
void session_expire(struct xapi *x);
/* Sets root's password hash from a clear-text password. */
int session_set_root_password(struct xapi *x, const char *password,
                              char **ret_err);

/* Events (events.c): event.from, inject, the legacy register/next, fed by
 * the database's commit hook.  Started before the listeners. */
int events_init(struct xapi *x);
void events_shutdown(struct xapi *x);

/* RBAC and external authentication (rbac.c): the roles and their
 * permissions, subjects, PAM.  rbac_init creates the role rows. */
int rbac_init(struct xapi *x);

/* Who an external login turned out to be (see rbac_login). */
struct rbac_identity {
    char *sid;                  /* the user's subject identifier, "u1000" */
    char **subjects;            /* refs of the subjects granting access, */
    size_t n_subjects;          /* the user's own first */
    unsigned roles;             /* union of their roles (ROLE_* bits) */
    struct value *permissions;  /* string set: session.rbac_permissions */
};
/* Authenticates a user other than the local root with the external
 * authentication service (PAM) and authorizes them through the subjects
 * of the user and of its groups.  Returns 0 with *ret filled (release it
 * with rbac_identity_clear), or -1 after api_fail():
 * SESSION_AUTHENTICATION_FAILED (also while the name is throttled after
 * repeated failures) or RBAC_PERMISSION_DENIED (subjects without roles). */
int rbac_login(struct api_ctx *ctx, const char *user, const char *password,
               struct rbac_identity *ret);
void rbac_identity_clear(struct rbac_identity *id);
/* Ends the sessions of external users that lost their access: all of them
 * when external authentication is off, else those whose subjects are all
 * gone (session.c). */
void session_revalidate_external(struct xapi *x);

/* Audit log (audit.c): every call that changes something, and every
 * login, appended to STATE_DIR/audit.log as a hash chain. */
int audit_init(struct xapi *x);
void audit_shutdown(struct xapi *x);
void audit_login(struct xapi *x, const char *user, const char *originator,
                 const char *peer, bool ok);
/* GET /console?ref=...&session_id=... (console.c) */
void console_http_handler(struct http_exchange *hx, struct xapi *x);

/* PUT /import_raw_vdi, GET /export_raw_vdi (vdi-io.c). */
void vdi_io_http_handler(struct http_exchange *hx, struct xapi *x);
/* GET /export, PUT /import: VMs in the XVA format (xva.c). */
void xva_http_handler(struct http_exchange *hx, struct xapi *x);

/* GET /audit_log?session_id=...&since=... */
void audit_http_handler(struct http_exchange *hx, struct xapi *x);

/* VM power operations (lifecycle.c): hooks the provider's updates and
 * brings the database in line with the domains that exist. */
int lifecycle_init(struct xapi *x);
void lifecycle_shutdown(struct xapi *x);
extern int64_t lifecycle_shutdown_timeout_ms;
/* allowed_operations of a VM in that state (VM.create, templates), and
 * their recomputation inside a transaction. */
struct value *lifecycle_allowed_ops(const char *power, bool template,
                                    bool control);
void lifecycle_refresh_allowed(struct db_txn *txn, const char *ref,
                               bool busy);
/* Device operations (vm-ops.c) exclude power operations on the same VM:
 * begin fails (-EBUSY) while one runs and gives the VM's domid; power
 * operations answer OTHER_OPERATION_IN_PROGRESS while devices change. */
int lifecycle_device_op_begin(const char *ref, uint32_t *ret_domid);
void lifecycle_device_op_end(const char *ref);
/* Recomputes allowed_operations of the VM's VBDs and VIFs (vm-ops.c). */
void vmops_refresh_devices(struct db_txn *txn, const char *vm_ref);

/* The host (host.c): host_tick() keeps its run-time fields current and
 * moves a reboot or shutdown on (main loop, every second);
 * host_assert_can_boot() is VM.start's check of the host (lifecycle.c). */
void host_tick(struct xapi *x);
int host_assert_can_boot(struct api_ctx *ctx, const char *host_ref);

/* The default templates (templates.c), created on every start if
 * missing. */
int templates_ensure(struct xapi *x);

/* First start (firstboot.c): creates the pool, this host and its
 * records, and the control domain when the database is empty; on every
 * start refreshes what the host reports. */
int firstboot_init(struct xapi *x, char **ret_err);

extern api_handler_fn api_vm_destroy;
extern api_handler_fn api_vm_clone;
extern api_handler_fn api_vm_copy;
extern api_handler_fn api_task_create;
extern api_handler_fn api_task_destroy;
extern api_handler_fn api_task_cancel;
extern api_handler_fn api_task_set_status;
extern api_handler_fn api_task_set_progress_msg;
extern api_handler_fn api_task_set_result;
extern api_handler_fn api_task_set_error_info;

/* For long work running as a task: report progress (0..1) and check at
 * safe points whether the client asked to cancel (then fail with
 * TASK_CANCELLED [task]).  No-ops outside a task. */
void api_task_set_progress(struct api_ctx *ctx, double progress);
bool api_task_cancelled(struct api_ctx *ctx);
/* Steps of a long operation as subtasks (no-ops outside a task); ref
 * must hold 48 bytes.  api_subtask_end records success, or the error. */
void api_subtask_begin(struct api_ctx *ctx, const char *label, char *ret_ref);
void api_subtask_end(struct api_ctx *ctx, const char *ref,
                     const struct value *error);
void task_session_ended(struct xapi *x, const char *session);
extern api_handler_fn api_session_login_with_password;
extern api_handler_fn api_session_logout;
extern api_handler_fn api_session_change_password;
extern api_handler_fn api_session_get_all_subject_identifiers;
extern api_handler_fn api_session_logout_subject_identifier;
extern api_handler_fn api_session_local_logout;

#endif
