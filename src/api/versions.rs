//! ApiVersions: built from the one version table in `protocol::versions`.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::errors;
use crate::protocol::versions::SUPPORTED;

fn table() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.key as i16)
                .with_min_version(s.min)
                .with_max_version(s.max)
        })
        .collect()
}

/// Answers a supported ApiVersions request.
pub fn handle(req: &ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    let valid = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    // v3 clients name themselves; Kafka refuses names outside [a-zA-Z0-9.-].
    let bad_name = version >= 3
        && (!valid(req.client_software_name.as_str())
            || !valid(req.client_software_version.as_str()));
    ApiVersionsResponse::default()
        .with_error_code(if bad_name {
            errors::INVALID_REQUEST
        } else {
            errors::NONE
        })
        .with_api_keys(table())
}

/// The v0 response to an ApiVersions request above our maximum.
pub fn too_new() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(errors::UNSUPPORTED_VERSION)
        .with_api_keys(table())
}
