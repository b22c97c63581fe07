//! TLS for the Kafka listeners and the admin HTTP API (rustls with ring).
//!
//! The certificate, key and client CA are read from PEM files and re-read
//! when their modification time or size changes: new connections get the new
//! configuration, established ones keep theirs. A file that fails to load
//! leaves the previous configuration in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path} holds no {what}")]
    Empty { path: String, what: &'static str },
    #[error("TLS configuration rejected: {0}")]
    Rustls(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The acceptors in use, by whether client certificates are required.
#[derive(Debug, Clone)]
struct Configs {
    /// Server authentication only (SASL_SSL listeners, SSL without a client
    /// CA, the admin HTTP API).
    server_only: Arc<ServerConfig>,
    /// Client certificates required (SSL listeners with --tls-client-ca).
    mutual: Option<Arc<ServerConfig>>,
}

/// Identity of the files as last loaded.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// The broker's TLS state: current configurations and their source files.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    current: RwLock<Configs>,
    stamp: Mutex<Stamp>,
}

impl Tls {
    /// Loads the files.
    ///
    /// # Errors
    /// A missing or unusable certificate, key or CA file.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let me = Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
            current: RwLock::new(build(cert, key, client_ca)?),
            stamp: Mutex::new(Vec::new()),
        };
        *me.stamp.lock() = me.read_stamp();
        Ok(me)
    }

    fn read_stamp(&self) -> Stamp {
        let mut files = vec![&self.cert, &self.key];
        if let Some(ca) = &self.client_ca {
            files.push(ca);
        }
        files
            .into_iter()
            .map(|f| {
                std::fs::metadata(f)
                    .ok()
                    .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
            })
            .collect()
    }

    /// Re-reads the files when they changed. `Ok(true)` when a new
    /// configuration is in use.
    ///
    /// # Errors
    /// The files changed but cannot be used; the old configuration stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = self.read_stamp();
        {
            let mut stamp = self.stamp.lock();
            if *stamp == now {
                return Ok(false);
            }
            // Do not retry the same broken files every interval.
            *stamp = now;
        }
        let configs = build(&self.cert, &self.key, self.client_ca.as_deref())?;
        *self.current.write() = configs;
        Ok(true)
    }

    /// An acceptor for a new connection; `mutual` asks for client
    /// certificates when a client CA is configured.
    pub fn acceptor(&self, mutual: bool) -> TlsAcceptor {
        let c = self.current.read();
        let cfg = match (&c.mutual, mutual) {
            (Some(m), true) => Arc::clone(m),
            _ => Arc::clone(&c.server_only),
        };
        TlsAcceptor::from(cfg)
    }

    /// Whether client certificates are required on SSL listeners.
    pub fn has_client_ca(&self) -> bool {
        self.client_ca.is_some()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Configs, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: cert.display().to_string(),
            what: "certificate",
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let base = || {
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))
    };
    let server_only = base()?
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key_der.clone_key())
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mutual = match client_ca {
        None => None,
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e))? {
                let c = c.map_err(|e| file_err(ca, e))?;
                roots
                    .add(c)
                    .map_err(|e| file_err(ca, format!("unusable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(TlsError::Empty {
                    path: ca.display().to_string(),
                    what: "CA certificate",
                });
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            let cfg = base()?
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key_der)
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            Some(Arc::new(cfg))
        }
    };
    Ok(Configs {
        server_only: Arc::new(server_only),
        mutual,
    })
}

/// The principal of a client certificate: `User:` and the subject in RFC
/// 2253 form (most specific RDN first, as Kafka's default principal builder
/// prints it), e.g. `User:CN=alice,O=Example`.
pub fn principal_of_certificate(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let mut parts = Vec::new();
        for attr in rdn.iter() {
            let oid = attr.attr_type();
            let name = x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                .map(str::to_string)
                .unwrap_or_else(|_| oid.to_id_string());
            let value = attr.as_str().map(escape_rfc2253).unwrap_or_else(|_| {
                // Not a string type: RFC 2253 writes the DER as #hex.
                let hex: String = attr.as_slice().iter().map(|b| format!("{b:02x}")).collect();
                format!("#{hex}")
            });
            parts.push(format!("{name}={value}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    if rdns.is_empty() {
        return None;
    }
    Some(format!("User:{}", rdns.join(",")))
}

fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subject_becomes_an_rfc2253_principal() {
        let mut params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc");
        dn.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            principal_of_certificate(cert.der()).as_deref(),
            Some("User:CN=alice,O=Example\\, Inc")
        );
        assert_eq!(principal_of_certificate(b"not a certificate"), None);
    }

    #[test]
    fn files_are_reloaded_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![name.into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            std::fs::write(dir.path().join("c.pem"), cert.pem()).unwrap();
            std::fs::write(dir.path().join("k.pem"), key.serialize_pem()).unwrap();
        };
        write("one");
        let tls = Tls::load(&dir.path().join("c.pem"), &dir.path().join("k.pem"), None).unwrap();
        assert!(!tls.reload_if_changed().unwrap());
        std::fs::write(dir.path().join("k.pem"), "garbage").unwrap();
        assert!(tls.reload_if_changed().is_err(), "a broken key is refused");
        // The broken files are not retried until they change again.
        assert!(!tls.reload_if_changed().unwrap());
        write("two-with-a-longer-name");
        assert!(tls.reload_if_changed().unwrap());
        assert!(Tls::load(
            &dir.path().join("missing.pem"),
            &dir.path().join("k.pem"),
            None
        )
        .is_err());
    }
}
