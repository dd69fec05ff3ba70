/* tapdisk-ctl.h — starting and steering xapi-tapdisk processes from the
 * daemon: one block server per attached VDI (storage/tapdisk.c), serving
 * its image over NBD on a Unix socket.  xapi/storage.c starts one when a
 * VBD is plugged (VM.start, VBD.plug) and stops it when the VBD is
 * unplugged; around a snapshot or a GC swap of the image it pauses the
 * server (requests in flight finish, the image is flushed and closed, new
 * requests wait) and unpauses it (the same path is reopened, which is now
 * the new leaf).
 *
 * The child's standard input and output are pipes to this process; it
 * reports "ready", "paused" and "resumed" lines on stdout, and a closed
 * stdin tells it the daemon is gone (it then keeps serving: guests keep
 * their disks across a toolstack restart, as on XenServer).  Functions
 * return 0 or -errno with a malloc'd message in *ret_err. */
#ifndef TAPDISK_CTL_H
#define TAPDISK_CTL_H 1

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct tapdisk;

struct tapdisk_params {
    const char *program;        /* NULL: tapdisk_program() */
    const char *socket_path;    /* where to listen */
    const char *image_path;     /* file or device */
    const char *format;         /* "vhd" or "raw" */
    bool read_only;
    uint64_t iops;              /* 0: no limit */
    uint64_t kbps;              /* KiB/s, 0: no limit */
    const char *export_name;    /* NULL: "" */
    const char *description;    /* shown to NBD clients, NULL: none */
};

/* Where xapi-tapdisk is: $XAPI_TAPDISK if set, else next to the running
 * executable (../storage/xapi-tapdisk in a build tree, or the same
 * directory once installed), else "xapi-tapdisk" on $PATH. */
const char *tapdisk_program(void);

/* Starts a block server and waits (up to 10 s) until it serves. */
int tapdisk_start(const struct tapdisk_params *p, struct tapdisk **ret,
                  char **ret_err);
/* Quiesces it (see above) and waits for the acknowledgement. */
int tapdisk_pause(struct tapdisk *t, char **ret_err);
/* Reopens the image (the path given at start) and serves again. */
int tapdisk_unpause(struct tapdisk *t, char **ret_err);
/* Asks it to exit (SIGTERM: in-flight requests finish, the image is
 * flushed), waits up to 10 s, then kills it.  Accepts NULL. */
void tapdisk_stop(struct tapdisk *t);
/* Lets go of it without stopping it (the daemon shutting down while a
 * guest still uses the disk): closes the control channel, which the
 * server takes as the daemon being gone and serves on, and frees the
 * handle.  The process is neither signalled nor reaped; it can still be
 * found by its pid (a restarted daemon adopts it).  Accepts NULL. */
void tapdisk_release(struct tapdisk *t);

pid_t tapdisk_pid(const struct tapdisk *t);
const char *tapdisk_socket(const struct tapdisk *t);
/* "nbd+unix:///?socket=PATH" (or with the export name), what the
 * domain's disk backend is given. */
const char *tapdisk_uri(const struct tapdisk *t);

#endif
