//! `GET /health` (readiness: the database answers, as the background prober
//! last saw it) and `GET /livez` (liveness: the process answers). Neither
//! queries the database or waits for anything, so both are answered on the
//! connection's own thread, even when every worker is busy.

use std::time::SystemTime;

use serde_json::json;

use crate::clock;
use crate::db::health::DbHealth;
use crate::db::replicas::Replicas;
use crate::rest::Response;

/// `GET /health`: the database's state as the background prober last saw it
/// (checked every 250 ms), answered at once: 200 while it answers, 503 with
/// the reason and the time of the last success while it does not. With read
/// replicas, `replicas` lists each one's state as its own check last saw
/// it; a replica never makes the answer 503 (its reads go to the primary).
pub fn health(health: &DbHealth, driver: &str, replicas: &Replicas) -> Response {
    let report = health.report();
    let timestamp = clock::format(clock::now());
    let checked_at = report.checked_at.map(clock::format);
    if report.healthy {
        let mut body = json!({
            "status": "healthy",
            "version": env!("CARGO_PKG_VERSION"),
            "database": "connected",
            "db_driver": driver,
            "timestamp": timestamp,
            "checked_at": checked_at,
        });
        add_replicas(&mut body, replicas);
        return Response::json(200, &body);
    }
    let since_success = report
        .last_success
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|age| age.as_millis() as f64 / 1000.0);
    let mut body = json!({
        "status": "unhealthy",
        "version": env!("CARGO_PKG_VERSION"),
        "database": "disconnected",
        "db_driver": driver,
        "timestamp": timestamp,
        "error": "database unavailable",
        "reason": report.reason,
        "checked_at": checked_at,
        "last_success": report.last_success.map(clock::format),
        "seconds_since_success": since_success,
    });
    add_replicas(&mut body, replicas);
    Response::json(503, &body)
}

/// `replicas`: each read replica's state, lag, last check and why it is not
/// used; absent without `DB_READ_HOSTS`.
fn add_replicas(body: &mut serde_json::Value, replicas: &Replicas) {
    if replicas.is_empty() {
        return;
    }
    let list: Vec<serde_json::Value> = replicas
        .report()
        .into_iter()
        .map(|replica| {
            json!({
                "host": replica.name,
                "state": replica.state.as_str(),
                "lag_ms": replica.lag_ms,
                "checked_at": replica.checked_at.map(clock::format),
                "reason": replica.reason,
            })
        })
        .collect();
    body["replicas"] = serde_json::Value::Array(list);
}

/// `GET /livez`: always 200 while the process can answer at all.
pub fn livez() -> Response {
    Response::json_bytes(200, br#"{"status":"alive"}"#.to_vec())
}
