/* xe-ops.c — the hand-written xe commands: the daily operations on VMs,
 * disks, storage, networks, tasks, events and users, each made of the
 * XenAPI calls XenServer's own xe makes for it (vm-install is clone +
 * provision, vm-export is GET /export, and so on).
 *
 * Every handler returns 0 or -1 after printing why on stderr; what it
 * creates it prints as a uuid on stdout, as scripts expect. */
#include <config.h>
#include "xe.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ---- */

static const struct xe_class *
cls_of(const char *api)
{
    return xe_class_by_api(api);
}

/* Calls method(ref, extra params...) and drops the result. */
static int
call_ref(struct xe_conn *conn, const char *method, const char *ref, ...)
{
    struct value *params = value_array(4), *v = NULL, *p;
    va_list ap;
    int rc;

    value_array_append(params, value_string(ref));
    va_start(ap, ref);
    while ((p = va_arg(ap, struct value *))) {
        value_array_append(params, p);
    }
    va_end(ap);
    rc = xe_call(conn, method, params, &v);
    value_unref(params);
    value_unref(v);
    return rc;
}

/* Calls method(params...) whose result is a ref and prints its uuid. */
static int
call_print_uuid(struct xe_conn *conn, const char *method, const char *cls,
                struct value *params, char **ret_ref)
{
    struct value *v = NULL;
    int rc = xe_call(conn, method, params, &v);

    value_unref(params);
    if (rc) {
        return -1;
    }
    if (value_is_string(v)) {
        printf("%s\n", xe_ref_uuid(conn, cls, v->u.str.s));
        if (ret_ref) {
            *ret_ref = xstrdup(v->u.str.s);
        }
    }
    value_unref(v);
    return 0;
}

static struct value *
params_of(int n, ...)
{
    struct value *params = value_array((size_t)n);
    va_list ap;

    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        value_array_append(params, va_arg(ap, struct value *));
    }
    va_end(ap);
    return params;
}

static struct value *
str(const char *s)
{
    return value_string(s ? s : "");
}

static const char *
vm_uuid_of(struct xe_conn *conn, const char *ref)
{
    return xe_ref_uuid(conn, "VM", ref);
}

/* Looks up ref by uuid, or the default when uuid is NULL. */
static int
ref_arg(struct xe_cmd_ctx *ctx, const char *key, const char *cls,
        char **ret_ref)
{
    const char *uuid = xe_arg_get(ctx->args, key);

    if (!uuid) {
        return xe_missing(key);
    }
    return xe_lookup(ctx->conn, cls, uuid, false, ret_ref);
}

/* Parses a size with an optional unit (XenServer accepts 10GiB, 512MiB,
 * 4G, plain bytes). */
static int
parse_size(const char *text, int64_t *ret)
{
    char *end;
    double v = strtod(text, &end);
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {
        { "", 1 }, { "B", 1 }, { "KiB", 1LL << 10 }, { "MiB", 1LL << 20 },
        { "GiB", 1LL << 30 }, { "TiB", 1LL << 40 }, { "K", 1LL << 10 },
        { "M", 1LL << 20 }, { "G", 1LL << 30 }, { "T", 1LL << 40 },
        { "KB", 1000 }, { "MB", 1000000 }, { "GB", 1000000000 },
        { "TB", 1000000000000LL },
    };

    if (end == text || v < 0) {
        fprintf(stderr, "Error: '%s' is not a size\n", text);
        return -1;
    }
    for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
        if (!strcmp(end, units[i].unit)) {
            *ret = (int64_t)(v * (double)units[i].mult);
            return 0;
        }
    }
    fprintf(stderr, "Error: '%s' is not a size (use bytes, KiB, MiB, GiB or "
            "TiB)\n", text);
    return -1;
}

/* Gathers map arguments given as prefix:key=value (device-config:path=/x). */
static struct value *
map_args(struct xe_args *args, const char *prefix)
{
    struct value *m = value_struct(4);
    size_t n = strlen(prefix);

    for (size_t i = 0; i < args->n; i++) {
        struct xe_arg *a = &args->v[i];
        if (!strncmp(a->key, prefix, n) && a->key[n] == ':' && a->key[n + 1]) {
            a->used = true;
            value_struct_put(m, a->key + n + 1, value_string(a->value));
        }
    }
    return m;
}

static bool
flag(struct xe_cmd_ctx *ctx, const char *name)
{
    return xe_arg_flag(ctx->args, name);
}

static struct value *
bool_arg(struct xe_cmd_ctx *ctx, const char *name, bool dflt)
{
    const char *v = xe_arg_get(ctx->args, name);
    if (!v) {
        return dflt ? value_true() : value_false();
    }
    return xe_arg_flag(ctx->args, name) ? value_true() : value_false();
}

/* The pool's default SR, or the SR named by sr-uuid / sr-name-label. */
static int
choose_sr(struct xe_cmd_ctx *ctx, bool required, char **ret_ref)
{
    const char *uuid = xe_arg_get(ctx->args, "sr-uuid");
    const char *name = xe_arg_get(ctx->args, "sr-name-label");
    struct value *pools = NULL, *sr;
    int rc = -1;

    if (uuid) {
        return xe_lookup(ctx->conn, "SR", uuid, false, ret_ref);
    }
    if (name) {
        return xe_lookup(ctx->conn, "SR", name, true, ret_ref);
    }
    if (xe_callv(ctx->conn, "pool.get_all_records", &pools, NULL)) {
        return -1;
    }
    sr = pools->type == VALUE_STRUCT && pools->u.st.n
         ? value_struct_get(pools->u.st.m[0].v, "default_SR") : NULL;
    if (value_is_string(sr) && strcmp(sr->u.str.s, "OpaqueRef:NULL")) {
        *ret_ref = xstrdup(sr->u.str.s);
        rc = 0;
    } else if (!required) {
        *ret_ref = xstrdup("OpaqueRef:NULL");
        rc = 0;
    } else {
        fprintf(stderr, "Error: the pool has no default SR: give sr-uuid=\n");
    }
    value_unref(pools);
    return rc;
}

/* The host for commands that need one: host-uuid= or the pool master. */
static int
choose_host(struct xe_cmd_ctx *ctx, char **ret_ref)
{
    const char *uuid = xe_arg_get(ctx->args, "host-uuid");
    struct value *pools = NULL, *m;
    int rc = -1;

    if (uuid) {
        return xe_lookup(ctx->conn, "host", uuid, false, ret_ref);
    }
    if (xe_callv(ctx->conn, "pool.get_all_records", &pools, NULL)) {
        return -1;
    }
    m = pools->type == VALUE_STRUCT && pools->u.st.n
        ? value_struct_get(pools->u.st.m[0].v, "master") : NULL;
    if (value_is_string(m)) {
        *ret_ref = xstrdup(m->u.str.s);
        rc = 0;
    }
    value_unref(pools);
    return rc;
}

typedef int vm_op_fn(struct xe_cmd_ctx *ctx, const char *ref);

/* Runs op on every VM the selectors choose (vm=, uuid=, filters,
 * --multiple). */
static int
for_each_vm(struct xe_cmd_ctx *ctx, vm_op_fn *op)
{
    char **refs = NULL;
    size_t n = 0;
    int rc = 0;

    if (xe_select(ctx->conn, cls_of("VM"), "vm", ctx->args, true, &refs, &n)) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (op(ctx, refs[i])) {
            rc = -1;
        }
    }
    xe_free_strv(refs, n);
    return rc;
}

static int
for_each_host(struct xe_cmd_ctx *ctx, vm_op_fn *op)
{
    char **refs = NULL;
    size_t n = 0;
    int rc = 0;

    if (xe_select(ctx->conn, cls_of("host"), "host", ctx->args, true, &refs,
                  &n)) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (op(ctx, refs[i])) {
            rc = -1;
        }
    }
    xe_free_strv(refs, n);
    return rc;
}

/* One VM chosen by selectors; fails when several match. */
static int
one_vm(struct xe_cmd_ctx *ctx, char **ret_ref)
{
    char **refs = NULL;
    size_t n = 0;

    if (xe_select(ctx->conn, cls_of("VM"), "vm", ctx->args, false, &refs, &n)) {
        return -1;
    }
    *ret_ref = refs[0];
    refs[0] = NULL;
    xe_free_strv(refs, n);
    return 0;
}

/* Asks on a terminal; scripts pass --force. */
static bool
confirm(struct xe_cmd_ctx *ctx, const char *what)
{
    char line[16];

    if (flag(ctx, "force") || !isatty(STDIN_FILENO)) {
        return true;
    }
    printf("%s\nType 'yes' to continue\n", what);
    fflush(stdout);
    return fgets(line, sizeof line, stdin) && !strncmp(line, "yes", 3);
}

/* ---- VM power operations ---- */

static int
do_start(struct xe_cmd_ctx *ctx, const char *ref)
{
    const char *on = xe_arg_get(ctx->args, "on");
    bool paused = flag(ctx, "paused"), force = flag(ctx, "force");
    char *host = NULL;
    int rc;

    if (on) {
        if (xe_lookup(ctx->conn, "host", on, false, &host)
            && xe_lookup(ctx->conn, "host", on, true, &host)) {
            return -1;
        }
        rc = call_ref(ctx->conn, "VM.start_on", ref, value_string(host),
                      paused ? value_true() : value_false(),
                      force ? value_true() : value_false(), NULL);
        free(host);
        return rc;
    }
    return call_ref(ctx->conn, "VM.start", ref,
                    paused ? value_true() : value_false(),
                    force ? value_true() : value_false(), NULL);
}

int xe_op_vm_start(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_start); }

static int
do_shutdown(struct xe_cmd_ctx *ctx, const char *ref)
{
    return call_ref(ctx->conn, flag(ctx, "force") ? "VM.hard_shutdown"
                                                  : "VM.clean_shutdown",
                    ref, NULL);
}

int xe_op_vm_shutdown(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_shutdown); }

static int
do_reboot(struct xe_cmd_ctx *ctx, const char *ref)
{
    return call_ref(ctx->conn, flag(ctx, "force") ? "VM.hard_reboot"
                                                  : "VM.clean_reboot",
                    ref, NULL);
}

int xe_op_vm_reboot(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_reboot); }

static int
do_suspend(struct xe_cmd_ctx *ctx, const char *ref)
{
    return call_ref(ctx->conn, "VM.suspend", ref, NULL);
}

int xe_op_vm_suspend(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_suspend); }

static int
do_resume(struct xe_cmd_ctx *ctx, const char *ref)
{
    const char *on = xe_arg_get(ctx->args, "on");
    bool force = flag(ctx, "force");
    char *host = NULL;
    int rc;

    if (on) {
        if (xe_lookup(ctx->conn, "host", on, false, &host)
            && xe_lookup(ctx->conn, "host", on, true, &host)) {
            return -1;
        }
        rc = call_ref(ctx->conn, "VM.resume_on", ref, value_string(host),
                      value_false(), force ? value_true() : value_false(),
                      NULL);
        free(host);
        return rc;
    }
    return call_ref(ctx->conn, "VM.resume", ref, value_false(),
                    force ? value_true() : value_false(), NULL);
}

int xe_op_vm_resume(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_resume); }

static int
do_pause(struct xe_cmd_ctx *ctx, const char *ref)
{
    return call_ref(ctx->conn, "VM.pause", ref, NULL);
}

int xe_op_vm_pause(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_pause); }

static int
do_unpause(struct xe_cmd_ctx *ctx, const char *ref)
{
    return call_ref(ctx->conn, "VM.unpause", ref, NULL);
}

int xe_op_vm_unpause(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_unpause); }

static int
do_reset_powerstate(struct xe_cmd_ctx *ctx, const char *ref)
{
    return call_ref(ctx->conn, "VM.power_state_reset", ref, NULL);
}

int
xe_op_vm_reset_powerstate(struct xe_cmd_ctx *ctx)
{
    if (!flag(ctx, "force")) {
        fprintf(stderr, "Error: vm-reset-powerstate marks a VM halted without "
                "stopping it; add --force if you are sure\n");
        return -1;
    }
    return for_each_vm(ctx, do_reset_powerstate);
}

/* ---- VM copies ---- */

static int
set_description(struct xe_cmd_ctx *ctx, const char *ref)
{
    const char *d = xe_arg_get(ctx->args, "new-name-description");
    return d ? call_ref(ctx->conn, "VM.set_name_description", ref,
                        value_string(d), NULL) : 0;
}

/* VM.clone and VM.checkpoint: a new VM named new-name-label, its uuid
 * printed, its description set when new-name-description is given. */
static int
new_named_vm(struct xe_cmd_ctx *ctx, const char *ref, const char *method)
{
    const char *name = xe_arg_get(ctx->args, "new-name-label");
    char *new_ref = NULL;
    int rc;

    rc = call_print_uuid(ctx->conn, method, "VM",
                         params_of(2, str(ref), str(name)), &new_ref);
    if (rc == 0) {
        rc = set_description(ctx, new_ref);
    }
    free(new_ref);
    return rc;
}

static int
do_clone(struct xe_cmd_ctx *ctx, const char *ref)
{
    return new_named_vm(ctx, ref, "VM.clone");
}

int xe_op_vm_clone(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_clone); }

/* Copies run as a task so that a terminal shows their progress. */
static int
do_copy(struct xe_cmd_ctx *ctx, const char *ref)
{
    const char *name = xe_arg_get(ctx->args, "new-name-label");
    const char *sr_uuid = xe_arg_get(ctx->args, "sr-uuid");
    struct value *task = NULL, *result = NULL, *params;
    char *sr = NULL;
    int rc = -1;

    if (sr_uuid && xe_lookup(ctx->conn, "SR", sr_uuid, false, &sr)) {
        return -1;
    }
    params = params_of(3, str(ref), str(name), str(sr ? sr : "OpaqueRef:NULL"));
    rc = xe_call(ctx->conn, "Async.VM.copy", params, &task);
    value_unref(params);
    if (rc || !value_is_string(task)) {
        rc = -1;
        goto out;
    }
    rc = xe_wait_task(ctx->conn, task->u.str.s, true, &result);
    if (rc == 0 && value_is_string(result)) {
        printf("%s\n", vm_uuid_of(ctx->conn, result->u.str.s));
        rc = set_description(ctx, result->u.str.s);
    }
out:
    value_unref(task);
    value_unref(result);
    free(sr);
    return rc;
}

int xe_op_vm_copy(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_copy); }

static int
do_snapshot(struct xe_cmd_ctx *ctx, const char *ref)
{
    const char *name = xe_arg_get(ctx->args, "new-name-label");
    const char *ignore = xe_arg_get(ctx->args, "ignore-vdi-uuids");
    struct value *ignored = value_array(2);
    char *new_ref = NULL;
    int rc = -1;

    if (ignore) {
        char *copy = xstrdup(ignore), *save = NULL;
        for (char *u = strtok_r(copy, ",", &save); u;
             u = strtok_r(NULL, ",", &save)) {
            char *vdi = NULL;
            if (xe_lookup(ctx->conn, "VDI", u, false, &vdi)) {
                free(copy);
                value_unref(ignored);
                return -1;
            }
            value_array_append(ignored, value_string_take(vdi));
        }
        free(copy);
    }
    rc = call_print_uuid(ctx->conn, "VM.snapshot", "VM",
                         params_of(3, str(ref), str(name), ignored), &new_ref);
    if (rc == 0) {
        rc = set_description(ctx, new_ref);
    }
    free(new_ref);
    return rc;
}

int xe_op_vm_snapshot(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_snapshot); }

static int
do_checkpoint(struct xe_cmd_ctx *ctx, const char *ref)
{
    return new_named_vm(ctx, ref, "VM.checkpoint");
}

int xe_op_vm_checkpoint(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_checkpoint); }

/* The snapshot named by snapshot-uuid= or uuid=. */
static int
snapshot_arg(struct xe_cmd_ctx *ctx, const char *key2, char **ret_ref)
{
    const char *uuid = xe_arg_get(ctx->args, "snapshot-uuid");
    const char *u2 = xe_arg_get(ctx->args, key2);

    if (!uuid) {
        uuid = u2;
    }
    if (!uuid) {
        fprintf(stderr, "Error: give snapshot-uuid= or %s=\n", key2);
        return -1;
    }
    return xe_lookup(ctx->conn, "VM", uuid, false, ret_ref);
}

int
xe_op_snapshot_revert(struct xe_cmd_ctx *ctx)
{
    char *snap = NULL;
    int rc;

    if (snapshot_arg(ctx, "uuid", &snap)) {
        return -1;
    }
    rc = call_ref(ctx->conn, "VM.revert", snap, NULL);
    free(snap);
    return rc;
}

static int
clone_from(struct xe_cmd_ctx *ctx, const char *key, bool copy)
{
    char *snap = NULL;
    int rc;

    if (snapshot_arg(ctx, key, &snap)) {
        return -1;
    }
    rc = copy ? do_copy(ctx, snap) : do_clone(ctx, snap);
    free(snap);
    return rc;
}

int xe_op_snapshot_clone(struct xe_cmd_ctx *ctx) { return clone_from(ctx, "uuid", false); }
int xe_op_snapshot_copy(struct xe_cmd_ctx *ctx) { return clone_from(ctx, "uuid", true); }

/* ---- install and uninstall ---- */

/* Points every disk of the provisioning spec at the chosen SR, as
 * XenServer's vm-install does. */
static int
retarget_disks(struct xe_cmd_ctx *ctx, const char *vm, const char *sr)
{
    struct value *oc = NULL;
    const char *disks, *sr_uuid;
    struct ds out = DS_EMPTY;
    int rc = 0;

    if (xe_callv(ctx->conn, "VM.get_other_config", &oc, vm, NULL)) {
        return -1;
    }
    disks = value_struct_get_string(oc, "disks");
    if (!disks || !strcmp(sr, "OpaqueRef:NULL")) {
        goto out;
    }
    sr_uuid = xe_ref_uuid(ctx->conn, "SR", sr);
    for (const char *p = disks; *p;) {
        const char *at = strstr(p, "sr=\"");
        if (!at) {
            ds_put_cstr(&out, p);
            break;
        }
        ds_put(&out, p, (size_t)(at - p));
        ds_put_fmt(&out, "sr=\"%s\"", sr_uuid);
        at += 4;
        const char *end = strchr(at, '"');
        p = end ? end + 1 : at + strlen(at);
    }
    call_ref(ctx->conn, "VM.remove_from_other_config", vm,
             value_string("disks"), NULL);
    rc = call_ref(ctx->conn, "VM.add_to_other_config", vm,
                  value_string("disks"), value_string(out.s ? out.s : ""),
                  NULL);
out:
    ds_destroy(&out);
    value_unref(oc);
    return rc;
}

static int
find_template(struct xe_cmd_ctx *ctx, const char *key, char **ret_ref)
{
    struct value *v = NULL;
    char *ref = NULL;

    if (uuid_is_valid(key)) {
        return xe_lookup(ctx->conn, "VM", key, false, ret_ref);
    }
    if (xe_callv(ctx->conn, "VM.get_by_name_label", &v, key, NULL)) {
        return -1;
    }
    for (size_t i = 0; v->type == VALUE_ARRAY && i < v->u.arr.n; i++) {
        struct value *t = NULL;
        const char *r = v->u.arr.items[i]->u.str.s;
        if (xe_callv(ctx->conn, "VM.get_is_a_template", &t, r, NULL) == 0
            && t->type == VALUE_BOOL && t->u.b) {
            ref = xstrdup(r);
        }
        value_unref(t);
        if (ref) {
            break;
        }
    }
    value_unref(v);
    if (!ref) {
        fprintf(stderr, "Error: no template named '%s'\n", key);
        return -1;
    }
    *ret_ref = ref;
    return 0;
}

int
xe_op_vm_install(struct xe_cmd_ctx *ctx)
{
    const char *tmpl = xe_arg_get(ctx->args, "template");
    const char *name = xe_arg_get(ctx->args, "new-name-label");
    const char *bios = xe_arg_get(ctx->args, "copy-bios-strings-from");
    char *tref = NULL, *sr = NULL, *vm = NULL, *host = NULL;
    struct value *v = NULL;
    int rc = -1;

    if (!tmpl) {
        tmpl = xe_arg_get(ctx->args, "template-uuid");
    }
    if (!tmpl) {
        tmpl = xe_arg_get(ctx->args, "template-name-label");
    }
    if (!tmpl) {
        return xe_missing("template");
    }
    if (find_template(ctx, tmpl, &tref) || choose_sr(ctx, false, &sr)) {
        goto out;
    }
    if (xe_callv(ctx->conn, "VM.clone", &v, tref, name, NULL)) {
        goto out;
    }
    vm = xstrdup(v->u.str.s);
    if (retarget_disks(ctx, vm, sr)
        || call_ref(ctx->conn, "VM.provision", vm, NULL)) {
        /* Leave no half-made VM behind. */
        call_ref(ctx->conn, "VM.destroy", vm, NULL);
        goto out;
    }
    value_unref(v);
    v = NULL;
    if (xe_callv(ctx->conn, "VM.get_is_a_template", &v, vm, NULL) == 0
        && v->type == VALUE_BOOL && v->u.b) {
        call_ref(ctx->conn, "VM.set_is_a_template", vm, value_false(), NULL);
    }
    if (bios) {
        if (xe_lookup(ctx->conn, "host", bios, false, &host)
            || call_ref(ctx->conn, "VM.copy_bios_strings", vm,
                        value_string(host), NULL)) {
            goto out;
        }
    }
    printf("%s\n", vm_uuid_of(ctx->conn, vm));
    rc = 0;
out:
    value_unref(v);
    free(tref);
    free(sr);
    free(vm);
    free(host);
    return rc;
}

/* Destroys a VM and the disks only it uses (not CDs), as XenServer's
 * vm-uninstall does. */
static int
uninstall_vm(struct xe_cmd_ctx *ctx, const char *ref)
{
    struct value *rec = NULL, *vbds;
    char **vdis = NULL;
    size_t n = 0;
    const char *ps;
    int rc = -1;

    if (xe_callv(ctx->conn, "VM.get_record", &rec, ref, NULL)) {
        return -1;
    }
    ps = value_struct_get_string(rec, "power_state");
    if (ps && strcmp(ps, "Halted")) {
        if (!flag(ctx, "force") && isatty(STDIN_FILENO)) {
            fprintf(stderr, "Error: the VM is %s: shut it down or add "
                    "--force\n", ps);
            goto out;
        }
        if (call_ref(ctx->conn, "VM.hard_shutdown", ref, NULL)) {
            goto out;
        }
    }
    vbds = value_struct_get(rec, "VBDs");
    vdis = xcalloc(vbds && vbds->type == VALUE_ARRAY ? vbds->u.arr.n + 1 : 1,
                   sizeof *vdis);
    for (size_t i = 0; vbds && vbds->type == VALUE_ARRAY && i < vbds->u.arr.n;
         i++) {
        struct value *vbd = NULL;
        if (xe_callv(ctx->conn, "VBD.get_record", &vbd,
                     vbds->u.arr.items[i]->u.str.s, NULL) == 0) {
            const char *type = value_struct_get_string(vbd, "type");
            const char *vdi = value_struct_get_string(vbd, "VDI");
            if (type && !strcmp(type, "Disk") && vdi
                && strcmp(vdi, "OpaqueRef:NULL")) {
                vdis[n++] = xstrdup(vdi);
            }
        }
        value_unref(vbd);
    }
    if (call_ref(ctx->conn, "VM.destroy", ref, NULL)) {
        goto out;
    }
    rc = 0;
    for (size_t i = 0; i < n; i++) {
        struct value *users = NULL;
        /* A disk still attached elsewhere (a shared disk) stays. */
        if (xe_callv(ctx->conn, "VDI.get_VBDs", &users, vdis[i], NULL) == 0
            && users->type == VALUE_ARRAY && users->u.arr.n == 0) {
            if (call_ref(ctx->conn, "VDI.destroy", vdis[i], NULL)) {
                rc = -1;
            }
        }
        value_unref(users);
    }
out:
    xe_free_strv(vdis, n);
    value_unref(rec);
    return rc;
}

int
xe_op_vm_uninstall(struct xe_cmd_ctx *ctx)
{
    if (!confirm(ctx, "This will destroy the VM and its disks.")) {
        return -1;
    }
    return for_each_vm(ctx, uninstall_vm);
}

static int
uninstall_by_key(struct xe_cmd_ctx *ctx, const char *key)
{
    char *ref = NULL;
    int rc;

    if (snapshot_arg(ctx, key, &ref)) {
        return -1;
    }
    if (!confirm(ctx, "This will destroy the object and its disks.")) {
        free(ref);
        return -1;
    }
    rc = uninstall_vm(ctx, ref);
    free(ref);
    return rc;
}

int xe_op_snapshot_uninstall(struct xe_cmd_ctx *ctx) { return uninstall_by_key(ctx, "uuid"); }

int
xe_op_template_uninstall(struct xe_cmd_ctx *ctx)
{
    char *ref = NULL;
    int rc;

    if (ref_arg(ctx, "template-uuid", "VM", &ref)) {
        return -1;
    }
    rc = confirm(ctx, "This will destroy the template and its disks.")
         ? uninstall_vm(ctx, ref) : -1;
    free(ref);
    return rc;
}

int
xe_op_snapshot_destroy(struct xe_cmd_ctx *ctx)
{
    char *ref = NULL;
    int rc;

    if (snapshot_arg(ctx, "uuid", &ref)) {
        return -1;
    }
    rc = call_ref(ctx->conn, "VM.destroy", ref, NULL);
    free(ref);
    return rc;
}

/* ---- export and import ---- */

static int
do_export(struct xe_cmd_ctx *ctx, const char *ref)
{
    const char *file = xe_arg_get(ctx->args, "filename");
    const char *compress = xe_arg_get(ctx->args, "compress");
    char *query;
    int rc;

    xe_arg_get(ctx->args, "preserve-power-state");
    query = xasprintf("uuid=%s%s", vm_uuid_of(ctx->conn, ref),
                      compress && (!strcmp(compress, "true")
                                   || !strcmp(compress, "gzip")
                                   || !strcmp(compress, "zstd"))
                      ? "&use_compression=true" : "");
    rc = xe_http_get_file(ctx->conn, "/export", query, file, true);
    free(query);
    return rc;
}

int
xe_op_vm_export(struct xe_cmd_ctx *ctx)
{
    char *ref = NULL;
    int rc;

    if (one_vm(ctx, &ref)) {
        return -1;
    }
    rc = do_export(ctx, ref);
    free(ref);
    return rc;
}

/* vm-migrate within the pool: VM.pool_migrate to host= (name or uuid) or
 * host-uuid=.  Migration to another pool (remote-master=) needs
 * VM.migrate_send and is not built yet. */
static int
do_migrate(struct xe_cmd_ctx *ctx, const char *ref)
{
    const char *host = xe_arg_get(ctx->args, "host");
    const char *host_uuid = xe_arg_get(ctx->args, "host-uuid");
    struct value *opts = value_struct(1);
    char *h = NULL;
    int rc = -1;

    xe_arg_get(ctx->args, "live");
    if (host_uuid) {
        if (xe_lookup(ctx->conn, "host", host_uuid, false, &h)) {
            goto out;
        }
    } else if (host) {
        if ((uuid_is_valid(host) ? xe_lookup(ctx->conn, "host", host, false, &h)
                                 : xe_lookup(ctx->conn, "host", host, true, &h))) {
            goto out;
        }
    } else {
        fprintf(stderr, "Error: give host= or host-uuid=\n");
        goto out;
    }
    if (flag(ctx, "live")) {
        value_struct_put(opts, "live", value_string("true"));
    }
    rc = call_ref(ctx->conn, "VM.pool_migrate", ref, value_string(h), opts,
                  NULL);
    opts = NULL;
out:
    value_unref(opts);
    free(h);
    return rc;
}

int
xe_op_vm_migrate(struct xe_cmd_ctx *ctx)
{
    if (xe_arg_get(ctx->args, "remote-master")) {
        fprintf(stderr, "Error: migration to another pool (remote-master=) is "
                "not supported yet by this xe\n");
        return 2;
    }
    return for_each_vm(ctx, do_migrate);
}

static int
export_by_key(struct xe_cmd_ctx *ctx, const char *key)
{
    char *ref = NULL;
    int rc;

    if (ref_arg(ctx, key, "VM", &ref)) {
        return -1;
    }
    rc = do_export(ctx, ref);
    free(ref);
    return rc;
}

int xe_op_snapshot_export_to_template(struct xe_cmd_ctx *ctx) { return export_by_key(ctx, "snapshot-uuid"); }
int xe_op_template_export(struct xe_cmd_ctx *ctx) { return export_by_key(ctx, "template-uuid"); }

int
xe_op_vm_import(struct xe_cmd_ctx *ctx)
{
    const char *file = xe_arg_get(ctx->args, "filename");
    bool preserve = flag(ctx, "preserve"), force = flag(ctx, "force");
    struct value *task = NULL, *result = NULL;
    char *sr = NULL, *query = NULL;
    int rc = -1;

    if (!file) {
        return xe_missing("filename");
    }
    if (choose_sr(ctx, false, &sr)) {
        return -1;
    }
    /* Our own task carries the result: the refs of the VMs made. */
    if (xe_callv(ctx->conn, "task.create", &task, "xe vm-import", file, NULL)) {
        goto out;
    }
    query = xasprintf("task_id=%s%s%s%s%s", task->u.str.s,
                      strcmp(sr, "OpaqueRef:NULL") ? "&sr_id=" : "",
                      strcmp(sr, "OpaqueRef:NULL") ? sr : "",
                      preserve ? "&restore=true" : "",
                      force ? "&force=true" : "");
    if (xe_http_put_file(ctx->conn, "/import", query, file, true)) {
        /* The server may never have seen the task: do not wait on it. */
        xe_callv(ctx->conn, "task.destroy", NULL, task->u.str.s, NULL);
        goto out;
    }
    if (xe_wait_task(ctx->conn, task->u.str.s, false, &result)) {
        goto out;
    }
    for (size_t i = 0; result->type == VALUE_ARRAY && i < result->u.arr.n; i++) {
        printf("%s\n", vm_uuid_of(ctx->conn, result->u.arr.items[i]->u.str.s));
    }
    rc = 0;
out:
    value_unref(task);
    value_unref(result);
    free(sr);
    free(query);
    return rc;
}

/* ---- VM disks and CDs ---- */

static struct value *
vbd_record(const char *vm, const char *vdi, const char *device, bool bootable,
           const char *type, const char *mode, bool empty, bool unpluggable)
{
    struct value *r = value_struct(16);

    value_struct_put(r, "VM", str(vm));
    value_struct_put(r, "VDI", str(vdi));
    value_struct_put(r, "userdevice", str(device));
    value_struct_put(r, "bootable", bootable ? value_true() : value_false());
    value_struct_put(r, "mode", str(mode));
    value_struct_put(r, "type", str(type));
    value_struct_put(r, "empty", empty ? value_true() : value_false());
    value_struct_put(r, "unpluggable", unpluggable ? value_true() : value_false());
    value_struct_put(r, "other_config", value_empty_struct());
    value_struct_put(r, "qos_algorithm_type", value_empty_string());
    value_struct_put(r, "qos_algorithm_params", value_empty_struct());
    return r;
}

/* Plugs a new device into a running VM, as XenServer does. */
static int
plug_if_running(struct xe_conn *conn, const char *vm, const char *method,
                const char *dev)
{
    struct value *ps = NULL;
    int rc = 0;

    if (xe_callv(conn, "VM.get_power_state", &ps, vm, NULL) == 0
        && value_is_string(ps) && !strcmp(ps->u.str.s, "Running")) {
        rc = call_ref(conn, method, dev, NULL);
    }
    value_unref(ps);
    return rc;
}

static int
create_vdi(struct xe_conn *conn, const char *sr, const char *name,
           int64_t size, const char *type, bool sharable, struct value *smc,
           char **ret_ref)
{
    struct value *r = value_struct(12), *v = NULL, *params;
    int rc;

    value_struct_put(r, "name_label", str(name));
    value_struct_put(r, "SR", str(sr));
    value_struct_put(r, "virtual_size", value_int(size));
    value_struct_put(r, "type", str(type));
    value_struct_put(r, "sharable", sharable ? value_true() : value_false());
    value_struct_put(r, "read_only", value_false());
    value_struct_put(r, "other_config", value_empty_struct());
    value_struct_put(r, "sm_config", smc ? smc : value_empty_struct());
    params = params_of(1, r);
    rc = xe_call(conn, "VDI.create", params, &v);
    value_unref(params);
    if (rc == 0) {
        *ret_ref = xstrdup(v->u.str.s);
    }
    value_unref(v);
    return rc;
}

int
xe_op_vm_disk_add(struct xe_cmd_ctx *ctx)
{
    const char *size_text = xe_arg_get(ctx->args, "disk-size");
    const char *device = xe_arg_get(ctx->args, "device");
    char *vm = NULL, *sr = NULL, *vdi = NULL, *vbd = NULL, *name = NULL;
    struct value *v = NULL, *params;
    int64_t size;
    int rc = -1;

    if (parse_size(size_text, &size) || one_vm(ctx, &vm)
        || choose_sr(ctx, true, &sr)) {
        goto out;
    }
    name = xasprintf("Disk %s of VM %s", device, vm_uuid_of(ctx->conn, vm));
    if (create_vdi(ctx->conn, sr, name, size, "user", false, NULL, &vdi)) {
        goto out;
    }
    params = params_of(1, vbd_record(vm, vdi, device, false, "Disk", "RW",
                                     false, true));
    rc = xe_call(ctx->conn, "VBD.create", params, &v);
    value_unref(params);
    if (rc) {
        call_ref(ctx->conn, "VDI.destroy", vdi, NULL);
        goto out;
    }
    vbd = xstrdup(v->u.str.s);
    rc = plug_if_running(ctx->conn, vm, "VBD.plug", vbd);
out:
    value_unref(v);
    free(vm);
    free(sr);
    free(vdi);
    free(vbd);
    free(name);
    return rc;
}

/* The VBDs of a VM of one type ("Disk" or "CD"), with their records. */
static int
vm_vbds(struct xe_conn *conn, const char *vm, const char *type,
        struct value **ret)
{
    struct value *vbds = NULL, *out = value_struct(4);

    if (xe_callv(conn, "VM.get_VBDs", &vbds, vm, NULL)) {
        value_unref(out);
        return -1;
    }
    for (size_t i = 0; vbds->type == VALUE_ARRAY && i < vbds->u.arr.n; i++) {
        struct value *rec = NULL;
        const char *ref = vbds->u.arr.items[i]->u.str.s;
        if (xe_callv(conn, "VBD.get_record", &rec, ref, NULL) == 0) {
            const char *t = value_struct_get_string(rec, "type");
            if (t && !strcmp(t, type)) {
                value_struct_put(out, ref, rec);
                rec = NULL;
            }
        }
        value_unref(rec);
    }
    value_unref(vbds);
    *ret = out;
    return 0;
}

static int
disk_list(struct xe_cmd_ctx *ctx, const char *vm, const char *type,
          const char *label)
{
    const char *vbd_params = xe_arg_get(ctx->args, "vbd-params");
    const char *vdi_params = xe_arg_get(ctx->args, "vdi-params");
    struct value *vbds = NULL;
    int rc = 0;

    if (vm_vbds(ctx->conn, vm, type, &vbds)) {
        return -1;
    }
    for (size_t i = 0; i < vbds->u.st.n; i++) {
        struct value *one = value_struct(1), *vdi_rec = NULL;
        const char *vdi = value_struct_get_string(vbds->u.st.m[i].v, "VDI");
        const char *dev = value_struct_get_string(vbds->u.st.m[i].v,
                                                  "userdevice");
        value_struct_put(one, vbds->u.st.m[i].name,
                         value_ref(vbds->u.st.m[i].v));
        if (!ctx->minimal) {
            printf("%s %s VBD:\n", label, dev ? dev : "?");
            rc |= xe_print_records(ctx->conn, cls_of("VBD"), one,
                                   vbd_params, false);
        }
        value_unref(one);
        if (vdi && strcmp(vdi, "OpaqueRef:NULL")
            && xe_callv(ctx->conn, "VDI.get_record", &vdi_rec, vdi, NULL) == 0) {
            one = value_struct(1);
            value_struct_put(one, vdi, vdi_rec);
            if (!ctx->minimal) {
                printf("%s %s VDI:\n", label, dev ? dev : "?");
            }
            rc |= xe_print_records(ctx->conn, cls_of("VDI"), one,
                                   ctx->minimal ? "uuid" : vdi_params,
                                   ctx->minimal);
            value_unref(one);
        }
    }
    value_unref(vbds);
    return rc;
}

static int
do_disk_list(struct xe_cmd_ctx *ctx, const char *vm)
{
    return disk_list(ctx, vm, "Disk", "Disk");
}

int xe_op_vm_disk_list(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_disk_list); }

int
xe_op_snapshot_disk_list(struct xe_cmd_ctx *ctx)
{
    char *ref = NULL;
    int rc;

    if (snapshot_arg(ctx, "uuid", &ref)) {
        return -1;
    }
    rc = do_disk_list(ctx, ref);
    free(ref);
    return rc;
}

static int
do_cd_list(struct xe_cmd_ctx *ctx, const char *vm)
{
    return disk_list(ctx, vm, "CD", "CD");
}

int xe_op_vm_cd_list(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_cd_list); }

/* Finds the VBD of a VM by device number, or the first of a type. */
static int
find_vbd(struct xe_conn *conn, const char *vm, const char *type,
         const char *device, char **ret_ref, char **ret_vdi)
{
    struct value *vbds = NULL;
    int rc = -1;

    if (vm_vbds(conn, vm, type, &vbds)) {
        return -1;
    }
    for (size_t i = 0; i < vbds->u.st.n; i++) {
        const char *dev = value_struct_get_string(vbds->u.st.m[i].v,
                                                  "userdevice");
        if (!device || (dev && !strcmp(dev, device))) {
            *ret_ref = xstrdup(vbds->u.st.m[i].name);
            if (ret_vdi) {
                *ret_vdi = xstrdup(value_struct_get_string(vbds->u.st.m[i].v,
                                                           "VDI") ?: "");
            }
            rc = 0;
            break;
        }
    }
    if (rc) {
        fprintf(stderr, "Error: the VM has no %s%s%s\n",
                !strcmp(type, "CD") ? "CD drive" : "disk",
                device ? " at device " : "", device ? device : "");
    }
    value_unref(vbds);
    return rc;
}

int
xe_op_vm_disk_remove(struct xe_cmd_ctx *ctx)
{
    const char *device = xe_arg_get(ctx->args, "device");
    char *vm = NULL, *vbd = NULL, *vdi = NULL;
    int rc = -1;

    if (one_vm(ctx, &vm) || find_vbd(ctx->conn, vm, "Disk", device, &vbd, &vdi)) {
        goto out;
    }
    if (call_ref(ctx->conn, "VBD.destroy", vbd, NULL)) {
        goto out;
    }
    rc = call_ref(ctx->conn, "VDI.destroy", vdi, NULL);
out:
    free(vm);
    free(vbd);
    free(vdi);
    return rc;
}

/* CDs are found by the name of their VDI, as XenServer's cd-name=. */
static int
find_cd(struct xe_cmd_ctx *ctx, char **ret_vdi)
{
    const char *name = xe_arg_get(ctx->args, "cd-name");

    if (!name) {
        return xe_missing("cd-name");
    }
    if (uuid_is_valid(name)) {
        return xe_lookup(ctx->conn, "VDI", name, false, ret_vdi);
    }
    return xe_lookup(ctx->conn, "VDI", name, true, ret_vdi);
}

int
xe_op_vm_cd_add(struct xe_cmd_ctx *ctx)
{
    const char *device = xe_arg_get(ctx->args, "device");
    char *vm = NULL, *vdi = NULL, *vbd = NULL;
    struct value *params, *v = NULL;
    int rc = -1;

    if (one_vm(ctx, &vm) || find_cd(ctx, &vdi)) {
        goto out;
    }
    params = params_of(1, vbd_record(vm, vdi, device, false, "CD", "RO",
                                     false, true));
    rc = xe_call(ctx->conn, "VBD.create", params, &v);
    value_unref(params);
    if (rc == 0) {
        vbd = xstrdup(v->u.str.s);
        rc = plug_if_running(ctx->conn, vm, "VBD.plug", vbd);
    }
out:
    value_unref(v);
    free(vm);
    free(vdi);
    free(vbd);
    return rc;
}

int
xe_op_vm_cd_insert(struct xe_cmd_ctx *ctx)
{
    char *vm = NULL, *vdi = NULL, *vbd = NULL;
    int rc = -1;

    if (one_vm(ctx, &vm) || find_cd(ctx, &vdi)
        || find_vbd(ctx->conn, vm, "CD", NULL, &vbd, NULL)) {
        goto out;
    }
    rc = call_ref(ctx->conn, "VBD.insert", vbd, value_string(vdi), NULL);
out:
    free(vm);
    free(vdi);
    free(vbd);
    return rc;
}

int
xe_op_vm_cd_eject(struct xe_cmd_ctx *ctx)
{
    char *vm = NULL, *vbd = NULL;
    int rc = -1;

    if (one_vm(ctx, &vm) || find_vbd(ctx->conn, vm, "CD", NULL, &vbd, NULL)) {
        goto out;
    }
    rc = call_ref(ctx->conn, "VBD.eject", vbd, NULL);
out:
    free(vm);
    free(vbd);
    return rc;
}

int
xe_op_vm_cd_remove(struct xe_cmd_ctx *ctx)
{
    char *vm = NULL, *vdi = NULL;
    struct value *vbds = NULL;
    int rc = -1;

    if (one_vm(ctx, &vm) || find_cd(ctx, &vdi)
        || vm_vbds(ctx->conn, vm, "CD", &vbds)) {
        goto out;
    }
    for (size_t i = 0; i < vbds->u.st.n; i++) {
        const char *v = value_struct_get_string(vbds->u.st.m[i].v, "VDI");
        if (v && !strcmp(v, vdi)) {
            rc = call_ref(ctx->conn, "VBD.destroy", vbds->u.st.m[i].name, NULL);
            goto out;
        }
    }
    fprintf(stderr, "Error: that CD is not in the VM's drives\n");
out:
    value_unref(vbds);
    free(vm);
    free(vdi);
    return rc;
}

static int
do_vif_list(struct xe_cmd_ctx *ctx, const char *vm)
{
    struct value *vifs = NULL, *records = value_struct(4);
    int rc = -1;

    if (xe_callv(ctx->conn, "VM.get_VIFs", &vifs, vm, NULL)) {
        goto out;
    }
    for (size_t i = 0; vifs->type == VALUE_ARRAY && i < vifs->u.arr.n; i++) {
        struct value *rec = NULL;
        const char *ref = vifs->u.arr.items[i]->u.str.s;
        if (xe_callv(ctx->conn, "VIF.get_record", &rec, ref, NULL) == 0) {
            value_struct_put(records, ref, rec);
        }
    }
    rc = xe_print_records(ctx->conn, cls_of("VIF"), records,
                          xe_arg_get(ctx->args, "params"), ctx->minimal);
out:
    value_unref(vifs);
    value_unref(records);
    return rc;
}

int xe_op_vm_vif_list(struct xe_cmd_ctx *ctx) { return for_each_vm(ctx, do_vif_list); }

/* The VDIs of ISO SRs. */
int
xe_op_cd_list(struct xe_cmd_ctx *ctx)
{
    struct value *srs = NULL, *vdis = NULL, *out = value_struct(8);
    int rc = -1;

    if (xe_callv(ctx->conn, "SR.get_all_records", &srs, NULL)
        || xe_callv(ctx->conn, "VDI.get_all_records", &vdis, NULL)) {
        goto out;
    }
    for (size_t i = 0; i < vdis->u.st.n; i++) {
        const char *sr = value_struct_get_string(vdis->u.st.m[i].v, "SR");
        struct value *srr = sr ? value_struct_get(srs, sr) : NULL;
        const char *ct = srr ? value_struct_get_string(srr, "content_type") : NULL;
        if (ct && !strcmp(ct, "iso")) {
            value_struct_put(out, vdis->u.st.m[i].name,
                             value_ref(vdis->u.st.m[i].v));
        }
    }
    rc = xe_print_records(ctx->conn, cls_of("VDI"), out,
                          xe_arg_get(ctx->args, "params")
                          ?: "uuid,name-label", ctx->minimal);
out:
    value_unref(srs);
    value_unref(vdis);
    value_unref(out);
    return rc;
}

/* ---- memory ---- */

static int
memory_call(struct xe_cmd_ctx *ctx, const char *method, const char *const *keys,
            size_t n)
{
    char *vm = NULL;
    struct value *params = value_array(n + 1), *v = NULL;
    int rc = -1;

    for (size_t i = 0; i < n; i++) {
        int64_t size;
        if (parse_size(xe_arg_get(ctx->args, keys[i]), &size)) {
            goto out;
        }
        value_array_append(params, value_int(size));
    }
    if (one_vm(ctx, &vm)) {
        goto out;
    }
    {
        struct value *all = value_array(n + 1);
        value_array_append(all, value_string(vm));
        for (size_t i = 0; i < n; i++) {
            value_array_append(all, value_ref(params->u.arr.items[i]));
        }
        rc = xe_call(ctx->conn, method, all, &v);
        value_unref(all);
    }
out:
    value_unref(params);
    value_unref(v);
    free(vm);
    return rc;
}

int
xe_op_vm_memory_set(struct xe_cmd_ctx *ctx)
{
    static const char *const k[] = { "memory" };
    return memory_call(ctx, "VM.set_memory", k, 1);
}

int
xe_op_vm_memory_limits_set(struct xe_cmd_ctx *ctx)
{
    static const char *const k[] = { "static-min", "static-max",
                                     "dynamic-min", "dynamic-max" };
    return memory_call(ctx, "VM.set_memory_limits", k, 4);
}

int
xe_op_vm_memory_dynamic_range_set(struct xe_cmd_ctx *ctx)
{
    static const char *const k[] = { "min", "max" };
    return memory_call(ctx, "VM.set_memory_dynamic_range", k, 2);
}

int
xe_op_vm_memory_static_range_set(struct xe_cmd_ctx *ctx)
{
    static const char *const k[] = { "min", "max" };
    return memory_call(ctx, "VM.set_memory_static_range", k, 2);
}

int
xe_op_vm_memory_target_set(struct xe_cmd_ctx *ctx)
{
    static const char *const k[] = { "target" };
    return memory_call(ctx, "VM.set_memory_target_live", k, 1);
}

/* ---- VDIs ---- */

int
xe_op_vdi_create(struct xe_cmd_ctx *ctx)
{
    const char *type = xe_arg_get(ctx->args, "type");
    char *sr = NULL, *vdi = NULL;
    int64_t size;
    int rc = -1;

    if (parse_size(xe_arg_get(ctx->args, "virtual-size"), &size)
        || ref_arg(ctx, "sr-uuid", "SR", &sr)) {
        goto out;
    }
    rc = create_vdi(ctx->conn, sr, xe_arg_get(ctx->args, "name-label"), size,
                    type ? type : "user", flag(ctx, "sharable"),
                    map_args(ctx->args, "sm-config"), &vdi);
    if (rc == 0) {
        printf("%s\n", xe_ref_uuid(ctx->conn, "VDI", vdi));
    }
out:
    free(sr);
    free(vdi);
    return rc;
}

static int
on_uuid(struct xe_cmd_ctx *ctx, const char *cls, const char *method)
{
    char *ref = NULL;
    int rc;

    if (ref_arg(ctx, "uuid", cls, &ref)) {
        return -1;
    }
    rc = call_ref(ctx->conn, method, ref, NULL);
    free(ref);
    return rc;
}

int xe_op_vdi_destroy(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "VDI", "VDI.destroy"); }
int xe_op_vdi_forget(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "VDI", "VDI.forget"); }

static int
vdi_transfer(struct xe_cmd_ctx *ctx, bool import)
{
    const char *file = xe_arg_get(ctx->args, "filename");
    const char *format = xe_arg_get(ctx->args, "format");
    bool progress = flag(ctx, "progress") || !xe_arg_get(ctx->args, "progress");
    char *vdi = NULL, *query;
    int rc;

    if (ref_arg(ctx, "uuid", "VDI", &vdi)) {
        return -1;
    }
    query = xasprintf("vdi=%s&format=%s", vdi, format ? format : "raw");
    rc = import ? xe_http_put_file(ctx->conn, "/import_raw_vdi", query, file,
                                   progress)
                : xe_http_get_file(ctx->conn, "/export_raw_vdi", query, file,
                                   progress);
    free(query);
    free(vdi);
    return rc;
}

int xe_op_vdi_import(struct xe_cmd_ctx *ctx) { return vdi_transfer(ctx, true); }

int
xe_op_vdi_export(struct xe_cmd_ctx *ctx)
{
    if (xe_arg_get(ctx->args, "base")) {
        fprintf(stderr, "Error: base= (differencing export) is not supported "
                "yet\n");
        return -1;
    }
    return vdi_transfer(ctx, false);
}

int
xe_op_vdi_clone(struct xe_cmd_ctx *ctx)
{
    const char *name = xe_arg_get(ctx->args, "new-name-label");
    const char *desc = xe_arg_get(ctx->args, "new-name-description");
    char *vdi = NULL, *new_ref = NULL;
    int rc;

    if (ref_arg(ctx, "uuid", "VDI", &vdi)) {
        return -1;
    }
    rc = call_print_uuid(ctx->conn, "VDI.clone", "VDI",
                         params_of(2, str(vdi), map_args(ctx->args,
                                                         "driver-params")),
                         &new_ref);
    if (rc == 0 && name) {
        rc = call_ref(ctx->conn, "VDI.set_name_label", new_ref,
                      value_string(name), NULL);
    }
    if (rc == 0 && desc) {
        rc = call_ref(ctx->conn, "VDI.set_name_description", new_ref,
                      value_string(desc), NULL);
    }
    free(vdi);
    free(new_ref);
    return rc;
}

int
xe_op_vdi_snapshot(struct xe_cmd_ctx *ctx)
{
    char *vdi = NULL;
    int rc;

    if (ref_arg(ctx, "uuid", "VDI", &vdi)) {
        return -1;
    }
    rc = call_print_uuid(ctx->conn, "VDI.snapshot", "VDI",
                         params_of(2, str(vdi), map_args(ctx->args,
                                                         "driver-params")),
                         NULL);
    free(vdi);
    return rc;
}

int
xe_op_vdi_resize(struct xe_cmd_ctx *ctx)
{
    char *vdi = NULL;
    int64_t size;
    int rc;

    if (parse_size(xe_arg_get(ctx->args, "disk-size"), &size)
        || ref_arg(ctx, "uuid", "VDI", &vdi)) {
        return -1;
    }
    xe_arg_get(ctx->args, "online");
    rc = call_ref(ctx->conn, "VDI.resize", vdi, value_int(size), NULL);
    free(vdi);
    return rc;
}

int
xe_op_vdi_copy(struct xe_cmd_ctx *ctx)
{
    const char *sr_uuid = xe_arg_get(ctx->args, "sr-uuid");
    const char *base_uuid = xe_arg_get(ctx->args, "base-vdi-uuid");
    const char *into_uuid = xe_arg_get(ctx->args, "into-vdi-uuid");
    char *vdi = NULL, *sr = NULL, *base = NULL, *into = NULL;
    int rc = -1;

    if (ref_arg(ctx, "uuid", "VDI", &vdi)
        || (sr_uuid && xe_lookup(ctx->conn, "SR", sr_uuid, false, &sr))
        || (base_uuid && xe_lookup(ctx->conn, "VDI", base_uuid, false, &base))
        || (into_uuid && xe_lookup(ctx->conn, "VDI", into_uuid, false, &into))) {
        goto out;
    }
    rc = call_print_uuid(ctx->conn, "VDI.copy", "VDI",
                         params_of(4, str(vdi), str(sr ?: "OpaqueRef:NULL"),
                                   str(base ?: "OpaqueRef:NULL"),
                                   str(into ?: "OpaqueRef:NULL")), NULL);
out:
    free(vdi);
    free(sr);
    free(base);
    free(into);
    return rc;
}

/* ---- SRs and PBDs ---- */

int
xe_op_sr_create(struct xe_cmd_ctx *ctx)
{
    const char *size_text = xe_arg_get(ctx->args, "physical-size");
    const char *ct = xe_arg_get(ctx->args, "content-type");
    char *host = NULL;
    int64_t size = 0;
    int rc;

    if ((size_text && parse_size(size_text, &size)) || choose_host(ctx, &host)) {
        free(host);
        return -1;
    }
    rc = call_print_uuid(ctx->conn, "SR.create", "SR",
                         params_of(9, str(host),
                                   map_args(ctx->args, "device-config"),
                                   value_int(size),
                                   str(xe_arg_get(ctx->args, "name-label")),
                                   str(xe_arg_get(ctx->args, "name-description")),
                                   str(xe_arg_get(ctx->args, "type")),
                                   str(ct ? ct : "user"),
                                   bool_arg(ctx, "shared", false),
                                   map_args(ctx->args, "sm-config")), NULL);
    free(host);
    return rc;
}

int xe_op_sr_destroy(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "SR", "SR.destroy"); }
int xe_op_sr_scan(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "SR", "SR.scan"); }
int xe_op_sr_forget(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "SR", "SR.forget"); }
int xe_op_sr_update(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "SR", "SR.update"); }

int
xe_op_pbd_create(struct xe_cmd_ctx *ctx)
{
    char *host = NULL, *sr = NULL;
    struct value *r;
    int rc = -1;

    if (ref_arg(ctx, "host-uuid", "host", &host)
        || ref_arg(ctx, "sr-uuid", "SR", &sr)) {
        goto out;
    }
    r = value_struct(4);
    value_struct_put(r, "host", str(host));
    value_struct_put(r, "SR", str(sr));
    value_struct_put(r, "device_config", map_args(ctx->args, "device-config"));
    value_struct_put(r, "other_config", value_empty_struct());
    rc = call_print_uuid(ctx->conn, "PBD.create", "PBD", params_of(1, r), NULL);
out:
    free(host);
    free(sr);
    return rc;
}

int xe_op_pbd_destroy(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "PBD", "PBD.destroy"); }
int xe_op_pbd_plug(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "PBD", "PBD.plug"); }
int xe_op_pbd_unplug(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "PBD", "PBD.unplug"); }

/* ---- VBDs, VIFs, networks ---- */

int
xe_op_vbd_create(struct xe_cmd_ctx *ctx)
{
    const char *vdi_uuid = xe_arg_get(ctx->args, "vdi-uuid");
    const char *type = xe_arg_get(ctx->args, "type");
    const char *mode = xe_arg_get(ctx->args, "mode");
    char *vm = NULL, *vdi = NULL;
    int rc = -1;

    if (ref_arg(ctx, "vm-uuid", "VM", &vm)
        || (vdi_uuid && xe_lookup(ctx->conn, "VDI", vdi_uuid, false, &vdi))) {
        goto out;
    }
    rc = call_print_uuid(
        ctx->conn, "VBD.create", "VBD",
        params_of(1, vbd_record(vm, vdi ? vdi : "OpaqueRef:NULL",
                                xe_arg_get(ctx->args, "device"),
                                flag(ctx, "bootable"), type ? type : "Disk",
                                mode ? mode : "RW", vdi == NULL,
                                !xe_arg_get(ctx->args, "unpluggable")
                                || flag(ctx, "unpluggable"))),
        NULL);
out:
    free(vm);
    free(vdi);
    return rc;
}

int xe_op_vbd_destroy(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "VBD", "VBD.destroy"); }
int xe_op_vbd_plug(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "VBD", "VBD.plug"); }
int xe_op_vbd_eject(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "VBD", "VBD.eject"); }

int
xe_op_vbd_unplug(struct xe_cmd_ctx *ctx)
{
    xe_arg_get(ctx->args, "timeout");
    return on_uuid(ctx, "VBD", flag(ctx, "force") ? "VBD.unplug_force"
                                                   : "VBD.unplug");
}

int
xe_op_vbd_insert(struct xe_cmd_ctx *ctx)
{
    char *vbd = NULL, *vdi = NULL;
    int rc = -1;

    if (ref_arg(ctx, "uuid", "VBD", &vbd)
        || ref_arg(ctx, "vdi-uuid", "VDI", &vdi)) {
        goto out;
    }
    rc = call_ref(ctx->conn, "VBD.insert", vbd, value_string(vdi), NULL);
out:
    free(vbd);
    free(vdi);
    return rc;
}

int
xe_op_vif_create(struct xe_cmd_ctx *ctx)
{
    const char *mac = xe_arg_get(ctx->args, "mac");
    char *vm = NULL, *net = NULL;
    struct value *r;
    int rc = -1;

    if (ref_arg(ctx, "vm-uuid", "VM", &vm)
        || ref_arg(ctx, "network-uuid", "network", &net)) {
        goto out;
    }
    r = value_struct(10);
    value_struct_put(r, "device", str(xe_arg_get(ctx->args, "device")));
    value_struct_put(r, "network", str(net));
    value_struct_put(r, "VM", str(vm));
    /* An empty MAC asks the toolstack to choose one. */
    value_struct_put(r, "MAC", str(mac && strcmp(mac, "random") ? mac : ""));
    value_struct_put(r, "MTU", value_int(1500));
    value_struct_put(r, "other_config", value_empty_struct());
    value_struct_put(r, "qos_algorithm_type", value_empty_string());
    value_struct_put(r, "qos_algorithm_params", value_empty_struct());
    rc = call_print_uuid(ctx->conn, "VIF.create", "VIF", params_of(1, r), NULL);
out:
    free(vm);
    free(net);
    return rc;
}

int xe_op_vif_destroy(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "VIF", "VIF.destroy"); }
int xe_op_vif_plug(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "VIF", "VIF.plug"); }

int
xe_op_vif_unplug(struct xe_cmd_ctx *ctx)
{
    return on_uuid(ctx, "VIF", flag(ctx, "force") ? "VIF.unplug_force"
                                                   : "VIF.unplug");
}

int
xe_op_network_create(struct xe_cmd_ctx *ctx)
{
    const char *mtu = xe_arg_get(ctx->args, "MTU");
    const char *bridge = xe_arg_get(ctx->args, "bridge");
    struct value *r = value_struct(8);
    int64_t m = 1500;

    if (mtu && str_to_int64(mtu, &m)) {
        fprintf(stderr, "Error: MTU must be a number\n");
        value_unref(r);
        return -1;
    }
    value_struct_put(r, "name_label", str(xe_arg_get(ctx->args, "name-label")));
    value_struct_put(r, "name_description",
                     str(xe_arg_get(ctx->args, "name-description")));
    value_struct_put(r, "MTU", value_int(m));
    value_struct_put(r, "other_config", value_empty_struct());
    if (bridge) {
        value_struct_put(r, "bridge", value_string(bridge));
    }
    if (xe_arg_get(ctx->args, "managed")) {
        value_struct_put(r, "managed", bool_arg(ctx, "managed", true));
    }
    return call_print_uuid(ctx->conn, "network.create", "network",
                           params_of(1, r), NULL);
}

int xe_op_network_destroy(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "network", "network.destroy"); }

/* ---- tasks and events ---- */

int xe_op_task_cancel(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "task", "task.cancel"); }

/* event-wait class=<class> <field>=<value> ... [<field>=/=<value>]: returns
 * when one object of the class matches every condition, checking again
 * after each change event.event.from blocks on the server between checks,
 * so waiting costs no polling. */
int
xe_op_event_wait(struct xe_cmd_ctx *ctx)
{
    const char *cls_name = xe_arg_get(ctx->args, "class");
    const struct xe_class *cls = xe_class_by_xe(cls_name);
    struct value *records = NULL, *ev = NULL;
    char *token = xstrdup("");
    char method[128];
    int rc = -1;

    if (!cls) {
        cls = xe_class_by_api(cls_name);
    }
    if (!cls || !cls->listable) {
        fprintf(stderr, "Error: unknown class '%s'\n", cls_name);
        goto out;
    }
    snprintf(method, sizeof method, "%s.get_all_records", cls->api);
    for (;;) {
        struct value *classes, *params;
        bool found = false;

        if (xe_callv(ctx->conn, method, &records, NULL)) {
            goto out;
        }
        for (size_t i = 0; !found && i < records->u.st.n; i++) {
            struct value *one = value_struct(1);
            bool all = true;
            value_struct_put(one, records->u.st.m[i].name,
                             value_ref(records->u.st.m[i].v));
            for (size_t a = 0; all && a < ctx->args->n; a++) {
                struct xe_arg *arg = &ctx->args->v[a];
                const struct xe_field *f;
                struct value *fv;
                bool negate = arg->value[0] == '/' && arg->value[1] == '=';
                const char *want = negate ? arg->value + 2 : arg->value;
                struct ds text = DS_EMPTY;

                if (!strcmp(arg->key, "class")) {
                    continue;
                }
                f = xe_field_by_xe(cls, arg->key);
                if (!f) {
                    fprintf(stderr, "Error: unknown field '%s' for class %s\n",
                            arg->key, cls->xe);
                    value_unref(one);
                    goto out;
                }
                arg->used = true;
                fv = value_struct_get(records->u.st.m[i].v, f->api);
                if (value_is_string(fv) && f->kind == XE_ENUM) {
                    for (const char *p = fv->u.str.s; *p; p++) {
                        ds_put_char(&text, (char)tolower((unsigned char)*p));
                    }
                } else if (value_is_string(fv) && f->kind == XE_REF) {
                    ds_put_cstr(&text, xe_ref_uuid(ctx->conn, f->ref_class,
                                                   fv->u.str.s));
                } else if (fv && fv->type == VALUE_BOOL) {
                    ds_put_cstr(&text, fv->u.b ? "true" : "false");
                } else if (fv && fv->type == VALUE_INT) {
                    ds_put_int(&text, fv->u.i);
                } else if (value_is_string(fv)) {
                    ds_put_cstr(&text, fv->u.str.s);
                }
                all = (strcmp(text.s ? text.s : "", want) == 0) != negate;
                ds_destroy(&text);
            }
            value_unref(one);
            found = all;
        }
        value_unref(records);
        records = NULL;
        if (found) {
            break;
        }
        classes = value_array(1);
        value_array_append(classes, value_string(cls->api));
        params = params_of(3, classes, value_string(token), value_double(30.0));
        rc = xe_call(ctx->conn, "event.from", params, &ev);
        value_unref(params);
        if (rc) {
            goto out;
        }
        rc = -1;
        free(token);
        token = xstrdup(value_struct_get_string(ev, "token") ?: "");
        value_unref(ev);
        ev = NULL;
    }
    rc = 0;
out:
    value_unref(records);
    value_unref(ev);
    free(token);
    return rc;
}

/* ---- users and roles ---- */

int
xe_op_subject_add(struct xe_cmd_ctx *ctx)
{
    const char *name = xe_arg_get(ctx->args, "subject-name");
    struct value *sid = NULL, *info = NULL, *r;
    int rc = -1;

    /* The external directory turns the name into an identifier and the
     * facts recorded with the subject. */
    if (xe_callv(ctx->conn, "auth.get_subject_identifier", &sid, name, NULL)
        || xe_callv(ctx->conn, "auth.get_subject_information_from_identifier",
                    &info, sid->u.str.s, NULL)) {
        goto out;
    }
    r = value_struct(2);
    value_struct_put(r, "subject_identifier", value_ref(sid));
    value_struct_put(r, "other_config", value_ref(info));
    rc = call_print_uuid(ctx->conn, "subject.create", "subject",
                         params_of(1, r), NULL);
out:
    value_unref(sid);
    value_unref(info);
    return rc;
}

int
xe_op_subject_remove(struct xe_cmd_ctx *ctx)
{
    char *ref = NULL;
    int rc;

    if (ref_arg(ctx, "subject-uuid", "subject", &ref)) {
        return -1;
    }
    rc = call_ref(ctx->conn, "subject.destroy", ref, NULL);
    free(ref);
    return rc;
}

static int
subject_role(struct xe_cmd_ctx *ctx, const char *method)
{
    const char *rname = xe_arg_get(ctx->args, "role-name");
    const char *ruuid = xe_arg_get(ctx->args, "role-uuid");
    char *subj = NULL, *role = NULL;
    struct value *v = NULL;
    int rc = -1;

    if (ref_arg(ctx, "uuid", "subject", &subj)) {
        goto out;
    }
    if (ruuid) {
        if (xe_lookup(ctx->conn, "role", ruuid, false, &role)) {
            goto out;
        }
    } else if (rname) {
        if (xe_callv(ctx->conn, "role.get_by_name_label", &v, rname, NULL)) {
            goto out;
        }
        if (v->type != VALUE_ARRAY || v->u.arr.n == 0) {
            fprintf(stderr, "Error: no role named '%s'\n", rname);
            goto out;
        }
        role = xstrdup(v->u.arr.items[0]->u.str.s);
    } else {
        fprintf(stderr, "Error: give role-name= or role-uuid=\n");
        goto out;
    }
    rc = call_ref(ctx->conn, method, subj, value_string(role), NULL);
out:
    value_unref(v);
    free(subj);
    free(role);
    return rc;
}

int xe_op_subject_role_add(struct xe_cmd_ctx *ctx) { return subject_role(ctx, "subject.add_to_roles"); }
int xe_op_subject_role_remove(struct xe_cmd_ctx *ctx) { return subject_role(ctx, "subject.remove_from_roles"); }

int
xe_op_user_password_change(struct xe_cmd_ctx *ctx)
{
    const char *old = xe_arg_get(ctx->args, "old");
    return xe_callv(ctx->conn, "session.change_password", NULL, old ? old : "",
                    xe_arg_get(ctx->args, "new"), NULL);
}

int
xe_op_session_subject_identifier_list(struct xe_cmd_ctx *ctx)
{
    struct value *v = NULL;

    if (xe_callv(ctx->conn, "session.get_all_subject_identifiers", &v, NULL)) {
        return -1;
    }
    for (size_t i = 0; v->type == VALUE_ARRAY && i < v->u.arr.n; i++) {
        printf("%s\n", v->u.arr.items[i]->u.str.s);
    }
    value_unref(v);
    return 0;
}

/* ---- messages, secrets, appliances, hosts, pool ---- */

int
xe_op_message_create(struct xe_cmd_ctx *ctx)
{
    static const struct {
        const char *key, *cls;
    } targets[] = {
        { "vm-uuid", "VM" }, { "host-uuid", "Host" }, { "sr-uuid", "SR" },
        { "pool-uuid", "Pool" },
    };
    const char *cls = NULL, *uuid = NULL;
    int64_t prio;

    for (size_t i = 0; i < ARRAY_SIZE(targets); i++) {
        const char *u = xe_arg_get(ctx->args, targets[i].key);
        if (u) {
            cls = targets[i].cls;
            uuid = u;
        }
    }
    if (!cls) {
        fprintf(stderr, "Error: give one of vm-uuid=, host-uuid=, sr-uuid=, "
                "pool-uuid=\n");
        return -1;
    }
    if (str_to_int64(xe_arg_get(ctx->args, "priority"), &prio)) {
        fprintf(stderr, "Error: priority must be a number\n");
        return -1;
    }
    return call_print_uuid(ctx->conn, "message.create", "message",
                           params_of(5, str(xe_arg_get(ctx->args, "name")),
                                     value_int(prio), str(cls), str(uuid),
                                     str(xe_arg_get(ctx->args, "body"))),
                           NULL);
}

int
xe_op_message_destroy(struct xe_cmd_ctx *ctx)
{
    const char *uuid = xe_arg_get(ctx->args, "uuid");
    const char *uuids = xe_arg_get(ctx->args, "uuids");
    char *all = xasprintf("%s%s%s", uuid ? uuid : "", uuid && uuids ? "," : "",
                          uuids ? uuids : "");
    char *save = NULL;
    int rc = 0;

    for (char *u = strtok_r(all, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        char *ref = NULL;
        if (xe_lookup(ctx->conn, "message", u, false, &ref)
            || call_ref(ctx->conn, "message.destroy", ref, NULL)) {
            rc = -1;
        }
        free(ref);
    }
    free(all);
    return rc;
}

int
xe_op_secret_create(struct xe_cmd_ctx *ctx)
{
    struct value *r = value_struct(2);

    value_struct_put(r, "value", str(xe_arg_get(ctx->args, "value")));
    value_struct_put(r, "other_config", value_empty_struct());
    return call_print_uuid(ctx->conn, "secret.create", "secret",
                           params_of(1, r), NULL);
}

int xe_op_secret_destroy(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "secret", "secret.destroy"); }

int
xe_op_appliance_create(struct xe_cmd_ctx *ctx)
{
    struct value *r = value_struct(2);

    value_struct_put(r, "name_label", str(xe_arg_get(ctx->args, "name-label")));
    value_struct_put(r, "name_description",
                     str(xe_arg_get(ctx->args, "name-description")));
    return call_print_uuid(ctx->conn, "VM_appliance.create", "VM_appliance",
                           params_of(1, r), NULL);
}

int xe_op_appliance_destroy(struct xe_cmd_ctx *ctx) { return on_uuid(ctx, "VM_appliance", "VM_appliance.destroy"); }

static int
do_host_enable(struct xe_cmd_ctx *ctx, const char *ref)
{
    return call_ref(ctx->conn, "host.enable", ref, NULL);
}

static int
do_host_disable(struct xe_cmd_ctx *ctx, const char *ref)
{
    return call_ref(ctx->conn, "host.disable", ref, NULL);
}

int xe_op_host_enable(struct xe_cmd_ctx *ctx) { return for_each_host(ctx, do_host_enable); }

int
xe_op_host_disable(struct xe_cmd_ctx *ctx)
{
    xe_arg_get(ctx->args, "auto-enable");
    return for_each_host(ctx, do_host_disable);
}

int
xe_op_pool_sync_database(struct xe_cmd_ctx *ctx)
{
    return xe_callv(ctx->conn, "pool.sync_database", NULL, NULL);
}

int
xe_op_audit_log_get(struct xe_cmd_ctx *ctx)
{
    const char *since = xe_arg_get(ctx->args, "since");
    char *query = since ? xasprintf("since=%s", since) : xstrdup("");
    int rc = xe_http_get_file(ctx->conn, "/audit_log", query,
                              xe_arg_get(ctx->args, "filename"), false);
    free(query);
    return rc;
}

int
xe_op_vm_destroy(struct xe_cmd_ctx *ctx)
{
    return on_uuid(ctx, "VM", "VM.destroy");
}

/* ---- commands that are one API call ----
 *
 * Many commands only turn their parameters into the arguments of one call
 * and print its result.  They are described here rather than written out:
 * each argument is a token of the spec, in the message's order:
 *
 *   V / H / Y      the VM / host / SR chosen by selectors (one call each)
 *   P              the pool (there is one)
 *   p:key          the pool named by key=uuid, or the pool
 *   h:key          the host named by key=uuid, or the pool master
 *   U:Class        the object of Class named by uuid=
 *   R:key:Class    the object of Class named by key=uuid (required)
 *   r:key:Class    same, or OpaqueRef:NULL when key= is absent
 *   S:key[=dflt]   a string (empty, or dflt, when absent)
 *   I:key[=dflt]   an integer; F:key a float; B:key a boolean (false)
 *   M:prefix       a map of prefix:key=value arguments
 *   L:key          a set of strings from a comma-separated value
 *   Lr:key:Class   a set of refs from comma-separated uuids
 *
 * The result is printed as its kind says: "" nothing, "text" the value,
 * "map" one "key: value" line per entry, "ds" data-source records, or a
 * class name: the uuid of the object made.  A method "A|B" calls B when --force is given. */
struct simple_op {
    const char *cmd;
    const char *method;
    const char *spec;
    const char *result;
};

static const struct simple_op simple_ops[] = {
    { "vm-compute-memory-overhead", "VM.compute_memory_overhead", "V", "text" },
    { "vm-vcpu-hotplug", "VM.set_VCPUs_number_live", "V I:new-vcpus", "" },
    { "vm-memory-shadow-multiplier-set", "VM.set_shadow_multiplier_live",
      "V F:multiplier", "" },
    { "vm-copy-bios-strings", "VM.copy_bios_strings", "V R:host-uuid:host", "" },
    { "vm-restart-device-models", "VM.restart_device_models", "V", "" },
    { "vm-query-services", "VM.query_services", "V", "map" },
    { "vm-call-plugin", "VM.call_plugin", "R:vm-uuid:VM S:plugin S:fn M:args",
      "text" },
    { "host-compute-free-memory", "host.compute_free_memory", "H", "text" },
    { "host-compute-memory-overhead", "host.compute_memory_overhead", "H",
      "text" },
    { "host-get-vms-which-prevent-evacuation",
      "host.get_vms_which_prevent_evacuation", "U:host", "map" },
    { "host-evacuate", "host.evacuate",
      "H r:network-uuid:network I:batch-size=0", "" },
    { "host-shutdown", "host.shutdown", "H", "" },
    { "host-reboot", "host.reboot", "H", "" },
    { "host-power-on", "host.power_on", "H", "" },
    { "host-dmesg", "host.dmesg", "H", "text" },
    { "host-sync-data", "host.sync_data", "H", "" },
    { "host-enable-local-storage-caching", "host.enable_local_storage_caching",
      "H R:sr-uuid:SR", "" },
    { "host-disable-local-storage-caching",
      "host.disable_local_storage_caching", "H", "" },
    { "host-get-server-certificate", "host.get_server_certificate", "H",
      "text" },
    { "host-refresh-server-certificate", "host.refresh_server_certificate",
      "H", "" },
    { "host-set-hostname-live", "host.set_hostname_live",
      "R:host-uuid:host S:host-name", "" },
    { "host-call-plugin", "host.call_plugin",
      "R:host-uuid:host S:plugin S:fn M:args", "text" },
    { "host-send-debug-keys", "host.send_debug_keys",
      "R:host-uuid:host S:keys", "" },
    { "host-syslog-reconfigure", "host.syslog_reconfigure", "R:host-uuid:host",
      "" },
    { "host-management-reconfigure", "host.management_reconfigure",
      "R:pif-uuid:PIF", "" },
    { "host-management-disable", "host.management_disable", "", "" },
    { "host-license-remove", "host.license_remove", "h:host-uuid", "" },
    { "host-apply-edition", "host.apply_edition", "h:host-uuid S:edition", "" },
    { "host-get-system-status-capabilities",
      "host.get_system_status_capabilities", "H", "text" },
    { "host-declare-dead", "host.declare_dead", "U:host", "" },
    { "host-emergency-ha-disable", "host.emergency_ha_disable", "B:soft", "" },
    { "host-crashdump-destroy", "host_crashdump.destroy", "U:host_crashdump",
      "" },
    { "pool-designate-new-master", "pool.designate_new_master",
      "R:host-uuid:host", "" },
    { "pool-eject", "pool.eject", "R:host-uuid:host", "" },
    { "pool-recover-slaves", "pool.recover_slaves", "", "" },
    { "pool-management-reconfigure", "pool.management_reconfigure",
      "R:network-uuid:network", "" },
    { "pool-ha-compute-max-host-failures-to-tolerate",
      "pool.ha_compute_max_host_failures_to_tolerate", "", "text" },
    { "pool-disable-redo-log", "pool.disable_redo_log", "", "" },
    { "pool-enable-redo-log", "pool.enable_redo_log", "R:sr-uuid:SR", "" },
    { "pool-certificate-sync", "pool.certificate_sync", "", "" },
    { "pool-enable-tls-verification", "pool.enable_tls_verification", "", "" },
    { "pool-secret-rotate", "pool.rotate_secret", "", "" },
    { "pool-reset-telemetry-uuid", "pool.reset_telemetry_uuid", "P", "" },
    { "pool-emergency-transition-to-master",
      "pool.emergency_transition_to_master", "", "" },
    { "pool-emergency-reset-master", "pool.emergency_reset_master",
      "S:master-address", "" },
    { "pool-enable-local-storage-caching", "pool.enable_local_storage_caching",
      "U:pool", "" },
    { "pool-disable-local-storage-caching",
      "pool.disable_local_storage_caching", "U:pool", "" },
    { "pool-enable-external-auth", "pool.enable_external_auth",
      "p:uuid M:config S:service-name S:auth-type", "" },
    { "pool-disable-external-auth", "pool.disable_external_auth",
      "p:uuid M:config", "" },
    { "pool-uninstall-ca-certificate", "pool.uninstall_ca_certificate",
      "S:name", "" },
    { "pool-crl-uninstall", "pool.crl_uninstall", "S:name", "" },
    { "pool-ha-prevent-restarts-for", "pool.ha_prevent_restarts_for",
      "I:seconds", "" },
    { "pool-set-update-sync-enabled", "pool.set_update_sync_enabled",
      "P B:value", "" },
    { "pool-configure-update-sync", "pool.configure_update_sync",
      "P S:update-sync-frequency I:update-sync-day=0", "" },
    { "pool-disable-repository-proxy", "pool.disable_repository_proxy", "P",
      "" },
    { "pool-configure-repository-proxy", "pool.configure_repository_proxy",
      "P S:proxy-url S:proxy-username S:proxy-password", "" },
    { "pool-deconfigure-wlb", "pool.deconfigure_wlb", "", "" },
    { "pool-retrieve-wlb-configuration", "pool.retrieve_wlb_configuration", "",
      "map" },
    { "pool-disable-client-certificate-auth",
      "pool.disable_client_certificate_auth", "P", "" },
    { "pool-enable-client-certificate-auth",
      "pool.enable_client_certificate_auth", "P S:name", "" },
    { "pool-disable-ssl-legacy", "pool.disable_ssl_legacy", "p:uuid", "" },
    { "pool-apply-edition", "pool.apply_edition", "p:uuid S:edition", "" },
    { "pool-set-vswitch-controller", "pool.set_vswitch_controller",
      "S:address", "" },
    { "vlan-destroy", "VLAN.destroy", "U:VLAN", "" },
    { "tunnel-create", "tunnel.create",
      "R:pif-uuid:PIF R:network-uuid:network S:protocol=gre", "tunnel" },
    { "tunnel-destroy", "tunnel.destroy", "U:tunnel", "" },
    { "network-sriov-create", "network_sriov.create",
      "R:pif-uuid:PIF R:network-uuid:network", "network_sriov" },
    { "network-sriov-destroy", "network_sriov.destroy", "U:network_sriov", "" },
    { "pif-plug", "PIF.plug", "U:PIF", "" },
    { "pif-unplug", "PIF.unplug", "U:PIF", "" },
    { "pif-forget", "PIF.forget", "U:PIF", "" },
    { "pif-db-forget", "PIF.db_forget", "U:PIF", "" },
    { "pif-scan", "PIF.scan", "R:host-uuid:host", "" },
    { "pif-reconfigure-ip", "PIF.reconfigure_ip",
      "U:PIF S:mode S:IP S:netmask S:gateway S:DNS", "" },
    { "pif-reconfigure-ipv6", "PIF.reconfigure_ipv6",
      "U:PIF S:mode S:IPv6 S:gateway S:DNS", "" },
    { "pif-set-primary-address-type", "PIF.set_primary_address_type",
      "U:PIF S:primary_address_type", "" },
    { "pif-introduce", "PIF.introduce", "R:host-uuid:host S:mac S:device",
      "PIF" },
    { "bond-create", "Bond.create",
      "R:network-uuid:network Lr:pif-uuids:PIF S:mac S:mode=balance-slb "
      "M:properties", "Bond" },
    { "bond-destroy", "Bond.destroy", "U:Bond", "" },
    { "bond-set-mode", "Bond.set_mode", "U:Bond S:mode", "" },
    { "vif-configure-ipv4", "VIF.configure_ipv4",
      "U:VIF S:mode S:address S:gateway", "" },
    { "vif-configure-ipv6", "VIF.configure_ipv6",
      "U:VIF S:mode S:address S:gateway", "" },
    { "vif-move", "VIF.move", "U:VIF R:network-uuid:network", "" },
    { "sr-probe", "SR.probe", "h:host-uuid M:device-config S:type M:sm-config",
      "text" },
    { "sr-introduce", "SR.introduce",
      "S:uuid S:name-label S:name-description S:type S:content-type B:shared",
      "SR" },
    { "sr-enable-database-replication", "SR.enable_database_replication",
      "U:SR", "" },
    { "sr-disable-database-replication", "SR.disable_database_replication",
      "U:SR", "" },
    { "vdi-update", "VDI.update", "U:VDI", "" },
    { "vdi-pool-migrate", "VDI.pool_migrate", "U:VDI R:sr-uuid:SR M:options",
      "VDI" },
    { "vdi-enable-cbt", "VDI.enable_cbt", "U:VDI", "" },
    { "vdi-disable-cbt", "VDI.disable_cbt", "U:VDI", "" },
    { "vdi-data-destroy", "VDI.data_destroy", "U:VDI", "" },
    { "vdi-list-changed-blocks", "VDI.list_changed_blocks",
      "R:vdi-from-uuid:VDI R:vdi-to-uuid:VDI", "text" },
    { "vmss-destroy", "VMSS.destroy", "U:VMSS", "" },
    { "appliance-start", "VM_appliance.start", "U:VM_appliance B:paused", "" },
    { "appliance-shutdown",
      "VM_appliance.clean_shutdown|VM_appliance.hard_shutdown",
      "U:VM_appliance", "" },
    { "gpu-group-create", "GPU_group.create",
      "S:name-label S:name-description M:other-config", "GPU_group" },
    { "gpu-group-destroy", "GPU_group.destroy", "U:GPU_group", "" },
    { "gpu-group-get-remaining-capacity", "GPU_group.get_remaining_capacity",
      "U:GPU_group R:vgpu-type-uuid:VGPU_type", "text" },
    { "vgpu-create", "VGPU.create",
      "R:vm-uuid:VM R:gpu-group-uuid:GPU_group S:device=0 M:other-config "
      "r:vgpu-type-uuid:VGPU_type", "VGPU" },
    { "vgpu-destroy", "VGPU.destroy", "U:VGPU", "" },
    { "drtask-create", "DR_task.create", "S:type M:device-config L:sr-whitelist",
      "DR_task" },
    { "drtask-destroy", "DR_task.destroy", "U:DR_task", "" },
    { "pgpu-enable-dom0-access", "PGPU.enable_dom0_access", "U:PGPU", "text" },
    { "pgpu-disable-dom0-access", "PGPU.disable_dom0_access", "U:PGPU",
      "text" },
    { "pvs-site-introduce", "PVS_site.introduce",
      "S:name-label S:name-description S:pvs-uuid", "PVS_site" },
    { "pvs-site-forget", "PVS_site.forget", "U:PVS_site", "" },
    { "pvs-server-introduce", "PVS_server.introduce",
      "L:addresses I:first-port I:last-port R:pvs-site-uuid:PVS_site",
      "PVS_server" },
    { "pvs-server-forget", "PVS_server.forget", "U:PVS_server", "" },
    { "pvs-proxy-create", "PVS_proxy.create",
      "R:pvs-site-uuid:PVS_site R:vif-uuid:VIF", "PVS_proxy" },
    { "pvs-proxy-destroy", "PVS_proxy.destroy", "U:PVS_proxy", "" },
    { "pvs-cache-storage-destroy", "PVS_cache_storage.destroy",
      "U:PVS_cache_storage", "" },
    { "sdn-controller-introduce", "SDN_controller.introduce",
      "S:protocol=ssl S:address I:tcp-port=6632", "SDN_controller" },
    { "sdn-controller-forget", "SDN_controller.forget", "U:SDN_controller", "" },
    { "pusb-scan", "PUSB.scan", "R:host-uuid:host", "" },
    { "vusb-create", "VUSB.create",
      "R:vm-uuid:VM R:usb-group-uuid:USB_group M:other-config", "VUSB" },
    { "vusb-unplug", "VUSB.unplug", "U:VUSB", "" },
    { "vusb-destroy", "VUSB.destroy", "U:VUSB", "" },
    { "cluster-pool-create", "Cluster.pool_create",
      "R:network-uuid:network S:cluster-stack=corosync", "Cluster" },
    { "cluster-pool-force-destroy", "Cluster.pool_force_destroy",
      "R:cluster-uuid:Cluster", "" },
    { "cluster-pool-destroy", "Cluster.pool_destroy", "R:cluster-uuid:Cluster",
      "" },
    { "cluster-pool-resync", "Cluster.pool_resync", "R:cluster-uuid:Cluster",
      "" },
    { "cluster-destroy", "Cluster.destroy", "U:Cluster", "" },
    { "cluster-host-disable", "Cluster_host.disable", "U:Cluster_host", "" },
    { "cluster-host-enable", "Cluster_host.enable", "U:Cluster_host", "" },
    { "cluster-host-destroy", "Cluster_host.destroy", "U:Cluster_host", "" },
    { "cluster-host-force-destroy", "Cluster_host.force_destroy",
      "U:Cluster_host", "" },
    { "repository-introduce", "Repository.introduce",
      "S:name-label S:name-description S:binary-url S:source-url B:update "
      "S:gpgkey-path", "Repository" },
    { "repository-forget", "Repository.forget", "U:Repository", "" },
    { "repository-set-gpgkey-path", "Repository.set_gpgkey_path",
      "U:Repository S:gpgkey-path", "" },
    { "vtpm-create", "VTPM.create", "R:vm-uuid:VM B:is-unique", "VTPM" },
    { "vtpm-destroy", "VTPM.destroy", "U:VTPM", "" },
    { "session-subject-identifier-logout", "session.logout_subject_identifier",
      "S:subject-identifier", "" },
    { "vm-data-source-list", "VM.get_data_sources", "V", "ds" },
    { "vm-data-source-record", "VM.record_data_source", "V S:data-source", "" },
    { "vm-data-source-query", "VM.query_data_source", "V S:data-source",
      "text" },
    { "vm-data-source-forget", "VM.forget_data_source_archives",
      "V S:data-source", "" },
    { "host-data-source-list", "host.get_data_sources", "H", "ds" },
    { "host-data-source-record", "host.record_data_source", "H S:data-source",
      "" },
    { "host-data-source-query", "host.query_data_source", "H S:data-source",
      "text" },
    { "host-data-source-forget", "host.forget_data_source_archives",
      "H S:data-source", "" },
    { "sr-data-source-list", "SR.get_data_sources", "Y", "ds" },
    { "sr-data-source-record", "SR.record_data_source", "Y S:data-source", "" },
    { "sr-data-source-query", "SR.query_data_source", "Y S:data-source",
      "text" },
    { "sr-data-source-forget", "SR.forget_data_source_archives",
      "Y S:data-source", "" },
    { "host-cpu-info", "host.get_cpu_info", "h:uuid", "map" },
    { "vm-snapshot-with-quiesce", "VM.snapshot_with_quiesce",
      "V S:new-name-label", "VM" },
    { "vm-retrieve-wlb-recommendations", "VM.retrieve_wlb_recommendations",
      "V", "map" },
    { "host-retrieve-wlb-evacuate-recommendations",
      "host.retrieve_wlb_evacuate_recommendations", "U:host", "map" },
    { "pool-retrieve-wlb-recommendations", "pool.retrieve_wlb_recommendations",
      "", "map" },
    { "host-license-view", "host.get_license_params", "h:host-uuid", "map" },
    { "vm-memory-target-wait", "VM.wait_memory_target_live", "V", "" },
    { "host-forget", "host.destroy", "U:host", "" },
    { "host-enable-display", "host.enable_display", "U:host", "text" },
    { "host-disable-display", "host.disable_display", "U:host", "text" },
    { "host-all-editions", "host.get_editions", "h:host-uuid", "text" },
    { "pool-join", "pool.join|pool.join_force",
      "S:master-address S:master-username S:master-password", "" },
    { "pool-initialize-wlb", "pool.initialize_wlb",
      "S:wlb_url S:wlb_username S:wlb_password S:xenserver_username "
      "S:xenserver_password", "" },
    { "pool-send-wlb-configuration", "pool.send_wlb_configuration", "M:config",
      "" },
    { "pool-send-test-post", "pool.send_test_post",
      "S:dest-host I:dest-port S:body", "text" },
    { "vlan-create", "VLAN.create",
      "R:pif-uuid:PIF I:vlan R:network-uuid:network", "VLAN" },
    { "pool-vlan-create", "pool.create_VLAN_from_PIF",
      "R:pif-uuid:PIF R:network-uuid:network I:vlan", "text" },
    { "lvhd-enable-thin-provisioning", "LVHD.enable_thin_provisioning",
      "H R:sr-uuid:SR I:initial-allocation I:allocation-quantum", "text" },
};

static const struct simple_op *
simple_op_find(const char *cmd)
{
    for (size_t i = 0; i < ARRAY_SIZE(simple_ops); i++) {
        if (!strcmp(simple_ops[i].cmd, cmd)) {
            return &simple_ops[i];
        }
    }
    return NULL;
}

/* The pool's ref (a standalone host is a pool of one). */
static int
the_pool(struct xe_conn *conn, char **ret_ref)
{
    struct value *v = NULL;
    int rc = -1;

    if (xe_callv(conn, "pool.get_all", &v, NULL)) {
        return -1;
    }
    if (v->type == VALUE_ARRAY && v->u.arr.n) {
        *ret_ref = xstrdup(v->u.arr.items[0]->u.str.s);
        rc = 0;
    }
    value_unref(v);
    return rc;
}

/* Builds the arguments of a simple op for one selected object (sel may be
 * NULL when the spec holds no V or H). */
static int
simple_params(struct xe_cmd_ctx *ctx, const char *spec, const char *sel,
              struct value **ret_params)
{
    struct value *params = value_array(8);
    char *copy = xstrdup(spec), *save = NULL;
    int rc = -1;

    for (char *tok = strtok_r(copy, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        char *a = strchr(tok, ':');
        char *key = a ? a + 1 : NULL;
        char *cls = key ? strchr(key, ':') : NULL;
        char *dflt = key ? strchr(key, '=') : NULL;
        const char *text;
        char *ref = NULL;

        if (a) {
            *a = '\0';
        }
        if (cls) {
            *cls++ = '\0';
        }
        if (dflt) {
            *dflt++ = '\0';
        }
        text = key ? xe_arg_get(ctx->args, key) : NULL;
        if (!strcmp(tok, "V") || !strcmp(tok, "H") || !strcmp(tok, "Y")) {
            value_array_append(params, value_string(sel));
        } else if (!strcmp(tok, "P")) {
            if (the_pool(ctx->conn, &ref)) {
                goto out;
            }
            value_array_append(params, value_string_take(ref));
        } else if (!strcmp(tok, "p") || !strcmp(tok, "h")) {
            if (text) {
                if (xe_lookup(ctx->conn, tok[0] == 'p' ? "pool" : "host", text,
                              false, &ref)) {
                    goto out;
                }
            } else if (tok[0] == 'p' ? the_pool(ctx->conn, &ref)
                                     : choose_host(ctx, &ref)) {
                goto out;
            }
            value_array_append(params, value_string_take(ref));
        } else if (!strcmp(tok, "U")) {
            if (ref_arg(ctx, "uuid", key, &ref)) {
                goto out;
            }
            value_array_append(params, value_string_take(ref));
        } else if (!strcmp(tok, "R") || !strcmp(tok, "r")) {
            if (!text && tok[0] == 'r') {
                value_array_append(params, value_null_ref());
                continue;
            }
            if (ref_arg(ctx, key, cls, &ref)) {
                goto out;
            }
            value_array_append(params, value_string_take(ref));
        } else if (!strcmp(tok, "S")) {
            value_array_append(params, str(text ? text : dflt));
        } else if (!strcmp(tok, "I") || !strcmp(tok, "F")) {
            const char *t = text ? text : dflt;
            int64_t i = 0;
            double d = 0;
            if (!t) {
                goto missing;
            }
            if (tok[0] == 'I' ? str_to_int64(t, &i) : str_to_double(t, &d)) {
                fprintf(stderr, "Error: %s=%s is not a number\n", key, t);
                goto out;
            }
            value_array_append(params, tok[0] == 'I' ? value_int(i)
                                                     : value_double(d));
        } else if (!strcmp(tok, "B")) {
            value_array_append(params, bool_arg(ctx, key, false));
        } else if (!strcmp(tok, "M")) {
            value_array_append(params, map_args(ctx->args, key));
        } else if (!strcmp(tok, "L") || !strcmp(tok, "Lr")) {
            struct value *set = value_array(4);
            char *list = xstrdup(text ? text : ""), *s2 = NULL;
            for (char *item = strtok_r(list, ",", &s2); item;
                 item = strtok_r(NULL, ",", &s2)) {
                if (tok[1] == 'r') {
                    if (xe_lookup(ctx->conn, cls, item, false, &ref)) {
                        free(list);
                        value_unref(set);
                        goto out;
                    }
                    value_array_append(set, value_string_take(ref));
                } else {
                    value_array_append(set, value_string(item));
                }
            }
            free(list);
            value_array_append(params, set);
        }
        continue;
missing:
        xe_missing(key);
        goto out;
    }
    *ret_params = params;
    params = NULL;
    rc = 0;
out:
    value_unref(params);
    free(copy);
    return rc;
}

static void
print_result(struct xe_conn *conn, const char *kind, const struct value *v)
{
    if (!*kind || !v) {
        return;
    }
    if (!strcmp(kind, "ds") && v->type == VALUE_ARRAY) {
        /* Records without refs: key them by position for the printer. */
        struct value *records = value_struct(v->u.arr.n);
        for (size_t i = 0; i < v->u.arr.n; i++) {
            char key[32];
            snprintf(key, sizeof key, "%zu", i);
            value_struct_put(records, key, value_ref(v->u.arr.items[i]));
        }
        xe_print_records(conn, cls_of("data_source"), records, NULL, false);
        value_unref(records);
    } else if (!strcmp(kind, "map") && v->type == VALUE_STRUCT) {
        for (size_t i = 0; i < v->u.st.n; i++) {
            char *t = value_is_string(v->u.st.m[i].v)
                      ? NULL : value_to_text(v->u.st.m[i].v);
            printf("%s: %s\n", v->u.st.m[i].name,
                   t ? t : v->u.st.m[i].v->u.str.s);
            free(t);
        }
    } else if (strcmp(kind, "text") && value_is_string(v)) {
        printf("%s\n", xe_ref_uuid(conn, kind, v->u.str.s));
    } else if (value_is_string(v)) {
        printf("%s\n", v->u.str.s);
    } else {
        char *t = value_to_text(v);
        printf("%s\n", t);
        free(t);
    }
}

static int
simple_call(struct xe_cmd_ctx *ctx, const struct simple_op *op,
            const char *sel)
{
    struct value *params = NULL, *v = NULL;
    const char *bar = strchr(op->method, '|');
    char *method;
    int rc;

    if (simple_params(ctx, op->spec, sel, &params)) {
        return -1;
    }
    if (bar && flag(ctx, "force")) {
        method = xstrdup(bar + 1);
    } else {
        method = bar ? xmemdup0(op->method, (size_t)(bar - op->method))
                     : xstrdup(op->method);
    }
    rc = xe_call(ctx->conn, method, params, &v);
    if (rc == 0) {
        print_result(ctx->conn, op->result, v);
    }
    value_unref(v);
    value_unref(params);
    free(method);
    return rc;
}

int
xe_op_simple(struct xe_cmd_ctx *ctx)
{
    const struct simple_op *op = simple_op_find(ctx->cmd->name);
    bool vm = op && op->spec[0] == 'V', host = op && op->spec[0] == 'H';
    bool sr = op && op->spec[0] == 'Y';
    char **refs = NULL;
    size_t n = 0;
    int rc = 0;

    if (!op) {
        fprintf(stderr, "Error: %s has no implementation\n", ctx->cmd->name);
        return -1;
    }
    if (!vm && !host && !sr) {
        return simple_call(ctx, op, NULL);
    }
    if (xe_select(ctx->conn, cls_of(vm ? "VM" : host ? "host" : "SR"),
                  vm ? "vm" : host ? "host" : "sr", ctx->args, true, &refs,
                  &n)) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (simple_call(ctx, op, refs[i])) {
            rc = -1;
        }
    }
    xe_free_strv(refs, n);
    return rc;
}
