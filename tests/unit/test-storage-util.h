/* test-storage-util.h — helpers the storage tests share (test-vhd.c,
 * test-sm.c, test-sm-lvm.c): running shell commands and asking whether
 * qemu-img, the independent VHD implementation they compare with, is
 * installed.  Header-only: each test program includes it once, after
 * test.h. */
#ifndef TEST_STORAGE_UTIL_H
#define TEST_STORAGE_UTIL_H 1

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

/* Runs a shell command built like printf and returns system()'s status;
 * a failure is reported on stderr, where a failing test's log shows it. */
static int PRINTF_FMT(1, 2)
sh(const char *fmt, ...)
{
    char *cmd;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    if (vasprintf(&cmd, fmt, ap) < 0) {
        abort();
    }
    va_end(ap);
    rc = system(cmd);
    if (rc) {
        fprintf(stderr, "  command failed (%d): %s\n", rc, cmd);
    }
    free(cmd);
    return rc;
}

/* Whether qemu-img runs here (asked once). */
static bool
have_qemu_img(void)
{
    static int have = -1;

    if (have < 0) {
        have = system("qemu-img --version >/dev/null 2>&1") == 0;
    }
    return have;
}

#endif
