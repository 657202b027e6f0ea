//! The metrics registry: counters and gauges the layers above update (the
//! listener, the pool, bcrypt, the credential cache), request counts by
//! method, route template and status, and a request-duration histogram by
//! route. `ops::metrics` renders them at `GET /metrics`. Labels come only
//! from fixed sets (route templates, known methods), never from raw paths
//! or IDs, so the number of series stays bounded. The writer is small enough
//! to keep here rather than pull in a client library built for async runtimes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Upper bounds of the duration buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Requests a worker is serving right now.
pub static HTTP_IN_FLIGHT: AtomicI64 = AtomicI64::new(0);
/// Waits for a pool connection that ended in a timeout (every pool).
pub static POOL_WAIT_TIMEOUTS: AtomicU64 = AtomicU64::new(0);
/// PostgreSQL statements cut off at their client-side deadline (the server
/// did not answer, not even with its own statement timeout).
pub static DB_STATEMENTS_CUT: AtomicU64 = AtomicU64::new(0);
/// bcrypt hashes or checks running right now.
pub static BCRYPT_IN_FLIGHT: AtomicI64 = AtomicI64::new(0);
/// Token requests refused because every bcrypt slot was busy.
pub static BCRYPT_SLOTS_EXHAUSTED: AtomicU64 = AtomicU64::new(0);
/// Token requests answered from the credential cache, and those that ran bcrypt.
pub static CREDENTIAL_CACHE_HITS: AtomicU64 = AtomicU64::new(0);
pub static CREDENTIAL_CACHE_MISSES: AtomicU64 = AtomicU64::new(0);
/// Client authentications (token and revocation endpoints) that failed: a
/// wrong secret or an unknown client.
pub static TOKEN_AUTH_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Client authentications refused with 429 (too many failures), without bcrypt.
pub static TOKEN_LOCKOUT_REFUSALS: AtomicU64 = AtomicU64::new(0);
/// Client IDs refused now for too many failures (set by the revocation sync, every second).
pub static TOKEN_LOCKED_CLIENTS: AtomicI64 = AtomicI64::new(0);
/// Audit lines of refusals left out because more came in a second than the ration.
pub static AUDIT_LINES_SUPPRESSED: AtomicU64 = AtomicU64::new(0);
/// Revocations made through this process: clients deleted, secrets rotated, tokens revoked.
pub static REVOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Clients and single tokens revoked now, as this process knows them.
pub static REVOKED_CLIENTS: AtomicI64 = AtomicI64::new(0);
pub static REVOKED_TOKENS: AtomicI64 = AtomicI64::new(0);
/// When this process last read the revocations from the database (Unix seconds).
pub static REVOCATIONS_SYNCED_AT: AtomicU64 = AtomicU64::new(0);

/// Worker threads running, and the times one started its loop again after a panic.
pub static WORKERS_ALIVE: AtomicI64 = AtomicI64::new(0);
pub static WORKER_RESTARTS: AtomicU64 = AtomicU64::new(0);
/// Connections of the HTTP listener: open now, and what happened to them.
pub static HTTP_CONNECTIONS_OPEN: AtomicI64 = AtomicI64::new(0);
/// Requests whose head or body is still arriving (no worker holds them).
pub static HTTP_REQUESTS_RECEIVING: AtomicI64 = AtomicI64::new(0);
pub static HTTP_CONNECTIONS_ACCEPTED: AtomicU64 = AtomicU64::new(0);
pub static HTTP_CONNECTIONS_EVICTED: AtomicU64 = AtomicU64::new(0);
pub static HTTP_CONNECTIONS_REFUSED: AtomicU64 = AtomicU64::new(0);
pub static HTTP_IDLE_TIMEOUTS: AtomicU64 = AtomicU64::new(0);
pub static HTTP_ACCEPT_PAUSES: AtomicU64 = AtomicU64::new(0);
pub static HTTP_SLOW_WRITES: AtomicU64 = AtomicU64::new(0);
pub static HTTP_WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);
pub static HTTP_WRITE_REFUSALS: AtomicU64 = AtomicU64::new(0);

/// The statuses the listener answers on its own, before any worker.
const TRANSPORT_STATUSES: [u16; 8] = [400, 408, 413, 417, 431, 501, 503, 505];
static TRANSPORT_REJECTIONS: [AtomicU64; TRANSPORT_STATUSES.len()] = [const { AtomicU64::new(0) }; 8];

/// Counts one request the listener answered itself with `status`.
pub fn count_transport_rejection(status: u16) {
    let i = TRANSPORT_STATUSES.iter().position(|&s| s == status).unwrap_or(0);
    TRANSPORT_REJECTIONS[i].fetch_add(1, Ordering::Relaxed);
}

/// Counts one operation in an in-flight gauge for as long as it lives.
pub struct InFlight(&'static AtomicI64);

impl InFlight {
    /// Adds one to `gauge` until the returned value is dropped.
    pub fn start(gauge: &'static AtomicI64) -> InFlight {
        gauge.fetch_add(1, Ordering::Relaxed);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Series {
    requests: BTreeMap<(&'static str, &'static str, u16), u64>,
    durations: BTreeMap<&'static str, Histogram>,
}

/// The request metrics of one process.
pub struct Metrics {
    series: Mutex<Series>,
    /// When the process started.
    pub started: SystemTime,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics { series: Mutex::default(), started: SystemTime::now() }
    }
}

impl Metrics {
    /// Records one answered request.
    pub fn observe(&self, method: &'static str, route: &'static str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        *series.requests.entry((method, route, status)).or_insert(0) += 1;
        let histogram = series.durations.entry(route).or_default();
        if let Some(i) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            histogram.buckets[i] += 1;
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// Writes the request series in the text exposition format.
    pub fn write_requests(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        header(out, "pizza_api_http_requests_total", "counter", "HTTP requests answered, by method, route and status.");
        for ((method, route, status), count) in &series.requests {
            let _ = writeln!(
                out,
                "pizza_api_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {count}",
                escape(route)
            );
        }
        let name = "pizza_api_http_request_duration_seconds";
        header(out, name, "histogram", "Time from routing a request to writing its answer, by route.");
        for (route, histogram) in &series.durations {
            let route = escape(route);
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(histogram.buckets) {
                cumulative += count;
                let _ = writeln!(out, "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", histogram.count);
            let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", histogram.sum);
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", histogram.count);
        }
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a series.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a gauge without labels.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Writes a counter without labels.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Resident memory of this process in bytes, from /proc (Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Writes the listener's and the workers' series.
pub fn write_transport(out: &mut String) {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    gauge(out, "pizza_api_workers", "Worker threads serving requests.", WORKERS_ALIVE.load(Ordering::Relaxed));
    counter(
        out,
        "pizza_api_worker_restarts_total",
        "Times a worker started its loop again after a failure outside request handling.",
        load(&WORKER_RESTARTS),
    );
    gauge(
        out,
        "pizza_api_http_connections_open",
        "Client connections open now.",
        HTTP_CONNECTIONS_OPEN.load(Ordering::Relaxed),
    );
    gauge(
        out,
        "pizza_api_http_requests_receiving",
        "Requests whose head or body is still arriving; connection threads hold them, not workers.",
        HTTP_REQUESTS_RECEIVING.load(Ordering::Relaxed),
    );
    counter(
        out,
        "pizza_api_http_connections_accepted_total",
        "Client connections accepted.",
        load(&HTTP_CONNECTIONS_ACCEPTED),
    );
    counter(
        out,
        "pizza_api_http_connections_evicted_total",
        "Idle keep-alive connections closed to make room at MAX_CONNECTIONS.",
        load(&HTTP_CONNECTIONS_EVICTED),
    );
    counter(
        out,
        "pizza_api_http_connections_refused_total",
        "New connections refused with 503 at MAX_CONNECTIONS, none being idle.",
        load(&HTTP_CONNECTIONS_REFUSED),
    );
    counter(
        out,
        "pizza_api_http_idle_timeouts_total",
        "Keep-alive connections closed after HTTP_KEEPALIVE_TIMEOUT_MS without a request.",
        load(&HTTP_IDLE_TIMEOUTS),
    );
    counter(
        out,
        "pizza_api_http_accept_pauses_total",
        "Pauses of the accept loop for exhausted file descriptors, memory or threads.",
        load(&HTTP_ACCEPT_PAUSES),
    );
    counter(
        out,
        "pizza_api_http_slow_writes_total",
        "Responses that did not fit the socket at once and were finished by a helper thread.",
        load(&HTTP_SLOW_WRITES),
    );
    counter(
        out,
        "pizza_api_http_write_failures_total",
        "Responses that could not be written within HTTP_WRITE_TIMEOUT_MS or failed.",
        load(&HTTP_WRITE_FAILURES),
    );
    counter(
        out,
        "pizza_api_http_write_refusals_total",
        "Connections closed because the unsent rest of their response would have taken the buffered bytes \
         past HTTP_MAX_BUFFERED_BODY_BYTES.",
        load(&HTTP_WRITE_REFUSALS),
    );
    let name = "pizza_api_http_transport_rejections_total";
    header(out, name, "counter", "Requests the listener answered itself, then closed, by status.");
    for (status, count) in TRANSPORT_STATUSES.iter().zip(&TRANSPORT_REJECTIONS) {
        let _ = writeln!(out, "{name}{{status=\"{status}\"}} {}", load(count));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_lands_in_its_counter_and_bucket() {
        let metrics = Metrics::default();
        metrics.observe("GET", "/health", 200, Duration::from_micros(300));
        metrics.observe("GET", "/health", 200, Duration::from_secs(9));

        let mut out = String::new();
        metrics.write_requests(&mut out);

        assert!(out.contains("pizza_api_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 2"));
        assert!(out.contains("_bucket{route=\"/health\",le=\"0.0005\"} 1"), "{out}");
        assert!(out.contains("_bucket{route=\"/health\",le=\"5\"} 1"), "{out}");
        assert!(out.contains("_bucket{route=\"/health\",le=\"+Inf\"} 2"), "{out}");
        assert!(out.contains("_count{route=\"/health\"} 2"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
