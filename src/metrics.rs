//! Counters, gauges and latency histograms, rendered in the Prometheus text
//! format. Label values are bounded: topics (existing ones only), API names
//! (the fixed table) and error codes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use hdrhistogram::Histogram;
use parking_lot::{Mutex, RwLock};

/// Per-topic traffic counters.
#[derive(Debug, Default)]
pub struct TopicCounters {
    pub bytes_in: AtomicU64,
    pub records_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub records_out: AtomicU64,
}

#[derive(Debug)]
struct ApiStats {
    requests: u64,
    /// Request latency in microseconds.
    latency_us: Histogram<u64>,
}

/// All broker metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    topics: RwLock<HashMap<String, Arc<TopicCounters>>>,
    apis: Mutex<BTreeMap<&'static str, ApiStats>>,
    errors: Mutex<BTreeMap<i16, u64>>,
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    pub connection_errors_total: AtomicU64,
    /// Failed SASL authentications.
    pub sasl_authentication_failures_total: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures_total: AtomicU64,
    /// Responses throttled by a client quota.
    pub throttled_responses_total: AtomicU64,
}

/// Upper bounds, in seconds, of the latency histogram buckets.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

impl Metrics {
    /// Counters of a topic, created on first use.
    pub fn topic(&self, name: &str) -> Arc<TopicCounters> {
        if let Some(c) = self.topics.read().get(name) {
            return Arc::clone(c);
        }
        Arc::clone(self.topics.write().entry(name.to_string()).or_default())
    }

    /// Forgets a deleted topic's counters.
    pub fn remove_topic(&self, name: &str) {
        self.topics.write().remove(name);
    }

    /// Records one request of `api` that took `micros`.
    pub fn record_request(&self, api: &'static str, micros: u64) {
        let mut apis = self.apis.lock();
        let stats = apis.entry(api).or_insert_with(|| ApiStats {
            requests: 0,
            // 1 µs .. 1 h, 3 significant digits: bounded memory per API.
            #[allow(clippy::expect_used)]
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
        });
        stats.requests += 1;
        let _ = stats.latency_us.record(micros.clamp(1, 3_600_000_000));
    }

    /// Counts an error code sent in a response.
    pub fn record_error(&self, code: i16) {
        if code != 0 {
            *self.errors.lock().entry(code).or_default() += 1;
        }
    }

    /// Latency percentile (µs) of an API, for status pages.
    pub fn latency_percentile_us(&self, api: &str, q: f64) -> Option<u64> {
        let apis = self.apis.lock();
        apis.get(api).map(|s| s.latency_us.value_at_quantile(q))
    }

    /// Total records produced, over all topics.
    pub fn records_in_total(&self) -> u64 {
        self.topics
            .read()
            .values()
            .map(|c| c.records_in.load(Ordering::Relaxed))
            .sum()
    }

    /// Renders the metrics known here; `extra` is appended (gauges computed
    /// by the caller from broker state).
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::with_capacity(4096);
        let topics: BTreeMap<String, Arc<TopicCounters>> = self
            .topics
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        type Field = fn(&TopicCounters) -> &AtomicU64;
        let families: [(&str, &str, Field); 4] = [
            (
                "weir_topic_bytes_in_total",
                "Record batch bytes produced to the topic.",
                |c| &c.bytes_in,
            ),
            (
                "weir_topic_records_in_total",
                "Records produced to the topic.",
                |c| &c.records_in,
            ),
            (
                "weir_topic_bytes_out_total",
                "Record batch bytes fetched from the topic.",
                |c| &c.bytes_out,
            ),
            (
                "weir_topic_records_out_total",
                "Records fetched from the topic (counted per whole batch served).",
                |c| &c.records_out,
            ),
        ];
        for (name, help, field) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (t, c) in &topics {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\"}} {}",
                    escape(t),
                    field(c).load(Ordering::Relaxed)
                );
            }
        }
        {
            let apis = self.apis.lock();
            let _ = writeln!(
                out,
                "# HELP weir_requests_total Requests handled, by API.\n# TYPE weir_requests_total counter"
            );
            for (api, s) in apis.iter() {
                let _ = writeln!(out, "weir_requests_total{{api=\"{api}\"}} {}", s.requests);
            }
            let _ = writeln!(
                out,
                "# HELP weir_request_duration_seconds Time from a request's arrival to its response, by API.\n# TYPE weir_request_duration_seconds histogram"
            );
            for (api, s) in apis.iter() {
                for b in LATENCY_BUCKETS_S {
                    let bound_us = (b * 1e6) as u64;
                    let count: u64 = s
                        .latency_us
                        .iter_recorded()
                        .filter(|v| v.value_iterated_to() <= bound_us)
                        .map(|v| v.count_at_value())
                        .sum();
                    let _ = writeln!(
                        out,
                        "weir_request_duration_seconds_bucket{{api=\"{api}\",le=\"{b}\"}} {count}"
                    );
                }
                let n = s.latency_us.len();
                let sum_s = s.latency_us.mean() * n as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "weir_request_duration_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {n}\nweir_request_duration_seconds_sum{{api=\"{api}\"}} {sum_s}\nweir_request_duration_seconds_count{{api=\"{api}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP weir_response_errors_total Error codes sent in responses.\n# TYPE weir_response_errors_total counter"
        );
        for (code, n) in self.errors.lock().iter() {
            let _ = writeln!(out, "weir_response_errors_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP weir_connections Open client connections.\n# TYPE weir_connections gauge\nweir_connections {}",
            self.connections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP weir_connections_total Client connections accepted.\n# TYPE weir_connections_total counter\nweir_connections_total {}",
            self.connections_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP weir_connection_errors_total Connections closed because of a protocol or I/O error.\n# TYPE weir_connection_errors_total counter\nweir_connection_errors_total {}",
            self.connection_errors_total.load(Ordering::Relaxed)
        );
        for (name, help, v) in [
            (
                "weir_sasl_authentication_failures_total",
                "Failed SASL authentications.",
                &self.sasl_authentication_failures_total,
            ),
            (
                "weir_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
                &self.tls_handshake_failures_total,
            ),
            (
                "weir_throttled_responses_total",
                "Responses delayed by a client quota.",
                &self.throttled_responses_total,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out.push_str(extra);
        out
    }
}

/// Escapes a Prometheus label value.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
