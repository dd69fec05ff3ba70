# tests/ — unit tests (C programs printing TAP lines, and Python), the
# integration tests that start xapi, the fuzz targets, and the runner that
# counts everything (tests/run-tests.sh).
TEST_CPPFLAGS = $(AM_CPPFLAGS) -I$(srcdir)/xapi -I$(builddir)/xapi \
	-I$(srcdir)/tests/unit $(OPENSSL_CFLAGS) $(SQLITE_CFLAGS)

noinst_PROGRAMS += tests/unit/test-codec tests/unit/test-db \
	tests/unit/test-db-store tests/unit/test-query tests/unit/test-http
tests_unit_test_codec_SOURCES = tests/unit/test-codec.c tests/unit/test.h
tests_unit_test_codec_CPPFLAGS = $(TEST_CPPFLAGS)
tests_unit_test_codec_LDADD = lib/libutil.a
tests_unit_test_db_SOURCES = tests/unit/test-db.c
tests_unit_test_db_CPPFLAGS = $(TEST_CPPFLAGS)
tests_unit_test_db_LDADD = $(XAPI_LIBS)
tests_unit_test_db_store_SOURCES = tests/unit/test-db-store.c
tests_unit_test_db_store_CPPFLAGS = $(TEST_CPPFLAGS)
tests_unit_test_db_store_LDADD = $(XAPI_LIBS)
tests_unit_test_query_SOURCES = tests/unit/test-query.c
tests_unit_test_query_CPPFLAGS = $(TEST_CPPFLAGS)
tests_unit_test_query_LDADD = $(XAPI_LIBS)
tests_unit_test_http_SOURCES = tests/unit/test-http.c
tests_unit_test_http_CPPFLAGS = $(TEST_CPPFLAGS)
tests_unit_test_http_LDADD = $(XAPI_LIBS)
noinst_PROGRAMS += tests/unit/test-audit
tests_unit_test_audit_SOURCES = tests/unit/test-audit.c
tests_unit_test_audit_CPPFLAGS = $(TEST_CPPFLAGS)
tests_unit_test_audit_LDADD = $(XAPI_LIBS)

noinst_PROGRAMS += tests/unit/test-events
tests_unit_test_events_SOURCES = tests/unit/test-events.c tests/unit/test.h
tests_unit_test_events_CPPFLAGS = $(TEST_CPPFLAGS)
tests_unit_test_events_LDADD = $(XAPI_LIBS)

noinst_PROGRAMS += tests/unit/test-xenops-sim
tests_unit_test_xenops_sim_SOURCES = tests/unit/test-xenops-sim.c tests/unit/test.h
tests_unit_test_xenops_sim_CPPFLAGS = $(TEST_CPPFLAGS)
tests_unit_test_xenops_sim_LDADD = xenops/libxenops.a lib/libutil.a $(XEN_LIBS_IF)

# The Xen backend's pure parts; needs libxen-dev, not a hypervisor.
if HAVE_XEN
noinst_PROGRAMS += tests/unit/test-xen-config
tests_unit_test_xen_config_SOURCES = tests/unit/test-xen-config.c tests/unit/test.h
tests_unit_test_xen_config_CPPFLAGS = $(TEST_CPPFLAGS) $(XEN_CFLAGS)
tests_unit_test_xen_config_LDADD = xenops/libxenops.a lib/libutil.a $(XEN_LIBS)
endif
EXTRA_DIST += tests/unit/xen-config

if HAVE_XMLRPC_C
noinst_PROGRAMS += tests/integration/xmlrpc-c-client
tests_integration_xmlrpc_c_client_SOURCES = tests/integration/xmlrpc-c-client.c
tests_integration_xmlrpc_c_client_CFLAGS = $(AM_CFLAGS) $(XMLRPC_C_CFLAGS)
tests_integration_xmlrpc_c_client_LDADD = $(XMLRPC_C_LIBS)
endif

EXTRA_DIST += tests/run-tests.sh tests/unit/test_idl.py tests/integration \
	tests/fuzz

noinst_PROGRAMS += tests/unit/test-nbd
tests_unit_test_nbd_SOURCES = tests/unit/test-nbd.c tests/unit/test.h
tests_unit_test_nbd_CPPFLAGS = $(TEST_CPPFLAGS)
tests_unit_test_nbd_LDADD = storage/libstorage.a lib/libutil.a

noinst_PROGRAMS += tests/unit/test-vhd
tests_unit_test_vhd_SOURCES = tests/unit/test-vhd.c tests/unit/test.h \
	tests/unit/test-storage-util.h
tests_unit_test_vhd_CPPFLAGS = $(TEST_CPPFLAGS)
tests_unit_test_vhd_LDADD = storage/libstorage.a lib/libutil.a

# Storage: SR drivers (test-sm.c), block server control (test-tapdisk-ctl.c),
# LVHD (test-sm-lvm.c).
noinst_PROGRAMS += tests/unit/test-sm tests/unit/test-tapdisk-ctl \
	tests/unit/test-sm-lvm
tests_unit_test_sm_SOURCES = tests/unit/test-sm.c tests/unit/test.h \
	tests/unit/test-storage-util.h
tests_unit_test_sm_CPPFLAGS = $(TEST_CPPFLAGS) -I$(srcdir)/storage
tests_unit_test_sm_LDADD = storage/libstorage.a lib/libutil.a
tests_unit_test_tapdisk_ctl_SOURCES = tests/unit/test-tapdisk-ctl.c tests/unit/test.h
tests_unit_test_tapdisk_ctl_CPPFLAGS = $(TEST_CPPFLAGS) -I$(srcdir)/storage
tests_unit_test_tapdisk_ctl_LDADD = storage/libstorage.a lib/libutil.a
tests_unit_test_sm_lvm_SOURCES = tests/unit/test-sm-lvm.c tests/unit/test.h \
	tests/unit/test-storage-util.h
tests_unit_test_sm_lvm_CPPFLAGS = $(TEST_CPPFLAGS) -I$(srcdir)/storage
tests_unit_test_sm_lvm_LDADD = storage/libstorage.a lib/libutil.a
