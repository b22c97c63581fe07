//! Transactions in a cluster of three broker processes: the coordinator is
//! the leader of the id's `__transaction_state` partition, markers go to
//! each partition's leader, offsets sent to a transaction are stored by the
//! group's coordinator when it commits, a transaction open when its
//! coordinator is killed -9 is committed through the next one, and an
//! exactly-once loop goes on through such a kill with every input in its
//! output once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use crate::bad_input::call;
use crate::cluster::TestCluster;
use crate::common::*;
use crate::transactions::{rt, send, txn_producer, txn_rounds, values, T};

async fn create_replicated(bootstrap: &str, name: &str, partitions: i32) {
    create_with(bootstrap, name, partitions, 3, &[]).await;
}

async fn create_with(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, &str)],
) {
    let mut t = rdkafka::admin::NewTopic::new(
        name,
        partitions,
        rdkafka::admin::TopicReplication::Fixed(replicas),
    );
    for (k, v) in configs {
        t = t.set(k, v);
    }
    for r in admin(bootstrap)
        .create_topics([&t], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

/// The node (0-based) that coordinates transactional id `id`, asked of
/// the broker at `port`.
fn coordinator_of(port: u16, id: &str) -> usize {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let find = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(id.to_string()))
        .with_key_type(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r: FindCoordinatorResponse = call(addr, ApiKey::FindCoordinator, 3, &find);
        if r.error_code == 0 {
            return usize::try_from(r.node_id.0 - 1).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator: {}",
            r.error_code
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_transaction_commits_through_the_next_coordinator_after_a_kill_9() {
    let mut c = TestCluster::start_with(3, &["--offsets-topic-num-partitions", "3"]);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bs = c.bootstrap();
    rt().block_on(create_replicated(&bs, "ctx", 3));
    let p = txn_producer(&bs, "t-cluster", &[]);
    txn_rounds(&p, "ctx", 30, &[(0, true), (1, false)]);
    // A transaction open, in flight to every partition, when its
    // coordinator dies.
    p.begin_transaction().unwrap();
    for i in 0..30 {
        send(&p, "ctx", &format!("k{i}"), &format!("r2-{i}"));
    }
    p.flush(T).unwrap();
    let dead = coordinator_of(c.ports[0].0, "t-cluster");
    c.kill9(dead);
    p.commit_transaction(Duration::from_secs(60))
        .expect("committed through the next coordinator");
    let live = c.bootstrap_without(dead as i32 + 1);
    let committed = values(&live, "ctx", 3, true, Duration::from_secs(3));
    let want: HashSet<String> = (0..30)
        .flat_map(|i| [format!("r0-{i}"), format!("r2-{i}")])
        .collect();
    assert_eq!(committed.len(), 60, "{committed:?}");
    assert_eq!(committed.into_iter().collect::<HashSet<_>>(), want);
    let all = values(&live, "ctx", 3, false, Duration::from_secs(2));
    assert_eq!(
        all.len(),
        90,
        "read_uncommitted reads the aborted round too"
    );
    // The next transaction of the same producer commits too.
    p.begin_transaction().unwrap();
    send(&p, "ctx", "k", "r3");
    p.commit_transaction(T).unwrap();
    let committed = values(&live, "ctx", 3, true, Duration::from_secs(2));
    assert_eq!(committed.len(), 61);
}

#[test]
fn offsets_sent_to_a_transaction_commit_at_the_groups_coordinator() {
    let c = TestCluster::start_with(3, &["--offsets-topic-num-partitions", "3"]);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bs = c.bootstrap();
    rt().block_on(async {
        create_replicated(&bs, "ceos-in", 1).await;
        create_replicated(&bs, "ceos-out", 1).await;
    });
    crate::transactions::eos_rounds(&bs, ("ceos-in", "ceos-out"), "ceos-group", "t-ceos", 20);
}

/// Rewinds `consumer` to its group's committed offsets (after an abort).
fn rewind(consumer: &BaseConsumer) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let Ok(committed) = consumer.committed_offsets(assigned, T) else {
        return;
    };
    for e in committed.elements() {
        let at = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        let _ = consumer.seek(e.topic(), e.partition(), at, T);
    }
}

#[test]
fn an_exactly_once_loop_survives_its_transaction_coordinator_killed_9() {
    const N: usize = 600;
    let mut c = TestCluster::start_with(3, &["--offsets-topic-num-partitions", "3"]);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bs = c.bootstrap();
    rt().block_on(async {
        create_replicated(&bs, "x-in", 3).await;
        create_replicated(&bs, "x-out", 3).await;
    });
    let seed = txn_producer(&bs, "t-xseed", &[]);
    seed.begin_transaction().unwrap();
    for i in 0..N {
        send(&seed, "x-in", &format!("k{i}"), &format!("in-{i}"));
    }
    seed.commit_transaction(T).unwrap();
    drop(seed);

    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looper = {
        let (bs, done, stop) = (bs.clone(), done.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering::SeqCst;
            let consumer: BaseConsumer = client_config(&bs)
                .set("group.id", "x-group")
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .set("auto.offset.reset", "earliest")
                .create()
                .unwrap();
            consumer.subscribe(&["x-in"]).unwrap();
            let p = txn_producer(&bs, "t-xloop", &[("transaction.timeout.ms", "20000")]);
            let (mut aborted, mut committed) = (0, 0);
            while !stop.load(SeqCst) {
                let mut batch = Vec::new();
                while batch.len() < 20 {
                    match consumer.poll(Duration::from_millis(200)) {
                        Some(Ok(m)) => batch.push((
                            m.partition(),
                            m.offset(),
                            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                        )),
                        Some(Err(_)) | None => break,
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let ended = (|| -> Result<(), rdkafka::error::KafkaError> {
                    p.begin_transaction()?;
                    for (_, _, v) in &batch {
                        send(&p, "x-out", v, &v.replace("in", "out"));
                    }
                    let mut offsets = TopicPartitionList::new();
                    for (part, off, _) in &batch {
                        offsets.add_partition_offset("x-in", *part, Offset::Offset(off + 1))?;
                    }
                    let meta = consumer.group_metadata().expect("group metadata");
                    p.send_offsets_to_transaction(&offsets, &meta, Duration::from_secs(60))?;
                    p.commit_transaction(Duration::from_secs(60))
                })();
                match ended {
                    Ok(()) => {
                        committed += 1;
                        done.fetch_add(batch.len(), SeqCst);
                    }
                    Err(e) => {
                        // Abortable: the batch is read again from the
                        // committed offsets.
                        aborted += 1;
                        eprintln!("transaction not committed: {e}");
                        p.abort_transaction(Duration::from_secs(60))
                            .expect("an abortable error aborts");
                        rewind(&consumer);
                    }
                }
            }
            (committed, aborted)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let wait_for = |n: usize| {
        while done.load(std::sync::atomic::Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the loop stalled at {done:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(N / 4);
    let dead = coordinator_of(c.ports[0].0, "t-xloop");
    c.kill9(dead);
    let at_kill = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        at_kill < N,
        "the loop was still running when its coordinator died"
    );
    std::thread::sleep(Duration::from_secs(3));
    c.start_node(dead);
    wait_for(N);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (committed, aborted) = looper.join().unwrap();
    eprintln!(
        "{committed} transactions committed, {aborted} aborted, {at_kill} records done at the kill"
    );
    let out = values(&bs, "x-out", 3, true, Duration::from_secs(3));
    let distinct: HashSet<&String> = out.iter().collect();
    assert_eq!(
        distinct.len(),
        N,
        "every input reached the output ({committed} transactions, {aborted} aborted)"
    );
    assert_eq!(out.len(), N, "and only once");
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), N);
}

#[test]
fn hand_backs_in_a_cluster_transaction_are_held_only_when_it_commits() {
    let c = TestCluster::start_with(3, &["--offsets-topic-num-partitions", "3"]);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bs = c.bootstrap();
    rt().block_on(async {
        create_with(
            &bs,
            "cjobs",
            1,
            3,
            &[("retry.max.attempts", "3"), ("retry.backoff.ms", "300")],
        )
        .await;
    });
    // Ids whose coordinators are spread over the brokers: the hand-back
    // reaches its coordinator from the retry topic's leader, here or not.
    let ids: Vec<String> = (0..3).map(|i| format!("t-cretry-{i}")).collect();
    let owners: HashSet<usize> = ids
        .iter()
        .map(|id| coordinator_of(c.ports[0].0, id))
        .collect();
    for id in &ids {
        let p = txn_producer(&bs, id, &[]);
        p.begin_transaction().unwrap();
        send(&p, "cjobs.retry", "a", &format!("aborted {id}"));
        p.flush(T).unwrap();
        p.abort_transaction(T).unwrap();
        p.begin_transaction().unwrap();
        send(&p, "cjobs.retry", "c", &format!("committed {id}"));
        send(&p, "cjobs", "c", &format!("output {id}"));
        p.commit_transaction(T).unwrap();
    }
    // Held in `__retry` at each commit, delivered after the backoff.
    let want: HashSet<String> = ids.iter().map(|id| format!("committed {id}")).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < want.len() && Instant::now() < deadline {
        got = values(&bs, "cjobs.retry", 1, true, Duration::from_secs(2));
    }
    assert_eq!(got.len(), 3, "{got:?} (coordinators on nodes {owners:?})");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), want);
    let out = values(&bs, "cjobs", 1, true, Duration::from_secs(1));
    assert_eq!(out.len(), 3, "{out:?}");
}

#[test]
fn a_transaction_spans_partitions_that_its_coordinator_holds_no_replica_of() {
    let c = TestCluster::start_with(3, &["--offsets-topic-num-partitions", "3"]);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bs = c.bootstrap();
    // One replica each, spread over the brokers: the coordinator holds at
    // most one of them.
    rt().block_on(async {
        create_with(&bs, "single", 3, 1, &[]).await;
    });
    let p = txn_producer(&bs, "t-single", &[]);
    txn_rounds(&p, "single", 30, &[(0, true), (1, false)]);
    let committed = values(&bs, "single", 3, true, Duration::from_secs(2));
    let want: HashSet<String> = (0..30).map(|i| format!("r0-{i}")).collect();
    assert_eq!(committed.len(), 30, "{committed:?}");
    assert_eq!(committed.into_iter().collect::<HashSet<_>>(), want);
}

#[test]
fn the_transaction_state_is_compacted_and_replays_after_a_kill_9() {
    // One voter: its internal topics have one replica.
    let mut c = TestCluster::start_with(
        1,
        &[
            "--offsets-topic-num-partitions",
            "1",
            "--log-cleaner-backoff-ms",
            "200",
        ],
    );
    c.agreed(&[0], None, Duration::from_secs(30));
    let bs = c.bootstrap();
    rt().block_on(create_topic(&bs, "cts", 1, &[]));
    let p = txn_producer(&bs, "t-compact", &[]);
    // Small segments, so that the cleaner has sealed ones to compact.
    rt().block_on(async {
        let cfg = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(
            "__transaction_state",
        ))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "2048")
        .set("min.cleanable.dirty.ratio", "0.01");
        for r in admin(&bs)
            .alter_configs([&cfg], &rdkafka::admin::AdminOptions::new())
            .await
            .unwrap()
        {
            r.unwrap();
        }
    });
    for i in 0..150 {
        p.begin_transaction().unwrap();
        send(&p, "cts", "k", &format!("v{i}"));
        p.commit_transaction(T).unwrap();
    }
    let http = SocketAddr::from(([127, 0, 0, 1], c.ports[0].1));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, body) = http_get(http, "/api/status", &[]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let removed = v["log_cleaner"]["records_removed"].as_u64().unwrap_or(0);
        if removed >= 300 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted: {}",
            v["log_cleaner"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The compacted state replays: the producer goes on at its epoch.
    drop(p);
    let p = txn_producer(&bs, "t-compact", &[]);
    c.kill9(0);
    c.start_node(0);
    c.agreed(&[0], None, Duration::from_secs(30));
    p.begin_transaction().unwrap();
    send(&p, "cts", "k", "after");
    p.commit_transaction(Duration::from_secs(60)).unwrap();
    let committed = values(&bs, "cts", 1, true, Duration::from_secs(2));
    assert_eq!(committed.len(), 151);
    assert_eq!(committed.last().map(String::as_str), Some("after"));
}
