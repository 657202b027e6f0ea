//! The one executor: every statement of the service runs through [`Exec`],
//! implemented by [`Db`] (one statement, its own connection and, for writes,
//! its own transaction) and by [`Tx`] (inside a transaction). This is the
//! only place that matches on the driver: it owns the dead-connection retry
//! of reads on PostgreSQL, statement caching on both, the SQLite write lock,
//! and the mapping of parameters and columns ([`Value`], [`Row`]).

use std::time::SystemTime;

use std::cell::RefCell;
use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};
use serde::de::DeserializeOwned;

use super::deadline::Watch;
use super::{Breaker, Db, DbError, PgConn, acquire, pg_repeatable};
use crate::clock;

/// One statement, written once per dialect. Parameters are `$1`, `$2`, …
/// in both, and must first appear in that order: SQLite numbers `$N`
/// parameters by first appearance, not by `N` (debug builds check it).
#[derive(Debug, Clone, Copy)]
pub struct Statement {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Statement {
    /// A statement whose text is the same in both dialects.
    pub const fn both(sql: &'static str) -> Statement {
        Statement { sqlite: sql, postgres: sql }
    }
}

/// A parameter, whatever the driver. Its variant also names its PostgreSQL
/// type when the statement is prepared.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Int(Option<i64>),
    Real(f64),
    Text(Option<&'a str>),
    /// A point in time: `TIMESTAMPTZ` on PostgreSQL, RFC 3339 text with
    /// microseconds on SQLite (which sorts as it should).
    Time(Option<SystemTime>),
}

impl Value<'_> {
    fn pg_type(&self) -> Type {
        match self {
            Value::Int(_) => Type::INT8,
            Value::Real(_) => Type::FLOAT8,
            Value::Text(_) => Type::TEXT,
            Value::Time(_) => Type::TIMESTAMPTZ,
        }
    }
}

/// `From` a parameter type (as `Some`) and from its `Option` (as it is).
macro_rules! value_from {
    ($ty:ty, $variant:ident, |$v:ident| $convert:expr) => {
        impl<'a> From<$ty> for Value<'a> {
            fn from($v: $ty) -> Self {
                Value::$variant(Some($convert))
            }
        }

        impl<'a> From<Option<$ty>> for Value<'a> {
            fn from(value: Option<$ty>) -> Self {
                Value::$variant(value.map(|$v| $convert))
            }
        }
    };
}

value_from!(i64, Int, |v| v);
value_from!(&'a str, Text, |v| v);
value_from!(&'a String, Text, |v| v.as_str());
value_from!(SystemTime, Time, |v| v);

impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Value::Int(Some(v)) => ToSqlOutput::from(v),
            Value::Real(v) => ToSqlOutput::from(v),
            Value::Text(Some(v)) => ToSqlOutput::from(v),
            Value::Time(Some(t)) => ToSqlOutput::from(clock::format(t)),
            Value::Int(None) | Value::Text(None) | Value::Time(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Int(v) => v.to_sql(ty, out),
            Value::Real(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Time(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty)
            || <f64 as ToSql>::accepts(ty)
            || <&str as ToSql>::accepts(ty)
            || <SystemTime as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// A result row, whatever the driver. Every accessor fails with a
/// [`DbError`] on a type mismatch instead of panicking.
pub struct Row<'r>(RowRef<'r>);

enum RowRef<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

fn column_error(index: usize, err: impl std::fmt::Display) -> DbError {
    DbError::Query(format!("column {index}: {err}"))
}

impl Row<'_> {
    /// Column `i` as `T`, whichever driver read it.
    fn get<T>(&self, i: usize) -> Result<T, DbError>
    where
        T: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>,
    {
        match &self.0 {
            RowRef::Sqlite(row) => row.get(i).map_err(|e| column_error(i, e)),
            RowRef::Postgres(row) => row.try_get(i).map_err(|e| column_error(i, e)),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        self.get(i)
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        self.get(i)
    }

    pub fn real(&self, i: usize) -> Result<f64, DbError> {
        self.get(i)
    }

    pub fn text(&self, i: usize) -> Result<String, DbError> {
        self.get(i)
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        self.get(i)
    }

    /// A point in time as every response shows it: RFC 3339, UTC, microseconds.
    pub fn time_text(&self, i: usize) -> Result<String, DbError> {
        match &self.0 {
            // Stored in exactly that form.
            RowRef::Sqlite(_) => self.text(i),
            RowRef::Postgres(_) => Ok(clock::format(self.time(i)?)),
        }
    }

    pub fn time(&self, i: usize) -> Result<SystemTime, DbError> {
        self.opt_time(i)?.ok_or_else(|| column_error(i, "unexpected NULL"))
    }

    pub fn opt_time(&self, i: usize) -> Result<Option<SystemTime>, DbError> {
        match &self.0 {
            RowRef::Sqlite(_) => self
                .opt_text(i)?
                .map(|text| clock::parse(&text).ok_or_else(|| column_error(i, format!("{text:?} is not a timestamp"))))
                .transpose(),
            RowRef::Postgres(row) => row.try_get(i).map_err(|e| column_error(i, e)),
        }
    }

    /// A JSON column (stored as text on SQLite; selected as `col::text` on
    /// PostgreSQL), parsed into `T`.
    pub fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T, DbError> {
        let parse =
            |text: &str| serde_json::from_str(text).map_err(|e| column_error(i, format!("not the JSON expected: {e}")));
        match &self.0 {
            RowRef::Sqlite(row) => match row.get_ref(i).map_err(|e| column_error(i, e))? {
                ValueRef::Text(bytes) => parse(std::str::from_utf8(bytes).map_err(|e| column_error(i, e))?),
                other => Err(column_error(i, format!("expected JSON text, found {:?}", other.data_type()))),
            },
            RowRef::Postgres(row) => parse(row.try_get::<_, &str>(i).map_err(|e| column_error(i, e))?),
        }
    }
}

/// Whether a statement only reads (and may be run again on another
/// connection when its own turned out dead) or writes (never repeated: a
/// write cut off mid-way may have committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// A read that PostgreSQL plans afresh for its parameter values on every
    /// run (an unnamed statement, one round trip), instead of a statement
    /// prepared once per connection, whose plan PostgreSQL replaces after
    /// five runs by a generic one made without the values. For statements
    /// whose best plan depends on them: the list's name filter walks the ID
    /// index for a common term and the trigram index for a rare one, and a
    /// generic plan can only guess (it walks the whole ID index for a rare
    /// term). The same as `Read` on SQLite.
    ReadReplanned,
}

/// What can run statements: [`Db`] (each statement on its own) and [`Tx`]
/// (inside one transaction). Repository functions take `&impl Exec`, so the
/// same function serves a request and a seed or a copy in a transaction.
pub trait Exec {
    /// Runs a statement and maps each row it returns.
    fn rows<T>(
        &self,
        access: Access,
        st: &Statement,
        params: &[Value<'_>],
        map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError>;

    /// A write without `RETURNING`; how many rows it changed.
    fn execute(&self, st: &Statement, params: &[Value<'_>]) -> Result<u64, DbError>;

    /// The rows a read returns, each mapped by `map`.
    fn read_many<T>(
        &self,
        st: &Statement,
        params: &[Value<'_>],
        map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        self.rows(Access::Read, st, params, map)
    }

    /// The rows a read returns, each mapped by `map`, planned for its
    /// parameter values on every run (see [`Access::ReadReplanned`]).
    fn read_many_replanned<T>(
        &self,
        st: &Statement,
        params: &[Value<'_>],
        map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        self.rows(Access::ReadReplanned, st, params, map)
    }

    /// The first row a read returns, mapped by `map`.
    fn read_one<T>(
        &self,
        st: &Statement,
        params: &[Value<'_>],
        map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        Ok(self.rows(Access::Read, st, params, map)?.into_iter().next())
    }

    /// A write; the rows of its `RETURNING` clause, each mapped by `map`.
    fn write<T>(
        &self,
        st: &Statement,
        params: &[Value<'_>],
        map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        self.rows(Access::Write, st, params, map)
    }
}

impl Exec for Db {
    fn rows<T>(
        &self,
        access: Access,
        st: &Statement,
        params: &[Value<'_>],
        mut map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        match (self, access) {
            (Db::Sqlite(sqlite), Access::Read | Access::ReadReplanned) => {
                let conn = acquire(&sqlite.pool, sqlite.pool.connection_timeout(), Breaker::Respect)?;
                sqlite_rows(&conn, st.sqlite, params, &mut map)
            }
            (Db::Sqlite(sqlite), Access::Write) => sqlite.write(|conn| sqlite_rows(conn, st.sqlite, params, &mut map)),
            (Db::Postgres(pool), Access::Read) => {
                pg_repeatable(pool, pool.connection_timeout(), Breaker::Respect, |conn| {
                    pg_rows(&conn.run(st.postgres, params)?, &mut map)
                })
            }
            (Db::Postgres(pool), Access::ReadReplanned) => {
                pg_repeatable(pool, pool.connection_timeout(), Breaker::Respect, |conn| {
                    pg_rows(&conn.run_replanned(st.postgres, params)?, &mut map)
                })
            }
            (Db::Postgres(pool), Access::Write) => {
                let mut conn = acquire(pool, pool.connection_timeout(), Breaker::Respect)?;
                pg_rows(&conn.run(st.postgres, params)?, &mut map)
            }
        }
    }

    fn execute(&self, st: &Statement, params: &[Value<'_>]) -> Result<u64, DbError> {
        match self {
            Db::Sqlite(sqlite) => sqlite.write(|conn| sqlite_execute(conn, st.sqlite, params)),
            Db::Postgres(pool) => {
                acquire(pool, pool.connection_timeout(), Breaker::Respect)?.execute(st.postgres, params)
            }
        }
    }
}

impl Db {
    /// Runs `work` in one transaction: all of it or none. On SQLite it holds
    /// the write lock from the start (`BEGIN IMMEDIATE`); on PostgreSQL it
    /// is a plain transaction, and [`Tx::lock`] serialises replicas.
    pub fn transaction<T>(&self, work: impl FnOnce(&Tx<'_>) -> Result<T, DbError>) -> Result<T, DbError> {
        match self {
            Db::Sqlite(sqlite) => sqlite.write(|conn| work(&Tx(RefCell::new(TxInner::Sqlite(conn))))),
            Db::Postgres(pool) => {
                let mut conn = acquire(pool, pool.connection_timeout(), Breaker::Respect)?;
                let PgConn { client, prepared, watch, .. } = &mut *conn;
                let watch = Some(&*watch);
                let tx = timed(watch, move || client.transaction())?;
                let tx = Tx(RefCell::new(TxInner::Postgres { tx, prepared, watch }));
                let out = work(&tx);
                pg_finish(tx, out)
            }
        }
    }
}

/// Commits a PostgreSQL transaction when `out` is a success, else rolls it
/// back (explicitly: the driver's rollback on drop would have no deadline).
pub(super) fn pg_finish<T>(tx: Tx<'_>, out: Result<T, DbError>) -> Result<T, DbError> {
    let TxInner::Postgres { tx, watch, .. } = tx.0.into_inner() else { return out };
    match out {
        Ok(value) => timed(watch, || tx.commit()).map(|()| value),
        Err(err) => {
            // The cause of the failure is `err`; a failed rollback ends the
            // connection, which the pool then drops.
            let _ = timed(watch, || tx.rollback());
            Err(err)
        }
    }
}

/// Runs one step of a statement in a transaction under its connection's
/// deadline (see [`super::deadline`]); `watch` is `None` once the
/// transaction has switched its statement timeout off.
pub(super) fn timed<T>(watch: Option<&Watch>, step: impl FnOnce() -> Result<T, postgres::Error>) -> Result<T, DbError> {
    match watch {
        Some(watch) => watch.run(step).map_err(|err| watch.error(err)),
        None => Ok(step()?),
    }
}

/// A transaction in progress (see [`Db::transaction`]).
pub struct Tx<'c>(pub(super) RefCell<TxInner<'c>>);

pub(super) enum TxInner<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres {
        tx: postgres::Transaction<'c>,
        prepared: &'c mut HashMap<&'static str, postgres::Statement>,
        /// The connection's deadline, or `None` once the statement timeout is off.
        watch: Option<&'c Watch>,
    },
}

impl Tx<'_> {
    /// Serialises this transaction with every other one taking the same
    /// `key`, across processes, until it ends: PostgreSQL's transaction-level
    /// advisory lock. On SQLite the transaction already holds the only write
    /// lock, so there is nothing more to take.
    pub fn lock(&self, key: i64) -> Result<(), DbError> {
        const LOCK: Statement = Statement { sqlite: "SELECT $1", postgres: "SELECT pg_advisory_xact_lock($1)" };
        self.read_many(&LOCK, &[Value::Int(Some(key))], |_| Ok(())).map(drop)
    }

    /// Like [`Tx::lock`], but does not wait: false when another transaction
    /// holds `key` now (`pg_try_advisory_xact_lock`). On SQLite always true,
    /// for the same reason as there.
    pub fn try_lock(&self, key: i64) -> Result<bool, DbError> {
        const TRY_LOCK: Statement = Statement {
            sqlite: "SELECT $1 IS NOT NULL",
            postgres: "SELECT CASE WHEN pg_try_advisory_xact_lock($1) THEN 1::bigint ELSE 0::bigint END",
        };
        let taken = self.read_one(&TRY_LOCK, &[Value::Int(Some(key))], |row| row.int(0))?;
        Ok(taken == Some(1))
    }

    /// Runs a script of several statements without parameters (schema files).
    pub fn run_script(&self, st: &Statement) -> Result<(), DbError> {
        match &mut *self.0.borrow_mut() {
            TxInner::Sqlite(conn) => Ok(conn.execute_batch(st.sqlite)?),
            TxInner::Postgres { tx, watch, .. } => timed(*watch, || tx.batch_execute(st.postgres)),
        }
    }

    fn pg_statement(
        tx: &mut postgres::Transaction<'_>,
        prepared: &mut HashMap<&'static str, postgres::Statement>,
        watch: Option<&Watch>,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<postgres::Statement, DbError> {
        if let Some(statement) = prepared.get(sql) {
            return Ok(statement.clone());
        }
        let types = pg_types(params);
        let statement = timed(watch, || tx.prepare_typed(sql, &types))?;
        prepared.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl Exec for Tx<'_> {
    /// Inside a transaction reads and writes alike run once, on its connection.
    fn rows<T>(
        &self,
        access: Access,
        st: &Statement,
        params: &[Value<'_>],
        mut map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        match &mut *self.0.borrow_mut() {
            TxInner::Sqlite(conn) => sqlite_rows(conn, st.sqlite, params, &mut map),
            TxInner::Postgres { tx, watch, .. } if access == Access::ReadReplanned => {
                let params = pg_typed_params(params);
                pg_rows(&timed(*watch, || tx.query_typed(st.postgres, &params))?, &mut map)
            }
            TxInner::Postgres { tx, prepared, watch } => {
                let statement = Tx::pg_statement(tx, prepared, *watch, st.postgres, params)?;
                let params = pg_params(params);
                pg_rows(&timed(*watch, || tx.query(&statement, &params))?, &mut map)
            }
        }
    }

    fn execute(&self, st: &Statement, params: &[Value<'_>]) -> Result<u64, DbError> {
        match &mut *self.0.borrow_mut() {
            TxInner::Sqlite(conn) => sqlite_execute(conn, st.sqlite, params),
            TxInner::Postgres { tx, prepared, watch } => {
                let statement = Tx::pg_statement(tx, prepared, *watch, st.postgres, params)?;
                let params = pg_params(params);
                timed(*watch, || tx.execute(&statement, &params))
            }
        }
    }
}

fn sqlite_rows<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value<'_>],
    map: &mut impl FnMut(&Row<'_>) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError> {
    debug_assert!(parameters_in_order(sql), "parameters out of order (see Statement): {sql}");
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(&Row(RowRef::Sqlite(row)))?);
    }
    Ok(out)
}

fn sqlite_execute(conn: &rusqlite::Connection, sql: &str, params: &[Value<'_>]) -> Result<u64, DbError> {
    debug_assert!(parameters_in_order(sql), "parameters out of order (see Statement): {sql}");
    Ok(conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params))? as u64)
}

/// Whether the `$N` parameters of `sql` first appear as `$1`, `$2`, … in turn.
fn parameters_in_order(sql: &str) -> bool {
    let mut next = 1;
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(n) = rest[..digits].parse::<usize>() else { continue };
        if n > next {
            return false;
        }
        if n == next {
            next += 1;
        }
    }
    true
}

pub(super) fn pg_rows<T>(
    rows: &[postgres::Row],
    map: &mut impl FnMut(&Row<'_>) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError> {
    rows.iter().map(|row| map(&Row(RowRef::Postgres(row)))).collect()
}

/// The parameters as the PostgreSQL client takes them.
pub(super) fn pg_params<'p>(params: &'p [Value<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// `params` with their PostgreSQL types, for an unnamed statement.
pub(super) fn pg_typed_params<'p>(params: &'p [Value<'_>]) -> Vec<(&'p (dyn ToSql + Sync), Type)> {
    params.iter().map(|p| (p as &(dyn ToSql + Sync), p.pg_type())).collect()
}

/// The PostgreSQL types of `params`, for preparing a statement.
pub(super) fn pg_types(params: &[Value<'_>]) -> Vec<Type> {
    params.iter().map(Value::pg_type).collect()
}

#[cfg(test)]
mod tests {
    use super::parameters_in_order;

    #[test]
    fn parameters_must_first_appear_in_order() {
        assert!(parameters_in_order("UPDATE t SET a = $1, b = $2 WHERE c = $1 AND d = $3"));
        assert!(parameters_in_order("SELECT '$' || x FROM t"));
        assert!(!parameters_in_order("UPDATE t SET a = CASE WHEN $2 IS NULL THEN 0 END, b = $1"));
    }
}
