//! InitProducerId for idempotent producers. Transactions are not supported:
//! a request with a transactional id is refused.

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
fn init_producer_id(broker: &Broker, req: &InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        return resp.with_error_code(errors::INVALID_REQUEST);
    }
    match broker.topics.allocate_producer_id() {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "failed to allocate a producer id");
            resp.with_error_code(errors::KAFKA_STORAGE_ERROR)
        }
    }
}
