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
        concat!("id, ", pizza_columns!(sqlite_after_id))
    };
    (sqlite_after_id) => {
        "name, description, ingredients, price, created_by, created_at, updated_at, version"
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

// The list: one statement per filter combination, so that each has one plan
// and that plan walks an index in ID order from the cursor ($N = after) and
// stops after the page (tests read the plans: below, and
// tests/api/list_plans.rs). On PostgreSQL the statements whose best index
// depends on the values (a rare or a common owner or name) are planned for
// their values on every run (read_many_replanned), the others prepared once.
// A bare parameter as LIMIT makes SQLite plan the statement again on every
// run (it folds the value into the plan); an expression does not, hence CAST.
//
// Each page statement has a seek twin with the same FROM and WHERE: the ID
// of the pizza `offset` matches after the cursor, read from the index alone
// (no row is built for a skipped pizza), so an offset becomes a cursor and
// the page itself reads only its own rows. Same parameters, except that the
// last one is the offset instead of the limit.
macro_rules! page_and_seek {
    ($page:ident, $seek:ident, $last:literal, sqlite: $sqlite:literal, $sqlite_id:literal, postgres: $postgres:literal) => {
        const $page: Statement = Statement {
            sqlite: concat!("SELECT ", pizza_columns!(sqlite), $sqlite, " LIMIT CAST($", $last, " AS INTEGER)"),
            postgres: concat!("SELECT ", pizza_columns!(postgres), $postgres, " LIMIT $", $last),
        };
        const $seek: Statement = Statement {
            sqlite: concat!("SELECT ", $sqlite_id, $sqlite, " LIMIT 1 OFFSET CAST($", $last, " AS INTEGER)"),
            postgres: concat!("SELECT id", $postgres, " LIMIT 1 OFFSET $", $last),
        };
    };
    // SQLite's name filter: the pizzas whose name is in the trigram index
    // and those whose name waits on the backlog
    // (sql/sqlite/0005_name_backlog.sql), merged by ID. Each part yields its
    // IDs in order (the index by rowid, the backlog by its key, CROSS JOIN
    // keeping it the outer loop), so the merge stops after the page.
    ($page:ident, $seek:ident, $last:literal, sqlite indexed: $indexed:literal, waiting: $waiting:literal,
     postgres: $postgres:literal) => {
        const $page: Statement = Statement {
            sqlite: concat!(
                "SELECT pizza_name_trigrams.rowid, ",
                pizza_columns!(sqlite_after_id),
                $indexed,
                " UNION ALL SELECT pizza_name_backlog.id, ",
                pizza_columns!(sqlite_after_id),
                $waiting,
                " ORDER BY 1 LIMIT CAST($",
                $last,
                " AS INTEGER)"
            ),
            postgres: concat!("SELECT ", pizza_columns!(postgres), $postgres, " LIMIT $", $last),
        };
        const $seek: Statement = Statement {
            sqlite: concat!(
                "SELECT pizza_name_trigrams.rowid",
                $indexed,
                " UNION ALL SELECT pizza_name_backlog.id",
                $waiting,
                " ORDER BY 1 LIMIT 1 OFFSET CAST($",
                $last,
                " AS INTEGER)"
            ),
            postgres: concat!("SELECT id", $postgres, " LIMIT 1 OFFSET $", $last),
        };
    };
}

page_and_seek!(LIST_ALL, SEEK_ALL, 2,
    sqlite: " FROM pizzas WHERE deleted_at IS NULL AND id > $1 ORDER BY id", "id",
    postgres: " FROM pizzas WHERE deleted_at IS NULL AND id > $1 ORDER BY id"
);

page_and_seek!(LIST_BY_OWNER, SEEK_BY_OWNER, 3,
    sqlite: " FROM pizzas WHERE created_by = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id", "id",
    postgres: " FROM pizzas WHERE created_by = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id"
);

// The name filter through the trigram index. SQLite: the FTS5 table
// (sql/sqlite/0004_list_indexes.sql) yields candidate IDs in order from the
// cursor, as a phrase query (the filter in double quotes, its own doubled),
// and the backlog the few not indexed yet; instr then keeps exactly the
// names holding the filter. PostgreSQL: LIKE with the filter's `\`, `%` and
// `_` escaped is the same literal substring test, and pg_trgm's GIN index
// serves it.
page_and_seek!(LIST_NAMED, SEEK_NAMED, 3,
    sqlite indexed: " FROM pizza_name_trigrams JOIN pizzas ON pizzas.id = pizza_name_trigrams.rowid \
             WHERE pizza_name_trigrams MATCH '\"' || replace($1, '\"', '\"\"') || '\"' \
             AND pizza_name_trigrams.rowid > $2 AND instr(pizzas.name_folded, $1) > 0 \
             AND pizzas.deleted_at IS NULL",
    waiting: " FROM pizza_name_backlog CROSS JOIN pizzas ON pizzas.id = pizza_name_backlog.id \
             WHERE pizza_name_backlog.id > $2 AND instr(pizzas.name_folded, $1) > 0 AND pizzas.deleted_at IS NULL",
    postgres: " FROM pizzas WHERE name_folded LIKE \
               '%' || replace(replace(replace($1::text, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%' \
               AND deleted_at IS NULL AND id > $2 ORDER BY id"
);

page_and_seek!(LIST_NAMED_BY_OWNER, SEEK_NAMED_BY_OWNER, 4,
    sqlite indexed: " FROM pizza_name_trigrams JOIN pizzas ON pizzas.id = pizza_name_trigrams.rowid \
             WHERE pizza_name_trigrams MATCH '\"' || replace($1, '\"', '\"\"') || '\"' \
             AND pizza_name_trigrams.rowid > $2 AND instr(pizzas.name_folded, $1) > 0 \
             AND pizzas.deleted_at IS NULL AND pizzas.created_by = $3",
    waiting: " FROM pizza_name_backlog CROSS JOIN pizzas ON pizzas.id = pizza_name_backlog.id \
             WHERE pizza_name_backlog.id > $2 AND instr(pizzas.name_folded, $1) > 0 AND pizzas.deleted_at IS NULL \
             AND pizzas.created_by = $3",
    postgres: " FROM pizzas WHERE name_folded LIKE \
               '%' || replace(replace(replace($1::text, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%' \
               AND deleted_at IS NULL AND id > $2 AND created_by = $3 ORDER BY id"
);

// A name filter the trigram index cannot serve (see
// ListQuery::name_is_indexed): a bounded scan. It examines at most
// SCAN_WINDOW live pizzas after the cursor, in ID order, and keeps those
// whose folded name holds the filter (instr/strpos: `%` and `_` are plain
// characters). No offset: the handler refuses one with such a filter.
const LIST_SCANNED: Statement = Statement {
    sqlite: concat!(
        "SELECT ",
        pizza_columns!(sqlite),
        " FROM (SELECT * FROM pizzas WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT CAST($2 AS INTEGER)) ",
        "WHERE instr(name_folded, $3) > 0 ORDER BY id LIMIT CAST($4 AS INTEGER)"
    ),
    postgres: concat!(
        "SELECT ",
        pizza_columns!(postgres),
        " FROM (SELECT * FROM pizzas WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2) AS window_rows ",
        "WHERE strpos(name_folded, $3::text) > 0 ORDER BY id LIMIT $4"
    ),
};

const LIST_SCANNED_BY_OWNER: Statement = Statement {
    sqlite: concat!(
        "SELECT ",
        pizza_columns!(sqlite),
        " FROM (SELECT * FROM pizzas WHERE created_by = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id ",
        "LIMIT CAST($3 AS INTEGER)) WHERE instr(name_folded, $4) > 0 ORDER BY id LIMIT CAST($5 AS INTEGER)"
    ),
    postgres: concat!(
        "SELECT ",
        pizza_columns!(postgres),
        " FROM (SELECT * FROM pizzas WHERE created_by = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id ",
        "LIMIT $3) AS window_rows WHERE strpos(name_folded, $4::text) > 0 ORDER BY id LIMIT $5"
    ),
};

// Where a bounded scan that filled less than a page stopped: how many live
// pizzas its window held and the last one's ID.
const SCAN_END: Statement = Statement {
    sqlite: "SELECT count(*), max(id) FROM (SELECT id FROM pizzas WHERE deleted_at IS NULL AND id > $1 \
             ORDER BY id LIMIT CAST($2 AS INTEGER))",
    postgres: "SELECT count(*), max(id) FROM (SELECT id FROM pizzas WHERE deleted_at IS NULL AND id > $1 \
               ORDER BY id LIMIT $2) AS window_rows",
};

const SCAN_END_BY_OWNER: Statement = Statement {
    sqlite: "SELECT count(*), max(id) FROM (SELECT id FROM pizzas WHERE created_by = $1 AND deleted_at IS NULL \
             AND id > $2 ORDER BY id LIMIT CAST($3 AS INTEGER))",
    postgres: "SELECT count(*), max(id) FROM (SELECT id FROM pizzas WHERE created_by = $1 AND deleted_at IS NULL \
               AND id > $2 ORDER BY id LIMIT $3) AS window_rows",
};

/// How many live pizzas (after the cursor, and of the owner when
/// `created_by` is given) one request with a name filter the index cannot
/// serve examines at most.
pub const SCAN_WINDOW: i64 = 5_000;

/// One page of the list and where the next one starts.
#[derive(Debug)]
pub struct Page {
    pub pizzas: Vec<Pizza>,
    /// The cursor of the next page (`after`), when there may be one: after
    /// a full page, or after a bounded scan that stopped before the end of
    /// the table (its page may then be short, even empty).
    pub next_after: Option<i64>,
}

/// One list statement as the tests that read plans need it.
pub struct ListStatement {
    pub name: &'static str,
    pub statement: Statement,
    /// Parameters of the right types (user 2 as the owner, "pep" and "%" as
    /// the names).
    pub params: Vec<Value<'static>>,
    /// Whether it runs planned for its values every time
    /// ([`crate::db::Access::ReadReplanned`]) rather than prepared once.
    pub replanned: bool,
}

/// Every list statement: for the tests that read their plans.
pub fn list_statements() -> Vec<ListStatement> {
    let (name, short, owner, window) = (Value::from("pep"), Value::from("%"), Value::from(2), Value::from(SCAN_WINDOW));
    let one =
        |name, statement, params: Vec<Value<'static>>, replanned| ListStatement { name, statement, params, replanned };
    vec![
        one("all", LIST_ALL, vec![0.into(), 100.into()], false),
        one("all: seek", SEEK_ALL, vec![0.into(), 9000.into()], false),
        one("by owner", LIST_BY_OWNER, vec![owner, 0.into(), 100.into()], true),
        one("by owner: seek", SEEK_BY_OWNER, vec![owner, 0.into(), 9000.into()], true),
        one("named", LIST_NAMED, vec![name, 0.into(), 100.into()], true),
        one("named: seek", SEEK_NAMED, vec![name, 0.into(), 9000.into()], true),
        one("named by owner", LIST_NAMED_BY_OWNER, vec![name, 0.into(), owner, 100.into()], true),
        one("named by owner: seek", SEEK_NAMED_BY_OWNER, vec![name, 0.into(), owner, 9000.into()], true),
        one("scanned", LIST_SCANNED, vec![0.into(), window, short, 100.into()], false),
        one("scanned by owner", LIST_SCANNED_BY_OWNER, vec![owner, 0.into(), window, short, 100.into()], true),
        one("scan end", SCAN_END, vec![0.into(), window], false),
        one("scan end by owner", SCAN_END_BY_OWNER, vec![owner, 0.into(), window], true),
    ]
}

/// One page of pizzas matching `query`, by ID, from its cursor; an offset
/// is first turned into a cursor by the page statement's seek twin.
pub fn list(db: &impl Exec, query: &ListQuery) -> Result<Page, DbError> {
    let after = match query.offset {
        0 => query.after,
        offset => match seek(db, query, offset)? {
            Some(id) => id - 1,
            None => return Ok(Page { pizzas: Vec::new(), next_after: None }),
        },
    };
    let (limit, after) = (query.limit.into(), after.into());
    let pizzas = match (query.name.as_deref(), query.created_by) {
        (None, None) => db.read_many(&LIST_ALL, &[after, limit], from_row)?,
        (None, Some(owner)) => db.read_many_replanned(&LIST_BY_OWNER, &[owner.into(), after, limit], from_row)?,
        (Some(name), None) if query.name_is_indexed() => {
            db.read_many_replanned(&LIST_NAMED, &[name.into(), after, limit], from_row)?
        }
        (Some(name), Some(owner)) if query.name_is_indexed() => {
            db.read_many_replanned(&LIST_NAMED_BY_OWNER, &[name.into(), after, owner.into(), limit], from_row)?
        }
        (Some(name), None) => {
            db.read_many(&LIST_SCANNED, &[after, SCAN_WINDOW.into(), name.into(), limit], from_row)?
        }
        (Some(name), Some(owner)) => db.read_many_replanned(
            &LIST_SCANNED_BY_OWNER,
            &[owner.into(), after, SCAN_WINDOW.into(), name.into(), limit],
            from_row,
        )?,
    };
    let next_after = match pizzas.last() {
        Some(last) if pizzas.len() as i64 == query.limit => Some(last.id),
        _ if query.name.is_some() && !query.name_is_indexed() => scan_end(db, query)?,
        _ => None,
    };
    Ok(Page { pizzas, next_after })
}

/// The ID of the pizza `offset` places after the cursor (0-based), if there
/// is one. A name filter the index cannot serve takes no offset (the handler
/// refuses one).
fn seek(db: &impl Exec, query: &ListQuery, offset: i64) -> Result<Option<i64>, DbError> {
    let (after, offset) = (query.after.into(), offset.into());
    let id = |row: &Row<'_>| row.int(0);
    let found = match (query.name.as_deref(), query.created_by) {
        (None, None) => db.read_one(&SEEK_ALL, &[after, offset], id)?,
        (None, Some(owner)) => db.read_many_replanned(&SEEK_BY_OWNER, &[owner.into(), after, offset], id)?.pop(),
        (Some(name), None) => db.read_many_replanned(&SEEK_NAMED, &[name.into(), after, offset], id)?.pop(),
        (Some(name), Some(owner)) => {
            db.read_many_replanned(&SEEK_NAMED_BY_OWNER, &[name.into(), after, owner.into(), offset], id)?.pop()
        }
    };
    Ok(found)
}

/// The last ID a bounded scan examined, if its window was full (there may
/// be more pizzas after it); `None` when it reached the end.
fn scan_end(db: &impl Exec, query: &ListQuery) -> Result<Option<i64>, DbError> {
    let (after, window) = (query.after.into(), SCAN_WINDOW.into());
    let read = |row: &Row<'_>| Ok((row.int(0)?, row.opt_int(1)?));
    let end = match query.created_by {
        None => db.read_one(&SCAN_END, &[after, window], read)?,
        Some(owner) => db.read_many_replanned(&SCAN_END_BY_OWNER, &[owner.into(), after, window], read)?.pop(),
    };
    Ok(match end {
        Some((examined, last)) if examined == SCAN_WINDOW => last,
        _ => None,
    })
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
        let mut stmt = conn.prepare(LIST_ALL.sqlite).unwrap();

        for limit in [10, 20, 10] {
            let mut rows = stmt.query((0, limit)).unwrap();
            while rows.next().unwrap().is_some() {}
        }

        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    /// A database with the schema and `rows` pizzas (every tenth deleted,
    /// every third owned by user 2).
    fn sqlite_with_pizzas(rows: i64) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for migration in crate::db::migrate::SQLITE {
            conn.execute_batch(migration.sql).unwrap();
        }
        conn.execute_batch(&format!(
            "INSERT INTO users (email, name, role, created_at, updated_at) VALUES ('a', 'a', 'admin', 'x', 'x'), \
             ('b', 'b', 'user', 'x', 'x'); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             INSERT INTO pizzas (name, name_folded, price, created_by, created_at, updated_at, deleted_at) \
             SELECT 'Pizza ' || i, 'pizza ' || i, 1, 1 + (i % 3 = 0), 'x', 'x', CASE WHEN i % 10 = 0 THEN 'x' END \
             FROM n;"
        ))
        .unwrap();
        conn
    }

    fn sqlite_plan(conn: &rusqlite::Connection, statement: &Statement, params: &[Value<'_>]) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", statement.sqlite)).unwrap();
        stmt.query_map(rusqlite::params_from_iter(params), |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn no_sqlite_list_statement_scans_the_table_or_sorts_its_matches() {
        for analyzed in [false, true] {
            let conn = sqlite_with_pizzas(3000);
            if analyzed {
                conn.execute_batch("ANALYZE").unwrap();
            }
            for ListStatement { name, statement, params, .. } in list_statements() {
                let plan = sqlite_plan(&conn, &statement, &params);
                let text = plan.join("\n");
                assert!(!plan.iter().any(|step| step.starts_with("SCAN pizzas")), "{name}: a full scan\n{text}");
                assert!(
                    plan.iter().any(|step| step.starts_with("SEARCH pizzas") || step.contains("VIRTUAL TABLE INDEX")),
                    "{name}: no index\n{text}"
                );
                if name.starts_with("named") {
                    // The FTS5 table answers MATCH ('M') with the rowid bound ('>').
                    assert!(
                        plan.iter().any(|s| s.contains("VIRTUAL TABLE INDEX") && s.contains(":M")),
                        "{name}\n{text}"
                    );
                    // The backlog is read from the cursor by its key.
                    assert!(
                        plan.iter()
                            .any(|s| s.starts_with("SEARCH pizza_name_backlog USING INTEGER PRIMARY KEY (rowid>?)")),
                        "{name}\n{text}"
                    );
                }
                // Only a bounded scan may sort: the matches of its window.
                if !name.starts_with("scanned") {
                    assert!(!text.contains("TEMP B-TREE"), "{name}: sorts every match\n{text}");
                }
            }
        }
    }

    /// Moves the names of pizzas up to `last` from the backlog into the index.
    fn move_backlog(conn: &rusqlite::Connection, last: i64) {
        use crate::db::name_backlog::{CLEAR, INDEX_NAMES};
        conn.execute(INDEX_NAMES.sqlite, [last]).unwrap();
        conn.execute(CLEAR.sqlite, [last]).unwrap();
    }

    #[test]
    fn the_sqlite_name_filter_finds_every_name_waiting_or_indexed_through_renames_and_deletes() {
        let conn = sqlite_with_pizzas(20);
        let find = |filter: &str| -> Vec<i64> {
            let mut stmt = conn.prepare(LIST_NAMED.sqlite).unwrap();
            let params: [Value<'_>; 3] = [filter.into(), 0.into(), 100.into()];
            stmt.query_map(rusqlite::params_from_iter(params), |row| row.get(0)).unwrap().map(Result::unwrap).collect()
        };
        let seek = |filter: &str, offset: i64| -> Option<i64> {
            let mut stmt = conn.prepare(SEEK_NAMED.sqlite).unwrap();
            let params: [Value<'_>; 3] = [filter.into(), 0.into(), offset.into()];
            stmt.query_map(rusqlite::params_from_iter(params), |row| row.get(0)).unwrap().map(Result::unwrap).next()
        };
        let waiting =
            || -> i64 { conn.query_row("SELECT count(*) FROM pizza_name_backlog", [], |r| r.get(0)).unwrap() };
        let live_ones = vec![1, 11, 12, 13, 14, 15, 16, 17, 18, 19];

        // Every new name waits on the backlog, and is found there.
        assert_eq!(waiting(), 20);
        assert_eq!(find("za 1"), live_ones);
        // Half moved into the index: the two parts merge in ID order.
        move_backlog(&conn, 10);
        assert_eq!(waiting(), 10);
        assert_eq!(find("za 1"), live_ones);
        assert_eq!(seek("za 1", 1), Some(11), "the offset runs across both parts");
        assert_eq!(seek("za 1", 9), Some(19));
        assert_eq!(seek("za 1", 10), None);

        // Renamed and deleted, indexed (3, 4) and waiting (13, 14).
        conn.execute_batch(
            "UPDATE pizzas SET name_folded = 'quattro \"formaggi\" 100%' WHERE id IN (3, 13); \
             DELETE FROM pizzas WHERE id IN (4, 14);",
        )
        .unwrap();
        let renamed_and_deleted = |when: &str| {
            assert_eq!(find("za 1"), vec![1, 11, 12, 15, 16, 17, 18, 19], "{when}");
            assert_eq!(find("\"formaggi\" 100%"), vec![3, 13], "{when}");
            assert_eq!(find("za 3"), Vec::<i64>::new(), "{when}: the old name is gone");
            assert_eq!(find("za 4"), Vec::<i64>::new(), "{when}");
        };
        renamed_and_deleted("before the move");
        move_backlog(&conn, 20);
        assert_eq!(waiting(), 0);
        renamed_and_deleted("after the move");

        // The index holds exactly the names of the pizzas ('integrity-check'
        // with rank 1 compares it with the content table).
        conn.execute("INSERT INTO pizza_name_trigrams (pizza_name_trigrams, rank) VALUES ('integrity-check', 1)", [])
            .unwrap();
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
        assert_eq!(integrity, "ok");
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
