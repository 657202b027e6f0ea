//! pizza-api: a REST service for pizzas, protected by OAuth2 client-credentials
//! tokens, on SQLite or PostgreSQL.
//!
//! A request enters in [`http::server`], is routed in [`http::router`] to a
//! resource module, which runs the SQL for its dialect through [`db::Db`];
//! failures become status codes in [`http::error`].

pub mod app;
pub mod auth;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod metrics;
pub mod migrate_data;
pub mod pizzas;
pub mod seed;
pub mod users;
