/* sm.c — the SR driver registry and helpers of storage/sm.h (to be written). */
#include <config.h>
