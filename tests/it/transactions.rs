//! Transactions with librdkafka's transactional producer: commit and abort,
//! read_committed consumers, fencing, offsets committed in a transaction,
//! and a broker killed -9 with a transaction open.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::*;

pub(crate) const T: Duration = Duration::from_secs(30);

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

pub(crate) fn txn_producer(
    bootstrap: &str,
    id: &str,
    extra: &[(&str, &str)],
) -> ThreadedProducer<DefaultProducerContext> {
    let mut c = client_config(bootstrap);
    c.set("transactional.id", id).set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let p: ThreadedProducer<DefaultProducerContext> = c.create().unwrap();
    p.init_transactions(T).unwrap();
    p
}

pub(crate) fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    value: &str,
) {
    let mut rec = BaseRecord::to(topic).key(key).payload(value);
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                rec = r;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("send: {e}"),
        }
    }
}

fn reader(bootstrap: &str, committed: bool) -> BaseConsumer {
    client_config(bootstrap)
        .set("group.id", "weir-test-unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set(
            "isolation.level",
            if committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .unwrap()
}

/// Transactions of `per_round` records each to `topic` (keys `k<i>`,
/// values `r<round>-<i>`), each committed or aborted as `rounds` says.
pub(crate) fn txn_rounds(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    per_round: usize,
    rounds: &[(usize, bool)],
) {
    for &(round, commit) in rounds {
        p.begin_transaction().unwrap();
        for i in 0..per_round {
            send(p, topic, &format!("k{i}"), &format!("r{round}-{i}"));
        }
        if commit {
            p.commit_transaction(T).unwrap();
        } else {
            p.flush(T).unwrap();
            p.abort_transaction(T).unwrap();
        }
    }
}

/// Values read from every partition of `topic` until `quiet` passes with
/// nothing new (or `expected` arrived and `quiet` passed again).
pub(crate) fn values(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    committed: bool,
    quiet: Duration,
) -> Vec<String> {
    let c = reader(bootstrap, committed);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while last.elapsed() < quiet && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
                last = Instant::now();
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

#[test]
fn committed_records_are_read_and_aborted_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), &[]);
    let bs = b.bootstrap();
    rt().block_on(create_topic(&bs, "txn-out", 2, &[]));
    let p = txn_producer(&bs, "t-basic", &[]);
    txn_rounds(&p, "txn-out", 20, &[(0, true), (1, false), (2, true)]);
    // An open transaction: read_committed readers stop before it.
    p.begin_transaction().unwrap();
    for i in 0..5 {
        send(&p, "txn-out", "open", &format!("open-{i}"));
    }
    p.flush(T).unwrap();
    let committed = values(&bs, "txn-out", 2, true, Duration::from_secs(2));
    let want: HashSet<String> = (0..20)
        .flat_map(|i| [format!("r0-{i}"), format!("r2-{i}")])
        .collect();
    assert_eq!(committed.len(), 40, "{committed:?}");
    assert_eq!(committed.into_iter().collect::<HashSet<_>>(), want);
    let all = values(&bs, "txn-out", 2, false, Duration::from_secs(2));
    assert_eq!(
        all.len(),
        65,
        "read_uncommitted sees every record, not the markers"
    );
    // ListOffsets: the latest offset of a read_committed reader is the
    // last stable offset.
    let rc = reader(&bs, true);
    let ru = reader(&bs, false);
    let mut stable_total = 0;
    let mut end_total = 0;
    for part in 0..2 {
        let (_, s) = rc.fetch_watermarks("txn-out", part, T).unwrap();
        let (_, e) = ru.fetch_watermarks("txn-out", part, T).unwrap();
        assert!(s <= e);
        stable_total += s;
        end_total += e;
    }
    assert!(stable_total < end_total, "the open transaction is unstable");
    p.commit_transaction(T).unwrap();
    let committed = values(&bs, "txn-out", 2, true, Duration::from_secs(2));
    assert_eq!(committed.len(), 45);
}

#[test]
fn a_new_producer_fences_the_old_one_and_aborts_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), &[]);
    let bs = b.bootstrap();
    rt().block_on(create_topic(&bs, "fence", 1, &[]));
    let old = txn_producer(&bs, "t-fence", &[]);
    old.begin_transaction().unwrap();
    send(&old, "fence", "k", "zombie");
    old.flush(T).unwrap();
    let new = txn_producer(&bs, "t-fence", &[]);
    let err = old.commit_transaction(T).unwrap_err();
    let fatal = matches!(&err, KafkaError::Transaction(e) if e.is_fatal());
    assert!(fatal, "the old producer is fenced: {err:?}");
    new.begin_transaction().unwrap();
    send(&new, "fence", "k", "live");
    new.commit_transaction(T).unwrap();
    let got = values(&bs, "fence", 1, true, Duration::from_secs(2));
    assert_eq!(got, vec!["live".to_string()]);
}

/// A consume-transform-produce loop: each input record is copied to the
/// output and the consumer's position committed in the same transaction.
#[test]
fn offsets_sent_to_a_transaction_commit_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), &[]);
    let bs = b.bootstrap();
    rt().block_on(async {
        create_topic(&bs, "eos-in", 1, &[]).await;
        create_topic(&bs, "eos-out", 1, &[]).await;
    });
    eos_rounds(&bs, ("eos-in", "eos-out"), "eos-group", "t-eos", 30);
}

/// Seeds `total` committed records into `input` (one partition), then runs
/// a consume-transform-produce loop in rounds of ten under transactional id
/// `id`, sending the group's offsets to each transaction: the second round
/// is aborted and read again from the committed offset. Checks that every
/// input is in `output` once, in order, and that the group's committed
/// offset is the end.
pub(crate) fn eos_rounds(
    bs: &str,
    (input, output): (&str, &str),
    group: &str,
    id: &str,
    total: i64,
) {
    let seed = txn_producer(bs, &format!("{id}-seed"), &[]);
    seed.begin_transaction().unwrap();
    for i in 0..total {
        send(&seed, input, "k", &format!("in-{i}"));
    }
    seed.commit_transaction(T).unwrap();
    let consumer: BaseConsumer = client_config(bs)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let p = txn_producer(bs, id, &[]);
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut round = 0;
    while seen < total && Instant::now() < deadline {
        let mut batch = Vec::new();
        while batch.len() < 10 && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                batch.push((
                    m.offset(),
                    String::from_utf8_lossy(m.payload().unwrap()).into_owned(),
                ));
            }
        }
        p.begin_transaction().unwrap();
        for (_, v) in &batch {
            send(&p, output, "k", &v.replace("in", "out"));
        }
        let next = batch.last().unwrap().0 + 1;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(input, 0, Offset::Offset(next))
            .unwrap();
        let meta = consumer.group_metadata().unwrap();
        p.send_offsets_to_transaction(&offsets, &meta, T).unwrap();
        if round == 1 {
            p.abort_transaction(T).unwrap();
            // Back to the last committed position.
            let committed = consumer.committed(T).unwrap();
            let at = committed.find_partition(input, 0).unwrap().offset();
            assert_eq!(
                at,
                Offset::Offset(10),
                "the aborted round's offsets did not commit"
            );
            consumer.seek(input, 0, at, T).unwrap();
        } else {
            p.commit_transaction(T).unwrap();
            seen += batch.len() as i64;
        }
        round += 1;
    }
    let out = values(bs, output, 1, true, Duration::from_secs(2));
    let want: Vec<String> = (0..total).map(|i| format!("out-{i}")).collect();
    assert_eq!(out, want, "every input exactly once, in order");
    let committed = consumer.committed(T).unwrap();
    assert_eq!(
        committed.find_partition(input, 0).unwrap().offset(),
        Offset::Offset(total)
    );
}

/// kill -9 with one transaction committed and one open: after the restart
/// the committed one is there, the open one is aborted at its timeout and
/// read_committed readers move past it.
#[test]
fn an_open_transaction_at_a_crash_is_aborted_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--transaction-abort-timed-out-transaction-cleanup-interval-ms",
        "200",
    ];
    let mut b = ChildBroker::start(dir.path(), &flags);
    let bs = b.bootstrap();
    rt().block_on(create_topic(&bs, "crash-txn", 2, &[]));
    let p = txn_producer(&bs, "t-crash", &[("transaction.timeout.ms", "3000")]);
    p.begin_transaction().unwrap();
    for i in 0..50 {
        send(&p, "crash-txn", &format!("k{i}"), &format!("done-{i}"));
    }
    p.commit_transaction(T).unwrap();
    p.begin_transaction().unwrap();
    for i in 0..50 {
        send(&p, "crash-txn", &format!("k{i}"), &format!("open-{i}"));
    }
    p.flush(T).unwrap();
    b.kill9();
    drop(p);
    let b = ChildBroker::start(dir.path(), &flags);
    let bs = b.bootstrap();
    // After the timeout the open transaction is aborted: later committed
    // records are readable behind it.
    std::thread::sleep(Duration::from_secs(4));
    let p = txn_producer(&bs, "t-crash-2", &[]);
    p.begin_transaction().unwrap();
    send(&p, "crash-txn", "after", "after");
    p.commit_transaction(T).unwrap();
    let got = values(&bs, "crash-txn", 2, true, Duration::from_secs(3));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &got {
        *counts.entry(v.split('-').next().unwrap()).or_default() += 1;
    }
    assert_eq!(counts.get("done"), Some(&50), "{counts:?}");
    assert_eq!(counts.get("open"), None, "{counts:?}");
    assert_eq!(counts.get("after"), Some(&1), "{counts:?}");
    let (status, _, body) = http_get(
        std::net::SocketAddr::from(([127, 0, 0, 1], b.http_port)),
        "/api/status",
        &[],
    );
    assert_eq!(status, 200);
    assert!(body.contains("\"transactions\""), "{body}");
}

/// A hand-back to a retry topic inside a transaction is held only when the
/// transaction commits; an aborted one's is never delivered.
#[test]
fn hand_backs_in_a_transaction_are_held_only_when_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), &[]);
    let bs = b.bootstrap();
    rt().block_on(create_topic(
        &bs,
        "work",
        1,
        &[("retry.max.attempts", "3"), ("retry.backoff.ms", "300")],
    ));
    let p = txn_producer(&bs, "t-retry", &[]);
    p.begin_transaction().unwrap();
    send(&p, "work.retry", "a", "aborted");
    p.flush(T).unwrap();
    p.abort_transaction(T).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "work.retry", "c", "committed");
    send(&p, "work", "c", "output");
    p.commit_transaction(T).unwrap();
    let got = values(&bs, "work.retry", 1, true, Duration::from_secs(3));
    assert_eq!(got, vec!["committed".to_string()]);
    let out = values(&bs, "work", 1, true, Duration::from_secs(1));
    assert_eq!(out, vec!["output".to_string()]);
}
