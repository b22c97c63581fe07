//! One consumer group's state and how it moves: its members, their
//! epochs and owned partitions, the target assignment, and the step by
//! step reconciliation of a member towards its target.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::assign::{self, Parts};

/// Where a member is on its way to its target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// It holds its target, or all of it that is free.
    Stable = 0,
    /// It must give up partitions before it moves on.
    UnrevokedPartitions = 1,
    /// It waits for partitions that other members still hold.
    UnreleasedPartitions = 2,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Stable => "stable",
            MemberState::UnrevokedPartitions => "unrevoked_partitions",
            MemberState::UnreleasedPartitions => "unreleased_partitions",
        }
    }
}

/// One member of a consumer group.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub rebalance_timeout_ms: i32,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    /// `regex` compiled, once, when the subscription takes it.
    pub(super) matcher: Option<regex::Regex>,
    pub assignor: Option<String>,
    /// The partitions it owns now.
    pub assigned: Parts,
    /// The partitions it was asked to give up and still owns.
    pub revoking: Parts,
    pub(super) last_heartbeat: Instant,
    pub(super) revoke_deadline: Option<Instant>,
    /// Set for a member that speaks the classic protocol (JoinGroup,
    /// SyncGroup, Heartbeat) inside this group.
    pub classic: Option<Classic>,
}

/// What a classic member joined with.
#[derive(Debug, Clone)]
pub struct Classic {
    pub session_timeout_ms: i32,
    /// Its protocols (assignor names and their metadata), in its order.
    pub protocols: Vec<(String, bytes::Bytes)>,
    /// When it must have joined again, once a heartbeat told it to (not
    /// stored: a coordinator that loads the group asks again).
    pub(super) rejoin_by: Option<Instant>,
}

impl Classic {
    /// The protocol name its join and sync are answered with: its first.
    pub fn protocol_name(&self) -> Option<&str> {
        self.protocols.first().map(|(n, _)| n.as_str())
    }
}

/// One consumer group.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id → member id.
    pub(super) statics: HashMap<String, String>,
    /// Member id → its target assignment at `assignment_epoch`.
    pub target: BTreeMap<String, Parts>,
    /// The subscribed topics and their partition counts the target was
    /// computed for.
    pub metadata: BTreeMap<String, i32>,
    /// (topic, partition) → the member that owns or is revoking it.
    pub(super) owners: HashMap<(String, i32), String>,
    pub(super) seq: u64,
}

/// The topics a group may be assigned: name → partition count (internal
/// topics are left out by the caller, so no regex matches them).
pub type Topology = BTreeMap<String, i32>;

pub(super) fn count(p: &Parts) -> usize {
    p.values().map(BTreeSet::len).sum()
}

pub(super) fn contains(p: &Parts, topic: &str, partition: i32) -> bool {
    p.get(topic).is_some_and(|s| s.contains(&partition))
}

pub(super) fn intersects(a: &Parts, b: &Parts) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|q| !ps.is_disjoint(q)))
}

pub(super) fn is_subset(a: &Parts, b: &Parts) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|q| ps.is_subset(q)))
}

/// A subscription regex as Kafka matches it: the whole topic name.
pub(super) fn compile(regex: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{regex})$"))
        .size_limit(1 << 20)
        .build()
}

impl Group {
    pub(super) fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            statics: HashMap::new(),
            target: BTreeMap::new(),
            metadata: BTreeMap::new(),
            owners: HashMap::new(),
            seq: 0,
        }
    }

    /// Kafka's name of the group's state.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// What a heartbeat of member `id` may change of the durable state:
    /// the group's epochs and size, and that member.
    pub(super) fn fingerprint(&self, id: &str) -> (i32, i32, usize, Option<MemberKey>) {
        (
            self.epoch,
            self.assignment_epoch,
            self.members.len(),
            self.members.get(id).map(Member::key),
        )
    }

    pub(super) fn rebuild_owners(&mut self) {
        self.owners.clear();
        for m in self.members.values() {
            for parts in [&m.assigned, &m.revoking] {
                for (t, ps) in parts {
                    for p in ps {
                        self.owners.insert((t.clone(), *p), m.id.clone());
                    }
                }
            }
        }
    }

    /// Replaces a member's owned partitions, keeping `owners` in step.
    pub(super) fn set_owned(&mut self, id: &str, assigned: Parts, revoking: Parts) {
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        for parts in [&m.assigned, &m.revoking] {
            for (t, ps) in parts {
                for p in ps {
                    let key = (t.clone(), *p);
                    if self.owners.get(&key).is_some_and(|o| o == id) {
                        self.owners.remove(&key);
                    }
                }
            }
        }
        for parts in [&assigned, &revoking] {
            for (t, ps) in parts {
                for p in ps {
                    self.owners.insert((t.clone(), *p), id.to_string());
                }
            }
        }
        m.assigned = assigned;
        m.revoking = revoking;
    }

    /// Whether member `id` waits for partitions of its target that
    /// another member still holds.
    pub(super) fn waiting_on_unreleased(&self, id: &str) -> bool {
        let (Some(m), Some(target)) = (self.members.get(id), self.target.get(id)) else {
            return false;
        };
        target.iter().any(|(t, ps)| {
            ps.iter().any(|p| {
                !contains(&m.assigned, t, *p)
                    && self.owners.get(&(t.clone(), *p)).is_some_and(|o| o != id)
            })
        })
    }

    /// A static member's instance comes back under member id `new`: it
    /// takes the epoch, partitions and target of `old`, which is gone.
    pub(super) fn replace_static(&mut self, old: &str, new: &str, now: Instant) {
        let Some(mut m) = self.members.remove(old) else {
            return;
        };
        let (assigned, revoking) = (
            std::mem::take(&mut m.assigned),
            std::mem::take(&mut m.revoking),
        );
        m.id = new.to_string();
        m.epoch = m.previous_epoch.max(0).max(m.epoch);
        m.last_heartbeat = now;
        if let Some(inst) = &m.instance_id {
            self.statics.insert(inst.clone(), new.to_string());
        }
        self.members.insert(new.to_string(), m);
        if let Some(t) = self.target.remove(old) {
            self.target.insert(new.to_string(), t);
        }
        self.owners.retain(|_, o| *o != old);
        self.set_owned(new, assigned, revoking);
        tracing::info!(group = %self.id, old = %old, member = %new, "static member rejoined");
    }

    /// Whether the group has members and every one speaks the classic
    /// protocol: it goes back to being a classic group then.
    pub fn all_classic(&self) -> bool {
        !self.members.is_empty() && self.members.values().all(|m| m.classic.is_some())
    }

    pub(super) fn remove_member(&mut self, id: &str) -> Option<Member> {
        self.set_owned(id, Parts::new(), Parts::new());
        let m = self.members.remove(id)?;
        if let Some(inst) = &m.instance_id {
            if self.statics.get(inst).is_some_and(|cur| cur == id) {
                self.statics.remove(inst);
            }
        }
        self.target.remove(id);
        self.epoch += 1;
        Some(m)
    }

    /// The topics each member subscribes to that exist, and the group's
    /// subscribed topics with their partition counts.
    pub(super) fn subscriptions<'t>(
        &self,
        topology: &'t Topology,
    ) -> (BTreeMap<String, BTreeSet<&'t str>>, BTreeMap<String, i32>) {
        let mut regexes: HashMap<&str, BTreeSet<&'t str>> = HashMap::new();
        let mut per_member = BTreeMap::new();
        let mut all = BTreeMap::new();
        for m in self.members.values() {
            let mut topics: BTreeSet<&'t str> = m
                .topics
                .iter()
                .filter_map(|t| topology.get_key_value(t.as_str()).map(|(k, _)| k.as_str()))
                .collect();
            if let (Some(re), Some(matcher)) = (m.regex.as_deref(), m.matcher.as_ref()) {
                let matched = regexes.entry(re).or_insert_with(|| {
                    topology
                        .keys()
                        .filter(|t| matcher.is_match(t))
                        .map(String::as_str)
                        .collect()
                });
                topics.extend(matched.iter().copied());
            }
            for t in &topics {
                all.insert((*t).to_string(), topology.get(*t).copied().unwrap_or(0));
            }
            per_member.insert(m.id.clone(), topics);
        }
        (per_member, all)
    }

    /// Moves the group to its next epoch when `changed` (a member joined,
    /// left or changed its subscription) or when its subscribed topics
    /// changed in `topology` (a new topic matching a subscription, new
    /// partitions), and computes the target for a new epoch.
    pub(super) fn advance(&mut self, changed: bool, topology: &Topology) {
        if changed || self.subscriptions(topology).1 != self.metadata {
            self.epoch += 1;
        }
        if self.epoch > self.assignment_epoch {
            self.compute_target(topology, assign::ASSIGNORS[0]);
        }
    }

    /// Computes the target assignment for the group's epoch.
    pub(super) fn compute_target(&mut self, topology: &Topology, default_assignor: &str) {
        let (subs, metadata) = self.subscriptions(topology);
        let assignor = self
            .members
            .values()
            .filter_map(|m| m.assignor.as_deref())
            .next()
            .unwrap_or(default_assignor)
            .to_string();
        let specs: BTreeMap<&str, assign::MemberSpec<'_>> = self
            .members
            .keys()
            .map(|id| {
                (
                    id.as_str(),
                    assign::MemberSpec {
                        topics: subs.get(id).cloned().unwrap_or_default(),
                        previous: self.target.get(id),
                    },
                )
            })
            .collect();
        let target = assign::assign(&assignor, &specs, &metadata);
        self.target = target;
        self.metadata = metadata;
        self.assignment_epoch = self.epoch;
        tracing::debug!(group = %self.id, epoch = self.epoch, assignor = %assignor, "target assignment computed");
    }

    /// Moves member `id` one step towards its target; `owned` is what its
    /// heartbeat says it owns (if it says). Returns whether its epoch or
    /// partitions changed.
    pub(super) fn reconcile(&mut self, id: &str, owned: Option<&Parts>, now: Instant) -> bool {
        let Some(m) = self.members.get(id) else {
            return false;
        };
        if m.epoch < 0 {
            return false;
        }
        match m.state {
            MemberState::Stable if m.epoch == self.assignment_epoch => return false,
            // It moves on once it shows it gave the partitions up.
            MemberState::UnrevokedPartitions
                if owned.is_none_or(|o| intersects(o, &m.revoking)) =>
            {
                return false;
            }
            _ => {}
        }
        let empty = Parts::new();
        let target = self.target.get(id).unwrap_or(&empty);
        let mut kept = Parts::new();
        let mut revoke = Parts::new();
        for (t, ps) in &m.assigned {
            for p in ps {
                if contains(target, t, *p) {
                    kept.entry(t.clone()).or_default().insert(*p);
                } else {
                    revoke.entry(t.clone()).or_default().insert(*p);
                }
            }
        }
        let (before_epoch, before_assigned, before_revoking) =
            (m.epoch, m.assigned.clone(), m.revoking.clone());
        let rebalance = Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64);
        let (epoch, state, assigned, revoking) = if count(&revoke) > 0 {
            (m.epoch, MemberState::UnrevokedPartitions, kept, revoke)
        } else {
            let mut assigned = kept;
            let mut unreleased = false;
            for (t, ps) in target {
                for p in ps {
                    if contains(&assigned, t, *p) {
                        continue;
                    }
                    match self.owners.get(&(t.clone(), *p)) {
                        Some(o) if o != id => unreleased = true,
                        _ => {
                            assigned.entry(t.clone()).or_default().insert(*p);
                        }
                    }
                }
            }
            let state = if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
            (self.assignment_epoch, state, assigned, Parts::new())
        };
        let changed =
            epoch != before_epoch || assigned != before_assigned || revoking != before_revoking;
        self.set_owned(id, assigned, revoking);
        if let Some(m) = self.members.get_mut(id) {
            if epoch != m.epoch {
                m.previous_epoch = m.epoch;
                m.epoch = epoch;
            }
            m.revoke_deadline = (state == MemberState::UnrevokedPartitions)
                .then(|| m.revoke_deadline.unwrap_or(now + rebalance));
            m.state = state;
        }
        changed
    }
}

/// A member's durable fields, to tell whether a heartbeat changed them.
pub(super) type MemberKey = (
    (i32, i32, MemberState, i32),
    (Option<String>, Option<String>, String, String),
    (Vec<String>, Option<String>, Option<String>),
    (Parts, Parts),
    Option<(i32, Vec<(String, bytes::Bytes)>)>,
);

impl Member {
    /// A member that just joined: epoch 0, nothing owned, nothing
    /// subscribed yet (the caller sets what its request says).
    pub(super) fn joining(
        id: &str,
        instance_id: Option<String>,
        rebalance_timeout_ms: i32,
        now: Instant,
    ) -> Self {
        Self {
            id: id.to_string(),
            instance_id,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            epoch: 0,
            previous_epoch: -1,
            state: MemberState::Stable,
            rebalance_timeout_ms,
            topics: Vec::new(),
            regex: None,
            matcher: None,
            assignor: None,
            assigned: Parts::new(),
            revoking: Parts::new(),
            last_heartbeat: now,
            revoke_deadline: None,
            classic: None,
        }
    }

    pub(super) fn key(&self) -> MemberKey {
        (
            (
                self.epoch,
                self.previous_epoch,
                self.state,
                self.rebalance_timeout_ms,
            ),
            (
                self.instance_id.clone(),
                self.rack_id.clone(),
                self.client_id.clone(),
                self.client_host.clone(),
            ),
            (
                self.topics.clone(),
                self.regex.clone(),
                self.assignor.clone(),
            ),
            (self.assigned.clone(), self.revoking.clone()),
            self.classic
                .as_ref()
                .map(|c| (c.session_timeout_ms, c.protocols.clone())),
        )
    }

    /// How long ago its last heartbeat came.
    pub fn since_heartbeat(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heartbeat)
    }
}
