//! Request guards of the admin API: per-client-IP rate limiting, the `Host`
//! check, cross-site request refusal and CORS.
//!
//! The rate limit is a token bucket per client IP (`--http-rate-limit`
//! requests a second, a burst of twice that); `/api/health` is exempt so that
//! orchestrators never see a 429. CORS answers only origins listed in
//! `--allowed-origins`: their preflights get the allowed methods and headers,
//! their responses name them in `Access-Control-Allow-Origin`; any other
//! origin gets nothing reflected, and never `*`.
//!
//! Browsers on the broker's host are loopback clients too, so a web page can
//! aim requests at the API. Three rules keep it out:
//!
//! - `Host` (every endpoint but `/api/health`): an IP address, `localhost`,
//!   the `--http-listen` host, an advertised host or a name in
//!   `--http-allowed-hosts`. A DNS-rebinding page reaches the broker under
//!   its own domain name, so its requests, reads included, carry that name
//!   and are refused. An IP address cannot be rebound, so IP literals pass.
//! - `Origin` (mutating requests: anything but GET, HEAD and OPTIONS): when
//!   present, one of `--allowed-origins` or the broker's own origin.
//! - `Content-Type: application/json` (mutating requests): neither an HTML
//!   form nor a `no-cors` fetch can send it, and a CORS fetch that does needs
//!   a preflight, which only allowed origins pass.

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
    hosts: Hosts,
}

/// Which `Host` names the API answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    /// Any name (`--http-allowed-hosts '*'`).
    Any,
    /// IP literals, `localhost` and these names (lower case, no port).
    Names(Vec<String>),
}

impl Hosts {
    /// The names of this broker: the `--http-listen` host when it is a name,
    /// every advertised listener host and `--http-allowed-hosts`.
    pub fn of(config: &crate::config::Config) -> Self {
        let extra = &config.args.http_allowed_hosts;
        if extra.iter().any(|h| h == "*") {
            return Self::Any;
        }
        let listen = config
            .args
            .http_listen
            .rsplit_once(':')
            .map_or(config.args.http_listen.as_str(), |(h, _)| h);
        let mut names: Vec<String> = std::iter::once(listen)
            .chain(config.listeners.iter().map(|l| l.advertised_host.as_str()))
            .chain(extra.iter().map(String::as_str))
            .map(normalize_host)
            .filter(|h| !h.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Self::Names(names)
    }

    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`)
    /// names this broker.
    pub fn allow(&self, host: &str) -> bool {
        let names = match self {
            Self::Any => return true,
            Self::Names(n) => n,
        };
        let Some(name) = host_name(host) else {
            return false;
        };
        name.parse::<IpAddr>().is_ok() || name == "localhost" || names.contains(&name)
    }
}

/// The host part of a `Host` value, lower case, without port, brackets or
/// a trailing dot; `None` when malformed.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside
    } else {
        match host.split_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return None,
            None => host,
        }
    };
    let name = normalize_host(name);
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    ok.then_some(name)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

fn normalize_host(h: &str) -> String {
    h.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
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
            hosts: Hosts::Any,
        }
    }

    /// The `Host` names to answer to (default: any).
    #[must_use]
    pub fn with_hosts(mut self, hosts: Hosts) -> Self {
        self.hosts = hosts;
        self
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
    // The names the request was sent to: `Host`, and the authority of an
    // absolute-form target.
    let host = match req.headers().get(header::HOST).map(|v| v.to_str()) {
        Some(Ok(h)) => Some(h.to_string()),
        Some(Err(_)) => Some(String::new()),
        None => None,
    };
    if req.uri().path() != "/api/health" {
        let named = host
            .iter()
            .map(String::as_str)
            .chain(req.uri().authority().map(|a| a.as_str()));
        for h in named {
            if !g.hosts.allow(h) {
                tracing::warn!(%peer, host = h, path = req.uri().path(), "admin HTTP request refused: Host names another site");
                return refuse(
                    StatusCode::FORBIDDEN,
                    "the Host header does not name this broker; add the name to --http-allowed-hosts",
                );
            }
        }
    }
    let origin = match req.headers().get(header::ORIGIN).map(|v| v.to_str()) {
        Some(Ok(o)) => Some(o.to_string()),
        Some(Err(_)) => Some(String::new()),
        None => None,
    };
    let allowed = origin
        .as_deref()
        .filter(|o| g.allowed(o))
        .map(str::to_string);
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if mutating {
        if let Some(o) = &origin {
            let same_origin = g.hosts != Hosts::Any
                && host.as_deref().is_some_and(|h| {
                    o.strip_prefix("http://")
                        .or_else(|| o.strip_prefix("https://"))
                        .is_some_and(|rest| rest.eq_ignore_ascii_case(h))
                });
            if allowed.is_none() && !same_origin {
                tracing::warn!(%peer, origin = o.as_str(), path = req.uri().path(), "admin HTTP request refused: cross-origin");
                return refuse(
                    StatusCode::FORBIDDEN,
                    "cross-origin requests need the origin in --allowed-origins",
                );
            }
        }
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            tracing::warn!(%peer, path = req.uri().path(), "admin HTTP request refused: not application/json");
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "mutating requests need Content-Type: application/json",
            );
        }
    }
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

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
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
    fn host_names_of_this_broker_pass_others_do_not() {
        let h = Hosts::Names(vec!["weir".into(), "admin.example.com".into()]);
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9644",
            "10.1.2.3:9644",
            "[::1]",
            "[::1]:9644",
            "localhost",
            "LOCALHOST:9644",
            "localhost.:9644",
            "weir:9644",
            "Admin.Example.Com",
        ] {
            assert!(h.allow(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:9644",
            "localhost.evil.com",
            "weir.evil.com",
            "127.0.0.1.nip.io",
            "",
            "weir:x",
            "[::1",
            "a b",
        ] {
            assert!(!h.allow(bad), "{bad}");
        }
        assert!(Hosts::Any.allow("evil.com"));
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let g = Guard::new(5, &["https://ops.example.com/".to_string()]);
        assert!(g.allowed("https://ops.example.com"));
        assert!(!g.allowed("https://evil.example.com"));
        assert!(!g.allowed("*"));
    }
}
