//! Three broker processes forming the metadata quorum on loopback ports,
//! each with its own data dir; the test kills -9, restarts and pauses
//! (SIGSTOP) them and reads each node's view from `/api/status`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// Three voters on free ports.
struct TestCluster {
    dirs: Vec<tempfile::TempDir>,
    ports: Vec<(u16, u16, u16)>,
    voters: String,
    nodes: Vec<Option<ChildBroker>>,
}

impl TestCluster {
    fn start(n: usize) -> Self {
        let ports: Vec<_> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, _, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Self {
            dirs: (0..n).map(|_| tempfile::tempdir().unwrap()).collect(),
            ports,
            voters,
            nodes: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            c.start_node(i);
        }
        c
    }

    fn start_node(&mut self, i: usize) {
        let (kafka, http, _) = self.ports[i];
        let id = (i + 1).to_string();
        let voters = self.voters.clone();
        self.nodes[i] = Some(ChildBroker::start_on(
            self.dirs[i].path(),
            kafka,
            http,
            &["--node-id", &id, "--controller-quorum-voters", &voters],
        ));
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            n.kill9();
        }
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.nodes[i].as_ref().unwrap().child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Node `i`'s `cluster` status, or `None` if it does not answer quickly.
    fn status(&self, i: usize) -> Option<Value> {
        let addr = format!("127.0.0.1:{}", self.ports[i].1);
        let mut s =
            TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
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

    /// Waits until every node in `among` names the same controller (one of
    /// `among`, other than `not`) and knows all brokers; returns the
    /// controller's id and term.
    fn agreed(&self, among: &[usize], not: Option<u64>, within: Duration) -> (u64, u64) {
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
    // Registrations come back from the disk: the brokers do not register
    // again (at most a new leader's blank entry is added).
    let deadline = Instant::now() + Duration::from_secs(10);
    let applied = |v: &Value| v["last_applied_index"].as_u64().unwrap_or(0);
    loop {
        let after = c.status(0).unwrap();
        assert_eq!(after["brokers"], before["brokers"]);
        if applied(&after) >= applied(&before) {
            assert!(
                applied(&after) <= applied(&before) + 2,
                "{before} -> {after}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "log not applied again: {after}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_missing_from_the_voters_does_not_start() {
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
    assert!(err.contains("does not list this node"), "{err}");
}
