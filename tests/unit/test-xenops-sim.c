/* test-xenops-sim.c — tests of the simulator provider (xenops/sim.c)
 * through the provider table of xenops/xenops.h, the way xapi uses it:
 * memory accounting, the domain lifecycle, the guest agent, clean
 * shutdowns that take time or are ignored, crashes and behaviour injected
 * through the control socket, suspend images, migration between two
 * simulated hosts, statistics, ballooning and hotplug, and the text
 * console.
 *
 * The hosts run with short timers (tick 5 ms, boot 20 ms, shutdown 60 ms)
 * so that the whole program takes a second or two. */
#include <config.h>

#define TEST_MAIN
#include "tests/unit/test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"
#include "xenops/xenops.h"

#define MIB (INT64_C(1) << 20)
#define FAST "tick_ms=5,boot_ms=20,shutdown_ms=60,stats_ms=20"

/* Updates seen by the callback. */
struct recorder {
    pthread_mutex_t lock;
    struct xenops_update u[4096];
    size_t n;
};

static void
record_update(void *aux, const struct xenops_update *u)
{
    struct recorder *r = aux;
    pthread_mutex_lock(&r->lock);
    if (r->n < ARRAY_SIZE(r->u)) {
        r->u[r->n++] = *u;
    }
    pthread_mutex_unlock(&r->lock);
}

static size_t
count_updates(struct recorder *r, enum xenops_update_kind kind,
              uint32_t domid)
{
    size_t n = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n; i++) {
        n += r->u[i].kind == kind && r->u[i].domid == domid;
    }
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* Waits up to timeout_ms until n updates of a kind have arrived; returns
 * the ms it took or -1. */
static int64_t
wait_count(struct recorder *r, enum xenops_update_kind kind, uint32_t domid,
           size_t n, int64_t timeout_ms)
{
    int64_t start = time_mono_ms();
    while (time_mono_ms() - start < timeout_ms) {
        if (count_updates(r, kind, domid) >= n) {
            return time_mono_ms() - start;
        }
        usleep(1000);
    }
    return -1;
}

/* Waits up to timeout_ms for an update; returns the ms it took or -1. */
static int64_t
wait_update(struct recorder *r, enum xenops_update_kind kind, uint32_t domid,
            int64_t timeout_ms)
{
    int64_t start = time_mono_ms();
    while (time_mono_ms() - start < timeout_ms) {
        if (count_updates(r, kind, domid)) {
            return time_mono_ms() - start;
        }
        usleep(1000);
    }
    return -1;
}

struct sim {
    struct xenops_host *host;
    const struct xenops_provider *p;
    struct recorder rec;
    char sock[108];
};

static struct sim *
sim_start(const char *extra, bool with_control)
{
    static int counter;
    struct sim *s = xcalloc(1, sizeof *s);
    char *config, *err = NULL;
    int rc;

    pthread_mutex_init(&s->rec.lock, NULL);
    if (with_control) {
        snprintf(s->sock, sizeof s->sock, "/tmp/test-xenops-sim.%d.%d.sock",
                 (int) getpid(), counter++);
    }
    config = xasprintf("%s%s%s%s%s", FAST, extra ? "," : "",
                       extra ? extra : "", with_control ? ",control=" : "",
                       s->sock);
    rc = xenops_open("sim", config, &s->host, &err);
    if (rc) {
        fprintf(stderr, "  cannot open sim '%s': %s\n", config, err);
        abort();
    }
    s->p = s->host->provider;
    s->p->set_update_callback(s->host, record_update, &s->rec);
    free(config);
    return s;
}

static void
sim_stop(struct sim *s)
{
    if (s) {
        xenops_close(s->host);
        pthread_mutex_destroy(&s->rec.lock);
        free(s);
    }
}

/* A VM of mem_mib MiB (static range half to double that), 4 vCPUs max,
 * one disk and one VIF at position 0. */
static struct xenops_vm_spec *
make_spec(const char *name, int64_t mem_mib, int vcpus)
{
    struct xenops_vm_spec *s = xcalloc(1, sizeof *s);

    uuid_generate(s->uuid);
    s->name = xstrdup(name);
    s->type = XENOPS_HVM;
    s->memory_static_min = mem_mib / 2 * MIB;
    s->memory_dynamic_min = mem_mib / 2 * MIB;
    s->memory_dynamic_max = mem_mib * MIB;
    s->memory_static_max = 2 * mem_mib * MIB;
    s->memory_target = mem_mib * MIB;
    s->vcpus_max = 4;
    s->vcpus_at_startup = vcpus;
    s->shadow_multiplier = 1.0;
    s->hvm_boot_order = xstrdup("cd");
    s->n_vbds = 1;
    s->vbds = xcalloc(1, sizeof *s->vbds);
    s->vbds[0].ref = xstrdup("OpaqueRef:vbd0");
    s->vbds[0].device = xstrdup("xvda");
    s->vbds[0].target = xstrdup("/dev/null");
    s->vbds[0].format = xstrdup("raw");
    s->n_vifs = 1;
    s->vifs = xcalloc(1, sizeof *s->vifs);
    s->vifs[0].ref = xstrdup("OpaqueRef:vif0");
    strcpy(s->vifs[0].mac, "02:00:00:00:00:01");
    s->vifs[0].bridge = xstrdup("xenbr0");
    s->vifs[0].mtu = 1500;
    return s;
}

static int64_t
overhead_of(const struct xenops_vm_spec *spec)
{
    /* The documented formula: 1 MiB + 8 KiB per MiB of static_max. */
    return MIB + 8192 * (spec->memory_static_max / MIB);
}

static int64_t
host_free(struct sim *s)
{
    struct xenops_host_info hi;
    char *err = NULL;
    CHECK_INT(s->p->host_info(s->host, &hi, &err), 0);
    return hi.memory_free;
}

static uint32_t
create(struct sim *s, const struct xenops_vm_spec *spec)
{
    uint32_t domid = 0;
    char *err = NULL;
    int rc = s->p->domain_create(s->host, spec, &domid, &err);
    if (rc) {
        fprintf(stderr, "  domain_create: %s\n", err);
        free(err);
    }
    CHECK_INT(rc, 0);
    return domid;
}

static struct xenops_domain_info
info_of(struct sim *s, uint32_t domid)
{
    struct xenops_domain_info info;
    char *err = NULL;
    int rc = s->p->domain_info(s->host, domid, &info, &err);
    if (rc) {
        fprintf(stderr, "  domain_info(%u): %s\n", domid, err);
        free(err);
        memset(&info, 0, sizeof info);
    }
    return info;
}

static enum xenops_power
power_of(struct sim *s, uint32_t domid)
{
    struct xenops_domain_info info = info_of(s, domid);
    xenops_domain_info_clear(&info);
    return info.power;
}

static void
unpause(struct sim *s, uint32_t domid)
{
    char *err = NULL;
    CHECK_INT(s->p->domain_unpause(s->host, domid, &err), 0);
}

/* Creates, starts and waits for the guest agent. */
static uint32_t
boot(struct sim *s, const struct xenops_vm_spec *spec)
{
    uint32_t domid = create(s, spec);
    unpause(s, domid);
    CHECK(wait_update(&s->rec, XENOPS_UPDATE_GUEST, domid, 2000) >= 0);
    return domid;
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

/* Sends one control command and returns the whole answer (the "OK N"
 * line and its N lines, or the one line). */
static char *
ctl(struct sim *s, const char *cmd)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct ds ds = DS_EMPTY;
    size_t lines = 0, want = 1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char c;

    strcpy(sun.sun_path, s->sock);
    if (fd < 0 || connect(fd, (struct sockaddr *) &sun, sizeof sun) < 0) {
        fprintf(stderr, "  connect %s: %s\n", s->sock, strerror(errno));
        abort();
    }
    CHECK(write(fd, cmd, strlen(cmd)) == (ssize_t) strlen(cmd));
    CHECK(write(fd, "\n", 1) == 1);
    while (lines < want && read(fd, &c, 1) == 1) {
        ds_put_char(&ds, c);
        if (c == '\n' && ++lines == 1) {
            unsigned long n;
            if (sscanf(ds_cstr(&ds), "OK %lu\n", &n) == 1) {
                want += n;
            }
        }
    }
    close(fd);
    return ds_steal(&ds);
}

/* ---- memory and lifecycle ---- */

TEST(test_host_memory_is_accounted_per_domain)
{
    struct sim *s = sim_start("memory_mib=4096,dom0_memory_mib=1024", false);
    struct xenops_vm_spec *a = make_spec("a", 1024, 2);
    struct xenops_vm_spec *big = make_spec("big", 3000, 1);
    int64_t free0 = host_free(s);
    uint32_t domid, none = 0;
    char *err = NULL;

    CHECK_INT(free0, 3072 * MIB);
    domid = create(s, a);
    CHECK_INT(host_free(s), free0 - 1024 * MIB - overhead_of(a));

    /* 3000 MiB no longer fit beside the first domain. */
    CHECK_INT(s->p->domain_create(s->host, big, &none, &err), -ENOMEM);
    CHECK(err && strstr(err, "needs") && strstr(err, "free"));
    CHECK_INT(none, 0);
    free(err);
    err = NULL;

    CHECK_INT(s->p->domain_destroy(s->host, domid, &err), 0);
    CHECK_INT(host_free(s), free0);
    CHECK_INT(s->p->domain_destroy(s->host, domid, &err), -ENOENT);
    free(err);
    err = NULL;
    /* Now it fits. */
    domid = create(s, big);
    CHECK(domid > 0);

    /* A target of 0 means dynamic_max. */
    xenops_vm_spec_free(a);
    a = make_spec("zero-target", 64, 1);
    a->memory_target = 0;
    a->memory_dynamic_max = 32 * MIB;
    CHECK_INT(s->p->domain_create(s->host, a, &none, &err), -ENOMEM);
    free(err);
    err = NULL;
    CHECK_INT(s->p->domain_destroy(s->host, domid, &err), 0);
    domid = create(s, a);
    {
        struct xenops_domain_info info = info_of(s, domid);
        CHECK_INT(info.memory_actual, 32 * MIB);
        xenops_domain_info_clear(&info);
    }
    xenops_vm_spec_free(a);
    xenops_vm_spec_free(big);
    sim_stop(s);
}

TEST(test_domains_start_paused_and_get_increasing_domids)
{
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("vm", 256, 2);
    struct xenops_domain_info info;
    uint32_t d1, d2, d3;
    char *err = NULL;

    d1 = create(s, spec);
    d2 = create(s, spec);
    CHECK_INT(d1, 1);
    CHECK_INT(d2, 2);
    info = info_of(s, d1);
    CHECK_INT(info.domid, d1);
    CHECK_INT(info.power, XENOPS_PAUSED);
    CHECK_INT(info.reason, XENOPS_REASON_NONE);
    CHECK_INT(info.memory_actual, 256 * MIB);
    CHECK_INT(info.memory_target, 256 * MIB);
    CHECK_INT(info.vcpus_online, 2);
    CHECK(info.start_time > 1600000000);
    CHECK(!info.guest.pv_drivers);
    xenops_domain_info_clear(&info);

    unpause(s, d1);
    CHECK_INT(power_of(s, d1), XENOPS_RUNNING);
    CHECK_INT(s->p->domain_pause(s->host, d1, &err), 0);
    CHECK_INT(power_of(s, d1), XENOPS_PAUSED);
    CHECK_INT(s->p->domain_destroy(s->host, d1, &err), 0);
    CHECK_INT(s->p->domain_info(s->host, d1, &info, &err), -ENOENT);
    free(err);
    err = NULL;
    CHECK_INT(s->p->domain_unpause(s->host, 99, &err), -ENOENT);
    free(err);
    err = NULL;

    /* Domids are not reused. */
    d3 = create(s, spec);
    CHECK_INT(d3, 3);

    /* Bad vCPU counts are refused. */
    spec->vcpus_at_startup = 5;
    CHECK_INT(s->p->domain_create(s->host, spec, &d3, &err), -EINVAL);
    free(err);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

TEST(test_config_keys_and_config_file)
{
    char path[] = "/tmp/test-xenops-sim-conf.XXXXXX";
    struct xenops_host *h = NULL;
    struct xenops_host_info hi;
    char *err = NULL, *config;
    int fd = mkstemp(path);
    static const char file[] = "# a simulated host\n\ncpus=8\n"
                               "memory_mib = 8192\nhostname=from-file\n";

    CHECK(fd >= 0);
    CHECK(write(fd, file, sizeof file - 1) == sizeof file - 1);
    close(fd);

    /* The string's keys override the file's. */
    config = xasprintf("config_file=%s,hostname=sim7,dom0_memory_mib=2048",
                       path);
    CHECK_INT(xenops_open("sim", config, &h, &err), 0);
    CHECK_INT(xenops_host_info(h, &hi, &err), 0);
    CHECK_INT(hi.n_cpus, 8);
    CHECK_INT(hi.memory_total, 8192 * MIB);
    CHECK_INT(hi.dom0_memory, 2048 * MIB);
    CHECK_INT(hi.memory_free, 6144 * MIB);
    CHECK_STR(hi.hostname, "sim7");
    xenops_close(h);
    free(config);

    static const char *const bad[] = {
        "memory_mib=1024,dom0_memory_mib=1024", "bogus=1", "cpus=0",
        "pv_drivers=maybe", "tick_ms=x", "noequals",
        "config_file=/nonexistent/sim.conf",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        h = NULL;
        CHECK(xenops_open("sim", bad[i], &h, &err) == -EINVAL
              || !strcmp(bad[i], "config_file=/nonexistent/sim.conf"));
        CHECK(h == NULL);
        CHECK(err && strstr(err, "bad simulator configuration"));
        free(err);
        err = NULL;
    }
    unlink(path);
}

/* ---- the guest agent ---- */

TEST(test_guest_agent_appears_after_boot)
{
    struct sim *s = sim_start("boot_ms=40", false);
    struct xenops_vm_spec *spec = make_spec("web", 512, 2);
    struct xenops_domain_info info;
    uint32_t domid = create(s, spec);
    int64_t t;

    /* A paused guest does not boot. */
    usleep(80 * 1000);
    CHECK_INT(count_updates(&s->rec, XENOPS_UPDATE_GUEST, domid), 0);
    unpause(s, domid);
    info = info_of(s, domid);
    CHECK(!info.guest.pv_drivers);
    xenops_domain_info_clear(&info);

    t = wait_update(&s->rec, XENOPS_UPDATE_GUEST, domid, 2000);
    CHECK(t >= 30);
    info = info_of(s, domid);
    CHECK(info.guest.pv_drivers);
    CHECK_STR(info.guest.pv_drivers_version, "9.4.0");
    CHECK_STR(kv_get(info.guest.os_version, info.guest.n_os_version, "name"),
              "Debian GNU/Linux 12");
    CHECK_STR(kv_get(info.guest.os_version, info.guest.n_os_version,
                     "distro"), "debian");
    CHECK_STR(kv_get(info.guest.os_version, info.guest.n_os_version,
                     "major"), "12");
    CHECK_STR(kv_get(info.guest.os_version, info.guest.n_os_version,
                     "uname"), "6.1.0-sim");
    CHECK_STR(kv_get(info.guest.networks, info.guest.n_networks, "0/ip"),
              "198.51.100.11");
    CHECK_STR(kv_get(info.guest.networks, info.guest.n_networks,
                     "0/ipv4/0"), "198.51.100.11");
    CHECK_INT(info.guest.n_networks, 2);
    CHECK_INT(info.guest.memory_total, 512 * MIB);
    CHECK(info.guest.memory_free > 0
          && info.guest.memory_free < info.guest.memory_total);
    xenops_domain_info_clear(&info);
    CHECK(info.guest.os_version == NULL && info.guest.n_networks == 0);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

/* ---- clean shutdown ---- */

TEST(test_clean_shutdown_takes_shutdown_ms_and_reports_the_reason)
{
    static const struct {
        enum xenops_shutdown_kind kind;
        enum xenops_shutdown_reason reason;
    } cases[] = {
        { XENOPS_SHUTDOWN_POWEROFF, XENOPS_REASON_POWEROFF },
        { XENOPS_SHUTDOWN_REBOOT, XENOPS_REASON_REBOOT },
        { XENOPS_SHUTDOWN_HALT, XENOPS_REASON_HALT },
        { XENOPS_SHUTDOWN_SUSPEND, XENOPS_REASON_SUSPEND },
    };
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("vm", 128, 1);
    char *err = NULL;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        uint32_t domid = boot(s, spec);
        struct xenops_domain_info info;
        int64_t t;

        CHECK_INT(s->p->domain_shutdown(s->host, domid, cases[i].kind, &err),
                  0);
        usleep(25 * 1000);
        CHECK_INT(power_of(s, domid), XENOPS_RUNNING);
        t = wait_update(&s->rec, XENOPS_UPDATE_DOMAIN, domid, 2000);
        CHECK(t >= 60 - 25 - 5);
        info = info_of(s, domid);
        CHECK_INT(info.power, XENOPS_SHUTDOWN);
        CHECK_INT(info.reason, cases[i].reason);
        CHECK(!info.guest.pv_drivers);
        xenops_domain_info_clear(&info);

        /* A shut down domain still holds its memory until destroyed. */
        CHECK_INT(s->p->domain_shutdown(s->host, domid, cases[i].kind, &err),
                  -EINVAL);
        free(err);
        err = NULL;
        CHECK_INT(s->p->domain_unpause(s->host, domid, &err), -EINVAL);
        free(err);
        err = NULL;
        CHECK_INT(s->p->domain_destroy(s->host, domid, &err), 0);
    }
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

TEST(test_paused_guest_does_not_act_on_shutdown_until_unpaused)
{
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("vm", 128, 1);
    uint32_t domid = boot(s, spec);
    char *err = NULL;
    int64_t t;

    CHECK_INT(s->p->domain_pause(s->host, domid, &err), 0);
    CHECK_INT(s->p->domain_shutdown(s->host, domid, XENOPS_SHUTDOWN_POWEROFF,
                                    &err), 0);
    usleep(150 * 1000);
    CHECK_INT(power_of(s, domid), XENOPS_PAUSED);
    CHECK_INT(count_updates(&s->rec, XENOPS_UPDATE_DOMAIN, domid), 0);
    unpause(s, domid);
    t = wait_update(&s->rec, XENOPS_UPDATE_DOMAIN, domid, 2000);
    CHECK(t >= 50);
    CHECK_INT(power_of(s, domid), XENOPS_SHUTDOWN);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

TEST(test_guest_without_pv_drivers_cannot_be_asked_to_shut_down)
{
    struct sim *s = sim_start("pv_drivers=no", false);
    struct xenops_vm_spec *spec = make_spec("old", 128, 1);
    struct xenops_vif_spec vif = { .ref = "OpaqueRef:vif1", .position = 1 };
    struct xenops_domain_info info;
    uint32_t domid = create(s, spec);
    char *err = NULL;

    unpause(s, domid);
    CHECK_INT(s->p->domain_shutdown(s->host, domid, XENOPS_SHUTDOWN_POWEROFF,
                                    &err), -EOPNOTSUPP);
    CHECK(err && strstr(err, "PV drivers"));
    free(err);
    err = NULL;
    usleep(200 * 1000);
    CHECK_INT(power_of(s, domid), XENOPS_RUNNING);
    CHECK_INT(count_updates(&s->rec, XENOPS_UPDATE_DOMAIN, domid), 0);
    CHECK_INT(count_updates(&s->rec, XENOPS_UPDATE_GUEST, domid), 0);
    info = info_of(s, domid);
    CHECK(!info.guest.pv_drivers);
    CHECK_INT(info.guest.n_networks, 0);
    xenops_domain_info_clear(&info);

    /* Nor can it hotplug. */
    CHECK_INT(s->p->set_vcpus(s->host, domid, 2, &err), -EOPNOTSUPP);
    free(err);
    err = NULL;
    CHECK_INT(s->p->device_plug(s->host, domid, XENOPS_DEV_VIF, &vif, &err),
              -EOPNOTSUPP);
    free(err);
    err = NULL;
    CHECK_INT(s->p->device_unplug(s->host, domid, XENOPS_DEV_VBD, 0, false,
                                  &err), -EOPNOTSUPP);
    free(err);
    err = NULL;
    CHECK_INT(s->p->device_unplug(s->host, domid, XENOPS_DEV_VBD, 0, true,
                                  &err), 0);
    CHECK_INT(s->p->send_sysrq(s->host, domid, 'b', &err), -EOPNOTSUPP);
    free(err);
    err = NULL;

    /* An HVM guest still has the ACPI power button. */
    CHECK_INT(s->p->send_trigger(s->host, domid, "power", &err), 0);
    CHECK(wait_update(&s->rec, XENOPS_UPDATE_DOMAIN, domid, 2000) >= 0);
    info = info_of(s, domid);
    CHECK_INT(info.reason, XENOPS_REASON_POWEROFF);
    xenops_domain_info_clear(&info);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

/* ---- the control socket ---- */

TEST(test_guest_that_ignores_requests_never_shuts_down)
{
    struct sim *s = sim_start(NULL, true);
    struct xenops_vm_spec *spec = make_spec("deaf", 128, 1);
    uint32_t domid = boot(s, spec);
    char *err = NULL, cmd[128], *answer;

    snprintf(cmd, sizeof cmd, "set %u ignore_shutdown yes", domid);
    answer = ctl(s, cmd);
    CHECK_STR(answer, "OK\n");
    free(answer);
    /* The request is taken (its drivers are there) but not acted on. */
    CHECK_INT(s->p->domain_shutdown(s->host, domid, XENOPS_SHUTDOWN_POWEROFF,
                                    &err), 0);
    CHECK_INT(s->p->send_trigger(s->host, domid, "power", &err), 0);
    usleep(250 * 1000);
    CHECK_INT(power_of(s, domid), XENOPS_RUNNING);
    CHECK_INT(count_updates(&s->rec, XENOPS_UPDATE_DOMAIN, domid), 0);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

TEST(test_behaviour_set_by_uuid_before_the_domain_exists)
{
    struct sim *s = sim_start(NULL, true);
    struct xenops_vm_spec *spec = make_spec("stubborn", 128, 1);
    char *cmd = xasprintf("set %s ignore_shutdown yes", spec->uuid);
    char *answer = ctl(s, cmd);
    uint32_t domid;
    char *err = NULL;

    CHECK(str_starts_with(answer, "OK"));
    free(answer);
    free(cmd);
    domid = boot(s, spec);
    CHECK_INT(s->p->domain_shutdown(s->host, domid, XENOPS_SHUTDOWN_POWEROFF,
                                    &err), 0);
    usleep(150 * 1000);
    CHECK_INT(power_of(s, domid), XENOPS_RUNNING);

    /* Changing its mind makes it answer the next request. */
    cmd = xasprintf("set %u ignore_shutdown no", domid);
    answer = ctl(s, cmd);
    CHECK_STR(answer, "OK\n");
    free(answer);
    free(cmd);
    cmd = xasprintf("set %s shutdown_ms 10", spec->uuid);
    answer = ctl(s, cmd);
    CHECK_STR(answer, "OK\n");
    free(answer);
    free(cmd);
    CHECK_INT(s->p->domain_shutdown(s->host, domid, XENOPS_SHUTDOWN_REBOOT,
                                    &err), 0);
    CHECK(wait_update(&s->rec, XENOPS_UPDATE_DOMAIN, domid, 2000) >= 0);
    CHECK_INT(power_of(s, domid), XENOPS_SHUTDOWN);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

TEST(test_crash_injected_through_the_control_socket)
{
    struct sim *s = sim_start(NULL, true);
    struct xenops_vm_spec *spec = make_spec("victim", 128, 1);
    uint32_t domid = boot(s, spec);
    struct xenops_domain_info info;
    char cmd[64], *answer, *line;

    snprintf(cmd, sizeof cmd, "crash %u", domid);
    answer = ctl(s, cmd);
    CHECK_STR(answer, "OK\n");
    free(answer);
    CHECK(wait_update(&s->rec, XENOPS_UPDATE_DOMAIN, domid, 2000) >= 0);
    info = info_of(s, domid);
    CHECK_INT(info.power, XENOPS_SHUTDOWN);
    CHECK_INT(info.reason, XENOPS_REASON_CRASH);
    xenops_domain_info_clear(&info);

    answer = ctl(s, "list");
    line = xasprintf("OK 1\n%u %s shutdown crash\n", domid, spec->uuid);
    CHECK_STR(answer, line);
    free(line);
    free(answer);

    answer = ctl(s, cmd);
    CHECK(str_starts_with(answer, "ERR"));
    free(answer);
    answer = ctl(s, "crash 4242");
    CHECK(str_starts_with(answer, "ERR no domain"));
    free(answer);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

TEST(test_control_socket_commands)
{
    struct sim *s = sim_start(NULL, true);
    struct xenops_vm_spec *spec = make_spec("web 1", 128, 2);
    uint32_t domid = boot(s, spec);
    struct xenops_domain_info info;
    char cmd[128], *answer;
    size_t guest_updates;

    snprintf(cmd, sizeof cmd, "console %s", spec->uuid);
    answer = ctl(s, cmd);
    CHECK_STR(answer, "OK 3\nDebian GNU/Linux 12 sim-web-1 ttyS0\n\n"
              "sim login: \n");
    free(answer);

    snprintf(cmd, sizeof cmd, "stats %u", domid);
    answer = ctl(s, cmd);
    CHECK(str_starts_with(answer, "OK "));
    CHECK(strstr(answer, "\npower=running\n"));
    CHECK(strstr(answer, "\nvcpus_online=2\n"));
    CHECK(strstr(answer, "\nvcpu1="));
    CHECK(strstr(answer, "\npv_drivers=yes\n"));
    free(answer);

    /* The drivers going away is guest data changing. */
    guest_updates = count_updates(&s->rec, XENOPS_UPDATE_GUEST, domid);
    snprintf(cmd, sizeof cmd, "set %u pv_drivers no", domid);
    answer = ctl(s, cmd);
    CHECK_STR(answer, "OK\n");
    free(answer);
    CHECK(wait_count(&s->rec, XENOPS_UPDATE_GUEST, domid, guest_updates + 1,
                     2000) >= 0);
    info = info_of(s, domid);
    CHECK(!info.guest.pv_drivers);
    xenops_domain_info_clear(&info);

    static const char *const bad[] = {
        "", "frobnicate", "set 1 pv_drivers perhaps", "set 1 colour blue",
        "set 77 pv_drivers yes", "guest-shutdown 1 explode", "console",
        "stats not-a-domain",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        answer = ctl(s, bad[i]);
        CHECK(str_starts_with(answer, "ERR "));
        free(answer);
    }
    answer = ctl(s, "help");
    CHECK(str_starts_with(answer, "OK 7\n"));
    free(answer);

    /* The guest shuts itself down. */
    snprintf(cmd, sizeof cmd, "guest-shutdown %u halt", domid);
    answer = ctl(s, cmd);
    CHECK_STR(answer, "OK\n");
    free(answer);
    CHECK(wait_update(&s->rec, XENOPS_UPDATE_DOMAIN, domid, 2000) >= 0);
    info = info_of(s, domid);
    CHECK_INT(info.reason, XENOPS_REASON_HALT);
    xenops_domain_info_clear(&info);
    answer = ctl(s, cmd);
    CHECK(str_starts_with(answer, "ERR "));
    free(answer);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

/* ---- suspend images ---- */

static uint32_t
suspend(struct sim *s, const struct xenops_vm_spec *spec)
{
    uint32_t domid = boot(s, spec);
    char *err = NULL;

    CHECK_INT(s->p->domain_shutdown(s->host, domid, XENOPS_SHUTDOWN_SUSPEND,
                                    &err), 0);
    CHECK(wait_update(&s->rec, XENOPS_UPDATE_DOMAIN, domid, 2000) >= 0);
    return domid;
}

TEST(test_suspend_save_restore_round_trip)
{
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("sleepy", 64, 2);
    char path[] = "/tmp/test-xenops-sim-img.XXXXXX";
    struct xenops_domain_info info;
    uint32_t domid, restored = 0;
    char *err = NULL;
    int fd = mkstemp(path);
    struct stat st;
    int64_t free_before;

    close(fd);
    domid = boot(s, spec);
    CHECK_INT(s->p->set_vcpus(s->host, domid, 3, &err), 0);
    /* Only a suspended domain can be saved. */
    CHECK_INT(s->p->domain_save(s->host, domid, path, &err), -EINVAL);
    CHECK(err && strstr(err, "not suspended"));
    free(err);
    err = NULL;
    CHECK_INT(s->p->domain_shutdown(s->host, domid, XENOPS_SHUTDOWN_SUSPEND,
                                    &err), 0);
    CHECK(wait_update(&s->rec, XENOPS_UPDATE_DOMAIN, domid, 2000) >= 0);
    CHECK_INT(s->p->domain_save(s->host, domid, path, &err), 0);
    CHECK(stat(path, &st) == 0 && st.st_size > 64 * MIB / 16);
    CHECK_INT(s->p->domain_destroy(s->host, domid, &err), 0);

    /* The VM's record no longer allows the vCPUs the guest has online. */
    spec->vcpus_max = 2;
    CHECK_INT(s->p->domain_restore(s->host, spec, path, &restored, &err),
              -EINVAL);
    CHECK(err && strstr(err, "vCPUs"));
    free(err);
    err = NULL;
    spec->vcpus_max = 4;

    free_before = host_free(s);
    CHECK_INT(s->p->domain_restore(s->host, spec, path, &restored, &err), 0);
    CHECK(restored > domid);
    CHECK_INT(host_free(s), free_before - 64 * MIB - overhead_of(spec));
    info = info_of(s, restored);
    CHECK_INT(info.power, XENOPS_PAUSED);
    CHECK_INT(info.memory_actual, 64 * MIB);
    CHECK_INT(info.vcpus_online, 3);
    xenops_domain_info_clear(&info);

    /* The guest resumes where it was: no boot, its agent reports at once
     * (the host's boot delay is 20 ms; the update comes within ticks). */
    unpause(s, restored);
    CHECK(wait_update(&s->rec, XENOPS_UPDATE_GUEST, restored, 2000) >= 0);
    info = info_of(s, restored);
    CHECK(info.guest.pv_drivers);
    xenops_domain_info_clear(&info);
    unlink(path);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

static void
rewrite_byte(const char *path, off_t off, int delta)
{
    int fd = open(path, O_RDWR);
    unsigned char c = 0;
    CHECK(pread(fd, &c, 1, off) == 1);
    c += delta;
    CHECK(pwrite(fd, &c, 1, off) == 1);
    close(fd);
}

static void
check_restore_fails(struct sim *s, const struct xenops_vm_spec *spec,
                    const char *path, int want_rc, const char *want_msg)
{
    uint32_t domid = 0;
    char *err = NULL;
    int64_t free_before = host_free(s);

    CHECK_INT(s->p->domain_restore(s->host, spec, path, &domid, &err),
              want_rc);
    if (!err || !strstr(err, want_msg)) {
        fprintf(stderr, "  error '%s' lacks '%s'\n", err ? err : "(null)",
                want_msg);
        test_failures_++;
    }
    CHECK_INT(domid, 0);
    CHECK_INT(host_free(s), free_before);
    free(err);
}

TEST(test_corrupt_suspend_images_are_rejected)
{
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("sleepy", 64, 1);
    struct xenops_vm_spec *other = make_spec("other", 64, 1);
    char path[] = "/tmp/test-xenops-sim-bad.XXXXXX";
    uint32_t domid;
    char *err = NULL;
    struct stat st;
    int fd = mkstemp(path);

    close(fd);
    domid = suspend(s, spec);
    CHECK_INT(s->p->domain_save(s->host, domid, path, &err), 0);
    CHECK(stat(path, &st) == 0);

    check_restore_fails(s, other, path, -EINVAL, "is of VM");
    rewrite_byte(path, st.st_size / 2, 1);          /* in the payload */
    check_restore_fails(s, spec, path, -EINVAL, "checksum");
    rewrite_byte(path, st.st_size / 2, -1);
    rewrite_byte(path, 20, 1);                      /* in the state */
    check_restore_fails(s, spec, path, -EINVAL, "image");
    rewrite_byte(path, 20, -1);
    rewrite_byte(path, 0, 1);                       /* the magic */
    check_restore_fails(s, spec, path, -EINVAL, "magic");
    rewrite_byte(path, 0, -1);
    CHECK(truncate(path, st.st_size - 100) == 0);
    check_restore_fails(s, spec, path, -EINVAL, "truncated");
    check_restore_fails(s, spec, "/nonexistent/image", -ENOENT,
                        "/nonexistent/image");
    unlink(path);
    xenops_vm_spec_free(spec);
    xenops_vm_spec_free(other);
    sim_stop(s);
}

/* ---- migration ---- */

struct receiver {
    struct sim *s;
    const struct xenops_vm_spec *spec;
    int fd;
    int rc;
    uint32_t domid;
    char *err;
};

static void *
receive_thread(void *r_)
{
    struct receiver *r = r_;
    r->rc = r->s->p->migrate_receive(r->s->host, r->spec, r->fd, &r->domid,
                                     &r->err);
    close(r->fd);
    return NULL;
}

TEST(test_migration_to_another_host_over_a_socketpair)
{
    struct sim *a = sim_start("hostname=a", false);
    struct sim *b = sim_start("hostname=b", false);
    struct xenops_vm_spec *spec = make_spec("mover", 512, 2);
    struct receiver r = { .s = b, .spec = spec };
    struct xenops_domain_info info;
    int64_t a_free = host_free(a), b_free = host_free(b);
    uint32_t domid = boot(a, spec);
    pthread_t t;
    char *err = NULL;
    int sv[2];

    CHECK_INT(a->p->set_vcpus(a->host, domid, 3, &err), 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    r.fd = sv[1];
    pthread_create(&t, NULL, receive_thread, &r);
    CHECK_INT(a->p->migrate_send(a->host, domid, sv[0], &err), 0);
    close(sv[0]);
    pthread_join(t, NULL);
    CHECK_INT(r.rc, 0);
    free(r.err);

    /* Gone from the source, its memory free again. */
    CHECK_INT(a->p->domain_info(a->host, domid, &info, &err), -ENOENT);
    free(err);
    err = NULL;
    CHECK_INT(host_free(a), a_free);

    CHECK_INT(r.domid, 1);
    CHECK_INT(host_free(b), b_free - 512 * MIB - overhead_of(spec));
    info = info_of(b, r.domid);
    CHECK_INT(info.power, XENOPS_PAUSED);
    CHECK_INT(info.vcpus_online, 3);
    CHECK_INT(info.memory_actual, 512 * MIB);
    xenops_domain_info_clear(&info);
    unpause(b, r.domid);
    CHECK(wait_update(&b->rec, XENOPS_UPDATE_GUEST, r.domid, 2000) >= 0);
    info = info_of(b, r.domid);
    CHECK(info.guest.pv_drivers);
    CHECK_STR(kv_get(info.guest.networks, info.guest.n_networks, "0/ip"),
              "198.51.100.11");
    xenops_domain_info_clear(&info);

    xenops_vm_spec_free(spec);
    sim_stop(a);
    sim_stop(b);
}

TEST(test_migration_respects_the_receivers_memory)
{
    struct sim *a = sim_start(NULL, false);
    struct sim *b = sim_start("memory_mib=1024,dom0_memory_mib=768", false);
    struct xenops_vm_spec *spec = make_spec("too-big", 512, 1);
    struct receiver r = { .s = b, .spec = spec };
    uint32_t domid = boot(a, spec);
    pthread_t t;
    char *err = NULL;
    int sv[2];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    r.fd = sv[1];
    pthread_create(&t, NULL, receive_thread, &r);
    /* The receiver reads the stream, refuses, and says so. */
    CHECK_INT(a->p->migrate_send(a->host, domid, sv[0], &err), -ENOMEM);
    CHECK(err && strstr(err, "refused") && strstr(err, "free"));
    free(err);
    close(sv[0]);
    pthread_join(t, NULL);
    CHECK_INT(r.rc, -ENOMEM);
    CHECK(r.err && strstr(r.err, "free"));
    free(r.err);

    /* The source domain carries on. */
    CHECK_INT(power_of(a, domid), XENOPS_RUNNING);
    xenops_vm_spec_free(spec);
    sim_stop(a);
    sim_stop(b);
}

TEST(test_migration_through_a_pipe_on_one_host)
{
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("local", 8, 1);
    struct receiver r = { .s = s, .spec = spec };
    uint32_t domid = boot(s, spec);
    pthread_t t;
    char *err = NULL;
    int p[2];

    CHECK(pipe(p) == 0);
    r.fd = p[0];
    pthread_create(&t, NULL, receive_thread, &r);
    CHECK_INT(s->p->migrate_send(s->host, domid, p[1], &err), 0);
    close(p[1]);
    pthread_join(t, NULL);
    CHECK_INT(r.rc, 0);
    CHECK_INT(r.domid, domid + 1);
    CHECK_INT(power_of(s, r.domid), XENOPS_PAUSED);
    CHECK_INT(s->p->domain_destroy(s->host, domid, &err), -ENOENT);
    free(err);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

/* ---- statistics, memory, vCPUs, devices ---- */

TEST(test_statistics_move)
{
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("busy", 128, 2);
    uint32_t domid = boot(s, spec);
    struct xenops_domain_info i1, i2;
    int64_t t0, t1;

    t0 = time_mono_ms();
    i1 = info_of(s, domid);
    usleep(100 * 1000);
    i2 = info_of(s, domid);
    t1 = time_mono_ms();
    CHECK(i2.cpu_time_ns > i1.cpu_time_ns);
    /* Two vCPUs, each busy for less than the time between the ticks the
     * two samples saw, which is at most a tick more than t1 - t0. */
    CHECK(i2.cpu_time_ns - i1.cpu_time_ns
          < 2 * (uint64_t) (t1 - t0 + 10) * 1000000);
    for (int v = 0; v < 2; v++) {
        CHECK(i2.vcpu_utilisation[v] > 0 && i2.vcpu_utilisation[v] < 1);
        CHECK(i2.vcpu_utilisation[v] != i1.vcpu_utilisation[v]);
    }
    CHECK(i2.vcpu_utilisation[2] == 0);
    CHECK(count_updates(&s->rec, XENOPS_UPDATE_STATS, domid) >= 2);
    xenops_domain_info_clear(&i1);
    xenops_domain_info_clear(&i2);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

TEST(test_ballooning_moves_memory_over_ticks)
{
    struct sim *s = sim_start("memory_mib=4096,dom0_memory_mib=1024", false);
    struct xenops_vm_spec *spec = make_spec("balloon", 1024, 1);
    uint32_t domid = boot(s, spec);
    struct xenops_domain_info info;
    int64_t free_full = host_free(s), start;
    char *err = NULL;

    CHECK_INT(s->p->set_memory_target(s->host, domid, 600 * MIB, &err), 0);
    info = info_of(s, domid);
    CHECK_INT(info.memory_target, 600 * MIB);
    CHECK(info.memory_actual > 600 * MIB);      /* not yet */
    xenops_domain_info_clear(&info);
    start = time_mono_ms();
    do {
        usleep(2000);
        info = info_of(s, domid);
        xenops_domain_info_clear(&info);
    } while (info.memory_actual != 600 * MIB && time_mono_ms() - start < 2000);
    CHECK_INT(info.memory_actual, 600 * MIB);
    CHECK_INT(host_free(s), free_full + 424 * MIB);

    /* Outside the static range. */
    CHECK_INT(s->p->set_memory_target(s->host, domid, 100 * MIB, &err),
              -EINVAL);
    free(err);
    err = NULL;
    CHECK_INT(s->p->set_memory_target(s->host, domid, 4096 * MIB, &err),
              -EINVAL);
    free(err);
    err = NULL;

    /* A rise is reserved at once, and must fit. */
    CHECK_INT(s->p->set_memory_target(s->host, domid, 2048 * MIB, &err), 0);
    CHECK_INT(host_free(s), free_full - 1024 * MIB);
    {
        struct xenops_vm_spec *other = make_spec("other", 2000, 1);
        uint32_t none;
        CHECK_INT(s->p->domain_create(s->host, other, &none, &err), -ENOMEM);
        free(err);
        err = NULL;
        xenops_vm_spec_free(other);
    }
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

TEST(test_vcpu_hotplug)
{
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("cpus", 128, 1);
    uint32_t domid = boot(s, spec);
    struct xenops_domain_info info;
    char *err = NULL;

    CHECK_INT(s->p->set_vcpus(s->host, domid, 4, &err), 0);
    usleep(30 * 1000);
    info = info_of(s, domid);
    CHECK_INT(info.vcpus_online, 4);
    CHECK(info.vcpu_utilisation[3] > 0);
    xenops_domain_info_clear(&info);
    CHECK_INT(s->p->set_vcpus(s->host, domid, 2, &err), 0);
    info = info_of(s, domid);
    CHECK_INT(info.vcpus_online, 2);
    CHECK(info.vcpu_utilisation[3] == 0);
    xenops_domain_info_clear(&info);
    CHECK_INT(s->p->set_vcpus(s->host, domid, 0, &err), -EINVAL);
    free(err);
    err = NULL;
    CHECK_INT(s->p->set_vcpus(s->host, domid, 5, &err), -EINVAL);
    free(err);
    err = NULL;
    CHECK_INT(s->p->set_vcpus(s->host, 77, 1, &err), -ENOENT);
    free(err);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

TEST(test_device_hotplug)
{
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("devs", 128, 1);
    uint32_t domid = boot(s, spec);
    struct xenops_vif_spec vif = {
        .ref = "OpaqueRef:vif1", .position = 1, .mac = "02:00:00:00:00:02",
        .bridge = "xenbr1", .mtu = 9000,
    };
    struct xenops_vbd_spec vbd = {
        .ref = "OpaqueRef:vbd3", .device = "xvdd", .position = 3,
        .cdrom = true, .empty = true,
    };
    struct xenops_domain_info info;
    size_t guest_updates = count_updates(&s->rec, XENOPS_UPDATE_GUEST, domid);
    char *err = NULL;

    CHECK_INT(s->p->device_plug(s->host, domid, XENOPS_DEV_VIF, &vif, &err),
              0);
    CHECK(wait_count(&s->rec, XENOPS_UPDATE_GUEST, domid, guest_updates + 1,
                     2000) >= 0);
    info = info_of(s, domid);
    CHECK_STR(kv_get(info.guest.networks, info.guest.n_networks, "1/ip"),
              "198.51.100.11");
    CHECK_INT(info.guest.n_networks, 4);
    xenops_domain_info_clear(&info);
    CHECK_INT(s->p->device_plug(s->host, domid, XENOPS_DEV_VIF, &vif, &err),
              -EEXIST);
    free(err);
    err = NULL;
    CHECK_INT(s->p->device_plug(s->host, domid, XENOPS_DEV_VBD, &vbd, &err),
              0);
    CHECK_INT(s->p->device_plug(s->host, domid, XENOPS_DEV_VBD, &vbd, &err),
              -EEXIST);
    free(err);
    err = NULL;
    CHECK_INT(s->p->device_plug(s->host, domid, XENOPS_DEV_PCI, &vbd, &err),
              -EOPNOTSUPP);
    free(err);
    err = NULL;

    CHECK_INT(s->p->device_unplug(s->host, domid, XENOPS_DEV_VBD, 3, false,
                                  &err), 0);
    CHECK_INT(s->p->device_unplug(s->host, domid, XENOPS_DEV_VBD, 3, false,
                                  &err), -ENOENT);
    free(err);
    err = NULL;
    CHECK_INT(s->p->device_unplug(s->host, domid, XENOPS_DEV_VIF, 0, false,
                                  &err), 0);
    info = info_of(s, domid);
    CHECK(!kv_get(info.guest.networks, info.guest.n_networks, "0/ip"));
    CHECK_INT(info.guest.n_networks, 2);
    xenops_domain_info_clear(&info);
    CHECK_INT(s->p->device_unplug(s->host, 9, XENOPS_DEV_VIF, 0, false,
                                  &err), -ENOENT);
    free(err);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

TEST(test_sysrq_and_triggers)
{
    struct sim *s = sim_start(NULL, true);
    struct xenops_vm_spec *spec = make_spec("keys", 64, 1);
    static const struct {
        char sysrq;             /* or 0 for the trigger */
        const char *trigger;
        enum xenops_shutdown_reason reason;
    } cases[] = {
        { 'b', NULL, XENOPS_REASON_REBOOT },
        { 'o', NULL, XENOPS_REASON_POWEROFF },
        { 'c', NULL, XENOPS_REASON_CRASH },
        { 0, "nmi", XENOPS_REASON_CRASH },
        { 0, "reset", XENOPS_REASON_REBOOT },
        { 0, "power", XENOPS_REASON_POWEROFF },
    };
    char *err = NULL, cmd[64], *answer;
    uint32_t domid = boot(s, spec);

    /* Other keys are only recorded. */
    CHECK_INT(s->p->send_sysrq(s->host, domid, 'h', &err), 0);
    CHECK_INT(s->p->send_sysrq(s->host, domid, 's', &err), 0);
    CHECK_INT(s->p->send_sysrq(s->host, domid, '\n', &err), -EINVAL);
    free(err);
    err = NULL;
    CHECK_INT(s->p->send_trigger(s->host, domid, "sleep", &err), -EINVAL);
    free(err);
    err = NULL;
    snprintf(cmd, sizeof cmd, "stats %u", domid);
    answer = ctl(s, cmd);
    CHECK(strstr(answer, "\nsysrq=hs\n"));
    free(answer);
    usleep(30 * 1000);
    CHECK_INT(power_of(s, domid), XENOPS_RUNNING);
    CHECK_INT(s->p->domain_destroy(s->host, domid, &err), 0);

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct xenops_domain_info info;

        domid = boot(s, spec);
        if (cases[i].sysrq) {
            CHECK_INT(s->p->send_sysrq(s->host, domid, cases[i].sysrq, &err),
                      0);
        } else {
            CHECK_INT(s->p->send_trigger(s->host, domid, cases[i].trigger,
                                         &err), 0);
        }
        CHECK(wait_update(&s->rec, XENOPS_UPDATE_DOMAIN, domid, 2000) >= 0);
        info = info_of(s, domid);
        CHECK_INT(info.power, XENOPS_SHUTDOWN);
        CHECK_INT(info.reason, cases[i].reason);
        xenops_domain_info_clear(&info);
        CHECK_INT(s->p->domain_destroy(s->host, domid, &err), 0);
    }

    /* PV guests have no power button. */
    spec->type = XENOPS_PV;
    domid = boot(s, spec);
    CHECK_INT(s->p->send_trigger(s->host, domid, "power", &err), -EOPNOTSUPP);
    free(err);
    xenops_vm_spec_free(spec);
    sim_stop(s);
}

/* ---- shutdown of the provider ---- */

TEST(test_close_with_domains_running_frees_everything)
{
    struct sim *s = sim_start(NULL, true);
    struct xenops_vm_spec *spec = make_spec("left", 64, 2);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    char path[108], cmd[64], *answer;
    struct stat st;
    int idle;

    for (int i = 0; i < 5; i++) {
        uint32_t domid = create(s, spec);
        if (i % 2) {
            unpause(s, domid);
        }
        if (i == 4) {
            char *err = NULL;
            CHECK_INT(s->p->domain_shutdown(s->host, domid,
                                            XENOPS_SHUTDOWN_POWEROFF, &err),
                      0);
        }
    }
    snprintf(cmd, sizeof cmd, "set %s pv_drivers no", spec->uuid);
    answer = ctl(s, cmd);
    CHECK_STR(answer, "OK\n");
    free(answer);

    /* A client that stays connected does not hold up close(). */
    idle = socket(AF_UNIX, SOCK_STREAM, 0);
    strcpy(sun.sun_path, s->sock);
    CHECK(connect(idle, (struct sockaddr *) &sun, sizeof sun) == 0);
    CHECK(write(idle, "lis", 3) == 3);
    snprintf(path, sizeof path, "%s", s->sock);
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
    sim_stop(s);
    CHECK(stat(path, &st) < 0 && errno == ENOENT);
    close(idle);
    xenops_close(NULL);
    xenops_vm_spec_free(spec);
}

static void
pause_domain(struct sim *s, uint32_t domid)
{
    char *err = NULL;
    CHECK_INT(s->p->domain_pause(s->host, domid, &err), 0);
}

/* Reads from a console until want has arrived (within timeout_ms);
 * returns whether it did, and prints what came otherwise unless quiet. */
static bool
console_read_for(int fd, const char *want, int timeout_ms, bool quiet)
{
    struct ds got = DS_EMPTY;
    int64_t end = time_mono_ms() + timeout_ms;
    bool ok = false;

    while (!ok && time_mono_ms() < end) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        char buf[256];
        ssize_t n;

        if (poll(&pfd, 1, 50) <= 0) {
            continue;
        }
        n = read(fd, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        ds_put(&got, buf, n);
        ok = strstr(ds_cstr(&got), want) != NULL;
    }
    if (!ok && !quiet) {
        fprintf(stderr, "  console: wanted \"%s\", got \"%s\"\n", want,
                got.s ? got.s : "");
    }
    ds_destroy(&got);
    return ok;
}

static bool
console_expect(int fd, const char *want)
{
    return console_read_for(fd, want, 2000, false);
}

/* Whether want arrives within timeout_ms (what arrives is consumed). */
static bool
console_expect_quiet(int fd, const char *want, int timeout_ms)
{
    return console_read_for(fd, want, timeout_ms, true);
}

/* Whether the console reaches end of file within 2 s. */
static bool
console_ends(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    char buf[256];
    int64_t end = time_mono_ms() + 2000;

    while (time_mono_ms() < end) {
        if (poll(&pfd, 1, 50) > 0 && read(fd, buf, sizeof buf) <= 0) {
            return true;
        }
    }
    return false;
}

static int
console_send(int fd, const char *keys)
{
    return write(fd, keys, strlen(keys)) == (ssize_t) strlen(keys) ? 0 : -1;
}

TEST(test_console_shows_the_boot_then_logs_in_and_answers)
{
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("web 1", 64, 1);
    uint32_t domid = create(s, spec);
    char *err = NULL;
    int fd = -1;

    CHECK_INT(s->p->console_open(s->host, domid, &fd, &err), 0);
    CHECK(console_expect(fd, "Booting...\r\n"));
    unpause(s, domid);
    CHECK(console_expect(fd, "Debian GNU/Linux 12 sim-web-1 ttyS0\r\n\r\n"
                         "sim login: "));
    /* A paused guest takes no keys: they wait for it. */
    pause_domain(s, domid);
    CHECK_INT(console_send(fd, "root\r"), 0);
    CHECK(!console_expect_quiet(fd, "root", 200));
    unpause(s, domid);
    CHECK(console_expect(fd, "root\r\nPassword: "));
    CHECK_INT(console_send(fd, "pw\r\n"), 0);
    CHECK(console_expect(fd, "\r\nLinux sim-web-1 6.1.0-sim #1 SMP x86_64"
                         "\r\n\r\nroot@sim-web-1:~# "));
    CHECK_INT(console_send(fd, "whoamx\x7fi\r"), 0);
    CHECK(console_expect(fd, "whoamx\b \bi\r\nroot\r\nroot@sim-web-1:~# "));
    CHECK_INT(console_send(fd, "exit\r"), 0);
    CHECK(console_expect(fd, "logout\r\n\r\nDebian GNU/Linux 12 sim-web-1 "
                         "ttyS0\r\n\r\nsim login: "));

    /* Destroying the domain ends the console. */
    CHECK_INT(s->p->domain_destroy(s->host, domid, &err), 0);
    CHECK(console_ends(fd));
    close(fd);
    sim_stop(s);
    xenops_vm_spec_free(spec);
}

TEST(test_console_open_errors_and_close_ends_open_consoles)
{
    struct sim *s = sim_start(NULL, false);
    struct xenops_vm_spec *spec = make_spec("db", 64, 1);
    uint32_t domid = boot(s, spec), gone;
    char *err = NULL;
    int fd = -1, fd2 = -1;

    CHECK_INT(s->p->console_open(s->host, 999, &fd, &err), -ENOENT);
    free(err);
    err = NULL;
    gone = boot(s, spec);
    CHECK_INT(s->p->send_trigger(s->host, gone, "reset", &err), 0);
    CHECK_INT(s->p->console_open(s->host, gone, &fd, &err), -EINVAL);
    free(err);
    err = NULL;

    /* Two connections are two terminals. */
    CHECK_INT(s->p->console_open(s->host, domid, &fd, &err), 0);
    CHECK_INT(s->p->console_open(s->host, domid, &fd2, &err), 0);
    CHECK(console_expect(fd, "sim login: "));
    CHECK(console_expect(fd2, "sim login: "));
    CHECK_INT(console_send(fd, "alice\r"), 0);
    CHECK(console_expect(fd, "alice\r\nPassword: "));
    CHECK_INT(console_send(fd2, "\r"), 0);
    CHECK(console_expect(fd2, "\r\nsim login: "));

    /* A client that leaves frees its console; close() ends the others. */
    close(fd2);
    sim_stop(s);
    CHECK(console_ends(fd));
    close(fd);
    xenops_vm_spec_free(spec);
}
