/* vm-ops.c — VM messages on running VMs besides the power operations
 * (devices, sysrq, placement checks...; issue 4). */
#include <config.h>
#include "api.h"

const struct api_handler_entry vmops_handlers[] = {
    { NULL, NULL },
};
