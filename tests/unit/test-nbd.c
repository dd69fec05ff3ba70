/* test-nbd.c — tests of the tapdisk-style block server
 * (storage/nbd-server.c) and the raw block device (storage/blockdev-raw.c).
 *
 * The QoS token bucket is tested with a fake clock.  Everything else starts
 * a real server in a thread, on a Unix socket in a temp directory over a
 * temp raw file, and talks to it with independent NBD clients (nbdinfo and
 * nbdcopy from libnbd, qemu-img and qemu-io from QEMU) or, for the
 * protocol corners and hostile clients, with raw bytes on a socket.  Tests
 * that need a missing tool skip with a message. */
#include <config.h>
#define TEST_MAIN
#include "test.h"

#include "storage/blockdev.h"
#include "storage/nbd-server.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define IMAGE_SIZE (4u << 20)

/* ---- A server in a thread over a temp raw file. ---- */

struct fixture {
    char dir[64];
    char sock[128];
    char image[128];
    char uri[256];
    struct blockdev *dev;
    struct nbd_server *srv;
    pthread_t thread;
    int listen_fd;
    int run_rc;
};

static uint8_t
pattern_byte(size_t i)
{
    return (uint8_t) (i * 7 + i / 4096);
}

static void
write_pattern_file(const char *path, size_t size)
{
    uint8_t *data = xmalloc(size);

    for (size_t i = 0; i < size; i++) {
        data[i] = pattern_byte(i);
    }
    if (write_file_atomic(path, data, size, 0644)) {
        xabort("cannot write %s", path);
    }
    free(data);
}

static void *
server_thread(void *fx_)
{
    struct fixture *fx = fx_;
    fx->run_rc = nbd_server_run(fx->srv, fx->listen_fd);
    return NULL;
}

static void
fixture_start(struct fixture *fx, const struct nbd_server_config *cfg,
              bool open_read_only)
{
    char *err = NULL;
    int rc;

    memset(fx, 0, sizeof *fx);
    strcpy(fx->dir, "/tmp/test-nbd.XXXXXX");
    if (!mkdtemp(fx->dir)) {
        xabort("mkdtemp: %s", strerror(errno));
    }
    snprintf(fx->sock, sizeof fx->sock, "%s/nbd.sock", fx->dir);
    snprintf(fx->image, sizeof fx->image, "%s/disk.raw", fx->dir);
    snprintf(fx->uri, sizeof fx->uri, "nbd+unix:///%s?socket=%s",
             cfg && cfg->export_name ? cfg->export_name : "", fx->sock);
    write_pattern_file(fx->image, IMAGE_SIZE);

    rc = blockdev_open_raw(fx->image, open_read_only, &fx->dev, &err);
    if (rc) {
        xabort("blockdev_open_raw: %s", err);
    }
    rc = nbd_listen_unix(fx->sock, &fx->listen_fd);
    if (rc) {
        xabort("nbd_listen_unix: %s", strerror(-rc));
    }
    rc = nbd_server_create(fx->dev, cfg, &fx->srv);
    if (rc) {
        xabort("nbd_server_create: %s", strerror(-rc));
    }
    pthread_create(&fx->thread, NULL, server_thread, fx);
}

/* Stops the server; returns how long nbd_server_run() took to return, in
 * milliseconds. */
static int64_t
fixture_stop(struct fixture *fx)
{
    int64_t start = time_mono_ms();
    char cmd[128];

    nbd_server_stop(fx->srv);
    pthread_join(fx->thread, NULL);
    start = time_mono_ms() - start;
    CHECK_INT(fx->run_rc, 0);
    nbd_server_destroy(fx->srv);
    close(fx->listen_fd);
    blockdev_close(fx->dev);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    if (system(cmd)) {
        fprintf(stderr, "  could not remove %s\n", fx->dir);
    }
    return start;
}

static char *
fixture_read_image(const struct fixture *fx)
{
    char *data = NULL;
    size_t len = 0;

    if (read_file(fx->image, IMAGE_SIZE * 2, &data, &len)
        || len != IMAGE_SIZE) {
        xabort("cannot read back %s", fx->image);
    }
    return data;
}

/* ---- Running the independent clients. ---- */

static bool
have_tool(const char *name)
{
    char *path = xstrdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    bool found = false;

    for (char *dir = strtok(path, ":"); dir && !found;
         dir = strtok(NULL, ":")) {
        char *p = xasprintf("%s/%s", dir, name);
        found = !access(p, X_OK);
        free(p);
    }
    free(path);
    return found;
}

/* Runs argv with stdout in out_path (if not NULL) and stderr passed
 * through; returns its exit status, or -1 if it did not finish within
 * timeout_s seconds (it is then killed) or died of a signal. */
static int
run_tool(char *const argv[], const char *out_path, int timeout_s)
{
    int64_t deadline = time_mono_ms() + timeout_s * 1000;
    int status;
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        xabort("fork: %s", strerror(errno));
    }
    if (!pid) {
        int fd = open(out_path ? out_path : "/dev/null",
                      O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            break;
        }
        if (time_mono_ms() > deadline) {
            fprintf(stderr, "  %s did not finish in %d s\n", argv[0],
                    timeout_s);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(5000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *
read_text(const char *path)
{
    char *data = NULL;
    size_t len;

    if (read_file(path, 1 << 20, &data, &len)) {
        return xstrdup("");
    }
    return data;
}

/* ---- A raw NBD client, for what the real clients never send. ---- */

static int
client_connect(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 5 };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    strcpy(sun.sun_path, path);
    if (fd < 0 || connect(fd, (struct sockaddr *) &sun, sizeof sun)) {
        xabort("connect %s: %s", path, strerror(errno));
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static bool
client_send(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t r = send(fd, c, n, MSG_NOSIGNAL);
        if (r <= 0) {
            return false;
        }
        c += r;
        n -= (size_t) r;
    }
    return true;
}

static bool
client_recv(int fd, void *p, size_t n)
{
    char *c = p;

    while (n > 0) {
        ssize_t r = recv(fd, c, n, 0);
        if (r <= 0) {
            return false;
        }
        c += r;
        n -= (size_t) r;
    }
    return true;
}

/* True if the server closes the connection (within the 5 s timeout),
 * discarding whatever it still sends first. */
static bool
client_sees_close(int fd)
{
    char buf[4096];

    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
            return true;
        }
        if (r < 0) {
            return false;
        }
    }
}

static void
be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t) (v >> 8);
    p[1] = (uint8_t) v;
}

static void
be32(uint8_t *p, uint32_t v)
{
    be16(p, (uint16_t) (v >> 16));
    be16(p + 2, (uint16_t) v);
}

static void
be64(uint8_t *p, uint64_t v)
{
    be32(p, (uint32_t) (v >> 32));
    be32(p + 4, (uint32_t) v);
}

static uint32_t
get32(const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
           | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t
get64(const uint8_t *p)
{
    return (uint64_t) get32(p) << 32 | get32(p + 4);
}

#define IHAVEOPT UINT64_C(0x49484156454f5054)

/* Reads the greeting and sends the client flags. */
static bool
client_greet(int fd, uint32_t client_flags)
{
    uint8_t greeting[18], flags[4];

    if (!client_recv(fd, greeting, sizeof greeting)
        || get64(greeting) != UINT64_C(0x4e42444d41474943)
        || get64(greeting + 8) != IHAVEOPT) {
        return false;
    }
    be32(flags, client_flags);
    return client_send(fd, flags, sizeof flags);
}

static bool
client_send_option(int fd, uint32_t option, const void *data, uint32_t len)
{
    uint8_t hdr[16];

    be64(hdr, IHAVEOPT);
    be32(hdr + 8, option);
    be32(hdr + 12, len);
    return client_send(fd, hdr, sizeof hdr) && client_send(fd, data, len);
}

/* Reads one option reply; returns its type (0 on failure) and fills
 * data (at most cap bytes kept). */
static uint32_t
client_option_reply(int fd, uint32_t option, uint8_t *data, size_t cap,
                    uint32_t *ret_len)
{
    uint8_t hdr[20], scratch[4096];
    uint32_t len;

    if (!client_recv(fd, hdr, sizeof hdr)
        || get64(hdr) != UINT64_C(0x0003e889045565a9)
        || get32(hdr + 8) != option) {
        return 0;
    }
    len = get32(hdr + 16);
    if (len > sizeof scratch || !client_recv(fd, scratch, len)) {
        return 0;
    }
    if (data) {
        memcpy(data, scratch, MIN(len, cap));
    }
    if (ret_len) {
        *ret_len = len;
    }
    return get32(hdr + 12);
}

/* NBD_OPT_GO on export name; returns the final reply type (1: ACK). */
static uint32_t
client_go(int fd, const char *name, uint64_t *ret_size, uint16_t *ret_flags)
{
    size_t n = strlen(name);
    uint8_t data[4 + 256 + 2], reply[64];
    uint32_t type, len;

    be32(data, (uint32_t) n);
    memcpy(data + 4, name, n);
    be16(data + 4 + n, 0);
    if (!client_send_option(fd, 7, data, (uint32_t) (4 + n + 2))) {
        return 0;
    }
    while ((type = client_option_reply(fd, 7, reply, sizeof reply, &len))
           == 3) {
        if (len >= 12 && reply[0] == 0 && reply[1] == 0) {
            if (ret_size) {
                *ret_size = get64(reply + 2);
            }
            if (ret_flags) {
                *ret_flags = (uint16_t) (reply[10] << 8 | reply[11]);
            }
        }
    }
    return type;
}

/* Connects and enters transmission on the default export. */
static int
client_open(const struct fixture *fx)
{
    int fd = client_connect(fx->sock);

    if (!client_greet(fd, 3) || client_go(fd, "", NULL, NULL) != 1) {
        xabort("handshake with the server failed");
    }
    return fd;
}

static bool
client_request(int fd, uint16_t type, uint16_t flags, uint64_t handle,
               uint64_t offset, uint32_t length)
{
    uint8_t req[28];

    be32(req, 0x25609513);
    be16(req + 4, flags);
    be16(req + 6, type);
    be64(req + 8, handle);
    be64(req + 16, offset);
    be32(req + 24, length);
    return client_send(fd, req, sizeof req);
}

/* Reads a simple reply for handle; returns its error, or -1 if the reply
 * did not come or did not match. */
static int
client_reply(int fd, uint64_t handle)
{
    uint8_t reply[16];

    if (!client_recv(fd, reply, sizeof reply) || get32(reply) != 0x67446698
        || get64(reply + 8) != handle) {
        return -1;
    }
    return (int) get32(reply + 4);
}

/* A READ that must succeed; checks the data against the pattern. */
static bool
client_read_ok(int fd, uint64_t offset, uint32_t len)
{
    uint8_t *buf = xmalloc(len);
    bool ok = client_request(fd, 0, 0, 42, offset, len)
              && client_reply(fd, 42) == 0 && client_recv(fd, buf, len);

    for (uint32_t i = 0; ok && i < len; i++) {
        ok = buf[i] == pattern_byte(offset + i);
    }
    free(buf);
    return ok;
}

/* ---- The token bucket, on a fake clock. ---- */

TEST(test_token_bucket_without_rate_never_waits)
{
    struct nbd_token_bucket tb;

    nbd_token_bucket_init(&tb, 0, 0, 0);
    for (int i = 0; i < 1000; i++) {
        CHECK_INT(nbd_token_bucket_take(&tb, 1 << 20, 0), 0);
    }
}

TEST(test_token_bucket_spends_burst_then_paces)
{
    struct nbd_token_bucket tb;

    nbd_token_bucket_init(&tb, 10, 2, 1000);
    CHECK_INT(nbd_token_bucket_take(&tb, 1, 1000), 0);
    CHECK_INT(nbd_token_bucket_take(&tb, 1, 1000), 0);
    /* Empty: each further token costs a tenth of a second, and callers
     * that do not wait queue up behind each other. */
    CHECK_INT(nbd_token_bucket_take(&tb, 1, 1000), 100000);
    CHECK_INT(nbd_token_bucket_take(&tb, 1, 1000), 200000);
    /* After the wait, the debt is paid off. */
    CHECK_INT(nbd_token_bucket_take(&tb, 1, 1000 + 200000), 100000);
}

TEST(test_token_bucket_saves_up_to_burst_only)
{
    struct nbd_token_bucket tb;
    int64_t t = 0;

    nbd_token_bucket_init(&tb, 10, 3, t);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(nbd_token_bucket_take(&tb, 1, t), 0);
    }
    t += 3600 * INT64_C(1000000);      /* an hour idle */
    for (int i = 0; i < 3; i++) {
        CHECK_INT(nbd_token_bucket_take(&tb, 1, t), 0);
    }
    CHECK_INT(nbd_token_bucket_take(&tb, 1, t), 100000);
}

TEST(test_token_bucket_large_request_waits_its_size)
{
    struct nbd_token_bucket tb;

    /* 1000 bytes/s with 100 saved: 1100 bytes go after one second. */
    nbd_token_bucket_init(&tb, 1000, 100, 0);
    CHECK_INT(nbd_token_bucket_take(&tb, 1100, 0), 1000000);
    /* Half a second later, half of the debt remains. */
    CHECK_INT(nbd_token_bucket_take(&tb, 0, 500000), 500000);
}

TEST(test_token_bucket_survives_odd_clocks_and_rates)
{
    struct nbd_token_bucket tb;

    /* Time going backwards refills nothing and breaks nothing. */
    nbd_token_bucket_init(&tb, 10, 1, 5000000);
    CHECK_INT(nbd_token_bucket_take(&tb, 1, 5000000), 0);
    CHECK_INT(nbd_token_bucket_take(&tb, 1, 0), 100000);
    /* The highest rate after a very long idle period: no overflow. */
    nbd_token_bucket_init(&tb, UINT64_C(1) << 40, UINT64_C(1) << 40, 0);
    CHECK_INT(nbd_token_bucket_take(&tb, UINT64_C(1) << 40, 0), 0);
    CHECK(nbd_token_bucket_take(&tb, 1 << 20, INT64_MAX / 2) == 0);
    /* Rates beyond the limit mean no limit; huge amounts are clamped. */
    nbd_token_bucket_init(&tb, UINT64_MAX, 1, 0);
    CHECK_INT(nbd_token_bucket_take(&tb, UINT64_MAX, 0), 0);
    nbd_token_bucket_init(&tb, 1, 1, 0);
    CHECK(nbd_token_bucket_take(&tb, UINT64_MAX, 0) > 0);
}

TEST(test_token_bucket_holds_iops_over_time)
{
    struct nbd_token_bucket tb;
    int64_t t = 0;

    /* A client that always waits as told: 200 requests at 50 per second
     * with a burst of 5 take (200 - 5) / 50 = 3.9 s of fake time. */
    nbd_token_bucket_init(&tb, 50, 5, t);
    for (int i = 0; i < 200; i++) {
        t += nbd_token_bucket_take(&tb, 1, t);
    }
    CHECK(t >= 3880000 && t <= 3920000);
}

/* ---- QoS parameters and request decoding. ---- */

TEST(test_qos_params_follow_ratelimit)
{
    struct nbd_server_config cfg = { 0 };

    CHECK_INT(nbd_qos_apply(&cfg, "ratelimit", "iops", "50"), 0);
    CHECK_INT(cfg.iops, 50);
    CHECK_INT(nbd_qos_apply(&cfg, "ratelimit", "kbps", "100"), 0);
    CHECK_INT(cfg.bytes_per_sec, 102400);
    CHECK_INT(nbd_qos_apply(&cfg, "ratelimit", "bandwidth", "2"), 0);
    CHECK_INT(cfg.bytes_per_sec, 2048);
    CHECK_INT(nbd_qos_apply(&cfg, "ratelimit", "iops", "0"), 0);
    CHECK_INT(cfg.iops, 0);
    CHECK_INT(nbd_qos_apply(&cfg, "ratelimit", "iops", "fast"), -EINVAL);
    CHECK_INT(nbd_qos_apply(&cfg, "ratelimit", "kbps", "-1"), -EINVAL);
    CHECK_INT(nbd_qos_apply(&cfg, "ratelimit", "kbps", ""), -EINVAL);
    CHECK_INT(nbd_qos_apply(&cfg, "ratelimit", "kbps",
                            "99999999999999999999"), -EINVAL);
    CHECK_INT(nbd_qos_apply(&cfg, "ratelimit", "kbps", NULL), -EINVAL);
    CHECK_INT(nbd_qos_apply(&cfg, "ratelimit", "weight", "3"), -ENOENT);
    CHECK_INT(nbd_qos_apply(&cfg, "", "iops", "3"), -ENOENT);
    CHECK_INT(nbd_qos_apply(&cfg, NULL, "iops", "3"), -ENOENT);
    CHECK_INT(nbd_qos_apply(&cfg, "ionice", "sched", "rt"), -ENOTSUP);
    CHECK_INT(cfg.bytes_per_sec, 2048);
}

TEST(test_request_decode_checks_magic)
{
    uint8_t hdr[NBD_REQUEST_SIZE];
    struct nbd_request req;

    be32(hdr, 0x25609513);
    be16(hdr + 4, 1);
    be16(hdr + 6, 6);
    be64(hdr + 8, UINT64_C(0x0102030405060708));
    be64(hdr + 16, UINT64_C(1) << 40);
    be32(hdr + 24, 4096);
    CHECK_INT(nbd_request_decode(hdr, &req), 0);
    CHECK_INT(req.flags, 1);
    CHECK_INT(req.type, 6);
    CHECK(req.handle == UINT64_C(0x0102030405060708));
    CHECK(req.offset == UINT64_C(1) << 40);
    CHECK_INT(req.length, 4096);
    hdr[0] ^= 1;
    CHECK_INT(nbd_request_decode(hdr, &req), -EPROTO);
}

/* ---- The raw device. ---- */

TEST(test_raw_device_reads_writes_and_zeroes)
{
    char dir[] = "/tmp/test-nbd-raw.XXXXXX", path[64];
    struct blockdev *dev = NULL;
    char *err = NULL, *data = NULL;
    uint8_t buf[8192];
    size_t len;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/d.raw", dir);
    write_pattern_file(path, 65536);

    CHECK_INT(blockdev_open_raw(path, false, &dev, &err), 0);
    if (!dev) {
        return;
    }
    CHECK(dev->size == 65536);
    CHECK(!dev->read_only);
    CHECK_INT(dev->ops->read(dev, buf, 100, 1000), 0);
    CHECK(buf[0] == pattern_byte(100) && buf[999] == pattern_byte(1099));
    memset(buf, 0xab, sizeof buf);
    CHECK_INT(dev->ops->write(dev, buf, 4096, 8192), 0);
    CHECK_INT(dev->ops->flush(dev), 0);
    CHECK_INT(dev->ops->write_zeroes(dev, 8192, 4096), 0);
    CHECK_INT(dev->ops->trim(dev, 0, 4096), 0);
    blockdev_close(dev);

    CHECK_INT(read_file(path, 1 << 20, &data, &len), 0);
    CHECK_INT(len, 65536);
    if (data && len == 65536) {
        CHECK(data[0] == 0 && data[4095] == 0);     /* trimmed: a hole */
        CHECK((uint8_t) data[4096] == 0xab && (uint8_t) data[8191] == 0xab);
        CHECK(data[8192] == 0 && data[12287] == 0); /* zeroed */
        CHECK((uint8_t) data[12288] == pattern_byte(12288));
    }
    free(data);

    /* Read-only devices refuse writes; missing files give a message. */
    dev = NULL;
    CHECK_INT(blockdev_open_raw(path, true, &dev, &err), 0);
    if (dev) {
        CHECK(dev->read_only);
        CHECK_INT(dev->ops->write(dev, buf, 0, 512), -EROFS);
        blockdev_close(dev);
    }
    dev = NULL;
    snprintf(path, sizeof path, "%s/missing.raw", dir);
    CHECK_INT(blockdev_open_raw(path, false, &dev, &err), -ENOENT);
    CHECK(dev == NULL);
    CHECK(err && strstr(err, "missing.raw"));
    free(err);
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    CHECK_INT(system(path), 0);
}

/* ---- Independent clients. ---- */

TEST(test_nbdinfo_shows_size_and_export)
{
    struct nbd_server_config cfg = {
        .export_name = "vdi-1234", .description = "a test disk",
    };
    struct fixture fx;
    char out[256], *text, *uri;
    int rc;

    if (!have_tool("nbdinfo")) {
        SKIP("nbdinfo is not installed (Debian: libnbd-bin)");
    }
    fixture_start(&fx, &cfg, false);
    snprintf(out, sizeof out, "%s/nbdinfo.out", fx.dir);

    rc = run_tool((char *[]) { "nbdinfo", fx.uri, NULL }, out, 10);
    CHECK_INT(rc, 0);
    text = read_text(out);
    CHECK(strstr(text, "export=\"vdi-1234\"") != NULL);
    CHECK(strstr(text, "export-size: 4194304") != NULL);
    CHECK(strstr(text, "description: a test disk") != NULL);
    CHECK(strstr(text, "is_read_only: false") != NULL);
    CHECK(strstr(text, "can_flush: true") != NULL);
    CHECK(strstr(text, "can_multi_conn: true") != NULL);
    CHECK(strstr(text, "block_size_maximum: 33554432") != NULL);
    if (test_failures_) {
        fprintf(stderr, "%s", text);
    }
    free(text);

    /* The default export ("") is the same disk; listing shows the name. */
    uri = xasprintf("nbd+unix:///?socket=%s", fx.sock);
    rc = run_tool((char *[]) { "nbdinfo", "--size", uri, NULL }, out, 10);
    free(uri);
    CHECK_INT(rc, 0);
    text = read_text(out);
    CHECK_STR(text, "4194304\n");
    free(text);
    rc = run_tool((char *[]) { "nbdinfo", "--list", fx.uri, NULL }, out, 10);
    CHECK_INT(rc, 0);
    text = read_text(out);
    CHECK(strstr(text, "vdi-1234") != NULL);
    free(text);

    /* Another name is not served. */
    uri = xasprintf("nbd+unix:///other?socket=%s", fx.sock);
    rc = run_tool((char *[]) { "nbdinfo", uri, NULL }, out, 10);
    free(uri);
    CHECK(rc != 0);
    fixture_stop(&fx);
}

TEST(test_qemu_img_convert_copies_the_disk)
{
    struct fixture fx;
    char out[256], *copy = NULL, *image;
    size_t len = 0;
    int rc;

    if (!have_tool("qemu-img")) {
        SKIP("qemu-img is not installed (Debian: qemu-utils)");
    }
    fixture_start(&fx, NULL, false);
    snprintf(out, sizeof out, "%s/copy.raw", fx.dir);
    rc = run_tool((char *[]) { "qemu-img", "convert", "-f", "raw", "-O",
                               "raw", fx.uri, out, NULL }, NULL, 20);
    CHECK_INT(rc, 0);
    CHECK_INT(read_file(out, IMAGE_SIZE * 2, &copy, &len), 0);
    CHECK_INT(len, IMAGE_SIZE);
    image = fixture_read_image(&fx);
    CHECK(copy && len == IMAGE_SIZE && !memcmp(copy, image, IMAGE_SIZE));
    free(copy);
    free(image);
    fixture_stop(&fx);
}

TEST(test_nbdcopy_writes_through_the_server)
{
    struct fixture fx;
    char src[256], *image;
    uint8_t *data;
    int rc;

    if (!have_tool("nbdcopy")) {
        SKIP("nbdcopy is not installed (Debian: libnbd-bin)");
    }
    fixture_start(&fx, NULL, false);
    snprintf(src, sizeof src, "%s/src.raw", fx.dir);
    data = xmalloc(IMAGE_SIZE);
    random_bytes(data, IMAGE_SIZE);
    memset(data + 65536, 0, 1 << 20);   /* zeroes: nbdcopy may use zero */
    CHECK_INT(write_file_atomic(src, data, IMAGE_SIZE, 0644), 0);

    /* nbdcopy uses several connections at once (the server says it may)
     * and flushes at the end. */
    rc = run_tool((char *[]) { "nbdcopy", src, fx.uri, NULL }, NULL, 20);
    CHECK_INT(rc, 0);
    image = fixture_read_image(&fx);
    CHECK(!memcmp(image, data, IMAGE_SIZE));
    free(image);
    free(data);
    fixture_stop(&fx);
}

TEST(test_qemu_io_commands_reach_the_device)
{
    struct fixture fx;
    char out[256], *image, *text;
    int rc;

    if (!have_tool("qemu-io")) {
        SKIP("qemu-io is not installed (Debian: qemu-utils)");
    }
    fixture_start(&fx, NULL, false);
    snprintf(out, sizeof out, "%s/qemu-io.out", fx.dir);
    /* WRITE with FUA, WRITE_ZEROES, TRIM, FLUSH, an unaligned READ. */
    rc = run_tool((char *[]) {
        "qemu-io", "-f", "raw",
        "-c", "write -P 0x5a -f 0 4096",
        "-c", "write -z -u 8192 8192",
        "-c", "discard 65536 65536",
        "-c", "flush",
        "-c", "read -P 0x5a 1 4095",
        fx.uri, NULL }, out, 20);
    CHECK_INT(rc, 0);
    text = read_text(out);
    CHECK(strstr(text, "wrote 4096/4096") != NULL);
    CHECK(strstr(text, "discard 65536/65536") != NULL);
    CHECK(strstr(text, "read 4095/4095") != NULL);
    CHECK(strstr(text, "failed") == NULL);
    if (test_failures_) {
        fprintf(stderr, "%s", text);
    }
    free(text);
    image = fixture_read_image(&fx);
    CHECK(image[0] == 0x5a && image[4095] == 0x5a);
    CHECK((uint8_t) image[4096] == pattern_byte(4096));
    CHECK(image[8192] == 0 && image[16383] == 0);
    CHECK((uint8_t) image[16384] == pattern_byte(16384));
    free(image);
    fixture_stop(&fx);
}

TEST(test_read_only_export_refuses_writes)
{
    struct nbd_server_config cfg = { .read_only = true };
    struct fixture fx;
    char src[256], out[256], *image, *text;
    uint8_t payload[512] = { 0 };
    int fd, rc;

    fixture_start(&fx, &cfg, false);
    snprintf(src, sizeof src, "%s/src.raw", fx.dir);
    snprintf(out, sizeof out, "%s/out", fx.dir);

    if (have_tool("nbdinfo")) {
        rc = run_tool((char *[]) { "nbdinfo", fx.uri, NULL }, out, 10);
        CHECK_INT(rc, 0);
        text = read_text(out);
        CHECK(strstr(text, "is_read_only: true") != NULL);
        CHECK(strstr(text, "can_trim: false") != NULL);
        free(text);
    }
    if (have_tool("nbdcopy")) {
        uint8_t *zeros = xcalloc(1, IMAGE_SIZE);
        CHECK_INT(write_file_atomic(src, zeros, IMAGE_SIZE, 0644), 0);
        free(zeros);
        rc = run_tool((char *[]) { "nbdcopy", src, fx.uri, NULL }, NULL, 20);
        CHECK(rc != 0);
    }
    if (have_tool("qemu-io")) {
        rc = run_tool((char *[]) { "qemu-io", "-f", "raw", "-c",
                                   "write -P 1 0 512", fx.uri, NULL },
                      out, 20);
        text = read_text(out);
        CHECK(rc != 0 || !strstr(text, "wrote"));
        free(text);
    }

    /* On the wire: EPERM for WRITE (payload consumed), WRITE_ZEROES and
     * TRIM; the connection goes on. */
    fd = client_open(&fx);
    CHECK(client_request(fd, 1, 0, 1, 0, sizeof payload));
    CHECK(client_send(fd, payload, sizeof payload));
    CHECK_INT(client_reply(fd, 1), 1);
    CHECK(client_request(fd, 6, 0, 2, 0, 4096));
    CHECK_INT(client_reply(fd, 2), 1);
    CHECK(client_request(fd, 4, 0, 3, 0, 4096));
    CHECK_INT(client_reply(fd, 3), 1);
    CHECK(client_request(fd, 3, 0, 4, 0, 0));
    CHECK_INT(client_reply(fd, 4), 0);
    CHECK(client_read_ok(fd, 0, 4096));
    close(fd);

    image = fixture_read_image(&fx);
    CHECK((uint8_t) image[0] == pattern_byte(0)
          && (uint8_t) image[IMAGE_SIZE - 1] == pattern_byte(IMAGE_SIZE - 1));
    free(image);
    fixture_stop(&fx);
}

/* A device opened read-only makes the export read-only too. */
TEST(test_read_only_device_gives_read_only_export)
{
    struct fixture fx;
    uint16_t flags = 0;
    int fd;

    fixture_start(&fx, NULL, true);
    fd = client_connect(fx.sock);
    CHECK(client_greet(fd, 1));
    CHECK_INT(client_go(fd, "", NULL, &flags), 1);
    CHECK(flags & 2);
    close(fd);
    fixture_stop(&fx);
}

/* ---- Protocol corners, from a raw socket. ---- */

TEST(test_options_are_answered_per_protocol)
{
    struct nbd_server_config cfg = { .export_name = "disk" };
    struct fixture fx;
    uint8_t reply[64], data[64];
    uint32_t len;
    uint64_t size = 0;
    int fd;

    fixture_start(&fx, &cfg, false);
    fd = client_connect(fx.sock);
    CHECK(client_greet(fd, 3));

    /* LIST: one export, then ACK; with data: invalid. */
    CHECK(client_send_option(fd, 3, NULL, 0));
    CHECK_INT(client_option_reply(fd, 3, reply, sizeof reply, &len), 2);
    CHECK(len == 8 && get32(reply) == 4 && !memcmp(reply + 4, "disk", 4));
    CHECK_INT(client_option_reply(fd, 3, NULL, 0, NULL), 1);
    CHECK(client_send_option(fd, 3, "x", 1));
    CHECK_INT(client_option_reply(fd, 3, NULL, 0, NULL), 0x80000003);

    /* Unsupported options: STARTTLS, STRUCTURED_REPLY, made-up ones. */
    CHECK(client_send_option(fd, 5, NULL, 0));
    CHECK_INT(client_option_reply(fd, 5, NULL, 0, NULL), 0x80000001);
    CHECK(client_send_option(fd, 8, NULL, 0));
    CHECK_INT(client_option_reply(fd, 8, NULL, 0, NULL), 0x80000001);
    CHECK(client_send_option(fd, 0xdead, "abc", 3));
    CHECK_INT(client_option_reply(fd, 0xdead, NULL, 0, NULL), 0x80000001);

    /* INFO with lengths that do not add up, with a name longer than the
     * data, for an unknown export. */
    be32(data, 4);
    memcpy(data + 4, "disk", 4);
    be16(data + 8, 3);          /* claims 3 requests, sends none */
    CHECK(client_send_option(fd, 6, data, 10));
    CHECK_INT(client_option_reply(fd, 6, NULL, 0, NULL), 0x80000003);
    be32(data, 1000);
    CHECK(client_send_option(fd, 6, data, 10));
    CHECK_INT(client_option_reply(fd, 6, NULL, 0, NULL), 0x80000003);
    CHECK(client_send_option(fd, 6, data, 3));
    CHECK_INT(client_option_reply(fd, 6, NULL, 0, NULL), 0x80000003);
    CHECK_INT(client_go(fd, "nope", NULL, NULL), 0x80000006);

    /* An option too long to read is skipped and refused. */
    {
        uint8_t *big = xcalloc(1, 100000);
        CHECK(client_send_option(fd, 6, big, 100000));
        CHECK_INT(client_option_reply(fd, 6, NULL, 0, NULL), 0x80000009);
        free(big);
    }

    /* And the connection still works. */
    CHECK_INT(client_go(fd, "disk", &size, NULL), 1);
    CHECK(size == IMAGE_SIZE);
    CHECK(client_read_ok(fd, IMAGE_SIZE - 4096, 4096));
    close(fd);

    /* NBD_OPT_EXPORT_NAME, with and without the 124 zero bytes. */
    for (uint32_t flags = 1; flags <= 3; flags += 2) {
        uint8_t export_reply[134];
        size_t n = flags == 3 ? 10 : 134;
        fd = client_connect(fx.sock);
        CHECK(client_greet(fd, flags));
        CHECK(client_send_option(fd, 1, "disk", 4));
        CHECK(client_recv(fd, export_reply, n));
        CHECK(get64(export_reply) == IMAGE_SIZE);
        CHECK(client_read_ok(fd, 12345, 1000));
        CHECK(client_request(fd, 2, 0, 9, 0, 0));     /* DISC */
        CHECK(client_sees_close(fd));
        close(fd);
    }

    /* ABORT gets an ACK and the end of the connection. */
    fd = client_connect(fx.sock);
    CHECK(client_greet(fd, 1));
    CHECK(client_send_option(fd, 2, NULL, 0));
    CHECK_INT(client_option_reply(fd, 2, NULL, 0, NULL), 1);
    CHECK(client_sees_close(fd));
    close(fd);
    fixture_stop(&fx);
}

TEST(test_bad_requests_get_errors_and_the_connection_goes_on)
{
    struct fixture fx;
    uint8_t *big;
    int fd;

    fixture_start(&fx, NULL, false);
    fd = client_open(&fx);

    /* Reads past the end, wrapping around, too long: EINVAL, no data. */
    CHECK(client_request(fd, 0, 0, 1, IMAGE_SIZE - 100, 200));
    CHECK_INT(client_reply(fd, 1), 22);
    CHECK(client_request(fd, 0, 0, 2, UINT64_MAX - 10, 4096));
    CHECK_INT(client_reply(fd, 2), 22);
    CHECK(client_request(fd, 0, 0, 3, 0, NBD_MAX_REQUEST + 1));
    CHECK_INT(client_reply(fd, 3), 22);
    CHECK(client_request(fd, 0, 0, 4, IMAGE_SIZE, 1));
    CHECK_INT(client_reply(fd, 4), 22);
    /* Unknown command, unknown flags, a flag for another command. */
    CHECK(client_request(fd, 99, 0, 5, 0, 0));
    CHECK_INT(client_reply(fd, 5), 22);
    CHECK(client_request(fd, 0, 0x100, 6, 0, 512));
    CHECK_INT(client_reply(fd, 6), 22);
    CHECK(client_request(fd, 0, 2, 7, 0, 512));       /* NO_HOLE on READ */
    CHECK_INT(client_reply(fd, 7), 22);
    /* Trim past the end: EINVAL; writes and zeroes past it: ENOSPC. */
    CHECK(client_request(fd, 4, 0, 8, IMAGE_SIZE - 1, 2));
    CHECK_INT(client_reply(fd, 8), 22);
    CHECK(client_request(fd, 6, 0, 9, IMAGE_SIZE, 1));
    CHECK_INT(client_reply(fd, 9), 28);
    big = xcalloc(1, 40 << 20);
    CHECK(client_request(fd, 1, 0, 10, IMAGE_SIZE - 1, 2));
    CHECK(client_send(fd, big, 2));
    CHECK_INT(client_reply(fd, 10), 28);
    /* A 40 MiB WRITE: refused, its payload read and dropped. */
    CHECK(client_request(fd, 1, 0, 11, 0, 40 << 20));
    CHECK(client_send(fd, big, 40 << 20));
    CHECK_INT(client_reply(fd, 11), 22);
    free(big);
    /* Zero-length requests are harmless. */
    CHECK(client_request(fd, 0, 0, 12, 0, 0));
    CHECK_INT(client_reply(fd, 12), 0);
    CHECK(client_request(fd, 1, 0, 13, 0, 0));
    CHECK_INT(client_reply(fd, 13), 0);
    /* A maximum-size read at the very end of the disk works. */
    CHECK(client_read_ok(fd, 0, IMAGE_SIZE));
    CHECK(client_read_ok(fd, IMAGE_SIZE - 1, 1));
    /* Pipelined requests come back in order. */
    for (uint64_t h = 100; h < 110; h++) {
        CHECK(client_request(fd, 3, 0, h, 0, 0));
    }
    for (uint64_t h = 100; h < 110; h++) {
        CHECK_INT(client_reply(fd, h), 0);
    }

    /* A bad request magic ends the connection. */
    CHECK(client_send(fd, "garbage that is 28 bytes lo", 28));
    CHECK(client_sees_close(fd));
    close(fd);
    fixture_stop(&fx);
}

/* Connections that break the protocol in every phase; after each one the
 * server must still serve a good client. */
TEST(test_hostile_clients_do_not_hurt_the_server)
{
    struct nbd_server_config cfg = { .handshake_timeout_ms = 300 };
    struct fixture fx;
    uint8_t junk[4096];
    int fd;

    fixture_start(&fx, &cfg, false);

    /* Random bytes right away. */
    for (int i = 0; i < 20; i++) {
        fd = client_connect(fx.sock);
        random_bytes(junk, sizeof junk);
        client_send(fd, junk, (size_t) (i * 97 % sizeof junk) + 1);
        CHECK(client_sees_close(fd));
        close(fd);
    }
    /* Unknown client flags. */
    fd = client_connect(fx.sock);
    CHECK(client_greet(fd, 0x80000001));
    CHECK(client_sees_close(fd));
    close(fd);
    /* A bad option magic. */
    fd = client_connect(fx.sock);
    CHECK(client_greet(fd, 1));
    CHECK(client_send(fd, junk, 16));
    CHECK(client_sees_close(fd));
    close(fd);
    /* An option claiming 4 GiB of data. */
    fd = client_connect(fx.sock);
    CHECK(client_greet(fd, 1));
    {
        uint8_t hdr[16];
        be64(hdr, IHAVEOPT);
        be32(hdr + 8, 6);
        be32(hdr + 12, 0xffffffff);
        CHECK(client_send(fd, hdr, sizeof hdr));
    }
    CHECK(client_sees_close(fd));
    close(fd);
    /* EXPORT_NAME for a name that does not exist: only a close can say
     * no. */
    fd = client_connect(fx.sock);
    CHECK(client_greet(fd, 1));
    CHECK(client_send_option(fd, 1, "nope", 4));
    CHECK(client_sees_close(fd));
    close(fd);
    /* Silence during the handshake: cut off after the time limit. */
    {
        int64_t start = time_mono_ms();
        fd = client_connect(fx.sock);
        CHECK(client_greet(fd, 1));
        CHECK(client_sees_close(fd));
        CHECK(time_mono_ms() - start < 4000);
        close(fd);
    }
    /* Hanging up in the middle of a WRITE payload, of a request header,
     * and with a read reply not yet taken. */
    fd = client_open(&fx);
    CHECK(client_request(fd, 1, 0, 1, 0, 65536));
    CHECK(client_send(fd, junk, 1000));
    close(fd);
    fd = client_open(&fx);
    CHECK(client_send(fd, junk, 10));
    close(fd);
    fd = client_open(&fx);
    CHECK(client_request(fd, 0, 0, 1, 0, 4 << 20));
    close(fd);
    /* Transmission is not subject to the handshake limit: an idle
     * connection stays. */
    fd = client_open(&fx);
    usleep(600 * 1000);
    CHECK(client_read_ok(fd, 0, 512));
    close(fd);

    /* The server is fine. */
    fd = client_open(&fx);
    CHECK(client_read_ok(fd, 1 << 20, 1 << 20));
    close(fd);
    fixture_stop(&fx);
}

TEST(test_client_limit_refuses_extra_connections)
{
    struct nbd_server_config cfg = { .max_clients = 2 };
    struct fixture fx;
    int a, b, c;

    fixture_start(&fx, &cfg, false);
    a = client_open(&fx);
    b = client_open(&fx);
    c = client_connect(fx.sock);
    CHECK(client_sees_close(c));
    close(c);
    /* Once one leaves, a new client gets in. */
    close(a);
    usleep(100 * 1000);
    c = client_open(&fx);
    CHECK(client_read_ok(c, 0, 4096));
    CHECK(client_read_ok(b, 4096, 4096));
    close(b);
    close(c);
    fixture_stop(&fx);
}

/* ---- QoS, loosely: limits only make things slower, so lower bounds on
 * the elapsed time are safe on any machine. ---- */

TEST(test_iops_limit_slows_requests)
{
    struct nbd_server_config cfg = { .iops = 50 };
    struct fixture fx;
    int64_t start, elapsed;
    int fd;

    fixture_start(&fx, &cfg, false);
    fd = client_open(&fx);
    start = time_mono_ms();
    /* 40 reads at 50/s with a burst of 5: about 0.7 s. */
    for (int i = 0; i < 40; i++) {
        CHECK(client_read_ok(fd, (uint64_t) i * 4096, 4096));
    }
    elapsed = time_mono_ms() - start;
    printf("# 40 reads at iops=50 took %"PRId64" ms\n", elapsed);
    CHECK(elapsed >= 500);
    close(fd);
    fixture_stop(&fx);
}

TEST(test_bandwidth_limit_slows_transfers)
{
    struct nbd_server_config cfg = { .bytes_per_sec = 1 << 20 };
    struct fixture fx;
    int64_t start, elapsed;
    int fd;

    fixture_start(&fx, &cfg, false);
    fd = client_open(&fx);
    start = time_mono_ms();
    /* 1 MiB at 1 MiB/s with a burst of 100 KiB: about 0.9 s. */
    for (int i = 0; i < 16; i++) {
        CHECK(client_read_ok(fd, (uint64_t) i * 65536, 65536));
    }
    elapsed = time_mono_ms() - start;
    printf("# 1 MiB at 1 MiB/s took %"PRId64" ms\n", elapsed);
    CHECK(elapsed >= 600);
    close(fd);
    fixture_stop(&fx);
}

/* ---- Shutdown. ---- */

TEST(test_stop_ends_idle_and_throttled_connections_promptly)
{
    struct nbd_server_config cfg = { .iops = 1 };
    struct fixture fx;
    int idle, busy;
    int64_t took;

    fixture_start(&fx, &cfg, false);
    idle = client_open(&fx);
    busy = client_open(&fx);
    /* Four requests at one per second: the last ones wait seconds. */
    for (uint64_t h = 1; h <= 4; h++) {
        CHECK(client_request(busy, 3, 0, h, 0, 0));
    }
    usleep(200 * 1000);
    took = fixture_stop(&fx);
    printf("# stop took %"PRId64" ms\n", took);
    CHECK(took < 1500);
    CHECK(client_sees_close(idle));
    CHECK(client_sees_close(busy));
    close(idle);
    close(busy);
}

TEST(test_serve_stops_on_sigterm)
{
    char dir[] = "/tmp/test-nbd-serve.XXXXXX", image[64], path[64], cmd[96];
    int64_t deadline;
    struct stat st;
    int status = 0;
    pid_t pid;

    /* nbd_server_serve() in a child process, as a program uses it. */
    CHECK(mkdtemp(dir) != NULL);
    snprintf(image, sizeof image, "%s/d.raw", dir);
    snprintf(path, sizeof path, "%s/s.sock", dir);
    write_pattern_file(image, 65536);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (!pid) {
        struct blockdev *dev;
        char *err;
        int lfd;
        if (blockdev_open_raw(image, false, &dev, &err)
            || nbd_listen_unix(path, &lfd)) {
            _exit(3);
        }
        _exit(nbd_server_serve(lfd, dev, NULL) ? 4 : 0);
    }
    CHECK(pid > 0);
    if (pid <= 0) {
        return;
    }
    deadline = time_mono_ms() + 5000;
    while (stat(path, &st) && time_mono_ms() < deadline) {
        usleep(10000);
    }
    /* A connected client does not hold the shutdown up. */
    {
        int fd = client_connect(path);
        CHECK(client_greet(fd, 1));
        CHECK_INT(client_go(fd, "", NULL, NULL), 1);
        kill(pid, SIGTERM);
        CHECK(client_sees_close(fd));
        close(fd);
    }
    while (waitpid(pid, &status, WNOHANG) == 0 && time_mono_ms() < deadline) {
        usleep(10000);
    }
    if (time_mono_ms() >= deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        CHECK(!"nbd_server_serve did not stop on SIGTERM");
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK_INT(system(cmd), 0);
}

TEST(test_listen_replaces_stale_socket_only)
{
    char dir[] = "/tmp/test-nbd-sock.XXXXXX", path[64], cmd[96];
    int fd1 = -1, fd2 = -1;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/s.sock", dir);
    CHECK_INT(nbd_listen_unix(path, &fd1), 0);
    /* Live: refused. */
    CHECK_INT(nbd_listen_unix(path, &fd2), -EADDRINUSE);
    /* Stale (its server closed without removing it): replaced. */
    close(fd1);
    CHECK_INT(nbd_listen_unix(path, &fd2), 0);
    close(fd2);
    /* Not a socket: left alone. */
    unlink(path);
    CHECK_INT(write_file_atomic(path, "x", 1, 0644), 0);
    CHECK_INT(nbd_listen_unix(path, &fd2), -EADDRINUSE);
    CHECK_INT(nbd_listen_unix("/tmp/this/path/is/far/too/long/for/a/unix/"
                              "socket/address/which/holds/only/one/hundred/"
                              "and/eight/bytes/x.sock", &fd2),
              -ENAMETOOLONG);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK_INT(system(cmd), 0);
}

/* ---- Pause and resume (xapi-tapdisk's pause/unpause). ---- */

/* True if fd has nothing to read for ms milliseconds: a held request. */
static bool
client_hears_nothing(int fd, int ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    return poll(&pfd, 1, ms) == 0;
}

static struct blockdev *
open_filled_raw(const struct fixture *fx, const char *name, size_t size,
                uint8_t byte, bool read_only)
{
    char *path = xasprintf("%s/%s", fx->dir, name);
    uint8_t *data = xmalloc(size);
    struct blockdev *dev = NULL;
    char *err = NULL;

    memset(data, byte, size);
    if (write_file_atomic(path, data, size, 0644)
        || blockdev_open_raw(path, read_only, &dev, &err)) {
        xabort("cannot make %s: %s", path, err ? err : "write failed");
    }
    free(data);
    free(path);
    return dev;
}

TEST(test_pause_holds_requests_and_resume_serves_them_from_the_new_device)
{
    struct fixture fx;
    struct blockdev *dev2;
    uint8_t buf[4096];
    bool all_42 = true;
    int fd;

    fixture_start(&fx, NULL, false);
    fd = client_open(&fx);
    CHECK(client_read_ok(fd, 0, 4096));

    CHECK_INT(nbd_server_pause(fx.srv), 0);
    CHECK(nbd_server_paused(fx.srv));
    /* Paused, the server no longer touches the device: it can go. */
    blockdev_close(fx.dev);
    fx.dev = NULL;

    /* A request while paused is held, not refused; the connection stays. */
    CHECK(client_request(fd, 0, 0, 7, 8192, sizeof buf));
    CHECK(client_hears_nothing(fd, 300));
    /* So is a client connecting now, once it reaches a request. */
    dev2 = open_filled_raw(&fx, "new-leaf.raw", IMAGE_SIZE, 0x42, false);
    CHECK_INT(nbd_server_resume(fx.srv, dev2), 0);
    fx.dev = dev2;
    CHECK(!nbd_server_paused(fx.srv));

    CHECK_INT(client_reply(fd, 7), 0);
    CHECK(client_recv(fd, buf, sizeof buf));
    for (size_t i = 0; i < sizeof buf; i++) {
        all_42 = all_42 && buf[i] == 0x42;
    }
    CHECK(all_42);
    close(fd);
    fixture_stop(&fx);
}

TEST(test_resume_refuses_smaller_or_read_only_devices)
{
    struct fixture fx;
    struct blockdev *small, *ro, *ok;

    fixture_start(&fx, NULL, false);
    small = open_filled_raw(&fx, "small.raw", IMAGE_SIZE / 2, 1, false);
    ro = open_filled_raw(&fx, "ro.raw", IMAGE_SIZE, 1, true);
    ok = open_filled_raw(&fx, "ok.raw", IMAGE_SIZE * 2, 1, false);

    CHECK_INT(nbd_server_resume(fx.srv, ok), -EALREADY);
    CHECK_INT(nbd_server_pause(fx.srv), 0);
    /* Pausing again changes nothing. */
    CHECK_INT(nbd_server_pause(fx.srv), 0);
    CHECK_INT(nbd_server_resume(fx.srv, small), -EINVAL);
    CHECK_INT(nbd_server_resume(fx.srv, ro), -EROFS);
    CHECK(nbd_server_paused(fx.srv));
    /* A larger one is fine (an online resize). */
    CHECK_INT(nbd_server_resume(fx.srv, ok), 0);
    blockdev_close(fx.dev);
    fx.dev = ok;
    blockdev_close(small);
    blockdev_close(ro);
    fixture_stop(&fx);
}

/* A device whose flush fails: a pause must not leave the server holding
 * writes it could not make durable. */
struct failing_dev {
    struct blockdev dev;
    int flushes;
};

static int
failing_read(struct blockdev *dev, void *buf, uint64_t offset, size_t len)
{
    (void) dev;
    (void) offset;
    memset(buf, 0, len);
    return 0;
}

static int
failing_write(struct blockdev *dev, const void *buf, uint64_t offset,
              size_t len)
{
    (void) dev;
    (void) buf;
    (void) offset;
    (void) len;
    return 0;
}

static int
failing_flush(struct blockdev *dev)
{
    ((struct failing_dev *) dev)->flushes++;
    return -EIO;
}

static void
failing_close(struct blockdev *dev)
{
    (void) dev;
}

TEST(test_pause_fails_and_serves_on_when_the_flush_fails)
{
    static const struct blockdev_ops ops = {
        .read = failing_read, .write = failing_write,
        .flush = failing_flush, .close = failing_close,
    };
    struct failing_dev fd = { .dev = { .ops = &ops, .size = 1 << 20 } };
    struct nbd_server *srv = NULL;

    CHECK_INT(nbd_server_create(&fd.dev, NULL, &srv), 0);
    CHECK_INT(nbd_server_pause(srv), -EIO);
    CHECK_INT(fd.flushes, 1);
    CHECK(!nbd_server_paused(srv));
    nbd_server_destroy(srv);
}

TEST(test_stop_while_paused_drops_held_requests_promptly)
{
    struct fixture fx;
    int64_t took;
    int fd;

    fixture_start(&fx, NULL, false);
    fd = client_open(&fx);
    CHECK_INT(nbd_server_pause(fx.srv), 0);
    CHECK(client_request(fd, 0, 0, 9, 0, 4096));
    CHECK(client_hears_nothing(fd, 100));
    took = fixture_stop(&fx);
    printf("# stop while paused took %"PRId64" ms\n", took);
    CHECK(took < 1500);
    CHECK(client_sees_close(fd));
    close(fd);
}
