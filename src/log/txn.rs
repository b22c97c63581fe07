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
}
