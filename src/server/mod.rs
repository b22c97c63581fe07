//! The Kafka listener: accepts connections (at most `--max-connections`,
//! taken before `accept`), backs off on accept errors, and runs one task per
//! connection, tracked so that shutdown can wait for them.

pub mod connection;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;

/// Accepts connections until `shutdown` is cancelled.
pub async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(broker.config.args.max_connections));
    let inflight = connection::inflight_budget(broker.config.args.max_inflight_request_bytes);
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            p = Arc::clone(&limit).acquire_owned() => match p {
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
        let inflight = Arc::clone(&inflight);
        broker.metrics.connections.fetch_add(1, Ordering::Relaxed);
        broker
            .metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        tracker.spawn(async move {
            connection::serve(Arc::clone(&broker), stream, peer, shutdown, inflight).await;
            broker.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}
