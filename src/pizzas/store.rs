//! The pizza queries, one statement per dialect where they differ.
//!
//! SQLite statements are cached per connection (`prepare_cached`);
//! PostgreSQL ones are [`PgStatement`]s, prepared once per connection with
//! their parameter types, then run in one round trip each.

use std::time::SystemTime;

use postgres::types::{ToSql, Type};
use serde::Serialize;

use super::input::{ListQuery, PizzaInput, fold};
use crate::clock;
use crate::db::{Db, DbError, PgStatement, pg_read};

/// A pizza as every response shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pizza {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub ingredients: Vec<String>,
    pub price: f64,
    pub created_by: i64,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT_ONE_SQLITE: &str = concat!(
    "SELECT id, name, description, ingredients, price, created_by, created_at, updated_at ",
    "FROM pizzas WHERE id = $1 AND deleted_at IS NULL"
);
const SELECT_ONE_PG: PgStatement = PgStatement {
    sql: concat!(
        "SELECT id, name, description, ingredients::text, price, created_by, created_at, updated_at ",
        "FROM pizzas WHERE id = $1 AND deleted_at IS NULL"
    ),
    types: &[Type::INT8],
};

const SELECT_OWNER: &str = "SELECT created_by FROM pizzas WHERE id = $1 AND deleted_at IS NULL";
const SELECT_OWNER_PG: PgStatement = PgStatement { sql: SELECT_OWNER, types: &[Type::INT8] };

// One statement for every filter combination: a NULL parameter switches its
// filter off. instr/strpos match the folded name literally (no LIKE
// wildcards, so `%` and `_` match themselves).
const LIST_SQLITE: &str = concat!(
    "SELECT id, name, description, ingredients, price, created_by, created_at, updated_at FROM pizzas ",
    "WHERE deleted_at IS NULL AND ($1 IS NULL OR instr(name_folded, $1) > 0) ",
    // A bare parameter as LIMIT makes SQLite plan the statement again on every
    // run (it folds the value into the plan); an expression does not.
    "AND ($2 IS NULL OR created_by = $2) ORDER BY id LIMIT CAST($3 AS INTEGER) OFFSET CAST($4 AS INTEGER)"
);
const LIST_PG: PgStatement = PgStatement {
    sql: concat!(
        "SELECT id, name, description, ingredients::text, price, created_by, created_at, updated_at FROM pizzas ",
        "WHERE deleted_at IS NULL AND ($1::text IS NULL OR strpos(name_folded, $1::text) > 0) ",
        "AND ($2::bigint IS NULL OR created_by = $2::bigint) ORDER BY id LIMIT $3 OFFSET $4"
    ),
    types: &[Type::TEXT, Type::INT8, Type::INT8, Type::INT8],
};

const INSERT_SQLITE: &str = concat!(
    "INSERT INTO pizzas (name, name_folded, description, ingredients, price, created_by, created_at, updated_at) ",
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ",
    "RETURNING id, name, description, ingredients, price, created_by, created_at, updated_at"
);
const INSERT_PG: PgStatement = PgStatement {
    sql: concat!(
        "INSERT INTO pizzas (name, name_folded, description, ingredients, price, created_by, created_at, updated_at) ",
        "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $7) ",
        "RETURNING id, name, description, ingredients::text, price, created_by, created_at, updated_at"
    ),
    types: &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::FLOAT8, Type::INT8, Type::TIMESTAMPTZ],
};

// updated_at never goes backwards, even if the clock does.
const UPDATE_SQLITE: &str = concat!(
    "UPDATE pizzas SET name = $1, name_folded = $2, description = $3, ingredients = $4, price = $5, ",
    "updated_at = max($6, updated_at) WHERE id = $7 AND deleted_at IS NULL AND ($8 IS NULL OR created_by = $8) ",
    "RETURNING id, name, description, ingredients, price, created_by, created_at, updated_at"
);
const UPDATE_PG: PgStatement = PgStatement {
    sql: concat!(
        "UPDATE pizzas SET name = $1, name_folded = $2, description = $3, ingredients = $4::jsonb, price = $5, ",
        "updated_at = GREATEST($6, updated_at) WHERE id = $7 AND deleted_at IS NULL ",
        "AND ($8::bigint IS NULL OR created_by = $8::bigint) ",
        "RETURNING id, name, description, ingredients::text, price, created_by, created_at, updated_at"
    ),
    types: &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::FLOAT8, Type::TIMESTAMPTZ, Type::INT8, Type::INT8],
};

const DELETE_SQLITE: &str = "UPDATE pizzas SET deleted_at = $1 \
     WHERE id = $2 AND deleted_at IS NULL AND ($3 IS NULL OR created_by = $3) RETURNING id";
const DELETE_PG: PgStatement = PgStatement {
    sql: "UPDATE pizzas SET deleted_at = $1 \
          WHERE id = $2 AND deleted_at IS NULL AND ($3::bigint IS NULL OR created_by = $3::bigint) RETURNING id",
    types: &[Type::TIMESTAMPTZ, Type::INT8, Type::INT8],
};

const COUNT_ALL: &str = "SELECT count(*) FROM pizzas";

fn ingredients_json(ingredients: &[String]) -> String {
    serde_json::to_string(ingredients).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_ingredients(text: &str) -> Result<Vec<String>, DbError> {
    serde_json::from_str(text).map_err(|e| DbError::Query(format!("stored ingredients are not a JSON array: {e}")))
}

fn from_sqlite(row: &rusqlite::Row<'_>) -> Result<Pizza, DbError> {
    Ok(Pizza {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        ingredients: parse_ingredients(row.get_ref(3)?.as_str().map_err(|e| DbError::Query(e.to_string()))?)?,
        price: row.get(4)?,
        created_by: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn from_pg(row: &postgres::Row) -> Result<Pizza, DbError> {
    Ok(Pizza {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        description: row.try_get(2)?,
        ingredients: parse_ingredients(row.try_get(3)?)?,
        price: row.try_get(4)?,
        created_by: row.try_get(5)?,
        created_at: clock::format(row.try_get::<_, SystemTime>(6)?),
        updated_at: clock::format(row.try_get::<_, SystemTime>(7)?),
    })
}

fn sqlite_rows(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Pizza>, DbError> {
    let mut pizzas = Vec::new();
    while let Some(row) = rows.next()? {
        pizzas.push(from_sqlite(row)?);
    }
    Ok(pizzas)
}

fn first_pg(rows: Vec<postgres::Row>) -> Result<Option<Pizza>, DbError> {
    rows.first().map(from_pg).transpose()
}

/// The pizza `id`, unless it is missing or deleted.
pub fn find(db: &Db, id: i64) -> Result<Option<Pizza>, DbError> {
    match db {
        Db::Sqlite(sqlite) => {
            let conn = sqlite.pool.get()?;
            let mut stmt = conn.prepare_cached(SELECT_ONE_SQLITE)?;
            Ok(sqlite_rows(stmt.query([id])?)?.pop())
        }
        Db::Postgres(pool) => first_pg(pg_read(pool, &SELECT_ONE_PG, &[&id])?),
    }
}

/// The owner of pizza `id`, unless it is missing or deleted.
pub fn owner(db: &Db, id: i64) -> Result<Option<i64>, DbError> {
    match db {
        Db::Sqlite(sqlite) => {
            let conn = sqlite.pool.get()?;
            let mut stmt = conn.prepare_cached(SELECT_OWNER)?;
            let mut rows = stmt.query([id])?;
            Ok(rows.next()?.map(|row| row.get(0)).transpose()?)
        }
        Db::Postgres(pool) => {
            let rows = pg_read(pool, &SELECT_OWNER_PG, &[&id])?;
            Ok(rows.first().map(|row| row.try_get(0)).transpose()?)
        }
    }
}

/// One page of pizzas matching `query`, by ID.
pub fn list(db: &Db, query: &ListQuery) -> Result<Vec<Pizza>, DbError> {
    match db {
        Db::Sqlite(sqlite) => {
            let conn = sqlite.pool.get()?;
            let mut stmt = conn.prepare_cached(LIST_SQLITE)?;
            sqlite_rows(stmt.query((&query.name, query.created_by, query.limit, query.offset))?)
        }
        Db::Postgres(pool) => {
            let params: [&(dyn ToSql + Sync); 4] = [&query.name, &query.created_by, &query.limit, &query.offset];
            pg_read(pool, &LIST_PG, &params)?.iter().map(from_pg).collect()
        }
    }
}

/// Stores a new pizza owned by `owner` and returns it as stored.
pub fn insert(db: &Db, input: &PizzaInput, owner: i64) -> Result<Pizza, DbError> {
    let now = clock::now();
    match db {
        Db::Sqlite(sqlite) => sqlite.write(|conn| insert_sqlite(conn, input, owner, now)),
        Db::Postgres(pool) => {
            let (folded, ingredients) = (fold(&input.name), ingredients_json(&input.ingredients));
            let rows = pool.get()?.run(&INSERT_PG, &insert_params(input, &folded, &ingredients, &owner, &now))?;
            first_pg(rows)?.ok_or_else(|| DbError::Query("INSERT returned no row".into()))
        }
    }
}

/// Inserts on an SQLite connection the caller holds (in a write transaction).
fn insert_sqlite(
    conn: &rusqlite::Connection,
    input: &PizzaInput,
    owner: i64,
    now: SystemTime,
) -> Result<Pizza, DbError> {
    let mut stmt = conn.prepare_cached(INSERT_SQLITE)?;
    let rows = stmt.query((
        &input.name,
        fold(&input.name),
        &input.description,
        ingredients_json(&input.ingredients),
        input.price,
        owner,
        clock::format(now),
    ))?;
    sqlite_rows(rows)?.pop().ok_or_else(|| DbError::Query("INSERT returned no row".into()))
}

/// The parameters of [`INSERT_PG`].
fn insert_params<'a>(
    input: &'a PizzaInput,
    folded: &'a String,
    ingredients: &'a String,
    owner: &'a i64,
    now: &'a SystemTime,
) -> [&'a (dyn ToSql + Sync); 7] {
    [&input.name, folded, &input.description, ingredients, &input.price, owner, now]
}

/// Replaces every field of pizza `id`, if it is live and (unless `owner` is
/// `None`) owned by `owner`; `None` when no such pizza was changed. One
/// statement: the permission check costs no extra round trip.
pub fn update(db: &Db, id: i64, input: &PizzaInput, owner: Option<i64>) -> Result<Option<Pizza>, DbError> {
    let now = clock::now();
    let ingredients = ingredients_json(&input.ingredients);
    match db {
        Db::Sqlite(sqlite) => sqlite.write(|conn| {
            let mut stmt = conn.prepare_cached(UPDATE_SQLITE)?;
            let rows = stmt.query((
                &input.name,
                fold(&input.name),
                &input.description,
                &ingredients,
                input.price,
                clock::format(now),
                id,
                owner,
            ))?;
            Ok(sqlite_rows(rows)?.pop())
        }),
        Db::Postgres(pool) => {
            let folded = fold(&input.name);
            let params: [&(dyn ToSql + Sync); 8] =
                [&input.name, &folded, &input.description, &ingredients, &input.price, &now, &id, &owner];
            first_pg(pool.get()?.run(&UPDATE_PG, &params)?)
        }
    }
}

/// Marks pizza `id` deleted if it is live and (unless `owner` is `None`)
/// owned by `owner`; false when no such pizza was deleted.
pub fn soft_delete(db: &Db, id: i64, owner: Option<i64>) -> Result<bool, DbError> {
    let now = clock::now();
    match db {
        Db::Sqlite(sqlite) => sqlite.write(|conn| {
            let mut stmt = conn.prepare_cached(DELETE_SQLITE)?;
            let mut rows = stmt.query((clock::format(now), id, owner))?;
            Ok(rows.next()?.is_some())
        }),
        Db::Postgres(pool) => Ok(!pool.get()?.run(&DELETE_PG, &[&now, &id, &owner])?.is_empty()),
    }
}

/// Key of the advisory lock that keeps replicas from seeding twice.
const SEED_LOCK_KEY: i64 = 0x7069_7a7a_6173_6564;

/// Stores `pizzas`, owned by `owner`, only if no pizza was ever stored (the
/// development seed). Returns how many were stored; replicas seeding at the
/// same moment store them once.
pub fn insert_if_none(db: &Db, pizzas: &[PizzaInput], owner: i64) -> Result<usize, DbError> {
    let now = clock::now();
    match db {
        Db::Sqlite(sqlite) => sqlite.write(|conn| {
            if conn.query_row(COUNT_ALL, [], |row| row.get::<_, i64>(0))? > 0 {
                return Ok(0);
            }
            for pizza in pizzas {
                insert_sqlite(conn, pizza, owner, now)?;
            }
            Ok(pizzas.len())
        }),
        Db::Postgres(pool) => {
            let mut client = pool.get()?;
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEED_LOCK_KEY])?;
            if tx.query_one(COUNT_ALL, &[])?.try_get::<_, i64>(0)? > 0 {
                return Ok(0);
            }
            let insert = tx.prepare_typed(INSERT_PG.sql, INSERT_PG.types)?;
            for pizza in pizzas {
                let (folded, ingredients) = (fold(&pizza.name), ingredients_json(&pizza.ingredients));
                tx.query(&insert, &insert_params(pizza, &folded, &ingredients, &owner, &now))?;
            }
            tx.commit()?;
            Ok(pizzas.len())
        }
    }
}

/// How many pizzas were ever stored, deleted ones included.
pub fn count_all(db: &Db) -> Result<i64, DbError> {
    match db {
        Db::Sqlite(sqlite) => Ok(sqlite.pool.get()?.query_row(COUNT_ALL, [], |row| row.get(0))?),
        Db::Postgres(pool) => Ok(pool.get()?.query_one(COUNT_ALL, &[])?.try_get(0)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_list_statement_is_never_prepared_again() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../sql/sqlite/0001_initial.sql")).unwrap();
        let mut stmt = conn.prepare(LIST_SQLITE).unwrap();

        for limit in [10, 20, 10] {
            let mut rows = stmt.query((None::<String>, None::<i64>, limit, 0)).unwrap();
            while rows.next().unwrap().is_some() {}
        }

        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    #[test]
    fn the_sqlite_pizza_statements_are_never_prepared_again() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../sql/sqlite/0001_initial.sql")).unwrap();
        conn.execute(
            "INSERT INTO users (email, name, role, created_at, updated_at) VALUES ('a', 'a', 'admin', 'x', 'x')",
            [],
        )
        .unwrap();
        let input = PizzaInput { name: "A".into(), description: String::new(), ingredients: vec![], price: 1.0 };

        for round in 0..3 {
            insert_sqlite(&conn, &input, 1, clock::now()).unwrap();
            let owner = if round == 1 { None } else { Some(1) };
            let mut update = conn.prepare_cached(UPDATE_SQLITE).unwrap();
            update.query(("B", "b", "", "[]", 2.0, clock::format(clock::now()), 1, owner)).unwrap().next().unwrap();
            let mut delete = conn.prepare_cached(DELETE_SQLITE).unwrap();
            delete.query((clock::format(clock::now()), 2 + round, owner)).unwrap().next().unwrap();
            for sql in [SELECT_ONE_SQLITE, SELECT_OWNER] {
                conn.prepare_cached(sql).unwrap().query([1]).unwrap().next().unwrap();
            }
        }

        for sql in [INSERT_SQLITE, UPDATE_SQLITE, DELETE_SQLITE, SELECT_ONE_SQLITE, SELECT_OWNER] {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
        }
    }
}
