/* tapdisk-ctl.c — starting, pausing and stopping xapi-tapdisk processes
 * for the daemon (tapdisk-ctl.h is the interface, storage/tapdisk.c the
 * program, docs/block-server.md the control protocol).
 *
 * Each block server is a child process whose stdin and stdout are one end
 * of a socket pair; this side writes commands ("pause #N") and reads the
 * answers ("paused #N").  A socket rather than two pipes: writing to a
 * child that died must be an error return (send() with MSG_NOSIGNAL), not
 * a SIGPIPE that kills the daemon.  Every call on a handle takes its mutex,
 * so a pause from one thread and a stop from another are serialized. */
#include <config.h>

#include "storage/tapdisk-ctl.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* How long a block server may take to start serving, and to answer a
 * pause or an unpause.  A pause waits for requests in flight and a flush,
 * which on a loaded disk can take a while; the reopen after an unpause
 * reads the chain's headers. */
#define TAPDISK_READY_TIMEOUT_MS 10000
#define TAPDISK_COMMAND_TIMEOUT_MS 30000
#define TAPDISK_STOP_TIMEOUT_MS 10000
#define TAPDISK_MAX_LINE 1024

struct tapdisk {
    pthread_mutex_t mutex;      /* serializes every call on the handle */
    pid_t pid;                  /* 0 once reaped */
    int ctl_fd;                 /* our end of the control socket; -1: gone */
    char *socket_path;
    char *uri;
    unsigned int token;         /* the last command's token */
    char buf[TAPDISK_MAX_LINE]; /* answer bytes received, not yet a line */
    size_t buf_len;
};

/* ---- Finding the program. ---- */

static char *found_program;
static pthread_once_t found_program_once = PTHREAD_ONCE_INIT;

static bool
is_executable(const char *path)
{
    struct stat st;
    return !stat(path, &st) && S_ISREG(st.st_mode) && !access(path, X_OK);
}

static void
find_program(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char *dir, *path;

    if (n > 0) {
        self[n] = '\0';
        dir = xstrdup(self);
        *strrchr(dir, '/') = '\0';
        /* A build tree (xapi/xapi beside storage/xapi-tapdisk), then an
         * installed tree (both in sbin). */
        path = xasprintf("%s/../storage/xapi-tapdisk", dir);
        if (!is_executable(path)) {
            free(path);
            path = xasprintf("%s/xapi-tapdisk", dir);
            if (!is_executable(path)) {
                free(path);
                path = NULL;
            }
        }
        free(dir);
        if (path) {
            found_program = path;
            return;
        }
    }
    found_program = xstrdup("xapi-tapdisk");
}

const char *
tapdisk_program(void)
{
    const char *env = getenv("XAPI_TAPDISK");

    if (env && env[0]) {
        return env;
    }
    pthread_once(&found_program_once, find_program);
    return found_program;
}

/* ---- URIs. ---- */

/* Appends s to out, percent-encoding what may not appear as is in the
 * path or query of an nbd+unix URI (the unreserved characters and '/'
 * may). */
static void
append_escaped(struct ds *out, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || strchr("-._~/", c)) {
            ds_put_char(out, (char) c);
        } else {
            ds_put_fmt(out, "%%%02X", c);
        }
    }
}

static char *
make_uri(const char *export_name, const char *socket_path)
{
    struct ds uri = DS_EMPTY;

    ds_put_cstr(&uri, "nbd+unix:///");
    append_escaped(&uri, export_name ? export_name : "");
    ds_put_cstr(&uri, "?socket=");
    append_escaped(&uri, socket_path);
    return ds_steal(&uri);
}

/* ---- The child. ---- */

static void
add_arg(char ***argv, size_t *n, char *arg)
{
    *argv = xrealloc(*argv, (*n + 2) * sizeof **argv);
    (*argv)[(*n)++] = arg;
    (*argv)[*n] = NULL;
}

static void
free_argv(char **argv)
{
    if (argv) {
        for (char **a = argv; *a; a++) {
            free(*a);
        }
        free(argv);
    }
}

static char **
build_argv(const struct tapdisk_params *p, const char *program)
{
    char **argv = NULL;
    size_t n = 0;

    add_arg(&argv, &n, xstrdup(program));
    add_arg(&argv, &n, xstrdup("--socket"));
    add_arg(&argv, &n, xstrdup(p->socket_path));
    add_arg(&argv, &n, xstrdup(!strcmp(p->format, "raw") ? "--raw"
                                                        : "--vhd"));
    add_arg(&argv, &n, xstrdup(p->image_path));
    if (p->read_only) {
        add_arg(&argv, &n, xstrdup("--read-only"));
    }
    if (p->export_name && p->export_name[0]) {
        add_arg(&argv, &n, xstrdup("--export"));
        add_arg(&argv, &n, xstrdup(p->export_name));
    }
    if (p->description) {
        add_arg(&argv, &n, xstrdup("--description"));
        add_arg(&argv, &n, xstrdup(p->description));
    }
    if (p->iops) {
        add_arg(&argv, &n, xasprintf("--iops=%"PRIu64, p->iops));
    }
    if (p->kbps) {
        add_arg(&argv, &n, xasprintf("--kbps=%"PRIu64, p->kbps));
    }
    return argv;
}

/* Starts the program with the control socket as its stdin and stdout.
 *
 * The child gets nothing else of ours: posix_spawn closes every
 * descriptor from 3 up, whether or not the daemon remembered O_CLOEXEC on
 * it (a leaked listening socket or database file would outlive the
 * daemon's restart in every block server).  stderr stays the daemon's, so
 * the server's log goes where the daemon's goes.  The child gets its own
 * process group, so a ^C meant for a daemon in a terminal does not take
 * the guests' disks with it, and an empty signal mask with default
 * dispositions, whatever the daemon blocks or ignores in its threads
 * (a blocked SIGTERM would make tapdisk_stop() wait for nothing). */
static int
spawn_child(char **argv, int child_fd, pid_t *ret_pid)
{
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none, defaults;
    pid_t pid;
    int r;

    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_adddup2(&actions, child_fd, STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, child_fd, STDOUT_FILENO);
    posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
    sigemptyset(&none);
    sigfillset(&defaults);
    sigdelset(&defaults, SIGKILL);
    sigdelset(&defaults, SIGSTOP);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK
                             | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    r = posix_spawnp(&pid, argv[0], &actions, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (r) {
        return -r;
    }
    *ret_pid = pid;
    return 0;
}

/* Reaps the child if it has exited; with wait_ms > 0, waits that long for
 * it.  Returns true once it is gone (its status in *ret_status, or -1 if
 * someone else reaped it). */
static bool
reap_child(struct tapdisk *t, int wait_ms, int *ret_status)
{
    int64_t deadline = time_mono_ms() + wait_ms;
    int status = -1;

    if (!t->pid) {
        *ret_status = -1;
        return true;
    }
    for (;;) {
        pid_t r = waitpid(t->pid, &status, WNOHANG);
        if (r == t->pid || (r < 0 && errno == ECHILD)) {
            /* ECHILD: a SIGCHLD handler of the daemon's got it first. */
            *ret_status = r == t->pid ? status : -1;
            t->pid = 0;
            return true;
        }
        if (r < 0 && errno != EINTR) {
            return false;
        }
        if (time_mono_ms() >= deadline) {
            return false;
        }
        usleep(10 * 1000);
    }
}

static char *
describe_exit(int status)
{
    if (status < 0) {
        return xstrdup("xapi-tapdisk exited");
    }
    if (WIFSIGNALED(status)) {
        return xasprintf("xapi-tapdisk was killed by signal %d",
                         WTERMSIG(status));
    }
    return xasprintf("xapi-tapdisk exited with status %d",
                     WEXITSTATUS(status));
}

/* ---- The control channel. ---- */

/* Reads the next answer line (without its newline) into a malloc'd
 * string, waiting until deadline (time_mono_ms()).  Returns 0, -ETIMEDOUT,
 * -EPIPE when the child closed its end (it exited), or another -errno. */
static int
read_line(struct tapdisk *t, int64_t deadline, char **ret_line)
{
    for (;;) {
        char *nl = memchr(t->buf, '\n', t->buf_len);
        struct pollfd pfd = { .fd = t->ctl_fd, .events = POLLIN };
        int64_t left;
        ssize_t r;

        if (nl) {
            size_t n = (size_t) (nl - t->buf);
            *ret_line = xmemdup0(t->buf, n);
            memmove(t->buf, nl + 1, t->buf_len - n - 1);
            t->buf_len -= n + 1;
            return 0;
        }
        if (t->buf_len == sizeof t->buf) {
            /* No answer is this long: the other end is not ours. */
            return -EPROTO;
        }
        left = deadline - time_mono_ms();
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        r = poll(&pfd, 1, (int) MIN(left, INT_MAX));
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (!r) {
            continue;
        }
        r = recv(t->ctl_fd, t->buf + t->buf_len, sizeof t->buf - t->buf_len,
                 MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return errno == ECONNRESET ? -EPIPE : -errno;
        }
        if (!r) {
            return -EPIPE;
        }
        t->buf_len += (size_t) r;
    }
}

/* The error for a child that stopped answering: how it exited, if it
 * did. */
static int
child_gone(struct tapdisk *t, int rc, const char *what, char **ret_err)
{
    int status;

    if (rc == -EPIPE && reap_child(t, 1000, &status)) {
        char *how = describe_exit(status);
        *ret_err = xasprintf("%s: %s", what, how);
        free(how);
    } else if (rc == -ETIMEDOUT) {
        *ret_err = xasprintf("%s: no answer from xapi-tapdisk (pid %ld) "
                             "within %d s", what, (long) t->pid,
                             TAPDISK_COMMAND_TIMEOUT_MS / 1000);
    } else {
        *ret_err = xasprintf("%s: %s", what, strerror(-rc));
    }
    return rc;
}

/* Sends "COMMAND #TOKEN" and waits for the answer carrying the token
 * (answers to earlier commands that timed out are dropped).  Returns 0 if
 * the answer is expect, -EIO with the child's message if it is an error. */
static int
command(struct tapdisk *t, const char *cmd, const char *expect,
        char **ret_err)
{
    int64_t deadline = time_mono_ms() + TAPDISK_COMMAND_TIMEOUT_MS;
    char *msg = NULL, *line = NULL, *want_ok = NULL, *want_err = NULL;
    size_t done = 0, len;
    int rc;

    if (t->ctl_fd < 0) {
        *ret_err = xasprintf("%s: xapi-tapdisk is not running", cmd);
        return -ESRCH;
    }
    t->token++;
    msg = xasprintf("%s #%u\n", cmd, t->token);
    want_ok = xasprintf("%s #%u", expect, t->token);
    want_err = xasprintf("error #%u ", t->token);
    len = strlen(msg);
    while (done < len) {
        ssize_t r = send(t->ctl_fd, msg + done, len - done, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = child_gone(t, errno == ECONNRESET ? -EPIPE : -errno, cmd,
                            ret_err);
            goto out;
        }
        done += (size_t) r;
    }
    for (;;) {
        free(line);
        line = NULL;
        rc = read_line(t, deadline, &line);
        if (rc) {
            rc = child_gone(t, rc, cmd, ret_err);
            goto out;
        }
        if (!strcmp(line, want_ok)) {
            rc = 0;
            goto out;
        }
        if (!strncmp(line, want_err, strlen(want_err))) {
            *ret_err = xasprintf("%s: %s", cmd, line + strlen(want_err));
            rc = -EIO;
            goto out;
        }
        /* A late answer to a command that timed out: not ours. */
    }
out:
    free(msg);
    free(line);
    free(want_ok);
    free(want_err);
    return rc;
}

/* ---- The interface. ---- */

static void
tapdisk_free(struct tapdisk *t)
{
    if (t->ctl_fd >= 0) {
        close(t->ctl_fd);
    }
    pthread_mutex_destroy(&t->mutex);
    free(t->socket_path);
    free(t->uri);
    free(t);
}

/* Kills and reaps a child that failed to start. */
static void
kill_child(struct tapdisk *t)
{
    int status;

    if (t->pid && !reap_child(t, 0, &status)) {
        kill(t->pid, SIGKILL);
        reap_child(t, TAPDISK_STOP_TIMEOUT_MS, &status);
    }
}

int
tapdisk_start(const struct tapdisk_params *p, struct tapdisk **ret,
              char **ret_err)
{
    const char *program = p->program ? p->program : tapdisk_program();
    struct tapdisk *t = NULL;
    char **argv = NULL;
    char *line = NULL;
    int fds[2] = { -1, -1 };
    int rc;

    if (!p->socket_path || !p->image_path || !p->format
        || (strcmp(p->format, "vhd") && strcmp(p->format, "raw"))) {
        *ret_err = xstrdup("tapdisk_start: socket_path, image_path and a "
                           "format of \"vhd\" or \"raw\" are required");
        return -EINVAL;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds)) {
        rc = -errno;
        *ret_err = xasprintf("socketpair: %s", strerror(errno));
        goto out;
    }
    t = xcalloc(1, sizeof *t);
    pthread_mutex_init(&t->mutex, NULL);
    t->ctl_fd = fds[0];
    fds[0] = -1;
    t->socket_path = xstrdup(p->socket_path);
    t->uri = make_uri(p->export_name, p->socket_path);

    argv = build_argv(p, program);
    rc = spawn_child(argv, fds[1], &t->pid);
    if (rc) {
        *ret_err = xasprintf("cannot run %s: %s", program, strerror(-rc));
        goto out;
    }
    close(fds[1]);
    fds[1] = -1;

    rc = read_line(t, time_mono_ms() + TAPDISK_READY_TIMEOUT_MS, &line);
    if (rc == -ETIMEDOUT) {
        *ret_err = xasprintf("%s did not serve %s within %d s", program,
                             p->image_path, TAPDISK_READY_TIMEOUT_MS / 1000);
        goto out;
    }
    if (rc) {
        rc = child_gone(t, rc, "starting xapi-tapdisk", ret_err);
        goto out;
    }
    if (strcmp(line, "ready")) {
        *ret_err = xstrdup(!strncmp(line, "error ", 6) ? line + 6 : line);
        rc = -EIO;
        goto out;
    }
    *ret = t;
    t = NULL;
    rc = 0;
out:
    if (t) {
        kill_child(t);
        tapdisk_free(t);
    }
    for (int i = 0; i < 2; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    free_argv(argv);
    free(line);
    return rc;
}

int
tapdisk_pause(struct tapdisk *t, char **ret_err)
{
    int rc;

    pthread_mutex_lock(&t->mutex);
    rc = command(t, "pause", "paused", ret_err);
    pthread_mutex_unlock(&t->mutex);
    return rc;
}

int
tapdisk_unpause(struct tapdisk *t, char **ret_err)
{
    int rc;

    pthread_mutex_lock(&t->mutex);
    rc = command(t, "unpause", "resumed", ret_err);
    pthread_mutex_unlock(&t->mutex);
    return rc;
}

void
tapdisk_stop(struct tapdisk *t)
{
    int status;

    if (!t) {
        return;
    }
    /* Waits for a pause or unpause in progress in another thread. */
    pthread_mutex_lock(&t->mutex);
    if (t->pid && !reap_child(t, 0, &status)) {
        kill(t->pid, SIGTERM);
        if (!reap_child(t, TAPDISK_STOP_TIMEOUT_MS, &status)) {
            LOG_WARN("xapi-tapdisk (pid %ld) ignored SIGTERM for %d s; "
                     "killing it", (long) t->pid,
                     TAPDISK_STOP_TIMEOUT_MS / 1000);
            kill(t->pid, SIGKILL);
            reap_child(t, TAPDISK_STOP_TIMEOUT_MS, &status);
        }
    }
    pthread_mutex_unlock(&t->mutex);
    tapdisk_free(t);
}

void
tapdisk_release(struct tapdisk *t)
{
    if (!t) {
        return;
    }
    /* Waits for a pause or unpause in progress in another thread, so the
     * server is not left paused by a half-finished command. */
    pthread_mutex_lock(&t->mutex);
    pthread_mutex_unlock(&t->mutex);
    /* Closing ctl_fd is the whole message: the server reads end of file
     * on its control channel and keeps serving. */
    tapdisk_free(t);
}

pid_t
tapdisk_pid(const struct tapdisk *t)
{
    return t->pid;
}

const char *
tapdisk_socket(const struct tapdisk *t)
{
    return t->socket_path;
}

const char *
tapdisk_uri(const struct tapdisk *t)
{
    return t->uri;
}
