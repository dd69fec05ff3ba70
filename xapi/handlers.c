/* handlers.c — the registry of hand-written message handlers.  Messages
 * listed here have behaviour beyond the generic implementation; any other
 * message with behaviour answers NOT_IMPLEMENTED until its issue builds
 * it, so coverage can be counted.  Keep the table sorted by name. */
#include <config.h>
#include "api.h"

#include <stdlib.h>
#include <string.h>

struct handler_entry {
    const char *name;
    api_handler_fn *fn;
};

static const struct handler_entry handlers[] = {
    { "VM.destroy", api_vm_destroy },
    { "session.change_password", api_session_change_password },
    { "session.get_all_subject_identifiers",
      api_session_get_all_subject_identifiers },
    { "session.local_logout", api_session_local_logout },
    { "session.login_with_password", api_session_login_with_password },
    { "session.logout", api_session_logout },
    { "session.logout_subject_identifier",
      api_session_logout_subject_identifier },
};

static int
compare_entry(const void *key, const void *elem)
{
    return strcmp(key, ((const struct handler_entry *) elem)->name);
}

api_handler_fn *
api_find_handler(const char *name)
{
    const struct handler_entry *e = bsearch(name, handlers,
                                            ARRAY_SIZE(handlers),
                                            sizeof handlers[0],
                                            compare_entry);
    return e ? e->fn : NULL;
}
