//! The topic registry: names, ids, partition logs and configs, persisted
//! crash-safely in `<data-dir>/meta.json` (write-temp, fsync, rename).
//!
//! Every change to the set of topics or their configs goes through one mutex
//! (`change`), which also writes the metadata file before the change becomes
//! visible, so a crash at any point leaves either the old or the new metadata.

pub mod config;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::log::{self, LogError, PartitionLog};
use config::{BrokerDefaults, InvalidConfig};

/// File name of the metadata file in the data dir.
pub const META_FILE: &str = "meta.json";
/// Longest legal topic name (Kafka's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// Most partitions one topic may have.
pub const MAX_PARTITIONS: i32 = 10_000;
/// Producer ids are handed out in persisted blocks of this size.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Errors of topic operations; each maps to a Kafka error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error("unknown topic '{0}'")]
    Unknown(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor {0}: a single broker holds one replica")]
    InvalidReplicationFactor(i16),
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    #[error(transparent)]
    Storage(#[from] LogError),
}

/// One topic.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    configs: RwLock<BTreeMap<String, String>>,
    partitions: RwLock<Vec<Arc<PartitionLog>>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<Arc<PartitionLog>> {
        let idx = usize::try_from(index).ok()?;
        self.partitions.read().get(idx).cloned()
    }
    pub fn partitions(&self) -> Vec<Arc<PartitionLog>> {
        self.partitions.read().clone()
    }
    pub fn partition_count(&self) -> i32 {
        self.partitions.read().len() as i32
    }
    /// Configs set on the topic (not the defaults).
    pub fn configs(&self) -> BTreeMap<String, String> {
        self.configs.read().clone()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct MetaFile {
    version: u32,
    cluster_id: String,
    /// Producer ids below this may have been handed out already.
    producer_id_block_end: i64,
    topics: Vec<TopicMeta>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicMeta {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

/// All topics of the broker.
#[derive(Debug)]
pub struct Registry {
    data_dir: PathBuf,
    /// Changed at run time by dynamic broker configs.
    defaults: RwLock<BrokerDefaults>,
    cluster_id: String,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises changes and the metadata file writes.
    change: Mutex<()>,
    next_producer_id: AtomicI64,
    producer_id_block_end: AtomicI64,
}

/// Names clients may not create or produce to: Kafka's internal topics
/// (whose clients expect them to be the broker's), and the directories of
/// weir's own internal logs in the data dir (committed offsets, held
/// retries, transactions), which are not topics.
pub const RESERVED_NAMES: &[&str] = &[
    crate::group::offsets::OFFSETS_DIR,
    TXN_INTERNAL,
    "__share_group_state",
    "__cluster_metadata",
    // The pending-retry store's directory on a single node, the held
    // retries' internal topic in a cluster.
    RETRY_INTERNAL,
];

/// The name of weir's held retries: the directory of the pending-retry
/// store on a single node (`retry::store::DIR`), the internal topic that
/// journals them in a cluster.
pub const RETRY_INTERNAL: &str = "__retry";

/// The transaction coordinator's state: its journal's directory on a
/// single node, the internal topic that journals it in a cluster.
pub const TXN_INTERNAL: &str = "__transaction_state";

/// Whether `name` is an internal topic the broker itself makes (in a
/// cluster, `__consumer_offsets` journals committed offsets, `__retry`
/// held retries and `__transaction_state` the transactions): reserved for
/// clients, but a topic like any other to replication.
pub fn is_internal(name: &str) -> bool {
    name == crate::group::offsets::OFFSETS_DIR || name == RETRY_INTERNAL || name == TXN_INTERNAL
}

/// Whether `name` is reserved for the broker's internal state.
pub fn is_reserved(name: &str) -> bool {
    RESERVED_NAMES.contains(&name)
}

/// Checks a topic name a client gives (to create it, or to produce to it
/// when it does not exist) against Kafka's rules, reserved names included.
///
/// # Errors
/// Why the name is not legal.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let bad = |reason| TopicError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if is_reserved(name) {
        return Err(bad(
            "the name is reserved for the broker's internal use (Kafka: Topic name is reserved)",
        ));
    }
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are not allowed"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(bad("longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(bad(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// The log settings of a topic's partitions: its configs, and no client
/// appends when its name is reserved.
fn topic_log_config(
    name: &str,
    configs: &BTreeMap<String, String>,
    defaults: &BrokerDefaults,
) -> log::LogConfig {
    let mut lc = config::log_config(configs, defaults);
    lc.client_appends = !is_reserved(name);
    // The broker's own journals are `compact` so that retention keeps
    // them, but their records are not keyed for compaction (`__retry`'s
    // keys name a record's kind), so the cleaner leaves them; but
    // `__transaction_state`, whose latest record of each transactional id
    // holds its whole state.
    lc.compact &= name == TXN_INTERNAL || (!is_reserved(name) && !is_internal(name));
    lc
}

fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

impl Registry {
    /// Loads the metadata file (creating it on first start) and opens every
    /// partition log.
    ///
    /// # Errors
    /// I/O errors, an unreadable metadata file, or a log that cannot be opened.
    pub fn open(data_dir: &Path, defaults: BrokerDefaults, now_ms: i64) -> Result<Self, LogError> {
        Self::open_with(data_dir, defaults, now_ms, false)
    }

    /// Like [`Registry::open`]; `clean` says the previous run shut down
    /// cleanly, so partition recovery skips CRC checks.
    ///
    /// # Errors
    /// As [`Registry::open`].
    pub fn open_with(
        data_dir: &Path,
        defaults: BrokerDefaults,
        now_ms: i64,
        clean: bool,
    ) -> Result<Self, LogError> {
        let path = data_dir.join(META_FILE);
        let meta: MetaFile = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LogError::Corruption {
                dir: path.display().to_string(),
                reason: format!("unreadable metadata: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetaFile {
                version: 1,
                cluster_id: new_cluster_id(),
                producer_id_block_end: 0,
                topics: Vec::new(),
            },
            Err(source) => {
                return Err(LogError::Io {
                    context: format!("failed to read {}", path.display()),
                    source,
                })
            }
        };
        // Partitions of deleted topics whose removal a stop cut short.
        if let Ok(entries) = fs::read_dir(data_dir) {
            let leftovers: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(DELETED_SUFFIX))
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            remove_in_background(leftovers);
        }
        crate::log::records::set_max_decompressed_bytes(defaults.max_decompressed_batch_bytes);
        let mut topics = BTreeMap::new();
        for t in &meta.topics {
            let mut parts = Vec::new();
            let lc = topic_log_config(&t.name, &t.configs, &defaults);
            for p in 0..t.partitions {
                parts.push(Arc::new(PartitionLog::open_with(
                    &partition_dir(data_dir, &t.name, p),
                    lc.clone(),
                    now_ms,
                    clean,
                )?));
            }
            topics.insert(
                t.name.clone(),
                Arc::new(Topic {
                    name: t.name.clone(),
                    id: t.id,
                    configs: RwLock::new(t.configs.clone()),
                    partitions: RwLock::new(parts),
                }),
            );
        }
        let reg = Self {
            data_dir: data_dir.to_path_buf(),
            defaults: RwLock::new(defaults),
            cluster_id: meta.cluster_id,
            topics: RwLock::new(topics),
            change: Mutex::new(()),
            // Ids of the previous block may be in use: start past it.
            next_producer_id: AtomicI64::new(meta.producer_id_block_end),
            producer_id_block_end: AtomicI64::new(meta.producer_id_block_end),
        };
        {
            let _g = reg.change.lock();
            reg.persist_locked()?;
        }
        Ok(reg)
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The broker's defaults for topic configs, as of now.
    pub fn defaults(&self) -> BrokerDefaults {
        self.defaults.read().clone()
    }

    /// Takes new broker defaults (a dynamic broker config changed): every
    /// partition of a topic that does not set the config itself gets it.
    pub fn set_defaults(&self, defaults: BrokerDefaults) {
        let _g = self.change.lock();
        *self.defaults.write() = defaults.clone();
        for t in self.topics.read().values() {
            let lc = topic_log_config(&t.name, &t.configs(), &defaults);
            for p in t.partitions() {
                p.set_config(lc.clone());
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    fn persist_locked(&self) -> Result<(), LogError> {
        let topics = self.topics.read();
        self.write_meta(topics.values().map(|t| TopicMeta {
            name: t.name.clone(),
            id: t.id,
            partitions: t.partition_count(),
            configs: t.configs(),
        }))
    }

    fn write_meta(&self, topics: impl Iterator<Item = TopicMeta>) -> Result<(), LogError> {
        let meta = MetaFile {
            version: 1,
            cluster_id: self.cluster_id.clone(),
            producer_id_block_end: self.producer_id_block_end.load(Ordering::Acquire),
            topics: topics.collect(),
        };
        let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| LogError::Io {
            context: "failed to encode metadata".into(),
            source: std::io::Error::other(e),
        })?;
        log::write_atomic(&self.data_dir.join(META_FILE), &bytes)
    }

    /// Validates a create request without changing anything.
    ///
    /// # Errors
    /// The reason the topic cannot be created.
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        validate_name(name)?;
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(format!(
                "{partitions} partitions requested; must be between 1 and {MAX_PARTITIONS}"
            )));
        }
        if replication_factor != -1 && replication_factor != 1 {
            return Err(TopicError::InvalidReplicationFactor(replication_factor));
        }
        for (k, v) in configs {
            config::validate(k, v)?;
        }
        Ok(())
    }

    /// Creates a topic with `partitions` partitions and `configs`.
    ///
    /// # Errors
    /// See [`Registry::check_create`]; storage errors.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Arc<Topic>, TopicError> {
        let _g = self.change.lock();
        self.check_create(name, partitions, replication_factor, &configs)?;
        self.create_locked(name, Uuid::new_v4(), partitions, configs, now_ms)
    }

    /// Creates this broker's replicas of a cluster topic, under the id and
    /// with the partitions and configs the cluster's metadata gives it (a
    /// topic of the same name with another id, left from before a delete
    /// this broker missed, is replaced).
    ///
    /// # Errors
    /// Storage errors.
    pub fn create_replica(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.get(name) {
            if t.id == id {
                return Ok(t);
            }
            self.delete(name)?;
        }
        let _g = self.change.lock();
        if !is_internal(name) {
            validate_name(name)?;
        }
        self.create_locked(name, id, partitions, configs, now_ms)
    }

    fn create_locked(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Arc<Topic>, TopicError> {
        let lc = topic_log_config(name, &configs, &self.defaults());
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let dir = partition_dir(&self.data_dir, name, p);
            // Leftovers of an earlier topic of this name that crashed mid-delete.
            if dir.exists() {
                let _ = fs::remove_dir_all(&dir);
            }
            parts.push(Arc::new(PartitionLog::open(&dir, lc.clone(), now_ms)?));
        }
        log::sync_dir(&self.data_dir)?;
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id,
            configs: RwLock::new(configs),
            partitions: RwLock::new(parts),
        });
        let existing = self.topics.read();
        let metas = existing
            .values()
            .chain(std::iter::once(&topic))
            .map(|t| TopicMeta {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partition_count(),
                configs: t.configs(),
            })
            .collect::<Vec<_>>();
        drop(existing);
        self.write_meta(metas.into_iter())?;
        self.topics
            .write()
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    ///
    /// # Errors
    /// Unknown topic; storage errors writing the metadata.
    pub fn delete(&self, name: &str) -> Result<(), TopicError> {
        let _g = self.change.lock();
        let Some(topic) = self.topics.write().remove(name) else {
            return Err(TopicError::Unknown(name.to_string()));
        };
        if let Err(e) = self.persist_locked() {
            self.topics.write().insert(name.to_string(), topic);
            return Err(e.into());
        }
        // Renamed now, under the lock (a topic of the same name may be
        // created next); the data is removed by a thread of its own, so a
        // large topic holds neither the lock nor a runtime worker.
        let mut doomed_dirs = Vec::new();
        for log in topic.partitions() {
            log.close();
            let dir = log.dir().to_path_buf();
            let doomed = dir.with_file_name(format!(
                "{}.{}{DELETED_SUFFIX}",
                dir.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
                topic.id.simple()
            ));
            if fs::rename(&dir, &doomed).is_ok() {
                doomed_dirs.push(doomed);
            }
        }
        remove_in_background(doomed_dirs);
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `total` partitions.
    ///
    /// # Errors
    /// Unknown topic, a count not above the current one, storage errors.
    pub fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
        now_ms: i64,
    ) -> Result<(), TopicError> {
        let _g = self.change.lock();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.partition_count();
        if total <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic currently has {current} partitions, {total} would not be an increase"
            )));
        }
        if total > MAX_PARTITIONS {
            return Err(TopicError::InvalidPartitions(format!(
                "{total} partitions exceed the maximum of {MAX_PARTITIONS}"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let lc = topic_log_config(name, &topic.configs(), &self.defaults());
        let mut added = Vec::new();
        for p in current..total {
            let dir = partition_dir(&self.data_dir, name, p);
            if dir.exists() {
                let _ = fs::remove_dir_all(&dir);
            }
            added.push(Arc::new(PartitionLog::open(&dir, lc.clone(), now_ms)?));
        }
        topic.partitions.write().extend(added);
        if let Err(e) = self.persist_locked() {
            topic.partitions.write().truncate(current as usize);
            return Err(e.into());
        }
        tracing::info!(topic = name, partitions = total, "added partitions");
        Ok(())
    }

    /// Replaces a topic's configs with `configs` (validated).
    ///
    /// # Errors
    /// Unknown topic, invalid configs, storage errors.
    pub fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _g = self.change.lock();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        for (k, v) in &configs {
            config::validate(k, v)?;
        }
        if validate_only {
            return Ok(());
        }
        let old = std::mem::replace(&mut *topic.configs.write(), configs.clone());
        if let Err(e) = self.persist_locked() {
            *topic.configs.write() = old;
            return Err(e.into());
        }
        let lc = topic_log_config(name, &configs, &self.defaults());
        for p in topic.partitions() {
            p.set_config(lc.clone());
        }
        Ok(())
    }

    /// Hands out a new producer id, persisting a new block when one runs out.
    ///
    /// # Errors
    /// Storage errors writing the metadata.
    pub fn allocate_producer_id(&self) -> Result<i64, LogError> {
        let _g = self.change.lock();
        let id = self.next_producer_id.load(Ordering::Acquire);
        let end = self.producer_id_block_end.load(Ordering::Acquire);
        if id >= end {
            self.producer_id_block_end
                .store(id + PRODUCER_ID_BLOCK, Ordering::Release);
            if let Err(e) = self.persist_locked() {
                // Not persisted: the block must not be used.
                self.producer_id_block_end.store(end, Ordering::Release);
                return Err(e);
            }
        }
        self.next_producer_id.store(id + 1, Ordering::Release);
        Ok(id)
    }

    /// Writes the recovery point of every partition that changed since its
    /// last one. Returns false when any failed.
    pub fn checkpoint_all(&self) -> bool {
        let mut ok = true;
        for t in self.list() {
            for p in t.partitions() {
                if let Err(e) = p.checkpoint() {
                    ok = false;
                    tracing::error!(topic = %t.name, error = %e, "failed to checkpoint partition");
                }
            }
        }
        ok
    }

    /// fsyncs every partition (shutdown). Returns whether all succeeded.
    pub fn flush_all(&self) -> bool {
        let mut ok = true;
        for t in self.list() {
            for p in t.partitions() {
                if let Err(e) = p.flush() {
                    ok = false;
                    tracing::error!(topic = %t.name, error = %e, "failed to flush partition");
                }
            }
        }
        ok
    }
}

fn new_cluster_id() -> String {
    // Kafka cluster ids are 22-character URL-safe base64 of a UUID.
    let id = Uuid::new_v4();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let v = id.as_u128();
    (0..22)
        .map(|i| alphabet[((v >> (i * 6)) & 63) as usize] as char)
        .collect()
}

/// Suffix of a deleted partition's directory, renamed before its removal.
const DELETED_SUFFIX: &str = "-delete";

/// Removes deleted partitions' directories on a thread of their own.
fn remove_in_background(dirs: Vec<PathBuf>) {
    if dirs.is_empty() {
        return;
    }
    let remove = |dirs: Vec<PathBuf>| {
        for d in dirs {
            if let Err(e) = fs::remove_dir_all(&d) {
                tracing::warn!(dir = %d.display(), error = %e, "failed to remove deleted partition");
            }
        }
    };
    let spawned = std::thread::Builder::new()
        .name("weir-delete".into())
        .spawn({
            let dirs = dirs.clone();
            move || remove(dirs)
        });
    if spawned.is_err() {
        remove(dirs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> BrokerDefaults {
        BrokerDefaults::new(1 << 30, 604_800_000)
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_name("orders.v1_x-y").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn topics_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id;
        {
            let r = Registry::open(dir.path(), defaults(), 0).unwrap();
            let mut c = BTreeMap::new();
            c.insert("retention.ms".into(), "1000".into());
            id = r.create("t", 3, -1, c, 0).unwrap().id;
            assert!(matches!(
                r.create("t", 3, -1, BTreeMap::new(), 0),
                Err(TopicError::AlreadyExists(_))
            ));
            r.create_partitions("t", 4, false, 0).unwrap();
        }
        let r = Registry::open(dir.path(), defaults(), 0).unwrap();
        let t = r.get("t").unwrap();
        assert_eq!(t.id, id);
        assert_eq!(t.partition_count(), 4);
        assert_eq!(t.configs().get("retention.ms").unwrap(), "1000");
        r.delete("t").unwrap();
        let r = Registry::open(dir.path(), defaults(), 0).unwrap();
        assert!(r.get("t").is_none());
    }

    #[test]
    fn producer_ids_are_not_reused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = Registry::open(dir.path(), defaults(), 0)
            .unwrap()
            .allocate_producer_id()
            .unwrap();
        let b = Registry::open(dir.path(), defaults(), 0)
            .unwrap()
            .allocate_producer_id()
            .unwrap();
        assert!(b > a);
    }
}
