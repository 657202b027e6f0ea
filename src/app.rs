//! Start-up: from a [`Config`] to a running server. [`Application::build`]
//! binds the listener first (port 0 in tests), so a taken port fails before
//! the database is touched, then connects to the database, brings its schema
//! up to date and starts serving; [`Application::run`] serves until stopped.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::auth::cache::CredentialCache;
use crate::auth::lockout::FailureLimiter;
use crate::auth::revocation::{self, Revocations};
use crate::auth::secrets::{self, BcryptPool, BcryptSlots, DummyHash};
use crate::auth::users::UserDirectory;
use crate::auth::{Auth, JwtKeys};
use crate::config::Config;
use crate::db::health::{CHECK_CONNECTING, DbHealth, PROBE_CONNECTION_WAIT};
use crate::db::replicas::Replicas;
use crate::db::{self, Db, DbError, HealthCheck};
use crate::http::server::{self, HttpServer, StopHandle, StopReason};
use crate::metrics::{self, Metrics};
use crate::seed::{self, SeedError};
use crate::state::AppState;

/// How often the revocation sync also deletes revocations of expired tokens.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Keeps `Auth::revocations` in step with the database every
/// `REVOCATION_SYNC_MS` (see `auth::revocation`), deletes revocations of
/// expired tokens once a minute, and refreshes the lockout gauge. Holds the
/// state weakly, so it ends when the service stops. A failed sync keeps what
/// is known (it is logged once, and again when it recovers): while the
/// database is down the routes that check tokens answer 503 anyway.
fn start_revocation_sync(state: Weak<AppState>) -> std::io::Result<()> {
    let every = state.upgrade().map_or(Duration::from_secs(1), |s| s.config.revocation_sync);
    std::thread::Builder::new().name("revocation-sync".into()).spawn(move || {
        let (mut failing, mut last_purge) = (false, Instant::now());
        loop {
            std::thread::sleep(every);
            let Some(state) = state.upgrade() else { return };
            let auth = &state.auth;
            metrics::TOKEN_LOCKED_CLIENTS.store(auth.lockout.locked_count() as i64, Ordering::Relaxed);
            if state.db_health.is_down() {
                continue;
            }
            match auth.revocations.sync(&state.db) {
                Ok(_) if failing => {
                    failing = false;
                    log::info!("revocation sync: reading the database again");
                }
                Ok(_) => {}
                Err(err) if !failing => {
                    failing = true;
                    log::warn!("revocation sync: cannot read the database ({err}); keeping what is known");
                }
                Err(_) => {}
            }
            if last_purge.elapsed() >= PURGE_EVERY {
                last_purge = Instant::now();
                match revocation::purge_expired(&state.db) {
                    Ok(0) => {}
                    Ok(n) => log::debug!("revocation sync: {n} revocations of expired tokens deleted"),
                    Err(err) => log::debug!("revocation sync: cannot delete expired revocations: {err}"),
                }
            }
        }
    })?;
    Ok(())
}

/// SQLite: moves the names waiting on the name filter's backlog into its
/// index every `name_backlog::INTERVAL`, a batch at a time (see
/// `db::name_backlog`). Holds the state weakly, so it ends when the service
/// stops. A failure is logged once (and again when it works): meanwhile the
/// list reads the waiting names from the backlog, so answers stay right.
fn start_name_backlog(state: Weak<AppState>) -> std::io::Result<()> {
    std::thread::Builder::new().name("name-backlog".into()).spawn(move || {
        let mut failing = false;
        loop {
            std::thread::sleep(db::name_backlog::INTERVAL);
            let Some(state) = state.upgrade() else { return };
            if state.db_health.is_down() {
                continue;
            }
            loop {
                match db::name_backlog::move_batch(&state.db) {
                    Ok(moved) => {
                        if failing {
                            failing = false;
                            log::info!("name backlog: moving names into the index again");
                        }
                        if (moved as i64) < db::name_backlog::BATCH {
                            break;
                        }
                    }
                    Err(err) => {
                        if !failing {
                            failing = true;
                            log::warn!("name backlog: cannot move names into the index ({err}); the list reads them from the backlog meanwhile");
                        }
                        break;
                    }
                }
            }
        }
    })?;
    Ok(())
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
    /// A thread of the service could not be started.
    Thread { name: &'static str, cause: std::io::Error },
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
            StartupError::Thread { name, cause } => write!(f, "cannot start the {name} thread(s): {cause}"),
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
    state: Arc<AppState>,
}

impl Application {
    /// Builds and starts the service described by `config`.
    pub fn build(config: Config) -> Result<Application, StartupError> {
        // Bound first: a second instance on a taken port must not create,
        // migrate or seed anything before it fails.
        server::raise_open_files_limit(config.http.max_connections, config.pool.max_open);
        let listener = server::bind(&config.host, config.port)
            .map_err(|cause| StartupError::Listen { addr: format!("{}:{}", config.host, config.port), cause })?;
        let db = Db::connect(&config.database, &config.pool)?;
        let replicas = Replicas::open(&config.database, &config.pool)?;
        let report = db::migrate::apply(&db)?;
        if report.applied.is_empty() {
            log::info!("schema is up to date ({} files applied earlier)", report.already_applied);
        } else {
            log::info!("schema: applied {}", report.applied.join(", "));
        }

        seed::bootstrap(&db, &config).map_err(StartupError::Seed)?;
        seed::seed_dev_data(&db, &config).map_err(StartupError::Seed)?;
        let auth = Auth {
            jwt: JwtKeys::new(&jwt_key(&config)?, config.jwt_expiration),
            dummy_hash: DummyHash::new(config.bcrypt_cost),
            credentials: CredentialCache::new(secrets::random_bytes::<32>().map_err(StartupError::Secret)?),
            bcrypt_slots: BcryptSlots::new(config.workers / 2),
            bcrypt: BcryptPool::start(std::thread::available_parallelism().map_or(1, |n| n.get() / 2).max(1))
                .map_err(|cause| StartupError::Thread { name: "bcrypt", cause })?,
            bcrypt_cost: config.bcrypt_cost,
            users: UserDirectory::load(&db)?,
            revocations: Revocations::new(config.jwt_expiration),
            lockout: FailureLimiter::new(config.token_failures),
        };
        // Tokens revoked before this start are refused from the first request.
        auth.revocations.sync(&db)?;

        let workers = config.workers;
        let driver = db.driver_name();
        let db_health = Arc::new(DbHealth::new());
        let state = Arc::new(AppState {
            config,
            db,
            replicas,
            db_health: Arc::clone(&db_health),
            auth,
            metrics: Metrics::default(),
        });
        let warm = Arc::clone(&state);
        std::thread::spawn(move || warm.auth.dummy_hash.get().len());
        // The prober holds the state weakly, so the pools still close when
        // the service stops.
        let probed = Arc::downgrade(&state);
        let check = HealthCheck::open(&state.config.database, &state.config.pool)?;
        DbHealth::start_prober(db_health, &CHECK_CONNECTING, move || {
            Some(check.ping(&probed.upgrade()?.db, PROBE_CONNECTION_WAIT))
        })
        .map_err(|cause| StartupError::Thread { name: "database prober", cause })?;
        state.replicas.start_checks().map_err(|cause| StartupError::Thread { name: "read replica check", cause })?;
        start_revocation_sync(Arc::downgrade(&state))
            .map_err(|cause| StartupError::Thread { name: "revocation sync", cause })?;
        if db::name_backlog::applies_to(&state.db) {
            start_name_backlog(Arc::downgrade(&state))
                .map_err(|cause| StartupError::Thread { name: "name backlog", cause })?;
        }
        let server = HttpServer::start(listener, Arc::clone(&state), workers)
            .map_err(|cause| StartupError::Thread { name: "HTTP worker", cause })?;
        let up = format!(
            "pizza-api {} listening on http://{} ({driver} database, {workers} workers)",
            env!("CARGO_PKG_VERSION"),
            server.local_addr(),
        );
        // The one line an operator needs even at LOG_LEVEL=warn or error.
        if log::log_enabled!(log::Level::Info) {
            log::info!("{up}");
        } else {
            eprintln!("{up}");
        }
        Ok(Application { server, state })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A handle that stops the server.
    pub fn stop_handle(&self) -> StopHandle {
        self.server.stop_handle()
    }

    /// Serves until stopped (SIGTERM or SIGINT, or a failed listener), then
    /// finishes the requests already accepted, waiting at most
    /// `SHUTDOWN_TIMEOUT`, and closes the database connections.
    pub fn run(self) -> Result<(), StartupError> {
        let stop = self.stop_handle();
        if let Err(err) = watch_signals(stop) {
            log::warn!("cannot watch SIGTERM/SIGINT ({err}); stop the service with SIGKILL");
        }
        let drain = self.state.config.shutdown_timeout;
        let (reason, drained) = self.server.wait(drain);
        if drained {
            // The workers are gone, so this was the last reference: the pools
            // close their connections here.
            drop(self.state);
            log::info!("all accepted requests answered; database connections closed");
        } else {
            log::warn!("requests still running after {}s (SHUTDOWN_TIMEOUT); exiting anyway", drain.as_secs());
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

/// Turns the first SIGTERM or SIGINT into a graceful stop; a second one
/// ends the process at once (a second Ctrl-C means "now").
fn watch_signals(stop: StopHandle) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
            if stop.is_stopping() {
                log::warn!("{name} again: exiting without waiting");
                std::process::exit(1);
            }
            stop.stop(StopReason::Requested(name.to_owned()));
        }
    })?;
    Ok(())
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
