//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};

use super::{errors, sb, tn};
use crate::broker::{now_ms, Broker};
use crate::topics::config::{self, ConfigType, TOPIC_CONFIGS};
use crate::topics::{Topic, TopicError};

/// Kafka's resource type codes.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's config source codes.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn describe_topic_configs(broker: &Broker, topic: &Topic) -> Vec<CreatableTopicConfigs> {
    let set = topic.configs();
    let defaults = broker.topics.defaults();
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let (value, source) = match set.get(d.name) {
                Some(v) => (v.clone(), SOURCE_DYNAMIC_TOPIC),
                None if defaults.is_overridden(d) => (defaults.default_of(d), SOURCE_STATIC_BROKER),
                None => (d.default.to_string(), SOURCE_DEFAULT),
            };
            CreatableTopicConfigs::default()
                .with_name(sb(d.name))
                .with_value(Some(sb(value)))
                .with_config_source(source)
        })
        .collect()
}

/// CreateTopics.
pub fn create_topics(
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
        let fail = |code: i16, msg: String| {
            CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code)
                .with_error_message(Some(sb(msg)))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_configs(None)
        };
        if dups.contains(&name) {
            results.push(fail(
                errors::INVALID_REQUEST,
                format!("topic '{name}' appears more than once in the request"),
            ));
            continue;
        }
        let mut partitions = if t.num_partitions == -1 {
            broker.config.args.default_partitions
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
                    if let Err(e) = broker.sync_companions(&name) {
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

/// DeleteTopics, by name or (v6) by id.
pub fn delete_topics(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
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

/// CreatePartitions: grows topics.
pub fn create_partitions(
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
                        if let Err(e) = broker.sync_companions(t.name.0.as_str()) {
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

fn broker_configs(broker: &Broker) -> Vec<(&'static str, String, ConfigType)> {
    let a = &broker.config.args;
    vec![
        ("broker.id", a.node_id.to_string(), ConfigType::Int),
        ("node.id", a.node_id.to_string(), ConfigType::Int),
        (
            "num.partitions",
            a.default_partitions.to_string(),
            ConfigType::Int,
        ),
        (
            "auto.create.topics.enable",
            a.auto_create_topics.to_string(),
            ConfigType::Boolean,
        ),
        (
            "log.dirs",
            a.data_dir.display().to_string(),
            ConfigType::String,
        ),
        (
            "log.segment.bytes",
            a.log_segment_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "log.retention.ms",
            a.log_retention_ms.to_string(),
            ConfigType::Long,
        ),
        ("message.max.bytes", "1048588".to_string(), ConfigType::Int),
        (
            "socket.request.max.bytes",
            a.max_request_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "connections.max.idle.ms",
            a.connections_max_idle_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "default.replication.factor",
            "1".to_string(),
            ConfigType::Int,
        ),
        ("min.insync.replicas", "1".to_string(), ConfigType::Int),
        (
            "offsets.topic.replication.factor",
            "1".to_string(),
            ConfigType::Short,
        ),
        (
            "delete.topic.enable",
            "true".to_string(),
            ConfigType::Boolean,
        ),
    ]
}

/// DescribeConfigs for topics and this broker: every config with its value,
/// source and (when asked) synonyms and documentation.
pub fn describe_configs(
    broker: &Arc<Broker>,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let keys: Option<HashSet<String>> = r
                .configuration_keys
                .as_ref()
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            let wanted = |n: &str| keys.as_ref().is_none_or(|k| k.contains(n));
            let res = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = broker.topics.get(r.resource_name.as_str()) else {
                        return res
                            .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(sb(format!(
                                "unknown topic '{}'",
                                r.resource_name
                            ))));
                    };
                    let set = topic.configs();
                    let defaults = broker.topics.defaults();
                    let configs = TOPIC_CONFIGS
                        .iter()
                        .filter(|d| wanted(d.name))
                        .map(|d| {
                            let broker_default = defaults.default_of(d);
                            let (value, source) = match set.get(d.name) {
                                Some(v) => (v.clone(), SOURCE_DYNAMIC_TOPIC),
                                None if defaults.is_overridden(d) => {
                                    (broker_default.clone(), SOURCE_STATIC_BROKER)
                                }
                                None => (d.default.to_string(), SOURCE_DEFAULT),
                            };
                            let mut synonyms = Vec::new();
                            if req.include_synonyms {
                                if let Some(v) = set.get(d.name) {
                                    synonyms.push(
                                        DescribeConfigsSynonym::default()
                                            .with_name(sb(d.name))
                                            .with_value(Some(sb(v.clone())))
                                            .with_source(SOURCE_DYNAMIC_TOPIC),
                                    );
                                }
                                synonyms.push(
                                    DescribeConfigsSynonym::default()
                                        .with_name(sb(d.name))
                                        .with_value(Some(sb(broker_default)))
                                        .with_source(if defaults.is_overridden(d) {
                                            SOURCE_STATIC_BROKER
                                        } else {
                                            SOURCE_DEFAULT
                                        }),
                                );
                            }
                            let mut c = DescribeConfigsResourceResult::default()
                                .with_name(sb(d.name))
                                .with_value(Some(sb(value)))
                                .with_config_source(source)
                                .with_synonyms(synonyms);
                            if version >= 3 {
                                c = c.with_config_type(d.kind as i8);
                                if req.include_documentation {
                                    c = c.with_documentation(Some(sb(d.doc)));
                                }
                            }
                            c
                        })
                        .collect();
                    res.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let name = r.resource_name.as_str();
                    if !name.is_empty() && name != broker.node_id().to_string() {
                        return res
                            .with_error_code(errors::INVALID_REQUEST)
                            .with_error_message(Some(sb(format!("unknown broker '{name}'"))));
                    }
                    let configs = broker_configs(broker)
                        .into_iter()
                        .filter(|(n, _, _)| wanted(n))
                        .map(|(n, v, kind)| {
                            let mut c = DescribeConfigsResourceResult::default()
                                .with_name(sb(n))
                                .with_value(Some(sb(v)))
                                .with_read_only(true)
                                .with_config_source(SOURCE_STATIC_BROKER);
                            if version >= 3 {
                                c = c.with_config_type(kind as i8);
                            }
                            c
                        })
                        .collect();
                    res.with_configs(configs)
                }
                other => res
                    .with_error_code(errors::INVALID_REQUEST)
                    .with_error_message(Some(sb(format!(
                        "resource type {other} is not supported"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn alter_error(e: &TopicError) -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    (errors::topic_error_code(e), Some(sb(e.to_string())))
}

/// AlterConfigs: replaces a topic's configs with the given set.
pub fn alter_configs(broker: &Arc<Broker>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let resp = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            if r.resource_type != RESOURCE_TOPIC {
                return resp
                    .with_error_code(errors::INVALID_REQUEST)
                    .with_error_message(Some(sb("only topic configs can be altered")));
            }
            let configs: BTreeMap<String, String> = r
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            match broker
                .topics
                .set_configs(r.resource_name.as_str(), configs, req.validate_only)
            {
                Ok(()) => {
                    companions_after_alter(broker, r.resource_name.as_str(), req.validate_only);
                    resp
                }
                Err(e) => {
                    let (code, msg) = alter_error(&e);
                    resp.with_error_code(code).with_error_message(msg)
                }
            }
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT per config.
pub fn incremental_alter_configs(
    broker: &Arc<Broker>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let resp = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            if r.resource_type != RESOURCE_TOPIC {
                return resp
                    .with_error_code(errors::INVALID_REQUEST)
                    .with_error_message(Some(sb("only topic configs can be altered")));
            }
            let Some(topic) = broker.topics.get(r.resource_name.as_str()) else {
                return resp
                    .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                    .with_error_message(Some(sb(format!("unknown topic '{}'", r.resource_name))));
            };
            let mut configs = topic.configs();
            for c in &r.configs {
                let name = c.name.to_string();
                let Some(def) = config::def(&name) else {
                    return resp
                        .with_error_code(errors::INVALID_CONFIG)
                        .with_error_message(Some(sb(format!("unknown topic config {name}"))));
                };
                let value = c.value.as_ref().map(|v| v.to_string());
                let list_op = |configs: &BTreeMap<String, String>| -> Vec<String> {
                    config::effective(configs, broker.topics.defaults(), &name)
                        .unwrap_or_default()
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                };
                match (c.config_operation, value) {
                    (0, Some(v)) => {
                        configs.insert(name, v);
                    }
                    (1, _) => {
                        configs.remove(&name);
                    }
                    (2 | 3, Some(v)) if def.kind == ConfigType::List => {
                        let mut items = list_op(&configs);
                        for x in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                            if c.config_operation == 2 {
                                if !items.iter().any(|i| i == x) {
                                    items.push(x.to_string());
                                }
                            } else {
                                items.retain(|i| i != x);
                            }
                        }
                        configs.insert(name, items.join(","));
                    }
                    (op, _) => {
                        return resp
                            .with_error_code(errors::INVALID_CONFIG)
                            .with_error_message(Some(sb(format!(
                                "operation {op} is not valid for {name}"
                            ))));
                    }
                }
            }
            match broker
                .topics
                .set_configs(&topic.name, configs, req.validate_only)
            {
                Ok(()) => {
                    companions_after_alter(broker, &topic.name, req.validate_only);
                    resp
                }
                Err(e) => {
                    let (code, msg) = alter_error(&e);
                    resp.with_error_code(code).with_error_message(msg)
                }
            }
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Creates the retry companions of a topic whose configs now enable retries.
fn companions_after_alter(broker: &Broker, topic: &str, validate_only: bool) {
    if validate_only {
        return;
    }
    if let Err(e) = broker.sync_companions(topic) {
        tracing::error!(topic, error = %e, "failed to create retry companions");
    }
}
