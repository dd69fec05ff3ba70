/* test-tapdisk-ctl.c — tests of block server control (to be written). */
#include <config.h>

int
main(void)
{
    return 0;
}
