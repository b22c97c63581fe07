//! InitProducerId: a producer id for an idempotent producer, or, with a
//! transactional id, the id's producer id and a new epoch from the
//! transaction coordinator (which fences older producers of the id).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::errors;
use super::route::{kind, row, Api, Cx, Handled, Row, Verdict};
use crate::broker::Broker;
use crate::security::acl::{Operation, ResourceType};

/// The APIs this family serves.
pub const ROWS: &[Row] = &[row::<InitProducerId>()];

/// InitProducerId: a producer id and epoch.
pub struct InitProducerId;

impl Api for InitProducerId {
    kind!(
        InitProducerId,
        InitProducerIdRequest,
        InitProducerIdResponse
    );
    const VERSIONS: (i16, i16) = (0, 4);
    type Denied = ();

    fn authorize(cx: Cx<'_>, r: &mut InitProducerIdRequest) -> Verdict<InitProducerIdResponse, ()> {
        let (ok, code) = match &r.transactional_id {
            Some(t) => (
                cx.can(Operation::Write, ResourceType::TransactionalId, t.as_str()),
                errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            ),
            None => (
                cx.cluster(Operation::IdempotentWrite)
                    || cx.broker.authorizer.authorize_any(
                        &cx.session.principal,
                        cx.session.peer.ip(),
                        Operation::Write,
                        ResourceType::Topic,
                    ),
                errors::CLUSTER_AUTHORIZATION_FAILED,
            ),
        };
        if ok {
            return Verdict::Proceed(());
        }
        Verdict::Answer(
            InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
    }

    fn deny(_cx: Cx<'_>, _r: &mut InitProducerIdResponse, _denied: ()) {}

    async fn handle(cx: Cx<'_>, req: InitProducerIdRequest) -> Handled<InitProducerIdResponse> {
        if let Some(id) = &req.transactional_id {
            return Handled::Now(transactional(cx, id.as_str(), &req).await);
        }
        if let (Some(c), None) = (cx.broker.cluster.get(), &req.transactional_id) {
            let resp = InitProducerIdResponse::default();
            return Handled::Now(match c.allocate_producer_id().await {
                Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
                // Kafka's answer while no block of ids can be had, which
                // every client retries. (COORDINATOR_NOT_AVAILABLE sends
                // kafka-python's idempotent producer looking for a
                // transaction coordinator with a null id.)
                Err(e) => {
                    tracing::warn!(error = %e, "no producer id from the quorum");
                    resp.with_error_code(errors::COORDINATOR_LOAD_IN_PROGRESS)
                }
            });
        }
        Handled::Now(init_producer_id(cx.broker, &req))
    }

    fn errors(r: &InitProducerIdResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }
}

/// Hands out a fresh producer id with epoch 0. As in Kafka, an idempotent
/// (non-transactional) producer always gets a new id, also when it asks to
/// bump the epoch of its old one (KIP-360): its sequences restart at 0.
fn init_producer_id(broker: &Broker, _req: &InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default();
    match broker.topics.allocate_producer_id() {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "failed to allocate a producer id");
            resp.with_error_code(errors::KAFKA_STORAGE_ERROR)
        }
    }
}

/// InitProducerId with a transactional id, answered by its transaction
/// coordinator (in a cluster the leader of its `__transaction_state`
/// partition, producer ids coming from the quorum).
async fn transactional(
    cx: Cx<'_>,
    id: &str,
    req: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let broker = cx.broker;
    let c = match broker.txn_coordinator(id).await {
        Ok(c) => c,
        Err(code) => return resp.with_error_code(code),
    };
    let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    let allocate = async {
        match broker.cluster.get() {
            Some(cluster) => cluster.allocate_producer_id().await.map_err(|e| {
                tracing::warn!(error = %e, "no producer id from the quorum");
                errors::COORDINATOR_LOAD_IN_PROGRESS
            }),
            None => broker.topics.allocate_producer_id().map_err(|e| {
                tracing::error!(error = %e, "failed to allocate a producer id");
                errors::KAFKA_STORAGE_ERROR
            }),
        }
    };
    let r = c
        .init_producer_id(
            super::txns::participants(broker).as_ref(),
            id,
            req.transaction_timeout_ms,
            expected,
            allocate,
            crate::broker::now_ms(),
        )
        .await;
    match r {
        Ok((pid, epoch)) => resp
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(e) => resp.with_error_code(e.code(cx.version >= 4)),
    }
}
