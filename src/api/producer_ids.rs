//! InitProducerId for idempotent producers. Transactions are not supported:
//! a request with a transactional id is refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::errors;
use crate::broker::Broker;

/// Hands out a fresh producer id with epoch 0. As in Kafka, an idempotent
/// (non-transactional) producer always gets a new id, also when it asks to
/// bump the epoch of its old one (KIP-360): its sequences restart at 0.
pub fn handle(broker: &Broker, req: &InitProducerIdRequest) -> InitProducerIdResponse {
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
