/* test-tapdisk-ctl.c — tests of block server control (storage/tapdisk-ctl.c)
 * driving real xapi-tapdisk processes (storage/tapdisk.c) over VHD images.
 *
 * Each test starts a server on a fresh VHD in a temp directory and checks
 * what it serves with independent clients: qemu-io and qemu-img from QEMU,
 * nbdinfo from libnbd.  The program is $XAPI_TAPDISK, or the build tree's
 * ($XAPI_BUILD_DIR, set by tests/run-tests.sh, or found from this test's
 * own path).  Tests that need a missing tool skip with a message. */
#include <config.h>
#define TEST_MAIN
#include "test.h"

#include "storage/tapdisk-ctl.h"
#include "storage/vhd.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DISK_SIZE (32u << 20)

/* ---- Fixture: a temp dir with a VHD. ---- */

struct fixture {
    char dir[64];
    char sock[128];
    char leaf[128];
    char base[128];
    char uri[256];
};

static bool
have_tool(const char *name)
{
    char *cmd = xasprintf("command -v %s >/dev/null 2>&1", name);
    bool ok = !system(cmd);
    free(cmd);
    return ok;
}

/* Points XAPI_TAPDISK at the build tree's program; false if there is
 * none. */
static bool
find_tapdisk(void)
{
    const char *build = getenv("XAPI_BUILD_DIR");
    char self[PATH_MAX], *path;
    ssize_t n;
    bool ok;

    if (getenv("XAPI_TAPDISK")) {
        return true;
    }
    if (build) {
        path = xasprintf("%s/storage/xapi-tapdisk", build);
    } else {
        n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) {
            return false;
        }
        self[n] = '\0';
        *strrchr(self, '/') = '\0';
        path = xasprintf("%s/../../storage/xapi-tapdisk", self);
    }
    ok = !access(path, X_OK);
    if (ok) {
        setenv("XAPI_TAPDISK", path, 1);
    }
    free(path);
    return ok;
}

static bool
fixture_init(struct fixture *fx)
{
    struct vhd_create_opts opts = { .virtual_size = DISK_SIZE };
    char *err = NULL;

    if (!find_tapdisk() || !have_tool("qemu-io") || !have_tool("qemu-img")
        || !have_tool("nbdinfo")) {
        return false;
    }
    memset(fx, 0, sizeof *fx);
    strcpy(fx->dir, "/tmp/test-tapdisk-ctl.XXXXXX");
    if (!mkdtemp(fx->dir)) {
        xabort("mkdtemp: %s", strerror(errno));
    }
    snprintf(fx->sock, sizeof fx->sock, "%s/vdi.sock", fx->dir);
    snprintf(fx->leaf, sizeof fx->leaf, "%s/vdi.vhd", fx->dir);
    snprintf(fx->base, sizeof fx->base, "%s/base.vhd", fx->dir);
    snprintf(fx->uri, sizeof fx->uri, "nbd+unix:///?socket=%s", fx->sock);
    if (vhd_create(fx->leaf, &opts, &err)) {
        xabort("vhd_create: %s", err);
    }
    return true;
}

static void
fixture_cleanup(struct fixture *fx)
{
    char *cmd = xasprintf("rm -rf '%s'", fx->dir);
    if (system(cmd)) {
        fprintf(stderr, "  could not remove %s\n", fx->dir);
    }
    free(cmd);
}

static struct tapdisk *
start(const struct fixture *fx, uint64_t iops)
{
    struct tapdisk_params p = {
        .socket_path = fx->sock, .image_path = fx->leaf, .format = "vhd",
        .iops = iops,
    };
    struct tapdisk *t = NULL;
    char *err = NULL;
    int rc = tapdisk_start(&p, &t, &err);

    if (rc) {
        fprintf(stderr, "  tapdisk_start: %s\n", err);
        free(err);
        return NULL;
    }
    return t;
}

/* ---- Running clients. ---- */

/* Runs cmd with sh in the background, its output to out_path.  Returns
 * its pid. */
static pid_t
spawn_sh(const char *cmd, const char *out_path)
{
    pid_t pid = fork();

    if (pid < 0) {
        xabort("fork: %s", strerror(errno));
    }
    if (!pid) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execl("/bin/sh", "sh", "-c", cmd, (char *) NULL);
        _exit(127);
    }
    return pid;
}

/* Waits up to ms for pid; returns its exit status, -1 on a signal, or -2
 * if it is still running. */
static int
wait_exit(pid_t pid, int ms)
{
    int64_t deadline = time_mono_ms() + ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        if (time_mono_ms() >= deadline) {
            return -2;
        }
        usleep(10 * 1000);
    }
}

static int
run(const char *fmt, ...) PRINTF_FMT(1, 2);

static int
run(const char *fmt, ...)
{
    struct ds ds = DS_EMPTY;
    va_list ap;
    char *cmd;
    int status;

    va_start(ap, fmt);
    ds_put_vfmt(&ds, fmt, ap);
    va_end(ap);
    cmd = ds_steal(&ds);
    status = system(cmd);
    if (status) {
        fprintf(stderr, "  command failed (%d): %s\n", status, cmd);
    }
    free(cmd);
    return status;
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

/* Byte i of the data the writer tests put at chunk i. */
static int
chunk_pattern(int i)
{
    return i % 250 + 1;
}

/* A qemu-io command line writing n chunks of 64 KiB, chunk i filled with
 * chunk_pattern(i), one after another on one connection. */
static char *
writer_command(const struct fixture *fx, int n)
{
    struct ds cmd = DS_EMPTY;

    ds_put_fmt(&cmd, "qemu-io -f raw");
    for (int i = 0; i < n; i++) {
        ds_put_fmt(&cmd, " -c 'write -P %d %d 64k'", chunk_pattern(i),
                   i * 65536);
    }
    ds_put_fmt(&cmd, " '%s'", fx->uri);
    return ds_steal(&cmd);
}

/* Converts the image at path (alone, not its parents) to raw with
 * qemu-img, an independent VHD reader.  Returns the data or NULL. */
static char *
qemu_read_vhd(const struct fixture *fx, const char *path)
{
    char *raw = xasprintf("%s/check.raw", fx->dir);
    char *data = NULL;
    size_t len = 0;

    if (run("qemu-img convert -f vpc -O raw '%s' '%s'", path, raw)
        || read_file(raw, 2 * DISK_SIZE, &data, &len) || len < DISK_SIZE) {
        free(data);
        data = NULL;
    }
    unlink(raw);
    free(raw);
    return data;
}

static bool
chunk_is(const char *data, int chunk, int value)
{
    for (size_t i = 0; i < 65536; i++) {
        if ((uint8_t) data[(size_t) chunk * 65536 + i] != value) {
            return false;
        }
    }
    return true;
}

/* Checks that the chain at leaf (with base as its parent, or NULL for a
 * single image) reads chunk_pattern(i) in each of the first n 64 KiB
 * chunks and zeros after them.  qemu reads one VHD at a time (it does
 * not follow differencing disks), so a chunk must be in the leaf, or
 * absent from the leaf and in the base.  Returns how many chunks came
 * from the base. */
static int
check_chunks(const struct fixture *fx, const char *leaf, const char *base,
             int n)
{
    char *leaf_data = qemu_read_vhd(fx, leaf);
    char *base_data = base ? qemu_read_vhd(fx, base) : NULL;
    int bad = 0, from_base = 0;

    CHECK(leaf_data != NULL);
    CHECK(!base || base_data != NULL);
    if (!leaf_data || (base && !base_data)) {
        goto out;
    }
    for (int c = 0; c < (int) (DISK_SIZE / 65536) && bad < 5; c++) {
        int want = c < n ? chunk_pattern(c) : 0;
        if (chunk_is(leaf_data, c, want)) {
            continue;
        }
        if (base_data && chunk_is(leaf_data, c, 0)
            && chunk_is(base_data, c, want)) {
            from_base++;
            continue;
        }
        fprintf(stderr, "  chunk %d does not read %d\n", c, want);
        bad++;
    }
    CHECK_INT(bad, 0);
out:
    free(leaf_data);
    free(base_data);
    return from_base;
}

/* ---- Tests. ---- */

TEST(test_program_is_found_and_uri_names_the_socket)
{
    struct fixture fx;
    struct tapdisk_params p = { 0 };
    struct tapdisk *t;
    char *err = NULL;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    CHECK_STR(tapdisk_program(), getenv("XAPI_TAPDISK"));

    /* An export name and a socket path with characters a URI escapes. */
    p.socket_path = fx.sock;
    p.image_path = fx.leaf;
    p.format = "vhd";
    p.export_name = "vdi 1";
    p.description = "a test disk";
    CHECK_INT(tapdisk_start(&p, &t, &err), 0);
    if (err) {
        fprintf(stderr, "  %s\n", err);
        free(err);
        err = NULL;
    } else {
        char *expect = xasprintf("nbd+unix:///vdi%%201?socket=%s", fx.sock);
        CHECK_STR(tapdisk_uri(t), expect);
        CHECK_STR(tapdisk_socket(t), fx.sock);
        CHECK(tapdisk_pid(t) > 0);
        /* Its own process group: a ^C for the daemon does not reach it. */
        CHECK_INT(getpgid(tapdisk_pid(t)), tapdisk_pid(t));
        CHECK_INT(run("nbdinfo '%s' | grep -q 'a test disk'", tapdisk_uri(t)),
                  0);
        tapdisk_stop(t);
        free(expect);
    }

    /* Bad parameters are refused before anything runs. */
    p.format = "qcow2";
    CHECK_INT(tapdisk_start(&p, &t, &err), -EINVAL);
    CHECK(err != NULL);
    free(err);
    fixture_cleanup(&fx);
}

TEST(test_start_failure_carries_the_servers_message)
{
    struct fixture fx;
    struct tapdisk_params p = { .format = "vhd" };
    struct tapdisk *t = NULL;
    char *err = NULL;
    int rc;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    p.socket_path = fx.sock;
    p.image_path = fx.base;     /* does not exist */
    rc = tapdisk_start(&p, &t, &err);
    CHECK(rc < 0);
    CHECK(t == NULL);
    CHECK(err && strstr(err, "No such file"));
    free(err);
    err = NULL;
    /* No child is left behind, not even a zombie. */
    CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);

    p.program = "/nonexistent/xapi-tapdisk";
    p.image_path = fx.leaf;
    CHECK(tapdisk_start(&p, &t, &err) < 0);
    CHECK(err && strstr(err, "/nonexistent/xapi-tapdisk"));
    free(err);
    fixture_cleanup(&fx);
}

TEST(test_clients_read_and_write_and_stop_removes_the_socket)
{
    struct fixture fx;
    struct tapdisk *t;
    char *cmd;
    pid_t pid;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    t = start(&fx, 0);
    CHECK(t != NULL);
    if (!t) {
        fixture_cleanup(&fx);
        return;
    }
    CHECK_INT(run("test \"$(nbdinfo --size '%s')\" = %u", fx.uri,
                  DISK_SIZE), 0);
    cmd = writer_command(&fx, 20);
    CHECK_INT(run("%s >/dev/null", cmd), 0);
    free(cmd);
    CHECK_INT(run("qemu-io -f raw -c 'read -P 3 131072 64k' '%s' "
                  ">/dev/null", fx.uri), 0);
    pid = tapdisk_pid(t);
    tapdisk_stop(t);
    CHECK(kill(pid, 0) < 0 && errno == ESRCH);
    CHECK(access(fx.sock, F_OK) < 0);
    check_chunks(&fx, fx.leaf, NULL, 20);
    fixture_cleanup(&fx);
}

TEST(test_the_child_inherits_no_descriptor_of_ours)
{
    struct fixture fx;
    struct tapdisk *t;
    char *marker, *fd_dir;
    int fd, leaked = 0;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    /* Opened without O_CLOEXEC, as careless daemon code might. */
    marker = xasprintf("%s/marker", fx.dir);
    fd = open(marker, O_RDWR | O_CREAT, 0600);
    CHECK(fd >= 0);
    t = start(&fx, 0);
    CHECK(t != NULL);
    if (t) {
        /* The marker shows in our descriptors, so the check can see it. */
        CHECK_INT(run("ls -l /proc/%ld/fd | grep -q marker", (long) getpid()),
                  0);
        fd_dir = xasprintf("/proc/%ld/fd", (long) tapdisk_pid(t));
        leaked = run("! ls -l %s | grep -q marker", fd_dir) != 0;
        CHECK(!leaked);
        free(fd_dir);
        tapdisk_stop(t);
    }
    close(fd);
    free(marker);
    fixture_cleanup(&fx);
}

TEST(test_pause_holds_requests_until_unpause)
{
    struct fixture fx;
    struct tapdisk *t;
    char *err = NULL, *out, *cmd;
    pid_t reader;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    t = start(&fx, 0);
    CHECK(t != NULL);
    if (!t) {
        fixture_cleanup(&fx);
        return;
    }
    CHECK_INT(tapdisk_pause(t, &err), 0);
    /* Pausing twice is harmless. */
    CHECK_INT(tapdisk_pause(t, &err), 0);

    /* A client connects and reads while paused: it waits, unharmed. */
    out = xasprintf("%s/reader.out", fx.dir);
    cmd = xasprintf("qemu-io -f raw -c 'read -P 0 0 64k' '%s'", fx.uri);
    reader = spawn_sh(cmd, out);
    CHECK_INT(wait_exit(reader, 500), -2);
    CHECK_INT(tapdisk_unpause(t, &err), 0);
    CHECK_INT(tapdisk_unpause(t, &err), 0);
    CHECK_INT(wait_exit(reader, 5000), 0);
    free(out);
    free(cmd);
    tapdisk_stop(t);
    fixture_cleanup(&fx);
}

/* The scenario of a snapshot under a running guest: the client writes on
 * and on; the server is paused; the image is renamed to a base and a new
 * leaf is made at its path; the server is unpaused and reopens the path.
 * The client sees no error, and the new chain holds everything. */
TEST(test_pause_while_writing_then_new_leaf_keeps_every_write)
{
    enum { N_CHUNKS = 160, IOPS = 200 };
    struct fixture fx;
    struct tapdisk *t;
    struct vhd *v = NULL;
    struct vhd_info info;
    char *err = NULL, *cmd, *out, *text;
    int64_t start_ms, elapsed_ms;
    int from_base;
    pid_t writer;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    /* The IOPS limit makes the 160 writes last about 0.8 s, so the pause
     * lands among them; it also shows QoS survives the swap. */
    t = start(&fx, IOPS);
    CHECK(t != NULL);
    if (!t) {
        fixture_cleanup(&fx);
        return;
    }
    out = xasprintf("%s/writer.out", fx.dir);
    cmd = writer_command(&fx, N_CHUNKS);
    start_ms = time_mono_ms();
    writer = spawn_sh(cmd, out);
    usleep(300 * 1000);

    CHECK_INT(tapdisk_pause(t, &err), 0);
    CHECK_INT(rename(fx.leaf, fx.base), 0);
    CHECK_INT(vhd_snapshot(fx.base, fx.leaf, &err), 0);
    if (err) {
        fprintf(stderr, "  %s\n", err);
        free(err);
        err = NULL;
    }
    usleep(200 * 1000);
    CHECK_INT(tapdisk_unpause(t, &err), 0);
    if (err) {
        fprintf(stderr, "  %s\n", err);
        free(err);
        err = NULL;
    }

    CHECK_INT(wait_exit(writer, 10000), 0);
    elapsed_ms = time_mono_ms() - start_ms;
    text = read_text(out);
    CHECK(!strstr(text, "error") && !strstr(text, "failed"));
    if (strstr(text, "error") || strstr(text, "failed")) {
        fprintf(stderr, "  writer said: %.500s\n", text);
    }
    /* 160 requests at 200 per second, less the burst of 20: 0.7 s. */
    CHECK(elapsed_ms >= 650);
    tapdisk_stop(t);

    /* Both images got writes: the swap happened among them. */
    CHECK_INT(vhd_open(fx.base, true, &v, &err), 0);
    if (v) {
        CHECK_INT(vhd_get_info(v, &info), 0);
        CHECK(info.allocated_blocks > 0);
        vhd_info_clear(&info);
        vhd_close(v);
        v = NULL;
    }
    CHECK_INT(vhd_open(fx.leaf, true, &v, &err), 0);
    if (v) {
        CHECK_INT(vhd_get_info(v, &info), 0);
        CHECK(info.allocated_blocks > 0);
        CHECK_INT(info.type, VHD_TYPE_DIFF);
        vhd_info_clear(&info);
        vhd_close(v);
    }
    free(err);
    from_base = check_chunks(&fx, fx.leaf, fx.base, N_CHUNKS);
    CHECK(from_base > 0 && from_base < N_CHUNKS);
    free(text);
    free(cmd);
    free(out);
    fixture_cleanup(&fx);
}

TEST(test_failed_unpause_keeps_holding_and_may_be_retried)
{
    struct fixture fx;
    struct tapdisk *t;
    char *err = NULL, *moved, *out, *cmd;
    pid_t reader;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    t = start(&fx, 0);
    CHECK(t != NULL);
    if (!t) {
        fixture_cleanup(&fx);
        return;
    }
    CHECK_INT(run("qemu-io -f raw -c 'write -P 7 0 64k' '%s' >/dev/null",
                  fx.uri), 0);
    CHECK_INT(tapdisk_pause(t, &err), 0);
    moved = xasprintf("%s/elsewhere.vhd", fx.dir);
    CHECK_INT(rename(fx.leaf, moved), 0);

    out = xasprintf("%s/reader.out", fx.dir);
    cmd = xasprintf("qemu-io -f raw -c 'read -P 7 0 64k' '%s'", fx.uri);
    reader = spawn_sh(cmd, out);
    CHECK(tapdisk_unpause(t, &err) < 0);
    CHECK(err && strstr(err, "No such file"));
    free(err);
    err = NULL;
    /* Still paused, the client still waiting. */
    CHECK_INT(wait_exit(reader, 300), -2);

    CHECK_INT(rename(moved, fx.leaf), 0);
    CHECK_INT(tapdisk_unpause(t, &err), 0);
    CHECK_INT(wait_exit(reader, 5000), 0);
    tapdisk_stop(t);
    free(moved);
    free(out);
    free(cmd);
    fixture_cleanup(&fx);
}

TEST(test_stop_while_paused_is_prompt)
{
    struct fixture fx;
    struct tapdisk *t;
    char *err = NULL, *out, *cmd;
    int64_t t0;
    pid_t reader, pid;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    t = start(&fx, 0);
    CHECK(t != NULL);
    if (!t) {
        fixture_cleanup(&fx);
        return;
    }
    CHECK_INT(tapdisk_pause(t, &err), 0);
    out = xasprintf("%s/reader.out", fx.dir);
    cmd = xasprintf("qemu-io -f raw -c 'read 0 64k' '%s'", fx.uri);
    reader = spawn_sh(cmd, out);
    usleep(200 * 1000);
    pid = tapdisk_pid(t);
    t0 = time_mono_ms();
    tapdisk_stop(t);
    /* SIGTERM, not the 10 s fallback to SIGKILL. */
    CHECK(time_mono_ms() - t0 < 5000);
    CHECK(kill(pid, 0) < 0 && errno == ESRCH);
    CHECK(access(fx.sock, F_OK) < 0);
    /* The held client is cut off, not left hanging. */
    CHECK(wait_exit(reader, 5000) != -2);
    free(out);
    free(cmd);
    fixture_cleanup(&fx);
}

/* The daemon crashes: its end of the control channel closes.  The block
 * server serves on (the guest keeps its disk); SIGTERM still stops it. */
TEST(test_server_outlives_the_daemon)
{
    struct fixture fx;
    int pfd[2];
    pid_t daemon, server = 0;
    int64_t deadline;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    CHECK_INT(pipe(pfd), 0);
    daemon = fork();
    if (!daemon) {
        struct tapdisk *t = start(&fx, 0);
        pid_t p = t ? tapdisk_pid(t) : 0;
        if (write(pfd[1], &p, sizeof p) != sizeof p) {
            _exit(1);
        }
        /* Dies without stopping anything. */
        _exit(0);
    }
    close(pfd[1]);
    CHECK_INT(read(pfd[0], &server, sizeof server), (int) sizeof server);
    close(pfd[0]);
    CHECK_INT(wait_exit(daemon, 10000), 0);
    CHECK(server > 0);
    if (server > 0) {
        usleep(100 * 1000);
        CHECK_INT(run("qemu-io -f raw -c 'write -P 9 0 4k' "
                      "-c 'read -P 9 0 4k' '%s' >/dev/null", fx.uri), 0);
        CHECK_INT(kill(server, SIGTERM), 0);
        /* Not our child any more: its socket going away says it ended. */
        deadline = time_mono_ms() + 5000;
        while (!access(fx.sock, F_OK) && time_mono_ms() < deadline) {
            usleep(10 * 1000);
        }
        CHECK(access(fx.sock, F_OK) < 0);
    }
    fixture_cleanup(&fx);
}

/* The daemon shuts down while a guest still uses the disk: it releases
 * the handle (nothing left to leak), and the server serves on until told
 * to stop by signal. */
TEST(test_released_server_keeps_serving)
{
    struct fixture fx;
    struct tapdisk *t;
    int status = 0;
    pid_t pid;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    t = start(&fx, 0);
    CHECK(t != NULL);
    if (!t) {
        fixture_cleanup(&fx);
        return;
    }
    pid = tapdisk_pid(t);
    tapdisk_release(t);
    tapdisk_release(NULL);
    /* Long enough for the server to have read the end of its control
     * channel: it must not take it as an order to exit. */
    usleep(200 * 1000);
    CHECK_INT(kill(pid, 0), 0);
    CHECK_INT(run("qemu-io -f raw -c 'write -P 7 0 64k' "
                  "-c 'read -P 7 0 64k' '%s' >/dev/null", fx.uri), 0);
    CHECK_INT(run("test \"$(nbdinfo --size '%s')\" = %u", fx.uri,
                  DISK_SIZE), 0);
    /* Still our child: stop and reap it ourselves. */
    CHECK_INT(kill(pid, SIGTERM), 0);
    CHECK_INT(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) || WIFSIGNALED(status));
    fixture_cleanup(&fx);
}

/* Pause and unpause from several threads at once, as the storage layer's
 * workers may: the calls are serialized, each gets its own answer. */
struct pauser {
    struct tapdisk *t;
    int failures;
};

static void *
pauser_thread(void *p_)
{
    struct pauser *p = p_;

    for (int i = 0; i < 20; i++) {
        char *err = NULL;
        if (tapdisk_pause(p->t, &err) || tapdisk_unpause(p->t, &err)) {
            fprintf(stderr, "  %s\n", err ? err : "?");
            free(err);
            p->failures++;
        }
    }
    return NULL;
}

TEST(test_concurrent_pauses_are_serialized)
{
    struct fixture fx;
    struct pauser p[3];
    pthread_t threads[3];
    char *err = NULL;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    p[0].t = start(&fx, 0);
    CHECK(p[0].t != NULL);
    if (!p[0].t) {
        fixture_cleanup(&fx);
        return;
    }
    for (int i = 0; i < 3; i++) {
        p[i].t = p[0].t;
        p[i].failures = 0;
        pthread_create(&threads[i], NULL, pauser_thread, &p[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(threads[i], NULL);
        CHECK_INT(p[i].failures, 0);
    }
    /* Whoever paused last, unpause leaves it serving. */
    CHECK_INT(tapdisk_unpause(p[0].t, &err), 0);
    CHECK_INT(run("qemu-io -f raw -c 'read -P 0 0 4k' '%s' >/dev/null",
                  fx.uri), 0);
    tapdisk_stop(p[0].t);
    fixture_cleanup(&fx);
}

TEST(test_a_server_that_died_gives_errors_not_signals)
{
    struct fixture fx;
    struct tapdisk *t;
    char *err = NULL;

    if (!fixture_init(&fx)) {
        SKIP("xapi-tapdisk, qemu-io, qemu-img or nbdinfo missing");
    }
    t = start(&fx, 0);
    CHECK(t != NULL);
    if (!t) {
        fixture_cleanup(&fx);
        return;
    }
    CHECK_INT(kill(tapdisk_pid(t), SIGKILL), 0);
    usleep(100 * 1000);
    /* The command goes to a closed socket: an error return, no SIGPIPE
     * (which would end this test program). */
    CHECK(tapdisk_pause(t, &err) < 0);
    CHECK(err && strstr(err, "signal 9"));
    free(err);
    err = NULL;
    CHECK(tapdisk_unpause(t, &err) < 0);
    free(err);
    tapdisk_stop(t);
    fixture_cleanup(&fx);
}
