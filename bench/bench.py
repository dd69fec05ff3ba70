#!/usr/bin/env python3
"""bench.py — the benchmarks behind bench/run.sh (standard library only).

Starts one xapi daemon (simulator backend) in a private state directory
and prints one block of figures per benchmark:

  1. trivial-call throughput: pool.get_all with wrk -t2 -c8 -d10s over
     XML-RPC and JSON-RPC, beside nginx answering a static 200 to the same
     POSTs in the same run;
  2. VM.get_all_records with 10,000 VMs (created through the API by
     concurrent VM.create calls), timed end to end by http-load, which
     never parses the response; XML-RPC and JSON-RPC;
  3. durable commits per second through the API (VM.set_name_label from 1
     and 8 writers on distinct VMs), then the db-level bench/db-commit;
  4. the daemon's resident memory (VmRSS, VmHWM) along the way.

It never passes or fails on a time; it exits non-zero only when something
does not work (the daemon does not start, a call answers an error...).

Usage: bench.py --build-dir DIR --http-load PATH --work-dir DIR [--quick]
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)

N_VMS = 10000
WRK_ARGS = ["-t2", "-c8", "-d10s"]
WRK_ROUNDS = 3
GAR_RUNS = 5
AIM_TRIVIAL_RATIO = 0.40
AIM_GAR_MS = 150.0
AIM_RSS_MB = 300.0


class BenchError(Exception):
    pass


def log(msg=""):
    print(msg, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid):
    """VmRSS and VmHWM of pid, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                parts = v.split()
                out[k] = int(parts[0]) / 1024.0 if k != "Threads" else int(parts[0])
    return out


def proc_cpu_seconds(pid):
    """utime + stime of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_tree_cpu_seconds(pid):
    """CPU seconds of pid and its direct children (nginx master + workers)."""
    total = proc_cpu_seconds(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        kids = []
    for k in kids:
        try:
            total += proc_cpu_seconds(k)
        except OSError:
            pass
    return total


def ctx_switches(pid):
    """Context switches (voluntary + involuntary) of all threads of pid."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if "ctxt_switches" in line:
                        n += int(line.split()[1])
        except OSError:
            pass
    return n


def busy_processes(exclude, seconds=1.0):
    """Other processes using CPU now: [(name, percent)], busiest first."""
    def sample():
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) in exclude:
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
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
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (name, t) in b.items():
        if pid in a:
            pct = 100.0 * (t - a[pid][1]) / hz / seconds
            if pct >= 5:
                busy.append((name, pct))
    return sorted(busy, key=lambda x: -x[1])


def kv_line(text):
    """Parses the last key=value line that http-load prints."""
    for line in reversed(text.strip().splitlines()):
        if "requests=" in line:
            d = {}
            for tok in line.split():
                k, _, v = tok.partition("=")
                try:
                    d[k] = float(v)
                except ValueError:
                    d[k] = v
            return d
    raise BenchError("http-load printed no summary:\n" + text)


def xml_call(method, *params):
    return xmlrpc.client.dumps(params, method, allow_none=False).replace("\n", "")


def json_call(method, *params):
    return json.dumps({"jsonrpc": "2.0", "method": method,
                       "params": list(params), "id": 1},
                      separators=(",", ":"))


def vm_record(i):
    """A full VM.create record: every field without a default in
    idl/classes/VM.idl, plus name_label/description."""
    mib = str(256 * 1024 * 1024)
    return {
        "name_label": "bench-vm-%05d" % i,
        "name_description": "created by bench/run.sh",
        "user_version": "1",
        "is_a_template": False,
        "affinity": "OpaqueRef:NULL",
        "memory_static_max": mib,
        "memory_dynamic_max": mib,
        "memory_dynamic_min": mib,
        "memory_static_min": mib,
        "VCPUs_params": {},
        "VCPUs_max": "1",
        "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "PV_bootloader": "",
        "PV_kernel": "",
        "PV_ramdisk": "",
        "PV_args": "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cdn"},
        "platform": {"acpi": "1", "apic": "true", "pae": "true",
                     "viridian": "true", "nx": "true"},
        "PCI_bus": "",
        "other_config": {"bench": "true", "index": str(i)},
        "recommendations": "",
    }


class Daemon:
    def __init__(self, build_dir, work_dir):
        self.exe = os.path.join(build_dir, "xapi", "xapi")
        self.state = os.path.join(work_dir, "state")
        self.pwfile = os.path.join(work_dir, "root-password")
        self.errfile = os.path.join(work_dir, "xapi.stderr")
        self.password = "bench-" + os.urandom(6).hex()
        self.proc = None
        self.port = None
        self.session = None

    def start(self):
        with open(self.pwfile, "w") as f:
            f.write(self.password + "\n")
        self.err = open(self.errfile, "w")
        self.proc = subprocess.Popen(
            [self.exe, "--state-dir", self.state, "--listen", "127.0.0.1:0",
             "--backend", "sim", "--root-password-file", self.pwfile],
            stdout=subprocess.PIPE, stderr=self.err, text=True)
        t0 = time.monotonic()
        line = self.proc.stdout.readline()
        if not line.startswith("xapi ready"):
            self.proc.wait(timeout=10)
            raise BenchError("xapi did not start (exit %s): %s\n%s" % (
                self.proc.returncode, line.strip(), open(self.errfile).read()))
        self.ready_s = time.monotonic() - t0
        m = re.search(r"http=127\.0\.0\.1:(\d+)", line)
        self.port = int(m.group(1))
        self.url = "http://127.0.0.1:%d" % self.port
        self.rpc = xmlrpc.client.ServerProxy(self.url)
        self.session = self.ok(self.rpc.session.login_with_password(
            "root", self.password, "1.0", "bench"))
        return line.strip()

    @staticmethod
    def ok(r):
        if not isinstance(r, dict) or r.get("Status") != "Success":
            raise BenchError("XenAPI call failed: %r" % (r,))
        return r.get("Value")

    def stop(self):
        """SIGTERM; returns (exit status, seconds to exit)."""
        if not self.proc or self.proc.poll() is not None:
            return (self.proc.returncode if self.proc else None, 0.0)
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            return ("killed after 20 s", time.monotonic() - t0)
        return (rc, time.monotonic() - t0)

    def mem(self):
        return proc_status(self.proc.pid)


class Nginx:
    def __init__(self, work_dir):
        self.dir = os.path.join(work_dir, "nginx")
        self.proc = None

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        d = self.dir
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""# private nginx for bench/run.sh
worker_processes 2;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            default_type text/plain;
            return 200 "ok";
        }}
    }}
}}
""")
        err = open(os.path.join(d, "stderr"), "w")
        self.proc = subprocess.Popen(["nginx", "-p", d, "-c", conf, "-e",
                                      os.path.join(d, "error.log")],
                                     stdout=err, stderr=err)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("nginx exited: " +
                                 open(os.path.join(d, "stderr")).read() +
                                 open(os.path.join(d, "error.log")).read())
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchError("nginx does not listen on port %d" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers too
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_wrk(url, proto, session):
    cmd = ["wrk"] + WRK_ARGS + ["--latency", "-s", os.path.join(HERE, "post.lua"),
                                url, "--", proto, session]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if p.returncode or not m:
        raise BenchError("wrk failed:\n" + out)
    r = {"rps": float(m.group(1)), "raw": out}
    m = re.search(r"^\s+Latency\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", out,
                  re.M)
    r["lat_avg"], r["lat_stdev"], r["lat_max"] = m.groups() if m else ("?",) * 3
    m = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    r["lat_p99"] = m.group(1) if m else "?"
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:.*", out)
    r["sockerr"] = m.group(0) if m else ""
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else 0
    return r


def http_post(url, body, ctype):
    req = urllib.request.Request(url, data=body.encode(),
                                 headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, resp.read()


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.work_dir
        self.hl = args.http_load
        self.d = Daemon(args.build_dir, self.work)
        self.mem = []           # (label, status dict)
        self.summary = []       # (figure, value, aim)

    def http_load(self, path, bodies, opts, ctype="text/xml", timeout=120):
        bf = os.path.join(self.work, "bodies-%d.txt" % len(os.listdir(self.work)))
        with open(bf, "w") as f:
            for b in bodies:
                if "\n" in b:
                    raise BenchError("a request body holds a newline")
                f.write(b + "\n")
        cmd = [self.hl] + opts + ["-T", ctype, "127.0.0.1", str(self.d.port),
                                  path, bf]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode:
            raise BenchError("http-load %s failed (%d):\n%s%s" % (
                " ".join(opts), p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        return p.stdout

    def snap_mem(self, label):
        self.mem.append((label, self.d.mem()))

    # ---- 1 ----
    def trivial(self):
        d = self.d
        log("== 1. Trivial-call throughput: pool.get_all, wrk %s, keep-alive, %d rounds ==" %
            (" ".join(WRK_ARGS), WRK_ROUNDS))
        # One checked call per protocol first: the load must be Successes.
        st, body = http_post(d.url + "/", xml_call("pool.get_all", d.session),
                             "text/xml")
        v = xmlrpc.client.loads(body.decode())[0][0]
        if st != 200 or v.get("Status") != "Success":
            raise BenchError("pool.get_all over XML-RPC: %d %r" % (st, body[:500]))
        log("  check XML-RPC  POST /        -> %s, %d pool(s), %d-byte response"
            % (v["Status"], len(v["Value"]), len(body)))
        st, body = http_post(d.url + "/jsonrpc",
                             json_call("pool.get_all", d.session),
                             "application/json")
        j = json.loads(body)
        if st != 200 or "result" not in j or "error" in j:
            raise BenchError("pool.get_all over JSON-RPC: %d %r" % (st, body[:500]))
        log("  check JSON-RPC POST /jsonrpc -> result, %d pool(s), %d-byte response"
            % (len(j["result"]), len(body)))

        ng = Nginx(self.work)
        ng.start()
        rounds = {"nginx": [], "xml": [], "json": []}
        try:
            st, body = http_post("http://127.0.0.1:%d/" % ng.port, "x", "text/xml")
            log("  check nginx    POST /        -> %d %r (static 200, port %d, "
                "2 workers)" % (st, body.decode(), ng.port))
            # Rounds interleave the three so that a change of background
            # load during the run hits each of them alike.
            for rnd in range(WRK_ROUNDS):
                for k in ("nginx", "xml", "json"):
                    if k == "nginx":
                        pid, cpu_fn = ng.proc.pid, proc_tree_cpu_seconds
                        url, proto = "http://127.0.0.1:%d/" % ng.port, "xmlrpc"
                    else:
                        pid, cpu_fn = d.proc.pid, proc_cpu_seconds
                        url = d.url + ("/" if k == "xml" else "/jsonrpc")
                        proto = "xmlrpc" if k == "xml" else "jsonrpc"
                    cpu0, cs0 = cpu_fn(pid), ctx_switches(pid)
                    r = run_wrk(url, proto, d.session)
                    r["cpu"] = cpu_fn(pid) - cpu0
                    r["ctxsw"] = ctx_switches(pid) - cs0
                    rounds[k].append(r)
        finally:
            ng.stop()
        # Still answering Successes after the load?
        Daemon.ok(d.rpc.pool.get_all(d.session))

        def mean_rps(k):
            return statistics.mean(r["rps"] for r in rounds[k])

        def best_rps(k):
            return max(r["rps"] for r in rounds[k])
        base = mean_rps("nginx")
        log("  %-32s %9s %8s %8s %8s %9s %9s %8s" % (
            "server / protocol (round)", "req/s", "lat avg", "lat p99", "lat max",
            "CPU/req", "ctxsw/req", "vs nginx"))
        rows = [("nginx, static 200 (peer)", "nginx"),
                ("xapi XML-RPC  POST /", "xml"),
                ("xapi JSON-RPC POST /jsonrpc", "json")]
        for name, k in rows:
            for i, r in enumerate(rounds[k]):
                n = max(r["requests"], 1)
                log("  %-32s %9.0f %8s %8s %8s %7.1fus %9.2f %7.1f%%" % (
                    "%s (%d)" % (name, i + 1), r["rps"], r["lat_avg"], r["lat_p99"],
                    r["lat_max"], 1e6 * r["cpu"] / n, r["ctxsw"] / n,
                    100.0 * r["rps"] / statistics.mean(
                        x["rps"] for x in rounds["nginx"])))
        for name, k in rows:
            for i, r in enumerate(rounds[k]):
                extra = []
                if r["non2xx"]:
                    extra.append("NON-2xx responses: %d" % r["non2xx"])
                if r["sockerr"]:
                    extra.append(r["sockerr"])
                if extra:
                    log("    %s round %d: %s" % (k, i + 1, "; ".join(extra)))
        log("  mean of %d rounds: nginx %.0f req/s; xapi XML-RPC %.0f req/s = %.1f%% "
            "of nginx; JSON-RPC %.0f req/s = %.1f%% of nginx" % (
                WRK_ROUNDS, base, mean_rps("xml"), 100 * mean_rps("xml") / base,
                mean_rps("json"), 100 * mean_rps("json") / base))
        bbase = best_rps("nginx")
        log("  best round of each:  nginx %.0f req/s; xapi XML-RPC %.0f req/s = %.1f%% "
            "of nginx; JSON-RPC %.0f req/s = %.1f%% of nginx" % (
                bbase, best_rps("xml"), 100 * best_rps("xml") / bbase,
                best_rps("json"), 100 * best_rps("json") / bbase))
        log("  (CPU/req: CPU time of the server's processes over the run divided by "
            "its requests; wrk shares the 2 CPUs.  Background load only lowers "
            "figures, so the best round is the better estimate on a busy machine)")
        for k, label in (("xml", "XML-RPC"), ("json", "JSON-RPC")):
            ratio = best_rps(k) / bbase
            self.summary.append(("pool.get_all %s xapi/nginx, best rounds" % label,
                                 "%.1f%% (%.0f vs %.0f req/s)" % (
                                     100 * ratio, best_rps(k), bbase),
                                 "aim >= %d%%: %s" % (
                                     100 * AIM_TRIVIAL_RATIO,
                                     "met" if ratio >= AIM_TRIVIAL_RATIO else "NOT MET")))
        log()

    # ---- 2 ----
    def populate(self):
        d = self.d
        n = self.args.vms
        before = len(Daemon.ok(d.rpc.VM.get_all(d.session)))
        bodies = [xml_call("VM.create", d.session, vm_record(i)) for i in range(n)]
        t0 = time.monotonic()
        out = self.http_load("/", bodies, ["-c", "8", "-n", str(n), "-e", "Success"],
                             timeout=600)
        dt = time.monotonic() - t0
        r = kv_line(out)
        after = len(Daemon.ok(d.rpc.VM.get_all(d.session)))
        if after - before != n:
            raise BenchError("populate: %d VMs before, %d after, wanted +%d"
                             % (before, after, n))
        self.populate_figs = (n, dt, r, before, after)

    def gar_one(self, path, body, ctype, expect, runs):
        cpu0 = proc_cpu_seconds(self.d.proc.pid)
        out = self.http_load(path, [body], ["-v", "-n", str(runs), "-B", "256",
                                            "-e", expect], ctype=ctype)
        runs_ = []
        for line in out.splitlines():
            if line.startswith("req "):
                f = dict(t.split("=", 1) for t in line.split()[4:])
                runs_.append((float(f["total_ms"]), float(f["ttfb_ms"]),
                              int(f["resp_bytes"])))
        self.gar_cpu_ms = 1e3 * (proc_cpu_seconds(self.d.proc.pid) - cpu0) / runs
        return runs_

    def get_all_records(self):
        d = self.d
        n, dt, r, before, after = self.populate_figs
        log("== 2. VM.get_all_records with %d VMs (end to end, response not parsed) =="
            % after)
        log("  populate: %d x VM.create (full record, XML-RPC) over 8 keep-alive "
            "connections: %.2f s = %.0f creates/s (latency p50 %.2f ms, p99 %.2f ms, "
            "max %.2f ms)" % (n, dt, n / dt, r["lat_p50_ms"], r["lat_p99_ms"],
                               r["lat_max_ms"]))
        self.snap_mem("after populating %d VMs" % n)

        xbody = xml_call("VM.get_all_records", d.session)
        jbody = json_call("VM.get_all_records", d.session)
        first = self.gar_one("/", xbody, "text/xml", "Success", 1)
        self.snap_mem("after one XML-RPC VM.get_all_records")
        xruns = self.gar_one("/", xbody, "text/xml", "Success", GAR_RUNS)
        xcpu = self.gar_cpu_ms
        jfirst = self.gar_one("/jsonrpc", jbody, "application/json", '"result"', 1)
        jruns = self.gar_one("/jsonrpc", jbody, "application/json", '"result"',
                             GAR_RUNS)
        jcpu = self.gar_cpu_ms
        self.snap_mem("after %d get_all_records calls" % (2 + 2 * GAR_RUNS))

        log("  %-9s %9s %8s %8s %9s %9s %11s %9s %7s" % (
            "protocol", "median ms", "min ms", "max ms", "1st call",
            "ttfb med", "daemon CPU", "size MB", "MB/s"))
        for name, fr, rs, cpu in (("XML-RPC", first, xruns, xcpu),
                                  ("JSON-RPC", jfirst, jruns, jcpu)):
            tot = [x[0] for x in rs]
            med = statistics.median(tot)
            size = rs[0][2]
            log("  %-9s %9.1f %8.1f %8.1f %9.1f %9.1f %8.1f ms %9.2f %7.0f" % (
                name, med, min(tot), max(tot), fr[0][0],
                statistics.median([x[1] for x in rs]), cpu, size / 1e6,
                size / 1e6 / (med / 1e3)))
            log("    runs (ms): %s" % ", ".join("%.1f" % t for t in tot))
            aim = ("aim <= %.0f ms: %s" % (AIM_GAR_MS, "met" if med <= AIM_GAR_MS
                                             else "NOT MET")) if name == "XML-RPC" else ""
            self.summary.append(("VM.get_all_records %s, %d VMs" % (name, after),
                                 "%.1f ms median, %.1f MB" % (med, size / 1e6), aim))

        log("  (%d runs each after one untimed first call; ttfb: request sent -> "
            "first byte back, i.e. the time the daemon builds the response before "
            "sending; daemon CPU: per call, all threads)" % GAR_RUNS)
        # Untimed sanity check: the responses hold every VM.
        st, body = http_post(d.url + "/", xbody, "text/xml")
        nx = body.count(b"<member><name>OpaqueRef:")
        st, body = http_post(d.url + "/jsonrpc", jbody, "application/json")
        nj = len(json.loads(body)["result"])
        log("  check: XML-RPC response holds %d records, JSON-RPC %d (VM.get_all: %d)"
            % (nx, nj, after))
        if nx != after or nj != after:
            log("  WARNING: record count differs from VM.get_all")
        log()

    # ---- 3 ----
    def commits(self):
        d = self.d
        log("== 3. Durable commits per second ==")
        refs = []
        for i in range(8):
            rr = Daemon.ok(d.rpc.VM.get_by_name_label(d.session, "bench-vm-%05d" % i))
            if len(rr) != 1:
                raise BenchError("bench-vm-%05d: %d VMs" % (i, len(rr)))
            refs.append(rr[0])
        results = {1: [], 8: []}
        # Two interleaved rounds: fsync latency on a shared disk drifts.
        for writers, secs in ((1, 2), (8, 3), (1, 2), (8, 3)):
            bodies = [xml_call("VM.set_name_label", d.session, refs[i],
                               "bench-w%d-@SEQ@" % i) for i in range(writers)]
            cpu0 = proc_cpu_seconds(d.proc.pid)
            out = self.http_load("/", bodies, ["-c", str(writers), "-s", "-d",
                                               str(secs), "-e", "Success"])
            cpu = proc_cpu_seconds(d.proc.pid) - cpu0
            results[writers].append((kv_line(out), cpu))
        # The writes really landed?
        last = Daemon.ok(d.rpc.VM.get_name_label(d.session, refs[7]))
        if not last.startswith("bench-w7-"):
            raise BenchError("VM 7 is named %r after the writes" % last)
        log("  API: VM.set_name_label (a new label each time) over XML-RPC, each "
            "writer on its own VM and keep-alive connection")
        log("  %-16s %10s %10s %10s %10s %10s %14s" % (
            "writers (round)", "commits/s", "lat mean", "lat p50", "lat p99",
            "lat max", "daemon CPU/op"))
        for writers in (1, 8):
            for i, (r, cpu) in enumerate(results[writers]):
                log("  %-16s %10.0f %8.2fms %8.2fms %8.2fms %8.2fms %12.0fus" % (
                    "%d (%d)" % (writers, i + 1), r["rate"], r["lat_mean_ms"],
                    r["lat_p50_ms"], r["lat_p99_ms"], r["lat_max_ms"],
                    1e6 * cpu / max(r["requests"], 1)))
        api1 = statistics.mean(r["rate"] for r, _ in results[1])
        api8 = statistics.mean(r["rate"] for r, _ in results[8])
        log("  mean: 1 writer %.0f commits/s, 8 writers %.0f commits/s (%.2fx)"
            % (api1, api8, api8 / api1))
        log("  (daemon CPU/op includes the kernel time of its fdatasync calls)")

        exe = os.path.join(self.args.build_dir, "bench", "db-commit")
        log("  db level: %s -t 3 -j 8 (same filesystem as the daemon's state)" % exe)
        if not os.access(exe, os.X_OK):
            log("  SKIPPED: %s is not built" % exe)
            self.summary.append(("durable commits/s, API, 8 writers",
                                 "%.0f (1 writer: %.0f)" % (api8, api1), ""))
            log()
            return
        dbdir = os.path.join(self.work, "db-commit")
        os.makedirs(dbdir)
        p = subprocess.run([exe, "-t", "3", "-j", "8", dbdir], capture_output=True,
                           text=True, timeout=120)
        for line in (p.stdout + p.stderr).rstrip().splitlines():
            log("  | " + line)
        if p.returncode:
            log("  db-commit exited with status %d" % p.returncode)
        m = re.search(r"db_store, 8 threads.*?(\d+) commits/s", p.stdout)
        if m:
            store = float(m.group(1))
            log("  API 8 writers / db_store 8 threads: %.0f / %.0f = %.2f" % (
                api8, store, api8 / store))
            self.summary.append(("durable commits/s, API, 8 writers",
                                 "%.0f (1 writer: %.0f; db_store 8 threads: %.0f)"
                                 % (api8, api1, store), ""))
        else:
            self.summary.append(("durable commits/s, API, 8 writers",
                                 "%.0f (1 writer: %.0f)" % (api8, api1), ""))
        log()

    # ---- 4 ----
    def memory(self):
        log("== 4. Resident memory of the daemon (/proc/PID/status) ==")
        log("  %-46s %10s %10s %8s" % ("when", "VmRSS MB", "VmHWM MB", "threads"))
        for label, m in self.mem:
            log("  %-46s %10.1f %10.1f %8d" % (label, m["VmRSS"], m["VmHWM"],
                                               m["Threads"]))
        db = os.path.join(self.d.state, "state.db")
        sizes = []
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                sizes.append("state.db%s %.1f MB" % (suffix,
                                                     os.path.getsize(db + suffix) / 1e6))
        log("  on disk: " + ", ".join(sizes))
        lab, m = [x for x in self.mem if x[0].startswith("after one")][0]
        self.summary.append(("VmRSS / VmHWM with %d VMs, after one get_all_records"
                             % self.args.vms, "%.0f / %.0f MB" % (m["VmRSS"], m["VmHWM"]),
                             "aim <= %.0f MB: %s" % (
                                 AIM_RSS_MB, "met" if m["VmHWM"] <= AIM_RSS_MB
                                 else "NOT MET")))
        log()

    def background(self, when):
        """Prints the load average and other busy processes: figures taken
        while something else eats CPU are lower than the machine can do."""
        with open("/proc/loadavg") as f:
            la = " ".join(f.read().split()[:3])
        busy = busy_processes({os.getpid(), self.d.proc.pid})
        log("background %s: load average %s; other processes using CPU: %s" % (
            when, la, ", ".join("%s %.0f%%" % b for b in busy[:6]) or "none"))
        if busy:
            log("  WARNING: other processes compete for the CPUs; figures are "
                "lower and noisier than on an idle machine")
        log()

    def run(self):
        d = self.d
        ready = d.start()
        log("daemon: %s" % ready)
        log("        started in %.2f s, state in %s, default workers (8), default "
            "log level" % (d.ready_s, d.state))
        log()
        self.snap_mem("at start (empty pool)")
        self.background("before the benchmarks")
        try:
            only = getattr(self.args, "only", None)
            if only in (None, "trivial"):
                self.trivial()
                self.snap_mem("after the wrk runs")
            if only in (None, "records", "commits"):
                self.populate()
            if only in (None, "records"):
                self.get_all_records()
            if only in (None, "commits"):
                self.commits()
            if only in (None, "records"):
                self.memory()
        finally:
            rc, secs = d.stop()
        self.background("after the benchmarks")
        err = open(d.errfile).read()
        lines = err.splitlines()
        log("daemon: SIGTERM -> exit status %s after %.2f s; %d line(s) on stderr"
            % (rc, secs, len(lines)))
        bad = [l for l in lines if re.search(r"\b(error|warn|ERR|WARN)", l)]
        for l in (bad or lines)[:10]:
            log("  | " + l[:300])
        log()
        log("== Summary ==")
        for fig, val, aim in self.summary:
            log("  %-52s %-44s %s" % (fig, val, aim))
        return 0 if rc == 0 else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--http-load", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--vms", type=int, default=N_VMS)
    ap.add_argument("--only", choices=["trivial", "records", "commits"],
                    help="run one benchmark (records includes memory)")
    args = ap.parse_args()
    b = Bench(args)
    try:
        return b.run()
    except BenchError as e:
        log("bench: ERROR: %s" % e)
        return 1
    finally:
        if b.d.proc and b.d.proc.poll() is None:
            b.d.stop()


if __name__ == "__main__":
    sys.exit(main())
