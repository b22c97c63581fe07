//! Topic administration through librdkafka's AdminClient, and auto-creation.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, AlterConfig, NewPartitions, ResourceSpecifier};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;

use crate::common::*;

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_alter_grow_and_delete_a_topic() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    let admin = admin(&bs);
    create_topic(
        &bs,
        "orders",
        3,
        &[("retention.ms", "3600000"), ("cleanup.policy", "delete")],
    )
    .await;

    // Creating it again is TOPIC_ALREADY_EXISTS.
    let again = admin
        .create_topics(
            [&rdkafka::admin::NewTopic::new(
                "orders",
                3,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &opts(),
        )
        .await
        .unwrap();
    assert_eq!(
        again[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::TopicAlreadyExists
    );

    // Invalid requests get Kafka's codes.
    let bad = admin
        .create_topics(
            [
                &rdkafka::admin::NewTopic::new(
                    "bad/name",
                    1,
                    rdkafka::admin::TopicReplication::Fixed(1),
                ),
                &rdkafka::admin::NewTopic::new(
                    "zero",
                    0,
                    rdkafka::admin::TopicReplication::Fixed(1),
                ),
                &rdkafka::admin::NewTopic::new(
                    "rf3",
                    1,
                    rdkafka::admin::TopicReplication::Fixed(3),
                ),
                &rdkafka::admin::NewTopic::new(
                    "badcfg",
                    1,
                    rdkafka::admin::TopicReplication::Fixed(1),
                )
                .set("retention.ms", "soon"),
            ],
            &opts(),
        )
        .await
        .unwrap();
    let codes: Vec<_> = bad.iter().map(|r| r.as_ref().unwrap_err().1).collect();
    assert_eq!(
        codes,
        vec![
            RDKafkaErrorCode::InvalidTopic,
            RDKafkaErrorCode::InvalidPartitions,
            RDKafkaErrorCode::InvalidReplicationFactor,
            RDKafkaErrorCode::InvalidConfig,
        ]
    );

    // DescribeConfigs: the set value and every default.
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic("orders")], &opts())
        .await
        .unwrap();
    let res = described[0].as_ref().unwrap();
    let m = res.entry_map();
    assert_eq!(m["retention.ms"].value.as_deref(), Some("3600000"));
    assert!(!m["retention.ms"].is_default);
    assert_eq!(m["segment.bytes"].value.as_deref(), Some("1073741824"));
    assert!(m["segment.bytes"].is_default);
    assert_eq!(m["retry.max.attempts"].value.as_deref(), Some("0"));

    // AlterConfigs replaces the set of configs.
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic("orders")).set("retention.bytes", "1048576");
    let r = admin.alter_configs([&alter], &opts()).await.unwrap();
    assert!(r[0].is_ok());
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic("orders")], &opts())
        .await
        .unwrap();
    let res = described[0].as_ref().unwrap();
    let m = res.entry_map();
    assert_eq!(m["retention.bytes"].value.as_deref(), Some("1048576"));
    assert_eq!(m["retention.ms"].value.as_deref(), Some("604800000"));

    // CreatePartitions grows, never shrinks.
    let r = admin
        .create_partitions([&NewPartitions::new("orders", 5)], &opts())
        .await
        .unwrap();
    assert!(r[0].is_ok());
    let r = admin
        .create_partitions([&NewPartitions::new("orders", 2)], &opts())
        .await
        .unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidPartitions
    );
    let c = consumer(&bs);
    let md = c
        .fetch_metadata(Some("orders"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);

    // DeleteTopics.
    let r = admin.delete_topics(&["orders"], &opts()).await.unwrap();
    assert!(r[0].is_ok());
    let r = admin.delete_topics(&["orders"], &opts()).await.unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    assert!(md.topics().iter().all(|t| t.name() != "orders"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_auto_created_with_the_default_partition_count() {
    let b = TestBroker::start_with(|c| c.args.default_partitions = 3).await;
    let bs = b.bootstrap();
    // A consumer asks not to auto-create (allow_auto_topic_creation=false)...
    let c = consumer(&bs);
    let md = c
        .fetch_metadata(Some("auto-made"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        md.topics()[0].error().map(RDKafkaErrorCode::from),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    // ...unless allow.auto.create.topics is set, as producers do.
    let c: rdkafka::consumer::BaseConsumer = client_config(&bs)
        .set("group.id", "x")
        .set("allow.auto.create.topics", "true")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some("auto-made"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 3);
    assert_eq!(md.brokers().len(), 1);
    assert_eq!(md.brokers()[0].port() as u16, b.kafka_addr().port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_create_unknown_topics_are_unknown() {
    let b = TestBroker::start_with(|c| c.args.auto_create_topics = false).await;
    let c = consumer(&b.bootstrap());
    let md = c
        .fetch_metadata(Some("nope"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        md.topics()[0].error().map(RDKafkaErrorCode::from),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_low_watermark() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "dr", 1, &[]).await;
    let p = producer(&bs, &[]);
    for i in 0..50 {
        p.send(
            rdkafka::producer::FutureRecord::to("dr")
                .key("k")
                .payload(&format!("{i}")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let admin = admin(&bs);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("dr", 0, rdkafka::Offset::Offset(20))
        .unwrap();
    admin.delete_records(&tpl, &opts()).await.unwrap();
    let c = consumer(&bs);
    let (lo, hi) = c
        .fetch_watermarks("dr", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!((lo, hi), (20, 50));
    // A restart keeps the new log start.
    let log = b.broker().topics.get("dr").unwrap().partition(0).unwrap();
    assert_eq!(log.log_start_offset(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_produces_consumes_and_measures_end_to_end() {
    let b = TestBroker::start().await;
    let bootstrap = b.bootstrap();
    // `weir bench` is a tool of the binary, not of the library.
    let bench = move |mode: &str, topic: &str, records: &str, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["bench", mode, "--bootstrap", &bootstrap, "--topic", topic])
            .args(["--records", records, "--duration-secs", "20"])
            .args(["--record-size", "100", "--partitions", "3", "--acks", "all"])
            .args(["--compression", "none", "--batch-bytes", "4000"])
            .args([
                "--producers",
                "2",
                "--consumers",
                "1",
                "--max-in-flight",
                "5",
            ])
            .arg("--json")
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "weir bench {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report
    };
    let produced = tokio::task::spawn_blocking({
        let bench = bench.clone();
        move || bench("produce", "bench-p", "20000", &[])
    })
    .await
    .unwrap();
    assert!(produced.is_object(), "{produced}");
    let c = consumer(&b.bootstrap());
    let total: i64 = (0..3)
        .map(|p| {
            c.fetch_watermarks("bench-p", p, std::time::Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum();
    assert_eq!(
        total, 20_000,
        "exactly --records records, over 3 partitions"
    );
    tokio::task::spawn_blocking({
        let bench = bench.clone();
        move || bench("consume", "bench-p", "20000", &[])
    })
    .await
    .unwrap();
    tokio::task::spawn_blocking(move || bench("e2e", "bench-e", "5000", &["--rate", "5000"]))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_partitions_are_removed_and_leftovers_are_swept_at_start() {
    let mut b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "doomed", 2, &[]).await;
    let data = b.dir.path().join("data");
    let admin = admin(&bs);
    let r = admin.delete_topics(&["doomed"], &opts()).await.unwrap();
    assert!(r[0].is_ok());
    let left = |data: &std::path::Path| {
        std::fs::read_dir(data)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("doomed-"))
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !left(&data).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        left(&data),
        Vec::<String>::new(),
        "the partitions are removed"
    );

    // A removal cut short by a stop leaves a renamed directory: the next
    // start removes it, and nothing else.
    b.stop().await;
    let stray = data.join("doomed-0.0123456789abcdef0123456789abcdef-delete");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("00000000000000000000.log"), b"x").unwrap();
    let keep = data.join("not-a-partition");
    std::fs::create_dir_all(&keep).unwrap();
    let config = weir::config::Config::for_tests(data.clone());
    let running = weir::start(config).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stray.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!stray.exists(), "the leftover is swept");
    assert!(keep.exists(), "other directories are left alone");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_log_dirs_reports_bytes_per_partition_on_disk() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::{
        ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "ld", 2, &[]).await;
    let p = producer(&bs, &[]);
    for i in 0..20 {
        p.send(
            rdkafka::producer::FutureRecord::to("ld")
                .partition(0)
                .key("k")
                .payload(&format!("record {i}")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let addr = b.kafka_addr();
    let dir = std::fs::canonicalize(&b.broker().config.args.data_dir).unwrap();
    let on_disk = b
        .broker()
        .topics
        .get("ld")
        .unwrap()
        .partition(0)
        .unwrap()
        .size_bytes();
    assert!(on_disk > 0);
    for version in 1..=4 {
        let resp: DescribeLogDirsResponse = tokio::task::spawn_blocking(move || {
            raw_request(
                addr,
                ApiKey::DescribeLogDirs,
                version,
                // Null topics: all of them (an empty list is none).
                &DescribeLogDirsRequest::default().with_topics(None),
            )
        })
        .await
        .unwrap();
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.results.len(), 1, "v{version}: the one data dir");
        let d = &resp.results[0];
        assert_eq!(d.error_code, 0);
        assert_eq!(d.log_dir.as_str(), dir.to_str().unwrap());
        let t = d.topics.iter().find(|t| t.name.as_str() == "ld");
        let t = t.unwrap_or_else(|| panic!("v{version}: {resp:?}"));
        let sizes: Vec<(i32, i64)> = t
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.partition_size))
            .collect();
        assert_eq!(sizes, vec![(0, on_disk as i64), (1, 0)], "v{version}");
        if version >= 4 {
            assert!(d.total_bytes > 0 && d.usable_bytes >= 0 && d.usable_bytes <= d.total_bytes);
        }
    }
    // Named partitions only; an unknown topic or partition is left out.
    let req = DescribeLogDirsRequest::default().with_topics(Some(vec![
        DescribableLogDirTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("ld")))
            .with_partitions(vec![1, 7]),
        DescribableLogDirTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("nope")))
            .with_partitions(vec![0]),
    ]));
    let resp: DescribeLogDirsResponse =
        tokio::task::spawn_blocking(move || raw_request(addr, ApiKey::DescribeLogDirs, 4, &req))
            .await
            .unwrap();
    let topics: Vec<(String, Vec<i32>)> = resp.results[0]
        .topics
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    assert_eq!(topics, vec![("ld".to_string(), vec![1])]);
}

/// Dynamic broker configs: set on the BROKER resource, applied at once
/// (topics without their own value follow the new default, auto-created
/// topics get the new partition count), kept across a restart; read-only
/// and unknown ones refused with INVALID_CONFIG.
#[test]
fn dynamic_broker_configs_apply_at_once_and_survive_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut b = ChildBroker::start(dir.path(), &["--node-id", "1"]);
    let bs = b.bootstrap();
    rt.block_on(async {
        create_topic(&bs, "dyn", 1, &[]).await;
        let admin = admin(&bs);
        let alter = AlterConfig::new(ResourceSpecifier::Broker(1))
            .set("log.retention.ms", "3600000")
            .set("num.partitions", "3")
            .set("log.cleaner.io.max.bytes.per.second", "1048576")
            .set("sasl.kerberos.min.time.before.relogin", "58000");
        let r = admin.alter_configs([&alter], &opts()).await.unwrap();
        assert!(r[0].is_ok(), "{r:?}");
        // (The rdkafka crate's AlterConfigs result drops per-resource
        // errors: these go as raw requests.)
        for (name, value) in [
            ("broker.id", "2"),
            ("no.such.config", "1"),
            ("num.partitions", "0"),
            ("log.cleaner.io.max.bytes.per.second", "0"),
        ] {
            use kafka_protocol::messages::alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
            use kafka_protocol::protocol::StrBytes;
            let req =
                AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default(
                )
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("1"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_string(name.to_string()))
                    .with_value(Some(StrBytes::from_string(value.to_string())))])]);
            let r: AlterConfigsResponse =
                crate::bad_input::call(bs.parse().unwrap(), ApiKey::AlterConfigs, 1, &req);
            assert_eq!(
                r.responses[0].error_code, 40,
                "INVALID_CONFIG for {name}={value}"
            );
        }
        let d = admin
            .describe_configs([&ResourceSpecifier::Broker(1)], &opts())
            .await
            .unwrap();
        let m = d[0].as_ref().unwrap().entry_map();
        assert_eq!(m["log.retention.ms"].value.as_deref(), Some("3600000"));
        assert!(!m["log.retention.ms"].is_read_only);
        assert!(m["broker.id"].is_read_only);
        assert_eq!(m["num.partitions"].value.as_deref(), Some("3"));
        assert_eq!(
            m["log.cleaner.io.max.bytes.per.second"].value.as_deref(),
            Some("1048576")
        );
    });
    let retention = |bs: &str| {
        rt.block_on(async {
            let d = admin(bs)
                .describe_configs([&ResourceSpecifier::Topic("dyn")], &opts())
                .await
                .unwrap();
            let m = d[0].as_ref().unwrap().entry_map();
            m["retention.ms"].value.clone()
        })
    };
    assert_eq!(
        retention(&bs).as_deref(),
        Some("3600000"),
        "applied at once"
    );
    // An auto-created topic takes the new partition count.
    let p = producer(&bs, &[]);
    rt.block_on(async {
        p.send(
            rdkafka::producer::FutureRecord::to("dyn-auto")
                .key("k")
                .payload("v"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    });
    let md = consumer(&bs)
        .fetch_metadata(Some("dyn-auto"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 3);
    drop(p);
    b.terminate();
    let b = ChildBroker::start(dir.path(), &["--node-id", "1"]);
    assert_eq!(
        retention(&b.bootstrap()).as_deref(),
        Some("3600000"),
        "kept across a restart"
    );
}

/// IncrementalAlterConfigs on the BROKER_LOGGER resource (type 8).
fn set_logger(
    addr: std::net::SocketAddr,
    broker: &str,
    changes: &[(&str, i8, Option<&str>)],
) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(8)
            .with_resource_name(StrBytes::from_string(broker.into()))
            .with_configs(
                changes
                    .iter()
                    .map(|(name, op, value)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string((*name).into()))
                            .with_config_operation(*op)
                            .with_value(value.map(|v| StrBytes::from_string(v.into())))
                    })
                    .collect(),
            ),
    ]);
    let r: IncrementalAlterConfigsResponse =
        crate::bad_input::call(addr, ApiKey::IncrementalAlterConfigs, 1, &req);
    r.responses[0].error_code
}

/// The loggers DescribeConfigs of BROKER_LOGGER shows: (name, level).
fn loggers(addr: std::net::SocketAddr) -> Vec<(String, String)> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
    use kafka_protocol::protocol::StrBytes;
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(8)
            .with_resource_name(StrBytes::from_static_str("1"))
            .with_configuration_keys(None)]);
    let r: DescribeConfigsResponse = crate::bad_input::call(addr, ApiKey::DescribeConfigs, 1, &req);
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    r.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_deref().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn log_levels_change_while_the_broker_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{port}");
    let stderr = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--listen", &addr, "--advertised-listener", &addr])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--node-id",
            "1",
            "--log-format",
            "text",
            "--log-level",
            "warn",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the broker did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let a: std::net::SocketAddr = addr.parse().unwrap();
    let before = loggers(a);
    assert!(
        before.contains(&("root".into(), "WARN".into())),
        "{before:?}"
    );
    assert!(
        before.contains(&("openraft".into(), "OFF".into())),
        "{before:?}"
    );
    // Not a level, the root logger deleted, another broker, APPEND: refused.
    assert_eq!(set_logger(a, "1", &[("weir", 0, Some("LOUD"))]), 40);
    assert_eq!(set_logger(a, "1", &[("root", 1, None)]), 40);
    assert_eq!(set_logger(a, "1", &[("weir", 2, Some("INFO"))]), 40);
    assert_eq!(set_logger(a, "2", &[("weir", 0, Some("INFO"))]), 42);
    let quiet = std::fs::read_to_string(&stderr).unwrap();
    assert!(!quiet.contains("log level changed"), "{quiet}");
    // Root to INFO: the change itself is logged at INFO, so it shows.
    assert_eq!(
        set_logger(
            a,
            "1",
            &[("root", 0, Some("INFO")), ("weir::group", 0, Some("DEBUG"))]
        ),
        0
    );
    let after = loggers(a);
    assert!(after.contains(&("root".into(), "INFO".into())), "{after:?}");
    assert!(
        after.contains(&("weir::group".into(), "DEBUG".into())),
        "{after:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&stderr).unwrap();
        if text.contains("log level changed") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // DELETE takes a logger back to the root level.
    assert_eq!(set_logger(a, "1", &[("weir::group", 1, None)]), 0);
    assert!(!loggers(a).iter().any(|(n, _)| n == "weir::group"));
    let _ = child.kill();
    let _ = child.wait();
}

/// The dynamic `max.connections`: lowered, a new connection waits (no
/// answer) while the slots are taken and is served once one closes;
/// raised again, connections are served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_changes_while_the_broker_runs() {
    use std::io::Write;

    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::{
        AlterConfigsRequest, AlterConfigsResponse, ApiKey, ApiVersionsRequest,
    };
    use kafka_protocol::protocol::StrBytes;

    use crate::bad_input::{call, connect, frame, read_response};
    let b = TestBroker::start().await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let alter = |value: &str| {
            let req =
                AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default(
                )
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str(""))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("max.connections"))
                    .with_value(Some(StrBytes::from_string(value.to_string())))])]);
            let r: AlterConfigsResponse = call(addr, ApiKey::AlterConfigs, 1, &req);
            r.responses[0].error_code
        };
        let versions = frame(ApiKey::ApiVersions, 0, 3, &ApiVersionsRequest::default());
        let mut held = connect(addr);
        held.write_all(&versions).unwrap();
        assert!(read_response(&mut held).is_some());
        assert_eq!(alter("0"), 40, "INVALID_CONFIG");
        assert_eq!(alter("1"), 0);
        std::thread::sleep(Duration::from_millis(1_500));
        // The one slot is the held connection's: a new one is not served.
        let mut waiting = connect(addr);
        waiting
            .set_read_timeout(Some(Duration::from_millis(1_500)))
            .unwrap();
        waiting.write_all(&versions).unwrap();
        assert!(
            read_response(&mut waiting).is_none(),
            "served past max.connections"
        );
        // Once the held connection closes, the waiting one is served.
        drop(held);
        waiting
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        waiting.write_all(&versions).unwrap();
        assert!(
            read_response(&mut waiting).is_some(),
            "served once a slot freed"
        );
        drop(waiting);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(alter("100"), 0);
        std::thread::sleep(Duration::from_millis(1_500));
        let mut a = connect(addr);
        let mut c = connect(addr);
        for s in [&mut a, &mut c] {
            s.write_all(&versions).unwrap();
            assert!(read_response(s).is_some(), "served after raising it");
        }
    })
    .await
    .unwrap();
}
