//! Metadata and DescribeCluster: this broker is the one node, the leader of
//! every partition and the controller.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
};

use super::{errors, sb, tn};
use crate::broker::Broker;
use crate::topics::Topic;

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
        .with_partitions(partitions)
}

/// Metadata: brokers, cluster id, controller and the requested topics
/// (auto-creating unknown ones when allowed).
pub fn metadata(broker: &Arc<Broker>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let node = BrokerId(broker.node_id());
    let cfg = &broker.config;
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(sb(cfg.advertised_host.clone()))
        .with_port(cfg.advertised_port)];
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

/// DescribeCluster: the one broker.
pub fn describe_cluster(broker: &Broker, req: &DescribeClusterRequest) -> DescribeClusterResponse {
    let cfg = &broker.config;
    let resp = DescribeClusterResponse::default()
        .with_cluster_id(sb(broker.topics.cluster_id()))
        .with_controller_id(BrokerId(broker.node_id()))
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
    resp.with_brokers(vec![DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.node_id()))
        .with_host(sb(cfg.advertised_host.clone()))
        .with_port(cfg.advertised_port)])
}
