//! The quorum's types: its commands, their answers, and the replicated
//! metadata they change.

use std::collections::BTreeMap;
// `declare_raft_types!` names `Cursor` for the snapshot data type.
use std::io::Cursor;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::security::acl::AclBinding;
use crate::security::replicated::{Applied, Change, Shared};

openraft::declare_raft_types!(
    /// The quorum's types: commands are [`Command`], answers [`Reply`].
    pub TypeConfig:
        D = Command,
        R = Reply,
);

/// Node ids as Kafka's `node.id`.
pub type NodeId = u64;

/// A change to the cluster's metadata, proposed by any broker and applied
/// in log order on every one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// A broker announces itself and where clients reach it; a registered
    /// broker is unfenced. The first registration names the cluster.
    RegisterBroker {
        id: NodeId,
        kafka: String,
        http: String,
        /// `host:port` of every advertised Kafka listener, in the order of
        /// `--listen` (the first is `kafka`).
        #[serde(default)]
        listeners: Vec<String>,
        #[serde(default)]
        cluster_id: Option<String>,
        /// Differs at every start of the broker's process: a broker back
        /// with a new incarnation may have lost what it held (a wiped or
        /// replaced disk), so it leaves the ISRs it was in wherever other
        /// live replicas are in sync.
        #[serde(default)]
        incarnation: u64,
    },
    /// The controller found a broker gone (`fenced`) or back: a fenced
    /// broker leads nothing and is out of every ISR.
    SetFenced {
        id: NodeId,
        fenced: bool,
    },
    /// A topic, its replicas placed over the unfenced brokers.
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Grows a topic to `total` partitions.
    CreatePartitions {
        name: String,
        total: i32,
    },
    /// Replaces a topic's configs.
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Replaces the cluster-wide dynamic broker configs (the default broker
    /// resource `""`), under each broker's own.
    SetBrokerDefaults {
        configs: BTreeMap<String, String>,
    },
    /// Hands `count` producer ids to a broker: ids are unique over the
    /// cluster, whichever broker a producer asks.
    AllocateProducerIds {
        broker: NodeId,
        count: i64,
    },
    /// A partition's leader and ISR change (the controller electing a
    /// leader, the leader shrinking or growing its ISR). Applied only if
    /// the partition is still at `partition_epoch`: a change made from a
    /// stale view is refused.
    ChangePartition {
        topic: String,
        partition: i32,
        partition_epoch: i32,
        leader: Option<NodeId>,
        isr: Vec<NodeId>,
    },
    /// A change to the cluster's users, ACLs or quotas.
    Security(Change),
}

/// What applying a command answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the command changed the state.
    pub changed: bool,
    /// Why it was refused, if it was.
    #[serde(default)]
    pub error: Option<Refusal>,
    /// A value the command produced (the first id of an allocated block,
    /// the version of the users, ACLs and quotas a change made).
    #[serde(default)]
    pub value: Option<i64>,
    /// The bindings each filter of a DeleteAcls removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Vec<AclBinding>>,
}

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    TopicExists,
    UnknownTopic,
    /// More replicas asked for than there are unfenced brokers.
    ReplicationFactor {
        asked: i16,
        brokers: usize,
    },
    InvalidPartitions,
    /// The partition changed since the proposer looked.
    StaleEpoch,
    /// Nothing to delete (a user's credential).
    NotFound,
}

impl Reply {
    fn changed() -> Self {
        Self {
            changed: true,
            ..Self::default()
        }
    }
    fn refused(r: Refusal) -> Self {
        Self {
            error: Some(r),
            ..Self::default()
        }
    }
}

/// A broker as the quorum knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: NodeId,
    /// `host:port` of its first advertised Kafka listener.
    pub kafka: String,
    /// Its admin HTTP address.
    pub http: String,
    /// `host:port` of every advertised Kafka listener, in the order of
    /// `--listen`: a client is given the address of the listener it came
    /// in on, as Kafka gives the endpoint of the same listener name.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Found gone by the controller and not back yet.
    #[serde(default)]
    pub fenced: bool,
    /// Which start of the broker's process registered.
    #[serde(default)]
    pub incarnation: u64,
}

/// One partition's placement and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Its replicas, the preferred leader first.
    pub replicas: Vec<NodeId>,
    /// `None`: offline, no in-sync replica is alive.
    pub leader: Option<NodeId>,
    /// Rises with every leader election; stamped into the batches the
    /// leader writes.
    pub leader_epoch: i32,
    /// The in-sync replicas.
    pub isr: Vec<NodeId>,
    /// Rises with every change of leader or ISR.
    pub partition_epoch: i32,
}

/// A topic as the quorum knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

/// The replicated metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(default)]
    pub topics: BTreeMap<String, TopicState>,
    /// The first producer id not handed out yet.
    #[serde(default)]
    pub next_producer_id: i64,
    /// Users, ACLs and quotas.
    #[serde(default)]
    pub security: Shared,
    /// Dynamic broker configs set on the default broker resource `""`.
    #[serde(default)]
    pub broker_defaults: BTreeMap<String, String>,
}

/// FNV-1a: a placement that every node computes alike.
pub(super) fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl BrokerInfo {
    /// Where clients of listener `index` (its place in `--listen`) reach
    /// this broker: that listener's advertised address, or the first's
    /// when the broker has fewer listeners.
    pub fn endpoint(&self, index: usize) -> (&str, i32) {
        let addr = self.listeners.get(index).unwrap_or(&self.kafka);
        match addr.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().unwrap_or(-1)),
            None => (addr.as_str(), -1),
        }
    }
}

impl Metadata {
    /// Unfenced brokers, by id.
    pub fn live_brokers(&self) -> Vec<NodeId> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    /// Replicas for partitions `from..to` of `name`: consecutive brokers
    /// from a start that depends on the name, so that the leaders of a
    /// topic's partitions (the first replicas) spread over the brokers.
    fn place(&self, name: &str, from: i32, to: i32, rf: usize) -> Vec<Vec<NodeId>> {
        let live = self.live_brokers();
        let n = live.len().max(1);
        let start = (stable_hash(name) % n as u64) as usize;
        (from..to)
            .map(|p| {
                (0..rf)
                    .filter_map(|i| live.get((start + p as usize + i) % n).copied())
                    .collect()
            })
            .collect()
    }

    /// A broker back from a restart leaves every ISR that has another
    /// live member (and the leadership of those partitions, to the first
    /// live in-sync replica): it rejoins once it has caught up. Where it is
    /// the only in-sync replica it keeps its place, as nobody else has the
    /// records.
    fn leave_isrs(&mut self, id: NodeId) {
        let live: Vec<NodeId> = self.live_brokers();
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                if !p.isr.contains(&id) {
                    continue;
                }
                let others: Vec<NodeId> = p
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| *r != id && live.contains(r))
                    .collect();
                if others.is_empty() {
                    continue;
                }
                if p.leader == Some(id) {
                    p.leader = p.replicas.iter().copied().find(|r| others.contains(r));
                    p.leader_epoch += 1;
                }
                p.isr.retain(|r| *r != id);
                p.partition_epoch += 1;
            }
        }
    }

    /// The state of one partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
    }

    /// Applies one command; the same commands in the same order give the
    /// same state on every node.
    pub fn apply(&mut self, cmd: &Command) -> Reply {
        match cmd {
            Command::RegisterBroker {
                id,
                kafka,
                http,
                listeners,
                cluster_id,
                incarnation,
            } => {
                let info = BrokerInfo {
                    id: *id,
                    kafka: kafka.clone(),
                    http: http.clone(),
                    listeners: listeners.clone(),
                    fenced: false,
                    incarnation: *incarnation,
                };
                let restarted = self
                    .brokers
                    .get(id)
                    .is_some_and(|b| b.incarnation != *incarnation);
                let mut changed = self.brokers.get(id) != Some(&info);
                self.brokers.insert(*id, info);
                if restarted {
                    self.leave_isrs(*id);
                }
                if self.cluster_id.is_none() && cluster_id.is_some() {
                    self.cluster_id.clone_from(cluster_id);
                    changed = true;
                }
                Reply {
                    changed,
                    ..Reply::default()
                }
            }
            Command::SetFenced { id, fenced } => match self.brokers.get_mut(id) {
                Some(b) if b.fenced != *fenced => {
                    b.fenced = *fenced;
                    Reply::changed()
                }
                _ => Reply::default(),
            },
            Command::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                configs,
            } => {
                if self.topics.contains_key(name) {
                    return Reply::refused(Refusal::TopicExists);
                }
                if *partitions < 1 {
                    return Reply::refused(Refusal::InvalidPartitions);
                }
                let live = self.live_brokers().len();
                let rf = usize::try_from(*replication_factor).unwrap_or(0);
                if rf == 0 || rf > live {
                    return Reply::refused(Refusal::ReplicationFactor {
                        asked: *replication_factor,
                        brokers: live,
                    });
                }
                let partitions = self
                    .place(name, 0, *partitions, rf)
                    .into_iter()
                    .map(|replicas| PartitionState {
                        leader: replicas.first().copied(),
                        isr: replicas.clone(),
                        replicas,
                        leader_epoch: 0,
                        partition_epoch: 0,
                    })
                    .collect();
                self.topics.insert(
                    name.clone(),
                    TopicState {
                        id: *id,
                        configs: configs.clone(),
                        partitions,
                    },
                );
                Reply::changed()
            }
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => Reply::changed(),
                None => Reply::refused(Refusal::UnknownTopic),
            },
            Command::CreatePartitions { name, total } => {
                let Some(t) = self.topics.get(name) else {
                    return Reply::refused(Refusal::UnknownTopic);
                };
                let have = t.partitions.len() as i32;
                if *total <= have {
                    return Reply::refused(Refusal::InvalidPartitions);
                }
                let rf = t.partitions.first().map_or(1, |p| p.replicas.len());
                let added = self.place(name, have, *total, rf);
                if let Some(t) = self.topics.get_mut(name) {
                    t.partitions
                        .extend(added.into_iter().map(|replicas| PartitionState {
                            leader: replicas.first().copied(),
                            isr: replicas.clone(),
                            replicas,
                            leader_epoch: 0,
                            partition_epoch: 0,
                        }));
                }
                Reply::changed()
            }
            Command::AllocateProducerIds { count, .. } => {
                let start = self.next_producer_id;
                self.next_producer_id = start.saturating_add((*count).max(1));
                Reply {
                    changed: true,
                    value: Some(start),
                    ..Reply::default()
                }
            }
            Command::SetBrokerDefaults { configs } => {
                self.broker_defaults.clone_from(configs);
                Reply::changed()
            }
            Command::SetTopicConfigs { name, configs } => match self.topics.get_mut(name) {
                Some(t) => {
                    t.configs.clone_from(configs);
                    Reply::changed()
                }
                None => Reply::refused(Refusal::UnknownTopic),
            },
            Command::ChangePartition {
                topic,
                partition,
                partition_epoch,
                leader,
                isr,
            } => {
                let Some(p) = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.partitions.get_mut(usize::try_from(*partition).ok()?))
                else {
                    return Reply::refused(Refusal::UnknownTopic);
                };
                if p.partition_epoch != *partition_epoch {
                    return Reply::refused(Refusal::StaleEpoch);
                }
                if p.leader != *leader {
                    p.leader_epoch += 1;
                }
                p.leader = *leader;
                p.isr.clone_from(isr);
                p.partition_epoch += 1;
                Reply::changed()
            }
            Command::Security(change) => {
                let before = self.security.version;
                let applied = self.security.apply(change);
                let mut reply = Reply {
                    changed: self.security.version != before,
                    value: Some(i64::try_from(self.security.version).unwrap_or(i64::MAX)),
                    ..Reply::default()
                };
                match applied {
                    Applied::Changed => {}
                    Applied::NotFound => reply.error = Some(Refusal::NotFound),
                    Applied::Removed(removed) => reply.removed = removed,
                }
                reply
            }
        }
    }
}

// Replication's messages: a follower's fetch from a partition's leader,
// carried on the controller listener beside the quorum's own. The records
// travel as raw bytes after the JSON header of the answer, as the leader
// stored them.

/// A follower asks its leader for the records from `offset` on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    pub topic: String,
    pub partition: i32,
    /// The follower.
    pub replica: NodeId,
    /// The leader epoch the follower believes current.
    pub leader_epoch: i32,
    /// The follower's log end offset.
    pub offset: i64,
    /// The epoch of the follower's last batch, to find where its log
    /// diverged from the leader's.
    pub last_fetched_epoch: Option<i32>,
    pub max_bytes: u32,
    /// How long the leader may wait for new records.
    pub max_wait_ms: u32,
    /// The follower's log start (the leader's DeleteRecords waits for it).
    #[serde(default)]
    pub log_start_offset: i64,
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FetchReply {
    /// Whole batches from the requested offset (possibly none).
    Records {
        high_watermark: i64,
        log_start_offset: i64,
        /// Sent after the header, not in it.
        #[serde(skip)]
        records: Bytes,
        /// Length of `records` on the wire.
        len: u32,
    },
    /// The follower's log diverged: truncate to `end_offset` and fetch
    /// again.
    Diverging { epoch: i32, end_offset: i64 },
    /// The follower asked below the leader's log start: start over there.
    OffsetOutOfRange { log_start_offset: i64 },
    /// This broker does not lead the partition at that epoch.
    NotLeader,
    /// Another failure, in words.
    Error(String),
}

/// A broker asks a partition's leader to append a batch the brokers built
/// themselves (a held retry falling due, a dead letter, a redrive).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppendRequest {
    pub topic: String,
    pub partition: i32,
    /// Length of the batch, sent after the header.
    pub len: u32,
}

/// The leader's answer to an [`AppendRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendReply {
    /// Appended, and held by every in-sync replica.
    Appended,
    /// This broker does not lead the partition.
    NotLeader,
    /// Another failure, in words.
    Error(String),
}

/// One committed offset, as the coordinators pass it between brokers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_time_ms: i64,
}

/// A call between the group and transaction coordinators of different
/// brokers (over the controller listener).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorCall {
    /// TxnOffsetCommit, passed by the group's coordinator (which checked
    /// the member's generation) to the transaction's.
    TxnOffsets {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        group: String,
        offsets: Vec<OffsetRecord>,
        /// The request's version says which code fences.
        new_fenced_code: bool,
    },
    /// A committed transaction's offsets, for the group's coordinator to
    /// store.
    CommitOffsets {
        group: String,
        offsets: Vec<OffsetRecord>,
    },
    /// A transactional hand-back to a retry topic, for whichever
    /// coordinator on the called broker has the producer id to hold until
    /// its transaction ends.
    Hold {
        producer_id: i64,
        producer_epoch: i16,
        topic: String,
        partition: i32,
        records: Vec<u8>,
    },
    /// Which of these partitions' offsets of `group` an open transaction
    /// coordinated on the called broker will commit.
    PendingOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
}

/// The answer to a [`CoordinatorCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorReply {
    /// A Kafka error code (0: done).
    Code(i16),
    /// The partitions asked about that are pending.
    Pending(Vec<(String, i32)>),
}

/// Serves followers' fetches and other brokers' appends: the broker's side
/// of replication.
pub trait ReplicaSource: Send + Sync + 'static {
    /// A call from another broker's coordinator.
    fn coordinate(
        &self,
        call: CoordinatorCall,
    ) -> Pin<Box<dyn Future<Output = CoordinatorReply> + Send + '_>>;
    fn fetch(&self, req: FetchRequest) -> Pin<Box<dyn Future<Output = FetchReply> + Send + '_>>;
    fn append(
        &self,
        req: AppendRequest,
        batch: Bytes,
    ) -> Pin<Box<dyn Future<Output = AppendReply> + Send + '_>>;
}
