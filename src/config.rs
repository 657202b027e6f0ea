//! Configuration: every setting comes from the environment (a `.env` file in the
//! working directory is loaded into the environment first, see `main`).
//!
//! Parsing is strict: a value that does not parse stops start-up with one line
//! naming the variable, because a typo silently replaced by a default (say
//! `APP_ENV=prod` running with development seed data) is worse than not starting.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

/// A value that must never be shown: `Debug` and `Display` print `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the few places that must use it (hashing, signing,
    /// connecting). Never pass the result to a log macro or an error message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// `APP_ENV`: what kind of deployment this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    /// Local work: development seed data, a random JWT key when none is set.
    Development,
    /// Production: no seed data unless asked for, `JWT_SECRET` required.
    Production,
}

/// Where the data lives (`DB_DRIVER` and the settings of that driver).
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// An SQLite file (`DB_PATH`).
    Sqlite { path: PathBuf },
    /// A PostgreSQL server.
    Postgres(PostgresConfig),
}

impl DatabaseConfig {
    /// The driver name reported by `/health`: `postgresql` is normalised to `postgres`.
    pub fn driver_name(&self) -> &'static str {
        match self {
            DatabaseConfig::Sqlite { .. } => "sqlite",
            DatabaseConfig::Postgres(_) => "postgres",
        }
    }
}

/// PostgreSQL connection settings (`DB_HOST`, `DB_PORT`, ...).
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub name: String,
    pub sslmode: SslMode,
    /// `DB_SSLROOTCERT`: PEM file of the CA(s) to trust for TLS.
    pub root_cert: Option<PathBuf>,
    /// `DB_READ_HOSTS` and `DB_READ_MAX_LAG_MS`: the streaming replicas that
    /// serve public reads (none: the primary serves everything).
    pub read_replicas: ReadReplicas,
}

/// Streaming replicas of the PostgreSQL server, reached with its
/// credentials and TLS settings (`DB_READ_HOSTS`, `DB_READ_MAX_LAG_MS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReplicas {
    /// Each replica's host and port, in the order given.
    pub hosts: Vec<(String, u16)>,
    /// A replica further behind the primary than this is skipped.
    pub max_lag: Duration,
}

/// The default of `DB_READ_MAX_LAG_MS`.
const DEFAULT_READ_MAX_LAG_MS: u64 = 1000;

/// `DB_READ_HOSTS`: comma-separated `host[:port]` (`[v6 address]:port` for
/// IPv6); a host without a port uses `default_port` (`DB_PORT`).
fn parse_read_hosts(raw: &str, default_port: u16) -> Result<Vec<(String, u16)>, ConfigError> {
    let bad = |item: &str, why: &str| invalid("DB_READ_HOSTS", format!("{item:?} {why} (expected host[:port], ...)"));
    let mut hosts = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let (host, port) = match item.strip_prefix('[') {
            Some(rest) => {
                let (host, after) = rest.split_once(']').ok_or_else(|| bad(item, "has no closing ]"))?;
                (host, after.strip_prefix(':'))
            }
            None if item.matches(':').count() > 1 => (item, None),
            None => match item.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (item, None),
            },
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
            return Err(bad(item, "is not a host name or address"));
        }
        let port = match port {
            None => default_port,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(bad(item, "has a port that is not from 1 to 65535")),
            },
        };
        if hosts.iter().any(|(h, p)| h == host && *p == port) {
            return Err(bad(item, "is listed twice"));
        }
        hosts.push((host.to_owned(), port));
    }
    Ok(hosts)
}

/// `DB_SSLMODE`, with libpq's meanings (see `db::tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise.
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS with a certificate from a trusted CA.
    VerifyCa,
    /// TLS with a certificate from a trusted CA naming `DB_HOST`.
    VerifyFull,
}

impl SslMode {
    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Connection pool settings, shared by both drivers.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// `MAX_OPEN_CONNS`: the most connections open at once.
    pub max_open: u32,
    /// `MAX_IDLE_CONNS`: connections kept open while idle.
    pub max_idle: u32,
    /// `CONN_MAX_LIFETIME`: a connection older than this is closed and replaced;
    /// `None` (`0`) keeps connections for ever.
    pub max_lifetime: Option<Duration>,
    /// `DB_ACQUIRE_TIMEOUT`: how long a request waits for a free connection
    /// before it is answered 503.
    pub acquire_timeout: Duration,
    /// `DB_RETRY_BASE_DELAY_MS`: the first pause between connection attempts at
    /// start-up; later pauses double it (1, 2, 4, 8 s by default).
    pub retry_base_delay: Duration,
    /// `DB_CONNECT_TIMEOUT_MS`: how long opening one connection may take.
    pub connect_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS`: the longest one statement may run on
    /// PostgreSQL (its `statement_timeout`); 0 switches it off.
    pub statement_timeout: Duration,
}

/// The whole effective configuration of one process.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    pub host: String,
    pub port: u16,
    pub log_level: LevelFilter,
    /// `JWT_SECRET`; `None` means a random key per process (development only).
    pub jwt_secret: Option<Secret>,
    /// `JWT_EXPIRATION`, seconds.
    pub jwt_expiration: u64,
    pub database: DatabaseConfig,
    pub pool: PoolConfig,
    pub bootstrap_client_id: String,
    pub bootstrap_client_secret: Option<Secret>,
    pub bcrypt_cost: u32,
    /// `SEED_DEV_DATA`: `None` means "the default for `APP_ENV`".
    pub seed_dev_data: Option<bool>,
    /// `WORKERS`: HTTP worker threads.
    pub workers: usize,
    /// `SHUTDOWN_TIMEOUT`: how long a stopping server waits for the requests
    /// it accepted before it exits anyway.
    pub shutdown_timeout: Duration,
    /// What one client may make the HTTP listener hold.
    pub http: HttpLimits,
    /// Guesses at one client's secret before the token endpoint stops checking them.
    pub token_failures: FailureLimit,
    /// `REVOCATION_SYNC_MS`: how often each replica reads what was revoked.
    pub revocation_sync: Duration,
}

/// The brute-force limit of client authentication: after `limit` wrong
/// secrets for one client ID within `window`, that ID is answered 429 without
/// a bcrypt check until the window has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    /// `TOKEN_FAILURE_LIMIT`: wrong secrets allowed per window.
    pub limit: u32,
    /// `TOKEN_FAILURE_WINDOW_SECONDS`: the window, from the first failure.
    pub window: Duration,
}

/// Limits of the HTTP listener (`HTTP_*`, `MAX_CONNECTIONS`). Past each, the
/// listener answers on its own and closes the connection; see the README's
/// Limits section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Request line plus headers, in bytes (`HTTP_MAX_HEADER_BYTES`); beyond: 431.
    pub max_header_bytes: usize,
    /// From a request's first byte until its head and body have arrived
    /// (`HTTP_READ_TIMEOUT_MS`); beyond: 408. Also how long a new connection
    /// may stay silent.
    pub read_timeout: Duration,
    /// How long an idle keep-alive connection is kept (`HTTP_KEEPALIVE_TIMEOUT_MS`).
    pub keepalive_timeout: Duration,
    /// How long a response may wait for a client that does not read
    /// (`HTTP_WRITE_TIMEOUT_MS`); then the connection closes.
    pub write_timeout: Duration,
    /// Open connections (`MAX_CONNECTIONS`); at the cap the longest-idle one
    /// is closed to make room, or the newcomer gets 503.
    pub max_connections: usize,
    /// Request bodies held in memory at once, all connections together
    /// (`HTTP_MAX_BUFFERED_BODY_BYTES`); beyond: 503.
    pub max_buffered_body_bytes: usize,
}

/// The largest request body accepted (1 MiB); beyond: 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Header fields one request may carry; beyond: 431.
pub const MAX_HEADER_FIELDS: usize = 100;

/// A configuration value that cannot be used; `Display` is the one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with it (never the value of a secret).
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.variable, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The longest client secret bcrypt can check in full: bcrypt reads at most
/// 72 bytes including a terminating zero, so 71 bytes of secret. Longer
/// secrets are refused rather than silently cut (two secrets sharing their
/// first 72 bytes would match).
pub const MAX_CLIENT_SECRET_BYTES: usize = 71;

/// The shortest JWT key accepted in production: HS512 wants a key of at least
/// the hash's block-derived strength; 32 bytes (256 bits) is the floor we enforce.
pub const MIN_PRODUCTION_JWT_SECRET_BYTES: usize = 32;

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment in production,
    /// a map in unit tests). Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = Env { lookup: &|name| lookup(name).filter(|v| !v.is_empty()) };

        let app_env = match env.text("APP_ENV", "development").to_ascii_lowercase().as_str() {
            "development" | "dev" => AppEnv::Development,
            "production" | "prod" => AppEnv::Production,
            other => return Err(invalid("APP_ENV", format!("{other:?} is not one of development, production"))),
        };
        let log_level = match env.text("LOG_LEVEL", "info").to_ascii_lowercase().as_str() {
            "error" => LevelFilter::Error,
            "warn" | "warning" => LevelFilter::Warn,
            "info" => LevelFilter::Info,
            "debug" => LevelFilter::Debug,
            "trace" => LevelFilter::Trace,
            other => {
                return Err(invalid("LOG_LEVEL", format!("{other:?} is not one of error, warn, info, debug, trace")));
            }
        };

        let jwt_secret = env.secret("JWT_SECRET");
        if app_env == AppEnv::Production {
            match &jwt_secret {
                None => return Err(invalid("JWT_SECRET", "is required when APP_ENV=production".into())),
                Some(s) if s.expose().len() < MIN_PRODUCTION_JWT_SECRET_BYTES => {
                    return Err(invalid(
                        "JWT_SECRET",
                        format!("must be at least {MIN_PRODUCTION_JWT_SECRET_BYTES} bytes when APP_ENV=production"),
                    ));
                }
                Some(_) => {}
            }
        }

        let database = match env.text("DB_DRIVER", "sqlite").to_ascii_lowercase().as_str() {
            "sqlite" | "sqlite3" => {
                if (env.lookup)("DB_READ_HOSTS").is_some() {
                    return Err(invalid(
                        "DB_READ_HOSTS",
                        "read replicas need DB_DRIVER=postgres (SQLite has none); unset it".into(),
                    ));
                }
                DatabaseConfig::Sqlite { path: PathBuf::from(env.text("DB_PATH", "test.sqlite")) }
            }
            "postgres" | "postgresql" => {
                let port = env.number("DB_PORT", 5432, 1, u16::MAX as u64)? as u16;
                DatabaseConfig::Postgres(PostgresConfig {
                    host: env.text("DB_HOST", "localhost"),
                    port,
                    user: env.text("DB_USER", "postgres"),
                    password: env
                        .secret("DB_PASSWORD")
                        .ok_or_else(|| invalid("DB_PASSWORD", "is required when DB_DRIVER is postgres".into()))?,
                    name: env.text("DB_NAME", "pizza_api"),
                    sslmode: match env.text("DB_SSLMODE", "disable").to_ascii_lowercase().as_str() {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(invalid(
                                "DB_SSLMODE",
                                format!("{other:?} is not one of disable, prefer, require, verify-ca, verify-full"),
                            ));
                        }
                    },
                    root_cert: match (env.lookup)("DB_SSLROOTCERT") {
                        None => None,
                        Some(path) if std::path::Path::new(&path).is_file() => Some(PathBuf::from(path)),
                        Some(path) => {
                            return Err(invalid("DB_SSLROOTCERT", format!("{path:?} is not a readable file")));
                        }
                    },
                    read_replicas: ReadReplicas {
                        hosts: parse_read_hosts(&env.text("DB_READ_HOSTS", ""), port)?,
                        max_lag: Duration::from_millis(env.number(
                            "DB_READ_MAX_LAG_MS",
                            DEFAULT_READ_MAX_LAG_MS,
                            0,
                            3_600_000,
                        )?),
                    },
                })
            }
            other => {
                return Err(invalid("DB_DRIVER", format!("{other:?} is not one of sqlite, postgres, postgresql")));
            }
        };

        let max_open = env.number("MAX_OPEN_CONNS", 25, 1, 10_000)? as u32;
        let max_idle = env.number("MAX_IDLE_CONNS", 5, 0, 10_000)? as u32;
        if max_idle > max_open {
            return Err(invalid("MAX_IDLE_CONNS", format!("({max_idle}) must not exceed MAX_OPEN_CONNS ({max_open})")));
        }
        let lifetime = env.number("CONN_MAX_LIFETIME", 300, 0, 31_536_000)?;
        let pool = PoolConfig {
            max_open,
            max_idle,
            max_lifetime: (lifetime > 0).then(|| Duration::from_secs(lifetime)),
            acquire_timeout: Duration::from_millis(env.number("DB_ACQUIRE_TIMEOUT_MS", 5000, 1, 600_000)?),
            retry_base_delay: Duration::from_millis(env.number("DB_RETRY_BASE_DELAY_MS", 1000, 0, 600_000)?),
            connect_timeout: Duration::from_millis(env.number("DB_CONNECT_TIMEOUT_MS", 2000, 100, 600_000)?),
            statement_timeout: Duration::from_millis(env.number("DB_STATEMENT_TIMEOUT_MS", 5000, 0, 3_600_000)?),
        };

        let bootstrap_client_id = env.text("BOOTSTRAP_CLIENT_ID", "admin-client");
        if bootstrap_client_id.len() > 255 || bootstrap_client_id.chars().any(char::is_control) {
            return Err(invalid("BOOTSTRAP_CLIENT_ID", "must be at most 255 printable characters".into()));
        }

        let bootstrap_client_secret = env.secret("BOOTSTRAP_CLIENT_SECRET");
        if bootstrap_client_secret.as_ref().is_some_and(|s| s.expose().len() > MAX_CLIENT_SECRET_BYTES) {
            return Err(invalid(
                "BOOTSTRAP_CLIENT_SECRET",
                format!("must be at most {MAX_CLIENT_SECRET_BYTES} bytes (bcrypt reads no more)"),
            ));
        }

        let seed_dev_data = env.boolean("SEED_DEV_DATA")?;
        if app_env == AppEnv::Production {
            refuse_placeholders(&env)?;
            if seed_dev_data == Some(true) {
                return Err(invalid(
                    "SEED_DEV_DATA",
                    "must not be true when APP_ENV=production: the development data includes an admin client \
                     whose secret is published (dev-client / dev-secret-123)"
                        .into(),
                ));
            }
        }

        Ok(Config {
            app_env,
            host: env.text("APP_HOST", "localhost"),
            port: env.number("APP_PORT", 8080, 0, u16::MAX as u64)? as u16,
            log_level,
            jwt_secret,
            jwt_expiration: env.number("JWT_EXPIRATION", 3600, 1, 31_536_000)?,
            database,
            pool,
            bootstrap_client_id,
            bootstrap_client_secret,
            bcrypt_cost: env.number("BCRYPT_COST", 10, 4, 31)? as u32,
            seed_dev_data,
            workers: env.number("WORKERS", default_workers() as u64, 1, 1024)? as usize,
            shutdown_timeout: Duration::from_secs(env.number("SHUTDOWN_TIMEOUT", 10, 1, 3600)?),
            http: HttpLimits {
                max_header_bytes: env.number("HTTP_MAX_HEADER_BYTES", 16 * 1024, 1024, 1024 * 1024)? as usize,
                read_timeout: Duration::from_millis(env.number("HTTP_READ_TIMEOUT_MS", 10_000, 100, 600_000)?),
                keepalive_timeout: Duration::from_millis(env.number(
                    "HTTP_KEEPALIVE_TIMEOUT_MS",
                    5_000,
                    100,
                    3_600_000,
                )?),
                write_timeout: Duration::from_millis(env.number("HTTP_WRITE_TIMEOUT_MS", 10_000, 100, 600_000)?),
                max_connections: env.number("MAX_CONNECTIONS", 2048, 1, 1_000_000)? as usize,
                max_buffered_body_bytes: env.number(
                    "HTTP_MAX_BUFFERED_BODY_BYTES",
                    32 * 1024 * 1024,
                    MAX_BODY_BYTES as u64,
                    1 << 40,
                )? as usize,
            },
            token_failures: FailureLimit {
                limit: env.number("TOKEN_FAILURE_LIMIT", 10, 1, 1_000_000)? as u32,
                window: Duration::from_secs(env.number("TOKEN_FAILURE_WINDOW_SECONDS", 60, 1, 86_400)?),
            },
            revocation_sync: Duration::from_millis(env.number("REVOCATION_SYNC_MS", 1000, 50, 60_000)?),
        })
    }

    /// Whether the development seed runs for this configuration.
    pub fn seed_enabled(&self) -> bool {
        self.seed_dev_data.unwrap_or(self.app_env == AppEnv::Development)
    }

    /// One line describing the effective configuration, secrets masked, for the start-up log.
    pub fn summary(&self) -> String {
        let masked = |s: &Option<Secret>| if s.is_some() { "[REDACTED]" } else { "(unset)" };
        let database = match &self.database {
            DatabaseConfig::Sqlite { path } => format!("DB_DRIVER=sqlite DB_PATH={}", path.display()),
            DatabaseConfig::Postgres(pg) => format!(
                "DB_DRIVER=postgres DB_HOST={} DB_PORT={} DB_USER={} DB_PASSWORD={} DB_NAME={} DB_SSLMODE={} \
                 DB_SSLROOTCERT={} DB_READ_HOSTS={} DB_READ_MAX_LAG_MS={}",
                pg.host,
                pg.port,
                pg.user,
                pg.password,
                pg.name,
                pg.sslmode.as_str(),
                pg.root_cert.as_ref().map_or("(unset)".into(), |p| p.display().to_string()),
                if pg.read_replicas.hosts.is_empty() {
                    "(unset)".to_owned()
                } else {
                    pg.read_replicas.hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(",")
                },
                pg.read_replicas.max_lag.as_millis(),
            ),
        };
        format!(
            "APP_ENV={} APP_HOST={} APP_PORT={} LOG_LEVEL={} WORKERS={} {} MAX_OPEN_CONNS={} MAX_IDLE_CONNS={} \
             CONN_MAX_LIFETIME={} DB_ACQUIRE_TIMEOUT_MS={} DB_CONNECT_TIMEOUT_MS={} DB_STATEMENT_TIMEOUT_MS={} JWT_SECRET={} JWT_EXPIRATION={} BOOTSTRAP_CLIENT_ID={} \
             BOOTSTRAP_CLIENT_SECRET={} BCRYPT_COST={} SEED_DEV_DATA={} SHUTDOWN_TIMEOUT={} MAX_CONNECTIONS={} \
             HTTP_MAX_HEADER_BYTES={} HTTP_READ_TIMEOUT_MS={} HTTP_KEEPALIVE_TIMEOUT_MS={} HTTP_WRITE_TIMEOUT_MS={} \
             HTTP_MAX_BUFFERED_BODY_BYTES={} TOKEN_FAILURE_LIMIT={} TOKEN_FAILURE_WINDOW_SECONDS={} \
             REVOCATION_SYNC_MS={}",
            match self.app_env {
                AppEnv::Development => "development",
                AppEnv::Production => "production",
            },
            self.host,
            self.port,
            self.log_level.as_str().to_ascii_lowercase(),
            self.workers,
            database,
            self.pool.max_open,
            self.pool.max_idle,
            self.pool.max_lifetime.map_or(0, |d| d.as_secs()),
            self.pool.acquire_timeout.as_millis(),
            self.pool.connect_timeout.as_millis(),
            self.pool.statement_timeout.as_millis(),
            masked(&self.jwt_secret),
            self.jwt_expiration,
            self.bootstrap_client_id,
            masked(&self.bootstrap_client_secret),
            self.bcrypt_cost,
            self.seed_enabled(),
            self.shutdown_timeout.as_secs(),
            self.http.max_connections,
            self.http.max_header_bytes,
            self.http.read_timeout.as_millis(),
            self.http.keepalive_timeout.as_millis(),
            self.http.write_timeout.as_millis(),
            self.http.max_buffered_body_bytes,
            self.token_failures.limit,
            self.token_failures.window.as_secs(),
            self.revocation_sync.as_millis(),
        )
    }
}

/// The secrets k8s/secret.yaml ships with start with this; production
/// refuses them, so a forgotten placeholder cannot become a real key.
const PLACEHOLDER_PREFIX: &str = "REPLACE-ME";

fn refuse_placeholders(env: &Env<'_>) -> Result<(), ConfigError> {
    for variable in ["JWT_SECRET", "DB_PASSWORD", "BOOTSTRAP_CLIENT_SECRET"] {
        if env.secret(variable).is_some_and(|s| s.expose().starts_with(PLACEHOLDER_PREFIX)) {
            return Err(invalid(variable, "still holds the REPLACE-ME placeholder from k8s/secret.yaml".into()));
        }
    }
    Ok(())
}

/// Four workers per core: a worker spends much of a request waiting on the
/// database, so a few more threads than cores keep the cores busy.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 4
}

fn invalid(variable: &'static str, reason: String) -> ConfigError {
    ConfigError { variable, reason }
}

/// Typed access to environment variables with defaults.
struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn text(&self, name: &str, default: &str) -> String {
        (self.lookup)(name).unwrap_or_else(|| default.to_owned())
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        (self.lookup)(name).map(Secret::new)
    }

    fn number(&self, name: &'static str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let Some(raw) = (self.lookup)(name) else { return Ok(default) };
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(invalid(name, format!("{raw:?} is not a whole number from {min} to {max}"))),
        }
    }

    fn boolean(&self, name: &'static str) -> Result<Option<bool>, ConfigError> {
        let Some(raw) = (self.lookup)(name) else { return Ok(None) };
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(invalid(name, format!("{raw:?} is not true or false"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.app_env, AppEnv::Development);
        assert_eq!((config.host.as_str(), config.port), ("localhost", 8080));
        assert_eq!(config.log_level, LevelFilter::Info);
        assert_eq!(config.jwt_expiration, 3600);
        assert!(matches!(&config.database, DatabaseConfig::Sqlite { path } if path == &PathBuf::from("test.sqlite")));
        assert_eq!((config.pool.max_open, config.pool.max_idle), (25, 5));
        assert_eq!(config.pool.max_lifetime, Some(Duration::from_secs(300)));
        assert_eq!(config.pool.retry_base_delay, Duration::from_secs(1));
        assert_eq!(config.bootstrap_client_id, "admin-client");
        assert_eq!(config.bcrypt_cost, 10);
        assert!(config.seed_enabled());
    }

    #[test]
    fn postgres_defaults_match_the_contract() {
        let config = parse(&[("DB_DRIVER", "postgresql"), ("DB_PASSWORD", "pw")]).unwrap();
        let DatabaseConfig::Postgres(pg) = &config.database else { panic!("expected postgres") };
        assert_eq!((pg.host.as_str(), pg.port, pg.user.as_str()), ("localhost", 5432, "postgres"));
        assert_eq!((pg.name.as_str(), pg.sslmode), ("pizza_api", SslMode::Disable));
        assert_eq!(config.database.driver_name(), "postgres");
    }

    #[test]
    fn a_port_that_is_not_a_number_is_rejected() {
        let err = parse(&[("APP_PORT", "abc")]).unwrap_err();
        assert_eq!(err.variable, "APP_PORT");
        assert!(err.to_string().contains("APP_PORT"), "{err}");
    }

    #[test]
    fn an_unknown_driver_is_rejected() {
        assert_eq!(parse(&[("DB_DRIVER", "mysql")]).unwrap_err().variable, "DB_DRIVER");
    }

    #[test]
    fn a_pool_of_zero_connections_is_rejected() {
        assert_eq!(parse(&[("MAX_OPEN_CONNS", "0")]).unwrap_err().variable, "MAX_OPEN_CONNS");
    }

    #[test]
    fn more_idle_than_open_connections_is_rejected() {
        let err = parse(&[("MAX_OPEN_CONNS", "2"), ("MAX_IDLE_CONNS", "3")]).unwrap_err();
        assert_eq!(err.variable, "MAX_IDLE_CONNS");
    }

    #[test]
    fn postgres_without_a_password_is_rejected() {
        assert_eq!(parse(&[("DB_DRIVER", "postgres")]).unwrap_err().variable, "DB_PASSWORD");
    }

    #[test]
    fn production_requires_a_long_jwt_secret() {
        assert_eq!(parse(&[("APP_ENV", "production")]).unwrap_err().variable, "JWT_SECRET");
        let short = parse(&[("APP_ENV", "production"), ("JWT_SECRET", "short")]).unwrap_err();
        assert_eq!(short.variable, "JWT_SECRET");
        assert!(!short.to_string().contains("short"), "the secret leaked into {short}");
        let long = "x".repeat(MIN_PRODUCTION_JWT_SECRET_BYTES);
        let config = parse(&[("APP_ENV", "production"), ("JWT_SECRET", &long)]).unwrap();
        assert!(!config.seed_enabled());
    }

    #[test]
    fn production_refuses_the_development_seed() {
        let long = "x".repeat(MIN_PRODUCTION_JWT_SECRET_BYTES);
        let err = parse(&[("APP_ENV", "production"), ("JWT_SECRET", &long), ("SEED_DEV_DATA", "true")]).unwrap_err();
        assert_eq!(err.variable, "SEED_DEV_DATA");
        assert!(err.reason.contains("admin client"), "{err}");
        let config = parse(&[("APP_ENV", "production"), ("JWT_SECRET", &long), ("SEED_DEV_DATA", "false")]).unwrap();
        assert!(!config.seed_enabled());
    }

    #[test]
    fn production_refuses_the_manifest_placeholders() {
        let err =
            parse(&[("APP_ENV", "production"), ("JWT_SECRET", "REPLACE-ME-jwt-signing-key-at-least-32-bytes-long")])
                .unwrap_err();
        assert_eq!(err.variable, "JWT_SECRET");
    }

    #[test]
    fn an_unknown_app_env_is_rejected() {
        assert_eq!(parse(&[("APP_ENV", "staging")]).unwrap_err().variable, "APP_ENV");
    }

    #[test]
    fn the_summary_masks_every_secret() {
        let config = parse(&[
            ("DB_DRIVER", "postgres"),
            ("DB_PASSWORD", "pg-password-value"),
            ("JWT_SECRET", "jwt-secret-value"),
            ("BOOTSTRAP_CLIENT_SECRET", "bootstrap-secret-value"),
        ])
        .unwrap();
        let summary = format!("{} {:?}", config.summary(), config);
        for secret in ["pg-password-value", "jwt-secret-value", "bootstrap-secret-value"] {
            assert!(!summary.contains(secret), "{secret} leaked into {summary}");
        }
        assert!(summary.contains("DB_PASSWORD=[REDACTED]"));
    }

    #[test]
    fn read_hosts_take_the_primary_port_unless_they_name_one() {
        let config = parse(&[
            ("DB_DRIVER", "postgres"),
            ("DB_PASSWORD", "pw"),
            ("DB_PORT", "6000"),
            ("DB_READ_HOSTS", "replica-1, replica-2:6001,[::1]:6002,10.0.0.9"),
        ])
        .unwrap();
        let DatabaseConfig::Postgres(pg) = &config.database else { panic!("expected postgres") };
        let hosts: Vec<(&str, u16)> = pg.read_replicas.hosts.iter().map(|(h, p)| (h.as_str(), *p)).collect();
        assert_eq!(hosts, [("replica-1", 6000), ("replica-2", 6001), ("::1", 6002), ("10.0.0.9", 6000)]);
        assert_eq!(pg.read_replicas.max_lag, Duration::from_millis(1000));
    }

    #[test]
    fn no_read_hosts_means_no_replicas() {
        let config = parse(&[("DB_DRIVER", "postgres"), ("DB_PASSWORD", "pw")]).unwrap();
        let DatabaseConfig::Postgres(pg) = &config.database else { panic!("expected postgres") };
        assert!(pg.read_replicas.hosts.is_empty());
    }

    #[test]
    fn a_read_host_with_a_bad_port_is_rejected() {
        for hosts in ["replica:0", "replica:99999", "replica:x", "[::1", "a b", "r:1,r:1"] {
            let err = parse(&[("DB_DRIVER", "postgres"), ("DB_PASSWORD", "pw"), ("DB_READ_HOSTS", hosts)]).unwrap_err();
            assert_eq!(err.variable, "DB_READ_HOSTS", "{hosts}");
        }
    }

    #[test]
    fn read_hosts_with_sqlite_are_rejected() {
        let err = parse(&[("DB_READ_HOSTS", "replica:5432")]).unwrap_err();
        assert_eq!(err.variable, "DB_READ_HOSTS");
        assert!(err.reason.contains("DB_DRIVER=postgres"), "{err}");
    }

    #[test]
    fn a_read_lag_that_is_not_a_number_is_rejected() {
        let err =
            parse(&[("DB_DRIVER", "postgres"), ("DB_PASSWORD", "pw"), ("DB_READ_MAX_LAG_MS", "soon")]).unwrap_err();
        assert_eq!(err.variable, "DB_READ_MAX_LAG_MS");
    }

    #[test]
    fn empty_values_count_as_unset() {
        assert_eq!(parse(&[("APP_PORT", "")]).unwrap().port, 8080);
    }
}
