//! Names reserved for the broker's internal state (`__consumer_offsets`,
//! `__transaction_state`, weir's `__retry`...): clients cannot create them or
//! produce to them, and a data dir that already holds such a topic still
//! starts, keeps it readable and refuses produce to it.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

use crate::common::*;

fn raw_produce(addr: std::net::SocketAddr, topic: &str) -> i16 {
    let batch = weir::log::records::encode_batch(
        &[weir::log::records::plain_record(
            0,
            1,
            None,
            Some(bytes::Bytes::from_static(b"v")),
            &[],
        )],
        kafka_protocol::records::Compression::None,
    )
    .unwrap();
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let r: ProduceResponse = raw_request(addr, ApiKey::Produce, 9, &req);
    r.responses[0].partition_responses[0].error_code
}

/// What a librdkafka producer gets for one record to `topic`.
async fn produce_error(bootstrap: &str, topic: &str) -> RDKafkaErrorCode {
    let p = producer(bootstrap, &[("message.timeout.ms", "10000")]);
    let r = p
        .send(
            FutureRecord::to(topic).key("k").payload("v"),
            Duration::from_secs(15),
        )
        .await;
    match r {
        Err((KafkaError::MessageProduction(code), _)) => code,
        other => panic!("produce to {topic}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_create_or_produce_to_reserved_topic_names() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    for name in ["__consumer_offsets", "__transaction_state", "__retry"] {
        // A producer (its metadata request asks for auto-creation) fails
        // with Kafka's error and creates nothing.
        assert_eq!(
            produce_error(&bs, name).await,
            RDKafkaErrorCode::InvalidTopic,
            "{name}"
        );
        let addr = b.kafka_addr();
        let n = name.to_string();
        let code = tokio::task::spawn_blocking(move || raw_produce(addr, &n))
            .await
            .unwrap();
        assert_eq!(code, 17, "{name}: INVALID_TOPIC_EXCEPTION");
        // CreateTopics.
        let admin = admin(&bs);
        let r = admin
            .create_topics(
                [&NewTopic::new(name, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap();
        assert_eq!(
            r[0].as_ref().unwrap_err().1,
            RDKafkaErrorCode::InvalidTopic,
            "{name}"
        );
        assert!(b.broker().topics.get(name).is_none(), "{name} was created");
        assert!(!b.dir.path().join("data").join(format!("{name}-0")).exists());
    }
    // Names that only look alike are ordinary topics.
    create_topic(&bs, "__consumer_offsets_copy", 1, &[]).await;
    create_topic(&bs, "_consumer_offsets", 1, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_holding_a_reserved_topic_starts_warns_and_keeps_it_readable() {
    // An older broker let a client create __consumer_offsets: made here by
    // renaming an ordinary topic in a stopped broker's data dir.
    let mut b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "legacy", 1, &[]).await;
    let p = producer(&bs, &[]);
    for i in 0..5 {
        p.send(
            FutureRecord::to("legacy")
                .key("k")
                .payload(&format!("old {i}")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    drop(p);
    b.stop().await;
    let data = b.dir.path().join("data");
    std::fs::rename(data.join("legacy-0"), data.join("__consumer_offsets-0")).unwrap();
    let meta = std::fs::read_to_string(data.join("meta.json")).unwrap();
    assert!(meta.contains("\"legacy\""));
    std::fs::write(
        data.join("meta.json"),
        meta.replace("\"legacy\"", "\"__consumer_offsets\""),
    )
    .unwrap();

    // The binary, to see its log.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--listen", &addr, "--advertised-listener", &addr])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&data)
        .args(["--log-format", "text", "--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the broker exited");
        assert!(Instant::now() < deadline, "the broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let warned = rx
        .recv_timeout(Duration::from_secs(5))
        .into_iter()
        .chain(rx.try_iter())
        .any(|l| l.contains("WARN") && l.contains("__consumer_offsets") && l.contains("reserved"));
    assert!(warned, "a warning names the reserved topic");

    // Its records are there for consumers...
    let bs = addr.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_all(&bs, "__consumer_offsets", 1, 5, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert_eq!(read.len(), 5);
    assert_eq!(read[4].3, b"old 4");
    // ...producers are refused...
    assert_eq!(
        produce_error(&addr, "__consumer_offsets").await,
        RDKafkaErrorCode::InvalidTopic
    );
    // ...group offsets (weir's own __consumer_offsets store) still work...
    {
        use rdkafka::consumer::{CommitMode, Consumer};
        let c = consumer(&addr);
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset("__consumer_offsets", 0, rdkafka::Offset::Offset(3))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        assert_eq!(got.elements()[0].offset(), rdkafka::Offset::Offset(3));
    }
    // ...and the operator can delete it.
    let r = admin(&addr)
        .delete_topics(
            &["__consumer_offsets"],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let _ = child.kill();
    let _ = child.wait();
}
