#!/usr/bin/env python3
"""test_xmlrpc_c.py — runs xmlrpc-c-client (xmlrpc-c-client.c, built by
automake as $XAPI_BUILD_DIR/tests/integration/xmlrpc-c-client when the
xmlrpc-c library is installed) against a fresh daemon over HTTP and passes
its TAP lines through, then checks its exit status and that the daemon
survived.  Skips, with the reason, when the client was not built."""
import os
import subprocess

from xapitest import BUILD, Daemon, check, finish_daemon, start_or_bail, tap

client = os.path.join(BUILD, 'tests', 'integration', 'xmlrpc-c-client')

if not os.access(client, os.X_OK):
    tap.skip('test_xmlrpc_c_client_against_xapi',
             'xmlrpc-c-client not built (is libxmlrpc-core-c3-dev '
             'installed?): %s' % client)
    tap.finish()

d = start_or_bail(Daemon(tls=False))
try:
    try:
        p = subprocess.run([client, d.url, 'root', d.password],
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        check('test_xmlrpc_c_client_finishes', False,
              'timed out; output so far:\n%s' % (e.stdout or ''))
    else:
        lines = p.stdout.splitlines()
        n_tap = 0
        for line in lines:
            if line.startswith('ok ') or line.startswith('not ok '):
                n_tap += 1
                ok = line.startswith('ok ')
                name = line.split(' - ', 1)[1] if ' - ' in line else line
                tap.check(name, ok, '')
            elif line.startswith('#'):
                print(line)
        failed = sum(1 for l in lines if l.startswith('not ok '))
        check('test_xmlrpc_c_client_exit_status_matches_its_report',
              n_tap >= 10 and (p.returncode == 0) == (failed == 0),
              'exit status %d, %d TAP lines, %d failed; stderr:\n%s'
              % (p.returncode, n_tap, failed, p.stderr[-3000:]))
        check('test_xmlrpc_c_client_has_no_sanitizer_report',
              'ERROR: AddressSanitizer' not in p.stderr
              and 'runtime error:' not in p.stderr, p.stderr[-3000:])
    check('test_daemon_is_still_alive_after_the_xmlrpc_c_client', d.alive())
finally:
    finish_daemon(d)
    d.cleanup()
tap.finish()
