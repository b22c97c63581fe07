//! The classic consumer-group coordinator: membership, rebalances, session
//! timeouts, static membership, and committed offsets.
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

pub mod offsets;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

pub use offsets::{Change, Committed, OffsetStore};

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
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 1_000,
        }
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
    fn error(error: i16, member_id: &str) -> Self {
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

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    join_tx: Option<oneshot::Sender<JoinOutcome>>,
    sync_tx: Option<oneshot::Sender<SyncOutcome>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct Group {
    id: String,
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with when they expire.
    pending: HashMap<String, Instant>,
    /// group.instance.id → member id.
    static_members: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    initial_delay_until: Option<Instant>,
}

impl Group {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
        }
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_tx.is_some())
    }

    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Option<HashSet<&str>> = None;
        for m in self.members.values() {
            let names: HashSet<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            candidates = Some(match candidates {
                None => names,
                Some(c) => c.intersection(&names).copied().collect(),
            });
        }
        let candidates = candidates?;
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(n.as_str()))
            {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        // Most votes; ties go to the leader's (or first member's) preference.
        let pref = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())?;
        let max = votes.values().copied().max()?;
        pref.protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| votes.get(n) == Some(&max))
            .or_else(|| votes.iter().find(|(_, v)| **v == max).map(|(n, _)| *n))
            .map(str::to_string)
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // At least one protocol in common with every current member.
        protocols.iter().any(|(n, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(mn, _)| mn == n))
        })
    }

    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == State::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(tx) = m.sync_tx.take() {
                    let _ = tx.send(SyncOutcome {
                        error: REBALANCE_IN_PROGRESS,
                        ..Default::default()
                    });
                }
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        if self.state == State::Empty {
            let delay = initial_delay.min(timeout);
            self.initial_delay_until = Some(now + delay);
        }
        self.rebalance_deadline = Some(now + timeout);
        self.state = State::PreparingRebalance;
        tracing::debug!(group = %self.id, generation = self.generation, "preparing rebalance");
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        let timed_out = self.rebalance_deadline.is_some_and(|t| now >= t);
        if (self.all_joined() && delay_over) || timed_out {
            self.complete_join(now);
        }
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let m = self.members.remove(id)?;
        if let Some(inst) = &m.instance_id {
            if self.static_members.get(inst).map(String::as_str) == Some(id) {
                self.static_members.remove(inst);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        Some(m)
    }

    fn complete_join(&mut self, now: Instant) {
        // Members that did not rejoin in time are out.
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_tx.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in missing {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time; removed");
            self.remove_member(&id);
        }
        self.pending.clear();
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect();
        self.state = State::CompletingRebalance;
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = %protocol,
            "rebalance: generation formed"
        );
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_heartbeat = now;
            if let Some(tx) = m.join_tx.take() {
                let _ = tx.send(JoinOutcome {
                    error: NONE,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: Some(protocol.clone()),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    /// Checks member id, instance id and generation for sync, heartbeat and
    /// commit. Returns the member id to use.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        if let Some(inst) = instance_id {
            match self.static_members.get(inst) {
                Some(current) if current != member_id => return Err(FENCED_INSTANCE_ID),
                None if self.members.contains_key(member_id) => return Err(FENCED_INSTANCE_ID),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(UNKNOWN_MEMBER_ID);
        }
        if generation != self.generation {
            return Err(ILLEGAL_GENERATION);
        }
        Ok(())
    }
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

/// The coordinator of every group on this broker.
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    pub offsets: OffsetStore,
    settings: GroupSettings,
}

fn new_member_id(client_id: &str) -> String {
    let prefix: String = client_id.chars().take(64).collect();
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl Coordinator {
    pub fn new(offsets: OffsetStore, settings: GroupSettings) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            offsets,
            settings,
        }
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
            let id = match instance {
                Some(inst) => match group.static_members.get(inst) {
                    Some(cur) if member_id.is_empty() || cur == member_id => cur.clone(),
                    Some(_) => {
                        codes.push(FENCED_INSTANCE_ID);
                        continue;
                    }
                    None => {
                        codes.push(UNKNOWN_MEMBER_ID);
                        continue;
                    }
                },
                None => member_id.clone(),
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

    /// States of all groups known (live or with committed offsets).
    pub fn list(&self) -> Vec<(String, State, String)> {
        let groups = self.groups.lock();
        let mut out: BTreeMap<String, (State, String)> = groups
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    (
                        g.state,
                        g.protocol_type.clone().unwrap_or_else(|| "consumer".into()),
                    ),
                )
            })
            .collect();
        drop(groups);
        for name in self.offsets.group_names() {
            out.entry(name)
                .or_insert((State::Empty, "consumer".to_string()));
        }
        out.into_iter().map(|(k, (s, t))| (k, s, t)).collect()
    }

    /// One group's state, if it exists.
    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
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

    /// Deletes an empty group and its offsets.
    ///
    /// # Errors
    /// NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, or a storage error code.
    pub fn delete_group(&self, group_id: &str) -> Result<(), i16> {
        let mut groups = self.groups.lock();
        let live = groups.get(group_id);
        if live.is_some_and(|g| g.state != State::Empty) {
            return Err(NON_EMPTY_GROUP);
        }
        let has_offsets = !self.offsets.group(group_id).is_empty();
        if live.is_none() && !has_offsets {
            return Err(GROUP_ID_NOT_FOUND);
        }
        if has_offsets {
            self.offsets
                .write(vec![Change::DeleteGroup {
                    group: group_id.to_string(),
                }])
                .map_err(|_| COORDINATOR_NOT_AVAILABLE)?;
        }
        groups.remove(group_id);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator() -> (tempfile::TempDir, Coordinator) {
        coordinator_with_delay(0)
    }

    fn coordinator_with_delay(ms: u64) -> (tempfile::TempDir, Coordinator) {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path(), false).unwrap();
        let settings = GroupSettings {
            initial_rebalance_delay_ms: ms,
            ..Default::default()
        };
        (dir, Coordinator::new(store, settings))
    }

    fn join_req(member: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            group_instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            require_known_member_id: true,
        }
    }

    fn now_join(c: &Coordinator, r: JoinRequest, now: Instant) -> JoinOutcome {
        match c.join(r, now) {
            Reply::Now(o) => o,
            Reply::Wait(mut rx, _) => rx.try_recv().expect("join completed"),
        }
    }

    #[test]
    fn a_single_member_joins_syncs_and_becomes_stable() {
        let (_d, c) = coordinator();
        let t = Instant::now();
        let first = now_join(&c, join_req("", None), t);
        assert_eq!(first.error, MEMBER_ID_REQUIRED);
        let joined = now_join(&c, join_req(&first.member_id, None), t);
        assert_eq!(joined.error, NONE);
        assert_eq!(joined.generation, 1);
        assert_eq!(joined.leader, first.member_id);
        assert_eq!(joined.members.len(), 1);
        let assignment = Bytes::from_static(b"a");
        match c.sync(
            "g",
            1,
            &first.member_id,
            None,
            vec![(first.member_id.clone(), assignment.clone())],
        ) {
            Reply::Wait(mut rx, _) => assert_eq!(rx.try_recv().unwrap().assignment, assignment),
            Reply::Now(o) => panic!("unexpected {o:?}"),
        }
        assert_eq!(c.describe("g").unwrap().state, State::Stable);
        assert_eq!(c.heartbeat("g", 1, &first.member_id, None, t), NONE);
        assert_eq!(
            c.heartbeat("g", 0, &first.member_id, None, t),
            ILLEGAL_GENERATION
        );
        assert_eq!(c.heartbeat("g", 1, "nobody", None, t), UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn an_expired_session_removes_the_member_and_rebalances() {
        let (_d, c) = coordinator();
        let t = Instant::now();
        let a = now_join(&c, join_req("", Some("a")), t);
        assert_eq!(a.error, NONE);
        let _ = c.sync("g", a.generation, &a.member_id, Some("a"), vec![]);
        c.tick(t + Duration::from_secs(11));
        let g = c.describe("g").unwrap();
        assert_eq!(g.state, State::Empty);
        assert!(g.members.is_empty());
    }

    #[test]
    fn a_static_member_rejoining_a_stable_group_keeps_its_assignment() {
        let (_d, c) = coordinator();
        let t = Instant::now();
        let a = now_join(&c, join_req("", Some("inst")), t);
        let asg = Bytes::from_static(b"parts");
        let _ = c.sync(
            "g",
            a.generation,
            &a.member_id,
            Some("inst"),
            vec![(a.member_id.clone(), asg.clone())],
        );
        let again = now_join(&c, join_req("", Some("inst")), t);
        assert_eq!(again.error, NONE);
        assert_eq!(again.generation, a.generation, "no new generation");
        assert_ne!(again.member_id, a.member_id);
        match c.sync(
            "g",
            again.generation,
            &again.member_id,
            Some("inst"),
            vec![],
        ) {
            Reply::Now(o) => assert_eq!(o.assignment, asg),
            Reply::Wait(..) => panic!("stable group answers at once"),
        }
        // The old incarnation is fenced.
        assert_eq!(
            c.heartbeat("g", a.generation, &a.member_id, Some("inst"), t),
            FENCED_INSTANCE_ID
        );
    }

    #[test]
    fn protocol_selection_takes_the_common_preferred_one() {
        let (_d, c) = coordinator_with_delay(100);
        let t = Instant::now();
        let mut r1 = join_req("", Some("1"));
        r1.protocols = vec![
            ("cooperative-sticky".into(), Bytes::new()),
            ("range".into(), Bytes::new()),
        ];
        let mut r2 = join_req("", Some("2"));
        r2.protocols = vec![("range".into(), Bytes::new())];
        let (Reply::Wait(mut rx1, _), Reply::Wait(mut rx2, _)) = (c.join(r1, t), c.join(r2, t))
        else {
            panic!("both wait for the initial delay");
        };
        assert!(
            rx1.try_recv().is_err(),
            "the initial delay holds the first rebalance"
        );
        c.tick(t + Duration::from_millis(200));
        let o1 = rx1.try_recv().unwrap();
        let o2 = rx2.try_recv().unwrap();
        assert_eq!(o1.protocol_name.as_deref(), Some("range"));
        assert_eq!(o2.generation, o1.generation);
    }

    #[test]
    fn subscription_topics_are_parsed() {
        let mut m = vec![0, 1, 0, 0, 0, 2];
        for t in ["a", "bc"] {
            m.extend_from_slice(&(t.len() as i16).to_be_bytes());
            m.extend_from_slice(t.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(parse_subscription_topics(&m), vec!["a", "bc"]);
        assert!(parse_subscription_topics(&[0, 1, 0x7f, 0, 0, 0]).is_empty());
    }
}
