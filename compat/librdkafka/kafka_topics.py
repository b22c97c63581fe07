#!/usr/bin/env python3
"""Minimal stand-in for Kafka's bin/kafka-topics.sh, for librdkafka's tests.

A few librdkafka tests shell out to `$KAFKA_PATH/bin/kafka-topics.sh
--bootstrap-server $BROKERS ...` to create a topic with a config, add
partitions or delete a topic. This script does the same through the Kafka
protocol (CreateTopics v2, CreatePartitions v0, DeleteTopics v1), with nothing
but the Python standard library. Supported:

  --create --topic T [--partitions N] [--replication-factor R] [--config K=V]...
  --alter  --topic T --partitions N
  --delete --topic T

Exit status 0 on success, 1 with a message on stderr otherwise.
"""
import argparse
import socket
import struct
import sys

ERRORS = {
    0: "NONE", 7: "REQUEST_TIMED_OUT", 17: "INVALID_TOPIC_EXCEPTION",
    36: "TOPIC_ALREADY_EXISTS", 37: "INVALID_PARTITIONS",
    38: "INVALID_REPLICATION_FACTOR", 40: "INVALID_CONFIG",
    3: "UNKNOWN_TOPIC_OR_PARTITION", 41: "NOT_CONTROLLER", 42: "INVALID_REQUEST",
}


def s16(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def nullable_s16(s):
    return struct.pack(">h", -1) if s is None else s16(s)


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.p)
        self.p += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        v = self.d[self.p:self.p + n].decode()
        self.p += n
        return v


def call(bootstrap, api_key, version, body, timeout=30.0):
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        header = struct.pack(">hhi", api_key, version, 1) + s16("kafka-topics")
        msg = header + body
        sock.sendall(struct.pack(">i", len(msg)) + msg)
        raw = b""
        while len(raw) < 4:
            chunk = sock.recv(4 - len(raw))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            raw += chunk
        n = struct.unpack(">i", raw)[0]
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
    r = Reader(data)
    r.take(">i")  # correlation id
    return r


def check(results, what):
    bad = [(name, code, msg) for name, code, msg in results if code != 0]
    for name, code, msg in bad:
        print(f"Error while {what} topic {name}: {ERRORS.get(code, code)}"
              f"{': ' + msg if msg else ''}", file=sys.stderr)
    return 1 if bad else 0


def create(bootstrap, topic, partitions, replication, configs, timeout_ms):
    body = struct.pack(">i", 1) + s16(topic) + struct.pack(">ih", partitions, replication)
    body += struct.pack(">i", 0)  # no manual assignment
    body += struct.pack(">i", len(configs))
    for k, v in configs:
        body += s16(k) + nullable_s16(v)
    body += struct.pack(">i?", timeout_ms, False)
    r = call(bootstrap, 19, 2, body)
    r.take(">i")  # throttle
    results = []
    for _ in range(r.take(">i")):
        name = r.string()
        code = r.take(">h")
        msg = r.string()
        results.append((name, code, msg))
    rc = check(results, "creating")
    if rc == 0:
        print(f'Created topic "{topic}".')
    return rc


def alter(bootstrap, topic, partitions, timeout_ms):
    body = struct.pack(">i", 1) + s16(topic) + struct.pack(">ii", partitions, -1)
    body += struct.pack(">i?", timeout_ms, False)
    r = call(bootstrap, 37, 0, body)
    r.take(">i")
    results = []
    for _ in range(r.take(">i")):
        name = r.string()
        code = r.take(">h")
        msg = r.string()
        results.append((name, code, msg))
    return check(results, "altering")


def delete(bootstrap, topic, timeout_ms):
    body = struct.pack(">i", 1) + s16(topic) + struct.pack(">i", timeout_ms)
    r = call(bootstrap, 20, 1, body)
    r.take(">i")
    results = []
    for _ in range(r.take(">i")):
        name = r.string()
        code = r.take(">h")
        results.append((name, code, None))
    return check(results, "deleting")


def main():
    ap = argparse.ArgumentParser(prog="kafka-topics.sh")
    ap.add_argument("--bootstrap-server", required=True)
    action = ap.add_mutually_exclusive_group(required=True)
    action.add_argument("--create", action="store_true")
    action.add_argument("--alter", action="store_true")
    action.add_argument("--delete", action="store_true")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int)
    ap.add_argument("--replication-factor", type=int, default=-1)
    ap.add_argument("--config", action="append", default=[])
    a = ap.parse_args()
    timeout_ms = 30000
    try:
        if a.create:
            configs = [tuple(c.split("=", 1)) for c in a.config]
            return create(a.bootstrap_server, a.topic,
                          a.partitions if a.partitions is not None else -1,
                          a.replication_factor, configs, timeout_ms)
        if a.alter:
            if a.partitions is None:
                ap.error("--alter needs --partitions")
            return alter(a.bootstrap_server, a.topic, a.partitions, timeout_ms)
        return delete(a.bootstrap_server, a.topic, timeout_ms)
    except (OSError, struct.error) as e:
        print(f"kafka-topics: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
