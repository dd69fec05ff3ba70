#!/usr/bin/env python3
"""test_vm_lifecycle.py — VM power operations on the simulator, as a
XenAPI client sees them: a VM made from a default template is started,
paused and unpaused, rebooted, suspended and resumed, shut down; every
illegal step gets XenAPI's error with its parameters (VM_BAD_POWER_STATE
[vm, expected, actual], VM_IS_TEMPLATE, OTHER_OPERATION_IN_PROGRESS,
HOST_NOT_ENOUGH_FREE_MEMORY); guests that ignore shutdown requests time
out (VM_SHUTDOWN_TIMEOUT) and VM.shutdown falls back to a hard shutdown;
crashes injected through the simulator's control socket are handled as
actions_after_crash says; allowed_operations and current_operations follow
the state; guest metrics appear; a restart of the toolstack finds the
simulator's domains gone and records the VMs as halted."""
import os
import shutil
import socket
import subprocess
import threading
import time

from xapitest import (Daemon, XenAPIError, expect_error, finish_daemon,
                      load_idl, start_or_bail, tap)

model = load_idl()
tmp_ctl = os.path.join('/tmp', 'xapi-sim-ctl-%d.sock' % os.getpid())
d = start_or_bail(Daemon(extra_args=[
    '--shutdown-timeout', '2',
    '--sim-config', 'cpus=4,memory_mib=8192,dom0_memory_mib=1024,'
    'boot_ms=50,shutdown_ms=100,control=%s' % tmp_ctl]))
c = d.client()


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


def wait_for(fn, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError('condition not met in %ss' % timeout)


def new_vm(s, name, template='Debian Bookworm 12'):
    t = c.VM.get_by_name_label(s, template)[0]
    vm = c.VM.clone(s, t, name)
    c.VM.set_is_a_template(s, vm, False)
    return vm


try:
    s = d.login(c)
    host = c.host.get_all(s)[0]

    @tap.test('test_default_templates_exist_and_cannot_start')
    def _():
        names = {r['name_label'] for r in c.VM.get_all_records(s).values()
                 if r['is_a_template']}
        for want in ('Other install media', 'Debian Bookworm 12',
                     'Ubuntu Noble Numbat 24.04', 'Red Hat Enterprise Linux 9',
                     'Windows 10 (64-bit)', 'Windows 11',
                     'Windows Server 2019 (64-bit)',
                     'Windows Server 2022 (64-bit)'):
            assert want in names, (want, sorted(names))
        t = c.VM.get_by_name_label(s, 'Windows 11')[0]
        rec = c.VM.get_record(s, t)
        assert rec['is_default_template'] and rec['HVM_boot_params']['firmware'] == 'uefi'
        assert '<restrictions>' in rec['recommendations']
        assert 'disks' in rec['other_config']
        assert 'start' not in rec['allowed_operations'], rec['allowed_operations']
        expect_error(lambda: c.VM.start(s, t, False, False), 'VM_IS_TEMPLATE', [t])

    @tap.test('test_clone_of_a_template_is_a_halted_template_then_a_vm')
    def _():
        t = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        vm = c.VM.clone(s, t, 'clone-1')
        rec = c.VM.get_record(s, vm)
        assert rec['is_a_template'] and not rec['is_default_template'], rec
        assert rec['power_state'] == 'Halted' and rec['parent'] == t, rec
        assert 'default_template' not in rec['other_config'], rec['other_config']
        c.VM.set_is_a_template(s, vm, False)
        assert 'start' in c.VM.get_allowed_operations(s, vm)
        c.VM.destroy(s, vm)

    vm = new_vm(s, 'life-1')

    @tap.test('test_start_makes_the_vm_running_with_a_domain_on_this_host')
    def _():
        c.VM.start(s, vm, False, False)
        rec = c.VM.get_record(s, vm)
        assert rec['power_state'] == 'Running', rec['power_state']
        assert int(rec['domid']) > 0, rec['domid']
        assert rec['resident_on'] == host
        assert vm in c.host.get_resident_VMs(s, host)
        assert rec['current_operations'] == {}, rec['current_operations']
        assert 'clean_shutdown' in rec['allowed_operations']
        assert 'start' not in rec['allowed_operations']
        assert len(rec['consoles']) == 1
        m = c.VM_metrics.get_record(s, rec['metrics'])
        assert m['state'] == ['running'], m['state']

    @tap.test('test_guest_metrics_appear_once_the_guest_agent_runs')
    def _():
        gm = wait_for(lambda: (lambda g: g if g != 'OpaqueRef:NULL' else None)(
            c.VM.get_guest_metrics(s, vm)))
        rec = c.VM_guest_metrics.get_record(s, gm)
        assert rec['PV_drivers_detected'] is True, rec
        assert rec['os_version'].get('distro') == 'debian', rec['os_version']

    @tap.test('test_illegal_steps_get_VM_BAD_POWER_STATE_with_its_parameters')
    def _():
        expect_error(lambda: c.VM.start(s, vm, False, False),
                     'VM_BAD_POWER_STATE', [vm, 'halted', 'running'])
        expect_error(lambda: c.VM.unpause(s, vm),
                     'VM_BAD_POWER_STATE', [vm, 'paused', 'running'])
        expect_error(lambda: c.VM.resume(s, vm, False, False),
                     'VM_BAD_POWER_STATE', [vm, 'suspended', 'running'])
        expect_error(lambda: c.VM.destroy(s, vm), 'VM_BAD_POWER_STATE')

    @tap.test('test_pause_and_unpause')
    def _():
        c.VM.pause(s, vm)
        assert c.VM.get_power_state(s, vm) == 'Paused'
        assert 'unpause' in c.VM.get_allowed_operations(s, vm)
        c.VM.unpause(s, vm)
        assert c.VM.get_power_state(s, vm) == 'Running'

    @tap.test('test_clean_reboot_gives_a_new_domain')
    def _():
        before = c.VM.get_domid(s, vm)
        c.VM.clean_reboot(s, vm)
        assert c.VM.get_power_state(s, vm) == 'Running'
        assert c.VM.get_domid(s, vm) != before

    @tap.test('test_hard_reboot')
    def _():
        before = c.VM.get_domid(s, vm)
        c.VM.hard_reboot(s, vm)
        assert c.VM.get_power_state(s, vm) == 'Running'
        assert c.VM.get_domid(s, vm) != before

    @tap.test('test_suspend_and_resume')
    def _():
        c.VM.suspend(s, vm)
        rec = c.VM.get_record(s, vm)
        assert rec['power_state'] == 'Suspended', rec['power_state']
        assert rec['domid'] == '-1' and rec['resident_on'] == 'OpaqueRef:NULL'
        assert 'resume' in rec['allowed_operations']
        c.VM.resume(s, vm, False, False)
        assert c.VM.get_power_state(s, vm) == 'Running'

    @tap.test('test_clean_shutdown_halts_the_vm')
    def _():
        c.VM.clean_shutdown(s, vm)
        rec = c.VM.get_record(s, vm)
        assert rec['power_state'] == 'Halted' and rec['domid'] == '-1', rec
        assert rec['consoles'] == [], rec['consoles']
        assert vm not in c.host.get_resident_VMs(s, host)

    @tap.test('test_a_second_operation_meanwhile_is_OTHER_OPERATION_IN_PROGRESS')
    def _():
        c.VM.start(s, vm, False, False)
        uuid = c.VM.get_uuid(s, vm)
        assert control('set %s shutdown_ms 1500' % uuid).startswith('OK')
        t = c.Async.VM.clean_shutdown(s, vm)
        wait_for(lambda: c.VM.get_current_operations(s, vm))
        ops = c.VM.get_current_operations(s, vm)
        assert list(ops.values()) == ['clean_shutdown'], ops
        e = expect_error(lambda: c.VM.hard_shutdown(s, vm),
                         'OTHER_OPERATION_IN_PROGRESS')
        assert e[1:3] == ['VM', vm], e
        wait_for(lambda: c.task.get_status(s, t) != 'pending')
        assert c.task.get_status(s, t) == 'success', c.task.get_record(s, t)
        assert c.VM.get_power_state(s, vm) == 'Halted'
        control('set %s shutdown_ms 100' % uuid)

    @tap.test('test_a_guest_that_ignores_shutdown_times_out_and_shutdown_falls_back')
    def _():
        c.VM.start(s, vm, False, False)
        uuid = c.VM.get_uuid(s, vm)
        assert control('set %s ignore_shutdown yes' % uuid).startswith('OK')
        expect_error(lambda: c.VM.clean_shutdown(s, vm), 'VM_SHUTDOWN_TIMEOUT')
        assert c.VM.get_power_state(s, vm) == 'Running'
        c.VM.shutdown(s, vm)
        assert c.VM.get_power_state(s, vm) == 'Halted'
        control('set %s ignore_shutdown no' % uuid)

    @tap.test('test_the_lifecycle_through_tasks_is_seen_in_event_from')
    def _():
        w = d.client()
        ws = d.login(w)
        token = w.call('event.from', ws, ['vm/%s' % vm], '', 5.0)['token']
        states = []
        done = threading.Event()

        def watch():
            nonlocal token
            while not done.is_set():
                batch = w.call('event.from', ws, ['vm/%s' % vm], token, 1.0)
                token = batch['token']
                for ev in batch['events']:
                    ps = ev['snapshot']['power_state']
                    if ev['ref'] == vm and (not states or states[-1] != ps):
                        states.append(ps)

        th = threading.Thread(target=watch)
        th.start()
        try:
            for op in ('start', 'pause', 'unpause', 'clean_shutdown'):
                args = (s, vm, False, False) if op == 'start' else (s, vm)
                t = getattr(c.Async.VM, op)(*args)
                wait_for(lambda: c.task.get_status(s, t) != 'pending')
                assert c.task.get_status(s, t) == 'success', c.task.get_record(s, t)
                # Let the watcher see each state before the next change, so
                # that collapsing (correctly) does not merge them.
                time.sleep(0.3)
        finally:
            done.set()
            th.join()
        # The first event may be the VM, still halted, marked as starting.
        while states and states[0] == 'Halted':
            states.pop(0)
        assert states == ['Running', 'Paused', 'Running', 'Halted'], states

    @tap.test('test_progress_of_a_long_clean_shutdown_moves')
    def _():
        c.VM.start(s, vm, False, False)
        uuid = c.VM.get_uuid(s, vm)
        control('set %s shutdown_ms 1500' % uuid)
        t = c.Async.VM.clean_shutdown(s, vm)
        seen = []
        while c.task.get_status(s, t) == 'pending':
            seen.append(c.task.get_progress(s, t))
            time.sleep(0.1)
        control('set %s shutdown_ms 100' % uuid)
        assert c.task.get_status(s, t) == 'success', c.task.get_record(s, t)
        inner = [p for p in seen if 0 < p < 1]
        assert len(set(inner)) >= 3 and inner == sorted(inner), seen
        assert c.task.get_progress(s, t) == 1.0

    @tap.test('test_cancel_stops_a_clean_shutdown_at_a_safe_point')
    def _():
        c.VM.start(s, vm, False, False)
        uuid = c.VM.get_uuid(s, vm)
        control('set %s ignore_shutdown yes' % uuid)
        t = c.Async.VM.clean_shutdown(s, vm)
        wait_for(lambda: c.VM.get_current_operations(s, vm))
        c.task.cancel(s, t)
        wait_for(lambda: c.task.get_status(s, t) not in ('pending', 'cancelling'))
        rec = c.task.get_record(s, t)
        assert rec['status'] == 'cancelled', rec
        assert rec['error_info'] == ['TASK_CANCELLED', t], rec['error_info']
        assert c.VM.get_power_state(s, vm) == 'Running'
        assert c.VM.get_current_operations(s, vm) == {}
        control('set %s ignore_shutdown no' % uuid)
        c.VM.hard_shutdown(s, vm)

    @tap.test('test_a_reboot_shows_its_steps_as_subtasks')
    def _():
        c.VM.start(s, vm, False, False)
        t = c.Async.VM.clean_reboot(s, vm)
        wait_for(lambda: c.task.get_status(s, t) != 'pending')
        rec = c.task.get_record(s, t)
        assert rec['status'] == 'success', rec
        subs = [c.task.get_record(s, x) for x in rec['subtasks']]
        assert [x['name_label'] for x in subs] == ['shutdown', 'start'] or \
            sorted(x['name_label'] for x in subs) == ['shutdown', 'start'], subs
        assert all(x['status'] == 'success' and x['subtask_of'] == t
                   for x in subs), subs
        c.VM.hard_shutdown(s, vm)

    @tap.test('test_a_crash_restarts_or_destroys_as_actions_after_crash_says')
    def _():
        c.VM.set_actions_after_crash(s, vm, 'restart')
        c.VM.start(s, vm, False, False)
        domid = c.VM.get_domid(s, vm)
        assert control('crash %s' % domid).startswith('OK')
        wait_for(lambda: c.VM.get_domid(s, vm) not in (domid, '-1'))
        assert c.VM.get_power_state(s, vm) == 'Running'
        c.VM.set_actions_after_crash(s, vm, 'destroy')
        assert control('crash %s' % c.VM.get_domid(s, vm)).startswith('OK')
        wait_for(lambda: c.VM.get_power_state(s, vm) == 'Halted')

    @tap.test('test_a_guest_that_shuts_itself_down_is_halted')
    def _():
        c.VM.start(s, vm, False, False)
        domid = c.VM.get_domid(s, vm)
        assert control('guest-shutdown %s poweroff' % domid).startswith('OK')
        wait_for(lambda: c.VM.get_power_state(s, vm) == 'Halted')

    @tap.test('test_start_fails_with_HOST_NOT_ENOUGH_FREE_MEMORY')
    def _():
        big = new_vm(s, 'too-big')
        size = str(64 * 2 ** 30)
        rec = c.VM.get_record(s, big)
        # The memory setters with behaviour come with their own work; the
        # generic record of a clone can be made big through VM.create.
        rec2 = {k: v for k, v in rec.items()}
        for k in ('memory_static_max', 'memory_dynamic_max',
                  'memory_dynamic_min'):
            rec2[k] = size
        for k in ('uuid', 'allowed_operations', 'current_operations',
                  'power_state', 'resident_on', 'domid', 'metrics',
                  'guest_metrics', 'VBDs', 'VIFs', 'consoles'):
            rec2.pop(k, None)
        rec2['name_label'] = 'too-big-2'
        big2 = c.VM.create(s, rec2)
        e = expect_error(lambda: c.VM.start(s, big2, False, False),
                         'HOST_NOT_ENOUGH_FREE_MEMORY')
        assert int(e[1]) >= 64 * 2 ** 30, e
        assert c.VM.get_power_state(s, big2) == 'Halted'
        assert c.VM.get_current_operations(s, big2) == {}

    @tap.test('test_two_clients_starting_the_same_vm_one_wins')
    def _():
        results = []

        def starter():
            cc = d.client()
            try:
                cc.VM.start(s, vm, False, False)
                results.append('ok')
            except XenAPIError as e:
                results.append(e.details[0])

        threads = [threading.Thread(target=starter) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results)[0] != 'ok' or results.count('ok') == 1, results
        assert results.count('ok') == 1, results
        assert set(results) - {'ok'} <= {'VM_BAD_POWER_STATE',
                                         'OTHER_OPERATION_IN_PROGRESS'}, results
        c.VM.hard_shutdown(s, vm)

    @tap.test('test_memory_setters_keep_the_limits_ordered')
    def _():
        m = c.VM.get_record(s, vm)
        assert m['power_state'] == 'Halted', m['power_state']
        gib = 2 ** 30
        c.VM.set_memory_limits(s, vm, str(gib // 2), str(4 * gib), str(gib),
                               str(2 * gib))
        r = c.VM.get_record(s, vm)
        assert (r['memory_static_min'], r['memory_dynamic_min'],
                r['memory_dynamic_max'], r['memory_static_max']) == \
            (str(gib // 2), str(gib), str(2 * gib), str(4 * gib)), r
        expect_error(lambda: c.VM.set_memory_limits(
            s, vm, str(gib), str(gib), str(2 * gib), str(2 * gib)),
            'MEMORY_CONSTRAINT_VIOLATION')
        expect_error(lambda: c.VM.set_memory_dynamic_max(s, vm, str(8 * gib)),
                     'MEMORY_CONSTRAINT_VIOLATION')
        c.VM.set_memory_static_range(s, vm, str(gib // 2), str(3 * gib))
        c.VM.set_memory(s, vm, str(2 * gib))
        r = c.VM.get_record(s, vm)
        assert r['memory_static_max'] == r['memory_dynamic_max'] == \
            r['memory_dynamic_min'] == str(2 * gib), r

    @tap.test('test_vcpu_setters_and_live_changes')
    def _():
        expect_error(lambda: c.VM.set_VCPUs_at_startup(s, vm, '8'),
                     'INVALID_VALUE')
        c.VM.set_VCPUs_max(s, vm, '4')
        c.VM.set_VCPUs_at_startup(s, vm, '2')
        expect_error(lambda: c.VM.set_VCPUs_max(s, vm, '1'), 'INVALID_VALUE')
        c.VM.start(s, vm, False, False)
        expect_error(lambda: c.VM.set_VCPUs_max(s, vm, '6'),
                     'VM_BAD_POWER_STATE')
        expect_error(lambda: c.VM.set_memory_static_max(s, vm, str(2 ** 32)),
                     'VM_BAD_POWER_STATE')
        wait_for(lambda: c.VM.get_guest_metrics(s, vm) != 'OpaqueRef:NULL')
        c.VM.set_VCPUs_number_live(s, vm, '3')
        m = c.VM.get_metrics(s, vm)
        assert c.VM_metrics.get_VCPUs_number(s, m) == '3'
        expect_error(lambda: c.VM.set_VCPUs_number_live(s, vm, '9'),
                     'INVALID_VALUE')
        gib = 2 ** 30
        c.VM.set_memory_dynamic_range(s, vm, str(gib), str(2 * gib))
        c.VM.set_memory_target_live(s, vm, str(gib + gib // 2))
        assert c.VM.get_memory_target(s, vm) == str(gib + gib // 2)
        expect_error(lambda: c.VM.set_memory_target_live(s, vm, str(64 * gib)),
                     'MEMORY_CONSTRAINT_VIOLATION')
        c.VM.hard_shutdown(s, vm)

    @tap.test('test_power_state_reset_and_destroy')
    def _():
        c.VM.start(s, vm, True, False)
        assert c.VM.get_power_state(s, vm) == 'Paused'
        c.VM.power_state_reset(s, vm)
        assert c.VM.get_power_state(s, vm) == 'Halted'
        c.VM.destroy(s, vm)
        expect_error(lambda: c.VM.get_record(s, vm), 'HANDLE_INVALID')

    def nbd_uri(vbd):
        """The socket of a plugged VBD's block server (storage.c keeps it
        in STATE_DIR/tapdisk/VBD-UUID.sock)."""
        path = os.path.join(d.state_dir, 'tapdisk',
                            c.VBD.get_uuid(s, vbd) + '.sock')
        assert os.path.exists(path), 'no block server socket %s' % path
        return 'nbd+unix:///?socket=' + path

    def running_on(vm):
        rec = c.VM.get_record(s, vm)
        assert rec['power_state'] == 'Running', rec['power_state']
        assert rec['current_operations'] == {}, rec['current_operations']
        assert 'pool_migrate' in rec['allowed_operations']
        assert rec['resident_on'] == host
        if rec['metrics'] != 'OpaqueRef:NULL':
            m = c.VM_metrics.get_record(s, rec['metrics'])
            assert m['state'] == ['running'], m['state']
        return int(rec['domid'])

    @tap.test('test_pool_migrate_to_this_host_gives_a_new_running_domain')
    def _():
        vm = new_vm(s, 'mig-1')
        c.VM.start(s, vm, False, False)
        old = running_on(vm)
        c.VM.pool_migrate(s, vm, host, {'live': 'true'})
        new = running_on(vm)
        assert new != old, (old, new)
        uuid = c.VM.get_uuid(s, vm)
        domids = [int(l.split()[0]) for l in control('list').splitlines()
                  if uuid in l]
        assert domids == [new], (old, new, domids)
        # The new domain is the VM: it shuts down cleanly.
        c.VM.clean_shutdown(s, vm)
        assert c.VM.get_power_state(s, vm) == 'Halted'
        c.VM.destroy(s, vm)

    @tap.test('test_async_pool_migrate_moves_a_vm_with_a_disk_still_served')
    def _():
        vm = new_vm(s, 'mig-disk')
        c.VM.remove_from_other_config(s, vm, 'disks')
        c.VM.add_to_other_config(
            s, vm, 'disks', '<provision><disk device="0" size="%d" sr="" '
            'bootable="true" type="system"/></provision>' % (16 << 20))
        c.VM.provision(s, vm)
        vbd = [b for b in c.VM.get_VBDs(s, vm)
               if c.VBD.get_type(s, b) == 'Disk'][0]
        c.VM.start(s, vm, False, False)
        old = running_on(vm)
        uri = nbd_uri(vbd)
        have_qemu_io = shutil.which('qemu-io') is not None
        if have_qemu_io:
            r = subprocess.run(['qemu-io', '-f', 'raw', '-c',
                                'write -P 0x5a 4096 65536', uri],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        t = c.Async.VM.pool_migrate(s, vm, host, {'live': 'true'})
        wait_for(lambda: c.task.get_status(s, t) != 'pending')
        rec = c.task.get_record(s, t)
        assert rec['status'] == 'success', rec
        assert float(rec['progress']) == 1.0, rec['progress']
        new = running_on(vm)
        assert new != old, (old, new)
        assert c.VBD.get_currently_attached(s, vbd) is True
        # The same block server, never detached, serves the same data.
        assert nbd_uri(vbd) == uri
        if have_qemu_io:
            r = subprocess.run(['qemu-io', '-f', 'raw', '-c',
                                'read -P 0x5a 4096 65536', uri],
                               capture_output=True, text=True)
            assert r.returncode == 0 and 'Pattern verification failed' \
                not in r.stdout, (r.stdout, r.stderr)
        c.VM.hard_shutdown(s, vm)
        assert c.VBD.get_currently_attached(s, vbd) is False
        c.VM.destroy(s, vm)

    @tap.test('test_pool_migrate_refuses_halted_vms_templates_and_busy_vms')
    def _():
        vm = new_vm(s, 'mig-err')
        expect_error(lambda: c.VM.pool_migrate(s, vm, host, {}),
                     'VM_BAD_POWER_STATE', [vm, 'running', 'halted'])
        t = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        expect_error(lambda: c.VM.pool_migrate(s, t, host, {}),
                     'VM_IS_TEMPLATE', [t])
        expect_error(lambda: c.VM.pool_migrate(s, vm, 'OpaqueRef:nohost', {}),
                     'HANDLE_INVALID')
        c.VM.start(s, vm, False, False)
        uuid = c.VM.get_uuid(s, vm)
        assert control('set %s shutdown_ms 1500' % uuid).startswith('OK')
        task = c.Async.VM.clean_shutdown(s, vm)
        wait_for(lambda: c.VM.get_current_operations(s, vm))
        e = expect_error(lambda: c.VM.pool_migrate(s, vm, host, {}),
                         'OTHER_OPERATION_IN_PROGRESS')
        assert e[1:3] == ['VM', vm], e
        wait_for(lambda: c.task.get_status(s, task) != 'pending')
        assert c.VM.get_power_state(s, vm) == 'Halted'
        c.VM.destroy(s, vm)

    @tap.test('test_pool_migrate_that_cannot_fit_leaves_the_vm_running')
    def _():
        # Both copies live on this host during the migration: a VM using
        # more than half the free memory cannot be migrated here.
        rec = c.VM.get_record(s, new_vm(s, 'mig-big-tpl'))
        size = str(4 * 2 ** 30)
        for k in ('memory_static_max', 'memory_dynamic_max',
                  'memory_dynamic_min'):
            rec[k] = size
        for k in ('uuid', 'allowed_operations', 'current_operations',
                  'power_state', 'resident_on', 'domid', 'metrics',
                  'guest_metrics', 'VBDs', 'VIFs', 'consoles'):
            rec.pop(k, None)
        rec['name_label'] = 'mig-big'
        vm = c.VM.create(s, rec)
        c.VM.start(s, vm, False, False)
        old = running_on(vm)
        e = expect_error(lambda: c.VM.pool_migrate(s, vm, host, {}),
                         'VM_MIGRATE_FAILED')
        assert e[1] == vm, e
        assert running_on(vm) == old
        c.VM.clean_shutdown(s, vm)
        c.VM.destroy(s, vm)

    @tap.test('test_after_a_restart_vms_without_domains_are_halted')
    def _():
        vm2 = new_vm(s, 'survivor')
        c.VM.start(s, vm2, False, False)
        d.restart()
        c2 = d.client()
        s2 = d.login(c2)
        rec = c2.VM.get_record(s2, vm2)
        assert rec['power_state'] == 'Halted', rec['power_state']
        assert rec['domid'] == '-1'
        c2.VM.start(s2, vm2, False, False)
        assert c2.VM.get_power_state(s2, vm2) == 'Running'
        c2.VM.hard_shutdown(s2, vm2)

finally:
    finish_daemon(d)
    d.cleanup()
    try:
        os.unlink(tmp_ctl)
    except OSError:
        pass
tap.finish()
