//! The brute-force limit of client authentication: after `TOKEN_FAILURE_LIMIT`
//! wrong secrets for one client ID within `TOKEN_FAILURE_WINDOW_SECONDS`
//! (counted from the first), that ID is refused with 429 until the window
//! ends, without a bcrypt check or a database query. A right secret does not
//! reset the count: the legitimate client's successes would otherwise refill
//! an attacker's guesses. Counted in each process: with N replicas an
//! attacker gets at most N times the limit per window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::FailureLimit;

/// Client IDs tracked at once. A flood of made-up IDs cannot grow memory past
/// this; when full, IDs that are not locked make room first, so such a flood
/// cannot free a locked ID either.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failed authentications per client ID.
pub struct FailureLimiter {
    rule: FailureLimit,
    windows: Mutex<HashMap<String, Window>>,
}

impl FailureLimiter {
    /// Counts failures by `rule`.
    pub fn new(rule: FailureLimit) -> FailureLimiter {
        FailureLimiter { rule, windows: Mutex::new(HashMap::new()) }
    }

    /// How long `client_id` stays refused, when it is.
    pub fn locked_for(&self, client_id: &str) -> Option<Duration> {
        self.locked_for_at(client_id, Instant::now())
    }

    fn locked_for_at(&self, client_id: &str, now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.get(client_id)?;
        let ends = window.started + self.rule.window;
        (window.failures >= self.rule.limit && ends > now).then(|| ends - now)
    }

    /// Counts a wrong secret for `client_id`; returns whether this failure
    /// locked the ID (true once per lock).
    pub fn record_failure(&self, client_id: &str) -> bool {
        self.record_failure_at(client_id, Instant::now())
    }

    fn record_failure_at(&self, client_id: &str, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_TRACKED && !windows.contains_key(client_id) {
            let (limit, window) = (self.rule.limit, self.rule.window);
            windows.retain(|_, w| w.started + window > now);
            if windows.len() >= MAX_TRACKED {
                windows.retain(|_, w| w.failures >= limit);
            }
            if windows.len() >= MAX_TRACKED {
                return false;
            }
        }
        let window = windows.entry(client_id.to_owned()).or_insert(Window { started: now, failures: 0 });
        if window.started + self.rule.window <= now {
            *window = Window { started: now, failures: 0 };
        }
        window.failures = window.failures.saturating_add(1);
        window.failures == self.rule.limit
    }

    /// How many client IDs are refused now, for the metrics.
    pub fn locked_count(&self) -> usize {
        let now = Instant::now();
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.values().filter(|w| w.failures >= self.rule.limit && w.started + self.rule.window > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> FailureLimiter {
        FailureLimiter::new(FailureLimit { limit: 3, window: Duration::from_secs(60) })
    }

    #[test]
    fn the_limit_th_failure_locks_the_id_until_the_window_ends() {
        let (limiter, t0) = (limiter(), Instant::now());
        assert!(!limiter.record_failure_at("c", t0));
        assert!(!limiter.record_failure_at("c", t0 + Duration::from_secs(1)));
        assert_eq!(limiter.locked_for_at("c", t0 + Duration::from_secs(1)), None);
        assert!(limiter.record_failure_at("c", t0 + Duration::from_secs(2)));
        assert_eq!(limiter.locked_for_at("c", t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(limiter.locked_for_at("c", t0 + Duration::from_secs(60)), None);
        assert_eq!(limiter.locked_for_at("other", t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn failures_of_an_old_window_do_not_count() {
        let (limiter, t0) = (limiter(), Instant::now());
        limiter.record_failure_at("c", t0);
        limiter.record_failure_at("c", t0);
        assert!(!limiter.record_failure_at("c", t0 + Duration::from_secs(61)));
    }

    #[test]
    fn a_flood_of_made_up_ids_stays_bounded_and_cannot_free_a_locked_id() {
        let (limiter, t0) = (limiter(), Instant::now());
        for _ in 0..3 {
            limiter.record_failure_at("victim", t0);
        }
        for i in 0..MAX_TRACKED + 10 {
            limiter.record_failure_at(&format!("made-up-{i}"), t0);
        }
        assert!(limiter.windows.lock().unwrap().len() <= MAX_TRACKED);
        assert!(limiter.locked_for_at("victim", t0).is_some());
    }
}
