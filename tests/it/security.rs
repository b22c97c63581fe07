//! TLS, SASL, ACLs and quotas with librdkafka (built with OpenSSL), and the
//! security admin APIs over raw requests.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tempfile::TempDir;
use weir::config::{AuthorizerMode, Config, ListenerConfig, SecurityProtocol};
use weir::security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};

use crate::bad_input::{call, closed, connect, frame, read_response};
use crate::common::*;

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate for CN=alice, as PEM files.
struct Pki {
    _dir: TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "weir test CA");
        ca_params.distinguished_name = dn;
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Example");
        dn.push(DnType::CommonName, "alice");
        client_params.distinguished_name = dn;
        let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
        let write = |name: &str, pem: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        Self {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", server.pem()),
            key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            _dir: dir,
        }
    }
}

fn listener(protocol: SecurityProtocol) -> ListenerConfig {
    ListenerConfig {
        protocol,
        addr: "127.0.0.1:0".parse().unwrap(),
        advertised_host: "localhost".into(),
        advertised_port: 0,
    }
}

/// A broker with PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL listeners (in
/// that order) and the users admin, alice and bob.
async fn secure_broker(pki: &Pki, tweak: impl FnOnce(&mut Config)) -> TestBroker {
    let b = TestBroker::start_with(|c| {
        c.listeners = vec![
            listener(SecurityProtocol::Plaintext),
            listener(SecurityProtocol::Ssl),
            listener(SecurityProtocol::SaslPlaintext),
            listener(SecurityProtocol::SaslSsl),
        ];
        c.args.tls_cert = Some(pki.cert.clone());
        c.args.tls_key = Some(pki.key.clone());
        c.args.sasl_failure_delay_ms = 200;
        tweak(c);
    })
    .await;
    for (user, pw) in [
        ("admin", "admin-pw"),
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
    ] {
        b.broker().users.add_user(user, pw, 4096).unwrap();
    }
    b
}

/// The bound address of the broker's listener for `protocol`.
fn listener_addr(b: &TestBroker, protocol: SecurityProtocol) -> SocketAddr {
    b.broker()
        .config
        .listeners
        .iter()
        .find(|l| l.protocol == protocol)
        .unwrap()
        .addr
}

fn addr_of(b: &TestBroker, protocol: SecurityProtocol) -> String {
    format!("localhost:{}", listener_addr(b, protocol).port())
}

fn secure_config(
    b: &TestBroker,
    pki: &Pki,
    protocol: SecurityProtocol,
    mechanism: &str,
    user: &str,
    password: &str,
) -> ClientConfig {
    let mut c = client_config(&addr_of(b, protocol));
    c.set("security.protocol", protocol.name());
    if protocol.is_sasl() {
        c.set("sasl.mechanism", mechanism)
            .set("sasl.username", user)
            .set("sasl.password", password);
    }
    if protocol.is_tls() {
        c.set("ssl.ca.location", pki.ca.to_str().unwrap());
    }
    c
}

async fn produce_one(c: &ClientConfig, topic: &str, value: &str) -> Result<(), KafkaError> {
    let p: FutureProducer = c
        .clone()
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    p.send(
        FutureRecord::<(), _>::to(topic).payload(value),
        Duration::from_secs(10),
    )
    .await
    .map(|_| ())
    .map_err(|(e, _)| e)
}

fn consume_one(c: &ClientConfig, topic: &str) -> Option<Vec<u8>> {
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = c
        .clone()
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => return m.payload().map(<[u8]>::to_vec),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    None
}

fn metadata_error(c: &ClientConfig) -> Option<KafkaError> {
    let consumer: BaseConsumer = c.create().unwrap();
    consumer.fetch_metadata(None, Duration::from_secs(4)).err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sasl_mechanism_over_plaintext_and_tls_produces_and_consumes() {
    let pki = Pki::new();
    let b = secure_broker(&pki, |_| {}).await;
    let mut n = 0;
    for protocol in [SecurityProtocol::SaslPlaintext, SecurityProtocol::SaslSsl] {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            n += 1;
            let topic = format!("sasl-{n}");
            let c = secure_config(&b, &pki, protocol, mechanism, "alice", "alice-pw");
            let value = format!("{} {mechanism}", protocol.name());
            produce_one(&c, &topic, &value)
                .await
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(
                consume_one(&c, &topic),
                Some(value.clone().into_bytes()),
                "{value}"
            );
        }
    }
    // SSL without SASL: server authentication only.
    let c = secure_config(&b, &pki, SecurityProtocol::Ssl, "", "", "");
    produce_one(&c, "tls-only", "over TLS").await.unwrap();
    assert_eq!(consume_one(&c, "tls-only"), Some(b"over TLS".to_vec()));
    assert_eq!(
        b.broker()
            .metrics
            .sasl_authentication_failures_total
            .load(Ordering::Relaxed),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_and_unauthenticated_requests_are_refused() {
    let pki = Pki::new();
    let b = secure_broker(&pki, |_| {}).await;
    let mut attempts = Vec::new();
    for (protocol, mechanism) in [
        (SecurityProtocol::SaslPlaintext, "PLAIN"),
        (SecurityProtocol::SaslPlaintext, "SCRAM-SHA-256"),
        (SecurityProtocol::SaslSsl, "SCRAM-SHA-512"),
    ] {
        for (user, password) in [("alice", "wrong"), ("mallory", "alice-pw")] {
            let c = secure_config(&b, &pki, protocol, mechanism, user, password);
            let what = format!("{mechanism} as {user}/{password}");
            attempts.push(std::thread::spawn(move || (what, metadata_error(&c))));
        }
    }
    for a in attempts {
        let (what, err) = a.join().unwrap();
        assert!(err.is_some(), "{what} got in");
    }
    let failures = b
        .broker()
        .metrics
        .sasl_authentication_failures_total
        .load(Ordering::Relaxed);
    assert!(failures >= 6, "failures counted: {failures}");

    // A client that skips SASL on a SASL listener is cut off at its first
    // request other than ApiVersions.
    let sasl_addr = listener_addr(&b, SecurityProtocol::SaslPlaintext);
    let mut s = connect(sasl_addr);
    s.write_all(&frame(
        ApiKey::ApiVersions,
        3,
        1,
        &ApiVersionsRequest::default(),
    ))
    .unwrap();
    assert!(read_response(&mut s).is_some(), "ApiVersions is answered");
    s.write_all(&frame(
        ApiKey::Metadata,
        12,
        2,
        &MetadataRequest::default().with_topics(None),
    ))
    .unwrap();
    assert!(
        closed(&mut s),
        "Metadata before authentication closes the connection"
    );

    // Before authentication, frames above 512 KiB are refused at their size.
    let mut s = connect(sasl_addr);
    s.write_all(&(1_048_576i32).to_be_bytes()).unwrap();
    assert!(
        closed(&mut s),
        "a 1 MiB frame before authentication closes the connection"
    );

    // A wrong PLAIN password over raw requests: the error code, after the
    // delay, then the connection closes.
    let mut s = connect(sasl_addr);
    s.write_all(&frame(
        ApiKey::SaslHandshake,
        1,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    ))
    .unwrap();
    let r = read_response(&mut s).unwrap();
    let hs = SaslHandshakeResponse::decode(&mut Bytes::from(r[4..].to_vec()), 1).unwrap();
    assert_eq!(hs.error_code, 0);
    let started = Instant::now();
    s.write_all(&frame(
        ApiKey::SaslAuthenticate,
        2,
        2,
        &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0alice\0nope")),
    ))
    .unwrap();
    let r = read_response(&mut s).unwrap();
    // v2 responses have a flexible header: correlation id and an empty tag
    // buffer.
    let auth = SaslAuthenticateResponse::decode(&mut Bytes::from(r[5..].to_vec()), 2).unwrap();
    assert_eq!(auth.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(
        started.elapsed() >= Duration::from_millis(180),
        "answered after the delay"
    );
    assert!(closed(&mut s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_let_one_principal_write_and_deny_another() {
    let pki = Pki::new();
    let b = secure_broker(&pki, |c| {
        c.args.authorizer = AuthorizerMode::Acl;
        c.args.super_users = vec!["User:admin".into()];
    })
    .await;
    let admin = secure_config(
        &b,
        &pki,
        SecurityProtocol::SaslPlaintext,
        "SCRAM-SHA-256",
        "admin",
        "admin-pw",
    );
    let alice = secure_config(
        &b,
        &pki,
        SecurityProtocol::SaslSsl,
        "SCRAM-SHA-512",
        "alice",
        "alice-pw",
    );
    let bob = secure_config(
        &b,
        &pki,
        SecurityProtocol::SaslPlaintext,
        "PLAIN",
        "bob",
        "bob-pw",
    );
    // The super user creates the topics.
    produce_one(&admin, "orders", "from admin").await.unwrap();
    produce_one(&admin, "secret", "hidden").await.unwrap();
    let allow = |op| AclBinding {
        resource_type: ResourceType::Topic,
        resource_name: "orders".into(),
        pattern_type: PatternType::Literal,
        principal: "User:alice".into(),
        host: "*".into(),
        operation: op,
        permission: Permission::Allow,
    };
    let group = AclBinding {
        resource_type: ResourceType::Group,
        resource_name: "unused".into(),
        ..allow(Operation::Read)
    };
    b.broker()
        .authorizer
        .create(&[allow(Operation::Write), allow(Operation::Read), group])
        .unwrap();

    produce_one(&alice, "orders", "from alice").await.unwrap();
    match produce_one(&bob, "orders", "from bob").await {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed)) => {}
        other => panic!("bob's produce: {other:?}"),
    }
    // Alice sees only what she may describe.
    let consumer: BaseConsumer = alice.create().unwrap();
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let names: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    assert_eq!(names, vec!["orders"]);
    // Her reads go through; bob's do not.
    assert_eq!(consume_one(&alice, "orders"), Some(b"from admin".to_vec()));
    let consumer: BaseConsumer = bob.clone().set("group.id", "g").create().unwrap();
    let md = consumer
        .fetch_metadata(Some("orders"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        md.topics()[0].error().map(RDKafkaErrorCode::from),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    // Anonymous on the PLAINTEXT listener is denied by default.
    let anon = client_config(&addr_of(&b, SecurityProtocol::Plaintext));
    assert!(produce_one(&anon, "orders", "anon").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_quota_and_scram_apis_round_trip() {
    // PLAINTEXT as a super user: ANONYMOUS is made one for this test.
    let b = TestBroker::start_with(|c| {
        c.args.authorizer = AuthorizerMode::Acl;
        c.args.super_users = vec!["User:ANONYMOUS".into()];
    })
    .await;
    let addr = b.kafka_addr();
    let creation = create_acls_request::AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("logs-"))
        .with_resource_pattern_type(4)
        .with_principal(StrBytes::from_static_str("User:carol"))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(3)
        .with_permission_type(3);
    let bad = creation.clone().with_operation(4).with_resource_type(3); // Write on a group
    let r: CreateAclsResponse = call(
        addr,
        ApiKey::CreateAcls,
        3,
        &CreateAclsRequest::default().with_creations(vec![creation, bad]),
    );
    assert_eq!(r.results[0].error_code, 0);
    assert_eq!(r.results[1].error_code, 42, "INVALID_REQUEST");
    let r: DescribeAclsResponse = call(
        addr,
        ApiKey::DescribeAcls,
        3,
        &DescribeAclsRequest::default()
            .with_resource_type_filter(2)
            .with_resource_name_filter(Some(StrBytes::from_static_str("logs-app")))
            .with_pattern_type_filter(2)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(1)
            .with_permission_type(1),
    );
    assert_eq!(r.error_code, 0);
    assert_eq!(r.resources.len(), 1, "the prefixed ACL matches logs-app");
    assert_eq!(r.resources[0].acls[0].principal.as_str(), "User:carol");
    assert!(b.broker().authorizer.authorize(
        "User:carol",
        "127.0.0.1".parse().unwrap(),
        Operation::Read,
        ResourceType::Topic,
        "logs-app"
    ));
    let r: DeleteAclsResponse = call(
        addr,
        ApiKey::DeleteAcls,
        3,
        &DeleteAclsRequest::default().with_filters(vec![
            delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(1)
                .with_resource_name_filter(None)
                .with_pattern_type_filter(1)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1),
        ]),
    );
    assert_eq!(r.filter_results[0].matching_acls.len(), 1);
    assert!(b.broker().authorizer.all().is_empty());

    // Quotas.
    let entity = vec![alter_client_quotas_request::EntityData::default()
        .with_entity_type(StrBytes::from_static_str("user"))
        .with_entity_name(Some(StrBytes::from_static_str("carol")))];
    let r: AlterClientQuotasResponse = call(
        addr,
        ApiKey::AlterClientQuotas,
        1,
        &AlterClientQuotasRequest::default().with_entries(vec![
            alter_client_quotas_request::EntryData::default()
                .with_entity(entity)
                .with_ops(vec![alter_client_quotas_request::OpData::default()
                    .with_key(StrBytes::from_static_str("producer_byte_rate"))
                    .with_value(1024.0)]),
        ]),
    );
    assert_eq!(r.entries[0].error_code, 0);
    let r: DescribeClientQuotasResponse = call(
        addr,
        ApiKey::DescribeClientQuotas,
        1,
        &DescribeClientQuotasRequest::default().with_components(vec![
            describe_client_quotas_request::ComponentData::default()
                .with_entity_type(StrBytes::from_static_str("user"))
                .with_match_type(2),
        ]),
    );
    let entries = r.entries.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].values[0].value, 1024.0);

    // SCRAM credentials set by a client (salted password computed client
    // side), then used by PLAIN's check.
    let salt = b"0123456789abcdef".to_vec();
    let mut salted = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(4096).unwrap(),
        &salt,
        b"carol-pw",
        &mut salted,
    );
    let r: AlterUserScramCredentialsResponse = call(
        addr,
        ApiKey::AlterUserScramCredentials,
        0,
        &AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                .with_name(StrBytes::from_static_str("carol"))
                .with_mechanism(1)
                .with_iterations(4096)
                .with_salt(Bytes::from(salt))
                .with_salted_password(Bytes::copy_from_slice(&salted)),
        ]),
    );
    assert_eq!(
        r.results[0].error_code, 0,
        "{:?}",
        r.results[0].error_message
    );
    assert!(b.broker().users.verify_plain("carol", "carol-pw"));
    let r: DescribeUserScramCredentialsResponse = call(
        addr,
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default().with_users(None),
    );
    assert_eq!(r.results.len(), 1);
    assert_eq!(r.results[0].credential_infos[0].iterations, 4096);
}

/// DescribeAcls matching every binding (ANY type, pattern, operation and
/// permission; no name, principal or host filter).
pub(crate) fn describe_every_acl() -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(1)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_apis_need_cluster_permission() {
    let b = TestBroker::start_with(|c| c.args.authorizer = AuthorizerMode::Acl).await;
    let r: DescribeAclsResponse = call(
        b.kafka_addr(),
        ApiKey::DescribeAcls,
        3,
        &describe_every_acl(),
    );
    assert_eq!(r.error_code, 31, "CLUSTER_AUTHORIZATION_FAILED");
    // With the authorizer off, the ACL APIs say security is disabled.
    let off = TestBroker::start().await;
    let r: DescribeAclsResponse = call(
        off.kafka_addr(),
        ApiKey::DescribeAcls,
        3,
        &describe_every_acl(),
    );
    assert_eq!(r.error_code, 54, "SECURITY_DISABLED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_the_principal() {
    let pki = Pki::new();
    let b = secure_broker(&pki, |c| {
        c.args.tls_client_ca = Some(pki.ca.clone());
        c.args.authorizer = AuthorizerMode::Acl;
        c.args.super_users = vec!["User:admin".into()];
    })
    .await;
    b.broker()
        .authorizer
        .create(&[AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "*".into(),
            pattern_type: PatternType::Literal,
            principal: "User:CN=alice,O=Example".into(),
            host: "*".into(),
            operation: Operation::All,
            permission: Permission::Allow,
        }])
        .unwrap();
    b.broker()
        .authorizer
        .create(&[AclBinding {
            resource_type: ResourceType::Cluster,
            resource_name: "kafka-cluster".into(),
            pattern_type: PatternType::Literal,
            principal: "User:CN=alice,O=Example".into(),
            host: "*".into(),
            operation: Operation::All,
            permission: Permission::Allow,
        }])
        .unwrap();
    let mut with_cert = secure_config(&b, &pki, SecurityProtocol::Ssl, "", "", "");
    with_cert
        .set(
            "ssl.certificate.location",
            pki.client_cert.to_str().unwrap(),
        )
        .set("ssl.key.location", pki.client_key.to_str().unwrap());
    produce_one(&with_cert, "mtls", "by certificate")
        .await
        .unwrap();
    let without = secure_config(&b, &pki, SecurityProtocol::Ssl, "", "", "");
    assert!(
        metadata_error(&without).is_some(),
        "no client certificate, no connection"
    );
    assert!(
        b.broker()
            .metrics
            .tls_handshake_failures_total
            .load(Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_quota_throttles_the_greedy_client_only() {
    let pki = Pki::new();
    let b = secure_broker(&pki, |_| {}).await;
    let rate = 256.0 * 1024.0;
    b.broker()
        .quotas
        .alter(&[(
            weir::security::quotas::Entity {
                user: Some(Some("alice".into())),
                client_id: None,
            },
            vec![("producer_byte_rate".into(), Some(rate))],
        )])
        .unwrap();
    let c = secure_config(
        &b,
        &pki,
        SecurityProtocol::SaslPlaintext,
        "PLAIN",
        "alice",
        "alice-pw",
    );
    let p: FutureProducer = c
        .clone()
        .set("linger.ms", "5")
        .set("batch.size", "65536")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let value = vec![7u8; 4096];
    let started = Instant::now();
    let run = Duration::from_secs(4);
    let mut acked = 0usize;
    let mut pending = std::collections::VecDeque::new();
    while started.elapsed() < run {
        pending.push_back(
            p.send_result(FutureRecord::<(), _>::to("greedy").payload(&value))
                .unwrap(),
        );
        if pending.len() >= 256 {
            if let Some(f) = pending.pop_front() {
                f.await.unwrap().unwrap();
                acked += value.len();
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // One second of burst on top of the rate; a loose bound (the benchmark
    // measures the precision).
    let allowed = rate * (elapsed + 1.0) * 1.3;
    assert!(
        (acked as f64) < allowed,
        "acked {acked} bytes in {elapsed:.1}s against a quota of {rate} B/s"
    );
    assert!(
        b.broker()
            .metrics
            .throttled_responses_total
            .load(Ordering::Relaxed)
            > 0
    );
    // Another user is not held back.
    let bob = secure_config(
        &b,
        &pki,
        SecurityProtocol::SaslPlaintext,
        "PLAIN",
        "bob",
        "bob-pw",
    );
    let t = Instant::now();
    produce_one(&bob, "greedy", "bob is not throttled")
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_added_by_the_command_work_in_a_running_broker() {
    let pki = Pki::new();
    let b = secure_broker(&pki, |_| {}).await;
    add_user(&b.broker().config.args.data_dir, "dave", "dave-pw");
    let c = secure_config(
        &b,
        &pki,
        SecurityProtocol::SaslPlaintext,
        "SCRAM-SHA-512",
        "dave",
        "dave-pw",
    );
    produce_one(&c, "dave", "hello").await.unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["users", "list", "--data-dir"])
        .arg(&b.broker().config.args.data_dir)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("dave") && !listed.contains("dave-pw"),
        "{listed}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["users", "delete", "dave", "--data-dir"])
        .arg(&b.broker().config.args.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(metadata_error(&c).is_some(), "a deleted user cannot log in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_handshake_v0_takes_bare_tokens() {
    let pki = Pki::new();
    let b = secure_broker(&pki, |_| {}).await;
    let sasl_addr = listener_addr(&b, SecurityProtocol::SaslPlaintext);
    let handshake = |s: &mut std::net::TcpStream| {
        s.write_all(&frame(
            ApiKey::SaslHandshake,
            0,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        ))
        .unwrap();
        let r = read_response(s).unwrap();
        let hs = SaslHandshakeResponse::decode(&mut Bytes::from(r[4..].to_vec()), 0).unwrap();
        assert_eq!(hs.error_code, 0);
    };
    let token = |s: &mut std::net::TcpStream, t: &[u8]| {
        let mut f = (t.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(t);
        s.write_all(&f).unwrap();
    };
    // The right password: an empty token back, then Kafka requests.
    let mut s = connect(sasl_addr);
    handshake(&mut s);
    token(&mut s, b"\0bob\0bob-pw");
    assert_eq!(read_response(&mut s), Some(Vec::new()));
    s.write_all(&frame(
        ApiKey::Metadata,
        12,
        2,
        &MetadataRequest::default().with_topics(None),
    ))
    .unwrap();
    assert!(
        read_response(&mut s).is_some(),
        "served after bare-token PLAIN"
    );
    // A wrong one: the connection closes, with no error response.
    let mut s = connect(sasl_addr);
    handshake(&mut s);
    token(&mut s, b"\0bob\0nope");
    assert!(closed(&mut s));
}

/// `weir topics` and `weir groups` through every kind of listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_speak_tls_and_sasl() {
    let pki = Pki::new();
    let b = secure_broker(&pki, |_| {}).await;
    let cases = [
        (SecurityProtocol::Ssl, "PLAIN"),
        (SecurityProtocol::SaslPlaintext, "PLAIN"),
        (SecurityProtocol::SaslPlaintext, "SCRAM-SHA-256"),
        (SecurityProtocol::SaslSsl, "SCRAM-SHA-512"),
    ];
    let runs: Vec<(String, SecurityProtocol, &str)> = cases
        .iter()
        .map(|(p, m)| (addr_of(&b, *p), *p, *m))
        .collect();
    let ca = pki.ca.clone();
    tokio::task::spawn_blocking(move || {
        let weir = |addr: &str, p: SecurityProtocol, mech: &str, pw: &str, args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
                .args(args)
                .args([
                    "--bootstrap",
                    addr,
                    "--security-protocol",
                    p.name(),
                    "--sasl-mechanism",
                    mech,
                ])
                .args(["--sasl-username", "alice"])
                .env("WEIR_SASL_PASSWORD", pw)
                .arg("--tls-ca")
                .arg(&ca)
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        for (i, (addr, p, mech)) in runs.iter().enumerate() {
            let topic = format!("tool-sec-{i}");
            let (code, _, err) = weir(
                addr,
                *p,
                mech,
                "alice-pw",
                &["topics", "create", &topic, "--partitions", "2"],
            );
            assert_eq!(code, 0, "{} {mech}: {err}", p.name());
            // describe asks each partition's leader, through the same settings.
            let (code, out, err) = weir(
                addr,
                *p,
                mech,
                "alice-pw",
                &["topics", "describe", &topic, "--json"],
            );
            assert_eq!(code, 0, "{} {mech}: {err}", p.name());
            assert!(out.contains("\"high_watermark\":0"), "{out}");
            let (code, _, err) = weir(addr, *p, mech, "alice-pw", &["groups", "list"]);
            assert_eq!(code, 0, "{} {mech}: {err}", p.name());
            if p.is_sasl() {
                let (code, _, err) = weir(addr, *p, mech, "wrong", &["topics", "list"]);
                assert_eq!(code, 1, "{} {mech}: {err}", p.name());
                assert!(err.contains("SASL_AUTHENTICATION_FAILED"), "{err}");
            }
        }
        // A protocol without the settings it needs is a usage error.
        let (addr, _, _) = &runs[1];
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([
                "topics",
                "list",
                "--bootstrap",
                addr,
                "--security-protocol",
                "SASL_PLAINTEXT",
            ])
            .env_remove("WEIR_SASL_PASSWORD")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    })
    .await
    .unwrap();
}
