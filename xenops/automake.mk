# xenops/ — domain management: the provider interface and its backends
# (sim: the simulator; xen: libxl/libxenctrl/libxenstore, built when
# libxen-dev is present).
noinst_LIBRARIES += xenops/libxenops.a
xenops_libxenops_a_SOURCES = xenops/xenops.h xenops/xenops.c xenops/sim.c
if HAVE_XEN
xenops_libxenops_a_SOURCES += xenops/xen.c xenops/xen-config.c xenops/xen-config.h
xenops_libxenops_a_CFLAGS = $(AM_CFLAGS) $(XEN_CFLAGS)
endif
