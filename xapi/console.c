/* console.c — the /console HTTP handler (issue 4's console work). */
#include <config.h>
#include "api.h"

#include "http.h"

void
console_http_handler(struct http_exchange *hx, struct xapi *x)
{
    (void) x;
    http_respond(hx, 404, "text/plain", NULL, "not found\n", 10);
}
