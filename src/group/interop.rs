//! One group id, two protocols: Kafka 4's rules for a classic group
//! addressed by ConsumerGroupHeartbeat and a consumer group addressed by
//! JoinGroup.
//!
//! - A consumer-protocol member may join a group id that is free, a
//!   consumer group, or an empty classic group (which becomes a consumer
//!   group, its committed offsets kept: the online upgrade). A classic
//!   group with members answers `GROUP_ID_NOT_FOUND` ("not a consumer
//!   group").
//! - A classic member may join an empty consumer group, which becomes a
//!   classic group (the downgrade); a consumer group with members answers
//!   `INCONSISTENT_GROUP_PROTOCOL`.

use std::time::Instant;

use bytes::Bytes;

use super::consumer::{self, Heartbeat, Outcome, Record, Topology};
use super::{Coordinator, State, GROUP_ID_NOT_FOUND};

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
        if let Some(g) = classic.get(&hb.group_id) {
            if g.state != State::Empty || !g.members.is_empty() {
                return Outcome {
                    answer: consumer::Answer {
                        error: GROUP_ID_NOT_FOUND,
                        message: Some(format!("Group {} is not a consumer group.", hb.group_id)),
                        ..Default::default()
                    },
                    record: None,
                };
            }
            if hb.member_epoch == consumer::JOIN_EPOCH {
                tracing::info!(group = %hb.group_id, "empty classic group becomes a consumer group");
                classic.remove(&hb.group_id);
            }
        }
        let stored = self.stored_state(&hb.group_id);
        let out = self.consumer.heartbeat(hb, version, topology, stored, now);
        drop(classic);
        out
    }

    /// Before a classic JoinGroup: `Err` with the code to answer when
    /// the id is a consumer group with members; `Ok(true)` when it was an
    /// empty consumer group, forgotten now, whose stored state the caller
    /// must end (a tombstone).
    ///
    /// # Errors
    /// `INCONSISTENT_GROUP_PROTOCOL`.
    pub fn downgrade_if_empty(&self, id: &str) -> Result<bool, i16> {
        if !self.is_consumer_group(id) {
            return Ok(false);
        }
        if !self.consumer.is_empty(id) {
            return Err(super::INCONSISTENT_GROUP_PROTOCOL);
        }
        tracing::info!(group = %id, "empty consumer group becomes a classic group");
        Ok(self.consumer.remove_empty(id))
    }

    /// Drives the consumer groups' deadlines; the records to store.
    pub fn consumer_tick(&self, now: Instant) -> Vec<Record> {
        self.consumer.tick(now)
    }
}
