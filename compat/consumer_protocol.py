#!/usr/bin/env python3
"""weir compatibility check: confluent-kafka with the consumer group protocol
of KIP-848 (`group.protocol=consumer`), beside a classic group on one broker.

A classic group and a consumer-protocol group read the same topic. In the
consumer group a second member joins (the first keeps what it keeps and
never stops), a third joins and leaves, every record is read once per group,
a static member restarts with its partitions, and the AdminClient lists and
describes both groups with their types. Then a classic group with a member
is joined by a consumer-protocol member (the online upgrade: the two split
the partitions) which leaves again (the online downgrade).

Needs env BOOTSTRAP=host:port. Exits 0 only when every check passed.
"""
import os
import sys
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402 - needs the script's directory on sys.path
    CLIENT_TIMEOUTS,
    POLL_WINDOW,
    STATE,
    check,
    confluent_versions,
    fail,
    reporting,
    require_bootstrap,
    run_script,
    unique_topic,
)

BOOTSTRAP = require_bootstrap()
TOPIC = unique_topic("kip848")
PARTITIONS = 4
N = 400


def consumer(group, client_id, protocol, **extra):
    conf = {
        "bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS,
        "group.id": group, "client.id": client_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "max.poll.interval.ms": 60000,
        **extra,
    }
    if protocol == "consumer":
        conf["group.protocol"] = "consumer"
    else:
        conf.update({"session.timeout.ms": 10000, "heartbeat.interval.ms": 1000})
    c = Consumer(conf)
    c.subscribe([TOPIC])
    return c


def assigned(c):
    return {tp.partition for tp in c.assignment()}


class Group:
    """Members of one group polled in turn; records by key, duplicates kept."""

    def __init__(self):
        self.members = {}
        self.got = {}
        self.dups = []
        self.history = {}

    def add(self, name, c):
        self.members[name] = c
        self.history[name] = []

    def poll_round(self):
        for name, c in self.members.items():
            msg = c.poll(0.05)
            if msg is not None and not msg.error():
                k = msg.key()
                if k in self.got:
                    self.dups.append(k)
                self.got[k] = name
                c.commit(message=msg, asynchronous=False)
            self.history[name].append(assigned(c))

    def until(self, cond, what):
        deadline = time.monotonic() + POLL_WINDOW
        while time.monotonic() < deadline:
            self.poll_round()
            if cond():
                return True
        fail(f"timed out waiting for {what}")
        return False


def produce(producer, start, n):
    for i in range(start, start + n):
        producer.produce(TOPIC, key=f"k{i}".encode(), value=b"v")
    check(producer.flush(15) == 0, f"{n} records produced")


def main():
    print(confluent_versions())
    print(f"bootstrap: {BOOTSTRAP}  topic: {TOPIC}", flush=True)
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS})
    try:
        with reporting():
            run(admin)
    finally:
        if STATE["created"]:
            try:
                admin.delete_topics([TOPIC], operation_timeout=5)[TOPIC].result(10)
            except Exception:  # noqa: BLE001
                pass


def run(admin):
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(15)
    STATE["created"] = True
    producer = Producer({"bootstrap.servers": BOOTSTRAP, **CLIENT_TIMEOUTS})
    produce(producer, 0, N // 2)

    classic_id = f"{TOPIC}-classic"
    new_id = f"{TOPIC}-consumer"
    classic = Group()
    classic.add("c1", consumer(classic_id, "classic-1", "classic"))
    new = Group()
    new.add("m1", consumer(new_id, "kip848-1", "consumer"))
    new.until(lambda: assigned(new.members["m1"]) == set(range(PARTITIONS)),
              "the first consumer-protocol member to hold every partition")
    check(True, "the first consumer-protocol member holds every partition")

    # A second member joins: the first gives up half and keeps the rest
    # throughout.
    before = assigned(new.members["m1"])
    mark = len(new.history["m1"])
    new.add("m2", consumer(new_id, "kip848-2", "consumer"))
    split = new.until(
        lambda: len(assigned(new.members["m1"])) == 2 and len(assigned(new.members["m2"])) == 2
        and not assigned(new.members["m1"]) & assigned(new.members["m2"]),
        "two members to split the partitions")
    check(split, "a second member joins and the partitions split 2/2 with no overlap")
    kept = assigned(new.members["m1"])
    stopped = [h for h in new.history["m1"][mark:] if not kept <= h]
    check(kept <= before and not stopped,
          "the first member never stopped consuming the partitions it kept",
          f"kept={kept} before={before} gaps={stopped[:3]}")

    produce(producer, N // 2, N // 2)
    ok_new = new.until(lambda: len(new.got) >= N, f"the consumer group to read {N} records")
    ok_classic = classic.until(lambda: len(classic.got) >= N, f"the classic group to read {N} records")
    check(ok_new and not new.dups, f"the consumer group read all {N} records once",
          f"got={len(new.got)} dups={new.dups[:5]}")
    check(ok_classic and not classic.dups, f"the classic group beside it read all {N} records once",
          f"got={len(classic.got)} dups={classic.dups[:5]}")
    check(set(new.got.values()) == {"m1", "m2"}, "both consumer-protocol members read records")

    # The AdminClient sees one group of each type.
    listed = admin.list_consumer_groups(request_timeout=10).result(15)
    types = {g.group_id: str(getattr(g, "type", "?")) for g in listed.valid}
    check("CONSUMER" in types.get(new_id, "").upper() and "CLASSIC" in types.get(classic_id, "").upper(),
          "list_consumer_groups gives each group its type", f"{types}")
    try:
        d = admin.describe_consumer_groups([new_id], request_timeout=10)[new_id].result(15)
        check(len(d.members) == 2 and "STABLE" in str(d.state).upper(),
              "describe_consumer_groups: the consumer group is stable with two members",
              f"state={d.state} members={len(d.members)}")
        check("CONSUMER" in str(getattr(d, "type", "CONSUMER")).upper(),
              "describe_consumer_groups: type CONSUMER", f"{getattr(d, 'type', None)}")
    except Exception as e:  # noqa: BLE001
        fail(f"describe_consumer_groups raised {e!r}")

    # The second member leaves: the first takes everything back.
    new.members.pop("m2").close()
    back = new.until(lambda: assigned(new.members["m1"]) == set(range(PARTITIONS)),
                     "the first member to hold every partition again")
    check(back, "after a leave the remaining member holds every partition")
    new.members.pop("m1").close()
    classic.members.pop("c1").close()

    # A static member restarts within its session: same partitions, only new
    # records (its commits kept), no new group epoch.
    static_id = f"{TOPIC}-static"
    s = Group()
    s.add("s1", consumer(static_id, "kip848-static", "consumer", **{"group.instance.id": "inst-1"}))
    s.until(lambda: len(s.got) >= N, "the static member to read every record")
    s.members.pop("s1").close()
    produce(producer, N, 40)
    s2 = Group()
    s2.add("s1", consumer(static_id, "kip848-static", "consumer", **{"group.instance.id": "inst-1"}))
    s2.until(lambda: len(s2.got) >= 40, "the restarted static member to read the new records")
    fresh = all(int(k[1:]) >= N for k in s2.got)
    check(len(s2.got) == 40 and fresh and not s2.dups,
          "the restarted static member resumes at its committed offsets",
          f"got={len(s2.got)} fresh={fresh} dups={s2.dups[:5]}")
    s2.members.pop("s1").close()
    mixed(admin, producer, N + 40)


def group_type(admin, group_id):
    listed = admin.list_consumer_groups(request_timeout=10).result(15)
    return {g.group_id: str(getattr(g, "type", "?")).upper() for g in listed.valid}.get(group_id, "")


def mixed(admin, producer, total):
    """Kafka 4's online upgrade and downgrade: a classic group with a member
    is joined by a consumer-protocol member, which later leaves."""
    mixed_id = f"{TOPIC}-mixed"
    cooperative = {"partition.assignment.strategy": "cooperative-sticky"}
    g = Group()
    g.add("c1", consumer(mixed_id, "mixed-classic", "classic", **cooperative))
    g.until(lambda: assigned(g.members["c1"]) == set(range(PARTITIONS)),
            "the classic member to hold every partition")
    g.until(lambda: len(g.got) >= total, "the classic member to read every record")
    check("CLASSIC" in group_type(admin, mixed_id), "a classic group to begin with")
    g.add("m1", consumer(mixed_id, "mixed-consumer", "consumer"))
    split = g.until(
        lambda: len(assigned(g.members["c1"])) == 2 and len(assigned(g.members["m1"])) == 2
        and not assigned(g.members["c1"]) & assigned(g.members["m1"]),
        "the classic and the consumer-protocol member to split the partitions")
    check(split and "CONSUMER" in group_type(admin, mixed_id),
          "a consumer-protocol member upgrades the classic group online and the two split it",
          f"type={group_type(admin, mixed_id)}")
    produce(producer, total, 100)
    g.until(lambda: len(g.got) >= total + 100, "the mixed group to read the new records")
    check(len(g.got) >= total + 100 and not g.dups, "the mixed group read every new record once",
          f"got={len(g.got)} dups={g.dups[:5]}")
    g.members.pop("m1").close()
    back = g.until(lambda: assigned(g.members["c1"]) == set(range(PARTITIONS))
                   and "CLASSIC" in group_type(admin, mixed_id),
                   "the classic member to hold every partition of a classic group again")
    check(back, "the consumer-protocol member leaves: the group is downgraded online to classic")
    g.members.pop("c1").close()


if __name__ == "__main__":
    run_script("consumer-protocol", main)
