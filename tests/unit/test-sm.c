/* test-sm.c — tests of the SR drivers (to be written). */
#include <config.h>

int
main(void)
{
    return 0;
}
