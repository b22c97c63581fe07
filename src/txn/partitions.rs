//! In a cluster: the transaction coordinators of this broker, one per
//! partition of the replicated internal topic `__transaction_state` it
//! leads. A transactional id belongs to partition
//! `abs(hashCode(id)) % partitions`, as in Kafka, and that partition's
//! leader coordinates it. Its state is journaled in the partition (the
//! single node's journal entries, one per record, keyed by the id) and a
//! change is answered once the in-sync replicas hold it. A broker that
//! becomes the leader replays the partition before it answers for its ids,
//! and carries out the decisions it finds there (the periodic tick).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{store, Coordinator, Counts, Settings, TxnMeta};
use crate::log::records::{decode_all, whole_batches};
use crate::protocol::errors::{COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR};
use crate::replicas::Leadership;

/// The internal topic that holds the coordinators' state in a cluster.
pub const TOPIC: &str = crate::topics::TXN_INTERNAL;

/// Bytes read from the partition at a time while loading.
const LOAD_CHUNK: usize = 1 << 20;

/// The partition of `__transaction_state` a transactional id belongs to
/// (Kafka's rule, the same as a group's in `__consumer_offsets`).
pub fn partition_for(id: &str, partitions: usize) -> i32 {
    crate::group::journal::partition_for(id, partitions)
}

/// The coordinators of the partitions this broker leads.
#[derive(Default)]
pub struct Coordinators {
    parts: Mutex<HashMap<i32, Arc<Coordinator>>>,
    /// Counts of all of them, kept across leaderships.
    pub counts: Arc<Counts>,
    /// Held while a partition is replayed.
    load: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Coordinators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinators").finish_non_exhaustive()
    }
}

impl Coordinators {
    /// The coordinator of `partition`, led here under `l`: at a new
    /// leadership the partition is replayed first.
    ///
    /// # Errors
    /// `NOT_COORDINATOR` when the leadership ended;
    /// `COORDINATOR_NOT_AVAILABLE` when the partition cannot be read.
    pub async fn get(
        &self,
        partition: i32,
        l: &Arc<Leadership>,
        sync: bool,
        settings: Settings,
    ) -> Result<Arc<Coordinator>, i16> {
        if let Some(c) = self.current(partition, l) {
            return Ok(c);
        }
        let _load = self.load.lock().await;
        if let Some(c) = self.current(partition, l) {
            return Ok(c);
        }
        let txns = load(partition, l).await?;
        let n = txns.len();
        let c = Arc::new(Coordinator::replicated(
            Arc::clone(l),
            sync,
            txns,
            settings,
            Arc::clone(&self.counts),
        ));
        self.parts.lock().insert(partition, Arc::clone(&c));
        tracing::info!(
            partition,
            leader_epoch = l.leader_epoch,
            transactional_ids = n,
            "loaded the transactions of a transaction state partition"
        );
        Ok(c)
    }

    /// The loaded coordinator of `partition` if it serves under `l`.
    fn current(&self, partition: i32, l: &Leadership) -> Option<Arc<Coordinator>> {
        self.parts
            .lock()
            .get(&partition)
            .filter(|c| {
                c.leadership()
                    .is_some_and(|x| x.leader_epoch == l.leader_epoch && !x.is_deposed())
            })
            .cloned()
    }

    /// Every coordinator still serving; those whose leadership ended are
    /// dropped.
    pub fn all(&self) -> Vec<Arc<Coordinator>> {
        let mut parts = self.parts.lock();
        parts.retain(|_, c| c.leadership().is_some_and(|l| !l.is_deposed()));
        parts.values().cloned().collect()
    }
}

/// Replays the partition led under `l` into the state of its ids.
async fn load(partition: i32, l: &Leadership) -> Result<HashMap<String, TxnMeta>, i16> {
    let log = l.log();
    let end = log.end_offset();
    let mut at = log.log_start_offset();
    let mut state = HashMap::new();
    while at < end {
        if l.is_deposed() {
            return Err(NOT_COORDINATOR);
        }
        let read = log.read_upto(at, LOAD_CHUNK, true, end).map_err(|e| {
            tracing::error!(partition, error = %e, "cannot read the transaction state");
            COORDINATOR_NOT_AVAILABLE
        })?;
        let (whole, next) = whole_batches(&read.records);
        let sets = decode_all(&whole).map_err(|e| {
            tracing::error!(partition, error = %e, "cannot decode the transaction state");
            COORDINATOR_NOT_AVAILABLE
        })?;
        for set in sets {
            for r in set.records.iter().filter(|r| !r.control) {
                store::replay_record(&mut state, r.key.as_deref(), r.value.as_deref());
            }
        }
        match next {
            Some(n) if n > at => at = n,
            _ => break,
        }
        tokio::task::yield_now().await;
    }
    Ok(state)
}
