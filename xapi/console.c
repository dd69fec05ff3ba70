/* console.c — the VM text console over HTTP.
 *
 * A console row's location is https://HOST/console?ref=<console ref>;
 * clients (XenCenter, Xen Orchestra, scripts) send CONNECT or GET for it
 * with session_id in the query or a cookie (uuid=<console uuid> also
 * names the console).  The request is checked here (session, role, the
 * console and its VM running on this host), the xenops provider connects
 * to the guest's console (console_open: a socketpair for the simulator, a
 * pty on Xen), and the answer is "200 OK" followed by the raw vt100 byte
 * stream both ways.
 *
 * The HTTP server is request/response, so the connection is taken over
 * after the head (http_respond_takeover, http.h) and one small thread per
 * console connection copies bytes between the client and the console
 * until either side ends; no HTTP worker waits on a console.  Consoles
 * are few (at most CONSOLE_MAX_OPEN at a time) and long-lived, and a
 * thread each keeps the copy loop a plain poll() over two descriptors.
 *
 * Built against an http.h without take-over or a xenops.h without
 * console_open, the handler only answers 501 (see the end of the file). */
#include <config.h>
#include "api.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "xenops/xenops.h"

#if defined(HTTP_HAVE_TAKEOVER) && defined(XENOPS_HAVE_CONSOLE_OPEN)

/* Connections open at once; more get 503. */
#define CONSOLE_MAX_OPEN 64
/* Bytes in flight each way. */
#define CONSOLE_BUF 16384
/* Once the client has shut down its sending side, how long the guest has
 * to answer what it was sent last before the connection is closed. */
#define CONSOLE_DRAIN_MS 2000

/* Roles that may connect to a VM's console: XenAPI's http/connect_console
 * permission, held by vm-operator and every role above it. */
#define CONSOLE_ROLES (ROLE_POOL_ADMIN | ROLE_POOL_OPERATOR \
                       | ROLE_VM_POWER_ADMIN | ROLE_VM_ADMIN \
                       | ROLE_VM_OPERATOR)

static atomic_int n_open;

/* One client connected to one guest console. */
struct console_conn {
    struct http_stream *client;
    int fd;                     /* the guest's console */
    char peer[64];
    char vm_uuid[40];
    int64_t domid;

    char in[CONSOLE_BUF];       /* keys for the guest */
    size_t in_off, in_len;
    char out[CONSOLE_BUF];      /* the guest's output for the client */
    size_t out_off, out_len;
    bool client_eof, guest_eof;
};

static void
respond_text(struct http_exchange *hx, int status, const char *text)
{
    http_respond(hx, status, "text/plain; charset=utf-8", NULL, text,
                 strlen(text));
}

/* The session of the request: ?session_id=, or the session_id cookie, as
 * XenAPI's HTTP handlers accept. */
static char *
request_session_id(const struct http_request *req)
{
    char *sid = http_request_query_param(req, "session_id");
    const char *cookie;

    if (sid) {
        return sid;
    }
    cookie = http_request_header(req, "Cookie");
    while (cookie && *cookie) {
        const char *end = strchr(cookie, ';');
        size_t n = end ? (size_t) (end - cookie) : strlen(cookie);
        while (n && *cookie == ' ') {
            cookie++;
            n--;
        }
        if (n > 11 && !memcmp(cookie, "session_id=", 11)) {
            return xmemdup0(cookie + 11, n - 11);
        }
        cookie = end ? end + 1 : NULL;
    }
    return NULL;
}

/* Finds the domain behind the console named by ref or uuid.  Returns 0
 * with *ret_domid and vm_uuid (40 bytes) set, or an HTTP status with a
 * message for the client in *ret_msg. */
static int
find_console_domain(struct xapi *x, const char *ref, const char *uuid,
                    int64_t *ret_domid, char *vm_uuid, char **ret_msg)
{
    const struct db_row *con, *vm;
    const char *protocol, *power, *resident_on;
    int64_t domid;
    int status;

    db_read_lock(x->db);
    con = ref ? db_lookup(x->db, CLS_console, ref)
              : db_lookup_uuid(x->db, CLS_console, uuid);
    vm = con ? db_lookup(x->db, CLS_VM,
                         con->fields[F_console_VM]->u.str.s) : NULL;
    if (!con || !vm) {
        *ret_msg = xasprintf("no console %s (a VM has a console only while "
                             "it runs)\n", ref ? ref : uuid);
        status = 404;
        goto out;
    }
    protocol = con->fields[F_console_protocol]->u.str.s;
    if (strcmp(protocol, "vt100")) {
        *ret_msg = xasprintf("console %s speaks %s; only vt100 consoles are "
                             "served\n", con->ref, protocol);
        status = 501;
        goto out;
    }
    power = vm->fields[F_VM_power_state]->u.str.s;
    domid = vm->fields[F_VM_domid]->u.i;
    resident_on = vm->fields[F_VM_resident_on]->u.str.s;
    if ((strcmp(power, "Running") && strcmp(power, "Paused")) || domid < 0) {
        *ret_msg = xasprintf("VM %s is %s: it has no console now\n",
                             vm->fields[F_VM_uuid]->u.str.s, power);
        status = 503;
        goto out;
    }
    if (strcmp(resident_on, x->host_ref)) {
        *ret_msg = xasprintf("VM %s runs on another host (%s)\n",
                             vm->fields[F_VM_uuid]->u.str.s, resident_on);
        status = 503;
        goto out;
    }
    snprintf(vm_uuid, 40, "%s", vm->fields[F_VM_uuid]->u.str.s);
    *ret_domid = domid;
    status = 0;
out:
    db_read_unlock(x->db);
    return status;
}

static void
console_conn_free(struct console_conn *cc)
{
    struct http_stream *client;

    if (!cc) {
        return;
    }
    client = cc->client;
    if (cc->fd >= 0) {
        close(cc->fd);
    }
    free(cc);
    atomic_fetch_sub(&n_open, 1);
    /* Last: http_server_stop() waits for this, and then nothing of ours
     * may still be running but the return from the thread. */
    http_stream_close(client);
}

/* Moves bytes both ways until nothing more can move without waiting.
 * Returns NULL, or why the connection ends. */
static const char *
console_pump(struct console_conn *cc)
{
    bool progress = true;

    while (progress) {
        ssize_t r;

        progress = false;
        if (!cc->in_len && !cc->client_eof) {
            r = http_stream_read(cc->client, cc->in, sizeof cc->in);
            if (r > 0) {
                cc->in_off = 0;
                cc->in_len = r;
                progress = true;
            } else if (r == 0) {
                cc->client_eof = true;
            } else if (r != -EAGAIN) {
                return "the client's connection failed";
            }
        }
        if (cc->in_len) {
            r = write(cc->fd, cc->in + cc->in_off, cc->in_len);
            if (r > 0) {
                cc->in_off += r;
                cc->in_len -= r;
                progress = true;
            } else if (errno != EAGAIN && errno != EINTR) {
                return "the guest's console closed";
            }
        }
        if (!cc->out_len && !cc->guest_eof) {
            r = read(cc->fd, cc->out, sizeof cc->out);
            if (r > 0) {
                cc->out_off = 0;
                cc->out_len = r;
                progress = true;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                /* A pty whose other side is gone reads EIO, not 0. */
                cc->guest_eof = true;
            }
        }
        if (cc->out_len) {
            r = http_stream_write(cc->client, cc->out + cc->out_off,
                                  cc->out_len);
            if (r > 0) {
                cc->out_off += r;
                cc->out_len -= r;
                progress = true;
            } else if (r != -EAGAIN) {
                return "the client went away";
            }
        }
    }
    return NULL;
}

static void *
console_thread(void *cc_)
{
    struct console_conn *cc = cc_;
    int64_t drain_deadline = -1;
    const char *why;
    int one = 1;

    /* A client that vanished without a word must not hold the console
     * (and this thread) for ever. */
    setsockopt(http_stream_fd(cc->client), SOL_SOCKET, SO_KEEPALIVE, &one,
               sizeof one);
    if (fcntl(cc->fd, F_SETFL, fcntl(cc->fd, F_GETFL) | O_NONBLOCK) < 0) {
        why = "the console cannot be made non-blocking";
        goto out;
    }
    for (;;) {
        struct pollfd pfd[2];
        int timeout = -1;

        why = console_pump(cc);
        if (why) {
            break;
        }
        if (cc->guest_eof && !cc->out_len) {
            /* After the client's end of input, the guest closing is the
             * answer to it. */
            why = cc->client_eof ? "the client closed"
                                 : "the guest's console closed";
            break;
        }
        if (cc->client_eof && !cc->in_len && drain_deadline < 0) {
            /* Pass the end of input on, so that the guest can answer what
             * it was sent last; a pty cannot be half-closed. */
            if (shutdown(cc->fd, SHUT_WR) < 0) {
                why = "the client closed";
                break;
            }
            drain_deadline = time_mono_ms() + CONSOLE_DRAIN_MS;
        }
        if (drain_deadline >= 0) {
            timeout = (int) (drain_deadline - time_mono_ms());
            if (timeout <= 0) {
                why = "the client closed";
                break;
            }
        }

        /* The client's socket is always watched, for errors and hang-ups;
         * the console only when we wait for it. */
        pfd[0].fd = http_stream_fd(cc->client);
        pfd[0].events = http_stream_poll_events(
            cc->client, !cc->in_len && !cc->client_eof, cc->out_len > 0);
        pfd[1].events = (!cc->out_len && !cc->guest_eof ? POLLIN : 0)
                        | (cc->in_len ? POLLOUT : 0);
        pfd[1].fd = pfd[1].events ? cc->fd : -1;
        if (poll(pfd, 2, timeout) < 0 && errno != EINTR) {
            why = "poll failed";
            break;
        }
        /* POLLHUP: both directions are gone (or the server is stopping
         * and shut the socket down), so nothing more can be delivered. */
        if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
            why = "the client hung up";
            break;
        }
    }
out:
    LOG_INFO("console: %s left VM %s (domain %" PRId64 "): %s", cc->peer,
             cc->vm_uuid, cc->domid, why);
    console_conn_free(cc);
    return NULL;
}

/* The server hands over the connection (or reports it gone); runs on the
 * server's loop thread, so it only starts the copying thread. */
static void
console_taken(struct http_stream *client, void *cc_)
{
    struct console_conn *cc = cc_;
    pthread_attr_t attr;
    pthread_t thread;
    int r;

    if (!client) {
        LOG_DBG("console: %s went away before the console opened",
                cc->peer);
        console_conn_free(cc);
        return;
    }
    cc->client = client;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    r = pthread_create(&thread, &attr, console_thread, cc);
    pthread_attr_destroy(&attr);
    if (r) {
        LOG_WARN("console: cannot start a thread for %s: %s", cc->peer,
                 strerror(r));
        console_conn_free(cc);
    }
}

void
console_http_handler(struct http_exchange *hx, struct xapi *x)
{
    const struct http_request *req = http_exchange_request(hx);
    const struct xenops_provider *provider;
    struct console_conn *cc = NULL;
    struct session *s = NULL;
    char *sid = NULL, *ref = NULL, *uuid = NULL, *msg = NULL, *err = NULL;
    char vm_uuid[40];
    int64_t domid = -1;
    bool counted = false;
    int status, fd = -1, rc;

    if (strcmp(req->method, "CONNECT") && strcmp(req->method, "GET")) {
        http_respond(hx, 405, "text/plain", "Allow: CONNECT, GET",
                     "method not allowed\n", 19);
        goto out;
    }
    sid = request_session_id(req);
    s = sid ? session_lookup(x, sid) : NULL;
    if (!s) {
        respond_text(hx, 401, sid ? "session_id is not a valid session\n"
                     : "give session_id=OpaqueRef:... (in the query or a "
                       "cookie)\n");
        goto out;
    }
    if (!session_is_superuser(s) && !(session_roles(s) & CONSOLE_ROLES)) {
        respond_text(hx, 403, "connecting to a console needs the "
                     "vm-operator role or above\n");
        goto out;
    }
    ref = http_request_query_param(req, "ref");
    uuid = ref ? NULL : http_request_query_param(req, "uuid");
    if (!ref && !uuid) {
        respond_text(hx, 400, "give ref=OpaqueRef:... or uuid=... of a "
                     "console\n");
        goto out;
    }
    status = find_console_domain(x, ref, uuid, &domid, vm_uuid, &msg);
    if (status) {
        respond_text(hx, status, msg);
        goto out;
    }
    provider = x->xenops ? x->xenops->provider : NULL;
    if (!provider || !provider->console_open) {
        respond_text(hx, 501, "this host's backend has no text consoles\n");
        goto out;
    }
    if (atomic_fetch_add(&n_open, 1) >= CONSOLE_MAX_OPEN) {
        atomic_fetch_sub(&n_open, 1);
        respond_text(hx, 503, "too many console connections; try later\n");
        goto out;
    }
    counted = true;
    rc = provider->console_open(x->xenops, (uint32_t) domid, &fd, &err);
    if (rc == -ENOENT || rc == -EINVAL) {
        /* The VM stopped between the check and the call. */
        free(msg);
        msg = xasprintf("VM %s has no running domain now\n", vm_uuid);
        respond_text(hx, 503, msg);
        goto out;
    } else if (rc == -EBUSY) {
        respond_text(hx, 503, "too many console connections; try later\n");
        goto out;
    } else if (rc) {
        LOG_WARN("console: VM %s (domain %" PRId64 "): %s", vm_uuid, domid,
                 err ? err : strerror(-rc));
        respond_text(hx, 500, "cannot open the console\n");
        goto out;
    }

    cc = xcalloc(1, sizeof *cc);
    cc->fd = fd;
    fd = -1;
    cc->domid = domid;
    snprintf(cc->peer, sizeof cc->peer, "%s", req->peer);
    snprintf(cc->vm_uuid, sizeof cc->vm_uuid, "%s", vm_uuid);
    counted = false;            /* cc carries the count now */
    LOG_INFO("console: %s (%s) connects to VM %s (domain %" PRId64 ")",
             cc->peer, session_user(s), vm_uuid, domid);
    /* From here cc is console_taken's, which may already have run. */
    http_respond_takeover(hx, 200, NULL, console_taken, cc);
out:
    if (counted) {
        atomic_fetch_sub(&n_open, 1);
    }
    if (fd >= 0) {
        close(fd);
    }
    session_unref(s);
    free(sid);
    free(ref);
    free(uuid);
    free(msg);
    free(err);
}

#else   /* no take-over or no console_open in this tree yet */

void
console_http_handler(struct http_exchange *hx, struct xapi *x)
{
    static const char msg[] = "text consoles are not in this build (it "
                              "lacks http_respond_takeover or "
                              "console_open)\n";

    (void) x;
    http_respond(hx, 501, "text/plain; charset=utf-8", NULL, msg,
                 sizeof msg - 1);
}

#endif
