//! `pizza-api migrate-data --from-sqlite FILE`: a SQLite database copied into
//! PostgreSQL serves exactly the same data.

use serde_json::json;
use std::process::{Command, Stdio};

use crate::helpers::*;

/// Runs migrate-data from `sqlite` into the PostgreSQL test database `target`.
fn migrate(sqlite: &std::path::Path, target: &TestDb) -> (bool, String) {
    let dir = TempDir::new();
    let output = Command::new(env!("CARGO_BIN_EXE_pizza-api"))
        .args(["migrate-data", "--from-sqlite", &sqlite.display().to_string()])
        .env_clear()
        .envs(target.env())
        .env("DB_RETRY_BASE_DELAY_MS", "20")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn a_copied_database_serves_the_same_pizzas_clients_and_ids() {
    if !postgres_available() {
        return;
    }
    // A SQLite database with history: pizzas of both users, one deleted, a new client.
    let source = TestDb::new(Backend::Sqlite);
    let TestDb::Sqlite { path, .. } = &*source else { unreachable!() };
    let (before, client_id, client_secret) = {
        let mut app = spawn_on(source.clone(), &[]);
        let (client_id, secret) = add_history(&mut app);
        (app.get("/api/v1/public/pizzas").body, client_id, secret)
    };
    let target = TestDb::new(Backend::Postgres);

    let (ok, output) = migrate(path, &target);

    assert!(ok, "{output}");
    assert!(
        output.contains("copied 2 users, 6 pizzas (1 of them deleted), 4 clients and 0 revoked tokens"),
        "{output}"
    );
    assert!(!output.contains(&client_secret) && !output.contains("dev-secret-123"));
    let app = spawn_on(target.clone(), &[]);
    assert_eq!(app.get("/api/v1/public/pizzas").body, before, "identical JSON, timestamps included");
    assert_eq!(app.get("/api/v1/public/pizzas/6").status, 404, "a deleted pizza stays deleted");
    let token = app.token_for((&client_id, &client_secret));
    let next = app.authed("POST", "/api/v1/pizzas", &token, Some(&json!({"name": "After", "price": 1})));
    assert_eq!(next.json()["id"], 7, "IDs continue after the copied ones, deleted ones included");
    assert_eq!(claims_of(&app.user_token())["uid"], "2");
    assert!(app.log().contains("development seed: skipped"), "{}", app.log());
}

#[test]
fn a_target_that_already_holds_data_is_refused() {
    if !postgres_available() {
        return;
    }
    let source = TestDb::new(Backend::Sqlite);
    drop(spawn_on(source.clone(), &[]));
    let TestDb::Sqlite { path, .. } = &*source else { unreachable!() };
    let target = TestDb::new(Backend::Postgres);
    drop(spawn_on(target.clone(), &[]));

    let (ok, output) = migrate(path, &target);

    assert!(!ok);
    assert!(output.contains("already holds"), "{output}");
    assert_eq!(target.query_i64("SELECT count(*) FROM pizzas"), 3, "nothing was added");
}

#[test]
fn a_file_that_is_not_a_pizza_api_database_is_refused() {
    if !postgres_available() {
        return;
    }
    let dir = TempDir::new();
    let bogus = dir.path().join("other.sqlite");
    rusqlite::Connection::open(&bogus).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
    let target = TestDb::new(Backend::Postgres);

    let (ok, output) = migrate(&bogus, &target);
    let (missing_ok, missing) = migrate(&dir.path().join("missing.sqlite"), &target);

    assert!(!ok && output.contains("not a pizza-api database"), "{output}");
    assert!(!missing_ok && missing.contains("is not a file"), "{missing}");
}

#[test]
fn migrate_data_needs_a_postgres_target() {
    let source = TestDb::new(Backend::Sqlite);
    drop(spawn_on(source.clone(), &[]));
    let TestDb::Sqlite { path, .. } = &*source else { unreachable!() };

    let output = Command::new(env!("CARGO_BIN_EXE_pizza-api"))
        .args(["migrate-data", "--from-sqlite", &path.display().to_string()])
        .env_clear()
        .env("DB_PATH", path)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("DB_DRIVER=postgres"));
}
