/* test-sm-lvm.c — tests of the LVHD driver (to be written). */
#include <config.h>

int
main(void)
{
    return 0;
}
