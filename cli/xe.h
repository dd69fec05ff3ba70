/* xe.h — declarations shared by the modules of the xe command-line client.
 *
 * xe is a thin client: it parses `xe COMMAND key=value --flag` in
 * XenServer's syntax, makes XenAPI calls over XML-RPC (xe-rpc.c: HTTP on the
 * daemon's Unix socket, or TCP with or without TLS), and prints records in
 * XenServer's layout (xe-records.c).  The class and field tables are
 * generated from idl/ (gen-xe-classes.py -> xe-classes-gen.c); the command
 * table is hand-written (xe-commands.c) and the daily operations live in
 * xe-ops.c. */
#ifndef XE_H
#define XE_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"
#include "value.h"

/* ---- the datamodel, as generated from idl/ ---- */

enum xe_kind {
    XE_STRING, XE_INT, XE_FLOAT, XE_BOOL, XE_DATETIME, XE_ENUM, XE_REF,
    XE_SET, XE_MAP, XE_OTHER,
};

struct xe_field {
    const char *api;            /* "name_label" */
    const char *xe;             /* "name-label" */
    enum xe_kind kind;
    enum xe_kind elem;          /* of a set, or the value of a map */
    const char *ref_class;      /* API class of a ref (or set of refs) */
    bool rw;                    /* qualifier RW: settable */
};

struct xe_class {
    const char *api;            /* "VM" */
    const char *xe;             /* "vm" */
    const struct xe_field *fields;
    size_t n_fields;
    bool listable;              /* has get_all_records */
};

extern const struct xe_class xe_classes[];
extern const size_t xe_n_classes;

/* Error codes and their parameter names ('|'-separated), sorted by code. */
struct xe_error {
    const char *code;
    const char *params;
};

extern const struct xe_error xe_errors[];
extern const size_t xe_n_errors;

const struct xe_class *xe_class_by_api(const char *api);
const struct xe_class *xe_class_by_xe(const char *xe);
const struct xe_field *xe_field_by_xe(const struct xe_class *cls,
                                      const char *xe_name);

/* ---- arguments ---- */

/* The command line after the global options: key=value pairs, with
 * --flag and -flag turned into flag=true as XenServer's parser does. */
struct xe_arg {
    char *key;
    char *value;
    bool used;
};

struct xe_args {
    struct xe_arg *v;
    size_t n;
    const struct xe_cmd *cmd;   /* whose parameters are not field filters */
};

const char *xe_arg_get(struct xe_args *args, const char *key);
bool xe_arg_flag(struct xe_args *args, const char *key);

/* ---- the connection ---- */

struct xe_conn;

struct xe_config {
    char *server;               /* NULL: the local Unix socket */
    char *socket_path;
    int port;                   /* 0: 443 with TLS, 80 without */
    bool nossl;
    char *username;
    char *password;
    bool debug;
};

/* Opens the connection and logs in.  On failure prints why on stderr and
 * returns a negative value. */
int xe_connect(const struct xe_config *cfg, struct xe_conn **ret_conn);
void xe_disconnect(struct xe_conn *conn);       /* logs out; accepts NULL */

/* Calls method(session, params...) and returns its Value.  On a XenAPI
 * failure prints the error on stderr (once, in readable form) and returns
 * -1; *ret_value is set only on success.  params may be NULL (no extra
 * parameters) and is not consumed. */
int xe_call(struct xe_conn *conn, const char *method,
            const struct value *params, struct value **ret_value);
/* Convenience: params are NULL-terminated strings. */
int xe_callv(struct xe_conn *conn, const char *method,
             struct value **ret_value, ...) __attribute__((sentinel));
/* Waits for a task to finish, drawing a progress bar on a terminal when
 * show_progress; returns its result (decoded) or -1 after printing the
 * error. */
int xe_wait_task(struct xe_conn *conn, const char *task, bool show_progress,
                 struct value **ret_result);
/* HTTP transfers of /import, /export, /import_raw_vdi, /export_raw_vdi:
 * query is the part after '?' (without session_id, which is added).
 * Streams the file; returns 0 or -1 after printing why. */
int xe_http_put_file(struct xe_conn *conn, const char *path,
                     const char *query, const char *filename, bool progress);
int xe_http_get_file(struct xe_conn *conn, const char *path,
                     const char *query, const char *filename, bool progress);
const char *xe_session(const struct xe_conn *conn);

/* ---- records and selectors (xe-records.c) ---- */

/* Prints an error in XenServer's readable form. */
void xe_print_api_error(const struct value *error_description);

/* Resolves refs to uuids (and name labels) with a cache. */
const char *xe_ref_uuid(struct xe_conn *conn, const char *cls,
                        const char *ref);

/* The objects a command acts on, chosen by uuid=, <class>=name-or-uuid and
 * field filters; with several matches, --multiple is required.  Returns
 * -1 after printing why. */
int xe_select(struct xe_conn *conn, const struct xe_class *cls,
              const char *selector_key, struct xe_args *args,
              bool allow_multiple, char ***ret_refs, size_t *ret_n);
/* Finds the ref of one object by uuid (or name label when by_name). */
int xe_lookup(struct xe_conn *conn, const char *api_class, const char *key,
              bool by_name, char **ret_ref);

void xe_free_strv(char **v, size_t n);

/* ---- commands ---- */

struct xe_cmd_ctx {
    struct xe_conn *conn;
    struct xe_args *args;
    const struct xe_cmd *cmd;
    const struct xe_class *cls;     /* generated class commands */
    const char *where;              /* the view's query: vm, template... */
    bool minimal;
};

typedef int xe_handler_fn(struct xe_cmd_ctx *ctx);

struct xe_cmd {
    const char *name;
    xe_handler_fn *handler;     /* NULL: in the reference, not built yet */
    const char *reqd;           /* comma-separated parameter names */
    const char *optn;
    const char *help;
    unsigned flags;
};

#define XE_CMD_HIDDEN   1u
#define XE_CMD_VM_SEL   2u      /* takes vm=, uuid= and VM field filters */
#define XE_CMD_HOST_SEL 4u
#define XE_CMD_SR_SEL   8u
#define XE_CMD_FIELDS   16u     /* takes field=value conditions (event-wait) */

extern const struct xe_cmd xe_commands[];
extern const size_t xe_n_commands;

const struct xe_cmd *xe_command_find(const char *name);

/* Generated class commands: <class>-list, -param-list, -param-get,
 * -param-set, -param-add, -param-remove, -param-clear. */
int xe_class_command(const char *name, const struct xe_class **ret_cls,
                     const char **ret_op, const char **ret_where);
int xe_run_class_command(struct xe_cmd_ctx *ctx, const char *op);
void xe_class_command_help(const struct xe_class *cls, const char *op);

/* Record printing, used by operations too. */
int xe_print_records(struct xe_conn *conn, const struct xe_class *cls,
                     struct value *records, const char *params,
                     bool minimal);
/* Prints a list of strings the way XenServer's --minimal does, or one per
 * line. */
void xe_print_minimal_list(char **items, size_t n);

/* The operations (xe-ops.c). */
xe_handler_fn
    xe_op_simple, xe_op_vm_migrate, xe_op_snapshot_export_to_template, xe_op_template_export, xe_op_appliance_create, xe_op_appliance_destroy, xe_op_audit_log_get,
    xe_op_cd_list, xe_op_event_wait, xe_op_host_disable, xe_op_host_enable,
    xe_op_message_create, xe_op_message_destroy, xe_op_network_create,
    xe_op_network_destroy, xe_op_pbd_create, xe_op_pbd_destroy,
    xe_op_pbd_plug, xe_op_pbd_unplug, xe_op_pool_sync_database,
    xe_op_secret_create, xe_op_secret_destroy,
    xe_op_session_subject_identifier_list, xe_op_snapshot_clone,
    xe_op_snapshot_copy, xe_op_snapshot_destroy, xe_op_snapshot_disk_list,
    xe_op_snapshot_revert, xe_op_snapshot_uninstall, xe_op_sr_create,
    xe_op_sr_destroy, xe_op_sr_forget, xe_op_sr_scan, xe_op_sr_update,
    xe_op_subject_add, xe_op_subject_remove, xe_op_subject_role_add,
    xe_op_subject_role_remove, xe_op_task_cancel, xe_op_template_uninstall,
    xe_op_user_password_change, xe_op_vbd_create, xe_op_vbd_destroy,
    xe_op_vbd_eject, xe_op_vbd_insert, xe_op_vbd_plug, xe_op_vbd_unplug,
    xe_op_vdi_clone, xe_op_vdi_copy, xe_op_vdi_create, xe_op_vdi_destroy,
    xe_op_vdi_export, xe_op_vdi_forget, xe_op_vdi_import, xe_op_vdi_resize,
    xe_op_vdi_snapshot, xe_op_vif_create, xe_op_vif_destroy, xe_op_vif_plug,
    xe_op_vif_unplug, xe_op_vm_cd_add, xe_op_vm_cd_eject, xe_op_vm_cd_insert,
    xe_op_vm_cd_list, xe_op_vm_cd_remove, xe_op_vm_checkpoint, xe_op_vm_clone,
    xe_op_vm_copy, xe_op_vm_destroy, xe_op_vm_disk_add, xe_op_vm_disk_list,
    xe_op_vm_disk_remove, xe_op_vm_export, xe_op_vm_import, xe_op_vm_install,
    xe_op_vm_memory_dynamic_range_set, xe_op_vm_memory_limits_set,
    xe_op_vm_memory_set, xe_op_vm_memory_static_range_set,
    xe_op_vm_memory_target_set, xe_op_vm_pause, xe_op_vm_reboot,
    xe_op_vm_reset_powerstate, xe_op_vm_resume, xe_op_vm_shutdown,
    xe_op_vm_snapshot, xe_op_vm_start, xe_op_vm_suspend, xe_op_vm_uninstall,
    xe_op_vm_unpause, xe_op_vm_vif_list;

/* True if key is a parameter of cmd (or a common flag), so not a field
 * filter. */
bool xe_is_command_param(const struct xe_cmd *cmd, const char *key);

/* Reports that a required parameter is missing and returns -1. */
int xe_missing(const char *param);

#endif
