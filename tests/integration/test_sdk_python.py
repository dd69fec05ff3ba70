#!/usr/bin/env python3
"""test_sdk_python.py — the Python SDK (sdk/python: the XenAPI module)
against the simulator-backed toolstack, as scripts written for XenServer
use it: Session(url) over HTTP, HTTPS (ignore_ssl, and a verifying
context that refuses the self-signed certificate) and the Unix socket
(xapi_local with a path, with XAPI_SOCKET, and XenServer's '_'-encoded
host name); login_with_password and logout (session.xenapi.*, session.*);
the session argument inserted; any class and message by attribute;
Async.* tasks; xenapi_request; Failure.details with the exact code and
parameters; re-login on SESSION_INVALID (a session logged out behind the
SDK's back, and one expired by --session-idle-timeout); the envelope's
corner cases against a fake server (missing Status, SESSION_INVALID for
ever, extra headers); the examples (list VMs, start/shut down a VM, watch
events) run as programs over the three transports; and `pip install` of
sdk/python with no network (into a --target folder, a venv, and an
editable install), leaving the source tree clean."""
import ast
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
import xmlrpc.server

from xapitest import (TOP, Daemon, Skip, finish_daemon, start_or_bail, tap,
                      unverified_context)

SDK = os.path.join(TOP, 'sdk', 'python')
EXAMPLES = os.path.join(SDK, 'examples')
sys.path.insert(0, SDK)
import XenAPI  # noqa: E402  (this tree's module, first on the path)

d = start_or_bail(Daemon(tls=True, extra_args=[
    '--sim-config', 'boot_ms=50,shutdown_ms=100']))
idle = start_or_bail(Daemon(tls=False, extra_args=[
    '--session-idle-timeout', '1']), label='idle_xapi')

HTTPS = None
tmp = tempfile.mkdtemp(prefix='xapi-sdk-py.')
link = '/tmp/xapi-sdk-py-%d.sock' % os.getpid()   # a path with no '_'


def login(url=None, session=None, originator='test_sdk_python', **kw):
    s = session or XenAPI.Session(url or d.url, **kw)
    s.xenapi.login_with_password('root', d.password, '1.0', originator)
    return s


def expect_failure(fn, details, what=''):
    """fn() must raise XenAPI.Failure with exactly these details (a
    shorter list checks a prefix)."""
    try:
        r = fn()
    except XenAPI.Failure as e:
        got = e.details
        assert isinstance(got, list), got
        assert got[:len(details)] == list(details) and (
            len(details) != 0), '%sexpected %r, got %r' % (
                what and what + ': ', details, got)
        return e
    raise AssertionError('%sexpected Failure %r, got %r'
                         % (what and what + ': ', details, r))


def wait_task(x, task, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        status = x.task.get_status(task)
        if status not in ('pending', 'cancelling'):
            return status
        time.sleep(0.02)
    raise AssertionError('task %s still pending' % task)


def task_value(text):
    params, _ = xmlrpc.client.loads(
        '<methodResponse><params><param>%s</param></params>'
        '</methodResponse>' % text)
    return params[0]


def new_vm(x, name):
    t = x.VM.get_by_name_label('Debian Bookworm 12')[0]
    vm = x.VM.clone(t, name)
    x.VM.set_is_a_template(vm, False)
    return vm


def run_example(name, *args, timeout=60, python=None):
    env = dict(os.environ)
    env['PYTHONPATH'] = SDK
    p = subprocess.run([python or sys.executable,
                        os.path.join(EXAMPLES, name)] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


# ---- a fake server for the envelope's corner cases ----

class FakeServer(object):
    """An XML-RPC server on loopback whose answers a test chooses: each
    call is recorded as (method, params, headers) and answered by
    self.answer(method, params)."""

    def __init__(self, unix_path=None):
        fake = self

        class Handler(xmlrpc.server.SimpleXMLRPCRequestHandler):
            def decode_request_content(self, data):
                fake.headers.append(dict(self.headers))
                return xmlrpc.server.SimpleXMLRPCRequestHandler.\
                    decode_request_content(self, data)

            def log_message(self, *a):
                pass

            disable_nagle_algorithm = unix_path is None

        self.calls, self.headers = [], []
        self.answer = lambda m, p: {'Status': 'Success', 'Value': ''}
        if unix_path:
            class Server(xmlrpc.server.SimpleXMLRPCServer):
                address_family = socket.AF_UNIX
                allow_reuse_address = False
            self.server = Server(unix_path, requestHandler=Handler,
                                 allow_none=True, logRequests=False)
            self.url = 'http://localhost/'
        else:
            self.server = xmlrpc.server.SimpleXMLRPCServer(
                ('127.0.0.1', 0), requestHandler=Handler, allow_none=True,
                logRequests=False)
            self.url = 'http://127.0.0.1:%d/' % \
                self.server.server_address[1]
        self.server.register_instance(self)
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def _dispatch(self, method, params):
        self.calls.append((method, params))
        return self.answer(method, params)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def fake_answers(table):
    """An answer function from {method: value or callable}."""
    def answer(method, params):
        v = table.get(method, table.get('*'))
        return v(params) if callable(v) else v
    return answer


OK = lambda v: {'Status': 'Success', 'Value': v}  # noqa: E731
LOGIN = {'session.login_with_password': OK('OpaqueRef:fake'),
         'pool.get_all': OK(['OpaqueRef:pool']),
         'pool.get_master': OK('OpaqueRef:host'),
         'host.get_API_version_major': OK('2'),
         'host.get_API_version_minor': OK('21')}


try:
    HTTPS = 'https://127.0.0.1:%d/' % d.https_port
    os.symlink(d.unix_path, link)
    S = login()
    X = S.xenapi
    host = X.host.get_all()[0]
    vm_a = new_vm(X, 'sdk-vm-a')
    vm_b = new_vm(X, 'sdk-vm-b')

    # ---- the module ----

    @tap.test('test_module_uses_the_standard_library_only')
    def _():
        with open(os.path.join(SDK, 'XenAPI.py')) as f:
            tree = ast.parse(f.read())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split('.')[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.add(node.module.split('.')[0])
        foreign = names - set(sys.stdlib_module_names)
        assert not foreign, foreign
        assert XenAPI.__file__.startswith(SDK), XenAPI.__file__
        for name in ('Session', 'Failure', 'xapi_local', 'UDSTransport',
                     'UDSHTTPConnection', 'API_VERSION_1_1',
                     'API_VERSION_1_2'):
            assert hasattr(XenAPI, name), name
        assert issubclass(XenAPI.Session, xmlrpc.client.ServerProxy)
        assert issubclass(XenAPI.Failure, Exception)

    # ---- sessions over HTTP ----

    @tap.test('test_login_with_password_keeps_the_session_and_api_version')
    def _():
        s = XenAPI.Session(d.url)
        assert s.handle is None and s._session is None
        r = s.xenapi.login_with_password('root', d.password, '1.0',
                                         'sdk-originator')
        assert r is None, r
        assert s.handle.startswith('OpaqueRef:'), s.handle
        assert s._session == s.handle
        assert s.last_login_method == 'login_with_password'
        assert s.last_login_params == ('root', d.password, '1.0',
                                       'sdk-originator')
        major = X.host.get_API_version_major(host)
        minor = X.host.get_API_version_minor(host)
        assert s.API_version == '%s.%s' % (major, minor), s.API_version
        rec = s.xenapi.session.get_record(s.handle)
        assert rec['originator'] == 'sdk-originator', rec
        assert rec['this_host'] == host, rec
        s.xenapi.logout()

    @tap.test('test_login_with_two_arguments_and_session_login_forms')
    def _():
        s = XenAPI.Session(d.url)
        s.xenapi.login_with_password('root', d.password)
        assert s.xenapi.pool.get_all(), 'no pool'
        s.xenapi.session.logout()
        assert s.handle is None
        s.login_with_password('root', d.password, '1.0', 'direct')
        assert s.handle.startswith('OpaqueRef:')
        assert s.xenapi.session.get_originator(s.handle) == 'direct'
        s.logout()
        assert s.handle is None and s.last_login_method is None
        s.xenapi.session.login_with_password('root', d.password, '1.0', 'x')
        assert s.handle.startswith('OpaqueRef:')
        s.xenapi.logout()

    @tap.test('test_logout_ends_the_session_on_the_server')
    def _():
        s = login()
        ref = s.handle
        assert s.xenapi.logout() is None
        assert s.handle is None and s.API_version == XenAPI.API_VERSION_1_1
        r = xmlrpc.client.ServerProxy(d.url).session.get_uuid(ref, ref)
        assert r['Status'] == 'Failure' and \
            r['ErrorDescription'][0] == 'SESSION_INVALID', r
        s.xenapi.logout()           # twice: nothing to do, no error
        assert s.handle is None

    @tap.test('test_session_argument_is_inserted')
    def _():
        proxy = xmlrpc.client.ServerProxy(d.url)
        raw = proxy.VM.get_all(S.handle)['Value']
        assert sorted(X.VM.get_all()) == sorted(raw)
        assert vm_a in raw and vm_b in raw
        assert X.VM.get_name_label(vm_a) == 'sdk-vm-a'
        assert X.VM.get_by_uuid(X.VM.get_uuid(vm_a)) == vm_a

    @tap.test('test_get_record_is_the_wire_record')
    def _():
        rec = X.VM.get_record(vm_a)
        raw = xmlrpc.client.ServerProxy(d.url).VM.get_record(
            S.handle, vm_a)['Value']
        assert rec == raw
        assert rec['name_label'] == 'sdk-vm-a' and \
            rec['power_state'] == 'Halted', rec
        # ints stay decimal strings, as XenServer's SDK gives them
        assert isinstance(rec['memory_static_max'], str) and \
            int(rec['memory_static_max']) > 0, rec['memory_static_max']
        assert isinstance(rec['other_config'], dict)

    @tap.test('test_any_class_and_message_by_attribute')
    def _():
        pools = X.pool.get_all_records()
        assert len(pools) == 1, pools
        assert X.pool.get_master(list(pools)[0]) == host
        assert X.host.get_uuid(host) == d.host_uuid
        assert isinstance(X.SR.get_all(), list)
        assert isinstance(X.network.get_all_records(), dict)
        X.VM.set_name_description(vm_a, 'made by the SDK')
        assert X.VM.get_name_description(vm_a) == 'made by the SDK'
        X.VM.add_to_other_config(vm_a, 'sdk', 'yes')
        assert X.VM.get_other_config(vm_a)['sdk'] == 'yes'
        assert repr(X.VM.get_all).startswith('<XenAPI._Dispatcher for '
                                             'VM.get_all'), repr(X.VM.get_all)

    @tap.test('test_xenapi_request')
    def _():
        assert sorted(S.xenapi_request('VM.get_all', ())) == \
            sorted(X.VM.get_all())
        assert S.xenapi_request('VM.get_name_label', (vm_b,)) == 'sdk-vm-b'
        r = S.xenapi_request('event.from', (['vm'], '', 0.0))
        assert 'token' in r and r['events'], r.keys()
        r2 = getattr(X.event, 'from')(['vm'], r['token'], 0.0)
        assert r2['events'] == [], r2

    @tap.test('test_a_xenserver_style_runbook')
    def _():
        # the idioms of XenServer's SDK guide, unchanged
        session = XenAPI.Session(d.url)
        session.xenapi.login_with_password('root', d.password, '2.21',
                                           'runbook')
        try:
            templates = [r for r in session.xenapi.VM.get_all()
                         if session.xenapi.VM.get_is_a_template(r)]
            template = [t for t in templates if session.xenapi.VM.
                        get_name_label(t) == 'Debian Bookworm 12'][0]
            vm = session.xenapi.VM.clone(template, 'runbook-vm')
            session.xenapi.VM.provision(vm)
            session.xenapi.VM.set_is_a_template(vm, False)
            session.xenapi.VM.start(vm, False, True)
            record = session.xenapi.VM.get_record(vm)
            assert record['power_state'] == 'Running', record
            snap = session.xenapi.VM.snapshot(vm, 'runbook-snap')
            assert session.xenapi.VM.get_is_a_snapshot(snap)
            where = session.xenapi.VM.get_all_records_where(
                'field "uuid" = "%s" and field "is_a_template" = "false"'
                % record['uuid'])
            assert list(where) == [vm], where
            session.xenapi.event.register(['vm'])
            session.xenapi.VM.clean_shutdown(vm)
            events = session.xenapi.event.next()
            assert any(e['ref'] == vm and e['class'] == 'vm'
                       for e in events), events
            session.xenapi.event.unregister(['vm'])
            session.xenapi.VM.destroy(snap)
            session.xenapi.VM.destroy(vm)
        finally:
            session.xenapi.session.logout()

    # ---- failures ----

    @tap.test('test_failure_details_for_an_invalid_handle')
    def _():
        e = expect_failure(lambda: X.VM.get_record('OpaqueRef:bogus'),
                           ['HANDLE_INVALID', 'VM', 'OpaqueRef:bogus'])
        assert e.details == ['HANDLE_INVALID', 'VM', 'OpaqueRef:bogus']
        assert str(e) == "['HANDLE_INVALID', 'VM', 'OpaqueRef:bogus']", \
            str(e)
        assert e._details_map() == {'0': 'HANDLE_INVALID', '1': 'VM',
                                    '2': 'OpaqueRef:bogus'}

    @tap.test('test_failure_details_for_bad_calls')
    def _():
        e = expect_failure(lambda: X.VM.get_record(),
                           ['MESSAGE_PARAMETER_COUNT_MISMATCH',
                            'VM.get_record', '2', '1'])
        assert len(e.details) == 4, e.details
        expect_failure(lambda: X.VM.no_such_message(vm_a),
                       ['MESSAGE_METHOD_UNKNOWN', 'VM.no_such_message'])
        expect_failure(lambda: X.VM.get_by_uuid('not-a-uuid'),
                       ['UUID_INVALID', 'VM', 'not-a-uuid'])
        dom0 = X.host.get_control_domain(host)
        X.VM.start(vm_a, False, False)
        try:
            e = expect_failure(lambda: X.VM.start(vm_a, False, False),
                               ['VM_BAD_POWER_STATE', vm_a])
            # XenServer writes the states in lower case; compared without
            # case here, as the daemon's lifecycle code capitalises them
            assert [p.lower() for p in e.details[2:]] == \
                ['halted', 'running'], e.details
        finally:
            X.VM.hard_shutdown(vm_a)
        expect_failure(lambda: X.VM.destroy(dom0),
                       ['OPERATION_NOT_ALLOWED'])

    @tap.test('test_bad_password_raises_failure_and_keeps_no_session')
    def _():
        s = XenAPI.Session(d.url)
        e = expect_failure(lambda: s.xenapi.login_with_password(
            'root', 'wrong', '1.0', 'x'), ['SESSION_AUTHENTICATION_FAILED'])
        assert s.handle is None and s.last_login_method is None
        assert 'SESSION_AUTHENTICATION_FAILED' in str(e)

    @tap.test('test_call_without_login_is_fault_401')
    def _():
        s = XenAPI.Session(d.url)
        try:
            s.xenapi.VM.get_all()
        except xmlrpc.client.Fault as f:
            assert f.faultCode == 401, f
        else:
            raise AssertionError('no Fault')

    # ---- Async ----

    @tap.test('test_async_VM_start_returns_a_task_and_the_vm_runs')
    def _():
        task = X.Async.VM.start(vm_b, False, False)
        assert task.startswith('OpaqueRef:'), task
        assert X.task.get_name_label(task) == 'Async.VM.start'
        assert wait_task(X, task) == 'success', X.task.get_record(task)
        assert X.VM.get_power_state(vm_b) == 'Running'
        assert float(X.task.get_progress(task)) == 1.0
        X.task.destroy(task)
        task = X.Async.VM.clean_shutdown(vm_b)
        assert wait_task(X, task) == 'success', X.task.get_record(task)
        assert X.VM.get_power_state(vm_b) == 'Halted'

    @tap.test('test_async_result_and_error_info')
    def _():
        task = X.Async.VM.clone(vm_a, 'sdk-async-clone')
        assert wait_task(X, task) == 'success'
        clone = task_value(X.task.get_result(task))
        assert X.VM.get_name_label(clone) == 'sdk-async-clone'
        X.VM.destroy(clone)
        task = X.Async.VM.hard_shutdown(vm_a)
        assert wait_task(X, task) == 'failure'
        info = X.task.get_error_info(task)
        assert info[:2] == ['VM_BAD_POWER_STATE', vm_a] and \
            [p.lower() for p in info[2:]] == ['running', 'halted'], info

    @tap.test('test_async_of_a_sync_only_message_is_method_unknown')
    def _():
        expect_failure(lambda: X.Async.VM.get_all(),
                       ['MESSAGE_METHOD_UNKNOWN', 'Async.VM.get_all'])

    # ---- session expiry and re-login ----

    @tap.test('test_session_logged_out_behind_our_back_logs_in_again')
    def _():
        s = login(originator='relogin')
        old = s.handle
        other = login()
        proxy = xmlrpc.client.ServerProxy(d.url)
        r = proxy.session.logout(old)
        assert r['Status'] == 'Success', r
        assert sorted(s.xenapi.VM.get_all()) == sorted(X.VM.get_all())
        assert s.handle != old and s.handle.startswith('OpaqueRef:')
        assert s.xenapi.session.get_originator(s.handle) == 'relogin'
        s.xenapi.logout()
        other.xenapi.logout()

    @tap.test('test_session_expired_by_idle_timeout_logs_in_again')
    def _():
        s = XenAPI.Session(idle.url)
        s.xenapi.login_with_password('root', idle.password, '1.0', 'idle')
        old = s.handle
        time.sleep(3.5)     # idle for more than 1 s, swept every 0.5 s
        assert s.xenapi.pool.get_all(), 'no pool'
        assert s.handle != old, 'the session was not renewed'
        raw = xmlrpc.client.ServerProxy(idle.url)
        r = raw.session.get_uuid(old, old)
        assert r['Status'] == 'Failure' and \
            r['ErrorDescription'][0] == 'SESSION_INVALID', r
        assert s.xenapi.session.get_originator(s.handle) == 'idle'

    @tap.test('test_given_session_handle_is_used_and_not_renewed')
    def _():
        raw = xmlrpc.client.ServerProxy(d.url)
        ref = raw.session.login_with_password('root', d.password)['Value']
        s = XenAPI.Session(d.url)
        s._session = ref
        assert s.handle == ref
        assert X.VM.get_name_label(vm_a) == \
            s.xenapi.VM.get_name_label(vm_a)
        raw.session.logout(ref)
        try:
            s.xenapi.VM.get_all()
        except xmlrpc.client.Fault as f:
            assert f.faultCode == 401, f
        else:
            raise AssertionError('no Fault')

    # ---- the envelope, against a fake server ----

    @tap.test('test_fake_server_session_invalid_for_ever_tries_three_times')
    def _():
        fake = FakeServer()
        try:
            table = dict(LOGIN)
            table['*'] = {'Status': 'Failure',
                          'ErrorDescription': ['SESSION_INVALID', 'x']}
            fake.answer = fake_answers(table)
            s = XenAPI.Session(fake.url)
            s.xenapi.login_with_password('u', 'p')
            assert s.API_version == '2.21', s.API_version
            del fake.calls[:]
            try:
                s.xenapi.VM.get_all()
            except xmlrpc.client.Fault as f:
                assert f.faultCode == 500, f
            else:
                raise AssertionError('no Fault')
            names = [c[0] for c in fake.calls]
            assert names.count('VM.get_all') == 3, names
            assert names.count('session.login_with_password') == 3, names
            assert fake.calls[0] == ('VM.get_all', ('OpaqueRef:fake',)), \
                fake.calls[0]
        finally:
            fake.close()

    @tap.test('test_fake_server_malformed_envelopes_are_faults')
    def _():
        fake = FakeServer()
        try:
            s = XenAPI.Session(fake.url)
            table = dict(LOGIN)
            fake.answer = fake_answers(table)
            s.xenapi.login_with_password('u', 'p', '1.0', 'o')
            for bad in ({'Value': 1}, ['x'], {'Status': 'Success'},
                        {'Status': 'Failure'}):
                table['*'] = bad
                try:
                    s.xenapi.VM.get_all()
                except xmlrpc.client.Fault as f:
                    assert f.faultCode == 500, (bad, f)
                else:
                    raise AssertionError('no Fault for %r' % (bad,))
            table['*'] = {'Status': 'Failure',
                          'ErrorDescription': ['X', 'a', 'b']}
            expect_failure(lambda: s.xenapi.VM.get_all(), ['X', 'a', 'b'])
            table['session.login_with_password'] = {
                'Status': 'Failure', 'ErrorDescription': ['SESSION_INVALID']}
            try:
                s.xenapi.login_with_password('u', 'p')
            except xmlrpc.client.Fault as f:
                assert f.faultCode == 500, f
            else:
                raise AssertionError('no Fault')
        finally:
            fake.close()

    @tap.test('test_fake_server_logout_and_slave_local_login')
    def _():
        fake = FakeServer()
        try:
            table = dict(LOGIN)
            table['session.slave_local_login_with_password'] = \
                OK('OpaqueRef:local')
            table['*'] = OK('')
            fake.answer = fake_answers(table)
            s = XenAPI.Session(fake.url)
            s.slave_local_login_with_password('u', 'p')
            assert s.handle == 'OpaqueRef:local', s.handle
            s.xenapi.logout()
            assert fake.calls[-1] == ('session.local_logout',
                                      ('OpaqueRef:local',)), fake.calls[-1]
            s.xenapi.login_with_password('u', 'p')
            s.logout()
            assert fake.calls[-1] == ('session.logout', ('OpaqueRef:fake',))
            assert s.handle is None
        finally:
            fake.close()

    @tap.test('test_fake_unix_server_extra_header_and_nil')
    def _():
        path = os.path.join(tmp, 'fake.sock')
        fake = FakeServer(unix_path=path)
        try:
            fake.answer = fake_answers(dict(LOGIN, **{'*': OK('ok')}))
            t = XenAPI.UDSTransport(path=path)
            t.add_extra_header('X-Test', 'sdk')
            s = XenAPI.Session(fake.url, transport=t)
            assert s.transport is t
            s.xenapi.login_with_password('u', 'p')
            assert s.xenapi.VM.anything(None) == 'ok'
            assert s.xenapi.Async.VM.start('OpaqueRef:v', True, False) == \
                'ok'
            assert fake.calls[-2] == ('VM.anything',
                                      ('OpaqueRef:fake', None)), fake.calls
            assert fake.calls[-1] == ('Async.VM.start', (
                'OpaqueRef:fake', 'OpaqueRef:v', True, False)), fake.calls
            assert all(h.get('X-Test') == 'sdk' for h in fake.headers), \
                fake.headers
        finally:
            fake.close()

    # ---- HTTPS ----

    @tap.test('test_https_with_ignore_ssl')
    def _():
        s = login(HTTPS, ignore_ssl=True)
        assert sorted(s.xenapi.VM.get_all()) == sorted(X.VM.get_all())
        s.xenapi.logout()

    @tap.test('test_urls_without_a_path')
    def _():
        for url, kw in (('http://127.0.0.1:%d' % d.http_port, {}),
                        ('https://127.0.0.1:%d' % d.https_port,
                         {'ignore_ssl': True})):
            s = login(url, **kw)
            assert s.xenapi.host.get_uuid(host) == d.host_uuid, url
            s.xenapi.logout()

    @tap.test('test_https_verifies_the_certificate_by_default')
    def _():
        s = XenAPI.Session(HTTPS)
        try:
            s.xenapi.login_with_password('root', d.password)
        except ssl.SSLError as e:
            assert 'CERTIFICATE_VERIFY_FAILED' in str(e) or \
                isinstance(e, ssl.SSLCertVerificationError), e
        else:
            raise AssertionError('self-signed certificate accepted')

    @tap.test('test_https_with_a_given_transport')
    def _():
        t = xmlrpc.client.SafeTransport(context=unverified_context())
        s = login(HTTPS, transport=t)
        assert s.xenapi.host.get_uuid(host) == d.host_uuid
        s.xenapi.logout()

    # ---- the Unix socket ----

    @tap.test('test_xapi_local_with_a_path')
    def _():
        s = XenAPI.xapi_local(d.unix_path)
        assert isinstance(s.transport, XenAPI.UDSTransport)
        s.xenapi.login_with_password('root', d.password, '1.0', 'local')
        assert sorted(s.xenapi.VM.get_all()) == sorted(X.VM.get_all())
        task = s.xenapi.Async.VM.clone(vm_a, 'sdk-local-clone')
        assert wait_task(s.xenapi, task) == 'success'
        clone = task_value(s.xenapi.task.get_result(task))
        s.xenapi.VM.destroy(clone)
        s.xenapi.logout()

    @tap.test('test_xapi_local_default_path_and_environment')
    def _():
        saved = os.environ.pop(XenAPI.LOCAL_SOCKET_ENV, None)
        try:
            s = XenAPI.xapi_local()
            assert s.transport.unix_path == '/var/lib/xcp/xapi', \
                s.transport.unix_path
            os.environ[XenAPI.LOCAL_SOCKET_ENV] = d.unix_path
            s = XenAPI.xapi_local()
            assert s.transport.unix_path == d.unix_path
            s.xenapi.login_with_password('root', d.password)
            assert s.xenapi.host.get_uuid(host) == d.host_uuid
            s.xenapi.logout()
        finally:
            os.environ.pop(XenAPI.LOCAL_SOCKET_ENV, None)
            if saved is not None:
                os.environ[XenAPI.LOCAL_SOCKET_ENV] = saved

    @tap.test('test_uds_transport_reads_the_socket_from_the_host_name')
    def _():
        s = XenAPI.Session('http://%s/' % link.replace('/', '_'),
                           transport=XenAPI.UDSTransport())
        s.xenapi.login_with_password('root', d.password)
        assert s.xenapi.host.get_uuid(host) == d.host_uuid
        s.xenapi.logout()

    def local_root_without_password():
        s = XenAPI.xapi_local(d.unix_path)
        try:
            s.xenapi.login_with_password('root', '', '', 'local-root')
        except XenAPI.Failure as e:
            raise Skip('the daemon wants the root password on its Unix '
                       'socket (XenServer trusts local root): %s' % e)
        assert s.handle.startswith('OpaqueRef:')
        s.xenapi.logout()
    tap.run('test_xapi_local_root_login_without_password',
            local_root_without_password)

    @tap.test('test_session_as_context_manager_closes_the_connection')
    def _():
        with XenAPI.Session(d.url) as s:
            s.xenapi.login_with_password('root', d.password)
            assert s.xenapi.VM.get_name_label(vm_a) == 'sdk-vm-a'
            s.xenapi.logout()
        with XenAPI.xapi_local(d.unix_path) as s:
            s.xenapi.login_with_password('root', d.password)
            ref = s.handle
        # leaving the block closed the connection, not the session
        assert X.session.get_uuid(ref), ref
        raw = xmlrpc.client.ServerProxy(d.url)
        raw.session.logout(ref)

    # ---- the examples ----

    def check_list(rc, out, err):
        assert rc == 0, (rc, out, err)
        lines = out.splitlines()
        want = [l for l in lines if l.endswith(' sdk-vm-a')]
        assert len(want) == 1 and X.VM.get_uuid(vm_a) in want[0] and \
            ' halted ' in want[0], out
        assert 'Debian Bookworm 12' not in out, out
        assert lines[-1] == '%d VM(s)' % (len(lines) - 1), out

    @tap.test('test_example_list_vms_over_http')
    def _():
        check_list(*run_example('list_vms.py', d.url, 'root', d.password))

    @tap.test('test_example_list_vms_over_https_and_the_unix_socket')
    def _():
        check_list(*run_example('list_vms.py', HTTPS, 'root', d.password,
                                '--ignore-ssl'))
        check_list(*run_example('list_vms.py', 'unix:' + d.unix_path, 'root',
                                d.password))
        rc, out, err = run_example('list_vms.py', d.url, 'root', d.password,
                                   '--all')
        assert rc == 0 and 'Debian Bookworm 12' in out, (rc, out, err)

    @tap.test('test_example_list_vms_with_a_bad_password')
    def _():
        rc, out, err = run_example('list_vms.py', d.url, 'root', 'nope')
        assert rc != 0 and 'SESSION_AUTHENTICATION_FAILED' in err, \
            (rc, out, err)

    @tap.test('test_example_vm_power_start_and_shutdown')
    def _():
        uuid = X.VM.get_uuid(vm_b)
        rc, out, err = run_example('vm_power.py', d.url, 'root', d.password,
                                   'start', 'sdk-vm-b')
        assert rc == 0, (rc, out, err)
        assert out.splitlines()[-1] == \
            'VM sdk-vm-b (%s): Halted -> Running' % uuid, out
        assert 'progress: 100%' in out, out
        assert X.VM.get_power_state(vm_b) == 'Running'
        rc, out, err = run_example('vm_power.py', 'unix:' + d.unix_path,
                                   'root', d.password, 'shutdown', uuid)
        assert rc == 0, (rc, out, err)
        assert out.splitlines()[-1] == \
            'VM sdk-vm-b (%s): Running -> Halted' % uuid, out
        rc, out, err = run_example('vm_power.py', HTTPS, 'root', d.password,
                                   'start', uuid, '--paused', '--ignore-ssl')
        assert rc == 0 and out.splitlines()[-1].endswith(
            'Halted -> Paused'), (rc, out, err)
        rc, out, err = run_example('vm_power.py', d.url, 'root', d.password,
                                   'shutdown', uuid, '--force')
        assert rc == 0 and out.splitlines()[-1].endswith(
            'Paused -> Halted'), (rc, out, err)
        assert X.VM.get_power_state(vm_b) == 'Halted'

    @tap.test('test_example_vm_power_reports_xenapi_errors')
    def _():
        rc, out, err = run_example('vm_power.py', d.url, 'root', d.password,
                                   'shutdown', 'sdk-vm-b')
        assert rc != 0 and 'VM_BAD_POWER_STATE' in err, (rc, out, err)
        rc, out, err = run_example('vm_power.py', d.url, 'root', d.password,
                                   'start', 'no-such-vm')
        assert rc != 0 and "no VM 'no-such-vm'" in err, (rc, out, err)

    @tap.test('test_example_watch_events')
    def _():
        env = dict(os.environ, PYTHONPATH=SDK)
        p = subprocess.Popen([sys.executable,
                              os.path.join(EXAMPLES, 'watch_events.py'),
                              d.url, 'root', d.password, '--classes', 'vm',
                              '--count', '10', '--duration', '3'],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env)
        try:
            first = p.stdout.readline().decode()
            assert first.startswith('watching ') and \
                first.endswith(' object(s)\n'), first
            X.VM.set_name_label(vm_a, 'sdk-vm-a-renamed')
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        X.VM.set_name_label(vm_a, 'sdk-vm-a')
        out = out.decode()
        assert p.returncode == 0, (p.returncode, out, err)
        lines = out.splitlines()
        assert 'mod vm %s sdk-vm-a-renamed halted' % vm_a in lines, out
        assert all(l.split()[0] in ('add', 'mod', 'del') and
                   l.split()[1] == 'vm' for l in lines), out

    @tap.test('test_example_watch_events_over_the_unix_socket')
    def _():
        rc, out, err = run_example('watch_events.py', 'unix:' + d.unix_path,
                                   'root', d.password, '--duration', '0.5')
        assert rc == 0 and out.startswith('watching '), (rc, out, err)

    # ---- pip ----

    def tree_listing():
        out = []
        for root, dirs, files in os.walk(SDK):
            dirs[:] = [x for x in dirs if x != '__pycache__']
            out += [os.path.join(root, f) for f in files
                    if not f.endswith('.pyc')]
        return sorted(out)

    before = tree_listing()

    def pip_env():
        env = dict(os.environ)
        env.pop('PYTHONPATH', None)
        env['PIP_DISABLE_PIP_VERSION_CHECK'] = '1'
        env['PIP_NO_INPUT'] = '1'
        env['PIP_ROOT_USER_ACTION'] = 'ignore'
        return env

    def run(cmd, timeout=300, cwd=None):
        p = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=pip_env(),
                           timeout=timeout, cwd=cwd or tmp)
        return p.returncode, p.stdout.decode('utf-8', 'replace')

    def has_pip(python=sys.executable):
        return subprocess.run([python, '-m', 'pip', '--version'],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0

    probe = ('import sys, XenAPI; s = XenAPI.Session(sys.argv[1]); '
             's.xenapi.login_with_password("root", sys.argv[2]); '
             'print(XenAPI.__file__); print(s.xenapi.host.get_uuid('
             's.xenapi.host.get_all()[0])); s.xenapi.logout()')

    def pip_target():
        if not has_pip():
            raise Skip('no pip for %s' % sys.executable)
        target = os.path.join(tmp, 'target')
        rc, out = run([sys.executable, '-m', 'pip', 'install', '--no-index',
                       '--target', target, SDK])
        assert rc == 0, out
        assert os.path.exists(os.path.join(target, 'XenAPI.py')), out
        assert any(n.startswith('XenAPI-0.1.0.dist-info')
                   for n in os.listdir(target)), os.listdir(target)
        env = pip_env()
        env['PYTHONPATH'] = target
        p = subprocess.run([sys.executable, '-c', probe, d.url, d.password],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env, cwd=tmp, timeout=60)
        lines = p.stdout.decode().splitlines()
        assert p.returncode == 0 and lines == [
            os.path.join(target, 'XenAPI.py'), d.host_uuid], \
            (p.stdout, p.stderr)
    tap.run('test_pip_install_target_with_no_network', pip_target)

    def pip_venv():
        venv = os.path.join(tmp, 'venv')
        try:
            import venv as _venv  # noqa: F401
            import ensurepip  # noqa: F401
        except ImportError as e:
            raise Skip('no venv/ensurepip: %s' % e)
        rc, out = run([sys.executable, '-m', 'venv', venv])
        if rc != 0:
            raise Skip('python -m venv failed: %s' % out[-300:])
        py = os.path.join(venv, 'bin', 'python')
        if not has_pip(py):
            raise Skip('the venv has no pip')
        rc, out = run([py, '-m', 'pip', 'install', '--no-index', SDK])
        assert rc == 0, out
        rc, out = run([py, '-m', 'pip', 'show', 'XenAPI'])
        assert rc == 0 and 'Version: 0.1.0' in out, out
        p = subprocess.run([py, '-c', probe, d.url, d.password],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=pip_env(), cwd=tmp, timeout=60)
        lines = p.stdout.decode().splitlines()
        assert p.returncode == 0 and 'site-packages' in lines[0] and \
            lines[0].startswith(venv) and lines[1] == d.host_uuid, \
            (p.stdout, p.stderr)
        # an example run by the venv's python uses the installed module
        env = pip_env()
        p = subprocess.run([py, os.path.join(EXAMPLES, 'list_vms.py'),
                            d.url, 'root', d.password],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env, cwd=tmp, timeout=60)
        assert p.returncode == 0 and b' sdk-vm-a\n' in p.stdout, \
            (p.stdout, p.stderr)
        rc, out = run([py, '-m', 'pip', 'uninstall', '-y', 'XenAPI'])
        assert rc == 0, out
        # editable install (PEP 660): the module is this tree's
        rc, out = run([py, '-m', 'pip', 'install', '--no-index', '-e', SDK])
        assert rc == 0, out
        p = subprocess.run([py, '-c', probe, d.url, d.password],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=pip_env(), cwd=tmp, timeout=60)
        lines = p.stdout.decode().splitlines()
        assert p.returncode == 0 and \
            lines[0] == os.path.join(SDK, 'XenAPI.py'), (p.stdout, p.stderr)
    tap.run('test_pip_install_into_a_venv_and_editable', pip_venv)

    @tap.test('test_build_backend_sdist_and_wheel')
    def _():
        sys.path.insert(0, os.path.join(SDK, 'build_backend'))
        try:
            import xenapi_build
        finally:
            sys.path.pop(0)
        out = os.path.join(tmp, 'dist')
        import tarfile
        import zipfile
        sd = xenapi_build.build_sdist(out)
        assert sd == 'XenAPI-0.1.0.tar.gz', sd
        with tarfile.open(os.path.join(out, sd)) as t:
            names = set(t.getnames())
        for want in ('XenAPI.py', 'pyproject.toml', 'PKG-INFO',
                     'build_backend/xenapi_build.py',
                     'examples/list_vms.py', 'examples/vm_power.py',
                     'examples/watch_events.py'):
            assert 'XenAPI-0.1.0/' + want in names, (want, sorted(names))
        wh = xenapi_build.build_wheel(out)
        assert wh == 'XenAPI-0.1.0-py3-none-any.whl', wh
        with zipfile.ZipFile(os.path.join(out, wh)) as z:
            assert sorted(z.namelist()) == [
                'XenAPI-0.1.0.dist-info/METADATA',
                'XenAPI-0.1.0.dist-info/RECORD',
                'XenAPI-0.1.0.dist-info/WHEEL', 'XenAPI.py'], z.namelist()
            meta = z.read('XenAPI-0.1.0.dist-info/METADATA').decode()
        assert 'Name: XenAPI\nVersion: 0.1.0\n' in meta, meta

    @tap.test('test_pip_leaves_the_source_tree_unchanged')
    def _():
        after = tree_listing()
        assert after == before, (sorted(set(after) - set(before)),
                                 sorted(set(before) - set(after)))

finally:
    try:
        os.unlink(link)
    except OSError:
        pass
    shutil.rmtree(tmp, ignore_errors=True)
    finish_daemon(d)
    finish_daemon(idle, 'idle_xapi')
    d.cleanup()
    idle.cleanup()
tap.finish()
