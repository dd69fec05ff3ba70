#!/usr/bin/env python3
"""test_xe.py — the xe command-line client (cli/xe) against the simulator.

Runs $XAPI_BUILD_DIR/cli/xe against one daemon over its Unix socket (as
root, no password), over TCP with -s/-p/-u/-pw/--nossl, over TLS and with
a ~/.xe file; compares listings with the expected files in xe-expected/
(uuids, refs and times normalised; regenerate on purpose with
XE_REGENERATE=1), runs a XenServer runbook unchanged (install from a
template, add a disk, start, snapshot, export, list with filters, shut
down, import), checks errors, --minimal escaping and the param-* commands,
and prints the coverage of the reference command list
(../shared/reference/xe-commands.json, skipped when absent).  Every xe run
is checked for sanitizer reports on its stderr.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xapitest import (BUILD, TOP, Daemon, SANITIZER_PATTERNS, Skip, check,  # noqa: E402
                      finish_daemon, start_or_bail, tap)

XE = os.path.join(BUILD, 'cli', 'xe')
EXPECTED = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'xe-expected')
REFERENCE = os.path.join(os.path.dirname(TOP), 'shared', 'reference',
                         'xe-commands.json')
REGENERATE = bool(os.environ.get('XE_REGENERATE'))

UUID_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                     r'[0-9a-f]{12}')
REF_RE = re.compile(r'OpaqueRef:[0-9a-f-]+')
TIME_RE = re.compile(r'\d{8}T\d\d:\d\d:\d\dZ')

sanitizer_reports = []


class Result:
    def __init__(self, p):
        self.rc = p.returncode
        self.out = p.stdout.decode('utf-8', 'replace')
        self.err = p.stderr.decode('utf-8', 'replace')

    def __repr__(self):
        return 'rc=%d\nstdout:\n%s\nstderr:\n%s' % (self.rc, self.out,
                                                    self.err)


def normalise(text):
    text = UUID_RE.sub('<uuid>', text)
    text = REF_RE.sub('<ref>', text)
    return TIME_RE.sub('<time>', text)


class Xe:
    """Runs xe against the daemon d in one of its transports."""

    def __init__(self, d, mode='unix', env=None):
        self.d, self.mode, self.extra_env = d, mode, env or {}

    def __call__(self, *args, stdin=None):
        env = dict(os.environ)
        env.pop('XE_PASSWORD', None)
        env['XE_SOCKET'] = self.d.unix_path
        env.update(self.extra_env)
        pre = []
        if self.mode == 'tcp':
            pre = ['-s', '127.0.0.1', '-p', str(self.d.http_port), '--nossl',
                   '-u', 'root', '-pw', self.d.password]
        elif self.mode == 'tls':
            pre = ['-s', '127.0.0.1', '-p', str(self.d.https_port), '-u',
                   'root', '-pw', self.d.password]
        p = subprocess.run([XE] + pre + list(args), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL if stdin is None else stdin,
                           timeout=120)
        r = Result(p)
        if any(pat in r.err for pat in SANITIZER_PATTERNS):
            sanitizer_reports.append('xe %s\n%s' % (' '.join(args), r.err))
        return r

    def ok(self, *args):
        r = self(*args)
        assert r.rc == 0, 'xe %s failed: %r' % (' '.join(args), r)
        return r.out


def compare_expected(name, text, hostname=None):
    """Compares text (normalised) with xe-expected/NAME.  The host's name
    is the machine's, so it is replaced too."""
    path = os.path.join(EXPECTED, name)
    text = normalise(text)
    if hostname:
        text = text.replace('on host: ' + hostname + '\n',
                            'on host: <hostname>\n')
    if REGENERATE or not os.path.exists(path):
        if not REGENERATE:
            raise AssertionError('no expected file %s (run with '
                                 'XE_REGENERATE=1 to write it)' % path)
        os.makedirs(EXPECTED, exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
        return
    with open(path) as f:
        want = f.read()
    assert text == want, 'output differs from %s:\n--- got\n%s--- want\n%s' % (
        name, text, want)


def parse_records(text):
    """Parses xe's record output into a list of {name: value} dicts,
    checking the layout on the way."""
    records, cur = [], None
    for line in text.split('\n'):
        if not line:
            if cur is not None:
                records.append(cur)
                cur = None
            continue
        m = re.match(r'^( *)(\S+) +(\( RO\)|\( RW\)|\(MRO\)|\(MRW\)|\(SRO\)|'
                     r'\(SRW\)): ?(.*)$', line)
        assert m, 'bad record line %r' % line
        if cur is None:
            cur = {}
        cur[m.group(2)] = m.group(4)
    if cur is not None:
        records.append(cur)
    return records


def main():
    if not os.access(XE, os.X_OK):
        tap.skip('test_xe', 'no xe at %s' % XE)
        tap.finish()
    d = start_or_bail(Daemon(tls=True))
    xe = Xe(d)
    tcp = Xe(d, 'tcp')
    tls = Xe(d, 'tls')
    state = {}

    @tap.test('test_xe_vm_list_on_a_new_host_matches_expected')
    def _():
        host = xe.ok('host-param-get', 'uuid=' + d.host_uuid,
                     'param-name=name-label').strip()
        compare_expected('vm-list.txt', xe.ok('vm-list'), host)

    @tap.test('test_xe_host_list_shows_the_host_of_the_ready_line')
    def _():
        out = xe.ok('host-list', '--minimal')
        assert out.strip() == d.host_uuid, out
        recs = parse_records(xe.ok('host-list'))
        assert list(recs[0]) == ['uuid', 'name-label', 'name-description'], recs

    @tap.test('test_xe_sr_and_pool_lists_match_expected')
    def _():
        compare_expected('sr-list.txt', xe.ok('sr-list'))
        compare_expected('pool-list.txt', xe.ok('pool-list'))

    @tap.test('test_xe_record_layout_pads_first_name_right_and_others_left')
    def _():
        out = xe.ok('vm-list', 'params=uuid,name-label,power-state')
        lines = out.split('\n')
        width = len('power-state') + 4
        assert lines[0].startswith('uuid' + ' ' * (width - 4) + ' ( RO): '), lines
        assert lines[1].startswith(' ' * (width - 10) + 'name-label ( RW): '), lines
        assert lines[2].startswith('    power-state ( RO): running'), lines
        assert lines[3] == '', lines

    @tap.test('test_xe_param_list_shows_every_field_with_markers')
    def _():
        dom0 = xe.ok('vm-list', 'is-control-domain=true', '--minimal').strip()
        recs = parse_records(xe.ok('vm-param-list', 'uuid=' + dom0))
        assert len(recs) == 1, recs
        r = recs[0]
        assert r['power-state'] == 'running', r
        assert r['resident-on'] == d.host_uuid, r    # refs print as uuids
        assert r['is-control-domain'] == 'true', r
        out = xe.ok('vm-param-list', 'uuid=' + dom0)
        assert '          other-config (MRW): ' in out or 'other-config (MRW)' in out
        assert 'allowed-operations (SRO)' in out, out

    @tap.test('test_xe_template_list_and_filters')
    def _():
        names = xe.ok('template-list', 'params=name-label', '--minimal')
        assert 'Debian Bookworm 12' in names, names
        one = xe.ok('template-list', 'name-label=Debian Bookworm 12',
                    '--minimal').strip()
        assert UUID_RE.fullmatch(one), one
        state['template'] = one

    # The runbook, as an operator writes it for XenServer.
    @tap.test('test_xe_runbook_install_disk_start_snapshot_export_shutdown')
    def _():
        sr = xe.ok('sr-list', 'name-label=Local storage', '--minimal').strip()
        vm = xe.ok('vm-install', 'template=Debian Bookworm 12',
                   'new-name-label=web01', 'sr-uuid=' + sr).strip()
        assert UUID_RE.fullmatch(vm), vm
        state['vm'] = vm
        xe.ok('vm-param-set', 'uuid=' + vm, 'name-description=front end')
        xe.ok('vm-disk-add', 'vm=web01', 'disk-size=1GiB', 'device=1')
        disks = xe.ok('vm-disk-list', 'vm=web01')
        assert 'Disk 1 VDI:' in disks, disks
        xe.ok('vm-start', 'vm=web01')
        running = xe.ok('vm-list', 'power-state=running', 'params=name-label',
                        '--minimal').strip().split(',')
        assert 'web01' in running, running
        snap = xe.ok('vm-snapshot', 'vm=web01',
                     'new-name-label=web01-before-upgrade').strip()
        assert UUID_RE.fullmatch(snap), snap
        state['snap'] = snap
        listed = xe.ok('snapshot-list', 'snapshot-of=' + vm, '--minimal')
        assert listed.strip() == snap, listed
        xva = os.path.join(d.tmp, 'web01.xva')
        xe.ok('vm-export', 'uuid=' + snap, 'filename=' + xva)
        assert os.path.getsize(xva) > 0
        state['xva'] = xva
        xe.ok('vm-shutdown', 'vm=web01')
        assert xe.ok('vm-param-get', 'uuid=' + vm,
                     'param-name=power-state').strip() == 'halted'
        compare_expected('runbook-vm-list.txt',
                         xe.ok('vm-list', 'name-label=web01'))

    @tap.test('test_xe_vm_import_prints_the_new_uuid')
    def _():
        if 'xva' not in state:
            raise Skip('no export from the runbook')
        out = xe.ok('vm-import', 'filename=' + state['xva']).strip()
        assert UUID_RE.fullmatch(out), out
        assert xe.ok('vm-param-get', 'uuid=' + out,
                     'param-name=name-label').strip() == 'web01-before-upgrade'

    @tap.test('test_xe_snapshot_revert_and_uninstall')
    def _():
        if 'snap' not in state:
            raise Skip('no snapshot from the runbook')
        xe.ok('snapshot-revert', 'snapshot-uuid=' + state['snap'])
        xe.ok('snapshot-uninstall', 'snapshot-uuid=' + state['snap'], '--force')
        assert xe.ok('snapshot-list', 'uuid=' + state['snap'],
                     '--minimal').strip() == ''

    @tap.test('test_xe_clone_copy_and_uninstall')
    def _():
        if 'vm' not in state:
            raise Skip('no VM from the runbook')
        c = xe.ok('vm-clone', 'uuid=' + state['vm'], 'new-name-label=web02',
                  'new-name-description=a clone').strip()
        assert xe.ok('vm-param-get', 'uuid=' + c,
                     'param-name=name-description').strip() == 'a clone'
        cp = xe.ok('vm-copy', 'vm=web02', 'new-name-label=web03').strip()
        assert UUID_RE.fullmatch(cp), cp
        xe.ok('vm-uninstall', 'vm=web03', '--force')
        xe.ok('vm-uninstall', 'uuid=' + c, '--force')
        assert xe.ok('vm-list', 'name-label=web03', '--minimal').strip() == ''

    @tap.test('test_xe_minimal_escapes_commas_and_backslashes')
    def _():
        vm = state.get('vm')
        if not vm:
            raise Skip('no VM from the runbook')
        xe.ok('vm-param-set', 'uuid=' + vm, 'name-label=a,b\\c')
        out = xe.ok('vm-list', 'uuid=' + vm, 'params=name-label', '--minimal')
        assert out == 'a\\,b\\\\c\n', repr(out)
        xe.ok('vm-param-set', 'uuid=' + vm, 'name-label=web01')

    @tap.test('test_xe_param_set_add_remove_clear')
    def _():
        vm = state.get('vm')
        if not vm:
            raise Skip('no VM from the runbook')
        u = 'uuid=' + vm
        xe.ok('vm-param-set', u, 'other-config:owner=ops', 'VCPUs-max=3')
        assert xe.ok('vm-param-get', u, 'param-name=other-config',
                     'param-key=owner') == 'ops\n'
        assert xe.ok('vm-param-get', u, 'param-name=VCPUs-max') == '3\n'
        xe.ok('vm-param-add', u, 'param-name=other-config', 'team=web')
        xe.ok('vm-param-add', u, 'param-name=tags', 'param-key=prod')
        xe.ok('vm-param-add', u, 'param-name=tags', 'param-key=eu')
        assert xe.ok('vm-param-get', u, 'param-name=tags') == 'prod; eu\n'
        oc = xe.ok('vm-param-get', u, 'param-name=other-config')
        assert 'owner: ops' in oc and 'team: web' in oc, oc
        xe.ok('vm-param-remove', u, 'param-name=tags', 'param-key=prod')
        xe.ok('vm-param-remove', u, 'param-name=other-config', 'param-key=owner')
        assert xe.ok('vm-param-get', u, 'param-name=tags') == 'eu\n'
        assert 'owner' not in xe.ok('vm-param-get', u, 'param-name=other-config')
        xe.ok('vm-param-clear', u, 'param-name=tags')
        assert xe.ok('vm-param-get', u, 'param-name=tags') == '\n'
        r = xe('vm-param-set', u, 'power-state=running')
        assert r.rc != 0 and 'read-only' in r.err, r

    @tap.test('test_xe_vdi_sr_network_vif_commands')
    def _():
        sr = xe.ok('sr-list', 'name-label=Local storage', '--minimal').strip()
        vdi = xe.ok('vdi-create', 'sr-uuid=' + sr, 'name-label=scratch',
                    'virtual-size=4MiB').strip()
        assert xe.ok('vdi-param-get', 'uuid=' + vdi,
                     'param-name=virtual-size') == '%d\n' % (4 << 20)
        raw = os.path.join(d.tmp, 'scratch.raw')
        with open(raw, 'wb') as f:
            f.write(b'\x5a' * (4 << 20))
        xe.ok('vdi-import', 'uuid=' + vdi, 'filename=' + raw)
        back = os.path.join(d.tmp, 'scratch.back')
        xe.ok('vdi-export', 'uuid=' + vdi, 'filename=' + back)
        with open(back, 'rb') as f:
            assert f.read() == b'\x5a' * (4 << 20)
        xe.ok('vdi-destroy', 'uuid=' + vdi)
        net = xe.ok('network-create', 'name-label=backend').strip()
        assert UUID_RE.fullmatch(net), net
        if 'vm' in state:
            vif = xe.ok('vif-create', 'vm-uuid=' + state['vm'],
                        'network-uuid=' + net, 'device=0').strip()
            vifs = xe.ok('vm-vif-list', 'uuid=' + state['vm'], '--minimal')
            assert vif in vifs, vifs
            xe.ok('vif-destroy', 'uuid=' + vif)
        xe.ok('network-destroy', 'uuid=' + net)

    @tap.test('test_xe_errors_name_the_xenapi_code_and_fail')
    def _():
        r = xe('vm-param-list', 'uuid=00000000-0000-0000-0000-000000000000')
        assert r.rc != 0 and 'UUID_INVALID' in r.err, r
        assert r.out == '', r
        if 'vm' in state:
            r = xe('vm-shutdown', 'uuid=' + state['vm'])
            assert r.rc != 0 and 'VM_BAD_POWER_STATE' in r.err, r
        r = xe('vm-install', 'template=Debian Bookworm 12')
        assert r.rc != 0 and 'new-name-label' in r.err, r
        r = xe('no-such-command')
        assert r.rc != 0 and 'Unknown command' in r.err, r
        r = xe('vm-list', 'no-such-field=1')
        assert r.rc != 0 and 'no-such-field' in r.err, r
        r = xe('vm-start', 'vm=no-such-vm')
        assert r.rc != 0, r

    @tap.test('test_xe_unsupported_reference_commands_say_so')
    def _():
        r = xe('pool-enable-binary-storage')
        assert r.rc == 2 and 'not supported yet' in r.err, r

    @tap.test('test_xe_tcp_with_password_and_nossl')
    def _():
        assert tcp.ok('host-list', '--minimal').strip() == d.host_uuid
        bad = Xe(d, 'tcp')
        r = subprocess.run([XE, '-s', '127.0.0.1', '-p', str(d.http_port),
                            '--nossl', '-u', 'root', '-pw', 'wrong',
                            'host-list'], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        assert r.returncode != 0 and b'SESSION_AUTHENTICATION_FAILED' in r.stderr
        del bad
        pwf = os.path.join(d.tmp, 'pwf')
        with open(pwf, 'w') as f:
            f.write(d.password + '\n')
        r = subprocess.run([XE, '-s', '127.0.0.1', '-p', str(d.http_port),
                            '--nossl', '-pwf', pwf, 'pool-list', '--minimal'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        assert r.returncode == 0 and UUID_RE.fullmatch(r.stdout.decode().strip())

    @tap.test('test_xe_xmlrpc_protocol_gives_the_same_listing')
    def _():
        xml = Xe(d, env={'XE_PROTOCOL': 'xmlrpc'})
        assert xml.ok('vm-list', 'params=all') == xe.ok('vm-list', 'params=all')
        r = xml('vm-param-list', 'uuid=00000000-0000-0000-0000-000000000000')
        assert r.rc != 0 and 'UUID_INVALID' in r.err, r

    @tap.test('test_xe_tls_by_default_on_remote_hosts')
    def _():
        if not d.https_port:
            raise Skip('daemon without TLS')
        assert tls.ok('host-list', '--minimal').strip() == d.host_uuid

    @tap.test('test_xe_reads_dot_xe_in_home')
    def _():
        home = tempfile.mkdtemp(dir=d.tmp)
        with open(os.path.join(home, '.xe'), 'w') as f:
            f.write('server=127.0.0.1\nport=%d\nnossl=true\nusername=root\n'
                    'password=%s\n' % (d.http_port, d.password))
        rc = Xe(d, env={'HOME': home, 'XE_SOCKET': '/nonexistent'})
        assert rc.ok('host-list', '--minimal').strip() == d.host_uuid

    @tap.test('test_xe_event_wait_returns_when_condition_holds')
    def _():
        if 'vm' not in state:
            raise Skip('no VM from the runbook')
        xe.ok('event-wait', 'class=vm', 'uuid=' + state['vm'],
              'power-state=halted')

    @tap.test('test_xe_one_call_commands_print_their_answer')
    def _():
        out = xe.ok('host-cpu-info')
        assert 'cpu_count: ' in out, out
        free = xe.ok('host-compute-free-memory').strip()
        assert free.isdigit() and int(free) > 0, free
        r = xe('gpu-group-destroy')
        assert r.rc != 0 and 'uuid' in r.err, r

    @tap.test('test_xe_help_lists_and_explains_commands')
    def _():
        out = xe.ok('help', 'vm-install')
        assert 'new-name-label' in out and 'template' in out, out
        out = xe.ok('help', '--all')
        assert 'vm-start' in out and 'Not supported yet' in out, out
        out = xe.ok('help', 'vm-param-set')
        assert 'param-set' in out, out

    @tap.test('test_xe_bash_completion_script_parses')
    def _():
        script = os.path.join(TOP, 'cli', 'xe-completion.bash')
        r = subprocess.run(['bash', '-n', script], stderr=subprocess.PIPE)
        assert r.returncode == 0, r.stderr
        out = xe.ok('--list-commands').split()
        assert 'vm-list' in out and 'vm-install' in out, out[:20]

    # Coverage of the reference command list, as a figure.
    ours = set(xe.ok('--list-commands').split())
    if os.path.exists(REFERENCE):
        with open(REFERENCE) as f:
            ref = [c['name'] for c in json.load(f)]
        have = [n for n in ref if n in ours]
        check('test_xe_coverage: %d of %d reference commands supported '
              '(%.0f%%); %d commands in xe in all (with the generated '
              '<class>-* commands)' % (len(have), len(ref),
                                       100.0 * len(have) / len(ref),
                                       len(ours)), True)
    else:
        tap.skip('test_xe_coverage_of_reference_commands',
                 'no %s' % REFERENCE)

    check('test_xe_runs_have_no_sanitizer_report', not sanitizer_reports,
          '\n----\n'.join(sanitizer_reports[:3]))
    finish_daemon(d)
    d.cleanup()
    tap.finish()


if __name__ == '__main__':
    main()
