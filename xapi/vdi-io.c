/* vdi-io.c — /import_raw_vdi and /export_raw_vdi (to be written). */
#include <config.h>
#include "api.h"
#include "http.h"

void
vdi_io_http_handler(struct http_exchange *hx, struct xapi *x)
{
    (void) x;
    http_respond(hx, 501, "text/plain", NULL, "not implemented\n", 16);
}
