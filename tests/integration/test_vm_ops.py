#!/usr/bin/env python3
"""test_vm_ops.py — VM messages besides the power operations, on the
simulator, as a XenAPI client sees them: hotplug of VBDs and VIFs into a
running guest (the simulator gets the device: a VIF's address appears in
the guest metrics, a second disk at a taken position is refused by the
simulator), VM_MISSING_PV_DRIVERS for guests without drivers (refused from
the guest metrics for HVM, by the simulator for PV), DEVICE_ALREADY_*,
CD insert and eject on running and halted VMs, sysrq keys and triggers (a
power button halts the VM through actions_after_shutdown),
assert_can_boot_here and get_possible_hosts with VMs too big for the host,
memory overhead and maximise_memory, the free device slots,
assert_operation_valid, update_allowed_operations, get_boot_record,
query_services and add_to_VCPUs_params_live."""
import os
import socket
import time

from xapitest import (Daemon, expect_error, finish_daemon, full_record,
                      load_idl, start_or_bail, tap)

MiB = 1 << 20
GiB = 1 << 30

model = load_idl()
tmp_ctl = os.path.join('/tmp', 'xapi-sim-ctl-ops-%d.sock' % os.getpid())
d = start_or_bail(Daemon(extra_args=[
    '--shutdown-timeout', '2',
    '--sim-config', 'cpus=4,memory_mib=8192,dom0_memory_mib=1024,'
    'boot_ms=50,shutdown_ms=100,control=%s' % tmp_ctl]))
c = d.client()


def control(line):
    """Sends one command to the simulator's control socket; returns the
    answer's lines."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sk:
        sk.settimeout(5)
        sk.connect(tmp_ctl)
        sk.sendall((line + '\n').encode())
        data = b''
        while True:
            chunk = sk.recv(4096)
            if not chunk:
                break
            data += chunk
            lines = data.decode().split('\n')
            head = lines[0].split()
            if len(lines) > 1 and head[:1] == ['OK'] and len(head) == 2 \
                    and head[1].isdigit():
                if len(lines) - 2 >= int(head[1]):
                    break
            elif data.endswith(b'\n'):
                break
    return data.decode().strip().split('\n')


def sim_stats(vm):
    lines = control('stats %s' % c.VM.get_uuid(s, vm))
    assert lines[0].startswith('OK'), lines
    return dict(l.split('=', 1) for l in lines[1:] if '=' in l)


def wait_for(fn, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError('condition not met in %ss' % timeout)


def new_vm(name, template='Debian Bookworm 12'):
    t = c.VM.get_by_name_label(s, template)[0]
    vm = c.VM.clone(s, t, name)
    c.VM.set_is_a_template(s, vm, False)
    return vm


def new_vdi(name, location):
    """A VDI in the default SR (location is the driver's business: the
    argument only names the disk in the test)."""
    sr = c.pool.get_default_SR(s, c.pool.get_all(s)[0])
    return c.VDI.create(s, full_record(
        model, 'VDI', SR=sr, name_label=name, type='user',
        virtual_size=str(GiB), read_only=False, sharable=False))


def new_vbd(vm, userdevice, vdi='OpaqueRef:NULL', kind='Disk', empty=False):
    return c.VBD.create(s, full_record(
        model, 'VBD', VM=vm, VDI=vdi, userdevice=str(userdevice),
        bootable=False, mode='RO' if kind == 'CD' else 'RW', type=kind,
        unpluggable=True, empty=empty))


def new_vif(vm, device):
    return c.VIF.create(s, full_record(
        model, 'VIF', VM=vm, network=net, device=str(device),
        MAC='02:00:00:00:%02x:%02x' % (len(c.VIF.get_all(s)) % 256, device),
        MTU='1500'))


def guest_networks(vm):
    gm = c.VM.get_guest_metrics(s, vm)
    if gm == 'OpaqueRef:NULL':
        return {}
    return c.VM_guest_metrics.get_networks(s, gm)


def start_with_agent(vm):
    """Starts the VM and waits for its guest agent's first report."""
    c.VM.start(s, vm, False, False)
    wait_for(lambda: c.VM.get_guest_metrics(s, vm) != 'OpaqueRef:NULL')


try:
    t0 = time.time()
    s = d.login(c)
    host = c.host.get_all(s)[0]
    net = c.network.create(s, full_record(model, 'network', name_label='ops',
                                          bridge='xenbr0', MTU='1500'))
    disk0 = new_vdi('disk0', '/var/tmp/ops-disk0.img')
    disk1 = new_vdi('disk1', '/var/tmp/ops-disk1.img')
    disk2 = new_vdi('disk2', '/var/tmp/ops-disk2.img')
    iso = new_vdi('install.iso', '/var/tmp/install.iso')

    # An HVM guest with PV drivers: a disk at 0, an empty CD drive at 3
    # and a VIF at 0.
    vm = new_vm('ops-hvm')
    vbd0 = new_vbd(vm, 0, disk0)
    cd = new_vbd(vm, 3, kind='CD', empty=True)
    vif0 = new_vif(vm, 0)

    @tap.test('test_hotplug_on_a_halted_vm_is_VM_BAD_POWER_STATE')
    def _():
        for fn in (c.VBD.plug, c.VBD.unplug, c.VBD.unplug_force):
            expect_error(lambda: fn(s, vbd0), 'VM_BAD_POWER_STATE',
                         [vm, 'running', 'halted'])
        for fn in (c.VIF.plug, c.VIF.unplug, c.VIF.unplug_force):
            expect_error(lambda: fn(s, vif0), 'VM_BAD_POWER_STATE',
                         [vm, 'running', 'halted'])
        expect_error(lambda: c.VBD.plug(s, 'OpaqueRef:nope'), 'HANDLE_INVALID',
                     ['VBD', 'OpaqueRef:nope'])

    @tap.test('test_allowed_VBD_and_VIF_devices_are_the_free_slots')
    def _():
        assert c.VM.get_allowed_VBD_devices(s, vm) == [
            str(i) for i in range(16) if i not in (0, 3)]
        assert c.VM.get_allowed_VIF_devices(s, vm) == [
            str(i) for i in range(1, 7)]
        extra = new_vbd(vm, 'xvdc', kind='CD', empty=True)
        assert '2' not in c.VM.get_allowed_VBD_devices(s, vm)
        c.VBD.destroy(s, extra)
        expect_error(lambda: c.VM.get_allowed_VIF_devices(s, 'OpaqueRef:x'),
                     'HANDLE_INVALID', ['VM', 'OpaqueRef:x'])

    @tap.test('test_cd_insert_and_eject_on_a_halted_vm_change_the_database')
    def _():
        c.VBD.insert(s, cd, iso)
        rec = c.VBD.get_record(s, cd)
        assert rec['VDI'] == iso and rec['empty'] is False, rec
        expect_error(lambda: c.VBD.insert(s, cd, iso), 'VBD_NOT_EMPTY', [cd])
        c.VBD.eject(s, cd)
        rec = c.VBD.get_record(s, cd)
        assert rec['VDI'] == 'OpaqueRef:NULL' and rec['empty'] is True, rec
        expect_error(lambda: c.VBD.eject(s, cd), 'VBD_IS_EMPTY', [cd])
        expect_error(lambda: c.VBD.insert(s, vbd0, iso),
                     'VBD_NOT_REMOVABLE_MEDIA', [vbd0])
        expect_error(lambda: c.VBD.eject(s, vbd0), 'VBD_NOT_REMOVABLE_MEDIA',
                     [vbd0])
        expect_error(lambda: c.VBD.insert(s, cd, 'OpaqueRef:nodisc'),
                     'HANDLE_INVALID', ['VDI', 'OpaqueRef:nodisc'])

    @tap.test('test_sysrq_and_trigger_need_a_running_vm')
    def _():
        expect_error(lambda: c.VM.send_sysrq(s, vm, 'h'), 'VM_BAD_POWER_STATE',
                     [vm, 'running', 'halted'])
        expect_error(lambda: c.VM.send_trigger(s, vm, 'power'),
                     'VM_BAD_POWER_STATE', [vm, 'running', 'halted'])
        t = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        expect_error(lambda: c.VM.send_sysrq(s, t, 'h'), 'VM_IS_TEMPLATE', [t])

    @tap.test('test_vcpu_params_live_needs_a_running_vm')
    def _():
        expect_error(lambda: c.VM.add_to_VCPUs_params_live(s, vm, 'weight', '512'),
                     'VM_BAD_POWER_STATE', [vm, 'running', 'halted'])

    @tap.test('test_get_boot_record_of_a_halted_vm_is_its_record')
    def _():
        assert c.VM.get_boot_record(s, vm) == c.VM.get_record(s, vm)

    start_with_agent(vm)

    @tap.test('test_devices_of_a_started_vm_are_attached_and_plug_twice_fails')
    def _():
        assert c.VBD.get_currently_attached(s, vbd0) is True
        assert c.VIF.get_currently_attached(s, vif0) is True
        expect_error(lambda: c.VBD.plug(s, vbd0), 'DEVICE_ALREADY_ATTACHED',
                     [vbd0])
        expect_error(lambda: c.VIF.plug(s, vif0), 'DEVICE_ALREADY_ATTACHED',
                     [vif0])

    @tap.test('test_vbd_unplug_and_plug_on_a_running_vm')
    def _():
        c.VBD.unplug(s, vbd0)
        assert c.VBD.get_currently_attached(s, vbd0) is False
        ops = c.VBD.get_allowed_operations(s, vbd0)
        assert 'plug' in ops and 'unplug' not in ops, ops
        expect_error(lambda: c.VBD.unplug(s, vbd0), 'DEVICE_ALREADY_DETACHED',
                     [vbd0])
        expect_error(lambda: c.VBD.unplug_force(s, vbd0),
                     'DEVICE_ALREADY_DETACHED', [vbd0])
        c.VBD.plug(s, vbd0)
        rec = c.VBD.get_record(s, vbd0)
        assert rec['currently_attached'] is True, rec
        assert rec['current_operations'] == {}, rec['current_operations']
        assert 'unplug' in rec['allowed_operations'], rec['allowed_operations']
        assert 'plug' not in rec['allowed_operations']

    @tap.test('test_a_hotplugged_disk_reaches_the_simulator')
    def _():
        a = new_vbd(vm, 1, disk1)
        assert c.VBD.get_currently_attached(s, a) is False
        c.VBD.plug(s, a)
        assert c.VBD.get_currently_attached(s, a) is True
        # A second VBD at the same position: the database does not stop it,
        # the simulator does, because it has the first disk there.
        b = new_vbd(vm, 1, disk2)
        expect_error(lambda: c.VBD.plug(s, b), 'DEVICE_ALREADY_EXISTS', ['1'])
        assert c.VBD.get_currently_attached(s, b) is False
        assert c.VBD.get_current_operations(s, b) == {}
        c.VBD.unplug(s, a)
        c.VBD.plug(s, b)
        assert c.VBD.get_currently_attached(s, b) is True
        c.VBD.unplug_force(s, b)
        assert c.VBD.get_currently_attached(s, b) is False
        c.VBD.destroy(s, a)
        c.VBD.destroy(s, b)

    @tap.test('test_a_hotplugged_vif_reaches_the_guest')
    def _():
        v = new_vif(vm, 2)
        assert '2/ip' not in guest_networks(vm)
        c.VIF.plug(s, v)
        assert c.VIF.get_currently_attached(s, v) is True
        wait_for(lambda: '2/ip' in guest_networks(vm))
        c.VIF.unplug(s, v)
        assert c.VIF.get_currently_attached(s, v) is False
        wait_for(lambda: '2/ip' not in guest_networks(vm))
        expect_error(lambda: c.VIF.unplug(s, v), 'DEVICE_ALREADY_DETACHED', [v])
        c.VIF.plug(s, v)
        c.VIF.unplug_force(s, v)
        assert c.VIF.get_currently_attached(s, v) is False
        c.VIF.destroy(s, v)

    @tap.test('test_async_plug_runs_as_a_task')
    def _():
        c.VBD.unplug(s, vbd0)
        t = c.Async.VBD.plug(s, vbd0)
        wait_for(lambda: c.task.get_status(s, t) != 'pending')
        assert c.task.get_status(s, t) == 'success', c.task.get_record(s, t)
        assert c.VBD.get_currently_attached(s, vbd0) is True
        t = c.Async.VBD.plug(s, vbd0)
        wait_for(lambda: c.task.get_status(s, t) != 'pending')
        assert c.task.get_error_info(s, t) == ['DEVICE_ALREADY_ATTACHED', vbd0]

    @tap.test('test_a_vbd_not_unpluggable_stays')
    def _():
        c.VBD.set_unpluggable(s, vbd0, False)
        expect_error(lambda: c.VBD.unplug(s, vbd0), 'VBD_NOT_UNPLUGGABLE',
                     [vbd0])
        expect_error(lambda: c.VBD.unplug_force(s, vbd0), 'VBD_NOT_UNPLUGGABLE',
                     [vbd0])
        c.VBD.set_unpluggable(s, vbd0, True)

    @tap.test('test_an_hvm_cd_drive_is_not_hotplugged_but_takes_discs')
    def _():
        e = expect_error(lambda: c.VBD.unplug(s, cd), 'OPERATION_NOT_ALLOWED')
        assert 'CDROM' in e[1], e
        c.VBD.insert(s, cd, iso)
        rec = c.VBD.get_record(s, cd)
        assert rec['VDI'] == iso and not rec['empty'], rec
        assert rec['currently_attached'] is True
        assert 'eject' in rec['allowed_operations'], rec['allowed_operations']
        expect_error(lambda: c.VBD.insert(s, cd, iso), 'VBD_NOT_EMPTY', [cd])
        c.VBD.eject(s, cd)
        rec = c.VBD.get_record(s, cd)
        assert rec['empty'] and rec['VDI'] == 'OpaqueRef:NULL', rec
        assert 'insert' in rec['allowed_operations'], rec['allowed_operations']
        expect_error(lambda: c.VBD.eject(s, cd), 'VBD_IS_EMPTY', [cd])

    @tap.test('test_sysrq_reaches_the_guest')
    def _():
        c.VM.send_sysrq(s, vm, 'h')
        c.VM.send_sysrq(s, vm, 'w')
        assert sim_stats(vm)['sysrq'].endswith('hw'), sim_stats(vm)
        expect_error(lambda: c.VM.send_sysrq(s, vm, 'hw'), 'INVALID_VALUE',
                     ['key', 'hw'])
        expect_error(lambda: c.VM.send_sysrq(s, vm, ''), 'INVALID_VALUE',
                     ['key', ''])

    @tap.test('test_an_unknown_trigger_is_INVALID_VALUE')
    def _():
        expect_error(lambda: c.VM.send_trigger(s, vm, 'frobnicate'),
                     'INVALID_VALUE', ['trigger', 'frobnicate'])
        assert c.VM.get_power_state(s, vm) == 'Running'

    @tap.test('test_vcpu_params_live_are_recorded_and_checked')
    def _():
        c.VM.add_to_VCPUs_params_live(s, vm, 'weight', '512')
        c.VM.add_to_VCPUs_params_live(s, vm, 'cap', '50')
        params = c.VM.get_VCPUs_params(s, vm)
        assert params.get('weight') == '512' and params.get('cap') == '50', params
        expect_error(lambda: c.VM.add_to_VCPUs_params_live(s, vm, 'weight', 'x'),
                     'INVALID_VALUE', ['weight', 'x'])
        expect_error(lambda: c.VM.add_to_VCPUs_params_live(s, vm, 'mask', '1,,2'),
                     'INVALID_VALUE', ['mask', '1,,2'])

    @tap.test('test_get_boot_record_of_a_running_vm')
    def _():
        rec = c.VM.get_boot_record(s, vm)
        assert rec['power_state'] == 'Running' and rec['uuid'] == c.VM.get_uuid(s, vm)
        assert set(rec) == set(c.VM.get_record(s, vm))

    @tap.test('test_assert_operation_valid_follows_allowed_operations')
    def _():
        c.VM.assert_operation_valid(s, vm, 'clean_shutdown')
        c.VM.assert_operation_valid(s, vm, 'send_sysrq')
        expect_error(lambda: c.VM.assert_operation_valid(s, vm, 'start'),
                     'VM_BAD_POWER_STATE', [vm, 'halted', 'running'])
        expect_error(lambda: c.VM.assert_operation_valid(s, vm, 'destroy'),
                     'OPERATION_NOT_ALLOWED')
        c.VM.add_to_blocked_operations(s, vm, 'clean_shutdown', 'keep-up')
        expect_error(lambda: c.VM.assert_operation_valid(s, vm, 'clean_shutdown'),
                     'OPERATION_BLOCKED', [vm, 'keep-up'])
        c.VM.remove_from_blocked_operations(s, vm, 'clean_shutdown')
        t = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        expect_error(lambda: c.VM.assert_operation_valid(s, t, 'start'),
                     'VM_IS_TEMPLATE', [t])
        c.VM.assert_operation_valid(s, t, 'clone')

    @tap.test('test_update_allowed_operations_recomputes_vm_and_devices')
    def _():
        fresh = new_vbd(vm, 5, disk2)
        # VBD.create already computes what the new device allows.
        assert sorted(c.VBD.get_allowed_operations(s, fresh)) == ['attach', 'plug']
        c.VM.update_allowed_operations(s, vm)
        assert sorted(c.VBD.get_allowed_operations(s, fresh)) == ['attach', 'plug']
        ops = c.VM.get_allowed_operations(s, vm)
        assert 'clean_shutdown' in ops and 'start' not in ops, ops
        c.VBD.destroy(s, fresh)

    @tap.test('test_query_services_is_for_system_domains')
    def _():
        expect_error(lambda: c.VM.query_services(s, vm), 'NOT_SYSTEM_DOMAIN',
                     [vm])
        dom0 = [r for r, v in c.VM.get_all_records(s).items()
                if v['is_control_domain']][0]
        assert c.VM.query_services(s, dom0) == {}

    # A guest without PV drivers: the HVM one is refused from its (absent)
    # guest metrics, a PV one by the simulator itself.
    bare = new_vm('ops-no-drivers')
    bare_disk = new_vbd(bare, 1, disk1)
    assert control('set %s pv_drivers no' % c.VM.get_uuid(s, bare))[0].startswith('OK')
    bare_pv = new_vm('ops-no-drivers-pv')
    c.VM.set_domain_type(s, bare_pv, 'pv')
    bare_pv_disk = new_vbd(bare_pv, 1, disk2)
    assert control('set %s pv_drivers no' % c.VM.get_uuid(s, bare_pv))[0].startswith('OK')
    c.VM.start(s, bare, False, False)
    c.VM.start(s, bare_pv, False, False)

    @tap.test('test_a_guest_without_pv_drivers_refuses_hotplug')
    def _():
        for v in (bare, bare_pv):
            disk = bare_disk if v == bare else bare_pv_disk
            expect_error(lambda: c.VBD.unplug(s, disk), 'VM_MISSING_PV_DRIVERS',
                         [v])
            assert c.VBD.get_currently_attached(s, disk) is True
            assert c.VBD.get_current_operations(s, disk) == {}
            nv = new_vif(v, 1)
            expect_error(lambda: c.VIF.plug(s, nv), 'VM_MISSING_PV_DRIVERS', [v])
            assert c.VIF.get_currently_attached(s, nv) is False
            c.VIF.destroy(s, nv)
        # Forcing needs no guest: the simulator lets go of the PV disk.
        c.VBD.unplug_force(s, bare_pv_disk)
        assert c.VBD.get_currently_attached(s, bare_pv_disk) is False
        expect_error(lambda: c.VBD.plug(s, bare_pv_disk), 'VM_MISSING_PV_DRIVERS',
                     [bare_pv])

    @tap.test('test_sysrq_without_pv_drivers_is_VM_MISSING_PV_DRIVERS')
    def _():
        expect_error(lambda: c.VM.send_sysrq(s, bare, 'h'),
                     'VM_MISSING_PV_DRIVERS', [bare])

    @tap.test('test_a_pv_guest_has_no_power_button')
    def _():
        expect_error(lambda: c.VM.send_trigger(s, bare_pv, 'power'),
                     'VM_HVM_REQUIRED', [bare_pv])

    @tap.test('test_trigger_power_halts_the_vm_through_actions_after_shutdown')
    def _():
        assert c.VM.get_actions_after_shutdown(s, bare) == 'destroy'
        # The guest has no drivers, but an ACPI button needs none.
        c.VM.send_trigger(s, bare, 'power')
        wait_for(lambda: c.VM.get_power_state(s, bare) == 'Halted')
        rec = c.VM.get_record(s, bare)
        assert rec['domid'] == '-1', rec['domid']
        assert c.VBD.get_currently_attached(s, bare_disk) is False

    @tap.test('test_an_empty_cd_is_hotplugged_into_a_pv_guest')
    def _():
        pv = new_vm('ops-pv')
        c.VM.set_domain_type(s, pv, 'pv')
        start_with_agent(pv)
        drive = new_vbd(pv, 3, kind='CD', empty=True)
        c.VBD.plug(s, drive)
        assert c.VBD.get_currently_attached(s, drive) is True
        c.VBD.insert(s, drive, iso)
        assert c.VBD.get_VDI(s, drive) == iso
        c.VBD.unplug(s, drive)
        assert c.VBD.get_currently_attached(s, drive) is False
        # A drive that is not plugged in takes a disc in the database only.
        c.VBD.eject(s, drive)
        assert c.VBD.get_empty(s, drive) is True
        c.VM.hard_shutdown(s, pv)

    @tap.test('test_cd_insert_on_a_suspended_vm_is_VM_BAD_POWER_STATE')
    def _():
        c.VM.suspend(s, vm)
        expect_error(lambda: c.VBD.insert(s, cd, iso), 'VM_BAD_POWER_STATE',
                     [vm, 'halted, running', 'suspended'])
        c.VM.resume(s, vm, False, False)

    @tap.test('test_compute_memory_overhead_follows_the_xenapi_model')
    def _():
        # 2 GiB, 2 vCPUs, HVM, multiplier 1: 1 + 1 + ceil((512 + 4096) / 256)
        assert c.VM.compute_memory_overhead(s, vm) == str(20 * MiB)
        pv = new_vm('ops-overhead-pv')
        c.VM.set_domain_type(s, pv, 'pv')
        assert c.VM.compute_memory_overhead(s, pv) == str(19 * MiB)
        c.VM.destroy(s, pv)

    @tap.test('test_maximise_memory_fits_memory_and_overhead')
    def _():
        total = 4 * GiB
        exact = int(c.VM.maximise_memory(s, vm, str(total), False))
        approx = int(c.VM.maximise_memory(s, vm, str(total), True))
        assert exact % MiB == 0 and approx % MiB == 0
        assert approx <= exact < total, (approx, exact)
        # m + 2 + ceil((256 * vcpus + 2m) / 256) <= 4096 MiB: with 2 vCPUs
        # m = 4060 fits exactly; allowing for 64 vCPUs, m = 3998.
        assert exact == 4060 * MiB, exact / MiB
        assert approx == 3998 * MiB, approx / MiB
        assert c.VM.maximise_memory(s, vm, '0', False) == '0'

    big = new_vm('ops-big')
    c.VM.set_memory_limits(s, big, str(GiB), str(12 * GiB), str(12 * GiB),
                           str(12 * GiB))

    @tap.test('test_assert_can_boot_here_accepts_a_vm_that_fits')
    def _():
        small = new_vm('ops-small')
        c.VM.assert_can_boot_here(s, small, host)
        assert c.VM.get_possible_hosts(s, small) == [host]
        c.VM.destroy(s, small)

    @tap.test('test_assert_can_boot_here_refuses_a_vm_too_big_for_the_host')
    def _():
        e = expect_error(lambda: c.VM.assert_can_boot_here(s, big, host),
                         'HOST_NOT_ENOUGH_FREE_MEMORY')
        overhead = int(c.VM.compute_memory_overhead(s, big))
        assert e[1] == str(12 * GiB + overhead), e
        # what the simulated host has free: 7 GiB less the running VMs
        assert 0 < int(e[2]) < 7 * GiB - 2 * GiB, e
        assert c.VM.get_possible_hosts(s, big) == []
        # and the start itself agrees
        expect_error(lambda: c.VM.start(s, big, False, False),
                     'HOST_NOT_ENOUGH_FREE_MEMORY')

    @tap.test('test_assert_can_boot_here_refuses_more_vcpus_than_pcpus')
    def _():
        many = new_vm('ops-many-vcpus')
        c.VM.set_VCPUs_max(s, many, '8')
        expect_error(lambda: c.VM.assert_can_boot_here(s, many, host),
                     'HOST_NOT_ENOUGH_PCPUS', ['8', '4'])
        c.VM.add_to_platform(s, many, 'vcpu-unrestricted', 'true')
        c.VM.assert_can_boot_here(s, many, host)
        c.VM.destroy(s, many)

    @tap.test('test_assert_can_boot_here_refuses_templates_and_bad_refs')
    def _():
        t = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
        expect_error(lambda: c.VM.assert_can_boot_here(s, t, host),
                     'VM_IS_TEMPLATE', [t])
        assert c.VM.get_possible_hosts(s, t) == []
        expect_error(lambda: c.VM.assert_can_boot_here(s, vm, 'OpaqueRef:h'),
                     'HANDLE_INVALID', ['host', 'OpaqueRef:h'])

    print('# the tests took %.1fs' % (time.time() - t0))

finally:
    finish_daemon(d)
    d.cleanup()
tap.finish()
