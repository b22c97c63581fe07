//! The admin HTTP API with a real HTTP exchange: endpoints, Prometheus
//! counters moving with real produced records, security headers, CORS, the
//! rate limit, health while draining, and cross-site requests (foreign
//! origins, DNS rebinding, form posts) refused.

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

/// One raw HTTP/1.1 request (`head` without the final blank line, `Host`
/// included by the caller): (status, body).
fn raw_http(addr: std::net::SocketAddr, head: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "{head}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (status, _, body) = split_http_response(&resp);
    (status, body)
}

/// A topic with retries whose DLQ holds one record; returns the end offset
/// of its retry topic (0 until something is redriven).
async fn topic_with_a_dead_letter(b: &TestBroker, topic: &str) -> impl Fn() -> i64 {
    let bs = b.bootstrap();
    create_topic(&bs, topic, 1, &[("retry.max.attempts", "1")]).await;
    let p = producer(&bs, &[]);
    p.send(
        FutureRecord::to(&format!("{topic}.dlq"))
            .key("k")
            .payload("dead"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let broker = std::sync::Arc::clone(b.broker());
    let retry = format!("{topic}.retry");
    move || {
        broker
            .topics
            .get(&retry)
            .and_then(|t| t.partition(0).map(|p| p.end_offset()))
            .unwrap_or(-1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_cannot_redrive_a_dlq_but_the_cli_shape_can() {
    let b = TestBroker::start().await;
    let http = b.http_addr();
    let redriven = topic_with_a_dead_letter(&b, "xs").await;
    assert_eq!(redriven(), 0);
    let post = format!("POST /api/dlq/xs/redrive HTTP/1.1\r\nHost: {http}");
    let refused: [(&str, String, &str, u16); 7] = [
        (
            "a page of another origin",
            format!("{post}\r\nOrigin: https://evil.com\r\nContent-Type: application/json"),
            "{}",
            403,
        ),
        (
            "a sandboxed or file:// page",
            format!("{post}\r\nOrigin: null\r\nContent-Type: application/json"),
            "{}",
            403,
        ),
        (
            "DNS rebinding (foreign Host, same origin as far as the browser knows)",
            format!(
                "POST /api/dlq/xs/redrive HTTP/1.1\r\nHost: evil.com:{}\r\nOrigin: http://evil.com:{}\r\nContent-Type: application/json",
                http.port(),
                http.port()
            ),
            "{}",
            403,
        ),
        (
            "a form post",
            format!("{post}\r\nContent-Type: application/x-www-form-urlencoded"),
            "to=retry",
            415,
        ),
        (
            "a no-cors fetch with a text body",
            format!("{post}\r\nContent-Type: text/plain;charset=UTF-8"),
            "{}",
            415,
        ),
        (
            "a multipart form",
            format!("{post}\r\nContent-Type: multipart/form-data; boundary=x"),
            "--x--",
            415,
        ),
        ("a bodiless POST", post.clone(), "", 415),
    ];
    for (what, head, body, want) in &refused {
        let (status, resp) = raw_http(http, head, body);
        assert_eq!(status, *want, "{what}: {resp}");
        assert!(resp.contains("error"), "{what}: {resp}");
    }
    assert_eq!(redriven(), 0, "no refused request moved a record");

    // A foreign Host cannot read either (rebinding reads data too); health
    // answers any name.
    let foreign = |path: &str| {
        raw_http(
            http,
            &format!("GET {path} HTTP/1.1\r\nHost: rebind.evil.com"),
            "",
        )
        .0
    };
    assert_eq!(foreign("/api/status"), 403);
    assert_eq!(foreign("/api/dlq/xs"), 403);
    assert_eq!(foreign("/metrics"), 403);
    assert_eq!(foreign("/api/health"), 200);
    for host in ["localhost", "127.0.0.1", "[::1]:1"] {
        let (status, _) = raw_http(
            http,
            &format!("GET /api/status HTTP/1.1\r\nHost: {host}"),
            "",
        );
        assert_eq!(status, 200, "Host: {host}");
    }

    // What `weir dlq redrive` sends: JSON, loopback Host, no Origin.
    let (status, body) = raw_http(
        http,
        &format!("{post}\r\nContent-Type: application/json"),
        "{\"to\":\"retry\"}",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"redriven\":1"), "{body}");
    assert_eq!(redriven(), 1);
    // An empty body with the JSON type means the defaults; a bad one is 400.
    let json_post = format!("{post}\r\nContent-Type: application/json");
    let (status, body) = raw_http(http, &json_post, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(raw_http(http, &json_post, "{\"to\":\"nowhere\"}").0, 400);
    assert_eq!(redriven(), 2);
    // A page of the broker's own origin (the dashboard) may post JSON.
    let (status, body) = raw_http(
        http,
        &format!(
            "{post}\r\nOrigin: http://{http}\r\nContent-Type: application/json; charset=utf-8"
        ),
        "{}",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(redriven(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_authorizes_but_not_for_a_foreign_origin() {
    let b = TestBroker::start_with(|c| {
        c.args.admin_token = Some("s3cret".parse().unwrap());
        c.args.allowed_origins = vec!["https://ops.example.com".into()];
    })
    .await;
    let http = b.http_addr();
    let redriven = topic_with_a_dead_letter(&b, "tok").await;
    let post = format!(
        "POST /api/dlq/tok/redrive HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json"
    );
    let (status, _) = raw_http(http, &post, "{}");
    assert_eq!(status, 401, "no token");
    let with_token = format!("{post}\r\nAuthorization: Bearer s3cret");
    let (status, _) = raw_http(
        http,
        &format!("{with_token}\r\nOrigin: https://evil.com"),
        "{}",
    );
    assert_eq!(
        status, 403,
        "the token does not open the API to other origins"
    );
    let (status, _) = raw_http(
        http,
        &with_token.replace("application/json", "text/plain"),
        "{}",
    );
    assert_eq!(status, 415);
    assert_eq!(redriven(), 0);
    let (status, body) = raw_http(http, &with_token, "{}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(redriven(), 1);
    // An allowed origin with the token, as its page would send after the
    // preflight.
    let (status, body) = raw_http(
        http,
        &format!("{with_token}\r\nOrigin: https://ops.example.com"),
        "{}",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(redriven(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_and_advertised_host_names_are_answered() {
    let b = TestBroker::start_with(|c| {
        c.args.http_allowed_hosts = vec!["weir".into()];
        c.listeners[0].advertised_host = "broker.example.com".into();
    })
    .await;
    let http = b.http_addr();
    for (host, want) in [
        ("weir:9644", 200),
        ("WEIR", 200),
        ("broker.example.com:9644", 200),
        ("weir.evil.com", 403),
        ("broker.example.com.evil.com", 403),
    ] {
        let (status, body) = raw_http(
            http,
            &format!("GET /api/status HTTP/1.1\r\nHost: {host}"),
            "",
        );
        assert_eq!(status, want, "Host: {host}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_still_lists_and_redrives() {
    let b = TestBroker::start().await;
    let http = b.http_addr().to_string();
    let redriven = topic_with_a_dead_letter(&b, "cli").await;
    let weir = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .args(["--http-listen", &http])
            .env_remove("WEIR_ADMIN_TOKEN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = tokio::task::block_in_place(|| weir(&["dlq", "list", "cli"]));
    assert!(ok && out.contains("dead"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| weir(&["dlq", "redrive", "cli"]));
    assert!(ok && out.contains("\"redriven\":1"), "{out}");
    assert_eq!(redriven(), 1);
}
