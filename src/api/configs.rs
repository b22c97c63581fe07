//! Configs: DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, for
//! topics and (read-only) this broker.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::CreatableTopicConfigs;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_request, alter_configs_response, describe_configs_request,
    incremental_alter_configs_request, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::authz::split;
use super::errors;
use super::route::sb;
use super::route::{kind, row, Api, Cx, Handled, Row, Verdict};
use crate::broker::Broker;
use crate::security::acl::Operation;
use crate::topics::config::{self, ConfigType, TOPIC_CONFIGS};
use crate::topics::{Topic, TopicError};

/// The APIs this family serves.
pub const ROWS: &[Row] = &[
    row::<DescribeConfigs>(),
    row::<AlterConfigs>(),
    row::<IncrementalAlterConfigs>(),
];

/// Kafka's resource type codes.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's config source codes.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Config resources refused: (resource type, name).
type Refused = Vec<(i8, StrBytes)>;

/// A config resource named in a request, whatever the API.
trait Resource {
    fn key(&self) -> (i8, &StrBytes);
}

/// A config resource's answer in a response, whatever the API.
trait Answer {
    fn refused(rtype: i8, name: StrBytes) -> Self;
}

macro_rules! config_resources {
    ($($req:ty => $resp:ty),* $(,)?) => {$(
        impl Resource for $req {
            fn key(&self) -> (i8, &StrBytes) {
                (self.resource_type, &self.resource_name)
            }
        }
        impl Answer for $resp {
            fn refused(rtype: i8, name: StrBytes) -> Self {
                <$resp>::default()
                    .with_resource_type(rtype)
                    .with_resource_name(name)
                    .with_error_code(refused_code(rtype))
            }
        }
    )*};
}

config_resources! {
    describe_configs_request::DescribeConfigsResource => DescribeConfigsResult,
    alter_configs_request::AlterConfigsResource => alter_configs_response::AlterConfigsResourceResponse,
    incremental_alter_configs_request::AlterConfigsResource
        => incremental_alter_configs_response::AlterConfigsResourceResponse,
}

/// Takes the resources the principal may not `op` out of `resources`:
/// topics by name, the broker as the cluster.
fn refuse<T: Resource>(cx: Cx<'_>, op: Operation, resources: &mut Vec<T>) -> Refused {
    let (keep, refused) = split(std::mem::take(resources), |r| match r.key() {
        (RESOURCE_TOPIC, name) => cx.topic(op, name.as_str()),
        _ => cx.cluster(op),
    });
    *resources = keep;
    refused
        .iter()
        .map(|r| {
            let (rtype, name) = r.key();
            (rtype, name.clone())
        })
        .collect()
}

/// Answers the refused resources.
fn put_back<A: Answer>(answers: &mut Vec<A>, denied: Refused) {
    answers.extend(
        denied
            .into_iter()
            .map(|(rtype, name)| A::refused(rtype, name)),
    );
}

/// The code a refused config resource is answered with.
fn refused_code(rtype: i8) -> i16 {
    if rtype == RESOURCE_TOPIC {
        errors::TOPIC_AUTHORIZATION_FAILED
    } else {
        errors::CLUSTER_AUTHORIZATION_FAILED
    }
}

/// DescribeConfigs: every config with its value, source and (when asked)
/// synonyms and documentation.
pub struct DescribeConfigs;

impl Api for DescribeConfigs {
    kind!(
        DescribeConfigs,
        DescribeConfigsRequest,
        DescribeConfigsResponse
    );
    const VERSIONS: (i16, i16) = (1, 4);
    type Denied = Refused;

    fn authorize(
        cx: Cx<'_>,
        r: &mut DescribeConfigsRequest,
    ) -> Verdict<DescribeConfigsResponse, Refused> {
        Verdict::Proceed(refuse(cx, Operation::DescribeConfigs, &mut r.resources))
    }

    fn deny(_cx: Cx<'_>, r: &mut DescribeConfigsResponse, denied: Refused) {
        put_back(&mut r.results, denied);
    }

    async fn handle(cx: Cx<'_>, req: DescribeConfigsRequest) -> Handled<DescribeConfigsResponse> {
        Handled::Now(describe_configs(cx.broker, req, cx.version))
    }

    fn errors(r: &DescribeConfigsResponse, out: &mut Vec<i16>) {
        out.extend(r.results.iter().map(|t| t.error_code));
    }
}

/// AlterConfigs: replaces a topic's configs with the given set.
pub struct AlterConfigs;

impl Api for AlterConfigs {
    kind!(AlterConfigs, AlterConfigsRequest, AlterConfigsResponse);
    const VERSIONS: (i16, i16) = (0, 2);
    type Denied = Refused;

    fn authorize(
        cx: Cx<'_>,
        r: &mut AlterConfigsRequest,
    ) -> Verdict<AlterConfigsResponse, Refused> {
        Verdict::Proceed(refuse(cx, Operation::AlterConfigs, &mut r.resources))
    }

    fn deny(_cx: Cx<'_>, r: &mut AlterConfigsResponse, denied: Refused) {
        put_back(&mut r.responses, denied);
    }

    async fn handle(cx: Cx<'_>, req: AlterConfigsRequest) -> Handled<AlterConfigsResponse> {
        Handled::Now(alter_configs(cx.broker, req).await)
    }

    fn errors(r: &AlterConfigsResponse, out: &mut Vec<i16>) {
        out.extend(r.responses.iter().map(|t| t.error_code));
    }
}

/// IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT per config.
pub struct IncrementalAlterConfigs;

impl Api for IncrementalAlterConfigs {
    kind!(
        IncrementalAlterConfigs,
        IncrementalAlterConfigsRequest,
        IncrementalAlterConfigsResponse
    );
    const VERSIONS: (i16, i16) = (0, 1);
    type Denied = Refused;

    fn authorize(
        cx: Cx<'_>,
        r: &mut IncrementalAlterConfigsRequest,
    ) -> Verdict<IncrementalAlterConfigsResponse, Refused> {
        Verdict::Proceed(refuse(cx, Operation::AlterConfigs, &mut r.resources))
    }

    fn deny(_cx: Cx<'_>, r: &mut IncrementalAlterConfigsResponse, denied: Refused) {
        put_back(&mut r.responses, denied);
    }

    async fn handle(
        cx: Cx<'_>,
        req: IncrementalAlterConfigsRequest,
    ) -> Handled<IncrementalAlterConfigsResponse> {
        Handled::Now(incremental_alter_configs(cx.broker, req).await)
    }

    fn errors(r: &IncrementalAlterConfigsResponse, out: &mut Vec<i16>) {
        out.extend(r.responses.iter().map(|t| t.error_code));
    }
}

/// A topic's configs as CreateTopics (v5+) reports them.
pub fn describe_topic_configs(broker: &Broker, topic: &Topic) -> Vec<CreatableTopicConfigs> {
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

fn broker_configs(broker: &Broker) -> Vec<(&'static str, String, ConfigType)> {
    let a = &broker.config.args;
    vec![
        ("broker.id", a.node_id.to_string(), ConfigType::Int),
        ("node.id", a.node_id.to_string(), ConfigType::Int),
        (
            "num.partitions",
            broker.broker_configs.num_partitions().to_string(),
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
            broker.topics.defaults().segment_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "log.retention.ms",
            broker.topics.defaults().retention_ms.to_string(),
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
            "max.connections",
            broker
                .broker_configs
                .max_connections()
                .unwrap_or(a.max_connections)
                .to_string(),
            ConfigType::Int,
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
fn describe_configs(
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
                    res.with_configs(describe_broker(broker, name.is_empty(), version, &wanted))
                }
                super::loggers::RESOURCE_BROKER_LOGGER => {
                    match super::loggers::describe(
                        broker,
                        r.resource_name.as_str(),
                        version,
                        &wanted,
                    ) {
                        Ok(configs) => res.with_configs(configs),
                        Err((code, msg)) => res.with_error_code(code).with_error_message(msg),
                    }
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
async fn alter_configs(broker: &Arc<Broker>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let resp = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let configs: BTreeMap<String, String> = r
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let stored = match r.resource_type {
            RESOURCE_TOPIC => {
                store_configs(broker, r.resource_name.as_str(), configs, req.validate_only).await
            }
            RESOURCE_BROKER => {
                alter_broker(broker, r.resource_name.as_str(), configs, req.validate_only).await
            }
            super::loggers::RESOURCE_BROKER_LOGGER => Err((
                errors::INVALID_REQUEST,
                Some(sb("log levels are changed with IncrementalAlterConfigs")),
            )),
            other => Err((
                errors::INVALID_REQUEST,
                Some(sb(format!("resource type {other} is not supported"))),
            )),
        };
        responses.push(match stored {
            Ok(()) => resp,
            Err((code, msg)) => resp.with_error_code(code).with_error_message(msg),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// A topic's configs: the quorum's in a cluster (the topic may have no
/// replica here), else this broker's.
fn current_configs(broker: &Broker, name: &str) -> Option<BTreeMap<String, String>> {
    match broker.cluster.get() {
        Some(c) => c.with_metadata(|m| m.topics.get(name).map(|t| t.configs.clone())),
        None => broker.topics.get(name).map(|t| t.configs()),
    }
}

/// One resource of an IncrementalAlterConfigs: the topic's configs with
/// the operations applied.
fn merged_configs(
    broker: &Broker,
    r: &kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource,
) -> Result<BTreeMap<String, String>, (i16, String)> {
    if r.resource_type != RESOURCE_TOPIC {
        return Err((
            errors::INVALID_REQUEST,
            "only topic configs can be altered".into(),
        ));
    }
    let Some(mut configs) = current_configs(broker, r.resource_name.as_str()) else {
        return Err((
            errors::UNKNOWN_TOPIC_OR_PARTITION,
            format!("unknown topic '{}'", r.resource_name),
        ));
    };
    for c in &r.configs {
        let name = c.name.to_string();
        let Some(def) = config::def(&name) else {
            return Err((
                errors::INVALID_CONFIG,
                format!("unknown topic config {name}"),
            ));
        };
        let value = c.value.as_ref().map(|v| v.to_string());
        let list_op = |configs: &BTreeMap<String, String>| -> Vec<String> {
            config::effective(configs, &broker.topics.defaults(), &name)
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
                return Err((
                    errors::INVALID_CONFIG,
                    format!("operation {op} is not valid for {name}"),
                ));
            }
        }
    }
    Ok(configs)
}

/// IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT per config.
async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        let resp = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let stored = if r.resource_type == super::loggers::RESOURCE_BROKER_LOGGER {
            super::loggers::alter(broker, r, req.validate_only)
        } else if r.resource_type == RESOURCE_BROKER {
            match merged_broker_configs(broker, r) {
                Ok(configs) => {
                    alter_broker(broker, r.resource_name.as_str(), configs, req.validate_only).await
                }
                Err((code, msg)) => Err((code, Some(sb(msg)))),
            }
        } else {
            match merged_configs(broker, r) {
                Ok(configs) => {
                    store_configs(broker, r.resource_name.as_str(), configs, req.validate_only)
                        .await
                }
                Err((code, msg)) => Err((code, Some(sb(msg)))),
            }
        };
        responses.push(match stored {
            Ok(()) => resp,
            Err((code, msg)) => resp.with_error_code(code).with_error_message(msg),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Sets a topic's configs: on a single node in its registry; in a cluster
/// through the quorum, which every replica follows. Retry companions are
/// made when the configs turn retries on.
async fn store_configs(
    broker: &Arc<Broker>,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (i16, Option<StrBytes>)> {
    let Some(c) = broker.cluster.get() else {
        broker
            .topics
            .set_configs(name, configs, validate_only)
            .map_err(|e| alter_error(&e))?;
        companions_after_alter(broker, name, validate_only);
        return Ok(());
    };
    for (k, v) in &configs {
        config::validate(k, v).map_err(|e| alter_error(&TopicError::from(e)))?;
    }
    let Some(shape) = c.with_metadata(|m| {
        m.topics.get(name).map(|t| {
            let rf = t.partitions.first().map_or(1, |p| p.replicas.len());
            (t.partitions.len() as i32, rf as i16)
        })
    }) else {
        return Err((
            errors::UNKNOWN_TOPIC_OR_PARTITION,
            Some(sb(format!("unknown topic '{name}'"))),
        ));
    };
    if validate_only {
        return Ok(());
    }
    let retries = crate::retry::RetryPolicy::from_configs(&configs).is_some();
    let cmd = crate::cluster::Command::SetTopicConfigs {
        name: name.to_string(),
        configs: configs.clone(),
    };
    super::quorum::propose_and_see(c, cmd, |m| {
        m.topics.get(name).is_some_and(|t| t.configs == configs)
    })
    .await
    .map_err(|(code, msg)| (code, Some(sb(msg))))?;
    if retries {
        super::quorum::propose_companions(c, name, shape).await;
        // Where their held records will be journaled.
        broker.internal_topic(crate::retry::journal::TOPIC);
    }
    Ok(())
}

/// The cluster-wide dynamic broker configs: the quorum's as this broker
/// last saw them (none on a single node).
fn cluster_defaults(broker: &Broker) -> BTreeMap<String, String> {
    match broker.cluster.get() {
        Some(c) => c.with_metadata(|m| m.broker_defaults.clone()),
        None => BTreeMap::new(),
    }
}

/// DescribeConfigs of the broker resource: every broker config (`""`, the
/// default broker resource: only the dynamic ones set), dynamic ones
/// writable.
fn describe_broker(
    broker: &Broker,
    default_resource: bool,
    version: i16,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<DescribeConfigsResourceResult> {
    // In a cluster `""` is the quorum's; a broker's own configs go over
    // those, each shown with its source.
    let cluster = cluster_defaults(broker);
    let own = broker.broker_configs.set();
    let set = if default_resource && broker.cluster.get().is_some() {
        cluster.clone()
    } else {
        let mut s = cluster.clone();
        s.extend(own.clone());
        s
    };
    let source_of = |n: &str| {
        if default_resource || (!own.contains_key(n) && cluster.contains_key(n)) {
            SOURCE_DYNAMIC_DEFAULT_BROKER
        } else {
            SOURCE_DYNAMIC_BROKER
        }
    };
    let mut rows: Vec<(String, String, i8, bool, i8)> = Vec::new();
    if !default_resource {
        for (n, v, kind) in broker_configs(broker) {
            let dynamic = crate::broker_configs::dynamic(n).is_some();
            let source = if set.contains_key(n) {
                source_of(n)
            } else {
                SOURCE_STATIC_BROKER
            };
            rows.push((n.to_string(), v, source, !dynamic, kind as i8));
        }
    }
    for d in crate::broker_configs::DYNAMIC {
        if rows.iter().any(|r| r.0 == d.name) {
            continue;
        }
        match set.get(d.name) {
            Some(v) => rows.push((
                d.name.to_string(),
                v.clone(),
                source_of(d.name),
                false,
                d.kind,
            )),
            None if default_resource => {}
            None => rows.push((
                d.name.to_string(),
                String::new(),
                SOURCE_DEFAULT,
                false,
                d.kind,
            )),
        }
    }
    if default_resource {
        rows.retain(|r| set.contains_key(&r.0));
    }
    rows.into_iter()
        .filter(|r| wanted(&r.0))
        .map(|(n, v, source, read_only, kind)| {
            let value = if v.is_empty() && source == SOURCE_DEFAULT {
                None
            } else {
                Some(sb(v))
            };
            let mut c = DescribeConfigsResourceResult::default()
                .with_name(sb(n))
                .with_value(value)
                .with_read_only(read_only)
                .with_config_source(source);
            if version >= 3 {
                c = c.with_config_type(kind);
            }
            c
        })
        .collect()
}

/// The dynamic configs of the broker resource after an
/// IncrementalAlterConfigs' operations (SET and DELETE: none of them is a
/// list).
fn merged_broker_configs(
    broker: &Broker,
    r: &kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource,
) -> Result<BTreeMap<String, String>, (i16, String)> {
    let mut configs = if r.resource_name.is_empty() && broker.cluster.get().is_some() {
        cluster_defaults(broker)
    } else {
        broker.broker_configs.set()
    };
    for c in &r.configs {
        let name = c.name.to_string();
        match (c.config_operation, c.value.as_ref()) {
            (0, Some(v)) => {
                configs.insert(name, v.to_string());
            }
            (1, _) => {
                configs.remove(&name);
            }
            (0, None) => {
                return Err((errors::INVALID_CONFIG, format!("{name}: SET needs a value")))
            }
            (2 | 3, _) => {
                return Err((
                    errors::INVALID_CONFIG,
                    format!("{name} is not a list: APPEND and SUBTRACT do not apply"),
                ))
            }
            (op, _) => return Err((errors::INVALID_REQUEST, format!("unknown operation {op}"))),
        }
    }
    Ok(configs)
}

/// Sets the dynamic configs of the broker resource `name` to `configs`:
/// this broker's id, or `""` on a single node, kept in the data dir and
/// applied at once; `""` in a cluster through the quorum, which every
/// broker applies.
async fn alter_broker(
    broker: &Broker,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (i16, Option<StrBytes>)> {
    let invalid = |code, msg: String| Err((code, Some(sb(msg))));
    if !name.is_empty() && name != broker.node_id().to_string() {
        return invalid(errors::INVALID_REQUEST, format!("unknown broker '{name}'"));
    }
    let described = broker_configs(broker);
    let read_only = |n: &str| described.iter().any(|(k, _, _)| *k == n);
    for (k, v) in &configs {
        if let Err(crate::broker_configs::Refused::Invalid(m)) =
            crate::broker_configs::check(k, v, &read_only)
        {
            return invalid(errors::INVALID_CONFIG, m);
        }
    }
    if let (true, Some(c)) = (name.is_empty(), broker.cluster.get()) {
        if validate_only {
            return Ok(());
        }
        let cmd = crate::cluster::Command::SetBrokerDefaults {
            configs: configs.clone(),
        };
        return super::quorum::propose_and_see(c, cmd, |m| m.broker_defaults == configs)
            .await
            .map_err(|(code, msg)| (code, Some(sb(msg))));
    }
    match broker
        .broker_configs
        .replace(configs, &broker.topics, validate_only)
    {
        Ok(()) => Ok(()),
        Err(
            crate::broker_configs::Refused::Invalid(m) | crate::broker_configs::Refused::Storage(m),
        ) => {
            tracing::error!(error = %m, "failed to keep the dynamic broker configs");
            invalid(errors::KAFKA_STORAGE_ERROR, m)
        }
    }
}

/// Creates the retry companions of a topic whose configs now enable retries.
fn companions_after_alter(broker: &Broker, topic: &str, validate_only: bool) {
    if validate_only {
        return;
    }
    if let Err(e) = crate::retry::sync_companions(&broker.topics, topic) {
        tracing::error!(topic, error = %e, "failed to create retry companions");
    }
}
