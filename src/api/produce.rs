//! Produce: validate each partition's batch, append it, and answer once the
//! durability the request asked for (acks, `--fsync`) holds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};

use super::authz::split;
use super::errors;
use super::route::sb;
use super::route::{kind, row, Api, Cx, Handled, Row, Verdict};
use crate::broker::{now_ms, Broker};
use crate::config::FsyncPolicy;
use crate::log::{PartitionLog, SequenceCheck};
use crate::replicas::{Leadership, Unreplicated};
use crate::retry;
use crate::security::acl::{Operation, ResourceType};
use crate::security::quotas::QuotaKind;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[row::<Produce>()];

/// Produce: validate each partition's batch, append it, answer once the
/// durability asked for holds.
pub struct Produce;

impl Api for Produce {
    kind!(Produce, ProduceRequest, ProduceResponse);
    const VERSIONS: (i16, i16) = (3, 11);
    /// Partitions refused, with the code each is answered.
    type Denied = Vec<(TopicName, Vec<i32>, i16)>;

    fn authorize(cx: Cx<'_>, r: &mut ProduceRequest) -> Verdict<ProduceResponse, Self::Denied> {
        let parts = |t: &kafka_protocol::messages::produce_request::TopicProduceData| {
            t.partition_data.iter().map(|p| p.index).collect()
        };
        if let Some(tid) = &r.transactional_id {
            if !cx.can(
                Operation::Write,
                ResourceType::TransactionalId,
                tid.as_str(),
            ) {
                let code = errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
                let denied = r
                    .topic_data
                    .drain(..)
                    .map(|t| (t.name.clone(), parts(&t), code));
                return Verdict::Proceed(denied.collect());
            }
        }
        let (keep, refused) = split(std::mem::take(&mut r.topic_data), |t| {
            cx.topic(Operation::Write, t.name.as_str())
        });
        let mut denied: Self::Denied = refused
            .iter()
            .map(|t| (t.name.clone(), parts(t), errors::TOPIC_AUTHORIZATION_FAILED))
            .collect();
        // weir creates unknown topics on produce: that needs Create.
        let (keep, missing) = split(keep, |t| {
            cx.broker.topics.get(t.name.as_str()).is_some()
                || cx.broker.retry_route(t.name.as_str()).is_some()
                || cx.may_create(t.name.as_str())
        });
        denied.extend(
            missing
                .iter()
                .map(|t| (t.name.clone(), parts(t), errors::UNKNOWN_TOPIC_OR_PARTITION)),
        );
        r.topic_data = keep;
        Verdict::Proceed(denied)
    }

    fn deny(_cx: Cx<'_>, resp: &mut ProduceResponse, denied: Self::Denied) {
        for (name, parts, code) in denied {
            let parts = parts.into_iter().map(|p| failed(p, code)).collect();
            resp.responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(parts),
            );
        }
    }

    async fn handle(cx: Cx<'_>, req: ProduceRequest) -> Handled<ProduceResponse> {
        let (mut resp, flush) = append(cx.broker, req).await;
        if let (Some(r), Some(c), true) = (&mut resp, cx.broker.cluster.get(), cx.version >= 10) {
            leader_hints(c, cx.session.listener, r);
        }
        match (resp, flush) {
            (resp, Some(flush)) => Handled::After(
                resp,
                Box::new(move |mut resp| {
                    Box::pin(async move {
                        flush.wait(resp.as_mut()).await;
                        resp
                    })
                }),
            ),
            (Some(resp), None) => Handled::Now(resp),
            (None, None) => Handled::Silent,
        }
    }

    fn errors(r: &ProduceResponse, out: &mut Vec<i16>) {
        for t in &r.responses {
            out.extend(t.partition_responses.iter().map(|p| p.error_code));
        }
    }

    fn throttle(r: &mut ProduceResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }

    fn metered(request_len: usize, _r: Option<&ProduceResponse>) -> Option<(QuotaKind, u64)> {
        Some((QuotaKind::Produce, request_len as u64))
    }
}

/// KIP-467: the records a refused batch was refused for, by their place
/// in the batch (clients fail those records and may send the others again).
fn record_errors(
    e: &crate::log::LogError,
) -> Vec<kafka_protocol::messages::produce_response::BatchIndexAndErrorMessage> {
    use crate::log::batch::BatchError;
    use crate::log::LogError;
    use kafka_protocol::messages::produce_response::BatchIndexAndErrorMessage;
    let one = |index: u32, message: &str| {
        BatchIndexAndErrorMessage::default()
            .with_batch_index(i32::try_from(index).unwrap_or(i32::MAX))
            .with_batch_index_error_message(Some(sb(message)))
    };
    match e {
        LogError::InvalidBatch(BatchError::Record { index, reason }) => vec![one(*index, reason)],
        LogError::InvalidBatch(BatchError::Keyless(indices)) => indices
            .iter()
            .map(|i| one(*i, "Compacted topic cannot accept message without key."))
            .collect(),
        _ => Vec::new(),
    }
}

/// KIP-951: a partition answered `NOT_LEADER_OR_FOLLOWER` names its
/// current leader and epoch, and the response carries that broker's
/// address, so the client moves without asking for metadata first.
fn leader_hints(c: &crate::cluster::Cluster, listener: usize, resp: &mut ProduceResponse) {
    use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, NodeEndpoint};
    use kafka_protocol::messages::BrokerId;
    let mut endpoints = std::collections::BTreeSet::new();
    c.with_metadata(|m| {
        for t in &mut resp.responses {
            for p in &mut t.partition_responses {
                if p.error_code != errors::NOT_LEADER_OR_FOLLOWER {
                    continue;
                }
                let Some(state) = m.partition(t.name.as_str(), p.index) else {
                    continue;
                };
                let Some(leader) = state.leader else { continue };
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader as i32))
                    .with_leader_epoch(state.leader_epoch);
                endpoints.insert(leader);
            }
        }
        for id in endpoints {
            let Some(b) = m.brokers.get(&id) else {
                continue;
            };
            let (host, port) = b.endpoint(listener);
            resp.node_endpoints.push(
                NodeEndpoint::default()
                    .with_node_id(BrokerId(id as i32))
                    .with_host(sb(host.to_string()))
                    .with_port(port),
            );
        }
    });
}

/// The answer of a partition that was not appended to.
fn failed(index: i32, code: i16) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
}

/// Partitions a produce request appended to that must be on disk before it
/// is answered (`--fsync`).
pub struct Flush {
    parts: Vec<(Arc<PartitionLog>, i64, TopicName, i32)>,
    /// Appends whose high watermark must pass them (acks=all in a
    /// cluster), within the request's timeout.
    replicated: Vec<(Arc<Leadership>, i64, TopicName, i32)>,
    timeout: Duration,
}

impl Flush {
    /// Waits for every partition's fsync at once; each is shared with the
    /// other requests waiting on that partition (group commit). A partition
    /// whose fsync failed answers `KAFKA_STORAGE_ERROR` in `resp`.
    pub async fn wait(self, mut resp: Option<&mut ProduceResponse>) {
        let waits = self
            .parts
            .iter()
            .map(|(log, upto, _, _)| log.flush_to(*upto));
        let replicated = self
            .replicated
            .iter()
            .map(|(l, upto, _, _)| committed(l, *upto, self.timeout));
        let (results, replicated) = futures::future::join(
            futures::future::join_all(waits),
            futures::future::join_all(replicated),
        )
        .await;
        for (res, (_, _, name, index)) in results.into_iter().zip(&self.parts) {
            let Err(e) = res else { continue };
            tracing::error!(topic = %name.0, partition = index, error = %e, "fsync failed");
            fail(
                resp.as_deref_mut(),
                name,
                *index,
                errors::KAFKA_STORAGE_ERROR,
            );
        }
        for (res, (_, _, name, index)) in replicated.into_iter().zip(&self.replicated) {
            if let Err(code) = res {
                fail(resp.as_deref_mut(), name, *index, code);
            }
        }
    }
}

/// Waits for the high watermark: `REQUEST_TIMED_OUT` after the timeout,
/// `NOT_LEADER_OR_FOLLOWER` once the leadership ended.
async fn committed(l: &Leadership, upto: i64, timeout: Duration) -> Result<(), i16> {
    l.committed(upto, timeout).await.map_err(|e| match e {
        Unreplicated::Deposed => errors::NOT_LEADER_OR_FOLLOWER,
        Unreplicated::TimedOut => errors::REQUEST_TIMED_OUT,
    })
}

/// Marks a partition of the response failed with `code`.
fn fail(resp: Option<&mut ProduceResponse>, name: &TopicName, index: i32, code: i16) {
    let Some(resp) = resp else { return };
    for p in resp
        .responses
        .iter_mut()
        .filter(|t| t.name == *name)
        .flat_map(|t| t.partition_responses.iter_mut())
        .filter(|p| p.index == index)
    {
        p.error_code = code;
        p.base_offset = -1;
    }
}

/// Appends the request's batches. Returns the response (`None` for acks=0)
/// and, when `--fsync` asks for it, the fsyncs it must wait for before it is
/// sent: the append is done when this returns, so the connection can read
/// its next request while the fsync runs.
async fn append(
    broker: &Arc<Broker>,
    req: ProduceRequest,
) -> (Option<ProduceResponse>, Option<Flush>) {
    let acks = req.acks;
    let valid_acks = (-1..=1).contains(&acks);
    // Whether this request is answered only once its records are on disk.
    let must_sync = match broker.config.args.fsync {
        FsyncPolicy::Always => true,
        FsyncPolicy::AcksAll => acks == -1,
        FsyncPolicy::Never => false,
    };
    let now = now_ms();
    let mut to_flush: Vec<(Arc<PartitionLog>, i64, TopicName, i32)> = Vec::new();
    // acks=all appends that wait for the high watermark to pass them.
    let mut to_replicate: Vec<(Arc<Leadership>, i64, TopicName, i32)> = Vec::new();
    let timeout = Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0).max(1));
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for td in req.topic_data {
        let name = td.name.0.to_string();
        let topic = if valid_acks {
            broker.topic_or_create(&name, true)
        } else {
            Ok(None)
        };
        // A produce to a retry topic is a hand-back: held, not appended.
        let route = match &topic {
            Ok(Some(_)) => broker.retry_route(&name),
            _ => None,
        };
        // Counters only for topics that exist: label values stay bounded.
        let counters = match &topic {
            Ok(Some(_)) => Some(broker.metrics.topic(&name)),
            _ => None,
        };
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            let mut pr = failed(pd.index, errors::NONE);
            let log = match &topic {
                _ if !valid_acks => {
                    parts.push(pr.with_error_code(errors::INVALID_REQUIRED_ACKS));
                    continue;
                }
                Ok(Some(t)) => t.partition(pd.index),
                Ok(None) => None,
                Err(e) => {
                    parts.push(pr.with_error_code(errors::topic_error_code(e)));
                    continue;
                }
            };
            let Some(log) = log else {
                parts.push(pr.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let Some(records) = pd.records else {
                parts.push(pr.with_error_code(errors::INVALID_RECORD));
                continue;
            };
            // In a cluster only the partition's leader takes writes, and
            // acks=all needs min.insync.replicas in the ISR.
            let leadership = match broker.cluster.get() {
                None => None,
                Some(_) => match broker.replicas.leadership(&name, pd.index) {
                    None => {
                        parts.push(pr.with_error_code(errors::NOT_LEADER_OR_FOLLOWER));
                        continue;
                    }
                    Some(l) if acks == -1 && !l.enough_replicas() => {
                        parts.push(pr.with_error_code(errors::NOT_ENOUGH_REPLICAS));
                        continue;
                    }
                    Some(l) => Some(l),
                },
            };
            if let Some(route) = &route {
                let code = match crate::log::batch::BatchHeader::parse(&records) {
                    // A hand-back in a transaction waits for its end.
                    Ok(h) if h.is_transactional() => {
                        hold_in_transaction(broker, &name, pd.index, &log, records, &h).await
                    }
                    _ => {
                        hand_back(
                            broker, route, &name, pd.index, &log, records, must_sync, now,
                        )
                        .await
                    }
                };
                parts.push(
                    pr.with_error_code(code)
                        .with_log_start_offset(log.log_start_offset()),
                );
                continue;
            }
            // A transactional batch is appended only inside its open
            // transaction, which cannot end while it is appended.
            let txn = crate::log::batch::BatchHeader::parse(&records)
                .ok()
                .filter(|h| h.is_transactional());
            let appended = match txn {
                // In a cluster the partition's leader is seldom the
                // transaction's coordinator: the batch is taken as Kafka
                // before KIP-890 takes it (markers at a newer epoch still
                // refuse a fenced producer's late batches).
                Some(_) if broker.cluster.get().is_some() => Ok(log.append(&records, now)),
                Some(h) => {
                    broker
                        .txns
                        .with_open(h.producer_id, h.producer_epoch, &name, pd.index, || {
                            log.append(&records, now)
                        })
                }
                None => Ok(log.append(&records, now)),
            };
            let appended = match appended {
                Ok(r) => r,
                Err(code) => {
                    parts.push(
                        pr.with_error_code(code)
                            .with_log_start_offset(log.log_start_offset()),
                    );
                    continue;
                }
            };
            match appended {
                Ok(info) => {
                    if !info.duplicate {
                        if let Some(c) = &counters {
                            c.bytes_in
                                .fetch_add(records.len() as u64, Ordering::Relaxed);
                            c.records_in
                                .fetch_add(info.records.max(0) as u64, Ordering::Relaxed);
                        }
                    }
                    pr = pr
                        .with_base_offset(info.base_offset)
                        .with_log_append_time_ms(info.log_append_time)
                        .with_log_start_offset(log.log_start_offset());
                    if let Some(l) = &leadership {
                        if let Some(c) = broker.cluster.get() {
                            broker.replicas.appended(c.node_id(), &name, pd.index);
                        }
                        if acks == -1 && l.replicated() {
                            to_replicate.push((
                                Arc::clone(l),
                                info.last_offset + 1,
                                td.name.clone(),
                                pd.index,
                            ));
                        }
                    }
                    to_flush.push((
                        Arc::clone(&log),
                        info.last_offset + 1,
                        td.name.clone(),
                        pd.index,
                    ));
                    parts.push(pr);
                }
                Err(e) => {
                    let code = errors::log_error_code(&e);
                    if code == errors::KAFKA_STORAGE_ERROR {
                        tracing::error!(topic = %name, partition = pd.index, error = %e, "append failed");
                    } else {
                        tracing::debug!(topic = %name, partition = pd.index, error = %e, "produce refused");
                    }
                    parts.push(
                        pr.with_error_code(code)
                            .with_record_errors(record_errors(&e))
                            .with_error_message(Some(sb(e.to_string())))
                            .with_log_start_offset(log.log_start_offset()),
                    );
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(td.name)
                .with_partition_responses(parts),
        );
    }
    if !must_sync {
        to_flush.clear();
    }
    let flush = (!to_flush.is_empty() || !to_replicate.is_empty()).then_some(Flush {
        parts: to_flush,
        replicated: to_replicate,
        timeout,
    });
    if acks == 0 {
        return (None, flush);
    }
    (
        Some(ProduceResponse::default().with_responses(responses)),
        flush,
    )
}

/// Holds a transactional hand-back in its transaction until it ends (the
/// retry scheduler gets it if the transaction commits). A retried batch of
/// the producer is recognised by its sequence and not held twice.
async fn hold_in_transaction(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    log: &Arc<PartitionLog>,
    records: bytes::Bytes,
    h: &crate::log::batch::BatchHeader,
) -> i16 {
    let _serial = broker.retries.handback_lock.lock().await;
    match log.check_external(&records) {
        Ok((_, SequenceCheck::Duplicate(_))) => return errors::NONE,
        Ok((_, SequenceCheck::OutOfOrder)) => return errors::OUT_OF_ORDER_SEQUENCE_NUMBER,
        Ok((_, SequenceCheck::StaleEpoch)) => return errors::INVALID_PRODUCER_EPOCH,
        Ok((_, SequenceCheck::Append)) => {}
        Err(e) => return errors::log_error_code(&e),
    }
    let batch = crate::txn::HeldBatch {
        topic: topic.to_string(),
        partition,
        records,
    };
    match crate::replication::hold_in_transaction(broker, (h.producer_id, h.producer_epoch), batch)
        .await
    {
        errors::NONE => {
            log.record_external(h);
            errors::NONE
        }
        code => code,
    }
}

/// Holds a hand-back to a retry topic. Answers with base offset -1: the
/// records are not in the retry topic yet, and get their offsets when they
/// are delivered. A retried batch of an idempotent producer is recognised by
/// its sequence and not held twice.
#[allow(clippy::too_many_arguments)]
async fn hand_back(
    broker: &Arc<Broker>,
    route: &retry::RetryRoute,
    topic: &str,
    partition: i32,
    log: &Arc<PartitionLog>,
    records: bytes::Bytes,
    sync: bool,
    now: i64,
) -> i16 {
    let _serial = broker.retries.handback_lock.lock().await;
    let h = match log.check_external(&records) {
        Ok((_, SequenceCheck::Duplicate(_))) => return errors::NONE,
        Ok((_, SequenceCheck::OutOfOrder)) => return errors::OUT_OF_ORDER_SEQUENCE_NUMBER,
        Ok((_, SequenceCheck::StaleEpoch)) => return errors::INVALID_PRODUCER_EPOCH,
        Ok((h, SequenceCheck::Append)) => h,
        Err(e) => return errors::log_error_code(&e),
    };
    let b = Arc::clone(broker);
    let route = route.clone();
    let topic = topic.to_string();
    let out = crate::replication::appender(broker);
    let res = tokio::task::spawn_blocking(move || {
        b.retries.hand_back(
            (&b.topics, out.as_ref()),
            &route,
            &topic,
            partition,
            &records,
            sync,
            now,
        )
    })
    .await;
    match res {
        Ok(Ok(_)) => {
            log.record_external(&h);
            errors::NONE
        }
        Ok(Err(retry::RetryError::Decode(e))) => {
            tracing::debug!(error = %e, "undecodable hand-back");
            errors::CORRUPT_MESSAGE
        }
        Ok(Err(retry::RetryError::Storage(e))) => {
            let code = errors::log_error_code(&e);
            if code == errors::KAFKA_STORAGE_ERROR {
                tracing::error!(error = %e, "hand-back failed");
            }
            code
        }
        Ok(Err(retry::RetryError::Unavailable(e))) => {
            // Retriable: the producer sends the hand-back again.
            tracing::warn!(error = %e, "hand-back not journaled");
            errors::NOT_ENOUGH_REPLICAS
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "hand-back failed");
            errors::KAFKA_STORAGE_ERROR
        }
        Err(_) => errors::KAFKA_STORAGE_ERROR,
    }
}
