//! The leader epoch cache of a partition being opened: read back, or
//! rebuilt from the batches when it is missing or damaged.

use std::collections::BTreeMap;
use std::path::Path;

use super::epochs::{self, EpochCache};
use super::segment::Segment;

/// The leader-epoch cache of a log being opened: the file, without the
/// entries at or past `end` (a torn tail took their batches) and with its
/// first entry moved up to `log_start`. When the file is missing (a log
/// written before epochs were kept) or damaged, it is rebuilt: every batch
/// of the log carries an epoch and epochs never fall along a log, so when
/// the last batch says 0 (as every batch written before leader epochs
/// existed does) the cache is `[(0, log_start)]`; otherwise the batch
/// headers of the whole log are walked. A rebuilt or trimmed cache is
/// written back; failing that is only worth a warning (the next change
/// writes it).
pub(super) fn load_epochs(
    dir: &Path,
    segments: &mut BTreeMap<i64, Segment>,
    log_start: i64,
    end: i64,
    now_ms: i64,
) -> EpochCache {
    let (mut cache, mut dirty) = match epochs::read(dir) {
        Some(c) => (c, false),
        None => (rebuild_epochs(segments, log_start, end, now_ms), true),
    };
    dirty |= cache.truncate_from_end(end);
    cache.truncate_from_start(log_start);
    // An empty log without a file keeps having none.
    let worth_writing = !cache.entries().is_empty() || dir.join(epochs::LEADER_EPOCH_FILE).exists();
    if dirty && worth_writing {
        if let Err(e) = epochs::write(dir, &cache) {
            tracing::warn!(dir = %dir.display(), error = %e, "failed to write the leader epoch cache");
        }
    }
    cache
}

fn rebuild_epochs(
    segments: &mut BTreeMap<i64, Segment>,
    log_start: i64,
    end: i64,
    now_ms: i64,
) -> EpochCache {
    let mut cache = EpochCache::default();
    if log_start >= end {
        return cache;
    }
    let last = segments.range_mut(..end).next_back().and_then(|(_, seg)| {
        seg.ensure_open(now_ms).ok()?;
        let (pos, _) = seg.find_batch(end - 1)?;
        seg.leader_epoch_at(pos)
    });
    if last.is_some_and(|e| e <= 0) {
        cache.assign(0, log_start);
        return cache;
    }
    for seg in segments.values_mut() {
        if seg.next_offset() <= log_start || seg.ensure_open(now_ms).is_err() {
            continue;
        }
        let found: Vec<(i32, i64)> = seg
            .headers_from(0)
            .filter(|(_, h)| h.last_offset() >= log_start)
            .filter_map(|(pos, h)| Some((seg.leader_epoch_at(pos)?, h.base_offset)))
            .collect();
        for (epoch, base) in found {
            cache.assign(epoch, base.max(log_start));
        }
    }
    cache
}
