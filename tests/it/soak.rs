//! The soak run: producers, two consumer groups, retries and dead letters,
//! admin calls and broker restarts (SIGTERM and kill -9, alternating) for a
//! bounded time, then a check that every acknowledged record was processed
//! exactly once by each group (redeliveries after restarts are counted and
//! skipped by offset, as an idempotent consumer does) and that every handed
//! back record came back at least once.
//!
//! Ignored by default. Run it with
//! `WEIR_SOAK_SECS=1800 cargo test --release --test it -- --ignored soak --nocapture`
//! (CI runs a short one). Settings: `WEIR_SOAK_SECS` (default 120),
//! `WEIR_SOAK_RESTART_SECS` (default 30), `WEIR_SOAK_RATE` records/s
//! (default 2000), `WEIR_SOAK_REPORT` (a path for the JSON report).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::common::*;

const TOPIC: &str = "soak";
const PARTITIONS: i32 = 4;
/// Group "a" fails records whose sequence is a multiple of this (hands them
/// back to the retry topic)...
const FAIL_EVERY: u64 = 97;
/// ...and fails those again on every retry when a multiple of this, so they
/// end in the DLQ.
const DEAD_EVERY: u64 = 194;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory: all of it, and the anonymous part (the heap; the rest
/// is pages of mapped segment files, which the kernel can drop).
fn rss_kib(pid: u32) -> (u64, u64) {
    (status_kib(pid, "VmRSS:"), status_kib(pid, "RssAnon:"))
}

/// Open descriptors of the broker, without pipes: a child process inherits
/// the pipes of the test process's librdkafka clients.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| !l.to_string_lossy().starts_with("pipe:"))
            })
            .count()
    })
}

/// What one consumer group saw.
#[derive(Default)]
struct GroupLog {
    /// (topic, partition) → next offset the application has not processed.
    watermark: HashMap<(String, i32), i64>,
    /// (partition, offset) of records of the main topic processed once.
    processed: HashSet<(i32, i64)>,
    /// Deliveries skipped because they were already processed.
    redelivered: u64,
    /// Sequences seen on the other topics (the retry topic, the DLQ).
    retried: HashSet<u64>,
}

impl GroupLog {
    /// Whether this delivery is new (and records it as processed).
    fn first_time(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        let w = self
            .watermark
            .entry((topic.to_string(), partition))
            .or_insert(0);
        if offset < *w {
            self.redelivered += 1;
            return false;
        }
        *w = offset + 1;
        true
    }
}

fn seq_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<u64> {
    std::str::from_utf8(m.payload()?).ok()?.parse().ok()
}

fn attempt_of(m: &rdkafka::message::BorrowedMessage<'_>) -> u32 {
    m.headers()
        .and_then(|h| {
            h.iter()
                .find(|x| x.key == "retry.attempt")
                .and_then(|x| std::str::from_utf8(x.value?).ok()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A group member: processes, fails some records back to the retry topic
/// (when `fails`), commits every second.
#[allow(clippy::too_many_arguments)]
fn run_group(
    bs: String,
    group: &'static str,
    topics: &'static [&'static str],
    fails: bool,
    log: Arc<Mutex<GroupLog>>,
    stop: Arc<AtomicBool>,
    handback_errors: Arc<AtomicU64>,
) {
    let c: BaseConsumer = client_config(&bs)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .unwrap();
    c.subscribe(topics).unwrap();
    let p = producer(&bs, &[("linger.ms", "1")]);
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let Some(seq) = seq_of(&m) else { continue };
        let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
        if !log.lock().unwrap().first_time(&topic, partition, offset) {
            continue;
        }
        let retry_topic = format!("{TOPIC}.retry");
        let fail = fails
            && if topic == TOPIC {
                seq.is_multiple_of(FAIL_EVERY)
            } else {
                seq.is_multiple_of(DEAD_EVERY)
            };
        if topic != TOPIC {
            log.lock().unwrap().retried.insert(seq);
        }
        if fail {
            // Hand the record back: the broker schedules the retry, or dead
            // letters it after the last attempt.
            let mut headers = OwnedHeaders::new();
            if let Some(h) = m.headers() {
                for x in h.iter() {
                    headers = headers.insert(Header {
                        key: x.key,
                        value: x.value,
                    });
                }
            }
            let payload = seq.to_string();
            let mut sent = false;
            for _ in 0..30 {
                let res = futures::executor::block_on(
                    p.send(
                        FutureRecord::to(&retry_topic)
                            .key(&payload)
                            .payload(&payload)
                            .headers(headers.clone()),
                        Duration::from_secs(10),
                    ),
                );
                if res.is_ok() {
                    sent = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            if !sent {
                handback_errors.fetch_add(1, Ordering::Relaxed);
            }
            assert!(
                attempt_of(&m) <= 2,
                "no record is retried more than retry.max.attempts"
            );
        }
        if topic == TOPIC {
            log.lock().unwrap().processed.insert((partition, offset));
        }
        if last_commit.elapsed() > Duration::from_secs(1) {
            let _ = c.commit_consumer_state(CommitMode::Async);
            last_commit = Instant::now();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long run: see the module docs"]
async fn soak() {
    let secs = env_u64("WEIR_SOAK_SECS", 120);
    let restart_every = env_u64("WEIR_SOAK_RESTART_SECS", 30).max(5);
    let rate = env_u64("WEIR_SOAK_RATE", 2000).max(10);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (port, http_port) = (free_port(), free_port());
    let args = ["--group-initial-rebalance-delay-ms", "500"];
    let mut broker = ChildBroker::start_on(&data, port, http_port, &args);
    let bs = broker.bootstrap();
    create_topic(
        &bs,
        TOPIC,
        PARTITIONS,
        &[
            ("retry.max.attempts", "2"),
            ("retry.backoff.ms", "300"),
            ("retry.backoff.multiplier", "2"),
        ],
    )
    .await;
    eprintln!("soak: {secs} s, {rate} records/s, a restart every {restart_every} s");

    let stop_producing = Arc::new(AtomicBool::new(false));
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<HashMap<(i32, i64), u64>>> = Arc::default();
    let produce_errors = Arc::new(AtomicU64::new(0));
    let handback_errors = Arc::new(AtomicU64::new(0));
    let admin_calls = Arc::new(AtomicU64::new(0));
    let admin_errors = Arc::new(AtomicU64::new(0));

    // Producer: idempotent, acks=all, at a fixed rate.
    let producer_task = {
        let (bs, stop, acked, errors) = (
            bs.clone(),
            Arc::clone(&stop_producing),
            Arc::clone(&acked),
            Arc::clone(&produce_errors),
        );
        tokio::spawn(async move {
            let p = producer(&bs, &[("message.timeout.ms", "60000")]);
            let mut inflight = futures::stream::FuturesUnordered::new();
            let started = Instant::now();
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while seq < due && inflight.len() < 20_000 {
                    let v = seq.to_string();
                    match p.send_result(FutureRecord::to(TOPIC).key(&v).payload(&v)) {
                        Ok(f) => inflight.push(async move { (f.await, seq) }),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    seq += 1;
                }
                while let Some(Some((res, s))) = futures::FutureExt::now_or_never(inflight.next()) {
                    match res {
                        Ok(Ok(d)) => {
                            acked.lock().unwrap().insert((d.partition, d.offset), s);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            while let Some((res, s)) = inflight.next().await {
                match res {
                    Ok(Ok(d)) => {
                        acked.lock().unwrap().insert((d.partition, d.offset), s);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // Two groups on the main topic; "a" also reads its retries and fails
    // some records; a third reads the DLQ.
    let group_a: Arc<Mutex<GroupLog>> = Arc::default();
    let group_b: Arc<Mutex<GroupLog>> = Arc::default();
    let dlq: Arc<Mutex<GroupLog>> = Arc::default();
    let mut consumers = Vec::new();
    for (group, topics, fails, log) in [
        (
            "soak-a",
            &[TOPIC, "soak.retry"][..],
            true,
            Arc::clone(&group_a),
        ),
        ("soak-b", &[TOPIC][..], false, Arc::clone(&group_b)),
        ("soak-dlq", &["soak.dlq"][..], false, Arc::clone(&dlq)),
    ] {
        let topics: &'static [&'static str] = Box::leak(topics.to_vec().into_boxed_slice());
        let (bs, stop, errs) = (
            bs.clone(),
            Arc::clone(&stop_consuming),
            Arc::clone(&handback_errors),
        );
        consumers.push(tokio::task::spawn_blocking(move || {
            run_group(bs, group, topics, fails, log, stop, errs)
        }));
    }
    // Admin calls: configs, a topic created and deleted, the HTTP status.
    let admin_task = {
        let (bs, stop, calls, errs) = (
            bs.clone(),
            Arc::clone(&stop_consuming),
            Arc::clone(&admin_calls),
            Arc::clone(&admin_errors),
        );
        let http: std::net::SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        tokio::spawn(async move {
            let a = admin(&bs);
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(3)).await;
                n += 1;
                let name = format!("soak-tmp-{n}");
                let ok = a
                    .describe_configs([&ResourceSpecifier::Topic(TOPIC)], &opts)
                    .await
                    .is_ok()
                    && a.create_topics(
                        [&NewTopic::new(&name, 1, TopicReplication::Fixed(1))],
                        &opts,
                    )
                    .await
                    .is_ok()
                    && a.delete_topics(&[&name], &opts).await.is_ok();
                let status = tokio::task::spawn_blocking(move || {
                    std::panic::catch_unwind(|| http_get(http, "/api/status", &[]).0).unwrap_or(0)
                })
                .await
                .unwrap_or(0);
                calls.fetch_add(1, Ordering::Relaxed);
                if !ok || status != 200 {
                    errs.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // Sampling and restarts.
    let started = Instant::now();
    let mut samples: Vec<serde_json::Value> = Vec::new();
    let mut last_restart = Instant::now();
    let mut restarts = (0u32, 0u32);
    let mut last_acked = 0usize;
    let mut last_t = 0.0f64;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let t = started.elapsed().as_secs_f64();
        let acked_n = acked.lock().unwrap().len();
        let pid = broker.child.id();
        let sample = serde_json::json!({
            "t_s": t.round(),
            "acked": acked_n,
            "acked_per_s": ((acked_n - last_acked) as f64 / (t - last_t)).round(),
            "group_a_processed": group_a.lock().unwrap().processed.len(),
            "group_b_processed": group_b.lock().unwrap().processed.len(),
            "rss_mib": rss_kib(pid).0 / 1024,
            "rss_anon_mib": rss_kib(pid).1 / 1024,
            "fds": fds(pid),
        });
        eprintln!("soak: {sample}");
        samples.push(sample);
        last_acked = acked_n;
        last_t = t;
        if last_restart.elapsed() >= Duration::from_secs(restart_every) {
            if (restarts.0 + restarts.1).is_multiple_of(2) {
                let status = broker.terminate();
                assert!(status.success(), "SIGTERM exits 0: {status:?}");
                restarts.0 += 1;
            } else {
                broker.kill9();
                restarts.1 += 1;
            }
            broker = ChildBroker::start_on(&data, port, http_port, &args);
            last_restart = Instant::now();
        }
    }
    stop_producing.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(120), producer_task)
        .await
        .expect("the producer drains")
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    // Wait for both groups to catch up.
    let deadline = Instant::now() + Duration::from_secs(180);
    let all: HashSet<(i32, i64)> = acked.keys().copied().collect();
    loop {
        let a_done = all.is_subset(&group_a.lock().unwrap().processed);
        let b_done = all.is_subset(&group_b.lock().unwrap().processed);
        if a_done && b_done {
            break;
        }
        assert!(Instant::now() < deadline, "the groups did not catch up");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the last retries and dead letters arrive.
    let failed: HashSet<u64> = acked
        .values()
        .copied()
        .filter(|s| s.is_multiple_of(FAIL_EVERY))
        .collect();
    let dead: HashSet<u64> = failed
        .iter()
        .copied()
        .filter(|s| s.is_multiple_of(DEAD_EVERY))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let retried_all = failed.is_subset(&group_a.lock().unwrap().retried);
        let dead_all = dead.is_subset(&dlq.lock().unwrap().retried);
        if retried_all && dead_all {
            break;
        }
        assert!(Instant::now() < deadline, "retries did not all come back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop_consuming.store(true, Ordering::Relaxed);
    for c in consumers {
        c.await.unwrap();
    }
    admin_task.await.unwrap();

    let a = group_a.lock().unwrap();
    let b = group_b.lock().unwrap();
    let d = dlq.lock().unwrap();
    let dlq_records = d.retried.len();
    let pid = broker.child.id();
    let rss: Vec<u64> = samples
        .iter()
        .filter_map(|s| s["rss_mib"].as_u64())
        .collect();
    let anon: Vec<u64> = samples
        .iter()
        .filter_map(|s| s["rss_anon_mib"].as_u64())
        .collect();
    let report = serde_json::json!({
        "seconds": secs,
        "rate": rate,
        "restarts_sigterm": restarts.0,
        "restarts_kill9": restarts.1,
        "acked": acked.len(),
        "produce_errors": produce_errors.load(Ordering::Relaxed),
        "group_a_processed": a.processed.len(),
        "group_a_redelivered": a.redelivered,
        "group_b_processed": b.processed.len(),
        "group_b_redelivered": b.redelivered,
        "handed_back": failed.len(),
        "came_back": a.retried.len(),
        "dead_lettered_expected": dead.len(),
        "dead_lettered": dlq_records,
        "handback_errors": handback_errors.load(Ordering::Relaxed),
        "admin_calls": admin_calls.load(Ordering::Relaxed),
        "admin_errors": admin_errors.load(Ordering::Relaxed),
        "rss_mib_min": rss.iter().min(),
        "rss_mib_max": rss.iter().max(),
        "rss_mib_end": rss_kib(pid).0 / 1024,
        "rss_anon_mib_min": anon.iter().min(),
        "rss_anon_mib_max": anon.iter().max(),
        "fds_max": samples.iter().filter_map(|s| s["fds"].as_u64()).max(),
        "samples": samples,
    });
    eprintln!("soak report: {report:#}");
    if let Ok(path) = std::env::var("WEIR_SOAK_REPORT") {
        std::fs::write(path, format!("{report:#}")).unwrap();
    }
    // Every acknowledged record processed exactly once by each group: the
    // processed sets hold every ack, and only offsets the log has.
    assert!(all.is_subset(&a.processed) && all.is_subset(&b.processed));
    let ends: HashMap<i32, i64> = {
        let c = consumer(&broker.bootstrap());
        (0..PARTITIONS)
            .map(|p| {
                (
                    p,
                    c.fetch_watermarks(TOPIC, p, Duration::from_secs(10))
                        .unwrap()
                        .1,
                )
            })
            .collect()
    };
    for (p, o) in a.processed.iter().chain(b.processed.iter()) {
        assert!(*o < ends[p], "processed {p}/{o} is in the log");
    }
    // At least once for retries: every handed-back record came back; those
    // failed on every attempt reached the DLQ.
    assert!(failed.is_subset(&a.retried));
    assert!(
        dead.is_subset(&d.retried),
        "{dlq_records} dead letters for {} expected",
        dead.len()
    );
    assert_eq!(handback_errors.load(Ordering::Relaxed), 0);
    assert!(restarts.0 + restarts.1 > 0 || secs < restart_every);
}
