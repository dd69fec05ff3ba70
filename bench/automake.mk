# bench/ — benchmarks that print figures (never pass/fail on time).
noinst_PROGRAMS += bench/db-commit
bench_db_commit_SOURCES = bench/db-commit.c
bench_db_commit_CPPFLAGS = $(TEST_CPPFLAGS)
bench_db_commit_LDADD = $(XAPI_LIBS)
EXTRA_DIST += bench/run.sh bench/bench.py bench/http-load.c bench/post.lua \
	bench/fuzz-long.sh bench/event-latency.py
