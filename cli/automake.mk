# cli/ — xe, the command-line client.  Its class and field tables are
# generated from idl/ by cli/gen-xe-classes.py; the command table is
# cli/commands.def.
bin_PROGRAMS += cli/xe
cli_xe_SOURCES = cli/xe.h cli/xe-main.c cli/xe-rpc.c cli/xe-records.c \
	cli/xe-ops.c cli/xe-commands.c cli/commands.def
nodist_cli_xe_SOURCES = cli/xe-classes-gen.c
cli_xe_CPPFLAGS = $(AM_CPPFLAGS) -I$(srcdir)/cli $(OPENSSL_CFLAGS)
cli_xe_LDADD = lib/libutil.a $(OPENSSL_LIBS)
EXTRA_DIST += cli/gen-xe-classes.py cli/xe-completion.bash
BUILT_SOURCES += cli/xe-classes-gen.c
CLEANFILES += cli/xe-classes-gen.c

cli/xe-classes-gen.c: $(IDL_FILES) $(srcdir)/idl/idl.py $(srcdir)/cli/gen-xe-classes.py
	@$(MKDIR_P) cli
	$(AM_V_GEN)$(PYTHON) $(srcdir)/cli/gen-xe-classes.py $@
