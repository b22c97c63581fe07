//! Consumer groups: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups, DeleteGroups. The logic lives in
//! `crate::group`; these functions translate messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, RequestHeader, SyncGroupRequest,
    SyncGroupResponse,
};

use super::{errors, sb};
use crate::broker::Broker;
use crate::group::{self, JoinOutcome, JoinRequest, Reply, SyncOutcome};

const KEY_TYPE_GROUP: i8 = 0;

/// FindCoordinator: this broker coordinates every group. Transactions are
/// not supported, so transaction coordinators are not available.
pub fn find_coordinator(
    broker: &Broker,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let cfg = &broker.config;
    let node = BrokerId(broker.node_id());
    let answer = |key_type: i8| -> (i16, Option<&'static str>) {
        if key_type == KEY_TYPE_GROUP {
            (errors::NONE, None)
        } else {
            (
                group::COORDINATOR_NOT_AVAILABLE,
                Some("transactions are not supported by this broker"),
            )
        }
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg) = answer(req.key_type);
                let c = CoordinatorEntry::default()
                    .with_key(k.clone())
                    .with_error_code(code)
                    .with_error_message(msg.map(sb));
                if code == errors::NONE {
                    c.with_node_id(node)
                        .with_host(sb(cfg.advertised_host.clone()))
                        .with_port(cfg.advertised_port)
                } else {
                    c.with_node_id(BrokerId(-1)).with_port(-1)
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, msg) = answer(req.key_type);
    let resp = FindCoordinatorResponse::default().with_error_code(code);
    if code != errors::NONE {
        return resp
            .with_error_message(msg.map(sb))
            .with_node_id(BrokerId(-1))
            .with_port(-1);
    }
    resp.with_node_id(node)
        .with_host(sb(cfg.advertised_host.clone()))
        .with_port(cfg.advertised_port)
}

fn join_response(o: JoinOutcome) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(o.error)
        .with_generation_id(o.generation)
        .with_protocol_type(o.protocol_type.map(sb))
        .with_protocol_name(Some(sb(o.protocol_name.unwrap_or_default())))
        .with_leader(sb(o.leader))
        .with_member_id(sb(o.member_id))
        .with_members(
            o.members
                .into_iter()
                .map(|(id, inst, meta)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(sb(id))
                        .with_group_instance_id(inst.map(sb))
                        .with_metadata(meta)
                })
                .collect(),
        )
}

/// JoinGroup: waits for the rebalance to complete.
pub async fn join_group(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    peer: SocketAddr,
    req: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let member_id = req.member_id.to_string();
    let jr = JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: member_id.clone(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let outcome = match broker.groups.join(jr, Instant::now()) {
        Reply::Now(o) => o,
        Reply::Wait(rx, timeout) => match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => JoinOutcome {
                error: group::UNKNOWN_MEMBER_ID,
                generation: -1,
                member_id,
                ..Default::default()
            },
            Err(_) => JoinOutcome {
                error: group::REBALANCE_IN_PROGRESS,
                generation: -1,
                member_id,
                ..Default::default()
            },
        },
    };
    join_response(outcome)
}

/// SyncGroup: the leader hands out assignments; members wait for theirs.
pub async fn sync_group(broker: &Arc<Broker>, req: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let reply = broker.groups.sync(
        req.group_id.0.as_str(),
        req.generation_id,
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|s| s.as_str()),
        assignments,
    );
    let o = match reply {
        Reply::Now(o) => o,
        Reply::Wait(rx, timeout) => match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) | Err(_) => SyncOutcome {
                error: group::REBALANCE_IN_PROGRESS,
                ..Default::default()
            },
        },
    };
    SyncGroupResponse::default()
        .with_error_code(o.error)
        .with_protocol_type(o.protocol_type.map(sb))
        .with_protocol_name(o.protocol_name.map(sb))
        .with_assignment(o.assignment)
}

/// Heartbeat.
pub fn heartbeat(broker: &Broker, req: &HeartbeatRequest) -> HeartbeatResponse {
    let code = broker.groups.heartbeat(
        req.group_id.0.as_str(),
        req.generation_id,
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|s| s.as_str()),
        Instant::now(),
    );
    HeartbeatResponse::default().with_error_code(code)
}

/// LeaveGroup, single (v0-2) or batched (v3+).
pub fn leave_group(broker: &Broker, req: &LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let (top, codes) = broker
        .groups
        .leave(req.group_id.0.as_str(), &members, Instant::now());
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(top);
    }
    LeaveGroupResponse::default().with_members(
        members
            .into_iter()
            .zip(codes)
            .map(|((id, inst), code)| {
                MemberResponse::default()
                    .with_member_id(sb(id))
                    .with_group_instance_id(inst.map(sb))
                    .with_error_code(code)
            })
            .collect(),
    )
}

/// ListGroups, with the v4 state filter and v5 type filter.
pub fn list_groups(broker: &Broker, req: &ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(_, st, _)| states.is_empty() || states.contains(&st.name().to_ascii_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|(id, st, pt)| {
            ListedGroup::default()
                .with_group_id(GroupId(sb(id)))
                .with_protocol_type(sb(pt))
                .with_group_state(sb(st.name()))
                .with_group_type(sb("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DescribeGroups.
pub fn describe_groups(broker: &Broker, req: &DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .iter()
        .map(|g| match broker.groups.describe(g.0.as_str()) {
            Some(v) => DescribedGroup::default()
                .with_authorized_operations(if req.include_authorized_operations {
                    super::metadata::GROUP_OPERATIONS
                } else {
                    i32::MIN
                })
                .with_group_id(g.clone())
                .with_group_state(sb(v.state.name()))
                .with_protocol_type(sb(v.protocol_type))
                .with_protocol_data(sb(v.protocol))
                .with_members(
                    v.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(sb(m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(sb))
                                .with_client_id(sb(m.client_id))
                                .with_client_host(sb(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
            None => DescribedGroup::default()
                .with_group_id(g.clone())
                .with_group_state(sb("Dead")),
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups: only empty groups; their offsets go with them.
pub fn delete_groups(broker: &Broker, req: &DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = req
        .groups_names
        .iter()
        .map(|g| {
            let code = match broker.groups.delete_group(g.0.as_str()) {
                Ok(()) => errors::NONE,
                Err(code) => code,
            };
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
