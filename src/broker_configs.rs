//! Dynamic broker configs: the broker settings that AlterConfigs and
//! IncrementalAlterConfigs may change on the BROKER resource while the
//! broker runs (Kafka's `DynamicBrokerConfig`). Each is kept in
//! `<data-dir>/broker-configs.json` and applied at once; at start the file
//! is read back over the flags.
//!
//! In a cluster the default broker resource `""` is kept by the metadata
//! quorum and applies to every broker, under each broker's own configs.
//!
//! A config weir knows but cannot change at run time is answered
//! `INVALID_CONFIG` as read-only, and one it does not know as unknown, as
//! Kafka answers them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use parking_lot::Mutex;

use crate::log::LogError;
use crate::topics::config::BrokerDefaults;
use crate::topics::Registry;

/// The file, in the data dir.
pub const FILE: &str = "broker-configs.json";

/// What a dynamic config does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The broker default of a topic config: topics that do not set it
    /// change with it.
    TopicDefault,
    /// The partitions of auto-created topics.
    NumPartitions,
    /// The log cleaner's I/O throttle, from its next pass.
    CleanerThrottle,
    /// The listeners' connection slots, changed at once.
    MaxConnections,
    /// Kafka's, taken and kept for the tools that set it; weir has nothing
    /// it applies to (no Kerberos).
    Kept,
}

/// One dynamic broker config.
#[derive(Debug)]
pub struct Dynamic {
    pub name: &'static str,
    /// Kafka's config type code (DescribeConfigs v3+).
    pub kind: i8,
    pub effect: Effect,
    check: fn(&str) -> Result<(), String>,
    pub doc: &'static str,
}

const INT: i8 = 3;
const LONG: i8 = 5;
const DOUBLE: i8 = 6;

/// The check of the topic config whose broker default `name` is.
fn as_topic_config(topic_config: &'static str) -> impl Fn(&str) -> Result<(), String> {
    move |v| crate::topics::config::validate(topic_config, v).map_err(|e| e.reason)
}

fn ck_retention(v: &str) -> Result<(), String> {
    as_topic_config("retention.ms")(v)
}

fn ck_segment(v: &str) -> Result<(), String> {
    as_topic_config("segment.bytes")(v)
}

fn ck_partitions(v: &str) -> Result<(), String> {
    match v.trim().parse::<i32>() {
        Ok(n) if (1..=crate::topics::MAX_PARTITIONS).contains(&n) => Ok(()),
        _ => Err(format!(
            "must be an integer between 1 and {}",
            crate::topics::MAX_PARTITIONS
        )),
    }
}

fn ck_int_1(v: &str) -> Result<(), String> {
    match v.trim().parse::<i32>() {
        Ok(n) if n >= 1 => Ok(()),
        _ => Err("must be an integer of at least 1".into()),
    }
}

fn ck_long_0(v: &str) -> Result<(), String> {
    match v.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(()),
        _ => Err("must be an integer of at least 0".into()),
    }
}

fn ck_positive(v: &str) -> Result<(), String> {
    match v.trim().parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok(()),
        _ => Err("must be a number above 0".into()),
    }
}

fn ck_fraction(v: &str) -> Result<(), String> {
    match v.trim().parse::<f64>() {
        Ok(n) if (0.0..=1.0).contains(&n) => Ok(()),
        _ => Err("must be a number between 0 and 1".into()),
    }
}

/// Every dynamic broker config weir takes.
pub const DYNAMIC: &[Dynamic] = &[
    Dynamic {
        name: "log.retention.ms",
        kind: LONG,
        effect: Effect::TopicDefault,
        check: ck_retention,
        doc: "Default retention.ms of topics that do not set it (-1: forever).",
    },
    Dynamic {
        name: "log.segment.bytes",
        kind: INT,
        effect: Effect::TopicDefault,
        check: ck_segment,
        doc: "Default segment.bytes of topics that do not set it; applies from the next segment.",
    },
    Dynamic {
        name: "num.partitions",
        kind: INT,
        effect: Effect::NumPartitions,
        check: ck_partitions,
        doc: "Partitions of an auto-created topic, and of CreateTopics asking for -1.",
    },
    Dynamic {
        name: "log.cleaner.io.max.bytes.per.second",
        kind: DOUBLE,
        effect: Effect::CleanerThrottle,
        check: ck_positive,
        doc: "The log cleaner's read and write throttle, in bytes per second; applies from its next pass.",
    },
    Dynamic {
        name: "max.connections",
        kind: INT,
        effect: Effect::MaxConnections,
        check: ck_int_1,
        doc: "Open client connections at most, over every listener; lowering it closes none, new ones wait until enough have closed.",
    },
    Dynamic {
        name: "sasl.kerberos.min.time.before.relogin",
        kind: LONG,
        effect: Effect::Kept,
        check: ck_long_0,
        doc: "Kafka's Kerberos setting: kept, with no effect (weir has no Kerberos).",
    },
    Dynamic {
        name: "sasl.kerberos.ticket.renew.jitter",
        kind: DOUBLE,
        effect: Effect::Kept,
        check: ck_fraction,
        doc: "Kafka's Kerberos setting: kept, with no effect (weir has no Kerberos).",
    },
    Dynamic {
        name: "sasl.kerberos.ticket.renew.window.factor",
        kind: DOUBLE,
        effect: Effect::Kept,
        check: ck_fraction,
        doc: "Kafka's Kerberos setting: kept, with no effect (weir has no Kerberos).",
    },
];

/// The dynamic config `name`, if it is one.
pub fn dynamic(name: &str) -> Option<&'static Dynamic> {
    DYNAMIC.iter().find(|d| d.name == name)
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `INVALID_CONFIG`, with the reason.
    Invalid(String),
    /// The file could not be written: `KAFKA_STORAGE_ERROR`.
    Storage(String),
}

/// Checks one config a client sets on the broker resource. `read_only`
/// names the broker configs weir describes but cannot change at run time.
///
/// # Errors
/// `Refused::Invalid` for a read-only, unknown or invalid config.
pub fn check(name: &str, value: &str, read_only: &dyn Fn(&str) -> bool) -> Result<(), Refused> {
    match dynamic(name) {
        Some(d) => (d.check)(value).map_err(|e| Refused::Invalid(format!("{name}: {e}"))),
        None if read_only(name) => Err(Refused::Invalid(format!(
            "{name} cannot be changed while the broker runs (a read-only broker config)"
        ))),
        None => Err(Refused::Invalid(format!("unknown broker config {name}"))),
    }
}

/// This broker's dynamic configs and the settings they changed.
#[derive(Debug)]
pub struct BrokerConfigs {
    path: PathBuf,
    set: Mutex<BTreeMap<String, String>>,
    /// The cluster-wide ones (the quorum's `""` resource), under `set`.
    cluster: Mutex<BTreeMap<String, String>>,
    /// The flags' topic defaults, under the dynamic ones.
    flags: BrokerDefaults,
    flag_partitions: i32,
    num_partitions: AtomicI32,
}

impl BrokerConfigs {
    /// Reads the configs set in `data_dir` (none when the file is missing;
    /// an entry that no longer checks is dropped with a warning).
    ///
    /// # Errors
    /// A file that cannot be read or parsed.
    pub fn open(
        data_dir: &Path,
        flags: BrokerDefaults,
        flag_partitions: i32,
    ) -> Result<Self, LogError> {
        let path = data_dir.join(FILE);
        let mut set: BTreeMap<String, String> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| LogError::Io {
                context: format!("failed to parse {}", path.display()),
                source: std::io::Error::other(e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(LogError::Io {
                    context: format!("failed to read {}", path.display()),
                    source: e,
                })
            }
        };
        set.retain(|k, v| {
            let ok = dynamic(k).is_some_and(|d| (d.check)(v).is_ok());
            if !ok {
                tracing::warn!(config = %k, value = %v, "ignoring a dynamic broker config that is not valid");
            }
            ok
        });
        Ok(Self {
            path,
            set: Mutex::new(set),
            cluster: Mutex::new(BTreeMap::new()),
            flags,
            flag_partitions,
            num_partitions: AtomicI32::new(flag_partitions),
        })
    }

    /// The dynamic configs set, by name.
    pub fn set(&self) -> BTreeMap<String, String> {
        self.set.lock().clone()
    }

    /// The cluster-wide dynamic configs (a cluster's `""` resource).
    pub fn cluster_defaults(&self) -> BTreeMap<String, String> {
        self.cluster.lock().clone()
    }

    /// Takes the quorum's cluster-wide configs; applies them when they
    /// changed (entries that do not check are left out with a warning).
    pub fn set_cluster_defaults(&self, next: &BTreeMap<String, String>, topics: &Registry) {
        {
            let mut cur = self.cluster.lock();
            if *cur == *next {
                return;
            }
            let mut next = next.clone();
            next.retain(|k, v| {
                let ok = dynamic(k).is_some_and(|d| (d.check)(v).is_ok());
                if !ok {
                    tracing::warn!(config = %k, value = %v, "ignoring a cluster-wide broker config that is not valid");
                }
                ok
            });
            tracing::info!(configs = ?next, "cluster-wide broker configs applied");
            *cur = next;
        }
        self.apply(topics);
    }

    /// The log cleaner's I/O throttle set dynamically, if it is.
    pub fn cleaner_io_max_bytes_per_second(&self) -> Option<f64> {
        let key = "log.cleaner.io.max.bytes.per.second";
        let own = self.set.lock().get(key).cloned();
        own.or_else(|| self.cluster.lock().get(key).cloned())
            .and_then(|v| v.trim().parse().ok())
    }

    /// `max.connections` set dynamically, if it is.
    pub fn max_connections(&self) -> Option<usize> {
        let key = "max.connections";
        let own = self.set.lock().get(key).cloned();
        own.or_else(|| self.cluster.lock().get(key).cloned())
            .and_then(|v| v.trim().parse().ok())
    }

    /// Partitions of an auto-created topic.
    pub fn num_partitions(&self) -> i32 {
        self.num_partitions.load(Ordering::Acquire)
    }

    /// The topic defaults: the flags', with the dynamic configs over them.
    fn defaults(&self, set: &BTreeMap<String, String>) -> BrokerDefaults {
        let mut d = self.flags.clone();
        if let Some(v) = set
            .get("log.retention.ms")
            .and_then(|v| v.trim().parse().ok())
        {
            d.retention_ms = v;
        }
        if let Some(v) = set
            .get("log.segment.bytes")
            .and_then(|v| v.trim().parse().ok())
        {
            d.segment_bytes = v;
        }
        d
    }

    /// Applies the configs set to the topic registry and the other
    /// settings (at start, and after each change).
    pub fn apply(&self, topics: &Registry) {
        let mut set = self.cluster.lock().clone();
        set.extend(self.set.lock().clone());
        let n = set
            .get("num.partitions")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(self.flag_partitions);
        self.num_partitions.store(n, Ordering::Release);
        topics.set_defaults(self.defaults(&set));
    }

    /// Replaces the configs set with `next` (checked by the caller), keeps
    /// them in the file, then applies them; `validate_only` changes
    /// nothing.
    ///
    /// # Errors
    /// `Refused::Storage` when the file cannot be written (nothing changes).
    pub fn replace(
        &self,
        next: BTreeMap<String, String>,
        topics: &Registry,
        validate_only: bool,
    ) -> Result<(), Refused> {
        if validate_only {
            return Ok(());
        }
        {
            let mut set = self.set.lock();
            let bytes =
                serde_json::to_vec_pretty(&next).map_err(|e| Refused::Storage(e.to_string()))?;
            crate::log::write_atomic(&self.path, &bytes)
                .map_err(|e| Refused::Storage(e.to_string()))?;
            for (k, v) in &next {
                if set.get(k) != Some(v) {
                    tracing::info!(config = %k, value = %v, "dynamic broker config set");
                }
            }
            for k in set.keys().filter(|k| !next.contains_key(*k)) {
                tracing::info!(config = %k, "dynamic broker config removed");
            }
            *set = next;
        }
        self.apply(topics);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_unknown_and_bad_values_are_refused() {
        let ro = |n: &str| n == "broker.id";
        assert!(check("log.retention.ms", "-1", &ro).is_ok());
        assert!(check("num.partitions", "0", &ro).is_err());
        assert!(check("log.segment.bytes", "13", &ro).is_err());
        assert!(
            matches!(check("broker.id", "2", &ro), Err(Refused::Invalid(m)) if m.contains("read-only"))
        );
        assert!(
            matches!(check("no.such", "1", &ro), Err(Refused::Invalid(m)) if m.contains("unknown"))
        );
        assert!(check("sasl.kerberos.min.time.before.relogin", "58000", &ro).is_ok());
    }

    #[test]
    fn configs_set_survive_a_reopen_and_change_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let flags = BrokerDefaults::new(1 << 30, 604_800_000);
        let topics = Registry::open(dir.path(), flags.clone(), 0).unwrap();
        let c = BrokerConfigs::open(dir.path(), flags.clone(), 1).unwrap();
        let mut next = BTreeMap::new();
        next.insert("log.retention.ms".to_string(), "3600000".to_string());
        next.insert("num.partitions".to_string(), "6".to_string());
        c.replace(next.clone(), &topics, true).unwrap();
        assert_eq!(c.num_partitions(), 1, "validate_only changes nothing");
        c.replace(next.clone(), &topics, false).unwrap();
        assert_eq!(c.num_partitions(), 6);
        assert_eq!(topics.defaults().retention_ms, 3_600_000);
        let again = BrokerConfigs::open(dir.path(), flags.clone(), 1).unwrap();
        assert_eq!(again.set(), next);
        again.apply(&topics);
        assert_eq!(again.num_partitions(), 6);
        // Removing one goes back to the flag's value.
        again.replace(BTreeMap::new(), &topics, false).unwrap();
        assert_eq!(again.num_partitions(), 1);
        assert_eq!(topics.defaults().retention_ms, 604_800_000);
    }
}
