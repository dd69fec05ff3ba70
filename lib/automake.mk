# lib/ — shared utilities: allocation, strings, logging, hash maps, the
# value type and the XML-RPC / JSON codecs.
noinst_LIBRARIES += lib/libutil.a
lib_libutil_a_SOURCES = \
	lib/util.c lib/util.h \
	lib/strmap.c lib/strmap.h \
	lib/value.c lib/value.h \
	lib/codec.h lib/xmlrpc.c lib/json.c
