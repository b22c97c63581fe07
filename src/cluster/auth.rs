//! Brokers' proof to each other that they hold the cluster's secret
//! (`--controller-secret-file`). On every connection to a controller
//! listener, before any message, each side answers the other's random
//! challenge with an HMAC-SHA256 of both challenges under the secret:
//!
//! ```text
//! listener -> caller:   challenge_l (32 bytes)
//! caller   -> listener: challenge_c (32 bytes), HMAC(secret, "client" | challenge_l | challenge_c)
//! listener -> caller:   HMAC(secret, "server" | challenge_c | challenge_l)
//! ```
//!
//! A peer without the secret can neither propose metadata, fetch records
//! nor hand a follower forged ones. The messages after the proof travel in
//! the clear: the secret authenticates, it does not encrypt. Without a
//! secret a connection starts with its first message.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The shortest secret taken, in bytes.
pub const MIN_SECRET: usize = 16;

const CHALLENGE: usize = 32;
const TAG: usize = 32;
/// How long either side may take over the proof.
const PROOF_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster's shared secret.
pub struct Secret(hmac::Key);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The secret when the cluster has one.
pub type Auth = Option<Arc<Secret>>;

impl Secret {
    /// A secret from its bytes.
    ///
    /// # Errors
    /// Fewer than [`MIN_SECRET`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < MIN_SECRET {
            return Err(format!(
                "the controller secret has {} bytes; at least {MIN_SECRET} are needed",
                bytes.len()
            ));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    fn tag(&self, role: &[u8], first: &[u8], second: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(role);
        ctx.update(first);
        ctx.update(second);
        ctx.sign()
    }

    fn verify(&self, role: &[u8], first: &[u8], second: &[u8], tag: &[u8]) -> bool {
        let mut msg = Vec::with_capacity(role.len() + first.len() + second.len());
        msg.extend_from_slice(role);
        msg.extend_from_slice(first);
        msg.extend_from_slice(second);
        hmac::verify(&self.0, &msg, tag).is_ok()
    }
}

fn challenge() -> std::io::Result<[u8; CHALLENGE]> {
    let mut c = [0u8; CHALLENGE];
    SystemRandom::new()
        .fill(&mut c)
        .map_err(|_| std::io::Error::other("no randomness for a challenge"))?;
    Ok(c)
}

fn refused(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, what.to_string())
}

async fn within<T>(f: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(PROOF_TIMEOUT, f)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no proof in time"))?
}

/// The caller's side: proves itself to the listener and checks the
/// listener's proof.
///
/// # Errors
/// The connection failed, or the listener does not hold the secret.
pub async fn prove(s: &mut TcpStream, secret: &Secret) -> std::io::Result<()> {
    within(async {
        let mut theirs = [0u8; CHALLENGE];
        s.read_exact(&mut theirs).await?;
        let ours = challenge()?;
        let mut out = Vec::with_capacity(CHALLENGE + TAG);
        out.extend_from_slice(&ours);
        out.extend_from_slice(secret.tag(b"client", &theirs, &ours).as_ref());
        s.write_all(&out).await?;
        let mut tag = [0u8; TAG];
        s.read_exact(&mut tag).await?;
        if !secret.verify(b"server", &ours, &theirs, &tag) {
            return Err(refused(
                "the controller listener does not hold the cluster's secret",
            ));
        }
        Ok(())
    })
    .await
}

/// The listener's side: checks the caller's proof and proves itself.
///
/// # Errors
/// The connection failed, or the caller does not hold the secret.
pub async fn check(s: &mut TcpStream, secret: &Secret) -> std::io::Result<()> {
    within(async {
        let ours = challenge()?;
        s.write_all(&ours).await?;
        let mut answer = [0u8; CHALLENGE + TAG];
        s.read_exact(&mut answer).await?;
        let (theirs, tag) = answer.split_at(CHALLENGE);
        if !secret.verify(b"client", &ours, theirs, tag) {
            return Err(refused("the caller does not hold the cluster's secret"));
        }
        s.write_all(secret.tag(b"server", theirs, &ours).as_ref())
            .await
    })
    .await
}

/// A connection to the controller listener at `addr`, proven when the
/// cluster has a secret.
///
/// # Errors
/// No connection, or the proof failed.
pub async fn connect(addr: &str, auth: &Auth) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    if let Some(secret) = auth {
        prove(&mut s, secret).await?;
    }
    Ok(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair(listener_secret: &[u8], caller_secret: &[u8]) -> (bool, bool) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let ls = Secret::new(listener_secret).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            check(&mut s, &ls).await.is_ok()
        });
        let auth = Some(Arc::new(Secret::new(caller_secret).unwrap()));
        let caller = connect(&addr, &auth).await.is_ok();
        (server.await.unwrap(), caller)
    }

    #[tokio::test]
    async fn only_holders_of_the_same_secret_get_through() {
        assert_eq!(
            pair(b"0123456789abcdef", b"0123456789abcdef").await,
            (true, true)
        );
        let (server, caller) = pair(b"0123456789abcdef", b"0123456789abcdeX").await;
        assert!(!server && !caller);
        assert!(Secret::new(b"short").is_err());
        assert_eq!(
            format!("{:?}", Secret::new(&[7; 16]).unwrap()),
            "Secret(***)"
        );
    }
}
