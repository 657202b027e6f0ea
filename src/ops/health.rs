//! `GET /health` (readiness: the database answers, as the background prober
//! last saw it) and `GET /livez` (liveness: the process answers). Neither
//! queries the database or waits for anything, so both are answered on the
//! connection's own thread, even when every worker is busy.

use std::time::SystemTime;

use serde_json::json;

use crate::clock;
use crate::db::health::DbHealth;
use crate::rest::Response;

/// `GET /health`: the database's state as the background prober last saw it
/// (checked every 250 ms), answered at once: 200 while it answers, 503 with
/// the reason and the time of the last success while it does not.
pub fn health(health: &DbHealth, driver: &str) -> Response {
    let report = health.report();
    let timestamp = clock::format(clock::now());
    let checked_at = report.checked_at.map(clock::format);
    if report.healthy {
        return Response::json(
            200,
            &json!({
                "status": "healthy",
                "version": env!("CARGO_PKG_VERSION"),
                "database": "connected",
                "db_driver": driver,
                "timestamp": timestamp,
                "checked_at": checked_at,
            }),
        );
    }
    let since_success = report
        .last_success
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|age| age.as_millis() as f64 / 1000.0);
    Response::json(
        503,
        &json!({
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
        }),
    )
}

/// `GET /livez`: always 200 while the process can answer at all.
pub fn livez() -> Response {
    Response::json_bytes(200, br#"{"status":"alive"}"#.to_vec())
}
