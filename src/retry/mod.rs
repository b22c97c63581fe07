//! Broker-managed retries with exponential backoff, and dead-letter topics.
//!
//! A topic `T` opts in with `retry.max.attempts` = N > 0. Its companions are
//! `T.retry` (shared by every consumer of `T`), `T.retry.<group>` (one
//! consumer group's own, created on first use) and `T.dlq`. A record produced
//! to a retry topic is a hand-back: the broker does not append it there but
//! holds it durably in the [`store::PendingStore`] and appends it to the same
//! retry topic and partition when its backoff has passed, with header
//! `retry.attempt` = k. A hand-back whose attempt k would exceed N goes to
//! `T.dlq` at once with `dlq.reason`.
//!
//! Delivery is at-least-once: a record is marked delivered in the store only
//! after the append to the retry topic; a crash between the two delivers it
//! again after the restart. Nothing is delivered before its due time.

pub mod journal;
pub mod store;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::log::LogError;
use crate::topics::config::{
    RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MS, RETRY_BACKOFF_MULTIPLIER, RETRY_MAX_ATTEMPTS,
};
use crate::topics::{Registry, Topic, TopicError};
use store::{Held, PendingStore};

/// Suffix of the shared retry topic.
pub const RETRY_SUFFIX: &str = ".retry";
/// Suffix of the dead-letter topic.
pub const DLQ_SUFFIX: &str = ".dlq";

/// Attempt number of a redelivered record (ASCII decimal).
pub const H_ATTEMPT: &str = "retry.attempt";
/// Why a record is in the DLQ (`max-attempts`).
pub const H_DLQ_REASON: &str = "dlq.reason";
/// The consumer group of a group-scoped retry topic.
pub const H_GROUP: &str = "retry.group";
/// The topic the record was first consumed from (`T`).
pub const H_ORIGINAL_TOPIC: &str = "retry.original.topic";
/// Epoch ms when the broker received the record's first hand-back.
pub const H_FIRST_HANDBACK: &str = "retry.first.handback.ms";
/// Epoch ms when this attempt became due.
pub const H_DUE: &str = "retry.due.ms";
/// Epoch ms when the record was dead-lettered.
pub const H_DLQ_TIME: &str = "dlq.time.ms";

/// Where the batches the retry machinery builds (deliveries, dead letters,
/// redrives) are appended: the partition's log on a single node, through
/// the partition's leader in a cluster. Called from blocking threads.
pub trait Appender {
    /// Appends `batch` to `topic`-`partition` durably (as the fsync policy
    /// says) and, in a cluster, replicated to the in-sync replicas.
    ///
    /// # Errors
    /// Why the batch is not appended, in words.
    fn append(&self, topic: &str, partition: i32, batch: &Bytes, now: i64) -> Result<(), String>;

    /// Holds handed-back records durably until they are due: in the pending
    /// store on a single node, in the `__retry` journal in a cluster.
    ///
    /// # Errors
    /// Nothing is held then.
    fn hold(&self, held: &[Held], sync: bool) -> Result<(), RetryError>;
}

/// A single broker's [`Appender`]: straight to its own logs and pending
/// store.
pub struct Local<'a> {
    pub topics: &'a Registry,
    pub store: &'a PendingStore,
    pub sync: bool,
}

impl Appender for Local<'_> {
    fn hold(&self, held: &[Held], sync: bool) -> Result<(), RetryError> {
        Ok(self.store.hold(held, sync)?)
    }

    fn append(&self, topic: &str, partition: i32, batch: &Bytes, now: i64) -> Result<(), String> {
        let log = self
            .topics
            .get(topic)
            .and_then(|t| t.partition(partition))
            .ok_or_else(|| format!("no partition {topic}-{partition}"))?;
        log.append_internal(batch, now).map_err(|e| e.to_string())?;
        if self.sync {
            log.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The partition a companion's record goes to: the same index, or 0 when
/// the companion has fewer partitions.
fn target_partition(t: &Topic, partition: i32) -> Option<i32> {
    if t.partition(partition).is_some() {
        Some(partition)
    } else {
        t.partition(0).map(|_| 0)
    }
}

/// Most records handed to the log in one delivery round.
const DELIVERY_BATCH: usize = 500;

/// A topic's retry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub multiplier: f64,
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    /// Reads the policy from a topic's configs; `None` when retries are off.
    pub fn from_configs(configs: &BTreeMap<String, String>) -> Option<Self> {
        let get = |k: &str| configs.get(k).map(|v| v.trim().to_string());
        let max_attempts: u32 = get(RETRY_MAX_ATTEMPTS)?.parse().ok()?;
        if max_attempts == 0 {
            return None;
        }
        Some(Self {
            max_attempts,
            backoff_ms: get(RETRY_BACKOFF_MS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000),
            multiplier: get(RETRY_BACKOFF_MULTIPLIER)
                .and_then(|v| v.parse().ok())
                .filter(|m: &f64| m.is_finite() && *m >= 1.0)
                .unwrap_or(2.0),
            max_backoff_ms: get(RETRY_BACKOFF_MAX_MS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(3_600_000),
        })
    }

    /// Delay before attempt `k` (1-based): backoff × multiplier^(k−1), capped.
    pub fn delay_ms(&self, k: u32) -> u64 {
        let exp = f64::from(k.saturating_sub(1)).min(1000.0);
        let d = self.backoff_ms as f64 * self.multiplier.powf(exp);
        if !d.is_finite() || d >= self.max_backoff_ms as f64 {
            self.max_backoff_ms
        } else {
            d as u64
        }
    }
}

/// What a retry topic belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryRoute {
    /// The topic whose records are retried (`T`).
    pub base: String,
    /// The group of a group-scoped retry topic.
    pub group: Option<String>,
    pub policy: RetryPolicy,
}

impl RetryRoute {
    pub fn dlq_topic(&self) -> String {
        format!("{}{DLQ_SUFFIX}", self.base)
    }
}

/// Whether `name` is a retry topic of a retry-enabled topic: `T.retry` or
/// `T.retry.<group>` with `T` existing and `retry.max.attempts` > 0.
pub fn route_for(topics: &Registry, name: &str) -> Option<RetryRoute> {
    route_with(name, |base| topics.get(base).map(|t| t.configs()))
}

/// [`route_for`], with the base topics' configs from `configs_of` (in a
/// cluster, the quorum's metadata: the base may have no replica here).
pub fn route_with(
    name: &str,
    configs_of: impl Fn(&str) -> Option<BTreeMap<String, String>>,
) -> Option<RetryRoute> {
    let mut search = 0;
    while let Some(i) = name[search..].find(RETRY_SUFFIX) {
        let at = search + i;
        let base = &name[..at];
        let rest = &name[at + RETRY_SUFFIX.len()..];
        let group = if rest.is_empty() {
            Some(None)
        } else {
            rest.strip_prefix('.')
                .filter(|g| !g.is_empty())
                .map(|g| Some(g.to_string()))
        };
        if let (Some(group), Some(configs)) = (group, configs_of(base)) {
            if let Some(policy) = RetryPolicy::from_configs(&configs) {
                return Some(RetryRoute {
                    base: base.to_string(),
                    group,
                    policy,
                });
            }
        }
        search = at + 1;
    }
    None
}

/// Counters per base topic.
#[derive(Debug, Default)]
pub struct RetryCounters {
    pub scheduled: AtomicU64,
    pub delivered: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// Errors of a hand-back; each maps to a produce error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    #[error("failed to decode the handed-back records: {0}")]
    Decode(String),
    #[error(transparent)]
    Storage(#[from] LogError),
    #[error("dead-letter topic {0}: {1}")]
    Dlq(String, String),
    #[error("{0} due records could not be delivered; they stay scheduled")]
    Delivery(usize),
    /// In a cluster: the journal of held retries cannot take them now.
    #[error("held retries cannot be journaled now: {0}")]
    Unavailable(String),
}

/// Result of a hand-back.
#[derive(Debug, Clone, Copy, Default)]
pub struct HandBack {
    pub scheduled: u64,
    pub dead_lettered: u64,
}

/// The retry scheduler and its store.
#[derive(Debug)]
pub struct Retries {
    pub store: PendingStore,
    /// In a cluster: the schedules of the `__retry` partitions led here.
    pub journals: journal::Journals,
    /// Serialises hand-backs, so that an idempotent producer's sequence check,
    /// the hold and the sequence record are one step even across connections.
    pub handback_lock: tokio::sync::Mutex<()>,
    wake: Notify,
    counters: Mutex<BTreeMap<String, Arc<RetryCounters>>>,
}

fn header_str(h: &Option<Bytes>) -> Option<&str> {
    h.as_deref().and_then(|b| std::str::from_utf8(b).ok())
}

impl Retries {
    /// When the earliest held record is due (epoch ms), if any.
    pub fn next_due(&self) -> Option<i64> {
        self.store.next_due()
    }

    /// Woken when a record is held, so a sleeping scheduler looks again.
    pub fn held(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    pub fn new(store: PendingStore) -> Self {
        Self {
            store,
            journals: journal::Journals::default(),
            handback_lock: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            counters: Mutex::new(BTreeMap::new()),
        }
    }

    /// Held records: in the pending store, and in a cluster in the
    /// `__retry` partitions led here.
    pub fn pending(&self) -> u64 {
        self.store.pending() + self.journals.pending()
    }

    /// Counters of a base topic.
    pub fn counters(&self, base: &str) -> Arc<RetryCounters> {
        Arc::clone(self.counters.lock().entry(base.to_string()).or_default())
    }

    /// Every base topic's counters.
    pub fn all_counters(&self) -> Vec<(String, Arc<RetryCounters>)> {
        self.counters
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// Takes a produce to retry topic `retry_topic`, partition `partition`,
    /// received at `now`: holds each record for its next attempt, or
    /// dead-letters it.
    ///
    /// # Errors
    /// Undecodable records, storage errors; nothing is held then.
    #[allow(clippy::too_many_arguments)]
    pub fn hand_back(
        &self,
        (topics, out): (&Registry, &dyn Appender),
        route: &RetryRoute,
        retry_topic: &str,
        partition: i32,
        records: &[u8],
        sync: bool,
        now: i64,
    ) -> Result<HandBack, RetryError> {
        let sets = crate::log::records::decode_all(&Bytes::copy_from_slice(records))
            .map_err(|e| RetryError::Decode(format!("{e:#}")))?;
        let mut held = Vec::new();
        let mut dead = Vec::new();
        for r in sets.into_iter().flat_map(|s| s.records) {
            if r.control {
                continue;
            }
            let attempt_in = r
                .headers
                .get(H_ATTEMPT.as_bytes())
                .and_then(header_str)
                .and_then(|s| s.trim().parse::<u32>().ok())
                .unwrap_or(0);
            let k = attempt_in.saturating_add(1);
            if k > route.policy.max_attempts {
                let mut headers: Vec<(String, Option<Bytes>)> = r
                    .headers
                    .iter()
                    .filter(|(n, _)| !matches!(n.as_str(), H_DLQ_REASON | H_GROUP | H_DLQ_TIME))
                    .map(|(n, v)| (n.to_string(), v.clone()))
                    .collect();
                headers.push((
                    H_DLQ_REASON.into(),
                    Some(Bytes::from_static(b"max-attempts")),
                ));
                headers.push((H_DLQ_TIME.into(), Some(Bytes::from(now.to_string()))));
                if let Some(g) = &route.group {
                    headers.push((H_GROUP.into(), Some(Bytes::from(g.clone()))));
                }
                if !r.headers.contains_key(H_ORIGINAL_TOPIC.as_bytes()) {
                    headers.push((
                        H_ORIGINAL_TOPIC.into(),
                        Some(Bytes::from(route.base.clone())),
                    ));
                }
                dead.push((r.timestamp, r.key.clone(), r.value.clone(), headers));
                continue;
            }
            let due = now.saturating_add(route.policy.delay_ms(k) as i64);
            let first = r
                .headers
                .get(H_FIRST_HANDBACK.as_bytes())
                .and_then(header_str)
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(now);
            let mut headers: Vec<(String, Option<Bytes>)> = r
                .headers
                .iter()
                .filter(|(n, _)| {
                    !matches!(
                        n.as_str(),
                        H_ATTEMPT | H_FIRST_HANDBACK | H_DUE | H_ORIGINAL_TOPIC
                    )
                })
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect();
            headers.push((H_ATTEMPT.into(), Some(Bytes::from(k.to_string()))));
            headers.push((
                H_ORIGINAL_TOPIC.into(),
                Some(Bytes::from(route.base.clone())),
            ));
            headers.push((
                H_FIRST_HANDBACK.into(),
                Some(Bytes::from(first.to_string())),
            ));
            headers.push((H_DUE.into(), Some(Bytes::from(due.to_string()))));
            held.push(Held {
                due_ms: due,
                topic: retry_topic.to_string(),
                partition,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers,
            });
        }
        let counters = self.counters(&route.base);
        // Held records first: if the dead-letter append then fails, the
        // producer's retry may hold them again (at-least-once), but dead
        // letters are never written twice for one acknowledged hand-back.
        if !held.is_empty() {
            out.hold(&held, sync)?;
            counters
                .scheduled
                .fetch_add(held.len() as u64, Ordering::Relaxed);
            self.wake.notify_one();
        }
        if !dead.is_empty() {
            let dlq = route.dlq_topic();
            let topic = companion(topics, &dlq, &route.base)
                .map_err(|e| RetryError::Dlq(dlq.clone(), e.to_string()))?;
            let p = target_partition(&topic, partition)
                .ok_or_else(|| RetryError::Dlq(dlq.clone(), "no partition".into()))?;
            let batch = encode_batch(dead.iter().map(|(ts, k, v, h)| (*ts, k, v, h)))?;
            out.append(&dlq, p, &batch, now)
                .map_err(|e| RetryError::Dlq(dlq.clone(), e))?;
            counters
                .dead_lettered
                .fetch_add(dead.len() as u64, Ordering::Relaxed);
        }
        Ok(HandBack {
            scheduled: held.len() as u64,
            dead_lettered: dead.len() as u64,
        })
    }

    /// Appends every record due at `now` to its retry topic, then marks it
    /// done.
    ///
    /// # Errors
    /// Storage errors; undelivered records stay scheduled.
    pub fn deliver_due(
        &self,
        topics: &Registry,
        out: &dyn Appender,
        sync: bool,
        now: i64,
    ) -> Result<usize, RetryError> {
        let taken = self.store.take_due(now, DELIVERY_BATCH)?;
        if taken.is_empty() {
            return Ok(0);
        }
        let mut by_target: BTreeMap<(String, i32), Vec<&(u64, Held)>> = BTreeMap::new();
        for t in &taken {
            by_target
                .entry((t.1.topic.clone(), t.1.partition))
                .or_default()
                .push(t);
        }
        let mut done = Vec::with_capacity(taken.len());
        let mut failed: Vec<(u64, Held)> = Vec::new();
        for ((topic, partition), items) in by_target {
            let base = route_for(topics, &topic).map(|r| r.base);
            let target = topics
                .get(&topic)
                .and_then(|t| target_partition(&t, partition));
            let Some(target) = target else {
                tracing::warn!(topic = %topic, partition, records = items.len(), "retry topic is gone; held records dropped");
                done.extend(items.iter().map(|(p, _)| *p));
                continue;
            };
            let batch = encode_batch(
                items
                    .iter()
                    .map(|(_, h)| (h.timestamp, &h.key, &h.value, &h.headers)),
            );
            let appended = batch
                .map_err(|e| e.to_string())
                .and_then(|b| out.append(&topic, target, &b, now));
            match appended {
                Ok(()) => {
                    done.extend(items.iter().map(|(p, _)| *p));
                    let name = base.unwrap_or_else(|| topic.clone());
                    self.counters(&name)
                        .delivered
                        .fetch_add(items.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(topic = %topic, partition, error = %e, "failed to deliver retries");
                    failed.extend(items.into_iter().cloned());
                }
            }
        }
        let failed_n = failed.len();
        self.store.reschedule(&failed);
        self.store.mark_done(&done, sync)?;
        if failed_n > 0 {
            return Err(RetryError::Delivery(failed_n));
        }
        Ok(done.len())
    }
}

/// Encodes records as one uncompressed v2 batch (offsets from 0, stamped by
/// the log on append).
pub(crate) fn encode_batch<'a>(
    records: impl Iterator<
        Item = (
            i64,
            &'a Option<Bytes>,
            &'a Option<Bytes>,
            &'a Vec<(String, Option<Bytes>)>,
        ),
    >,
) -> Result<Bytes, LogError> {
    let recs: Vec<_> = records
        .enumerate()
        .map(|(i, (ts, k, v, h))| {
            crate::log::records::plain_record(i as i64, ts, k.clone(), v.clone(), h)
        })
        .collect();
    crate::log::records::encode_batch(&recs, Compression::None).map_err(|e| LogError::Io {
        context: "failed to encode a retry batch".into(),
        source: std::io::Error::other(format!("{e:#}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(n: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: n,
            backoff_ms: 1000,
            multiplier: 2.0,
            max_backoff_ms: 5000,
        }
    }

    #[test]
    fn many_records_encode_as_one_valid_batch() {
        let headers = vec![("a".to_string(), Some(Bytes::from_static(b"1")))];
        let keys: Vec<Option<Bytes>> = (0..50)
            .map(|i| Some(Bytes::from(format!("k{i}"))))
            .collect();
        let b = encode_batch(keys.iter().map(|k| (5i64, k, k, &headers))).unwrap();
        let batches = crate::log::batch::split_batches(&b).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].1.records_count, 50);
        assert_eq!(batches[0].1.base_sequence, -1);
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let p = policy(10);
        assert_eq!(p.delay_ms(1), 1000);
        assert_eq!(p.delay_ms(2), 2000);
        assert_eq!(p.delay_ms(3), 4000);
        assert_eq!(p.delay_ms(4), 5000);
        assert_eq!(p.delay_ms(200), 5000);
    }

    #[test]
    fn policies_come_from_topic_configs() {
        let mut c = BTreeMap::new();
        assert!(RetryPolicy::from_configs(&c).is_none());
        c.insert(RETRY_MAX_ATTEMPTS.to_string(), "3".to_string());
        c.insert(RETRY_BACKOFF_MULTIPLIER.to_string(), "1.5".to_string());
        let p = RetryPolicy::from_configs(&c).unwrap();
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.backoff_ms, 1000);
        assert!((p.multiplier - 1.5).abs() < f64::EPSILON);
        c.insert(RETRY_MAX_ATTEMPTS.to_string(), "0".to_string());
        assert!(RetryPolicy::from_configs(&c).is_none());
    }
}

/// Timestamp, key, value and headers of a record to re-encode.
type OwnedRecord = (
    i64,
    Option<Bytes>,
    Option<Bytes>,
    Vec<(String, Option<Bytes>)>,
);

/// One dead-lettered record, as the DLQ listing shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DlqRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    /// True when key/value were not UTF-8 and are shown hex-encoded.
    pub hex: bool,
    pub headers: Vec<(String, Option<String>)>,
}

/// Where redriven records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RedriveTarget {
    /// The retry topic the record came from (`T.retry` or `T.retry.<group>`).
    #[default]
    Retry,
    /// The original topic `T`.
    Topic,
}

fn show(b: &Option<Bytes>, hex: &mut bool) -> Option<String> {
    b.as_ref().map(|b| match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => {
            *hex = true;
            b.iter().map(|x| format!("{x:02x}")).collect()
        }
    })
}

/// Reads the records of `log` from `from` up to `to` (exclusive), at most `limit`.
fn read_records(
    log: &crate::log::PartitionLog,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<Record>, RetryError> {
    let mut out = Vec::new();
    let mut offset = from.max(log.log_start_offset());
    let end = to.min(log.end_offset());
    while offset < end && out.len() < limit {
        let r = log.read(offset, 1 << 20, true)?;
        if r.records.is_empty() {
            break;
        }
        let sets = crate::log::records::decode_all(&r.records)
            .map_err(|e| RetryError::Decode(format!("{e:#}")))?;
        let mut advanced = false;
        for rec in sets.into_iter().flat_map(|s| s.records) {
            if rec.offset < offset || rec.control {
                continue;
            }
            if rec.offset >= end || out.len() >= limit {
                return Ok(out);
            }
            offset = rec.offset + 1;
            advanced = true;
            out.push(rec);
        }
        if !advanced {
            break;
        }
    }
    Ok(out)
}

/// Lists records of `T.dlq` (`base` = T).
///
/// # Errors
/// Unknown DLQ, storage or decode errors.
pub fn dlq_list(
    topics: &Registry,
    base: &str,
    partition: Option<i32>,
    from: i64,
    limit: usize,
) -> Result<Vec<DlqRecord>, RetryError> {
    let name = format!("{base}{DLQ_SUFFIX}");
    let topic = topics
        .get(&name)
        .ok_or_else(|| RetryError::Dlq(name.clone(), "no such topic".into()))?;
    let mut out = Vec::new();
    for (p, log) in topic.partitions().iter().enumerate() {
        let p = p as i32;
        if partition.is_some_and(|x| x != p) {
            continue;
        }
        for r in read_records(log, from, i64::MAX, limit.saturating_sub(out.len()))? {
            let mut hex = false;
            let key = show(&r.key, &mut hex);
            let value = show(&r.value, &mut hex);
            let headers = r
                .headers
                .iter()
                .map(|(k, v)| {
                    let mut h = false;
                    (k.to_string(), show(v, &mut h))
                })
                .collect();
            out.push(DlqRecord {
                partition: p,
                offset: r.offset,
                timestamp: r.timestamp,
                key,
                value,
                hex,
                headers,
            });
        }
    }
    Ok(out)
}

/// Moves records of `T.dlq` back: to the retry topic each came from (its
/// group's, from the `retry.group` header) with attempts reset, or to `T`.
/// The DLQ itself is an append-only log and keeps them. Returns how many
/// records were redriven.
///
/// # Errors
/// Unknown DLQ, storage or decode errors.
pub fn dlq_redrive(
    (topics, out): (&Registry, &dyn Appender),
    base: &str,
    partition: Option<i32>,
    from: i64,
    to: i64,
    target: RedriveTarget,
) -> Result<u64, RetryError> {
    let name = format!("{base}{DLQ_SUFFIX}");
    let topic = topics
        .get(&name)
        .ok_or_else(|| RetryError::Dlq(name.clone(), "no such topic".into()))?;
    let mut moved = 0u64;
    let now = now_ms();
    for (p, log) in topic.partitions().iter().enumerate() {
        let p = p as i32;
        if partition.is_some_and(|x| x != p) {
            continue;
        }
        let records = read_records(log, from, to, usize::MAX)?;
        let mut by_target: BTreeMap<String, Vec<OwnedRecord>> = BTreeMap::new();
        for r in records {
            let group = r
                .headers
                .get(H_GROUP.as_bytes())
                .and_then(header_str)
                .map(str::to_string);
            let dest = match (target, group) {
                (RedriveTarget::Topic, _) => base.to_string(),
                (RedriveTarget::Retry, Some(g)) => format!("{base}{RETRY_SUFFIX}.{g}"),
                (RedriveTarget::Retry, None) => format!("{base}{RETRY_SUFFIX}"),
            };
            let headers = r
                .headers
                .iter()
                .filter(|(k, _)| {
                    let k = k.as_str();
                    k != H_ATTEMPT
                        && k != H_DLQ_REASON
                        && k != H_DLQ_TIME
                        && k != H_DUE
                        && !(target == RedriveTarget::Topic && k.starts_with("retry."))
                })
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            by_target
                .entry(dest)
                .or_default()
                .push((r.timestamp, r.key, r.value, headers));
        }
        for (dest, recs) in by_target {
            let t = if dest == base {
                topics
                    .get(base)
                    .ok_or_else(|| RetryError::Dlq(dest.clone(), "no such topic".into()))?
            } else {
                companion(topics, &dest, base)
                    .map_err(|e| RetryError::Dlq(dest.clone(), e.to_string()))?
            };
            let target = target_partition(&t, p)
                .ok_or_else(|| RetryError::Dlq(dest.clone(), "no partition".into()))?;
            for chunk in recs.chunks(DELIVERY_BATCH) {
                let batch = encode_batch(chunk.iter().map(|(ts, k, v, h)| (*ts, k, v, h)))?;
                out.append(&dest, target, &batch, now)
                    .map_err(|e| RetryError::Dlq(dest.clone(), e))?;
                moved += chunk.len() as u64;
            }
        }
    }
    tracing::info!(
        topic = base,
        records = moved,
        ?target,
        "redrove dead-lettered records"
    );
    Ok(moved)
}

/// Companion topic `name` (a retry topic or the DLQ) of `base`, created on
/// first use with `base`'s partition count.
///
/// # Errors
/// `base` is gone, or the topic cannot be created.
pub fn companion(topics: &Registry, name: &str, base: &str) -> Result<Arc<Topic>, TopicError> {
    if let Some(t) = topics.get(name) {
        return Ok(t);
    }
    let b = topics
        .get(base)
        .ok_or_else(|| TopicError::Unknown(base.to_string()))?;
    match topics.create(name, b.partition_count(), -1, Default::default(), now_ms()) {
        Ok(t) => {
            tracing::info!(topic = name, base, "created retry companion topic");
            Ok(t)
        }
        Err(TopicError::AlreadyExists(_)) => topics
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string())),
        Err(e) => Err(e),
    }
}

/// When `base` has retries on: makes sure `T.retry` and `T.dlq` exist and
/// that every companion has at least `base`'s partition count.
///
/// # Errors
/// A companion that cannot be created or grown.
pub fn sync_companions(topics: &Registry, base: &str) -> Result<(), TopicError> {
    let Some(t) = topics.get(base) else {
        return Ok(());
    };
    let parts = t.partition_count();
    if RetryPolicy::from_configs(&t.configs()).is_some() {
        for suffix in [RETRY_SUFFIX, DLQ_SUFFIX] {
            companion(topics, &format!("{base}{suffix}"), base)?;
        }
    }
    let prefix = format!("{base}{RETRY_SUFFIX}");
    for c in topics.list() {
        let is_companion = c.name == format!("{base}{DLQ_SUFFIX}")
            || c.name == prefix
            || c.name
                .strip_prefix(&prefix)
                .is_some_and(|r| r.starts_with('.'));
        if is_companion && c.partition_count() < parts {
            topics.create_partitions(&c.name, parts, false, now_ms())?;
        }
    }
    Ok(())
}
