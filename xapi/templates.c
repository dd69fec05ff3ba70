/* templates.c — the default VM templates an operator expects, in
 * XenServer's style: HVM templates for install media, current Linux
 * distributions and Windows, each with memory and vCPU defaults, platform
 * flags, the disks to provision (other_config "disks") and
 * recommendations.  firstboot.c calls templates_ensure() on every start,
 * which (re)creates missing default templates and updates changed ones;
 * templates an operator made are never touched. */
#include <config.h>
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GiB (INT64_C(1) << 30)
#define MiB (INT64_C(1) << 20)

struct template_def {
    const char *name;
    const char *description;
    int64_t memory_min, memory_max;     /* dynamic/static defaults */
    int vcpus;
    int64_t disk_size;
    bool windows;
    bool uefi;                          /* Windows 11 needs UEFI + vTPM */
    const char *distro;                 /* for other_config install hints */
    int64_t max_memory;                 /* recommendations */
    int max_vcpus;
};

static const struct template_def defs[] = {
    { "Other install media", "Template for installing an operating system "
      "that has no template of its own, from an ISO or network media.",
      1 * GiB, 1 * GiB, 1, 32 * GiB, false, false, NULL, 1536 * GiB, 32 },
    { "Debian Bookworm 12", "Template for installing Debian 12 (bookworm), "
      "64-bit.", 1 * GiB, 2 * GiB, 2, 32 * GiB, false, false, "debian",
      1536 * GiB, 64 },
    { "Ubuntu Jammy Jellyfish 22.04", "Template for installing Ubuntu "
      "22.04 LTS, 64-bit.", 1 * GiB, 2 * GiB, 2, 32 * GiB, false, false,
      "ubuntu", 1536 * GiB, 64 },
    { "Ubuntu Noble Numbat 24.04", "Template for installing Ubuntu 24.04 "
      "LTS, 64-bit.", 1 * GiB, 2 * GiB, 2, 32 * GiB, false, false, "ubuntu",
      1536 * GiB, 64 },
    { "Red Hat Enterprise Linux 9", "Template for installing Red Hat "
      "Enterprise Linux 9, 64-bit.", 2 * GiB, 2 * GiB, 2, 32 * GiB, false,
      false, "rhel", 1536 * GiB, 64 },
    { "Rocky Linux 9", "Template for installing Rocky Linux 9, 64-bit.",
      2 * GiB, 2 * GiB, 2, 32 * GiB, false, false, "rhel", 1536 * GiB, 64 },
    { "AlmaLinux 9", "Template for installing AlmaLinux 9, 64-bit.",
      2 * GiB, 2 * GiB, 2, 32 * GiB, false, false, "rhel", 1536 * GiB, 64 },
    { "CentOS Stream 9", "Template for installing CentOS Stream 9, 64-bit.",
      2 * GiB, 2 * GiB, 2, 32 * GiB, false, false, "rhel", 1536 * GiB, 64 },
    { "Oracle Linux 9", "Template for installing Oracle Linux 9, 64-bit.",
      2 * GiB, 2 * GiB, 2, 32 * GiB, false, false, "rhel", 1536 * GiB, 64 },
    { "Windows 10 (64-bit)", "Template for installing Windows 10, 64-bit.",
      2 * GiB, 4 * GiB, 2, 64 * GiB, true, false, NULL, 1536 * GiB, 64 },
    { "Windows 11", "Template for installing Windows 11 (UEFI boot with "
      "a virtual TPM).", 4 * GiB, 4 * GiB, 2, 64 * GiB, true, true, NULL,
      1536 * GiB, 64 },
    { "Windows Server 2019 (64-bit)", "Template for installing Windows "
      "Server 2019.", 2 * GiB, 4 * GiB, 2, 64 * GiB, true, false, NULL,
      1536 * GiB, 64 },
    { "Windows Server 2022 (64-bit)", "Template for installing Windows "
      "Server 2022.", 2 * GiB, 4 * GiB, 2, 64 * GiB, true, true, NULL,
      1536 * GiB, 64 },
};

static struct value *
kv(const char *const *pairs)
{
    struct value *m = value_struct(8);

    for (size_t i = 0; pairs[i]; i += 2) {
        value_struct_put(m, pairs[i], value_string(pairs[i + 1]));
    }
    return m;
}

static struct value **
template_fields(const struct template_def *d, const char *uuid)
{
    struct value **f = xcalloc(api_classes[CLS_VM].n_fields, sizeof *f);
    char disks[256], recs[512], vcpus[16];
    const char *plat_linux[] = { "acpi", "1", "apic", "true", "pae", "true",
                                 "nx", "true", "viridian", "false",
                                 "device-model", "qemu-upstream-compat", NULL };
    const char *plat_win[] = { "acpi", "1", "apic", "true", "pae", "true",
                               "nx", "true", "viridian", "true",
                               "device_id", "0002",
                               "device-model", "qemu-upstream-uefi", NULL };
    const char *plat_win_uefi[] = { "acpi", "1", "apic", "true", "pae", "true",
                                    "nx", "true", "viridian", "true",
                                    "device_id", "0002", "secureboot", "true",
                                    "device-model", "qemu-upstream-uefi", NULL };
    const char *boot_bios[] = { "order", "cdn", "firmware", "bios", NULL };
    const char *boot_uefi[] = { "order", "cdn", "firmware", "uefi", NULL };
    struct value *oc;

    snprintf(disks, sizeof disks,
             "<provision><disk device=\"0\" size=\"%lld\" sr=\"\" "
             "bootable=\"true\" type=\"system\"/></provision>",
             (long long) d->disk_size);
    snprintf(recs, sizeof recs,
             "<restrictions><restriction field=\"memory-static-max\" "
             "max=\"%lld\"/><restriction field=\"vcpus-max\" max=\"%d\"/>"
             "<restriction field=\"has-vendor-device\" value=\"false\"/>"
             "<restriction field=\"allow-gpu-passthrough\" value=\"1\"/>"
             "<restriction field=\"allow-vgpu\" value=\"1\"/>"
             "<restriction field=\"allow-network-sriov\" value=\"1\"/>"
             "<restriction max=\"255\" property=\"number-of-vbds\"/>"
             "<restriction max=\"7\" property=\"number-of-vifs\"/>"
             "</restrictions>",
             (long long) d->max_memory, d->max_vcpus);
    snprintf(vcpus, sizeof vcpus, "%d", d->vcpus);
    f[F_VM_uuid] = value_string(uuid);
    f[F_VM_name_label] = value_string(d->name);
    f[F_VM_name_description] = value_string(d->description);
    f[F_VM_user_version] = value_int(1);
    f[F_VM_is_a_template] = value_true();
    f[F_VM_is_default_template] = value_true();
    f[F_VM_memory_static_max] = value_int(d->memory_max);
    f[F_VM_memory_dynamic_max] = value_int(d->memory_max);
    f[F_VM_memory_dynamic_min] = value_int(d->memory_min);
    f[F_VM_memory_static_min] = value_int(d->memory_min < 512 * MiB
                                          ? d->memory_min : 512 * MiB);
    f[F_VM_VCPUs_max] = value_int(d->vcpus);
    f[F_VM_VCPUs_at_startup] = value_int(d->vcpus);
    f[F_VM_actions_after_shutdown] = value_string("destroy");
    f[F_VM_actions_after_reboot] = value_string("restart");
    f[F_VM_actions_after_crash] = value_string("restart");
    f[F_VM_HVM_boot_policy] = value_string("BIOS order");
    f[F_VM_HVM_boot_params] = kv(d->uefi ? boot_uefi : boot_bios);
    f[F_VM_platform] = kv(d->windows ? (d->uefi ? plat_win_uefi : plat_win)
                                     : plat_linux);
    f[F_VM_domain_type] = value_string("hvm");
    f[F_VM_recommendations] = value_string(recs);
    f[F_VM_allowed_operations] = lifecycle_allowed_ops("Halted", true, false);
    oc = value_struct(6);
    value_struct_put(oc, "default_template", value_string("true"));
    value_struct_put(oc, "disks", value_string(disks));
    value_struct_put(oc, "install-methods",
                     value_string(d->windows || !d->distro ? "cdrom"
                                  : "cdrom,nfs,http,ftp"));
    if (d->distro) {
        value_struct_put(oc, "linux_template", value_string("true"));
        value_struct_put(oc, "install-distro", value_string(d->distro));
    }
    if (d->uefi) {
        value_struct_put(oc, "vtpm", value_string("true"));
    }
    f[F_VM_other_config] = oc;
    return f;
}

int
templates_ensure(struct xapi *x)
{
    struct db_txn *txn = db_begin(x->db);
    int rc = 0;

    for (size_t i = 0; i < ARRAY_SIZE(defs) && !rc; i++) {
        struct db_row **rows = NULL;
        size_t n = 0;
        bool found = false;

        db_lookup_name_label(x->db, CLS_VM, defs[i].name, &rows, &n);
        for (size_t k = 0; k < n; k++) {
            found |= rows[k]->fields[F_VM_is_default_template]->u.b;
        }
        free(rows);
        if (!found) {
            char uuid[40], ref[48];
            struct value **f;
            uuid_generate(uuid);
            db_new_ref(ref);
            f = template_fields(&defs[i], uuid);
            rc = db_insert(txn, CLS_VM, ref, f, NULL);
            free(f);
        }
    }
    if (rc) {
        db_abort(txn);
        return rc;
    }
    return db_commit(txn);
}
