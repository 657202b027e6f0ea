//! pizza-api: a REST service for pizzas, protected by OAuth2 client-credentials
//! tokens, on SQLite or PostgreSQL.
//!
//! A request enters in [`http::server`], is routed in [`http::router`] to a
//! resource module ([`pizzas`], [`clients`], [`ops`]), which runs its
//! statements through the executor of [`db`]; failures become status codes in
//! [`rest::error`]. `ARCHITECTURE.md` draws the layers.

pub mod app;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod db;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod migrate_data;
pub mod ops;
pub mod pizzas;
pub mod rest;
pub mod seed;
pub mod state;
