#!/usr/bin/env python3
"""test_storage_e2e.py — issue 5's "done when", end to end through the
XenAPI and its HTTP handlers, on the simulator with the default local SR:

a VM installed from a template gets its disk provisioned; data written
into it (/import_raw_vdi) survives a snapshot, is not disturbed by writes
made after it, comes back with VM.revert, is carried by VM.clone (linked)
and VM.copy (full), and by an XVA export and re-import; deleting the
snapshot leaves the garbage collector to shorten the VHD chain with the
data intact.  At every step the VHD files are read with qemu-img (an
independent implementation of the format) and compared byte for byte with
what the test wrote."""
import hashlib
import os
import random
import shutil
import subprocess
import tempfile
import time
import traceback

from xapitest import Daemon, finish_daemon, start_or_bail, tap

MiB = 1 << 20
SIZE = 32 * MiB

if not shutil.which('qemu-img'):
    tap.skip('storage end to end', 'qemu-img is not installed')
    raise SystemExit(tap.finish())

d = start_or_bail(Daemon(extra_args=['--shutdown-timeout', '2']))
c = d.client()
s = d.login()
work = tempfile.mkdtemp(prefix='xapi-e2e-')


def pattern(seed):
    """SIZE bytes: a few scattered MiB of pseudo-random data in zeros, so
    images stay sparse and every mistake in a chain shows."""
    rnd = random.Random(seed)
    buf = bytearray(SIZE)
    for _ in range(6):
        off = rnd.randrange(0, SIZE // MiB) * MiB + rnd.randrange(0, 8) * 512
        n = rnd.randrange(1, 300) * 512
        n = min(n, SIZE - off)
        buf[off:off + n] = rnd.randbytes(n)
    return bytes(buf)


def http(method, path, body=None):
    conn = d.http_connection() if hasattr(d, 'http_connection') else None
    if conn is None:
        import http.client
        conn = http.client.HTTPConnection('127.0.0.1', d.http_port,
                                          timeout=120)
    conn.request(method, path, body=body,
                 headers={'Content-Length': str(len(body))} if body
                 is not None else {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def import_raw(vdi, data):
    st, body = http('PUT', '/import_raw_vdi?session_id=%s&vdi=%s&format=raw'
                    % (s, vdi), data)
    assert st == 200, (st, body[:200])


def export_raw(vdi):
    st, body = http('GET', '/export_raw_vdi?session_id=%s&vdi=%s&format=raw'
                    % (s, vdi))
    assert st == 200, (st, body[:200])
    return body


def vdi_file(vdi):
    """The VHD file of a VDI in the default (file) SR."""
    uuid = c.VDI.get_uuid(s, vdi)
    for root, _dirs, files in os.walk(os.path.join(d.state_dir, 'sr')):
        if uuid + '.vhd' in files:
            return os.path.join(root, uuid + '.vhd')
    raise AssertionError('no VHD file for VDI %s' % uuid)


def vhd_layer(path):
    """Parses one VHD file's footer, dynamic header, BAT and parent
    locator (the test's own reading of the format, independent of the
    daemon's library)."""
    with open(path, 'rb') as f:
        f.seek(-512, os.SEEK_END)
        footer = f.read(512)
        assert footer[:8] == b'conectix', path
        size = int.from_bytes(footer[48:56], 'big')
        dtype = int.from_bytes(footer[60:64], 'big')
        hoff = int.from_bytes(footer[16:24], 'big')
        f.seek(hoff)
        hdr = f.read(1024)
        assert hdr[:8] == b'cxsparse', path
        table = int.from_bytes(hdr[16:24], 'big')
        entries = int.from_bytes(hdr[28:32], 'big')
        bsize = int.from_bytes(hdr[32:36], 'big')
        f.seek(table)
        raw = f.read(entries * 4)
        bat = [int.from_bytes(raw[i:i + 4], 'big') for i in range(0, len(raw), 4)]
        parent = None
        if dtype == 4:
            for i in range(8):
                e = hdr[576 + 24 * i:600 + 24 * i]
                if e[:4] == b'MacX':
                    length = int.from_bytes(e[8:12], 'big')
                    off = int.from_bytes(e[16:24], 'big')
                    f.seek(off)
                    url = f.read(length).decode().rstrip('\0')
                    rel = url[len('file://'):]
                    parent = os.path.normpath(os.path.join(
                        os.path.dirname(os.path.realpath(path)), rel))
        bitmap_len = ((bsize // 512 // 8) + 511) // 512 * 512
        bitmaps = {}
        for b, sec in enumerate(bat):
            if sec != 0xFFFFFFFF:
                f.seek(sec * 512)
                bitmaps[b] = f.read(bitmap_len)
    return {'size': size, 'bsize': bsize, 'bitmaps': bitmaps,
            'parent': parent, 'path': path}


def qemu_layer(path):
    """qemu-img's reading of one VHD file on its own (its vpc driver does
    not follow parents: unwritten sectors read as zeros)."""
    out = os.path.join(work, 'layer.raw')
    subprocess.run(['qemu-img', 'info', '-f', 'vpc', path], check=True,
                   capture_output=True)
    subprocess.run(['qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', path,
                    out], check=True)
    with open(out, 'rb') as f:
        data = f.read()
    os.unlink(out)
    return data


def chain_layers(vdi):
    layers = [vhd_layer(vdi_file(vdi))]
    while layers[-1]['parent']:
        layers.append(vhd_layer(layers[-1]['parent']))
    return layers


def qemu_read(vdi):
    """The VDI's contents: the bytes of every layer as qemu-img reads them,
    composed sector by sector from the topmost layer whose bitmap holds
    the sector."""
    layers = chain_layers(vdi)
    size = layers[0]['size']
    out = bytearray(size)
    views = [qemu_layer(l['path']) for l in layers]
    bsize = layers[0]['bsize']
    for b in range((size + bsize - 1) // bsize):
        pending = set(range(min(bsize, size - b * bsize) // 512))
        for layer, view in zip(layers, views):
            bm = layer['bitmaps'].get(b)
            if bm is None or not pending:
                continue
            done = [i for i in pending if bm[i >> 3] & (0x80 >> (i & 7))]
            for i in done:
                o = b * bsize + i * 512
                out[o:o + 512] = view[o:o + 512]
            pending.difference_update(done)
    return bytes(out)


def chain_length(vdi):
    return len(chain_layers(vdi))


def same(a, b):
    return len(a) >= len(b) and a[:len(b)] == b and not any(a[len(b):])


def disk_of(vm):
    for vbd in c.VM.get_VBDs(s, vm):
        if c.VBD.get_type(s, vbd) == 'Disk':
            return c.VBD.get_VDI(s, vbd)
    raise AssertionError('VM has no disk')


def check_vdi(vdi, data, what):
    got_http = export_raw(vdi)
    got_qemu = qemu_read(vdi)
    tap.check('%s: /export_raw_vdi gives the data' % what,
              same(got_http, data),
              hashlib.sha1(got_http).hexdigest())
    tap.check('%s: qemu-img reads the same data from the VHD chain' % what,
              same(got_qemu, data), hashlib.sha1(got_qemu).hexdigest())


def main():
    A = pattern(1)
    B = pattern(2)
    sr = c.pool.get_default_SR(s, c.pool.get_all(s)[0])
    tap.check('the pool has a default SR', sr != 'OpaqueRef:NULL')

    # xe vm-install: clone a template, give it disks, provision them.
    tpl = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
    vm = c.VM.clone(s, tpl, 'e2e')
    c.VM.remove_from_other_config(s, vm, 'disks')
    c.VM.add_to_other_config(
        s, vm, 'disks', '<provision><disk device="0" size="%d" sr="%s" '
        'bootable="true" type="system"/></provision>'
        % (SIZE, c.SR.get_uuid(s, sr)))
    c.VM.provision(s, vm)
    c.VM.set_is_a_template(s, vm, False)
    disk = disk_of(vm)
    tap.check('VM.provision made a disk of the asked size on the SR',
              c.VDI.get_virtual_size(s, disk) == str(SIZE)
              and c.VDI.get_SR(s, disk) == sr)

    import_raw(disk, A)
    check_vdi(disk, A, 'after import')

    snap = c.VM.snapshot(s, vm, 'e2e-snap')
    sdisk = disk_of(snap)
    import_raw(disk, B)
    check_vdi(sdisk, A, 'snapshot after the VM disk was rewritten')
    check_vdi(disk, B, 'VM disk after the rewrite')

    c.VM.revert(s, snap)
    disk = disk_of(vm)
    check_vdi(disk, A, 'VM disk after revert')

    clone = c.VM.clone(s, vm, 'e2e-clone')
    check_vdi(disk_of(clone), A, 'linked clone')
    copy = c.VM.copy(s, vm, 'e2e-copy', sr)
    check_vdi(disk_of(copy), A, 'full copy')

    # XVA export and import.
    st, xva = http('GET', '/export?session_id=%s&ref=%s' % (s, vm))
    tap.check('XVA export answers 200', st == 200, st)
    st, body = http('PUT', '/import?session_id=%s&sr_id=%s' % (s, sr), xva)
    tap.check('XVA import answers 200', st == 200, (st, body[:200]))
    imported = [v for v in c.VM.get_by_name_label(s, 'e2e') if v != vm
                and not c.VM.get_is_a_snapshot(s, v)]
    tap.check('the imported VM exists', len(imported) == 1, imported)
    if imported:
        check_vdi(disk_of(imported[0]), A, 'XVA re-import')

    # Garbage collection: deleting the snapshot and the clone leaves bases
    # with a single child, which the GC coalesces.
    before = chain_length(disk)
    for v in (snap, clone):
        vdis = [c.VBD.get_VDI(s, b) for b in c.VM.get_VBDs(s, v)
                if c.VBD.get_type(s, b) == 'Disk']
        c.VM.destroy(s, v)
        for vdi in vdis:
            c.VDI.destroy(s, vdi)
    c.SR.scan(s, sr)
    end = time.time() + 60
    while time.time() < end and chain_length(disk) >= before:
        time.sleep(0.5)
    after = chain_length(disk)
    tap.check('the GC shortened the VM disk chain', after < before,
              '%d -> %d' % (before, after))
    check_vdi(disk, A, 'VM disk after GC')


try:
    main()
except Exception:
    tap.check('the end-to-end storage scenario runs through', False,
              traceback.format_exc())
finally:
    shutil.rmtree(work, ignore_errors=True)
finish_daemon(d)
