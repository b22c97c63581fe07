//! A fault test in the spirit of Jepsen: idempotent acks=all producers
//! write to a replication-factor-3 topic while a nemesis kills -9,
//! restarts, pauses (SIGSTOP) and resumes random brokers of a three-node
//! cluster. At the end the checker reads every partition back and holds it
//! against what the producers were told:
//!
//! - every acknowledged record is there, exactly once;
//! - no record (acknowledged or not) is there twice;
//! - each producer's records are in the order it sent them, per partition.
//!
//! A few rounds run in `cargo test`; the long run is
//! `cargo test --release --test it nemesis_long -- --ignored --nocapture`
//! (`WEIR_NEMESIS_ROUNDS` sets its rounds, 50 by default).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::producer::{FutureRecord, Producer};

use crate::cluster::TestCluster;
use crate::common::*;

const TOPIC: &str = "nemesis";
const PARTITIONS: i32 = 3;
const PRODUCERS: usize = 2;

/// What the producers sent and were told, per (producer, partition): the
/// sequence numbers in send order, each with whether it was acknowledged.
type Sent = Arc<Mutex<HashMap<(usize, i32), Vec<(u64, bool)>>>>;

/// A small deterministic generator (xorshift), seeded and printed so a
/// failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The counts the checker prints.
#[derive(Debug, Default)]
struct Verdict {
    acknowledged: usize,
    unacknowledged: usize,
    read: usize,
    /// Acknowledged records not read back.
    lost: usize,
    /// Records read more than once.
    duplicated: usize,
    /// Records of one producer out of its send order in a partition.
    reordered: usize,
    /// Unacknowledged records that were written after all (allowed).
    unacknowledged_present: usize,
}

/// Holds the log read back against what the producers were told.
fn check(sent: &HashMap<(usize, i32), Vec<(u64, bool)>>, read: &[(i32, Vec<u8>)]) -> Verdict {
    let mut v = Verdict::default();
    for seqs in sent.values() {
        v.acknowledged += seqs.iter().filter(|(_, a)| *a).count();
        v.unacknowledged += seqs.iter().filter(|(_, a)| !*a).count();
    }
    v.read = read.len();
    // (producer, partition) -> sequence numbers in log order.
    let mut logged: HashMap<(usize, i32), Vec<u64>> = HashMap::new();
    for (partition, value) in read {
        let s = String::from_utf8_lossy(value);
        let Some((p, n)) = s.split_once('-') else {
            continue;
        };
        let (Ok(p), Ok(n)) = (p.parse::<usize>(), n.parse::<u64>()) else {
            continue;
        };
        logged.entry((p, *partition)).or_default().push(n);
    }
    for (key, seqs) in sent {
        let log = logged.get(key).cloned().unwrap_or_default();
        let mut count: BTreeMap<u64, usize> = BTreeMap::new();
        for n in &log {
            *count.entry(*n).or_default() += 1;
        }
        v.duplicated += count.values().filter(|c| **c > 1).count();
        v.reordered += log.windows(2).filter(|w| w[0] >= w[1]).count();
        for (n, acked) in seqs {
            let present = count.contains_key(n);
            if *acked && !present {
                v.lost += 1;
            }
            if !*acked && present {
                v.unacknowledged_present += 1;
            }
        }
    }
    v
}

/// One producer: writes its numbered records to every partition in turn,
/// a window in flight at a time, until `stop`.
async fn produce(
    id: usize,
    bootstrap: String,
    sent: Sent,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let p = producer(
        &bootstrap,
        &[
            ("message.timeout.ms", "120000"),
            ("request.timeout.ms", "5000"),
            ("linger.ms", "2"),
        ],
    );
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut window = Vec::new();
        for _ in 0..20 {
            for part in 0..PARTITIONS {
                let value = format!("{id}-{n}");
                let mut record = FutureRecord::<(), _>::to(TOPIC)
                    .partition(part)
                    .payload(&value);
                // A full queue (the cluster is between leaders) is waited
                // out: only records handed to the client count as sent.
                let f = loop {
                    match p.send_result(record) {
                        Ok(f) => break f,
                        Err((
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull,
                            ),
                            r,
                        )) => {
                            record = r;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err((e, _)) => panic!(
                            "producer {id} failed for good: {e} ({:?})",
                            p.client().fatal_error()
                        ),
                    }
                };
                sent.lock().entry((id, part)).or_default().push((n, false));
                window.push((part, n, f));
            }
            n += 1;
        }
        for (part, seq, f) in window {
            let ok = match f.await {
                Ok(Ok(_)) => true,
                Ok(Err((e, _))) => {
                    if matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::Fatal
                        )
                    ) || p.client().fatal_error().is_some()
                    {
                        panic!("producer {id}: fatal {e} ({:?})", p.client().fatal_error());
                    }
                    false
                }
                Err(_) => false,
            };
            if ok {
                if let Some(e) = sent
                    .lock()
                    .get_mut(&(id, part))
                    .and_then(|v| v.iter_mut().find(|(s, _)| *s == seq))
                {
                    e.1 = true;
                }
            }
        }
    }
}

async fn nemesis(rounds: usize) {
    let seed = std::env::var("WEIR_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("nemesis: {rounds} rounds, seed {seed}");
    let mut rng = Rng(seed);
    // The brokers prove a shared secret on every connection among them, as
    // a cluster beyond one machine should run.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "the-nemesis-cluster-secret\n").unwrap();
    let secret_path = secret.path().display().to_string();
    let mut c = TestCluster::start_with(3, &["--controller-secret-file", &secret_path]);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bootstrap = c.bootstrap();
    let admin = admin(&bootstrap);
    let t = rdkafka::admin::NewTopic::new(
        TOPIC,
        PARTITIONS,
        rdkafka::admin::TopicReplication::Fixed(3),
    )
    .set("min.insync.replicas", "2");
    for r in admin
        .create_topics(
            [&t],
            &rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let sent: Sent = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            tokio::spawn(produce(
                id,
                bootstrap.clone(),
                Arc::clone(&sent),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // A consumer group commits ever larger offsets through the faults.
    let commits = Arc::new(parking_lot::Mutex::new((0i64, 0i64)));
    let committer = {
        let (bootstrap, commits, stop) =
            (bootstrap.clone(), Arc::clone(&commits), Arc::clone(&stop));
        std::thread::spawn(move || commit_loop(&bootstrap, &commits, &stop))
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    for round in 0..rounds {
        if producers.iter().any(tokio::task::JoinHandle::is_finished) {
            eprintln!("a producer stopped: no more faults");
            break;
        }
        let victim = rng.below(3) as usize;
        let pause = Duration::from_millis(500 + rng.below(1500));
        if rng.below(2) == 0 {
            eprintln!("round {round}: kill -9 node {} for {pause:?}", victim + 1);
            c.kill9(victim);
            tokio::time::sleep(pause).await;
            c.start_node(victim);
        } else {
            eprintln!("round {round}: SIGSTOP node {} for {pause:?}", victim + 1);
            c.signal(victim, "-STOP");
            tokio::time::sleep(pause).await;
            c.signal(victim, "-CONT");
        }
        // Let the cluster heal before the next fault.
        tokio::time::sleep(Duration::from_millis(1500 + rng.below(1500))).await;
    }
    let faulty = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    committer.join().unwrap();
    let (acked, attempted) = *commits.lock();
    let committed = tokio::task::block_in_place(|| committed_offset(&bootstrap));
    eprintln!(
        "nemesis commits: {acked} acknowledged of {attempted} attempted; the group's offset reads {committed}"
    );
    assert!(acked > 0, "no commit was acknowledged");
    assert!(
        committed >= acked && committed <= attempted,
        "committed offset {committed} outside [{acked}, {attempted}]: an acknowledged commit was lost"
    );
    let expected: usize = sent.lock().values().map(Vec::len).sum();
    let read: Vec<(i32, Vec<u8>)> = read_until_quiet(&bootstrap, expected).into_iter().collect();
    let sent = sent.lock().clone();
    let v = check(&sent, &read);
    eprintln!(
        "nemesis checker after {rounds} rounds ({} s of faults): {v:?}",
        faulty.as_secs()
    );
    assert!(v.acknowledged > 0);
    assert_eq!(v.lost, 0, "acknowledged records lost: {v:?}");
    assert_eq!(v.duplicated, 0, "records written twice: {v:?}");
    assert_eq!(v.reordered, 0, "records out of order: {v:?}");
}

const GROUP: &str = "nemesis-commits";

fn group_consumer(bootstrap: &str) -> rdkafka::consumer::BaseConsumer {
    client_config(bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// Commits offsets 1, 2, 3... of partition 0 for the group, one at a
/// time, until `stop`; keeps (largest acknowledged, largest attempted).
fn commit_loop(
    bootstrap: &str,
    commits: &parking_lot::Mutex<(i64, i64)>,
    stop: &std::sync::atomic::AtomicBool,
) {
    use rdkafka::consumer::{CommitMode, Consumer};
    let c = group_consumer(bootstrap);
    let mut next = 1i64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, rdkafka::Offset::Offset(next))
            .unwrap();
        commits.lock().1 = next;
        if c.commit(&tpl, CommitMode::Sync).is_ok() {
            commits.lock().0 = next;
        }
        // A failed commit may still have been stored: the next one goes
        // above it either way.
        next += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The group's committed offset of partition 0, asked until answered.
fn committed_offset(bootstrap: &str) -> i64 {
    use rdkafka::consumer::Consumer;
    let c = group_consumer(bootstrap);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(TOPIC, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(got) = c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            if let Some(rdkafka::Offset::Offset(o)) = got.elements().first().map(|e| e.offset()) {
                return o;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the committed offset was not answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads every partition from the start until no record arrives for a
/// few seconds (at most `expected`, the number sent).
fn read_until_quiet(bootstrap: &str, expected: usize) -> Vec<(i32, Vec<u8>)> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let c = consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while last.elapsed() < Duration::from_secs(5) && Instant::now() < deadline {
        if out.len() >= expected && last.elapsed() > Duration::from_secs(1) {
            break;
        }
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.push((m.partition(), m.payload().unwrap_or_default().to_vec()));
                last = Instant::now();
            }
            Some(Err(e)) => eprintln!("consume error (retried): {e}"),
            None => {}
        }
    }
    out
}

#[test]
fn the_checker_finds_lost_duplicated_and_reordered_records() {
    let mut sent = HashMap::new();
    sent.insert((0, 0), vec![(0, true), (1, true), (2, false), (3, true)]);
    let rec = |n: u64| (0, format!("0-{n}").into_bytes());
    let good = check(&sent, &[rec(0), rec(1), rec(3)]);
    assert_eq!((good.lost, good.duplicated, good.reordered), (0, 0, 0));
    assert_eq!(good.acknowledged, 3);
    let with_unacked = check(&sent, &[rec(0), rec(1), rec(2), rec(3)]);
    assert_eq!(with_unacked.unacknowledged_present, 1);
    assert_eq!(with_unacked.lost, 0);
    assert_eq!(check(&sent, &[rec(0), rec(3)]).lost, 1);
    assert_eq!(
        check(&sent, &[rec(0), rec(1), rec(1), rec(3)]).duplicated,
        1
    );
    assert_eq!(check(&sent, &[rec(1), rec(0), rec(3)]).reordered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_short() {
    nemesis(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 50 rounds of faults, minutes"]
async fn nemesis_long() {
    let rounds = std::env::var("WEIR_NEMESIS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    nemesis(rounds).await;
}
