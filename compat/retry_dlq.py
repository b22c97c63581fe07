#!/usr/bin/env python3
"""weir compatibility check: broker-managed retries and dead letters, driven
through confluent-kafka (librdkafka) and the admin HTTP API.

A topic T created with retry.max.attempts=2, retry.backoff.ms=500 and
retry.backoff.multiplier=2 gets the companions T.retry and T.dlq. A record
consumed from T is handed back (a copy produced to T.retry) three times:
attempt 1 reappears on T.retry after >= 500 ms, attempt 2 after >= 1000 ms,
the third hand-back goes to T.dlq at once. The DLQ is then listed and
redriven over HTTP, and the record reappears on T.retry with attempts reset.

Needs env BOOTSTRAP=host:port (Kafka) and WEIR_HTTP=host:port (admin HTTP).
Exits 0 only when every check passed; prints each check as "ok:" or "FAIL:"
and a summary of the failures at the end.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402 - needs the script's directory on sys.path
    CLIENT_TIMEOUTS,
    STATE,
    check,
    confluent_versions,
    fail,
    ok,
    reporting,
    run_script,
    unique_topic,
)

BOOTSTRAP = os.environ.get("BOOTSTRAP")
HTTP = os.environ.get("WEIR_HTTP")
if not BOOTSTRAP or not HTTP:
    sys.exit("set BOOTSTRAP=host:port (Kafka) and WEIR_HTTP=host:port (admin HTTP)")
TOPIC = unique_topic("retry")
RETRY = f"{TOPIC}.retry"
DLQ = f"{TOPIC}.dlq"
MAX_ATTEMPTS = 2
BACKOFF_MS = 500
MULTIPLIER = 2
LATE_MS = 10000  # a redelivery later than due + this counts as lost

KEY = b"order-42"
VALUE = b"payload that keeps failing"
APP_HEADER = ("trace-id", b"abc-123")


def now_ms():
    return int(time.time() * 1000)


def hdrs(msg):
    """Headers of a consumed message as a list of (name, bytes)."""
    return [(k, bytes(v) if v is not None else None) for k, v in (msg.headers() or [])]


def hget(headers, name):
    vals = [v for k, v in headers if k == name]
    return vals[0] if len(vals) == 1 else (None if not vals else vals)


def show(headers):
    return {k: (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in headers}


def http(method, path, body=None):
    """(status, parsed JSON or text) of a request to the admin HTTP API."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{HTTP}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Tail:
    """An assign()ed consumer reading partition 0 of a topic from the start,
    recording when (monotonic seconds) each record was returned by poll()."""

    def __init__(self, topic):
        self.topic = topic
        self.c = Consumer({
            "bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS,
            "group.id": f"weir-compat-unused-{topic}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        })
        self.c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.seen = []  # (arrival monotonic, msg)
        self.errors = []

    def _poll(self, timeout):
        msg = self.c.poll(timeout)
        if msg is None:
            return None
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                return "eof"
            self.errors.append(str(msg.error()))
            return None
        self.seen.append((time.monotonic(), msg))
        return msg

    def until_eof(self, seconds=15):
        """Waits until the consumer reached the end of the partition (it is fetching)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._poll(0.2) == "eof":
                return True
        return False

    def next(self, seconds):
        """The next record within `seconds`, as (arrival monotonic, msg), or None."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = self._poll(min(0.1, max(0.0, deadline - time.monotonic())))
            if m is not None and m != "eof":
                return self.seen[-1]
        return None

    def close(self):
        self.c.close()


def main():
    print(confluent_versions())
    print(f"bootstrap: {BOOTSTRAP}  http: {HTTP}  topic: {TOPIC}", flush=True)
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS})
    tails = []
    try:
        with reporting():
            run(admin, tails)
    finally:
        for t in tails:
            try:
                t.close()
            except Exception:  # noqa: BLE001
                pass
        if STATE["created"]:
            cleanup(admin)


def cleanup(admin):
    """Deletes T and whichever companions exist (deleting T need not delete them)."""
    try:
        present = [t for t in (TOPIC, RETRY, DLQ) if t in admin.list_topics(timeout=10).topics]
        if present:
            fs = admin.delete_topics(present, operation_timeout=10, request_timeout=15)
            for t, f in fs.items():
                try:
                    f.result(20)
                except Exception as e:  # noqa: BLE001
                    print(f"      cleanup: delete_topics {t} failed: {e!r}")
        print(f"      cleanup: deleted {present}")
    except Exception as e:  # noqa: BLE001
        print(f"      cleanup failed: {e!r}")


def produce_one(producer, topic, key, value, headers, partition=0):
    """Produces one record and waits for its delivery report: (err, offset)."""
    out = {}

    def on_delivery(err, msg):
        out["err"] = err
        out["offset"] = msg.offset()

    producer.produce(topic, key=key, value=value, headers=headers, partition=partition,
                     on_delivery=on_delivery)
    left = producer.flush(15)
    if left or "err" not in out:
        return f"no delivery report within 15 s ({left} queued)", None
    return out["err"], out["offset"]


def hand_back(producer, msg, label):
    """Produces a copy of msg (key, value, headers as received) to T.retry.
    Returns (monotonic, epoch ms) taken just before the produce call."""
    t_mono, t_ms = time.monotonic(), now_ms()
    err, offset = produce_one(producer, RETRY, msg.key(), msg.value(), hdrs(msg),
                              partition=msg.partition())
    check(err is None, f"{label}: hand-back produce to {RETRY} acknowledged", f"error {err}")
    if err is None:
        # The broker answers offset -1 (held, not yet in the log); librdkafka
        # passes a negative offset on and confluent-kafka shows it as None.
        check(offset is None or offset == -1,
              f"{label}: delivery report has no log offset (broker answered -1)",
              f"offset {offset}")
    return t_mono, t_ms


def run(admin, tails):
    # --- create T with retry configs; companions exist when CreateTopics returns -------
    configs = {"retry.max.attempts": str(MAX_ATTEMPTS), "retry.backoff.ms": str(BACKOFF_MS),
               "retry.backoff.multiplier": str(MULTIPLIER)}
    fs = admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1,
                                       config=configs)],
                             operation_timeout=10, request_timeout=15)
    try:
        fs[TOPIC].result(timeout=20)
        STATE["created"] = True
        ok(f"create_topics {TOPIC} with {configs}")
    except Exception as e:  # noqa: BLE001
        fail(f"create_topics failed: {e!r}", fatal=True)
    md = admin.list_topics(timeout=10)  # right after: no waiting
    for name in (TOPIC, RETRY, DLQ):
        t = md.topics.get(name)
        check(t is not None and t.error is None and len(t.partitions) == 1,
              f"list_topics right after create shows {name} with 1 partition",
              "absent" if t is None else f"error={t.error} partitions={len(t.partitions)}",
              fatal=name != DLQ)
    res = ConfigResource(ResourceType.TOPIC, TOPIC)
    try:
        entries = admin.describe_configs([res], request_timeout=15)[res].result(timeout=20)
        got = {k: entries[k].value if k in entries else None for k in configs}
        check(got == configs, "describe_configs shows the retry.* configs", f"got {got}")
    except Exception as e:  # noqa: BLE001
        fail(f"describe_configs failed: {e!r}")

    producer = Producer({"bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS, "acks": "all",
                         "linger.ms": 0, "message.timeout.ms": 15000})

    # --- one record on T, consumed with assign() --------------------------------------
    err, offset = produce_one(producer, TOPIC, KEY, VALUE, [APP_HEADER])
    check(err is None and offset == 0, f"produced one record with header {APP_HEADER[0]} to T",
          f"error={err} offset={offset}", fatal=True)
    src = Tail(TOPIC)
    tails.append(src)
    first = src.next(20)
    check(first is not None, "consumed the record from T", f"errors {src.errors}", fatal=True)
    msg = first[1]
    check((msg.key(), msg.value(), hdrs(msg)) == (KEY, VALUE, [APP_HEADER]),
          "consumed record has the key, value and header produced",
          f"key={msg.key()!r} value={msg.value()!r} headers={hdrs(msg)}")

    # Tail T.retry and T.dlq from the start before any hand-back, so that arrival
    # times are measured by a consumer that is already fetching.
    rt = Tail(RETRY)
    tails.append(rt)
    dq = Tail(DLQ)
    tails.append(dq)
    check(rt.until_eof() and dq.until_eof(), "consumers of T.retry and T.dlq reached the end",
          f"errors {rt.errors + dq.errors}", fatal=True)
    check(not rt.seen and not dq.seen, "T.retry and T.dlq start empty",
          f"T.retry {len(rt.seen)}, T.dlq {len(dq.seen)} records")

    # --- hand-backs 1 and 2: redelivered on T.retry after the backoff ---------------------
    for k in range(1, MAX_ATTEMPTS + 1):
        delay = BACKOFF_MS * MULTIPLIER ** (k - 1)
        label = f"hand-back {k}"
        t_mono, t_ms = hand_back(producer, msg, label)
        got = rt.next(delay / 1000 + LATE_MS / 1000)
        if not check(got is not None, f"{label}: record came back on T.retry",
                     f"nothing within {delay + LATE_MS} ms; errors {rt.errors}", fatal=True):
            return
        arrival, back = got
        waited = (arrival - t_mono) * 1000
        h = hdrs(back)
        print(f"      {label}: back after {waited:.0f} ms at offset {back.offset()}, "
              f"headers {show(h)}")
        check(waited >= delay, f"{label}: not redelivered before {delay} ms",
              f"redelivered after {waited:.0f} ms")
        check(hget(h, "retry.attempt") == str(k).encode(),
              f"{label}: exactly one header retry.attempt={k}",
              f"retry.attempt={hget(h, 'retry.attempt')!r}")
        check(hget(h, APP_HEADER[0]) == APP_HEADER[1] and
              (back.key(), back.value()) == (KEY, VALUE),
              f"{label}: key, value and the original {APP_HEADER[0]} header kept",
              f"key={back.key()!r} value={back.value()!r} headers={show(h)}")
        check(hget(h, "retry.original.topic") == TOPIC.encode(),
              f"{label}: retry.original.topic={TOPIC}",
              f"got {hget(h, 'retry.original.topic')!r}")
        try:
            due = int(hget(h, "retry.due.ms"))
            first_hb = int(hget(h, "retry.first.handback.ms"))
            check(due >= t_ms + delay and first_hb <= due - delay,
                  f"{label}: retry.due.ms >= hand-back + {delay} ms, "
                  "retry.first.handback.ms before it",
                  f"due={due} first_handback={first_hb} hand-back sent at {t_ms}")
        except (TypeError, ValueError):
            fail(f"{label}: retry.due.ms / retry.first.handback.ms missing or not numbers",
                 f"headers {show(h)}")
        msg = back
    check(not dq.next(0.2), "nothing reached T.dlq while attempts remained",
          f"{len(dq.seen)} records in T.dlq")

    # --- hand-back 3: attempts exhausted, straight to T.dlq --------------------------------
    t_mono, _ = hand_back(producer, msg, f"hand-back {MAX_ATTEMPTS + 1}")
    got = dq.next(LATE_MS / 1000)
    if not check(got is not None, f"hand-back {MAX_ATTEMPTS + 1}: record reached T.dlq",
                 f"nothing within {LATE_MS} ms; errors {dq.errors}", fatal=True):
        return
    arrival, dead = got
    waited = (arrival - t_mono) * 1000
    h = hdrs(dead)
    print(f"      dead-lettered after {waited:.0f} ms at offset {dead.offset()}, headers {show(h)}")
    check(waited <= 1000, "dead-lettered within 1 s (no backoff)", f"took {waited:.0f} ms")
    check(hget(h, "dlq.reason") == b"max-attempts", "T.dlq record has dlq.reason=max-attempts",
          f"dlq.reason={hget(h, 'dlq.reason')!r}")
    check(hget(h, "retry.attempt") == str(MAX_ATTEMPTS).encode(),
          f"T.dlq record keeps retry.attempt={MAX_ATTEMPTS}",
          f"retry.attempt={hget(h, 'retry.attempt')!r}")
    check(hget(h, APP_HEADER[0]) == APP_HEADER[1] and (dead.key(), dead.value()) == (KEY, VALUE),
          "T.dlq record keeps key, value and the original header", f"headers {show(h)}")
    check(rt.next(0.5) is None, "the exhausted record did not go to T.retry again",
          f"T.retry now has {len(rt.seen)} records")

    # --- HTTP: list the DLQ -------------------------------------------------------------
    status, body = http("GET", f"/api/dlq/{TOPIC}")
    recs = body.get("records") if isinstance(body, dict) else None
    check(status == 200 and isinstance(recs, list) and len(recs) == 1,
          f"GET /api/dlq/{TOPIC} lists 1 record", f"status {status}, body {body!r}")
    if isinstance(recs, list) and len(recs) == 1:
        r = recs[0]
        rh = r.get("headers")
        rh = dict(rh) if isinstance(rh, list) else rh  # [[name, value], ...]
        check(r.get("key") == KEY.decode() and r.get("value") == VALUE.decode() and
              isinstance(rh, dict) and rh.get("dlq.reason") == "max-attempts" and
              rh.get(APP_HEADER[0]) == APP_HEADER[1].decode() and
              r.get("offset") == dead.offset(),
              "the listed DLQ record has the key, value, offset and headers",
              json.dumps(r))

    # --- HTTP: redrive back to T.retry with attempts reset ----------------------------------
    status, body = http("POST", f"/api/dlq/{TOPIC}/redrive", {})
    check(status == 200 and isinstance(body, dict) and body.get("redriven") == 1,
          f"POST /api/dlq/{TOPIC}/redrive returns redriven=1", f"status {status}, body {body!r}")
    got = rt.next(LATE_MS / 1000)
    if check(got is not None, "the redriven record shows up on T.retry",
             f"nothing within {LATE_MS} ms; errors {rt.errors}"):
        back = got[1]
        h = hdrs(back)
        print(f"      redriven record at T.retry offset {back.offset()}, headers {show(h)}")
        check(hget(h, "retry.attempt") is None, "redriven record has no retry.attempt (reset)",
              f"retry.attempt={hget(h, 'retry.attempt')!r}")
        check(hget(h, "dlq.reason") is None, "redriven record has no dlq.reason",
              f"dlq.reason={hget(h, 'dlq.reason')!r}")
        check(hget(h, APP_HEADER[0]) == APP_HEADER[1] and (back.key(), back.value()) == (KEY, VALUE),
              "redriven record keeps key, value and the original header", f"headers {show(h)}")
    check(not rt.next(0.5) and not rt.errors and not dq.errors and not src.errors,
          "no further records or consumer errors",
          f"T.retry {len(rt.seen)} records, errors {rt.errors + dq.errors + src.errors}")


if __name__ == "__main__":
    run_script("retry-dlq", main)
