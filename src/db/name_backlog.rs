//! SQLite only: moves the names waiting on `pizza_name_backlog` into the
//! trigram index of the name filter, in batches
//! (sql/sqlite/0005_name_backlog.sql). Writing one name into the FTS5 index
//! writes an index segment, which doubled the cost of a create; a batch
//! writes one segment for all its names. Until its batch is moved, the
//! list reads a name from the backlog, so nothing waits for this to be
//! found. PostgreSQL has nothing to move: its GIN index batches by itself.

use std::time::Duration;

use super::{Db, DbError, Exec, Statement, Tx};

/// How often the service moves the backlog into the index. Creates at the
/// fastest leave a few hundred names per interval for the list to read from
/// the backlog.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// The most names moved in one transaction (which holds the write lock):
/// a large backlog (a bulk insert, a restore) is moved in steps that let
/// requests write in between.
pub const BATCH: i64 = 2_000;

pub(crate) const LAST_OF_BATCH: Statement = Statement {
    sqlite: "SELECT max(id) FROM (SELECT id FROM pizza_name_backlog ORDER BY id LIMIT CAST($1 AS INTEGER))",
    postgres: "",
};

pub(crate) const INDEX_NAMES: Statement = Statement {
    sqlite: "INSERT INTO pizza_name_trigrams (rowid, name_folded) \
             SELECT pizzas.id, pizzas.name_folded FROM pizza_name_backlog \
             CROSS JOIN pizzas ON pizzas.id = pizza_name_backlog.id WHERE pizza_name_backlog.id <= $1",
    postgres: "",
};

pub(crate) const CLEAR: Statement = Statement { sqlite: "DELETE FROM pizza_name_backlog WHERE id <= $1", postgres: "" };

/// Whether `db` has a backlog to move (SQLite).
pub fn applies_to(db: &Db) -> bool {
    matches!(db, Db::Sqlite(_))
}

/// Moves up to [`BATCH`] names into the index in one transaction; returns
/// how many left the backlog. Takes the write lock only when the backlog holds something.
pub fn move_batch(db: &Db) -> Result<usize, DbError> {
    if !applies_to(db) || last_of_batch(db)?.is_none() {
        return Ok(0);
    }
    db.transaction(move_one_batch)
}

/// Moves the whole backlog inside the caller's transaction (a restore, so
/// that the database it leaves has every name indexed). Nothing on
/// PostgreSQL, or on a schema older than the backlog.
pub fn move_all(tx: &Tx<'_>) -> Result<(), DbError> {
    if tx.is_postgres() || !tx.table_names()?.iter().any(|name| name == "pizza_name_backlog") {
        return Ok(());
    }
    while move_one_batch(tx)? > 0 {}
    Ok(())
}

fn last_of_batch(db: &impl Exec) -> Result<Option<i64>, DbError> {
    Ok(db.read_one(&LAST_OF_BATCH, &[BATCH.into()], |row| row.opt_int(0))?.flatten())
}

fn move_one_batch(tx: &Tx<'_>) -> Result<usize, DbError> {
    let Some(last) = last_of_batch(tx)? else { return Ok(0) };
    tx.execute(&INDEX_NAMES, &[last.into()])?;
    Ok(tx.execute(&CLEAR, &[last.into()])? as usize)
}
