//! Whole tables streamed between databases, for `backup` and `restore`: a
//! read-only snapshot to read from ([`Db::snapshot`]), rows as portable
//! [`Cell`]s, and a loader that writes them inside a [`Tx`].
//!
//! The service's own statements are fixed texts ([`super::Statement`]); the
//! statements here are generated from a table name and the column names the
//! database's schema reports (never from user input), so that a column added
//! by a later schema file is copied without any change to this code.
//!
//! A [`Cell`] holds a value as the SQLite dialect of the schema stores it:
//! timestamps as the RFC 3339 text with microseconds the service writes,
//! JSON as compact text, booleans as 0 or 1. PostgreSQL values are converted
//! on the way out and back by the type of their column, so the same row reads
//! as the same cells from either database.

use std::cell::RefCell;
use std::error::Error as StdError;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::exec::{TxInner, pg_finish, timed};
use super::{Breaker, Db, DbError, Exec, FileId, PgConn, SqliteDb, Statement, Tx, Value, acquire, describe};
use crate::clock;

/// Rows fetched from PostgreSQL per round trip while streaming a table.
const PG_BATCH_ROWS: i32 = 1000;

/// One value of a copied row, in the SQLite dialect's representation.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Cell {
    /// Appends an unambiguous encoding of the value (a type tag, then a
    /// fixed-width number or a length-prefixed byte string) for checksums.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Cell::Null => out.push(b'N'),
            Cell::Int(v) => {
                out.push(b'I');
                out.extend_from_slice(&v.to_be_bytes());
            }
            Cell::Real(v) => {
                out.push(b'R');
                out.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            Cell::Text(v) => encode_bytes(b'T', v.as_bytes(), out),
            Cell::Blob(v) => encode_bytes(b'B', v, out),
        }
    }
}

fn encode_bytes(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// JSON as the service writes it on SQLite (compact, in the order given):
/// PostgreSQL's `jsonb` prints spaces after commas.
fn canonical_json(text: &str) -> Result<String, Box<dyn StdError + Sync + Send>> {
    Ok(serde_json::to_string(&serde_json::from_str::<serde_json::Value>(text)?)?)
}

impl rusqlite::ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Cell::Null => ToSqlOutput::from(rusqlite::types::Null),
            Cell::Int(v) => ToSqlOutput::from(*v),
            Cell::Real(v) => ToSqlOutput::from(*v),
            Cell::Text(v) => ToSqlOutput::from(v.as_str()),
            Cell::Blob(v) => ToSqlOutput::from(v.as_slice()),
        })
    }
}

impl Cell {
    fn from_sqlite(value: ValueRef<'_>) -> Result<Cell, DbError> {
        Ok(match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(v) => Cell::Int(v),
            ValueRef::Real(v) => Cell::Real(v),
            ValueRef::Text(v) => Cell::Text(
                String::from_utf8(v.to_vec()).map_err(|e| DbError::Query(format!("text that is not UTF-8: {e}")))?,
            ),
            ValueRef::Blob(v) => Cell::Blob(v.to_vec()),
        })
    }
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Cell, Box<dyn StdError + Sync + Send>> {
        let cell = if *ty == Type::INT8 {
            Cell::Int(i64::from_sql(ty, raw)?)
        } else if *ty == Type::INT4 {
            Cell::Int(i32::from_sql(ty, raw)?.into())
        } else if *ty == Type::INT2 {
            Cell::Int(i16::from_sql(ty, raw)?.into())
        } else if *ty == Type::BOOL {
            Cell::Int(bool::from_sql(ty, raw)?.into())
        } else if *ty == Type::FLOAT8 {
            Cell::Real(f64::from_sql(ty, raw)?)
        } else if *ty == Type::FLOAT4 {
            Cell::Real(f32::from_sql(ty, raw)?.into())
        } else if *ty == Type::TIMESTAMPTZ {
            Cell::Text(clock::format(SystemTime::from_sql(ty, raw)?))
        } else if *ty == Type::JSONB {
            // Binary jsonb: a version byte (1), then the text.
            match raw.split_first() {
                Some((1, text)) => Cell::Text(canonical_json(std::str::from_utf8(text)?)?),
                _ => return Err("unsupported jsonb format".into()),
            }
        } else if *ty == Type::JSON {
            Cell::Text(canonical_json(std::str::from_utf8(raw)?)?)
        } else if *ty == Type::BYTEA {
            Cell::Blob(raw.to_vec())
        } else if <&str as FromSql>::accepts(ty) {
            Cell::Text(<&str as FromSql>::from_sql(ty, raw)?.to_owned())
        } else {
            return Err(format!("a column of type {ty} cannot be copied").into());
        };
        Ok(cell)
    }

    fn from_sql_null(_: &Type) -> Result<Cell, Box<dyn StdError + Sync + Send>> {
        Ok(Cell::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Cell::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Cell::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Cell::Int(v) if *ty == Type::BOOL => (*v != 0).to_sql(ty, out),
            Cell::Int(v) if *ty == Type::FLOAT8 => (*v as f64).to_sql(ty, out),
            Cell::Real(v) if *ty == Type::FLOAT8 => v.to_sql(ty, out),
            Cell::Real(v) if *ty == Type::FLOAT4 => (*v as f32).to_sql(ty, out),
            Cell::Text(v) if *ty == Type::TIMESTAMPTZ => {
                clock::parse(v).ok_or_else(|| format!("{v:?} is not a timestamp"))?.to_sql(ty, out)
            }
            Cell::Text(v) if *ty == Type::JSONB => {
                out.extend_from_slice(&[1]);
                out.extend_from_slice(v.as_bytes());
                Ok(IsNull::No)
            }
            Cell::Text(v) if *ty == Type::JSON => {
                out.extend_from_slice(v.as_bytes());
                Ok(IsNull::No)
            }
            Cell::Text(v) if <&str as ToSql>::accepts(ty) => v.as_str().to_sql(ty, out),
            Cell::Blob(v) if *ty == Type::BYTEA => v.as_slice().to_sql(ty, out),
            other => Err(format!("{other:?} cannot be stored in a column of type {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `"name"`, quoted for either dialect.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn column_list(columns: &[String]) -> String {
    columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
}

fn pg_error(err: postgres::Error) -> DbError {
    DbError::Query(describe(&err))
}

const TABLE_NAMES: Statement = Statement {
    sqlite: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY name",
    postgres: "SELECT table_name::text FROM information_schema.tables \
               WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
};
const COLUMN_NAMES: Statement = Statement {
    sqlite: "SELECT name FROM pragma_table_info($1) ORDER BY cid",
    postgres: "SELECT column_name::text FROM information_schema.columns \
               WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
};
// PostgreSQL only (see Tx::is_postgres).
const TEXT_KEY: Statement = Statement {
    sqlite: "",
    postgres: "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() \
               AND table_name = $1 AND column_name = $2 AND data_type IN ('text', 'character varying')",
};
const SERIAL_SEQUENCE: Statement =
    Statement { sqlite: "", postgres: "SELECT pg_get_serial_sequence(quote_ident($1), $2)" };
const NO_STATEMENT_TIMEOUT: Statement = Statement { sqlite: "", postgres: "SET LOCAL statement_timeout = 0" };

impl Db {
    /// Runs `work` in a read-only transaction that sees one consistent
    /// snapshot of the database while others keep writing: on SQLite a
    /// deferred transaction (in WAL mode readers never block writers), on
    /// PostgreSQL `REPEATABLE READ READ ONLY`. Statements have no time limit.
    pub fn snapshot<T>(&self, work: impl FnOnce(&Tx<'_>) -> Result<T, DbError>) -> Result<T, DbError> {
        match self {
            Db::Sqlite(sqlite) => {
                let mut conn = acquire(&sqlite.pool, sqlite.pool.connection_timeout(), Breaker::Ignore)?;
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
                // The snapshot is fixed by the first read: take it now.
                tx.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
                let out = work(&Tx(RefCell::new(TxInner::Sqlite(&tx))))?;
                tx.commit()?;
                Ok(out)
            }
            Db::Postgres(pool) => {
                let mut conn = acquire(pool, pool.connection_timeout(), Breaker::Ignore)?;
                let PgConn { client, prepared, watch, .. } = &mut *conn;
                let watch = Some(&*watch);
                let tx = timed(watch, move || {
                    client
                        .build_transaction()
                        .isolation_level(postgres::IsolationLevel::RepeatableRead)
                        .read_only(true)
                        .start()
                })?;
                let tx = Tx(RefCell::new(TxInner::Postgres { tx, prepared, watch }));
                tx.without_statement_timeout()?;
                let out = work(&tx);
                pg_finish(tx, out)
            }
        }
    }

    /// Creates a new SQLite file at `path` (which must not exist) with one
    /// connection and a rollback journal, so that once its transaction
    /// commits the file alone holds everything (a backup file).
    pub fn create_sqlite_file(path: &Path) -> Result<Db, DbError> {
        let manager = SqliteConnectionManager::file(path)
            .with_flags(rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE)
            .with_init(|conn| {
                conn.pragma_update(None, "foreign_keys", true)?;
                conn.pragma_update(None, "synchronous", "FULL")
            });
        let pool = r2d2::Pool::builder().max_size(1).build(manager).map_err(|e| DbError::Unavailable(describe(&e)))?;
        Ok(Db::Sqlite(SqliteDb { pool, write_lock: Mutex::new(()), path: path.to_owned(), file_id: FileId::of(path) }))
    }
}

/// Writes rows into one table, inside a transaction (see [`Tx::load`]).
pub struct Loader<'a> {
    sink: Sink<'a>,
    /// Rows written so far.
    pub rows: u64,
}

enum Sink<'a> {
    Sqlite(rusqlite::CachedStatement<'a>),
    Postgres(BinaryCopyInWriter<'a>),
}

impl Loader<'_> {
    /// Writes one row, its cells in the order of the columns given to [`Tx::load`].
    pub fn push(&mut self, row: &[Cell]) -> Result<(), DbError> {
        match &mut self.sink {
            Sink::Sqlite(statement) => {
                statement.execute(rusqlite::params_from_iter(row))?;
            }
            Sink::Postgres(writer) => {
                let values: Vec<&(dyn ToSql + Sync)> = row.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
                writer.write(&values).map_err(pg_error)?;
            }
        }
        self.rows += 1;
        Ok(())
    }
}

impl Tx<'_> {
    /// The tables of the database (not the driver's own), by name.
    pub fn table_names(&self) -> Result<Vec<String>, DbError> {
        self.read_many(&TABLE_NAMES, &[], |row| row.text(0))
    }

    /// The columns of `table`, in the order of its definition.
    pub fn column_names(&self, table: &str) -> Result<Vec<String>, DbError> {
        self.read_many(&COLUMN_NAMES, &[Value::Text(Some(table))], |row| row.text(0))
    }

    /// How many rows `table` holds.
    pub fn count_rows(&self, table: &str) -> Result<i64, DbError> {
        let sql = format!("SELECT count(*) FROM {}", quote(table));
        let mut count = 0;
        self.stream_sql(&sql, &mut |row: Vec<Cell>| {
            if let Some(Cell::Int(n)) = row.first() {
                count = *n;
            }
            Ok(())
        })?;
        Ok(count)
    }

    /// Calls `each` with every row of `table` (the given columns, in that
    /// order), in the order of `key`: byte order for text on both databases.
    /// Rows are read in batches, so memory stays flat whatever the size.
    pub fn stream(
        &self,
        table: &str,
        columns: &[String],
        key: &str,
        each: &mut dyn FnMut(Vec<Cell>) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let params = [Value::Text(Some(table)), Value::Text(Some(key))];
        // SQLite compares text byte by byte already.
        let text_key = self.is_postgres() && self.read_one(&TEXT_KEY, &params, |row| row.int(0))?.unwrap_or(0) > 0;
        let collate = if text_key { " COLLATE \"C\"" } else { "" };
        let sql = format!("SELECT {} FROM {} ORDER BY {}{collate}", column_list(columns), quote(table), quote(key));
        self.stream_sql(&sql, each)
    }

    fn stream_sql(&self, sql: &str, each: &mut dyn FnMut(Vec<Cell>) -> Result<(), DbError>) -> Result<(), DbError> {
        match &mut *self.0.borrow_mut() {
            TxInner::Sqlite(conn) => {
                let mut statement = conn.prepare(sql)?;
                let width = statement.column_count();
                let mut rows = statement.query([])?;
                while let Some(row) = rows.next()? {
                    let cells = (0..width).map(|i| Cell::from_sqlite(row.get_ref(i)?)).collect::<Result<_, _>>()?;
                    each(cells)?;
                }
                Ok(())
            }
            TxInner::Postgres { tx, .. } => {
                let portal = tx.bind(sql, &[]).map_err(pg_error)?;
                loop {
                    let batch = tx.query_portal(&portal, PG_BATCH_ROWS).map_err(pg_error)?;
                    for row in &batch {
                        let cells = (0..row.len())
                            .map(|i| row.try_get::<_, Cell>(i).map_err(|e| DbError::Query(describe(&e))))
                            .collect::<Result<_, _>>()?;
                        each(cells)?;
                    }
                    if batch.len() < PG_BATCH_ROWS as usize {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Writes rows into `table` through `fill`, which pushes them into the
    /// [`Loader`]: prepared inserts on SQLite, one binary `COPY` on
    /// PostgreSQL. Returns what `fill` returns. `fill` must not use this
    /// transaction itself.
    pub fn load<T>(
        &self,
        table: &str,
        columns: &[String],
        fill: impl FnOnce(&mut Loader<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let list = column_list(columns);
        match &mut *self.0.borrow_mut() {
            TxInner::Sqlite(conn) => {
                let marks = (1..=columns.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                let statement =
                    conn.prepare_cached(&format!("INSERT INTO {} ({list}) VALUES ({marks})", quote(table)))?;
                fill(&mut Loader { sink: Sink::Sqlite(statement), rows: 0 })
            }
            TxInner::Postgres { tx, .. } => {
                let probe = tx.prepare(&format!("SELECT {list} FROM {} LIMIT 0", quote(table))).map_err(pg_error)?;
                let types: Vec<Type> = probe.columns().iter().map(|c| c.type_().clone()).collect();
                let copy = tx
                    .copy_in(&format!("COPY {} ({list}) FROM STDIN (FORMAT binary)", quote(table)))
                    .map_err(pg_error)?;
                let mut loader = Loader { sink: Sink::Postgres(BinaryCopyInWriter::new(copy, &types)), rows: 0 };
                let out = fill(&mut loader)?;
                if let Sink::Postgres(writer) = loader.sink {
                    writer.finish().map_err(pg_error)?;
                }
                Ok(out)
            }
        }
    }

    /// Deletes every row of `table`.
    pub fn delete_all(&self, table: &str) -> Result<(), DbError> {
        self.batch(&format!("DELETE FROM {}", quote(table)))
    }

    /// Serialises with every writer of `tables` until the transaction ends
    /// (PostgreSQL; an SQLite write transaction already excludes them).
    pub fn lock_tables(&self, tables: &[&str]) -> Result<(), DbError> {
        if tables.is_empty() || !self.is_postgres() {
            return Ok(());
        }
        let list = tables.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", ");
        self.batch(&format!("LOCK TABLE {list} IN EXCLUSIVE MODE"))
    }

    /// Makes the next generated `key` of `table` follow its highest stored
    /// one (PostgreSQL identity sequences; SQLite's AUTOINCREMENT follows
    /// inserted IDs by itself).
    pub fn restart_sequence(&self, table: &str, key: &str) -> Result<(), DbError> {
        if !self.is_postgres() {
            return Ok(());
        }
        let params = [Value::Text(Some(table)), Value::Text(Some(key))];
        let Some(sequence) = self.read_one(&SERIAL_SEQUENCE, &params, |row| row.opt_text(0))?.flatten() else {
            return Ok(());
        };
        let sql = format!(
            "SELECT setval('{}', coalesce(max({}), 0) + 1, false) FROM {}",
            sequence.replace('\'', "''"),
            quote(key),
            quote(table)
        );
        self.batch(&sql)
    }

    /// No time limit on the statements of this transaction (PostgreSQL's
    /// `statement_timeout`, which a copy of a large table would exceed).
    /// Its connection's client-side deadline is off too, for the same reason.
    pub fn without_statement_timeout(&self) -> Result<(), DbError> {
        self.run_script(&NO_STATEMENT_TIMEOUT)?;
        if let TxInner::Postgres { watch, .. } = &mut *self.0.borrow_mut() {
            *watch = None;
        }
        Ok(())
    }

    /// Whether this transaction runs on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(&*self.0.borrow(), TxInner::Postgres { .. })
    }

    /// Runs one generated statement without parameters.
    fn batch(&self, sql: &str) -> Result<(), DbError> {
        match &mut *self.0.borrow_mut() {
            TxInner::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            TxInner::Postgres { tx, .. } => tx.batch_execute(sql).map_err(pg_error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(cells: &[Cell]) -> Vec<u8> {
        let mut out = Vec::new();
        cells.iter().for_each(|c| c.encode(&mut out));
        out
    }

    #[test]
    fn encodings_of_different_cells_never_collide() {
        assert_ne!(
            encoded(&[Cell::Text("ab".into()), Cell::Text("c".into())]),
            encoded(&[Cell::Text("a".into()), Cell::Text("bc".into())])
        );
        assert_ne!(encoded(&[Cell::Int(1)]), encoded(&[Cell::Real(1.0)]));
        assert_ne!(encoded(&[Cell::Null]), encoded(&[Cell::Text(String::new())]));
    }

    #[test]
    fn jsonb_text_becomes_the_compact_text_the_service_writes() {
        assert_eq!(canonical_json(r#"["Tomato Sauce", "Mozzarella"]"#).unwrap(), r#"["Tomato Sauce","Mozzarella"]"#);
    }

    #[test]
    fn quoted_names_cannot_break_out() {
        assert_eq!(quote(r#"a"b"#), r#""a""b""#);
    }
}
