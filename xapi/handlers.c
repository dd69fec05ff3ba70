/* handlers.c — the registry of hand-written message handlers.  Each module
 * with behaviour exports a table of (message name, handler) pairs, ended
 * by a NULL name; messages found in none of them use the generic
 * implementation, or answer NOT_IMPLEMENTED until their issue builds
 * them, so coverage can be counted.  The tables are merged into one
 * sorted index on first use. */
#include <config.h>
#include "api.h"
#include "storage.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const struct api_handler_entry core_handlers[] = {
    { "VM.clone", api_vm_clone },
    { "VM.copy", api_vm_copy },
    { "VM.destroy", api_vm_destroy },
    { "session.change_password", api_session_change_password },
    { "session.get_all_subject_identifiers",
      api_session_get_all_subject_identifiers },
    { "session.local_logout", api_session_local_logout },
    { "session.login_with_password", api_session_login_with_password },
    { "session.logout", api_session_logout },
    { "session.logout_subject_identifier",
      api_session_logout_subject_identifier },
    { "task.cancel", api_task_cancel },
    { "task.create", api_task_create },
    { "task.destroy", api_task_destroy },
    { "task.set_error_info", api_task_set_error_info },
    { "task.set_progress", api_task_set_progress_msg },
    { "task.set_result", api_task_set_result },
    { "task.set_status", api_task_set_status },
    { NULL, NULL },
};

static const struct api_handler_entry *const tables[] = {
    core_handlers,
    events_handlers,
    rbac_handlers,
    lifecycle_handlers,
    vm_handlers,
    host_handlers,
    vmops_handlers,
    storage_handlers,
    vmsnap_handlers,
};

static struct api_handler_entry *index_;
static size_t n_index;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static int
compare_entries(const void *a, const void *b)
{
    return strcmp(((const struct api_handler_entry *) a)->name,
                  ((const struct api_handler_entry *) b)->name);
}

static void
build_index(void)
{
    for (size_t t = 0; t < ARRAY_SIZE(tables); t++) {
        for (const struct api_handler_entry *e = tables[t]; e->name; e++) {
            if (api_message_find(e->name) < 0) {
                xabort("handler for unknown message %s", e->name);
            }
            index_ = xrealloc(index_, (n_index + 1) * sizeof *index_);
            index_[n_index++] = *e;
        }
    }
    qsort(index_, n_index, sizeof *index_, compare_entries);
    for (size_t i = 1; i < n_index; i++) {
        if (!strcmp(index_[i - 1].name, index_[i].name)) {
            xabort("two handlers for %s", index_[i].name);
        }
    }
}

static int
compare_key(const void *key, const void *elem)
{
    return strcmp(key, ((const struct api_handler_entry *) elem)->name);
}

api_handler_fn *
api_find_handler(const char *name)
{
    const struct api_handler_entry *e;

    pthread_once(&index_once, build_index);
    e = bsearch(name, index_, n_index, sizeof *index_, compare_key);
    return e ? e->fn : NULL;
}
