#!/usr/bin/env python3
"""ElectLeaders through confluent-kafka's AdminClient, for compat/cluster.sh.

    cluster_elect.py TOPIC

Asks for the preferred leader of TOPIC's partition 0 and prints the
outcome. Exits 0 when the election was made or was not needed (the
preferred replica already leads), 1 otherwise.
"""
import os
import sys

from confluent_kafka import ElectionType, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

topic = sys.argv[1]
admin = AdminClient({
    "bootstrap.servers": os.environ["BOOTSTRAP"],
    "broker.address.family": "v4",
})
# (No timeouts passed: confluent-kafka 2.16's binding of this call fails
# on keyword arguments; the client's defaults apply.)
future = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, 0)])
for tp, err in future.result(timeout=60).items():
    if err is None:
        print(f"  {tp.topic}-{tp.partition}: elected")
    elif err.args[0].code() == KafkaError.ELECTION_NOT_NEEDED:
        print(f"  {tp.topic}-{tp.partition}: not needed")
    else:
        print(f"  {tp.topic}-{tp.partition}: {err}", file=sys.stderr)
        sys.exit(1)
