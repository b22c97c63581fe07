#!/usr/bin/env python3
"""weir compatibility check: confluent-kafka (Python binding of librdkafka).

Covers topic admin and configs, an idempotent producer, an assign() consumer,
a subscribe() consumer group (commit, resume by a second member) inspected
through the AdminClient group APIs, CreatePartitions and DeleteTopics.

Needs env BOOTSTRAP=host:port. Exits 0 only when every check passed; prints
each check as "ok:" or "FAIL:" and a summary of the failures at the end.
"""
import os
import sys
import time

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402 - needs the script's directory on sys.path
    CLIENT_TIMEOUTS,
    POLL_WINDOW,
    STATE,
    check,
    confluent_versions,
    fail,
    ok,
    reporting,
    require_bootstrap,
    run_script,
    unique_topic,
)

BOOTSTRAP = require_bootstrap()
TOPIC = unique_topic("confluent")
PARTITIONS = 3
N = 300


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
    print(confluent_versions())
    print(f"bootstrap: {BOOTSTRAP}  topic: {TOPIC}", flush=True)
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS})
    try:
        with reporting():
            run(admin)
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

    # --- consumer group: subscribe, commit, a second member resumes ----------------------
    group_section(admin, producer, on_delivery, rec, reports, counts)

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


def group_consumer(group, client_id):
    return Consumer({
        "bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS,
        "group.id": group, "client.id": client_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 60000,
    })


def poll_group(consumer, want, label):
    """Polls until `want` records arrived (or POLL_WINDOW passed), then 1 s more
    so that extra records would show. Returns ({key: msg}, [problems])."""
    got = {}
    bad = []
    deadline = time.monotonic() + POLL_WINDOW
    settle = None
    while time.monotonic() < (settle or deadline):
        msg = consumer.poll(0.3)
        if msg is None:
            pass
        elif msg.error():
            bad.append(f"{label}: {msg.error()}")
        else:
            k = msg.key()
            if k in got:
                bad.append(f"{label}: duplicate {k!r}")
            got[k] = msg
        if settle is None and len(got) >= want:
            settle = min(deadline, time.monotonic() + 1.0)
        if len(bad) > 20:
            break
    return got, bad


def admin_group(admin, group):
    """(ConsumerGroupDescription or None, error or None)"""
    try:
        return admin.describe_consumer_groups([group], request_timeout=10)[group].result(15), None
    except Exception as e:  # noqa: BLE001
        return None, e


def group_section(admin, producer, on_delivery, rec, reports, counts):
    group = f"weir-compat-group-{TOPIC}"
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]

    # --- member 1: subscribe, read everything, commit synchronously --------------------
    c1 = group_consumer(group, "weir-compat-confluent-1")
    c1_open = True
    try:
        c1.subscribe([TOPIC])
        got, bad = poll_group(c1, N, "member 1")
        assigned = sorted(tp.partition for tp in c1.assignment())
        check(assigned == list(range(PARTITIONS)),
              f"group member 1 was assigned all {PARTITIONS} partitions", f"got {assigned}")
        check(not bad, "group member 1 saw no errors or duplicates", f"{bad[:5]}")
        want = {rec(i)[0] for i in range(N)}
        check(set(got) == want, f"group member 1 read all {N} records (auto.offset.reset=earliest)",
              f"read {len(got)}; missing {len(want - set(got))}, unexpected "
              f"{sorted(set(got) - want)[:5]}")
        try:
            res = c1.commit(asynchronous=False)
            res = {tp.partition: (tp.offset, tp.error) for tp in res or []}
            check(res == {p: (counts[p], None) for p in range(PARTITIONS)},
                  "commit(asynchronous=False) committed the end of every partition",
                  f"got {res}, expected offsets {counts}")
        except Exception as e:  # noqa: BLE001
            fail(f"commit(asynchronous=False) raised {e!r}")
        try:
            com = {tp.partition: tp.offset for tp in c1.committed(tps, timeout=10)}
            check(com == counts, "committed() (OffsetFetch) = records per partition",
                  f"got {com}, expected {counts}")
        except Exception as e:  # noqa: BLE001
            fail(f"committed() raised {e!r}")

        # --- AdminClient view of the live group ----------------------------------------
        if hasattr(admin, "list_consumer_groups"):
            try:
                listed = admin.list_consumer_groups(request_timeout=10).result(15)
                mine = [g for g in listed.valid if g.group_id == group]
                check(len(mine) == 1 and not mine[0].is_simple_consumer_group,
                      "list_consumer_groups shows the group (not a simple group)",
                      f"valid={[(g.group_id, g.state) for g in listed.valid]} "
                      f"errors={listed.errors}")
                if mine and mine[0].state is not None:
                    check(mine[0].state == confluent_kafka.ConsumerGroupState.STABLE,
                          "list_consumer_groups: state STABLE", f"got {mine[0].state}")
            except Exception as e:  # noqa: BLE001
                fail(f"list_consumer_groups raised {e!r}")
        else:
            print("      (this confluent-kafka has no list_consumer_groups)")
        if hasattr(admin, "describe_consumer_groups"):
            d, err = admin_group(admin, group)
            if err is not None:
                fail(f"describe_consumer_groups raised {err!r}")
            else:
                members = [(m.client_id, sorted(tp.partition for tp in m.assignment.topic_partitions
                                                if tp.topic == TOPIC))
                           for m in d.members]
                check(d.state == confluent_kafka.ConsumerGroupState.STABLE and
                      members == [("weir-compat-confluent-1", list(range(PARTITIONS)))],
                      "describe_consumer_groups: STABLE, member 1 holds every partition",
                      f"state={d.state} members={members}")
                check(bool(d.partition_assignor) and not d.is_simple_consumer_group,
                      f"describe_consumer_groups: assignor {d.partition_assignor!r}",
                      f"assignor={d.partition_assignor!r} simple={d.is_simple_consumer_group}")
        else:
            print("      (this confluent-kafka has no describe_consumer_groups)")
        if hasattr(admin, "list_consumer_group_offsets"):
            try:
                req = [confluent_kafka.ConsumerGroupTopicPartitions(group)]
                r = admin.list_consumer_group_offsets(req, request_timeout=10)[group].result(15)
                offs = {tp.partition: tp.offset for tp in r.topic_partitions if tp.topic == TOPIC}
                check(offs == counts, "list_consumer_group_offsets = records per partition",
                      f"got {offs}, expected {counts}")
            except Exception as e:  # noqa: BLE001
                fail(f"list_consumer_group_offsets raised {e!r}")
        c1.close()  # LeaveGroup
        c1_open = False
    finally:
        if c1_open:
            c1.close()

    # --- more records; member 2 of the same group resumes at the committed position ----
    M = 30
    for i in range(N, N + M):
        k, v, h = rec(i)
        producer.produce(TOPIC, key=k, value=v, headers=h, on_delivery=on_delivery)
    remaining = producer.flush(POLL_WINDOW)
    new = {i: reports.get(i) for i in range(N, N + M)}
    check(remaining == 0 and all(new.values()), f"produced {M} more records",
          f"{remaining} still queued; reports {new}")
    new_counts = dict(counts)
    for i, pos in new.items():
        if pos:
            new_counts[pos[0]] += 1
    c2 = group_consumer(group, "weir-compat-confluent-2")
    try:
        c2.subscribe([TOPIC])
        got, bad = poll_group(c2, M, "member 2")
        check(not bad, "group member 2 saw no errors or duplicates", f"{bad[:5]}")
        want = {rec(i)[0] for i in range(N, N + M)}
        old = sorted(k.decode() for k in set(got) if k not in want)
        check(not old, "group member 2 got no record before the committed offsets",
              f"{len(old)} old records, e.g. {old[:5]}")
        check(set(got) >= want, f"group member 2 read the {M} new records",
              f"read {len(set(got) & want)} of {M}")
        firsts = {}
        for m in got.values():
            firsts[m.partition()] = min(firsts.get(m.partition(), m.offset()), m.offset())
        check(all(firsts[p] == counts[p] for p in firsts),
              "member 2 started every partition at the committed offset",
              f"first offsets {firsts}, committed {counts}")
        try:
            res = c2.commit(asynchronous=False)
            res = {tp.partition: tp.offset for tp in res or []}
            check(res == new_counts, "member 2 commit(asynchronous=False) = new end offsets",
                  f"got {res}, expected {new_counts}")
        except Exception as e:  # noqa: BLE001
            fail(f"member 2 commit raised {e!r}")
    finally:
        c2.close()
    counts.update(new_counts)

    # --- after both left: Empty, then delete_consumer_groups ----------------------------
    if hasattr(admin, "describe_consumer_groups"):
        d, err = None, None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            d, err = admin_group(admin, group)
            if d is not None and d.state == confluent_kafka.ConsumerGroupState.EMPTY:
                break
            time.sleep(0.3)
        check(err is None and d.state == confluent_kafka.ConsumerGroupState.EMPTY
              and not d.members, "describe_consumer_groups after close(): EMPTY, no members",
              f"error={err!r}" if err else f"state={d.state} members={d.members}")
    if hasattr(admin, "delete_consumer_groups"):
        try:
            admin.delete_consumer_groups([group], request_timeout=10)[group].result(15)
            ok("delete_consumer_groups")
            listed = admin.list_consumer_groups(request_timeout=10).result(15)
            check(all(g.group_id != group for g in listed.valid),
                  "list_consumer_groups no longer shows the deleted group",
                  f"{[g.group_id for g in listed.valid]}")
        except Exception as e:  # noqa: BLE001
            fail(f"delete_consumer_groups raised {e!r}")


if __name__ == "__main__":
    run_script("confluent-kafka", main)
