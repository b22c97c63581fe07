//! What a follower does to its log: append batches exactly as its leader
//! wrote them, and cut a tail that diverged from a new leader's log.

use std::fs;
use std::sync::atomic::Ordering;

use super::batch::{self, BatchHeader, HEADER_LEN};
use super::checkpoint::RECOVERY_POINT_FILE;
use super::error::{io_err, sync_dir, LogError};
use super::segment::Segment;
use super::{index, wall_clock_ms, AppendInfo, Inner, PartitionLog};

impl PartitionLog {
    /// Appends whole v2 batches exactly as a leader wrote them (a follower's
    /// fetch): base offsets, partition leader epochs and timestamps are kept
    /// as they are. Each batch is checked for framing, magic and CRC (not
    /// `max.message.bytes`, not the producer's sequence) and recorded in the
    /// producer table, so that this replica, once leader, answers a retry
    /// of an idempotent producer as a duplicate. A trailing partial batch (a
    /// fetch response cut at its byte limit) is ignored.
    ///
    /// Batches before the first one that is invalid or does not follow on
    /// from the log's end are appended; the error names that one, and the
    /// end offset shows how far the append got.
    ///
    /// # Errors
    /// `NonContiguous` when a batch's base offset is not the log end offset
    /// (for the first) or the previous batch's last offset + 1; invalid
    /// batches; I/O errors.
    pub fn append_replica(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.check_not_failed()?;
        // Outside the lock: the CRCs take a while.
        let (batches, invalid) = replica_batches(records);
        let mut inner = self.inner.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let base = self.end_offset();
        let mut info = AppendInfo {
            base_offset: base,
            last_offset: base - 1,
            log_append_time: -1,
            duplicate: false,
            records: 0,
        };
        let mut failed = None;
        for (pos, h) in batches {
            let expected = self.end_offset();
            // A batch may start past the end where the leader's cleaner
            // removed records (offsets only ever grow).
            if h.base_offset < expected {
                failed = Some(LogError::NonContiguous {
                    expected,
                    got: h.base_offset,
                });
                break;
            }
            let bytes = &records[pos..pos + h.total_len()];
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&bytes[..HEADER_LEN]);
            if let Err(e) =
                self.write_batch_locked(&mut inner, &header, &bytes[HEADER_LEN..], &h, now_ms)
            {
                failed = Some(e);
                break;
            }
            info.last_offset = h.last_offset();
            info.records += i64::from(h.records_count);
        }
        drop(inner);
        if info.records > 0 {
            self.appended.notify_waiters();
        }
        match failed.or(invalid) {
            Some(e) => Err(e),
            None => Ok(info),
        }
    }

    /// Removes every batch at or above `offset` (a follower whose log
    /// diverged from its new leader's). When `offset` falls inside a batch
    /// the whole batch goes: the new end is its base offset. `offset` at or
    /// past the end changes nothing; below the log start it is taken as the
    /// log start. When the log start lies inside the batch that would be
    /// cut, everything goes and the log restarts empty at the log start.
    ///
    /// Later segments are deleted (highest base first), then the segment
    /// holding the new end is cut and becomes the active one, and the
    /// partition is re-read from its files: a kill at any point leaves a log
    /// that opens as a prefix of the old one at least as long as the target.
    /// The recovery point is removed first (the next checkpoint writes a
    /// new one); the producer table forgets the removed batches; the leader
    /// epoch cache drops the epochs that start at or past the new end; the
    /// high watermark is lowered to it.
    ///
    /// # Errors
    /// I/O errors. If re-reading the files fails the partition is taken
    /// offline (as after an fsync failure).
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        // No checkpoint may describe the old tail.
        let _checkpoint = self.checkpoint_lock.lock();
        let mut inner = self.inner.lock();
        self.check_not_failed()?;
        let end = self.end_offset();
        if offset >= end {
            return Ok(());
        }
        let start = inner.log_start_offset;
        let offset = offset.max(start);
        let now = wall_clock_ms();
        let corrupt = |reason: String| LogError::Corruption {
            dir: self.dir.display().to_string(),
            reason,
        };
        let base = inner
            .segments
            .range(..=offset)
            .next_back()
            .map(|(b, _)| *b)
            .ok_or_else(|| corrupt(format!("no segment holds offset {offset}")))?;
        let (pos, h) = match inner.segments.get_mut(&base) {
            Some(seg) => {
                seg.ensure_open(now)?;
                seg.find_batch(offset)
            }
            None => None,
        }
        .ok_or_else(|| corrupt(format!("no batch holds offset {offset}")))?;
        let restart = h.base_offset < start;
        let cut = self.cut_tail_locked(&mut inner, base, pos as u64, restart, now);
        // Whatever the cut did, the state is taken from the files again.
        let config = inner.config.clone();
        match PartitionLog::open_with(&self.dir, config, now, true) {
            Ok(fresh) => self.adopt_locked(&mut inner, fresh, h.base_offset.max(start)),
            Err(e) => {
                self.durable.failed.store(true, Ordering::Release);
                inner.segments.clear();
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot reopen the log after a truncation; partition taken offline");
                return Err(e);
            }
        }
        drop(inner);
        self.appended.notify_waiters();
        cut
    }

    /// Empties the log and starts it again at `offset`, past its end (or
    /// anywhere, when the log holds nothing): a follower whose next records
    /// its leader no longer has (retention or DeleteRecords ran past them)
    /// fetches from the leader's log start instead, or from the base of the
    /// batch that holds it (Kafka's `truncateFullyAndStartAt`). An empty segment is
    /// made at `offset` first, then the log start is written, then the old
    /// segments go: a crash between two steps leaves a log that opens and
    /// that the next attempt finishes.
    ///
    /// # Errors
    /// I/O errors; the partition is taken offline when the log cannot be
    /// reopened.
    pub fn restart_at(&self, offset: i64) -> Result<(), LogError> {
        let _checkpoint = self.checkpoint_lock.lock();
        let mut inner = self.inner.lock();
        self.check_not_failed()?;
        let end = self.end_offset();
        let empty = inner.log_start_offset == end;
        if offset == end || (offset < end && !empty) || offset < 0 {
            return Ok(());
        }
        let now = wall_clock_ms();
        let rp = self.dir.join(RECOVERY_POINT_FILE);
        match fs::remove_file(&rp) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("failed to remove {}", rp.display()))(e)),
        }
        drop(Segment::create(
            &self.dir,
            offset,
            now,
            inner.config.index_interval_bytes,
        )?);
        sync_dir(&self.dir)?;
        super::write_log_start(&self.dir, offset)?;
        let older: Vec<i64> = inner
            .segments
            .keys()
            .rev()
            .copied()
            .filter(|b| *b != offset)
            .collect();
        for b in older {
            self.remove_segment_locked(&mut inner, b)?;
        }
        sync_dir(&self.dir)?;
        let config = inner.config.clone();
        match PartitionLog::open_with(&self.dir, config, now, true) {
            Ok(fresh) => self.adopt_locked(&mut inner, fresh, offset),
            Err(e) => {
                self.durable.failed.store(true, Ordering::Release);
                inner.segments.clear();
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot reopen the log after a restart; partition taken offline");
                return Err(e);
            }
        }
        // None of the producers' batches is left.
        inner.producers.truncate_to(i64::MIN);
        inner.txns = super::txn::TxnIndex::default();
        self.high_watermark.store(offset, Ordering::Release);
        drop(inner);
        self.appended.notify_waiters();
        Ok(())
    }

    /// The file operations of [`PartitionLog::truncate_to`]: the segments
    /// above `base` go, then segment `base` is cut at `pos`; or, for a
    /// `restart`, an empty segment is created at the log start and every
    /// older one goes.
    fn cut_tail_locked(
        &self,
        inner: &mut Inner,
        base: i64,
        pos: u64,
        restart: bool,
        now: i64,
    ) -> Result<(), LogError> {
        let rp = self.dir.join(RECOVERY_POINT_FILE);
        match fs::remove_file(&rp) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("failed to remove {}", rp.display()))(e)),
        }
        let above: Vec<i64> = inner
            .segments
            .range(base + 1..)
            .rev()
            .map(|(b, _)| *b)
            .collect();
        for b in above {
            self.remove_segment_locked(inner, b)?;
        }
        // The deletions are durable before the cut, so the cut segment is
        // never followed by one that starts past its new end.
        sync_dir(&self.dir)?;
        if restart {
            let start = inner.log_start_offset;
            drop(Segment::create(
                &self.dir,
                start,
                now,
                inner.config.index_interval_bytes,
            )?);
            sync_dir(&self.dir)?;
            let older: Vec<i64> = inner.segments.keys().rev().copied().collect();
            for b in older {
                self.remove_segment_locked(inner, b)?;
            }
        } else if let Some(seg) = inner.segments.get_mut(&base) {
            seg.cut_to(pos)?;
        }
        sync_dir(&self.dir)
    }

    /// Deletes a segment's index files, then its log file.
    fn remove_segment_locked(&self, inner: &mut Inner, base: i64) -> Result<(), LogError> {
        let Some(seg) = inner.segments.remove(&base) else {
            return Ok(());
        };
        let path = seg.path().to_path_buf();
        drop(seg);
        index::remove_files(&path);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("failed to delete {}", path.display()))(e)),
        }
    }

    /// Takes the state of a log reopened after a truncation to `target`.
    fn adopt_locked(&self, inner: &mut Inner, fresh: PartitionLog, target: i64) {
        let end = fresh.end_offset();
        if end != target {
            tracing::warn!(dir = %self.dir.display(), end, target, "truncated log does not end where expected");
        }
        let size = fresh.size_bytes();
        let f = fresh.inner.into_inner();
        inner.segments = f.segments;
        inner.unsynced.extend(f.unsynced);
        inner.log_start_offset = f.log_start_offset;
        inner.epochs = f.epochs;
        // The reopened table knows the last segment's producers only; the
        // old one, without the removed batches, knows them all.
        inner.producers.truncate_to(end);
        inner.txns.truncate_to(end);
        self.start_offset
            .store(f.log_start_offset, Ordering::Release);
        self.end_offset.store(end, Ordering::Release);
        self.size_bytes.store(size, Ordering::Relaxed);
        self.durable.truncated(end);
        self.checkpointed_offset.store(-1, Ordering::Release);
        let hw = if self.replicated.load(Ordering::Acquire) {
            self.high_watermark().min(end).max(f.log_start_offset)
        } else {
            end
        };
        self.high_watermark.store(hw, Ordering::Release);
    }
}

/// The whole batches at the start of a replica fetch's records, each
/// validated, with the error of the first invalid one; a partial batch at
/// the end is left out.
fn replica_batches(records: &[u8]) -> (Vec<(usize, BatchHeader)>, Option<LogError>) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Ok(h) = BatchHeader::parse(&records[pos..]) {
        if h.batch_length < (HEADER_LEN - batch::LOG_OVERHEAD) as i32 {
            let e = batch::BatchError::Framing("batch length smaller than its header");
            return (out, Some(e.into()));
        }
        let total = h.total_len();
        let Some(bytes) = records.get(pos..pos + total) else {
            break;
        };
        match batch::validate_stored(bytes) {
            Ok(h) => out.push((pos, h)),
            Err(e) => return (out, Some(e.into())),
        }
        pos += total;
    }
    (out, None)
}
