//! Client quotas under load: a greedy librdkafka producer with a
//! `producer_byte_rate` quota pushes as fast as it can while a second
//! tenant produces one small record every 10 ms. Reports the greedy
//! producer's acknowledged rate as a ratio of its quota (after the one-second
//! burst), and the second tenant's produce latency with and without the
//! greedy one running.
//!
//! Run with `cargo bench --bench quotas` (about 25 s). Env:
//! `WEIR_QUOTA_BENCH_SECS` (default 10), `WEIR_QUOTA_BENCH_RATE` bytes/s
//! (default 4 MiB).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use weir::config::Config;
use weir::security::quotas::Entity;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn producer(bootstrap: &str, client_id: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", client_id)
        .set("acks", "1")
        .set("linger.ms", "2")
        .set("batch.size", "262144")
        .set("message.timeout.ms", "120000")
        .set("log_level", "3")
        .create()
        .expect("producer")
}

/// Produces one 100-byte record every 10 ms until `stop`; returns the
/// latencies in microseconds.
async fn calm_tenant(p: FutureProducer, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut lat = Vec::new();
    let value = vec![1u8; 100];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let t = Instant::now();
        if p.send(
            FutureRecord::<(), _>::to("calm").payload(&value),
            Duration::from_secs(10),
        )
        .await
        .is_ok()
        {
            lat.push(t.elapsed().as_micros() as u64);
        }
    }
    lat
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs nothing long.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs = env("WEIR_QUOTA_BENCH_SECS", 10).max(4);
    let rate = env("WEIR_QUOTA_BENCH_RATE", 4 << 20) as f64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_tests(dir.path().join("data"));
        config.args.fsync = weir::config::FsyncPolicy::Never;
        let running = weir::start(config).await.expect("broker");
        running
            .broker
            .quotas
            .alter(&[(
                Entity {
                    user: None,
                    client_id: Some(Some("greedy".into())),
                },
                vec![("producer_byte_rate".into(), Some(rate))],
            )])
            .expect("quota");
        let bootstrap = running.kafka_addr.to_string();

        // The second tenant alone.
        let stop = Arc::new(AtomicBool::new(false));
        let calm = tokio::spawn(calm_tenant(producer(&bootstrap, "calm"), Arc::clone(&stop)));
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        let mut alone = calm.await.expect("calm");

        // Both.
        let stop = Arc::new(AtomicBool::new(false));
        let calm = tokio::spawn(calm_tenant(producer(&bootstrap, "calm"), Arc::clone(&stop)));
        let greedy = producer(&bootstrap, "greedy");
        let acked = Arc::new(AtomicU64::new(0));
        let value = vec![7u8; 16 * 1024];
        let started = Instant::now();
        let mut marks = Vec::new();
        let mut pending = std::collections::VecDeque::new();
        let mut next_mark = Duration::from_secs(1);
        while started.elapsed() < Duration::from_secs(secs) {
            match greedy.send_result(FutureRecord::<(), _>::to("greedy").payload(&value)) {
                Ok(f) => pending.push_back(f),
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
            while pending.len() > 512 {
                if let Some(f) = pending.pop_front() {
                    if let Ok(Ok(_)) = f.await {
                        acked.fetch_add(value.len() as u64, Ordering::Relaxed);
                    }
                }
            }
            if started.elapsed() >= next_mark {
                marks.push((started.elapsed(), acked.load(Ordering::Relaxed)));
                next_mark += Duration::from_secs(1);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut both = calm.await.expect("calm");
        // From the second mark on: the burst is spent.
        let (t0, b0) = marks.first().copied().unwrap_or_default();
        let (t1, b1) = marks.last().copied().unwrap_or_default();
        let measured = (b1 - b0) as f64 / (t1 - t0).as_secs_f64();
        let throttled = running
            .broker
            .metrics
            .throttled_responses_total
            .load(Ordering::Relaxed);
        println!("quota: producer_byte_rate {:.0} B/s on client-id greedy, {secs} s", rate);
        println!(
            "greedy producer: {:.0} B/s acknowledged after the burst = {:.3} x its quota ({throttled} throttled responses)",
            measured,
            measured / rate
        );
        println!(
            "second tenant produce latency alone:    p50 {:.2} ms  p99 {:.2} ms  ({} records)",
            pct(&mut alone, 0.5),
            pct(&mut alone, 0.99),
            alone.len()
        );
        println!(
            "second tenant produce latency with it:  p50 {:.2} ms  p99 {:.2} ms  ({} records)",
            pct(&mut both, 0.5),
            pct(&mut both, 0.99),
            both.len()
        );
        drop(pending);
        running.shutdown().await;
    });
}
