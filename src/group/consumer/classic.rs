//! Classic members inside a consumer group (Kafka 4's mixed groups): a
//! consumer that speaks JoinGroup, SyncGroup and Heartbeat stays in a
//! group that consumer-protocol members have joined, its partitions
//! computed by the group's server-side assignor like everyone's.
//!
//! A classic member cannot be told its assignment in a heartbeat, so it
//! reconciles through rebalances of its own: a heartbeat answers
//! `REBALANCE_IN_PROGRESS` when the group moved to a newer epoch or the
//! member has partitions to give up or to take; the member joins again,
//! saying in its subscription what it still owns; its join moves it one
//! step towards its target (as a consumer-protocol heartbeat would), and
//! its sync hands it what it may own now. Its generation is its member
//! epoch. The join is answered at once: there is no leader and nothing
//! for the member to assign.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::group::{Classic, Group, Member, MemberState};
use super::{embedded, record, Groups, Parts, Record, Topology};
use crate::group::types::leaving_member;
use crate::protocol::errors::{
    FENCED_INSTANCE_ID, GROUP_MAX_SIZE_REACHED, ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL,
    MEMBER_ID_REQUIRED, NONE, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};

/// The protocol type of consumers; the only one a consumer group takes.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// A JoinGroup to a consumer group.
#[derive(Debug, Clone)]
pub struct ClassicJoin<'a> {
    pub group_id: &'a str,
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub client_id: &'a str,
    pub client_host: &'a str,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: &'a str,
    pub protocols: &'a [(String, Bytes)],
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// What a classic member's JoinGroup is answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Joined {
    pub error: i16,
    pub member_id: String,
    /// The member's epoch.
    pub generation: i32,
    pub protocol_name: Option<String>,
}

/// What a classic member's SyncGroup is answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Synced {
    pub error: i16,
    pub protocol_name: Option<String>,
    /// The partitions it owns now, in the consumer protocol's layout.
    pub assignment: Bytes,
}

fn joined_error(error: i16, member_id: &str) -> Joined {
    Joined {
        error,
        member_id: member_id.to_string(),
        generation: -1,
        protocol_name: None,
    }
}

/// Checks that `member_id` (of `instance_id`) is a classic member of
/// `group` at `generation`.
fn check<'g>(
    group: &'g mut Group,
    member_id: &str,
    instance_id: Option<&str>,
    generation: i32,
) -> Result<&'g mut Member, i16> {
    if let Some(inst) = instance_id {
        if group.statics.get(inst).is_some_and(|cur| cur != member_id) {
            return Err(FENCED_INSTANCE_ID);
        }
    }
    let m = group.members.get_mut(member_id).ok_or(UNKNOWN_MEMBER_ID)?;
    if m.classic.is_none() {
        return Err(UNKNOWN_MEMBER_ID);
    }
    if m.epoch != generation {
        return Err(ILLEGAL_GENERATION);
    }
    Ok(m)
}

impl Groups {
    /// Takes in a group that was classic (the online upgrade).
    pub fn adopt(&self, group: Group) {
        let mut groups = self.groups.lock();
        self.ended.lock().remove(&group.id);
        groups.insert(group.id.clone(), group);
    }

    /// Forgets group `id` and hands it over if every member speaks the
    /// classic protocol (the online downgrade).
    pub fn take_if_all_classic(&self, id: &str) -> Option<Group> {
        let mut groups = self.groups.lock();
        if groups.get(id).is_some_and(Group::all_classic) {
            self.ended.lock().insert(id.to_string());
            return groups.remove(id);
        }
        None
    }

    /// JoinGroup of a classic member. `None` when `req.group_id` is not a
    /// consumer group with members (the classic coordinator serves it);
    /// else the answer and the record to store first.
    pub fn classic_join(
        &self,
        req: &ClassicJoin<'_>,
        topology: &Topology,
        stored: impl FnOnce() -> Option<Bytes>,
        now: Instant,
    ) -> Option<(Joined, Option<Record>)> {
        let mut groups = self.groups.lock();
        let group = self.load(&mut groups, req.group_id, stored)?;
        if group.members.is_empty() {
            return None;
        }
        let unknown = req.member_id.is_empty();
        let id = if unknown {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.member_id.to_string()
        };
        let fail = |code| Some((joined_error(code, &id), None));
        let known = group.members.contains_key(&id)
            || req
                .instance_id
                .is_some_and(|i| group.statics.contains_key(i));
        if !known && group.members.len() >= self.settings.max_size {
            return fail(GROUP_MAX_SIZE_REACHED);
        }
        let subscription = req
            .protocols
            .first()
            .and_then(|(_, meta)| embedded::subscription(meta));
        let Some(subscription) =
            subscription.filter(|_| req.protocol_type == CONSUMER_PROTOCOL_TYPE)
        else {
            return fail(INCONSISTENT_GROUP_PROTOCOL);
        };
        if unknown && req.instance_id.is_none() && req.require_known_member_id {
            tracing::info!(group = %group.id, member = %id, "classic member asked to join again with its new member id");
            return fail(MEMBER_ID_REQUIRED);
        }
        let before = group.fingerprint(&id);
        let mut bump = false;
        // The member: an existing one, a static instance coming back, or
        // a new one.
        if let Some(inst) = req.instance_id {
            match group.statics.get(inst).cloned() {
                Some(old) if old == id => {}
                Some(old) if unknown => group.replace_static(&old, &id, now),
                Some(_) => return fail(FENCED_INSTANCE_ID),
                None => {}
            }
        }
        match group.members.get(&id) {
            Some(m) if m.classic.is_none() => return fail(UNKNOWN_MEMBER_ID),
            Some(_) => {}
            None => {
                let m = Member::joining(
                    &id,
                    req.instance_id.map(str::to_string),
                    req.rebalance_timeout_ms,
                    now,
                );
                group.members.insert(id.clone(), m);
                if let Some(inst) = req.instance_id {
                    group.statics.insert(inst.to_string(), id.clone());
                }
                tracing::info!(group = %group.id, member = %id, "classic member joined");
                bump = true;
            }
        }
        if let Some(m) = group.members.get_mut(&id) {
            m.last_heartbeat = now;
            m.client_id = req.client_id.to_string();
            m.client_host = req.client_host.to_string();
            if subscription.rack.is_some() {
                m.rack_id.clone_from(&subscription.rack);
            }
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            if m.topics != subscription.topics {
                m.topics.clone_from(&subscription.topics);
                bump = true;
            }
            m.classic = Some(Classic {
                session_timeout_ms: req.session_timeout_ms,
                protocols: req.protocols.to_vec(),
                rejoin_by: None,
            });
        }
        group.advance(bump, topology);
        group.reconcile(&id, Some(&subscription.owned), now);
        let m = group.members.get(&id)?;
        let answer = Joined {
            error: NONE,
            member_id: id.clone(),
            generation: m.epoch,
            protocol_name: m
                .classic
                .as_ref()
                .and_then(Classic::protocol_name)
                .map(str::to_string),
        };
        let record = (group.fingerprint(&id) != before).then(|| {
            group.seq += 1;
            (group.id.clone(), Some(record::encode(group)))
        });
        Some((answer, record))
    }

    /// SyncGroup of a classic member: `None` when `group_id` is not a
    /// consumer group.
    pub fn classic_sync(
        &self,
        group_id: &str,
        (member_id, instance_id): (&str, Option<&str>),
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        stored: impl FnOnce() -> Option<Bytes>,
        now: Instant,
    ) -> Option<Synced> {
        let mut groups = self.groups.lock();
        let group = self.load(&mut groups, group_id, stored)?;
        let epoch = group.epoch;
        let fail = |error| {
            Some(Synced {
                error,
                ..Default::default()
            })
        };
        let m = match check(group, member_id, instance_id, generation) {
            Ok(m) => m,
            Err(code) => return fail(code),
        };
        let name = m.classic.as_ref().and_then(Classic::protocol_name);
        if protocol.0.is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE)
            || protocol.1.is_some_and(|n| Some(n) != name)
        {
            return fail(INCONSISTENT_GROUP_PROTOCOL);
        }
        // A newer epoch it has not joined for yet (a member giving up
        // partitions first keeps its epoch and syncs).
        if epoch > m.epoch && m.state != MemberState::UnrevokedPartitions {
            return fail(REBALANCE_IN_PROGRESS);
        }
        m.last_heartbeat = now;
        Some(Synced {
            error: NONE,
            protocol_name: name.map(str::to_string),
            assignment: embedded::encode_assignment(&m.assigned),
        })
    }

    /// Heartbeat of a classic member: `None` when `group_id` is not a
    /// consumer group. `REBALANCE_IN_PROGRESS` tells it to join again:
    /// the group moved on, it has partitions to give up, or partitions
    /// it waited for are free.
    pub fn classic_heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        stored: impl FnOnce() -> Option<Bytes>,
        now: Instant,
    ) -> Option<i16> {
        let mut groups = self.groups.lock();
        let group = self.load(&mut groups, group_id, stored)?;
        let waiting = group.waiting_on_unreleased(member_id);
        let epoch = group.epoch;
        let m = match check(group, member_id, instance_id, generation) {
            Ok(m) => m,
            Err(code) => return Some(code),
        };
        m.last_heartbeat = now;
        let rejoin = m.epoch < epoch
            || m.state == MemberState::UnrevokedPartitions
            || (m.state == MemberState::UnreleasedPartitions && !waiting);
        if !rejoin {
            return Some(NONE);
        }
        let by = now + Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64);
        if let Some(c) = m.classic.as_mut() {
            c.rejoin_by.get_or_insert(by);
        }
        Some(REBALANCE_IN_PROGRESS)
    }

    /// LeaveGroup of classic members: `None` when `group_id` is not a
    /// consumer group; else a code per member and the record to store.
    pub fn classic_leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
        stored: impl FnOnce() -> Option<Bytes>,
    ) -> Option<(Vec<i16>, Option<Record>)> {
        let mut groups = self.groups.lock();
        let group = self.load(&mut groups, group_id, stored)?;
        let mut codes = Vec::with_capacity(members.len());
        let mut removed = false;
        for (member_id, instance) in members {
            let id = match leaving_member(&group.statics, member_id, instance.as_deref()) {
                Ok(id) => id,
                Err(code) => {
                    codes.push(code);
                    continue;
                }
            };
            if group.members.get(&id).is_none_or(|m| m.classic.is_none()) {
                codes.push(UNKNOWN_MEMBER_ID);
                continue;
            }
            group.remove_member(&id);
            tracing::info!(group = %group.id, member = %id, epoch = group.epoch, "classic member left");
            removed = true;
            codes.push(NONE);
        }
        let record = removed.then(|| {
            group.seq += 1;
            (group.id.clone(), Some(record::encode(group)))
        });
        Some((codes, record))
    }
}

/// A member of a classic group taken into a consumer group by the
/// online upgrade: its subscription and current assignment come from
/// its last join and sync, its epoch is the classic group's generation.
#[derive(Debug, Clone)]
pub struct Upgraded {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub subscription: embedded::Subscription,
    pub assigned: Parts,
    pub last_heartbeat: Instant,
}

/// The consumer group a classic group becomes: `generation` is its epoch
/// and its target assignment epoch, every member's target is what it
/// owns now, so nothing moves until a member joins or leaves.
pub fn upgraded(id: &str, generation: i32, members: Vec<Upgraded>) -> Group {
    let mut g = Group::new(id);
    g.epoch = generation;
    g.assignment_epoch = generation;
    for u in members {
        let m = Member {
            id: u.id.clone(),
            instance_id: u.instance_id.clone(),
            rack_id: u.subscription.rack.clone(),
            client_id: u.client_id,
            client_host: u.client_host,
            epoch: generation,
            previous_epoch: generation,
            state: MemberState::Stable,
            rebalance_timeout_ms: u.rebalance_timeout_ms,
            topics: u.subscription.topics,
            regex: None,
            matcher: None,
            assignor: None,
            assigned: u.assigned.clone(),
            revoking: Parts::new(),
            last_heartbeat: u.last_heartbeat,
            revoke_deadline: None,
            classic: Some(Classic {
                session_timeout_ms: u.session_timeout_ms,
                protocols: u.protocols,
                rejoin_by: None,
            }),
        };
        if let Some(inst) = &u.instance_id {
            g.statics.insert(inst.clone(), u.id.clone());
        }
        g.target.insert(u.id.clone(), u.assigned);
        g.members.insert(u.id, m);
    }
    g.rebuild_owners();
    g
}
