//! One group's state machine: its members, the rebalance in progress, the
//! protocol it settled on, and the waiting joins and syncs it answers when
//! the rebalance completes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::types::{JoinOutcome, State, SyncOutcome};
use crate::protocol::errors::*;

#[derive(Debug)]
pub(super) struct Member {
    pub(super) id: String,
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    pub(super) last_heartbeat: Instant,
    pub(super) join_tx: Option<oneshot::Sender<JoinOutcome>>,
    pub(super) sync_tx: Option<oneshot::Sender<SyncOutcome>>,
}

impl Member {
    pub(super) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) id: String,
    pub(super) state: State,
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with when they expire.
    pub(super) pending: HashMap<String, Instant>,
    /// group.instance.id → member id.
    pub(super) static_members: HashMap<String, String>,
    pub(super) rebalance_deadline: Option<Instant>,
    pub(super) initial_delay_until: Option<Instant>,
}

impl Group {
    pub(super) fn new(id: &str) -> Self {
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

    pub(super) fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_tx.is_some())
    }

    pub(super) fn select_protocol(&self) -> Option<String> {
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

    pub(super) fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
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

    pub(super) fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
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

    pub(super) fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        let timed_out = self.rebalance_deadline.is_some_and(|t| now >= t);
        if (self.all_joined() && delay_over) || timed_out {
            self.complete_join(now);
        }
    }

    pub(super) fn remove_member(&mut self, id: &str) -> Option<Member> {
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

    pub(super) fn complete_join(&mut self, now: Instant) {
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
    pub(super) fn check_member(
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
