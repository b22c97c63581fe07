//! One group id, two protocols: Kafka 4's rules (its `bidirectional`
//! migration policy) for a classic group addressed by
//! ConsumerGroupHeartbeat and a consumer group addressed by JoinGroup.
//!
//! - A consumer-protocol member may join a group id that is free, a
//!   consumer group, or a classic group of consumers. An empty classic
//!   group simply becomes a consumer group; one with members is upgraded
//!   online: its members stay, as classic members of the consumer group,
//!   with the partitions they own and the group's generation as their
//!   epoch, and the joining member's arrival starts the first
//!   server-side assignment. A classic group whose members do not speak
//!   the consumer protocol (or whose metadata does not decode) answers
//!   `GROUP_ID_NOT_FOUND` ("not a consumer group").
//! - A classic member may join an empty consumer group, which becomes a
//!   classic group; it joins a consumer group with members as a classic
//!   member ([`super::consumer`]'s `classic` module).
//! - When the last consumer-protocol member of a consumer group leaves
//!   (or times out) and classic members remain, the group goes back to
//!   being a classic group (the online downgrade): its members keep their
//!   partitions and are asked to rejoin, and a classic rebalance with a
//!   leader's assignment follows.
//!
//! A conversion ends the consumer group's stored state (a tombstone) or
//! begins it (its whole state as the next record); committed offsets
//! belong to the group id and stay through both.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::consumer::classic::{self, ClassicJoin, Upgraded, CONSUMER_PROTOCOL_TYPE};
use super::consumer::{self, embedded, Heartbeat, Outcome, Record, Topology};
use super::state::{Group, Member};
use super::{
    valid_group_id, Coordinator, JoinOutcome, JoinRequest, State, SyncOutcome, GROUP_ID_NOT_FOUND,
    NONE, REBALANCE_IN_PROGRESS,
};

/// How a classic request (JoinGroup, SyncGroup, Heartbeat, LeaveGroup)
/// to a group id is served.
#[derive(Debug)]
pub enum Mixed<T> {
    /// By the classic coordinator, once `Some` record (the end of an
    /// empty consumer group) is stored.
    Classic(Option<Record>),
    /// By the consumer group the id names: the answer, and the record to
    /// store before it is given.
    Answered(T, Option<Record>),
}

impl Coordinator {
    /// The stored state of consumer group `id`, for a lazy load.
    pub(super) fn stored_state(&self, id: &str) -> impl FnOnce() -> Option<Bytes> + '_ {
        let id = id.to_string();
        move || self.offsets.group_state(&id)
    }

    /// Whether `id` is a consumer group (in memory or stored).
    pub fn is_consumer_group(&self, id: &str) -> bool {
        self.consumer.exists(id, self.stored_state(id))
    }

    /// ConsumerGroupHeartbeat, after the checks of the group's type.
    pub fn consumer_heartbeat(
        &self,
        hb: Heartbeat,
        version: i16,
        topology: &Topology,
        now: Instant,
    ) -> Outcome {
        let mut classic = self.groups.lock();
        let refuse = |message: String| Outcome {
            answer: consumer::Answer {
                error: GROUP_ID_NOT_FOUND,
                message: Some(message),
                ..Default::default()
            },
            record: None,
        };
        if let Some(g) = classic.get_mut(&hb.group_id) {
            let joining = hb.member_epoch == consumer::JOIN_EPOCH;
            if g.state == State::Empty && g.members.is_empty() {
                if joining {
                    tracing::info!(group = %hb.group_id, "empty classic group becomes a consumer group");
                    classic.remove(&hb.group_id);
                }
            } else if !joining {
                return refuse(format!("Group {} is not a consumer group.", hb.group_id));
            } else if let Err(answer) = consumer::Groups::validate(&hb, version) {
                return Outcome {
                    answer,
                    record: None,
                };
            } else {
                match self.upgrade(g) {
                    Ok(upgraded) => {
                        tracing::info!(group = %hb.group_id, members = upgraded.members.len(), epoch = upgraded.epoch, "classic group upgraded to a consumer group");
                        classic.remove(&hb.group_id);
                        self.consumer.adopt(upgraded);
                    }
                    Err(why) => {
                        tracing::info!(group = %hb.group_id, "classic group not upgraded: {why}");
                        return refuse(format!(
                            "Group {} is not a consumer group: {why}.",
                            hb.group_id
                        ));
                    }
                }
            }
        }
        let stored = self.stored_state(&hb.group_id);
        let group_id = hb.group_id.clone();
        let mut out = self.consumer.heartbeat(hb, version, topology, stored, now);
        if let Some(tombstone) = self.maybe_downgrade(&mut classic, &group_id, now) {
            out.record = Some(tombstone);
        }
        out
    }

    /// A classic group of consumers as the consumer group it becomes.
    /// Its waiting joins and syncs are answered `REBALANCE_IN_PROGRESS`.
    fn upgrade(&self, g: &mut Group) -> Result<consumer::Group, String> {
        if g.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return Err("its members do not use the consumer protocol".into());
        }
        if g.members.len() >= self.settings.consumer.max_size {
            return Err("it has as many members as a consumer group may have".into());
        }
        let mut members = Vec::with_capacity(g.members.len());
        for m in g.members.values() {
            let meta = g
                .protocol
                .as_deref()
                .map(|p| m.metadata_for(p))
                .filter(|b| !b.is_empty())
                .or_else(|| m.protocols.first().map(|(_, b)| b.clone()))
                .unwrap_or_default();
            let (Some(subscription), Some(assigned)) = (
                embedded::subscription(&meta),
                embedded::assignment(&m.assignment),
            ) else {
                return Err("the consumer protocol of its members is malformed".into());
            };
            members.push(Upgraded {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: millis(m.session_timeout),
                rebalance_timeout_ms: millis(m.rebalance_timeout),
                protocols: m.protocols.clone(),
                subscription,
                assigned,
                last_heartbeat: m.last_heartbeat,
            });
        }
        for m in g.members.values_mut() {
            if let Some(tx) = m.join_tx.take() {
                let _ = tx.send(JoinOutcome::error(REBALANCE_IN_PROGRESS, &m.id));
            }
            if let Some(tx) = m.sync_tx.take() {
                let _ = tx.send(SyncOutcome {
                    error: REBALANCE_IN_PROGRESS,
                    ..Default::default()
                });
            }
        }
        Ok(classic::upgraded(&g.id, g.generation, members))
    }

    /// If consumer group `id` has only classic members left, makes it a
    /// classic group again, its members asked to rejoin; the tombstone
    /// of its stored state to store.
    fn maybe_downgrade(
        &self,
        classic: &mut std::collections::HashMap<String, Group>,
        id: &str,
        now: Instant,
    ) -> Option<Record> {
        let cg = self.consumer.take_if_all_classic(id)?;
        let mut g = Group::new(id);
        g.generation = cg.epoch;
        g.protocol_type = Some(CONSUMER_PROTOCOL_TYPE.to_string());
        for mut m in cg.members.into_values() {
            let Some(c) = m.classic.take() else {
                continue;
            };
            let session = Duration::from_millis(c.session_timeout_ms.max(0) as u64);
            if let Some(inst) = &m.instance_id {
                g.static_members.insert(inst.clone(), m.id.clone());
            }
            let last_heartbeat = now.checked_sub(m.since_heartbeat(now)).unwrap_or(now);
            let member = Member {
                id: m.id.clone(),
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout: session,
                rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64)
                    .max(session),
                protocols: c.protocols,
                assignment: embedded::encode_assignment(&m.assigned),
                last_heartbeat,
                join_tx: None,
                sync_tx: None,
            };
            g.members.insert(m.id, member);
        }
        g.leader = g.members.keys().next().cloned();
        g.protocol = g.select_protocol();
        g.state = State::Stable;
        g.prepare_rebalance(now, self.initial_delay());
        tracing::info!(group = %id, members = g.members.len(), generation = g.generation, "consumer group downgraded to a classic group");
        classic.insert(id.to_string(), g);
        Some((id.to_string(), None))
    }

    /// Before a classic JoinGroup: an empty consumer group becomes a
    /// classic group (its end to store first), and a consumer group with
    /// members takes the joiner in as a classic member.
    pub fn consumer_join(
        &self,
        req: &JoinRequest,
        topology: &Topology,
        now: Instant,
    ) -> Mixed<JoinOutcome> {
        let mut classic = self.groups.lock();
        let id = req.group_id.as_str();
        if !valid_group_id(id)
            || req.session_timeout_ms < self.settings.min_session_timeout_ms
            || req.session_timeout_ms > self.settings.max_session_timeout_ms
            || classic.contains_key(id)
            || !self.is_consumer_group(id)
        {
            return Mixed::Classic(None);
        }
        if self.consumer.remove_empty(id) {
            tracing::info!(group = %id, "empty consumer group becomes a classic group");
            return Mixed::Classic(Some((id.to_string(), None)));
        }
        let join = ClassicJoin {
            group_id: id,
            member_id: &req.member_id,
            instance_id: req.group_instance_id.as_deref(),
            client_id: &req.client_id,
            client_host: &req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocol_type: &req.protocol_type,
            protocols: &req.protocols,
            require_known_member_id: req.require_known_member_id,
        };
        let Some((joined, mut record)) =
            self.consumer
                .classic_join(&join, topology, self.stored_state(id), now)
        else {
            return Mixed::Classic(None);
        };
        if let Some(tombstone) = self.maybe_downgrade(&mut classic, id, now) {
            record = Some(tombstone);
        }
        let ok = joined.error == NONE;
        Mixed::Answered(
            JoinOutcome {
                error: joined.error,
                generation: joined.generation,
                protocol_type: ok.then(|| CONSUMER_PROTOCOL_TYPE.to_string()),
                protocol_name: joined.protocol_name,
                // No leader: the group's assignor assigns.
                leader: String::new(),
                member_id: joined.member_id,
                members: Vec::new(),
            },
            record,
        )
    }

    /// SyncGroup of a classic member of a consumer group; `None` when
    /// `group_id` is not a consumer group.
    pub fn consumer_sync(
        &self,
        group_id: &str,
        generation: i32,
        member: (&str, Option<&str>),
        protocol: (Option<&str>, Option<&str>),
        now: Instant,
    ) -> Option<SyncOutcome> {
        let classic = self.groups.lock();
        if classic.contains_key(group_id) {
            return None;
        }
        let s = self.consumer.classic_sync(
            group_id,
            member,
            generation,
            protocol,
            self.stored_state(group_id),
            now,
        )?;
        drop(classic);
        Some(SyncOutcome {
            error: s.error,
            protocol_type: (s.error == NONE).then(|| CONSUMER_PROTOCOL_TYPE.to_string()),
            protocol_name: s.protocol_name,
            assignment: s.assignment,
        })
    }

    /// Heartbeat of a classic member of a consumer group; `None` when
    /// `group_id` is not a consumer group.
    pub fn consumer_group_heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member: (&str, Option<&str>),
        now: Instant,
    ) -> Option<i16> {
        let classic = self.groups.lock();
        if classic.contains_key(group_id) {
            return None;
        }
        let code = self.consumer.classic_heartbeat(
            group_id,
            member.0,
            member.1,
            generation,
            self.stored_state(group_id),
            now,
        );
        drop(classic);
        code
    }

    /// LeaveGroup of classic members of a consumer group: a code per
    /// member and the record to store; `None` when `group_id` is not a
    /// consumer group.
    pub fn consumer_group_leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: Instant,
    ) -> Option<(Vec<i16>, Option<Record>)> {
        let mut classic = self.groups.lock();
        if classic.contains_key(group_id) || !self.is_consumer_group(group_id) {
            return None;
        }
        let (codes, mut record) =
            self.consumer
                .classic_leave(group_id, members, self.stored_state(group_id))?;
        if let Some(tombstone) = self.maybe_downgrade(&mut classic, group_id, now) {
            record = Some(tombstone);
        }
        Some((codes, record))
    }

    /// Drives the consumer groups' deadlines; the records to store. A
    /// group whose last consumer-protocol member timed out becomes a
    /// classic group.
    pub fn consumer_tick(&self, now: Instant) -> Vec<Record> {
        let mut classic = self.groups.lock();
        let mut records = self.consumer.tick(now);
        for (id, state) in &mut records {
            if let Some((_, tombstone)) = self.maybe_downgrade(&mut classic, id, now) {
                *state = tombstone;
            }
        }
        records
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}
