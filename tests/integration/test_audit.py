#!/usr/bin/env python3
"""test_audit.py — the tamper-evident audit log (STATE_DIR/audit.log, see
docs/audit-log.md): which calls make records and what the records say
(user, originator, client address, message, objects with their name
labels, parameters with secrets masked, outcome), that reads make none,
that failed logins are recorded, that the hash chain verifies with
tools/xapi-audit-verify and that editing, deleting or moving a record is
reported at that record, the GET /audit_log handler (since=, permission,
401), and that a restart — clean, or after kill -9 with a torn last line —
continues the chain.  Uses the harness in xapitest.py.

The verifier is $XAPI_BUILD_DIR/tools/xapi-audit-verify; when the build
does not have it, it is compiled here from tools/ and lib/ with cc."""
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse

from xapitest import (BUILD, TOP, Daemon, Skip, XenAPIError, expect_error,
                      finish_daemon, full_record, http_request, load_idl,
                      start_or_bail, tap)

ORIGINATOR = 'test_audit'
MASK = '********'
TIME_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')

model = load_idl()
d = start_or_bail(Daemon(tls=False))
c = d.client()
S = {}
TMP = tempfile.mkdtemp(prefix='xapi-audit-test.')
LOG = os.path.join(d.state_dir, 'audit.log')


# ---- helpers ----

def can_make_users():
    if os.geteuid() != 0:
        return 'needs root (useradd, and PAM reading /etc/shadow)'
    for tool in ('useradd', 'userdel', 'chpasswd'):
        if not shutil.which(tool):
            return 'no %s on this machine' % tool
    return None


class Users:
    """Throwaway Unix accounts with random names and passwords (for
    external logins below pool-admin)."""

    def __init__(self):
        self.prefix = 'xa' + secrets.token_hex(3)
        self.made = []

    def add(self, tag):
        name = '%s%s' % (self.prefix, tag)
        password = 'pw-' + secrets.token_urlsafe(12)
        subprocess.run(['useradd', '-M', '-N', '-s', '/usr/sbin/nologin',
                        name], check=True, capture_output=True)
        self.made.append(name)
        subprocess.run(['chpasswd'], input=('%s:%s\n' % (name, password))
                       .encode(), check=True, capture_output=True)
        return name, password

    def remove(self):
        for name in self.made:
            subprocess.run(['userdel', name], capture_output=True)
        self.made = []


def verifier():
    """The path of xapi-audit-verify, built here if the build lacks it."""
    if 'verifier' in S:
        return S['verifier']
    path = os.path.join(BUILD, 'tools', 'xapi-audit-verify')
    if not os.access(path, os.X_OK):
        path = os.path.join(TMP, 'xapi-audit-verify')
        cc = os.environ.get('CC', 'cc')
        cmd = [cc, '-std=gnu11', '-D_GNU_SOURCE', '-I' + TOP,
               '-I' + os.path.join(TOP, 'lib'), '-I' + BUILD, '-o', path,
               os.path.join(TOP, 'tools', 'xapi-audit-verify.c')] + \
              [os.path.join(TOP, 'lib', f)
               for f in ('util.c', 'value.c', 'json.c')] + \
              ['-lcrypto', '-lm', '-pthread']
        r = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if r.returncode:
            raise AssertionError('cannot build the verifier:\n%s'
                                 % r.stdout.decode(errors='replace'))
    S['verifier'] = path
    return path


def verify(path=LOG, *extra):
    r = subprocess.run([verifier(), path] + list(extra),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return r.returncode, r.stdout.decode('utf-8', 'replace')


def raw_lines(path=LOG):
    with open(path, 'rb') as f:
        return f.read().split(b'\n')[:-1]


def parse_line(line):
    try:
        return json.loads(line)
    except ValueError:
        return {'unparsed': line}       # damage left by a crash (noted)


def records(path=LOG):
    return [parse_line(l) for l in raw_lines(path)]


def count():
    return len(raw_lines())


def new_records(before):
    return records()[before:]


def one_record(before, message):
    recs = [r for r in new_records(before) if r.get('message') == message]
    assert len(recs) == 1, 'expected one record of %s, got %r' % (
        message, [r.get('message') for r in new_records(before)])
    return recs[0]


def trackid(ref):
    return 'trackid:' + hashlib.sha256(ref.encode()).hexdigest()[:32]


def net_record(label):
    return full_record(model, 'network', name_label=label, MTU='1500')


def get_audit_log(query, headers=None):
    conn = d.conn()
    try:
        return http_request(conn, 'GET', '/audit_log?' + query,
                            headers=headers)
    finally:
        conn.close()


def copy_log(lines, name):
    path = os.path.join(TMP, name)
    with open(path, 'wb') as f:
        f.write(b''.join(l + b'\n' for l in lines))
    return path


def wait_task(s, task):
    deadline = time.time() + 10
    while c.task.get_status(s, task) in ('pending', 'cancelling'):
        assert time.time() < deadline, 'task still pending'
        time.sleep(0.02)
    return c.task.get_status(s, task)


try:
    # ---- the first record ----

    @tap.test('test_log_starts_with_a_start_record_chained_to_the_host_genesis')
    def _():
        first = records()[0]
        assert first['seq'] == 1 and first['type'] == 'start', first
        assert first['host'] == d.host_uuid, first
        assert first['reason'] == 'new', first
        genesis = hashlib.sha256(('xapi-audit-log genesis host %s'
                                  % d.host_uuid).encode()).hexdigest()
        assert first['prev'] == genesis, first
        assert TIME_RE.match(first['time']), first['time']

    @tap.test('test_every_record_carries_its_own_hash_and_the_previous_one')
    def _():
        lines = raw_lines()
        for i, line in enumerate(lines):
            rec = json.loads(line)
            body = line[:line.rindex(b',"hash":"')]
            assert hashlib.sha256(body).hexdigest() == rec['hash'], i
            if i:
                assert rec['prev'] == json.loads(lines[i - 1])['hash'], i
            assert rec['seq'] == i + 1, (i, rec['seq'])

    # ---- logins ----

    @tap.test('test_login_is_recorded_with_user_originator_peer_and_masked_password')
    def _():
        n = count()
        s = c.session.login_with_password('root', d.password, '1.0',
                                          ORIGINATOR)
        S['s'] = s
        rec = one_record(n, 'session.login_with_password')
        assert rec['type'] == 'login' and rec['status'] == 'OK', rec
        assert rec['user'] == 'root' and rec['superuser'] is True, rec
        assert rec['originator'] == ORIGINATOR, rec
        assert rec['peer'].startswith('127.0.0.1:'), rec
        assert rec['params']['pwd'] == MASK, rec
        assert rec['params']['uname'] == 'root', rec
        assert rec['session'] == trackid(s), rec
        assert rec['authenticated'] is True, rec
        assert TIME_RE.match(rec['time']), rec['time']

    @tap.test('test_failed_login_is_recorded_without_the_password')
    def _():
        n = count()
        expect_error(lambda: c.session.login_with_password(
            'root', 'Wrong-Secret-42', '1.0', ORIGINATOR),
            'SESSION_AUTHENTICATION_FAILED')
        expect_error(lambda: c.session.login_with_password(
            'mallory', 'Other-Secret-43'), 'SESSION_AUTHENTICATION_FAILED')
        recs = [r for r in new_records(n) if r['type'] == 'login']
        assert len(recs) == 2, recs
        assert recs[0]['user'] == 'root' and recs[1]['user'] == 'mallory', recs
        for r in recs:
            assert r['status'] == 'ERROR', r
            assert r['error'] == ['SESSION_AUTHENTICATION_FAILED'], r
            assert r['authenticated'] is False and r['session'] is None, r
            assert r['params']['pwd'] == MASK, r
            assert r['peer'].startswith('127.0.0.1:'), r
        assert recs[0]['originator'] == ORIGINATOR, recs[0]
        data = open(LOG, 'rb').read()
        assert b'Wrong-Secret-42' not in data and b'Other-Secret-43' not in data

    @tap.test('test_log_holds_no_password_and_no_session_ref')
    def _():
        data = open(LOG, 'rb').read()
        assert d.password.encode() not in data
        assert S['s'].encode() not in data

    # ---- calls that change things ----

    @tap.test('test_create_is_recorded_with_the_new_object_and_its_name_label')
    def _():
        s = S['s']
        n = count()
        net = c.network.create(s, net_record('audit-net'))
        S['net'] = net
        rec = one_record(n, 'network.create')
        assert rec['type'] == 'call' and rec['status'] == 'OK', rec
        assert rec['user'] == 'root' and rec['originator'] == ORIGINATOR, rec
        assert rec['session'] == trackid(s), rec
        assert rec['subject'] is None, rec
        assert rec['peer'].startswith('127.0.0.1:'), rec
        assert rec['result'] == net, rec
        assert {'param': '(result)', 'class': 'network', 'ref': net,
                'name_label': 'audit-net'} in rec['objects'], rec['objects']
        assert rec['params']['args']['name_label'] == 'audit-net', rec
        assert rec['params']['session_id'] == trackid(s), rec

    @tap.test('test_setter_is_recorded_with_the_object_ref_and_name_label')
    def _():
        s, net = S['s'], S['net']
        n = count()
        c.network.set_name_description(s, net, 'described')
        rec = one_record(n, 'network.set_name_description')
        assert rec['objects'] == [{'param': 'self', 'class': 'network',
                                   'ref': net, 'name_label': 'audit-net'}], rec
        assert rec['params'] == {'session_id': trackid(s), 'self': net,
                                 'value': 'described'}, rec
        assert rec['status'] == 'OK' and 'error' not in rec, rec

    @tap.test('test_failed_call_is_recorded_with_its_error_code_and_params')
    def _():
        s = S['s']
        n = count()
        expect_error(lambda: c.network.set_name_label(s, 'OpaqueRef:nope', 'x'),
                     'HANDLE_INVALID')
        rec = one_record(n, 'network.set_name_label')
        assert rec['status'] == 'ERROR', rec
        assert rec['error'] == ['HANDLE_INVALID', 'network', 'OpaqueRef:nope'], rec
        assert rec['objects'][0]['exists'] is False, rec

    @tap.test('test_map_values_under_password_keys_are_masked')
    def _():
        s, net = S['s'], S['net']
        n = count()
        c.network.set_other_config(s, net, {'db_password': 'Map-Secret-1',
                                            'colour': 'blue'})
        c.network.add_to_other_config(s, net, 'admin_password', 'Map-Secret-2')
        c.network.add_to_other_config(s, net, 'plain', 'visible')
        recs = new_records(n)
        assert [r['message'] for r in recs] == [
            'network.set_other_config', 'network.add_to_other_config',
            'network.add_to_other_config'], recs
        assert recs[0]['params']['value'] == {'db_password': MASK,
                                              'colour': 'blue'}, recs[0]
        assert recs[1]['params']['key'] == 'admin_password', recs[1]
        assert recs[1]['params']['value'] == MASK, recs[1]
        assert recs[2]['params']['value'] == 'visible', recs[2]
        data = open(LOG, 'rb').read()
        assert b'Map-Secret-1' not in data and b'Map-Secret-2' not in data

    @tap.test('test_values_of_the_secret_class_are_masked')
    def _():
        s = S['s']
        n = count()
        ref = c.secret.create(s, full_record(model, 'secret',
                                             value='Secret-Value-1'))
        c.secret.set_value(s, ref, 'Secret-Value-2')
        recs = new_records(n)
        assert [r['message'] for r in recs] == ['secret.create',
                                                'secret.set_value'], recs
        assert recs[0]['params']['args']['value'] == MASK, recs[0]
        assert recs[1]['params']['value'] == MASK, recs[1]
        data = open(LOG, 'rb').read()
        assert b'Secret-Value-1' not in data and b'Secret-Value-2' not in data
        c.secret.destroy(s, ref)

    @tap.test('test_huge_parameters_are_recorded_as_a_digest')
    def _():
        s, net = S['s'], S['net']
        n = count()
        c.network.set_name_description(s, net, 'h' * 200000)
        rec = one_record(n, 'network.set_name_description')
        assert rec['params']['truncated'] is True, rec
        assert rec['params']['bytes'] > 200000, rec
        assert re.match('^[0-9a-f]{64}$', rec['params']['sha256']), rec
        assert len(raw_lines()[-1]) < 65536
        c.network.set_name_description(s, net, 'described')

    @tap.test('test_change_password_is_recorded_with_both_passwords_masked')
    def _():
        s = S['s']
        n = count()
        expect_error(lambda: c.session.change_password(s, 'Not-The-Old-1',
                                                       'New-Secret-1'),
                     'SESSION_AUTHENTICATION_FAILED')
        c.session.change_password(s, d.password, d.password)
        recs = [r for r in new_records(n)
                if r['message'] == 'session.change_password']
        assert len(recs) == 2, recs
        for r in recs:
            assert r['params']['old_pwd'] == MASK, r
            assert r['params']['new_pwd'] == MASK, r
        assert recs[0]['status'] == 'ERROR' and recs[1]['status'] == 'OK', recs
        data = open(LOG, 'rb').read()
        assert b'Not-The-Old-1' not in data and b'New-Secret-1' not in data

    @tap.test('test_async_call_is_recorded_as_called_with_its_task')
    def _():
        s = S['s']
        n = count()
        task = c.Async.network.create(s, net_record('async-net'))
        assert wait_task(s, task) == 'success'
        rec = one_record(n, 'Async.network.create')
        assert rec['task'] == task, rec
        assert rec['status'] == 'OK', rec
        assert any(o.get('name_label') == 'async-net'
                   for o in rec['objects']), rec
        S['async_net'] = rec['result']

    @tap.test('test_destroy_is_recorded_with_the_name_label_of_the_object')
    def _():
        s = S['s']
        net = S['async_net']
        n = count()
        c.network.destroy(s, net)
        rec = one_record(n, 'network.destroy')
        obj = rec['objects'][0]
        assert obj['ref'] == net and obj['class'] == 'network', rec
        assert obj['exists'] is False, rec
        if 'name_label' not in obj:
            raise Skip('rpc.c has no api_call_begin_hook yet: a destroyed '
                       'object is recorded without its name')
        assert obj['name_label'] == 'async-net', rec

    @tap.test('test_logout_is_recorded')
    def _():
        s2 = c.session.login_with_password('root', d.password, '1.0', 'other')
        n = count()
        c.session.logout(s2)
        rec = one_record(n, 'session.logout')
        assert rec['session'] == trackid(s2) and rec['user'] == 'root', rec
        assert rec['status'] == 'OK', rec
        if rec['originator'] is None:
            raise Skip('rpc.c has no api_call_begin_hook yet: the originator '
                       'of a session that logs out is not known afterwards')
        assert rec['originator'] == 'other', rec

    # ---- reads ----

    @tap.test('test_reads_make_no_record')
    def _():
        s, net = S['s'], S['net']
        n = count()
        c.VM.get_all(s)
        c.VM.get_all_records(s)
        c.VM.get_all_records_where(s, 'true')
        c.network.get_record(s, net)
        c.network.get_name_label(s, net)
        c.network.get_other_config(s, net)
        c.network.get_by_uuid(s, c.network.get_uuid(s, net))
        c.network.get_by_name_label(s, 'audit-net')
        c.session.get_uuid(s, s)
        c.session.get_originator(s, s)
        c.session.get_all_subject_identifiers(s)
        c.pool.get_all(s)
        c.host.get_record(s, c.host.get_all(s)[0])
        expect_error(lambda: c.network.get_record(s, 'OpaqueRef:nope'),
                     'HANDLE_INVALID')
        assert count() == n, [r['message'] for r in new_records(n)]

    # ---- the chain ----

    @tap.test('test_the_chain_verifies')
    def _():
        rc, out = verify()
        assert rc == 0, out
        assert out.startswith('OK: %d records\n' % count()), out
        rc, out = verify(LOG, '--host-uuid', d.host_uuid)
        assert rc == 0, out
        rc, out = verify(LOG, '--host-uuid',
                         '00000000-0000-0000-0000-000000000000')
        assert rc == 1 and 'record 1 (line 1)' in out, out

    @tap.test('test_concurrent_calls_keep_one_unbroken_chain')
    def _():
        s, net = S['s'], S['net']
        n = count()
        errs = []

        def worker(i):
            cl = d.client()
            try:
                for j in range(15):
                    cl.network.add_to_other_config(s, net, 'c%d-%d' % (i, j),
                                                   str(j))
            except Exception as e:
                errs.append(repr(e))
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errs, errs[:3]
        keys = sorted(r['params']['key'] for r in new_records(n))
        assert keys == sorted('c%d-%d' % (i, j) for i in range(8)
                              for j in range(15)), keys
        rc, out = verify()
        assert rc == 0, out

    @tap.test('test_editing_one_byte_of_any_record_is_reported_at_that_record')
    def _():
        lines = raw_lines()
        assert len(lines) > 10
        bad = []
        for idx in sorted({0, 1, len(lines) // 2, len(lines) - 2,
                           len(lines) - 1}):
            for mutate in ('letter', 'digit-in-hash', 'byte-flip'):
                line = bytearray(lines[idx])
                if mutate == 'letter':
                    pos = line.index(b'"type":"') + 8
                    line[pos] = ord('X')
                elif mutate == 'digit-in-hash':
                    pos = line.rindex(b'"hash":"') + 20
                    line[pos] = ord('0') if line[pos] != ord('0') else ord('1')
                else:
                    pos = len(line) // 2
                    line[pos] ^= 0x01
                edited = list(lines)
                edited[idx] = bytes(line)
                rc, out = verify(copy_log(edited, 'edited.log'))
                want = '(line %d)' % (idx + 1)
                if rc != 1 or (want not in out
                               and 'line %d ' % (idx + 1) not in out):
                    bad.append('line %d, %s: rc %d: %s' % (idx + 1, mutate,
                                                           rc, out))
        assert not bad, '\n'.join(bad)

    @tap.test('test_deleting_a_record_is_detected')
    def _():
        lines = raw_lines()
        for idx in (0, 3, len(lines) // 2):
            rc, out = verify(copy_log(lines[:idx] + lines[idx + 1:],
                                      'deleted.log'))
            assert rc == 1, out
            assert '(line %d)' % (idx + 1) in out, (idx, out)
            assert 'deleted' in out, out

    @tap.test('test_moving_or_replacing_a_record_is_detected')
    def _():
        lines = raw_lines()
        i = len(lines) // 2
        swapped = list(lines)
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        rc, out = verify(copy_log(swapped, 'swapped.log'))
        assert rc == 1 and '(line %d)' % (i + 1) in out, out
        # A record rewritten with a correct hash of its own still breaks
        # the chain at the next record.
        rec = json.loads(lines[i])
        body = lines[i][:lines[i].rindex(b',"hash":"')]
        body = body.replace(b'"user":"root"', b'"user":"toor"')
        assert body != lines[i][:lines[i].rindex(b',"hash":"')]
        forged = body + b',"hash":"' + \
            hashlib.sha256(body).hexdigest().encode() + b'"}'
        replaced = list(lines)
        replaced[i] = forged
        rc, out = verify(copy_log(replaced, 'forged.log'))
        assert rc == 1, out
        assert 'record %d (line %d): hash mismatch: previous record was ' \
            'changed or deleted' % (rec['seq'] + 1, i + 2) in out, out

    # ---- GET /audit_log ----

    @tap.test('test_audit_log_since_a_sequence_number_returns_that_slice')
    def _():
        s = S['s']
        before = raw_lines()
        since = len(before) - 5
        r = get_audit_log('session_id=%s&since=%d' % (s, since))
        assert r.status == 200, r
        got = r.body.split(b'\n')[:-1]
        assert got == before[since - 1:], (len(got), r.body[:300])
        assert json.loads(got[0])['seq'] == since

    @tap.test('test_audit_log_since_a_time_returns_the_records_from_then')
    def _():
        s = S['s']
        before = raw_lines()
        rec = json.loads(before[-3])
        for since in (rec['time'], rec['time'].replace('-', '')):
            r = get_audit_log(urllib.parse.urlencode(
                {'session_id': s, 'since': since}))
            assert r.status == 200, r
            got = [json.loads(l) for l in r.body.split(b'\n')[:-1]]
            assert got and got[0]['seq'] <= rec['seq'], (since, got[:1])
            assert all(g['time'] >= rec['time'] for g in got), since
            seqs = [g['seq'] for g in got]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
            assert {json.loads(l)['seq'] for l in before[-3:]} <= set(seqs), \
                (since, seqs)

    @tap.test('test_audit_log_without_since_returns_everything')
    def _():
        before = raw_lines()
        r = get_audit_log('session_id=' + S['s'])
        assert r.status == 200
        assert r.body.split(b'\n')[:-1] == before
        r = get_audit_log('', headers={'Cookie': 'session_id=' + S['s']})
        assert r.status == 200, r

    @tap.test('test_audit_log_read_is_itself_audited')
    def _():
        n = count()
        r = get_audit_log('session_id=%s&since=%d' % (S['s'], n))
        assert r.status == 200
        rec = one_record(n, 'GET /audit_log')
        assert rec['type'] == 'http' and rec['status'] == 'OK', rec
        assert rec['params'] == {'since': str(n)}, rec
        assert rec['result'] == {'records': 1}, rec
        assert rec['session'] == trackid(S['s']), rec

    @tap.test('test_audit_log_without_a_valid_session_is_401_and_audited')
    def _():
        n = count()
        r = get_audit_log('since=1')
        assert r.status == 401 and r.body and len(r.body) < 200, r
        r = get_audit_log('session_id=OpaqueRef:bogus')
        assert r.status == 401 and b'{"seq"' not in r.body, r
        recs = new_records(n)
        assert len(recs) == 2, recs
        for rec in recs:
            assert rec['type'] == 'http' and rec['status'] == 'ERROR', rec
            assert rec['error'] == ['SESSION_INVALID'], rec
        assert recs[1]['session_given'] == trackid('OpaqueRef:bogus')

    @tap.test('test_audit_log_with_a_bad_since_is_400')
    def _():
        r = get_audit_log('session_id=%s&since=yesterday' % S['s'])
        assert r.status == 400, r

    @tap.test('test_audit_log_needs_the_pool_admin_role')
    def _():
        why = can_make_users()
        if why:
            raise Skip(why)
        s = S['s']
        pool = c.pool.get_all(s)[0]
        try:
            c.pool.enable_external_auth(s, pool, {}, 'audit-test', 'PAM')
        except XenAPIError as e:
            raise Skip('no external authentication to log in with a role '
                       'below pool-admin: %r' % e.details)
        users = Users()
        try:
            who = {}
            for i, role in enumerate(('read-only', 'pool-operator',
                                      'pool-admin')):
                refs = c.role.get_by_name_label(s, role)
                assert refs, 'no role %s' % role
                name, password = users.add(i)
                sid = c.auth.get_subject_identifier(s, name)
                subj = c.subject.create(s, {'subject_identifier': sid})
                c.subject.add_to_roles(s, subj, refs[0])
                n = count()
                us = c.session.login_with_password(name, password, '1.0',
                                                   'ext-' + role)
                login = one_record(n, 'session.login_with_password')
                assert login['user'] == name and login['status'] == 'OK'
                assert login['superuser'] is False, login
                assert login['subject'] == subj, login
                assert login['auth_user_sid'] == sid, login
                assert login['params']['pwd'] == MASK, login
                who[role] = (name, sid, subj, us)
            for role in ('read-only', 'pool-operator'):
                name, sid, subj, us = who[role]
                n = count()
                r = get_audit_log('session_id=' + us)
                assert r.status == 403 and b'{"seq"' not in r.body, (role, r)
                rec = one_record(n, 'GET /audit_log')
                assert rec['status'] == 'ERROR', rec
                assert rec['error'][0] == 'RBAC_PERMISSION_DENIED', rec
                assert rec['user'] == name and rec['subject'] == subj, rec
                assert rec['auth_user_sid'] == sid, rec
                assert rec['originator'] == 'ext-' + role, rec
            # A call refused by RBAC is recorded when rpc.c reports it.
            name, sid, subj, us = who['read-only']
            n = count()
            expect_error(lambda: c.network.set_name_description(
                us, S['net'], 'denied'), 'RBAC_PERMISSION_DENIED')
            recs = new_records(n)
            if recs:
                rec = one_record(n, 'network.set_name_description')
                assert rec['error'][0] == 'RBAC_PERMISSION_DENIED', rec
                assert rec['user'] == name and rec['params'] is None, rec
                S['rbac_denials_recorded'] = True
            name, sid, subj, us = who['pool-admin']
            r = get_audit_log('session_id=%s&since=%d' % (us, count()))
            assert r.status == 200, r
            n = count()
            c.network.set_name_description(us, S['net'], 'by ' + name)
            rec = one_record(n, 'network.set_name_description')
            assert rec['user'] == name and rec['subject'] == subj, rec
            assert rec['superuser'] is False, rec
        finally:
            users.remove()
            try:
                c.pool.disable_external_auth(s, pool, {})
            except XenAPIError:
                pass

    # ---- restart and crashes ----

    @tap.test('test_clean_restart_continues_the_chain')
    def _():
        global c
        d.stop()
        last = records()[-1]
        assert last['type'] == 'stop' and last['host'] == d.host_uuid, last
        d.start()
        c = d.client()
        first = records()[-1]
        assert first['type'] == 'start' and first['reason'] == 'restart', first
        assert first['seq'] == last['seq'] + 1, (first, last)
        assert first['prev'] == last['hash'], (first, last)
        S['s'] = c.session.login_with_password('root', d.password, '1.0',
                                               ORIGINATOR)
        rc, out = verify()
        assert rc == 0, out

    @tap.test('test_kill_9_keeps_every_acknowledged_record')
    def _():
        global c
        s = S['s']
        labels = ['k9-%d' % i for i in range(10)]
        for lb in labels:
            c.network.set_name_label(s, S['net'], lb)
        d.kill()
        got = [r['params']['value'] for r in records()
               if r.get('message') == 'network.set_name_label'
               and r['status'] == 'OK']
        assert got[-10:] == labels, got[-10:]
        rc, out = verify()
        assert rc == 0, out
        d.start()
        c = d.client()
        assert records()[-1]['reason'] == 'restart', records()[-1]
        S['s'] = c.session.login_with_password('root', d.password, '1.0',
                                               ORIGINATOR)

    @tap.test('test_torn_last_line_after_a_crash_is_noted_not_hidden')
    def _():
        global c
        d.kill()
        last = records()[-1]
        torn = b'{"seq":%d,"prev":"%s","time":"20' % (last['seq'] + 1,
                                                     last['hash'].encode())
        with open(LOG, 'ab') as f:
            f.write(torn)
        rc, out = verify()
        assert rc == 1 and 'line %d does not parse' % (count() + 1) in out, out
        d.start()
        c = d.client()
        lines = raw_lines()
        assert lines[-2] == torn, lines[-2:]
        rec = json.loads(lines[-1])
        assert rec['type'] == 'start' and rec['reason'] == 'damaged-tail', rec
        assert rec['seq'] == last['seq'] + 1 and rec['prev'] == last['hash']
        assert rec['damaged'] == {
            'lines': 1, 'bytes': len(torn) + 1, 'torn': True,
            'sha256': hashlib.sha256(torn + b'\n').hexdigest(),
            'after_seq': last['seq']}, rec
        rc, out = verify()
        assert rc == 0, out
        assert 'note: line %d is not a record' % (len(lines) - 1) in out, out
        assert 'torn by a crash' in out, out
        # The noted damage cannot be used to hide an edit elsewhere.
        edited = list(lines)
        edited[-2] = torn.replace(b'"20', b'"21')
        rc, out = verify(copy_log(edited, 'torn-edited.log'))
        assert rc == 1 and 'line %d does not parse' % (len(lines) - 1) in out, out
        S['s'] = c.session.login_with_password('root', d.password)

    @tap.test('test_corrupt_last_record_is_noted_at_restart')
    def _():
        global c
        d.kill()
        lines = raw_lines()
        last = json.loads(lines[-2])        # the record before the last
        edited = lines[-1].replace(b'"time":"2', b'"time":"3')
        assert edited != lines[-1]
        with open(LOG, 'wb') as f:
            f.write(b''.join(l + b'\n' for l in lines[:-1] + [edited]))
        d.start()
        c = d.client()
        rec = records()[-1]
        assert rec['reason'] == 'damaged-tail', rec
        assert rec['damaged']['torn'] is False, rec
        assert rec['seq'] == last['seq'] + 1 and rec['prev'] == last['hash']
        # Not a torn write: the verifier reports it as a change made while
        # xapi was stopped, and checks on past it only when asked to.
        rc, out = verify()
        assert rc == 1, out
        assert 'line %d' % len(lines) in out and 'hash mismatch' in out, out
        assert 'noted by xapi in record %d (line %d)' % (
            rec['seq'], len(lines) + 1) in out, out
        rc, out = verify(LOG, '--accept-damage')
        assert rc == 0 and 'damage accepted' in out, out
        S['s'] = c.session.login_with_password('root', d.password)

    @tap.test('test_calls_after_recovery_extend_the_chain')
    def _():
        s = S['s']
        n = count()
        c.network.set_name_label(s, S['net'], 'after-recovery')
        rec = one_record(n, 'network.set_name_label')
        assert rec['objects'][0]['name_label'] == 'after-recovery', rec
        rc, out = verify(LOG, '--accept-damage')
        assert rc == 0, out

finally:
    finish_daemon(d, 'xapi')
    d.cleanup()
    shutil.rmtree(TMP, ignore_errors=True)
tap.finish()
