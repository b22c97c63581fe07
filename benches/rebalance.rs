//! How long a consumer group takes to rebalance, with librdkafka clients
//! against an in-process broker: the classic protocol (eager and
//! cooperative-sticky) beside the consumer protocol of KIP-848, in one run.
//!
//! Measures, over several rounds: the time from a third member joining a
//! stable two-member group until all three hold their final partitions;
//! how long the two members already there stop consuming partitions they
//! keep meanwhile (with the eager protocol they give everything up); and
//! the time for the group to settle after one member leaves. Run with
//! `cargo bench --bench rebalance`; figures are printed, and recorded in
//! docs/performance.md.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

const ROUNDS: usize = 5;

/// How a member takes part in its group.
#[derive(Clone, Copy)]
enum Mode {
    /// The classic protocol with this heartbeat interval and assignor.
    Classic(&'static str, &'static str),
    /// KIP-848: the broker's heartbeat interval and assignor.
    Consumer,
}

/// A member's assignment each time it changed.
type History = Arc<Mutex<Vec<(Instant, BTreeSet<i32>)>>>;

struct Member {
    stop: Arc<AtomicBool>,
    history: History,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(bootstrap: &str, group: &str, topic: &str, mode: Mode) -> Self {
        let mut conf = ClientConfig::new();
        conf.set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("log_level", "3");
        match mode {
            Mode::Classic(heartbeat, assignor) => {
                conf.set("session.timeout.ms", "6000")
                    .set("heartbeat.interval.ms", heartbeat)
                    .set("partition.assignment.strategy", assignor);
            }
            Mode::Consumer => {
                conf.set("group.protocol", "consumer");
            }
        }
        let c: BaseConsumer = conf.create().expect("consumer");
        c.subscribe(&[topic]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let history: History = Arc::new(Mutex::new(vec![(Instant::now(), BTreeSet::new())]));
        let (s, h) = (Arc::clone(&stop), Arc::clone(&history));
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(5));
                if let Ok(tpl) = c.assignment() {
                    let now: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                    if let Ok(mut g) = h.lock() {
                        if g.last().is_none_or(|(_, last)| *last != now) {
                            g.push((Instant::now(), now));
                        }
                    }
                }
            }
        });
        Self {
            stop,
            history,
            handle: Some(handle),
        }
    }

    fn assigned(&self) -> BTreeSet<i32> {
        self.history
            .lock()
            .ok()
            .and_then(|g| g.last().map(|(_, s)| s.clone()))
            .unwrap_or_default()
    }

    /// How long, between `from` and `to`, the member did not hold all of
    /// `kept`.
    fn stopped(&self, kept: &BTreeSet<i32>, from: Instant, to: Instant) -> Duration {
        let Ok(h) = self.history.lock() else {
            return Duration::ZERO;
        };
        let mut total = Duration::ZERO;
        for (i, (at, set)) in h.iter().enumerate() {
            let end = h.get(i + 1).map_or(to, |(next, _)| *next).min(to);
            let begin = (*at).max(from);
            if end > begin && !kept.is_subset(set) {
                total += end - begin;
            }
        }
        total
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
    loop {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assigned()).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        if sets.iter().all(|s| s.len() == each) && union.len() == each * members.len() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "group did not settle"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
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
    // The consumer protocol's members heartbeat every 500 ms, as the
    // classic members of the first row.
    config.args.group_consumer_heartbeat_interval_ms = 500;
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

    let modes = [
        (
            "classic, eager (range), heartbeat 500 ms",
            Mode::Classic("500", "range"),
        ),
        (
            "classic, eager (range), heartbeat 3000 ms",
            Mode::Classic("3000", "range"),
        ),
        (
            "classic, cooperative-sticky, heartbeat 500 ms",
            Mode::Classic("500", "cooperative-sticky"),
        ),
        (
            "consumer protocol (KIP-848), heartbeat 500 ms",
            Mode::Consumer,
        ),
    ];
    for (i, (name, mode)) in modes.into_iter().enumerate() {
        let mut joins = Vec::new();
        let mut stops = Vec::new();
        let mut leaves = Vec::new();
        for round in 0..ROUNDS {
            let group = format!("g-{i}-{round}");
            let a = Member::start(&bs, &group, "rebalance", mode);
            let b = Member::start(&bs, &group, "rebalance", mode);
            wait(&[&a, &b], 3);
            let (before_a, before_b) = (a.assigned(), b.assigned());
            let joined = Instant::now();
            let c = Member::start(&bs, &group, "rebalance", mode);
            joins.push(wait(&[&a, &b, &c], 2));
            let settled = Instant::now();
            let kept_a: BTreeSet<i32> = a.assigned().intersection(&before_a).copied().collect();
            let kept_b: BTreeSet<i32> = b.assigned().intersection(&before_b).copied().collect();
            stops.push(
                a.stopped(&kept_a, joined, settled)
                    .max(b.stopped(&kept_b, joined, settled)),
            );
            c.close();
            leaves.push(wait(&[&a, &b], 3));
            a.close();
            b.close();
        }
        let jm = percentile(&mut joins, 0.5);
        let jx = percentile(&mut joins, 1.0);
        let sm = percentile(&mut stops, 0.5);
        let sx = percentile(&mut stops, 1.0);
        let lm = percentile(&mut leaves, 0.5);
        let lx = percentile(&mut leaves, 1.0);
        println!(
            "{name}: third member joins -> final assignment: median {jm:?}, max {jx:?}; \
             existing members stop consuming partitions they keep: median {sm:?}, max {sx:?}; \
             one member leaves -> 2 members assigned: median {lm:?}, max {lx:?} ({ROUNDS} rounds, 6 partitions)"
        );
    }
    rt.block_on(running.shutdown());
}
