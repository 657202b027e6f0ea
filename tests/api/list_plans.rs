//! The list's query plans on PostgreSQL: every list statement, as the
//! service prepares it, walks an index from its cursor instead of reading
//! the whole table (the SQLite plans are checked by the unit tests of
//! `pizzas::store`). Checked both as a generic plan (what a prepared
//! statement settles on after five runs) and as a custom plan for the
//! given values; the statements the service plans on every run for their
//! values (`Exec::read_many_replanned`) only as the latter.

use pizza_api::db::Value;
use pizza_api::pizzas::store::{ListStatement, list_statements};

use crate::helpers::*;

/// `value` as a PostgreSQL literal, with the type `PREPARE` needs.
fn literal(value: &Value<'_>) -> (&'static str, String) {
    match value {
        Value::Int(Some(n)) => ("int8", n.to_string()),
        Value::Text(Some(text)) => ("text", format!("'{}'", text.replace('\'', "''"))),
        other => panic!("no literal for {other:?}"),
    }
}

/// Whether `plan` looks pizzas up by owner through an index.
fn by_owner_index(plan: &str) -> bool {
    plan.lines().any(|line| line.contains("Index Cond:") && line.contains("created_by = "))
}

#[test]
fn no_postgres_list_statement_reads_the_whole_table() {
    if !postgres_available() {
        return;
    }
    let app = spawn_app(Backend::Postgres);
    // 50,000 pizzas, every tenth deleted, every 50th owned by user 2 (a
    // rare owner); no name holds "pep" (a rare name filter).
    app.db.execute(
        "INSERT INTO pizzas (name, name_folded, price, created_by, created_at, updated_at, deleted_at) \
         SELECT 'Pizza ' || i, 'pizza ' || i, 1, 1 + (i % 50 = 0)::int, now(), now(), \
         CASE WHEN i % 10 = 0 THEN now() END FROM generate_series(1, 50000) AS i; ANALYZE pizzas",
    );

    for mode in ["force_generic_plan", "force_custom_plan"] {
        for ListStatement { name, statement, params, replanned } in list_statements() {
            // A statement planned on every run never gets a generic plan.
            if replanned && mode == "force_generic_plan" {
                continue;
            }
            let (types, values): (Vec<_>, Vec<_>) = params.iter().map(literal).unzip();
            let plan = app
                .db
                .query_column(&format!(
                    "SET plan_cache_mode = {mode}; PREPARE list_plan ({}) AS {}; EXPLAIN EXECUTE list_plan ({})",
                    types.join(", "),
                    statement.postgres,
                    values.join(", ")
                ))
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n");

            assert!(!plan.contains("Seq Scan"), "{mode}, {name}: a full scan\n{plan}");
            assert!(plan.contains("Index"), "{mode}, {name}: no index\n{plan}");
            if name == "named" {
                assert!(plan.contains("idx_pizza_live_name_trgm"), "{mode}, {name}: not the trigram index\n{plan}");
            }
            if name == "named by owner" {
                // Either narrows it: the rare name, or the rare owner's pizzas.
                let narrowed = plan.contains("idx_pizza_live_name_trgm") || by_owner_index(&plan);
                assert!(narrowed, "{mode}, {name}\n{plan}");
            }
            if name.ends_with("by owner") && !name.starts_with("named") {
                // idx_pizza_live_created_by_id, or the older idx_pizza_created_by.
                assert!(by_owner_index(&plan), "{mode}, {name}\n{plan}");
            }
        }
    }
}
