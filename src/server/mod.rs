//! The Kafka listeners: each accepts connections (at most
//! `--max-connections` across all, taken before `accept`), backs off on
//! accept errors, and runs one task per connection, tracked so that shutdown
//! can wait for them. On SSL and SASL_SSL listeners the task first completes
//! the TLS handshake (bounded in time).

pub mod connection;
mod limits;

pub use limits::Limits;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::SecurityProtocol;
use crate::security::{self, Session};

/// Longest a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
            p = limits.connection_slot() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            // The slot held for the next connection is given back and
            // taken again under the new number.
            () = limits.changed() => continue,
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
                Box::pin(tls_then_serve(&broker, stream, session, shutdown, limits)).await;
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
