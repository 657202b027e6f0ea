//! `pizza-api backup` and `pizza-api restore`: the service's data (users,
//! pizzas with the deleted ones, OAuth clients with their bcrypt hashes) in
//! one portable file, and back into an empty database of either driver.
//!
//! A backup file is a SQLite database: the service's SQLite schema at the
//! source's schema version (so `schema_migrations` too), the rows of every
//! table in [`TABLES`], and two tables of its own, `backup_info` (format,
//! source driver, schema version, times) and `backup_tables` (per table its
//! columns, row count and a SHA-256 of its content, see [`Checksum`]). It is
//! read from one consistent snapshot while the service keeps serving,
//! written under a temporary name and renamed once complete.
//!
//! A restore verifies the whole file against its recorded counts and
//! checksums before it writes anything, then copies it into the target in
//! one transaction (the schema too, when the target has none), moves the ID
//! sequences past the copied IDs, and verifies the target's counts and
//! checksums against the file before it commits.
//!
//! Which columns are copied comes from the schema itself: a column added by
//! a later schema file is backed up and restored without a change here; a
//! new table is one line in [`TABLES`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::clock;
use crate::config::{DatabaseConfig, PoolConfig};
use crate::db::bulk::Cell;
use crate::db::{Db, DbError, Exec, Statement, Tx, Value, migrate, name_backlog};

/// A table whose rows a backup holds.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    /// The unique column rows are ordered by (for the checksum).
    pub key: &'static str,
}

/// Every table of the service's data, parents before the tables that
/// refer to them (the order of a restore; deletes go the other way).
/// `schema_migrations` is not listed: the backup file's schema records it.
pub const TABLES: &[Table] = &[
    Table { name: "users", key: "id" },
    Table { name: "pizzas", key: "id" },
    Table { name: "oauth_clients", key: "id" },
    Table { name: "revoked_tokens", key: "jti" },
];

/// Tables of the schema a backup leaves out, and why.
pub const NOT_BACKED_UP: &[(&str, &str)] = &[
    (
        "revocation_revision",
        "a counter that only tells running replicas to reload revocations; every database has its own (the schema \
         file creates it) and every replica reads the revocations when it starts",
    ),
    (
        "idempotency_keys",
        "stored answers for retried creates, kept 24 hours: a restored database starts without them, so a retry \
         of a create made before the backup creates again",
    ),
    (
        "pizza_name_backlog",
        "the SQLite pizzas whose names wait to enter pizza_name_trigrams: a restore fills it as it writes the \
         pizzas and moves it into the index before it commits",
    ),
    (
        "pizza_name_trigrams",
        "the SQLite index of the name filter (an FTS5 table, with its shadow tables pizza_name_trigrams_*): \
         derived from pizzas.name_folded, and rebuilt as a restore writes the pizzas (through the backlog, see \
         pizza_name_backlog; the schema file of version 4 builds it from existing rows when it is applied later)",
    ),
];

/// The value of `format` in `backup_info`.
pub const FORMAT: &str = "pizza-api-backup/1";

const CREATE_MANIFEST: Statement = Statement::both(
    "-- What this backup file is, one fact a row: format, pizza_api_version, source_driver,
-- schema_version, snapshot_at (when the snapshot was taken), finished_at.
CREATE TABLE backup_info (
    key   TEXT PRIMARY KEY,     -- the fact's name
    value TEXT NOT NULL         -- its value
);
-- The copied tables, in the order a restore writes them.
CREATE TABLE backup_tables (
    position     INTEGER PRIMARY KEY, -- restore order: parents first
    name         TEXT    NOT NULL UNIQUE, -- the table
    key_column   TEXT    NOT NULL,    -- the column rows are ordered by for the checksum
    column_names TEXT    NOT NULL,    -- JSON array: the copied columns, in checksum order
    row_count    INTEGER NOT NULL,    -- rows copied
    sha256       TEXT    NOT NULL     -- hex SHA-256 of the table's content (see README, Backups)
);",
);
const INSERT_INFO: Statement = Statement::both("INSERT INTO backup_info (key, value) VALUES ($1, $2)");
const INSERT_TABLE: Statement = Statement::both(
    "INSERT INTO backup_tables (position, name, key_column, column_names, row_count, sha256) \
     VALUES ($1, $2, $3, $4, $5, $6)",
);
const SELECT_INFO: Statement = Statement::both("SELECT key, value FROM backup_info ORDER BY key");
const SELECT_TABLES: Statement =
    Statement::both("SELECT name, key_column, column_names, row_count, sha256 FROM backup_tables ORDER BY position");
const INTEGRITY_CHECK: Statement = Statement { sqlite: "PRAGMA integrity_check", postgres: "" };
const COUNT_DELETED_PIZZAS: Statement = Statement::both("SELECT count(*) FROM pizzas WHERE deleted_at IS NOT NULL");

/// The content checksum of one table: SHA-256 over the table's name, its
/// column names, then every row in key order, each value encoded with a
/// type tag (`Cell::encode`), so that the same data gives the same sum
/// whichever database it was read from.
pub struct Checksum {
    hasher: Sha256,
    rows: u64,
    buffer: Vec<u8>,
}

impl Checksum {
    pub fn new(table: &str, columns: &[String]) -> Checksum {
        let mut buffer = Vec::new();
        Cell::Text(table.to_owned()).encode(&mut buffer);
        for column in columns {
            Cell::Text(column.clone()).encode(&mut buffer);
        }
        let mut hasher = Sha256::new();
        hasher.update(&buffer);
        Checksum { hasher, rows: 0, buffer }
    }

    pub fn add(&mut self, row: &[Cell]) {
        self.buffer.clear();
        for cell in row {
            cell.encode(&mut self.buffer);
        }
        self.hasher.update(&self.buffer);
        self.rows += 1;
    }

    /// The row count and the hex digest.
    pub fn finish(self) -> (u64, String) {
        (self.rows, self.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// What a backup holds of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    pub name: String,
    pub key: String,
    pub columns: Vec<String>,
    pub rows: u64,
    pub sha256: String,
}

/// What a backup file holds, as its own tables record it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub source_driver: String,
    pub schema_version: i64,
    pub snapshot_at: String,
    pub tables: Vec<TableSummary>,
    pub deleted_pizzas: i64,
}

impl Manifest {
    /// "2 users, 6 pizzas (1 of them deleted) and 4 clients".
    pub fn describe(&self) -> String {
        let counts: Vec<(&str, u64)> = self.tables.iter().map(|t| (t.name.as_str(), t.rows)).collect();
        describe_counts(&counts, self.deleted_pizzas)
    }

    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Row counts as a sentence: "2 users, 6 pizzas (1 of them deleted) and 4 clients".
pub fn describe_counts(counts: &[(&str, u64)], deleted_pizzas: i64) -> String {
    let parts: Vec<String> = counts
        .iter()
        .map(|(table, rows)| {
            let noun = table.trim_start_matches("oauth_").replace('_', " ");
            let deleted = if *table == "pizzas" && deleted_pizzas > 0 {
                format!(" ({deleted_pizzas} of them deleted)")
            } else {
                String::new()
            };
            format!("{rows} {noun}{deleted}")
        })
        .collect();
    match parts.split_last() {
        None => "nothing".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Rows and rate on a terminal (standard error), every quarter second;
/// nothing when standard error is not a terminal.
pub struct Progress {
    enabled: bool,
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    shown: Instant,
}

impl Progress {
    /// Shown only when standard error is a terminal.
    pub fn on_terminal() -> Progress {
        Progress::new(std::io::stderr().is_terminal())
    }

    pub fn new(enabled: bool) -> Progress {
        let now = Instant::now();
        Progress { enabled, label: String::new(), total: 0, done: 0, started: now, shown: now }
    }

    /// Starts a phase of `total` rows.
    fn phase(&mut self, label: &str, total: u64) {
        self.end();
        self.label = label.to_owned();
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
    }

    fn add(&mut self, rows: u64) {
        self.done += rows;
        if self.enabled && self.done % 1000 == 0 && self.shown.elapsed().as_millis() >= 250 {
            self.shown = Instant::now();
            self.show();
        }
    }

    fn show(&self) {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r{}: {} of {} rows, {} rows/s   ",
            self.label,
            self.done,
            self.total,
            (self.done as f64 / seconds) as u64
        );
    }

    /// Ends the current phase's line.
    fn end(&mut self) {
        if self.enabled && !self.label.is_empty() {
            self.show();
            eprintln!();
        }
        self.label.clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.end();
    }
}

fn schema_error(message: String) -> DbError {
    DbError::Schema(message)
}

/// The tables of [`TABLES`] that the schema of `tx` has, with their columns.
fn tables_in(tx: &Tx<'_>) -> Result<Vec<(Table, Vec<String>)>, DbError> {
    let present = tx.table_names()?;
    TABLES.iter().filter(|t| present.iter().any(|p| p == t.name)).map(|t| Ok((*t, tx.column_names(t.name)?))).collect()
}

/// The schema version of a database about to be read; refuses one that is
/// not a pizza-api database or is newer than this build.
fn schema_version(tx: &Tx<'_>, newest_known: i64) -> Result<i64, DbError> {
    if !tx.table_names()?.iter().any(|t| t == "schema_migrations") {
        return Err(schema_error("not a pizza-api database (no schema_migrations)".into()));
    }
    let version = migrate::recorded_version(tx)?
        .ok_or_else(|| schema_error("the database has no schema yet (no schema file recorded)".into()))?;
    if version > newest_known {
        return Err(schema_error(format!(
            "schema version {version} is newer than this build's {newest_known}: use a newer pizza-api"
        )));
    }
    Ok(version)
}

fn sorted(columns: &[String]) -> Vec<&String> {
    let mut sorted: Vec<&String> = columns.iter().collect();
    sorted.sort();
    sorted
}

/// Writes a backup of `source` to `to`, which must not exist: first under
/// `<to>.partial`, renamed once complete and on disk.
pub fn backup(source: &Db, to: &Path, progress: &mut Progress) -> Result<Manifest, String> {
    if to.exists() {
        return Err(format!("{} already exists: choose another name", to.display()));
    }
    let partial = with_suffix(to, ".partial");
    remove_sqlite_files(&partial);
    let result = write_backup(source, &partial, progress).map_err(|e| e.to_string());
    let result = result.and_then(|manifest| {
        publish(&partial, to).map_err(|e| format!("cannot complete {}: {e}", to.display()))?;
        Ok(manifest)
    });
    if result.is_err() {
        remove_sqlite_files(&partial);
    }
    result
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes an SQLite file and its journals, if present.
fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(path, suffix));
    }
}

/// Flushes the finished file, renames it into place and flushes the directory.
fn publish(partial: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::File::open(partial)?.sync_all()?;
    std::fs::rename(partial, to)?;
    let dir = match to.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

fn write_backup(source: &Db, partial: &Path, progress: &mut Progress) -> Result<Manifest, DbError> {
    let file = Db::create_sqlite_file(partial)?;
    let snapshot_at = clock::format(clock::now());
    let mut manifest = source.snapshot(|src| {
        let version = schema_version(src, migrate::newest_known(&file))?;
        file.transaction(|dst| {
            migrate::apply_up_to(&file, dst, version)?;
            dst.run_script(&CREATE_MANIFEST)?;
            let tables = tables_in(dst)?;
            let mut total = 0;
            for (table, columns) in &tables {
                let found = src.column_names(table.name)?;
                if sorted(&found) != sorted(columns) {
                    return Err(schema_error(format!(
                        "table {} has columns {found:?}, schema version {version} has {columns:?}",
                        table.name
                    )));
                }
                total += src.count_rows(table.name)? as u64;
            }
            progress.phase("backup", total);
            let mut summaries = Vec::new();
            for (position, (table, columns)) in tables.into_iter().enumerate() {
                let summary = copy_table(src, dst, table, columns, progress, None)?;
                let names = serde_json::to_string(&summary.columns).unwrap_or_default();
                let params: [Value<'_>; 6] = [
                    (position as i64).into(),
                    table.name.into(),
                    table.key.into(),
                    (&names).into(),
                    (summary.rows as i64).into(),
                    (&summary.sha256).into(),
                ];
                dst.execute(&INSERT_TABLE, &params)?;
                summaries.push(summary);
            }
            progress.end();
            let facts = [
                ("format", FORMAT.to_owned()),
                ("pizza_api_version", env!("CARGO_PKG_VERSION").to_owned()),
                ("source_driver", source.driver_name().to_owned()),
                ("schema_version", version.to_string()),
                ("snapshot_at", snapshot_at.clone()),
                ("finished_at", clock::format(clock::now())),
            ];
            for (key, value) in &facts {
                dst.execute(&INSERT_INFO, &[(*key).into(), value.into()])?;
            }
            Ok(Manifest {
                source_driver: source.driver_name().to_owned(),
                schema_version: version,
                snapshot_at: snapshot_at.clone(),
                tables: summaries,
                deleted_pizzas: 0,
            })
        })
    })?;
    manifest.deleted_pizzas = count_deleted_pizzas(&file)?;
    Ok(manifest)
}

fn count_deleted_pizzas(file: &Db) -> Result<i64, DbError> {
    Ok(file.read_one(&COUNT_DELETED_PIZZAS, &[], |row| row.int(0))?.unwrap_or(0))
}

/// Streams one table from `src` into `dst`, summing it on the way.
/// `fail_after`: a failure injected once that many rows are written (tests).
fn copy_table(
    src: &Tx<'_>,
    dst: &Tx<'_>,
    table: Table,
    columns: Vec<String>,
    progress: &mut Progress,
    fail_after: Option<&mut u64>,
) -> Result<TableSummary, DbError> {
    let mut sum = Checksum::new(table.name, &columns);
    let mut fail_after = fail_after;
    dst.load(table.name, &columns, |loader| {
        src.stream(table.name, &columns, table.key, &mut |row| {
            sum.add(&row);
            loader.push(&row)?;
            progress.add(1);
            if let Some(left) = fail_after.as_deref_mut() {
                if *left == 0 {
                    return Err(DbError::Query("injected failure (PIZZA_API_TEST_RESTORE_FAIL_AFTER)".into()));
                }
                *left -= 1;
            }
            Ok(())
        })
    })?;
    let (rows, sha256) = sum.finish();
    Ok(TableSummary { name: table.name.to_owned(), key: table.key.to_owned(), columns, rows, sha256 })
}

/// Sums one table of `tx` as a backup records it.
fn checksum_of(tx: &Tx<'_>, table: &TableSummary, progress: &mut Progress) -> Result<(u64, String), DbError> {
    let mut sum = Checksum::new(&table.name, &table.columns);
    tx.stream(&table.name, &table.columns, &table.key, &mut |row| {
        sum.add(&row);
        progress.add(1);
        Ok(())
    })?;
    Ok(sum.finish())
}

/// Opens a backup file and checks all of it (SQLite's integrity check,
/// then every table's row count and checksum against the recorded ones)
/// before anything reads it for a restore.
pub fn open_verified(path: &Path, progress: &mut Progress) -> Result<(Db, Manifest), String> {
    if !path.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let damaged = |cause: String| format!("{} is not a usable backup: {cause}", path.display());
    let file = Db::open_sqlite_read_only(path).map_err(|e| damaged(e.to_string()))?;
    let manifest = file.snapshot(|tx| read_manifest(&file, tx, progress)).map_err(|e| damaged(e.to_string()))?;
    Ok((file, manifest))
}

fn read_manifest(file: &Db, tx: &Tx<'_>, progress: &mut Progress) -> Result<Manifest, DbError> {
    let problems = tx.read_many(&INTEGRITY_CHECK, &[], |row| row.text(0))?;
    if problems.iter().any(|p| p != "ok") {
        return Err(DbError::Query(format!("the file is damaged (truncated?): {}", problems.join("; "))));
    }
    let names = tx.table_names()?;
    if !names.iter().any(|n| n == "backup_info") || !names.iter().any(|n| n == "backup_tables") {
        return Err(DbError::Query("it has no backup_info: not written by pizza-api backup".into()));
    }
    let info = tx.read_many(&SELECT_INFO, &[], |row| Ok((row.text(0)?, row.text(1)?)))?;
    let fact = |key: &str| info.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    if fact("format") != FORMAT {
        return Err(DbError::Query(format!("format {:?}, this build reads {FORMAT:?}", fact("format"))));
    }
    let version: i64 = fact("schema_version").parse().unwrap_or(-1);
    let recorded = schema_version(tx, migrate::newest_known(file))?;
    if recorded != version {
        return Err(DbError::Query(format!(
            "backup_info says schema version {version}, its schema_migrations {recorded}"
        )));
    }
    let tables = tx.read_many(&SELECT_TABLES, &[], |row| {
        let columns: Vec<String> = serde_json::from_str(&row.text(2)?)
            .map_err(|e| DbError::Query(format!("backup_tables.column_names: {e}")))?;
        Ok(TableSummary {
            name: row.text(0)?,
            key: row.text(1)?,
            columns,
            rows: row.int(3)? as u64,
            sha256: row.text(4)?,
        })
    })?;
    let total = tables.iter().map(|t| t.rows).sum();
    progress.phase("verifying the backup file", total);
    for table in &tables {
        let (rows, sha256) = checksum_of(tx, table, progress)?;
        if rows != table.rows {
            return Err(DbError::Query(format!(
                "table {} has {rows} rows where {} were backed up (damaged or edited)",
                table.name, table.rows
            )));
        }
        if sha256 != table.sha256 {
            return Err(DbError::Query(format!(
                "the content of table {} does not match its checksum (damaged or edited)",
                table.name
            )));
        }
    }
    progress.end();
    Ok(Manifest {
        source_driver: fact("source_driver"),
        schema_version: version,
        snapshot_at: fact("snapshot_at"),
        deleted_pizzas: tx.read_one(&COUNT_DELETED_PIZZAS, &[], |row| row.int(0))?.unwrap_or(0),
        tables,
    })
}

/// What a restore found in its target before writing.
#[derive(Debug, Default)]
pub struct TargetState {
    /// The target's schema version; `None` when it has no schema yet.
    pub schema_version: Option<i64>,
    /// Rows already in each table the backup holds.
    pub counts: Vec<(String, u64)>,
}

impl TargetState {
    pub fn rows(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    pub fn describe(&self) -> String {
        let counts: Vec<(&str, u64)> = self.counts.iter().map(|(t, n)| (t.as_str(), *n)).collect();
        describe_counts(&counts, 0)
    }
}

/// Reads the target's schema version and row counts (inside `tx`).
fn target_state(tx: &Tx<'_>, manifest: &Manifest) -> Result<TargetState, DbError> {
    let present = tx.table_names()?;
    let mut state = TargetState::default();
    if present.iter().any(|t| t == "schema_migrations") {
        state.schema_version = migrate::recorded_version(tx)?;
    }
    for table in &manifest.tables {
        if present.contains(&table.name) {
            state.counts.push((table.name.clone(), tx.count_rows(&table.name)? as u64));
        }
    }
    Ok(state)
}

/// Refuses a target whose schema differs from the backup's or that holds
/// rows (unless `force`).
fn check_target(state: &TargetState, manifest: &Manifest, force: bool) -> Result<(), DbError> {
    if let Some(version) = state.schema_version.filter(|v| *v != manifest.schema_version) {
        return Err(schema_error(format!(
            "the target has schema version {version} and the backup {}: restore into an empty database",
            manifest.schema_version
        )));
    }
    if state.rows() > 0 && !force {
        return Err(DbError::Conflict(format!(
            "the target database already holds {} rows ({}); restore into a database the service has not \
             started on, or pass --force to replace them",
            state.rows(),
            state.describe()
        )));
    }
    Ok(())
}

/// `--dry-run`: what a restore into `target` would find, without writing.
pub fn inspect_target(target: &Db, manifest: &Manifest, force: bool) -> Result<TargetState, String> {
    let state = target.snapshot(|tx| target_state(tx, manifest)).map_err(|e| e.to_string())?;
    check_target(&state, manifest, force).map_err(|e| e.to_string())?;
    Ok(state)
}

/// Test builds only: `PIZZA_API_TEST_RESTORE_FAIL_AFTER=N` makes a restore
/// fail once it has written N rows (the test of all-or-nothing).
fn injected_failure() -> Option<u64> {
    if cfg!(debug_assertions) { std::env::var("PIZZA_API_TEST_RESTORE_FAIL_AFTER").ok()?.parse().ok() } else { None }
}

/// Restores the verified backup `file` into `target` in one transaction;
/// returns what the target held before (replaced only with `force`).
pub fn restore(
    file: &Db,
    manifest: &Manifest,
    target: &Db,
    force: bool,
    progress: &mut Progress,
) -> Result<TargetState, String> {
    let mut fail_after = injected_failure();
    target
        .transaction(|tx| {
            tx.without_statement_timeout()?;
            let present = tx.table_names()?;
            let names: Vec<&str> =
                manifest.tables.iter().map(|t| t.name.as_str()).filter(|n| present.iter().any(|p| p == n)).collect();
            tx.lock_tables(&names)?;
            let state = target_state(tx, manifest)?;
            check_target(&state, manifest, force)?;
            migrate::apply_up_to(target, tx, manifest.schema_version)?;
            if state.rows() > 0 {
                log::warn!("restore --force: replacing {} in the target", state.describe());
                for table in manifest.tables.iter().rev() {
                    tx.delete_all(&table.name)?;
                }
            }
            for table in &manifest.tables {
                let found = tx.column_names(&table.name)?;
                if sorted(&found) != sorted(&table.columns) {
                    return Err(schema_error(format!(
                        "the target's table {} has columns {found:?}, the backup {:?}",
                        table.name, table.columns
                    )));
                }
            }
            progress.phase("restoring", manifest.total_rows());
            file.snapshot(|src| {
                for table in &manifest.tables {
                    copy_table(src, tx, known_table(table)?, table.columns.clone(), progress, fail_after.as_mut())?;
                }
                Ok(())
            })?;
            for table in &manifest.tables {
                tx.restart_sequence(&table.name, &table.key)?;
            }
            name_backlog::move_all(tx)?;
            progress.phase("verifying the target", manifest.total_rows());
            for table in &manifest.tables {
                let (rows, sha256) = checksum_of(tx, table, progress)?;
                if rows != table.rows || sha256 != table.sha256 {
                    return Err(DbError::Query(format!(
                        "verification failed: table {} in the target ({rows} rows) does not match the backup \
                         ({} rows); nothing was written",
                        table.name, table.rows
                    )));
                }
            }
            progress.end();
            Ok(state)
        })
        .map_err(|e| e.to_string())
}

/// The [`TABLES`] entry of a table a backup file holds: a restore writes
/// only tables this build knows, ordered by the same key.
fn known_table(table: &TableSummary) -> Result<Table, DbError> {
    TABLES.iter().find(|t| t.name == table.name && t.key == table.key).copied().ok_or_else(|| {
        DbError::Query(format!(
            "the backup holds table {} (by {}), which this build does not know",
            table.name, table.key
        ))
    })
}

/// Connects to the database of `database` and restores into it; a SQLite
/// file the restore created is removed again when it fails.
pub fn restore_into(
    file: &Db,
    manifest: &Manifest,
    database: &DatabaseConfig,
    pool: &PoolConfig,
    force: bool,
    progress: &mut Progress,
) -> Result<TargetState, String> {
    let new_file = match database {
        DatabaseConfig::Sqlite { path } => Some(path).filter(|p| !p.exists()),
        DatabaseConfig::Postgres(_) => None,
    };
    // No idle connections kept: the pool opens none in the background, so
    // none can create the SQLite file again after it was removed.
    let pool = PoolConfig { max_idle: 0, ..pool.clone() };
    let target = Db::connect(database, &pool).map_err(|e| e.to_string());
    let result = target.and_then(|target| restore(file, manifest, &target, force, progress));
    if let (Err(_), Some(path)) = (&result, new_file) {
        remove_sqlite_files(path);
    }
    result
}

/// Opens the database a backup reads: an SQLite file read-only (nothing is
/// created or migrated), PostgreSQL through the pool.
pub fn open_source(database: &DatabaseConfig, pool: &PoolConfig) -> Result<Db, String> {
    match database {
        DatabaseConfig::Sqlite { path } => {
            if !path.is_file() {
                return Err(format!("{} is not a file", path.display()));
            }
            Db::open_sqlite_read_only(path).map_err(|e| format!("cannot open {}: {e}", path.display()))
        }
        DatabaseConfig::Postgres(_) => Db::connect(database, pool).map_err(|e| e.to_string()),
    }
}

/// Where a database is, for messages (never a password).
pub fn describe_database(database: &DatabaseConfig) -> String {
    match database {
        DatabaseConfig::Sqlite { path } => format!("SQLite file {}", path.display()),
        DatabaseConfig::Postgres(pg) => format!("PostgreSQL database {} on {}:{}", pg.name, pg.host, pg.port),
    }
}

/// `restore`: verifies `from`, then restores it into `database` (or, with
/// `dry_run`, only checks that it could). Returns the line to report.
pub fn run_restore(
    from: &Path,
    database: &DatabaseConfig,
    pool: &PoolConfig,
    force: bool,
    dry_run: bool,
) -> Result<String, String> {
    let mut progress = Progress::on_terminal();
    let (file, manifest) = open_verified(from, &mut progress)?;
    let target_name = describe_database(database);
    let started = Instant::now();
    let new_file = match database {
        DatabaseConfig::Sqlite { path } => !path.exists(),
        DatabaseConfig::Postgres(_) => false,
    };
    if dry_run {
        let state = if new_file {
            TargetState::default()
        } else {
            inspect_target(&open_source(database, pool)?, &manifest, force)?
        };
        let replacing = if state.rows() > 0 { format!(", replacing {}", state.describe()) } else { String::new() };
        return Ok(format!(
            "dry run: {} is a complete backup ({} from {}, schema version {}, taken {}); restoring it into {}{} \
             would succeed; nothing was written",
            from.display(),
            manifest.describe(),
            manifest.source_driver,
            manifest.schema_version,
            manifest.snapshot_at,
            target_name,
            replacing
        ));
    }
    let state = restore_into(&file, &manifest, database, pool, force, &mut progress)?;
    let replaced = if state.rows() > 0 { format!(" (replacing {})", state.describe()) } else { String::new() };
    Ok(format!(
        "restored {} from {} into {}{replaced} in {:.1} s, verified (schema version {}, backup of {} taken {})",
        manifest.describe(),
        from.display(),
        target_name,
        started.elapsed().as_secs_f64(),
        manifest.schema_version,
        manifest.source_driver,
        manifest.snapshot_at
    ))
}

/// `backup --to FILE`: returns the line to report.
pub fn run_backup(to: &Path, database: &DatabaseConfig, pool: &PoolConfig) -> Result<String, String> {
    let started = Instant::now();
    let source = open_source(database, pool)?;
    let mut progress = Progress::on_terminal();
    let manifest = backup(&source, to, &mut progress)?;
    drop(progress);
    let seconds = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    Ok(format!(
        "backed up {} from the {} database ({}, schema version {}) to {} ({:.1} MiB) in {seconds:.1} s, {:.0} rows/s",
        manifest.describe(),
        manifest.source_driver,
        describe_database(database),
        manifest.schema_version,
        to.display(),
        bytes as f64 / 1_048_576.0,
        manifest.total_rows() as f64 / seconds.max(1e-3)
    ))
}

/// The file name prefix of the backups `--to-dir` writes and prunes.
const DIR_PREFIX: &str = "pizza-api-";
const DIR_SUFFIX: &str = ".sqlite";

/// `backup --to-dir DIR [--keep N]`: a backup named after the UTC time
/// (`pizza-api-20250101T020000.000000Z.sqlite`), then, with `keep`, every older
/// backup there but the newest `keep` deleted (and any `.partial` left by
/// an interrupted run).
pub fn run_backup_to_dir(
    dir: &Path,
    keep: Option<usize>,
    database: &DatabaseConfig,
    pool: &PoolConfig,
) -> Result<String, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    // 2025-11-10T12:34:56.123456Z → 20251110T123456.123456Z: sorts in time order.
    let stamp: String = clock::format(clock::now()).chars().filter(|c| !matches!(c, '-' | ':')).collect();
    let to = dir.join(format!("{DIR_PREFIX}{stamp}{DIR_SUFFIX}"));
    for stale in backups_in(dir, ".partial") {
        log::warn!("removing {}, left by an interrupted backup", stale.display());
        remove_sqlite_files(&stale);
    }
    let mut line = run_backup(&to, database, pool)?;
    if let Some(keep) = keep {
        let mut done = backups_in(dir, "");
        done.sort();
        let excess = done.len().saturating_sub(keep);
        for old in &done[..excess] {
            std::fs::remove_file(old).map_err(|e| format!("cannot delete old backup {}: {e}", old.display()))?;
        }
        line.push_str(&format!("; kept the newest {}, deleted {excess} older", done.len() - excess));
    }
    Ok(line)
}

/// The backups `--to-dir` wrote in `dir` (with `extra` after the suffix).
fn backups_in(dir: &Path, extra: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(DIR_PREFIX)
                    && n.strip_suffix(extra).is_some_and(|stem| stem.ends_with(DIR_SUFFIX) && stem.len() > 17)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_a_sentence() {
        assert_eq!(
            describe_counts(&[("users", 2), ("pizzas", 6), ("oauth_clients", 4)], 1),
            "2 users, 6 pizzas (1 of them deleted) and 4 clients"
        );
        assert_eq!(describe_counts(&[("users", 0)], 0), "0 users");
    }

    #[test]
    fn the_same_rows_give_the_same_checksum_and_any_change_another() {
        let columns = vec!["id".to_owned(), "name".to_owned()];
        let sum = |rows: &[Vec<Cell>]| {
            let mut sum = Checksum::new("pizzas", &columns);
            rows.iter().for_each(|r| sum.add(r));
            sum.finish()
        };
        let rows = vec![vec![Cell::Int(1), Cell::Text("a".into())], vec![Cell::Int(2), Cell::Null]];
        assert_eq!(sum(&rows), sum(&rows.clone()));
        let mut edited = rows.clone();
        edited[1][1] = Cell::Text(String::new());
        assert_ne!(sum(&rows).1, sum(&edited).1);
        assert_ne!(sum(&rows).1, sum(&rows[..1]).1);
    }

    #[test]
    fn every_table_of_the_schema_is_backed_up() {
        // A table added by a schema file must be added to TABLES (or the
        // backup would silently leave it out).
        let schema: String = migrate::SQLITE.iter().map(|m| m.sql).collect();
        let created: Vec<&str> = ["CREATE TABLE ", "CREATE VIRTUAL TABLE "]
            .iter()
            .flat_map(|create| schema.split(create).skip(1))
            .filter_map(|rest| rest.trim_start_matches("IF NOT EXISTS ").split_whitespace().next())
            .collect();
        assert!(created.contains(&"pizza_name_trigrams"), "{created:?}");
        let listed: Vec<&str> =
            TABLES.iter().map(|t| t.name).chain(NOT_BACKED_UP.iter().map(|(name, _)| *name)).collect();
        for table in &created {
            assert!(listed.contains(table), "table {table} of the schema is missing from backup::TABLES");
        }
    }
}
