//! `GET /metrics`: the registry's series, the pool's connections, bcrypt
//! and the credential cache, process memory and a `build_info` gauge, in the
//! Prometheus text exposition format (0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::db::Db;
use crate::db::health::DbHealth;
use crate::db::replicas::{ReplicaState, Replicas};
use crate::metrics::{
    AUDIT_LINES_SUPPRESSED, BCRYPT_IN_FLIGHT, BCRYPT_SLOTS_EXHAUSTED, CREDENTIAL_CACHE_HITS, CREDENTIAL_CACHE_MISSES,
    DB_STATEMENTS_CUT, HTTP_IN_FLIGHT, Metrics, POOL_WAIT_TIMEOUTS, REVOCATIONS, REVOCATIONS_SYNCED_AT,
    REVOKED_CLIENTS, REVOKED_TOKENS, TOKEN_AUTH_FAILURES, TOKEN_LOCKED_CLIENTS, TOKEN_LOCKOUT_REFUSALS, counter,
    escape, gauge, header, resident_memory_bytes, write_transport,
};
use crate::rest::Response;

/// `GET /metrics`.
pub fn render(registry: &Metrics, db: &Db, health: &DbHealth, replicas: &Replicas) -> Response {
    let mut out = String::with_capacity(8 * 1024);
    registry.write_requests(&mut out);

    gauge(
        &mut out,
        "pizza_api_http_requests_in_flight",
        "Requests being served now, this one included.",
        HTTP_IN_FLIGHT.load(Ordering::Relaxed),
    );
    let pool = db.pool_state();
    header(&mut out, "pizza_api_db_pool_connections", "gauge", "Open database connections, by state.");
    let _ = writeln!(out, "pizza_api_db_pool_connections{{state=\"in_use\"}} {}", pool.in_use);
    let _ = writeln!(out, "pizza_api_db_pool_connections{{state=\"idle\"}} {}", pool.idle);
    gauge(&mut out, "pizza_api_db_pool_max_connections", "The pool's size (MAX_OPEN_CONNS).", pool.max);
    let counters = [
        (
            "pizza_api_db_pool_wait_timeouts_total",
            "Requests that waited for a database connection longer than DB_ACQUIRE_TIMEOUT_MS.",
            &POOL_WAIT_TIMEOUTS,
        ),
        (
            "pizza_api_db_statements_cut_total",
            "PostgreSQL statements cut off at DB_STATEMENT_TIMEOUT_MS + 1 s: the server did not answer at all.",
            &DB_STATEMENTS_CUT,
        ),
        (
            "pizza_api_bcrypt_slots_exhausted_total",
            "Token requests answered 503 because every bcrypt slot was busy.",
            &BCRYPT_SLOTS_EXHAUSTED,
        ),
        (
            "pizza_api_credential_cache_hits_total",
            "Token requests whose client secret matched a cached, already verified one.",
            &CREDENTIAL_CACHE_HITS,
        ),
        ("pizza_api_credential_cache_misses_total", "Token requests that had to run bcrypt.", &CREDENTIAL_CACHE_MISSES),
        (
            "pizza_api_client_auth_failures_total",
            "Client authentications (token, revoke) refused for an unknown client or a wrong secret.",
            &TOKEN_AUTH_FAILURES,
        ),
        (
            "pizza_api_client_auth_lockouts_total",
            "Client authentications answered 429 without bcrypt: too many recent failures for the client ID.",
            &TOKEN_LOCKOUT_REFUSALS,
        ),
        (
            "pizza_api_audit_lines_suppressed_total",
            "Audit lines of refusals left out: more than 50 came in one second.",
            &AUDIT_LINES_SUPPRESSED,
        ),
        (
            "pizza_api_revocations_total",
            "Revocations made through this process: clients deleted, secrets rotated, single tokens revoked.",
            &REVOCATIONS,
        ),
    ];
    for (name, help, value) in counters {
        counter(&mut out, name, help, value.load(Ordering::Relaxed));
    }
    gauge(
        &mut out,
        "pizza_api_bcrypt_in_flight",
        "bcrypt hashes or checks running now.",
        BCRYPT_IN_FLIGHT.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "pizza_api_client_auth_locked_clients",
        "Client IDs refused now for too many failed authentications (updated every revocation sync).",
        TOKEN_LOCKED_CLIENTS.load(Ordering::Relaxed),
    );
    header(&mut out, "pizza_api_revoked", "gauge", "Revocations in force as this process knows them, by kind.");
    let _ = writeln!(out, "pizza_api_revoked{{kind=\"client\"}} {}", REVOKED_CLIENTS.load(Ordering::Relaxed));
    let _ = writeln!(out, "pizza_api_revoked{{kind=\"token\"}} {}", REVOKED_TOKENS.load(Ordering::Relaxed));
    let synced = REVOCATIONS_SYNCED_AT.load(Ordering::Relaxed);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    gauge(
        &mut out,
        "pizza_api_revocations_sync_age_seconds",
        "Seconds since this process last read the revocations from the database (-1: never).",
        if synced == 0 { -1 } else { now.saturating_sub(synced) as i64 },
    );
    gauge(
        &mut out,
        "pizza_api_database_up",
        "1 while the background check finds the database answering; 0 while routes that need it get 503 at once.",
        u8::from(!health.is_down()),
    );
    write_replicas(&mut out, replicas);
    write_transport(&mut out);
    if let Some(bytes) = resident_memory_bytes() {
        gauge(&mut out, "process_resident_memory_bytes", "Resident memory size in bytes.", bytes);
    }
    let started = registry.started.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    gauge(
        &mut out,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds.",
        started,
    );
    header(&mut out, "pizza_api_build_info", "gauge", "Always 1; the labels name the version and the database driver.");
    let _ = writeln!(
        out,
        "pizza_api_build_info{{version=\"{}\",driver=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        db.driver_name()
    );
    Response::text(200, "text/plain; version=0.0.4; charset=utf-8", out)
}

/// The read replicas' series (none without `DB_READ_HOSTS`): statements of
/// public reads per pool, each replica's state and lag, and its reads that
/// failed over to the primary.
fn write_replicas(out: &mut String, replicas: &Replicas) {
    if replicas.is_empty() {
        return;
    }
    let reports = replicas.report();
    let name = "pizza_api_db_read_queries_total";
    header(out, name, "counter", "Statements of public reads, by the pool that answered them (primary or a replica).");
    let _ = writeln!(out, "{name}{{pool=\"primary\"}} {}", replicas.primary_queries());
    for replica in &reports {
        let _ = writeln!(out, "{name}{{pool=\"replica:{}\"}} {}", escape(&replica.name), replica.queries);
    }
    let name = "pizza_api_db_replica_up";
    header(out, name, "gauge", "1 while public reads go to the read replica; 0 while it is skipped.");
    for replica in &reports {
        let _ = writeln!(
            out,
            "{name}{{replica=\"{}\"}} {}",
            escape(&replica.name),
            u8::from(replica.state == ReplicaState::Up)
        );
    }
    let name = "pizza_api_db_replica_state";
    header(out, name, "gauge", "1 for the read replica's state as its last check (or a failed read) found it.");
    for replica in &reports {
        for state in ReplicaState::ALL {
            let _ = writeln!(
                out,
                "{name}{{replica=\"{}\",state=\"{}\"}} {}",
                escape(&replica.name),
                state.as_str(),
                u8::from(replica.state == state)
            );
        }
    }
    let name = "pizza_api_db_replica_lag_seconds";
    header(out, name, "gauge", "How far the read replica was behind the primary at its last check (-1: unknown).");
    for replica in &reports {
        let lag = replica.lag_ms.map_or(-1.0, |ms| ms as f64 / 1000.0);
        let _ = writeln!(out, "{name}{{replica=\"{}\"}} {lag}", escape(&replica.name));
    }
    let name = "pizza_api_db_replica_fallbacks_total";
    header(out, name, "counter", "Public reads that failed on the read replica and were answered by the primary.");
    for replica in &reports {
        let _ = writeln!(out, "{name}{{replica=\"{}\"}} {}", escape(&replica.name), replica.fallbacks);
    }
}
