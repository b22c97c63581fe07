//! Glue over the `kafka-protocol` crate: request header and body decoding by
//! api key and version, response encoding with the right header version,
//! and the error codes by name. Which APIs and versions are served is the
//! handlers' registry's to say (`api::REGISTRY`).
//!
//! A [`ProtocolError`] means the connection must be closed: the request cannot
//! be understood well enough to answer it.

pub mod errors;
pub mod fetch_frame;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// A request that cannot be answered; the connection is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("request shorter than a request header")]
    Short,
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("{key:?} v{version} is not supported")]
    UnsupportedVersion { key: ApiKey, version: i16 },
    #[error("failed to decode {key:?} v{version}: {reason}")]
    Decode {
        key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("failed to encode a response: {0}")]
    Encode(String),
}

/// A decoded request frame.
#[derive(Debug)]
pub enum Decoded {
    /// A request of a supported API and version.
    Request {
        header: RequestHeader,
        key: ApiKey,
        body: Box<RequestKind>,
    },
    /// ApiVersions above our maximum: answered with a v0 body carrying
    /// UNSUPPORTED_VERSION and our table, so the client retries lower.
    ApiVersionsTooNew { correlation_id: i32, version: i16 },
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Decodes one request frame (the bytes after the 4-byte size). `served`
/// gives the version range of each API the broker serves; any other API or
/// version is refused before its body is decoded.
///
/// # Errors
/// Any frame that cannot be answered.
pub fn decode(
    mut frame: Bytes,
    served: impl Fn(ApiKey) -> Option<(i16, i16)>,
) -> Result<Decoded, ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::Short);
    }
    let raw_key = be_i16(&frame, 0);
    let version = be_i16(&frame, 2);
    let key = ApiKey::try_from(raw_key).map_err(|()| ProtocolError::UnknownApiKey(raw_key))?;
    let Some((min, max)) = served(key) else {
        return Err(ProtocolError::UnsupportedVersion { key, version });
    };
    if key == ApiKey::ApiVersions && version > max {
        // Every request header version starts with key, version, correlation id.
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        return Ok(Decoded::ApiVersionsTooNew {
            correlation_id,
            version,
        });
    }
    if version < min || version > max {
        return Err(ProtocolError::UnsupportedVersion { key, version });
    }
    let header =
        RequestHeader::decode(&mut frame, key.request_header_version(version)).map_err(|e| {
            ProtocolError::Decode {
                key,
                version,
                reason: format!("header: {e:#}"),
            }
        })?;
    let body =
        RequestKind::decode(key, &mut frame, version).map_err(|e| ProtocolError::Decode {
            key,
            version,
            reason: format!("{e:#}"),
        })?;
    Ok(Decoded::Request {
        header,
        key,
        body: Box::new(body),
    })
}

/// Appends one size-prefixed response frame to `out`.
///
/// # Errors
/// A response that the codec refuses for this version (a bug, logged and the
/// connection closed).
pub fn encode(
    out: &mut BytesMut,
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<(), ProtocolError> {
    let start = out.len();
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(out, key.response_header_version(version))
        .map_err(|e| ProtocolError::Encode(format!("{e:#}")))?;
    body.encode(out, version)
        .map_err(|e| ProtocolError::Encode(format!("{key:?} v{version}: {e:#}")))?;
    let size = i32::try_from(out.len() - start - 4)
        .map_err(|_| ProtocolError::Encode("response larger than 2 GiB".into()))?;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}
