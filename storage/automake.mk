# storage/ — the block data path: the block device interface (blockdev.h),
# raw files and devices (blockdev-raw.c), the VHD library (vhd.c) and the
# tapdisk-style block server that serves a device over NBD (nbd-server.c,
# xapi-tapdisk).
noinst_LIBRARIES += storage/libstorage.a
storage_libstorage_a_SOURCES = storage/blockdev.h storage/blockdev-raw.c \
	storage/nbd-server.c storage/nbd-server.h storage/vhd.c storage/vhd.h \
	storage/sm.h storage/sm-int.h storage/sm.c storage/sm-file.c \
	storage/sm-iso.c storage/sm-sim.c storage/sm-lvm.c storage/tapdisk-ctl.h \
	storage/tapdisk-ctl.c

sbin_PROGRAMS += storage/xapi-tapdisk
storage_xapi_tapdisk_SOURCES = storage/tapdisk.c
storage_xapi_tapdisk_LDADD = storage/libstorage.a lib/libutil.a
