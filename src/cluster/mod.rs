//! The cluster's metadata quorum: a replicated state machine on the
//! `openraft` engine among the brokers named by
//! `--controller-quorum-voters`, with its log and snapshots in the data dir
//! (`__cluster_metadata/`) and its messages on `--controller-listen`.
//!
//! The quorum holds the registered brokers (id, advertised addresses,
//! fenced or not), the topics with each partition's replicas, leader,
//! leader epoch and in-sync replicas. The Raft leader is the cluster's
//! controller: it fences brokers that stop answering and elects new
//! partition leaders from the ISR ([`control`]). Followers' fetches from
//! partition leaders travel on the same listener ([`ReplicaClient`]).
//!
//! The module knows nothing of the Kafka protocol or of the broker: the
//! broker starts it, reads its metadata, watches its changes and answers
//! followers' fetches through [`ReplicaSource`].

mod auth;
mod network;
mod store;
mod types;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState};
use parking_lot::RwLock;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use auth::{Auth, Secret, MIN_SECRET};
pub use network::ReplicaClient;
pub use types::{
    AppendReply, AppendRequest, BrokerInfo, Command, CoordinatorCall, CoordinatorReply, FetchReply,
    FetchRequest, Metadata, NodeId, OffsetRecord, PartitionState, Refusal, ReplicaSource, Reply,
    TopicState, TypeConfig,
};

/// The voters, parsed from `--controller-quorum-voters`
/// (`ID@HOST:PORT,...`, as Kafka's `controller.quorum.voters`).
///
/// # Errors
/// An empty list, a malformed entry, a repeated id.
pub fn parse_voters(s: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut voters = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = part.split_once('@') else {
            return Err(format!("{part:?} is not ID@HOST:PORT"));
        };
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} in {part:?} is not a node id"))?;
        let addr = addr.trim();
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(format!("{addr:?} in {part:?} is not HOST:PORT")),
        }
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
    }
    if voters.is_empty() {
        return Err("no voters listed".into());
    }
    Ok(voters)
}

/// How a node takes part in the quorum.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: NodeId,
    /// Address to listen on for the quorum's messages.
    pub listen: String,
    /// Every voter's id and quorum address.
    pub voters: BTreeMap<NodeId, String>,
    /// This broker, registered once the quorum has a leader.
    pub me: BrokerInfo,
    /// Raft heartbeat; elections start after 5-10 of them are missed.
    pub heartbeat: Duration,
    /// A broker that has not answered the controller for this long is
    /// fenced: its partitions get new leaders.
    pub session_timeout: Duration,
    /// How often partitions go back to their preferred replicas; `None`:
    /// never.
    pub rebalance_interval: Option<Duration>,
    /// The cluster id a fresh quorum takes (the first registration's).
    pub cluster_id: String,
    /// The secret every connection between brokers proves
    /// (`--controller-secret-file`); `None`: connections are not checked.
    pub auth: Auth,
}

/// Errors starting the quorum.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot bind the controller listener {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("the quorum's storage in {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
    #[error("quorum: {0}")]
    Raft(String),
}

/// A running member of the quorum.
pub struct Cluster {
    raft: Raft<TypeConfig>,
    state: Arc<RwLock<Metadata>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    source: network::Source,
    peers: network::Peers,
    settings: Settings,
    stop: CancellationToken,
    /// Leader elections made as the controller.
    elections: std::sync::atomic::AtomicU64,
    /// Connections to the controller listener refused for want of the
    /// cluster's secret.
    refusals: Arc<network::Refusals>,
    /// This node's block of producer ids: (next, end).
    producer_ids: parking_lot::Mutex<(i64, i64)>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.settings.node_id)
            .field("voters", &self.settings.voters)
            .finish_non_exhaustive()
    }
}

/// The quorum as one node sees it, for `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub node_id: NodeId,
    /// leader, follower, candidate or learner.
    pub role: &'static str,
    /// The current Raft leader: the cluster's controller.
    pub controller: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub voters: BTreeMap<NodeId, String>,
    pub brokers: Vec<BrokerInfo>,
    /// On the leader: each voter's last log index known replicated.
    pub replication: Option<BTreeMap<NodeId, Option<u64>>>,
    /// On the leader: milliseconds since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Partitions with no live leader.
    pub offline_partitions: usize,
    /// Partitions whose ISR is smaller than their replica set.
    pub under_replicated_partitions: usize,
    /// Leader elections this node made as the controller.
    pub leader_elections: u64,
    /// Connections to this node's controller listener refused because
    /// they did not prove the cluster's secret.
    pub refused_connections: u64,
}

impl Cluster {
    /// Opens the quorum's storage under `data_dir`, binds `--controller-listen`
    /// and joins the voters. A fresh node proposes the voter list as the
    /// first membership; a node with state resumes from it.
    ///
    /// # Errors
    /// The listener cannot be bound, the storage cannot be read.
    pub async fn start(data_dir: &Path, settings: Settings) -> Result<Arc<Self>, StartError> {
        let dir = data_dir.join("__cluster_metadata");
        let storage_err = |source| StartError::Storage {
            path: dir.display().to_string(),
            source,
        };
        let changed = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let (log, sm, state) = store::open(&dir, Arc::clone(&changed)).map_err(storage_err)?;
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: settings.listen.clone(),
                source,
            })?;
        let hb = settings.heartbeat.as_millis().max(10) as u64;
        let config = Config {
            cluster_name: "weir".into(),
            heartbeat_interval: hb,
            election_timeout_min: hb * 5,
            election_timeout_max: hb * 10,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let peers = network::Peers::new(settings.auth.clone());
        let raft = Raft::new(settings.node_id, Arc::new(config), peers.clone(), log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let stop = CancellationToken::new();
        let cluster = Arc::new(Self {
            raft,
            state,
            changed,
            source: Arc::default(),
            peers,
            settings,
            stop,
            elections: Default::default(),
            refusals: Arc::default(),
            producer_ids: parking_lot::Mutex::new((0, 0)),
        });
        tokio::spawn(network::serve(
            cluster.raft.clone(),
            Arc::clone(&cluster.source),
            cluster.stop.clone(),
            listener,
            cluster.settings.auth.clone(),
            Arc::clone(&cluster.refusals),
        ));
        let members: BTreeMap<NodeId, BasicNode> = cluster
            .settings
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match cluster.raft.is_initialized().await {
            Ok(true) => {}
            // A broker that is not a voter asks the voters to take it in.
            Ok(false) if !cluster.is_voter() => {
                tokio::spawn(join(Arc::clone(&cluster)));
            }
            Ok(false) => {
                // Every voter proposes the same first membership; whichever
                // is elected first wins, and the others' proposals are
                // replaced by its log.
                if let Err(e) = cluster.raft.initialize(members).await {
                    tracing::debug!(error = %e, "quorum already initialised");
                }
            }
            Err(e) => return Err(StartError::Raft(e.to_string())),
        }
        tokio::spawn(register(Arc::clone(&cluster)));
        tokio::spawn(control(Arc::clone(&cluster)));
        Ok(cluster)
    }

    pub fn node_id(&self) -> NodeId {
        self.settings.node_id
    }

    /// This start of the broker's process, as it registers.
    pub fn incarnation(&self) -> u64 {
        self.settings.me.incarnation
    }

    /// Reads the replicated metadata as this node has applied it.
    pub fn with_metadata<R>(&self, f: impl FnOnce(&Metadata) -> R) -> R {
        f(&self.state.read())
    }

    /// Changes whenever applied metadata changes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How many voters the quorum has: the size of the cluster.
    pub fn voter_count(&self) -> usize {
        self.settings.voters.len()
    }

    /// The controller (the quorum's leader), if one is known.
    pub fn controller(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Where a node's controller listener is (replication goes there): a
    /// voter's from `--controller-quorum-voters`, another broker's from
    /// the quorum's membership, which it joined with its
    /// `--controller-listen`.
    pub fn peer_addr(&self, id: NodeId) -> Option<String> {
        if let Some(addr) = self.settings.voters.get(&id) {
            return Some(addr.clone());
        }
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// Whether this broker is one of the quorum's voters (otherwise it
    /// follows the quorum's log as a learner).
    pub fn is_voter(&self) -> bool {
        self.settings.voters.contains_key(&self.settings.node_id)
    }

    /// Sets the broker's side of replication (once).
    pub fn set_source(&self, source: Arc<dyn ReplicaSource>) {
        let _ = self.source.set(source);
    }

    /// Stops when the quorum stops.
    pub fn stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// This node's view of the quorum.
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let parts: Vec<PartitionState> = self.with_metadata(|md| {
            md.topics
                .values()
                .flat_map(|t| t.partitions.iter().cloned())
                .collect()
        });
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        Status {
            node_id: self.settings.node_id,
            role,
            controller: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            voters: self.settings.voters.clone(),
            brokers: self.state.read().brokers.values().cloned().collect(),
            replication: m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect()),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            offline_partitions: parts.iter().filter(|p| p.leader.is_none()).count(),
            under_replicated_partitions: parts
                .iter()
                .filter(|p| p.isr.len() < p.replicas.len())
                .count(),
            leader_elections: self.elections.load(std::sync::atomic::Ordering::Relaxed),
            refused_connections: self
                .refusals
                .total
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Proposes `cmd`: applied here if this node leads, else sent to the
    /// leader.
    ///
    /// # Errors
    /// No leader is known or reachable, or the quorum refused.
    pub async fn propose(&self, cmd: Command) -> Result<Reply, String> {
        match self.raft.client_write(cmd.clone()).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                match (f.leader_id, f.leader_node) {
                    (Some(id), Some(node)) if id != self.settings.node_id => {
                        network::forward(&node.addr, &self.settings.auth, cmd).await
                    }
                    _ => Err("no controller is elected yet".into()),
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends a batch to the leader of its partition, whose controller
    /// listener is at `addr`, and waits for its in-sync replicas to hold it.
    ///
    /// # Errors
    /// The leader cannot be reached or did not answer in time.
    pub async fn deliver(
        &self,
        addr: &str,
        topic: &str,
        partition: i32,
        batch: &[u8],
    ) -> Result<AppendReply, String> {
        network::deliver(addr, &self.settings.auth, topic, partition, batch).await
    }

    /// Sends a call to the coordinator of another broker, at its
    /// controller listener `addr`.
    ///
    /// # Errors
    /// The broker cannot be reached or did not answer in time.
    pub async fn coordinate(
        &self,
        addr: &str,
        call: CoordinatorCall,
    ) -> Result<CoordinatorReply, String> {
        network::coordinate(addr, &self.settings.auth, call).await
    }

    /// A follower's connection to the leader whose controller listener is
    /// at `addr`.
    pub fn replica_client(&self, addr: String) -> ReplicaClient {
        ReplicaClient::new(addr, self.settings.auth.clone())
    }

    /// A new producer id, unique over the cluster: taken from a block the
    /// quorum handed this node, a new block asked for when it runs out.
    ///
    /// # Errors
    /// No controller could be reached.
    pub async fn allocate_producer_id(&self) -> Result<i64, String> {
        {
            let mut b = self.producer_ids.lock();
            if b.0 < b.1 {
                b.0 += 1;
                return Ok(b.0 - 1);
            }
        }
        const BLOCK: i64 = 1000;
        let r = self
            .propose(Command::AllocateProducerIds {
                broker: self.settings.node_id,
                count: BLOCK,
            })
            .await?;
        let start = r.value.ok_or("no producer id block in the answer")?;
        let mut b = self.producer_ids.lock();
        if b.0 >= b.1 {
            *b = (start, start + BLOCK);
        }
        b.0 += 1;
        Ok(b.0 - 1)
    }

    /// Stops taking part (at broker shutdown).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "the quorum did not stop cleanly");
        }
    }
}

/// A broker that is not a voter: asks the voters, one after another, until
/// the leader among them adds it to the quorum as a learner (it then
/// receives the quorum's log but does not vote). Its address for the
/// others is its `--controller-listen`.
async fn join(cluster: Arc<Cluster>) {
    let me = cluster.settings.node_id;
    let addr = cluster.settings.listen.clone();
    let mut logged = false;
    loop {
        for voter in cluster.settings.voters.values() {
            if cluster.stop.is_cancelled() {
                return;
            }
            match network::join(voter, &cluster.settings.auth, me, &addr).await {
                Ok(()) => {
                    tracing::info!(node_id = me, %addr, "joined the quorum as a learner");
                    return;
                }
                Err(e) => tracing::debug!(voter = %voter, error = %e, "join not taken"),
            }
        }
        if !logged {
            logged = true;
            tracing::info!(
                node_id = me,
                "waiting for the quorum's leader to take this broker in"
            );
        }
        tokio::select! {
            () = cluster.stop.cancelled() => return,
            () = tokio::time::sleep(cluster.settings.heartbeat * 5) => {}
        }
    }
}

/// Registers this broker once a leader is elected, retrying until it is.
async fn register(cluster: Arc<Cluster>) {
    let me = cluster.settings.me.clone();
    loop {
        if cluster.stop.is_cancelled() {
            return;
        }
        let known = cluster.state.read().brokers.get(&me.id) == Some(&me);
        if known {
            return;
        }
        let cmd = Command::RegisterBroker {
            id: me.id,
            kafka: me.kafka.clone(),
            http: me.http.clone(),
            listeners: me.listeners.clone(),
            cluster_id: Some(cluster.settings.cluster_id.clone()),
            incarnation: me.incarnation,
        };
        match cluster.propose(cmd).await {
            Ok(_) => {
                tracing::info!(node_id = me.id, "registered with the cluster");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "registration not taken yet"),
        }
        tokio::select! {
            () = cluster.stop.cancelled() => return,
            () = tokio::time::sleep(cluster.settings.heartbeat * 3) => {}
        }
    }
}

/// The controller's duty, on whichever node leads the quorum: fence the
/// brokers that stopped answering (and unfence those back), and give each
/// partition whose leader is fenced a new one from its in-sync replicas.
async fn control(cluster: Arc<Cluster>) {
    let tick = cluster.settings.heartbeat.max(Duration::from_millis(20));
    let timeout = cluster.settings.session_timeout;
    let me = cluster.settings.node_id;
    let mut leading_since: Option<std::time::Instant> = None;
    let mut last_rebalance = std::time::Instant::now();
    loop {
        tokio::select! {
            () = cluster.stop.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        if cluster.raft.metrics().borrow().state != ServerState::Leader {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(std::time::Instant::now);
        let now = std::time::Instant::now();
        let changes = {
            let answered = cluster.peers.answered.lock();
            let refused = cluster.peers.refused.lock();
            let grace_over = now.duration_since(since) >= timeout;
            let dead = |id: NodeId| {
                if id == me {
                    return false;
                }
                let silent = answered
                    .get(&id)
                    .is_none_or(|t| now.duration_since(*t) >= timeout);
                // A connection refused while leading is a process gone:
                // no need to wait out the session. (One refused before
                // this node led may be from before the peer started.)
                refused.get(&id).is_some_and(|t| *t > since) || (grace_over && silent)
            };
            let mut changes = cluster.with_metadata(|m| decide(m, &dead));
            // Only over a settled cluster, and not before the first
            // interval of this leadership.
            let due = cluster
                .settings
                .rebalance_interval
                .is_some_and(|every| now.duration_since(last_rebalance.max(since)) >= every);
            if due && changes.is_empty() {
                last_rebalance = now;
                changes = cluster.with_metadata(|m| rebalance(m, &dead));
            }
            changes
        };
        for cmd in changes {
            let election = matches!(&cmd, Command::ChangePartition { topic, partition, leader, .. }
                if cluster.with_metadata(|m| m.partition(topic, *partition).map(|p| p.leader)) != Some(*leader));
            // Written here or not at all: a node that has just lost the
            // leadership (woken from a pause, say) must not forward what it
            // decided from its stale view to the new controller.
            match cluster.raft.client_write(cmd.clone()).await.map(|r| r.data) {
                Ok(r) if r.changed => {
                    if election {
                        cluster
                            .elections
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    tracing::info!(change = ?cmd, "controller");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "controller change not taken"),
            }
        }
    }
}

/// What the controller changes, given which brokers are dead.
fn decide(m: &Metadata, dead: &dyn Fn(NodeId) -> bool) -> Vec<Command> {
    let mut out = Vec::new();
    for b in m.brokers.values() {
        let d = dead(b.id);
        if d != b.fenced {
            out.push(Command::SetFenced {
                id: b.id,
                fenced: d,
            });
        }
    }
    let gone = |id: NodeId| dead(id) || m.brokers.get(&id).is_none_or(|b| b.fenced);
    for (name, t) in &m.topics {
        for (i, p) in t.partitions.iter().enumerate() {
            let live_isr: Vec<NodeId> = p.isr.iter().copied().filter(|r| !gone(*r)).collect();
            let leader = match p.leader {
                Some(l) if !gone(l) => Some(l),
                // The first live in-sync replica in preference order.
                _ => p.replicas.iter().copied().find(|r| live_isr.contains(r)),
            };
            // With no live in-sync replica the ISR keeps its members: the
            // first of them back leads (no unclean election).
            let isr = if live_isr.is_empty() {
                p.isr.clone()
            } else {
                live_isr
            };
            if leader != p.leader || isr != p.isr {
                out.push(Command::ChangePartition {
                    topic: name.clone(),
                    partition: i as i32,
                    partition_epoch: p.partition_epoch,
                    leader,
                    isr,
                });
            }
        }
    }
    out
}

/// Partitions handed back to their preferred replica (the first of their
/// replicas) where it is live and in sync and does not lead.
fn rebalance(m: &Metadata, dead: &dyn Fn(NodeId) -> bool) -> Vec<Command> {
    let gone = |id: NodeId| dead(id) || m.brokers.get(&id).is_none_or(|b| b.fenced);
    let mut out = Vec::new();
    for (name, t) in &m.topics {
        for (i, p) in t.partitions.iter().enumerate() {
            let Some(preferred) = p.replicas.first().copied() else {
                continue;
            };
            if p.leader != Some(preferred) && p.isr.contains(&preferred) && !gone(preferred) {
                out.push(Command::ChangePartition {
                    topic: name.clone(),
                    partition: i as i32,
                    partition_epoch: p.partition_epoch,
                    leader: Some(preferred),
                    isr: p.isr.clone(),
                });
            }
        }
    }
    out
}

/// Which leader an ElectLeaders request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// The preferred replica (the first), if it is live and in sync.
    Preferred,
    /// For a partition without a live leader or in-sync replica: any live
    /// replica, in sync or not (what it lacks is lost).
    Unclean,
}

/// Why no election was made for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoElection {
    UnknownPartition,
    /// The partition already has the leader asked for.
    NotNeeded,
    /// The preferred replica is fenced or out of sync.
    PreferredNotAvailable,
    /// No live replica to lead.
    NoEligibleLeader,
}

/// The leader an ElectLeaders request elects for one partition, and the
/// change that makes it so.
///
/// # Errors
/// Why no election is made.
pub fn elect(
    m: &Metadata,
    topic: &str,
    partition: i32,
    kind: Election,
) -> Result<(NodeId, Command), NoElection> {
    let p = m
        .partition(topic, partition)
        .ok_or(NoElection::UnknownPartition)?;
    let live = |id: NodeId| m.brokers.get(&id).is_some_and(|b| !b.fenced);
    let change = |leader: NodeId, isr: Vec<NodeId>| {
        let cmd = Command::ChangePartition {
            topic: topic.to_string(),
            partition,
            partition_epoch: p.partition_epoch,
            leader: Some(leader),
            isr,
        };
        (leader, cmd)
    };
    match kind {
        Election::Preferred => {
            let preferred = *p.replicas.first().ok_or(NoElection::NoEligibleLeader)?;
            if p.leader == Some(preferred) {
                return Err(NoElection::NotNeeded);
            }
            if !live(preferred) || !p.isr.contains(&preferred) {
                return Err(NoElection::PreferredNotAvailable);
            }
            Ok(change(preferred, p.isr.clone()))
        }
        Election::Unclean => {
            if p.leader.is_some_and(live) {
                return Err(NoElection::NotNeeded);
            }
            // A live in-sync replica is elected cleanly (the controller
            // would do so at its next tick).
            if let Some(r) = p
                .replicas
                .iter()
                .copied()
                .find(|r| live(*r) && p.isr.contains(r))
            {
                let isr = p.isr.iter().copied().filter(|r| live(*r)).collect();
                return Ok(change(r, isr));
            }
            let r = p
                .replicas
                .iter()
                .copied()
                .find(|r| live(*r))
                .ok_or(NoElection::NoEligibleLeader)?;
            Ok(change(r, vec![r]))
        }
    }
}

#[cfg(test)]
mod tests;
