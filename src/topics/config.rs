//! Topic configs: Kafka's names, defaults and validation, plus weir's retry
//! configs. A topic stores only the configs set on it; everything else takes
//! the default shown here (or the broker-wide default from a flag).

use std::collections::BTreeMap;

use crate::log::LogConfig;

/// The type of a config value, as DescribeConfigs v3 reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One known topic config.
#[derive(Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: ConfigType,
    pub doc: &'static str,
    /// Validates a value; returns the reason it is wrong.
    check: fn(&str) -> Result<(), String>,
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(_) => Err("must be an integer".into()),
    }
}

fn ck_long_m1(v: &str) -> Result<(), String> {
    long_at_least(-1)(v)
}
fn ck_long_0(v: &str) -> Result<(), String> {
    long_at_least(0)(v)
}
fn ck_long_1(v: &str) -> Result<(), String> {
    long_at_least(1)(v)
}
fn ck_segment_bytes(v: &str) -> Result<(), String> {
    long_at_least(14)(v)?;
    match v.trim().parse::<i64>() {
        Ok(n) if n <= i64::from(i32::MAX) => Ok(()),
        _ => Err("must be at most 2147483647".into()),
    }
}
fn ck_int_0(v: &str) -> Result<(), String> {
    match v.trim().parse::<i32>() {
        Ok(n) if n >= 0 => Ok(()),
        _ => Err("must be an integer between 0 and 2147483647".into()),
    }
}
fn ck_bool(v: &str) -> Result<(), String> {
    match v.trim() {
        "true" | "false" => Ok(()),
        _ => Err("must be true or false".into()),
    }
}
fn ck_multiplier(v: &str) -> Result<(), String> {
    match v.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 1.0 => Ok(()),
        _ => Err("must be a number of at least 1".into()),
    }
}
fn ck_ratio(v: &str) -> Result<(), String> {
    match v.trim().parse::<f64>() {
        Ok(n) if (0.0..=1.0).contains(&n) => Ok(()),
        _ => Err("must be a number between 0 and 1".into()),
    }
}
fn ck_cleanup(v: &str) -> Result<(), String> {
    let ok = v
        .split(',')
        .map(str::trim)
        .all(|p| p == "delete" || p == "compact");
    if ok && !v.trim().is_empty() {
        Ok(())
    } else {
        Err("must be a list of delete and compact".into())
    }
}
fn ck_compression(v: &str) -> Result<(), String> {
    match v.trim() {
        "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
        _ => Err("must be one of producer, uncompressed, gzip, snappy, lz4, zstd".into()),
    }
}
fn ck_ts_type(v: &str) -> Result<(), String> {
    match v.trim() {
        "CreateTime" | "LogAppendTime" => Ok(()),
        _ => Err("must be CreateTime or LogAppendTime".into()),
    }
}

macro_rules! def {
    ($name:expr, $default:expr, $kind:ident, $check:expr, $doc:expr) => {
        ConfigDef {
            name: $name,
            default: $default,
            kind: ConfigType::$kind,
            doc: $doc,
            check: $check,
        }
    };
}

/// Names of weir's retry configs.
pub const RETRY_MAX_ATTEMPTS: &str = "retry.max.attempts";
pub const RETRY_BACKOFF_MS: &str = "retry.backoff.ms";
pub const RETRY_BACKOFF_MULTIPLIER: &str = "retry.backoff.multiplier";
pub const RETRY_BACKOFF_MAX_MS: &str = "retry.backoff.max.ms";

/// Every topic config weir knows, in the order DescribeConfigs lists them.
pub static TOPIC_CONFIGS: &[ConfigDef] = &[
    def!("cleanup.policy", "delete", List, ck_cleanup,
        "delete: old segments go by retention.ms and retention.bytes; compact: the log cleaner keeps the latest record of each key; compact,delete: both."),
    def!("compression.type", "producer", String, ck_compression,
        "Final compression of the topic's data; weir keeps the producer's codec."),
    def!("delete.retention.ms", "86400000", Long, ck_long_0,
        "How long a tombstone stays in a compacted topic after the cleaner first cleaned past it."),
    def!("file.delete.delay.ms", "60000", Long, ck_long_0,
        "Time to wait before deleting a file from the filesystem."),
    def!("flush.messages", "9223372036854775807", Long, ck_long_1,
        "Accepted for compatibility; weir's flushing follows --fsync."),
    def!("flush.ms", "9223372036854775807", Long, ck_long_0,
        "Accepted for compatibility; weir's flushing follows --fsync."),
    def!("index.interval.bytes", "4096", Int, ck_int_0,
        "Bytes of log between two offset index entries."),
    def!("max.compaction.lag.ms", "9223372036854775807", Long, ck_long_1,
        "A compacted log whose oldest dirty segment is older than this is cleaned whatever its dirty ratio."),
    def!("max.message.bytes", "1048588", Int, ck_int_0,
        "Largest record batch size allowed."),
    def!("message.timestamp.type", "CreateTime", String, ck_ts_type,
        "Whether record timestamps are the producer's (CreateTime) or the broker's (LogAppendTime)."),
    def!("min.cleanable.dirty.ratio", "0.5", Double, ck_ratio,
        "Share of a compacted log's cleanable bytes that must be dirty (not cleaned yet) before the cleaner takes it."),
    def!("min.compaction.lag.ms", "0", Long, ck_long_0,
        "A segment holding a record younger than this is not compacted yet."),
    def!("min.insync.replicas", "1", Int, ck_int_0,
        "Replicas that must acknowledge acks=all; a single broker has one."),
    def!("preallocate", "false", Boolean, ck_bool,
        "Accepted for compatibility; weir preallocates segment space in steps."),
    def!("retention.bytes", "-1", Long, ck_long_m1,
        "Largest size of a partition before old segments are deleted; -1 for no limit."),
    def!("retention.ms", "604800000", Long, ck_long_m1,
        "How long a segment is kept after its newest record; -1 for forever."),
    def!("segment.bytes", "1073741824", Int, ck_segment_bytes,
        "Size at which a segment is rolled."),
    def!("segment.ms", "604800000", Long, ck_long_1,
        "Age at which a segment is rolled."),
    def!("unclean.leader.election.enable", "false", Boolean, ck_bool,
        "Accepted for compatibility; a single broker has no other replicas."),
    def!(RETRY_MAX_ATTEMPTS, "0", Int, ck_int_0,
        "Broker-managed redeliveries before a record goes to the dead-letter topic; 0 disables."),
    def!(RETRY_BACKOFF_MS, "1000", Long, ck_long_0,
        "Delay before the first redelivery, in ms."),
    def!(RETRY_BACKOFF_MULTIPLIER, "2", Double, ck_multiplier,
        "Each next redelivery waits this much longer."),
    def!(RETRY_BACKOFF_MAX_MS, "3600000", Long, ck_long_0,
        "Cap on one redelivery delay, in ms."),
];

/// Looks up a config definition.
pub fn def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Why a config was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid config {name}={value:?}: {reason}")]
pub struct InvalidConfig {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// Checks one name/value pair.
///
/// # Errors
/// Unknown names and invalid values.
pub fn validate(name: &str, value: &str) -> Result<(), InvalidConfig> {
    let err = |reason: String| InvalidConfig {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    let d = def(name).ok_or_else(|| err("unknown topic config".into()))?;
    (d.check)(value).map_err(err)
}

/// Broker-wide defaults that flags can change.
#[derive(Debug, Clone)]
pub struct BrokerDefaults {
    pub segment_bytes: u64,
    pub retention_ms: i64,
    /// `--max-decompressed-batch-bytes` (broker-wide; no topic config).
    pub max_decompressed_batch_bytes: usize,
}

impl BrokerDefaults {
    /// Defaults with `--log-segment-bytes` and `--log-retention-ms`, and the
    /// default decompressed-batch bound.
    pub fn new(segment_bytes: u64, retention_ms: i64) -> Self {
        Self {
            segment_bytes,
            retention_ms,
            max_decompressed_batch_bytes: crate::log::compression::DEFAULT_MAX_DECOMPRESSED_BYTES,
        }
    }
}

impl BrokerDefaults {
    /// The default value of `name` on this broker.
    pub fn default_of(&self, d: &ConfigDef) -> String {
        match d.name {
            "segment.bytes" => self.segment_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            _ => d.default.to_string(),
        }
    }

    /// Whether the broker default differs from Kafka's (for config source).
    pub fn is_overridden(&self, d: &ConfigDef) -> bool {
        self.default_of(d) != d.default
    }
}

/// Effective value of a config for a topic.
pub fn effective(
    configs: &BTreeMap<String, String>,
    defaults: &BrokerDefaults,
    name: &str,
) -> Option<String> {
    configs
        .get(name)
        .cloned()
        .or_else(|| def(name).map(|d| defaults.default_of(d)))
}

fn get_i64(
    configs: &BTreeMap<String, String>,
    defaults: &BrokerDefaults,
    name: &str,
    fallback: i64,
) -> i64 {
    effective(configs, defaults, name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(fallback)
}

/// The log settings a topic's configs imply.
pub fn log_config(configs: &BTreeMap<String, String>, defaults: &BrokerDefaults) -> LogConfig {
    let d = LogConfig::default();
    let compact = effective(configs, defaults, "cleanup.policy")
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "compact"));
    LogConfig {
        segment_bytes: get_i64(configs, defaults, "segment.bytes", d.segment_bytes as i64).max(14)
            as u64,
        segment_ms: get_i64(configs, defaults, "segment.ms", d.segment_ms),
        retention_ms: get_i64(configs, defaults, "retention.ms", d.retention_ms),
        retention_bytes: get_i64(configs, defaults, "retention.bytes", d.retention_bytes),
        max_message_bytes: get_i64(
            configs,
            defaults,
            "max.message.bytes",
            d.max_message_bytes as i64,
        )
        .max(0) as usize,
        log_append_time: effective(configs, defaults, "message.timestamp.type").as_deref()
            == Some("LogAppendTime"),
        delete_retention: effective(configs, defaults, "cleanup.policy")
            .is_none_or(|v| v.split(',').any(|p| p.trim() == "delete")),
        index_interval_bytes: get_i64(
            configs,
            defaults,
            "index.interval.bytes",
            d.index_interval_bytes as i64,
        )
        .max(0) as u64,
        max_decompressed_batch_bytes: defaults.max_decompressed_batch_bytes,
        client_appends: true,
        keys_required: compact,
        compact,
        min_cleanable_dirty_ratio: effective(configs, defaults, "min.cleanable.dirty.ratio")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(d.min_cleanable_dirty_ratio),
        min_compaction_lag_ms: get_i64(
            configs,
            defaults,
            "min.compaction.lag.ms",
            d.min_compaction_lag_ms,
        ),
        max_compaction_lag_ms: get_i64(
            configs,
            defaults,
            "max.compaction.lag.ms",
            d.max_compaction_lag_ms,
        ),
        delete_retention_ms: get_i64(
            configs,
            defaults,
            "delete.retention.ms",
            d.delete_retention_ms,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_and_bad_values_are_refused() {
        assert!(validate("retention.ms", "100").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "abc").is_err());
        assert!(validate("no.such.config", "1").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("message.timestamp.type", "Now").is_err());
        assert!(validate("retry.backoff.multiplier", "0.5").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
    }

    #[test]
    fn log_config_follows_the_topic_configs() {
        let defaults = BrokerDefaults::new(1 << 30, 1000);
        let mut c = BTreeMap::new();
        c.insert("segment.bytes".to_string(), "1000".to_string());
        c.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let l = log_config(&c, &defaults);
        assert_eq!(l.segment_bytes, 1000);
        assert_eq!(l.retention_ms, 1000);
        assert!(l.log_append_time);
    }
}
