//! Request guards of the admin API: per-client-IP rate limiting and CORS.
//!
//! The rate limit is a token bucket per client IP (`--http-rate-limit`
//! requests a second, a burst of twice that); `/api/health` is exempt so that
//! orchestrators never see a 429. CORS answers only origins listed in
//! `--allowed-origins`: their preflights get the allowed methods and headers,
//! their responses name them in `Access-Control-Allow-Origin`; any other
//! origin gets nothing reflected, and never `*`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

/// Buckets kept before idle ones are swept.
const MAX_TRACKED_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Shared guard state.
#[derive(Debug)]
pub struct Guard {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    allowed_origins: Vec<String>,
}

impl Guard {
    pub fn new(rate_per_s: u32, allowed_origins: &[String]) -> Self {
        Self {
            rate: f64::from(rate_per_s.max(1)),
            burst: f64::from(rate_per_s.max(1)) * 2.0,
            buckets: Mutex::new(HashMap::new()),
            allowed_origins: allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    /// Takes a token for `ip`; on refusal, the wait until the next one.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_TRACKED_CLIENTS {
            // Full buckets are indistinguishable from new ones: drop them.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    fn allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == origin)
    }
}

/// Rate limit, then CORS, then the handler.
pub async fn guard(
    State(g): State<Arc<Guard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path() != "/api/health" {
        if let Err(wait) = g.take(peer.ip(), Instant::now()) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(serde_json::json!({"error": "too many requests"})),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return resp;
        }
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let allowed = origin
        .as_deref()
        .filter(|o| g.allowed(o))
        .map(str::to_string);
    if req.method() == Method::OPTIONS && origin.is_some() {
        // A preflight: answered here, for allowed origins only.
        let Some(o) = allowed else {
            return StatusCode::FORBIDDEN.into_response();
        };
        let mut resp = StatusCode::NO_CONTENT.into_response();
        cors_headers(&mut resp, &o);
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    if let Some(o) = allowed {
        cors_headers(&mut resp, &o);
    }
    resp
}

fn cors_headers(resp: &mut Response, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_twice_the_rate_passes_then_requests_wait() {
        let g = Guard::new(5, &[]);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        for _ in 0..10 {
            assert!(g.take(ip, t).is_ok());
        }
        let wait = g.take(ip, t).unwrap_err();
        assert!(wait <= Duration::from_millis(200));
        assert!(g.take(ip, t + Duration::from_millis(250)).is_ok());
        // Another client has its own bucket.
        assert!(g.take("10.0.0.2".parse().unwrap(), t).is_ok());
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let g = Guard::new(5, &["https://ops.example.com/".to_string()]);
        assert!(g.allowed("https://ops.example.com"));
        assert!(!g.allowed("https://evil.example.com"));
        assert!(!g.allowed("*"));
    }
}
