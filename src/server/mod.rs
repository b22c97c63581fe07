//! The Kafka listeners: each accepts connections (at most
//! `--max-connections` across all, taken before `accept`), backs off on
//! accept errors, and runs one task per connection, tracked so that shutdown
//! can wait for them. On SSL and SASL_SSL listeners the task first completes
//! the TLS handshake (bounded in time).

pub mod connection;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::SecurityProtocol;
use crate::security::{self, Session};

/// Longest a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Granularity of the in-flight byte budget (permits are KiB).
const PERMIT_BYTES: usize = 1024;

/// What every listener shares: connection slots (`--max-connections`) and
/// the budget of request bytes held in memory at once
/// (`--max-inflight-request-bytes`).
#[derive(Debug, Clone)]
pub struct Limits {
    connections: Arc<Semaphore>,
    inflight: Arc<Semaphore>,
    /// Permits in the whole budget; one request never asks for more.
    inflight_permits: u32,
}

impl Limits {
    pub fn new(max_connections: usize, max_inflight_bytes: usize) -> Self {
        let permits = (max_inflight_bytes / PERMIT_BYTES).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            connections: Arc::new(Semaphore::new(max_connections)),
            inflight: Arc::new(Semaphore::new(permits)),
            inflight_permits: u32::try_from(permits).unwrap_or(u32::MAX),
        }
    }

    /// Waits for room for a request of `len` bytes in the in-flight
    /// budget; the room is given back when the permit is dropped.
    ///
    /// # Errors
    /// The budget was closed.
    pub async fn reserve(
        &self,
        len: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError> {
        let permits = u32::try_from(len.div_ceil(PERMIT_BYTES))
            .unwrap_or(u32::MAX)
            .min(self.inflight_permits);
        Arc::clone(&self.inflight).acquire_many_owned(permits).await
    }
}

/// Accepts connections on listener `index` until `shutdown` is cancelled.
pub async fn accept_loop(
    broker: Arc<Broker>,
    index: usize,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    limits: Limits,
) {
    let protocol = broker
        .config
        .listeners
        .get(index)
        .map_or(SecurityProtocol::Plaintext, |l| l.protocol);
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            p = Arc::clone(&limits.connections).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // Out of descriptors and similar: wait, then retry.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let broker = Arc::clone(&broker);
        let shutdown = shutdown.clone();
        let limits = limits.clone();
        broker.metrics.connections.fetch_add(1, Ordering::Relaxed);
        broker
            .metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        tracker.spawn(async move {
            let session = Session {
                listener: index,
                protocol,
                peer,
                principal: security::ANONYMOUS.to_string(),
            };
            if protocol.is_tls() {
                tls_then_serve(&broker, stream, session, shutdown, limits).await;
            } else {
                connection::serve(Arc::clone(&broker), stream, session, shutdown, limits).await;
            }
            broker.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Completes the TLS handshake, takes the principal from a client
/// certificate, and serves the connection.
async fn tls_then_serve(
    broker: &Arc<Broker>,
    stream: tokio::net::TcpStream,
    mut session: Session,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let Some(tls) = &broker.tls else {
        // Configuration validation makes this unreachable; refuse safely.
        tracing::error!(peer = %session.peer, "TLS listener without a certificate");
        return;
    };
    let mutual = session.protocol == SecurityProtocol::Ssl && tls.has_client_ca();
    let acceptor = tls.acceptor(mutual);
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return,
        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
    };
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            broker
                .metrics
                .tls_handshake_failures_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %session.peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            broker
                .metrics
                .tls_handshake_failures_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %session.peer, "TLS handshake timed out");
            return;
        }
    };
    if mutual {
        let subject = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| security::tls::principal_of_certificate(c));
        match subject {
            Some(p) => session.principal = p,
            None => {
                // A trusted certificate whose subject cannot be read must
                // not become ANONYMOUS and take its permissions.
                broker
                    .metrics
                    .tls_handshake_failures_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %session.peer, "client certificate without a usable subject; closing");
                return;
            }
        }
    }
    connection::serve(Arc::clone(broker), stream, session, shutdown, limits).await;
}
