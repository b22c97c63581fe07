//! What the coordinator takes and answers: requests, outcomes, group
//! states and the views DescribeGroups shows.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::protocol::errors::{FENCED_INSTANCE_ID, UNKNOWN_MEMBER_ID};

/// The member a LeaveGroup entry names: by its member id, or by its
/// instance id (`statics`: instance id → member id), with the member id, if
/// given, that instance must have.
///
/// # Errors
/// `FENCED_INSTANCE_ID` for another member's instance, `UNKNOWN_MEMBER_ID`
/// for an instance not in the group.
pub fn leaving_member(
    statics: &HashMap<String, String>,
    member_id: &str,
    instance: Option<&str>,
) -> Result<String, i16> {
    match instance {
        Some(inst) => match statics.get(inst) {
            Some(cur) if member_id.is_empty() || cur == member_id => Ok(cur.clone()),
            Some(_) => Err(FENCED_INSTANCE_ID),
            None => Err(UNKNOWN_MEMBER_ID),
        },
        None => Ok(member_id.to_string()),
    }
}

/// Group lifecycle states, named as Kafka's DescribeGroups reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, group instance id, metadata): for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    pub(super) fn error(error: i16, member_id: &str) -> Self {
        Self {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// What a SyncGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// Either an answer now or a receiver for the answer after the rebalance.
#[derive(Debug)]
pub enum Reply<T> {
    Now(T),
    Wait(oneshot::Receiver<T>, Duration),
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// One member, as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// One group, as DescribeGroups and the admin API show it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub group_id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}
