#!/usr/bin/env python3
"""Memory of idle Kafka connections: the broker's resident memory before,
while N connections are open and after they closed, over several bursts.

Starts a `weir` binary as a child (its own data dir, loopback ports,
--max-connections above N), opens N TCP connections to the Kafka listener
(each optionally sends one ApiVersions request and reads the answer, as a
client does first), waits until the broker counts them, reads VmRSS and
RssAnon from /proc/<pid>/status, closes them all, waits until the broker
counts none, and reads again. Repeating the burst tells per-connection state
kept after close (memory climbs with every burst) from an allocator keeping
freed pages for reuse (memory stays at the first burst's level).

    python3 benches/idle_connections.py --weir target/release/weir --conns 10000 --bursts 3
    python3 benches/idle_connections.py --env MALLOC_ARENA_MAX=2 ...
    python3 benches/idle_connections.py --trim-with-gdb ...   # gdb: call malloc_trim(0) at the end

Prints one line per step and a JSON summary on the last line.
"""
import argparse
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid):
    """VmRSS and RssAnon of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
                out[key] = int(value.split()[0])
    return out


def http_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.load(r)


def wait_connections(hport, want, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            n = http_json(hport, "/api/status")["connections"]
            if n == want:
                return n
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"broker did not reach {want} connections")



def api_versions_request():
    # Request header v1: api key 18, version 0, correlation id, client id.
    client_id = b"idle-bench"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def open_connections(kport, n, send_api_versions):
    socks = []
    req = api_versions_request()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", kport), timeout=10)
        socks.append(s)
        if send_api_versions:
            s.sendall(req)
        # Do not outrun the listen backlog.
        if i % 500 == 499:
            time.sleep(0.05)
    if send_api_versions:
        for s in socks:
            size = struct.unpack(">i", recv_exact(s, 4))[0]
            recv_exact(s, size)
    return socks


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise SystemExit("connection closed by the broker")
        buf += chunk
    return buf


def gdb_malloc_trim(pid):
    subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-ex", "call (int) malloc_trim(0)"],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--no-api-versions", action="store_true", help="leave the connections silent")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before each reading")
    ap.add_argument("--env", action="append", default=[], help="K=V for the broker's environment")
    ap.add_argument("--broker-arg", action="append", default=[], help="extra broker argument")
    ap.add_argument("--show-trims", action="store_true", help="print the broker's own trims (debug log of weir::memory)")
    ap.add_argument("--trim-with-gdb", action="store_true", help="finally call malloc_trim(0) in the broker through gdb")
    args = ap.parse_args()

    # Room for the client sockets here and the broker's (inherited).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.conns + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        raise SystemExit(f"the hard open-files limit {hard} is below {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))

    work = tempfile.mkdtemp(prefix="weir-idle-")
    kport, hport = free_port(), free_port()
    env = dict(os.environ)
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    cmd = [
        args.weir,
        "--listen", f"127.0.0.1:{kport}",
        "--advertised-listener", f"127.0.0.1:{kport}",
        "--http-listen", f"127.0.0.1:{hport}",
        "--data-dir", os.path.join(work, "data"),
        "--max-connections", str(args.conns + 100),
        "--http-rate-limit", "10000",
        "--log-format", "text",
        "--log-level", "warn,weir::memory=debug" if args.show_trims else "warn",
        *args.broker_arg,
    ]
    log = open(os.path.join(work, "weir.log"), "w")
    broker = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    result = {"conns": args.conns, "api_versions": not args.no_api_versions, "env": args.env, "bursts": []}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http_json(hport, "/api/health")
                break
            except OSError:
                if time.monotonic() > deadline or broker.poll() is not None:
                    raise SystemExit("broker did not start; see " + log.name)
                time.sleep(0.1)
        time.sleep(args.settle)
        base = status_kib(broker.pid)
        result["before_kib"] = base
        print(f"before: VmRSS {base['VmRSS']} KiB, RssAnon {base['RssAnon']} KiB, threads {base['Threads']}", flush=True)
        for b in range(args.bursts):
            t0 = time.monotonic()
            socks = open_connections(kport, args.conns, not args.no_api_versions)
            wait_connections(hport, args.conns)
            opened_s = time.monotonic() - t0
            time.sleep(args.settle)
            during = status_kib(broker.pid)
            for s in socks:
                s.close()
            socks = None
            wait_connections(hport, 0)
            time.sleep(args.settle)
            after = status_kib(broker.pid)
            per_conn = (during["VmRSS"] - base["VmRSS"]) * 1024 / args.conns
            print(
                f"burst {b + 1}: open {args.conns} in {opened_s:.1f}s: VmRSS {during['VmRSS']} KiB "
                f"({per_conn:.0f} B per connection over before); closed: VmRSS {after['VmRSS']} KiB, "
                f"RssAnon {after['RssAnon']} KiB",
                flush=True,
            )
            result["bursts"].append({"open_kib": during, "closed_kib": after, "bytes_per_conn": round(per_conn)})
        if args.trim_with_gdb:
            if shutil.which("gdb") is None:
                raise SystemExit("gdb is not installed")
            gdb_malloc_trim(broker.pid)
            time.sleep(0.5)
            trimmed = status_kib(broker.pid)
            result["after_malloc_trim_kib"] = trimmed
            print(f"after malloc_trim(0) (gdb): VmRSS {trimmed['VmRSS']} KiB, RssAnon {trimmed['RssAnon']} KiB", flush=True)
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            broker.kill()
        log.close()
        if args.show_trims:
            with open(log.name) as f:
                for line in f:
                    if "returned free heap memory" in line:
                        print("broker:", line.strip(), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
