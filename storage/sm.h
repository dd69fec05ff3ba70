/* sm.h — the storage manager's driver interface: one driver per SR type
 * ("ext", "file", "nfs", "lvm", "iso", "sim"), as XenServer's SM plugins.
 *
 * A driver manages the data of SRs: it formats and mounts them, creates,
 * snapshots, clones, resizes and deletes the VDIs inside, makes a VDI
 * ready for the data path (the path and format that xapi-tapdisk or the
 * import/export code opens), and garbage-collects VHD chains.  It never
 * sees the database: xapi/storage.c keeps the SR, PBD, VDI and SM records,
 * takes the per-SR and per-VDI locks, runs driver calls on tasks and maps
 * the driver's errors to XenAPI's (see "Errors").
 *
 * VDIs and VHD chains.  A VDI is always a leaf of its SR: a file, or a
 * logical volume, that nothing else has as parent.  Snapshots and clones
 * turn the VDI's image into a hidden, read-only base that the VDI and the
 * new VDI both become differencing children of (XenServer's scheme); bases
 * are the driver's business and are not reported as VDIs.  Every driver
 * call that changes a chain is crash safe: killed at any point, the SR
 * reads back, after sm_sr_ops.attach() (which finishes or rolls back what
 * a crash interrupted), with every VDI holding the data it held before
 * the call or, once the call has returned, after it.
 *
 * Threads.  Calls on one SR may come from several threads; the caller
 * serializes calls that change the SR's metadata (create, destroy,
 * snapshot, clone, resize, gc_step) with a per-SR lock, and never runs two
 * calls on the same VDI at once.  vdi_attach()/vdi_detach() and stat() may
 * run at any time.
 *
 * Errors.  Calls return 0 or a negative errno value and, on failure, set
 * *ret_err to a malloc'd message.  The caller maps:
 *   -ENOSPC     SR_FULL [requested, maximum]
 *   -EBUSY      VDI_IN_USE / SR_DEVICE_IN_USE
 *   -EROFS      VDI_READONLY (or SR_OPERATION_NOT_SUPPORTED for an
 *               operation on a read-only SR)
 *   -ENOENT     VDI_MISSING / VDI_LOCATION_MISSING
 *   -EOPNOTSUPP SR_OPERATION_NOT_SUPPORTED
 *   -ELOOP      SR_BACKEND_FAILURE_109 ("The snapshot chain is too long")
 *   -EEXIST     SR_UUID_EXISTS / a VDI location taken
 *   -EINVAL     bad device_config or size: SR_BACKEND_FAILURE with the
 *               message
 *   other       SR_BACKEND_FAILURE [errno name, "", message]. */
#ifndef SM_H
#define SM_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest chain a snapshot or clone may build (XenServer's limit). */
#define SM_MAX_CHAIN_LENGTH 30

/* A key/value pair of device_config or sm_config. */
struct sm_kv {
    const char *key;
    const char *value;
};

/* A read-only map as the driver receives it. */
struct sm_map {
    const struct sm_kv *kv;
    size_t n;
};

/* Returns the value of key in map, or NULL. */
const char *sm_map_get(const struct sm_map *map, const char *key);

/* What a driver reports about one VDI (a leaf image). */
struct sm_vdi_info {
    char uuid[37];              /* the VDI's uuid */
    char *location;             /* the driver's name for it (VDI.location) */
    uint64_t virtual_size;      /* bytes */
    uint64_t physical_utilisation;  /* bytes this VDI alone holds */
    bool read_only;             /* an ISO, or a read-only image */
    char *format;               /* "vhd", "raw" or "iso" */
    /* VDI.sm_config entries the driver sets ("vdi_type", "vhd-parent",
     * "vhd-blocks"...); sm_kv strings owned by the info. */
    struct sm_kv *sm_config;
    size_t n_sm_config;
};

void sm_vdi_info_clear(struct sm_vdi_info *info);   /* accepts NULL */
void sm_vdi_info_set_config(struct sm_vdi_info *info, const char *key,
                            const char *value);

struct sm_sr_stat {
    uint64_t physical_size;         /* bytes the SR can hold in all */
    uint64_t physical_utilisation;  /* bytes in use */
    /* Bytes a new VDI of virtual size N needs beyond N is the driver's
     * business; free_space is what vdi_create() may still use. */
    uint64_t free_space;
};

/* What vdi_attach() hands to the data path. */
struct sm_attach {
    char *path;                 /* file or block device to open */
    char *format;               /* "vhd" (a chain leaf) or "raw" */
    bool read_only;
};

void sm_attach_clear(struct sm_attach *a);          /* accepts NULL */

/* The GC asks the caller to quiesce the data path of an attached VDI while
 * it swaps the VDI's image (pause: the block server finishes requests in
 * flight, flushes, closes the image, and holds new requests; unpause: it
 * reopens the same path).  pause returns 0, or -errno to make the GC skip
 * that VDI for now. */
struct sm_gc_hooks {
    bool (*is_attached)(void *aux, const char *vdi_uuid);
    int (*pause)(void *aux, const char *vdi_uuid);
    void (*unpause)(void *aux, const char *vdi_uuid);
    /* Progress and cancellation as in vhd_progress_fn: nonzero stops. */
    int (*progress)(void *aux, uint64_t done, uint64_t total);
    void *aux;
};

/* An attached SR (a plugged PBD), private to its driver. */
struct sm_sr;

/* One SR type.  Members a driver does not support are NULL (the caller
 * answers SR_OPERATION_NOT_SUPPORTED). */
struct sm_driver {
    /* The SM record. */
    const char *type;               /* "ext" */
    const char *name_label;         /* "Local EXT4 VHD" */
    const char *name_description;
    const char *vendor;
    const char *copyright;
    const char *version;            /* "1.0" */
    const char *required_api_version;   /* "1.0" */
    const char *const *capabilities;    /* "SR_PROBE", "VDI_CREATE"...,
                                           NULL-terminated */
    const struct sm_kv *configuration;  /* device_config keys -> doc,
                                           ended by { NULL, NULL } */
    const char *content_type;       /* default SR.content_type: "user",
                                       "iso" */
    bool shared;                    /* SRs of this type may be shared */
    bool thin;                      /* VDIs are sparse (virtual_allocation
                                       may exceed physical_size) */

    /* Discovers what device_config would find: answers XML in
     * XenServer's SR.probe format (a <SRlist> or, for NFS, an <nfs-exports>
     * list), malloc'd in *ret_xml. */
    int (*probe)(const struct sm_map *device_config,
                 const struct sm_map *sm_config, char **ret_xml,
                 char **ret_err);
    /* Formats a new SR (SR.create): state_dir is where the driver may keep
     * mount points and private files ("STATE_DIR/sr-mount/UUID").
     * physical_size is a hint (0: the whole device).  Fails -EEXIST when
     * the device already holds an SR, unless device_config has
     * "force"="true". */
    int (*create)(const char *state_dir, const char *sr_uuid,
                  const struct sm_map *device_config,
                  uint64_t physical_size, char **ret_err);
    /* Removes the SR's data for good (SR.destroy; every VDI is gone). */
    int (*destroy)(const char *state_dir, const char *sr_uuid,
                   const struct sm_map *device_config, char **ret_err);
    /* Makes an SR reachable on this host (PBD.plug): mount, activate,
     * recover from crashes.  -ENOENT: no SR with that uuid there. */
    int (*attach)(const char *state_dir, const char *sr_uuid,
                  const struct sm_map *device_config,
                  struct sm_sr **ret_sr, char **ret_err);
    /* Undoes attach (PBD.unplug); accepts NULL. */
    void (*detach)(struct sm_sr *sr);

    int (*stat)(struct sm_sr *sr, struct sm_sr_stat *ret_stat,
                char **ret_err);
    /* Every VDI in the SR (SR.scan).  *ret_vdis is an array of *ret_n
     * infos; free each with sm_vdi_info_clear() and the array with
     * free(). */
    int (*scan)(struct sm_sr *sr, struct sm_vdi_info **ret_vdis,
                size_t *ret_n, char **ret_err);

    /* A new VDI of virtual_size bytes, uuid chosen by the caller.
     * sm_config may ask for "type"="raw" (drivers that support it) or,
     * for lvm, "allocation"="thick"|"thin". */
    int (*vdi_create)(struct sm_sr *sr, const char *uuid,
                      uint64_t virtual_size, const struct sm_map *sm_config,
                      struct sm_vdi_info *ret_info, char **ret_err);
    /* Registers a VDI that exists at location (VDI.introduce); fills the
     * info. */
    int (*vdi_introduce)(struct sm_sr *sr, const char *uuid,
                         const char *location, struct sm_vdi_info *ret_info,
                         char **ret_err);
    int (*vdi_info)(struct sm_sr *sr, const char *location,
                    struct sm_vdi_info *ret_info, char **ret_err);
    int (*vdi_destroy)(struct sm_sr *sr, const char *location,
                       char **ret_err);
    /* snapshot and clone both make a new VDI (new_uuid) that shares the
     * data of location as it is now; location keeps its uuid and path.
     * They differ only in what the new VDI is for (a snapshot is read-only
     * to users, which the caller enforces).  -ELOOP if the chain would
     * exceed SM_MAX_CHAIN_LENGTH.  The VDI may be attached: the caller has
     * paused its data path. */
    int (*vdi_snapshot)(struct sm_sr *sr, const char *location,
                        const char *new_uuid, struct sm_vdi_info *ret_info,
                        char **ret_err);
    int (*vdi_clone)(struct sm_sr *sr, const char *location,
                     const char *new_uuid, struct sm_vdi_info *ret_info,
                     char **ret_err);
    /* Grows the virtual size (shrinking: -EINVAL). */
    int (*vdi_resize)(struct sm_sr *sr, const char *location,
                      uint64_t new_size, struct sm_vdi_info *ret_info,
                      char **ret_err);
    /* Drops the VDI's data but keeps its record usable as a changed-block
     * tracking reference (VDI.data_destroy); the image becomes empty of
     * data. */
    int (*vdi_data_destroy)(struct sm_sr *sr, const char *location,
                            char **ret_err);
    /* Readies the VDI for I/O (activates its volumes, inflates a thin
     * LVHD volume for writing) and says what to open. */
    int (*vdi_attach)(struct sm_sr *sr, const char *location,
                      bool read_write, struct sm_attach *ret_attach,
                      char **ret_err);
    void (*vdi_detach)(struct sm_sr *sr, const char *location);

    /* One step of garbage collection: removes one base that no VDI needs
     * any more, or coalesces one base with a single child into it.
     * *ret_more is true when there is more work.  Safe against a crash at
     * any point (see above). */
    int (*gc_step)(struct sm_sr *sr, const struct sm_gc_hooks *hooks,
                   bool *ret_more, char **ret_err);
    /* Length of the VHD chain under a VDI (1 for a VDI without parent). */
    int (*chain_length)(struct sm_sr *sr, const char *location,
                        int *ret_len, char **ret_err);
};

/* The registered drivers (sm.c), in the order SM records are listed. */
extern const struct sm_driver sm_file_driver;   /* "file" (sm-file.c) */
extern const struct sm_driver sm_ext_driver;    /* "ext" (sm-file.c) */
extern const struct sm_driver sm_nfs_driver;    /* "nfs" (sm-file.c) */
extern const struct sm_driver sm_iso_driver;    /* "iso" (sm-iso.c) */
extern const struct sm_driver sm_lvm_driver;    /* "lvm" (sm-lvm.c) */
extern const struct sm_driver sm_sim_driver;    /* "sim" (sm-sim.c) */

const struct sm_driver *const *sm_drivers(size_t *ret_n);
const struct sm_driver *sm_driver_find(const char *type);

/* Runs a helper program (mount, mkfs, lvcreate...) with argv, collecting
 * its standard output (NUL-terminated, malloc'd, may be NULL) and putting
 * "PROGRAM: stderr" into *ret_err when it fails.  Returns 0 when it exits
 * 0, -EIO otherwise (-ENOENT if the program is missing).  Tests replace
 * sm_run_hook to simulate programs. */
int sm_run(const char *const *argv, char **ret_stdout, char **ret_err);
typedef int sm_run_fn(const char *const *argv, char **ret_stdout,
                      char **ret_err);
extern sm_run_fn *sm_run_hook;

/* Crash-safety tests: exits the process at once (status 137, as if killed)
 * when the environment variable SM_CRASH_AT equals name.  The drivers call
 * it between every two steps of an operation that changes a chain
 * ("snapshot-link", "gc-leaf-renamed"...; docs/storage-drivers.md lists
 * them). */
void sm_crash_point(const char *name);

#endif
