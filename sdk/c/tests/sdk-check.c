/* sdk-check.c — checks the C SDK's behaviour against a running toolstack
 * and prints one TAP line per behaviour; tests/integration/test_sdk_c.py
 * builds it the way an application would (installed headers, pkg-config)
 * and runs it.  It uses the examples' libcurl transport.
 *
 * Usage: sdk-check URL|SOCKET USER PASSWORD */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xen/api/xen_all.h>

#include "transport.h"

static int failures;

static void
check(const char *name, bool ok, const xen_session *session)
{
    printf("%s - %s\n", ok ? "ok" : "not ok", name);
    if (!ok) {
        failures++;
        if (session && !session->ok) {
            example_print_error("#   session error", session);
        }
    }
}

/* A transport that always fails, as a dead network would. */
static int
failing_call_func(const void *data, size_t len, void *user_handle,
                  void *result_handle, xen_result_func result_func)
{
    return -1;
}

static void
check_records(xen_session *session)
{
    struct xen_vm_set *templates = NULL;
    xen_vm_record *rec = NULL, *copy = NULL;
    xen_string_string_map *other = NULL;
    xen_vm clone = NULL, created = NULL;
    char *desc = NULL;
    bool found = false;

    check("test_get_by_name_label_returns_a_set",
          xen_vm_get_by_name_label(session, &templates, "Debian Bookworm 12")
          && templates->size == 1, session);
    if (!templates || templates->size != 1) {
        goto out;
    }
    check("test_get_record_fills_the_record_and_its_handle",
          xen_vm_get_record(session, &rec, templates->contents[0])
          && !strcmp(rec->handle, templates->contents[0])
          && !strcmp(rec->name_label, "Debian Bookworm 12")
          && rec->is_a_template
          && rec->power_state == XEN_VM_POWER_STATE_HALTED
          && rec->resident_on && !rec->resident_on->is_record
          && rec->other_config != NULL, session);
    check("test_clone_returns_a_new_handle",
          xen_vm_clone(session, &clone, templates->contents[0], "sdk-check")
          && clone && strncmp(clone, "OpaqueRef:", 10) == 0, session);
    check("test_setters_and_getters_round_trip",
          xen_vm_set_is_a_template(session, clone, false)
          && xen_vm_set_name_description(session, clone, "from C")
          && xen_vm_get_name_description(session, &desc, clone)
          && !strcmp(desc, "from C"), session);
    check("test_map_add_and_get",
          xen_vm_add_to_other_config(session, clone, "sdk", "yes")
          && xen_vm_get_other_config(session, &other, clone), session);
    for (size_t i = 0; other && i < other->size; i++) {
        found |= !strcmp(other->contents[i].key, "sdk")
                 && !strcmp(other->contents[i].val, "yes");
    }
    check("test_map_holds_the_added_key", found, session);
    if (xen_vm_get_record(session, &copy, clone)) {
        free(copy->name_label);
        copy->name_label = strdup("sdk-check-created");
        check("test_create_from_a_whole_record",
              xen_vm_create(session, &created, copy) && created, session);
    } else {
        check("test_create_from_a_whole_record", false, session);
    }
    check("test_destroy",
          (!created || xen_vm_destroy(session, created))
          && xen_vm_destroy(session, clone), session);
out:
    xen_session_clear_error(session);
    free(desc);
    xen_string_string_map_free(other);
    xen_vm_record_free(copy);
    xen_vm_record_free(rec);
    xen_vm_free(created);
    xen_vm_free(clone);
    xen_vm_set_free(templates);
}

static void
check_errors(xen_session *session)
{
    xen_vm_record *rec = NULL;
    struct xen_vm_set *all = NULL;
    bool failed = !xen_vm_get_record(session, &rec,
                                     (xen_vm) "OpaqueRef:no-such-vm");

    check("test_failure_sets_ok_false_and_the_error_code",
          failed && !session->ok && rec == NULL
          && session->error_description_count >= 1
          && !strcmp(session->error_description[0], "HANDLE_INVALID"),
          NULL);
    check("test_calls_fail_until_the_error_is_cleared",
          !xen_vm_get_all(session, &all) && all == NULL, NULL);
    xen_session_clear_error(session);
    check("test_clear_error_makes_the_session_usable",
          session->ok && session->error_description_count == 0
          && xen_vm_get_all(session, &all) && all->size > 0, session);
    check("test_enum_to_string",
          !strcmp(xen_vm_power_state_to_string(XEN_VM_POWER_STATE_RUNNING),
                  "Running")
          && !strcmp(xen_vm_power_state_to_string(XEN_VM_POWER_STATE_UNDEFINED),
                     "undefined"), NULL);
    check("test_enum_from_string",
          xen_vm_power_state_from_string(session, "Paused")
          == XEN_VM_POWER_STATE_PAUSED && session->ok, session);
    check("test_enum_from_unknown_string_fails_the_session",
          xen_vm_power_state_from_string(session, "Sideways")
          == XEN_VM_POWER_STATE_UNDEFINED && !session->ok, NULL);
    xen_session_clear_error(session);
    xen_vm_set_free(all);
}

static void
check_free_accepts_null(void)
{
    xen_vm_record_free(NULL);
    xen_vm_record_opt_free(NULL);
    xen_vm_set_free(NULL);
    xen_vm_record_set_free(NULL);
    xen_string_set_free(NULL);
    xen_string_string_map_free(NULL);
    xen_vm_xen_vm_record_map_free(NULL);
    xen_event_batch_free(NULL);
    xen_vm_free(NULL);
    xen_session_logout(NULL);
    check("test_free_functions_accept_null", true, NULL);
}

/* A server that answers every call with one canned response, handed over
 * in pieces of piece_len bytes, and remembers the last request. */
struct canned {
    const char *response;
    size_t piece_len;
    char request[4096];
};

static int
canned_call_func(const void *data, size_t len, void *user_handle,
                 void *result_handle, xen_result_func result_func)
{
    struct canned *c = user_handle;
    size_t n = strlen(c->response);

    snprintf(c->request, sizeof c->request, "%.*s", (int) len,
             (const char *) data);
    for (size_t i = 0; i < n; i += c->piece_len) {
        size_t piece = n - i < c->piece_len ? n - i : c->piece_len;
        if (!result_func(c->response + i, piece, result_handle)) {
            return -1;
        }
    }
    return 0;
}

#define SUCCESS(V) "<?xml version=\"1.0\"?><methodResponse><params><param>" \
    "<value><struct><member><name>Status</name><value>Success</value>" \
    "</member><member><name>Value</name>" V "</member></struct></value>" \
    "</param></params></methodResponse>"

/* Decoding, checked without a server: what XenAPI servers send in ways
 * the toolstack itself may not. */
static void
check_decoding(void)
{
    struct canned c = { SUCCESS("<value>OpaqueRef:s</value>"), 1, "" };
    xen_session *s = xen_session_login_with_password(canned_call_func, &c,
                                                     "root", "pw",
                                                     xen_api_version_2_0);
    enum xen_vm_power_state state = XEN_VM_POWER_STATE_HALTED;
    int64_t i = 0;
    char *text = NULL;

    check("test_response_in_one_byte_pieces_is_decoded",
          s->ok && !strcmp(s->session_id, "OpaqueRef:s"), s);
    check("test_login_sends_user_password_and_version",
          strstr(c.request, "<methodName>session.login_with_password<")
          && strstr(c.request, "<value>root</value>")
          && strstr(c.request, "<value>2.0</value>"), NULL);
    c.piece_len = 64;
    c.response = SUCCESS("<value>Exploded</value>");
    check("test_unknown_enum_value_decodes_to_undefined",
          xen_vm_get_power_state(s, &state, (xen_vm) "OpaqueRef:v")
          && state == XEN_VM_POWER_STATE_UNDEFINED, s);
    check("test_call_sends_the_session_and_the_arguments",
          strstr(c.request, "<methodName>VM.get_power_state<")
          && strstr(c.request, "<value>OpaqueRef:s</value>")
          && strstr(c.request, "<value>OpaqueRef:v</value>"), NULL);
    c.response = SUCCESS("<value>1234567890123</value>");
    check("test_int_as_a_string_of_digits",
          xen_vm_get_user_version(s, &i, (xen_vm) "OpaqueRef:v")
          && i == 1234567890123LL, s);
    c.response = SUCCESS("<value><i8>-5</i8></value>");
    check("test_int_as_i8",
          xen_vm_get_user_version(s, &i, (xen_vm) "OpaqueRef:v") && i == -5,
          s);
    c.response = SUCCESS("<value><array><data/></array></value>");
    check("test_wrong_type_is_a_server_fault",
          !xen_vm_get_name_label(s, &text, (xen_vm) "OpaqueRef:v")
          && text == NULL && !strcmp(s->error_description[0], "SERVER_FAULT"),
          NULL);
    xen_session_clear_error(s);
    c.response = "<?xml version=\"1.0\"?><methodResponse><fault><value>"
                 "<struct><member><name>faultCode</name><value><int>1</int>"
                 "</value></member><member><name>faultString</name><value>"
                 "no such method</value></member></struct></value></fault>"
                 "</methodResponse>";
    check("test_xmlrpc_fault_is_a_server_fault",
          !xen_vm_get_name_label(s, &text, (xen_vm) "OpaqueRef:v")
          && !strcmp(s->error_description[0], "SERVER_FAULT")
          && !strcmp(s->error_description[1], "no such method"), NULL);
    xen_session_clear_error(s);
    c.response = "this is not XML";
    check("test_garbage_response_is_a_server_fault",
          !xen_vm_get_name_label(s, &text, (xen_vm) "OpaqueRef:v")
          && !strcmp(s->error_description[0], "SERVER_FAULT"), NULL);
    xen_session_clear_error(s);
    c.response = SUCCESS("<value></value>");
    xen_session_logout(s);
    check("test_logout_sends_session_logout",
          strstr(c.request, "<methodName>session.logout<") != NULL, NULL);
    free(text);
}

static void
check_transport_failure(void)
{
    xen_session *s = xen_session_login_with_password(failing_call_func, NULL,
                                                     "root", "x",
                                                     xen_api_latest_version);

    check("test_transport_failure_is_reported",
          s && !s->ok && s->error_description_count >= 1
          && !strcmp(s->error_description[0], "TRANSPORT_FAULT"), NULL);
    xen_session_logout(s);
}

int
main(int argc, char **argv)
{
    struct example_transport *t = NULL;
    xen_session *session = NULL;

    if (argc != 4) {
        fprintf(stderr, "usage: %s URL|SOCKET USER PASSWORD\n", argv[0]);
        return 2;
    }
    t = example_transport_open(argv[1]);
    if (!t) {
        return 2;
    }
    session = xen_session_login_with_password(example_call_func, t, argv[2],
                                              argv[3],
                                              xen_api_latest_version);
    check("test_login", session->ok && session->session_id
          && !strncmp(session->session_id, "OpaqueRef:", 10), session);
    if (session->ok) {
        check_records(session);
        check_errors(session);
    }
    check_free_accepts_null();
    check_transport_failure();
    check_decoding();
    xen_session_logout(session);
    example_transport_close(t);
    return failures ? 1 : 0;
}
