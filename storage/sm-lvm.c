/* sm-lvm.c — the lvm (LVHD) SR driver (to be written). */
#include <config.h>
