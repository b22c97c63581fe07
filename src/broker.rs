//! Shared broker state: configuration, topics, metrics, and the signal that
//! wakes long-polling fetches when data arrives.

use std::fs::File;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::{Config, FsyncPolicy};
use crate::group::{journal, Change, Coordinator, GroupSettings, OffsetStore};
use crate::log::LogError;
use crate::metrics::Metrics;
use crate::retry::store::PendingStore;
use crate::retry::{self, Retries};
use crate::security::acl::{AclError, Authorizer};
use crate::security::quotas::{QuotaError, Quotas};
use crate::security::replicated::{self, Applied};
use crate::security::tls::{Tls, TlsError};
use crate::security::users::UserStore;
use crate::topics::config::BrokerDefaults;
use crate::topics::{Registry, Topic, TopicError};

/// Written after the final fsync of a clean shutdown.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// Lifecycle of the broker, as `/api/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Serving = 1,
    Draining = 2,
}

/// Everything the request handlers share.
#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    pub topics: Registry,
    /// Consumer groups and committed offsets.
    pub groups: Coordinator,
    /// Held retries and their scheduler.
    pub retries: Retries,
    /// The transaction coordinator (a single node's; unused in a cluster).
    pub txns: Arc<crate::txn::Coordinator>,
    /// In a cluster: the transaction coordinators of the
    /// `__transaction_state` partitions led here.
    pub txn_partitions: crate::txn::partitions::Coordinators,
    /// Dynamic broker configs (AlterConfigs on the BROKER resource).
    pub broker_configs: crate::broker_configs::BrokerConfigs,
    pub metrics: Metrics,
    /// ACLs and the check against them.
    pub authorizer: Authorizer,
    /// SASL credentials.
    pub users: UserStore,
    /// Client quotas and their meters.
    pub quotas: Quotas,
    /// Certificates of the TLS listeners, when any.
    pub tls: Option<Tls>,
    /// SASL key derivations running at once.
    auth_slots: tokio::sync::Semaphore,
    /// Notified when the broker starts draining, so that waiting fetches
    /// answer now (appends wake the fetches of their own partition).
    pub phase_changed: Notify,
    pub started: Instant,
    phase: AtomicU8,
    /// The metadata quorum, when the broker is one of a cluster's voters
    /// (`--controller-quorum-voters`); set once at start.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// This broker's roles in replicating partitions (empty on a single
    /// node).
    pub replicas: crate::replicas::Replicas,
    /// In a cluster: the version of the quorum's users, ACLs and quotas
    /// copied into this broker's stores (`None`: none yet).
    security_version: parking_lot::Mutex<Option<u64>>,
    /// Held for the broker's life: only one process may use the data dir.
    _lock: File,
}

/// Lag of one group on one partition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

pub use crate::clock::now_ms;

/// How long an offset commit waits for the in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms`).
const OFFSET_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("failed to prepare data dir {dir}: {source}")]
    DataDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("data dir {0} is in use by another weir process")]
    Locked(String),
    #[error(transparent)]
    Storage(#[from] LogError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Acls(#[from] AclError),
    #[error(transparent)]
    Quotas(#[from] QuotaError),
    #[error("cannot open the user store: {0}")]
    Users(std::io::Error),
}

impl Broker {
    /// Locks the data dir and loads the topics.
    ///
    /// # Errors
    /// An unusable or locked data dir, or storage that cannot be recovered.
    pub fn open(config: Config) -> Result<Arc<Self>, StartError> {
        let dir = config.args.data_dir.clone();
        let dd = |source| StartError::DataDir {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(dd)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))
            .map_err(dd)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StartError::Locked(dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(dd(e)),
        }
        let defaults = BrokerDefaults {
            segment_bytes: config.args.log_segment_bytes,
            retention_ms: config.args.log_retention_ms,
            max_decompressed_batch_bytes: config.args.max_decompressed_batch_bytes,
        };
        // A clean-shutdown marker means every file was fsynced and trimmed
        // by the last run: recovery can trust the batches' CRCs. It is
        // removed before serving, so a crash from now on is not "clean".
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let started = std::time::Instant::now();
        let topics = Registry::open_with(&dir, defaults.clone(), now_ms(), clean)?;
        // Dynamic broker configs set before, over the flags.
        let broker_configs = crate::broker_configs::BrokerConfigs::open(
            &dir,
            defaults,
            config.args.default_partitions,
        )?;
        broker_configs.apply(&topics);
        if clean {
            std::fs::remove_file(&marker).map_err(dd)?;
            crate::log::sync_dir(&dir)?;
        }
        // In a cluster `__consumer_offsets` is the brokers' own topic.
        let clustered = config.args.controller_quorum_voters.is_some();
        for t in topics.list() {
            if crate::topics::is_reserved(&t.name)
                && !(clustered && crate::topics::is_internal(&t.name))
            {
                tracing::warn!(
                    topic = %t.name,
                    "a topic of this data dir has a name reserved for the broker's internal use \
                     (an older weir let clients create it); its data is kept and can be read, \
                     produce to it is refused; delete the topic once its data is not needed"
                );
            }
        }
        tracing::info!(
            clean_shutdown = clean,
            topics = topics.list().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered the log"
        );
        // In a cluster committed offsets live in `__consumer_offsets`.
        let offsets = if config.args.controller_quorum_voters.is_some() {
            OffsetStore::in_memory()
        } else {
            OffsetStore::open(&dir, config.args.fsync != FsyncPolicy::Never)?
        };
        let groups = Coordinator::new(
            offsets,
            GroupSettings {
                min_session_timeout_ms: config.args.group_min_session_timeout_ms,
                max_session_timeout_ms: config.args.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: config.args.group_initial_rebalance_delay_ms,
                consumer: crate::group::consumer::Settings {
                    session_timeout: Duration::from_millis(
                        config.args.group_consumer_session_timeout_ms,
                    ),
                    heartbeat_interval: Duration::from_millis(
                        config.args.group_consumer_heartbeat_interval_ms,
                    ),
                    ..crate::group::consumer::Settings::default()
                },
                ..GroupSettings::default()
            },
        );
        let retries = Retries::new(PendingStore::open(&dir)?);
        // A cluster's transaction coordinators journal in
        // `__transaction_state`.
        let txns = Arc::new(crate::txn::Coordinator::open(
            (!clustered).then_some(dir.as_path()),
            config.args.fsync != FsyncPolicy::Never,
            txn_settings(&config),
        )?);
        let tls = match (&config.args.tls_cert, &config.args.tls_key) {
            (Some(cert), Some(key)) => {
                Some(Tls::load(cert, key, config.args.tls_client_ca.as_deref())?)
            }
            _ => None,
        };
        // In a cluster ACLs and quotas live in the quorum (users too, beside
        // each broker's own in its users file).
        let acls_on = config.args.authorizer == crate::config::AuthorizerMode::Acl;
        let super_users = config.args.super_users.clone();
        let (authorizer, quotas) = if clustered {
            (
                Authorizer::for_cluster(&dir, acls_on, super_users),
                Quotas::for_cluster(&dir),
            )
        } else {
            (
                Authorizer::open(&dir, acls_on, super_users)?,
                Quotas::open(&dir)?,
            )
        };
        let users = UserStore::open(&dir).map_err(StartError::Users)?;
        Ok(Arc::new(Self {
            config,
            topics,
            groups,
            retries,
            txns,
            txn_partitions: crate::txn::partitions::Coordinators::default(),
            broker_configs,
            metrics: Metrics::default(),
            authorizer,
            users,
            quotas,
            tls,
            auth_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            phase_changed: Notify::new(),
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            cluster: std::sync::OnceLock::new(),
            replicas: crate::replicas::Replicas::default(),
            security_version: parking_lot::Mutex::new(None),
            _lock: lock,
        }))
    }

    /// In a cluster: copies the quorum's users, ACLs and quotas into this
    /// broker's stores, when they changed since the last copy.
    pub fn sync_security(&self) {
        let Some(c) = self.cluster.get() else {
            return;
        };
        let mut copied = self.security_version.lock();
        let Some(shared) =
            c.with_metadata(|m| (*copied != Some(m.security.version)).then(|| m.security.clone()))
        else {
            return;
        };
        self.users.set_replicated(shared.users);
        self.authorizer.replace(shared.acls);
        self.quotas.replace(shared.quotas);
        *copied = Some(shared.version);
    }

    /// On a single node: makes a change to users, ACLs or quotas in this
    /// broker's files.
    ///
    /// # Errors
    /// What kept the change from being stored.
    pub fn change_security_locally(&self, change: &replicated::Change) -> Result<Applied, String> {
        let stored = |r: Result<(), String>| r.map(|()| Applied::Changed);
        match change {
            replicated::Change::CreateAcls(new) => {
                stored(self.authorizer.create(new).map_err(|e| e.to_string()))
            }
            replicated::Change::DeleteAcls(filters) => self
                .authorizer
                .delete(filters)
                .map(Applied::Removed)
                .map_err(|e| e.to_string()),
            replicated::Change::SetCredential {
                user,
                mechanism,
                credential,
            } => stored(
                self.users
                    .upsert(user, *mechanism, credential.clone())
                    .map_err(|e| e.to_string()),
            ),
            replicated::Change::DeleteCredential { user, mechanism } => {
                match self.users.delete(user, Some(*mechanism)) {
                    Ok(true) => Ok(Applied::Changed),
                    Ok(false) => Ok(Applied::NotFound),
                    Err(e) => Err(e.to_string()),
                }
            }
            replicated::Change::AlterQuotas(changes) => {
                stored(self.quotas.alter(changes).map_err(|e| e.to_string()))
            }
        }
    }

    /// Slots for SASL key derivations (one per core).
    pub fn auth_slots(&self) -> &tokio::sync::Semaphore {
        &self.auth_slots
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            1 => Phase::Serving,
            2 => Phase::Draining,
            _ => Phase::Starting,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    pub fn node_id(&self) -> i32 {
        self.config.args.node_id
    }

    /// The topic, created with the broker defaults when it is unknown and
    /// auto-creation is on (and `allow` is true).
    ///
    /// # Errors
    /// An invalid name or a storage error while creating.
    pub fn topic_or_create(
        &self,
        name: &str,
        allow: bool,
    ) -> Result<Option<Arc<Topic>>, TopicError> {
        if let Some(c) = self.cluster.get() {
            return self.cluster_topic(c, name, allow);
        }
        if let Some(t) = self.topics.get(name) {
            return Ok(Some(t));
        }
        // Retry topics of a retry-enabled topic exist on first use, whatever
        // the auto-creation setting.
        if let Some(route) = retry::route_for(&self.topics, name) {
            return retry::companion(&self.topics, name, &route.base).map(Some);
        }
        if !(allow && self.config.args.auto_create_topics) {
            crate::topics::validate_name(name)?;
            return Ok(None);
        }
        match self.topics.create(
            name,
            self.broker_configs.num_partitions(),
            -1,
            Default::default(),
            now_ms(),
        ) {
            Ok(t) => Ok(Some(t)),
            Err(TopicError::AlreadyExists(_)) => Ok(self.topics.get(name)),
            Err(e) => Err(e),
        }
    }

    /// In a cluster, the code for a partition this broker does not lead
    /// (clients read and write only at the leader); `None` where it may
    /// serve.
    pub fn not_leader(&self, topic: &str, partition: i32) -> Option<i16> {
        self.cluster.get()?;
        match self.replicas.leadership(topic, partition) {
            Some(_) => None,
            None => Some(crate::protocol::errors::NOT_LEADER_OR_FOLLOWER),
        }
    }

    /// Where a produce to `name` goes when it is a retry topic (a
    /// hand-back): its base topic and policy. In a cluster the base's
    /// configs are the quorum's.
    pub fn retry_route(&self, name: &str) -> Option<retry::RetryRoute> {
        match self.cluster.get() {
            Some(c) => c.with_metadata(|m| {
                retry::route_with(name, |base| m.topics.get(base).map(|t| t.configs.clone()))
            }),
            None => retry::route_for(&self.topics, name),
        }
    }

    /// In a cluster: this broker's replica of a topic the quorum holds. An
    /// unknown topic is proposed to the quorum when auto-creation allows,
    /// and is there for the client's next try.
    fn cluster_topic(
        &self,
        c: &Arc<crate::cluster::Cluster>,
        name: &str,
        allow: bool,
    ) -> Result<Option<Arc<Topic>>, TopicError> {
        let id = c.with_metadata(|m| m.topics.get(name).map(|t| t.id));
        match id {
            Some(id) => Ok(self.topics.get(name).filter(|t| t.id == id)),
            None => {
                crate::topics::validate_name(name)?;
                // A retry topic exists on first use, whatever the
                // auto-creation setting, with its base's partitions and
                // replication factor.
                let companion = self.retry_route(name).and_then(|r| {
                    c.with_metadata(|m| {
                        m.topics.get(&r.base).map(|t| {
                            let rf = t.partitions.first().map_or(1, |p| p.replicas.len());
                            (t.partitions.len() as i32, rf as i16)
                        })
                    })
                });
                let shape = match companion {
                    Some(shape) => Some(shape),
                    None if allow && self.config.args.auto_create_topics => Some((
                        self.broker_configs.num_partitions(),
                        self.config.args.default_replication_factor,
                    )),
                    None => None,
                };
                if let Some((partitions, replication_factor)) = shape {
                    let cmd = crate::cluster::Command::CreateTopic {
                        name: name.to_string(),
                        id: uuid::Uuid::new_v4(),
                        partitions,
                        replication_factor,
                        configs: Default::default(),
                    };
                    let c = Arc::clone(c);
                    tokio::spawn(async move {
                        if let Err(e) = c.propose(cmd).await {
                            tracing::debug!(error = %e, "auto-creation not proposed");
                        }
                    });
                }
                Ok(None)
            }
        }
    }

    /// In a cluster, the broker that coordinates `group`: the leader of its
    /// partition of `__consumer_offsets`. The topic is proposed to the
    /// quorum at the first ask, once enough brokers are up. `Ok(None)` on a
    /// single node (this broker coordinates every group).
    ///
    /// # Errors
    /// `COORDINATOR_NOT_AVAILABLE` while the topic or its leader is missing.
    pub fn group_coordinator(
        &self,
        group: &str,
    ) -> Result<Option<crate::cluster::BrokerInfo>, i16> {
        self.coordinator_in(journal::TOPIC, group)
    }

    /// In a cluster, the broker that coordinates transactional id `id`: the
    /// leader of its partition of `__transaction_state`, which is proposed
    /// at the first ask as `__consumer_offsets` is. `Ok(None)` on a single
    /// node.
    ///
    /// # Errors
    /// `COORDINATOR_NOT_AVAILABLE` while the topic or its leader is missing.
    pub fn transaction_coordinator(
        &self,
        id: &str,
    ) -> Result<Option<crate::cluster::BrokerInfo>, i16> {
        self.coordinator_in(crate::txn::partitions::TOPIC, id)
    }

    /// The leader of `key`'s partition of internal topic `topic`.
    fn coordinator_in(
        &self,
        topic: &str,
        key: &str,
    ) -> Result<Option<crate::cluster::BrokerInfo>, i16> {
        let Some(c) = self.cluster.get() else {
            return Ok(None);
        };
        if self.internal_topic(topic).is_none() {
            return Err(journal::COORDINATOR_NOT_AVAILABLE);
        }
        let found = c.with_metadata(|m| {
            let t = m.topics.get(topic)?;
            let p = journal::partition_for(key, t.partitions.len());
            t.partitions
                .get(p as usize)
                .and_then(|p| p.leader)
                .and_then(|l| m.brokers.get(&l))
                .filter(|b| !b.fenced)
                .cloned()
        });
        found.map(Some).ok_or(journal::COORDINATOR_NOT_AVAILABLE)
    }

    /// In a cluster, the partition count of internal topic `name`
    /// (`__consumer_offsets`, `__retry`). A missing one is proposed to the
    /// quorum once enough brokers are up for its replication factor
    /// (`--offsets-topic-replication-factor`, at most the voters), with
    /// `--offsets-topic-num-partitions` partitions; `None` until it exists.
    pub fn internal_topic(&self, name: &str) -> Option<usize> {
        let c = self.cluster.get()?;
        let (partitions, live) = c.with_metadata(|m| {
            (
                m.topics.get(name).map(|t| t.partitions.len()),
                m.brokers.values().filter(|b| !b.fenced).count(),
            )
        });
        if partitions.is_some() {
            return partitions;
        }
        let args = &self.config.args;
        let rf = (args.offsets_topic_replication_factor as usize).min(c.voter_count());
        if live >= rf {
            let configs = [
                ("cleanup.policy", "compact"),
                ("segment.bytes", "104857600"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let cmd = crate::cluster::Command::CreateTopic {
                name: name.to_string(),
                id: uuid::Uuid::new_v4(),
                partitions: args.offsets_topic_num_partitions,
                replication_factor: rf as i16,
                configs,
            };
            let c = Arc::clone(c);
            tokio::spawn(async move {
                if let Err(e) = c.propose(cmd).await {
                    tracing::debug!(error = %e, "internal topic not proposed");
                }
            });
        }
        None
    }

    /// Whether this broker may answer for `group` now. In a cluster it must
    /// lead the group's partition of `__consumer_offsets`, and have loaded
    /// it: the partition and its leadership are returned.
    ///
    /// # Errors
    /// `NOT_COORDINATOR`, `COORDINATOR_LOAD_IN_PROGRESS` or
    /// `COORDINATOR_NOT_AVAILABLE`.
    pub async fn coordinates(
        &self,
        group: &str,
    ) -> Result<Option<(i32, Arc<crate::replicas::Leadership>)>, i16> {
        let Some(c) = self.cluster.get() else {
            return Ok(None);
        };
        let Some(n) = c.with_metadata(|m| m.topics.get(journal::TOPIC).map(|t| t.partitions.len()))
        else {
            return Err(journal::NOT_COORDINATOR);
        };
        let p = journal::partition_for(group, n);
        let Some(l) = self.replicas.leadership(journal::TOPIC, p) else {
            return Err(journal::NOT_COORDINATOR);
        };
        self.groups.ensure_loaded(p, n, &l).await?;
        Ok(Some((p, l)))
    }

    /// The transaction coordinator of `id` here: a single node's, or in a
    /// cluster the one of its `__transaction_state` partition when this
    /// broker leads it (replayed first at a new leadership).
    ///
    /// # Errors
    /// `NOT_COORDINATOR` (another broker leads the partition, or the
    /// topic is not made yet), `COORDINATOR_NOT_AVAILABLE`.
    pub async fn txn_coordinator(&self, id: &str) -> Result<Arc<crate::txn::Coordinator>, i16> {
        let Some(c) = self.cluster.get() else {
            return Ok(Arc::clone(&self.txns));
        };
        let topic = crate::txn::partitions::TOPIC;
        let Some(n) = c.with_metadata(|m| m.topics.get(topic).map(|t| t.partitions.len())) else {
            return Err(journal::NOT_COORDINATOR);
        };
        let p = crate::txn::partitions::partition_for(id, n);
        let Some(l) = self.replicas.leadership(topic, p) else {
            return Err(journal::NOT_COORDINATOR);
        };
        let sync = self.config.args.fsync != FsyncPolicy::Never;
        self.txn_partitions
            .get(p, &l, sync, txn_settings(&self.config))
            .await
    }

    /// In a cluster: loads the coordinator of every `__transaction_state`
    /// partition this broker leads and has not loaded yet.
    pub async fn load_txn_partitions(&self) {
        let Some(c) = self.cluster.get() else {
            return;
        };
        let topic = crate::txn::partitions::TOPIC;
        let Some(n) = c.with_metadata(|m| m.topics.get(topic).map(|t| t.partitions.len())) else {
            return;
        };
        let sync = self.config.args.fsync != FsyncPolicy::Never;
        for p in 0..n as i32 {
            if let Some(l) = self.replicas.leadership(topic, p) {
                if let Err(code) = self
                    .txn_partitions
                    .get(p, &l, sync, txn_settings(&self.config))
                    .await
                {
                    tracing::debug!(partition = p, code, "transaction state not loaded");
                }
            }
        }
    }

    /// The transaction counters of this broker's coordinators.
    pub fn txn_counts(&self) -> &crate::txn::Counts {
        if self.cluster.get().is_some() {
            &self.txn_partitions.counts
        } else {
            &self.txns.counts
        }
    }

    /// Every transaction coordinator serving here: a single node's, or a
    /// cluster's of each `__transaction_state` partition led here.
    pub fn txn_coordinators(&self) -> Vec<Arc<crate::txn::Coordinator>> {
        if self.cluster.get().is_none() {
            return vec![Arc::clone(&self.txns)];
        }
        self.txn_partitions.all()
    }

    /// Every topic clients may use: name → (id, partition count), from the
    /// quorum's metadata in a cluster, else from this broker's topics.
    /// Internal topics are left out.
    pub fn topic_table(&self) -> std::collections::BTreeMap<String, (uuid::Uuid, i32)> {
        let mut out = std::collections::BTreeMap::new();
        match self.cluster.get() {
            Some(c) => c.with_metadata(|m| {
                for (name, t) in &m.topics {
                    if !crate::topics::is_internal(name) {
                        out.insert(name.clone(), (t.id, t.partitions.len() as i32));
                    }
                }
            }),
            None => {
                for t in self.topics.list() {
                    if !crate::topics::is_internal(&t.name) {
                        out.insert(t.name.clone(), (t.id, t.partition_count()));
                    }
                }
            }
        }
        out
    }

    /// The topics a consumer group may be assigned, with their partition
    /// counts.
    pub fn topology(&self) -> crate::group::consumer::Topology {
        self.topic_table()
            .into_iter()
            .map(|(name, (_, n))| (name, n))
            .collect()
    }

    /// Whether this broker coordinates `group` as of now, without loading
    /// anything (for listings: a single node coordinates every group).
    pub fn coordinates_now(&self, group: &str) -> bool {
        let Some(c) = self.cluster.get() else {
            return true;
        };
        let Some(n) = c.with_metadata(|m| m.topics.get(journal::TOPIC).map(|t| t.partitions.len()))
        else {
            return false;
        };
        let p = journal::partition_for(group, n);
        self.replicas
            .leadership(journal::TOPIC, p)
            .is_some_and(|l| !l.is_deposed() && self.groups.is_loaded(p, l.leader_epoch))
    }

    /// Stores changes to `group`'s committed offsets: on a single node in
    /// the offsets log; in a cluster in the group's partition of
    /// `__consumer_offsets`, replicated before this returns.
    ///
    /// # Errors
    /// A Kafka error code for every change.
    pub async fn store_offsets(
        self: &Arc<Self>,
        group: &str,
        changes: Vec<Change>,
    ) -> Result<(), i16> {
        if changes.is_empty() {
            return Ok(());
        }
        match self.coordinates(group).await? {
            Some((p, l)) => {
                let sync = self.config.args.fsync != FsyncPolicy::Never;
                self.groups
                    .journal(p, &l, changes, (sync, OFFSET_COMMIT_TIMEOUT, now_ms()))
                    .await
            }
            None => {
                let b = Arc::clone(self);
                match tokio::task::spawn_blocking(move || b.groups.offsets.write(changes)).await {
                    Ok(Ok(())) => Ok(()),
                    _ => {
                        tracing::error!(group, "failed to store committed offsets");
                        Err(journal::COORDINATOR_NOT_AVAILABLE)
                    }
                }
            }
        }
    }

    /// Consumer lag of every committed (group, topic, partition): the high
    /// watermark minus the committed offset, never below zero.
    pub fn group_lag(&self) -> Vec<GroupLag> {
        let mut out = Vec::new();
        for (group, offsets) in self.groups.offsets.all() {
            if !self.coordinates_now(&group) {
                continue;
            }
            for ((topic, partition), c) in offsets {
                let Some(log) = self.topics.get(&topic).and_then(|t| t.partition(partition)) else {
                    continue;
                };
                let hwm = log.end_offset();
                out.push(GroupLag {
                    group: group.clone(),
                    topic,
                    partition,
                    committed: c.offset,
                    high_watermark: hwm,
                    lag: (hwm - c.offset).max(0),
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition))
        });
        out
    }

    /// Flushes everything and, when every fsync succeeded and `drained`
    /// (no request was still running), writes the clean-shutdown marker.
    pub fn close_cleanly(&self, drained: bool) {
        let flushed = self.topics.flush_all() && self.topics.checkpoint_all();
        self.groups.offsets.flush();
        self.retries.store.flush();
        self.txns.flush();
        if !(flushed && drained) {
            tracing::warn!(
                flushed,
                drained,
                "not a clean shutdown: the next start checks every batch"
            );
            return;
        }
        let marker = self.config.args.data_dir.join(CLEAN_SHUTDOWN_FILE);
        if let Err(e) = crate::log::write_atomic(&marker, b"clean\n") {
            tracing::warn!(error = %e, "failed to write the clean-shutdown marker");
        }
    }

    /// Bytes of all partitions on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.topics
            .list()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| p.size_bytes())
            .sum()
    }
}

/// The transaction coordinators' settings from the broker's flags.
fn txn_settings(config: &Config) -> crate::txn::Settings {
    crate::txn::Settings {
        max_timeout_ms: config.args.transaction_max_timeout_ms,
        id_expiration_ms: config.args.transactional_id_expiration_ms,
    }
}
