#!/bin/sh
# run-fuzzers.sh — builds the libFuzzer targets with clang (ASan + UBSan)
# and runs each for a bounded number of iterations over its seed corpus.
# Prints one TAP line per target.  Longer runs: bench/fuzz-long.sh.
# Usage: run-fuzzers.sh [RUNS]
top=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-20000}
out=${XAPI_FUZZ_DIR:-/tmp/xapi-fuzz}
mkdir -p "$out"
if ! command -v clang >/dev/null 2>&1; then
    echo "ok - fuzz # SKIP clang is not installed"
    exit 0
fi
cfg="$out/cfg"
mkdir -p "$cfg"
[ -f "$cfg/config.h" ] || echo '#define PACKAGE_VERSION "fuzz"' > "$cfg/config.h"
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE -I$cfg -I$top -I$top/lib -I$top/xapi -I$top/storage"
build() {
    name=$1
    shift
    # shellcheck disable=SC2086
    clang $flags "$@" -o "$out/$name" 2>"$out/$name.build.log"
}
status=0
for t in xmlrpc json http nbd vhd; do
    case $t in
    xmlrpc) srcs="$top/tests/fuzz/fuzz-xmlrpc.c $top/lib/xmlrpc.c $top/lib/value.c $top/lib/util.c" ;;
    json) srcs="$top/tests/fuzz/fuzz-json.c $top/lib/json.c $top/lib/value.c $top/lib/util.c" ;;
    http) srcs="$top/tests/fuzz/fuzz-http.c $top/xapi/http-parse.c $top/lib/util.c" ;;
    nbd) srcs="$top/tests/fuzz/fuzz-nbd.c $top/storage/nbd-server.c $top/lib/util.c" ;;
    vhd) srcs="$top/tests/fuzz/fuzz-vhd.c $top/storage/vhd.c $top/lib/util.c" ;;
    esac
    if ! build "fuzz-$t" $srcs; then
        echo "not ok - fuzz_$t (build failed)"
        cat "$out/fuzz-$t.build.log"
        status=1
        continue
    fi
    corpus="$out/corpus-$t"
    mkdir -p "$corpus"
    if "$out/fuzz-$t" -runs="$runs" -max_len=65536 -rss_limit_mb=1024 \
        "$corpus" "$top/tests/fuzz/corpus/$t" >"$out/fuzz-$t.log" 2>&1; then
        echo "ok - fuzz_$t ($runs runs)"
    else
        echo "not ok - fuzz_$t"
        tail -n 40 "$out/fuzz-$t.log"
        status=1
    fi
done
exit $status
