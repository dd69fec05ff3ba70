/* nbd-server.h — the tapdisk-style block server: serves one struct blockdev
 * (a raw file, or a VHD chain from storage/vhd.c) over the NBD protocol on
 * a listening socket, usually a Unix socket that a domain's disk backend
 * connects to.  storage/tapdisk.c wraps it into the xapi-tapdisk program,
 * one process per attached VDI; docs/block-server.md describes the design.
 *
 * Protocol: fixed newstyle negotiation with NBD_OPT_EXPORT_NAME,
 * NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_LIST and NBD_OPT_ABORT (other options
 * are answered NBD_REP_ERR_UNSUP); simple replies; commands READ, WRITE,
 * FLUSH, TRIM (when the device supports it), WRITE_ZEROES and DISC, with
 * the FUA flag.  Requests of more than NBD_MAX_REQUEST bytes of payload are
 * refused with EINVAL, as are ranges past the end of the device.
 *
 * Threading: each client connection runs in its own thread (at most
 * max_clients at once); device calls are serialized by one mutex, as
 * blockdev.h requires.  The QoS limits are shared by all connections: they
 * are the limits of the VBD, not of one connection.
 *
 * Functions return 0 or a negative errno value. */
#ifndef NBD_SERVER_H
#define NBD_SERVER_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct blockdev;

/* The largest READ or WRITE payload the server accepts (32 MiB, the size
 * every client is told it may rely on); advertised as the maximum block
 * size. */
#define NBD_MAX_REQUEST (32u << 20)
#define NBD_DEFAULT_MAX_CLIENTS 16
#define NBD_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000

struct nbd_server_config {
    /* The export's name.  NULL or "" serves only the default export; a
     * client asking for the default export ("") always gets this one. */
    const char *export_name;
    const char *description;        /* NULL: none */
    bool read_only;                 /* also true when the device is */
    uint64_t iops;                  /* requests per second; 0: no limit */
    uint64_t bytes_per_sec;         /* READ + WRITE payload; 0: no limit */
    unsigned int max_clients;       /* 0: NBD_DEFAULT_MAX_CLIENTS */
    /* How long a client may take over the handshake; 0: the default,
     * negative: no limit. */
    int handshake_timeout_ms;
};

/* Applies one entry of a VBD's qos_algorithm_params to cfg.  Only the
 * algorithm type "ratelimit" has parameters here: "iops" (requests per
 * second) and "kbps" or its alias "bandwidth" (KiB per second, that is
 * units of 1024 bytes); "0" removes a limit.  Returns 0, -EINVAL for a bad
 * value, -ENOENT for a key this server does not know (callers log and
 * ignore it), -ENOTSUP for another algorithm type (NULL or "" means no
 * QoS and gives -ENOENT). */
int nbd_qos_apply(struct nbd_server_config *cfg, const char *algorithm_type,
                  const char *key, const char *value);

struct nbd_server;

int nbd_server_create(struct blockdev *dev, const struct nbd_server_config *cfg,
                      struct nbd_server **ret_srv);
/* Accepts clients on listen_fd and serves them until nbd_server_stop();
 * then lets in-flight requests finish, closes every connection, flushes
 * the device and returns 0.  listen_fd stays open (the caller's). */
int nbd_server_run(struct nbd_server *srv, int listen_fd);
/* Asks nbd_server_run() to return.  Async-signal-safe: may be called from
 * a signal handler or from any thread, any number of times. */
void nbd_server_stop(struct nbd_server *srv);
/* Pausing, so that the image under a running server can be swapped (a
 * snapshot or a GC step makes a new leaf at the same path): what
 * xapi-tapdisk's "pause" and "unpause" commands do.
 *
 * nbd_server_pause() waits for the device call in progress, flushes the
 * device (if writable) and holds every later device call: clients stay
 * connected, the request each connection is on waits, and further ones
 * queue in the socket.  From its return the server does not touch the
 * device, which the caller may close.  If the flush fails the server goes
 * on serving and its error is returned.  Pausing a paused server does
 * nothing.
 *
 * nbd_server_resume() gives it a device again (the reopened image) and
 * lets the held requests go.  The device must be at least as large as
 * before (-EINVAL: clients may address all they were told) and writable
 * if the export is (-EROFS); a larger one is advertised to new clients.
 * -EALREADY if the server is not paused.  On failure it stays paused.
 *
 * A server stopped while paused drops the held requests' connections and
 * does not flush.  These calls may come from any thread but are not
 * async-signal-safe. */
int nbd_server_pause(struct nbd_server *srv);
int nbd_server_resume(struct nbd_server *srv, struct blockdev *dev);
bool nbd_server_paused(struct nbd_server *srv);
/* Destroys a server that is not running.  Does not close the device. */
void nbd_server_destroy(struct nbd_server *srv);

/* Creates, binds and listens on a Unix stream socket at path.  A stale
 * socket file (nobody accepting on it) is replaced; a live one gives
 * -EADDRINUSE. */
int nbd_listen_unix(const char *path, int *ret_fd);

/* Serves dev on listen_fd until SIGTERM or SIGINT: creates a server,
 * installs handlers for both signals that stop it, runs it, restores the
 * previous handlers.  One at a time per process. */
int nbd_server_serve(int listen_fd, struct blockdev *dev,
                     const struct nbd_server_config *cfg);

/* ---- Internals exposed for unit tests and the fuzz target. ---- */

/* A byte stream to one client.  read() fills exactly n bytes or fails
 * (-EPIPE at end of stream); writev() writes everything (at most 4
 * pieces) or fails.  handshake_done(), if not NULL, is called once the
 * client has chosen the export (the socket lifts its handshake time
 * limit there). */
struct nbd_io {
    int (*read)(void *aux, void *buf, size_t n);
    int (*writev)(void *aux, const struct iovec *iov, int iovcnt);
    void (*handshake_done)(void *aux);
    void *aux;
};

/* Runs one client session (handshake, then transmission) over io until
 * the client disconnects, breaks the protocol or the server stops.
 * Returns 0 after a clean end, otherwise a negative errno value. */
int nbd_server_handle(struct nbd_server *srv, const struct nbd_io *io);

/* A transmission request as it arrives (28 bytes, network byte order). */
#define NBD_REQUEST_SIZE 28
struct nbd_request {
    uint16_t flags;
    uint16_t type;
    uint64_t handle;
    uint64_t offset;
    uint32_t length;
};

/* Decodes a request header; -EPROTO if the magic is wrong. */
int nbd_request_decode(const uint8_t hdr[NBD_REQUEST_SIZE],
                       struct nbd_request *ret_req);

/* A token bucket: rate tokens per second, at most burst saved up.  take()
 * removes amount tokens, going into debt if need be, and returns how many
 * microseconds the caller must wait before going ahead (0: at once).
 * Time is passed in, so tests can use a fake clock.  A rate of 0 means no
 * limit. */
struct nbd_token_bucket {
    uint64_t rate;
    uint64_t burst;
    int64_t level;      /* millionths of a token; negative while in debt */
    int64_t last_us;
};

void nbd_token_bucket_init(struct nbd_token_bucket *tb, uint64_t rate,
                           uint64_t burst, int64_t now_us);
int64_t nbd_token_bucket_take(struct nbd_token_bucket *tb, uint64_t amount,
                              int64_t now_us);

#endif
