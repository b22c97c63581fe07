//! A segment's sparse offset index and time index, in Kafka's file formats.
//!
//! `<base>.index` holds 8-byte entries `relative offset u32 | position u32`
//! (big-endian): the base offset of the first batch at or after each
//! `index.interval.bytes` of log, and where it starts. `<base>.timeindex`
//! holds 12-byte entries `timestamp i64 | relative offset u32`: at the same
//! points, the largest timestamp seen so far in the segment whenever it grew,
//! with the batch where it was recorded; a sealed segment's last entry is its
//! largest timestamp.
//!
//! The active segment keeps its entries on the heap (bounded by
//! `segment.bytes / index.interval.bytes`) and writes the new ones to its
//! files at each recovery checkpoint; a sealed segment's files are written
//! whole when it is sealed and memory-mapped when it is used. Both are only
//! hints: an entry is checked against the batch header it points at before
//! it is trusted, and a damaged or missing file is rebuilt from the log.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::mmap::ReadMap;

/// Extension of offset index files.
pub const INDEX_SUFFIX: &str = ".index";
/// Extension of time index files.
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// A fixed-size index entry with a big-endian encoding.
pub trait Entry: Copy + std::fmt::Debug + PartialEq {
    /// Encoded length in bytes.
    const LEN: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Self;
}

/// Offset index entry: a batch's base offset relative to the segment's, and
/// the byte position of the batch in the segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

/// Time index entry: the largest timestamp up to and including the batch at
/// `rel_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Entry for OffsetEntry {
    const LEN: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        Self {
            rel_offset: be_u32(&b[0..4]),
            position: be_u32(&b[4..8]),
        }
    }
}

impl Entry for TimeEntry {
    const LEN: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        Self {
            timestamp: i64::from_be_bytes(ts),
            rel_offset: be_u32(&b[8..12]),
        }
    }
}

/// An index's entries: on the heap (active segment) or mapped (sealed).
#[derive(Debug)]
pub enum Entries<E> {
    Heap(Vec<E>),
    Mapped(ReadMap),
}

impl<E: Entry> Default for Entries<E> {
    fn default() -> Self {
        Self::Heap(Vec::new())
    }
}

impl<E: Entry> Entries<E> {
    pub fn len(&self) -> usize {
        match self {
            Self::Heap(v) => v.len(),
            Self::Mapped(m) => m.len() / E::LEN,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`; the caller keeps `i < len()`.
    pub fn get(&self, i: usize) -> E {
        match self {
            Self::Heap(v) => v[i],
            Self::Mapped(m) => E::decode(&m.as_slice()[i * E::LEN..(i + 1) * E::LEN]),
        }
    }

    pub fn last(&self) -> Option<E> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// Number of leading entries for which `pred` holds (the entries are
    /// sorted so that `pred` holds for a prefix): a binary search.
    pub fn partition_point(&self, pred: impl Fn(&E) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Appends to a heap index (a mapped one is sealed and never grows).
    pub fn push(&mut self, e: E) {
        match self {
            Self::Heap(v) => v.push(e),
            Self::Mapped(_) => {
                let mut v: Vec<E> = (0..self.len()).map(|i| self.get(i)).collect();
                v.push(e);
                *self = Self::Heap(v);
            }
        }
    }

    /// The entries from `from` on, encoded.
    pub fn encode_from(&self, from: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len().saturating_sub(from) * E::LEN);
        for i in from..self.len() {
            self.get(i).encode(&mut out);
        }
        out
    }
}

/// Offset index lookups.
impl Entries<OffsetEntry> {
    /// The last entry at or before relative offset `rel`.
    pub fn floor(&self, rel: u32) -> Option<OffsetEntry> {
        match self.partition_point(|e| e.rel_offset <= rel) {
            0 => None,
            i => Some(self.get(i - 1)),
        }
    }

    /// Whether the entries are well formed for a segment of `size` bytes
    /// spanning `span` offsets: the first at the start, then strictly
    /// increasing offsets and positions inside the segment.
    pub fn is_sane(&self, size: u64, span: i64) -> bool {
        let mut prev: Option<OffsetEntry> = None;
        for i in 0..self.len() {
            let e = self.get(i);
            let ok = match prev {
                None => e.rel_offset == 0 && e.position == 0,
                Some(p) => e.rel_offset > p.rel_offset && e.position > p.position,
            };
            if !ok || u64::from(e.position) >= size || i64::from(e.rel_offset) >= span {
                return false;
            }
            prev = Some(e);
        }
        size == 0 || !self.is_empty()
    }
}

/// Time index lookups.
impl Entries<TimeEntry> {
    /// Relative offset of the last entry whose timestamp is below `ts`: every
    /// record before that entry's batch is older than `ts`.
    pub fn before(&self, ts: i64) -> Option<u32> {
        match self.partition_point(|e| e.timestamp < ts) {
            0 => None,
            i => Some(self.get(i - 1).rel_offset),
        }
    }

    /// Whether timestamps strictly increase, offsets never decrease and stay
    /// inside a segment spanning `span` offsets.
    pub fn is_sane(&self, span: i64) -> bool {
        let mut prev: Option<TimeEntry> = None;
        for i in 0..self.len() {
            let e = self.get(i);
            if i64::from(e.rel_offset) >= span {
                return false;
            }
            if let Some(p) = prev {
                if e.timestamp <= p.timestamp || e.rel_offset < p.rel_offset {
                    return false;
                }
            }
            prev = Some(e);
        }
        true
    }
}

/// `<dir>/<base>.index` beside a segment file `<dir>/<base>.log`.
pub fn path_for(segment: &Path, suffix: &str) -> PathBuf {
    segment.with_extension(suffix.trim_start_matches('.'))
}

/// Maps a whole index file read-only. The file descriptor is closed at once:
/// the map keeps the data reachable.
///
/// # Errors
/// A missing file, a length that is not a whole number of entries, or the
/// I/O error.
pub fn map_file<E: Entry>(path: &Path) -> io::Result<Entries<E>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len % E::LEN as u64 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "index length is not a whole number of entries",
        ));
    }
    Ok(Entries::Mapped(ReadMap::new(&file, len)?))
}

/// Reads the first `n` entries of an index file (fewer when it is shorter).
///
/// # Errors
/// The I/O error (a missing file reads as empty).
pub fn read_prefix<E: Entry>(path: &Path, n: usize) -> io::Result<Vec<E>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(bytes.chunks_exact(E::LEN).take(n).map(E::decode).collect())
}

/// Writes a whole index file through a temporary file and a rename, so that
/// a reader sees the old file or the new one. Returns the file for a later
/// fsync.
///
/// # Errors
/// The I/O error; the old file stays.
pub fn write_file<E: Entry>(path: &Path, entries: &Entries<E>) -> io::Result<File> {
    let tmp = path.with_extension("idx.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&entries.encode_from(0))?;
    fs::rename(&tmp, path)?;
    Ok(f)
}

/// Writes entries `from..` of the active segment's index at their place in
/// its file and cuts the file after them; fsyncs when `sync`.
///
/// # Errors
/// The I/O error.
pub fn write_tail<E: Entry>(
    path: &Path,
    entries: &Entries<E>,
    from: usize,
    sync: bool,
) -> io::Result<()> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let from = from.min(entries.len());
    f.write_all_at(&entries.encode_from(from), (from * E::LEN) as u64)?;
    f.set_len((entries.len() * E::LEN) as u64)?;
    if sync {
        f.sync_data()?;
    }
    Ok(())
}

/// Removes a segment's index files (missing ones are fine).
pub fn remove_files(segment: &Path) {
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let p = path_for(segment, suffix);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %p.display(), error = %e, "failed to delete index"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oe(rel_offset: u32, position: u32) -> OffsetEntry {
        OffsetEntry {
            rel_offset,
            position,
        }
    }

    #[test]
    fn floor_finds_the_last_entry_at_or_before() {
        let idx = Entries::Heap(vec![oe(0, 0), oe(10, 100), oe(20, 200)]);
        assert_eq!(idx.floor(0), Some(oe(0, 0)));
        assert_eq!(idx.floor(9), Some(oe(0, 0)));
        assert_eq!(idx.floor(10), Some(oe(10, 100)));
        assert_eq!(idx.floor(1000), Some(oe(20, 200)));
        assert!(idx.is_sane(300, 30));
        assert!(!idx.is_sane(200, 30), "a position past the end");
        assert!(!Entries::Heap(vec![oe(0, 0), oe(0, 10)]).is_sane(300, 30));
        assert!(!Entries::<OffsetEntry>::Heap(vec![]).is_sane(300, 30));
    }

    #[test]
    fn files_round_trip_through_a_map_and_a_tail_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.index");
        let mut idx = Entries::Heap(vec![oe(0, 0), oe(5, 50)]);
        write_tail(&path, &idx, 0, true).unwrap();
        idx.push(oe(9, 90));
        write_tail(&path, &idx, 2, false).unwrap();
        let mapped: Entries<OffsetEntry> = map_file(&path).unwrap();
        assert_eq!(mapped.len(), 3);
        assert_eq!(mapped.floor(7), Some(oe(5, 50)));
        assert_eq!(read_prefix::<OffsetEntry>(&path, 2).unwrap().len(), 2);
        fs::write(&path, [0u8; 7]).unwrap();
        assert!(map_file::<OffsetEntry>(&path).is_err());
    }

    #[test]
    fn time_lookups_start_before_the_first_newer_record() {
        let t = |timestamp, rel_offset| TimeEntry {
            timestamp,
            rel_offset,
        };
        let idx = Entries::Heap(vec![t(100, 0), t(200, 5), t(300, 9)]);
        assert_eq!(idx.before(100), None);
        assert_eq!(idx.before(150), Some(0));
        assert_eq!(idx.before(301), Some(9));
        assert!(idx.is_sane(10));
        assert!(!idx.is_sane(9));
        assert!(!Entries::Heap(vec![t(100, 0), t(100, 5)]).is_sane(10));
    }
}
