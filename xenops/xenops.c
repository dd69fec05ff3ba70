/* xenops.c — picks a provider by name and forwards calls to it (see
 * xenops.h). */
#include <config.h>
#include "xenops.h"

#include <errno.h>
#include <stdlib.h>
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

static void
free_kvs(struct xenops_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

void
xenops_domain_info_clear(struct xenops_domain_info *info)
{
    free_kvs(info->guest.os_version, info->guest.n_os_version);
    free_kvs(info->guest.networks, info->guest.n_networks);
    info->guest.os_version = info->guest.networks = NULL;
    info->guest.n_os_version = info->guest.n_networks = 0;
}

void
xenops_vm_spec_free(struct xenops_vm_spec *spec)
{
    if (!spec) {
        return;
    }
    free(spec->name);
    free_kvs(spec->vcpus_params, spec->n_vcpus_params);
    free(spec->pv_kernel);
    free(spec->pv_ramdisk);
    free(spec->pv_args);
    free(spec->pv_bootloader);
    free(spec->pv_bootloader_args);
    free(spec->hvm_boot_order);
    free(spec->hvm_firmware);
    free_kvs(spec->platform, spec->n_platform);
    for (size_t i = 0; i < spec->n_vbds; i++) {
        free(spec->vbds[i].ref);
        free(spec->vbds[i].device);
        free(spec->vbds[i].target);
        free(spec->vbds[i].format);
    }
    free(spec->vbds);
    for (size_t i = 0; i < spec->n_vifs; i++) {
        free(spec->vifs[i].ref);
        free(spec->vifs[i].bridge);
    }
    free(spec->vifs);
    free(spec);
}
