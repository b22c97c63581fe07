//! What every family's authorization is made of: the checks of a request's
//! principal against the ACLs, and the splitting of a request into what it
//! may touch and what it may not. Each API's own rule is in its row
//! ([`super::route::Api::authorize`]); docs/security.md has the table.

use super::route::Cx;
use crate::broker::Broker;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Session;

/// The name of the cluster resource.
pub const CLUSTER: &str = "kafka-cluster";

impl Cx<'_> {
    /// Whether the principal may do `op` on the resource.
    pub fn can(&self, op: Operation, rtype: ResourceType, name: &str) -> bool {
        self.broker.authorizer.authorize(
            &self.session.principal,
            self.session.peer.ip(),
            op,
            rtype,
            name,
        )
    }

    pub fn topic(&self, op: Operation, name: &str) -> bool {
        self.can(op, ResourceType::Topic, name)
    }

    pub fn group(&self, op: Operation, name: &str) -> bool {
        self.can(op, ResourceType::Group, name)
    }

    pub fn cluster(&self, op: Operation) -> bool {
        self.can(op, ResourceType::Cluster, CLUSTER)
    }

    /// Whether a missing topic may be created by this principal.
    pub fn may_create(&self, name: &str) -> bool {
        self.cluster(Operation::Create) || self.topic(Operation::Create, name)
    }
}

/// Splits `items` into those `keep` accepts and those it refuses.
pub fn split<T>(items: Vec<T>, mut keep: impl FnMut(&T) -> bool) -> (Vec<T>, Vec<T>) {
    items.into_iter().partition(|t| keep(t))
}

/// Takes the topics `keep` refuses out of `topics`, and returns them as
/// (name, partitions): the shape most partitioned requests are answered in.
pub fn take_topics<T, N: Clone>(
    topics: &mut Vec<T>,
    keep: impl FnMut(&T) -> bool,
    name: impl Fn(&T) -> &N,
    partitions: impl Fn(&T) -> Vec<i32>,
) -> Vec<(N, Vec<i32>)> {
    let (kept, refused) = split(std::mem::take(topics), keep);
    *topics = kept;
    refused
        .iter()
        .map(|t| (name(t).clone(), partitions(t)))
        .collect()
}

/// Whether the principal may use the cluster-level security APIs
/// (`Describe` to read ACLs, SCRAM users and quotas' configs, `Alter` or
/// `AlterConfigs` to change them).
pub fn cluster_allowed(broker: &Broker, session: &Session, op: Operation) -> bool {
    if !broker.authorizer.enabled() {
        // Without ACLs, on a broker with SASL users, only super users may
        // read or change users and quotas: anyone else could take over an
        // account. A broker without SASL listeners has no identities to
        // protect and answers everyone, as Kafka does.
        let sasl = broker.config.listeners.iter().any(|l| l.protocol.is_sasl());
        return !sasl || broker.config.args.super_users.contains(&session.principal);
    }
    broker.authorizer.authorize(
        &session.principal,
        session.peer.ip(),
        op,
        ResourceType::Cluster,
        CLUSTER,
    )
}

/// The message of a request refused for want of a cluster permission.
pub fn cluster_denied_msg() -> Option<kafka_protocol::protocol::StrBytes> {
    Some(super::route::sb("cluster authorization failed"))
}
