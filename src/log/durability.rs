//! Durability of a partition: the group-commit fsync. Waiters share one
//! fsync of the active segment and the sealed ones not yet synced; the task
//! that runs it publishes the flushed offset and wakes every waiter itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::error::{io_err, LogError};
use super::faults;
use super::{Durability, Inner, PartitionLog};

impl PartitionLog {
    /// fsyncs `files` on this thread; a failure takes the partition offline.
    pub(super) fn sync_files(&self, files: &[Arc<std::fs::File>]) -> Result<(), LogError> {
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
    pub(super) async fn sync_all(&self) -> Result<(), LogError> {
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
        let (files, path, end, generation) = {
            let inner = self.inner.lock();
            let path = inner
                .segments
                .values()
                .next_back()
                .map_or_else(|| self.dir.clone(), |s| s.path().to_path_buf());
            (
                Self::files_to_sync(&inner),
                path,
                self.end_offset(),
                self.durable.generation(),
            )
        };
        let dir = self.dir.clone();
        let synced_files = files.clone();
        let task = tokio::task::spawn_blocking(move || {
            let durable = &done.0;
            durable.fsyncs.fetch_add(1, Ordering::Relaxed);
            let res = faults::check(faults::Op::Sync, &dir)
                .and_then(|()| files.iter().try_for_each(|f| f.sync_data()));
            match &res {
                Ok(()) => durable.publish(generation, end),
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
    pub(super) fn files_to_sync(inner: &Inner) -> Vec<Arc<std::fs::File>> {
        let mut files = inner.unsynced.clone();
        if let Some(s) = inner.segments.values().next_back() {
            files.extend(s.file().cloned());
        }
        files
    }

    /// Takes files an fsync covered off the list of sealed, unsynced ones.
    pub(super) fn mark_synced(&self, files: &[Arc<std::fs::File>]) {
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
        let (files, end, generation) = {
            let inner = self.inner.lock();
            (
                Self::files_to_sync(&inner),
                self.end_offset(),
                self.durable.generation(),
            )
        };
        self.sync_files(&files)?;
        self.mark_synced(&files);
        self.durable.publish(generation, end);
        Ok(())
    }
}
