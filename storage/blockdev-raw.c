/* blockdev-raw.c — a struct blockdev over a raw image file or a block
 * device: what the block server (nbd-server.c) serves for a raw VDI, and
 * the simplest device to test it with.
 *
 * Reads and writes are plain pread()/pwrite() on one descriptor (large
 * requests go straight into the caller's buffer, no bounce copy); flush is
 * fdatasync().  Trim punches holes in files and discards on block devices;
 * write_zeroes uses the kernel's zero-range operations and answers
 * -EOPNOTSUPP when it has none, so that the caller falls back to writing
 * zeroes. */
#include <config.h>

#include "storage/blockdev.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct blockdev_raw {
    struct blockdev up;
    int fd;
    bool is_blkdev;
};

static struct blockdev_raw *
blockdev_raw_cast(struct blockdev *dev)
{
    return (struct blockdev_raw *) dev;
}

static int
raw_read(struct blockdev *dev, void *buf, uint64_t offset, size_t len)
{
    struct blockdev_raw *raw = blockdev_raw_cast(dev);
    char *p = buf;

    while (len > 0) {
        ssize_t r = pread(raw->fd, p, len, (off_t) offset);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (r == 0) {
            /* The file shrank under us: what is past its end reads as
             * zeros, as for any unallocated area. */
            memset(p, 0, len);
            break;
        }
        p += r;
        offset += (uint64_t) r;
        len -= (size_t) r;
    }
    return 0;
}

static int
raw_write(struct blockdev *dev, const void *buf, uint64_t offset, size_t len)
{
    struct blockdev_raw *raw = blockdev_raw_cast(dev);
    const char *p = buf;

    if (dev->read_only) {
        return -EROFS;
    }
    while (len > 0) {
        ssize_t r = pwrite(raw->fd, p, len, (off_t) offset);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (r == 0) {
            return -EIO;
        }
        p += r;
        offset += (uint64_t) r;
        len -= (size_t) r;
    }
    return 0;
}

static int
raw_flush(struct blockdev *dev)
{
    struct blockdev_raw *raw = blockdev_raw_cast(dev);

    if (dev->read_only) {
        return 0;
    }
    return fdatasync(raw->fd) ? -errno : 0;
}

/* Trim is advisory: when neither the file system nor the device can
 * deallocate, the data simply stays, which is not an error. */
static int
raw_trim(struct blockdev *dev, uint64_t offset, uint64_t len)
{
    struct blockdev_raw *raw = blockdev_raw_cast(dev);
    int r;

    if (dev->read_only) {
        return -EROFS;
    }
    if (raw->is_blkdev) {
        uint64_t range[2] = { offset, len };
        r = ioctl(raw->fd, BLKDISCARD, range);
    } else {
        r = fallocate(raw->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      (off_t) offset, (off_t) len);
    }
    if (r && errno != EOPNOTSUPP && errno != ENOTTY && errno != EINVAL) {
        return -errno;
    }
    return 0;
}

static int
raw_write_zeroes(struct blockdev *dev, uint64_t offset, uint64_t len)
{
    struct blockdev_raw *raw = blockdev_raw_cast(dev);

    if (dev->read_only) {
        return -EROFS;
    }
    if (raw->is_blkdev) {
        uint64_t range[2] = { offset, len };
        if (!ioctl(raw->fd, BLKZEROOUT, range)) {
            return 0;
        }
        return errno == ENOTTY || errno == EINVAL ? -EOPNOTSUPP : -errno;
    }
    if (!fallocate(raw->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                   (off_t) offset, (off_t) len)) {
        return 0;
    }
    if (errno != EOPNOTSUPP) {
        return -errno;
    }
    /* A hole reads as zeros too, and more file systems can punch one. */
    if (!fallocate(raw->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   (off_t) offset, (off_t) len)) {
        return 0;
    }
    return errno == EOPNOTSUPP ? -EOPNOTSUPP : -errno;
}

static void
raw_close(struct blockdev *dev)
{
    struct blockdev_raw *raw = blockdev_raw_cast(dev);

    close(raw->fd);
    free(raw);
}

static const struct blockdev_ops raw_ops = {
    .read = raw_read,
    .write = raw_write,
    .flush = raw_flush,
    .trim = raw_trim,
    .write_zeroes = raw_write_zeroes,
    .close = raw_close,
};

int
blockdev_open_raw(const char *path, bool read_only,
                  struct blockdev **ret_dev, char **ret_err)
{
    struct blockdev_raw *raw = NULL;
    struct stat st;
    uint64_t size;
    int fd = -1;
    int rc;

    fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        if (ret_err) {
            *ret_err = xasprintf("%s: %s", path, strerror(errno));
        }
        goto out;
    }
    if (fstat(fd, &st)) {
        rc = -errno;
        if (ret_err) {
            *ret_err = xasprintf("%s: stat: %s", path, strerror(errno));
        }
        goto out;
    }
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, &size)) {
            rc = -errno;
            if (ret_err) {
                *ret_err = xasprintf("%s: cannot read the device size: %s",
                                     path, strerror(errno));
            }
            goto out;
        }
    } else if (S_ISREG(st.st_mode)) {
        size = (uint64_t) st.st_size;
    } else {
        rc = -EINVAL;
        if (ret_err) {
            *ret_err = xasprintf("%s: not a regular file or block device",
                                 path);
        }
        goto out;
    }

    raw = xcalloc(1, sizeof *raw);
    raw->up.ops = &raw_ops;
    raw->up.size = size;
    raw->up.read_only = read_only;
    raw->fd = fd;
    raw->is_blkdev = S_ISBLK(st.st_mode);
    fd = -1;
    *ret_dev = &raw->up;
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}
