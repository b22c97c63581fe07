//! Transactions as one partition's log sees them: which producers have a
//! transaction open here (from the offset of its first batch), the control
//! batches (commit and abort markers) that end them, the aborted ones that
//! `read_committed` fetches are told about, and the last stable offset.
//!
//! The state is rebuilt like the producer table: saved with each recovery
//! checkpoint and brought up to date at start-up from the batches written
//! after it. A marker is a control batch of one record whose key is
//! `version i16 = 0, type i16` (0 abort, 1 commit) and whose value is
//! `version i16 = 0, coordinator epoch i32`, as Kafka writes it.

use std::collections::BTreeMap;

use super::batch::{self, BatchHeader, HEADER_LEN};
#[cfg(test)]
use super::read::records_end;
pub use super::txn_types::AbortedTxn;

/// Attributes of a marker: transactional and control, uncompressed.
const MARKER_ATTRIBUTES: i16 = 0x10 | 0x20;
const TYPE_ABORT: i16 = 0;
const TYPE_COMMIT: i16 = 1;

/// What a marker ends a transaction with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Commit,
    Abort,
}

/// A control batch holding one marker for `producer_id` at `epoch`, with
/// base offset 0 (the log stamps it).
pub fn marker_batch(
    producer_id: i64,
    epoch: i16,
    marker: Marker,
    coordinator_epoch: i32,
    now_ms: i64,
) -> Vec<u8> {
    let kind = match marker {
        Marker::Commit => TYPE_COMMIT,
        Marker::Abort => TYPE_ABORT,
    };
    let mut b = batch::new_header(0, 1, now_ms);
    b[batch::field::ATTRIBUTES..batch::field::ATTRIBUTES + 2]
        .copy_from_slice(&MARKER_ATTRIBUTES.to_be_bytes());
    batch::set_producer(&mut b, producer_id, epoch, -1);
    // One record: attributes, timestamp delta, offset delta, key, value,
    // no headers; lengths as zig-zag varints.
    let mut rec = vec![0u8, 0, 0];
    rec.push(zigzag(4));
    rec.extend_from_slice(&0i16.to_be_bytes());
    rec.extend_from_slice(&kind.to_be_bytes());
    rec.push(zigzag(6));
    rec.extend_from_slice(&0i16.to_be_bytes());
    rec.extend_from_slice(&coordinator_epoch.to_be_bytes());
    rec.push(0);
    b.push(zigzag(rec.len() as i8));
    b.extend_from_slice(&rec);
    batch::seal(&mut b);
    b
}

/// A small non-negative number as a one-byte zig-zag varint.
fn zigzag(n: i8) -> u8 {
    (n as u8) << 1
}

/// The marker a control batch (whole, header included) holds; `None` for
/// anything else (Kafka's other control records, damaged bytes).
pub fn parse_marker(bytes: &[u8]) -> Option<Marker> {
    let h = BatchHeader::parse(bytes).ok()?;
    if !h.is_control() || h.compression() != 0 {
        return None;
    }
    // length, attributes, timestamp delta, offset delta, key length:
    // all one-byte varints in a marker.
    let rec = bytes.get(HEADER_LEN..)?;
    let key_len = *rec.get(4)?;
    if key_len != zigzag(4) {
        return None;
    }
    let key = rec.get(5..9)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        TYPE_COMMIT => Some(Marker::Commit),
        TYPE_ABORT => Some(Marker::Abort),
        _ => None,
    }
}

/// The transactions of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TxnIndex {
    /// Producer id → offset of its open transaction's first batch.
    open: BTreeMap<i64, i64>,
    /// Aborted transactions in the order of their markers.
    aborted: Vec<AbortedTxn>,
}

impl TxnIndex {
    /// Rebuilds an index from what [`TxnIndex::open_list`] and
    /// [`TxnIndex::aborted`] returned.
    pub fn from_parts(open: &[(i64, i64)], aborted: &[AbortedTxn]) -> Self {
        let mut aborted = aborted.to_vec();
        aborted.sort_by_key(|a| a.last_offset);
        Self {
            open: open.iter().copied().collect(),
            aborted,
        }
    }

    /// Notes a batch written at its final offsets; `marker` is what a
    /// control batch holds.
    pub fn record(&mut self, h: &BatchHeader, marker: Option<Marker>) {
        if h.producer_id < 0 || !h.is_transactional() {
            return;
        }
        if h.is_control() {
            let Some(first) = self.open.remove(&h.producer_id) else {
                return;
            };
            if marker == Some(Marker::Abort) {
                self.aborted.push(AbortedTxn {
                    producer_id: h.producer_id,
                    first_offset: first,
                    last_offset: h.base_offset,
                });
            }
        } else {
            self.open.entry(h.producer_id).or_insert(h.base_offset);
        }
    }

    /// Whether `producer_id` has a transaction open in this partition.
    pub fn is_open(&self, producer_id: i64) -> bool {
        self.open.contains_key(&producer_id)
    }

    /// The first offset of the oldest open transaction.
    pub fn first_unstable(&self) -> Option<i64> {
        self.open.values().min().copied()
    }

    /// Open transactions as (producer id, first offset).
    pub fn open_list(&self) -> Vec<(i64, i64)> {
        self.open.iter().map(|(p, o)| (*p, *o)).collect()
    }

    /// Every aborted transaction still in the log.
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// The aborted transactions a read of `[from, to)` may hold records of:
    /// those whose marker is at or past `from` and whose first batch is
    /// below `to`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let at = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[at..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets what lies at or past `offset` (a tail truncation): an open
    /// transaction that started there, an abort whose marker is gone (its
    /// transaction is open again when its data is still there).
    pub fn truncate_to(&mut self, offset: i64) {
        self.open.retain(|_, first| *first < offset);
        while let Some(a) = self.aborted.last().copied() {
            if a.last_offset < offset {
                break;
            }
            self.aborted.pop();
            if a.first_offset < offset {
                self.open.insert(a.producer_id, a.first_offset);
            }
        }
    }

    /// Forgets aborted transactions wholly below the log start.
    pub fn trim_before(&mut self, start: i64) {
        self.aborted.retain(|a| a.last_offset >= start);
    }
}

impl super::PartitionLog {
    /// Appends a transaction marker for `producer_id` at `epoch` (the
    /// transaction coordinator ending its transaction here). A marker at an
    /// epoch older than the producer's last one is refused.
    ///
    /// # Errors
    /// `InvalidProducerEpoch` for a stale epoch; I/O errors.
    pub fn append_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        marker: Marker,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<super::AppendInfo, super::LogError> {
        let batch = marker_batch(producer_id, epoch, marker, coordinator_epoch, now_ms);
        self.append_internal(&batch, now_ms)
    }

    /// Whether `producer_id` has a transaction open in this partition.
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.inner.lock().txns.is_open(producer_id)
    }

    /// The offset below which every transaction is decided: the first
    /// offset of the oldest open transaction, or the high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        let inner = self.inner.lock();
        let hw = self.high_watermark();
        inner.txns.first_unstable().map_or(hw, |f| f.min(hw))
    }

    /// Open transactions here, as (producer id, first offset).
    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        self.inner.lock().txns.open_list()
    }

    /// Every aborted transaction whose marker is still in the log.
    pub fn aborted_transactions(&self) -> Vec<AbortedTxn> {
        self.inner.lock().txns.aborted().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(bytes: &[u8], base: i64) -> BatchHeader {
        let mut b = bytes.to_vec();
        batch::set_base_offset(&mut b, base);
        BatchHeader::parse(&b).expect("header")
    }

    fn data(pid: i64, base: i64, count: i32, txn: bool) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            magic: 2,
            crc: 0,
            attributes: if txn { 0x10 } else { 0 },
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
            records_count: count,
        }
    }

    #[test]
    fn a_marker_is_a_valid_control_batch_that_reads_back() {
        for m in [Marker::Commit, Marker::Abort] {
            let b = marker_batch(42, 3, m, 7, 1_700_000_000_000);
            let h = batch::validate(&b).expect("valid batch");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(h.records_count, 1);
            assert_eq!(parse_marker(&b), Some(m));
            batch::check_records(&b[HEADER_LEN..], 1, true).expect("well-formed record");
        }
        assert_eq!(parse_marker(&[0u8; 10]), None);
    }

    #[test]
    fn the_index_follows_open_commit_and_abort() {
        let mut t = TxnIndex::default();
        t.record(&data(1, 0, 2, true), None);
        t.record(&data(2, 2, 1, true), None);
        t.record(&data(1, 3, 1, true), None);
        t.record(&data(3, 4, 1, false), None);
        assert_eq!(t.first_unstable(), Some(0));
        let commit = stamped(&marker_batch(1, 0, Marker::Commit, 0, 0), 5);
        t.record(&commit, Some(Marker::Commit));
        assert_eq!(t.first_unstable(), Some(2));
        let abort = stamped(&marker_batch(2, 0, Marker::Abort, 0, 0), 6);
        t.record(&abort, Some(Marker::Abort));
        assert_eq!(t.first_unstable(), None);
        let a = AbortedTxn {
            producer_id: 2,
            first_offset: 2,
            last_offset: 6,
        };
        assert_eq!(t.aborted(), &[a]);
        assert_eq!(t.aborted_between(0, 3), vec![a]);
        assert_eq!(t.aborted_between(7, 9), vec![]);
        assert_eq!(t.aborted_between(0, 2), vec![]);
        // A marker for a producer with nothing open here changes nothing.
        t.record(
            &stamped(&marker_batch(9, 0, Marker::Abort, 0, 0), 7),
            Some(Marker::Abort),
        );
        assert_eq!(t.aborted().len(), 1);
    }

    #[test]
    fn truncation_reopens_a_transaction_whose_marker_it_removed() {
        let mut t = TxnIndex::default();
        t.record(&data(1, 0, 2, true), None);
        t.record(
            &stamped(&marker_batch(1, 0, Marker::Abort, 0, 0), 2),
            Some(Marker::Abort),
        );
        t.record(&data(2, 3, 1, true), None);
        t.truncate_to(2);
        assert_eq!(t.aborted(), &[]);
        assert_eq!(t.open_list(), vec![(1, 0)]);
        t.truncate_to(0);
        assert_eq!(t.first_unstable(), None);
    }

    /// A transactional batch of `count` records from `pid` at `epoch`,
    /// first sequence `seq`.
    fn txn_batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Vec<u8> {
        let mut b = batch::tests::make_batch(count, 1_000);
        b[batch::field::ATTRIBUTES..batch::field::ATTRIBUTES + 2]
            .copy_from_slice(&0x10i16.to_be_bytes());
        batch::set_producer(&mut b, pid, epoch, seq);
        batch::update_crc(&mut b);
        b
    }

    fn open_log(dir: &std::path::Path) -> super::super::PartitionLog {
        super::super::PartitionLog::open(dir, super::super::LogConfig::default(), 0).expect("open")
    }

    #[test]
    fn read_committed_stops_at_the_open_transaction_and_learns_the_aborts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_log(dir.path());
        log.append(&batch::tests::make_batch(2, 1_000), 0)
            .expect("plain");
        log.append(&txn_batch(7, 0, 0, 3), 0).expect("txn 7");
        log.append(&batch::tests::make_batch(1, 1_000), 0)
            .expect("plain");
        log.append(&txn_batch(8, 0, 0, 2), 0).expect("txn 8");
        assert_eq!(log.last_stable_offset(), 2);
        let r = log.read_committed(0, 1 << 20, true).expect("read");
        assert_eq!(records_end(&r.records), Some(2));
        assert_eq!(r.last_stable_offset, 2);
        assert!(log
            .read_committed(2, 1 << 20, true)
            .expect("read")
            .records
            .is_empty());
        // Aborting 7 leaves 8 open: stable up to 8's first batch.
        let m = log.append_marker(7, 0, Marker::Abort, 0, 0).expect("abort");
        assert_eq!(m.base_offset, 8);
        assert!(!log.has_open_transaction(7));
        assert_eq!(log.last_stable_offset(), 6);
        let r = log.read_committed(0, 1 << 20, true).expect("read");
        assert_eq!(records_end(&r.records), Some(6));
        let aborted_7 = AbortedTxn {
            producer_id: 7,
            first_offset: 2,
            last_offset: 8,
        };
        assert_eq!(r.aborted, vec![aborted_7]);
        log.append_marker(8, 0, Marker::Commit, 0, 0)
            .expect("commit");
        assert_eq!(log.last_stable_offset(), log.end_offset());
        let r = log.read_committed(6, 1 << 20, true).expect("read");
        assert_eq!(records_end(&r.records), Some(10));
        assert_eq!(r.aborted, vec![aborted_7], "its marker is in the read");
        // read_uncommitted reads learn no aborts.
        assert!(log.read(0, 1 << 20, true).expect("read").aborted.is_empty());
        // A marker from an older epoch than the producer's is refused.
        log.append(&txn_batch(8, 1, 0, 1), 0)
            .expect("txn 8, epoch 1");
        assert!(matches!(
            log.append_marker(8, 0, Marker::Abort, 0, 0),
            Err(super::super::LogError::InvalidProducerEpoch)
        ));
        // A marker at a newer epoch fences the producer's older one.
        log.append_marker(8, 2, Marker::Abort, 0, 0)
            .expect("fencing abort");
        assert!(matches!(
            log.append(&txn_batch(8, 1, 1, 1), 0),
            Err(super::super::LogError::InvalidProducerEpoch)
        ));
    }

    #[test]
    fn transactions_survive_a_restart_with_and_without_a_checkpoint() {
        for checkpoint in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (open, aborted) = {
                let log = open_log(dir.path());
                log.append(&txn_batch(1, 0, 0, 2), 0).expect("txn 1");
                log.append(&txn_batch(2, 0, 0, 2), 0).expect("txn 2");
                log.append_marker(1, 0, Marker::Abort, 0, 0)
                    .expect("abort 1");
                if checkpoint {
                    log.checkpoint().expect("checkpoint");
                }
                log.append(&txn_batch(3, 0, 0, 1), 0).expect("txn 3");
                log.append_marker(3, 0, Marker::Abort, 0, 0)
                    .expect("abort 3");
                (log.open_transactions(), log.aborted_transactions())
            };
            assert_eq!(open, vec![(2, 2)]);
            assert_eq!(aborted.len(), 2);
            let log = open_log(dir.path());
            assert_eq!(log.open_transactions(), open, "checkpoint {checkpoint}");
            assert_eq!(
                log.aborted_transactions(),
                aborted,
                "checkpoint {checkpoint}"
            );
            assert_eq!(log.last_stable_offset(), 2);
        }
    }

    #[test]
    fn clients_may_not_write_control_batches_or_transactions_without_a_producer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_log(dir.path());
        let marker = marker_batch(1, 0, Marker::Commit, 0, 0);
        assert!(matches!(
            log.append(&marker, 0),
            Err(super::super::LogError::ControlBatch)
        ));
        let mut b = txn_batch(-1, -1, -1, 1);
        batch::update_crc(&mut b);
        assert!(log.append(&b, 0).is_err());
    }
}
