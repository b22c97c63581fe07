//! Transactional produce against idempotent produce, in one run: the same
//! records (100 B values, acks=all, `--fsync acks-all`) sent by one
//! librdkafka producer to an in-process broker, idempotent, then in
//! transactions of 10,000, 1,000 and 100 records (each commit writes a
//! marker to every partition and fsyncs it, and journals the decision and
//! the end). Rounds alternate so that the machine's noise falls on both;
//! the figures are records per second and the ratio to idempotent produce.
//!
//! Run with `cargo bench --bench transactions`; figures are recorded in
//! docs/performance.md.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 4;
const ROUNDS: usize = 3;
const T: Duration = Duration::from_secs(60);

fn producer(bs: &str, transactional_id: Option<&str>) -> BaseProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bs)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("log_level", "3");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id);
    }
    if let Ok(d) = std::env::var("WEIR_BENCH_DEBUG") {
        c.set("debug", d).set("log_level", "7");
    }
    // A BaseProducer polled by this thread: a ThreadedProducer's poll
    // thread serves delivery reports every 100 ms, which a commit waits for.
    let p: BaseProducer = c.create().expect("producer");
    if transactional_id.is_some() {
        p.init_transactions(T).expect("init_transactions");
    }
    p
}

fn send(p: &BaseProducer, topic: &str, i: usize, value: &[u8]) {
    let key = i.to_string();
    let mut rec = BaseRecord::to(topic).key(&key).payload(value);
    loop {
        match p.send(rec) {
            Ok(()) => {
                p.poll(Duration::ZERO);
                return;
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                p.poll(Duration::from_millis(1));
            }
            Err((e, _)) => panic!("send: {e}"),
        }
    }
}

/// Records per second sending `RECORDS` records, in transactions of
/// `per_txn` (`None`: idempotent, flushed at the end).
fn run(bs: &str, topic: &str, per_txn: Option<usize>, round: usize) -> f64 {
    let value = vec![b'x'; 100];
    let id = format!("bench-{}-{round}", per_txn.unwrap_or(0));
    let p = producer(bs, per_txn.map(|_| id.as_str()));
    // Connections, metadata and the producer id are set up before the
    // clock starts: one record (in a transaction for a transactional
    // producer) to every partition, acknowledged.
    if per_txn.is_some() {
        p.begin_transaction().expect("begin");
    }
    for i in 0..PARTITIONS as usize * 4 {
        send(&p, topic, i, &value);
    }
    while p.in_flight_count() > 0 {
        p.poll(Duration::from_millis(1));
    }
    if per_txn.is_some() {
        p.commit_transaction(T).expect("commit");
    }
    let start = Instant::now();
    match per_txn {
        None => {
            for i in 0..RECORDS {
                send(&p, topic, i, &value);
            }
            while p.in_flight_count() > 0 {
                p.poll(Duration::from_millis(1));
            }
        }
        Some(n) => {
            for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(n) {
                p.begin_transaction().expect("begin");
                for i in chunk {
                    send(&p, topic, *i, &value);
                }
                // The crate's commit first flushes in polls of up to 100 ms
                // each; waiting here in short polls keeps that out of the
                // figure.
                while p.in_flight_count() > 0 {
                    p.poll(Duration::from_millis(1));
                }
                p.commit_transaction(T).expect("commit");
            }
        }
    }
    RECORDS as f64 / start.elapsed().as_secs_f64()
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
    let topic = NewTopic::new("txn-bench", PARTITIONS, TopicReplication::Fixed(1));
    rt.block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topic");

    let cases: [(&str, Option<usize>); 4] = [
        ("idempotent", None),
        ("transactions of 10,000", Some(10_000)),
        ("transactions of 1,000", Some(1_000)),
        ("transactions of 100", Some(100)),
    ];
    let mut rates = vec![Vec::new(); cases.len()];
    for round in 0..ROUNDS {
        for (i, (_, per_txn)) in cases.iter().enumerate() {
            rates[i].push(run(&bs, "txn-bench", *per_txn, round));
        }
    }
    println!(
        "{RECORDS} records of 100 B, {PARTITIONS} partitions, acks=all, {ROUNDS} alternating rounds"
    );
    for (i, (name, _)) in cases.iter().enumerate() {
        let shown: Vec<String> = rates[i]
            .iter()
            .zip(&rates[0])
            .map(|(r, base)| format!("{r:>9.0}/s ({:.2})", r / base))
            .collect();
        println!("{name:<24} {}", shown.join("  "));
    }
    rt.block_on(running.shutdown());
}
