//! Start-up: configuration errors, connection retries, schema migrations,
//! and what the log may show.

use std::time::{Duration, Instant};

use crate::both_backends;
use crate::helpers::{
    Backend, TempDir, TestDb, assert_no_secret_in, postgres_available, run_bare, run_to_exit, spawn_app_with,
};

const LIMIT: Duration = Duration::from_secs(30);

fn sqlite_env(dir: &TempDir) -> Vec<(&'static str, String)> {
    vec![("DB_PATH", dir.path().join("db.sqlite").display().to_string()), ("APP_PORT", "0".into())]
}

fn run_with(extra: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let dir = TempDir::new();
    let base = sqlite_env(&dir);
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra);
    run_bare(dir.path(), &env, LIMIT)
}

#[test]
fn each_invalid_value_stops_start_up_with_one_line_naming_it() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("APP_PORT", "abc")], "APP_PORT"),
        (&[("DB_DRIVER", "mysql")], "DB_DRIVER"),
        (&[("MAX_OPEN_CONNS", "0")], "MAX_OPEN_CONNS"),
        (&[("DB_DRIVER", "postgres")], "DB_PASSWORD"),
        (&[("LOG_LEVEL", "loud")], "LOG_LEVEL"),
        (&[("JWT_EXPIRATION", "-5")], "JWT_EXPIRATION"),
        (&[("BCRYPT_COST", "99")], "BCRYPT_COST"),
        (&[("APP_ENV", "production")], "JWT_SECRET"),
        (&[("DB_READ_HOSTS", "replica:5432")], "DB_READ_HOSTS"),
        (&[("DB_DRIVER", "postgres"), ("DB_PASSWORD", "x"), ("DB_READ_HOSTS", "replica:0")], "DB_READ_HOSTS"),
        (&[("DB_DRIVER", "postgres"), ("DB_PASSWORD", "x"), ("DB_READ_MAX_LAG_MS", "-1")], "DB_READ_MAX_LAG_MS"),
    ];
    for (env, variable) in cases {
        let (status, output) = run_with(env);

        assert!(!status.success(), "{env:?} started");
        assert_eq!(output.trim().lines().count(), 1, "{env:?} printed more than one line:\n{output}");
        assert!(output.contains(variable), "{env:?}: {output}");
    }
}

#[test]
fn a_short_jwt_secret_in_production_is_refused_without_being_shown() {
    let (status, output) = run_with(&[("APP_ENV", "production"), ("JWT_SECRET", "too-short-secret")]);

    assert!(!status.success());
    assert!(output.contains("JWT_SECRET"), "{output}");
    assert!(!output.contains("too-short-secret"), "{output}");
}

#[test]
fn an_unreachable_postgres_is_retried_five_times_then_start_up_fails() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let dir = TempDir::new();
    let env = [
        ("DB_DRIVER", "postgres"),
        ("DB_HOST", "127.0.0.1"),
        ("DB_PORT", port.as_str()),
        ("DB_PASSWORD", "unreachable-password"),
        ("DB_RETRY_BASE_DELAY_MS", "10"),
    ];

    let (status, output) = run_bare(dir.path(), &env, LIMIT);

    assert!(!status.success());
    for attempt in 1..=4 {
        assert!(output.contains(&format!("attempt {attempt}/5 failed")), "{output}");
    }
    assert!(!output.contains("attempt 5/5 failed"), "no retry is announced after the last attempt:\n{output}");
    let last = output.lines().last().unwrap();
    assert!(last.contains("Failed to connect to database after 5 attempts: "), "{output}");
    assert!(last.contains("refused"), "the cause is named: {last}");
    assert_no_secret_in(&output, &["unreachable-password".to_owned()]);
}

#[test]
fn the_retry_pauses_double_from_the_base_delay() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let dir = TempDir::new();
    let env = [
        ("DB_DRIVER", "postgres"),
        ("DB_HOST", "127.0.0.1"),
        ("DB_PORT", port.as_str()),
        ("DB_PASSWORD", "x"),
        ("DB_RETRY_BASE_DELAY_MS", "100"),
    ];

    let started = Instant::now();
    let (_, output) = run_bare(dir.path(), &env, LIMIT);
    let elapsed = started.elapsed();

    // 100 + 200 + 400 + 800 ms between the five attempts.
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(output.contains("retrying in 100ms") && output.contains("retrying in 800ms"), "{output}");
}

#[test]
fn a_missing_sqlite_directory_is_a_clear_error_without_retries() {
    let dir = TempDir::new();
    let path = dir.path().join("missing/db.sqlite").display().to_string();

    let started = Instant::now();
    let (status, output) = run_bare(dir.path(), &[("DB_PATH", path.as_str())], LIMIT);

    assert!(!status.success());
    assert!(output.contains("does not exist"), "{output}");
    assert!(started.elapsed() < Duration::from_secs(5), "no retry pauses for a configuration error");
}

#[test]
fn a_dotenv_file_in_the_working_directory_is_read_and_the_environment_wins() {
    let dir = TempDir::new();
    std::fs::write(dir.path().join(".env"), "DB_DRIVER=mysql\nAPP_PORT=abc\n").unwrap();

    let (_, from_file) = run_bare(dir.path(), &[], LIMIT);
    let (_, overridden) = run_bare(dir.path(), &[("APP_PORT", "0"), ("DB_DRIVER", "sqlite-typo")], LIMIT);

    assert!(from_file.contains("APP_PORT") || from_file.contains("DB_DRIVER"), "{from_file}");
    assert!(overridden.contains("sqlite-typo"), "the environment beats .env: {overridden}");
}

#[test]
fn version_and_help_print_and_exit() {
    let dir = TempDir::new();
    let binary = env!("CARGO_BIN_EXE_pizza-api");

    let version = std::process::Command::new(binary).arg("--version").current_dir(dir.path()).output().unwrap();
    let help = std::process::Command::new(binary).arg("--help").current_dir(dir.path()).output().unwrap();
    let wrong = std::process::Command::new(binary).arg("--bogus").current_dir(dir.path()).output().unwrap();

    assert!(version.status.success());
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "pizza-api 1.0.0");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: pizza-api"));
    assert_eq!(wrong.status.code(), Some(2));
}

both_backends!(
    fn a_second_start_on_the_same_database_applies_nothing(backend) {
        let db = TestDb::new(backend);

        let first = spawn_on(db.clone(), &[]).kill();
        let second = spawn_on(db.clone(), &[]).kill();

        assert!(first.contains("schema: applied 0001_initial.sql, 0002_credentials.sql, 0003_idempotency.sql, 0004_list_indexes.sql, 0005_name_backlog.sql"), "{first}");
        assert!(second.contains("schema is up to date"), "{second}");
        assert_eq!(db.query_i64("SELECT count(*) FROM schema_migrations"), 5);
    }
);

both_backends!(
    fn a_changed_applied_schema_file_refuses_start_up(backend) {
        let db = TestDb::new(backend);
        drop(spawn_on(db.clone(), &[]));
        // Same effect as editing 0001 after it shipped: the recorded and the
        // embedded checksums no longer match.
        db.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1");

        let (status, output) = run_to_exit(&db, &[], LIMIT);

        assert!(!status.success());
        assert!(output.contains("0001_initial.sql was changed after it was applied"), "{output}");
    }
);

both_backends!(
    fn the_configuration_is_logged_with_secrets_masked(backend) {
        let app = spawn_app_with(backend, &[("BOOTSTRAP_CLIENT_SECRET", "bootstrap-secret-for-log-test")]);
        app.get("/health");

        let log = app.log();

        assert!(log.contains("configuration: "), "{log}");
        assert!(log.contains("JWT_SECRET=[REDACTED]"), "{log}");
        assert!(log.contains("BOOTSTRAP_CLIENT_SECRET=[REDACTED]"), "{log}");
        if backend == Backend::Postgres {
            assert!(log.contains("DB_PASSWORD=[REDACTED]"), "{log}");
        }
        app.assert_no_secret_logged();
    }
);

both_backends!(
    fn no_secret_is_logged_even_at_trace_level(backend) {
        let app = spawn_app_with(backend, &[("LOG_LEVEL", "trace"), ("BOOTSTRAP_CLIENT_SECRET", "trace-bootstrap-secret")]);
        for path in ["/health", "/livez", "/nope", "/health?client_secret=query-secret", "/last"] {
            app.get(path);
        }

        // Requests answered one after another are logged in order.
        let log = app.log_with("GET /last 404");
        assert!(log.contains("GET /health 200"), "{log}");
        assert!(!log.contains("query-secret"), "query strings stay out of the log");
        app.assert_no_secret_logged();
    }
);

both_backends!(
    fn a_taken_port_fails_before_the_database_is_touched(backend) {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        let db = TestDb::new(backend);

        let (status, output) = run_to_exit(&db, &[("APP_PORT", port.as_str())], LIMIT);

        assert!(!status.success(), "{output}");
        assert!(output.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{output}");
        assert!(!output.contains("connecting to the"), "the database was not even tried:\n{output}");
        match &*db {
            TestDb::Sqlite { path, .. } => assert!(!path.exists(), "no SQLite file was created"),
            TestDb::Postgres { .. } => assert_eq!(
                db.query_i64("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"),
                0,
                "no table was created"
            ),
        }
    }
);

/// Runs the binary against the test PostgreSQL with `env` on top and
/// returns its output and how long it took to fail.
fn postgres_start_failure(env: &[(&str, &str)]) -> Option<(String, Duration)> {
    if !postgres_available() {
        return None;
    }
    let db = TestDb::new(Backend::Postgres);
    let mut env = env.to_vec();
    // Long pauses: a retry would show in the time taken.
    env.push(("DB_RETRY_BASE_DELAY_MS", "5000"));
    let started = Instant::now();
    let (status, output) = run_to_exit(&db, &env, LIMIT);
    assert!(!status.success(), "{output}");
    Some((output, started.elapsed()))
}

#[test]
fn a_wrong_database_password_fails_at_once_with_the_cause() {
    let Some((output, took)) = postgres_start_failure(&[("DB_PASSWORD", "not-the-password")]) else { return };

    assert!(took < Duration::from_secs(5), "failed after {took:?}, so it was retried:\n{output}");
    assert!(!output.contains("attempt 2/5"), "{output}");
    assert!(!output.contains("retrying"), "{output}");
    let last = output.lines().last().unwrap();
    assert!(last.contains("Failed to connect to database: "), "{output}");
    assert!(last.contains("password authentication failed"), "the cause is named: {last}");
    assert!(last.contains("not retried"), "{last}");
    assert_no_secret_in(&output, &["not-the-password".to_owned()]);
}

#[test]
fn an_unknown_database_fails_at_once_with_the_cause() {
    let Some((output, took)) = postgres_start_failure(&[("DB_NAME", "no_such_database_here")]) else { return };

    assert!(took < Duration::from_secs(5), "failed after {took:?}, so it was retried:\n{output}");
    assert!(!output.contains("attempt 2/5"), "{output}");
    let last = output.lines().last().unwrap();
    assert!(last.contains("no_such_database_here") && last.contains("does not exist"), "{output}");
    assert!(last.contains("not retried"), "{last}");
}

both_backends!(
    fn at_log_level_warn_one_line_still_says_the_server_is_up(backend) {
        let app = spawn_app_with(backend, &[("LOG_LEVEL", "warn")]);

        let log = app.log();
        assert_eq!(log.matches("listening on http://").count(), 1, "{log}");
        assert!(!log.contains("INFO"), "nothing else at info: {log}");
    }
);

#[test]
fn a_malformed_dotenv_line_is_named_by_number_and_variable_not_by_value() {
    let dir = TempDir::new();
    std::fs::write(dir.path().join(".env"), "APP_PORT=0\n# a comment\nDB_PASSWORD='unterminated-secret\n").unwrap();

    let (status, output) = run_bare(dir.path(), &[], LIMIT);

    assert!(!status.success());
    assert!(output.contains("line 3 (DB_PASSWORD)"), "{output}");
    assert!(!output.contains("unterminated-secret"), "{output}");
}
