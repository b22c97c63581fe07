//! Log compaction seen by a real client: a compacted topic keeps exactly
//! the latest value of each key, drops tombstones after
//! `delete.retention.ms`, keeps both across a restart and a kill -9 in the
//! middle of a pass, and a fetch inside a removed range gets the next
//! records.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::*;

const TOPIC: &str = "compacted";
const KEYS: usize = 40;
const UPDATES: usize = 15;
/// Keys whose last record is a tombstone.
const DELETED: usize = 8;

fn flags() -> Vec<&'static str> {
    vec![
        "--log-cleaner-backoff-ms",
        "100",
        "--recovery-checkpoint-interval-ms",
        "100",
    ]
}

async fn create(bs: &str) {
    create_topic(
        bs,
        TOPIC,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "2048"),
            ("segment.ms", "200"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "1500"),
        ],
    )
    .await;
}

async fn send(p: &FutureProducer, key: &str, value: Option<&str>) -> i64 {
    let mut r = FutureRecord::<str, str>::to(TOPIC).key(key);
    if let Some(v) = value {
        r = r.payload(v);
    }
    p.send(r, Duration::from_secs(10)).await.unwrap().offset
}

/// Every update of every key, then tombstones; returns the latest value
/// per key (`None`: deleted) and the end offset.
async fn produce(bs: &str) -> BTreeMap<String, Option<String>> {
    let p = producer(bs, &[("acks", "all"), ("linger.ms", "0")]);
    let mut latest = BTreeMap::new();
    for u in 0..UPDATES {
        for k in 0..KEYS {
            let (key, value) = (format!("k{k}"), format!("v{u}-{k}-{}", "x".repeat(20)));
            send(&p, &key, Some(&value)).await;
            latest.insert(key, Some(value));
        }
    }
    for k in 0..DELETED {
        let key = format!("k{k}");
        send(&p, &key, None).await;
        latest.insert(key, None);
    }
    latest
}

/// Seals what was written: after `segment.ms` a new record starts a new
/// segment, so everything before it can be cleaned.
async fn seal(bs: &str, n: usize) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = producer(bs, &[("acks", "all")]);
    send(&p, &format!("sentinel-{n}"), Some("s")).await;
}

/// Every record from `from` to the high watermark: (offset, key, value).
fn read_from(bs: &str, from: i64) -> Vec<(i64, String, Option<String>)> {
    let c = consumer(bs);
    let (_, high) = c
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(from))
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out: Vec<(i64, String, Option<String>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.last().is_none_or(|(o, ..)| o + 1 < high) && Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
            )),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

/// The records of the produced keys as a map, when there is exactly one
/// per key (tombstones counted only with `tombstones`).
fn compacted_view(
    records: &[(i64, String, Option<String>)],
) -> Option<BTreeMap<String, Option<String>>> {
    let mut seen = BTreeMap::new();
    for (_, k, v) in records
        .iter()
        .filter(|(_, k, _)| !k.starts_with("sentinel"))
    {
        if seen.insert(k.clone(), v.clone()).is_some() {
            return None;
        }
    }
    Some(seen)
}

/// Waits until the log reads as exactly the latest record of each key;
/// with `tombstones_gone`, without the deleted keys at all.
fn wait_compacted(
    bs: &str,
    latest: &BTreeMap<String, Option<String>>,
    tombstones_gone: bool,
) -> Vec<(i64, String, Option<String>)> {
    let want: BTreeMap<String, Option<String>> = latest
        .iter()
        .filter(|(_, v)| !tombstones_gone || v.is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = read_from(bs, 0);
        let view = compacted_view(&got);
        if view.as_ref() == Some(&want) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted in time: {} records, view {:?}",
            got.len(),
            view.map(|v| v.len())
        );
        // Never an older value alone: each key's last record read is its
        // latest (or gone, for a deleted key).
        let mut last = BTreeMap::new();
        for (_, k, v) in &got {
            last.insert(k.clone(), v.clone());
        }
        for (k, v) in latest {
            match (v, last.get(k)) {
                (Some(v), got) => assert_eq!(got, Some(&Some(v.clone())), "latest of {k}"),
                (None, got) => assert!(got.is_none_or(Option::is_none), "{k} deleted"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn partition_dir(data: &Path) -> std::path::PathBuf {
    data.join(format!("{TOPIC}-0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildBroker::start(dir.path(), &flags());
    let bs = child.bootstrap();
    create(&bs).await;
    let latest = produce(&bs).await;
    seal(&bs, 0).await;
    let b = bs.clone();
    let l = latest.clone();
    let got = tokio::task::spawn_blocking(move || wait_compacted(&b, &l, false))
        .await
        .unwrap();
    // A fetch inside a removed range returns the next kept record.
    let first_kept = got[0].0;
    assert!(first_kept > 5, "the first records were removed: {got:?}");
    let b = bs.clone();
    let from_gap = tokio::task::spawn_blocking(move || read_from(&b, 3))
        .await
        .unwrap();
    assert_eq!(from_gap.first().map(|r| r.0), Some(first_kept));
    let b = bs.clone();
    let inside = first_kept - 1;
    let from_gap = tokio::task::spawn_blocking(move || read_from(&b, inside))
        .await
        .unwrap();
    assert_eq!(from_gap.first().map(|r| r.0), Some(first_kept));

    // Tombstones go after delete.retention.ms, at the next pass (which new
    // dirty records start).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    seal(&bs, 1).await;
    seal(&bs, 2).await;
    let b = bs.clone();
    let l = latest.clone();
    tokio::task::spawn_blocking(move || wait_compacted(&b, &l, true))
        .await
        .unwrap();
    let (status, _, body) = http_get(
        format!("127.0.0.1:{}", child.http_port).parse().unwrap(),
        "/api/metrics",
        &[],
    );
    assert_eq!(status, 200);
    assert!(body.contains("weir_log_cleaner_passes_total"));
    assert!(body.contains("weir_log_cleaner_dirty_ratio{topic=\"compacted\",partition=\"0\"}"));

    // A restart reads the same.
    assert!(child.terminate().success());
    let child = ChildBroker::start(dir.path(), &flags());
    let bs = child.bootstrap();
    let l = latest.clone();
    tokio::task::spawn_blocking(move || wait_compacted(&bs, &l, true))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_pass_loses_no_key() {
    for step in ["cleaned", "swap", "deleted"] {
        let dir = tempfile::tempdir().unwrap();
        // Written with the cleaner off; a parked pass may hold the
        // partition's lock.
        let mut off = flags();
        off.extend(["--log-cleaner-enable", "false"]);
        let mut child = ChildBroker::start(dir.path(), &off);
        let bs = child.bootstrap();
        create(&bs).await;
        let latest = produce(&bs).await;
        seal(&bs, 0).await;
        // Let a recovery point cover the sealed segments.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(child.terminate().success());
        let mut child =
            ChildBroker::start_env(dir.path(), &flags(), &[("WEIR_TEST_CLEANER_PAUSE", step)]);
        // The pass parks at the step; its files show it.
        let pdir = partition_dir(dir.path());
        let suffix = if step == "cleaned" {
            ".cleaned"
        } else {
            ".swap"
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_dir(&pdir)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(suffix))
        {
            assert!(
                Instant::now() < deadline,
                "{step}: no pass reached the step"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill9();
        let child = ChildBroker::start(dir.path(), &flags());
        let bs = child.bootstrap();
        let l = latest.clone();
        tokio::task::spawn_blocking(move || wait_compacted(&bs, &l, false))
            .await
            .unwrap();
    }
}
