//! `GET /health` and `GET /livez`.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestDb, TestResponse, postgres_available, spawn_app_with, spawn_on};

fn assert_rfc3339_utc(value: &serde_json::Value) {
    let text = value.as_str().expect("timestamp is a string");
    assert!(text.ends_with('Z'), "{text} is not UTC");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"));
}

both_backends!(
    fn health_reports_a_connected_database(backend) {
        let app = spawn_app(backend);

        let response = app.get("/health");

        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json; charset=utf-8"));
        let body = response.json();
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["version"], "1.0.0");
        assert_eq!(body["database"], "connected");
        let driver = if backend == Backend::Sqlite { "sqlite" } else { "postgres" };
        assert_eq!(body["db_driver"], driver);
        assert_rfc3339_utc(&body["timestamp"]);
    }
);

#[test]
fn health_reports_postgres_for_the_postgresql_spelling() {
    if !postgres_available() {
        return;
    }
    let app = spawn_app_with(Backend::Postgres, &[("DB_DRIVER", "postgresql")]);

    let body = app.get("/health").json();

    assert_eq!(body["db_driver"], "postgres");
}

both_backends!(
    fn livez_answers_alive(backend) {
        let app = spawn_app(backend);

        let response = app.get("/livez");

        assert_eq!(response.status, 200);
        assert_eq!(response.json(), serde_json::json!({ "status": "alive" }));
    }
);

both_backends!(
    fn health_is_503_while_the_database_is_gone_and_recovers_without_a_restart(backend) {
        let app = spawn_app(backend);
        assert_eq!(app.get("/health").status, 200);

        make_database_unreachable(&app.db);
        // The background check notices within a second or so.
        let down = wait_for_health(&app, 503);
        let livez = app.get("/livez");
        let refused_at_once = app.get("/api/v1/public/pizzas/1");
        restore_database(&app.db);
        let up = wait_for_health(&app, 200);

        assert_eq!(down.status, 503, "{}", down.body);
        let body = down.json();
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(body["database"], "disconnected");
        assert!(body["error"].is_string());
        assert!(body["reason"].is_string(), "{body}");
        assert!(body["last_success"].is_string(), "{body}");
        assert_eq!(livez.status, 200, "liveness must not depend on the database");
        assert_eq!(refused_at_once.status, 503, "{}", refused_at_once.body);
        assert_eq!(refused_at_once.header("retry-after"), Some("1"));
        assert_eq!(up.status, 200, "{}", up.body);
        assert_eq!(app.get("/api/v1/public/pizzas/1").status, 200, "database routes are served again");
    }
);

/// `/health` once it answers `status`; fails after 10 s.
fn wait_for_health(app: &TestApp, status: u16) -> TestResponse {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.get("/health");
        if response.status == status {
            return response;
        }
        assert!(std::time::Instant::now() < deadline, "/health never answered {status}: {}", response.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

both_backends!(
    fn health_is_503_when_the_database_is_deleted(backend) {
        let app = spawn_app(backend);

        delete_database(&app.db);
        let response = wait_for_health(&app, 503);

        assert_eq!(response.status, 503, "{}", response.body);
        assert_eq!(response.json()["database"], "disconnected");
    }
);

both_backends!(
    fn health_recovers_after_the_server_drops_every_connection(backend) {
        // Several warm connections, all of which the restart kills.
        let app = spawn_app_with(backend, &[("MAX_IDLE_CONNS", "4")]);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(app.get("/health").status, 200);

        drop_connections(&app.db);
        std::thread::sleep(Duration::from_millis(100));
        let response = app.get("/health");

        assert_eq!(response.status, 200, "{}", response.body);
    }
);

/// SQLite: the file moves away; PostgreSQL: the database refuses connections
/// and the existing ones are cut.
fn make_database_unreachable(db: &TestDb) {
    match db {
        TestDb::Sqlite { path, .. } => std::fs::rename(path, path.with_extension("moved")).unwrap(),
        TestDb::Postgres { name, .. } => {
            admin_sql(db, &format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"));
            drop_connections(db);
        }
    }
}

fn restore_database(db: &TestDb) {
    match db {
        TestDb::Sqlite { path, .. } => std::fs::rename(path.with_extension("moved"), path).unwrap(),
        TestDb::Postgres { name, .. } => admin_sql(db, &format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")),
    }
}

fn delete_database(db: &TestDb) {
    match db {
        TestDb::Sqlite { path, .. } => std::fs::remove_file(path).unwrap(),
        TestDb::Postgres { name, .. } => admin_sql(db, &format!("DROP DATABASE \"{name}\" WITH (FORCE)")),
    }
}

/// PostgreSQL: terminates every session on the test database, as a server
/// restart would. SQLite has no connections to cut.
fn drop_connections(db: &TestDb) {
    if let TestDb::Postgres { name, .. } = db {
        admin_sql(
            db,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ),
        );
    }
}

fn admin_sql(db: &TestDb, sql: &str) {
    if let TestDb::Postgres { admin, .. } = db {
        admin.admin_execute(sql);
    }
}

both_backends!(
    fn reads_succeed_at_once_after_the_server_drops_every_connection(backend) {
        let app = spawn_app_with(backend, &[("MAX_IDLE_CONNS", "4")]);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(app.get("/api/v1/public/pizzas/1").status, 200);

        drop_connections(&app.db);
        std::thread::sleep(Duration::from_millis(100));
        let read = app.get("/api/v1/public/pizzas/1");
        let list = app.get("/api/v1/public/pizzas");
        let token = app.token_request("grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-123", &[]);

        assert_eq!(read.status, 200, "{}", read.body);
        assert_eq!(list.status, 200, "{}", list.body);
        assert_eq!(token.status, 200, "{}", token.body);
    }
);

/// A TCP proxy in front of the test PostgreSQL that holds each new
/// connection for a while before passing it through, as a connect on a
/// busy machine (TCP, TLS, authentication) can take.
struct SlowConnects {
    port: u16,
    delay_ms: Arc<AtomicU64>,
}

impl SlowConnects {
    fn start(upstream: (String, u16)) -> SlowConnects {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let held = Duration::from_millis(delay.load(Ordering::Relaxed));
                let upstream = upstream.clone();
                thread::spawn(move || {
                    thread::sleep(held);
                    if let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)) {
                        pipe(client, server);
                    }
                });
            }
        });
        SlowConnects { port, delay_ms }
    }

    fn hold_new_connections(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

/// Copies bytes both ways until either side closes.
fn pipe(client: TcpStream, server: TcpStream) {
    let (mut client_in, mut server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let upstream = thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(Shutdown::Both);
    });
    let (mut server_in, mut client_out) = (server, client);
    let _ = io::copy(&mut server_in, &mut client_out);
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = upstream.join();
}

/// PostgreSQL only: after the server drops every connection, the new ones
/// take 1.2 s more than usual to open, longer than a check's query may
/// take. The check waits for its connection (only a failed attempt ends
/// that wait at once): a slow connect is not taken for a database that is
/// down, and requests that would be served are not refused.
#[test]
fn a_slow_reconnect_is_not_taken_for_a_database_that_is_down() {
    if !postgres_available() {
        return;
    }
    let db = TestDb::new(Backend::Postgres);
    let TestDb::Postgres { admin, .. } = &*db else { unreachable!() };
    let proxy = SlowConnects::start((admin.host.clone(), admin.port));
    let port = proxy.port.to_string();
    let app = spawn_on(db, &[("DB_HOST", "127.0.0.1"), ("DB_PORT", &port), ("MAX_IDLE_CONNS", "4")]);
    assert_eq!(app.get("/api/v1/public/pizzas/1").status, 200);
    // The pool's idle connections all open, and none still opening (it
    // would get through the drop and be found at once).
    let open =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pizza-api'";
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.db.query_column(open)[0].as_deref().map_or(0, |n| n.parse::<u32>().unwrap()) < 4 {
        assert!(Instant::now() < deadline, "the service never had its 4 idle connections open");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));

    proxy.hold_new_connections(Duration::from_millis(1200));
    drop_connections(&app.db);
    let started = Instant::now();
    let read = app.get("/api/v1/public/pizzas/1");
    let mut health = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        health.push(app.get("/health").status);
        thread::sleep(Duration::from_millis(50));
    }

    let log = app.log();
    let said: Vec<&str> = log.lines().filter(|line| !line.contains("pizza_api::access")).collect();
    let said = said.join("\n");
    assert_eq!(read.status, 200, "{}\n{said}", read.body);
    assert!(health.iter().all(|&status| status == 200), "/health answered {health:?}\n{said}");
    assert_eq!(app.get("/api/v1/public/pizzas").status, 200);
    assert!(!said.contains("database not answering"), "{said}");
}
