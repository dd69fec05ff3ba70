/* qexit.c — powers QEMU off with an exit code, through the isa-debug-exit
 * device at port 0xf4 that run.sh gives the machine (QEMU then exits with
 * (code << 1) | 1).  Dom0's /init runs it last; it is static so that it
 * needs nothing from the initramfs. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>

int
main(int argc, char *argv[])
{
    int code = argc > 1 ? atoi(argv[1]) : 0;

    if (ioperm(0xf4, 4, 1)) {
        perror("qexit: ioperm");
        return 1;
    }
    outl(code, 0xf4);
    return 0;
}
