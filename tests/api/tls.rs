//! TLS to PostgreSQL: every `DB_SSLMODE` against a server whose certificate
//! comes from a private CA (the test cluster's).

use std::time::Duration;

use crate::helpers::*;

/// The admin settings and the CA, or `None` (skipped, loudly) when the test
/// PostgreSQL has no TLS certificate of a CA we know.
fn tls_postgres() -> Option<(&'static PgAdmin, std::path::PathBuf)> {
    if !postgres_available() {
        return None;
    }
    let admin = pg_admin()?;
    match &admin.ca_file {
        Some(ca) => Some((admin, ca.clone())),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but the test PostgreSQL has no known CA (TEST_DATABASE_SSLROOTCERT)")
        }
        None => {
            eprintln!("\n!!! SKIPPED: the test PostgreSQL has no known TLS CA (TEST_DATABASE_SSLROOTCERT) !!!\n");
            None
        }
    }
}

/// Whether every session of the service on `db` is encrypted (and there is one).
fn sessions_encrypted(db: &TestDb) -> Vec<bool> {
    let TestDb::Postgres { name, .. } = db else { panic!("PostgreSQL only") };
    db.query_column(&format!(
        "SELECT s.ssl::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = '{name}' AND a.application_name = 'pizza-api'"
    ))
    .into_iter()
    .map(|v| v.as_deref() == Some("true"))
    .collect()
}

#[test]
fn require_encrypts_every_connection() {
    let Some(_) = tls_postgres() else { return };
    let app = spawn_app_with(Backend::Postgres, &[("DB_SSLMODE", "require")]);

    assert_eq!(app.get("/health").status, 200);
    app.admin_token();

    let sessions = sessions_encrypted(&app.db);
    assert!(!sessions.is_empty() && sessions.iter().all(|&ssl| ssl), "{sessions:?}");
}

#[test]
fn disable_stays_plain() {
    let Some(_) = tls_postgres() else { return };
    let app = spawn_app_with(Backend::Postgres, &[("DB_SSLMODE", "disable")]);

    assert_eq!(app.get("/health").status, 200);

    let sessions = sessions_encrypted(&app.db);
    assert!(!sessions.is_empty() && sessions.iter().all(|&ssl| !ssl), "{sessions:?}");
}

#[test]
fn verify_full_accepts_a_certificate_from_the_given_ca_for_the_host() {
    let Some((_, ca)) = tls_postgres() else { return };
    let ca = ca.display().to_string();
    let app = spawn_app_with(
        Backend::Postgres,
        &[("DB_SSLMODE", "verify-full"), ("DB_SSLROOTCERT", &ca), ("DB_HOST", "localhost")],
    );

    let body = app.get("/health").json();

    assert_eq!(body["database"], "connected");
    assert!(sessions_encrypted(&app.db).iter().all(|&ssl| ssl));
}

#[test]
fn verify_ca_accepts_the_ca_whatever_the_host_name() {
    let Some((_, ca)) = tls_postgres() else { return };
    let ca = ca.display().to_string();
    // The certificate names localhost and 127.0.0.1; the test server also
    // listens on 127.0.0.2.
    let app = spawn_app_with(
        Backend::Postgres,
        &[("DB_SSLMODE", "verify-ca"), ("DB_SSLROOTCERT", &ca), ("DB_HOST", "127.0.0.2")],
    );

    assert_eq!(app.get("/health").status, 200);
}

#[test]
fn verify_full_refuses_a_server_whose_ca_is_not_trusted() {
    let Some(_) = tls_postgres() else { return };
    let db = TestDb::new(Backend::Postgres);

    // No DB_SSLROOTCERT: the built-in public roots do not include the test CA.
    let (status, output) =
        run_to_exit(&db, &[("DB_SSLMODE", "verify-full"), ("DB_HOST", "localhost")], Duration::from_secs(60));

    assert!(!status.success());
    assert!(!output.contains("retrying"), "a certificate that does not verify is not retried:\n{output}");
    assert!(output.contains("Failed to connect to database: "), "{output}");
    assert!(output.to_ascii_lowercase().contains("certificate"), "the cause names the certificate: {output}");
}

#[test]
fn verify_full_refuses_a_host_name_the_certificate_does_not_name() {
    let Some((_, ca)) = tls_postgres() else { return };
    let ca = ca.display().to_string();
    let db = TestDb::new(Backend::Postgres);

    let (status, output) = run_to_exit(
        &db,
        &[("DB_SSLMODE", "verify-full"), ("DB_SSLROOTCERT", &ca), ("DB_HOST", "127.0.0.2")],
        Duration::from_secs(60),
    );

    assert!(!status.success());
    assert!(!output.contains("retrying"), "{output}");
    assert!(output.to_ascii_lowercase().contains("certificate"), "{output}");
}

#[test]
fn a_missing_root_certificate_file_is_a_configuration_error() {
    let dir = TempDir::new();

    let (status, output) = run_bare(
        dir.path(),
        &[("DB_DRIVER", "postgres"), ("DB_PASSWORD", "x"), ("DB_SSLROOTCERT", "/nonexistent/ca.pem")],
        Duration::from_secs(30),
    );

    assert_eq!(status.code(), Some(2));
    assert!(output.contains("DB_SSLROOTCERT"), "{output}");
}
