//! CRC-framed append-only files: the format of the broker's internal logs
//! (committed offsets, pending retries).
//!
//! An entry is `len u32 | crc32c u32 | payload`, big-endian, the CRC over the
//! payload. Replay walks whole entries from the start and stops at the first
//! one that is short, empty, too long or fails its CRC: everything from there
//! is a torn tail, cut by the caller.

use std::fs::{File, OpenOptions};
use std::path::Path;

use bytes::Bytes;

use super::error::LogError;

/// Opens an internal log for reading and appending; when replay stopped at
/// `valid` before `len`, cuts the file there (fsynced) and logs it as `what`.
///
/// # Errors
/// I/O errors opening or truncating.
pub fn open_truncated(path: &Path, valid: usize, len: usize, what: &str) -> Result<File, LogError> {
    let err = |context: String| move |source| LogError::Io { context, source };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(err(format!("failed to open {}", path.display())))?;
    if valid < len {
        tracing::warn!(
            file = %path.display(),
            valid_bytes = valid,
            dropped_bytes = len - valid,
            "truncating torn tail of the {what}"
        );
        file.set_len(valid as u64)
            .and_then(|()| file.sync_all())
            .map_err(err(format!("failed to truncate {}", path.display())))?;
    }
    Ok(file)
}

/// Frames `payload` as one entry.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The valid entries at the start of `bytes`, as (position, payload).
pub struct Frames<'a> {
    bytes: &'a [u8],
    pos: usize,
    max_len: u32,
}

impl<'a> Frames<'a> {
    /// Walks `bytes`; entries longer than `max_len` count as corruption.
    pub fn new(bytes: &'a [u8], max_len: u32) -> Self {
        Self {
            bytes,
            pos: 0,
            max_len,
        }
    }

    /// End of the last valid entry returned so far.
    pub fn valid_end(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.bytes;
        let pos = self.pos;
        if pos + 8 > b.len() {
            return None;
        }
        let len = u32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
        let crc = u32::from_be_bytes([b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]]);
        if len == 0 || len > self.max_len || pos + 8 + len as usize > b.len() {
            return None;
        }
        let payload = &b[pos + 8..pos + 8 + len as usize];
        if crc32c::crc32c(payload) != crc {
            return None;
        }
        self.pos = pos + 8 + len as usize;
        Some((pos as u64, payload))
    }
}

/// Reads big-endian fields from a payload; every read checks the length.
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    pub fn take(&mut self, n: usize) -> Option<&[u8]> {
        (self.0.len() >= n).then(|| {
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            a
        })
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes)
    }
    pub fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes)
    }
    /// A string with a u16 length.
    pub fn str16(&mut self) -> Option<String> {
        let n = self
            .take(2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)?;
        self.take(n as usize)
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
    }
    /// Bytes with an i32 length, -1 for none.
    pub fn bytes32(&mut self) -> Option<Option<Bytes>> {
        let n = self.i32()?;
        if n < 0 {
            return Some(None);
        }
        self.take(n as usize)
            .map(|b| Some(Bytes::copy_from_slice(b)))
    }
    /// Whether every byte was read.
    pub fn is_done(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stop_at_the_first_bad_entry() {
        let mut b = frame(b"one");
        b.extend_from_slice(&frame(b"two"));
        let good = b.len();
        let mut bad = frame(b"three");
        bad[9] ^= 1;
        b.extend_from_slice(&bad);
        b.extend_from_slice(&frame(b"four"));
        let mut f = Frames::new(&b, 1024);
        let got: Vec<&[u8]> = f.by_ref().map(|(_, p)| p).collect();
        assert_eq!(got, vec![&b"one"[..], &b"two"[..]]);
        assert_eq!(f.valid_end(), good);
    }
}
