//! The pizza queries: each statement once, as its pair of dialect texts,
//! beside the function that runs it through the executor.

use std::time::SystemTime;

use serde::Serialize;

use super::input::{ListQuery, PizzaInput, fold};
use crate::clock;
use crate::db::{DbError, Exec, Row, Statement, Value};

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
    /// 1 when created, one more on every update: the ETag's part that
    /// changes (see [`Pizza::etag`]). Not a field of the JSON.
    #[serde(skip)]
    pub version: i64,
}

impl Pizza {
    /// The strong entity tag of this version of the pizza: `"<id>-<version>"`,
    /// the same on both databases for the same data.
    pub fn etag(&self) -> String {
        etag(self.id, self.version)
    }
}

/// The entity tag of version `version` of pizza `id`, quotes included.
pub fn etag(id: i64, version: i64) -> String {
    format!("\"{id}-{version}\"")
}

/// The columns every pizza statement returns, in [`from_row`]'s order.
/// PostgreSQL stores ingredients as `jsonb` and hands them over as text.
macro_rules! pizza_columns {
    (sqlite) => {
        "id, name, description, ingredients, price, created_by, created_at, updated_at, version"
    };
    (postgres) => {
        "id, name, description, ingredients::text, price, created_by, created_at, updated_at, version"
    };
}

fn from_row(row: &Row<'_>) -> Result<Pizza, DbError> {
    Ok(Pizza {
        id: row.int(0)?,
        name: row.text(1)?,
        description: row.text(2)?,
        ingredients: row.json(3)?,
        price: row.real(4)?,
        created_by: row.int(5)?,
        created_at: row.time_text(6)?,
        updated_at: row.time_text(7)?,
        version: row.int(8)?,
    })
}

const SELECT_ONE: Statement = Statement {
    sqlite: concat!("SELECT ", pizza_columns!(sqlite), " FROM pizzas WHERE id = $1 AND deleted_at IS NULL"),
    postgres: concat!("SELECT ", pizza_columns!(postgres), " FROM pizzas WHERE id = $1 AND deleted_at IS NULL"),
};

/// The pizza `id`, unless it is missing or deleted.
pub fn find(db: &impl Exec, id: i64) -> Result<Option<Pizza>, DbError> {
    db.read_one(&SELECT_ONE, &[id.into()], from_row)
}

const SELECT_OWNER: Statement =
    Statement::both("SELECT created_by, version FROM pizzas WHERE id = $1 AND deleted_at IS NULL");

/// The owner and the version of pizza `id`, unless it is missing or deleted.
pub fn owner(db: &impl Exec, id: i64) -> Result<Option<(i64, i64)>, DbError> {
    db.read_one(&SELECT_OWNER, &[id.into()], |row| Ok((row.int(0)?, row.int(1)?)))
}

// One statement for every filter combination: a NULL parameter switches its
// filter off. instr/strpos match the folded name literally (no LIKE
// wildcards, so `%` and `_` match themselves).
const LIST: Statement = Statement {
    sqlite: concat!(
        "SELECT ",
        pizza_columns!(sqlite),
        " FROM pizzas WHERE deleted_at IS NULL AND ($1 IS NULL OR instr(name_folded, $1) > 0) ",
        // A bare parameter as LIMIT makes SQLite plan the statement again on
        // every run (it folds the value into the plan); an expression does not.
        "AND ($2 IS NULL OR created_by = $2) ORDER BY id LIMIT CAST($3 AS INTEGER) OFFSET CAST($4 AS INTEGER)"
    ),
    postgres: concat!(
        "SELECT ",
        pizza_columns!(postgres),
        " FROM pizzas WHERE deleted_at IS NULL AND ($1::text IS NULL OR strpos(name_folded, $1::text) > 0) ",
        "AND ($2::bigint IS NULL OR created_by = $2::bigint) ORDER BY id LIMIT $3 OFFSET $4"
    ),
};

/// One page of pizzas matching `query`, by ID.
pub fn list(db: &impl Exec, query: &ListQuery) -> Result<Vec<Pizza>, DbError> {
    let params = [query.name.as_deref().into(), query.created_by.into(), query.limit.into(), query.offset.into()];
    db.read_many(&LIST, &params, from_row)
}

const INSERT: Statement = Statement {
    sqlite: concat!(
        "INSERT INTO pizzas (name, name_folded, description, ingredients, price, created_by, created_at, updated_at) ",
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING ",
        pizza_columns!(sqlite)
    ),
    postgres: concat!(
        "INSERT INTO pizzas (name, name_folded, description, ingredients, price, created_by, created_at, updated_at) ",
        "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $7) RETURNING ",
        pizza_columns!(postgres)
    ),
};

/// Stores a new pizza owned by `owner` at `now` and returns it as stored.
pub fn insert(db: &impl Exec, input: &PizzaInput, owner: i64, now: SystemTime) -> Result<Pizza, DbError> {
    let stored = Stored::of(input);
    let params = stored.values_then([owner.into(), now.into()]);
    db.write(&INSERT, &params, from_row)?.pop().ok_or_else(|| DbError::Query("INSERT returned no row".into()))
}

// updated_at never goes backwards, even if the clock does.
const UPDATE: Statement = Statement {
    sqlite: concat!(
        "UPDATE pizzas SET name = $1, name_folded = $2, description = $3, ingredients = $4, price = $5, ",
        "updated_at = max($6, updated_at), version = version + 1 ",
        "WHERE id = $7 AND deleted_at IS NULL AND ($8 IS NULL OR created_by = $8) ",
        "AND ($9 IS NULL OR instr($9, ' ' || version || ' ') > 0) RETURNING ",
        pizza_columns!(sqlite)
    ),
    postgres: concat!(
        "UPDATE pizzas SET name = $1, name_folded = $2, description = $3, ingredients = $4::jsonb, price = $5, ",
        "updated_at = GREATEST($6, updated_at), version = version + 1 WHERE id = $7 AND deleted_at IS NULL ",
        "AND ($8::bigint IS NULL OR created_by = $8::bigint) ",
        "AND ($9::text IS NULL OR strpos($9::text, ' ' || version::text || ' ') > 0) RETURNING ",
        pizza_columns!(postgres)
    ),
};

/// Replaces every field of pizza `id`, if it is live, (unless `owner` is
/// `None`) owned by `owner` and (unless `versions` is `None`) at one of
/// `versions`; `None` when no such pizza was changed. One statement: the
/// permission and version checks cost no extra round trip, and no other
/// writer can come between the check and the change.
pub fn update(
    db: &impl Exec,
    id: i64,
    input: &PizzaInput,
    owner: Option<i64>,
    versions: Option<&Versions>,
) -> Result<Option<Pizza>, DbError> {
    let stored = Stored::of(input);
    let params =
        stored.values_then([clock::now().into(), id.into(), owner.into(), versions.map(Versions::as_param).into()]);
    Ok(db.write(&UPDATE, &params, from_row)?.pop())
}

const DELETE: Statement = Statement {
    sqlite: "UPDATE pizzas SET deleted_at = $1 \
             WHERE id = $2 AND deleted_at IS NULL AND ($3 IS NULL OR created_by = $3) \
             AND ($4 IS NULL OR instr($4, ' ' || version || ' ') > 0) RETURNING id",
    postgres: "UPDATE pizzas SET deleted_at = $1 \
               WHERE id = $2 AND deleted_at IS NULL AND ($3::bigint IS NULL OR created_by = $3::bigint) \
               AND ($4::text IS NULL OR strpos($4::text, ' ' || version::text || ' ') > 0) RETURNING id",
};

/// Marks pizza `id` deleted if it is live, (unless `owner` is `None`) owned
/// by `owner` and (unless `versions` is `None`) at one of `versions`; false
/// when no such pizza was deleted.
#[must_use = "false means nothing was deleted"]
pub fn soft_delete(db: &impl Exec, id: i64, owner: Option<i64>, versions: Option<&Versions>) -> Result<bool, DbError> {
    let params = [clock::now().into(), id.into(), owner.into(), versions.map(Versions::as_param).into()];
    Ok(!db.write(&DELETE, &params, |row| row.int(0))?.is_empty())
}

const COUNT_ALL: Statement = Statement::both("SELECT count(*) FROM pizzas");

/// How many pizzas were ever stored, deleted ones included.
pub fn count_all(db: &impl Exec) -> Result<i64, DbError> {
    Ok(db.read_one(&COUNT_ALL, &[], |row| row.int(0))?.unwrap_or(0))
}

/// The versions an `If-Match` accepts, as the update and delete statements
/// take them: each number between spaces (`" 3 5 "`), so that one parameter
/// holds a whole list; an empty list (`" "`) matches no version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions(String);

impl Versions {
    pub fn of(versions: impl IntoIterator<Item = i64>) -> Versions {
        let mut text = String::from(" ");
        for version in versions {
            text.push_str(&version.to_string());
            text.push(' ');
        }
        Versions(text)
    }

    fn as_param(&self) -> &str {
        &self.0
    }
}

/// A pizza's fields as the `pizzas` table stores them: `$1`–`$5` of both
/// the insert and the update (name, folded name, description, ingredients
/// as JSON text, price).
struct Stored<'a> {
    input: &'a PizzaInput,
    folded: String,
    ingredients: String,
}

impl<'a> Stored<'a> {
    fn of(input: &'a PizzaInput) -> Stored<'a> {
        // Serializing a list of strings cannot fail.
        let ingredients = serde_json::to_string(&input.ingredients).unwrap_or_else(|_| "[]".to_owned());
        Stored { input, folded: fold(&input.name), ingredients }
    }

    /// The five stored fields, then `rest`.
    fn values_then<const N: usize>(&self, rest: [Value<'a>; N]) -> Vec<Value<'_>> {
        let fields = [
            (&self.input.name).into(),
            (&self.folded).into(),
            (&self.input.description).into(),
            (&self.ingredients).into(),
            self.input.price.into(),
        ];
        fields.into_iter().chain(rest).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_list_statement_is_never_prepared_again() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for migration in crate::db::migrate::SQLITE {
            conn.execute_batch(migration.sql).unwrap();
        }
        let mut stmt = conn.prepare(LIST.sqlite).unwrap();

        for limit in [10, 20, 10] {
            let mut rows = stmt.query((None::<String>, None::<i64>, limit, 0)).unwrap();
            while rows.next().unwrap().is_some() {}
        }

        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    #[test]
    fn the_sqlite_pizza_statements_are_never_prepared_again() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for migration in crate::db::migrate::SQLITE {
            conn.execute_batch(migration.sql).unwrap();
        }
        conn.execute(
            "INSERT INTO users (email, name, role, created_at, updated_at) VALUES ('a', 'a', 'admin', 'x', 'x')",
            [],
        )
        .unwrap();

        for round in 0..3 {
            let mut insert = conn.prepare_cached(INSERT.sqlite).unwrap();
            insert.query(("A", "a", "", "[]", 1.0, 1, clock::format(clock::now()))).unwrap().next().unwrap();
            let owner = if round == 1 { None } else { Some(1) };
            let mut update = conn.prepare_cached(UPDATE.sqlite).unwrap();
            let versions = if round == 2 { Some(" 1 2 ") } else { None };
            let params = ("B", "b", "", "[]", 2.0, clock::format(clock::now()), 1, owner, versions);
            update.query(params).unwrap().next().unwrap();
            let mut delete = conn.prepare_cached(DELETE.sqlite).unwrap();
            delete.query((clock::format(clock::now()), 2 + round, owner, versions)).unwrap().next().unwrap();
            for sql in [SELECT_ONE.sqlite, SELECT_OWNER.sqlite] {
                conn.prepare_cached(sql).unwrap().query([1]).unwrap().next().unwrap();
            }
        }

        for sql in [INSERT.sqlite, UPDATE.sqlite, DELETE.sqlite, SELECT_ONE.sqlite, SELECT_OWNER.sqlite] {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
        }
    }
}
