//! Proposals to the metadata quorum that the admin APIs share: one change
//! at a time, answered once this broker has applied it.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use super::errors;
use crate::cluster;

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
