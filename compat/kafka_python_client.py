#!/usr/bin/env python3
"""weir compatibility check: kafka-python (pure-Python client).

Needs env BOOTSTRAP=host:port. Exits 0 only when every check passed; prints
each check as "ok:" or "FAIL:" and a summary of the failures at the end.
"""
import logging
import os
import signal
import sys
import time
import traceback

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

BOOTSTRAP = os.environ.get("BOOTSTRAP")
if not BOOTSTRAP:
    sys.exit("set BOOTSTRAP=host:port")
TOPIC = f"weir-compat-kafkapython-{os.getpid()}-{int(time.time())}"
PARTITIONS = 2
N = 200
OVERALL_TIMEOUT = int(os.environ.get("OVERALL_TIMEOUT", "100"))
POLL_WINDOW = 30.0  # seconds any single wait/poll loop may take

COMMON = {
    "bootstrap_servers": BOOTSTRAP,
    "request_timeout_ms": 15000,
    "reconnect_backoff_max_ms": 1000,
}

checks = 0
failures = []
STATE = {"created": False}  # True while the topic may exist and needs cleanup


class Abort(Exception):
    """A check failed that later steps depend on."""


def ok(msg):
    global checks
    checks += 1
    print(f"ok:   {msg}", flush=True)


def fail(msg, fatal=False):
    global checks
    checks += 1
    failures.append(msg)
    print(f"FAIL: {msg}", flush=True)
    if fatal:
        raise Abort(msg)


def check(cond, msg, detail="", fatal=False):
    if cond:
        ok(msg)
    else:
        fail(f"{msg}{' -- ' + detail if detail else ''}", fatal=fatal)
    return cond


def on_alarm(_sig, _frame):
    print(f"FAIL: overall timeout of {OVERALL_TIMEOUT}s reached; "
          f"failures so far: {failures}", flush=True)
    os._exit(2)


def supported(cls, **opts):
    """Only the options this kafka-python version knows (it rejects unknown ones)."""
    return {k: v for k, v in opts.items() if k in cls.DEFAULT_CONFIG}


def rec(i):
    return (f"key-{i}".encode(), f"value-{i}".encode(),
            [("idx", str(i).encode()), ("client", b"kafka-python")])


def main():
    print(f"kafka-python {kafka.__version__}")
    print(f"bootstrap: {BOOTSTRAP}  topic: {TOPIC}", flush=True)
    admin = None
    try:
        try:
            admin = KafkaAdminClient(client_id="weir-compat-admin",
                                     **supported(KafkaAdminClient, **COMMON,
                                                 bootstrap_timeout_ms=15000))
            ok("KafkaAdminClient connected")
        except Exception as e:  # noqa: BLE001
            fail(f"KafkaAdminClient could not connect: {e!r}", fatal=True)
        run(admin)
    except Abort as e:
        print(f"aborting remaining steps: {e}", flush=True)
    except Exception as e:  # noqa: BLE001 - report anything as a failure
        traceback.print_exc()
        fail(f"unexpected exception: {e!r}")
    finally:
        if admin is not None:
            if STATE["created"]:
                try:
                    admin.delete_topics([TOPIC], timeout_ms=5000)
                except Exception:  # noqa: BLE001
                    pass
            admin.close()


def run(admin):
    # --- create_topics ----------------------------------------------------------------
    try:
        admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)],
                            timeout_ms=15000)
        STATE["created"] = True
        ok(f"create_topics {TOPIC} ({PARTITIONS} partitions)")
    except Exception as e:  # noqa: BLE001
        fail(f"create_topics failed: {e!r}", fatal=True)
    try:
        listed = admin.list_topics()
        check(TOPIC in listed, "admin list_topics includes the new topic", f"got {listed!r}")
    except Exception as e:  # noqa: BLE001
        fail(f"admin list_topics failed: {e!r}")

    # --- producer ------------------------------------------------------------------------
    producer = KafkaProducer(**supported(
        KafkaProducer, **COMMON, acks="all", linger_ms=10, max_block_ms=15000,
        delivery_timeout_ms=30000, retries=5,
        # The confluent-kafka and kafkajs checks cover the idempotent path;
        # this one covers plain (non-idempotent) produce.
        enable_idempotence=False))
    futures = []
    try:
        for i in range(N):
            k, v, h = rec(i)
            futures.append((i, producer.send(TOPIC, key=k, value=v, headers=h)))
        producer.flush(timeout=POLL_WINDOW)
    except Exception as e:  # noqa: BLE001
        fail(f"producer send/flush raised {e!r}", fatal=True)
    finally:
        producer.close(timeout=5)
    meta = {}
    errors = []
    for i, fut in futures:
        try:
            md = fut.get(timeout=10)
            meta[i] = (md.partition, md.offset)
        except Exception as e:  # noqa: BLE001
            errors.append((i, repr(e)))
    check(not errors, f"all {N} send futures succeeded",
          f"{len(errors)} failed, first: {errors[:3]}")
    check(len(meta) == N, f"{N} records acknowledged", f"got {len(meta)}", fatal=True)
    per_part = {}
    for i, (p, off) in meta.items():
        per_part.setdefault(p, []).append(off)
    counts = {p: len(per_part.get(p, [])) for p in range(PARTITIONS)}
    print(f"      records per partition: {counts}")
    check(set(per_part) == set(range(PARTITIONS)),
          f"keyed records spread over all {PARTITIONS} partitions",
          f"partitions used: {sorted(per_part)}")
    check(all(sorted(o) == list(range(len(o))) for o in per_part.values()),
          "acknowledged offsets are 0..n-1 per partition",
          str({p: (min(o), max(o), len(o)) for p, o in per_part.items()}))

    # --- consumer: assign + seek_to_beginning, no group -------------------------------
    consumer = KafkaConsumer(**supported(
        KafkaConsumer, **COMMON, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=200, session_timeout_ms=10000))
    try:
        parts = consumer.partitions_for_topic(TOPIC)
        check(parts == set(range(PARTITIONS)),
              f"consumer.partitions_for_topic = {set(range(PARTITIONS))}", f"got {parts!r}")
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        got = {}
        bad = []
        deadline = time.monotonic() + POLL_WINDOW
        while len(got) < N and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    try:
                        i = int(r.key.decode().split("-")[1])
                    except Exception:  # noqa: BLE001
                        bad.append(f"unexpected key {r.key!r} at {tp.partition}/{r.offset}")
                        continue
                    if i in got:
                        bad.append(f"duplicate key-{i}")
                    got[i] = r
        check(not bad, "consumer saw no unexpected or duplicate records", f"{bad[:5]}")
        check(len(got) == N, f"consumer read all {N} records back",
              f"read {len(got)} in {POLL_WINDOW}s")
        mismatches = []
        for i, r in sorted(got.items()):
            k, v, h = rec(i)
            hs = [(name, bytes(val) if val is not None else None)
                  for name, val in (r.headers or [])]
            if (r.key, r.value, hs) != (k, v, h):
                mismatches.append(f"key-{i}: key={r.key!r} value={r.value!r} headers={hs!r}")
            elif (r.partition, r.offset) != meta.get(i):
                mismatches.append(f"key-{i}: at {r.partition}/{r.offset}, "
                                  f"producer said {meta.get(i)}")
        check(not mismatches, "keys, values, headers and positions match",
              f"{len(mismatches)} mismatches, e.g. {mismatches[:3]}")
        offs = {}
        for r in got.values():
            offs.setdefault(r.partition, []).append(r.offset)
        check(all(sorted(o) == list(range(counts[p])) for p, o in offs.items()),
              "consumed offsets are contiguous from 0 in every partition",
              str({p: (min(o), max(o), len(o)) for p, o in offs.items()}))

        # --- end_offsets / beginning_offsets -------------------------------------------
        try:
            end = {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
            check(end == counts, "end_offsets = records per partition",
                  f"got {end}, expected {counts}")
        except Exception as e:  # noqa: BLE001
            fail(f"end_offsets raised {e!r}")
        try:
            beg = {tp.partition: o for tp, o in consumer.beginning_offsets(tps).items()}
            check(beg == {p: 0 for p in range(PARTITIONS)}, "beginning_offsets = 0",
                  f"got {beg}")
        except Exception as e:  # noqa: BLE001
            fail(f"beginning_offsets raised {e!r}")
    finally:
        consumer.close()

    # --- delete_topics ----------------------------------------------------------------
    try:
        admin.delete_topics([TOPIC], timeout_ms=15000)
        STATE["created"] = False
        ok("delete_topics")
    except Exception as e:  # noqa: BLE001
        fail(f"delete_topics failed: {e!r}")
        return
    deadline = time.monotonic() + 10
    present = True
    while time.monotonic() < deadline:
        present = TOPIC in admin.list_topics()
        if not present:
            break
        time.sleep(0.3)
    check(not present, "admin list_topics no longer shows the deleted topic")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="      log: %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(OVERALL_TIMEOUT)
    main()
    print()
    if failures:
        print(f"kafka-python: {len(failures)} of {checks} checks FAILED:")
        for f in failures:
            print(f"  - {f}")
        sys.exit(1)
    print(f"kafka-python: all {checks} checks passed")
