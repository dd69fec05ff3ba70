#!/usr/bin/env python3
"""test_import_export.py — disks and VMs over HTTP, as XenAPI clients move
them (xapi/vdi-io.c, xapi/xva.c, docs/xva.md), on the simulator:

- PUT /import_raw_vdi writes a body into a VDI, sent with Content-Length
  or chunked, over HTTP and HTTPS, raw or as a VHD stream (ours and
  qemu-img's); the VDI's VHD file then reads back, through
  `qemu-img convert -f vpc`, as what was sent; zero runs leave it sparse;
- GET /export_raw_vdi gives the contents raw, or as a dynamic VHD that
  `qemu-img compare` finds equal, with the Content-Length announced;
- GET /export gives an XVA: a tar whose first member is ova.xml (version
  record, the VM and its VBDs, VDIs, SRs, VIFs, networks as "Ref:N"
  objects) and then 1 MiB chunks "Ref:N/%08d" with SHA-1 ".checksum"
  members, zero chunks left out but the first and last; a running VM is
  refused with VM_BAD_POWER_STATE;
- PUT /import of that XVA makes a halted VM with the same disks; bad
  checksums, a truncated archive and a newer version fail the task with
  XenAPI's codes and leave no VM, VDI, VBD or VIF behind;
- refusals: no session (401), bad VDI (404), VDI too small (413 with
  VDI_TOO_SMALL), unknown format (400); progress on the task;
- figures: MB/s of raw export and import of a 1 GiB VDI, beside qemu-img
  convert of the same file (printed as comments, never a failure)."""
import hashlib
import http.client
import io
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import tarfile
import tempfile
import time
import xmlrpc.client

from xapitest import (Daemon, Skip, XenAPIError, expect_error, finish_daemon,
                      full_record, load_idl, start_or_bail, tap,
                      unverified_context)

MiB = 1 << 20
GiB = 1 << 30
NULL = 'OpaqueRef:NULL'

model = load_idl()
d = start_or_bail(Daemon(extra_args=[
    '--sim-config', 'cpus=4,memory_mib=8192,dom0_memory_mib=1024,'
    'boot_ms=50,shutdown_ms=100']))
c = d.client()
tmp = tempfile.mkdtemp(prefix='xapi-ie-test.')
have_qemu_img = shutil.which('qemu-img') is not None
open_at_stop = []


def wait_for(fn, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError('condition not met in %ss' % timeout)


def wait_task(task, timeout=60):
    wait_for(lambda: c.task.get_status(s, task) not in ('pending',
                                                        'cancelling'),
             timeout)
    return c.task.get_record(s, task)


def new_vdi(size, name='disk'):
    sr = c.pool.get_default_SR(s, c.pool.get_all(s)[0])
    return c.VDI.create(s, {'SR': sr, 'virtual_size': str(size),
                            'type': 'user', 'sharable': False,
                            'read_only': False, 'other_config': {},
                            'name_label': name})


def vhd_path(vdi):
    uuid = c.VDI.get_uuid(s, vdi)
    for root, _, files in os.walk(d.state_dir):
        for f in files:
            if f.startswith(uuid) and f.endswith('.vhd'):
                return os.path.join(root, f)
    raise AssertionError('no VHD file for VDI %s' % uuid)


def pattern(size, seed=1, zero_every=3):
    """size bytes: 1 MiB pieces of random data, every zero_every-th piece
    zeros (so sparseness matters), ending in a partial piece."""
    rnd = random.Random(seed)
    out = bytearray()
    i = 0
    while len(out) < size:
        n = min(MiB, size - len(out))
        out += bytes(n) if i % zero_every == 1 else rnd.randbytes(n)
        i += 1
    return bytes(out)


# ---- a small HTTP client that shows the wire ----

def connect(https=False, timeout=60):
    sk = socket.create_connection(('127.0.0.1', d.https_port if https
                                   else d.http_port), timeout=timeout)
    if https:
        sk = unverified_context().wrap_socket(sk, server_hostname='localhost')
    return sk


def read_head(sk, buf=b''):
    while b'\r\n\r\n' not in buf:
        got = sk.recv(65536)
        if not got:
            raise AssertionError('connection closed before a response head: '
                                 '%r' % buf)
        buf += got
    head, rest = buf.split(b'\r\n\r\n', 1)
    lines = head.decode('latin-1').split('\r\n')
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, v = l.split(':', 1)
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


def read_body(sk, hdrs, rest, sink=None):
    """The body after a head: Content-Length bytes, or until the close.
    With sink, bytes go there (returns the count) instead of memory."""
    want = int(hdrs['content-length']) if 'content-length' in hdrs else None
    got = bytearray() if sink is None else None
    n = 0

    def take(b):
        nonlocal n
        n += len(b)
        if sink is None:
            got.extend(b)
        else:
            sink(b)
    take(rest)
    while want is None or n < want:
        try:
            b = sk.recv(4 * MiB)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not b:
            break
        take(b)
    return bytes(got) if sink is None else n


def request(method, path, body=b'', headers=None, https=False, chunked=False,
            expect=False, chunk_size=MiB + 7):
    """Sends a request (the body whole, or chunked) and returns (status,
    headers, body) of the final response (skipping a 100 Continue)."""
    sk = connect(https)
    try:
        h = ['%s %s HTTP/1.1' % (method, path), 'Host: localhost']
        for k, v in (headers or {}).items():
            h.append('%s: %s' % (k, v))
        if chunked:
            h.append('Transfer-Encoding: chunked')
        elif method in ('PUT', 'POST'):
            h.append('Content-Length: %d' % len(body))
        if expect:
            h.append('Expect: 100-continue')
        sk.sendall(('\r\n'.join(h) + '\r\n\r\n').encode())
        rest = b''
        if expect:
            status, hdrs, rest = read_head(sk)
            if status != 100:
                return status, hdrs, read_body(sk, hdrs, rest)
        try:
            if chunked:
                for i in range(0, len(body), chunk_size):
                    piece = body[i:i + chunk_size]
                    sk.sendall(b'%x\r\n' % len(piece) + piece + b'\r\n')
                sk.sendall(b'0\r\n\r\n')
            elif body:
                sk.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, hdrs, rest = read_head(sk, rest)
        return status, hdrs, read_body(sk, hdrs, rest)
    finally:
        sk.close()


def q(**kw):
    kw.setdefault('session_id', s)
    return '&'.join('%s=%s' % (k, v) for k, v in kw.items())


def import_raw(vdi, data, fmt=None, wait=True, **kw):
    args = {'vdi': vdi}
    if fmt:
        args['format'] = fmt
    status, hdrs, body = request('PUT', '/import_raw_vdi?' + q(**args), data,
                                 **kw)
    task = hdrs.get('task-id')
    rec = wait_task(task) if (wait and task) else None
    return status, hdrs, body, rec


def export_raw(vdi, fmt=None, https=False):
    args = {'vdi': vdi}
    if fmt:
        args['format'] = fmt
    return request('GET', '/export_raw_vdi?' + q(**args), https=https)


def qemu_raw(vhd):
    """The contents of a VHD as qemu-img reads it."""
    out = os.path.join(tmp, 'qemu.raw')
    subprocess.run(['qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', vhd,
                    out], check=True, capture_output=True)
    with open(out, 'rb') as f:
        data = f.read()
    os.unlink(out)
    return data


try:
    s = d.login(c)
    sr = c.pool.get_default_SR(s, c.pool.get_all(s)[0])

    # ---- raw disks ----

    SIZE = 16 * MiB
    data = pattern(10 * MiB + 12345)
    full = data + bytes(SIZE - len(data))

    @tap.test('test_import_raw_content_length_then_export_raw')
    def _():
        vdi = new_vdi(SIZE, 'raw-cl')
        status, hdrs, _, rec = import_raw(vdi, data)
        assert status == 200, (status, hdrs)
        assert rec['status'] == 'success', rec
        assert float(rec['progress']) == 1.0, rec
        st, h, body = export_raw(vdi)
        assert st == 200 and int(h['content-length']) == SIZE, (st, h)
        assert body == full, 'exported bytes differ'
        if have_qemu_img:
            assert qemu_raw(vhd_path(vdi)) == full, 'the VHD file differs'

    @tap.test('test_import_raw_chunked_over_https_and_export_over_https')
    def _():
        vdi = new_vdi(SIZE, 'raw-chunked')
        status, hdrs, _, rec = import_raw(vdi, data, https=True, chunked=True)
        assert status == 200 and rec['status'] == 'success', (status, rec)
        st, h, body = export_raw(vdi, https=True)
        assert st == 200 and body == full, st
        if have_qemu_img:
            assert qemu_raw(vhd_path(vdi)) == full, 'the VHD file differs'

    @tap.test('test_import_raw_with_expect_continue_gets_final_status')
    def _():
        vdi = new_vdi(SIZE, 'raw-expect')
        status, hdrs, _, rec = import_raw(vdi, data[:3 * MiB], expect=True)
        assert status == 200 and rec['status'] == 'success', (status, rec)
        st, _, body = export_raw(vdi)
        assert body[:3 * MiB] == data[:3 * MiB]

    @tap.test('test_import_raw_cut_short_inside_a_data_block_fails_cleanly')
    def _():
        # Data blocks of a plain Content-Length body go from the socket to
        # the VHD with splice(); a client that stops in the middle of one
        # must fail the task, and the data written before stays readable.
        vdi = new_vdi(16 * MiB, 'raw-cut')
        sk = connect()
        try:
            sk.sendall(('PUT /import_raw_vdi?%s HTTP/1.1\r\nHost: x\r\n'
                        'Content-Length: %d\r\n\r\n'
                        % (q(vdi=vdi), 16 * MiB)).encode())
            sk.sendall(b'\x5a' * (5 * MiB + 12345))
            sk.shutdown(socket.SHUT_WR)
            status, hdrs, _ = read_head(sk)
        finally:
            sk.close()
        rec = wait_task(hdrs['task-id'])
        assert rec['status'] == 'failure' and rec['error_info'][0] == \
            'IMPORT_ERROR_PREMATURE_EOF', (status, rec)
        st, _, body = export_raw(vdi)
        assert st == 200 and body[:4 * MiB] == b'\x5a' * (4 * MiB), st

    @tap.test('test_import_raw_keeps_the_vhd_sparse')
    def _():
        vdi = new_vdi(64 * MiB, 'sparse')
        blob = bytes(30 * MiB) + b'x' * MiB + bytes(30 * MiB)
        status, _, _, rec = import_raw(vdi, blob)
        assert rec['status'] == 'success', rec
        size = os.stat(vhd_path(vdi)).st_blocks * 512
        assert size < 8 * MiB, 'VHD holds %d bytes for 1 MiB of data' % size

    @tap.test('test_export_vhd_is_a_valid_dynamic_vhd')
    def _():
        if not have_qemu_img:
            raise Skip('no qemu-img')
        vdi = new_vdi(SIZE, 'vhd-out')
        import_raw(vdi, data)
        st, h, body = export_raw(vdi, 'vhd')
        assert st == 200 and int(h['content-length']) == len(body), h
        out = os.path.join(tmp, 'out.vhd')
        ref = os.path.join(tmp, 'ref.raw')
        with open(out, 'wb') as f:
            f.write(body)
        with open(ref, 'wb') as f:
            f.write(full)
        r = subprocess.run(['qemu-img', 'compare', '-f', 'vpc', '-F', 'raw',
                            out, ref], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        # Only the allocated blocks travel: far less than the disk.
        assert len(body) < SIZE, len(body)

    @tap.test('test_import_vhd_streams_ours_and_qemu_imgs')
    def _():
        if not have_qemu_img:
            raise Skip('no qemu-img')
        src = new_vdi(SIZE, 'vhd-src')
        import_raw(src, data)
        _, _, ours = export_raw(src, 'vhd')
        ref = os.path.join(tmp, 'ref.raw')
        qvhd = os.path.join(tmp, 'q.vhd')
        with open(ref, 'wb') as f:
            f.write(full)
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'vpc', '-o',
                        'subformat=dynamic,force_size=on', ref, qvhd],
                       check=True, capture_output=True)
        with open(qvhd, 'rb') as f:
            theirs = f.read()
        for label, stream, chunked in (('ours', ours, False),
                                       ('qemu-img', theirs, True)):
            vdi = new_vdi(SIZE, 'vhd-in')
            # What the VDI held before is replaced.
            import_raw(vdi, b'\xff' * SIZE)
            status, _, _, rec = import_raw(vdi, stream, 'vhd',
                                           chunked=chunked)
            assert rec['status'] == 'success', (label, rec)
            _, _, body = export_raw(vdi)
            assert body == full, '%s: contents differ' % label

    @tap.test('test_import_refusals_answer_status_and_fail_the_task')
    def _():
        small = new_vdi(MiB, 'small')
        st, h, body, rec = import_raw(small, data)
        assert st == 413, (st, body)
        assert rec['status'] == 'failure', rec
        assert rec['error_info'][0] == 'VDI_TOO_SMALL', rec['error_info']
        assert rec['error_info'][1] == small, rec['error_info']
        # Chunked: the size shows only while the data arrives.
        st, h, body, rec = import_raw(small, data, chunked=True, expect=True)
        assert st == 413 and rec['error_info'][0] == 'VDI_TOO_SMALL', rec
        st, h, body = request('PUT', '/import_raw_vdi?' + q(
            vdi='OpaqueRef:nope'), b'abc')
        assert st == 404 and b'HANDLE_INVALID' in body, (st, body)
        st, h, body = request('PUT', '/import_raw_vdi?vdi=' + small, b'abc')
        assert st == 401, st
        st, h, body = request('PUT', '/import_raw_vdi?' + q(
            vdi=small, format='qcow9'), b'abc')
        assert st == 400, (st, body)
        st, h, body = request('GET', '/export_raw_vdi?' + q(
            vdi=c.VDI.get_uuid(s, small)))
        assert st == 200 and len(body) == MiB, st    # by uuid too

    @tap.test('test_basic_auth_is_accepted')
    def _():
        import base64
        vdi = new_vdi(MiB, 'basic')
        cred = base64.b64encode(('root:%s' % d.password).encode()).decode()
        st, h, body = request('GET', '/export_raw_vdi?vdi=' + vdi,
                              headers={'Authorization': 'Basic ' + cred})
        assert st == 200 and len(body) == MiB, st
        cred = base64.b64encode(b'root:wrong').decode()
        st, h, body = request('GET', '/export_raw_vdi?vdi=' + vdi,
                              headers={'Authorization': 'Basic ' + cred})
        assert st == 401, st

    @tap.test('test_roles_below_vm_admin_are_refused_with_403')
    def _():
        import pwd
        import secrets
        if os.geteuid() != 0 or not all(shutil.which(t) for t in (
                'useradd', 'userdel', 'chpasswd')):
            raise Skip('needs root and useradd to make PAM users')
        pool = c.pool.get_all(s)[0]
        c.pool.enable_external_auth(s, pool, {}, 'ie-test', 'PAM')
        roles = {r: c.role.get_by_name_label(s, r)[0]
                 for r in ('vm-operator', 'vm-admin')}
        made = []
        try:
            sessions = {}
            for i, role in enumerate(roles):
                name = 'xie%s%d' % (secrets.token_hex(3), i)
                pw = 'pw-' + secrets.token_urlsafe(12)
                subprocess.run(['useradd', '-M', '-N', '-s',
                                '/usr/sbin/nologin', name], check=True,
                               capture_output=True)
                made.append(name)
                subprocess.run(['chpasswd'], input=('%s:%s\n' % (name, pw))
                               .encode(), check=True, capture_output=True)
                sid = c.auth.get_subject_identifier(s, name)
                subj = c.subject.create(s, {'subject_identifier': sid})
                c.subject.add_to_roles(s, subj, roles[role])
                sessions[role] = c.session.login_with_password(name, pw)
            vdi = new_vdi(MiB, 'rbac')
            st, h, body = request('GET', '/export_raw_vdi?' + q(
                vdi=vdi, session_id=sessions['vm-operator']))
            assert st == 403, (st, body)
            rec = wait_task(h['task-id'])
            assert rec['error_info'][:2] == ['RBAC_PERMISSION_DENIED',
                                             'http/get_export_raw_vdi'], rec
            st, h, body = request('GET', '/export_raw_vdi?' + q(
                vdi=vdi, session_id=sessions['vm-admin']))
            assert st == 200 and len(body) == MiB, st
        finally:
            for name in made:
                subprocess.run(['userdel', name], capture_output=True)

    @tap.test('test_the_unix_socket_needs_no_session')
    def _():
        if not d.unix_path:
            raise Skip('the daemon has no Unix socket here')
        vdi = new_vdi(MiB, 'unix')
        sk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sk.settimeout(30)
        sk.connect(d.unix_path)
        try:
            sk.sendall(('PUT /import_raw_vdi?vdi=%s HTTP/1.1\r\n'
                        'Content-Length: 5\r\n\r\nhello' % vdi).encode())
            st, h, rest = read_head(sk)
            read_body(sk, h, rest)
        finally:
            sk.close()
        assert st == 200, st
        assert wait_task(h['task-id'])['status'] == 'success'
        _, _, body = export_raw(vdi)
        assert body[:5] == b'hello', body[:5]

    @tap.test('test_export_progress_shows_on_the_given_task')
    def _():
        vdi = new_vdi(256 * MiB, 'progress')
        task = c.task.create(s, 'export', '')
        sk = connect()
        try:
            sk.sendall(('GET /export_raw_vdi?%s HTTP/1.1\r\n\r\n'
                        % q(vdi=vdi, task_id=task)).encode())
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            status, hdrs, rest = read_head(sk)
            assert status == 200 and hdrs['task-id'] == task, hdrs
            got = len(rest)
            seen = 0.0
            while got < 256 * MiB:
                b = sk.recv(MiB)
                if not b:
                    break
                got += len(b)
                if got > 64 * MiB and not seen:
                    time.sleep(0.6)
                    seen = float(c.task.get_progress(s, task))
            assert got == 256 * MiB, got
            assert 0 < seen < 1, seen
        finally:
            sk.close()
        rec = wait_task(task)
        assert rec['status'] == 'success' and float(rec['progress']) == 1.0

    @tap.test('test_cancelling_the_task_stops_an_export')
    def _():
        vdi = new_vdi(256 * MiB, 'cancel')
        task = c.task.create(s, 'export', '')
        sk = connect()
        try:
            sk.sendall(('GET /export_raw_vdi?%s HTTP/1.1\r\n\r\n'
                        % q(vdi=vdi, task_id=task)).encode())
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            status, hdrs, rest = read_head(sk)
            assert status == 200, status
            got = len(rest) + len(sk.recv(MiB))
            c.task.cancel(s, task)
            while True:
                b = sk.recv(MiB)
                if not b:
                    break
                got += len(b)
                time.sleep(0.01)
            assert got < 256 * MiB, 'the export went on to the end'
        finally:
            sk.close()
        rec = wait_task(task)
        assert rec['status'] == 'cancelled', rec
        assert rec['error_info'] == ['TASK_CANCELLED', task], rec

    @tap.test('test_import_into_a_disk_in_use_is_refused')
    def _():
        t = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        vm = c.VM.clone(s, t, 'in-use')
        c.VM.set_is_a_template(s, vm, False)
        for old in c.VM.get_VBDs(s, vm):
            c.VBD.destroy(s, old)
        vdi = new_vdi(4 * MiB, 'in use')
        c.VBD.create(s, full_record(
            model, 'VBD', VM=vm, VDI=vdi, userdevice='0', bootable=True,
            mode='RW', type='Disk', empty=False, other_config={},
            qos_algorithm_type='', qos_algorithm_params={}))
        try:
            c.VM.start(s, vm, False, False)
        except XenAPIError as e:
            raise Skip('the VM does not start here: %r' % e.details)
        try:
            st, h, body, rec = import_raw(vdi, b'x' * MiB)
            assert st == 409 and b'VDI_IN_USE' in body, (st, body)
            assert rec['error_info'][:2] == ['VDI_IN_USE', vdi], rec
        finally:
            c.VM.hard_shutdown(s, vm)
        st, h, body, rec = import_raw(vdi, b'x' * MiB)
        assert rec['status'] == 'success', rec

    # ---- XVA ----

    def new_vm(name, disks):
        t = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        vm = c.VM.clone(s, t, name)
        c.VM.set_is_a_template(s, vm, False)
        for old in c.VM.get_VBDs(s, vm):
            c.VBD.destroy(s, old)
        vdis = []
        for i, blob in enumerate(disks):
            vdi = new_vdi(len(blob) + (MiB - len(blob) % MiB) % MiB,
                          '%s disk %d' % (name, i))
            import_raw(vdi, blob)
            c.VBD.create(s, full_record(
                model, 'VBD', VM=vm, VDI=vdi, userdevice=str(i),
                bootable=i == 0, mode='RW', type='Disk', empty=False,
                other_config={}, qos_algorithm_type='',
                qos_algorithm_params={}))
            vdis.append(vdi)
        c.VBD.create(s, full_record(
            model, 'VBD', VM=vm, VDI=NULL, userdevice='3', bootable=False,
            mode='RO', type='CD', empty=True, other_config={},
            qos_algorithm_type='', qos_algorithm_params={}))
        nets = c.network.get_by_name_label(s, 'xva test network')
        net = nets[0] if nets else c.network.create(s, full_record(
            model, 'network', name_label='xva test network',
            name_description='', MTU='1500', other_config={},
            bridge='xvabr0', managed=True, tags=[]))
        c.VIF.create(s, full_record(
            model, 'VIF', VM=vm, network=net, device='0', MAC='',
            MTU='1500', other_config={}, qos_algorithm_type='',
            qos_algorithm_params={}, locking_mode='network_default',
            ipv4_allowed=[], ipv6_allowed=[]))
        return vm, vdis

    def export_xva(vm):
        return request('GET', '/export?' + q(ref=vm))

    def parse_ova(xml):
        return xmlrpc.client.loads(
            '<methodResponse><params><param>%s</param></params>'
            '</methodResponse>' % xml.decode())[0][0]

    disk0 = pattern(5 * MiB + 4096, seed=7)
    disk1 = pattern(3 * MiB, seed=8, zero_every=2)
    xva = {}

    @tap.test('test_a_vm_with_disks_cd_and_vif_for_export')
    def _():
        xva['vm'], _ = new_vm('xva-vm', [disk0, disk1])
    vm = xva.get('vm', NULL)

    @tap.test('test_export_xva_has_ova_xml_chunks_and_checksums')
    def _():
        st, h, body = export_xva(vm)
        assert st == 200, (st, body[:200])
        assert 'content-length' not in h and h.get('task-id'), h
        xva['tar'] = body
        tf = tarfile.open(fileobj=io.BytesIO(body), mode='r:')
        members = tf.getmembers()
        assert members[0].name == 'ova.xml', members[0].name
        assert all(m.isfile() for m in members)
        ova = parse_ova(tf.extractfile(members[0]).read())
        v = ova['version']
        assert v['export_vsn'] == 2 and 'xapi_major' in v, v
        assert {'hostname', 'date', 'product_version', 'product_brand',
                'build_number', 'xapi_minor'} <= set(v), v
        objs = ova['objects']
        classes = [o['class'] for o in objs]
        for cls in ('VM', 'VBD', 'VDI', 'SR', 'VIF', 'network'):
            assert cls in classes, classes
        assert classes.count('VBD') == 3 and classes.count('VDI') == 2
        byid = {o['id']: o for o in objs}
        assert all(re.match(r'^Ref:\d+$', i) for i in byid), list(byid)
        vmo = [o for o in objs if o['class'] == 'VM'][0]
        assert vmo['id'] == 'Ref:0', vmo['id']
        assert vmo['snapshot']['power_state'] == 'Halted'
        assert vmo['snapshot']['name_label'] == 'xva-vm'
        for r in vmo['snapshot']['VBDs']:
            assert byid[r]['class'] == 'VBD', r
        # The disks, in the order of their ids, rebuilt from the chunks.
        disks = {}
        names = [m.name for m in members[1:]]
        for m in members[1:]:
            if m.name.endswith('.checksum'):
                continue
            prefix, num = m.name.split('/')
            assert re.match(r'^\d{8}$', num), m.name
            chunk = tf.extractfile(m).read()
            assert len(chunk) == MiB or m is members[-2], (m.name,
                                                           len(chunk))
            csum = tf.extractfile(tf.getmember(m.name + '.checksum')).read()
            assert csum.decode() == hashlib.sha1(chunk).hexdigest(), m.name
            assert names.index(m.name + '.checksum') == \
                names.index(m.name) + 1
            disks.setdefault(prefix, {})[int(num)] = chunk
        prefixes = [n.split('/')[0] for n in names]
        assert prefixes == sorted(prefixes), 'disks not in id order'
        by_vdi = {}
        for prefix, chunks in disks.items():
            rec = byid[prefix]['snapshot']
            size = int(rec['virtual_size'])
            last = (size - 1) // MiB
            assert 0 in chunks and last in chunks, sorted(chunks)
            img = bytearray(size)
            for n, chunk in chunks.items():
                if 0 < n < last:
                    assert chunk != bytes(len(chunk)), 'zero chunk %d' % n
                img[n * MiB:n * MiB + len(chunk)] = chunk
            by_vdi[rec['name_label']] = bytes(img)
        assert by_vdi['xva-vm disk 0'][:len(disk0)] == disk0
        assert by_vdi['xva-vm disk 1'][:len(disk1)] == disk1
        assert body.endswith(bytes(1024)), 'no end-of-archive blocks'

    def counts():
        return {cls: len(getattr(c, cls).get_all(s))
                for cls in ('VM', 'VDI', 'VBD', 'VIF', 'network')}

    def import_xva(tar, **kw):
        st, h, body = request('PUT', '/import?' + q(**kw), tar)
        rec = wait_task(h['task-id']) if 'task-id' in h else None
        return st, h, body, rec

    @tap.test('test_import_xva_makes_the_same_vm_and_disks')
    def _():
        if 'tar' not in xva:
            raise Skip('no export')
        before = counts()
        st, h, body, rec = import_xva(xva['tar'])
        assert st == 200 and rec['status'] == 'success', (st, rec)
        assert rec['result'].startswith('<value><array><data><value>'
                                        'OpaqueRef:'), rec['result']
        new = re.findall(r'OpaqueRef:[0-9a-f-]+', rec['result'])
        assert len(new) == 1, rec['result']
        nvm = new[0]
        r = c.VM.get_record(s, nvm)
        assert r['name_label'] == 'xva-vm' and r['power_state'] == 'Halted'
        assert r['uuid'] != c.VM.get_uuid(s, vm)
        assert r['current_operations'] == {}, r['current_operations']
        assert not r['is_a_template']
        after = counts()
        assert after['VM'] == before['VM'] + 1, (before, after)
        assert after['VDI'] == before['VDI'] + 2, (before, after)
        assert after['VBD'] == before['VBD'] + 3, (before, after)
        assert after['VIF'] == before['VIF'] + 1, (before, after)
        assert after['network'] == before['network'], 'network duplicated'
        got = {}
        for vbd in r['VBDs']:
            b = c.VBD.get_record(s, vbd)
            if b['type'] == 'CD':
                assert b['empty'], b
                continue
            _, _, data_ = export_raw(b['VDI'])
            got[c.VDI.get_name_label(s, b['VDI'])] = data_
        assert got['xva-vm disk 0'][:len(disk0)] == disk0
        assert got['xva-vm disk 1'][:len(disk1)] == disk1
        vif = c.VIF.get_record(s, r['VIFs'][0])
        old = c.VIF.get_record(s, c.VM.get_VIFs(s, vm)[0])
        assert vif['MAC'] != old['MAC'], 'MAC kept without restore'

    def rewrite(tar, fn, fmt=tarfile.USTAR_FORMAT):
        """A copy of the archive with fn(name, data) -> data (or None to
        drop the member)."""
        src = tarfile.open(fileobj=io.BytesIO(tar), mode='r:')
        out = io.BytesIO()
        dst = tarfile.open(fileobj=out, mode='w:', format=fmt)
        for m in src.getmembers():
            data_ = fn(m.name, src.extractfile(m).read())
            if data_ is None:
                continue
            m.size = len(data_)
            dst.addfile(m, io.BytesIO(data_))
        dst.close()
        return out.getvalue()

    def bad_import(name, tar, code, **kw):
        @tap.test(name)
        def _():
            if 'tar' not in xva:
                raise Skip('no export')
            before = counts()
            st, h, body, rec = import_xva(tar, **kw)
            assert rec and rec['status'] == 'failure', (st, rec)
            assert rec['error_info'][0] == code, rec['error_info']
            after = counts()
            assert after == before, (before, after)

    if 'tar' in xva:
        t = xva['tar']

        def bad_sum(name, data_):
            if name.endswith('/00000000.checksum') and not bad_sum.done:
                bad_sum.done = True
                return b'0' * 40
            return data_
        bad_sum.done = False
        bad_import('test_import_xva_bad_checksum_fails_and_leaves_nothing',
                   rewrite(t, bad_sum), 'IMPORT_ERROR_SOME_CHECKSUMS_FAILED')
        bad_import('test_import_xva_truncated_fails_and_leaves_nothing',
                   t[:len(t) // 2], 'IMPORT_ERROR_PREMATURE_EOF')

        def newer(name, data_):
            if name == 'ova.xml':
                return re.sub(rb'<name>xapi_major</name><value><i4>\d+',
                              b'<name>xapi_major</name><value><i4>99', data_)
            return data_
        bad_import('test_import_xva_newer_version_is_incompatible',
                   rewrite(t, newer), 'IMPORT_INCOMPATIBLE_VERSION')

        def no_ova(name, data_):
            return None if name == 'ova.xml' else data_
        bad_import('test_import_xva_without_ova_xml_is_refused',
                   rewrite(t, no_ova), 'IMPORT_ERROR_UNEXPECTED_FILE')

        def xxh64(data_):
            """XXH64, seed 0 (newer XenServers write .xxhash members)."""
            M = (1 << 64) - 1
            P1, P2, P3 = 11400714785074694791, 14029467366897019727, \
                1609587929392839161
            P4, P5 = 9650029242287828579, 2870177450012600261

            def rotl(x, r):
                return ((x << r) | (x >> (64 - r))) & M

            def rnd(acc, v):
                return rotl((acc + v * P2) & M, 31) * P1 & M
            n, i = len(data_), 0
            if n >= 32:
                v = [(P1 + P2) & M, P2, 0, (-P1) & M]
                while i + 32 <= n:
                    for k in range(4):
                        v[k] = rnd(v[k], int.from_bytes(
                            data_[i + 8 * k:i + 8 * k + 8], 'little'))
                    i += 32
                h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12)
                     + rotl(v[3], 18)) & M
                for k in range(4):
                    h = ((h ^ rnd(0, v[k])) * P1 + P4) & M
            else:
                h = P5
            h = (h + n) & M
            while i + 8 <= n:
                h ^= rnd(0, int.from_bytes(data_[i:i + 8], 'little'))
                h = (rotl(h, 27) * P1 + P4) & M
                i += 8
            if i + 4 <= n:
                h ^= int.from_bytes(data_[i:i + 4], 'little') * P1 & M
                h = (rotl(h, 23) * P2 + P3) & M
                i += 4
            while i < n:
                h ^= data_[i] * P5 & M
                h = rotl(h, 11) * P1 & M
                i += 1
            h ^= h >> 33
            h = h * P2 & M
            h ^= h >> 29
            h = h * P3 & M
            h ^= h >> 32
            return h

        @tap.test('test_import_xva_with_xxhash_checksums')
        def _():
            assert xxh64(b'abc') == 0x44BC2CF5AD770999
            src = tarfile.open(fileobj=io.BytesIO(t), mode='r:')
            out = io.BytesIO()
            dst = tarfile.open(fileobj=out, mode='w:',
                               format=tarfile.USTAR_FORMAT)
            last = None
            for m in src.getmembers():
                data_ = src.extractfile(m).read()
                if m.name.endswith('.checksum'):
                    m.name = m.name[:-len('.checksum')] + '.xxhash'
                    data_ = b'%016X' % xxh64(last)
                last = data_
                m.size = len(data_)
                dst.addfile(m, io.BytesIO(data_))
            dst.close()
            st, h, body, rec = import_xva(out.getvalue())
            assert rec['status'] == 'success', rec

        @tap.test('test_import_xva_written_by_gnu_tar')
        def _():
            def touch(name, data_):
                return data_
            st, h, body, rec = import_xva(rewrite(t, touch,
                                                  tarfile.GNU_FORMAT))
            assert rec['status'] == 'success', rec

        @tap.test('test_import_xva_with_keepalive_chunks_as_xenserver')
        def _():
            # XenServer sends an empty chunk when it has sent nothing for
            # 5 s; the chunks after it are numbered one further.
            src = tarfile.open(fileobj=io.BytesIO(t), mode='r:')
            out = io.BytesIO()
            dst = tarfile.open(fileobj=out, mode='w:',
                               format=tarfile.USTAR_FORMAT)
            prefix = None

            def add(name, data_, like):
                m = tarfile.TarInfo(name)
                m.size, m.mode, m.mtime = len(data_), like.mode, like.mtime
                dst.addfile(m, io.BytesIO(data_))
            for m in src.getmembers():
                data_ = src.extractfile(m).read()
                name = m.name
                if prefix is None and '/' in name:
                    prefix = name.split('/')[0]
                if prefix and name.startswith(prefix + '/'):
                    num, _, ext = name.split('/')[1].partition('.')
                    if int(num) > 0:
                        name = '%s/%08d%s' % (prefix, int(num) + 1,
                                              '.' + ext if ext else '')
                add(name, data_, m)
                if prefix and name == prefix + '/00000000.checksum':
                    add(prefix + '/00000001', b'', m)
                    add(prefix + '/00000001.checksum',
                        hashlib.sha1(b'').hexdigest().encode(), m)
            dst.close()
            st, h, body, rec = import_xva(out.getvalue())
            assert rec['status'] == 'success', rec
            nvm = re.findall(r'OpaqueRef:[0-9a-f-]+', rec['result'])[0]
            got = {}
            for vbd in c.VM.get_VBDs(s, nvm):
                if c.VBD.get_type(s, vbd) == 'Disk':
                    vdi_ = c.VBD.get_VDI(s, vbd)
                    got[c.VDI.get_name_label(s, vdi_)] = export_raw(vdi_)[2]
            assert got['xva-vm disk 0'][:len(disk0)] == disk0
            assert got['xva-vm disk 1'][:len(disk1)] == disk1

        @tap.test('test_import_xva_with_force_ignores_bad_checksums')
        def _():
            bad_sum.done = False
            st, h, body, rec = import_xva(rewrite(t, bad_sum), force='true')
            assert rec['status'] == 'success', rec

        @tap.test('test_import_xva_error_with_expect_continue_has_a_status')
        def _():
            st, h, body = request('PUT', '/import?' + q(), t[:len(t) // 3],
                                  expect=True)
            assert st == 400 and b'IMPORT_ERROR_PREMATURE_EOF' in body, \
                (st, body)

    @tap.test('test_gzip_export_and_import_when_zlib_is_built_in')
    def _():
        import gzip
        if 'tar' not in xva:
            raise Skip('no export')
        st, h, body = request('GET', '/export?' + q(ref=vm,
                                                    use_compression='true'))
        if st == 400:
            raise Skip('this daemon has no zlib (use_compression refused)')
        assert st == 200 and body[:2] == b'\x1f\x8b', (st, body[:10])
        plain = gzip.decompress(body)
        names = tarfile.open(fileobj=io.BytesIO(plain), mode='r:').getnames()
        assert names == tarfile.open(fileobj=io.BytesIO(xva['tar']),
                                     mode='r:').getnames()
        st, h, _, rec = import_xva(gzip.compress(xva['tar'], 6))
        assert rec['status'] == 'success', rec
        nvm = re.findall(r'OpaqueRef:[0-9a-f-]+', rec['result'])[0]
        vbd = [b for b in c.VM.get_VBDs(s, nvm)
               if c.VBD.get_userdevice(s, b) == '0'][0]
        _, _, got = export_raw(c.VBD.get_VDI(s, vbd))
        assert got[:len(disk0)] == disk0
        st, h, _, rec = import_xva(gzip.compress(xva['tar'])[:-5000])
        assert rec['status'] == 'failure', rec

    @tap.test('test_an_empty_50_GiB_disk_travels_as_two_chunks')
    def _():
        vm3, _ = new_vm('big empty', [])
        vdi = new_vdi(50 * GiB, 'big empty disk')
        c.VBD.create(s, full_record(
            model, 'VBD', VM=vm3, VDI=vdi, userdevice='0', bootable=True,
            mode='RW', type='Disk', empty=False, other_config={},
            qos_algorithm_type='', qos_algorithm_params={}))
        t0 = time.time()
        st, h, body = export_xva(vm3)
        took = time.time() - t0
        assert st == 200, st
        names = [n for n in tarfile.open(fileobj=io.BytesIO(body),
                                         mode='r:').getnames()
                 if n != 'ova.xml' and not n.endswith('.checksum')]
        assert [n.split('/')[1] for n in names] == [
            '00000000', '%08d' % (50 * 1024 - 1)], names
        assert took < 20, 'took %.1fs' % took
        st, h, _, rec = import_xva(body)
        assert rec['status'] == 'success', rec

    @tap.test('test_export_of_a_running_vm_is_refused')
    def _():
        vm2, _ = new_vm('running', [])
        c.VM.start(s, vm2, False, False)
        st, h, body = export_xva(vm2)
        assert st == 409 and b'VM_BAD_POWER_STATE' in body, (st, body)
        rec = wait_task(h['task-id'])
        assert rec['error_info'] == ['VM_BAD_POWER_STATE', vm2, 'halted',
                                     'running'], rec['error_info']
        c.VM.hard_shutdown(s, vm2)

    @tap.test('test_export_of_a_snapshot_imports_as_a_template')
    def _():
        snap = c.VM.snapshot(s, vm, 'xva-snap')
        st, h, body = export_xva(snap)
        assert st == 200, st
        st, h, _, rec = import_xva(body)
        assert rec['status'] == 'success', rec
        nvm = re.findall(r'OpaqueRef:[0-9a-f-]+', rec['result'])[0]
        assert c.VM.get_is_a_template(s, nvm)
        assert not c.VM.get_is_a_snapshot(s, nvm)

    # ---- figures ----

    @tap.test('test_throughput_of_raw_import_and_export_of_1_GiB')
    def _():
        if os.environ.get('XAPI_TEST_QUICK'):
            raise Skip('XAPI_TEST_QUICK')
        vdi = new_vdi(GiB, 'big')
        blob = pattern(GiB, seed=3, zero_every=1 << 30)
        t0 = time.time()
        st, _, _, rec = import_raw(vdi, blob)
        t_in = time.time() - t0
        assert rec['status'] == 'success', rec
        sk = connect()
        try:
            sk.sendall(('GET /export_raw_vdi?%s HTTP/1.1\r\n\r\n'
                        % q(vdi=vdi)).encode())
            t0 = time.time()
            st, h, rest = read_head(sk)
            n = read_body(sk, h, rest, sink=lambda b: None)
            t_out = time.time() - t0
        finally:
            sk.close()
        assert n == GiB, n
        line = ('# 1 GiB raw: import %.0f MB/s, export %.0f MB/s'
                % (GiB / t_in / 1e6, GiB / t_out / 1e6))
        if have_qemu_img:
            out = os.path.join(tmp, 'big.raw')
            t0 = time.time()
            subprocess.run(['qemu-img', 'convert', '-f', 'vpc', '-O', 'raw',
                            vhd_path(vdi), out], check=True)
            t_q = time.time() - t0
            os.unlink(out)
            line += '; qemu-img convert of the VHD %.0f MB/s' % (
                GiB / t_q / 1e6)
        print(line)
        c.VDI.destroy(s, vdi)
    # Last: transfers still running when the daemon stops (finish_daemon
    # below checks that it exits cleanly and without sanitizer reports).
    @tap.test('test_transfers_open_at_shutdown')
    def _():
        vdi = new_vdi(256 * MiB, 'open at stop')
        sk = connect()
        sk.sendall(('GET /export_raw_vdi?%s HTTP/1.1\r\n\r\n'
                    % q(vdi=vdi)).encode())
        st, h, rest = read_head(sk)
        assert st == 200, st
        open_at_stop.append(sk)
        vdi2 = new_vdi(256 * MiB, 'open at stop 2')
        sk = connect()
        sk.sendall(('PUT /import_raw_vdi?%s HTTP/1.1\r\nContent-Length: '
                    '%d\r\n\r\n' % (q(vdi=vdi2), 64 * MiB)).encode())
        sk.sendall(b'y' * MiB)
        st, h, rest = read_head(sk)
        assert st == 200, st
        open_at_stop.append(sk)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
    finish_daemon(d)
    for sk in open_at_stop:
        sk.close()
    d.cleanup()
    tap.finish()
