//! The performance targets, measured with librdkafka clients against the
//! broker binary in a child process, each as a ratio against a limit of this
//! machine measured in the same run:
//!
//! - produce, 1 KiB records, acks=1, one partition, one producer: MB/s over
//!   single-stream loopback TCP bandwidth and over what the kernel takes
//!   into the page cache (1 MiB `pwrite`s to a fresh file); broker CPU
//!   seconds per GiB ingested over the cost of copying plus CRC-32C of a GiB;
//! - acks=all with `--fsync acks-all`, four producers, over acks=1 with four;
//! - consume from the page cache over loopback bandwidth, with librdkafka and
//!   with `weir bench consume` (a client that only walks batch headers);
//! - end-to-end p50/p99 at 10,000 records/s of 1 KiB, acks=1 and acks=all
//!   (beside the machine's fdatasync p50/p99);
//! - idle RSS, RSS with 1,000 partitions holding data, start-up time with
//!   1,000 partitions after a clean stop.
//!
//! For the throughput phases it also prints the busiest client thread's
//! share of a core and how busy all cores were: clients and broker share
//! the machine. Each phase deletes its topic and waits for `sync(1)`, so the
//! next starts from a quiet disk.
//!
//! Run with `cargo bench --bench targets` (about two minutes).
//! `WEIR_TARGETS_SECS` sets each throughput phase's length (default 5);
//! `WEIR_TARGETS_LOG` the brokers' log level (default warn).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

fn secs() -> Duration {
    Duration::from_secs(
        std::env::var("WEIR_TARGETS_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Single-stream loopback TCP bandwidth, bytes/s (1 MiB writes, a reader
/// that discards).
fn loopback_bandwidth() -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let chunk = vec![7u8; 1 << 20];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        s.write_all(&chunk).expect("write");
    }
    drop(s);
    let n = reader.join().expect("reader");
    n as f64 / t.elapsed().as_secs_f64()
}

/// CPU seconds to copy one GiB and CRC-32C it (the work a produce cannot
/// avoid).
fn copy_and_crc_secs_per_gib() -> f64 {
    let src = vec![5u8; 64 << 20];
    let mut dst = vec![0u8; 64 << 20];
    let t = Instant::now();
    let mut crc = 0u32;
    for _ in 0..16 {
        dst.copy_from_slice(&src);
        crc = crc32c::crc32c_append(crc, &dst);
    }
    std::hint::black_box(crc);
    t.elapsed().as_secs_f64()
}

/// Bytes per second appended to a fresh file in `dir` with 1 MiB `pwrite`s
/// (page cache only, no fsync): what the kernel can take into the page
/// cache, the ceiling of any broker that writes through it. The file is
/// deleted after.
fn page_cache_write_bandwidth(dir: &std::path::Path) -> f64 {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("page-cache-probe");
    let f = std::fs::File::create(&path).expect("probe file");
    let chunk = vec![9u8; 1 << 20];
    let t = Instant::now();
    let mut at = 0u64;
    while at < (1 << 30) {
        f.write_all_at(&chunk, at).expect("write");
        at += chunk.len() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    at as f64 / secs
}

/// fdatasync latency of 1 KiB appends to a fresh file in `dir` (at most 1,000
/// of them, or 3 s): the floor under any acks=all acknowledgement. Returns
/// (p50, p99) in ms.
fn fdatasync_latency(dir: &std::path::Path) -> (f64, f64) {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("fdatasync-probe");
    let f = std::fs::File::create(&path).expect("probe file");
    let chunk = vec![3u8; 1024];
    let mut lat = Vec::new();
    let start = Instant::now();
    while lat.len() < 1000 && start.elapsed() < Duration::from_secs(3) {
        f.write_all_at(&chunk, lat.len() as u64 * 1024)
            .expect("write");
        let t = Instant::now();
        f.sync_data().expect("fdatasync");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    (pct(0.5), pct(0.99))
}

/// User plus system CPU seconds of one `/proc/.../stat` line.
fn stat_cpu_secs(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based); `rest` starts at 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds and name of every thread of this process: the clients'
/// threads (librdkafka's and the benchmark's own).
fn client_threads() -> HashMap<String, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        out.insert(
            t.file_name().to_string_lossy().into_owned(),
            (name.trim().to_string(), stat_cpu_secs(&stat)),
        );
    }
    out
}

/// The client thread that used the most CPU since `before`, and the share
/// of one core it used over `wall`: near 1.0, the client is the limit.
fn busiest_client_thread(before: &HashMap<String, (String, f64)>, wall: Duration) -> (String, f64) {
    client_threads()
        .into_iter()
        .map(|(tid, (name, cpu))| {
            let was = before.get(&tid).map_or(0.0, |(_, c)| *c);
            (name, (cpu - was) / wall.as_secs_f64())
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_default()
}

/// Busy and total CPU ticks of the whole machine so far (`/proc/stat`).
fn machine_ticks() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = f.iter().sum();
    // idle and iowait
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// Share of all cores busy since `before` (clients and broker together).
fn machine_busy(before: (f64, f64)) -> f64 {
    let (busy, total) = machine_ticks();
    let dt = total - before.1;
    if dt > 0.0 {
        (busy - before.0) / dt
    } else {
        f64::NAN
    }
}

struct Broker {
    child: Child,
    port: u16,
    http: u16,
    dir: std::path::PathBuf,
}

impl Broker {
    fn start(dir: &std::path::Path, port: u16) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let http = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["--listen", &addr, "--advertised-listener", &addr])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .arg("--data-dir")
            .arg(dir)
            .args(["--log-format", "text", "--log-level"])
            .arg(std::env::var("WEIR_TARGETS_LOG").unwrap_or_else(|_| "warn".into()))
            .args(["--group-initial-rebalance-delay-ms", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weir");
        let b = Self {
            child,
            port,
            http,
            dir: dir.to_path_buf(),
        };
        // Serving: the health endpoint answers 200 once the log is open
        // (the Kafka port listens earlier, while recovery runs).
        let t = Instant::now();
        while !b.healthy() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "broker did not start"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        b
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.http)) else {
            return false;
        };
        let _ = s.write_all(b"GET /api/health HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, and its anonymous part (not file pages of mapped
    /// segments), MiB.
    fn rss_mib(&self) -> (f64, f64) {
        (self.status_mib("VmRSS:"), self.status_mib("RssAnon:"))
    }

    fn status_mib(&self, field: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    }

    /// User plus system CPU seconds so far.
    fn cpu_secs(&self) -> f64 {
        stat_cpu_secs(
            &std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default(),
        )
    }

    /// SIGTERM, wait for the exit.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "3");
    c
}

/// Runs `f` to its end on a runtime of its own (the admin client is async).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().expect("admin");
    block_on(async {
        let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let r = admin
            .create_topics([&t], &AdminOptions::new())
            .await
            .expect("create topics");
        for x in r {
            x.expect("topic created");
        }
    });
}

/// Deletes `name`, so its files leave the page cache (dirty pages of a
/// deleted file are never written back), then waits for the disk to finish
/// writing back what is left: each phase starts from the same quiet disk
/// instead of competing with the last one's write-back.
fn settle(bootstrap: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().expect("admin");
    block_on(async {
        let r = admin
            .delete_topics(&[name], &AdminOptions::new())
            .await
            .expect("delete topics");
        for x in r {
            x.expect("topic deleted");
        }
    });
    quiet_disk();
}

/// `sync(1)`, then a moment for the broker's own background work.
fn quiet_disk() {
    let _ = Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(500));
}

/// `producers` threads produce 1 KiB records to `topic` for `run`; returns
/// acknowledged bytes per second.
fn produce(bootstrap: &str, topic: &str, acks: &str, producers: usize, run: Duration) -> f64 {
    produce_loaded(bootstrap, topic, acks, producers, run).0
}

/// Where the CPU went during a phase.
struct Load {
    /// The client thread that used the most, and its share of one core.
    busiest: (String, f64),
    /// Share of all cores busy.
    machine: f64,
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "busiest client thread ({}) {:.2} of a core; all cores {:.0}% busy",
            self.busiest.0,
            self.busiest.1,
            self.machine * 100.0
        )
    }
}

/// [`produce`], and where the CPU went.
fn produce_loaded(
    bootstrap: &str,
    topic: &str,
    acks: &str,
    producers: usize,
    run: Duration,
) -> (f64, Load) {
    let before = client_threads();
    let ticks = machine_ticks();
    let acked = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let acked = Arc::clone(&acked);
            let bootstrap = bootstrap.to_string();
            let topic = topic.to_string();
            let acks = acks.to_string();
            std::thread::spawn(move || {
                let p: BaseProducer = client(&bootstrap)
                    .set("acks", &acks)
                    .set("linger.ms", "5")
                    .set("batch.size", "1000000")
                    .set("queue.buffering.max.kbytes", "262144")
                    .set("enable.idempotence", "false")
                    .create()
                    .expect("producer");
                let value = vec![b'x'; 1024];
                let t = Instant::now();
                let mut sent = 0u64;
                while t.elapsed() < run {
                    match p.send(BaseRecord::<(), _>::to(&topic).payload(&value)) {
                        Ok(()) => sent += 1,
                        Err(_) => {
                            p.poll(Duration::from_millis(1));
                        }
                    }
                    if sent.is_multiple_of(1024) {
                        p.poll(Duration::ZERO);
                    }
                }
                // What is still queued does not count: stop the clock here
                // and count what the broker acknowledged by now.
                let in_queue = p.in_flight_count() as u64;
                acked.fetch_add((sent.saturating_sub(in_queue)) * 1024, Ordering::Relaxed);
                let _ = p.flush(Duration::from_secs(30));
            })
        })
        .collect();
    std::thread::sleep(run);
    let load = Load {
        busiest: busiest_client_thread(&before, run),
        machine: machine_busy(ticks),
    };
    for t in threads {
        t.join().expect("producer thread");
    }
    (
        acked.load(Ordering::Relaxed) as f64 / run.as_secs_f64(),
        load,
    )
}

/// Reads `topic` partition 0 from the start until `bytes` of values came;
/// returns bytes per second and where the CPU went.
fn consume(bootstrap: &str, topic: &str, bytes: u64) -> (f64, Load) {
    let before = client_threads();
    let ticks = machine_ticks();
    let c: BaseConsumer = client(bootstrap)
        .set("group.id", "targets")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut got = 0u64;
    let t = Instant::now();
    while got < bytes && t.elapsed() < Duration::from_secs(120) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            got += m.payload().map_or(0, |p| p.len() as u64);
        }
    }
    let wall = t.elapsed();
    let load = Load {
        busiest: busiest_client_thread(&before, wall),
        machine: machine_busy(ticks),
    };
    (got as f64 / wall.as_secs_f64(), load)
}

/// Reads `records` of `topic` from the start with `weir bench consume`, a
/// client that only walks batch headers: what the broker's fetch path
/// serves when the client is not the limit. Bytes per second.
fn lean_consume(bootstrap: &str, topic: &str, records: u64) -> f64 {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "consume", "--json", "--bootstrap", bootstrap])
        .args(["--topic", topic, "--duration-secs", "60"])
        .args(["--records", &records.to_string()])
        .output()
        .expect("weir bench");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bytes = v["consumed"]["bytes"].as_f64().unwrap_or(f64::NAN);
    let secs = v["seconds"].as_f64().unwrap_or(f64::NAN);
    bytes / secs
}

/// Produces 1 KiB records at `rate`/s for `run` with the send time in the
/// value; a consumer measures arrival minus send. Returns (p50, p99) ms.
fn end_to_end(bootstrap: &str, topic: &str, acks: &str, rate: u64, run: Duration) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let consumer = {
        let bootstrap = bootstrap.to_string();
        let topic = topic.to_string();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let c: BaseConsumer = client(&bootstrap)
                .set("group.id", "targets-e2e")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "100")
                .set("fetch.min.bytes", "1")
                .create()
                .expect("consumer");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::End)
                .expect("tpl");
            c.assign(&tpl).expect("assign");
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                    if let Some(p) = m.payload() {
                        let mut ns = [0u8; 8];
                        ns.copy_from_slice(&p[..8]);
                        let sent = u64::from_le_bytes(ns);
                        let now = epoch.elapsed().as_nanos() as u64;
                        lat.push(now.saturating_sub(sent) as f64 / 1e6);
                    }
                }
            }
            lat
        })
    };
    // Let the consumer reach the end first.
    std::thread::sleep(Duration::from_secs(2));
    let p: BaseProducer = client(bootstrap)
        .set("acks", acks)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let mut value = vec![b'x'; 1024];
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < run {
        let now = Instant::now();
        if now < next {
            p.poll(next - now);
            continue;
        }
        value[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
        let _ = p.send(BaseRecord::<(), _>::to(topic).payload(&value));
        next += interval;
    }
    let _ = p.flush(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut lat = consumer.join().expect("consumer");
    // The first second warms connections up.
    let skip = (rate as usize).min(lat.len());
    let mut lat = lat.split_off(skip);
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (pct(0.5), pct(0.99))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let run = secs();
    let loopback = loopback_bandwidth();
    let copy_crc = copy_and_crc_secs_per_gib();
    let tmp = tempfile::tempdir().expect("tempdir");
    let page_cache = page_cache_write_bandwidth(tmp.path());
    let (sync50, sync99) = fdatasync_latency(tmp.path());
    println!(
        "machine: loopback TCP {:.0} MiB/s; copy + CRC-32C {:.3} s/GiB; page-cache writes {:.0} MiB/s; fdatasync p50 {sync50:.2} ms, p99 {sync99:.2} ms",
        loopback / MIB,
        copy_crc,
        page_cache / MIB
    );

    let dir = tmp.path().join("data");
    let port = free_port();
    let mut b = Broker::start(&dir, port);
    std::thread::sleep(Duration::from_millis(500));
    let (idle_rss, idle_anon) = b.rss_mib();
    let bs = b.bootstrap();

    create_topic(&bs, "p1", 1);
    quiet_disk();
    let cpu0 = b.cpu_secs();
    let t = Instant::now();
    let (acks1, producer_load) = produce_loaded(&bs, "p1", "1", 1, run);
    let cpu = b.cpu_secs() - cpu0;
    let ingested = acks1 * t.elapsed().as_secs_f64();
    let cpu_per_gib = if ingested > 0.0 {
        cpu / (ingested / GIB)
    } else {
        f64::NAN
    };
    // From the page cache: read it back while it is there.
    let (consumed, consumer_load) = consume(&bs, "p1", (acks1 * run.as_secs_f64() * 0.9) as u64);
    let lean = lean_consume(&bs, "p1", (acks1 * run.as_secs_f64() * 0.9 / 1024.0) as u64);
    settle(&bs, "p1");

    create_topic(&bs, "p4a1", 1);
    let acks1_x4 = produce(&bs, "p4a1", "1", 4, run);
    settle(&bs, "p4a1");
    create_topic(&bs, "p4all", 1);
    let acksall_x4 = produce(&bs, "p4all", "all", 4, run);
    settle(&bs, "p4all");

    create_topic(&bs, "e2e1", 1);
    let (e1p50, e1p99) = end_to_end(&bs, "e2e1", "1", 10_000, run + Duration::from_secs(1));
    settle(&bs, "e2e1");
    create_topic(&bs, "e2eall", 1);
    let (eap50, eap99) = end_to_end(&bs, "e2eall", "all", 10_000, run + Duration::from_secs(1));

    b.stop();
    drop(b);

    // 1,000 partitions, each holding a record, in a broker of their own.
    let dir = tmp.path().join("wide");
    let mut b = Broker::start(&dir, port);
    let bs = b.bootstrap();
    create_topic(&bs, "wide", 1000);
    {
        let p: BaseProducer = client(&bs)
            .set("linger.ms", "20")
            .create()
            .expect("producer");
        let value = vec![b'w'; 1024];
        for part in 0..1000 {
            let mut r = BaseRecord::<(), _>::to("wide")
                .payload(&value)
                .partition(part);
            loop {
                match p.send(r) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        r = back;
                        p.poll(Duration::from_millis(5));
                    }
                }
            }
        }
        let _ = p.flush(Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (wide_rss, wide_anon) = b.rss_mib();
    b.stop();
    quiet_disk();
    let t = Instant::now();
    let b2 = Broker::start(&b.dir, port);
    let startup = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (restarted_rss, _) = b2.rss_mib();
    drop(b2);

    println!();
    println!("| target | measured | ratio | goal |");
    println!("|---|---|---|---|");
    println!(
        "| produce 1 KiB, acks=1, 1 partition, 1 producer | {:.0} MiB/s | {:.2} of loopback; {:.2} of page-cache writes; {} | >= 0.5 |",
        acks1 / MIB,
        acks1 / loopback,
        acks1 / page_cache,
        producer_load
    );
    println!(
        "| broker CPU per GiB ingested (that run) | {:.2} s | {:.1}x copy + CRC-32C | <= 3x |",
        cpu_per_gib,
        cpu_per_gib / copy_crc
    );
    println!(
        "| acks=all (--fsync acks-all), 4 producers | {:.0} MiB/s | {:.2} of acks=1 with 4 ({:.0} MiB/s) | >= 0.8 |",
        acksall_x4 / MIB,
        acksall_x4 / acks1_x4,
        acks1_x4 / MIB
    );
    println!(
        "| consume from the page cache | {:.0} MiB/s | {:.2} of loopback; {} | >= 0.7 |",
        consumed / MIB,
        consumed / loopback,
        consumer_load
    );
    println!(
        "| consume from the page cache, `weir bench consume` (walks batch headers only) | {:.0} MiB/s | {:.2} of loopback | >= 0.7 |",
        lean / MIB,
        lean / loopback
    );
    println!("| end-to-end at 10,000 records/s, acks=1 | p50 {e1p50:.2} ms, p99 {e1p99:.2} ms | | p99 < 2 ms |");
    println!("| end-to-end at 10,000 records/s, acks=all + fsync | p50 {eap50:.2} ms, p99 {eap99:.2} ms | the machine's fdatasync: p50 {sync50:.2} ms, p99 {sync99:.2} ms | p99 < 5 ms |");
    println!("| idle RSS | {idle_rss:.1} MiB ({idle_anon:.1} MiB anonymous) | | < 20 MB |");
    println!("| RSS with 1,000 partitions holding data | {wide_rss:.1} MiB ({wide_anon:.1} MiB anonymous); after a restart {restarted_rss:.1} MiB | | < 200 MB |");
    println!(
        "| start-up with 1,000 partitions after a clean stop (to serving) | {} ms | | < 1 s |",
        startup.as_millis()
    );
}
