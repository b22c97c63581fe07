//! Offsets by time: ListOffsets by timestamp and for the largest one,
//! through the time index and, inside a batch, its decoded records.

use bytes::Bytes;

use super::batch::BatchHeader;
use super::{wall_clock_ms, PartitionLog};

impl PartitionLog {
    /// The first offset whose record timestamp is at or after `ts`, with that
    /// timestamp; `None` when every record is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Option<(i64, i64)> {
        // Find the batch under the lock; decode it (maybe decompressing)
        // after releasing it.
        let now = wall_clock_ms();
        let (h, bytes, start) = {
            let mut inner = self.inner.lock();
            let start = inner.log_start_offset;
            let mut found = None;
            for seg in inner.segments.values_mut() {
                if seg.next_offset() <= start && seg.base_offset < start {
                    continue;
                }
                if seg.ensure_open(now).is_err() || seg.max_timestamp().unwrap_or(-1) < ts {
                    continue;
                }
                let from = seg.time_lookup_start(ts);
                found = seg
                    .headers_from(from)
                    .find(|(_, h)| h.max_timestamp >= ts && h.last_offset() >= start)
                    .map(|(pos, h)| (h, seg.batch_bytes(pos, &h)));
                if found.is_some() {
                    break;
                }
            }
            let (h, b) = found?;
            (h, b, start)
        };
        first_record_at_or_after(&bytes, &h, start, ts)
            .or(Some((h.base_offset.max(start), h.max_timestamp)))
    }

    /// Offset and timestamp of the record with the largest timestamp.
    pub fn max_timestamp_offset(&self) -> Option<(i64, i64)> {
        let now = wall_clock_ms();
        let (h, bytes, start) = {
            let mut inner = self.inner.lock();
            let start = inner.log_start_offset;
            let mut best: Option<(BatchHeader, Bytes)> = None;
            for seg in inner.segments.values_mut() {
                if seg.next_offset() <= start && seg.base_offset < start {
                    continue;
                }
                if seg.ensure_open(now).is_err() {
                    continue;
                }
                // Only a segment whose largest timestamp beats the best so
                // far needs its batches walked.
                let seg_max = seg.max_timestamp().unwrap_or(-1);
                if best
                    .as_ref()
                    .is_some_and(|(b, _)| seg_max <= b.max_timestamp)
                {
                    continue;
                }
                for (pos, h) in seg.headers_from(0) {
                    if h.last_offset() < start {
                        continue;
                    }
                    if best
                        .as_ref()
                        .is_none_or(|(b, _)| h.max_timestamp > b.max_timestamp)
                    {
                        best = Some((h, seg.batch_bytes(pos, &h)));
                    }
                }
            }
            let (h, b) = best?;
            (h, b, start)
        };
        last_record_with_max_timestamp(&bytes, &h, start)
            .or(Some((h.last_offset(), h.max_timestamp)))
    }
}

/// The first record of a batch at or after offset `from` whose timestamp is
/// `ts` or later (decodes the batch; timestamp lookups only).
fn first_record_at_or_after(
    bytes: &Bytes,
    h: &BatchHeader,
    from: i64,
    ts: i64,
) -> Option<(i64, i64)> {
    if h.is_log_append_time() {
        // Every record carries the batch's timestamp.
        return (h.max_timestamp >= ts && h.last_offset() >= from)
            .then(|| (h.base_offset.max(from), h.max_timestamp));
    }
    let sets = crate::log::records::decode_all(bytes).ok()?;
    let found = sets
        .iter()
        .flat_map(|s| s.records.iter())
        .find(|r| r.timestamp >= ts && r.offset >= from)
        .map(|r| (r.offset, r.timestamp));
    found
}

/// The last record of a batch at or after offset `from` whose timestamp is
/// the batch's largest.
fn last_record_with_max_timestamp(bytes: &Bytes, h: &BatchHeader, from: i64) -> Option<(i64, i64)> {
    if h.is_log_append_time() {
        return (h.last_offset() >= from).then(|| (h.last_offset(), h.max_timestamp));
    }
    let sets = crate::log::records::decode_all(bytes).ok()?;
    let found = sets
        .iter()
        .flat_map(|s| s.records.iter())
        .filter(|r| r.timestamp == h.max_timestamp && r.offset >= from)
        .last()
        .map(|r| (r.offset, r.timestamp));
    found
}
