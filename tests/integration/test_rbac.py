#!/usr/bin/env python3
"""test_rbac.py — role-based access control as the datamodel defines it.

- The role table: the six roles clients grant and the internal
  client-cert role, each holding exactly the permissions (lower-cased
  message names) of the messages whose role list names it; one permission
  row per message; role.get_permissions(_name_label) and
  role.get_by_permission(_name_label) agree with the IDL; references
  stay the same across a restart (pool-admin's is XenAPI's fixed one).
- Granting roles: only the six roles can be given to a subject
  (ROLE_NOT_FOUND for a permission or client-cert, ROLE_ALREADY_EXISTS
  twice, ROLE_NOT_FOUND to remove one not held).
- The matrix: six throwaway Unix users (useradd, chpasswd; removed in
  every case) log in through PAM external authentication, each holding one
  role through its subject, and call EVERY message of the IDL that takes a
  session (and its Async form) with type-correct dummy arguments.  A role
  the message's role list does not name must get RBAC_PERMISSION_DENIED
  [permission, method]; a role it names must get anything else.  One TAP
  line per role lists the mismatches.  Several threads, each with one
  keep-alive connection per role, keep it to seconds.

Calls that would end the calling session (session.logout,
session.local_logout) or wait for events (event.next) get a throwaway
session of the same role; the few that would stop the daemon if allowed
(host.shutdown_agent, host.management_disable,
pool.emergency_transition_to_master) are called only by the roles that
must be denied.  The matrix needs root (useradd, PAM reading the shadow
file); without it, it is skipped with the reason."""
import json
import os
import pwd
import queue
import secrets
import shutil
import socket
import subprocess
import threading
import time
import xmlrpc.client

from xapitest import (TOP, Daemon, XenAPIError, Skip, check, dummy_value,
                      expect_error, finish_daemon, load_idl, start_or_bail,
                      tap, unwrap)

ROLES = ['pool-admin', 'pool-operator', 'vm-power-admin', 'vm-admin',
         'vm-operator', 'read-only']
ALL_ROLES = ROLES + ['client-cert']
POOL_ADMIN_REF = 'OpaqueRef:0165f154-ba3e-034e-6b27-5d271af109ba'
N_THREADS = 6
CALL_TIMEOUT = 30
# Would stop the daemon or its management interface if they ran.
NOT_CALLED_WHEN_ALLOWED = {'host.shutdown_agent', 'host.management_disable',
                           'pool.emergency_transition_to_master'}
# End or tie up the calling session: called with a throwaway session.
FRESH_SESSION = {'session.logout', 'session.local_logout', 'event.next'}

model = load_idl()
all_msgs = [m for c in model.classes for m in c.messages]


def has_session(m):
    return bool(m.params) and m.params[0].name == 'session_id'


def permission(m):
    return m.full_name.lower()


def perms_of(role):
    """The permissions the IDL gives a role."""
    return {permission(m) for m in all_msgs if role in m.roles}


def dummy_args(m, session):
    return [session if i == 0 and has_session(m)
            else dummy_value(model, p.type) for i, p in enumerate(m.params)]


def can_make_users():
    if os.geteuid() != 0:
        return 'needs root (useradd, and PAM reading /etc/shadow)'
    for tool in ('useradd', 'userdel', 'chpasswd'):
        if not shutil.which(tool):
            return 'no %s on this machine' % tool
    return None


class Users:
    """Throwaway Unix accounts with random names and passwords."""

    def __init__(self):
        self.prefix = 'xr' + secrets.token_hex(3)
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


def matrix(main, s, by_name):
    """Logs in one user per role and checks every message for each."""
    main.pool.enable_external_auth(s, main.pool.get_all(s)[0], {},
                                   'rbac-test', 'PAM')
    accounts = {}
    subjects = {}
    for i, role in enumerate(ROLES):
        name, password = users.add('r%d' % i)
        sid = main.auth.get_subject_identifier(s, name)
        assert sid == 'u%d' % pwd.getpwnam(name).pw_uid, sid
        subj = main.subject.create(s, {'subject_identifier': sid})
        main.subject.add_to_roles(s, subj, by_name[role][0])
        accounts[role] = (name, password)
        subjects[role] = subj
    sessions = {role: main.session.login_with_password(*accounts[role])
                for role in ROLES}

    @tap.test('test_granting_roles_to_subjects')
    def _():
        subj = subjects['read-only']
        ro = by_name['read-only'][0]
        expect_error(lambda: main.subject.add_to_roles(s, subj, ro),
                     'ROLE_ALREADY_EXISTS', [])
        expect_error(lambda: main.subject.add_to_roles(
            s, subj, by_name['vm.start'][0]), 'ROLE_NOT_FOUND', [])
        expect_error(lambda: main.subject.add_to_roles(
            s, subj, by_name['client-cert'][0]), 'ROLE_NOT_FOUND', [])
        expect_error(lambda: main.subject.add_to_roles(s, subj, 'OpaqueRef:x'),
                     'ROLE_NOT_FOUND', [])
        expect_error(lambda: main.subject.remove_from_roles(
            s, subj, by_name['vm-admin'][0]), 'ROLE_NOT_FOUND', [])
        expect_error(lambda: main.subject.add_to_roles(s, 'OpaqueRef:x', ro),
                     'HANDLE_INVALID', ['subject', 'OpaqueRef:x'])
        assert main.subject.get_roles(s, subj) == [ro]
        assert set(main.subject.get_permissions_name_label(s, subj)) \
            == perms_of('read-only')

    @tap.test('test_session_rbac_permissions_are_the_role_and_its_permissions')
    def _():
        probs = []
        for role in ROLES:
            rec = main.session.get_record(s, sessions[role])
            want = perms_of(role) | {role}
            got = set(rec['rbac_permissions'])
            if got != want or rec['is_local_superuser'] is not False:
                probs.append('%s: missing %s, extra %s' % (
                    role, sorted(want - got)[:5], sorted(got - want)[:5]))
        assert not probs, '\n'.join(probs)

    @tap.test('test_permission_is_checked_before_argument_types')
    def _():
        sess = sessions['read-only']
        expect_error(lambda: main.pool.set_name_label(sess, 42, {}),
                     'RBAC_PERMISSION_DENIED',
                     ['pool.set_name_label', 'pool.set_name_label'])

    # Jobs: (role, message, method as called).
    jobs = []
    n_skipped = 0
    for m in all_msgs:
        if not has_session(m):
            continue
        for role in ROLES:
            allowed = role in m.roles
            if allowed and m.full_name in NOT_CALLED_WHEN_ALLOWED:
                n_skipped += 1
                continue
            jobs.append((role, m, m.full_name))
            if m.async_:
                jobs.append((role, m, 'Async.' + m.full_name))

    results = [None] * len(jobs)
    q = queue.Queue()
    for i, j in enumerate(jobs):
        q.put((i, j))

    def call(proxies, role, m, method):
        sess = sessions[role]
        if m.full_name in FRESH_SESSION:
            sess = unwrap('login', proxies[role].session.login_with_password(
                *accounts[role]))
        try:
            r = getattr(proxies[role], method)(*dummy_args(m, sess))
        except (socket.timeout, TimeoutError):
            proxies[role] = d.proxy(timeout=CALL_TIMEOUT)
            return 'timeout', None
        except xmlrpc.client.Fault as e:
            return 'bad', 'XML-RPC fault %r' % e
        try:
            return 'ok', unwrap(method, r)
        except XenAPIError as e:
            return 'err', e.details
        except AssertionError as e:
            return 'bad', str(e)

    def worker():
        proxies = {role: d.proxy(timeout=CALL_TIMEOUT) for role in ROLES}
        while True:
            try:
                i, (role, m, method) = q.get_nowait()
            except queue.Empty:
                return
            try:
                results[i] = call(proxies, role, m, method)
            except Exception as e:
                results[i] = ('bad', '%s: %s' % (type(e).__name__, e))
                proxies[role] = d.proxy(timeout=CALL_TIMEOUT)

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    print('# %d calls (%d of them Async) by %d roles in %.1f s; %d allowed '
          'calls not made (they would stop the daemon)'
          % (len(jobs), sum(1 for j in jobs if j[2].startswith('Async.')),
             len(ROLES), elapsed, n_skipped))

    for role in ROLES:
        probs = []
        n_denied = n_allowed = 0
        for (r, m, method), res in zip(jobs, results):
            if r != role:
                continue
            kind, val = res
            allowed = role in m.roles
            denied = (kind == 'err' and val
                      and val[0] == 'RBAC_PERMISSION_DENIED')
            if kind == 'bad':
                probs.append('%s: %s' % (method, val))
            elif allowed and denied:
                probs.append('%s: denied %r, but the IDL allows %s'
                             % (method, val, role))
            elif not allowed and not denied:
                probs.append('%s: %s %r, want RBAC_PERMISSION_DENIED (roles '
                             '%s)' % (method, kind, val, m.roles))
            elif not allowed and val != ['RBAC_PERMISSION_DENIED',
                                         permission(m), method]:
                probs.append('%s: %r, want [RBAC_PERMISSION_DENIED, %s, %s]'
                             % (method, val, permission(m), method))
            n_allowed += allowed
            n_denied += not allowed
        check('test_rbac_matrix_for_%s' % role, not probs,
              '%d calls (%d allowed, %d denied), %d mismatches:\n%s'
              % (n_allowed + n_denied, n_allowed, n_denied, len(probs),
                 '\n'.join(probs[:40])))

    @tap.test('test_every_message_with_a_session_was_checked_for_every_role')
    def _():
        seen = {(r, m.full_name) for r, m, _ in jobs}
        want = {(r, m.full_name) for m in all_msgs if has_session(m)
                for r in ROLES
                if not (r in m.roles
                        and m.full_name in NOT_CALLED_WHEN_ALLOWED)}
        assert seen == want, len(seen ^ want)
        assert sum(1 for m in all_msgs if not m.hidden) >= 1828

    @tap.test('test_role_sessions_survive_the_matrix')
    def _():
        for role in ROLES:
            main.pool.get_all(sessions[role])

    @tap.test('test_daemon_is_alive_after_the_matrix')
    def _():
        assert d.alive()


d = start_or_bail(Daemon(tls=False))
users = Users()
try:
    main = d.client()
    s = d.login(main)
    pool = main.pool.get_all(s)[0]
    records = main.role.get_all_records(s)
    by_name = {}
    for ref, rec in records.items():
        by_name.setdefault(rec['name_label'], []).append(ref)

    # ---- the role table ----

    @tap.test('test_the_IDL_role_lists_are_the_reference_ones')
    def _():
        # The matrix below trusts the IDL; check it against the reference
        # itself where that is available.
        path = os.path.join(os.environ.get('XAPI_SHARED')
                            or os.path.join(TOP, '..', 'shared'),
                            'reference', 'xenapi.json')
        if not os.path.exists(path):
            raise Skip('no reference at %s' % path)
        with open(path) as f:
            ref = {'%s.%s' % (c['name'], m['name']): set(m['roles'])
                   for c in json.load(f) for m in c['messages']}
        probs = ['%s: IDL %s, reference %s' % (m.full_name, sorted(m.roles),
                                                sorted(ref[m.full_name]))
                 for m in all_msgs
                 if m.full_name in ref and set(m.roles) != ref[m.full_name]]
        assert len(ref) == 1828 and not probs, '\n'.join(probs[:20])
        assert all(m.hidden for m in all_msgs if m.full_name not in ref)

    @tap.test('test_the_seven_roles_exist_once_with_the_right_flags')
    def _():
        for role in ALL_ROLES:
            refs = by_name.get(role, [])
            assert len(refs) == 1, (role, refs)
            rec = records[refs[0]]
            assert rec['is_internal'] == (role == 'client-cert'), rec
            assert rec['subroles'], role
        assert by_name['pool-admin'] == [POOL_ADMIN_REF], by_name['pool-admin']

    @tap.test('test_every_message_has_one_permission_row_without_subroles')
    def _():
        probs = []
        for m in all_msgs:
            refs = by_name.get(permission(m), [])
            if len(refs) != 1:
                probs.append('%s: %d rows' % (permission(m), len(refs)))
            elif records[refs[0]]['subroles'] != []:
                probs.append('%s has subroles' % permission(m))
        want = len({permission(m) for m in all_msgs}) + len(ALL_ROLES)
        assert len(records) == want, (len(records), want)
        assert not probs, '\n'.join(probs[:20])

    @tap.test('test_each_role_holds_exactly_the_permissions_of_the_IDL')
    def _():
        probs = []
        for role in ALL_ROLES:
            ref = by_name[role][0]
            names = main.role.get_permissions_name_label(s, ref)
            if len(names) != len(set(names)):
                probs.append('%s: duplicated permissions' % role)
            want = perms_of(role)
            if set(names) != want:
                probs.append('%s: missing %s, extra %s'
                             % (role, sorted(want - set(names))[:10],
                                sorted(set(names) - want)[:10]))
            refs = main.role.get_permissions(s, ref)
            if sorted(refs) != sorted(records[ref]['subroles']):
                probs.append('%s: get_permissions differs from subroles'
                             % role)
            if {records[r]['name_label'] for r in refs} != want:
                probs.append('%s: get_permissions names differ' % role)
        assert not probs, '\n'.join(probs)

    @tap.test('test_roles_are_nested_from_pool_admin_down_to_read_only')
    def _():
        sets = [perms_of(r) for r in ROLES]
        for stronger, weaker, name in zip(sets, sets[1:], ROLES[1:]):
            assert weaker <= stronger, name

    @tap.test('test_get_by_permission_and_by_permission_name_label')
    def _():
        probs = []
        for name in ('vm.start', 'pool.set_name_label', 'vm.get_all',
                     'subject.create', 'session.change_password',
                     'event.from'):
            m = next(x for x in all_msgs if permission(x) == name)
            want = sorted(by_name[r][0] for r in m.roles)
            got = sorted(main.role.get_by_permission_name_label(s, name))
            if got != want:
                probs.append('by name %s: %s, want %s' % (name, got, want))
            got = sorted(main.role.get_by_permission(s, by_name[name][0]))
            if got != want:
                probs.append('by ref %s: %s, want %s' % (name, got, want))
        assert main.role.get_by_permission_name_label(s, 'no.such') == []
        assert main.role.get_by_permission(s, 'OpaqueRef:NULL') == []
        assert not probs, '\n'.join(probs)

    @tap.test('test_permissions_of_a_bad_role_ref_are_HANDLE_INVALID')
    def _():
        expect_error(lambda: main.role.get_permissions(s, 'OpaqueRef:x'),
                     'HANDLE_INVALID', ['role', 'OpaqueRef:x'])
        expect_error(lambda: main.role.get_permissions_name_label(
            s, 'OpaqueRef:x'), 'HANDLE_INVALID', ['role', 'OpaqueRef:x'])

    @tap.test('test_a_permission_row_has_no_permissions')
    def _():
        ref = by_name['vm.start'][0]
        assert main.role.get_permissions(s, ref) == []
        assert main.role.get_permissions_name_label(s, ref) == []
        assert main.role.get_by_name_label(s, 'vm.start') == [ref]

    @tap.test('test_the_local_superuser_session_has_no_rbac_permissions')
    def _():
        rec = main.session.get_record(s, s)
        assert rec['is_local_superuser'] is True
        assert rec['rbac_permissions'] == [], rec['rbac_permissions'][:5]

    @tap.test('test_role_refs_are_the_same_after_a_restart')
    def _():
        global main, s
        before = {r: v['name_label'] for r, v in records.items()}
        d.restart()
        main = d.client()
        s = d.login(main)
        after = {r: v['name_label']
                 for r, v in main.role.get_all_records(s).items()}
        assert before == after, len(set(before) ^ set(after))

    # ---- the matrix ----

    why_not = can_make_users()
    if why_not:
        for name in ['test_granting_roles_to_subjects',
                     'test_session_rbac_permissions_are_the_role_and_its_'
                     'permissions',
                     'test_permission_is_checked_before_argument_types'] \
                + ['test_rbac_matrix_for_%s' % r for r in ROLES]:
            tap.skip(name, why_not)
    else:
        matrix(main, s, by_name)
finally:
    users.remove()
    finish_daemon(d)
    d.cleanup()
tap.finish()
