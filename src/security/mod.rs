//! Security: who a connection is and what it may do.
//!
//! - Principals: the identity of a connection: `User:<name>` after SASL,
//!   `User:<certificate subject>` with a client certificate, else
//!   `User:ANONYMOUS`.
//! - [`tls`]: encrypted listeners, optionally with client certificates.
//! - [`sasl`]: PLAIN and SCRAM-SHA-256/512 ([`scram`]) against the credential
//!   store in the data dir ([`users`]).
//! - [`acl`]: authorization of each request for its principal.
//! - [`quotas`]: per-user and per-client byte rates and request-time shares.
//! - [`replicated`]: users, ACLs and quotas as a cluster's quorum holds them.

pub mod acl;
pub mod quotas;
pub mod replicated;
pub mod sasl;
pub mod scram;
pub mod tls;
pub mod users;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

/// Every SASL mechanism weir offers.
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// A listener's security protocol (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Plaintext,
            Self::Ssl,
            Self::SaslPlaintext,
            Self::SaslSsl,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Whether the transport is TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether clients must authenticate with SASL.
    pub fn is_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// The principal of a connection that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Who is on the other end of a connection, as the request handlers see it.
#[derive(Debug, Clone)]
pub struct Session {
    /// Index of the listener in the configuration.
    pub listener: usize,
    pub protocol: SecurityProtocol,
    pub peer: SocketAddr,
    /// `User:<name>`.
    pub principal: String,
}

impl Session {
    /// A session on the first listener (tests and in-process callers).
    pub fn anonymous(peer: SocketAddr) -> Self {
        Self {
            listener: 0,
            protocol: SecurityProtocol::Plaintext,
            peer,
            principal: ANONYMOUS.to_string(),
        }
    }

    /// The user name of the principal (quotas are per user).
    pub fn user(&self) -> &str {
        self.principal
            .split_once(':')
            .map_or(self.principal.as_str(), |(_, n)| n)
    }
}

/// Replaces `path` with `bytes`: written to a temporary file in the same
/// directory with `mode`, fsynced, renamed over, and the directory fsynced.
///
/// # Errors
/// Any failed step; `path` then keeps its previous contents.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover temporary (or a link planted in its place) is not reused.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
