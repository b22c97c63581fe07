//! One cleaning pass over a partition: the offset map, the rewrite of the
//! cleanable segments, and the swap of each rewritten group.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::super::batch::BatchHeader;
use super::super::error::{io_err, sync_dir};
use super::super::index::{self, INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use super::super::segment::{self, Segment};
use super::super::{LogError, PartitionLog};
use super::filter::{self, Filtered};
use super::offset_map::OffsetMap;
use super::{files, step, AbortedTxn, CleanStats, CleanerOptions, Plan, SegRef, COUNTERS};

/// Aborted transactions by producer id.
struct Aborted(HashMap<i64, Vec<(i64, i64)>>);

impl Aborted {
    fn new(list: &[AbortedTxn]) -> Self {
        let mut m: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for a in list {
            m.entry(a.producer_id)
                .or_default()
                .push((a.first_offset, a.last_offset));
        }
        Self(m)
    }

    /// Whether the batch holds records of an aborted transaction.
    fn holds(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.0.get(&h.producer_id).is_some_and(|v| {
                v.iter()
                    .any(|(f, l)| *f <= h.base_offset && h.base_offset <= *l)
            })
    }
}

/// Bytes per second at most, over the whole pass.
struct Throttle {
    rate: f64,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            start: Instant::now(),
            bytes: 0,
        }
    }

    fn account(&mut self, bytes: u64) {
        self.bytes += bytes;
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// The whole batches of a segment's data, with positions.
fn batches(data: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(data.get(pos..)?).ok()?;
        if h.batch_length <= 0 || pos + h.total_len() > data.len() {
            return None;
        }
        let at = pos;
        pos += h.total_len();
        Some((at, h))
    })
}

fn corrupt(seg: &SegRef, e: impl std::fmt::Display) -> LogError {
    LogError::Corruption {
        dir: seg.path.display().to_string(),
        reason: format!("the cleaner cannot read a batch: {e}"),
    }
}

/// A rewritten group of consecutive segments, written to its `.cleaned`
/// files.
struct Group {
    /// The segments it replaces (the first names it).
    members: Vec<SegRef>,
    /// Bytes written.
    size: u64,
}

impl PartitionLog {
    /// Runs one cleaning pass (see [`super`]): the offset map over the dirty
    /// part below `upper_bound` (the last stable offset; `i64::MAX` for
    /// none), the rewrite of every cleanable segment below where the map
    /// reached, dropping the records of `aborted` transactions, and the
    /// swap. Blocking and slow: run it on the blocking pool; the partition
    /// lock is taken only briefly.
    ///
    /// # Errors
    /// I/O errors and unreadable batches; the log is unchanged, or changed
    /// only by whole groups already swapped in (each a valid log). A
    /// failure in the middle of a swap takes the partition offline until a
    /// restart completes the swap from its files.
    pub fn clean(
        &self,
        now_ms: i64,
        upper_bound: i64,
        aborted: &[AbortedTxn],
        opts: &CleanerOptions,
    ) -> Result<CleanStats, LogError> {
        let r = self.clean_inner(now_ms, upper_bound, aborted, opts);
        match &r {
            Ok(s) => {
                COUNTERS.passes.fetch_add(1, Ordering::Relaxed);
                COUNTERS
                    .bytes_read
                    .fetch_add(s.bytes_read, Ordering::Relaxed);
                COUNTERS
                    .bytes_written
                    .fetch_add(s.bytes_written, Ordering::Relaxed);
                COUNTERS
                    .records_removed
                    .fetch_add(s.records_removed, Ordering::Relaxed);
            }
            Err(_) => {
                COUNTERS.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    fn clean_inner(
        &self,
        now_ms: i64,
        upper_bound: i64,
        aborted: &[AbortedTxn],
        opts: &CleanerOptions,
    ) -> Result<CleanStats, LogError> {
        let mut stats = CleanStats::default();
        let Some(plan) = self.plan(now_ms, upper_bound, true)? else {
            return Ok(stats);
        };
        stats.cleaned_to = plan.cleaned_to;
        let aborted = Aborted::new(aborted);
        let mut throttle = Throttle::new(opts.io_max_bytes_per_second);
        let mut scratch = Vec::new();

        // 1. The offset map over the dirty part.
        let dirty: Vec<&SegRef> = plan
            .segments
            .iter()
            .filter(|s| s.next_base > plan.cleaned_to)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
        if dirty_bytes == 0 {
            return Ok(stats);
        }
        // The map is sized for the dirty records (their count is in the
        // batch headers), within the bound.
        let dirty_records: u64 = dirty
            .iter()
            .flat_map(|s| batches(s.data()))
            .map(|(_, h)| u64::try_from(h.records_count).unwrap_or(0))
            .sum();
        let mut map = OffsetMap::new(
            opts.dedupe_buffer_bytes,
            usize::try_from(dirty_records).unwrap_or(usize::MAX),
        );
        let from = plan.cleaned_to.max(plan.log_start);
        let mut reached = plan.uncleanable;
        'segments: for seg in &dirty {
            for (pos, h) in batches(seg.data()) {
                if self.stopping(opts) {
                    stats.interrupted = true;
                    return Ok(stats);
                }
                throttle.account(h.total_len() as u64);
                stats.bytes_read += h.total_len() as u64;
                if h.last_offset() < from || h.is_control() || aborted.holds(&h) {
                    continue;
                }
                let b = &seg.data()[pos..pos + h.total_len()];
                let full = filter::with_records(b, &h, &mut scratch, |recs| {
                    for r in recs {
                        let off = h.base_offset + i64::from(r.offset_delta);
                        if off < from {
                            continue;
                        }
                        if let Some(k) = r.key {
                            if !map.put(k, off) {
                                return Some(off);
                            }
                        }
                    }
                    None
                })
                .map_err(|e| corrupt(seg, e))?;
                if let Some(off) = full {
                    reached = off;
                    break 'segments;
                }
            }
        }
        stats.map_keys = map.len();
        stats.map_bytes = map.memory_bytes();
        if reached <= plan.cleaned_to {
            return Ok(stats);
        }
        step("mapped")?;

        // 2. and 3. Rewrite and swap, one group at a time.
        let horizon = plan
            .checkpoint
            .tombstone_horizon(now_ms, plan.config.delete_retention_ms);
        let targets: Vec<&SegRef> = plan.segments.iter().filter(|s| s.base < reached).collect();
        let mut i = 0;
        while i < targets.len() {
            let mut j = i + 1;
            let mut total = targets[i].size;
            while j < targets.len()
                && total + targets[j].size <= plan.config.segment_bytes
                && targets[j].next_base - targets[i].base < i64::from(i32::MAX)
            {
                total += targets[j].size;
                j += 1;
            }
            let members: Vec<SegRef> = targets[i..j].iter().map(|s| (*s).clone()).collect();
            i = j;
            let mut keep = |h: &BatchHeader, off: i64, r: &filter::RecordView<'_>| {
                if off < plan.log_start || aborted.holds(h) {
                    return false;
                }
                let Some(k) = r.key else { return false };
                if map.get(k).is_some_and(|latest| off < latest) {
                    return false;
                }
                !(r.tombstone && off < horizon)
            };
            let written = self.write_group(&plan, members, &mut keep, &mut throttle, &mut stats)?;
            if self.stopping(opts) {
                for g in &written {
                    remove_cleaned(&self.dir, g.members[0].base);
                }
                stats.interrupted = true;
                return Ok(stats);
            }
            for g in written {
                if !self.swap_group(&plan, &g)? {
                    stats.interrupted = true;
                    return Ok(stats);
                }
                stats.groups_swapped += 1;
                stats.bytes_written += g.size;
            }
        }
        step("swapped")?;

        // 4. The checkpoint.
        let mut cp = plan.checkpoint.clone();
        cp.record_pass(reached, now_ms, plan.config.delete_retention_ms);
        cp.write(&self.dir)?;
        stats.cleaned_to = reached;
        tracing::debug!(dir = %self.dir.display(), ?stats, "cleaned");
        Ok(stats)
    }

    fn stopping(&self, opts: &CleanerOptions) -> bool {
        opts.cancel.load(Ordering::Relaxed) || self.closed.load(Ordering::Acquire)
    }

    /// Writes the kept batches of `members` to `.cleaned` files. Returns the
    /// groups to swap in: none when nothing changes; the group itself, cut
    /// after its last member that keeps a batch (a swap names what it
    /// replaces by its offsets, see [`files`]), and each member after that
    /// as an empty group of its own.
    fn write_group(
        &self,
        plan: &Plan,
        members: Vec<SegRef>,
        keep: &mut impl FnMut(&BatchHeader, i64, &filter::RecordView<'_>) -> bool,
        throttle: &mut Throttle,
        stats: &mut CleanStats,
    ) -> Result<Vec<Group>, LogError> {
        let base = members[0].base;
        let path = files::cleaned_path(&self.dir, base);
        let out =
            File::create(&path).map_err(io_err(format!("failed to create {}", path.display())))?;
        let mut w = BufWriter::with_capacity(1 << 20, out);
        let mut pos = 0u64;
        let mut headers = Vec::new();
        let mut changed = members.len() > 1;
        let mut last_kept = 0usize;
        let mut empties = Vec::new();
        let mut scratch = Vec::new();
        for (m, seg) in members.iter().enumerate() {
            let start = pos;
            for (at, h) in batches(seg.data()) {
                let bytes = &seg.data()[at..at + h.total_len()];
                throttle.account(bytes.len() as u64);
                let outcome = if h.is_control() {
                    Filtered::Unchanged
                } else {
                    let before = h.records_count.max(0) as u64;
                    let f =
                        filter::filter_batch(bytes, &h, &mut scratch, |off, r| keep(&h, off, r))
                            .map_err(|e| corrupt(seg, e))?;
                    match &f {
                        Filtered::Dropped => stats.records_removed += before,
                        Filtered::Rewritten(b) => {
                            let after = BatchHeader::parse(b).map_or(0, |n| n.records_count);
                            stats.records_removed += before.saturating_sub(after.max(0) as u64);
                        }
                        Filtered::Unchanged => {}
                    }
                    f
                };
                let kept: &[u8] = match &outcome {
                    Filtered::Unchanged => bytes,
                    Filtered::Dropped => {
                        changed = true;
                        continue;
                    }
                    Filtered::Rewritten(b) => {
                        changed = true;
                        b
                    }
                };
                let nh = BatchHeader::parse(kept)?;
                w.write_all(kept)
                    .map_err(io_err(format!("failed to write {}", path.display())))?;
                throttle.account(kept.len() as u64);
                headers.push((pos, nh));
                pos += kept.len() as u64;
            }
            if pos > start {
                last_kept = m;
            } else if seg.size > 0 {
                empties.push(m);
            }
        }
        if !changed {
            drop(w);
            remove_cleaned(&self.dir, base);
            return Ok(Vec::new());
        }
        let out = w
            .into_inner()
            .map_err(|e| io_err(format!("failed to write {}", path.display()))(e.into_error()))?;
        // The cleaned segment is dated like the last segment it replaces.
        if let Some(t) = members
            .get(last_kept)
            .and_then(|s| fs::metadata(&s.path).ok())
            .and_then(|m| m.modified().ok())
        {
            let _ = out.set_modified(t);
        }
        out.sync_all()
            .map_err(io_err(format!("failed to sync {}", path.display())))?;
        let (ip, tp) = files::cleaned_index_paths(&self.dir, base);
        let idx = segment::write_index_files_for(
            base,
            &headers,
            plan.config.index_interval_bytes,
            &ip,
            &tp,
        )
        .map_err(io_err(format!(
            "failed to write the index of {}",
            path.display()
        )))?;
        for f in idx {
            f.sync_all().map_err(io_err(format!(
                "failed to sync the index of {}",
                path.display()
            )))?;
        }
        let mut groups = vec![Group {
            members: members[..=last_kept].to_vec(),
            size: pos,
        }];
        for m in empties.into_iter().filter(|m| *m > last_kept) {
            let seg = &members[m];
            let p = files::cleaned_path(&self.dir, seg.base);
            File::create(&p)
                .and_then(|f| f.sync_all())
                .map_err(io_err(format!("failed to create {}", p.display())))?;
            groups.push(Group {
                members: vec![seg.clone()],
                size: 0,
            });
        }
        sync_dir(&self.dir)?;
        step("cleaned")?;
        Ok(groups)
    }

    /// Swaps a written group in under the partition lock (see [`files`]).
    /// Returns false, with the group's files removed, when the segments it
    /// replaces changed meanwhile (retention, a truncation).
    fn swap_group(&self, plan: &Plan, g: &Group) -> Result<bool, LogError> {
        let first = &g.members[0];
        let base = first.base;
        let mut inner = self.inner.lock();
        let intact = !self.closed.load(Ordering::Acquire)
            && self.durable.generation() == plan.generation
            && inner
                .segments
                .keys()
                .next_back()
                .is_some_and(|last| g.members.iter().all(|m| m.base < *last))
            && g.members.iter().all(|m| {
                inner
                    .segments
                    .get(&m.base)
                    .is_some_and(|s| s.path() == m.path && s.size() == m.size)
            });
        if !intact {
            drop(inner);
            remove_cleaned(&self.dir, base);
            return Ok(false);
        }
        let cleaned = files::cleaned_path(&self.dir, base);
        let swap = files::swap_path(&self.dir, base);
        let offline = |e: LogError| {
            self.durable.failed.store(true, Ordering::Release);
            tracing::error!(dir = %self.dir.display(), error = %e, "a cleaner swap failed; partition taken offline until a restart completes it");
            e
        };
        fs::rename(&cleaned, &swap)
            .map_err(io_err(format!("failed to rename {}", cleaned.display())))?;
        sync_dir(&self.dir).map_err(offline)?;
        step("swap")?;
        for m in &g.members[1..] {
            index::remove_files(&m.path);
            fs::remove_file(&m.path)
                .map_err(io_err(format!("failed to delete {}", m.path.display())))
                .map_err(offline)?;
        }
        index::remove_files(&first.path);
        sync_dir(&self.dir).map_err(offline)?;
        step("deleted")?;
        fs::rename(&swap, &first.path)
            .map_err(io_err(format!("failed to rename {}", swap.display())))
            .map_err(offline)?;
        let (ip, tp) = files::cleaned_index_paths(&self.dir, base);
        let _ = fs::rename(&ip, index::path_for(&first.path, INDEX_SUFFIX));
        let _ = fs::rename(&tp, index::path_for(&first.path, TIME_INDEX_SUFFIX));
        let next_base = g.members.last().map_or(first.next_base, |m| m.next_base);
        let mut old = 0;
        for m in &g.members {
            if let Some(s) = inner.segments.remove(&m.base) {
                old += s.size();
            }
        }
        let seg = Segment::open_sealed(
            first.path.clone(),
            base,
            next_base,
            inner.config.index_interval_bytes,
        )
        .map_err(offline)?;
        let new = seg.size();
        inner.segments.insert(base, seg);
        self.size_bytes.fetch_sub(old, Ordering::Relaxed);
        self.size_bytes.fetch_add(new, Ordering::Relaxed);
        drop(inner);
        sync_dir(&self.dir)?;
        Ok(true)
    }
}

/// Removes the `.cleaned` files of a group at `base`.
fn remove_cleaned(dir: &std::path::Path, base: i64) {
    let (ip, tp) = files::cleaned_index_paths(dir, base);
    for p in [files::cleaned_path(dir, base), ip, tp] {
        let _ = fs::remove_file(p);
    }
}
