/* sm-lvm.c — the lvm (LVHD) SR driver: VHD images inside logical volumes,
 * as XenServer's LVHD.  Work in progress: the SM record only for now. */
#include <config.h>
#include "sm.h"

#include <stddef.h>

static const char *const sm_lvm_capabilities[] = { NULL };

static const struct sm_kv sm_lvm_configuration[] = {
    { "device", "the block device holding the volume group" },
    { NULL, NULL },
};

const struct sm_driver sm_lvm_driver = {
    .type = "lvm",
    .name_label = "Local LVM (LVHD)",
    .name_description = "SR plugin which represents disks as VHD images "
                        "inside logical volumes of a local volume group",
    .vendor = "xapi-c",
    .copyright = "(C) the xapi-c authors",
    .version = "1.0",
    .required_api_version = "1.0",
    .capabilities = sm_lvm_capabilities,
    .configuration = sm_lvm_configuration,
    .content_type = "user",
    .shared = false,
    .thin = true,
};
