#!/bin/sh
# run-tests.sh — runs every test against a build directory and prints the
# total as "N passed, N failed" (with ", N skipped").
#
# Usage: tests/run-tests.sh BUILD_DIR [FILTER]
# Every test program prints TAP-style lines ("ok - name", "not ok - name",
# "ok - name # SKIP why"); this script counts them.  A program that exits
# non-zero without reporting a failure counts as one failed test.
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: run-tests.sh BUILD_DIR [FILTER]}" && pwd)
filter=${2:-}
export XAPI_BUILD_DIR="$build" XAPI_TOP="$top"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
log=$(mktemp -d /tmp/xapi-tests.XXXXXX)
passed=0 failed=0 skipped=0
failures=

run() {
    name=$1
    shift
    case "$name" in *"$filter"*) ;; *) return ;; esac
    out="$log/$(echo "$name" | tr '/ ' '__').log"
    start=$(date +%s)
    "$@" >"$out" 2>&1
    rc=$?
    p=$(grep -c '^ok ' "$out")
    s=$(grep -c '^ok .*# SKIP' "$out")
    f=$(grep -c '^not ok ' "$out")
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        f=1
        echo "not ok - $name exited with status $rc" >>"$out"
    fi
    passed=$((passed + p - s))
    skipped=$((skipped + s))
    failed=$((failed + f))
    echo "$name: $((p - s)) passed, $f failed, $s skipped ($(( $(date +%s) - start ))s)"
    grep -E '^(not ok|ok .*# SKIP)' "$out" | sed 's/^/    /'
    if [ "$f" != 0 ]; then
        failures="$failures $name"
        echo "    --- output of $name (last 60 lines) ---"
        tail -n 60 "$out" | sed 's/^/    | /'
    fi
}

# Every C unit test in tests/unit (test-NAME.c builds tests/unit/test-NAME).
for src in "$top"/tests/unit/test-*.c; do
    t=$(basename "$src" .c)
    if [ "$t" = test-xen-config ] && [ ! -x "$build/tests/unit/$t" ]; then
        echo "unit/test-xen-config: not built (no libxen-dev)"
        continue
    fi
    run "unit/$t" "$build/tests/unit/$t"
done
run "unit/test_idl.py" python3 "$top/tests/unit/test_idl.py"
for t in "$top"/tests/integration/test_*.py; do
    [ -e "$t" ] || continue
    run "integration/$(basename "$t")" python3 "$t"
done
run "fuzz" sh "$top/tests/fuzz/run-fuzzers.sh" "${XAPI_FUZZ_RUNS:-20000}"
# The Xen system test boots Xen under QEMU and needs a release build (ASan
# is too slow under software emulation): ./test.sh gives one.
if [ -n "${XAPI_SYSTEM_BUILD_DIR:-}" ]; then
    run "system/xen" bash "$top/tests/system/xen/run.sh" "$XAPI_SYSTEM_BUILD_DIR"
else
    case "system/xen" in *"$filter"*)
        echo "system/xen: not run (set XAPI_SYSTEM_BUILD_DIR to a release build; ./test.sh does)" ;;
    esac
fi

echo
[ -n "$failures" ] && echo "failed:$failures (logs in $log)"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
