//! Read replicas (`DB_READ_HOSTS`): streaming standbys of the PostgreSQL
//! primary that serve the public reads. Each has a pool of its own (the
//! primary's settings with its host and port) and a background check every
//! [`CHECK_INTERVAL`]: a replica that does not answer, is not a standby, or
//! has not replayed what the primary had written [`DB_READ_MAX_LAG_MS`] ago
//! is skipped.
//!
//! The lag is measured against the primary, not read from the standby
//! alone: a standby only knows the WAL it has received, so one whose
//! stream stalls (a black-holed link, WAL the primary has not sent yet)
//! would look caught up, and one of an idle primary would look ever further
//! behind by its last replayed commit's age. Each check reads the end of
//! the primary's WAL, then polls the replica's replay position until it
//! reaches it (lag: the time that took) or [`POLL_LIMIT`] passes (lag: the
//! age of the newest earlier check whose position the replica has passed).
//!
//! [`Reads`] is what a public read runs on: the next usable
//! replica in turn, and the primary when none is usable or when the
//! replica fails during the read (which also marks it down until its next
//! good check), so a replica's failure never reaches the client.
//!
//! [`DB_READ_MAX_LAG_MS`]: crate::config::ReadReplicas::max_lag

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use r2d2_postgres::PostgresConnectionManager;

use super::exec::{self, Access, Exec, Row, Statement, Value};
use super::{Db, DbError, PgConn, PgManager, PgPool, QuietPoolErrors, build_pool, deadline, pg_config, tls};
use crate::config::{DatabaseConfig, PoolConfig};

/// How often each replica is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a check may take before the replica counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a check waits for a pooled connection.
const CHECK_CONNECTION_WAIT: Duration = Duration::from_millis(300);
/// How long a public read waits for a replica's connection before it goes
/// to the primary instead (a replica that refuses connections costs a read
/// at most this much, until its check marks it down).
const READ_CONNECTION_WAIT: Duration = Duration::from_millis(200);
/// A replica pool's own acquire timeout. Every wait above names its own
/// limit, so this one only paces r2d2, which tries again to open a
/// connection after a pause that doubles up to half of it: a replica that
/// comes back is reconnected within 0.5 s instead of `DB_ACQUIRE_TIMEOUT_MS` / 2.
const POOL_TIMEOUT: Duration = Duration::from_secs(1);

/// The `application_name` of the checks' connections.
const CHECK_APPLICATION_NAME: &str = "pizza-api-replica-check";

/// How long one check polls a replica that has not yet replayed the
/// primary's position (at most `DB_READ_MAX_LAG_MS`), and how often.
const POLL_LIMIT: Duration = Duration::from_millis(500);
const POLL_STEP: Duration = Duration::from_millis(10);

/// The end of the primary's WAL (every commit a client has been told of
/// lies before it), in bytes.
const PRIMARY_POSITION: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8";
/// Whether the server is a standby, and how much WAL it has replayed, in
/// bytes (NULL on a server that is not one). Both functions are open to
/// any user.
const REPLAY_POSITION: &str = "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8";

/// What the last check (or a failed read since) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplicaState {
    /// Not checked yet: reads go elsewhere until the first check.
    Unchecked = 0,
    /// Serves reads.
    Up = 1,
    /// Further behind the primary than `DB_READ_MAX_LAG_MS`, or by an
    /// unknown amount.
    Lagging = 2,
    /// Does not answer.
    Down = 3,
    /// Answers, but is not a standby (a promoted replica, or a wrong host):
    /// its data may have left the primary's.
    NotStandby = 4,
}

impl ReplicaState {
    fn from_u8(value: u8) -> ReplicaState {
        match value {
            1 => ReplicaState::Up,
            2 => ReplicaState::Lagging,
            3 => ReplicaState::Down,
            4 => ReplicaState::NotStandby,
            _ => ReplicaState::Unchecked,
        }
    }

    /// The name `/health` and `/metrics` show.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Unchecked => "unchecked",
            ReplicaState::Up => "up",
            ReplicaState::Lagging => "lagging",
            ReplicaState::Down => "down",
            ReplicaState::NotStandby => "not_standby",
        }
    }

    /// Every state, for the metrics' one series per state.
    pub const ALL: [ReplicaState; 5] = [
        ReplicaState::Unchecked,
        ReplicaState::Up,
        ReplicaState::Lagging,
        ReplicaState::Down,
        ReplicaState::NotStandby,
    ];
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Checked {
    /// Behind the primary by this much (zero: it had replayed everything
    /// the primary had written when the check began).
    Behind(Duration),
    /// Further behind than every earlier check remembers: at least this much.
    AtLeast(Duration),
    /// A server that is not a standby.
    NotStandby,
    /// The primary's position could not be read.
    PrimaryUnknown(String),
}

/// One replica: its pool, its state as last seen, and what it served.
pub struct Replica {
    /// `host:port`, as `/health` and `/metrics` name it.
    name: String,
    /// The public reads' connections.
    pool: PgPool,
    /// The check's own connection, so that reads never wait for a check nor
    /// a check for reads.
    check_pool: PgPool,
    /// A [`ReplicaState`], read by every public read: one atomic load.
    state: AtomicU8,
    /// The lag of the last check, in milliseconds (-1: unknown).
    lag_ms: AtomicI64,
    /// Statements it answered.
    queries: AtomicU64,
    /// Reads it failed, answered by the primary instead.
    fallbacks: AtomicU64,
    seen: Mutex<Seen>,
}

#[derive(Debug, Clone, Default)]
struct Seen {
    checked_at: Option<SystemTime>,
    /// Why the replica is not used (never a secret: the driver's message).
    reason: Option<String>,
}

/// A replica as `/health` and `/metrics` show it.
#[derive(Debug, Clone)]
pub struct ReplicaReport {
    pub name: String,
    pub state: ReplicaState,
    pub lag_ms: Option<i64>,
    pub queries: u64,
    pub fallbacks: u64,
    pub checked_at: Option<SystemTime>,
    pub reason: Option<String>,
}

impl Replica {
    fn state(&self) -> ReplicaState {
        ReplicaState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Sets the state; logs a change once.
    fn set(&self, state: ReplicaState, lag_ms: Option<i64>, reason: Option<String>) {
        self.lag_ms.store(lag_ms.unwrap_or(-1), Ordering::Relaxed);
        let before = ReplicaState::from_u8(self.state.swap(state as u8, Ordering::Relaxed));
        if before != state {
            match (state, &reason) {
                (ReplicaState::Up, _) => log::info!("read replica {}: up, public reads go to it", self.name),
                (_, Some(reason)) => {
                    log::warn!("read replica {}: {} ({reason}); its reads go elsewhere", self.name, state.as_str())
                }
                (_, None) => log::warn!("read replica {}: {}; its reads go elsewhere", self.name, state.as_str()),
            }
        }
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.checked_at = Some(SystemTime::now());
        seen.reason = reason;
    }

    /// Runs a read here; any error is the caller's cue to use the primary.
    fn rows<T>(
        &self,
        access: Access,
        st: &Statement,
        params: &[Value<'_>],
        map: &mut impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        repeatable(&self.pool, READ_CONNECTION_WAIT, |conn| {
            let rows = match access {
                Access::ReadReplanned => conn.run_replanned(st.postgres, params)?,
                Access::Read | Access::Write => conn.run(st.postgres, params)?,
            };
            exec::pg_rows(&rows, map)
        })
    }

    /// A read failed here: a lost connection or a server that refuses them
    /// marks the replica down until its next good check. Other errors (a
    /// query cancelled by a recovery conflict, a schema the replica has not
    /// replayed yet) leave it up: they are the read's, not the server's.
    fn read_failed(&self, err: &DbError) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        match err {
            DbError::Unavailable(reason) => self.set(ReplicaState::Down, None, Some(reason.clone())),
            other => log::debug!("read replica {}: a read failed ({other}); the primary answered it", self.name),
        }
    }

    /// Whether the replica is a standby, and how much WAL it has replayed.
    fn replay_position(&self) -> Result<(bool, Option<i64>), DbError> {
        repeatable(&self.check_pool, CHECK_CONNECTION_WAIT, |conn| {
            let rows = conn.run(REPLAY_POSITION, &[])?;
            let row = rows.first().ok_or_else(|| DbError::Query("the replay position query returned no row".into()))?;
            let standby: bool = row.try_get(0).map_err(|e| DbError::Query(e.to_string()))?;
            let replayed: Option<i64> = row.try_get(1).map_err(|e| DbError::Query(e.to_string()))?;
            Ok((standby, replayed))
        })
    }

    /// One check: how far behind `primary` (the end of its WAL, read at
    /// `started`) the replica is. `earlier` holds the positions of earlier
    /// checks, newest last.
    fn measure(
        &self,
        primary: Result<i64, DbError>,
        started: Instant,
        earlier: &VecDeque<(Instant, i64)>,
        max_lag: Duration,
    ) -> Result<Checked, String> {
        let target = match primary {
            Ok(position) => position,
            Err(err) => return Ok(Checked::PrimaryUnknown(err.to_string())),
        };
        let window = max_lag.min(POLL_LIMIT);
        let mut first = true;
        loop {
            let (standby, replayed) = self.replay_position().map_err(|e| e.to_string())?;
            if !standby {
                return Ok(Checked::NotStandby);
            }
            let Some(replayed) = replayed else { return Ok(Checked::NotStandby) };
            if replayed >= target {
                // Already there when asked: nothing the primary had is missing.
                return Ok(Checked::Behind(if first { Duration::ZERO } else { started.elapsed() }));
            }
            if started.elapsed() >= window {
                return Ok(match earlier.iter().rev().find(|(_, position)| *position <= replayed) {
                    Some((at, _)) => Checked::Behind(at.elapsed()),
                    None => Checked::AtLeast(earlier.front().map_or(started, |(at, _)| *at).elapsed()),
                });
            }
            first = false;
            thread::sleep(POLL_STEP);
        }
    }

    /// Records a check's outcome against the allowed lag.
    fn record(&self, result: Result<Checked, String>, max_lag: Duration) {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let limit = ms(max_lag);
        match result {
            Err(reason) => self.set(ReplicaState::Down, None, Some(reason)),
            Ok(Checked::NotStandby) => self.set(
                ReplicaState::NotStandby,
                None,
                Some("the server is not a standby (pg_is_in_recovery() is false)".into()),
            ),
            Ok(Checked::PrimaryUnknown(why)) => self.set(
                ReplicaState::Lagging,
                None,
                Some(format!("its lag is unknown: cannot read the primary's WAL position ({why})")),
            ),
            Ok(Checked::AtLeast(lag)) => self.set(
                ReplicaState::Lagging,
                Some(ms(lag)),
                Some(format!("at least {} ms behind the primary (DB_READ_MAX_LAG_MS={limit})", ms(lag))),
            ),
            Ok(Checked::Behind(lag)) if lag > max_lag => self.set(
                ReplicaState::Lagging,
                Some(ms(lag)),
                Some(format!("{} ms behind the primary, more than DB_READ_MAX_LAG_MS={limit}", ms(lag))),
            ),
            Ok(Checked::Behind(lag)) => self.set(ReplicaState::Up, Some(ms(lag)), None),
        }
    }

    fn report(&self) -> ReplicaReport {
        let seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let lag = self.lag_ms.load(Ordering::Relaxed);
        ReplicaReport {
            name: self.name.clone(),
            state: self.state(),
            lag_ms: (lag >= 0).then_some(lag),
            queries: self.queries.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            checked_at: seen.checked_at,
            reason: seen.reason,
        }
    }
}

/// The read replicas of `DB_READ_HOSTS` (none when it is unset).
#[derive(Default)]
pub struct Replicas {
    list: Vec<Arc<Replica>>,
    /// The round robin's position.
    next: AtomicUsize,
    /// Public-read statements the primary answered.
    primary_queries: AtomicU64,
    max_lag: Duration,
    /// The checks' own connection to the primary, for its WAL position: a
    /// primary whose pool is busy with requests must not make the replicas
    /// look behind (and send it their reads too).
    primary: Option<Arc<PgPool>>,
}

impl Replicas {
    /// A pool per replica of `config` (none for SQLite or without
    /// `DB_READ_HOSTS`). Connects to nothing yet: a replica that is down
    /// must not stop the service from starting; its check finds out.
    pub fn open(config: &DatabaseConfig, pool: &PoolConfig) -> Result<Replicas, DbError> {
        let DatabaseConfig::Postgres(pg) = config else { return Ok(Replicas::default()) };
        if pg.read_replicas.hosts.is_empty() {
            return Ok(Replicas::default());
        }
        let tls = tls::connector(pg.sslmode, pg.root_cert.as_deref()).map_err(DbError::Unavailable)?;
        let sizes = PoolConfig { acquire_timeout: POOL_TIMEOUT, ..pool.clone() };
        // The checks' own connections: one per server, named apart from the
        // requests' in pg_stat_activity.
        let one = PoolConfig { max_open: 1, max_idle: 1, ..sizes.clone() };
        let open = |host: &str, port: u16, sizes: &PoolConfig, name: &str| {
            let mut settings = pg_config(pg, pool);
            settings.host(host).port(port).application_name(name);
            build_pool(
                PgManager(
                    PostgresConnectionManager::new(settings, tls.clone()),
                    deadline::limit(pool.statement_timeout),
                ),
                sizes,
                QuietPoolErrors::Uncounted,
            )
        };
        let primary = open(&pg.host, pg.port, &one, CHECK_APPLICATION_NAME);
        let list = pg
            .read_replicas
            .hosts
            .iter()
            .map(|(host, port)| {
                Arc::new(Replica {
                    name: format!("{host}:{port}"),
                    pool: open(host, *port, &sizes, "pizza-api"),
                    check_pool: open(host, *port, &one, CHECK_APPLICATION_NAME),
                    state: AtomicU8::new(ReplicaState::Unchecked as u8),
                    lag_ms: AtomicI64::new(-1),
                    queries: AtomicU64::new(0),
                    fallbacks: AtomicU64::new(0),
                    seen: Mutex::default(),
                })
            })
            .collect();
        let max_lag = pg.read_replicas.max_lag;
        Ok(Replicas {
            list,
            next: AtomicUsize::new(0),
            primary_queries: AtomicU64::new(0),
            max_lag,
            primary: Some(Arc::new(primary)),
        })
    }

    /// Whether there are none (every read goes to the primary, uncounted).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Starts each replica's check: every [`CHECK_INTERVAL`] a check runs on
    /// a thread of its own and its outcome is recorded; one that does not
    /// come back within [`CHECK_TIMEOUT`] counts as down at once, and the
    /// next is asked only when it returns. The threads hold the replicas
    /// weakly and end once the service has dropped them.
    pub fn start_checks(&self) -> std::io::Result<()> {
        let Some(primary) = &self.primary else { return Ok(()) };
        for replica in &self.list {
            start_check(Arc::downgrade(replica), Arc::clone(primary), self.max_lag)?;
        }
        Ok(())
    }

    /// The next usable replica after the last one picked, if any.
    fn pick(&self) -> Option<&Replica> {
        let count = self.list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count).map(|i| &*self.list[(start + i) % count]).find(|r| r.state() == ReplicaState::Up)
    }

    /// Every replica's state, in `DB_READ_HOSTS` order.
    pub fn report(&self) -> Vec<ReplicaReport> {
        self.list.iter().map(|replica| replica.report()).collect()
    }

    /// Public-read statements the primary answered (with replicas configured).
    pub fn primary_queries(&self) -> u64 {
        self.primary_queries.load(Ordering::Relaxed)
    }
}

fn start_check(replica: Weak<Replica>, primary: Arc<PgPool>, max_lag: Duration) -> std::io::Result<()> {
    let (ask, asked) = mpsc::channel::<()>();
    let (answer, answers) = mpsc::channel::<Result<Checked, String>>();
    let checked = replica.clone();
    // Enough earlier positions to tell a lag up to DB_READ_MAX_LAG_MS.
    let keep = usize::try_from(max_lag.as_secs() / CHECK_INTERVAL.as_secs().max(1)).unwrap_or(usize::MAX).min(3600) + 3;
    thread::Builder::new().name("db-replica-check".into()).spawn(move || {
        let mut earlier = VecDeque::with_capacity(keep);
        for () in asked {
            let Some(replica) = checked.upgrade() else { return };
            let started = Instant::now();
            let position = primary_position(&primary);
            let target = position.as_ref().ok().copied();
            let result = replica.measure(position, started, &earlier, max_lag);
            drop(replica);
            if let Some(target) = target {
                if earlier.len() == keep {
                    earlier.pop_front();
                }
                earlier.push_back((started, target));
            }
            if answer.send(result).is_err() {
                return;
            }
        }
    })?;
    thread::Builder::new().name("db-replica-prober".into()).spawn(move || {
        loop {
            if ask.send(()).is_err() {
                return;
            }
            let result = match answers.recv_timeout(CHECK_TIMEOUT) {
                Ok(result) => result,
                Err(RecvTimeoutError::Timeout) => {
                    let Some(replica) = replica.upgrade() else { return };
                    let waited = format!("no answer within {} ms", CHECK_TIMEOUT.as_millis());
                    replica.set(ReplicaState::Down, None, Some(waited));
                    drop(replica);
                    // Wait for the stuck check before asking again.
                    match answers.recv() {
                        Ok(result) => result,
                        Err(_) => return,
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let Some(live) = replica.upgrade() else { return };
            live.record(result, max_lag);
            drop(live);
            thread::sleep(CHECK_INTERVAL);
        }
    })?;
    Ok(())
}

/// Runs `work` on a connection of `pool` (a replica's, or the checks' own
/// connection to the primary), waiting at most `wait` for one, and again on
/// another when that one turns out dead (the server restarted). Like the
/// primary's `pg_repeatable`, except that a wait that times out is not one
/// of the request waits `pizza_api_db_pool_wait_timeouts_total` counts (a
/// stopped replica would add one every second), and no circuit breaker
/// applies.
fn repeatable<T>(
    pool: &PgPool,
    wait: Duration,
    mut work: impl FnMut(&mut PgConn) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut last = None;
    for _ in 0..=pool.max_size() {
        let mut conn = pool
            .get_timeout(wait)
            .map_err(|err| DbError::Unavailable(format!("no connection within {} ms: {err}", wait.as_millis())))?;
        match work(&mut conn) {
            Err(err) if conn.is_dead() => last = Some(err),
            result => return result,
        }
    }
    Err(last.unwrap_or_else(|| DbError::Unavailable("every connection was lost".into())))
}

/// The end of the primary's write-ahead log, in bytes.
fn primary_position(primary: &PgPool) -> Result<i64, DbError> {
    repeatable(primary, CHECK_CONNECTION_WAIT, |conn| {
        let rows = conn.run(PRIMARY_POSITION, &[])?;
        let row = rows.first().ok_or_else(|| DbError::Query("the WAL position query returned no row".into()))?;
        row.try_get(0).map_err(|e| DbError::Query(e.to_string()))
    })
}

/// What a public read runs on: the primary, or the read replicas (with
/// the primary behind them). Statements other than reads always go to the
/// primary.
pub struct Reads<'a> {
    primary: &'a Db,
    replicas: &'a Replicas,
    use_replicas: bool,
}

impl<'a> Reads<'a> {
    /// Reads on the replicas when `use_replicas` and there are any, else on
    /// the primary.
    pub fn new(primary: &'a Db, replicas: &'a Replicas, use_replicas: bool) -> Reads<'a> {
        Reads { primary, replicas, use_replicas }
    }
}

impl Exec for Reads<'_> {
    fn rows<T>(
        &self,
        access: Access,
        st: &Statement,
        params: &[Value<'_>],
        mut map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        if self.replicas.is_empty() {
            return self.primary.rows(access, st, params, map);
        }
        if self.use_replicas && access != Access::Write {
            if let Some(replica) = self.replicas.pick() {
                match replica.rows(access, st, params, &mut map) {
                    Ok(rows) => {
                        replica.queries.fetch_add(1, Ordering::Relaxed);
                        return Ok(rows);
                    }
                    Err(err) => replica.read_failed(&err),
                }
            }
        }
        self.replicas.primary_queries.fetch_add(1, Ordering::Relaxed);
        self.primary.rows(access, st, params, map)
    }

    fn execute(&self, st: &Statement, params: &[Value<'_>]) -> Result<u64, DbError> {
        self.primary.execute(st, params)
    }
}
