//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use uuid::Uuid;

use super::authz::split;
use super::configs::describe_topic_configs;
use super::errors;
use super::route::{kind, row, Api, Cx, Handled, Row, Verdict};
use super::route::{sb, tn};
use crate::broker::{now_ms, Broker};
use crate::cluster;
use crate::security::acl::Operation;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[
    row::<CreateTopics>(),
    row::<DeleteTopics>(),
    row::<CreatePartitions>(),
];

/// CreateTopics, with their retry companions.
pub struct CreateTopics;

impl Api for CreateTopics {
    kind!(CreateTopics, CreateTopicsRequest, CreateTopicsResponse);
    const VERSIONS: (i16, i16) = (2, 7);
    type Denied = Vec<TopicName>;

    fn authorize(
        cx: Cx<'_>,
        r: &mut CreateTopicsRequest,
    ) -> Verdict<CreateTopicsResponse, Vec<TopicName>> {
        let cluster = cx.cluster(Operation::Create);
        let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
            cluster || cx.topic(Operation::Create, t.name.as_str())
        });
        r.topics = keep;
        Verdict::Proceed(refused.into_iter().map(|t| t.name).collect())
    }

    fn deny(_cx: Cx<'_>, r: &mut CreateTopicsResponse, denied: Vec<TopicName>) {
        for name in denied {
            r.topics.push(
                CreatableTopicResult::default()
                    .with_name(name)
                    .with_error_code(errors::TOPIC_AUTHORIZATION_FAILED)
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: CreateTopicsRequest) -> Handled<CreateTopicsResponse> {
        if let Some(c) = cx.broker.cluster.get() {
            return Handled::Now(cluster_create_topics(cx.broker, c, req, cx.version).await);
        }
        Handled::Now(create_topics(cx.broker, req, cx.version))
    }

    fn errors(r: &CreateTopicsResponse, out: &mut Vec<i16>) {
        out.extend(r.topics.iter().map(|t| t.error_code));
    }
}

/// DeleteTopics, by name or (v6) by id.
pub struct DeleteTopics;

impl Api for DeleteTopics {
    kind!(DeleteTopics, DeleteTopicsRequest, DeleteTopicsResponse);
    const VERSIONS: (i16, i16) = (1, 6);
    type Denied = Vec<(Option<TopicName>, Uuid)>;

    fn authorize(
        cx: Cx<'_>,
        r: &mut DeleteTopicsRequest,
    ) -> Verdict<DeleteTopicsResponse, Self::Denied> {
        let may_delete = |name: &str| cx.topic(Operation::Delete, name);
        let (keep, refused) = split(std::mem::take(&mut r.topic_names), |n| {
            may_delete(n.as_str())
        });
        r.topic_names = keep;
        let mut denied: Self::Denied = refused
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect();
        let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
            let name = match &t.name {
                Some(n) => Some(n.to_string()),
                None => cx
                    .broker
                    .topics
                    .get_by_id(t.topic_id)
                    .map(|t| t.name.clone()),
            };
            name.is_none_or(|n| may_delete(&n))
        });
        r.topics = keep;
        denied.extend(refused.into_iter().map(|t| (t.name, t.topic_id)));
        Verdict::Proceed(denied)
    }

    fn deny(_cx: Cx<'_>, r: &mut DeleteTopicsResponse, denied: Self::Denied) {
        for (name, id) in denied {
            r.responses.push(
                DeletableTopicResult::default()
                    .with_name(name)
                    .with_topic_id(id)
                    .with_error_code(errors::TOPIC_AUTHORIZATION_FAILED),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: DeleteTopicsRequest) -> Handled<DeleteTopicsResponse> {
        if let Some(c) = cx.broker.cluster.get() {
            return Handled::Now(cluster_delete_topics(c, req, cx.version).await);
        }
        Handled::Now(delete_topics(cx.broker, req, cx.version))
    }

    fn errors(r: &DeleteTopicsResponse, out: &mut Vec<i16>) {
        out.extend(r.responses.iter().map(|t| t.error_code));
    }
}

/// CreatePartitions: grows topics.
pub struct CreatePartitions;

impl Api for CreatePartitions {
    kind!(
        CreatePartitions,
        CreatePartitionsRequest,
        CreatePartitionsResponse
    );
    const VERSIONS: (i16, i16) = (0, 3);
    type Denied = Vec<TopicName>;

    fn authorize(
        cx: Cx<'_>,
        r: &mut CreatePartitionsRequest,
    ) -> Verdict<CreatePartitionsResponse, Vec<TopicName>> {
        let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
            cx.topic(Operation::Alter, t.name.as_str())
        });
        r.topics = keep;
        Verdict::Proceed(refused.into_iter().map(|t| t.name).collect())
    }

    fn deny(_cx: Cx<'_>, r: &mut CreatePartitionsResponse, denied: Vec<TopicName>) {
        for name in denied {
            r.results.push(
                CreatePartitionsTopicResult::default()
                    .with_name(name)
                    .with_error_code(errors::TOPIC_AUTHORIZATION_FAILED),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: CreatePartitionsRequest) -> Handled<CreatePartitionsResponse> {
        if let Some(c) = cx.broker.cluster.get() {
            return Handled::Now(cluster_create_partitions(c, req).await);
        }
        Handled::Now(create_partitions(cx.broker, req))
    }

    fn errors(r: &CreatePartitionsResponse, out: &mut Vec<i16>) {
        out.extend(r.results.iter().map(|t| t.error_code));
    }
}

fn create_topics(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let dups: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let node = broker.node_id();
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let res = CreatableTopicResult::default().with_name(t.name.clone());
        let fail = |code: i16, msg: String| create_failed(&t.name, code, msg);
        if dups.contains(&name) {
            results.push(fail(
                errors::INVALID_REQUEST,
                format!("topic '{name}' appears more than once in the request"),
            ));
            continue;
        }
        let mut partitions = if t.num_partitions == -1 {
            broker.broker_configs.num_partitions()
        } else {
            t.num_partitions
        };
        if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                results.push(fail(
                    errors::INVALID_REQUEST,
                    "both a replica assignment and a partition count or replication factor were given".into(),
                ));
                continue;
            }
            let mut idx: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
            idx.sort_unstable();
            let contiguous = idx.iter().enumerate().all(|(i, &p)| p == i as i32);
            let on_us = t
                .assignments
                .iter()
                .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node);
            if !contiguous || !on_us {
                results.push(fail(
                    errors::INVALID_REPLICA_ASSIGNMENT,
                    format!("assignments must cover partitions 0..n, each on broker {node} alone"),
                ));
                continue;
            }
            partitions = t.assignments.len() as i32;
        }
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.to_string(), v.to_string());
            }
        }
        let outcome = if req.validate_only {
            broker
                .topics
                .check_create(&name, partitions, t.replication_factor, &configs)
                .map(|()| None)
        } else {
            broker
                .topics
                .create(
                    &name,
                    partitions,
                    t.replication_factor,
                    configs.clone(),
                    now_ms(),
                )
                .map(Some)
        };
        match outcome {
            Ok(created) => {
                if created.is_some() {
                    if let Err(e) = crate::retry::sync_companions(&broker.topics, &name) {
                        tracing::error!(topic = %name, error = %e, "failed to create retry companions");
                    }
                }
                let mut r = res
                    .with_num_partitions(partitions)
                    .with_replication_factor(1);
                if version >= 5 {
                    r = match &created {
                        Some(topic) => r
                            .with_topic_id(topic.id)
                            .with_configs(Some(describe_topic_configs(broker, topic))),
                        None => r.with_configs(Some(Vec::new())),
                    };
                }
                results.push(r);
            }
            Err(e) => results.push(fail(errors::topic_error_code(&e), e.to_string())),
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn delete_topics(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets = delete_targets(&req, version);
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let topic = match &name {
                Some(n) => broker.topics.get(n),
                None => broker.topics.get_by_id(id),
            };
            let r = DeletableTopicResult::default()
                .with_name(name.clone().map(tn))
                .with_topic_id(id);
            let Some(topic) = topic else {
                let code = if name.is_some() {
                    errors::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    errors::UNKNOWN_TOPIC_ID
                };
                return r.with_error_code(code);
            };
            let r = r
                .with_name(Some(tn(topic.name.clone())))
                .with_topic_id(topic.id);
            match broker.topics.delete(&topic.name) {
                Ok(()) => {
                    broker.metrics.remove_topic(&topic.name);
                    r
                }
                Err(e) => r
                    .with_error_code(errors::topic_error_code(&e))
                    .with_error_message(Some(sb(e.to_string()))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

fn create_partitions(
    broker: &Arc<Broker>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node = broker.node_id();
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if let Some(a) = &t.assignments {
                if a.iter()
                    .any(|x| x.broker_ids.len() != 1 || x.broker_ids[0].0 != node)
                {
                    return r
                        .with_error_code(errors::INVALID_REPLICA_ASSIGNMENT)
                        .with_error_message(Some(sb(format!(
                            "each new partition must be on broker {node} alone"
                        ))));
                }
            }
            match broker.topics.create_partitions(
                t.name.0.as_str(),
                t.count,
                req.validate_only,
                now_ms(),
            ) {
                Ok(()) => {
                    if !req.validate_only {
                        if let Err(e) = crate::retry::sync_companions(&broker.topics, t.name.0.as_str()) {
                            tracing::error!(topic = %t.name.0, error = %e, "failed to grow retry companions");
                        }
                    }
                    r
                }
                Err(e) => r
                    .with_error_code(errors::topic_error_code(&e))
                    .with_error_message(Some(sb(e.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// What DeleteTopics names: (name, id), by id from v6 on.
fn delete_targets(req: &DeleteTopicsRequest, version: i16) -> Vec<(Option<String>, Uuid)> {
    if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    }
}

/// A topic CreateTopics did not create.
fn create_failed(name: &TopicName, code: i16, msg: String) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(name.clone())
        .with_error_code(code)
        .with_error_message(Some(sb(msg)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_configs(None)
}

/// CreateTopics in a cluster: each topic is proposed to the quorum, which
/// places its replicas.
async fn cluster_create_topics(
    broker: &Arc<Broker>,
    c: &Arc<cluster::Cluster>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let fail = |code: i16, msg: String| create_failed(&t.name, code, msg);
        if !t.assignments.is_empty() {
            results.push(fail(
                errors::INVALID_REPLICA_ASSIGNMENT,
                "replica assignments are placed by the controller".into(),
            ));
            continue;
        }
        let partitions = if t.num_partitions == -1 {
            broker.broker_configs.num_partitions()
        } else {
            t.num_partitions
        };
        let rf = if t.replication_factor == -1 {
            broker.config.args.default_replication_factor
        } else {
            t.replication_factor
        };
        let mut configs = BTreeMap::new();
        for cfg in &t.configs {
            if let Some(v) = &cfg.value {
                configs.insert(cfg.name.to_string(), v.to_string());
            }
        }
        // Name, partition count and configs as a single broker checks
        // them (the replication factor is the quorum's to judge).
        if let Err(e) = broker.topics.check_create(&name, partitions, 1, &configs) {
            if !matches!(e, crate::topics::TopicError::AlreadyExists(_)) {
                results.push(fail(errors::topic_error_code(&e), e.to_string()));
                continue;
            }
        }
        let exists = c.with_metadata(|m| m.topics.contains_key(&name));
        let live = c.with_metadata(|m| m.live_brokers().len());
        if exists {
            results.push(fail(
                errors::TOPIC_ALREADY_EXISTS,
                format!("topic '{name}' already exists"),
            ));
            continue;
        }
        if rf < 1 || rf as usize > live {
            results.push(fail(
                errors::INVALID_REPLICATION_FACTOR,
                format!("replication factor {rf} with {live} live brokers"),
            ));
            continue;
        }
        if req.validate_only {
            results.push(
                CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_num_partitions(partitions)
                    .with_replication_factor(rf)
                    .with_configs(Some(Vec::new())),
            );
            continue;
        }
        let id = Uuid::new_v4();
        let retries = crate::retry::RetryPolicy::from_configs(&configs).is_some();
        let cmd = cluster::Command::CreateTopic {
            name: name.clone(),
            id,
            partitions,
            replication_factor: rf,
            configs,
        };
        match super::quorum::propose_and_see(c, cmd, |m| m.topics.contains_key(&name)).await {
            Ok(()) => {
                if retries {
                    super::quorum::propose_companions(c, &name, (partitions, rf)).await;
                    // Where their held records will be journaled.
                    broker.internal_topic(crate::retry::journal::TOPIC);
                }
                let mut r = CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_num_partitions(partitions)
                    .with_replication_factor(rf);
                if version >= 5 {
                    r = r.with_topic_id(id).with_configs(Some(
                        broker
                            .topics
                            .get(&name)
                            .map(|topic| describe_topic_configs(broker, &topic))
                            .unwrap_or_default(),
                    ));
                }
                results.push(r);
            }
            Err((code, msg)) => results.push(fail(code, msg)),
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// DeleteTopics in a cluster, through the quorum.
async fn cluster_delete_topics(
    c: &Arc<cluster::Cluster>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets = delete_targets(&req, version);
    let mut responses = Vec::new();
    for (name, id) in targets {
        let found = c.with_metadata(|m| match &name {
            Some(n) => m.topics.get(n).map(|t| (n.clone(), t.id)),
            None => m
                .topics
                .iter()
                .find(|(_, t)| t.id == id)
                .map(|(n, t)| (n.clone(), t.id)),
        });
        let r = DeletableTopicResult::default()
            .with_name(name.clone().map(tn))
            .with_topic_id(id);
        let Some((name, id)) = found else {
            let code = if name.is_some() {
                errors::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                errors::UNKNOWN_TOPIC_ID
            };
            responses.push(r.with_error_code(code));
            continue;
        };
        let r = r.with_name(Some(tn(name.clone()))).with_topic_id(id);
        if crate::topics::is_internal(&name) {
            responses.push(
                r.with_error_code(errors::INVALID_TOPIC_EXCEPTION)
                    .with_error_message(Some(sb("an internal topic of the brokers"))),
            );
            continue;
        }
        let cmd = cluster::Command::DeleteTopic { name: name.clone() };
        responses.push(
            match super::quorum::propose_and_see(c, cmd, |m| !m.topics.contains_key(&name)).await {
                Ok(()) => r,
                Err((code, msg)) => r.with_error_code(code).with_error_message(Some(sb(msg))),
            },
        );
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// CreatePartitions in a cluster, through the quorum.
async fn cluster_create_partitions(
    c: &Arc<cluster::Cluster>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let name = t.name.0.to_string();
        if crate::topics::is_internal(&name) {
            results.push(
                r.with_error_code(errors::INVALID_TOPIC_EXCEPTION)
                    .with_error_message(Some(sb(
                        "more partitions would move what an internal topic holds",
                    ))),
            );
            continue;
        }
        if t.assignments.is_some() {
            results.push(
                r.with_error_code(errors::INVALID_REPLICA_ASSIGNMENT)
                    .with_error_message(Some(sb("replicas are placed by the controller"))),
            );
            continue;
        }
        let have = c.with_metadata(|m| m.topics.get(&name).map(|t| t.partitions.len() as i32));
        let check = match have {
            None => Err((
                errors::UNKNOWN_TOPIC_OR_PARTITION,
                format!("unknown topic '{name}'"),
            )),
            Some(n) if t.count <= n => Err((
                errors::INVALID_PARTITIONS,
                format!(
                    "topic has {n} partitions, {} would not be an increase",
                    t.count
                ),
            )),
            Some(_) if t.count > crate::topics::MAX_PARTITIONS => Err((
                errors::INVALID_PARTITIONS,
                format!("{} partitions exceed the maximum", t.count),
            )),
            Some(_) => Ok(()),
        };
        let outcome = match check {
            Err(e) => Err(e),
            Ok(()) if req.validate_only => Ok(()),
            Ok(()) => {
                let cmd = cluster::Command::CreatePartitions {
                    name: name.clone(),
                    total: t.count,
                };
                super::quorum::propose_and_see(c, cmd, |m| {
                    m.topics
                        .get(&name)
                        .is_some_and(|x| x.partitions.len() as i32 >= t.count)
                })
                .await
            }
        };
        results.push(match outcome {
            Ok(()) => r,
            Err((code, msg)) => r.with_error_code(code).with_error_message(Some(sb(msg))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
