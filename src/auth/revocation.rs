//! Revoked tokens, in memory, so the bearer check never asks the database.
//!
//! Three things revoke tokens: deleting a client (all of its tokens),
//! rotating its secret (every token issued under an older secret
//! generation: tokens carry theirs in the `gen` claim) and
//! `POST /api/v1/oauth/revoke` (one token, by its `jti`). Each is written to
//! the database together with a bump of `revocation_revision`, in one
//! transaction. Every replica reads that number every `REVOCATION_SYNC_MS`
//! (one row) and reloads what is revoked when it moved, so a revocation made
//! on any replica holds on all of them within about that interval; the
//! replica that made it applies it at once. Entries leave memory when the
//! tokens they concern have expired.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::SystemTime;

use super::Caller;
use crate::db::{DbError, Exec, Statement, Value};
use crate::{clock, metrics};

/// What is known of one client whose tokens were revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientMark {
    /// Tokens issued under an older generation are revoked.
    generation: u64,
    /// When the client was deleted (Unix seconds): all its tokens are revoked.
    deleted_at: Option<u64>,
}

#[derive(Default)]
struct Revoked {
    clients: HashMap<String, ClientMark>,
    /// Revoked token IDs and their expiry (Unix seconds).
    tokens: HashMap<String, u64>,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Its client was deleted.
    ClientDeleted,
    /// Its client's secret was rotated after it was issued.
    SecretRotated,
    /// It was revoked on its own.
    TokenRevoked,
}

impl Revocation {
    /// The `error_description` of the 401.
    pub fn describe(self) -> &'static str {
        match self {
            Revocation::ClientDeleted => "the token was revoked: its client has been deleted",
            Revocation::SecretRotated => "the token was revoked: its client's secret has been rotated",
            Revocation::TokenRevoked => "the token was revoked",
        }
    }
}

/// Every revocation still in force, and how fresh that knowledge is.
pub struct Revocations {
    revoked: RwLock<Revoked>,
    /// The `revocation_revision` last loaded; -1 before the first load.
    revision: AtomicI64,
    /// When the last sync reached the database (Unix seconds).
    synced_at: AtomicU64,
    /// How long tokens live: a deleted client is forgotten this long after
    /// its deletion, when every token it had has expired.
    lifetime: u64,
}

const SELECT_REVISION: Statement = Statement::both("SELECT revision FROM revocation_revision WHERE id = 1");
const BUMP_REVISION: Statement = Statement::both("UPDATE revocation_revision SET revision = revision + 1 WHERE id = 1");
const SELECT_CLIENTS: Statement = Statement::both(
    "SELECT id, secret_generation, deleted_at FROM oauth_clients \
     WHERE secret_generation > 0 OR (deleted_at IS NOT NULL AND deleted_at > $1)",
);
const SELECT_TOKENS: Statement = Statement::both("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1");
const INSERT_TOKEN: Statement = Statement::both(
    "INSERT INTO revoked_tokens (jti, client_id, expires_at, revoked_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (jti) DO NOTHING",
);
const PURGE_TOKENS: Statement = Statement::both("DELETE FROM revoked_tokens WHERE expires_at <= $1");

/// Records, inside the caller's transaction, that something was revoked,
/// so every replica reloads.
pub fn bump_revision(tx: &impl Exec) -> Result<(), DbError> {
    tx.execute(&BUMP_REVISION, &[]).map(drop)
}

/// Stores the revocation of the token `jti` of `client_id`, which expires at
/// `expires_at` (Unix seconds), and bumps the revision. Run it in a transaction.
pub fn store_token(tx: &impl Exec, jti: &str, client_id: &str, expires_at: u64) -> Result<(), DbError> {
    let params: [Value<'_>; 4] = [jti.into(), client_id.into(), (expires_at as i64).into(), clock::now().into()];
    tx.execute(&INSERT_TOKEN, &params)?;
    bump_revision(tx)
}

/// Deletes revocations of tokens that have expired; how many went.
pub fn purge_expired(db: &impl Exec) -> Result<u64, DbError> {
    db.execute(&PURGE_TOKENS, &[(clock::unix_seconds(clock::now()) as i64).into()])
}

impl Revocations {
    /// Nothing revoked yet; tokens live `lifetime` seconds.
    pub fn new(lifetime: u64) -> Revocations {
        Revocations {
            revoked: RwLock::new(Revoked::default()),
            revision: AtomicI64::new(-1),
            synced_at: AtomicU64::new(0),
            lifetime,
        }
    }

    /// Whether `caller`'s token has been revoked. Memory only.
    pub fn check(&self, caller: &Caller) -> Result<(), Revocation> {
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        if let Some(mark) = revoked.clients.get(&caller.client_id) {
            if mark.deleted_at.is_some() {
                return Err(Revocation::ClientDeleted);
            }
            if caller.generation < mark.generation {
                return Err(Revocation::SecretRotated);
            }
        }
        if let Some(jti) = &caller.token_id
            && !revoked.tokens.is_empty()
            && revoked.tokens.contains_key(jti)
        {
            return Err(Revocation::TokenRevoked);
        }
        Ok(())
    }

    /// Reads the revision and, when it moved, everything revoked. Returns
    /// whether it reloaded. Expired entries are dropped either way.
    pub fn sync(&self, db: &impl Exec) -> Result<bool, DbError> {
        let now = clock::unix_seconds(clock::now());
        let revision = db.read_one(&SELECT_REVISION, &[], |row| row.int(0))?.unwrap_or(0);
        let reload = revision != self.revision.load(Ordering::Acquire);
        if reload {
            let deleted_since = clock::from_unix_seconds(now.saturating_sub(self.lifetime));
            let clients = db.read_many(&SELECT_CLIENTS, &[deleted_since.into()], |row| {
                let deleted_at = row.opt_time(2)?.map(clock::unix_seconds);
                Ok((row.text(0)?, ClientMark { generation: row.int(1)?.max(0) as u64, deleted_at }))
            })?;
            let tokens = db.read_many(&SELECT_TOKENS, &[(now as i64).into()], |row| {
                Ok((row.text(0)?, row.int(1)?.max(0) as u64))
            })?;
            let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
            revoked.clients = clients.into_iter().collect();
            revoked.tokens = tokens.into_iter().collect();
            self.revision.store(revision, Ordering::Release);
        } else {
            self.forget_expired(now);
        }
        self.synced_at.store(now, Ordering::Relaxed);
        let (clients, tokens) = self.counts();
        metrics::REVOKED_CLIENTS.store(clients as i64, Ordering::Relaxed);
        metrics::REVOKED_TOKENS.store(tokens as i64, Ordering::Relaxed);
        metrics::REVOCATIONS_SYNCED_AT.store(now, Ordering::Relaxed);
        Ok(reload)
    }

    fn forget_expired(&self, now: u64) {
        let lifetime = self.lifetime;
        let stale = |revoked: &Revoked| {
            revoked.tokens.values().any(|&exp| exp <= now)
                || revoked.clients.values().any(|m| m.deleted_at.is_some_and(|at| at + lifetime < now))
        };
        if !stale(&self.revoked.read().unwrap_or_else(|e| e.into_inner())) {
            return;
        }
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        revoked.tokens.retain(|_, exp| *exp > now);
        revoked.clients.retain(|_, m| m.deleted_at.is_none_or(|at| at + lifetime >= now));
    }

    /// Applies a deletion made by this replica at once.
    pub fn client_deleted(&self, client_id: &str, at: SystemTime) {
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        let mark =
            revoked.clients.entry(client_id.to_owned()).or_insert(ClientMark { generation: 0, deleted_at: None });
        mark.deleted_at = Some(clock::unix_seconds(at));
    }

    /// Applies a rotation made by this replica at once: tokens older than
    /// `generation` are revoked.
    pub fn secret_rotated(&self, client_id: &str, generation: u64) {
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        let mark =
            revoked.clients.entry(client_id.to_owned()).or_insert(ClientMark { generation: 0, deleted_at: None });
        mark.generation = mark.generation.max(generation);
    }

    /// Applies a single revocation made by this replica at once.
    pub fn token_revoked(&self, jti: &str, expires_at: u64) {
        self.revoked.write().unwrap_or_else(|e| e.into_inner()).tokens.insert(jti.to_owned(), expires_at);
    }

    /// When the last sync reached the database (Unix seconds; 0: never).
    pub fn synced_at(&self) -> u64 {
        self.synced_at.load(Ordering::Relaxed)
    }

    /// How many clients and single tokens are revoked, for the metrics.
    pub fn counts(&self) -> (usize, usize) {
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        (revoked.clients.len(), revoked.tokens.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn caller(client: &str, generation: u64, jti: Option<&str>) -> Caller {
        Caller {
            user_id: 1,
            role: Role::Admin,
            client_id: client.into(),
            scopes: vec![],
            token_id: jti.map(str::to_owned),
            generation,
            expires_at: u64::MAX,
        }
    }

    #[test]
    fn tokens_of_a_deleted_client_are_revoked() {
        let revocations = Revocations::new(3600);
        revocations.client_deleted("c", clock::now());
        assert_eq!(revocations.check(&caller("c", 5, Some("j"))), Err(Revocation::ClientDeleted));
        assert_eq!(revocations.check(&caller("other", 0, Some("j"))), Ok(()));
    }

    #[test]
    fn tokens_issued_before_a_rotation_are_revoked_and_later_ones_are_not() {
        let revocations = Revocations::new(3600);
        revocations.secret_rotated("c", 2);
        assert_eq!(revocations.check(&caller("c", 1, None)), Err(Revocation::SecretRotated));
        assert_eq!(revocations.check(&caller("c", 2, None)), Ok(()));
        // A late, older rotation never lowers the bar.
        revocations.secret_rotated("c", 1);
        assert_eq!(revocations.check(&caller("c", 1, None)), Err(Revocation::SecretRotated));
    }

    #[test]
    fn a_revoked_token_id_is_refused_and_others_are_not() {
        let revocations = Revocations::new(3600);
        revocations.token_revoked("j1", u64::MAX);
        assert_eq!(revocations.check(&caller("c", 0, Some("j1"))), Err(Revocation::TokenRevoked));
        assert_eq!(revocations.check(&caller("c", 0, Some("j2"))), Ok(()));
        assert_eq!(revocations.check(&caller("c", 0, None)), Ok(()));
    }

    #[test]
    fn expired_entries_are_forgotten() {
        let revocations = Revocations::new(10);
        revocations.token_revoked("old", 100);
        revocations.token_revoked("live", 1_000);
        revocations.client_deleted("gone", clock::from_unix_seconds(50));
        revocations.client_deleted("recent", clock::from_unix_seconds(95));
        revocations.forget_expired(100);
        assert_eq!(revocations.counts(), (1, 1));
        assert_eq!(revocations.check(&caller("recent", 0, Some("live"))), Err(Revocation::ClientDeleted));
    }
}
