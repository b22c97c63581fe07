//! The consumer-group coordinator: classic groups (membership, rebalances,
//! session timeouts, static membership), consumer groups of the KIP-848
//! protocol ([`consumer`]), and committed offsets.
//!
//! A group id names a group of one type at a time; [`interop`] holds the
//! rules for a group addressed by the other protocol.
//!
//! Every group is a small state machine (`Empty → PreparingRebalance →
//! CompletingRebalance → Stable`, back to `PreparingRebalance` on any change of
//! membership). All methods take `now`, so the machine is driven by the
//! caller: request handlers for joins, syncs, heartbeats and leaves, and a
//! ticker for deadlines (session timeouts, rebalance timeouts, the initial
//! join delay). A JoinGroup or SyncGroup that must wait for other members
//! gets a oneshot receiver; the group answers it when the rebalance
//! completes. The state lives behind one `parking_lot` mutex that is never
//! held across an `.await`.

pub mod consumer;
pub mod interop;
pub mod journal;
pub mod offsets;
mod state;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

pub use offsets::{Change, Committed, OffsetStore};
use state::{Group, Member};
use types::leaving_member;
pub use types::{GroupView, JoinOutcome, JoinRequest, MemberView, Reply, State, SyncOutcome};

pub use crate::protocol::errors::{
    COORDINATOR_NOT_AVAILABLE, FENCED_INSTANCE_ID, GROUP_ID_NOT_FOUND, GROUP_MAX_SIZE_REACHED,
    ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL, INVALID_GROUP_ID, INVALID_SESSION_TIMEOUT,
    MEMBER_ID_REQUIRED, NONE, NON_EMPTY_GROUP, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};

/// Longest group id accepted (ids are stored with a 16-bit length).
pub const MAX_GROUP_ID_BYTES: usize = 1024;

fn valid_group_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_GROUP_ID_BYTES
}

/// Coordinator settings (Kafka's group.* broker configs).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Delay of the first rebalance of an empty group, so that members that
    /// start together join one generation (group.initial.rebalance.delay.ms).
    pub initial_rebalance_delay_ms: u64,
    pub max_size: usize,
    /// Consumer groups' (KIP-848) settings.
    pub consumer: consumer::Settings,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 1_000,
            consumer: consumer::Settings::default(),
        }
    }
}

/// The coordinator of every group on this broker.
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// Consumer groups (KIP-848). Lock order: `groups` first.
    pub consumer: consumer::Groups,
    pub offsets: OffsetStore,
    settings: GroupSettings,
    /// In a cluster: which partitions of `__consumer_offsets` this broker
    /// has loaded, and their commits waiting for replication.
    journals: journal::Journals,
}

fn new_member_id(client_id: &str) -> String {
    let prefix: String = client_id.chars().take(64).collect();
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl Coordinator {
    pub fn new(offsets: OffsetStore, settings: GroupSettings) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            consumer: consumer::Groups::new(settings.consumer.clone()),
            offsets,
            settings,
            journals: journal::Journals::default(),
        }
    }

    /// Whether this broker has loaded the groups of offsets partition
    /// `partition` at leader epoch `epoch` (in a cluster).
    pub fn is_loaded(&self, partition: i32, epoch: i32) -> bool {
        self.journals.is_loaded(partition, epoch)
    }

    /// Readies this broker to coordinate the groups of offsets partition
    /// `partition` (of `partitions`), which it leads under `l` (in a
    /// cluster): see [`journal::Journals::ensure_loaded`].
    ///
    /// # Errors
    /// A Kafka error code: this broker cannot answer for these groups.
    pub async fn ensure_loaded(
        &self,
        partition: i32,
        partitions: usize,
        l: &crate::replicas::Leadership,
    ) -> Result<(), i16> {
        let forget = |drop: &dyn Fn(&str) -> bool| self.forget_members(drop);
        let memory = journal::Memory {
            offsets: &self.offsets,
            forget: &forget,
        };
        self.journals
            .ensure_loaded(partition, partitions, l, memory)
            .await
    }

    /// Appends offset changes to partition `partition` of
    /// `__consumer_offsets` (in a cluster): see
    /// [`journal::Journals::append`].
    ///
    /// # Errors
    /// A Kafka error code for every change.
    pub async fn journal(
        &self,
        partition: i32,
        l: &crate::replicas::Leadership,
        changes: Vec<Change>,
        opts: (bool, Duration, i64),
    ) -> Result<(), i16> {
        self.journals
            .append(partition, l, changes, &self.offsets, opts)
            .await
    }

    /// Forgets the members of every group `drop` names: another broker
    /// coordinates them now. Members still waiting for a rebalance are
    /// answered as unknown (their channels close) and join again.
    fn forget_members(&self, drop: &dyn Fn(&str) -> bool) {
        self.groups.lock().retain(|g, _| !drop(g));
        self.consumer.forget(drop);
    }

    fn initial_delay(&self) -> Duration {
        Duration::from_millis(self.settings.initial_rebalance_delay_ms)
    }

    /// JoinGroup.
    pub fn join(&self, req: JoinRequest, now: Instant) -> Reply<JoinOutcome> {
        if !valid_group_id(&req.group_id) {
            return Reply::Now(JoinOutcome::error(INVALID_GROUP_ID, &req.member_id));
        }
        if req.session_timeout_ms < self.settings.min_session_timeout_ms
            || req.session_timeout_ms > self.settings.max_session_timeout_ms
        {
            return Reply::Now(JoinOutcome::error(INVALID_SESSION_TIMEOUT, &req.member_id));
        }
        let mut groups = self.groups.lock();
        if !groups.contains_key(&req.group_id) && self.is_consumer_group(&req.group_id) {
            // The caller downgrades an empty consumer group first.
            return Reply::Now(JoinOutcome::error(
                INCONSISTENT_GROUP_PROTOCOL,
                &req.member_id,
            ));
        }
        let group = groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id));
        if !group.supports(&req.protocol_type, &req.protocols) {
            return Reply::Now(JoinOutcome::error(
                INCONSISTENT_GROUP_PROTOCOL,
                &req.member_id,
            ));
        }
        let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
        let rebalance = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64).max(session);
        let mut member_id = req.member_id.clone();

        if member_id.is_empty() {
            if let Some(inst) = &req.group_instance_id {
                if let Some(old_id) = group.static_members.get(inst).cloned() {
                    // A static member came back: same partitions, new member id.
                    let Some(mut m) = group.members.remove(&old_id) else {
                        group.static_members.remove(inst);
                        return Reply::Now(JoinOutcome::error(UNKNOWN_MEMBER_ID, ""));
                    };
                    if let Some(tx) = m.join_tx.take() {
                        let _ = tx.send(JoinOutcome::error(FENCED_INSTANCE_ID, &old_id));
                    }
                    if let Some(tx) = m.sync_tx.take() {
                        let _ = tx.send(SyncOutcome {
                            error: FENCED_INSTANCE_ID,
                            ..Default::default()
                        });
                    }
                    let new_id = new_member_id(inst);
                    let unchanged = m.protocols == req.protocols;
                    m.id = new_id.clone();
                    m.session_timeout = session;
                    m.rebalance_timeout = rebalance;
                    m.last_heartbeat = now;
                    m.client_id = req.client_id.clone();
                    m.client_host = req.client_host.clone();
                    m.protocols = req.protocols.clone();
                    group.members.insert(new_id.clone(), m);
                    group.static_members.insert(inst.clone(), new_id.clone());
                    if group.leader.as_deref() == Some(old_id.as_str()) {
                        group.leader = Some(new_id.clone());
                    }
                    if group.state == State::Stable && unchanged {
                        tracing::info!(group = %group.id, instance = %inst, "static member rejoined without a rebalance");
                        return Reply::Now(JoinOutcome {
                            error: NONE,
                            generation: group.generation,
                            protocol_type: group.protocol_type.clone(),
                            protocol_name: group.protocol.clone(),
                            leader: group.leader.clone().unwrap_or_default(),
                            member_id: new_id,
                            members: Vec::new(),
                        });
                    }
                    member_id = new_id;
                } else {
                    member_id = new_member_id(inst);
                    group.static_members.insert(inst.clone(), member_id.clone());
                }
            } else {
                member_id = new_member_id(&req.client_id);
                if req.require_known_member_id {
                    group.pending.insert(member_id.clone(), now + session);
                    return Reply::Now(JoinOutcome::error(MEMBER_ID_REQUIRED, &member_id));
                }
            }
        } else if let Some(inst) = &req.group_instance_id {
            if group.static_members.get(inst) != Some(&member_id) {
                return Reply::Now(JoinOutcome::error(FENCED_INSTANCE_ID, &member_id));
            }
        } else if !group.members.contains_key(&member_id)
            && group.pending.remove(&member_id).is_none()
        {
            return Reply::Now(JoinOutcome::error(UNKNOWN_MEMBER_ID, &member_id));
        }

        if !group.members.contains_key(&member_id) && group.members.len() >= self.settings.max_size
        {
            return Reply::Now(JoinOutcome::error(GROUP_MAX_SIZE_REACHED, &member_id));
        }

        let (tx, rx) = oneshot::channel();
        let existing = group.members.get(&member_id);
        let unchanged = existing.is_some_and(|m| m.protocols == req.protocols);
        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        // A follower re-sending its join with the same metadata while the
        // group is formed gets the current generation again.
        if unchanged
            && !is_leader
            && matches!(group.state, State::Stable | State::CompletingRebalance)
        {
            if let Some(m) = group.members.get_mut(&member_id) {
                m.last_heartbeat = now;
            }
            return Reply::Now(JoinOutcome {
                error: NONE,
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol.clone(),
                leader: group.leader.clone().unwrap_or_default(),
                member_id,
                members: Vec::new(),
            });
        }
        match group.members.get_mut(&member_id) {
            Some(m) => {
                m.protocols = req.protocols.clone();
                m.session_timeout = session;
                m.rebalance_timeout = rebalance;
                m.last_heartbeat = now;
                m.join_tx = Some(tx);
            }
            None => {
                group.members.insert(
                    member_id.clone(),
                    Member {
                        id: member_id.clone(),
                        instance_id: req.group_instance_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        session_timeout: session,
                        rebalance_timeout: rebalance,
                        protocols: req.protocols.clone(),
                        assignment: Bytes::new(),
                        last_heartbeat: now,
                        join_tx: Some(tx),
                        sync_tx: None,
                    },
                );
            }
        }
        if group.protocol_type.is_none() || group.members.len() == 1 {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        if group.state != State::PreparingRebalance {
            group.prepare_rebalance(now, self.initial_delay());
        }
        group.maybe_complete_join(now);
        Reply::Wait(rx, rebalance + Duration::from_secs(5))
    }

    /// SyncGroup. The leader's assignments complete the rebalance.
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncOutcome> {
        let err = |error| {
            Reply::Now(SyncOutcome {
                error,
                ..Default::default()
            })
        };
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return err(UNKNOWN_MEMBER_ID);
        };
        if let Err(code) = group.check_member(member_id, instance_id, generation) {
            return err(code);
        }
        match group.state {
            State::Empty => err(UNKNOWN_MEMBER_ID),
            State::PreparingRebalance => err(REBALANCE_IN_PROGRESS),
            State::Stable => Reply::Now(SyncOutcome {
                error: NONE,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol.clone(),
                assignment: group
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default(),
            }),
            State::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let timeout = group
                    .members
                    .get(member_id)
                    .map_or(Duration::from_secs(60), |m| m.session_timeout)
                    + Duration::from_secs(5);
                if let Some(m) = group.members.get_mut(member_id) {
                    m.sync_tx = Some(tx);
                }
                if group.leader.as_deref() == Some(member_id) {
                    let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
                    let protocol_type = group.protocol_type.clone();
                    let protocol_name = group.protocol.clone();
                    for m in group.members.values_mut() {
                        m.assignment = by_member.remove(&m.id).unwrap_or_default();
                        if let Some(tx) = m.sync_tx.take() {
                            let _ = tx.send(SyncOutcome {
                                error: NONE,
                                protocol_type: protocol_type.clone(),
                                protocol_name: protocol_name.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                    group.state = State::Stable;
                    tracing::debug!(group = %group.id, generation = group.generation, "group is stable");
                }
                Reply::Wait(rx, timeout)
            }
        }
    }

    /// Heartbeat: keeps a member alive, and tells it of a rebalance.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> i16 {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if let Err(code) = group.check_member(member_id, instance_id, generation) {
            // During a rebalance an old generation learns of it this way.
            if code == ILLEGAL_GENERATION && group.state == State::PreparingRebalance {
                if let Some(m) = group.members.get_mut(member_id) {
                    m.last_heartbeat = now;
                }
                return REBALANCE_IN_PROGRESS;
            }
            return code;
        }
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match group.state {
            State::PreparingRebalance => REBALANCE_IN_PROGRESS,
            State::Empty => UNKNOWN_MEMBER_ID,
            _ => NONE,
        }
    }

    /// LeaveGroup for one or more members (by member id or instance id).
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: Instant,
    ) -> (i16, Vec<i16>) {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return (UNKNOWN_MEMBER_ID, vec![UNKNOWN_MEMBER_ID; members.len()]);
        };
        let mut codes = Vec::with_capacity(members.len());
        let mut removed = false;
        for (member_id, instance) in members {
            let id = match leaving_member(&group.static_members, member_id, instance.as_deref()) {
                Ok(id) => id,
                Err(code) => {
                    codes.push(code);
                    continue;
                }
            };
            if group.pending.remove(&id).is_some() {
                codes.push(NONE);
                continue;
            }
            match group.remove_member(&id) {
                Some(mut m) => {
                    if let Some(tx) = m.join_tx.take() {
                        let _ = tx.send(JoinOutcome::error(UNKNOWN_MEMBER_ID, &id));
                    }
                    if let Some(tx) = m.sync_tx.take() {
                        let _ = tx.send(SyncOutcome {
                            error: UNKNOWN_MEMBER_ID,
                            ..Default::default()
                        });
                    }
                    tracing::info!(group = %group.id, member = %id, "member left");
                    removed = true;
                    codes.push(NONE);
                }
                None => codes.push(UNKNOWN_MEMBER_ID),
            }
        }
        if removed {
            self.after_membership_change(group, now);
        }
        let top = if members.len() == 1 { codes[0] } else { NONE };
        (top, codes)
    }

    fn after_membership_change(&self, group: &mut Group, now: Instant) {
        match group.state {
            State::Stable | State::CompletingRebalance => {
                if group.members.is_empty() {
                    group.state = State::Empty;
                    group.generation += 1;
                    group.leader = None;
                    group.protocol = None;
                } else {
                    group.prepare_rebalance(now, self.initial_delay());
                }
            }
            State::PreparingRebalance => group.maybe_complete_join(now),
            State::Empty => {}
        }
    }

    /// Drives deadlines: expired sessions, rebalance timeouts, the initial
    /// delay. Called periodically.
    pub fn tick(&self, now: Instant) {
        let mut groups = self.groups.lock();
        for group in groups.values_mut() {
            group.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| m.join_tx.is_none() && m.sync_tx.is_none())
                .filter(|m| now.duration_since(m.last_heartbeat) > m.session_timeout)
                .map(|m| m.id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %group.id, member = %id, "session timed out; member removed");
                group.remove_member(id);
            }
            if !expired.is_empty() {
                self.after_membership_change(group, now);
            }
            group.maybe_complete_join(now);
        }
    }

    /// Commits offsets for a group after checking its member and generation.
    /// Returns an error code for the whole request, or NONE.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> i16 {
        if !valid_group_id(group_id) {
            return INVALID_GROUP_ID;
        }
        if let Some(code) =
            self.consumer
                .check_member(group_id, member_id, generation, self.stored_state(group_id))
        {
            return code;
        }
        let groups = self.groups.lock();
        let Some(group) = groups.get(group_id) else {
            // No live members: commits from simple consumers and admin tools.
            return if generation < 0 {
                NONE
            } else {
                ILLEGAL_GENERATION
            };
        };
        if generation < 0 && member_id.is_empty() && group.state == State::Empty {
            return NONE;
        }
        if group.state == State::CompletingRebalance {
            return REBALANCE_IN_PROGRESS;
        }
        match group.check_member(member_id, instance_id, generation) {
            Ok(()) => NONE,
            Err(code) => code,
        }
    }

    /// Every group known (live, stored or with committed offsets):
    /// its id, state name, protocol type and group type ("classic" or
    /// "consumer").
    pub fn list(&self) -> Vec<Listed> {
        let groups = self.groups.lock();
        let mut out: BTreeMap<String, Listed> = groups
            .values()
            .map(|g| {
                let l = Listed {
                    id: g.id.clone(),
                    state: g.state.name(),
                    protocol_type: g.protocol_type.clone().unwrap_or_else(|| "consumer".into()),
                    group_type: "classic",
                };
                (g.id.clone(), l)
            })
            .collect();
        drop(groups);
        for name in self.offsets.group_state_names() {
            // Load stored consumer groups, so they list with their state.
            self.is_consumer_group(&name);
        }
        for (id, state, _, _) in self.consumer.list() {
            let l = Listed {
                id: id.clone(),
                state,
                protocol_type: "consumer".into(),
                group_type: "consumer",
            };
            out.insert(id, l);
        }
        for name in self.offsets.group_names() {
            out.entry(name.clone()).or_insert(Listed {
                id: name,
                state: State::Empty.name(),
                protocol_type: "consumer".into(),
                group_type: "classic",
            });
        }
        out.into_values().collect()
    }

    /// One classic group's state, if it exists (a group with committed
    /// offsets only shows as an empty classic group).
    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        if self.is_consumer_group(group_id) {
            return None;
        }
        let groups = self.groups.lock();
        match groups.get(group_id) {
            Some(g) => {
                let protocol = g.protocol.clone().unwrap_or_default();
                Some(GroupView {
                    group_id: g.id.clone(),
                    state: g.state,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocol: protocol.clone(),
                    members: g
                        .members
                        .values()
                        .map(|m| MemberView {
                            member_id: m.id.clone(),
                            group_instance_id: m.instance_id.clone(),
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            metadata: m.metadata_for(&protocol),
                            assignment: m.assignment.clone(),
                        })
                        .collect(),
                })
            }
            None => {
                drop(groups);
                (!self.offsets.group(group_id).is_empty()).then(|| GroupView {
                    group_id: group_id.to_string(),
                    state: State::Empty,
                    generation: 0,
                    protocol_type: "consumer".into(),
                    protocol: String::new(),
                    members: Vec::new(),
                })
            }
        }
    }

    /// Whether a group may be deleted (it has no members), and whether it
    /// has offsets to delete.
    ///
    /// # Errors
    /// NON_EMPTY_GROUP or GROUP_ID_NOT_FOUND.
    pub fn check_delete(&self, group_id: &str) -> Result<bool, i16> {
        let groups = self.groups.lock();
        let live = groups.get(group_id);
        if live.is_some_and(|g| g.state != State::Empty) {
            return Err(NON_EMPTY_GROUP);
        }
        let consumer = self.is_consumer_group(group_id);
        if consumer && !self.consumer.is_empty(group_id) {
            return Err(NON_EMPTY_GROUP);
        }
        // A consumer group's stored state goes with the deletion.
        let has_offsets = !self.offsets.group(group_id).is_empty() || consumer;
        if live.is_none() && !has_offsets {
            return Err(GROUP_ID_NOT_FOUND);
        }
        Ok(has_offsets)
    }

    /// Forgets a group without members, once its offsets are deleted.
    pub fn forget(&self, group_id: &str) {
        self.consumer.remove_empty(group_id);
        let mut groups = self.groups.lock();
        if groups
            .get(group_id)
            .is_some_and(|g| g.state == State::Empty)
        {
            groups.remove(group_id);
        }
    }

    /// Topics a live group's members subscribe to (consumer protocol).
    pub fn subscribed_topics(&self, group_id: &str) -> HashSet<String> {
        let groups = self.groups.lock();
        let mut out = HashSet::new();
        if let Some(g) = groups.get(group_id) {
            for m in g.members.values() {
                for (_, meta) in &m.protocols {
                    out.extend(parse_subscription_topics(meta));
                }
            }
        }
        out
    }
}

/// One group as ListGroups and the admin API list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub state: &'static str,
    pub protocol_type: String,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: &'static str,
}

/// Topic names of a consumer-protocol subscription (version, topics, ...).
pub fn parse_subscription_topics(meta: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if meta.len() < 6 {
        return out;
    }
    let n = i32::from_be_bytes([meta[2], meta[3], meta[4], meta[5]]);
    let mut pos = 6usize;
    for _ in 0..n.max(0) {
        if pos + 2 > meta.len() {
            break;
        }
        let len = i16::from_be_bytes([meta[pos], meta[pos + 1]]);
        pos += 2;
        if len < 0 || pos + len as usize > meta.len() {
            break;
        }
        if let Ok(s) = std::str::from_utf8(&meta[pos..pos + len as usize]) {
            out.push(s.to_string());
        }
        pos += len as usize;
    }
    out
}
