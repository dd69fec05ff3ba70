/* main.c — the xapi daemon's entry point: parses the command line, opens
 * the state directory and database, fills it on first start, starts the
 * HTTP(S) listeners and waits for SIGTERM.
 *
 *   xapi --state-dir DIR --listen ADDR:PORT [--listen-tls ADDR:PORT]
 *        [--unix PATH] --backend sim|xen --root-password-file FILE
 *        [--tls-cert FILE --tls-key FILE] [--sim-config K=V,...]
 *        [--workers N] [--session-idle-timeout SECONDS]
 *        [--log-level debug|info|warn|error] [--version]
 *
 * When it is ready to serve it prints one line starting "xapi ready" to
 * standard output. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "storage.h"
#include "http.h"
#include "xenops/xenops.h"

extern int64_t session_idle_timeout_s;

struct options {
    char *state_dir;
    char *listen[8];
    size_t n_listen;
    char *listen_tls[8];
    size_t n_listen_tls;
    char *unix_path;
    char *backend;
    char *root_password_file;
    char *tls_cert;
    char *tls_key;
    char *sim_config;
    long workers;
};

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: xapi --state-dir DIR --listen ADDR:PORT [--listen-tls ADDR:PORT]\n"
            "            [--unix PATH] --backend sim|xen --root-password-file FILE\n"
            "            [--tls-cert FILE --tls-key FILE] [--backend-config K=V,...]\n"
            "            [--workers N] [--session-idle-timeout SECONDS]\n"
            "            [--shutdown-timeout SECONDS]\n"
            "            [--log-level debug|info|warn|error] [--version]\n");
}

static int
parse_options(int argc, char *argv[], struct options *o)
{
    enum { O_STATE = 256, O_LISTEN, O_TLS, O_UNIX, O_BACKEND, O_PWFILE,
           O_CERT, O_KEY, O_SIM, O_WORKERS, O_IDLE, O_LOG, O_VERSION, O_HELP,
           O_SHUTDOWN_TIMEOUT };
    static const struct option longopts[] = {
        { "state-dir", required_argument, NULL, O_STATE },
        { "listen", required_argument, NULL, O_LISTEN },
        { "listen-tls", required_argument, NULL, O_TLS },
        { "unix", required_argument, NULL, O_UNIX },
        { "backend", required_argument, NULL, O_BACKEND },
        { "root-password-file", required_argument, NULL, O_PWFILE },
        { "tls-cert", required_argument, NULL, O_CERT },
        { "tls-key", required_argument, NULL, O_KEY },
        { "sim-config", required_argument, NULL, O_SIM },
        { "backend-config", required_argument, NULL, O_SIM },
        { "workers", required_argument, NULL, O_WORKERS },
        { "session-idle-timeout", required_argument, NULL, O_IDLE },
        { "shutdown-timeout", required_argument, NULL, O_SHUTDOWN_TIMEOUT },
        { "log-level", required_argument, NULL, O_LOG },
        { "version", no_argument, NULL, O_VERSION },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    int c;

    o->backend = "sim";
    o->workers = 8;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int64_t v;
        enum log_level lvl;
        switch (c) {
        case O_STATE: o->state_dir = optarg; break;
        case O_LISTEN:
            if (o->n_listen == ARRAY_SIZE(o->listen)) {
                return -1;
            }
            o->listen[o->n_listen++] = optarg;
            break;
        case O_TLS:
            if (o->n_listen_tls == ARRAY_SIZE(o->listen_tls)) {
                return -1;
            }
            o->listen_tls[o->n_listen_tls++] = optarg;
            break;
        case O_UNIX: o->unix_path = optarg; break;
        case O_BACKEND: o->backend = optarg; break;
        case O_PWFILE: o->root_password_file = optarg; break;
        case O_CERT: o->tls_cert = optarg; break;
        case O_KEY: o->tls_key = optarg; break;
        case O_SIM: o->sim_config = optarg; break;
        case O_WORKERS:
            if (str_to_int64(optarg, &v) || v < 1 || v > 256) {
                fprintf(stderr, "xapi: bad --workers '%s'\n", optarg);
                return -1;
            }
            o->workers = v;
            break;
        case O_IDLE:
            if (str_to_int64(optarg, &v) || v < 1) {
                fprintf(stderr, "xapi: bad --session-idle-timeout '%s'\n", optarg);
                return -1;
            }
            session_idle_timeout_s = v;
            break;
        case O_SHUTDOWN_TIMEOUT:
            if (str_to_int64(optarg, &v) || v < 1) {
                fprintf(stderr, "xapi: bad --shutdown-timeout '%s'\n", optarg);
                return -1;
            }
            lifecycle_shutdown_timeout_ms = v * 1000;
            break;
        case O_LOG:
            if (log_level_from_string(optarg, &lvl)) {
                fprintf(stderr, "xapi: bad --log-level '%s'\n", optarg);
                return -1;
            }
            log_set_level(lvl);
            break;
        case O_VERSION:
            printf("xapi %s (XenAPI %d.%d)\n", PACKAGE_VERSION, 2, 21);
            exit(0);
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind != argc || !o->state_dir) {
        return -1;
    }
    return 0;
}

/* Sets root's password on first start (no hash file yet). */
static int
init_root_password(struct xapi *x, const char *pwfile, char **ret_err)
{
    char *pw = NULL;
    size_t len;
    int rc;

    if (!access(x->root_hash_file, F_OK)) {
        return 0;
    }
    if (!pwfile) {
        *ret_err = xstrdup("no root password is set yet: give "
                           "--root-password-file FILE on first start");
        return -EINVAL;
    }
    rc = read_file(pwfile, 4096, &pw, &len);
    if (rc) {
        *ret_err = xasprintf("cannot read %s: %s", pwfile, strerror(-rc));
        return rc;
    }
    while (len && (pw[len - 1] == '\n' || pw[len - 1] == '\r')) {
        pw[--len] = '\0';
    }
    if (!len || strlen(pw) != len) {
        free(pw);
        *ret_err = xasprintf("%s: the password must be one non-empty line",
                             pwfile);
        return -EINVAL;
    }
    rc = session_set_root_password(x, pw, ret_err);
    explicit_bzero(pw, len);
    free(pw);
    return rc;
}

int
main(int argc, char *argv[])
{
    struct options o = { 0 };
    struct xapi x = { 0 };
    struct http_listener_config listeners[20];
    struct http_server_config cfg = { 0 };
    struct http_server *srv = NULL;
    struct ds ready = DS_EMPTY;
    char *err = NULL, *cert = NULL, *key = NULL, *unix_path = NULL;
    sigset_t sigs;
    size_t n = 0;
    int rc = 1, sig;

    if (parse_options(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    /* Block the signals we wait for before any thread starts, so that only
     * the main thread receives them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (mkdir(o.state_dir, 0700) && errno != EEXIST) {
        fprintf(stderr, "xapi: cannot create %s: %s\n", o.state_dir,
                strerror(errno));
        return 1;
    }
    /* One daemon per state directory: a second one would replace the
     * first one's socket and diverge from its database. */
    {
        char *lock = xasprintf("%s/xapi.lock", o.state_dir);
        int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB)) {
            fprintf(stderr, "xapi: %s: %s\n", lock,
                    errno == EWOULDBLOCK
                    ? "another xapi is using this state directory"
                    : strerror(errno));
            free(lock);
            return 1;
        }
        free(lock);     /* the descriptor stays open, holding the lock */
    }
    x.state_dir = o.state_dir;
    x.root_hash_file = xasprintf("%s/root.passwd", o.state_dir);
    x.start_time = time_wall_ms();
    x.sessions = session_table_create();

    if (init_root_password(&x, o.root_password_file, &err)
        || xenops_open(o.backend, o.sim_config, &x.xenops, &err)
        || db_open(o.state_dir, &x.db, &err)
        || firstboot_init(&x, &err)
        || storage_init(&x, &err)) {
        goto fail;
    }

    for (size_t i = 0; i < o.n_listen; i++) {
        listeners[n].kind = HTTP_LISTEN_TCP;
        listeners[n++].address = o.listen[i];
    }
    for (size_t i = 0; i < o.n_listen_tls; i++) {
        listeners[n].kind = HTTP_LISTEN_TLS;
        listeners[n++].address = o.listen_tls[i];
    }
    unix_path = o.unix_path ? xstrdup(o.unix_path)
                            : xasprintf("%s/xapi.sock", o.state_dir);
    listeners[n].kind = HTTP_LISTEN_UNIX;
    listeners[n++].address = unix_path;
    if (o.n_listen_tls) {
        cert = o.tls_cert ? xstrdup(o.tls_cert)
                          : xasprintf("%s/xapi-ssl.pem", o.state_dir);
        key = o.tls_key ? xstrdup(o.tls_key)
                        : xasprintf("%s/xapi-ssl.key", o.state_dir);
        if (!o.tls_cert && http_tls_ensure_cert(cert, key, "localhost", &err)) {
            goto fail;
        }
    }
    if (task_executor_start(&x, o.workers)) {
        err = xstrdup("cannot start the task executor");
        goto fail;
    }
    if (events_init(&x) || audit_init(&x) || lifecycle_init(&x)) {
        err = xstrdup("cannot start the event or audit subsystems");
        goto fail;
    }
    host_tick(&x);
    cfg.listeners = listeners;
    cfg.n_listeners = n;
    cfg.tls_cert_file = cert;
    cfg.tls_key_file = key;
    cfg.n_workers = o.workers;
    cfg.handler = rpc_http_handler;
    cfg.handler_aux = &x;
    if (http_server_start(&cfg, &srv, &err)) {
        goto fail;
    }

    ds_put_cstr(&ready, "xapi ready:");
    for (size_t i = 0; i < n; i++) {
        const char *kind = listeners[i].kind == HTTP_LISTEN_TCP ? "http"
                           : listeners[i].kind == HTTP_LISTEN_TLS ? "https"
                           : "unix";
        if (listeners[i].kind == HTTP_LISTEN_UNIX) {
            ds_put_fmt(&ready, " %s=%s", kind, listeners[i].address);
        } else {
            const char *colon = strrchr(listeners[i].address, ':');
            int len = colon ? (int) (colon - listeners[i].address)
                            : (int) strlen(listeners[i].address);
            ds_put_fmt(&ready, " %s=%.*s:%d", kind, len, listeners[i].address,
                       http_server_port(srv, i));
        }
    }
    ds_put_fmt(&ready, " host=%s", x.host_uuid);
    printf("%s\n", ds_cstr(&ready));
    fflush(stdout);
    LOG_INFO("%s", ds_cstr(&ready));

    for (;;) {
        struct timespec tick = { 1, 0 };
        static int64_t last_sweep;
        sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            LOG_INFO("signal %d: shutting down", sig);
            break;
        }
        /* Sweep idle sessions about every minute (sooner when the idle
         * timeout is short, as in tests). */
        if (time_mono_ms() - last_sweep
            >= MIN(60000, session_idle_timeout_s * 500)) {
            last_sweep = time_mono_ms();
            session_expire(&x);
        }
        host_tick(&x);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "xapi: %s\n", err ? err : "start-up failed");
out:
    http_server_stop(srv);
    /* The executor first: its jobs may still be waiting for guests. */
    task_executor_stop(&x);
    if (x.xenops) {
        lifecycle_shutdown(&x);
    }
    storage_shutdown(&x);
    events_shutdown(&x);
    audit_shutdown(&x);
    session_table_destroy(x.sessions);
    db_close(x.db);
    xenops_close(x.xenops);
    free(x.root_hash_file);
    free(err);
    free(cert);
    free(key);
    free(unix_path);
    ds_destroy(&ready);
    return rc;
}
