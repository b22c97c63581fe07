#!/usr/bin/env python3
"""weir compatibility check: confluent-kafka (Python binding of librdkafka).

Needs env BOOTSTRAP=host:port. Exits 0 only when every check passed; prints
each check as "ok:" or "FAIL:" and a summary of the failures at the end.
"""
import os
import signal
import sys
import time
import traceback

import confluent_kafka
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

BOOTSTRAP = os.environ.get("BOOTSTRAP")
if not BOOTSTRAP:
    sys.exit("set BOOTSTRAP=host:port")
TOPIC = f"weir-compat-confluent-{os.getpid()}-{int(time.time())}"
PARTITIONS = 3
N = 300
OVERALL_TIMEOUT = int(os.environ.get("OVERALL_TIMEOUT", "100"))
POLL_WINDOW = 30.0  # seconds any single wait/poll loop may take

CLIENT_TIMEOUTS = {
    "socket.timeout.ms": 10000,
    "socket.connection.setup.timeout.ms": 5000,
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


def source(entry):
    """ConfigEntry.source as a ConfigSource (it may come back as a plain int)."""
    try:
        return ConfigSource(entry.source)
    except ValueError:
        return entry.source


def topic_partitions(admin, topic):
    """Partition count of topic from a full metadata request, or None if absent.

    Requests all topics so that asking does not auto-create the topic."""
    md = admin.list_topics(timeout=10)
    t = md.topics.get(topic)
    if t is None:
        return None, md
    if t.error is not None:
        return t.error, md
    return len(t.partitions), md


def wait_partitions(admin, topic, want, what):
    deadline = time.monotonic() + 10
    got = None
    while time.monotonic() < deadline:
        got, _ = topic_partitions(admin, topic)
        if got == want:
            break
        time.sleep(0.3)
    return check(got == want, f"list_topics shows {what}",
                 f"expected {want!r} partitions, got {got!r}")


def main():
    version = confluent_kafka.version()  # a str in some releases, a tuple in others
    if isinstance(version, tuple):
        version = version[0]
    print(f"confluent-kafka {version}, librdkafka {confluent_kafka.libversion()[0]}")
    print(f"bootstrap: {BOOTSTRAP}  topic: {TOPIC}", flush=True)
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS})
    try:
        run(admin)
    except Abort as e:
        print(f"aborting remaining steps: {e}", flush=True)
    except Exception as e:  # noqa: BLE001 - report anything as a failure
        traceback.print_exc()
        fail(f"unexpected exception: {e!r}")
    finally:
        if STATE["created"]:
            # best-effort cleanup after an aborted run
            try:
                admin.delete_topics([TOPIC], operation_timeout=5)[TOPIC].result(10)
            except Exception:  # noqa: BLE001
                pass


def run(admin):
    # --- create_topics with a topic config ------------------------------------
    fs = admin.create_topics(
        [NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1,
                  config={"retention.ms": "3600000"})],
        operation_timeout=10, request_timeout=15)
    try:
        fs[TOPIC].result(timeout=20)
        STATE["created"] = True
        ok(f"create_topics {TOPIC} ({PARTITIONS} partitions, retention.ms=3600000)")
    except Exception as e:  # noqa: BLE001
        fail(f"create_topics failed: {e!r}", fatal=True)

    # --- list_topics ------------------------------------------------------------
    wait_partitions(admin, TOPIC, PARTITIONS, f"the topic with {PARTITIONS} partitions")
    _, md = topic_partitions(admin, TOPIC)
    check(len(md.brokers) >= 1, "list_topics reports at least one broker",
          f"brokers={md.brokers!r}")
    t = md.topics.get(TOPIC)
    if t is not None and t.error is None:
        leaders = {p.id: p.leader for p in t.partitions.values()}
        check(all(lead >= 0 and lead in md.brokers for lead in leaders.values()),
              "every partition has a leader that is a listed broker",
              f"leaders={leaders} brokers={list(md.brokers)}")

    # --- describe_configs ---------------------------------------------------------
    res = ConfigResource(ResourceType.TOPIC, TOPIC)
    try:
        entries = admin.describe_configs([res], request_timeout=15)[res].result(timeout=20)
    except Exception as e:  # noqa: BLE001
        entries = None
        fail(f"describe_configs failed: {e!r}")
    if entries is not None:
        print(f"      describe_configs returned {len(entries)} entries")
        r = entries.get("retention.ms")
        check(r is not None and r.value == "3600000",
              "describe_configs: retention.ms=3600000",
              f"got {r.value if r is not None else 'no entry'!r}")
        if r is not None:
            check(source(r) == ConfigSource.DYNAMIC_TOPIC_CONFIG and not r.is_default,
                  "describe_configs: retention.ms is reported as a topic override",
                  f"source={source(r)} is_default={r.is_default}")
        c = entries.get("cleanup.policy")
        check(c is not None and c.value == "delete",
              "describe_configs: default cleanup.policy=delete",
              f"got {c.value if c is not None else 'no entry'!r}")
        if c is not None:
            default_sources = {ConfigSource.DEFAULT_CONFIG,
                               ConfigSource.STATIC_BROKER_CONFIG,
                               ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG}
            check(source(c) in default_sources,
                  "describe_configs: cleanup.policy is reported as a default",
                  f"source={source(c)} is_default={c.is_default}")

    # --- idempotent producer --------------------------------------------------------
    producer = Producer({
        "bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS,
        "acks": "all", "enable.idempotence": True,
        "message.timeout.ms": 30000, "linger.ms": 10,
    })
    reports = {}
    errors = []

    def on_delivery(err, msg):
        i = int(msg.key().decode().split("-")[1])
        if err is not None:
            errors.append((i, err))
        else:
            reports[i] = (msg.partition(), msg.offset())

    def rec(i):
        return (f"key-{i}".encode(), f"value-{i}".encode(),
                [("idx", str(i).encode()), ("client", b"confluent-kafka")])

    for i in range(N):
        k, v, h = rec(i)
        while True:
            try:
                producer.produce(TOPIC, key=k, value=v, headers=h, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(POLL_WINDOW)
    check(remaining == 0, "producer.flush delivered everything", f"{remaining} still queued")
    check(not errors, "all delivery callbacks successful",
          f"{len(errors)} errors, first: {errors[:3]}")
    check(len(reports) == N, f"{N} delivery reports received", f"got {len(reports)}",
          fatal=True)
    per_part = {}
    for i, (p, off) in reports.items():
        per_part.setdefault(p, []).append(off)
    check(set(per_part) == set(range(PARTITIONS)),
          f"keyed records spread over all {PARTITIONS} partitions",
          f"partitions used: {sorted(per_part)}")
    contiguous = all(sorted(offs) == list(range(len(offs))) for offs in per_part.values())
    check(contiguous, "delivery-report offsets are 0..n-1 per partition",
          str({p: (min(o), max(o), len(o)) for p, o in per_part.items()}))
    counts = {p: len(per_part.get(p, [])) for p in range(PARTITIONS)}
    print(f"      records per partition: {counts}")

    # --- consumer with assign() (no group membership) --------------------------------
    consumer = Consumer({
        "bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS,
        "group.id": f"weir-compat-unused-{TOPIC}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    })
    try:
        consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        got = {}
        bad = []
        eof = set()
        deadline = time.monotonic() + POLL_WINDOW
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                    if len(got) >= N and len(eof) == PARTITIONS:
                        break
                    continue
                bad.append(str(msg.error()))
                if len(bad) > 20:
                    break
                continue
            eof.discard(msg.partition())
            try:
                i = int(msg.key().decode().split("-")[1])
            except Exception:  # noqa: BLE001
                bad.append(f"unexpected key {msg.key()!r}")
                continue
            if i in got:
                bad.append(f"duplicate record key-{i}")
            got[i] = msg
        check(not bad, "consumer saw no errors or duplicates", f"{bad[:5]}")
        check(len(got) == N, f"consumer read all {N} records back",
              f"read {len(got)} in {POLL_WINDOW}s; eof on {sorted(eof)}")
        mismatches = []
        for i, msg in sorted(got.items()):
            k, v, h = rec(i)
            hs = [(name, bytes(val) if val is not None else None)
                  for name, val in (msg.headers() or [])]
            if (msg.key(), msg.value(), hs) != (k, v, h):
                mismatches.append(f"key-{i}: key={msg.key()!r} value={msg.value()!r} headers={hs!r}")
            elif (msg.partition(), msg.offset()) != reports.get(i):
                mismatches.append(f"key-{i}: at {msg.partition()}/{msg.offset()}, "
                                  f"delivery report said {reports.get(i)}")
        check(not mismatches, "keys, values, headers and positions match",
              f"{len(mismatches)} mismatches, e.g. {mismatches[:3]}")
        offs = {}
        for msg in got.values():
            offs.setdefault(msg.partition(), []).append(msg.offset())
        check(all(sorted(o) == list(range(counts[p])) for p, o in offs.items())
              and set(offs) == {p for p, c in counts.items() if c},
              "consumed offsets are contiguous from 0 in every partition",
              str({p: (min(o), max(o), len(o)) for p, o in offs.items()}))
        ts_ok = all(msg.timestamp()[1] > 0 for msg in got.values())
        check(ts_ok, "every record carries a positive timestamp")

        # --- watermarks and offsets_for_times -------------------------------------------
        wm = {}
        for p in range(PARTITIONS):
            try:
                wm[p] = consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10,
                                                       cached=False)
            except Exception as e:  # noqa: BLE001
                wm[p] = repr(e)
        check(all(wm[p] == (0, counts[p]) for p in range(PARTITIONS)),
              "get_watermark_offsets = (0, records in partition)",
              f"got {wm}, expected {{p: (0, n)}} with n from {counts}")
        try:
            res = consumer.offsets_for_times(
                [TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)], timeout=10)
            got_offs = {tp.partition: (tp.offset, tp.error) for tp in res}
            check(all(got_offs.get(p) == (0, None) for p in range(PARTITIONS)),
                  "offsets_for_times(timestamp 0) = offset 0 in every partition",
                  f"got {got_offs}")
        except Exception as e:  # noqa: BLE001
            fail(f"offsets_for_times raised {e!r}")
    finally:
        consumer.close()

    # --- create_partitions ---------------------------------------------------------------
    try:
        admin.create_partitions([NewPartitions(TOPIC, PARTITIONS + 1)],
                                operation_timeout=10, request_timeout=15)[TOPIC].result(20)
        ok(f"create_partitions to {PARTITIONS + 1}")
        wait_partitions(admin, TOPIC, PARTITIONS + 1,
                        f"{PARTITIONS + 1} partitions after create_partitions")
    except Exception as e:  # noqa: BLE001
        fail(f"create_partitions failed: {e!r}")

    # --- delete_topics -----------------------------------------------------------------------
    try:
        admin.delete_topics([TOPIC], operation_timeout=10, request_timeout=15)[TOPIC].result(20)
        ok("delete_topics")
    except Exception as e:  # noqa: BLE001
        fail(f"delete_topics failed: {e!r}")
        return
    STATE["created"] = False
    deadline = time.monotonic() + 10
    present = True
    while time.monotonic() < deadline:
        present = TOPIC in admin.list_topics(timeout=10).topics
        if not present:
            break
        time.sleep(0.3)
    check(not present, "list_topics no longer shows the deleted topic")


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(OVERALL_TIMEOUT)
    main()
    print()
    if failures:
        print(f"confluent-kafka: {len(failures)} of {checks} checks FAILED:")
        for f in failures:
            print(f"  - {f}")
        sys.exit(1)
    print(f"confluent-kafka: all {checks} checks passed")
