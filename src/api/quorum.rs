//! Proposals to the metadata quorum that the admin APIs share: one change
//! at a time, answered once this broker has applied it.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use super::errors;
use crate::broker::Broker;
use crate::cluster;
use crate::security::replicated::{Applied, Change};

/// The code for a change the quorum refused.
fn refusal_code(r: &cluster::Refusal) -> (i16, String) {
    match r {
        cluster::Refusal::TopicExists => (errors::TOPIC_ALREADY_EXISTS, "topic exists".into()),
        cluster::Refusal::UnknownTopic => {
            (errors::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic".into())
        }
        cluster::Refusal::ReplicationFactor { asked, brokers } => (
            errors::INVALID_REPLICATION_FACTOR,
            format!("replication factor {asked} with {brokers} live brokers"),
        ),
        cluster::Refusal::InvalidPartitions => (
            errors::INVALID_PARTITIONS,
            "the partition count must grow".into(),
        ),
        cluster::Refusal::StaleEpoch => (errors::NOT_CONTROLLER, "stale change".into()),
        cluster::Refusal::NotFound => (errors::RESOURCE_NOT_FOUND, "not found".into()),
    }
}

/// Proposes `cmd` and waits (a little) until this broker has applied the
/// change, so that the client's next Metadata here sees it.
pub(super) async fn propose_and_see(
    c: &Arc<cluster::Cluster>,
    cmd: cluster::Command,
    seen: impl Fn(&cluster::Metadata) -> bool,
) -> Result<(), (i16, String)> {
    let mut changes = c.changes();
    match c.propose(cmd).await {
        Err(e) => return Err((errors::NOT_CONTROLLER, e)),
        Ok(r) => {
            if let Some(refused) = &r.error {
                return Err(refusal_code(refused));
            }
        }
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while !c.with_metadata(&seen) {
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// Makes the retry and dead-letter topics of `base` in a cluster, shaped
/// like it (partitions, replication factor), unless they exist: they are
/// in the metadata when this returns.
pub(super) async fn propose_companions(c: &Arc<cluster::Cluster>, base: &str, shape: (i32, i16)) {
    for suffix in [crate::retry::RETRY_SUFFIX, crate::retry::DLQ_SUFFIX] {
        let companion = format!("{base}{suffix}");
        if c.with_metadata(|m| m.topics.contains_key(&companion)) {
            continue;
        }
        let cmd = cluster::Command::CreateTopic {
            name: companion.clone(),
            id: Uuid::new_v4(),
            partitions: shape.0,
            replication_factor: shape.1,
            configs: BTreeMap::new(),
        };
        if let Err((_, e)) = propose_and_see(c, cmd, |m| m.topics.contains_key(&companion)).await {
            tracing::warn!(topic = %companion, error = %e, "retry companion not created");
        }
    }
}

/// Makes a change to users, ACLs or quotas: in a cluster through the
/// quorum, so that every broker has it (and this one before it answers),
/// otherwise in this broker's files.
///
/// # Errors
/// The change was refused or could not be stored: the code and message
/// for the client.
pub(super) async fn change_security(
    broker: &Arc<Broker>,
    change: Change,
) -> Result<Applied, (i16, String)> {
    let Some(c) = broker.cluster.get() else {
        return broker
            .change_security_locally(&change)
            .map_err(|e| (errors::UNKNOWN_SERVER_ERROR, e));
    };
    let deletes = matches!(change, Change::DeleteAcls(_));
    let reply = c
        .propose(cluster::Command::Security(change))
        .await
        .map_err(|e| (errors::NOT_CONTROLLER, e))?;
    if let Some(refused) = &reply.error {
        return Err(refusal_code(refused));
    }
    let version = reply.value.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    let mut changes = c.changes();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while c.with_metadata(|m| m.security.version) < version {
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            break;
        }
    }
    broker.sync_security();
    Ok(if deletes {
        Applied::Removed(reply.removed)
    } else {
        Applied::Changed
    })
}
