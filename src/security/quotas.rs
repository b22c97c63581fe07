//! Client quotas: produce and fetch byte rates and request-time share per
//! user, per client id, and per user and client id, as Kafka defines them.
//!
//! A request is charged to the most specific entity that sets the quota, in
//! Kafka's order: user+client, user+default client, user, default
//! user+client, default user+default client, default user, client, default
//! client. All connections charged to one entity share its rate.
//!
//! The rate is enforced with a virtual clock per entity (GCRA): each charge
//! moves the entity's clock forward by `amount / rate`, starting no earlier
//! than now. When the clock runs more than one second (the burst) ahead of
//! now, the excess is the throttle time: the response carries it as
//! `throttle_time_ms` and the connection reads nothing more until it has
//! passed. Over any stretch longer than the burst the charged amount stays
//! within the rate.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

/// The file holding the quotas.
pub const QUOTAS_FILE: &str = "quotas.json";

/// Producer bytes per second.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
/// Fetched bytes per second.
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
/// Percentage of one handler thread's time, per second.
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
/// Every key this broker enforces.
pub const KEYS: [&str; 3] = [PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];

/// Longest throttle applied at once (Kafka caps it at the quota window).
const MAX_THROTTLE: Duration = Duration::from_secs(10);
/// Meters kept before idle ones are dropped.
const MAX_METERS: usize = 100_000;
/// Burst allowed before throttling starts.
const BURST: Duration = Duration::from_secs(1);

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    Produce,
    Fetch,
    Request,
}

impl QuotaKind {
    fn key(self) -> &'static str {
        match self {
            Self::Produce => PRODUCER_BYTE_RATE,
            Self::Fetch => CONSUMER_BYTE_RATE,
            Self::Request => REQUEST_PERCENTAGE,
        }
    }
}

/// One quota entity: user and/or client id, each a name or the default
/// (`Some(None)`); `None` means the component is absent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entity {
    pub user: Option<Option<String>>,
    pub client_id: Option<Option<String>>,
}

impl Entity {
    /// Kafka's path form, e.g. `/users/alice/clients/<default>`.
    pub fn describe(&self) -> String {
        let name = |n: &Option<String>| n.clone().unwrap_or_else(|| "<default>".into());
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(&format!("/users/{}", name(u)));
        }
        if let Some(c) = &self.client_id {
            s.push_str(&format!("/clients/{}", name(c)));
        }
        s
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct QuotaFile {
    version: u32,
    quotas: Vec<(Entity, BTreeMap<String, f64>)>,
}

/// Errors of the quota store.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("cannot read {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("cannot write the quotas: {0}")]
    Store(#[from] std::io::Error),
}

/// An entity and its keys to set (`Some`) or remove (`None`).
pub type QuotaChange = (Entity, Vec<(String, Option<f64>)>);

/// An entity's virtual clock for one kind.
#[derive(Debug)]
struct Clock {
    /// When the charged amount so far would have been spent at the rate.
    tat: Instant,
}

/// The quotas and their meters.
#[derive(Debug)]
pub struct Quotas {
    /// `None` in a cluster: the quorum holds the quotas.
    path: Option<PathBuf>,
    entries: RwLock<BTreeMap<Entity, BTreeMap<String, f64>>>,
    /// Whether any quota is set: read on every request.
    any: AtomicBool,
    /// Serializes changes (the file is written outside `entries`' lock).
    writer: Mutex<()>,
    clocks: Mutex<HashMap<(Entity, QuotaKind), Clock>>,
}

impl Quotas {
    /// Opens the store in `data_dir`.
    ///
    /// # Errors
    /// An unreadable or corrupt `quotas.json`.
    pub fn open(data_dir: &Path) -> Result<Self, QuotaError> {
        let path = data_dir.join(QUOTAS_FILE);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: QuotaFile =
                    serde_json::from_slice(&bytes).map_err(|e| QuotaError::Load {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                f.quotas.into_iter().collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(QuotaError::Load {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(Self {
            path: Some(path),
            any: AtomicBool::new(!entries.is_empty()),
            writer: Mutex::new(()),
            entries: RwLock::new(entries),
            clocks: Mutex::new(HashMap::new()),
        })
    }

    /// The quotas of a broker in a cluster: they come from the quorum
    /// ([`Quotas::replace`]); a `quotas.json` left in `data_dir` (from a
    /// single node) is not read, and a warning says so.
    pub fn for_cluster(data_dir: &Path) -> Self {
        if !matches!(Self::open(data_dir).map(|q| q.any()), Ok(false)) {
            tracing::warn!(
                path = %data_dir.join(QUOTAS_FILE).display(),
                "this data dir's quota file is not read in a cluster, whose quotas live in the \
                 metadata quorum: set them again with AlterClientQuotas"
            );
        }
        Self {
            path: None,
            any: AtomicBool::new(false),
            writer: Mutex::new(()),
            entries: RwLock::new(BTreeMap::new()),
            clocks: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces every quota with a cluster's; meters start afresh when
    /// anything changed.
    pub fn replace(&self, quotas: Vec<(Entity, BTreeMap<String, f64>)>) {
        let next: BTreeMap<_, _> = quotas.into_iter().collect();
        let mut entries = self.entries.write();
        if *entries != next {
            self.any.store(!next.is_empty(), Ordering::Relaxed);
            *entries = next;
            self.clocks.lock().clear();
        }
    }

    /// Whether any quota is set (the request path skips metering otherwise).
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// The entity a request of `user` / `client_id` is charged to for
    /// `kind`, and its rate (per second: bytes, or microseconds of handler
    /// time).
    fn resolve(&self, user: &str, client_id: &str, kind: QuotaKind) -> Option<(Entity, f64)> {
        let entries = self.entries.read();
        let u = || Some(Some(user.to_string()));
        let c = || Some(Some(client_id.to_string()));
        let order = [
            (u(), c()),
            (u(), Some(None)),
            (u(), None),
            (Some(None), c()),
            (Some(None), Some(None)),
            (Some(None), None),
            (None, c()),
            (None, Some(None)),
        ];
        order.into_iter().find_map(|(u, c)| {
            let e = Entity {
                user: u,
                client_id: c,
            };
            let v = *entries.get(&e)?.get(kind.key())?;
            let rate = match kind {
                QuotaKind::Request => v * 10_000.0,
                _ => v,
            };
            // A default quota applies to each user or client id on its own,
            // as in Kafka: the meter is named by the real names.
            let metered = Entity {
                user: e.user.as_ref().map(|_| Some(user.to_string())),
                client_id: e.client_id.as_ref().map(|_| Some(client_id.to_string())),
            };
            Some((metered, rate))
        })
    }

    /// Charges one request that has taken effect: its handler time
    /// (`busy_micros`; zero for requests that wait by design, such as long
    /// polls and joins held for a rebalance) to the request-time quota, and
    /// the bytes it is metered by to their byte quota. Returns how long the
    /// client must wait (Kafka's throttle time: the larger of the two).
    pub fn charge_request(
        &self,
        user: &str,
        client_id: &str,
        busy_micros: u64,
        metered: Option<(QuotaKind, u64)>,
    ) -> Duration {
        let t = self.charge(user, client_id, QuotaKind::Request, busy_micros);
        match metered {
            Some((kind, bytes)) => t.max(self.charge(user, client_id, kind, bytes)),
            None => t,
        }
    }

    /// Charges `amount` (bytes, or microseconds for [`QuotaKind::Request`])
    /// and returns how long the client must wait; zero when within quota.
    pub fn charge(&self, user: &str, client_id: &str, kind: QuotaKind, amount: u64) -> Duration {
        if amount == 0 {
            return Duration::ZERO;
        }
        let Some((entity, rate)) = self.resolve(user, client_id, kind) else {
            return Duration::ZERO;
        };
        if rate <= 0.0 || !rate.is_finite() {
            return MAX_THROTTLE;
        }
        let now = Instant::now();
        let cost = Duration::from_secs_f64((amount as f64 / rate).min(3600.0));
        let mut clocks = self.clocks.lock();
        if clocks.len() >= MAX_METERS && !clocks.contains_key(&(entity.clone(), kind)) {
            // Client ids are the client's choice: forget meters whose debt
            // is paid (they would start afresh anyway).
            clocks.retain(|_, c| c.tat > now);
        }
        let clock = clocks.entry((entity, kind)).or_insert(Clock { tat: now });
        clock.tat = clock.tat.max(now) + cost;
        clock
            .tat
            .saturating_duration_since(now)
            .saturating_sub(BURST)
            .min(MAX_THROTTLE)
    }

    /// Applies AlterClientQuotas entries: each key set (`Some`) or removed
    /// (`None`).
    ///
    /// # Errors
    /// The store could not be written; nothing changed.
    pub fn alter(&self, changes: &[QuotaChange]) -> Result<(), QuotaError> {
        let Some(path) = &self.path else {
            return Err(QuotaError::Store(std::io::Error::other(
                "a cluster's quotas change through its quorum",
            )));
        };
        let _writer = self.writer.lock();
        let mut next = self.entries.read().clone();
        alter(&mut next, changes);
        let file = QuotaFile {
            version: 1,
            quotas: next.iter().map(|(e, m)| (e.clone(), m.clone())).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        super::write_atomically(path, &bytes, 0o600)?;
        self.any.store(!next.is_empty(), Ordering::Relaxed);
        *self.entries.write() = next;
        // Meters of removed or changed quotas start afresh.
        self.clocks.lock().clear();
        Ok(())
    }

    /// Every entity and its quotas.
    pub fn all(&self) -> Vec<(Entity, BTreeMap<String, f64>)> {
        self.entries
            .read()
            .iter()
            .map(|(e, m)| (e.clone(), m.clone()))
            .collect()
    }
}

/// Applies AlterClientQuotas entries to `entries`: each key set (`Some`)
/// or removed (`None`); an entity left without keys is dropped.
pub fn alter(entries: &mut BTreeMap<Entity, BTreeMap<String, f64>>, changes: &[QuotaChange]) {
    for (entity, ops) in changes {
        let slot = entries.entry(entity.clone()).or_default();
        for (key, value) in ops {
            match value {
                Some(v) => {
                    slot.insert(key.clone(), *v);
                }
                None => {
                    slot.remove(key);
                }
            }
        }
        if slot.is_empty() {
            entries.remove(entity);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(u: &str) -> Entity {
        Entity {
            user: Some(Some(u.into())),
            client_id: None,
        }
    }

    #[test]
    fn precedence_follows_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quotas::open(dir.path()).unwrap();
        q.alter(&[
            (
                user("alice"),
                vec![(PRODUCER_BYTE_RATE.into(), Some(100.0))],
            ),
            (
                Entity {
                    user: Some(Some("alice".into())),
                    client_id: Some(Some("fast".into())),
                },
                vec![(PRODUCER_BYTE_RATE.into(), Some(1000.0))],
            ),
            (
                Entity {
                    user: None,
                    client_id: Some(None),
                },
                vec![(PRODUCER_BYTE_RATE.into(), Some(10.0))],
            ),
        ])
        .unwrap();
        let rate = |u: &str, c: &str| q.resolve(u, c, QuotaKind::Produce).map(|(_, r)| r);
        assert_eq!(rate("alice", "fast"), Some(1000.0));
        assert_eq!(rate("alice", "other"), Some(100.0));
        assert_eq!(rate("bob", "x"), Some(10.0));
        assert_eq!(q.resolve("bob", "x", QuotaKind::Fetch), None);
        // Persisted.
        assert_eq!(Quotas::open(dir.path()).unwrap().all().len(), 3);
        // Removing the last key removes the entity.
        q.alter(&[(user("alice"), vec![(PRODUCER_BYTE_RATE.into(), None)])])
            .unwrap();
        assert_eq!(rate("alice", "other"), Some(10.0));
    }

    #[test]
    fn charges_past_the_burst_are_throttled_in_proportion() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quotas::open(dir.path()).unwrap();
        q.alter(&[(user("u"), vec![(PRODUCER_BYTE_RATE.into(), Some(1000.0))])])
            .unwrap();
        // One second of burst is free.
        assert_eq!(q.charge("u", "c", QuotaKind::Produce, 1000), Duration::ZERO);
        // Two more seconds' worth must wait about two seconds.
        let t = q.charge("u", "c", QuotaKind::Produce, 2000);
        assert!(
            t > Duration::from_millis(1900) && t <= Duration::from_millis(2000),
            "{t:?}"
        );
        // Other users are not metered.
        assert_eq!(
            q.charge("v", "c", QuotaKind::Produce, 1 << 30),
            Duration::ZERO
        );
        // A default quota meters each user on its own.
        q.alter(&[(
            Entity {
                user: Some(None),
                client_id: None,
            },
            vec![(PRODUCER_BYTE_RATE.into(), Some(1000.0))],
        )])
        .unwrap();
        assert!(q.charge("v", "c", QuotaKind::Produce, 5000) > Duration::ZERO);
        assert_eq!(q.charge("w", "c", QuotaKind::Produce, 1000), Duration::ZERO);
    }
}
