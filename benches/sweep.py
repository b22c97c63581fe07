#!/usr/bin/env python3
"""Scale sweep: how the broker's costs grow with the work, one dimension at
a time, written as CSV and drawn as SVG curves.

Dimensions (each point on a fresh broker, a child process with its own data
dir and loopback ports):

- partitions: one topic of N partitions (1 -> 10,000).
- connections: N idle client connections (each sent ApiVersions, as clients
  do first) beside the busy producers (1 -> 10,000).
- groups: N classic consumer groups of one member each, heartbeating every
  second over a few connections (1 -> 1,000).

At every point it measures, with `weir bench` (a release build of this
repository's load tool):

- throughput: 1 KiB records, acks=1, 4 producer connections, as fast as the
  broker takes them (`mb_per_s`);
- produce latency at a fixed rate of 10,000 records/s, corrected for
  coordinated omission (`p50_ms`, `p99_ms`, `p999_ms`), measured before
  the run at full speed (whose writeback would weigh on it);
- broker CPU seconds per GiB produced during the throughput run, from
  /proc/<pid>/stat (`cpu_s_per_gib`);
- broker CPU while nothing is produced, as a share of one core
  (`idle_cpu_pct`: timers, heartbeats, per-partition work);
- resident memory and open file descriptors after the runs (`rss_mib`,
  `fds`);
- a graceful stop (SIGTERM until the process exits, `stop_ms`), then a
  start on the same data dir until /api/health answers 200
  (`restart_ms`).

    python3 benches/sweep.py --weir target/release/weir --out docs/perf
    python3 benches/sweep.py --dims partitions --points 1,100,10000 --out /tmp/p

Writes OUT/sweep.csv and one SVG per dimension and metric
(OUT/sweep-<dimension>-<metric>.svg). The machine is shared and noisy:
compare points of one run, not runs of different days.
"""
import argparse
import csv
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idle_connections import free_port, http_json, open_connections, wait_connections  # noqa: E402

DEFAULT_POINTS = {
    "partitions": [1, 10, 100, 1000, 10000],
    "connections": [1, 10, 100, 1000, 10000],
    "groups": [1, 10, 100, 1000],
}
METRICS = [
    ("mb_per_s", "throughput (MB/s)"),
    ("p50_ms", "produce p50 at 10k records/s (ms)"),
    ("p99_ms", "produce p99 at 10k records/s (ms)"),
    ("p999_ms", "produce p99.9 at 10k records/s (ms)"),
    ("cpu_s_per_gib", "broker CPU s per GiB produced"),
    ("idle_cpu_pct", "broker CPU when idle (% of a core)"),
    ("rss_mib", "resident memory (MiB)"),
    ("fds", "open file descriptors"),
    ("stop_ms", "graceful stop (ms)"),
    ("restart_ms", "restart until healthy (ms)"),
]
TICKS = os.sysconf("SC_CLK_TCK")


class Broker:
    """A weir child process on loopback ports with its own data dir."""

    def __init__(self, weir, data, extra):
        self.weir, self.data, self.extra = weir, data, extra
        self.kport, self.hport = free_port(), free_port()
        self.proc = None
        self.log = open(os.path.join(os.path.dirname(data), "broker.log"), "ab")

    def start(self):
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.weir, "--data-dir", self.data,
             "--listen", f"127.0.0.1:{self.kport}",
             "--advertised-listener", f"127.0.0.1:{self.kport}",
             "--http-listen", f"127.0.0.1:{self.hport}",
             "--max-connections", "20000",
             "--group-initial-rebalance-delay-ms", "0",
             "--http-rate-limit", "10000",
             "--log-format", "text", "--log-level", "warn",
             *self.extra],
            stdout=self.log, stderr=self.log)
        deadline = t0 + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited ({self.proc.returncode}); see its log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.hport}/api/health", timeout=2) as r:
                    if r.status == 200:
                        return (time.monotonic() - t0) * 1000.0
            except OSError:
                pass
            time.sleep(0.02)
        raise SystemExit("broker not healthy within 300 s")

    def stop(self):
        """SIGTERM and wait; the milliseconds until it exited."""
        t0 = time.monotonic()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return (time.monotonic() - t0) * 1000.0

    def cpu_s(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


def bench(weir, broker, partitions, secs, rate=None, topic="sweep"):
    cmd = [weir, "bench", "produce", "--bootstrap", f"127.0.0.1:{broker.kport}",
           "--topic", topic, "--partitions", str(partitions), "--record-size", "1024",
           "--producers", "4", "--acks", "1", "--duration-secs", str(secs), "--json"]
    if rate:
        cmd += ["--rate", str(rate)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=secs + 600)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- classic groups over raw sockets (JoinGroup/SyncGroup/Heartbeat v0) ---

def kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def kbytes(b):
    return struct.pack(">i", len(b)) + b


def request(sock, key, corr, body):
    head = struct.pack(">hhi", key, 0, corr) + kstr("sweep")
    frame = head + body
    sock.sendall(struct.pack(">i", len(frame)) + frame)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    resp = recv_exact(sock, size)
    return resp[4:]  # after the correlation id


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise SystemExit("connection closed by the broker")
        buf += chunk
    return bytes(buf)


def read_str(b, pos):
    n = struct.unpack_from(">h", b, pos)[0]
    return b[pos + 2:pos + 2 + max(n, 0)].decode(), pos + 2 + max(n, 0)


class Groups:
    """N one-member classic groups, heartbeating every second."""

    def __init__(self, kport, n, conns=8):
        self.socks = [socket.create_connection(("127.0.0.1", kport), timeout=30) for _ in range(conns)]
        self.members = []
        sub = struct.pack(">h", 0) + struct.pack(">i", 1) + kstr("sweep") + struct.pack(">i", -1)
        for i in range(n):
            s = self.socks[i % conns]
            gid = f"sweep-group-{i}"
            body = (kstr(gid) + struct.pack(">i", 30000) + kstr("") + kstr("consumer")
                    + struct.pack(">i", 1) + kstr("range") + kbytes(sub))
            r = request(s, 11, i, body)
            err, gen = struct.unpack_from(">hi", r, 0)
            if err:
                raise SystemExit(f"JoinGroup of {gid}: error {err}")
            _proto, pos = read_str(r, 6)
            _leader, pos = read_str(r, pos)
            member, pos = read_str(r, pos)
            body = (kstr(gid) + struct.pack(">i", gen) + kstr(member) + struct.pack(">i", 1)
                    + kstr(member) + kbytes(struct.pack(">hi", 0, 0) + struct.pack(">i", -1)))
            r = request(s, 14, i, body)
            if struct.unpack_from(">h", r, 0)[0]:
                raise SystemExit(f"SyncGroup of {gid} failed")
            self.members.append((s, gid, gen, member))
        self.stop = threading.Event()
        self.errors = 0
        self.thread = threading.Thread(target=self.beat, daemon=True)
        self.thread.start()

    def beat(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            for i, (s, gid, gen, member) in enumerate(self.members):
                r = request(s, 12, i, kstr(gid) + struct.pack(">i", gen) + kstr(member))
                if struct.unpack_from(">h", r, 0)[0]:
                    self.errors += 1
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))

    def close(self):
        self.stop.set()
        self.thread.join(10)
        for s in self.socks:
            s.close()


def measure(args, dim, n, work):
    data = os.path.join(work, f"{dim}-{n}", "data")
    os.makedirs(data)
    b = Broker(args.weir, data, args.broker_arg)
    b.start()
    partitions = n if dim == "partitions" else 4
    held, groups = [], None
    try:
        # The topic first (creating 10,000 partitions is not what is timed).
        bench(args.weir, b, partitions, 1, rate=1000)
        if dim == "connections":
            held = open_connections(b.kport, n, True)
            wait_connections(b.hport, n, timeout=120)
        if dim == "groups":
            groups = Groups(b.kport, n)
        time.sleep(1.0)
        c0, t0 = b.cpu_s(), time.monotonic()
        time.sleep(args.idle_secs)
        idle = (b.cpu_s() - c0) / (time.monotonic() - t0) * 100.0
        # The fixed rate first: after the run at full speed the kernel is
        # still writing its dirty pages back for a while.
        fixed = bench(args.weir, b, partitions, args.secs, rate=10_000)
        lat = fixed["produce_latency"]
        c0 = b.cpu_s()
        full = bench(args.weir, b, partitions, args.secs)
        cpu = b.cpu_s() - c0
        gib = full["produced"]["bytes"] / 2**30
        row = {
            "dimension": dim, "n": n,
            "mb_per_s": full["produced"]["mb_per_s"],
            "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"], "p999_ms": lat["p999_ms"],
            "cpu_s_per_gib": round(cpu / gib, 3) if gib > 0 else "",
            "idle_cpu_pct": round(idle, 2),
            "rss_mib": round(b.rss_mib(), 1),
            "fds": b.fds(),
            "errors": full["produced"]["errors"] + fixed["produced"]["errors"]
            + (groups.errors if groups else 0),
        }
    finally:
        if groups:
            groups.close()
        for s in held:
            s.close()
        row["stop_ms"] = round(b.stop(), 1)
    row["restart_ms"] = round(b.start(), 1)
    b.stop()
    shutil.rmtree(os.path.join(work, f"{dim}-{n}"), ignore_errors=True)
    return row


def svg(path, title, xs, series, logy=False):
    """A line chart with a log-scaled x. With `logy` the y axis is log-scaled
    too and a dashed line of slope 1 through the first point shows linear
    growth: a curve under it grows slower than the work, one above faster."""
    import math
    w, h, l, r, t, btm = 680, 380, 70, 50, 40, 50
    ys = [y for _, pts in series for y in pts if y is not None and (y > 0 or not logy)]
    if not ys:
        return
    lx = [math.log10(max(x, 1)) for x in xs]
    x0, x1 = min(lx), max(lx) if max(lx) > min(lx) else min(lx) + 1
    if logy:
        lo = math.log10(min(ys)) - 0.2
        hi = max(math.log10(max(ys)), math.log10(ys[0]) + (x1 - x0) if series else 0) + 0.2

        def fy(y):
            return (math.log10(y) - lo) / (hi - lo)
    else:
        ymax = max(ys) * 1.1 if max(ys) > 0 else 1.0

        def fy(y):
            return y / ymax

    def px(x):
        return l + (math.log10(max(x, 1)) - x0) / (x1 - x0) * (w - l - r)

    def py(y):
        return h - btm - fy(y) * (h - t - btm)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{l}" y1="{h - btm}" x2="{w - r}" y2="{h - btm}" stroke="black"/>',
           f'<line x1="{l}" y1="{t}" x2="{l}" y2="{h - btm}" stroke="black"/>']
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{h - btm + 18}" text-anchor="middle">{x:,}</text>')
    ticks = [10 ** (lo + (hi - lo) * i / 4) for i in range(5)] if logy else [ymax * i / 4 for i in range(5)]
    for y in ticks:
        out.append(f'<line x1="{l}" y1="{py(y):.1f}" x2="{w - r}" y2="{py(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{l - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    if logy:
        first = next(((x, y) for x, y in zip(xs, series[0][1]) if y is not None and y > 0), None)
        if first:
            fx, fyv = first
            a, b = px(fx), py(fyv)
            c, d = px(xs[-1]), py(fyv * xs[-1] / max(fx, 1))
            out.append(f'<line x1="{a:.1f}" y1="{b:.1f}" x2="{c:.1f}" y2="{d:.1f}" stroke="#999" stroke-dasharray="5,4"/>')
            out.append(f'<text x="{l + 8}" y="{t + 14 * (len(series) + 1)}" fill="#999">linear</text>')
    for k, (name, pts) in enumerate(series):
        c = colours[k % len(colours)]
        coords = [(px(x), py(y)) for x, y in zip(xs, pts) if y is not None and (y > 0 or not logy)]
        out.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
            c, " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)))
        for a, b in coords:
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{c}"/>')
        out.append(f'<text x="{l + 8}" y="{t + 14 * (k + 1)}" fill="{c}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def draw(out_dir, rows):
    dims = sorted({r["dimension"] for r in rows})
    for dim in dims:
        pts = [r for r in rows if r["dimension"] == dim]
        xs = [int(r["n"]) for r in pts]

        def col(key):
            return [float(r[key]) if r.get(key) not in ("", None) else None for r in pts]

        svg(os.path.join(out_dir, f"sweep-{dim}-latency.svg"),
            f"produce latency at 10k records/s (ms) by {dim}", xs,
            [("p50", col("p50_ms")), ("p99", col("p99_ms")), ("p99.9", col("p999_ms"))])
        for key, label in METRICS:
            if key.startswith("p"):
                continue
            cost = key in ("idle_cpu_pct", "rss_mib", "fds", "stop_ms", "restart_ms")
            scale = " (log-log)" if cost else ""
            svg(os.path.join(out_dir, f"sweep-{dim}-{key}.svg"), f"{label} by {dim}{scale}", xs,
                [(dim, col(key))], logy=cost)


def draw_compare(out_dir, runs):
    """Curves of several runs (label -> rows) on one chart per metric."""
    dims = sorted({r["dimension"] for rows in runs.values() for r in rows})
    for dim in dims:
        for key, label in METRICS:
            series, xs = [], None
            for name, rows in runs.items():
                pts = [r for r in rows if r["dimension"] == dim]
                if not pts:
                    continue
                xs = xs or [int(r["n"]) for r in pts]
                series.append((name, [float(r[key]) if r.get(key) not in ("", None) else None for r in pts]))
            if series:
                cost = key in ("idle_cpu_pct", "rss_mib", "fds", "stop_ms", "restart_ms")
                svg(os.path.join(out_dir, f"compare-{dim}-{key}.svg"),
                    f"{label} by {dim}" + (" (log-log)" if cost else ""), xs, series, logy=cost)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--out", default="docs/perf")
    ap.add_argument("--dims", default="partitions,connections,groups")
    ap.add_argument("--points", default="", help="comma list of N for every dimension asked")
    ap.add_argument("--secs", type=int, default=6, help="seconds of each bench run")
    ap.add_argument("--idle-secs", type=float, default=3.0)
    ap.add_argument("--broker-arg", action="append", default=[], help="extra broker argument")
    ap.add_argument("--compare", default="",
                    help="label=CSV,... : draw those runs side by side into --out instead of measuring")
    args = ap.parse_args()
    if args.compare:
        runs = {}
        for item in args.compare.split(","):
            name, _, path = item.partition("=")
            with open(path) as f:
                runs[name] = list(csv.DictReader(f))
        os.makedirs(args.out, exist_ok=True)
        draw_compare(args.out, runs)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="weir-sweep-")
    rows = []
    try:
        for dim in args.dims.split(","):
            points = [int(p) for p in args.points.split(",")] if args.points else DEFAULT_POINTS[dim]
            for n in points:
                row = measure(args, dim, n, work)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fields = ["dimension", "n", "mb_per_s", "p50_ms", "p99_ms", "p999_ms", "cpu_s_per_gib",
              "idle_cpu_pct", "rss_mib", "fds", "stop_ms", "restart_ms", "errors"]
    with open(os.path.join(args.out, "sweep.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    draw(args.out, rows)
    print(f"wrote {args.out}/sweep.csv and its curves", flush=True)


if __name__ == "__main__":
    main()
