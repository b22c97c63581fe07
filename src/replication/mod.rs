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

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::broker::{now_ms, Broker};
use crate::cluster::{
    AppendReply, AppendRequest, Cluster, FetchReply, FetchRequest, Metadata, NodeId,
    PartitionState, ReplicaSource,
};
use crate::log::{LogError, PartitionLog};
use crate::replicas::{record_progress, Following, Key, LeaderInner, Leadership, Replicas};

mod appends;
mod coordinate;
pub use appends::{append_at_leader, appender, run_retries};
pub use coordinate::{
    commit_offsets_at_coordinators, hold_in_transaction, pending_offsets, txn_offsets,
};

impl Replicas {
    /// Applies the quorum's metadata to this broker.
    pub fn reconcile(&self, broker: &Arc<Broker>, cluster: &Arc<Cluster>, m: &Metadata) {
        let me = cluster.node_id();
        let now = now_ms();
        broker
            .broker_configs
            .set_cluster_defaults(&m.broker_defaults, &broker.topics);
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
        // Until this process's registration is applied (and while it is
        // fenced) this broker leads nothing: after a restart its log may
        // be empty, and the metadata it replays still names it leader.
        let may_lead = m
            .brokers
            .get(&me)
            .is_some_and(|b| b.incarnation == cluster.incarnation() && !b.fenced);
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
                self.assume(broker, cluster, key, log, p, (min_isr, may_lead));
            }
        }
        // Partitions this broker no longer holds.
        self.leading.write().retain(|k, l| {
            let keep = live.contains(k);
            if !keep {
                l.depose();
            }
            keep
        });
        self.following.lock().retain(|k, f| {
            let keep = live.contains(k);
            if !keep {
                f.stop.cancel();
            }
            keep
        });
        self.role_locks.lock().retain(|k, _| live.contains(k));
    }

    /// Takes the role `p` gives this broker for one partition.
    fn assume(
        &self,
        broker: &Arc<Broker>,
        cluster: &Arc<Cluster>,
        key: Key,
        log: Arc<PartitionLog>,
        p: &PartitionState,
        (min_isr, may_lead): (usize, bool),
    ) {
        let me = cluster.node_id();
        let role_lock = self.role_lock(&key);
        let _role = role_lock.lock();
        log.set_replicated(p.replicas.len() > 1);
        if p.leader == Some(me) && may_lead {
            if let Some(f) = self.following.lock().remove(&key) {
                f.stop.cancel();
            }
            let mut leading = self.leading.write();
            match leading.get(&key) {
                // The same leadership of the same log (a topic deleted and
                // made again under its name has a new log).
                Some(l) if l.leader_epoch == p.leader_epoch && Arc::ptr_eq(&l.log, &log) => {
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
                    if let Some(old) = leading.get(&key) {
                        old.depose();
                    }
                    leading.insert(
                        key.clone(),
                        Arc::new(Leadership {
                            me,
                            leader_epoch: p.leader_epoch,
                            created: Instant::now(),
                            deposed: Default::default(),
                            deposed_wake: Default::default(),
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
        if let Some(old) = self.leading.write().remove(&key) {
            old.depose();
        }
        let follows = p.replicas.contains(&me);
        let mut following = self.following.lock();
        let current = following
            .get(&key)
            .filter(|f| Arc::ptr_eq(&f.log, &log))
            .map(|f| (f.leader, f.leader_epoch));
        let wanted = p
            .leader
            .filter(|l| follows && *l != me)
            .map(|l| (l, p.leader_epoch));
        if current.is_some() && current == wanted {
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
                    log: Arc::clone(&log),
                },
            );
            tracing::info!(topic = %key.0, partition = key.1, leader, leader_epoch, "following");
            tokio::spawn(follow(
                Arc::downgrade(broker),
                Arc::clone(cluster),
                key,
                log,
                (leader, leader_epoch),
                stop,
                Arc::clone(&role_lock),
            ));
        }
    }
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
                // The controller makes `__consumer_offsets` as soon as
                // enough brokers are up, so that groups have coordinators
                // even while a broker is down later.
                if cluster.controller() == Some(cluster.node_id()) {
                    broker.internal_topic(crate::group::journal::TOPIC);
                }
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

    fn append(
        &self,
        req: AppendRequest,
        batch: bytes::Bytes,
    ) -> Pin<Box<dyn Future<Output = AppendReply> + Send + '_>> {
        Box::pin(async move {
            let Some(broker) = self.broker.upgrade() else {
                return AppendReply::NotLeader;
            };
            appends::append_led(&broker, &req.topic, req.partition, &batch).await
        })
    }

    fn coordinate(
        &self,
        call: crate::cluster::CoordinatorCall,
    ) -> Pin<Box<dyn Future<Output = crate::cluster::CoordinatorReply> + Send + '_>> {
        Box::pin(async move {
            let Some(broker) = self.broker.upgrade() else {
                return crate::cluster::CoordinatorReply::Code(
                    crate::protocol::errors::NOT_COORDINATOR,
                );
            };
            coordinate::serve(&broker, call).await
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
    l.follower_log_start(req.replica, req.log_start_offset);
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

/// A follower's loop: fetch from the leader, append what it sends, cut the
/// log where it diverged, until the role changes.
async fn follow(
    broker: Weak<Broker>,
    cluster: Arc<Cluster>,
    (topic, partition): Key,
    log: Arc<PartitionLog>,
    (leader, leader_epoch): (NodeId, i32),
    stop: CancellationToken,
    role_lock: Arc<Mutex<()>>,
) {
    let Some(addr) = cluster.peer_addr(leader) else {
        tracing::warn!(leader, "no controller address for the leader");
        return;
    };
    let me = cluster.node_id();
    let mut client = cluster.replica_client(addr);
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
            log_start_offset: log.log_start_offset(),
        };
        let reply = tokio::select! {
            () = stop.cancelled() => return,
            r = client.fetch(req) => r,
        };
        // Acts only while still this partition's follower of `leader`.
        let role = role_lock.lock();
        if stop.is_cancelled() {
            return;
        }
        let pause = match reply {
            Ok(FetchReply::Records {
                high_watermark,
                log_start_offset,
                records,
                ..
            }) => {
                failures = 0;
                let pause = if !records.is_empty() {
                    let mut appended = log.append_replica(&records, now_ms());
                    // Restarted at the leader's log start, which is inside
                    // a batch: start again at that batch's base, and take
                    // the same records.
                    if let Err(LogError::NonContiguous { expected, got }) = &appended {
                        if *got < *expected && log.log_start_offset() == log.end_offset() {
                            appended = log
                                .restart_at(*got)
                                .and_then(|()| log.append_replica(&records, now_ms()));
                        }
                    }
                    if let Err(e) = appended {
                        tracing::warn!(%topic, partition, error = %e, "could not append fetched records");
                        Some(Duration::from_millis(200))
                    } else {
                        log.set_high_watermark(high_watermark.min(log.end_offset()));
                        None
                    }
                } else {
                    log.set_high_watermark(high_watermark.min(log.end_offset()));
                    None
                };
                // The leader's log start moved (DeleteRecords): so does
                // this replica's, up to what it holds as committed.
                let start = log_start_offset.min(log.high_watermark());
                if start > log.log_start_offset() {
                    if let Err(e) = log.delete_records_before(start) {
                        tracing::warn!(%topic, partition, error = %e, "could not follow the leader's log start");
                    }
                }
                pause
            }
            Ok(FetchReply::Diverging { epoch, end_offset }) => {
                tracing::info!(%topic, partition, leader, epoch, end_offset, from = log.end_offset(), "log diverged from the leader's; truncating");
                // Kafka's rule: cut at the leader's end of that epoch or
                // this log's own, whichever is lower (this log may hold a
                // later epoch the leader never had over the same offsets).
                let own = log
                    .end_offset_for_epoch(epoch)
                    .map_or(log.log_start_offset(), |(_, end)| end);
                match log.truncate_to(end_offset.min(own)) {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::error!(%topic, partition, error = %e, "truncation failed");
                        Some(Duration::from_secs(1))
                    }
                }
            }
            Ok(FetchReply::OffsetOutOfRange { log_start_offset }) => {
                tracing::warn!(%topic, partition, leader, log_start_offset, end = log.end_offset(), "the leader no longer has this follower's next records; starting again at its log start");
                match log.restart_at(log_start_offset) {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::error!(%topic, partition, error = %e, "could not restart the log");
                        Some(Duration::from_secs(1))
                    }
                }
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
        drop(role);
        if let Some(p) = pause {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(p) => {}
            }
        }
    }
}
