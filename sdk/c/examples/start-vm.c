/* start-vm.c — C SDK example: starts a VM as a task (VM.start run under
 * Async), follows the task to its end, prints the VM's power state, then
 * shuts the VM down cleanly and prints the state again.
 *
 * Usage: start-vm URL|SOCKET USER PASSWORD VM-NAME-OR-UUID */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xen/api/xen_all.h>

#include "transport.h"

/* Finds the VM by uuid, or else by its (unique) name. */
static bool
find_vm(xen_session *session, const char *which, xen_vm *ret_vm)
{
    struct xen_vm_set *vms = NULL;
    bool ok = false;

    if (strlen(which) == 36 && xen_vm_get_by_uuid(session, ret_vm, which)) {
        return true;
    }
    xen_session_clear_error(session);
    if (!xen_vm_get_by_name_label(session, &vms, which)) {
        example_print_error("VM.get_by_name_label failed", session);
        goto out;
    }
    if (vms->size != 1) {
        fprintf(stderr, "%zu VMs are called %s\n", vms->size, which);
        goto out;
    }
    *ret_vm = vms->contents[0];
    vms->contents[0] = NULL;
    ok = true;
out:
    xen_vm_set_free(vms);
    return ok;
}

/* Waits for the task to finish; true if it succeeded. */
static bool
wait_for_task(xen_session *session, xen_task task)
{
    enum xen_task_status_type status = XEN_TASK_STATUS_TYPE_PENDING;
    struct timespec pause = { 0, 50 * 1000 * 1000 };
    double progress = 0;

    while (status == XEN_TASK_STATUS_TYPE_PENDING) {
        nanosleep(&pause, NULL);
        if (!xen_task_get_status(session, &status, task)
            || !xen_task_get_progress(session, &progress, task)) {
            return false;
        }
    }
    printf("task %s, progress %.0f%%\n",
           xen_task_status_type_to_string(status), progress * 100);
    if (status != XEN_TASK_STATUS_TYPE_SUCCESS) {
        struct xen_string_set *info = NULL;
        if (xen_task_get_error_info(session, &info, task)) {
            fprintf(stderr, "the task failed:");
            for (size_t i = 0; i < info->size; i++) {
                fprintf(stderr, " %s", info->contents[i]);
            }
            fprintf(stderr, "\n");
        }
        xen_string_set_free(info);
        return false;
    }
    return true;
}

static void
print_power_state(xen_session *session, xen_vm vm)
{
    enum xen_vm_power_state state;

    if (xen_vm_get_power_state(session, &state, vm)) {
        printf("power state: %s\n", xen_vm_power_state_to_string(state));
    }
}

int
main(int argc, char **argv)
{
    struct example_transport *t = NULL;
    xen_session *session = NULL;
    xen_vm vm = NULL;
    xen_task task = NULL;
    int rc = 1;

    if (argc != 5) {
        fprintf(stderr, "usage: %s URL|SOCKET USER PASSWORD VM\n", argv[0]);
        goto out;
    }
    t = example_transport_open(argv[1]);
    if (!t) {
        goto out;
    }
    session = xen_session_login_with_password(example_call_func, t, argv[2],
                                              argv[3],
                                              xen_api_latest_version);
    if (!session->ok) {
        example_print_error("login failed", session);
        goto out;
    }
    if (!find_vm(session, argv[4], &vm)) {
        goto out;
    }
    print_power_state(session, vm);
    if (!xen_vm_start_async(session, &task, vm, false, false)) {
        example_print_error("Async.VM.start failed", session);
        goto out;
    }
    if (!wait_for_task(session, task)) {
        example_print_error("VM.start failed", session);
        goto out;
    }
    print_power_state(session, vm);
    if (!xen_vm_clean_shutdown(session, vm)) {
        example_print_error("VM.clean_shutdown failed", session);
        goto out;
    }
    print_power_state(session, vm);
    rc = 0;
out:
    if (task && session) {
        /* A finished task stays until destroyed; leave none behind. */
        xen_session_clear_error(session);
        xen_task_destroy(session, task);
    }
    xen_task_free(task);
    xen_vm_free(vm);
    xen_session_logout(session);
    example_transport_close(t);
    return rc;
}
