#!/bin/busybox sh
# dom0-init.sh — /init of the Dom0 initramfs that run.sh builds.
#
# It brings up what a Xen host needs under the toolstack (xenfs, the
# backend drivers, xenstored, xenconsoled), networking for QEMU's user-mode
# forward of the API port, and `xapi --backend xen`; then it waits for the
# host-side scenario (scenario.py) to say it is done over a control port,
# prints the logs a failure needs on the serial console, and powers the
# machine off with an exit code through QEMU's isa-debug-exit device.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LD_LIBRARY_PATH=/usr/lib/xen-4.17/lib
up() { read a b < /proc/uptime; echo "$a"; }
m() { echo "DOM0[$(up)s]: $*"; }
tap() { echo "$*"; }
die() {
    tap "not ok - dom0: $*"
    dump_logs
    qexit 3; poweroff -f
}
dump_logs() {
    echo "==== BEGIN LOGS ===="
    echo "---- xen log (xl dmesg) ----"; xl dmesg 2>&1 | grep -v -e '^(XEN)  *[0-9a-f]* ' | tail -n 60
    echo "---- xapi log (last 300 lines) ----"; tail -n 300 /var/log/xapi.log 2>/dev/null
    echo "---- xenops-migrate (last 120 lines) ----"; tail -n 120 /var/log/xenops-migrate.log 2>/dev/null
    echo "---- xenstored / xenconsoled ----"; tail -n 50 /var/log/xen/xenstored.log 2>/dev/null
    for f in /var/log/xen/console/*.log; do
        [ -e "$f" ] || continue
        echo "---- guest console $f ----"; tail -n 80 "$f"
    done
    for f in /var/log/xen/*.log; do
        [ -e "$f" ] || continue
        echo "---- $f ----"; tail -n 40 "$f"
    done
    echo "---- dom0 kernel (last 80 lines) ----"; dmesg | tail -n 80
    echo "==== END LOGS ===="
}

mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts; mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run; mkdir -p /run/xen /run/xenstored /run/lock/lvm /run/lvm
mount -t tmpfs -o size=1200m tmpfs /tmp
m "reached /init, hypervisor $(cat /sys/hypervisor/type) $(cat /sys/hypervisor/version/major).$(cat /sys/hypervisor/version/minor)"
# These are modules in Debian's kernel; nothing else loads them here.
for k in xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc xen-blkback xen-netback nbd e1000 \
         dm-mod loop virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    insmod /lib/modules/$k.ko $( [ $k = nbd ] && echo nbds_max=8 ) || m "insmod $k failed"
done
mount -t xenfs xenfs /proc/xen || die "cannot mount xenfs"
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2 \
    || m "no network: the scenario cannot be driven from the host"
xenstored --pid-file /run/xenstored.pid 2>/var/log/xen/xenstored.log \
    || die "xenstored did not start"
i=0; while ! xenstore-read / >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 100 ] && die "xenstored does not answer"; sleep 0.2; done
xen-init-dom0 >/var/log/xen/xen-init-dom0.log 2>&1 || die "xen-init-dom0 failed"
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console || die "xenconsoled did not start"
m "xen daemons up; disks: $(ls /dev/vd* 2>/dev/null)"
tap "ok - dom0: xenstored, xenconsoled and the backend drivers are up (at $(up)s)"

# The initramfs root is too small for suspend images (a guest's whole
# memory) and VDIs: the state directory gets a tmpfs of its own.
mkdir -p /var/lib/xapi
mount -t tmpfs -o size=600m tmpfs /var/lib/xapi
echo xenroot > /etc/xapi-root-password
xapi --state-dir /var/lib/xapi --listen 0.0.0.0:80 --backend xen --backend-config nbd_script=block-nbd-unix \
    --root-password-file /etc/xapi-root-password --log-level debug \
    >/run/xapi.ready 2>/var/log/xapi.log &
XAPI_PID=$!
i=0; while ! grep -q "xapi ready" /run/xapi.ready; do
    i=$((i+1))
    kill -0 $XAPI_PID 2>/dev/null || die "xapi exited: $(tail -n 5 /var/log/xapi.log)"
    [ $i -gt 600 ] && die "xapi not ready after 60s"
    sleep 0.1
done
m "$(cat /run/xapi.ready)"
tap "ok - dom0: xapi --backend xen is ready (at $(up)s)"
echo "XAPI-READY"

# The host side connects here once when it is done and sends its result
# ("done RC"); anything else (a hang) ends with QEMU's timeout on the host.
nc -l -p 81 > /run/control
read word rc < /run/control
m "control: $word $rc"
# xapi stops first: the provider's migration test below builds domains
# that xapi's database does not know.
kill $XAPI_PID 2>/dev/null
i=0; while kill -0 $XAPI_PID 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if [ -x /usr/bin/xenops-migrate ]; then
    t0=$(up)
    timeout 120 xenops-migrate /guest/vmlinuz /guest/initrd.gz > /run/migrate.tap 2>/var/log/xenops-migrate.log
    cat /run/migrate.tap
    grep -q '^not ok' /run/migrate.tap && rc=1
    m "xenops-migrate took $(awk "BEGIN{print $(up)-$t0}")s"
fi
[ "$rc" = 0 ] || dump_logs
[ -n "$XAPI_DUMP" ] && dump_logs
echo "DOM0-END rc=$rc"
qexit $(( ${rc:-1} == 0 ? 10 : 11 )); poweroff -f
