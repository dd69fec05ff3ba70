#!/usr/bin/env python3
"""list_vms.py — lists the VMs of a pool with their power state.

    list_vms.py URL USER PASSWORD [--all] [--ignore-ssl]

URL is http://HOST[:PORT]/, https://HOST[:PORT]/ or unix:PATH (the
toolstack's Unix socket).  Prints one line per VM, sorted by name:
its uuid, power state and name label.  Templates, snapshots and control
domains are left out unless --all is given.
"""
import argparse
import sys

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


def main():
    ap = argparse.ArgumentParser(description='List the VMs of a pool.')
    ap.add_argument('url')
    ap.add_argument('user')
    ap.add_argument('password')
    ap.add_argument('--all', action='store_true',
                    help='include templates, snapshots and control domains')
    ap.add_argument('--ignore-ssl', action='store_true',
                    help="do not verify the server's certificate")
    args = ap.parse_args()

    session = connect(args.url, args.ignore_ssl)
    try:
        session.xenapi.login_with_password(args.user, args.password, '1.0',
                                           'list_vms.py')
    except XenAPI.Failure as e:
        sys.exit('login failed: %s' % e)
    try:
        vms = session.xenapi.VM.get_all_records()
        rows = []
        for ref, rec in vms.items():
            if not args.all and (rec['is_a_template'] or
                                 rec['is_a_snapshot'] or
                                 rec['is_control_domain']):
                continue
            rows.append((rec['name_label'], rec['uuid'],
                         rec['power_state'].lower()))
        for name, uuid, state in sorted(rows):
            print('%s  %-9s %s' % (uuid, state, name))
        print('%d VM(s)' % len(rows))
    except XenAPI.Failure as e:
        sys.exit('error: %s' % e)
    finally:
        session.xenapi.logout()


if __name__ == '__main__':
    main()
