//! The database layer: [`Db`] has one variant per driver, each holding an r2d2
//! pool. Statements run through the executor in [`exec`] (read one, read
//! many, write, transaction), the only code that matches on the driver;
//! repository functions in the resource modules define each statement once,
//! as its pair of dialect texts, beside the function that runs it.

pub mod bulk;
pub mod deadline;
pub mod exec;
pub mod health;
pub mod migrate;
pub mod name_backlog;
pub mod replicas;
pub mod tls;

pub use exec::{Exec, Row, Statement, Tx, Value};

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use r2d2::ManageConnection;
use r2d2_postgres::PostgresConnectionManager;
use r2d2_sqlite::SqliteConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DatabaseConfig, PoolConfig, PostgresConfig, SslMode};

/// A pool of SQLite connections.
pub type SqlitePool = r2d2::Pool<SqliteConnectionManager>;
/// A pool of PostgreSQL connections.
pub type PgPool = r2d2::Pool<PgManager>;

/// How many times start-up tries to reach the database before giving up.
pub const CONNECT_ATTEMPTS: u32 = 5;

/// How long SQLite waits for another connection's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive probes on PostgreSQL connections: the first after this
/// much silence, then one per interval, and the connection is dropped after
/// this many go unanswered; with the user timeout (sent data left
/// unacknowledged), a vanished server or a black-holed network is noticed
/// within about 5 s instead of the kernel's two hours.
const PG_KEEPALIVE_IDLE: Duration = Duration::from_secs(2);
const PG_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const PG_KEEPALIVE_RETRIES: u32 = 3;
const PG_TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections above `MAX_IDLE_CONNS` are closed after being idle this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The database, whichever driver runs it.
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PgPool),
}

/// An SQLite database file and its pool.
pub struct SqliteDb {
    pub pool: SqlitePool,
    /// SQLite lets one connection write at a time; writers queue here instead
    /// of in SQLite's busy handler, which sleeps in growing steps.
    write_lock: Mutex<()>,
    path: PathBuf,
    /// The file the pool opened: if `DB_PATH` stops naming it (deleted or
    /// replaced), writes would go to a file nobody will open again.
    file_id: Option<FileId>,
}

/// A pooled PostgreSQL connection with the statements it has prepared: each
/// statement is prepared once per connection, with the parameter types its
/// values name, then costs one round trip and no parsing or planning on the
/// server (which shares the machine's cores with the service in small
/// deployments).
pub struct PgConn {
    client: postgres::Client,
    prepared: HashMap<&'static str, postgres::Statement>,
    /// The server ended this connection (a FATAL error such as "terminating
    /// connection due to administrator command", or a lost socket), even if
    /// the driver has not noticed the socket closing yet.
    broken: bool,
    /// The client-side deadline of its statements.
    watch: deadline::Watch,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Before `client` closes the socket the watch names.
        self.watch.release();
    }
}

impl PgConn {
    fn statement(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<postgres::Statement, DbError> {
        if let Some(prepared) = self.prepared.get(sql) {
            return Ok(prepared.clone());
        }
        let types = exec::pg_types(params);
        let prepared = self.watch.run(|| self.client.prepare_typed(sql, &types)).map_err(|err| self.note(err))?;
        self.prepared.insert(sql, prepared.clone());
        Ok(prepared)
    }

    /// Runs `sql` and returns its rows.
    fn run(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<Vec<postgres::Row>, DbError> {
        let prepared = self.statement(sql, params)?;
        let params = exec::pg_params(params);
        self.watch.run(|| self.client.query(&prepared, &params)).map_err(|err| self.forget(sql, err))
    }

    /// Runs `sql` as an unnamed statement, planned for these `params`
    /// (see [`exec::Access::ReadReplanned`]).
    fn run_replanned(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<Vec<postgres::Row>, DbError> {
        let params = exec::pg_typed_params(params);
        self.watch.run(|| self.client.query_typed(sql, &params)).map_err(|err| self.note(err))
    }

    /// Runs `sql` and returns how many rows it changed.
    fn execute(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64, DbError> {
        let prepared = self.statement(sql, params)?;
        let params = exec::pg_params(params);
        self.watch.run(|| self.client.execute(&prepared, &params)).map_err(|err| self.forget(sql, err))
    }

    /// A schema change can invalidate a prepared statement: prepare it
    /// afresh next time rather than fail for the connection's life.
    fn forget(&mut self, sql: &'static str, err: postgres::Error) -> DbError {
        self.prepared.remove(sql);
        self.note(err)
    }

    /// Converts a driver error, remembering whether it ended the connection.
    fn note(&mut self, err: postgres::Error) -> DbError {
        let code = err.code().map(|c| c.code().to_owned()).unwrap_or_default();
        self.broken |= err.is_closed() || code.starts_with("08") || code.starts_with("57P0") || self.watch.was_cut();
        self.watch.error(err)
    }

    /// `SELECT 1`: whether the server answers on this connection.
    fn check(&mut self) -> Result<(), DbError> {
        match self.watch.run(|| self.client.simple_query("SELECT 1")) {
            Ok(_) => Ok(()),
            Err(err) => Err(self.note(err)),
        }
    }

    /// Whether the connection can no longer be used.
    fn is_dead(&self) -> bool {
        self.broken || self.client.is_closed() || self.watch.was_cut()
    }
}

impl std::ops::Deref for PgConn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

/// Opens [`PgConn`]s: r2d2_postgres's manager (TLS by rustls, per
/// `DB_SSLMODE`), plus a statement cache and the client-side deadline of
/// statements ([`deadline::limit`]) per connection.
pub struct PgManager(PostgresConnectionManager<MakeRustlsConnect>, Option<Duration>);

impl ManageConnection for PgManager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        let mut client = self.0.connect()?;
        let watch = deadline::Watch::attach(&mut client, self.1)?;
        Ok(PgConn { client, prepared: HashMap::new(), broken: false, watch })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || conn.watch.was_cut() || self.0.has_broken(&mut conn.client)
    }
}

/// A snapshot of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

/// A database failure, sorted by what the client should be told.
#[derive(Debug)]
pub enum DbError {
    /// The database did not answer or no connection was free in time (503).
    Unavailable(String),
    /// A unique or foreign-key rule refused the change: the request conflicts
    /// with what is stored (409).
    Conflict(String),
    /// A statement failed for another reason (500).
    Query(String),
    /// The database's schema does not fit this build (start-up only).
    Schema(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Unavailable(cause) => write!(f, "database unavailable: {cause}"),
            DbError::Conflict(cause) => write!(f, "conflict: {cause}"),
            DbError::Query(cause) => write!(f, "database error: {cause}"),
            DbError::Schema(cause) => write!(f, "schema error: {cause}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<r2d2::Error> for DbError {
    fn from(err: r2d2::Error) -> DbError {
        // r2d2's only error: the wait for a connection timed out.
        crate::metrics::POOL_WAIT_TIMEOUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        DbError::Unavailable(format!("no database connection within the wait limit: {err}"))
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(err: rusqlite::Error) -> DbError {
        use rusqlite::ErrorCode::*;
        use rusqlite::ffi::{SQLITE_CONSTRAINT_FOREIGNKEY, SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE};
        let extended = match &err {
            rusqlite::Error::SqliteFailure(failure, _) => failure.extended_code,
            _ => 0,
        };
        match err.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked | CannotOpen | SystemIoFailure | DiskFull | ReadOnly | NotADatabase) => {
                DbError::Unavailable(err.to_string())
            }
            Some(ConstraintViolation)
                if matches!(
                    extended,
                    SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_FOREIGNKEY
                ) =>
            {
                DbError::Conflict(err.to_string())
            }
            _ => DbError::Query(err.to_string()),
        }
    }
}

impl From<postgres::Error> for DbError {
    fn from(err: postgres::Error) -> DbError {
        use postgres::error::SqlState;
        if pg_error_means_unavailable(&err) {
            DbError::Unavailable(describe(&err))
        } else if matches!(err.code(), Some(code) if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION)
        {
            DbError::Conflict(describe(&err))
        } else {
            DbError::Query(describe(&err))
        }
    }
}

/// An error and its chain of causes on one line ("error connecting to server:
/// Connection refused (os error 111)"): the driver's top-level text alone
/// rarely says what went wrong.
pub fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Whether a PostgreSQL error says "the server is not there" rather than
/// "this statement is wrong": a lost connection, a server shutting down or
/// starting, too many connections, a statement cut off by its timeout, or a
/// read-only standby after a failover.
fn pg_error_means_unavailable(err: &postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        Some(state) => {
            let code = state.code();
            // 57014: the statement ran past DB_STATEMENT_TIMEOUT_MS.
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57") || code == "25006"
        }
        // No SQLSTATE: an I/O error or a timeout on the way to the server.
        None => true,
    }
}

impl Db {
    /// Opens the database, trying [`CONNECT_ATTEMPTS`] times with doubling
    /// pauses (1, 2, 4, 8 s by default) and logging each failed attempt.
    /// Only transient failures (refused, timed out, reset) are tried again;
    /// a wrong password, an unknown database or a certificate that does not
    /// verify fails at once with its cause.
    pub fn connect(config: &DatabaseConfig, pool: &PoolConfig) -> Result<Db, DbError> {
        // Problems no retry can fix fail at once.
        let open: Box<dyn Fn() -> Result<Db, ConnectFailure>> = match config {
            DatabaseConfig::Sqlite { path } => {
                check_sqlite_directory(path)?;
                Box::new(move || open_sqlite(path, pool).map(Db::Sqlite).map_err(ConnectFailure::transient))
            }
            DatabaseConfig::Postgres(pg) => {
                let tls = tls::connector(pg.sslmode, pg.root_cert.as_deref()).map_err(DbError::Unavailable)?;
                Box::new(move || open_postgres(pg, pool, tls.clone()).map(Db::Postgres))
            }
        };
        let mut delay = pool.retry_base_delay;
        let mut attempt = 1;
        loop {
            log::info!("connecting to the {} database (attempt {attempt}/{CONNECT_ATTEMPTS})", config.driver_name());
            let result = open();
            match result {
                Ok(db) => return Ok(db),
                Err(ConnectFailure { cause, permanent: Some(why) }) => {
                    return Err(DbError::Unavailable(format!(
                        "Failed to connect to database: {cause} (not retried: {why})"
                    )));
                }
                Err(ConnectFailure { cause, .. }) if attempt == CONNECT_ATTEMPTS => {
                    return Err(DbError::Unavailable(format!(
                        "Failed to connect to database after {CONNECT_ATTEMPTS} attempts: {cause}"
                    )));
                }
                Err(ConnectFailure { cause, .. }) => {
                    log::warn!(
                        "database connection attempt {attempt}/{CONNECT_ATTEMPTS} failed: {cause}; retrying in {delay:?}"
                    );
                    thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// Opens an existing SQLite file for reading only (a copy's source):
    /// nothing is created, migrated or written.
    pub fn open_sqlite_read_only(path: &Path) -> Result<Db, DbError> {
        let manager = SqliteConnectionManager::file(path).with_flags(rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY);
        // A file that is not a database fails here, at once, with SQLite's
        // own words (the pool would retry it until its timeout).
        let first = manager.connect().map_err(|e| DbError::Unavailable(describe(&e)))?;
        first.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(1)
            .error_handler(Box::new(QuietPoolErrors::Uncounted))
            .build_unchecked(manager);
        Ok(Db::Sqlite(SqliteDb { pool, write_lock: Mutex::new(()), path: path.to_owned(), file_id: FileId::of(path) }))
    }

    /// How many connections the pool holds, in use and idle, and its size.
    pub fn pool_state(&self) -> PoolState {
        let (state, max) = match self {
            Db::Sqlite(sqlite) => (sqlite.pool.state(), sqlite.pool.max_size()),
            Db::Postgres(pool) => (pool.state(), pool.max_size()),
        };
        PoolState { in_use: state.connections - state.idle_connections, idle: state.idle_connections, max }
    }

    /// `sqlite` or `postgres`.
    pub fn driver_name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}

/// The `application_name` of the health check's PostgreSQL connection.
const HEALTH_CHECK_APPLICATION_NAME: &str = "pizza-api-health";

/// The health check's way to the database. On PostgreSQL a connection of
/// its own (`application_name` `pizza-api-health`): requests holding every
/// pooled connection cannot make a working database look down, and when
/// the server drops every connection the check waits for a new connection
/// of its own, not for one that requests take first. On SQLite the
/// service's pool (a connection there is a file handle, opened at once).
pub struct HealthCheck(Option<PgPool>);

impl HealthCheck {
    /// Connects to nothing yet: the pool opens its connection in the
    /// background.
    pub fn open(config: &DatabaseConfig, pool: &PoolConfig) -> Result<HealthCheck, DbError> {
        let DatabaseConfig::Postgres(pg) = config else { return Ok(HealthCheck(None)) };
        let tls = tls::connector(pg.sslmode, pg.root_cert.as_deref()).map_err(DbError::Unavailable)?;
        let mut settings = pg_config(pg, pool);
        settings.host(&pg.host).port(pg.port).application_name(HEALTH_CHECK_APPLICATION_NAME);
        let manager = PgManager(PostgresConnectionManager::new(settings, tls), deadline::limit(pool.statement_timeout));
        // The acquire timeout only paces r2d2's attempts to reconnect (a
        // pause that doubles up to half of it); each check names its wait.
        let one = PoolConfig { max_open: 1, max_idle: 1, acquire_timeout: Duration::from_secs(1), ..pool.clone() };
        Ok(HealthCheck(Some(build_pool(manager, &one, QuietPoolErrors::Counted))))
    }

    /// Checks that `db` answers a query, waiting at most `wait` for a
    /// connection while one opens (a failed attempt to open one ends the
    /// wait at once). On PostgreSQL a connection found dead (the server
    /// restarted) is dropped and the check tried again on a fresh one, so a
    /// stale connection does not make a healthy server look down.
    pub fn ping(&self, db: &Db, wait: Duration) -> Result<(), DbError> {
        match (db, &self.0) {
            (Db::Sqlite(sqlite), _) => {
                sqlite.check_file()?;
                let conn = acquire(&sqlite.pool, wait, Breaker::Check)?;
                conn.prepare_cached("SELECT count(*) FROM schema_migrations")?.query_row([], |_| Ok(()))?;
                Ok(())
            }
            (Db::Postgres(pool), own) => {
                pg_repeatable(own.as_ref().unwrap_or(pool), wait, Breaker::Check, PgConn::check)
            }
        }
    }
}

/// What, besides its limit, ends a wait for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breaker {
    /// Requests: the circuit breaker opening (they get a 503 at once).
    Respect,
    /// The health check, which closes the breaker and so must not wait on
    /// it: a failed attempt of the pool to open a connection (the server
    /// refuses), while a connect that is merely slow is waited for.
    Check,
    /// Tools that run without a health check (copies, backups): nothing.
    Ignore,
}

/// A pooled connection within `wait`, in short steps so that the wait ends
/// at once when the circuit breaker opens meanwhile, or for the health check
/// when opening a connection fails.
pub(crate) fn acquire<M: ManageConnection>(
    pool: &r2d2::Pool<M>,
    wait: Duration,
    breaker: Breaker,
) -> Result<r2d2::PooledConnection<M>, DbError> {
    use std::sync::atomic::Ordering::Relaxed;
    const STEP: Duration = Duration::from_millis(50);
    let deadline = std::time::Instant::now() + wait;
    let failures = health::CONNECT_FAILURES.load(Relaxed);
    let _connecting = (breaker == Breaker::Check).then(Connecting::start);
    loop {
        if breaker == Breaker::Respect && health::BREAKER.load(Relaxed) {
            return Err(DbError::Unavailable("the database is known down (circuit breaker open)".into()));
        }
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        match pool.get_timeout(remaining.min(STEP).max(Duration::from_millis(1))) {
            Ok(conn) => return Ok(conn),
            Err(err) if remaining <= STEP => return Err(err.into()),
            Err(err) if breaker == Breaker::Check && health::CONNECT_FAILURES.load(Relaxed) != failures => {
                // r2d2 says "timed out waiting for connection: <the attempt's error>".
                let text = err.to_string();
                let cause = text.split_once(": ").map_or("", |(_, cause)| cause);
                return Err(DbError::Unavailable(format!("opening a database connection failed: {cause}")));
            }
            Err(_) => {}
        }
    }
}

/// Marks the health check as waiting for its connection while it lives
/// ([`health::CHECK_CONNECTING`]).
struct Connecting;

impl Connecting {
    fn start() -> Connecting {
        health::CHECK_CONNECTING.store(true, std::sync::atomic::Ordering::Relaxed);
        Connecting
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        health::CHECK_CONNECTING.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs `work` on a pooled PostgreSQL connection, and again on another when
/// that connection turns out to be dead (the server restarted or cut it),
/// up to once per connection the pool can hold: after a restart every idle
/// connection is dead, and each fails at once. Only for work that is safe to
/// repeat (reads): a write cut off mid-way might have committed. A read
/// cut off at its deadline is not repeated: the server did not answer, and
/// another try would wait as long again.
fn pg_repeatable<T>(
    pool: &PgPool,
    wait: Duration,
    breaker: Breaker,
    mut work: impl FnMut(&mut PgConn) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut last = None;
    for _ in 0..=pool.max_size() {
        let mut conn = acquire(pool, wait, breaker)?;
        match work(&mut conn) {
            Err(err) if conn.is_dead() && !conn.watch.was_cut() => last = Some(err),
            result => return result,
        }
    }
    Err(last.unwrap_or_else(|| DbError::Unavailable("every connection was lost".into())))
}

impl SqliteDb {
    /// Runs `work` in a write transaction, as the only writer of this
    /// process. Refuses (503) when the file was deleted or replaced: a write
    /// acknowledged into a file nobody will reopen would be lost.
    pub fn write<T>(&self, work: impl FnOnce(&rusqlite::Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        self.check_file()?;
        let mut conn = acquire(&self.pool, self.pool.connection_timeout(), Breaker::Respect)?;
        let _writer = self.write_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = work(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Fails when `DB_PATH` no longer names the file the pool opened.
    pub fn check_file(&self) -> Result<(), DbError> {
        let now = FileId::of(&self.path);
        if now.is_some() && now == self.file_id {
            return Ok(());
        }
        Err(DbError::Unavailable(format!(
            "the SQLite file {} was deleted or replaced while the service was running",
            self.path.display()
        )))
    }
}

/// Refuses a `DB_PATH` whose directory is missing or not writable (SQLite must
/// create its `-wal` and `-shm` files beside the database): no retry helps there.
fn check_sqlite_directory(path: &Path) -> Result<(), DbError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(DbError::Unavailable(format!(
            "cannot open SQLite database {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    let probe = dir.join(format!(".pizza-api-write-check-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(err) => Err(DbError::Unavailable(format!(
            "cannot open SQLite database {}: directory {} is not writable: {err}",
            path.display(),
            dir.display()
        ))),
    }
}

fn open_sqlite(path: &Path, settings: &PoolConfig) -> Result<SqliteDb, String> {
    let manager = SqliteConnectionManager::file(path).with_init(|conn| {
        conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // FULL: a commit is on disk before the client hears it succeeded.
        conn.pragma_update(None, "synchronous", "FULL")
    });
    let first =
        manager.connect().map_err(|e| format!("cannot open SQLite database {}: {}", path.display(), describe(&e)))?;
    let mode: String = first
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| format!("cannot enable WAL on {}: {e}", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("SQLite kept journal mode {mode:?} for {}: readers may wait for writers", path.display());
    }
    drop(first);
    Ok(SqliteDb {
        pool: build_pool(manager, settings, QuietPoolErrors::Counted),
        write_lock: Mutex::new(()),
        path: path.to_owned(),
        file_id: FileId::of(path),
    })
}

/// Why one start-up connection attempt failed, and whether trying again
/// could help.
struct ConnectFailure {
    /// The error and its causes, on one line.
    cause: String,
    /// `Some(reason)` when no retry can fix it.
    permanent: Option<&'static str>,
}

impl ConnectFailure {
    fn transient(cause: String) -> ConnectFailure {
        ConnectFailure { cause, permanent: None }
    }

    fn from_postgres(err: &postgres::Error) -> ConnectFailure {
        ConnectFailure { cause: describe(err), permanent: permanent_connect_error(err) }
    }
}

/// Whether a failed PostgreSQL connection says something only a change of
/// configuration (or of the server) can fix: the credentials were refused,
/// the database does not exist, or the server's certificate does not verify.
fn permanent_connect_error(err: &postgres::Error) -> Option<&'static str> {
    use postgres::error::SqlState;
    if let Some(code) = err.code() {
        if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return Some("the server refused the credentials; check DB_USER and DB_PASSWORD");
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return Some("the database does not exist; check DB_NAME or create it");
        }
        return None;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        // tokio-rustls wraps rustls' error in an io::Error, whose source()
        // skips it: look inside explicitly.
        let inner =
            cause.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).map(|e| e as &dyn std::error::Error);
        for candidate in [Some(cause), inner].into_iter().flatten() {
            if let Some(rustls::Error::InvalidCertificate(_)) = candidate.downcast_ref::<rustls::Error>() {
                return Some(
                    "the server's TLS certificate does not verify; check DB_SSLMODE, DB_SSLROOTCERT and DB_HOST",
                );
            }
        }
        source = cause.source();
    }
    None
}

fn open_postgres(
    settings: &PostgresConfig,
    pool: &PoolConfig,
    tls: MakeRustlsConnect,
) -> Result<PgPool, ConnectFailure> {
    let mut config = pg_config(settings, pool);
    config.host(&settings.host).port(settings.port);
    let manager = PgManager(PostgresConnectionManager::new(config, tls), deadline::limit(pool.statement_timeout));
    let mut first = manager.connect().map_err(|e| ConnectFailure::from_postgres(&e))?;
    first.simple_query("SELECT 1").map_err(|e| ConnectFailure::from_postgres(&e))?;
    drop(first);
    Ok(build_pool(manager, pool, QuietPoolErrors::Uncounted))
}

/// The connection settings of every PostgreSQL pool, the primary's and each
/// read replica's: all but the server's host and port.
fn pg_config(settings: &PostgresConfig, pool: &PoolConfig) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .user(&settings.user)
        .password(settings.password.expose())
        .dbname(&settings.name)
        .connect_timeout(pool.connect_timeout)
        .keepalives(true)
        .keepalives_idle(PG_KEEPALIVE_IDLE)
        .keepalives_interval(PG_KEEPALIVE_INTERVAL)
        .keepalives_retries(PG_KEEPALIVE_RETRIES)
        .tcp_user_timeout(PG_TCP_USER_TIMEOUT)
        .options(&format!("-c statement_timeout={}", pool.statement_timeout.as_millis()))
        .application_name("pizza-api")
        .ssl_mode(match settings.sslmode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => postgres::config::SslMode::Require,
        });
    config
}

fn build_pool<M: ManageConnection>(manager: M, settings: &PoolConfig, errors: QuietPoolErrors) -> r2d2::Pool<M> {
    r2d2::Pool::builder()
        .max_size(settings.max_open)
        .min_idle(Some(settings.max_idle))
        .max_lifetime(settings.max_lifetime)
        .idle_timeout(Some(IDLE_TIMEOUT))
        .connection_timeout(settings.acquire_timeout)
        // A dead connection is found by the statement that uses it (and then
        // dropped by the pool) instead of by an extra round trip per checkout.
        .test_on_check_out(false)
        // r2d2 logs every failed attempt to open a connection at ERROR, many
        // a second while the database is down; the health check logs the
        // change of state once instead.
        .error_handler(Box::new(errors))
        .build_unchecked(manager)
}

/// Failed connection attempts of a pool, logged at debug only; those of the
/// pool the health check uses (the SQLite pool, the PostgreSQL check's own)
/// counted in [`health::CONNECT_FAILURES`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum QuietPoolErrors {
    Counted,
    Uncounted,
}

impl<E: fmt::Display> r2d2::HandleError<E> for QuietPoolErrors {
    fn handle_error(&self, error: E) {
        if let QuietPoolErrors::Counted = self {
            health::CONNECT_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        log::debug!("the pool could not open a connection: {error}");
    }
}

/// Identity of a file (device and inode), to notice it being replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    #[cfg(unix)]
    fn of(path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| FileId(m.dev(), m.ino()))
    }

    #[cfg(not(unix))]
    fn of(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|_| FileId(0, 0))
    }
}
