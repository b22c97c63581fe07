//! Transactions: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
//! TxnOffsetCommit, DescribeTransactions and ListTransactions, answered by
//! this broker's transaction coordinator ([`crate::txn`]).
//! InitProducerId with a transactional id is in `producer_ids`.
//!
//! In a cluster a transactional id's coordinator is the leader of its
//! partition of `__transaction_state` ([`crate::txn::partitions`]); the
//! others answer `NOT_COORDINATOR`.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{self, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use std::sync::Arc;

use futures::future::BoxFuture;

use super::errors;
use super::route::{kind, row, sb, tn, Api, Cx, Handled, Row, Verdict};
use crate::broker::{now_ms, Broker};
use crate::group::offsets::MAX_METADATA_BYTES;
use crate::group::Committed;
use crate::security::acl::{Operation, ResourceType};
use crate::txn::{self, Phase};

/// The APIs this family serves.
pub const ROWS: &[Row] = &[
    row::<AddPartitionsToTxn>(),
    row::<AddOffsetsToTxn>(),
    row::<EndTxn>(),
    row::<TxnOffsetCommit>(),
    row::<DescribeTransactions>(),
    row::<ListTransactions>(),
];

/// Whether the principal may write as the transactional id.
fn may_write(cx: Cx<'_>, id: &str) -> bool {
    cx.can(Operation::Write, ResourceType::TransactionalId, id)
}

/// The coordinator of `id` here, or the code to answer with.
async fn coordinator(cx: Cx<'_>, id: &str) -> Result<Arc<txn::Coordinator>, i16> {
    cx.broker.txn_coordinator(id).await
}

/// The code of a change of state, once it is held by the replicas (in a
/// cluster).
async fn settled(c: &txn::Coordinator, code: i16) -> i16 {
    if code != errors::NONE {
        return code;
    }
    c.settle().await.err().unwrap_or(errors::NONE)
}

/// AddPartitionsToTxn (client versions): partitions join the transaction.
pub struct AddPartitionsToTxn;

fn add_partitions_answer(
    req: &AddPartitionsToTxnRequest,
    code: impl Fn(&str) -> i16,
) -> AddPartitionsToTxnResponse {
    let results = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let c = code(t.name.as_str());
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(c)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

impl Api for AddPartitionsToTxn {
    kind!(
        AddPartitionsToTxn,
        AddPartitionsToTxnRequest,
        AddPartitionsToTxnResponse
    );
    const VERSIONS: (i16, i16) = (0, 3);
    type Denied = ();

    fn authorize(
        cx: Cx<'_>,
        r: &mut AddPartitionsToTxnRequest,
    ) -> Verdict<AddPartitionsToTxnResponse, ()> {
        if !may_write(cx, r.v3_and_below_transactional_id.as_str()) {
            return Verdict::Answer(add_partitions_answer(r, |_| {
                errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            }));
        }
        let refused: Vec<String> = r
            .v3_and_below_topics
            .iter()
            .filter(|t| !cx.topic(Operation::Write, t.name.as_str()))
            .map(|t| t.name.to_string())
            .collect();
        if refused.is_empty() {
            return Verdict::Proceed(());
        }
        Verdict::Answer(add_partitions_answer(r, |t| {
            if refused.iter().any(|x| x == t) {
                errors::TOPIC_AUTHORIZATION_FAILED
            } else {
                errors::OPERATION_NOT_ATTEMPTED
            }
        }))
    }

    fn deny(_cx: Cx<'_>, _r: &mut AddPartitionsToTxnResponse, _denied: ()) {}

    async fn handle(
        cx: Cx<'_>,
        req: AddPartitionsToTxnRequest,
    ) -> Handled<AddPartitionsToTxnResponse> {
        let c = match coordinator(cx, req.v3_and_below_transactional_id.as_str()).await {
            Ok(c) => c,
            Err(code) => return Handled::Now(add_partitions_answer(&req, |_| code)),
        };
        let parts: Vec<(String, i32)> = req
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
            .collect();
        let broker = cx.broker;
        // In a cluster the coordinator may hold no replica of a partition:
        // the quorum's metadata says which exist.
        let known = |t: &str, p: i32| {
            !crate::topics::is_reserved(t)
                && match broker.cluster.get() {
                    Some(c) => c.with_metadata(|m| {
                        m.topics.get(t).is_some_and(|x| {
                            usize::try_from(p).is_ok_and(|p| p < x.partitions.len())
                        })
                    }),
                    None => broker
                        .topics
                        .get(t)
                        .is_some_and(|x| x.partition(p).is_some()),
                }
        };
        let results = c.add_partitions(
            req.v3_and_below_transactional_id.as_str(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &parts,
            known,
            now_ms(),
        );
        let new_code = cx.version >= 2;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            out.push(settled(&c, txn::code_of(r, new_code)).await);
        }
        let mut codes = out.into_iter();
        let topics = req
            .v3_and_below_topics
            .iter()
            .map(|t| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(
                                        codes.next().unwrap_or(errors::UNKNOWN_SERVER_ERROR),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        Handled::Now(
            AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics),
        )
    }

    fn errors(r: &AddPartitionsToTxnResponse, out: &mut Vec<i16>) {
        for t in &r.results_by_topic_v3_and_below {
            out.extend(
                t.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code),
            );
        }
    }

    fn throttle(r: &mut AddPartitionsToTxnResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// AddOffsetsToTxn: the transaction will commit a group's offsets.
pub struct AddOffsetsToTxn;

impl Api for AddOffsetsToTxn {
    kind!(
        AddOffsetsToTxn,
        AddOffsetsToTxnRequest,
        AddOffsetsToTxnResponse
    );
    const VERSIONS: (i16, i16) = (0, 3);
    type Denied = ();

    fn authorize(
        cx: Cx<'_>,
        r: &mut AddOffsetsToTxnRequest,
    ) -> Verdict<AddOffsetsToTxnResponse, ()> {
        let code = if !may_write(cx, r.transactional_id.as_str()) {
            errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        } else if !cx.group(Operation::Read, r.group_id.as_str()) {
            errors::GROUP_AUTHORIZATION_FAILED
        } else {
            return Verdict::Proceed(());
        };
        Verdict::Answer(AddOffsetsToTxnResponse::default().with_error_code(code))
    }

    fn deny(_cx: Cx<'_>, _r: &mut AddOffsetsToTxnResponse, _denied: ()) {}

    async fn handle(cx: Cx<'_>, req: AddOffsetsToTxnRequest) -> Handled<AddOffsetsToTxnResponse> {
        let code = match coordinator(cx, req.transactional_id.as_str()).await {
            Ok(c) => {
                let r = c.add_offsets(
                    req.transactional_id.as_str(),
                    req.producer_id.0,
                    req.producer_epoch,
                    req.group_id.as_str(),
                    now_ms(),
                );
                settled(&c, txn::code_of(r, cx.version >= 2)).await
            }
            Err(code) => code,
        };
        Handled::Now(AddOffsetsToTxnResponse::default().with_error_code(code))
    }

    fn errors(r: &AddOffsetsToTxnResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }

    fn throttle(r: &mut AddOffsetsToTxnResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// EndTxn: commit or abort.
pub struct EndTxn;

impl Api for EndTxn {
    kind!(EndTxn, EndTxnRequest, EndTxnResponse);
    const VERSIONS: (i16, i16) = (0, 3);
    type Denied = ();

    fn authorize(cx: Cx<'_>, r: &mut EndTxnRequest) -> Verdict<EndTxnResponse, ()> {
        if may_write(cx, r.transactional_id.as_str()) {
            return Verdict::Proceed(());
        }
        Verdict::Answer(
            EndTxnResponse::default()
                .with_error_code(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        )
    }

    fn deny(_cx: Cx<'_>, _r: &mut EndTxnResponse, _denied: ()) {}

    async fn handle(cx: Cx<'_>, req: EndTxnRequest) -> Handled<EndTxnResponse> {
        let code = match coordinator(cx, req.transactional_id.as_str()).await {
            Ok(c) => {
                let r = c
                    .end_txn(
                        participants(cx.broker).as_ref(),
                        req.transactional_id.as_str(),
                        req.producer_id.0,
                        req.producer_epoch,
                        req.committed,
                        now_ms(),
                    )
                    .await;
                txn::code_of(r, cx.version >= 2)
            }
            Err(code) => code,
        };
        Handled::Now(
            EndTxnResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
    }

    fn errors(r: &EndTxnResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }

    fn throttle(r: &mut EndTxnResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// TxnOffsetCommit: offsets committed when the transaction commits.
pub struct TxnOffsetCommit;

fn txn_commit_answer(req: &TxnOffsetCommitRequest, code: i16) -> TxnOffsetCommitResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

impl Api for TxnOffsetCommit {
    kind!(
        TxnOffsetCommit,
        TxnOffsetCommitRequest,
        TxnOffsetCommitResponse
    );
    const VERSIONS: (i16, i16) = (0, 3);
    type Denied = ();

    fn authorize(
        cx: Cx<'_>,
        r: &mut TxnOffsetCommitRequest,
    ) -> Verdict<TxnOffsetCommitResponse, ()> {
        let code = if !may_write(cx, r.transactional_id.as_str()) {
            errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        } else if !cx.group(Operation::Read, r.group_id.as_str()) {
            errors::GROUP_AUTHORIZATION_FAILED
        } else if r
            .topics
            .iter()
            .any(|t| !cx.topic(Operation::Read, t.name.as_str()))
        {
            errors::TOPIC_AUTHORIZATION_FAILED
        } else {
            return Verdict::Proceed(());
        };
        Verdict::Answer(txn_commit_answer(r, code))
    }

    fn deny(_cx: Cx<'_>, _r: &mut TxnOffsetCommitResponse, _denied: ()) {}

    async fn handle(cx: Cx<'_>, req: TxnOffsetCommitRequest) -> Handled<TxnOffsetCommitResponse> {
        let broker = cx.broker;
        let group = req.group_id.as_str();
        // Sent to the group's coordinator, as OffsetCommit is.
        if let Err(code) = broker.coordinates(group).await {
            return Handled::Now(txn_commit_answer(&req, code));
        }
        // KIP-447: a member's generation is checked as for OffsetCommit.
        let code = broker.groups.check_commit(
            group,
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
        );
        if code != errors::NONE {
            return Handled::Now(txn_commit_answer(&req, code));
        }
        if req.topics.iter().any(|t| {
            t.partitions.iter().any(|p| {
                p.committed_metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
            })
        }) {
            return Handled::Now(txn_commit_answer(&req, errors::OFFSET_METADATA_TOO_LARGE));
        }
        let now = now_ms();
        let offsets = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        (t.name.to_string(), p.partition_index),
                        Committed {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                            commit_time_ms: now,
                        },
                    )
                })
            })
            .collect();
        let code = crate::replication::txn_offsets(
            broker,
            req.transactional_id.as_str(),
            (req.producer_id.0, req.producer_epoch),
            group,
            offsets,
            cx.version >= 3,
        )
        .await;
        Handled::Now(txn_commit_answer(&req, code))
    }

    fn errors(r: &TxnOffsetCommitResponse, out: &mut Vec<i16>) {
        for t in &r.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    fn throttle(r: &mut TxnOffsetCommitResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// DescribeTransactions: the state of transactional ids.
pub struct DescribeTransactions;

impl Api for DescribeTransactions {
    kind!(
        DescribeTransactions,
        DescribeTransactionsRequest,
        DescribeTransactionsResponse
    );
    const VERSIONS: (i16, i16) = (0, 0);
    /// Ids refused.
    type Denied = Vec<TransactionalId>;

    fn authorize(
        cx: Cx<'_>,
        r: &mut DescribeTransactionsRequest,
    ) -> Verdict<DescribeTransactionsResponse, Self::Denied> {
        let (keep, refused) = super::authz::split(std::mem::take(&mut r.transactional_ids), |id| {
            cx.can(
                Operation::Describe,
                ResourceType::TransactionalId,
                id.as_str(),
            )
        });
        r.transactional_ids = keep;
        Verdict::Proceed(refused)
    }

    fn deny(_cx: Cx<'_>, r: &mut DescribeTransactionsResponse, denied: Self::Denied) {
        for id in denied {
            r.transaction_states.push(
                describe_transactions_response::TransactionState::default()
                    .with_transactional_id(id)
                    .with_error_code(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                    .with_transaction_state(sb(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1),
            );
        }
    }

    async fn handle(
        cx: Cx<'_>,
        req: DescribeTransactionsRequest,
    ) -> Handled<DescribeTransactionsResponse> {
        let mut states = Vec::with_capacity(req.transactional_ids.len());
        for id in req.transactional_ids {
            let s = describe_transactions_response::TransactionState::default()
                .with_transactional_id(id.clone());
            let c = match coordinator(cx, id.as_str()).await {
                Ok(c) => c,
                Err(code) => {
                    states.push(s.with_error_code(code).with_transaction_state(sb("")));
                    continue;
                }
            };
            states.push(match c.describe(id.as_str()) {
                None => s
                    .with_error_code(errors::TRANSACTIONAL_ID_NOT_FOUND)
                    .with_transaction_state(sb(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1),
                Some(m) => {
                    let mut topics: Vec<TopicData> = Vec::new();
                    for (t, p) in &m.partitions {
                        match topics.last_mut() {
                            Some(last) if last.topic.as_str() == t => last.partitions.push(*p),
                            _ => topics.push(
                                TopicData::default()
                                    .with_topic(tn(t.clone()))
                                    .with_partitions(vec![*p]),
                            ),
                        }
                    }
                    let open = m.phase == Phase::Ongoing || m.phase.is_prepared();
                    s.with_transaction_state(sb(m.phase.name()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(if open { m.started_ms } else { -1 })
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_producer_epoch(m.epoch)
                        .with_topics(if open { topics } else { Vec::new() })
                }
            });
        }
        Handled::Now(DescribeTransactionsResponse::default().with_transaction_states(states))
    }

    fn errors(r: &DescribeTransactionsResponse, out: &mut Vec<i16>) {
        out.extend(r.transaction_states.iter().map(|s| s.error_code));
    }

    fn throttle(r: &mut DescribeTransactionsResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// ListTransactions: the transactional ids this coordinator knows, with
/// Kafka's filters (states, producer ids, and from v1 the shortest time
/// open).
pub struct ListTransactions;

/// The states a filter may name.
const STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
];

impl Api for ListTransactions {
    kind!(
        ListTransactions,
        ListTransactionsRequest,
        ListTransactionsResponse
    );
    const VERSIONS: (i16, i16) = (0, 1);
    type Denied = ();

    fn authorize(
        _cx: Cx<'_>,
        _r: &mut ListTransactionsRequest,
    ) -> Verdict<ListTransactionsResponse, ()> {
        // Ids the principal may not describe are left out by the handler.
        Verdict::Proceed(())
    }

    fn deny(_cx: Cx<'_>, _r: &mut ListTransactionsResponse, _denied: ()) {}

    async fn handle(cx: Cx<'_>, req: ListTransactionsRequest) -> Handled<ListTransactionsResponse> {
        let unknown: Vec<_> = req
            .state_filters
            .iter()
            .filter(|s| !STATES.contains(&s.as_str()))
            .cloned()
            .collect();
        let now = now_ms();
        let acl = cx.broker.authorizer.enabled();
        let mut states = Vec::new();
        for c in cx.broker.txn_coordinators() {
            states.extend(
                c.list()
                    .into_iter()
                    .filter(|(_, _, phase)| {
                        req.state_filters.is_empty()
                            || req.state_filters.iter().any(|s| s.as_str() == phase.name())
                    })
                    .filter(|(_, pid, _)| {
                        req.producer_id_filters.is_empty()
                            || req.producer_id_filters.iter().any(|p| p.0 == *pid)
                    })
                    .filter(|(id, _, _)| {
                        if req.duration_filter < 0 {
                            return true;
                        }
                        c.describe(id).is_some_and(|m| {
                            m.phase == Phase::Ongoing
                                && m.started_ms >= 0
                                && now.saturating_sub(m.started_ms) >= req.duration_filter
                        })
                    })
                    .filter(|(id, _, _)| {
                        !acl || cx.can(Operation::Describe, ResourceType::TransactionalId, id)
                    })
                    .map(|(id, pid, phase)| {
                        list_transactions_response::TransactionState::default()
                            .with_transactional_id(TransactionalId(sb(id)))
                            .with_producer_id(ProducerId(pid))
                            .with_transaction_state(sb(phase.name()))
                    }),
            );
        }
        Handled::Now(
            ListTransactionsResponse::default()
                .with_unknown_state_filters(unknown)
                .with_transaction_states(states),
        )
    }

    fn errors(r: &ListTransactionsResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }

    fn throttle(r: &mut ListTransactionsResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// What the transaction coordinator reaches: this broker's partitions,
/// committed offsets and retry scheduler.
pub struct TxnParts<'a>(pub &'a std::sync::Arc<Broker>);

impl crate::txn::Participants for TxnParts<'_> {
    fn partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Option<std::sync::Arc<crate::log::PartitionLog>> {
        self.0
            .topics
            .get(topic)
            .and_then(|t| t.partition(partition))
    }

    fn sync_markers(&self) -> bool {
        self.0.config.args.fsync != crate::config::FsyncPolicy::Never
    }

    fn commit_offsets(
        &self,
        changes: Vec<crate::group::Change>,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(std::future::ready(
            self.0
                .groups
                .offsets
                .write(changes)
                .map_err(|e| e.to_string()),
        ))
    }

    fn hand_back(&self, b: &crate::txn::HeldBatch) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(std::future::ready(hand_back_now(self.0, b)))
    }
}

/// The participants of this broker's transaction coordinators: a single
/// node's partitions, or in a cluster each partition's leader.
pub fn participants<'a>(broker: &'a Arc<Broker>) -> Box<dyn txn::Participants + Send + 'a> {
    if broker.cluster.get().is_some() {
        Box::new(ClusterParts(broker))
    } else {
        Box::new(TxnParts(broker))
    }
}

/// What a cluster's transaction coordinator reaches: each partition
/// through its leader, and each group's offsets through its coordinator.
pub struct ClusterParts<'a>(pub &'a Arc<Broker>);

impl crate::txn::Participants for ClusterParts<'_> {
    fn partition(&self, _topic: &str, _partition: i32) -> Option<Arc<crate::log::PartitionLog>> {
        None
    }

    fn sync_markers(&self) -> bool {
        false
    }

    fn commit_offsets(
        &self,
        changes: Vec<crate::group::Change>,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(crate::replication::commit_offsets_at_coordinators(
            self.0, changes,
        ))
    }

    fn hand_back(&self, b: &crate::txn::HeldBatch) -> BoxFuture<'_, Result<(), String>> {
        // The cluster's appender waits on other brokers: off the runtime.
        let (broker, b) = (Arc::clone(self.0), b.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || hand_back_now(&broker, &b))
                .await
                .map_err(|e| e.to_string())?
        })
    }

    fn send_markers<'a>(
        &'a self,
        partitions: Vec<(String, i32)>,
        batch: bytes::Bytes,
    ) -> Option<BoxFuture<'a, Result<(), String>>> {
        let broker = self.0;
        let cluster = broker.cluster.get()?;
        Some(Box::pin(async move {
            // A partition of a topic deleted since gets no marker.
            let live: Vec<(String, i32)> = cluster.with_metadata(|m| {
                partitions
                    .into_iter()
                    .filter(|(t, p)| {
                        m.topics.get(t).is_some_and(|x| {
                            usize::try_from(*p).is_ok_and(|p| p < x.partitions.len())
                        })
                    })
                    .collect()
            });
            let sent = futures::future::join_all(live.iter().map(|(t, p)| {
                crate::replication::append_at_leader(broker, cluster, t, *p, &batch)
            }))
            .await;
            sent.into_iter()
                .collect::<Result<Vec<()>, String>>()
                .map(|_| ())
        }))
    }
}

/// Passes a committed transaction's hand-back to the retry scheduler (in a
/// cluster through the leaders of `__retry`, so on a blocking thread).
fn hand_back_now(broker: &Arc<Broker>, b: &crate::txn::HeldBatch) -> Result<(), String> {
    let route = broker
        .retry_route(&b.topic)
        .ok_or_else(|| format!("{} is no longer a retry topic", b.topic))?;
    let out = crate::replication::appender(broker);
    broker
        .retries
        .hand_back(
            (&broker.topics, out.as_ref()),
            &route,
            &b.topic,
            b.partition,
            &b.records,
            broker.config.args.fsync != crate::config::FsyncPolicy::Never,
            now_ms(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}
