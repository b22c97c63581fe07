"""weir exactly-once check: a consume-transform-produce loop (eos_loop.py,
confluent-kafka transactions) copies N input records to an output topic
while the loop is killed -9, and then the broker is killed -9, mid-stream.
Every input record must be in the output exactly once for a read_committed
reader: no duplicate, no gap.

Starts its own broker from $WEIR_BIN (free loopback ports, its own data
directory; BOOTSTRAP from compat/run is ignored, this test restarts the
broker). Broker log: compat/logs/eos-broker.log; loop output:
compat/logs/eos-loop.log.

Environment: WEIR_BIN (required), EOS_RECORDS (default 3000).
"""
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import check, fail, ok, reporting, run_script  # noqa: E402

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LOGS = os.path.join(HERE, "logs")
N = int(os.environ.get("EOS_RECORDS", "3000"))
PARTITIONS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.port = free_port()
        self.http = free_port()
        self.proc = None
        self.log = open(os.path.join(LOGS, "eos-broker.log"), "a")

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        addr = self.bootstrap
        self.proc = subprocess.Popen(
            [os.environ["WEIR_BIN"], "--listen", addr, "--advertised-listener", addr,
             "--http-listen", f"127.0.0.1:{self.http}", "--data-dir", self.data_dir,
             "--log-format", "text",
             "--transaction-abort-timed-out-transaction-cleanup-interval-ms", "500"],
            stdout=self.log, stderr=self.log)
        CHILDREN.append(self.proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        fail("the broker started", fatal=True)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class Loop:
    def __init__(self, bootstrap):
        self.log = open(os.path.join(LOGS, "eos-loop.log"), "a")
        env = dict(os.environ, BOOTSTRAP=bootstrap, PARTITIONS=str(PARTITIONS))
        self.proc = subprocess.Popen(
            [sys.executable, "-u", os.path.join(HERE, "eos_loop.py")],
            stdout=subprocess.PIPE, stderr=self.log, env=env, text=True)
        CHILDREN.append(self.proc)
        self.position = 0

    def wait_position(self, at_least, timeout=60):
        """Follows the loop's output until its committed position reaches
        at_least; returns its exit status if it ends first, else None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:
                return self.proc.wait()
            self.log.write(line)
            self.log.flush()
            if line.startswith("position "):
                self.position = int(line.split()[1])
                if self.position >= at_least:
                    return None
        return None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def run_to_end(bootstrap, loops):
    """Restarts the loop until it ends with status 0."""
    for attempt in range(20):
        loop = Loop(bootstrap)
        loops.append(loop)
        status = loop.wait_position(N + 1, timeout=120)
        if status == 0:
            return True
        print(f"note: loop exited with {status}; starting it again (attempt {attempt + 1})",
              flush=True)
        time.sleep(0.5)
    return False


def read_output(bootstrap):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-check",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("eos-out", p, 0) for p in range(PARTITIONS)])
    out = []
    idle = time.monotonic()
    while time.monotonic() - idle < 3:
        for m in c.consume(500, timeout=0.5):
            if m.error() is None:
                out.append(m.value().decode())
                idle = time.monotonic()
    c.close()
    return out


def main():
    with reporting():
        run()


CHILDREN = []  # every process started, killed when the deadline fires


def on_alarm(sig, frame):
    for proc in CHILDREN:
        if proc.poll() is None:
            proc.kill()
    report_timeout(sig, frame)


def run():
    os.makedirs(LOGS, exist_ok=True)
    for name in ("eos-broker.log", "eos-loop.log"):
        open(os.path.join(LOGS, name), "w").close()
    with tempfile.TemporaryDirectory() as data:
        broker = Broker(data)
        broker.start()
        loops = []
        try:
            bs = broker.bootstrap
            admin = AdminClient({"bootstrap.servers": bs})
            fs = admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in ("eos-in", "eos-out")])
            for f in fs.values():
                f.result(30)
            p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "linger.ms": 5})
            for i in range(N):
                p.produce("eos-in", key=str(i % 50).encode(), value=f"i-{i}".encode())
                if i % 1000 == 999:
                    p.flush(30)
            check(p.flush(30) == 0, f"{N} input records produced")

            loop = Loop(bs)
            loops.append(loop)
            check(loop.wait_position(N // 4) is None, "the loop is a quarter through")
            loop.kill9()
            ok(f"killed -9 the loop at position {loop.position}")

            loop = Loop(bs)
            loops.append(loop)
            check(loop.wait_position(N // 2) is None, "a new loop resumes and passes half")
            broker.kill9()
            ok(f"killed -9 the broker with the loop at position {loop.position}")
            time.sleep(0.5)
            broker.start()
            ok("restarted the broker")
            status = loop.wait_position(N + 1, timeout=60)
            if status != 0:
                check(run_to_end(bs, loops), "the loop runs to the end after restarts")
            else:
                ok("the loop rode through the broker restart to the end")

            out = read_output(bs)
            want = {f"o-{i}" for i in range(N)}
            dups = len(out) - len(set(out))
            missing = want - set(out)
            extra = set(out) - want
            check(dups == 0, "no input record is in the output twice", f"{dups} duplicates")
            check(not missing, "every input record is in the output",
                  f"{len(missing)} missing, e.g. {sorted(missing)[:5]}")
            check(not extra, "nothing else is in the output", f"{sorted(extra)[:5]}")
        finally:
            for loop in loops:
                if loop.proc.poll() is None:
                    loop.kill9()
            if broker.proc and broker.proc.poll() is None:
                broker.kill9()


if __name__ == "__main__":
    common.OVERALL_TIMEOUT = int(os.environ.get("OVERALL_TIMEOUT", "240"))
    # run_script arms the deadline with common.on_alarm: this module's
    # handler kills the broker and the loops first.
    report_timeout = common.on_alarm
    common.on_alarm = on_alarm
    run_script("eos", main)
