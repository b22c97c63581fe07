//! How long a consumer group takes to rebalance, with librdkafka clients
//! against an in-process broker.
//!
//! Measures, over several rounds: the time for a third member joining a
//! stable two-member group until all three hold partitions, and the time for
//! the group to settle after one member leaves. Run with `cargo bench --bench
//! rebalance`; figures are printed, and recorded in docs/performance.md.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

const ROUNDS: usize = 5;

struct Member {
    stop: Arc<AtomicBool>,
    assigned: Arc<Mutex<BTreeSet<i32>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(bootstrap: &str, group: &str, topic: &str, heartbeat_ms: &str) -> Self {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", heartbeat_ms)
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()
            .expect("consumer");
        c.subscribe(&[topic]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let assigned = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, a) = (Arc::clone(&stop), Arc::clone(&assigned));
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(20));
                if let Ok(tpl) = c.assignment() {
                    if let Ok(mut g) = a.lock() {
                        *g = tpl.elements().iter().map(|e| e.partition()).collect();
                    }
                }
            }
        });
        Self {
            stop,
            assigned,
            handle: Some(handle),
        }
    }

    fn count(&self) -> usize {
        self.assigned.lock().map(|g| g.len()).unwrap_or(0)
    }

    fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn wait(members: &[&Member], each: usize) -> Duration {
    let start = Instant::now();
    while !members.iter().all(|m| m.count() == each) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "group did not settle"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

fn percentile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = weir::config::Config::for_tests(dir.path().join("data"));
    config.args.log_level = "warn".into();
    let running = rt.block_on(weir::start(config)).expect("broker");
    let bs = running.kafka_addr.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .create()
        .expect("admin");
    rt.block_on(admin.create_topics(
        [&NewTopic::new("rebalance", 6, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .expect("create topic");

    for heartbeat in ["500", "3000"] {
        let mut joins = Vec::new();
        let mut leaves = Vec::new();
        for round in 0..ROUNDS {
            let group = format!("g-{heartbeat}-{round}");
            let a = Member::start(&bs, &group, "rebalance", heartbeat);
            let b = Member::start(&bs, &group, "rebalance", heartbeat);
            wait(&[&a, &b], 3);
            let c = Member::start(&bs, &group, "rebalance", heartbeat);
            joins.push(wait(&[&a, &b, &c], 2));
            c.close();
            leaves.push(wait(&[&a, &b], 3));
            a.close();
            b.close();
        }
        let jm = percentile(&mut joins, 0.5);
        let jx = percentile(&mut joins, 1.0);
        let lm = percentile(&mut leaves, 0.5);
        let lx = percentile(&mut leaves, 1.0);
        println!(
            "heartbeat.interval.ms={heartbeat}: third member joins -> 3 members assigned: median {jm:?}, max {jx:?}; \
             one member leaves -> 2 members assigned: median {lm:?}, max {lx:?} ({ROUNDS} rounds, 6 partitions)"
        );
    }
    rt.block_on(running.shutdown());
}
