//! The consumer group protocol of KIP-848: ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe. The logic lives in `crate::group::consumer`;
//! these functions translate messages (topic ids to names and back) and
//! store a group's state before answering when it changed.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member as DescribedMember,
    TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, GroupId,
};
use uuid::Uuid;

use super::authz::split;
use super::errors;
use super::route::{kind, row, sb, tn, Api, Cx, Handled, Row, Verdict};
use crate::broker::Broker;
use crate::group::consumer::{Group, Heartbeat, Parts};
use crate::group::Change;
use crate::security::acl::Operation;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[
    row::<ConsumerGroupHeartbeat>(),
    row::<ConsumerGroupDescribe>(),
];

/// ConsumerGroupHeartbeat: joins, heartbeats, reconciles and leaves.
pub struct ConsumerGroupHeartbeat;

impl Api for ConsumerGroupHeartbeat {
    kind!(
        ConsumerGroupHeartbeat,
        ConsumerGroupHeartbeatRequest,
        ConsumerGroupHeartbeatResponse
    );
    const VERSIONS: (i16, i16) = (0, 1);
    type Denied = ();

    fn authorize(
        cx: Cx<'_>,
        r: &mut ConsumerGroupHeartbeatRequest,
    ) -> Verdict<ConsumerGroupHeartbeatResponse, ()> {
        let refuse = |code| {
            Verdict::Answer(
                ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(code)
                    .with_member_epoch(-1),
            )
        };
        if !cx.group(Operation::Read, r.group_id.as_str()) {
            return refuse(errors::GROUP_AUTHORIZATION_FAILED);
        }
        let topics = r.subscribed_topic_names.iter().flatten();
        if !topics
            .into_iter()
            .all(|t| cx.topic(Operation::Describe, t.as_str()))
        {
            return refuse(errors::TOPIC_AUTHORIZATION_FAILED);
        }
        Verdict::Proceed(())
    }

    fn deny(_cx: Cx<'_>, _r: &mut ConsumerGroupHeartbeatResponse, _denied: ()) {}

    async fn handle(
        cx: Cx<'_>,
        req: ConsumerGroupHeartbeatRequest,
    ) -> Handled<ConsumerGroupHeartbeatResponse> {
        Handled::Now(heartbeat(cx, req).await)
    }

    fn errors(r: &ConsumerGroupHeartbeatResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }

    fn throttle(r: &mut ConsumerGroupHeartbeatResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// ConsumerGroupDescribe: groups with their epochs, members, current and
/// target assignments.
pub struct ConsumerGroupDescribe;

impl Api for ConsumerGroupDescribe {
    kind!(
        ConsumerGroupDescribe,
        ConsumerGroupDescribeRequest,
        ConsumerGroupDescribeResponse
    );
    const VERSIONS: (i16, i16) = (0, 1);
    type Denied = Vec<GroupId>;

    fn authorize(
        cx: Cx<'_>,
        r: &mut ConsumerGroupDescribeRequest,
    ) -> Verdict<ConsumerGroupDescribeResponse, Vec<GroupId>> {
        let (keep, refused) = split(std::mem::take(&mut r.group_ids), |g| {
            cx.group(Operation::Describe, g.as_str())
        });
        r.group_ids = keep;
        Verdict::Proceed(refused)
    }

    fn deny(_cx: Cx<'_>, r: &mut ConsumerGroupDescribeResponse, denied: Vec<GroupId>) {
        for g in denied {
            r.groups.push(
                DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(errors::GROUP_AUTHORIZATION_FAILED),
            );
        }
    }

    async fn handle(
        cx: Cx<'_>,
        req: ConsumerGroupDescribeRequest,
    ) -> Handled<ConsumerGroupDescribeResponse> {
        Handled::Now(describe(cx.broker, &req).await)
    }

    fn errors(r: &ConsumerGroupDescribeResponse, out: &mut Vec<i16>) {
        out.extend(r.groups.iter().map(|g| g.error_code));
    }

    fn throttle(r: &mut ConsumerGroupDescribeResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

type Table = BTreeMap<String, (Uuid, i32)>;

/// Partitions given by topic id, as names (ids of unknown topics are left
/// out: the topic is gone, and so are its partitions).
fn parts_by_name<'a>(
    table: &Table,
    given: impl IntoIterator<Item = (&'a Uuid, &'a Vec<i32>)>,
) -> Parts {
    let by_id: HashMap<Uuid, &str> = table.iter().map(|(n, (id, _))| (*id, n.as_str())).collect();
    let mut out = Parts::new();
    for (id, ps) in given {
        if let Some(name) = by_id.get(id) {
            out.entry((*name).to_string())
                .or_default()
                .extend(ps.iter().copied());
        }
    }
    out
}

/// Partitions by name, as (topic id, partitions).
fn parts_by_id(table: &Table, parts: &Parts) -> Vec<(Uuid, Vec<i32>)> {
    parts
        .iter()
        .filter(|(_, ps)| !ps.is_empty())
        .filter_map(|(t, ps)| {
            table
                .get(t)
                .map(|(id, _)| (*id, ps.iter().copied().collect()))
        })
        .collect()
}

async fn heartbeat(
    cx: Cx<'_>,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let broker = cx.broker;
    let group_id = req.group_id.0.to_string();
    let fail = |code: i16, msg: Option<String>| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code)
            .with_error_message(msg.map(sb))
            .with_member_epoch(-1)
    };
    if let Err(code) = broker.coordinates(&group_id).await {
        return fail(code, None);
    }
    let table = broker.topic_table();
    let topology = table.iter().map(|(n, (_, c))| (n.clone(), *c)).collect();
    let owned = req
        .topic_partitions
        .as_ref()
        .map(|tps| parts_by_name(&table, tps.iter().map(|tp| (&tp.topic_id, &tp.partitions))));
    let hb = Heartbeat {
        group_id: group_id.clone(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(ToString::to_string),
        rack_id: req.rack_id.as_ref().map(ToString::to_string),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        topics: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.0.to_string()).collect()),
        regex: req.subscribed_topic_regex.as_ref().map(ToString::to_string),
        assignor: req.server_assignor.as_ref().map(ToString::to_string),
        owned,
        client_id: cx
            .header
            .client_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        client_host: format!("/{}", cx.session.peer.ip()),
    };
    let out = broker
        .groups
        .consumer_heartbeat(hb, cx.version, &topology, Instant::now());
    if let Some((group, state)) = out.record {
        let change = Change::GroupState {
            group: group.clone(),
            state,
        };
        if let Err(code) = broker.store_offsets(&group, vec![change]).await {
            return fail(code, Some("the group's state could not be stored".into()));
        }
    }
    let a = out.answer;
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(a.error)
        .with_error_message(a.message.map(sb))
        .with_member_id((!a.member_id.is_empty()).then(|| sb(a.member_id)))
        .with_member_epoch(if a.error == errors::NONE {
            a.member_epoch
        } else {
            -1
        })
        .with_heartbeat_interval_ms(a.heartbeat_interval_ms)
        .with_assignment(a.assignment.map(|parts| {
            Assignment::default().with_topic_partitions(
                parts_by_id(&table, &parts)
                    .into_iter()
                    .map(|(id, ps)| {
                        TopicPartitions::default()
                            .with_topic_id(id)
                            .with_partitions(ps)
                    })
                    .collect(),
            )
        }))
}

fn described_assignment(table: &Table, parts: &Parts) -> DescribedAssignment {
    DescribedAssignment::default().with_topic_partitions(
        parts
            .iter()
            .filter(|(_, ps)| !ps.is_empty())
            .filter_map(|(name, ps)| {
                let (id, _) = table.get(name)?;
                Some(
                    DescribedTopicPartitions::default()
                        .with_topic_id(*id)
                        .with_topic_name(tn(name.clone()))
                        .with_partitions(ps.iter().copied().collect()),
                )
            })
            .collect(),
    )
}

fn described(g: &Group, table: &Table, include_ops: bool) -> DescribedGroup {
    let empty = Parts::new();
    DescribedGroup::default()
        .with_group_id(GroupId(sb(g.id.clone())))
        .with_group_state(sb(g.state_name()))
        .with_group_epoch(g.epoch)
        .with_assignment_epoch(g.assignment_epoch)
        .with_assignor_name(sb(g
            .members
            .values()
            .find_map(|m| m.assignor.clone())
            .unwrap_or_else(|| crate::group::consumer::ASSIGNORS[0].to_string())))
        .with_authorized_operations(if include_ops {
            super::metadata::GROUP_OPERATIONS
        } else {
            i32::MIN
        })
        .with_members(
            g.members
                .values()
                .map(|m| {
                    DescribedMember::default()
                        .with_member_id(sb(m.id.clone()))
                        .with_instance_id(m.instance_id.clone().map(sb))
                        .with_rack_id(m.rack_id.clone().map(sb))
                        .with_member_epoch(m.epoch)
                        .with_client_id(sb(m.client_id.clone()))
                        .with_client_host(sb(m.client_host.clone()))
                        .with_subscribed_topic_names(
                            m.topics.iter().map(|t| tn(t.clone())).collect(),
                        )
                        .with_subscribed_topic_regex(m.regex.clone().map(sb))
                        .with_assignment(described_assignment(table, &m.assigned))
                        .with_target_assignment(described_assignment(
                            table,
                            g.target.get(&m.id).unwrap_or(&empty),
                        ))
                        // 0: a classic member, 1: a consumer-protocol one.
                        .with_member_type(i8::from(m.classic.is_none()))
                })
                .collect(),
        )
}

async fn describe(
    broker: &std::sync::Arc<Broker>,
    req: &ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let table = broker.topic_table();
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for g in &req.group_ids {
        let id = g.0.as_str();
        if let Err(code) = broker.coordinates(id).await {
            groups.push(
                DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(code),
            );
            continue;
        }
        let stored = || broker.groups.offsets.group_state(id);
        groups.push(match broker.groups.consumer.describe(id, stored) {
            Some(group) => described(&group, &table, req.include_authorized_operations),
            None => {
                let msg = if broker.groups.describe(id).is_some() {
                    format!("Group {id} is not a consumer group.")
                } else {
                    format!("Group {id} not found.")
                };
                DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_group_state(sb("Dead"))
                    .with_error_code(errors::GROUP_ID_NOT_FOUND)
                    .with_error_message(Some(sb(msg)))
            }
        });
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
