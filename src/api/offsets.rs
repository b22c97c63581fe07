//! ListOffsets (earliest, latest, by timestamp, max timestamp) and
//! DeleteRecords.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};

use super::authz::take_topics;
use super::errors;
use super::route::{kind, row, Api, Cx, Handled, Row, Verdict};
use crate::broker::Broker;
use crate::log::PartitionLog;
use crate::security::acl::Operation;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[row::<ListOffsets>(), row::<DeleteRecords>()];

/// Topics refused, with their partitions.
type Refused = Vec<(TopicName, Vec<i32>)>;

/// ListOffsets: earliest, latest, by timestamp, max timestamp.
pub struct ListOffsets;

impl Api for ListOffsets {
    kind!(ListOffsets, ListOffsetsRequest, ListOffsetsResponse);
    const VERSIONS: (i16, i16) = (1, 8);
    type Denied = Refused;

    fn authorize(cx: Cx<'_>, r: &mut ListOffsetsRequest) -> Verdict<ListOffsetsResponse, Refused> {
        Verdict::Proceed(take_topics(
            &mut r.topics,
            |t| cx.topic(Operation::Describe, t.name.as_str()),
            |t| &t.name,
            |t| t.partitions.iter().map(|p| p.partition_index).collect(),
        ))
    }

    fn deny(_cx: Cx<'_>, resp: &mut ListOffsetsResponse, denied: Refused) {
        for (name, parts) in denied {
            let code = errors::TOPIC_AUTHORIZATION_FAILED;
            let parts = parts.into_iter().map(|p| offset_failed(p, code)).collect();
            resp.topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(name)
                    .with_partitions(parts),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: ListOffsetsRequest) -> Handled<ListOffsetsResponse> {
        Handled::Now(list_offsets(cx.broker, req, cx.version))
    }

    fn errors(r: &ListOffsetsResponse, out: &mut Vec<i16>) {
        for t in &r.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    fn throttle(r: &mut ListOffsetsResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// DeleteRecords: moves partitions' log start offsets forward.
pub struct DeleteRecords;

impl Api for DeleteRecords {
    kind!(DeleteRecords, DeleteRecordsRequest, DeleteRecordsResponse);
    const VERSIONS: (i16, i16) = (0, 2);
    type Denied = Refused;

    fn authorize(
        cx: Cx<'_>,
        r: &mut DeleteRecordsRequest,
    ) -> Verdict<DeleteRecordsResponse, Refused> {
        Verdict::Proceed(take_topics(
            &mut r.topics,
            |t| cx.topic(Operation::Delete, t.name.as_str()),
            |t| &t.name,
            |t| t.partitions.iter().map(|p| p.partition_index).collect(),
        ))
    }

    fn deny(_cx: Cx<'_>, resp: &mut DeleteRecordsResponse, denied: Refused) {
        for (name, parts) in denied {
            let code = errors::TOPIC_AUTHORIZATION_FAILED;
            let parts = parts.into_iter().map(|p| delete_failed(p, code)).collect();
            resp.topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(name)
                    .with_partitions(parts),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: DeleteRecordsRequest) -> Handled<DeleteRecordsResponse> {
        Handled::Now(delete_records(cx.broker, req).await)
    }

    fn errors(r: &DeleteRecordsResponse, out: &mut Vec<i16>) {
        for t in &r.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }
}

/// Waits until the in-sync replicas' lowest log start reaches `low`, up to
/// `timeout`; `None` after it, or when the leadership ends.
async fn replicated_low(
    l: &crate::replicas::Leadership,
    low: i64,
    timeout: std::time::Duration,
) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if l.is_deposed() {
            return None;
        }
        if l.low_watermark() >= low {
            return Some(low);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn offset_failed(partition: i32, code: i16) -> ListOffsetsPartitionResponse {
    ListOffsetsPartitionResponse::default()
        .with_partition_index(partition)
        .with_error_code(code)
        .with_offset(-1)
        .with_timestamp(-1)
}

fn delete_failed(partition: i32, code: i16) -> DeleteRecordsPartitionResult {
    DeleteRecordsPartitionResult::default()
        .with_partition_index(partition)
        .with_error_code(code)
        .with_low_watermark(-1)
}

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// The offset (and timestamp) a ListOffsets partition asks for; a
/// `read_committed` client's latest offset is the last stable offset.
fn lookup(log: &PartitionLog, ts: i64, committed: bool) -> Result<(i64, i64), i16> {
    match ts {
        LATEST if committed => Ok((log.last_stable_offset(), -1)),
        LATEST => Ok((log.high_watermark(), -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((log.log_start_offset(), -1)),
        LATEST_TIERED => Ok((-1, -1)),
        MAX_TIMESTAMP => Ok(log.max_timestamp_offset().map_or((-1, -1), |(o, t)| (o, t))),
        t if t >= 0 => Ok(log
            .offset_for_timestamp(t)
            .map_or((-1, -1), |(o, t)| (o, t))),
        _ => Err(errors::INVALID_REQUEST),
    }
}

/// ListOffsets for each requested partition.
fn list_offsets(
    broker: &Arc<Broker>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    // leader_epoch exists from v4 on.
    let epoch = if version >= 4 { 0 } else { -1 };
    let committed = version >= 2 && req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(t.name.0.as_str());
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let Some(log) = topic.as_ref().and_then(|x| x.partition(p.partition_index))
                    else {
                        return offset_failed(
                            p.partition_index,
                            errors::UNKNOWN_TOPIC_OR_PARTITION,
                        );
                    };
                    if let Some(code) = broker.not_leader(t.name.as_str(), p.partition_index) {
                        return offset_failed(p.partition_index, code);
                    }
                    let epoch = broker
                        .replicas
                        .leadership(t.name.as_str(), p.partition_index)
                        .map_or(epoch, |l| if version >= 4 { l.leader_epoch } else { -1 });
                    match lookup(&log, p.timestamp, committed) {
                        Ok((offset, ts)) => r
                            .with_offset(offset)
                            .with_timestamp(ts)
                            .with_leader_epoch(epoch),
                        Err(code) => offset_failed(p.partition_index, code),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// DeleteRecords: moves each partition's log start offset forward.
async fn delete_records(broker: &Arc<Broker>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::new();
    let wait = std::time::Duration::from_millis(req.timeout_ms.max(0) as u64);
    for t in req.topics {
        let topic = broker.topics.get(t.name.0.as_str());
        let mut parts = Vec::new();
        for p in &t.partitions {
            let r = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            let Some(log) = topic.as_ref().and_then(|x| x.partition(p.partition_index)) else {
                parts.push(delete_failed(
                    p.partition_index,
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                ));
                continue;
            };
            // In a cluster the leader moves the log start; its followers
            // follow it as they fetch.
            if let Some(code) = broker.not_leader(t.name.0.as_str(), p.partition_index) {
                parts.push(delete_failed(p.partition_index, code));
                continue;
            }
            let log2 = Arc::clone(&log);
            let offset = p.offset;
            let res = tokio::task::spawn_blocking(move || log2.delete_records_before(offset)).await;
            let leadership = broker
                .replicas
                .leadership(t.name.0.as_str(), p.partition_index);
            parts.push(match res {
                // In a cluster the answer waits, as Kafka's does, until
                // every in-sync replica has moved its log start too: a new
                // leader then never serves the deleted records again.
                Ok(Ok(low)) => match &leadership {
                    Some(l) => match replicated_low(l, low, wait).await {
                        Some(low) => r.with_low_watermark(low),
                        None => delete_failed(p.partition_index, errors::REQUEST_TIMED_OUT),
                    },
                    None => r.with_low_watermark(low),
                },
                Ok(Err(e)) => r
                    .with_error_code(errors::log_error_code(&e))
                    .with_low_watermark(log.log_start_offset()),
                Err(_) => delete_failed(p.partition_index, errors::KAFKA_STORAGE_ERROR),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
