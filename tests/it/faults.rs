//! Injected write and fsync failures (feature `fault-injection`): a failed
//! write fails that request and the next one succeeds; a failed fsync takes
//! the partition offline until a restart; nothing acknowledged is lost and
//! nothing partial is served. Faults are armed by path, so every test uses
//! topics and groups of its own.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use weir::config::Config;
use weir::log::faults::{self, Op};

use crate::common::*;

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn strict_producer(bs: &str) -> FutureProducer {
    producer(
        bs,
        &[
            ("enable.idempotence", "false"),
            ("retries", "0"),
            ("linger.ms", "0"),
            ("message.timeout.ms", "10000"),
        ],
    )
}

async fn send(p: &FutureProducer, topic: &str, v: &str) -> Result<i64, KafkaError> {
    p.send(
        FutureRecord::to(topic).partition(0).key("k").payload(v),
        Duration::from_secs(10),
    )
    .await
    .map(|d| d.offset)
    .map_err(|(e, _)| e)
}

fn storage_error(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError)
    )
}

async fn values(bs: &str, topic: &str, n: usize) -> Vec<String> {
    let (bs, topic) = (bs.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || read_all(&bs, &topic, 1, n, Duration::from_secs(20)))
        .await
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.3).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_fails_that_produce_and_the_next_one_lands_at_the_next_offset() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "fault-write", 1, &[]).await;
    let p = strict_producer(&bs);
    assert_eq!(send(&p, "fault-write", "a").await.unwrap(), 0);
    faults::inject(Op::Write, "fault-write-0", 1, ENOSPC);
    let e = send(&p, "fault-write", "lost").await.unwrap_err();
    assert!(
        storage_error(&e),
        "a failed write is KAFKA_STORAGE_ERROR: {e:?}"
    );
    assert_eq!(send(&p, "fault-write", "b").await.unwrap(), 1, "no gap");
    assert_eq!(values(&bs, "fault-write", 2).await, ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_takes_the_partition_offline_until_a_restart_which_keeps_every_ack() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::for_tests(dir.path().join("data"));
    let running = weir::start(config()).await.unwrap();
    let bs = running.kafka_addr.to_string();
    create_topic(&bs, "fault-sync", 1, &[]).await;
    create_topic(&bs, "fault-sync-other", 1, &[]).await;
    let p = strict_producer(&bs);
    for i in 0..5 {
        send(&p, "fault-sync", &format!("ok-{i}")).await.unwrap();
    }
    faults::inject(Op::Sync, "fault-sync-0", 1, EIO);
    let e = send(&p, "fault-sync", "unsynced").await.unwrap_err();
    assert!(storage_error(&e), "{e:?}");
    // Offline: later produces fail without another fsync attempt.
    let e = send(&p, "fault-sync", "refused").await.unwrap_err();
    assert!(storage_error(&e), "{e:?}");
    // Other partitions and reads carry on.
    send(&p, "fault-sync-other", "fine").await.unwrap();
    let got = values(&bs, "fault-sync", 5).await;
    assert_eq!(&got[..5], ["ok-0", "ok-1", "ok-2", "ok-3", "ok-4"]);
    drop(p);
    running.shutdown().await;
    faults::clear("fault-sync-0");
    let running = weir::start(config()).await.unwrap();
    let bs = running.kafka_addr.to_string();
    let p = strict_producer(&bs);
    let off = send(&p, "fault-sync", "after-restart").await.unwrap();
    let got = values(&bs, "fault-sync", off as usize + 1).await;
    assert_eq!(&got[..5], ["ok-0", "ok-1", "ok-2", "ok-3", "ok-4"]);
    assert_eq!(got.last().map(String::as_str), Some("after-restart"));
    drop(p);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_offsets_write_is_answered_as_an_error_and_leaves_the_log_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::for_tests(dir.path().join("data"));
    let running = weir::start(config()).await.unwrap();
    let bs = running.kafka_addr.to_string();
    create_topic(&bs, "fault-commit", 1, &[]).await;
    let consumer = |bs: &str| -> BaseConsumer {
        client_config(bs)
            .set("group.id", "fault-commit-group")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap()
    };
    let commit = |c: &BaseConsumer, off: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("fault-commit", 0, Offset::Offset(off))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync)
    };
    let committed = |c: &BaseConsumer| {
        let mut t = TopicPartitionList::new();
        t.add_partition("fault-commit", 0);
        c.committed_offsets(t, Duration::from_secs(10))
            .unwrap()
            .elements()[0]
            .offset()
    };
    let c = consumer(&bs);
    commit(&c, 1).unwrap();
    // The offsets log is one file for all groups: the fault is armed and
    // used at once. librdkafka retries a commit answered with
    // COORDINATOR_NOT_AVAILABLE, so the retry stores it.
    faults::inject(Op::Write, "offsets.log", 1, EIO);
    let retried = commit(&c, 2);
    faults::clear("offsets.log");
    retried.unwrap();
    let (_, _, metrics) = http_get(running.http_addr, "/metrics", &[]);
    assert!(
        metrics.contains("weir_response_errors_total{code=\"15\"}"),
        "the failed write was answered COORDINATOR_NOT_AVAILABLE: {}",
        metrics
            .lines()
            .filter(|l| l.contains("errors"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    commit(&c, 3).unwrap();
    assert_eq!(committed(&c), Offset::Offset(3));
    drop(c);
    // The failed write left no partial entry: the log replays whole.
    running.shutdown().await;
    let running = weir::start(config()).await.unwrap();
    let c = consumer(&running.kafka_addr.to_string());
    assert_eq!(committed(&c), Offset::Offset(3));
    drop(c);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hand_back_write_is_a_storage_error_and_nothing_is_held() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(
        &bs,
        "fault-retry",
        1,
        &[("retry.max.attempts", "2"), ("retry.backoff.ms", "200")],
    )
    .await;
    let p = strict_producer(&bs);
    faults::inject(Op::Write, "pending.log", 1, ENOSPC);
    let failed = send(&p, "fault-retry.retry", "x").await;
    faults::clear("pending.log");
    let e = failed.unwrap_err();
    assert!(storage_error(&e), "{e:?}");
    send(&p, "fault-retry.retry", "y").await.unwrap();
    // Only the accepted hand-back comes back.
    let got = values(&bs, "fault-retry.retry", 1).await;
    assert_eq!(got, ["y"]);
}

/// The value of a metric line that starts with `prefix` (name and labels).
fn metric(http: std::net::SocketAddr, prefix: &str) -> f64 {
    let (_, _, body) = http_get(http, "/metrics", &[]);
    body.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{body}"))
}

/// acks=all produce requests pipelined on one connection, on a slow disk:
/// the connection reads and appends the next ones while the first waits for
/// its fsync, so they share fsyncs instead of taking one each in turn; the
/// answers keep request order, and a fetch pipelined behind them sees every
/// record they were told is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_acks_all_produces_share_fsyncs_and_keep_their_order() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, ResponseHeader,
        TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use std::io::Write;

    const TOPIC: &str = "fault-pipelined";
    const N: i32 = 20;
    let b = TestBroker::start_with(|c| c.args.fsync = weir::config::FsyncPolicy::AcksAll).await;
    create_topic(&b.bootstrap(), TOPIC, 1, &[]).await;
    let (addr, http) = (b.kafka_addr(), b.http_addr());
    let fsyncs = format!("weir_partition_fsyncs_total{{topic=\"{TOPIC}\",partition=\"0\"}} ");
    tokio::task::spawn_blocking(move || {
        let before = metric(http, &fsyncs);
        // Without pipelining these would take 20 fsyncs of 200 ms each.
        faults::inject_delay(
            Op::Sync,
            "fault-pipelined-0",
            100,
            Duration::from_millis(200),
        );
        let name = TopicName(StrBytes::from_static_str(TOPIC));
        let mut all = Vec::new();
        for i in 0..N {
            let rec = weir::log::records::plain_record(
                0,
                weir::broker::now_ms(),
                None,
                Some(bytes::Bytes::from(format!("v{i}"))),
                &[],
            );
            let batch = weir::log::records::encode_batch(
                &[rec],
                kafka_protocol::records::Compression::None,
            )
            .unwrap();
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name.clone())
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch))])]);
            all.extend(crate::bad_input::frame(ApiKey::Produce, 9, i, &req));
        }
        let fetch = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name)
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        all.extend(crate::bad_input::frame(ApiKey::Fetch, 11, N, &fetch));
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&all).unwrap();
        for i in 0..N {
            let mut r = bytes::Bytes::from(crate::bad_input::read_response(&mut s).unwrap());
            let h = ResponseHeader::decode(&mut r, 1).unwrap();
            assert_eq!(h.correlation_id, i, "answers in request order");
            let p = ProduceResponse::decode(&mut r, 9).unwrap();
            let part = &p.responses[0].partition_responses[0];
            assert_eq!((part.error_code, part.base_offset), (0, i64::from(i)));
        }
        let mut r = bytes::Bytes::from(crate::bad_input::read_response(&mut s).unwrap());
        let h = ResponseHeader::decode(&mut r, 0).unwrap();
        assert_eq!(h.correlation_id, N, "the fetch is answered last");
        let f = FetchResponse::decode(&mut r, 11).unwrap();
        let part = &f.responses[0].partitions[0];
        assert_eq!(part.high_watermark, i64::from(N));
        let records = part.records.clone().unwrap_or_default();
        let values: Vec<String> = weir::log::records::decode_all(&records)
            .unwrap()
            .into_iter()
            .flat_map(|set| set.records)
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect();
        let want: Vec<String> = (0..N).map(|i| format!("v{i}")).collect();
        assert_eq!(values, want, "the fetch sees every acknowledged record");
        let used = metric(http, &fsyncs) - before;
        faults::clear("fault-pipelined");
        assert!(
            (1.0..=5.0).contains(&used),
            "{N} pipelined acks=all produces took {used} fsyncs"
        );
    })
    .await
    .unwrap();
}

/// A connection that must close (here: a negative frame size) while a
/// produce waits for its fsync sends that produce's answer first: the
/// records are in the log, and the client learns so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_behind_a_produce_waiting_for_its_fsync_closes_after_its_answer() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use std::io::Write;

    const TOPIC: &str = "fault-owed-close";
    let b = TestBroker::start_with(|c| c.args.fsync = weir::config::FsyncPolicy::AcksAll).await;
    create_topic(&b.bootstrap(), TOPIC, 1, &[]).await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        faults::inject_delay(
            Op::Sync,
            "fault-owed-close-0",
            10,
            Duration::from_millis(300),
        );
        let rec = weir::log::records::plain_record(
            0,
            weir::broker::now_ms(),
            None,
            Some(bytes::Bytes::from_static(b"kept")),
            &[],
        );
        let batch =
            weir::log::records::encode_batch(&[rec], kafka_protocol::records::Compression::None)
                .unwrap();
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(kafka_protocol::messages::TopicName(
                    StrBytes::from_static_str(TOPIC),
                ))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])]);
        let mut all = crate::bad_input::frame(ApiKey::Produce, 9, 7, &req);
        all.extend_from_slice(&(-1i32).to_be_bytes());
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&all).unwrap();
        let mut r = bytes::Bytes::from(
            crate::bad_input::read_response(&mut s).expect("the produce is answered"),
        );
        assert_eq!(ResponseHeader::decode(&mut r, 1).unwrap().correlation_id, 7);
        let p = ProduceResponse::decode(&mut r, 9).unwrap();
        let part = &p.responses[0].partition_responses[0];
        assert_eq!((part.error_code, part.base_offset), (0, 0));
        assert!(
            crate::bad_input::closed(&mut s),
            "then the connection closes"
        );
        faults::clear("fault-owed-close");
    })
    .await
    .unwrap();
}
