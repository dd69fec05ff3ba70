/* vhd.h — Microsoft VHD images (dynamic and differencing, read-write;
 * fixed, read-write in place) and chains of them, the format of XenServer's
 * file-based SRs.  The block server reaches a chain through struct blockdev
 * (blockdev_open_vhd()); the SR drivers use the rest: create, snapshot,
 * coalesce, resize, reparent, hide, check, and raw import/export.
 *
 * Units and alignment.  VHD is sector based: offsets and lengths given to
 * vhd_read(), vhd_write() and vhd_write_zeroes() are bytes and must be
 * multiples of VHD_SECTOR_SIZE (-EINVAL otherwise).  The struct blockdev
 * view accepts any byte range and does the read-modify-write itself.
 *
 * Durability.  vhd_write() puts the data in the file at once but keeps
 * metadata (block allocation table entries, sector bitmaps) in memory;
 * vhd_flush() makes everything durable in an order that survives a crash
 * or power loss at any point (docs/vhd.md).  A write is acknowledged when
 * a later vhd_flush() has returned 0; a crash may lose writes that were
 * not, like a disk's volatile write cache.  vhd_close() flushes.  Another
 * process reading the file sees writes only after a flush.
 *
 * Threads.  A struct vhd is used by one thread at a time.  Opening an
 * image read-write takes an exclusive flock(): a second writer gets
 * -EBUSY.
 *
 * Errors.  Functions return 0 or a negative errno value; those that take
 * char **ret_err also set it, on failure only, to a message the caller
 * frees (it names the file).  -EINVAL from an open means the image is
 * malformed; vhd_check() says how. */
#ifndef VHD_H
#define VHD_H 1

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct blockdev;
struct vhd;

#define VHD_SECTOR_SIZE 512
#define VHD_DEFAULT_BLOCK_SIZE (2u << 20)
/* The largest virtual size the format describes (2040 GiB); qemu and
 * Hyper-V refuse larger dynamic disks. */
#define VHD_MAX_SIZE (2040ull << 30)
/* Longest chain vhd_chain_open() follows (XenServer stops at 30). */
#define VHD_MAX_CHAIN_DEPTH 64

enum vhd_type {
    VHD_TYPE_FIXED = 2,
    VHD_TYPE_DYNAMIC = 3,
    VHD_TYPE_DIFF = 4,
};

/* Returns "fixed", "dynamic" or "differencing". */
const char *vhd_type_name(enum vhd_type type);

/* Called by long operations after each block; a nonzero return stops the
 * operation, which then fails with -ECANCELED. */
typedef int vhd_progress_fn(void *aux, uint64_t done, uint64_t total);

struct vhd_create_opts {
    /* Bytes, a multiple of 512, at most VHD_MAX_SIZE.  For a
     * differencing disk 0 means the parent's size. */
    uint64_t virtual_size;
    /* A power of two from 512 bytes to 256 MiB; 0 means 2 MiB, or the
     * parent's block size for a differencing disk. */
    uint32_t block_size;
    /* NULL: a dynamic disk.  Otherwise a differencing disk whose parent
     * is this image; its locators record the parent's absolute and
     * relative paths as XenServer does (MacX, W2ku, W2ru). */
    const char *parent_path;
    const char *uuid;           /* NULL: a random one */
    int64_t timestamp;          /* creation, Unix seconds; 0: now */
    /* Reserve BAT entries for this virtual size so that growing up to it
     * never moves data (0: the virtual size only). */
    uint64_t max_size;
    /* Write the image into path, which exists and keeps its size (a
     * logical volume, or a file standing for one), with the footer at its
     * end: see "Images in containers" below. */
    bool container;
};

/* Creates a new image at path (which must not exist). */
int vhd_create(const char *path, const struct vhd_create_opts *opts,
               char **ret_err);

/* Creates child_path as an empty differencing disk over parent_path, with
 * the parent's size and block size: what a snapshot needs. */
int vhd_snapshot(const char *parent_path, const char *child_path,
                 char **ret_err);

/* Opens one image.  A differencing disk opened this way reads as zeros
 * where it holds no data; vhd_chain_open() adds its parents. */
int vhd_open(const char *path, bool read_only, struct vhd **ret_vhd,
             char **ret_err);
/* Opens leaf and, through the parent locators, every parent (read-only),
 * checking each parent's UUID against its child's header.  Reads fall
 * through to the parents sector by sector; writes go to the leaf. */
int vhd_chain_open(const char *leaf, bool read_only, struct vhd **ret_vhd,
                   char **ret_err);
/* Images in containers.  An image may live in a file or block device
 * whose size is not its own: a logical volume of XenServer's LVHD SRs
 * (docs/lvhd.md).  Its footer then sits at the container's end, and new
 * blocks (and other appended structures) go into the room between the end
 * of the data and the footer, written whole since that room holds old
 * contents.  A block device is always opened this way; VHD_OPEN_CONTAINER
 * asks for it on a regular file (a simulated volume), where it also keeps
 * the file from growing: a write that needs more room than the container
 * has fails with -ENOSPC.  On a regular file opened normally, room below
 * the footer is used when a block fits there and the file grows
 * otherwise, so images without such room behave as before. */
#define VHD_OPEN_READ_ONLY 1u
#define VHD_OPEN_CONTAINER 2u
int vhd_open_ex(const char *path, unsigned flags, struct vhd **ret_vhd,
                char **ret_err);
/* Writes the footer so that the image ends at new_size bytes (a multiple
 * of 512, at most the container's current size, and past the data):
 * before a volume shrinks to new_size (deflate) or after it grew to it
 * (inflate).  The image must be open read-write with VHD_OPEN_CONTAINER
 * (or be a block device).  The footer at the old end stays valid until the
 * volume is resized, so either end holds a footer. */
int vhd_move_footer(struct vhd *vhd, uint64_t new_size, char **ret_err);

/* Flushes (if writable) and closes the image and its open parents. */
void vhd_close(struct vhd *vhd);

int vhd_read(struct vhd *vhd, void *buf, uint64_t offset, size_t len);
int vhd_write(struct vhd *vhd, const void *buf, uint64_t offset,
              size_t len);
/* Makes the range read as zeros, leaving unallocated blocks of a dynamic
 * disk unallocated. */
int vhd_write_zeroes(struct vhd *vhd, uint64_t offset, uint64_t len);
int vhd_flush(struct vhd *vhd);

/* Allocation: from offset, the length of the run over which the chain
 * either holds data in some image (*ret_data true) or holds none and reads
 * as zeros.  Runs are whole blocks of the leaf, clipped to the virtual
 * size.  offset must be below the virtual size. */
int vhd_extent(struct vhd *vhd, uint64_t offset, uint64_t *ret_len,
               bool *ret_data);

uint64_t vhd_virtual_size(const struct vhd *vhd);

/* Caps the memory each image of the chain spends caching sector bitmaps
 * (default 16 MiB, the bitmaps of 32 GiB of 2 MiB blocks); a full cache
 * is written back and emptied.  Tests make it tiny to exercise that. */
void vhd_set_bitmap_cache_size(struct vhd *vhd, size_t bytes);

struct vhd_info {
    enum vhd_type type;
    uint64_t virtual_size;
    uint32_t block_size;            /* 0 for a fixed disk */
    uint32_t max_blocks;            /* BAT entries */
    uint32_t allocated_blocks;
    uint64_t physical_size;         /* bytes in the file */
    uint64_t physical_utilisation;  /* bytes of metadata and blocks */
    char uuid[37];
    char parent_uuid[37];           /* "" unless differencing */
    char *parent_name;              /* the header's parent name, or NULL */
    char *parent_path;              /* the open parent's path, or NULL */
    int64_t timestamp;              /* creation, Unix seconds */
    bool hidden;                    /* XenServer's hidden flag */
    char creator[5];                /* creator application, e.g. "tap" */
    /* Where the data ends (header, BAT, locators, blocks): the smallest
     * size a container can shrink to is this plus the footer. */
    uint64_t data_end;
};

int vhd_get_info(const struct vhd *vhd, struct vhd_info *ret_info);
/* Frees what vhd_get_info() allocated; accepts NULL. */
void vhd_info_clear(struct vhd_info *info);

/* Follows a differencing disk's locators to its parent's path (checking
 * the parent's UUID). */
int vhd_find_parent(struct vhd *vhd, char **ret_path, char **ret_err);

/* Checks an image without trusting it: footer and header cookies and
 * checksums, the footer copy, the BAT and every block, locator and
 * structure lying inside the file without overlapping, and (with
 * check_parent) that the parent can be found and has the recorded UUID.
 * Returns 0 if the image is sound, -EINVAL with *ret_report listing the
 * problems if not, or another -errno if it could not be read. */
int vhd_check(const char *path, bool check_parent, char **ret_report);

/* Merges the allocated sectors of the differencing disk child_path into
 * its parent (growing the parent first if the child is larger).  A crash
 * leaves both images valid and the chain reading the same data.  The
 * caller makes sure no other image has this parent, since their view of
 * it changes, and afterwards reparents the child's children and deletes
 * the child. */
int vhd_coalesce(const char *child_path, vhd_progress_fn *progress,
                 void *aux, char **ret_err);

/* Grows the virtual size (a multiple of 512, at most VHD_MAX_SIZE),
 * growing the BAT and moving the first data blocks out of its way if it
 * must.  Shrinking is refused (-EINVAL). */
int vhd_resize(struct vhd *vhd, uint64_t new_size, char **ret_err);
/* Points a differencing disk at a new parent (after a coalesce). */
int vhd_set_parent(struct vhd *vhd, const char *parent_path,
                   char **ret_err);
/* Sets XenServer's hidden flag (a footer byte) on the image. */
int vhd_set_hidden(struct vhd *vhd, bool hidden);

/* Creates a dynamic disk at path holding the raw contents read from fd
 * (a file, device, pipe or socket), skipping blocks that are all zeros.
 * The size is opts->virtual_size, or the size of fd if that is 0 and fd
 * is a file or device.  opts may be NULL.  On failure path is removed. */
int vhd_import_raw(const char *path, int fd,
                   const struct vhd_create_opts *opts,
                   vhd_progress_fn *progress, void *aux, char **ret_err);
/* Writes the chain's contents to fd.  A regular file is truncated and
 * written with holes where the chain reads zeros; anything else gets
 * every byte in order. */
int vhd_export_raw(struct vhd *vhd, int fd, vhd_progress_fn *progress,
                   void *aux, char **ret_err);

/* Opens a chain (vhd_chain_open()) as a block device. */
int blockdev_open_vhd(const char *leaf, bool read_only,
                      struct blockdev **ret_dev, char **ret_err);

/* For writers that move data with the kernel (splice() from a socket):
 * makes the sectors [offset, offset + *ret_len) of the leaf of dev (a
 * device from blockdev_open_vhd(), open read-write) count as written,
 * allocating their block, and returns the file descriptor and file offset
 * where their data goes.  *ret_len is len clipped to the end of the block.
 * The caller must then write every byte of that range at that offset on
 * that descriptor before it uses dev again; the device's flush makes them
 * durable as if vhd_write() had written them.  offset and len must be
 * multiples of 512.  Returns -EOPNOTSUPP for any other kind of device. */
int blockdev_vhd_map_write(struct blockdev *dev, uint64_t offset,
                           uint64_t len, int *ret_fd,
                           uint64_t *ret_file_offset, uint64_t *ret_len);

#endif
