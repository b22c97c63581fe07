//! Held retries in a cluster: journaled in the replicated internal topic
//! `__retry`, so that they move with leadership.
//!
//! A retry target (a retry topic's partition) belongs to one partition of
//! `__retry` (a hash of its name and index). A hand-back taken by the
//! target's leader is appended there, as a `held` record whose value is the
//! held record as the single-node store writes it, and is acknowledged once
//! the high watermark passes it. The leader of each `__retry` partition
//! schedules what it holds: it reads the partition from its start at a new
//! leader epoch, then follows it up to the high watermark, and keeps only
//! `(due time, offset)` per record in memory. A record falling due is read
//! back by its offset, appended to its target through the target's leader,
//! and then marked by a `done` record (its offsets). Delivery is
//! at-least-once, as on a single node: a leader that dies between the
//! delivery and the `done` leaves the next one to deliver again.
//!
//! The partition only grows: its `cleanup.policy` is `compact`, so
//! retention never deletes a held record, and the log cleaner leaves it
//! alone (every record's key is `held` or `done`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use parking_lot::Mutex;

use super::store::{decode_held, held_payload, Held};
use crate::log::records::{decode_all, encode_batch, plain_record, whole_batches};
use crate::log::PartitionLog;

/// The internal topic of held retries in a cluster (on a single node the
/// pending store's directory has the same name).
pub const TOPIC: &str = super::store::DIR;

const KEY_HELD: &[u8] = b"held";
const KEY_DONE: &[u8] = b"done";

/// Bytes read from the partition at a time.
const READ_CHUNK: usize = 1 << 20;

/// The `__retry` partition that holds the records of retry target
/// `topic`-`partition` (FNV-1a of both, stable across brokers and versions).
pub fn partition_for(topic: &str, partition: i32, partitions: usize) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(&partition.to_be_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as i32
}

/// Held records as one batch of `held` records.
///
/// # Errors
/// The encoder's error.
pub fn encode_held(held: &[&Held], now_ms: i64) -> anyhow::Result<Bytes> {
    let records: Vec<_> = held
        .iter()
        .enumerate()
        .map(|(i, h)| {
            plain_record(
                i as i64,
                now_ms,
                Some(Bytes::from_static(KEY_HELD)),
                Some(Bytes::from(held_payload(h))),
                &[],
            )
        })
        .collect();
    encode_batch(&records, kafka_protocol::records::Compression::None)
}

/// A `done` record for the held records at `offsets`.
///
/// # Errors
/// The encoder's error.
pub fn encode_done(offsets: &[i64], now_ms: i64) -> anyhow::Result<Bytes> {
    let mut value = Vec::with_capacity(offsets.len() * 8);
    for o in offsets {
        value.extend_from_slice(&o.to_be_bytes());
    }
    let r = plain_record(
        0,
        now_ms,
        Some(Bytes::from_static(KEY_DONE)),
        Some(Bytes::from(value)),
        &[],
    );
    encode_batch(&[r], kafka_protocol::records::Compression::None)
}

/// What a stretch of the journal says.
#[derive(Debug, Default, PartialEq)]
struct Scanned {
    /// (offset, due ms) of each held record.
    held: Vec<(i64, i64)>,
    /// Offsets marked delivered.
    done: Vec<i64>,
    /// The offset after the last whole batch.
    next: Option<i64>,
}

fn scan(bytes: &Bytes) -> anyhow::Result<Scanned> {
    let (whole, next) = whole_batches(bytes);
    let mut out = Scanned {
        next,
        ..Scanned::default()
    };
    for set in decode_all(&whole)? {
        for r in &set.records {
            match (r.key.as_deref(), &r.value) {
                (Some(KEY_HELD), Some(v)) => {
                    if let Some(h) = decode_held(v) {
                        out.held.push((r.offset, h.due_ms));
                    }
                }
                (Some(KEY_DONE), Some(v)) => {
                    let mut v = v.clone();
                    while v.remaining() >= 8 {
                        out.done.push(v.get_i64());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The held records at `offsets` (sorted), read back from the journal.
///
/// # Errors
/// The log cannot be read or decoded.
pub fn read_held(log: &PartitionLog, offsets: &[i64]) -> anyhow::Result<Vec<(i64, Held)>> {
    let wanted: HashSet<i64> = offsets.iter().copied().collect();
    let mut found: BTreeMap<i64, Held> = BTreeMap::new();
    for &o in offsets {
        if found.contains_key(&o) {
            continue;
        }
        let read = log.read(o, READ_CHUNK, true)?;
        let (whole, _) = whole_batches(&read.records);
        for set in decode_all(&whole)? {
            for r in &set.records {
                if wanted.contains(&r.offset) && r.key.as_deref() == Some(KEY_HELD) {
                    if let Some(h) = r.value.as_deref().and_then(decode_held) {
                        found.insert(r.offset, h);
                    }
                }
            }
        }
        if !found.contains_key(&o) {
            anyhow::bail!("no held record at offset {o}");
        }
    }
    Ok(found.into_iter().collect())
}

/// The schedule of one `__retry` partition this broker leads.
#[derive(Debug, Default)]
pub struct Schedule {
    /// The leader epoch it was read under; -1 before.
    pub epoch: i32,
    /// Read up to here.
    pub scanned: i64,
    /// Earliest due first: (due ms, offset).
    heap: BinaryHeap<Reverse<(i64, i64)>>,
    /// Held offsets neither delivered nor being delivered.
    live: HashSet<i64>,
}

impl Schedule {
    /// Follows the journal from where it was read to its high watermark
    /// (from its start at a new epoch).
    ///
    /// # Errors
    /// The log cannot be read or decoded.
    pub fn follow(&mut self, log: &PartitionLog, epoch: i32) -> anyhow::Result<()> {
        if self.epoch != epoch {
            *self = Schedule {
                epoch,
                scanned: log.log_start_offset(),
                ..Schedule::default()
            };
        }
        let hw = log.high_watermark();
        while self.scanned < hw {
            let read = log.read(self.scanned, READ_CHUNK, true)?;
            let s = scan(&read.records)?;
            for (offset, due) in s.held {
                if self.live.insert(offset) {
                    self.heap.push(Reverse((due, offset)));
                }
            }
            for d in s.done {
                self.live.remove(&d);
            }
            match s.next {
                Some(n) if n > self.scanned => self.scanned = n,
                _ => break,
            }
        }
        Ok(())
    }

    /// Takes up to `max` held records due at `now`: their offsets, sorted.
    pub fn take_due(&mut self, now: i64, max: usize) -> Vec<i64> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.heap.peek() {
                Some(Reverse((due, _))) if *due <= now => {}
                _ => break,
            }
            let Some(Reverse((_, offset))) = self.heap.pop() else {
                break;
            };
            if self.live.remove(&offset) {
                out.push(offset);
            }
        }
        out.sort_unstable();
        out
    }

    /// Puts back records whose delivery failed, due again at `due`.
    pub fn put_back(&mut self, offsets: &[i64], due: i64) {
        for &o in offsets {
            if self.live.insert(o) {
                self.heap.push(Reverse((due, o)));
            }
        }
    }

    /// Held records not yet delivered.
    pub fn pending(&self) -> usize {
        self.live.len()
    }

    /// When the earliest held record is due.
    pub fn next_due(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }
}

/// The schedules of the `__retry` partitions this broker leads.
#[derive(Debug, Default)]
pub struct Journals {
    parts: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Schedule>>>>,
    /// Held records over the partitions led here, at the last look.
    pending: AtomicU64,
}

impl Journals {
    /// The schedule of partition `partition`.
    pub fn schedule(&self, partition: i32) -> Arc<tokio::sync::Mutex<Schedule>> {
        Arc::clone(self.parts.lock().entry(partition).or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(Schedule {
                epoch: -1,
                ..Schedule::default()
            }))
        }))
    }

    /// Drops the schedules of partitions not led here any more.
    pub fn retain(&self, led: &HashSet<i32>) {
        self.parts.lock().retain(|p, _| led.contains(p));
    }

    /// Sets the held-record count shown in metrics.
    pub fn set_pending(&self, n: u64) {
        self.pending.store(n, Ordering::Relaxed);
    }

    /// Held records over the partitions led here.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(due: i64, value: &str) -> Held {
        Held {
            due_ms: due,
            topic: "t.retry".into(),
            partition: 2,
            timestamp: 5,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from(value.to_string())),
            headers: vec![("retry.attempt".into(), Some(Bytes::from_static(b"1")))],
        }
    }

    fn at(mut b: Vec<u8>, base: i64) -> Vec<u8> {
        crate::log::batch::set_base_offset(&mut b, base);
        b
    }

    #[test]
    fn held_and_done_records_scan_back() {
        let (a, b) = (held(100, "a"), held(50, "b"));
        let mut bytes = at(encode_held(&[&a, &b], 1).unwrap().to_vec(), 0);
        bytes.extend(at(encode_done(&[0], 2).unwrap().to_vec(), 2));
        let s = scan(&Bytes::from(bytes)).unwrap();
        assert_eq!(s.held, vec![(0, 100), (1, 50)]);
        assert_eq!(s.done, vec![0]);
        assert_eq!(s.next, Some(3));
    }

    #[test]
    fn a_schedule_follows_a_log_and_hands_out_what_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), Default::default(), 0).unwrap();
        let (a, b, c) = (held(100, "a"), held(50, "b"), held(300, "c"));
        log.append_internal(&encode_held(&[&a, &b], 1).unwrap(), 1)
            .unwrap();
        log.append_internal(&encode_held(&[&c], 1).unwrap(), 1)
            .unwrap();
        log.append_internal(&encode_done(&[1], 2).unwrap(), 2)
            .unwrap();
        let mut s = Schedule {
            epoch: -1,
            ..Schedule::default()
        };
        s.follow(&log, 0).unwrap();
        assert_eq!(s.pending(), 2);
        assert_eq!(s.take_due(99, 10), Vec::<i64>::new());
        assert_eq!(s.take_due(100, 10), vec![0]);
        let back = read_held(&log, &[0]).unwrap();
        assert_eq!(back, vec![(0, a)]);
        s.put_back(&[0], 400);
        assert_eq!(s.take_due(350, 10), vec![2]);
        assert_eq!(read_held(&log, &[2]).unwrap()[0].1, c);
        assert_eq!(s.next_due(), Some(400));
        // A new epoch reads the partition again from its start.
        s.follow(&log, 1).unwrap();
        assert_eq!(s.pending(), 2);
    }

    #[test]
    fn targets_spread_and_stay_put() {
        let n = 16;
        let ps: HashSet<i32> = (0..64)
            .map(|i| partition_for("orders.retry", i, n))
            .collect();
        assert!(ps.len() > 8, "{ps:?}");
        assert_eq!(
            partition_for("orders.retry", 3, n),
            partition_for("orders.retry", 3, n)
        );
        assert!(ps.iter().all(|p| (0..16).contains(p)));
    }
}
