# idl/ — the datamodel (one .idl file per class, errors.idl,
# relations.idl) and its generators.  gen-c.py writes the C tables used by
# the daemon into the build tree.
IDL_FILES = $(wildcard $(srcdir)/idl/classes/*.idl) \
	$(srcdir)/idl/errors.idl $(srcdir)/idl/relations.idl
EXTRA_DIST += idl/idl.py idl/gen-c.py idl/import-reference.py idl/README.md \
	idl/classes idl/errors.idl idl/relations.idl

BUILT_SOURCES += xapi/schema-gen.h xapi/schema-gen.c
CLEANFILES += xapi/schema-gen.h xapi/schema-gen.c xapi/schema-gen.stamp

xapi/schema-gen.stamp: $(IDL_FILES) $(srcdir)/idl/idl.py $(srcdir)/idl/gen-c.py
	@$(MKDIR_P) xapi
	$(AM_V_GEN)$(PYTHON) $(srcdir)/idl/gen-c.py xapi && touch $@
xapi/schema-gen.h xapi/schema-gen.c: xapi/schema-gen.stamp
