#!/bin/sh
# fuzz-long.sh — runs the fuzz targets (tests/fuzz/run-fuzzers.sh: XML-RPC,
# JSON and HTTP parsers under ASan + UBSan) for far longer than the test
# suite does: 2,000,000 runs per target by default instead of 20,000.
# Prints run-fuzzers.sh's TAP lines and exits non-zero if a target fails
# (a crash, a leak, a sanitizer report, a timeout); the failing input and
# the log are in the fuzz directory.
#
# Usage: bench/fuzz-long.sh [RUNS]
#   XAPI_FUZZ_DIR  where binaries, grown corpora and logs go (default
#                  /tmp/xapi-fuzz-long, kept between runs so that each run
#                  starts from the corpus the previous ones grew; separate
#                  from the test suite's /tmp/xapi-fuzz)
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-2000000}
case "$runs" in
''|*[!0-9]*) echo "usage: bench/fuzz-long.sh [RUNS]" >&2; exit 2 ;;
esac
"$top/scripts/install-deps.sh" test    # clang and its fuzzer runtime
XAPI_FUZZ_DIR=${XAPI_FUZZ_DIR:-/tmp/xapi-fuzz-long}
export XAPI_FUZZ_DIR
echo "fuzz-long: $runs runs per target, in $XAPI_FUZZ_DIR (logs: fuzz-*.log)"
start=$(date +%s)
status=0
"$top/tests/fuzz/run-fuzzers.sh" "$runs" || status=$?
echo "fuzz-long: done in $(( $(date +%s) - start )) s, status $status"
for log in "$XAPI_FUZZ_DIR"/fuzz-*.log; do
    [ -f "$log" ] || continue
    case "$log" in *.build.log) continue ;; esac
    # libFuzzer's last status line: runs, coverage, corpus size, exec/s.
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    [ -n "$last" ] && echo "  $(basename "$log" .log): $last"
done
exit $status
