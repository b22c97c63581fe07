//! The `weir` command line: the broker's flags (`ServeArgs`, in the
//! library's `config`) and the sub-commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use weir::config::{Secret, ServeArgs};

/// Command line of the `weir` binary.
#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "A Kafka-compatible message broker",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Sub-commands; without one, `weir` serves.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (the default).
    Serve(Box<ServeArgs>),
    /// Exit 0 when the broker's admin endpoint reports healthy.
    Health(HealthArgs),
    /// Inspect and redrive a dead-letter topic through the admin API.
    Dlq(DlqArgs),
    /// Take a consistent online backup through the running broker.
    Backup(BackupArgs),
    /// Restore a backup into a new, empty data dir (broker stopped).
    Restore(RestoreArgs),
    /// Drive load against any Kafka-compatible broker and report throughput
    /// and latency.
    Bench(BenchArgs),
    /// Manage the SASL users (PLAIN and SCRAM) in the data dir; works while
    /// the broker runs.
    Users(UsersArgs),
    /// List, describe, create, change and delete topics on any
    /// Kafka-compatible broker.
    Topics(TopicsArgs),
    /// List, describe, reset and delete consumer groups on any
    /// Kafka-compatible broker.
    Groups(GroupsArgs),
    /// Print a shell completion script: `weir completions bash >
    /// /etc/bash_completion.d/weir`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `weir groups`.
#[derive(Debug, Args)]
pub struct GroupsArgs {
    #[command(subcommand)]
    pub action: GroupsAction,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Where `weir groups reset-offsets` moves a group.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct ResetTo {
    /// To each partition's log start.
    #[arg(long)]
    pub to_earliest: bool,
    /// To each partition's end (skip everything there now).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (kept within each partition's log).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// To the first record at or after this time (ISO 8601, e.g.
    /// 2026-12-06T10:00:00Z or 2026-12-06T11:00:00+01:00).
    #[arg(long, value_name = "TIME")]
    pub to_datetime: Option<String>,
    /// Move the committed offsets by N (negative: back), within the log.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
}

/// `weir groups list|describe|reset-offsets|delete`.
#[derive(Debug, Subcommand)]
pub enum GroupsAction {
    /// Every group, with its state and protocol type.
    List,
    /// A group's state, members and their assignments, and per partition
    /// its committed offset, the end offset and the lag.
    Describe { group: String },
    /// Move a group's committed offsets on a topic. Refused while the group
    /// has members, as Kafka does: stop its consumers first.
    ResetOffsets {
        group: String,
        /// The topic whose partitions are moved (all of them).
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        to: ResetTo,
        /// Print the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a group that has no members, and its committed offsets.
    Delete { group: String },
}

/// How the client tools reach a broker.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Brokers of the cluster, `HOST:PORT[,HOST:PORT...]`: the first that
    /// answers is asked.
    #[arg(
        long,
        global = true,
        env = "WEIR_BOOTSTRAP",
        default_value = "localhost:9092"
    )]
    pub bootstrap: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, as the listener.
    #[arg(
        long,
        global = true,
        env = "WEIR_SECURITY_PROTOCOL",
        default_value = "PLAINTEXT"
    )]
    pub security_protocol: String,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(
        long,
        global = true,
        env = "WEIR_SASL_MECHANISM",
        default_value = "PLAIN"
    )]
    pub sasl_mechanism: String,
    /// The SASL user.
    #[arg(long, global = true, env = "WEIR_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// The SASL password (better in the environment than on the command line).
    #[arg(
        long,
        global = true,
        env = "WEIR_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,
    /// PEM file of the CA that signed the brokers' certificates (SSL and
    /// SASL_SSL).
    #[arg(long, global = true, env = "WEIR_CLIENT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate to present to brokers that ask for one (mutual TLS).
    #[arg(
        long,
        global = true,
        env = "WEIR_CLIENT_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "WEIR_CLIENT_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

/// `weir topics`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(subcommand)]
    pub action: TopicsAction,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `weir topics list|describe|create|alter-config|add-partitions|delete|delete-records`.
#[derive(Debug, Subcommand)]
pub enum TopicsAction {
    /// Every topic, with its partition count and replication factor.
    List {
        /// Include internal topics.
        #[arg(long)]
        internal: bool,
    },
    /// A topic's partitions (leader, replicas, in-sync replicas, offsets)
    /// and the configs set on it.
    Describe { name: String },
    /// Create a topic.
    Create {
        name: String,
        /// Partitions; the broker's default when absent.
        #[arg(long)]
        partitions: Option<i32>,
        /// Replicas of each partition; the broker's default when absent.
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic config, `KEY=VALUE`; repeat for more.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Set or remove topic configs.
    AlterConfig {
        name: String,
        /// `KEY=VALUE` to set; repeat for more.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A config to remove (back to the default); repeat for more.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Grow a topic to a total number of partitions.
    AddPartitions {
        name: String,
        /// The partition count after the change.
        #[arg(long)]
        total: i32,
    },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Delete a partition's records before an offset.
    DeleteRecords {
        name: String,
        #[arg(long)]
        partition: i32,
        /// Records before this offset go; -1 for all of them.
        #[arg(long)]
        before: i64,
    },
}

/// `weir users`.
#[derive(Debug, Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub action: UsersAction,
    /// The broker's data dir.
    #[arg(long, global = true, env = "WEIR_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// `weir users add|delete|list`.
#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Add a user, or replace its password (SCRAM-SHA-256 and SCRAM-SHA-512
    /// credentials; PLAIN checks against them).
    Add {
        name: String,
        /// The password; read from standard input when absent.
        #[arg(long, env = "WEIR_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// PBKDF2 iterations (4096..=16384).
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// Delete a user.
    Delete { name: String },
    /// List users and their mechanisms (never passwords).
    List,
}

/// What `weir bench` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Producers only; latency is produce-to-acknowledgement.
    Produce,
    /// Consumers only, from the earliest offsets.
    Consume,
    /// Producers and consumers; latency is send-to-fetch.
    E2e,
}

/// `weir bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// produce, consume or e2e.
    #[arg(value_enum)]
    pub mode: BenchMode,
    /// Any broker of the cluster.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to use (created with --partitions when missing).
    #[arg(long, default_value = "weir-bench")]
    pub topic: String,
    /// Stop after this many records (produced, or consumed in consume mode).
    #[arg(long)]
    pub records: Option<u64>,
    /// Stop after this long, whatever else.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_secs: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Partitions of a topic the tool creates.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// 0, 1 or all (-1).
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    pub acks: i16,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Bytes of records per batch (one batch per produce request).
    #[arg(long, default_value_t = 16_384)]
    pub batch_bytes: usize,
    /// Concurrent producer connections.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Concurrent consumer connections.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Records per second in total (fixed-rate mode: latency is measured from
    /// each batch's intended send time).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Produce requests outstanding per producer connection.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Create the topic when it is missing.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub create_topic: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_acks(v: &str) -> Result<i16, String> {
    match v {
        "all" | "-1" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err("acks must be 0, 1 or all".into()),
    }
}

/// `weir backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Directory to write the backup to (on the broker's host; missing or empty).
    #[arg(long)]
    pub to: PathBuf,
    /// Admin HTTP address of the broker.
    #[arg(long, env = "WEIR_HTTP_LISTEN", default_value = "127.0.0.1:9644")]
    pub http_listen: String,
    /// Bearer token, when the broker requires one.
    #[arg(long, env = "WEIR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
}

/// `weir restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A complete backup (holding BACKUP.json).
    #[arg(long)]
    pub from: PathBuf,
    /// The new data dir (missing or empty).
    #[arg(long, env = "WEIR_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// `weir dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
    /// Admin HTTP address of the broker.
    #[arg(
        long,
        global = true,
        env = "WEIR_HTTP_LISTEN",
        default_value = "127.0.0.1:9644"
    )]
    pub http_listen: String,
    /// Bearer token for redrive, when the broker requires one.
    #[arg(long, global = true, env = "WEIR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
}

/// `weir dlq list|redrive`.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Print records of TOPIC.dlq with their headers (JSON).
    List {
        /// The original topic (T) or its DLQ (T.dlq).
        topic: String,
        #[arg(long)]
        partition: Option<i32>,
        #[arg(long, default_value_t = 0)]
        offset: i64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send records of TOPIC.dlq back to their retry topic (attempts reset) or to TOPIC.
    Redrive {
        topic: String,
        #[arg(long)]
        partition: Option<i32>,
        /// First offset to redrive.
        #[arg(long)]
        from_offset: Option<i64>,
        /// Offset to stop before.
        #[arg(long)]
        to_offset: Option<i64>,
        /// `retry` (the retry topic each record came from) or `topic` (T itself).
        #[arg(long, default_value = "retry")]
        to: String,
    },
}

/// `weir health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Admin HTTP address of the broker to check.
    #[arg(long, env = "WEIR_HTTP_LISTEN", default_value = "127.0.0.1:9644")]
    pub http_listen: String,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
}
