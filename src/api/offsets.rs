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
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
};

use super::errors;
use crate::broker::Broker;
use crate::log::PartitionLog;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

fn lookup(log: &PartitionLog, ts: i64) -> Result<(i64, i64), i16> {
    match ts {
        LATEST => Ok((log.end_offset(), -1)),
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
pub fn list_offsets(
    broker: &Arc<Broker>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    // leader_epoch exists from v4 on.
    let epoch = if version >= 4 { 0 } else { -1 };
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
                        return r
                            .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_offset(-1)
                            .with_timestamp(-1);
                    };
                    match lookup(&log, p.timestamp) {
                        Ok((offset, ts)) => r
                            .with_offset(offset)
                            .with_timestamp(ts)
                            .with_leader_epoch(epoch),
                        Err(code) => r.with_error_code(code).with_offset(-1).with_timestamp(-1),
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
pub async fn delete_records(
    broker: &Arc<Broker>,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let topic = broker.topics.get(t.name.0.as_str());
        let mut parts = Vec::new();
        for p in &t.partitions {
            let r = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            let Some(log) = topic.as_ref().and_then(|x| x.partition(p.partition_index)) else {
                parts.push(
                    r.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                        .with_low_watermark(-1),
                );
                continue;
            };
            let log2 = Arc::clone(&log);
            let offset = p.offset;
            let res = tokio::task::spawn_blocking(move || log2.delete_records_before(offset)).await;
            parts.push(match res {
                Ok(Ok(low)) => r.with_low_watermark(low),
                Ok(Err(e)) => r
                    .with_error_code(errors::log_error_code(&e))
                    .with_low_watermark(log.log_start_offset()),
                Err(_) => r
                    .with_error_code(errors::KAFKA_STORAGE_ERROR)
                    .with_low_watermark(-1),
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
