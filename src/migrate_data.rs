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
use std::time::SystemTime;

use postgres::types::ToSql;
use rusqlite::OpenFlags;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Config, DatabaseConfig};
use crate::db::{Db, DbError, migrate};

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
    let sqlite = open_source(source)?;
    let target = Db::connect(&config.database, &config.pool).map_err(|e| e.to_string())?;
    migrate::apply(&target).map_err(|e| e.to_string())?;
    let Db::Postgres(pool) = &target else { return Err("the target is not PostgreSQL".into()) };
    let text = |e: DbError| e.to_string();
    let mut client = pool.get().map_err(DbError::from).map_err(text)?;
    let mut tx = client.transaction().map_err(DbError::from).map_err(text)?;
    let copied = copy(&sqlite, &mut tx).map_err(text)?;
    tx.commit().map_err(DbError::from).map_err(text)?;
    Ok(copied)
}

/// Opens the source read-only and checks that its schema is this build's.
fn open_source(path: &Path) -> Result<rusqlite::Connection, String> {
    if !path.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let conn = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let newest: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |row| row.get(0))
        .map_err(|_| format!("{} is not a pizza-api database (no schema_migrations)", path.display()))?;
    let known = migrate::SQLITE.last().map_or(0, |m| m.version);
    if newest != Some(known) {
        return Err(format!(
            "{} has schema version {newest:?}; this build copies version {known}: start the service on it once",
            path.display()
        ));
    }
    Ok(conn)
}

const RESTART_SEQUENCES: &str = "\
    SELECT setval(pg_get_serial_sequence('users', 'id'), coalesce(max(id), 0) + 1, false) FROM users;
    SELECT setval(pg_get_serial_sequence('pizzas', 'id'), coalesce(max(id), 0) + 1, false) FROM pizzas;";

fn copy(sqlite: &rusqlite::Connection, tx: &mut postgres::Transaction<'_>) -> Result<Copied, DbError> {
    // Serialise with anything else migrating this database, then insist on
    // an empty target: merging two histories of IDs is not a copy.
    tx.execute("LOCK TABLE users, pizzas, oauth_clients IN EXCLUSIVE MODE", &[])?;
    let existing: i64 = tx
        .query_one("SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM pizzas) + (SELECT count(*) FROM oauth_clients)", &[])?
        .try_get(0)?;
    if existing > 0 {
        return Err(DbError::Query(format!(
            "the target database already holds {existing} rows; copy into a database the service has not started on"
        )));
    }
    let mut copied = Copied::default();

    let mut users = sqlite.prepare("SELECT id, email, name, role, created_at, updated_at FROM users ORDER BY id")?;
    let mut rows = users.query([])?;
    while let Some(row) = rows.next()? {
        let (id, email, name, role): (i64, String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        let (created, updated) = (instant(row.get_ref(4)?)?, instant(row.get_ref(5)?)?);
        let params: [&(dyn ToSql + Sync); 6] = [&id, &email, &name, &role, &created, &updated];
        tx.execute(
            "INSERT INTO users (id, email, name, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &params,
        )?;
        copied.users += 1;
    }

    let mut pizzas = sqlite.prepare(
        "SELECT id, name, name_folded, description, ingredients, price, created_by, created_at, updated_at, deleted_at \
         FROM pizzas ORDER BY id",
    )?;
    let mut rows = pizzas.query([])?;
    while let Some(row) = rows.next()? {
        let (id, name, folded, description, ingredients, price, owner): (
            i64,
            String,
            String,
            String,
            String,
            f64,
            i64,
        ) = (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?);
        let (created, updated) = (instant(row.get_ref(7)?)?, instant(row.get_ref(8)?)?);
        let deleted = optional_instant(row.get_ref(9)?)?;
        let params: [&(dyn ToSql + Sync); 10] =
            [&id, &name, &folded, &description, &ingredients, &price, &owner, &created, &updated, &deleted];
        tx.execute(
            "INSERT INTO pizzas (id, name, name_folded, description, ingredients, price, created_by, created_at, \
             updated_at, deleted_at) VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9, $10)",
            &params,
        )?;
        copied.pizzas += 1;
        copied.deleted_pizzas += usize::from(deleted.is_some());
    }

    let mut clients = sqlite.prepare(
        "SELECT id, secret_hash, name, domain, scopes, grant_types, redirect_uri, user_id, created_at, updated_at, \
         deleted_at FROM oauth_clients ORDER BY created_at, id",
    )?;
    let mut rows = clients.query([])?;
    while let Some(row) = rows.next()? {
        let text: Vec<String> = (0..7).map(|i| row.get(i)).collect::<Result<_, _>>()?;
        let user_id: i64 = row.get(7)?;
        let (created, updated) = (instant(row.get_ref(8)?)?, instant(row.get_ref(9)?)?);
        let deleted = optional_instant(row.get_ref(10)?)?;
        let params: [&(dyn ToSql + Sync); 11] = [
            &text[0], &text[1], &text[2], &text[3], &text[4], &text[5], &text[6], &user_id, &created, &updated,
            &deleted,
        ];
        tx.execute(
            "INSERT INTO oauth_clients (id, secret_hash, name, domain, scopes, grant_types, redirect_uri, user_id, \
             created_at, updated_at, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &params,
        )?;
        copied.clients += 1;
    }

    // New rows continue after the copied IDs.
    tx.batch_execute(RESTART_SEQUENCES)?;
    Ok(copied)
}

/// A stored SQLite timestamp (RFC 3339 text) as a point in time.
fn instant(value: rusqlite::types::ValueRef<'_>) -> Result<SystemTime, DbError> {
    let text = value.as_str().map_err(|e| DbError::Query(format!("a timestamp is not text: {e}")))?;
    OffsetDateTime::parse(text, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| DbError::Query(format!("timestamp {text:?} does not parse: {e}")))
}

fn optional_instant(value: rusqlite::types::ValueRef<'_>) -> Result<Option<SystemTime>, DbError> {
    match value {
        rusqlite::types::ValueRef::Null => Ok(None),
        value => instant(value).map(Some),
    }
}
