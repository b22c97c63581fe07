"""Helpers shared by the Python compatibility scripts in compat/.

Check reporting (ok / fail / check, the summary at the end), the overall
deadline, client timeouts, unique topic names and the guard that turns an
aborted or crashed run into a reported failure. The scripts import it with
their own directory on sys.path, so they work from compat/ or by absolute path.
"""
import contextlib
import os
import signal
import sys
import time
import traceback

OVERALL_TIMEOUT = int(os.environ.get("OVERALL_TIMEOUT", "100"))
POLL_WINDOW = 30.0  # seconds any single wait/poll loop may take

# librdkafka (confluent-kafka) settings that bound connection attempts.
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


def require_bootstrap():
    """The Kafka address from env BOOTSTRAP; exits when it is not set."""
    bootstrap = os.environ.get("BOOTSTRAP")
    if not bootstrap:
        sys.exit("set BOOTSTRAP=host:port")
    return bootstrap


def env(name):
    """The value of environment variable `name`; exits when it is not set."""
    value = os.environ.get(name)
    if not value:
        sys.exit(f"set {name}")
    return value


def kafka_python_sasl_ssl_admin(user, password, client_id):
    """A kafka-python admin client on env BOOTSTRAP_SASL_SSL, SCRAM-SHA-512,
    trusting env CA_FILE."""
    from kafka import KafkaAdminClient
    return KafkaAdminClient(
        bootstrap_servers=env("BOOTSTRAP_SASL_SSL"),
        client_id=client_id,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=user,
        sasl_plain_password=password,
        ssl_cafile=env("CA_FILE"),
        ssl_check_hostname=True,
        request_timeout_ms=15000,
        bootstrap_timeout_ms=15000,
    )


def unique_topic(kind):
    """A topic name no earlier run used: weir-compat-<kind>-<pid>-<unix time>."""
    return f"weir-compat-{kind}-{os.getpid()}-{int(time.time())}"


def confluent_versions():
    """'confluent-kafka X, librdkafka Y' for the installed confluent-kafka."""
    import confluent_kafka
    version = confluent_kafka.version()  # a str in some releases, a tuple in others
    if isinstance(version, tuple):
        version = version[0]
    return f"confluent-kafka {version}, librdkafka {confluent_kafka.libversion()[0]}"


@contextlib.contextmanager
def reporting():
    """Runs the body of a check run: an Abort stops it with a note, any other
    exception is printed and counted as a failure."""
    try:
        yield
    except Abort as e:
        print(f"aborting remaining steps: {e}", flush=True)
    except Exception as e:  # noqa: BLE001 - report anything as a failure
        traceback.print_exc()
        fail(f"unexpected exception: {e!r}")


def run_script(name, main):
    """Runs main() under the overall deadline, prints the summary and exits
    non-zero when any check failed."""
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(OVERALL_TIMEOUT)
    main()
    print()
    if failures:
        print(f"{name}: {len(failures)} of {checks} checks FAILED:")
        for f in failures:
            print(f"  - {f}")
        sys.exit(1)
    print(f"{name}: all {checks} checks passed")
