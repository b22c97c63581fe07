//! A minimal Kafka client for the tools: one connection, requests answered
//! in order, versions chosen from the broker's ApiVersions; TLS and SASL
//! (PLAIN, SCRAM) as a listener asks for them.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use weir::config::SecurityProtocol;
use weir::security::scram::{Mechanism, ScramClient};

/// A connection's byte stream: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How to reach brokers: the listener's protocol, TLS files, SASL
/// credentials. Every connection of a tool is made with the same.
#[derive(Clone)]
pub struct Dialer {
    client_id: &'static str,
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<Sasl>,
}

#[derive(Clone)]
struct Sasl {
    /// `None` for PLAIN.
    scram: Option<Mechanism>,
    username: String,
    password: String,
}

/// The settings a [`Dialer`] is made from (the tools' flags).
pub struct Security {
    pub protocol: String,
    pub mechanism: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Dialer {
    /// From the tools' flags.
    ///
    /// # Errors
    /// An unknown protocol or mechanism, missing credentials, unreadable or
    /// invalid PEM files.
    pub fn new(client_id: &'static str, s: &Security) -> Result<Self> {
        let protocol = SecurityProtocol::parse(&s.protocol).ok_or_else(|| {
            anyhow!(
                "unknown security protocol {:?}; use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                s.protocol
            )
        })?;
        let (tls, sasl) = match protocol {
            SecurityProtocol::Plaintext => (false, false),
            SecurityProtocol::Ssl => (true, false),
            SecurityProtocol::SaslPlaintext => (false, true),
            SecurityProtocol::SaslSsl => (true, true),
        };
        let sasl = if sasl {
            let scram = match s.mechanism.as_str() {
                "PLAIN" => None,
                m => Some(Mechanism::from_name(m).ok_or_else(|| {
                    anyhow!(
                        "unknown SASL mechanism {m:?}; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                    )
                })?),
            };
            Some(Sasl {
                scram,
                username: s
                    .username
                    .clone()
                    .ok_or_else(|| anyhow!("{} needs --sasl-username", s.protocol))?,
                password: s.password.clone().ok_or_else(|| {
                    anyhow!("{} needs --sasl-password or WEIR_SASL_PASSWORD", s.protocol)
                })?,
            })
        } else {
            None
        };
        let tls = if tls {
            Some(Arc::new(tls_config(s)?))
        } else {
            None
        };
        Ok(Self {
            client_id,
            tls,
            sasl,
        })
    }

    /// Connects to `addr`, then TLS and SASL as configured.
    ///
    /// # Errors
    /// No connection, a failed handshake, refused credentials.
    /// Connects to the first broker of a comma-separated bootstrap list
    /// that answers (as Kafka's tools take `--bootstrap-server`).
    ///
    /// # Errors
    /// No broker of the list could be reached, or one refused the
    /// credentials.
    pub async fn connect_any(&self, list: &str) -> Result<Conn> {
        let mut last = None;
        for addr in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match self.connect(addr).await {
                Ok(c) => return Ok(c),
                Err(e) if e.downcast_ref::<Refused>().is_some() => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no broker address in {list:?}")))
    }

    pub async fn connect(&self, addr: &str) -> Result<Conn> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| anyhow!("{host:?} is not a server name: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {addr}"))?;
                Box::new(tls)
            }
        };
        let mut conn = Conn {
            stream,
            next_corr: 1,
            client_id: self.client_id,
            versions: HashMap::new(),
        };
        if let Some(sasl) = &self.sasl {
            if let Err(e) = conn.authenticate(sasl).await {
                return Err(anyhow::Error::new(Refused(format!(
                    "SASL with {addr}: {e:#}"
                ))));
            }
        }
        Ok(conn)
    }
}

/// The broker answered, and said no (authentication): the tools exit 1 for
/// it, as for any Kafka error.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn tls_config(s: &Security) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = s.tls_ca.as_ref().ok_or_else(|| {
        anyhow!(
            "{} needs --tls-ca, the CA of the brokers' certificates",
            s.protocol
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots
            .add(c.with_context(|| format!("reading {}", ca.display()))?)
            .with_context(|| format!("a certificate in {}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_root_certificates(roots);
    Ok(match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("reading {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("client certificate")?
        }
        _ => builder.with_no_client_auth(),
    })
}

/// Largest response the tools read.
const MAX_RESPONSE: usize = 256 << 20;

/// One connection, requests answered in order.
pub struct Conn {
    stream: Box<dyn Stream>,
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
            stream: Box::new(stream),
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

    /// SaslHandshake, then the mechanism's exchange in SaslAuthenticate.
    async fn authenticate(&mut self, sasl: &Sasl) -> Result<()> {
        let mech = sasl.scram.map_or("PLAIN", Mechanism::name);
        let h: SaslHandshakeResponse = self
            .call(
                ApiKey::SaslHandshake,
                1,
                &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mech)),
            )
            .await?;
        if h.error_code != 0 {
            bail!(
                "the broker does not take {mech}: {} (it offers {})",
                error_name(h.error_code),
                h.mechanisms
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        match sasl.scram {
            None => {
                let mut token = vec![0u8];
                token.extend_from_slice(sasl.username.as_bytes());
                token.push(0);
                token.extend_from_slice(sasl.password.as_bytes());
                self.sasl_step(token).await?;
            }
            Some(m) => {
                let mut client = ScramClient::new(m, &sasl.username, &sasl.password)?;
                let first = self.sasl_step(client.client_first()).await?;
                let fin = client.client_final(&first)?;
                let last = self.sasl_step(fin).await?;
                client.verify_server_final(&last)?;
            }
        }
        Ok(())
    }

    async fn sasl_step(&mut self, token: Vec<u8>) -> Result<Vec<u8>> {
        let r: SaslAuthenticateResponse = self
            .call(
                ApiKey::SaslAuthenticate,
                1,
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
            )
            .await?;
        if r.error_code != 0 {
            bail!(
                "{}{}",
                error_name(r.error_code),
                r.error_message
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
        }
        Ok(r.auth_bytes.to_vec())
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
