/* test-audit.c — tests of xapi/audit.c that need no daemon: the records
 * written at start and stop, logins reported outside an API call, and how
 * the chain continues after damage at the end of the file (the integration
 * test tests/integration/test_audit.py covers calls, the HTTP handler and
 * the verifier).
 *
 * Each test works in its own state directory under /tmp. */
#include <config.h>

#define TEST_MAIN
#include "tests/unit/test.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "api.h"
#include "util.h"

#define HOST_UUID "0b9d3c4e-1111-4222-8333-444455556666"

struct scratch {
    char dir[64];
    char *log;
    struct xapi x;
};

static void
scratch_init(struct scratch *s)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/test-audit.XXXXXX");
    if (!mkdtemp(s->dir)) {
        xabort("mkdtemp: %s", strerror(errno));
    }
    s->log = xasprintf("%s/audit.log", s->dir);
    memset(&s->x, 0, sizeof s->x);
    s->x.state_dir = s->dir;
    snprintf(s->x.host_uuid, sizeof s->x.host_uuid, "%s", HOST_UUID);
}

static void
scratch_destroy(struct scratch *s)
{
    char *cmd = xasprintf("rm -rf '%s'", s->dir);

    if (system(cmd)) {
        fprintf(stderr, "cannot remove %s\n", s->dir);
    }
    free(cmd);
    free(s->log);
}

/* The lines of the log; returns how many. */
static size_t
read_lines(const char *path, char ***ret_lines)
{
    char *data = NULL, *p, *nl;
    char **lines = NULL;
    size_t len, n = 0;

    if (read_file(path, 1 << 24, &data, &len)) {
        *ret_lines = NULL;
        return 0;
    }
    for (p = data; (nl = strchr(p, '\n')); p = nl + 1) {
        lines = xrealloc(lines, (n + 1) * sizeof *lines);
        lines[n++] = xmemdup0(p, nl - p);
    }
    free(data);
    *ret_lines = lines;
    return n;
}

static void
free_lines(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(lines[i]);
    }
    free(lines);
}

/* The 64 hex digits after "name":" in line, or "". */
static const char *
member_hex(const char *line, const char *name, char buf[65])
{
    char *key = xasprintf("\"%s\":\"", name);
    const char *p = strstr(line, key);

    buf[0] = '\0';
    if (p && strlen(p + strlen(key)) >= 64) {
        memcpy(buf, p + strlen(key), 64);
        buf[64] = '\0';
    }
    free(key);
    return buf;
}

static void
sha256_hex(const char *s, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
}

static void
append(const char *path, const char *text)
{
    FILE *f = fopen(path, "ab");

    if (!f) {
        xabort("%s: %s", path, strerror(errno));
    }
    fputs(text, f);
    fclose(f);
}

/* Every record's prev is the hash of the record before it. */
static bool
chained(char **lines, size_t from, size_t to)
{
    char a[65], b[65];

    for (size_t i = from + 1; i < to; i++) {
        if (strcmp(member_hex(lines[i], "prev", a),
                   member_hex(lines[i - 1], "hash", b))) {
            fprintf(stderr, "  line %zu does not chain to line %zu\n",
                    i + 1, i);
            return false;
        }
    }
    return true;
}

TEST(test_start_and_stop_records_chain_across_restarts)
{
    struct scratch s;
    char **lines;
    char genesis[65], buf[65];
    size_t n;

    scratch_init(&s);
    CHECK_INT(audit_init(&s.x), 0);
    audit_shutdown(&s.x);
    CHECK_INT(audit_init(&s.x), 0);
    audit_shutdown(&s.x);
    n = read_lines(s.log, &lines);
    CHECK_INT(n, 4);
    if (n == 4) {
        sha256_hex("xapi-audit-log genesis host " HOST_UUID, genesis);
        CHECK_STR(member_hex(lines[0], "prev", buf), genesis);
        CHECK(strstr(lines[0], "\"type\":\"start\"")
              && strstr(lines[0], "\"reason\":\"new\""));
        CHECK(strstr(lines[1], "\"seq\":2,") && strstr(lines[1],
                                                       "\"type\":\"stop\""));
        CHECK(strstr(lines[2], "\"reason\":\"restart\""));
        CHECK(chained(lines, 0, n));
    }
    free_lines(lines, n);
    scratch_destroy(&s);
}

TEST(test_login_reported_outside_a_call_is_recorded)
{
    struct scratch s;
    char **lines;
    size_t n;

    scratch_init(&s);
    CHECK_INT(audit_init(&s.x), 0);
    audit_login(&s.x, "root", "orig", "192.0.2.7:4000", false);
    /* A second login on the same thread writes the first one. */
    audit_login(&s.x, "alice", "", "192.0.2.8:4001", true);
    n = read_lines(s.log, &lines);
    CHECK_INT(n, 2);
    if (n == 2) {
        CHECK(strstr(lines[1], "\"type\":\"login\"")
              && strstr(lines[1], "\"user\":\"root\"")
              && strstr(lines[1], "\"originator\":\"orig\"")
              && strstr(lines[1], "\"peer\":\"192.0.2.7:4000\"")
              && strstr(lines[1], "SESSION_AUTHENTICATION_FAILED"));
    }
    free_lines(lines, n);
    /* The last one is written at shutdown, before the stop record. */
    audit_shutdown(&s.x);
    n = read_lines(s.log, &lines);
    CHECK_INT(n, 4);
    if (n == 4) {
        CHECK(strstr(lines[2], "\"user\":\"alice\"")
              && strstr(lines[2], "\"status\":\"OK\""));
        CHECK(strstr(lines[3], "\"type\":\"stop\""));
        CHECK(chained(lines, 0, n));
    }
    free_lines(lines, n);
    scratch_destroy(&s);
}

TEST(test_damaged_lines_after_the_last_record_are_noted)
{
    struct scratch s;
    char **lines;
    char buf[65], buf2[65];
    size_t n;

    scratch_init(&s);
    CHECK_INT(audit_init(&s.x), 0);
    audit_shutdown(&s.x);
    append(s.log, "not a record\n{\"seq\":3,\"prev\":\"\"}\n{\"seq\":3,\"pr");
    CHECK_INT(audit_init(&s.x), 0);
    audit_shutdown(&s.x);
    n = read_lines(s.log, &lines);
    CHECK_INT(n, 7);
    if (n == 7) {
        CHECK_STR(lines[4], "{\"seq\":3,\"pr");
        CHECK(strstr(lines[5], "\"seq\":3,")
              && strstr(lines[5], "\"reason\":\"damaged-tail\"")
              && strstr(lines[5], "\"lines\":3,")
              && strstr(lines[5], "\"torn\":true")
              && strstr(lines[5], "\"after_seq\":2"));
        CHECK_STR(member_hex(lines[5], "prev", buf),
                  member_hex(lines[1], "hash", buf2));
        CHECK(chained(lines, 5, n));
    }
    free_lines(lines, n);
    scratch_destroy(&s);
}

TEST(test_edited_last_record_is_noted_as_damage)
{
    struct scratch s;
    char **lines, *data = NULL, *p;
    size_t n, len;

    scratch_init(&s);
    CHECK_INT(audit_init(&s.x), 0);
    audit_shutdown(&s.x);
    /* Change the host of the stop record: its own hash no longer fits. */
    if (!read_file(s.log, 1 << 20, &data, &len)) {
        p = strstr(strstr(data, "\"type\":\"stop\""), HOST_UUID);
        p[0] = p[0] == '0' ? '1' : '0';
        unlink(s.log);
        append(s.log, data);
        free(data);
    }
    CHECK_INT(audit_init(&s.x), 0);
    audit_shutdown(&s.x);
    n = read_lines(s.log, &lines);
    CHECK_INT(n, 4);
    if (n == 4) {
        CHECK(strstr(lines[2], "\"seq\":2,")
              && strstr(lines[2], "\"reason\":\"damaged-tail\"")
              && strstr(lines[2], "\"lines\":1,")
              && strstr(lines[2], "\"torn\":false"));
    }
    free_lines(lines, n);
    scratch_destroy(&s);
}

TEST(test_file_without_any_record_restarts_at_the_genesis)
{
    struct scratch s;
    char **lines;
    char genesis[65], buf[65];
    size_t n;

    scratch_init(&s);
    append(s.log, "garbage\nmore garbage");
    CHECK_INT(audit_init(&s.x), 0);
    audit_shutdown(&s.x);
    n = read_lines(s.log, &lines);
    CHECK_INT(n, 4);
    if (n == 4) {
        sha256_hex("xapi-audit-log genesis host " HOST_UUID, genesis);
        CHECK(strstr(lines[2], "\"seq\":1,")
              && strstr(lines[2], "\"lines\":2,")
              && strstr(lines[2], "\"after_seq\":0"));
        CHECK_STR(member_hex(lines[2], "prev", buf), genesis);
    }
    free_lines(lines, n);
    scratch_destroy(&s);
}

TEST(test_failed_write_is_noted_by_the_next_record)
{
    struct scratch s;
    struct rlimit old, lim;
    struct stat st;
    char **lines;
    size_t n;

    scratch_init(&s);
    CHECK_INT(audit_init(&s.x), 0);
    /* Let the next record be cut short, as on a full disk. */
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    stat(s.log, &st);
    lim = old;
    lim.rlim_cur = (rlim_t) st.st_size + 40;
    setrlimit(RLIMIT_FSIZE, &lim);
    audit_login(&s.x, "first", "", "192.0.2.1:1", true);
    audit_login(&s.x, "second", "", "192.0.2.1:2", true);  /* first: torn */
    setrlimit(RLIMIT_FSIZE, &old);
    audit_login(&s.x, "third", "", "192.0.2.1:3", true);   /* second */
    audit_shutdown(&s.x);
    n = read_lines(s.log, &lines);
    CHECK_INT(n, 6);
    if (n == 6) {
        CHECK_INT(strlen(lines[1]), 40);
        CHECK(strstr(lines[2], "\"seq\":2,")
              && strstr(lines[2], "\"reason\":\"damaged-tail\"")
              && strstr(lines[2], "\"torn\":true")
              && strstr(lines[2], "\"lost\":1"));
        CHECK(strstr(lines[3], "\"user\":\"second\""));
        CHECK(strstr(lines[4], "\"user\":\"third\""));
        CHECK(chained(lines, 2, n));
    }
    free_lines(lines, n);
    scratch_destroy(&s);
}

TEST(test_unwritable_state_dir_fails_to_start)
{
    struct scratch s;

    scratch_init(&s);
    s.x.state_dir = "/nonexistent/test-audit";
    CHECK(audit_init(&s.x) < 0);
    audit_shutdown(&s.x);
    s.x.state_dir = s.dir;
    scratch_destroy(&s);
}
