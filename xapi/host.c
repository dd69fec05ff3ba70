/* host.c — hand-written host messages (issue 4's host work). */
#include <config.h>
#include "api.h"

const struct api_handler_entry host_handlers[] = {
    { NULL, NULL },
};
