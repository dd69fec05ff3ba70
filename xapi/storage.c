/* storage.c — SR, PBD, VDI and SM messages (to be written). */
#include <config.h>
#include "storage.h"

const struct api_handler_entry storage_handlers[] = { { NULL, NULL } };

int
storage_init(struct xapi *x, char **ret_err)
{
    (void) x;
    (void) ret_err;
    return 0;
}

void
storage_shutdown(struct xapi *x)
{
    (void) x;
}
