//! Client secrets: generating them from the operating system's random
//! source, hashing them with bcrypt, and checking a presented secret in
//! constant work whether or not the client exists.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::metrics::{BCRYPT_IN_FLIGHT, InFlight};

/// The longest secret checked (see the configuration's constant).
pub const MAX_SECRET_BYTES: usize = crate::config::MAX_CLIENT_SECRET_BYTES;

/// `N` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| format!("the operating system's random source failed: {e}"))?;
    Ok(bytes)
}

/// A new client secret: 256 random bits as 43 URL-safe characters.
pub fn new_client_secret() -> Result<String, String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// A new client ID: a random (version 4) UUID.
pub fn new_client_id() -> Result<String, String> {
    Ok(uuid::Builder::from_random_bytes(random_bytes::<16>()?).into_uuid().to_string())
}

/// The bcrypt hash of `secret` at `cost`.
pub fn hash(secret: &str, cost: u32) -> Result<String, String> {
    let _in_flight = InFlight::start(&BCRYPT_IN_FLIGHT);
    bcrypt::non_truncating_hash(secret, cost).map_err(|e| format!("cannot hash a secret: {e}"))
}

/// The bcrypt hash that secrets of unknown clients are checked against, so
/// they cost as much as known ones. Made on first use (start-up warms it in
/// the background rather than spend a bcrypt on the way to ready).
pub struct DummyHash {
    cost: u32,
    hash: OnceLock<String>,
}

impl DummyHash {
    /// A dummy hash at `cost` (`BCRYPT_COST`), not yet made.
    pub fn new(cost: u32) -> DummyHash {
        DummyHash { cost, hash: OnceLock::new() }
    }

    /// The hash; the first caller makes it, callers meanwhile wait for it.
    pub fn get(&self) -> &str {
        self.hash.get_or_init(|| {
            // Hashing a fixed text cannot fail for a cost the config accepted;
            // should it, a hash of cost 10 still makes checks cost something.
            hash("not-a-client-secret", self.cost)
                .unwrap_or_else(|_| "$2b$10$abcdefghijklmnopqrstuuJvvCKcCRXYgW8jMfS7HF5vGCEsjGXEK".to_owned())
        })
    }
}

/// A cap on concurrent bcrypt checks of the token endpoint: each holds a
/// worker (and a core) for tens of milliseconds, so a flood of wrong secrets
/// could otherwise occupy every worker and stall all other requests.
pub struct BcryptSlots {
    max: usize,
    used: AtomicUsize,
}

/// A taken slot; dropping it frees the slot.
pub struct BcryptSlot<'a>(&'a AtomicUsize);

impl BcryptSlots {
    /// Room for `max` checks at once (at least one).
    pub fn new(max: usize) -> BcryptSlots {
        BcryptSlots { max: max.max(1), used: AtomicUsize::new(0) }
    }

    /// A slot, or `None` when all are taken.
    pub fn try_take(&self) -> Option<BcryptSlot<'_>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used < self.max).then_some(used + 1))
            .ok()
            .map(|_| BcryptSlot(&self.used))
    }
}

impl Drop for BcryptSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A bcrypt job for the low-priority threads.
type Job = Box<dyn FnOnce() + Send>;

/// The longest a caller waits for a bcrypt job, queue included.
pub const BCRYPT_DEADLINE: Duration = Duration::from_secs(10);

/// The threads that run bcrypt: at most half the cores (one on two), so a
/// flood of token requests with wrong secrets can never take every core
/// from reads and writes; the slots bound how many workers wait here.
/// (Measured: a lower CPU priority instead starved bcrypt for tens of
/// seconds on a busy machine; this keeps it running and the readers fast.)
pub struct BcryptPool {
    jobs: Sender<Job>,
}

impl BcryptPool {
    /// Starts `threads` low-priority threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<BcryptPool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            thread::Builder::new().name(format!("bcrypt-{i}")).spawn(move || run_jobs(&queue))?;
        }
        Ok(BcryptPool { jobs })
    }

    /// Runs `work` on a low-priority thread and waits for its result, at
    /// most [`BCRYPT_DEADLINE`]: on a machine so busy that the low-priority
    /// threads hardly run, the caller gets an error (a 503 to retry) instead
    /// of waiting without end. Work that could not even start in time is
    /// dropped unrun.
    pub fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let (done, result) = mpsc::channel();
        let queued = Instant::now();
        let job: Job = Box::new(move || {
            if queued.elapsed() < BCRYPT_DEADLINE {
                let _ = done.send(work());
            }
        });
        self.jobs.send(job).map_err(|_| "the bcrypt threads are gone".to_owned())?;
        result.recv_timeout(BCRYPT_DEADLINE).map_err(|_| {
            format!("bcrypt did not finish within {} s: the machine is too busy", BCRYPT_DEADLINE.as_secs())
        })
    }
}

fn run_jobs(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A panicking job must not take the thread with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Whether `secret` matches `hash`. Without a hash (unknown client) the
/// secret is checked against `dummy_hash`, made at the same cost, so the
/// answer takes as long either way and reveals nothing about which client
/// IDs exist.
pub fn verify(secret: &str, hash: Option<&str>, dummy_hash: &str) -> bool {
    let _in_flight = InFlight::start(&BCRYPT_IN_FLIGHT);
    let target = hash.unwrap_or(dummy_hash);
    let acceptable = secret.len() <= MAX_SECRET_BYTES;
    // Even a secret that is refused for its length costs a full check.
    let candidate = if acceptable { secret } else { "-" };
    let matches = bcrypt::verify(candidate, target).unwrap_or(false);
    matches && acceptable && hash.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_slots_run_out_and_come_back() {
        let slots = BcryptSlots::new(2);
        let first = slots.try_take();
        let second = slots.try_take();
        assert!(first.is_some() && second.is_some());
        assert!(slots.try_take().is_none());
        drop(first);
        assert!(slots.try_take().is_some());
    }

    #[test]
    fn the_pool_runs_work_and_returns_its_result() {
        let pool = BcryptPool::start(1).unwrap();

        assert_eq!(pool.run(|| 2 + 2).unwrap(), 4);
        assert_eq!(pool.run(|| "again").unwrap(), "again");
    }

    #[test]
    fn a_generated_secret_has_256_bits() {
        let secret = new_client_secret().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&secret).unwrap().len(), 32);
        assert_ne!(secret, new_client_secret().unwrap());
    }

    #[test]
    fn a_generated_client_id_is_a_version_4_uuid() {
        let id = new_client_id().unwrap();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn the_right_secret_matches_and_others_do_not() {
        let hash = hash("s3cret", 4).unwrap();
        let dummy = super::hash("dummy", 4).unwrap();
        assert!(verify("s3cret", Some(&hash), &dummy));
        assert!(!verify("wrong", Some(&hash), &dummy));
    }

    #[test]
    fn an_unknown_client_never_matches_even_with_the_dummy_secret() {
        let dummy = hash("dummy", 4).unwrap();
        assert!(!verify("dummy", None, &dummy));
    }

    #[test]
    fn a_secret_longer_than_bcrypt_reads_never_matches() {
        let long = "x".repeat(MAX_SECRET_BYTES + 1);
        let truncated_hash = bcrypt::hash(&long[..MAX_SECRET_BYTES], 4).unwrap();
        let dummy = hash("dummy", 4).unwrap();
        assert!(!verify(&long, Some(&truncated_hash), &dummy));
    }
}
