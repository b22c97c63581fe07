//! weir: a Kafka-protocol-compatible message broker.
//!
//! # Layout
//!
//! - [`config`]: every setting, from flags and `WEIR_*` env vars, validated.
//! - [`server`]: the TCP accept loop and per-connection request framing.
//! - [`protocol`]: decoding and encoding over the `kafka-protocol` crate, and
//!   the one table of supported API versions.
//! - [`api`]: one thin handler module per API family.
//! - [`log`]: the storage engine (segments, recovery, durability); it knows
//!   nothing of the protocol.
//! - [`topics`]: the topic registry, topic configs and their persistence.
//! - [`group`]: the consumer-group coordinator and committed offsets.
//! - [`retry`]: broker-managed retries, their durable store, dead letters.
//! - [`http`]: the admin HTTP API (health, status, metrics, dashboard).
//! - [`metrics`]: counters and latency histograms.
//! - [`backup`]: online backup and offline restore of a data dir.
//! - [`broker`]: the state the handlers share.
//!
//! [`start`] brings a broker up on the configured listeners and returns a
//! handle; [`run`] serves until a shutdown future completes.

pub mod api;
pub mod backup;
pub mod broker;
pub mod broker_configs;
pub mod clock;
pub mod cluster;
pub mod config;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod http;
pub mod log;
mod log_cleaner;
pub mod log_levels;
pub mod memory;
pub mod metrics;
pub mod protocol;
pub mod replicas;
pub mod replication;
pub mod retry;
pub mod security;
pub mod server;
pub mod topics;
pub mod txn;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use broker::{Broker, Phase};
use config::Config;

/// Errors that stop the broker from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Start(#[from] broker::StartError),
    #[error("failed to bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A running broker.
#[derive(Debug)]
pub struct Running {
    /// Address the first Kafka listener is bound to (the others are in
    /// `broker.config.listeners`).
    pub kafka_addr: SocketAddr,
    /// Address the admin HTTP listener is bound to.
    pub http_addr: SocketAddr,
    pub broker: Arc<Broker>,
    shutdown: CancellationToken,
    /// Stops the admin HTTP server last, so health reports draining.
    http_shutdown: CancellationToken,
    tracker: TaskTracker,
    tasks: Vec<JoinHandle<()>>,
    http_task: JoinHandle<()>,
}

/// Opens the data dir, binds both listeners and starts serving.
///
/// When the advertised port is 0 (tests), the bound Kafka port is advertised.
///
/// # Errors
/// An unusable data dir or a listener that cannot be bound.
pub async fn start(mut config: Config) -> Result<Running, Error> {
    let mut kafka = Vec::new();
    for l in &mut config.listeners {
        let bound = TcpListener::bind(l.addr)
            .await
            .map_err(|source| Error::Bind {
                what: "a Kafka listener",
                addr: l.addr,
                source,
            })?;
        let addr = bound.local_addr().map_err(|source| Error::Bind {
            what: "a Kafka listener",
            addr: l.addr,
            source,
        })?;
        if l.advertised_port == 0 || l.addr.port() == 0 {
            l.advertised_port = i32::from(addr.port());
        }
        l.addr = addr;
        kafka.push(bound);
    }
    let kafka_addr = config.listeners[0].addr;
    config.listen = kafka_addr;
    config.advertised_port = config.listeners[0].advertised_port;
    let http = TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| Error::Bind {
            what: "the admin HTTP listener",
            addr: config.http_listen,
            source,
        })?;
    let http_addr = http.local_addr().map_err(|source| Error::Bind {
        what: "the admin HTTP listener",
        addr: config.http_listen,
        source,
    })?;
    let broker = Broker::open(config)?;
    if let Some(voters) = &broker.config.args.controller_quorum_voters {
        let cluster = start_cluster(&broker, voters).await?;
        let _ = broker.cluster.set(Arc::clone(&cluster));
        tokio::spawn(follow_security(Arc::clone(&broker), Arc::clone(&cluster)));
        tokio::spawn(replication::run_retries(
            Arc::clone(&broker),
            Arc::clone(&cluster),
        ));
        tokio::spawn(replication::run(Arc::clone(&broker), cluster));
    }
    let shutdown = CancellationToken::new();
    let http_shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut tasks = Vec::new();
    // Connection slots and the in-flight byte budget, shared by every
    // listener.
    let limits = server::Limits::new(
        broker.config.args.max_connections,
        broker.config.args.max_inflight_request_bytes,
    );
    for (index, listener) in kafka.into_iter().enumerate() {
        tasks.push(tokio::spawn(server::accept_loop(
            Arc::clone(&broker),
            index,
            listener,
            shutdown.clone(),
            tracker.clone(),
            limits.clone(),
        )));
    }
    tasks.extend([
        tokio::spawn(retention_loop(Arc::clone(&broker), shutdown.clone())),
        tokio::spawn(log_cleaner::cleaner_loop(
            Arc::clone(&broker),
            shutdown.clone(),
        )),
        tokio::spawn(checkpoint_loop(Arc::clone(&broker), shutdown.clone())),
        tokio::spawn(tls_reload_loop(Arc::clone(&broker), shutdown.clone())),
        tokio::spawn(group_ticker(Arc::clone(&broker), shutdown.clone())),
        tokio::spawn(retry_loop(Arc::clone(&broker), shutdown.clone())),
        tokio::spawn(txn_loop(Arc::clone(&broker), shutdown.clone())),
        tokio::spawn(memory::trim_loop(Arc::clone(&broker), shutdown.clone())),
        tokio::spawn(limits_loop(
            Arc::clone(&broker),
            limits.clone(),
            shutdown.clone(),
        )),
    ]);
    let http_task = tokio::spawn(http::serve(
        Arc::clone(&broker),
        http,
        http_shutdown.clone(),
    ));
    broker.set_phase(Phase::Serving);
    let listeners: Vec<String> = broker
        .config
        .listeners
        .iter()
        .map(|l| {
            format!(
                "{}://{} (advertised {}:{})",
                l.protocol.name(),
                l.addr,
                l.advertised_host,
                l.advertised_port
            )
        })
        .collect();
    tracing::info!(
        kafka = %listeners.join(", "),
        http = %http_addr,
        http_tls = broker.config.args.http_tls,
        authorizer = ?broker.config.args.authorizer,
        data_dir = %broker.config.args.data_dir.display(),
        "weir is serving"
    );
    Ok(Running {
        kafka_addr,
        http_addr,
        broker,
        shutdown,
        http_shutdown,
        tracker,
        tasks,
        http_task,
    })
}

/// Joins the metadata quorum named by `--controller-quorum-voters`.
async fn start_cluster(broker: &Broker, voters: &str) -> Result<Arc<cluster::Cluster>, Error> {
    let args = &broker.config.args;
    let bad = |e: String| Error::Cluster(e);
    let voters = cluster::parse_voters(voters).map_err(bad)?;
    let node_id = u64::try_from(args.node_id).map_err(|e| bad(e.to_string()))?;
    let listen = match &args.controller_listen {
        Some(l) => l.clone(),
        None => voters
            .get(&node_id)
            .cloned()
            .ok_or_else(|| bad(format!("node {node_id} is not a voter")))?,
    };
    let auth = match &args.controller_secret_file {
        None => None,
        Some(path) => {
            let read = std::fs::read(path)
                .map_err(|e| bad(format!("--controller-secret-file {}: {e}", path.display())))?;
            let secret = read.strip_suffix(b"\n").unwrap_or(&read);
            let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
            let secret = cluster::Secret::new(secret)
                .map_err(|e| bad(format!("--controller-secret-file {}: {e}", path.display())))?;
            Some(Arc::new(secret))
        }
    };
    let settings = cluster::Settings {
        node_id,
        auth,
        listen,
        voters,
        me: cluster::BrokerInfo {
            id: node_id,
            kafka: format!(
                "{}:{}",
                broker.config.advertised_host, broker.config.advertised_port
            ),
            http: broker.config.http_listen.to_string(),
            listeners: broker
                .config
                .listeners
                .iter()
                .enumerate()
                .map(|(i, l)| match i {
                    // The first listener's advertised address as clients
                    // are given it on a single node.
                    0 => format!(
                        "{}:{}",
                        broker.config.advertised_host, broker.config.advertised_port
                    ),
                    _ => format!("{}:{}", l.advertised_host, l.advertised_port),
                })
                .collect(),
            fenced: false,
            // A new number at every start of the process.
            incarnation: uuid::Uuid::new_v4().as_u64_pair().0,
        },
        heartbeat: Duration::from_millis(args.controller_heartbeat_ms),
        session_timeout: Duration::from_millis(args.broker_session_timeout_ms),
        rebalance_interval: (args.leader_imbalance_check_interval_ms > 0)
            .then(|| Duration::from_millis(args.leader_imbalance_check_interval_ms)),
        cluster_id: broker.topics.cluster_id().to_string(),
    };
    cluster::Cluster::start(&args.data_dir, settings)
        .await
        .map_err(|e| bad(e.to_string()))
}

/// Reloads the TLS files when they change.
async fn tls_reload_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    if broker.tls.is_none() {
        return;
    }
    let every = Duration::from_millis(broker.config.args.tls_reload_interval_ms);
    every_interval(broker, shutdown, every, |b| {
        if let Some(tls) = &b.tls {
            match tls.reload_if_changed() {
                Ok(true) => tracing::info!("reloaded the TLS certificate and key"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "TLS files changed but cannot be used; keeping the previous ones"),
            }
        }
    })
    .await;
}

/// Runs `work` on the blocking pool every `every` until shutdown.
async fn every_interval(
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    every: Duration,
    work: fn(&Broker),
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let b = Arc::clone(&broker);
        let _ = tokio::task::spawn_blocking(move || work(&b)).await;
    }
}

/// In a cluster: keeps this broker's users, ACLs and quotas those of the
/// quorum.
async fn follow_security(broker: Arc<Broker>, cluster: Arc<cluster::Cluster>) {
    let mut changes = cluster.changes();
    loop {
        broker.sync_security();
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = cluster.stopped() => return,
        }
    }
}

/// The transaction coordinator's periodic work: at start, markers a crash
/// lost and decisions not carried out; then the aborts of transactions open
/// longer than their timeout.
async fn txn_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    if broker.cluster.get().is_some() {
        return cluster_txn_loop(broker, shutdown).await;
    }
    broker
        .txns
        .recover(&api::txns::TxnParts(&broker), broker::now_ms());
    let every = Duration::from_millis(
        broker
            .config
            .args
            .transaction_abort_timed_out_transaction_cleanup_interval_ms,
    );
    loop {
        broker
            .txns
            .tick(&api::txns::TxnParts(&broker), broker::now_ms())
            .await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// A cluster's transaction coordinators: each `__transaction_state`
/// partition this broker comes to lead is loaded within a second, and its
/// decided transactions carried out at once; then the periodic work.
async fn cluster_txn_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let every = Duration::from_millis(
        broker
            .config
            .args
            .transaction_abort_timed_out_transaction_cleanup_interval_ms,
    );
    let mut last_tick = tokio::time::Instant::now();
    loop {
        broker.load_txn_partitions().await;
        let due = last_tick.elapsed() >= every;
        if due {
            last_tick = tokio::time::Instant::now();
        }
        let parts = api::txns::ClusterParts(&broker);
        for c in broker.txn_coordinators() {
            if c.take_fresh() || due {
                c.tick(&parts, broker::now_ms()).await;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every.min(Duration::from_secs(1))) => {}
        }
    }
}

async fn retention_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let every = Duration::from_millis(broker.config.args.log_retention_check_interval_ms.max(100));
    every_interval(broker, shutdown, every, |b| {
        let now = broker::now_ms();
        for t in b.topics.list() {
            for p in t.partitions() {
                p.apply_retention(now);
            }
        }
    })
    .await;
}

/// Writes recovery points and releases idle segment maps.
async fn checkpoint_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let every = Duration::from_millis(broker.config.args.recovery_checkpoint_interval_ms);
    every_interval(broker, shutdown, every, |b| {
        b.topics.checkpoint_all();
        let idle = i64::try_from(b.config.args.segment_idle_release_ms).unwrap_or(i64::MAX);
        let before = broker::now_ms().saturating_sub(idle);
        for t in b.topics.list() {
            for p in t.partitions() {
                p.release_idle(before);
            }
        }
    })
    .await;
}

/// Delivers held retries as they fall due, until `shutdown`.
async fn retry_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let sync = broker.config.args.fsync != config::FsyncPolicy::Never;
    loop {
        let now = broker::now_ms();
        let wait = match broker.retries.next_due() {
            Some(due) if due <= now => Duration::ZERO,
            Some(due) => Duration::from_millis((due - now).min(60_000) as u64),
            None => Duration::from_secs(60),
        };
        if !wait.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = broker.retries.held() => continue,
                () = tokio::time::sleep(wait) => continue,
            }
        }
        let b = Arc::clone(&broker);
        let out = replication::appender(&broker);
        let res = tokio::task::spawn_blocking(move || {
            b.retries
                .deliver_due(&b.topics, out.as_ref(), sync, broker::now_ms())
        })
        .await;
        match res {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "retry delivery failed; will try again");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e) => tracing::error!(error = %e, "retry delivery task failed"),
        }
    }
}

/// Applies a dynamic `max.connections` (or its removal, back to
/// `--max-connections`) to the listeners' connection slots within half a
/// second of its change.
async fn limits_loop(broker: Arc<Broker>, limits: server::Limits, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let want = broker
                    .broker_configs
                    .max_connections()
                    .unwrap_or(broker.config.args.max_connections);
                if want != limits.max_connections() {
                    tracing::info!(from = limits.max_connections(), to = want, "connection slots changed");
                    limits.set_max_connections(want);
                }
            }
        }
    }
}

async fn group_ticker(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                broker.groups.tick(now);
                for (group, state) in broker.groups.consumer_tick(now) {
                    let change = crate::group::Change::GroupState { group: group.clone(), state };
                    if let Err(code) = broker.store_offsets(&group, vec![change]).await {
                        tracing::warn!(group = %group, code, "failed to store a consumer group's state");
                    }
                }
            }
        }
    }
}

impl Running {
    /// Drains and stops: health turns 503, listeners close, in-flight
    /// requests get the grace period, then every partition is fsynced.
    pub async fn shutdown(self) {
        self.broker.set_phase(Phase::Draining);
        // Wake long-polling fetches so they answer now.
        self.broker.phase_changed.notify_waiters();
        self.shutdown.cancel();
        self.tracker.close();
        let grace = Duration::from_millis(self.broker.config.args.shutdown_grace_ms);
        let drained = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
        for t in self.tasks {
            t.abort();
        }
        if let Some(c) = self.broker.cluster.get() {
            c.shutdown().await;
        }
        let b = Arc::clone(&self.broker);
        let _ = tokio::task::spawn_blocking(move || b.close_cleanly(drained)).await;
        self.http_shutdown.cancel();
        if tokio::time::timeout(Duration::from_secs(2), self.http_task)
            .await
            .is_err()
        {
            tracing::warn!("admin HTTP server did not stop in time");
        }
        tracing::info!("weir stopped");
    }
}

/// Raises the soft limit on open files to the hard limit: each partition's
/// active segment holds one descriptor, every connection another.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let from = lim.current;
        lim.current = lim.maximum;
        match setrlimit(Resource::Nofile, lim) {
            Ok(()) => {
                tracing::debug!(from = ?from, to = ?lim.current, "raised the open files limit")
            }
            Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
        }
    }
}

/// Serves until `signal` completes, then shuts down gracefully.
///
/// # Errors
/// See [`start`].
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), Error> {
    raise_open_files_limit();
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
