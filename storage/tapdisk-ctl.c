/* tapdisk-ctl.c — control of xapi-tapdisk processes (to be written). */
#include <config.h>
