#!/usr/bin/env python3
"""test_external_auth.py — external users through PAM, as XenAPI's PAM
plugin has them: pool/host.enable_external_auth and disable_external_auth
(the host fields, AUTH_UNKNOWN_TYPE, (POOL_)AUTH_ALREADY_ENABLED), the
directory queries of auth.* (subject identifiers "u<uid>" and "g<gid>",
SUBJECT_CANNOT_BE_RESOLVED, AUTH_IS_DISABLED), subject.create for a user
and for a group (other_config from the directory, no role, no duplicate),
and logins: a user without a subject is refused, a user with a subject or
in a group with a subject gets the union of their roles, a wrong or empty
password fails, repeated failures throttle the name (and not root), role
changes apply to new sessions, session records of external users,
get_all_subject_identifiers and logout_subject_identifier, destroying a
subject or disabling external authentication ends the sessions it
granted, and session.change_password is the local superuser's only.

It creates throwaway Unix users and a group with a random name prefix
(useradd, groupadd, chpasswd) and removes them in every case, so it needs
root; without it every test is skipped with the reason."""
import grp
import os
import pwd
import secrets
import shutil
import subprocess
import time

from xapitest import (Daemon, expect_error, finish_daemon, full_record,
                      load_idl, start_or_bail, tap)

TOOLS = ('useradd', 'userdel', 'groupadd', 'groupdel', 'chpasswd', 'usermod')
TESTS = [
    'test_auth_queries_need_external_auth',
    'test_non_root_users_cannot_log_in_while_external_auth_is_disabled',
    'test_enable_external_auth_with_an_unknown_type_fails',
    'test_enable_external_auth_PAM_sets_the_host_fields',
    'test_enabling_twice_fails',
    'test_get_subject_identifier_of_a_user_and_a_group',
    'test_unknown_subjects_cannot_be_resolved',
    'test_subject_information_of_a_user_and_a_group',
    'test_group_membership_of_a_user_and_a_group',
    'test_subject_create_for_a_user_takes_the_directory_information',
    'test_subject_create_for_a_group',
    'test_subject_create_twice_is_SUBJECT_ALREADY_EXISTS',
    'test_user_without_a_subject_cannot_log_in',
    'test_subject_without_roles_cannot_log_in',
    'test_user_with_a_subject_logs_in_with_its_role',
    'test_session_record_of_an_external_user',
    'test_user_in_a_group_with_a_subject_logs_in',
    'test_roles_of_user_and_group_subjects_are_united',
    'test_wrong_and_empty_passwords_fail',
    'test_locked_account_cannot_log_in',
    'test_repeated_failures_throttle_the_user_name',
    'test_root_is_not_throttled',
    'test_role_changes_apply_to_new_sessions',
    'test_get_all_subject_identifiers_lists_external_users',
    'test_logout_subject_identifier_ends_that_users_sessions',
    'test_logout_subject_identifier_spares_the_calling_session',
    'test_change_password_is_for_the_local_superuser_only',
    'test_external_pool_admin_can_manage_subjects',
    'test_destroying_a_subject_ends_the_sessions_it_granted',
    'test_disable_external_auth_ends_external_sessions',
    'test_host_enable_and_disable_external_auth',
]


def why_skip():
    if os.geteuid() != 0:
        return 'needs root (useradd, groupadd, PAM reading /etc/shadow)'
    for tool in TOOLS:
        if not shutil.which(tool):
            return 'no %s on this machine' % tool
    return None


class Accounts:
    """Throwaway Unix users and groups with a random name prefix."""

    def __init__(self):
        self.prefix = 'xe' + secrets.token_hex(3)
        self.users, self.groups = [], []

    def group(self, tag):
        name = self.prefix + tag
        subprocess.run(['groupadd', name], check=True, capture_output=True)
        self.groups.append(name)
        return name

    def user(self, tag, groups=()):
        name = self.prefix + tag
        password = 'pw-' + secrets.token_urlsafe(12)
        cmd = ['useradd', '-M', '-N', '-s', '/usr/sbin/nologin']
        if groups:
            cmd += ['-G', ','.join(groups)]
        subprocess.run(cmd + [name], check=True, capture_output=True)
        self.users.append(name)
        subprocess.run(['chpasswd'], input=('%s:%s\n' % (name, password))
                       .encode(), check=True, capture_output=True)
        return name, password

    def remove(self):
        for name in self.users:
            subprocess.run(['userdel', name], capture_output=True)
        for name in self.groups:
            subprocess.run(['groupdel', name], capture_output=True)
        self.users, self.groups = [], []


def uid_sid(name):
    return 'u%d' % pwd.getpwnam(name).pw_uid


def gid_sid(name):
    return 'g%d' % grp.getgrnam(name).gr_gid


skip_reason = why_skip()
if skip_reason:
    for t in TESTS:
        tap.skip(t, skip_reason)
    tap.finish()

model = load_idl()
d = start_or_bail(Daemon(tls=False))
acc = Accounts()
try:
    c = d.client()
    s = d.login(c)
    pool = c.pool.get_all(s)[0]
    host = c.host.get_by_uuid(s, d.host_uuid)
    roles = {rec['name_label']: ref
             for ref, rec in c.role.get_all_records(s).items()}
    group = acc.group('g')
    alice, alice_pw = acc.user('alice')             # her own subject
    bob, bob_pw = acc.user('bob', [group])          # through the group
    carol, carol_pw = acc.user('carol')             # no subject
    dave, dave_pw = acc.user('dave')                # throttled
    erin, erin_pw = acc.user('erin')                # roles change
    fred, fred_pw = acc.user('fred')                # locked account
    subj = {}

    def login(user, password, client=None):
        return (client or c).session.login_with_password(user, password,
                                                         '1.1', 'test')

    def add_subject(name, *role_names):
        sid = c.auth.get_subject_identifier(s, name)
        ref = c.subject.create(s, {'subject_identifier': sid})
        for r in role_names:
            c.subject.add_to_roles(s, ref, roles[r])
        subj[name] = ref
        return ref

    @tap.test(TESTS[0])
    def _():
        expect_error(lambda: c.auth.get_subject_identifier(s, alice),
                     'AUTH_IS_DISABLED', [])
        expect_error(lambda: c.auth.get_group_membership(s, uid_sid(alice)),
                     'AUTH_IS_DISABLED', [])
        expect_error(lambda: c.auth.get_subject_information_from_identifier(
            s, uid_sid(alice)), 'AUTH_IS_DISABLED', [])
        expect_error(lambda: c.subject.create(
            s, {'subject_identifier': uid_sid(alice)}), 'AUTH_IS_DISABLED',
            [])

    @tap.test(TESTS[1])
    def _():
        expect_error(lambda: login(carol, carol_pw),
                     'SESSION_AUTHENTICATION_FAILED', [])

    @tap.test(TESTS[2])
    def _():
        expect_error(lambda: c.pool.enable_external_auth(
            s, pool, {}, 'svc', 'LDAP'), 'AUTH_UNKNOWN_TYPE', ['LDAP'])
        expect_error(lambda: c.pool.enable_external_auth(
            s, 'OpaqueRef:x', {}, 'svc', 'PAM'), 'HANDLE_INVALID',
            ['pool', 'OpaqueRef:x'])
        assert c.host.get_external_auth_type(s, host) == ''

    @tap.test(TESTS[3])
    def _():
        c.pool.enable_external_auth(s, pool, {'user': 'x', 'pass': 'secret'},
                                    'unix', 'PAM')
        rec = c.host.get_record(s, host)
        assert rec['external_auth_type'] == 'PAM', rec['external_auth_type']
        assert rec['external_auth_service_name'] == 'unix'
        assert rec['external_auth_configuration'] == {'user': 'x'}, \
            rec['external_auth_configuration']

    @tap.test(TESTS[4])
    def _():
        expect_error(lambda: c.pool.enable_external_auth(
            s, pool, {}, 'unix', 'PAM'), 'POOL_AUTH_ALREADY_ENABLED', [host])
        expect_error(lambda: c.host.enable_external_auth(
            s, host, {}, 'unix', 'PAM'), 'AUTH_ALREADY_ENABLED',
            ['PAM', 'unix'])

    @tap.test(TESTS[5])
    def _():
        assert c.auth.get_subject_identifier(s, alice) == uid_sid(alice)
        assert c.auth.get_subject_identifier(s, group) == gid_sid(group)
        assert c.auth.get_subject_identifier(s, 'root') == 'u0'

    @tap.test(TESTS[6])
    def _():
        for name in (acc.prefix + 'nobody', ''):
            expect_error(lambda: c.auth.get_subject_identifier(s, name),
                         'SUBJECT_CANNOT_BE_RESOLVED', [])
        for sid in ('u4000000000', 'g4000000000', 'x1', 'u', 'u-1', 'u 1',
                    alice, ''):
            expect_error(
                lambda: c.auth.get_subject_information_from_identifier(s, sid),
                'SUBJECT_CANNOT_BE_RESOLVED', [], sid)
            expect_error(lambda: c.subject.create(
                s, {'subject_identifier': sid}),
                'SUBJECT_CANNOT_BE_RESOLVED', [], sid)
        expect_error(lambda: c.auth.get_group_membership(s, 'u4000000000'),
                     'SUBJECT_CANNOT_BE_RESOLVED', [])

    @tap.test(TESTS[7])
    def _():
        info = c.auth.get_subject_information_from_identifier(
            s, uid_sid(alice))
        pw = pwd.getpwnam(alice)
        assert info['subject-name'] == alice, info
        assert info['subject-uid'] == uid_sid(alice), info
        assert info['subject-gid'] == 'g%d' % pw.pw_gid, info
        assert info['subject-is-group'] == 'false', info
        assert info['subject-account-disabled'] == 'false', info
        for k in ('subject-gecos', 'subject-displayname',
                  'subject-account-expired', 'subject-account-locked',
                  'subject-password-expired'):
            assert k in info, (k, info)
        ginfo = c.auth.get_subject_information_from_identifier(
            s, gid_sid(group))
        assert ginfo['subject-name'] == group, ginfo
        assert ginfo['subject-gid'] == gid_sid(group), ginfo
        assert ginfo['subject-is-group'] == 'true', ginfo

    @tap.test(TESTS[8])
    def _():
        groups = c.auth.get_group_membership(s, uid_sid(bob))
        assert gid_sid(group) in groups, groups
        assert 'g%d' % pwd.getpwnam(bob).pw_gid in groups, groups
        assert len(groups) == len(set(groups)), groups
        assert gid_sid(group) not in c.auth.get_group_membership(
            s, uid_sid(alice))
        assert c.auth.get_group_membership(s, gid_sid(group)) \
            == [gid_sid(group)]

    @tap.test(TESTS[9])
    def _():
        ref = c.subject.create(s, {'subject_identifier': uid_sid(alice),
                                   'other_config': {'mine': 'ignored'}})
        subj[alice] = ref
        rec = c.subject.get_record(s, ref)
        assert rec['subject_identifier'] == uid_sid(alice), rec
        assert rec['other_config'].get('subject-name') == alice, rec
        assert rec['other_config'].get('subject-is-group') == 'false', rec
        assert 'mine' not in rec['other_config'], rec
        assert rec['roles'] == [], rec
        assert ref in c.subject.get_all(s)

    @tap.test(TESTS[10])
    def _():
        ref = c.subject.create(s, {'subject_identifier': gid_sid(group)})
        subj[group] = ref
        rec = c.subject.get_record(s, ref)
        assert rec['other_config'].get('subject-name') == group, rec
        assert rec['other_config'].get('subject-is-group') == 'true', rec
        assert rec['roles'] == [], rec

    @tap.test(TESTS[11])
    def _():
        expect_error(lambda: c.subject.create(
            s, {'subject_identifier': uid_sid(alice)}),
            'SUBJECT_ALREADY_EXISTS', [])

    @tap.test(TESTS[12])
    def _():
        expect_error(lambda: login(carol, carol_pw),
                     'SESSION_AUTHENTICATION_FAILED', [])

    @tap.test(TESTS[13])
    def _():
        details = expect_error(lambda: login(alice, alice_pw),
                               'RBAC_PERMISSION_DENIED')
        assert details[1] == 'session.login_with_password', details
        # the group's subject holds no role yet either
        expect_error(lambda: login(bob, bob_pw), 'RBAC_PERMISSION_DENIED')

    alice_s = []

    @tap.test(TESTS[14])
    def _():
        c.subject.add_to_roles(s, subj[alice], roles['vm-admin'])
        a = login(alice, alice_pw)
        alice_s.append(a)
        c.VM.get_all(a)
        rec = full_record(model, 'VM', name_label='alice',
                          memory_static_max='1024', memory_dynamic_max='1024',
                          memory_static_min='1024', memory_dynamic_min='1024',
                          VCPUs_max='1', VCPUs_at_startup='1')
        vm = c.VM.create(a, rec)
        c.VM.set_name_description(a, vm, 'made by a vm-admin')
        expect_error(lambda: c.pool.set_name_label(a, pool, 'x'),
                     'RBAC_PERMISSION_DENIED',
                     ['pool.set_name_label', 'pool.set_name_label'])
        expect_error(lambda: c.subject.create(
            a, {'subject_identifier': uid_sid(carol)}),
            'RBAC_PERMISSION_DENIED', ['subject.create', 'subject.create'])

    @tap.test(TESTS[15])
    def _():
        a = alice_s[0]
        rec = c.session.get_record(a, a)
        assert rec['is_local_superuser'] is False, rec
        assert rec['subject'] == subj[alice], rec
        assert rec['auth_user_sid'] == uid_sid(alice), rec
        assert rec['auth_user_name'] == alice, rec
        assert rec['originator'] == 'test', rec
        assert rec['this_user'] == 'OpaqueRef:NULL', rec
        perms = set(rec['rbac_permissions'])
        assert 'vm-admin' in perms and 'vm.create' in perms, len(perms)
        assert 'pool.set_name_label' not in perms
        assert 'vm-power-admin' not in perms
        assert c.session.get_rbac_permissions(a, a) == rec['rbac_permissions']

    bob_s = []

    @tap.test(TESTS[16])
    def _():
        c.subject.add_to_roles(s, subj[group], roles['read-only'])
        b = login(bob, bob_pw)
        bob_s.append(b)
        rec = c.session.get_record(s, b)
        assert rec['subject'] == subj[group], rec
        assert rec['auth_user_sid'] == uid_sid(bob), rec
        assert rec['auth_user_name'] == bob, rec
        c.VM.get_all(b)
        expect_error(lambda: c.VM.set_name_description(b, 'OpaqueRef:x', 'x'),
                     'RBAC_PERMISSION_DENIED')

    @tap.test(TESTS[17])
    def _():
        add_subject(bob, 'vm-operator')
        b = login(bob, bob_pw)
        bob_s.append(b)
        rec = c.session.get_record(s, b)
        assert rec['subject'] == subj[bob], rec     # the user's own first
        perms = set(rec['rbac_permissions'])
        assert {'read-only', 'vm-operator', 'vm.start'} <= perms, len(perms)
        # vm-operator may tag VMs, read-only may not
        vm = c.VM.get_all(s)[0]
        c.VM.add_tags(b, vm, 'tagged by bob')
        expect_error(lambda: c.VM.add_tags(bob_s[0], vm, 'x'),
                     'RBAC_PERMISSION_DENIED')
        c.VM.remove_tags(b, vm, 'tagged by bob')

    @tap.test(TESTS[18])
    def _():
        expect_error(lambda: login(alice, alice_pw + 'x'),
                     'SESSION_AUTHENTICATION_FAILED', [])
        expect_error(lambda: login(alice, ''),
                     'SESSION_AUTHENTICATION_FAILED', [])
        expect_error(lambda: login(acc.prefix + 'nobody', 'x'),
                     'SESSION_AUTHENTICATION_FAILED', [])
        c.session.logout(login(alice, alice_pw))   # and she still can

    @tap.test(TESTS[19])
    def _():
        add_subject(fred, 'read-only')
        c.session.logout(login(fred, fred_pw))
        subprocess.run(['usermod', '-L', fred], check=True,
                       capture_output=True)
        expect_error(lambda: login(fred, fred_pw),
                     'SESSION_AUTHENTICATION_FAILED', [])
        info = c.auth.get_subject_information_from_identifier(
            s, uid_sid(fred))
        assert info['subject-account-disabled'] == 'true', info

    @tap.test(TESTS[20])
    def _():
        add_subject(dave, 'read-only')
        for _ in range(5):
            expect_error(lambda: login(dave, 'wrong'),
                         'SESSION_AUTHENTICATION_FAILED', [])
        t0 = time.time()
        expect_error(lambda: login(dave, dave_pw),
                     'SESSION_AUTHENTICATION_FAILED', [],
                     'the right password while throttled')
        assert time.time() - t0 < 0.5, 'a throttled login was not refused ' \
            'at once (%.2f s)' % (time.time() - t0)
        # other users are not affected
        c.session.logout(login(alice, alice_pw))
        time.sleep(2.3)
        c.session.logout(login(dave, dave_pw))
        # success forgets the failures: one more failure does not lock
        expect_error(lambda: login(dave, 'wrong'),
                     'SESSION_AUTHENTICATION_FAILED', [])
        c.session.logout(login(dave, dave_pw))

    @tap.test(TESTS[21])
    def _():
        for _ in range(7):
            expect_error(lambda: login('root', 'wrong'),
                         'SESSION_AUTHENTICATION_FAILED', [])
        c.session.logout(login('root', d.password))

    @tap.test(TESTS[22])
    def _():
        ref = add_subject(erin, 'vm-operator')
        old = login(erin, erin_pw)
        expect_error(lambda: c.pool.set_name_description(old, pool, 'x'),
                     'RBAC_PERMISSION_DENIED')
        c.subject.remove_from_roles(s, ref, roles['vm-operator'])
        c.subject.add_to_roles(s, ref, roles['pool-operator'])
        assert c.subject.get_roles(s, ref) == [roles['pool-operator']]
        new = login(erin, erin_pw)
        c.pool.set_name_description(new, pool, 'set by a pool-operator')
        # the old session keeps the roles it had at login
        expect_error(lambda: c.pool.set_name_description(old, pool, 'x'),
                     'RBAC_PERMISSION_DENIED')
        c.session.logout(old)
        c.session.logout(new)

    @tap.test(TESTS[23])
    def _():
        sids = c.session.get_all_subject_identifiers(s)
        assert uid_sid(alice) in sids and uid_sid(bob) in sids, sids
        assert '' not in sids and len(sids) == len(set(sids)), sids
        assert c.session.get_all_subject_identifiers(bob_s[0]) == sids

    @tap.test(TESTS[24])
    def _():
        a2 = login(alice, alice_pw)
        c.session.logout_subject_identifier(s, uid_sid(alice))
        for a in (alice_s[0], a2):
            expect_error(lambda: c.VM.get_all(a), 'SESSION_INVALID', [a])
        c.VM.get_all(bob_s[0])
        c.VM.get_all(s)
        assert uid_sid(alice) not in c.session.get_all_subject_identifiers(s)

    @tap.test(TESTS[25])
    def _():
        e1 = login(erin, erin_pw)       # a pool-operator now
        e2 = login(erin, erin_pw)
        c.session.logout_subject_identifier(e1, uid_sid(erin))
        c.pool.get_all(e1)
        expect_error(lambda: c.pool.get_all(e2), 'SESSION_INVALID', [e2])
        # a read-only user may not
        expect_error(lambda: c.session.logout_subject_identifier(
            bob_s[0], uid_sid(erin)), 'RBAC_PERMISSION_DENIED')
        c.session.logout(e1)

    @tap.test(TESTS[26])
    def _():
        c.subject.add_to_roles(s, subj[erin], roles['pool-admin'])
        e = login(erin, erin_pw)
        # The datamodel gives session.change_password to no role: only the
        # local superuser passes, so the dispatcher refuses it before
        # the handler's own USER_IS_NOT_LOCAL_SUPERUSER check.
        expect_error(lambda: c.session.change_password(e, erin_pw, 'n3w'),
                     'RBAC_PERMISSION_DENIED',
                     ['session.change_password', 'session.change_password'])
        c.session.logout(login(erin, erin_pw))
        c.session.logout(login('root', d.password))
        c.session.logout(e)

    @tap.test(TESTS[27])
    def _():
        e = login(erin, erin_pw)        # pool-admin
        ref = c.subject.create(e, {'subject_identifier': uid_sid(carol)})
        c.subject.add_to_roles(e, ref, roles['read-only'])
        c.session.logout(login(carol, carol_pw))
        c.subject.destroy(e, ref)
        expect_error(lambda: login(carol, carol_pw),
                     'SESSION_AUTHENTICATION_FAILED', [])
        c.session.logout(e)

    @tap.test(TESTS[28])
    def _():
        # bob has his own subject and the group's: losing his own keeps
        # the session (which now names the group's subject); losing both
        # ends it
        b = bob_s[-1]
        c.subject.destroy(s, subj[bob])
        assert c.session.get_subject(s, b) == subj[group]
        c.VM.get_all(b)
        a = login(alice, alice_pw)
        c.subject.destroy(s, subj[alice])
        expect_error(lambda: c.VM.get_all(a), 'SESSION_INVALID', [a])
        expect_error(lambda: login(alice, alice_pw),
                     'SESSION_AUTHENTICATION_FAILED', [])
        c.VM.get_all(b)
        c.VM.get_all(s)

    @tap.test(TESTS[29])
    def _():
        b = bob_s[-1]
        e = login(erin, erin_pw)
        c.pool.disable_external_auth(s, pool, {})
        for x in (b, e):
            expect_error(lambda: c.VM.get_all(x), 'SESSION_INVALID', [x])
        c.VM.get_all(s)
        rec = c.host.get_record(s, host)
        assert rec['external_auth_type'] == '', rec['external_auth_type']
        assert rec['external_auth_service_name'] == ''
        assert rec['external_auth_configuration'] == {}
        expect_error(lambda: login(bob, bob_pw),
                     'SESSION_AUTHENTICATION_FAILED', [])
        expect_error(lambda: c.auth.get_subject_identifier(s, bob),
                     'AUTH_IS_DISABLED', [])
        # subjects stay; disabling again is harmless
        assert subj[group] in c.subject.get_all(s)
        c.pool.disable_external_auth(s, pool, {})
        assert c.session.get_all_subject_identifiers(s) == []

    @tap.test(TESTS[30])
    def _():
        c.host.enable_external_auth(s, host, {}, 'unix', 'PAM')
        assert c.host.get_external_auth_type(s, host) == 'PAM'
        b = login(bob, bob_pw)
        c.VM.get_all(b)
        c.host.disable_external_auth(s, host, {})
        expect_error(lambda: c.VM.get_all(b), 'SESSION_INVALID', [b])
        expect_error(lambda: c.host.enable_external_auth(
            s, 'OpaqueRef:x', {}, 'unix', 'PAM'), 'HANDLE_INVALID',
            ['host', 'OpaqueRef:x'])
        expect_error(lambda: c.host.disable_external_auth(s, 'OpaqueRef:x',
                                                          {}),
                     'HANDLE_INVALID', ['host', 'OpaqueRef:x'])

finally:
    acc.remove()
    finish_daemon(d)
    d.cleanup()
tap.finish()
