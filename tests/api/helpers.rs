//! Shared test helpers. [`spawn_app`] starts the real `pizza-api` binary on
//! port 0 with a database of its own (a fresh SQLite file, or a fresh
//! PostgreSQL database created for the test and dropped afterwards) and talks
//! to it over a real socket.
//!
//! PostgreSQL comes from `TEST_DATABASE_URL` (an admin URL) when set, else
//! from the private cluster of `scripts/pg-cluster.sh`, started on first use
//! when the server binaries exist. Without any PostgreSQL the PostgreSQL half
//! of each test is skipped loudly, and under `CI=true` it fails instead. Its
//! streaming replica, for the read-replica tests, is `TEST_DATABASE_REPLICA`
//! (`host:port`, the same credentials) when set, else the private cluster's
//! (`pg-cluster.sh replica-start`), and the same rules apply.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs a test body once per database: `both_backends!(fn name(backend) { ... })`
/// becomes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* fn $name:ident($backend:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::helpers::*;

            fn run($backend: Backend) $body

            $(#[$meta])*
            #[test]
            fn sqlite() {
                run(Backend::Sqlite)
            }

            $(#[$meta])*
            #[test]
            fn postgres() {
                if postgres_available() {
                    run(Backend::Postgres)
                }
            }
        }
    };
}

/// The JWT key every test server signs with, so tests can mint their own tokens.
pub const TEST_JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789abcdef";

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

// ---------------------------------------------------------------------------
// PostgreSQL discovery

/// Connection settings for an administrative PostgreSQL login.
#[derive(Debug, Clone)]
pub struct PgAdmin {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The CA that signed the server's TLS certificate, when known
    /// (`TEST_DATABASE_SSLROOTCERT`, or the private cluster's).
    pub ca_file: Option<PathBuf>,
}

impl PgAdmin {
    /// Runs SQL as the administrator on the `postgres` database.
    pub fn admin_execute(&self, sql: &str) {
        self.connect("postgres").batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn connect(&self, dbname: &str) -> postgres::Client {
        let mut config = postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(10));
        config.connect(postgres::NoTls).unwrap_or_else(|e| {
            fail(format!("cannot connect to the test PostgreSQL at {}:{}: {}", self.host, self.port, error_chain(&e)))
        })
    }
}

/// An error and its causes on one line: the driver's top-level text alone
/// ("error connecting to server") does not say what went wrong.
pub fn error_chain(err: &dyn std::error::Error) -> String {
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

/// Fails the current test with `message` alone: printed once, without the
/// panic hook's backtrace (a setup problem shared by a hundred tests should
/// read as a hundred lines, not thousands).
pub fn fail(message: String) -> ! {
    eprintln!("{message}");
    std::panic::resume_unwind(Box::new(message))
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The PostgreSQL to test on: `None` when there is none, `Err` when the
/// private cluster's port belongs to another server.
fn discover_postgres() -> Option<Result<PgAdmin, String>> {
    let script = repo_root().join("scripts/pg-cluster.sh");
    let script_output = |command: &str| -> Option<String> {
        let out = Command::new(&script).arg(command).output().ok().filter(|o| o.status.success())?;
        Some(String::from_utf8(out.stdout).ok()?.trim().to_owned()).filter(|s| !s.is_empty())
    };
    let (url, ca_file) = match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, std::env::var("TEST_DATABASE_SSLROOTCERT").ok().filter(|s| !s.is_empty())),
        _ => {
            let started = Command::new(&script).arg("start").stdout(Stdio::null()).stderr(Stdio::piped()).output();
            match started {
                Ok(out) if out.status.success() => {}
                // Exit status 3: another server holds the port; its one line says what to set.
                Ok(out) if out.status.code() == Some(3) => {
                    return Some(Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
                }
                Ok(out) => {
                    eprint!("{}", String::from_utf8_lossy(&out.stderr));
                    return None;
                }
                Err(_) => return None,
            }
            (script_output("url")?, script_output("ca"))
        }
    };
    let config: postgres::Config = url.parse().unwrap_or_else(|e| panic!("TEST_DATABASE_URL does not parse: {e}"));
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    Some(Ok(PgAdmin {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        user: config.get_user().unwrap_or("postgres").to_owned(),
        password: config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default(),
        ca_file: ca_file.map(PathBuf::from),
    }))
}

/// The test PostgreSQL, found (or started) and tried once per test process:
/// `Err` holds why it cannot be reached, for every test to report in one line.
fn pg_discovery() -> &'static Result<Option<PgAdmin>, String> {
    static ADMIN: OnceLock<Result<Option<PgAdmin>, String>> = OnceLock::new();
    ADMIN.get_or_init(|| {
        let admin = match discover_postgres() {
            None => return Ok(None),
            Some(found) => found?,
        };
        let mut config = postgres::Config::new();
        config
            .host(&admin.host)
            .port(admin.port)
            .user(&admin.user)
            .password(&admin.password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        match config.connect(postgres::NoTls) {
            Ok(_) => Ok(Some(admin)),
            Err(e) => Err(format!(
                "cannot connect to the test PostgreSQL at {}:{}: {} (set TEST_DATABASE_URL, or PIZZA_PG_TEST_PORT \
                 for make test)",
                admin.host,
                admin.port,
                error_chain(&e)
            )),
        }
    })
}

/// The test PostgreSQL, when there is one that answers.
pub fn pg_admin() -> Option<&'static PgAdmin> {
    match pg_discovery() {
        Ok(admin) => admin.as_ref(),
        Err(message) => fail(message.clone()),
    }
}

/// A streaming replica of the test PostgreSQL, for the read-replica tests.
#[derive(Debug, Clone)]
pub struct PgReplica {
    /// `host:port`, as `DB_READ_HOSTS` takes it.
    pub address: String,
    /// An administrative login on it (the primary's credentials).
    pub admin: PgAdmin,
    /// Whether it is the private cluster's replica, which
    /// [`PgReplica::stop`] and [`PgReplica::start`] control.
    pub private: bool,
}

impl PgReplica {
    /// The first column of the first row of `sql`, run on the replica's
    /// `dbname`, as text.
    pub fn query_text(&self, dbname: &str, sql: &str) -> Option<String> {
        let rows = self.admin.connect(dbname).simple_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
            _ => None,
        })?
    }

    /// Stops the private cluster's replica (`pg-cluster.sh replica-stop`).
    pub fn stop(&self) {
        self.cluster("replica-stop");
    }

    /// Starts it again (`pg-cluster.sh replica-start`).
    pub fn start(&self) {
        self.cluster("replica-start");
    }

    fn cluster(&self, action: &str) {
        assert!(self.private, "only the private cluster's replica can be stopped and started");
        let out = Command::new(repo_root().join("scripts/pg-cluster.sh")).arg(action).output().unwrap();
        assert!(out.status.success(), "pg-cluster.sh {action}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The test PostgreSQL's replica: `TEST_DATABASE_REPLICA` when set; else,
/// on the private cluster, its replica, started on first use.
fn pg_replica_discovery() -> &'static Result<Option<PgReplica>, String> {
    static REPLICA: OnceLock<Result<Option<PgReplica>, String>> = OnceLock::new();
    REPLICA.get_or_init(|| {
        let Some(admin) = pg_admin() else { return Ok(None) };
        let script = repo_root().join("scripts/pg-cluster.sh");
        let private_address = || -> Option<String> {
            let out = Command::new(&script).arg("replica-address").output().ok().filter(|o| o.status.success())?;
            Some(String::from_utf8(out.stdout).ok()?.trim().to_owned()).filter(|s| !s.is_empty())
        };
        let address = match std::env::var("TEST_DATABASE_REPLICA") {
            Ok(address) if !address.is_empty() => address,
            _ if std::env::var("TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty()) => return Ok(None),
            _ => {
                let out = Command::new(&script).arg("replica-start").output().map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!(
                        "cannot start the private cluster's replica: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                private_address().ok_or("pg-cluster.sh replica-address printed nothing")?
            }
        };
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("TEST_DATABASE_REPLICA={address:?} is not host:port"))?;
        let private = private_address().as_deref() == Some(address.as_str());
        let admin = PgAdmin { host, port, ..admin.clone() };
        Ok(Some(PgReplica { address, admin, private }))
    })
}

/// The test PostgreSQL's replica, when there is one. Without it this prints
/// a loud warning and returns `None`; under `CI=true` it fails the test.
pub fn pg_replica() -> Option<&'static PgReplica> {
    match pg_replica_discovery() {
        Ok(Some(replica)) => return Some(replica),
        Ok(None) => {}
        Err(message) => fail(message.clone()),
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but no PostgreSQL replica is available: set TEST_DATABASE_REPLICA (host:port)");
    }
    eprintln!("\n!!! SKIPPED: no PostgreSQL replica (set TEST_DATABASE_REPLICA=host:port) !!!\n");
    None
}

/// Whether PostgreSQL tests can run. Without PostgreSQL this prints a loud
/// warning and returns false; under `CI=true` it fails the test instead. A
/// PostgreSQL that is configured but does not answer fails the test with
/// the cause, in one line.
pub fn postgres_available() -> bool {
    if pg_admin().is_some() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but no PostgreSQL is available: set TEST_DATABASE_URL or install the server binaries");
    }
    eprintln!("\n!!! SKIPPED the PostgreSQL half of this test: no PostgreSQL (set TEST_DATABASE_URL) !!!\n");
    false
}

// ---------------------------------------------------------------------------
// Per-test databases

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(unique_name("pizza-api-test"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database that belongs to one test.
pub enum TestDb {
    Sqlite { dir: TempDir, path: PathBuf },
    Postgres { admin: PgAdmin, name: String },
}

impl TestDb {
    /// Creates an empty database on `backend`.
    pub fn new(backend: Backend) -> Arc<TestDb> {
        Arc::new(match backend {
            Backend::Sqlite => {
                let dir = TempDir::new();
                let path = dir.path().join("pizza.sqlite");
                TestDb::Sqlite { dir, path }
            }
            Backend::Postgres => {
                let admin = pg_admin().expect("PostgreSQL is not available").clone();
                let name = unique_name("pizza_test");
                admin.connect("postgres").batch_execute(&format!("CREATE DATABASE \"{name}\"")).unwrap();
                TestDb::Postgres { admin, name }
            }
        })
    }

    pub fn backend(&self) -> Backend {
        match self {
            TestDb::Sqlite { .. } => Backend::Sqlite,
            TestDb::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The `DB_*` variables that point the service at this database.
    pub fn env(&self) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = match self {
            TestDb::Sqlite { path, .. } => {
                vec![("DB_DRIVER", "sqlite".into()), ("DB_PATH", path.display().to_string())]
            }
            TestDb::Postgres { admin, name } => vec![
                ("DB_DRIVER", "postgres".into()),
                ("DB_HOST", admin.host.clone()),
                ("DB_PORT", admin.port.to_string()),
                ("DB_USER", admin.user.clone()),
                ("DB_PASSWORD", admin.password.clone()),
                ("DB_NAME", name.clone()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// Secrets the service must never log.
    pub fn secrets(&self) -> Vec<String> {
        match self {
            TestDb::Sqlite { .. } => vec![],
            TestDb::Postgres { admin, .. } => vec![admin.password.clone()],
        }
    }

    /// Runs SQL statements directly against the database (no parameters).
    pub fn execute(&self, sql: &str) {
        match self {
            TestDb::Sqlite { path, .. } => rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap(),
            TestDb::Postgres { admin, name } => admin.connect(name).batch_execute(sql).unwrap(),
        }
    }

    /// The first column of every row of `sql`, as text.
    pub fn query_column(&self, sql: &str) -> Vec<Option<String>> {
        match self {
            TestDb::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                stmt.query_map([], |row| {
                    Ok(match row.get_ref(0)? {
                        rusqlite::types::ValueRef::Null => None,
                        rusqlite::types::ValueRef::Integer(i) => Some(i.to_string()),
                        rusqlite::types::ValueRef::Real(f) => Some(f.to_string()),
                        rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                        rusqlite::types::ValueRef::Blob(_) => Some("<blob>".into()),
                    })
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            TestDb::Postgres { admin, name } => {
                let mut client = admin.connect(name);
                client
                    .simple_query(sql)
                    .unwrap()
                    .into_iter()
                    .filter_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
                        _ => None,
                    })
                    .collect()
            }
        }
    }

    /// A single integer from `sql` (a `count(*)`, say).
    pub fn query_i64(&self, sql: &str) -> i64 {
        let rows = self.query_column(sql);
        rows.first().and_then(|v| v.as_deref()).unwrap_or_else(|| panic!("{sql} returned no value")).parse().unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin, name } = self {
            let mut client = admin.connect("postgres");
            if let Err(e) = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")) {
                eprintln!("could not drop test database {name}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The server under test

/// The environment every test server starts with (before the database's and
/// the test's own variables).
fn base_env() -> Vec<(String, String)> {
    [
        ("APP_HOST", "127.0.0.1"),
        ("APP_PORT", "0"),
        ("LOG_LEVEL", "info"),
        ("JWT_SECRET", TEST_JWT_SECRET),
        // Cost 4 keeps the many start-ups of a test run fast; the default
        // cost is checked by a test of its own.
        ("BCRYPT_COST", "4"),
        ("WORKERS", "4"),
        ("MAX_OPEN_CONNS", "8"),
        ("MAX_IDLE_CONNS", "1"),
        ("DB_RETRY_BASE_DELAY_MS", "20"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Secrets that no test server may ever log.
pub fn well_known_secrets() -> Vec<String> {
    vec![TEST_JWT_SECRET.to_owned(), "dev-secret-123".to_owned(), "user-secret-123".to_owned()]
}

/// Output of a process, collected by background threads.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<String>>);

impl Output {
    fn collect(&self, stream: impl Read + Send + 'static, lines: Option<mpsc::Sender<String>>) {
        let sink = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                // Into the text first: whoever is told of the line (a test
                // waiting for "listening on") must find it in the text too.
                {
                    let mut text = sink.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
                if let Some(tx) = &lines {
                    let _ = tx.send(line);
                }
            }
        });
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// A running `pizza-api` process with its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: Arc<TestDb>,
    child: Child,
    output: Output,
    secrets: Vec<String>,
    agent: ureq::Agent,
    _workdir: TempDir,
}

/// Starts a server on a fresh database of `backend`.
pub fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[])
}

/// Starts a server on a fresh database with extra environment variables.
pub fn spawn_app_with(backend: Backend, env: &[(&str, &str)]) -> TestApp {
    spawn_on(TestDb::new(backend), env)
}

/// Starts a server on an existing test database.
pub fn spawn_on(db: Arc<TestDb>, env: &[(&str, &str)]) -> TestApp {
    let (mut child, output, lines, workdir) = start_process(&db, env);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(remaining.min(Duration::from_millis(200))) {
            Ok(line) => {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap();
                    break addr.parse::<SocketAddr>().unwrap();
                }
            }
            Err(_) if Instant::now() >= deadline => {
                let _ = child.kill();
                panic!("the server did not start within 60 s; its output:\n{}", output.text());
            }
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    std::thread::sleep(Duration::from_millis(50));
                    panic!("the server exited ({status}) before listening; its output:\n{}", output.text());
                }
            }
        }
    };
    let mut secrets = well_known_secrets();
    secrets.extend(db.secrets());
    secrets.extend(env.iter().filter(|(k, _)| is_secret_variable(k)).map(|(_, v)| v.to_string()));
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    TestApp { addr, db, child, output, secrets, agent, _workdir: workdir }
}

fn is_secret_variable(name: &str) -> bool {
    matches!(name, "DB_PASSWORD" | "JWT_SECRET" | "BOOTSTRAP_CLIENT_SECRET")
}

type Started = (Child, Output, mpsc::Receiver<String>, TempDir);

fn start_process(db: &TestDb, env: &[(&str, &str)]) -> Started {
    // A working directory of its own, so no developer's .env is picked up.
    let workdir = TempDir::new();
    let mut command = Command::new(env!("CARGO_BIN_EXE_pizza-api"));
    command.env_clear().current_dir(workdir.path()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.envs(base_env()).envs(db.env());
    command.envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut child = command.spawn().expect("cannot start the pizza-api binary");
    let output = Output::default();
    let (tx, rx) = mpsc::channel();
    output.collect(child.stdout.take().unwrap(), Some(tx.clone()));
    output.collect(child.stderr.take().unwrap(), Some(tx));
    (child, output, rx, workdir)
}

/// Runs the binary on `db` until it exits (for start-up failures) and returns
/// its exit status and output. Fails the test if it runs longer than `limit`.
pub fn run_to_exit(db: &TestDb, env: &[(&str, &str)], limit: Duration) -> (ExitStatus, String) {
    let (child, output, _lines, _workdir) = start_process(db, env);
    wait_for_exit(child, &output, limit)
}

/// Runs the binary with exactly `env` (plus nothing from the test
/// environment) in `workdir`, until it exits.
pub fn run_bare(workdir: &Path, env: &[(&str, &str)], limit: Duration) -> (ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pizza-api"));
    command.env_clear().current_dir(workdir).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut child = command.spawn().expect("cannot start the pizza-api binary");
    let output = Output::default();
    output.collect(child.stdout.take().unwrap(), None);
    output.collect(child.stderr.take().unwrap(), None);
    wait_for_exit(child, &output, limit)
}

fn wait_for_exit(mut child: Child, output: &Output, limit: Duration) -> (ExitStatus, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            // Let the reader threads catch the last lines.
            std::thread::sleep(Duration::from_millis(100));
            return (status, output.text());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process was still running after {limit:?}; its output:\n{}", output.text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl TestResponse {
    /// Reads a whole ureq response.
    fn from_ureq(mut response: ureq::http::Response<ureq::Body>) -> TestResponse {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = response.body_mut().with_config().limit(64 * 1024 * 1024).read_to_string().unwrap_or_default();
        TestResponse { status, headers, body }
    }

    /// The body parsed as JSON (the test fails when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the server has printed so far.
    pub fn log(&self) -> String {
        self.output.text()
    }

    /// The server's output once it contains `needle` (access lines are
    /// written in batches, a moment after the response); fails after 10 s.
    pub fn log_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "{needle:?} never appeared in the server output:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Adds a value that must never appear in the server's output.
    pub fn remember_secret(&mut self, secret: &str) {
        self.secrets.push(secret.to_owned());
    }

    /// Sends a request: `method`, `path`, headers and an optional body.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> TestResponse {
        let mut builder = ureq::http::Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let result = match body {
            Some(body) => self.agent.run(builder.body(body.to_vec()).unwrap()),
            None => self.agent.run(builder.body(()).unwrap()),
        };
        let response = result.unwrap_or_else(|e| panic!("{method} {path} failed: {e}\nserver log:\n{}", self.log()));
        TestResponse::from_ureq(response)
    }

    pub fn get(&self, path: &str) -> TestResponse {
        self.request("GET", path, &[], None)
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.request("GET", path, headers, None)
    }

    pub fn send_json(&self, method: &str, path: &str, body: &Value, headers: &[(&str, &str)]) -> TestResponse {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        self.request(method, path, &all, Some(body.to_string().as_bytes()))
    }

    /// Writes `request` verbatim to a new connection and returns everything
    /// the server sends back until it closes the connection.
    pub fn raw(&self, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }

    /// The value of an unlabelled series in `/metrics`, if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let prefix = format!("{name} ");
        self.get("/metrics").body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
    }

    /// Stops the server (SIGKILL) and returns its whole output.
    pub fn kill(mut self) -> String {
        self.stop_now();
        self.output.text()
    }

    fn stop_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Let the reader threads catch the last lines.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Fails when any remembered secret appears in the server's output.
    pub fn assert_no_secret_logged(&self) {
        assert_no_secret_in(&self.output.text(), &self.secrets);
    }
}

/// Fails when any of `secrets` appears in `text`.
pub fn assert_no_secret_in(text: &str, secrets: &[String]) {
    for (i, secret) in secrets.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        let leaks: Vec<String> = text
            .lines()
            .filter(|line| line.contains(secret.as_str()))
            .map(|l| l.replace(secret.as_str(), "<SECRET>"))
            .collect();
        assert!(leaks.is_empty(), "secret #{i} appeared in the server output:\n{}", leaks.join("\n"));
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop_now();
        // Every test checks that its server never logged a secret.
        if !std::thread::panicking() {
            self.assert_no_secret_logged();
        }
    }
}

// ---------------------------------------------------------------------------
// Tokens

/// The seeded clients.
pub const DEV_CLIENT: (&str, &str) = ("dev-client", "dev-secret-123");
pub const USER_CLIENT: (&str, &str) = ("user-client", "user-secret-123");

/// Percent-encodes `text` for a form body.
pub fn form_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `Authorization: Basic` for `id:secret`, each form-urlencoded first (RFC 6749 §2.3.1).
pub fn basic_auth(id: &str, secret: &str) -> String {
    use base64::Engine;
    let raw = format!("{}:{}", form_encode(id), form_encode(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Signs `claims` with the test servers' key and algorithm.
pub fn mint(claims: &Value) -> String {
    mint_with(claims, jsonwebtoken::Algorithm::HS512, TEST_JWT_SECRET.as_bytes())
}

/// Signs `claims` with any algorithm and key.
pub fn mint_with(claims: &Value, alg: jsonwebtoken::Algorithm, key: &[u8]) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(key);
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, &key).unwrap()
}

/// Decodes a token's claims without checking anything (for assertions).
pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Seconds since the Unix epoch.
pub fn now_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

impl TestApp {
    /// `POST /api/v1/oauth/token` with a form body.
    pub fn token_request(&self, form: &str, headers: &[(&str, &str)]) -> TestResponse {
        let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.request("POST", "/api/v1/oauth/token", &all, Some(form.as_bytes()))
    }

    /// An access token for `client`, sent in the form; the test fails unless it is issued.
    pub fn token_for(&self, (id, secret): (&str, &str)) -> String {
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            form_encode(id),
            form_encode(secret)
        );
        let response = self.token_request(&form, &[]);
        assert_eq!(response.status, 200, "token for {id}: {}", response.body);
        response.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// A token of the seeded admin (`dev-client`, user 1).
    pub fn admin_token(&self) -> String {
        self.token_for(DEV_CLIENT)
    }

    /// A token of the seeded regular user (`user-client`, user 2).
    pub fn user_token(&self) -> String {
        self.token_for(USER_CLIENT)
    }

    /// A JSON request with a bearer token.
    pub fn authed(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> TestResponse {
        let auth = bearer(token);
        match body {
            Some(body) => self.send_json(method, path, body, &[("Authorization", &auth)]),
            None => self.request(method, path, &[("Authorization", &auth)], None),
        }
    }
}

// ---------------------------------------------------------------------------
// Processes and tools

impl TestApp {
    /// The server's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -TERM failed");
        self.wait_exit(limit)
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// The Python of the project's venv with `modules` importable (each given
/// as (module, PyPI package)); `None` when the venv cannot be made, which
/// fails the test under `CI=true`.
pub fn python_with(modules: &[(&str, &str)]) -> Option<PathBuf> {
    let mut command = Command::new(repo_root().join("scripts/venv.sh"));
    command.arg("require");
    for (module, package) in modules {
        command.args([module, package]);
    }
    let output = command.output().ok().filter(|o| o.status.success());
    match output {
        Some(out) => Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true but the Python venv is unavailable"),
        None => {
            eprintln!("\n!!! SKIPPED: no Python venv with {modules:?} (needs python3 and PyPI) !!!\n");
            None
        }
    }
}

/// The repository root (for scripts).
pub fn repo_path(relative: &str) -> PathBuf {
    repo_root().join(relative)
}

/// A form POST from a client of its own (for use from other threads).
pub fn post_form(url: &str, form: &str) -> TestResponse {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(form.as_bytes())
        .unwrap_or_else(|e| panic!("POST {url} failed: {e}"));
    TestResponse::from_ureq(response)
}

/// Gives a freshly seeded service some history: three pizzas of both users
/// (one with non-ASCII text and `%`), the third deleted (ID 6), and a new
/// client of the admin. Returns that client's (id, secret), the secret
/// remembered as one the log must not show.
pub fn add_history(app: &mut TestApp) -> (String, String) {
    let (admin, user) = (app.admin_token(), app.user_token());
    for (token, name, price) in [(&admin, "Calzone", 19.99), (&user, "Ünïcode 50%", 0.1), (&admin, "Gone", 3.0)] {
        let created =
            app.authed("POST", "/api/v1/pizzas", token, Some(&serde_json::json!({"name": name, "price": price})));
        assert_eq!(created.status, 201);
    }
    assert_eq!(app.authed("DELETE", "/api/v1/pizzas/6", &admin, None).status, 204);
    let client = app.authed("POST", "/api/v1/clients", &admin, Some(&serde_json::json!({"name": "terraform"}))).json();
    let secret = client["client_secret"].as_str().unwrap().to_owned();
    app.remember_secret(&secret);
    (client["client_id"].as_str().unwrap().to_owned(), secret)
}
