//! Schema migrations: the hand-written SQL files under `sql/<dialect>/`,
//! embedded in the binary and applied in order at start-up.
//!
//! `schema_migrations` records each applied file with a SHA-256 checksum. A
//! file missing from it is applied in its own transaction; a recorded file
//! whose text has changed since stops start-up, because the database no longer
//! matches what the code expects. On PostgreSQL every step holds a
//! transaction-level advisory lock, so replicas starting together apply each
//! file exactly once.

use sha2::{Digest, Sha256};

use super::{Db, DbError, Exec, Statement, Tx, Value};
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
pub const SQLITE: &[Migration] = &[
    Migration { version: 1, name: "0001_initial.sql", sql: include_str!("../../sql/sqlite/0001_initial.sql") },
    Migration { version: 2, name: "0002_credentials.sql", sql: include_str!("../../sql/sqlite/0002_credentials.sql") },
    Migration { version: 3, name: "0003_idempotency.sql", sql: include_str!("../../sql/sqlite/0003_idempotency.sql") },
    Migration {
        version: 4,
        name: "0004_list_indexes.sql",
        sql: include_str!("../../sql/sqlite/0004_list_indexes.sql"),
    },
    Migration {
        version: 5,
        name: "0005_name_backlog.sql",
        sql: include_str!("../../sql/sqlite/0005_name_backlog.sql"),
    },
];

/// The PostgreSQL schema files, oldest first.
pub const POSTGRES: &[Migration] = &[
    Migration { version: 1, name: "0001_initial.sql", sql: include_str!("../../sql/postgres/0001_initial.sql") },
    Migration {
        version: 2,
        name: "0002_credentials.sql",
        sql: include_str!("../../sql/postgres/0002_credentials.sql"),
    },
    Migration {
        version: 3,
        name: "0003_idempotency.sql",
        sql: include_str!("../../sql/postgres/0003_idempotency.sql"),
    },
    Migration {
        version: 4,
        name: "0004_list_indexes.sql",
        sql: include_str!("../../sql/postgres/0004_list_indexes.sql"),
    },
    Migration {
        version: 5,
        name: "0005_name_backlog.sql",
        sql: include_str!("../../sql/postgres/0005_name_backlog.sql"),
    },
];

/// Key of the advisory lock that serialises migrations across replicas
/// (the bytes of "pizzamig" as a big-endian integer).
const LOCK_KEY: i64 = 0x7069_7a7a_616d_6967;

const CREATE: Statement = Statement {
    sqlite: "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TEXT NOT NULL
)",
    postgres: "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)",
};

const SELECT_CHECKSUM: Statement = Statement::both("SELECT checksum FROM schema_migrations WHERE version = $1");
const SELECT_NEWEST: Statement = Statement::both("SELECT max(version) FROM schema_migrations");
const INSERT_APPLIED: Statement =
    Statement::both("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)");

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

/// Applies every schema file the database has not recorded yet, each in its
/// own transaction. On SQLite each transaction holds the write lock from its
/// start (two processes opening one file cannot both apply a file); on
/// PostgreSQL each takes the migration advisory lock (replicas starting
/// together apply each file once). Even `CREATE TABLE IF NOT EXISTS` can fail
/// when two sessions run it at once, so it takes the lock too.
pub fn apply(db: &Db) -> Result<Report, DbError> {
    let migrations = migrations_for(db);
    db.transaction(|tx| {
        tx.lock(LOCK_KEY)?;
        tx.run_script(&CREATE)
    })?;
    let mut report = Report::default();
    for migration in migrations {
        let applied = db.transaction(|tx| {
            tx.lock(LOCK_KEY)?;
            apply_one(tx, migration)
        })?;
        if applied {
            report.applied.push(migration.name);
        } else {
            report.already_applied += 1;
        }
    }
    warn_if_database_is_newer(db, migrations)?;
    Ok(report)
}

/// Applies `migration` in `tx` unless it is recorded already; whether it was.
fn apply_one(tx: &Tx<'_>, migration: &Migration) -> Result<bool, DbError> {
    let recorded = tx.read_one(&SELECT_CHECKSUM, &[migration.version.into()], |row| row.text(0))?;
    if !needs_applying(migration, recorded)? {
        return Ok(false);
    }
    tx.run_script(&Statement::both(migration.sql))?;
    let sum = checksum(migration.sql);
    let params: [Value<'_>; 4] = [migration.version.into(), migration.name.into(), (&sum).into(), clock::now().into()];
    tx.execute(&INSERT_APPLIED, &params)?;
    Ok(true)
}

/// Brings the schema of `db` to exactly `version` inside the caller's
/// transaction `tx` (a restore: schema and data land together or not at
/// all), holding the migration lock. Later files are left to the service's
/// start-up.
pub fn apply_up_to(db: &Db, tx: &Tx<'_>, version: i64) -> Result<(), DbError> {
    tx.lock(LOCK_KEY)?;
    tx.run_script(&CREATE)?;
    for migration in migrations_for(db).iter().filter(|m| m.version <= version) {
        apply_one(tx, migration)?;
    }
    Ok(())
}

/// The schema files of the database's dialect.
fn migrations_for(db: &Db) -> &'static [Migration] {
    match db {
        Db::Sqlite(_) => SQLITE,
        Db::Postgres(_) => POSTGRES,
    }
}

/// The newest schema version this build knows for the database's dialect.
pub fn newest_known(db: &Db) -> i64 {
    migrations_for(db).last().map_or(0, |m| m.version)
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

fn warn_if_database_is_newer(db: &Db, migrations: &[Migration]) -> Result<(), DbError> {
    let newest = db.read_one(&SELECT_NEWEST, &[], |row| row.opt_int(0))?.flatten();
    let known = migrations.last().map_or(0, |m| m.version);
    if let Some(newest) = newest.filter(|&n| n > known) {
        log::warn!("the database has schema version {newest}, newer than this build's {known}: was it rolled back?");
    }
    Ok(())
}

/// The schema version recorded in the database (`None` before any).
pub fn recorded_version(db: &impl Exec) -> Result<Option<i64>, DbError> {
    Ok(db.read_one(&SELECT_NEWEST, &[], |row| row.opt_int(0))?.flatten())
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
