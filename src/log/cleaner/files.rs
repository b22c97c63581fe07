//! The cleaner's files in a partition directory: its checkpoint, and the
//! rewritten segments on their way in.
//!
//! A pass writes each rewritten group of segments as `<base>.log.cleaned`
//! (with `<base>.index.cleaned` and `<base>.timeindex.cleaned`) and fsyncs
//! them. Renaming the log file to `<base>.log.swap` (then an fsync of the
//! directory) is the moment the replacement is decided. The segments it
//! replaces are then deleted (fsync of the directory), and the swap file
//! is renamed to `<base>.log`, over the old first segment of the group.
//!
//! Opening a log ([`recover`]) deletes every `.cleaned` file (a pass that
//! had not decided) and completes every `.swap`: a swap file whose last
//! batch ends at offset `L` replaces every segment whose base lies in
//! `base..=L` (the cleaner only groups segments so that the last of a group
//! keeps a record, so this names exactly the group), then takes the name
//! `<base>.log`. Index files of the replaced segments go; the next use of
//! the segment rebuilds them.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::super::batch::{BatchHeader, HEADER_LEN};
use super::super::error::{io_err, sync_dir, write_atomic, LogError};
use super::super::index::{self, INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use super::super::segment;

/// The cleaner's checkpoint of a partition.
pub const CHECKPOINT_FILE: &str = "cleaner-checkpoint";
/// Suffix of files a pass is writing.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a rewritten segment whose replacement is decided.
pub const SWAP_SUFFIX: &str = ".swap";
/// Passes remembered for the tombstone rule, at most.
const MAX_PASSES: usize = 512;

/// One finished pass: offsets below `end` were cleaned by `time_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub end: i64,
    pub time_ms: i64,
}

/// How far the cleaner has cleaned a partition, and when it first cleaned
/// each range (for `delete.retention.ms`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Offsets below are cleaned: the first dirty offset.
    pub cleaned_to: i64,
    /// Passes, oldest first; ends and times grow.
    pub passes: Vec<Pass>,
}

impl Checkpoint {
    /// The checkpoint of `dir`; `None` when there is none (or it does not
    /// parse: the whole log is then taken as dirty, which is safe).
    pub fn read(dir: &Path) -> Option<Self> {
        let text = fs::read_to_string(dir.join(CHECKPOINT_FILE)).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "1" {
            return None;
        }
        let cleaned_to = lines.next()?.trim().parse().ok()?;
        let mut passes = Vec::new();
        for l in lines {
            let (e, t) = l.split_once(' ')?;
            passes.push(Pass {
                end: e.parse().ok()?,
                time_ms: t.parse().ok()?,
            });
        }
        Some(Self { cleaned_to, passes })
    }

    /// Writes the checkpoint crash-safely.
    ///
    /// # Errors
    /// I/O errors; the old checkpoint stays.
    pub fn write(&self, dir: &Path) -> Result<(), LogError> {
        let mut text = format!("1\n{}\n", self.cleaned_to);
        for p in &self.passes {
            text.push_str(&format!("{} {}\n", p.end, p.time_ms));
        }
        write_atomic(&dir.join(CHECKPOINT_FILE), text.as_bytes())
    }

    /// Tombstones below this offset were first cleaned at least
    /// `delete_retention_ms` before `now_ms`: the cleaner drops them.
    pub fn tombstone_horizon(&self, now_ms: i64, delete_retention_ms: i64) -> i64 {
        self.passes
            .iter()
            .filter(|p| p.time_ms.saturating_add(delete_retention_ms) <= now_ms)
            .map(|p| p.end)
            .max()
            .unwrap_or(i64::MIN)
    }

    /// When the last pass ended, if any.
    pub fn last_clean_ms(&self) -> Option<i64> {
        self.passes.last().map(|p| p.time_ms)
    }

    /// Records a pass that cleaned up to `end` at `now_ms`. Passes whose
    /// tombstones are all past `delete_retention_ms` fold into the latest of
    /// them; beyond [`MAX_PASSES`] the oldest go, which only keeps a
    /// tombstone longer (its range is then dated by a later pass).
    pub fn record_pass(&mut self, end: i64, now_ms: i64, delete_retention_ms: i64) {
        self.cleaned_to = end;
        if self.passes.last().is_some_and(|p| p.end >= end) {
            return;
        }
        self.passes.push(Pass {
            end,
            time_ms: now_ms,
        });
        let expired = self
            .passes
            .iter()
            .filter(|p| p.time_ms.saturating_add(delete_retention_ms) <= now_ms)
            .count();
        if expired > 1 {
            self.passes.drain(..expired - 1);
        }
        if self.passes.len() > MAX_PASSES {
            let extra = self.passes.len() - MAX_PASSES;
            self.passes.drain(..extra);
        }
    }

    /// Forgets what lies at or past `end` (the log was cut there): those
    /// offsets will hold new records, dirty ones. Returns whether anything
    /// changed.
    pub fn clip(&mut self, end: i64) -> bool {
        let before = self.clone();
        self.cleaned_to = self.cleaned_to.min(end);
        self.passes.retain(|p| p.end <= end);
        *self != before
    }
}

/// Lowers the checkpoint of `dir` to `end` when it reaches past it (a log
/// opened after a tail truncation), so that the records written there again
/// count as dirty.
///
/// # Errors
/// I/O errors writing the checkpoint.
pub fn clip_checkpoint(dir: &Path, end: i64) -> Result<(), LogError> {
    if let Some(mut c) = Checkpoint::read(dir) {
        if c.clip(end) {
            c.write(dir)?;
        }
    }
    Ok(())
}

fn base_name(base: i64) -> String {
    let name = segment::file_name(base);
    name.strip_suffix(segment::LOG_SUFFIX)
        .unwrap_or(&name)
        .to_string()
}

/// `<base>.log.cleaned`.
pub fn cleaned_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{}{CLEANED_SUFFIX}", segment::file_name(base)))
}

/// `<base>.log.swap`.
pub fn swap_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{}{SWAP_SUFFIX}", segment::file_name(base)))
}

/// `<base>.index.cleaned` and `<base>.timeindex.cleaned`.
pub fn cleaned_index_paths(dir: &Path, base: i64) -> (PathBuf, PathBuf) {
    let b = base_name(base);
    (
        dir.join(format!("{b}{INDEX_SUFFIX}{CLEANED_SUFFIX}")),
        dir.join(format!("{b}{TIME_INDEX_SUFFIX}{CLEANED_SUFFIX}")),
    )
}

/// The offset after the last whole batch of a segment file, walking the
/// batch headers (`None` when it holds no batch).
fn last_offset_of(path: &Path) -> Result<Option<i64>, LogError> {
    let f = File::open(path).map_err(io_err(format!("failed to open {}", path.display())))?;
    let len = f
        .metadata()
        .map_err(io_err(format!("failed to stat {}", path.display())))?
        .len();
    let mut pos = 0u64;
    let mut last = None;
    let mut head = [0u8; HEADER_LEN];
    while pos + HEADER_LEN as u64 <= len {
        f.read_exact_at(&mut head, pos)
            .map_err(io_err(format!("failed to read {}", path.display())))?;
        let Ok(h) = BatchHeader::parse(&head) else {
            break;
        };
        if h.batch_length <= 0 || pos + h.total_len() as u64 > len {
            break;
        }
        last = Some(h.last_offset());
        pos += h.total_len() as u64;
    }
    Ok(last)
}

/// Finishes or discards what a cleaner pass left in `dir` (see the module
/// notes). Run before the segments are listed.
///
/// # Errors
/// I/O errors.
pub fn recover(dir: &Path) -> Result<(), LogError> {
    let listing = || -> Result<Vec<String>, LogError> {
        let mut names = Vec::new();
        for entry in
            fs::read_dir(dir).map_err(io_err(format!("failed to list {}", dir.display())))?
        {
            let entry = entry.map_err(io_err(format!("failed to list {}", dir.display())))?;
            if let Some(n) = entry.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        Ok(names)
    };
    let names = listing()?;
    let mut changed = false;
    let mut swaps = Vec::new();
    for n in &names {
        if n.ends_with(CLEANED_SUFFIX) {
            tracing::info!(file = %n, "deleting an unfinished cleaner output");
            let _ = fs::remove_file(dir.join(n));
            changed = true;
        } else if let Some(base) = n
            .strip_suffix(SWAP_SUFFIX)
            .and_then(segment::parse_file_name)
        {
            swaps.push(base);
        }
    }
    swaps.sort_unstable();
    if !swaps.is_empty() {
        let bases: Vec<i64> = names
            .iter()
            .filter_map(|n| segment::parse_file_name(n))
            .collect();
        for base in swaps {
            let swap = swap_path(dir, base);
            let last = last_offset_of(&swap)?.unwrap_or(base).max(base);
            for b in bases.iter().filter(|b| **b > base && **b <= last) {
                let p = dir.join(segment::file_name(*b));
                index::remove_files(&p);
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(format!("failed to delete {}", p.display()))(e)),
                }
            }
            sync_dir(dir)?;
            let target = dir.join(segment::file_name(base));
            index::remove_files(&target);
            fs::rename(&swap, &target)
                .map_err(io_err(format!("failed to rename {}", swap.display())))?;
            tracing::info!(segment = %target.display(), "completed a cleaner swap cut short");
            changed = true;
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}
