# tools/ — standalone programs for administrators: xapi-audit-verify checks
# the hash chain of an audit log (docs/audit-log.md).  They need lib/ and
# OpenSSL only, not the daemon.
bin_PROGRAMS += tools/xapi-audit-verify
tools_xapi_audit_verify_SOURCES = tools/xapi-audit-verify.c
tools_xapi_audit_verify_CPPFLAGS = $(AM_CPPFLAGS) $(OPENSSL_CFLAGS)
tools_xapi_audit_verify_LDADD = lib/libutil.a $(OPENSSL_LIBS)
