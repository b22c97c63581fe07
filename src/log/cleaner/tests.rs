//! Tests of the log cleaner: a model-based property test (latest value per
//! key, offsets kept, tombstones by their rule, across reopening), crashes
//! at each step of a pass, reads inside removed ranges, a full offset map.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use proptest::prelude::*;

use super::*;
use crate::log::records::{decode_all, encode_batch, plain_record};
use crate::log::LogConfig;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        segment_ms: 1000,
        index_interval_bytes: 64,
        compact: true,
        keys_required: true,
        delete_retention: false,
        delete_retention_ms: 10_000,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, now: i64) -> PartitionLog {
    PartitionLog::open(dir, config(), now).unwrap()
}

/// A batch of `(key, value)` records (`None`: a tombstone).
fn batch(recs: &[(u8, Option<u32>)], c: Compression) -> Bytes {
    let rs: Vec<_> = recs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            plain_record(
                i as i64,
                1000,
                Some(Bytes::from(format!("key-{k}"))),
                v.map(|v| Bytes::from(format!("value-{v}"))),
                &[],
            )
        })
        .collect();
    encode_batch(&rs, c).unwrap()
}

type Rec = (i64, Vec<u8>, Option<Vec<u8>>);

/// Every record of the log from its start: (offset, key, value).
fn read_all(log: &PartitionLog) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.end_offset() {
        let r = log.read(next, 1 << 20, true).unwrap();
        assert!(
            !r.records.is_empty(),
            "nothing read at {next} below the end"
        );
        for set in decode_all(&r.records).unwrap() {
            for rec in set.records {
                out.push((
                    rec.offset,
                    rec.key.map(|k| k.to_vec()).unwrap_or_default(),
                    rec.value.map(|v| v.to_vec()),
                ));
            }
        }
        next = crate::log::records::whole_batches(&r.records).1.unwrap();
    }
    out
}

fn clean(log: &PartitionLog, now: i64) -> CleanStats {
    log.clean(now, i64::MAX, &[], &CleanerOptions::default())
        .unwrap()
}

/// What every read must show against the model of appended records.
fn check(log: &PartitionLog, model: &[Rec], dir: &Path) {
    check_as(log, model, dir, false);
}

/// [`check`]; after a crash (`crashed`) a pass may have swapped groups in
/// without moving the checkpoint, so dirty records may be gone too.
fn check_as(log: &PartitionLog, model: &[Rec], dir: &Path, crashed: bool) {
    let got = read_all(log);
    let by_offset: BTreeMap<i64, &Rec> = model.iter().map(|r| (r.0, r)).collect();
    for w in got.windows(2) {
        assert!(w[0].0 < w[1].0, "offsets increase: {:?}", (w[0].0, w[1].0));
    }
    for r in &got {
        assert_eq!(by_offset.get(&r.0), Some(&r), "a record keeps its offset");
    }
    let cleaned_to = Checkpoint::read(dir).map_or(0, |c| c.cleaned_to);
    let present: std::collections::HashSet<i64> = got.iter().map(|r| r.0).collect();
    let mut latest: BTreeMap<&[u8], &Rec> = BTreeMap::new();
    for r in model {
        latest.insert(&r.1, r);
    }
    for r in latest.values() {
        if r.2.is_some() {
            assert!(present.contains(&r.0), "latest value of a key kept: {r:?}");
        }
    }
    for r in model {
        if r.0 >= cleaned_to && !crashed {
            assert!(present.contains(&r.0), "a dirty record stays: {r:?}");
        }
    }
    for r in &got {
        if r.0 < cleaned_to {
            let newer = model
                .iter()
                .any(|m| m.1 == r.1 && m.0 > r.0 && m.0 < cleaned_to);
            assert!(!newer, "an older record in the cleaned part is gone: {r:?}");
        }
        // No record outlives a later tombstone or value it was superseded
        // by, once that one is gone.
        let later = model.iter().filter(|m| m.1 == r.1 && m.0 > r.0).count();
        if later > 0 {
            assert!(
                got.iter().any(|g| g.1 == r.1 && g.0 > r.0),
                "an older record is never left alone: {r:?}"
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Records of one batch: key and value (`None` a tombstone).
    Append(Vec<(u8, Option<u32>)>, bool),
    /// Time passes, in ms.
    Wait(u16),
    Clean,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop::collection::vec((0u8..8, prop::option::weighted(0.8, 0u32..1000)), 1..4),
            any::<bool>()
        )
            .prop_map(|(r, z)| Op::Append(r, z)),
        2 => (0u16..6000).prop_map(Op::Wait),
        2 => Just(Op::Clean),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn compaction_keeps_the_latest_record_of_each_key(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut now = 1_000_000i64;
        let mut log = open(dir.path(), now);
        let mut model: Vec<Rec> = Vec::new();
        // When each tombstone may first go: the pass that cleaned past it
        // plus delete.retention.ms.
        for op in ops {
            match op {
                Op::Append(recs, zstd) => {
                    let c = if zstd { Compression::Zstd } else { Compression::None };
                    let info = log.append(&batch(&recs, c), now).unwrap();
                    for (i, (k, v)) in recs.iter().enumerate() {
                        model.push((
                            info.base_offset + i as i64,
                            format!("key-{k}").into_bytes(),
                            v.map(|v| format!("value-{v}").into_bytes()),
                        ));
                    }
                }
                Op::Wait(ms) => now += i64::from(ms),
                Op::Clean => {
                    let before: Vec<Rec> = read_all(&log);
                    let horizon = Checkpoint::read(dir.path())
                        .unwrap_or_default()
                        .tombstone_horizon(now, config().delete_retention_ms);
                    clean(&log, now);
                    check(&log, &model, dir.path());
                    // Tombstones go only past the horizon of the passes
                    // before this one.
                    let after: std::collections::HashSet<i64> =
                        read_all(&log).iter().map(|r| r.0).collect();
                    for r in before.iter().filter(|r| r.2.is_none() && !after.contains(&r.0)) {
                        let superseded = model.iter().any(|m| m.1 == r.1 && m.0 > r.0);
                        prop_assert!(superseded || r.0 < horizon, "tombstone {r:?} went early");
                    }
                }
                Op::Reopen => {
                    drop(log);
                    log = open(dir.path(), now);
                    check(&log, &model, dir.path());
                }
            }
        }
        // In the end every pass together leaves one record per key in the
        // cleaned part, and nothing but the latest.
        now += 2_000;
        log.append(&batch(&[(200, Some(0))], Compression::None), now).unwrap();
        model.push((log.end_offset() - 1, b"key-200".to_vec(), Some(b"value-0".to_vec())));
        clean(&log, now);
        check(&log, &model, dir.path());
        drop(log);
        let log = open(dir.path(), now);
        check(&log, &model, dir.path());
    }
}

/// A log with keys 0..4 updated many times over several segments, the last
/// update of key 3 a tombstone; returns the model.
fn fill(log: &PartitionLog, now: i64) -> Vec<Rec> {
    let mut model = Vec::new();
    for round in 0..30u32 {
        let recs: Vec<(u8, Option<u32>)> = (0..4u8)
            .map(|k| (k, (round != 29 || k != 3).then_some(round)))
            .collect();
        let info = log.append(&batch(&recs, Compression::Lz4), now).unwrap();
        for (i, (k, v)) in recs.iter().enumerate() {
            model.push((
                info.base_offset + i as i64,
                format!("key-{k}").into_bytes(),
                v.map(|v| format!("value-{v}").into_bytes()),
            ));
        }
    }
    // An active segment of its own.
    let info = log
        .append(&batch(&[(9, Some(1))], Compression::None), now + 5_000)
        .unwrap();
    model.push((
        info.base_offset,
        b"key-9".to_vec(),
        Some(b"value-1".to_vec()),
    ));
    model
}

#[test]
fn a_pass_keeps_the_latest_value_per_key_and_reads_skip_removed_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_000_000;
    let log = open(dir.path(), now);
    let model = fill(&log, now);
    let segments = log.segment_count();
    assert!(segments > 4, "{segments} segments");
    let held = log.read(0, 1 << 20, true).unwrap().records;
    let s = clean(&log, now + 5_000);
    assert!(s.groups_swapped > 0 && s.records_removed > 100, "{s:?}");
    check(&log, &model, dir.path());
    let got = read_all(&log);
    // One record per key (the tombstone of key 3 stays for now), and key 9.
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[3].2, None);
    // A read held across the swap still sees the old bytes.
    assert!(!decode_all(&held).unwrap().is_empty());
    // A fetch inside a removed range returns the next kept batch.
    let r = log.read(5, 1 << 20, true).unwrap();
    let first = decode_all(&r.records).unwrap()[0].records[0].offset;
    assert_eq!(first, got[0].0);
    assert!(first > 5);
    // Size accounting follows the files.
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let active_pre = log.size_bytes();
    assert!(
        on_disk <= active_pre + (1 << 20),
        "{on_disk} vs {active_pre}"
    );
    // Nothing dirty: a second pass changes nothing.
    let s2 = clean(&log, now + 6_000);
    assert_eq!(s2.groups_swapped, 0, "{s2:?}");
    // The tombstone goes once delete.retention.ms has passed since the
    // pass that cleaned past it, and the next pass runs.
    log.append(&batch(&[(9, Some(2))], Compression::None), now + 20_000)
        .unwrap();
    clean(&log, now + 20_000);
    let got = read_all(&log);
    assert!(got.iter().all(|r| r.1 != b"key-3"), "{got:?}");
    assert!(log.segment_count() < 4, "groups merged segments");
    drop(log);
    let log = open(dir.path(), now + 20_000);
    assert!(read_all(&log).iter().all(|r| r.1 != b"key-3"));
}

#[test]
fn a_crash_at_any_step_of_a_pass_leaves_a_log_that_opens_whole() {
    for step in ["mapped", "cleaned", "swap", "deleted", "swapped"] {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_000_000;
        let log = open(dir.path(), now);
        let model = fill(&log, now);
        CRASH_AT.with(|c| c.set(Some(step)));
        let r = log.clean(now + 5_000, i64::MAX, &[], &CleanerOptions::default());
        CRASH_AT.with(|c| c.set(None));
        assert!(r.is_err(), "{step}: the pass stops");
        drop(log);
        let names = |d: &Path| -> Vec<String> {
            std::fs::read_dir(d)
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        };
        let before = names(dir.path());
        let log = open(dir.path(), now + 5_000);
        let after = names(dir.path());
        assert!(
            after
                .iter()
                .all(|n| !n.ends_with(".cleaned") && !n.ends_with(".swap")),
            "{step}: {after:?}"
        );
        if step == "swap" || step == "deleted" {
            assert!(
                before.iter().any(|n| n.ends_with(".swap")),
                "{step}: {before:?}"
            );
        }
        // Every record is the original or gone as compaction allows, and
        // every latest value is there.
        check_as(&log, &model, dir.path(), true);
        // The next pass finishes the job.
        clean(&log, now + 6_000);
        assert_eq!(read_all(&log).len(), 5, "{step}");
        drop(log);
        let log = open(dir.path(), now + 6_000);
        assert_eq!(read_all(&log).len(), 5, "{step}");
        check(&log, &model, dir.path());
    }
}

#[test]
fn a_full_offset_map_cleans_up_to_where_it_reached() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_000_000;
    let mut cfg = config();
    cfg.segment_bytes = 64 << 10;
    let log = PartitionLog::open(dir.path(), cfg, now).unwrap();
    let mut model = Vec::new();
    // 3000 keys, twice: more than a minimal map (921 keys) holds.
    for round in 0..2u32 {
        for chunk in 0..30u32 {
            let recs: Vec<(u8, Option<u32>)> = (0..100u32)
                .map(|i| (0u8, Some(round * 10_000 + chunk * 100 + i)))
                .collect();
            let rs: Vec<_> = recs
                .iter()
                .enumerate()
                .map(|(i, (_, v))| {
                    let k = chunk * 100 + i as u32;
                    plain_record(
                        i as i64,
                        1000,
                        Some(Bytes::from(format!("key-{k}"))),
                        v.map(|v| Bytes::from(format!("value-{v}"))),
                        &[],
                    )
                })
                .collect();
            let info = log
                .append(&encode_batch(&rs, Compression::None).unwrap(), now)
                .unwrap();
            for (i, (_, v)) in recs.iter().enumerate() {
                let k = chunk * 100 + i as u32;
                model.push((
                    info.base_offset + i as i64,
                    format!("key-{k}").into_bytes(),
                    v.map(|v| format!("value-{v}").into_bytes()),
                ));
            }
        }
    }
    log.append(&batch(&[(1, Some(1))], Compression::None), now + 5_000)
        .unwrap();
    model.push((
        log.end_offset() - 1,
        b"key-1".to_vec(),
        Some(b"value-1".to_vec()),
    ));
    let opts = CleanerOptions {
        dedupe_buffer_bytes: 0,
        ..CleanerOptions::default()
    };
    let mut passes = 0;
    loop {
        let s = log.clean(now + 5_000, i64::MAX, &[], &opts).unwrap();
        check(&log, &model, dir.path());
        passes += 1;
        if s.cleaned_to >= 6000 || passes > 20 {
            break;
        }
        assert!(s.map_keys <= 1024);
    }
    assert!(passes > 2, "{passes} passes");
    let got = read_all(&log);
    assert_eq!(got.len(), 3001, "one record per key, and the active one");
}

#[test]
fn aborted_transactions_go_and_the_upper_bound_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_000_000;
    let log = open(dir.path(), now);
    let model = fill(&log, now);
    // Nothing at or past the upper bound is cleaned: a bound inside the
    // first segment leaves everything.
    let s = log
        .clean(now + 5_000, 3, &[], &CleanerOptions::default())
        .unwrap();
    assert_eq!(s.groups_swapped, 0);
    assert_eq!(read_all(&log).len(), model.len());
    // Aborted ranges only touch transactional batches: these are not.
    let aborted = [AbortedTxn {
        producer_id: -1,
        first_offset: 0,
        last_offset: 1000,
    }];
    log.clean(now + 5_000, i64::MAX, &aborted, &CleanerOptions::default())
        .unwrap();
    assert_eq!(read_all(&log).len(), 5);
}

#[test]
fn the_checkpoint_folds_old_passes_and_is_clipped_by_a_cut() {
    let mut c = Checkpoint::default();
    c.record_pass(10, 1_000, 100);
    c.record_pass(20, 1_050, 100);
    c.record_pass(30, 1_200, 100);
    // The first two are past retention at 1200: one of them is kept.
    assert_eq!(
        c.passes,
        vec![
            files::Pass {
                end: 20,
                time_ms: 1_050
            },
            files::Pass {
                end: 30,
                time_ms: 1_200
            }
        ]
    );
    assert_eq!(c.tombstone_horizon(1_200, 100), 20);
    assert_eq!(c.tombstone_horizon(1_100, 100), i64::MIN);
    assert!(c.clip(25));
    assert_eq!(c.cleaned_to, 25);
    assert_eq!(c.passes.len(), 1);
    assert!(!c.clip(25));
}

/// `batch` as a transactional batch of producer `pid` from sequence `seq`.
fn txn_batch(recs: &[(u8, Option<u32>)], pid: i64, seq: i32) -> Vec<u8> {
    use crate::log::batch;
    let mut b = batch(recs, Compression::None).to_vec();
    b[batch::field::ATTRIBUTES..batch::field::ATTRIBUTES + 2]
        .copy_from_slice(&0x10i16.to_be_bytes());
    batch::set_producer(&mut b, pid, 0, seq);
    batch::update_crc(&mut b);
    b
}

#[test]
fn records_of_aborted_transactions_go_and_committed_ones_are_compacted() {
    use crate::log::txn::Marker;
    let dir = tempfile::tempdir().unwrap();
    let now = 1_000_000;
    let log = open(dir.path(), now);
    log.append(&txn_batch(&[(1, Some(10)), (2, Some(20))], 1, 0), now)
        .unwrap();
    log.append(&txn_batch(&[(1, Some(99)), (3, Some(98))], 2, 0), now)
        .unwrap();
    log.append(&batch(&[(2, Some(21))], Compression::None), now)
        .unwrap();
    log.append_marker(1, 0, Marker::Commit, 0, now).unwrap();
    // An open transaction of producer 3 keeps what follows from the pass.
    log.append(&txn_batch(&[(1, Some(50))], 3, 0), now).unwrap();
    log.append_marker(2, 0, Marker::Abort, 0, now).unwrap();
    for i in 0..12 {
        log.append(&batch(&[(5, Some(i))], Compression::None), now)
            .unwrap();
    }
    let stable = log.last_stable_offset();
    assert_eq!(stable, 6, "producer 3's transaction is open");
    let aborted = log.aborted_transactions();
    log.clean(now + 5_000, stable, &aborted, &CleanerOptions::default())
        .unwrap();
    let values = |log: &PartitionLog| -> Vec<(String, Option<String>)> {
        read_all(log)
            .into_iter()
            .filter(|r| r.1.starts_with(b"key-"))
            .map(|r| {
                (
                    String::from_utf8(r.1).unwrap(),
                    r.2.map(|v| String::from_utf8(v).unwrap()),
                )
            })
            .collect()
    };
    let got = values(&log);
    let key = |k: &str| -> Vec<Option<String>> {
        got.iter()
            .filter(|r| r.0 == k)
            .map(|r| r.1.clone())
            .collect()
    };
    // Key 1: the aborted 99 is gone; the committed 10 stays, and the open
    // transaction's 50 lies past the stable offset.
    assert_eq!(
        key("key-1"),
        vec![Some("value-10".into()), Some("value-50".into())]
    );
    assert_eq!(key("key-2"), vec![Some("value-21".into())]);
    assert!(key("key-3").is_empty(), "aborted data is dropped");
    // read_committed reads still learn the abort, and stop at the open
    // transaction.
    let r = log.read_committed(0, 1 << 20, true).unwrap();
    assert_eq!(r.last_stable_offset, 6);
    assert_eq!(r.aborted, aborted);
}
