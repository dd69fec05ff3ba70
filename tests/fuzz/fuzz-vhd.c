/* fuzz-vhd.c — libFuzzer target for the VHD parser and data path
 * (storage/vhd.c), which reads images users upload (VDI import) and
 * images left behind by crashes.
 *
 * The input is an image file (in a memfd, reached as /proc/self/fd/N).
 * vhd_check() must judge it without crashing; an image vhd_open() accepts
 * must read fully (every allocated extent, capped) and, opened writable,
 * take writes at its start, middle and end, after which vhd_check() must
 * find it sound and the written sectors must read back.  Parents are
 * never followed: their paths come from the input.  Seeds live in
 * tests/fuzz/corpus/vhd/.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -I... \
 *        tests/fuzz/fuzz-vhd.c storage/vhd.c lib/util.c */
#include <config.h>
#include "storage/vhd.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util.h"

#define READ_CAP (16u << 20)

static void
require(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz-vhd: %s\n", what);
        abort();
    }
}

static void
read_all(struct vhd *v)
{
    uint64_t size = vhd_virtual_size(v), off = 0, budget = READ_CAP;
    uint8_t *buf = xmalloc(1 << 20);
    struct vhd_info info;

    require(vhd_get_info(v, &info) == 0, "vhd_get_info failed");
    require(info.virtual_size == size, "info size differs");
    vhd_info_clear(&info);
    while (off < size && budget) {
        uint64_t run;
        bool data;

        require(vhd_extent(v, off, &run, &data) == 0, "vhd_extent failed");
        require(run > 0 && run <= size - off, "bad extent length");
        if (data) {
            for (uint64_t o = off; o < off + run && budget;) {
                size_t n = MIN(MIN(run - (o - off), 1u << 20), budget);
                require(vhd_read(v, buf, o, n) == 0, "reading data failed");
                o += n;
                budget -= n;
            }
        } else {
            size_t n = MIN(run, 4096);
            require(vhd_read(v, buf, off, n) == 0, "reading a hole failed");
            for (size_t i = 0; i < n; i++) {
                require(buf[i] == 0, "a hole reads as nonzero");
            }
        }
        off += run;
    }
    free(buf);
}

static void
write_some(const char *path)
{
    struct vhd *v = NULL;
    uint8_t sector[512], back[512];
    uint64_t size, offs[3];
    char *err = NULL;
    int rc;

    if (vhd_open(path, false, &v, &err)) {
        free(err);
        return;
    }
    size = vhd_virtual_size(v);
    if (size < 512) {
        vhd_close(v);
        return;
    }
    offs[0] = 0;
    offs[1] = size / 2 / 512 * 512;
    offs[2] = size - 512;
    for (int i = 0; i < 3; i++) {
        memset(sector, 0xa0 + i, sizeof sector);
        rc = vhd_write(v, sector, offs[i], 512);
        if (rc) {
            /* A file that would outgrow the BAT's 32-bit sectors. */
            require(rc == -EFBIG || rc == -EIO, "unexpected write error");
            vhd_close(v);
            return;
        }
    }
    require(vhd_flush(v) == 0, "flush failed");
    for (int i = 0; i < 3; i++) {
        require(vhd_read(v, back, offs[i], 512) == 0, "read back failed");
        /* Writes at the same offset (tiny disks) leave the last. */
        int last = i;
        for (int j = i + 1; j < 3; j++) {
            if (offs[j] == offs[i]) {
                last = j;
            }
        }
        memset(sector, 0xa0 + last, sizeof sector);
        require(!memcmp(back, sector, 512), "a write did not read back");
    }
    vhd_close(v);
    rc = vhd_check(path, false, &err);
    if (rc) {
        fprintf(stderr, "fuzz-vhd: after writes: %s\n", err);
    }
    require(rc == 0, "writes left an image vhd_check rejects");
    free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], *err = NULL;
    struct vhd *v = NULL;
    int fd, rc;

    fd = memfd_create("fuzz-vhd", MFD_CLOEXEC);
    require(fd >= 0, "memfd_create failed");
    require(write(fd, data, size) == (ssize_t) size, "memfd write failed");
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);

    int checked = vhd_check(path, false, &err);
    require(checked == 0 || checked == -EINVAL, "unexpected vhd_check error");
    require(checked == 0 || (err && *err),
            "vhd_check failed without a report");
    free(err);
    err = NULL;

    rc = vhd_open(path, true, &v, &err);
    require(rc == 0 || checked != 0, "vhd_check passes what open refuses");
    if (rc) {
        require(rc == -EINVAL, "unexpected open error");
        require(err && *err, "open failed without a message");
        free(err);
    } else {
        read_all(v);
        vhd_close(v);
        write_some(path);
    }
    close(fd);
    return 0;
}
