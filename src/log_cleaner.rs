//! The broker's log cleaner task: every `--log-cleaner-backoff-ms` it looks
//! at the compacted partitions and cleans, one at a time on the blocking
//! pool, the one that most needs it (an overdue one first, then the highest
//! dirty ratio at or above its `min.cleanable.dirty.ratio`), until none is
//! due. The passes themselves are [`crate::log::PartitionLog::clean`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::log::cleaner::{CleanerOptions, COUNTERS};
use crate::log::PartitionLog;

/// How far a pass may clean: below the last stable offset (records of an
/// open transaction may still be aborted); and the aborted transactions,
/// whose records it drops. The offset is read first: a transaction aborted
/// after it lies wholly at or above it.
fn bounds(p: &PartitionLog) -> (i64, Vec<crate::log::txn::AbortedTxn>) {
    let stable = p.last_stable_offset();
    (stable, p.aborted_transactions())
}

/// Runs the cleaner until `shutdown`.
pub(crate) async fn cleaner_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let args = &broker.config.args;
    if !args.log_cleaner_enable {
        return;
    }
    let backoff = Duration::from_millis(args.log_cleaner_backoff_ms);
    let cancel = Arc::new(AtomicBool::new(false));
    let opts = CleanerOptions {
        dedupe_buffer_bytes: usize::try_from(args.log_cleaner_dedupe_buffer_size)
            .unwrap_or(usize::MAX),
        io_max_bytes_per_second: args.log_cleaner_io_max_bytes_per_second,
        cancel: Arc::clone(&cancel),
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        loop {
            let b = Arc::clone(&broker);
            let mut o = opts.clone();
            if let Some(rate) = broker.broker_configs.cleaner_io_max_bytes_per_second() {
                o.io_max_bytes_per_second = rate;
            }
            let work = tokio::task::spawn_blocking(move || clean_dirtiest(&b, &o));
            let progressed = tokio::select! {
                r = work => r.unwrap_or(false),
                () = shutdown.cancelled() => {
                    cancel.store(true, Ordering::Relaxed);
                    return;
                }
            };
            if !progressed {
                break;
            }
        }
    }
}

/// A partition the cleaner may take: (overdue, dirty ratio) orders them.
struct Candidate {
    score: (bool, f64),
    log: Arc<PartitionLog>,
    name: String,
    cleaned_to: i64,
}

/// Cleans the partition that most needs it; returns whether a pass moved
/// a checkpoint (then another may be due at once).
fn clean_dirtiest(b: &Broker, opts: &CleanerOptions) -> bool {
    let now = now_ms();
    let mut best: Option<Candidate> = None;
    for t in b.topics.list() {
        for (i, p) in t.partitions().into_iter().enumerate() {
            let cfg = p.config();
            if !cfg.compact {
                continue;
            }
            let Some(c) = p.cleanability(now, p.last_stable_offset()) else {
                continue;
            };
            if !c.due(cfg.min_cleanable_dirty_ratio) {
                continue;
            }
            let score = (c.overdue, c.dirty_ratio);
            if best.as_ref().is_none_or(|b| score > b.score) {
                best = Some(Candidate {
                    score,
                    log: p,
                    name: format!("{}-{i}", t.name),
                    cleaned_to: c.cleaned_to,
                });
            }
        }
    }
    let Some(Candidate {
        score: (_, ratio),
        log: p,
        name,
        cleaned_to: before,
    }) = best
    else {
        return false;
    };
    let (upper, aborted) = bounds(&p);
    match p.clean(now, upper, &aborted, opts) {
        Ok(s) => {
            tracing::info!(
                partition = %name,
                dirty_ratio = ratio,
                cleaned_to = s.cleaned_to,
                bytes_read = s.bytes_read,
                bytes_written = s.bytes_written,
                records_removed = s.records_removed,
                map_keys = s.map_keys,
                interrupted = s.interrupted,
                "log cleaner pass"
            );
            !s.interrupted && s.cleaned_to > before
        }
        Err(e) => {
            tracing::warn!(partition = %name, error = %e, "log cleaner pass failed");
            false
        }
    }
}

/// The cleaner's Prometheus metrics: its counters, and per compacted
/// partition the dirty ratio and the time of the last pass.
pub(crate) fn prometheus(b: &Broker) -> String {
    use std::fmt::Write;
    let c = &COUNTERS;
    let mut out = String::new();
    for (name, help, v) in [
        (
            "weir_log_cleaner_passes_total",
            "Passes of the log cleaner.",
            &c.passes,
        ),
        (
            "weir_log_cleaner_bytes_read_total",
            "Bytes of segments the log cleaner read.",
            &c.bytes_read,
        ),
        (
            "weir_log_cleaner_bytes_written_total",
            "Bytes of cleaned segments the log cleaner wrote.",
            &c.bytes_written,
        ),
        (
            "weir_log_cleaner_records_removed_total",
            "Records the log cleaner removed.",
            &c.records_removed,
        ),
        (
            "weir_log_cleaner_failures_total",
            "Log cleaner passes that failed.",
            &c.failures,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
    let now = now_ms();
    let mut ratios = String::new();
    let mut last = String::new();
    for t in b.topics.list() {
        let topic = crate::metrics::escape(&t.name);
        for (i, p) in t.partitions().iter().enumerate() {
            let Some(c) = p.cleanability(now, p.last_stable_offset()) else {
                continue;
            };
            let _ = writeln!(
                ratios,
                "weir_log_cleaner_dirty_ratio{{topic=\"{topic}\",partition=\"{i}\"}} {}",
                c.dirty_ratio
            );
            if let Some(ms) = c.last_clean_ms {
                let _ = writeln!(
                    last,
                    "weir_log_cleaner_last_clean_timestamp_seconds{{topic=\"{topic}\",partition=\"{i}\"}} {}",
                    ms as f64 / 1000.0
                );
            }
        }
    }
    let _ = write!(
        out,
        "# HELP weir_log_cleaner_dirty_ratio Share of a compacted partition's cleanable bytes not cleaned yet.\n# TYPE weir_log_cleaner_dirty_ratio gauge\n{ratios}# HELP weir_log_cleaner_last_clean_timestamp_seconds When the log cleaner last finished a pass of the partition (seconds since the epoch).\n# TYPE weir_log_cleaner_last_clean_timestamp_seconds gauge\n{last}"
    );
    out
}

/// The cleaner in `/api/status`.
pub(crate) fn status(b: &Broker) -> serde_json::Value {
    let now = now_ms();
    let mut compacted = 0;
    let mut max_ratio: f64 = 0.0;
    for t in b.topics.list() {
        for p in t.partitions() {
            if let Some(c) = p.cleanability(now, p.last_stable_offset()) {
                compacted += 1;
                max_ratio = max_ratio.max(c.dirty_ratio);
            }
        }
    }
    let c = &COUNTERS;
    json!({
        "enabled": b.config.args.log_cleaner_enable,
        "compacted_partitions": compacted,
        "max_dirty_ratio": max_ratio,
        "passes": c.passes.load(Ordering::Relaxed),
        "bytes_read": c.bytes_read.load(Ordering::Relaxed),
        "bytes_written": c.bytes_written.load(Ordering::Relaxed),
        "records_removed": c.records_removed.load(Ordering::Relaxed),
        "failures": c.failures.load(Ordering::Relaxed),
    })
}
