//! `pizza-api migrate-data`: copies a development SQLite database into the
//! PostgreSQL database the `DB_*` variables name (`--from-sqlite FILE`), or
//! that PostgreSQL database into a new SQLite file (`--to-sqlite FILE`, to
//! reproduce a production problem on a laptop).
//!
//! Either way it is a backup followed by a restore (see [`crate::backup`])
//! through a temporary backup file: everything is copied as it is (IDs,
//! timestamps, soft-deleted rows, bcrypt hashes, so client secrets keep
//! working), from one consistent snapshot, streamed in batches; the target
//! must be empty, receives the copy in one transaction and is verified
//! against the backup before it commits; ID sequences continue after the
//! highest copied ID.

use std::path::{Path, PathBuf};

use crate::backup::{self, Progress};
use crate::config::{Config, DatabaseConfig, PoolConfig};

/// `--from-sqlite FILE`: the SQLite database at `source` into PostgreSQL.
/// Returns the line to report.
pub fn from_sqlite(source: &Path, config: &Config) -> Result<String, String> {
    if !matches!(config.database, DatabaseConfig::Postgres(_)) {
        return Err("migrate-data copies into PostgreSQL: set DB_DRIVER=postgres and the DB_* variables".into());
    }
    copy(&DatabaseConfig::Sqlite { path: source.to_owned() }, &config.database, &config.pool)
}

/// `--to-sqlite FILE`: the PostgreSQL database into a new SQLite file.
pub fn to_sqlite(target: &Path, config: &Config) -> Result<String, String> {
    if !matches!(config.database, DatabaseConfig::Postgres(_)) {
        return Err(
            "migrate-data --to-sqlite copies from PostgreSQL: set DB_DRIVER=postgres and the DB_* variables".into()
        );
    }
    copy(&config.database, &DatabaseConfig::Sqlite { path: target.to_owned() }, &config.pool)
}

/// A temporary backup file, removed on drop.
struct TempBackup(PathBuf);

impl Drop for TempBackup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn copy(from: &DatabaseConfig, to: &DatabaseConfig, pool: &PoolConfig) -> Result<String, String> {
    let temp = TempBackup(std::env::temp_dir().join(format!("pizza-api-migrate-data-{}.sqlite", std::process::id())));
    let _ = std::fs::remove_file(&temp.0);
    let source = backup::open_source(from, pool)?;
    let mut progress = Progress::on_terminal();
    backup::backup(&source, &temp.0, &mut progress).map_err(|e| format!("{}: {e}", backup::describe_database(from)))?;
    drop(source);
    let (file, manifest) = backup::open_verified(&temp.0, &mut progress)?;
    backup::restore_into(&file, &manifest, to, pool, false, &mut progress)?;
    Ok(format!(
        "copied {} from {} into {}",
        manifest.describe(),
        backup::describe_database(from),
        backup::describe_database(to)
    ))
}
