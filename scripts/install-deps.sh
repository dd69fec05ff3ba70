#!/bin/sh
# install-deps.sh — installs, with apt-get, the Debian 12 packages the
# build, the tests and the benchmarks need, skipping those already there.
# The base list also holds what the SR drivers run (mkfs.ext4, mount,
# showmount, mount.cifs, lvm).
# Usage: scripts/install-deps.sh [build|test|bench]   (default: build)
set -e
what=${1:-build}
pkgs="build-essential autoconf automake pkg-config python3 libssl-dev
libsqlite3-dev zlib1g-dev libcrypt-dev libpam0g-dev libxen-dev openssl ca-certificates
e2fsprogs util-linux nfs-common cifs-utils lvm2"
case "$what" in
test) pkgs="$pkgs clang libclang-rt-14-dev libxmlrpc-core-c3-dev libcurl4-openssl-dev curl libnbd-bin qemu-utils qemu-system-x86 cpio" ;;
bench) pkgs="$pkgs clang libxmlrpc-core-c3-dev libcurl4-openssl-dev curl wrk nginx-light libnbd-bin qemu-utils fio" ;;
esac
missing=
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: missing packages:$missing (run as root)" >&2
        exit 1
    fi
    echo "install-deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
