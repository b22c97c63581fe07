//! Tests of what replication needs from a partition log: the high
//! watermark, replica appends, leader epochs and tail truncation.

use super::*;
use batch::tests::make_batch;
use futures::FutureExt;
use proptest::prelude::*;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, small_config(), 0).unwrap()
}

/// (base offset, record count, base timestamp, leader epoch) of every batch
/// from `from` up to `upto`, read through [`PartitionLog::read_upto`].
fn batches(log: &PartitionLog, from: i64, upto: i64) -> Vec<(i64, i32, i64, i32)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < upto {
        let r = log.read_upto(next, 700, true, upto).unwrap();
        assert!(!r.records.is_empty(), "nothing at {next} below {upto}");
        for (pos, h) in batch::split_batches(&r.records).unwrap() {
            let epoch = batch::partition_leader_epoch(&r.records[pos..]);
            out.push((h.base_offset, h.records_count, h.base_timestamp, epoch));
            next = h.last_offset() + 1;
        }
    }
    out
}

/// Everything a leader's log holds, as one buffer of batches.
fn all_bytes(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.end_offset() {
        let r = log.read_upto(next, 1 << 20, true, i64::MAX).unwrap();
        for (_, h) in batch::split_batches(&r.records).unwrap() {
            next = h.last_offset() + 1;
        }
        out.extend_from_slice(&r.records);
    }
    out
}

fn idempotent(n: i32, pid: i64, seq: i32) -> Vec<u8> {
    let mut b = make_batch(n, 1000);
    batch::set_producer(&mut b, pid, 0, seq);
    batch::update_crc(&mut b);
    b
}

#[test]
fn a_single_node_log_keeps_the_high_watermark_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(&make_batch(3, 1), 0).unwrap();
    assert_eq!(log.high_watermark(), 3);
    assert_eq!(log.read(0, 1000, true).unwrap().high_watermark, 3);
    log.set_high_watermark(1);
    assert_eq!(log.high_watermark(), 3, "it never moves backwards");
    drop(log);
    assert_eq!(open(dir.path()).high_watermark(), 3);
}

#[test]
fn a_replicated_log_serves_consumers_only_below_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.set_replicated(true);
    for _ in 0..4 {
        log.append(&make_batch(2, 1), 0).unwrap();
    }
    assert_eq!((log.end_offset(), log.high_watermark()), (8, 0));
    let r = log.read(0, 1 << 20, true).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.high_watermark, 0);
    log.set_high_watermark(4);
    let r = log.read(0, 1 << 20, true).unwrap();
    let got: Vec<i64> = batch::split_batches(&r.records)
        .unwrap()
        .iter()
        .map(|(_, h)| h.base_offset)
        .collect();
    assert_eq!(got, vec![0, 2]);
    assert_eq!(r.high_watermark, 4);
    // Between the high watermark and the end: in range, nothing to read.
    assert!(log.read(6, 100, true).unwrap().records.is_empty());
    assert!(log.read(8, 100, true).unwrap().records.is_empty());
    assert!(matches!(
        log.read(9, 100, true),
        Err(LogError::OffsetOutOfRange { end: 8, .. })
    ));
    // A follower reads to the end.
    assert_eq!(batches(&log, 0, log.end_offset()).len(), 4);
    let r = log.read_upto(0, 1 << 20, true, 6).unwrap();
    assert_eq!(batch::split_batches(&r.records).unwrap().len(), 3);
    assert_eq!(r.high_watermark, 4);
    log.set_high_watermark(100);
    assert_eq!(log.high_watermark(), 8, "clamped to the end");
    log.set_high_watermark(5);
    assert_eq!(log.high_watermark(), 8, "never backwards");
    drop(log);
    let log = open(dir.path());
    log.set_replicated(true);
    assert_eq!(log.high_watermark(), 8, "opened at the end");
}

#[test]
fn delete_records_stops_at_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.set_replicated(true);
    log.append(&make_batch(5, 1), 0).unwrap();
    log.set_high_watermark(3);
    assert!(matches!(
        log.delete_records_before(4),
        Err(LogError::OffsetOutOfRange { end: 3, .. })
    ));
    assert_eq!(log.delete_records_before(-1).unwrap(), 3);
}

#[tokio::test]
async fn a_moving_high_watermark_wakes_waiting_fetches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.set_replicated(true);
    log.append(&make_batch(2, 1), 0).unwrap();
    let waiting = log.next_append();
    tokio::pin!(waiting);
    waiting.as_mut().enable();
    log.set_high_watermark(0);
    assert!(waiting.as_mut().now_or_never().is_none(), "it did not move");
    log.set_high_watermark(2);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .unwrap();
}

#[test]
fn a_follower_copies_its_leaders_batches_exactly() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(ld.path());
    let mut cfg = small_config();
    cfg.log_append_time = true;
    leader.set_config(cfg);
    leader.append(&make_batch(3, 1), 10).unwrap();
    leader.set_leader_epoch(2);
    for i in 0..10 {
        leader.append(&idempotent(2, 7, i * 2), 20).unwrap();
    }
    let bytes = all_bytes(&leader);
    let follower = open(fd.path());
    follower.set_replicated(true);
    // Cut mid-batch, as a fetch at its byte limit is.
    let info = follower
        .append_replica(&bytes[..bytes.len() - 10], 99)
        .unwrap();
    assert_eq!((info.base_offset, info.records), (0, 21));
    assert_eq!(follower.end_offset(), 21);
    let rest = &bytes[all_bytes(&follower).len()..];
    follower.append_replica(rest, 99).unwrap();
    assert_eq!(all_bytes(&follower), bytes, "byte for byte");
    assert!(follower.segment_count() > 1, "rolled like an append");
    assert_eq!(follower.size_bytes(), leader.size_bytes());
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(follower.end_offset_for_epoch(1), Some((0, 3)));
    assert_eq!(follower.high_watermark(), 0, "learned from the leader");
    // Appending nothing, or a partial batch only, is no error.
    assert_eq!(follower.append_replica(&[], 0).unwrap().records, 0);
    assert_eq!(follower.append_replica(&bytes[..30], 0).unwrap().records, 0);
    // After a failover the producer's retry is a duplicate.
    follower.set_leader_epoch(3);
    let again = follower.append(&idempotent(2, 7, 18), 0).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.base_offset, 21);
    let next = follower.append(&idempotent(2, 7, 20), 0).unwrap();
    assert_eq!(next.base_offset, 23);
    assert_eq!(follower.last_epoch(), Some(3));
}

#[test]
fn replica_appends_must_follow_on_and_be_intact() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append_replica(&make_batch(2, 1), 0).unwrap();
    // A batch that starts below the end is refused.
    let mut b = make_batch(2, 1);
    batch::set_base_offset(&mut b, 1);
    assert!(matches!(
        log.append_replica(&b, 0),
        Err(LogError::NonContiguous {
            expected: 2,
            got: 1
        })
    ));
    assert_eq!(log.end_offset(), 2);
    // One past the end is taken: the leader's cleaner removed the records
    // between (offsets only grow).
    let mut gap = make_batch(2, 1);
    batch::set_base_offset(&mut gap, 5);
    log.append_replica(&gap, 0).unwrap();
    assert_eq!(log.end_offset(), 7);
    let mut bad = make_batch(2, 1);
    batch::set_base_offset(&mut bad, 7);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        log.append_replica(&bad, 0),
        Err(LogError::InvalidBatch(batch::BatchError::Crc { .. }))
    ));
    assert_eq!(log.end_offset(), 7);
    // The gap survives a restart (recovery takes offsets that jump).
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.end_offset(), 7);
}

#[test]
fn appends_stamp_the_leader_epoch_and_the_cache_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.last_epoch(), None);
    log.append(&make_batch(2, 1), 0).unwrap();
    log.set_leader_epoch(4);
    log.append(&make_batch(2, 1), 0).unwrap();
    log.append_internal(&make_batch(2, 1), 0).unwrap();
    log.set_leader_epoch(6);
    log.append(&make_batch(1, 1), 0).unwrap();
    let epochs: Vec<i32> = batches(&log, 0, 7).iter().map(|b| b.3).collect();
    assert_eq!(epochs, vec![0, 4, 4, 6]);
    let text = fs::read_to_string(dir.path().join(epochs::LEADER_EPOCH_FILE)).unwrap();
    assert_eq!(text, "0\n3\n0 0\n4 2\n6 6\n");
    assert_eq!(log.end_offset_for_epoch(5), Some((4, 6)));
    assert_eq!(log.end_offset_for_epoch(6), Some((6, 7)));
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.last_epoch(), Some(6));
    assert_eq!(log.end_offset_for_epoch(3), Some((0, 2)));
    assert_eq!(log.end_offset_for_epoch(-1), None);
}

#[test]
fn a_log_from_before_epochs_is_epoch_zero_and_a_lost_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for _ in 0..10 {
        log.append(&make_batch(3, 1), 0).unwrap();
    }
    log.delete_records_before(4).unwrap();
    drop(log);
    fs::remove_file(dir.path().join(epochs::LEADER_EPOCH_FILE)).unwrap();
    let log = open(dir.path());
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 30)));
    assert_eq!(log.epoch_entries()[0].start_offset, 4);
    log.set_leader_epoch(3);
    log.append(&make_batch(3, 1), 0).unwrap();
    log.set_leader_epoch(5);
    log.append(&make_batch(3, 1), 0).unwrap();
    let want = log.epoch_entries();
    drop(log);
    // Lost with epochs above zero in the log: the headers are walked.
    fs::remove_file(dir.path().join(epochs::LEADER_EPOCH_FILE)).unwrap();
    let log = open(dir.path());
    assert_eq!(log.epoch_entries(), want);
    assert_eq!(log.end_offset_for_epoch(4), Some((3, 33)));
    drop(log);
    // An epoch whose batches a crash lost is dropped on open.
    fs::write(
        dir.path().join(epochs::LEADER_EPOCH_FILE),
        "0\n4\n0 4\n3 30\n5 33\n9 36\n",
    )
    .unwrap();
    let log = open(dir.path());
    assert_eq!(log.last_epoch(), Some(5));
}

#[test]
fn truncating_inside_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    for _ in 0..5 {
        log.append(&make_batch(4, 1), 0).unwrap();
    }
    log.truncate_to(30).unwrap();
    assert_eq!(log.end_offset(), 20, "at or past the end: nothing");
    log.truncate_to(10).unwrap();
    assert_eq!(log.end_offset(), 8, "the batch holding 10 goes whole");
    assert_eq!(log.high_watermark(), 8);
    assert_eq!(batches(&log, 0, 8).len(), 2);
    assert!(log.read(9, 100, true).is_err());
    let info = log.append(&make_batch(1, 1), 0).unwrap();
    assert_eq!(info.base_offset, 8);
    drop(log);
    let log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    assert_eq!(log.end_offset(), 9);
    assert_eq!(batches(&log, 0, 9).len(), 3);
}

#[test]
fn truncating_across_segments_to_a_sealed_ones_middle() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..30 {
        log.append(&make_batch(5, i), 0).unwrap();
    }
    log.checkpoint().unwrap();
    let bases = log.segment_bases();
    assert!(bases.len() > 4);
    let target = bases[2] + 7;
    log.truncate_to(target).unwrap();
    assert_eq!(log.end_offset(), target - 2, "cut at the batch boundary");
    assert_eq!(log.segment_bases(), bases[..3].to_vec());
    assert!(!dir.path().join(checkpoint::RECOVERY_POINT_FILE).exists());
    for _ in 0..10 {
        log.append(&make_batch(3, 77), 0).unwrap();
    }
    let before = batches(&log, 0, log.end_offset());
    log.checkpoint().unwrap();
    drop(log);
    let log = open(dir.path());
    assert_eq!(batches(&log, 0, log.end_offset()), before);
    let ts: Vec<i64> = before.iter().map(|b| b.2).collect();
    let mut want: Vec<i64> = (0..11).collect();
    want.extend([77; 10]);
    assert_eq!(ts, want);
}

#[test]
fn truncating_then_following_a_new_leader() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let follower = open(fd.path());
    let leader = open(ld.path());
    for _ in 0..6 {
        let b = make_batch(4, 1);
        leader.append(&b, 0).unwrap();
        follower.append(&b, 0).unwrap();
    }
    // The follower took two more batches from the old leader in epoch 1.
    follower.set_leader_epoch(1);
    follower.append(&make_batch(4, 5), 0).unwrap();
    follower.append(&make_batch(4, 5), 0).unwrap();
    // The new leader (epoch 2) wrote something else.
    leader.set_leader_epoch(2);
    for _ in 0..3 {
        leader.append(&make_batch(2, 9), 0).unwrap();
    }
    let (epoch, end) = leader
        .end_offset_for_epoch(follower.last_epoch().unwrap())
        .unwrap();
    assert_eq!((epoch, end), (0, 24));
    follower.truncate_to(end).unwrap();
    assert_eq!(follower.last_epoch(), Some(0));
    let r = leader.read_upto(end, 1 << 20, true, i64::MAX).unwrap();
    follower.append_replica(&r.records, 0).unwrap();
    assert_eq!(all_bytes(&follower), all_bytes(&leader));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
}

#[test]
fn truncation_forgets_the_producer_batches_it_removed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..8 {
        log.append(&idempotent(2, 7, i * 2), 0).unwrap();
    }
    log.truncate_to(10).unwrap();
    // Batch seq 10 (offsets 10..12) went: its retry is appended again.
    let again = log.append(&idempotent(2, 7, 10), 0).unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.base_offset, 10);
    // One that stayed is still a duplicate.
    let dup = log.append(&idempotent(2, 7, 8), 0).unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.base_offset, 8);
}

#[test]
fn truncation_clamps_the_high_watermark_and_keeps_windows_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.set_replicated(true);
    for _ in 0..4 {
        log.append(&make_batch(4, 1), 0).unwrap();
    }
    log.set_high_watermark(12);
    // A window still on its way to a client while the file is cut.
    let held = log.read_upto(8, 1 << 20, true, 16).unwrap().records;
    let copy = held.to_vec();
    log.truncate_to(6).unwrap();
    assert_eq!((log.end_offset(), log.high_watermark()), (4, 4));
    assert_eq!(&held[..], &copy[..]);
    log.append(&make_batch(9, 3), 0).unwrap();
    assert_eq!(&held[..], &copy[..], "rewritten bytes are a new file");
    assert_eq!(batches(&log, 0, 13).len(), 2);
}

#[test]
fn truncating_below_a_start_inside_a_batch_restarts_the_log_empty() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for _ in 0..20 {
        log.append(&make_batch(5, 1), 0).unwrap();
    }
    log.delete_records_before(52).unwrap();
    log.truncate_to(0).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.end_offset(),
            log.segment_count()
        ),
        (52, 52, 1)
    );
    assert!(log.read(52, 100, true).unwrap().records.is_empty());
    log.append(&make_batch(2, 1), 0).unwrap();
    drop(log);
    let log = open(dir.path());
    assert_eq!((log.log_start_offset(), log.end_offset()), (52, 54));
}

#[derive(Debug, Clone)]
enum Op {
    /// Records, and whether a new leader epoch starts with the batch.
    Append(i32, bool),
    /// Where to truncate, as a fraction of the log.
    Truncate(u16),
    Reopen,
    Checkpoint,
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..12i32, any::<bool>()).prop_map(|(n, e)| Op::Append(n, e)),
        2 => any::<u16>().prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Retention),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    /// Appends (client and replica), truncations, reopens, checkpoints and
    /// retention against a model: the batches' (base offset, count,
    /// timestamp, epoch), read back with `read_upto`, and the epoch cache.
    #[test]
    fn truncation_matches_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = small_config();
        cfg.retention_bytes = 1500;
        let mut log = PartitionLog::open(dir.path(), cfg.clone(), 0).unwrap();
        let mut model: Vec<(i64, i32, i64, i32)> = Vec::new();
        let mut start = 0i64;
        let mut epoch = 0i32;
        let mut stamp = 0i64;
        let end_of = |m: &Vec<(i64, i32, i64, i32)>| m.last().map_or(0, |b| b.0 + i64::from(b.1));
        for op in ops {
            match op {
                Op::Append(n, new_epoch) => {
                    if new_epoch {
                        epoch += 1;
                    }
                    stamp += 1;
                    let base = end_of(&model).max(start);
                    let mut b = make_batch(n, stamp);
                    if stamp % 2 == 0 {
                        log.set_leader_epoch(epoch);
                        log.append(&b, 0).unwrap();
                    } else {
                        batch::set_base_offset(&mut b, base);
                        batch::set_leader_epoch(&mut b, epoch);
                        log.append_replica(&b, 0).unwrap();
                    }
                    model.push((base, n, stamp, epoch));
                }
                Op::Truncate(x) => {
                    let end = end_of(&model).max(start);
                    let to = start + i64::from(x) % (end - start + 1);
                    log.truncate_to(to).unwrap();
                    model.retain(|b| b.0 + i64::from(b.1) <= to);
                    epoch += 1;
                }
                Op::Reopen => {
                    drop(log);
                    log = PartitionLog::open(dir.path(), cfg.clone(), 0).unwrap();
                }
                Op::Checkpoint => {
                    log.checkpoint().unwrap();
                }
                Op::Retention => {
                    log.apply_retention(0);
                    start = log.log_start_offset();
                    model.retain(|b| b.0 + i64::from(b.1) > start);
                }
            }
            let end = end_of(&model).max(start);
            prop_assert_eq!(log.end_offset(), end);
            prop_assert_eq!(log.log_start_offset(), start);
            prop_assert_eq!(log.high_watermark(), end);
            let got = batches(&log, start, end);
            prop_assert_eq!(&got, &model);
            // The cache: each epoch's first batch (from the log start).
            let mut want: Vec<(i32, i64)> = Vec::new();
            for b in &model {
                if want.last().is_none_or(|w| w.0 < b.3) {
                    want.push((b.3, b.0.max(start)));
                }
            }
            let cache: Vec<(i32, i64)> = log
                .epoch_entries()
                .iter()
                .map(|e| (e.epoch, e.start_offset))
                .collect();
            prop_assert_eq!(cache, want);
        }
    }
}

#[test]
fn a_follower_left_behind_the_leaders_log_start_starts_again_there() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let follower = open(fd.path());
    let leader = open(ld.path());
    for _ in 0..3 {
        let b = make_batch(4, 1);
        leader.append(&b, 0).unwrap();
        follower.append(&b, 0).unwrap();
    }
    // The leader goes on, then DeleteRecords passes the follower's end.
    for _ in 0..10 {
        leader.append(&make_batch(4, 1), 0).unwrap();
    }
    assert_eq!(leader.delete_records_before(30).unwrap(), 30);
    follower.restart_at(30).unwrap();
    assert_eq!(
        (
            follower.log_start_offset(),
            follower.end_offset(),
            follower.high_watermark()
        ),
        (30, 30, 30)
    );
    // The leader's log start is inside a batch (28..31): the follower
    // starts again at that batch's base, as it holds nothing yet.
    let r = leader.read_upto(30, 1 << 20, true, i64::MAX).unwrap();
    match follower.append_replica(&r.records, 0) {
        Err(LogError::NonContiguous {
            expected: 30,
            got: 28,
        }) => {}
        other => panic!("{other:?}"),
    }
    // The same fetched records go in after the restart (the leader would
    // refuse a fetch below its log start).
    follower.restart_at(28).unwrap();
    follower.append_replica(&r.records, 0).unwrap();
    while follower.end_offset() < leader.end_offset() {
        let r = leader
            .read_upto(follower.end_offset(), 1 << 20, true, i64::MAX)
            .unwrap();
        follower.append_replica(&r.records, 0).unwrap();
    }
    assert_eq!(
        batches(&follower, 30, 52),
        batches(&leader, 30, 52),
        "the same batches from the restart on"
    );
    // A log that holds records never restarts backwards.
    follower.restart_at(10).unwrap();
    assert_eq!(follower.end_offset(), 52);
    // The log start follows the leader's; so the log opens again.
    assert_eq!(follower.delete_records_before(30).unwrap(), 30);
    drop(follower);
    let again = open(fd.path());
    assert_eq!((again.log_start_offset(), again.end_offset()), (30, 52));
    assert!(
        again.read(10, 100, true).is_err(),
        "nothing below the start"
    );
}

#[test]
fn a_restart_cut_short_by_a_crash_leaves_a_log_that_opens_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        for _ in 0..5 {
            log.append(&make_batch(4, 1), 0).unwrap();
        }
        log.flush().unwrap();
    }
    // The crash came after the new segment was made, before the log start
    // was written and the old segments deleted.
    drop(Segment::create(dir.path(), 150, 0, 100).unwrap());
    let log = open(dir.path());
    assert_eq!((log.log_start_offset(), log.end_offset()), (0, 150));
    let r = log.read(150, 1000, true).unwrap();
    assert!(r.records.is_empty());
    // The leader's batches from 150 follow on; the log start then follows
    // the leader's.
    let mut b = make_batch(4, 1);
    batch::set_base_offset(&mut b, 150);
    batch::update_crc(&mut b);
    log.append_replica(&b, 0).unwrap();
    assert_eq!(log.end_offset(), 154);
    assert_eq!(log.delete_records_before(150).unwrap(), 150);
    drop(log);
    let log = open(dir.path());
    assert_eq!((log.log_start_offset(), log.end_offset()), (150, 154));
}
