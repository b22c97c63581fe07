//! The coordinator against partition logs in a temporary directory.

use std::collections::HashMap;
use std::path::Path;

use super::*;
use crate::log::batch;
use crate::log::LogConfig;

struct Parts {
    logs: HashMap<(String, i32), Arc<PartitionLog>>,
    committed: Mutex<Vec<Change>>,
    handed_back: Mutex<Vec<HeldBatch>>,
}

impl Parts {
    fn new(dir: &Path) -> Self {
        let mut logs = HashMap::new();
        for (t, p) in [("a", 0), ("b", 0)] {
            let log = PartitionLog::open(&dir.join(format!("{t}-{p}")), LogConfig::default(), 0)
                .expect("open log");
            logs.insert((t.to_string(), p), Arc::new(log));
        }
        Self {
            logs,
            committed: Mutex::new(Vec::new()),
            handed_back: Mutex::new(Vec::new()),
        }
    }

    fn log(&self, t: &str) -> &Arc<PartitionLog> {
        &self.logs[&(t.to_string(), 0)]
    }
}

impl Participants for Parts {
    fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>> {
        self.logs.get(&(topic.to_string(), partition)).cloned()
    }
    fn sync_markers(&self) -> bool {
        true
    }
    fn commit_offsets(
        &self,
        changes: Vec<Change>,
    ) -> futures::future::BoxFuture<'_, Result<(), String>> {
        self.committed.lock().extend(changes);
        Box::pin(std::future::ready(Ok(())))
    }
    fn hand_back(&self, batch: &HeldBatch) -> futures::future::BoxFuture<'_, Result<(), String>> {
        self.handed_back.lock().push(batch.clone());
        Box::pin(std::future::ready(Ok(())))
    }
}

fn coordinator(dir: &Path) -> Coordinator {
    Coordinator::open(
        Some(dir),
        true,
        Settings {
            max_timeout_ms: 900_000,
            id_expiration_ms: 1_000_000,
        },
    )
    .expect("open coordinator")
}

fn txn_batch(pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let mut b = batch::tests::make_batch(2, 1_000);
    b[batch::field::ATTRIBUTES..batch::field::ATTRIBUTES + 2]
        .copy_from_slice(&0x10i16.to_be_bytes());
    batch::set_producer(&mut b, pid, epoch, seq);
    batch::update_crc(&mut b);
    b
}

fn known(_: &str, _: i32) -> bool {
    true
}

fn pids() -> impl FnMut() -> std::future::Ready<Result<i64, i16>> {
    let mut next = 1000;
    move || {
        next += 1;
        std::future::ready(Ok(next))
    }
}

#[tokio::test]
async fn a_new_producer_fences_the_old_and_aborts_its_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = Parts::new(dir.path());
    let c = coordinator(&dir.path().join("c"));
    let mut alloc = pids();
    let (pid, e0) = c
        .init_producer_id(&parts, "t", 60_000, None, alloc(), 0)
        .await
        .expect("init");
    assert_eq!(e0, 0);
    let r = c.add_partitions("t", pid, e0, &[("a".into(), 0)], known, 1);
    assert_eq!(r, vec![Ok(())]);
    c.with_open(pid, e0, "a", 0, || {
        parts.log("a").append(&txn_batch(pid, e0, 0), 1)
    })
    .expect("may write")
    .expect("append");
    assert_eq!(parts.log("a").last_stable_offset(), 0);
    // Not added: refused.
    assert_eq!(c.with_open(pid, e0, "b", 0, || ()), Err(INVALID_TXN_STATE));
    let (pid2, e1) = c
        .init_producer_id(&parts, "t", 60_000, None, alloc(), 2)
        .await
        .expect("init again");
    assert_eq!(pid2, pid);
    assert!(e1 > e0);
    assert_eq!(
        parts.log("a").last_stable_offset(),
        parts.log("a").end_offset()
    );
    assert_eq!(parts.log("a").aborted_transactions().len(), 1);
    // The old producer is fenced everywhere.
    assert_eq!(
        c.with_open(pid, e0, "a", 0, || ()),
        Err(INVALID_PRODUCER_EPOCH)
    );
    assert_eq!(
        c.end_txn(&parts, "t", pid, e0, true, 3).await,
        Err(Refused::Fenced)
    );
    assert!(matches!(
        parts.log("a").append(&txn_batch(pid, e0, 1), 3),
        Err(LogError::InvalidProducerEpoch)
    ));
    // KIP-360: a producer that knows a different epoch is fenced.
    assert_eq!(
        c.init_producer_id(&parts, "t", 60_000, Some((pid, 77)), alloc(), 4)
            .await,
        Err(Refused::Fenced)
    );
}

#[tokio::test]
async fn commit_writes_markers_and_the_offsets_abort_drops_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = Parts::new(dir.path());
    let c = coordinator(&dir.path().join("c"));
    let mut alloc = pids();
    let (pid, e) = c
        .init_producer_id(&parts, "t", 60_000, None, alloc(), 0)
        .await
        .expect("init");
    for (round, commit) in [(0, false), (1, true)] {
        let added = c.add_partitions("t", pid, e, &[("a".into(), 0), ("b".into(), 0)], known, 1);
        assert_eq!(added, vec![Ok(()), Ok(())]);
        c.add_offsets("t", pid, e, "g", 1).expect("add offsets");
        let off = Committed {
            offset: 10 + round,
            leader_epoch: -1,
            metadata: None,
            commit_time_ms: 1,
        };
        c.commit_offsets("t", pid, e, "g", vec![(("in".into(), 0), off)], 1)
            .expect("txn offsets");
        assert!(c.has_pending_offset("g", "in", 0));
        for t in ["a", "b"] {
            let seq = i32::try_from(round).expect("small") * 2;
            c.with_open(pid, e, t, 0, || {
                parts.log(t).append(&txn_batch(pid, e, seq), 1)
            })
            .expect("may write")
            .expect("append");
        }
        c.end_txn(&parts, "t", pid, e, commit, 2)
            .await
            .expect("end");
        assert!(!c.has_pending_offset("g", "in", 0));
        // A retry of the same end is answered the same; the other end is not.
        assert_eq!(c.end_txn(&parts, "t", pid, e, commit, 2).await, Ok(()));
        assert_eq!(
            c.end_txn(&parts, "t", pid, e, !commit, 2).await,
            Err(Refused::Code(INVALID_TXN_STATE))
        );
        for t in ["a", "b"] {
            let log = parts.log(t);
            assert_eq!(log.last_stable_offset(), log.end_offset());
        }
    }
    let committed = parts.committed.lock();
    assert_eq!(committed.len(), 1, "only the committed round's offsets");
    assert!(matches!(&committed[0], Change::Commit { committed, .. } if committed.offset == 11));
    assert_eq!(c.counts.committed.load(Ordering::Relaxed), 1);
    assert_eq!(c.counts.aborted.load(Ordering::Relaxed), 1);
    assert_eq!(parts.log("a").aborted_transactions().len(), 1);
}

#[tokio::test]
async fn a_timed_out_transaction_is_aborted_and_its_producer_fenced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = Parts::new(dir.path());
    let c = coordinator(&dir.path().join("c"));
    let mut alloc = pids();
    let (pid, e) = c
        .init_producer_id(&parts, "t", 1_000, None, alloc(), 0)
        .await
        .expect("init");
    c.add_partitions("t", pid, e, &[("a".into(), 0)], known, 10);
    c.with_open(pid, e, "a", 0, || {
        parts.log("a").append(&txn_batch(pid, e, 0), 10)
    })
    .expect("may write")
    .expect("append");
    c.tick(&parts, 500).await;
    assert_eq!(c.open_transactions(500).len(), 1, "not yet");
    c.tick(&parts, 2_000).await;
    assert!(c.open_transactions(2_000).is_empty());
    assert_eq!(c.counts.timed_out.load(Ordering::Relaxed), 1);
    assert_eq!(
        parts.log("a").last_stable_offset(),
        parts.log("a").end_offset()
    );
    assert_eq!(
        c.end_txn(&parts, "t", pid, e, true, 2_001).await,
        Err(Refused::Fenced)
    );
    // The fenced producer may ask for a new epoch with its old one (KIP-360).
    let (pid2, e2) = c
        .init_producer_id(&parts, "t", 1_000, Some((pid, e)), alloc(), 2_002)
        .await
        .expect("re-init");
    assert_eq!(pid2, pid);
    assert!(e2 > e + 1);
    assert_eq!(
        c.init_producer_id(&parts, "t", 1_000_000, None, alloc(), 2_003)
            .await,
        Err(Refused::Code(INVALID_TRANSACTION_TIMEOUT))
    );
}

#[tokio::test]
async fn a_decision_in_the_journal_is_carried_out_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = Parts::new(dir.path());
    let cdir = dir.path().join("c");
    let (pid, e) = {
        let c = coordinator(&cdir);
        let mut alloc = pids();
        let (pid, e) = c
            .init_producer_id(&parts, "t", 60_000, None, alloc(), 0)
            .await
            .expect("init");
        c.add_partitions("t", pid, e, &[("a".into(), 0)], known, 1);
        c.with_open(pid, e, "a", 0, || {
            parts.log("a").append(&txn_batch(pid, e, 0), 1)
        })
        .expect("may write")
        .expect("append");
        // The decision is journaled, then the broker dies before markers.
        let mut inner = c.inner.write();
        let mut m = inner.txns.get("t").cloned().expect("known");
        m.phase = Phase::PrepareCommit;
        inner.put("t", m).expect("journal");
        (pid, e)
    };
    let c = coordinator(&cdir);
    assert_eq!(c.describe("t").map(|m| m.phase), Some(Phase::PrepareCommit));
    assert_eq!(c.with_open(pid, e, "a", 0, || ()), Err(INVALID_TXN_STATE));
    c.tick(&parts, 5).await;
    assert_eq!(
        c.describe("t").map(|m| m.phase),
        Some(Phase::CompleteCommit)
    );
    let log = parts.log("a");
    assert_eq!(log.last_stable_offset(), log.end_offset());
    assert!(log.aborted_transactions().is_empty());
}

#[test]
fn unknown_partitions_fail_the_whole_add() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = coordinator(dir.path());
    let r = c.add_partitions(
        "t",
        1,
        0,
        &[("a".into(), 0), ("nope".into(), 0)],
        |t, _| t == "a",
        0,
    );
    assert_eq!(
        r,
        vec![
            Err(Refused::Code(OPERATION_NOT_ATTEMPTED)),
            Err(Refused::Code(UNKNOWN_TOPIC_OR_PARTITION))
        ]
    );
    assert_eq!(
        c.add_offsets("t", 1, 0, "g", 0),
        Err(Refused::Code(INVALID_PRODUCER_ID_MAPPING))
    );
}

#[tokio::test]
async fn hand_backs_are_passed_on_when_their_transaction_commits_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = Parts::new(dir.path());
    let cdir = dir.path().join("c");
    let held = |v: &'static [u8]| HeldBatch {
        topic: "b".into(),
        partition: 0,
        records: bytes::Bytes::from_static(v),
    };
    let (pid, e) = {
        let c = coordinator(&cdir);
        let mut alloc = pids();
        let (pid, e) = c
            .init_producer_id(&parts, "t", 60_000, None, alloc(), 0)
            .await
            .expect("init");
        // Not added to the transaction: refused.
        assert_eq!(c.hold(pid, e, held(b"x")), Err(INVALID_TXN_STATE));
        c.add_partitions("t", pid, e, &[("b".into(), 0)], known, 1);
        c.hold(pid, e, held(b"aborted")).expect("hold");
        c.end_txn(&parts, "t", pid, e, false, 2)
            .await
            .expect("abort");
        assert!(parts.handed_back.lock().is_empty(), "an abort drops them");
        c.add_partitions("t", pid, e, &[("b".into(), 0)], known, 3);
        c.hold(pid, e, held(b"one")).expect("hold");
        c.hold(pid, e, held(b"two")).expect("hold");
        (pid, e)
    };
    // A restart with the transaction open keeps its hand-backs.
    let c = coordinator(&cdir);
    c.end_txn(&parts, "t", pid, e, true, 4)
        .await
        .expect("commit");
    let got: Vec<_> = parts
        .handed_back
        .lock()
        .iter()
        .map(|b| b.records.clone())
        .collect();
    assert_eq!(got, vec![&b"one"[..], &b"two"[..]]);
    // Once passed on they are not passed on again after another restart.
    drop(c);
    let c = coordinator(&cdir);
    c.tick(&parts, 5).await;
    assert_eq!(parts.handed_back.lock().len(), 2);
    assert_eq!(c.describe("t").map(|m| m.hand_backs.len()), Some(0));
}

#[tokio::test]
async fn an_idle_transactional_id_is_forgotten_and_its_forgetting_journaled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = Parts::new(dir.path());
    let cdir = dir.path().join("c");
    let mut alloc = pids();
    let c = coordinator(&cdir);
    let (pid, _) = c
        .init_producer_id(&parts, "idle", 60_000, None, alloc(), 0)
        .await
        .expect("init");
    let (pid2, e2) = c
        .init_producer_id(&parts, "open", 60_000, None, alloc(), 0)
        .await
        .expect("init");
    c.add_partitions("open", pid2, e2, &[("a".into(), 0)], known, 0);
    // Only the idle one goes; an open transaction is aborted by its
    // timeout instead, which counts as a change.
    c.expire(1_000_001);
    assert!(c.describe("idle").is_none());
    assert!(c.describe("open").is_some());
    drop(c);
    let c = coordinator(&cdir);
    assert!(
        c.describe("idle").is_none(),
        "the forgetting survives a restart"
    );
    let (again, epoch) = c
        .init_producer_id(&parts, "idle", 60_000, None, alloc(), 1_000_002)
        .await
        .expect("init again");
    assert_ne!(again, pid, "a forgotten id gets a new producer id");
    assert_eq!(epoch, 0);
}
