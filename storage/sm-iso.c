/* sm-iso.c — the iso SR driver (to be written). */
#include <config.h>
