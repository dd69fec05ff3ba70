#!/usr/bin/env python3
"""test_tasks.py — the task engine as a XenAPI client sees it: Async.*
calls answer a task ref at once and their outcome lands in the task
record (status, progress, result as an XML-RPC <value>, error_info,
created/finished, resident_on); client-made tasks with task.create and
the task.set_* messages; task.cancel's states; tasks listed in their
session and destroyed with it; pruning of completed tasks per session."""
import time
import xmlrpc.client

from xapitest import (Daemon, XenAPIError, expect_error, finish_daemon,
                      full_record, load_idl, start_or_bail, tap)

model = load_idl()
d = start_or_bail(Daemon())
c = d.client()


def wait_task(s, t, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        rec = c.task.get_record(s, t)
        if rec['status'] not in ('pending', 'cancelling'):
            return rec
        time.sleep(0.02)
    raise AssertionError('task %s still pending' % t)


def decode_result(text):
    """Decodes a task result the way XenAPI's SDKs do."""
    params, _ = xmlrpc.client.loads(
        '<methodResponse><params><param>%s</param></params></methodResponse>'
        % text)
    return params[0]


def network_record(name):
    rec = full_record(model, 'network')
    rec['name_label'] = name
    return rec


try:
    s = d.login(c)
    host = c.host.get_all(s)[0]
    dom0 = c.host.get_control_domain(s, host)

    @tap.test('test_async_create_returns_a_task_whose_result_is_the_new_ref')
    def _():
        t = c.Async.network.create(s, network_record('async-net'))
        assert t.startswith('OpaqueRef:'), t
        rec = wait_task(s, t)
        assert rec['status'] == 'success', rec
        ref = decode_result(rec['result'])
        assert c.network.get_name_label(s, ref) == 'async-net'
        assert rec['progress'] == 1.0, rec
        assert rec['name_label'] == 'Async.network.create', rec
        assert rec['resident_on'] == host, rec
        assert rec['error_info'] == [], rec
        assert rec['finished'].value >= rec['created'].value, rec

    @tap.test('test_async_failure_lands_in_error_info')
    def _():
        t = c.Async.VM.destroy(s, dom0)
        rec = wait_task(s, t)
        assert rec['status'] == 'failure', rec
        assert rec['error_info'][0] == 'OPERATION_NOT_ALLOWED', rec
        assert rec['result'] == '', rec
        assert c.VM.get_is_control_domain(s, dom0) is True

    @tap.test('test_async_VM_start_of_the_control_domain_fails_the_task')
    def _():
        t = c.Async.VM.start(s, dom0, False, False)
        rec = wait_task(s, t)
        assert rec['status'] == 'failure' and \
            rec['error_info'][0] == 'OPERATION_NOT_ALLOWED', rec

    @tap.test('test_async_checks_arguments_before_making_a_task')
    def _():
        before = len(c.task.get_all(s))
        expect_error(lambda: c.call('Async.VM.destroy', s),
                     'MESSAGE_PARAMETER_COUNT_MISMATCH')
        expect_error(lambda: c.call('Async.VM.destroy', 'OpaqueRef:nope', dom0),
                     'SESSION_INVALID')
        assert len(c.task.get_all(s)) == before

    @tap.test('test_async_result_decodes_to_the_same_value_as_the_sync_call')
    def _():
        sync_ref = c.network.create(s, network_record('sync-net'))
        t = c.Async.network.destroy(s, sync_ref)
        rec = wait_task(s, t)
        assert rec['status'] == 'success', rec
        assert decode_result(rec['result']) == '', rec
        expect_error(lambda: c.network.get_record(s, sync_ref), 'HANDLE_INVALID')

    @tap.test('test_client_task_lifecycle_with_set_messages')
    def _():
        t = c.task.create(s, 'backup', 'nightly backup')
        rec = c.task.get_record(s, t)
        assert rec['status'] == 'pending' and rec['name_label'] == 'backup', rec
        assert rec['name_description'] == 'nightly backup', rec
        assert 'cancel' in rec['allowed_operations'], rec
        c.task.set_progress(s, t, 0.25)
        assert c.task.get_progress(s, t) == 0.25
        expect_error(lambda: c.task.set_progress(s, t, 1.5), 'INVALID_VALUE')
        c.task.set_result(s, t, '<value>done</value>')
        c.task.set_error_info(s, t, ['SOME_ERROR', 'x'])
        c.task.set_status(s, t, 'success')
        rec = c.task.get_record(s, t)
        assert rec['status'] == 'success' and rec['result'] == '<value>done</value>', rec
        assert rec['error_info'] == ['SOME_ERROR', 'x'], rec
        expect_error(lambda: c.task.set_status(s, t, 'exploded'), 'FIELD_TYPE_ERROR')
        c.task.destroy(s, t)
        expect_error(lambda: c.task.get_record(s, t), 'HANDLE_INVALID')
        expect_error(lambda: c.task.destroy(s, t), 'HANDLE_INVALID')

    @tap.test('test_cancel_marks_a_pending_task_cancelling_and_refuses_others')
    def _():
        t = c.task.create(s, 'long', '')
        c.task.cancel(s, t)
        assert c.task.get_status(s, t) == 'cancelling'
        expect_error(lambda: c.task.cancel(s, t), 'OPERATION_NOT_ALLOWED')
        c.task.set_status(s, t, 'cancelled')
        assert c.task.get_status(s, t) == 'cancelled'
        c.task.destroy(s, t)

    @tap.test('test_tasks_are_listed_in_their_session')
    def _():
        t = c.task.create(s, 'mine', '')
        assert t in c.session.get_tasks(s, s)
        c.task.destroy(s, t)
        assert t not in c.session.get_tasks(s, s)

    @tap.test('test_completed_tasks_go_with_their_session')
    def _():
        s2 = d.login(c)
        t = c.Async.network.create(s2, network_record('doomed'))
        wait_task(s2, t)
        c.session.logout(s2)
        expect_error(lambda: c.task.get_record(s, t), 'HANDLE_INVALID')

    @tap.test('test_completed_tasks_are_pruned_beyond_the_bound_per_session')
    def _():
        s3 = d.login(c)
        tasks = []
        for i in range(215):
            # Failing calls make tasks cheaply: no database write each.
            tasks.append(c.Async.network.destroy(s3, 'OpaqueRef:nothing-%d' % i))
        for t in tasks[-5:]:
            wait_task(s3, t)
        time.sleep(0.5)
        mine = [t for t in c.task.get_all(s) if t in tasks]
        assert len(mine) <= 200, len(mine)
        assert tasks[-1] in mine, 'the newest task was pruned'
        first = tasks[0]
        expect_error(lambda: c.task.get_record(s, first), 'HANDLE_INVALID')
        c.session.logout(s3)

    @tap.test('test_task_records_are_not_persisted_across_restart')
    def _():
        t = c.task.create(s, 'volatile', '')
        d.restart()
        c2 = d.client()
        s4 = d.login(c2)
        expect_error(lambda: c2.task.get_record(s4, t), 'HANDLE_INVALID')

finally:
    finish_daemon(d)
    d.cleanup()
tap.finish()
