//! ApiVersions: built from the registry, the one list of what is served.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::errors;
use super::route::{kind, open, row, Api, Cx, Handled, Registry, Row};

/// The APIs this family serves.
pub const ROWS: &[Row] = &[row::<ApiVersions>()];

/// ApiVersions: every API weir serves, and its versions.
pub struct ApiVersions;

impl Api for ApiVersions {
    kind!(ApiVersions, ApiVersionsRequest, ApiVersionsResponse);
    const VERSIONS: (i16, i16) = (0, 3);
    open!();

    async fn handle(cx: Cx<'_>, req: ApiVersionsRequest) -> Handled<ApiVersionsResponse> {
        Handled::Now(api_versions(cx.registry, &req, cx.version))
    }

    fn errors(r: &ApiVersionsResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
    }
}

fn table(registry: &Registry) -> Vec<ApiVersion> {
    registry
        .rows()
        .iter()
        .map(|r| {
            ApiVersion::default()
                .with_api_key(r.key as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect()
}

/// Answers a supported ApiVersions request.
fn api_versions(
    registry: &Registry,
    req: &ApiVersionsRequest,
    version: i16,
) -> ApiVersionsResponse {
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
        .with_api_keys(table(registry))
}

/// The v0 response to an ApiVersions request above our maximum.
pub fn too_new(registry: &Registry) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(errors::UNSUPPORTED_VERSION)
        .with_api_keys(table(registry))
}
