//! InitProducerId for idempotent producers. Transactions are not supported:
//! a request with a transactional id is refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::errors;
use crate::broker::Broker;

/// Hands out a fresh producer id (epoch 0), or bumps the epoch of the one the
/// client already has (KIP-360), so that its sequence numbers restart at 0.
pub fn handle(broker: &Broker, req: &InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        return resp.with_error_code(errors::INVALID_REQUEST);
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return resp
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match broker.topics.allocate_producer_id() {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "failed to allocate a producer id");
            resp.with_error_code(errors::KAFKA_STORAGE_ERROR)
        }
    }
}
