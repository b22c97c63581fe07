//! `weir bench`: a load tool that speaks the Kafka protocol to any broker
//! (weir, Kafka, Redpanda...), so that brokers can be compared side by side
//! on one machine.
//!
//! Producers send pre-encoded v2 batches (the payload is built once; only the
//! timestamps and the CRC are rewritten per batch), several requests in
//! flight per connection. Consumers fetch from the partition leaders. In
//! fixed-rate mode every batch has an intended send time and latency is
//! measured from it, not from when it was actually sent, so a stalled broker
//! shows up in the percentiles instead of slowing the load down
//! (coordinated omission). Every run is bounded by `--duration-secs` and
//! `--records`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::args::{BenchArgs, BenchMode};
use super::client::Conn;
use std::process::ExitCode;
use weir::log::batch::{self, BatchHeader, HEADER_LEN};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const METADATA_VERSION: i16 = 12;
const LIST_OFFSETS_VERSION: i16 = 7;
const CREATE_TOPICS_VERSION: i16 = 5;
/// Largest response the tool reads.
const MAX_RESPONSE: usize = 256 << 20;
/// Marks the first record's value in the template batch, to find where the
/// send time goes.
const STAMP_MARK: [u8; 8] = *b"\xffWEIRTS\xff";

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Partition → leader address, from Metadata (creating the topic when
/// asked and missing).
async fn leaders(args: &BenchArgs) -> Result<HashMap<i32, String>> {
    let mut c = Conn::open(&args.bootstrap).await?;
    let name = TopicName(StrBytes::from_string(args.topic.clone()));
    for attempt in 0..20 {
        let md: MetadataResponse = c
            .call(
                ApiKey::Metadata,
                METADATA_VERSION,
                &MetadataRequest::default()
                    .with_allow_auto_topic_creation(false)
                    .with_topics(Some(vec![
                        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(name.clone())),
                    ])),
            )
            .await?;
        let brokers: HashMap<i32, String> = md
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        if let Some(t) = md
            .topics
            .iter()
            .find(|t| t.error_code == 0 && !t.partitions.is_empty())
        {
            let mut out = HashMap::new();
            for p in &t.partitions {
                let addr = brokers
                    .get(&p.leader_id.0)
                    .cloned()
                    .ok_or_else(|| anyhow!("no address for leader {}", p.leader_id.0))?;
                out.insert(p.partition_index, addr);
            }
            return Ok(out);
        }
        if attempt == 0 && args.create_topic {
            let resp: CreateTopicsResponse = c
                .call(
                    ApiKey::CreateTopics,
                    CREATE_TOPICS_VERSION,
                    &CreateTopicsRequest::default()
                        .with_timeout_ms(10_000)
                        .with_topics(vec![CreatableTopic::default()
                            .with_name(name.clone())
                            .with_num_partitions(args.partitions)
                            .with_replication_factor(-1)]),
                )
                .await?;
            if let Some(t) = resp.topics.first() {
                if t.error_code != 0 && t.error_code != 36 {
                    bail!("CreateTopics {}: error {}", args.topic, t.error_code);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("topic {} has no partitions", args.topic)
}

/// A batch built once, restamped per send.
struct Template {
    bytes: BytesMut,
    records: u32,
    /// Where the first record's value starts (the send time in µs goes
    /// there), for an uncompressed batch.
    stamp_at: Option<usize>,
}

fn template(args: &BenchArgs) -> Result<Template> {
    let records = (args.batch_bytes / args.record_size.max(1)).max(1);
    let mut value = vec![b'w'; args.record_size.max(8)];
    value[..8].copy_from_slice(&STAMP_MARK);
    let value = Bytes::from(value);
    let recs: Vec<_> = (0..records)
        .map(|i| weir::log::records::plain_record(i as i64, 0, None, Some(value.clone()), &[]))
        .collect();
    let compression = match args.compression.as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => bail!("unknown compression {other}"),
    };
    let bytes = BytesMut::from(&weir::log::records::encode_batch(&recs, compression)?[..]);
    let stamp_at = bytes
        .windows(8)
        .position(|w| w == STAMP_MARK)
        .filter(|_| compression == Compression::None);
    Ok(Template {
        bytes,
        records: records as u32,
        stamp_at,
    })
}

impl Template {
    /// The batch with its timestamps set to now, the send time (µs) in the
    /// first record, and its CRC.
    fn stamp(&mut self, sent_us: u64) -> Bytes {
        let ms = (sent_us / 1000) as i64;
        batch::set_timestamps(&mut self.bytes, ms, ms);
        if let Some(at) = self.stamp_at {
            self.bytes[at..at + 8].copy_from_slice(&sent_us.to_be_bytes());
        }
        batch::update_crc(&mut self.bytes);
        Bytes::copy_from_slice(&self.bytes)
    }
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// Latencies in µs, 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

/// One producer: round-robin over its partitions, up to `max_in_flight`
/// requests outstanding, at a fixed rate when asked.
#[allow(clippy::too_many_arguments)]
async fn producer(
    args: Arc<BenchArgs>,
    addr: String,
    partitions: Vec<i32>,
    rate_batches: Option<f64>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    budget: Arc<AtomicU64>,
) -> Result<Histogram<u64>> {
    let mut t = template(&args)?;
    let stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let acks = args.acks;
    let timeout = 30_000;
    let name = TopicName(StrBytes::from_string(args.topic.clone()));
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(i32, u64, u32, usize)>(args.max_in_flight.max(1));
    // The reader: one response per request, in order (none with acks=0).
    let reader_counters = Arc::clone(&counters);
    let mut hist = histogram()?;
    let reader = tokio::spawn(async move {
        while let Some((corr, intended_us, records, bytes)) = rx.recv().await {
            if acks != 0 {
                let len = rd.read_i32().await? as usize;
                if len > MAX_RESPONSE {
                    bail!("response of {len} bytes");
                }
                let mut buf = vec![0u8; len];
                rd.read_exact(&mut buf).await?;
                let mut b = Bytes::from(buf);
                let h = ResponseHeader::decode(
                    &mut b,
                    ApiKey::Produce.response_header_version(PRODUCE_VERSION),
                )?;
                if h.correlation_id != corr {
                    bail!("response {} to request {corr}", h.correlation_id);
                }
                let resp = ProduceResponse::decode(&mut b, PRODUCE_VERSION)?;
                let failed = resp
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                    .any(|p| p.error_code != 0);
                if failed {
                    reader_counters.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let _ = hist.record(now_micros().saturating_sub(intended_us).max(1));
            reader_counters
                .records
                .fetch_add(u64::from(records), Ordering::Relaxed);
            reader_counters
                .bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        Ok::<_, anyhow::Error>(hist)
    });
    let started = Instant::now();
    let started_us = now_micros();
    let mut sent = 0u64;
    let mut corr = 1i32;
    let mut next_partition = 0usize;
    while !stop.load(Ordering::Relaxed) {
        // Records left in the run's budget.
        let n = u64::from(t.records);
        if budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(n))
            .is_err()
        {
            break;
        }
        let intended_us = match rate_batches {
            Some(r) => {
                let due = started + Duration::from_secs_f64(sent as f64 / r);
                tokio::time::sleep_until(due.into()).await;
                started_us + (sent as f64 / r * 1e6) as u64
            }
            None => now_micros(),
        };
        let p = partitions[next_partition % partitions.len()];
        next_partition += 1;
        let records = t.stamp(intended_us);
        let len = records.len();
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(timeout)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name.clone())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(records))])]);
        let mut b = BytesMut::with_capacity(len + 128);
        b.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(PRODUCE_VERSION)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str("weir-bench")))
            .encode(
                &mut b,
                ApiKey::Produce.request_header_version(PRODUCE_VERSION),
            )?;
        req.encode(&mut b, PRODUCE_VERSION)?;
        let flen = i32::try_from(b.len() - 4)?;
        b[..4].copy_from_slice(&flen.to_be_bytes());
        // Waits here when max_in_flight requests are outstanding.
        if tx.send((corr, intended_us, t.records, len)).await.is_err() {
            break;
        }
        wr.write_all(&b).await?;
        corr = corr.wrapping_add(1);
        sent += 1;
    }
    drop(tx);
    let hist = reader.await.map_err(|e| anyhow!("reader: {e}"))??;
    Ok(hist)
}

/// One consumer: fetches its partitions from `start` (earliest or latest)
/// until stopped, counting records and, for stamped batches, the latency
/// from the producer's (intended) send time.
async fn consumer(
    args: Arc<BenchArgs>,
    addr: String,
    partitions: Vec<i32>,
    latest: bool,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    stamp_at: Option<usize>,
) -> Result<Histogram<u64>> {
    let mut conn = Conn::open(&addr).await?;
    let name = TopicName(StrBytes::from_string(args.topic.clone()));
    let lo: ListOffsetsResponse = conn
        .call(
            ApiKey::ListOffsets,
            LIST_OFFSETS_VERSION,
            &ListOffsetsRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name.clone())
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(*p)
                                    .with_timestamp(if latest { -1 } else { -2 })
                            })
                            .collect(),
                    )]),
        )
        .await?;
    let mut next: HashMap<i32, i64> = lo
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, p.offset.max(0)))
        .collect();
    let mut hist = histogram()?;
    while !stop.load(Ordering::Relaxed) {
        let req = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_isolation_level(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name.clone())
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(next.get(p).copied().unwrap_or(0))
                                .with_partition_max_bytes(8 << 20)
                        })
                        .collect(),
                )]);
        let resp: FetchResponse = conn.call(ApiKey::Fetch, FETCH_VERSION, &req).await?;
        let now = now_micros();
        for t in &resp.responses {
            for p in &t.partitions {
                if p.error_code != 0 {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Some(records) = &p.records else { continue };
                let mut rest = &records[..];
                let from = next.get(&p.partition_index).copied().unwrap_or(0);
                let mut last = None;
                while rest.len() >= HEADER_LEN {
                    let Ok(h) = BatchHeader::parse(rest) else {
                        break;
                    };
                    let total = h.total_len();
                    if total > rest.len() || h.batch_length <= 0 {
                        break;
                    }
                    if h.last_offset() >= from {
                        let n = i64::from(h.records_count).min(h.last_offset() - from + 1);
                        counters
                            .records
                            .fetch_add(n.max(0) as u64, Ordering::Relaxed);
                        counters.bytes.fetch_add(total as u64, Ordering::Relaxed);
                        if let Some(at) =
                            stamp_at.filter(|&a| a + 8 <= total && h.compression() == 0)
                        {
                            let sent = (&rest[at..at + 8]).get_u64();
                            if sent > 0 && sent <= now {
                                let _ = hist.record((now - sent).max(1));
                            }
                        }
                    }
                    last = Some(h.last_offset());
                    rest = &rest[total..];
                }
                if let Some(l) = last {
                    next.insert(p.partition_index, l + 1);
                }
            }
        }
    }
    Ok(hist)
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "count": h.len(),
        "p50_ms": pct(h, 0.50),
        "p99_ms": pct(h, 0.99),
        "p999_ms": pct(h, 0.999),
        "max_ms": h.max() as f64 / 1000.0,
    })
}

/// Runs the load described by `args` and prints the result.
///
/// # Errors
/// Connection or protocol errors, an unknown topic that may not be created.
pub async fn run(args: BenchArgs) -> Result<()> {
    let args = Arc::new(args);
    let leaders = leaders(&args).await?;
    let mut parts: Vec<i32> = leaders.keys().copied().collect();
    parts.sort_unstable();
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(Counters::default());
    let consumed = Arc::new(Counters::default());
    let budget = Arc::new(AtomicU64::new(args.records.unwrap_or(u64::MAX)));
    let tmpl = template(&args)?;
    let per_batch = f64::from(tmpl.records);
    let produce = matches!(args.mode, BenchMode::Produce | BenchMode::E2e);
    let consume = matches!(args.mode, BenchMode::Consume | BenchMode::E2e);
    // Partitions split across producers and consumers, each group led by
    // one broker (a cluster's partitions have different leaders): every
    // leader gets at least one client, the rest go round the leaders.
    let split = |n: usize| -> Vec<Vec<i32>> {
        let mut by_leader: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
        for p in &parts {
            by_leader.entry(leaders[p].as_str()).or_default().push(*p);
        }
        let groups: Vec<Vec<i32>> = by_leader.into_values().collect();
        let mut clients = vec![1usize; groups.len()];
        for i in 0..n.saturating_sub(groups.len()) {
            let g = i % groups.len().max(1);
            if clients[g] < groups[g].len() {
                clients[g] += 1;
            }
        }
        groups
            .iter()
            .zip(clients)
            .flat_map(|(ps, k)| {
                (0..k).map(move |i| ps.iter().copied().skip(i).step_by(k).collect::<Vec<_>>())
            })
            .collect()
    };
    let mut consumers = Vec::new();
    if consume {
        for ps in split(args.consumers) {
            let addr = leaders[&ps[0]].clone();
            consumers.push(tokio::spawn(consumer(
                Arc::clone(&args),
                addr,
                ps,
                args.mode == BenchMode::E2e,
                Arc::clone(&consumed),
                Arc::clone(&stop),
                // Send times are only this run's in e2e mode.
                tmpl.stamp_at.filter(|_| args.mode == BenchMode::E2e),
            )));
        }
        // Let the consumers take their start offsets before producing.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut producers = Vec::new();
    if produce {
        let groups = split(args.producers);
        let rate = args
            .rate
            .map(|r| r as f64 / per_batch / groups.len() as f64);
        for ps in groups {
            let addr = leaders[&ps[0]].clone();
            producers.push(tokio::spawn(producer(
                Arc::clone(&args),
                addr,
                ps,
                rate,
                Arc::clone(&produced),
                Arc::clone(&stop),
                Arc::clone(&budget),
            )));
        }
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let counted = if produce { &produced } else { &consumed };
    let mut last = (0u64, 0u64, started);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let done_producing = produce && producers.iter().all(|p| p.is_finished());
        let consumed_all = args.records.is_some_and(|n| {
            consumed.records.load(Ordering::Relaxed) >= n
                && (!produce || produced.records.load(Ordering::Relaxed) >= n)
        });
        let finished = Instant::now() >= deadline
            || (produce && !consume && done_producing)
            || (consume && consumed_all);
        let (r, b) = (
            counted.records.load(Ordering::Relaxed),
            counted.bytes.load(Ordering::Relaxed),
        );
        if last.2.elapsed() >= Duration::from_secs(1) || finished {
            let dt = last.2.elapsed().as_secs_f64().max(1e-9);
            if !args.json {
                eprintln!(
                    "{:>6.1} s  {:>10.0} records/s  {:>8.1} MB/s  {} errors",
                    started.elapsed().as_secs_f64(),
                    (r - last.0) as f64 / dt,
                    (b - last.1) as f64 / dt / 1e6,
                    produced.errors.load(Ordering::Relaxed)
                        + consumed.errors.load(Ordering::Relaxed)
                );
            }
            last = (r, b, Instant::now());
        }
        if finished {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut produce_lat = histogram()?;
    for p in producers {
        match p.await {
            Ok(Ok(h)) => produce_lat.add(&h).map_err(|e| anyhow!("{e}"))?,
            Ok(Err(e)) => return Err(e.context("producer")),
            Err(e) => bail!("producer task: {e}"),
        }
    }
    let mut e2e_lat = histogram()?;
    for c in consumers {
        match c.await {
            Ok(Ok(h)) => e2e_lat.add(&h).map_err(|e| anyhow!("{e}"))?,
            Ok(Err(e)) => return Err(e.context("consumer")),
            Err(e) => bail!("consumer task: {e}"),
        }
    }
    let side = |c: &Counters| {
        let r = c.records.load(Ordering::Relaxed);
        let b = c.bytes.load(Ordering::Relaxed);
        serde_json::json!({
            "records": r,
            "bytes": b,
            "records_per_s": (r as f64 / elapsed).round(),
            "mb_per_s": (b as f64 / elapsed / 1e5).round() / 10.0,
            "errors": c.errors.load(Ordering::Relaxed),
        })
    };
    let mut out = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "topic": args.topic,
        "partitions": parts.len(),
        "record_size": args.record_size,
        "records_per_batch": tmpl.records,
        "acks": args.acks,
        "compression": args.compression,
        "producers": if produce { args.producers } else { 0 },
        "consumers": if consume { args.consumers } else { 0 },
        "rate": args.rate,
        "seconds": (elapsed * 100.0).round() / 100.0,
    });
    if produce {
        out["produced"] = side(&produced);
        out["produce_latency"] = latency_json(&produce_lat);
    }
    if consume {
        out["consumed"] = side(&consumed);
        if !e2e_lat.is_empty() {
            out["end_to_end_latency"] = latency_json(&e2e_lat);
        }
    }
    if args.json {
        println!("{out}");
    } else {
        println!("{}", human(&out));
    }
    Ok(())
}

fn human(v: &serde_json::Value) -> String {
    let mut s = format!(
        "{} on {} ({} partitions), {} B records, {} per batch, acks={}, {}, {} s\n",
        v["mode"],
        v["topic"],
        v["partitions"],
        v["record_size"],
        v["records_per_batch"],
        v["acks"],
        v["compression"],
        v["seconds"]
    );
    for (k, label) in [("produced", "produced"), ("consumed", "consumed")] {
        if let Some(x) = v.get(k) {
            s += &format!(
                "{label}: {} records, {} records/s, {} MB/s, {} errors\n",
                x["records"], x["records_per_s"], x["mb_per_s"], x["errors"]
            );
        }
    }
    for (k, label) in [
        ("produce_latency", "produce latency (ms)"),
        ("end_to_end_latency", "end-to-end latency (ms)"),
    ] {
        if let Some(x) = v.get(k) {
            s += &format!(
                "{label}: p50 {} p99 {} p99.9 {} max {}\n",
                x["p50_ms"], x["p99_ms"], x["p999_ms"], x["max_ms"]
            );
        }
    }
    s
}

/// `weir bench`: runs the load tool on its own runtime.
pub fn main(args: BenchArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
