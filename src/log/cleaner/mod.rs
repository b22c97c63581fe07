//! The log cleaner: compaction of partitions whose `cleanup.policy`
//! includes `compact`, keeping the latest record of each key.
//!
//! A partition's log is split at the cleaner checkpoint ([`files`]): below
//! it the *cleaned* part, which holds at most one record per key, above it
//! the *dirty* part. The dirty part that may be cleaned ends at the *first
//! uncleanable offset*: the base of the first segment that is the active
//! one, reaches past the high watermark or the caller's `upper_bound` (the
//! last stable offset, once transactions exist), starts at or past the
//! segment of the recovery point (which start-up scans and trusts for its
//! producer state), or holds a record newer than `min.compaction.lag.ms`.
//! Only whole sealed segments are ever rewritten.
//!
//! A pass ([`PartitionLog::clean`]):
//! 1. builds an [`offset_map::OffsetMap`] of key → latest offset over the
//!    dirty part, in bounded memory; when it fills, the pass cleans only up
//!    to the last offset that fit;
//! 2. rewrites the segments below that point, in groups of consecutive
//!    segments whose sizes add up to at most `segment.bytes`: a record
//!    stays when no later record of its key is in the map ([`filter`]);
//! 3. swaps each group in crash-safely ([`files`]) under the partition lock,
//!    briefly; readers holding windows of the old files keep them (a map
//!    stays valid after its file is deleted);
//! 4. writes the checkpoint.
//!
//! Rules, as Kafka's cleaner has them unless noted:
//! - A tombstone (null value) that is the latest of its key stays until
//!   `delete.retention.ms` after the pass that first cleaned past it (the
//!   checkpoint keeps when each range was first cleaned), then goes.
//! - Records of an aborted transaction ([`AbortedTxn`]) go; control batches
//!   (commit and abort markers) always stay.
//! - A record without a key (written before the topic was compacted) goes.
//! - A batch keeps its base and last offsets; a batch that loses every
//!   record goes whole. Producer state does not depend on it: the producer
//!   table is kept in recovery points and rebuilt from the active segment,
//!   which the cleaner never touches.
//! - Records below the log start offset go.

pub mod files;
mod filter;
pub mod offset_map;
mod pass;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::checkpoint;
pub use super::txn_types::AbortedTxn;
use super::{LogError, PartitionLog};
pub use files::Checkpoint;

/// Default `--log-cleaner-dedupe-buffer-size`: 128 MiB, Kafka's.
pub const DEFAULT_DEDUPE_BUFFER_BYTES: usize = 128 << 20;

/// How a pass runs.
#[derive(Debug, Clone)]
pub struct CleanerOptions {
    /// Largest offset map, in bytes.
    pub dedupe_buffer_bytes: usize,
    /// Bytes read and written per second at most (`f64::INFINITY`: no
    /// limit).
    pub io_max_bytes_per_second: f64,
    /// Set to stop a pass between two batches (shutdown).
    pub cancel: Arc<AtomicBool>,
}

impl Default for CleanerOptions {
    fn default() -> Self {
        Self {
            dedupe_buffer_bytes: DEFAULT_DEDUPE_BUFFER_BYTES,
            io_max_bytes_per_second: f64::INFINITY,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Records the pass removed.
    pub records_removed: u64,
    /// Segment groups swapped in.
    pub groups_swapped: u64,
    /// The checkpoint after the pass (offsets below are cleaned).
    pub cleaned_to: i64,
    /// Keys in the offset map, and its size in bytes.
    pub map_keys: usize,
    pub map_bytes: usize,
    /// The pass stopped early (shutdown, a concurrent truncation or
    /// retention); the checkpoint did not move.
    pub interrupted: bool,
}

/// How dirty a compacted partition is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanability {
    /// Bytes of the cleanable segments at or past the checkpoint.
    pub dirty_bytes: u64,
    /// Bytes of the cleanable segments below it.
    pub clean_bytes: u64,
    /// `dirty / (clean + dirty)`, 0 when there is nothing.
    pub dirty_ratio: f64,
    /// The oldest dirty record is older than `max.compaction.lag.ms`.
    pub overdue: bool,
    /// The first dirty offset.
    pub cleaned_to: i64,
    /// When the last pass ended (epoch ms), if ever.
    pub last_clean_ms: Option<i64>,
}

impl Cleanability {
    /// Whether the cleaner should take the partition now.
    pub fn due(&self, min_ratio: f64) -> bool {
        self.dirty_bytes > 0 && (self.dirty_ratio >= min_ratio || self.overdue)
    }
}

/// Process-wide cleaner counters (for metrics).
#[derive(Debug, Default)]
pub struct CleanerCounters {
    pub passes: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub records_removed: AtomicU64,
    pub failures: AtomicU64,
}

/// The broker's cleaner counters.
pub static COUNTERS: CleanerCounters = CleanerCounters {
    passes: AtomicU64::new(0),
    bytes_read: AtomicU64::new(0),
    bytes_written: AtomicU64::new(0),
    records_removed: AtomicU64::new(0),
    failures: AtomicU64::new(0),
};

/// One sealed segment a pass may read or rewrite.
#[derive(Debug, Clone)]
struct SegRef {
    base: i64,
    /// Base of the segment after it.
    next_base: i64,
    path: std::path::PathBuf,
    size: u64,
    map: Arc<super::mmap::ReadMap>,
}

impl SegRef {
    fn data(&self) -> &[u8] {
        let d = self.map.as_slice();
        &d[..(self.size as usize).min(d.len())]
    }
}

/// What a pass works on, taken under the lock.
#[derive(Debug)]
struct Plan {
    log_start: i64,
    /// The first dirty offset.
    cleaned_to: i64,
    /// The first uncleanable offset (a segment base).
    uncleanable: i64,
    /// Every cleanable segment (base below `uncleanable`), in order.
    segments: Vec<SegRef>,
    generation: u64,
    config: super::LogConfig,
    checkpoint: Checkpoint,
}

impl PartitionLog {
    /// How dirty the partition is, or `None` when it is not compacted.
    /// `upper_bound`: no offset at or past it is cleaned (the last stable
    /// offset; `i64::MAX` for none).
    pub fn cleanability(&self, now_ms: i64, upper_bound: i64) -> Option<Cleanability> {
        let plan = match self.plan(now_ms, upper_bound, false) {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot size the dirty part of the log");
                return None;
            }
        };
        let (mut dirty, mut clean) = (0u64, 0u64);
        let mut first_dirty = None;
        for s in &plan.segments {
            if s.next_base > plan.cleaned_to {
                dirty += s.size;
                first_dirty.get_or_insert(s.base);
            } else {
                clean += s.size;
            }
        }
        let overdue = plan.config.max_compaction_lag_ms < i64::MAX
            && first_dirty.is_some_and(|b| {
                self.segment_max_timestamp(b, now_ms).is_some_and(|ts| {
                    ts >= 0 && now_ms.saturating_sub(ts) > plan.config.max_compaction_lag_ms
                })
            });
        let total = dirty + clean;
        Some(Cleanability {
            dirty_bytes: dirty,
            clean_bytes: clean,
            dirty_ratio: if total == 0 {
                0.0
            } else {
                dirty as f64 / total as f64
            },
            overdue,
            cleaned_to: plan.cleaned_to,
            last_clean_ms: plan.checkpoint.last_clean_ms(),
        })
    }

    fn segment_max_timestamp(&self, base: i64, now_ms: i64) -> Option<i64> {
        let mut inner = self.inner.lock();
        let seg = inner.segments.get_mut(&base)?;
        seg.ensure_open(now_ms).ok()?;
        seg.max_timestamp()
    }

    /// Takes what a pass needs under the lock: the cleanable segments
    /// (mapped when `map` is set), the checkpoint and the bounds. `None`
    /// when the partition is not compacted.
    fn plan(&self, now_ms: i64, upper_bound: i64, map: bool) -> Result<Option<Plan>, LogError> {
        // The files first, outside the lock.
        let rp_base = checkpoint::read(&self.dir).map_or(i64::MAX, |rp| rp.segment.base_offset);
        let cp = Checkpoint::read(&self.dir).unwrap_or_default();
        let mut inner = self.inner.lock();
        if !inner.config.compact || self.closed.load(Ordering::Acquire) {
            return Ok(None);
        }
        let config = inner.config.clone();
        let limit = self.high_watermark().min(upper_bound).min(rp_base);
        let log_start = inner.log_start_offset;
        let bases: Vec<i64> = inner.segments.keys().copied().collect();
        let mut segments = Vec::new();
        let mut uncleanable = bases.last().copied().unwrap_or(0);
        // The last segment is the active one.
        for w in bases.windows(2) {
            let (base, next) = (w[0], w[1]);
            if next > limit || base >= rp_base {
                uncleanable = base;
                break;
            }
            let Some(seg) = inner.segments.get_mut(&base) else {
                break;
            };
            if config.min_compaction_lag_ms > 0 {
                seg.ensure_open(now_ms)?;
                let ts = seg.max_timestamp().unwrap_or(-1);
                if ts > now_ms.saturating_sub(config.min_compaction_lag_ms) {
                    uncleanable = base;
                    break;
                }
            }
            let (m, size) = if map {
                seg.read_handle(now_ms)?
            } else {
                (Arc::new(super::mmap::ReadMap::new_empty()), seg.size())
            };
            segments.push(SegRef {
                base,
                next_base: next,
                path: seg.path().to_path_buf(),
                size,
                map: m,
            });
        }
        let first = bases.first().copied().unwrap_or(0);
        let cleaned_to = cp.cleaned_to.max(first).max(log_start.min(uncleanable));
        Ok(Some(Plan {
            log_start,
            cleaned_to,
            uncleanable,
            segments,
            generation: self.durable.generation(),
            config,
            checkpoint: cp,
        }))
    }
}

#[cfg(test)]
thread_local! {
    /// The step at which a pass on this thread is to stop (unit tests).
    static CRASH_AT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Marks a step of a pass; a test may stop the pass there: unit
/// tests make it fail at `name` (a crash at that point: nothing after it
/// runs, and the test reopens the log from its files); with the
/// `fault-injection` feature, `WEIR_TEST_CLEANER_PAUSE=<name>` parks the
/// pass there for good (a crash test kills the broker meanwhile).
fn step(name: &'static str) -> Result<(), LogError> {
    #[cfg(test)]
    if CRASH_AT.with(|c| c.get() == Some(name)) {
        return Err(LogError::Io {
            context: format!("simulated crash at the cleaner step {name}"),
            source: std::io::Error::other("simulated crash"),
        });
    }
    #[cfg(feature = "fault-injection")]
    if std::env::var("WEIR_TEST_CLEANER_PAUSE").is_ok_and(|v| v == name) {
        tracing::warn!(step = name, "log cleaner parked for a test");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    let _ = name;
    Ok(())
}
