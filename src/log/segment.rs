//! One segment: a `.log` file of contiguous v2 batches starting at a base
//! offset, with its `.index` and `.timeindex` (see [`super::index`]).
//!
//! The active segment's file is grown in steps ahead of the data (a sparse
//! preallocation) and mapped read-only; appends are positional writes. `size`
//! is the committed end: the bytes below it are whole, validated batches, and
//! nothing above it is ever read.
//!
//! A sealed segment holds no file descriptor. Its log and index files are
//! mapped on first use and the maps are released again when it has not been
//! read for a while, so that neither memory maps nor descriptors grow with
//! the amount of data kept.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use super::error::{io_err, LogError};
use super::index::{self, Entries, OffsetEntry, TimeEntry, INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use super::mmap::{self, ReadMap};

/// Width of the base-offset part of a segment file name.
pub const FILE_NAME_DIGITS: usize = 20;
/// Extension of segment data files.
pub const LOG_SUFFIX: &str = ".log";
/// How far past the end of the data recovery looks for the non-zero bytes of
/// a torn write.
const TORN_WINDOW: usize = 64 << 10;
/// Smallest step by which a segment file grows.
const MIN_GROW_BYTES: u64 = 1 << 20;

/// `00000000000000000042.log` for base offset 42.
pub fn file_name(base_offset: i64) -> String {
    format!(
        "{base_offset:0width$}{LOG_SUFFIX}",
        width = FILE_NAME_DIGITS
    )
}

/// Parses a segment file name back to its base offset.
pub fn parse_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(LOG_SUFFIX)?;
    if digits.len() != FILE_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where the active segment stood at a recovery checkpoint: everything below
/// `position` was fsynced, with the first `index_entries` / `time_entries`
/// entries of its index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentState {
    pub base_offset: i64,
    pub position: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub created_ms: i64,
    pub bytes_since_index: u64,
    pub last_batch_rel: u32,
    pub index_entries: u32,
    pub time_entries: u32,
}

/// A segment file and what is known about its contents.
#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    path: PathBuf,
    /// Write handle: the active segment only.
    file: Option<Arc<File>>,
    /// Read map; `None` for a sealed segment that is not in use.
    map: Option<Arc<ReadMap>>,
    /// Current length of the file (preallocated, possibly beyond `size`).
    capacity: u64,
    /// Committed end: every byte below is part of a whole batch.
    size: u64,
    /// Offset after the last record of the segment.
    next_offset: i64,
    /// Largest max-timestamp of any batch, -1 when none; `None` until a
    /// sealed segment is first opened.
    max_timestamp: Option<i64>,
    /// When the segment was created (for `segment.ms`), epoch ms.
    created_ms: i64,
    index: Entries<OffsetEntry>,
    time_index: Entries<TimeEntry>,
    /// Entries of the active segment's indexes already written to its files.
    persisted: (usize, usize),
    bytes_since_index: u64,
    index_interval_bytes: u64,
    /// Base offset of the last batch, relative to the segment's.
    last_batch_rel: u32,
    last_used_ms: i64,
    /// Shared by every map of the file ([`ReadMap::pinned`]): more than one
    /// reference means a map is alive.
    pin: Arc<()>,
}

impl Segment {
    fn blank(path: PathBuf, base_offset: i64, index_interval_bytes: u64) -> Self {
        Self {
            base_offset,
            path,
            file: None,
            map: None,
            capacity: 0,
            size: 0,
            next_offset: base_offset,
            max_timestamp: Some(-1),
            created_ms: 0,
            index: Entries::default(),
            time_index: Entries::default(),
            persisted: (0, 0),
            bytes_since_index: 0,
            index_interval_bytes,
            last_batch_rel: 0,
            last_used_ms: 0,
            pin: Arc::new(()),
        }
    }

    /// Creates a new, empty active segment (and drops any stale index files
    /// of the same base).
    pub fn create(
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
        index_interval_bytes: u64,
    ) -> Result<Self, LogError> {
        let path = dir.join(file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err(format!("failed to create {}", path.display())))?;
        index::remove_files(&path);
        let mut seg = Self::blank(path, base_offset, index_interval_bytes);
        seg.file = Some(Arc::new(file));
        seg.map = Some(Arc::new(ReadMap::new_empty()));
        seg.created_ms = now_ms;
        seg.last_used_ms = now_ms;
        Ok(seg)
    }

    /// Opens a segment for recovery and appending: its committed end is zero
    /// until [`Segment::restore`] or [`Segment::scan`] sets it.
    pub fn open_active(
        path: PathBuf,
        base_offset: i64,
        index_interval_bytes: u64,
    ) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("failed to open {}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(io_err(format!("failed to stat {}", path.display())))?;
        let capacity = meta.len();
        let mut seg = Self::blank(path, base_offset, index_interval_bytes);
        let map = ReadMap::new(&file, capacity)
            .map_err(io_err(format!("failed to map {}", seg.path.display())))?
            .pinned(&seg.pin);
        seg.created_ms = mtime_ms(&meta);
        seg.file = Some(Arc::new(file));
        seg.map = Some(Arc::new(map));
        seg.capacity = capacity;
        Ok(seg)
    }

    /// A sealed segment, known by its name and length only: nothing is
    /// opened until it is used. `next_offset` is the next segment's base.
    pub fn open_sealed(
        path: PathBuf,
        base_offset: i64,
        next_offset: i64,
        index_interval_bytes: u64,
    ) -> Result<Self, LogError> {
        let meta = std::fs::metadata(&path)
            .map_err(io_err(format!("failed to stat {}", path.display())))?;
        let mut seg = Self::blank(path, base_offset, index_interval_bytes);
        seg.size = meta.len();
        seg.capacity = meta.len();
        seg.created_ms = mtime_ms(&meta);
        seg.next_offset = next_offset.max(base_offset);
        seg.max_timestamp = None;
        Ok(seg)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    /// Largest timestamp, once known (always for an open segment).
    pub fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp
    }
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    /// The write handle, for the active segment.
    pub fn file(&self) -> Option<&Arc<File>> {
        self.file.as_ref()
    }
    /// Whether the log file is mapped now.
    pub fn is_mapped(&self) -> bool {
        self.map.is_some()
    }

    fn data(&self) -> &[u8] {
        let map = self.map.as_deref().map_or(&[][..], ReadMap::as_slice);
        &map[..(self.size as usize).min(map.len())]
    }

    /// Records one batch of `len` bytes at `pos` in the indexes and counters.
    fn note_batch(&mut self, pos: u64, h: &BatchHeader, len: u64) {
        let rel = (h.base_offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let max_ts = self.max_timestamp.unwrap_or(-1).max(h.max_timestamp);
        self.max_timestamp = Some(max_ts);
        if self.bytes_since_index == 0 || self.bytes_since_index >= self.index_interval_bytes {
            self.index.push(OffsetEntry {
                rel_offset: rel,
                position: pos as u32,
            });
            if max_ts > self.time_index.last().map_or(-1, |e| e.timestamp) {
                self.time_index.push(TimeEntry {
                    timestamp: max_ts,
                    rel_offset: rel,
                });
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += len;
        self.last_batch_rel = rel;
        self.size = pos + len;
        self.next_offset = h.last_offset() + 1;
    }

    /// Forgets what is known of the contents, for a scan from the start.
    pub fn reset(&mut self) {
        self.size = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = Some(-1);
        self.index = Entries::default();
        self.time_index = Entries::default();
        self.persisted = (0, 0);
        self.bytes_since_index = 0;
        self.last_batch_rel = 0;
    }

    /// What a recovery checkpoint records of this (active) segment.
    pub fn state(&self) -> SegmentState {
        SegmentState {
            base_offset: self.base_offset,
            position: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp.unwrap_or(-1),
            created_ms: self.created_ms,
            bytes_since_index: self.bytes_since_index,
            last_batch_rel: self.last_batch_rel,
            index_entries: self.persisted.0 as u32,
            time_entries: self.persisted.1 as u32,
        }
    }

    /// Takes the state of a recovery checkpoint: the bytes below its position
    /// and the index entries it counted were fsynced, so they are trusted
    /// after a check that the entries fit and the last one points at the
    /// batch it names. Returns false (and changes nothing) when they do not.
    pub fn restore(&mut self, st: &SegmentState) -> bool {
        if st.base_offset != self.base_offset
            || st.position > self.capacity
            || st.next_offset < self.base_offset
            || (st.position == 0) != (st.next_offset == self.base_offset)
        {
            return false;
        }
        let index_path = index::path_for(&self.path, INDEX_SUFFIX);
        let time_path = index::path_for(&self.path, TIME_INDEX_SUFFIX);
        let (Ok(idx), Ok(time)) = (
            index::read_prefix::<OffsetEntry>(&index_path, st.index_entries as usize),
            index::read_prefix::<TimeEntry>(&time_path, st.time_entries as usize),
        ) else {
            return false;
        };
        if idx.len() != st.index_entries as usize || time.len() != st.time_entries as usize {
            return false;
        }
        let idx = Entries::Heap(idx);
        let time = Entries::Heap(time);
        let span = st.next_offset - self.base_offset;
        if !idx.is_sane(st.position, span) || !time.is_sane(span) {
            return false;
        }
        // From the last index entry (about one index interval before the
        // position at most), the batch headers must lead exactly to the
        // position and the next offset.
        let map = self.map.as_deref().map_or(&[][..], ReadMap::as_slice);
        let end = st.position as usize;
        if let Some(last) = idx.last() {
            let mut at = last.position as usize;
            let mut expect = self.base_offset + i64::from(last.rel_offset);
            while at < end {
                let next = map
                    .get(at..end)
                    .and_then(|b| BatchHeader::parse(b).ok())
                    .filter(|h| {
                        // Offsets may jump where the cleaner removed
                        // records, as in a scan.
                        h.base_offset >= expect
                            && h.batch_length > 0
                            && h.last_offset_delta >= 0
                            && at + h.total_len() <= end
                    });
                let Some(h) = next else { return false };
                expect = h.last_offset() + 1;
                at += h.total_len();
            }
            if expect != st.next_offset {
                return false;
            }
        }
        self.size = st.position;
        self.next_offset = st.next_offset;
        self.max_timestamp = Some(st.max_timestamp);
        self.created_ms = st.created_ms;
        self.bytes_since_index = st.bytes_since_index;
        self.last_batch_rel = st.last_batch_rel;
        self.persisted = (idx.len(), time.len());
        self.index = idx;
        self.time_index = time;
        true
    }

    /// Scans the batches from the committed end onwards, stopping at the
    /// first one that is torn, corrupt (when `check_crc`) or not contiguous,
    /// and sets the committed end there. Returns the headers it accepted, and
    /// whether the scan stopped before the end of the file's data (a torn
    /// tail).
    pub fn scan(&mut self, check_crc: bool) -> (Vec<BatchHeader>, bool) {
        let Some(map) = self.map.clone() else {
            return (Vec::new(), false);
        };
        let data = map.as_slice();
        let limit = data.len();
        let mut pos = self.size as usize;
        let mut headers = Vec::new();
        let mut torn = false;
        while pos < limit {
            if limit - pos < HEADER_LEN {
                torn = data[pos..].iter().any(|&b| b != 0);
                break;
            }
            let Ok(h) = BatchHeader::parse(&data[pos..]) else {
                torn = true;
                break;
            };
            if h.batch_length == 0 && h.base_offset == 0 {
                // Preallocated zeros: the end of the data. Non-zero bytes just
                // beyond mean a torn write. Only a window is looked at: the
                // preallocated tail can be most of the file, and bytes past
                // the committed end are never read.
                let window = (pos + TORN_WINDOW).min(limit);
                torn = data[pos..window].iter().any(|&b| b != 0);
                break;
            }
            let total = h.total_len();
            let ok_len = h.batch_length >= (HEADER_LEN - LOG_OVERHEAD) as i32
                && pos + total <= limit
                && h.magic == batch::MAGIC_V2
                // Offsets may jump where the cleaner removed records.
                && h.base_offset >= self.next_offset
                && h.last_offset_delta >= 0
                // Appends roll before a relative offset leaves u32 range.
                && h.last_offset() - self.base_offset < i64::from(u32::MAX)
                && pos + total <= u32::MAX as usize;
            if !ok_len {
                torn = true;
                break;
            }
            if check_crc && batch::validate_stored(&data[pos..pos + total]).is_err() {
                torn = true;
                break;
            }
            self.note_batch(pos as u64, &h, total as u64);
            headers.push(h);
            pos += total;
        }
        (headers, torn)
    }

    /// Maps a sealed segment and its indexes for use; an index that is
    /// missing or does not fit the log is rebuilt from it.
    ///
    /// # Errors
    /// I/O errors opening or mapping the log file.
    pub fn ensure_open(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.last_used_ms = now_ms;
        if self.map.is_some() {
            return Ok(());
        }
        let file = File::open(&self.path)
            .map_err(io_err(format!("failed to open {}", self.path.display())))?;
        let map = ReadMap::new(&file, self.size)
            .map_err(io_err(format!("failed to map {}", self.path.display())))?
            .pinned(&self.pin);
        self.map = Some(Arc::new(map));
        let span = self.next_offset - self.base_offset;
        let idx = index::map_file::<OffsetEntry>(&index::path_for(&self.path, INDEX_SUFFIX));
        let time = index::map_file::<TimeEntry>(&index::path_for(&self.path, TIME_INDEX_SUFFIX));
        match (idx, time) {
            (Ok(idx), Ok(time))
                if idx.is_sane(self.size, span)
                    && time.is_sane(span)
                    && self.entry_matches(idx.last()) =>
            {
                self.max_timestamp = Some(time.last().map_or(-1, |e| e.timestamp));
                self.index = idx;
                self.time_index = time;
            }
            _ => self.rebuild_index("missing or damaged"),
        }
        Ok(())
    }

    /// The segment's map and committed size, for reading its batches
    /// outside the partition lock (the log cleaner): the bytes below the
    /// size never change, and the map stays valid while it is held.
    ///
    /// # Errors
    /// I/O errors opening or mapping the log file.
    pub fn read_handle(&mut self, now_ms: i64) -> Result<(Arc<ReadMap>, u64), LogError> {
        self.ensure_open(now_ms)?;
        let map = self
            .map
            .clone()
            .unwrap_or_else(|| Arc::new(ReadMap::new_empty()));
        let size = self.size.min(map.len() as u64);
        Ok((map, size))
    }

    /// Whether an offset index entry points at the start of the batch it names.
    fn entry_matches(&self, e: Option<OffsetEntry>) -> bool {
        let Some(e) = e else { return true };
        let data = self.data();
        data.get(e.position as usize..)
            .and_then(|b| BatchHeader::parse(b).ok())
            .is_some_and(|h| {
                h.base_offset == self.base_offset + i64::from(e.rel_offset)
                    && h.batch_length > 0
                    && e.position as usize + h.total_len() <= data.len()
            })
    }

    /// Rebuilds both indexes by walking the batch headers of the committed
    /// bytes, and rewrites the files of a sealed segment.
    fn rebuild_index(&mut self, why: &str) {
        tracing::warn!(segment = %self.path.display(), why, "rebuilding segment index");
        let size = self.size;
        let expected_next = self.next_offset;
        self.reset();
        let mut headers = Vec::new();
        if let Some(map) = self.map.clone() {
            let data = &map.as_slice()[..(size as usize).min(map.len())];
            let mut pos = 0usize;
            while pos + HEADER_LEN <= data.len() {
                let Ok(h) = BatchHeader::parse(&data[pos..]) else {
                    break;
                };
                if h.batch_length <= 0 || pos + h.total_len() > data.len() {
                    break;
                }
                headers.push((pos, h));
                pos += h.total_len();
            }
        }
        for (pos, h) in headers {
            self.note_batch(pos as u64, &h, h.total_len() as u64);
        }
        if self.file.is_none() {
            // Sealed: keep its extent whatever the walk found, and persist.
            // A cleaned segment may end before the next one starts.
            if self.size != size || self.next_offset > expected_next {
                tracing::warn!(
                    segment = %self.path.display(),
                    walked_bytes = self.size,
                    file_bytes = size,
                    "sealed segment does not end where expected"
                );
            }
            self.size = size;
            self.next_offset = expected_next.max(self.next_offset);
            self.seal_index();
            let _ = self.write_index_files();
        }
    }

    /// Adds the final time index entry of a segment being sealed.
    fn seal_index(&mut self) {
        let max_ts = self.max_timestamp.unwrap_or(-1);
        if max_ts > self.time_index.last().map_or(-1, |e| e.timestamp) {
            self.time_index.push(TimeEntry {
                timestamp: max_ts,
                rel_offset: self.last_batch_rel,
            });
        }
    }

    fn write_index_files(&self) -> Vec<File> {
        let mut files = Vec::new();
        let index_path = index::path_for(&self.path, INDEX_SUFFIX);
        let time_path = index::path_for(&self.path, TIME_INDEX_SUFFIX);
        let res = index::write_file(&index_path, &self.index)
            .and_then(|a| index::write_file(&time_path, &self.time_index).map(|b| [a, b]));
        match res {
            Ok(fs) => files.extend(fs),
            // The index is a hint: the next use rebuilds it.
            Err(e) => {
                tracing::warn!(segment = %self.path.display(), error = %e, "failed to write segment index")
            }
        }
        files
    }

    /// Seals the active segment: cuts its preallocated tail, writes its index
    /// files and gives up its write handle. Returns the files that still need
    /// an fsync (the log and the indexes).
    ///
    /// # Errors
    /// I/O errors cutting the file.
    pub fn seal(&mut self) -> Result<Vec<Arc<File>>, LogError> {
        self.trim(false)?;
        self.seal_index();
        let mut files: Vec<Arc<File>> = self.file.take().into_iter().collect();
        files.extend(self.write_index_files().into_iter().map(Arc::new));
        Ok(files)
    }

    /// Writes the active segment's index entries not yet in its files (no
    /// fsync: [`sync_index_files`] does that outside the partition lock).
    ///
    /// # Errors
    /// The I/O error; the counts stay where the files are known to be.
    pub fn persist_index(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let index_path = index::path_for(&self.path, INDEX_SUFFIX);
        let time_path = index::path_for(&self.path, TIME_INDEX_SUFFIX);
        index::write_tail(&index_path, &self.index, self.persisted.0, false)?;
        self.persisted.0 = self.index.len();
        index::write_tail(&time_path, &self.time_index, self.persisted.1, false)?;
        self.persisted.1 = self.time_index.len();
        Ok(())
    }

    /// Releases the maps of a sealed segment unused since `before_ms`.
    /// Returns whether it did.
    pub fn release_if_idle(&mut self, before_ms: i64) -> bool {
        if self.file.is_some() || self.map.is_none() || self.last_used_ms >= before_ms {
            return false;
        }
        self.map = None;
        self.index = Entries::default();
        self.time_index = Entries::default();
        true
    }

    /// Cuts the file at the committed end (used for a torn tail during
    /// recovery, and to trim the preallocated tail of a segment being
    /// sealed). The map is replaced by one of the new length.
    pub fn trim(&mut self, sync: bool) -> Result<(), LogError> {
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        // Drop our map of the bytes being cut before cutting them.
        self.map = Some(Arc::new(ReadMap::new_empty()));
        file.set_len(self.size).map_err(io_err(format!(
            "failed to truncate {}",
            self.path.display()
        )))?;
        if sync {
            file.sync_all()
                .map_err(io_err(format!("failed to sync {}", self.path.display())))?;
        }
        self.capacity = self.size;
        self.map = Some(Arc::new(
            ReadMap::new(&file, self.size)
                .map_err(io_err(format!("failed to map {}", self.path.display())))?
                .pinned(&self.pin),
        ));
        Ok(())
    }

    /// Whether a batch of `len` more bytes should go to a new segment.
    pub fn should_roll(&self, len: u64, segment_bytes: u64, segment_ms: i64, now_ms: i64) -> bool {
        if self.size == 0 {
            return false;
        }
        self.size + len > segment_bytes
            || now_ms.saturating_sub(self.created_ms) > segment_ms
            || self.size + len > u64::from(u32::MAX)
            || self.next_offset - self.base_offset >= i64::from(u32::MAX)
    }

    fn ensure_capacity(&mut self, needed: u64, segment_bytes: u64) -> Result<(), LogError> {
        if needed <= self.capacity {
            return Ok(());
        }
        let Some(file) = self.file.clone() else {
            return Err(LogError::Closed);
        };
        let target = (self.capacity.saturating_mul(2))
            .max(MIN_GROW_BYTES)
            .min(segment_bytes.max(MIN_GROW_BYTES))
            .max(needed);
        file.set_len(target).map_err(io_err(format!(
            "failed to grow {} to {target} bytes",
            self.path.display()
        )))?;
        let map = ReadMap::new(&file, target)
            .map_err(io_err(format!("failed to map {}", self.path.display())))?
            .pinned(&self.pin);
        self.capacity = target;
        self.map = Some(Arc::new(map));
        Ok(())
    }

    /// Appends one validated batch whose header (already restamped) is
    /// `header` and whose remaining bytes are `body` (`batch[61..]`). Nothing
    /// changes when a write fails: the committed end stays where it was, and
    /// the next append overwrites whatever part was written.
    pub fn append(
        &mut self,
        header: &[u8; HEADER_LEN],
        body: &[u8],
        h: &BatchHeader,
        segment_bytes: u64,
    ) -> Result<(), LogError> {
        let len = (HEADER_LEN + body.len()) as u64;
        let pos = self.size;
        self.ensure_capacity(pos + len, segment_bytes)?;
        let Some(file) = self.file.as_ref() else {
            return Err(LogError::Closed);
        };
        super::faults::check(super::faults::Op::Write, &self.path)
            .and_then(|()| write_all_at(file, header, body, pos))
            .map_err(io_err(format!(
                "failed to write {} at {pos}",
                self.path.display()
            )))?;
        self.note_batch(pos, h, len);
        Ok(())
    }

    /// Position of the batch that contains `offset`, if the segment holds it.
    /// An index entry that does not point at the batch it names is taken for
    /// damage: the index is rebuilt from the log and the lookup repeated.
    pub fn find_batch(&mut self, offset: i64) -> Option<(usize, BatchHeader)> {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let entry = self.index.floor(rel);
        if !self.entry_matches(entry) {
            self.rebuild_index("an entry does not match the log");
        }
        let start = self.index.floor(rel).map_or(0, |e| e.position as usize);
        self.headers_from(start)
            .find(|(_, h)| h.last_offset() >= offset)
    }

    /// The batch headers from `pos` to the committed end, with positions.
    pub fn headers_from(&self, pos: usize) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
        let data = self.data();
        let mut pos = pos;
        std::iter::from_fn(move || {
            if pos + HEADER_LEN > data.len() {
                return None;
            }
            let h = BatchHeader::parse(&data[pos..]).ok()?;
            if h.batch_length <= 0 || pos + h.total_len() > data.len() {
                return None;
            }
            let at = pos;
            pos += h.total_len();
            Some((at, h))
        })
    }

    /// Position from which to look for the first record at or after `ts`:
    /// every batch before it is older.
    pub fn time_lookup_start(&mut self, ts: i64) -> usize {
        match self.time_index.before(ts) {
            None => 0,
            Some(rel) => self
                .find_batch(self.base_offset + i64::from(rel))
                .map_or(0, |(pos, _)| pos),
        }
    }

    /// Up to `max_bytes` of whole batches from `pos`; at least one batch when
    /// `min_one` (a fetch must make progress even past its byte limit).
    pub fn read_from(&self, pos: usize, max_bytes: usize, min_one: bool) -> Bytes {
        let Some(map) = self.map.as_ref() else {
            return Bytes::new();
        };
        let mut cur = pos;
        for (at, h) in self.headers_from(pos) {
            let next = at + h.total_len();
            if next - pos > max_bytes && !(min_one && at == pos) {
                break;
            }
            cur = next;
        }
        mmap::window(map, pos..cur)
    }

    /// The bytes of one batch at `pos` (for decoding on rare paths).
    pub fn batch_bytes(&self, pos: usize, h: &BatchHeader) -> Bytes {
        match self.map.as_ref() {
            Some(map) => mmap::window(map, pos..pos + h.total_len()),
            None => Bytes::new(),
        }
    }

    /// The partition leader epoch of the batch at `pos`, read from the
    /// mapped bytes (`None` when the segment is not mapped or `pos` is past
    /// the committed end).
    pub fn leader_epoch_at(&self, pos: usize) -> Option<i32> {
        self.data()
            .get(pos..pos + HEADER_LEN)
            .map(batch::partition_leader_epoch)
    }

    /// Cuts the segment's file to its first `pos` bytes (a tail truncation)
    /// and removes its index files; the segment object is spent afterwards
    /// (the caller reopens the log). When no map of the file is alive the
    /// file is cut in place; otherwise a window of it may still be on its
    /// way to a client, so the kept bytes are copied to a new file that is
    /// fsynced and renamed over the old one, whose bytes stay readable
    /// through the maps until they go. Either way the cut is on stable
    /// storage when this returns (the directory's fsync is the caller's).
    ///
    /// # Errors
    /// The I/O error; the file is then either whole or cut.
    pub fn cut_to(&mut self, pos: u64) -> Result<(), LogError> {
        let pos = pos.min(self.size);
        self.map = None;
        self.index = Entries::default();
        self.time_index = Entries::default();
        let err = |what: &str| io_err(format!("failed to {what} {}", self.path.display()));
        if Arc::strong_count(&self.pin) > 1 {
            let tmp = self.path.with_extension("cut.tmp");
            let copied = (|| {
                let mut src = File::open(&self.path)?.take(pos);
                let mut dst = File::create(&tmp)?;
                std::io::copy(&mut src, &mut dst)?;
                dst.sync_all()?;
                std::fs::rename(&tmp, &self.path)
            })();
            if copied.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            copied.map_err(err("copy the kept part of"))?;
        } else {
            let file = match self.file.clone() {
                Some(f) => f,
                None => Arc::new(
                    OpenOptions::new()
                        .write(true)
                        .open(&self.path)
                        .map_err(err("open"))?,
                ),
            };
            file.set_len(pos)
                .and_then(|()| file.sync_all())
                .map_err(err("truncate"))?;
        }
        index::remove_files(&self.path);
        self.file = None;
        self.size = pos;
        self.capacity = pos;
        Ok(())
    }

    /// fsync of the segment's data (the active segment).
    pub fn sync(&self) -> Result<(), LogError> {
        match self.file.as_ref() {
            Some(f) => f
                .sync_data()
                .map_err(io_err(format!("failed to sync {}", self.path.display()))),
            None => Ok(()),
        }
    }
}

/// Writes the offset and time index files, at `index_path` and
/// `time_path`, of a segment file of base `base_offset` written outside the
/// log (the cleaner's output) whose batches are `batches` (position and
/// header, in order). Returns the files, for an fsync.
///
/// # Errors
/// The I/O error.
pub fn write_index_files_for(
    base_offset: i64,
    batches: &[(u64, BatchHeader)],
    index_interval_bytes: u64,
    index_path: &Path,
    time_path: &Path,
) -> std::io::Result<[File; 2]> {
    let mut seg = Segment::blank(PathBuf::new(), base_offset, index_interval_bytes);
    for (pos, h) in batches {
        seg.note_batch(*pos, h, h.total_len() as u64);
    }
    seg.seal_index();
    Ok([
        index::write_file(index_path, &seg.index)?,
        index::write_file(time_path, &seg.time_index)?,
    ])
}

/// fsync of a segment's index files, through descriptors of their own (the
/// active segment's indexes are written by [`Segment::persist_index`]).
///
/// # Errors
/// The I/O error.
pub fn sync_index_files(segment: &Path) -> std::io::Result<()> {
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        File::open(index::path_for(segment, suffix))?.sync_data()?;
    }
    Ok(())
}

fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes `head` and then `body` at `at` with one system call (a short
/// write goes on where it stopped). One write that covers whole pages lets
/// the page cache fill a fresh page without zeroing it first, which a
/// separate 61-byte header write would make it do.
fn write_all_at(file: &File, head: &[u8], body: &[u8], at: u64) -> std::io::Result<()> {
    let total = head.len() + body.len();
    let mut done = 0;
    while done < total {
        let (h, b) = match done.checked_sub(head.len()) {
            None => (&head[done..], body),
            Some(d) => (&[][..], &body[d..]),
        };
        let n = match rustix::io::pwritev(
            file,
            &[std::io::IoSlice::new(h), std::io::IoSlice::new(b)],
            at + done as u64,
        ) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_file_name("0042.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.index"), None);
    }
}
