/* test-xen-config.c — tests of xenops/xen-config.c, the part of the Xen
 * provider that needs no hypervisor: what libxl is asked to build for a
 * VM spec, which specs are refused and why, and how Xen's domain flags and
 * the guest agent's xenstore entries are read.
 *
 * Each translated configuration is compared with libxl's own JSON in
 * tests/unit/xen-config/NAME.json.  After an intended change, run the
 * test with XEN_CONFIG_REGENERATE=1 to rewrite those files, and review the
 * diff before committing them; without it a difference is a failure that
 * names both files.  The directory is found through $XAPI_TOP (set by
 * tests/run-tests.sh), else next to this source file. */
#include <config.h>

#define TEST_MAIN
#include "tests/unit/test.h"

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xenctrl.h>

#include "util.h"
#include "xenops/xen-config.h"

#define VM_UUID "7b719ce6-0b17-4733-a8ee-dbc1e6e7b701"
#define MIB (1024 * 1024LL)

/* ---- Expected outputs ---- */

static const char *
expected_dir(void)
{
    static char dir[4096];
    const char *top = getenv("XAPI_TOP");
    struct stat st;

    if (top && *top) {
        snprintf(dir, sizeof dir, "%s/tests/unit/xen-config", top);
    } else {
        /* __FILE__ is this source file as the compiler was given it,
         * relative to the build directory or absolute. */
        const char *slash = strrchr(__FILE__, '/');
        int len = slash ? (int) (slash - __FILE__) : 1;

        snprintf(dir, sizeof dir, "%.*s/xen-config", len,
                 slash ? __FILE__ : ".");
    }
    return stat(dir, &st) || !S_ISDIR(st.st_mode) ? NULL : dir;
}

static bool
regenerating(void)
{
    const char *r = getenv("XEN_CONFIG_REGENERATE");

    return r && *r && strcmp(r, "0");
}

/* Prints where expected and actual first differ, line by line, so the
 * failure reads without a diff tool. */
static void
report_first_difference(const char *expected, const char *actual)
{
    int line = 1;

    for (;;) {
        size_t le = strcspn(expected, "\n"), la = strcspn(actual, "\n");

        if (le != la || memcmp(expected, actual, le)) {
            fprintf(stderr, "  first difference at line %d:\n"
                    "    expected: %.*s\n    actual:   %.*s\n", line,
                    (int) le, expected, (int) la, actual);
            return;
        }
        if (!expected[le] || !actual[la]) {
            fprintf(stderr, "  one output ends at line %d\n", line);
            return;
        }
        expected += le + 1;
        actual += la + 1;
        line++;
    }
}

static void
check_expected_output(const char *name, const char *actual)
{
    const char *dir = expected_dir();
    char *path, *expected = NULL;
    size_t len = 0;
    int rc;

    if (!dir) {
        fprintf(stderr, "  cannot find tests/unit/xen-config (set XAPI_TOP "
                "to the source tree)\n");
        test_failures_++;
        return;
    }
    path = xasprintf("%s/%s.json", dir, name);
    rc = read_file(path, 1 << 20, &expected, &len);
    if (regenerating()) {
        if (rc || strcmp(expected, actual)) {
            rc = write_file_atomic(path, actual, strlen(actual), 0644);
            if (rc) {
                fprintf(stderr, "  cannot write %s: %s\n", path,
                        strerror(-rc));
                test_failures_++;
            } else {
                fprintf(stderr, "  regenerated %s\n", path);
            }
        }
    } else if (rc) {
        fprintf(stderr, "  cannot read %s: %s (run with "
                "XEN_CONFIG_REGENERATE=1 to create it)\n", path,
                strerror(-rc));
        test_failures_++;
    } else if (strcmp(expected, actual)) {
        const char *tmp = getenv("TMPDIR");
        char *out = xasprintf("%s/xen-config-%s.json",
                              tmp && *tmp ? tmp : "/tmp", name);

        fprintf(stderr, "  %s differs from the translation of the spec\n",
                path);
        report_first_difference(expected, actual);
        if (!write_file_atomic(out, actual, strlen(actual), 0644)) {
            fprintf(stderr, "  actual output in %s; compare with\n"
                    "    diff -u %s %s\n"
                    "  and if the change is intended, rerun with "
                    "XEN_CONFIG_REGENERATE=1\n", out, path, out);
        }
        free(out);
        test_failures_++;
    }
    free(expected);
    free(path);
}

/* Translates spec, which must succeed, and checks the JSON. */
static void
check_translation(const char *name, const struct xenops_vm_spec *spec)
{
    libxl_domain_config cfg;
    char *err = NULL, *json;
    int rc;

    libxl_domain_config_init(&cfg);
    rc = xen_config_from_spec(spec, &cfg, &err);
    if (rc) {
        fprintf(stderr, "  %s: unexpected error %d: %s\n", name, rc,
                err ? err : "(no message)");
        test_failures_++;
        free(err);
        return;
    }
    CHECK(err == NULL);
    json = xen_config_to_json(&cfg);
    CHECK(json != NULL);
    if (json) {
        check_expected_output(name, json);
    }
    free(json);
    libxl_domain_config_dispose(&cfg);
}

/* Translates spec, which must fail with -EINVAL and a message containing
 * words, leaving the output untouched. */
static void
check_refused(const struct xenops_vm_spec *spec, const char *words)
{
    libxl_domain_config cfg, pristine;
    char *err = NULL;
    int rc;

    memset(&cfg, 0x5a, sizeof cfg);
    pristine = cfg;
    rc = xen_config_from_spec(spec, &cfg, &err);
    CHECK_INT(rc, -EINVAL);
    CHECK(err != NULL);
    if (err && !strstr(err, words)) {
        fprintf(stderr, "  error \"%s\" does not mention \"%s\"\n", err,
                words);
        test_failures_++;
    }
    CHECK(!memcmp(&cfg, &pristine, sizeof cfg));
    if (!rc) {
        libxl_domain_config_dispose(&cfg);
    }
    free(err);
}

/* ---- Specs ---- */

/* A small guest of the given type with nothing optional set. */
static struct xenops_vm_spec
base_spec(enum xenops_domain_type type)
{
    struct xenops_vm_spec s;

    memset(&s, 0, sizeof s);
    strcpy(s.uuid, VM_UUID);
    s.name = "test VM";
    s.type = type;
    s.memory_static_max = 1024 * MIB;
    s.memory_dynamic_max = 1024 * MIB;
    s.memory_dynamic_min = 512 * MIB;
    s.memory_static_min = 256 * MIB;
    s.memory_target = 768 * MIB;
    s.vcpus_max = 4;
    s.vcpus_at_startup = 2;
    if (type != XENOPS_HVM) {
        s.pv_kernel = "/boot/guest/vmlinuz";
    }
    return s;
}

static struct xenops_vbd_spec root_disk = {
    .ref = "OpaqueRef:vbd-0", .device = "xvda", .position = 0,
    .target = "nbd+unix:///?socket=/run/xapi/nbd/0f3e.sock", .format = "nbd",
};

static struct xenops_vif_spec first_vif = {
    .ref = "OpaqueRef:vif-0", .position = 0, .mac = "02:16:3e:00:00:01",
    .bridge = "xenbr0", .mtu = 1500,
};

/* ---- Translations ---- */

TEST(test_pv_guest_with_direct_kernel_boot)
{
    struct xenops_vm_spec s = base_spec(XENOPS_PV);

    s.pv_ramdisk = "/boot/guest/initrd.img";
    s.pv_args = "root=/dev/xvda1 console=hvc0 quiet";
    s.vbds = &root_disk;
    s.n_vbds = 1;
    s.vifs = &first_vif;
    s.n_vifs = 1;
    check_translation("pv-direct-kernel", &s);
}

TEST(test_pv_guest_with_pygrub)
{
    struct xenops_vm_spec s = base_spec(XENOPS_PV);
    struct xenops_kv platform[] = {
        /* HVM flags from a template mean nothing to a PV guest. */
        { "nx", "true" }, { "acpi", "1" }, { "apic", "true" },
        { "pae", "true" }, { "viridian", "false" },
        { "timeoffset", "0" },
    };

    s.pv_kernel = "";
    s.pv_bootloader = "pygrub";
    s.pv_bootloader_args = "  --entry=1   -q ";
    s.pv_args = "console=hvc0";
    s.platform = platform;
    s.n_platform = ARRAY_SIZE(platform);
    s.vbds = &root_disk;
    s.n_vbds = 1;
    check_translation("pv-pygrub", &s);
}

TEST(test_pvh_guest)
{
    struct xenops_vm_spec s = base_spec(XENOPS_PVH);
    struct xenops_kv platform[] = { { "acpi", "false" } };

    s.vcpus_max = s.vcpus_at_startup = 1;
    s.memory_target = 0;     /* starts at dynamic_max */
    s.memory_dynamic_max = 512 * MIB;
    s.pv_args = "console=hvc0 root=/dev/xvda";
    s.platform = platform;
    s.n_platform = ARRAY_SIZE(platform);
    s.vbds = &root_disk;
    s.n_vbds = 1;
    s.vifs = &first_vif;
    s.n_vifs = 1;
    check_translation("pvh", &s);
}

TEST(test_hvm_bios_guest_with_platform_flags)
{
    struct xenops_vm_spec s = base_spec(XENOPS_HVM);
    struct xenops_kv platform[] = {
        { "acpi", "1" }, { "apic", "true" }, { "pae", "true" },
        { "viridian", "true" }, { "viridian_reference_tsc", "true" },
        { "viridian_time_ref_count", "true" },
        { "viridian_crash_ctl", "false" }, { "nx", "true" },
        { "hpet", "false" }, { "acpi_s3", "0" }, { "acpi_s4", "0" },
        { "timeoffset", "-3600" }, { "vga", "std" }, { "videoram", "16" },
        { "usb", "true" }, { "usb_tablet", "1" },
        { "device-model", "qemu-upstream-compat" }, { "tsc_mode", "2" },
        { "device_id", "0002" }, { "cores-per-socket", "2" },
    };
    struct xenops_vbd_spec disk = {
        .ref = "OpaqueRef:vbd-0", .device = "hda", .position = 0,
        .target = "/var/lib/xapi/sr/2e5c/disk0.vhd", .format = "vhd",
    };

    s.hvm_firmware = "bios";
    s.hvm_boot_order = "cdn";
    s.shadow_multiplier = 1.5;
    s.platform = platform;
    s.n_platform = ARRAY_SIZE(platform);
    s.vbds = &disk;
    s.n_vbds = 1;
    check_translation("hvm-bios", &s);
}

TEST(test_hvm_uefi_guest)
{
    struct xenops_vm_spec s = base_spec(XENOPS_HVM);
    struct xenops_kv platform[] = {
        { "device-model", "qemu-upstream-uefi" }, { "secureboot", "false" },
        /* Enlightenments without viridian itself are dropped. */
        { "viridian_stimer", "true" },
    };

    s.hvm_firmware = "uefi";
    s.hvm_boot_order = "dc";
    s.platform = platform;
    s.n_platform = ARRAY_SIZE(platform);
    check_translation("hvm-uefi", &s);
}

TEST(test_guest_with_several_vbds_and_vifs)
{
    struct xenops_vm_spec s = base_spec(XENOPS_HVM);
    struct xenops_vbd_spec vbds[] = {
        { .ref = "OpaqueRef:vbd-disk", .device = "hda", .position = 0,
          .target = "nbd+unix:///disk?socket=/run/xapi/nbd/a1.sock",
          .format = "raw" },
        { .ref = "OpaqueRef:vbd-data", .device = "", .position = 1,
          .target = "/dev/mapper/VG_XenStorage-data", .format = "raw" },
        { .ref = "OpaqueRef:vbd-cd", .device = "hdd", .position = 3,
          .cdrom = true, .read_only = true,
          .target = "/var/lib/xapi/iso/debian-12.iso", .format = "raw" },
        { .ref = "OpaqueRef:vbd-empty", .device = "", .position = 2,
          .cdrom = true, .empty = true },
        { .ref = "OpaqueRef:vbd-ro", .device = "xvde", .position = 4,
          .read_only = true, .target = "/srv/images/base.qcow2",
          .format = "qcow2" },
    };
    struct xenops_vif_spec vifs[] = {
        { .ref = "OpaqueRef:vif-0", .position = 0,
          .mac = "02:16:3e:00:00:01", .bridge = "xenbr0", .mtu = 1500 },
        { .ref = "OpaqueRef:vif-2", .position = 2,
          .mac = "02:16:3E:0A:0B:0C", .bridge = "xapi1", .mtu = 9000 },
        { .ref = "OpaqueRef:vif-1", .position = 1, .mac = "",
          .bridge = NULL, .mtu = 0 },
    };

    s.vbds = vbds;
    s.n_vbds = ARRAY_SIZE(vbds);
    s.vifs = vifs;
    s.n_vifs = ARRAY_SIZE(vifs);
    check_translation("devices", &s);
}

TEST(test_vcpus_params_weight_cap_and_mask)
{
    struct xenops_vm_spec s = base_spec(XENOPS_PV);
    struct xenops_kv params[] = {
        { "weight", "512" }, { "cap", "50" }, { "mask", "0,2-3,7" },
        { "rrd_update", "ignored" },
    };

    s.vcpus_max = 8;
    s.vcpus_at_startup = 3;
    s.vcpus_params = params;
    s.n_vcpus_params = ARRAY_SIZE(params);
    check_translation("vcpus-params", &s);
}

TEST(test_translation_is_deterministic)
{
    struct xenops_vm_spec s = base_spec(XENOPS_PV);
    libxl_domain_config a, b;
    char *err = NULL, *ja, *jb;

    libxl_domain_config_init(&a);
    libxl_domain_config_init(&b);
    CHECK_INT(xen_config_from_spec(&s, &a, &err), 0);
    CHECK_INT(xen_config_from_spec(&s, &b, &err), 0);
    ja = xen_config_to_json(&a);
    jb = xen_config_to_json(&b);
    CHECK_STR(ja, jb);
    free(ja);
    free(jb);
    libxl_domain_config_dispose(&a);
    libxl_domain_config_dispose(&b);
}

TEST(test_every_shutdown_is_left_to_the_toolstack)
{
    struct xenops_vm_spec s = base_spec(XENOPS_HVM);
    libxl_domain_config cfg;
    char *err = NULL;

    libxl_domain_config_init(&cfg);
    CHECK_INT(xen_config_from_spec(&s, &cfg, &err), 0);
    CHECK_INT(cfg.on_poweroff, LIBXL_ACTION_ON_SHUTDOWN_DESTROY);
    CHECK_INT(cfg.on_reboot, LIBXL_ACTION_ON_SHUTDOWN_DESTROY);
    CHECK_INT(cfg.on_crash, LIBXL_ACTION_ON_SHUTDOWN_DESTROY);
    CHECK_INT(cfg.on_watchdog, LIBXL_ACTION_ON_SHUTDOWN_DESTROY);
    /* The domain is named after the VM's uuid, unique where names are
     * not. */
    CHECK_STR(cfg.c_info.name, VM_UUID);
    libxl_domain_config_dispose(&cfg);
}

TEST(test_hotplugged_disk_matches_the_boot_time_one)
{
    libxl_device_disk disk;
    char *err = NULL;

    libxl_device_disk_init(&disk);
    CHECK_INT(xen_config_disk_from_vbd(&root_disk, XENOPS_PV, &disk, &err),
              0);
    CHECK_STR(disk.vdev, "xvda");
    CHECK_STR(disk.pdev_path, root_disk.target);
    CHECK_STR(disk.script, XEN_CONFIG_NBD_SCRIPT);
    CHECK_INT(disk.backend, LIBXL_DISK_BACKEND_PHY);
    CHECK_INT(disk.format, LIBXL_DISK_FORMAT_RAW);
    CHECK_INT(disk.readwrite, 1);
    libxl_device_disk_dispose(&disk);
}

TEST(test_vdev_names_and_indices)
{
    struct xenops_vbd_spec v = { .position = 0 };
    char *err = NULL, *name;

    CHECK_INT(xen_config_vdev_index("xvda"), 0);
    CHECK_INT(xen_config_vdev_index("xvdz"), 25);
    CHECK_INT(xen_config_vdev_index("xvdaa"), 26);
    CHECK_INT(xen_config_vdev_index("hdd"), 3);
    CHECK_INT(xen_config_vdev_index("hde"), -1);    /* IDE has four */
    CHECK_INT(xen_config_vdev_index("sdp"), 15);
    CHECK_INT(xen_config_vdev_index("xvda1"), -1);  /* partitions */
    CHECK_INT(xen_config_vdev_index("vda"), -1);
    CHECK_INT(xen_config_vdev_index(""), -1);

    v.position = 1;
    name = xen_config_vbd_vdev(&v, XENOPS_PV, &err);
    CHECK_STR(name, "xvdb");
    free(name);
    v.position = 3;
    name = xen_config_vbd_vdev(&v, XENOPS_HVM, &err);
    CHECK_STR(name, "hdd");
    free(name);
    v.position = 4;
    name = xen_config_vbd_vdev(&v, XENOPS_HVM, &err);
    CHECK_STR(name, "xvde");
    free(name);
    v.position = 27;
    name = xen_config_vbd_vdev(&v, XENOPS_PVH, &err);
    CHECK_STR(name, "xvdab");
    free(name);
    CHECK(err == NULL);
}

/* ---- Refusals ---- */

TEST(test_pv_guest_without_kernel_or_bootloader_is_refused)
{
    struct xenops_vm_spec s = base_spec(XENOPS_PV);

    s.pv_kernel = "";
    check_refused(&s, "PV_kernel or PV_bootloader");
    s.type = XENOPS_PVH;
    s.pv_kernel = NULL;
    check_refused(&s, "PVH guest needs");
    s.pv_bootloader = "eliloader";
    check_refused(&s, "eliloader");
}

TEST(test_bad_identity_and_sizes_are_refused)
{
    struct xenops_vm_spec s = base_spec(XENOPS_PV);

    strcpy(s.uuid, "not-a-uuid");
    check_refused(&s, "not a UUID");
    s = base_spec(XENOPS_PV);
    s.type = (enum xenops_domain_type) 7;
    check_refused(&s, "domain type");
    s = base_spec(XENOPS_PV);
    s.vcpus_at_startup = 5;
    check_refused(&s, "VCPUs_at_startup");
    s = base_spec(XENOPS_PV);
    s.vcpus_max = 0;
    check_refused(&s, "VCPUs_max");
    s = base_spec(XENOPS_PV);
    s.memory_target = 2048 * MIB;
    check_refused(&s, "exceeds memory_static_max");
    s = base_spec(XENOPS_PV);
    s.memory_static_max = 0;
    check_refused(&s, "memory_static_max");
}

TEST(test_bad_vcpus_params_are_refused)
{
    struct xenops_vm_spec s = base_spec(XENOPS_PV);
    struct xenops_kv weight[] = { { "weight", "0" } };
    struct xenops_kv cap[] = { { "cap", "lots" } };
    struct xenops_kv mask[] = { { "mask", "0,x" } };
    struct xenops_kv range[] = { { "mask", "3-1" } };

    s.n_vcpus_params = 1;
    s.vcpus_params = weight;
    check_refused(&s, "weight");
    s.vcpus_params = cap;
    check_refused(&s, "cap");
    s.vcpus_params = mask;
    check_refused(&s, "mask");
    s.vcpus_params = range;
    check_refused(&s, "mask");
}

TEST(test_bad_hvm_settings_are_refused)
{
    struct xenops_vm_spec s = base_spec(XENOPS_HVM);
    struct xenops_kv acpi[] = { { "acpi", "maybe" } };
    struct xenops_kv dm[] = { { "device-model", "qemu-9" } };
    struct xenops_kv vga[] = { { "vga", "vesa" } };
    struct xenops_kv offset[] = { { "timeoffset", "1h" } };
    struct xenops_kv key[] = { { "bad/key", "1" } };

    s.hvm_firmware = "coreboot";
    check_refused(&s, "firmware");
    s = base_spec(XENOPS_HVM);
    s.hvm_boot_order = "c d";
    check_refused(&s, "order");
    s = base_spec(XENOPS_HVM);
    s.shadow_multiplier = 0.5;
    check_refused(&s, "shadow");
    s = base_spec(XENOPS_HVM);
    s.n_platform = 1;
    s.platform = acpi;
    check_refused(&s, "platform:acpi 'maybe'");
    s.platform = dm;
    check_refused(&s, "device-model");
    s.platform = vga;
    check_refused(&s, "vga");
    s.platform = offset;
    check_refused(&s, "timeoffset");
    s.platform = key;
    check_refused(&s, "bad/key");
}

TEST(test_bad_devices_are_refused)
{
    struct xenops_vm_spec s = base_spec(XENOPS_HVM);
    struct xenops_vbd_spec vbd;
    struct xenops_vbd_spec two[2];
    struct xenops_vif_spec vif;
    struct xenops_vif_spec two_vifs[2];

    s.n_vbds = 1;
    s.vbds = &vbd;
    vbd = root_disk;
    vbd.device = "vda";
    check_refused(&s, "device 'vda'");
    vbd = root_disk;
    vbd.empty = true;
    check_refused(&s, "empty but not a CD");
    vbd = root_disk;
    vbd.target = NULL;
    check_refused(&s, "no target");
    vbd = root_disk;
    vbd.target = "/srv/disk.img";
    check_refused(&s, "nbd: URI");
    vbd = root_disk;
    vbd.format = "vhd";
    check_refused(&s, "raw, not vhd");
    vbd = root_disk;
    vbd.target = "disk.img";
    vbd.format = "raw";
    check_refused(&s, "absolute path");
    vbd.target = "/srv/disk.img";
    vbd.format = "vmdk";
    check_refused(&s, "unknown format 'vmdk'");
    vbd.format = "raw";
    vbd.device = "hdb";
    vbd.read_only = true;
    check_refused(&s, "cannot be read-only");
    vbd.device = "xvdb";            /* emulated on IDE all the same */
    check_refused(&s, "cannot be read-only");
    vbd.device = "xvde";
    vbd.read_only = false;
    vbd.cdrom = true;
    check_refused(&s, "first four devices");

    two[0] = root_disk;
    two[0].device = "hda";
    two[1] = root_disk;
    two[1].device = "xvda";
    s.vbds = two;
    s.n_vbds = 2;
    check_refused(&s, "same disk slot");

    s.n_vbds = 0;
    s.n_vifs = 1;
    s.vifs = &vif;
    vif = first_vif;
    strcpy(vif.mac, "02:16:3e:00:00");
    check_refused(&s, "MAC");
    strcpy(vif.mac, "03:16:3e:00:00:01");   /* multicast */
    check_refused(&s, "MAC");
    vif = first_vif;
    vif.mtu = 20;
    check_refused(&s, "MTU");
    vif = first_vif;
    vif.position = -1;
    check_refused(&s, "position");

    two_vifs[0] = first_vif;
    two_vifs[1] = first_vif;
    s.vifs = two_vifs;
    s.n_vifs = 2;
    check_refused(&s, "two VIFs");
}

/* ---- What Xen reports ---- */

TEST(test_power_state_from_domain_flags)
{
    enum xenops_power power;
    enum xenops_shutdown_reason reason;
    const struct {
        uint32_t flags;
        enum xenops_power power;
        enum xenops_shutdown_reason reason;
    } cases[] = {
        { XEN_DOMINF_running, XENOPS_RUNNING, XENOPS_REASON_NONE },
        { XEN_DOMINF_blocked, XENOPS_RUNNING, XENOPS_REASON_NONE },
        { XEN_DOMINF_paused, XENOPS_PAUSED, XENOPS_REASON_NONE },
        { XEN_DOMINF_dying, XENOPS_SHUTDOWN, XENOPS_REASON_NONE },
#define DOWN(code) (XEN_DOMINF_shutdown | ((code) << XEN_DOMINF_shutdownshift))
        { DOWN(SHUTDOWN_poweroff), XENOPS_SHUTDOWN, XENOPS_REASON_POWEROFF },
        { DOWN(SHUTDOWN_reboot), XENOPS_SHUTDOWN, XENOPS_REASON_REBOOT },
        { DOWN(SHUTDOWN_suspend) | XEN_DOMINF_paused, XENOPS_SHUTDOWN,
          XENOPS_REASON_SUSPEND },
        { DOWN(SHUTDOWN_crash), XENOPS_SHUTDOWN, XENOPS_REASON_CRASH },
        { DOWN(SHUTDOWN_watchdog), XENOPS_SHUTDOWN, XENOPS_REASON_CRASH },
        { DOWN(SHUTDOWN_soft_reset), XENOPS_SHUTDOWN, XENOPS_REASON_REBOOT },
#undef DOWN
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        xen_config_power_from_flags(cases[i].flags, &power, &reason);
        CHECK_INT(power, cases[i].power);
        CHECK_INT(reason, cases[i].reason);
    }
}

/* A fake xenstore: the guest's subtree as "path=value" lines. */
struct fake_xs {
    const char *const *entries;
};

static char *
fake_read(void *aux, const char *path)
{
    const struct fake_xs *xs = aux;
    size_t len = strlen(path);

    for (const char *const *e = xs->entries; *e; e++) {
        if (!strncmp(*e, path, len) && (*e)[len] == '=') {
            return xstrdup(*e + len + 1);
        }
    }
    return NULL;
}

static char **
fake_list(void *aux, const char *path)
{
    const struct fake_xs *xs = aux;
    size_t len = strlen(path), n = 0;
    char **names = xcalloc(1, sizeof *names);
    bool found = false;

    for (const char *const *e = xs->entries; *e; e++) {
        const char *rest;
        size_t nlen;
        bool dup = false;

        if (strncmp(*e, path, len) || (*e)[len] != '/') {
            continue;
        }
        found = true;
        rest = *e + len + 1;
        nlen = strcspn(rest, "/=");
        for (size_t i = 0; i < n; i++) {
            if (strlen(names[i]) == nlen && !strncmp(names[i], rest, nlen)) {
                dup = true;
            }
        }
        if (!dup) {
            names = xrealloc(names, (n + 2) * sizeof *names);
            names[n++] = xmemdup0(rest, nlen);
            names[n] = NULL;
        }
    }
    if (!found) {
        free(names);
        return NULL;
    }
    return names;
}

static const char *
kv_get(const struct xenops_kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(kv[i].key, key)) {
            return kv[i].value;
        }
    }
    return NULL;
}

TEST(test_guest_agent_data_from_xenstore)
{
    static const char *const entries[] = {
        "attr/PVAddons/MajorVersion=9", "attr/PVAddons/MinorVersion=3",
        "attr/PVAddons/MicroVersion=1", "attr/PVAddons/BuildVersion=42",
        "data/os_name=Debian GNU/Linux 12 (bookworm)",
        "data/os_uname=6.1.0-18-amd64", "data/os_distro=debian",
        "data/os_majorver=12", "data/os_minorver=5",
        "attr/vif/0/ipv4/0=198.51.100.7", "attr/vif/0/ipv4/1=10.0.0.2",
        "attr/vif/0/ipv6/0=2001:db8::7", "attr/vif/1/ipv4/0=192.0.2.9",
        "data/meminfo_free=524288", "data/meminfo_total=1048576",
        "control/feature-poweroff=1", "control/feature-reboot=1",
        NULL,
    };
    struct fake_xs fx = { entries };
    struct xen_config_xs_reader xs = { fake_read, fake_list, &fx };
    struct xenops_domain_info info;

    memset(&info, 0, sizeof info);
    xen_config_guest_info(&xs, &info.guest);
    CHECK(info.guest.pv_drivers);
    CHECK_STR(info.guest.pv_drivers_version, "9.3.1");
    CHECK_INT(info.guest.n_os_version, 5);
    CHECK_STR(kv_get(info.guest.os_version, info.guest.n_os_version, "name"),
              "Debian GNU/Linux 12 (bookworm)");
    CHECK_STR(kv_get(info.guest.os_version, info.guest.n_os_version,
                     "major"), "12");
    CHECK_STR(kv_get(info.guest.networks, info.guest.n_networks, "0/ip"),
              "198.51.100.7");
    CHECK_STR(kv_get(info.guest.networks, info.guest.n_networks, "0/ipv4/1"),
              "10.0.0.2");
    CHECK_STR(kv_get(info.guest.networks, info.guest.n_networks, "0/ipv6/0"),
              "2001:db8::7");
    CHECK_STR(kv_get(info.guest.networks, info.guest.n_networks, "1/ip"),
              "192.0.2.9");
    CHECK_INT(info.guest.n_networks, 6);
    CHECK_INT(info.guest.memory_free, 512 * MIB);
    CHECK_INT(info.guest.memory_total, 1024 * MIB);
    CHECK(xen_config_guest_supports(&xs, XENOPS_SHUTDOWN_POWEROFF));
    CHECK(xen_config_guest_supports(&xs, XENOPS_SHUTDOWN_HALT));
    CHECK(xen_config_guest_supports(&xs, XENOPS_SHUTDOWN_REBOOT));
    CHECK(!xen_config_guest_supports(&xs, XENOPS_SHUTDOWN_SUSPEND));
    xenops_domain_info_clear(&info);
}

TEST(test_guest_without_agent_reports_nothing)
{
    static const char *const entries[] = {
        "attr/eth0/ip=203.0.113.5",     /* an old agent's layout */
        NULL,
    };
    struct fake_xs fx = { entries };
    struct xen_config_xs_reader xs = { fake_read, fake_list, &fx };
    struct xenops_domain_info info;

    memset(&info, 0, sizeof info);
    xen_config_guest_info(&xs, &info.guest);
    CHECK(!info.guest.pv_drivers);
    CHECK_STR(info.guest.pv_drivers_version, "");
    CHECK_INT(info.guest.n_os_version, 0);
    CHECK_INT(info.guest.n_networks, 1);
    CHECK_STR(kv_get(info.guest.networks, info.guest.n_networks, "0/ip"),
              "203.0.113.5");
    CHECK_INT(info.guest.memory_free, 0);
    CHECK(!xen_config_guest_supports(&xs, XENOPS_SHUTDOWN_POWEROFF));
    CHECK_STR(xen_config_shutdown_word(XENOPS_SHUTDOWN_HALT), "halt");
    CHECK_STR(xen_config_shutdown_word(XENOPS_SHUTDOWN_SUSPEND), "suspend");
    xenops_domain_info_clear(&info);
}

/* ---- The provider itself ---- */

TEST(test_xen_provider_rejects_bad_configuration)
{
    struct xenops_host *host = NULL;
    char *err = NULL;

    CHECK_INT(xenops_open("xen", "bridge_script=x", &host, &err), -EINVAL);
    CHECK(host == NULL);
    CHECK(err && strstr(err, "vif_script"));
    free(err);
}

/* Here there is no hypervisor: open must fail with a message, not crash.
 * On a Xen Dom0 it opens, reports the host and closes. */
TEST(test_xen_provider_opens_or_explains_why_not)
{
    struct xenops_host *host = NULL;
    struct xenops_host_info info;
    char *err = NULL;
    int rc = xenops_open("xen", "vif_script=vif-openvswitch", &host, &err);

    if (rc) {
        CHECK_INT(rc, -ENODEV);
        CHECK(host == NULL);
        CHECK(err && strstr(err, "cannot open libxenctrl"));
        free(err);
        SKIP("no Xen hypervisor on this machine");
    }
    CHECK_INT(xenops_host_info(host, &info, &err), 0);
    CHECK(info.n_cpus > 0);
    CHECK(info.memory_total > 0);
    xenops_close(host);
}
