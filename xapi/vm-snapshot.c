/* vm-snapshot.c — VM.snapshot, checkpoint, revert, provision (to be written). */
#include <config.h>
#include "api.h"

const struct api_handler_entry vmsnap_handlers[] = { { NULL, NULL } };
