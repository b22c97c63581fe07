//! The storage engine: one append-only, segmented log per partition.
//!
//! This module knows record batches only through their v2 header
//! ([`batch`]); it imports nothing from the Kafka protocol layer. A
//! [`PartitionLog`] takes validated batches, stamps their offsets and writes
//! them as they came; reads hand out windows of the mapped segment files.
//!
//! Concurrency: all mutable state of a partition sits behind one short-held
//! `parking_lot` mutex that is never held across an `.await` or an fsync of the
//! active segment. Durability waits go through [`PartitionLog::flush_to`],
//! which shares one fsync among every producer waiting at the time (group
//! commit).

pub mod batch;
pub mod checkpoint;
pub mod compression;
pub mod faults;
pub mod framed;
pub mod index;
pub mod mmap;
pub mod producers;
pub mod segment;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use thiserror::Error;

use batch::{BatchError, BatchHeader, HEADER_LEN};
use producers::ProducerTable;
pub use producers::SequenceCheck;
use segment::Segment;

/// Name of the file holding a partition's log start offset when DeleteRecords
/// or retention moved it inside a segment.
const LOG_START_FILE: &str = "log-start-offset";

/// Storage errors. Each maps to one Kafka error code in the API layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("offset {offset} is outside the log [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("out of order sequence number")]
    OutOfOrderSequence,
    #[error("producer epoch is older than the current one")]
    InvalidProducerEpoch,
    #[error("transactional batches are not supported")]
    Transactional,
    #[error("corrupt log in {dir}: {reason}")]
    Corruption { dir: String, reason: String },
    #[error("the partition was deleted")]
    Closed,
    /// The topic's name is reserved for the broker's internal state:
    /// clients may read it but not produce to it.
    #[error(
        "the topic name is reserved for the broker's internal use; clients may not produce to it"
    )]
    ReservedTopic,
}

/// Per-partition settings, from the topic's configs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    pub index_interval_bytes: u64,
    /// `cleanup.policy` includes `delete`: retention applies.
    pub delete_retention: bool,
    /// Largest size a produced batch may decompress to
    /// (`--max-decompressed-batch-bytes`).
    pub max_decompressed_batch_bytes: usize,
    /// Whether clients may produce to the partition (false for a topic
    /// whose name is reserved, kept from an older data dir).
    pub client_appends: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            index_interval_bytes: 4096,
            delete_retention: true,
            max_decompressed_batch_bytes: compression::DEFAULT_MAX_DECOMPRESSED_BYTES,
            client_appends: true,
        }
    }
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker time stamped into the batch, or -1 for CreateTime.
    pub log_append_time: i64,
    /// True when the batch was a retry of one already written.
    pub duplicate: bool,
    pub records: i64,
}

/// Result of a read.
#[derive(Debug, Clone)]
pub struct ReadInfo {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

struct Inner {
    segments: BTreeMap<i64, Segment>,
    /// Sealed segments whose data has not been fsynced yet: the next
    /// [`PartitionLog::flush_to`] syncs them with the active one, so a roll
    /// never fsyncs under the lock.
    unsynced: Vec<Arc<std::fs::File>>,
    log_start_offset: i64,
    config: LogConfig,
    producers: ProducerTable,
}

/// A partition's durable state, shared with the fsync running on the
/// blocking pool, which reports to every waiter itself: waiters do not
/// depend on the task that started the fsync being polled.
#[derive(Debug)]
struct Durability {
    /// Every offset below this is on stable storage.
    flushed_offset: AtomicI64,
    /// Set when an fsync failed: the kernel may have dropped the dirty pages,
    /// so nothing more is acknowledged as durable until a restart recovers
    /// the log (as Kafka takes a failed log directory offline).
    failed: AtomicBool,
    /// An fsync is running.
    syncing: AtomicBool,
    /// fsyncs of the partition's data.
    fsyncs: AtomicU64,
    /// Woken when an fsync ends.
    synced: tokio::sync::Notify,
}

/// One partition's log.
pub struct PartitionLog {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Offset after the last record: the high watermark on a single broker.
    end_offset: AtomicI64,
    start_offset: AtomicI64,
    /// Bytes on disk, committed.
    size_bytes: AtomicU64,
    /// What is on stable storage, and the fsync in progress.
    durable: Arc<Durability>,
    /// End offset recorded by the last recovery checkpoint.
    checkpointed_offset: AtomicI64,
    /// Serialises recovery checkpoints.
    checkpoint_lock: Mutex<()>,
    /// Woken after each append: fetches waiting on this partition.
    appended: tokio::sync::Notify,
    /// Set when the topic is deleted: handles still held by in-flight
    /// requests must not write into a directory a new topic of the same
    /// name may own.
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("end_offset", &self.end_offset)
            .finish()
    }
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io { context, source }
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`: lists the segments, scans the
    /// active one with CRC checks, truncates a torn tail, and rebuilds the
    /// producer table from it.
    ///
    /// # Errors
    /// I/O errors, or a layout that cannot be repaired by cutting a tail.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Self, LogError> {
        Self::open_with(dir, config, now_ms, false)
    }

    /// Like [`PartitionLog::open`]; after a clean shutdown (everything was
    /// fsynced and the files trimmed) the active segment's batches are not
    /// CRC-checked again, only walked by their headers.
    ///
    /// # Errors
    /// I/O errors, or a layout that cannot be repaired by cutting a tail.
    pub fn open_with(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
        clean: bool,
    ) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(io_err(format!("failed to create {}", dir.display())))?;
        let mut bases = Vec::new();
        for entry in
            fs::read_dir(dir).map_err(io_err(format!("failed to list {}", dir.display())))?
        {
            let entry = entry.map_err(io_err(format!("failed to list {}", dir.display())))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(base) = segment::parse_file_name(name) {
                bases.push((base, entry.path()));
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        bases.sort_by_key(|(b, _)| *b);
        let interval = config.index_interval_bytes;
        let mut segments = BTreeMap::new();
        let mut producers = ProducerTable::default();
        let mut unsynced = Vec::new();
        let mut covered_end = None;
        if bases.is_empty() {
            segments.insert(0, Segment::create(dir, 0, now_ms, interval)?);
            sync_dir(dir)?;
        } else {
            // Segments from the checkpoint's on are recovered (scanned with
            // CRC checks); the ones before it were fsynced and are trusted.
            // Without a checkpoint only the last segment is scanned.
            let rp = checkpoint::read(dir)
                .filter(|rp| bases.iter().any(|(b, _)| *b == rp.segment.base_offset));
            let last_base = bases.last().map_or(0, |(b, _)| *b);
            let from = rp.as_ref().map_or(last_base, |rp| rp.segment.base_offset);
            let mut next_bases = bases.iter().skip(1).map(|(b, _)| *b);
            let mut torn_at = None;
            for (base, path) in &bases {
                let next = next_bases.next();
                if *base < from {
                    let next = next.unwrap_or(*base);
                    segments.insert(
                        *base,
                        Segment::open_sealed(path.clone(), *base, next, interval)?,
                    );
                    continue;
                }
                if torn_at.is_some() {
                    // After a torn segment: not part of the log any more.
                    tracing::warn!(segment = %path.display(), "deleting a segment after a torn one");
                    let _ = fs::remove_file(path);
                    index::remove_files(path);
                    continue;
                }
                let mut seg = Segment::open_active(path.clone(), *base, interval)?;
                let restored = rp
                    .as_ref()
                    .filter(|rp| rp.segment.base_offset == *base)
                    .is_some_and(|rp| seg.restore(&rp.segment));
                if restored {
                    if let Some(rp) = &rp {
                        producers = ProducerTable::from_snapshot(&rp.producers);
                    }
                } else if rp
                    .as_ref()
                    .is_some_and(|rp| rp.segment.base_offset == *base)
                {
                    tracing::warn!(
                        segment = %path.display(),
                        "recovery point does not match the segment; scanning all of it"
                    );
                }
                let (headers, torn) = seg.scan(!clean);
                for h in &headers {
                    producers.record(h);
                }
                if torn {
                    tracing::warn!(
                        segment = %path.display(),
                        valid_bytes = seg.size(),
                        "truncating torn tail of the log"
                    );
                    seg.trim(true)?;
                    torn_at = Some(*base);
                }
                let is_last = *base == last_base || torn;
                if !is_last {
                    unsynced.extend(seg.seal()?);
                }
                segments.insert(*base, seg);
            }
            if torn_at.is_some() {
                sync_dir(dir)?;
            }
            covered_end = rp
                .filter(|rp| rp.segment.base_offset == last_base && torn_at.is_none())
                .map(|rp| rp.segment.next_offset);
        }
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let end = segments
            .values()
            .next_back()
            .map_or(0, |s| s.next_offset().max(s.base_offset));
        let checkpoint = read_log_start(dir).unwrap_or(first_base);
        let log_start = checkpoint.clamp(first_base, end);
        let size = segments.values().map(Segment::size).sum();
        // A recovery point that already covers everything needs no rewrite.
        let checkpointed = if covered_end == Some(end) { end } else { -1 };
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                segments,
                unsynced,
                log_start_offset: log_start,
                config,
                producers,
            }),
            end_offset: AtomicI64::new(end),
            start_offset: AtomicI64::new(log_start),
            size_bytes: AtomicU64::new(size),
            durable: Arc::new(Durability {
                flushed_offset: AtomicI64::new(end),
                failed: AtomicBool::new(false),
                syncing: AtomicBool::new(false),
                fsyncs: AtomicU64::new(0),
                synced: tokio::sync::Notify::new(),
            }),
            checkpointed_offset: AtomicI64::new(checkpointed),
            checkpoint_lock: Mutex::new(()),
            appended: tokio::sync::Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Offset after the last record (the high watermark).
    pub fn end_offset(&self) -> i64 {
        self.end_offset.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.start_offset.load(Ordering::Acquire)
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }

    /// fsyncs of this partition's data since it was opened.
    pub fn fsyncs(&self) -> u64 {
        self.durable.fsyncs.load(Ordering::Relaxed)
    }

    pub fn flushed_offset(&self) -> i64 {
        self.durable.flushed_offset.load(Ordering::Acquire)
    }

    pub fn set_config(&self, config: LogConfig) {
        self.inner.lock().config = config;
    }

    pub fn config(&self) -> LogConfig {
        self.inner.lock().config.clone()
    }

    /// Validates and appends one produce payload for this partition: exactly
    /// one v2 batch (as Kafka requires from Produce v3 on).
    ///
    /// # Errors
    /// Invalid batches, size limits, sequence errors and I/O errors.
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        let r = self.append_checked(records, now_ms, true);
        self.wake_readers(&r);
        r
    }

    /// Appends a batch the broker built itself (retry deliveries, dead
    /// letters, redrive): `max.message.bytes` limits producers, and a record
    /// accepted once must not be stuck because re-encoding made it larger.
    ///
    /// # Errors
    /// Invalid batches and I/O errors.
    pub fn append_internal(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        let r = self.append_checked(records, now_ms, false);
        self.wake_readers(&r);
        r
    }

    /// Completes at the next append to this partition. Enable it (or poll
    /// it once) before looking at the log, so no append is missed.
    pub fn next_append(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    fn wake_readers(&self, r: &Result<AppendInfo, LogError>) {
        if matches!(r, Ok(info) if !info.duplicate) {
            self.appended.notify_waiters();
        }
    }

    fn append_checked(
        &self,
        records: &[u8],
        now_ms: i64,
        from_client: bool,
    ) -> Result<AppendInfo, LogError> {
        self.check_not_failed()?;
        let h = single_batch(records)?;
        if from_client {
            // Outside the lock: decompressing takes a while.
            self.check_client_batch(records, &h)?;
        }
        let mut inner = self.inner.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if from_client && records.len() > inner.config.max_message_bytes {
            return Err(LogError::TooLarge {
                size: records.len(),
                max: inner.config.max_message_bytes,
            });
        }
        match inner.producers.check(&h) {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate(base) => {
                return Ok(AppendInfo {
                    base_offset: base,
                    last_offset: base + i64::from(h.last_offset_delta),
                    log_append_time: -1,
                    duplicate: true,
                    records: 0,
                });
            }
            SequenceCheck::OutOfOrder => return Err(LogError::OutOfOrderSequence),
            SequenceCheck::StaleEpoch => return Err(LogError::InvalidProducerEpoch),
        }
        let base = self.end_offset.load(Ordering::Acquire);
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&records[..HEADER_LEN]);
        batch::set_base_offset(&mut header, base);
        batch::set_leader_epoch(&mut header, 0);
        let body = &records[HEADER_LEN..];
        let log_append_time = if inner.config.log_append_time {
            header[21..23].copy_from_slice(&(h.attributes | 0x08).to_be_bytes());
            header[35..43].copy_from_slice(&now_ms.to_be_bytes());
            let crc = crc32c::crc32c_append(crc32c::crc32c(&header[21..]), body);
            header[17..21].copy_from_slice(&crc.to_be_bytes());
            now_ms
        } else {
            -1
        };
        let stamped = BatchHeader::parse(&header)?;
        let cfg = inner.config.clone();
        let len = records.len() as u64;
        let needs_roll = inner
            .segments
            .values()
            .next_back()
            .is_some_and(|s| s.should_roll(len, cfg.segment_bytes, cfg.segment_ms, now_ms));
        if needs_roll {
            self.roll_locked(&mut inner, base, now_ms)?;
        }
        let active =
            inner
                .segments
                .values_mut()
                .next_back()
                .ok_or_else(|| LogError::Corruption {
                    dir: self.dir.display().to_string(),
                    reason: "no active segment".into(),
                })?;
        active.append(&header, body, &stamped, cfg.segment_bytes)?;
        inner.producers.record(&stamped);
        self.size_bytes.fetch_add(len, Ordering::Relaxed);
        self.end_offset
            .store(stamped.last_offset() + 1, Ordering::Release);
        Ok(AppendInfo {
            base_offset: base,
            last_offset: stamped.last_offset(),
            log_append_time,
            duplicate: false,
            records: i64::from(h.records_count),
        })
    }

    /// Validates a batch that will not be appended here (a retry hand-back)
    /// and checks its producer sequence, without recording it.
    ///
    /// # Errors
    /// Invalid batches, size limits.
    pub fn check_external(&self, records: &[u8]) -> Result<(BatchHeader, SequenceCheck), LogError> {
        let h = single_batch(records)?;
        self.check_client_batch(records, &h)?;
        let inner = self.inner.lock();
        if records.len() > inner.config.max_message_bytes {
            return Err(LogError::TooLarge {
                size: records.len(),
                max: inner.config.max_message_bytes,
            });
        }
        Ok((h, inner.producers.check(&h)))
    }

    /// What a producer's batch passes beyond its header: the partition takes
    /// client writes, and the records inside the batch (decompressed, within
    /// `max_decompressed_batch_bytes`) are well formed. A batch over the
    /// bound is worth a warning (a misconfigured producer or a decompression
    /// bomb), at most one a minute across the broker.
    fn check_client_batch(&self, records: &[u8], h: &BatchHeader) -> Result<(), LogError> {
        let (limit, client_appends) = {
            let inner = self.inner.lock();
            (
                inner.config.max_decompressed_batch_bytes,
                inner.config.client_appends,
            )
        };
        if !client_appends {
            return Err(LogError::ReservedTopic);
        }
        let r = batch::validate_records(records, h, limit);
        if let Err(e @ BatchError::DecompressedTooLarge { .. }) = &r {
            static LAST_WARN_MS: AtomicI64 = AtomicI64::new(i64::MIN);
            let now = wall_clock_ms();
            let last = LAST_WARN_MS.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 60_000
                && LAST_WARN_MS
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    partition = %self.dir.display(),
                    compressed_bytes = records.len(),
                    codec = compression::codec_name(h.compression()),
                    error = %e,
                    "refused a produced batch (further ones within a minute are logged at debug level)"
                );
            } else {
                tracing::debug!(partition = %self.dir.display(), error = %e, "refused a produced batch");
            }
        }
        r.map_err(LogError::from)
    }

    /// Records the sequence of a batch taken by [`PartitionLog::check_external`]
    /// once it is durably held elsewhere, so that a retry of it is a duplicate.
    pub fn record_external(&self, h: &BatchHeader) {
        let mut h = *h;
        h.base_offset = -1;
        self.inner.lock().producers.record(&h);
    }

    /// Seals the active segment (trim, fsync) and starts a new one at `base`.
    /// Marks the log deleted: every later write is refused.
    pub fn close(&self) {
        // Taking the lock orders this after any append in progress.
        let _inner = self.inner.lock();
        self.closed.store(true, Ordering::Release);
    }

    /// fsyncs `files` on this thread; a failure takes the partition offline.
    fn sync_files(&self, files: &[Arc<std::fs::File>]) -> Result<(), LogError> {
        self.durable.fsyncs.fetch_add(1, Ordering::Relaxed);
        let synced = faults::check(faults::Op::Sync, &self.dir)
            .and_then(|()| files.iter().try_for_each(|f| f.sync_data()));
        if let Err(e) = synced {
            self.durable.failed.store(true, Ordering::Release);
            tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed; partition taken offline");
            return Err(LogError::Io {
                context: format!("failed to sync {}", self.dir.display()),
                source: e,
            });
        }
        Ok(())
    }

    fn check_not_failed(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if self.durable.failed.load(Ordering::Acquire) {
            return Err(LogError::Io {
                context: format!(
                    "{} is offline after an fsync failure; restart to recover",
                    self.dir.display()
                ),
                source: std::io::Error::other("earlier fsync failed"),
            });
        }
        Ok(())
    }

    fn roll_locked(&self, inner: &mut Inner, base: i64, now_ms: i64) -> Result<(), LogError> {
        if let Some(active) = inner.segments.values_mut().next_back() {
            let files = active.seal()?;
            inner.unsynced.extend(files);
        }
        let seg = Segment::create(&self.dir, base, now_ms, inner.config.index_interval_bytes)?;
        sync_dir(&self.dir)?;
        inner.segments.insert(base, seg);
        Ok(())
    }

    /// Reads whole batches starting with the one that contains `offset`.
    ///
    /// # Errors
    /// `OffsetOutOfRange` below the log start or above the end.
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<ReadInfo, LogError> {
        let now = wall_clock_ms();
        let mut inner = self.inner.lock();
        let end = self.end_offset();
        let start = inner.log_start_offset;
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        let mut records = Bytes::new();
        if offset < end {
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
        }
        Ok(ReadInfo {
            records,
            high_watermark: end,
            log_start_offset: start,
        })
    }

    /// Waits until every offset below `offset` is on stable storage. One
    /// fsync runs at a time; callers that arrive meanwhile wait for it to end
    /// and then either find their data covered or start the next one, which
    /// covers everything appended by then (group commit).
    ///
    /// # Errors
    /// The fsync's I/O error.
    pub async fn flush_to(&self, offset: i64) -> Result<(), LogError> {
        loop {
            let synced = self.durable.synced.notified();
            tokio::pin!(synced);
            // Registered before the checks below, so an fsync ending after
            // them wakes this caller.
            synced.as_mut().enable();
            if self.flushed_offset() >= offset {
                return Ok(());
            }
            self.check_not_failed()?;
            if self.durable.syncing.swap(true, Ordering::AcqRel) {
                synced.await;
                continue;
            }
            return self.sync_all().await;
        }
    }

    /// Runs one fsync of everything appended so far on the blocking pool,
    /// with [`Durability::syncing`] set by the caller. The blocking task
    /// publishes the result and wakes the waiters itself, even if this
    /// future is dropped.
    async fn sync_all(&self) -> Result<(), LogError> {
        // Clears `syncing` and wakes the waiters however the task ends: run
        // to its end, panicked, or dropped unrun by a stopping runtime.
        struct Done(Arc<Durability>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.syncing.store(false, Ordering::Release);
                self.0.synced.notify_waiters();
            }
        }
        let done = Done(Arc::clone(&self.durable));
        let (files, path, end) = {
            let inner = self.inner.lock();
            let path = inner
                .segments
                .values()
                .next_back()
                .map_or_else(|| self.dir.clone(), |s| s.path().to_path_buf());
            (Self::files_to_sync(&inner), path, self.end_offset())
        };
        let dir = self.dir.clone();
        let synced_files = files.clone();
        let task = tokio::task::spawn_blocking(move || {
            let durable = &done.0;
            durable.fsyncs.fetch_add(1, Ordering::Relaxed);
            let res = faults::check(faults::Op::Sync, &dir)
                .and_then(|()| files.iter().try_for_each(|f| f.sync_data()));
            match &res {
                Ok(()) => {
                    durable.flushed_offset.fetch_max(end, Ordering::AcqRel);
                }
                Err(e) => {
                    durable.failed.store(true, Ordering::Release);
                    tracing::error!(dir = %dir.display(), error = %e, "fsync failed; partition taken offline");
                }
            }
            drop(done);
            res
        });
        match task.await {
            Ok(Ok(())) => {
                self.mark_synced(&synced_files);
                Ok(())
            }
            Ok(Err(e)) => Err(io_err(format!("failed to sync {}", path.display()))(e)),
            // Panicked, or never ran (the runtime is stopping): nothing was
            // published, and the files stay listed for the next fsync.
            Err(e) => Err(LogError::Io {
                context: format!("fsync task for {} failed", path.display()),
                source: std::io::Error::other(e),
            }),
        }
    }

    /// The files an fsync must cover now: the sealed segments not synced yet
    /// and the active one. Sealed files stay listed until an fsync of them
    /// succeeded ([`Self::mark_synced`]), so one that runs while another
    /// syncer's fsync of them is still in progress covers them too, instead
    /// of publishing an end offset past data not yet on disk.
    fn files_to_sync(inner: &Inner) -> Vec<Arc<std::fs::File>> {
        let mut files = inner.unsynced.clone();
        if let Some(s) = inner.segments.values().next_back() {
            files.extend(s.file().cloned());
        }
        files
    }

    /// Takes files an fsync covered off the list of sealed, unsynced ones.
    fn mark_synced(&self, files: &[Arc<std::fs::File>]) {
        self.inner
            .lock()
            .unsynced
            .retain(|u| !files.iter().any(|f| Arc::ptr_eq(u, f)));
    }

    /// Synchronous fsync of everything written (shutdown, tests).
    ///
    /// # Errors
    /// The fsync's I/O error.
    pub fn flush(&self) -> Result<(), LogError> {
        self.check_not_failed()?;
        let (files, end) = {
            let inner = self.inner.lock();
            (Self::files_to_sync(&inner), self.end_offset())
        };
        self.sync_files(&files)?;
        self.mark_synced(&files);
        self.durable.flushed_offset.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// Moves the log start offset forward to `offset` (DeleteRecords), and
    /// deletes segments that lie wholly below it. Returns the new start.
    ///
    /// # Errors
    /// `OffsetOutOfRange` above the end; I/O errors.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let mut inner = self.inner.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let end = self.end_offset();
        let offset = if offset == -1 { end } else { offset };
        if offset < 0 || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: inner.log_start_offset,
                end,
            });
        }
        if offset > inner.log_start_offset {
            write_log_start(&self.dir, offset)?;
            inner.log_start_offset = offset;
            self.start_offset.store(offset, Ordering::Release);
            self.delete_segments_below_locked(&mut inner, offset);
        }
        Ok(inner.log_start_offset)
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
            if inner.segments.len() < 2 {
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
                inner.log_start_offset = next_base;
                self.start_offset.store(next_base, Ordering::Release);
            }
            tracing::info!(segment = %path.display(), "deleted segment by retention");
        }
        deleted
    }

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

    /// The segment files with their committed sizes, the log start offset
    /// and the end offset, taken under the lock: bytes below each size never
    /// change, so copying them later gives a consistent prefix of the log.
    pub fn snapshot(&self) -> (Vec<(PathBuf, u64)>, i64, i64) {
        let inner = self.inner.lock();
        let files = inner
            .segments
            .values()
            .map(|s| (s.path().to_path_buf(), s.size()))
            .collect();
        (files, inner.log_start_offset, self.end_offset())
    }

    /// Writes a recovery checkpoint when data was appended since the last
    /// one: fsyncs the segments (and sealed ones not yet synced) and the
    /// active segment's new index entries, then records how far they reach
    /// and the producer table in `recovery-point`. Returns whether it wrote
    /// one. Blocking: run it off the async threads.
    ///
    /// # Errors
    /// I/O errors; an fsync failure takes the partition offline.
    pub fn checkpoint(&self) -> Result<bool, LogError> {
        let _guard = self.checkpoint_lock.lock();
        if self.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        self.check_not_failed()?;
        let (files, index_path, rp) = {
            let mut inner = self.inner.lock();
            if self.checkpointed_offset.load(Ordering::Acquire) == self.end_offset()
                && inner.unsynced.is_empty()
            {
                return Ok(false);
            }
            let files = Self::files_to_sync(&inner);
            let producers = inner.producers.snapshot();
            let Some(active) = inner.segments.values_mut().next_back() else {
                return Ok(false);
            };
            let index_ok = match active.persist_index() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "failed to write index entries");
                    false
                }
            };
            let mut state = active.state();
            if !index_ok {
                state.index_entries = 0;
                state.time_entries = 0;
            }
            let rp = checkpoint::RecoveryPoint {
                segment: state,
                producers,
            };
            (files, active.path().to_path_buf(), rp)
        };
        self.sync_files(&files)?;
        self.mark_synced(&files);
        let mut rp = rp;
        if rp.segment.index_entries > 0 || rp.segment.time_entries > 0 {
            if let Err(e) = segment::sync_index_files(&index_path) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "failed to sync index files");
                rp.segment.index_entries = 0;
                rp.segment.time_entries = 0;
            }
        }
        checkpoint::write(&self.dir, &rp)?;
        self.durable
            .flushed_offset
            .fetch_max(rp.segment.next_offset, Ordering::AcqRel);
        self.checkpointed_offset
            .store(rp.segment.next_offset, Ordering::Release);
        Ok(true)
    }

    /// Releases the maps of sealed segments not read since `before_ms`.
    /// Returns how many it released.
    pub fn release_idle(&self, before_ms: i64) -> usize {
        let mut inner = self.inner.lock();
        inner
            .segments
            .values_mut()
            .filter_map(|s| s.release_if_idle(before_ms).then_some(()))
            .count()
    }

    /// Number of sealed segments whose files are mapped now.
    pub fn mapped_sealed_segments(&self) -> usize {
        let inner = self.inner.lock();
        let n = inner.segments.len().saturating_sub(1);
        inner
            .segments
            .values()
            .take(n)
            .filter(|s| s.is_mapped())
            .count()
    }

    /// Number of segments (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.inner.lock().segments.len()
    }

    /// Base offsets of the segments (for tests).
    pub fn segment_bases(&self) -> Vec<i64> {
        self.inner.lock().segments.keys().copied().collect()
    }
}

/// Milliseconds since the epoch, for the last-use time of segments.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Validates a produce payload for one partition: exactly one v2 batch (as
/// Kafka requires from Produce v3 on), not transactional.
fn single_batch(records: &[u8]) -> Result<BatchHeader, LogError> {
    let batches = batch::split_batches(records)?;
    if batches.len() != 1 {
        return Err(BatchError::Invalid("a produce must carry exactly one record batch").into());
    }
    let (_, h) = batches[0];
    if h.is_transactional() || h.is_control() {
        return Err(LogError::Transactional);
    }
    Ok(h)
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
    let sets = crate::records::decode_all(bytes).ok()?;
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
    let sets = crate::records::decode_all(bytes).ok()?;
    let found = sets
        .iter()
        .flat_map(|s| s.records.iter())
        .filter(|r| r.timestamp == h.max_timestamp && r.offset >= from)
        .last()
        .map(|r| (r.offset, r.timestamp));
    found
}

fn read_log_start(dir: &Path) -> Option<i64> {
    fs::read_to_string(dir.join(LOG_START_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn write_log_start(dir: &Path, offset: i64) -> Result<(), LogError> {
    write_atomic(&dir.join(LOG_START_FILE), offset.to_string().as_bytes())
}

/// Writes `path` crash-safely: temp file, fsync, rename, fsync of the directory.
///
/// # Errors
/// Any I/O error on the way; the old file stays intact.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let mut f =
        fs::File::create(&tmp).map_err(io_err(format!("failed to create {}", tmp.display())))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("failed to write {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_err(format!("failed to rename {}", tmp.display())))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// fsync of a directory, so that created, renamed or removed entries persist.
///
/// # Errors
/// The I/O error.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!(
            "failed to sync directory {}",
            dir.display()
        )))
}

#[cfg(test)]
mod tests {
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
        b[43..51].copy_from_slice(&7i64.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&0i32.to_be_bytes());
        let crc = batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        log.append(&make_batch(2, 1), 0).unwrap();
        let first = log.append(&b, 0).unwrap();
        let again = log.append(&b, 0).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.base_offset, first.base_offset);
        assert_eq!(log.end_offset(), 5);
    }
}

#[cfg(test)]
mod recovery_props {
    use super::*;
    use batch::tests::make_batch;
    use proptest::prelude::*;

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
