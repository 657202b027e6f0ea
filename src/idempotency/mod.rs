//! Safe retries of creates: the `Idempotency-Key` request header.
//!
//! A key is scoped by the caller (the token's user and OAuth client) and the
//! operation, and kept 24 hours. The first request with a key claims it and
//! creates the resource in one transaction (`once`): a crash leaves neither
//! the key nor the resource. A repeat with the same body gets what the first
//! was answered; with another body it is refused (422); one that arrives
//! while the first is still in its transaction gets 409 on PostgreSQL (an
//! advisory lock per key, tried without waiting) and waits its turn on
//! SQLite (whose writes take turns anyway), then gets the replay. The rows
//! live in the database, so every replica sees them.

pub mod store;

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::clock;
use crate::db::{Db, DbError, Tx};
use crate::rest::{ApiError, Request};
pub use store::Recorded;

/// The request header.
pub const HEADER: &str = "Idempotency-Key";

/// How long a key is remembered: a repeat after that is a new request.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a key may stay in flight before it counts as abandoned. A claim
/// is never committed on its own (it shares the create's transaction), so
/// this only guards against a row that should not exist.
pub const IN_FLIGHT_BOUND: Duration = Duration::from_secs(60);

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A validated `Idempotency-Key`: 1 to 255 printable ASCII characters
/// (space to `~`), without the spaces HTTP strips around a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The request's key, if it sent one; a key that breaks the rules is a
    /// 400 naming the header.
    pub fn from_request(rq: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
        rq.header(HEADER).map(IdempotencyKey::parse).transpose()
    }

    /// `value` as a key, or the 400 that names what is wrong with it.
    pub fn parse(value: &str) -> Result<IdempotencyKey, ApiError> {
        let key = value.trim_matches([' ', '\t']);
        let problem = if key.is_empty() {
            "is empty"
        } else if key.len() > MAX_KEY_LEN {
            "is longer than 255 characters"
        } else if !key.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            "holds a character that is not printable ASCII"
        } else {
            return Ok(IdempotencyKey(key.to_owned()));
        };
        Err(ApiError::BadRequest(format!(
            "the {HEADER} header {problem}: it must be 1 to 255 printable ASCII characters"
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whose key it is and for which operation: keys of different callers, or
/// of one caller's different OAuth clients, never meet.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    pub user_id: i64,
    pub client_id: &'a str,
    pub route: &'static str,
}

impl<'a> Scope<'a> {
    pub fn of(caller: &'a Caller, route: &'static str) -> Scope<'a> {
        Scope { user_id: caller.user_id, client_id: &caller.client_id, route }
    }

    /// The advisory-lock key of `key` in this scope: the first 8 bytes of a
    /// SHA-256 over both (a collision only makes a request wait or retry).
    fn lock_key(&self, key: &IdempotencyKey) -> i64 {
        let mut hash = Sha256::new();
        for part in [b"idempotency".as_slice(), self.user_id.to_string().as_bytes(), self.client_id.as_bytes()] {
            hash.update(part);
            hash.update([0]);
        }
        hash.update(self.route.as_bytes());
        hash.update([0]);
        hash.update(key.as_str().as_bytes());
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

/// The hex SHA-256 of `body` in canonical JSON: object keys sorted, no
/// whitespace, numbers as the service reads them. Two bodies that differ
/// only in spacing, key order or the spelling of a number (`13.50`, `13.5`)
/// have the same fingerprint.
pub fn fingerprint(body: &serde_json::Value) -> String {
    let mut canonical = String::new();
    write_canonical(body, &mut canonical);
    Sha256::digest(canonical.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What became of a request with a key.
#[derive(Debug)]
pub enum Outcome<T> {
    /// The key was new: the resource was created (and the answer recorded).
    Created(T),
    /// The same request was answered before: this is what it got.
    Replay(Recorded),
}

/// Runs `create` once per key: claims `key` in `scope` for a body with
/// fingerprint `hash` and, in the same transaction, creates the resource and
/// records the answer `create` returns. A repeat is a [`Outcome::Replay`];
/// another body under the key is [`ApiError::KeyReused`]; a repeat while the
/// first is still in its transaction is [`ApiError::InFlight`]. Also purges
/// a bounded number of expired keys, in the same transaction.
pub fn once<T>(
    db: &Db,
    scope: &Scope<'_>,
    key: &IdempotencyKey,
    hash: &str,
    create: impl FnOnce(&Tx<'_>) -> Result<(T, Recorded), DbError>,
) -> Result<Outcome<T>, ApiError> {
    let now = clock::now();
    let attempt = db.transaction(|tx| {
        if !tx.try_lock(scope.lock_key(key))? {
            return Ok(Attempt::Busy);
        }
        if !store::claim(tx, scope, key, hash, now)? {
            return store::find(tx, scope, key).map(Attempt::Seen);
        }
        let (value, recorded) = create(tx)?;
        store::record(tx, scope, key, &recorded)?;
        store::purge_expired(tx, now)?;
        Ok(Attempt::Created(value))
    })?;
    match attempt {
        Attempt::Created(value) => Ok(Outcome::Created(value)),
        Attempt::Busy => Err(ApiError::InFlight),
        Attempt::Seen(seen) => judge(seen, hash).map(Outcome::Replay),
    }
}

/// What an earlier request under the key means for this one, found without
/// claiming anything: `None` when the key is unused (or expired), else the
/// same answer [`once`] would give. Lets a create skip costly work (bcrypt)
/// for a plain repeat.
pub fn earlier(db: &Db, scope: &Scope<'_>, key: &IdempotencyKey, hash: &str) -> Result<Option<Recorded>, ApiError> {
    match store::find_current(db, scope, key, clock::now())? {
        None => Ok(None),
        seen => judge(seen, hash).map(Some),
    }
}

enum Attempt<T> {
    Created(T),
    Busy,
    Seen(Option<store::Seen>),
}

fn judge(seen: Option<store::Seen>, hash: &str) -> Result<Recorded, ApiError> {
    // The claim failed, so the row exists; gone means purged meanwhile.
    let seen = seen.ok_or(ApiError::InFlight)?;
    if seen.request_hash != hash {
        return Err(ApiError::KeyReused);
    }
    seen.recorded.ok_or(ApiError::InFlight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_is_1_to_255_printable_ascii_characters() {
        assert_eq!(IdempotencyKey::parse("a").unwrap().as_str(), "a");
        assert_eq!(IdempotencyKey::parse(&"k".repeat(255)).unwrap().as_str().len(), 255);
        assert_eq!(IdempotencyKey::parse("order 42 ~!").unwrap().as_str(), "order 42 ~!");
        assert_eq!(IdempotencyKey::parse(" padded\t").unwrap().as_str(), "padded");
    }

    #[test]
    fn an_empty_long_or_non_ascii_key_is_refused_naming_the_header() {
        for bad in ["", "  ", &"k".repeat(256), "caf\u{e9}", "tab\there", "nul\0"] {
            match IdempotencyKey::parse(bad) {
                Err(ApiError::BadRequest(message)) => assert!(message.contains("Idempotency-Key"), "{message}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_fingerprint_ignores_spacing_key_order_and_number_spelling() {
        let a: serde_json::Value = serde_json::from_str(r#"{"name":"A","price":13.50,"x":{"b":1,"a":[1,2]}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "x": {"a": [1, 2], "b": 1}, "price": 13.5, "name": "A" }"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 64);
    }

    #[test]
    fn the_fingerprint_changes_with_any_value() {
        let base = fingerprint(&json!({"name": "A", "price": 1}));
        assert_ne!(base, fingerprint(&json!({"name": "A", "price": 2})));
        assert_ne!(base, fingerprint(&json!({"name": "A", "price": 1, "extra": null})));
        assert_ne!(fingerprint(&json!(["a", "b"])), fingerprint(&json!(["b", "a"])), "array order counts");
    }

    #[test]
    fn lock_keys_differ_by_caller_client_route_and_key() {
        let key = IdempotencyKey::parse("k").unwrap();
        let scope = |user_id, client_id, route| Scope { user_id, client_id, route };
        let base = scope(1, "c", "r").lock_key(&key);
        assert_eq!(base, scope(1, "c", "r").lock_key(&key));
        assert_ne!(base, scope(2, "c", "r").lock_key(&key));
        assert_ne!(base, scope(1, "d", "r").lock_key(&key));
        assert_ne!(base, scope(1, "c", "s").lock_key(&key));
        assert_ne!(base, scope(1, "c", "r").lock_key(&IdempotencyKey::parse("l").unwrap()));
    }
}
