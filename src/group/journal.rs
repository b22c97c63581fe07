//! Committed offsets in a cluster: journaled in the replicated internal
//! topic `__consumer_offsets`, Kafka's way.
//!
//! A group belongs to one partition of that topic (Kafka's
//! `abs(groupId.hashCode) % partitions`), and the partition's leader is the
//! group's coordinator. A commit is appended to the partition as records in
//! Kafka's own layout (offset-commit key v1, value v3; a group's deletion is
//! a group-metadata key v2 with a null value) and is answered once the high
//! watermark passes it, so every in-sync replica holds it. A broker that
//! becomes the partition's leader replays the partition before it answers
//! for its groups (`COORDINATOR_LOAD_IN_PROGRESS` meanwhile), and forgets
//! the groups it coordinated at an earlier epoch, since their members and
//! offsets may have moved on elsewhere.
//!
//! The journal only appends: the log cleaner leaves the broker's journals
//! alone, so the partition grows with every commit (its `cleanup.policy` is `compact`, so
//! time-based retention never deletes offsets that are still live).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;

use super::offsets::{Change, Committed, OffsetStore};
use crate::log::records::{decode_all, encode_batch, plain_record, whole_batches};
use crate::replicas::{Leadership, Unreplicated};

/// The internal topic that holds committed offsets in a cluster.
pub const TOPIC: &str = "__consumer_offsets";

/// Key versions of Kafka's `__consumer_offsets` records.
const KEY_OFFSET_COMMIT: i16 = 1;
const KEY_GROUP_METADATA: i16 = 2;
/// A consumer group's state (KIP-848), as weir records it: the group id
/// as key, the whole state ([`super::consumer`]) as value. Kafka's own
/// consumer-group keys are versions 3 to 8; this one is far above them.
const KEY_WEIR_GROUP_STATE: i16 = 0x5747;
/// The offset-commit value version written (with a leader epoch).
const VALUE_OFFSET_COMMIT: i16 = 3;

/// Bytes read from the partition at a time while loading.
const LOAD_CHUNK: usize = 1 << 20;

/// Why a group cannot be served here now, as a Kafka error code.
pub use crate::protocol::errors::{
    COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
};

/// The partition of `__consumer_offsets` a group belongs to: Java's
/// `String.hashCode` of the group id, made non-negative, modulo the
/// partition count, as Kafka computes it.
pub fn partition_for(group: &str, partitions: usize) -> i32 {
    let h = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let n = partitions.max(1) as i64;
    (i64::from(h & 0x7fff_ffff) % n) as i32
}

fn put_str(out: &mut BytesMut, s: &str) {
    let b = s.as_bytes();
    out.put_i16(b.len().min(i16::MAX as usize) as i16);
    out.put_slice(&b[..b.len().min(i16::MAX as usize)]);
}

fn get_str(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let len = b.get_i16();
    if len < 0 {
        return Some(String::new());
    }
    let len = len as usize;
    if b.remaining() < len {
        return None;
    }
    String::from_utf8(b.split_to(len).to_vec()).ok()
}

/// One change as a `__consumer_offsets` record: (key, value).
fn record_of(change: &Change) -> (Bytes, Option<Bytes>) {
    let mut key = BytesMut::new();
    match change {
        Change::Commit {
            group,
            topic,
            partition,
            committed,
        } => {
            key.put_i16(KEY_OFFSET_COMMIT);
            put_str(&mut key, group);
            put_str(&mut key, topic);
            key.put_i32(*partition);
            let mut value = BytesMut::new();
            value.put_i16(VALUE_OFFSET_COMMIT);
            value.put_i64(committed.offset);
            value.put_i32(committed.leader_epoch);
            put_str(&mut value, committed.metadata.as_deref().unwrap_or(""));
            value.put_i64(committed.commit_time_ms);
            (key.freeze(), Some(value.freeze()))
        }
        Change::DeleteOffset {
            group,
            topic,
            partition,
        } => {
            key.put_i16(KEY_OFFSET_COMMIT);
            put_str(&mut key, group);
            put_str(&mut key, topic);
            key.put_i32(*partition);
            (key.freeze(), None)
        }
        Change::DeleteGroup { group } => {
            key.put_i16(KEY_GROUP_METADATA);
            put_str(&mut key, group);
            (key.freeze(), None)
        }
        Change::GroupState { group, state } => {
            key.put_i16(KEY_WEIR_GROUP_STATE);
            put_str(&mut key, group);
            (key.freeze(), state.clone())
        }
    }
}

/// The change one `__consumer_offsets` record says, if it is one this
/// journal acts on (group-metadata values are not: membership is rebuilt by
/// the members rejoining).
fn change_of(key: Option<&Bytes>, value: Option<&Bytes>) -> Option<Change> {
    let mut k = key?.clone();
    if k.remaining() < 2 {
        return None;
    }
    match k.get_i16() {
        0 | KEY_OFFSET_COMMIT => {
            let group = get_str(&mut k)?;
            let topic = get_str(&mut k)?;
            if k.remaining() < 4 {
                return None;
            }
            let partition = k.get_i32();
            let Some(v) = value else {
                return Some(Change::DeleteOffset {
                    group,
                    topic,
                    partition,
                });
            };
            let mut v = v.clone();
            if v.remaining() < 2 + 8 {
                return None;
            }
            let version = v.get_i16();
            let offset = v.get_i64();
            let leader_epoch = if version >= 3 && v.remaining() >= 4 {
                v.get_i32()
            } else {
                -1
            };
            let metadata = get_str(&mut v)?;
            let commit_time_ms = if v.remaining() >= 8 { v.get_i64() } else { -1 };
            Some(Change::Commit {
                group,
                topic,
                partition,
                committed: Committed {
                    offset,
                    leader_epoch,
                    metadata: Some(metadata),
                    commit_time_ms,
                },
            })
        }
        KEY_GROUP_METADATA if value.is_none() => Some(Change::DeleteGroup {
            group: get_str(&mut k)?,
        }),
        KEY_WEIR_GROUP_STATE => Some(Change::GroupState {
            group: get_str(&mut k)?,
            state: value.cloned(),
        }),
        _ => None,
    }
}

/// `changes` as one batch of `__consumer_offsets` records.
///
/// # Errors
/// The encoder's error.
pub fn encode(changes: &[Change], now_ms: i64) -> anyhow::Result<Bytes> {
    let records: Vec<_> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (key, value) = record_of(c);
            plain_record(i as i64, now_ms, Some(key), value, &[])
        })
        .collect();
    encode_batch(&records, kafka_protocol::records::Compression::None)
}

/// The changes in whole batches of `__consumer_offsets` records, and the
/// offset after the last whole batch (a read may end inside one).
///
/// # Errors
/// A batch that does not decode.
pub fn decode(bytes: &Bytes) -> anyhow::Result<(Vec<Change>, Option<i64>)> {
    let (whole, next) = whole_batches(bytes);
    let mut out = Vec::new();
    for set in decode_all(&whole)? {
        for r in &set.records {
            if r.control {
                continue;
            }
            out.extend(change_of(r.key.as_ref(), r.value.as_ref()));
        }
    }
    Ok((out, next))
}

/// This broker's state for one partition of `__consumer_offsets`.
#[derive(Debug, Default)]
struct Journal {
    /// The leader epoch whose groups are loaded here; -1 for none.
    loaded: AtomicI32,
    /// Held while the partition is loaded, and while a commit is appended
    /// (so appends and the order they apply in agree).
    load: tokio::sync::Mutex<()>,
    /// Appended changes not yet applied: they apply in log order once the
    /// high watermark passes them, so readers never see an offset that a
    /// failover could take back.
    pending: Mutex<VecDeque<(i64, Vec<Change>)>>,
}

/// The coordinator's journals, one per partition of `__consumer_offsets`.
#[derive(Debug, Default)]
pub struct Journals {
    parts: Mutex<HashMap<i32, Arc<Journal>>>,
}

impl Journals {
    fn get(&self, partition: i32) -> Arc<Journal> {
        Arc::clone(self.parts.lock().entry(partition).or_insert_with(|| {
            Arc::new(Journal {
                loaded: AtomicI32::new(-1),
                ..Journal::default()
            })
        }))
    }

    /// Whether this broker serves the groups of `partition` at `epoch`.
    pub fn is_loaded(&self, partition: i32, epoch: i32) -> bool {
        self.parts
            .lock()
            .get(&partition)
            .is_some_and(|j| j.loaded.load(Ordering::Acquire) == epoch)
    }
}

/// Names the groups to drop.
pub type Which<'a> = &'a dyn Fn(&str) -> bool;

/// What a journal reads and writes besides its partition: the offsets it
/// loads into, and how to forget the members of groups it stops serving.
pub struct Memory<'a> {
    pub offsets: &'a OffsetStore,
    pub forget: &'a (dyn Fn(Which<'_>) + Sync),
}

impl Journals {
    /// Readies this broker to coordinate the groups of offsets partition
    /// `partition` (of `partitions`), which it leads under `l`: at a new
    /// leader epoch the partition is replayed first.
    ///
    /// # Errors
    /// `NOT_COORDINATOR` when the leadership ended;
    /// `COORDINATOR_NOT_AVAILABLE` when the partition cannot be read.
    pub async fn ensure_loaded(
        &self,
        partition: i32,
        partitions: usize,
        l: &Leadership,
        memory: Memory<'_>,
    ) -> Result<(), i16> {
        let j = self.get(partition);
        if j.loaded.load(Ordering::Acquire) == l.leader_epoch {
            return Ok(());
        }
        let _load = j.load.lock().await;
        if j.loaded.load(Ordering::Acquire) == l.leader_epoch {
            return Ok(());
        }
        let mine = |g: &str| partition_for(g, partitions) == partition;
        // What an earlier leadership here knew is stale now.
        j.loaded.store(-1, Ordering::Release);
        j.pending.lock().clear();
        (memory.forget)(&mine);
        memory.offsets.unload(mine);
        let log = l.log();
        let end = log.end_offset();
        let mut at = log.log_start_offset();
        let mut changes = Vec::new();
        while at < end {
            if l.is_deposed() {
                return Err(NOT_COORDINATOR);
            }
            let read = log.read_upto(at, LOAD_CHUNK, true, end).map_err(|e| {
                tracing::error!(partition, error = %e, "cannot read the offsets partition");
                COORDINATOR_NOT_AVAILABLE
            })?;
            let (batch, next) = decode(&read.records).map_err(|e| {
                tracing::error!(partition, error = %e, "cannot decode the offsets partition");
                COORDINATOR_NOT_AVAILABLE
            })?;
            changes.extend(batch.into_iter().filter(|c| mine(c.group())));
            match next {
                Some(n) if n > at => at = n,
                _ => break,
            }
            tokio::task::yield_now().await;
        }
        let n = changes.len();
        memory.offsets.write_in_memory(changes);
        j.loaded.store(l.leader_epoch, Ordering::Release);
        tracing::info!(
            partition,
            leader_epoch = l.leader_epoch,
            records = n,
            "loaded the groups of an offsets partition"
        );
        Ok(())
    }

    /// Appends `changes` to the offsets partition this broker leads under
    /// `l`, and applies them once every in-sync replica holds them.
    ///
    /// # Errors
    /// `NOT_COORDINATOR` when the leadership ended first;
    /// `COORDINATOR_NOT_AVAILABLE` when the write failed or did not
    /// replicate within `timeout`.
    pub async fn append(
        &self,
        partition: i32,
        l: &Leadership,
        changes: Vec<Change>,
        offsets: &OffsetStore,
        (sync, timeout, now_ms): (bool, Duration, i64),
    ) -> Result<(), i16> {
        if changes.is_empty() {
            return Ok(());
        }
        let j = self.get(partition);
        let batch = encode(&changes, now_ms).map_err(|e| {
            tracing::error!(error = %e, "cannot encode offsets");
            COORDINATOR_NOT_AVAILABLE
        })?;
        let log = l.log();
        let upto = {
            let _append = j.load.lock().await;
            if j.loaded.load(Ordering::Acquire) != l.leader_epoch || l.is_deposed() {
                return Err(NOT_COORDINATOR);
            }
            let info = log.append_internal(&batch, now_ms).map_err(|e| {
                tracing::error!(partition, error = %e, "cannot append offsets");
                COORDINATOR_NOT_AVAILABLE
            })?;
            let upto = info.last_offset + 1;
            j.pending.lock().push_back((upto, changes));
            upto
        };
        l.appended();
        let flushed = async {
            if sync {
                log.flush_to(upto).await.map_err(|e| {
                    tracing::error!(partition, error = %e, "fsync of offsets failed");
                    COORDINATOR_NOT_AVAILABLE
                })
            } else {
                Ok(())
            }
        };
        let (flushed, replicated) =
            futures::future::join(flushed, l.committed(upto, timeout)).await;
        flushed?;
        replicated.map_err(|e| match e {
            Unreplicated::Deposed => NOT_COORDINATOR,
            Unreplicated::TimedOut => COORDINATOR_NOT_AVAILABLE,
        })?;
        // Everything up to the high watermark applies, in log order.
        let hw = log.high_watermark();
        let mut ready = Vec::new();
        {
            let mut pending = j.pending.lock();
            while pending.front().is_some_and(|(end, _)| *end <= hw) {
                if let Some((_, c)) = pending.pop_front() {
                    ready.extend(c);
                }
            }
        }
        if j.loaded.load(Ordering::Acquire) == l.leader_epoch {
            offsets.write_in_memory(ready);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_java_string_hash_code() {
        // "group".hashCode() == 98629247 in Java.
        assert_eq!(partition_for("group", 50), 98_629_247 % 50);
        // A negative hash code is masked, not negated, as Kafka's Utils.abs.
        let h = "polygenelubricants"
            .encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
        assert_eq!(h, i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("", 7), 0);
    }

    #[test]
    fn changes_round_trip_through_kafka_records() {
        let changes = vec![
            Change::Commit {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                committed: Committed {
                    offset: 42,
                    leader_epoch: 7,
                    metadata: Some("meta".into()),
                    commit_time_ms: 1234,
                },
            },
            Change::DeleteOffset {
                group: "g".into(),
                topic: "t".into(),
                partition: 4,
            },
            Change::DeleteGroup { group: "h".into() },
        ];
        let mut batch = encode(&changes, 99).unwrap().to_vec();
        crate::log::batch::set_base_offset(&mut batch, 10);
        let (back, next) = decode(&Bytes::from(batch)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{changes:?}"));
        assert_eq!(next, Some(13));
    }

    #[test]
    fn a_partial_batch_at_the_end_is_left_for_the_next_read() {
        let c = vec![Change::DeleteGroup { group: "g".into() }];
        let one = encode(&c, 1).unwrap();
        let mut two = one.to_vec();
        two.extend_from_slice(&one[..one.len() - 5]);
        let (back, next) = decode(&Bytes::from(two)).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(next, Some(1));
    }

    #[test]
    fn unknown_and_group_metadata_records_are_skipped() {
        let mut k = BytesMut::new();
        k.put_i16(KEY_GROUP_METADATA);
        put_str(&mut k, "g");
        let k = k.freeze();
        assert!(change_of(Some(&k), Some(&Bytes::from_static(b"\x00\x03"))).is_none());
        assert!(change_of(Some(&Bytes::from_static(b"\x00\x09x")), None).is_none());
        assert!(change_of(None, None).is_none());
        assert!(change_of(Some(&Bytes::from_static(b"\x00")), None).is_none());
    }
}
