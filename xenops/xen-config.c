/* xen-config.c — the pure parts of the Xen provider (see xen-config.h).
 *
 * xen_config_from_spec() is the whole answer to "what does libxl build for
 * this VM": xen.c hands its result to libxl_domain_create_new() or
 * libxl_domain_create_restore() unchanged.  The decoders at the end turn
 * Xen's domain flags and the guest agent's xenstore entries into the
 * provider interface's terms.  Nothing here calls Xen, so all of it is
 * tested without a hypervisor. */
#include <config.h>
#include "xen-config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <libxl_utils.h>
#include <xenctrl.h>

#include "util.h"

/* Bounds that keep a bad record from asking libxl for absurd allocations;
 * Xen's own limits are lower still and libxl reports them. */
#define MAX_VCPUS 4096
#define MAX_PCPU 4095
#define MAX_DEVICE_POSITION 4095

static bool
is_set(const char *s)
{
    return s && *s;
}

/* XenAPI maps carry booleans as "true"/"false" or "1"/"0". */
static int
parse_bool(const char *s, bool *ret_b)
{
    static const char *const yes[] = { "1", "true", "yes", "on" };
    static const char *const no[] = { "0", "false", "no", "off" };

    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (!strcasecmp(s, yes[i])) {
            *ret_b = true;
            return 0;
        }
        if (!strcasecmp(s, no[i])) {
            *ret_b = false;
            return 0;
        }
    }
    return -EINVAL;
}

static int
parse_int_range(const char *s, int64_t min, int64_t max, int64_t *ret_v)
{
    int64_t v;

    if (str_to_int64(s, &v) || v < min || v > max) {
        return -EINVAL;
    }
    *ret_v = v;
    return 0;
}

/* libxl_bitmap_alloc() wants a ctx only to log allocation failures, which
 * abort here anyway; libxl_bitmap_dispose() frees map with free(). */
static void
bitmap_alloc(libxl_bitmap *b, int n_bits)
{
    b->size = (n_bits + 7) / 8;
    b->map = xcalloc(b->size ? b->size : 1, 1);
}

static int64_t
kib_from_bytes(int64_t bytes)
{
    return (bytes + 1023) / 1024;
}

/* Splits s at blanks into a NULL-terminated libxl_string_list.  PV
 * bootloader arguments are a plain string in the VM record; quoting is
 * not interpreted, as xapi does not either. */
static libxl_string_list
split_words(const char *s)
{
    size_t n = 0, cap = 4;
    char **list = xcalloc(cap, sizeof *list);

    while (*s) {
        size_t len;

        while (*s && isspace((unsigned char) *s)) {
            s++;
        }
        for (len = 0; s[len] && !isspace((unsigned char) s[len]); len++) {
            continue;
        }
        if (!len) {
            break;
        }
        if (n + 2 > cap) {
            cap *= 2;
            list = xrealloc(list, cap * sizeof *list);
        }
        list[n++] = xmemdup0(s, len);
        s += len;
    }
    list[n] = NULL;
    return list;
}

/* Appends key and value to a libxl_key_value_list (NULL-terminated
 * key, value, key, value... array). */
static void
kvl_append(libxl_key_value_list *kvl, const char *key, const char *value)
{
    int n = libxl_key_value_list_length(kvl);   /* pairs */

    *kvl = xrealloc(*kvl, (2 * n + 3) * sizeof **kvl);
    (*kvl)[2 * n] = xstrdup(key);
    (*kvl)[2 * n + 1] = xstrdup(value);
    (*kvl)[2 * n + 2] = NULL;
}

static void
strlist_append(libxl_string_list *sl, const char *s)
{
    int n = libxl_string_list_length(sl);

    *sl = xrealloc(*sl, (n + 2) * sizeof **sl);
    (*sl)[n] = xstrdup(s);
    (*sl)[n + 1] = NULL;
}

/* A xenstore path component the guest may read under platform/. */
static bool
is_xenstore_name(const char *s)
{
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        if (!isalnum((unsigned char) *s) && !strchr("-_.@", *s)) {
            return false;
        }
    }
    return true;
}

/* ---- Virtual device names ---- */

/* Decodes the letters of a disk name as libxl and Linux do: a..z, then
 * aa..zz (bijective base 26).  Returns the index or -1. */
static int
decode_disk_letters(const char *p, int max_index)
{
    int index = -1;

    if (!*p) {
        return -1;
    }
    for (; *p; p++) {
        if (*p < 'a' || *p > 'z') {
            return -1;
        }
        index = (index + 1) * 26 + (*p - 'a');
        if (index > max_index) {
            return -1;
        }
    }
    return index;
}

int
xen_config_vdev_index(const char *vdev)
{
    /* The same limits as libxl__device_disk_dev_number(): IDE has four
     * drives, SCSI sixteen, xvd (1 << 20). */
    if (!vdev) {
        return -1;
    }
    if (str_starts_with(vdev, "xvd")) {
        return decode_disk_letters(vdev + 3, (1 << 20) - 1);
    }
    if (str_starts_with(vdev, "hd")) {
        return decode_disk_letters(vdev + 2, 3);
    }
    if (str_starts_with(vdev, "sd")) {
        return decode_disk_letters(vdev + 2, 15);
    }
    return -1;
}

static void
encode_disk_letters(struct ds *ds, unsigned int n)
{
    if (n >= 26) {
        encode_disk_letters(ds, n / 26 - 1);
    }
    ds_put_char(ds, 'a' + n % 26);
}

char *
xen_config_vbd_vdev(const struct xenops_vbd_spec *vbd,
                    enum xenops_domain_type type, char **ret_err)
{
    struct ds ds = DS_EMPTY;

    if (is_set(vbd->device)) {
        if (xen_config_vdev_index(vbd->device) < 0) {
            *ret_err = xasprintf("VBD %d: device '%s' is not a whole-disk "
                                 "name libxl understands (xvdX, hdX for "
                                 "X<=d, sdX for X<=p)", vbd->position,
                                 vbd->device);
            return NULL;
        }
        return xstrdup(vbd->device);
    }
    if (vbd->position < 0 || vbd->position > MAX_DEVICE_POSITION) {
        *ret_err = xasprintf("VBD position %d is out of range",
                             vbd->position);
        return NULL;
    }
    /* As xapi does: HVM guests get emulated IDE disks for the first four
     * positions (so the BIOS can boot from them), PV-only disks after. */
    ds_put_cstr(&ds, type == XENOPS_HVM && vbd->position < 4 ? "hd" : "xvd");
    encode_disk_letters(&ds, vbd->position);
    return ds_steal(&ds);
}

/* ---- Disks ---- */

static bool
is_nbd_uri(const char *s)
{
    return str_starts_with(s, "nbd:") || str_starts_with(s, "nbd+unix:")
           || str_starts_with(s, "nbd+tcp:") || str_starts_with(s, "nbds:")
           || str_starts_with(s, "nbds+unix:");
}

static int
disk_format(const char *format, libxl_disk_format *ret_fmt)
{
    static const struct {
        const char *name;
        libxl_disk_format fmt;
    } formats[] = {
        { "raw", LIBXL_DISK_FORMAT_RAW },
        { "vhd", LIBXL_DISK_FORMAT_VHD },
        { "qcow2", LIBXL_DISK_FORMAT_QCOW2 },
        { "qcow", LIBXL_DISK_FORMAT_QCOW },
        { "qed", LIBXL_DISK_FORMAT_QED },
    };

    if (!is_set(format)) {
        *ret_fmt = LIBXL_DISK_FORMAT_RAW;
        return 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(formats); i++) {
        if (!strcmp(format, formats[i].name)) {
            *ret_fmt = formats[i].fmt;
            return 0;
        }
    }
    return -EINVAL;
}

int
xen_config_disk_from_vbd(const struct xenops_vbd_spec *vbd,
                         enum xenops_domain_type type,
                         libxl_device_disk *ret_disk, char **ret_err)
{
    libxl_device_disk disk;
    char *vdev = NULL;
    int rc = -EINVAL;

    libxl_device_disk_init(&disk);
    vdev = xen_config_vbd_vdev(vbd, type, ret_err);
    if (!vdev) {
        goto out;
    }
    disk.vdev = vdev;
    vdev = NULL;
    /* CDs are read-only whatever the VBD says: neither blkback nor QEMU
     * writes to a CD. */
    disk.is_cdrom = vbd->cdrom;
    disk.removable = vbd->cdrom;
    disk.readwrite = !vbd->read_only && !vbd->cdrom;

    if (vbd->empty) {
        if (!vbd->cdrom) {
            *ret_err = xasprintf("VBD %s is empty but not a CD drive",
                                 disk.vdev);
            goto out;
        }
        disk.format = LIBXL_DISK_FORMAT_EMPTY;
    } else if (!is_set(vbd->target)) {
        *ret_err = xasprintf("VBD %s has no target", disk.vdev);
        goto out;
    } else if (is_nbd_uri(vbd->target)
               || (vbd->format && !strcmp(vbd->format, "nbd"))) {
        /* QEMU's qdisk backend stat()s its target and opens it with the
         * "file" driver, so it cannot take an NBD URI: an NBD disk goes to
         * blkback through a kernel /dev/nbdN that the hotplug script
         * connects (and disconnects when libxl removes the device).  The
         * export carries the virtual disk's raw contents. */
        if (!is_nbd_uri(vbd->target)) {
            *ret_err = xasprintf("VBD %s: format nbd needs an nbd: URI "
                                 "target, not '%s'", disk.vdev, vbd->target);
            goto out;
        }
        if (is_set(vbd->format) && strcmp(vbd->format, "nbd")
            && strcmp(vbd->format, "raw")) {
            *ret_err = xasprintf("VBD %s: an NBD export is raw, not %s",
                                 disk.vdev, vbd->format);
            goto out;
        }
        disk.format = LIBXL_DISK_FORMAT_RAW;
        disk.backend = LIBXL_DISK_BACKEND_PHY;
        disk.script = xstrdup(XEN_CONFIG_NBD_SCRIPT);
        disk.pdev_path = xstrdup(vbd->target);
    } else {
        if (vbd->target[0] != '/') {
            *ret_err = xasprintf("VBD %s: target '%s' is neither an "
                                 "absolute path nor an nbd: URI", disk.vdev,
                                 vbd->target);
            goto out;
        }
        if (disk_format(vbd->format, &disk.format)) {
            *ret_err = xasprintf("VBD %s: unknown format '%s' (raw, vhd, "
                                 "qcow2, qcow, qed, nbd)", disk.vdev,
                                 vbd->format);
            goto out;
        }
        /* The backend is left to libxl, which picks blkback for a raw
         * block device and QEMU's qdisk for files and image formats. */
        disk.pdev_path = xstrdup(vbd->target);
    }

    /* For an HVM guest libxl also has QEMU emulate the first four disks
     * (xvdX or hdX alike) on IDE and every CD drive.  Upstream QEMU cannot
     * emulate a read-only IDE disk, nor IDE beyond four drives, and libxl
     * says so only while starting the device model, after the domain is
     * built: refuse such VBDs before anything is built. */
    if (type == XENOPS_HVM && !str_starts_with(disk.vdev, "sd")) {
        int index = xen_config_vdev_index(disk.vdev);

        if (disk.is_cdrom && index >= 4) {
            *ret_err = xasprintf("VBD %s: an HVM guest's CD drives must be "
                                 "among its first four devices (hda-hdd)",
                                 disk.vdev);
            goto out;
        }
        if (!disk.is_cdrom && !disk.readwrite && index < 4) {
            *ret_err = xasprintf("VBD %s: the first four disks of an HVM "
                                 "guest are emulated IDE disks, which cannot "
                                 "be read-only; use position 4 (xvde) or "
                                 "later", disk.vdev);
            goto out;
        }
    }

    *ret_disk = disk;
    libxl_device_disk_init(&disk);
    rc = 0;
out:
    libxl_device_disk_dispose(&disk);
    free(vdev);
    return rc;
}

/* ---- NICs ---- */

static int
parse_mac(const char *s, libxl_mac mac)
{
    unsigned int b[6];
    int n = 0;

    if (strlen(s) != 17
        || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%n", &b[0], &b[1], &b[2],
                  &b[3], &b[4], &b[5], &n) != 6 || n != 17) {
        return -EINVAL;
    }
    for (int i = 0; i < 6; i++) {
        if (!isxdigit((unsigned char) s[3 * i])
            || !isxdigit((unsigned char) s[3 * i + 1])) {
            return -EINVAL;
        }
        mac[i] = b[i];
    }
    /* A multicast source address would be dropped by every switch. */
    return mac[0] & 1 ? -EINVAL : 0;
}

int
xen_config_nic_from_vif(const struct xenops_vif_spec *vif,
                        libxl_device_nic *ret_nic, char **ret_err)
{
    libxl_device_nic nic;
    char mac[sizeof vif->mac];
    int rc = -EINVAL;

    libxl_device_nic_init(&nic);
    /* The spec's MAC is a fixed array; do not trust it to be terminated. */
    memcpy(mac, vif->mac, sizeof mac);
    mac[sizeof mac - 1] = '\0';
    if (vif->position < 0 || vif->position > MAX_DEVICE_POSITION) {
        *ret_err = xasprintf("VIF position %d is out of range",
                             vif->position);
        goto out;
    }
    /* The guest names its interfaces after devid, so devid is the VIF's
     * device number (eth0 = VIF 0). */
    nic.devid = vif->position;
    if (mac[0]) {
        if (parse_mac(mac, nic.mac)) {
            *ret_err = xasprintf("VIF %d: MAC '%s' is not a unicast "
                                 "aa:bb:cc:dd:ee:ff address", vif->position,
                                 mac);
            goto out;
        }
    }
    /* An empty MAC is left to libxl, which picks one in 00:16:3e. */
    if (is_set(vif->bridge)) {
        nic.bridge = xstrdup(vif->bridge);
    }
    if (vif->mtu) {
        if (vif->mtu < 68 || vif->mtu > 65535) {
            *ret_err = xasprintf("VIF %d: MTU %lld is out of range "
                                 "(68..65535)", vif->position,
                                 (long long) vif->mtu);
            goto out;
        }
        nic.mtu = (int) vif->mtu;
    }
    *ret_nic = nic;
    libxl_device_nic_init(&nic);
    rc = 0;
out:
    libxl_device_nic_dispose(&nic);
    return rc;
}

/* ---- VCPUs ---- */

/* Parses a VCPUs_params mask: physical CPU numbers separated by commas,
 * with ranges ("0,2-3") accepted as xl accepts them. */
static int
parse_cpu_mask(const char *s, libxl_bitmap *ret_map)
{
    libxl_bitmap map;
    char *copy = xstrdup(s), *save = NULL, *tok;
    int max = -1, rc = -EINVAL;
    int64_t lo, hi;

    libxl_bitmap_init(&map);
    /* Two passes: the first finds the highest CPU to size the bitmap. */
    for (int pass = 0; pass < 2; pass++) {
        strcpy(copy, s);
        for (tok = strtok_r(copy, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            char *dash = strchr(tok, '-');

            if (dash) {
                *dash = '\0';
                if (parse_int_range(tok, 0, MAX_PCPU, &lo)
                    || parse_int_range(dash + 1, 0, MAX_PCPU, &hi)
                    || hi < lo) {
                    goto out;
                }
            } else {
                if (parse_int_range(tok, 0, MAX_PCPU, &lo)) {
                    goto out;
                }
                hi = lo;
            }
            if (pass == 0) {
                max = MAX(max, (int) hi);
            } else {
                for (int64_t c = lo; c <= hi; c++) {
                    libxl_bitmap_set(&map, (int) c);
                }
            }
        }
        if (pass == 0) {
            if (max < 0) {
                goto out;
            }
            bitmap_alloc(&map, max + 1);
        }
    }
    *ret_map = map;
    libxl_bitmap_init(&map);
    rc = 0;
out:
    libxl_bitmap_dispose(&map);
    free(copy);
    return rc;
}

static int
vcpus_from_spec(const struct xenops_vm_spec *spec,
                libxl_domain_build_info *b, char **ret_err)
{
    int64_t v;

    if (spec->vcpus_max < 1 || spec->vcpus_max > MAX_VCPUS) {
        *ret_err = xasprintf("VCPUs_max %d is out of range (1..%d)",
                             spec->vcpus_max, MAX_VCPUS);
        return -EINVAL;
    }
    if (spec->vcpus_at_startup < 1
        || spec->vcpus_at_startup > spec->vcpus_max) {
        *ret_err = xasprintf("VCPUs_at_startup %d must be between 1 and "
                             "VCPUs_max (%d)", spec->vcpus_at_startup,
                             spec->vcpus_max);
        return -EINVAL;
    }
    /* Xen creates VCPUs_max vCPUs; the guest brings up those in
     * avail_vcpus and can be given more later (set_vcpus). */
    b->max_vcpus = spec->vcpus_max;
    bitmap_alloc(&b->avail_vcpus, spec->vcpus_max);
    for (int i = 0; i < spec->vcpus_at_startup; i++) {
        libxl_bitmap_set(&b->avail_vcpus, i);
    }

    for (size_t i = 0; i < spec->n_vcpus_params; i++) {
        const char *key = spec->vcpus_params[i].key;
        const char *value = spec->vcpus_params[i].value;

        if (!strcmp(key, "weight")) {
            /* The credit schedulers' range. */
            if (parse_int_range(value, 1, 65535, &v)) {
                *ret_err = xasprintf("VCPUs_params:weight '%s' is not an "
                                     "integer in 1..65535", value);
                return -EINVAL;
            }
            b->sched_params.weight = (int) v;
        } else if (!strcmp(key, "cap")) {
            /* Percent of one physical CPU; 0 means no cap. */
            if (parse_int_range(value, 0, 65535, &v)) {
                *ret_err = xasprintf("VCPUs_params:cap '%s' is not an "
                                     "integer in 0..65535", value);
                return -EINVAL;
            }
            b->sched_params.cap = (int) v;
        } else if (!strcmp(key, "mask")) {
            if (!is_set(value)) {
                continue;
            }
            libxl_bitmap_dispose(&b->cpumap);
            if (parse_cpu_mask(value, &b->cpumap)) {
                *ret_err = xasprintf("VCPUs_params:mask '%s' is not a list "
                                     "of physical CPU numbers (\"0,2-3\")",
                                     value);
                return -EINVAL;
            }
        }
        /* Other keys are xapi's business (e.g. RRD settings); xenopsd
         * ignores them too. */
    }
    return 0;
}

/* ---- Memory ---- */

static int
memory_from_spec(const struct xenops_vm_spec *spec,
                 libxl_domain_build_info *b, char **ret_err)
{
    int64_t target = spec->memory_target;

    if (spec->memory_static_max <= 0) {
        *ret_err = xasprintf("memory_static_max %lld must be positive",
                             (long long) spec->memory_static_max);
        return -EINVAL;
    }
    if (target <= 0) {
        target = spec->memory_dynamic_max > 0 ? spec->memory_dynamic_max
                                               : spec->memory_static_max;
    }
    if (target > spec->memory_static_max) {
        *ret_err = xasprintf("memory target %lld exceeds "
                             "memory_static_max %lld", (long long) target,
                             (long long) spec->memory_static_max);
        return -EINVAL;
    }
    /* max_memkb is the ceiling the guest can balloon up to; target_memkb
     * what it gets at boot (an HVM guest below its maximum starts in
     * populate-on-demand mode and needs a balloon driver). */
    b->max_memkb = kib_from_bytes(spec->memory_static_max);
    b->target_memkb = kib_from_bytes(target);
    return 0;
}

/* ---- Platform flags ---- */

enum platform_field {
    PF_ACPI, PF_ACPI_S3, PF_ACPI_S4, PF_ACPI_SLATE, PF_APIC, PF_PAE,
    PF_VIRIDIAN, PF_VIRIDIAN_BIT, PF_NX, PF_HPET, PF_TIMEOFFSET, PF_VGA,
    PF_VIDEORAM, PF_USB, PF_USB_TABLET, PF_DEVICE_MODEL, PF_NESTED,
    PF_SERIAL, PF_KEYMAP, PF_TIMER_MODE, PF_TSC_MODE,
};

/* Which domain types a key applies to. */
#define FOR_HVM 1
#define FOR_PVH 2
#define FOR_PV 4
#define FOR_ALL (FOR_HVM | FOR_PVH | FOR_PV)

static const struct platform_key {
    const char *key;
    enum platform_field field;
    int types;
    int arg;            /* viridian enlightenment for PF_VIRIDIAN_BIT */
} platform_keys[] = {
    { "acpi", PF_ACPI, FOR_HVM | FOR_PVH, 0 },
    { "acpi_s3", PF_ACPI_S3, FOR_HVM, 0 },
    { "acpi_s4", PF_ACPI_S4, FOR_HVM, 0 },
    { "acpi_laptop_slate", PF_ACPI_SLATE, FOR_HVM, 0 },
    { "apic", PF_APIC, FOR_HVM, 0 },
    { "pae", PF_PAE, FOR_HVM, 0 },
    { "viridian", PF_VIRIDIAN, FOR_HVM, 0 },
    { "viridian_time_ref_count", PF_VIRIDIAN_BIT, FOR_HVM,
      LIBXL_VIRIDIAN_ENLIGHTENMENT_TIME_REF_COUNT },
    { "viridian_reference_tsc", PF_VIRIDIAN_BIT, FOR_HVM,
      LIBXL_VIRIDIAN_ENLIGHTENMENT_REFERENCE_TSC },
    { "viridian_apic_assist", PF_VIRIDIAN_BIT, FOR_HVM,
      LIBXL_VIRIDIAN_ENLIGHTENMENT_APIC_ASSIST },
    { "viridian_crash_ctl", PF_VIRIDIAN_BIT, FOR_HVM,
      LIBXL_VIRIDIAN_ENLIGHTENMENT_CRASH_CTL },
    { "viridian_stimer", PF_VIRIDIAN_BIT, FOR_HVM,
      LIBXL_VIRIDIAN_ENLIGHTENMENT_STIMER },
    { "nx", PF_NX, FOR_HVM, 0 },
    { "hpet", PF_HPET, FOR_HVM, 0 },
    { "timeoffset", PF_TIMEOFFSET, FOR_ALL, 0 },
    { "vga", PF_VGA, FOR_HVM, 0 },
    { "videoram", PF_VIDEORAM, FOR_HVM, 0 },
    { "usb", PF_USB, FOR_HVM, 0 },
    { "usb_tablet", PF_USB_TABLET, FOR_HVM, 0 },
    { "device-model", PF_DEVICE_MODEL, FOR_HVM, 0 },
    { "nested-virt", PF_NESTED, FOR_HVM, 0 },
    { "exp-nested-hvm", PF_NESTED, FOR_HVM, 0 },
    { "hvm_serial", PF_SERIAL, FOR_HVM, 0 },
    { "keymap", PF_KEYMAP, FOR_HVM, 0 },
    { "timer_mode", PF_TIMER_MODE, FOR_HVM, 0 },
    { "tsc_mode", PF_TSC_MODE, FOR_ALL, 0 },
};

static int
type_mask(enum xenops_domain_type type)
{
    return type == XENOPS_HVM ? FOR_HVM : type == XENOPS_PVH ? FOR_PVH
                                                              : FOR_PV;
}

static int
apply_platform_key(const struct platform_key *pk, const char *value,
                   libxl_domain_config *cfg, char **ret_err)
{
    libxl_domain_build_info *b = &cfg->b_info;
    libxl_defbool *db = NULL;
    bool flag = false;
    int64_t v;

    switch (pk->field) {
    case PF_ACPI:
        db = &b->acpi;
        break;
    case PF_ACPI_S3:
        db = &b->u.hvm.acpi_s3;
        break;
    case PF_ACPI_S4:
        db = &b->u.hvm.acpi_s4;
        break;
    case PF_ACPI_SLATE:
        db = &b->u.hvm.acpi_laptop_slate;
        break;
    case PF_APIC:
        db = &b->apic;
        break;
    case PF_PAE:
        db = &b->u.hvm.pae;
        break;
    case PF_VIRIDIAN:
        db = &b->u.hvm.viridian;
        break;
    case PF_NX:
        db = &b->u.hvm.nx;
        break;
    case PF_HPET:
        db = &b->u.hvm.hpet;
        break;
    case PF_USB:
        db = &b->u.hvm.usb;
        break;
    case PF_NESTED:
        db = &b->nested_hvm;
        break;

    case PF_VIRIDIAN_BIT: {
        libxl_bitmap *map;

        if (parse_bool(value, &flag)) {
            break;
        }
        /* Explicitly enabled and explicitly disabled enlightenments go in
         * separate bitmaps; the rest follow libxl's defaults. */
        map = flag ? &b->u.hvm.viridian_enable : &b->u.hvm.viridian_disable;
        if (!map->size) {
            bitmap_alloc(map, 64);
        }
        libxl_bitmap_set(map, pk->arg);
        return 0;
    }

    case PF_TIMEOFFSET:
        /* Seconds between the guest's RTC and UTC, negative for zones west
         * of Greenwich; Xen takes it as a signed 32-bit number in an
         * unsigned field. */
        if (parse_int_range(value, INT32_MIN, INT32_MAX, &v)) {
            *ret_err = xasprintf("platform:timeoffset '%s' is not a number "
                                 "of seconds", value);
            return -EINVAL;
        }
        b->rtc_timeoffset = (uint32_t) (int32_t) v;
        if (cfg->c_info.type == LIBXL_DOMAIN_TYPE_HVM) {
            free(b->u.hvm.timeoffset);
            b->u.hvm.timeoffset = xstrdup(value);
        }
        return 0;

    case PF_VGA:
        if (!strcmp(value, "std")) {
            b->u.hvm.vga.kind = LIBXL_VGA_INTERFACE_TYPE_STD;
        } else if (!strcmp(value, "cirrus")) {
            b->u.hvm.vga.kind = LIBXL_VGA_INTERFACE_TYPE_CIRRUS;
        } else if (!strcmp(value, "none")) {
            b->u.hvm.vga.kind = LIBXL_VGA_INTERFACE_TYPE_NONE;
        } else {
            *ret_err = xasprintf("platform:vga '%s' is not std, cirrus or "
                                 "none", value);
            return -EINVAL;
        }
        return 0;

    case PF_VIDEORAM:
        if (parse_int_range(value, 1, 1024, &v)) {
            *ret_err = xasprintf("platform:videoram '%s' is not a size in "
                                 "MiB (1..1024)", value);
            return -EINVAL;
        }
        b->video_memkb = (uint64_t) v * 1024;
        return 0;

    case PF_USB_TABLET:
        if (parse_bool(value, &flag)) {
            break;
        }
        /* An absolute pointer, so VNC's mouse follows the guest's. */
        if (flag && !libxl_string_list_length(&b->u.hvm.usbdevice_list)) {
            strlist_append(&b->u.hvm.usbdevice_list, "tablet");
        }
        return 0;

    case PF_DEVICE_MODEL:
        if (!strcmp(value, "qemu-trad")) {
            b->device_model_version
                = LIBXL_DEVICE_MODEL_VERSION_QEMU_XEN_TRADITIONAL;
        } else if (!strcmp(value, "qemu-upstream")
                   || !strcmp(value, "qemu-upstream-compat")
                   || !strcmp(value, "qemu-upstream-uefi")) {
            b->device_model_version = LIBXL_DEVICE_MODEL_VERSION_QEMU_XEN;
        } else {
            *ret_err = xasprintf("platform:device-model '%s' is not "
                                 "qemu-upstream-compat, qemu-upstream, "
                                 "qemu-upstream-uefi or qemu-trad", value);
            return -EINVAL;
        }
        return 0;

    case PF_SERIAL:
        free(b->u.hvm.serial);
        b->u.hvm.serial = xstrdup(value);
        return 0;

    case PF_KEYMAP:
        free(b->u.hvm.keymap);
        b->u.hvm.keymap = xstrdup(value);
        return 0;

    case PF_TIMER_MODE:
        if (parse_int_range(value, 0, 3, &v)) {
            *ret_err = xasprintf("platform:timer_mode '%s' is not 0..3",
                                 value);
            return -EINVAL;
        }
        b->timer_mode = (libxl_timer_mode) v;
        return 0;

    case PF_TSC_MODE:
        if (parse_int_range(value, 0, 3, &v)) {
            *ret_err = xasprintf("platform:tsc_mode '%s' is not 0..3",
                                 value);
            return -EINVAL;
        }
        b->tsc_mode = (libxl_tsc_mode) v;
        return 0;
    }

    if (db && !parse_bool(value, &flag)) {
        libxl_defbool_set(db, flag);
        return 0;
    }
    *ret_err = xasprintf("platform:%s '%s' is not a boolean (true/false, "
                         "1/0)", pk->key, value);
    return -EINVAL;
}

static int
platform_from_spec(const struct xenops_vm_spec *spec,
                   libxl_domain_config *cfg, char **ret_err)
{
    int mask = type_mask(spec->type);

    for (size_t i = 0; i < spec->n_platform; i++) {
        const char *key = spec->platform[i].key;
        const char *value = spec->platform[i].value ? spec->platform[i].value
                                                    : "";
        const struct platform_key *pk = NULL;
        int rc;

        for (size_t j = 0; j < ARRAY_SIZE(platform_keys); j++) {
            if (!strcmp(platform_keys[j].key, key)) {
                pk = &platform_keys[j];
                break;
            }
        }
        if (pk) {
            /* Templates carry HVM flags on PV VMs too; like xenopsd, they
             * are ignored where they mean nothing. */
            if (!(pk->types & mask)) {
                continue;
            }
            rc = apply_platform_key(pk, value, cfg, ret_err);
            if (rc) {
                return rc;
            }
            continue;
        }
        /* Keys libxl has no field for (device_id, cores-per-socket,
         * secureboot...) reach the guest the way xapi passes them: under
         * /local/domain/N/platform. */
        if (!is_xenstore_name(key)) {
            *ret_err = xasprintf("platform key '%s' cannot be a xenstore "
                                 "name (letters, digits, - _ . @)", key);
            return -EINVAL;
        }
        kvl_append(&cfg->c_info.platformdata, key, value);
    }

    /* Individual enlightenments refine viridian=true; libxl rejects them
     * without the base set, and xenopsd ignores them then. */
    if (spec->type == XENOPS_HVM
        && (libxl_defbool_is_default(cfg->b_info.u.hvm.viridian)
            || !libxl_defbool_val(cfg->b_info.u.hvm.viridian))) {
        libxl_bitmap_dispose(&cfg->b_info.u.hvm.viridian_enable);
        libxl_bitmap_dispose(&cfg->b_info.u.hvm.viridian_disable);
    }
    return 0;
}

/* ---- Boot ---- */

static int
pv_boot_from_spec(const struct xenops_vm_spec *spec,
                  libxl_domain_build_info *b, char **ret_err)
{
    const char *bl = spec->pv_bootloader;

    if (is_set(bl)) {
        /* libxl runs a bare name from its private bin directory
         * (/usr/lib/xen-4.17/bin/pygrub on Debian). */
        if (strcmp(bl, "pygrub") && bl[0] != '/') {
            *ret_err = xasprintf("PV_bootloader '%s' is not supported (use "
                                 "pygrub or an absolute path)", bl);
            return -EINVAL;
        }
        b->bootloader = xstrdup(bl);
        if (is_set(spec->pv_bootloader_args)) {
            b->bootloader_args = split_words(spec->pv_bootloader_args);
        }
    } else if (!is_set(spec->pv_kernel)) {
        *ret_err = xasprintf("a %s guest needs PV_kernel or PV_bootloader",
                             spec->type == XENOPS_PVH ? "PVH" : "PV");
        return -EINVAL;
    }
    /* With a bootloader these name files inside the guest's disk and
     * PV_args is appended to its command line, as with xapi. */
    if (is_set(spec->pv_kernel)) {
        b->kernel = xstrdup(spec->pv_kernel);
    }
    if (is_set(spec->pv_ramdisk)) {
        b->ramdisk = xstrdup(spec->pv_ramdisk);
    }
    if (is_set(spec->pv_args)) {
        b->cmdline = xstrdup(spec->pv_args);
    }
    return 0;
}

static int
hvm_boot_from_spec(const struct xenops_vm_spec *spec,
                   libxl_domain_build_info *b, char **ret_err)
{
    const char *fw = spec->hvm_firmware;
    const char *order = spec->hvm_boot_order;
    double multiplier = spec->shadow_multiplier, shadow;

    if (!is_set(fw) || !strcmp(fw, "bios")) {
        b->u.hvm.bios = LIBXL_BIOS_TYPE_SEABIOS;
    } else if (!strcmp(fw, "uefi")) {
        b->u.hvm.bios = LIBXL_BIOS_TYPE_OVMF;
    } else {
        *ret_err = xasprintf("HVM firmware '%s' is not bios or uefi", fw);
        return -EINVAL;
    }

    if (is_set(order)) {
        /* QEMU's letters: c disk, d CD, n network (a, b floppies). */
        if (strlen(order) > 16 || strspn(order, "abcdefghijklmnop")
                                  != strlen(order)) {
            *ret_err = xasprintf("HVM_boot_params:order '%s' is not a "
                                 "string of boot devices (c, d, n)", order);
            return -EINVAL;
        }
        b->u.hvm.boot = xstrdup(order);
    }

    /* HVM_shadow_multiplier defaults to 1 in the API; an unset (zero)
     * value means the same.  Xen's paging pool for the guest is libxl's
     * own estimate scaled by it, as xenopsd does. */
    if (multiplier == 0) {
        multiplier = 1.0;
    }
    if (!(multiplier >= 1.0) || multiplier > 1000) {
        *ret_err = xasprintf("HVM_shadow_multiplier %g must be at least 1",
                             spec->shadow_multiplier);
        return -EINVAL;
    }
    shadow = (double) libxl_get_required_shadow_memory(b->max_memkb,
                                                       b->max_vcpus)
             * multiplier;
    b->shadow_memkb = (uint64_t) shadow;
    if ((double) b->shadow_memkb < shadow) {
        b->shadow_memkb++;          /* round up, to a whole KiB */
    }
    return 0;
}

/* ---- The whole configuration ---- */

static libxl_domain_type
libxl_type(enum xenops_domain_type type)
{
    switch (type) {
    case XENOPS_PV:
        return LIBXL_DOMAIN_TYPE_PV;
    case XENOPS_PVH:
        return LIBXL_DOMAIN_TYPE_PVH;
    case XENOPS_HVM:
        return LIBXL_DOMAIN_TYPE_HVM;
    }
    return LIBXL_DOMAIN_TYPE_INVALID;
}

static int
compare_devid(const void *a_, const void *b_)
{
    const libxl_device_nic *a = a_, *b = b_;

    return a->devid < b->devid ? -1 : a->devid > b->devid;
}

/* Whether two virtual devices collide in the guest: hdX and xvdX are one
 * disk to a guest whose PV drivers take over the emulated ones. */
static bool
same_disk_slot(const char *a, const char *b)
{
    bool a_scsi = str_starts_with(a, "sd"), b_scsi = str_starts_with(b, "sd");

    return a_scsi == b_scsi
           && xen_config_vdev_index(a) == xen_config_vdev_index(b);
}

static int
devices_from_spec(const struct xenops_vm_spec *spec,
                  libxl_domain_config *cfg, char **ret_err)
{
    if (spec->n_vbds) {
        cfg->disks = xcalloc(spec->n_vbds, sizeof *cfg->disks);
    }
    for (size_t i = 0; i < spec->n_vbds; i++) {
        libxl_device_disk *d = &cfg->disks[cfg->num_disks];
        int rc = xen_config_disk_from_vbd(&spec->vbds[i], spec->type, d,
                                          ret_err);
        if (rc) {
            return rc;
        }
        cfg->num_disks++;
        for (int j = 0; j < cfg->num_disks - 1; j++) {
            if (same_disk_slot(cfg->disks[j].vdev, d->vdev)) {
                *ret_err = xasprintf("VBDs %s and %s use the same disk slot",
                                     cfg->disks[j].vdev, d->vdev);
                return -EINVAL;
            }
        }
    }

    if (spec->n_vifs) {
        cfg->nics = xcalloc(spec->n_vifs, sizeof *cfg->nics);
    }
    for (size_t i = 0; i < spec->n_vifs; i++) {
        libxl_device_nic *n = &cfg->nics[cfg->num_nics];
        int rc = xen_config_nic_from_vif(&spec->vifs[i], n, ret_err);
        if (rc) {
            return rc;
        }
        cfg->num_nics++;
        for (int j = 0; j < cfg->num_nics - 1; j++) {
            if (cfg->nics[j].devid == n->devid) {
                *ret_err = xasprintf("two VIFs use device %d", n->devid);
                return -EINVAL;
            }
        }
    }
    /* libxl creates the interfaces in array order, and guests have long
     * numbered their ethN by creation order rather than by devid. */
    if (cfg->num_nics > 1) {
        qsort(cfg->nics, cfg->num_nics, sizeof *cfg->nics, compare_devid);
    }
    return 0;
}

int
xen_config_from_spec(const struct xenops_vm_spec *spec,
                     libxl_domain_config *ret_cfg, char **ret_err)
{
    libxl_domain_config cfg;
    libxl_domain_type type = libxl_type(spec->type);
    int rc = -EINVAL;

    libxl_domain_config_init(&cfg);
    if (type == LIBXL_DOMAIN_TYPE_INVALID) {
        *ret_err = xasprintf("unknown domain type %d", (int) spec->type);
        goto out;
    }
    if (!uuid_is_valid(spec->uuid)
        || libxl_uuid_from_string(&cfg.c_info.uuid, spec->uuid)) {
        *ret_err = xasprintf("VM uuid '%.36s' is not a UUID", spec->uuid);
        goto out;
    }

    /* libxl requires domain names to be unique on the host, and XenAPI
     * name labels are not, so the domain is named after the VM's uuid
     * (xen.c adds a suffix while an incoming migration overlaps the
     * outgoing domain on the same host). */
    cfg.c_info.type = type;
    cfg.c_info.name = xstrdup(spec->uuid);

    libxl_domain_build_info_init_type(&cfg.b_info, type);
    rc = vcpus_from_spec(spec, &cfg.b_info, ret_err);
    if (rc) {
        goto out;
    }
    rc = memory_from_spec(spec, &cfg.b_info, ret_err);
    if (rc) {
        goto out;
    }
    if (type == LIBXL_DOMAIN_TYPE_HVM) {
        rc = hvm_boot_from_spec(spec, &cfg.b_info, ret_err);
    } else {
        rc = pv_boot_from_spec(spec, &cfg.b_info, ret_err);
    }
    if (rc) {
        goto out;
    }
    rc = platform_from_spec(spec, &cfg, ret_err);
    if (rc) {
        goto out;
    }
    rc = devices_from_spec(spec, &cfg, ret_err);
    if (rc) {
        goto out;
    }

    /* The toolstack decides what a shutdown means (restart, halt,
     * crash dump) from the reason it sees; libxl only records these, and
     * "destroy" says that nothing else acts on them. */
    cfg.on_poweroff = LIBXL_ACTION_ON_SHUTDOWN_DESTROY;
    cfg.on_reboot = LIBXL_ACTION_ON_SHUTDOWN_DESTROY;
    cfg.on_watchdog = LIBXL_ACTION_ON_SHUTDOWN_DESTROY;
    cfg.on_crash = LIBXL_ACTION_ON_SHUTDOWN_DESTROY;

    *ret_cfg = cfg;
    libxl_domain_config_init(&cfg);
    rc = 0;
out:
    libxl_domain_config_dispose(&cfg);
    return rc;
}

char *
xen_config_to_json(const libxl_domain_config *cfg)
{
    /* The generated encoder only reads its argument, and uses the ctx for
     * nothing but logging an encoder failure, which cannot happen for a
     * configuration built by the functions above; a ctx needs a running
     * Xen, so none is passed. */
    return libxl_domain_config_to_json(NULL, (libxl_domain_config *) cfg);
}

/* ---- What Xen and the guest report ---- */

void
xen_config_power_from_flags(uint32_t flags, enum xenops_power *ret_power,
                            enum xenops_shutdown_reason *ret_reason)
{
    unsigned int code;

    *ret_reason = XENOPS_REASON_NONE;
    if (flags & XEN_DOMINF_shutdown) {
        *ret_power = XENOPS_SHUTDOWN;
        code = (flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask;
        switch (code) {
        case SHUTDOWN_poweroff:
            *ret_reason = XENOPS_REASON_POWEROFF;
            break;
        case SHUTDOWN_reboot:
        /* A soft reset (kexec in an HVM guest) asks the toolstack to
         * rebuild the domain around the same memory; a full restart is
         * the supported approximation. */
        case SHUTDOWN_soft_reset:
            *ret_reason = XENOPS_REASON_REBOOT;
            break;
        case SHUTDOWN_suspend:
            *ret_reason = XENOPS_REASON_SUSPEND;
            break;
        /* A watchdog firing means the guest hung: its crash action
         * applies. */
        case SHUTDOWN_watchdog:
        case SHUTDOWN_crash:
        default:
            *ret_reason = XENOPS_REASON_CRASH;
            break;
        }
    } else if (flags & XEN_DOMINF_dying) {
        /* Being destroyed: as good as gone, with no reason to act on. */
        *ret_power = XENOPS_SHUTDOWN;
    } else if (flags & XEN_DOMINF_paused) {
        *ret_power = XENOPS_PAUSED;
    } else {
        *ret_power = XENOPS_RUNNING;
    }
}

static char *
xs_read_rel(const struct xen_config_xs_reader *xs, const char *fmt, ...)
    PRINTF_FMT(2, 3);

static char *
xs_read_rel(const struct xen_config_xs_reader *xs, const char *fmt, ...)
{
    struct ds path = DS_EMPTY;
    va_list args;
    char *value;

    va_start(args, fmt);
    ds_put_vfmt(&path, fmt, args);
    va_end(args);
    value = xs->read(xs->aux, ds_cstr(&path));
    ds_destroy(&path);
    return value;
}

static void
free_strv(char **v)
{
    if (v) {
        for (char **p = v; *p; p++) {
            free(*p);
        }
        free(v);
    }
}

static void
kv_push(struct xenops_kv **kv, size_t *n, const char *key, const char *value)
{
    *kv = xrealloc(*kv, (*n + 1) * sizeof **kv);
    (*kv)[*n].key = xstrdup(key);
    (*kv)[*n].value = xstrdup(value);
    (*n)++;
}

/* Reads a kB count written by the guest agent. */
static int64_t
xs_read_kib(const struct xen_config_xs_reader *xs, const char *path)
{
    char *s = xs->read(xs->aux, path);
    int64_t v = 0;

    if (!s || str_to_int64(s, &v) || v < 0) {
        v = 0;
    }
    free(s);
    return v * 1024;
}

static bool
is_number(const char *s)
{
    return *s && strspn(s, "0123456789") == strlen(s);
}

/* attr/vif/N/ipv4/M and attr/vif/N/ipv6/M (current agents) become
 * "N/ipv4/M" and "N/ipv6/M", with "N/ip" for the first IPv4 address as
 * xapi reports it; attr/ethN/ip (old agents) becomes "N/ip". */
static void
guest_networks(const struct xen_config_xs_reader *xs,
               struct xenops_guest_info *g)
{
    static const char *const families[] = { "ipv4", "ipv6" };
    char **vifs = xs->list(xs->aux, "attr/vif");
    char **attrs;

    for (char **vif = vifs; vif && *vif; vif++) {
        if (!is_number(*vif)) {
            continue;
        }
        for (size_t f = 0; f < ARRAY_SIZE(families); f++) {
            struct ds path = DS_EMPTY;
            char **addrs;

            ds_put_fmt(&path, "attr/vif/%s/%s", *vif, families[f]);
            addrs = xs->list(xs->aux, ds_cstr(&path));
            for (char **a = addrs; a && *a; a++) {
                char *value;
                char *key;

                if (!is_number(*a)) {
                    continue;
                }
                value = xs_read_rel(xs, "%s/%s", ds_cstr(&path), *a);
                if (!value) {
                    continue;
                }
                if (f == 0 && !strcmp(*a, "0")) {
                    key = xasprintf("%s/ip", *vif);
                    kv_push(&g->networks, &g->n_networks, key, value);
                    free(key);
                }
                key = xasprintf("%s/%s/%s", *vif, families[f], *a);
                kv_push(&g->networks, &g->n_networks, key, value);
                free(key);
                free(value);
            }
            free_strv(addrs);
            ds_destroy(&path);
        }
    }
    free_strv(vifs);
    if (g->n_networks) {
        return;
    }

    attrs = xs->list(xs->aux, "attr");
    for (char **a = attrs; a && *a; a++) {
        char *value, *key;

        if (!str_starts_with(*a, "eth") || !is_number(*a + 3)) {
            continue;
        }
        value = xs_read_rel(xs, "attr/%s/ip", *a);
        if (value) {
            key = xasprintf("%s/ip", *a + 3);
            kv_push(&g->networks, &g->n_networks, key, value);
            free(key);
            free(value);
        }
    }
    free_strv(attrs);
}

void
xen_config_guest_info(const struct xen_config_xs_reader *xs,
                      struct xenops_guest_info *ret_guest)
{
    /* Where the guest agent writes the OS description, and the key xapi
     * reports it under in VM_guest_metrics.os_version. */
    static const struct {
        const char *path;
        const char *key;
    } os_keys[] = {
        { "data/os_name", "name" },
        { "data/os_uname", "uname" },
        { "data/os_distro", "distro" },
        { "data/os_majorver", "major" },
        { "data/os_minorver", "minor" },
        { "attr/os/spmajor", "spmajor" },
        { "attr/os/spminor", "spminor" },
    };
    struct xenops_guest_info g;
    char *major, *minor, *micro;

    memset(&g, 0, sizeof g);
    major = xs->read(xs->aux, "attr/PVAddons/MajorVersion");
    minor = xs->read(xs->aux, "attr/PVAddons/MinorVersion");
    micro = xs->read(xs->aux, "attr/PVAddons/MicroVersion");
    if (major && minor) {
        snprintf(g.pv_drivers_version, sizeof g.pv_drivers_version,
                 "%.15s.%.15s.%.15s", major, minor, micro ? micro : "0");
    }
    /* Drivers are "up" when the guest can act on a shutdown request:
     * Linux announces it with control/feature-poweroff, Windows drivers
     * with feature-shutdown, and the XenServer tools with PVAddons. */
    g.pv_drivers = (major && minor)
                   || xen_config_guest_supports(xs, XENOPS_SHUTDOWN_POWEROFF);
    free(major);
    free(minor);
    free(micro);

    for (size_t i = 0; i < ARRAY_SIZE(os_keys); i++) {
        char *value = xs->read(xs->aux, os_keys[i].path);

        if (value) {
            kv_push(&g.os_version, &g.n_os_version, os_keys[i].key, value);
            free(value);
        }
    }
    guest_networks(xs, &g);
    g.memory_free = xs_read_kib(xs, "data/meminfo_free");
    g.memory_total = xs_read_kib(xs, "data/meminfo_total");
    *ret_guest = g;
}

static bool
xs_flag(const struct xen_config_xs_reader *xs, const char *path)
{
    char *s = xs->read(xs->aux, path);
    bool b = false;

    if (s && parse_bool(s, &b)) {
        b = false;
    }
    free(s);
    return b;
}

bool
xen_config_guest_supports(const struct xen_config_xs_reader *xs,
                          enum xenops_shutdown_kind kind)
{
    switch (kind) {
    case XENOPS_SHUTDOWN_POWEROFF:
    case XENOPS_SHUTDOWN_HALT:
        /* Linux handles "halt" but only advertises poweroff. */
        return xs_flag(xs, "control/feature-poweroff")
               || xs_flag(xs, "control/feature-shutdown");
    case XENOPS_SHUTDOWN_REBOOT:
        return xs_flag(xs, "control/feature-reboot")
               || xs_flag(xs, "control/feature-shutdown");
    case XENOPS_SHUTDOWN_SUSPEND:
        return xs_flag(xs, "control/feature-suspend");
    }
    return false;
}

const char *
xen_config_shutdown_word(enum xenops_shutdown_kind kind)
{
    switch (kind) {
    case XENOPS_SHUTDOWN_POWEROFF:
        return "poweroff";
    case XENOPS_SHUTDOWN_REBOOT:
        return "reboot";
    case XENOPS_SHUTDOWN_SUSPEND:
        return "suspend";
    case XENOPS_SHUTDOWN_HALT:
        return "halt";
    }
    return "poweroff";
}
