/* list-vms.c — C SDK example: logs in and prints every VM, one line each:
 * uuid, power state, name; templates and the control domain are marked.
 *
 * Usage: list-vms URL|SOCKET USER PASSWORD
 * (URL such as http://host/ or https://host/; SOCKET the path of the
 * toolstack's Unix socket). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>

#include <xen/api/xen_all.h>

#include "transport.h"

int
main(int argc, char **argv)
{
    struct example_transport *t = NULL;
    xen_session *session = NULL;
    xen_vm_xen_vm_record_map *vms = NULL;
    size_t n_templates = 0, n_vms = 0;
    int rc = 1;

    if (argc != 4) {
        fprintf(stderr, "usage: %s URL|SOCKET USER PASSWORD\n", argv[0]);
        goto out;
    }
    t = example_transport_open(argv[1]);
    if (!t) {
        goto out;
    }
    xen_init();
    session = xen_session_login_with_password(example_call_func, t, argv[2],
                                              argv[3],
                                              xen_api_latest_version);
    if (!session->ok) {
        example_print_error("login failed", session);
        goto out;
    }
    if (!xen_vm_get_all_records(session, &vms)) {
        example_print_error("VM.get_all_records failed", session);
        goto out;
    }
    for (size_t i = 0; i < vms->size; i++) {
        const xen_vm_record *vm = vms->contents[i].val;
        const char *kind = vm->is_control_domain ? " (control domain)"
                           : vm->is_a_template ? " (template)" : "";

        if (vm->is_a_template) {
            n_templates++;
        } else {
            n_vms++;
        }
        printf("%s %s %s%s\n", vm->uuid,
               xen_vm_power_state_to_string(vm->power_state), vm->name_label,
               kind);
    }
    printf("%zu VMs, %zu templates\n", n_vms, n_templates);
    rc = 0;
out:
    xen_vm_xen_vm_record_map_free(vms);
    xen_session_logout(session);
    xen_fini();
    example_transport_close(t);
    return rc;
}
