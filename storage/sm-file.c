/* sm-file.c — the file, ext and nfs SR drivers (to be written). */
#include <config.h>
