//! A minimal Kafka client for the tools: one connection, requests answered
//! in order, versions chosen from the broker's ApiVersions.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response the tools read.
const MAX_RESPONSE: usize = 256 << 20;

/// One connection, requests answered in order.
pub struct Conn {
    stream: TcpStream,
    next_corr: i32,
    client_id: &'static str,
    /// The broker's version range per API key, once asked.
    versions: HashMap<i16, (i16, i16)>,
}

impl Conn {
    pub async fn open(addr: &str) -> Result<Self> {
        Self::open_as(addr, "weir-bench").await
    }

    /// Connects, naming the tool in the request headers' client id.
    pub async fn open_as(addr: &str, client_id: &'static str) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            next_corr: 1,
            client_id,
            versions: HashMap::new(),
        })
    }

    fn frame<T: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &T,
    ) -> Result<(i32, BytesMut)> {
        let corr = self.next_corr;
        self.next_corr = self.next_corr.wrapping_add(1);
        let mut b = BytesMut::with_capacity(256);
        b.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)))
            .encode(&mut b, key.request_header_version(version))?;
        body.encode(&mut b, version)?;
        let len = i32::try_from(b.len() - 4)?;
        b[..4].copy_from_slice(&len.to_be_bytes());
        Ok((corr, b))
    }

    pub async fn send<T: Encodable>(&mut self, key: ApiKey, version: i16, body: &T) -> Result<i32> {
        let (corr, b) = self.frame(key, version, body)?;
        self.stream.write_all(&b).await?;
        Ok(corr)
    }

    pub async fn recv<R: Decodable>(&mut self, key: ApiKey, version: i16) -> Result<(i32, R)> {
        let len = self.stream.read_i32().await?;
        let len = usize::try_from(len).map_err(|_| anyhow!("negative response size"))?;
        if len > MAX_RESPONSE {
            bail!("response of {len} bytes");
        }
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).await?;
        let mut b = Bytes::from(buf);
        let h = ResponseHeader::decode(&mut b, key.response_header_version(version))?;
        let r = R::decode(&mut b, version)?;
        Ok((h.correlation_id, r))
    }

    pub async fn call<T: Encodable, R: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &T,
    ) -> Result<R> {
        let corr = self.send(key, version, body).await?;
        let (got, r) = self.recv(key, version).await?;
        if got != corr {
            bail!("response {got} to request {corr}");
        }
        Ok(r)
    }

    /// The highest version of `key` both the broker and the tool speak
    /// (`ours` is the tool's range), from the broker's ApiVersions.
    ///
    /// # Errors
    /// The broker does not serve the API, or no version in common.
    pub async fn version(&mut self, key: ApiKey, ours: (i16, i16)) -> Result<i16> {
        if self.versions.is_empty() {
            let r: ApiVersionsResponse = self
                .call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
                .await
                .context("ApiVersions")?;
            if r.error_code != 0 {
                bail!("ApiVersions: {}", error_name(r.error_code));
            }
            self.versions = r
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
        }
        let (lo, hi) = self
            .versions
            .get(&(key as i16))
            .copied()
            .ok_or_else(|| anyhow!("the broker does not serve {key:?}"))?;
        let v = hi.min(ours.1);
        if v < lo.max(ours.0) {
            bail!(
                "no {key:?} version in common (broker {lo}-{hi}, this tool {}-{})",
                ours.0,
                ours.1
            );
        }
        Ok(v)
    }
}

/// Kafka's name of an error code, e.g. `UNKNOWN_TOPIC_OR_PARTITION (3)`.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => format!("{} ({code})", screaming(&format!("{e:?}"))),
        None => format!("error {code}"),
    }
}

/// `UnknownTopicOrPartition` → `UNKNOWN_TOPIC_OR_PARTITION`.
fn screaming(camel: &str) -> String {
    let mut out = String::new();
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}
