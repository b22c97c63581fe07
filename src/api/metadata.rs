//! Metadata and DescribeCluster. A single broker is the one node, the
//! leader of every partition and the controller; in a cluster the answers
//! come from the quorum's metadata.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};

use super::errors;
use super::route::{kind, open, row, Api, Cx, Handled, Row, Verdict};
use super::route::{sb, tn};
use crate::broker::Broker;
use crate::cluster;
use crate::security::acl::Operation;
use crate::topics::Topic;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[row::<Metadata>(), row::<DescribeCluster>()];

/// Metadata: brokers, controller and topics.
pub struct Metadata;

/// Metadata topics the principal may not describe.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// None can be in the response.
    Nothing,
    /// All topics were asked for: leave them out.
    LeaveOut,
    /// Asked for by id: answer TOPIC_AUTHORIZATION_FAILED without the name.
    Refuse,
}

impl Api for Metadata {
    kind!(Metadata, MetadataRequest, MetadataResponse);
    const VERSIONS: (i16, i16) = (0, 12);
    /// Names refused with their code, and what to do with topics the
    /// principal may not describe.
    type Denied = (Vec<(TopicName, i16)>, Hidden);

    fn authorize(cx: Cx<'_>, r: &mut MetadataRequest) -> Verdict<MetadataResponse, Self::Denied> {
        let auto_create = r.allow_auto_topic_creation && cx.broker.config.args.auto_create_topics;
        let topics = match r.topics.take() {
            Some(list) if !(cx.version == 0 && list.is_empty()) => list,
            all => {
                r.topics = all;
                return Verdict::Proceed((Vec::new(), Hidden::LeaveOut));
            }
        };
        let mut denied = Vec::new();
        let mut keep = Vec::new();
        for t in topics {
            let Some(name) = t.name.clone() else {
                // By id: resolved, then filtered after.
                keep.push(t);
                continue;
            };
            let describable = cx.topic(Operation::Describe, name.as_str());
            let creatable = !(auto_create && cx.broker.topics.get(name.as_str()).is_none())
                || cx.may_create(name.as_str());
            if describable && creatable {
                keep.push(t);
            } else {
                denied.push((name, errors::TOPIC_AUTHORIZATION_FAILED));
            }
        }
        let hidden = if keep.iter().any(|t| t.name.is_none()) {
            Hidden::Refuse
        } else {
            Hidden::Nothing
        };
        r.topics = Some(keep);
        Verdict::Proceed((denied, hidden))
    }

    fn deny(cx: Cx<'_>, r: &mut MetadataResponse, (denied, hidden): Self::Denied) {
        let visible = |t: &MetadataResponseTopic| {
            t.name
                .as_ref()
                .is_some_and(|n| cx.topic(Operation::Describe, n.as_str()))
        };
        match hidden {
            Hidden::Nothing => {}
            Hidden::LeaveOut => r.topics.retain(visible),
            Hidden::Refuse => {
                for t in &mut r.topics {
                    if t.name.is_some() && !visible(t) {
                        *t = MetadataResponseTopic::default()
                            .with_topic_id(t.topic_id)
                            .with_error_code(errors::TOPIC_AUTHORIZATION_FAILED);
                    }
                }
            }
        }
        for (name, code) in denied {
            r.topics.push(
                MetadataResponseTopic::default()
                    .with_name(Some(name))
                    .with_error_code(code),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: MetadataRequest) -> Handled<MetadataResponse> {
        Handled::Now(metadata(cx, req))
    }

    fn errors(r: &MetadataResponse, out: &mut Vec<i16>) {
        out.extend(r.topics.iter().map(|t| t.error_code));
    }

    fn throttle(r: &mut MetadataResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// DescribeCluster: the brokers and the controller.
pub struct DescribeCluster;

impl Api for DescribeCluster {
    kind!(
        DescribeCluster,
        DescribeClusterRequest,
        DescribeClusterResponse
    );
    const VERSIONS: (i16, i16) = (0, 1);
    open!();

    async fn handle(cx: Cx<'_>, req: DescribeClusterRequest) -> Handled<DescribeClusterResponse> {
        Handled::Now(describe_cluster(cx, &req))
    }

    fn errors(r: &DescribeClusterResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }
}

/// Operations allowed on a topic without an authorizer, as Kafka reports
/// them: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS (AclOperation codes 3-8, 10, 11).
pub const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Operations allowed on the cluster: CREATE, ALTER, DESCRIBE,
/// CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
/// Operations allowed on a group: READ, DELETE, DESCRIBE.
pub const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

fn topic_metadata(broker: &Broker, t: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(broker.node_id());
    let partitions = (0..t.partition_count())
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(tn(t.name.clone())))
        .with_topic_id(t.id)
        .with_is_internal(crate::topics::is_internal(&t.name))
        .with_partitions(partitions)
}

/// Metadata: brokers, cluster id, controller and the requested topics
/// (auto-creating unknown ones when allowed).
fn metadata(cx: Cx<'_>, req: MetadataRequest) -> MetadataResponse {
    if let Some(c) = cx.broker.cluster.get() {
        return cluster_metadata(cx, req, c);
    }
    let (broker, version) = (cx.broker, cx.version);
    let node = BrokerId(broker.node_id());
    let (host, port) = cx.advertised();
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(sb(host))
        .with_port(port)];
    let all = match &req.topics {
        None => true,
        Some(list) => version == 0 && list.is_empty(),
    };
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    let mut topics = Vec::new();
    if all {
        topics.extend(
            broker
                .topics
                .list()
                .iter()
                .map(|t| topic_metadata(broker, t)),
        );
    } else {
        for rt in req.topics.unwrap_or_default() {
            let by_name = rt.name.as_ref().map(|n| n.0.to_string());
            match by_name {
                Some(name) => match broker.topic_or_create(&name, allow_create) {
                    Ok(Some(t)) => topics.push(topic_metadata(broker, &t)),
                    Ok(None) => topics.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(tn(name)))
                            .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION),
                    ),
                    Err(e) => topics.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(tn(name)))
                            .with_error_code(errors::topic_error_code(&e)),
                    ),
                },
                None => match broker.topics.get_by_id(rt.topic_id) {
                    Some(t) => topics.push(topic_metadata(broker, &t)),
                    None => topics.push(
                        MetadataResponseTopic::default()
                            .with_name(None)
                            .with_topic_id(rt.topic_id)
                            .with_error_code(errors::UNKNOWN_TOPIC_ID),
                    ),
                },
            }
        }
    }
    if req.include_topic_authorized_operations {
        for t in &mut topics {
            if t.error_code == errors::NONE {
                t.topic_authorized_operations = TOPIC_OPERATIONS;
            }
        }
    }
    let cluster_ops = if req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
    } else {
        i32::MIN
    };
    MetadataResponse::default()
        .with_cluster_authorized_operations(cluster_ops)
        .with_brokers(brokers)
        .with_cluster_id(Some(sb(broker.topics.cluster_id())))
        .with_controller_id(node)
        .with_topics(topics)
}

/// `host:port` split for an answer.
/// A cluster topic's partitions as the quorum places them.
fn cluster_topic_metadata(
    m: &cluster::Metadata,
    name: &str,
    t: &cluster::TopicState,
) -> MetadataResponseTopic {
    let ids = |v: &[cluster::NodeId]| v.iter().map(|r| BrokerId(*r as i32)).collect::<Vec<_>>();
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let offline: Vec<cluster::NodeId> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| m.brokers.get(r).is_none_or(|b| b.fenced))
                .collect();
            // A leader that is fenced (the controller has not moved its
            // partitions yet) is not among the brokers listed: the partition
            // has no leader to name, as Kafka answers for an offline leader.
            let leader = p.leader.filter(|l| !offline.contains(l));
            MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_error_code(if leader.is_some() {
                    errors::NONE
                } else {
                    errors::LEADER_NOT_AVAILABLE
                })
                .with_leader_id(BrokerId(leader.map_or(-1, |l| l as i32)))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(tn(name.to_string())))
        .with_topic_id(t.id)
        .with_partitions(partitions)
}

/// Metadata in a cluster: the unfenced brokers, the controller, and the
/// topics as the quorum holds them.
fn cluster_metadata(cx: Cx<'_>, req: MetadataRequest, c: &cluster::Cluster) -> MetadataResponse {
    let (broker, version) = (cx.broker, cx.version);
    let all = match &req.topics {
        None => true,
        Some(list) => version == 0 && list.is_empty(),
    };
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    // Unknown names are proposed for creation before the metadata is read.
    if !all {
        for rt in req.topics.iter().flatten() {
            if let Some(n) = &rt.name {
                let _ = broker.topic_or_create(n.as_str(), allow_create);
            }
        }
    }
    let controller = c.controller().map_or(-1, |id| id as i32);
    let mut resp = c.with_metadata(|m| {
        let brokers = m
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| {
                let (host, port) = b.endpoint(cx.session.listener);
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id as i32))
                    .with_host(sb(host.to_string()))
                    .with_port(port)
            })
            .collect();
        let mut topics = Vec::new();
        if all {
            topics.extend(
                m.topics
                    .iter()
                    .map(|(n, t)| cluster_topic_metadata(m, n, t)),
            );
        } else {
            for rt in req.topics.iter().flatten() {
                match &rt.name {
                    Some(n) => match m.topics.get(n.as_str()) {
                        Some(t) => topics.push(cluster_topic_metadata(m, n.as_str(), t)),
                        None => {
                            let creating = allow_create
                                && broker.config.args.auto_create_topics
                                && crate::topics::validate_name(n.as_str()).is_ok();
                            topics.push(
                                MetadataResponseTopic::default()
                                    .with_name(Some(n.clone()))
                                    .with_error_code(if creating {
                                        errors::LEADER_NOT_AVAILABLE
                                    } else {
                                        errors::UNKNOWN_TOPIC_OR_PARTITION
                                    }),
                            );
                        }
                    },
                    None => match m.topics.iter().find(|(_, t)| t.id == rt.topic_id) {
                        Some((n, t)) => topics.push(cluster_topic_metadata(m, n, t)),
                        None => topics.push(
                            MetadataResponseTopic::default()
                                .with_name(None)
                                .with_topic_id(rt.topic_id)
                                .with_error_code(errors::UNKNOWN_TOPIC_ID),
                        ),
                    },
                }
            }
        }
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(m.cluster_id.clone().map(sb))
            .with_controller_id(BrokerId(controller))
            .with_topics(topics)
    });
    if req.include_topic_authorized_operations {
        for t in &mut resp.topics {
            if t.error_code == errors::NONE {
                t.topic_authorized_operations = TOPIC_OPERATIONS;
            }
        }
    }
    resp.cluster_authorized_operations = if req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
    } else {
        i32::MIN
    };
    resp
}

/// DescribeCluster: the brokers (in a cluster, every unfenced one) and the
/// controller.
fn describe_cluster(cx: Cx<'_>, req: &DescribeClusterRequest) -> DescribeClusterResponse {
    let broker = cx.broker;
    let (cluster_id, controller) = match broker.cluster.get() {
        Some(c) => (
            c.with_metadata(|m| m.cluster_id.clone())
                .unwrap_or_else(|| broker.topics.cluster_id().to_string()),
            c.controller().map_or(-1, |id| id as i32),
        ),
        None => (broker.topics.cluster_id().to_string(), broker.node_id()),
    };
    let resp = DescribeClusterResponse::default()
        .with_cluster_id(sb(cluster_id))
        .with_controller_id(BrokerId(controller))
        .with_endpoint_type(req.endpoint_type);
    // endpoint_type 2 asks for controllers; this broker is both roles.
    if req.endpoint_type != 1 && req.endpoint_type != 2 {
        return resp
            .with_error_code(errors::UNSUPPORTED_VERSION)
            .with_error_message(Some(sb("unknown endpoint type")));
    }
    let resp = if req.include_cluster_authorized_operations {
        resp.with_cluster_authorized_operations(CLUSTER_OPERATIONS)
    } else {
        resp
    };
    if let Some(c) = broker.cluster.get() {
        let brokers = c.with_metadata(|m| {
            m.brokers
                .values()
                .filter(|b| !b.fenced)
                .map(|b| {
                    let (host, port) = b.endpoint(cx.session.listener);
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.id as i32))
                        .with_host(sb(host.to_string()))
                        .with_port(port)
                })
                .collect()
        });
        return resp.with_brokers(brokers);
    }
    let (host, port) = cx.advertised();
    resp.with_brokers(vec![DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.node_id()))
        .with_host(sb(host))
        .with_port(port)])
}
