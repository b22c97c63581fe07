//! The admin HTTP server: health, status, Prometheus metrics, topics, groups,
//! DLQ inspection and redrive, and a small live dashboard. Every response
//! carries security headers; requests pass the rate limit, the Host and
//! cross-site checks and the CORS guard ([`guard`]).

pub mod guard;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Phase};

/// Builds the router.
pub fn router(broker: Arc<Broker>) -> Router {
    let guard = Arc::new(
        guard::Guard::new(
            broker.config.args.http_rate_limit,
            &broker.config.args.allowed_origins,
        )
        .with_hosts(guard::Hosts::of(&broker.config)),
    );
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard.js", get(dashboard_js))
        .route("/dashboard.css", get(dashboard_css))
        .route("/api/health", get(health))
        .route("/api/status", get(status))
        .route("/api/metrics", get(metrics))
        .route("/metrics", get(metrics))
        .route("/api/topics", get(topics))
        .route("/api/groups", get(groups))
        .route("/api/dlq/{topic}", get(dlq_list))
        .route("/api/dlq/{topic}/redrive", post(dlq_redrive))
        .route("/api/backup", post(backup))
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(broker)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

/// Whether the data dir accepts writes right now.
fn data_dir_writable(broker: &Broker) -> bool {
    let probe = broker.config.args.data_dir.join(".health-probe");
    let ok = std::fs::write(&probe, b"ok").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

async fn health(State(b): State<Arc<Broker>>) -> Response {
    let phase = b.phase();
    let writable = data_dir_writable(&b);
    let healthy = phase == Phase::Serving && writable;
    let body = Json(json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "phase": match phase { Phase::Starting => "starting", Phase::Serving => "serving", Phase::Draining => "draining" },
        "data_dir_writable": writable,
    }));
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

fn status_json(b: &Broker) -> serde_json::Value {
    let topics = b.topics.list();
    let partitions: i64 = topics.iter().map(|t| i64::from(t.partition_count())).sum();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": b.node_id(),
        "cluster_id": b.topics.cluster_id(),
        "uptime_seconds": b.started.elapsed().as_secs(),
        "listeners": {
            "kafka": b.config.listen.to_string(),
            "advertised": format!("{}:{}", b.config.advertised_host, b.config.advertised_port),
            "http": b.config.http_listen.to_string(),
        },
        "topics": topics.len(),
        "partitions": partitions,
        "groups": b.groups.list().iter().filter(|g| b.coordinates_now(&g.id)).count(),
        "bytes_on_disk": b.disk_bytes(),
        "pending_retries": b.retries.pending(),
        "transactions": transactions_json(b),
        "log_cleaner": crate::log_cleaner::status(b),
        "connections": b.metrics.connections.load(std::sync::atomic::Ordering::Relaxed),
        "records_in_total": b.metrics.records_in_total(),
        "cluster": b.cluster.get().map(|c| c.status()),
        "replication": b.cluster.get().map(|_| {
            let (leading, following) = b.replicas.counts();
            serde_json::json!({
                "leading": leading,
                "following": following,
                "under_replicated": b.replicas.under_replicated(),
            })
        }),
    })
}

/// The transaction coordinator's open transactions (oldest first, at most
/// ten listed) and its counts.
fn transactions_json(b: &Broker) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let open = crate::txn::Coordinator::open_in(&b.txn_coordinators(), crate::broker::now_ms());
    let c = b.txn_counts();
    json!({
        "open": open.len(),
        "oldest_open_ms": open.first().map_or(0, |t| t.age_ms),
        "committed_total": c.committed.load(Relaxed),
        "aborted_total": c.aborted.load(Relaxed),
        "timed_out_total": c.timed_out.load(Relaxed),
        "oldest": open.iter().take(10).collect::<Vec<_>>(),
    })
}

async fn status(State(b): State<Arc<Broker>>) -> Json<serde_json::Value> {
    Json(status_json(&b))
}

async fn topics(State(b): State<Arc<Broker>>) -> Json<serde_json::Value> {
    let list: Vec<_> = b
        .topics
        .list()
        .iter()
        .map(|t| {
            let parts: Vec<_> = t
                .partitions()
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    json!({
                        "partition": i,
                        "log_start_offset": p.log_start_offset(),
                        "high_watermark": p.end_offset(),
                        "size_bytes": p.size_bytes(),
                    })
                })
                .collect();
            json!({
                "name": t.name,
                "id": t.id.to_string(),
                "configs": t.configs(),
                "partitions": parts,
            })
        })
        .collect();
    Json(json!({ "topics": list }))
}

async fn groups(State(b): State<Arc<Broker>>) -> Json<serde_json::Value> {
    let lag = b.group_lag();
    let now = std::time::Instant::now();
    let list: Vec<_> = b
        .groups
        .list()
        .into_iter()
        .filter(|g| b.coordinates_now(&g.id))
        .map(|g| {
            let partitions: Vec<_> = lag.iter().filter(|l| l.group == g.id).collect();
            let total: i64 = partitions.iter().map(|l| l.lag).sum();
            let mut out = json!({
                "group": g.id,
                "type": g.group_type,
                "state": g.state,
                "protocol_type": g.protocol_type,
                "lag": total,
                "partitions": partitions,
            });
            if g.group_type == "consumer" {
                if let Some(c) = b
                    .groups
                    .consumer
                    .describe(&g.id, || b.groups.offsets.group_state(&g.id))
                {
                    out["group_epoch"] = json!(c.epoch);
                    out["assignment_epoch"] = json!(c.assignment_epoch);
                    out["members"] = c
                        .members
                        .values()
                        .map(|m| {
                            json!({
                                "member_id": m.id,
                                "group_instance_id": m.instance_id,
                                "client_id": m.client_id,
                                "client_host": m.client_host,
                                "member_epoch": m.epoch,
                                "member_state": m.state.name(),
                                "member_protocol": if m.classic.is_some() { "classic" } else { "consumer" },
                                "subscribed_topics": m.topics,
                                "subscribed_topic_regex": m.regex,
                                "assigned": m.assigned,
                                "revoking": m.revoking,
                                "target": c.target.get(&m.id),
                                "last_heartbeat_ms_ago": m.since_heartbeat(now).as_millis() as u64,
                            })
                        })
                        .collect();
                }
            } else {
                let view = b.groups.describe(&g.id);
                out["generation"] = json!(view.as_ref().map_or(0, |v| v.generation));
                out["protocol"] = json!(view
                    .as_ref()
                    .map(|v| v.protocol.clone())
                    .unwrap_or_default());
                out["members"] = view
                    .map(|v| {
                        v.members
                            .iter()
                            .map(|m| {
                                json!({
                                    "member_id": m.member_id,
                                    "group_instance_id": m.group_instance_id,
                                    "client_id": m.client_id,
                                    "client_host": m.client_host,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
            }
            out
        })
        .collect();
    Json(json!({ "groups": list }))
}

/// Mutating endpoints: the bearer token when one is configured, else only
/// clients on loopback.
fn authorize(b: &Broker, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Box<Response>> {
    match &b.config.args.admin_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            // Constant-time comparison: no timing hint about the token.
            let ok = given.len() == token.len()
                && given
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if ok {
                Ok(())
            } else {
                Err(Box::new(
                    (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                        Json(json!({"error": "a valid admin token is required"})),
                    )
                        .into_response(),
                ))
            }
        }
        None if peer.ip().is_loopback() => Ok(()),
        None => Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                Json(json!({"error": "mutating endpoints are only open to loopback without --admin-token"})),
            )
                .into_response(),
        )),
    }
}

#[derive(Debug, serde::Deserialize)]
struct DlqQuery {
    partition: Option<i32>,
    #[serde(default)]
    offset: i64,
    limit: Option<usize>,
}

fn base_topic(topic: &str) -> &str {
    topic
        .strip_suffix(crate::retry::DLQ_SUFFIX)
        .unwrap_or(topic)
}

async fn dlq_list(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(topic): Path<String>,
    Query(q): Query<DlqQuery>,
) -> Response {
    // Dead letters are record payloads: the same rule as for mutations.
    if let Err(r) = authorize(&b, &headers, peer) {
        return *r;
    }
    let base = base_topic(&topic).to_string();
    let limit = q.limit.unwrap_or(100).min(10_000);
    let b2 = Arc::clone(&b);
    let res = tokio::task::spawn_blocking(move || {
        crate::retry::dlq_list(&b2.topics, &base, q.partition, q.offset, limit)
    })
    .await;
    match res {
        Ok(Ok(records)) => Json(json!({ "topic": topic, "records": records })).into_response(),
        Ok(Err(e)) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct RedriveBody {
    partition: Option<i32>,
    from_offset: Option<i64>,
    /// Exclusive end.
    to_offset: Option<i64>,
    #[serde(default)]
    to: crate::retry::RedriveTarget,
}

async fn dlq_redrive(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(topic): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&b, &headers, peer) {
        return *r;
    }
    // An empty body (`curl -X POST -H 'Content-Type: application/json'`)
    // redrives everything to the retry topics.
    let body: RedriveBody = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(x) => x,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({ "error": format!("bad redrive body: {e}") })),
                )
                    .into_response()
            }
        }
    };
    let base = base_topic(&topic).to_string();
    let b2 = Arc::clone(&b);
    let out = crate::replication::appender(&b);
    let res = tokio::task::spawn_blocking(move || {
        crate::retry::dlq_redrive(
            (&b2.topics, out.as_ref()),
            &base,
            body.partition,
            body.from_offset.unwrap_or(0),
            body.to_offset.unwrap_or(i64::MAX),
            body.to,
        )
    })
    .await;
    match res {
        Ok(Ok(n)) => Json(json!({ "topic": topic, "redriven": n })).into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct BackupBody {
    /// Directory on the broker's host; missing or empty.
    to: std::path::PathBuf,
}

async fn backup(
    State(b): State<Arc<Broker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Option<Json<BackupBody>>,
) -> Response {
    if let Err(r) = authorize(&b, &headers, peer) {
        return *r;
    }
    let Some(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "body must be {\"to\": \"/dir\"}"})),
        )
            .into_response();
    };
    let b2 = Arc::clone(&b);
    match tokio::task::spawn_blocking(move || crate::backup::backup(&b2, &body.to)).await {
        Ok(Ok(m)) => Json(json!({ "ok": true, "manifest": m })).into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The standard Prometheus process metrics, from `/proc/self`.
fn process_metrics() -> String {
    use std::fmt::Write;
    const PAGE: u64 = 4096;
    const TICKS_PER_SECOND: f64 = 100.0;
    let mut out = String::new();
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let mut f = statm
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        let (size, resident) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n# HELP process_virtual_memory_bytes Virtual memory size in bytes (includes mapped segments).\n# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes {}",
            resident * PAGE,
            size * PAGE
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        if let Some(max) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<u64>().ok())
        {
            let _ = writeln!(
                out,
                "# HELP process_max_fds Maximum number of open file descriptors.\n# TYPE process_max_fds gauge\nprocess_max_fds {max}"
            );
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start at ')'.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // utime and stime are fields 14 and 15 of stat: 11 and 12 here.
            let cpu = (ticks(11) + ticks(12)) / TICKS_PER_SECOND;
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
            );
        }
    }
    out
}

/// Gauges computed from broker state at scrape time.
fn state_gauges(b: &Broker) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP weir_partition_high_watermark Offset after the last record of the partition.\n# TYPE weir_partition_high_watermark gauge"
    );
    let mut sizes = String::new();
    let mut fsyncs = String::new();
    for t in b.topics.list() {
        let name = crate::metrics::escape(&t.name);
        for (i, p) in t.partitions().iter().enumerate() {
            let _ = writeln!(
                out,
                "weir_partition_high_watermark{{topic=\"{name}\",partition=\"{i}\"}} {}",
                p.end_offset()
            );
            let _ = writeln!(
                sizes,
                "weir_partition_size_bytes{{topic=\"{name}\",partition=\"{i}\"}} {}",
                p.size_bytes()
            );
            let _ = writeln!(
                fsyncs,
                "weir_partition_fsyncs_total{{topic=\"{name}\",partition=\"{i}\"}} {}",
                p.fsyncs()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP weir_partition_size_bytes Bytes of the partition's segments on disk.\n# TYPE weir_partition_size_bytes gauge\n{sizes}# HELP weir_disk_used_bytes Bytes of all partitions on disk.\n# TYPE weir_disk_used_bytes gauge\nweir_disk_used_bytes {}",
        b.disk_bytes()
    );
    let _ = write!(
        out,
        "# HELP weir_partition_fsyncs_total fsyncs of the partition's data since the broker started; one covers every acknowledgement waiting on it (group commit).\n# TYPE weir_partition_fsyncs_total counter\n{fsyncs}"
    );
    let _ = writeln!(
        out,
        "# HELP weir_consumer_group_lag Records between a group's committed offset and the high watermark.\n# TYPE weir_consumer_group_lag gauge"
    );
    for l in b.group_lag() {
        let _ = writeln!(
            out,
            "weir_consumer_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
            crate::metrics::escape(&l.group),
            crate::metrics::escape(&l.topic),
            l.partition,
            l.lag
        );
    }
    if let Some(c) = b.cluster.get() {
        let st = c.status();
        let _ = writeln!(
            out,
            "# HELP weir_controller_is_leader 1 when this node is the metadata quorum's leader (the controller).\n# TYPE weir_controller_is_leader gauge\nweir_controller_is_leader {}\n# HELP weir_controller_term The metadata quorum's Raft term; each rise is an election.\n# TYPE weir_controller_term gauge\nweir_controller_term {}\n# HELP weir_controller_present 1 when this node knows a controller.\n# TYPE weir_controller_present gauge\nweir_controller_present {}\n# HELP weir_cluster_brokers Brokers registered with the quorum.\n# TYPE weir_cluster_brokers gauge\nweir_cluster_brokers {}",
            u8::from(st.role == "leader"),
            st.term,
            u8::from(st.controller.is_some()),
            st.brokers.len(),
        );
        let _ = writeln!(
            out,
            "# HELP weir_offline_partitions Partitions with no live leader (as this node's metadata says).\n# TYPE weir_offline_partitions gauge\nweir_offline_partitions {}\n# HELP weir_under_replicated_partitions Partitions led here whose ISR is smaller than their replica set.\n# TYPE weir_under_replicated_partitions gauge\nweir_under_replicated_partitions {}\n# HELP weir_leader_elections_total Partition leader elections this node made as the controller.\n# TYPE weir_leader_elections_total counter\nweir_leader_elections_total {}\n# HELP weir_controller_connections_refused_total Connections to this node's controller listener refused because they did not prove the cluster's secret.\n# TYPE weir_controller_connections_refused_total counter\nweir_controller_connections_refused_total {}",
            st.offline_partitions,
            b.replicas.under_replicated(),
            st.leader_elections,
            st.refused_connections,
        );
        let lags = b.replicas.lag_by_follower(c.node_id());
        if !lags.is_empty() {
            let _ = writeln!(
                out,
                "# HELP weir_replica_lag_records Largest number of records a follower is behind this leader, over the partitions led here.\n# TYPE weir_replica_lag_records gauge"
            );
            for (id, lag) in lags {
                let _ = writeln!(out, "weir_replica_lag_records{{follower=\"{id}\"}} {lag}");
            }
        }
        if let (Some(rep), Some(last)) = (&st.replication, st.last_log_index) {
            let _ = writeln!(
                out,
                "# HELP weir_controller_replication_lag Quorum log entries a voter is behind the leader (on the leader).\n# TYPE weir_controller_replication_lag gauge"
            );
            for (id, matched) in rep {
                let lag = last.saturating_sub(matched.map_or(0, |m| m));
                let _ = writeln!(
                    out,
                    "weir_controller_replication_lag{{node=\"{id}\"}} {lag}"
                );
            }
        }
    }
    type Field = fn(&crate::retry::RetryCounters) -> &std::sync::atomic::AtomicU64;
    let counters = b.retries.all_counters();
    let families: [(&str, &str, Field); 3] = [
        (
            "weir_retry_scheduled_total",
            "Records handed back and held for a retry.",
            |c| &c.scheduled,
        ),
        (
            "weir_retry_delivered_total",
            "Held records delivered to their retry topic.",
            |c| &c.delivered,
        ),
        (
            "weir_dlq_records_total",
            "Records sent to the dead-letter topic.",
            |c| &c.dead_lettered,
        ),
    ];
    for (name, help, field) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (t, c) in &counters {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\"}} {}",
                crate::metrics::escape(t),
                field(c).load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP weir_retry_pending Records held for a later retry.\n# TYPE weir_retry_pending gauge\nweir_retry_pending {}",
        b.retries.pending()
    );
    {
        use std::sync::atomic::Ordering::Relaxed;
        let open = crate::txn::Coordinator::open_in(&b.txn_coordinators(), crate::broker::now_ms());
        let c = b.txn_counts();
        let _ = writeln!(
            out,
            "# HELP weir_transactions_open Transactions open (or being ended) on this coordinator.\n# TYPE weir_transactions_open gauge\nweir_transactions_open {}\n# HELP weir_transaction_oldest_open_seconds Age of the oldest open transaction.\n# TYPE weir_transaction_oldest_open_seconds gauge\nweir_transaction_oldest_open_seconds {}\n# HELP weir_transaction_oldest_open_timeout_seconds The timeout of the oldest open transaction.\n# TYPE weir_transaction_oldest_open_timeout_seconds gauge\nweir_transaction_oldest_open_timeout_seconds {}\n# HELP weir_transactions_committed_total Transactions committed.\n# TYPE weir_transactions_committed_total counter\nweir_transactions_committed_total {}\n# HELP weir_transactions_aborted_total Transactions aborted (by their producer, a new producer of their id, or a timeout).\n# TYPE weir_transactions_aborted_total counter\nweir_transactions_aborted_total {}\n# HELP weir_transactions_timed_out_total Transactions aborted because they were open longer than their timeout.\n# TYPE weir_transactions_timed_out_total counter\nweir_transactions_timed_out_total {}",
            open.len(),
            open.first().map_or(0.0, |t| t.age_ms as f64 / 1000.0),
            open.first().map_or(0.0, |t| f64::from(t.timeout_ms) / 1000.0),
            c.committed.load(Relaxed),
            c.aborted.load(Relaxed),
            c.timed_out.load(Relaxed),
        );
    }
    let _ = writeln!(
        out,
        "# HELP weir_uptime_seconds Seconds since the broker started.\n# TYPE weir_uptime_seconds gauge\nweir_uptime_seconds {}",
        b.started.elapsed().as_secs()
    );
    out.push_str(&process_metrics());
    let _ = writeln!(
        out,
        "# HELP weir_up Whether the broker is serving (1) or starting or draining (0).\n# TYPE weir_up gauge\nweir_up {}",
        i32::from(b.phase() == Phase::Serving)
    );
    out
}

async fn metrics(State(b): State<Arc<Broker>>) -> Response {
    let gauges = state_gauges(&b) + &crate::log_cleaner::prometheus(&b);
    let text = b.metrics.render(&gauges);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

async fn dashboard_js() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        include_str!("dashboard.js"),
    )
        .into_response()
}

async fn dashboard_css() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        include_str!("dashboard.css"),
    )
        .into_response()
}

/// Serves the admin API until `shutdown` is cancelled.
///
/// # Errors
/// Never after binding; serve errors are logged.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, shutdown: CancellationToken) {
    let app = router(Arc::clone(&broker)).into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.clone();
    let result = if broker.config.args.http_tls {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(tls_accept(
            Arc::clone(&broker),
            listener,
            tx,
            shutdown.clone(),
        ));
        let tls = TlsListener { rx, local: None };
        axum::serve(tls.tap_io(|_| {}), app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    } else {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "admin HTTP server failed");
    }
}

/// Accepted TLS connections of the admin API: handshakes run in their own
/// tasks (bounded in time), so a slow client never holds up `accept`.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: Option<SocketAddr>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor stopped (shutdown): wait for the server to stop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.local
            .ok_or_else(|| std::io::Error::other("TLS listener address unknown"))
    }
}

async fn tls_accept(
    broker: Arc<Broker>,
    listener: TcpListener,
    tx: tokio::sync::mpsc::Sender<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(256));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(tls) = &broker.tls else { return };
        let acceptor = tls.acceptor(false);
        let tx = tx.clone();
        // Handshakes in progress are bounded; past that, new connections
        // are refused.
        let Ok(slot) = Arc::clone(&handshakes).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(s)) => {
                    let _ = tx.send((s, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin HTTP TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "admin HTTP TLS handshake timed out"),
            }
        });
    }
}
