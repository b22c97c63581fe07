//! The one place where weir maps files into memory.
//!
//! Segment files are written with positional writes (`pwrite`) and read through
//! a read-only shared mapping of the same file; Linux's unified page cache makes
//! written bytes visible through the mapping at once. Mapping for reads only
//! means a full disk surfaces as an `ENOSPC` error from `write_at`, never as a
//! `SIGBUS` from a store into a hole.
//!
//! The invariants memmap2 asks us to uphold, for every map made here:
//!
//! 1. Only this process writes the data directory: the broker holds an
//!    exclusive lock on `<data-dir>/.lock` for its whole life.
//! 2. No byte below a segment's committed end is ever rewritten while mapped:
//!    the log only appends; batches are complete on disk before the committed
//!    end moves past them.
//! 3. Readers never touch bytes at or beyond the committed end, and a file is
//!    never shrunk below its committed end while a map of it exists (torn tails
//!    are cut during recovery, before the committed end is set; a roll only
//!    trims the unused preallocated tail beyond the committed end; a tail
//!    truncation cuts a file in place only when no map of it is alive, and
//!    otherwise writes the kept bytes to a new file renamed over the old).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

/// A read-only map of the first `len` bytes of a segment file.
#[derive(Debug)]
pub struct ReadMap {
    map: Option<Mmap>,
    /// Shared by every map of one segment file, so that the segment can
    /// tell whether any map of the file (held by a window still being sent)
    /// is alive before it cuts the file.
    _pin: Option<Arc<()>>,
}

impl ReadMap {
    /// Maps `len` bytes of `file` read-only. A zero length makes an empty map.
    ///
    /// # Errors
    /// The `mmap` system call's error.
    pub fn new(file: &File, len: u64) -> io::Result<Self> {
        if len == 0 {
            return Ok(Self::new_empty());
        }
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "map too large"))?;
        // SAFETY: see the module invariants: the data-dir lock keeps other
        // processes from writing the file (1); bytes that readers can reach are
        // never rewritten (2) and never cut off while this map lives (3). The
        // file may be longer or shorter than `len` beyond the committed end,
        // which readers never access.
        let map = unsafe { MmapOptions::new().len(len).map(file)? };
        Ok(Self {
            map: Some(map),
            _pin: None,
        })
    }

    /// A map of nothing.
    pub fn new_empty() -> Self {
        Self {
            map: None,
            _pin: None,
        }
    }

    /// Ties this map to `pin`: [`Arc::strong_count`] of the pin then counts
    /// the live maps of the file.
    pub fn pinned(mut self, pin: &Arc<()>) -> Self {
        self._pin = Some(Arc::clone(pin));
        self
    }

    /// Mapped length.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// A window of a shared map, handed out as `Bytes` without copying.
struct MapWindow {
    map: Arc<ReadMap>,
    range: Range<usize>,
}

impl AsRef<[u8]> for MapWindow {
    fn as_ref(&self) -> &[u8] {
        &self.map.as_slice()[self.range.clone()]
    }
}

/// Returns `range` of `map` as `Bytes` that keep the map alive. The caller
/// guarantees the range lies below the committed end (invariant 3).
pub fn window(map: &Arc<ReadMap>, range: Range<usize>) -> Bytes {
    if range.is_empty() || range.end > map.len() {
        return Bytes::new();
    }
    Bytes::from_owner(MapWindow {
        map: Arc::clone(map),
        range,
    })
}
