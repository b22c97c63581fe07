//! The storage engine on its own: append and read throughput, the cost of
//! checking produced batches' records (per codec), offset lookups, recovery
//! time against the size of the unflushed tail, and start-up time with many
//! partitions.
//!
//! Run with `cargo bench --bench storage`. Appends go to the page cache (no
//! fsync), as with `--fsync never`; the fsync policy is measured end to end.
//! `WEIR_BENCH_PARTITIONS` and `WEIR_BENCH_PARTITION_MIB` size the start-up
//! case (default 1,000 partitions of 1 MiB).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::Compression;
use weir::log::{LogConfig, PartitionLog};

/// One v2 batch of `count` records with `size`-byte values.
fn batch(count: usize, size: usize) -> Bytes {
    let value = Bytes::from(vec![b'v'; size]);
    let header = [("h".to_string(), None)];
    let recs: Vec<_> = (0..count)
        .map(|i| {
            weir::log::records::plain_record(
                i as i64,
                1_700_000_000_000 + i as i64,
                Some(Bytes::from(format!("key-{i}"))),
                Some(value.clone()),
                &header,
            )
        })
        .collect();
    weir::log::records::encode_batch(&recs, Compression::None).expect("encode")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        ..LogConfig::default()
    }
}

/// A log in `dir` holding at least `bytes` of `batch`es.
fn fill(dir: &Path, b: &Bytes, bytes: usize) -> PartitionLog {
    let log = PartitionLog::open(dir, config(), 0).expect("open");
    for _ in 0..bytes.div_ceil(b.len()) {
        log.append(b, 0).expect("append");
    }
    log
}

/// What the machine does with the same bytes without the log: a copy (as a
/// write into the page cache does) and a CRC-32C (as validation does).
fn baseline(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    g.measurement_time(Duration::from_secs(3));
    let src = batch(16, 1024).to_vec();
    let mut dst = vec![0u8; src.len()];
    g.throughput(Throughput::Bytes(src.len() as u64));
    g.bench_function("memcpy_16KiB", |bench| {
        bench.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        });
    });
    g.bench_function("crc32c_16KiB", |bench| {
        bench.iter(|| black_box(crc32c::crc32c(black_box(&src))));
    });
    // Appending the same bytes to a file with pwrite: the kernel's share of
    // an append (page-cache allocation and copy), restarting every 256 MiB.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = std::fs::File::create(dir.path().join("raw")).expect("create");
    let mut at = 0u64;
    g.bench_function("pwrite_16KiB_append", |bench| {
        use std::os::unix::fs::FileExt;
        bench.iter(|| {
            if at >= 256 << 20 {
                file.set_len(0).expect("truncate");
                at = 0;
            }
            file.write_all_at(&src, at).expect("pwrite");
            at += src.len() as u64;
        });
    });
    g.finish();
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.measurement_time(Duration::from_secs(5));
    for (size, count) in [(100usize, 160usize), (1024, 16)] {
        let b = batch(count, size);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("batch_of_16KiB", format!("{size}B_records")),
            &b,
            |bench, b| {
                let dir = tempfile::tempdir().expect("tempdir");
                let log = PartitionLog::open(dir.path(), config(), 0).expect("open");
                bench.iter(|| log.append(b, 0).expect("append"));
            },
        );
    }
    g.finish();
}

/// About 16 KiB of JSON-like records (80 of ~200 bytes), in one batch
/// compressed with `c`: what a producer with linger sends.
fn json_batch(c: Compression) -> Bytes {
    let words = [
        "alpha", "bravo", "click", "view", "cart", "eu-west", "us-east", "ok",
    ];
    let recs: Vec<_> = (0..80u64)
        .map(|i| {
            let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            let value = format!(
                r#"{{"id":{i},"user":"user-{}","event":"{}","region":"{}","ts":{},"amount":{}.{:02},"tags":["{}","{}"],"session":"{x:016x}"}}"#,
                x % 997,
                words[(x % 8) as usize],
                words[(x / 8 % 8) as usize],
                1_700_000_000_000u64 + i * 37,
                x % 500,
                x % 100,
                words[(x / 64 % 8) as usize],
                words[(x / 512 % 8) as usize],
            );
            weir::log::records::plain_record(
                i as i64,
                1_700_000_000_000 + i as i64,
                Some(Bytes::from(format!("user-{}", x % 997))),
                Some(Bytes::from(value)),
                &[("trace".to_string(), Some(Bytes::from(format!("{x:x}"))))],
            )
        })
        .collect();
    weir::log::records::encode_batch(&recs, c).expect("encode")
}

const CODECS: [(&str, Compression); 5] = [
    ("none", Compression::None),
    ("gzip", Compression::Gzip),
    ("snappy", Compression::Snappy),
    ("lz4", Compression::Lz4),
    ("zstd", Compression::Zstd),
];

/// The cost of checking the records of produced batches: `append` (what a
/// produce does: header, CRC, decompression into a reused buffer and the
/// records walk) against `append_internal` (header and CRC only, as for
/// batches the broker built), for each codec. After criterion's figures, an
/// interleaved run prints the ratio per codec.
fn append_validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_validation");
    g.measurement_time(Duration::from_secs(3));
    for (name, codec) in CODECS {
        let b = json_batch(codec);
        g.throughput(Throughput::Bytes(b.len() as u64));
        for checked in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = PartitionLog::open(dir.path(), config(), 0).expect("open");
            let id = if checked { "checked" } else { "unchecked" };
            g.bench_with_input(BenchmarkId::new(id, name), &b, |bench, b| {
                bench.iter(|| {
                    if checked {
                        log.append(b, 0).expect("append")
                    } else {
                        log.append_internal(b, 0).expect("append")
                    }
                });
            });
        }
    }
    g.finish();
    // Same run, alternating rounds so that drift hits both alike.
    eprintln!("append_validation: checked/unchecked time per append of a ~16 KiB batch");
    for (name, codec) in CODECS {
        let b = json_batch(codec);
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), config(), 0).expect("open");
        let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
        for round in 0..40 {
            let t = Instant::now();
            for _ in 0..100 {
                black_box(log.append(&b, 0).expect("append"));
            }
            let checked = t.elapsed();
            let t = Instant::now();
            for _ in 0..100 {
                black_box(log.append_internal(&b, 0).expect("append"));
            }
            // The first rounds warm up.
            if round >= 5 {
                with += checked;
                without += t.elapsed();
            }
        }
        let n = 35.0 * 100.0;
        eprintln!(
            "  {name:>6}: {} bytes on the wire, checked {:>7.2} us, unchecked {:>7.2} us, ratio {:.2}",
            b.len(),
            with.as_secs_f64() * 1e6 / n,
            without.as_secs_f64() * 1e6 / n,
            with.as_secs_f64() / without.as_secs_f64()
        );
    }
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = batch(16, 1024);
    let log = fill(dir.path(), &b, 256 << 20);
    let end = log.end_offset();
    let mut g = c.benchmark_group("read");
    g.measurement_time(Duration::from_secs(5));
    let chunk = 1 << 20;
    g.throughput(Throughput::Bytes(chunk as u64));
    // Sequential reads of 1 MiB, as a consumer catching up does; the bytes
    // are touched (summed) as a socket write would.
    let mut next = 0i64;
    g.bench_function("sequential_1MiB_from_page_cache", |bench| {
        bench.iter(|| {
            if next >= end {
                next = 0;
            }
            let r = log.read(next, chunk, true).expect("read");
            next += (r.records.len() / b.len()) as i64 * 16;
            black_box(r.records.iter().map(|&x| u64::from(x)).sum::<u64>())
        });
    });
    g.finish();

    let mut g = c.benchmark_group("lookup");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    g.bench_function("random_offset_in_256MiB", |bench| {
        bench.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x % end as u64) as i64;
            black_box(log.read(off, 1, true).expect("read").records.len())
        });
    });
    g.finish();
}

fn recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    let b = batch(16, 1024);
    for tail_mib in [1usize, 16, 64] {
        // A 64 MiB log checkpointed up to all but its last `tail_mib`.
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = fill(dir.path(), &b, (64 - tail_mib.min(64)) << 20);
            log.checkpoint().expect("checkpoint");
            for _ in 0..(tail_mib << 20).div_ceil(b.len()) {
                log.append(&b, 0).expect("append");
            }
        }
        g.throughput(Throughput::Bytes((tail_mib << 20) as u64));
        g.bench_function(
            BenchmarkId::new("open_with_unflushed_tail", format!("{tail_mib}MiB")),
            |bench| {
                bench
                    .iter(|| black_box(PartitionLog::open(dir.path(), config(), 0).expect("open")));
            },
        );
    }
    g.finish();
}

fn startup(c: &mut Criterion) {
    let partitions: usize = std::env::var("WEIR_BENCH_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mib: usize = std::env::var("WEIR_BENCH_PARTITION_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let b = batch(16, 1024);
    let built = Instant::now();
    for p in 0..partitions {
        let log = fill(&dir.path().join(format!("t-{p}")), &b, mib << 20);
        log.flush().expect("flush");
        log.checkpoint().expect("checkpoint");
    }
    eprintln!(
        "startup: wrote {partitions} partitions x {mib} MiB in {:.1?}",
        built.elapsed()
    );
    let mut g = c.benchmark_group("startup");
    g.sample_size(10);
    g.bench_function(
        BenchmarkId::new("open_after_clean_stop", format!("{partitions}x{mib}MiB")),
        |bench| {
            bench.iter(|| {
                let logs: Vec<PartitionLog> = (0..partitions)
                    .map(|p| {
                        PartitionLog::open_with(
                            &dir.path().join(format!("t-{p}")),
                            config(),
                            0,
                            true,
                        )
                        .expect("open")
                    })
                    .collect();
                black_box(logs.len())
            });
        },
    );
    g.finish();
}

criterion_group!(
    benches,
    baseline,
    append,
    append_validation,
    read,
    recovery,
    startup
);
criterion_main!(benches);
