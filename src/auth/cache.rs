//! The credential cache: lets a client that keeps presenting the same,
//! already verified secret skip bcrypt (tens of milliseconds at cost 10).
//!
//! What it holds per client ID: a keyed hash (HMAC-SHA-256, with a random key
//! made at start and never stored) of the secret that passed bcrypt, the
//! bcrypt hash it passed against, and when. A token request still reads the
//! client from the database every time (so a deleted client, a changed role
//! or a rotated secret take effect at once); only the bcrypt check is
//! skipped, and only when the presented secret has the same keyed hash and
//! the stored bcrypt hash is unchanged. Any other secret pays full bcrypt.
//! Neither the secret nor anything that could be checked against it offline
//! is kept: without the process's key the keyed hashes are useless.
//! Entries expire after [`TTL`]; at most [`MAX_ENTRIES`] are kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a verified secret is remembered.
pub const TTL: Duration = Duration::from_secs(600);
/// The most clients remembered at once.
pub const MAX_ENTRIES: usize = 10_000;

type HmacSha256 = Hmac<Sha256>;

struct Entry {
    mac: [u8; 32],
    bcrypt_hash: String,
    verified_at: Instant,
}

/// Secrets that already passed bcrypt, by client ID.
pub struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<String, Entry>>,
}

impl CredentialCache {
    /// An empty cache keyed with `key` (random bytes, one set per process).
    pub fn new(key: [u8; 32]) -> CredentialCache {
        CredentialCache { key, entries: Mutex::new(HashMap::new()) }
    }

    fn mac(&self, client_id: &str, secret: &str) -> HmacSha256 {
        // The key length is free for HMAC: this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(client_id.as_bytes());
        mac.update(&[0]);
        mac.update(secret.as_bytes());
        mac
    }

    /// Whether `secret` is the one that last passed bcrypt for `client_id`
    /// against `bcrypt_hash` (the hash stored now), within the TTL.
    pub fn is_verified(&self, client_id: &str, secret: &str, bcrypt_hash: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.get(client_id) else { return false };
        entry.bcrypt_hash == bcrypt_hash
            && entry.verified_at.elapsed() < TTL
            // Constant-time comparison of the keyed hashes.
            && self.mac(client_id, secret).verify_slice(&entry.mac).is_ok()
    }

    /// Whether `secret` passed bcrypt for `client_id` within the TTL, against
    /// whatever hash was stored then: a cheap first look, before the
    /// client's record (and its current hash) is read.
    pub fn may_be_verified(&self, client_id: &str, secret: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.get(client_id) else { return false };
        entry.verified_at.elapsed() < TTL && self.mac(client_id, secret).verify_slice(&entry.mac).is_ok()
    }

    /// Remembers that `secret` passed bcrypt for `client_id` against `bcrypt_hash`.
    pub fn remember(&self, client_id: &str, secret: &str, bcrypt_hash: &str) {
        let mac: [u8; 32] = self.mac(client_id, secret).finalize().into_bytes().into();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(client_id) {
            entries.retain(|_, e| e.verified_at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                // Still full of live entries: drop the oldest.
                if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.verified_at).map(|(k, _)| k.clone()) {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            client_id.to_owned(),
            Entry { mac, bcrypt_hash: bcrypt_hash.to_owned(), verified_at: Instant::now() },
        );
    }

    /// Forgets `client_id` (it was deleted, or its secret failed).
    pub fn forget(&self, client_id: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(client_id);
    }

    /// How many clients are remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> CredentialCache {
        CredentialCache::new([7; 32])
    }

    #[test]
    fn a_remembered_secret_is_verified_again_without_bcrypt() {
        let cache = cache();
        cache.remember("c", "s3cret", "$2b$hash");
        assert!(cache.is_verified("c", "s3cret", "$2b$hash"));
    }

    #[test]
    fn another_secret_is_not_verified() {
        let cache = cache();
        cache.remember("c", "s3cret", "$2b$hash");
        assert!(!cache.is_verified("c", "s3cret!", "$2b$hash"));
        assert!(!cache.is_verified("other", "s3cret", "$2b$hash"));
    }

    #[test]
    fn a_changed_stored_hash_invalidates_the_entry() {
        let cache = cache();
        cache.remember("c", "s3cret", "$2b$old");
        assert!(!cache.is_verified("c", "s3cret", "$2b$new"));
    }

    #[test]
    fn a_forgotten_client_is_not_verified() {
        let cache = cache();
        cache.remember("c", "s3cret", "h");
        cache.forget("c");
        assert!(!cache.is_verified("c", "s3cret", "h"));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = cache();
        for i in 0..MAX_ENTRIES + 5 {
            cache.remember(&format!("client-{i}"), "s", "h");
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(cache.is_verified(&format!("client-{}", MAX_ENTRIES + 4), "s", "h"));
    }

    #[test]
    fn id_and_secret_cannot_be_shifted_into_each_other() {
        let cache = cache();
        cache.remember("ab", "c", "h");
        assert!(!cache.is_verified("a", "bc", "h"));
    }
}
