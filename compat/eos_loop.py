"""An exactly-once consume-transform-produce loop (confluent-kafka).

Reads `eos-in` (read_committed, manually assigned, from the offsets committed
for the group `eos`), writes each record's value with "i-" turned into "o-"
to `eos-out`, and commits its input position in the same transaction, in
transactions of BATCH records. Prints "position N" (records consumed and
committed so far) after each commit.

Any error ends the process with a non-zero status, after aborting the open
transaction when it can: the driver (eos.py) starts it again, and the new
instance fences the old transactional producer and resumes from the
committed offsets. Exits 0 once it has consumed everything (its position is
the end of every input partition) and nothing new came for IDLE seconds.

Environment: BOOTSTRAP, PARTITIONS, BATCH (default 20).
"""
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

BOOTSTRAP = os.environ["BOOTSTRAP"]
PARTITIONS = int(os.environ.get("PARTITIONS", "3"))
BATCH = int(os.environ.get("BATCH", "20"))
IDLE = 3.0


def main():
    consumer = Consumer({
        "bootstrap.servers": BOOTSTRAP,
        "group.id": "eos",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "socket.timeout.ms": 10000,
    })
    producer = Producer({
        "bootstrap.servers": BOOTSTRAP,
        "transactional.id": "eos-loop",
        **({"debug": os.environ["EOS_DEBUG"]} if os.environ.get("EOS_DEBUG") else {}),
        "transaction.timeout.ms": 5000,
        "linger.ms": 5,
        "socket.timeout.ms": 5000,
    })
    producer.init_transactions(30)
    parts = [TopicPartition("eos-in", p) for p in range(PARTITIONS)]
    # Offsets committed for the group (require_stable: an open transaction
    # holding offsets for them is waited for).
    committed = consumer.committed(parts, timeout=30)
    consumer.assign(committed)
    # The next offset of each partition, as far as this instance knows.
    nxt = {tp.partition: max(tp.offset, 0) for tp in committed}
    last = time.monotonic()
    while True:
        msgs = consumer.consume(BATCH, timeout=0.5)
        msgs = [m for m in msgs if m.error() is None]
        if not msgs:
            if time.monotonic() - last > IDLE and caught_up(consumer, parts, nxt):
                return 0
            continue
        last = time.monotonic()
        trace(f"begin {len(msgs)}")
        producer.begin_transaction()
        try:
            for m in msgs:
                value = m.value().decode().replace("i-", "o-", 1)
                producer.produce("eos-out", key=m.key(), value=value.encode())
            for m in msgs:
                nxt[m.partition()] = m.offset() + 1
            positions = [TopicPartition("eos-in", p, o) for p, o in nxt.items() if o > 0]
            trace("offsets")
            producer.send_offsets_to_transaction(
                positions, consumer.consumer_group_metadata(), 30)
            trace("commit")
            producer.commit_transaction(30)
        except KafkaException as e:
            print(f"transaction failed: {e}", flush=True)
            try:
                producer.abort_transaction(10)
            except KafkaException:
                pass
            return 3
        print(f"position {sum(nxt.values())}", flush=True)


def trace(msg):
    if os.environ.get("EOS_TRACE"):
        print(f"{time.time():.3f} {msg}", file=sys.stderr, flush=True)


def caught_up(consumer, parts, nxt):
    for tp in parts:
        _, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        if nxt[tp.partition] < high:
            return False
    return True


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KafkaException as e:
        print(f"loop failed: {e}", flush=True)
        sys.exit(4)
