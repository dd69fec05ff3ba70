# sdk/c/ — the C SDK, libxenserver, in the shape of XenServer's: headers
# and most code generated from idl/ by idl/gen-c-sdk.py into the build
# tree (sdk/c/include/xen/api/, sdk/c/xen-gen*); the hand-written core
# (xen-common.c) uses lib/'s value type and XML-RPC codec, compiled into
# the library.  Builds sdk/c/libxenserver.so (exporting only xen_*
# symbols), sdk/c/libxenserver.a (the same, other symbols localized),
# sdk/c/xenserver.pc, and the examples when libcurl is there.
SDK_C_SOVERSION = 1
SDK_C_HEADERS_DIR = sdk/c/include/xen/api

SDK_C_GEN_SOURCES = sdk/c/xen-gen.h sdk/c/xen-gen.c sdk/c/xen-gen-0.c \
	sdk/c/xen-gen-1.c sdk/c/xen-gen-2.c sdk/c/xen-gen-3.c sdk/c/xen-gen-4.c \
	sdk/c/xen-gen-5.c sdk/c/xen-gen-6.c sdk/c/xen-gen-7.c

BUILT_SOURCES += $(SDK_C_GEN_SOURCES) $(SDK_C_HEADERS_DIR)/xen_all.h
CLEANFILES += $(SDK_C_GEN_SOURCES) sdk/c/gen.stamp sdk/c/libxenserver.so \
	sdk/c/libxenserver.so.$(SDK_C_SOVERSION) sdk/c/libxenserver.a \
	sdk/c/libxenserver-all.o sdk/c/xenserver.pc
EXTRA_DIST += idl/gen-c-sdk.py sdk/c/libxenserver.map sdk/c/xenserver.pc.in \
	sdk/c/include/xen/api/xen_common.h sdk/c/examples sdk/c/tests

sdk/c/gen.stamp: $(IDL_FILES) $(srcdir)/idl/idl.py $(srcdir)/idl/gen-c-sdk.py
	@$(MKDIR_P) sdk/c
	$(AM_V_GEN)$(PYTHON) $(srcdir)/idl/gen-c-sdk.py sdk/c && touch $@
$(SDK_C_GEN_SOURCES) $(SDK_C_HEADERS_DIR)/xen_all.h: sdk/c/gen.stamp

# The objects of both libraries, position-independent.  lib/ sources are
# compiled again here (with -fPIC), not copied.
noinst_LIBRARIES += sdk/c/libxenserver-pic.a
sdk_c_libxenserver_pic_a_SOURCES = sdk/c/xen-common.c sdk/c/xen-internal.h \
	sdk/c/include/xen/api/xen_common.h \
	lib/util.c lib/value.c lib/xmlrpc.c
nodist_sdk_c_libxenserver_pic_a_SOURCES = $(SDK_C_GEN_SOURCES)
sdk_c_libxenserver_pic_a_CPPFLAGS = $(AM_CPPFLAGS) -I$(srcdir)/sdk/c \
	-I$(srcdir)/sdk/c/include -Isdk/c -Isdk/c/include
sdk_c_libxenserver_pic_a_CFLAGS = $(AM_CFLAGS) -fPIC
SDK_C_OBJECTS = $(sdk_c_libxenserver_pic_a_OBJECTS)

sdk/c/libxenserver.so.$(SDK_C_SOVERSION): $(SDK_C_OBJECTS) $(srcdir)/sdk/c/libxenserver.map
	$(AM_V_CCLD)$(CC) -shared -Wl,-soname,libxenserver.so.$(SDK_C_SOVERSION) \
		-Wl,--version-script=$(srcdir)/sdk/c/libxenserver.map \
		-Wl,--no-undefined $(SAN_CFLAGS) -pthread -o $@ $(SDK_C_OBJECTS) -lm
sdk/c/libxenserver.so: sdk/c/libxenserver.so.$(SDK_C_SOVERSION)
	$(AM_V_at)ln -sf libxenserver.so.$(SDK_C_SOVERSION) $@

# One relocatable object with every symbol but xen_* made local, so that
# static linking hides lib/'s helpers as the shared library does.
sdk/c/libxenserver.a: $(SDK_C_OBJECTS)
	$(AM_V_AR)rm -f $@ sdk/c/libxenserver-all.o && \
	$(CC) -nostdlib -r -o sdk/c/libxenserver-all.o $(SDK_C_OBJECTS) && \
	objcopy -w --keep-global-symbol='xen_*' sdk/c/libxenserver-all.o && \
	$(AR) $(ARFLAGS) $@ sdk/c/libxenserver-all.o && $(RANLIB) $@

sdk/c/xenserver.pc: $(srcdir)/sdk/c/xenserver.pc.in Makefile
	$(AM_V_GEN)sed -e 's|%prefix%|$(prefix)|' \
		-e 's|%exec_prefix%|$(exec_prefix)|' -e 's|%libdir%|$(libdir)|' \
		-e 's|%includedir%|$(includedir)|' -e 's|%version%|$(VERSION)|' \
		$(srcdir)/sdk/c/xenserver.pc.in > $@

# The examples need libcurl, which only the test dependencies install, so
# they are built when pkg-config finds it (make-time; configure.ac does
# not look for libcurl).
SDK_C_HAVE_CURL = $(shell $(PKG_CONFIG) --exists libcurl && echo yes)
SDK_C_CURL_CFLAGS = $(shell $(PKG_CONFIG) --cflags libcurl 2>/dev/null)
EXTRA_PROGRAMS = sdk/c/examples/list-vms sdk/c/examples/start-vm \
	sdk/c/examples/watch-events
# Built by sdk-c-all below, which automake does not read, since automake
# cannot list programs chosen at make time.
SDK_C_EXAMPLE_PROGS = $(if $(SDK_C_HAVE_CURL),sdk/c/examples/list-vms$(EXEEXT) \
	sdk/c/examples/start-vm$(EXEEXT) sdk/c/examples/watch-events$(EXEEXT))
CLEANFILES += $(EXTRA_PROGRAMS)
# Examples see only the installed-style headers, as an application would.
SDK_C_EX_CPP = -I$(srcdir)/sdk/c/include -Isdk/c/include \
	-I$(srcdir)/sdk/c/examples $(SDK_C_CURL_CFLAGS)
SDK_C_EX_LINK = $(AM_LDFLAGS) -Lsdk/c -Wl,-rpath,$(abs_builddir)/sdk/c
SDK_C_EX_LIBS = -lxenserver -lcurl
SDK_C_EX_DEPS = sdk/c/libxenserver.so
sdk_c_examples_list_vms_SOURCES = sdk/c/examples/list-vms.c \
	sdk/c/examples/transport.c sdk/c/examples/transport.h
sdk_c_examples_list_vms_CPPFLAGS = $(SDK_C_EX_CPP)
sdk_c_examples_list_vms_LDFLAGS = $(SDK_C_EX_LINK)
sdk_c_examples_list_vms_LDADD = $(SDK_C_EX_LIBS)
sdk_c_examples_list_vms_DEPENDENCIES = $(SDK_C_EX_DEPS)
sdk_c_examples_start_vm_SOURCES = sdk/c/examples/start-vm.c \
	sdk/c/examples/transport.c sdk/c/examples/transport.h
sdk_c_examples_start_vm_CPPFLAGS = $(SDK_C_EX_CPP)
sdk_c_examples_start_vm_LDFLAGS = $(SDK_C_EX_LINK)
sdk_c_examples_start_vm_LDADD = $(SDK_C_EX_LIBS)
sdk_c_examples_start_vm_DEPENDENCIES = $(SDK_C_EX_DEPS)
sdk_c_examples_watch_events_SOURCES = sdk/c/examples/watch-events.c \
	sdk/c/examples/transport.c sdk/c/examples/transport.h
sdk_c_examples_watch_events_CPPFLAGS = $(SDK_C_EX_CPP)
sdk_c_examples_watch_events_LDFLAGS = $(SDK_C_EX_LINK)
sdk_c_examples_watch_events_LDADD = $(SDK_C_EX_LIBS)
sdk_c_examples_watch_events_DEPENDENCIES = $(SDK_C_EX_DEPS)

# Hooks without recipes, so that other folders can add their own
# prerequisites to the same automake hooks.
all-local: sdk-c-all
install-exec-local: sdk-c-install-exec
install-data-local: sdk-c-install-data
uninstall-local: sdk-c-uninstall
clean-local: sdk-c-clean
.PHONY: sdk-c-all sdk-c-install-exec sdk-c-install-data sdk-c-uninstall \
	sdk-c-clean

sdk-c-all: sdk/c/libxenserver.so sdk/c/libxenserver.a sdk/c/xenserver.pc \
	$(SDK_C_EXAMPLE_PROGS)

sdk-c-install-exec: sdk/c/libxenserver.so sdk/c/libxenserver.a
	$(MKDIR_P) $(DESTDIR)$(libdir)
	$(INSTALL_PROGRAM) sdk/c/libxenserver.so.$(SDK_C_SOVERSION) $(DESTDIR)$(libdir)/
	ln -sf libxenserver.so.$(SDK_C_SOVERSION) $(DESTDIR)$(libdir)/libxenserver.so
	$(INSTALL_DATA) sdk/c/libxenserver.a $(DESTDIR)$(libdir)/

sdk-c-install-data: sdk/c/xenserver.pc sdk/c/gen.stamp
	$(MKDIR_P) $(DESTDIR)$(includedir)/xen/api $(DESTDIR)$(libdir)/pkgconfig
	$(INSTALL_DATA) $(SDK_C_HEADERS_DIR)/*.h $(DESTDIR)$(includedir)/xen/api/
	test -f $(SDK_C_HEADERS_DIR)/xen_common.h || \
		$(INSTALL_DATA) $(srcdir)/sdk/c/include/xen/api/xen_common.h \
		$(DESTDIR)$(includedir)/xen/api/
	$(INSTALL_DATA) sdk/c/xenserver.pc $(DESTDIR)$(libdir)/pkgconfig/

# Only the headers this build installs: xen/api/ may hold others'.
sdk-c-uninstall:
	for f in xen_common.h `cd $(SDK_C_HEADERS_DIR) 2>/dev/null && ls *.h`; do \
		rm -f $(DESTDIR)$(includedir)/xen/api/$$f; \
	done
	-rmdir $(DESTDIR)$(includedir)/xen/api $(DESTDIR)$(includedir)/xen 2>/dev/null
	rm -f $(DESTDIR)$(libdir)/libxenserver.so \
		$(DESTDIR)$(libdir)/libxenserver.so.$(SDK_C_SOVERSION) \
		$(DESTDIR)$(libdir)/libxenserver.a \
		$(DESTDIR)$(libdir)/pkgconfig/xenserver.pc

# Only generated headers: in a build in the source tree, xen_common.h
# sits among them.
sdk-c-clean:
	-test ! -d sdk/c/include || \
		find sdk/c/include -name '*.h' ! -name xen_common.h -exec rm -f {} +
