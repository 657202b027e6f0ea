//! Schema migrations: the hand-written SQL files under `sql/<dialect>/`,
//! embedded in the binary and applied in order at start-up.
//!
//! `schema_migrations` records each applied file with a SHA-256 checksum. A
//! file missing from it is applied in its own transaction; a recorded file
//! whose text has changed since stops start-up, because the database no longer
//! matches what the code expects. On PostgreSQL every step holds a
//! transaction-level advisory lock, so replicas starting together apply each
//! file exactly once.

use rusqlite::{OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};

use super::{Db, DbError};
use crate::clock;

/// One schema file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The number the file name starts with.
    pub version: i64,
    /// The file name, for logs and errors.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// The SQLite schema files, oldest first.
pub const SQLITE: &[Migration] =
    &[Migration { version: 1, name: "0001_initial.sql", sql: include_str!("../../sql/sqlite/0001_initial.sql") }];

/// The PostgreSQL schema files, oldest first.
pub const POSTGRES: &[Migration] =
    &[Migration { version: 1, name: "0001_initial.sql", sql: include_str!("../../sql/postgres/0001_initial.sql") }];

/// Key of the advisory lock that serialises migrations across replicas
/// (the bytes of "pizzamig" as a big-endian integer).
const PG_LOCK_KEY: i64 = 0x7069_7a7a_616d_6967;

const SQLITE_CREATE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";

const PG_CREATE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

const SELECT_CHECKSUM: &str = "SELECT checksum FROM schema_migrations WHERE version = $1";
const SELECT_NEWEST: &str = "SELECT max(version) FROM schema_migrations";

/// The hex SHA-256 of a schema file's text.
pub fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a run of [`apply`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files applied by this run.
    pub applied: Vec<&'static str>,
    /// Files that were already applied.
    pub already_applied: usize,
}

/// Applies every schema file the database lacks.
pub fn apply(db: &Db) -> Result<Report, DbError> {
    let (migrations, report) = match db {
        Db::Sqlite(sqlite) => (SQLITE, apply_sqlite(&mut *sqlite.pool.get()?, SQLITE)?),
        Db::Postgres(pool) => (POSTGRES, apply_postgres(&mut *pool.get()?, POSTGRES)?),
    };
    warn_if_database_is_newer(db, migrations)?;
    Ok(report)
}

/// Whether `recorded` (the checksum in the database, if any) means the file
/// still has to be applied; an edited file is an error.
fn needs_applying(migration: &Migration, recorded: Option<String>) -> Result<bool, DbError> {
    match recorded {
        None => Ok(true),
        Some(sum) if sum == checksum(migration.sql) => Ok(false),
        Some(sum) => Err(DbError::Schema(format!(
            "schema file {} was changed after it was applied (recorded checksum {}, this build has {}); \
             restore it and put the change in a new file",
            migration.name,
            &sum[..sum.len().min(12)],
            &checksum(migration.sql)[..12]
        ))),
    }
}

fn apply_sqlite(conn: &mut rusqlite::Connection, migrations: &[Migration]) -> Result<Report, DbError> {
    conn.execute_batch(SQLITE_CREATE)?;
    let mut report = Report::default();
    for migration in migrations {
        // IMMEDIATE takes the write lock first, so two processes opening one
        // file cannot both decide to apply the same migration.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let recorded = tx.query_row(SELECT_CHECKSUM, [migration.version], |row| row.get::<_, String>(0)).optional()?;
        if needs_applying(migration, recorded)? {
            tx.execute_batch(migration.sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
                (migration.version, migration.name, checksum(migration.sql), clock::format(clock::now())),
            )?;
            report.applied.push(migration.name);
        } else {
            report.already_applied += 1;
        }
        tx.commit()?;
    }
    Ok(report)
}

fn apply_postgres(client: &mut postgres::Client, migrations: &[Migration]) -> Result<Report, DbError> {
    {
        // Even CREATE TABLE IF NOT EXISTS can fail when two sessions run it at
        // once, so it takes the lock too.
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_LOCK_KEY])?;
        tx.batch_execute(PG_CREATE)?;
        tx.commit()?;
    }
    let mut report = Report::default();
    for migration in migrations {
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_LOCK_KEY])?;
        let recorded = tx.query_opt(SELECT_CHECKSUM, &[&migration.version])?.map(|row| row.get::<_, String>(0));
        if needs_applying(migration, recorded)? {
            tx.batch_execute(migration.sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                &[&migration.version, &migration.name, &checksum(migration.sql)],
            )?;
            report.applied.push(migration.name);
        } else {
            report.already_applied += 1;
        }
        tx.commit()?;
    }
    Ok(report)
}

/// A database migrated by a newer build still works with additive changes,
/// and refusing to start would break rolling back a deployment: warn instead.
fn warn_if_database_is_newer(db: &Db, migrations: &[Migration]) -> Result<(), DbError> {
    let newest: Option<i64> = match db {
        Db::Sqlite(sqlite) => sqlite.pool.get()?.query_row(SELECT_NEWEST, [], |row| row.get(0))?,
        Db::Postgres(pool) => pool.get()?.query_one(SELECT_NEWEST, &[])?.get(0),
    };
    let known = migrations.last().map_or(0, |m| m.version);
    if let Some(newest) = newest.filter(|&n| n > known) {
        log::warn!("the database has schema version {newest}, newer than this build's {known}: was it rolled back?");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn files_in(dir: &str) -> BTreeSet<String> {
        let path = format!("{}/sql/{dir}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }

    fn listed(migrations: &[Migration]) -> BTreeSet<String> {
        migrations.iter().map(|m| m.name.to_owned()).collect()
    }

    #[test]
    fn every_schema_file_is_embedded() {
        assert_eq!(files_in("sqlite"), listed(SQLITE));
        assert_eq!(files_in("postgres"), listed(POSTGRES));
    }

    #[test]
    fn versions_match_file_names_and_increase() {
        for migrations in [SQLITE, POSTGRES] {
            for (i, m) in migrations.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "{}", m.name);
                assert!(m.name.starts_with(&format!("{:04}_", m.version)), "{}", m.name);
            }
        }
    }

    #[test]
    fn both_dialects_have_the_same_files() {
        assert_eq!(listed(SQLITE), listed(POSTGRES));
    }

    #[test]
    fn an_edited_file_is_refused() {
        let m = SQLITE[0];
        assert!(needs_applying(&m, None).unwrap());
        assert!(!needs_applying(&m, Some(checksum(m.sql))).unwrap());
        assert!(matches!(needs_applying(&m, Some("0".repeat(64))), Err(DbError::Schema(_))));
    }
}
