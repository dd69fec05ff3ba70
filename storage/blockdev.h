/* blockdev.h — a virtual block device as the data path sees it: what the
 * tapdisk-style block server (storage/nbd-server.c) serves, backed by a raw
 * file or device (blockdev-raw.c) or by a VHD chain (storage/vhd.c).
 *
 * Offsets and lengths are in bytes; reads of unallocated areas return
 * zeros.  A device is used by one thread at a time (the block server
 * serializes requests per device).  Functions return 0 or a negative errno
 * value. */
#ifndef BLOCKDEV_H
#define BLOCKDEV_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct blockdev;

struct blockdev_ops {
    int (*read)(struct blockdev *dev, void *buf, uint64_t offset, size_t len);
    int (*write)(struct blockdev *dev, const void *buf, uint64_t offset,
                 size_t len);
    int (*flush)(struct blockdev *dev);
    /* Optional (NULL: not supported): deallocate or zero a range. */
    int (*trim)(struct blockdev *dev, uint64_t offset, uint64_t len);
    int (*write_zeroes)(struct blockdev *dev, uint64_t offset, uint64_t len);
    void (*close)(struct blockdev *dev);
};

struct blockdev {
    const struct blockdev_ops *ops;
    uint64_t size;              /* virtual size in bytes */
    bool read_only;
};

/* Opens a raw file or block device. */
int blockdev_open_raw(const char *path, bool read_only,
                      struct blockdev **ret_dev, char **ret_err);

static inline void
blockdev_close(struct blockdev *dev)
{
    if (dev) {
        dev->ops->close(dev);
    }
}

#endif
