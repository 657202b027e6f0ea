//! PostgreSQL only: a statement whose server stops answering without closing
//! the connection (its processes frozen with SIGSTOP, while the kernel still
//! acknowledges packets) ends at its client-side deadline,
//! `DB_STATEMENT_TIMEOUT_MS` + 1 s, with a 503, and the service recovers
//! without a restart once the server answers again.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

/// The statement timeout the tests run with, and the deadline it gives.
const STATEMENT_TIMEOUT_MS: u64 = 1000;
const DEADLINE: Duration = Duration::from_millis(STATEMENT_TIMEOUT_MS + 1000);
/// The watchdog's tick, plus room for a busy machine.
const SLACK: Duration = Duration::from_millis(900);

/// Backend processes stopped with SIGSTOP; resumed when dropped, whatever
/// happens to the test.
struct Frozen(Vec<String>);

impl Frozen {
    fn stop(pids: &[String]) -> Frozen {
        let frozen = Frozen(pids.to_vec());
        let status = Command::new("kill").arg("-STOP").args(pids).status().unwrap();
        assert!(status.success(), "kill -STOP {pids:?} failed");
        frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").args(&self.0).status();
    }
}

/// The server processes serving the service's connections, once `count`
/// are open; `None` (after a loud warning, or a failure under `CI=true`)
/// when they are not processes of this machine that the test may signal.
fn service_backends(app: &TestApp, count: usize) -> Option<Vec<String>> {
    let sql = "SELECT pid::text FROM pg_stat_activity \
               WHERE datname = current_database() AND application_name = 'pizza-api' ORDER BY pid";
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids: Vec<String> = loop {
        let pids: Vec<String> = app.db.query_column(sql).into_iter().flatten().collect();
        if pids.len() >= count {
            break pids;
        }
        assert!(Instant::now() < deadline, "the service opened {} of its {count} connections", pids.len());
        thread::sleep(Duration::from_millis(50));
    };
    let local = pids.iter().all(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|name| name.trim() == "postgres")
            && Command::new("kill").args(["-0", pid]).status().is_ok_and(|s| s.success())
    });
    if local {
        return Some(pids);
    }
    let why = "the test PostgreSQL's processes are not on this machine or may not be signalled";
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI=true but {why}");
    eprintln!("\n!!! SKIPPED: {why} !!!\n");
    None
}

fn frozen_server_answers_503_within_the_deadline(sslmode: &str) {
    if !postgres_available() {
        return;
    }
    // Three connections, all kept open: one for each request below, one for
    // the health check; no new one can open while they are frozen.
    let app = spawn_app_with(
        Backend::Postgres,
        &[
            ("DB_STATEMENT_TIMEOUT_MS", &STATEMENT_TIMEOUT_MS.to_string()),
            ("MAX_OPEN_CONNS", "3"),
            ("MAX_IDLE_CONNS", "3"),
            ("DB_SSLMODE", sslmode),
        ],
    );
    let token = app.admin_token();
    assert_eq!(app.get("/api/v1/public/pizzas/1").status, 200);
    let Some(pids) = service_backends(&app, 3) else { return };

    // A read, and a create in a transaction (Idempotency-Key), sent at once
    // to the frozen backends.
    let frozen = Frozen::stop(&pids);
    let started = Instant::now();
    let (read, create) = thread::scope(|s| {
        let read = s.spawn(|| {
            let answer = app.get("/api/v1/public/pizzas/1");
            (answer, started.elapsed())
        });
        let create = s.spawn(|| {
            let auth = bearer(&token);
            let headers = [("Authorization", auth.as_str()), ("Idempotency-Key", "frozen-1")];
            let answer = app.send_json("POST", "/api/v1/pizzas", &json!({"name": "Frozen", "price": 9.5}), &headers);
            (answer, started.elapsed())
        });
        (read.join().unwrap(), create.join().unwrap())
    });
    drop(frozen);

    for (what, (answer, took)) in [("read", read), ("create", create)] {
        assert_eq!(answer.status, 503, "{what}: {}", answer.body);
        assert_eq!(answer.header("retry-after"), Some("1"), "{what}");
        assert!(took >= DEADLINE - Duration::from_millis(100), "{what} was not caught by the freeze: {took:?}");
        assert!(took <= DEADLINE + SLACK, "{what} took {took:?}, past the deadline {DEADLINE:?}");
    }
    app.log_with("past its client-side deadline");
    assert!(app.metric("pizza_api_db_statements_cut_total").unwrap_or(0.0) >= 2.0);

    // Resumed: served again, without a restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = app.get("/api/v1/public/pizzas/1");
        if answer.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not served 10 s after the resume: {} {}", answer.status, answer.body);
        thread::sleep(Duration::from_millis(100));
    }
    let created = app.authed("POST", "/api/v1/pizzas", &token, Some(&json!({"name": "Thawed", "price": 9.5})));
    assert_eq!(created.status, 201, "{}", created.body);
    app.assert_no_secret_logged();
}

#[test]
fn a_statement_on_a_frozen_server_ends_with_503_at_its_deadline() {
    frozen_server_answers_503_within_the_deadline("disable");
}

#[test]
fn a_statement_on_a_frozen_server_over_tls_ends_with_503_at_its_deadline() {
    frozen_server_answers_503_within_the_deadline("prefer");
}
