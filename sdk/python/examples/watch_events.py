#!/usr/bin/env python3
"""watch_events.py — prints the changes to a pool's objects as they happen,
with event.from.

    watch_events.py URL USER PASSWORD [--classes vm,task,...] [--count N]
                    [--duration SECONDS] [--ignore-ssl]

URL is http://HOST[:PORT]/, https://HOST[:PORT]/ or unix:PATH.  The
classes default to all ("*").  The objects that exist when it starts are
counted, not printed; then each change prints one line:

    mod vm OpaqueRef:... web-1 running

(operation, class, reference, the object's name label or uuid and, for
VMs, the power state).  It stops after N events (--count) or SECONDS
(--duration), else runs until interrupted.  `from` is a Python keyword,
so the call is made with session.xenapi_request('event.from', ...).
"""
import argparse
import sys
import time

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


def describe(ev):
    snap = ev.get('snapshot') or {}
    what = snap.get('name_label') or snap.get('uuid') or ''
    if ev['class'].lower() == 'vm' and 'power_state' in snap:
        what += ' ' + snap['power_state'].lower()
    return ('%s %s %s %s' % (ev['operation'], ev['class'], ev['ref'],
                             what)).rstrip()


def main():
    ap = argparse.ArgumentParser(description="Watch a pool's events.")
    ap.add_argument('url')
    ap.add_argument('user')
    ap.add_argument('password')
    ap.add_argument('--classes', default='*',
                    help='comma-separated classes (default: all)')
    ap.add_argument('--count', type=int, default=0,
                    help='stop after this many events')
    ap.add_argument('--duration', type=float, default=0,
                    help='stop after this many seconds')
    ap.add_argument('--ignore-ssl', action='store_true',
                    help="do not verify the server's certificate")
    args = ap.parse_args()
    classes = [c.strip() for c in args.classes.split(',') if c.strip()]

    session = connect(args.url, args.ignore_ssl)
    try:
        session.xenapi.login_with_password(args.user, args.password, '1.0',
                                           'watch_events.py')
    except XenAPI.Failure as e:
        sys.exit('login failed: %s' % e)
    end = time.time() + args.duration if args.duration else None
    seen = 0
    try:
        # the first call answers at once with every existing object
        r = session.xenapi_request('event.from', (classes, '', 0.0))
        token = r['token']
        print('watching %d object(s)' % len(r['events']), flush=True)
        while not args.count or seen < args.count:
            wait = 30.0
            if end is not None:
                wait = end - time.time()
                if wait <= 0:
                    break
                wait = min(wait, 30.0)
            try:
                r = session.xenapi_request('event.from',
                                           (classes, token, wait))
            except XenAPI.Failure as e:
                if e.details[0] != 'EVENTS_LOST':
                    raise
                print('events lost: starting again', flush=True)
                r = session.xenapi_request('event.from', (classes, '', 0.0))
                token = r['token']
                continue
            token = r['token']
            for ev in r['events']:
                print(describe(ev), flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    break
    except KeyboardInterrupt:
        pass
    except XenAPI.Failure as e:
        sys.exit('error: %s' % e)
    finally:
        session.xenapi.logout()


if __name__ == '__main__':
    main()
