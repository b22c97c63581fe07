//! Consumer groups with librdkafka: partitions split across members, leaving
//! and crashing members, committed offsets (also across a broker kill -9),
//! cooperative-sticky assignment, static membership, and the admin view.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::common::*;

pub(crate) fn group_consumer(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = client_config(bootstrap);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("max.poll.interval.ms", "20000")
        .set("topic.metadata.refresh.interval.ms", "1000");
    // The consumer protocol's session and heartbeat are the broker's.
    if !extra.contains(&("group.protocol", "consumer")) {
        c.set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
    }
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().unwrap()
}

/// A group member polling in its own thread.
pub(crate) struct Member {
    stop: Arc<AtomicBool>,
    assigned: Arc<Mutex<BTreeSet<i32>>>,
    handle: Option<JoinHandle<()>>,
}

pub(crate) type Seen = Arc<Mutex<Vec<(usize, i32, i64)>>>;

impl Member {
    pub(crate) fn start(
        id: usize,
        bootstrap: &str,
        group: &str,
        topic: &str,
        extra: &[(&str, &str)],
        seen: Seen,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let assigned = Arc::new(Mutex::new(BTreeSet::new()));
        let c = group_consumer(bootstrap, group, extra);
        c.subscribe(&[topic]).unwrap();
        let (s, a) = (Arc::clone(&stop), Arc::clone(&assigned));
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    seen.lock().unwrap().push((id, m.partition(), m.offset()));
                    let _ = c.commit_message(&m, CommitMode::Async);
                }
                if let Ok(tpl) = c.assignment() {
                    *a.lock().unwrap() = tpl.elements().iter().map(|e| e.partition()).collect();
                }
            }
            drop(c);
        });
        Self {
            stop,
            assigned,
            handle: Some(handle),
        }
    }

    pub(crate) fn assigned(&self) -> BTreeSet<i32> {
        self.assigned.lock().unwrap().clone()
    }

    pub(crate) fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Members split the partitions with no overlap and no gap.
pub(crate) fn split_evenly(members: &[&Member], partitions: i32) -> bool {
    let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assigned()).collect();
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    total == partitions as usize
        && union.len() == partitions as usize
        && sets.iter().all(|s| !s.is_empty())
}

pub(crate) async fn produce_n(bootstrap: &str, topic: &str, n: usize) {
    let p = producer(bootstrap, &[]);
    let mut futs = Vec::new();
    for i in 0..n {
        let k = format!("k{i}");
        futs.push(
            p.send_result(FutureRecord::to(topic).key(&k).payload(&k))
                .ok()
                .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
}

async fn split_among(members_n: usize, extra: &'static [(&'static str, &'static str)]) {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    let topic = format!("split{members_n}");
    create_topic(&bs, &topic, 6, &[]).await;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let members: Vec<Member> = (0..members_n)
        .map(|i| Member::start(i, &bs, "g", &topic, extra, Arc::clone(&seen)))
        .collect();
    let refs: Vec<&Member> = members.iter().collect();
    let r2 = refs.clone();
    tokio::task::block_in_place(|| {
        wait_for("an even split", Duration::from_secs(30), || {
            split_evenly(&r2, 6)
        })
    });
    produce_n(&bs, &topic, 600).await;
    tokio::task::block_in_place(|| {
        wait_for("all records", Duration::from_secs(30), || {
            seen.lock().unwrap().len() >= 600
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let seen = seen.lock().unwrap().clone();
    let unique: HashSet<(i32, i64)> = seen.iter().map(|(_, p, o)| (*p, *o)).collect();
    assert_eq!(seen.len(), 600, "no record consumed twice");
    assert_eq!(unique.len(), 600);
    for (id, p, _) in &seen {
        assert!(
            refs[*id].assigned().contains(p),
            "member {id} read only its own partitions"
        );
    }
    for m in members {
        m.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_split_six_partitions() {
    split_among(2, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consumers_split_six_partitions() {
    split_among(3, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_assignment_splits_the_partitions() {
    split_among(
        2,
        &[("partition.assignment.strategy", "cooperative-sticky")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_member_hands_its_partitions_to_the_others() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "leave", 6, &[]).await;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let a = Member::start(0, &bs, "g", "leave", &[], Arc::clone(&seen));
    let c = Member::start(1, &bs, "g", "leave", &[], Arc::clone(&seen));
    tokio::task::block_in_place(|| {
        wait_for("an even split", Duration::from_secs(30), || {
            split_evenly(&[&a, &c], 6)
        })
    });
    let started = Instant::now();
    c.close();
    tokio::task::block_in_place(|| {
        wait_for("a takes over", Duration::from_secs(20), || {
            a.assigned().len() == 6
        })
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a leave rebalances at once"
    );
    a.close();
}

/// Not a test on its own: the consumer that [`spawn_child_consumer`] runs
/// as a child process for a test to kill with SIGKILL. It joins the group
/// named as its topic, with the group protocol given.
#[test]
#[ignore]
fn child_group_consumer() {
    let Ok(bs) = std::env::var("WEIR_TEST_CHILD_BOOTSTRAP") else {
        return;
    };
    let topic = std::env::var("WEIR_TEST_CHILD_TOPIC").unwrap_or_else(|_| "killed".into());
    let protocol = std::env::var("WEIR_TEST_CHILD_PROTOCOL").unwrap_or_else(|_| "classic".into());
    let c = group_consumer(&bs, &topic, &[("group.protocol", protocol.as_str())]);
    c.subscribe(&[topic.as_str()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let _ = c.poll(Duration::from_millis(100));
    }
}

/// A member of group `topic` (reading topic `topic`) in a child process.
pub(crate) fn spawn_child_consumer(bootstrap: &str, topic: &str, protocol: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "groups::child_group_consumer",
            "--nocapture",
        ])
        .env("WEIR_TEST_CHILD_BOOTSTRAP", bootstrap)
        .env("WEIR_TEST_CHILD_TOPIC", topic)
        .env("WEIR_TEST_CHILD_PROTOCOL", protocol)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_loses_its_partitions_after_the_session_timeout() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "killed", 6, &[]).await;
    let mut child = spawn_child_consumer(&bs, "killed", "classic");
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let a = Member::start(0, &bs, "killed", "killed", &[], seen);
    let broker = Arc::clone(b.broker());
    tokio::task::block_in_place(|| {
        wait_for("the child to hold half", Duration::from_secs(30), || {
            a.assigned().len() == 3
                && broker
                    .groups
                    .describe("killed")
                    .is_some_and(|g| g.members.len() == 2)
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| {
        wait_for("a takes over", Duration::from_secs(30), || {
            a.assigned().len() == 6
        })
    });
    let took = killed_at.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "the session timeout is honoured ({took:?})"
    );
    assert!(
        took < Duration::from_secs(20),
        "taken over within the session timeout and a rebalance ({took:?})"
    );
    a.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_consumer_resumes_at_the_committed_offset() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "resume", 1, &[]).await;
    produce_n(&bs, "resume", 200).await;
    let bs2 = bs.clone();
    tokio::task::spawn_blocking(move || {
        let c = group_consumer(&bs2, "resumers", &[]);
        c.subscribe(&["resume"]).unwrap();
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while n < 100 && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                assert_eq!(m.offset(), n);
                n += 1;
            }
        }
        assert_eq!(n, 100);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("resume", 0, Offset::Offset(100))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
        // (librdkafka's consumer close hangs in rust-rdkafka after
        // `committed()` on a subscribed consumer; the commit is checked below
        // from a separate client instead.)
        drop(c);
        let check: BaseConsumer = client_config(&bs2)
            .set("group.id", "resumers")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("resume", 0);
        let committed = check
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            committed.find_partition("resume", 0).unwrap().offset(),
            Offset::Offset(100)
        );
        drop(check);

        let c = group_consumer(&bs2, "resumers", &[]);
        c.subscribe(&["resume"]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = loop {
            assert!(Instant::now() < deadline, "no record after resuming");
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                break m.offset();
            }
        };
        assert_eq!(first, 100, "resumes at exactly the committed offset");

        // The admin view lists and describes the group.
        let list = c
            .fetch_group_list(Some("resumers"), Duration::from_secs(10))
            .unwrap();
        let g = &list.groups()[0];
        assert_eq!(g.name(), "resumers");
        assert_eq!(g.state(), "Stable");
        assert_eq!(g.protocol_type(), "consumer");
        assert_eq!(g.members().len(), 1);
    })
    .await
    .unwrap();
    // Lag shows in the broker's view: 200 produced, 100 committed.
    let lag = b.broker().group_lag();
    let l = lag.iter().find(|l| l.group == "resumers").unwrap();
    assert_eq!((l.committed, l.high_watermark, l.lag), (100, 200, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_broker_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ChildBroker::start(dir.path(), &["--group-initial-rebalance-delay-ms", "100"]);
    let bs = broker.bootstrap();
    create_topic(&bs, "durable", 3, &[]).await;
    produce_n(&bs, "durable", 30).await;
    let bs2 = bs.clone();
    tokio::task::spawn_blocking(move || {
        let c = group_consumer(&bs2, "keepers", &[]);
        let mut tpl = TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition_offset("durable", p, Offset::Offset(i64::from(p) + 5))
                .unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
    broker.kill9();
    drop(broker);
    let broker = ChildBroker::start(dir.path(), &[]);
    let bs = broker.bootstrap();
    tokio::task::spawn_blocking(move || {
        let c = group_consumer(&bs, "keepers", &[]);
        let mut tpl = TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition("durable", p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        let offsets: HashMap<i32, Offset> = got
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        for p in 0..3 {
            assert_eq!(offsets[&p], Offset::Offset(i64::from(p) + 5));
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restart_causes_no_rebalance() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "static", 4, &[]).await;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let extra: &[(&str, &str)] = &[("group.instance.id", "instance-1")];
    let m = Member::start(0, &bs, "statics", "static", extra, Arc::clone(&seen));
    tokio::task::block_in_place(|| {
        wait_for("assignment", Duration::from_secs(30), || {
            m.assigned().len() == 4
        })
    });
    let broker = Arc::clone(b.broker());
    tokio::task::block_in_place(|| {
        wait_for("stable", Duration::from_secs(10), || {
            broker
                .groups
                .describe("statics")
                .is_some_and(|g| g.state == weir::group::State::Stable)
        })
    });
    let before = broker.groups.describe("statics").unwrap().generation;
    m.close();
    let m = Member::start(0, &bs, "statics", "static", extra, seen);
    tokio::task::block_in_place(|| {
        wait_for("assignment again", Duration::from_secs(30), || {
            m.assigned().len() == 4
        })
    });
    let after = broker.groups.describe("statics").unwrap();
    assert_eq!(
        after.generation, before,
        "the restart did not start a new generation"
    );
    assert_eq!(after.members.len(), 1);
    m.close();
}
