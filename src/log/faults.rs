//! Injected I/O failures, for tests (feature `fault-injection`).
//!
//! A test arms a fault for files whose path contains a string; the storage
//! engine's appends and fsyncs, and those of the two internal logs, ask
//! [`check`] first and fail with the armed error. Without the feature
//! `check` is an empty inline function.

use std::io;
use std::path::Path;

/// The operation a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A positional write of data.
    Write,
    /// An fsync.
    Sync,
}

#[cfg(feature = "fault-injection")]
mod armed {
    use super::{io, Op, Path};
    use parking_lot::Mutex;

    struct Fault {
        op: Op,
        path_contains: String,
        remaining: u32,
        errno: i32,
    }

    static FAULTS: Mutex<Vec<Fault>> = Mutex::new(Vec::new());

    /// Makes the next `times` operations `op` on a path containing
    /// `path_contains` fail with OS error `errno`.
    pub fn inject(op: Op, path_contains: &str, times: u32, errno: i32) {
        FAULTS.lock().push(Fault {
            op,
            path_contains: path_contains.to_string(),
            remaining: times,
            errno,
        });
    }

    /// Disarms every fault on paths containing `path_contains`.
    pub fn clear(path_contains: &str) {
        FAULTS
            .lock()
            .retain(|f| !f.path_contains.contains(path_contains));
    }

    /// The armed error for this operation, if any (and counts it).
    pub fn check(op: Op, path: &Path) -> io::Result<()> {
        let mut faults = FAULTS.lock();
        let path = path.to_string_lossy();
        for f in faults.iter_mut() {
            if f.op == op && f.remaining > 0 && path.contains(&f.path_contains) {
                f.remaining -= 1;
                return Err(io::Error::from_raw_os_error(f.errno));
            }
        }
        Ok(())
    }
}

#[cfg(feature = "fault-injection")]
pub use armed::{check, clear, inject};

/// Without the feature nothing is ever injected.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn check(_op: Op, _path: &Path) -> io::Result<()> {
    Ok(())
}
