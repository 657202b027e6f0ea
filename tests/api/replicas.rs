//! Read replicas (`DB_READ_HOSTS`) against a real streaming replica of the
//! test PostgreSQL (`pg-cluster.sh replica-start`: `pg_basebackup -R` on
//! loopback): anonymous public reads reach it, a caller with a token reads
//! from the primary and sees its own write, a replica further behind than
//! `DB_READ_MAX_LAG_MS` is skipped, and a stopped replica costs the
//! clients nothing (its reads go to the primary) and gets its reads back
//! once it is started again. PostgreSQL only: SQLite has no replicas, and
//! refuses `DB_READ_HOSTS` at start-up.
//!
//! The tests pause the replica's replay or stop it, so they run one at a time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{
    Backend, PgReplica, TempDir, TestApp, bearer, pg_replica, postgres_available, run_bare, spawn_app_with,
};

/// One replica test at a time: they pause and stop the shared replica.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The replica, when PostgreSQL and its replica are there (else the test is
/// skipped, or fails under `CI=true`).
fn replica() -> Option<&'static PgReplica> {
    if !postgres_available() {
        return None;
    }
    pg_replica()
}

/// A service on a fresh PostgreSQL database reading from the replica, once
/// the replica's check has found it up.
fn spawn_with_replica(replica: &PgReplica, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![("DB_READ_HOSTS", replica.address.as_str())];
    env.extend_from_slice(extra);
    let app = spawn_app_with(Backend::Postgres, &env);
    wait_for_state(&app, "up", Duration::from_secs(15));
    app
}

/// The replica's state in `/health`.
fn replica_state(app: &TestApp) -> String {
    let health = app.get("/health").json();
    health["replicas"][0]["state"].as_str().unwrap_or_else(|| panic!("no replica in /health: {health}")).to_owned()
}

/// Waits until `/health` shows the replica in `state`; how long it took.
fn wait_for_state(app: &TestApp, state: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if replica_state(app) == state {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "the replica was not {state} within {limit:?}: {}\nserver log:\n{}",
            app.get("/health").body,
            app.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pizza_api_db_read_queries_total` of `pool` (`primary` or `replica:<host:port>`).
fn read_queries(app: &TestApp, pool: &str) -> f64 {
    app.metric(&format!("pizza_api_db_read_queries_total{{pool=\"{pool}\"}}"))
        .unwrap_or_else(|| panic!("no read-query series for {pool}:\n{}", app.get("/metrics").body))
}

/// Replay on the replica paused until dropped (resumed even when the test fails).
struct ReplayPaused<'a>(&'a PgReplica);

impl<'a> ReplayPaused<'a> {
    fn start(replica: &'a PgReplica) -> ReplayPaused<'a> {
        replica.query_text("postgres", "SELECT pg_wal_replay_pause()");
        ReplayPaused(replica)
    }
}

impl Drop for ReplayPaused<'_> {
    fn drop(&mut self) {
        self.0.query_text("postgres", "SELECT pg_wal_replay_resume()");
    }
}

/// A pizza created by the seeded admin; its ID.
fn create_pizza(app: &TestApp, name: &str) -> i64 {
    let created = app.authed("POST", "/api/v1/pizzas", &app.admin_token(), Some(&json!({"name": name, "price": 9.5})));
    assert_eq!(created.status, 201, "{}", created.body);
    created.json()["id"].as_i64().unwrap()
}

#[test]
fn anonymous_public_reads_reach_the_replica_and_token_holders_read_from_the_primary() {
    let _one = one_at_a_time();
    let Some(replica) = replica() else { return };
    let app = spawn_with_replica(replica, &[]);
    let pool = format!("replica:{}", replica.address);
    let token = app.admin_token();

    let anonymous: Vec<u16> = (0..10)
        .map(|i| app.get(if i % 2 == 0 { "/api/v1/public/pizzas" } else { "/api/v1/public/pizzas/1" }).status)
        .collect();
    let (on_replica, on_primary) = (read_queries(&app, &pool), read_queries(&app, "primary"));
    let with_token = app.get_with("/api/v1/public/pizzas/1", &[("Authorization", &bearer(&token))]);
    let primary_after_token = read_queries(&app, "primary");
    let dbname = match &*app.db {
        crate::helpers::TestDb::Postgres { name, .. } => name.clone(),
        crate::helpers::TestDb::Sqlite { .. } => unreachable!(),
    };
    let seen_on_replica = replica.query_text(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{dbname}' \
             AND application_name = 'pizza-api' AND query LIKE '%FROM pizzas%'"
        ),
    );
    let health = app.get("/health");
    let documented = app.get("/openapi.json").json()["components"]["schemas"]["ReplicaHealth"].clone();

    assert!(anonymous.iter().all(|&s| s == 200), "{anonymous:?}");
    // On a loaded machine a check may miss its 1 s deadline and take the
    // replica out for a moment; nearly all reads must reach it.
    assert!(on_replica >= 8.0, "replica {on_replica}, primary {on_primary}");
    assert_eq!(with_token.status, 200);
    assert_eq!(primary_after_token, on_primary + 1.0, "a read with a valid token runs on the primary");
    let backends: i64 = seen_on_replica.as_deref().unwrap_or("0").parse().unwrap();
    assert!(backends >= 1, "no pizza-api connection of {dbname} read pizzas on the replica");
    assert_eq!(health.status, 200);
    let entry = &health.json()["replicas"][0];
    assert_eq!(entry["host"], replica.address.as_str());
    assert_eq!(entry["state"], "up");
    assert!(entry["lag_ms"].as_i64().is_some_and(|lag| lag >= 0), "{entry}");
    let mut fields: Vec<&String> = entry.as_object().unwrap().keys().collect();
    let mut described: Vec<&String> = documented["properties"].as_object().unwrap().keys().collect();
    fields.sort();
    described.sort();
    assert_eq!(fields, described, "/health's replica entry and the OpenAPI document's ReplicaHealth differ");
}

#[test]
fn a_writer_reads_its_write_from_the_primary_while_the_replica_is_behind() {
    let _one = one_at_a_time();
    let Some(replica) = replica() else { return };
    // A limit the paused replica stays within, so anonymous reads still go to it.
    let app = spawn_with_replica(replica, &[("DB_READ_MAX_LAG_MS", "600000")]);
    let token = app.admin_token();

    let paused = ReplayPaused::start(replica);
    let id = create_pizza(&app, "Written while the replica is paused");
    let path = format!("/api/v1/public/pizzas/{id}");
    let by_writer = app.get_with(&path, &[("Authorization", &bearer(&token))]);
    let by_anonymous = app.get(&path);
    drop(paused);
    let deadline = Instant::now() + Duration::from_secs(10);
    let caught_up = loop {
        let response = app.get(&path);
        if response.status == 200 || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    assert_eq!(by_writer.status, 200, "the writer must read its write: {}", by_writer.body);
    assert_eq!(by_writer.json()["id"], id);
    assert_eq!(by_anonymous.status, 404, "an anonymous read went to the paused replica: {}", by_anonymous.body);
    assert_eq!(caught_up.status, 200, "the replica never caught up: {}", caught_up.body);
}

#[test]
fn a_replica_further_behind_than_the_limit_is_skipped_until_it_catches_up() {
    let _one = one_at_a_time();
    let Some(replica) = replica() else { return };
    let app = spawn_with_replica(replica, &[("DB_READ_MAX_LAG_MS", "500")]);
    let pool = format!("replica:{}", replica.address);

    let paused = ReplayPaused::start(replica);
    let id = create_pizza(&app, "Written while the replica lags");
    let became_lagging = wait_for_state(&app, "lagging", Duration::from_secs(5));
    let primary_before = read_queries(&app, "primary");
    let while_lagging = app.get(&format!("/api/v1/public/pizzas/{id}"));
    let primary_after = read_queries(&app, "primary");
    let lagging_health = app.get("/health");
    drop(paused);
    let caught_up = wait_for_state(&app, "up", Duration::from_secs(10));
    let replica_before = read_queries(&app, &pool);
    let after = app.get(&format!("/api/v1/public/pizzas/{id}"));
    let replica_after = read_queries(&app, &pool);

    eprintln!("lagging after {became_lagging:?}; up again {caught_up:?} after replay resumed");
    assert_eq!(while_lagging.status, 200, "the primary answers while the replica lags: {}", while_lagging.body);
    assert_eq!(primary_after, primary_before + 1.0);
    assert_eq!(lagging_health.status, 200, "a lagging replica must not fail /health");
    let entry = &lagging_health.json()["replicas"][0];
    assert!(entry["reason"].as_str().is_some_and(|r| r.contains("DB_READ_MAX_LAG_MS")), "{entry}");
    assert_eq!(after.status, 200);
    assert_eq!(replica_after, replica_before + 1.0, "reads return to the replica once it caught up");
}

#[test]
fn reads_fail_over_to_the_primary_while_the_replica_is_stopped_and_return_when_it_is_back() {
    let _one = one_at_a_time();
    let Some(replica) = replica() else { return };
    if !replica.private {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but TEST_DATABASE_REPLICA is not the private cluster's replica, which this test stops");
        }
        eprintln!("\n!!! SKIPPED: TEST_DATABASE_REPLICA is not the private cluster's replica; cannot stop it !!!\n");
        return;
    }
    let app = spawn_with_replica(replica, &[]);
    let pool = format!("replica:{}", replica.address);
    // Anonymous reads all along, on a client of their own.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, url) = (Arc::clone(&stop), app.url("/api/v1/public/pizzas/1"));
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let status = agent.get(&url).call().map_or(0, |r| r.status().as_u16());
                statuses.push((status, started.elapsed()));
                std::thread::sleep(Duration::from_millis(10));
            }
            statuses
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    let stopped_at = Instant::now();
    replica.stop();
    wait_for_state(&app, "down", Duration::from_secs(5));
    let seen_down = stopped_at.elapsed();
    let down_metrics = app.get("/metrics").body;
    let down_health = app.get("/health");
    std::thread::sleep(Duration::from_millis(500));
    let replica_while_down = read_queries(&app, &pool);
    std::thread::sleep(Duration::from_millis(500));
    let replica_still_down = read_queries(&app, &pool);
    let restarted_at = {
        replica.start();
        Instant::now()
    };
    let back = loop {
        if read_queries(&app, &pool) > replica_still_down {
            break restarted_at.elapsed();
        }
        assert!(restarted_at.elapsed() < Duration::from_secs(15), "reads never returned to the replica");
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::Relaxed);
    let statuses = reader.join().unwrap();

    let failures: Vec<_> = statuses.iter().filter(|(status, _)| *status != 200).collect();
    let slowest = statuses.iter().map(|(_, took)| *took).max().unwrap_or_default();
    eprintln!(
        "replica stopped: /health showed it down after {seen_down:?}; reads back on it {back:?} after it started; \
         {} anonymous reads, slowest {slowest:?}",
        statuses.len()
    );
    assert!(failures.is_empty(), "reads failed while the replica stopped: {failures:?}");
    assert!(seen_down <= Duration::from_secs(2), "the replica was seen down only after {seen_down:?}");
    assert!(down_metrics.contains(&format!("pizza_api_db_replica_up{{replica=\"{}\"}} 0", replica.address)));
    assert_eq!(down_health.status, 200, "a stopped replica must not fail /health: {}", down_health.body);
    assert_eq!(replica_still_down, replica_while_down, "no read went to the stopped replica");
    assert!(back <= Duration::from_secs(5), "reads came back to the replica only after {back:?}");
}

#[test]
fn read_hosts_with_sqlite_stop_start_up_with_one_line() {
    let dir = TempDir::new();
    let path = dir.path().join("db.sqlite").display().to_string();

    let (status, output) = run_bare(
        dir.path(),
        &[("DB_PATH", path.as_str()), ("APP_PORT", "0"), ("DB_READ_HOSTS", "replica:5432")],
        Duration::from_secs(30),
    );

    assert_eq!(status.code(), Some(2), "{output}");
    assert_eq!(output.trim().lines().count(), 1, "{output}");
    assert!(output.contains("DB_READ_HOSTS") && output.contains("DB_DRIVER=postgres"), "{output}");
}
