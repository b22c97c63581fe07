//! Batches the brokers build themselves (retry deliveries, dead letters,
//! redrives, held retries), appended through each partition's leader; and
//! in a cluster the scheduler of the held retries journaled in `__retry`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::broker::{now_ms, Broker};
use crate::cluster::{AppendReply, Cluster};
use crate::retry::journal;
use crate::retry::store::Held;
use crate::retry::RetryError;

/// How long a batch the brokers built waits for the in-sync replicas.
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Appends a batch the brokers built to a partition this broker leads, and
/// waits until it is durable (as `--fsync` says) and held by every in-sync
/// replica.
pub(super) async fn append_led(
    broker: &Broker,
    topic: &str,
    partition: i32,
    batch: &[u8],
) -> AppendReply {
    let Some(l) = broker.replicas.leadership(topic, partition) else {
        return AppendReply::NotLeader;
    };
    let log = l.log();
    let info = match log.append_internal(batch, now_ms()) {
        Ok(i) => i,
        Err(e) => return AppendReply::Error(e.to_string()),
    };
    l.appended();
    let upto = info.last_offset + 1;
    let sync = broker.config.args.fsync != crate::config::FsyncPolicy::Never;
    let flushed = async {
        if sync {
            log.flush_to(upto).await.map_err(|e| e.to_string())
        } else {
            Ok(())
        }
    };
    let (flushed, replicated) =
        futures::future::join(flushed, l.committed(upto, APPEND_TIMEOUT)).await;
    match (flushed, replicated) {
        (Err(e), _) => AppendReply::Error(e),
        (Ok(()), Ok(())) => AppendReply::Appended,
        (Ok(()), Err(crate::replicas::Unreplicated::Deposed)) => AppendReply::NotLeader,
        (Ok(()), Err(crate::replicas::Unreplicated::TimedOut)) => {
            AppendReply::Error("the in-sync replicas did not confirm in time".into())
        }
    }
}

/// Appends a batch the brokers built through the partition's leader: here
/// when this broker leads it, else over the leader's controller listener.
///
/// # Errors
/// No leader, or the leader's failure, in words.
pub async fn append_at_leader(
    broker: &Broker,
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    batch: &[u8],
) -> Result<(), String> {
    let reply = if broker.replicas.leadership(topic, partition).is_some() {
        append_led(broker, topic, partition, batch).await
    } else {
        let leader = cluster.with_metadata(|m| {
            m.topics
                .get(topic)
                .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
                .and_then(|p| p.leader)
        });
        let Some(addr) = leader.and_then(|l| cluster.peer_addr(l)) else {
            return Err(format!("{topic}-{partition} has no leader"));
        };
        cluster.deliver(&addr, topic, partition, batch).await?
    };
    match reply {
        AppendReply::Appended => Ok(()),
        AppendReply::NotLeader => Err(format!("{topic}-{partition}: the leader moved")),
        AppendReply::Error(e) => Err(e),
    }
}

/// A cluster's [`crate::retry::Appender`]: every batch goes through its
/// partition's leader. Used from blocking threads.
pub struct ViaLeader {
    broker: Arc<Broker>,
    cluster: Arc<Cluster>,
    runtime: tokio::runtime::Handle,
}

impl crate::retry::Appender for ViaLeader {
    fn append(
        &self,
        topic: &str,
        partition: i32,
        batch: &bytes::Bytes,
        _now: i64,
    ) -> Result<(), String> {
        self.runtime.block_on(append_at_leader(
            &self.broker,
            &self.cluster,
            topic,
            partition,
            batch,
        ))
    }

    /// Journals the records in `__retry`, each in the partition of its
    /// target, through that partition's leader.
    fn hold(&self, held: &[Held], _sync: bool) -> Result<(), RetryError> {
        let Some(n) = self.broker.internal_topic(journal::TOPIC) else {
            return Err(RetryError::Unavailable(format!(
                "{} is being made",
                journal::TOPIC
            )));
        };
        let mut by_part: BTreeMap<i32, Vec<&Held>> = BTreeMap::new();
        for h in held {
            by_part
                .entry(journal::partition_for(&h.topic, h.partition, n))
                .or_default()
                .push(h);
        }
        for (q, records) in by_part {
            let batch = journal::encode_held(&records, now_ms())
                .map_err(|e| RetryError::Unavailable(e.to_string()))?;
            self.runtime
                .block_on(append_at_leader(
                    &self.broker,
                    &self.cluster,
                    journal::TOPIC,
                    q,
                    &batch,
                ))
                .map_err(RetryError::Unavailable)?;
        }
        Ok(())
    }
}

/// Where the retry machinery appends on this broker: its own logs on a
/// single node, each partition's leader in a cluster. Call it on the
/// runtime; use the result on a blocking thread.
pub fn appender(broker: &Arc<Broker>) -> Box<dyn crate::retry::Appender + Send + Sync> {
    match broker.cluster.get() {
        Some(c) => Box::new(ViaLeader {
            broker: Arc::clone(broker),
            cluster: Arc::clone(c),
            runtime: tokio::runtime::Handle::current(),
        }),
        None => Box::new(LocalLogs {
            broker: Arc::clone(broker),
        }),
    }
}

/// A single broker's appender, owning its handle on the broker.
struct LocalLogs {
    broker: Arc<Broker>,
}

impl crate::retry::Appender for LocalLogs {
    fn append(
        &self,
        topic: &str,
        partition: i32,
        batch: &bytes::Bytes,
        now: i64,
    ) -> Result<(), String> {
        self.local().append(topic, partition, batch, now)
    }

    fn hold(&self, held: &[Held], sync: bool) -> Result<(), RetryError> {
        self.local().hold(held, sync)
    }
}

impl LocalLogs {
    fn local(&self) -> crate::retry::Local<'_> {
        crate::retry::Local {
            topics: &self.broker.topics,
            store: &self.broker.retries.store,
            sync: self.broker.config.args.fsync != crate::config::FsyncPolicy::Never,
        }
    }
}

/// Most held records delivered from one `__retry` partition per round.
const DELIVERY_BATCH: usize = 500;

/// In a cluster: delivers the held retries of the `__retry` partitions this
/// broker leads as they fall due, until the quorum stops.
pub async fn run_retries(broker: Arc<Broker>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cluster.stopped() => return,
            _ = tick.tick() => {}
        }
        let Some(n) =
            cluster.with_metadata(|m| m.topics.get(journal::TOPIC).map(|t| t.partitions.len()))
        else {
            continue;
        };
        let mut led = HashSet::new();
        let mut pending = 0u64;
        for q in 0..n as i32 {
            let Some(l) = broker.replicas.leadership(journal::TOPIC, q) else {
                continue;
            };
            led.insert(q);
            let schedule = broker.retries.journals.schedule(q);
            let mut s = schedule.lock().await;
            if let Err(e) = s.follow(l.log(), l.leader_epoch) {
                tracing::error!(partition = q, error = %e, "cannot read the held retries");
                continue;
            }
            if s.next_due().is_some_and(|d| d <= now_ms()) {
                deliver(&broker, &cluster, q, &l, &mut s).await;
            }
            pending += s.pending() as u64;
        }
        broker.retries.journals.retain(&led);
        broker.retries.journals.set_pending(pending);
    }
}

/// Delivers what is due in `__retry` partition `q`, then marks it done.
async fn deliver(
    broker: &Arc<Broker>,
    cluster: &Arc<Cluster>,
    q: i32,
    l: &crate::replicas::Leadership,
    s: &mut journal::Schedule,
) {
    let now = now_ms();
    let taken = s.take_due(now, DELIVERY_BATCH);
    if taken.is_empty() {
        return;
    }
    let held = match journal::read_held(l.log(), &taken) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(partition = q, error = %e, "cannot read held retries back");
            s.put_back(&taken, now + 1000);
            return;
        }
    };
    let mut by_target: BTreeMap<(String, i32), Vec<(i64, Held)>> = BTreeMap::new();
    for (offset, h) in held {
        by_target
            .entry((h.topic.clone(), h.partition))
            .or_default()
            .push((offset, h));
    }
    let mut done = Vec::new();
    for ((topic, partition), items) in by_target {
        let offsets: Vec<i64> = items.iter().map(|(o, _)| *o).collect();
        let target = cluster.with_metadata(|m| {
            m.topics.get(&topic).map(|t| {
                if (partition as usize) < t.partitions.len() {
                    partition
                } else {
                    0
                }
            })
        });
        let Some(target) = target else {
            tracing::warn!(topic = %topic, partition, records = items.len(), "retry topic is gone; held records dropped");
            done.extend(offsets);
            continue;
        };
        let batch = crate::retry::encode_batch(
            items
                .iter()
                .map(|(_, h)| (h.timestamp, &h.key, &h.value, &h.headers)),
        );
        let appended = match batch {
            Ok(b) => append_at_leader(broker, cluster, &topic, target, &b).await,
            Err(e) => Err(e.to_string()),
        };
        match appended {
            Ok(()) => {
                let base = broker
                    .retry_route(&topic)
                    .map_or_else(|| topic.clone(), |r| r.base);
                broker
                    .retries
                    .counters(&base)
                    .delivered
                    .fetch_add(items.len() as u64, std::sync::atomic::Ordering::Relaxed);
                done.extend(offsets);
            }
            Err(e) => {
                tracing::warn!(topic = %topic, partition, error = %e, "held retries not delivered yet");
                s.put_back(&offsets, now + 1000);
            }
        }
    }
    if done.is_empty() {
        return;
    }
    let marked = match journal::encode_done(&done, now) {
        Ok(b) => append_led(broker, journal::TOPIC, q, &b).await,
        Err(e) => AppendReply::Error(e.to_string()),
    };
    if marked != AppendReply::Appended {
        // Delivered but not marked: the next leader delivers them again
        // (at-least-once). This one does not.
        tracing::warn!(partition = q, reply = ?marked, "delivered retries not marked done");
    }
}
