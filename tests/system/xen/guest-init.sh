#!/bin/busybox sh
# guest-init.sh — /init of the guests' initramfs (run.sh builds it).
#
# The guest proves it ran by printing a marker on its console and, when it
# has a disk, by writing the marker to the disk's first sector; then it
# idles until the toolstack asks it to shut down (the kernel handles
# control/shutdown and runs /sbin/poweroff, which powers off at once).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
tok=$(/bin/busybox sed -n 's/.*xapitest=\([^ ]*\).*/\1/p' /proc/cmdline)
gt=$(/bin/busybox cat /sys/hypervisor/guest_type 2>/dev/null)
/bin/busybox insmod /lib/xen-blkfront.ko 2>/dev/null
i=0
while [ ! -b /dev/xvda ] && [ $i -lt 20 ] && /bin/busybox grep -q vbd /proc/cmdline; do
    /bin/busybox sleep 0.2; i=$((i+1))
done
if [ -b /dev/xvda ]; then
    echo "XAPI-DISK-MARKER $tok" | /bin/busybox dd of=/dev/xvda conv=notrunc,fsync 2>/dev/null \
        && disk=written || disk=failed
else
    disk=none
fi
echo "GUEST-MARKER $tok guest_type=$gt kernel=$(/bin/busybox uname -r) disk=$disk"
n=0
while :; do
    /bin/busybox sleep 2
    n=$((n+1))
    echo "GUEST-ALIVE $tok $n guest_type=$gt disk=$disk"
done
