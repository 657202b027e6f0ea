//! What the service believes about its database right now, kept by a
//! background prober: `/health` reads it instead of querying, and while the
//! database is known down, requests that need it are answered 503 at once
//! instead of each waiting out its own timeout (a circuit breaker).
//!
//! The prober asks a separate ping thread to check the database every
//! [`PROBE_INTERVAL`] and waits at most [`PROBE_TIMEOUT`] for the answer
//! (not counting a wait for the check's connection to open, itself bounded
//! by [`PROBE_CONNECTION_WAIT`]). A ping that does not come back in time (a
//! server stopped with SIGSTOP, a network that drops packets) counts as a
//! failure at once; the next ping is sent only when the stuck one returns,
//! so pings never pile up.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::DbError;

/// How often the database is checked.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long a check waits for its connection while the pool opens one
/// (after a restart the old one is dead, and a new one needs a TCP and TLS
/// handshake and authentication: on a busy machine, with a debug build,
/// that has taken 0.7 s). An attempt that fails ends the wait at once
/// ([`CONNECT_FAILURES`]), so a server that refuses connections is noticed
/// in milliseconds all the same; one still opening after this long (a
/// server frozen mid-handshake) counts as an error, and the second check,
/// at once, waits as long again. The wait does not count against
/// [`PROBE_TIMEOUT`], which is for the query.
pub const PROBE_CONNECTION_WAIT: Duration = Duration::from_millis(2000);
/// How long one check's query may take (once it has its connection) before
/// the database counts as not answering: long enough that a busy machine
/// does not open the breaker by mistake.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// The circuit breaker of this process's database: set while it is known
/// down. The executor reads it while a request waits for a pooled
/// connection, so such waits end at once when the breaker opens (a process
/// serves one database).
pub(crate) static BREAKER: AtomicBool = AtomicBool::new(false);

/// Set while the health check waits for its connection to open (see
/// [`PROBE_CONNECTION_WAIT`]): the prober does not count that time as the
/// database not answering.
pub(crate) static CHECK_CONNECTING: AtomicBool = AtomicBool::new(false);

/// Failed attempts of the health check's pool to open a connection, counted
/// by the pool's error handler. The check's wait for a connection ends when
/// this moves.
pub(crate) static CONNECT_FAILURES: AtomicU64 = AtomicU64::new(0);

/// The state of the database as last seen.
pub struct DbHealth {
    /// Read on every request that needs the database: one atomic load.
    down: &'static AtomicBool,
    seen: Mutex<Seen>,
}

#[derive(Debug, Clone, Default)]
struct Seen {
    /// When a check last succeeded.
    last_success: Option<SystemTime>,
    /// Why the last check failed, while the database is down.
    reason: Option<String>,
    /// When the last check ended.
    checked_at: Option<SystemTime>,
    /// Checks in a row that got an error (not a timeout).
    errors_in_a_row: u32,
}

/// How many failed checks in a row (errors, not timeouts) open the breaker.
pub const ERRORS_TO_OPEN: u32 = 2;

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The database answered with an error (or refused the connection).
    Error(String),
    /// No answer within [`PROBE_TIMEOUT`].
    NoAnswer(String),
}

/// A snapshot for `/health`.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub healthy: bool,
    /// Why the database counts as down (never a secret: the driver's message).
    pub reason: Option<String>,
    pub last_success: Option<SystemTime>,
    pub checked_at: Option<SystemTime>,
}

impl DbHealth {
    /// The process's state, starting healthy: start-up has just connected
    /// and migrated.
    pub fn new() -> DbHealth {
        BREAKER.store(false, Ordering::Relaxed);
        DbHealth::with_flag(&BREAKER)
    }

    fn with_flag(down: &'static AtomicBool) -> DbHealth {
        let now = SystemTime::now();
        DbHealth {
            down,
            seen: Mutex::new(Seen { last_success: Some(now), reason: None, checked_at: Some(now), errors_in_a_row: 0 }),
        }
    }

    /// Whether requests that need the database should be refused at once.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// What `/health` reports.
    pub fn report(&self) -> HealthReport {
        let seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        HealthReport {
            healthy: !self.is_down(),
            reason: seen.reason,
            last_success: seen.last_success,
            checked_at: seen.checked_at,
        }
    }

    /// Records one check; logs once per change between up and down. One
    /// error may be a pooled connection the server had closed (the next check
    /// gets a fresh one), so it takes [`ERRORS_TO_OPEN`] in a row, checked
    /// back to back; a check that got no answer in time opens the breaker
    /// at once.
    pub fn record(&self, result: Result<(), Failure>) {
        let now = SystemTime::now();
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.checked_at = Some(now);
        let reason = match result {
            Ok(()) => {
                seen.last_success = Some(now);
                seen.reason = None;
                seen.errors_in_a_row = 0;
                if self.down.swap(false, Ordering::Relaxed) {
                    log::warn!("database answering again: requests that need it are served");
                }
                return;
            }
            Err(Failure::Error(reason)) => {
                seen.errors_in_a_row += 1;
                if seen.errors_in_a_row < ERRORS_TO_OPEN && !self.is_down() {
                    return;
                }
                reason
            }
            Err(Failure::NoAnswer(reason)) => reason,
        };
        if !self.down.swap(true, Ordering::Relaxed) {
            log::error!("database not answering ({reason}): requests that need it get 503 until it does");
        }
        seen.reason = Some(reason);
    }

    /// Starts the prober: every [`PROBE_INTERVAL`] `ping` runs on a thread of
    /// its own and the outcome is recorded here, until `ping` returns `None`
    /// (the database is gone: the service is stopping). While `connecting`
    /// is set, the ping is waiting for a connection (bounded by
    /// [`PROBE_CONNECTION_WAIT`]), and its [`PROBE_TIMEOUT`] starts again.
    pub fn start_prober(
        health: std::sync::Arc<DbHealth>,
        connecting: &'static AtomicBool,
        ping: impl Fn() -> Option<Result<(), DbError>> + Send + 'static,
    ) -> std::io::Result<()> {
        let (ask, asked) = mpsc::channel::<()>();
        let (answer, answers) = mpsc::channel::<Result<(), DbError>>();
        thread::Builder::new().name("db-ping".into()).spawn(move || {
            for () in asked {
                let Some(result) = ping() else { return };
                if answer.send(result).is_err() {
                    return;
                }
            }
        })?;
        thread::Builder::new().name("db-prober".into()).spawn(move || {
            loop {
                if ask.send(()).is_err() {
                    return;
                }
                let started = Instant::now();
                let failed = match wait_for_answer(&answers, connecting) {
                    Ok(result) => {
                        let failed = result.is_err();
                        health.record(result.map_err(|e| Failure::Error(e.to_string())));
                        failed
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        health.record(Err(Failure::NoAnswer(format!(
                            "no answer within {} ms",
                            PROBE_TIMEOUT.as_millis()
                        ))));
                        // Wait for the stuck ping before asking again.
                        match answers.recv() {
                            Ok(result) => {
                                let failed = result.is_err();
                                health.record(result.map_err(|e| {
                                    Failure::NoAnswer(format!("{e} (after {} ms)", started.elapsed().as_millis()))
                                }));
                                failed
                            }
                            Err(_) => return,
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                // After an error, check again at once: one error may be a
                // dead pooled connection, and the second check tells.
                if failed && !health.is_down() {
                    continue;
                }
                thread::sleep(PROBE_INTERVAL);
            }
        })?;
        Ok(())
    }
}

impl Default for DbHealth {
    fn default() -> DbHealth {
        DbHealth::new()
    }
}

/// The ping's answer, or a timeout once its query (the time after it has a
/// connection) has taken [`PROBE_TIMEOUT`].
fn wait_for_answer<T>(answers: &mpsc::Receiver<T>, connecting: &AtomicBool) -> Result<T, RecvTimeoutError> {
    const STEP: Duration = Duration::from_millis(50);
    let mut deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match answers.recv_timeout(STEP.min(deadline.saturating_duration_since(Instant::now()))) {
            Err(RecvTimeoutError::Timeout) if connecting.load(Ordering::Relaxed) => {
                deadline = Instant::now() + PROBE_TIMEOUT;
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A state with a breaker of its own, so tests do not touch the process's.
    fn isolated() -> DbHealth {
        DbHealth::with_flag(Box::leak(Box::new(AtomicBool::new(false))))
    }

    #[test]
    fn a_failed_check_opens_the_breaker_and_a_success_closes_it() {
        let health = isolated();
        assert!(!health.is_down());

        health.record(Err(Failure::Error("connection refused".into())));
        let after_one = health.is_down();
        health.record(Err(Failure::Error("connection refused".into())));
        let down = health.report();
        health.record(Ok(()));

        assert!(!after_one, "one error may be a dead pooled connection");
        assert!(!down.healthy);
        assert_eq!(down.reason.as_deref(), Some("connection refused"));
        assert!(!health.is_down());
        assert!(health.report().reason.is_none());
    }

    #[test]
    fn a_ping_that_hangs_counts_as_down_within_the_timeout() {
        let health = Arc::new(isolated());
        let (release, released) = mpsc::channel::<()>();
        DbHealth::start_prober(Arc::clone(&health), not_connecting(), move || {
            let _ = released.recv_timeout(Duration::from_secs(3));
            Some(Ok(()))
        })
        .unwrap();

        thread::sleep(PROBE_TIMEOUT + Duration::from_millis(200));
        let while_hung = health.is_down();
        release.send(()).unwrap();
        thread::sleep(Duration::from_millis(100));

        assert!(while_hung, "a hung ping was not noticed");
        assert!(!health.is_down(), "the answer that finally came closed the breaker");
    }

    fn not_connecting() -> &'static AtomicBool {
        Box::leak(Box::new(AtomicBool::new(false)))
    }

    #[test]
    fn a_ping_waiting_for_its_connection_is_not_a_database_that_does_not_answer() {
        let health = Arc::new(isolated());
        let connecting = not_connecting();
        let pings = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&pings);
        // The first ping waits 1.5 s for its connection, then answers at once.
        DbHealth::start_prober(Arc::clone(&health), connecting, move || {
            if counted.fetch_add(1, Ordering::Relaxed) == 0 {
                connecting.store(true, Ordering::Relaxed);
                thread::sleep(PROBE_TIMEOUT + Duration::from_millis(500));
                connecting.store(false, Ordering::Relaxed);
            }
            Some(Ok(()))
        })
        .unwrap();

        let mut down = false;
        let started = Instant::now();
        while started.elapsed() < PROBE_TIMEOUT * 2 {
            down |= health.is_down();
            thread::sleep(Duration::from_millis(20));
        }

        assert!(!down, "the wait for a connection was taken for no answer");
        assert!(pings.load(Ordering::Relaxed) >= 2, "the prober went on after the slow ping");
    }
}
