#!/usr/bin/env python3
"""weir compatibility check: kafka-python (pure-Python client).

Covers topic admin, a plain producer, an assign() consumer without a group,
and a consumer group (subscribe, commit) inspected through the admin API.

Needs env BOOTSTRAP=host:port. Exits 0 only when every check passed; prints
each check as "ok:" or "FAIL:" and a summary of the failures at the end.
"""
import logging
import os
import sys
import time
import traceback

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402 - needs the script's directory on sys.path
    POLL_WINDOW,
    STATE,
    check,
    fail,
    ok,
    reporting,
    require_bootstrap,
    run_script,
    unique_topic,
)

BOOTSTRAP = require_bootstrap()
TOPIC = unique_topic("kafkapython")
PARTITIONS = 2
N = 200

COMMON = {
    "bootstrap_servers": BOOTSTRAP,
    "request_timeout_ms": 15000,
    "reconnect_backoff_max_ms": 1000,
}


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
        with reporting():
            try:
                admin = KafkaAdminClient(client_id="weir-compat-admin",
                                         **supported(KafkaAdminClient, **COMMON,
                                                     bootstrap_timeout_ms=15000))
                ok("KafkaAdminClient connected")
            except Exception as e:  # noqa: BLE001
                fail(f"KafkaAdminClient could not connect: {e!r}", fatal=True)
            run(admin)
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

    # --- consumer group: subscribe, read everything, commit, inspect ------------------
    group_section(admin, counts)

    # --- describe_log_dirs: bytes per partition on the broker's disk ------------------
    log_dirs_section(admin, counts)

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


def log_dirs_section(admin, counts):
    """DescribeLogDirs: the data dir, with a size for every partition holding records."""
    try:
        per_broker = admin.describe_log_dirs()
    except Exception as e:  # noqa: BLE001
        fail(f"describe_log_dirs raised {e!r}")
        return
    dirs = [d for b in per_broker for d in b.get("log_dirs", [])]
    check(len(dirs) == 1 and dirs[0].get("error_code") == 0 and dirs[0].get("log_dir"),
          "describe_log_dirs names one log dir without error", f"got {dirs!r}")
    sizes = {}
    for d in dirs:
        for t in d.get("topics", []):
            if t.get("name") == TOPIC:
                for p in t.get("partitions", []):
                    sizes[p.get("partition_index")] = p.get("partition_size")
    check(set(sizes) == set(counts) and all(
              (sizes[p] > 0) == (counts[p] > 0) for p in counts),
          "describe_log_dirs gives every partition of the topic a size on disk",
          f"got {sizes!r} for records {counts!r}")
    if dirs:
        total, usable = dirs[0].get("total_bytes", -1), dirs[0].get("usable_bytes", -1)
        check(total > 0 and 0 <= usable <= total,
              "describe_log_dirs reports the disk's total and usable bytes",
              f"total={total} usable={usable}")


# The group admin calls were renamed in kafka-python 3 (list_consumer_groups ->
# list_groups, ...); these accept either and return one shape.
def admin_list_groups(admin):
    """{group_id: protocol_type}"""
    if hasattr(admin, "list_groups"):
        return {g["group_id"]: g["protocol_type"] for g in admin.list_groups()}
    return {g[0]: g[1] for g in admin.list_consumer_groups()}


def admin_describe_group(admin, group):
    """(state, protocol_type, protocol, [(client_id, {topic: [partitions]})])"""
    if hasattr(admin, "describe_groups"):
        d = admin.describe_groups([group])[group]
        members = [(m["client_id"],
                    {a["topic"]: sorted(a["partitions"])
                     for a in (m.get("member_assignment") or {}).get("assigned_partitions", [])})
                   for m in d["members"]]
        return d["group_state"], d["protocol_type"], d["protocol_data"], members
    d = admin.describe_consumer_groups([group])[0]
    members = []
    for m in d.members:
        assigned = {}
        for t, parts in getattr(m.member_assignment, "assignment", None) or []:
            assigned[t] = sorted(parts)
        members.append((m.client_id, assigned))
    return d.state, d.protocol_type, d.protocol, members


def admin_group_offsets(admin, group):
    """{partition of TOPIC: committed offset}"""
    if hasattr(admin, "list_group_offsets"):
        res = admin.list_group_offsets({group: None})[group]
    else:
        res = admin.list_consumer_group_offsets(group)
    return {tp.partition: om.offset for tp, om in res.items() if tp.topic == TOPIC}


def admin_delete_group(admin, group):
    """'OK' (kafka-python 3) or an error class with errno 0 (2.x) on success"""
    if hasattr(admin, "delete_groups"):
        res = admin.delete_groups([group])
    else:
        res = admin.delete_consumer_groups([group])
    if isinstance(res, dict):
        return res.get(group)
    return dict(res).get(group)


def group_section(admin, counts):
    group = f"weir-compat-group-{TOPIC}"
    consumer = KafkaConsumer(**supported(
        KafkaConsumer, **COMMON, group_id=group, client_id="weir-compat-kafka-python",
        enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=200,
        session_timeout_ms=10000, heartbeat_interval_ms=1000, max_poll_interval_ms=60000))
    closed = False
    try:
        consumer.subscribe([TOPIC])
        got = {}
        bad = []
        deadline = time.monotonic() + POLL_WINDOW
        while len(got) < N and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    try:
                        i = int(r.key.decode().split("-")[1])
                    except Exception:  # noqa: BLE001
                        bad.append(f"unexpected key {r.key!r} at {tp.partition}/{r.offset}")
                        continue
                    if i in got:
                        bad.append(f"duplicate key-{i}")
                    got[i] = r
        assigned = sorted(tp.partition for tp in consumer.assignment() if tp.topic == TOPIC)
        check(assigned == list(range(PARTITIONS)),
              f"group consumer was assigned all {PARTITIONS} partitions (subscribe)",
              f"assignment {assigned}")
        check(not bad, "group consumer saw no unexpected or duplicate records", f"{bad[:5]}")
        check(len(got) == N, f"group consumer read all {N} records (auto_offset_reset=earliest)",
              f"read {len(got)} in {POLL_WINDOW}s")
        mism = [i for i, r in got.items() if (r.key, r.value) != rec(i)[:2]]
        check(not mism, "group-consumed keys and values match", f"mismatched: {mism[:5]}")

        try:
            consumer.commit()
            ok("consumer.commit() of the consumed position")
        except Exception as e:  # noqa: BLE001
            fail(f"consumer.commit() raised {e!r}")
        try:
            tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
            committed = {tp.partition: consumer.committed(tp) for tp in tps}
            check(committed == counts, "consumer.committed() = records per partition",
                  f"got {committed}, expected {counts}")
        except Exception as e:  # noqa: BLE001
            fail(f"consumer.committed() raised {e!r}")

        # --- admin view of the live group ------------------------------------------------
        try:
            groups = admin_list_groups(admin)
            check(groups.get(group) == "consumer",
                  "admin lists the group (protocol type consumer)", f"got {groups!r}")
        except Exception as e:  # noqa: BLE001
            fail(f"admin list groups raised {e!r}")
        try:
            state, ptype, proto, members = admin_describe_group(admin, group)
            check(state == "Stable" and ptype == "consumer" and len(members) == 1,
                  "admin describes the group: Stable, consumer, 1 member",
                  f"state={state!r} protocol_type={ptype!r} members={members!r}")
            if len(members) == 1:
                check(bool(proto) and members[0][0] == "weir-compat-kafka-python" and
                      members[0][1] == {TOPIC: list(range(PARTITIONS))},
                      f"described member: assignor {proto!r}, client id and "
                      f"assignment of all {PARTITIONS} partitions",
                      f"protocol={proto!r} member={members[0]!r}")
        except Exception as e:  # noqa: BLE001
            fail(f"admin describe group raised {e!r}")
        check_group_offsets(admin, group, counts, "while the consumer is a member")

        consumer.close()
        closed = True
        try:
            state = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                state, _, _, members = admin_describe_group(admin, group)
                if state == "Empty":
                    break
                time.sleep(0.3)
            check(state == "Empty" and not members,
                  "after consumer.close() (LeaveGroup) the group is Empty",
                  f"state={state!r} members={members!r}")
        except Exception as e:  # noqa: BLE001
            fail(f"admin describe group after close raised {e!r}")
        check_group_offsets(admin, group, counts, "after the consumer left")
        try:
            err = admin_delete_group(admin, group)
            check(err == "OK" or getattr(err, "errno", None) == 0,
                  "admin delete_groups", f"got {err!r}")
            groups = admin_list_groups(admin)
            check(group not in groups, "admin no longer lists the deleted group",
                  f"got {groups!r}")
        except Exception as e:  # noqa: BLE001
            fail(f"admin delete_groups raised {e!r}")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        fail(f"consumer group section raised {e!r}")
    finally:
        if not closed:
            consumer.close()


def check_group_offsets(admin, group, counts, when):
    try:
        offs = admin_group_offsets(admin, group)
        check(offs == counts, f"admin committed offsets {when} = records per partition",
              f"got {offs}, expected {counts}")
    except Exception as e:  # noqa: BLE001
        fail(f"admin committed offsets {when} raised {e!r}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="      log: %(name)s %(levelname)s %(message)s")
    run_script("kafka-python", main)
