#!/bin/sh
# test.sh — builds the toolstack with AddressSanitizer and
# UndefinedBehaviorSanitizer and runs every test; the last line is
# "N passed, N failed, N skipped".  Optional argument: a filter on test
# names (e.g. ./test.sh integration).
set -e
top=$(cd "$(dirname "$0")" && pwd)
"$top/scripts/install-deps.sh" test
"$top/scripts/build.sh" "$top/build-asan" --enable-asan
exec "$top/tests/run-tests.sh" "$top/build-asan" "$@"
