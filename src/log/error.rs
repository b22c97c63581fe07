//! Storage errors, and the two small crash-safe file operations every part
//! of the engine uses.

use std::fs;
use std::io::Write;
use std::path::Path;

use thiserror::Error;

use super::batch::BatchError;

/// Storage errors. Each maps to one Kafka error code in the API layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("offset {offset} is outside the log [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("out of order sequence number")]
    OutOfOrderSequence,
    #[error("producer epoch is older than the current one")]
    InvalidProducerEpoch,
    #[error("control batches are written by the broker only")]
    ControlBatch,
    #[error("corrupt log in {dir}: {reason}")]
    Corruption { dir: String, reason: String },
    #[error("the partition was deleted")]
    Closed,
    /// A replica append whose batch does not start where the log (or the
    /// batch before it) ends.
    #[error("replicated batch starts at offset {got}, expected {expected}")]
    NonContiguous { expected: i64, got: i64 },
    /// The topic's name is reserved for the broker's internal state:
    /// clients may read it but not produce to it.
    #[error(
        "the topic name is reserved for the broker's internal use; clients may not produce to it"
    )]
    ReservedTopic,
}

pub(crate) fn io_err(context: String) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io { context, source }
}

/// Writes `path` crash-safely: temp file, fsync, rename, fsync of the directory.
///
/// # Errors
/// Any I/O error on the way; the old file stays intact.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let mut f =
        fs::File::create(&tmp).map_err(io_err(format!("failed to create {}", tmp.display())))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("failed to write {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_err(format!("failed to rename {}", tmp.display())))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// fsync of a directory, so that created, renamed or removed entries persist.
///
/// # Errors
/// The I/O error.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!(
            "failed to sync directory {}",
            dir.display()
        )))
}
