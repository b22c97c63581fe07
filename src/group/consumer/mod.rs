//! The consumer group protocol of KIP-848: the broker computes the
//! assignment and every member reconciles towards it one heartbeat at a
//! time, so a join or a leave never stops the members that keep their
//! partitions.
//!
//! A group has an epoch, bumped by every change of membership,
//! subscription or subscribed topics' partition counts, and a target
//! assignment computed for its latest epoch by a server-side assignor
//! ([`assign`]). Each member has an epoch of its own and moves towards its
//! target in steps (Kafka's `CurrentAssignmentBuilder`):
//!
//! - partitions it holds that its target does not are revoked first, and
//!   the member stays at its epoch (`UNREVOKED_PARTITIONS`) until a
//!   heartbeat shows it no longer owns them;
//! - then it takes the target epoch and every partition of its target that
//!   no other member still holds; those another member still holds come in
//!   later heartbeats, once released (`UNRELEASED_PARTITIONS`).
//!
//! So no partition is ever owned by two members at once. A member that
//! misses its session timeout, or does not revoke within its rebalance
//! timeout, is removed and the group's epoch moves on.
//!
//! Every change of the durable state (not a bare heartbeat) yields the
//! group's whole state as one record ([`record`]) for the caller to store;
//! a group missing from memory is loaded from the last stored record.

pub mod assign;
pub mod classic;
pub mod embedded;
mod group;
mod record;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

pub use assign::{Parts, ASSIGNORS};
use group::{compile, count, is_subset};
pub use group::{Classic, Group, Member, MemberState, Topology};
pub use record::seq_of;

use crate::protocol::errors::{
    FENCED_INSTANCE_ID, FENCED_MEMBER_EPOCH, GROUP_MAX_SIZE_REACHED, ILLEGAL_GENERATION,
    INVALID_REGULAR_EXPRESSION, INVALID_REQUEST, NONE, STALE_MEMBER_EPOCH, UNKNOWN_MEMBER_ID,
    UNRELEASED_INSTANCE_ID, UNSUPPORTED_ASSIGNOR,
};

/// The epoch a member joins with.
pub const JOIN_EPOCH: i32 = 0;
/// The epoch a member leaves with.
pub const LEAVE_EPOCH: i32 = -1;
/// The epoch a static member leaves with when it means to come back.
pub const LEAVE_STATIC_EPOCH: i32 = -2;

/// Settings of consumer groups (Kafka's `group.consumer.*`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub max_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(5),
            max_size: 1_000,
        }
    }
}

/// A ConsumerGroupHeartbeat, decoded (topic ids turned into names).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub topics: Option<Vec<String>>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub owned: Option<Parts>,
    pub client_id: String,
    pub client_host: String,
}

/// What a heartbeat is answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    pub assignment: Option<Parts>,
}

impl Answer {
    fn error(error: i16, message: impl Into<String>) -> Self {
        Self {
            error,
            message: Some(message.into()),
            ..Default::default()
        }
    }
}

/// A record to store: a group's whole state, or `None` once it is gone.
pub type Record = (String, Option<Bytes>);

/// Every consumer group this broker coordinates.
#[derive(Debug, Default)]
pub struct Groups {
    groups: Mutex<HashMap<String, Group>>,
    /// Groups that became classic groups (or were deleted) here, whose
    /// stored record may not be ended yet: never loaded again until a
    /// consumer group of the id begins anew. Lock order: after `groups`.
    ended: Mutex<HashSet<String>>,
    settings: Settings,
}

/// The result of a heartbeat: the answer, and the record to store first
/// when the group's durable state changed.
#[derive(Debug)]
pub struct Outcome {
    pub answer: Answer,
    pub record: Option<Record>,
}

impl Groups {
    pub fn new(settings: Settings) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashSet::new()),
            settings,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether group `id` is a consumer group, loading it from `stored`
    /// (its last record) if it is not in memory yet.
    pub fn exists(&self, id: &str, stored: impl FnOnce() -> Option<Bytes>) -> bool {
        let mut groups = self.groups.lock();
        self.load(&mut groups, id, stored).is_some()
    }

    fn load<'a>(
        &self,
        groups: &'a mut HashMap<String, Group>,
        id: &str,
        stored: impl FnOnce() -> Option<Bytes>,
    ) -> Option<&'a mut Group> {
        if !groups.contains_key(id) {
            if self.ended.lock().contains(id) {
                return None;
            }
            let g = stored().and_then(|r| record::decode(id, &r, Instant::now()))?;
            groups.insert(id.to_string(), g);
        }
        groups.get_mut(id)
    }

    /// Whether the group has members (a group of the other protocol may
    /// not take it over then).
    pub fn is_empty(&self, id: &str) -> bool {
        self.groups
            .lock()
            .get(id)
            .is_none_or(|g| g.members.is_empty())
    }

    /// Forgets an empty group (it becomes a classic group, or is deleted).
    /// Returns whether there was one.
    pub fn remove_empty(&self, id: &str) -> bool {
        let mut groups = self.groups.lock();
        if groups.get(id).is_some_and(|g| g.members.is_empty()) {
            groups.remove(id);
            self.ended.lock().insert(id.to_string());
            return true;
        }
        false
    }

    /// Forgets every group `drop` names (another broker coordinates them).
    pub fn forget(&self, drop: &dyn Fn(&str) -> bool) {
        self.groups.lock().retain(|g, _| !drop(g));
        self.ended.lock().retain(|g| !drop(g));
    }

    /// Checks a heartbeat's fields as Kafka does before it looks at the
    /// group.
    ///
    /// # Errors
    /// The answer to give when they are not valid.
    pub fn validate(hb: &Heartbeat, version: i16) -> Result<(), Answer> {
        let bad = |msg: &str| Err(Answer::error(INVALID_REQUEST, msg));
        if hb.group_id.is_empty() {
            return bad("GroupId can't be empty.");
        }
        if hb.instance_id.as_deref() == Some("") {
            return bad("InstanceId can't be empty.");
        }
        if hb.rack_id.as_deref() == Some("") {
            return bad("RackId can't be empty.");
        }
        if version >= 1 && hb.member_id.is_empty() {
            return bad("MemberId can't be empty.");
        }
        match hb.member_epoch {
            JOIN_EPOCH => {
                if hb.rebalance_timeout_ms == -1 {
                    return bad("RebalanceTimeoutMs must be provided in first request.");
                }
                if hb.owned.as_ref().is_none_or(|o| count(o) > 0) {
                    return bad("TopicPartitions must be empty when (re-)joining.");
                }
                if hb.topics.is_none() && hb.regex.is_none() {
                    return bad("SubscribedTopicNames or SubscribedTopicRegex must be set in first request.");
                }
            }
            LEAVE_STATIC_EPOCH if hb.instance_id.is_none() => {
                return bad("InstanceId can't be null when leaving as a static member.");
            }
            e if e < LEAVE_STATIC_EPOCH => return bad("MemberEpoch is invalid."),
            e if e > 0 && hb.member_id.is_empty() => {
                return bad("MemberId can't be empty.");
            }
            _ => {}
        }
        if let Some(re) = hb.regex.as_deref().filter(|r| !r.is_empty()) {
            if let Err(e) = compile(re) {
                return Err(Answer::error(
                    INVALID_REGULAR_EXPRESSION,
                    format!("SubscribedTopicRegex `{re}` is not a valid regular expression: {e}."),
                ));
            }
        }
        if let Some(a) = &hb.assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return Err(Answer::error(
                    UNSUPPORTED_ASSIGNOR,
                    format!(
                        "ServerAssignor {a} is not supported. Supported assignors: uniform, range."
                    ),
                ));
            }
        }
        Ok(())
    }

    /// ConsumerGroupHeartbeat. `stored` gives the group's last record if
    /// it is not in memory; `topology` the topics that may be assigned.
    pub fn heartbeat(
        &self,
        mut hb: Heartbeat,
        version: i16,
        topology: &Topology,
        stored: impl FnOnce() -> Option<Bytes>,
        now: Instant,
    ) -> Outcome {
        if let Err(answer) = Self::validate(&hb, version) {
            return Outcome {
                answer,
                record: None,
            };
        }
        if hb.member_id.is_empty() {
            hb.member_id = uuid::Uuid::new_v4().to_string();
        }
        let mut groups = self.groups.lock();
        let group = match self.load(&mut groups, &hb.group_id, stored) {
            Some(g) => g,
            None if hb.member_epoch == JOIN_EPOCH => {
                self.ended.lock().remove(&hb.group_id);
                groups
                    .entry(hb.group_id.clone())
                    .or_insert_with(|| Group::new(&hb.group_id))
            }
            // A member of a group this coordinator does not know (gone, or
            // never here) joins again.
            None => {
                return Outcome {
                    answer: Answer::error(
                        UNKNOWN_MEMBER_ID,
                        format!("Group {} not found.", hb.group_id),
                    ),
                    record: None,
                }
            }
        };
        let before = group.fingerprint(&hb.member_id);
        let answer = match hb.member_epoch {
            LEAVE_EPOCH | LEAVE_STATIC_EPOCH => Self::leave(group, &hb),
            _ => self.join_or_beat(group, &hb, topology, now),
        };
        let after = group.fingerprint(&answer.member_id);
        let record = if answer.error == NONE && after != before {
            group.seq += 1;
            Some((group.id.clone(), Some(record::encode(group))))
        } else {
            None
        };
        Outcome { answer, record }
    }

    fn leave(group: &mut Group, hb: &Heartbeat) -> Answer {
        let id = match &hb.instance_id {
            Some(inst) => match group.statics.get(inst) {
                Some(cur) if *cur == hb.member_id => cur.clone(),
                Some(_) => {
                    return Answer::error(
                        FENCED_INSTANCE_ID,
                        format!("Instance {inst} is owned by another member."),
                    )
                }
                None => {
                    return Answer::error(
                        UNKNOWN_MEMBER_ID,
                        format!("Instance {inst} is not in group {}.", group.id),
                    )
                }
            },
            None => hb.member_id.clone(),
        };
        if !group.members.contains_key(&id) {
            return Answer::error(
                UNKNOWN_MEMBER_ID,
                format!("Member {id} is not a member of group {}.", group.id),
            );
        }
        if hb.member_epoch == LEAVE_STATIC_EPOCH {
            // The instance keeps its partitions for its next incarnation,
            // within the session timeout.
            if let Some(m) = group.members.get_mut(&id) {
                if m.epoch >= 0 {
                    m.previous_epoch = m.epoch;
                }
                m.epoch = LEAVE_STATIC_EPOCH;
                m.revoke_deadline = None;
            }
            tracing::info!(group = %group.id, member = %id, "static member left for now");
        } else {
            group.remove_member(&id);
            tracing::info!(group = %group.id, member = %id, epoch = group.epoch, "member left");
        }
        Answer {
            member_id: id,
            member_epoch: hb.member_epoch,
            ..Default::default()
        }
    }

    fn join_or_beat(
        &self,
        group: &mut Group,
        hb: &Heartbeat,
        topology: &Topology,
        now: Instant,
    ) -> Answer {
        let mut bump = false;
        let mut full = hb.member_epoch == JOIN_EPOCH;
        let id = hb.member_id.clone();
        if hb.member_epoch == JOIN_EPOCH {
            let replaced = match &hb.instance_id {
                Some(inst) => match group.statics.get(inst).cloned() {
                    Some(old) if old == id => None,
                    Some(old) => match group.members.get(&old) {
                        Some(m) if m.epoch != LEAVE_STATIC_EPOCH => {
                            return Answer::error(
                                UNRELEASED_INSTANCE_ID,
                                format!(
                                "Static member {old} with instance id {inst} is still in group {}.",
                                group.id
                            ),
                            )
                        }
                        Some(_) => Some(old),
                        None => None,
                    },
                    None => None,
                },
                None => None,
            };
            if let Some(old) = replaced {
                // The instance comes back under a new member id with the
                // epoch and partitions it left with.
                group.replace_static(&old, &id, now);
            } else if let Some(m) = group.members.get_mut(&id) {
                // A member that rejoins owns nothing any more.
                m.epoch = 0;
                m.state = MemberState::Stable;
                m.revoke_deadline = None;
                group.set_owned(&id, Parts::new(), Parts::new());
                bump = true;
            } else {
                if group.members.len() >= self.settings.max_size {
                    return Answer::error(
                        GROUP_MAX_SIZE_REACHED,
                        format!(
                            "The consumer group has reached its maximum capacity of {} members.",
                            self.settings.max_size
                        ),
                    );
                }
                group.members.insert(
                    id.clone(),
                    Member::joining(&id, hb.instance_id.clone(), hb.rebalance_timeout_ms, now),
                );
                if let Some(inst) = &hb.instance_id {
                    group.statics.insert(inst.clone(), id.clone());
                }
                tracing::info!(group = %group.id, member = %id, "member joined");
                bump = true;
            }
        } else {
            let Some(m) = group.members.get(&id) else {
                return Answer::error(
                    UNKNOWN_MEMBER_ID,
                    format!("Member {id} is not a member of group {}.", group.id),
                );
            };
            if let Some(inst) = &hb.instance_id {
                if group.statics.get(inst).is_some_and(|cur| *cur != id) {
                    return Answer::error(
                        FENCED_INSTANCE_ID,
                        format!("Instance {inst} is owned by another member."),
                    );
                }
            }
            let fenced = hb.member_epoch > m.epoch
                || (hb.member_epoch < m.epoch
                    && (hb.member_epoch != m.previous_epoch
                        || !hb.owned.as_ref().is_none_or(|o| is_subset(o, &m.assigned))));
            if fenced {
                return Answer::error(
                    FENCED_MEMBER_EPOCH,
                    format!(
                        "The consumer group member has a greater member epoch ({}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                        hb.member_epoch, m.epoch
                    ),
                );
            }
        }
        // The member's fields: those the request sets.
        if let Some(m) = group.members.get_mut(&id) {
            m.last_heartbeat = now;
            m.client_id.clone_from(&hb.client_id);
            m.client_host.clone_from(&hb.client_host);
            if let Some(r) = &hb.rack_id {
                m.rack_id = Some(r.clone());
            }
            if hb.rebalance_timeout_ms >= 0 {
                m.rebalance_timeout_ms = hb.rebalance_timeout_ms;
            }
            if let Some(topics) = &hb.topics {
                let mut topics = topics.clone();
                topics.sort();
                topics.dedup();
                if topics != m.topics {
                    m.topics = topics;
                    bump = true;
                }
            }
            if let Some(re) = &hb.regex {
                let re = (!re.is_empty()).then(|| re.clone());
                if re != m.regex {
                    m.matcher = re.as_deref().and_then(|r| compile(r).ok());
                    m.regex = re;
                    bump = true;
                }
            }
            if hb.assignor.is_some() && hb.assignor != m.assignor {
                m.assignor.clone_from(&hb.assignor);
                bump = true;
            }
            full |= hb.rebalance_timeout_ms >= 0 && hb.topics.is_some() && hb.owned.is_some();
        }
        group.advance(bump, topology);
        let before = group.members.get(&id).map(|m| m.assigned.clone());
        group.reconcile(&id, hb.owned.as_ref(), now);
        let Some(m) = group.members.get(&id) else {
            return Answer::error(UNKNOWN_MEMBER_ID, "member vanished");
        };
        let changed = before.as_ref() != Some(&m.assigned);
        Answer {
            error: NONE,
            message: None,
            member_id: id.clone(),
            member_epoch: m.epoch,
            heartbeat_interval_ms: self.settings.heartbeat_interval.as_millis() as i32,
            assignment: (full || changed).then(|| m.assigned.clone()),
        }
    }

    /// Drives deadlines: members past their session timeout, and members
    /// that did not revoke within their rebalance timeout, are removed.
    /// Returns the records of the groups that changed.
    pub fn tick(&self, now: Instant) -> Vec<Record> {
        let mut out = Vec::new();
        let mut groups = self.groups.lock();
        for group in groups.values_mut() {
            let expired: Vec<(String, &'static str)> = group
                .members
                .values()
                .filter_map(|m| {
                    let session = m
                        .classic
                        .as_ref()
                        .map_or(self.settings.session_timeout, |c| {
                            Duration::from_millis(c.session_timeout_ms.max(0) as u64)
                        });
                    if now.duration_since(m.last_heartbeat) > session {
                        Some((m.id.clone(), "session timed out"))
                    } else if m.revoke_deadline.is_some_and(|d| now > d) {
                        Some((m.id.clone(), "did not revoke its partitions in time"))
                    } else if m
                        .classic
                        .as_ref()
                        .is_some_and(|c| c.rejoin_by.is_some_and(|d| now > d))
                    {
                        Some((m.id.clone(), "did not join again in time"))
                    } else {
                        None
                    }
                })
                .collect();
            for (id, why) in &expired {
                group.remove_member(id);
                tracing::info!(group = %group.id, member = %id, epoch = group.epoch, "member removed: {why}");
            }
            if !expired.is_empty() {
                group.seq += 1;
                out.push((group.id.clone(), Some(record::encode(group))));
            }
        }
        out
    }

    /// Checks an offset commit (or fetch) by member `member_id` at
    /// `epoch`: `None` if `group` is not a consumer group.
    pub fn check_member(
        &self,
        group: &str,
        member_id: &str,
        epoch: i32,
        stored: impl FnOnce() -> Option<Bytes>,
    ) -> Option<i16> {
        let mut groups = self.groups.lock();
        let g = self.load(&mut groups, group, stored)?;
        if epoch < 0 && member_id.is_empty() {
            // An admin tool's or a simple consumer's commit.
            return Some(if g.members.is_empty() {
                NONE
            } else {
                UNKNOWN_MEMBER_ID
            });
        }
        Some(match g.members.get(member_id) {
            None => UNKNOWN_MEMBER_ID,
            // A classic member knows its epoch as a generation.
            Some(m) if m.epoch != epoch && m.classic.is_some() => ILLEGAL_GENERATION,
            Some(m) if m.epoch != epoch => STALE_MEMBER_EPOCH,
            Some(_) => NONE,
        })
    }

    /// A copy of one group, as ConsumerGroupDescribe and the admin API
    /// show it.
    pub fn describe(&self, id: &str, stored: impl FnOnce() -> Option<Bytes>) -> Option<Group> {
        let mut groups = self.groups.lock();
        self.load(&mut groups, id, stored).map(|g| g.clone())
    }

    /// Every group in memory: (id, state name, epoch, members).
    pub fn list(&self) -> Vec<(String, &'static str, i32, usize)> {
        self.groups
            .lock()
            .values()
            .map(|g| (g.id.clone(), g.state_name(), g.epoch, g.members.len()))
            .collect()
    }

    /// The topics a group's members subscribe to, resolved in `topology`.
    pub fn subscribed_topics(&self, id: &str, topology: &Topology) -> BTreeSet<String> {
        self.groups
            .lock()
            .get(id)
            .map(|g| g.subscriptions(topology).1.into_keys().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
