//! `AppState`: what the service holds while it runs, built by start-up
//! (`app`) and shared by the HTTP server and router, which hand each handler
//! only the parts it needs.

use std::sync::Arc;

use crate::auth::Auth;
use crate::config::Config;
use crate::db::Db;
use crate::db::health::DbHealth;
use crate::db::replicas::Replicas;
use crate::metrics::Metrics;

/// Everything the router can hand to a handler.
pub struct AppState {
    pub config: Config,
    pub db: Db,
    /// The read replicas of `DB_READ_HOSTS` (none when unset), for public reads.
    pub replicas: Replicas,
    /// The database's state as the background prober last saw it.
    pub db_health: Arc<DbHealth>,
    /// Tokens, client secrets and the caches around them.
    pub auth: Auth,
    /// Request counts and durations for `/metrics`.
    pub metrics: Metrics,
}
