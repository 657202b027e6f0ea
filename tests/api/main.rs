//! Integration tests: every test starts the real `pizza-api` binary on a
//! database of its own and talks HTTP to it. Tests that involve a database
//! run once on SQLite and once on PostgreSQL (see `both_backends!`).

mod helpers;

mod backup;
mod bearer;
mod clients;
mod corpus;
mod credentials;
mod deadline;
mod docs;
mod executor;
mod health;
mod http_rules;
mod idempotency;
mod list_plans;
mod listener;
mod migrate_data;
mod oauth;
mod operations;
mod pizza_versions;
mod pizzas;
mod replicas;
mod seed;
mod startup;
mod tls;
