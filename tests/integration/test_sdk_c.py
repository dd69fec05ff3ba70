#!/usr/bin/env python3
"""test_sdk_c.py — the C SDK (sdk/c/, libxenserver) against the toolstack
on the simulator: runs the three examples built in
$XAPI_BUILD_DIR/sdk/c/examples (list VMs, start and shut down a VM, watch
events) over TCP and over the Unix socket and checks what they print
against what the API says; then installs the SDK into a temporary
DESTDIR, builds sdk/c/tests/sdk-check.c the way an application would
(installed headers, `pkg-config --cflags --libs xenserver`; once against
the shared and once against the static library) and passes its TAP lines
through (it also checks decoding against canned responses).  Every program's stderr must be free of sanitizer reports.  Skips,
with the reason, what this machine cannot build."""
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time

from xapitest import (BUILD, TOP, Daemon, SANITIZER_PATTERNS, Skip, check,
                      finish_daemon, load_idl, start_or_bail, tap)

EXAMPLES = os.path.join(BUILD, 'sdk', 'c', 'examples')
LIST_VMS = os.path.join(EXAMPLES, 'list-vms')
START_VM = os.path.join(EXAMPLES, 'start-vm')
WATCH_EVENTS = os.path.join(EXAMPLES, 'watch-events')
SDK_SRC = os.path.join(TOP, 'sdk', 'c')


def run(args, timeout=60):
    return subprocess.run(args, capture_output=True, text=True,
                          timeout=timeout)


def assert_clean(p, what):
    """The program's stderr has no sanitizer report."""
    for pat in SANITIZER_PATTERNS:
        assert pat not in p.stderr, '%s: sanitizer report:\n%s' % (
            what, p.stderr[-3000:])


def assert_ok(p, what):
    assert_clean(p, what)
    assert p.returncode == 0, '%s exited %d; stdout:\n%s\nstderr:\n%s' % (
        what, p.returncode, p.stdout[-2000:], p.stderr[-2000:])


def san_cflags():
    """The sanitizer flags the build directory was configured with: a
    program linking the SDK of an ASan build needs them too."""
    try:
        with open(os.path.join(BUILD, 'Makefile')) as f:
            for line in f:
                if line.startswith('SAN_CFLAGS ='):
                    return line.split('=', 1)[1].split()
    except OSError:
        pass
    return []




@tap.test('test_library_exports_a_function_for_every_api_message')
def _():
    lib = os.path.join(BUILD, 'sdk', 'c', 'libxenserver.so')
    if not shutil.which('nm'):
        raise Skip('nm (binutils) not found')
    p = run(['nm', '-D', '--defined-only', lib])
    assert p.returncode == 0, p.stderr
    # Names carry their version: xen_vm_start@@XENSERVER_1.
    exported = {l.split()[-1].split('@')[0] for l in p.stdout.splitlines()
                if l.strip()}
    assert all(n.startswith('xen_') or n.startswith('XENSERVER_')
               for n in exported), sorted(n for n in exported
                                          if not n.startswith('xen_'))[:20]
    low = lambda n: re.sub(r'[^a-z0-9_]', '_', n.lower())
    want, n_async = set(), 0
    for cls in load_idl().classes:
        if cls.lifecycle == 'removed':
            continue
        for m in cls.messages:
            if m.hidden or m.lifecycle == 'removed':
                continue
            name = 'xen_%s_%s' % (low(cls.name), low(m.name))
            want.add(name)
            if m.async_:
                want.add(name + '_async')
                n_async += 1
    missing = sorted(want - exported)
    print('# %d message functions (%d async variants) exported'
          % (len(want & exported), n_async))
    assert not missing, missing[:20]


if not all(os.access(p, os.X_OK) for p in (LIST_VMS, START_VM, WATCH_EVENTS)):
    tap.skip('test_sdk_c_examples', 'examples not built in %s (is '
             'libcurl4-openssl-dev installed?)' % EXAMPLES)
    tap.finish()

d = start_or_bail(Daemon(tls=True, extra_args=[
    '--sim-config', 'boot_ms=50,shutdown_ms=50']))
c = d.client()
try:
    s = d.login(c)
    template = c.VM.get_by_name_label(s, 'Debian Bookworm 12')[0]
    vm = c.VM.clone(s, template, 'sdk-c-vm')
    c.VM.set_is_a_template(s, vm, False)
    vm_uuid = c.VM.get_uuid(s, vm)

    def expected_listing():
        lines = {}
        for r in c.VM.get_all_records(s).values():
            kind = (' (control domain)' if r['is_control_domain']
                    else ' (template)' if r['is_a_template'] else '')
            lines[r['uuid']] = '%s %s %s%s' % (r['uuid'], r['power_state'],
                                               r['name_label'], kind)
        return lines

    def check_listing(target, env=None):
        p = subprocess.run([LIST_VMS, target, 'root', d.password],
                           capture_output=True, text=True, timeout=60,
                           env=env)
        assert_ok(p, 'list-vms')
        want = expected_listing()
        out = p.stdout.splitlines()
        assert sorted(out[:-1]) == sorted(want.values()), (out, want)
        n_templates = sum(1 for v in want.values() if v.endswith('(template)'))
        assert out[-1] == '%d VMs, %d templates' % (
            len(want) - n_templates, n_templates), out[-1]
        assert '%s Halted sdk-c-vm' % vm_uuid in out

    @tap.test('test_list_vms_example_prints_every_vm_over_http')
    def _():
        check_listing(d.url)

    @tap.test('test_list_vms_example_prints_every_vm_over_the_unix_socket')
    def _():
        check_listing(d.unix_path)

    @tap.test('test_list_vms_example_over_https_with_a_self_signed_cert')
    def _():
        url = 'https://127.0.0.1:%d/' % d.https_port
        check_listing(url, dict(os.environ, XEN_EXAMPLE_INSECURE='1'))
        # Without the opt-in, curl verifies the certificate and refuses.
        p = run([LIST_VMS, url, 'root', d.password])
        assert_clean(p, 'list-vms')
        assert p.returncode != 0 and 'TRANSPORT_FAULT' in p.stderr, p.stderr

    @tap.test('test_list_vms_example_reports_a_wrong_password')
    def _():
        p = run([LIST_VMS, d.url, 'root', 'not-the-password'])
        assert_clean(p, 'list-vms')
        assert p.returncode != 0, p.stdout
        assert 'SESSION_AUTHENTICATION_FAILED' in p.stderr, p.stderr

    @tap.test('test_start_vm_example_starts_the_vm_as_a_task_and_shuts_it_down')
    def _():
        p = run([START_VM, d.unix_path, 'root', d.password, 'sdk-c-vm'])
        assert_ok(p, 'start-vm')
        assert p.stdout.splitlines() == [
            'power state: Halted', 'task success, progress 100%',
            'power state: Running', 'power state: Halted'], p.stdout
        assert c.VM.get_power_state(s, vm) == 'Halted'
        # The example destroys its task.
        assert not [t for t in c.task.get_all_records(s).values()
                    if t['name_label'] == 'Async.VM.start'], \
            c.task.get_all_records(s)

    @tap.test('test_start_vm_example_finds_the_vm_by_uuid')
    def _():
        p = run([START_VM, d.url, 'root', d.password, vm_uuid])
        assert_ok(p, 'start-vm')
        assert 'power state: Running' in p.stdout, p.stdout

    @tap.test('test_start_vm_example_reports_an_error_of_the_api')
    def _():
        p = run([START_VM, d.url, 'root', d.password, 'Debian Bookworm 12'])
        assert_clean(p, 'start-vm')
        assert p.returncode != 0, p.stdout
        assert 'VM_IS_TEMPLATE' in p.stderr, p.stderr

    @tap.test('test_watch_events_example_prints_existing_objects_then_changes')
    def _():
        out_path = os.path.join(d.tmp, 'events.out')
        with open(out_path, 'w') as out, \
                open(out_path + '.err', 'w') as err:
            proc = subprocess.Popen([WATCH_EVENTS, d.url, 'root', d.password,
                                     '4', 'VM'], stdout=out, stderr=err)
        try:
            deadline = time.time() + 10
            while '# token' not in open(out_path).read():
                assert proc.poll() is None, open(out_path + '.err').read()
                assert time.time() < deadline, 'no first batch'
                time.sleep(0.05)
            c.VM.set_name_description(s, vm, 'changed while watched')
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = open(out_path).read()
        errs = open(out_path + '.err').read()
        p = subprocess.CompletedProcess(proc.args, proc.returncode, text, errs)
        assert_ok(p, 'watch-events')
        first, _, rest = text.partition('# token')
        assert 'vm add %s' % vm in first, first[:2000]
        assert all(re.match(r'^vm (add|mod|del) OpaqueRef:', l)
                   for l in first.splitlines()), first[:2000]
        assert 'vm mod %s' % vm in rest, rest[:2000]

    # ---- an application built against the installed SDK ----

    def pass_through(p, prefix):
        n = 0
        for line in p.stdout.splitlines():
            m = re.match(r'^(ok|not ok) - (.*)$', line)
            if m:
                n += 1
                check('%s_%s' % (prefix, m.group(2)), m.group(1) == 'ok',
                      p.stderr[-2000:])
            elif line.startswith('#'):
                print(line)
        check('%s_exits_cleanly' % prefix, p.returncode == 0 and n >= 15
              and not any(pat in p.stderr for pat in SANITIZER_PATTERNS),
              'exit %d, %d TAP lines; stderr:\n%s'
              % (p.returncode, n, p.stderr[-3000:]))

    def build_and_run_sdk_check():
        cc = os.environ.get('CC', 'cc')
        if not shutil.which('pkg-config') or not shutil.which(cc):
            tap.skip('test_installed_sdk', 'pkg-config or %s not found' % cc)
            return
        dest = tempfile.mkdtemp(prefix='sdk-c-install.', dir=d.tmp)
        p = run(['make', '-s', '-C', BUILD, 'sdk-c-install-exec',
                 'sdk-c-install-data', 'DESTDIR=' + dest], timeout=600)
        if not check('test_make_install_puts_the_sdk_in_destdir',
                     p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]):
            return
        pcs = glob.glob(os.path.join(dest, '**', 'pkgconfig', 'xenserver.pc'),
                        recursive=True)
        libdir = os.path.dirname(os.path.dirname(pcs[0])) if pcs else ''
        check('test_install_has_pkg_config_file_headers_and_libraries',
              pcs and os.path.exists(os.path.join(libdir, 'libxenserver.so'))
              and os.path.exists(os.path.join(libdir, 'libxenserver.a'))
              and glob.glob(os.path.join(dest, '**', 'xen', 'api',
                                         'xen_vm.h'), recursive=True),
              'installed: %s' % sorted(
                  os.path.relpath(os.path.join(r, f), dest)
                  for r, _, fs in os.walk(dest) for f in fs)[:40])
        if not pcs:
            return
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]),
                   PKG_CONFIG_SYSROOT_DIR=dest)
        flags = subprocess.run(['pkg-config', '--cflags', '--libs',
                                'xenserver'], env=env, capture_output=True,
                               text=True)
        if not check('test_pkg_config_knows_xenserver', flags.returncode == 0,
                     flags.stderr):
            return
        cflags = flags.stdout.split()
        srcs = [os.path.join(SDK_SRC, 'tests', 'sdk-check.c'),
                os.path.join(SDK_SRC, 'examples', 'transport.c')]
        common = [cc, '-std=c11', '-Wall', '-Wextra', '-Werror',
                  '-Wno-unused-parameter', '-I' + os.path.join(SDK_SRC,
                                                               'examples')]
        common += san_cflags()
        shared_bin = os.path.join(dest, 'sdk-check')
        p = run(common + ['-o', shared_bin] + srcs + cflags
                + ['-lcurl', '-Wl,-rpath,' + libdir], timeout=300)
        if check('test_application_compiles_with_pkg_config_flags',
                 p.returncode == 0, p.stderr[-3000:]):
            pass_through(run([shared_bin, d.url, 'root', d.password]),
                         'sdk_check_shared')
        static_bin = os.path.join(dest, 'sdk-check-static')
        incs = [f for f in cflags if f.startswith('-I')]
        p = run(common + ['-o', static_bin] + srcs + incs
                + [os.path.join(libdir, 'libxenserver.a'), '-lcurl', '-lm',
                   '-pthread'], timeout=300)
        if check('test_application_links_the_static_library',
                 p.returncode == 0, p.stderr[-3000:]):
            pass_through(run([static_bin, d.unix_path, 'root', d.password]),
                         'sdk_check_static')

    build_and_run_sdk_check()
    check('test_daemon_is_still_alive_after_the_sdk_programs', d.alive())
finally:
    finish_daemon(d)
    d.cleanup()
tap.finish()
