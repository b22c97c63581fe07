//! The transaction coordinator (Kafka's KIP-98): transactional ids, their
//! producer ids and epochs, the partitions and group offsets of each open
//! transaction, and its end: the decision is journaled first
//! (`PrepareCommit` / `PrepareAbort`), then a marker is written to every
//! partition of the transaction and its offsets are committed, then the end
//! is journaled (`CompleteCommit` / `CompleteAbort`). A decision found in
//! the journal at start is carried out again; a transaction open longer
//! than its timeout is aborted, and its producer fenced.
//!
//! The coordinator does not know topics or groups: it reaches partition
//! logs and commits offsets through [`Participants`], which the broker
//! implements.

pub mod partitions;
mod queries;
mod state;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::group::offsets::{Change, Committed};
use crate::log::txn::Marker;
use crate::log::{LogError, PartitionLog};
use crate::protocol::errors::{
    CONCURRENT_TRANSACTIONS, INVALID_PRODUCER_EPOCH, INVALID_PRODUCER_ID_MAPPING,
    INVALID_TRANSACTION_TIMEOUT, INVALID_TXN_STATE, KAFKA_STORAGE_ERROR, MESSAGE_TOO_LARGE, NONE,
    OPERATION_NOT_ATTEMPTED, PRODUCER_FENCED, UNKNOWN_TOPIC_OR_PARTITION,
};
use state::{Inner, Sink};
use store::Journal;
pub use store::{HeldBatch, Phase, TxnMeta};

use crate::protocol::errors::{COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR};
use crate::replicas::{Leadership, Unreplicated};

/// How long a change of state waits for the in-sync replicas of its
/// `__transaction_state` partition (in a cluster).
const REPLICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Most bytes of hand-backs one transaction may hold until it ends.
pub const MAX_HELD_BYTES: usize = 64 << 20;

/// What the coordinator reaches outside itself.
pub trait Participants: Sync {
    /// A partition's log, when the partition exists here.
    fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>>;
    /// Whether markers must be fsynced before a transaction is complete.
    fn sync_markers(&self) -> bool;
    /// Commits group offsets (a committed transaction's): on a single node
    /// in its offset store, in a cluster through each group's coordinator.
    ///
    /// # Errors
    /// What kept them from being stored.
    fn commit_offsets(
        &self,
        changes: Vec<Change>,
    ) -> futures::future::BoxFuture<'_, Result<(), String>>;
    /// Passes a committed transaction's hand-back to the retry scheduler.
    ///
    /// # Errors
    /// What kept it from being held.
    fn hand_back(&self, batch: &HeldBatch) -> futures::future::BoxFuture<'_, Result<(), String>>;
    /// In a cluster: appends the marker `batch` to each partition through
    /// its leader (here or on another broker), each answering once its
    /// in-sync replicas hold it. `None` on a single node, whose markers are
    /// written to the partition logs here.
    fn send_markers<'a>(
        &'a self,
        _partitions: Vec<(String, i32)>,
        _batch: bytes::Bytes,
    ) -> Option<futures::future::BoxFuture<'a, Result<(), String>>> {
        None
    }
}

/// Broker settings of the coordinator.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Longest `transaction.timeout.ms` a producer may ask for
    /// (`--transaction-max-timeout-ms`).
    pub max_timeout_ms: i32,
    /// A transactional id with no transaction open and no change for this
    /// long is forgotten (`--transactional-id-expiration-ms`).
    pub id_expiration_ms: i64,
}

/// Counters for metrics and status.
#[derive(Debug, Default)]
pub struct Counts {
    pub committed: AtomicU64,
    pub aborted: AtomicU64,
    /// Aborted because they were open longer than their timeout.
    pub timed_out: AtomicU64,
}

/// An open transaction, for status and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpenTxn {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: &'static str,
    pub age_ms: i64,
    pub timeout_ms: i32,
    pub partitions: usize,
}

/// The transaction coordinator of this broker.
pub struct Coordinator {
    /// Read-locked while a transactional batch is checked and appended,
    /// write-locked for every change of state: a transaction's decision
    /// cannot slip between a produce's check and its append.
    inner: RwLock<Inner>,
    /// Transactional ids whose markers are being written.
    completing: Mutex<HashSet<String>>,
    settings: Settings,
    /// Written into markers: 0 on a single node; in a cluster the leader
    /// epoch of the `__transaction_state` partition.
    coordinator_epoch: i32,
    /// Set until the first periodic work after a cluster's coordinator is
    /// loaded (its decided transactions are carried out at once).
    fresh: std::sync::atomic::AtomicBool,
    /// Shared by a cluster's coordinators of one broker.
    pub counts: Arc<Counts>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").finish_non_exhaustive()
    }
}

/// Fences a producer: PRODUCER_FENCED from the version that knows it,
/// INVALID_PRODUCER_EPOCH before (KIP-588).
pub fn fenced(new_code: bool) -> i16 {
    if new_code {
        PRODUCER_FENCED
    } else {
        INVALID_PRODUCER_EPOCH
    }
}

/// Why a request about a transaction was refused, before the error code
/// its API version answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Another producer (or a later epoch) owns the transactional id.
    Fenced,
    Code(i16),
}

impl Refused {
    pub fn code(self, new_fenced_code: bool) -> i16 {
        match self {
            Refused::Fenced => fenced(new_fenced_code),
            Refused::Code(c) => c,
        }
    }
}

impl Coordinator {
    /// Opens the coordinator's journal in `data_dir` (`None`: state in
    /// memory only, for tests).
    ///
    /// # Errors
    /// I/O errors reading the journal.
    pub fn open(
        data_dir: Option<&std::path::Path>,
        sync: bool,
        settings: Settings,
    ) -> Result<Self, LogError> {
        let (sink, txns) = match data_dir {
            Some(d) => {
                let (j, t) = Journal::open(d, sync)?;
                (Sink::File(j), t)
            }
            None => (Sink::Memory, HashMap::new()),
        };
        Ok(Self::with_sink(sink, txns, settings, 0))
    }

    /// The coordinator of the transactional ids of a `__transaction_state`
    /// partition this broker leads under `leadership`, with the state
    /// replayed from it.
    pub fn replicated(
        leadership: Arc<Leadership>,
        sync: bool,
        txns: HashMap<String, TxnMeta>,
        settings: Settings,
        counts: Arc<Counts>,
    ) -> Self {
        let epoch = leadership.leader_epoch;
        let upto = leadership.log().end_offset();
        let sink = Sink::Partition {
            leadership,
            sync,
            upto,
        };
        let mut c = Self::with_sink(sink, txns, settings, epoch);
        c.counts = counts;
        c
    }

    fn with_sink(
        sink: Sink,
        txns: HashMap<String, TxnMeta>,
        settings: Settings,
        coordinator_epoch: i32,
    ) -> Self {
        let by_pid = txns
            .iter()
            .map(|(id, m)| (m.producer_id, id.clone()))
            .collect();
        Self {
            inner: RwLock::new(Inner { sink, txns, by_pid }),
            completing: Mutex::new(HashSet::new()),
            settings,
            coordinator_epoch,
            fresh: std::sync::atomic::AtomicBool::new(true),
            counts: Arc::default(),
        }
    }

    /// Whether this coordinator was loaded since the last call.
    pub fn take_fresh(&self) -> bool {
        self.fresh.swap(false, Ordering::AcqRel)
    }

    /// The leadership a cluster's coordinator serves under.
    pub fn leadership(&self) -> Option<Arc<Leadership>> {
        match &self.inner.read().sink {
            Sink::Partition { leadership, .. } => Some(Arc::clone(leadership)),
            _ => None,
        }
    }

    /// In a cluster: waits until every change journaled so far is held by
    /// the in-sync replicas of the `__transaction_state` partition (and
    /// fsynced here, unless `--fsync never`). At once on a single node,
    /// whose journal writes are synchronous.
    ///
    /// # Errors
    /// `NOT_COORDINATOR` when the leadership ended,
    /// `COORDINATOR_NOT_AVAILABLE` when the replicas did not confirm in
    /// time, `KAFKA_STORAGE_ERROR` for a failed fsync.
    pub async fn settle(&self) -> Result<(), i16> {
        let (l, sync, upto) = match &self.inner.read().sink {
            Sink::Partition {
                leadership,
                sync,
                upto,
            } => (Arc::clone(leadership), *sync, *upto),
            _ => return Ok(()),
        };
        l.appended();
        let log = l.log();
        let flushed = async {
            if sync {
                log.flush_to(upto).await.map_err(|e| {
                    tracing::error!(error = %e, "fsync of the transaction state failed");
                    KAFKA_STORAGE_ERROR
                })
            } else {
                Ok(())
            }
        };
        let (flushed, replicated) =
            futures::future::join(flushed, l.committed(upto, REPLICATION_TIMEOUT)).await;
        flushed?;
        replicated.map_err(|e| match e {
            Unreplicated::Deposed => NOT_COORDINATOR,
            Unreplicated::TimedOut => COORDINATOR_NOT_AVAILABLE,
        })
    }

    /// Checks an owner's producer id and epoch against `meta`.
    fn owner(meta: &TxnMeta, producer_id: i64, epoch: i16) -> Result<(), Refused> {
        if meta.producer_id != producer_id {
            return Err(Refused::Code(INVALID_PRODUCER_ID_MAPPING));
        }
        if meta.epoch != epoch {
            return Err(Refused::Fenced);
        }
        Ok(())
    }

    /// InitProducerId with a transactional id: a producer id and a new
    /// epoch, fencing every older producer of the id. An open transaction
    /// is aborted first. `expected` is the producer id and epoch the
    /// client had (KIP-360), or `None`.
    ///
    /// # Errors
    /// A refusal: a bad timeout, a transaction being decided
    /// (`CONCURRENT_TRANSACTIONS`, retried by clients), a producer that is
    /// not the id's owner, a storage error.
    pub async fn init_producer_id(
        &self,
        p: &dyn Participants,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        allocate: impl std::future::Future<Output = Result<i64, i16>>,
        now_ms: i64,
    ) -> Result<(i64, i16), Refused> {
        if timeout_ms <= 0 || timeout_ms > self.settings.max_timeout_ms {
            return Err(Refused::Code(INVALID_TRANSACTION_TIMEOUT));
        }
        let ongoing = {
            let inner = self.inner.read();
            inner.txns.get(id).cloned()
        };
        if let Some(m) = &ongoing {
            if let Some((pid, epoch)) = expected {
                let known = m.producer_id == pid && (m.epoch == epoch || m.last_epoch == epoch);
                if !known {
                    return Err(Refused::Fenced);
                }
            }
            if m.phase.is_prepared() || self.completing.lock().contains(id) {
                return Err(Refused::Code(CONCURRENT_TRANSACTIONS));
            }
            if m.phase == Phase::Ongoing {
                // The new producer's epoch fences the old one in every
                // partition its transaction touched.
                self.abort_fencing(p, id, m.producer_id, m.epoch, false, now_ms)
                    .await?;
            }
        }
        // A new id, or one whose epochs are exhausted, needs a producer id
        // (in a cluster from the quorum, so before the lock).
        let needs_id = self
            .inner
            .read()
            .txns
            .get(id)
            .is_none_or(|m| m.epoch >= i16::MAX - 1);
        let fresh = if needs_id {
            Some(allocate.await.map_err(Refused::Code)?)
        } else {
            None
        };
        let (pid, epoch) = {
            let mut inner = self.inner.write();
            Self::next_producer(&mut inner, id, fresh, timeout_ms, now_ms)?
        };
        self.settle().await.map_err(Refused::Code)?;
        Ok((pid, epoch))
    }

    /// The id's producer id and epoch for a new producer: a first one,
    /// or the epoch bumped (a new producer id once epochs run out).
    fn next_producer(
        inner: &mut Inner,
        id: &str,
        fresh: Option<i64>,
        timeout_ms: i32,
        now_ms: i64,
    ) -> Result<(i64, i16), Refused> {
        let mut meta = match inner.txns.get(id) {
            None => {
                let pid = fresh.ok_or(Refused::Code(CONCURRENT_TRANSACTIONS))?;
                let meta = TxnMeta::new(pid, timeout_ms, now_ms);
                inner.put(id, meta.clone()).map_err(Refused::Code)?;
                return Ok((meta.producer_id, meta.epoch));
            }
            Some(m) if m.phase == Phase::Ongoing || m.phase.is_prepared() => {
                return Err(Refused::Code(CONCURRENT_TRANSACTIONS));
            }
            Some(m) => m.clone(),
        };
        if meta.epoch >= i16::MAX - 1 {
            // Epochs exhausted: a new producer id, as Kafka does.
            meta.producer_id = fresh.ok_or(Refused::Code(CONCURRENT_TRANSACTIONS))?;
            meta.epoch = 0;
            meta.last_epoch = -1;
        } else {
            meta.last_epoch = meta.epoch;
            meta.epoch += 1;
        }
        meta.timeout_ms = timeout_ms;
        meta.phase = Phase::Empty;
        meta.partitions.clear();
        meta.groups.clear();
        meta.offsets.clear();
        meta.hand_backs.clear();
        meta.handed_back = false;
        meta.started_ms = -1;
        meta.updated_ms = now_ms;
        inner.put(id, meta.clone()).map_err(Refused::Code)?;
        Ok((meta.producer_id, meta.epoch))
    }

    /// Begins the transaction when the id has none open.
    fn begin(meta: &mut TxnMeta, now_ms: i64) -> Result<(), Refused> {
        match meta.phase {
            Phase::Ongoing => Ok(()),
            Phase::PrepareCommit | Phase::PrepareAbort => {
                Err(Refused::Code(CONCURRENT_TRANSACTIONS))
            }
            Phase::Empty | Phase::CompleteCommit | Phase::CompleteAbort => {
                meta.phase = Phase::Ongoing;
                meta.partitions.clear();
                meta.groups.clear();
                meta.offsets.clear();
                meta.hand_backs.clear();
                meta.handed_back = false;
                meta.started_ms = now_ms;
                Ok(())
            }
        }
    }

    /// AddPartitionsToTxn: adds partitions to the id's transaction,
    /// beginning it. Every partition gets the same code; `known` says which
    /// partitions exist (the others are answered
    /// `UNKNOWN_TOPIC_OR_PARTITION`, the rest `OPERATION_NOT_ATTEMPTED`).
    pub fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        known: impl Fn(&str, i32) -> bool,
        now_ms: i64,
    ) -> Vec<Result<(), Refused>> {
        let unknown: Vec<bool> = partitions.iter().map(|(t, p)| !known(t, *p)).collect();
        if unknown.iter().any(|u| *u) {
            return unknown
                .into_iter()
                .map(|u| {
                    Err(Refused::Code(if u {
                        UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        OPERATION_NOT_ATTEMPTED
                    }))
                })
                .collect();
        }
        let r = self.change(id, producer_id, epoch, now_ms, |m| {
            let added = partitions.iter().any(|tp| !m.partitions.contains(tp));
            m.partitions.extend(partitions.iter().cloned());
            added
        });
        vec![r; partitions.len()]
    }

    /// AddOffsetsToTxn: the transaction will commit offsets of `group`.
    ///
    /// # Errors
    /// As for [`Coordinator::add_partitions`].
    pub fn add_offsets(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        now_ms: i64,
    ) -> Result<(), Refused> {
        self.change(id, producer_id, epoch, now_ms, |m| {
            m.groups.insert(group.to_string())
        })
    }

    /// TxnOffsetCommit: offsets of `group` that become committed when the
    /// transaction commits. The group must have been added.
    ///
    /// # Errors
    /// `INVALID_TXN_STATE` when the transaction is not open with the group;
    /// as for [`Coordinator::add_partitions`].
    pub fn commit_offsets(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<((String, i32), Committed)>,
        now_ms: i64,
    ) -> Result<(), Refused> {
        {
            let inner = self.inner.read();
            let m = inner
                .txns
                .get(id)
                .ok_or(Refused::Code(INVALID_PRODUCER_ID_MAPPING))?;
            Self::owner(m, producer_id, epoch)?;
            if m.phase != Phase::Ongoing || !m.groups.contains(group) {
                return Err(Refused::Code(INVALID_TXN_STATE));
            }
        }
        self.change(id, producer_id, epoch, now_ms, |m| {
            let g = m.offsets.entry(group.to_string()).or_default();
            for (tp, c) in offsets {
                g.insert(tp, c);
            }
            true
        })
    }

    /// Applies `f` to the id's open transaction (beginning it) and
    /// journals the result when `f` says it changed.
    fn change(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        now_ms: i64,
        f: impl FnOnce(&mut TxnMeta) -> bool,
    ) -> Result<(), Refused> {
        if self.completing.lock().contains(id) {
            return Err(Refused::Code(CONCURRENT_TRANSACTIONS));
        }
        let mut inner = self.inner.write();
        let mut meta = inner
            .txns
            .get(id)
            .cloned()
            .ok_or(Refused::Code(INVALID_PRODUCER_ID_MAPPING))?;
        Self::owner(&meta, producer_id, epoch)?;
        let was = meta.phase;
        Self::begin(&mut meta, now_ms)?;
        let changed = f(&mut meta);
        if changed || was != meta.phase {
            meta.updated_ms = now_ms;
            inner.put(id, meta).map_err(Refused::Code)?;
        }
        Ok(())
    }

    /// Runs `append` (a transactional batch's append) when the producer
    /// may write to the partition: its id's transaction is open with the
    /// partition added, at its epoch. The transaction cannot be decided
    /// while `append` runs.
    ///
    /// # Errors
    /// `INVALID_PRODUCER_EPOCH` for an older epoch, `INVALID_TXN_STATE` when
    /// the partition is not in an open transaction,
    /// `INVALID_PRODUCER_ID_MAPPING` for a producer id no transactional id
    /// has.
    pub fn with_open<R>(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
        append: impl FnOnce() -> R,
    ) -> Result<R, i16> {
        let inner = self.inner.read();
        let m = inner
            .by_pid
            .get(&producer_id)
            .and_then(|id| inner.txns.get(id))
            .ok_or(INVALID_PRODUCER_ID_MAPPING)?;
        if m.producer_id != producer_id || epoch != m.epoch {
            return Err(INVALID_PRODUCER_EPOCH);
        }
        if m.phase != Phase::Ongoing || !m.partitions.contains(&(topic.to_string(), partition)) {
            return Err(INVALID_TXN_STATE);
        }
        Ok(append())
    }

    /// Holds a transactional batch produced to a retry topic (a hand-back)
    /// until its transaction ends: passed to the retry scheduler if it
    /// commits, dropped if it aborts. The same checks as
    /// [`Coordinator::with_open`].
    ///
    /// # Errors
    /// As for [`Coordinator::with_open`]; `MESSAGE_TOO_LARGE` past
    /// [`MAX_HELD_BYTES`] in one transaction; storage errors.
    pub fn hold(&self, producer_id: i64, epoch: i16, batch: HeldBatch) -> Result<(), i16> {
        let mut guard = self.inner.write();
        let inner = &mut *guard;
        let id = inner
            .by_pid
            .get(&producer_id)
            .cloned()
            .ok_or(INVALID_PRODUCER_ID_MAPPING)?;
        let mut meta = inner
            .txns
            .get(&id)
            .cloned()
            .ok_or(INVALID_PRODUCER_ID_MAPPING)?;
        if meta.producer_id != producer_id || epoch != meta.epoch {
            return Err(INVALID_PRODUCER_EPOCH);
        }
        let tp = (batch.topic.clone(), batch.partition);
        if meta.phase != Phase::Ongoing || !meta.partitions.contains(&tp) {
            return Err(INVALID_TXN_STATE);
        }
        let held: usize = meta.hand_backs.iter().map(|b| b.records.len()).sum();
        if held + batch.records.len() > MAX_HELD_BYTES {
            tracing::warn!(transactional_id = %id, held, "a transaction holds too many hand-backs");
            return Err(MESSAGE_TOO_LARGE);
        }
        // Taken before it is journaled, so that a rewrite of the journal
        // at this write keeps it; put back as it was if the write fails.
        let key = meta.txn_key();
        meta.hand_backs.push(batch.clone());
        let before = inner.txns.insert(id.clone(), meta);
        let written = match &mut inner.sink {
            Sink::Memory => Ok(()),
            Sink::File(j) => j
                .write_hand_back(&id, key, &batch, &inner.txns)
                .map_err(|e| {
                    tracing::error!(transactional_id = %id, error = %e, "failed to journal a hand-back");
                    KAFKA_STORAGE_ERROR
                }),
            sink @ Sink::Partition { .. } => {
                sink.append_entry(&id, store::record_value(&id, inner.txns.get(&id)))
            }
        };
        if let Err(code) = written {
            if let Some(before) = before {
                inner.txns.insert(id, before);
            }
            return Err(code);
        }
        Ok(())
    }

    /// EndTxn: commits or aborts the id's transaction. Answers once the
    /// markers are written and the offsets committed; a retry of an end
    /// already made is answered again.
    ///
    /// # Errors
    /// `INVALID_TXN_STATE` for an end that does not match the
    /// transaction's, `CONCURRENT_TRANSACTIONS` while it is being decided,
    /// a producer that is not the owner, storage errors (the decision
    /// stands and is carried out later).
    pub async fn end_txn(
        &self,
        p: &dyn Participants,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<(), Refused> {
        if self.completing.lock().contains(id) {
            return Err(Refused::Code(CONCURRENT_TRANSACTIONS));
        }
        let meta = {
            let mut inner = self.inner.write();
            let mut meta = inner
                .txns
                .get(id)
                .cloned()
                .ok_or(Refused::Code(INVALID_PRODUCER_ID_MAPPING))?;
            if meta.producer_id != producer_id {
                return Err(Refused::Code(INVALID_PRODUCER_ID_MAPPING));
            }
            // A retry of an end that fenced (a timeout) is answered with
            // the fencing.
            if meta.epoch != epoch {
                return Err(Refused::Fenced);
            }
            match (meta.phase, commit) {
                (Phase::CompleteCommit, true) | (Phase::CompleteAbort, false) => return Ok(()),
                // A retry of an end not carried out yet (a storage error,
                // a partition without a leader, a new coordinator): carried
                // out now.
                (Phase::PrepareCommit, true) | (Phase::PrepareAbort, false) => meta,
                (Phase::Ongoing, _) => {
                    meta.phase = if commit {
                        Phase::PrepareCommit
                    } else {
                        Phase::PrepareAbort
                    };
                    meta.updated_ms = now_ms;
                    inner.put(id, meta.clone()).map_err(Refused::Code)?;
                    meta
                }
                _ => return Err(Refused::Code(INVALID_TXN_STATE)),
            }
        };
        self.complete(p, id, meta, now_ms)
            .await
            .map_err(Refused::Code)
    }

    /// Aborts the id's open transaction with a new epoch, fencing its
    /// producer: at a timeout (`timed_out`), or for a new producer of the
    /// id.
    async fn abort_fencing(
        &self,
        p: &dyn Participants,
        id: &str,
        producer_id: i64,
        epoch: i16,
        timed_out: bool,
        now_ms: i64,
    ) -> Result<(), Refused> {
        let meta = {
            let mut inner = self.inner.write();
            let Some(mut meta) = inner.txns.get(id).cloned() else {
                return Ok(());
            };
            if meta.producer_id != producer_id
                || meta.epoch != epoch
                || meta.phase != Phase::Ongoing
            {
                return Ok(());
            }
            if meta.epoch >= i16::MAX - 1 {
                return Err(Refused::Code(CONCURRENT_TRANSACTIONS));
            }
            meta.last_epoch = meta.epoch;
            meta.epoch += 1;
            meta.phase = Phase::PrepareAbort;
            meta.updated_ms = now_ms;
            inner.put(id, meta.clone()).map_err(Refused::Code)?;
            meta
        };
        if timed_out {
            self.counts.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                transactional_id = id,
                producer_id,
                timeout_ms = meta.timeout_ms,
                "aborting a transaction open longer than its timeout"
            );
        }
        self.complete(p, id, meta, now_ms)
            .await
            .map_err(Refused::Code)
    }

    /// Carries out a decided transaction: markers, offsets, then the end
    /// journaled. Markers go only where the producer's transaction is open
    /// (a retry after a crash writes none twice).
    async fn complete(
        &self,
        p: &dyn Participants,
        id: &str,
        meta: TxnMeta,
        now_ms: i64,
    ) -> Result<(), i16> {
        if !self.completing.lock().insert(id.to_string()) {
            return Err(CONCURRENT_TRANSACTIONS);
        }
        // The decision is held by the replicas before any marker is
        // written (in a cluster), and the end before it is answered.
        let r = match self.settle().await {
            Ok(()) => self.write_markers(p, id, &meta, now_ms).await,
            Err(code) => Err(code),
        };
        let r = match r {
            Ok(()) => self.settle().await,
            Err(code) => Err(code),
        };
        self.completing.lock().remove(id);
        r
    }

    async fn write_markers(
        &self,
        p: &dyn Participants,
        id: &str,
        meta: &TxnMeta,
        now_ms: i64,
    ) -> Result<(), i16> {
        let commit = meta.phase == Phase::PrepareCommit;
        let marker = if commit {
            Marker::Commit
        } else {
            Marker::Abort
        };
        let mut written = Vec::new();
        let batch = crate::log::txn::marker_batch(
            meta.producer_id,
            meta.epoch,
            marker,
            self.coordinator_epoch,
            now_ms,
        );
        let partitions: Vec<(String, i32)> = meta.partitions.iter().cloned().collect();
        let remote = match p.send_markers(partitions, bytes::Bytes::from(batch)) {
            // A cluster: every partition gets the marker, through its
            // leader (a partition where the producer wrote nothing keeps
            // a marker that ends nothing, as in Kafka).
            Some(sent) => {
                if let Err(e) = sent.await {
                    tracing::warn!(transactional_id = id, error = %e, "a transaction marker is not written yet");
                    return Err(COORDINATOR_NOT_AVAILABLE);
                }
                true
            }
            None => false,
        };
        for (topic, partition) in meta.partitions.iter().filter(|_| !remote) {
            let Some(log) = p.partition(topic, *partition) else {
                continue;
            };
            if !log.has_open_transaction(meta.producer_id) {
                continue;
            }
            match log.append_marker(
                meta.producer_id,
                meta.epoch,
                marker,
                self.coordinator_epoch,
                now_ms,
            ) {
                Ok(info) => written.push((log, info.last_offset + 1)),
                Err(LogError::Closed) => {}
                Err(e) => {
                    tracing::error!(transactional_id = id, topic, partition, error = %e, "failed to write a transaction marker");
                    return Err(KAFKA_STORAGE_ERROR);
                }
            }
        }
        if p.sync_markers() {
            // The partitions' fsyncs run at once.
            let synced =
                futures::future::join_all(written.iter().map(|(log, upto)| log.flush_to(*upto)))
                    .await;
            if let Some(e) = synced.into_iter().find_map(Result::err) {
                tracing::error!(transactional_id = id, error = %e, "failed to sync a transaction marker");
                return Err(KAFKA_STORAGE_ERROR);
            }
        }
        if commit && !meta.offsets.is_empty() {
            let changes = meta
                .offsets
                .iter()
                .flat_map(|(group, o)| {
                    o.iter().map(move |((topic, partition), c)| Change::Commit {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        committed: c.clone(),
                    })
                })
                .collect();
            if let Err(e) = p.commit_offsets(changes).await {
                tracing::error!(transactional_id = id, error = %e, "failed to commit a transaction's offsets");
                return Err(KAFKA_STORAGE_ERROR);
            }
        }
        if commit && !meta.handed_back && !meta.hand_backs.is_empty() {
            for b in &meta.hand_backs {
                if let Err(e) = p.hand_back(b).await {
                    tracing::error!(transactional_id = id, topic = %b.topic, error = %e, "failed to hold a committed transaction's hand-back");
                    return Err(KAFKA_STORAGE_ERROR);
                }
            }
            // Journaled as passed on, so that a restart does not pass them
            // on again.
            let mut inner = self.inner.write();
            if let Some(mut now) = inner.txns.get(id).cloned() {
                if now.txn_key() == meta.txn_key() && now.phase == meta.phase {
                    now.hand_backs.clear();
                    now.handed_back = true;
                    inner.put(id, now)?;
                }
            }
        }
        let mut inner = self.inner.write();
        let Some(mut now) = inner.txns.get(id).cloned() else {
            return Ok(());
        };
        if now.producer_id != meta.producer_id || now.epoch != meta.epoch || now.phase != meta.phase
        {
            return Ok(());
        }
        now.phase = if commit {
            Phase::CompleteCommit
        } else {
            Phase::CompleteAbort
        };
        now.offsets.clear();
        now.hand_backs.clear();
        now.updated_ms = now_ms;
        inner.put(id, now)?;
        let counter = if commit {
            &self.counts.committed
        } else {
            &self.counts.aborted
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Periodic work: aborts transactions open longer than their timeout,
    /// carries out decisions not yet carried out (after a restart, or a
    /// storage error), and forgets transactional ids idle longer than
    /// their expiration (Kafka's `transactional.id.expiration.ms`; a
    /// producer that comes back gets a new producer id).
    pub async fn tick(&self, p: &dyn Participants, now_ms: i64) {
        self.expire(now_ms);
        let (expired, decided): (Vec<_>, Vec<_>) = {
            let inner = self.inner.read();
            let completing = self.completing.lock();
            let mut expired = Vec::new();
            let mut decided = Vec::new();
            for (id, m) in &inner.txns {
                if completing.contains(id) {
                    continue;
                }
                if m.phase == Phase::Ongoing
                    && m.started_ms >= 0
                    && now_ms.saturating_sub(m.started_ms) > i64::from(m.timeout_ms)
                {
                    expired.push((id.clone(), m.producer_id, m.epoch));
                } else if m.phase.is_prepared() {
                    decided.push((id.clone(), m.clone()));
                }
            }
            (expired, decided)
        };
        for (id, pid, epoch) in expired {
            if let Err(e) = self.abort_fencing(p, &id, pid, epoch, true, now_ms).await {
                tracing::warn!(transactional_id = %id, error = ?e, "failed to abort a timed-out transaction");
            }
        }
        for (id, meta) in decided {
            if let Err(code) = self.complete(p, &id, meta, now_ms).await {
                tracing::warn!(transactional_id = %id, code, "failed to complete a transaction");
            }
        }
    }

    /// Forgets the transactional ids with no transaction open and no
    /// change for longer than the expiration.
    fn expire(&self, now_ms: i64) {
        let mut inner = self.inner.write();
        let completing = self.completing.lock().clone();
        let idle: Vec<String> = inner
            .txns
            .iter()
            .filter(|(id, m)| {
                matches!(
                    m.phase,
                    Phase::Empty | Phase::CompleteCommit | Phase::CompleteAbort
                ) && now_ms.saturating_sub(m.updated_ms) > self.settings.id_expiration_ms
                    && !completing.contains(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            if inner.remove(&id).is_err() {
                return;
            }
            tracing::info!(transactional_id = %id, "forgot an idle transactional id");
        }
    }

    /// At start: re-ends, in the partitions a completed transaction
    /// touched, what the journal says ended but a crash left open there (a
    /// marker that was not on disk yet).
    pub fn recover(&self, p: &dyn Participants, now_ms: i64) {
        let inner = self.inner.read();
        for (id, m) in &inner.txns {
            let marker = match m.phase {
                Phase::CompleteCommit => Marker::Commit,
                Phase::CompleteAbort => Marker::Abort,
                _ => continue,
            };
            for (topic, partition) in &m.partitions {
                let Some(log) = p.partition(topic, *partition) else {
                    continue;
                };
                if !log.has_open_transaction(m.producer_id) {
                    continue;
                }
                tracing::warn!(transactional_id = %id, topic, partition, "writing a transaction marker lost in a crash");
                if let Err(e) = log.append_marker(
                    m.producer_id,
                    m.epoch,
                    marker,
                    self.coordinator_epoch,
                    now_ms,
                ) {
                    tracing::error!(transactional_id = %id, error = %e, "failed to write a transaction marker");
                }
            }
        }
    }

    /// fsync the journal (shutdown).
    pub fn flush(&self) {
        if let Sink::File(j) = &self.inner.read().sink {
            j.flush();
        }
    }
}

/// The code a result answers with.
pub fn code_of(r: Result<(), Refused>, new_fenced_code: bool) -> i16 {
    match r {
        Ok(()) => NONE,
        Err(e) => e.code(new_fenced_code),
    }
}

#[cfg(test)]
mod tests;
