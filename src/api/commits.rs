//! Committed offsets: OffsetCommit, OffsetFetch (single and multi-group) and
//! OffsetDelete.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};

use super::{errors, sb, tn};
use crate::broker::{now_ms, Broker};
use crate::group::offsets::MAX_METADATA_BYTES;
use crate::group::{self, Change, Committed};

const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

/// OffsetCommit: validates the member, then stores every offset durably
/// before answering.
pub async fn offset_commit(broker: &Arc<Broker>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    let top = broker.groups.check_commit(
        &group_id,
        req.generation_id_or_member_epoch,
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|s| s.as_str()),
    );
    let now = now_ms();
    let mut changes = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = broker.topics.get(t.name.0.as_str());
        let parts = t
            .partitions
            .iter()
            .map(|p| {
                let code = if top != errors::NONE {
                    top
                } else if topic
                    .as_ref()
                    .and_then(|x| x.partition(p.partition_index))
                    .is_none()
                {
                    errors::UNKNOWN_TOPIC_OR_PARTITION
                } else if p
                    .committed_metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
                {
                    OFFSET_METADATA_TOO_LARGE
                } else {
                    changes.push(Change::Commit {
                        group: group_id.clone(),
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        committed: Committed {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                            commit_time_ms: now,
                        },
                    });
                    errors::NONE
                };
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
            })
            .collect::<Vec<_>>();
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(parts),
        );
    }
    if !changes.is_empty() {
        let b = Arc::clone(broker);
        let res = tokio::task::spawn_blocking(move || b.groups.offsets.write(changes)).await;
        let failed = !matches!(res, Ok(Ok(())));
        if failed {
            tracing::error!(group = %group_id, "failed to store committed offsets");
            for t in &mut topics {
                for p in &mut t.partitions {
                    if p.error_code == errors::NONE {
                        p.error_code = group::COORDINATOR_NOT_AVAILABLE;
                    }
                }
            }
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// Per topic: each requested partition and its committed offset, if any.
type TopicOffsets = Vec<(TopicName, Vec<(i32, Option<Committed>)>)>;

/// Committed offsets of `group` for the requested partitions (`None`: all).
fn fetch_group(
    broker: &Broker,
    group_id: &str,
    wanted: Option<Vec<(TopicName, Vec<i32>)>>,
) -> TopicOffsets {
    let offsets = broker.groups.offsets.group(group_id);
    match wanted {
        Some(list) => list
            .into_iter()
            .map(|(name, parts)| {
                let rows = parts
                    .into_iter()
                    .map(|p| (p, offsets.get(&(name.0.to_string(), p)).cloned()))
                    .collect();
                (name, rows)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> =
                Default::default();
            for ((t, p), c) in offsets {
                by_topic.entry(t).or_default().push((p, Some(c)));
            }
            by_topic
                .into_iter()
                .map(|(t, rows)| (tn(t), rows))
                .collect()
        }
    }
}

/// OffsetFetch, one group (v1-7) or many (v8+).
pub fn offset_fetch(broker: &Broker, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let topics = fetch_group(broker, g.group_id.0.as_str(), wanted)
                    .into_iter()
                    .map(|(name, rows)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(
                                rows.into_iter()
                                    .map(|(p, c)| {
                                        let r = OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p);
                                        match c {
                                            Some(c) => r
                                                .with_committed_offset(c.offset)
                                                .with_committed_leader_epoch(c.leader_epoch)
                                                .with_metadata(Some(sb(c
                                                    .metadata
                                                    .unwrap_or_default()))),
                                            None => r
                                                .with_committed_offset(-1)
                                                .with_metadata(Some(sb(""))),
                                        }
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let topics = fetch_group(broker, req.group_id.0.as_str(), wanted)
        .into_iter()
        .map(|(name, rows)| {
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    rows.into_iter()
                        .map(|(p, c)| {
                            let r = OffsetFetchResponsePartition::default().with_partition_index(p);
                            match c {
                                Some(c) => {
                                    let r = r
                                        .with_committed_offset(c.offset)
                                        .with_metadata(Some(sb(c.metadata.unwrap_or_default())));
                                    if version >= 5 {
                                        r.with_committed_leader_epoch(c.leader_epoch)
                                    } else {
                                        r
                                    }
                                }
                                None => r.with_committed_offset(-1).with_metadata(Some(sb(""))),
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// OffsetDelete: refused for topics the live group still subscribes to.
pub fn offset_delete(broker: &Broker, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = req.group_id.0.to_string();
    if broker.groups.describe(&group_id).is_none() {
        return OffsetDeleteResponse::default().with_error_code(group::GROUP_ID_NOT_FOUND);
    }
    let subscribed = broker.groups.subscribed_topics(&group_id);
    let mut changes = Vec::new();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if subscribed.contains(&name) {
                        GROUP_SUBSCRIBED_TO_TOPIC
                    } else {
                        changes.push(Change::DeleteOffset {
                            group: group_id.clone(),
                            topic: name.clone(),
                            partition: p.partition_index,
                        });
                        errors::NONE
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(parts)
        })
        .collect();
    if broker.groups.offsets.write(changes).is_err() {
        return OffsetDeleteResponse::default().with_error_code(group::COORDINATOR_NOT_AVAILABLE);
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
