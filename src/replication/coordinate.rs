//! Calls between the coordinators of different brokers in a cluster: a
//! group's coordinator passes TxnOffsetCommit on to the transaction's
//! coordinator (which keeps the offsets with the transaction, as on a
//! single node), the transaction's coordinator has a committed
//! transaction's offsets stored by each group's coordinator, and a
//! `require_stable` OffsetFetch asks every broker whether an open
//! transaction will commit an offset of the group.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::broker::Broker;
use crate::cluster::{CoordinatorCall, CoordinatorReply, OffsetRecord};
use crate::group::{Change, Committed};
use crate::protocol::errors::{
    COORDINATOR_NOT_AVAILABLE, INVALID_PRODUCER_ID_MAPPING, NONE, NOT_COORDINATOR,
    REQUEST_TIMED_OUT,
};
use crate::txn::HeldBatch;

/// One offset of a transaction, as the coordinators keep it.
pub type TxnOffset = ((String, i32), Committed);

fn record_of(((topic, partition), c): &TxnOffset) -> OffsetRecord {
    OffsetRecord {
        topic: topic.clone(),
        partition: *partition,
        offset: c.offset,
        leader_epoch: c.leader_epoch,
        metadata: c.metadata.clone(),
        commit_time_ms: c.commit_time_ms,
    }
}

fn offset_of(r: OffsetRecord) -> TxnOffset {
    (
        (r.topic, r.partition),
        Committed {
            offset: r.offset,
            leader_epoch: r.leader_epoch,
            metadata: r.metadata,
            commit_time_ms: r.commit_time_ms,
        },
    )
}

/// Answers another broker's call.
pub(super) async fn serve(broker: &Arc<Broker>, call: CoordinatorCall) -> CoordinatorReply {
    match call {
        CoordinatorCall::TxnOffsets {
            transactional_id,
            producer_id,
            producer_epoch,
            group,
            offsets,
            new_fenced_code,
        } => CoordinatorReply::Code(
            txn_offsets_here(
                broker,
                &transactional_id,
                (producer_id, producer_epoch),
                &group,
                offsets.into_iter().map(offset_of).collect(),
                new_fenced_code,
            )
            .await,
        ),
        CoordinatorCall::CommitOffsets { group, offsets } => {
            let changes = offsets
                .into_iter()
                .map(|r| {
                    let ((topic, partition), committed) = offset_of(r);
                    Change::Commit {
                        group: group.clone(),
                        topic,
                        partition,
                        committed,
                    }
                })
                .collect();
            CoordinatorReply::Code(match broker.store_offsets(&group, changes).await {
                Ok(()) => NONE,
                Err(code) => code,
            })
        }
        CoordinatorCall::Hold {
            producer_id,
            producer_epoch,
            topic,
            partition,
            records,
        } => {
            let batch = crate::txn::HeldBatch {
                topic,
                partition,
                records: bytes::Bytes::from(records),
            };
            CoordinatorReply::Code(hold_here(broker, (producer_id, producer_epoch), batch).await)
        }
        CoordinatorCall::PendingOffsets { group, partitions } => {
            CoordinatorReply::Pending(pending_here(broker, &group, partitions))
        }
    }
}

/// TxnOffsetCommit at this broker's coordinator of the transactional id.
async fn txn_offsets_here(
    broker: &Arc<Broker>,
    id: &str,
    (producer_id, epoch): (i64, i16),
    group: &str,
    offsets: Vec<TxnOffset>,
    new_fenced_code: bool,
) -> i16 {
    let c = match broker.txn_coordinator(id).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let r = c.commit_offsets(
        id,
        producer_id,
        epoch,
        group,
        offsets,
        crate::broker::now_ms(),
    );
    match crate::txn::code_of(r, new_fenced_code) {
        NONE => c.settle().await.err().unwrap_or(NONE),
        code => code,
    }
}

/// TxnOffsetCommit: the offsets go to the transaction's coordinator, here
/// or on the broker that leads the id's `__transaction_state` partition.
pub async fn txn_offsets(
    broker: &Arc<Broker>,
    id: &str,
    producer: (i64, i16),
    group: &str,
    offsets: Vec<TxnOffset>,
    new_fenced_code: bool,
) -> i16 {
    let Some(cluster) = broker.cluster.get() else {
        return txn_offsets_here(broker, id, producer, group, offsets, new_fenced_code).await;
    };
    let at = match broker.transaction_coordinator(id) {
        Ok(Some(b)) => b.id,
        Ok(None) => cluster.node_id(),
        Err(code) => return code,
    };
    if at == cluster.node_id() {
        return txn_offsets_here(broker, id, producer, group, offsets, new_fenced_code).await;
    }
    let Some(addr) = cluster.peer_addr(at) else {
        return COORDINATOR_NOT_AVAILABLE;
    };
    let call = CoordinatorCall::TxnOffsets {
        transactional_id: id.to_string(),
        producer_id: producer.0,
        producer_epoch: producer.1,
        group: group.to_string(),
        offsets: offsets.iter().map(record_of).collect(),
        new_fenced_code,
    };
    match cluster.coordinate(&addr, call).await {
        Ok(CoordinatorReply::Code(code)) => code,
        Ok(CoordinatorReply::Pending(_)) => COORDINATOR_NOT_AVAILABLE,
        Err(e) => {
            tracing::warn!(transactional_id = id, error = %e, "cannot reach the transaction coordinator");
            // The client looks its coordinator up again.
            NOT_COORDINATOR
        }
    }
}

/// Stores a committed transaction's offsets through each group's
/// coordinator (this broker's or another's).
///
/// # Errors
/// A group whose coordinator did not store them, in words.
pub async fn commit_offsets_at_coordinators(
    broker: &Arc<Broker>,
    changes: Vec<Change>,
) -> Result<(), String> {
    let Some(cluster) = broker.cluster.get() else {
        return Err("not in a cluster".into());
    };
    let mut by_group: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for c in changes {
        by_group.entry(c.group().to_string()).or_default().push(c);
    }
    for (group, changes) in by_group {
        let at = broker
            .group_coordinator(&group)
            .map_err(|code| format!("group {group}: no coordinator ({code})"))?
            .map_or(cluster.node_id(), |b| b.id);
        let code = if at == cluster.node_id() {
            match broker.store_offsets(&group, changes).await {
                Ok(()) => NONE,
                Err(code) => code,
            }
        } else {
            let addr = cluster
                .peer_addr(at)
                .ok_or_else(|| format!("group {group}: its coordinator {at} has no address"))?;
            let offsets = changes
                .into_iter()
                .filter_map(|c| match c {
                    Change::Commit {
                        topic,
                        partition,
                        committed,
                        ..
                    } => Some(record_of(&((topic, partition), committed))),
                    _ => None,
                })
                .collect();
            let call = CoordinatorCall::CommitOffsets {
                group: group.clone(),
                offsets,
            };
            match cluster.coordinate(&addr, call).await? {
                CoordinatorReply::Code(code) => code,
                CoordinatorReply::Pending(_) => COORDINATOR_NOT_AVAILABLE,
            }
        };
        if code != NONE {
            return Err(format!("group {group}: its coordinator answered {code}"));
        }
    }
    Ok(())
}

/// The live brokers other than this one.
fn other_brokers(cluster: &crate::cluster::Cluster) -> Vec<crate::cluster::NodeId> {
    cluster.with_metadata(|m| {
        m.brokers
            .values()
            .filter(|b| b.id != cluster.node_id() && !b.fenced)
            .map(|b| b.id)
            .collect()
    })
}

/// Holds a transactional hand-back in the transaction of the coordinator
/// here that has its producer id (`INVALID_PRODUCER_ID_MAPPING` when none
/// has).
async fn hold_here(broker: &Broker, (producer_id, epoch): (i64, i16), batch: HeldBatch) -> i16 {
    let Some(c) = broker
        .txn_coordinators()
        .into_iter()
        .find(|c| c.knows_producer(producer_id))
    else {
        return INVALID_PRODUCER_ID_MAPPING;
    };
    match c.hold(producer_id, epoch, batch) {
        Ok(()) => c.settle().await.err().unwrap_or(NONE),
        Err(code) => code,
    }
}

/// Holds a transactional hand-back to a retry topic until its transaction
/// ends, in the coordinator that has its producer id: this broker's, or in
/// a cluster whichever broker's answers for it (the batch names the
/// producer id only, not its transactional id, so every broker is asked).
pub async fn hold_in_transaction(broker: &Broker, producer: (i64, i16), batch: HeldBatch) -> i16 {
    let here = hold_here(broker, producer, batch.clone()).await;
    let Some(cluster) = broker.cluster.get() else {
        return here;
    };
    if here != INVALID_PRODUCER_ID_MAPPING {
        return here;
    }
    let others = other_brokers(cluster);
    let mut unanswered = false;
    for id in others {
        let call = CoordinatorCall::Hold {
            producer_id: producer.0,
            producer_epoch: producer.1,
            topic: batch.topic.clone(),
            partition: batch.partition,
            records: batch.records.to_vec(),
        };
        let answer = match cluster.peer_addr(id) {
            Some(addr) => cluster.coordinate(&addr, call).await,
            None => Err(format!("broker {id} has no address")),
        };
        match answer {
            Ok(CoordinatorReply::Code(INVALID_PRODUCER_ID_MAPPING)) => {}
            Ok(CoordinatorReply::Code(code)) => return code,
            Ok(CoordinatorReply::Pending(_)) | Err(_) => unanswered = true,
        }
    }
    if unanswered {
        // The coordinator may be the broker that did not answer: the
        // producer retries.
        REQUEST_TIMED_OUT
    } else {
        INVALID_PRODUCER_ID_MAPPING
    }
}

/// The partitions of `group` whose offsets a transaction open on this
/// broker's coordinators will commit.
fn pending_here(
    broker: &Broker,
    group: &str,
    partitions: Vec<(String, i32)>,
) -> Vec<(String, i32)> {
    let coordinators = broker.txn_coordinators();
    partitions
        .into_iter()
        .filter(|(t, p)| {
            coordinators
                .iter()
                .any(|c| c.has_pending_offset(group, t, *p))
        })
        .collect()
}

/// The partitions of `group` whose offsets an open transaction will
/// commit, asking every broker's coordinators in a cluster. A broker that
/// does not answer counts as holding every one of them (the consumer asks
/// again).
pub async fn pending_offsets(
    broker: &Broker,
    group: &str,
    partitions: Vec<(String, i32)>,
) -> Vec<(String, i32)> {
    let Some(cluster) = broker.cluster.get() else {
        return pending_here(broker, group, partitions);
    };
    let mut out = pending_here(broker, group, partitions.clone());
    let others = other_brokers(cluster);
    let asks = others.into_iter().map(|id| {
        let call = CoordinatorCall::PendingOffsets {
            group: group.to_string(),
            partitions: partitions.clone(),
        };
        async move {
            match cluster.peer_addr(id) {
                Some(addr) => cluster.coordinate(&addr, call).await,
                None => Err(format!("broker {id} has no address")),
            }
        }
    });
    for answer in futures::future::join_all(asks).await {
        match answer {
            Ok(CoordinatorReply::Pending(p)) => out.extend(p),
            _ => return partitions,
        }
    }
    out.sort();
    out.dedup();
    out
}
