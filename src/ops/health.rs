//! `GET /health` (readiness: the database answers) and `GET /livez`
//! (liveness: the process answers; never touches the database).

use std::time::Duration;

use serde_json::json;

use crate::clock;
use crate::db::Db;
use crate::rest::Response;

/// How long the readiness check waits for a pool connection: probes time out
/// after a few seconds, and a pool that is this busy is not ready anyway.
const PING_WAIT: Duration = Duration::from_secs(2);

/// `GET /health`: 200 when the database answers a query, 503 when it does not.
pub fn health(db: &Db) -> Response {
    let driver = db.driver_name();
    let timestamp = clock::format(clock::now());
    match db.ping(PING_WAIT) {
        Ok(()) => Response::json(
            200,
            &json!({
                "status": "healthy",
                "version": env!("CARGO_PKG_VERSION"),
                "database": "connected",
                "db_driver": driver,
                "timestamp": timestamp,
            }),
        ),
        Err(err) => {
            log::warn!("health check failed: {err}");
            Response::json(
                503,
                &json!({
                    "status": "unhealthy",
                    "version": env!("CARGO_PKG_VERSION"),
                    "database": "disconnected",
                    "db_driver": driver,
                    "timestamp": timestamp,
                    "error": "database unavailable",
                }),
            )
        }
    }
}

/// `GET /livez`: always 200 while the process can answer at all.
pub fn livez() -> Response {
    Response::json_bytes(200, br#"{"status":"alive"}"#.to_vec())
}
