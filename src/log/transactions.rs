//! A partition log's side of transactions: markers appended for the
//! coordinator, the last stable offset, the open and aborted transactions
//! ([`super::txn::TxnIndex`] kept in the log's state).

use super::txn::{marker_batch, AbortedTxn, Marker};
use super::{AppendInfo, LogError, PartitionLog};

impl PartitionLog {
    /// Appends a transaction marker for `producer_id` at `epoch` (the
    /// transaction coordinator ending its transaction here). A marker at an
    /// epoch older than the producer's last one is refused.
    ///
    /// # Errors
    /// `InvalidProducerEpoch` for a stale epoch; I/O errors.
    pub fn append_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        marker: Marker,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let batch = marker_batch(producer_id, epoch, marker, coordinator_epoch, now_ms);
        self.append_internal(&batch, now_ms)
    }

    /// Whether `producer_id` has a transaction open in this partition.
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.inner.lock().txns.is_open(producer_id)
    }

    /// The offset below which every transaction is decided: the first
    /// offset of the oldest open transaction, or the high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        let inner = self.inner.lock();
        let hw = self.high_watermark();
        let start = inner.log_start_offset;
        inner
            .txns
            .first_unstable()
            .map_or(hw, |f| f.min(hw).max(start))
    }

    /// Open transactions here, as (producer id, first offset).
    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        self.inner.lock().txns.open_list()
    }

    /// Every aborted transaction whose marker is still in the log.
    pub fn aborted_transactions(&self) -> Vec<AbortedTxn> {
        self.inner.lock().txns.aborted().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch;
    use crate::log::read::records_end;
    use crate::log::LogConfig;

    /// A transactional batch of `count` records from `pid` at `epoch`,
    /// first sequence `seq`.
    fn txn_batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Vec<u8> {
        let mut b = batch::tests::make_batch(count, 1_000);
        b[batch::field::ATTRIBUTES..batch::field::ATTRIBUTES + 2]
            .copy_from_slice(&0x10i16.to_be_bytes());
        batch::set_producer(&mut b, pid, epoch, seq);
        batch::update_crc(&mut b);
        b
    }

    fn open_log(dir: &std::path::Path) -> PartitionLog {
        PartitionLog::open(dir, LogConfig::default(), 0).expect("open")
    }

    #[test]
    fn read_committed_stops_at_the_open_transaction_and_learns_the_aborts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_log(dir.path());
        log.append(&batch::tests::make_batch(2, 1_000), 0)
            .expect("plain");
        log.append(&txn_batch(7, 0, 0, 3), 0).expect("txn 7");
        log.append(&batch::tests::make_batch(1, 1_000), 0)
            .expect("plain");
        log.append(&txn_batch(8, 0, 0, 2), 0).expect("txn 8");
        assert_eq!(log.last_stable_offset(), 2);
        let r = log.read_committed(0, 1 << 20, true).expect("read");
        assert_eq!(records_end(&r.records), Some(2));
        assert_eq!(r.last_stable_offset, 2);
        assert!(log
            .read_committed(2, 1 << 20, true)
            .expect("read")
            .records
            .is_empty());
        // Aborting 7 leaves 8 open: stable up to 8's first batch.
        let m = log.append_marker(7, 0, Marker::Abort, 0, 0).expect("abort");
        assert_eq!(m.base_offset, 8);
        assert!(!log.has_open_transaction(7));
        assert_eq!(log.last_stable_offset(), 6);
        let r = log.read_committed(0, 1 << 20, true).expect("read");
        assert_eq!(records_end(&r.records), Some(6));
        let aborted_7 = AbortedTxn {
            producer_id: 7,
            first_offset: 2,
            last_offset: 8,
        };
        assert_eq!(r.aborted, vec![aborted_7]);
        log.append_marker(8, 0, Marker::Commit, 0, 0)
            .expect("commit");
        assert_eq!(log.last_stable_offset(), log.end_offset());
        let r = log.read_committed(6, 1 << 20, true).expect("read");
        assert_eq!(records_end(&r.records), Some(10));
        assert_eq!(r.aborted, vec![aborted_7], "its marker is in the read");
        // read_uncommitted reads learn no aborts.
        assert!(log.read(0, 1 << 20, true).expect("read").aborted.is_empty());
        // A marker from an older epoch than the producer's is refused.
        log.append(&txn_batch(8, 1, 0, 1), 0)
            .expect("txn 8, epoch 1");
        assert!(matches!(
            log.append_marker(8, 0, Marker::Abort, 0, 0),
            Err(LogError::InvalidProducerEpoch)
        ));
        // A marker at a newer epoch fences the producer's older one.
        log.append_marker(8, 2, Marker::Abort, 0, 0)
            .expect("fencing abort");
        assert!(matches!(
            log.append(&txn_batch(8, 1, 1, 1), 0),
            Err(LogError::InvalidProducerEpoch)
        ));
    }

    #[test]
    fn transactions_survive_a_restart_with_and_without_a_checkpoint() {
        for checkpoint in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (open, aborted) = {
                let log = open_log(dir.path());
                log.append(&txn_batch(1, 0, 0, 2), 0).expect("txn 1");
                log.append(&txn_batch(2, 0, 0, 2), 0).expect("txn 2");
                log.append_marker(1, 0, Marker::Abort, 0, 0)
                    .expect("abort 1");
                if checkpoint {
                    log.checkpoint().expect("checkpoint");
                }
                log.append(&txn_batch(3, 0, 0, 1), 0).expect("txn 3");
                log.append_marker(3, 0, Marker::Abort, 0, 0)
                    .expect("abort 3");
                (log.open_transactions(), log.aborted_transactions())
            };
            assert_eq!(open, vec![(2, 2)]);
            assert_eq!(aborted.len(), 2);
            let log = open_log(dir.path());
            assert_eq!(log.open_transactions(), open, "checkpoint {checkpoint}");
            assert_eq!(
                log.aborted_transactions(),
                aborted,
                "checkpoint {checkpoint}"
            );
            assert_eq!(log.last_stable_offset(), 2);
        }
    }

    #[test]
    fn clients_may_not_write_control_batches_or_transactions_without_a_producer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_log(dir.path());
        let marker = marker_batch(1, 0, Marker::Commit, 0, 0);
        assert!(matches!(
            log.append(&marker, 0),
            Err(LogError::ControlBatch)
        ));
        let mut b = txn_batch(-1, -1, -1, 1);
        batch::update_crc(&mut b);
        assert!(log.append(&b, 0).is_err());
    }

    #[test]
    fn the_last_stable_offset_is_never_below_the_log_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_log(dir.path());
        log.append(&txn_batch(7, 0, 0, 2), 0).expect("txn 7");
        log.append(&batch::tests::make_batch(4, 1_000), 0)
            .expect("plain");
        assert_eq!(log.last_stable_offset(), 0);
        log.delete_records_before(3).expect("delete records");
        assert_eq!(log.last_stable_offset(), 3);
        let r = log.read_committed(3, 1 << 20, true).expect("read");
        assert_eq!(r.last_stable_offset, 3);
        assert!(r.records.is_empty());
    }
}
