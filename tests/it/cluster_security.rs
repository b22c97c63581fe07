//! Users, ACLs and quotas in a cluster: made through one broker, in force
//! on every broker, and kept through a restart. Every node has one
//! SASL_PLAINTEXT listener and the ACL authorizer; `admin` is a super user
//! each node knows from its own users file (the bootstrap path), `alice`
//! is made through the Kafka API.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::bad_input::{connect, decode_body, frame, read_response};
use crate::cluster::TestCluster;
use crate::common::*;

const ADMIN: (&str, &str) = ("admin", "admin-secret");
const ALICE: (&str, &str) = ("alice", "alice-secret");

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Authenticates as `who` with SASL PLAIN on a new connection to `port`;
/// `None` when the broker refuses.
fn login(port: u16, who: (&str, &str)) -> Option<std::net::TcpStream> {
    let mut s = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    let hs = SaslHandshakeRequest::default().with_mechanism(sb("PLAIN"));
    s.write_all(&frame(ApiKey::SaslHandshake, 1, 1, &hs)).ok()?;
    let r: SaslHandshakeResponse = decode_body(ApiKey::SaslHandshake, 1, &read_response(&mut s)?);
    assert_eq!(r.error_code, 0, "PLAIN is offered");
    let token = format!("\0{}\0{}", who.0, who.1);
    let auth = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
    s.write_all(&frame(ApiKey::SaslAuthenticate, 2, 2, &auth))
        .ok()?;
    let r: SaslAuthenticateResponse =
        decode_body(ApiKey::SaslAuthenticate, 2, &read_response(&mut s)?);
    (r.error_code == 0).then_some(s)
}

/// One request as `who` to the broker on `port`.
fn call_as<Req: Encodable, Resp: Decodable>(
    port: u16,
    who: (&str, &str),
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    let mut s = login(port, who).expect("authenticated");
    s.write_all(&frame(key, version, 3, req)).unwrap();
    decode_body(key, version, &read_response(&mut s).unwrap())
}

/// Waits until `ok` holds.
fn eventually(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sasl_config(port: u16, mechanism: &str, who: (&str, &str)) -> ClientConfig {
    let mut c = client_config(&format!("127.0.0.1:{port}"));
    c.set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", mechanism)
        .set("sasl.username", who.0)
        .set("sasl.password", who.1);
    c
}

async fn produce(c: &ClientConfig, topic: &str) -> Result<(), String> {
    let p: FutureProducer = c
        .clone()
        .set("message.timeout.ms", "8000")
        .set("acks", "all")
        .create()
        .unwrap();
    p.send(
        FutureRecord::<(), _>::to(topic).payload("hello"),
        Duration::from_secs(8),
    )
    .await
    .map(|_| ())
    .map_err(|(e, _)| e.to_string())
}

fn describe_all_acls(port: u16) -> usize {
    let req = crate::security::describe_every_acl();
    let r: DescribeAclsResponse = call_as(port, ADMIN, ApiKey::DescribeAcls, 1, &req);
    assert_eq!(r.error_code, 0);
    r.resources.iter().map(|r| r.acls.len()).sum()
}

fn alice_quota(port: u16) -> Option<f64> {
    let req = DescribeClientQuotasRequest::default().with_components(vec![
        describe_client_quotas_request::ComponentData::default()
            .with_entity_type(sb("user"))
            .with_match_type(0)
            .with_match(Some(sb("alice"))),
    ]);
    let r: DescribeClientQuotasResponse =
        call_as(port, ADMIN, ApiKey::DescribeClientQuotas, 1, &req);
    assert_eq!(r.error_code, 0);
    r.entries?
        .first()?
        .values
        .iter()
        .find(|v| v.key.as_str() == "producer_byte_rate")
        .map(|v| v.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_acls_and_quotas_made_on_one_broker_hold_on_every_broker_and_through_a_restart() {
    let mut c = TestCluster::start_with(
        3,
        &[
            "--listen",
            "SASL_PLAINTEXT://127.0.0.1:{kafka}",
            "--authorizer",
            "acl",
            "--super-users",
            "User:admin",
        ],
    );
    for i in 0..3 {
        add_user(c.data_dir(i), ADMIN.0, ADMIN.1);
    }
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let ports: Vec<u16> = c.ports.iter().map(|p| p.0).collect();
    let port = |i: usize| ports[i];

    let admin: AdminClient<DefaultClientContext> =
        sasl_config(port(0), "PLAIN", ADMIN).create().unwrap();
    let topics = [
        NewTopic::new("orders", 1, TopicReplication::Fixed(3)),
        NewTopic::new("secret", 1, TopicReplication::Fixed(3)),
    ];
    for r in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }

    // Through node 1: alice's credential, her ACL and her quota.
    let mut salted = [0u8; 32];
    let salt = b"a-salt-for-alice".to_vec();
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(4096).unwrap(),
        &salt,
        ALICE.1.as_bytes(),
        &mut salted,
    );
    let upsert = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
            .with_name(sb(ALICE.0))
            .with_mechanism(1)
            .with_iterations(4096)
            .with_salt(Bytes::from(salt))
            .with_salted_password(Bytes::copy_from_slice(&salted)),
    ]);
    let r: AlterUserScramCredentialsResponse = call_as(
        port(0),
        ADMIN,
        ApiKey::AlterUserScramCredentials,
        0,
        &upsert,
    );
    assert_eq!(r.results[0].error_code, 0, "{:?}", r.results[0]);
    let acl = create_acls_request::AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(sb("orders"))
        .with_resource_pattern_type(3)
        .with_principal(sb("User:alice"))
        .with_host(sb("*"))
        .with_operation(4)
        .with_permission_type(3);
    let r: CreateAclsResponse = call_as(
        port(0),
        ADMIN,
        ApiKey::CreateAcls,
        1,
        &CreateAclsRequest::default().with_creations(vec![acl]),
    );
    assert_eq!(r.results[0].error_code, 0, "{:?}", r.results[0]);
    let quota = AlterClientQuotasRequest::default().with_entries(vec![
        alter_client_quotas_request::EntryData::default()
            .with_entity(vec![alter_client_quotas_request::EntityData::default()
                .with_entity_type(sb("user"))
                .with_entity_name(Some(sb("alice")))])
            .with_ops(vec![alter_client_quotas_request::OpData::default()
                .with_key(sb("producer_byte_rate"))
                .with_value(1_048_576.0)]),
    ]);
    let r: AlterClientQuotasResponse =
        call_as(port(0), ADMIN, ApiKey::AlterClientQuotas, 0, &quota);
    assert_eq!(r.entries[0].error_code, 0, "{:?}", r.entries[0]);

    // Every broker knows all three at once.
    for i in 0..3 {
        eventually(
            &format!("node {} knows alice", i + 1),
            Duration::from_secs(10),
            || login(port(i), ALICE).is_some(),
        );
        assert!(login(port(i), (ALICE.0, "wrong")).is_none());
        assert_eq!(describe_all_acls(port(i)), 1, "node {}", i + 1);
        assert_eq!(alice_quota(port(i)), Some(1_048_576.0), "node {}", i + 1);
        let r: DescribeUserScramCredentialsResponse = call_as(
            port(i),
            ADMIN,
            ApiKey::DescribeUserScramCredentials,
            0,
            &DescribeUserScramCredentialsRequest::default(),
        );
        let users: Vec<&str> = r.results.iter().map(|u| u.user.as_str()).collect();
        assert_eq!(users, ["alice"], "the API lists the cluster's users");
    }
    // alice writes where her ACL allows, through any broker, with SCRAM.
    let alice = sasl_config(port(2), "SCRAM-SHA-256", ALICE);
    produce(&alice, "orders").await.unwrap();
    let denied = produce(&alice, "secret").await.unwrap_err();
    assert!(denied.contains("uthoriz"), "{denied}");

    // A restarted broker has them from its own copy of the quorum's log.
    c.kill9(2);
    c.start_node(2);
    eventually(
        "node 3 knows alice after its restart",
        Duration::from_secs(30),
        || login(port(2), ALICE).is_some(),
    );
    assert_eq!(describe_all_acls(port(2)), 1);
    assert_eq!(alice_quota(port(2)), Some(1_048_576.0));

    // Through node 2: the ACL and the credential go, everywhere.
    let filter = delete_acls_request::DeleteAclsFilter::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(1)
        .with_principal_filter(Some(sb("User:alice")))
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1);
    let r: DeleteAclsResponse = call_as(
        port(1),
        ADMIN,
        ApiKey::DeleteAcls,
        1,
        &DeleteAclsRequest::default().with_filters(vec![filter]),
    );
    assert_eq!(r.filter_results[0].error_code, 0);
    assert_eq!(r.filter_results[0].matching_acls.len(), 1);
    let delete = AlterUserScramCredentialsRequest::default().with_deletions(vec![
        alter_user_scram_credentials_request::ScramCredentialDeletion::default()
            .with_name(sb(ALICE.0))
            .with_mechanism(1),
    ]);
    let r: AlterUserScramCredentialsResponse = call_as(
        port(1),
        ADMIN,
        ApiKey::AlterUserScramCredentials,
        0,
        &delete,
    );
    assert_eq!(r.results[0].error_code, 0);
    let r: AlterUserScramCredentialsResponse = call_as(
        port(1),
        ADMIN,
        ApiKey::AlterUserScramCredentials,
        0,
        &delete,
    );
    assert_eq!(
        r.results[0].error_code, 91,
        "RESOURCE_NOT_FOUND the second time"
    );
    for i in 0..3 {
        eventually(
            &format!("node {} forgets alice", i + 1),
            Duration::from_secs(10),
            || login(port(i), ALICE).is_none() && describe_all_acls(port(i)) == 0,
        );
    }
    // The admin each node knows from its own file still logs in.
    for i in 0..3 {
        assert!(login(port(i), ADMIN).is_some());
    }
}

#[test]
fn brokers_prove_the_cluster_secret_to_each_other_and_an_outsider_cannot_propose() {
    use std::io::Read;
    let secrets = tempfile::tempdir().unwrap();
    let right = "a-secret-only-the-brokers-know\n";
    for (node, secret) in [(1, right), (2, right), (3, "another-secret-entirely\n")] {
        std::fs::write(secrets.path().join(format!("secret-{node}")), secret).unwrap();
    }
    let flag = format!("{}/secret-{{node}}", secrets.path().display());
    let mut c = TestCluster::start_with(
        3,
        &[
            "--controller-secret-file",
            &flag,
            "--auto-create-topics",
            "false",
        ],
    );
    // Nodes 1 and 2 form the quorum; node 3, with another secret, is
    // refused by both and refuses them.
    eventually("nodes 1 and 2 agree", Duration::from_secs(30), || {
        [0, 1].iter().all(|&i| {
            c.status(i).is_some_and(|s| {
                s["controller"].as_u64().is_some_and(|l| l == 1 || l == 2)
                    && s["brokers"].as_array().map(Vec::len) == Some(2)
            })
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    let three = c.status(2).unwrap();
    assert!(three["controller"].is_null(), "{three}");
    assert_eq!(c.status(0).unwrap()["brokers"].as_array().unwrap().len(), 2);

    // An outsider on node 1's controller listener: its proposal (a topic)
    // is never read.
    let controller_port = c.ports[0].2;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", controller_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = br#"{"Propose":{"CreateTopic":{"name":"intruder","id":"6f1c1a0e-1d7e-4d4f-9a63-1c8a7c0f0a11","partitions":1,"replication_factor":1,"configs":{}}}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let _ = s.write_all(&frame);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert_eq!(got.len(), 32, "a challenge, then the connection is closed");
    // Counted (node 3's attempts with its other secret count too).
    eventually("the refusal is counted", Duration::from_secs(5), || {
        c.status(0)
            .and_then(|s| s["refused_connections"].as_u64())
            .is_some_and(|n| n >= 1)
    });
    let bootstrap = c.bootstrap_without(3);
    std::thread::sleep(Duration::from_millis(500));
    let consumer: rdkafka::consumer::BaseConsumer = client_config(&bootstrap).create().unwrap();
    let md = rdkafka::consumer::Consumer::fetch_metadata(
        &consumer,
        Some("intruder"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        md.topics().iter().all(|t| t.partitions().is_empty()),
        "no topic was made"
    );

    // Given the cluster's secret, node 3 joins.
    std::fs::write(secrets.path().join("secret-3"), right).unwrap();
    c.kill9(2);
    c.start_node(2);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
}
