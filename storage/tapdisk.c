/* tapdisk.c — xapi-tapdisk, the tapdisk-style block server program: one
 * process per attached VDI, serving its disk over NBD on a Unix socket
 * that the domain's disk backend connects to.
 *
 * It opens the device (a raw file, or a VHD chain through storage/vhd.c),
 * listens, prints "ready" on stdout, and
 * serves with storage/nbd-server.c until SIGTERM or SIGINT, when it lets
 * requests in flight finish, flushes, removes its socket and exits 0.
 * Meanwhile a control thread reads commands on stdin ("pause", "unpause")
 * from the toolstack (storage/tapdisk-ctl.c) and answers on stdout.
 * docs/block-server.md has the command line and the design. */
#include <config.h>

#include "storage/blockdev.h"
#include "storage/nbd-server.h"
#include "storage/vhd.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
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

static int
open_device(const char *raw_path, const char *vhd_path, bool read_only,
            struct blockdev **ret_dev, char **ret_err)
{
    return raw_path ? blockdev_open_raw(raw_path, read_only, ret_dev, ret_err)
                    : open_vhd(vhd_path, read_only, ret_dev, ret_err);
}

/* ---- The control channel. ----
 *
 * One command per line on stdin, one answer per line on stdout:
 *
 *   pause    -> "paused" once requests in flight are done, the image is
 *               flushed and closed; later requests are held
 *   unpause  -> "resumed" once the image (the same path, perhaps a new
 *               file) is open again and the held requests go on
 *
 * or "error MESSAGE".  A command may carry a token, a word starting with
 * '#' ("pause #12"); the answer then repeats it ("paused #12", "error #12
 * MESSAGE"), so that a controller that gave up waiting can tell a late
 * answer from the one it waits for.  Both commands are idempotent.  End of
 * file on stdin means the toolstack went away; the disk is still in use,
 * so the server goes on serving, as a tapdisk outlives a restart of xapi
 * on XenServer. */

#define CONTROL_MAX_LINE 256

struct control {
    pthread_mutex_t mutex;      /* against the shutdown in main() */
    struct nbd_server *srv;
    struct blockdev *dev;       /* NULL while paused */
    const char *raw_path, *vhd_path;
    bool read_only;
    bool stopped;               /* the server has stopped; hands off */
};

static struct control the_control = { .mutex = PTHREAD_MUTEX_INITIALIZER };

/* Writes one answer line.  A toolstack that went away makes this fail
 * with EPIPE (SIGPIPE is ignored), which changes nothing. */
static void
control_answer(const char *word, const char *token, const char *msg)
{
    char *line = xasprintf("%s%s%s%s%s\n", word, token ? " " : "",
                           token ? token : "", msg ? " " : "",
                           msg ? msg : "");
    size_t len = strlen(line), done = 0;

    /* A message is one line, whatever a library put in it. */
    for (char *p = line; p < line + len - 1; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    while (done < len) {
        ssize_t r = write(STDOUT_FILENO, line + done, len - done);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        done += (size_t) r;
    }
    free(line);
}

/* Quiesces the server and closes the image.  Returns 0 or -errno with a
 * message in *ret_err. */
static int
control_pause(struct control *c, char **ret_err)
{
    int rc;

    pthread_mutex_lock(&c->mutex);
    if (c->stopped) {
        *ret_err = xstrdup("the server is stopping");
        rc = -ESHUTDOWN;
        goto out;
    }
    if (!c->dev) {
        rc = 0;
        goto out;
    }
    rc = nbd_server_pause(c->srv);
    if (rc) {
        *ret_err = xasprintf("flushing the image: %s", strerror(-rc));
        goto out;
    }
    /* Closing releases the image's lock, so that the storage manager can
     * snapshot it or swap it for a new leaf. */
    blockdev_close(c->dev);
    c->dev = NULL;
    LOG_INFO("paused: image closed, requests held");
out:
    pthread_mutex_unlock(&c->mutex);
    return rc;
}

/* Reopens the image at its path and lets the held requests go.  On
 * failure the server stays paused, and a later unpause may retry. */
static int
control_unpause(struct control *c, char **ret_err)
{
    struct blockdev *dev = NULL;
    char *err = NULL;
    int rc;

    pthread_mutex_lock(&c->mutex);
    if (c->stopped) {
        *ret_err = xstrdup("the server is stopping");
        rc = -ESHUTDOWN;
        goto out;
    }
    if (c->dev) {
        rc = 0;
        goto out;
    }
    rc = open_device(c->raw_path, c->vhd_path, c->read_only, &dev, &err);
    if (rc) {
        *ret_err = err ? err : xasprintf("reopening the image: %s",
                                         strerror(-rc));
        err = NULL;
        goto out;
    }
    rc = nbd_server_resume(c->srv, dev);
    if (rc) {
        *ret_err = xasprintf(rc == -EINVAL ? "the reopened image is smaller "
                             "than the one served (%"PRIu64" bytes)"
                             : "the reopened image is read-only (%"PRIu64
                             " bytes)", dev->size);
        goto out;
    }
    c->dev = dev;
    dev = NULL;
    LOG_INFO("resumed: %s reopened", c->raw_path ? c->raw_path
                                                 : c->vhd_path);
out:
    pthread_mutex_unlock(&c->mutex);
    blockdev_close(dev);
    free(err);
    return rc;
}

static void
control_command(struct control *c, char *line)
{
    char *save = NULL;
    char *cmd = strtok_r(line, " \t\r", &save);
    char *token = strtok_r(NULL, " \t\r", &save);
    char *err = NULL;

    if (!cmd) {
        return;
    }
    if (token && (token[0] != '#' || strtok_r(NULL, " \t\r", &save))) {
        control_answer("error", NULL, "usage: pause|unpause [#TOKEN]");
        return;
    }
    if (!strcmp(cmd, "pause")) {
        if (control_pause(c, &err)) {
            control_answer("error", token, err);
        } else {
            control_answer("paused", token, NULL);
        }
    } else if (!strcmp(cmd, "unpause")) {
        if (control_unpause(c, &err)) {
            LOG_ERR("unpause: %s", err);
            control_answer("error", token, err);
        } else {
            control_answer("resumed", token, NULL);
        }
    } else {
        control_answer("error", token, "unknown command");
    }
    free(err);
}

static void *
control_thread(void *c_)
{
    struct control *c = c_;
    char buf[CONTROL_MAX_LINE];
    size_t len = 0;
    bool overlong = false;

    for (;;) {
        ssize_t r = read(STDIN_FILENO, buf + len, sizeof buf - 1 - len);
        char *nl;

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        len += (size_t) r;
        while ((nl = memchr(buf, '\n', len))) {
            size_t n = (size_t) (nl - buf) + 1;

            *nl = '\0';
            if (overlong) {
                overlong = false;
            } else {
                control_command(c, buf);
            }
            memmove(buf, buf + n, len - n);
            len -= n;
        }
        if (len == sizeof buf - 1) {
            /* No command is this long: drop the line up to its end. */
            if (!overlong) {
                control_answer("error", NULL, "line too long");
            }
            overlong = true;
            len = 0;
        }
    }
    LOG_INFO("control channel closed: serving on");
    return NULL;
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
    struct control *control = &the_control;
    struct sigaction sa;
    pthread_attr_t attr;
    pthread_t thread;
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

    /* Start-up errors also go to stdout as "error MESSAGE", where the
     * toolstack waits for "ready". */
    rc = open_device(raw_path, vhd_path, cfg.read_only, &dev, &err);
    if (rc) {
        if (!err) {
            err = xstrdup(strerror(-rc));
        }
        goto out;
    }
    rc = nbd_listen_unix(socket_path, &listen_fd);
    if (rc) {
        err = xasprintf("%s: %s", socket_path, strerror(-rc));
        goto out;
    }
    rc = nbd_server_create(dev, &cfg, &srv);
    if (rc) {
        err = xasprintf("cannot create the server: %s", strerror(-rc));
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

    control->srv = srv;
    control->dev = dev;
    control->raw_path = raw_path;
    control->vhd_path = vhd_path;
    control->read_only = cfg.read_only;
    dev = NULL;
    /* Detached: at exit it may still be blocked reading stdin. */
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&thread, &attr, control_thread, control);
    pthread_attr_destroy(&attr);
    if (rc) {
        LOG_WARN("no control channel: %s", strerror(rc));
    }

    rc = nbd_server_run(srv, listen_fd);

    /* From here on the control thread leaves the server and the device
     * alone; the device is ours to close (NULL if paused). */
    pthread_mutex_lock(&control->mutex);
    control->stopped = true;
    dev = control->dev;
    control->dev = NULL;
    pthread_mutex_unlock(&control->mutex);
    if (rc) {
        LOG_ERR("server failed: %s", strerror(-rc));
        goto out;
    }
    LOG_INFO("stopped");
    status = 0;
out:
    if (err) {
        LOG_ERR("%s", err);
        control_answer("error", NULL, err);
    }
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
