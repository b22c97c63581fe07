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
pub mod cleaner;
pub mod compression;
mod config;
mod durability;
pub mod epochs;
mod error;
pub mod faults;
pub mod framed;
pub mod index;
mod lookup;
pub mod mmap;
pub mod producers;
mod read;
pub mod records;
mod reopen;
mod replica;
mod retention;
pub mod segment;
mod transactions;
pub mod txn;
pub mod txn_types;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use batch::{BatchError, BatchHeader, HEADER_LEN};
pub use config::LogConfig;
use epochs::EpochCache;
use error::io_err;
pub use error::{sync_dir, write_atomic, LogError};
use producers::ProducerTable;
pub use producers::SequenceCheck;
use segment::Segment;
use txn::{AbortedTxn, TxnIndex};

/// Name of the file holding a partition's log start offset when DeleteRecords
/// or retention moved it inside a segment.
const LOG_START_FILE: &str = "log-start-offset";

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
    /// Offset below which every transaction is decided.
    pub last_stable_offset: i64,
    /// For a `read_committed` read: the aborted transactions whose records
    /// the read may hold (empty otherwise).
    pub aborted: Vec<AbortedTxn>,
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
    /// Where each leader epoch's batches start ([`epochs`]).
    epochs: EpochCache,
    /// Open and aborted transactions ([`txn`]).
    txns: TxnIndex,
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
    /// Tail truncations so far: an fsync that started before one must not
    /// publish an end offset the truncation removed.
    truncations: Mutex<u64>,
}

impl Durability {
    /// Publishes that everything below `end` is on stable storage, unless
    /// the log was truncated since `generation` was read (with the end, under
    /// the partition lock).
    fn publish(&self, generation: u64, end: i64) {
        let g = self.truncations.lock();
        if *g == generation {
            self.flushed_offset.fetch_max(end, Ordering::AcqRel);
        }
    }

    /// The current truncation generation.
    fn generation(&self) -> u64 {
        *self.truncations.lock()
    }

    /// Records a tail truncation to `end`.
    fn truncated(&self, end: i64) {
        let mut g = self.truncations.lock();
        *g += 1;
        self.flushed_offset.fetch_min(end, Ordering::AcqRel);
    }
}

/// One partition's log.
pub struct PartitionLog {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Offset after the last record: the log end offset (LEO).
    end_offset: AtomicI64,
    /// Offset below which records are committed: what consumers may read.
    /// Equal to the end offset unless the log is replicated.
    high_watermark: AtomicI64,
    /// Whether the high watermark is set by replication
    /// ([`PartitionLog::set_high_watermark`]) instead of following the end.
    replicated: AtomicBool,
    /// Partition leader epoch stamped into appended batches.
    leader_epoch: AtomicI32,
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
        // A cleaner pass cut short: finish or discard it first.
        cleaner::files::recover(dir)?;
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
        let mut txns = TxnIndex::default();
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
                        txns = rp.txns.clone();
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
                    let marker = if h.is_control() {
                        seg.find_batch(h.base_offset)
                            .and_then(|(pos, h)| txn::parse_marker(&seg.batch_bytes(pos, &h)))
                    } else {
                        None
                    };
                    txns.record(h, marker);
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
        let epochs = reopen::load_epochs(dir, &mut segments, log_start, end, now_ms);
        txns.truncate_to(end);
        txns.trim_before(log_start);
        // Offsets past the end (a cut tail) are dirty again.
        cleaner::files::clip_checkpoint(dir, end)?;
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
                epochs,
                txns,
            }),
            end_offset: AtomicI64::new(end),
            high_watermark: AtomicI64::new(end),
            replicated: AtomicBool::new(false),
            leader_epoch: AtomicI32::new(0),
            start_offset: AtomicI64::new(log_start),
            size_bytes: AtomicU64::new(size),
            durable: Arc::new(Durability {
                flushed_offset: AtomicI64::new(end),
                failed: AtomicBool::new(false),
                syncing: AtomicBool::new(false),
                fsyncs: AtomicU64::new(0),
                synced: tokio::sync::Notify::new(),
                truncations: Mutex::new(0),
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

    /// Offset after the last record: the log end offset (LEO). On a single
    /// broker it is also the high watermark.
    pub fn end_offset(&self) -> i64 {
        self.end_offset.load(Ordering::Acquire)
    }

    /// Offset below which records are committed (consumers read below it);
    /// the end offset unless the log is replicated.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Whether the high watermark is set by replication.
    pub fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Acquire)
    }

    /// Makes the high watermark follow [`PartitionLog::set_high_watermark`]
    /// (`true`, a replicated partition) or the end offset on every append
    /// (`false`, the default). Turning replication off moves the high
    /// watermark to the end at once.
    pub fn set_replicated(&self, replicated: bool) {
        let inner = self.inner.lock();
        self.replicated.store(replicated, Ordering::Release);
        let moved = !replicated && self.advance_hw_locked(&inner, self.end_offset());
        drop(inner);
        if moved {
            self.appended.notify_waiters();
        }
    }

    /// Moves the high watermark forward to `hw`, clamped to the log start
    /// and end offsets. It never moves backwards (only a truncation lowers
    /// it). Wakes the fetches waiting in [`PartitionLog::next_append`] when it
    /// moves, so a consumer sees newly committed records.
    pub fn set_high_watermark(&self, hw: i64) {
        let inner = self.inner.lock();
        let moved = self.advance_hw_locked(&inner, hw);
        drop(inner);
        if moved {
            self.appended.notify_waiters();
        }
    }

    /// Raises the high watermark to `hw` within [start, end]; returns
    /// whether it moved.
    fn advance_hw_locked(&self, inner: &Inner, hw: i64) -> bool {
        let end = self.end_offset();
        let target = hw.min(end).max(inner.log_start_offset);
        let old = self.high_watermark.fetch_max(target, Ordering::AcqRel);
        target > old
    }

    /// Sets the partition leader epoch that [`PartitionLog::append`] and
    /// [`PartitionLog::append_internal`] stamp into batches from now on.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
    }

    /// The partition leader epoch stamped into appended batches.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// The epoch of the last entry of the leader-epoch cache: the latest
    /// epoch that wrote a batch still in the log.
    pub fn last_epoch(&self) -> Option<i32> {
        self.inner.lock().epochs.last_epoch()
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` that
    /// wrote into this log, and the offset where it ends (where the next
    /// epoch starts, or the log end offset for the latest). `None` when
    /// `epoch` is below every epoch in the cache. See
    /// [`EpochCache::end_offset_for`] for how this differs from Kafka.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let inner = self.inner.lock();
        inner.epochs.end_offset_for(epoch, self.end_offset())
    }

    /// The leader-epoch cache's entries, oldest first.
    pub fn epoch_entries(&self) -> Vec<epochs::EpochEntry> {
        self.inner.lock().epochs.entries().to_vec()
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
        let h = single_batch(records, !from_client)?;
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
            SequenceCheck::OutOfOrder => {
                tracing::warn!(
                    partition = %self.dir.display(),
                    producer_id = h.producer_id,
                    producer_epoch = h.producer_epoch,
                    first_seq = h.base_sequence,
                    last_seq = h.last_sequence(),
                    end_offset = self.end_offset.load(Ordering::Acquire),
                    known = ?inner.producers.batches_of(h.producer_id),
                    "out-of-order sequence refused"
                );
                return Err(LogError::OutOfOrderSequence);
            }
            SequenceCheck::StaleEpoch => return Err(LogError::InvalidProducerEpoch),
        }
        let base = self.end_offset.load(Ordering::Acquire);
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&records[..HEADER_LEN]);
        batch::set_base_offset(&mut header, base);
        batch::set_leader_epoch(&mut header, self.leader_epoch());
        let body = &records[HEADER_LEN..];
        let log_append_time = if inner.config.log_append_time {
            batch::stamp_log_append_time(&mut header, body, now_ms);
            now_ms
        } else {
            -1
        };
        let stamped = BatchHeader::parse(&header)?;
        self.write_batch_locked(&mut inner, &header, body, &stamped, now_ms)?;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: stamped.last_offset(),
            log_append_time,
            duplicate: false,
            records: i64::from(h.records_count),
        })
    }

    /// Writes one batch whose header (offsets and epoch final) is `header`
    /// at the end of the log: rolls the segment when due, records a new
    /// leader epoch (its cache file is written before the batch, so the file
    /// never lacks an epoch the log holds), writes, and moves the end offset
    /// (and the high watermark, unless replicated).
    fn write_batch_locked(
        &self,
        inner: &mut Inner,
        header: &[u8; HEADER_LEN],
        body: &[u8],
        h: &BatchHeader,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let (segment_bytes, segment_ms) = (inner.config.segment_bytes, inner.config.segment_ms);
        let len = (HEADER_LEN + body.len()) as u64;
        let needs_roll = inner
            .segments
            .values()
            .next_back()
            .is_some_and(|s| s.should_roll(len, segment_bytes, segment_ms, now_ms));
        if needs_roll {
            self.roll_locked(inner, h.base_offset, now_ms)?;
        }
        let epoch = batch::partition_leader_epoch(header);
        if inner.epochs.is_new(epoch) {
            let mut next = inner.epochs.clone();
            next.assign(epoch, h.base_offset);
            epochs::write(&self.dir, &next)?;
            inner.epochs = next;
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
        active.append(header, body, h, segment_bytes)?;
        inner.producers.record(h);
        if h.is_transactional() {
            let marker = if h.is_control() {
                let mut whole = Vec::with_capacity(HEADER_LEN + body.len().min(64));
                whole.extend_from_slice(header);
                whole.extend_from_slice(&body[..body.len().min(64)]);
                txn::parse_marker(&whole)
            } else {
                None
            };
            inner.txns.record(h, marker);
        }
        self.size_bytes.fetch_add(len, Ordering::Relaxed);
        let end = h.last_offset() + 1;
        self.end_offset.store(end, Ordering::Release);
        if !self.replicated.load(Ordering::Acquire) {
            self.high_watermark.store(end, Ordering::Release);
        }
        Ok(())
    }

    /// Validates a batch that will not be appended here (a retry hand-back)
    /// and checks its producer sequence, without recording it.
    ///
    /// # Errors
    /// Invalid batches, size limits.
    pub fn check_external(&self, records: &[u8]) -> Result<(BatchHeader, SequenceCheck), LogError> {
        let h = single_batch(records, false)?;
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
        let (limit, client_appends, keys_required) = {
            let inner = self.inner.lock();
            (
                inner.config.max_decompressed_batch_bytes,
                inner.config.client_appends,
                inner.config.keys_required,
            )
        };
        if !client_appends {
            return Err(LogError::ReservedTopic);
        }
        let r = batch::validate_records(records, h, limit, keys_required);
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
            let txns = inner.txns.clone();
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
                txns,
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
/// Kafka requires from Produce v3 on), not a control batch (markers are
/// written by the broker: `control` says whether this one is the broker's).
fn single_batch(records: &[u8], control: bool) -> Result<BatchHeader, LogError> {
    let batches = batch::split_batches(records)?;
    if batches.len() != 1 {
        return Err(BatchError::Invalid("a produce must carry exactly one record batch").into());
    }
    let (_, h) = batches[0];
    if h.is_control() && !control {
        return Err(LogError::ControlBatch);
    }
    if h.is_transactional() && !h.is_control() && (h.producer_id < 0 || h.base_sequence < 0) {
        return Err(
            BatchError::Invalid("a transactional batch needs a producer id and sequence").into(),
        );
    }
    Ok(h)
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

#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod tests;
