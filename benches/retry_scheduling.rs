//! Broker-managed retries under load: hand-back throughput through the real
//! request path, memory per pending record in the store, and how late
//! deliveries are after their due time.
//!
//! Run with `cargo bench --bench retry_scheduling`; figures are printed and
//! recorded in docs/performance.md.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use weir::retry::store::{Held, PendingStore};

const HANDBACKS: usize = 100_000;
const LATENESS_RECORDS: usize = 20_000;
const HELD_FOR_MEMORY: usize = 1_000_000;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn producer(bs: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("log_level", "3")
        .create()
        .expect("producer")
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
    let topics = [
        NewTopic::new("held", 4, TopicReplication::Fixed(1))
            .set("retry.max.attempts", "3")
            .set("retry.backoff.ms", "3600000"),
        NewTopic::new("late", 4, TopicReplication::Fixed(1))
            .set("retry.max.attempts", "3")
            .set("retry.backoff.ms", "1000"),
    ];
    rt.block_on(admin.create_topics(topics.iter(), &AdminOptions::new()))
        .expect("create topics");

    // 1. Hand-back throughput: records held durably (acks=all, fsync).
    let p = producer(&bs);
    let value = vec![b'x'; 100];
    let started = Instant::now();
    rt.block_on(async {
        let mut futs = Vec::with_capacity(HANDBACKS);
        for i in 0..HANDBACKS {
            let key = format!("k{i}");
            match p.send_result(FutureRecord::to("held.retry").key(&key).payload(&value)) {
                Ok(f) => futs.push(f),
                Err((e, _)) => panic!("enqueue: {e}"),
            }
        }
        for f in futs {
            f.await.expect("future").expect("delivered");
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "hand-back throughput: {HANDBACKS} records of 100 B held with acks=all in {secs:.2} s = {:.0} records/s",
        HANDBACKS as f64 / secs
    );

    // 2. Lateness under load: hand back at a steady rate, measure arrival
    // minus the due time carried in the retry.due.ms header.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", "bench-unused")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .set("log_level", "3")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for part in 0..4 {
        tpl.add_partition_offset("late.retry", part, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let reader = std::thread::spawn(move || {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000, 3).expect("histogram");
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut n = 0;
        while n < LATENESS_RECORDS && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let due = m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == "retry.due.ms")
                        .and_then(|x| x.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|s| s.parse::<i64>().ok())
                });
                if let Some(due) = due {
                    let late = (weir::broker::now_ms() - due).max(0) as u64;
                    let _ = hist.record(late.max(1));
                    n += 1;
                }
            }
        }
        (n, hist)
    });
    let rate_per_s = 4000usize;
    rt.block_on(async {
        let p = producer(&bs);
        let mut futs = Vec::with_capacity(LATENESS_RECORDS);
        let start = Instant::now();
        for i in 0..LATENESS_RECORDS {
            let target = start + Duration::from_secs_f64(i as f64 / rate_per_s as f64);
            if let Some(d) = target.checked_duration_since(Instant::now()) {
                tokio::time::sleep(d).await;
            }
            let key = format!("k{i}");
            match p.send_result(FutureRecord::to("late.retry").key(&key).payload(&value)) {
                Ok(f) => futs.push(f),
                Err((e, _)) => panic!("enqueue: {e}"),
            }
        }
        for f in futs {
            f.await.expect("future").expect("delivered");
        }
    });
    let (n, hist) = reader.join().expect("reader");
    println!(
        "lateness after the due time, {n} records handed back at {rate_per_s}/s with 1 s backoff: \
         p50 {} ms, p99 {} ms, max {} ms",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    rt.block_on(running.shutdown());

    // 3. Memory per pending record in the store (schedule in memory, bulk on disk).
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = PendingStore::open(store_dir.path()).expect("store");
    let before = rss_bytes();
    let chunk: Vec<Held> = (0..10_000)
        .map(|i| Held {
            due_ms: 1_000_000 + i,
            topic: "t.retry".into(),
            partition: 0,
            timestamp: 0,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![b'x'; 100])),
            headers: vec![("retry.attempt".into(), Some(Bytes::from_static(b"1")))],
        })
        .collect();
    for _ in 0..HELD_FOR_MEMORY / chunk.len() {
        store.hold(&chunk, false).expect("hold");
    }
    let after = rss_bytes();
    println!(
        "memory: {} pending records held, RSS grew by {:.1} MiB = {:.1} bytes per record (store file {:.0} MiB)",
        store.pending(),
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / store.pending() as f64,
        store.file_bytes() as f64 / (1 << 20) as f64,
    );
}
