#!/usr/bin/env python3
"""vm-cycles.py — VM start + clean_shutdown cycles per second on the
simulator, from concurrent clients, with and without 1000 VMs resident on
the host (standard library only).

Starts one xapi daemon (simulator backend) in a private state directory.
The simulator is made big enough for 1000+ running VMs of the "Debian
Bookworm 12" template (2 GiB each: memory_mib=4194304, cpus=64), and its
simulated guest delays are set to zero (boot_ms=0, shutdown_ms=0) with a
1 ms tick (tick_ms=1: a simulated guest acts on a clean shutdown request
at its next tick), so what is measured is the toolstack's own time, not
the guest's.  Then:

  A. 8 VMs (VM.clone of "Debian Bookworm 12", VM.set_is_a_template false),
     one per client; 8 client threads, each with its own session and
     keep-alive XML-RPC connection, loop on VM.start + VM.clean_shutdown
     of their VM for --seconds (10 by default);
  B. 1000 more VMs are made the same way and started (8 threads), so that
     they stay resident on the host; the daemon's idle CPU with them
     running is measured (the simulator sends each running domain's
     statistics every stats_ms, 1000 ms by default, as a real host does);
  C. the measurement of A again, with the 1000 VMs resident.

For A and C it prints cycles/s, the latency (p50/p99/max, as the client
sees it) of VM.start and VM.clean_shutdown separately, and the daemon's
CPU time per operation: the utime+stime delta of all its threads
(/proc/PID/task/*/stat) over the run, divided by the number of start and
clean_shutdown calls — the toolstack's own time per operation.  The
simulator's ticker thread (the simulated guests and host) runs inside the
daemon; its CPU is shown apart and left out of the toolstack's figure.
The provider calls the toolstack makes (domain_create, domain_info...)
run on the toolstack's own threads and count as toolstack time.
The daemon's VmRSS/VmHWM are printed along the way.

The clients (Python threads) share the 2 CPUs with the daemon, so the
latencies include client time; the CPU figures do not.  It prints
figures only and never passes or fails on a time; it exits non-zero only
when something does not work (the daemon does not start, a call fails).

Usage: vm-cycles.py BUILD_DIR [--seconds S] [--clients N] [--resident N]
                    [--tick-ms MS] [--stats-ms MS] [--workers N]
                    [--perf FILE] [--keep]
  --perf FILE   also run `perf record --call-graph fp` (or
                --perf-call-graph MODE) on the daemon during run C and print
                the top of `perf report` (needs perf).
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client

TEMPLATE = "Debian Bookworm 12"
AIM_MS = 5.0
PASSWORD = "bench-cycles-" + os.urandom(4).hex()


class BenchError(Exception):
    pass


def log(msg=""):
    print(msg, flush=True)


# ---- /proc ----

HZ = os.sysconf("SC_CLK_TCK")


def thread_ticks(pid):
    """{tid: utime+stime ticks} of every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = int(fields[11]) + int(fields[12])
    return out


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0
            elif k == "Threads":
                out[k] = int(v.split()[0])
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def busy_processes(exclude, seconds=1.0):
    """Other processes using CPU now: [(name, percent)], busiest first."""
    def sample():
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) in exclude:
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    raw = f.read()
            except OSError:
                continue
            name = raw[raw.find("(") + 1:raw.rfind(")")]
            fields = raw.rsplit(")", 1)[1].split()
            out[int(d)] = (name, int(fields[11]) + int(fields[12]))
        return out
    a = sample()
    time.sleep(seconds)
    b = sample()
    busy = []
    for pid, (name, t) in b.items():
        if pid in a:
            p = 100.0 * (t - a[pid][1]) / HZ / seconds
            if p >= 5:
                busy.append((name, p))
    return sorted(busy, key=lambda x: -x[1])


def background(d):
    busy = busy_processes({os.getpid(), d.pid})
    log("  background: load average %s; other processes using CPU: %s" % (
        loadavg(), ", ".join("%s %.0f%%" % b for b in busy[:6]) or "none"))
    if busy:
        log("  WARNING: other processes compete for the 2 CPUs; figures are "
            "lower and noisier than on an idle machine")


def pct(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1,
                   int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


# ---- the daemon ----

class TimeoutTransport(xmlrpc.client.Transport):
    """Keep-alive HTTP/1.1 (xmlrpc.client reuses its connection) with a
    socket timeout, and TCP_NODELAY."""

    def __init__(self, timeout):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        reuse = self._connection[1] is not None and self._connection[0] == host
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        if not reuse:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn


class Client:
    """One XenAPI client: its own keep-alive connection and session."""

    def __init__(self, url, timeout=120):
        self.proxy = xmlrpc.client.ServerProxy(
            url, transport=TimeoutTransport(timeout), allow_none=False)
        self.session = self.call_raw("session.login_with_password", "root",
                                     PASSWORD, "1.0", "vm-cycles")

    def call_raw(self, method, *args):
        fn = self.proxy
        for part in method.split("."):
            fn = getattr(fn, part)
        r = fn(*args)
        if not isinstance(r, dict) or r.get("Status") != "Success":
            raise BenchError("%s failed: %r" % (
                method, r.get("ErrorDescription") if isinstance(r, dict) else r))
        return r.get("Value")

    def call(self, method, *args):
        return self.call_raw(method, self.session, *args)

    def close(self):
        try:
            self.call("session.logout")
        except Exception:
            pass
        self.proxy("close")()


class Daemon:
    def __init__(self, exe, tmp, sim_config, workers):
        self.exe = exe
        self.tmp = tmp
        self.state = os.path.join(tmp, "state")
        self.errfile = os.path.join(tmp, "xapi.stderr")
        self.sim_config = sim_config
        self.workers = workers
        self.proc = None

    def start(self):
        pwfile = os.path.join(self.tmp, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        self.err = open(self.errfile, "w")
        self.argv = [self.exe, "--state-dir", self.state,
                     "--listen", "127.0.0.1:0", "--backend", "sim",
                     "--root-password-file", pwfile,
                     "--sim-config", self.sim_config,
                     "--workers", str(self.workers),
                     "--shutdown-timeout", "60"]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.err,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("xapi ready"):
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            raise BenchError("xapi did not start (exit %s): %s\n%s" % (
                self.proc.returncode, line.strip(),
                open(self.errfile).read()[-3000:]))
        self.ready_s = time.monotonic() - t0
        self.ready = line.strip()
        m = re.search(r"http=127\.0\.0\.1:(\d+)", line)
        self.url = "http://127.0.0.1:%s" % m.group(1)
        self.pid = self.proc.pid

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return (self.proc.returncode if self.proc else None, 0.0)
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return ("killed after 60 s", time.monotonic() - t0)
        return (rc, time.monotonic() - t0)

    def sim_ticker_tid(self):
        """The simulator's ticker thread: the first thread the daemon
        creates (xenops_open() runs before db_open() and everything else
        that starts threads; see xapi/main.c).  Checked: it must be the
        one waiting in poll(2) (syscall 7 on x86_64)."""
        tids = sorted(int(t) for t in os.listdir("/proc/%d/task" % self.pid))
        if len(tids) < 2:
            return None, "no second thread"
        tid = tids[1]
        note = "thread %d (the first one the daemon creates)" % tid
        try:
            with open("/proc/%d/task/%d/syscall" % (self.pid, tid)) as f:
                sc = f.read().split()
            if os.uname().machine == "x86_64" and sc and sc[0] not in ("7", "running"):
                note += "; WARNING: it is in syscall %s, not poll" % sc[0]
        except OSError:
            pass
        return tid, note


# ---- the work ----

def new_vm(c, template, name):
    vm = c.call("VM.clone", template, name)
    c.call("VM.set_is_a_template", vm, False)
    return vm


class CpuWindow:
    """Daemon CPU between two snapshots, total and simulator ticker."""

    def __init__(self, d, ticker):
        self.d, self.ticker = d, ticker
        self.t0 = time.monotonic()
        self.a = thread_ticks(d.pid)
        self.own0 = os.times()

    def stop(self):
        self.secs = time.monotonic() - self.t0
        b = thread_ticks(self.d.pid)
        own1 = os.times()
        # Threads that ended during the window take their ticks with them
        # (the daemon's threads are a fixed pool, so none should).
        self.total = sum(v - self.a.get(t, 0) for t, v in b.items()) / HZ
        self.sim = ((b.get(self.ticker, 0) - self.a.get(self.ticker, 0)) / HZ
                    if self.ticker else 0.0)
        self.toolstack = self.total - self.sim
        self.client = ((own1.user + own1.system) - (self.own0.user + self.own0.system))
        return self


def run_cycles(d, clients, vms, seconds, ticker, label, perf_file=None,
               perf_cg="fp"):
    """Start + clean_shutdown loops, one client thread per VM."""
    n = len(clients)
    lat = {"start": [[] for _ in range(n)], "clean_shutdown": [[] for _ in range(n)]}
    cycles = [0] * n
    errors = []
    barrier = threading.Barrier(n + 1)
    stop_at = [None]

    def worker(i):
        c, vm = clients[i], vms[i]
        ls, lh = lat["start"][i], lat["clean_shutdown"][i]
        pc = time.perf_counter
        try:
            barrier.wait()
            while time.monotonic() < stop_at[0]:
                t0 = pc()
                c.call("VM.start", vm, False, False)
                t1 = pc()
                c.call("VM.clean_shutdown", vm)
                t2 = pc()
                ls.append(t1 - t0)
                lh.append(t2 - t1)
                cycles[i] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("client %d: %s" % (i, e))
            try:
                barrier.abort()
            except Exception:
                pass

    # Warm-up: two untimed cycles per VM (first-use costs, caches).
    for c, vm in zip(clients, vms):
        for _ in range(2):
            c.call("VM.start", vm, False, False)
            c.call("VM.clean_shutdown", vm)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    perf = None
    if perf_file:
        perf = subprocess.Popen(["perf", "record", "--call-graph", perf_cg,
                                 "-o", perf_file,
                                 "-p", str(d.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
    la0 = loadavg()
    stop_at[0] = time.monotonic() + seconds
    cpu = CpuWindow(d, ticker)
    t_start = time.monotonic()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    wall = time.monotonic() - t_start
    cpu.stop()
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
    if errors:
        raise BenchError("%s: %s" % (label, "; ".join(errors[:4])))

    total_cycles = sum(cycles)
    if not total_cycles:
        raise BenchError("%s: no cycle completed in %.1f s" % (label, seconds))
    ops = 2 * total_cycles
    ls = sorted(x for l in lat["start"] for x in l)
    lh = sorted(x for l in lat["clean_shutdown"] for x in l)
    r = {"label": label, "cycles": total_cycles, "wall": wall,
         "rate": total_cycles / wall, "ops": ops, "cpu": cpu,
         "start": ls, "shutdown": lh, "per_client": cycles,
         "load": (la0, loadavg())}
    return r


def print_cycles(r):
    cpu = r["cpu"]
    ops = max(r["ops"], 1)
    log("  %d clients x (VM.start + VM.clean_shutdown), %.1f s: %d cycles = "
        "%.1f cycles/s (%.1f ops/s); per client: %s"
        % (len(r["per_client"]), r["wall"], r["cycles"], r["rate"],
           r["ops"] / r["wall"], " ".join(str(c) for c in r["per_client"])))
    log("  %-20s %9s %9s %9s %9s %9s" % ("latency (client)", "mean", "p50",
                                        "p90", "p99", "max"))
    for name, v in (("VM.start", r["start"]), ("VM.clean_shutdown", r["shutdown"])):
        log("  %-20s %7.2fms %7.2fms %7.2fms %7.2fms %7.2fms" % (
            name, 1e3 * statistics.mean(v), 1e3 * pct(v, 50), 1e3 * pct(v, 90),
            1e3 * pct(v, 99), 1e3 * v[-1]))
    log("  daemon CPU over the run: %.2f s = %.0f%% of one CPU; toolstack "
        "(all threads but the simulator's ticker) %.2f s, simulator ticker "
        "%.2f s" % (cpu.total, 100 * cpu.total / cpu.secs, cpu.toolstack,
                    cpu.sim))
    log("  daemon CPU per operation: toolstack %.3f ms, + simulator %.3f ms "
        "= %.3f ms  (per cycle: %.3f ms)" % (
            1e3 * cpu.toolstack / ops, 1e3 * cpu.sim / ops,
            1e3 * cpu.total / ops, 2e3 * cpu.total / ops))
    log("  client (this Python process) CPU: %.2f s = %.3f ms per operation; "
        "load average %s -> %s" % (cpu.client, 1e3 * cpu.client / ops,
                                   r["load"][0], r["load"][1]))


def populate(d, url, template, n, threads, start_idx):
    """n more VMs, cloned, made VMs and started, from `threads` clients."""
    clients = [Client(url) for _ in range(threads)]
    lat = {"VM.clone": [], "VM.set_is_a_template": [], "VM.start": []}
    errors = []
    made = []
    lock = threading.Lock()
    next_i = [0]

    def worker(c):
        pc = time.perf_counter
        local = {k: [] for k in lat}
        try:
            while True:
                with lock:
                    i = next_i[0]
                    next_i[0] += 1
                if i >= n:
                    break
                t0 = pc()
                vm = c.call("VM.clone", template, "resident-%04d" % (start_idx + i))
                t1 = pc()
                c.call("VM.set_is_a_template", vm, False)
                t2 = pc()
                c.call("VM.start", vm, False, False)
                t3 = pc()
                local["VM.clone"].append(t1 - t0)
                local["VM.set_is_a_template"].append(t2 - t1)
                local["VM.start"].append(t3 - t2)
                with lock:
                    made.append(vm)
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))
        with lock:
            for k, v in local.items():
                lat[k].extend(v)

    ts = [threading.Thread(target=worker, args=(c,)) for c in clients]
    cpu0 = thread_ticks(d.pid)
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    cpu = sum(v - cpu0.get(k, 0) for k, v in thread_ticks(d.pid).items()) / HZ
    for c in clients:
        c.close()
    if errors:
        raise BenchError("populate: %s" % "; ".join(errors[:4]))
    return made, dt, cpu, {k: sorted(v) for k, v in lat.items()}


def idle_cpu(d, ticker, seconds):
    w = CpuWindow(d, ticker)
    time.sleep(seconds)
    return w.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build_dir", help="build directory holding xapi/xapi")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--resident", type=int, default=1000)
    ap.add_argument("--populate-threads", type=int, default=8)
    ap.add_argument("--tick-ms", type=int, default=1)
    ap.add_argument("--stats-ms", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--perf", metavar="FILE")
    ap.add_argument("--perf-call-graph", default="fp", metavar="MODE",
                    help="perf record --call-graph MODE (fp, dwarf...)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the state directory and the daemon's stderr")
    args = ap.parse_args()

    exe = os.path.join(args.build_dir, "xapi", "xapi")
    if not os.access(exe, os.X_OK):
        log("vm-cycles: no daemon at %s" % exe)
        return 1
    # Memory for every VM: Debian template = 2 GiB dynamic_max, plus the
    # simulator's overhead (1 MiB + 8 KiB per MiB) = 2065 MiB each.
    need_mib = (args.resident + args.clients + 8) * 2065 + 4096
    mem_mib = max(4194304, need_mib)
    sim_config = ("cpus=64,memory_mib=%d,dom0_memory_mib=4096,boot_ms=0,"
                  "shutdown_ms=0,tick_ms=%d,stats_ms=%d"
                  % (mem_mib, args.tick_ms, args.stats_ms))
    tmp = tempfile.mkdtemp(prefix="xapi-vm-cycles.")
    d = Daemon(exe, tmp, sim_config, args.workers)
    summary = []
    rc = 0
    try:
        d.start()
        log("daemon: %s" % d.ready)
        log("        started in %.2f s; state in %s (%s); --workers %d, "
            "--shutdown-timeout 60, default log level" % (
                d.ready_s, d.state,
                subprocess.run(["df", "-PT", tmp], capture_output=True,
                               text=True).stdout.splitlines()[-1].split()[1],
                args.workers))
        log("        --sim-config %s" % sim_config)
        log("        simulated guest delays are zero (boot_ms=0, shutdown_ms=0; "
            "a guest acts on a request at its next %d ms tick): the figures are "
            "the toolstack's own time" % args.tick_ms)
        ticker, note = d.sim_ticker_tid()
        log("        simulator ticker: %s" % note)
        log("        load average at start: %s" % loadavg())
        log()

        admin = Client(d.url)
        tmpl = admin.call("VM.get_by_name_label", TEMPLATE)
        if len(tmpl) != 1:
            raise BenchError("%d templates named %r" % (len(tmpl), TEMPLATE))
        tmpl = tmpl[0]
        host = admin.call("host.get_all")[0]
        resident0 = len(admin.call("host.get_resident_VMs", host))
        mem = [("at start", proc_status(d.pid))]

        # ---- A ----
        log("== A. start + clean_shutdown cycles, %d clients, no other VMs "
            "resident (host.get_resident_VMs: %d, the control domain) =="
            % (args.clients, resident0))
        clients = [Client(d.url) for _ in range(args.clients)]
        vms = [new_vm(admin, tmpl, "cycle-%d" % i) for i in range(args.clients)]
        background(d)
        ra = run_cycles(d, clients, vms, args.seconds, ticker, "A")
        print_cycles(ra)
        mem.append(("after run A", proc_status(d.pid)))
        log()

        # ---- B ----
        log("== B. %d VMs made and started (resident on the host), %d threads =="
            % (args.resident, args.populate_threads))
        made, dt, pcpu, plat = populate(d, d.url, tmpl, args.resident,
                                        args.populate_threads, 0)
        resident = admin.call("host.get_resident_VMs", host)
        log("  %d x (VM.clone + VM.set_is_a_template false + VM.start) in %.2f s "
            "= %.0f VMs/s; daemon CPU %.2f s = %.3f ms per VM (3 calls)" % (
                len(made), dt, len(made) / dt, pcpu, 1e3 * pcpu / max(len(made), 1)))
        for k, v in plat.items():
            log("  %-22s p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms" % (
                k, 1e3 * pct(v, 50), 1e3 * pct(v, 99), 1e3 * v[-1]))
        log("  host.get_resident_VMs: %d (was %d before)" % (len(resident), resident0))
        if len(resident) - resident0 != args.resident:
            raise BenchError("%d VMs resident, wanted %d more than %d"
                             % (len(resident), args.resident, resident0))
        mem.append(("after starting %d VMs" % args.resident, proc_status(d.pid)))
        time.sleep(2)
        idle = idle_cpu(d, ticker, 5)
        log("  idle with %d VMs running (5 s, no client calls): daemon %.0f%% of "
            "one CPU (toolstack %.0f%%, simulator ticker %.0f%%); stats_ms=%d"
            % (len(resident), 100 * idle.total / idle.secs,
               100 * idle.toolstack / idle.secs, 100 * idle.sim / idle.secs,
               args.stats_ms))
        log()

        # ---- C ----
        log("== C. start + clean_shutdown cycles, %d clients, %d VMs resident "
            "(+ the control domain) ==" % (args.clients, len(resident) - resident0))
        background(d)
        rcc = run_cycles(d, clients, vms, args.seconds, ticker, "C",
                         perf_file=args.perf, perf_cg=args.perf_call_graph)
        print_cycles(rcc)
        bg = idle.toolstack / idle.secs * rcc["cpu"].secs
        log("  toolstack CPU per operation less the idle background of the "
            "resident VMs (%.2f s over the run): %.3f ms" % (
                bg, 1e3 * max(0.0, rcc["cpu"].toolstack - bg) / max(rcc["ops"], 1)))
        mem.append(("after run C", proc_status(d.pid)))
        states = {admin.call("VM.get_power_state", vm) for vm in vms}
        if states != {"Halted"}:
            raise BenchError("cycling VMs end in states %s" % states)
        log()

        log("== Resident memory of the daemon (/proc/PID/status) ==")
        log("  %-34s %10s %10s %8s" % ("when", "VmRSS MB", "VmHWM MB", "threads"))
        for label, m in mem:
            log("  %-34s %10.1f %10.1f %8d" % (label, m["VmRSS"], m["VmHWM"],
                                               m["Threads"]))
        log()

        if args.perf:
            log("== perf report (run C), top of the daemon's self time ==")
            p = subprocess.run(["perf", "report", "-i", args.perf, "--no-children",
                                "--sort", "sym", "--stdio", "-g", "none",
                                "--percent-limit", "1.5"],
                               capture_output=True, text=True)
            for line in p.stdout.splitlines():
                if line.strip() and not line.startswith("#"):
                    log("  | " + line.rstrip()[:150])
            log()

        for c in clients:
            c.close()
        for name, r in (("A: no VMs resident", ra),
                        ("C: %d VMs resident" % (len(resident) - resident0), rcc)):
            per_op = 1e3 * r["cpu"].toolstack / max(r["ops"], 1)
            summary.append((
                "%s" % name,
                "%.1f cycles/s; toolstack CPU %.2f ms/op; p50 start %.1f ms, "
                "clean_shutdown %.1f ms" % (
                    r["rate"], per_op, 1e3 * pct(r["start"], 50),
                    1e3 * pct(r["shutdown"], 50)),
                "aim <= %.0f ms/op: %s" % (AIM_MS, "met" if per_op <= AIM_MS
                                           else "NOT MET")))
        admin.close()
    except BenchError as e:
        log("vm-cycles: ERROR: %s" % e)
        rc = 1
    finally:
        st, secs = d.stop()
        lines = open(d.errfile).read().splitlines() if os.path.exists(d.errfile) else []
        log("daemon: SIGTERM -> exit status %s after %.2f s; %d line(s) on stderr"
            % (st, secs, len(lines)))
        bad = [l for l in lines if re.search(r"\b(error|warn|ERR|WARN)", l)]
        for l in (bad or lines)[:8]:
            log("  | " + l[:300])
        if st != 0:
            rc = 1
        if args.keep:
            log("kept: %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if summary:
        log()
        log("== Summary (toolstack time = daemon CPU per VM.start or "
            "VM.clean_shutdown, simulated guest delays zero) ==")
        for fig, val, aim in summary:
            log("  %-22s %-74s %s" % (fig, val, aim))
    return rc


if __name__ == "__main__":
    sys.exit(main())
