/* xen-config.h — the pure parts of the Xen provider.
 *
 * xen.c drives libxl, libxenctrl and xenstore; everything it decides
 * without talking to Xen lives here so that it can be unit-tested on a
 * machine without a hypervisor (tests/unit/test-xen-config.c): turning a
 * struct xenops_vm_spec into a libxl_domain_config, and decoding what Xen
 * and the guest agent report (domain flags, xenstore guest data).
 * docs/xen-backend.md describes the mapping field by field.
 *
 * Nothing here needs a libxl_ctx: the libxl objects built here are plain
 * malloc'd structures that libxl_domain_config_dispose() frees. */
#ifndef XEN_CONFIG_H
#define XEN_CONFIG_H 1

#include <stdbool.h>
#include <stdint.h>
#include <libxl.h>

#include "xenops.h"

/* The hotplug script (relative to /etc/xen/scripts) that attaches a disk
 * served over NBD on a Unix socket to a kernel /dev/nbdN for blkback; see
 * docs/xen-backend.md for why NBD disks cannot go through qdisk. */
#define XEN_CONFIG_NBD_SCRIPT "block-nbd-unix"

/* Translates spec into a libxl domain configuration.  On success
 * *ret_cfg holds a configuration the caller releases with
 * libxl_domain_config_dispose(); on failure returns -EINVAL (or another
 * -errno), puts a message naming the offending field in *ret_err and
 * leaves *ret_cfg untouched. */
int xen_config_from_spec(const struct xenops_vm_spec *spec,
                         libxl_domain_config *ret_cfg, char **ret_err);

/* The libxl disk for one VBD of a domain of the given type, as
 * xen_config_from_spec() builds it (also used for hotplug).  *ret_disk is
 * released with libxl_device_disk_dispose(). */
int xen_config_disk_from_vbd(const struct xenops_vbd_spec *vbd,
                             enum xenops_domain_type type,
                             libxl_device_disk *ret_disk, char **ret_err);

/* The libxl nic for one VIF (devid = position).  *ret_nic is released with
 * libxl_device_nic_dispose(). */
int xen_config_nic_from_vif(const struct xenops_vif_spec *vif,
                            libxl_device_nic *ret_nic, char **ret_err);

/* The virtual device name a VBD gets: its device if set, else one derived
 * from its position ("xvdb" for position 1 of a PV guest, "hdd" for
 * position 3 of an HVM guest).  Returns a malloc'd string or NULL (and a
 * message) when the name is not one libxl understands. */
char *xen_config_vbd_vdev(const struct xenops_vbd_spec *vbd,
                          enum xenops_domain_type type, char **ret_err);

/* The disk index a virtual device name designates (xvda, hda, sda -> 0,
 * xvdb -> 1, xvdaa -> 26), or -1 if vdev is not such a name. */
int xen_config_vdev_index(const char *vdev);

/* Serializes cfg as libxl's own JSON (what `xl create` would log),
 * pretty-printed and stable, for the expected-output tests and for debug
 * logs.  Returns a malloc'd string, or NULL if libxl could not encode it. */
char *xen_config_to_json(const libxl_domain_config *cfg);

/* Decodes a XEN_DOMINF_* flags word (xc_domaininfo_t.flags) into the
 * provider's power state and shutdown reason. */
void xen_config_power_from_flags(uint32_t flags, enum xenops_power *ret_power,
                                 enum xenops_shutdown_reason *ret_reason);

/* Reads the guest agent's xenstore entries.  read() returns the malloc'd
 * value of a path relative to the domain's xenstore home
 * (/local/domain/N), or NULL if absent; list() returns a malloc'd,
 * NULL-terminated array of malloc'd child names (NULL if absent).  The
 * result is the caller's to release with xenops_domain_info_clear(). */
struct xen_config_xs_reader {
    char *(*read)(void *aux, const char *path);
    char **(*list)(void *aux, const char *path);
    void *aux;
};
void xen_config_guest_info(const struct xen_config_xs_reader *xs,
                           struct xenops_guest_info *ret_guest);

/* Whether the guest has announced it handles a shutdown request of this
 * kind (control/feature-poweroff, -reboot, -suspend written by its PV
 * drivers or kernel). */
bool xen_config_guest_supports(const struct xen_config_xs_reader *xs,
                               enum xenops_shutdown_kind kind);

/* The word written to control/shutdown for a request of this kind. */
const char *xen_config_shutdown_word(enum xenops_shutdown_kind kind);

#endif
