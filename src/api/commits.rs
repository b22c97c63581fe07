//! Committed offsets: OffsetCommit, OffsetFetch (single and multi-group) and
//! OffsetDelete.

use std::collections::HashSet;
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

use kafka_protocol::messages::GroupId;

use super::authz::{split, take_topics};
use super::errors;
use super::route::{kind, row, Api, Cx, Handled, Row, Verdict};
use super::route::{sb, tn};
use crate::broker::{now_ms, Broker};
use crate::group::offsets::MAX_METADATA_BYTES;
use crate::group::{self, Change, Committed};
use crate::security::acl::Operation;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[
    row::<OffsetCommit>(),
    row::<OffsetFetch>(),
    row::<OffsetDelete>(),
];

/// Topics refused, with their partitions.
type Refused = Vec<(TopicName, Vec<i32>)>;

/// OffsetCommit: a member's positions, stored durably before the answer.
pub struct OffsetCommit;

impl Api for OffsetCommit {
    kind!(OffsetCommit, OffsetCommitRequest, OffsetCommitResponse);
    const VERSIONS: (i16, i16) = (2, 9);
    type Denied = Refused;

    fn authorize(
        cx: Cx<'_>,
        r: &mut OffsetCommitRequest,
    ) -> Verdict<OffsetCommitResponse, Refused> {
        let partitions =
            |t: &kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic| {
                t.partitions.iter().map(|p| p.partition_index).collect()
            };
        if !cx.group(Operation::Read, r.group_id.as_str()) {
            let all: Refused = r
                .topics
                .iter()
                .map(|t| (t.name.clone(), partitions(t)))
                .collect();
            return Verdict::Answer(
                OffsetCommitResponse::default()
                    .with_topics(commit_errors(all, errors::GROUP_AUTHORIZATION_FAILED)),
            );
        }
        Verdict::Proceed(take_topics(
            &mut r.topics,
            |t| cx.topic(Operation::Read, t.name.as_str()),
            |t| &t.name,
            partitions,
        ))
    }

    fn deny(_cx: Cx<'_>, resp: &mut OffsetCommitResponse, denied: Refused) {
        resp.topics
            .extend(commit_errors(denied, errors::TOPIC_AUTHORIZATION_FAILED));
    }

    async fn handle(cx: Cx<'_>, req: OffsetCommitRequest) -> Handled<OffsetCommitResponse> {
        Handled::Now(offset_commit(cx.broker, req).await)
    }

    fn errors(r: &OffsetCommitResponse, out: &mut Vec<i16>) {
        for t in &r.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    fn throttle(r: &mut OffsetCommitResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// Topics answered with `code` on every partition.
fn commit_errors(topics: Refused, code: i16) -> Vec<OffsetCommitResponseTopic> {
    topics
        .into_iter()
        .map(|(name, parts)| {
            let parts = parts.into_iter().map(|p| commit_answer(p, code)).collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(parts)
        })
        .collect()
}

fn commit_answer(partition: i32, code: i16) -> OffsetCommitResponsePartition {
    OffsetCommitResponsePartition::default()
        .with_partition_index(partition)
        .with_error_code(code)
}

/// OffsetFetch: committed offsets of one group (v1-7) or many (v8+).
pub struct OffsetFetch;

impl Api for OffsetFetch {
    kind!(OffsetFetch, OffsetFetchRequest, OffsetFetchResponse);
    const VERSIONS: (i16, i16) = (1, 9);
    /// Groups refused (v8), and per group whether all its topics were
    /// asked for (undescribable ones are then left out, not reported).
    type Denied = (Vec<GroupId>, Vec<bool>);

    fn authorize(
        cx: Cx<'_>,
        r: &mut OffsetFetchRequest,
    ) -> Verdict<OffsetFetchResponse, Self::Denied> {
        if cx.version >= 8 {
            let (keep, refused) = split(std::mem::take(&mut r.groups), |g| {
                cx.group(Operation::Describe, g.group_id.as_str())
            });
            r.groups = keep;
            let all = r.groups.iter().map(|g| g.topics.is_none()).collect();
            let refused = refused.into_iter().map(|g| g.group_id).collect();
            return Verdict::Proceed((refused, all));
        }
        if cx.group(Operation::Describe, r.group_id.as_str()) {
            return Verdict::Proceed((Vec::new(), vec![r.topics.is_none()]));
        }
        // v1 has no top-level error: each partition carries it.
        let code = errors::GROUP_AUTHORIZATION_FAILED;
        let topics = r
            .topics
            .iter()
            .flatten()
            .map(|t| {
                let parts = t.partition_indexes.iter().map(|p| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(*p)
                        .with_committed_offset(-1)
                        .with_error_code(code)
                });
                OffsetFetchResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(parts.collect())
            })
            .collect();
        Verdict::Answer(
            OffsetFetchResponse::default()
                .with_error_code(code)
                .with_topics(topics),
        )
    }

    fn deny(cx: Cx<'_>, r: &mut OffsetFetchResponse, (denied, all): Self::Denied) {
        let can = |n: &TopicName| cx.topic(Operation::Describe, n.as_str());
        let code = errors::TOPIC_AUTHORIZATION_FAILED;
        // Offsets of topics the principal may not describe: left out when
        // all were asked for, answered with the error when named.
        if all.first().copied().unwrap_or(false) {
            r.topics.retain(|t| can(&t.name));
        }
        for t in r.topics.iter_mut().filter(|t| !can(&t.name)) {
            for p in &mut t.partitions {
                (p.error_code, p.committed_offset, p.metadata) = (code, -1, None);
            }
        }
        for (i, g) in r.groups.iter_mut().enumerate() {
            if all.get(i).copied().unwrap_or(false) {
                g.topics.retain(|t| can(&t.name));
            }
            for t in g.topics.iter_mut().filter(|t| !can(&t.name)) {
                for p in &mut t.partitions {
                    (p.error_code, p.committed_offset, p.metadata) = (code, -1, None);
                }
            }
        }
        for g in denied {
            r.groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(g)
                    .with_error_code(errors::GROUP_AUTHORIZATION_FAILED),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: OffsetFetchRequest) -> Handled<OffsetFetchResponse> {
        Handled::Now(offset_fetch(cx.broker, req, cx.version).await)
    }

    fn errors(r: &OffsetFetchResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
        for t in &r.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
        for g in &r.groups {
            out.push(g.error_code);
            for t in &g.topics {
                out.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
    }

    fn throttle(r: &mut OffsetFetchResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// OffsetDelete: an empty or unsubscribed group's offsets.
pub struct OffsetDelete;

impl Api for OffsetDelete {
    kind!(OffsetDelete, OffsetDeleteRequest, OffsetDeleteResponse);
    const VERSIONS: (i16, i16) = (0, 0);
    type Denied = Refused;

    fn authorize(
        cx: Cx<'_>,
        r: &mut OffsetDeleteRequest,
    ) -> Verdict<OffsetDeleteResponse, Refused> {
        if !cx.group(Operation::Delete, r.group_id.as_str()) {
            return Verdict::Answer(
                OffsetDeleteResponse::default().with_error_code(errors::GROUP_AUTHORIZATION_FAILED),
            );
        }
        Verdict::Proceed(take_topics(
            &mut r.topics,
            |t| cx.topic(Operation::Read, t.name.as_str()),
            |t| &t.name,
            |t| t.partitions.iter().map(|p| p.partition_index).collect(),
        ))
    }

    fn deny(_cx: Cx<'_>, resp: &mut OffsetDeleteResponse, denied: Refused) {
        for (name, parts) in denied {
            let code = errors::TOPIC_AUTHORIZATION_FAILED;
            let parts = parts.into_iter().map(|p| delete_answer(p, code)).collect();
            resp.topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(parts),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: OffsetDeleteRequest) -> Handled<OffsetDeleteResponse> {
        Handled::Now(offset_delete(cx.broker, req).await)
    }

    fn errors(r: &OffsetDeleteResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
        for t in &r.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }
}

fn delete_answer(partition: i32, code: i16) -> OffsetDeleteResponsePartition {
    OffsetDeleteResponsePartition::default()
        .with_partition_index(partition)
        .with_error_code(code)
}

/// OffsetCommit: validates the member, then stores every offset durably
/// before answering.
async fn offset_commit(broker: &Arc<Broker>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    let top = match broker.coordinates(&group_id).await {
        Err(code) => code,
        Ok(_) => broker.groups.check_commit(
            &group_id,
            req.generation_id_or_member_epoch,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
        ),
    };
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
                    errors::OFFSET_METADATA_TOO_LARGE
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
                commit_answer(p.partition_index, code)
            })
            .collect::<Vec<_>>();
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(parts),
        );
    }
    if let Err(code) = broker.store_offsets(&group_id, changes).await {
        for t in &mut topics {
            for p in &mut t.partitions {
                if p.error_code == errors::NONE {
                    p.error_code = code;
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
/// The partitions of `offsets` whose fetch must wait with
/// `require_stable`: an open transaction will commit an offset of the group
/// for them (KIP-447). In a cluster every broker's coordinators are asked.
async fn unstable(
    broker: &Broker,
    require_stable: bool,
    group: &str,
    offsets: &TopicOffsets,
) -> HashSet<(String, i32)> {
    if !require_stable {
        return HashSet::new();
    }
    let partitions = offsets
        .iter()
        .flat_map(|(t, rows)| rows.iter().map(move |(p, _)| (t.to_string(), *p)))
        .collect();
    crate::replication::pending_offsets(broker, group, partitions)
        .await
        .into_iter()
        .collect()
}

async fn offset_fetch(
    broker: &Broker,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut answers = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            if let Err(code) = broker.coordinates(g.group_id.as_str()).await {
                answers.push(Err((g.group_id, code)));
                continue;
            }
            // v9: a consumer group's member fetches at its epoch.
            if g.member_id.is_some() || g.member_epoch >= 0 {
                let member = g.member_id.as_ref().map_or("", |m| m.as_str());
                let stored = || broker.groups.offsets.group_state(g.group_id.as_str());
                let check = broker.groups.consumer.check_member(
                    g.group_id.as_str(),
                    member,
                    g.member_epoch,
                    stored,
                );
                if let Some(code) = check.filter(|c| *c != errors::NONE) {
                    answers.push(Err((g.group_id, code)));
                    continue;
                }
            }
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let offsets = fetch_group(broker, g.group_id.as_str(), wanted);
            let waits = unstable(broker, req.require_stable, g.group_id.as_str(), &offsets).await;
            answers.push(Ok((g.group_id, offsets, waits)));
        }
        let groups = answers
            .into_iter()
            .map(|a| {
                let (group_id, offsets, waits) = match a {
                    Ok(x) => x,
                    Err((group_id, code)) => {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(group_id)
                            .with_error_code(code);
                    }
                };
                let g_id = group_id.clone();
                let topics = offsets
                    .into_iter()
                    .map(|(name, rows)| {
                        let topic = name.to_string();
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(
                                rows.into_iter()
                                    .map(|(p, c)| {
                                        let r = OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p);
                                        if waits.contains(&(topic.clone(), p)) {
                                            return r
                                                .with_error_code(errors::UNSTABLE_OFFSET_COMMIT)
                                                .with_committed_offset(-1)
                                                .with_metadata(Some(sb("")));
                                        }
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
                    .with_group_id(g_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if let Err(code) = broker.coordinates(req.group_id.as_str()).await {
        return OffsetFetchResponse::default().with_error_code(code);
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let group = req.group_id.0.as_str();
    let stable = version >= 7 && req.require_stable;
    let offsets = fetch_group(broker, group, wanted);
    let waits = unstable(broker, stable, group, &offsets).await;
    let topics = offsets
        .into_iter()
        .map(|(name, rows)| {
            let topic = name.to_string();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    rows.into_iter()
                        .map(|(p, c)| {
                            let r = OffsetFetchResponsePartition::default().with_partition_index(p);
                            if waits.contains(&(topic.clone(), p)) {
                                return r
                                    .with_error_code(errors::UNSTABLE_OFFSET_COMMIT)
                                    .with_committed_offset(-1)
                                    .with_metadata(Some(sb("")));
                            }
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
async fn offset_delete(broker: &Arc<Broker>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = req.group_id.0.to_string();
    if let Err(code) = broker.coordinates(&group_id).await {
        return OffsetDeleteResponse::default().with_error_code(code);
    }
    let subscribed = if broker.groups.is_consumer_group(&group_id) {
        broker
            .groups
            .consumer
            .subscribed_topics(&group_id, &broker.topology())
            .into_iter()
            .collect()
    } else if broker.groups.describe(&group_id).is_some() {
        broker.groups.subscribed_topics(&group_id)
    } else {
        return OffsetDeleteResponse::default().with_error_code(group::GROUP_ID_NOT_FOUND);
    };
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
                        errors::GROUP_SUBSCRIBED_TO_TOPIC
                    } else {
                        changes.push(Change::DeleteOffset {
                            group: group_id.clone(),
                            topic: name.clone(),
                            partition: p.partition_index,
                        });
                        errors::NONE
                    };
                    delete_answer(p.partition_index, code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(parts)
        })
        .collect();
    if let Err(code) = broker.store_offsets(&group_id, changes).await {
        return OffsetDeleteResponse::default().with_error_code(code);
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
