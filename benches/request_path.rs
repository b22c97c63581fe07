//! Produce and fetch throughput through the real request path (TCP,
//! framing, decode, handler, storage, encode) of an in-process broker, with
//! the machine's own loopback TCP bandwidth and fdatasync latency measured in
//! the same run for comparison.
//!
//! Run with `cargo bench --bench request_path`. Requests are pre-encoded and
//! pipelined (16 in flight), so the figures are the broker's, not a client
//! library's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchRequest, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;
use weir::config::{Config, FsyncPolicy};

const IN_FLIGHT: usize = 16;

fn batch(count: usize, size: usize) -> Bytes {
    let value = Bytes::from(vec![b'v'; size]);
    // Now: older records would be deleted by retention mid-run.
    let now = weir::broker::now_ms();
    let recs: Vec<_> = (0..count)
        .map(|i| weir::log::records::plain_record(i as i64, now, None, Some(value.clone()), &[]))
        .collect();
    weir::log::records::encode_batch(&recs, Compression::None).expect("encode")
}

fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    let mut b = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bench")))
        .encode(&mut b, key.request_header_version(version))
        .expect("header");
    body.encode(&mut b, version).expect("body");
    let mut out = (b.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    out
}

fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("response size");
    let n = i32::from_be_bytes(len) as usize;
    buf.resize(n, 0);
    s.read_exact(buf).expect("response");
    n
}

struct Broker {
    rt: tokio::runtime::Runtime,
    running: Option<weir::Running>,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Broker {
    fn start(fsync: FsyncPolicy) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_tests(dir.path().join("data"));
        config.args.fsync = fsync;
        config.args.log_segment_bytes = 256 << 20;
        let running = rt.block_on(weir::start(config)).expect("start");
        let addr = running.kafka_addr;
        Self {
            rt,
            running: Some(running),
            _dir: dir,
            addr,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown());
        }
    }
}

fn produce_request(topic: &str, records: Bytes, acks: i16) -> Vec<u8> {
    frame(
        ApiKey::Produce,
        9,
        &ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records))])]),
    )
}

/// Sends `req` `n` times with IN_FLIGHT outstanding, reading every answer.
fn pipeline(s: &mut TcpStream, req: &[u8], n: u64, buf: &mut Vec<u8>) {
    let mut sent = 0u64;
    let mut got = 0u64;
    while got < n {
        while sent < n && sent - got < IN_FLIGHT as u64 {
            s.write_all(req).expect("send");
            sent += 1;
        }
        read_frame(s, buf);
        got += 1;
    }
}

fn baselines(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    g.measurement_time(Duration::from_secs(3));
    // Single-stream loopback TCP: 1 MiB writes to a peer that discards.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = vec![0u8; 1 << 20];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let chunk = vec![7u8; 1 << 20];
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("loopback_tcp_1MiB_writes", |b| {
        b.iter(|| s.write_all(&chunk).expect("write"));
    });
    drop(s);
    // fdatasync of a 16 KiB append, the cost an acks=all produce waits for.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = std::fs::File::create(dir.path().join("f")).expect("create");
    let data = vec![1u8; 16 << 10];
    g.bench_function("append_16KiB_and_fdatasync", |b| {
        b.iter(|| {
            f.write_all(&data).expect("write");
            f.sync_data().expect("fdatasync");
        });
    });
    g.finish();
}

fn produce(c: &mut Criterion) {
    let mut g = c.benchmark_group("produce");
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(20);
    let records = batch(16, 1024);
    for (label, fsync, acks) in [
        ("acks=1", FsyncPolicy::AcksAll, 1i16),
        ("acks=all_fsync", FsyncPolicy::AcksAll, -1),
    ] {
        let broker = Broker::start(fsync);
        let req = produce_request("bench", records.clone(), acks);
        let mut s = TcpStream::connect(broker.addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = Vec::new();
        // The first produce creates the topic.
        pipeline(&mut s, &req, 1, &mut buf);
        let per = 64u64;
        g.throughput(Throughput::Bytes(records.len() as u64 * per));
        g.bench_function(
            BenchmarkId::new("16KiB_batches_of_1KiB_records_x64", label),
            |b| b.iter(|| pipeline(&mut s, &req, per, &mut buf)),
        );
    }
    g.finish();
}

fn fetch(c: &mut Criterion) {
    let broker = Broker::start(FsyncPolicy::Never);
    let records = batch(16, 1024);
    let mut s = TcpStream::connect(broker.addr).expect("connect");
    let mut buf = Vec::new();
    let req = produce_request("fetched", records.clone(), 1);
    // 64 MiB to read back from the page cache.
    let n = (64u64 << 20) / records.len() as u64;
    pipeline(&mut s, &req, n, &mut buf);
    let end = n as i64 * 16;
    let probe = frame(
        ApiKey::Fetch,
        12,
        &FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("fetched")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]),
    );
    s.write_all(&probe).expect("send");
    let got = read_frame(&mut s, &mut buf);
    assert!(got > 1 << 19, "a fetch returns data ({got} bytes)");
    // The log's end, from the high watermark (the produce that created the
    // topic may not have landed).
    let end = {
        use kafka_protocol::protocol::Decodable;
        let mut b = Bytes::from(buf.clone());
        kafka_protocol::messages::ResponseHeader::decode(
            &mut b,
            ApiKey::Fetch.response_header_version(12),
        )
        .expect("header");
        let r = kafka_protocol::messages::FetchResponse::decode(&mut b, 12).expect("fetch");
        r.responses[0].partitions[0].high_watermark.min(end)
    };
    // Whole 1 MiB responses only: stop short of the end.
    let end = end - 64 * 16;
    let mut g = c.benchmark_group("fetch");
    g.measurement_time(Duration::from_secs(5));
    let max = 1 << 20;
    let mut offset = 0i64;
    // Each response carries the whole batches that fit in 1 MiB.
    g.throughput(Throughput::Bytes(
        (max as u64 / records.len() as u64) * records.len() as u64,
    ));
    let fetch_at = |offset: i64| {
        frame(
            ApiKey::Fetch,
            12,
            &FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(max)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("fetched")))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(max)])]),
        )
    };
    g.bench_function("1MiB_responses_from_the_page_cache", |b| {
        b.iter_custom(|iters| {
            let started = std::time::Instant::now();
            for _ in 0..iters {
                if offset >= end {
                    offset = 0;
                }
                s.write_all(&fetch_at(offset)).expect("send");
                let got = read_frame(&mut s, &mut buf);
                assert!(
                    got > max as usize / 2,
                    "a full response at {offset}: {got} bytes"
                );
                offset += (got / records.len()) as i64 * 16;
            }
            started.elapsed()
        });
    });
    g.finish();
}

criterion_group!(benches, baselines, produce, fetch);
criterion_main!(benches);
