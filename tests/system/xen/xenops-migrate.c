/* xenops-migrate.c — localhost live migration through the Xen provider
 * (xenops/xen.c), run inside the Dom0 of the system test.
 *
 * xapi has no VM.pool_migrate yet, so the XenAPI scenario cannot reach
 * the provider's migrate_send/migrate_receive; this program calls them
 * directly, as xapi's migration would: it builds a PVH guest from a spec,
 * streams it over a socketpair from one domain to a new one on the same
 * host, and checks that the new domain runs and the old one is gone.  It
 * prints TAP lines; Dom0's /init runs it after the scenario, with xapi
 * stopped.
 *
 * PVH, not PV: a live migration turns on log-dirty mode, which for a PV
 * guest needs shadow paging, and Debian's Xen under QEMU answers
 * EOPNOTSUPP ("Failed to enable logdirty: 95"); a PVH guest's log-dirty
 * mode uses HAP (QEMU emulates SVM with nested paging). */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"
#include "xenops/xenops.h"

struct receiver {
    struct xenops_host *host;
    const struct xenops_vm_spec *spec;
    int fd;
    uint32_t domid;
    char *err;
    int rc;
};

static void *
receiver_main(void *r_)
{
    struct receiver *r = r_;

    r->rc = r->host->provider->migrate_receive(r->host, r->spec, r->fd,
                                                &r->domid, &r->err);
    return NULL;
}

static int
check(int ok, const char *name, const char *err)
{
    printf("%s - xenops: %s%s%s\n", ok ? "ok" : "not ok", name,
           ok || !err ? "" : ": ", ok || !err ? "" : err);
    fflush(stdout);
    return ok;
}

int
main(int argc, char *argv[])
{
    struct xenops_vm_spec spec;
    struct xenops_host *host = NULL;
    struct xenops_domain_info info;
    struct receiver r = { 0 };
    pthread_t thread;
    char *err = NULL;
    uint32_t domid = 0;
    int fds[2] = { -1, -1 };
    int rc, ret = 1;

    if (argc != 3) {
        fprintf(stderr, "usage: xenops-migrate KERNEL RAMDISK\n");
        return 2;
    }
    memset(&spec, 0, sizeof spec);
    snprintf(spec.uuid, sizeof spec.uuid,
             "6d1d1e5e-0c1a-4c3b-9d7e-2f7a8e0b1c01");
    spec.name = "xenops-migrate";
    spec.type = XENOPS_PVH;
    spec.memory_static_max = spec.memory_dynamic_max = 128 << 20;
    spec.memory_dynamic_min = spec.memory_static_min = 128 << 20;
    spec.memory_target = 128 << 20;
    spec.vcpus_max = spec.vcpus_at_startup = 1;
    spec.pv_kernel = argv[1];
    spec.pv_ramdisk = argv[2];
    spec.pv_args = "console=hvc0 quiet xapitest=mig1";

    /* libxl's and the save helper's messages go to stderr, which Dom0's
     * init keeps for a failure's logs. */
    log_set_level(LOG_LVL_DEBUG);
    if (!check(!xenops_open("xen", NULL, &host, &err), "open", err)) {
        goto out;
    }
    rc = host->provider->domain_create(host, &spec, &domid, &err);
    if (!check(!rc, "domain_create of a PVH guest", err)
        || !check(!host->provider->domain_unpause(host, domid, &err),
                  "domain_unpause", err)) {
        goto out;
    }
    /* Let the guest boot (about 10 s under TCG), so that the stream
     * carries a live kernel that answers the suspend request. */
    sleep(20);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds)) {
        check(0, "socketpair", strerror(errno));
        goto out;
    }
    r.host = host;
    r.spec = &spec;
    r.fd = fds[1];
    pthread_create(&thread, NULL, receiver_main, &r);
    rc = host->provider->migrate_send(host, domid, fds[0], &err);
    check(!rc, "migrate_send to the same host", err);
    if (rc) {
        /* The receiver waits for a stream that will not come. */
        shutdown(fds[0], SHUT_RDWR);
    }
    pthread_join(thread, NULL);
    if (!check(!r.rc, "migrate_receive on the same host", r.err) || rc) {
        goto out;
    }
    free(err);
    err = NULL;
    rc = host->provider->domain_info(host, domid, &info, &err);
    check(rc == -ENOENT, "the sending domain is gone after the migration",
          rc ? NULL : "it still exists");
    if (!rc) {
        xenops_domain_info_clear(&info);
    }
    free(err);
    err = NULL;
    domid = r.domid;
    if (!check(!host->provider->domain_unpause(host, domid, &err),
               "domain_unpause of the received domain", err)) {
        goto out;
    }
    sleep(3);
    rc = host->provider->domain_info(host, domid, &info, &err);
    check(!rc && info.power == XENOPS_RUNNING,
          "the received domain runs", rc ? err : "not running");
    if (!rc) {
        xenops_domain_info_clear(&info);
    }
    ret = 0;
out:
    if (host && domid) {
        free(err);
        err = NULL;
        host->provider->domain_destroy(host, domid, &err);
    }
    if (fds[0] >= 0) {
        close(fds[0]);
        close(fds[1]);
    }
    free(err);
    free(r.err);
    xenops_close(host);
    return ret;
}
