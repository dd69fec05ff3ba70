/* xenops.h — the domain manager's provider interface.
 *
 * A provider drives one kind of hypervisor: "sim" (an in-memory simulator,
 * what tests and the quick start run on) or "xen" (libxl, libxenctrl and
 * libxenstore on a Xen Dom0).  The toolstack asks it what the host is and,
 * in later issues, to build, run and stop domains.
 *
 * Lifecycle: open() once at start-up with the provider's configuration
 * string, close() at shutdown.  Other calls may come from any thread.
 * Functions return 0 or a negative errno value and put a message in
 * *ret_err (malloc'd) when they fail; they log at debug level at most. */
#ifndef XENOPS_H
#define XENOPS_H 1

#include <stddef.h>
#include <stdint.h>

struct xenops_host;

struct xenops_cpu {
    char vendor[64];
    char model_name[128];
    int family, model, stepping;
    int64_t speed_mhz;
    char flags[512];
};

struct xenops_host_info {
    char hostname[256];
    char xen_version[64];       /* "4.17.3" */
    char capabilities[256];     /* "xen-3.0-x86_64 hvm-3.0-x86_64 ..." */
    int n_cpus;
    struct xenops_cpu cpu;      /* all CPUs are alike */
    int64_t memory_total;       /* bytes */
    int64_t memory_free;        /* bytes */
    int64_t dom0_memory;        /* bytes used by the control domain */
    int dom0_vcpus;
};

struct xenops_provider {
    const char *name;
    int (*open)(const char *config, struct xenops_host **ret_host,
                char **ret_err);
    void (*close)(struct xenops_host *host);
    int (*host_info)(struct xenops_host *host,
                     struct xenops_host_info *ret_info, char **ret_err);
};

extern const struct xenops_provider xenops_sim_provider;
#ifdef HAVE_XEN
extern const struct xenops_provider xenops_xen_provider;
#endif

/* A host handle remembers its provider. */
struct xenops_host {
    const struct xenops_provider *provider;
};

/* Opens the named provider ("sim", "xen"). */
int xenops_open(const char *name, const char *config,
                struct xenops_host **ret_host, char **ret_err);
void xenops_close(struct xenops_host *host);    /* accepts NULL */
int xenops_host_info(struct xenops_host *host,
                     struct xenops_host_info *ret_info, char **ret_err);

#endif
