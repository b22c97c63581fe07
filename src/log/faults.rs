//! Injected I/O failures, for tests (feature `fault-injection`).
//!
//! A test arms a fault for files whose path contains a string; the storage
//! engine's appends and fsyncs, and those of the two internal logs, ask
//! [`check`] first and fail with the armed error, or are slowed by the armed
//! delay. Without the feature
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
    use std::time::Duration;

    struct Fault {
        op: Op,
        path_contains: String,
        remaining: u32,
        /// Fail with this OS error, or
        errno: i32,
        /// succeed after this long (a slow disk).
        delay: Option<Duration>,
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
            delay: None,
        });
    }

    /// Makes the next `times` operations `op` on a path containing
    /// `path_contains` take `delay` longer, then succeed.
    pub fn inject_delay(op: Op, path_contains: &str, times: u32, delay: Duration) {
        FAULTS.lock().push(Fault {
            op,
            path_contains: path_contains.to_string(),
            remaining: times,
            errno: 0,
            delay: Some(delay),
        });
    }

    /// Disarms every fault on paths containing `path_contains`.
    pub fn clear(path_contains: &str) {
        FAULTS
            .lock()
            .retain(|f| !f.path_contains.contains(path_contains));
    }

    /// The armed error for this operation, if any (and counts it); an
    /// armed delay is slept here.
    pub fn check(op: Op, path: &Path) -> io::Result<()> {
        let delay = {
            let mut faults = FAULTS.lock();
            let path = path.to_string_lossy();
            let Some(f) = faults
                .iter_mut()
                .find(|f| f.op == op && f.remaining > 0 && path.contains(&f.path_contains))
            else {
                return Ok(());
            };
            f.remaining -= 1;
            match f.delay {
                Some(d) => d,
                None => return Err(io::Error::from_raw_os_error(f.errno)),
            }
        };
        std::thread::sleep(delay);
        Ok(())
    }
}

#[cfg(feature = "fault-injection")]
pub use armed::{check, clear, inject, inject_delay};

/// Without the feature nothing is ever injected.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn check(_op: Op, _path: &Path) -> io::Result<()> {
    Ok(())
}
