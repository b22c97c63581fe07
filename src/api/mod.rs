//! Request handlers: one file per API family. Each family declares its
//! APIs as rows ([`route::Api`]): versions, authorization, handler, error
//! codes, throttle field and quota metering, once. [`REGISTRY`] is built
//! from the families' rows, and everything per API elsewhere (dispatch,
//! ApiVersions, the version check before decoding, names in logs and
//! metrics, throttling, error accounting) reads it.
//!
//! Adding an API: a struct and its `impl Api` in its family's file, and one
//! `row::<It>()` in that file's `ROWS` (a new family adds one line to
//! [`FAMILIES`]).
//!
//! Per-partition failures are Kafka error codes inside a full response; an
//! `Err` from [`start`] means the connection must be closed.

pub mod acls;
pub mod admin;
pub mod authz;
pub mod commits;
pub mod configs;
pub mod consumer_groups;
pub mod elect;
pub mod errors;
pub mod fetch;
pub mod groups;
pub mod log_dirs;
pub mod loggers;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_ids;
pub mod quorum;
pub mod quotas;
pub mod route;
pub mod sasl;
pub mod scram;
pub mod txns;
pub mod versions;

use std::sync::{Arc, LazyLock};

use kafka_protocol::messages::{RequestHeader, RequestKind};

use crate::broker::Broker;
use crate::security::Session;
pub use route::{sb, tn, ApiError, Registry, Row, Started};

/// Every family's rows.
pub const FAMILIES: &[&[Row]] = &[
    versions::ROWS,
    produce::ROWS,
    fetch::ROWS,
    offsets::ROWS,
    metadata::ROWS,
    admin::ROWS,
    configs::ROWS,
    producer_ids::ROWS,
    groups::ROWS,
    consumer_groups::ROWS,
    commits::ROWS,
    sasl::ROWS,
    acls::ROWS,
    scram::ROWS,
    quotas::ROWS,
    log_dirs::ROWS,
    elect::ROWS,
    txns::ROWS,
];

/// The APIs weir serves.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry::new(FAMILIES));

/// The versions of `key` weir serves, if any (for the check before a
/// request is decoded).
pub fn served(key: kafka_protocol::messages::ApiKey) -> Option<(i16, i16)> {
    REGISTRY.get(key).map(|r| (r.min, r.max))
}

/// Authorizes and handles one request up to its wait for durability: a
/// produce's records are appended when this returns, and
/// [`Started::finish`] waits for their fsync. Other requests are complete.
///
/// # Errors
/// A request kind this broker does not serve (the version check before
/// decoding refuses those).
pub async fn start(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    session: &Session,
    body: RequestKind,
) -> Result<Started, ApiError> {
    let key = kafka_protocol::messages::ApiKey::try_from(header.request_api_key)
        .map_err(|()| ApiError(format!("unknown api key {}", header.request_api_key)))?;
    let Some(row) = REGISTRY.get(key) else {
        return Err(ApiError(format!("{key:?} is not served")));
    };
    let cx = route::Cx {
        broker,
        session,
        header,
        version: header.request_api_version,
        registry: &REGISTRY,
    };
    row.serve(cx, body).await
}

/// Handles one request and waits for its response (`None`: no response,
/// acks=0).
///
/// # Errors
/// As [`start`].
pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    session: &Session,
    body: RequestKind,
) -> Result<Option<kafka_protocol::messages::ResponseKind>, ApiError> {
    Ok(start(broker, header, session, body).await?.finish().await)
}

#[cfg(test)]
mod decode_tests;

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;

    use super::*;

    #[test]
    fn every_row_stays_within_the_codec_and_kafka_4_floors() {
        for r in REGISTRY.rows() {
            assert!(r.min <= r.max, "{}", r.name);
            let codec = r.key.valid_versions();
            assert!(r.min >= codec.min && r.max <= codec.max, "{}", r.name);
            assert_eq!(format!("{:?}", r.key), r.name);
        }
        let min = |k| REGISTRY.get(k).map(|r| r.min);
        assert_eq!(min(ApiKey::Produce), Some(3));
        assert_eq!(min(ApiKey::Fetch), Some(4));
        assert_eq!(min(ApiKey::Metadata), Some(0));
        assert_eq!(min(ApiKey::JoinGroup), Some(0));
    }

    #[test]
    fn rows_are_listed_by_api_key() {
        let keys: Vec<i16> = REGISTRY.rows().iter().map(|r| r.key as i16).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
    }
}
