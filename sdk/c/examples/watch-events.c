/* watch-events.c — C SDK example: follows changes with event.from and
 * prints one line per event: class, operation, reference.  The first call
 * (with an empty token) reports every existing object as "add"; each later
 * call waits up to its timeout for changes after the token it was given.
 *
 * Usage: watch-events URL|SOCKET USER PASSWORD [SECONDS [CLASS...]]
 * (watches for SECONDS, default 10; classes default to every class, "*"). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xen/api/xen_all.h>

#include "transport.h"

int
main(int argc, char **argv)
{
    struct example_transport *t = NULL;
    xen_session *session = NULL;
    struct xen_string_set *classes = NULL;
    char *token = NULL;
    double seconds = argc > 4 ? atof(argv[4]) : 10;
    time_t end;
    int rc = 1;

    if (argc < 4) {
        fprintf(stderr, "usage: %s URL|SOCKET USER PASSWORD [SECONDS "
                "[CLASS...]]\n", argv[0]);
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
    if (argc > 5) {
        classes = xen_string_set_alloc(argc - 5);
        for (int i = 5; i < argc; i++) {
            classes->contents[i - 5] = strdup(argv[i]);
        }
    } else {
        classes = xen_string_set_alloc(1);
        classes->contents[0] = strdup("*");
    }
    token = strdup("");
    end = time(NULL) + (time_t) seconds;
    for (;;) {
        struct xen_event_batch *batch = NULL;
        double left = difftime(end, time(NULL));

        if (left <= 0) {
            break;
        }
        if (!xen_event_from(session, &batch, classes, token,
                            left < 5 ? left : 5)) {
            example_print_error("event.from failed", session);
            goto out;
        }
        for (size_t i = 0; i < batch->events->size; i++) {
            const xen_event_record *ev = batch->events->contents[i];
            printf("%s %s %s\n", ev->XEN_CLAZZ,
                   xen_event_operation_to_string(ev->operation), ev->ref);
        }
        printf("# token %s\n", batch->token);
        fflush(stdout);
        /* The next call asks for what happened after this batch. */
        free(token);
        token = batch->token;
        batch->token = NULL;
        xen_event_batch_free(batch);
    }
    rc = 0;
out:
    free(token);
    xen_string_set_free(classes);
    xen_session_logout(session);
    example_transport_close(t);
    return rc;
}
