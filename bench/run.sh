#!/bin/sh
# run.sh — runs the benchmarks and prints their figures.  It never passes or
# fails on a time; it exits non-zero only when something does not work.
#
# Usage: bench/run.sh [BUILD_DIR]
#   Without BUILD_DIR it builds (optimised, no sanitizers) into build/ with
#   scripts/build.sh.  With BUILD_DIR it uses that build, making sure
#   xapi/xapi and bench/db-commit in it are up to date.
#
# What it runs (see bench/bench.py for the details):
#   1. pool.get_all throughput with wrk -t2 -c8 -d10s over XML-RPC and
#      JSON-RPC, beside nginx serving a static 200 to the same POSTs;
#   2. VM.get_all_records with 10,000 VMs, end to end (bench/http-load.c);
#   3. durable commits/s: VM.set_name_label from 1 and 8 writers, and the
#      db-level bench/db-commit;
#   4. the daemon's VmRSS/VmHWM along the way;
#   5. event delivery latency; 6. VM lifecycle cycles;
#   7. the block server (xapi-tapdisk) beside qemu-nbd over NBD, and
#   8. /import_raw_vdi and /export_raw_vdi beside qemu-img convert, both on
#      4 GiB VHDs (bench/storage-bench.py, runnable alone; skip with
#      XAPI_BENCH_SKIP_STORAGE=1);
#   9. `xe vm-list` wall time with 500 and 10,000 VMs (bench/xe-bench.py,
#      runnable alone; skip with XAPI_BENCH_SKIP_XE=1).
# About 1.5 to 2 minutes after the build, plus about 4 for 7 and 8.  Needs root only to install
# missing packages (scripts/install-deps.sh bench).
set -e
top=$(cd "$(dirname "$0")/.." && pwd)

"$top/scripts/install-deps.sh" bench

if [ $# -ge 1 ]; then
    build=$(cd "$1" && pwd)
    if [ -f "$build/Makefile" ]; then
        make -s -C "$build" -j"$(nproc)" xapi/xapi bench/db-commit \
            storage/xapi-tapdisk cli/xe
    fi
else
    build=$top/build
    if ! "$top/scripts/build.sh" "$build"; then
        # The whole tree did not build (a test may be mid-edit); the
        # benchmarks need only the daemon and bench/db-commit.
        echo "bench: full build failed; building xapi/xapi, bench/db-commit, storage/xapi-tapdisk and cli/xe only" >&2
        make -s -C "$build" -j"$(nproc)" xapi/xapi bench/db-commit \
            storage/xapi-tapdisk cli/xe
    fi
fi
if [ ! -x "$build/xapi/xapi" ]; then
    echo "bench: $build/xapi/xapi is missing" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/xapi-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
cc -O2 -pthread -o "$work/http-load" "$top/bench/http-load.c"

echo "xapi benchmarks — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "tree:    $top ($(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?'), working tree may hold uncommitted changes)"
echo "build:   $build ($(grep -m1 '^CFLAGS = ' "$build/Makefile" 2>/dev/null | sed 's/^CFLAGS = //')$(grep -m1 '^SAN_CFLAGS = ..*' "$build/Makefile" >/dev/null 2>&1 && echo ', SANITIZERS ON'))"
echo "machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ {printf "%.0f MB", $2/1024}' /proc/meminfo), kernel $(uname -r)"
echo "disk:    $work on $(df -PT "$work" | awk 'NR==2 {print $2 " (" $1 ")"}')"
echo

python3 "$top/bench/bench.py" --build-dir "$build" --http-load "$work/http-load" \
    --work-dir "$work"

echo
echo "== 5. Event delivery latency: event.from with 100 watchers =="
python3 "$top/bench/event-latency.py" "$build"

echo
echo "== 6. VM lifecycle cycles =="
echo "(VM.start + VM.clean_shutdown from 8 clients, alone and with 1000 VMs resident;"
echo " simulated guest delays zero, so the toolstack's own time is measured)"
python3 "$top/bench/vm-cycles.py" "$build"

if [ -z "${XAPI_BENCH_SKIP_STORAGE:-}" ]; then
    echo
    echo "== 7-8. Storage: block server and VDI data over HTTP =="
    python3 "$top/bench/storage-bench.py" --build-dir "$build" --work-dir "$work"
fi

if [ -z "${XAPI_BENCH_SKIP_XE:-}" ]; then
    echo
    echo "== 9. xe vm-list with 500 and 10,000 VMs =="
    if [ -x "$build/cli/xe" ]; then
        python3 "$top/bench/xe-bench.py" "$build"
    else
        echo "(no $build/cli/xe: skipped)"
    fi
fi
