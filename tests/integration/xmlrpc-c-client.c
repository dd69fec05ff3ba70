/* xmlrpc-c-client.c — talks to xapi with the xmlrpc-c client library, an
 * XML-RPC implementation independent of both the daemon's codec
 * (lib/xmlrpc.c) and Python's xmlrpc.client used by the other integration
 * tests, to catch wire-format assumptions the two might share.
 *
 *   xmlrpc-c-client URL USER PASSWORD
 *
 * It logs in, reads pool.get_all, VM.get_all_records (the control domain
 * must be there, its memory_static_max a decimal string as XenAPI sends
 * 64-bit ints), host.get_record, checks an error (VM.get_record of a bad
 * ref is HANDLE_INVALID [VM, ref]) and logs out, printing one TAP line
 * ("ok - name" / "not ok - name") per check; the exit status is 1 if one
 * failed.  test_xmlrpc_c.py starts a daemon and runs it; automake builds it
 * (tests/automake.mk) when xmlrpc-c is installed. */
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xmlrpc-c/base.h>
#include <xmlrpc-c/client.h>

static int n_failed;

static void
report(bool ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
report(bool ok, const char *name, const char *fmt, ...)
{
    printf("%s - %s\n", ok ? "ok" : "not ok", name);
    if (!ok) {
        va_list ap;
        n_failed++;
        if (fmt) {
            printf("#   ");
            va_start(ap, fmt);
            vprintf(fmt, ap);
            va_end(ap);
            printf("\n");
        }
    }
    fflush(stdout);
}

struct conn {
    xmlrpc_env env;
    xmlrpc_client *client;
    xmlrpc_server_info *server;
};

enum outcome { OUT_SUCCESS, OUT_FAILURE, OUT_BROKEN };

/* Calls method; on Success stores the Value in *ret_value, on Failure the
 * ErrorDescription array in *ret_value (a new reference either way).  On
 * a transport or decoding problem, describes it in why[]. */
static enum outcome
call(struct conn *c, const char *method, xmlrpc_value *params,
     xmlrpc_value **ret_value, char *why, size_t why_len)
{
    xmlrpc_env env;
    xmlrpc_value *resp = NULL, *status = NULL, *v = NULL;
    const char *st = NULL;
    enum outcome out = OUT_BROKEN;

    *ret_value = NULL;
    xmlrpc_env_init(&env);
    xmlrpc_client_call2(&env, c->client, c->server, method, params, &resp);
    if (env.fault_occurred) {
        snprintf(why, why_len, "%s: call failed: %s", method,
                 env.fault_string);
        goto out;
    }
    if (xmlrpc_value_type(resp) != XMLRPC_TYPE_STRUCT) {
        snprintf(why, why_len, "%s: response is not a struct", method);
        goto out;
    }
    xmlrpc_struct_find_value(&env, resp, "Status", &status);
    if (env.fault_occurred || !status) {
        snprintf(why, why_len, "%s: no Status member", method);
        goto out;
    }
    xmlrpc_read_string(&env, status, &st);
    if (env.fault_occurred) {
        snprintf(why, why_len, "%s: Status is not a string", method);
        goto out;
    }
    if (!strcmp(st, "Success")) {
        xmlrpc_struct_find_value(&env, resp, "Value", &v);
        out = OUT_SUCCESS;
    } else if (!strcmp(st, "Failure")) {
        xmlrpc_struct_find_value(&env, resp, "ErrorDescription", &v);
        out = OUT_FAILURE;
    }
    if (env.fault_occurred || !v) {
        snprintf(why, why_len, "%s: Status %s without its value", method, st);
        out = OUT_BROKEN;
        goto out;
    }
    *ret_value = v;
    v = NULL;
out:
    free((void *) st);
    if (status) {
        xmlrpc_DECREF(status);
    }
    if (v) {
        xmlrpc_DECREF(v);
    }
    if (resp) {
        xmlrpc_DECREF(resp);
    }
    xmlrpc_env_clean(&env);
    return out;
}

/* The string in v, or NULL if v is not a string (caller frees). */
static char *
string_of(xmlrpc_value *v)
{
    xmlrpc_env env;
    const char *s = NULL;

    if (!v || xmlrpc_value_type(v) != XMLRPC_TYPE_STRING) {
        return NULL;
    }
    xmlrpc_env_init(&env);
    xmlrpc_read_string(&env, v, &s);
    if (env.fault_occurred) {
        s = NULL;
    }
    xmlrpc_env_clean(&env);
    return (char *) s;
}

/* Member name of struct st as a string (caller frees), or NULL. */
static char *
member_string(xmlrpc_value *st, const char *name)
{
    xmlrpc_env env;
    xmlrpc_value *v = NULL;
    char *s;

    xmlrpc_env_init(&env);
    xmlrpc_struct_find_value(&env, st, name, &v);
    xmlrpc_env_clean(&env);
    s = string_of(v);
    if (v) {
        xmlrpc_DECREF(v);
    }
    return s;
}

/* Member name of struct st as a bool: 1, 0, or -1 if not a bool. */
static int
member_bool(xmlrpc_value *st, const char *name)
{
    xmlrpc_env env;
    xmlrpc_value *v = NULL;
    xmlrpc_bool b = 0;
    int r = -1;

    xmlrpc_env_init(&env);
    xmlrpc_struct_find_value(&env, st, name, &v);
    if (!env.fault_occurred && v && xmlrpc_value_type(v) == XMLRPC_TYPE_BOOL) {
        xmlrpc_read_bool(&env, v, &b);
        r = env.fault_occurred ? -1 : b != 0;
    }
    if (v) {
        xmlrpc_DECREF(v);
    }
    xmlrpc_env_clean(&env);
    return r;
}

static bool
is_decimal(const char *s)
{
    if (!s || !*s) {
        return false;
    }
    if (*s == '-') {
        s++;
    }
    for (; *s; s++) {
        if (!isdigit((unsigned char) *s)) {
            return false;
        }
    }
    return true;
}

/* The error array as "CODE p1 p2 ..." into buf; returns buf. */
static const char *
describe_error(xmlrpc_value *arr, char *buf, size_t len)
{
    xmlrpc_env env;
    size_t used = 0;
    int n;

    buf[0] = '\0';
    if (!arr || xmlrpc_value_type(arr) != XMLRPC_TYPE_ARRAY) {
        snprintf(buf, len, "(not an array)");
        return buf;
    }
    xmlrpc_env_init(&env);
    n = xmlrpc_array_size(&env, arr);
    for (int i = 0; i < n && used + 1 < len; i++) {
        xmlrpc_value *item = NULL;
        char *s;
        xmlrpc_array_read_item(&env, arr, i, &item);
        s = string_of(item);
        used += snprintf(buf + used, len - used, "%s%s", i ? " " : "",
                         s ? s : "(not a string)");
        free(s);
        if (item) {
            xmlrpc_DECREF(item);
        }
    }
    xmlrpc_env_clean(&env);
    return buf;
}

/* Item i of the error array equals want. */
static bool
error_item_is(xmlrpc_value *arr, int i, const char *want)
{
    xmlrpc_env env;
    xmlrpc_value *item = NULL;
    char *s = NULL;
    bool ok;

    xmlrpc_env_init(&env);
    if (xmlrpc_value_type(arr) == XMLRPC_TYPE_ARRAY
        && i < xmlrpc_array_size(&env, arr)) {
        xmlrpc_array_read_item(&env, arr, i, &item);
        s = string_of(item);
    }
    ok = s && !strcmp(s, want);
    free(s);
    if (item) {
        xmlrpc_DECREF(item);
    }
    xmlrpc_env_clean(&env);
    return ok;
}

static void
check_vm_records(struct conn *c, const char *session)
{
    char why[512], err[512];
    xmlrpc_value *params = xmlrpc_build_value(&c->env, "(s)", session);
    xmlrpc_value *recs = NULL;
    enum outcome o = call(c, "VM.get_all_records", params, &recs, why,
                          sizeof why);
    int n, dom0s = 0;
    bool mem_ok = false;
    char *mem = NULL;

    xmlrpc_DECREF(params);
    report(o == OUT_SUCCESS && xmlrpc_value_type(recs) == XMLRPC_TYPE_STRUCT,
           "test_xmlrpc_c_VM_get_all_records_is_a_struct", "%s",
           o == OUT_BROKEN ? why
           : o == OUT_FAILURE ? describe_error(recs, err, sizeof err)
           : "not a struct");
    if (o != OUT_SUCCESS || xmlrpc_value_type(recs) != XMLRPC_TYPE_STRUCT) {
        goto out;
    }
    n = xmlrpc_struct_size(&c->env, recs);
    for (int i = 0; i < n; i++) {
        xmlrpc_value *key = NULL, *rec = NULL;
        xmlrpc_struct_read_member(&c->env, recs, i, &key, &rec);
        if (c->env.fault_occurred) {
            break;
        }
        if (xmlrpc_value_type(rec) == XMLRPC_TYPE_STRUCT
            && member_bool(rec, "is_control_domain") == 1) {
            dom0s++;
            free(mem);
            mem = member_string(rec, "memory_static_max");
            mem_ok = is_decimal(mem);
        }
        xmlrpc_DECREF(key);
        xmlrpc_DECREF(rec);
    }
    report(dom0s == 1, "test_xmlrpc_c_control_domain_is_in_VM_get_all_records",
           "%d VMs with is_control_domain true among %d", dom0s, n);
    report(mem_ok, "test_xmlrpc_c_memory_static_max_is_a_decimal_string",
           "memory_static_max of the control domain: %s",
           mem ? mem : "(not a string)");
out:
    free(mem);
    if (recs) {
        xmlrpc_DECREF(recs);
    }
}

static void
check_host_record(struct conn *c, const char *session)
{
    char why[512], err[512];
    xmlrpc_value *params = xmlrpc_build_value(&c->env, "(s)", session);
    xmlrpc_value *hosts = NULL, *host = NULL, *rec = NULL;
    char *ref = NULL, *uuid = NULL, *major = NULL, *label = NULL;
    enum outcome o = call(c, "host.get_all", params, &hosts, why, sizeof why);

    xmlrpc_DECREF(params);
    if (o != OUT_SUCCESS || xmlrpc_value_type(hosts) != XMLRPC_TYPE_ARRAY
        || xmlrpc_array_size(&c->env, hosts) != 1) {
        report(false, "test_xmlrpc_c_host_get_record", "host.get_all: %s",
               o == OUT_BROKEN ? why : "not one host");
        goto out;
    }
    xmlrpc_array_read_item(&c->env, hosts, 0, &host);
    ref = string_of(host);
    params = xmlrpc_build_value(&c->env, "(ss)", session, ref ? ref : "");
    o = call(c, "host.get_record", params, &rec, why, sizeof why);
    xmlrpc_DECREF(params);
    if (o != OUT_SUCCESS || xmlrpc_value_type(rec) != XMLRPC_TYPE_STRUCT) {
        report(false, "test_xmlrpc_c_host_get_record", "%s",
               o == OUT_BROKEN ? why
               : o == OUT_FAILURE ? describe_error(rec, err, sizeof err)
               : "not a struct");
        goto out;
    }
    uuid = member_string(rec, "uuid");
    major = member_string(rec, "API_version_major");
    label = member_string(rec, "name_label");
    report(uuid && strlen(uuid) == 36 && label && is_decimal(major)
           && member_bool(rec, "enabled") == 1,
           "test_xmlrpc_c_host_get_record",
           "uuid %s, name_label %s, API_version_major %s, enabled %d",
           uuid ? uuid : "?", label ? label : "?", major ? major : "?",
           member_bool(rec, "enabled"));
out:
    free(ref);
    free(uuid);
    free(major);
    free(label);
    if (rec) {
        xmlrpc_DECREF(rec);
    }
    if (host) {
        xmlrpc_DECREF(host);
    }
    if (hosts) {
        xmlrpc_DECREF(hosts);
    }
}

static void
check_errors(struct conn *c, const char *session)
{
    static const char bad[] = "OpaqueRef:00000000-0000-0000-0000-000000000bad";
    char why[512], err[512];
    xmlrpc_value *params = xmlrpc_build_value(&c->env, "(ss)", session, bad);
    xmlrpc_value *v = NULL;
    enum outcome o = call(c, "VM.get_record", params, &v, why, sizeof why);

    xmlrpc_DECREF(params);
    report(o == OUT_FAILURE && error_item_is(v, 0, "HANDLE_INVALID")
           && error_item_is(v, 1, "VM") && error_item_is(v, 2, bad),
           "test_xmlrpc_c_VM_get_record_of_bad_ref_is_HANDLE_INVALID", "%s",
           o == OUT_BROKEN ? why : describe_error(v, err, sizeof err));
    if (v) {
        xmlrpc_DECREF(v);
        v = NULL;
    }

    /* Too many parameters: the count is checked first. */
    params = xmlrpc_build_value(&c->env, "(si)", session, 7);
    o = call(c, "VM.get_all", params, &v, why, sizeof why);
    xmlrpc_DECREF(params);
    report(o == OUT_FAILURE
           && error_item_is(v, 0, "MESSAGE_PARAMETER_COUNT_MISMATCH")
           && error_item_is(v, 1, "VM.get_all") && error_item_is(v, 2, "1")
           && error_item_is(v, 3, "2"),
           "test_xmlrpc_c_wrong_parameter_count_is_reported", "%s",
           o == OUT_BROKEN ? why : describe_error(v, err, sizeof err));
    if (v) {
        xmlrpc_DECREF(v);
    }
}

/* xmlrpc-c sends C ints as <i4>; XenAPI's ints travel as strings, but an
 * <i4> for an int parameter or record field must be accepted too. */
static void
check_i4(struct conn *c, const char *session)
{
    char why[512];
    xmlrpc_value *params, *v = NULL;
    char *net = NULL, *mtu = NULL;
    enum outcome o;

    params = xmlrpc_build_value(&c->env, "(s{s:s,s:i,s:{}})", session,
                                "name_label", "xmlrpc-c net", "MTU", 9000,
                                "other_config");
    o = call(c, "network.create", params, &v, why, sizeof why);
    xmlrpc_DECREF(params);
    net = o == OUT_SUCCESS ? string_of(v) : NULL;
    if (v) {
        xmlrpc_DECREF(v);
        v = NULL;
    }
    if (net) {
        params = xmlrpc_build_value(&c->env, "(ssi)", session, net, 1400);
        o = call(c, "network.set_MTU", params, &v, why, sizeof why);
        xmlrpc_DECREF(params);
        if (v) {
            xmlrpc_DECREF(v);
            v = NULL;
        }
        params = xmlrpc_build_value(&c->env, "(ss)", session, net);
        if (o == OUT_SUCCESS) {
            o = call(c, "network.get_MTU", params, &v, why, sizeof why);
            mtu = o == OUT_SUCCESS ? string_of(v) : NULL;
            if (v) {
                xmlrpc_DECREF(v);
                v = NULL;
            }
        }
        call(c, "network.destroy", params, &v, why, sizeof why);
        xmlrpc_DECREF(params);
        if (v) {
            xmlrpc_DECREF(v);
            v = NULL;
        }
    }
    report(net && mtu && !strcmp(mtu, "1400"),
           "test_xmlrpc_c_i4_ints_are_accepted_for_int_params_and_fields",
           "network %s, MTU %s: %s", net ? net : "not created",
           mtu ? mtu : "?", o == OUT_BROKEN ? why : "");
    free(net);
    free(mtu);
}

/* XenAPI's datetimes ("20240101T00:00:00Z") decode as xmlrpc-c datetimes. */
static void
check_datetime(struct conn *c, const char *session)
{
    char why[512], err[512];
    xmlrpc_value *params = xmlrpc_build_value(&c->env, "(s)", session);
    xmlrpc_value *all = NULL, *item = NULL, *v = NULL;
    char *ref = NULL;
    enum outcome o = call(c, "host_metrics.get_all", params, &all, why,
                          sizeof why);
    bool ok = false;

    xmlrpc_DECREF(params);
    if (o == OUT_SUCCESS && xmlrpc_value_type(all) == XMLRPC_TYPE_ARRAY
        && xmlrpc_array_size(&c->env, all) > 0) {
        xmlrpc_array_read_item(&c->env, all, 0, &item);
        ref = string_of(item);
    }
    params = xmlrpc_build_value(&c->env, "(ss)", session, ref ? ref : "");
    o = call(c, "host_metrics.get_last_updated", params, &v, why, sizeof why);
    xmlrpc_DECREF(params);
    if (o == OUT_SUCCESS && xmlrpc_value_type(v) == XMLRPC_TYPE_DATETIME) {
        xmlrpc_env env;
        time_t t = 0;
        xmlrpc_env_init(&env);
        xmlrpc_read_datetime_sec(&env, v, &t);
        ok = !env.fault_occurred && t > 1500000000;
        xmlrpc_env_clean(&env);
    }
    report(ok, "test_xmlrpc_c_datetime_decodes", "%s",
           o == OUT_BROKEN ? why
           : o == OUT_FAILURE ? describe_error(v, err, sizeof err)
           : "not a recent <dateTime.iso8601>");
    free(ref);
    if (v) {
        xmlrpc_DECREF(v);
    }
    if (item) {
        xmlrpc_DECREF(item);
    }
    if (all) {
        xmlrpc_DECREF(all);
    }
}

int
main(int argc, char *argv[])
{
    struct conn c;
    char why[512], err[512];
    xmlrpc_value *params, *v = NULL;
    char *session = NULL;
    enum outcome o;

    if (argc != 4) {
        fprintf(stderr, "usage: %s URL USER PASSWORD\n", argv[0]);
        return 2;
    }
    xmlrpc_env_init(&c.env);
    xmlrpc_client_setup_global_const(&c.env);
    xmlrpc_client_create(&c.env, XMLRPC_CLIENT_NO_FLAGS, "xapi-it", "1.0",
                         NULL, 0, &c.client);
    if (c.env.fault_occurred) {
        printf("not ok - test_xmlrpc_c_client_starts\n#   %s\n",
               c.env.fault_string);
        return 1;
    }
    c.server = xmlrpc_server_info_new(&c.env, argv[1]);

    /* login */
    params = xmlrpc_build_value(&c.env, "(ssss)", argv[2], argv[3], "1.1",
                                "xmlrpc-c-client");
    o = call(&c, "session.login_with_password", params, &v, why, sizeof why);
    xmlrpc_DECREF(params);
    session = o == OUT_SUCCESS ? string_of(v) : NULL;
    report(session && !strncmp(session, "OpaqueRef:", 10),
           "test_xmlrpc_c_login_with_password", "%s",
           o == OUT_BROKEN ? why
           : o == OUT_FAILURE ? describe_error(v, err, sizeof err)
           : "the session is not an OpaqueRef string");
    if (v) {
        xmlrpc_DECREF(v);
        v = NULL;
    }

    /* wrong password */
    params = xmlrpc_build_value(&c.env, "(ss)", argv[2], "not the password");
    o = call(&c, "session.login_with_password", params, &v, why, sizeof why);
    xmlrpc_DECREF(params);
    report(o == OUT_FAILURE
           && error_item_is(v, 0, "SESSION_AUTHENTICATION_FAILED"),
           "test_xmlrpc_c_login_with_wrong_password_fails", "%s",
           o == OUT_BROKEN ? why : o == OUT_SUCCESS ? "logged in"
           : describe_error(v, err, sizeof err));
    if (v) {
        xmlrpc_DECREF(v);
        v = NULL;
    }

    if (session) {
        char *pool;

        /* pool.get_all */
        params = xmlrpc_build_value(&c.env, "(s)", session);
        o = call(&c, "pool.get_all", params, &v, why, sizeof why);
        xmlrpc_DECREF(params);
        pool = NULL;
        if (o == OUT_SUCCESS && xmlrpc_value_type(v) == XMLRPC_TYPE_ARRAY
            && xmlrpc_array_size(&c.env, v) == 1) {
            xmlrpc_value *item = NULL;
            xmlrpc_array_read_item(&c.env, v, 0, &item);
            pool = string_of(item);
            xmlrpc_DECREF(item);
        }
        report(pool && !strncmp(pool, "OpaqueRef:", 10),
               "test_xmlrpc_c_pool_get_all_has_one_pool", "%s",
               o == OUT_BROKEN ? why
               : o == OUT_FAILURE ? describe_error(v, err, sizeof err)
               : "not an array of one ref");
        free(pool);
        if (v) {
            xmlrpc_DECREF(v);
            v = NULL;
        }

        check_vm_records(&c, session);
        check_host_record(&c, session);
        check_errors(&c, session);
        check_i4(&c, session);
        check_datetime(&c, session);

        /* logout, then the session is invalid */
        params = xmlrpc_build_value(&c.env, "(s)", session);
        o = call(&c, "session.logout", params, &v, why, sizeof why);
        {
            char *empty = o == OUT_SUCCESS ? string_of(v) : NULL;
            report(empty && !*empty, "test_xmlrpc_c_logout_returns_void",
                   "%s", o == OUT_BROKEN ? why
                   : o == OUT_FAILURE ? describe_error(v, err, sizeof err)
                   : "not an empty string");
            free(empty);
        }
        if (v) {
            xmlrpc_DECREF(v);
            v = NULL;
        }
        o = call(&c, "pool.get_all", params, &v, why, sizeof why);
        xmlrpc_DECREF(params);
        report(o == OUT_FAILURE && error_item_is(v, 0, "SESSION_INVALID")
               && error_item_is(v, 1, session),
               "test_xmlrpc_c_session_is_invalid_after_logout", "%s",
               o == OUT_BROKEN ? why : o == OUT_SUCCESS ? "call succeeded"
               : describe_error(v, err, sizeof err));
        if (v) {
            xmlrpc_DECREF(v);
            v = NULL;
        }
    }

    free(session);
    xmlrpc_server_info_free(c.server);
    xmlrpc_client_destroy(c.client);
    xmlrpc_client_teardown_global_const();
    xmlrpc_env_clean(&c.env);
    return n_failed ? 1 : 0;
}
