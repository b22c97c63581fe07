//! The admin HTTP API with a real HTTP exchange: endpoints, Prometheus
//! counters moving with real produced records, security headers, CORS, the
//! rate limit, and health while draining.

use std::time::Duration;

use rdkafka::producer::FutureRecord;
use weir::broker::Phase;

use crate::common::*;

/// The value of a Prometheus sample line `name{labels} value`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_and_counters_move_by_the_records_produced() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    let http = b.http_addr();
    let (status, _, body) = http_get(http, "/api/health", &[]);
    assert_eq!(status, 200, "{body}");
    let p = producer(&bs, &[("linger.ms", "50")]);
    let mut futs = Vec::new();
    for i in 0..250 {
        let v = format!("{i}");
        futs.push(
            p.send_result(FutureRecord::to("counted").key(&v).payload(&v))
                .ok()
                .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
    let bs2 = bs.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_all(&bs2, "counted", 1, 250, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(read.len(), 250);

    let (status, head, metrics) = http_get(http, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/plain; version=0.0.4"));
    assert_eq!(
        sample(&metrics, "weir_topic_records_in_total{topic=\"counted\"}"),
        Some(250.0)
    );
    assert_eq!(
        sample(&metrics, "weir_topic_records_out_total{topic=\"counted\"}"),
        Some(250.0)
    );
    assert!(sample(&metrics, "weir_requests_total{api=\"Produce\"}").unwrap() >= 1.0);
    assert!(metrics.contains("weir_request_duration_seconds_bucket{api=\"Produce\",le=\"+Inf\"}"));
    assert_eq!(
        sample(
            &metrics,
            "weir_partition_high_watermark{topic=\"counted\",partition=\"0\"}"
        ),
        Some(250.0)
    );
    // Every sample line parses as `series value`.
    for line in metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
    }
    let (_, _, same) = http_get(http, "/api/metrics", &[]);
    assert!(same.contains("weir_topic_records_in_total{topic=\"counted\"} 250"));

    let (status, _, status_body) = http_get(http, "/api/status", &[]);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&status_body).unwrap();
    assert_eq!(v["topics"], 1);
    assert_eq!(v["records_in_total"], 250);
    let (status, _, topics) = http_get(http, "/api/topics", &[]);
    assert_eq!(status, 200);
    assert!(topics.contains("\"counted\""));
    let (status, _, groups) = http_get(http, "/api/groups", &[]);
    assert_eq!(status, 200, "{groups}");
    let (status, head, page) = http_get(http, "/", &[]);
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"/dashboard.js\">"));
    assert!(head
        .to_ascii_lowercase()
        .contains("content-security-policy: default-src 'none'"));
    let (status, _, js) = http_get(http, "/dashboard.js", &[]);
    assert_eq!(status, 200);
    assert!(js.contains("/api/status"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_and_cors_for_allowed_origins_only() {
    let b =
        TestBroker::start_with(|c| c.args.allowed_origins = vec!["https://ops.example.com".into()])
            .await;
    let http = b.http_addr();
    let (_, head, _) = http_get(
        http,
        "/api/status",
        &[("Origin", "https://ops.example.com")],
    );
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-content-type-options: nosniff"));
    assert!(head.contains("x-frame-options: deny"));
    assert!(head.contains("content-security-policy:"));
    assert!(head.contains("referrer-policy: no-referrer"));
    assert!(head.contains("access-control-allow-origin: https://ops.example.com"));
    let (_, head, _) = http_get(
        http,
        "/api/status",
        &[("Origin", "https://evil.example.com")],
    );
    assert!(!head
        .to_ascii_lowercase()
        .contains("access-control-allow-origin"));

    let preflight = |origin: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(http).unwrap();
        let req = format!(
            "OPTIONS /api/dlq/x/redrive HTTP/1.1\r\nHost: {http}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp.to_ascii_lowercase()
    };
    let ok = preflight("https://ops.example.com");
    assert!(ok.starts_with("http/1.1 204"), "{ok}");
    assert!(ok.contains("access-control-allow-methods:"));
    assert!(ok.contains("access-control-allow-origin: https://ops.example.com"));
    let refused = preflight("https://evil.example.com");
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );
    assert!(!refused.contains("access-control-allow-origin: *"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_rate_limit_gets_429_but_health_never_does() {
    let b = TestBroker::start_with(|c| c.args.http_rate_limit = 5).await;
    let http = b.http_addr();
    let statuses: Vec<(u16, String)> = (0..15)
        .map(|_| {
            let (s, head, _) = http_get(http, "/api/status", &[]);
            (s, head)
        })
        .collect();
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(
        !limited.is_empty(),
        "a burst of 15 at 5/s (burst 10) is limited"
    );
    assert!(limited[0].1.to_ascii_lowercase().contains("retry-after:"));
    assert!(
        statuses.iter().take(10).all(|(s, _)| *s == 200),
        "the burst allowance is 2x the rate"
    );
    for _ in 0..30 {
        assert_eq!(http_get(http, "/api/health", &[]).0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_draining() {
    let b = TestBroker::start().await;
    b.broker().set_phase(Phase::Draining);
    let (status, _, body) = http_get(b.http_addr(), "/api/health", &[]);
    assert_eq!(status, 503);
    assert!(body.contains("draining"));
    b.broker().set_phase(Phase::Serving);
}
