//! Partition replication, Kafka's way, on the cluster's metadata: each
//! partition has a leader that takes the writes and followers that fetch
//! from it. The leader tracks how far each follower has fetched, moves the
//! high watermark to what every in-sync replica holds, and asks the quorum
//! to shrink the ISR when a follower falls behind for
//! `--replica-lag-time-max-ms` (and to grow it when one catches up). An
//! acks=all produce is answered when the high watermark passes its records.
//!
//! [`Replicas::reconcile`] applies the quorum's metadata to this broker:
//! creates and deletes local topics, and gives each local partition its
//! role. Followers run one fetch loop per partition
//! ([`follow`]); a follower's log that diverged from its new leader's is
//! cut where the leader's epochs say ([`cluster::FetchReply::Diverging`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::broker::{now_ms, Broker};
use crate::cluster::{
    Cluster, Command, FetchReply, FetchRequest, Metadata, NodeId, PartitionState, ReplicaClient,
    ReplicaSource,
};
use crate::log::PartitionLog;

/// A partition, by topic name and index.
type Key = (String, i32);

/// How far one follower has fetched, as its leader saw it.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The follower's log end offset (its last fetch offset).
    end_offset: i64,
    /// When it last had everything the leader had.
    caught_up_at: Instant,
    /// The leader's end offset when it answered the follower's last fetch,
    /// and when: a fetch from there on means it was caught up then.
    last_answer: Option<(i64, Instant)>,
}

/// A partition this broker leads.
#[derive(Debug)]
pub struct Leadership {
    log: Arc<PartitionLog>,
    pub leader_epoch: i32,
    /// When this broker took the leadership.
    created: Instant,
    inner: Mutex<LeaderInner>,
}

#[derive(Debug)]
struct LeaderInner {
    replicas: Vec<NodeId>,
    isr: Vec<NodeId>,
    partition_epoch: i32,
    followers: HashMap<NodeId, Progress>,
    /// The end offset when this leadership began: a follower below it has
    /// not caught up with this leader yet.
    epoch_start: i64,
    /// An ISR change is being proposed.
    proposing: bool,
    /// A follower proposed for the ISR and not yet in it: the high
    /// watermark waits for it already (Kafka's "maximal ISR"), or records
    /// acknowledged before the change commits could be missing from a
    /// member of the new ISR.
    joining: Option<NodeId>,
    /// The topic's `min.insync.replicas`.
    min_isr: usize,
}

impl Leadership {
    /// The in-sync replicas as this leader knows them.
    pub fn isr(&self) -> Vec<NodeId> {
        self.inner.lock().isr.clone()
    }

    /// Whether an acks=all write may be taken: the ISR holds at least
    /// `min.insync.replicas`.
    pub fn enough_replicas(&self) -> bool {
        let i = self.inner.lock();
        i.isr.len() >= i.min_isr
    }

    /// Whether followers must confirm writes (more than one replica).
    pub fn replicated(&self) -> bool {
        self.inner.lock().replicas.len() > 1
    }

    /// Moves the high watermark to the smallest end offset among the
    /// in-sync replicas (this leader's included).
    fn advance(&self, me: NodeId) {
        let inner = self.inner.lock();
        let mut hw = self.log.end_offset();
        for r in inner
            .isr
            .iter()
            .chain(inner.joining.iter())
            .filter(|r| **r != me)
        {
            match inner.followers.get(r) {
                Some(p) => hw = hw.min(p.end_offset),
                // Not heard from in this leadership: it may hold less.
                None => return,
            }
        }
        drop(inner);
        self.log.set_high_watermark(hw);
    }
}

/// A follower's fetch loop for one partition.
#[derive(Debug)]
struct Following {
    leader: NodeId,
    leader_epoch: i32,
    stop: CancellationToken,
}

/// Replication state of this broker's partitions.
#[derive(Debug, Default)]
pub struct Replicas {
    leading: RwLock<HashMap<Key, Arc<Leadership>>>,
    following: Mutex<HashMap<Key, Following>>,
    /// Topics the quorum held at the last reconcile: one gone since was
    /// deleted.
    known: Mutex<HashSet<String>>,
}

/// Why a partition's request cannot be served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotServed {
    /// Another broker (or none) leads it.
    NotLeader(Option<(NodeId, i32)>),
}

impl Replicas {
    /// The leadership of a partition this broker leads.
    pub fn leadership(&self, topic: &str, partition: i32) -> Option<Arc<Leadership>> {
        self.leading
            .read()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// How many partitions this broker leads and follows.
    pub fn counts(&self) -> (usize, usize) {
        (self.leading.read().len(), self.following.lock().len())
    }

    /// Partitions led here whose ISR is smaller than their replica set.
    pub fn under_replicated(&self) -> usize {
        self.leading
            .read()
            .values()
            .filter(|l| {
                let i = l.inner.lock();
                i.isr.len() < i.replicas.len()
            })
            .count()
    }

    /// On a leader: each follower's largest lag (the leader's end offset
    /// minus the follower's) over the partitions led here.
    pub fn lag_by_follower(&self, me: NodeId) -> std::collections::BTreeMap<NodeId, i64> {
        let mut out = std::collections::BTreeMap::new();
        for l in self.leading.read().values() {
            let end = l.log.end_offset();
            let i = l.inner.lock();
            for r in i.replicas.iter().filter(|r| **r != me) {
                let lag = i
                    .followers
                    .get(r)
                    .map_or(end, |p| (end - p.end_offset).max(0));
                let e = out.entry(*r).or_insert(0);
                *e = lag.max(*e);
            }
        }
        out
    }

    /// After an append by this leader: with no other in-sync replica the
    /// high watermark moves at once.
    pub fn appended(&self, broker: &Broker, topic: &str, partition: i32) {
        if let (Some(c), Some(l)) = (broker.cluster.get(), self.leadership(topic, partition)) {
            l.advance(c.node_id());
        }
    }

    /// Applies the quorum's metadata to this broker.
    pub fn reconcile(&self, broker: &Arc<Broker>, cluster: &Arc<Cluster>, m: &Metadata) {
        let me = cluster.node_id();
        let now = now_ms();
        // Topics deleted since the last look.
        {
            let mut known = self.known.lock();
            for gone in known.iter().filter(|n| !m.topics.contains_key(*n)) {
                if broker.topics.get(gone).is_some() {
                    if let Err(e) = broker.topics.delete(gone) {
                        tracing::warn!(topic = %gone, error = %e, "could not delete a replica");
                    }
                }
            }
            *known = m.topics.keys().cloned().collect();
        }
        let mut live: HashSet<Key> = HashSet::new();
        for (name, t) in &m.topics {
            if !t.partitions.iter().any(|p| p.replicas.contains(&me)) {
                continue;
            }
            let local = match broker.topics.create_replica(
                name,
                t.id,
                t.partitions.len() as i32,
                t.configs.clone(),
                now,
            ) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(topic = %name, error = %e, "could not create a replica");
                    continue;
                }
            };
            let want = t.partitions.len() as i32;
            if local.partition_count() < want {
                if let Err(e) = broker.topics.create_partitions(name, want, false, now) {
                    tracing::error!(topic = %name, error = %e, "could not add partitions");
                }
            }
            if local.configs() != t.configs {
                if let Err(e) = broker.topics.set_configs(name, t.configs.clone(), false) {
                    tracing::warn!(topic = %name, error = %e, "could not apply configs");
                }
            }
            let min_isr = t
                .configs
                .get("min.insync.replicas")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(1);
            for (i, p) in t.partitions.iter().enumerate() {
                let index = i as i32;
                let Some(log) = local.partition(index) else {
                    continue;
                };
                let key = (name.clone(), index);
                live.insert(key.clone());
                self.assume(broker, cluster, key, log, p, min_isr);
            }
        }
        // Partitions this broker no longer holds.
        self.leading.write().retain(|k, _| live.contains(k));
        self.following.lock().retain(|k, f| {
            let keep = live.contains(k);
            if !keep {
                f.stop.cancel();
            }
            keep
        });
    }

    /// Takes the role `p` gives this broker for one partition.
    fn assume(
        &self,
        broker: &Arc<Broker>,
        cluster: &Arc<Cluster>,
        key: Key,
        log: Arc<PartitionLog>,
        p: &PartitionState,
        min_isr: usize,
    ) {
        let me = cluster.node_id();
        log.set_replicated(p.replicas.len() > 1);
        if p.leader == Some(me) {
            if let Some(f) = self.following.lock().remove(&key) {
                f.stop.cancel();
            }
            let mut leading = self.leading.write();
            match leading.get(&key) {
                Some(l) if l.leader_epoch == p.leader_epoch => {
                    let mut i = l.inner.lock();
                    if i.partition_epoch != p.partition_epoch {
                        i.joining = None;
                    }
                    i.isr.clone_from(&p.isr);
                    i.replicas.clone_from(&p.replicas);
                    i.partition_epoch = p.partition_epoch;
                    i.min_isr = min_isr;
                }
                _ => {
                    log.set_leader_epoch(p.leader_epoch);
                    tracing::info!(topic = %key.0, partition = key.1, leader_epoch = p.leader_epoch, "leading");
                    leading.insert(
                        key.clone(),
                        Arc::new(Leadership {
                            leader_epoch: p.leader_epoch,
                            created: Instant::now(),
                            inner: Mutex::new(LeaderInner {
                                replicas: p.replicas.clone(),
                                isr: p.isr.clone(),
                                partition_epoch: p.partition_epoch,
                                followers: HashMap::new(),
                                epoch_start: log.end_offset(),
                                proposing: false,
                                joining: None,
                                min_isr,
                            }),
                            log: Arc::clone(&log),
                        }),
                    );
                }
            }
            drop(leading);
            if let Some(l) = self.leadership(&key.0, key.1) {
                l.advance(me);
            }
            return;
        }
        self.leading.write().remove(&key);
        let follows = p.replicas.contains(&me);
        let mut following = self.following.lock();
        let current = following.get(&key).map(|f| (f.leader, f.leader_epoch));
        let wanted = p.leader.filter(|_| follows).map(|l| (l, p.leader_epoch));
        if current == wanted {
            return;
        }
        if let Some(f) = following.remove(&key) {
            f.stop.cancel();
        }
        if let Some((leader, leader_epoch)) = wanted {
            let stop = CancellationToken::new();
            following.insert(
                key.clone(),
                Following {
                    leader,
                    leader_epoch,
                    stop: stop.clone(),
                },
            );
            tracing::info!(topic = %key.0, partition = key.1, leader, leader_epoch, "following");
            tokio::spawn(follow(
                Arc::downgrade(broker),
                Arc::clone(cluster),
                key,
                log,
                leader,
                leader_epoch,
                stop,
            ));
        }
    }

    /// Stops every follower loop (at shutdown).
    pub fn stop(&self) {
        for f in self.following.lock().values() {
            f.stop.cancel();
        }
    }

    /// The leader's checks on its followers, every tick: a follower that
    /// has not caught up for `lag_max` leaves the ISR.
    fn shrink_lagging(&self, cluster: &Arc<Cluster>, lag_max: Duration) {
        let me = cluster.node_id();
        let now = Instant::now();
        for ((topic, partition), l) in self.leading.read().iter() {
            let mut i = l.inner.lock();
            if i.proposing {
                continue;
            }
            let keep: Vec<NodeId> = i
                .isr
                .iter()
                .copied()
                .filter(|r| {
                    *r == me
                        || i
                            .followers
                            .get(r)
                            .is_some_and(|p| now.duration_since(p.caught_up_at) < lag_max)
                            // Not heard from yet: give it the lag time from
                            // the leadership's start.
                            || (!i.followers.contains_key(r)
                                && now.duration_since(l.created) < lag_max)
                })
                .collect();
            if keep.len() < i.isr.len() {
                i.proposing = true;
                let cmd = Command::ChangePartition {
                    topic: topic.clone(),
                    partition: *partition,
                    partition_epoch: i.partition_epoch,
                    leader: Some(me),
                    isr: keep,
                };
                drop(i);
                propose_isr(Arc::clone(cluster), Arc::clone(l), cmd);
            }
        }
    }
}

/// Proposes an ISR change and clears the leader's in-flight mark.
fn propose_isr(cluster: Arc<Cluster>, l: Arc<Leadership>, cmd: Command) {
    tokio::spawn(async move {
        let applied = match cluster.propose(cmd.clone()).await {
            Ok(r) if r.changed => {
                tracing::info!(change = ?cmd, "ISR changed");
                true
            }
            Ok(r) => {
                tracing::debug!(refused = ?r.error, "ISR change not applied");
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "ISR change not proposed");
                false
            }
        };
        let mut i = l.inner.lock();
        i.proposing = false;
        // Applied: the joining follower stays counted until this broker
        // applies the change too (then it is in the ISR).
        if !applied {
            i.joining = None;
        }
    });
}

/// Runs replication on this broker: applies each metadata change, checks
/// followers' lag, and answers followers' fetches.
pub async fn run(broker: Arc<Broker>, cluster: Arc<Cluster>) {
    cluster.set_source(Arc::new(Source {
        broker: Arc::downgrade(&broker),
        me: cluster.node_id(),
        cluster: Arc::downgrade(&cluster),
    }));
    let lag_max = Duration::from_millis(broker.config.args.replica_lag_time_max_ms);
    let mut changes = cluster.changes();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    changes.mark_changed();
    loop {
        tokio::select! {
            () = cluster.stopped() => break,
            r = changes.changed() => {
                if r.is_err() {
                    break;
                }
                let m = cluster.with_metadata(Clone::clone);
                let (b, c) = (Arc::clone(&broker), Arc::clone(&cluster));
                // Creating and deleting local topics touches the disk.
                let _ = tokio::task::spawn_blocking(move || b.replicas.reconcile(&b, &c, &m)).await;
            }
            _ = tick.tick() => broker.replicas.shrink_lagging(&cluster, lag_max),
        }
    }
    broker.replicas.stop();
}

/// The broker's answers to followers' fetches.
struct Source {
    broker: Weak<Broker>,
    cluster: Weak<Cluster>,
    me: NodeId,
}

impl ReplicaSource for Source {
    fn fetch(&self, req: FetchRequest) -> Pin<Box<dyn Future<Output = FetchReply> + Send + '_>> {
        Box::pin(async move {
            let (Some(broker), Some(cluster)) = (self.broker.upgrade(), self.cluster.upgrade())
            else {
                return FetchReply::NotLeader;
            };
            serve_fetch(&broker, &cluster, self.me, req).await
        })
    }
}

/// A leader answers a follower's fetch, and learns from its offset how far
/// the follower is.
async fn serve_fetch(
    broker: &Arc<Broker>,
    cluster: &Arc<Cluster>,
    me: NodeId,
    req: FetchRequest,
) -> FetchReply {
    let Some(l) = broker.replicas.leadership(&req.topic, req.partition) else {
        return FetchReply::NotLeader;
    };
    if l.leader_epoch != req.leader_epoch {
        return FetchReply::NotLeader;
    }
    let log = Arc::clone(&l.log);
    // Where the follower's log stops agreeing with this one.
    let end = log.end_offset();
    if let Some(e) = req.last_fetched_epoch {
        match log.end_offset_for_epoch(e) {
            Some((epoch, epoch_end)) if epoch == e && epoch_end >= req.offset => {}
            Some((epoch, epoch_end)) => {
                return FetchReply::Diverging {
                    epoch,
                    end_offset: epoch_end.min(req.offset),
                }
            }
            None => {
                return FetchReply::Diverging {
                    epoch: -1,
                    end_offset: log.log_start_offset().min(req.offset),
                }
            }
        }
    }
    if req.offset > end {
        return FetchReply::Diverging {
            epoch: log.last_epoch().unwrap_or(-1),
            end_offset: end,
        };
    }
    if req.offset < log.log_start_offset() {
        return FetchReply::OffsetOutOfRange {
            log_start_offset: log.log_start_offset(),
        };
    }
    record_progress(
        cluster,
        &l,
        me,
        req.replica,
        req.offset,
        &req.topic,
        req.partition,
    );
    // Nothing new: wait for an append, up to the follower's wait.
    if req.offset >= log.end_offset() && req.max_wait_ms > 0 {
        let appended = log.next_append();
        tokio::pin!(appended);
        appended.as_mut().enable();
        if req.offset >= log.end_offset() {
            let wait = Duration::from_millis(u64::from(req.max_wait_ms));
            tokio::select! {
                () = appended => {}
                () = tokio::time::sleep(wait) => {}
                () = broker.phase_changed.notified() => {}
            }
        }
    }
    let upto = log.end_offset();
    let answered_end = upto;
    match log.read_upto(req.offset, req.max_bytes as usize, true, upto) {
        Ok(r) => {
            if let Some(p) = l.inner.lock().followers.get_mut(&req.replica) {
                p.last_answer = Some((answered_end, Instant::now()));
            }
            FetchReply::Records {
                high_watermark: log.high_watermark(),
                log_start_offset: r.log_start_offset,
                len: r.records.len() as u32,
                records: r.records,
            }
        }
        Err(e) => FetchReply::Error(e.to_string()),
    }
}

/// Notes a follower's fetch offset: its end offset, whether it has caught
/// up, the high watermark that follows, and an ISR that grows with it.
fn record_progress(
    cluster: &Arc<Cluster>,
    l: &Arc<Leadership>,
    me: NodeId,
    replica: NodeId,
    offset: i64,
    topic: &str,
    partition: i32,
) {
    let now = Instant::now();
    let grow = {
        let mut i = l.inner.lock();
        if !i.replicas.contains(&replica) {
            return;
        }
        let p = i.followers.entry(replica).or_insert(Progress {
            end_offset: offset,
            caught_up_at: l.created,
            last_answer: None,
        });
        p.end_offset = offset;
        if offset >= l.log.end_offset() {
            p.caught_up_at = now;
        } else if let Some((end, at)) = p.last_answer {
            if offset >= end {
                p.caught_up_at = at;
            }
        }
        let hw = l.log.high_watermark();
        // A fenced broker is not taken back before the controller unfences
        // it (it would take it out again).
        let joins = !i.isr.contains(&replica)
            && offset >= hw
            && offset >= i.epoch_start
            && cluster.with_metadata(|m| m.brokers.get(&replica).is_some_and(|b| !b.fenced));
        if joins && !i.proposing && i.joining.is_none() {
            i.proposing = true;
            i.joining = Some(replica);
            let mut isr = i.isr.clone();
            isr.push(replica);
            isr.sort_by_key(|r| i.replicas.iter().position(|x| x == r));
            Some(Command::ChangePartition {
                topic: topic.to_string(),
                partition,
                partition_epoch: i.partition_epoch,
                leader: Some(me),
                isr,
            })
        } else {
            None
        }
    };
    l.advance(me);
    if let Some(cmd) = grow {
        propose_isr(Arc::clone(cluster), Arc::clone(l), cmd);
    }
}

/// A follower's loop: fetch from the leader, append what it sends, cut the
/// log where it diverged, until the role changes.
async fn follow(
    broker: Weak<Broker>,
    cluster: Arc<Cluster>,
    (topic, partition): Key,
    log: Arc<PartitionLog>,
    leader: NodeId,
    leader_epoch: i32,
    stop: CancellationToken,
) {
    let Some(addr) = cluster.peer_addr(leader).map(str::to_string) else {
        tracing::warn!(leader, "no controller address for the leader");
        return;
    };
    let me = cluster.node_id();
    let mut client = ReplicaClient::new(addr);
    let mut failures = 0u32;
    loop {
        if stop.is_cancelled() || broker.strong_count() == 0 {
            return;
        }
        let req = FetchRequest {
            topic: topic.clone(),
            partition,
            replica: me,
            leader_epoch,
            offset: log.end_offset(),
            last_fetched_epoch: log.last_epoch(),
            max_bytes: 1 << 20,
            max_wait_ms: 500,
        };
        let reply = tokio::select! {
            () = stop.cancelled() => return,
            r = client.fetch(req) => r,
        };
        let pause = match reply {
            Ok(FetchReply::Records {
                high_watermark,
                records,
                ..
            }) => {
                failures = 0;
                if !records.is_empty() {
                    if let Err(e) = log.append_replica(&records, now_ms()) {
                        tracing::warn!(%topic, partition, error = %e, "could not append fetched records");
                        Some(Duration::from_millis(200))
                    } else {
                        log.set_high_watermark(high_watermark.min(log.end_offset()));
                        None
                    }
                } else {
                    log.set_high_watermark(high_watermark.min(log.end_offset()));
                    None
                }
            }
            Ok(FetchReply::Diverging { epoch, end_offset }) => {
                tracing::info!(%topic, partition, leader, epoch, end_offset, from = log.end_offset(), "log diverged from the leader's; truncating");
                match log.truncate_to(end_offset) {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::error!(%topic, partition, error = %e, "truncation failed");
                        Some(Duration::from_secs(1))
                    }
                }
            }
            Ok(FetchReply::OffsetOutOfRange { log_start_offset }) => {
                tracing::warn!(%topic, partition, leader, log_start_offset, end = log.end_offset(), "the leader no longer has this follower's next records");
                Some(Duration::from_secs(1))
            }
            Ok(FetchReply::NotLeader) => Some(Duration::from_millis(100)),
            Ok(FetchReply::Error(e)) => {
                tracing::debug!(%topic, partition, leader, error = %e, "fetch refused");
                Some(Duration::from_millis(200))
            }
            Err(e) => {
                failures += 1;
                if failures == 3 {
                    tracing::warn!(%topic, partition, leader, addr = client.addr(), error = %e, "cannot fetch from the leader");
                }
                Some(Duration::from_millis(100 * u64::from(failures.min(10))))
            }
        };
        if let Some(p) = pause {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(p) => {}
            }
        }
    }
}
