#!/usr/bin/env python3
"""test_sessions.py — sessions as XenAPI keeps them: the session record
(this_host, this_user, originator, is_local_superuser, times...), logout
and local_logout, idle expiry (a daemon started with
--session-idle-timeout 2: an idle session dies, an active one lives), the
bound of 500 sessions per user (the 501st login logs out the least recently
used one), session.change_password (kept across a restart), and logins in
parallel.  Each login hashes a password (yescrypt), so the 501 logins run
in threads while the idle-expiry daemon waits, to keep the file short."""
import calendar
import os
import re
import threading
import time
import xmlrpc.client

from xapitest import (Daemon, XenAPIError, expect_error, finish_daemon,
                      load_idl, start_or_bail, tap)

model = load_idl()
d = start_or_bail(Daemon(tls=False))
idle = start_or_bail(Daemon(tls=False,
                            extra_args=['--session-idle-timeout', '2']),
                     label='idle_xapi')
UUID_RE = r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'


class Keeper(threading.Thread):
    """Keeps a session active with a call every 0.3 s."""

    def __init__(self, daemon, session):
        threading.Thread.__init__(self, daemon=True)
        self.d, self.s = daemon, session
        self.stop = False
        self.error = None

    def run(self):
        c = self.d.client(timeout=10)
        while not self.stop:
            try:
                c.pool.get_all(self.s)
            except Exception as e:
                self.error = '%s: %s' % (type(e).__name__, e)
                return
            time.sleep(0.3)


try:
    c = d.client()
    s = c.session.login_with_password('root', d.password, '1.1',
                                      'test_sessions')
    host = c.host.get_by_uuid(s, d.host_uuid)

    # idle expiry starts now and is checked after the slow tests
    ic = idle.client()
    idle_s = ic.session.login_with_password('root', idle.password)
    busy_s = ic.session.login_with_password('root', idle.password)
    keeper = Keeper(idle, busy_s)
    keeper.start()
    idle_t0 = time.time()

    # ---- the session record ----

    @tap.test('test_originator_is_recorded')
    def _():
        assert c.session.get_originator(s, s) == 'test_sessions'
        s2 = c.session.login_with_password('root', d.password)
        assert c.session.get_originator(s2, s2) == ''
        s3 = c.session.login_with_password('root', d.password, '1.1',
                                           'other \u00e9 <app>')
        assert c.session.get_originator(s, s3) == 'other \u00e9 <app>'
        c.session.logout(s2)
        c.session.logout(s3)

    @tap.test('test_get_this_host_is_the_host')
    def _():
        assert c.session.get_this_host(s, s) == host

    @tap.test('test_get_this_user_of_the_local_superuser_is_a_ref')
    def _():
        u = c.session.get_this_user(s, s)
        assert isinstance(u, str) and u.startswith('OpaqueRef:'), u
        if u != 'OpaqueRef:NULL':
            c.user.get_record(s, u)

    @tap.test('test_session_record_fields')
    def _():
        rec = c.session.get_record(s, s)
        want = {f.name for f in model.cls('session').fields}
        assert set(rec) == want, (sorted(set(rec) ^ want))
        assert re.match(UUID_RE, rec['uuid']), rec['uuid']
        assert rec['this_host'] == host, rec
        assert rec['is_local_superuser'] is True, rec
        assert rec['pool'] is False, rec
        assert rec['originator'] == 'test_sessions', rec
        assert rec['subject'] == 'OpaqueRef:NULL', rec
        assert rec['parent'] == 'OpaqueRef:NULL', rec
        assert rec['auth_user_sid'] == '', rec
        assert rec['tasks'] == [], rec
        assert rec['other_config'] == {}, rec
        for f in ('last_active', 'validation_time'):
            assert isinstance(rec[f], xmlrpc.client.DateTime), (f, rec[f])
            t = calendar.timegm(time.strptime(rec[f].value,
                                              '%Y%m%dT%H:%M:%SZ'))
            assert abs(t - time.time()) < 3600, (f, rec[f].value)
        assert c.session.get_by_uuid(s, rec['uuid']) == s

    @tap.test('test_session_other_config_is_writable')
    def _():
        c.session.add_to_other_config(s, s, 'k', 'v')
        assert c.session.get_other_config(s, s) == {'k': 'v'}
        c.session.remove_from_other_config(s, s, 'k')
        assert c.session.get_other_config(s, s) == {}

    @tap.test('test_one_session_can_read_another')
    def _():
        s2 = c.session.login_with_password('root', d.password, '1.1', 'two')
        assert c.session.get_originator(s, s2) == 'two'
        c.session.logout(s2)
        expect_error(lambda: c.session.get_record(s, s2), 'HANDLE_INVALID',
                     ['session', s2])

    # ---- logout ----

    @tap.test('test_logout_twice_is_SESSION_INVALID')
    def _():
        s2 = c.session.login_with_password('root', d.password)
        assert c.session.logout(s2) == ''
        expect_error(lambda: c.session.logout(s2), 'SESSION_INVALID', [s2])

    @tap.test('test_local_logout_ends_the_session')
    def _():
        s2 = c.session.login_with_password('root', d.password)
        assert c.session.local_logout(s2) == ''
        expect_error(lambda: c.pool.get_all(s2), 'SESSION_INVALID', [s2])

    @tap.test('test_logout_ends_only_that_session')
    def _():
        a = c.session.login_with_password('root', d.password)
        b = c.session.login_with_password('root', d.password)
        c.session.logout(a)
        assert c.pool.get_all(b)
        assert c.pool.get_all(s)
        c.session.logout(b)

    @tap.test('test_subject_identifiers_of_local_sessions')
    def _():
        assert c.session.get_all_subject_identifiers(s) == []
        s2 = c.session.login_with_password('root', d.password)
        assert c.session.logout_subject_identifier(s, 'S-1-5-21-nobody') \
            == ''
        assert c.pool.get_all(s2) and c.pool.get_all(s)
        c.session.logout(s2)

    @tap.test('test_concurrent_logins_and_logouts')
    def _():
        got, errs = [], []

        def one():
            cl = d.client()
            try:
                x = cl.session.login_with_password('root', d.password)
                cl.pool.get_all(x)
                got.append(x)
                cl.session.logout(x)
            except Exception as e:
                errs.append(repr(e))
        ts = [threading.Thread(target=one) for _ in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errs, errs[:3]
        assert len(set(got)) == 16, got
        for x in got:
            expect_error(lambda: c.pool.get_all(x), 'SESSION_INVALID', [x])

    @tap.test('test_very_long_credentials_fail_quickly')
    def _():
        t0 = time.time()
        expect_error(lambda: c.session.login_with_password(
            'root', 'p' * (1 << 20)), 'SESSION_AUTHENTICATION_FAILED')
        expect_error(lambda: c.session.login_with_password(
            'u' * (1 << 20), 'p'), 'SESSION_AUTHENTICATION_FAILED')
        assert time.time() - t0 < 10, 'took %.1fs' % (time.time() - t0)
        assert d.alive()

    # ---- 500 sessions per user ----

    @tap.test('test_501st_login_logs_out_the_least_recently_used_session')
    def _():
        # Our own session s is one of root's; it stays the most recently
        # used because nothing else touches the others.
        first = c.session.login_with_password('root', d.password, '1.1',
                                              'first')
        time.sleep(0.05)
        made, errs = [], []
        lock = threading.Lock()
        # s, first and this file's others: start from what exists now
        todo = list(range(500 - 2))
        t0 = time.time()

        def worker():
            cl = d.client(timeout=30)
            while True:
                with lock:
                    if not todo:
                        return
                    todo.pop()
                try:
                    x = cl.session.login_with_password('root', d.password)
                except Exception as e:
                    errs.append(repr(e))
                    return
                with lock:
                    made.append(x)
        ts = [threading.Thread(target=worker)
              for _ in range(max(2, os.cpu_count() or 2))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errs, errs[:3]
        print('# 500 logins in %.1fs' % (time.time() - t0))
        # now root has 500 sessions: s, first and 498 more
        c.pool.get_all(s)          # s is the most recent
        newest = c.session.login_with_password('root', d.password, '1.1',
                                               'newest')
        assert c.pool.get_all(newest), 'the newest session does not work'
        expect_error(lambda: c.pool.get_all(first), 'SESSION_INVALID',
                     [first], 'the least recently used session')
        assert c.pool.get_all(s), 'an active session was logged out'
        alive = 0
        for x in made[-20:]:
            try:
                c.pool.get_all(x)
                alive += 1
            except XenAPIError:
                pass
        assert alive == 20, '%d of the last 20 sessions work' % alive

    # ---- idle expiry (second daemon) ----

    @tap.test('test_idle_session_expires_after_the_idle_timeout')
    def _():
        wait = 4.5 - (time.time() - idle_t0)
        if wait > 0:
            time.sleep(wait)
        expect_error(lambda: ic.pool.get_all(idle_s), 'SESSION_INVALID',
                     [idle_s], 'idle for %.1fs with a 2 s timeout'
                     % (time.time() - idle_t0))

    @tap.test('test_active_session_outlives_the_idle_timeout')
    def _():
        keeper.stop = True
        keeper.join(10)
        assert keeper.error is None, keeper.error
        assert ic.pool.get_all(busy_s), 'the active session expired'

    @tap.test('test_expired_session_record_is_gone')
    def _():
        expect_error(lambda: ic.session.get_record(busy_s, idle_s),
                     'HANDLE_INVALID', ['session', idle_s])

    @tap.test('test_last_active_of_an_active_session_advances')
    def _():
        rec = ic.session.get_record(busy_s, busy_s)
        t = calendar.timegm(time.strptime(rec['last_active'].value,
                                          '%Y%m%dT%H:%M:%SZ'))
        assert t >= idle_t0 + 1, ('last_active %s is the login time, not the '
                                  'last call' % rec['last_active'].value)

    @tap.test('test_new_login_works_after_expiry')
    def _():
        x = ic.session.login_with_password('root', idle.password)
        assert ic.pool.get_all(x)

    # ---- change_password (last: it changes root's password) ----

    @tap.test('test_change_password_with_wrong_old_password_fails')
    def _():
        expect_error(lambda: c.session.change_password(s, 'not-it', 'new-pw'),
                     'SESSION_AUTHENTICATION_FAILED')
        # nothing changed
        x = c.session.login_with_password('root', d.password)
        c.session.logout(x)

    @tap.test('test_change_password_then_the_new_password_works_and_the_old_fails')
    def _():
        new = 'n3w pw \u00e9'
        assert c.session.change_password(s, d.password, new) == ''
        x = c.session.login_with_password('root', new)
        c.session.logout(x)
        expect_error(lambda: c.session.login_with_password('root',
                                                           d.password),
                     'SESSION_AUTHENTICATION_FAILED')
        assert c.pool.get_all(s), 'change_password ended the session'
        d.password = new

    @tap.test('test_changed_password_is_kept_across_restart')
    def _():
        global c, s
        if d.password != 'n3w pw \u00e9':
            raise AssertionError('the password was not changed')
        rc = d.stop()
        assert rc == 0, rc
        d.start()
        c = d.client()
        s = c.session.login_with_password('root', d.password)
        expect_error(lambda: c.session.login_with_password(
            'root', 'it-root-pw'), 'SESSION_AUTHENTICATION_FAILED')

    @tap.test('test_change_password_to_empty_is_refused')
    def _():
        try:
            c.session.change_password(s, d.password, '')
        except XenAPIError as e:
            assert e.code != 'INTERNAL_ERROR', e.details
        else:
            raise AssertionError('an empty password was accepted')
        x = c.session.login_with_password('root', d.password)
        c.session.logout(x)

finally:
    keeper.stop = True
    finish_daemon(idle, 'idle_xapi')
    idle.cleanup()
    finish_daemon(d)
    d.cleanup()
tap.finish()
