#!/usr/bin/env python3
"""Produce or consume numbered records for compat/cluster.sh.

    cluster_clients.py LIB produce TOPIC FROM COUNT
    cluster_clients.py LIB consume TOPIC COUNT

LIB is confluent-kafka or kafka-python; BOOTSTRAP names the brokers. produce
writes values "<LIB>-<n>" for n in FROM..FROM+COUNT with acks=all (and
idempotence where the client has it), each record acknowledged before the
script exits 0. consume reads the topic's partition 0 from the beginning and
prints one value per line until COUNT records arrived (exit 0) or the time
runs out (exit 1).
"""
import os
import sys
import time

BOOTSTRAP = os.environ["BOOTSTRAP"]
DEADLINE = time.monotonic() + float(os.environ.get("STEP_TIMEOUT", "60"))


def confluent_produce(topic, start, count):
    from confluent_kafka import Producer

    p = Producer({
        "bootstrap.servers": BOOTSTRAP,
        "acks": "all",
        "enable.idempotence": True,
        "message.timeout.ms": 45000,
        "broker.address.family": "v4",
    })
    failed = []

    def done(err, _msg):
        if err is not None:
            failed.append(err)

    for n in range(start, start + count):
        p.produce(topic, value=f"confluent-kafka-{n}".encode(), partition=0, on_delivery=done)
        p.poll(0)
    left = p.flush(max(1.0, DEADLINE - time.monotonic()))
    if left or failed:
        print(f"not acknowledged: {left} in queue, failures {failed[:3]}", file=sys.stderr)
        return 1
    return 0


def confluent_consume(topic, count):
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

    c = Consumer({
        "bootstrap.servers": BOOTSTRAP,
        "group.id": "cluster-compat-unused",
        "enable.auto.commit": False,
        "broker.address.family": "v4",
    })
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = 0
    while got < count and time.monotonic() < DEADLINE:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            print(f"consume error (retried): {m.error()}", file=sys.stderr)
            continue
        print(m.value().decode())
        got += 1
    c.close()
    return 0 if got >= count else 1


def kafka_python_produce(topic, start, count):
    from kafka import KafkaProducer

    p = KafkaProducer(
        bootstrap_servers=BOOTSTRAP.split(","),
        acks="all",
        retries=100,
        retry_backoff_ms=200,
        max_in_flight_requests_per_connection=1,
        request_timeout_ms=10000,
    )
    futures = [
        p.send(topic, value=f"kafka-python-{n}".encode(), partition=0)
        for n in range(start, start + count)
    ]
    p.flush(timeout=max(1.0, DEADLINE - time.monotonic()))
    bad = 0
    for f in futures:
        try:
            f.get(timeout=max(1.0, DEADLINE - time.monotonic()))
        except Exception as e:  # noqa: BLE001 - any failure is a failed record
            bad += 1
            if bad <= 3:
                print(f"not acknowledged: {e!r}", file=sys.stderr)
    p.close()
    return 1 if bad else 0


def kafka_python_consume(topic, count):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP.split(","), enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = 0
    while got < count and time.monotonic() < DEADLINE:
        for records in c.poll(timeout_ms=500).values():
            for r in records:
                print(r.value.decode())
                got += 1
    c.close()
    return 0 if got >= count else 1


def main():
    lib, op, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    impl = {
        ("confluent-kafka", "produce"): confluent_produce,
        ("confluent-kafka", "consume"): confluent_consume,
        ("kafka-python", "produce"): kafka_python_produce,
        ("kafka-python", "consume"): kafka_python_consume,
    }[(lib, op)]
    args = [int(a) for a in sys.argv[4:]]
    sys.exit(impl(topic, *args))


if __name__ == "__main__":
    main()
