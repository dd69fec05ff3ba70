/* tapdisk.c — xapi-tapdisk, the tapdisk-style block server program: one
 * process per attached VDI, serving its disk over NBD on a Unix socket
 * that the domain's disk backend connects to.
 *
 * It opens the device (a raw file, or a VHD chain through storage/vhd.c),
 * listens, prints "ready" on stdout, and
 * serves with storage/nbd-server.c until SIGTERM or SIGINT, when it lets
 * requests in flight finish, flushes, removes its socket and exits 0.
 * docs/block-server.md has the command line and the design. */
#include <config.h>

#include "storage/blockdev.h"
#include "storage/nbd-server.h"
#include "storage/vhd.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct nbd_server *volatile the_server;

static void
stop_signal(int sig)
{
    struct nbd_server *srv = the_server;

    (void) sig;
    if (srv) {
        nbd_server_stop(srv);
    }
}

static void
usage(FILE *f)
{
    fprintf(f,
"usage: xapi-tapdisk --socket PATH (--raw FILE | --vhd FILE) [options]\n"
"Serves one virtual disk over NBD on a Unix socket until SIGTERM.\n"
"\n"
"  --socket PATH        Unix socket to listen on (a stale one is replaced)\n"
"  --raw FILE           serve a raw image file or block device\n"
"  --vhd FILE           serve a VHD chain (leaf file)\n"
"  --read-only          refuse writes\n"
"  --export NAME        export name (default: the default export \"\")\n"
"  --description TEXT   export description shown to clients\n"
"  --iops N             limit requests per second (0: no limit)\n"
"  --kbps N             limit READ+WRITE bandwidth, KiB per second\n"
"  --qos KEY=VALUE      a qos_algorithm_params entry of algorithm\n"
"                       \"ratelimit\" (iops, kbps, bandwidth); repeatable\n"
"  --max-clients N      concurrent connections (default %d)\n"
"  --log-level LEVEL    error, warn, info or debug (default info)\n"
"  --help               show this help\n",
            NBD_DEFAULT_MAX_CLIENTS);
}

/* Opens a VHD chain (the leaf and its parents) as a block device. */
static int
open_vhd(const char *path, bool read_only, struct blockdev **ret_dev,
         char **ret_err)
{
    return blockdev_open_vhd(path, read_only, ret_dev, ret_err);
}

static bool
parse_count(const char *s, uint64_t *ret_v)
{
    int64_t v;

    if (str_to_int64(s, &v) || v < 0) {
        return false;
    }
    *ret_v = (uint64_t) v;
    return true;
}

int
main(int argc, char *argv[])
{
    enum {
        OPT_SOCKET = 256, OPT_RAW, OPT_VHD, OPT_READ_ONLY, OPT_EXPORT,
        OPT_DESCRIPTION, OPT_IOPS, OPT_KBPS, OPT_QOS, OPT_MAX_CLIENTS,
        OPT_LOG_LEVEL, OPT_HELP,
    };
    static const struct option options[] = {
        { "socket", required_argument, NULL, OPT_SOCKET },
        { "raw", required_argument, NULL, OPT_RAW },
        { "vhd", required_argument, NULL, OPT_VHD },
        { "read-only", no_argument, NULL, OPT_READ_ONLY },
        { "export", required_argument, NULL, OPT_EXPORT },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        { "iops", required_argument, NULL, OPT_IOPS },
        { "kbps", required_argument, NULL, OPT_KBPS },
        { "qos", required_argument, NULL, OPT_QOS },
        { "max-clients", required_argument, NULL, OPT_MAX_CLIENTS },
        { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 },
    };
    struct nbd_server_config cfg = { 0 };
    const char *socket_path = NULL, *raw_path = NULL, *vhd_path = NULL;
    struct blockdev *dev = NULL;
    struct nbd_server *srv = NULL;
    struct sigaction sa;
    char *err = NULL;
    int listen_fd = -1;
    int status = 1;
    int opt, rc;

    log_set_level(LOG_LVL_INFO);
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case OPT_SOCKET:
            socket_path = optarg;
            break;
        case OPT_RAW:
            raw_path = optarg;
            break;
        case OPT_VHD:
            vhd_path = optarg;
            break;
        case OPT_READ_ONLY:
            cfg.read_only = true;
            break;
        case OPT_EXPORT:
            cfg.export_name = optarg;
            break;
        case OPT_DESCRIPTION:
            cfg.description = optarg;
            break;
        case OPT_IOPS:
        case OPT_KBPS: {
            const char *key = opt == OPT_IOPS ? "iops" : "kbps";
            if (nbd_qos_apply(&cfg, "ratelimit", key, optarg)) {
                fprintf(stderr, "xapi-tapdisk: bad --%s value: %s\n", key,
                        optarg);
                return 2;
            }
            break;
        }
        case OPT_QOS: {
            char *key = xstrdup(optarg);
            char *value = strchr(key, '=');
            if (value) {
                *value++ = '\0';
            }
            rc = nbd_qos_apply(&cfg, "ratelimit", key, value);
            if (rc == -ENOENT) {
                LOG_WARN("ignoring unknown QoS parameter %s", key);
            } else if (rc) {
                fprintf(stderr, "xapi-tapdisk: bad --qos parameter: %s\n",
                        optarg);
                free(key);
                return 2;
            }
            free(key);
            break;
        }
        case OPT_MAX_CLIENTS: {
            uint64_t n;
            if (!parse_count(optarg, &n) || n < 1 || n > 1024) {
                fprintf(stderr, "xapi-tapdisk: bad --max-clients value: "
                        "%s\n", optarg);
                return 2;
            }
            cfg.max_clients = (unsigned int) n;
            break;
        }
        case OPT_LOG_LEVEL: {
            enum log_level level;
            if (log_level_from_string(optarg, &level)) {
                fprintf(stderr, "xapi-tapdisk: bad --log-level: %s\n",
                        optarg);
                return 2;
            }
            log_set_level(level);
            break;
        }
        case OPT_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || !socket_path || !raw_path == !vhd_path) {
        usage(stderr);
        return 2;
    }

    rc = raw_path ? blockdev_open_raw(raw_path, cfg.read_only, &dev, &err)
                  : open_vhd(vhd_path, cfg.read_only, &dev, &err);
    if (rc) {
        LOG_ERR("%s", err ? err : strerror(-rc));
        goto out;
    }
    rc = nbd_listen_unix(socket_path, &listen_fd);
    if (rc) {
        LOG_ERR("%s: %s", socket_path, strerror(-rc));
        goto out;
    }
    rc = nbd_server_create(dev, &cfg, &srv);
    if (rc) {
        LOG_ERR("cannot create the server: %s", strerror(-rc));
        goto out;
    }

    the_server = srv;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    LOG_INFO("serving %s (%"PRIu64" bytes%s) on %s", raw_path ? raw_path
             : vhd_path, dev->size, cfg.read_only || dev->read_only
             ? ", read-only" : "", socket_path);
    /* The socket is listening: a client connecting from now on is queued
     * until the accept loop takes it. */
    printf("ready\n");
    fflush(stdout);

    rc = nbd_server_run(srv, listen_fd);
    if (rc) {
        LOG_ERR("server failed: %s", strerror(-rc));
        goto out;
    }
    LOG_INFO("stopped");
    status = 0;
out:
    if (listen_fd >= 0) {
        unlink(socket_path);
        close(listen_fd);
    }
    the_server = NULL;
    nbd_server_destroy(srv);
    blockdev_close(dev);
    free(err);
    return status;
}
