#!/usr/bin/env python3
"""test_nbd.py — the xapi-tapdisk program (storage/tapdisk.c) as the
toolstack runs it: one process per VDI, "ready" on stdout once it
listens, independent NBD clients (nbdinfo, qemu-img, nbdcopy) on its Unix
socket, exit status 0 and its socket gone after SIGTERM, clear failures
for bad command lines.  The protocol itself is tested in
tests/unit/test-nbd.c; this checks the program around it.

Skips when the program was not built or the clients are not installed
(Debian: libnbd-bin, qemu-utils)."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

from xapitest import BUILD, SANITIZER_PATTERNS, Skip, tap

TAPDISK = os.path.join(BUILD, 'storage', 'xapi-tapdisk')
SIZE = 8 << 20


def need(*tools):
    if not os.access(TAPDISK, os.X_OK):
        raise Skip('%s is not built' % TAPDISK)
    for t in tools:
        if not shutil.which(t):
            raise Skip('%s is not installed' % t)


class Tapdisk:
    """One xapi-tapdisk process over a fresh raw image in a temp dir."""

    def __init__(self, *args, image=True):
        self.dir = tempfile.mkdtemp(prefix='test-nbd-')
        self.sock = os.path.join(self.dir, 'vdi.sock')
        self.image = os.path.join(self.dir, 'disk.raw')
        if image:
            with open(self.image, 'wb') as f:
                f.write(os.urandom(SIZE))
        self.log = open(os.path.join(self.dir, 'stderr'), 'w+')
        self.proc = subprocess.Popen(
            [TAPDISK, '--socket', self.sock, '--raw', self.image] +
            list(args), stdout=subprocess.PIPE, stderr=self.log, text=True)

    def wait_ready(self):
        line = self.proc.stdout.readline()
        assert line == 'ready\n', 'first line %r, stderr: %s' % (
            line, self.stderr())

    def uri(self, export=''):
        return 'nbd+unix:///%s?socket=%s' % (export, self.sock)

    def stderr(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout=5):
        """SIGTERM; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError('xapi-tapdisk ignored SIGTERM')

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        err = self.stderr()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        for p in SANITIZER_PATTERNS:
            assert p not in err, err


def run(*argv, timeout=20):
    return subprocess.run(list(argv), capture_output=True, text=True,
                          timeout=timeout)


@tap.test('test_tapdisk_serves_a_raw_file_until_sigterm')
def _():
    need('nbdinfo', 'qemu-img')
    t = Tapdisk('--export', 'vdi-1')
    try:
        t.wait_ready()
        r = run('nbdinfo', '--size', t.uri('vdi-1'))
        assert r.returncode == 0 and r.stdout == '%d\n' % SIZE, r
        r = run('nbdinfo', '--list', t.uri())
        assert 'vdi-1' in r.stdout, r
        out = os.path.join(t.dir, 'copy.raw')
        r = run('qemu-img', 'convert', '-f', 'raw', '-O', 'raw', t.uri(), out)
        assert r.returncode == 0, r
        with open(out, 'rb') as a, open(t.image, 'rb') as b:
            assert a.read() == b.read(), 'copy differs'
        assert t.stop() == 0
        assert not os.path.exists(t.sock), 'socket left behind'
        assert 'stopped' in t.stderr()
    finally:
        t.close()


@tap.test('test_tapdisk_stops_with_a_client_connected')
def _():
    need()
    import socket
    t = Tapdisk()
    try:
        t.wait_ready()
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(t.sock)
        assert s.recv(18)[:8] == b'NBDMAGIC'
        start = time.time()
        assert t.stop() == 0
        assert time.time() - start < 4
        s.close()
    finally:
        t.close()


@tap.test('test_tapdisk_read_only_refuses_writes')
def _():
    need('nbdcopy', 'nbdinfo')
    t = Tapdisk('--read-only')
    try:
        t.wait_ready()
        with open(t.image, 'rb') as f:
            before = f.read()
        r = run('nbdinfo', t.uri())
        assert 'is_read_only: true' in r.stdout, r
        src = os.path.join(t.dir, 'zero.raw')
        with open(src, 'wb') as f:
            f.truncate(SIZE)
        r = run('nbdcopy', src, t.uri())
        assert r.returncode != 0, r
        with open(t.image, 'rb') as f:
            assert f.read() == before
        assert t.stop() == 0
    finally:
        t.close()


@tap.test('test_tapdisk_writes_with_qos_limits')
def _():
    need('nbdcopy')
    t = Tapdisk('--iops', '1000', '--kbps', '65536', '--qos', 'iops=2000',
                '--qos', 'unknown=1')
    try:
        t.wait_ready()
        src = os.path.join(t.dir, 'src.raw')
        data = os.urandom(SIZE)
        with open(src, 'wb') as f:
            f.write(data)
        start = time.time()
        r = run('nbdcopy', src, t.uri())
        took = time.time() - start
        assert r.returncode == 0, r
        print('# 8 MiB through a 64 MiB/s limit took %.2f s' % took)
        with open(t.image, 'rb') as f:
            assert f.read() == data
        assert 'unknown' in t.stderr()
        assert t.stop() == 0
    finally:
        t.close()


@tap.test('test_tapdisk_bad_command_lines_fail_clearly')
def _():
    need()
    for args in (['--socket', '/tmp/x.sock'],
                 ['--raw', '/dev/null'],
                 ['--socket', '/tmp/x.sock', '--raw', 'a', '--vhd', 'b'],
                 ['--socket', '/tmp/x.sock', '--raw', 'a', '--iops', 'x'],
                 ['--socket', '/tmp/x.sock', '--raw', 'a', '--kbps', '-5'],
                 ['--bogus']):
        r = run(TAPDISK, *args)
        assert r.returncode == 2, (args, r)
        assert 'usage' in r.stderr or 'bad' in r.stderr, (args, r)
    d = tempfile.mkdtemp(prefix='test-nbd-')
    try:
        sock = os.path.join(d, 's.sock')
        r = run(TAPDISK, '--socket', sock, '--raw', os.path.join(d, 'no'))
        assert r.returncode == 1 and 'No such file' in r.stderr, r
        r = run(TAPDISK, '--socket', sock, '--vhd', os.path.join(d, 'a.vhd'))
        assert r.returncode == 1 and 'No such file' in r.stderr, r
        r = run(TAPDISK, '--help')
        assert r.returncode == 0 and '--socket' in r.stdout, r
    finally:
        shutil.rmtree(d, ignore_errors=True)


@tap.test('test_tapdisk_second_server_on_a_live_socket_fails')
def _():
    need()
    t = Tapdisk()
    try:
        t.wait_ready()
        r = run(TAPDISK, '--socket', t.sock, '--raw', t.image)
        assert r.returncode == 1 and 'in use' in r.stderr, r
        # The first one is unaffected.
        assert t.proc.poll() is None
        assert t.stop() == 0
    finally:
        t.close()


@tap.test('test_tapdisk_serves_a_vhd_chain_that_qemu_reads_and_writes')
def _():
    need('qemu-img', 'qemu-io')
    d = tempfile.mkdtemp(prefix='test-nbd-vhd-')
    proc = None
    try:
        raw = os.path.join(d, 'data.raw')
        base = os.path.join(d, 'base.vhd')
        with open(raw, 'wb') as f:
            f.write(os.urandom(SIZE))
        r = run('qemu-img', 'convert', '-f', 'raw', '-O', 'vpc', '-o',
                'subformat=dynamic,force_size=on', raw, base)
        assert r.returncode == 0, r
        sock = os.path.join(d, 'vdi.sock')
        log = open(os.path.join(d, 'stderr'), 'w+')
        proc = subprocess.Popen([TAPDISK, '--socket', sock, '--vhd', base],
                                stdout=subprocess.PIPE, stderr=log, text=True)
        assert proc.stdout.readline() == 'ready\n'
        uri = 'nbd+unix:///?socket=%s' % sock
        out = os.path.join(d, 'copy.raw')
        r = run('qemu-img', 'convert', '-f', 'raw', '-O', 'raw', uri, out)
        assert r.returncode == 0, r
        with open(out, 'rb') as a, open(raw, 'rb') as b:
            assert a.read() == b.read(), 'the VHD served differs from its data'
        # An unaligned write through the server lands in the VHD.
        r = run('qemu-io', '-f', 'raw', '-c', 'write -P 0x5a 1000 3000', uri)
        assert r.returncode == 0, r
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stdout.close()
        r = run('qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', base, out)
        assert r.returncode == 0, r
        with open(out, 'rb') as a, open(raw, 'rb') as b:
            got, want = a.read(), bytearray(b.read())
        want[1000:4000] = b'\x5a' * 3000
        assert got == bytes(want), 'the write did not reach the VHD intact'
        log.seek(0)
        err = log.read()
        log.close()
        for p in SANITIZER_PATTERNS:
            assert p not in err, err
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


tap.finish()
