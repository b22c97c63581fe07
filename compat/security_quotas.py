#!/usr/bin/env python3
"""weir security check: client quotas (AlterClientQuotas, DescribeClientQuotas,
produce throttling).

Run by compat/security.sh against the broker it starts (--authorizer acl,
--super-users User:admin, a user `quota` besides admin). Neither confluent-kafka
nor kafka-python has a client-quota admin call, so the two requests are sent
through kafka-python's protocol classes (kafka-python >= 3); producing and
observing throttling goes through confluent-kafka's throttle_cb.

Checks: admin sets producer_byte_rate / consumer_byte_rate for user quota, a
much higher producer_byte_rate for user quota + client-id weir-quota-fast, and
one for the default client-id; DescribeClientQuotas returns them (strict and
not, exact and default matches); an unknown key is refused; a non-super user
may neither alter nor describe quotas (CLUSTER_AUTHORIZATION_FAILED); the user
+ client-id quota takes precedence over the user quota (that client is not
throttled) while another client-id of the same user is (throttle_time_ms > 0)
and the broker then holds the connection's next request; removing the quotas
empties DescribeClientQuotas.

Environment: BOOTSTRAP_SASL_SSL, CA_FILE, ADMIN_PASSWORD, QUOTA_PASSWORD.
Prints each check as "ok:" or "FAIL:" and exits non-zero when any failed.
"""
import os
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402 - needs the script's directory on sys.path
    CLIENT_TIMEOUTS,
    check,
    confluent_versions,
    env,
    fail,
    kafka_python_sasl_ssl_admin,
    ok,
    reporting,
    run_script,
)

TOPIC = "quota-topic"
USER = "quota"
FAST = "weir-quota-fast"
SLOW = "weir-quota-slow"
RATE = 16384.0            # producer_byte_rate of user quota, bytes/s
FAST_RATE = 1e9           # user quota + client-id weir-quota-fast
DEFAULT_CLIENT_RATE = 1e9  # default client-id: high enough to change nothing
RECORDS, RECORD_SIZE = 64, 800  # ~53 KB in one request: over 3 s at RATE
CLUSTER_AUTHORIZATION_FAILED = 31

# DescribeClientQuotas match types.
EXACT, DEFAULT, ANY = 0, 1, 2


def confluent_conf(user, password):
    return {"bootstrap.servers": env("BOOTSTRAP_SASL_SSL"),
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": env("CA_FILE"),
            "ssl.endpoint.identification.algorithm": "https",
            **CLIENT_TIMEOUTS}


class Quotas:
    """AlterClientQuotas / DescribeClientQuotas through kafka-python."""

    def __init__(self, user, password):
        from kafka.protocol.admin import (
            AlterClientQuotasRequest,
            DescribeClientQuotasRequest,
        )
        self._alter = AlterClientQuotasRequest
        self._describe = DescribeClientQuotasRequest
        self.admin = kafka_python_sasl_ssl_admin(
            user, password, f"weir-compat-quotas-{user}"
        )

    def _send(self, request):
        manager = self.admin._manager  # noqa: SLF001 - no public raw-request call

        async def go():
            return await manager.send(request)

        return manager.run(go)

    def alter(self, entries, validate_only=False):
        """entries: [(entity dict, {key: value or None to remove})].
        Returns [(entity, error_code, error_message)]."""
        req = self._alter(
            entries=[([(t, n) for t, n in entity.items()],
                      [(k, 0.0 if v is None else float(v), v is None) for k, v in ops.items()])
                     for entity, ops in entries],
            validate_only=validate_only)
        resp = self._send(req)
        return [({e.entity_type: e.entity_name for e in r.entity}, r.error_code, r.error_message)
                for r in resp.entries]

    def describe(self, components, strict):
        """components: [(entity_type, match_type, match)]. Returns
        (error_code, {frozenset(entity items): {key: value}})."""
        resp = self._describe(components=components, strict=strict)
        resp = self._send(resp)
        out = {}
        for entry in resp.entries or []:
            entity = frozenset((e.entity_type, e.entity_name) for e in entry.entity)
            out[entity] = {v.key: v.value for v in entry.values}
        return resp.error_code, out

    def close(self):
        self.admin.close()


def ent(**kw):
    """An entity dict; client_id becomes client-id."""
    return {k.replace("_", "-"): v for k, v in kw.items()}


def fs(entity):
    return frozenset(entity.items())


def produce_batch(conf, client_id, label):
    """Produces RECORDS records in one go as client_id. Returns the throttle
    events reported, as (monotonic time, throttle_time_ms), and the producer,
    kept open for a follow-up request on the same connection."""
    throttles = []
    delivered = []
    errors = []

    def on_throttle(ev):
        throttles.append((time.monotonic(), int(ev.throttle_time * 1000)))

    def on_delivery(err, _msg):
        (errors if err is not None else delivered).append(err)

    p = Producer({**conf, "client.id": client_id, "enable.idempotence": False, "acks": "all",
                  "linger.ms": 200, "batch.size": 1000000, "compression.type": "none",
                  "message.timeout.ms": 30000, "throttle_cb": on_throttle})
    payload = os.urandom(RECORD_SIZE)
    for _ in range(RECORDS):
        p.produce(TOPIC, value=payload, on_delivery=on_delivery)
    p.flush(40)
    p.poll(0.2)  # throttle events that arrived with the last response
    check(len(delivered) == RECORDS and not errors,
          f"{label}: {RECORDS} records of {RECORD_SIZE} B delivered",
          f"delivered={len(delivered)} errors={[str(e) for e in errors[:3]]}")
    return throttles, p


def run():
    admin_pw, quota_pw = env("ADMIN_PASSWORD"), env("QUOTA_PASSWORD")
    try:
        q = Quotas("admin", admin_pw)
    except ImportError as e:
        fail(f"kafka-python >= 3 is needed for the raw client-quota requests: {e!r}", fatal=True)
    except Exception as e:  # noqa: BLE001
        fail(f"kafka-python admin client (SASL_SSL, SCRAM-SHA-512) could not connect: {e!r}",
             fatal=True)
    ok("kafka-python admin client connected over SASL_SSL as admin")

    # --- topic and ACL for the quota user -----------------------------------------
    admin = AdminClient(confluent_conf("admin", admin_pw))
    try:
        admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)],
                            request_timeout=15)[TOPIC].result(timeout=20)
    except Exception as e:  # noqa: BLE001
        if "TOPIC_ALREADY_EXISTS" not in repr(e):
            fail(f"create_topics {TOPIC}: {e!r}", fatal=True)
    acl = AclBinding(ResourceType.TOPIC, TOPIC, ResourcePatternType.LITERAL, f"User:{USER}", "*",
                     AclOperation.WRITE, AclPermissionType.ALLOW)
    try:
        admin.create_acls([acl], request_timeout=15)[acl].result(timeout=20)
        ok(f"topic {TOPIC} and WRITE for User:{USER} in place")
    except Exception as e:  # noqa: BLE001
        fail(f"create_acls for User:{USER}: {e!r}", fatal=True)

    # --- AlterClientQuotas ----------------------------------------------------------
    user, user_fast, client_default = ent(user=USER), ent(user=USER, client_id=FAST), ent(client_id=None)
    res = q.alter([
        (user, {"producer_byte_rate": RATE, "consumer_byte_rate": 2 * RATE}),
        (user_fast, {"producer_byte_rate": FAST_RATE}),
        (client_default, {"producer_byte_rate": DEFAULT_CLIENT_RATE}),
    ])
    check(len(res) == 3 and all(code == 0 for _, code, _ in res),
          "alter_client_quotas: user, user + client-id and default client-id entities", f"{res}")

    res = q.alter([(ent(user=USER), {"no_such_quota": 1.0})])
    check(len(res) == 1 and res[0][1] != 0,
          "alter_client_quotas refuses an unknown key", f"{res}")
    if res and res[0][1]:
        print(f"      (error code {res[0][1]}: {res[0][2]})")

    # --- DescribeClientQuotas -------------------------------------------------------
    code, got = q.describe([("user", EXACT, USER)], strict=True)
    check(code == 0 and got == {fs(user): {"producer_byte_rate": RATE,
                                           "consumer_byte_rate": 2 * RATE}},
          f"describe_client_quotas user={USER} strict: exactly the user entity",
          f"error={code} got={got}")
    code, got = q.describe([("user", EXACT, USER)], strict=False)
    check(code == 0 and set(got) == {fs(user), fs(user_fast)}
          and got.get(fs(user_fast)) == {"producer_byte_rate": FAST_RATE},
          f"describe_client_quotas user={USER} not strict: also user + client-id",
          f"error={code} got={got}")
    code, got = q.describe([("client-id", DEFAULT, None)], strict=True)
    check(code == 0 and got == {fs(client_default): {"producer_byte_rate": DEFAULT_CLIENT_RATE}},
          "describe_client_quotas default client-id", f"error={code} got={got}")
    code, got = q.describe([("client-id", ANY, None)], strict=False)
    check(code == 0 and {fs(user_fast), fs(client_default)} <= set(got),
          "describe_client_quotas any client-id", f"error={code} got={got}")

    # --- non-super users may not -----------------------------------------------------
    try:
        qu = Quotas(USER, quota_pw)
        res = qu.alter([(ent(user=USER), {"producer_byte_rate": 1e9})])
        check(len(res) == 1 and res[0][1] == CLUSTER_AUTHORIZATION_FAILED,
              f"{USER}'s alter_client_quotas is refused (CLUSTER_AUTHORIZATION_FAILED)", f"{res}")
        code, _ = qu.describe([("user", EXACT, USER)], strict=False)
        check(code == CLUSTER_AUTHORIZATION_FAILED,
              f"{USER}'s describe_client_quotas is refused (CLUSTER_AUTHORIZATION_FAILED)",
              f"error={code}")
        qu.close()
    except Exception as e:  # noqa: BLE001
        fail(f"kafka-python as {USER}: {e!r}")

    # --- enforcement and precedence -------------------------------------------------
    conf = confluent_conf(USER, quota_pw)
    throttles, p = produce_batch(conf, FAST, f"client-id {FAST} (user + client-id quota)")
    check(not any(ms > 0 for _, ms in throttles),
          f"client-id {FAST} is not throttled: its user + client-id quota wins over the user quota",
          f"throttle_time_ms reported: {[ms for _, ms in throttles]}")
    p.flush(5)

    throttles, p = produce_batch(conf, SLOW, f"client-id {SLOW} (user quota {RATE:.0f} B/s)")
    positive = [(at, ms) for at, ms in throttles if ms > 0]
    if check(bool(positive), f"client-id {SLOW} is throttled (throttle_time_ms > 0 in a response)",
             f"throttle_time_ms reported: {[ms for _, ms in throttles]}"):
        at, ms = max(positive, key=lambda e: e[1])
        print(f"      throttle_time_ms reported: {[ms for _, ms in throttles]}")
        if ms <= 15000:
            # The broker reads nothing more from the connection for ms after
            # the throttled response: the next request on it is answered no
            # sooner.
            done = []
            p.produce(TOPIC, value=b"after-throttle",
                      on_delivery=lambda err, _m: done.append((err, time.monotonic())))
            p.flush(ms / 1000 + 15)
            gap = (done[0][1] - at) * 1000 if done else None
            check(len(done) == 1 and done[0][0] is None and gap >= 0.8 * ms - 50,
                  f"the next request on the throttled connection is answered "
                  f"{gap if gap is None else round(gap)} ms after a {ms} ms throttle",
                  f"delivered={[str(e) for e, _ in done]}")
        else:
            print(f"      note: a throttle of {ms} ms is longer than this check waits; "
                  "the hold on the connection was not measured")
    p.flush(5)

    # --- removal ---------------------------------------------------------------------
    res = q.alter([
        (user, {"producer_byte_rate": None, "consumer_byte_rate": None}),
        (user_fast, {"producer_byte_rate": None}),
        (client_default, {"producer_byte_rate": None}),
    ])
    check(len(res) == 3 and all(code == 0 for _, code, _ in res),
          "alter_client_quotas removes them", f"{res}")
    code, got = q.describe([("user", ANY, None)], strict=False)
    code2, got2 = q.describe([("client-id", ANY, None)], strict=False)
    check(code == 0 and code2 == 0 and not got and not got2,
          "describe_client_quotas is empty afterwards", f"users={got} clients={got2}")
    q.close()


def main():
    print(confluent_versions(), flush=True)
    try:
        import kafka
        print(f"kafka-python {kafka.__version__}", flush=True)
    except ImportError:
        pass
    with reporting():
        run()


if __name__ == "__main__":
    run_script("security-quotas", main)
