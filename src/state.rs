//! `AppState`: what the service holds while it runs, built by start-up
//! (`app`) and shared by the HTTP server and router, which hand each handler
//! only the parts it needs.

use crate::auth::Auth;
use crate::config::Config;
use crate::db::Db;
use crate::metrics::Metrics;

/// Everything the router can hand to a handler.
pub struct AppState {
    pub config: Config,
    pub db: Db,
    /// Tokens, client secrets and the caches around them.
    pub auth: Auth,
    /// Request counts and durations for `/metrics`.
    pub metrics: Metrics,
}
