# xapi/ — the daemon: HTTP(S) server, RPC codecs and dispatch, sessions,
# the database and its durable store, generic and hand-written message
# handlers.  Everything but main.c is in libxapi.a so tests can link it.
noinst_LIBRARIES += xapi/libxapi.a
xapi_libxapi_a_SOURCES = \
	xapi/schema.h xapi/schema.c \
	xapi/types.h xapi/types.c \
	xapi/db.h xapi/db.c xapi/db-store.h xapi/db-store.c \
	xapi/query.h xapi/query.c \
	xapi/http.h xapi/http.c xapi/http-parse.h xapi/http-parse.c \
	xapi/api.h xapi/rpc.c xapi/generic.c xapi/session.c \
	xapi/handlers.c xapi/firstboot.c xapi/vm.c xapi/task.c \
	xapi/events.c xapi/rbac.c xapi/audit.c xapi/lifecycle.c \
	xapi/templates.c xapi/host.c xapi/vm-ops.c xapi/console.c \
	xapi/storage.h xapi/storage.c xapi/vm-snapshot.c xapi/vdi-io.c xapi/xva.c xapi/import-export.h xapi/lifecycle.h
nodist_xapi_libxapi_a_SOURCES = xapi/schema-gen.c xapi/schema-gen.h
xapi_libxapi_a_CPPFLAGS = $(AM_CPPFLAGS) -I$(srcdir)/xapi -I$(builddir)/xapi \
	-I$(srcdir)/storage $(OPENSSL_CFLAGS) $(SQLITE_CFLAGS)

XAPI_LIBS = xapi/libxapi.a xenops/libxenops.a storage/libstorage.a lib/libutil.a \
	$(OPENSSL_LIBS) $(SQLITE_LIBS) $(ZLIB_LIBS) $(XEN_LIBS_IF)
if HAVE_XEN
XEN_LIBS_IF = $(XEN_LIBS)
endif

sbin_PROGRAMS += xapi/xapi
xapi_xapi_SOURCES = xapi/main.c
xapi_xapi_CPPFLAGS = $(xapi_libxapi_a_CPPFLAGS)
xapi_xapi_LDADD = $(XAPI_LIBS)
