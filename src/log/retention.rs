//! Moving a partition's start forward: DeleteRecords, and retention by
//! time and size (whole sealed segments).

use std::fs;
use std::sync::atomic::Ordering;

use super::error::LogError;
use super::index;
use super::segment::Segment;
use super::{write_log_start, Inner, PartitionLog};

impl PartitionLog {
    /// Moves the log start offset forward to `offset` (DeleteRecords), and
    /// deletes segments that lie wholly below it. Returns the new start.
    /// As in Kafka, records past the high watermark cannot be deleted, and
    /// -1 means the high watermark (the end offset unless replicated).
    ///
    /// # Errors
    /// `OffsetOutOfRange` above the high watermark (reported as the end of
    /// the range); I/O errors.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let mut inner = self.inner.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let hw = self.high_watermark();
        let offset = if offset == -1 { hw } else { offset };
        if offset < 0 || offset > hw {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: inner.log_start_offset,
                end: hw,
            });
        }
        if offset > inner.log_start_offset {
            write_log_start(&self.dir, offset)?;
            self.move_start_locked(&mut inner, offset);
            self.delete_segments_below_locked(&mut inner, offset);
            // Waiting fetches answer now: a follower learns the new log
            // start at once.
            self.appended.notify_waiters();
        }
        Ok(inner.log_start_offset)
    }

    /// Moves the log start offset up to `offset`, and the high watermark
    /// and the first leader epoch with it (the epoch cache is written with
    /// its next change; opening the log trims it to the start again).
    fn move_start_locked(&self, inner: &mut Inner, offset: i64) {
        inner.log_start_offset = offset;
        inner.txns.trim_before(offset);
        self.start_offset.store(offset, Ordering::Release);
        self.high_watermark.fetch_max(offset, Ordering::AcqRel);
        inner.epochs.truncate_from_start(offset);
    }

    fn delete_segments_below_locked(&self, inner: &mut Inner, offset: i64) {
        loop {
            let bases: Vec<i64> = inner.segments.keys().take(2).copied().collect();
            // A segment can go when the next one starts at or below `offset`.
            if bases.len() < 2 || bases[1] > offset {
                break;
            }
            if let Some(seg) = inner.segments.remove(&bases[0]) {
                self.size_bytes.fetch_sub(seg.size(), Ordering::Relaxed);
                if let Err(e) = fs::remove_file(seg.path()) {
                    tracing::warn!(segment = %seg.path().display(), error = %e, "failed to delete segment");
                }
                index::remove_files(seg.path());
            }
        }
    }

    /// Deletes sealed segments past `retention.ms` or beyond `retention.bytes`,
    /// oldest first, and moves the log start offset. Returns bytes deleted.
    pub fn apply_retention(&self, now_ms: i64) -> u64 {
        let mut inner = self.inner.lock();
        let cfg = inner.config.clone();
        if !cfg.delete_retention || self.closed.load(Ordering::Acquire) {
            return 0;
        }
        // An active segment whose every record is past retention is rolled,
        // so that it can go like a sealed one (as Kafka does).
        let active_expired = inner.segments.values().next_back().is_some_and(|s| {
            let max_ts = s.max_timestamp().unwrap_or(-1);
            !s.is_empty()
                && cfg.retention_ms >= 0
                && max_ts >= 0
                && now_ms.saturating_sub(max_ts) > cfg.retention_ms
        });
        if active_expired {
            let end = self.end_offset();
            if let Err(e) = self.roll_locked(&mut inner, end, now_ms) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "failed to roll an expired segment");
            }
        }
        let mut total: u64 = inner.segments.values().map(Segment::size).sum();
        let mut deleted = 0;
        loop {
            // Only committed records go (as in Kafka): the second segment
            // must start at or below the high watermark.
            let second = inner.segments.keys().nth(1).copied();
            if second.is_none_or(|b| b > self.high_watermark()) {
                break;
            }
            let Some((&base, seg)) = inner.segments.iter_mut().next() else {
                break;
            };
            let max_ts = if cfg.retention_ms >= 0 {
                if let Err(e) = seg.ensure_open(now_ms) {
                    tracing::warn!(segment = %seg.path().display(), error = %e, "cannot read segment for retention");
                    break;
                }
                seg.max_timestamp().unwrap_or(-1)
            } else {
                -1
            };
            let expired = cfg.retention_ms >= 0
                && max_ts >= 0
                && now_ms.saturating_sub(max_ts) > cfg.retention_ms;
            let too_big = cfg.retention_bytes >= 0
                && total.saturating_sub(seg.size()) >= cfg.retention_bytes as u64;
            if !(expired || too_big) {
                break;
            }
            let size = seg.size();
            let path = seg.path().to_path_buf();
            inner.segments.remove(&base);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %e, "failed to delete segment");
            }
            index::remove_files(&path);
            total -= size;
            deleted += size;
            self.size_bytes.fetch_sub(size, Ordering::Relaxed);
            let next_base = inner.segments.keys().next().copied().unwrap_or(base);
            if next_base > inner.log_start_offset {
                self.move_start_locked(&mut inner, next_base);
            }
            tracing::info!(segment = %path.display(), "deleted segment by retention");
        }
        deleted
    }
}
