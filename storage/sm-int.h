/* sm-int.h — helpers the SR drivers share (sm.c implements them), which
 * are no part of the driver interface that xapi/storage.c sees (sm.h).
 *
 * They hold what sm-file.c, sm-iso.c, sm-sim.c and sm-lvm.c would
 * otherwise each write again: the error message convention, the SM
 * record's common strings and capabilities, directory and filesystem
 * helpers, and the GC hooks' "is this VDI attached" question. */
#ifndef SM_INT_H
#define SM_INT_H 1

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "sm.h"
#include "util.h"

/* The SM record's vendor and copyright of the drivers this project wrote
 * as one (file, ext, nfs, iso, sim). */
#define SM_VENDOR "Open Xen toolstack project"
#define SM_COPYRIGHT "(C) the Open Xen toolstack authors"

/* XenServer's capabilities of a thin-provisioned VHD SR, which the file,
 * ext, nfs and lvm drivers all implement; NULL-terminated. */
extern const char *const sm_vhd_capabilities[];

/* Sets *ret_err (when ret_err is not NULL) to the formatted message,
 * replacing any message already there, and returns rc: the drivers'
 * "return sm_fail(ret_err, -ENOENT, ...)" idiom. */
int sm_fail(char **ret_err, int rc, const char *fmt, ...) PRINTF_FMT(3, 4);

/* Creates path and its missing parents with mode; 0 or -errno. */
int sm_mkdir_p(const char *path, mode_t mode);

/* The SR statistics of the filesystem holding dir (statvfs): its size,
 * its used blocks and what an unprivileged writer may still use. */
int sm_stat_filesystem(const char *dir, struct sm_sr_stat *ret_stat,
                       char **ret_err);

/* SR.probe's answer in XenServer's format listing the SRs uuids[0..n)
 * (n may be 0), malloc'd. */
char *sm_srlist_xml(const char *const *uuids, size_t n);

/* Mounts source at mount_point (made first, with its parents) with
 * "mount -t type -o options". */
int sm_mount(const char *type, const char *options, const char *source,
             const char *mount_point, char **ret_err);

/* Unmounts mount_point; a failure is logged, since the callers (detach,
 * the end of a probe) have no one to report it to. */
void sm_umount(const char *mount_point);

/* Whether the caller's hooks say the VDI is attached (false without
 * hooks or without is_attached). */
bool sm_gc_hooks_attached(const struct sm_gc_hooks *hooks,
                          const char *vdi_uuid);

#endif
