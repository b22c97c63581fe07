//! `weir topics`: topic administration over the Kafka protocol, against any
//! Kafka-compatible broker.
//!
//! Exit codes: 0 done; 1 the broker refused (the Kafka error is printed by
//! name), authentication included; 2 bad arguments; 3 the broker could not
//! be reached (or the TLS handshake failed) or spoke nonsense.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

use super::args::{ClientArgs, TopicsAction, TopicsArgs};
use super::client::{error_name, Conn, Dialer, Refused, Security};

/// Topic resources in the config APIs.
const TOPIC_RESOURCE: i8 = 2;
const TIMEOUT_MS: i32 = 30_000;

/// What went wrong, and so the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The broker answered with a Kafka error: exit 1.
    Refused(String),
    /// Arguments that make no request: exit 2.
    Usage(String),
    /// No answer, or one that does not decode: exit 3.
    Broken(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast_ref::<Refused>() {
            Some(r) => Self::Refused(r.0.clone()),
            None => Self::Broken(e),
        }
    }
}

impl Failure {
    pub fn exit(self, what: &str) -> ExitCode {
        let (code, msg) = match self {
            Self::Refused(m) => (1, m),
            Self::Usage(m) => (2, m),
            Self::Broken(e) => (3, format!("{e:#}")),
        };
        eprintln!("weir {what}: {msg}");
        ExitCode::from(code)
    }
}

/// Fails with the Kafka error's name when `code` is not 0.
pub fn check(code: i16, what: &str, message: Option<&StrBytes>) -> Result<(), Failure> {
    if code == 0 {
        return Ok(());
    }
    let detail = message
        .map(|m| m.to_string())
        .filter(|m| !m.is_empty())
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    Err(Failure::Refused(format!(
        "{what}: {}{detail}",
        error_name(code)
    )))
}

/// Runs a tool's async body on a small runtime.
pub fn run_tool<F>(what: &str, f: F) -> ExitCode
where
    F: std::future::Future<Output = Result<Value, Failure>>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::Broken(e.into()).exit(what),
    };
    match rt.block_on(f) {
        Ok(Value::Null) => ExitCode::SUCCESS,
        Ok(v) => {
            println!(
                "{}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            );
            ExitCode::SUCCESS
        }
        Err(e) => e.exit(what),
    }
}

/// `weir topics`.
pub fn main(args: TopicsArgs) -> ExitCode {
    run_tool("topics", run(args))
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn pairs(list: &[String]) -> Result<Vec<(String, String)>, Failure> {
    list.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Failure::Usage(format!("{kv:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// Left-aligned columns, two spaces apart.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(head.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// Metadata of some topics (all when `None`).
pub async fn metadata(c: &mut Conn, topics: Option<&[&str]>) -> Result<MetadataResponse> {
    let v = c.version(ApiKey::Metadata, (1, 12)).await?;
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                .collect()
        }));
    c.call(ApiKey::Metadata, v, &req).await
}

/// A partition's offset at `ts` (-2 earliest, -1 latest, or a time), from
/// its leader.
pub async fn list_offsets(
    c: &mut Conn,
    topic: &str,
    partitions: &[i32],
    ts: i64,
) -> Result<BTreeMap<i32, Result<i64, Failure>>> {
    let v = c.version(ApiKey::ListOffsets, (1, 7)).await?;
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_timestamp(ts)
                    })
                    .collect(),
            )]);
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, v, &req).await?;
    let mut out = BTreeMap::new();
    for t in r.topics {
        for p in t.partitions {
            let o = check(
                p.error_code,
                &format!("{topic}/{}", p.partition_index),
                None,
            )
            .map(|()| p.offset);
            out.insert(p.partition_index, o);
        }
    }
    Ok(out)
}

/// A topic's partitions by their leader's node id (partitions without a
/// leader are left out).
pub fn by_leader(t: &MetadataResponseTopic) -> BTreeMap<i32, Vec<i32>> {
    let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in t.partitions.iter().filter(|p| p.leader_id.0 >= 0) {
        out.entry(p.leader_id.0)
            .or_default()
            .push(p.partition_index);
    }
    out
}

/// Connections to the brokers that lead partitions, made when first needed.
pub struct Leaders {
    dialer: Dialer,
    addrs: BTreeMap<i32, String>,
    conns: BTreeMap<i32, Conn>,
}

impl Leaders {
    pub fn new(md: &MetadataResponse, dialer: &Dialer) -> Self {
        Self {
            dialer: dialer.clone(),
            addrs: md
                .brokers
                .iter()
                .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
                .collect(),
            conns: BTreeMap::new(),
        }
    }

    pub async fn get(&mut self, leader: i32) -> Result<&mut Conn> {
        if !self.conns.contains_key(&leader) {
            let addr = self
                .addrs
                .get(&leader)
                .ok_or_else(|| anyhow!("no address for broker {leader}"))?;
            let c = self.dialer.connect(addr).await?;
            self.conns.insert(leader, c);
        }
        self.conns
            .get_mut(&leader)
            .ok_or_else(|| anyhow!("no connection to broker {leader}"))
    }
}

/// The connection settings of the tools' flags.
///
/// # Errors
/// Settings that make no connection (exit 2).
pub fn dialer(a: &ClientArgs) -> Result<Dialer, Failure> {
    Dialer::new(
        "weir-tools",
        &Security {
            protocol: a.security_protocol.clone(),
            mechanism: a.sasl_mechanism.clone(),
            username: a.sasl_username.clone(),
            password: a.sasl_password.clone(),
            tls_ca: a.tls_ca.clone(),
            tls_cert: a.tls_cert.clone(),
            tls_key: a.tls_key.clone(),
        },
    )
    .map_err(|e| Failure::Usage(format!("{e:#}")))
}

async fn run(args: TopicsArgs) -> Result<Value, Failure> {
    let json = args.client.json;
    let dialer = dialer(&args.client)?;
    let mut c = dialer.connect_any(&args.client.bootstrap).await?;
    match args.action {
        TopicsAction::List { internal } => {
            let md = metadata(&mut c, None).await?;
            let mut rows = Vec::new();
            for t in &md.topics {
                if t.is_internal && !internal {
                    continue;
                }
                let n = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                let rf = t.partitions.first().map_or(0, |p| p.replica_nodes.len());
                rows.push((n, t.partitions.len(), rf, t.is_internal));
            }
            rows.sort();
            if json {
                return Ok(Value::Array(
                    rows.iter()
                        .map(|(n, p, rf, i)| {
                            json!({"name": n, "partitions": p, "replication_factor": rf, "internal": i})
                        })
                        .collect(),
                ));
            }
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(n, p, rf, _)| vec![n, p.to_string(), rf.to_string()])
                .collect();
            Ok(Value::String(table(
                &["TOPIC", "PARTITIONS", "REPLICATION"],
                &rows,
            )))
        }
        TopicsAction::Describe { name: topic } => describe(&mut c, &dialer, &topic, json).await,
        TopicsAction::Create {
            name: topic,
            partitions,
            replication_factor,
            configs,
        } => {
            let configs = pairs(&configs)?;
            let v = c.version(ApiKey::CreateTopics, (2, 5)).await?;
            let req = CreateTopicsRequest::default()
                .with_timeout_ms(TIMEOUT_MS)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name(&topic))
                    .with_num_partitions(partitions.unwrap_or(-1))
                    .with_replication_factor(replication_factor.unwrap_or(-1))
                    .with_configs(
                        configs
                            .into_iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_string(k))
                                    .with_value(Some(StrBytes::from_string(v)))
                            })
                            .collect(),
                    )]);
            let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, v, &req).await?;
            let t = r
                .topics
                .first()
                .ok_or_else(|| anyhow!("empty CreateTopics answer"))?;
            check(t.error_code, &topic, t.error_message.as_ref())?;
            Ok(if json {
                json!({"name": topic, "created": true, "partitions": t.num_partitions, "replication_factor": t.replication_factor})
            } else {
                Value::String(format!("created topic {topic}"))
            })
        }
        TopicsAction::AlterConfig {
            name: topic,
            set,
            delete,
        } => {
            let set = pairs(&set)?;
            if set.is_empty() && delete.is_empty() {
                return Err(Failure::Usage(
                    "give --set KEY=VALUE or --delete KEY".into(),
                ));
            }
            let mut configs: Vec<AlterableConfig> = set
                .into_iter()
                .map(|(k, v)| {
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(k))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_string(v)))
                })
                .collect();
            configs.extend(delete.into_iter().map(|k| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k))
                    .with_config_operation(1)
            }));
            let v = c.version(ApiKey::IncrementalAlterConfigs, (0, 1)).await?;
            let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(StrBytes::from_string(topic.clone()))
                    .with_configs(configs),
            ]);
            let r: IncrementalAlterConfigsResponse =
                c.call(ApiKey::IncrementalAlterConfigs, v, &req).await?;
            for res in &r.responses {
                check(res.error_code, &topic, res.error_message.as_ref())?;
            }
            Ok(if json {
                json!({"name": topic, "altered": true})
            } else {
                Value::String(format!("altered the configs of {topic}"))
            })
        }
        TopicsAction::AddPartitions { name: topic, total } => {
            let v = c.version(ApiKey::CreatePartitions, (0, 2)).await?;
            let req = CreatePartitionsRequest::default()
                .with_timeout_ms(TIMEOUT_MS)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name(&topic))
                    .with_count(total)]);
            let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, v, &req).await?;
            for res in &r.results {
                check(res.error_code, &topic, res.error_message.as_ref())?;
            }
            Ok(if json {
                json!({"name": topic, "partitions": total})
            } else {
                Value::String(format!("{topic} has {total} partitions"))
            })
        }
        TopicsAction::Delete { name: topic } => {
            let v = c.version(ApiKey::DeleteTopics, (1, 5)).await?;
            let req = DeleteTopicsRequest::default()
                .with_timeout_ms(TIMEOUT_MS)
                .with_topic_names(vec![name(&topic)]);
            let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, v, &req).await?;
            for res in &r.responses {
                check(res.error_code, &topic, res.error_message.as_ref())?;
            }
            Ok(if json {
                json!({"name": topic, "deleted": true})
            } else {
                Value::String(format!("deleted topic {topic}"))
            })
        }
        TopicsAction::DeleteRecords {
            name: topic,
            partition,
            before,
        } => {
            let md = metadata(&mut c, Some(&[&topic])).await?;
            let t = md
                .topics
                .first()
                .ok_or_else(|| anyhow!("empty Metadata answer"))?;
            check(t.error_code, &topic, None)?;
            let leader = t
                .partitions
                .iter()
                .find(|p| p.partition_index == partition)
                .map(|p| p.leader_id.0)
                .ok_or_else(|| Failure::Refused(format!("{topic} has no partition {partition}")))?;
            let mut leaders = Leaders::new(&md, &dialer);
            let lc = leaders.get(leader).await?;
            let v = lc.version(ApiKey::DeleteRecords, (0, 2)).await?;
            let req = DeleteRecordsRequest::default()
                .with_timeout_ms(TIMEOUT_MS)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(name(&topic))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(partition)
                        .with_offset(before)])]);
            let r: DeleteRecordsResponse = lc.call(ApiKey::DeleteRecords, v, &req).await?;
            let p = r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .next()
                .ok_or_else(|| anyhow!("empty DeleteRecords answer"))?;
            check(p.error_code, &format!("{topic}/{partition}"), None)?;
            Ok(if json {
                json!({"name": topic, "partition": partition, "log_start_offset": p.low_watermark})
            } else {
                Value::String(format!(
                    "{topic}/{partition} now starts at offset {}",
                    p.low_watermark
                ))
            })
        }
    }
}

async fn describe(
    c: &mut Conn,
    dialer: &Dialer,
    topic: &str,
    json: bool,
) -> Result<Value, Failure> {
    let md = metadata(c, Some(&[topic])).await?;
    let t = md
        .topics
        .first()
        .ok_or_else(|| anyhow!("empty Metadata answer"))?;
    check(t.error_code, topic, None)?;
    // Offsets from each partition's leader.
    let mut leaders = Leaders::new(&md, dialer);
    let mut start = BTreeMap::new();
    let mut end = BTreeMap::new();
    for (leader, parts) in &by_leader(t) {
        let lc = leaders.get(*leader).await?;
        for (ts, into) in [(-2, &mut start), (-1, &mut end)] {
            for (p, o) in list_offsets(lc, topic, parts, ts).await? {
                if let Ok(o) = o {
                    into.insert(p, o);
                }
            }
        }
    }
    let v = c.version(ApiKey::DescribeConfigs, (1, 4)).await?;
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None)]);
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, v, &req).await?;
    let mut configs = BTreeMap::new();
    for res in &r.results {
        check(res.error_code, topic, res.error_message.as_ref())?;
        for cfg in &res.configs {
            // Source 1 is a topic's own setting (DYNAMIC_TOPIC_CONFIG).
            if cfg.config_source == 1 {
                let v = if cfg.is_sensitive {
                    "(sensitive)".to_string()
                } else {
                    cfg.value
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                };
                configs.insert(cfg.name.to_string(), v);
            }
        }
    }
    let ids = |v: &[BrokerId]| {
        v.iter()
            .map(|b| b.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut parts: Vec<_> = t.partitions.iter().collect();
    parts.sort_by_key(|p| p.partition_index);
    if json {
        let partitions: Vec<Value> = parts
            .iter()
            .map(|p| {
                json!({
                    "partition": p.partition_index,
                    "leader": p.leader_id.0,
                    "replicas": p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                    "isr": p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                    "log_start_offset": start.get(&p.partition_index),
                    "high_watermark": end.get(&p.partition_index),
                    "error": (p.error_code != 0).then(|| error_name(p.error_code)),
                })
            })
            .collect();
        return Ok(json!({
            "name": topic,
            "topic_id": t.topic_id.to_string(),
            "internal": t.is_internal,
            "partitions": partitions,
            "configs": configs,
        }));
    }
    let opt = |v: Option<&i64>| v.map_or_else(|| "-".to_string(), i64::to_string);
    let rows: Vec<Vec<String>> = parts
        .iter()
        .map(|p| {
            vec![
                p.partition_index.to_string(),
                p.leader_id.0.to_string(),
                ids(&p.replica_nodes),
                ids(&p.isr_nodes),
                opt(start.get(&p.partition_index)),
                opt(end.get(&p.partition_index)),
            ]
        })
        .collect();
    let mut out = format!(
        "topic {topic}  id {}  partitions {}\n\n{}",
        t.topic_id,
        parts.len(),
        table(
            &[
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "LOG-START",
                "HIGH-WATERMARK"
            ],
            &rows
        )
    );
    if !configs.is_empty() {
        let rows: Vec<Vec<String>> = configs.into_iter().map(|(k, v)| vec![k, v]).collect();
        out.push_str("\n\n");
        out.push_str(&table(&["CONFIG", "VALUE"], &rows));
    }
    Ok(Value::String(out))
}
