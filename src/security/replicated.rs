//! Users, ACLs and quotas as a cluster keeps them: one value in the
//! metadata quorum's state, changed by [`Change`]s that every broker
//! applies in log order, and copied into each broker's stores
//! ([`super::users::UserStore`], [`super::acl::Authorizer`],
//! [`super::quotas::Quotas`]) that answer requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::acl::{self, AclBinding, AclFilter};
use super::quotas::{self, Entity, QuotaChange};
use super::scram::{Mechanism, ScramCredential};
use super::users::{self, Users};

/// A change made with CreateAcls, DeleteAcls, AlterUserScramCredentials or
/// AlterClientQuotas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Change {
    CreateAcls(Vec<AclBinding>),
    /// Removes what each filter matches.
    DeleteAcls(Vec<AclFilter>),
    SetCredential {
        user: String,
        mechanism: Mechanism,
        credential: ScramCredential,
    },
    DeleteCredential {
        user: String,
        mechanism: Mechanism,
    },
    AlterQuotas(Vec<QuotaChange>),
}

/// A cluster's users, ACLs and quotas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shared {
    /// Rises with every change that changed something: a broker copies
    /// the rest into its stores when it differs from the copy's.
    pub version: u64,
    #[serde(default)]
    pub acls: Vec<AclBinding>,
    #[serde(default)]
    pub users: Users,
    /// As a list: an entity is no JSON object key.
    #[serde(default)]
    pub quotas: Vec<(Entity, BTreeMap<String, f64>)>,
}

/// What applying a [`Change`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// Nothing was there to change (a credential to delete).
    NotFound,
    /// The bindings each filter of a [`Change::DeleteAcls`] removed.
    Removed(Vec<Vec<AclBinding>>),
}

impl Shared {
    /// Applies one change; the same changes in the same order give the
    /// same value on every broker. The version rises when something
    /// changed.
    pub fn apply(&mut self, change: &Change) -> Applied {
        let (applied, changed) = match change {
            Change::CreateAcls(new) => {
                let before = self.acls.len();
                acl::add(&mut self.acls, new);
                (Applied::Changed, self.acls.len() != before)
            }
            Change::DeleteAcls(filters) => {
                let removed = acl::remove(&mut self.acls, filters);
                let changed = removed.iter().any(|r| !r.is_empty());
                (Applied::Removed(removed), changed)
            }
            Change::SetCredential {
                user,
                mechanism,
                credential,
            } => {
                users::set_credential(&mut self.users, user, *mechanism, credential.clone());
                (Applied::Changed, true)
            }
            Change::DeleteCredential { user, mechanism } => {
                if users::delete_credential(&mut self.users, user, *mechanism) {
                    (Applied::Changed, true)
                } else {
                    (Applied::NotFound, false)
                }
            }
            Change::AlterQuotas(changes) => {
                let mut entries: BTreeMap<Entity, BTreeMap<String, f64>> =
                    std::mem::take(&mut self.quotas).into_iter().collect();
                quotas::alter(&mut entries, changes);
                self.quotas = entries.into_iter().collect();
                (Applied::Changed, true)
            }
        };
        if changed {
            self.version += 1;
        }
        applied
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::security::acl::{Operation, PatternFilter, PatternType, Permission, ResourceType};

    fn allow(principal: &str, topic: &str) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: topic.into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        }
    }

    fn of(principal: &str) -> AclFilter {
        AclFilter {
            resource_type: None,
            resource_name: None,
            pattern: PatternFilter::Any,
            principal: Some(principal.into()),
            host: None,
            operation: None,
            permission: None,
        }
    }

    #[test]
    fn changes_apply_alike_after_a_round_trip_through_json() {
        let cred = ScramCredential::from_password(Mechanism::ScramSha256, "pw", 4096);
        let changes = vec![
            Change::CreateAcls(vec![allow("User:alice", "orders"), allow("User:bob", "x")]),
            Change::CreateAcls(vec![allow("User:alice", "orders")]),
            Change::SetCredential {
                user: "alice".into(),
                mechanism: Mechanism::ScramSha256,
                credential: cred.clone(),
            },
            Change::AlterQuotas(vec![(
                Entity {
                    user: Some(Some("alice".into())),
                    client_id: None,
                },
                vec![("producer_byte_rate".into(), Some(1024.0))],
            )]),
            Change::DeleteAcls(vec![of("User:bob"), of("User:nobody")]),
            Change::DeleteCredential {
                user: "carol".into(),
                mechanism: Mechanism::ScramSha256,
            },
        ];
        let mut here = Shared::default();
        let mut there = Shared::default();
        let mut answers = Vec::new();
        for c in &changes {
            answers.push(here.apply(c));
            let sent: Change = serde_json::from_slice(&serde_json::to_vec(c).unwrap()).unwrap();
            there.apply(&sent);
        }
        assert_eq!(here, there);
        let back: Shared = serde_json::from_slice(&serde_json::to_vec(&here).unwrap()).unwrap();
        assert_eq!(back, here);
        // A binding made twice is kept once and changes nothing the
        // second time; a delete reports what each filter removed; a
        // missing credential is not found.
        assert_eq!(here.acls, vec![allow("User:alice", "orders")]);
        assert_eq!(
            answers[4],
            Applied::Removed(vec![vec![allow("User:bob", "x")], vec![]])
        );
        assert_eq!(answers[5], Applied::NotFound);
        assert_eq!(
            here.version, 4,
            "the repeated create and the miss change nothing"
        );
        assert_eq!(here.users["alice"][&Mechanism::ScramSha256], cred);
        assert_eq!(here.quotas.len(), 1);
        // Removing the last key drops the entity.
        here.apply(&Change::AlterQuotas(vec![(
            here.quotas[0].0.clone(),
            vec![("producer_byte_rate".into(), None)],
        )]));
        assert!(here.quotas.is_empty());
    }
}
