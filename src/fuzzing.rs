//! The checks behind the cargo-fuzz targets in `fuzz/`, kept in the crate so
//! that `cargo test` replays the committed corpus and every input that once
//! failed through the same code (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`).
//!
//! Each check feeds arbitrary bytes to one entry point and asserts what must
//! hold for any input: no panic, responses that encode, reads that only
//! move forward, stores that count what they hold.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::Config;
use crate::log::batch::{self, BatchHeader};
use crate::log::{LogConfig, PartitionLog};
use crate::protocol::{self, fetch_frame, Decoded};
use crate::retry::store::{self, PendingStore};

/// Where fuzz state lives: a tmpfs when there is one.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("weir-fuzz").tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap_or_else(|e| panic!("no scratch directory: {e}"))
}

/// A broker opened on a scratch directory, driven on a runtime whose clock is
/// paused: long polls, rebalance waits and idle timeouts pass at once.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    _dir: tempfile::TempDir,
    runs: u32,
}

/// Runs before a broker is replaced with a fresh one, so that state created
/// by inputs stays small.
const RUNS_PER_BROKER: u32 = 2000;

impl Harness {
    /// # Panics
    /// When the broker cannot be opened on a scratch directory.
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let dir = scratch();
        let mut config = Config::for_tests(dir.path().join("data"));
        config.args.fsync = crate::config::FsyncPolicy::Never;
        let broker = Broker::open(config).unwrap_or_else(|e| panic!("broker: {e}"));
        Self {
            rt,
            broker,
            _dir: dir,
            runs: 0,
        }
    }

    fn tick(&mut self) {
        self.runs += 1;
        if self.runs >= RUNS_PER_BROKER {
            *self = Self::new();
        }
    }

    /// One request frame (without its size prefix) through decode, the
    /// handler and the encoder.
    ///
    /// # Panics
    /// When a handler's response does not encode, or the zero-copy Fetch
    /// framing differs from the generic encoder.
    pub fn request(&mut self, data: &[u8]) {
        self.tick();
        let Ok(Decoded::Request { header, key, body }) =
            protocol::decode(Bytes::copy_from_slice(data), crate::api::served)
        else {
            return;
        };
        let body = tame(*body);
        let broker = Arc::clone(&self.broker);
        let peer: SocketAddr = ([127, 0, 0, 1], 9).into();
        let session = crate::security::Session::anonymous(peer);
        let version = header.request_api_version;
        let res = self.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(120),
                crate::api::handle(&broker, &header, &session, body),
            )
            .await
        });
        let Ok(res) = res else { return };
        let resp = match res {
            Ok(Some(resp)) => resp,
            Ok(None) => return,
            Err(e) => {
                panic!("{key:?} v{version} admitted by the version table but not served: {e}")
            }
        };
        let mut out = BytesMut::new();
        if let Err(e) = protocol::encode(&mut out, header.correlation_id, key, version, &resp) {
            panic!("{key:?} v{version} response does not encode: {e}");
        }
        if let kafka_protocol::messages::ResponseKind::Fetch(f) = &resp {
            if fetch_frame::supported(f, version) {
                let chunks = fetch_frame::frame(header.correlation_id, version, f)
                    .unwrap_or_else(|e| panic!("fetch framing: {e}"));
                let framed: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
                assert!(framed == out[..], "zero-copy Fetch framing differs");
            }
        }
    }

    /// Bytes sent by a client on one connection, then end of stream: the
    /// connection must answer and close, whatever the bytes.
    pub fn connection(&mut self, data: &[u8]) {
        if creates_partitions(data) {
            return;
        }
        self.tick();
        let broker = Arc::clone(&self.broker);
        let input = data.to_vec();
        self.rt.block_on(async move {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let limits = crate::server::Limits::new(
                broker.config.args.max_connections,
                broker.config.args.max_inflight_request_bytes,
            );
            let task = tokio::spawn(crate::server::connection::serve(
                Arc::clone(&broker),
                server,
                crate::security::Session::anonymous(([127, 0, 0, 1], 9).into()),
                CancellationToken::new(),
                limits,
            ));
            let reader = async {
                let _ = client.write_all(&input).await;
                let _ = client.shutdown().await;
                let mut out = Vec::new();
                let _ = client.read_to_end(&mut out).await;
                out
            };
            let out = tokio::time::timeout(Duration::from_secs(3600), reader).await;
            assert!(
                out.is_ok(),
                "a connection whose client stopped sending never closed"
            );
            let _ = task.await;
        });
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// Caps partition counts in requests that create partitions: a fuzzer would
/// otherwise spend its time making directories.
fn tame(body: RequestKind) -> RequestKind {
    match body {
        RequestKind::CreateTopics(mut r) => {
            for t in &mut r.topics {
                t.num_partitions = t.num_partitions.min(4);
                t.assignments.truncate(4);
            }
            RequestKind::CreateTopics(r)
        }
        RequestKind::CreatePartitions(mut r) => {
            for t in &mut r.topics {
                t.count = t.count.min(8);
                if let Some(a) = &mut t.assignments {
                    a.truncate(8);
                }
            }
            RequestKind::CreatePartitions(r)
        }
        other => other,
    }
}

/// Whether any whole frame in a connection's bytes is a request that
/// creates partitions (left to [`Harness::request`], which caps them).
fn creates_partitions(mut data: &[u8]) -> bool {
    while data.len() >= 6 {
        let len = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let key = i16::from_be_bytes([data[4], data[5]]);
        if key == ApiKey::CreateTopics as i16 || key == ApiKey::CreatePartitions as i16 {
            return true;
        }
        let Ok(len) = usize::try_from(len) else {
            return false;
        };
        if len + 4 > data.len() {
            return false;
        }
        data = &data[len + 4..];
    }
    false
}

fn small_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 128,
        // Decompression bombs are refused at 1 MiB rather than 64.
        max_decompressed_batch_bytes: 1 << 20,
        ..LogConfig::default()
    }
}

/// A produce payload through validation, append and read-back, and through
/// the record decoder.
///
/// # Panics
/// When an accepted batch does not read back as written, or when the
/// record decoder cannot decode a batch the append accepted (what consumers
/// would then be stuck on); header keys that are not UTF-8 excepted, which
/// Kafka stores and the decoder refuses.
pub fn record_batch(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let _ = crate::log::records::decode_all(&bytes);
    let Ok(batches) = batch::split_batches(data) else {
        return;
    };
    for (pos, h) in &batches {
        let total = h.total_len();
        assert!(batch::validate(&data[*pos..*pos + total]).is_ok());
    }
    let dir = scratch();
    let Ok(log) = PartitionLog::open(dir.path(), small_log_config(), 0) else {
        return;
    };
    let Ok(info) = log.append(data, 0) else {
        return;
    };
    let r = log
        .read(info.base_offset, usize::MAX, true)
        .unwrap_or_else(|e| panic!("read back: {e}"));
    assert_eq!(r.records.len(), data.len(), "a batch reads back whole");
    // Only the base offset and the leader epoch (outside the CRC) change.
    assert_eq!(&r.records[8..12], &data[8..12]);
    assert_eq!(&r.records[16..], &data[16..]);
    assert!(batch::validate(&r.records).is_ok());
    if let Err(e) = crate::log::records::decode_all(&r.records) {
        let e = format!("{e:#}");
        assert!(
            e.to_ascii_lowercase().contains("utf-8"),
            "an accepted batch does not decode: {e}"
        );
    }
}

/// Files of a partition directory made from `data`, then opened, read end
/// to end, appended to and reopened.
///
/// Layout: a flags byte (bit 0: a clean shutdown), a u16 base offset for a
/// second segment, then sections of a u16 length each: first segment's
/// `.log`, `.index`, `.timeindex`, second segment's `.log`, `.index`,
/// `.timeindex`, `recovery-point`. A missing section is a missing file.
///
/// # Panics
/// When a read inside the log fails or goes backwards, or an append after
/// recovery is not there after a reopen.
pub fn segment_recovery(data: &[u8]) {
    let mut buf = data;
    if buf.len() < 3 {
        return;
    }
    let clean = buf[0] & 1 == 1;
    let second_base = i64::from(u16::from_be_bytes([buf[1], buf[2]]));
    buf = &buf[3..];
    let mut sections: Vec<Option<&[u8]>> = Vec::new();
    for _ in 0..7 {
        if buf.len() < 2 {
            sections.push(None);
            continue;
        }
        let n = usize::from(u16::from_be_bytes([buf[0], buf[1]])).min(buf.len() - 2);
        sections.push(Some(&buf[2..2 + n]));
        buf = &buf[2 + n..];
    }
    let dir = scratch();
    let p = dir.path();
    let name = |base: i64, ext: &str| -> PathBuf { p.join(format!("{base:020}.{ext}")) };
    let write = |path: PathBuf, bytes: Option<&[u8]>| {
        if let Some(b) = bytes {
            let _ = std::fs::write(path, b);
        }
    };
    write(name(0, "log"), sections[0]);
    write(name(0, "index"), sections[1]);
    write(name(0, "timeindex"), sections[2]);
    if second_base > 0 && sections[3].is_some() {
        write(name(second_base, "log"), sections[3]);
        write(name(second_base, "index"), sections[4]);
        write(name(second_base, "timeindex"), sections[5]);
    }
    write(
        p.join(crate::log::checkpoint::RECOVERY_POINT_FILE),
        sections[6],
    );
    let Ok(log) = PartitionLog::open_with(p, small_log_config(), 0, clean) else {
        return;
    };
    let (start, end) = (log.log_start_offset(), log.end_offset());
    assert!(start <= end);
    walk(&log, start, end);
    let _ = log.offset_for_timestamp(0);
    let _ = log.max_timestamp_offset();
    let _ = log.checkpoint();
    log.release_idle(i64::MAX);
    walk(&log, start, end);
    // A valid batch appended after recovery is there after a reopen.
    let b = tiny_batch();
    let Ok(info) = log.append(&b, 0) else { return };
    drop(log);
    // Reopened as it was opened: files a clean shutdown left are trusted
    // (not CRC-checked) both times, so damage the first open took on trust
    // is not found only by the second.
    let log = PartitionLog::open_with(p, small_log_config(), 0, clean)
        .unwrap_or_else(|e| panic!("reopen after an append: {e}"));
    assert_eq!(
        log.end_offset(),
        info.last_offset + 1,
        "the append survives a reopen"
    );
    let r = log
        .read(info.base_offset, usize::MAX, true)
        .unwrap_or_else(|e| panic!("read the append: {e}"));
    if batch::validate(&r.records[..b.len().min(r.records.len())]).is_err() {
        let h = BatchHeader::parse(&r.records).ok();
        panic!(
            "the append at {} reads back as another batch {h:?}; segments {:?}, start {}",
            info.base_offset,
            log.segment_bases(),
            log.log_start_offset()
        );
    }
}

/// Reads `[start, end)` in steps; every step moves forward or stops.
fn walk(log: &PartitionLog, start: i64, end: i64) {
    let mut next = start;
    for _ in 0..10_000 {
        if next >= end {
            return;
        }
        let r = log
            .read(next, 1 << 20, true)
            .unwrap_or_else(|e| panic!("read at {next} in [{start}, {end}): {e}"));
        let mut rest = &r.records[..];
        let mut moved = false;
        while let Ok(h) = BatchHeader::parse(rest) {
            if h.batch_length <= 0 || h.total_len() > rest.len() {
                break;
            }
            if h.last_offset() >= next {
                next = h.last_offset() + 1;
                moved = true;
            }
            rest.advance(h.total_len());
        }
        if !moved {
            return;
        }
    }
}

/// A valid one-record batch.
fn tiny_batch() -> Vec<u8> {
    let record = [0u8, 0, 0, 1, 2, b'x', 0];
    let mut b = batch::new_header(0, 1, 0);
    b.push(record.len() as u8 * 2);
    b.extend_from_slice(&record);
    batch::seal(&mut b);
    b
}

/// A pending-retry store file made from `data`: replayed, drained, half
/// marked done, replayed again.
///
/// # Panics
/// When the counts after a reopen do not match what was marked done.
pub fn pending_store(data: &[u8]) {
    let dir = scratch();
    let sub = dir.path().join(store::DIR);
    if std::fs::create_dir_all(&sub).is_err()
        || std::fs::write(sub.join(store::FILE), data).is_err()
    {
        return;
    }
    let Ok(s) = PendingStore::open(dir.path()) else {
        return;
    };
    let held = s.pending();
    let Ok(taken) = s.take_due(i64::MAX, 100_000) else {
        return;
    };
    assert!(taken.len() as u64 <= held);
    let done: Vec<u64> = taken.iter().step_by(2).map(|(p, _)| *p).collect();
    if s.mark_done(&done, false).is_err() {
        return;
    }
    let readable = taken.len() as u64;
    drop(s);
    let s = PendingStore::open(dir.path()).unwrap_or_else(|e| panic!("reopen: {e}"));
    let want = held - done.len() as u64;
    if readable == held {
        assert_eq!(s.pending(), want, "held {held}, {} marked done", done.len());
    } else {
        assert!(s.pending() <= held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed corpus and regression input of each target.
    fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut out = Vec::new();
        for kind in ["corpus", "regressions"] {
            let Ok(rd) = std::fs::read_dir(root.join(kind).join(target)) else {
                continue;
            };
            for e in rd.flatten() {
                if let Ok(b) = std::fs::read(e.path()) {
                    out.push((e.path(), b));
                }
            }
        }
        out.sort();
        out
    }

    fn default_request(key: ApiKey) -> Option<RequestKind> {
        use kafka_protocol::messages::*;
        Some(match key {
            ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default()),
            ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
            ApiKey::CreatePartitions => {
                RequestKind::CreatePartitions(CreatePartitionsRequest::default())
            }
            ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default()),
            ApiKey::DeleteGroups => RequestKind::DeleteGroups(DeleteGroupsRequest::default()),
            ApiKey::DeleteRecords => RequestKind::DeleteRecords(DeleteRecordsRequest::default()),
            ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
            ApiKey::DescribeCluster => {
                RequestKind::DescribeCluster(DescribeClusterRequest::default())
            }
            ApiKey::DescribeConfigs => {
                RequestKind::DescribeConfigs(DescribeConfigsRequest::default())
            }
            ApiKey::DescribeGroups => RequestKind::DescribeGroups(DescribeGroupsRequest::default()),
            ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default()),
            ApiKey::FindCoordinator => {
                RequestKind::FindCoordinator(FindCoordinatorRequest::default())
            }
            ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
            ApiKey::IncrementalAlterConfigs => {
                RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default())
            }
            ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
            ApiKey::JoinGroup => RequestKind::JoinGroup(JoinGroupRequest::default()),
            ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
            ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
            ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default()),
            ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default()),
            ApiKey::OffsetCommit => RequestKind::OffsetCommit(OffsetCommitRequest::default()),
            ApiKey::OffsetDelete => RequestKind::OffsetDelete(OffsetDeleteRequest::default()),
            ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default()),
            ApiKey::Produce => RequestKind::Produce(ProduceRequest::default()),
            ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default()),
            _ => return None,
        })
    }

    /// A request frame (no size prefix): header then body.
    fn request_frame(key: ApiKey, version: i16, body: &RequestKind) -> Option<Vec<u8>> {
        use kafka_protocol::messages::RequestHeader;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let mut b = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("seed")))
            .encode(&mut b, key.request_header_version(version))
            .ok()?;
        body.encode(&mut b, version).ok()?;
        Some(b.to_vec())
    }

    /// Batches of every codec, good and bad in the ways produce refuses:
    /// a body that does not decompress (correct CRC), a decompression bomb
    /// (over the fuzz config's 1 MiB), inner offsets out of order, a record
    /// count the body does not hold.
    fn record_batch_seeds() -> Vec<(String, Vec<u8>)> {
        use crate::log::records::{batch_around, compress_body, encode_batch, plain_record};
        use kafka_protocol::records::Compression;
        let codecs = [
            ("gzip", 1, Compression::Gzip),
            ("snappy", 2, Compression::Snappy),
            ("lz4", 3, Compression::Lz4),
            ("zstd", 4, Compression::Zstd),
        ];
        let rec = |o: i64, v: Vec<u8>| {
            plain_record(
                o,
                1000 + o,
                Some(Bytes::from(format!("k{o}"))),
                Some(Bytes::from(v)),
                &[("h".to_string(), Some(Bytes::from_static(b"x")))],
            )
        };
        let three = || (0..3).map(|o| rec(o, vec![b'v'; 40])).collect::<Vec<_>>();
        let mut out = Vec::new();
        for (name, id, c) in codecs {
            let good = encode_batch(&three(), c).unwrap();
            out.push((format!("good-{name}"), good.to_vec()));
            let swapped = encode_batch(&[rec(1, b"a".to_vec()), rec(0, b"b".to_vec())], c).unwrap();
            out.push((format!("inner-offsets-swapped-{name}"), swapped.to_vec()));
            let body = encode_batch(&three(), Compression::None).unwrap();
            let body = compress_body(id, &body[batch::HEADER_LEN..]).unwrap();
            out.push((
                format!("count-mismatch-{name}"),
                batch_around(id, 4, &body).to_vec(),
            ));
            let bomb = encode_batch(&[rec(0, vec![0u8; 2 << 20])], c).unwrap();
            out.push((format!("bomb-2MiB-{name}"), bomb.to_vec()));
        }
        let mut not_gzip = vec![0x1f, 0x8b];
        not_gzip.extend_from_slice(&[0u8; 200]);
        out.push((
            "gzip-not-decompressing".into(),
            batch_around(1, 1, &not_gzip).to_vec(),
        ));
        out
    }

    #[test]
    fn record_batch_seeds_are_refused_or_taken_as_produce_would() {
        for (name, b) in record_batch_seeds() {
            record_batch(&b);
            let dir = scratch();
            let log = PartitionLog::open(dir.path(), small_log_config(), 0).unwrap();
            let r = log.append(&b, 0);
            assert_eq!(r.is_ok(), name.starts_with("good-"), "{name}: {r:?}");
        }
    }

    /// Writes the seed corpus under fuzz/corpus/ (run by hand with
    /// `cargo test --lib write_seed_corpus -- --ignored`).
    #[test]
    #[ignore = "writes files into fuzz/corpus"]
    fn write_seed_corpus() {
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::StrBytes;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let put = |target: &str, name: &str, bytes: &[u8]| {
            let d = root.join(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), bytes).unwrap();
        };
        let topic = TopicName(StrBytes::from_static_str("t"));
        let mut conn = Vec::new();
        for api in crate::api::REGISTRY.rows() {
            let Some(mut body) = default_request(api.key) else {
                continue;
            };
            // Requests that touch a topic, so the seeds reach past the
            // lookups.
            match &mut body {
                RequestKind::Produce(r) => {
                    r.acks = 1;
                    r.timeout_ms = 1000;
                    r.topic_data = vec![produce_request::TopicProduceData::default()
                        .with_name(topic.clone())
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(Bytes::from(tiny_batch()))),
                        ])];
                }
                RequestKind::Fetch(r) => {
                    r.max_wait_ms = 100;
                    r.max_bytes = 1 << 20;
                    r.topics = vec![fetch_request::FetchTopic::default()
                        .with_topic(topic.clone())
                        .with_partitions(vec![fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(1 << 20)])];
                }
                RequestKind::CreateTopics(r) => {
                    r.topics = vec![create_topics_request::CreatableTopic::default()
                        .with_name(topic.clone())
                        .with_num_partitions(2)
                        .with_replication_factor(1)];
                }
                RequestKind::Metadata(r) => {
                    r.topics = Some(vec![metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(topic.clone()))]);
                }
                RequestKind::JoinGroup(r) => {
                    r.group_id = GroupId(StrBytes::from_static_str("g"));
                    r.session_timeout_ms = 10_000;
                    r.rebalance_timeout_ms = 10_000;
                    r.protocol_type = StrBytes::from_static_str("consumer");
                    r.protocols = vec![join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range"))];
                }
                _ => {}
            }
            for v in api.min..=api.max {
                if let Some(f) = request_frame(api.key, v, &body) {
                    put("request", &format!("{:?}-v{v}", api.key), &f);
                    if v == api.max {
                        conn.extend_from_slice(&(f.len() as i32).to_be_bytes());
                        conn.extend_from_slice(&f);
                    }
                }
            }
        }
        put("connection", "every-api-latest", &conn);
        put("record_batch", "tiny", &tiny_batch());
        for (name, b) in record_batch_seeds() {
            put("record_batch", &name, &b);
        }
        // A real log, packed in the segment_recovery layout.
        let dir = scratch();
        let log = PartitionLog::open(dir.path(), small_log_config(), 0).unwrap();
        for _ in 0..60 {
            log.append(&tiny_batch(), 0).unwrap();
        }
        log.checkpoint().unwrap();
        log.append(&tiny_batch(), 0).unwrap();
        let bases = log.segment_bases();
        drop(log);
        let file = |base: i64, ext: &str| {
            std::fs::read(dir.path().join(format!("{base:020}.{ext}"))).unwrap_or_default()
        };
        let second = bases.get(1).copied().unwrap_or(0);
        let mut packed = vec![0u8];
        packed.extend_from_slice(&(second as u16).to_be_bytes());
        for (base, ext) in [
            (0, "log"),
            (0, "index"),
            (0, "timeindex"),
            (second, "log"),
            (second, "index"),
            (second, "timeindex"),
        ] {
            let mut f = file(base, ext);
            // The preallocated zeros, but a few.
            let used = f.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            f.truncate((used + 16).min(u16::MAX as usize));
            packed.extend_from_slice(&(f.len() as u16).to_be_bytes());
            packed.extend_from_slice(&f);
        }
        let rp =
            std::fs::read(dir.path().join(crate::log::checkpoint::RECOVERY_POINT_FILE)).unwrap();
        packed.extend_from_slice(&(rp.len() as u16).to_be_bytes());
        packed.extend_from_slice(&rp);
        put(
            "segment_recovery",
            "two-segments-and-a-recovery-point",
            &packed,
        );
        // A pending store with held records and a done mark.
        let dir = scratch();
        let s = PendingStore::open(dir.path()).unwrap();
        let held: Vec<store::Held> = (0..3)
            .map(|i| store::Held {
                due_ms: 1000 + i,
                topic: "t.retry".into(),
                partition: 0,
                timestamp: 5,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v")),
                headers: vec![("retry.attempt".into(), Some(Bytes::from_static(b"1")))],
            })
            .collect();
        s.hold(&held, false).unwrap();
        let taken = s.take_due(1000, 1).unwrap();
        s.mark_done(&[taken[0].0], false).unwrap();
        drop(s);
        put(
            "pending_store",
            "three-held-one-done",
            &std::fs::read(dir.path().join(store::DIR).join(store::FILE)).unwrap(),
        );
    }

    #[test]
    #[ignore = "debugging aid: WEIR_FUZZ_CASE=<file>"]
    fn one_segment_recovery_case() {
        let path = std::env::var("WEIR_FUZZ_CASE").unwrap();
        segment_recovery(&std::fs::read(path).unwrap());
    }

    #[test]
    fn committed_fuzz_inputs_replay_cleanly() {
        let mut h = Harness::new();
        let mut n = 0;
        for (_, b) in inputs("request") {
            h.request(&b);
            n += 1;
        }
        for (_, b) in inputs("connection") {
            h.connection(&b);
            n += 1;
        }
        for (_, b) in inputs("record_batch") {
            record_batch(&b);
            n += 1;
        }
        for (_, b) in inputs("segment_recovery") {
            segment_recovery(&b);
            n += 1;
        }
        for (_, b) in inputs("pending_store") {
            pending_store(&b);
            n += 1;
        }
        assert!(n > 0, "the committed corpus is found");
    }
}
