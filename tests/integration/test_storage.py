#!/usr/bin/env python3
"""test_storage.py — the daemon's storage layer as a XenAPI client sees it
(xapi/storage.c over the SR drivers of storage/sm.h), on the simulator:

- the default local SR ("Local storage", a file SR) exists, is plugged and
  is the pool's default, suspend-image and crash-dump SR; one SM record
  per driver; a restart refreshes them and makes no second local SR;
- a file SR on a temporary directory: VDI create, snapshot, clone, resize,
  copy and destroy, with the SR's virtual_allocation and the driver's
  figures checked after each step;
- the sim driver's device_config: `size` gives SR_FULL [requested,
  maximum], `fail` makes driver calls fail without leaving rows behind,
  `slow` makes operations overlap (OTHER_OPERATION_IN_PROGRESS on one VDI,
  serialized creates on one SR);
- SR.scan introduces a VHD copied into the SR's directory and drops the
  record of one deleted from it; the GC coalesces after a snapshot is
  destroyed;
- PBD.unplug/plug, SR.forget/introduce/destroy and their refusals;
- VBD.plug of a disk into a running simulated VM starts a block server
  that nbdinfo reads through its Unix socket; unplug stops it; a plug
  while the GC holds the disk's leaf open (seen in /proc) waits for it;
- a clone of a snapshot VDI is writable, of a read-only VDI read-only;
- error codes and parameters exactly as XenAPI's."""
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from xapitest import (Daemon, Skip, XenAPIError, expect_error, finish_daemon,
                      full_record, load_idl, start_or_bail, tap)

MiB = 1 << 20
GiB = 1 << 30
NULL = 'OpaqueRef:NULL'

model = load_idl()
d = start_or_bail(Daemon(tls=False, extra_args=[
    '--sim-config', 'cpus=4,memory_mib=8192,dom0_memory_mib=1024,'
    'boot_ms=50,shutdown_ms=100']))
c = d.client()
tmp = tempfile.mkdtemp(prefix='xapi-storage-test.')


def wait_for(fn, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError('condition not met in %ss' % timeout)


def wait_task(task, timeout=30):
    wait_for(lambda: c.task.get_status(s, task) not in ('pending',
                                                        'cancelling'),
             timeout)
    return c.task.get_record(s, task)


def task_ref_result(task):
    rec = wait_task(task)
    assert rec['status'] == 'success', rec
    return re.search(r'OpaqueRef:[0-9a-f-]+', rec['result']).group(0)


def vdi_record(sr, size, name='disk', **kw):
    rec = {'SR': sr, 'virtual_size': str(size), 'type': 'user',
           'sharable': False, 'read_only': False, 'other_config': {},
           'name_label': name}
    rec.update(kw)
    return rec


def new_vdi(sr, size=GiB, name='disk', **kw):
    return c.VDI.create(s, vdi_record(sr, size, name, **kw))


def new_sr(kind, config, name='test SR'):
    host = c.host.get_all(s)[0]
    return c.SR.create(s, host, config, '0', name, '', kind, '', False, {})


def assert_accounting(sr):
    """virtual_allocation is the sum of the VDIs' virtual sizes, and every
    figure the driver gives is sane."""
    rec = c.SR.get_record(s, sr)
    vdis = [c.VDI.get_record(s, v) for v in rec['VDIs']]
    total = sum(int(v['virtual_size']) for v in vdis)
    assert int(rec['virtual_allocation']) == total, \
        (rec['virtual_allocation'], total)
    assert int(rec['physical_size']) > 0, rec['physical_size']
    assert 0 <= int(rec['physical_utilisation']) <= int(rec['physical_size'])
    for v in vdis:
        assert int(v['physical_utilisation']) > 0, v
    return rec


def vhd_files(path):
    return sorted(f for f in os.listdir(path) if f.endswith('.vhd'))


def tapdisk_sock(vbd):
    return os.path.join(d.state_dir, 'tapdisk',
                        c.VBD.get_uuid(s, vbd) + '.sock')


def sr_dir(sr):
    pbd = c.SR.get_PBDs(s, sr)[0]
    return c.PBD.get_device_config(s, pbd)['location']


try:
    s = d.login(c)
    pool = c.pool.get_all(s)[0]
    host = c.host.get_all(s)[0]

    @tap.test('test_default_sr_is_local_storage_and_the_pools_default')
    def _():
        sr = c.pool.get_default_SR(s, pool)
        rec = c.SR.get_record(s, sr)
        assert rec['name_label'] == 'Local storage', rec
        assert rec['type'] == 'file' and rec['content_type'] == 'user', rec
        assert c.pool.get_suspend_image_SR(s, pool) == sr
        assert c.pool.get_crash_dump_SR(s, pool) == sr
        assert len(rec['PBDs']) == 1
        pbd = c.PBD.get_record(s, rec['PBDs'][0])
        assert pbd['host'] == host and pbd['currently_attached'] is True, pbd
        assert pbd['device_config']['location'].endswith('/sr/local'), pbd
        assert 'vdi_create' in rec['allowed_operations'], rec
        assert int(rec['physical_size']) > 0

    @tap.test('test_sm_records_match_the_supported_types')
    def _():
        types = c.SR.get_supported_types(s)
        sms = c.SM.get_all_records(s)
        assert sorted(types) == sorted(r['type'] for r in sms.values()), \
            (types, sms)
        for want in ('file', 'sim', 'iso'):
            assert want in types, types
        for r in sms.values():
            assert r['name_label'] and r['version'], r
            assert set(r['features']) == set(r['capabilities']), r

    @tap.test('test_file_sr_vdi_lifecycle_keeps_space_accounting_true')
    def _():
        path = os.path.join(tmp, 'file-sr')
        sr = new_sr('file', {'location': path}, 'file SR')
        assert c.SR.get_type(s, sr) == 'file'
        assert c.PBD.get_currently_attached(s, c.SR.get_PBDs(s, sr)[0])
        assert_accounting(sr)
        v = new_vdi(sr, GiB, 'base')
        rec = assert_accounting(sr)
        assert int(rec['virtual_allocation']) == GiB
        assert c.VDI.get_virtual_size(s, v) == str(GiB)
        snap = c.VDI.snapshot(s, v, {})
        sr_rec = assert_accounting(sr)
        assert int(sr_rec['virtual_allocation']) == 2 * GiB
        srec = c.VDI.get_record(s, snap)
        assert srec['is_a_snapshot'] and srec['snapshot_of'] == v, srec
        assert srec['read_only'] is True, srec
        assert snap in c.VDI.get_snapshots(s, v)
        clone = c.VDI.clone(s, v, {})
        crec = c.VDI.get_record(s, clone)
        assert not crec['is_a_snapshot'] and not crec['read_only'], crec
        assert int(assert_accounting(sr)['virtual_allocation']) == 3 * GiB
        c.VDI.resize(s, clone, str(2 * GiB))
        assert c.VDI.get_virtual_size(s, clone) == str(2 * GiB)
        assert int(assert_accounting(sr)['virtual_allocation']) == 4 * GiB
        copy = c.VDI.copy(s, v, sr, NULL, NULL)
        assert c.VDI.get_virtual_size(s, copy) == str(GiB)
        assert int(assert_accounting(sr)['virtual_allocation']) == 5 * GiB
        for x in (copy, clone, snap, v):
            c.VDI.destroy(s, x)
            assert_accounting(sr)
        assert c.SR.get_VDIs(s, sr) == []
        assert c.SR.get_virtual_allocation(s, sr) == '0'
        # the GC removes the bases the snapshot and clone left
        wait_for(lambda: vhd_files(path) == [], 15)

    @tap.test('test_vdi_copy_goes_to_another_sr_and_into_an_existing_vdi')
    def _():
        a = new_sr('file', {'location': os.path.join(tmp, 'copy-a')}, 'A')
        b = new_sr('file', {'location': os.path.join(tmp, 'copy-b')}, 'B')
        v = new_vdi(a, 64 * MiB)
        task = c.Async.VDI.copy(s, v, b, NULL, NULL)
        copy = task_ref_result(task)
        assert float(c.task.get_progress(s, task)) == 1.0
        assert c.VDI.get_SR(s, copy) == b
        assert_accounting(a)
        assert_accounting(b)
        into = new_vdi(b, 128 * MiB)
        assert c.VDI.copy(s, v, NULL, NULL, into) == into
        small = new_vdi(b, 16 * MiB)
        expect_error(lambda: c.VDI.copy(s, v, NULL, NULL, small),
                     'VDI_TOO_SMALL', [small, str(64 * MiB)])
        snap = c.VDI.snapshot(s, v, {})
        expect_error(lambda: c.VDI.copy(s, v, NULL, NULL, snap),
                     'VDI_READONLY', [snap])

    def http(method, path, body=None):
        import http.client
        conn = http.client.HTTPConnection('127.0.0.1', d.http_port, timeout=60)
        conn.request(method, path, body=body, headers={
            'Content-Length': str(len(body))} if body is not None else {})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    def write_disk(vdi, data):
        st, body = http('PUT', '/import_raw_vdi?session_id=%s&vdi=%s'
                        '&format=raw' % (s, vdi), data)
        if st == 404:
            raise Skip('no /import_raw_vdi handler')
        assert st == 200, (st, body[:200])

    def read_disk(vdi):
        st, body = http('GET', '/export_raw_vdi?session_id=%s&vdi=%s'
                        '&format=raw' % (s, vdi))
        assert st == 200, (st, body[:200])
        return body

    def pattern(seed, size):
        buf = bytearray(size)
        rnd = __import__('random').Random(seed)
        for _ in range(5):
            off = rnd.randrange(0, size // MiB) * MiB + rnd.randrange(0, 64) * 512
            n = min(rnd.randrange(1, 200) * 512, size - off)
            buf[off:off + n] = rnd.randbytes(n)
        return bytes(buf)

    @tap.test('test_vdi_copy_copies_the_data_and_with_a_base_only_the_changes')
    def _():
        sr = new_sr('file', {'location': os.path.join(tmp, 'data-sr')})
        size = 8 * MiB
        a = new_vdi(sr, size)
        one, two = pattern(1, size), pattern(2, size)
        write_disk(a, one)
        full = c.VDI.copy(s, a, sr, NULL, NULL)
        assert read_disk(full) == one
        base = c.VDI.snapshot(s, a, {})
        write_disk(a, two)
        assert read_disk(base) == one
        # into a copy of the base, only what changed since the base
        target = c.VDI.clone(s, base, {})
        assert c.VDI.copy(s, a, NULL, base, target) == target
        assert read_disk(target) == two
        assert read_disk(a) == two

    @tap.test('test_cancelled_vdi_copy_leaves_no_copy_behind')
    def _():
        sr = new_sr('file', {'location': os.path.join(tmp, 'cancel-sr')})
        a = new_vdi(sr, 1024 * GiB // 64)       # 16 GiB, all zeros
        before = sorted(c.SR.get_VDIs(s, sr))
        task = c.Async.VDI.copy(s, a, sr, NULL, NULL)
        c.task.cancel(s, task)
        rec = wait_task(task, 120)
        if rec['status'] == 'success':
            raise Skip('the copy finished before the cancel reached it')
        assert rec['status'] == 'cancelled', rec
        assert rec['error_info'] == ['TASK_CANCELLED', task], rec
        assert sorted(c.SR.get_VDIs(s, sr)) == before
        assert c.VDI.get_current_operations(s, a) == {}
        assert_accounting(sr)

    @tap.test('test_sim_size_gives_SR_FULL_with_requested_and_maximum')
    def _():
        sr = new_sr('sim', {'location': os.path.join(tmp, 'sim-full'),
                            'size': str(4 * GiB)})
        before = c.SR.get_VDIs(s, sr)
        v = new_vdi(sr, GiB)
        assert c.SR.get_physical_size(s, sr) == str(4 * GiB)
        assert c.SR.get_physical_utilisation(s, sr) == str(GiB)
        expect_error(lambda: new_vdi(sr, 4 * GiB), 'SR_FULL',
                     [str(4 * GiB), str(3 * GiB)])
        expect_error(lambda: c.VDI.resize(s, v, str(5 * GiB)), 'SR_FULL',
                     [str(5 * GiB), str(3 * GiB)])
        assert len(c.SR.get_VDIs(s, sr)) == len(before) + 1
        assert c.VDI.get_virtual_size(s, v) == str(GiB)
        assert_accounting(sr)

    @tap.test('test_injected_driver_failures_leave_no_rows_behind')
    def _():
        path = os.path.join(tmp, 'sim-fail')
        sr = new_sr('sim', {'location': path})
        v = new_vdi(sr, GiB)
        pbd = c.SR.get_PBDs(s, sr)[0]
        c.PBD.unplug(s, pbd)
        c.PBD.set_device_config(s, pbd, {
            'location': path,
            'fail': 'vdi_create,vdi_snapshot,vdi_clone,vdi_resize,vdi_destroy'})
        c.PBD.plug(s, pbd)
        n_vdis = len(c.VDI.get_all(s))
        files = vhd_files(path)
        for fn in (lambda: new_vdi(sr, GiB),
                   lambda: c.VDI.snapshot(s, v, {}),
                   lambda: c.VDI.clone(s, v, {}),
                   lambda: c.VDI.resize(s, v, str(2 * GiB)),
                   lambda: c.VDI.destroy(s, v)):
            e = expect_error(fn, 'SR_BACKEND_FAILURE')
            assert len(e) == 4, e
        assert len(c.VDI.get_all(s)) == n_vdis
        assert vhd_files(path) == files, (vhd_files(path), files)
        assert c.VDI.get_virtual_size(s, v) == str(GiB)
        assert c.VDI.get_current_operations(s, v) == {}
        assert c.SR.get_current_operations(s, sr) == {}
        assert 'destroy' in c.VDI.get_allowed_operations(s, v)
        assert_accounting(sr)
        # A driver that cannot attach leaves the PBD unplugged.
        c.PBD.unplug(s, pbd)
        c.PBD.set_device_config(s, pbd, {'location': path, 'fail': 'attach'})
        expect_error(lambda: c.PBD.plug(s, pbd), 'SR_BACKEND_FAILURE')
        assert c.PBD.get_currently_attached(s, pbd) is False
        expect_error(lambda: new_sr('sim', {'location': os.path.join(
            tmp, 'sim-nocreate'), 'fail': 'create'}), 'SR_BACKEND_FAILURE')

    @tap.test('test_slow_operations_on_one_vdi_exclude_each_other')
    def _():
        sr = new_sr('sim', {'location': os.path.join(tmp, 'sim-slow'),
                            'slow': '1500'})
        v = new_vdi(sr, GiB)
        task = c.Async.VDI.snapshot(s, v, {})
        wait_for(lambda: c.VDI.get_current_operations(s, v) != {})
        assert c.VDI.get_allowed_operations(s, v) == []
        expect_error(lambda: c.VDI.destroy(s, v), 'OTHER_OPERATION_IN_PROGRESS',
                     ['VDI', v, 'snapshot', task])
        expect_error(lambda: c.VDI.clone(s, v, {}), 'OTHER_OPERATION_IN_PROGRESS',
                     ['VDI', v, 'snapshot', task])
        snap = task_ref_result(task)
        assert c.VDI.get_snapshot_of(s, snap) == v
        assert c.VDI.get_current_operations(s, v) == {}
        # Two creates on one SR serialize on the SR's lock; both succeed.
        t1 = c.Async.VDI.create(s, vdi_record(sr, GiB, 'one'))
        t2 = c.Async.VDI.create(s, vdi_record(sr, GiB, 'two'))
        r1, r2 = task_ref_result(t1), task_ref_result(t2)
        assert r1 != r2
        assert int(assert_accounting(sr)['virtual_allocation']) == 4 * GiB
        # An SR-wide operation does not wait for a VDI's: it is refused.
        task = c.Async.VDI.resize(s, r1, str(2 * GiB))
        wait_for(lambda: c.VDI.get_current_operations(s, r1) != {})
        pbd = c.SR.get_PBDs(s, sr)[0]
        expect_error(lambda: c.PBD.unplug(s, pbd),
                     'OTHER_OPERATION_IN_PROGRESS', ['VDI', r1, 'resize', task])
        assert wait_task(task)['status'] == 'success'
        assert c.VDI.get_virtual_size(s, r1) == str(2 * GiB)
        assert c.PBD.get_currently_attached(s, pbd) is True

    @tap.test('test_parallel_clients_leave_consistent_records')
    def _():
        path = os.path.join(tmp, 'busy-sr')
        sr = new_sr('file', {'location': path})
        errors = []

        def worker(n):
            cl = d.client()
            try:
                ss = d.login(cl)
                for i in range(4):
                    v = cl.VDI.create(ss, vdi_record(sr, 16 * MiB, 'w%d' % n))
                    snap = cl.VDI.snapshot(ss, v, {})
                    clone = cl.VDI.clone(ss, snap, {})
                    cl.VDI.resize(ss, clone, str(32 * MiB))
                    for x in (clone, snap, v):
                        cl.VDI.destroy(ss, x)
            except Exception as e:      # reported below
                errors.append('worker %d: %r' % (n, e))

        def scanner():
            cl = d.client()
            try:
                ss = d.login(cl)
                for i in range(6):
                    cl.SR.scan(ss, sr)
            except Exception as e:
                errors.append('scanner: %r' % (e,))

        threads = [threading.Thread(target=worker, args=(n,))
                   for n in range(4)] + [threading.Thread(target=scanner)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert c.SR.get_VDIs(s, sr) == []
        assert c.SR.get_current_operations(s, sr) == {}
        assert c.SR.get_virtual_allocation(s, sr) == '0'
        wait_for(lambda: vhd_files(path) == [], 20)

    @tap.test('test_scan_introduces_a_copied_vhd_and_drops_a_deleted_one')
    def _():
        path = os.path.join(tmp, 'scan-sr')
        sr = new_sr('file', {'location': path})
        keep = new_vdi(sr, 32 * MiB, 'keep')
        gone = new_vdi(sr, 32 * MiB, 'gone')
        src = os.path.join(path, c.VDI.get_uuid(s, keep) + '.vhd')
        assert os.path.exists(src), os.listdir(path)
        new_uuid = '0e1a0000-0000-4000-8000-000000000001'
        shutil.copyfile(src, os.path.join(path, new_uuid + '.vhd'))
        os.unlink(os.path.join(path, c.VDI.get_uuid(s, gone) + '.vhd'))
        c.SR.scan(s, sr)
        vdis = c.SR.get_VDIs(s, sr)
        uuids = sorted(c.VDI.get_uuid(s, v) for v in vdis)
        assert uuids == sorted([c.VDI.get_uuid(s, keep), new_uuid]), uuids
        expect_error(lambda: c.VDI.get_record(s, gone), 'HANDLE_INVALID',
                     ['VDI', gone])
        intro = c.VDI.get_by_uuid(s, new_uuid)
        assert c.VDI.get_virtual_size(s, intro) == str(32 * MiB)
        assert_accounting(sr)

    @tap.test('test_pbd_unplug_and_plug')
    def _():
        sr = new_sr('file', {'location': os.path.join(tmp, 'plug-sr')})
        v = new_vdi(sr, GiB)
        pbd = c.SR.get_PBDs(s, sr)[0]
        c.PBD.unplug(s, pbd)
        assert c.PBD.get_currently_attached(s, pbd) is False
        assert 'plug' in c.SR.get_allowed_operations(s, sr)
        expect_error(lambda: new_vdi(sr, GiB), 'SR_NOT_ATTACHED', [sr])
        expect_error(lambda: c.VDI.snapshot(s, v, {}), 'SR_NOT_ATTACHED', [sr])
        c.PBD.unplug(s, pbd)        # again: nothing to do
        c.PBD.plug(s, pbd)
        assert c.PBD.get_currently_attached(s, pbd) is True
        assert c.SR.get_VDIs(s, sr) == [v]
        expect_error(lambda: c.PBD.create(s, {'host': host, 'SR': sr,
                                              'device_config': {}}),
                     'PBD_EXISTS', [sr, host, pbd])
        expect_error(lambda: c.PBD.destroy(s, pbd), 'OPERATION_NOT_ALLOWED',
                     ['PBD is currently attached'])

    @tap.test('test_sr_forget_and_destroy_need_unplugged_pbds')
    def _():
        path = os.path.join(tmp, 'forget-sr')
        sr = new_sr('file', {'location': path})
        uuid = c.SR.get_uuid(s, sr)
        v = new_vdi(sr, GiB)
        vuuid = c.VDI.get_uuid(s, v)
        expect_error(lambda: c.SR.forget(s, sr), 'SR_HAS_PBD', [sr])
        expect_error(lambda: c.SR.destroy(s, sr), 'SR_HAS_PBD', [sr])
        c.PBD.unplug(s, c.SR.get_PBDs(s, sr)[0])
        c.SR.forget(s, sr)
        expect_error(lambda: c.SR.get_record(s, sr), 'HANDLE_INVALID',
                     ['SR', sr])
        expect_error(lambda: c.VDI.get_by_uuid(s, vuuid), 'UUID_INVALID')
        assert vhd_files(path) == [vuuid + '.vhd']
        # introduce it again: a PBD and a plug find the VDI
        sr = c.SR.introduce(s, uuid, 'again', '', 'file', 'user', False, {})
        expect_error(lambda: c.SR.introduce(s, uuid, 'twice', '', 'file',
                                            'user', False, {}),
                     'SR_UUID_EXISTS', [uuid])
        pbd = c.PBD.create(s, {'host': host, 'SR': sr,
                               'device_config': {'location': path}})
        c.PBD.plug(s, pbd)
        assert [c.VDI.get_uuid(s, x) for x in c.SR.get_VDIs(s, sr)] == [vuuid]
        c.PBD.unplug(s, pbd)
        c.SR.destroy(s, sr)
        expect_error(lambda: c.SR.get_record(s, sr), 'HANDLE_INVALID',
                     ['SR', sr])
        assert not os.path.exists(path) or vhd_files(path) == []
        assert c.PBD.get_all_records_where(
            s, 'field "SR" = "%s"' % sr) == {}

    @tap.test('test_errors_have_xenapi_codes_and_params')
    def _():
        expect_error(lambda: new_sr('nope', {}), 'SR_UNKNOWN_DRIVER', ['nope'])
        expect_error(lambda: c.SR.probe(s, host, {}, 'nope', {}),
                     'SR_UNKNOWN_DRIVER', ['nope'])
        expect_error(lambda: new_vdi('OpaqueRef:bad'), 'HANDLE_INVALID',
                     ['SR', 'OpaqueRef:bad'])
        expect_error(lambda: c.VDI.snapshot(s, 'OpaqueRef:bad', {}),
                     'HANDLE_INVALID', ['VDI', 'OpaqueRef:bad'])
        sr = c.pool.get_default_SR(s, pool)
        expect_error(lambda: new_vdi(sr, -1), 'INVALID_VALUE',
                     ['virtual_size', '-1'])
        v = new_vdi(sr, GiB)
        e = expect_error(lambda: c.VDI.resize(s, v, str(MiB)),
                         'SR_BACKEND_FAILURE')
        assert len(e) == 4, e
        expect_error(lambda: c.VDI.data_destroy(s, v), 'VDI_NO_CBT_METADATA',
                     [v])
        vm = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        expect_error(lambda: c.VBD.create(s, full_record(
            model, 'VBD', VM=vm, VDI=NULL, userdevice='3', mode='RW',
            type='CD', empty=True, bootable=False, unpluggable=True)),
            'VBD_CDS_MUST_BE_READONLY', [])
        expect_error(lambda: c.VBD.create(s, full_record(
            model, 'VBD', VM=vm, VDI=NULL, userdevice='3', mode='RW',
            type='Disk', empty=True, bootable=False, unpluggable=True)),
            'VBD_NOT_REMOVABLE_MEDIA', ['in constructor'])
        assert c.SR.probe_ext(s, host, {'location': os.path.join(tmp, 'x')},
                              'file', {})
        c.VDI.destroy(s, v)

    @tap.test('test_vdi_forget_introduce_update_and_setters')
    def _():
        sr = new_sr('file', {'location': os.path.join(tmp, 'intro-sr')})
        v = new_vdi(sr, GiB, 'orig')
        expect_error(lambda: new_vdi(sr, 3 << 40), 'VDI_TOO_LARGE',
                     [NULL, str((2040 << 30))])
        expect_error(lambda: c.VDI.resize(s, v, str(3 << 40)), 'VDI_TOO_LARGE',
                     [v, str((2040 << 30))])
        loc = c.VDI.get_location(s, v)
        uuid = c.VDI.get_uuid(s, v)
        c.VDI.forget(s, v)
        assert c.SR.get_VDIs(s, sr) == []
        assert c.SR.get_virtual_allocation(s, sr) == '0'

        def introduce(location, uuid=''):
            return c.VDI.introduce(s, uuid, 'back', 'again', sr, 'user', False,
                                   False, {'k': 'v'}, location, {}, {}, True,
                                   '0', '0', '', False, '19700101T00:00:00Z',
                                   '')
        back = introduce(loc, uuid)
        rec = c.VDI.get_record(s, back)
        assert rec['uuid'] == uuid and rec['location'] == loc, rec
        assert rec['virtual_size'] == str(GiB), rec
        assert rec['name_label'] == 'back' and rec['other_config'] == {'k': 'v'}
        assert c.SR.get_virtual_allocation(s, sr) == str(GiB)
        expect_error(lambda: introduce(loc), 'LOCATION_NOT_UNIQUE', [sr, loc])
        expect_error(lambda: introduce('not-there'), 'VDI_LOCATION_MISSING',
                     [sr, 'not-there'])
        c.VDI.update(s, back)
        c.VDI.set_name_label(s, back, 'renamed')
        c.VDI.set_name_description(s, back, 'described')
        c.VDI.set_sharable(s, back, True)
        c.VDI.set_on_boot(s, back, 'reset')
        c.VDI.set_allow_caching(s, back, True)
        rec = c.VDI.get_record(s, back)
        assert (rec['name_label'], rec['name_description'], rec['sharable'],
                rec['on_boot'], rec['allow_caching']) == (
            'renamed', 'described', True, 'reset', True), rec
        c.VDI.set_read_only(s, back, True)
        expect_error(lambda: c.VDI.resize(s, back, str(2 * GiB)),
                     'VDI_READONLY', [back])
        c.SR.set_name_label(s, sr, 'new name')
        c.SR.set_name_description(s, sr, 'new text')
        assert c.SR.get_name_label(s, sr) == 'new name'
        assert c.SR.get_name_description(s, sr) == 'new text'
        expect_error(lambda: c.SR.assert_can_host_ha_statefile(s, sr),
                     'HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED', [sr])
        c.SR.update(s, sr)
        assert_accounting(sr)

    @tap.test('test_vbd_plug_serves_the_disk_over_nbd_and_unplug_stops_it')
    def _():
        if not shutil.which('nbdinfo'):
            raise Skip('nbdinfo is not installed')
        sr = c.pool.get_default_SR(s, pool)
        t = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        vm = c.VM.clone(s, t, 'storage-vm')
        c.VM.set_is_a_template(s, vm, False)
        c.VM.set_domain_type(s, vm, 'pv')
        c.VM.start(s, vm, False, False)
        v = new_vdi(sr, 64 * MiB, 'hotplug')
        vbd = c.VBD.create(s, full_record(
            model, 'VBD', VM=vm, VDI=v, userdevice='5', mode='RW',
            type='Disk', empty=False, bootable=False, unpluggable=True,
            qos_algorithm_type='ratelimit',
            qos_algorithm_params={'iops': '200', 'kbps': '4096'}))
        try:
            c.VBD.plug(s, vbd)
        except XenAPIError as e:
            raise Skip('VBD.plug failed (%s): block servers unavailable?'
                       % e.details)
        sock = os.path.join(d.state_dir, 'tapdisk',
                            c.VBD.get_uuid(s, vbd) + '.sock')
        assert os.path.exists(sock), os.listdir(os.path.dirname(sock))
        r = subprocess.run(['nbdinfo', '--size', 'nbd+unix:///?socket=' + sock],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert int(r.stdout.strip()) == 64 * MiB, r.stdout
        with open(sock[:-len('.sock')] + '.pid') as f:
            pid = int(f.read().split()[0])
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            argv = f.read().split(b'\0')
        assert b'--iops=200' in argv and b'--kbps=4096' in argv, argv
        expect_error(lambda: c.VDI.destroy(s, v), 'VDI_IN_USE', [v, 'destroy'])
        expect_error(lambda: c.PBD.unplug(s, c.SR.get_PBDs(s, sr)[0]),
                     'VDI_IN_USE', [v, 'unplug'])
        # A snapshot of a disk in use pauses its block server around it.
        snap = c.VDI.snapshot(s, v, {})
        r = subprocess.run(['nbdinfo', '--size', 'nbd+unix:///?socket=' + sock],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        # A read-write disk of a snapshot cannot be plugged.
        vbd2 = c.VBD.create(s, full_record(
            model, 'VBD', VM=vm, VDI=snap, userdevice='6', mode='RW',
            type='Disk', empty=False, bootable=False, unpluggable=True))
        expect_error(lambda: c.VBD.assert_attachable(s, vbd2), 'VDI_READONLY',
                     [snap])
        expect_error(lambda: c.VBD.plug(s, vbd2), 'VDI_READONLY', [snap])
        c.VBD.assert_attachable(s, vbd)
        c.VBD.destroy(s, vbd2)
        # Another running VM may not write the disk too, unless sharable.
        vm2 = c.VM.clone(s, t, 'storage-vm-2')
        c.VM.set_is_a_template(s, vm2, False)
        c.VM.set_domain_type(s, vm2, 'pv')
        c.VM.start(s, vm2, False, False)
        vbd3 = c.VBD.create(s, full_record(
            model, 'VBD', VM=vm2, VDI=v, userdevice='5', mode='RW',
            type='Disk', empty=False, bootable=False, unpluggable=True))
        expect_error(lambda: c.VBD.plug(s, vbd3), 'VDI_IN_USE', [v, 'attach'])
        assert c.VBD.get_currently_attached(s, vbd3) is False
        vbd4 = c.VBD.create(s, full_record(
            model, 'VBD', VM=vm2, VDI=v, userdevice='6', mode='RO',
            type='Disk', empty=False, bootable=False, unpluggable=True))
        expect_error(lambda: c.VBD.plug(s, vbd4), 'VDI_IN_USE', [v, 'attach'])
        # a sharable disk may be read by another VM while one writes it
        c.VDI.set_sharable(s, v, True)
        c.VBD.plug(s, vbd4)
        c.VBD.unplug(s, vbd4)
        c.VDI.set_sharable(s, v, False)
        c.VM.hard_shutdown(s, vm2)
        c.VBD.destroy(s, vbd3)
        c.VBD.destroy(s, vbd4)
        c.VBD.unplug(s, vbd)
        assert not os.path.exists(sock)
        c.VM.hard_shutdown(s, vm)
        c.VBD.destroy(s, vbd)
        c.VDI.destroy(s, snap)
        c.VDI.destroy(s, v)

    @tap.test('test_clone_of_a_snapshot_is_writable_and_of_a_read_only_vdi_not')
    def _():
        sr = new_sr('file', {'location': os.path.join(tmp, 'clone-ro-sr')})
        v = new_vdi(sr, 16 * MiB)
        snap = c.VDI.snapshot(s, v, {})
        assert c.VDI.get_read_only(s, snap) is True
        clone = c.VDI.clone(s, snap, {})
        rec = c.VDI.get_record(s, clone)
        assert not rec['read_only'] and not rec['is_a_snapshot'], rec
        assert rec['snapshot_of'] == NULL, rec
        # the clone takes writes: an import into it succeeds
        write_disk(clone, b'\x11' * MiB + bytes(15 * MiB))
        ro = new_vdi(sr, 16 * MiB, 'ro', read_only=True)
        assert c.VDI.get_read_only(s, c.VDI.clone(s, ro, {})) is True

    def open_for_writing(pid, path):
        """Whether process pid holds path open for writing."""
        fd_dir = '/proc/%d/fd' % pid
        try:
            names = os.listdir(fd_dir)
        except OSError:
            return False
        for n in names:
            try:
                if os.readlink(os.path.join(fd_dir, n)) != path:
                    continue
                with open('/proc/%d/fdinfo/%s' % (pid, n)) as f:
                    flags = int(re.search(r'flags:\s*(\d+)', f.read())
                                .group(1), 8)
                if flags & 3:
                    return True
            except (OSError, AttributeError):
                continue
        return False

    @tap.test('test_attach_during_a_gc_step_waits_for_it_instead_of_failing')
    def _():
        """The GC coalescing a VDI's leaf into its base holds the leaf open
        for writing; a block server starting meanwhile could not open it.
        The test sees the daemon open the leaf (only the GC does, here)
        and plugs the VDI into a running VM right then: the plug waits for
        the step and succeeds, and no data is lost."""
        if not shutil.which('nbdinfo'):
            raise Skip('nbdinfo is not installed')
        pid = d.proc.pid if d.proc else 0
        if not os.path.isdir('/proc/%d/fd' % pid):
            raise Skip('cannot watch the daemon\'s open files')
        path = os.path.join(tmp, 'gc-race-sr')
        sr = new_sr('file', {'location': path})
        t = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        vm = c.VM.clone(s, t, 'gc-race-vm')
        c.VM.set_is_a_template(s, vm, False)
        c.VM.set_domain_type(s, vm, 'pv')
        c.VM.start(s, vm, False, False)
        size = 128 * MiB
        data = bytes(range(1, 256)) * (size // 255) + b'\x01' * (size % 255)
        raced = 0
        for round_ in range(3):
            v = new_vdi(sr, size, 'gc-race-%d' % round_)
            leaf = os.path.join(path, c.VDI.get_uuid(s, v) + '.vhd')
            snap = c.VDI.snapshot(s, v, {})
            # the data goes to the leaf, which the GC then coalesces
            write_disk(v, data)
            vbd = c.VBD.create(s, full_record(
                model, 'VBD', VM=vm, VDI=v, userdevice=str(5 + round_),
                mode='RW', type='Disk', empty=False, bootable=False,
                unpluggable=True))
            result = {}

            def plug_when_the_gc_holds_the_leaf():
                end = time.time() + 20
                while time.time() < end:
                    if open_for_writing(pid, leaf):
                        result['during'] = True
                        break
                    time.sleep(0.0005)
                try:
                    c.VBD.plug(s, vbd)
                    result['ok'] = True
                except XenAPIError as e:
                    result['error'] = e.details

            th = threading.Thread(target=plug_when_the_gc_holds_the_leaf)
            th.start()
            c.VDI.destroy(s, snap)      # kicks the GC
            th.join(60)
            assert result.get('ok'), result
            raced += bool(result.get('during'))
            assert os.path.exists(tapdisk_sock(vbd))
            c.VBD.unplug(s, vbd)
            c.VBD.destroy(s, vbd)
            # every byte written before is still there
            c.SR.scan(s, sr)            # kicks the GC, had it skipped v
            wait_for(lambda: len(vhd_files(path)) == 1, 30)
            assert read_disk(v) == data
            c.VDI.destroy(s, v)
        c.VM.hard_shutdown(s, vm)
        c.VM.destroy(s, vm)
        if not raced:
            raise Skip('the GC step ended before the test saw it begin')
        print('# %d of 3 plugs started while the GC held the leaf' % raced)

    @tap.test('test_iso_sr_lists_images_read_only_and_serves_an_inserted_cd')
    def _():
        lib = os.path.join(tmp, 'isos')
        os.makedirs(lib)
        with open(os.path.join(lib, 'install.iso'), 'wb') as f:
            f.write(os.urandom(MiB))
        sr = c.SR.create(s, host, {'location': lib}, '0', 'ISOs', '', 'iso',
                         'iso', False, {})
        assert c.SR.get_content_type(s, sr) == 'iso'
        vdis = c.SR.get_VDIs(s, sr)
        assert len(vdis) == 1, vdis
        iso = vdis[0]
        rec = c.VDI.get_record(s, iso)
        assert rec['name_label'] == 'install.iso' and rec['read_only'], rec
        assert rec['virtual_size'] == str(MiB), rec
        assert 'vdi_create' not in c.SR.get_allowed_operations(s, sr)
        expect_error(lambda: new_vdi(sr, MiB), 'SR_OPERATION_NOT_SUPPORTED',
                     [sr])
        expect_error(lambda: c.VDI.destroy(s, iso),
                     'SR_OPERATION_NOT_SUPPORTED', [sr])
        if not shutil.which('nbdinfo'):
            raise Skip('nbdinfo is not installed')
        t = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        vm = c.VM.clone(s, t, 'iso-vm')
        c.VM.set_is_a_template(s, vm, False)
        c.VM.set_domain_type(s, vm, 'pv')
        cd = c.VBD.create(s, full_record(
            model, 'VBD', VM=vm, VDI=NULL, userdevice='3', mode='RO',
            type='CD', empty=True, bootable=False, unpluggable=True))
        c.VM.start(s, vm, False, False)
        # a disc changes in a running drive through the guest's drivers
        wait_for(lambda: c.VM.get_guest_metrics(s, vm) != NULL)
        c.VBD.insert(s, cd, iso)
        sock = os.path.join(d.state_dir, 'tapdisk',
                            c.VBD.get_uuid(s, cd) + '.sock')
        r = subprocess.run(['nbdinfo', '--size', 'nbd+unix:///?socket=' + sock],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert int(r.stdout.strip()) == MiB, r.stdout
        c.VBD.eject(s, cd)
        assert not os.path.exists(sock)
        c.VM.hard_shutdown(s, vm)
        c.VM.destroy(s, vm)

    @tap.test('test_restart_keeps_one_local_sr_and_replugs_pbds')
    def _():
        srs = sorted(c.SR.get_all(s))
        default = c.pool.get_default_SR(s, pool)
        d.restart()
        c2 = d.client()
        s2 = d.login(c2)
        assert sorted(c2.SR.get_all(s2)) == srs
        assert c2.pool.get_default_SR(s2, pool) == default
        rec = c2.SR.get_record(s2, default)
        assert c2.PBD.get_currently_attached(s2, rec['PBDs'][0]) is True
        assert len(c2.SM.get_all(s2)) == len(c2.SR.get_supported_types(s2))
    def pid_alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split()[2] != 'Z'

    @tap.test('test_block_servers_end_with_the_daemon_and_leftovers_are_stopped')
    def _():
        cl = d.client()
        ss = d.login(cl)
        sr = cl.pool.get_default_SR(ss, cl.pool.get_all(ss)[0])
        t = cl.VM.get_by_name_label(ss, 'Debian Bookworm 12')[0]
        vm = cl.VM.clone(ss, t, 'restart-vm')
        cl.VM.set_is_a_template(ss, vm, False)
        cl.VM.set_domain_type(ss, vm, 'pv')
        v = cl.VDI.create(ss, vdi_record(sr, 16 * MiB))
        vbd = cl.VBD.create(ss, full_record(
            model, 'VBD', VM=vm, VDI=v, userdevice='0', mode='RW',
            type='Disk', empty=False, bootable=True, unpluggable=True))
        pidfile = os.path.join(d.state_dir, 'tapdisk',
                               cl.VBD.get_uuid(ss, vbd) + '.pid')

        def server_pid():
            cl.VM.start(ss, vm, False, False)
            if not os.path.exists(pidfile):
                raise Skip('VM.start started no block server')
            with open(pidfile) as f:
                return int(f.read().split()[0])

        pid = server_pid()
        assert pid_alive(pid)
        d.restart()         # a clean stop ends the simulator's servers
        assert not pid_alive(pid), pid
        assert not os.path.exists(pidfile)
        cl = d.client()
        ss = d.login(cl)
        pid = server_pid()
        d.kill()            # a crash leaves the server serving
        assert pid_alive(pid), pid
        d.start()
        wait_for(lambda: not pid_alive(pid))
        assert not os.path.exists(pidfile)
finally:
    shutil.rmtree(tmp, ignore_errors=True)

finish_daemon(d)
tap.finish()
