//! A partition's leader-epoch cache, as Kafka's `leader-epoch-checkpoint`:
//! for each leader epoch that wrote batches into the log, the offset of its
//! first batch. A follower asks its leader where its last epoch ends there
//! (OffsetForLeaderEpoch) and truncates whatever diverges.
//!
//! The file `leader-epoch-checkpoint` in the partition directory has Kafka's
//! plain-text layout: a version line (`0`), a line with the number of
//! entries, then one line per entry, `<epoch> <start offset>`, oldest first:
//!
//! ```text
//! 0
//! 2
//! 0 0
//! 3 120
//! ```
//!
//! It is rewritten whole (temp file, fsync, rename) whenever an entry is
//! added or entries are removed from its end. An entry is written before the
//! first batch of its epoch, so the file never lacks an epoch that the log
//! holds; entries at or past the log end after a crash are dropped on open.

use std::path::Path;

use super::error::{write_atomic, LogError};

/// File name of the leader-epoch cache in a partition directory.
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
const VERSION: &str = "0";

/// One leader epoch and the offset of its first batch in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The partition leader epoch stamped into the batches.
    pub epoch: i32,
    /// Base offset of the first batch of the epoch (or the log start offset
    /// when the log's start moved past it).
    pub start_offset: i64,
}

/// The epochs of one log, oldest first: epochs strictly rise, and so do
/// start offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Epoch of the last entry.
    pub fn last_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Whether a batch of `epoch` would add an entry: epochs below zero
    /// (no epoch) and epochs not above the last one add nothing.
    pub fn is_new(&self, epoch: i32) -> bool {
        epoch >= 0 && self.last_epoch().is_none_or(|last| epoch > last)
    }

    /// Records that the first batch of `epoch` starts at `start_offset`.
    /// Returns whether an entry was added. Entries starting at or past
    /// `start_offset` are dropped first (as Kafka's `assign` does): they
    /// cannot be in the log any more.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if !self.is_new(epoch) {
            return false;
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drops the entries that start at or past `end` (a truncated or torn
    /// tail). Returns whether any went.
    pub fn truncate_from_end(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end);
        self.entries.len() != before
    }

    /// Drops the entries wholly below `start` (the log start moved) and
    /// moves the start of the epoch that holds `start` up to it. Returns
    /// whether anything changed.
    pub fn truncate_from_start(&mut self, start: i64) -> bool {
        let Some(keep) = self.entries.iter().rposition(|e| e.start_offset <= start) else {
            return false;
        };
        let changed = keep > 0 || self.entries[keep].start_offset != start;
        self.entries.drain(..keep);
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = start;
        }
        changed
    }

    /// Where `epoch` ends in a log whose end offset is `log_end`: the largest
    /// epoch at or below `epoch` that the cache has, with the start offset of
    /// the entry after it (or `log_end` when it is the last). `None` when
    /// `epoch` is below the first entry or the cache is empty.
    ///
    /// This differs from Kafka's `endOffsetFor` in two corners: Kafka answers
    /// an epoch above the last one with UNDEFINED (its leader caches its own
    /// epoch when elected, before any batch; here the last entry is the last
    /// epoch that wrote, so the answer is that epoch and the log end), and
    /// an epoch below the first entry with (that epoch, first start offset).
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        let i = self.entries.iter().rposition(|e| e.epoch <= epoch)?;
        let end = self
            .entries
            .get(i + 1)
            .map_or(log_end, |next| next.start_offset);
        Some((self.entries[i].epoch, end))
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        s.into_bytes()
    }

    /// Parses the file's bytes; `None` for anything malformed: an unknown
    /// version, a count that does not match, epochs or offsets that do not
    /// rise.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()?.trim() != VERSION {
            return None;
        }
        let n: usize = lines.next()?.trim().parse().ok()?;
        let mut entries: Vec<EpochEntry> = Vec::with_capacity(n.min(4096));
        for line in lines.by_ref().take(n) {
            let mut parts = line.split_whitespace();
            let epoch: i32 = parts.next()?.parse().ok()?;
            let start_offset: i64 = parts.next()?.parse().ok()?;
            if parts.next().is_some() || epoch < 0 || start_offset < 0 {
                return None;
            }
            if entries
                .last()
                .is_some_and(|l| l.epoch >= epoch || l.start_offset > start_offset)
            {
                return None;
            }
            entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        if entries.len() != n || lines.any(|l| !l.trim().is_empty()) {
            return None;
        }
        Some(Self { entries })
    }

    /// A cache from entries (tests, rebuilds); `None` unless epochs and
    /// start offsets rise.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Option<Self> {
        let rising = entries
            .windows(2)
            .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset <= w[1].start_offset);
        rising.then_some(Self { entries })
    }
}

/// Reads a partition's epoch cache: `None` when the file is missing (a log
/// written before epochs were kept) or damaged (with a warning); the caller
/// rebuilds it then.
pub fn read(dir: &Path) -> Option<EpochCache> {
    let path = dir.join(LEADER_EPOCH_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the leader epoch cache; rebuilding it");
            return None;
        }
    };
    let cache = EpochCache::decode(&bytes);
    if cache.is_none() {
        tracing::warn!(file = %path.display(), "damaged leader epoch cache; rebuilding it");
    }
    cache
}

/// Writes a partition's epoch cache crash-safely.
///
/// # Errors
/// The I/O error; the previous file stays.
pub fn write(dir: &Path, cache: &EpochCache) -> Result<(), LogError> {
    write_atomic(&dir.join(LEADER_EPOCH_FILE), &cache.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    #[test]
    fn the_file_round_trips_in_kafkas_text_layout() {
        let c = EpochCache::from_entries(vec![e(0, 0), e(3, 120)]).unwrap();
        assert_eq!(c.encode(), b"0\n2\n0 0\n3 120\n");
        assert_eq!(EpochCache::decode(&c.encode()), Some(c));
        assert_eq!(
            EpochCache::decode(b"0\n0\n"),
            Some(EpochCache::default()),
            "empty"
        );
    }

    #[test]
    fn damaged_files_are_refused() {
        for bad in [
            &b""[..],
            b"1\n1\n0 0\n",
            b"0\n2\n0 0\n",
            b"0\n1\n0 0\n1 5\n",
            b"0\n2\n3 0\n2 5\n",
            b"0\n2\n0 9\n1 5\n",
            b"0\n1\n0 x\n",
            b"0\n1\n-1 0\n",
            b"0\n1\n0 0 0\n",
        ] {
            assert_eq!(EpochCache::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn end_offsets_follow_the_next_entry_or_the_log_end() {
        let c = EpochCache::from_entries(vec![e(1, 10), e(3, 50), e(4, 70)]).unwrap();
        assert_eq!(c.end_offset_for(0, 100), None, "below the first entry");
        assert_eq!(c.end_offset_for(1, 100), Some((1, 50)));
        assert_eq!(c.end_offset_for(2, 100), Some((1, 50)), "a gap epoch");
        assert_eq!(c.end_offset_for(3, 100), Some((3, 70)));
        assert_eq!(c.end_offset_for(4, 100), Some((4, 100)));
        assert_eq!(c.end_offset_for(9, 100), Some((4, 100)));
        assert_eq!(EpochCache::default().end_offset_for(4, 100), None);
    }

    #[test]
    fn only_rising_epochs_are_assigned() {
        let mut c = EpochCache::default();
        assert!(!c.assign(-1, 0));
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 5));
        assert!(c.assign(2, 5));
        assert!(!c.assign(1, 9));
        assert!(c.assign(3, 5), "replaces an entry with no batches");
        assert_eq!(c.entries(), &[e(0, 0), e(3, 5)]);
    }

    #[test]
    fn the_start_moves_into_the_epoch_that_holds_it() {
        let mut c = EpochCache::from_entries(vec![e(0, 0), e(2, 10), e(5, 30)]).unwrap();
        assert!(!c.truncate_from_start(0));
        assert!(c.truncate_from_start(15));
        assert_eq!(c.entries(), &[e(2, 15), e(5, 30)]);
        assert!(c.truncate_from_start(30));
        assert_eq!(c.entries(), &[e(5, 30)]);
        assert!(c.truncate_from_end(30));
        assert_eq!(c.last_epoch(), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Records appended, and whether the epoch rises first.
        Append(u8, bool),
        Truncate(u16),
    }

    proptest! {
        /// Appends at rising epochs and truncations, against a model that
        /// keeps the epoch of every offset.
        #[test]
        fn the_cache_matches_a_per_offset_model(ops in proptest::collection::vec(
            prop_oneof![
                3 => (1u8..10, any::<bool>()).prop_map(|(n, up)| Op::Append(n, up)),
                1 => any::<u16>().prop_map(Op::Truncate),
            ],
            1..40,
        )) {
            let mut cache = EpochCache::default();
            // The epoch of each offset of the log.
            let mut model: Vec<i32> = Vec::new();
            let mut epoch = 0i32;
            for op in ops {
                match op {
                    Op::Append(n, up) => {
                        if up {
                            epoch += 1;
                        }
                        let start = model.len() as i64;
                        cache.assign(epoch, start);
                        model.extend(std::iter::repeat_n(epoch, usize::from(n)));
                    }
                    Op::Truncate(x) => {
                        let to = usize::from(x) % (model.len() + 1);
                        model.truncate(to);
                        cache.truncate_from_end(to as i64);
                        // A new leader's epoch is above every earlier one.
                        epoch += 1;
                    }
                }
                let end = model.len() as i64;
                prop_assert_eq!(cache.last_epoch(), model.last().copied());
                for q in -1..=epoch + 1 {
                    // Largest epoch <= q in the log, and the offset after
                    // its last record.
                    let want = model
                        .iter()
                        .enumerate()
                        .filter(|(_, &ep)| ep <= q)
                        .map(|(i, &ep)| (ep, i))
                        .max()
                        .map(|(ep, _)| {
                            let last = model.iter().rposition(|&x| x == ep).unwrap_or(0);
                            (ep, (last + 1) as i64)
                        });
                    prop_assert_eq!(cache.end_offset_for(q, end), want, "epoch {}", q);
                }
                prop_assert_eq!(EpochCache::decode(&cache.encode()), Some(cache.clone()));
            }
        }
    }
}
