//! Consumer groups: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups, DeleteGroups. The logic lives in
//! `crate::group`; these functions translate messages.

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
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};

use kafka_protocol::protocol::StrBytes;

use super::authz::split;
use super::errors;
use super::route::sb;
use super::route::{kind, row, Api, Cx, Handled, Row, Verdict};
use crate::broker::Broker;
use crate::group::consumer::Record;
use crate::group::interop::Mixed;
use crate::group::{self, Change, JoinOutcome, JoinRequest, Reply, SyncOutcome};
use crate::security::acl::{Operation, ResourceType};

/// The APIs this family serves.
pub const ROWS: &[Row] = &[
    row::<FindCoordinator>(),
    row::<JoinGroup>(),
    row::<SyncGroup>(),
    row::<Heartbeat>(),
    row::<LeaveGroup>(),
    row::<ListGroups>(),
    row::<DescribeGroups>(),
    row::<DeleteGroups>(),
];

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// FindCoordinator: the coordinator of a group, or of a transactional id
/// (this broker, on a single node).
pub struct FindCoordinator;

impl Api for FindCoordinator {
    kind!(
        FindCoordinator,
        FindCoordinatorRequest,
        FindCoordinatorResponse
    );
    const VERSIONS: (i16, i16) = (0, 4);
    /// Keys refused (v4), and their code.
    type Denied = (Vec<StrBytes>, i16);

    fn authorize(
        cx: Cx<'_>,
        r: &mut FindCoordinatorRequest,
    ) -> Verdict<FindCoordinatorResponse, Self::Denied> {
        let (rtype, code) = if r.key_type == KEY_TYPE_TRANSACTION {
            (
                ResourceType::TransactionalId,
                errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            )
        } else {
            (ResourceType::Group, errors::GROUP_AUTHORIZATION_FAILED)
        };
        if cx.version >= 4 {
            let (keep, refused) = split(std::mem::take(&mut r.coordinator_keys), |k| {
                cx.can(Operation::Describe, rtype, k.as_str())
            });
            r.coordinator_keys = keep;
            return Verdict::Proceed((refused, code));
        }
        if cx.can(Operation::Describe, rtype, r.key.as_str()) {
            Verdict::Proceed((Vec::new(), code))
        } else {
            Verdict::Answer(
                FindCoordinatorResponse::default()
                    .with_error_code(code)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
            )
        }
    }

    fn deny(_cx: Cx<'_>, r: &mut FindCoordinatorResponse, (keys, code): Self::Denied) {
        for key in keys {
            r.coordinators.push(
                CoordinatorEntry::default()
                    .with_key(key)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(code),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: FindCoordinatorRequest) -> Handled<FindCoordinatorResponse> {
        Handled::Now(find_coordinator(cx, req))
    }

    fn errors(r: &FindCoordinatorResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
        out.extend(r.coordinators.iter().map(|c| c.error_code));
    }

    fn throttle(r: &mut FindCoordinatorResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// The verdict on a request of a group's member: it needs Read on the
/// group, else it is answered with `denied`.
fn member_of<R>(cx: Cx<'_>, group: &str, denied: impl FnOnce() -> R) -> Verdict<R, ()> {
    if cx.group(Operation::Read, group) {
        Verdict::Proceed(())
    } else {
        Verdict::Answer(denied())
    }
}

/// JoinGroup: waits for the rebalance to complete.
pub struct JoinGroup;

impl Api for JoinGroup {
    kind!(JoinGroup, JoinGroupRequest, JoinGroupResponse);
    const VERSIONS: (i16, i16) = (0, 9);
    const WAITS: bool = true;
    type Denied = ();

    fn authorize(cx: Cx<'_>, r: &mut JoinGroupRequest) -> Verdict<JoinGroupResponse, ()> {
        member_of(cx, r.group_id.as_str(), || {
            JoinGroupResponse::default()
                .with_error_code(errors::GROUP_AUTHORIZATION_FAILED)
                .with_generation_id(-1)
                .with_member_id(r.member_id.clone())
        })
    }

    fn deny(_cx: Cx<'_>, _r: &mut JoinGroupResponse, _denied: ()) {}

    async fn handle(cx: Cx<'_>, req: JoinGroupRequest) -> Handled<JoinGroupResponse> {
        Handled::Now(join_group(cx, req).await)
    }

    fn errors(r: &JoinGroupResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }

    fn throttle(r: &mut JoinGroupResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// SyncGroup: the leader hands out assignments; members wait for theirs.
pub struct SyncGroup;

impl Api for SyncGroup {
    kind!(SyncGroup, SyncGroupRequest, SyncGroupResponse);
    const VERSIONS: (i16, i16) = (0, 5);
    const WAITS: bool = true;
    type Denied = ();

    fn authorize(cx: Cx<'_>, r: &mut SyncGroupRequest) -> Verdict<SyncGroupResponse, ()> {
        member_of(cx, r.group_id.as_str(), || {
            SyncGroupResponse::default().with_error_code(errors::GROUP_AUTHORIZATION_FAILED)
        })
    }

    fn deny(_cx: Cx<'_>, _r: &mut SyncGroupResponse, _denied: ()) {}

    async fn handle(cx: Cx<'_>, req: SyncGroupRequest) -> Handled<SyncGroupResponse> {
        Handled::Now(sync_group(cx.broker, req).await)
    }

    fn errors(r: &SyncGroupResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }

    fn throttle(r: &mut SyncGroupResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// Heartbeat: a member is alive, and learns of rebalances.
pub struct Heartbeat;

impl Api for Heartbeat {
    kind!(Heartbeat, HeartbeatRequest, HeartbeatResponse);
    const VERSIONS: (i16, i16) = (0, 4);
    type Denied = ();

    fn authorize(cx: Cx<'_>, r: &mut HeartbeatRequest) -> Verdict<HeartbeatResponse, ()> {
        member_of(cx, r.group_id.as_str(), || {
            HeartbeatResponse::default().with_error_code(errors::GROUP_AUTHORIZATION_FAILED)
        })
    }

    fn deny(_cx: Cx<'_>, _r: &mut HeartbeatResponse, _denied: ()) {}

    async fn handle(cx: Cx<'_>, req: HeartbeatRequest) -> Handled<HeartbeatResponse> {
        Handled::Now(heartbeat(cx.broker, &req).await)
    }

    fn errors(r: &HeartbeatResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }

    fn throttle(r: &mut HeartbeatResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// LeaveGroup: members leave (several at once from v3).
pub struct LeaveGroup;

impl Api for LeaveGroup {
    kind!(LeaveGroup, LeaveGroupRequest, LeaveGroupResponse);
    const VERSIONS: (i16, i16) = (0, 5);
    type Denied = ();

    fn authorize(cx: Cx<'_>, r: &mut LeaveGroupRequest) -> Verdict<LeaveGroupResponse, ()> {
        member_of(cx, r.group_id.as_str(), || {
            LeaveGroupResponse::default().with_error_code(errors::GROUP_AUTHORIZATION_FAILED)
        })
    }

    fn deny(_cx: Cx<'_>, _r: &mut LeaveGroupResponse, _denied: ()) {}

    async fn handle(cx: Cx<'_>, req: LeaveGroupRequest) -> Handled<LeaveGroupResponse> {
        Handled::Now(leave_group(cx.broker, &req, cx.version).await)
    }

    fn errors(r: &LeaveGroupResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
        out.extend(r.members.iter().map(|m| m.error_code));
    }
}

/// ListGroups: the groups the principal may describe.
pub struct ListGroups;

impl Api for ListGroups {
    kind!(ListGroups, ListGroupsRequest, ListGroupsResponse);
    const VERSIONS: (i16, i16) = (0, 5);
    /// Whether groups must be filtered one by one (no Describe on the
    /// cluster).
    type Denied = bool;

    fn authorize(cx: Cx<'_>, _r: &mut ListGroupsRequest) -> Verdict<ListGroupsResponse, bool> {
        Verdict::Proceed(!cx.cluster(Operation::Describe))
    }

    fn deny(cx: Cx<'_>, r: &mut ListGroupsResponse, filter: bool) {
        if filter {
            r.groups
                .retain(|g| cx.group(Operation::Describe, g.group_id.as_str()));
        }
    }

    async fn handle(cx: Cx<'_>, req: ListGroupsRequest) -> Handled<ListGroupsResponse> {
        Handled::Now(list_groups(cx.broker, &req))
    }

    fn errors(r: &ListGroupsResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }
}

/// DescribeGroups: members and their assignments.
pub struct DescribeGroups;

impl Api for DescribeGroups {
    kind!(
        DescribeGroups,
        DescribeGroupsRequest,
        DescribeGroupsResponse
    );
    const VERSIONS: (i16, i16) = (0, 5);
    type Denied = Vec<GroupId>;

    fn authorize(
        cx: Cx<'_>,
        r: &mut DescribeGroupsRequest,
    ) -> Verdict<DescribeGroupsResponse, Vec<GroupId>> {
        let (keep, refused) = split(std::mem::take(&mut r.groups), |g| {
            cx.group(Operation::Describe, g.as_str())
        });
        r.groups = keep;
        Verdict::Proceed(refused)
    }

    fn deny(_cx: Cx<'_>, r: &mut DescribeGroupsResponse, denied: Vec<GroupId>) {
        for g in denied {
            r.groups.push(
                DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(errors::GROUP_AUTHORIZATION_FAILED),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: DescribeGroupsRequest) -> Handled<DescribeGroupsResponse> {
        Handled::Now(describe_groups(cx.broker, &req).await)
    }

    fn errors(r: &DescribeGroupsResponse, out: &mut Vec<i16>) {
        out.extend(r.groups.iter().map(|g| g.error_code));
    }
}

/// DeleteGroups: empty groups and their committed offsets.
pub struct DeleteGroups;

impl Api for DeleteGroups {
    kind!(DeleteGroups, DeleteGroupsRequest, DeleteGroupsResponse);
    const VERSIONS: (i16, i16) = (0, 2);
    type Denied = Vec<GroupId>;

    fn authorize(
        cx: Cx<'_>,
        r: &mut DeleteGroupsRequest,
    ) -> Verdict<DeleteGroupsResponse, Vec<GroupId>> {
        let (keep, refused) = split(std::mem::take(&mut r.groups_names), |g| {
            cx.group(Operation::Delete, g.as_str())
        });
        r.groups_names = keep;
        Verdict::Proceed(refused)
    }

    fn deny(_cx: Cx<'_>, r: &mut DeleteGroupsResponse, denied: Vec<GroupId>) {
        for g in denied {
            r.results.push(
                DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(errors::GROUP_AUTHORIZATION_FAILED),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: DeleteGroupsRequest) -> Handled<DeleteGroupsResponse> {
        Handled::Now(delete_groups(cx.broker, &req).await)
    }

    fn errors(r: &DeleteGroupsResponse, out: &mut Vec<i16>) {
        out.extend(r.results.iter().map(|g| g.error_code));
    }
}

/// FindCoordinator: on a single node this broker coordinates every group
/// and transactional id; in a cluster, the leader of the key's partition of
/// `__consumer_offsets` (a group) or `__transaction_state` (a
/// transactional id).
fn find_coordinator(cx: Cx<'_>, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let (broker, version) = (cx.broker, cx.version);
    let (host, port) = cx.advertised();
    let node = BrokerId(broker.node_id());
    let coordinator = |key: &str| -> Result<(BrokerId, String, i32), i16> {
        let found = if req.key_type == KEY_TYPE_TRANSACTION {
            broker.transaction_coordinator(key)?
        } else {
            broker.group_coordinator(key)?
        };
        match found {
            Some(b) => {
                let (h, p) = b.endpoint(cx.session.listener);
                Ok((BrokerId(b.id as i32), h.to_string(), p))
            }
            None => Ok((node, host.to_string(), port)),
        }
    };
    let answer = |key_type: i8| -> (i16, Option<&'static str>) {
        if key_type == KEY_TYPE_GROUP || key_type == KEY_TYPE_TRANSACTION {
            (errors::NONE, None)
        } else {
            (
                errors::INVALID_REQUEST,
                Some("unknown coordinator key type"),
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
                match (code, coordinator(k.as_str())) {
                    (errors::NONE, Ok((node, host, port))) => {
                        c.with_node_id(node).with_host(sb(host)).with_port(port)
                    }
                    (errors::NONE, Err(code)) => c
                        .with_error_code(code)
                        .with_node_id(BrokerId(-1))
                        .with_host(sb(""))
                        .with_port(-1),
                    _ => c.with_node_id(BrokerId(-1)).with_port(-1),
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
    match coordinator(req.key.as_str()) {
        Ok((node, host, port)) => resp.with_node_id(node).with_host(sb(host)).with_port(port),
        Err(code) => resp
            .with_error_code(code)
            .with_node_id(BrokerId(-1))
            .with_host(sb(""))
            .with_port(-1),
    }
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
async fn join_group(cx: Cx<'_>, req: JoinGroupRequest) -> JoinGroupResponse {
    let (broker, header, version) = (cx.broker, cx.header, cx.version);
    if let Err(code) = broker.coordinates(req.group_id.as_str()).await {
        return JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(req.member_id);
    }
    let peer = cx.session.peer;
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
    // An empty consumer group becomes a classic one; one with members
    // takes the joiner in as a classic member.
    let failed = |code| {
        JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(req.member_id.clone())
    };
    match broker
        .groups
        .consumer_join(&jr, &broker.topology(), Instant::now())
    {
        Mixed::Classic(record) => {
            if let Err(code) = store_group_state(broker, record).await {
                return failed(code);
            }
        }
        Mixed::Answered(outcome, record) => {
            if let Err(code) = store_group_state(broker, record).await {
                return failed(code);
            }
            return join_response(outcome);
        }
    }
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
async fn sync_group(broker: &Arc<Broker>, req: SyncGroupRequest) -> SyncGroupResponse {
    if let Err(code) = broker.coordinates(req.group_id.as_str()).await {
        return SyncGroupResponse::default().with_error_code(code);
    }
    let mixed = broker.groups.consumer_sync(
        req.group_id.as_str(),
        req.generation_id,
        (
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
        ),
        (
            req.protocol_type.as_ref().map(|s| s.as_str()),
            req.protocol_name.as_ref().map(|s| s.as_str()),
        ),
        Instant::now(),
    );
    if let Some(o) = mixed {
        return sync_response(o);
    }
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
    sync_response(o)
}

fn sync_response(o: SyncOutcome) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(o.error)
        .with_protocol_type(o.protocol_type.map(sb))
        .with_protocol_name(o.protocol_name.map(sb))
        .with_assignment(o.assignment)
}

/// Stores a consumer group's record (its state, or its end) before the
/// answer that depends on it.
async fn store_group_state(broker: &Arc<Broker>, record: Option<Record>) -> Result<(), i16> {
    let Some((group, state)) = record else {
        return Ok(());
    };
    let change = Change::GroupState {
        group: group.clone(),
        state,
    };
    broker.store_offsets(&group, vec![change]).await
}

/// Heartbeat.
async fn heartbeat(broker: &Broker, req: &HeartbeatRequest) -> HeartbeatResponse {
    if let Err(code) = broker.coordinates(req.group_id.as_str()).await {
        return HeartbeatResponse::default().with_error_code(code);
    }
    let member = (
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|s| s.as_str()),
    );
    let now = Instant::now();
    if let Some(code) = broker.groups.consumer_group_heartbeat(
        req.group_id.as_str(),
        req.generation_id,
        member,
        now,
    ) {
        return HeartbeatResponse::default().with_error_code(code);
    }
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
async fn leave_group(
    broker: &Arc<Broker>,
    req: &LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    if let Err(code) = broker.coordinates(req.group_id.as_str()).await {
        return LeaveGroupResponse::default().with_error_code(code);
    }
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
    let now = Instant::now();
    let mixed = broker
        .groups
        .consumer_group_leave(req.group_id.as_str(), &members, now);
    let (top, codes) = match mixed {
        Some((codes, record)) => {
            if let Err(code) = store_group_state(broker, record).await {
                return LeaveGroupResponse::default().with_error_code(code);
            }
            let top = if members.len() == 1 { codes[0] } else { 0 };
            (top, codes)
        }
        None => broker.groups.leave(req.group_id.0.as_str(), &members, now),
    };
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
fn list_groups(broker: &Broker, req: &ListGroupsRequest) -> ListGroupsResponse {
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
        .filter(|g| broker.coordinates_now(&g.id))
        .filter(|g| states.is_empty() || states.contains(&g.state.to_ascii_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(sb(g.id)))
                .with_protocol_type(sb(g.protocol_type))
                .with_group_state(sb(g.state))
                .with_group_type(sb(g.group_type))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DescribeGroups.
async fn describe_groups(broker: &Broker, req: &DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in &req.groups {
        if let Err(code) = broker.coordinates(g.as_str()).await {
            groups.push(
                DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(code)
                    .with_group_state(sb("Dead")),
            );
            continue;
        }
        groups.push(match broker.groups.describe(g.0.as_str()) {
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
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups: only empty groups; their offsets go with them.
async fn delete_groups(broker: &Arc<Broker>, req: &DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in &req.groups_names {
        let id = g.0.as_str();
        let deleted = match broker.groups.check_delete(id) {
            Ok(true) => {
                let change = Change::DeleteGroup {
                    group: id.to_string(),
                };
                broker.store_offsets(id, vec![change]).await
            }
            Ok(false) => broker.coordinates(id).await.map(|_| ()),
            Err(code) => broker.coordinates(id).await.and(Err(code)),
        };
        if deleted.is_ok() {
            broker.groups.forget(id);
        }
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(deleted.err().unwrap_or(errors::NONE)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
