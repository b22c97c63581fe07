//! A partition's recovery point: the file `recovery-point` in its directory.
//!
//! It records how far the active segment was fsynced (position, next offset,
//! index entries) and the idempotent-producer table at that point, in one
//! CRC-framed entry written with write-temp, fsync, rename. At start-up only
//! the bytes after the position are scanned, so restart time is bounded by
//! what was written since the last checkpoint, not by the size of the log.

use std::path::Path;

use super::error::LogError;
use super::framed::{self, Frames, Reader};
use super::producers::ProducerSnapshot;
use super::segment::SegmentState;
use super::txn::{AbortedTxn, TxnIndex};

/// File name of the recovery point in a partition directory.
pub const RECOVERY_POINT_FILE: &str = "recovery-point";
/// Version 2 adds the partition's transactions; version 1 files (none
/// open, none aborted) are still read.
const VERSION: u8 = 2;
const VERSION_NO_TXNS: u8 = 1;
/// Upper bound on a checkpoint entry (guards the decoder against a damaged
/// length).
const MAX_LEN: u32 = 64 << 20;

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPoint {
    pub segment: SegmentState,
    pub producers: Vec<ProducerSnapshot>,
    /// Open and aborted transactions at that point.
    pub txns: TxnIndex,
}

impl RecoveryPoint {
    /// The framed bytes of the file.
    pub fn encode(&self) -> Vec<u8> {
        let s = &self.segment;
        let mut p = Vec::with_capacity(80 + self.producers.len() * 80);
        p.push(VERSION);
        p.extend_from_slice(&s.base_offset.to_be_bytes());
        p.extend_from_slice(&(s.position as i64).to_be_bytes());
        p.extend_from_slice(&s.next_offset.to_be_bytes());
        p.extend_from_slice(&s.max_timestamp.to_be_bytes());
        p.extend_from_slice(&s.created_ms.to_be_bytes());
        p.extend_from_slice(&(s.bytes_since_index as i64).to_be_bytes());
        p.extend_from_slice(&(s.last_batch_rel as i32).to_be_bytes());
        p.extend_from_slice(&(s.index_entries as i32).to_be_bytes());
        p.extend_from_slice(&(s.time_entries as i32).to_be_bytes());
        p.extend_from_slice(&(self.producers.len() as i32).to_be_bytes());
        for pr in &self.producers {
            p.extend_from_slice(&pr.producer_id.to_be_bytes());
            p.extend_from_slice(&(i32::from(pr.epoch)).to_be_bytes());
            p.push(pr.batches.len().min(255) as u8);
            for &(first, last, base) in pr.batches.iter().take(255) {
                p.extend_from_slice(&first.to_be_bytes());
                p.extend_from_slice(&last.to_be_bytes());
                p.extend_from_slice(&base.to_be_bytes());
            }
        }
        let open = self.txns.open_list();
        p.extend_from_slice(&(open.len() as i32).to_be_bytes());
        for (pid, first) in open {
            p.extend_from_slice(&pid.to_be_bytes());
            p.extend_from_slice(&first.to_be_bytes());
        }
        let aborted = self.txns.aborted();
        p.extend_from_slice(&(aborted.len() as i32).to_be_bytes());
        for a in aborted {
            p.extend_from_slice(&a.producer_id.to_be_bytes());
            p.extend_from_slice(&a.first_offset.to_be_bytes());
            p.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        framed::frame(&p)
    }

    /// Decodes a file's bytes; `None` for anything damaged or unknown.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut frames = Frames::new(bytes, MAX_LEN);
        let (_, payload) = frames.next()?;
        if frames.valid_end() != bytes.len() {
            return None;
        }
        let mut r = Reader(payload);
        let version = r.u8()?;
        if version != VERSION && version != VERSION_NO_TXNS {
            return None;
        }
        let base_offset = r.i64()?;
        let position = u64::try_from(r.i64()?).ok()?;
        let next_offset = r.i64()?;
        let max_timestamp = r.i64()?;
        let created_ms = r.i64()?;
        let bytes_since_index = u64::try_from(r.i64()?).ok()?;
        let last_batch_rel = r.i32()? as u32;
        let index_entries = u32::try_from(r.i32()?).ok()?;
        let time_entries = u32::try_from(r.i32()?).ok()?;
        let n = usize::try_from(r.i32()?).ok()?;
        // Each producer takes at least 13 bytes: a claimed count cannot
        // reserve more than the payload could hold.
        let mut producers = Vec::with_capacity(n.min(payload.len() / 13));
        for _ in 0..n {
            let producer_id = r.i64()?;
            let epoch = i16::try_from(r.i32()?).ok()?;
            let k = r.u8()?;
            let mut batches = Vec::with_capacity(usize::from(k));
            for _ in 0..k {
                batches.push((r.i32()?, r.i32()?, r.i64()?));
            }
            producers.push(ProducerSnapshot {
                producer_id,
                epoch,
                batches,
            });
        }
        let txns = if version == VERSION_NO_TXNS {
            TxnIndex::default()
        } else {
            let n = usize::try_from(r.i32()?).ok()?;
            let mut open = Vec::with_capacity(n.min(payload.len() / 16));
            for _ in 0..n {
                open.push((r.i64()?, r.i64()?));
            }
            let n = usize::try_from(r.i32()?).ok()?;
            let mut aborted = Vec::with_capacity(n.min(payload.len() / 24));
            for _ in 0..n {
                aborted.push(AbortedTxn {
                    producer_id: r.i64()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            TxnIndex::from_parts(&open, &aborted)
        };
        if !r.is_done() {
            return None;
        }
        Some(Self {
            segment: SegmentState {
                base_offset,
                position,
                next_offset,
                max_timestamp,
                created_ms,
                bytes_since_index,
                last_batch_rel,
                index_entries,
                time_entries,
            },
            producers,
            txns,
        })
    }
}

/// Reads a partition's recovery point; `None` when missing or damaged.
pub fn read(dir: &Path) -> Option<RecoveryPoint> {
    let bytes = std::fs::read(dir.join(RECOVERY_POINT_FILE)).ok()?;
    let rp = RecoveryPoint::decode(&bytes);
    if rp.is_none() {
        tracing::warn!(dir = %dir.display(), "ignoring a damaged recovery point");
    }
    rp
}

/// Writes a partition's recovery point crash-safely.
///
/// # Errors
/// The I/O error; the previous recovery point stays.
pub fn write(dir: &Path, rp: &RecoveryPoint) -> Result<(), LogError> {
    super::error::write_atomic(&dir.join(RECOVERY_POINT_FILE), &rp.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> RecoveryPoint {
        RecoveryPoint {
            segment: SegmentState {
                base_offset: 100,
                position: 4096,
                next_offset: 180,
                max_timestamp: 1_700_000_000_000,
                created_ms: 1_690_000_000_000,
                bytes_since_index: 17,
                last_batch_rel: 79,
                index_entries: 3,
                time_entries: 2,
            },
            producers: vec![ProducerSnapshot {
                producer_id: 7,
                epoch: 2,
                batches: vec![(0, 9, 100), (10, 19, 110)],
            }],
            txns: TxnIndex::from_parts(
                &[(7, 150)],
                &[AbortedTxn {
                    producer_id: 8,
                    first_offset: 90,
                    last_offset: 120,
                }],
            ),
        }
    }

    #[test]
    fn a_recovery_point_round_trips() {
        let rp = sample();
        assert_eq!(RecoveryPoint::decode(&rp.encode()), Some(rp));
    }

    #[test]
    fn a_version_1_recovery_point_reads_with_no_transactions() {
        let mut rp = sample();
        rp.txns = TxnIndex::default();
        let bytes = rp.encode();
        let (_, payload) = Frames::new(&bytes, MAX_LEN).next().expect("one frame");
        // Version 1 ended after the producers: no transaction counts.
        let mut v1 = payload[..payload.len() - 8].to_vec();
        v1[0] = VERSION_NO_TXNS;
        assert_eq!(RecoveryPoint::decode(&framed::frame(&v1)), Some(rp));
    }

    proptest! {
        #[test]
        fn damaged_recovery_points_are_refused_not_trusted(at in 0usize..200, bit in 0u8..8, cut in 0usize..200) {
            let bytes = sample().encode();
            let mut flipped = bytes.clone();
            let i = at % flipped.len();
            flipped[i] ^= 1 << bit;
            prop_assert_eq!(RecoveryPoint::decode(&flipped), None);
            let cut = cut % bytes.len();
            prop_assert_eq!(RecoveryPoint::decode(&bytes[..cut]), None);
        }
    }
}
