//! `GET /health` and `GET /livez`.

use std::time::Duration;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestDb, TestResponse, postgres_available, spawn_app_with};

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
