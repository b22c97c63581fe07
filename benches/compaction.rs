//! The log cleaner: one pass over a partition of `KEYS` keys each updated
//! `UPDATES` times (100-byte values, batches of 100 records, uncompressed
//! and lz4), from a log that was never cleaned. Throughput counts the bytes
//! of the sealed segments the pass reads; the offset map's memory is
//! printed once.
//!
//! Run with `cargo bench --bench compaction`.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::Compression;
use weir::log::cleaner::CleanerOptions;
use weir::log::{LogConfig, PartitionLog};

const KEYS: usize = 10_000;
const UPDATES: usize = 20;
const PER_BATCH: usize = 100;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 20,
        compact: true,
        keys_required: true,
        delete_retention: false,
        ..LogConfig::default()
    }
}

/// A batch of keys `first..first + PER_BATCH` at update `u`.
fn batch(first: usize, u: usize, c: Compression) -> Bytes {
    let recs: Vec<_> = (0..PER_BATCH)
        .map(|i| {
            let k = first + i;
            let mut v = format!("update-{u}-of-{k}-").into_bytes();
            v.resize(100, b'v');
            weir::log::records::plain_record(
                i as i64,
                1_700_000_000_000,
                Some(Bytes::from(format!("key-{k:08}"))),
                Some(Bytes::from(v)),
                &[],
            )
        })
        .collect();
    weir::log::records::encode_batch(&recs, c).expect("encode")
}

/// Writes the dirty log into `dir`; returns the bytes of its sealed
/// segments.
fn write_log(dir: &Path, c: Compression) -> u64 {
    let log = PartitionLog::open(dir, config(), 0).expect("open");
    for u in 0..UPDATES {
        for first in (0..KEYS).step_by(PER_BATCH) {
            log.append(&batch(first, u, c), 0).expect("append");
        }
    }
    // Everything before this one is sealed.
    let now = 8 * 24 * 3600 * 1000;
    log.append(&batch(0, UPDATES, c), now).expect("append");
    let size = log.size_bytes();
    drop(log);
    size
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("list") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

fn clean(c: &mut Criterion) {
    let mut g = c.benchmark_group("compaction");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for (name, codec) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
        let src = tempfile::tempdir().expect("tempdir");
        let bytes = write_log(src.path(), codec);
        g.throughput(Throughput::Bytes(bytes));
        let now = 8 * 24 * 3600 * 1000 + 1;
        let mut printed = false;
        g.bench_function(BenchmarkId::new("pass", format!("{KEYS}x{UPDATES}-{name}")), |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().expect("tempdir");
                    copy_dir(src.path(), dir.path());
                    let log = PartitionLog::open(dir.path(), config(), now).expect("open");
                    (dir, log)
                },
                |(dir, log)| {
                    let s = log
                        .clean(now, i64::MAX, &[], &CleanerOptions::default())
                        .expect("clean");
                    if !printed {
                        printed = true;
                        eprintln!(
                            "{name}: read {} bytes, wrote {}, removed {} records, map {} keys in {} bytes",
                            s.bytes_read, s.bytes_written, s.records_removed, s.map_keys, s.map_bytes
                        );
                    }
                    (dir, log)
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, clean);
criterion_main!(benches);
