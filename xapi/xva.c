/* xva.c — VM /export and /import in the XVA format (to be written). */
#include <config.h>
#include "api.h"
#include "http.h"

void
xva_http_handler(struct http_exchange *hx, struct xapi *x)
{
    (void) x;
    http_respond(hx, 501, "text/plain", NULL, "not implemented\n", 16);
}
