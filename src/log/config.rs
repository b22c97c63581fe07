//! The settings of one partition's log, from its topic's configs.

use super::compression;

/// Per-partition settings, from the topic's configs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    pub index_interval_bytes: u64,
    /// `cleanup.policy` includes `delete`: retention applies.
    pub delete_retention: bool,
    /// Largest size a produced batch may decompress to
    /// (`--max-decompressed-batch-bytes`).
    pub max_decompressed_batch_bytes: usize,
    /// Whether clients may produce to the partition (false for a topic
    /// whose name is reserved, kept from an older data dir).
    pub client_appends: bool,
    /// `cleanup.policy` includes `compact`: every produced record needs a
    /// key.
    pub keys_required: bool,
    /// The log cleaner compacts the partition (`cleanup.policy` includes
    /// `compact`, and the topic is not one of the broker's own journals).
    pub compact: bool,
    /// `min.cleanable.dirty.ratio`: the share of the cleanable bytes that
    /// must be dirty (not cleaned yet) before the cleaner takes the
    /// partition.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment whose newest record is younger
    /// than this is not cleaned yet.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a partition whose oldest dirty segment is
    /// older than this is cleaned whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone stays after the cleaner
    /// first cleaned past it.
    pub delete_retention_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            index_interval_bytes: 4096,
            delete_retention: true,
            max_decompressed_batch_bytes: compression::DEFAULT_MAX_DECOMPRESSED_BYTES,
            client_appends: true,
            keys_required: false,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}
