//! DescribeLogDirs: an operator's view of the data dir, with the bytes each
//! partition takes on disk.

use std::path::{Path, PathBuf};

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::errors;
use super::route::{kind, row, Api, Cx, Handled, Row, Verdict};
use super::route::{sb, tn};
use crate::security::acl::Operation;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[row::<DescribeLogDirs>()];

/// DescribeLogDirs: Describe on the cluster, as in Kafka.
pub struct DescribeLogDirs;

impl Api for DescribeLogDirs {
    kind!(
        DescribeLogDirs,
        DescribeLogDirsRequest,
        DescribeLogDirsResponse
    );
    const VERSIONS: (i16, i16) = (1, 4);
    type Denied = ();

    fn authorize(
        cx: Cx<'_>,
        _r: &mut DescribeLogDirsRequest,
    ) -> Verdict<DescribeLogDirsResponse, ()> {
        if cx.cluster(Operation::Describe) {
            return Verdict::Proceed(());
        }
        // Before v3 the response has no error code: an empty list says it.
        let code = if cx.version >= 3 {
            errors::CLUSTER_AUTHORIZATION_FAILED
        } else {
            errors::NONE
        };
        Verdict::Answer(DescribeLogDirsResponse::default().with_error_code(code))
    }

    fn deny(_cx: Cx<'_>, _r: &mut DescribeLogDirsResponse, _denied: ()) {}

    async fn handle(cx: Cx<'_>, req: DescribeLogDirsRequest) -> Handled<DescribeLogDirsResponse> {
        // The path and the filesystem's sizes are syscalls on the data
        // dir: off the connection's task.
        let dir = cx.broker.config.args.data_dir.clone();
        let disk = tokio::task::spawn_blocking(move || {
            let shown = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            (shown, disk_space(&dir).unwrap_or((-1, -1)))
        })
        .await
        .ok();
        Handled::Now(describe_log_dirs(cx, req, disk))
    }

    fn errors(r: &DescribeLogDirsResponse, out: &mut Vec<i16>) {
        out.push(r.error_code);
        out.extend(r.results.iter().map(|d| d.error_code));
    }

    fn throttle(r: &mut DescribeLogDirsResponse, ms: i32) {
        r.throttle_time_ms = ms;
    }
}

/// The data dir as reported, and its filesystem's total and usable bytes.
type Disk = (PathBuf, (i64, i64));

/// The one log dir (the data dir) and the partitions asked for (all when
/// `topics` is null); partitions this broker does not have are left out.
fn describe_log_dirs(
    cx: Cx<'_>,
    req: DescribeLogDirsRequest,
    disk: Option<Disk>,
) -> DescribeLogDirsResponse {
    let broker = cx.broker;
    let wanted: Vec<(String, Option<Vec<i32>>)> = match req.topics {
        None => broker
            .topics
            .list()
            .iter()
            .map(|t| (t.name.clone(), None))
            .collect(),
        Some(ts) => ts
            .into_iter()
            .map(|t| (t.topic.to_string(), Some(t.partitions)))
            .collect(),
    };
    let mut topics = Vec::with_capacity(wanted.len());
    for (name, parts) in wanted {
        let Some(topic) = broker.topics.get(&name) else {
            continue;
        };
        let parts = parts.unwrap_or_else(|| (0..topic.partition_count()).collect());
        let partitions: Vec<_> = parts
            .into_iter()
            .filter_map(|p| {
                let log = topic.partition(p)?;
                Some(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p)
                        .with_partition_size(i64::try_from(log.size_bytes()).unwrap_or(i64::MAX))
                        .with_offset_lag(0),
                )
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(tn(name))
                    .with_partitions(partitions),
            );
        }
    }
    let dir = &broker.config.args.data_dir;
    let (shown, (total, usable)) = disk.unwrap_or_else(|| (dir.clone(), (-1, -1)));
    let result = DescribeLogDirsResult::default()
        .with_log_dir(sb(shown.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// Total and available bytes of the filesystem holding `dir`.
fn disk_space(dir: &Path) -> Option<(i64, i64)> {
    let s = rustix::fs::statvfs(dir).ok()?;
    let total = s.f_blocks.checked_mul(s.f_frsize)?;
    let usable = s.f_bavail.checked_mul(s.f_frsize)?;
    Some((i64::try_from(total).ok()?, i64::try_from(usable).ok()?))
}
