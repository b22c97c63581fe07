//! Recovery checkpoints: a partition's `recovery-point` says how far its
//! log is on stable storage (with the producer table and open
//! transactions there), so that a start after a crash scans only what
//! came after it.
//!
//! One partition's checkpoint fsyncs its segments, its index files and the
//! checkpoint file (then its directory): a handful of fsyncs. The periodic
//! round over every partition that changed ([`PartitionLog::prepare_checkpoint`]
//! and the registry's `checkpoint_all`) shares them instead: every partition
//! takes its recovery point first, one `syncfs` of the data dir's
//! filesystem puts everything those points cover on disk, the checkpoint
//! files are written (renamed into place) without an fsync each, and a
//! second `syncfs` makes them durable. A round costs two syncs however many
//! partitions it covers. A checkpoint file a crash tore between the two is
//! refused when read (its frame checksum) and the partition recovers as if
//! it had none, which is safe: the data it would have covered was synced
//! by the first sync.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::checkpoint::{self, RecoveryPoint};
use super::error::LogError;
use super::{faults, segment, PartitionLog};

/// One partition's share of a checkpoint: the recovery point taken and the
/// files that must be on stable storage before it is written.
#[derive(Debug)]
pub struct PendingCheckpoint {
    files: Vec<Arc<std::fs::File>>,
    rp: RecoveryPoint,
    index_path: std::path::PathBuf,
}

/// One partition's share of a flush: its files and how far they reach.
#[derive(Debug)]
pub struct PendingFlush {
    files: Vec<Arc<std::fs::File>>,
    end: i64,
    generation: u64,
}

impl PartitionLog {
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
        let Some(p) = self.prepare_locked()? else {
            return Ok(false);
        };
        self.sync_and_write(p)?;
        Ok(true)
    }

    /// Takes a recovery point without syncing anything (the first step of
    /// a round shared by many partitions): `None` when nothing changed
    /// since the last one.
    ///
    /// # Errors
    /// The partition is offline.
    pub fn prepare_checkpoint(&self) -> Result<Option<PendingCheckpoint>, LogError> {
        let _guard = self.checkpoint_lock.lock();
        self.prepare_locked()
    }

    fn prepare_locked(&self) -> Result<Option<PendingCheckpoint>, LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(None);
        }
        self.check_not_failed()?;
        let mut inner = self.inner.lock();
        if self.checkpointed_offset.load(Ordering::Acquire) == self.end_offset()
            && inner.unsynced.is_empty()
        {
            return Ok(None);
        }
        let files = Self::files_to_sync(&inner);
        let producers = inner.producers.snapshot();
        let txns = inner.txns.clone();
        let Some(active) = inner.segments.values_mut().next_back() else {
            return Ok(None);
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
        Ok(Some(PendingCheckpoint {
            files,
            index_path: active.path().to_path_buf(),
            rp: RecoveryPoint {
                segment: state,
                producers,
                txns,
            },
        }))
    }

    /// Finishes a prepared checkpoint on its own: fsyncs its files and
    /// writes the checkpoint file durably.
    ///
    /// # Errors
    /// I/O errors; an fsync failure takes the partition offline.
    pub fn sync_and_write(&self, p: PendingCheckpoint) -> Result<(), LogError> {
        self.sync_files(&p.files)?;
        let mut p = p;
        if p.rp.segment.index_entries > 0 || p.rp.segment.time_entries > 0 {
            if let Err(e) = segment::sync_index_files(&p.index_path) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "failed to sync index files");
                p.rp.segment.index_entries = 0;
                p.rp.segment.time_entries = 0;
            }
        }
        checkpoint::write(&self.dir, &p.rp)?;
        self.checkpoint_written(&p);
        Ok(())
    }

    /// Writes a prepared checkpoint file, without an fsync, once the
    /// caller made everything it covers durable (a sync of the whole
    /// filesystem). The caller syncs the filesystem again before
    /// [`Self::checkpoint_written`].
    ///
    /// # Errors
    /// I/O errors, or an injected sync fault (the partition goes offline).
    pub fn write_prepared(&self, p: &PendingCheckpoint) -> Result<(), LogError> {
        if let Err(e) = faults::check(faults::Op::Sync, &self.dir) {
            self.sync_failed(&e);
            return Err(LogError::Io {
                context: format!("failed to sync {}", self.dir.display()),
                source: e,
            });
        }
        checkpoint::write_unsynced(&self.dir, &p.rp)
    }

    /// Records a checkpoint whose files and data are durable.
    pub fn checkpoint_written(&self, p: &PendingCheckpoint) {
        self.mark_synced(&p.files);
        self.durable
            .flushed_offset
            .fetch_max(p.rp.segment.next_offset, Ordering::AcqRel);
        self.checkpointed_offset
            .store(p.rp.segment.next_offset, Ordering::Release);
    }

    /// What a flush must cover now (the first step of a flush shared by
    /// many partitions): its files, how far they reach.
    ///
    /// # Errors
    /// The partition is offline.
    pub fn prepare_flush(&self) -> Result<PendingFlush, LogError> {
        self.check_not_failed()?;
        let inner = self.inner.lock();
        Ok(PendingFlush {
            files: Self::files_to_sync(&inner),
            end: self.end_offset(),
            generation: self.durable.generation(),
        })
    }

    /// Records a flush that a sync of the whole filesystem carried out.
    pub fn flushed(&self, p: PendingFlush) {
        self.mark_synced(&p.files);
        self.durable.publish(p.generation, p.end);
    }

    /// A sync that covered this partition failed: it goes offline, as when
    /// its own fsync fails.
    pub fn sync_failed(&self, e: &std::io::Error) {
        self.durable.failed.store(true, Ordering::Release);
        tracing::error!(dir = %self.dir.display(), error = %e, "sync failed; partition taken offline");
    }
}

/// Whether a round may share its syncs ([`sync_filesystem`] exists here).
pub const SHARED_SYNC: bool = cfg!(target_os = "linux");

/// Syncs the whole filesystem that holds `dir` (`syncfs(2)`): every file's
/// data and metadata written so far, in one call.
///
/// # Errors
/// The I/O error, writeback errors included.
#[cfg(target_os = "linux")]
pub fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    rustix::fs::syncfs(std::fs::File::open(dir)?)?;
    Ok(())
}

/// Without `syncfs(2)` there is no sync of a whole filesystem: rounds are
/// never shared ([`SHARED_SYNC`]).
///
/// # Errors
/// Always `Unsupported`.
#[cfg(not(target_os = "linux"))]
pub fn sync_filesystem(_dir: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}
