#!/usr/bin/env python3
"""event-latency.py — commit-to-delivery latency of event.from with many
concurrent watchers (standard library only).

Starts one xapi daemon (simulator backend) in a private state directory,
then:

  - N watchers (default 100), each a thread (spread over --procs
    processes, 4 by default) with its own session and keep-alive
    connection, loop on event.from(["network"], token, 30) over JSON-RPC
    as Xen Orchestra does (["VM"] with --class VM);
  - one writer calls network.set_name_label on one network (or
    VM.set_name_label on the control domain) at a steady rate, putting
    its wall-clock send time in the new name;
  - every watcher notes, for each change it receives, the time the
    response arrived minus the send time in the name.

It prints the number of writes and deliveries and the p50/p90/p99/max
latency, twice: up to the answer reaching the watcher's socket (the
kernel's receive timestamp, SO_TIMESTAMPNS: what the daemon controls), and
up to the watcher thread having read it (which adds the Python clients'
own scheduling).  Changes that a watcher did not see on their own (XenAPI
collapses the changes made while a watcher was not waiting into one
event) are counted as "collapsed".  Both figures include the writer's
request and commit.  Watchers, writer and daemon share the machine; real
watchers run elsewhere, so the watcher processes run niced (--nice, 10 by
default) to leave the CPU to the daemon when a commit wakes all of them at
once.  The load average is printed with the figures.  It prints figures
only, never pass/fail.

Usage: event-latency.py DAEMON_OR_BUILD_DIR [--watchers N] [--rate HZ]
                        [--seconds S] [--procs P] [--workers W]
                        [--class network|VM] [--nice N] [--keep-log FILE]
"""

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

PASSWORD = 'bench-event-pw'


# ---- the daemon ----

def find_daemon(path):
    if os.path.isdir(path):
        path = os.path.join(path, 'xapi', 'xapi')
    if not os.access(path, os.X_OK):
        sys.exit('event-latency: no daemon at %s' % path)
    return path


def start_daemon(binary, tmp, workers):
    state = os.path.join(tmp, 'state')
    pwfile = os.path.join(tmp, 'pw')
    with open(pwfile, 'w') as f:
        f.write(PASSWORD + '\n')
    out_path = os.path.join(tmp, 'out')
    log = open(os.path.join(tmp, 'log'), 'wb')
    out = open(out_path, 'wb')
    proc = subprocess.Popen([binary, '--state-dir', state, '--listen',
                             '127.0.0.1:0', '--backend', 'sim',
                             '--root-password-file', pwfile,
                             '--workers', str(workers), '--log-level', 'warn'],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=log)
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(out_path) as f:
            for line in f.read().split('\n')[:-1]:
                if line.startswith('xapi ready'):
                    http = [kv for kv in line.split() if kv.startswith('http=')]
                    return proc, int(http[0].rsplit(':', 1)[1])
        if proc.poll() is not None:
            sys.exit('event-latency: the daemon exited (%s)' % proc.returncode)
        time.sleep(0.02)
    proc.kill()
    sys.exit('event-latency: the daemon did not start')


# ---- a minimal JSON-RPC client with keep-alive ----

# Linux's SO_TIMESTAMPNS (not exported by every Python): the kernel stamps
# each received segment with the wall-clock time it reached the socket, so
# the delivery time does not include the client's own scheduling.
SO_TIMESTAMPNS = getattr(socket, 'SO_TIMESTAMPNS', 35)


class Rpc:
    """JSON-RPC over one kept-alive HTTP/1.1 connection."""

    def __init__(self, port, timeout=60):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.stamps = True
        except OSError:
            self.stamps = False
        self.n = 0

    def raw(self, method, *params):
        """Returns (kernel arrival time of the first byte or None, time
        the client read the whole answer, decoded result)."""
        self.n += 1
        body = json.dumps({'jsonrpc': '2.0', 'method': method,
                           'params': list(params), 'id': self.n}).encode()
        self.sock.sendall(b'POST /jsonrpc HTTP/1.1\r\nHost: bench\r\n'
                          b'Content-Type: application/json\r\n'
                          b'Content-Length: %d\r\n\r\n' % len(body) + body)
        buf, stamp, need = b'', None, None
        while need is None or len(buf) < need:
            data, anc, _, _ = self.sock.recvmsg(1 << 16, 64)
            if not data:
                raise RuntimeError('%s: connection closed' % method)
            if stamp is None:
                for level, kind, val in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack('qq', val[:16])
                        stamp = sec + nsec / 1e9
            buf += data
            if need is None and b'\r\n\r\n' in buf:
                head, _ = buf.split(b'\r\n\r\n', 1)
                length = [l for l in head.split(b'\r\n')
                          if l.lower().startswith(b'content-length:')]
                need = len(head) + 4 + int(length[0].split(b':')[1])
        arrived = time.time()
        r = json.loads(buf[buf.index(b'\r\n\r\n') + 4:need])
        if 'error' in r:
            raise RuntimeError('%s: %r' % (method, r['error']))
        return stamp, arrived, r['result']

    def call(self, method, *params):
        return self.raw(method, *params)[2]

    def login(self):
        return self.call('session.login_with_password', 'root', PASSWORD,
                         '1.0', 'event-latency')


# ---- watchers ----

def watch(port, cls, net, start_evt, stop_evt, out, errors):
    try:
        rpc = Rpc(port)
        s = rpc.login()
        token = rpc.call('event.from', s, [cls], '', 0.0)['token']
        last = -1
        start_evt.wait()
        while not stop_evt.is_set():
            stamp, arrived, b = rpc.raw('event.from', s, [cls], token, 30.0)
            token = b['token']
            for e in b['events']:
                name = e['snapshot']['name_label']
                if e['ref'] == net and name.startswith('bench '):
                    _, seq, sent = name.split()
                    if int(seq) > last:     # the final inject repeats one
                        last = int(seq)
                        sent = float(sent)
                        out.append((last, (stamp or arrived) - sent,
                                    arrived - sent))
    except Exception as ex:            # reported by the parent
        errors.append(repr(ex))


def watcher_process(port, cls, net, n_threads, nice, ready_q, go, stop,
                    result_q):
    if nice:
        os.nice(nice)
    start_evt = threading.Event()
    stop_evt = threading.Event()
    outs = [[] for _ in range(n_threads)]
    errors = []
    ths = [threading.Thread(target=watch, args=(port, cls, net, start_evt,
                                                stop_evt, outs[i], errors),
                            daemon=True)
           for i in range(n_threads)]
    for t in ths:
        t.start()
    ready_q.put(n_threads)
    go.wait()
    start_evt.set()
    stop.wait()
    stop_evt.set()
    for t in ths:
        t.join(40)
    result_q.put((outs, errors))


# ---- the writer ----

def write_loop(port, cls, net, rate, seconds):
    rpc = Rpc(port)
    s = rpc.login()
    period = 1.0 / rate
    n = int(rate * seconds)
    next_t = time.time()
    call_times = []
    for seq in range(n):
        now = time.time()
        if next_t > now:
            time.sleep(next_t - now)
        sent = time.time()
        rpc.call(cls + '.set_name_label', s, net,
                 'bench %d %.6f' % (seq, sent))
        call_times.append(time.time() - sent)
        next_t += period
    return n, call_times


def pct(sorted_v, p):
    if not sorted_v:
        return float('nan')
    i = min(len(sorted_v) - 1, max(0, int(round(p / 100.0 * len(sorted_v))) - 1))
    return sorted_v[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('daemon', help='xapi binary or build directory')
    ap.add_argument('--watchers', type=int, default=100)
    ap.add_argument('--rate', type=float, default=20.0,
                    help='writes per second (default 20)')
    ap.add_argument('--seconds', type=float, default=10.0)
    ap.add_argument('--procs', type=int, default=4,
                    help='watcher processes (default 4)')
    ap.add_argument('--workers', type=int, default=8,
                    help='daemon worker threads (default 8)')
    ap.add_argument('--class', dest='cls', choices=('network', 'VM'),
                    default='network',
                    help='what the writer renames: a network (default) or '
                         'the control domain VM (a 90-field record)')
    ap.add_argument('--nice', type=int, default=10,
                    help='niceness of the watcher processes (default 10)')
    ap.add_argument('--keep-log', metavar='FILE',
                    help='copy the daemon log to FILE at the end')
    args = ap.parse_args()

    binary = find_daemon(args.daemon)
    tmp = tempfile.mkdtemp(prefix='xapi-event-bench.')
    proc = None
    try:
        proc, port = start_daemon(binary, tmp, args.workers)
        rpc = Rpc(port)
        s = rpc.login()
        if args.cls == 'network':
            rec = {'name_label': 'bench', 'name_description': '', 'MTU': 1500,
                   'other_config': {}, 'bridge': '', 'managed': True,
                   'tags': []}
            net = rpc.call('network.create', s, rec)
        else:
            net = rpc.call('VM.get_all', s)[0]      # the control domain

        ctx = multiprocessing.get_context('fork')
        ready_q, result_q = ctx.Queue(), ctx.Queue()
        go, stop = ctx.Event(), ctx.Event()
        procs = []
        left = args.watchers
        for i in range(args.procs):
            n = left // (args.procs - i)
            left -= n
            if n:
                p = ctx.Process(target=watcher_process,
                                args=(port, args.cls, net, n, args.nice,
                                      ready_q, go, stop, result_q))
                p.start()
                procs.append(p)
        for _ in procs:
            ready_q.get(timeout=60)
        go.set()
        time.sleep(1.0)                 # every watcher is waiting now
        load = os.getloadavg()[0]
        n_writes, call_times = write_loop(port, args.cls, net, args.rate,
                                          args.seconds)
        time.sleep(0.5)                 # the last deliveries
        stop.set()
        rpc.call('event.inject', s, args.cls, net)   # wakes the watchers
        lat, wake, errors = [], [], []
        for _ in procs:
            outs, errs = result_q.get(timeout=60)
            errors += errs
            for o in outs:
                lat += [x[1] for x in o]
                wake += [x[2] for x in o]
        for p in procs:
            p.join(10)
        lat.sort()
        wake.sort()
        call_times.sort()
        expected = n_writes * args.watchers
        print('event-latency: %d watchers (%d processes, nice %d), %d writes '
              'at %.0f/s (%s.set_name_label, JSON-RPC), load average %.2f'
              % (args.watchers, len(procs), args.nice, n_writes, args.rate,
                 args.cls, load))
        print('  deliveries          %d of %d changes x watchers (%d collapsed)'
              % (len(lat), expected, expected - len(lat)))
        print('  at the socket ms    p50 %.2f  p90 %.2f  p99 %.2f  max %.2f'
              % tuple(1000 * pct(lat, p) for p in (50, 90, 99, 100)))
        print('  client woken ms     p50 %.2f  p90 %.2f  p99 %.2f  max %.2f'
              % tuple(1000 * pct(wake, p) for p in (50, 90, 99, 100)))
        print('  writer call ms      p50 %.2f  p99 %.2f  (durable commit)'
              % (1000 * pct(call_times, 50), 1000 * pct(call_times, 99)))
        if errors:
            print('  watcher errors    %d, first: %s' % (len(errors), errors[0]))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep_log:
            shutil.copy(os.path.join(tmp, 'log'), args.keep_log)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
