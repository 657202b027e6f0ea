//! Start-up: from a [`Config`] to a running server. [`Application::build`]
//! connects to the database, brings its schema up to date and binds the
//! listener (port 0 in tests); [`Application::run`] serves until stopped.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{JwtKeys, secrets};
use crate::config::Config;
use crate::db::{self, Db, DbError};
use crate::http::HttpServer;
use crate::http::server::{self, StopHandle, StopReason};
use crate::seed::{self, SeedError};

/// How long a stopping server waits for accepted requests to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a request handler can reach.
pub struct AppState {
    pub config: Config,
    pub db: Db,
    /// Signs and checks access tokens.
    pub jwt: JwtKeys,
    /// A bcrypt hash at `BCRYPT_COST` to check secrets of unknown clients
    /// against, so they cost as much as known ones.
    pub dummy_hash: String,
}

/// Why the service could not start or stopped with an error.
#[derive(Debug)]
pub enum StartupError {
    /// The database could not be opened or its schema does not fit.
    Database(DbError),
    /// The listening socket could not be bound.
    Listen { addr: String, cause: std::io::Error },
    /// The bootstrap client or the development seed could not be stored.
    Seed(SeedError),
    /// The operating system's random source or bcrypt failed.
    Secret(String),
    /// The server stopped because its listener failed.
    Stopped(String),
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The connect error already reads as a sentence for the operator.
            StartupError::Database(DbError::Unavailable(cause)) => f.write_str(cause),
            StartupError::Database(err) => write!(f, "{err}"),
            StartupError::Listen { addr, cause } => write!(f, "cannot listen on {addr}: {cause}"),
            StartupError::Seed(err) => write!(f, "cannot store start-up data: {err}"),
            StartupError::Secret(err) => f.write_str(err),
            StartupError::Stopped(cause) => write!(f, "server stopped: {cause}"),
        }
    }
}

impl std::error::Error for StartupError {}

impl From<DbError> for StartupError {
    fn from(err: DbError) -> StartupError {
        StartupError::Database(err)
    }
}

/// A started service: database open, schema current, listener bound, workers running.
pub struct Application {
    server: HttpServer,
}

impl Application {
    /// Builds and starts the service described by `config`.
    pub fn build(config: Config) -> Result<Application, StartupError> {
        let db = Db::connect(&config.database, &config.pool)?;
        let report = db::migrate::apply(&db)?;
        if report.applied.is_empty() {
            log::info!("schema is up to date ({} files applied earlier)", report.already_applied);
        } else {
            log::info!("schema: applied {}", report.applied.join(", "));
        }

        seed::bootstrap(&db, &config).map_err(StartupError::Seed)?;
        seed::seed_dev_data(&db, &config).map_err(StartupError::Seed)?;
        let jwt = JwtKeys::new(&jwt_key(&config)?, config.jwt_expiration);
        let dummy_hash = secrets::hash("not-a-client-secret", config.bcrypt_cost).map_err(StartupError::Secret)?;

        let listener = server::bind(&config.host, config.port)
            .map_err(|cause| StartupError::Listen { addr: format!("{}:{}", config.host, config.port), cause })?;
        let workers = config.workers;
        let driver = db.driver_name();
        let state = Arc::new(AppState { config, db, jwt, dummy_hash });
        let server = HttpServer::start(listener, state, workers)
            .map_err(|cause| StartupError::Listen { addr: "worker threads".into(), cause })?;
        log::info!(
            "pizza-api {} listening on http://{} ({} database, {workers} workers)",
            env!("CARGO_PKG_VERSION"),
            server.local_addr(),
            driver
        );
        Ok(Application { server })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A handle that stops the server.
    pub fn stop_handle(&self) -> StopHandle {
        self.server.stop_handle()
    }

    /// Serves until stopped, then drains accepted requests.
    pub fn run(self) -> Result<(), StartupError> {
        let (reason, drained) = self.server.wait(DRAIN_TIMEOUT);
        if !drained {
            log::warn!("some requests were still running after {}s; exiting anyway", DRAIN_TIMEOUT.as_secs());
        }
        match reason {
            StopReason::Requested(why) => {
                log::info!("stopped ({why})");
                Ok(())
            }
            StopReason::ListenerFailed(cause) => Err(StartupError::Stopped(cause)),
        }
    }
}

/// The JWT key: `JWT_SECRET`, or (development only; production requires
/// the variable) 64 random bytes that live as long as the process.
fn jwt_key(config: &Config) -> Result<Vec<u8>, StartupError> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    log::warn!(
        "JWT_SECRET is not set: signing tokens with a random key, so tokens end with this process and are \
         not accepted by other replicas"
    );
    Ok(secrets::random_bytes::<64>().map_err(StartupError::Secret)?.to_vec())
}
