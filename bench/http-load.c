/* http-load.c — a small HTTP/1.1 load and timing client for the benchmarks
 * (bench/run.sh compiles it on the fly with cc; it is not part of the
 * automake build and needs nothing but libc and pthreads).
 *
 * It POSTs request bodies over keep-alive connections and times each
 * request from the first byte written to the last byte of the response
 * read.  It never parses the response body: it only reads the head for
 * the status and Content-Length and, with -e, looks for a string in the
 * first bytes of the body to tell a XenAPI Success from an error.
 *
 * Usage: http-load [options] HOST PORT PATH BODIES-FILE
 *   -c N     connections, one thread each (default 1)
 *   -n N     send N requests in all (default 1)
 *   -d SECS  send requests for SECS seconds instead of a count
 *   -s       sticky: connection i always sends body line i (mod lines);
 *            otherwise request k sends line k (mod lines)
 *   -e STR   a response counts as ok only if STR occurs in the first
 *            1024 bytes of its body (and the status is 200)
 *   -T TYPE  Content-Type of the requests (default text/xml)
 *   -B MB    pre-fault a receive buffer of MB MiB per connection, so that
 *            timing a huge response does not time the client's page faults
 *   -v       print one line per request: total and first-byte times, size
 *
 * BODIES-FILE holds one request body per line; "@SEQ@" in a line is
 * replaced by the request's sequence number (to make every write differ).
 *
 * Output, last line: key=value pairs (requests, ok, failed, seconds, rate,
 * lat_mean_ms, lat_p50_ms, lat_p99_ms, lat_max_ms, resp_bytes). */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host, *port, *path, *ctype = "text/xml", *expect;
static char **bodies;
static size_t n_bodies;
static int n_conns = 1, sticky, verbose;
static long long max_requests = 1;
static double duration_s;
static size_t prefault_bytes;

static atomic_llong tickets;
static atomic_llong n_ok, n_failed;
static atomic_int failure_reported;
static atomic_llong last_resp_bytes;
static int64_t deadline_ns;
static pthread_mutex_t print_mutex = PTHREAD_MUTEX_INITIALIZER;

struct worker {
    int id;
    pthread_t thread;
    double *lat_ms;
    size_t n_lat, cap_lat;
    int error;
};

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p) {
        fprintf(stderr, "http-load: out of memory\n");
        exit(1);
    }
    return p;
}

static int
connect_to(void)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai, *a;
    int fd = -1, one = 1, rc;

    rc = getaddrinfo(host, port, &hints, &ai);
    if (rc) {
        fprintf(stderr, "http-load: %s:%s: %s\n", host, port, gai_strerror(rc));
        return -1;
    }
    for (a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) {
            continue;
        }
        if (!connect(fd, a->ai_addr, a->ai_addrlen)) {
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        fprintf(stderr, "http-load: cannot connect to %s:%s: %s\n", host, port,
                strerror(errno));
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Builds the request for body line idx with sequence number seq. */
static size_t
build_request(char **buf, size_t *cap, size_t idx, long long seq)
{
    const char *body = bodies[idx];
    size_t blen = strlen(body), need = blen + 512 + 32;
    char seqs[32], head[512];
    const char *tok;
    size_t hlen, len = 0;

    if (need > *cap) {
        free(*buf);
        *cap = need * 2;
        *buf = xmalloc(*cap);
    }
    snprintf(seqs, sizeof seqs, "%lld", seq);
    /* Body first, at an offset, to learn its length after substitution. */
    {
        char *b = *buf + 512;
        const char *p = body;
        size_t sl = strlen(seqs);
        while ((tok = strstr(p, "@SEQ@"))) {
            memcpy(b + len, p, tok - p);
            len += tok - p;
            memcpy(b + len, seqs, sl);
            len += sl;
            p = tok + 5;
        }
        memcpy(b + len, p, strlen(p));
        len += strlen(p);
    }
    hlen = snprintf(head, sizeof head,
                    "POST %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: http-load\r\n"
                    "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                    path, host, port, ctype, len);
    memmove(*buf + hlen, *buf + 512, len);
    memcpy(*buf, head, hlen);
    return hlen + len;
}

static int
write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= w;
    }
    return 0;
}

/* Reads one response into *rbuf.  Returns 0 and sets status, the offset
 * and length of the body and the time the first byte arrived. */
static int
read_response(int fd, char **rbuf, size_t *rcap, int *status,
              size_t *body_off, size_t *body_len, int64_t *first_byte_ns)
{
    size_t have = 0, head_len = 0, content_len = 0;

    for (;;) {
        ssize_t r;
        if (have == *rcap) {
            *rcap *= 2;
            *rbuf = realloc(*rbuf, *rcap);
            if (!*rbuf) {
                fprintf(stderr, "http-load: out of memory\n");
                exit(1);
            }
        }
        r = recv(fd, *rbuf + have, *rcap - have, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            fprintf(stderr, "http-load: connection %s while reading a response\n",
                    r ? strerror(errno) : "closed");
            return -1;
        }
        if (!have) {
            *first_byte_ns = now_ns();
        }
        have += r;
        if (!head_len) {
            char *end = memmem(*rbuf, have, "\r\n\r\n", 4);
            char *p;
            if (!end) {
                continue;
            }
            head_len = end + 4 - *rbuf;
            *status = atoi(*rbuf + 9);
            for (p = *rbuf; p < end; p++) {
                if (*p == '\n' && !strncasecmp(p + 1, "Content-Length:", 15)) {
                    content_len = strtoull(p + 16, NULL, 10);
                    break;
                }
            }
            if (p >= end) {
                fprintf(stderr, "http-load: response without Content-Length\n");
                return -1;
            }
            if (head_len + content_len > *rcap) {
                *rcap = head_len + content_len;
                *rbuf = realloc(*rbuf, *rcap);
                if (!*rbuf) {
                    fprintf(stderr, "http-load: out of memory\n");
                    exit(1);
                }
            }
        }
        if (head_len && have >= head_len + content_len) {
            break;
        }
    }
    *body_off = head_len;
    *body_len = content_len;
    return 0;
}

static void
record_latency(struct worker *w, double ms)
{
    if (w->n_lat == w->cap_lat) {
        w->cap_lat = w->cap_lat ? w->cap_lat * 2 : 1024;
        w->lat_ms = realloc(w->lat_ms, w->cap_lat * sizeof *w->lat_ms);
        if (!w->lat_ms) {
            fprintf(stderr, "http-load: out of memory\n");
            exit(1);
        }
    }
    w->lat_ms[w->n_lat++] = ms;
}

static void *
worker_main(void *aux)
{
    struct worker *w = aux;
    size_t qcap = 0, rcap = prefault_bytes ? prefault_bytes : 1 << 20;
    char *qbuf = NULL, *rbuf = xmalloc(rcap);
    int fd = connect_to();

    if (prefault_bytes) {
        memset(rbuf, 0, rcap);
    }
    if (fd < 0) {
        w->error = 1;
        free(rbuf);
        return NULL;
    }
    for (;;) {
        long long seq;
        size_t idx, qlen, boff, blen;
        int64_t t0, t1, tfirst = 0;
        int status = 0;
        bool ok;

        if (duration_s > 0) {
            if (now_ns() >= deadline_ns) {
                break;
            }
            seq = atomic_fetch_add(&tickets, 1);
        } else {
            seq = atomic_fetch_add(&tickets, 1);
            if (seq >= max_requests) {
                break;
            }
        }
        idx = sticky ? (size_t) w->id % n_bodies : (size_t) (seq % n_bodies);
        qlen = build_request(&qbuf, &qcap, idx, seq);
        t0 = now_ns();
        if (write_all(fd, qbuf, qlen)
            || read_response(fd, &rbuf, &rcap, &status, &boff, &blen, &tfirst)) {
            w->error = 1;
            atomic_fetch_add(&n_failed, 1);
            break;
        }
        t1 = now_ns();
        record_latency(w, (t1 - t0) / 1e6);
        atomic_store(&last_resp_bytes, (long long) blen);
        ok = status == 200;
        if (ok && expect) {
            size_t look = blen < 1024 ? blen : 1024;
            ok = memmem(rbuf + boff, look, expect, strlen(expect)) != NULL;
        }
        atomic_fetch_add(ok ? &n_ok : &n_failed, 1);
        if (!ok && !atomic_exchange(&failure_reported, 1)) {
            size_t show = blen < 600 ? blen : 600;
            pthread_mutex_lock(&print_mutex);
            fprintf(stderr, "http-load: unexpected response (status %d): %.*s\n",
                    status, (int) show, rbuf + boff);
            pthread_mutex_unlock(&print_mutex);
        }
        if (verbose) {
            pthread_mutex_lock(&print_mutex);
            printf("req %lld conn %d total_ms=%.3f ttfb_ms=%.3f resp_bytes=%zu "
                   "status=%d ok=%d\n", seq, w->id, (t1 - t0) / 1e6,
                   (tfirst - t0) / 1e6, blen, status, ok);
            fflush(stdout);
            pthread_mutex_unlock(&print_mutex);
        }
    }
    close(fd);
    free(qbuf);
    free(rbuf);
    return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}

static void
load_bodies(const char *file)
{
    FILE *f = fopen(file, "r");
    char *line = NULL;
    size_t cap = 0, alloc = 0;
    ssize_t n;

    if (!f) {
        fprintf(stderr, "http-load: %s: %s\n", file, strerror(errno));
        exit(2);
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
            line[--n] = '\0';
        }
        if (!n) {
            continue;
        }
        if (n_bodies == alloc) {
            alloc = alloc ? alloc * 2 : 64;
            bodies = realloc(bodies, alloc * sizeof *bodies);
            if (!bodies) {
                exit(1);
            }
        }
        bodies[n_bodies++] = strdup(line);
    }
    free(line);
    fclose(f);
    if (!n_bodies) {
        fprintf(stderr, "http-load: %s has no request bodies\n", file);
        exit(2);
    }
}

int
main(int argc, char *argv[])
{
    struct worker *ws;
    double *all, sum = 0, secs;
    size_t n_all = 0, k = 0;
    int64_t start, end;
    int opt, errors = 0;

    while ((opt = getopt(argc, argv, "c:n:d:se:T:B:v")) != -1) {
        switch (opt) {
        case 'c': n_conns = atoi(optarg); break;
        case 'n': max_requests = atoll(optarg); break;
        case 'd': duration_s = atof(optarg); break;
        case 's': sticky = 1; break;
        case 'e': expect = optarg; break;
        case 'T': ctype = optarg; break;
        case 'B': prefault_bytes = (size_t) atol(optarg) << 20; break;
        case 'v': verbose = 1; break;
        default:
            fprintf(stderr, "usage: http-load [-c N] [-n N | -d SECS] [-s] "
                    "[-e STR] [-T TYPE] [-B MB] [-v] HOST PORT PATH BODIES\n");
            return 2;
        }
    }
    if (argc - optind != 4 || n_conns < 1) {
        fprintf(stderr, "usage: http-load [-c N] [-n N | -d SECS] [-s] "
                "[-e STR] [-T TYPE] [-B MB] [-v] HOST PORT PATH BODIES\n");
        return 2;
    }
    host = argv[optind];
    port = argv[optind + 1];
    path = argv[optind + 2];
    load_bodies(argv[optind + 3]);

    ws = calloc(n_conns, sizeof *ws);
    start = now_ns();
    deadline_ns = start + (int64_t) (duration_s * 1e9);
    for (int i = 0; i < n_conns; i++) {
        ws[i].id = i;
        if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i])) {
            fprintf(stderr, "http-load: cannot start a thread\n");
            return 1;
        }
    }
    for (int i = 0; i < n_conns; i++) {
        pthread_join(ws[i].thread, NULL);
        n_all += ws[i].n_lat;
        errors += ws[i].error;
    }
    end = now_ns();
    secs = (end - start) / 1e9;
    all = xmalloc(n_all * sizeof *all);
    for (int i = 0; i < n_conns; i++) {
        memcpy(all + k, ws[i].lat_ms, ws[i].n_lat * sizeof *all);
        k += ws[i].n_lat;
        free(ws[i].lat_ms);
    }
    qsort(all, n_all, sizeof *all, cmp_double);
    for (size_t i = 0; i < n_all; i++) {
        sum += all[i];
    }
    printf("requests=%zu ok=%lld failed=%lld conn_errors=%d seconds=%.3f "
           "rate=%.1f lat_mean_ms=%.3f lat_p50_ms=%.3f lat_p99_ms=%.3f "
           "lat_max_ms=%.3f resp_bytes=%lld\n",
           n_all, (long long) atomic_load(&n_ok),
           (long long) atomic_load(&n_failed), errors, secs,
           secs > 0 ? n_all / secs : 0.0, n_all ? sum / n_all : 0.0,
           n_all ? all[n_all / 2] : 0.0,
           n_all ? all[(size_t) (n_all * 0.99)] : 0.0,
           n_all ? all[n_all - 1] : 0.0,
           (long long) atomic_load(&last_resp_bytes));
    free(all);
    free(ws);
    return errors || atomic_load(&n_failed) ? 1 : 0;
}
