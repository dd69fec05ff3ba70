#!/usr/bin/env python3
"""test_console.py — the VM text console, as XenAPI clients use it.

A VM started on the simulator has one console row (protocol vt100,
location https://127.0.0.1/console?ref=<console ref>); a halted VM has
none.  CONNECT or GET of that location with session_id (in the query or
a cookie; uuid= also names the console) answers "HTTP/1.1 200 OK" and
then carries the guest's text console both ways over a raw socket, on
HTTP, HTTPS and the Unix socket: the simulated guest shows its login
banner, echoes keys, asks for a password and runs a tiny shell.  Keys
sent with the request itself reach the guest; a client that shuts down
its sending side still gets the answer to its last line; a paused guest
answers once unpaused; every connection has its own terminal.  The
connection ends when the VM shuts down or reboots.  Refused: no or a bad
session (401), a read-only user (403, when Unix users can be made), an
unknown console (404), a console of a VM that is no longer running (404),
other methods (405), more than 64 connections at once (503).  The daemon
stops cleanly with a console still open, and its log has no sanitizer
report.  A daemon built without the HTTP take-over or the provider's
console_open answers 501: then the tests of the stream are skipped."""
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse

from xapitest import (Daemon, Skip, expect_error, finish_daemon,
                      start_or_bail, tap, unverified_context)

tmp_ctl = os.path.join('/tmp', 'xapi-console-ctl-%d.sock' % os.getpid())
d = start_or_bail(Daemon(extra_args=[
    '--sim-config', 'cpus=4,memory_mib=8192,dom0_memory_mib=1024,'
    'boot_ms=50,shutdown_ms=100,control=%s' % tmp_ctl]))
c = d.client()
TIMEOUT = 10


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


def new_vm(s, name, template='Debian Bookworm 12'):
    t = c.VM.get_by_name_label(s, template)[0]
    vm = c.VM.clone(s, t, name)
    c.VM.set_is_a_template(s, vm, False)
    return vm


class Console:
    """A raw client connection to /console: the request, the response
    head, then bytes."""

    def __init__(self, target, session=None, method='CONNECT', port=None,
                 tls=False, unix=False, cookie=False, extra=b'',
                 version='1.0'):
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(d.unix_path)
        else:
            self.sock = socket.create_connection(
                ('127.0.0.1', port or (d.https_port if tls else d.http_port)),
                timeout=TIMEOUT)
            if tls:
                self.sock = unverified_context().wrap_socket(
                    self.sock, server_hostname='127.0.0.1')
        headers = 'Host: 127.0.0.1\r\n'
        if session is not None:
            if cookie:
                headers += 'Cookie: session_id=%s\r\n' % session
            else:
                target += '&session_id=' + urllib.parse.quote(session)
        self.sock.sendall(('%s %s HTTP/%s\r\n%s\r\n' % (
            method, target, version, headers)).encode() + extra)
        self.buf = b''
        self.head = self.read_until(b'\r\n\r\n')[:-4]
        self.status = int(self.head.split(b' ', 2)[1])

    def read_until(self, needle, timeout=TIMEOUT):
        """Reads until needle has arrived; returns everything read so far
        (kept in self.buf) and consumes it."""
        end = time.time() + timeout
        while needle not in self.buf:
            left = end - time.time()
            if left <= 0:
                raise AssertionError('no %r after %ss; got %r'
                                     % (needle, timeout, self.buf[-500:]))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise AssertionError('connection closed waiting for %r; '
                                     'got %r' % (needle, self.buf[-500:]))
            self.buf += chunk
        i = self.buf.index(needle) + len(needle)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_to_eof(self, timeout=TIMEOUT):
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                raise AssertionError('connection still open after %ss; got '
                                     '%r' % (timeout, self.buf[-500:]))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b''
            if not chunk:
                out, self.buf = self.buf, b''
                return out
            self.buf += chunk

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def target_of(location):
    """The request target of a console location (what clients send)."""
    u = urllib.parse.urlsplit(location)
    return '%s?%s' % (u.path, u.query)


def banner(name, tty='ttyS0'):
    """What the guest shows on connection: the default Debian template
    makes HVM guests, whose console is the serial port ttyS0."""
    return ('Debian GNU/Linux 12 sim-%s %s\r\n\r\nsim login: '
            % (name, tty)).encode()


def login(con, name, user='root'):
    con.send(user.encode() + b'\r')
    con.read_until(b'Password: ')
    con.send(b'secret\r')
    con.read_until(('%s@sim-%s:~%s ' % (user, name,
                                        '#' if user == 'root' else '$'))
                   .encode())


left_open = None
users = []
try:
    s = d.login(c)
    vm = new_vm(s, 'con-1')

    @tap.test('test_halted_vm_has_no_console')
    def _():
        assert c.VM.get_consoles(s, vm) == []
        assert c.VM.get_domain_type(s, vm) == 'hvm'

    c.VM.start(s, vm, False, False)
    con_ref = c.VM.get_consoles(s, vm)[0]
    location = c.console.get_location(s, con_ref)
    target = target_of(location)
    with Console(target, s) as probe:
        streams = probe.status != 501

    def need_streams():
        if not streams:
            raise Skip('this xapi has no text consoles yet (501: '
                       'http_respond_takeover or console_open missing)')

    @tap.test('test_running_vm_has_one_vt100_console_with_its_location')
    def _():
        assert c.VM.get_consoles(s, vm) == [con_ref]
        rec = c.console.get_record(s, con_ref)
        assert rec['protocol'] == 'vt100', rec
        assert rec['VM'] == vm, rec
        assert location == 'https://127.0.0.1/console?ref=%s' % con_ref, \
            location
        assert rec['location'] == location
        assert c.console.get_by_uuid(s, rec['uuid']) == con_ref

    @tap.test('test_connect_answers_200_then_shows_the_login_banner')
    def _():
        need_streams()
        with Console(target, s) as con:
            assert con.head.startswith(b'HTTP/1.1 200 OK\r\n'), con.head
            assert b'content-length' not in con.head.lower(), con.head
            con.read_until(banner('con-1'))

    @tap.test('test_keys_are_echoed_and_the_guest_logs_in_and_answers')
    def _():
        need_streams()
        with Console(target, s) as con:
            con.read_until(b'sim login: ')
            con.send(b'root\r')
            got = con.read_until(b'Password: ')
            assert got == b'root\r\nPassword: ', got
            con.send(b'secret\r\n')     # not echoed; CR LF is one Enter
            got = con.read_until(b'root@sim-con-1:~# ')
            assert b'secret' not in got, got
            assert got.startswith(b'\r\nLinux sim-con-1 6.1.0-sim'), got
            con.send(b'hostname\r')
            got = con.read_until(b'root@sim-con-1:~# ')
            assert got == b'hostname\r\nsim-con-1\r\nroot@sim-con-1:~# ', got
            con.send(b'echo hello  world\r')
            got = con.read_until(b'# ')
            assert b'hello  world\r\n' in got, got
            con.send(b'frobnicate\r')
            got = con.read_until(b'# ')
            assert b'frobnicate: command not found' in got, got
            con.send(b'exit\r')
            con.read_until(b'logout\r\n\r\n' + banner('con-1'))

    @tap.test('test_get_with_the_console_uuid_and_a_session_cookie')
    def _():
        need_streams()
        uuid = c.console.get_uuid(s, con_ref)
        with Console('/console?uuid=%s' % uuid, s, method='GET',
                     cookie=True, version='1.1') as con:
            assert con.status == 200, con.head
            con.read_until(banner('con-1'))
            con.send(b'admin\r')
            con.read_until(b'admin\r\nPassword: ')

    @tap.test('test_console_over_https_with_the_location_as_target')
    def _():
        need_streams()
        with Console(location, s, tls=True) as con:
            assert con.status == 200, con.head
            con.read_until(b'sim login: ')
            login(con, 'con-1')
            con.send(b'uname -a\r')
            con.read_until(b'Linux sim-con-1 6.1.0-sim #1 SMP x86_64 '
                           b'GNU/Linux\r\n')

    @tap.test('test_console_over_the_unix_socket')
    def _():
        need_streams()
        with Console(target, s, unix=True) as con:
            assert con.status == 200, con.head
            con.read_until(banner('con-1'))

    @tap.test('test_keys_sent_with_the_request_reach_the_guest')
    def _():
        need_streams()
        with Console(target, s, extra=b'root\r') as con:
            con.read_until(banner('con-1') + b'root\r\nPassword: ')
        with Console(location, s, tls=True, extra=b'root\r') as con:
            con.read_until(banner('con-1') + b'root\r\nPassword: ')

    @tap.test('test_half_closed_client_gets_the_answer_then_the_end')
    def _():
        need_streams()
        with Console(target, s) as con:
            con.read_until(b'sim login: ')
            con.send(b'root\rsecret\rwhoami\r')
            con.sock.shutdown(socket.SHUT_WR)
            rest = con.read_to_eof()
            assert rest.endswith(b'whoami\r\nroot\r\nroot@sim-con-1:~# '), \
                rest

    @tap.test('test_each_connection_has_its_own_terminal')
    def _():
        need_streams()
        with Console(target, s) as a, Console(target, s) as b:
            a.read_until(b'sim login: ')
            b.read_until(b'sim login: ')
            login(a, 'con-1')
            b.send(b'guest\r')
            got = b.read_until(b'Password: ')
            assert got == b'guest\r\nPassword: ', got
            a.send(b'whoami\r')
            a.read_until(b'root\r\n')

    @tap.test('test_paused_guest_answers_once_unpaused')
    def _():
        need_streams()
        with Console(target, s) as con:
            con.read_until(b'sim login: ')
            c.VM.pause(s, vm)
            try:
                con.send(b'root\r')
                con.sock.settimeout(0.5)
                try:
                    early = con.sock.recv(100)
                except socket.timeout:
                    early = b''
                assert early == b'', early
            finally:
                c.VM.unpause(s, vm)
            con.read_until(b'root\r\nPassword: ')

    @tap.test('test_missing_or_bad_session_is_refused_with_401')
    def _():
        need_streams()
        with Console(target) as con:
            assert con.status == 401, con.head
        with Console(target, 'OpaqueRef:bogus') as con:
            assert con.status == 401, con.head
            assert b'not a valid session' in con.read_to_eof()
        s2 = d.login(c)
        c.session.logout(s2)
        with Console(target, s2, method='GET') as con:
            assert con.status == 401, con.head

    @tap.test('test_unknown_console_is_404_and_other_methods_405')
    def _():
        need_streams()
        with Console('/console?ref=OpaqueRef:nope', s) as con:
            assert con.status == 404, con.head
        with Console('/console?uuid=00000000-0000-4000-8000-000000000000',
                     s, method='GET') as con:
            assert con.status == 404, con.head
        with Console('/console?x=1', s) as con:
            assert con.status == 400, con.head
        with Console(target, s, method='POST') as con:
            assert con.status == 405, con.head
            assert b'Allow: CONNECT, GET' in con.head, con.head

    @tap.test('test_a_read_only_user_is_refused_and_a_vm_operator_is_not')
    def _():
        need_streams()
        if os.geteuid() != 0 or not all(shutil.which(t) for t in (
                'useradd', 'userdel', 'chpasswd')):
            raise Skip('needs root with useradd, userdel and chpasswd')
        c.pool.enable_external_auth(s, c.pool.get_all(s)[0], {},
                                    'console-test', 'PAM')
        sessions = {}
        for role in ('read-only', 'vm-operator'):
            name = 'xc%s%s' % (secrets.token_hex(3), role[:2])
            password = 'pw-' + secrets.token_urlsafe(12)
            subprocess.run(['useradd', '-M', '-N', '-s', '/usr/sbin/nologin',
                            name], check=True, capture_output=True)
            users.append(name)
            subprocess.run(['chpasswd'], input=('%s:%s\n' % (name, password))
                           .encode(), check=True, capture_output=True)
            sid = 'u%d' % pwd.getpwnam(name).pw_uid
            subj = c.subject.create(s, {'subject_identifier': sid})
            c.subject.add_to_roles(s, subj,
                                   c.role.get_by_name_label(s, role)[0])
            sessions[role] = c.session.login_with_password(name, password)
        with Console(target, sessions['read-only']) as con:
            assert con.status == 403, con.head
        with Console(target, sessions['vm-operator']) as con:
            assert con.status == 200, con.head
            con.read_until(b'sim login: ')

    @tap.test('test_more_than_64_connections_get_503_and_slots_come_back')
    def _():
        need_streams()
        cons = []
        try:
            for i in range(64):
                cons.append(Console(target, s))
                assert cons[-1].status == 200, (i, cons[-1].head)
            with Console(target, s) as extra:
                assert extra.status == 503, extra.head
        finally:
            for con in cons:
                con.close()
        # The slots are given back as the threads notice the hang-ups.
        end = time.time() + TIMEOUT
        while True:
            with Console(target, s) as con:
                if con.status == 200:
                    con.read_until(b'sim login: ')
                    break
            assert time.time() < end, 'still refused after the hang-ups'
            time.sleep(0.1)

    @tap.test('test_console_shows_the_boot_then_the_banner')
    def _():
        need_streams()
        slow = new_vm(s, 'con-slow')
        uuid = c.VM.get_uuid(s, slow)
        assert control('set %s boot_ms 1500' % uuid).startswith('OK')
        c.VM.start(s, slow, False, False)
        try:
            loc = c.console.get_location(s, c.VM.get_consoles(s, slow)[0])
            with Console(target_of(loc), s) as con:
                con.read_until(b'Booting...\r\n')
                con.read_until(banner('con-slow'))
        finally:
            c.VM.hard_shutdown(s, slow)

    @tap.test('test_reboot_ends_the_connection_and_the_console_stays')
    def _():
        need_streams()
        with Console(target, s) as con:
            con.read_until(b'sim login: ')
            c.VM.hard_reboot(s, vm)
            con.read_to_eof()
        assert c.VM.get_consoles(s, vm) == [con_ref]
        with Console(target, s) as con:
            assert con.status == 200, con.head
            con.read_until(banner('con-1'))

    @tap.test('test_shutdown_ends_the_connection_and_removes_the_console')
    def _():
        need_streams()
        with Console(target, s) as con:
            con.read_until(b'sim login: ')
            c.VM.hard_shutdown(s, vm)
            con.read_to_eof()
        assert c.VM.get_consoles(s, vm) == []
        expect_error(lambda: c.console.get_record(s, con_ref),
                     'HANDLE_INVALID', ['console', con_ref])
        with Console(target, s) as con:
            assert con.status == 404, con.head

    # A console left open while the daemon stops: the stop must end it.
    if streams:
        vm2 = new_vm(s, 'con-2')
        c.VM.start(s, vm2, False, False)
        left_open = Console(target_of(c.console.get_location(
            s, c.VM.get_consoles(s, vm2)[0])), s, tls=True)
        left_open.read_until(b'sim login: ')
finally:
    t0 = time.time()
    finish_daemon(d)
    tap.check('test_daemon_stops_promptly_with_a_console_open',
              time.time() - t0 < 8, '%.1fs' % (time.time() - t0))
    if left_open:
        left_open.close()
    for name in users:
        subprocess.run(['userdel', name], capture_output=True)
    d.cleanup()
tap.finish()
