//! Replication's state on one broker: the partitions it leads (each
//! follower's progress, the ISR as the leader knows it, the high
//! watermark) and the follower loops it runs. Nothing here knows the
//! broker: `replication` applies the cluster's metadata to it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Command, NodeId};
use crate::log::PartitionLog;

/// A partition, by topic name and index.
pub(crate) type Key = (String, i32);

/// How far one follower has fetched, as its leader saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// The follower's log end offset (its last fetch offset).
    pub(crate) end_offset: i64,
    /// When it last had everything the leader had.
    pub(crate) caught_up_at: Instant,
    /// The leader's end offset when it answered the follower's last fetch,
    /// and when: a fetch from there on means it was caught up then.
    pub(crate) last_answer: Option<(i64, Instant)>,
    /// The follower's log start, as its last fetch said.
    pub(crate) log_start: i64,
}

/// A partition this broker leads.
#[derive(Debug)]
pub struct Leadership {
    pub(crate) log: Arc<PartitionLog>,
    /// This broker.
    pub(crate) me: NodeId,
    pub leader_epoch: i32,
    /// When this broker took the leadership.
    pub(crate) created: Instant,
    pub(crate) inner: Mutex<LeaderInner>,
    /// Set when this broker stops leading at this epoch: writes still
    /// waiting for the high watermark are answered NOT_LEADER_OR_FOLLOWER
    /// (the high watermark that moves next is a follower's, over a log
    /// that may have been cut and refilled with other records).
    pub(crate) deposed: std::sync::atomic::AtomicBool,
    pub(crate) deposed_wake: tokio::sync::Notify,
}

#[derive(Debug)]
pub(crate) struct LeaderInner {
    pub(crate) replicas: Vec<NodeId>,
    pub(crate) isr: Vec<NodeId>,
    pub(crate) partition_epoch: i32,
    pub(crate) followers: HashMap<NodeId, Progress>,
    /// The end offset when this leadership began: a follower below it has
    /// not caught up with this leader yet.
    pub(crate) epoch_start: i64,
    /// An ISR change is being proposed.
    pub(crate) proposing: bool,
    /// A follower proposed for the ISR and not yet in it: the high
    /// watermark waits for it already (Kafka's "maximal ISR"), or records
    /// acknowledged before the change commits could be missing from a
    /// member of the new ISR.
    pub(crate) joining: Option<NodeId>,
    /// The topic's `min.insync.replicas`.
    pub(crate) min_isr: usize,
}

impl Leadership {
    /// The partition's log.
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// Whether this leadership has ended.
    pub fn is_deposed(&self) -> bool {
        self.deposed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Completes when this leadership ends. Enable it (or poll it once)
    /// before checking [`Leadership::is_deposed`], so no ending is missed.
    pub fn ended(&self) -> tokio::sync::futures::Notified<'_> {
        self.deposed_wake.notified()
    }

    pub(crate) fn depose(&self) {
        self.deposed
            .store(true, std::sync::atomic::Ordering::Release);
        self.deposed_wake.notify_waiters();
    }

    /// After an append by this leader: with no other in-sync replica the
    /// high watermark moves at once.
    pub fn appended(&self) {
        self.advance(self.me);
    }

    /// Waits until the high watermark reaches `upto`, up to `timeout`,
    /// while this leadership lasts: once it ended the records may be cut
    /// from this log, and the high watermark that moves next is a
    /// follower's, over other records.
    ///
    /// # Errors
    /// The leadership ended, or the timeout passed.
    pub async fn committed(&self, upto: i64, timeout: Duration) -> Result<(), Unreplicated> {
        let deadline = tokio::time::Instant::now() + timeout;
        let log = self.log();
        loop {
            let moved = log.next_append();
            let ended = self.ended();
            tokio::pin!(moved, ended);
            moved.as_mut().enable();
            ended.as_mut().enable();
            if self.is_deposed() {
                return Err(Unreplicated::Deposed);
            }
            if log.high_watermark() >= upto {
                return Ok(());
            }
            tokio::select! {
                () = moved => {}
                () = ended => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(if self.is_deposed() {
                        Unreplicated::Deposed
                    } else {
                        Unreplicated::TimedOut
                    });
                }
            }
        }
    }

    /// The lowest log start among the in-sync replicas (this leader's
    /// included): what every replica that could lead next has deleted.
    pub fn low_watermark(&self) -> i64 {
        let i = self.inner.lock();
        let mut low = self.log.log_start_offset();
        for r in i.isr.iter().filter(|r| **r != self.me) {
            match i.followers.get(r) {
                Some(p) => low = low.min(p.log_start),
                None => return -1,
            }
        }
        low
    }

    /// Records a follower's log start, from its fetch.
    pub(crate) fn follower_log_start(&self, replica: NodeId, log_start: i64) {
        if let Some(p) = self.inner.lock().followers.get_mut(&replica) {
            p.log_start = log_start;
        }
    }

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
    pub(crate) fn advance(&self, me: NodeId) {
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

/// Why a write was not confirmed by the in-sync replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreplicated {
    /// This broker stopped leading the partition.
    Deposed,
    /// The high watermark did not reach the write in time.
    TimedOut,
}

/// A follower's fetch loop for one partition.
#[derive(Debug)]
pub(crate) struct Following {
    pub(crate) leader: NodeId,
    pub(crate) leader_epoch: i32,
    pub(crate) stop: CancellationToken,
    /// The log it appends to.
    pub(crate) log: Arc<PartitionLog>,
}

/// Replication state of this broker's partitions.
#[derive(Debug, Default)]
pub struct Replicas {
    pub(crate) leading: RwLock<HashMap<Key, Arc<Leadership>>>,
    pub(crate) following: Mutex<HashMap<Key, Following>>,
    /// Topics the quorum held at the last reconcile: one gone since was
    /// deleted.
    pub(crate) known: Mutex<HashSet<String>>,
    /// Per partition: held while its role changes and while a follower
    /// loop acts on its log, so that a loop that was told to stop never
    /// appends or truncates after the role changed.
    pub(crate) role_locks: Mutex<HashMap<Key, Arc<Mutex<()>>>>,
}

impl Replicas {
    /// The lock for a partition's role (see `role_locks`).
    pub(crate) fn role_lock(&self, key: &Key) -> Arc<Mutex<()>> {
        Arc::clone(self.role_locks.lock().entry(key.clone()).or_default())
    }

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
    pub fn appended(&self, me: NodeId, topic: &str, partition: i32) {
        if let Some(l) = self.leadership(topic, partition) {
            l.advance(me);
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
    pub(crate) fn shrink_lagging(&self, cluster: &Arc<Cluster>, lag_max: Duration) {
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
pub(crate) fn propose_isr(cluster: Arc<Cluster>, l: Arc<Leadership>, cmd: Command) {
    tokio::spawn(async move {
        // Only a refusal is sure not to have changed the ISR: a proposal
        // that timed out on its way to the controller may still commit.
        let refused = match cluster.propose(cmd.clone()).await {
            Ok(r) if r.changed => {
                tracing::info!(change = ?cmd, "ISR changed");
                false
            }
            Ok(r) => {
                tracing::debug!(refused = ?r.error, "ISR change not applied");
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "ISR change may not have been proposed");
                false
            }
        };
        let mut i = l.inner.lock();
        i.proposing = false;
        // Otherwise the joining follower stays counted until this broker
        // applies the partition's next change (which has it in the ISR, or
        // was made without it).
        if refused {
            i.joining = None;
        }
    });
}

/// Notes a follower's fetch offset: its end offset, whether it has caught
/// up, the high watermark that follows, and an ISR that grows with it.
pub(crate) fn record_progress(
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
            log_start: 0,
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
        // One follower joins at a time; a proposal that may not have
        // reached the controller is made again.
        if joins && !i.proposing && i.joining.is_none_or(|j| j == replica) {
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
