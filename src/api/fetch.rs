//! Fetch: whole batches served from the mapped segments, with the
//! max_wait_ms / min_bytes long poll, max_bytes and partition_max_bytes (and
//! at least one batch even when it is larger than both, as KIP-74 says).
//!
//! A partition answered with an error carries an empty record set, never a
//! null one: librdkafka fails to parse a null set and drops the whole
//! response, so it would never see the error (and never reset an
//! out-of-range offset).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use uuid::Uuid;

use super::authz::split;
use super::errors;
use super::route::{kind, row, Api, Cx, Handled, Row, Verdict};
use crate::broker::{Broker, Phase};
use crate::log::batch::{BatchHeader, HEADER_LEN};
use crate::log::{LogError, PartitionLog};
use crate::security::acl::Operation;
use crate::security::quotas::QuotaKind;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[row::<Fetch>()];

/// Fetch: records from the mapped segments, with the long poll.
pub struct Fetch;

impl Api for Fetch {
    kind!(Fetch, FetchRequest, FetchResponse);
    const VERSIONS: (i16, i16) = (4, 13);
    const WAITS: bool = true;
    type Denied = Vec<(TopicName, Uuid, Vec<i32>)>;

    fn authorize(cx: Cx<'_>, r: &mut FetchRequest) -> Verdict<FetchResponse, Self::Denied> {
        let name_of = |t: &FetchTopic| -> Option<String> {
            if cx.version >= 13 {
                cx.broker
                    .topics
                    .get_by_id(t.topic_id)
                    .map(|x| x.name.clone())
            } else {
                Some(t.topic.to_string())
            }
        };
        // Unknown ids are left to the handler (UNKNOWN_TOPIC_ID).
        let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
            name_of(t).is_none_or(|n| cx.topic(Operation::Read, &n))
        });
        r.topics = keep;
        let denied = refused.into_iter().map(|t| {
            let parts = t.partitions.iter().map(|p| p.partition).collect();
            (t.topic, t.topic_id, parts)
        });
        Verdict::Proceed(denied.collect())
    }

    fn deny(_cx: Cx<'_>, resp: &mut FetchResponse, denied: Self::Denied) {
        for (name, id, parts) in denied {
            let code = errors::TOPIC_AUTHORIZATION_FAILED;
            resp.responses.push(
                FetchableTopicResponse::default()
                    .with_topic(name)
                    .with_topic_id(id)
                    .with_partitions(parts.into_iter().map(|p| failed(p, code)).collect()),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: FetchRequest) -> Handled<FetchResponse> {
        Handled::Now(handle(cx.broker, req, cx.version).await)
    }

    fn errors(r: &FetchResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
        for t in &r.responses {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    fn throttle(r: &mut FetchResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }

    fn metered(_request_len: usize, r: Option<&FetchResponse>) -> Option<(QuotaKind, u64)> {
        let bytes: usize = r?
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .sum();
        Some((QuotaKind::Fetch, bytes as u64))
    }
}

/// A partition answered with `code` and no records (an empty set, never a
/// null one).
fn failed(partition: i32, code: i16) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()))
}

/// Longest long-poll honoured, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

struct Built {
    resp: FetchResponse,
    bytes: usize,
    error: bool,
}

fn build(broker: &Broker, req: &FetchRequest, version: i16) -> Built {
    let max_bytes = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    let mut total = 0usize;
    let mut error = false;
    let committed = req.isolation_level == 1;
    let mut topics = Vec::with_capacity(req.topics.len());
    for ft in &req.topics {
        let topic = if version >= 13 {
            broker.topics.get_by_id(ft.topic_id)
        } else {
            broker.topics.get(ft.topic.0.as_str())
        };
        let unknown = if version >= 13 {
            errors::UNKNOWN_TOPIC_ID
        } else {
            errors::UNKNOWN_TOPIC_OR_PARTITION
        };
        let mut parts = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let pd = PartitionData::default().with_partition_index(fp.partition);
            let Some(log) = topic.as_ref().and_then(|t| t.partition(fp.partition)) else {
                error = true;
                parts.push(failed(fp.partition, unknown));
                continue;
            };
            if let Some(code) = topic
                .as_ref()
                .and_then(|t| broker.not_leader(&t.name, fp.partition))
            {
                error = true;
                parts.push(failed(fp.partition, code));
                continue;
            }
            let limit =
                (fp.partition_max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
            let min_one = total == 0;
            let read = if committed {
                log.read_committed(fp.fetch_offset, limit, min_one)
            } else {
                log.read(fp.fetch_offset, limit, min_one)
            };
            match read {
                Ok(r) => {
                    total += r.records.len();
                    // read_committed clients learn the aborted transactions
                    // among the records (they drop those records).
                    let aborted = committed.then(|| {
                        r.aborted
                            .iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(a.producer_id))
                                    .with_first_offset(a.first_offset)
                            })
                            .collect()
                    });
                    parts.push(
                        pd.with_high_watermark(r.high_watermark)
                            .with_last_stable_offset(r.last_stable_offset)
                            .with_log_start_offset(r.log_start_offset)
                            .with_aborted_transactions(aborted)
                            .with_records(Some(r.records)),
                    );
                }
                Err(e) => {
                    error = true;
                    let code = errors::log_error_code(&e);
                    if !matches!(e, LogError::OffsetOutOfRange { .. }) {
                        tracing::error!(partition = fp.partition, error = %e, "fetch failed");
                    }
                    parts.push(
                        pd.with_error_code(code)
                            .with_high_watermark(log.high_watermark())
                            .with_last_stable_offset(log.last_stable_offset())
                            .with_log_start_offset(log.log_start_offset())
                            .with_records(Some(Bytes::new())),
                    );
                }
            }
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(ft.topic.clone())
                .with_topic_id(topic.as_ref().map_or(ft.topic_id, |t| t.id))
                .with_partitions(parts),
        );
    }
    Built {
        resp: FetchResponse::default().with_responses(topics),
        bytes: total,
        error,
    }
}

/// Counts the records and bytes a response carries, per topic.
fn count_out(broker: &Broker, resp: &FetchResponse) {
    for t in &resp.responses {
        let name = if t.topic.0.is_empty() {
            broker.topics.get_by_id(t.topic_id).map(|x| x.name.clone())
        } else {
            Some(t.topic.0.to_string())
        };
        let Some(name) = name else { continue };
        let mut bytes = 0u64;
        let mut records = 0u64;
        for p in &t.partitions {
            let Some(r) = &p.records else { continue };
            bytes += r.len() as u64;
            let mut pos = 0;
            while pos + HEADER_LEN <= r.len() {
                let Ok(h) = BatchHeader::parse(&r[pos..]) else {
                    break;
                };
                records += h.records_count.max(0) as u64;
                pos += h.total_len();
            }
        }
        if bytes > 0 {
            let c = broker.metrics.topic(&name);
            c.bytes_out.fetch_add(bytes, Ordering::Relaxed);
            c.records_out.fetch_add(records, Ordering::Relaxed);
        }
    }
}

/// Answers a fetch, waiting up to max_wait_ms for min_bytes to accumulate.
async fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> FetchResponse {
    if version >= 7 && req.session_id != 0 {
        return FetchResponse::default().with_error_code(errors::FETCH_SESSION_ID_NOT_FOUND);
    }
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let done = |built: &Built| {
        built.bytes >= min_bytes
            || built.error
            || tokio::time::Instant::now() >= deadline
            || broker.phase() == Phase::Draining
    };
    let built = build(broker, &req, version);
    if done(&built) {
        count_out(broker, &built.resp);
        return built.resp;
    }
    // A long poll: woken by appends to the partitions it asked for, not by
    // every append to the broker.
    let logs = requested_logs(broker, &req, version);
    loop {
        // Register for the wake-ups before looking, so no append is missed.
        let draining = broker.phase_changed.notified();
        tokio::pin!(draining);
        draining.as_mut().enable();
        let mut appended: Vec<_> = logs.iter().map(|l| Box::pin(l.next_append())).collect();
        for a in &mut appended {
            a.as_mut().enable();
        }
        let built = build(broker, &req, version);
        if done(&built) {
            count_out(broker, &built.resp);
            return built.resp;
        }
        let any_append = async move {
            if appended.is_empty() {
                std::future::pending::<()>().await;
            } else {
                futures::future::select_all(appended).await;
            }
        };
        tokio::select! {
            () = &mut draining => {}
            () = any_append => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The partitions a fetch asked for that exist.
fn requested_logs(broker: &Broker, req: &FetchRequest, version: i16) -> Vec<Arc<PartitionLog>> {
    let mut logs = Vec::new();
    for ft in &req.topics {
        let topic = if version >= 13 {
            broker.topics.get_by_id(ft.topic_id)
        } else {
            broker.topics.get(ft.topic.0.as_str())
        };
        let Some(topic) = topic else { continue };
        logs.extend(
            ft.partitions
                .iter()
                .filter_map(|fp| topic.partition(fp.partition)),
        );
    }
    logs
}
