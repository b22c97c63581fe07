//! Three broker processes forming the metadata quorum on loopback ports,
//! each with its own data dir; the test kills -9, restarts and pauses
//! (SIGSTOP) them and reads each node's view from `/api/status`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// Three voters on free ports.
pub struct TestCluster {
    dirs: Vec<tempfile::TempDir>,
    pub ports: Vec<(u16, u16, u16)>,
    /// A second Kafka port for each node, for flags naming `{kafka2}`.
    pub second_ports: Vec<u16>,
    voters: String,
    nodes: Vec<Option<ChildBroker>>,
    /// Flags every node gets besides its own.
    extra: Vec<String>,
}

impl TestCluster {
    /// Another test may take a port between our pick and a child's bind:
    /// then the whole cluster is started again on new ports.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, &[])
    }

    /// [`TestCluster::start`], with `extra` flags for every node; `{kafka}`
    /// in a flag is the node's Kafka port, `{kafka2}` a second free port,
    /// `{node}` its id.
    pub fn start_with(n: usize, extra: &[&str]) -> Self {
        for _ in 0..5 {
            if let Some(c) = Self::try_start(n, extra) {
                return c;
            }
        }
        panic!("the cluster did not start after 5 attempts");
    }

    fn try_start(n: usize, extra: &[&str]) -> Option<Self> {
        let ports: Vec<_> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, _, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        // WEIR_KEEP_DATA=1 keeps the data dirs (printed) for a post-mortem.
        let keep = std::env::var_os("WEIR_KEEP_DATA").is_some();
        let dirs = (0..n)
            .map(|_| {
                let mut d = tempfile::tempdir().unwrap();
                if keep {
                    d.disable_cleanup(true);
                    eprintln!("keeping {}", d.path().display());
                }
                d
            })
            .collect();
        let mut c = Self {
            dirs,
            second_ports: (0..n).map(|_| free_port()).collect(),
            ports,
            voters,
            nodes: (0..n).map(|_| None).collect(),
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
        };
        for i in 0..n {
            if !c.try_start_node(i) {
                return None;
            }
        }
        // A node may lose one of its ports to another test between the
        // probe and its bind, and exit after its Kafka port accepted: the
        // whole cluster then starts again on other ports.
        for i in 0..n {
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.status(i).is_none() {
                let exited = c.nodes[i]
                    .as_mut()
                    .is_none_or(|b| matches!(b.child.try_wait(), Ok(Some(_))));
                if exited || Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(c)
    }

    pub fn start_node(&mut self, i: usize) {
        assert!(self.try_start_node(i), "node {} did not start", i + 1);
    }

    fn try_start_node(&mut self, i: usize) -> bool {
        let (kafka, http, _) = self.ports[i];
        let id = (i + 1).to_string();
        let voters = self.voters.clone();
        let extra: Vec<String> = self
            .extra
            .iter()
            .map(|a| {
                a.replace("{kafka}", &kafka.to_string())
                    .replace("{kafka2}", &self.second_ports[i].to_string())
                    .replace("{node}", &id)
            })
            .collect();
        let mut args = vec!["--node-id", &id, "--controller-quorum-voters", &voters];
        args.extend(extra.iter().map(String::as_str));
        self.nodes[i] = ChildBroker::try_start(self.dirs[i].path(), kafka, http, &args);
        self.nodes[i].is_some()
    }

    /// Every node's Kafka address, as a bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.ports
            .iter()
            .map(|(k, _, _)| format!("127.0.0.1:{k}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The Kafka addresses of every node but node `id` (1-based, as node
    /// ids are), as a bootstrap list.
    pub fn bootstrap_without(&self, id: i32) -> String {
        self.ports
            .iter()
            .enumerate()
            .filter(|(i, _)| *i + 1 != id as usize)
            .map(|(_, (k, _, _))| format!("127.0.0.1:{k}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The data dir of node `i` (0-based).
    pub fn data_dir(&self, i: usize) -> &std::path::Path {
        self.dirs[i].path()
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            n.kill9();
        }
    }

    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.nodes[i].as_ref().unwrap().child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Node `i`'s `cluster` status, or `None` if it does not answer quickly.
    pub fn status(&self, i: usize) -> Option<Value> {
        status_at(self.ports[i].1)
    }

    /// The voters, as `--controller-quorum-voters` names them.
    pub fn voters(&self) -> &str {
        &self.voters
    }

    /// Waits until every node in `among` names the same controller (one of
    /// `among`, other than `not`) and knows all brokers; returns the
    /// controller's id and term.
    pub fn agreed(&self, among: &[usize], not: Option<u64>, within: Duration) -> (u64, u64) {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<_> = among.iter().map(|&i| self.status(i)).collect();
            if let Some(first) = views.first().cloned().flatten() {
                let leader = first["controller"].as_u64();
                let all_agree = views.iter().all(|v| {
                    v.as_ref().is_some_and(|v| {
                        v["controller"].as_u64() == leader
                            && v["brokers"].as_array().map(Vec::len) == Some(self.nodes.len())
                    })
                });
                if let Some(l) = leader {
                    let member = among.iter().any(|&i| i as u64 + 1 == l);
                    if all_agree && member && Some(l) != not {
                        return (l, first["term"].as_u64().unwrap_or(0));
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed controller among {among:?} within {within:?}: {views:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The `cluster` part of `/api/status` from the admin port `http_port`.
pub fn status_at(http_port: u16) -> Option<Value> {
    let addr = format!("127.0.0.1:{http_port}");
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
    let req = format!("GET /api/status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (code, _, body) = split_http_response(&resp);
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    Some(v["cluster"].clone())
}

#[test]
fn three_brokers_form_a_quorum_elect_a_controller_and_register_each_other() {
    let c = TestCluster::start(3);
    let (leader, term) = c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    assert!((1..=3).contains(&leader));
    assert!(term >= 1);
    let v = c.status(0).unwrap();
    let brokers: Vec<(u64, String)> = v["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["kafka"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect: Vec<(u64, String)> = c
        .ports
        .iter()
        .enumerate()
        .map(|(i, (k, _, _))| (i as u64 + 1, format!("127.0.0.1:{k}")))
        .collect();
    assert_eq!(brokers, expect);
    // Exactly one leader, and it says so.
    let roles: Vec<String> = (0..3)
        .map(|i| c.status(i).unwrap()["role"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(roles[leader as usize - 1], "leader");
    // The leader's metrics show it and the followers' replication.
    let http = format!("127.0.0.1:{}", c.ports[leader as usize - 1].1);
    let (code, _, text) = http_get(http.parse().unwrap(), "/metrics", &[]);
    assert_eq!(code, 200);
    assert!(text.contains("weir_controller_is_leader 1"), "{text}");
    assert!(text.contains("weir_cluster_brokers 3"));
    assert!(text.contains("weir_controller_replication_lag{node=\"2\"}") || leader == 2);
}

#[test]
fn killing_the_controller_elects_another_and_the_restarted_node_catches_up() {
    let mut c = TestCluster::start(3);
    let (old, term) = c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let dead = old as usize - 1;
    let rest: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let t = Instant::now();
    c.kill9(dead);
    let (new, new_term) = c.agreed(&rest, Some(old), Duration::from_secs(15));
    eprintln!(
        "controller {old} killed: controller {new} elected in {} ms (term {term} -> {new_term})",
        t.elapsed().as_millis()
    );
    assert!(new_term > term);
    // Back with its data dir: it follows the new controller, with the
    // whole log applied and every broker still registered.
    c.start_node(dead);
    let (after, _) = c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    assert_eq!(
        after, new,
        "a restarted node does not take the controller back"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let back = c.status(dead).unwrap();
        let lead = c.status(new as usize - 1).unwrap();
        if back["last_applied_index"] == lead["last_applied_index"] && back["role"] == "follower" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not catch up: {back} vs {lead}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_paused_controller_is_replaced_and_follows_when_it_wakes() {
    let mut c = TestCluster::start(3);
    let (old, term) = c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let paused = old as usize - 1;
    let rest: Vec<usize> = (0..3).filter(|&i| i != paused).collect();
    c.signal(paused, "-STOP");
    let (new, new_term) = c.agreed(&rest, Some(old), Duration::from_secs(15));
    assert!(new_term > term);
    c.signal(paused, "-CONT");
    // Awake, it learns of the higher term and follows: it must not go on
    // acting as the controller.
    let (after, _) = c.agreed(&[0, 1, 2], None, Duration::from_secs(15));
    assert_eq!(after, new);
    let v = c.status(paused).unwrap();
    assert_eq!(v["role"], "follower", "{v}");
    assert!(v["term"].as_u64().unwrap() >= new_term);
    c.kill9(paused);
}

#[test]
fn the_quorum_state_survives_kill_9_of_every_node() {
    let mut c = TestCluster::start(3);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let before = c.status(0).unwrap();
    for i in 0..3 {
        c.kill9(i);
    }
    for i in 0..3 {
        c.start_node(i);
    }
    // A controller whose committed vote was saved may lead again in the
    // same term; no other node can have been elected in it.
    let (_, term) = c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    assert!(term >= before["term"].as_u64().unwrap());
    // Registrations come back from the disk, and the log is applied again
    // up to where it was.
    let deadline = Instant::now() + Duration::from_secs(10);
    let applied = |v: &Value| v["last_applied_index"].as_u64().unwrap_or(0);
    let addrs = |v: &Value| -> Vec<(Value, Value)> {
        v["brokers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["id"].clone(), b["kafka"].clone()))
            .collect()
    };
    loop {
        let after = c.status(0).unwrap();
        assert_eq!(addrs(&after), addrs(&before));
        if applied(&after) >= applied(&before) {
            break;
        }
        assert!(Instant::now() < deadline, "log not applied again: {after}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_missing_from_the_voters_needs_a_controller_listener_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "--node-id",
            "4",
            "--controller-quorum-voters",
            "1@127.0.0.1:1,2@127.0.0.1:2",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not list this node") && err.contains("--controller-listen"),
        "{err}"
    );
}

/// (leader, replicas, isr) of each partition of `topic`, as a client's
/// Metadata request to `bootstrap` sees them.
pub(crate) fn placement(bootstrap: &str, topic: &str) -> Vec<(i32, Vec<i32>, Vec<i32>)> {
    use rdkafka::consumer::Consumer;
    let c = consumer(bootstrap);
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let t = &md.topics()[0];
    let mut parts: Vec<_> = t
        .partitions()
        .iter()
        .map(|p| {
            let mut isr = p.isr().to_vec();
            isr.sort_unstable();
            (p.id(), p.leader(), p.replicas().to_vec(), isr)
        })
        .collect();
    parts.sort_by_key(|p| p.0);
    parts.into_iter().map(|(_, l, r, i)| (l, r, i)).collect()
}

/// Waits until `ok` holds for the placement of `topic`.
pub(crate) fn wait_placement(
    bootstrap: &str,
    topic: &str,
    within: Duration,
    ok: impl Fn(&[(i32, Vec<i32>, Vec<i32>)]) -> bool,
) -> Vec<(i32, Vec<i32>, Vec<i32>)> {
    let deadline = Instant::now() + within;
    loop {
        let p = placement(bootstrap, topic);
        if ok(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "placement of {topic} stayed {p:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Produces `n` keyed records per partition, numbered from `from`, with an
/// idempotent acks=all producer; returns the acknowledged (partition,
/// value) pairs.
pub(crate) async fn produce_numbered(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    partitions: i32,
    from: usize,
    n: usize,
) -> Vec<(i32, String)> {
    use rdkafka::producer::FutureRecord;
    let mut futures = Vec::new();
    for i in from..from + n {
        for part in 0..partitions {
            let value = format!("{part}-{i:06}");
            let f = p
                .send_result(
                    FutureRecord::to(topic)
                        .partition(part)
                        .key("k")
                        .payload(&value),
                )
                .ok();
            futures.push((part, value, f));
        }
    }
    let mut acked = Vec::new();
    for (part, value, f) in futures {
        if let Some(f) = f {
            if let Ok(Ok(_)) = f.await {
                acked.push((part, value));
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_topic_keeps_every_acknowledged_record_through_kill_9_of_a_leader() {
    let mut c = TestCluster::start(3);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bootstrap = c.bootstrap();
    let topic = "replicated";
    let admin = admin(&bootstrap);
    let t = rdkafka::admin::NewTopic::new(topic, 3, rdkafka::admin::TopicReplication::Fixed(3))
        .set("min.insync.replicas", "2");
    let res = admin
        .create_topics(
            [&t],
            &rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in res {
        r.unwrap();
    }
    // Every partition on all three brokers, all in sync, and the leaders
    // spread over the brokers.
    let before = wait_placement(&bootstrap, topic, Duration::from_secs(10), |p| {
        p.len() == 3
            && p.iter()
                .all(|(l, r, i)| *l > 0 && r.len() == 3 && i.len() == 3)
    });
    let mut leaders: Vec<i32> = before.iter().map(|(l, _, _)| *l).collect();
    leaders.sort_unstable();
    leaders.dedup();
    assert_eq!(leaders.len(), 3, "leaders not spread: {before:?}");

    let p = producer(&bootstrap, &[("message.timeout.ms", "60000")]);
    let mut acked = produce_numbered(&p, topic, 3, 0, 200).await;
    assert_eq!(acked.len(), 600);

    // kill -9 the leader of partition 0 while the producer goes on.
    let victim = before[0].0;
    let t0 = Instant::now();
    c.kill9(victim as usize - 1);
    let survivors = c.bootstrap_without(victim);
    let after = wait_placement(&survivors, topic, Duration::from_secs(15), |p| {
        p.iter()
            .all(|(l, _, i)| *l > 0 && *l != victim && !i.contains(&victim))
    });
    eprintln!(
        "leader {victim} killed: new leaders {:?} in {} ms",
        after.iter().map(|x| x.0).collect::<Vec<_>>(),
        t0.elapsed().as_millis()
    );
    acked.extend(produce_numbered(&p, topic, 3, 200, 200).await);
    assert_eq!(acked.len(), 1200, "every record is acknowledged in the end");

    // Every acknowledged record is there exactly once, in order per
    // partition.
    let got = read_all(&survivors, topic, 3, 1200, Duration::from_secs(30));
    for part in 0..3 {
        let want: Vec<&String> = acked
            .iter()
            .filter(|(p, _)| *p == part)
            .map(|(_, v)| v)
            .collect();
        let have: Vec<String> = got
            .iter()
            .filter(|r| r.0 == part)
            .map(|r| String::from_utf8(r.3.clone()).unwrap())
            .collect();
        assert_eq!(have.len(), want.len(), "partition {part}");
        for (h, w) in have.iter().zip(&want) {
            assert_eq!(h, *w, "partition {part}");
        }
    }

    // Back with its data dir, the node catches up and rejoins every ISR.
    c.start_node(victim as usize - 1);
    wait_placement(&bootstrap, topic, Duration::from_secs(30), |p| {
        p.iter().all(|(_, _, i)| i.len() == 3)
    });
    // Its copy holds what the others do: read from it alone once it leads
    // nothing is not possible, so compare end offsets through the leaders.
    let got_again = read_all(&bootstrap, topic, 3, 1200, Duration::from_secs(30));
    assert_eq!(got_again.len(), 1200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_takes_no_writes_when_it_wakes() {
    let c = TestCluster::start(3);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bootstrap = c.bootstrap();
    let topic = "paused";
    let admin = admin(&bootstrap);
    let t = rdkafka::admin::NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(3));
    for r in admin
        .create_topics([&t], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let before = wait_placement(&bootstrap, topic, Duration::from_secs(10), |p| {
        p.len() == 1 && p[0].0 > 0 && p[0].2.len() == 3
    });
    let paused = before[0].0;
    c.signal(paused as usize - 1, "-STOP");
    let others = c.bootstrap_without(paused);
    let after = wait_placement(&others, topic, Duration::from_secs(15), |p| {
        p[0].0 > 0 && p[0].0 != paused
    });
    c.signal(paused as usize - 1, "-CONT");
    // Awake, the old leader learns it was replaced: a produce sent to it
    // alone is refused, never taken as a stale leader.
    let old = format!("127.0.0.1:{}", c.ports[paused as usize - 1].0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = placement(&old, topic);
        if p[0].0 != paused && p == placement(&others, topic) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the woken node still says {p:?}; others say {after:?}; quorum: {:?}",
            (0..3).map(|i| c.status(i)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = producer(&bootstrap, &[]);
    let acked = produce_numbered(&p, topic, 1, 0, 50).await;
    assert_eq!(acked.len(), 50);
    let got = read_all(&bootstrap, topic, 1, 50, Duration::from_secs(20));
    assert_eq!(got.len(), 50);
}

/// Consumes `n` records of `topic` as a member of `group` and commits the
/// position after them; returns the offset of the first record it got.
fn consume_and_commit(bootstrap: &str, group: &str, topic: &str, n: usize) -> i64 {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::message::Message;
    let c: BaseConsumer = client_config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut offsets = Vec::new();
    while offsets.len() < n {
        assert!(
            Instant::now() < deadline,
            "{group} got {} of {n} records",
            offsets.len()
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            offsets.push(m.offset());
        }
    }
    let next = offsets[n - 1] + 1;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(next))
        .unwrap();
    // The coordinator may be moving: a commit is retried until it lands.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.commit(&tpl, CommitMode::Sync) {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "commit failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    offsets[0]
}

/// The broker that coordinates `group`: the leader of its partition of
/// `__consumer_offsets`, once every replica of that partition is in sync.
pub(crate) fn coordinator_of(bootstrap: &str, group: &str, within: Duration) -> i32 {
    let p = wait_placement(bootstrap, "__consumer_offsets", within, |p| {
        !p.is_empty()
            && p.iter()
                .all(|(l, r, i)| *l > 0 && r.len() == 3 && i.len() == 3)
    });
    let at = weir::group::journal::partition_for(group, p.len());
    p[at as usize].0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_from_its_committed_offsets_after_its_coordinator_is_killed() {
    let mut c = TestCluster::start(3);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bootstrap = c.bootstrap();
    let topic = "resumed";
    let t = rdkafka::admin::NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(3));
    for r in admin(&bootstrap)
        .create_topics([&t], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    wait_placement(&bootstrap, topic, Duration::from_secs(10), |p| {
        p.len() == 1 && p[0].0 > 0 && p[0].2.len() == 3
    });
    let p = producer(&bootstrap, &[]);
    assert_eq!(produce_numbered(&p, topic, 1, 0, 100).await.len(), 100);
    let group = "resumers";

    // The first member commits 40; the offsets topic is made on its way.
    let first = tokio::task::block_in_place(|| consume_and_commit(&bootstrap, group, topic, 40));
    assert_eq!(first, 0);
    let coordinator = coordinator_of(&bootstrap, group, Duration::from_secs(20));

    // kill -9 the coordinator: another broker leads the group's partition
    // of __consumer_offsets, and the next member starts where the first
    // one committed.
    c.kill9(coordinator as usize - 1);
    let survivors = c.bootstrap_without(coordinator);
    let second = tokio::task::block_in_place(|| consume_and_commit(&survivors, group, topic, 30));
    assert_eq!(second, 40, "the group resumes from its committed offset");

    // The killed broker comes back and catches up; then the second
    // coordinator is killed too. Whoever leads next, the restarted broker
    // included, knows the latest commit, not the one it had before.
    c.start_node(coordinator as usize - 1);
    let next = coordinator_of(&bootstrap, group, Duration::from_secs(30));
    c.kill9(next as usize - 1);
    let others = c.bootstrap_without(next);
    let third = tokio::task::block_in_place(|| consume_and_commit(&others, group, topic, 10));
    assert_eq!(third, 70, "the group resumes from its latest commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_retry_moves_with_leadership_and_is_delivered_once_after_its_backoff() {
    use crate::retry::{hand_back, next, reader, Got};
    let mut c = TestCluster::start(3);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bootstrap = c.bootstrap();
    let t = rdkafka::admin::NewTopic::new("jobs", 1, rdkafka::admin::TopicReplication::Fixed(3));
    let admin = admin(&bootstrap);
    let opts = rdkafka::admin::AdminOptions::new();
    for r in admin.create_topics([&t], &opts).await.unwrap() {
        r.unwrap();
    }
    // Retries turned on later, through the quorum: the retry and
    // dead-letter topics are the cluster's, replicated like their base.
    let cfg = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic("jobs"))
        .set("retry.max.attempts", "3")
        .set("retry.backoff.ms", "8000");
    for r in admin.alter_configs([&cfg], &opts).await.unwrap() {
        r.unwrap();
    }
    for name in ["jobs.retry", "jobs.dlq"] {
        wait_placement(&bootstrap, name, Duration::from_secs(10), |p| {
            p.len() == 1 && p[0].0 > 0 && p[0].2.len() == 3 && p[0].1.len() == 3
        });
    }
    // The first hand-back makes `__retry`; the producer retries until it
    // is there.
    let p = producer(&bootstrap, &[]);
    let failed = Got {
        key: b"k".to_vec(),
        value: b"job 1".to_vec(),
        headers: vec![("trace".into(), b"t1".to_vec())],
    };
    let handed = Instant::now();
    hand_back(&p, "jobs.retry", &failed).await;

    // kill -9 the leader of the `__retry` partition that journals it, and
    // keep it down: the partition's new leader delivers the record when it
    // falls due, once.
    let journal = wait_placement(&bootstrap, "__retry", Duration::from_secs(10), |p| {
        !p.is_empty() && p.iter().all(|(l, _, i)| *l > 0 && i.len() == 3)
    });
    let q = weir::retry::journal::partition_for("jobs.retry", 0, journal.len());
    let holder = journal[q as usize].0;
    c.kill9(holder as usize - 1);
    let others = c.bootstrap_without(holder);
    let retries = reader(&others, "jobs.retry", 1);
    let got = tokio::task::block_in_place(|| next(&retries, Duration::from_secs(40)))
        .expect("the held retry is delivered");
    let waited = handed.elapsed();
    assert!(
        waited >= Duration::from_millis(8000),
        "delivered after {waited:?}, before its backoff"
    );
    assert_eq!(got.header("retry.attempt").as_deref(), Some("1"));
    assert_eq!(got.header("trace").as_deref(), Some("t1"));
    assert_eq!(got.value, b"job 1");
    // The old holder comes back as a follower: nothing is delivered twice.
    c.start_node(holder as usize - 1);
    let again = tokio::task::block_in_place(|| next(&retries, Duration::from_secs(5)));
    assert!(again.is_none(), "delivered twice: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_every_replicas_log_start_and_a_follower_left_behind_starts_again_there(
) {
    use rdkafka::consumer::Consumer;
    let mut c = TestCluster::start(3);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bootstrap = c.bootstrap();
    let t = rdkafka::admin::NewTopic::new("trimmed", 1, rdkafka::admin::TopicReplication::Fixed(3));
    let admin = admin(&bootstrap);
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics([&t], &opts).await.unwrap() {
        r.unwrap();
    }
    let before = wait_placement(&bootstrap, "trimmed", Duration::from_secs(10), |p| {
        p.len() == 1 && p[0].0 > 0 && p[0].2.len() == 3
    });
    let leader = before[0].0;
    let p = producer(&bootstrap, &[]);
    assert_eq!(produce_numbered(&p, "trimmed", 1, 0, 100).await.len(), 100);
    // A follower goes down; the others go on and delete past its end.
    let behind = before[0].1.iter().copied().find(|r| *r != leader).unwrap();
    c.kill9(behind as usize - 1);
    assert_eq!(
        produce_numbered(&p, "trimmed", 1, 100, 100).await.len(),
        100
    );
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("trimmed", 0, rdkafka::Offset::Offset(150))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = admin.delete_records(&tpl, &opts).await {
        assert!(Instant::now() < deadline, "DeleteRecords: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Back, it starts its log again at the leader's log start and rejoins
    // the ISR.
    c.start_node(behind as usize - 1);
    wait_placement(&bootstrap, "trimmed", Duration::from_secs(30), |p| {
        p[0].2.len() == 3
    });
    // The leader dies: whoever leads now starts at 150 too.
    c.kill9(leader as usize - 1);
    let others = c.bootstrap_without(leader);
    wait_placement(&others, "trimmed", Duration::from_secs(15), |p| {
        p[0].0 > 0 && p[0].0 != leader
    });
    let consumer = consumer(&others);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match consumer.fetch_watermarks("trimmed", 0, Duration::from_secs(5)) {
            Ok((150, 200)) => break,
            other => {
                assert!(Instant::now() < deadline, "watermarks: {other:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let got = read_all(&others, "trimmed", 1, 50, Duration::from_secs(20));
    assert_eq!(got.len(), 50);
    assert_eq!(got[0].3, b"0-000150");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_gets_its_preferred_leaderships_back() {
    let mut c = TestCluster::start_with(3, &["--leader-imbalance-check-interval-ms", "1000"]);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bootstrap = c.bootstrap();
    let t =
        rdkafka::admin::NewTopic::new("preferred", 3, rdkafka::admin::TopicReplication::Fixed(3));
    for r in admin(&bootstrap)
        .create_topics([&t], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let on_preferred = |p: &[(i32, Vec<i32>, Vec<i32>)]| {
        p.len() == 3
            && p.iter()
                .all(|(l, r, i)| r.first() == Some(l) && i.len() == 3)
    };
    let before = wait_placement(
        &bootstrap,
        "preferred",
        Duration::from_secs(10),
        on_preferred,
    );
    let victim = before[1].0;
    c.kill9(victim as usize - 1);
    let others = c.bootstrap_without(victim);
    wait_placement(&others, "preferred", Duration::from_secs(15), |p| {
        p.iter().all(|(l, _, _)| *l > 0 && *l != victim)
    });
    // Back, caught up and in sync, it leads what it led before.
    c.start_node(victim as usize - 1);
    let after = wait_placement(
        &bootstrap,
        "preferred",
        Duration::from_secs(30),
        on_preferred,
    );
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_given_the_addresses_of_the_listener_it_came_in_on() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c = TestCluster::start_with(
        3,
        &[
            "--listen",
            "PLAINTEXT://127.0.0.1:{kafka},PLAINTEXT://127.0.0.1:{kafka2}",
            "--advertised-listener",
            "PLAINTEXT://127.0.0.1:{kafka},PLAINTEXT://localhost:{kafka2}",
        ],
    );
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let brokers = |bootstrap: &str| -> Vec<(i32, String, u16)> {
        let consumer: BaseConsumer = client_config(bootstrap).create().unwrap();
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        let mut b: Vec<_> = md
            .brokers()
            .iter()
            .map(|b| (b.id(), b.host().to_string(), b.port() as u16))
            .collect();
        b.sort();
        b
    };
    let first: Vec<_> = (0..3)
        .map(|i| (i as i32 + 1, "127.0.0.1".to_string(), c.ports[i].0))
        .collect();
    let second: Vec<_> = (0..3)
        .map(|i| (i as i32 + 1, "localhost".to_string(), c.second_ports[i]))
        .collect();
    assert_eq!(brokers(&format!("127.0.0.1:{}", c.ports[2].0)), first);
    assert_eq!(brokers(&format!("127.0.0.1:{}", c.second_ports[2])), second);
    // A topic's records go through the second listener's addresses.
    let bootstrap = format!("localhost:{}", c.second_ports[0]);
    let t = rdkafka::admin::NewTopic::new(
        "through-second",
        3,
        rdkafka::admin::TopicReplication::Fixed(3),
    );
    for r in admin(&bootstrap)
        .create_topics([&t], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let p: rdkafka::producer::FutureProducer = client_config(&bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    let acked = produce_numbered(&p, "through-second", 3, 0, 10).await;
    assert_eq!(acked.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_not_a_voter_joins_with_the_voter_list_and_holds_replicas() {
    let c = TestCluster::start(3);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let (kafka, http, ctl) = (free_port(), free_port(), free_port());
    let ctl = format!("127.0.0.1:{ctl}");
    let args = [
        "--node-id",
        "4",
        "--controller-quorum-voters",
        c.voters(),
        "--controller-listen",
        &ctl,
    ];
    let mut fourth = ChildBroker::start_on(dir.path(), kafka, http, &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let four =
            |v: Option<Value>| v.is_some_and(|v| v["brokers"].as_array().map(Vec::len) == Some(4));
        if four(c.status(0)) && four(status_at(http)) {
            break;
        }
        assert!(Instant::now() < deadline, "broker 4 never registered");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status_at(http).unwrap()["role"], "learner");
    assert_eq!(c.status(0).unwrap()["voters"].as_object().unwrap().len(), 3);

    // A topic over all four brokers: broker 4 leads and follows like the
    // others, and its partitions fail over when it dies.
    let bootstrap = format!("{},127.0.0.1:{kafka}", c.bootstrap());
    let t = rdkafka::admin::NewTopic::new("wide", 4, rdkafka::admin::TopicReplication::Fixed(4))
        .set("min.insync.replicas", "2");
    for r in admin(&bootstrap)
        .create_topics([&t], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let placed = wait_placement(&bootstrap, "wide", Duration::from_secs(15), |p| {
        p.iter().all(|(l, _, isr)| *l > 0 && isr.len() == 4)
    });
    assert!(placed.iter().any(|(l, _, _)| *l == 4), "{placed:?}");
    let p: rdkafka::producer::FutureProducer = client_config(&bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    assert_eq!(produce_numbered(&p, "wide", 4, 0, 25).await.len(), 100);
    fourth.kill9();
    wait_placement(&c.bootstrap(), "wide", Duration::from_secs(15), |p| {
        p.iter()
            .all(|(l, _, isr)| *l > 0 && *l != 4 && !isr.contains(&4))
    });
    assert_eq!(produce_numbered(&p, "wide", 4, 25, 25).await.len(), 100);
    // Back on its data dir: it follows the quorum again without asking,
    // catches up and rejoins every ISR.
    let _fourth = ChildBroker::start_on(dir.path(), kafka, http, &args);
    wait_placement(&c.bootstrap(), "wide", Duration::from_secs(30), |p| {
        p.iter().all(|(_, _, isr)| isr.len() == 4)
    });
    let read = read_all(&bootstrap, "wide", 4, 200, Duration::from_secs(20));
    assert_eq!(read.len(), 200);
}
