#!/bin/sh
# build.sh — configures and builds the tree in a build directory.
# Usage: scripts/build.sh BUILD_DIR [configure options...]
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
dir=$1
shift
if [ ! -x "$top/configure" ] || [ "$top/configure.ac" -nt "$top/configure" ]; then
    (cd "$top" && autoreconf -fi >/dev/null 2>&1) || (cd "$top" && autoreconf -fi)
fi
mkdir -p "$dir"
cd "$dir"
want="$*"
if [ ! -f Makefile ] || [ "$(cat .configure-args 2>/dev/null)" != "$want" ]; then
    "$top/configure" -q "$@"
    echo "$want" > .configure-args
fi
make -s -j"$(nproc)"
