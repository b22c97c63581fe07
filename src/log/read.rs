//! Reads: whole batches from the mapped segments, up to the high
//! watermark, the end (a follower's fetch) or the last stable offset (a
//! `read_committed` consumer's).

use bytes::Bytes;

use super::batch::BatchHeader;
use super::{wall_clock_ms, LogError, PartitionLog, ReadInfo};

impl PartitionLog {
    /// Reads whole committed batches (base offset below the high watermark)
    /// starting with the one that contains `offset`. An offset between the
    /// high watermark and the end is in range and reads nothing.
    ///
    /// # Errors
    /// `OffsetOutOfRange` below the log start or above the end.
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<ReadInfo, LogError> {
        self.read_bounded(offset, max_bytes, min_one, None, false)
    }

    /// Like [`PartitionLog::read`] for a `read_committed` consumer: the
    /// batches whose base offset is below the last stable offset, and the
    /// aborted transactions they may hold records of.
    ///
    /// # Errors
    /// `OffsetOutOfRange` below the log start or above the end.
    pub fn read_committed(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadInfo, LogError> {
        self.read_bounded(offset, max_bytes, min_one, None, true)
    }

    /// Like [`PartitionLog::read`], but returns the batches whose base
    /// offset is below `upto` (at most the end offset) instead of below the
    /// high watermark: a follower's fetch reads up to the end.
    ///
    /// # Errors
    /// `OffsetOutOfRange` below the log start or above the end.
    pub fn read_upto(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        upto: i64,
    ) -> Result<ReadInfo, LogError> {
        self.read_bounded(offset, max_bytes, min_one, Some(upto), false)
    }

    fn read_bounded(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        upto: Option<i64>,
        committed: bool,
    ) -> Result<ReadInfo, LogError> {
        let now = wall_clock_ms();
        let mut inner = self.inner.lock();
        let end = self.end_offset();
        let hw = self.high_watermark();
        let start = inner.log_start_offset;
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        // An open transaction whose first records retention or DeleteRecords
        // removed is unstable from the log start.
        let lso = inner
            .txns
            .first_unstable()
            .map_or(hw, |f| f.min(hw).max(start));
        let upto = if committed { lso } else { upto.unwrap_or(hw) }.min(end);
        let mut records = Bytes::new();
        if offset < upto {
            let mut base = inner
                .segments
                .range(..=offset)
                .next_back()
                .or_else(|| inner.segments.iter().next())
                .map(|(b, _)| *b);
            while let Some(b) = base {
                if let Some(seg) = inner.segments.get_mut(&b) {
                    seg.ensure_open(now)?;
                    if let Some((pos, _)) = seg.find_batch(offset) {
                        records = seg.read_from(pos, max_bytes, min_one);
                        break;
                    }
                }
                base = inner.segments.range(b + 1..).next().map(|(k, _)| *k);
            }
            if upto < end {
                records = cut_before(records, upto);
            }
        }
        let aborted = match (committed, records_end(&records)) {
            (true, Some(to)) => inner.txns.aborted_between(offset, to),
            _ => Vec::new(),
        };
        Ok(ReadInfo {
            records,
            high_watermark: hw,
            log_start_offset: start,
            last_stable_offset: lso,
            aborted,
        })
    }
}

/// The leading batches of `records` whose base offset is below `upto`
/// (walks their headers only).
fn cut_before(records: Bytes, upto: i64) -> Bytes {
    let mut pos = 0usize;
    while let Some(h) = records
        .get(pos..)
        .and_then(|b| BatchHeader::parse(b).ok())
        .filter(|h| h.batch_length > 0 && pos + h.total_len() <= records.len())
    {
        if h.base_offset >= upto {
            break;
        }
        pos += h.total_len();
    }
    records.slice(..pos)
}

/// The offset after the last whole batch of `records`.
pub(super) fn records_end(records: &Bytes) -> Option<i64> {
    let mut pos = 0usize;
    let mut end = None;
    while let Some(h) = records
        .get(pos..)
        .and_then(|b| BatchHeader::parse(b).ok())
        .filter(|h| h.batch_length > 0 && pos + h.total_len() <= records.len())
    {
        end = Some(h.last_offset() + 1);
        pos += h.total_len();
    }
    end
}
