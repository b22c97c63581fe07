//! Broker-managed retries and dead letters, driven by librdkafka clients the
//! way an application would: consume, fail, produce the record back to the
//! retry topic.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::*;

const RETRY_CONFIGS: &[(&str, &str)] = &[
    ("retry.max.attempts", "3"),
    ("retry.backoff.ms", "1000"),
    ("retry.backoff.multiplier", "2"),
];

/// A record as an application sees it.
#[derive(Debug, Clone)]
pub struct Got {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
    }
    fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k == name).count()
    }
}

pub fn reader(bootstrap: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let c = consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

pub fn next(c: &BaseConsumer, timeout: Duration) -> Option<Got> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // Errors are transient here (a cluster test's broker killed on
        // purpose): the next poll goes on.
        if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            return Some(Got {
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    None
}

/// Produces `got` back to `topic`, as an application hands a failed record back.
pub async fn hand_back(p: &FutureProducer, topic: &str, got: &Got) {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &got.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_slice()),
        });
    }
    p.send(
        FutureRecord::to(topic)
            .key(&got.key)
            .payload(&got.value)
            .headers(headers),
        Duration::from_secs(10),
    )
    .await
    .expect("hand-back acknowledged");
}

fn topic_names(bootstrap: &str) -> HashSet<String> {
    let c = consumer(bootstrap);
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cycle_backs_off_then_dead_letters() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "orders", 1, RETRY_CONFIGS).await;
    let names = topic_names(&bs);
    assert!(
        names.contains("orders.retry") && names.contains("orders.dlq"),
        "{names:?}"
    );

    let p = producer(&bs, &[]);
    p.send(
        FutureRecord::to("orders")
            .key("k1")
            .payload("v1")
            .headers(OwnedHeaders::new().insert(Header {
                key: "trace",
                value: Some("abc"),
            })),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let orders = reader(&bs, "orders", 1);
    let retries = reader(&bs, "orders.retry", 1);
    let dlq = reader(&bs, "orders.dlq", 1);
    let mut got = tokio::task::block_in_place(|| next(&orders, Duration::from_secs(10))).unwrap();
    for (k, delay_ms) in [(1u32, 1000u64), (2, 2000), (3, 4000)] {
        let started = Instant::now();
        hand_back(&p, "orders.retry", &got).await;
        got = tokio::task::block_in_place(|| next(&retries, Duration::from_secs(15)))
            .expect("redelivered");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(delay_ms),
            "attempt {k} came after {waited:?}, before its backoff of {delay_ms} ms"
        );
        assert!(
            waited < Duration::from_millis(delay_ms + 3000),
            "attempt {k} late: {waited:?}"
        );
        assert_eq!(got.header("retry.attempt"), Some(k.to_string()));
        assert_eq!(got.count("retry.attempt"), 1, "exactly one attempt header");
        assert_eq!(got.header("trace").as_deref(), Some("abc"));
        assert_eq!(
            got.header("retry.original.topic").as_deref(),
            Some("orders")
        );
        assert!(got.header("retry.due.ms").is_some());
        assert_eq!(
            (got.key.as_slice(), got.value.as_slice()),
            (&b"k1"[..], &b"v1"[..])
        );
    }
    let started = Instant::now();
    hand_back(&p, "orders.retry", &got).await;
    let dead =
        tokio::task::block_in_place(|| next(&dlq, Duration::from_secs(5))).expect("dead-lettered");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the 4th hand-back goes to the DLQ at once"
    );
    assert_eq!(dead.header("dlq.reason").as_deref(), Some("max-attempts"));
    assert_eq!(dead.header("retry.attempt").as_deref(), Some("3"));
    assert_eq!(dead.header("trace").as_deref(), Some("abc"));
    assert_eq!(dead.header("retry.group"), None);
    assert!(tokio::task::block_in_place(|| next(&retries, Duration::from_millis(800))).is_none());

    // Metrics count it.
    let (_, _, metrics) = http_get(b.http_addr(), "/metrics", &[]);
    assert!(
        metrics.contains("weir_retry_scheduled_total{topic=\"orders\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("weir_retry_delivered_total{topic=\"orders\"} 3"));
    assert!(metrics.contains("weir_dlq_records_total{topic=\"orders\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hand_backs_all_come_back_exactly_once() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(
        &bs,
        "bulk",
        2,
        &[("retry.max.attempts", "1"), ("retry.backoff.ms", "300")],
    )
    .await;
    let p = producer(&bs, &[("batch.num.messages", "1000")]);
    let mut futs = Vec::new();
    for i in 0..10_000 {
        let k = format!("k{i}");
        futs.push(
            p.send_result(FutureRecord::to("bulk.retry").key(&k).payload(&k))
                .ok()
                .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
    let r = reader(&bs, "bulk.retry", 2);
    let keys = tokio::task::block_in_place(|| {
        let mut keys = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while keys.len() < 10_000 && Instant::now() < deadline {
            if let Some(g) = next(&r, Duration::from_millis(200)) {
                assert_eq!(g.header("retry.attempt").as_deref(), Some("1"));
                keys.push(g.key);
            }
        }
        assert!(
            next(&r, Duration::from_millis(1000)).is_none(),
            "nothing beyond the hand-backs"
        );
        keys
    });
    let unique: HashSet<_> = keys.iter().collect();
    assert_eq!(keys.len(), 10_000);
    assert_eq!(unique.len(), 10_000, "each exactly once");
    assert_eq!(b.broker().retries.store.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_retries_survive_kill_9_and_none_comes_early() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildBroker::start(dir.path(), &[]);
    let bs = child.bootstrap();
    create_topic(
        &bs,
        "crashy",
        1,
        &[("retry.max.attempts", "2"), ("retry.backoff.ms", "3000")],
    )
    .await;
    let p = producer(&bs, &[]);
    let mut futs = Vec::new();
    for i in 0..200 {
        let k = format!("k{i}");
        futs.push(
            p.send_result(FutureRecord::to("crashy.retry").key(&k).payload(&k))
                .ok()
                .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
    drop(p);
    child.kill9();
    let child = ChildBroker::start(dir.path(), &[]);
    let bs = child.bootstrap();
    let r = reader(&bs, "crashy.retry", 1);
    tokio::task::block_in_place(|| {
        let mut seen = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < 200 && Instant::now() < deadline {
            if let Some(g) = next(&r, Duration::from_millis(200)) {
                let due: i64 = g.header("retry.due.ms").unwrap().parse().unwrap();
                let now = weir::broker::now_ms();
                assert!(now >= due, "delivered {} ms before its due time", due - now);
                *seen.entry(g.key).or_insert(0) += 1;
            }
        }
        assert_eq!(
            seen.len(),
            200,
            "every held record delivered after the restart"
        );
        assert!(seen.values().all(|n| *n == 1));
    });
}

/// IncrementalAlterConfigs over a raw connection (librdkafka's admin API in
/// the rdkafka crate has no incremental variant).
fn incremental_alter(addr: std::net::SocketAddr, topic: &str, configs: &[(&str, &str)]) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_config_operation(0)
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            ),
    ]);
    let resp: IncrementalAlterConfigsResponse = raw_request(
        addr,
        kafka_protocol::messages::ApiKey::IncrementalAlterConfigs,
        1,
        &req,
    );
    resp.responses[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_retries_on_an_existing_topic_creates_its_companions() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "later", 3, &[]).await;
    assert!(!topic_names(&bs).contains("later.retry"));
    let addr = b.kafka_addr();
    let code = tokio::task::block_in_place(|| {
        incremental_alter(
            addr,
            "later",
            &[("retry.max.attempts", "2"), ("retry.backoff.ms", "100")],
        )
    });
    assert_eq!(code, 0);
    let names = topic_names(&bs);
    assert!(names.contains("later.retry") && names.contains("later.dlq"));
    let c = consumer(&bs);
    let md = c
        .fetch_metadata(Some("later.dlq"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        md.topics()[0].partitions().len(),
        3,
        "companions have the topic's partition count"
    );
    // A hand-back now comes back.
    let p = producer(&bs, &[]);
    p.send(
        FutureRecord::to("later.retry")
            .key("k")
            .payload("v")
            .partition(2),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let r = reader(&bs, "later.retry", 3);
    let g = tokio::task::block_in_place(|| next(&r, Duration::from_secs(10))).expect("redelivered");
    assert_eq!(g.header("retry.attempt").as_deref(), Some("1"));
    // A topic named X.retry whose X has no retries is ordinary.
    create_topic(&bs, "plain", 1, &[]).await;
    p.send(
        FutureRecord::to("plain.retry").key("k").payload("v"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let r = reader(&bs, "plain.retry", 1);
    let g = tokio::task::block_in_place(|| next(&r, Duration::from_secs(5))).unwrap();
    assert_eq!(g.header("retry.attempt"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_scoped_retry_comes_back_to_that_group_alone_also_after_redrive() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(
        &bs,
        "pay",
        1,
        &[("retry.max.attempts", "1"), ("retry.backoff.ms", "300")],
    )
    .await;
    // Each group's consumer reads its own retry topic (created on first use).
    let ra = reader(&bs, "pay.retry.ga", 1);
    let rb = reader(&bs, "pay.retry.gb", 1);
    let p = producer(&bs, &[]);
    let got = Got {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        headers: vec![("h".into(), b"1".to_vec())],
    };
    hand_back(&p, "pay.retry.ga", &got).await;
    let again = tokio::task::block_in_place(|| next(&ra, Duration::from_secs(10)))
        .expect("back to group a");
    assert_eq!(again.header("retry.attempt").as_deref(), Some("1"));
    assert!(
        tokio::task::block_in_place(|| next(&rb, Duration::from_millis(800))).is_none(),
        "group b never sees it"
    );
    // Second failure: past max attempts, into the DLQ with the group named.
    hand_back(&p, "pay.retry.ga", &again).await;
    let dlq = reader(&bs, "pay.dlq", 1);
    let dead =
        tokio::task::block_in_place(|| next(&dlq, Duration::from_secs(5))).expect("dead-lettered");
    assert_eq!(dead.header("retry.group").as_deref(), Some("ga"));

    // Inspect and redrive over HTTP: back to group a's retry topic, attempts reset.
    let (status, _, body) = http_get(b.http_addr(), "/api/dlq/pay", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("max-attempts") && body.contains("\"h\""),
        "{body}"
    );
    let (status, body) = http_post(b.http_addr(), "/api/dlq/pay/redrive", "{}", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"redriven\":1"), "{body}");
    let back = tokio::task::block_in_place(|| next(&ra, Duration::from_secs(5)))
        .expect("redriven to group a");
    assert_eq!(back.header("retry.attempt"), None, "attempts reset");
    assert_eq!(back.header("h").as_deref(), Some("1"));
    assert!(tokio::task::block_in_place(|| next(&rb, Duration::from_millis(500))).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_needs_the_admin_token_when_one_is_set() {
    let b = TestBroker::start_with(|c| c.args.admin_token = Some("s3cret".parse().unwrap())).await;
    let bs = b.bootstrap();
    create_topic(&bs, "guarded", 1, &[("retry.max.attempts", "1")]).await;
    let (status, _) = http_post(b.http_addr(), "/api/dlq/guarded/redrive", "{}", &[]);
    assert_eq!(status, 401);
    let (status, body) = http_post(
        b.http_addr(),
        "/api/dlq/guarded/redrive",
        "{}",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_hand_back_larger_than_the_limit_once_decompressed_is_still_delivered() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(
        &bs,
        "big",
        1,
        &[("retry.max.attempts", "1"), ("retry.backoff.ms", "200")],
    )
    .await;
    let admin = admin(&bs);
    let alter =
        rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic("big.retry"))
            .set("max.message.bytes", "2000");
    admin
        .alter_configs([&alter], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    let p = producer(&bs, &[("compression.type", "gzip")]);
    let value = "a".repeat(20_000);
    p.send(
        FutureRecord::to("big.retry").key("k").payload(&value),
        Duration::from_secs(10),
    )
    .await
    .expect("a 20 kB value compresses below the 2000-byte limit");
    let r = reader(&bs, "big.retry", 1);
    let g = tokio::task::block_in_place(|| next(&r, Duration::from_secs(10))).expect("delivered");
    assert_eq!(g.value.len(), 20_000);
    assert_eq!(b.broker().retries.store.pending(), 0);
}

/// A consumer-group member that subscribes to `T` and its group's retry
/// topic, and hands back every record it reads from `T` once.
fn group_member(bootstrap: &str, group: &str, topics: &[&str]) -> BaseConsumer {
    let c: BaseConsumer = client_config(bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .unwrap();
    c.subscribe(topics).unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumer_groups_on_one_topic_each_get_back_only_their_own_failures() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(
        &bs,
        "shared",
        1,
        &[("retry.max.attempts", "2"), ("retry.backoff.ms", "500")],
    )
    .await;
    let p = producer(&bs, &[]);
    p.send(
        FutureRecord::to("shared").key("k").payload("v"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // Group "billing" fails the record and hands it back to its own retry
    // topic; group "audit" processes it fine. Each subscribes to T and its
    // own retry topic, created on first use.
    let billing = group_member(&bs, "billing", &["shared", "shared.retry.billing"]);
    let audit = group_member(&bs, "audit", &["shared", "shared.retry.audit"]);
    let seen = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut billing_seen: Vec<(String, Option<String>)> = Vec::new();
        let mut audit_seen: Vec<(String, Option<String>)> = Vec::new();
        let mut handed_back = false;
        while Instant::now() < deadline && (billing_seen.len() < 2 || audit_seen.is_empty()) {
            if let Some(Ok(m)) = billing.poll(Duration::from_millis(50)) {
                let attempt = m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == "retry.attempt")
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).to_string())
                });
                billing_seen.push((m.topic().to_string(), attempt));
                if !handed_back {
                    handed_back = true;
                    let p = p.clone();
                    let key = m.key().unwrap_or_default().to_vec();
                    let value = m.payload().unwrap_or_default().to_vec();
                    tokio::runtime::Handle::current().block_on(async move {
                        p.send(
                            FutureRecord::to("shared.retry.billing")
                                .key(&key)
                                .payload(&value),
                            Duration::from_secs(10),
                        )
                        .await
                        .unwrap();
                    });
                }
            }
            if let Some(Ok(m)) = audit.poll(Duration::from_millis(50)) {
                audit_seen.push((m.topic().to_string(), None));
            }
        }
        // Give a wrongly routed redelivery time to show up in audit.
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            if let Some(Ok(m)) = audit.poll(Duration::from_millis(50)) {
                audit_seen.push((m.topic().to_string(), None));
            }
        }
        (billing_seen, audit_seen)
    });
    let (billing_seen, audit_seen) = seen;
    assert_eq!(
        billing_seen,
        vec![
            ("shared".to_string(), None),
            ("shared.retry.billing".to_string(), Some("1".to_string()))
        ],
        "billing gets its failure back on its own retry topic"
    );
    assert_eq!(
        audit_seen,
        vec![("shared".to_string(), None)],
        "audit never sees billing's retry"
    );
}
