#!/usr/bin/env python3
"""test_vm_storage.py — VMs with disks on the simulator and the default
local (VHD file) SR, as a XenAPI client sees them.

A VM installed from a template (clone, VM.provision) gets its disks; when
it starts each disk is served by a block server whose NBD socket the test
writes markers into (qemu-io) and reads back (nbdcopy); VM.snapshot of the
running VM keeps the data of that moment while later writes go to the VM
only; VM.revert brings the data back; VM.checkpoint records the memory as
well, and reverting to it leaves the VM suspended with that memory;
VM.suspend puts the memory image in a VDI of type suspend and VM.resume
takes it back; VM.clone makes small linked disks and VM.copy full ones,
both with the same data, VM.copy's progress rising across its disks;
rounds of checkpoint, revert and resume never meet the GC; a disk gone
from the storage is VDI_MISSING at start.  Every disk is also read from its VHD files by a
small reader in this test (and qemu-img, for VHDs without parent).  Illegal requests get
XenServer's errors."""
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import traceback

from xapitest import (Daemon, expect_error, finish_daemon, start_or_bail,
                      tap)

MiB = 1 << 20
SIZE = 16 * MiB
NULL = 'OpaqueRef:NULL'

missing = [p for p in ('qemu-img', 'qemu-io', 'nbdcopy') if not shutil.which(p)]
if missing:
    tap.skip('VM storage', 'not installed: %s' % ', '.join(missing))
    raise SystemExit(tap.finish())

tmp_ctl = os.path.join('/tmp', 'xapi-sim-ctl-vs-%d.sock' % os.getpid())
d = start_or_bail(Daemon(extra_args=[
    '--shutdown-timeout', '3',
    '--sim-config', 'cpus=4,memory_mib=8192,dom0_memory_mib=1024,'
    'boot_ms=20,shutdown_ms=50,control=%s' % tmp_ctl]))
c = d.client()
s = d.login(c)
work = tempfile.mkdtemp(prefix='xapi-vs-')


# ---- helpers ----

def control(line):
    """Sends one command to the simulator's control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sk:
        sk.settimeout(5)
        sk.connect(tmp_ctl)
        sk.sendall((line + '\n').encode())
        data = b''
        while not data.endswith(b'\n'):
            chunk = sk.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def disk_vbd(vm):
    for vbd in c.VM.get_VBDs(s, vm):
        if c.VBD.get_type(s, vbd) == 'Disk':
            return vbd
    raise AssertionError('VM has no disk')


def disk_of(vm):
    return c.VBD.get_VDI(s, disk_vbd(vm))


def nbd_uri(vbd):
    """Where the block server of a plugged VBD listens (storage.c keeps
    its sockets in STATE_DIR/tapdisk/VBD-UUID.sock)."""
    path = os.path.join(d.state_dir, 'tapdisk',
                        c.VBD.get_uuid(s, vbd) + '.sock')
    assert os.path.exists(path), 'no block server socket %s' % path
    return 'nbd+unix:///?socket=' + path


def nbd_write(vm, offset, byte, length=MiB):
    """Writes length bytes of one value into the running VM's disk, as the
    guest would, through its block server."""
    r = subprocess.run(['qemu-io', '-f', 'raw', '-c',
                        'write -P 0x%02x %d %d' % (byte, offset, length),
                        nbd_uri(disk_vbd(vm))], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and 'error' not in r.stdout.lower(), \
        (r.stdout, r.stderr)


def nbd_read(vm):
    """The running VM's whole disk, as its block server serves it."""
    out = os.path.join(work, 'nbd.raw')
    subprocess.run(['nbdcopy', nbd_uri(disk_vbd(vm)), out], check=True,
                   timeout=60)
    with open(out, 'rb') as f:
        data = f.read()
    os.unlink(out)
    return data


def vdi_file(vdi):
    """The VHD file of a VDI in the default (file) SR or in one of the
    test's sim SRs (directories in the daemon's temporary directory)."""
    uuid = c.VDI.get_uuid(s, vdi)
    for root, _dirs, files in os.walk(d.tmp):
        if uuid + '.vhd' in files:
            return os.path.join(root, uuid + '.vhd')
    raise AssertionError('no VHD file for VDI %s' % uuid)


def vhd_read(path):
    """The contents of a VHD file with its chain of parents, read by this
    test's own small reader of the format (qemu-img's vpc driver does not
    follow differencing disks to their parents)."""
    with open(path, 'rb') as f:
        img = f.read()
    footer = img[-512:]
    assert footer[:8] == b'conectix', path
    size = struct.unpack('>Q', footer[48:56])[0]
    disk_type = struct.unpack('>I', footer[60:64])[0]
    if disk_type == 2:                      # fixed
        return img[:size]
    off = struct.unpack('>Q', footer[16:24])[0]
    hdr = img[off:off + 1024]
    assert hdr[:8] == b'cxsparse', path
    table = struct.unpack('>Q', hdr[16:24])[0]
    entries, block = struct.unpack('>II', hdr[28:36])
    parent = None
    if disk_type == 4:                      # differencing
        name = hdr[64:576].decode('utf-16-be').rstrip('\0')
        parent = vhd_read(os.path.join(os.path.dirname(path),
                                       os.path.basename(name)))
    out = bytearray(parent[:size] if parent else bytes(size))
    spb = block // 512
    bitmap_len = ((spb // 8 + 511) // 512) * 512
    for i in range(entries):
        sector = struct.unpack('>I', img[table + 4 * i:table + 4 * i + 4])[0]
        if sector == 0xffffffff:
            continue
        base = sector * 512
        bitmap = img[base:base + bitmap_len]
        data = base + bitmap_len
        for k in range(spb):
            pos = (i * spb + k) * 512
            if pos >= size:
                break
            if disk_type != 4 or bitmap[k // 8] & (0x80 >> (k % 8)):
                out[pos:pos + 512] = img[data + k * 512:data + k * 512 + 512]
    return bytes(out)


def disk_data(vdi):
    """The VDI's contents from its VHD files; a VHD without parent is also
    read by qemu-img, an independent implementation, which must agree."""
    path = vdi_file(vdi)
    data = vhd_read(path)
    if chain_length(vdi) == 1:
        out = os.path.join(work, 'qemu.raw')
        subprocess.run(['qemu-img', 'convert', '-f', 'vpc', '-O', 'raw',
                        path, out], check=True, timeout=60)
        with open(out, 'rb') as f:
            q = f.read()
        os.unlink(out)
        assert same(q, data), 'qemu-img and the test read %s differently' % path
    return data


def chain_length(vdi):
    """How many VHD files make up the VDI (its file and its parents)."""
    n, path = 0, vdi_file(vdi)
    while path:
        n += 1
        with open(path, 'rb') as f:
            f.seek(-512, os.SEEK_END)
            footer = f.read(512)
            if struct.unpack('>I', footer[60:64])[0] != 4:
                break
            f.seek(struct.unpack('>Q', footer[16:24])[0] + 64)
            name = f.read(512).decode('utf-16-be').rstrip('\0')
        path = os.path.join(os.path.dirname(path), os.path.basename(name))
    return n


def expected(*marks):
    """SIZE bytes of zeros with MiB-long markers: (offset, byte) pairs,
    later ones over earlier ones."""
    data = bytearray(SIZE)
    for off, byte in marks:
        data[off:off + MiB] = bytes([byte]) * MiB
    return bytes(data)


def same(got, want):
    """Equal, allowing the reader to round the size up with zeros."""
    return len(got) >= len(want) and got[:len(want)] == want \
        and not any(got[len(want):])


def check_data(got, want, what):
    assert same(got, want), '%s: %d bytes, first difference at %s' % (
        what, len(got), next((i for i in range(min(len(got), len(want)))
                              if got[i] != want[i]), len(want)))


def install(name, size=SIZE):
    """xe vm-install: clone a template, describe its disk, provision."""
    tpl = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
    vm = c.VM.clone(s, tpl, name)
    c.VM.remove_from_other_config(s, vm, 'disks')
    c.VM.add_to_other_config(
        s, vm, 'disks', '<provision><disk device="0" size="%d" sr="" '
        'bootable="true" type="system"/></provision>' % size)
    c.VM.provision(s, vm)
    c.VM.set_is_a_template(s, vm, False)
    return vm


def wait_for(fn, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError('condition not met in %ss' % timeout)


def vdis():
    return set(c.VDI.get_all(s))


try:
    pool = c.pool.get_all(s)[0]
    sr = c.pool.get_default_SR(s, pool)
    if sr == NULL:
        tap.skip('VM storage', 'the pool has no default SR')
        raise SystemExit(tap.finish())
    vm = install('vs-1')
    A, B, C, D = 0x41, 0x42, 0x43, 0x44

    @tap.test('test_provision_makes_the_template_disks_on_the_default_SR')
    def _():
        vbd = disk_vbd(vm)
        rec = c.VBD.get_record(s, vbd)
        assert rec['userdevice'] == '0' and rec['bootable'] is True, rec
        assert rec['mode'] == 'RW' and rec['other_config'].get('owner') == 'true', rec
        vdi = c.VDI.get_record(s, rec['VDI'])
        assert vdi['SR'] == sr and vdi['virtual_size'] == str(SIZE), vdi
        assert vdi['type'] == 'system', vdi['type']
        assert 'disks' not in c.VM.get_other_config(s, vm)
        # A second provision finds nothing left to do.
        c.VM.provision(s, vm)
        assert len(c.VM.get_VBDs(s, vm)) == 1

    @tap.test('test_provision_of_the_default_template_size')
    def _():
        tpl = c.VM.get_by_name_label(s, 'Other install media')[0]
        xml = c.VM.get_other_config(s, tpl)['disks']
        v = c.VM.clone(s, tpl, 'vs-default-size')
        c.VM.provision(s, v)
        vdi = disk_of(v)
        size = int(c.VDI.get_virtual_size(s, vdi))
        assert 'size="%d"' % size in xml, (size, xml)
        assert 8 << 30 <= size <= 64 << 30, size
        # The disk is sparse: a fresh VHD holds metadata only.
        assert os.path.getsize(vdi_file(vdi)) < 4 * MiB
        c.VM.destroy(s, v)
        c.VDI.destroy(s, vdi)

    @tap.test('test_every_default_template_provisions_a_sane_disk')
    def _():
        tpls = [r for r in c.VM.get_all_records(s).items()
                if r[1]['is_default_template']]
        assert len(tpls) >= 8, len(tpls)
        for ref, rec in tpls:
            xml = rec['other_config'].get('disks', '')
            m = re.search(r'size="(\d+)"', xml)
            assert m and 'sr=""' in xml and 'bootable="true"' in xml, \
                (rec['name_label'], xml)
            v = c.VM.clone(s, ref, 'vs-tpl')
            c.VM.provision(s, v)
            vdi = disk_of(v)
            size = int(c.VDI.get_virtual_size(s, vdi))
            assert size == int(m.group(1)), (rec['name_label'], size)
            assert 8 << 30 <= size <= 128 << 30, (rec['name_label'], size)
            c.VM.destroy(s, v)
            c.VDI.destroy(s, vdi)

    @tap.test('test_bad_provision_descriptions_are_refused_without_leftovers')
    def _():
        tpl = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        v = c.VM.clone(s, tpl, 'vs-bad')
        before = vdis()
        c.VM.remove_from_other_config(s, v, 'disks')
        c.VM.add_to_other_config(s, v, 'disks', '<provision><disk size="x"/>'
                                 '</provision>')
        expect_error(lambda: c.VM.provision(s, v), 'INVALID_VALUE')
        c.VM.remove_from_other_config(s, v, 'disks')
        c.VM.add_to_other_config(
            s, v, 'disks', '<provision><disk device="0" size="%d" sr="" '
            'bootable="true" type="system"/><disk device="1" size="%d" '
            'sr="00000000-0000-0000-0000-000000000000" bootable="false" '
            'type="user"/></provision>' % (SIZE, SIZE))
        expect_error(lambda: c.VM.provision(s, v), 'UUID_INVALID',
                     ['SR', '00000000-0000-0000-0000-000000000000'])
        assert vdis() == before and c.VM.get_VBDs(s, v) == []
        c.VM.destroy(s, v)

    @tap.test('test_start_serves_each_disk_through_a_block_server')
    def _():
        c.VM.start(s, vm, False, False)
        vbd = disk_vbd(vm)
        assert c.VBD.get_currently_attached(s, vbd) is True
        r = subprocess.run(['nbdinfo', '--size', nbd_uri(vbd)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and int(r.stdout) == SIZE, (r.stdout, r.stderr)
        nbd_write(vm, 0, A)
        check_data(nbd_read(vm), expected((0, A)), 'disk through NBD')

    state = {}

    @tap.test('test_snapshot_of_a_running_vm_keeps_the_data_of_that_moment')
    def _():
        disk = disk_of(vm)
        snap = c.VM.snapshot(s, vm, 'vs-snap')
        state['snap'] = snap
        rec = c.VM.get_record(s, snap)
        assert rec['is_a_snapshot'] and rec['is_a_template'], rec
        assert rec['snapshot_of'] == vm and rec['power_state'] == 'Halted', rec
        assert rec['snapshot_info'].get('power-state-at-snapshot') == 'Running'
        assert snap in c.VM.get_snapshots(s, vm)
        assert c.VM.get_parent(s, vm) == snap
        assert 'revert' in rec['allowed_operations'], rec['allowed_operations']
        assert c.VM.get_power_state(s, vm) == 'Running'
        sdisk = disk_of(snap)
        sv = c.VDI.get_record(s, sdisk)
        assert sv['is_a_snapshot'] and sv['snapshot_of'] == disk, sv
        assert c.VBD.get_currently_attached(s, disk_vbd(snap)) is False
        # Writes after the snapshot reach the VM's disk only.
        nbd_write(vm, 0, B)
        nbd_write(vm, 4 * MiB, C)
        check_data(nbd_read(vm), expected((0, B), (4 * MiB, C)), 'VM disk')
        check_data(disk_data(sdisk), expected((0, A)), 'snapshot VHD')

    @tap.test('test_shutdown_stops_the_block_servers')
    def _():
        vbd = disk_vbd(vm)
        sock = nbd_uri(vbd).split('=', 1)[1]
        c.VM.hard_shutdown(s, vm)
        assert c.VBD.get_currently_attached(s, vbd) is False
        wait_for(lambda: not os.path.exists(sock), 10)
        check_data(disk_data(disk_of(vm)), expected((0, B), (4 * MiB, C)),
                   'VM VHD after shutdown')

    @tap.test('test_revert_gives_the_vm_the_snapshot_data_and_drops_its_disk')
    def _():
        snap = state['snap']
        old = disk_of(vm)
        c.VM.set_memory_limits(s, vm, 1 << 30, 1 << 30, 1 << 30, 1 << 30)
        c.VM.revert(s, snap)
        rec = c.VM.get_record(s, vm)
        assert rec['power_state'] == 'Halted' and rec['parent'] == snap, rec
        assert rec['memory_static_max'] == str(2 << 30), rec['memory_static_max']
        assert not rec['is_a_snapshot'] and not rec['is_a_template'], rec
        new = disk_of(vm)
        assert new != old and old not in c.VDI.get_all(s), (new, old)
        nv = c.VDI.get_record(s, new)
        assert not nv['is_a_snapshot'] and nv['read_only'] is False, nv
        # The snapshot now counts as a snapshot of the new disk.
        assert c.VDI.get_snapshot_of(s, disk_of(snap)) == new
        check_data(disk_data(new), expected((0, A)), 'reverted VHD')
        c.VM.start(s, vm, False, False)
        check_data(nbd_read(vm), expected((0, A)), 'reverted disk via NBD')

    @tap.test('test_suspend_puts_the_memory_in_a_suspend_VDI_and_resume_takes_it')
    def _():
        before = vdis()
        c.VM.suspend(s, vm)
        rec = c.VM.get_record(s, vm)
        assert rec['power_state'] == 'Suspended', rec['power_state']
        sv = rec['suspend_VDI']
        assert sv != NULL and sv in vdis() - before, sv
        v = c.VDI.get_record(s, sv)
        assert v['type'] == 'suspend' and v['SR'] == sr, v
        assert c.VBD.get_currently_attached(s, disk_vbd(vm)) is False
        # Nothing is left in the state directory: the image is in the VDI.
        sdir = os.path.join(d.state_dir, 'suspend')
        assert not os.path.isdir(sdir) or os.listdir(sdir) == [], os.listdir(sdir)
        c.VM.resume(s, vm, False, False)
        assert c.VM.get_power_state(s, vm) == 'Running'
        assert c.VM.get_suspend_VDI(s, vm) == NULL
        assert sv not in vdis()
        check_data(nbd_read(vm), expected((0, A)), 'disk after resume')

    @tap.test('test_a_snapshot_of_a_suspended_vm_keeps_its_memory')
    def _():
        c.VM.suspend(s, vm)
        mem = c.VM.get_suspend_VDI(s, vm)
        snap = c.VM.snapshot(s, vm, 'vs-suspended-snap', [])
        rec = c.VM.get_record(s, snap)
        assert rec['power_state'] == 'Suspended', rec['power_state']
        assert rec['suspend_VDI'] not in (NULL, mem), rec['suspend_VDI']
        assert c.VM.get_suspend_VDI(s, vm) == mem
        c.VM.resume(s, vm, False, False)
        c.VM.hard_shutdown(s, vm)
        c.VM.revert(s, snap)
        assert c.VM.get_power_state(s, vm) == 'Suspended'
        c.VM.resume(s, vm, False, False)
        check_data(nbd_read(vm), expected((0, A)), 'after the suspended snapshot')
        smem = c.VM.get_suspend_VDI(s, snap)
        c.VM.destroy(s, snap)
        assert smem not in vdis()

    @tap.test('test_suspend_follows_pool_suspend_image_SR_and_hard_shutdown_drops_it')
    def _():
        c.pool.set_suspend_image_SR(s, pool, sr)
        c.VM.suspend(s, vm)
        sv = c.VM.get_suspend_VDI(s, vm)
        assert c.VDI.get_SR(s, sv) == sr
        c.VM.hard_shutdown(s, vm)
        assert c.VM.get_suspend_VDI(s, vm) == NULL and sv not in vdis()
        c.VM.start(s, vm, False, False)

    @tap.test('test_checkpoint_records_disks_and_memory_and_the_vm_runs_on')
    def _():
        nbd_write(vm, 8 * MiB, C)
        cp = c.VM.checkpoint(s, vm, 'vs-checkpoint')
        state['cp'] = cp
        rec = c.VM.get_record(s, cp)
        assert rec['is_a_snapshot'] and rec['snapshot_of'] == vm, rec
        assert rec['power_state'] == 'Suspended', rec['power_state']
        mem = rec['suspend_VDI']
        assert mem != NULL and c.VDI.get_type(s, mem) == 'suspend', mem
        assert c.VM.get_power_state(s, vm) == 'Running'
        assert c.VBD.get_currently_attached(s, disk_vbd(vm)) is True
        check_data(disk_data(disk_of(cp)), expected((0, A), (8 * MiB, C)),
                   'checkpoint disk')
        nbd_write(vm, 8 * MiB, D)
        check_data(nbd_read(vm), expected((0, A), (8 * MiB, D)), 'VM disk')

    @tap.test('test_revert_to_a_checkpoint_leaves_the_vm_suspended_with_its_memory')
    def _():
        cp = state['cp']
        cp_mem = c.VM.get_suspend_VDI(s, cp)
        c.VM.revert(s, cp)
        rec = c.VM.get_record(s, vm)
        assert rec['power_state'] == 'Suspended', rec['power_state']
        assert rec['suspend_VDI'] not in (NULL, cp_mem), rec['suspend_VDI']
        assert c.VM.get_suspend_VDI(s, cp) == cp_mem
        c.VM.resume(s, vm, False, False)
        assert c.VM.get_power_state(s, vm) == 'Running'
        check_data(nbd_read(vm), expected((0, A), (8 * MiB, C)),
                   'disk after revert to the checkpoint')
        c.VM.hard_shutdown(s, vm)

    @tap.test('test_clone_makes_small_linked_disks_with_the_same_data')
    def _():
        t0 = time.time()
        cl = c.VM.clone(s, vm, 'vs-clone')
        took = time.time() - t0
        state['clone'] = cl
        rec = c.VM.get_record(s, cl)
        assert rec['power_state'] == 'Halted' and not rec['is_a_snapshot'], rec
        assert rec['parent'] == vm, rec['parent']
        cd = disk_of(cl)
        assert cd != disk_of(vm)
        assert os.path.getsize(vdi_file(cd)) < 4 * MiB, os.path.getsize(vdi_file(cd))
        assert chain_length(cd) >= 2
        want = expected((0, A), (8 * MiB, C))
        check_data(disk_data(cd), want, 'clone VHD')
        check_data(disk_data(disk_of(vm)), want, 'source VHD after the clone')
        print('# VM.clone with one %d MiB disk took %.3fs' % (SIZE // MiB, took))
        c.VM.start(s, cl, False, False)
        nbd_write(cl, 0, D)
        c.VM.hard_shutdown(s, cl)
        check_data(disk_data(disk_of(vm)), want, 'source after the clone wrote')

    @tap.test('test_copy_makes_full_independent_disks_with_the_same_data')
    def _():
        cp = c.VM.copy(s, vm, 'vs-copy', NULL)
        cd = disk_of(cp)
        assert c.VDI.get_SR(s, cd) == sr
        assert chain_length(cd) == 1
        check_data(disk_data(cd), expected((0, A), (8 * MiB, C)), 'copy VHD')
        cp2 = c.VM.copy(s, vm, 'vs-copy-2', sr)
        check_data(disk_data(disk_of(cp2)), expected((0, A), (8 * MiB, C)),
                   'copy to a named SR')
        for v in (cp, cp2):
            dv = disk_of(v)
            c.VM.destroy(s, v)
            c.VDI.destroy(s, dv)

    @tap.test('test_async_copy_reports_progress_and_succeeds')
    def _():
        task = c.Async.VM.copy(s, vm, 'vs-copy-async', NULL)
        wait_for(lambda: c.task.get_status(s, task) != 'pending', 60)
        assert c.task.get_status(s, task) == 'success', c.task.get_record(s, task)
        assert float(c.task.get_progress(s, task)) == 1.0
        ref = re.search(r'OpaqueRef:[0-9a-f-]+',
                        c.task.get_result(s, task)).group(0)
        dv = disk_of(ref)
        c.VM.destroy(s, ref)
        c.VDI.destroy(s, dv)

    @tap.test('test_snapshot_ignores_the_vdis_it_is_told_to')
    def _():
        snap = c.VM.snapshot(s, vm, 'vs-snap-ignore', [disk_of(vm)])
        assert c.VM.get_VBDs(s, snap) == []
        c.VM.destroy(s, snap)

    @tap.test('test_clone_of_a_snapshot_is_a_template_that_installs')
    def _():
        t = c.VM.clone(s, state['snap'], 'vs-from-snap')
        rec = c.VM.get_record(s, t)
        assert rec['is_a_template'] and not rec['is_a_snapshot'], rec
        assert rec['snapshot_of'] == NULL, rec
        c.VM.set_is_a_template(s, t, False)
        check_data(disk_data(disk_of(t)), expected((0, A)), 'clone of snapshot')
        c.VM.start(s, t, False, False)
        c.VM.hard_shutdown(s, t)

    @tap.test('test_illegal_requests_get_xenserver_errors')
    def _():
        tpl = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        snap = state['snap']
        expect_error(lambda: c.VM.snapshot(s, tpl, 'x', []), 'VM_IS_TEMPLATE',
                     [tpl])
        expect_error(lambda: c.VM.snapshot(s, snap, 'x', []), 'VM_IS_TEMPLATE',
                     [snap])
        expect_error(lambda: c.VM.checkpoint(s, vm, 'x'), 'VM_BAD_POWER_STATE',
                     [vm, 'running', 'halted'])
        expect_error(lambda: c.VM.revert(s, vm), 'VM_REVERT_FAILED', [NULL, vm])
        expect_error(lambda: c.VM.snapshot_with_quiesce(s, vm, 'x'),
                     'MESSAGE_REMOVED')
        c.VM.start(s, vm, False, False)
        expect_error(lambda: c.VM.clone(s, vm, 'x'), 'VM_BAD_POWER_STATE',
                     [vm, 'halted', 'running'])
        expect_error(lambda: c.VM.copy(s, vm, 'x', NULL), 'VM_BAD_POWER_STATE',
                     [vm, 'halted', 'running'])
        expect_error(lambda: c.VM.provision(s, vm), 'VM_BAD_POWER_STATE',
                     [vm, 'halted', 'running'])
        c.VM.pause(s, vm)
        expect_error(lambda: c.VM.snapshot(s, vm, 'x', []),
                     'VM_BAD_POWER_STATE', [vm, 'halted', 'paused'])
        c.VM.hard_shutdown(s, vm)
        expect_error(lambda: c.VM.copy(s, vm, 'x', 'OpaqueRef:nope'),
                     'HANDLE_INVALID', ['SR', 'OpaqueRef:nope'])

    @tap.test('test_revert_of_a_running_vm_stops_it_first')
    def _():
        c.VM.start(s, vm, False, False)
        c.VM.revert(s, state['snap'])
        assert c.VM.get_power_state(s, vm) == 'Halted'
        check_data(disk_data(disk_of(vm)), expected((0, A)), 'after revert')

    @tap.test('test_destroying_a_snapshot_keeps_its_disks_but_not_its_memory')
    def _():
        cp = state['cp']
        disk = disk_of(cp)
        mem = c.VM.get_suspend_VDI(s, cp)
        c.VM.destroy(s, cp)
        assert disk in vdis() and mem not in vdis()
        assert cp not in c.VM.get_snapshots(s, vm)
        c.VDI.destroy(s, disk)

    @tap.test('test_vms_without_disks_still_cycle')
    def _():
        tpl = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        v = c.VM.clone(s, tpl, 'vs-diskless')
        c.VM.set_is_a_template(s, v, False)
        c.VM.start(s, v, False, False)
        snap = c.VM.snapshot(s, v, 'vs-diskless-snap', [])
        c.VM.clean_shutdown(s, v)
        c.VM.revert(s, snap)
        cl = c.VM.clone(s, v, 'vs-diskless-clone')
        for x in (cl, snap, v):
            c.VM.destroy(s, x)

    def sim_sr(name, config):
        config = dict(config, location=os.path.join(d.tmp, name))
        return c.SR.create(s, c.host.get_all(s)[0], config, '0', name, '',
                           'sim', '', False, {})

    def set_sim_config(sr_ref, config):
        pbd = c.SR.get_PBDs(s, sr_ref)[0]
        c.PBD.unplug(s, pbd)
        c.PBD.set_device_config(s, pbd, config)
        c.PBD.plug(s, pbd)

    @tap.test('test_a_suspend_SR_too_small_is_SR_SUSPEND_SPACE_INSUFFICIENT')
    def _():
        small = sim_sr('sim-small', {'size': str(256 << 10)})
        c.pool.set_suspend_image_SR(s, pool, small)
        try:
            c.VM.start(s, vm, False, False)
            before = vdis()
            expect_error(lambda: c.VM.suspend(s, vm),
                         'SR_SUSPEND_SPACE_INSUFFICIENT', [small])
            # The guest was not lost: it runs on from its image.
            assert c.VM.get_power_state(s, vm) == 'Running'
            assert c.VM.get_suspend_VDI(s, vm) == NULL
            assert vdis() == before
            check_data(nbd_read(vm), expected((0, A)), 'disk after the failure')
            c.VM.hard_shutdown(s, vm)
        finally:
            c.pool.set_suspend_image_SR(s, pool, sr)

    @tap.test('test_copy_to_another_sr_puts_every_disk_there')
    def _():
        other = sim_sr('sim-other', {})
        cp = c.VM.copy(s, vm, 'vs-copy-other', other)
        dv = disk_of(cp)
        assert c.VDI.get_SR(s, dv) == other
        assert chain_length(dv) == 1
        check_data(disk_data(dv), expected((0, A)), 'copy on another SR')
        c.VM.start(s, cp, False, False)
        check_data(nbd_read(cp), expected((0, A)), 'copy served from there')
        c.VM.hard_shutdown(s, cp)
        c.VM.destroy(s, cp)
        c.VDI.destroy(s, dv)

    @tap.test('test_failing_disk_operations_leave_no_vdi_or_vm_behind')
    def _():
        path = os.path.join(d.tmp, 'sim-fail')
        bad = sim_sr('sim-fail', {})
        v = install('vs-two-disks')
        c.VM.add_to_other_config(
            s, v, 'disks', '<provision><disk device="1" size="%d" sr="%s" '
            'bootable="false" type="user"/></provision>'
            % (SIZE, c.SR.get_uuid(s, bad)))
        c.VM.provision(s, v)
        assert len(c.VM.get_VBDs(s, v)) == 2
        snap = c.VM.snapshot(s, v, 'vs-two-snap')
        set_sim_config(bad, {'location': path,
                             'fail': 'vdi_snapshot,vdi_clone'})
        vms, before = set(c.VM.get_all(s)), vdis()
        expect_error(lambda: c.VM.snapshot(s, v, 'x', []), 'SR_BACKEND_FAILURE')
        expect_error(lambda: c.VM.clone(s, v, 'x'), 'SR_BACKEND_FAILURE')
        disks = sorted(c.VBD.get_VDI(s, b) for b in c.VM.get_VBDs(s, v))
        expect_error(lambda: c.VM.revert(s, snap), 'SR_BACKEND_FAILURE')
        assert set(c.VM.get_all(s)) == vms and vdis() == before
        assert sorted(c.VBD.get_VDI(s, b) for b in c.VM.get_VBDs(s, v)) == disks
        rec = c.VM.get_record(s, v)
        assert rec['current_operations'] == {} and 'start' in rec['allowed_operations']
        set_sim_config(bad, {'location': path})
        for x in (snap, v):
            owned = [c.VBD.get_VDI(s, b) for b in c.VM.get_VBDs(s, x)]
            c.VM.destroy(s, x)
            for vdi in owned:
                c.VDI.destroy(s, vdi)

    @tap.test('test_copy_progress_never_goes_back_across_several_disks')
    def _():
        """VM.copy gives each disk's copy a slice of the task's progress:
        a client polling it sees it rise, never fall back to 0 at the next
        disk."""
        multi = sim_sr('sim-multi', {})
        v = install('vs-three-disks')
        c.VM.add_to_other_config(
            s, v, 'disks', '<provision>%s</provision>' % ''.join(
                '<disk device="%d" size="%d" sr="%s" bootable="false" '
                'type="user"/>' % (i, 512 * MiB, c.SR.get_uuid(s, multi))
                for i in (1, 2)))
        c.VM.provision(s, v)
        assert len(c.VM.get_VBDs(s, v)) == 3
        task = c.Async.VM.copy(s, v, 'vs-three-copy', multi)
        seen = []
        end = time.time() + 120
        while time.time() < end:
            seen.append(float(c.task.get_progress(s, task)))
            if c.task.get_status(s, task) != 'pending':
                break
        seen.append(float(c.task.get_progress(s, task)))
        assert c.task.get_status(s, task) == 'success', \
            c.task.get_record(s, task)
        drops = [(a, b) for a, b in zip(seen, seen[1:]) if b < a]
        assert not drops, drops[:5]
        assert seen[-1] == 1.0, seen[-1]
        print('# %d polls, %d distinct progress values' % (len(seen),
                                                           len(set(seen))))
        cp = re.search(r'OpaqueRef:[0-9a-f-]+',
                       c.task.get_result(s, task)).group(0)
        for x in (cp, v):
            owned = [c.VBD.get_VDI(s, b) for b in c.VM.get_VBDs(s, x)]
            c.VM.destroy(s, x)
            for vdi in owned:
                c.VDI.destroy(s, vdi)

    @tap.test('test_start_with_a_disk_gone_from_the_storage_is_VDI_MISSING')
    def _():
        v = install('vs-missing')
        dv = disk_of(v)
        os.unlink(vdi_file(dv))
        expect_error(lambda: c.VM.start(s, v, False, False), 'VDI_MISSING',
                     [c.VDI.get_SR(s, dv), dv])
        assert c.VM.get_power_state(s, v) == 'Halted'
        assert c.VBD.get_currently_attached(s, disk_vbd(v)) is False
        c.VM.destroy(s, v)
        c.VDI.forget(s, dv)

    @tap.test('test_checkpoint_revert_resume_rounds_never_meet_the_gc')
    def _():
        """Each revert destroys the VM's disk, which kicks the GC while the
        resume attaches the new one: the attach waits for a GC step that
        holds the chain's images, so no round fails (the daemon no longer
        retries a failed attach)."""
        v = install('vs-rounds')
        c.VM.start(s, v, False, False)
        nbd_write(v, 0, A)
        for i in range(15):
            cp = c.VM.checkpoint(s, v, 'vs-round-%d' % i)
            c.VM.revert(s, cp)
            c.VM.resume(s, v, False, False)
            assert c.VM.get_power_state(s, v) == 'Running', i
            disks = [c.VBD.get_VDI(s, b) for b in c.VM.get_VBDs(s, cp)]
            c.VM.destroy(s, cp)
            for vdi in disks:
                c.VDI.destroy(s, vdi)
        check_data(nbd_read(v), expected((0, A)), 'disk after the rounds')
        c.VM.hard_shutdown(s, v)
        disks = [c.VBD.get_VDI(s, b) for b in c.VM.get_VBDs(s, v)]
        c.VM.destroy(s, v)
        for vdi in disks:
            c.VDI.destroy(s, vdi)

    @tap.test('test_a_crash_restart_gives_the_new_domain_its_disks')
    def _():
        c.VM.set_actions_after_crash(s, vm, 'restart')
        c.VM.start(s, vm, False, False)
        nbd_write(vm, 12 * MiB, D)
        domid = c.VM.get_domid(s, vm)
        assert control('crash %s' % domid).startswith('OK')
        wait_for(lambda: c.VM.get_domid(s, vm) not in (domid, '-1'))
        assert c.VBD.get_currently_attached(s, disk_vbd(vm)) is True
        check_data(nbd_read(vm), expected((0, A), (12 * MiB, D)),
                   'disk after the crash restart')
        sock = nbd_uri(disk_vbd(vm)).split('=', 1)[1]
        c.VM.set_actions_after_crash(s, vm, 'destroy')
        assert control('crash %s' % c.VM.get_domid(s, vm)).startswith('OK')
        wait_for(lambda: c.VM.get_power_state(s, vm) == 'Halted')
        wait_for(lambda: not os.path.exists(sock))
        assert c.VBD.get_currently_attached(s, disk_vbd(vm)) is False

    @tap.test('test_a_toolstack_restart_ends_the_simulated_domains_disks')
    def _():
        global c, s
        c.VM.start(s, vm, False, False)
        sock = nbd_uri(disk_vbd(vm)).split('=', 1)[1]
        d.restart()
        c = d.client()
        s = d.login(c)
        assert c.VM.get_power_state(s, vm) == 'Halted'
        assert not os.path.exists(sock), sock
        # The disk is free again: the VM starts with it.
        c.VM.start(s, vm, False, False)
        check_data(nbd_read(vm), expected((0, A), (12 * MiB, D)),
                   'disk after the toolstack restart')
        c.VM.hard_shutdown(s, vm)

except SystemExit:
    raise
except Exception:
    tap.check('the VM storage scenario runs through', False,
              traceback.format_exc())
finally:
    shutil.rmtree(work, ignore_errors=True)

finish_daemon(d)
d.cleanup()
try:
    os.unlink(tmp_ctl)
except OSError:
    pass
