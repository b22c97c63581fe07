//! Produce and fetch with librdkafka: every codec, idempotence, acks=all,
//! reading back by assignment, watermarks and offsets by time.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::common::*;

const RECORDS: usize = 100_000;

/// (partition, offset) → (key, value) of every acknowledged record.
type Acked = HashMap<(i32, i64), (Vec<u8>, Vec<u8>)>;

async fn produce_keyed(bootstrap: &str, topic: &str, n: usize, codec: &str) -> Acked {
    let p = producer(
        bootstrap,
        &[
            ("compression.type", codec),
            ("batch.num.messages", "5000"),
            ("queue.buffering.max.messages", "200000"),
        ],
    );
    let mut futs = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("key-{}", i % 997);
        let value = format!("value-{i}-{}", "x".repeat(i % 50));
        let fut = p.send_result(FutureRecord::to(topic).key(&key).payload(&value));
        let fut = match fut {
            Ok(f) => f,
            Err((e, _)) => panic!("enqueue failed: {e}"),
        };
        futs.push((fut, key.into_bytes(), value.into_bytes()));
    }
    let mut acked = HashMap::with_capacity(n);
    for (fut, k, v) in futs {
        let d = fut.await.expect("delivery future").expect("delivered");
        assert!(
            acked.insert((d.partition, d.offset), (k, v)).is_none(),
            "offset reused"
        );
    }
    acked
}

fn check_read_back(acked: &Acked, read: &[(i32, i64, Vec<u8>, Vec<u8>)], partitions: i32) {
    assert_eq!(
        read.len(),
        acked.len(),
        "every acknowledged record is read back once"
    );
    let mut next: HashMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    for (p, o, k, v) in read {
        let want = next.get_mut(p).unwrap();
        assert_eq!(
            *o, *want,
            "offsets are contiguous and in order in partition {p}"
        );
        *want += 1;
        let (ak, av) = acked.get(&(*p, *o)).expect("read record was acknowledged");
        assert_eq!(ak, k);
        assert_eq!(av, v);
    }
}

async fn round_trip(codec: &str, partitions: i32) {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    let topic = format!("pf-{codec}-{partitions}");
    create_topic(&bs, &topic, partitions, &[]).await;
    let acked = produce_keyed(&bs, &topic, RECORDS, codec).await;
    let bs2 = bs.clone();
    let t2 = topic.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_all(&bs2, &t2, partitions, RECORDS, Duration::from_secs(120))
    })
    .await
    .unwrap();
    check_read_back(&acked, &read, partitions);
    // Same keys land in the same partition.
    let mut key_part: HashMap<&[u8], i32> = HashMap::new();
    for ((p, _), (k, _)) in &acked {
        assert_eq!(*key_part.entry(k.as_slice()).or_insert(*p), *p);
    }
    // Watermarks agree with what was produced.
    let c = consumer(&bs);
    for p in 0..partitions {
        let (lo, hi) = c
            .fetch_watermarks(&topic, p, Duration::from_secs(10))
            .unwrap();
        let n = acked.keys().filter(|(pp, _)| *pp == p).count() as i64;
        assert_eq!((lo, hi), (0, n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_one_partition() {
    round_trip("none", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_eight_partitions() {
    round_trip("none", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_eight_partitions() {
    round_trip("gzip", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snappy_eight_partitions() {
    round_trip("snappy", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_eight_partitions() {
    round_trip("lz4", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_eight_partitions() {
    round_trip("zstd", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_timestamps_survive_and_offsets_for_times_finds_them() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "times", 1, &[]).await;
    let p = producer(&bs, &[]);
    let base = 1_700_000_000_000i64;
    for i in 0..10i64 {
        let headers = OwnedHeaders::new().insert(Header {
            key: "h",
            value: Some(format!("v{i}").as_bytes()),
        });
        p.send(
            FutureRecord::to("times")
                .key("k")
                .payload("v")
                .timestamp(base + i * 1000)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let c = consumer(&bs);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("times", 0, Offset::Offset(base + 4500))
        .unwrap();
    let found = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(
        found.find_partition("times", 0).unwrap().offset(),
        Offset::Offset(5)
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("times", 0, Offset::Offset(base + 100_000))
        .unwrap();
    let found = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(
        found.find_partition("times", 0).unwrap().offset(),
        Offset::End
    );

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("times", 0, Offset::Offset(3))
        .unwrap();
    c.assign(&tpl).unwrap();
    let m = loop {
        if let Some(m) = c.poll(Duration::from_secs(5)) {
            break m.unwrap();
        }
    };
    assert_eq!(
        m.offset(),
        3,
        "a fetch from inside the log starts at that offset"
    );
    assert_eq!(m.timestamp().to_millis(), Some(base + 3000));
    let h = m.headers().unwrap().get(0);
    assert_eq!(h.key, "h");
    assert_eq!(h.value, Some(&b"v3"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_and_one_are_stored() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "acks", 1, &[]).await;
    for acks in ["0", "1"] {
        let p = producer(&bs, &[("acks", acks), ("enable.idempotence", "false")]);
        for i in 0..100 {
            let v = format!("{acks}-{i}");
            p.send(
                FutureRecord::to("acks").key("k").payload(&v),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        }
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(10)).unwrap();
    }
    let bs2 = bs.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_all(&bs2, "acks", 1, 200, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(read.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topics_get_broker_timestamps() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(
        &bs,
        "lat",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let p = producer(&bs, &[]);
    let before = weir::broker::now_ms();
    p.send(
        FutureRecord::to("lat")
            .key("k")
            .payload("v")
            .timestamp(1000),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let bs2 = bs.clone();
    let read = tokio::task::spawn_blocking(move || {
        let c = consumer(&bs2);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("lat", 0, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        loop {
            if let Some(m) = c.poll(Duration::from_secs(5)) {
                let m = m.unwrap();
                break m.timestamp();
            }
        }
    })
    .await
    .unwrap();
    match read {
        rdkafka::Timestamp::LogAppendTime(t) => assert!(t >= before),
        other => panic!("expected LogAppendTime, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_max_message_bytes_are_refused() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "small", 1, &[("max.message.bytes", "1000")]).await;
    let p = producer(
        &bs,
        &[
            ("enable.idempotence", "false"),
            ("message.max.bytes", "100000"),
        ],
    );
    let big = "x".repeat(5000);
    let res = p
        .send(
            FutureRecord::to("small").key("k").payload(&big),
            Duration::from_secs(10),
        )
        .await;
    let (err, _) = res.expect_err("oversized record refused");
    assert!(
        err.to_string().contains("too large") || err.to_string().contains("MsgSizeTooLarge"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_refuses_records_without_a_key() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "table", 1, &[("cleanup.policy", "compact")]).await;
    let p = producer(&bs, &[("linger.ms", "0")]);
    let keyless = p
        .send(
            FutureRecord::<(), _>::to("table").payload("no key"),
            Duration::from_secs(10),
        )
        .await;
    let (err, _) = keyless.expect_err("a record without a key is refused");
    assert!(err.to_string().contains("InvalidRecord"), "{err}");
    let keyed = p
        .send(
            FutureRecord::to("table").key("k").payload("kept"),
            Duration::from_secs(10),
        )
        .await;
    assert!(keyed.is_ok(), "{keyed:?}");
    // A topic that deletes takes keyless records, as before.
    create_topic(&bs, "plain", 1, &[]).await;
    let plain = p
        .send(
            FutureRecord::<(), _>::to("plain").payload("no key"),
            Duration::from_secs(10),
        )
        .await;
    assert!(plain.is_ok(), "{plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_fetch_offset_is_reset_by_the_client() {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "reset", 2, &[]).await;
    let p = producer(&bs, &[]);
    for i in 0..20 {
        p.send(
            FutureRecord::to("reset")
                .partition(i % 2)
                .key("k")
                .payload(&format!("{i}")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    // Partition 0 is fetched far past its end, partition 1 from the start,
    // in the same fetch requests: the out-of-range answer must neither be
    // lost nor take partition 1's data down with it.
    let got = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&bs)
            .set("group.id", "reset-test")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("reset", 0, Offset::Offset(1000))
            .unwrap();
        tpl.add_partition_offset("reset", 1, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while got.len() < 20 && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                got.push((m.partition(), m.offset()));
            }
        }
        got
    })
    .await
    .unwrap();
    assert_eq!(
        got.len(),
        20,
        "partition 0 reset to its start and was read: {got:?}"
    );
    assert!(got.contains(&(0, 0)) && got.contains(&(1, 0)));
}
