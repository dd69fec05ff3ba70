/* xen.c — the Xen provider: libxenctrl for what the hypervisor reports
 * about the host.  Built whenever libxen-dev is present; selected with
 * --backend xen on a Xen Dom0.  Domain management through libxl comes with
 * the VM lifecycle issue. */
#include <config.h>
#include "xenops.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xenctrl.h>

#include "util.h"

struct xen_host {
    struct xenops_host up;      /* must be first */
    xc_interface *xch;
};

static int
xen_open(const char *config, struct xenops_host **ret_host, char **ret_err)
{
    (void) config;
    struct xen_host *h = xcalloc(1, sizeof *h);

    h->xch = xc_interface_open(NULL, NULL, 0);
    if (!h->xch) {
        *ret_err = xasprintf("cannot open libxenctrl: %s (is this a Xen "
                             "Dom0?)", strerror(errno));
        free(h);
        return -ENODEV;
    }
    *ret_host = &h->up;
    return 0;
}

static void
xen_close(struct xenops_host *host)
{
    struct xen_host *h = (struct xen_host *) host;

    xc_interface_close(h->xch);
    free(h);
}

static int
xen_host_info(struct xenops_host *host, struct xenops_host_info *info,
              char **ret_err)
{
    struct xen_host *h = (struct xen_host *) host;
    xc_physinfo_t pi = { 0 };
    xen_extraversion_t extra;
    xen_capabilities_info_t caps;
    int ver;
    long pagesize = sysconf(_SC_PAGESIZE);

    memset(info, 0, sizeof *info);
    if (xc_physinfo(h->xch, &pi)) {
        *ret_err = xasprintf("xc_physinfo: %s", strerror(errno));
        return -errno;
    }
    ver = xc_version(h->xch, XENVER_version, NULL);
    memset(extra, 0, sizeof extra);
    xc_version(h->xch, XENVER_extraversion, &extra);
    snprintf(info->xen_version, sizeof info->xen_version, "%d.%d%s",
             ver >> 16, ver & 0xffff, extra);
    memset(caps, 0, sizeof caps);
    xc_version(h->xch, XENVER_capabilities, &caps);
    snprintf(info->capabilities, sizeof info->capabilities, "%.255s", caps);
    if (gethostname(info->hostname, sizeof info->hostname - 1)) {
        strcpy(info->hostname, "localhost");
    }
    info->n_cpus = pi.nr_cpus;
    info->cpu.speed_mhz = pi.cpu_khz / 1000;
    strcpy(info->cpu.vendor, "unknown");
    strcpy(info->cpu.model_name, "unknown");
    info->memory_total = (int64_t) pi.total_pages * pagesize;
    info->memory_free = (int64_t) pi.free_pages * pagesize;
    info->dom0_vcpus = pi.nr_cpus < 16 ? pi.nr_cpus : 16;
    return 0;
}

const struct xenops_provider xenops_xen_provider = {
    .name = "xen",
    .open = xen_open,
    .close = xen_close,
    .host_info = xen_host_info,
};
