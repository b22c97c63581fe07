//! Admin requests against three broker processes: ElectLeaders (a
//! preferred election hands a partition back to its first replica once it
//! is in sync again, an unclean one brings an offline partition back on a
//! live replica that was out of sync), InitProducerId while the quorum
//! has no majority, and a transactional id's coordinator found and
//! answering.

use std::net::SocketAddr;
use std::time::Duration;

use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    ApiKey, ElectLeadersRequest, ElectLeadersResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::bad_input::call;
use crate::cluster::{produce_numbered, wait_placement, TestCluster};
use crate::common::*;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// ElectLeaders v2 to the broker on `port`: the top-level code and each
/// named partition's code.
fn elect(port: u16, kind: i8, partitions: Option<&[(&str, i32)]>) -> (i16, Vec<(String, i16)>) {
    let req = ElectLeadersRequest::default()
        .with_election_type(kind)
        .with_timeout_ms(10_000)
        .with_topic_partitions(partitions.map(|ps| {
            ps.iter()
                .map(|(t, p)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string((*t).to_string())))
                        .with_partitions(vec![*p])
                })
                .collect()
        }));
    let r: ElectLeadersResponse = call(
        SocketAddr::from(([127, 0, 0, 1], port)),
        ApiKey::ElectLeaders,
        2,
        &req,
    );
    let parts = r
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result.iter().map(|p| {
                (
                    format!("{}-{}", t.topic.as_str(), p.partition_id),
                    p.error_code,
                )
            })
        })
        .collect();
    (r.error_code, parts)
}

async fn create(bootstrap: &str, name: &str, rf: i32) {
    let t = rdkafka::admin::NewTopic::new(name, 1, rdkafka::admin::TopicReplication::Fixed(rf));
    for r in admin(bootstrap)
        .create_topics([&t], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leaders_moves_a_partition_to_its_preferred_replica_or_uncleanly_to_a_live_one() {
    // No automatic hand-back: only the request moves leaders home.
    let mut c = TestCluster::start_with(3, &["--leader-imbalance-check-interval-ms", "0"]);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bootstrap = c.bootstrap();
    let port = |c: &TestCluster, id: i32| c.ports[id as usize - 1].0;

    // Preferred: the first replica dies, comes back in sync, and is made
    // leader again on request.
    create(&bootstrap, "home", 3).await;
    let before = wait_placement(&bootstrap, "home", Duration::from_secs(15), |p| p[0].0 > 0);
    let first = before[0].1[0];
    assert_eq!(before[0].0, first, "the first replica leads a new topic");
    let other = before[0].1[1];
    assert_eq!(
        elect(port(&c, other), PREFERRED, Some(&[("home", 0)])).1,
        [("home-0".to_string(), 84)],
        "ELECTION_NOT_NEEDED while it leads"
    );
    c.kill9(first as usize - 1);
    let survivors = c.bootstrap_without(first);
    wait_placement(&survivors, "home", Duration::from_secs(15), |p| {
        p[0].0 > 0 && p[0].0 != first
    });
    assert_eq!(
        elect(port(&c, other), PREFERRED, Some(&[("home", 0)])).1,
        [("home-0".to_string(), 80)],
        "PREFERRED_LEADER_NOT_AVAILABLE while it is down"
    );
    c.start_node(first as usize - 1);
    wait_placement(&bootstrap, "home", Duration::from_secs(30), |p| {
        p[0].2.contains(&first) && p[0].0 != first
    });
    let (top, parts) = elect(
        port(&c, other),
        PREFERRED,
        Some(&[("home", 0), ("nope", 0)]),
    );
    assert_eq!(top, 0);
    assert_eq!(
        parts,
        [("home-0".to_string(), 0), ("nope-0".to_string(), 3)]
    );
    wait_placement(&bootstrap, "home", Duration::from_secs(10), |p| {
        p[0].0 == first
    });
    // Asked for every partition, only those elected or failing are named:
    // not `home`, which has its leader; the internal partitions that the
    // killed broker led move home too (or wait for it to be in sync).
    let (top, parts) = elect(port(&c, other), PREFERRED, None);
    assert_eq!(top, 0);
    assert!(
        parts
            .iter()
            .all(|(n, code)| !n.starts_with("home-") && (*code == 0 || *code == 80)),
        "{parts:?}"
    );

    // Unclean: replicas [a, b]. b is paused and leaves the ISR, then a is
    // killed: the partition is offline, as no in-sync replica lives. b is
    // woken; an unclean election makes it the leader, with what it has.
    create(&bootstrap, "last-resort", 2).await;
    let placed = wait_placement(&bootstrap, "last-resort", Duration::from_secs(15), |p| {
        p[0].0 > 0 && p[0].2.len() == 2
    });
    let (a, b) = (placed[0].1[0], placed[0].1[1]);
    let third = (1..=3).find(|n| *n != a && *n != b).unwrap();
    let p: rdkafka::producer::FutureProducer = client_config(&bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    assert_eq!(produce_numbered(&p, "last-resort", 1, 0, 5).await.len(), 5);
    drop(p);
    c.signal(b as usize - 1, "-STOP");
    let others = c.bootstrap_without(b);
    wait_placement(&others, "last-resort", Duration::from_secs(15), |p| {
        p[0].2 == [a]
    });
    c.kill9(a as usize - 1);
    c.signal(b as usize - 1, "-CONT");
    let alive = c.bootstrap_without(a);
    wait_placement(&alive, "last-resort", Duration::from_secs(30), |p| {
        p[0].0 <= 0
    });
    assert_eq!(
        elect(port(&c, third), PREFERRED, Some(&[("last-resort", 0)])).1,
        [("last-resort-0".to_string(), 80)]
    );
    // b must be back (unfenced) before it can be elected.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, parts) = elect(port(&c, third), UNCLEAN, Some(&[("last-resort", 0)]));
        if parts == [("last-resort-0".to_string(), 0)] {
            break;
        }
        assert_eq!(
            parts,
            [("last-resort-0".to_string(), 83)],
            "only while b is fenced"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "b never became eligible"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_placement(&alive, "last-resort", Duration::from_secs(10), |p| {
        p[0].0 == b && p[0].2 == [b]
    });
    // It serves what it had and takes new writes.
    let p: rdkafka::producer::FutureProducer =
        client_config(&alive).set("acks", "all").create().unwrap();
    assert_eq!(produce_numbered(&p, "last-resort", 1, 5, 5).await.len(), 5);
    let read = read_all(&alive, "last-resort", 1, 10, Duration::from_secs(15));
    assert_eq!(read.len(), 10);
    // The killed replica comes back as b's follower and rejoins the ISR.
    c.start_node(a as usize - 1);
    wait_placement(&bootstrap, "last-resort", Duration::from_secs(30), |p| {
        p[0].0 == b && p[0].2.len() == 2
    });
}

#[test]
fn without_a_majority_init_producer_id_asks_the_producer_to_retry() {
    // Kafka answers COORDINATOR_LOAD_IN_PROGRESS while no producer id block
    // can be had: every client retries it. COORDINATOR_NOT_AVAILABLE sent
    // kafka-python's idempotent producer looking for a transaction
    // coordinator with a null id, a request that cannot be read.
    let mut c = TestCluster::start(3);
    let (controller, _) = c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let survivor = (1..=3).find(|n| *n != controller).unwrap() as usize - 1;
    for i in 0..3 {
        if i != survivor {
            c.kill9(i);
        }
    }
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let r: InitProducerIdResponse = call(
        SocketAddr::from(([127, 0, 0, 1], c.ports[survivor].0)),
        ApiKey::InitProducerId,
        4,
        &req,
    );
    assert_eq!(r.error_code, 14, "COORDINATOR_LOAD_IN_PROGRESS");
    // The majority back: an id.
    for i in 0..3 {
        if i != survivor {
            c.start_node(i);
        }
    }
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r: InitProducerIdResponse = call(
            SocketAddr::from(([127, 0, 0, 1], c.ports[survivor].0)),
            ApiKey::InitProducerId,
            4,
            &req,
        );
        if r.error_code == 0 {
            assert!(r.producer_id.0 >= 0);
            break;
        }
        assert_eq!(r.error_code, 14);
        assert!(std::time::Instant::now() < deadline, "no producer id");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_cluster_finds_the_coordinator_of_a_transactional_id_and_it_hands_out_an_epoch() {
    // One voter is a cluster too, and starts fewer processes beside the
    // other tests.
    let c = TestCluster::start(1);
    c.agreed(&[0], None, Duration::from_secs(30));
    let addr = SocketAddr::from(([127, 0, 0, 1], c.ports[0].0));
    let find = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_static_str("t"))
        .with_key_type(1);
    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("t"))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    // `__transaction_state` is made at the first ask.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r: FindCoordinatorResponse = call(addr, ApiKey::FindCoordinator, 3, &find);
        if r.error_code == 0 {
            assert_eq!(r.node_id.0, 1);
            break;
        }
        assert_eq!(
            r.error_code, 15,
            "COORDINATOR_NOT_AVAILABLE until it is made"
        );
        assert!(std::time::Instant::now() < deadline, "no coordinator");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut epochs = Vec::new();
    while epochs.len() < 2 {
        let r: InitProducerIdResponse = call(addr, ApiKey::InitProducerId, 4, &init);
        match r.error_code {
            0 => epochs.push((r.producer_id.0, r.producer_epoch)),
            // The partition's leader is still loading it.
            14..=16 => std::thread::sleep(Duration::from_millis(200)),
            e => panic!("InitProducerId: {e}"),
        }
        assert!(std::time::Instant::now() < deadline, "no producer id");
    }
    assert_eq!(epochs[0].0, epochs[1].0, "the same producer id");
    assert_eq!(
        epochs[1].1,
        epochs[0].1 + 1,
        "a new producer gets the next epoch"
    );
}

/// IncrementalAlterConfigs on the default broker resource `""`.
fn set_cluster_default(port: u16, name: &str, value: &str) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str(""))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_string(name.into()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(value.into())))]),
    ]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r: IncrementalAlterConfigsResponse = call(addr, ApiKey::IncrementalAlterConfigs, 1, &req);
    r.responses[0].error_code
}

/// A broker config as DescribeConfigs of `resource` at `port` shows it:
/// (value, source).
fn broker_config(port: u16, resource: &str, name: &str) -> Option<(Option<String>, i8)> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_string(resource.into()))
            .with_configuration_keys(None)]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r: DescribeConfigsResponse = call(addr, ApiKey::DescribeConfigs, 1, &req);
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    r.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .map(|c| (c.value.as_ref().map(ToString::to_string), c.config_source))
}

#[test]
fn cluster_wide_broker_configs_are_kept_by_the_quorum_and_apply_on_every_broker() {
    let mut c = TestCluster::start(3);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    assert_eq!(
        set_cluster_default(c.ports[0].0, "log.retention.ms", "3600000"),
        0
    );
    assert_eq!(
        set_cluster_default(c.ports[0].0, "broker.id", "7"),
        40,
        "INVALID_CONFIG for a read-only config"
    );
    // Every broker sees it, as the default broker resource and under its
    // own id with the source DYNAMIC_DEFAULT_BROKER_CONFIG (3).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for (i, (port, _, _)) in c.ports.clone().into_iter().enumerate() {
        let id = (i + 1).to_string();
        loop {
            let seen = broker_config(port, &id, "log.retention.ms");
            if seen == Some((Some("3600000".into()), 3)) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "node {id}: {seen:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            broker_config(port, "", "log.retention.ms"),
            Some((Some("3600000".into()), 3))
        );
    }
    // A broker's own config goes over the cluster's.
    let own = {
        use kafka_protocol::messages::alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
        let req =
            AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("2"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("log.retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("7200000")))])]);
        let addr: SocketAddr = format!("127.0.0.1:{}", c.ports[1].0).parse().unwrap();
        let r: AlterConfigsResponse = call(addr, ApiKey::AlterConfigs, 1, &req);
        r.responses[0].error_code
    };
    assert_eq!(own, 0);
    assert_eq!(
        broker_config(c.ports[1].0, "2", "log.retention.ms"),
        Some((Some("7200000".into()), 2))
    );
    // A restarted broker has it from the quorum.
    c.kill9(2);
    c.start_node(2);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen =
            std::panic::catch_unwind(|| broker_config(c.ports[2].0, "3", "log.retention.ms"));
        if let Ok(Some((Some(v), 3))) = &seen {
            assert_eq!(v, "3600000");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after a restart: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
