//! Transactions: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
//! TxnOffsetCommit, DescribeTransactions and ListTransactions, answered by
//! this broker's transaction coordinator ([`crate::txn`]).
//! InitProducerId with a transactional id is in `producer_ids`.
//!
//! A cluster has no transaction coordinator yet: FindCoordinator answers
//! `COORDINATOR_NOT_AVAILABLE` for transactional ids there, and these APIs
//! `NOT_COORDINATOR`.

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

/// Whether this broker coordinates transactions (a single node).
fn coordinates(cx: Cx<'_>) -> bool {
    cx.broker.cluster.get().is_none()
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
        if !coordinates(cx) {
            return Handled::Now(add_partitions_answer(&req, |_| errors::NOT_COORDINATOR));
        }
        let parts: Vec<(String, i32)> = req
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
            .collect();
        let broker = cx.broker;
        let known = |t: &str, p: i32| {
            !crate::topics::is_reserved(t)
                && broker
                    .topics
                    .get(t)
                    .is_some_and(|x| x.partition(p).is_some())
        };
        let results = broker.txns.add_partitions(
            req.v3_and_below_transactional_id.as_str(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &parts,
            known,
            now_ms(),
        );
        let new_code = cx.version >= 2;
        let mut codes = results.into_iter().map(|r| txn::code_of(r, new_code));
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
        let code = if coordinates(cx) {
            let r = cx.broker.txns.add_offsets(
                req.transactional_id.as_str(),
                req.producer_id.0,
                req.producer_epoch,
                req.group_id.as_str(),
                now_ms(),
            );
            txn::code_of(r, cx.version >= 2)
        } else {
            errors::NOT_COORDINATOR
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
        let code = if coordinates(cx) {
            let r = cx
                .broker
                .txns
                .end_txn(
                    &TxnParts(cx.broker),
                    req.transactional_id.as_str(),
                    req.producer_id.0,
                    req.producer_epoch,
                    req.committed,
                    now_ms(),
                )
                .await;
            txn::code_of(r, cx.version >= 2)
        } else {
            errors::NOT_COORDINATOR
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
        if !coordinates(cx) {
            return Handled::Now(txn_commit_answer(&req, errors::NOT_COORDINATOR));
        }
        let broker = cx.broker;
        let group = req.group_id.as_str();
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
        let r = broker.txns.commit_offsets(
            req.transactional_id.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            group,
            offsets,
            now,
        );
        Handled::Now(txn_commit_answer(&req, txn::code_of(r, cx.version >= 3)))
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
        let states = req
            .transactional_ids
            .into_iter()
            .map(|id| {
                let s = describe_transactions_response::TransactionState::default()
                    .with_transactional_id(id.clone());
                if !coordinates(cx) {
                    return s
                        .with_error_code(errors::NOT_COORDINATOR)
                        .with_transaction_state(sb(""));
                }
                match cx.broker.txns.describe(id.as_str()) {
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
                }
            })
            .collect();
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
        let states = if coordinates(cx) {
            cx.broker
                .txns
                .list()
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
                    cx.broker.txns.describe(id).is_some_and(|m| {
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
                })
                .collect()
        } else {
            Vec::new()
        };
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
    ) -> Result<(), crate::log::LogError> {
        self.0.groups.offsets.write(changes)
    }

    fn hand_back(&self, b: &crate::txn::HeldBatch) -> Result<(), String> {
        let broker = self.0;
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
}
