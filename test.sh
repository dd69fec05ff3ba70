#!/bin/sh
# test.sh — builds the toolstack with AddressSanitizer and
# UndefinedBehaviorSanitizer and runs every test (the Xen system test on a
# release build, under QEMU); the last line is
# "N passed, N failed, N skipped".  Optional argument: a filter on test
# names (e.g. ./test.sh integration).
set -e
top=$(cd "$(dirname "$0")" && pwd)
"$top/scripts/install-deps.sh" test
"$top/scripts/build.sh" "$top/build-asan" --enable-asan
# A release build too, for the Xen system test (Xen under QEMU).
"$top/scripts/build.sh" "$top/build"
export XAPI_SYSTEM_BUILD_DIR="$top/build"
exec "$top/tests/run-tests.sh" "$top/build-asan" "$@"
