//! Test harness: a broker in-process on port 0, or as a child process that a
//! test can kill -9; real clients (librdkafka through the rdkafka crate).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use tempfile::TempDir;
use weir::config::Config;

/// A broker running inside the test process.
pub struct TestBroker {
    pub running: Option<weir::Running>,
    pub dir: TempDir,
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with a tweak applied to the test configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        if let Ok(filter) = std::env::var("WEIR_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path().join("data"));
        tweak(&mut config);
        let running = weir::start(config).await.unwrap();
        Self {
            running: Some(running),
            dir,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.running.as_ref().unwrap().kafka_addr.to_string()
    }

    pub fn kafka_addr(&self) -> SocketAddr {
        self.running.as_ref().unwrap().kafka_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.running.as_ref().unwrap().http_addr
    }

    pub fn broker(&self) -> &std::sync::Arc<weir::broker::Broker> {
        &self.running.as_ref().unwrap().broker
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A broker as a child process of the `weir` binary.
pub struct ChildBroker {
    pub child: Child,
    pub port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
}

impl ChildBroker {
    /// Starts on free ports; another test may take a port between our probe
    /// and the child's bind, so a child that exits at once is retried.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        for _ in 0..5 {
            if let Some(b) = Self::try_start(data_dir, free_port(), free_port(), extra) {
                return b;
            }
        }
        panic!("weir child did not start after 5 attempts");
    }

    pub fn start_on(data_dir: &Path, port: u16, http_port: u16, extra: &[&str]) -> Self {
        Self::try_start(data_dir, port, http_port, extra).expect("weir child did not start")
    }

    pub fn try_start(data_dir: &Path, port: u16, http_port: u16, extra: &[&str]) -> Option<Self> {
        Self::try_start_env(data_dir, port, http_port, extra, &[])
    }

    /// [`ChildBroker::start`] with environment variables set for the child.
    pub fn start_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        for _ in 0..5 {
            if let Some(b) = Self::try_start_env(data_dir, free_port(), free_port(), extra, env) {
                return b;
            }
        }
        panic!("weir child did not start after 5 attempts");
    }

    pub fn try_start_env(
        data_dir: &Path,
        port: u16,
        http_port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Option<Self> {
        let addr = format!("127.0.0.1:{port}");
        // WEIR_TEST_BIN runs another build of the broker (a long soak can
        // then go on while this tree is rebuilt).
        let bin =
            std::env::var("WEIR_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_weir").into());
        // Flags that name the listeners themselves replace the default one.
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", &addr, "--advertised-listener", &addr]
        };
        let child = Command::new(bin)
            .args(listen)
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log-format", "text", "--log-level"])
            .arg(std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weir");
        let mut b = Self {
            child,
            port,
            http_port,
            data_dir: data_dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&addr).is_err() {
            if matches!(b.child.try_wait(), Ok(Some(_))) {
                return None;
            }
            assert!(Instant::now() < deadline, "weir child did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Both listeners are bound before the Kafka port accepts.
        Some(b)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weir users add NAME --password PASSWORD` on `data_dir`, which must
/// succeed.
pub fn add_user(data_dir: &Path, name: &str, password: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["users", "add", name, "--password", password, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "3");
    c
}

pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = client_config(bootstrap);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().unwrap()
}

pub fn consumer(bootstrap: &str) -> BaseConsumer {
    client_config(bootstrap)
        .set("group.id", "weir-test-unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap()
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client_config(bootstrap).create().unwrap()
}

pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin = admin(bootstrap);
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = admin
        .create_topics(
            [&t],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in res {
        r.unwrap();
    }
}

/// Reads from every partition of `topic` with assign() until `expected`
/// records per partition have arrived; returns (partition, offset, key, value).
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected_total: usize,
    timeout: Duration,
) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let c = consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::with_capacity(expected_total);
    let deadline = Instant::now() + timeout;
    while out.len() < expected_total && Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.partition(),
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

/// Minimal HTTP GET against the admin API: (status, headers, body).
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    split_http_response(&resp)
}

/// Minimal HTTP POST with a JSON body: (status, body).
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (status, _, body) = split_http_response(&resp);
    (status, body)
}

/// An HTTP/1.1 response's status, head and body.
pub fn split_http_response(resp: &str) -> (u16, String, String) {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// One Kafka request/response over a fresh raw connection.
pub fn raw_request<Req, Resp>(
    addr: SocketAddr,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    req: &Req,
) -> Resp
where
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use std::io::{Read, Write};
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&(buf.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&buf).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let mut b = bytes::Bytes::from(body);
    ResponseHeader::decode(&mut b, key.response_header_version(version)).unwrap();
    Resp::decode(&mut b, version).unwrap()
}
