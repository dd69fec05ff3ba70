#!/usr/bin/env python3
"""storage-bench.py — the storage benchmarks behind bench/run.sh (section 7
and 8; standard library only, plus the clients it measures with).

  7. The block server: xapi-tapdisk (storage/tapdisk.c) serving a VHD over
     NBD on a Unix socket, beside qemu-nbd --format=vpc serving the same
     image in the same run, measured with the same clients: nbdcopy for
     sequential transfers, fio's nbd engine for random 4 KiB and 64 KiB
     requests.  Reads use one image mostly filled with data; sequential
     writes fill a fresh dynamic VHD; random writes overwrite a copy of the
     data image.  Servers run one at a time, in alternating rounds.
  8. VDI data over HTTP: PUT /import_raw_vdi and GET /export_raw_vdi
     (format=raw) of a daemon (xapi --backend sim, its default file SR)
     beside qemu-img convert raw->vpc and vpc->raw of the same image.

It prints figures and never passes or fails on a time; it exits non-zero
only when something does not work.  Images go to --work-dir (the disk
space is checked first: 4 GiB images need about 25 GiB; with less the size
drops to 1 GiB, and the size used is printed).

Usage: storage-bench.py --build-dir DIR --work-dir DIR
                        [--size-gib N] [--runtime S] [--rounds N]
                        [--only nbd|http]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import BenchError, Daemon, busy_processes, log  # noqa: E402

BLOCK = 2 << 20
AIM_RATIO = 0.90


def background(when):
    """The load average and other busy processes: figures taken while
    something else eats CPU are lower than the machine can do."""
    with open("/proc/loadavg") as f:
        la = " ".join(f.read().split()[:3])
    busy = busy_processes({os.getpid()})
    log("background %s: load average %s on %d CPUs; other processes using CPU: "
        "%s" % (when, la, os.cpu_count(),
                ", ".join("%s %.0f%%" % b for b in busy[:6]) or "none"))


def run(cmd, timeout=600, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       **kw)
    if p.returncode:
        raise BenchError("%s failed (%d):\n%s%s" % (
            " ".join(cmd), p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    return p.stdout


def timed(cmd, timeout=600):
    t0 = time.monotonic()
    run(cmd, timeout)
    return time.monotonic() - t0


def drop_page_cache_note():
    return ("images are in the page cache (the machine has %.0f GB of RAM), so "
            "these figures are the servers' CPU cost, not the disk's" %
            (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9))


def make_data_raw(path, size):
    """A raw image whose 2 MiB blocks hold data, except every 16th, which
    stays a hole: most of a used disk is data, and a little is not."""
    base = bytearray(os.urandom(BLOCK))
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(size // BLOCK):
            if i % 16 == 15:
                continue
            base[0:8] = i.to_bytes(8, "little")
            f.seek(i * BLOCK)
            f.write(base)


def vhd_create(path, size):
    run(["qemu-img", "create", "-q", "-f", "vpc", "-o",
         "subformat=dynamic,force_size=on", path, str(size)])


def raw_to_vhd(raw, vhd):
    return timed(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
                  "subformat=dynamic,force_size=on", raw, vhd])


def fsync_time(path):
    """Seconds to make path durable.  qemu-img convert writes its output
    with cache=unsafe (it never calls fdatasync after creating the
    image), so its time leaves the data in the page cache; an import
    flushes before its task succeeds, and the fair peer is the convert
    plus this."""
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - t0


# ---- NBD servers ----

class Server:
    """One NBD server on a Unix socket: xapi-tapdisk or qemu-nbd."""

    def __init__(self, kind, build_dir, work, image, read_only):
        self.kind = kind
        self.sock = os.path.join(work, "%s.sock" % kind)
        self.uri = "nbd+unix:///?socket=" + self.sock
        self.errfile = os.path.join(work, "%s.stderr" % kind)
        if kind == "xapi-tapdisk":
            cmd = [os.path.join(build_dir, "storage", "xapi-tapdisk"),
                   "--socket", self.sock, "--vhd", image]
            if read_only:
                cmd.append("--read-only")
        else:
            # -e 16: as many clients at once as xapi-tapdisk takes (the
            # default, 1, would serialize nbdcopy's connections).
            cmd = ["qemu-nbd", "--format=vpc", "-e", "16", "-t", "-k",
                   self.sock, image]
            if read_only:
                cmd.append("-r")
        self.err = open(self.errfile, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err,
                                     text=True)
        deadline = time.monotonic() + 20
        if kind == "xapi-tapdisk":
            line = self.proc.stdout.readline()
            if line != "ready\n":
                raise BenchError("xapi-tapdisk did not start: %r %s" % (
                    line, open(self.errfile).read()))
            return
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("qemu-nbd did not start: " +
                                 open(self.errfile).read())
            time.sleep(0.02)

    def cpu(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        if os.path.exists(self.sock):
            os.unlink(self.sock)


def fio(uri, rw, bs, runtime, depth=16, size=None):
    """fio with its nbd engine (libnbd, one connection, depth requests in
    flight): (IOPS, MB/s)."""
    cmd = ["fio", "--name=bench", "--ioengine=nbd", "--uri=" + uri,
           "--rw=" + rw, "--bs=" + bs, "--iodepth=%d" % depth,
           "--runtime=%d" % runtime, "--time_based", "--output-format=json"]
    if size:
        cmd.append("--size=%d" % size)
    out = run(cmd, timeout=runtime + 120)
    # The nbd engine prints a line before the JSON.
    j = json.loads(out[out.index("{"):])["jobs"][0]
    if j.get("error"):
        raise BenchError("fio %s %s: error %s" % (rw, bs, j["error"]))
    d = j["read" if "read" in rw else "write"]
    return {"mbs": d["bw_bytes"] / 1e6, "iops": d["iops"],
            "ops": d["total_ios"], "bytes": d["io_bytes"]}


def nbdcopy(src, dst, size):
    """nbdcopy (4 connections when the server allows multi-conn)."""
    return {"mbs": size / 1e6 / timed(["nbdcopy", src, dst], timeout=900),
            "iops": None, "ops": None, "bytes": size}


class NbdBench:
    def __init__(self, args, work, size):
        self.args = args
        self.work = work
        self.size = size
        self.rows = {}          # test name -> {kind: [result dict]}

    def measure(self, srv, test, fn):
        cpu0 = srv.cpu()
        r = fn()
        r["cpu"] = srv.cpu() - cpu0
        self.rows.setdefault(test, {}).setdefault(srv.kind, []).append(r)

    def run(self):
        a = self.args
        w = self.work
        size = self.size
        gib = size / (1 << 30)
        log("== 7. Block server: xapi-tapdisk vs qemu-nbd --format=vpc, NBD on "
            "a Unix socket, %.0f GiB VHD ==" % gib)
        raw = os.path.join(w, "data.raw")
        vhd = os.path.join(w, "data.vhd")
        t0 = time.monotonic()
        make_data_raw(raw, size)
        conv = raw_to_vhd(raw, vhd)
        log("  image: %s, %.0f GiB virtual, 15 of every 16 2 MiB blocks hold "
            "data (made in %.1f s; qemu-img convert raw->vpc %.1f s), %.2f GB "
            "on disk" % (vhd, gib, time.monotonic() - t0, conv,
                         os.stat(vhd).st_blocks * 512 / 1e9))
        log("  " + drop_page_cache_note())
        log("  clients: nbdcopy %s (sequential, 4 connections), fio %s nbd "
            "engine (random, 1 connection, %d in flight), %d s per random run, "
            "%d rounds, servers alternating" % (
                run(["nbdcopy", "--version"]).split()[1],
                run(["fio", "--version"]).strip(), 16, a.runtime, a.rounds))
        kinds = ["xapi-tapdisk", "qemu-nbd"]
        for rnd in range(a.rounds):
            order = kinds if rnd % 2 == 0 else kinds[::-1]
            for kind in order:
                # Reads: the data image, read-only.
                srv = Server(kind, a.build_dir, w, vhd, True)
                try:
                    self.measure(srv, "seq read (nbdcopy -> null:)",
                                 lambda: nbdcopy(srv.uri, "null:", size))
                    for bs in ("4k", "64k"):
                        self.measure(srv, "rand read %s" % bs,
                                     lambda: fio(srv.uri, "randread", bs,
                                                 a.runtime, size=size))
                finally:
                    srv.stop()
                # Sequential write: the raw data into a fresh dynamic VHD
                # (block allocation included; nbdcopy flushes at the end).
                target = os.path.join(w, "write.vhd")
                vhd_create(target, size)
                srv = Server(kind, a.build_dir, w, target, False)
                try:
                    self.measure(srv, "seq write (nbdcopy raw ->), allocating",
                                 lambda: nbdcopy(raw, srv.uri, size))
                finally:
                    srv.stop()
                os.unlink(target)
                # Random writes: overwriting a copy of the data image.
                shutil.copyfile(vhd, target)
                srv = Server(kind, a.build_dir, w, target, False)
                try:
                    for bs in ("4k", "64k"):
                        self.measure(srv, "rand write %s, overwriting" % bs,
                                     lambda: fio(srv.uri, "randwrite", bs,
                                                 a.runtime, size=size))
                finally:
                    srv.stop()
                os.unlink(target)
        self.report()
        os.unlink(raw)
        os.unlink(vhd)

    def report(self):
        log("  %-40s %-17s %9s %9s %11s %9s" % (
            "test", "server (round)", "MB/s", "IOPS", "CPU us/op", "CPU s/GB"))
        self.summary = []
        for test, by_kind in self.rows.items():
            best = {}
            for kind in ("xapi-tapdisk", "qemu-nbd"):
                rs = by_kind.get(kind, [])
                for i, r in enumerate(rs):
                    log("  %-40s %-17s %9.1f %9s %11s %9.2f" % (
                        test if kind == "xapi-tapdisk" and i == 0 else "",
                        "%s (%d)" % (kind, i + 1), r["mbs"],
                        "%.0f" % r["iops"] if r["iops"] else "-",
                        "%.1f" % (1e6 * r["cpu"] / r["ops"]) if r["ops"]
                        else "-", r["cpu"] / (r["bytes"] / 1e9)))
                best[kind] = max(r["mbs"] for r in rs) if rs else 0.0
            mean = {k: statistics.mean(r["mbs"] for r in by_kind[k])
                    for k in by_kind}
            ratio = best["xapi-tapdisk"] / best["qemu-nbd"]
            log("  %-40s best rounds %.1f vs %.1f MB/s = %.0f%%; means %.1f vs "
                "%.1f = %.0f%%" % (
                    "", best["xapi-tapdisk"], best["qemu-nbd"], 100 * ratio,
                    mean["xapi-tapdisk"], mean["qemu-nbd"],
                    100 * mean["xapi-tapdisk"] / mean["qemu-nbd"]))
            self.summary.append(("NBD " + test, best["xapi-tapdisk"],
                                 best["qemu-nbd"], ratio))
        log("  (CPU: the server process's CPU time over the run per request "
            "and per GB moved, which background load changes less than the "
            "throughput; the client shares the same CPUs.  Background load "
            "only lowers figures, so the best round is the better estimate "
            "on a busy machine)")
        log()


# ---- VDI import/export over HTTP ----

class HttpBench:
    def __init__(self, args, work, size):
        self.args = args
        self.work = work
        self.size = size
        self.summary = []
        self.tails = []         # seconds from the body sent to success
        self.cpu = []           # daemon CPU seconds per GB imported

    def daemon_cpu(self, d):
        with open("/proc/%d/stat" % d.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def call(self, d, method, *params):
        obj = d.rpc
        for part in method.split("."):
            obj = getattr(obj, part)
        return Daemon.ok(obj(d.session, *params))

    def create_vdi(self, d, name):
        sr = self.call(d, "pool.get_default_SR",
                       self.call(d, "pool.get_all")[0])
        if sr == "OpaqueRef:NULL":
            # An older daemon without a default SR: any file SR will do.
            srs = self.call(d, "SR.get_all_records")
            files = [r for r, rec in srs.items() if rec["type"] == "file"]
            if not files:
                raise BenchError("the daemon has no file SR to import into")
            sr = files[0]
        rec = {"name_label": name, "name_description": "storage-bench",
               "SR": sr, "virtual_size": str(self.size), "type": "user",
               "sharable": False, "read_only": False, "other_config": {},
               "xenstore_data": {}, "sm_config": {}, "tags": []}
        return self.call(d, "VDI.create", rec)

    def request_head(self, s):
        """Reads an HTTP response head from s: (status, headers dict,
        leftover body bytes)."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise BenchError("connection closed before a response: %r"
                                 % buf[:300])
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return status, hdrs, rest

    def wait_task(self, d, task, timeout=900):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.call(d, "task.get_status", task)
            if st != "pending":
                if st != "success":
                    info = self.call(d, "task.get_error_info", task)
                    raise BenchError("task %s: %s %r" % (task, st, info))
                return
            time.sleep(0.02)
        raise BenchError("task %s still pending after %d s" % (task, timeout))

    def put(self, d, vdi, raw):
        """PUT /import_raw_vdi; returns seconds, or None when the handler
        answers 501."""
        task = self.call(d, "task.create", "storage-bench import", "")
        q = urllib.parse.urlencode({"session_id": d.session, "vdi": vdi,
                                    "format": "raw", "task_id": task})
        s = socket.create_connection(("127.0.0.1", d.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        cpu0 = self.daemon_cpu(d)
        t0 = time.monotonic()
        s.sendall(("PUT /import_raw_vdi?%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Content-Length: %d\r\n\r\n" % (q, self.size)).encode())
        sent = {}

        def send_body():
            try:
                with open(raw, "rb") as f:
                    sent["n"] = s.sendfile(f)
                sent["t"] = time.monotonic()
            except OSError as e:
                sent["error"] = e
        th = threading.Thread(target=send_body, daemon=True)
        th.start()
        status, hdrs, _ = self.request_head(s)
        if status == 501:
            s.close()
            return None
        if status != 200:
            s.close()
            raise BenchError("PUT /import_raw_vdi answered %d" % status)
        th.join(900)
        if "error" in sent:
            raise BenchError("sending the image: %s" % sent["error"])
        self.wait_task(d, task)
        dt = time.monotonic() - t0
        s.close()
        # The client's last byte left while the daemon still held up to a
        # socket buffer; what follows is mostly its final flush.
        self.tails.append(t0 + dt - sent.get("t", t0 + dt))
        self.cpu.append((self.daemon_cpu(d) - cpu0) / (self.size / 1e9))
        return dt

    def get(self, d, vdi):
        """GET /export_raw_vdi to nowhere; returns seconds, or None when the
        handler answers 501."""
        q = urllib.parse.urlencode({"session_id": d.session, "vdi": vdi,
                                    "format": "raw"})
        s = socket.create_connection(("127.0.0.1", d.port))
        t0 = time.monotonic()
        s.sendall(("GET /export_raw_vdi?%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Connection: close\r\n\r\n" % q).encode())
        status, hdrs, rest = self.request_head(s)
        if status == 501:
            s.close()
            return None
        if status != 200:
            s.close()
            raise BenchError("GET /export_raw_vdi answered %d" % status)
        n = len(rest)
        buf = bytearray(4 << 20)
        want = int(hdrs["content-length"]) if "content-length" in hdrs else None
        while want is None or n < want:
            r = s.recv_into(buf)
            if not r:
                break
            n += r
        dt = time.monotonic() - t0
        s.close()
        if n != self.size:
            raise BenchError("GET /export_raw_vdi gave %d bytes, expected %d"
                             % (n, self.size))
        return dt

    def run(self):
        a = self.args
        w = self.work
        size = self.size
        gib = size / (1 << 30)
        log("== 8. VDI data over HTTP: /import_raw_vdi and /export_raw_vdi "
            "(format=raw), %.0f GiB, beside qemu-img convert ==" % gib)
        raw = os.path.join(w, "data.raw")
        vhd = os.path.join(w, "data.vhd")
        make_data_raw(raw, size)
        d = Daemon(a.build_dir, os.path.join(w, "daemon"))
        os.makedirs(os.path.join(w, "daemon"))
        d.start()
        log("  daemon: xapi --backend sim, state and default SR in %s" % d.state)
        try:
            imports, exports, q_imports, q_exports = [], [], [], []
            q_synced = []
            for rnd in range(a.rounds):
                vdi = self.create_vdi(d, "bench-import-%d" % rnd)
                dt = self.put(d, vdi, raw)
                if dt is None:
                    log("  PUT /import_raw_vdi answers 501: not available yet")
                    log()
                    return
                imports.append(size / 1e6 / dt)
                dt = self.get(d, vdi)
                if dt is None:
                    log("  GET /export_raw_vdi answers 501: not available yet")
                else:
                    exports.append(size / 1e6 / dt)
                self.call(d, "VDI.destroy", vdi)
                conv = raw_to_vhd(raw, vhd)
                q_imports.append(size / 1e6 / conv)
                q_synced.append(size / 1e6 / (conv + fsync_time(vhd)))
                # qemu-img cannot write to /dev/null (it sizes its
                # output), so it writes a sparse raw file.
                out = os.path.join(w, "export.raw")
                q_exports.append(size / 1e6 / timed(
                    ["qemu-img", "convert", "-f", "vpc", "-O", "raw", vhd,
                     out]))
                os.unlink(out)
                os.unlink(vhd)
        finally:
            rc, secs = d.stop()
            os.unlink(raw)
        log("  %-44s %s" % ("", "MB/s per round (mean)"))
        rows = [("PUT /import_raw_vdi (raw -> VHD in the SR)", imports),
                ("qemu-img convert raw -> vpc (peer, no flush)", q_imports),
                ("qemu-img convert raw -> vpc + fsync (peer)", q_synced),
                ("GET /export_raw_vdi (VHD -> raw, to memory)", exports),
                ("qemu-img convert vpc -> raw file (peer)", q_exports)]
        for name, vals in rows:
            if vals:
                log("  %-44s %s (%.0f)" % (name, ", ".join(
                    "%.0f" % v for v in vals), statistics.mean(vals)))
        if self.tails:
            log("  %-44s %s" % ("import: s from body sent to task success",
                                ", ".join("%.2f" % t for t in self.tails)))
            log("  %-44s %s" % ("import: daemon CPU s per GB",
                                ", ".join("%.2f" % c for c in self.cpu)))
            log("  %-44s %s" % ("qemu-img convert: s for the fsync after",
                                ", ".join("%.2f" % (size / 1e6 / s - size / 1e6 / q)
                                          for q, s in zip(q_imports, q_synced))))
        for name, ours, peer in (("import_raw_vdi vs qemu-img raw->vpc",
                                  imports, q_imports),
                                 ("import_raw_vdi vs qemu-img raw->vpc+fsync",
                                  imports, q_synced),
                                 ("export_raw_vdi vs qemu-img vpc->raw",
                                  exports, q_exports)):
            if ours and peer:
                r = max(ours) / max(peer)
                log("  %s: best rounds %.0f vs %.0f MB/s = %.0f%%; means "
                    "%.0f%%" % (name, max(ours), max(peer), 100 * r,
                                100 * statistics.mean(ours)
                                / statistics.mean(peer)))
                self.summary.append((name, max(ours), max(peer), r))
        log("  (the import's time runs from the request to its task's "
            "success, which comes after the daemon's fdatasync; the body is "
            "the same raw file qemu-img reads.  qemu-img convert writes with "
            "cache=unsafe and never flushes its output: the \"+ fsync\" peer "
            "adds an fsync of its image, the like-for-like figure.  The "
            "daemon exited with status %s after %.1f s)" % (rc, secs))
        log()


def pick_size(work, want_gib):
    free = shutil.disk_usage(work).free
    # The raw file, the VHD, one written copy, and room for the daemon's.
    need_bytes = want_gib * (1 << 30) * 6
    if free >= need_bytes:
        return want_gib << 30
    log("  only %.1f GB free in %s: using 1 GiB images instead of %d GiB" % (
        free / 1e9, work, want_gib))
    return 1 << 30


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--size-gib", type=int, default=4)
    ap.add_argument("--runtime", type=int, default=5,
                    help="seconds per random-I/O run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["nbd", "http"])
    args = ap.parse_args()
    args.build_dir = os.path.abspath(args.build_dir)
    work = os.path.join(args.work_dir, "storage")
    os.makedirs(work, exist_ok=True)
    status = 0
    summary = []
    missing = [t for t in ("qemu-img", "qemu-nbd", "nbdcopy", "fio")
               if not shutil.which(t)]
    if missing:
        log("storage benchmarks SKIPPED: %s not installed (Debian: qemu-utils, "
            "libnbd-bin, fio)" % ", ".join(missing))
        return 0
    background("before the storage benchmarks")
    log()
    try:
        size = pick_size(work, args.size_gib)
        if args.only in (None, "nbd"):
            nb = NbdBench(args, work, size)
            nb.run()
            summary += nb.summary
        if args.only in (None, "http"):
            hb = HttpBench(args, work, size)
            hb.run()
            summary += hb.summary
    except BenchError as e:
        log("storage-bench: ERROR: %s" % e)
        status = 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    background("after the storage benchmarks")
    log()
    if summary:
        log("== Storage summary (ours vs peer, MB/s, best rounds; aim >= %d%%) =="
            %
            (100 * AIM_RATIO))
        for name, ours, peer, r in summary:
            log("  %-44s %9.1f vs %9.1f  %5.0f%%  %s" % (
                name, ours, peer, 100 * r,
                "met" if r >= AIM_RATIO else "NOT MET"))
    return status


if __name__ == "__main__":
    sys.exit(main())
