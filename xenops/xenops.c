/* xenops.c — picks a provider by name and forwards calls to it (see
 * xenops.h). */
#include <config.h>
#include "xenops.h"

#include <errno.h>
#include <string.h>

#include "util.h"

static const struct xenops_provider *const providers[] = {
    &xenops_sim_provider,
#ifdef HAVE_XEN
    &xenops_xen_provider,
#endif
};

int
xenops_open(const char *name, const char *config,
            struct xenops_host **ret_host, char **ret_err)
{
    for (size_t i = 0; i < ARRAY_SIZE(providers); i++) {
        if (!strcmp(providers[i]->name, name)) {
            struct xenops_host *h = NULL;
            int rc = providers[i]->open(config, &h, ret_err);
            if (!rc) {
                h->provider = providers[i];
                *ret_host = h;
            }
            return rc;
        }
    }
    *ret_err = xasprintf("unknown backend '%s'%s", name,
                         !strcmp(name, "xen")
                         ? " (built without libxen-dev)" : "");
    return -ENOENT;
}

void
xenops_close(struct xenops_host *host)
{
    if (host) {
        host->provider->close(host);
    }
}

int
xenops_host_info(struct xenops_host *host, struct xenops_host_info *ret_info,
                 char **ret_err)
{
    return host->provider->host_info(host, ret_info, ret_err);
}
