//! Memory after a burst of connections: what the connections took comes
//! back to the system once they close (glibc keeps freed heap pages unless
//! the broker trims). Measured on a child broker process, whose resident
//! memory no other test touches.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn open_connections(http: std::net::SocketAddr) -> i64 {
    let (status, _, body) = http_get(http, "/api/status", &[]);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["connections"]
        .as_i64()
        .unwrap()
}

fn wait_for_connections(http: std::net::SocketAddr, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_connections(http) != want {
        assert!(
            Instant::now() < deadline,
            "the broker never counted {want} connections"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn memory_taken_by_a_burst_of_connections_comes_back_after_they_close() {
    const CONNS: usize = 2000;
    let (soft, hard) = {
        let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        (l.current.unwrap_or(u64::MAX), l.maximum.unwrap_or(u64::MAX))
    };
    if soft < CONNS as u64 + 500 {
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some((CONNS as u64 + 500).min(hard)),
                maximum: Some(hard),
            },
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(&dir.path().join("data"), &["--max-connections", "5000"]);
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", b.http_port).parse().unwrap();
    let pid = b.child.id();
    wait_for_connections(http, 0);
    std::thread::sleep(Duration::from_millis(500));
    let before = resident_kib(pid);
    let mut conns = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        conns.push(TcpStream::connect(("127.0.0.1", b.port)).unwrap());
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    wait_for_connections(http, CONNS as i64);
    let peak = resident_kib(pid);
    let grown = peak.saturating_sub(before);
    assert!(
        grown > 4 * 1024,
        "{CONNS} connections took only {grown} KiB: nothing to measure"
    );
    drop(conns);
    wait_for_connections(http, 0);
    // The trim runs within seconds of the closes; without it resident
    // memory stays at the peak.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = resident_kib(pid);
        if now < before + grown / 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "resident memory stayed up after the connections closed: {before} KiB before, {peak} KiB with {CONNS} open, {now} KiB 30 s after they closed"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
