/* nbd-server.c — the NBD protocol side of the tapdisk-style block server:
 * option haggling, the transmission loop, QoS token buckets, and the
 * accept loop that gives each client connection a thread.
 *
 * The protocol code (nbd_server_handle) sees a client only through a
 * struct nbd_io, so the fuzz target (tests/fuzz/fuzz-nbd.c) drives it from
 * memory; the socket code below is the thin production nbd_io.  The data
 * path avoids copies: a READ is pread into the connection's buffer and
 * sent with the reply header in one sendmsg(); a WRITE payload is
 * received straight into that buffer and written from it. */
#include <config.h>

#include "storage/nbd-server.h"
#include "storage/blockdev.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- Protocol constants (the NBD project's proto.md). ---- */

#define NBD_MAGIC                   UINT64_C(0x4e42444d41474943) /* NBDMAGIC */
#define NBD_OPTS_MAGIC              UINT64_C(0x49484156454f5054) /* IHAVEOPT */
#define NBD_OPT_REPLY_MAGIC         UINT64_C(0x0003e889045565a9)
#define NBD_REQUEST_MAGIC           UINT32_C(0x25609513)
#define NBD_SIMPLE_REPLY_MAGIC      UINT32_C(0x67446698)

/* Handshake flags (server) and client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE     (1u << 0)
#define NBD_FLAG_NO_ZEROES          (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_C_NO_ZEROES        (1u << 1)

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS          (1u << 0)
#define NBD_FLAG_READ_ONLY          (1u << 1)
#define NBD_FLAG_SEND_FLUSH         (1u << 2)
#define NBD_FLAG_SEND_FUA           (1u << 3)
#define NBD_FLAG_SEND_TRIM          (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES  (1u << 6)
#define NBD_FLAG_CAN_MULTI_CONN     (1u << 8)

/* Options. */
#define NBD_OPT_EXPORT_NAME         1
#define NBD_OPT_ABORT               2
#define NBD_OPT_LIST                3
#define NBD_OPT_INFO                6
#define NBD_OPT_GO                  7

/* Option replies. */
#define NBD_REP_ACK                 1
#define NBD_REP_SERVER              2
#define NBD_REP_INFO                3
#define NBD_REP_ERR                 (1u << 31)
#define NBD_REP_ERR_UNSUP           (NBD_REP_ERR + 1)
#define NBD_REP_ERR_INVALID         (NBD_REP_ERR + 3)
#define NBD_REP_ERR_UNKNOWN         (NBD_REP_ERR + 6)
#define NBD_REP_ERR_SHUTDOWN        (NBD_REP_ERR + 7)
#define NBD_REP_ERR_TOO_BIG         (NBD_REP_ERR + 9)

/* Information types for NBD_OPT_INFO / NBD_OPT_GO. */
#define NBD_INFO_EXPORT             0
#define NBD_INFO_NAME               1
#define NBD_INFO_DESCRIPTION        2
#define NBD_INFO_BLOCK_SIZE         3

/* Commands and command flags. */
#define NBD_CMD_READ                0
#define NBD_CMD_WRITE               1
#define NBD_CMD_DISC                2
#define NBD_CMD_FLUSH               3
#define NBD_CMD_TRIM                4
#define NBD_CMD_WRITE_ZEROES        6
#define NBD_CMD_FLAG_FUA            (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE        (1u << 1)

/* Error values on the wire. */
#define NBD_EPERM                   1
#define NBD_EIO                     5
#define NBD_ENOMEM                  12
#define NBD_EINVAL                  22
#define NBD_ENOSPC                  28
#define NBD_EOVERFLOW               75
#define NBD_ENOTSUP                 95
#define NBD_ESHUTDOWN               108

/* Limits on what a client may make the server do during the handshake:
 * option payloads (an export name is at most 4096 bytes, plus the
 * information requests), payloads the server reads just to skip them, and
 * the number of options before the client must choose an export. */
#define NBD_MAX_OPTION_LEN          (8u << 10)
#define NBD_MAX_SKIPPED_OPTION_LEN  (1u << 20)
#define NBD_MAX_OPTIONS             256

#define NBD_PREFERRED_BLOCK_SIZE    4096
/* Zeroing without device support writes this much at a time, so that
 * other connections get the device between chunks. */
#define NBD_ZERO_CHUNK              (1u << 20)
/* A connection keeps its payload buffer between requests up to this size;
 * a larger one is freed after its request, so that idle connections of
 * clients that once sent 32 MiB requests do not pin 32 MiB each. */
#define NBD_KEEP_BUFFER             (4u << 20)

/* ---- Byte order. ---- */

static void
put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t) (v >> 8);
    p[1] = (uint8_t) v;
}

static void
put_be32(uint8_t *p, uint32_t v)
{
    put_be16(p, (uint16_t) (v >> 16));
    put_be16(p + 2, (uint16_t) v);
}

static void
put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t) (v >> 32));
    put_be32(p + 4, (uint32_t) v);
}

static uint16_t
get_be16(const uint8_t *p)
{
    return (uint16_t) ((p[0] << 8) | p[1]);
}

static uint32_t
get_be32(const uint8_t *p)
{
    return ((uint32_t) get_be16(p) << 16) | get_be16(p + 2);
}

static uint64_t
get_be64(const uint8_t *p)
{
    return ((uint64_t) get_be32(p) << 32) | get_be32(p + 4);
}

/* ---- Token buckets. ---- */

#define MICRO INT64_C(1000000)
/* Rates above this count as unlimited; it keeps the arithmetic below in
 * 64 bits (a terabyte per second is far beyond any one disk). */
#define NBD_MAX_RATE (UINT64_C(1) << 40)

void
nbd_token_bucket_init(struct nbd_token_bucket *tb, uint64_t rate,
                      uint64_t burst, int64_t now_us)
{
    if (rate > NBD_MAX_RATE) {
        rate = 0;
    }
    tb->rate = rate;
    tb->burst = rate ? MAX(MIN(burst, NBD_MAX_RATE), 1) : 0;
    tb->level = (int64_t) tb->burst * MICRO;
    tb->last_us = now_us;
}

int64_t
nbd_token_bucket_take(struct nbd_token_bucket *tb, uint64_t amount,
                      int64_t now_us)
{
    int64_t full, rate, debit;

    if (!tb->rate) {
        return 0;
    }
    rate = (int64_t) tb->rate;
    full = (int64_t) tb->burst * MICRO;

    /* Refill for the time since the last call, up to the burst.  The
     * comparison against the time needed to fill up keeps elapsed * rate
     * from overflowing after a long idle period. */
    if (now_us > tb->last_us) {
        int64_t elapsed = now_us - tb->last_us;
        if (tb->level >= full || elapsed > (full - tb->level) / rate + 1) {
            tb->level = full;
        } else {
            tb->level = MIN(full, tb->level + elapsed * rate);
        }
        tb->last_us = now_us;
    }

    /* Requests are at most a few MiB, so the debt stays far from the
     * limits of int64_t; the clamp only guards against absurd input. */
    amount = MIN(amount, (uint64_t) 1 << 40);
    debit = (int64_t) amount * MICRO;
    tb->level = MAX(tb->level - debit, -(INT64_C(1) << 62));
    if (tb->level >= 0) {
        return 0;
    }
    return (-tb->level + rate - 1) / rate;
}

/* ---- QoS parameters. ---- */

static int
parse_limit(const char *value, uint64_t unit, uint64_t *ret_v)
{
    int64_t v;

    if (!value || str_to_int64(value, &v) || v < 0
        || (uint64_t) v > NBD_MAX_RATE / unit) {
        return -EINVAL;
    }
    *ret_v = (uint64_t) v * unit;
    return 0;
}

int
nbd_qos_apply(struct nbd_server_config *cfg, const char *algorithm_type,
              const char *key, const char *value)
{
    if (!algorithm_type || !algorithm_type[0]) {
        return -ENOENT;
    }
    if (strcmp(algorithm_type, "ratelimit")) {
        return -ENOTSUP;
    }
    if (!key) {
        return -ENOENT;
    }
    if (!strcmp(key, "iops")) {
        return parse_limit(value, 1, &cfg->iops);
    }
    if (!strcmp(key, "kbps") || !strcmp(key, "bandwidth")) {
        return parse_limit(value, 1024, &cfg->bytes_per_sec);
    }
    return -ENOENT;
}

/* ---- The server. ---- */

struct nbd_client {
    struct nbd_server *srv;
    pthread_t thread;
    int fd;
    bool in_use;            /* slot holds a thread not yet joined */
    bool done;              /* the thread has finished */
};

struct nbd_server {
    /* The device, NULL while paused.  Read and replaced only under
     * dev_mutex. */
    struct blockdev *dev;
    /* What clients are told and checked against.  A resume may grow it
     * (an online resize); it never shrinks.  Accessed with __atomic
     * builtins, because request checks read it outside dev_mutex. */
    uint64_t size;
    bool can_trim;
    char *export_name;      /* never NULL; "" for the default export only */
    char *description;      /* NULL: none */
    bool read_only;
    uint16_t tflags;        /* transmission flags */
    unsigned int max_clients;
    int handshake_timeout_ms;

    pthread_mutex_t dev_mutex;      /* serializes every device call */
    pthread_cond_t dev_cond;        /* signalled on resume and on stop */
    bool paused;                    /* under dev_mutex */

    bool qos;
    pthread_mutex_t qos_mutex;
    struct nbd_token_bucket iops_tb;
    struct nbd_token_bucket bytes_tb;

    int stop_pipe[2];       /* readable once stopping */
    int stopping;           /* accessed with __atomic builtins */

    pthread_mutex_t mutex;  /* protects clients and n_running */
    pthread_cond_t cond;    /* signalled when a client thread finishes */
    struct nbd_client *clients;     /* max_clients slots */
    unsigned int n_running;
};

static bool
server_stopping(const struct nbd_server *srv)
{
    return __atomic_load_n(&srv->stopping, __ATOMIC_ACQUIRE);
}

static uint64_t
server_size(const struct nbd_server *srv)
{
    return __atomic_load_n(&srv->size, __ATOMIC_RELAXED);
}

/* A token bucket's burst: a tenth of a second's worth, so a limit holds
 * over short windows too while a client that pauses still gets going at
 * once. */
static uint64_t
qos_burst(uint64_t rate)
{
    return MAX(rate / 10, 1);
}

int
nbd_server_create(struct blockdev *dev, const struct nbd_server_config *cfg,
                  struct nbd_server **ret_srv)
{
    static const struct nbd_server_config default_cfg;
    struct nbd_server *srv;
    int64_t now = time_mono_us();

    if (!cfg) {
        cfg = &default_cfg;
    }
    if (!dev || (cfg->export_name && strlen(cfg->export_name) > 4096)
        || (cfg->description && strlen(cfg->description) > 4096)) {
        return -EINVAL;
    }

    srv = xcalloc(1, sizeof *srv);
    if (pipe2(srv->stop_pipe, O_CLOEXEC | O_NONBLOCK)) {
        int rc = -errno;
        free(srv);
        return rc;
    }
    srv->dev = dev;
    srv->size = dev->size;
    srv->can_trim = dev->ops->trim != NULL;
    srv->export_name = xstrdup(cfg->export_name ? cfg->export_name : "");
    srv->description = cfg->description ? xstrdup(cfg->description) : NULL;
    srv->read_only = cfg->read_only || dev->read_only;
    srv->max_clients = cfg->max_clients ? cfg->max_clients
                                        : NBD_DEFAULT_MAX_CLIENTS;
    srv->handshake_timeout_ms = cfg->handshake_timeout_ms
                                ? cfg->handshake_timeout_ms
                                : NBD_DEFAULT_HANDSHAKE_TIMEOUT_MS;

    /* Every connection shares the device through dev_mutex and a flush
     * goes to the one device, so a flush on one connection covers writes
     * made on all of them: that is what CAN_MULTI_CONN promises. */
    srv->tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA
                  | NBD_FLAG_CAN_MULTI_CONN;
    if (srv->read_only) {
        srv->tflags |= NBD_FLAG_READ_ONLY;
    } else {
        srv->tflags |= NBD_FLAG_SEND_WRITE_ZEROES;
        if (srv->can_trim) {
            srv->tflags |= NBD_FLAG_SEND_TRIM;
        }
    }

    pthread_mutex_init(&srv->dev_mutex, NULL);
    pthread_cond_init(&srv->dev_cond, NULL);
    pthread_mutex_init(&srv->qos_mutex, NULL);
    pthread_mutex_init(&srv->mutex, NULL);
    pthread_cond_init(&srv->cond, NULL);
    nbd_token_bucket_init(&srv->iops_tb, cfg->iops, qos_burst(cfg->iops),
                          now);
    nbd_token_bucket_init(&srv->bytes_tb, cfg->bytes_per_sec,
                          qos_burst(cfg->bytes_per_sec), now);
    srv->qos = srv->iops_tb.rate || srv->bytes_tb.rate;
    srv->clients = xcalloc(srv->max_clients, sizeof *srv->clients);
    *ret_srv = srv;
    return 0;
}

void
nbd_server_destroy(struct nbd_server *srv)
{
    if (!srv) {
        return;
    }
    close(srv->stop_pipe[0]);
    close(srv->stop_pipe[1]);
    pthread_mutex_destroy(&srv->dev_mutex);
    pthread_cond_destroy(&srv->dev_cond);
    pthread_mutex_destroy(&srv->qos_mutex);
    pthread_mutex_destroy(&srv->mutex);
    pthread_cond_destroy(&srv->cond);
    free(srv->clients);
    free(srv->export_name);
    free(srv->description);
    free(srv);
}

void
nbd_server_stop(struct nbd_server *srv)
{
    int saved_errno = errno;
    ssize_t r;

    __atomic_store_n(&srv->stopping, 1, __ATOMIC_RELEASE);
    /* The pipe is never drained, so one byte keeps it readable for every
     * poll() that waits on it; when it is full, it is readable already. */
    r = write(srv->stop_pipe[1], "", 1);
    (void) r;
    errno = saved_errno;
}

/* Sleeps for us microseconds or until the server stops.  Returns false if
 * it stopped. */
static bool
server_sleep(struct nbd_server *srv, int64_t us)
{
    int64_t deadline = time_mono_us() + us;

    for (;;) {
        struct pollfd pfd = { .fd = srv->stop_pipe[0], .events = POLLIN };
        int64_t left = deadline - time_mono_us();
        if (server_stopping(srv)) {
            return false;
        }
        if (left <= 0) {
            return true;
        }
        poll(&pfd, 1, (int) MIN((left + 999) / 1000, 1000));
    }
}

/* Charges one request of len payload bytes to the QoS limits and waits
 * until it may go ahead.  Returns false if the server stopped meanwhile. */
static bool
qos_throttle(struct nbd_server *srv, uint64_t len)
{
    int64_t iops_wait, bytes_wait, now;

    if (!srv->qos) {
        return true;
    }
    pthread_mutex_lock(&srv->qos_mutex);
    now = time_mono_us();
    iops_wait = nbd_token_bucket_take(&srv->iops_tb, 1, now);
    bytes_wait = nbd_token_bucket_take(&srv->bytes_tb, len, now);
    pthread_mutex_unlock(&srv->qos_mutex);
    return MAX(iops_wait, bytes_wait) <= 0
           || server_sleep(srv, MAX(iops_wait, bytes_wait));
}

/* ---- One client session. ---- */

struct nbd_conn {
    struct nbd_server *srv;
    const struct nbd_io *io;
    bool no_zeroes;
    uint8_t *buf;           /* payload buffer, page-aligned */
    size_t buf_size;
    uint8_t *zeroes;        /* NBD_ZERO_CHUNK zero bytes, made on demand */
};

static uint8_t *
conn_buffer(struct nbd_conn *conn, size_t size)
{
    if (conn->buf_size < size) {
        void *p;
        size_t new_size = MAX(size, (size_t) 256 << 10);
        free(conn->buf);
        if (posix_memalign(&p, 4096, new_size)) {
            xabort("out of memory allocating %zu bytes", new_size);
        }
        conn->buf = p;
        conn->buf_size = new_size;
    }
    return conn->buf;
}

static int
conn_write(struct nbd_conn *conn, const void *p, size_t n)
{
    struct iovec iov = { (void *) p, n };
    return conn->io->writev(conn->io->aux, &iov, 1);
}

/* Reads and drops n bytes: a payload the server refuses must still be
 * consumed to stay in step with the client.  No allocation grows with n. */
static int
conn_skip(struct nbd_conn *conn, uint64_t n)
{
    uint8_t *buf = conn_buffer(conn, 64 << 10);

    while (n > 0) {
        size_t chunk = (size_t) MIN(n, (uint64_t) conn->buf_size);
        int rc = conn->io->read(conn->io->aux, buf, chunk);
        if (rc) {
            return rc;
        }
        n -= chunk;
    }
    return 0;
}

static int
send_option_reply(struct nbd_conn *conn, uint32_t option, uint32_t type,
                  const void *data, size_t len)
{
    uint8_t hdr[20];
    struct iovec iov[2] = { { hdr, sizeof hdr }, { (void *) data, len } };

    put_be64(hdr, NBD_OPT_REPLY_MAGIC);
    put_be32(hdr + 8, option);
    put_be32(hdr + 12, type);
    put_be32(hdr + 16, (uint32_t) len);
    return conn->io->writev(conn->io->aux, iov, len ? 2 : 1);
}

static int
send_option_error(struct nbd_conn *conn, uint32_t option, uint32_t type,
                  const char *msg)
{
    return send_option_reply(conn, option, type, msg, strlen(msg));
}

/* True if a client asking for this export name gets our export: its own
 * name, or the empty name of the default export. */
static bool
export_name_matches(const struct nbd_server *srv, const uint8_t *name,
                    size_t len)
{
    return !len || (len == strlen(srv->export_name)
                    && !memcmp(name, srv->export_name, len));
}

static int
send_info(struct nbd_conn *conn, uint32_t option, uint16_t type,
          const void *data, size_t len)
{
    uint8_t buf[2 + 4096];

    put_be16(buf, type);
    memcpy(buf + 2, data, len);
    return send_option_reply(conn, option, NBD_REP_INFO, buf, 2 + len);
}

/* NBD_OPT_INFO and NBD_OPT_GO share their request and their replies.
 * Sets *ret_go when the client has chosen the export. */
static int
handle_info_or_go(struct nbd_conn *conn, uint32_t option,
                  const uint8_t *data, uint32_t len, bool *ret_go)
{
    const struct nbd_server *srv = conn->srv;
    uint32_t name_len;
    uint16_t n_requests;
    bool sent_name = false, sent_description = false;
    uint8_t info[14];
    int rc;

    *ret_go = false;
    if (len < 6) {
        return send_option_error(conn, option, NBD_REP_ERR_INVALID,
                                 "option data too short");
    }
    name_len = get_be32(data);
    if (name_len > len - 6) {
        return send_option_error(conn, option, NBD_REP_ERR_INVALID,
                                 "export name longer than the option data");
    }
    n_requests = get_be16(data + 4 + name_len);
    if (len != 4 + name_len + 2 + 2 * (uint32_t) n_requests) {
        return send_option_error(conn, option, NBD_REP_ERR_INVALID,
                                 "option length does not match its "
                                 "information requests");
    }
    if (!export_name_matches(srv, data + 4, name_len)) {
        return send_option_error(conn, option, NBD_REP_ERR_UNKNOWN,
                                 "no such export");
    }

    put_be64(info, server_size(srv));
    put_be16(info + 8, srv->tflags);
    rc = send_info(conn, option, NBD_INFO_EXPORT, info, 10);
    if (rc) {
        return rc;
    }
    /* Block size constraints go out whether asked for or not: they are
     * the protocol's defaults (any alignment, 32 MiB maximum), which a
     * client that did not ask for them already honours. */
    put_be32(info, 1);
    put_be32(info + 4, NBD_PREFERRED_BLOCK_SIZE);
    put_be32(info + 8, NBD_MAX_REQUEST);
    rc = send_info(conn, option, NBD_INFO_BLOCK_SIZE, info, 12);
    if (rc) {
        return rc;
    }
    for (uint16_t i = 0; i < n_requests; i++) {
        uint16_t type = get_be16(data + 4 + name_len + 2 + 2 * i);
        if (type == NBD_INFO_NAME && !sent_name) {
            sent_name = true;
            rc = send_info(conn, option, NBD_INFO_NAME, srv->export_name,
                           strlen(srv->export_name));
        } else if (type == NBD_INFO_DESCRIPTION && srv->description
                   && !sent_description) {
            sent_description = true;
            rc = send_info(conn, option, NBD_INFO_DESCRIPTION,
                           srv->description, strlen(srv->description));
        }
        if (rc) {
            return rc;
        }
    }
    rc = send_option_reply(conn, option, NBD_REP_ACK, NULL, 0);
    if (!rc) {
        *ret_go = option == NBD_OPT_GO;
    }
    return rc;
}

/* Option haggling.  Returns 0 when the client has chosen the export,
 * -ECONNRESET when it aborted or asked for an export that does not exist
 * through NBD_OPT_EXPORT_NAME (which cannot fail any other way), another
 * negative errno value on a protocol or I/O error. */
static int
negotiate(struct nbd_conn *conn)
{
    struct nbd_server *srv = conn->srv;
    uint8_t greeting[18], hdr[16], client_flags[4];
    uint8_t data[NBD_MAX_OPTION_LEN];
    int rc;

    put_be64(greeting, NBD_MAGIC);
    put_be64(greeting + 8, NBD_OPTS_MAGIC);
    put_be16(greeting + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    rc = conn_write(conn, greeting, sizeof greeting);
    if (rc) {
        return rc;
    }
    rc = conn->io->read(conn->io->aux, client_flags, sizeof client_flags);
    if (rc) {
        return rc;
    }
    if (get_be32(client_flags)
        & ~(uint32_t) (NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        LOG_DBG("nbd: client sent unknown handshake flags %#x",
                get_be32(client_flags));
        return -EPROTO;
    }
    conn->no_zeroes = get_be32(client_flags) & NBD_FLAG_C_NO_ZEROES;

    for (int n = 0; n < NBD_MAX_OPTIONS; n++) {
        uint32_t option, len;
        bool go;

        rc = conn->io->read(conn->io->aux, hdr, sizeof hdr);
        if (rc) {
            return rc;
        }
        if (get_be64(hdr) != NBD_OPTS_MAGIC) {
            LOG_DBG("nbd: bad option magic");
            return -EPROTO;
        }
        option = get_be32(hdr + 8);
        len = get_be32(hdr + 12);
        if (len > NBD_MAX_OPTION_LEN) {
            if (option == NBD_OPT_EXPORT_NAME
                || len > NBD_MAX_SKIPPED_OPTION_LEN) {
                return -EPROTO;
            }
            rc = conn_skip(conn, len);
            if (!rc) {
                rc = send_option_error(conn, option, NBD_REP_ERR_TOO_BIG,
                                       "option data too long");
            }
            if (rc) {
                return rc;
            }
            continue;
        }
        rc = conn->io->read(conn->io->aux, data, len);
        if (rc) {
            return rc;
        }
        if (server_stopping(srv) && option != NBD_OPT_ABORT) {
            if (option == NBD_OPT_EXPORT_NAME) {
                return -ESHUTDOWN;
            }
            rc = send_option_error(conn, option, NBD_REP_ERR_SHUTDOWN,
                                   "server shutting down");
            if (rc) {
                return rc;
            }
            continue;
        }

        switch (option) {
        case NBD_OPT_EXPORT_NAME: {
            uint8_t reply[10 + 124];
            size_t reply_len = conn->no_zeroes ? 10 : sizeof reply;

            if (!export_name_matches(srv, data, len)) {
                return -ECONNRESET;
            }
            memset(reply, 0, sizeof reply);
            put_be64(reply, server_size(srv));
            put_be16(reply + 8, srv->tflags);
            return conn_write(conn, reply, reply_len);
        }

        case NBD_OPT_ABORT:
            send_option_reply(conn, option, NBD_REP_ACK, NULL, 0);
            return -ECONNRESET;

        case NBD_OPT_LIST: {
            uint8_t entry[4 + 4096];
            size_t name_len = strlen(srv->export_name);

            if (len) {
                rc = send_option_error(conn, option, NBD_REP_ERR_INVALID,
                                       "NBD_OPT_LIST takes no data");
                break;
            }
            put_be32(entry, (uint32_t) name_len);
            memcpy(entry + 4, srv->export_name, name_len);
            rc = send_option_reply(conn, option, NBD_REP_SERVER, entry,
                                   4 + name_len);
            if (!rc) {
                rc = send_option_reply(conn, option, NBD_REP_ACK, NULL, 0);
            }
            break;
        }

        case NBD_OPT_INFO:
        case NBD_OPT_GO:
            rc = handle_info_or_go(conn, option, data, len, &go);
            if (!rc && go) {
                return 0;
            }
            break;

        default:
            /* STARTTLS, STRUCTURED_REPLY, the metadata contexts, extended
             * headers and anything newer: this server replies simply,
             * without TLS, and the client falls back. */
            rc = send_option_error(conn, option, NBD_REP_ERR_UNSUP,
                                   "option not supported");
            break;
        }
        if (rc) {
            return rc;
        }
    }
    LOG_DBG("nbd: client sent too many options");
    return -EPROTO;
}

int
nbd_request_decode(const uint8_t hdr[NBD_REQUEST_SIZE],
                   struct nbd_request *ret_req)
{
    if (get_be32(hdr) != NBD_REQUEST_MAGIC) {
        return -EPROTO;
    }
    ret_req->flags = get_be16(hdr + 4);
    ret_req->type = get_be16(hdr + 6);
    ret_req->handle = get_be64(hdr + 8);
    ret_req->offset = get_be64(hdr + 16);
    ret_req->length = get_be32(hdr + 24);
    return 0;
}

/* True if [offset, offset + length) lies within the device. */
static bool
range_ok(const struct nbd_server *srv, uint64_t offset, uint64_t length)
{
    uint64_t size = server_size(srv);
    return length <= size && offset <= size - length;
}

/* Checks a request before anything is done for it; returns the NBD error
 * to answer it with, or 0. */
static uint32_t
check_request(const struct nbd_server *srv, const struct nbd_request *req)
{
    uint16_t flags_ok = NBD_CMD_FLAG_FUA;

    if (req->type == NBD_CMD_WRITE_ZEROES) {
        flags_ok |= NBD_CMD_FLAG_NO_HOLE;
    }
    if (req->flags & ~flags_ok) {
        return NBD_EINVAL;
    }
    switch (req->type) {
    case NBD_CMD_READ:
        if (req->length > NBD_MAX_REQUEST
            || !range_ok(srv, req->offset, req->length)) {
            return NBD_EINVAL;
        }
        return 0;

    case NBD_CMD_WRITE:
    case NBD_CMD_WRITE_ZEROES:
        if (srv->read_only) {
            return NBD_EPERM;
        }
        if (req->type == NBD_CMD_WRITE && req->length > NBD_MAX_REQUEST) {
            return NBD_EINVAL;
        }
        return range_ok(srv, req->offset, req->length) ? 0 : NBD_ENOSPC;

    case NBD_CMD_TRIM:
        if (srv->read_only) {
            return NBD_EPERM;
        }
        if (!srv->can_trim
            || !range_ok(srv, req->offset, req->length)) {
            return NBD_EINVAL;
        }
        return 0;

    case NBD_CMD_FLUSH:
        return 0;

    default:
        return NBD_EINVAL;
    }
}

/* Maps a device's negative errno value to the protocol's error values. */
static uint32_t
nbd_error_from_errno(int rc)
{
    switch (-rc) {
    case 0:
        return 0;
    case EPERM:
    case EACCES:
    case EROFS:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EIO;
    }
}

static int
send_reply(struct nbd_conn *conn, uint64_t handle, uint32_t error,
           const void *data, size_t len)
{
    uint8_t hdr[16];
    struct iovec iov[2] = { { hdr, sizeof hdr }, { (void *) data, len } };

    put_be32(hdr, NBD_SIMPLE_REPLY_MAGIC);
    put_be32(hdr + 4, error);
    put_be64(hdr + 8, handle);
    return conn->io->writev(conn->io->aux, iov, len ? 2 : 1);
}

/* Takes the device for one call.  While the server is paused the caller
 * waits here: that is how requests are held, and since the connection's
 * thread waits, the client's further requests queue in the socket.
 * Returns NULL (with the lock released) when the server stops meanwhile;
 * otherwise the device, with dev_mutex held until dev_put(). */
static struct blockdev *
dev_get(struct nbd_server *srv)
{
    pthread_mutex_lock(&srv->dev_mutex);
    while (srv->paused && !server_stopping(srv)) {
        pthread_cond_wait(&srv->dev_cond, &srv->dev_mutex);
    }
    if (srv->paused) {
        pthread_mutex_unlock(&srv->dev_mutex);
        return NULL;
    }
    return srv->dev;
}

static void
dev_put(struct nbd_server *srv)
{
    pthread_mutex_unlock(&srv->dev_mutex);
}

static int
dev_flush(struct nbd_server *srv)
{
    struct blockdev *dev = dev_get(srv);
    int rc;

    if (!dev) {
        return -ESHUTDOWN;
    }
    rc = dev->ops->flush(dev);
    dev_put(srv);
    return rc;
}

int
nbd_server_pause(struct nbd_server *srv)
{
    int rc = 0;

    /* Holding dev_mutex means no device call is in progress; setting
     * paused before letting go means none starts until the resume. */
    pthread_mutex_lock(&srv->dev_mutex);
    if (!srv->paused) {
        if (!srv->read_only) {
            rc = srv->dev->ops->flush(srv->dev);
        }
        if (!rc) {
            srv->paused = true;
            srv->dev = NULL;
        }
    }
    pthread_mutex_unlock(&srv->dev_mutex);
    return rc;
}

int
nbd_server_resume(struct nbd_server *srv, struct blockdev *dev)
{
    int rc = 0;

    pthread_mutex_lock(&srv->dev_mutex);
    if (!srv->paused) {
        rc = -EALREADY;
    } else if (dev->size < server_size(srv)) {
        /* Clients were told the old size and may address all of it. */
        rc = -EINVAL;
    } else if (dev->read_only && !srv->read_only) {
        rc = -EROFS;
    } else {
        srv->dev = dev;
        srv->paused = false;
        __atomic_store_n(&srv->size, dev->size, __ATOMIC_RELAXED);
        pthread_cond_broadcast(&srv->dev_cond);
    }
    pthread_mutex_unlock(&srv->dev_mutex);
    return rc;
}

bool
nbd_server_paused(struct nbd_server *srv)
{
    bool paused;

    pthread_mutex_lock(&srv->dev_mutex);
    paused = srv->paused;
    pthread_mutex_unlock(&srv->dev_mutex);
    return paused;
}

/* Zeroes a range through the device's write_zeroes, or by writing zeroes
 * when it has none (or it answers -EOPNOTSUPP).  The device lock is taken
 * per chunk so that a large request does not stall other clients. */
static int
dev_write_zeroes(struct nbd_conn *conn, uint64_t offset, uint64_t len)
{
    struct nbd_server *srv = conn->srv;
    struct blockdev *dev = dev_get(srv);
    int rc = -EOPNOTSUPP;

    if (!dev) {
        return -ESHUTDOWN;
    }
    if (dev->ops->write_zeroes) {
        rc = dev->ops->write_zeroes(dev, offset, len);
    }
    dev_put(srv);
    if (rc != -EOPNOTSUPP) {
        return rc;
    }
    if (!conn->zeroes) {
        conn->zeroes = xcalloc(1, NBD_ZERO_CHUNK);
    }
    rc = 0;
    while (len > 0 && !rc) {
        size_t chunk = (size_t) MIN(len, (uint64_t) NBD_ZERO_CHUNK);
        dev = dev_get(srv);
        if (!dev) {
            return -ESHUTDOWN;
        }
        rc = dev->ops->write(dev, conn->zeroes, offset, chunk);
        dev_put(srv);
        offset += chunk;
        len -= chunk;
    }
    return rc;
}

/* Serves one request whose header has been read.  Returns 0 to go on,
 * -ECONNRESET after NBD_CMD_DISC, another negative errno value when the
 * connection must be dropped. */
static int
handle_request(struct nbd_conn *conn, const struct nbd_request *req)
{
    struct nbd_server *srv = conn->srv;
    struct blockdev *dev;
    uint32_t error;
    uint8_t *buf;
    int rc;

    if (req->type == NBD_CMD_DISC) {
        return -ECONNRESET;
    }
    error = check_request(srv, req);
    if (error) {
        LOG_DBG("nbd: refusing command %u flags %#x offset %"PRIu64
                " length %"PRIu32": error %"PRIu32, req->type, req->flags,
                req->offset, req->length, error);
        if (req->type == NBD_CMD_WRITE) {
            rc = conn_skip(conn, req->length);
            if (rc) {
                return rc;
            }
        }
        return send_reply(conn, req->handle, error, NULL, 0);
    }

    switch (req->type) {
    case NBD_CMD_READ:
        if (!qos_throttle(srv, req->length)) {
            return -ESHUTDOWN;
        }
        buf = conn_buffer(conn, req->length);
        if (req->length) {
            dev = dev_get(srv);
            if (!dev) {
                return -ESHUTDOWN;
            }
            rc = dev->ops->read(dev, buf, req->offset, req->length);
            dev_put(srv);
        } else {
            rc = 0;
        }
        if (rc) {
            /* A simple reply carrying an error has no payload. */
            return send_reply(conn, req->handle, nbd_error_from_errno(rc),
                              NULL, 0);
        }
        return send_reply(conn, req->handle, 0, buf, req->length);

    case NBD_CMD_WRITE:
        buf = conn_buffer(conn, req->length);
        rc = req->length ? conn->io->read(conn->io->aux, buf, req->length)
                         : 0;
        if (rc) {
            return rc;
        }
        if (!qos_throttle(srv, req->length)) {
            return -ESHUTDOWN;
        }
        dev = dev_get(srv);
        if (!dev) {
            return -ESHUTDOWN;
        }
        rc = req->length ? dev->ops->write(dev, buf, req->offset, req->length)
                         : 0;
        if (!rc && (req->flags & NBD_CMD_FLAG_FUA)) {
            rc = dev->ops->flush(dev);
        }
        dev_put(srv);
        break;

    case NBD_CMD_WRITE_ZEROES:
        if (!qos_throttle(srv, 0)) {
            return -ESHUTDOWN;
        }
        rc = req->length ? dev_write_zeroes(conn, req->offset, req->length)
                         : 0;
        if (!rc && (req->flags & NBD_CMD_FLAG_FUA)) {
            rc = dev_flush(srv);
        }
        break;

    case NBD_CMD_TRIM:
        if (!qos_throttle(srv, 0)) {
            return -ESHUTDOWN;
        }
        dev = dev_get(srv);
        if (!dev) {
            return -ESHUTDOWN;
        }
        /* The device reopened after a pause may lack trim, although the
         * client was told it could send it. */
        rc = !req->length ? 0 : dev->ops->trim
             ? dev->ops->trim(dev, req->offset, req->length) : -ENOTSUP;
        if (!rc && (req->flags & NBD_CMD_FLAG_FUA)) {
            rc = dev->ops->flush(dev);
        }
        dev_put(srv);
        break;

    case NBD_CMD_FLUSH:
        rc = srv->read_only ? 0 : dev_flush(srv);
        break;

    default:
        /* check_request() refused every other type. */
        rc = -EINVAL;
        break;
    }
    if (rc) {
        LOG_WARN("nbd: command %u at %"PRIu64" (%"PRIu32" bytes) failed: %s",
                 req->type, req->offset, req->length, strerror(-rc));
    }
    return send_reply(conn, req->handle, nbd_error_from_errno(rc), NULL, 0);
}

int
nbd_server_handle(struct nbd_server *srv, const struct nbd_io *io)
{
    struct nbd_conn conn = { .srv = srv, .io = io };
    int rc;

    rc = negotiate(&conn);
    if (!rc && io->handshake_done) {
        io->handshake_done(io->aux);
    }
    while (!rc) {
        uint8_t hdr[NBD_REQUEST_SIZE];
        struct nbd_request req;

        rc = io->read(io->aux, hdr, sizeof hdr);
        if (rc) {
            break;
        }
        rc = nbd_request_decode(hdr, &req);
        if (rc) {
            LOG_DBG("nbd: bad request magic, disconnecting");
            break;
        }
        rc = handle_request(&conn, &req);
        if (conn.buf_size > NBD_KEEP_BUFFER) {
            free(conn.buf);
            conn.buf = NULL;
            conn.buf_size = 0;
        }
    }
    free(conn.buf);
    free(conn.zeroes);
    /* The ends a client may choose: a soft disconnect, an abort during
     * the handshake, or simply closing the socket between messages. */
    return rc == -ECONNRESET || rc == -EPIPE ? 0 : rc;
}

/* ---- Sockets. ---- */

/* Small reads (request headers, handshake messages) go through a buffer:
 * a client that pipelines requests has several headers in the socket, and
 * one recv() then fetches them all instead of one system call each.
 * Payloads bypass the buffer once it is empty, so they are received
 * straight into the connection's buffer as before. */
#define SOCKET_READ_BUFFER 4096

struct socket_io {
    int fd;
    size_t pos, len;                /* unread bytes: rbuf[pos..len) */
    uint8_t rbuf[SOCKET_READ_BUFFER];
};

static int
recv_error(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
}

static int
socket_read(void *aux, void *buf, size_t n)
{
    struct socket_io *sio = aux;
    char *p = buf;

    while (n > 0) {
        ssize_t r;

        if (sio->pos < sio->len) {
            size_t step = MIN(n, sio->len - sio->pos);
            memcpy(p, sio->rbuf + sio->pos, step);
            sio->pos += step;
            p += step;
            n -= step;
            continue;
        }
        if (n >= sizeof sio->rbuf) {
            r = recv(sio->fd, p, n, MSG_WAITALL);
            if (r > 0) {
                p += r;
                n -= (size_t) r;
            }
        } else {
            r = recv(sio->fd, sio->rbuf, sizeof sio->rbuf, 0);
            if (r > 0) {
                sio->pos = 0;
                sio->len = (size_t) r;
            }
        }
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return recv_error();
        }
        if (r == 0) {
            return -EPIPE;
        }
    }
    return 0;
}

static int
socket_writev(void *aux, const struct iovec *iov_in, int iovcnt)
{
    struct socket_io *sio = aux;
    struct iovec iov[4];
    struct msghdr msg = { .msg_iov = iov };
    int i = 0;

    if (iovcnt > (int) ARRAY_SIZE(iov)) {
        return -EINVAL;
    }
    memcpy(iov, iov_in, iovcnt * sizeof *iov);
    while (i < iovcnt) {
        ssize_t r;

        if (!iov[i].iov_len) {
            i++;
            continue;
        }
        msg.msg_iov = iov + i;
        msg.msg_iovlen = iovcnt - i;
        /* MSG_NOSIGNAL: a client that went away is an error return, not
         * a SIGPIPE that kills the process. */
        r = sendmsg(sio->fd, &msg, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        while (r > 0 && i < iovcnt) {
            size_t step = MIN((size_t) r, iov[i].iov_len);
            iov[i].iov_base = (char *) iov[i].iov_base + step;
            iov[i].iov_len -= step;
            r -= (ssize_t) step;
            if (!iov[i].iov_len) {
                i++;
            }
        }
    }
    return 0;
}

static void
set_recv_timeout(int fd, int ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = ms % 1000 * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static void
socket_handshake_done(void *aux)
{
    struct socket_io *sio = aux;
    set_recv_timeout(sio->fd, 0);
}

/* The handshake gets a time limit, so that a client that connects and
 * says nothing does not hold a slot forever; transmission does not,
 * because an idle disk is normal. */
static void *
client_thread(void *client_)
{
    struct nbd_client *client = client_;
    struct nbd_server *srv = client->srv;
    struct socket_io sio = { .fd = client->fd };
    const struct nbd_io io = {
        .read = socket_read, .writev = socket_writev,
        .handshake_done = socket_handshake_done, .aux = &sio,
    };
    int rc;

    if (srv->handshake_timeout_ms > 0) {
        set_recv_timeout(client->fd, srv->handshake_timeout_ms);
    }
    rc = nbd_server_handle(srv, &io);
    if (rc && rc != -ESHUTDOWN) {
        LOG_DBG("nbd: client connection ended: %s", strerror(-rc));
    }

    /* Close at once: after NBD_CMD_DISC the client waits for the
     * connection to close. */
    pthread_mutex_lock(&srv->mutex);
    close(client->fd);
    client->fd = -1;
    client->done = true;
    srv->n_running--;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->mutex);
    return NULL;
}

/* Joins the threads of clients that have finished and frees their slots.
 * Called with srv->mutex held; a finished thread no longer takes it. */
static void
reap_clients(struct nbd_server *srv)
{
    for (unsigned int i = 0; i < srv->max_clients; i++) {
        struct nbd_client *client = &srv->clients[i];
        if (client->in_use && client->done) {
            pthread_join(client->thread, NULL);
            client->in_use = false;
        }
    }
}

static void
start_client(struct nbd_server *srv, int fd)
{
    struct nbd_client *client = NULL;
    int r;

    pthread_mutex_lock(&srv->mutex);
    reap_clients(srv);
    for (unsigned int i = 0; i < srv->max_clients; i++) {
        if (!srv->clients[i].in_use) {
            client = &srv->clients[i];
            break;
        }
    }
    if (!client) {
        pthread_mutex_unlock(&srv->mutex);
        LOG_WARN("nbd: refusing a client: already %u connections",
                 srv->max_clients);
        close(fd);
        return;
    }
    client->srv = srv;
    client->fd = fd;
    client->done = false;
    client->in_use = true;
    srv->n_running++;
    r = pthread_create(&client->thread, NULL, client_thread, client);
    if (r) {
        client->in_use = false;
        srv->n_running--;
        pthread_mutex_unlock(&srv->mutex);
        LOG_WARN("nbd: cannot start a client thread: %s", strerror(r));
        close(fd);
        return;
    }
    pthread_mutex_unlock(&srv->mutex);
}

/* Ends every connection.  Shutting down the reading side first lets a
 * request in progress finish and its reply go out (the protocol asks a
 * server to serve in-flight requests before disconnecting); whoever is
 * still there after a grace period, e.g. a client that does not read its
 * replies, is cut off for good. */
static void
stop_clients(struct nbd_server *srv)
{
    struct timespec deadline;

    /* Requests held by a pause give up: stopping is set already, and
     * dev_get() checks it under dev_mutex, so none misses this. */
    pthread_mutex_lock(&srv->dev_mutex);
    pthread_cond_broadcast(&srv->dev_cond);
    pthread_mutex_unlock(&srv->dev_mutex);

    pthread_mutex_lock(&srv->mutex);
    for (unsigned int i = 0; i < srv->max_clients; i++) {
        struct nbd_client *client = &srv->clients[i];
        if (client->in_use && !client->done) {
            shutdown(client->fd, SHUT_RD);
        }
    }
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 2;
    while (srv->n_running
           && pthread_cond_timedwait(&srv->cond, &srv->mutex, &deadline)
              != ETIMEDOUT) {
        continue;
    }
    for (unsigned int i = 0; i < srv->max_clients; i++) {
        struct nbd_client *client = &srv->clients[i];
        if (client->in_use && !client->done) {
            shutdown(client->fd, SHUT_RDWR);
        }
    }
    pthread_mutex_unlock(&srv->mutex);

    for (unsigned int i = 0; i < srv->max_clients; i++) {
        struct nbd_client *client = &srv->clients[i];
        if (client->in_use) {
            pthread_join(client->thread, NULL);
            client->in_use = false;
        }
    }
}

int
nbd_server_run(struct nbd_server *srv, int listen_fd)
{
    int flags, rc = 0;

    /* Non-blocking, so that a client that goes away between poll() and
     * accept() cannot leave the loop stuck in accept(). */
    flags = fcntl(listen_fd, F_GETFL);
    if (flags < 0 || fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK)) {
        return -errno;
    }

    while (!server_stopping(srv)) {
        struct pollfd pfds[2] = {
            { .fd = listen_fd, .events = POLLIN },
            { .fd = srv->stop_pipe[0], .events = POLLIN },
        };
        int fd;

        if (poll(pfds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            LOG_ERR("nbd: poll: %s", strerror(errno));
            break;
        }
        if (pfds[1].revents) {
            break;
        }
        if (pfds[0].revents & POLLNVAL) {
            rc = -EBADF;
            break;
        }
        if (!pfds[0].revents) {
            continue;
        }
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK
                || errno == ECONNABORTED) {
                continue;
            }
            /* Out of descriptors or memory: wait a little rather than
             * spin, and keep serving the clients already connected. */
            LOG_WARN("nbd: accept: %s", strerror(errno));
            server_sleep(srv, 100 * 1000);
            continue;
        }
        start_client(srv, fd);
    }

    stop_clients(srv);
    /* A paused server has flushed already and holds no device. */
    if (!srv->read_only && !nbd_server_paused(srv)) {
        int r = dev_flush(srv);
        if (r) {
            LOG_ERR("nbd: flushing the device at shutdown: %s", strerror(-r));
            if (!rc) {
                rc = r;
            }
        }
    }
    return rc;
}

int
nbd_listen_unix(const char *path, int *ret_fd)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct stat st;
    int fd = -1, probe = -1;
    int rc;

    if (strlen(path) >= sizeof sun.sun_path) {
        return -ENAMETOOLONG;
    }
    strcpy(sun.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    if (bind(fd, (struct sockaddr *) &sun, sizeof sun)) {
        if (errno != EADDRINUSE) {
            rc = -errno;
            goto out;
        }
        /* A socket file left by a server that died: replace it, unless
         * someone is still accepting on it. */
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0) {
            rc = -errno;
            goto out;
        }
        if (lstat(path, &st) || !S_ISSOCK(st.st_mode)
            || !connect(probe, (struct sockaddr *) &sun, sizeof sun)
            || errno != ECONNREFUSED) {
            rc = -EADDRINUSE;
            goto out;
        }
        if (unlink(path) || bind(fd, (struct sockaddr *) &sun, sizeof sun)) {
            rc = -errno;
            goto out;
        }
    }
    if (listen(fd, 64)) {
        rc = -errno;
        unlink(path);
        goto out;
    }
    *ret_fd = fd;
    fd = -1;
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    if (probe >= 0) {
        close(probe);
    }
    return rc;
}

/* The server nbd_server_serve() runs, for its signal handler. */
static struct nbd_server *volatile serve_server;

static void
serve_signal(int sig)
{
    struct nbd_server *srv = serve_server;

    (void) sig;
    if (srv) {
        nbd_server_stop(srv);
    }
}

int
nbd_server_serve(int listen_fd, struct blockdev *dev,
                 const struct nbd_server_config *cfg)
{
    struct sigaction sa, old_term, old_int;
    struct nbd_server *srv;
    int rc;

    rc = nbd_server_create(dev, cfg, &srv);
    if (rc) {
        return rc;
    }
    serve_server = srv;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = serve_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGINT, &sa, &old_int);

    rc = nbd_server_run(srv, listen_fd);

    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGINT, &old_int, NULL);
    serve_server = NULL;
    nbd_server_destroy(srv);
    return rc;
}
