/* sim.c — the simulator provider: a host that exists only in memory.
 *
 * Configuration is a comma-separated list of key=value pairs (from
 * --sim-config or the command line): cpus=N, memory_mib=N,
 * dom0_memory_mib=N, hostname=NAME.  Later issues give it domains,
 * devices, a guest agent and migration streams. */
#include <config.h>
#include "xenops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

struct sim_host {
    struct xenops_host up;      /* must be first */
    int cpus;
    int64_t memory_mib;
    int64_t dom0_memory_mib;
    char hostname[256];
};

static int
sim_open(const char *config, struct xenops_host **ret_host, char **ret_err)
{
    struct sim_host *h = xcalloc(1, sizeof *h);
    char *copy = xstrdup(config ? config : ""), *save = NULL, *tok;
    int rc = 0;

    h->cpus = 4;
    h->memory_mib = 16384;
    h->dom0_memory_mib = 1024;
    if (gethostname(h->hostname, sizeof h->hostname - 1)) {
        strcpy(h->hostname, "localhost");
    }
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        int64_t v = 0;
        if (!eq) {
            rc = -EINVAL;
            break;
        }
        *eq++ = '\0';
        if (!strcmp(tok, "hostname")) {
            snprintf(h->hostname, sizeof h->hostname, "%s", eq);
            continue;
        }
        if (str_to_int64(eq, &v) || v <= 0) {
            rc = -EINVAL;
            break;
        }
        if (!strcmp(tok, "cpus") && v <= 4096) {
            h->cpus = (int) v;
        } else if (!strcmp(tok, "memory_mib")) {
            h->memory_mib = v;
        } else if (!strcmp(tok, "dom0_memory_mib")) {
            h->dom0_memory_mib = v;
        } else {
            rc = -EINVAL;
            break;
        }
    }
    if (!rc && h->dom0_memory_mib >= h->memory_mib) {
        rc = -EINVAL;
    }
    if (rc) {
        *ret_err = xasprintf("bad simulator configuration '%s' (expected "
                             "cpus=N,memory_mib=N,dom0_memory_mib=N,"
                             "hostname=NAME)", config);
        free(h);
    } else {
        *ret_host = &h->up;
    }
    free(copy);
    return rc;
}

static void
sim_close(struct xenops_host *host)
{
    free(host);
}

static int
sim_host_info(struct xenops_host *host, struct xenops_host_info *info,
              char **ret_err)
{
    struct sim_host *h = (struct sim_host *) host;

    memset(info, 0, sizeof *info);
    snprintf(info->hostname, sizeof info->hostname, "%s", h->hostname);
    strcpy(info->xen_version, "4.17.0-sim");
    strcpy(info->capabilities,
           "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64");
    info->n_cpus = h->cpus;
    strcpy(info->cpu.vendor, "GenuineIntel");
    strcpy(info->cpu.model_name, "Simulated CPU @ 2.40GHz");
    info->cpu.family = 6;
    info->cpu.model = 85;
    info->cpu.stepping = 4;
    info->cpu.speed_mhz = 2400;
    strcpy(info->cpu.flags, "fpu de tsc msr pae mce cx8 apic sep mca cmov "
           "pat clflush mmx fxsr sse sse2 ht syscall nx lm constant_tsc "
           "nopl pni pclmulqdq ssse3 cx16 sse4_1 sse4_2 popcnt aes xsave avx "
           "hypervisor");
    info->memory_total = h->memory_mib << 20;
    info->dom0_memory = h->dom0_memory_mib << 20;
    info->memory_free = info->memory_total - info->dom0_memory;
    info->dom0_vcpus = h->cpus < 16 ? h->cpus : 16;
    return 0;
}

const struct xenops_provider xenops_sim_provider = {
    .name = "sim",
    .open = sim_open,
    .close = sim_close,
    .host_info = sim_host_info,
};
