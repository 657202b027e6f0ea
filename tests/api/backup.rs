//! `pizza-api backup` and `pizza-api restore`, through the real binary, on
//! both databases: a backup taken under load restores identically into
//! either driver, a failed restore changes nothing, and a damaged file is
//! refused before anything is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

/// Runs the binary with `args` against `db`; its success and output. Fails
/// the test when the output holds a password or a seeded secret.
fn cli(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = TempDir::new();
    let output = Command::new(env!("CARGO_BIN_EXE_pizza-api"))
        .args(args)
        .env_clear()
        .envs(db.env())
        .env("DB_RETRY_BASE_DELAY_MS", "20")
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let mut secrets = well_known_secrets();
    secrets.extend(db.secrets());
    assert_no_secret_in(&text, &secrets);
    (output.status.success(), text)
}

fn backup_to(db: &TestDb, file: &Path) -> String {
    let (ok, output) = cli(db, &["backup", "--to", &file.display().to_string()], &[]);
    assert!(ok, "backup failed:\n{output}");
    output
}

fn restore_from(db: &TestDb, file: &Path, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let from = file.display().to_string();
    let mut args = vec!["restore", "--from", &from];
    args.extend_from_slice(extra);
    cli(db, &args, env)
}

/// Every backend a restore can go to in this run.
fn targets() -> Vec<Backend> {
    let mut targets = vec![Backend::Sqlite];
    if postgres_available() {
        targets.push(Backend::Postgres);
    }
    targets
}

/// `backup_tables` of a backup file: name, row count, checksum per table.
fn recorded(file: &Path) -> Vec<(String, i64, String)> {
    let conn = rusqlite::Connection::open(file).unwrap();
    let mut st = conn.prepare("SELECT name, row_count, sha256 FROM backup_tables ORDER BY position").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

/// Whether the target was left as it was: a new SQLite file not created, a
/// new PostgreSQL database without a table.
fn untouched(db: &TestDb) -> bool {
    match db {
        TestDb::Sqlite { path, .. } => !path.exists(),
        TestDb::Postgres { .. } => {
            db.query_i64("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == 0
        }
    }
}

/// A service with history: pizzas of both users, one deleted, a new client.
/// Returns the app and the new client's (id, secret).
fn service_with_history(backend: Backend) -> (TestApp, (String, String)) {
    let mut app = spawn_app(backend);
    let client = add_history(&mut app);
    (app, client)
}

fn pizza_ids(app: &TestApp) -> Vec<i64> {
    let listed = app.get("/api/v1/public/pizzas?limit=1000").json();
    listed.as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect()
}

both_backends!(
    fn a_backup_taken_under_load_restores_identically_into_both_databases(backend) {
        let (source, (client_id, secret)) = service_with_history(backend);
        let admin = source.admin_token();
        let dir = TempDir::new();
        let file = dir.path().join("under-load.sqlite");
        let stop = AtomicBool::new(false);

        // Four clients keep creating pizzas while the backup runs.
        let existing = std::thread::scope(|scope| {
            for writer in 0..4 {
                let (source, admin, stop) = (&source, &admin, &stop);
                scope.spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let body = json!({"name": format!("Load {writer}-{n}"), "price": 1.5});
                        assert_eq!(source.authed("POST", "/api/v1/pizzas", admin, Some(&body)).status, 201);
                        n += 1;
                    }
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            let existing = pizza_ids(&source);
            let output = backup_to(&source.db, &file);
            stop.store(true, Ordering::Relaxed);
            assert!(output.contains("backed up"), "{output}");
            existing
        });

        let backed_up = recorded(&file);
        let pizzas = backed_up.iter().find(|(t, _, _)| t == "pizzas").unwrap().1;
        // Every pizza that existed (and the deleted one), none written after the snapshot.
        assert!(pizzas > existing.len() as i64, "{pizzas} pizzas backed up, {} existed", existing.len());
        assert!(pizzas <= source.db.query_i64("SELECT count(*) FROM pizzas"));
        let expected: Vec<String> = existing.iter().map(|id| source.get(&format!("/api/v1/public/pizzas/{id}")).body).collect();
        for target_backend in targets() {
            let target = TestDb::new(target_backend);
            let (ok, output) = restore_from(&target, &file, &[], &[]);
            assert!(ok, "restore into {target_backend:?} failed:\n{output}");
            if target_backend == Backend::Sqlite {
                // Every name restored is in the trigram index, none left waiting.
                assert_eq!(target.query_i64("SELECT count(*) FROM pizza_name_backlog"), 0);
                target.execute("INSERT INTO pizza_name_trigrams (pizza_name_trigrams, rank) VALUES ('integrity-check', 1)");
            }

            let app = spawn_on(target.clone(), &[]);
            for (id, body) in existing.iter().zip(&expected) {
                assert_eq!(&app.get(&format!("/api/v1/public/pizzas/{id}")).body, body, "pizza {id} on {target_backend:?}");
            }
            let named: Vec<i64> = existing.iter().zip(&expected).filter(|(_, b)| b.contains("\"Load ")).map(|(id, _)| *id).collect();
            let found = app.get("/api/v1/public/pizzas?name=load&limit=100").json();
            let found: Vec<i64> = found.as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
            // The backup also holds pizzas created after `existing` was read,
            // all with higher IDs.
            let n = named.len().min(100);
            assert!(n > 0 && found.len() >= n, "{found:?}");
            assert_eq!(found[..n], named[..n], "the name filter on {target_backend:?}");
            assert_eq!(app.get("/api/v1/public/pizzas/6").status, 404, "a deleted pizza stays deleted");
            let token = app.token_for((&client_id, &secret));
            let next = app.authed("POST", "/api/v1/pizzas", &token, Some(&json!({"name": "After", "price": 1})));
            assert_eq!(next.status, 201);
            assert_eq!(next.json()["id"], pizzas + 1, "a new pizza gets a fresh ID on {target_backend:?}");
            assert!(app.log().contains("development seed: skipped"), "{}", app.log());
        }
    }
);

#[test]
fn postgres_to_sqlite_to_postgres_is_identical() {
    if !postgres_available() {
        return;
    }
    let (source, _) = service_with_history(Backend::Postgres);
    let listed = source.get("/api/v1/public/pizzas").body;
    let dir = TempDir::new();
    let (first, second, third) =
        (dir.path().join("1.sqlite"), dir.path().join("2.sqlite"), dir.path().join("3.sqlite"));
    backup_to(&source.db, &first);

    let sqlite = TestDb::new(Backend::Sqlite);
    assert!(restore_from(&sqlite, &first, &[], &[]).0);
    backup_to(&sqlite, &second);
    let postgres = TestDb::new(Backend::Postgres);
    assert!(restore_from(&postgres, &second, &[], &[]).0);
    backup_to(&postgres, &third);

    assert_eq!(recorded(&first), recorded(&second), "PostgreSQL → SQLite");
    assert_eq!(recorded(&first), recorded(&third), "→ PostgreSQL again");
    assert_eq!(spawn_on(postgres.clone(), &[]).get("/api/v1/public/pizzas").body, listed);
}

both_backends!(
    fn a_restore_that_fails_midway_leaves_the_target_unchanged(backend) {
        let (source, _) = service_with_history(backend);
        let dir = TempDir::new();
        let file = dir.path().join("backup.sqlite");
        backup_to(&source.db, &file);
        let fail = [("PIZZA_API_TEST_RESTORE_FAIL_AFTER", "4")];

        // Into a database the service runs on (--force replaces its data) ...
        let used = TestDb::new(backend);
        drop(spawn_on(used.clone(), &[]));
        let before = used.query_column("SELECT name FROM pizzas ORDER BY id");
        let (ok, output) = restore_from(&used, &file, &["--force"], &fail);
        assert!(!ok && output.contains("injected failure"), "{output}");
        assert_eq!(used.query_column("SELECT name FROM pizzas ORDER BY id"), before, "nothing replaced");
        // ... and into a new one: not even the schema stays.
        let fresh = TestDb::new(backend);
        let (ok, output) = restore_from(&fresh, &file, &[], &fail);
        assert!(!ok && output.contains("injected failure"), "{output}");
        assert!(untouched(&fresh));
    }
);

both_backends!(
    fn a_truncated_or_tampered_backup_is_refused_before_anything_is_written(backend) {
        let (source, _) = service_with_history(backend);
        let dir = TempDir::new();
        let good = dir.path().join("good.sqlite");
        backup_to(&source.db, &good);
        let copy = |name: &str| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::copy(&good, &path).unwrap();
            path
        };
        let truncated = copy("truncated.sqlite");
        let size = std::fs::metadata(&good).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&truncated).unwrap().set_len(size / 2).unwrap();
        let tampered = copy("tampered.sqlite");
        rusqlite::Connection::open(&tampered).unwrap().execute("UPDATE pizzas SET price = 0 WHERE id = 4", []).unwrap();
        let row_gone = copy("row-gone.sqlite");
        rusqlite::Connection::open(&row_gone).unwrap().execute("DELETE FROM pizzas WHERE id = 6", []).unwrap();
        let not_a_backup = dir.path().join("notes.txt");
        std::fs::write(&not_a_backup, "not a backup").unwrap();

        for (file, says) in [
            (&truncated, "malformed"),
            (&tampered, "does not match its checksum"),
            (&row_gone, "has 5 rows where 6 were backed up"),
            (&not_a_backup, "not a database"),
            (&dir.path().join("missing.sqlite"), "is not a file"),
        ] {
            let target = TestDb::new(backend);
            let (ok, output) = restore_from(&target, file, &[], &[]);
            assert!(!ok, "{} was accepted:\n{output}", file.display());
            assert!(output.contains(says), "{}: expected {says:?} in\n{output}", file.display());
            assert_eq!(output.lines().filter(|l| l.contains("ERROR")).count(), 1, "one error line:\n{output}");
            assert!(untouched(&target), "{} wrote to the target", file.display());
        }
    }
);

both_backends!(
    fn a_used_target_is_refused_unless_forced_and_a_dry_run_writes_nothing(backend) {
        let (source, _) = service_with_history(backend);
        let dir = TempDir::new();
        let file = dir.path().join("backup.sqlite");
        backup_to(&source.db, &file);

        let fresh = TestDb::new(backend);
        let (ok, output) = restore_from(&fresh, &file, &["--dry-run"], &[]);
        assert!(ok && output.contains("dry run") && output.contains("nothing was written"), "{output}");
        assert!(untouched(&fresh));

        let used = TestDb::new(backend);
        drop(spawn_on(used.clone(), &[]));
        let (ok, output) = restore_from(&used, &file, &["--dry-run"], &[]);
        assert!(!ok && output.contains("already holds 8 rows (2 users, 3 pizzas, 3 clients and 0 revoked tokens)"), "{output}");
        let (ok, output) = restore_from(&used, &file, &[], &[]);
        assert!(!ok && output.contains("--force"), "{output}");
        assert_eq!(used.query_i64("SELECT count(*) FROM pizzas"), 3);

        let (ok, output) = restore_from(&used, &file, &["--force"], &[]);
        assert!(ok, "{output}");
        assert!(output.contains("replacing 2 users, 3 pizzas, 3 clients and 0 revoked tokens"), "{output}");
        assert_eq!(used.query_i64("SELECT count(*) FROM pizzas"), 6);
    }
);

both_backends!(
    fn backups_to_a_directory_keep_the_newest(backend) {
        let source = spawn_app(backend);
        let dir = TempDir::new();
        let to_dir = dir.path().display().to_string();
        std::fs::write(dir.path().join("pizza-api-20000101T000000.000000Z.sqlite.partial"), "left over").unwrap();
        std::fs::write(dir.path().join("unrelated.sqlite"), "kept").unwrap();

        for _ in 0..3 {
            let (ok, output) = cli(&source.db, &["backup", "--to-dir", &to_dir, "--keep", "2"], &[]);
            assert!(ok, "{output}");
        }

        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[0].starts_with("pizza-api-") && names[1].starts_with("pizza-api-"), "{names:?}");
        assert_eq!(names[2], "unrelated.sqlite");
        assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
    }
);

#[test]
fn migrate_data_copies_postgres_into_a_new_sqlite_file() {
    if !postgres_available() {
        return;
    }
    let (source, (client_id, secret)) = service_with_history(Backend::Postgres);
    let listed = source.get("/api/v1/public/pizzas").body;
    let target = TestDb::new(Backend::Sqlite);
    let TestDb::Sqlite { path, .. } = &*target else { unreachable!() };

    let (ok, output) = cli(&source.db, &["migrate-data", "--to-sqlite", &path.display().to_string()], &[]);

    assert!(ok, "{output}");
    assert!(
        output.contains("copied 2 users, 6 pizzas (1 of them deleted), 4 clients and 0 revoked tokens"),
        "{output}"
    );
    let app = spawn_on(target.clone(), &[]);
    assert_eq!(app.get("/api/v1/public/pizzas").body, listed);
    assert_eq!(app.token_for((&client_id, &secret)).split('.').count(), 3);
}

#[test]
fn backup_and_restore_explain_their_usage() {
    let db = TestDb::new(Backend::Sqlite);
    for args in [
        &["backup"][..],
        &["backup", "--to", "a", "--to-dir", "b"],
        &["backup", "--to", "a", "--keep", "2"],
        &["restore"],
    ] {
        let (ok, output) = cli(&db, args, &[]);
        assert!(!ok && output.contains("Usage: pizza-api"), "{args:?}: {output}");
    }
}
