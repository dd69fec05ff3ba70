/* xenops.h — the domain manager's provider interface.
 *
 * A provider drives one kind of hypervisor: "sim" (an in-memory simulator,
 * what tests and the quick start run on; sim.c) or "xen" (libxl,
 * libxenctrl and libxenstore on a Xen Dom0; xen.c).  xapi/vm.c turns
 * VM records into struct xenops_vm_spec and calls the provider; the
 * provider never sees the database.
 *
 * Lifecycle: open() once at start-up with the provider's configuration
 * string, close() at shutdown.  Every other call may come from any thread;
 * calls for one domain are serialized by the caller (one operation per VM
 * at a time).  Functions return 0 or a negative errno value and put a
 * message in *ret_err (malloc'd) when they fail; they log at debug level at
 * most.  Specific failures: -ENOMEM means the host lacks free memory for
 * the domain (HOST_NOT_ENOUGH_FREE_MEMORY), -ENOENT an unknown domid,
 * -EOPNOTSUPP an operation the guest or provider cannot do (no PV drivers
 * for a clean shutdown or hotplug).  Members a provider cannot support are
 * NULL; the caller answers with the API's error.
 *
 * Changes the provider notices by itself (a guest shut down, rebooted or
 * crashed; guest agent data changed; statistics) are reported through the
 * update callback set with set_update_callback(), from the provider's own
 * thread; the callback must not call back into the provider. */
#ifndef XENOPS_H
#define XENOPS_H 1

#include <stdbool.h>
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

/* A key/value pair of a VM record's map (platform, VCPUs_params...). */
struct xenops_kv {
    char *key;
    char *value;
};

enum xenops_domain_type { XENOPS_PV, XENOPS_PVH, XENOPS_HVM };

struct xenops_vbd_spec {
    char *ref;                  /* the VBD's ref, to match updates */
    char *device;               /* "xvda", "hda" */
    int position;               /* userdevice: 0, 1, ... */
    bool read_only;
    bool cdrom;
    bool empty;                 /* a CD drive with no disc */
    char *target;               /* what the backend serves: a path or an
                                   nbd+unix:// socket URI; NULL if empty */
    char *format;               /* "raw", "vhd", "nbd" */
};

struct xenops_vif_spec {
    char *ref;
    int position;               /* device: 0, 1, ... */
    char mac[18];
    char *bridge;
    int64_t mtu;
};

struct xenops_vm_spec {
    char uuid[37];
    char *name;
    enum xenops_domain_type type;
    int64_t memory_static_max;      /* bytes */
    int64_t memory_dynamic_max;
    int64_t memory_dynamic_min;
    int64_t memory_static_min;
    int64_t memory_target;          /* what to balloon to at start */
    int vcpus_max;
    int vcpus_at_startup;
    struct xenops_kv *vcpus_params; /* weight, cap, mask */
    size_t n_vcpus_params;
    char *pv_kernel;                /* direct kernel boot (PV/PVH) */
    char *pv_ramdisk;
    char *pv_args;
    char *pv_bootloader;            /* "pygrub" or "" */
    char *pv_bootloader_args;
    char *hvm_boot_order;           /* "cd" from HVM_boot_params.order */
    char *hvm_firmware;             /* "bios" or "uefi" */
    double shadow_multiplier;
    struct xenops_kv *platform;     /* acpi, apic, pae, viridian, nx, ... */
    size_t n_platform;
    struct xenops_vbd_spec *vbds;
    size_t n_vbds;
    struct xenops_vif_spec *vifs;
    size_t n_vifs;
};

enum xenops_power { XENOPS_RUNNING, XENOPS_PAUSED, XENOPS_SHUTDOWN };

enum xenops_shutdown_reason {
    XENOPS_REASON_NONE,
    XENOPS_REASON_POWEROFF,
    XENOPS_REASON_REBOOT,
    XENOPS_REASON_SUSPEND,
    XENOPS_REASON_CRASH,
    XENOPS_REASON_HALT,
};

/* What a shutdown request asks the guest to do. */
enum xenops_shutdown_kind {
    XENOPS_SHUTDOWN_POWEROFF,
    XENOPS_SHUTDOWN_REBOOT,
    XENOPS_SHUTDOWN_SUSPEND,
    XENOPS_SHUTDOWN_HALT,
};

/* Data the guest agent (PV drivers) reports. */
struct xenops_guest_info {
    bool pv_drivers;                /* drivers are up: clean ops possible */
    char pv_drivers_version[64];    /* "9.3.1" */
    struct xenops_kv *os_version;   /* name, distro, major, minor, uname */
    size_t n_os_version;
    struct xenops_kv *networks;     /* "0/ip" -> "198.51.100.7", ... */
    size_t n_networks;
    int64_t memory_free;            /* bytes, as the guest sees it */
    int64_t memory_total;
};

struct xenops_domain_info {
    uint32_t domid;
    enum xenops_power power;
    enum xenops_shutdown_reason reason;     /* when power is SHUTDOWN */
    int64_t memory_actual;          /* bytes */
    int64_t memory_target;
    int vcpus_online;
    uint64_t cpu_time_ns;           /* all vCPUs, since creation */
    double vcpu_utilisation[64];    /* 0..1 per vCPU, over the last second */
    int64_t start_time;             /* seconds since the epoch */
    struct xenops_guest_info guest;
};

void xenops_domain_info_clear(struct xenops_domain_info *info);

enum xenops_update_kind {
    XENOPS_UPDATE_DOMAIN,   /* power state or shutdown reason changed */
    XENOPS_UPDATE_GUEST,    /* guest agent data changed */
    XENOPS_UPDATE_STATS,    /* statistics moved */
};

struct xenops_update {
    enum xenops_update_kind kind;
    uint32_t domid;
    char uuid[37];          /* the VM, from its spec */
};

typedef void xenops_update_fn(void *aux, const struct xenops_update *u);

enum xenops_device { XENOPS_DEV_VBD, XENOPS_DEV_VIF, XENOPS_DEV_PCI };

struct xenops_provider {
    const char *name;
    int (*open)(const char *config, struct xenops_host **ret_host,
                char **ret_err);
    void (*close)(struct xenops_host *host);
    int (*host_info)(struct xenops_host *host,
                     struct xenops_host_info *ret_info, char **ret_err);
    void (*set_update_callback)(struct xenops_host *host,
                                xenops_update_fn *fn, void *aux);

    /* Builds a domain from spec and leaves it paused. */
    int (*domain_create)(struct xenops_host *host,
                         const struct xenops_vm_spec *spec,
                         uint32_t *ret_domid, char **ret_err);
    int (*domain_unpause)(struct xenops_host *host, uint32_t domid,
                          char **ret_err);
    int (*domain_pause)(struct xenops_host *host, uint32_t domid,
                        char **ret_err);
    /* Asks the guest to shut down; returns at once.  The guest's answer
     * arrives as an update (power SHUTDOWN with a reason), or never. */
    int (*domain_shutdown)(struct xenops_host *host, uint32_t domid,
                           enum xenops_shutdown_kind kind, char **ret_err);
    int (*domain_destroy)(struct xenops_host *host, uint32_t domid,
                          char **ret_err);
    int (*domain_info)(struct xenops_host *host, uint32_t domid,
                       struct xenops_domain_info *ret_info, char **ret_err);
    /* Saves a suspended domain's memory image to path (the domain has shut
     * down with reason SUSPEND; the Xen provider also accepts a running one
     * and suspends it itself), and builds a paused domain back from such an
     * image. */
    int (*domain_save)(struct xenops_host *host, uint32_t domid,
                       const char *path, char **ret_err);
    int (*domain_restore)(struct xenops_host *host,
                          const struct xenops_vm_spec *spec,
                          const char *path, uint32_t *ret_domid,
                          char **ret_err);
    /* Live migration streams: send writes the running domain to fd (and
     * destroys it once the stream is complete); receive builds a paused
     * domain from fd. */
    int (*migrate_send)(struct xenops_host *host, uint32_t domid, int fd,
                        char **ret_err);
    int (*migrate_receive)(struct xenops_host *host,
                           const struct xenops_vm_spec *spec, int fd,
                           uint32_t *ret_domid, char **ret_err);
    int (*set_memory_target)(struct xenops_host *host, uint32_t domid,
                             int64_t bytes, char **ret_err);
    int (*set_vcpus)(struct xenops_host *host, uint32_t domid, int n,
                     char **ret_err);
    /* spec is a struct xenops_vbd_spec or xenops_vif_spec, or for PCI a
     * const char * address such as "0000:03:00.0". */
    int (*device_plug)(struct xenops_host *host, uint32_t domid,
                       enum xenops_device kind, const void *spec,
                       char **ret_err);
    int (*device_unplug)(struct xenops_host *host, uint32_t domid,
                         enum xenops_device kind, int position, bool force,
                         char **ret_err);
    int (*send_sysrq)(struct xenops_host *host, uint32_t domid, char key,
                      char **ret_err);
    int (*send_trigger)(struct xenops_host *host, uint32_t domid,
                        const char *trigger, char **ret_err);
    /* Finds the domain of a VM that was running before the toolstack
     * restarted; -ENOENT if there is none.  NULL: no domain outlives the
     * toolstack (the simulator). */
    int (*domain_lookup)(struct xenops_host *host, const char *uuid,
                         uint32_t *ret_domid, char **ret_err);
    /* Connects to the domain's text console (the PV console, or the
     * emulated serial port of an HVM guest).  *ret_fd is a stream
     * (close-on-exec, blocking) that gives the guest's output and takes
     * its keyboard input; the caller closes it.  It reaches end of file
     * (or a read error: a pty gives EIO) when the domain is destroyed.
     * May be called at any time, concurrently with other calls for the
     * domain.  -ENOENT: no such domain; -EINVAL: it has shut down; -EBUSY:
     * too many consoles open.  NULL: no text consoles. */
    int (*console_open)(struct xenops_host *host, uint32_t domid,
                        int *ret_fd, char **ret_err);
};
#define XENOPS_HAVE_CONSOLE_OPEN 1

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

void xenops_vm_spec_free(struct xenops_vm_spec *spec);  /* accepts NULL */

#endif
