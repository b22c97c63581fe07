//! Idempotent-producer state of one partition: for each producer id, its epoch
//! and the last five batches it wrote, so that a retried batch is answered with
//! its original offset instead of being written twice, and a gap is refused.
//!
//! The table is saved with each recovery checkpoint and brought up to date at
//! start-up from the batch headers written after it (the whole active segment
//! when there is no checkpoint), so producers survive rolls and restarts. A
//! producer unknown to the table (a log without a checkpoint, whose last batch
//! lies in a sealed segment) has its first batch accepted whatever its
//! sequence, as Kafka does since KIP-360.

use std::collections::{HashMap, VecDeque};

use super::batch::BatchHeader;

/// How many recent batches per producer are remembered for de-duplication
/// (Kafka's max.in.flight.requests.per.connection limit for idempotence).
pub const REMEMBERED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// What a sequence check concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, or the next batch in order: append it.
    Append,
    /// A retry of a batch already written at this base offset.
    Duplicate(i64),
    /// A sequence gap or an unexpected sequence.
    OutOfOrder,
    /// An epoch older than the producer's current one.
    StaleEpoch,
}

/// One producer's state in a recovery checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSnapshot {
    pub producer_id: i64,
    pub epoch: i16,
    /// (first sequence, last sequence, base offset) of its last batches.
    pub batches: Vec<(i32, i32, i64)>,
}

/// Producer id → state, for one partition.
#[derive(Debug, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerTable {
    /// Checks a batch against the producer's history without changing it.
    pub fn check(&self, h: &BatchHeader) -> SequenceCheck {
        if h.producer_id >= 0 && h.is_control() {
            // A transaction marker: no sequence, but an epoch the
            // producer's batches must not be older than.
            return match self.producers.get(&h.producer_id) {
                Some(e) if h.producer_epoch < e.epoch => SequenceCheck::StaleEpoch,
                _ => SequenceCheck::Append,
            };
        }
        if h.producer_id < 0 || h.base_sequence < 0 {
            return SequenceCheck::Append;
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return SequenceCheck::Append;
        };
        if h.producer_epoch < entry.epoch {
            return SequenceCheck::StaleEpoch;
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder
            };
        }
        let last_seq = h.last_sequence();
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
        {
            return SequenceCheck::Duplicate(dup.base_offset);
        }
        match entry.batches.back() {
            Some(last) if h.base_sequence != next_seq(last.last_seq) => SequenceCheck::OutOfOrder,
            _ => SequenceCheck::Append,
        }
    }

    /// The batches remembered for a producer, as (first seq, last seq, base
    /// offset), with its epoch: for a log line when a sequence is refused.
    pub fn batches_of(&self, producer_id: i64) -> Option<ProducerSnapshot> {
        self.producers.get(&producer_id).map(|e| ProducerSnapshot {
            producer_id,
            epoch: e.epoch,
            batches: e
                .batches
                .iter()
                .map(|b| (b.first_seq, b.last_seq, b.base_offset))
                .collect(),
        })
    }

    /// Records a batch that was written (its header carries the base offset).
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_id >= 0 && h.is_control() {
            // A marker at a newer epoch (the coordinator fenced the
            // producer) makes the older epoch stale here too.
            if let Some(e) = self.producers.get_mut(&h.producer_id) {
                if h.producer_epoch > e.epoch {
                    e.epoch = h.producer_epoch;
                    e.batches.clear();
                }
            }
            return;
        }
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            base_offset: h.base_offset,
        });
        while entry.batches.len() > REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
    }

    /// The table as (producer id, epoch, [(first seq, last seq, base offset)]),
    /// for a recovery checkpoint.
    pub fn snapshot(&self) -> Vec<ProducerSnapshot> {
        let mut out: Vec<ProducerSnapshot> = self
            .producers
            .keys()
            .filter_map(|pid| self.batches_of(*pid))
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// Rebuilds a table from [`ProducerTable::snapshot`]. Producers whose
    /// last batch was held outside this log (a retry hand-back, recorded
    /// with base offset -1) are left out: batches they sent after the
    /// snapshot are not in the log to bring them up to date, so they are
    /// unknown again (their next batch is accepted whatever its sequence)
    /// rather than known at a stale sequence.
    pub fn from_snapshot(snap: &[ProducerSnapshot]) -> Self {
        let mut t = Self::default();
        for p in snap {
            if p.batches.last().is_some_and(|&(_, _, base)| base < 0) {
                continue;
            }
            let batches = p
                .batches
                .iter()
                .rev()
                .take(REMEMBERED_BATCHES)
                .rev()
                .map(|&(first_seq, last_seq, base_offset)| BatchMeta {
                    first_seq,
                    last_seq,
                    base_offset,
                })
                .collect();
            t.producers.insert(
                p.producer_id,
                ProducerEntry {
                    epoch: p.epoch,
                    batches,
                },
            );
        }
        t
    }

    /// Forgets the batches at or past `offset` (a tail truncation). A
    /// producer none of whose remembered batches is left is forgotten: its
    /// last batch below `offset` is not known (or was of an older producer
    /// epoch), so its next batch is accepted whatever its sequence, as for
    /// a producer the table never saw.
    pub fn truncate_to(&mut self, offset: i64) {
        self.producers.retain(|_, e| {
            e.batches.retain(|b| b.base_offset < offset);
            !e.batches.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: i64, epoch: i16, seq: i32, count: i32, base: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn in_order_batches_append_and_a_retry_is_a_duplicate() {
        let mut t = ProducerTable::default();
        assert_eq!(t.check(&h(1, 0, 0, 10, 0)), SequenceCheck::Append);
        t.record(&h(1, 0, 0, 10, 0));
        assert_eq!(t.check(&h(1, 0, 10, 5, 10)), SequenceCheck::Append);
        t.record(&h(1, 0, 10, 5, 10));
        assert_eq!(t.check(&h(1, 0, 0, 10, -1)), SequenceCheck::Duplicate(0));
        assert_eq!(t.check(&h(1, 0, 10, 5, -1)), SequenceCheck::Duplicate(10));
    }

    #[test]
    fn a_gap_is_out_of_order_and_an_old_epoch_is_stale() {
        let mut t = ProducerTable::default();
        t.record(&h(1, 3, 0, 10, 0));
        assert_eq!(t.check(&h(1, 3, 11, 1, 0)), SequenceCheck::OutOfOrder);
        assert_eq!(t.check(&h(1, 2, 10, 1, 0)), SequenceCheck::StaleEpoch);
        assert_eq!(t.check(&h(1, 4, 5, 1, 0)), SequenceCheck::OutOfOrder);
        assert_eq!(t.check(&h(1, 4, 0, 1, 0)), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerTable::default();
        for i in 0..7 {
            t.record(&h(9, 0, i, 1, i64::from(i)));
        }
        assert_eq!(t.check(&h(9, 0, 0, 1, 0)), SequenceCheck::OutOfOrder);
        assert_eq!(t.check(&h(9, 0, 2, 1, 0)), SequenceCheck::Duplicate(2));
    }

    #[test]
    fn truncation_forgets_the_batches_it_removed() {
        let mut t = ProducerTable::default();
        t.record(&h(1, 0, 0, 10, 0));
        t.record(&h(1, 0, 10, 5, 10));
        t.record(&h(2, 0, 0, 1, 20));
        t.truncate_to(10);
        assert_eq!(t.check(&h(1, 0, 10, 5, -1)), SequenceCheck::Append);
        assert_eq!(t.check(&h(1, 0, 0, 10, -1)), SequenceCheck::Duplicate(0));
        assert_eq!(t.len(), 1, "producer 2 has nothing left");
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut t = ProducerTable::default();
        t.record(&h(1, 0, i32::MAX, 1, 0));
        assert_eq!(t.check(&h(1, 0, 0, 1, 1)), SequenceCheck::Append);
    }
}
