#!/bin/bash
# run.sh — the Xen system test: boots Debian's Xen 4.17 with a Linux Dom0
# under QEMU's software emulation (TCG), runs this toolstack's
# `xapi --backend xen` in Dom0 and drives real PV and PVH guests through
# the XenAPI (scenario.py, from the host over a forwarded loopback port).
#
# Usage: tests/system/xen/run.sh BUILD_DIR
#
# Everything Xen-side comes from Debian packages fetched with
# `apt-get download` and unpacked with `dpkg -x` into a cache
# (XENTEST_CACHE, default /var/tmp/xapi-xenlab-cache); nothing is
# installed on the host.  The host needs qemu-system-x86, cpio, gcc (for the
# static qexit helper) and python3.  Prints TAP lines and how long each
# phase took; exits non-zero when a test failed.  When QEMU or the packages
# cannot be had, it says so in one SKIP line and exits 0.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd) || exit 2
cache=${XENTEST_CACHE:-/var/tmp/xapi-xenlab-cache}
work=$build/tests/system-xen
timeout_s=${XENTEST_TIMEOUT:-540}
# XENTEST_DUMP=1 prints the logs even when everything passed.
T_START=$(date +%s.%N)
T_PHASE=$T_START

phase() {
    local now
    now=$(date +%s.%N)
    awk -v a="$now" -v b="$T_PHASE" -v n="$1" 'BEGIN { printf "# phase %s: %.1fs\n", n, a - b }'
    T_PHASE=$now
}
skip() { echo "ok - xen system test # SKIP $*"; exit 0; }
fail() { echo "not ok - $*"; exit 1; }

for tool in qemu-system-x86_64 cpio gcc python3 apt-get dpkg; do
    command -v $tool >/dev/null || skip "$tool is not installed (scripts/install-deps.sh installs qemu-system-x86)"
done
[ -x "$build/xapi/xapi" ] && [ -x "$build/storage/xapi-tapdisk" ] \
    || fail "no xapi/xapi or storage/xapi-tapdisk in $build"
grep -q -- '--enable-asan' "$build/.configure-args" 2>/dev/null \
    && echo "# warning: $build is an ASan build; a release build is faster under TCG"

# ---- 1. Debian packages, cached ----
KV=6.1.0-56
pkgs="xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils
 libxencall1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenmisc4.17
 libxenstore4 libxentoollog1 libxendevicemodel1 libxentoolcore1 libxenhypfs1
 libyajl2 busybox-static nbd-client libnl-3-200 libnl-genl-3-200
 lvm2 dmsetup libdevmapper1.02.1 libdevmapper-event1.02.1 libaio1 libedit2"
mkdir -p "$cache/debs"
# The kernel ABI moves with Debian's updates: take the one the metapackage
# names today, and keep using a cached one when the index is unreachable.
kimg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-6/{print $2; exit}')
cimg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-6/{print $2; exit}')
[ -n "$kimg" ] && [ -n "$cimg" ] && pkgs="$pkgs $kimg $cimg"
stamp=$cache/root.stamp
if [ "$(cat "$stamp" 2>/dev/null)" != "$(echo $pkgs)" ]; then
    need=
    for p in $pkgs; do
        ls "$cache/debs/${p}_"*.deb >/dev/null 2>&1 || need="$need $p"
    done
    if [ -n "$need" ]; then
        (cd "$cache/debs" && apt-get download -q $need 2>&1 | grep -v -e unsandboxed -e '^Get:' -e '^Fetched') \
            || true
        for p in $need; do
            ls "$cache/debs/${p}_"*.deb >/dev/null 2>&1 || skip "cannot download Debian package $p (apt-get update? network?)"
        done
    fi
    rm -rf "$cache/root"; mkdir -p "$cache/root"
    for p in $pkgs; do dpkg -x "$(ls -t "$cache/debs/${p}_"*.deb | head -1)" "$cache/root"; done
    echo $pkgs > "$stamp"
fi
R=$cache/root
KV=$(ls "$R/lib/modules" | grep -v cloud | sort | tail -1)
CKV=$(ls "$R/lib/modules" | grep cloud | sort | tail -1)
[ -n "$KV" ] && [ -n "$CKV" ] || skip "no Debian kernel in $cache"
if [ ! -s "$cache/xen.elf" ] || [ "$R/boot/xen-4.17-amd64.gz" -nt "$cache/xen.elf" ]; then
    # QEMU's multiboot loader needs the uncompressed 32-bit ELF.
    zcat "$R/boot/xen-4.17-amd64.gz" > "$cache/xen.elf"
fi
if [ ! -s "$cache/vmlinux-$KV" ]; then
    # Decompressing the XZ bzImage here saves Xen ~4 s of TCG time.
    python3 - "$R/boot/vmlinuz-$KV" "$cache/vmlinux-$KV" <<'PY'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:]))
PY
fi
phase packages

# ---- 2. initramfs for the guests and for Dom0 ----
rm -rf "$work"; mkdir -p "$work"
G=$work/guestfs
mkdir -p $G/bin $G/sbin $G/proc $G/sys $G/dev $G/lib
cp "$R/bin/busybox" $G/bin/
cp "$here/guest-init.sh" $G/init
# The kernel runs /sbin/poweroff for control/shutdown; our init is not
# busybox init, so power off at once.
printf '#!/bin/busybox sh\n/bin/busybox sync\n/bin/busybox poweroff -f\n' > $G/sbin/poweroff
chmod +x $G/sbin/poweroff $G/init
cp "$R/lib/modules/$CKV/kernel/drivers/block/xen-blkfront.ko" $G/lib/
(cd $G && find . | cpio -o -H newc --quiet | gzip -1) > "$work/guest-initrd.gz"

gcc -O2 -static -Wall -Wextra -Werror -o "$work/qexit" "$here/qexit.c" || fail "cannot build qexit"
# The provider's migration, which the XenAPI cannot reach yet (see
# xenops-migrate.c), linked with the build's own provider library.
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -pthread -D_GNU_SOURCE -I"$top" -I"$top/lib" -I"$build" \
    -o "$work/xenops-migrate" "$here/xenops-migrate.c" "$build/xenops/libxenops.a" \
    "$build/lib/libutil.a" -lxenlight -lxenctrl -lxenstore -lxentoollog \
    || echo "# cannot build xenops-migrate: the provider's migration is not tested"

D=$work/dom0fs
mkdir -p $D/{bin,proc,sys,dev,run,tmp,etc/xen/scripts,var/lib/xen,var/log/xen/console,lib/modules,lib64,lib/x86_64-linux-gnu,guest,usr/lib/xen-4.17/bin,usr/bin,usr/sbin,sbin}
ln -s ../run $D/var/run
cp "$R/bin/busybox" $D/bin/busybox
for a in $("$R/bin/busybox" --list-full | grep -v '^bin/busybox$'); do
    mkdir -p "$D/$(dirname $a)"; ln -sf /bin/busybox "$D/$a"
done
M=$R/lib/modules/$KV/kernel
for m in drivers/xen/xen-privcmd.ko drivers/xen/xenfs/xenfs.ko drivers/xen/xen-evtchn.ko \
         drivers/xen/xen-gntdev.ko drivers/xen/xen-gntalloc.ko drivers/block/xen-blkback/xen-blkback.ko \
         drivers/net/xen-netback/xen-netback.ko drivers/block/nbd.ko \
         drivers/net/ethernet/intel/e1000/e1000.ko drivers/md/dm-mod.ko drivers/block/loop.ko \
         drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko drivers/virtio/virtio_pci_modern_dev.ko \
         drivers/virtio/virtio_pci_legacy_dev.ko drivers/virtio/virtio_pci.ko drivers/block/virtio_blk.ko; do
    cp "$M/$m" $D/lib/modules/
done
XB=$R/usr/lib/xen-4.17/bin
# Debian's wrappers in /usr/sbin pick a version; call the binaries directly.
for b in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do
    cp "$XB/$b" $D/usr/lib/xen-4.17/bin/; ln -sf /usr/lib/xen-4.17/bin/$b $D/usr/sbin/$b
done
cp "$R/usr/bin/xenstore" $D/usr/bin/
for c in read write ls list rm exists chmod watch; do ln -sf xenstore $D/usr/bin/xenstore-$c; done
cp "$R/sbin/nbd-client" "$R/sbin/lvm" "$R/sbin/dmsetup" $D/sbin/
for c in $(find "$R/sbin" -type l -lname lvm -printf '%f\n'); do ln -sf lvm $D/sbin/$c; done
# No udev in Dom0: lvm2 makes the device nodes itself and waits for nobody.
mkdir -p $D/etc/lvm $D/run/lvm
printf 'activation {\n udev_sync = 0\n udev_rules = 0\n}\ndevices {\n obtain_device_list_from_udev = 0\n}\n' > $D/etc/lvm/lvm.conf
cp "$build/xapi/xapi" "$build/storage/xapi-tapdisk" "$work/qexit" $D/usr/bin/
[ -x "$work/xenops-migrate" ] && cp "$work/xenops-migrate" $D/usr/bin/
cp "$here/block-nbd-unix" $D/etc/xen/scripts/
cp -a "$R/etc/xen/xl.conf" $D/etc/xen/
cp "$here/dom0-init.sh" $D/init; chmod +x $D/init
echo "root:x:0:0:root:/root:/bin/sh" > $D/etc/passwd
echo "root:x:0:" > $D/etc/group
echo "dom0" > $D/etc/hostname
printf '127.0.0.1 localhost dom0\n' > $D/etc/hosts
# Shared libraries: Debian's Xen libraries from the packages, the rest
# (libc, OpenSSL, ... for our binaries) from this host, which is the same
# Debian release the build used.
for f in $D/usr/lib/xen-4.17/bin/* $D/usr/bin/xenstore $D/sbin/nbd-client $D/sbin/lvm $D/sbin/dmsetup $D/usr/bin/xapi $D/usr/bin/xapi-tapdisk $D/usr/bin/xenops-migrate; do
    [ -e "$f" ] || continue
    LD_LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu:$R/lib/x86_64-linux-gnu ldd "$f" | awk '/=> \//{print $3} / not found/{print "MISSING " $1}'
done | sort -u | while read -r lib rest; do
    [ "$lib" = MISSING ] && { echo "# missing library $rest"; continue; }
    cp -L "$lib" $D/lib/x86_64-linux-gnu/
done
cp -L /lib64/ld-linux-x86-64.so.2 $D/lib64/
# glibc dlopen()s libgcc_s for pthread_cancel and thread exit.
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 $D/lib/x86_64-linux-gnu/
# The cloud kernel is LZ4-compressed: libxenguest unpacks it in ~2.5 s
# under TCG (the XZ one takes ~12 s).
cp "$R/boot/vmlinuz-$CKV" $D/guest/vmlinuz
cp "$work/guest-initrd.gz" $D/guest/initrd.gz
(cd $D && find . | cpio -o -H newc --quiet | gzip -1) > "$work/dom0-initrd.gz"
echo "# dom0 initramfs: $(du -h "$work/dom0-initrd.gz" | cut -f1), kernel $KV, guest kernel $CKV"
phase initramfs

# ---- 3. boot ----
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port=$(free_port); ctl_port=$(free_port)
serial=$work/serial.log
# The second disk holds the lvm SR's volume group (sparse; 1 GiB).
rm -f "$work/lvm.img"; truncate -s 1G "$work/lvm.img"
# -cpu max,-smap: a 64-bit PV Dom0 dies at its first instruction with SMAP
# under TCG.  -rdtscp: QEMU's emulated SVM reports RDTSCP as an RDTSC exit
# and Xen kills PVH guests.  -pku: XRSTOR #GP with PKRU state.
timeout --foreground -k 10 "$timeout_s" qemu-system-x86_64 -M pc -accel tcg,thread=multi \
    -cpu max,-smap,-rdtscp,-pku -smp 2 -m 2048 \
    -display none -serial "file:$serial" -monitor none -no-reboot \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -drive file="$work/lvm.img",format=raw,if=virtio,cache=unsafe \
    -nic user,model=e1000,restrict=on,hostfwd=tcp:127.0.0.1:$api_port-:80,hostfwd=tcp:127.0.0.1:$ctl_port-:81 \
    -kernel "$cache/xen.elf" \
    -append "console=com1 com1=115200,8n1 dom0_mem=768M,max:768M dom0_max_vcpus=1 loglvl=all guest_loglvl=all" \
    -initrd "$cache/vmlinux-$KV console=hvc0 rdinit=/init quiet XAPI_DUMP=${XENTEST_DUMP:-},$work/dom0-initrd.gz" \
    </dev/null >"$work/qemu.log" 2>&1 &
qpid=$!
ready=0
while kill -0 $qpid 2>/dev/null; do
    if grep -q '^XAPI-READY' "$serial" 2>/dev/null; then ready=1; break; fi
    sleep 0.5
done
grep -aE '^(ok|not ok) - ' "$serial"
phase boot

show_logs() {
    echo "# ---- QEMU ----"; sed 's/^/# /' "$work/qemu.log"
    if grep -q '==== BEGIN LOGS' "$serial"; then
        echo "# ---- Xen boot and Dom0 kernel (serial, first 120 lines) ----"
        head -n 120 "$serial" | sed 's/^/# /'
        echo "# ---- logs dumped by Dom0 ----"
        sed -n '/==== BEGIN LOGS/,/==== END LOGS/p' "$serial" | sed 's/^/# /'
    else
        echo "# ---- serial console (Xen, Dom0; last 200 lines) ----"
        tail -n 200 "$serial" | sed 's/^/# /'
    fi
}

rc=0
if [ $ready = 1 ]; then
    PYTHONPATH=$top/sdk/python XENTEST_KERNEL=/guest/vmlinuz XENTEST_RAMDISK=/guest/initrd.gz \
        timeout -k 5 $((timeout_s - 60)) python3 -u "$here/scenario.py" "http://127.0.0.1:$api_port" || rc=1
    phase scenario
    echo "done $rc" | python3 -c "
import socket, sys
s = socket.create_connection(('127.0.0.1', $ctl_port), timeout=10)
s.sendall(sys.stdin.buffer.read()); s.close()" || echo "# cannot reach Dom0's control port"
else
    echo "not ok - Xen and Dom0 boot to a ready xapi under QEMU"
    rc=1
fi
wait $qpid
qrc=$?
phase shutdown
rm -f "$work/lvm.img"
# isa-debug-exit: QEMU exits with (code << 1) | 1; Dom0 writes 10 when the
# scenario passed, 11 when it failed, 3 when Dom0 itself failed.
case $qrc in
21) echo "ok - QEMU powered off by Dom0 after the scenario" ;;
23) echo "ok - QEMU powered off by Dom0 after the scenario (which failed)" ;;
124|137) echo "not ok - QEMU timed out after ${timeout_s}s"; rc=1 ;;
*) echo "not ok - QEMU exited with status $qrc"; rc=1 ;;
esac
grep -aE '^(ok|not ok) - xenops' "$serial"
grep -aqE '^not ok - (dom0|xenops)' "$serial" && rc=1
[ $rc = 0 ] && [ -z "${XENTEST_DUMP:-}" ] || show_logs
awk -v a="$(date +%s.%N)" -v b="$T_START" 'BEGIN { printf "# total: %.1fs\n", a - b }'
exit $rc
