//! `pizza-api migrate-data --from-sqlite FILE`: copies a development SQLite
//! database into the PostgreSQL database the `DB_*` variables name, the
//! step from "it runs on my machine" to production that the design leaves
//! to hand-written scripts.
//!
//! Everything is copied as it is: user, pizza and client IDs, timestamps,
//! soft-deleted rows (their IDs stay used), bcrypt hashes (client secrets
//! keep working). The target must be empty: its schema is brought up to date
//! first, then the copy runs in one transaction, so it lands whole or not at
//! all, and the ID sequences continue after the highest copied ID.

use std::path::Path;

use crate::config::{Config, DatabaseConfig};
use crate::db::{Db, DbError, Exec, Row, Statement, Tx, Value, migrate};

/// How many rows of each kind were copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub users: usize,
    pub pizzas: usize,
    pub deleted_pizzas: usize,
    pub clients: usize,
}

/// Copies the SQLite database at `source` into the PostgreSQL database of `config`.
pub fn run(source: &Path, config: &Config) -> Result<Copied, String> {
    if !matches!(config.database, DatabaseConfig::Postgres(_)) {
        return Err("migrate-data copies into PostgreSQL: set DB_DRIVER=postgres and the DB_* variables".into());
    }
    let source = open_source(source)?;
    let target = Db::connect(&config.database, &config.pool).map_err(|e| e.to_string())?;
    migrate::apply(&target).map_err(|e| e.to_string())?;
    target.transaction(|tx| copy(&source, tx)).map_err(|e| e.to_string())
}

/// The SQLite file, read-only, once it is known to hold this build's schema.
fn open_source(path: &Path) -> Result<Db, String> {
    if !path.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let db = Db::open_sqlite_read_only(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let newest = migrate::recorded_version(&db)
        .map_err(|_| format!("{} is not a pizza-api database (no schema_migrations)", path.display()))?;
    let known = migrate::newest_known(&db);
    if newest != Some(known) {
        return Err(format!(
            "{} has schema version {newest:?}; this build copies version {known}: start the service on it once",
            path.display()
        ));
    }
    Ok(db)
}

// Serialise with anything else migrating this database (SQLite: the
// transaction already holds the only write lock).
const LOCK_TABLES: Statement =
    Statement { sqlite: "", postgres: "LOCK TABLE users, pizzas, oauth_clients IN EXCLUSIVE MODE" };
const COUNT_ROWS: Statement = Statement::both(
    "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM pizzas) + (SELECT count(*) FROM oauth_clients)",
);

const SELECT_USERS: Statement =
    Statement::both("SELECT id, email, name, role, created_at, updated_at FROM users ORDER BY id");
const INSERT_USER: Statement = Statement::both(
    "INSERT INTO users (id, email, name, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
);

const SELECT_PIZZAS: Statement = Statement {
    sqlite: "SELECT id, name, name_folded, description, ingredients, price, created_by, created_at, updated_at, \
             deleted_at, version FROM pizzas ORDER BY id",
    postgres: "SELECT id, name, name_folded, description, ingredients::text, price, created_by, created_at, \
               updated_at, deleted_at, version FROM pizzas ORDER BY id",
};
const INSERT_PIZZA: Statement = Statement {
    sqlite: "INSERT INTO pizzas (id, name, name_folded, description, ingredients, price, created_by, created_at, \
             updated_at, deleted_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    postgres: "INSERT INTO pizzas (id, name, name_folded, description, ingredients, price, created_by, created_at, \
               updated_at, deleted_at, version) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11)",
};

const SELECT_CLIENTS: Statement = Statement::both(
    "SELECT id, secret_hash, name, domain, scopes, grant_types, redirect_uri, user_id, created_at, updated_at, \
     deleted_at, secret_generation, previous_secret_hash, previous_secret_expires_at \
     FROM oauth_clients ORDER BY created_at, id",
);
const INSERT_CLIENT: Statement = Statement::both(
    "INSERT INTO oauth_clients (id, secret_hash, name, domain, scopes, grant_types, redirect_uri, user_id, \
     created_at, updated_at, deleted_at, secret_generation, previous_secret_hash, previous_secret_expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
);
const SELECT_REVOKED: Statement =
    Statement::both("SELECT jti, client_id, expires_at, revoked_at FROM revoked_tokens ORDER BY jti");
const INSERT_REVOKED: Statement =
    Statement::both("INSERT INTO revoked_tokens (jti, client_id, expires_at, revoked_at) VALUES ($1, $2, $3, $4)");

// New rows continue after the copied IDs (SQLite's INTEGER PRIMARY KEY does
// by itself).
const RESTART_SEQUENCES: Statement = Statement {
    sqlite: "",
    postgres: "SELECT setval(pg_get_serial_sequence('users', 'id'), coalesce(max(id), 0) + 1, false) FROM users;
               SELECT setval(pg_get_serial_sequence('pizzas', 'id'), coalesce(max(id), 0) + 1, false) FROM pizzas;",
};

fn copy(source: &Db, tx: &Tx<'_>) -> Result<Copied, DbError> {
    // An empty target only: merging two histories of IDs is not a copy.
    tx.run_script(&LOCK_TABLES)?;
    let existing = tx.read_one(&COUNT_ROWS, &[], |row| row.int(0))?.unwrap_or(0);
    if existing > 0 {
        return Err(DbError::Query(format!(
            "the target database already holds {existing} rows; copy into a database the service has not started on"
        )));
    }
    let users = copy_rows(source, tx, &SELECT_USERS, &INSERT_USER, |row| {
        Ok(vec![Cell::Int(row.int(0)?), text(row, 1)?, text(row, 2)?, text(row, 3)?, time(row, 4)?, time(row, 5)?])
    })?;
    let mut deleted = 0;
    let pizzas = copy_rows(source, tx, &SELECT_PIZZAS, &INSERT_PIZZA, |row| {
        let deleted_at = row.opt_time(9)?;
        deleted += usize::from(deleted_at.is_some());
        Ok(vec![
            Cell::Int(row.int(0)?),
            text(row, 1)?,
            text(row, 2)?,
            text(row, 3)?,
            text(row, 4)?,
            Cell::Real(row.real(5)?),
            Cell::Int(row.int(6)?),
            time(row, 7)?,
            time(row, 8)?,
            Cell::Time(deleted_at),
            // Versions carry over, so ETags clients hold stay valid.
            Cell::Int(row.int(10)?),
        ])
    })?;
    let clients = copy_rows(source, tx, &SELECT_CLIENTS, &INSERT_CLIENT, |row| {
        let mut cells = (0..7).map(|i| text(row, i)).collect::<Result<Vec<_>, _>>()?;
        cells.extend([
            Cell::Int(row.int(7)?),
            time(row, 8)?,
            time(row, 9)?,
            Cell::Time(row.opt_time(10)?),
            Cell::Int(row.int(11)?),
            Cell::OptText(row.opt_text(12)?),
            Cell::Time(row.opt_time(13)?),
        ]);
        Ok(cells)
    })?;
    // Tokens revoked on the source stay revoked on the target.
    copy_rows(source, tx, &SELECT_REVOKED, &INSERT_REVOKED, |row| {
        Ok(vec![text(row, 0)?, text(row, 1)?, Cell::Int(row.int(2)?), time(row, 3)?])
    })?;
    tx.run_script(&RESTART_SEQUENCES)?;
    Ok(Copied { users, pizzas, deleted_pizzas: deleted, clients })
}

/// One copied value, owned: a row is read from the source, then written.
enum Cell {
    Int(i64),
    Real(f64),
    Text(String),
    OptText(Option<String>),
    Time(Option<std::time::SystemTime>),
}

impl Cell {
    fn value(&self) -> Value<'_> {
        match self {
            Cell::Int(v) => Value::Int(Some(*v)),
            Cell::Real(v) => Value::Real(*v),
            Cell::Text(v) => Value::Text(Some(v)),
            Cell::OptText(v) => Value::Text(v.as_deref()),
            Cell::Time(v) => Value::Time(*v),
        }
    }
}

fn text(row: &Row<'_>, i: usize) -> Result<Cell, DbError> {
    row.text(i).map(Cell::Text)
}

fn time(row: &Row<'_>, i: usize) -> Result<Cell, DbError> {
    row.time(i).map(|t| Cell::Time(Some(t)))
}

/// Reads every row of `select` from the source and writes it with `insert`;
/// returns how many were copied.
fn copy_rows(
    source: &Db,
    tx: &Tx<'_>,
    select: &Statement,
    insert: &Statement,
    mut cells: impl FnMut(&Row<'_>) -> Result<Vec<Cell>, DbError>,
) -> Result<usize, DbError> {
    let rows = source.read_many(select, &[], &mut cells)?;
    for row in &rows {
        let params: Vec<Value<'_>> = row.iter().map(Cell::value).collect();
        tx.execute(insert, &params)?;
    }
    Ok(rows.len())
}
