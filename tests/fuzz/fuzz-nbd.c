/* fuzz-nbd.c — libFuzzer target for the NBD block server's protocol code
 * (storage/nbd-server.c): option haggling and the transmission loop, the
 * first code to see a disk backend's bytes.
 *
 * The input is what a client sends: nbd_server_handle() reads it through an
 * in-memory struct nbd_io (end of input = client hung up) and its replies
 * go to a sink.  The first byte picks the configuration: read-only or not,
 * a named export or only the default one, and whether the device offers
 * trim and write_zeroes.  The device is 64 KiB of memory that traps on any
 * access outside its range and on any write to a read-only export, so a
 * range or permission check that lets a request through shows up as a
 * crash; sanitizers check memory.  Seeds live in tests/fuzz/corpus/nbd/.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -I... \
 *        tests/fuzz/fuzz-nbd.c storage/nbd-server.c lib/util.c */
#include <config.h>
#include "storage/blockdev.h"
#include "storage/nbd-server.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEV_SIZE 65536

struct mem_dev {
    struct blockdev up;
    uint8_t data[DEV_SIZE];
};

static void
check_range(struct blockdev *dev, uint64_t offset, uint64_t len)
{
    if (len > dev->size || offset > dev->size - len) {
        __builtin_trap();
    }
}

static int
mem_read(struct blockdev *dev, void *buf, uint64_t offset, size_t len)
{
    struct mem_dev *m = (struct mem_dev *) dev;

    check_range(dev, offset, len);
    memcpy(buf, m->data + offset, len);
    return 0;
}

static int
mem_write(struct blockdev *dev, const void *buf, uint64_t offset, size_t len)
{
    struct mem_dev *m = (struct mem_dev *) dev;

    check_range(dev, offset, len);
    if (dev->read_only) {
        __builtin_trap();
    }
    memcpy(m->data + offset, buf, len);
    /* Let some writes fail, to cover the error replies. */
    return len == 13 ? -EIO : 0;
}

static int
mem_flush(struct blockdev *dev)
{
    return 0;
}

static int
mem_trim(struct blockdev *dev, uint64_t offset, uint64_t len)
{
    struct mem_dev *m = (struct mem_dev *) dev;

    check_range(dev, offset, len);
    if (dev->read_only) {
        __builtin_trap();
    }
    memset(m->data + offset, 0, len);
    return 0;
}

/* Answers -EOPNOTSUPP for odd lengths, which sends the server to its
 * fallback of writing zeroes. */
static int
mem_write_zeroes(struct blockdev *dev, uint64_t offset, uint64_t len)
{
    struct mem_dev *m = (struct mem_dev *) dev;

    check_range(dev, offset, len);
    if (dev->read_only) {
        __builtin_trap();
    }
    if (len & 1) {
        return -EOPNOTSUPP;
    }
    memset(m->data + offset, 0, len);
    return 0;
}

static void
mem_close(struct blockdev *dev)
{
}

static const struct blockdev_ops full_ops = {
    .read = mem_read, .write = mem_write, .flush = mem_flush,
    .trim = mem_trim, .write_zeroes = mem_write_zeroes, .close = mem_close,
};

static const struct blockdev_ops minimal_ops = {
    .read = mem_read, .write = mem_write, .flush = mem_flush,
    .close = mem_close,
};

struct mem_io {
    const uint8_t *data;
    size_t len;
    size_t written;
};

static int
mem_io_read(void *aux, void *buf, size_t n)
{
    struct mem_io *io = aux;

    if (!n) {
        return 0;
    }
    if (n > io->len) {
        io->len = 0;
        return -EPIPE;
    }
    memcpy(buf, io->data, n);
    io->data += n;
    io->len -= n;
    return 0;
}

static int
mem_io_writev(void *aux, const struct iovec *iov, int iovcnt)
{
    struct mem_io *io = aux;

    for (int i = 0; i < iovcnt; i++) {
        /* Touch every byte the server sends, so that ASan sees a reply
         * built from memory it should not read. */
        const volatile uint8_t *p = iov[i].iov_base;
        uint8_t sum = 0;
        for (size_t j = 0; j < iov[i].iov_len; j += 64) {
            sum ^= p[j];
        }
        if (iov[i].iov_len) {
            sum ^= p[iov[i].iov_len - 1];
        }
        (void) sum;
        io->written += iov[i].iov_len;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mem_dev dev;
    struct nbd_server_config cfg = { 0 };
    struct nbd_server *srv;
    struct mem_io mio;
    struct nbd_io io = {
        .read = mem_io_read, .writev = mem_io_writev, .aux = &mio,
    };
    uint8_t mode;

    if (size < 1) {
        return 0;
    }
    mode = data[0];
    log_set_level(LOG_LVL_ERROR);

    dev.up.ops = mode & 4 ? &minimal_ops : &full_ops;
    dev.up.size = DEV_SIZE;
    dev.up.read_only = mode & 8;
    cfg.read_only = mode & 1;
    cfg.export_name = mode & 2 ? "disk" : NULL;
    cfg.description = mode & 16 ? "fuzz" : NULL;
    if (nbd_server_create(&dev.up, &cfg, &srv)) {
        __builtin_trap();
    }
    mio.data = data + 1;
    mio.len = size - 1;
    mio.written = 0;
    nbd_server_handle(srv, &io);
    /* Whatever the input, the greeting went out first. */
    if (mio.written < 18) {
        __builtin_trap();
    }
    nbd_server_destroy(srv);
    return 0;
}
