//! Every broker setting: its flag, its `WEIR_*` environment variable, its
//! default, and the validation that names it when it is wrong.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

/// The listener protocols and SASL mechanisms are the security layer's.
pub use crate::security::{SecurityProtocol, SASL_MECHANISMS};

/// A setting that must never reach a log line: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// When produced data is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsyncPolicy {
    /// acks=all is answered after the fsync that covers it (group commit).
    AcksAll,
    /// Every produce is answered after an fsync.
    Always,
    /// Never fsync on the produce path (clean shutdown still flushes).
    Never,
}

/// Whether requests are checked against ACLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthorizerMode {
    /// Every principal may do everything.
    Off,
    /// Kafka's ACL authorizer; what no ACL allows is denied.
    Acl,
}

/// One Kafka listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: i32,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings of `weir serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Kafka listeners: `host:port`, or a comma list of
    /// `PROTOCOL://host:port` with PROTOCOL one of PLAINTEXT, SSL,
    /// SASL_PLAINTEXT, SASL_SSL (Kafka's `listeners`).
    #[arg(long, env = "WEIR_LISTEN", default_value = "0.0.0.0:9092")]
    pub listen: String,
    /// host:port clients are told to connect to, or a comma list matched to
    /// the listeners by position. Default: localhost:<listen port>.
    #[arg(long, env = "WEIR_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// PEM certificate chain for SSL and SASL_SSL listeners (and --http-tls).
    #[arg(long, env = "WEIR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) of --tls-cert.
    #[arg(long, env = "WEIR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: SSL listeners require client certificates signed
    /// by one of them (mutual TLS); the certificate subject is the principal.
    #[arg(long, env = "WEIR_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for changes and reloaded, in ms.
    #[arg(
        long,
        env = "WEIR_TLS_RELOAD_INTERVAL_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(100..)
    )]
    pub tls_reload_interval_ms: u64,
    /// SASL mechanisms offered on SASL listeners (comma list).
    #[arg(
        long,
        env = "WEIR_SASL_MECHANISMS",
        value_delimiter = ',',
        default_value = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    )]
    pub sasl_mechanisms: Vec<String>,
    /// Delay before a failed SASL authentication is answered and the
    /// connection closed, in ms (Kafka's
    /// connection.failed.authentication.delay.ms).
    #[arg(long, env = "WEIR_SASL_FAILURE_DELAY_MS", default_value_t = 500)]
    pub sasl_failure_delay_ms: u64,
    /// Principals that bypass ACLs: a comma list (`User:admin,User:ops`), or
    /// a semicolon list as Kafka's super.users when a principal holds commas
    /// (`User:CN=ops,O=Example;User:admin`).
    #[arg(long, env = "WEIR_SUPER_USERS")]
    pub super_users: Vec<String>,
    /// `off`, or `acl`: deny what no ACL allows.
    #[arg(long, env = "WEIR_AUTHORIZER", value_enum, default_value = "off")]
    pub authorizer: AuthorizerMode,
    /// Serve the admin HTTP API over TLS with --tls-cert and --tls-key.
    #[arg(long, env = "WEIR_HTTP_TLS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub http_tls: bool,
    /// Admin HTTP listener address.
    #[arg(long, env = "WEIR_HTTP_LISTEN", default_value = "0.0.0.0:9644")]
    pub http_listen: String,
    /// Directory holding topics, offsets and metadata.
    #[arg(long, env = "WEIR_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// This broker's node id.
    #[arg(long, env = "WEIR_NODE_ID", default_value_t = 0)]
    pub node_id: i32,
    /// The cluster's metadata quorum, as Kafka's `controller.quorum.voters`:
    /// `ID@HOST:PORT,...`, the node ids and controller addresses of every
    /// voter, this node included. Absent: a single broker, with no quorum.
    #[arg(long, env = "WEIR_CONTROLLER_QUORUM_VOTERS")]
    pub controller_quorum_voters: Option<String>,
    /// Where this node listens for the quorum's messages. Default: its own
    /// entry in --controller-quorum-voters.
    #[arg(long, env = "WEIR_CONTROLLER_LISTEN")]
    pub controller_listen: Option<String>,
    /// A file holding the cluster's secret (at least 16 bytes; a trailing
    /// newline is dropped): every connection between brokers on the
    /// controller listeners proves it before any message. Give every node
    /// the same one.
    #[arg(long, env = "WEIR_CONTROLLER_SECRET_FILE")]
    pub controller_secret_file: Option<PathBuf>,
    /// The quorum's heartbeat in milliseconds; a leader is replaced after
    /// 5 to 10 missed heartbeats.
    #[arg(long, env = "WEIR_CONTROLLER_HEARTBEAT_MS", default_value_t = 100)]
    pub controller_heartbeat_ms: u64,
    /// A broker that has not answered the controller for this many
    /// milliseconds is fenced, and its partitions get new leaders (Kafka's
    /// `broker.session.timeout.ms`).
    #[arg(long, env = "WEIR_BROKER_SESSION_TIMEOUT_MS", default_value_t = 1000)]
    pub broker_session_timeout_ms: u64,
    /// Every this many milliseconds the controller gives each partition
    /// back to its preferred replica (the first in its replica list) when
    /// that replica is live and in sync (Kafka's
    /// `leader.imbalance.check.interval.seconds` with
    /// `auto.leader.rebalance.enable`); 0 turns it off.
    #[arg(
        long,
        env = "WEIR_LEADER_IMBALANCE_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub leader_imbalance_check_interval_ms: u64,
    /// Replicas of a topic created without a replication factor (Kafka's
    /// `default.replication.factor`).
    #[arg(long, env = "WEIR_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    pub default_replication_factor: i16,
    /// Partitions of the internal topics `__consumer_offsets` and `__retry`
    /// in a cluster (Kafka's `offsets.topic.num.partitions`). Each
    /// `__consumer_offsets` partition's leader coordinates the groups that
    /// hash to it.
    #[arg(long, env = "WEIR_OFFSETS_TOPIC_NUM_PARTITIONS", default_value_t = 16)]
    pub offsets_topic_num_partitions: i32,
    /// Replicas of each partition of `__consumer_offsets` and `__retry`, at
    /// most the number of voters (Kafka's
    /// `offsets.topic.replication.factor`). They are made once that many
    /// brokers are up.
    #[arg(
        long,
        env = "WEIR_OFFSETS_TOPIC_REPLICATION_FACTOR",
        default_value_t = 3
    )]
    pub offsets_topic_replication_factor: i16,
    /// A follower that has not caught up with its leader for this many
    /// milliseconds leaves the ISR (Kafka's `replica.lag.time.max.ms`).
    #[arg(long, env = "WEIR_REPLICA_LAG_TIME_MAX_MS", default_value_t = 10_000)]
    pub replica_lag_time_max_ms: u64,
    /// Longest `transaction.timeout.ms` a transactional producer may ask
    /// for, in ms (Kafka's `transaction.max.timeout.ms`).
    #[arg(
        long,
        env = "WEIR_TRANSACTION_MAX_TIMEOUT_MS",
        default_value_t = 900_000
    )]
    pub transaction_max_timeout_ms: i32,
    /// How often transactions open longer than their timeout are looked
    /// for and aborted, in ms (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    #[arg(
        long,
        env = "WEIR_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// A transactional id with no transaction open that has not been used
    /// for this long is forgotten, in ms (Kafka's
    /// `transactional.id.expiration.ms`).
    #[arg(
        long,
        env = "WEIR_TRANSACTIONAL_ID_EXPIRATION_MS",
        default_value_t = 604_800_000
    )]
    pub transactional_id_expiration_ms: i64,
    /// `text` or `json`. Default: text on a terminal, else json.
    #[arg(long, env = "WEIR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter in RUST_LOG syntax.
    #[arg(long, env = "WEIR_LOG", default_value = "info")]
    pub log_level: String,
    /// Durability policy: acks-all, always or never.
    #[arg(long, env = "WEIR_FSYNC", value_enum, default_value = "acks-all")]
    pub fsync: FsyncPolicy,
    /// Create unknown topics on Metadata and Produce.
    #[arg(long, env = "WEIR_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics and of CreateTopics with -1.
    #[arg(long, env = "WEIR_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: i32,
    /// Origins allowed to call the admin HTTP API cross-origin (comma list).
    #[arg(
        long,
        env = "WEIR_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_origins: Vec<String>,
    /// Extra host names the admin HTTP API answers to (comma list), besides
    /// IP addresses, `localhost`, the --http-listen host and the advertised
    /// hosts; any other `Host` header is refused (DNS rebinding). `*`
    /// accepts every name.
    #[arg(
        long,
        env = "WEIR_HTTP_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub http_allowed_hosts: Vec<String>,
    /// Bearer token required by mutating admin HTTP endpoints.
    #[arg(long, env = "WEIR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// Admin HTTP requests per second per client IP (burst 2x).
    #[arg(long, env = "WEIR_HTTP_RATE_LIMIT", default_value_t = 50)]
    pub http_rate_limit: u32,
    /// Largest request frame accepted, in bytes (Kafka's socket.request.max.bytes).
    #[arg(long, env = "WEIR_MAX_REQUEST_BYTES", default_value_t = 104_857_600)]
    pub max_request_bytes: usize,
    /// Cap on request bytes held in memory across all connections at once
    /// (Kafka's queued.max.request.bytes).
    #[arg(long, env = "WEIR_MAX_INFLIGHT_REQUEST_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_inflight_request_bytes: usize,
    /// Most concurrent client connections.
    #[arg(long, env = "WEIR_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Close connections idle this long, in ms (Kafka's connections.max.idle.ms).
    #[arg(long, env = "WEIR_CONNECTIONS_MAX_IDLE_MS", default_value_t = 600_000)]
    pub connections_max_idle_ms: u64,
    /// Largest size one produced record batch may have once decompressed,
    /// in bytes: compressed batches are decompressed on append to check
    /// their records, and one over this is refused with MESSAGE_TOO_LARGE.
    /// Also bounds decompression for retries, DLQ reads and timestamp
    /// lookups.
    #[arg(
        long,
        env = "WEIR_MAX_DECOMPRESSED_BATCH_BYTES",
        default_value_t = crate::log::compression::DEFAULT_MAX_DECOMPRESSED_BYTES
    )]
    pub max_decompressed_batch_bytes: usize,
    /// Default segment.bytes for topics that do not set it.
    #[arg(long, env = "WEIR_LOG_SEGMENT_BYTES", default_value_t = 1_073_741_824)]
    pub log_segment_bytes: u64,
    /// Default retention.ms for topics that do not set it (-1: forever).
    #[arg(long, env = "WEIR_LOG_RETENTION_MS", default_value_t = 604_800_000)]
    pub log_retention_ms: i64,
    /// How often retention runs, in ms.
    #[arg(
        long,
        env = "WEIR_LOG_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub log_retention_check_interval_ms: u64,
    /// Run the log cleaner, which compacts topics whose cleanup.policy
    /// includes compact (Kafka's log.cleaner.enable).
    #[arg(long, env = "WEIR_LOG_CLEANER_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub log_cleaner_enable: bool,
    /// How long the log cleaner sleeps when no partition needs cleaning, in
    /// ms (Kafka's log.cleaner.backoff.ms).
    #[arg(
        long,
        env = "WEIR_LOG_CLEANER_BACKOFF_MS",
        default_value_t = 15_000,
        value_parser = clap::value_parser!(u64).range(10..)
    )]
    pub log_cleaner_backoff_ms: u64,
    /// Memory of the log cleaner's key → offset map, in bytes: 24 bytes a
    /// key; a pass cleans as far as the keys that fit (Kafka's
    /// log.cleaner.dedupe.buffer.size).
    #[arg(
        long,
        env = "WEIR_LOG_CLEANER_DEDUPE_BUFFER_SIZE",
        default_value_t = 134_217_728,
        value_parser = clap::value_parser!(u64).range(24_576..)
    )]
    pub log_cleaner_dedupe_buffer_size: u64,
    /// Bytes per second the log cleaner reads and writes at most (Kafka's
    /// log.cleaner.io.max.bytes.per.second; the default is no limit).
    #[arg(
        long,
        env = "WEIR_LOG_CLEANER_IO_MAX_BYTES_PER_SECOND",
        default_value = "1.7976931348623157e308",
        value_parser = positive_f64
    )]
    pub log_cleaner_io_max_bytes_per_second: f64,
    /// How often each partition's recovery point is written, in ms: start-up
    /// after a crash scans only what was written since (Kafka's
    /// log.flush.offset.checkpoint.interval.ms).
    #[arg(
        long,
        env = "WEIR_RECOVERY_CHECKPOINT_INTERVAL_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(100..)
    )]
    pub recovery_checkpoint_interval_ms: u64,
    /// Sealed segments not read for this long have their maps released, in
    /// ms.
    #[arg(long, env = "WEIR_SEGMENT_IDLE_RELEASE_MS", default_value_t = 60_000)]
    pub segment_idle_release_ms: u64,
    /// Delay of an empty group's first rebalance, in ms (Kafka's
    /// group.initial.rebalance.delay.ms).
    #[arg(
        long,
        env = "WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3_000
    )]
    pub group_initial_rebalance_delay_ms: u64,
    /// Smallest session timeout a group member may ask for, in ms.
    #[arg(
        long,
        env = "WEIR_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6_000
    )]
    pub group_min_session_timeout_ms: i32,
    /// Largest session timeout a group member may ask for, in ms.
    #[arg(
        long,
        env = "WEIR_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    pub group_max_session_timeout_ms: i32,
    /// Session timeout of consumer-protocol (KIP-848) group members, in ms
    /// (Kafka's group.consumer.session.timeout.ms).
    #[arg(
        long,
        env = "WEIR_GROUP_CONSUMER_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    pub group_consumer_session_timeout_ms: u64,
    /// How often consumer-protocol (KIP-848) group members heartbeat, in
    /// ms (Kafka's group.consumer.heartbeat.interval.ms).
    #[arg(
        long,
        env = "WEIR_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS",
        default_value_t = 5_000
    )]
    pub group_consumer_heartbeat_interval_ms: u64,
    /// Grace period for in-flight requests at shutdown, in ms.
    #[arg(long, env = "WEIR_SHUTDOWN_GRACE_MS", default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,
}

/// A setting that failed validation, named by its flag.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for --{flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

/// A number above zero (a rate).
fn positive_f64(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(n) if n > 0.0 && !n.is_nan() => Ok(n),
        _ => Err("must be a number above 0".into()),
    }
}

fn bad(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        reason: reason.into(),
    }
}

/// Validated broker configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The first listener's address (the one tests and tools use).
    pub listen: SocketAddr,
    /// The first listener's advertised host.
    pub advertised_host: String,
    /// The first listener's advertised port.
    pub advertised_port: i32,
    /// Every Kafka listener, in the order given.
    pub listeners: Vec<ListenerConfig>,
    pub http_listen: SocketAddr,
    pub args: ServeArgs,
}

/// Splits `PROTOCOL://host:port` (PROTOCOL defaults to PLAINTEXT).
fn split_protocol(
    flag: &'static str,
    value: &str,
) -> Result<(SecurityProtocol, String), ConfigError> {
    let v = value.trim();
    match v.split_once("://") {
        Some((proto, rest)) => {
            let p = SecurityProtocol::parse(proto).ok_or_else(|| {
                bad(
                    flag,
                    format!(
                        "unknown security protocol {proto:?}; use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                    ),
                )
            })?;
            Ok((p, rest.to_string()))
        }
        None => Ok((SecurityProtocol::Plaintext, v.to_string())),
    }
}

fn resolve(flag: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    v.to_socket_addrs()
        .map_err(|e| bad(flag, format!("{v:?} is not a host:port address ({e})")))?
        .next()
        .ok_or_else(|| bad(flag, format!("{v:?} resolves to no address")))
}

fn parse_addr(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let (p, v) = split_protocol(flag, value)?;
    if p != SecurityProtocol::Plaintext {
        return Err(bad(flag, "takes a plain host:port"));
    }
    resolve(flag, &v)
}

/// `--listen` and `--advertised-listener`, matched by position.
fn parse_listeners(
    listen: &str,
    advertised: Option<&str>,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    let mut out: Vec<ListenerConfig> = Vec::new();
    for item in listen.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (protocol, hostport) = split_protocol("listen", item)?;
        let addr = resolve("listen", &hostport)?;
        if addr.port() != 0 && out.iter().any(|l| l.addr.port() == addr.port()) {
            return Err(bad("listen", format!("port {} is used twice", addr.port())));
        }
        out.push(ListenerConfig {
            protocol,
            addr,
            advertised_host: "localhost".to_string(),
            advertised_port: i32::from(addr.port()),
        });
    }
    if out.is_empty() {
        return Err(bad("listen", "no listener given"));
    }
    if let Some(adv) = advertised {
        let items: Vec<&str> = adv
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.len() > out.len() {
            return Err(bad(
                "advertised-listener",
                format!("{} addresses for {} listeners", items.len(), out.len()),
            ));
        }
        for (l, item) in out.iter_mut().zip(items) {
            let (p, v) = split_protocol("advertised-listener", item)?;
            if item.contains("://") && p != l.protocol {
                return Err(bad(
                    "advertised-listener",
                    format!(
                        "{item:?} does not match the {} listener at its position",
                        l.protocol.name()
                    ),
                ));
            }
            let (host, port) = v
                .rsplit_once(':')
                .ok_or_else(|| bad("advertised-listener", format!("{v:?} is not host:port")))?;
            let port: u16 = port
                .parse()
                .map_err(|_| bad("advertised-listener", format!("{port:?} is not a port")))?;
            if host.is_empty() {
                return Err(bad("advertised-listener", "the host is empty"));
            }
            l.advertised_host = host.trim_matches(['[', ']']).to_string();
            l.advertised_port = if port == 0 {
                i32::from(l.addr.port())
            } else {
                i32::from(port)
            };
        }
    }
    Ok(out)
}

impl Config {
    /// Validates the arguments.
    ///
    /// # Errors
    /// The first invalid setting, named by its flag.
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let listeners = parse_listeners(&args.listen, args.advertised_listener.as_deref())?;
        let http_listen = parse_addr("http-listen", &args.http_listen)?;
        let first = &listeners[0];
        let (listen, advertised_host, advertised_port) = (
            first.addr,
            first.advertised_host.clone(),
            first.advertised_port,
        );
        let needs_tls = listeners.iter().any(|l| l.protocol.is_tls()) || args.http_tls;
        match (&args.tls_cert, &args.tls_key) {
            (None, None) if needs_tls => {
                return Err(bad(
                    "tls-cert",
                    "SSL and SASL_SSL listeners and --http-tls need --tls-cert and --tls-key",
                ))
            }
            (Some(_), None) => return Err(bad("tls-key", "--tls-cert needs --tls-key")),
            (None, Some(_)) => return Err(bad("tls-cert", "--tls-key needs --tls-cert")),
            _ => {}
        }
        if args.tls_client_ca.is_some() && args.tls_cert.is_none() {
            return Err(bad("tls-client-ca", "needs --tls-cert and --tls-key"));
        }
        let mut mechanisms = Vec::new();
        for m in args
            .sasl_mechanisms
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
        {
            if !SASL_MECHANISMS.contains(&m) {
                return Err(bad(
                    "sasl-mechanisms",
                    format!("{m:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
                ));
            }
            mechanisms.push(m.to_string());
        }
        if mechanisms.is_empty() && listeners.iter().any(|l| l.protocol.is_sasl()) {
            return Err(bad(
                "sasl-mechanisms",
                "SASL listeners need at least one mechanism",
            ));
        }
        let mut super_users = Vec::new();
        let listed = args.super_users.iter().flat_map(|v| {
            let sep = if v.contains(';') { ';' } else { ',' };
            v.split(sep)
        });
        let comma_split_dn = args
            .super_users
            .iter()
            .any(|v| !v.contains(';') && v.split(',').skip(1).any(|p| p.contains('=')));
        if comma_split_dn {
            return Err(bad(
                "super-users",
                "a certificate principal holds commas: separate principals with ';' (User:CN=ops,O=Example;User:admin)",
            ));
        }
        for u in listed.map(str::trim).filter(|u| !u.is_empty()) {
            match u.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
                    super_users.push(u.to_string());
                }
                _ => {
                    return Err(bad(
                        "super-users",
                        format!("{u:?} is not a principal like User:admin"),
                    ))
                }
            }
        }
        let mut args = args;
        args.sasl_mechanisms = mechanisms;
        args.super_users = super_users;
        if args.node_id < 0 {
            return Err(bad("node-id", "must be 0 or more"));
        }
        if let Some(v) = &args.controller_quorum_voters {
            let voters =
                crate::cluster::parse_voters(v).map_err(|e| bad("controller-quorum-voters", e))?;
            let me = u64::try_from(args.node_id).unwrap_or_default();
            // A broker that is not a voter joins with its own address.
            if !voters.contains_key(&me) && args.controller_listen.is_none() {
                return Err(bad(
                    "controller-quorum-voters",
                    format!(
                        "does not list this node (--node-id {me}); a broker that is not a voter \
                         needs --controller-listen, the address the others reach it at"
                    ),
                ));
            }
            if !(10..=60_000).contains(&args.controller_heartbeat_ms) {
                return Err(bad(
                    "controller-heartbeat-ms",
                    "must be between 10 and 60000",
                ));
            }
            if args.broker_session_timeout_ms < 2 * args.controller_heartbeat_ms {
                return Err(bad(
                    "broker-session-timeout-ms",
                    "must be at least two controller heartbeats",
                ));
            }
            if args.default_replication_factor < 1
                || args.default_replication_factor as usize > voters.len()
            {
                return Err(bad(
                    "default-replication-factor",
                    format!("must be between 1 and the {} voters", voters.len()),
                ));
            }
            if !(1..=1000).contains(&args.offsets_topic_num_partitions) {
                return Err(bad(
                    "offsets-topic-num-partitions",
                    "must be between 1 and 1000",
                ));
            }
            if args.offsets_topic_replication_factor < 1 {
                return Err(bad(
                    "offsets-topic-replication-factor",
                    "must be at least 1",
                ));
            }
        } else if args.controller_listen.is_some() {
            return Err(bad("controller-listen", "needs --controller-quorum-voters"));
        } else if args.controller_secret_file.is_some() {
            return Err(bad(
                "controller-secret-file",
                "needs --controller-quorum-voters",
            ));
        } else if args.default_replication_factor != 1 {
            return Err(bad(
                "default-replication-factor",
                "a single broker (no --controller-quorum-voters) keeps one replica",
            ));
        }
        if args.default_partitions < 1 {
            return Err(bad("default-partitions", "must be 1 or more"));
        }
        if args.max_request_bytes < 1024 || args.max_request_bytes > i32::MAX as usize {
            return Err(bad(
                "max-request-bytes",
                "must be between 1024 and 2147483647",
            ));
        }
        if args.max_inflight_request_bytes < args.max_request_bytes {
            return Err(bad(
                "max-inflight-request-bytes",
                "must be at least --max-request-bytes",
            ));
        }
        if args.max_decompressed_batch_bytes < 1_048_576
            || args.max_decompressed_batch_bytes > i32::MAX as usize
        {
            return Err(bad(
                "max-decompressed-batch-bytes",
                "must be between 1048576 and 2147483647",
            ));
        }
        if args.max_connections == 0 {
            return Err(bad("max-connections", "must be 1 or more"));
        }
        if args.http_rate_limit == 0 {
            return Err(bad("http-rate-limit", "must be 1 or more"));
        }
        if args.log_segment_bytes < 14 {
            return Err(bad("log-segment-bytes", "must be at least 14"));
        }
        if args.transactional_id_expiration_ms < 1 {
            return Err(bad("transactional-id-expiration-ms", "must be 1 or more"));
        }
        if args.transaction_max_timeout_ms < 1 {
            return Err(bad("transaction-max-timeout-ms", "must be 1 or more"));
        }
        if args.transaction_abort_timed_out_transaction_cleanup_interval_ms < 1 {
            return Err(bad(
                "transaction-abort-timed-out-transaction-cleanup-interval-ms",
                "must be 1 or more",
            ));
        }
        if args.log_retention_ms < -1 {
            return Err(bad("log-retention-ms", "must be -1 or more"));
        }
        if args.group_min_session_timeout_ms < 1 {
            return Err(bad("group-min-session-timeout-ms", "must be 1 or more"));
        }
        if args.group_max_session_timeout_ms < args.group_min_session_timeout_ms {
            return Err(bad(
                "group-max-session-timeout-ms",
                "must be at least --group-min-session-timeout-ms",
            ));
        }
        if args.group_consumer_heartbeat_interval_ms < 1
            || args.group_consumer_heartbeat_interval_ms >= args.group_consumer_session_timeout_ms
        {
            return Err(bad(
                "group-consumer-heartbeat-interval-ms",
                "must be 1 or more and below --group-consumer-session-timeout-ms",
            ));
        }
        let mut http_allowed_hosts = Vec::new();
        for h in args
            .http_allowed_hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
        {
            let name = h.trim_end_matches('.').to_ascii_lowercase();
            let valid = name == "*"
                || (!name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
            if !valid {
                return Err(bad(
                    "http-allowed-hosts",
                    format!(
                        "{h:?} is not a host name: give names without scheme, port or path (IP addresses are always accepted)"
                    ),
                ));
            }
            http_allowed_hosts.push(name);
        }
        args.http_allowed_hosts = http_allowed_hosts;
        if args.admin_token.as_deref().is_some_and(str::is_empty) {
            return Err(bad("admin-token", "must not be empty when set"));
        }
        tracing_subscriber::EnvFilter::try_new(&args.log_level)
            .map_err(|e| bad("log-level", e.to_string()))?;
        if args.data_dir.as_os_str().is_empty() {
            return Err(bad("data-dir", "must not be empty"));
        }
        Ok(Self {
            listen,
            advertised_host,
            advertised_port,
            listeners,
            http_listen,
            args,
        })
    }

    /// A configuration for tests: loopback, port 0, the given data dir.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut args = ServeArgs::parse_from(["weir"]);
        args.listen = "127.0.0.1:0".into();
        args.http_listen = "127.0.0.1:0".into();
        args.data_dir = data_dir;
        args.log_retention_check_interval_ms = 1000;
        args.group_initial_rebalance_delay_ms = 300;
        args.group_consumer_heartbeat_interval_ms = 500;
        args.group_consumer_session_timeout_ms = 6_000;
        #[allow(clippy::expect_used)]
        Self::from_args(args).expect("test configuration is valid")
    }
}

impl ServeArgs {
    fn parse_from<I, T>(it: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            a: ServeArgs,
        }
        match Only::try_parse_from(it) {
            Ok(o) => o.a,
            Err(e) => e.exit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["weir"];
        v.extend_from_slice(extra);
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Only::try_parse_from(v).unwrap();
        Config::from_args(cli.serve)
    }

    #[test]
    fn defaults_match_the_design() {
        let c = args(&[]).unwrap();
        assert_eq!(c.listen.port(), 9092);
        assert_eq!(c.advertised_host, "localhost");
        assert_eq!(c.advertised_port, 9092);
        assert_eq!(c.http_listen.port(), 9644);
        assert_eq!(c.args.fsync, FsyncPolicy::AcksAll);
        assert!(c.args.auto_create_topics);
        assert_eq!(c.args.default_partitions, 1);
        assert_eq!(c.args.http_rate_limit, 50);
        assert_eq!(c.args.max_decompressed_batch_bytes, 64 << 20);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let e = args(&["--listen", "nonsense"]).unwrap_err();
        assert_eq!(e.flag, "listen");
        let e = args(&["--default-partitions", "0"]).unwrap_err();
        assert_eq!(e.flag, "default-partitions");
        let e = args(&["--max-decompressed-batch-bytes", "1000"]).unwrap_err();
        assert_eq!(e.flag, "max-decompressed-batch-bytes");
        let e = args(&["--advertised-listener", "host"]).unwrap_err();
        assert_eq!(e.flag, "advertised-listener");
        assert!(e.to_string().contains("--advertised-listener"));
    }

    #[test]
    fn plaintext_listener_urls_are_accepted() {
        let c = args(&[
            "--listen",
            "PLAINTEXT://127.0.0.1:9999",
            "--advertised-listener",
            "PLAINTEXT://broker.example:19092",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.advertised_host, "broker.example");
        assert_eq!(c.advertised_port, 19092);
    }

    #[test]
    fn listener_lists_pair_with_advertised_addresses_by_position() {
        let c = args(&[
            "--listen",
            "PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9094",
            "--advertised-listener",
            "PLAINTEXT://a.example:19092,SASL_SSL://b.example:19094",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(c.listeners[1].advertised_host, "b.example");
        assert_eq!(c.listeners[1].advertised_port, 19094);
        assert_eq!(c.advertised_host, "a.example");
        // Fewer advertised addresses than listeners: the rest default.
        let c = args(&["--listen", "127.0.0.1:1,SASL_PLAINTEXT://127.0.0.1:2"]).unwrap();
        assert_eq!(c.listeners[1].advertised_host, "localhost");
        assert_eq!(c.listeners[1].advertised_port, 2);
    }

    #[test]
    fn security_settings_are_checked() {
        let e = args(&["--listen", "SSL://127.0.0.1:9093"]).unwrap_err();
        assert_eq!(e.flag, "tls-cert");
        let e = args(&["--listen", "QUIC://127.0.0.1:9093"]).unwrap_err();
        assert_eq!(e.flag, "listen");
        let e = args(&["--listen", "127.0.0.1:9093,SASL_PLAINTEXT://127.0.0.1:9093"]).unwrap_err();
        assert!(e.reason.contains("twice"), "{e}");
        let e = args(&["--sasl-mechanisms", "GSSAPI"]).unwrap_err();
        assert_eq!(e.flag, "sasl-mechanisms");
        let e = args(&["--super-users", "admin"]).unwrap_err();
        assert_eq!(e.flag, "super-users");
        let e = args(&["--super-users", "User:CN=ops,O=Example"]).unwrap_err();
        assert!(e.reason.contains("';'"), "{e}");
        let e = args(&["--tls-cert", "c.pem"]).unwrap_err();
        assert_eq!(e.flag, "tls-key");
        let e = args(&["--http-tls"]).unwrap_err();
        assert_eq!(e.flag, "tls-cert");
        let e = args(&[
            "--listen",
            "127.0.0.1:1",
            "--advertised-listener",
            "SSL://x:1",
        ])
        .unwrap_err();
        assert_eq!(e.flag, "advertised-listener");
        let c = args(&[
            "--super-users",
            "User:admin, User:ops",
            "--authorizer",
            "acl",
        ])
        .unwrap();
        assert_eq!(c.args.super_users, vec!["User:admin", "User:ops"]);
        let semi = args(&["--super-users", "User:CN=ops,O=Example;User:admin"]).unwrap();
        assert_eq!(
            semi.args.super_users,
            vec!["User:CN=ops,O=Example", "User:admin"]
        );
        assert_eq!(c.args.authorizer, AuthorizerMode::Acl);
        assert_eq!(
            c.args.sasl_mechanisms,
            vec!["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        );
    }

    #[test]
    fn admin_host_names_are_checked() {
        let c = args(&["--http-allowed-hosts", "Weir, admin.example.com."]).unwrap();
        assert_eq!(c.args.http_allowed_hosts, vec!["weir", "admin.example.com"]);
        assert!(args(&["--http-allowed-hosts", "*"]).is_ok());
        for bad in ["weir:9644", "http://weir", "weir/api", "a b"] {
            let e = args(&["--http-allowed-hosts", bad]).unwrap_err();
            assert_eq!(e.flag, "http-allowed-hosts", "{bad}");
        }
    }

    #[test]
    fn the_admin_token_is_never_printed() {
        let c = args(&["--admin-token", "hunter2"]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(c.args.admin_token.as_deref(), Some("hunter2"));
    }
}
