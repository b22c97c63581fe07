//! One segment: a `.log` file of contiguous v2 batches starting at a base offset.
//!
//! The file is grown in steps ahead of the data (a sparse preallocation) and
//! mapped read-only; appends are positional writes. `size` is the committed end:
//! the bytes below it are whole, validated batches, and nothing above it is ever
//! read. Offset lookups go through a sparse in-memory index (one entry per
//! `index_interval_bytes` of log) built while appending or, for a sealed
//! segment, on its first read.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use super::mmap::{self, ReadMap};
use super::LogError;

/// Width of the base-offset part of a segment file name.
pub const FILE_NAME_DIGITS: usize = 20;
/// Extension of segment data files.
pub const LOG_SUFFIX: &str = ".log";
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

/// One sparse index entry: the first batch at or after a position boundary.
#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    base_offset: i64,
    position: u32,
}

/// A segment file and what is known about its contents.
#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    path: PathBuf,
    file: Arc<File>,
    map: Arc<ReadMap>,
    /// Current length of the file (preallocated, possibly beyond `size`).
    capacity: u64,
    /// Committed end: every byte below is part of a whole batch.
    size: u64,
    /// Offset after the last record of the segment.
    next_offset: i64,
    /// Largest max-timestamp of any batch, -1 when empty.
    max_timestamp: i64,
    /// When the segment was created (for `segment.ms`), epoch ms.
    created_ms: i64,
    index: Vec<IndexEntry>,
    bytes_since_index: u64,
    index_interval_bytes: u64,
    /// False for a sealed segment whose contents were not scanned yet.
    scanned: bool,
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io { context, source }
}

impl Segment {
    /// Creates a new, empty segment file.
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
        Ok(Self {
            base_offset,
            path,
            file: Arc::new(file),
            map: Arc::new(ReadMap::new_empty()),
            capacity: 0,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms: now_ms,
            index: Vec::new(),
            bytes_since_index: 0,
            index_interval_bytes,
            scanned: true,
        })
    }

    /// Opens an existing segment without reading it (a sealed segment is
    /// scanned on first use).
    pub fn open(
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
        let created_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        let map = ReadMap::new(&file, capacity)
            .map_err(io_err(format!("failed to map {}", path.display())))?;
        Ok(Self {
            base_offset,
            path,
            file: Arc::new(file),
            map: Arc::new(map),
            capacity,
            size: capacity,
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms,
            index: Vec::new(),
            bytes_since_index: 0,
            index_interval_bytes,
            scanned: false,
        })
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
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Scans the batches from the start, stopping at the first one that is
    /// torn, corrupt (when `check_crc`) or not contiguous, and sets the
    /// committed end there. Returns the headers it accepted, and whether the
    /// scan stopped before the end of the file's data (a torn tail).
    pub fn scan(&mut self, check_crc: bool) -> (Vec<BatchHeader>, bool) {
        self.index.clear();
        self.bytes_since_index = 0;
        let data = self.map.as_slice();
        let limit = data.len();
        let mut pos = 0usize;
        let mut expected = self.base_offset;
        let mut max_ts = -1i64;
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
                // Preallocated zeros: the end of the data. Anything non-zero
                // beyond means a torn write.
                torn = data[pos..].iter().any(|&b| b != 0);
                break;
            }
            let total = h.total_len();
            let ok_len = h.batch_length >= (HEADER_LEN - LOG_OVERHEAD) as i32
                && pos + total <= limit
                && h.magic == batch::MAGIC_V2
                && h.base_offset == expected
                && h.last_offset_delta >= 0;
            if !ok_len {
                torn = true;
                break;
            }
            if check_crc && batch::validate(&data[pos..pos + total]).is_err() {
                torn = true;
                break;
            }
            if self.bytes_since_index == 0 || self.bytes_since_index >= self.index_interval_bytes {
                self.index.push(IndexEntry {
                    base_offset: h.base_offset,
                    position: pos as u32,
                });
                self.bytes_since_index = 0;
            }
            self.bytes_since_index += total as u64;
            max_ts = max_ts.max(h.max_timestamp);
            expected = h.last_offset() + 1;
            headers.push(h);
            pos += total;
        }
        self.size = pos as u64;
        self.next_offset = expected;
        self.max_timestamp = max_ts;
        self.scanned = true;
        (headers, torn)
    }

    /// Scans a sealed segment on its first use.
    pub fn ensure_scanned(&mut self) {
        if !self.scanned {
            let _ = self.scan(false);
        }
    }

    /// Cuts the file at the committed end (used for a torn tail during
    /// recovery, and to trim the preallocated tail of a sealed segment).
    /// The map is replaced by one of the new length.
    pub fn trim(&mut self, sync: bool) -> Result<(), LogError> {
        // Drop our map of the bytes being cut before cutting them.
        self.map = Arc::new(ReadMap::new_empty());
        self.file.set_len(self.size).map_err(io_err(format!(
            "failed to truncate {}",
            self.path.display()
        )))?;
        if sync {
            self.file
                .sync_all()
                .map_err(io_err(format!("failed to sync {}", self.path.display())))?;
        }
        self.capacity = self.size;
        self.map = Arc::new(
            ReadMap::new(&self.file, self.size)
                .map_err(io_err(format!("failed to map {}", self.path.display())))?,
        );
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
    }

    fn ensure_capacity(&mut self, needed: u64, segment_bytes: u64) -> Result<(), LogError> {
        if needed <= self.capacity {
            return Ok(());
        }
        let target = (self.capacity.saturating_mul(2))
            .max(MIN_GROW_BYTES)
            .min(segment_bytes.max(MIN_GROW_BYTES))
            .max(needed);
        self.file.set_len(target).map_err(io_err(format!(
            "failed to grow {} to {target} bytes",
            self.path.display()
        )))?;
        let map = ReadMap::new(&self.file, target)
            .map_err(io_err(format!("failed to map {}", self.path.display())))?;
        self.capacity = target;
        self.map = Arc::new(map);
        Ok(())
    }

    /// Appends one validated batch whose header (already restamped) is
    /// `header` and whose remaining bytes are `body` (`batch[61..]`).
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
        let write = |buf: &[u8], at: u64| {
            self.file.write_all_at(buf, at).map_err(io_err(format!(
                "failed to write {} at {at}",
                self.path.display()
            )))
        };
        write(header, pos)?;
        write(body, pos + HEADER_LEN as u64)?;
        if self.bytes_since_index == 0 || self.bytes_since_index >= self.index_interval_bytes {
            self.index.push(IndexEntry {
                base_offset: h.base_offset,
                position: pos as u32,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += len;
        self.size = pos + len;
        self.next_offset = h.last_offset() + 1;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        Ok(())
    }

    /// Position of the batch that contains `offset`, if the segment holds it.
    pub fn find_batch(&self, offset: i64) -> Option<(usize, BatchHeader)> {
        let data = &self.map.as_slice()[..(self.size as usize).min(self.map.len())];
        let start = match self.index.partition_point(|e| e.base_offset <= offset) {
            0 => 0,
            i => self.index[i - 1].position as usize,
        };
        let mut pos = start;
        while pos + HEADER_LEN <= data.len() {
            let h = BatchHeader::parse(&data[pos..]).ok()?;
            if h.last_offset() >= offset {
                return Some((pos, h));
            }
            pos += h.total_len();
        }
        None
    }

    /// Up to `max_bytes` of whole batches from `pos`; at least one batch when
    /// `min_one` (a fetch must make progress even past its byte limit).
    pub fn read_from(&self, pos: usize, max_bytes: usize, min_one: bool) -> Bytes {
        let end = (self.size as usize).min(self.map.len());
        let data = self.map.as_slice();
        let mut cur = pos;
        while cur + HEADER_LEN <= end {
            let Ok(h) = BatchHeader::parse(&data[cur..]) else {
                break;
            };
            let next = cur + h.total_len();
            if next > end {
                break;
            }
            if next - pos > max_bytes && !(min_one && cur == pos) {
                break;
            }
            cur = next;
        }
        mmap::window(&self.map, pos..cur)
    }

    /// Every batch header with its position (used by timestamp lookups).
    pub fn headers(&self) -> Vec<(usize, BatchHeader)> {
        let end = (self.size as usize).min(self.map.len());
        let data = self.map.as_slice();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos + HEADER_LEN <= end {
            let Ok(h) = BatchHeader::parse(&data[pos..]) else {
                break;
            };
            out.push((pos, h));
            pos += h.total_len();
        }
        out
    }

    /// The bytes of one batch at `pos` (for decoding on rare paths).
    pub fn batch_bytes(&self, pos: usize, h: &BatchHeader) -> Bytes {
        mmap::window(&self.map, pos..pos + h.total_len())
    }

    /// fsync of the segment's data.
    pub fn sync(&self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(io_err(format!("failed to sync {}", self.path.display())))
    }
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
