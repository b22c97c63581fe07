//! Tests of the partition log: a model-based property test of appends,
//! reads, rolls and retention, and recovery after a torn tail.

use super::*;
use batch::tests::make_batch;
use proptest::prelude::*;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Records, and their timestamp.
    Append(i32, u8),
    Read(u16),
    Restart,
    DeleteRecords(u16),
    TearTail(u8),
    Checkpoint,
    ReleaseIdle,
    TimeLookup(u8),
    /// Which index file, which byte, which bit.
    DamageIndex(u8, u16, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..20i32, any::<u8>()).prop_map(|(n, t)| Op::Append(n, t)),
        3 => any::<u16>().prop_map(Op::Read),
        1 => Just(Op::Restart),
        1 => any::<u16>().prop_map(Op::DeleteRecords),
        1 => any::<u8>().prop_map(Op::TearTail),
        2 => Just(Op::Checkpoint),
        1 => Just(Op::ReleaseIdle),
        2 => any::<u8>().prop_map(Op::TimeLookup),
        1 => (any::<u8>(), any::<u16>(), 0..8u8).prop_map(|(f, b, x)| Op::DamageIndex(f, b, x)),
    ]
}

/// Reads everything from `from` and checks it against the model: whole
/// batches, contiguous offsets, ending at the model's end.
fn check_contents(log: &PartitionLog, from: i64, end: i64) {
    let mut next = from;
    let mut expected_base = None;
    while next < end {
        let r = log.read(next, 1000, true).unwrap();
        assert!(!r.records.is_empty(), "no data at {next} below end {end}");
        for (_, h) in batch::split_batches(&r.records).unwrap() {
            if let Some(b) = expected_base {
                assert_eq!(h.base_offset, b, "batches are contiguous");
            }
            assert!(h.base_offset <= next.max(h.base_offset));
            assert!(
                h.last_offset() >= next,
                "the batch holding {next} comes first"
            );
            expected_base = Some(h.last_offset() + 1);
            next = h.last_offset() + 1;
        }
    }
    assert_eq!(next.max(from), end.max(from));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn the_log_matches_a_model_through_appends_reads_restarts_and_torn_tails(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), small_config(), 0).unwrap();
        // Model: base offset, record count and timestamp of the
        // batches, and the log start.
        let mut batches: Vec<(i64, i32, i64)> = Vec::new();
        let mut start = 0i64;
        let end = |b: &Vec<(i64, i32, i64)>| b.last().map_or(0, |(o, n, _)| o + i64::from(*n));
        for op in ops {
            match op {
                Op::Append(n, t) => {
                    let ts = 1000 + i64::from(t);
                    let info = log.append(&make_batch(n, ts), 0).unwrap();
                    prop_assert_eq!(info.base_offset, end(&batches));
                    prop_assert_eq!(info.last_offset, end(&batches) + i64::from(n) - 1);
                    batches.push((info.base_offset, n, ts));
                }
                Op::Checkpoint => {
                    log.checkpoint().unwrap();
                }
                Op::ReleaseIdle => {
                    log.release_idle(i64::MAX);
                    prop_assert_eq!(log.mapped_sealed_segments(), 0);
                }
                Op::TimeLookup(t) => {
                    let ts = 1000 + i64::from(t);
                    let want = batches
                        .iter()
                        .find(|(b, n, bt)| *bt >= ts && b + i64::from(*n) > start)
                        .map(|(b, _, bt)| ((*b).max(start), *bt));
                    prop_assert_eq!(log.offset_for_timestamp(ts), want);
                }
                Op::DamageIndex(f, at, bit) => {
                    // A flipped bit in an offset index, found at start-up
                    // or when an entry does not match its batch.
                    drop(log);
                    let files: Vec<PathBuf> = fs::read_dir(dir.path())
                        .unwrap()
                        .map(|e| e.unwrap().path())
                        .filter(|p| p.extension().is_some_and(|x| x == "index"))
                        .collect();
                    if !files.is_empty() {
                        let path = &files[usize::from(f) % files.len()];
                        let mut bytes = fs::read(path).unwrap();
                        if !bytes.is_empty() {
                            let i = usize::from(at) % bytes.len();
                            bytes[i] ^= 1 << bit;
                            fs::write(path, &bytes).unwrap();
                        }
                    }
                    log = PartitionLog::open(dir.path(), small_config(), 0).unwrap();
                }
                Op::Read(x) => {
                    let e = end(&batches);
                    if e > start {
                        let off = start + i64::from(x) % (e - start);
                        let r = log.read(off, 1, true).unwrap();
                        let (_, h) = batch::split_batches(&r.records).unwrap()[0];
                        prop_assert!(h.base_offset <= off && off <= h.last_offset());
                    }
                    prop_assert!(log.read(e + 1, 100, true).is_err());
                    prop_assert!(log.read(e, 100, true).unwrap().records.is_empty());
                }
                Op::Restart => {
                    drop(log);
                    log = PartitionLog::open(dir.path(), small_config(), 0).unwrap();
                }
                Op::DeleteRecords(x) => {
                    let e = end(&batches);
                    let target = start + i64::from(x) % (e - start + 1);
                    let new_start = log.delete_records_before(target).unwrap();
                    start = start.max(target);
                    prop_assert_eq!(new_start, start);
                }
                Op::TearTail(k) => {
                    // Garbage after the committed end, as a crash mid-write leaves.
                    drop(log);
                    let last = log_files(dir.path()).pop().unwrap();
                    let f = fs::OpenOptions::new().write(true).open(&last).unwrap();
                    let len = committed_len(&last);
                    use std::os::unix::fs::FileExt;
                    let garbage = vec![k | 1; usize::from(k % 70) + 1];
                    f.write_all_at(&garbage, len).unwrap();
                    drop(f);
                    log = PartitionLog::open(dir.path(), small_config(), 0).unwrap();
                }
            }
            prop_assert_eq!(log.end_offset(), end(&batches));
            prop_assert_eq!(log.log_start_offset(), start);
            check_contents(&log, start, end(&batches));
        }
    }
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn committed_len(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut pos = 0usize;
    while pos + batch::HEADER_LEN <= bytes.len() {
        let h = BatchHeader::parse(&bytes[pos..]).unwrap();
        if h.batch_length <= 0 {
            break;
        }
        pos += h.total_len();
    }
    pos as u64
}

#[test]
fn segments_roll_at_segment_bytes_and_retention_deletes_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config();
    cfg.retention_bytes = 700;
    let log = PartitionLog::open(dir.path(), cfg, 0).unwrap();
    for _ in 0..20 {
        log.append(&make_batch(5, 1000), 0).unwrap();
    }
    assert!(log.segment_count() > 3, "rolled at 600 bytes");
    log.apply_retention(2000);
    let bases = log.segment_bases();
    assert_eq!(log.log_start_offset(), bases[0]);
    assert!(log.size_bytes() <= 700 + 600);
    let r = log.read(log.log_start_offset(), 10_000, true).unwrap();
    assert!(!r.records.is_empty());
    assert!(log.read(0, 100, true).is_err() || bases[0] == 0);
}

#[test]
fn a_closed_log_refuses_writes_but_not_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.append(&make_batch(2, 1), 0).unwrap();
    log.close();
    assert!(matches!(
        log.append(&make_batch(2, 1), 0),
        Err(LogError::Closed)
    ));
    assert!(matches!(
        log.delete_records_before(1),
        Err(LogError::Closed)
    ));
    assert_eq!(log.apply_retention(i64::MAX), 0);
    assert!(!log.read(0, 100, true).unwrap().records.is_empty());
}

#[test]
fn a_compacted_topic_is_not_deleted_by_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config();
    cfg.retention_ms = 1;
    cfg.delete_retention = false;
    let log = PartitionLog::open(dir.path(), cfg, 0).unwrap();
    for _ in 0..20 {
        log.append(&make_batch(5, 1000), 0).unwrap();
    }
    assert_eq!(log.apply_retention(1_000_000), 0);
    assert_eq!(log.log_start_offset(), 0);
}

#[test]
fn duplicates_of_an_idempotent_batch_get_the_original_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let mut b = make_batch(3, 1);
    batch::set_producer(&mut b, 7, 0, 0);
    batch::update_crc(&mut b);
    log.append(&make_batch(2, 1), 0).unwrap();
    let first = log.append(&b, 0).unwrap();
    let again = log.append(&b, 0).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.base_offset, first.base_offset);
    assert_eq!(log.end_offset(), 5);
}

mod recovery_props {
    use super::*;
    use batch::tests::make_batch;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Valid batches followed by arbitrary bytes, or arbitrary bytes
        /// alone, as a segment file: opening never panics, the valid prefix
        /// survives, and everything served is whole, valid batches.
        #[test]
        fn recovery_from_arbitrary_bytes_serves_only_valid_batches(
            good in 0usize..6,
            garbage in proptest::collection::vec(any::<u8>(), 0..400),
            garbage_only in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = Vec::new();
            let mut expected_end = 0i64;
            if !garbage_only {
                for i in 0..good {
                    let mut b = make_batch(2, 1000);
                    batch::set_base_offset(&mut b, expected_end);
                    bytes.extend_from_slice(&b);
                    expected_end += 2;
                    let _ = i;
                }
            }
            bytes.extend_from_slice(&garbage);
            fs::write(dir.path().join(segment::file_name(0)), &bytes).unwrap();
            let log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
            prop_assert!(log.end_offset() >= expected_end);
            let mut off = 0;
            while off < log.end_offset() {
                let r = log.read(off, 1 << 20, true).unwrap();
                prop_assert!(!r.records.is_empty());
                for (_, h) in batch::split_batches(&r.records).unwrap() {
                    off = h.last_offset() + 1;
                }
            }
            // And it keeps accepting appends after the recovered end.
            let info = log.append(&make_batch(1, 1), 0).unwrap();
            prop_assert_eq!(info.base_offset, off);
        }
    }
}
