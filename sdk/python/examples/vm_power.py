#!/usr/bin/env python3
"""vm_power.py — starts or shuts down a VM with an asynchronous call,
following its task to the end.

    vm_power.py URL USER PASSWORD start|shutdown VM [--force] [--paused]
                [--ignore-ssl]

URL is http://HOST[:PORT]/, https://HOST[:PORT]/ or unix:PATH.  VM is a
uuid or a name label.  `shutdown` asks the guest to shut down cleanly
(VM.shutdown, which falls back to a hard shutdown); with --force it pulls
the plug (VM.hard_shutdown).  `start --paused` leaves the VM paused.

Prints the task's progress and, at the end, the VM's new power state:

    VM web-1 (UUID): Halted -> Running
"""
import argparse
import sys
import time
import xmlrpc.client

try:
    import XenAPI
except ImportError:         # run from the source tree, not installed
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(
        __file__)), '..'))
    import XenAPI


def connect(url, ignore_ssl):
    if url.startswith('unix:'):
        return XenAPI.xapi_local(url[len('unix:'):])
    return XenAPI.Session(url, ignore_ssl=ignore_ssl)


def find_vm(x, name):
    """The VM whose uuid or (unique) name label is `name`."""
    try:
        return x.VM.get_by_uuid(name)
    except XenAPI.Failure as e:
        if e.details[0] != 'UUID_INVALID':
            raise
    refs = [r for r in x.VM.get_by_name_label(name)
            if not x.VM.get_is_a_template(r)]
    if len(refs) != 1:
        sys.exit('%d VMs are called %r: give a uuid' % (len(refs), name)
                 if refs else 'no VM %r' % name)
    return refs[0]


def wait_task(x, task):
    """Waits for the task, printing its progress; returns its result
    decoded (tasks keep it as an XML-RPC <value>) or raises Failure."""
    shown = None
    while True:
        status = x.task.get_status(task)
        progress = int(float(x.task.get_progress(task)) * 100)
        if progress != shown:
            print('progress: %d%%' % progress)
            shown = progress
        if status not in ('pending', 'cancelling'):
            break
        time.sleep(0.1)
    try:
        if status == 'success':
            text = x.task.get_result(task)
            if not text:
                return None
            params, _ = xmlrpc.client.loads(
                '<methodResponse><params><param>%s</param></params>'
                '</methodResponse>' % text)
            return params[0]
        raise XenAPI.Failure(x.task.get_error_info(task) or
                             ['TASK_%s' % status.upper()])
    finally:
        x.task.destroy(task)


def main():
    ap = argparse.ArgumentParser(description='Start or shut down a VM.')
    ap.add_argument('url')
    ap.add_argument('user')
    ap.add_argument('password')
    ap.add_argument('action', choices=('start', 'shutdown'))
    ap.add_argument('vm', help='uuid or name label')
    ap.add_argument('--force', action='store_true',
                    help='shutdown: hard shutdown at once')
    ap.add_argument('--paused', action='store_true',
                    help='start: leave the VM paused')
    ap.add_argument('--ignore-ssl', action='store_true',
                    help="do not verify the server's certificate")
    args = ap.parse_args()

    session = connect(args.url, args.ignore_ssl)
    try:
        session.xenapi.login_with_password(args.user, args.password, '1.0',
                                           'vm_power.py')
    except XenAPI.Failure as e:
        sys.exit('login failed: %s' % e)
    x = session.xenapi
    try:
        vm = find_vm(x, args.vm)
        before = x.VM.get_power_state(vm)
        if args.action == 'start':
            task = x.Async.VM.start(vm, args.paused, False)
        elif args.force:
            task = x.Async.VM.hard_shutdown(vm)
        else:
            task = x.Async.VM.shutdown(vm)
        wait_task(x, task)
        print('VM %s (%s): %s -> %s' % (x.VM.get_name_label(vm),
                                        x.VM.get_uuid(vm), before,
                                        x.VM.get_power_state(vm)))
    except XenAPI.Failure as e:
        sys.exit('error: %s' % e)
    finally:
        session.xenapi.logout()


if __name__ == '__main__':
    main()
