//! Malformed, oversized, truncated and unknown requests over raw sockets: the
//! broker answers with an error or closes that connection, and keeps serving
//! everyone else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, MetadataRequest, ProduceRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::common::*;

pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

pub(crate) fn frame<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

pub(crate) fn read_response(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// The body of a response to `key` at `version`, after its header.
pub(crate) fn decode_body<Resp: Decodable>(key: ApiKey, version: i16, r: &[u8]) -> Resp {
    let skip = if key.response_header_version(version) >= 1 {
        5
    } else {
        4
    };
    Resp::decode(&mut bytes::Bytes::from(r[skip..].to_vec()), version).unwrap()
}

/// Sends one request on a new PLAINTEXT connection and decodes the
/// response body.
pub(crate) fn call<Req: Encodable, Resp: Decodable>(
    addr: SocketAddr,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    let mut s = connect(addr);
    s.write_all(&frame(key, version, 9, req)).unwrap();
    decode_body(key, version, &read_response(&mut s).unwrap())
}

/// True when the peer closed the connection (EOF) rather than hanging.
pub(crate) fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// A metadata round trip on a fresh connection still works.
fn still_serving(addr: SocketAddr) {
    let mut s = connect(addr);
    s.write_all(&frame(
        ApiKey::Metadata,
        12,
        7,
        &MetadataRequest::default().with_topics(None),
    ))
    .unwrap();
    let resp = read_response(&mut s).expect("metadata answered");
    let mut b = bytes::Bytes::from(resp);
    let h = ResponseHeader::decode(&mut b, ApiKey::Metadata.response_header_version(12)).unwrap();
    assert_eq!(h.correlation_id, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_unknown_and_truncated_frames_close_only_their_connection() {
    let b = TestBroker::start().await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        // Garbage: a plausible size then random bytes.
        let mut s = connect(addr);
        s.write_all(&[
            0, 0, 0, 16, 0xff, 0xee, 0xdd, 0xcc, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ])
        .unwrap();
        assert!(closed(&mut s));
        still_serving(addr);

        // A 2 GiB length prefix: refused before any allocation.
        let mut s = connect(addr);
        s.write_all(&0x7fff_ffffi32.to_be_bytes()).unwrap();
        assert!(closed(&mut s));
        // A negative one.
        let mut s = connect(addr);
        s.write_all(&(-5i32).to_be_bytes()).unwrap();
        assert!(closed(&mut s));
        still_serving(addr);

        // An unknown api key.
        let mut s = connect(addr);
        s.write_all(&[0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
            .unwrap();
        assert!(closed(&mut s));
        still_serving(addr);

        // A frame cut mid-way, then the client goes away.
        let mut s = connect(addr);
        let f = frame(ApiKey::Metadata, 12, 1, &MetadataRequest::default());
        s.write_all(&f[..f.len() / 2]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(closed(&mut s));
        still_serving(addr);

        // An array length claiming two billion elements in a tiny frame.
        let mut s = connect(addr);
        let mut body = frame(
            ApiKey::Metadata,
            4,
            9,
            &MetadataRequest::default().with_topics(Some(vec![])),
        );
        let n = body.len();
        body[n - 5..n - 1].copy_from_slice(&0x7fff_fff0i32.to_be_bytes());
        s.write_all(&body).unwrap();
        assert!(closed(&mut s));
        still_serving(addr);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_above_our_range_gets_the_v0_error_response() {
    let b = TestBroker::start().await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let mut s = connect(addr);
        // v9 ApiVersions: header v2, body unknown to us.
        let mut f = vec![0, 18, 0, 9, 0, 0, 0, 42, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0];
        let len = f.len() as i32;
        let mut out = len.to_be_bytes().to_vec();
        out.append(&mut f);
        s.write_all(&out).unwrap();
        let resp = read_response(&mut s).unwrap();
        let mut b = bytes::Bytes::from(resp);
        let h = ResponseHeader::decode(&mut b, 0).unwrap();
        assert_eq!(h.correlation_id, 42);
        let body = ApiVersionsResponse::decode(&mut b, 0).unwrap();
        assert_eq!(body.error_code, 35);
        assert!(body
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16 && k.min_version == 3));
        // The connection stays usable for a lower version.
        s.write_all(&frame(
            ApiKey::ApiVersions,
            3,
            43,
            &kafka_protocol::messages::ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("raw"))
                .with_client_software_version(StrBytes::from_static_str("1.0")),
        ))
        .unwrap();
        let resp = read_response(&mut s).unwrap();
        let mut b = bytes::Bytes::from(resp);
        let _ = ResponseHeader::decode(&mut b, 0).unwrap();
        let body = ApiVersionsResponse::decode(&mut b, 3).unwrap();
        assert_eq!(body.error_code, 0);
        assert!(body
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::ConsumerGroupHeartbeat as i16 && k.max_version == 1));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_batch_gets_corrupt_message_and_pipelined_responses_keep_order() {
    let b = TestBroker::start().await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let mut s = connect(addr);
        let batch = weir::log::records::encode_batch(
            &[weir::log::records::plain_record(
                0,
                1,
                Some(bytes::Bytes::from_static(b"k")),
                Some(bytes::Bytes::from_static(b"v")),
                &[],
            )],
            kafka_protocol::records::Compression::None,
        )
        .unwrap()
        .to_vec();
        let produce = |records: Vec<u8>| {
            ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(kafka_protocol::messages::TopicName(
                        StrBytes::from_static_str("raw"),
                    ))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(bytes::Bytes::from(records)))])])
        };
        let mut corrupt = batch.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x55;
        // Pipeline three requests before reading anything.
        let mut all = Vec::new();
        all.extend(frame(ApiKey::Produce, 9, 100, &produce(batch.clone())));
        all.extend(frame(ApiKey::Produce, 9, 101, &produce(corrupt)));
        all.extend(frame(ApiKey::Produce, 9, 102, &produce(batch)));
        s.write_all(&all).unwrap();
        let mut codes = Vec::new();
        for want in 100..103 {
            let resp = read_response(&mut s).unwrap();
            let mut b = bytes::Bytes::from(resp);
            let h = ResponseHeader::decode(&mut b, 1).unwrap();
            assert_eq!(
                h.correlation_id, want,
                "responses come back in request order"
            );
            let r = kafka_protocol::messages::ProduceResponse::decode(&mut b, 9).unwrap();
            let p = &r.responses[0].partition_responses[0];
            codes.push((p.error_code, p.base_offset));
        }
        assert_eq!(codes, vec![(0, 0), (2, -1), (0, 1)]);
    })
    .await
    .unwrap();
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn gauge(http: SocketAddr, name: &str) -> Option<f64> {
    let (_, _, body) = http_get(http, "/metrics", &[]);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// A produce of one record of `size` bytes, as raw bytes on a new connection;
/// returns whether it was answered within `within`.
fn raw_produce(addr: SocketAddr, topic: &str, size: usize, within: Duration) -> bool {
    let rec = weir::log::records::plain_record(
        0,
        weir::broker::now_ms(),
        None,
        Some(bytes::Bytes::from(vec![b'x'; size])),
        &[],
    );
    let batch =
        weir::log::records::encode_batch(&[rec], kafka_protocol::records::Compression::None)
            .unwrap();
    let req = produce_to_partition_0(topic, batch);
    let mut s = connect(addr);
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(&frame(ApiKey::Produce, 9, 11, &req)).unwrap();
    read_response(&mut s).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_clients_give_back_their_byte_budget_and_leave_no_connection_behind() {
    let b = TestBroker::start_with(|c| {
        c.args.max_request_bytes = 1 << 20;
        c.args.max_inflight_request_bytes = 2 << 20;
    })
    .await;
    let addr = b.kafka_addr();
    let http = b.http_addr();
    create_topic(&b.bootstrap(), "vanish", 1, &[]).await;
    tokio::task::spawn_blocking(move || {
        // Half a large frame, then gone.
        let mut a = connect(addr);
        a.write_all(&1_000_000i32.to_be_bytes()).unwrap();
        a.write_all(&[0u8; 100]).unwrap();
        drop(a);
        // Most of a large frame, then gone.
        let mut c = connect(addr);
        c.write_all(&1_000_000i32.to_be_bytes()).unwrap();
        c.write_all(&vec![0u8; 900_000]).unwrap();
        drop(c);
        // A request whose answer it never reads: closing with unread data
        // resets the connection.
        let mut r = connect(addr);
        r.write_all(&frame(
            ApiKey::Metadata,
            12,
            1,
            &MetadataRequest::default().with_topics(None),
        ))
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(r);
        // A long-poll fetch, abandoned.
        let mut f = connect(addr);
        let fetch = kafka_protocol::messages::FetchRequest::default()
            .with_max_wait_ms(2000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                kafka_protocol::messages::fetch_request::FetchTopic::default()
                    .with_topic(kafka_protocol::messages::TopicName(
                        StrBytes::from_static_str("vanish"),
                    ))
                    .with_partitions(vec![
                        kafka_protocol::messages::fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        f.write_all(&frame(ApiKey::Fetch, 12, 2, &fetch)).unwrap();
        drop(f);
        // The whole budget is free again: a near-maximum request goes through
        // at once.
        assert!(
            raw_produce(addr, "vanish", 900_000, Duration::from_secs(5)),
            "a 900 KB produce is answered: no budget leaked"
        );
        // The abandoned long poll ends at its max wait; then no connection
        // is left.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gauge(http, "weir_connections") != Some(0.0) {
            assert!(
                std::time::Instant::now() < deadline,
                "connections left behind"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        still_serving(addr);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_maximum_size_frames_are_held_to_the_byte_budget_and_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let child = ChildBroker::start(
        dir.path(),
        &[
            "--max-request-bytes",
            "1048576",
            "--max-inflight-request-bytes",
            "4194304",
            "--connections-max-idle-ms",
            "3000",
        ],
    );
    let addr: SocketAddr = child.bootstrap().parse().unwrap();
    create_topic(&child.bootstrap(), "stall", 1, &[]).await;
    let pid = child.child.id();
    tokio::task::spawn_blocking(move || {
        let before = rss(pid);
        // 300 clients each claim a 1 MiB frame, send 32 KiB of it and stall.
        let stalled: Vec<TcpStream> = (0..300)
            .map(|_| {
                let mut s = connect(addr);
                s.write_all(&1_048_000i32.to_be_bytes()).unwrap();
                s.write_all(&[7u8; 32 * 1024]).unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let grown = rss(pid).saturating_sub(before);
        assert!(
            grown < 48 << 20,
            "300 stalled 1 MiB frames grew the broker by {} MiB",
            grown >> 20
        );
        // They go away: the budget they held is free at once.
        drop(stalled);
        assert!(
            raw_produce(addr, "stall", 100, Duration::from_secs(5)),
            "a produce is answered once the stalled clients are gone"
        );
        // A client that stops sending mid-frame is closed by the idle
        // timeout, giving its budget back.
        let mut s = connect(addr);
        s.write_all(&1_048_000i32.to_be_bytes()).unwrap();
        s.write_all(&[7u8; 1024]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = std::time::Instant::now();
        assert!(
            closed(&mut s),
            "a stalled client is closed by the idle timeout"
        );
        assert!(started.elapsed() < Duration::from_secs(8));
        assert!(raw_produce(addr, "stall", 100, Duration::from_secs(5)));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_cost_little_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let child = ChildBroker::start(dir.path(), &["--max-connections", "12000"]);
    let bs = child.bootstrap();
    let addr: SocketAddr = bs.parse().unwrap();
    let pid = child.child.id();
    create_topic(&bs, "idle", 1, &[]).await;
    let (conns, before, fds) = tokio::task::spawn_blocking(move || {
        let before = rss(pid);
        let conns: Vec<TcpStream> = (0..10_000)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // Every one accepted and served by the broker.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while open_fds(pid) < 10_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "connections not accepted"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        (conns, before, open_fds(pid))
    })
    .await
    .unwrap();
    let per_conn = rss(pid).saturating_sub(before) / 10_000;
    eprintln!("10,000 idle connections: {per_conn} bytes of RSS each, {fds} descriptors");
    assert!(per_conn < 16 * 1024, "{per_conn} bytes per idle connection");
    // Real clients still get through.
    let p = producer(&bs, &[]);
    for i in 0..100 {
        p.send(
            rdkafka::producer::FutureRecord::to("idle")
                .key("k")
                .payload(&format!("{i}")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let bs2 = bs.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_all(&bs2, "idle", 1, 100, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert_eq!(read.len(), 100);
    drop(conns);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while open_fds(pid) > 1000 {
        assert!(
            std::time::Instant::now() < deadline,
            "closed connections not released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An acks=1 produce of `records` to partition 0 of `topic`.
fn produce_to_partition_0(topic: &str, records: bytes::Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                topic.to_string(),
            )))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

/// A produce of `records` to partition 0 of `topic` over a raw connection
/// (Produce v9, which answers with an error message): (error code, base
/// offset, error message).
fn raw_produce_batch(
    addr: SocketAddr,
    topic: &str,
    records: bytes::Bytes,
) -> (i16, i64, Option<String>) {
    let req = produce_to_partition_0(topic, records);
    let r: kafka_protocol::messages::ProduceResponse = raw_request(addr, ApiKey::Produce, 9, &req);
    let p = &r.responses[0].partition_responses[0];
    (
        p.error_code,
        p.base_offset,
        p.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// One record with an uncompressed body of `value_len` zeros, written into a
/// gzip stream piece by piece: a batch that decompresses to that size without
/// the test holding it.
fn gzip_of_zeros(value_len: usize) -> bytes::Bytes {
    use std::io::Write as _;
    fn varint(v: i64, out: &mut Vec<u8>) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    // attributes, timestamp delta, offset delta, key -1, value length.
    let mut fields = vec![0u8, 0, 0];
    varint(-1, &mut fields);
    varint(value_len as i64, &mut fields);
    let mut head = Vec::new();
    varint((fields.len() + value_len + 1) as i64, &mut head);
    head.extend_from_slice(&fields);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&head).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = value_len;
    while left > 0 {
        let n = left.min(zeros.len());
        e.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    // No headers.
    e.write_all(&[0]).unwrap();
    weir::log::records::batch_around(1, 1, &e.finish().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_batch_that_does_not_decompress_is_refused_and_the_partition_stays_readable() {
    let b = TestBroker::start().await;
    let addr = b.kafka_addr();
    let bs = b.bootstrap();
    create_topic(&bs, "badgz", 1, &[]).await;
    // attributes=gzip, a correct CRC-32C, a body of 0x1f 0x8b then zeros.
    let mut body = vec![0x1f, 0x8b];
    body.extend_from_slice(&[0u8; 200]);
    let bad = weir::log::records::batch_around(1, 1, &body);
    let (code, offset, msg) =
        tokio::task::spawn_blocking(move || raw_produce_batch(addr, "badgz", bad))
            .await
            .unwrap();
    assert_eq!(code, 2, "CORRUPT_MESSAGE");
    assert_eq!(offset, -1);
    let msg = msg.expect("an error message");
    assert!(msg.contains("gzip"), "{msg}");
    assert_eq!(
        b.broker()
            .topics
            .get("badgz")
            .unwrap()
            .partition(0)
            .unwrap()
            .end_offset(),
        0
    );
    // A good record produced after it is what a consumer reads first.
    let p = producer(&bs, &[]);
    p.send(
        rdkafka::producer::FutureRecord::to("badgz")
            .key("k")
            .payload("good"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let read =
        tokio::task::spawn_blocking(move || read_all(&bs, "badgz", 1, 1, Duration::from_secs(20)))
            .await
            .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!((read[0].1, read[0].3.as_slice()), (0, &b"good"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_refused_with_message_too_large() {
    let b = TestBroker::start().await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        // 200 MiB of zeros in about 200 KB.
        let bomb = gzip_of_zeros(200 << 20);
        assert!(bomb.len() < 400 << 10, "{} bytes", bomb.len());
        let (code, offset, msg) = raw_produce_batch(addr, "bomb", bomb);
        assert_eq!((code, offset), (10, -1), "MESSAGE_TOO_LARGE");
        let msg = msg.expect("an error message");
        assert!(msg.contains("max-decompressed-batch-bytes"), "{msg}");
        // Under the bound, the same kind of batch is taken.
        let (code, offset, _) = raw_produce_batch(addr, "bomb", gzip_of_zeros(2 << 20));
        assert_eq!((code, offset), (0, 0));
        still_serving(addr);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decompressed_batch_bound_is_a_setting() {
    let b = TestBroker::start_with(|c| c.args.max_decompressed_batch_bytes = 1 << 20).await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let (code, _, _) = raw_produce_batch(addr, "bound", gzip_of_zeros(2 << 20));
        assert_eq!(code, 10);
        let (code, _, _) = raw_produce_batch(addr, "bound", gzip_of_zeros(1 << 19));
        assert_eq!(code, 0);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_with_wrong_inner_offsets_or_record_counts_are_invalid_records() {
    use kafka_protocol::records::Compression;
    let b = TestBroker::start().await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let rec = |o: i64| {
            weir::log::records::plain_record(o, 1, None, Some(bytes::Bytes::from_static(b"v")), &[])
        };
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            // Offset deltas 1, 0: the header's count and last delta agree.
            let swapped = weir::log::records::encode_batch(&[rec(1), rec(0)], c).unwrap();
            let (code, _, msg) = raw_produce_batch(addr, "inner", swapped);
            assert_eq!(code, 87, "{c:?}: INVALID_RECORD");
            assert!(msg.unwrap().contains("offset delta"), "{c:?}");
        }
        // A header counting three records around a body of two.
        let two = weir::log::records::encode_batch(&[rec(0), rec(1)], Compression::None).unwrap();
        let body = weir::log::records::compress_body(4, &two[61..]).unwrap();
        let (code, _, msg) =
            raw_produce_batch(addr, "inner", weir::log::records::batch_around(4, 3, &body));
        assert_eq!(code, 87, "INVALID_RECORD");
        assert!(msg.unwrap().contains("fewer records"));
        assert_eq!(
            raw_produce_batch(addr, "inner", weir::log::records::batch_around(4, 2, &body)).0,
            0
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_of_every_codec_from_librdkafka_are_taken() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let p = producer(&bs, &[("compression.codec", codec), ("linger.ms", "50")]);
        let sends: Vec<_> = (0..200)
            .map(|i| {
                let payload = format!("{codec} record {i} {}", "x".repeat(i % 50));
                let topic = topic.clone();
                let p = p.clone();
                async move {
                    p.send(
                        rdkafka::producer::FutureRecord::to(&topic)
                            .key(&format!("{i}"))
                            .payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e)
                }
            })
            .collect();
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
        let bs2 = bs.clone();
        let t2 = topic.clone();
        let read = tokio::task::spawn_blocking(move || {
            read_all(&bs2, &t2, 1, 200, Duration::from_secs(20))
        })
        .await
        .unwrap();
        assert_eq!(read.len(), 200, "{codec}");
        // The broker holds them compressed, as sent.
        let log = b.broker().topics.get(&topic).unwrap().partition(0).unwrap();
        let stored = log.read(0, usize::MAX, true).unwrap().records;
        let h = weir::log::batch::BatchHeader::parse(&stored).unwrap();
        assert_eq!(weir::log::compression::codec_name(h.compression()), codec);
        for (i, r) in read.iter().enumerate() {
            assert_eq!(r.1, i as i64, "{codec}");
            assert_eq!(
                String::from_utf8_lossy(&r.3),
                format!("{codec} record {i} {}", "x".repeat(i % 50))
            );
        }
    }
}
