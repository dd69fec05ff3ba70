/* sm-sim.c — the simulated SR driver (to be written). */
#include <config.h>
