//! ElectLeaders: partitions handed to their preferred replica, or (an
//! unclean election) an offline partition to any live replica. Needs Alter
//! on the cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};

use super::authz;
use super::errors::*;
use super::quorum::propose_and_see;
use super::route::{kind, open, row, sb, tn, Api, Cx, Handled, Row};
use crate::broker::Broker;
use crate::cluster::{self, Election, NoElection};
use crate::security::acl::Operation;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[row::<ElectLeaders>()];

/// ElectLeaders.
pub struct ElectLeaders;

impl Api for ElectLeaders {
    kind!(ElectLeaders, ElectLeadersRequest, ElectLeadersResponse);
    const VERSIONS: (i16, i16) = (0, 2);
    open!();

    async fn handle(cx: Cx<'_>, req: ElectLeadersRequest) -> Handled<ElectLeadersResponse> {
        Handled::Now(elect_leaders(cx, req).await)
    }

    fn errors(r: &ElectLeadersResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
        for t in &r.replica_election_results {
            out.extend(t.partition_result.iter().map(|p| p.error_code));
        }
    }

    fn throttle(r: &mut ElectLeadersResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// One partition's outcome: an error code and why.
type Outcome = (i16, Option<String>);

async fn elect_leaders(cx: Cx<'_>, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let broker = cx.broker;
    let every = req.topic_partitions.is_none();
    let targets: Vec<(String, i32)> = match &req.topic_partitions {
        Some(tps) => tps
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p)))
            .collect(),
        None => all_partitions(broker),
    };
    // Version 0 has no election type: it asks for preferred leaders.
    let kind = match req.election_type {
        0 => Some(Election::Preferred),
        1 => Some(Election::Unclean),
        _ => None,
    };
    let refused = if !authz::cluster_allowed(broker, cx.session, Operation::Alter) {
        Some((CLUSTER_AUTHORIZATION_FAILED, None))
    } else if kind.is_none() {
        Some((
            INVALID_REQUEST,
            Some(format!("unknown election type {}", req.election_type)),
        ))
    } else {
        None
    };
    let mut results: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition) in targets {
        let (code, message) = match (&refused, kind) {
            (Some(r), _) => r.clone(),
            (None, Some(kind)) => elect_one(broker, &topic, partition, kind).await,
            (None, None) => (INVALID_REQUEST, None),
        };
        // Asked for every partition, the answer names those that changed
        // or failed, as Kafka's does.
        if every && code == ELECTION_NOT_NEEDED {
            continue;
        }
        results.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code)
                .with_error_message(message.map(sb)),
        );
    }
    let mut resp = ElectLeadersResponse::default().with_replica_election_results(
        results
            .into_iter()
            .map(|(topic, parts)| {
                ReplicaElectionResult::default()
                    .with_topic(tn(topic))
                    .with_partition_result(parts)
            })
            .collect(),
    );
    if cx.version >= 1 {
        resp.error_code = refused.map_or(NONE, |(code, _)| code);
    }
    resp
}

/// Every partition this broker knows: the cluster's, or its own.
fn all_partitions(broker: &Broker) -> Vec<(String, i32)> {
    match broker.cluster.get() {
        Some(c) => c.with_metadata(|m| {
            m.topics
                .iter()
                .flat_map(|(name, t)| (0..t.partitions.len() as i32).map(|p| (name.clone(), p)))
                .collect()
        }),
        None => broker
            .topics
            .list()
            .iter()
            .flat_map(|t| (0..t.partition_count()).map(|p| (t.name.clone(), p)))
            .collect(),
    }
}

async fn elect_one(broker: &Arc<Broker>, topic: &str, partition: i32, kind: Election) -> Outcome {
    let Some(c) = broker.cluster.get() else {
        // A single broker leads every partition it has.
        let known = broker
            .topics
            .get(topic)
            .is_some_and(|t| (0..t.partition_count()).contains(&partition));
        return if known {
            (ELECTION_NOT_NEEDED, None)
        } else {
            (UNKNOWN_TOPIC_OR_PARTITION, None)
        };
    };
    // A change made from a view another change overtook is refused; the
    // decision is made again from the newer one.
    for _ in 0..3 {
        let decided = c.with_metadata(|m| cluster::elect(m, topic, partition, kind));
        let (leader, cmd) = match decided {
            Ok(decided) => decided,
            Err(no) => return no_election(no),
        };
        let seen = |m: &cluster::Metadata| {
            m.partition(topic, partition).and_then(|p| p.leader) == Some(leader)
        };
        match propose_and_see(c, cmd, seen).await {
            Ok(()) => {
                tracing::info!(topic, partition, leader, ?kind, "leader elected on request");
                return (NONE, None);
            }
            Err((NOT_CONTROLLER, _)) => continue,
            Err((code, msg)) => return (code, Some(msg)),
        }
    }
    (NOT_CONTROLLER, Some("the partition kept changing".into()))
}

fn no_election(no: NoElection) -> Outcome {
    match no {
        NoElection::UnknownPartition => (UNKNOWN_TOPIC_OR_PARTITION, None),
        NoElection::NotNeeded => (
            ELECTION_NOT_NEEDED,
            Some("the partition already has that leader".into()),
        ),
        NoElection::PreferredNotAvailable => (
            PREFERRED_LEADER_NOT_AVAILABLE,
            Some("the preferred replica is not live and in sync".into()),
        ),
        NoElection::NoEligibleLeader => (
            ELIGIBLE_LEADERS_NOT_AVAILABLE,
            Some("no live replica can lead".into()),
        ),
    }
}
