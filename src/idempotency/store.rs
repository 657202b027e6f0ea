//! The `idempotency_keys` queries: each statement once, as its pair of
//! dialect texts, beside the function that runs it through the executor.

use std::time::SystemTime;

use super::{IN_FLIGHT_BOUND, IdempotencyKey, RETENTION, Scope};
use crate::db::{DbError, Exec, Row, Statement, Value};

/// The answer recorded for a key, replayed to a repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub status: u16,
    /// What was created: the pizza ID or the client ID.
    pub resource_id: String,
    /// The JSON body answered; `None` where it must not be kept (a client's
    /// secret).
    pub body: Option<String>,
    pub location: Option<String>,
    pub etag: Option<String>,
}

/// An existing key's row.
#[derive(Debug)]
pub struct Seen {
    pub request_hash: String,
    /// `None` while the first request is still in flight.
    pub recorded: Option<Recorded>,
}

fn scope_params<'a>(scope: &Scope<'a>, key: &'a IdempotencyKey) -> [Value<'a>; 4] {
    [scope.user_id.into(), scope.client_id.into(), scope.route.into(), key.as_str().into()]
}

// A row that expired, or was abandoned in flight, is taken over as if new.
const CLAIM: Statement = Statement::both(
    "INSERT INTO idempotency_keys (user_id, client_id, route, idem_key, request_hash, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (user_id, client_id, route, idem_key) DO UPDATE SET \
     request_hash = excluded.request_hash, created_at = excluded.created_at, status = NULL, \
     resource_id = NULL, body = NULL, location = NULL, etag = NULL \
     WHERE idempotency_keys.created_at < $7 \
     OR (idempotency_keys.status IS NULL AND idempotency_keys.created_at < $8) \
     RETURNING user_id",
);

/// Claims `key` for a request whose body has fingerprint `hash`, in flight
/// from `now`; false when the key is taken (and neither expired nor
/// abandoned). Run it in the transaction that creates the resource.
#[must_use = "false means the key was already taken"]
pub fn claim(
    db: &impl Exec,
    scope: &Scope<'_>,
    key: &IdempotencyKey,
    hash: &str,
    now: SystemTime,
) -> Result<bool, DbError> {
    let mut params = scope_params(scope, key).to_vec();
    let rest: [Value<'_>; 4] = [hash.into(), now.into(), (now - RETENTION).into(), (now - IN_FLIGHT_BOUND).into()];
    params.extend(rest);
    Ok(!db.write(&CLAIM, &params, |row| row.int(0))?.is_empty())
}

const RECORD: Statement = Statement::both(
    "UPDATE idempotency_keys SET status = $1, resource_id = $2, body = $3, location = $4, etag = $5 \
     WHERE user_id = $6 AND client_id = $7 AND route = $8 AND idem_key = $9",
);

/// Stores the answer to the request that claimed `key`.
pub fn record(db: &impl Exec, scope: &Scope<'_>, key: &IdempotencyKey, recorded: &Recorded) -> Result<(), DbError> {
    let mut params: Vec<Value<'_>> = vec![
        i64::from(recorded.status).into(),
        (&recorded.resource_id).into(),
        recorded.body.as_ref().into(),
        recorded.location.as_ref().into(),
        recorded.etag.as_ref().into(),
    ];
    params.extend(scope_params(scope, key));
    match db.execute(&RECORD, &params)? {
        1 => Ok(()),
        n => Err(DbError::Query(format!("recording an idempotency key changed {n} rows, not 1"))),
    }
}

const SELECT: Statement = Statement::both(
    "SELECT request_hash, status, resource_id, body, location, etag FROM idempotency_keys \
     WHERE user_id = $1 AND client_id = $2 AND route = $3 AND idem_key = $4",
);

const SELECT_CURRENT: Statement = Statement::both(
    "SELECT request_hash, status, resource_id, body, location, etag FROM idempotency_keys \
     WHERE user_id = $1 AND client_id = $2 AND route = $3 AND idem_key = $4 AND status IS NOT NULL \
     AND created_at >= $5",
);

fn seen(row: &Row<'_>) -> Result<Seen, DbError> {
    let recorded = match row.opt_int(1)? {
        None => None,
        Some(status) => Some(Recorded {
            status: u16::try_from(status).map_err(|_| DbError::Query(format!("stored status {status}")))?,
            resource_id: row.opt_text(2)?.unwrap_or_default(),
            body: row.opt_text(3)?,
            location: row.opt_text(4)?,
            etag: row.opt_text(5)?,
        }),
    };
    Ok(Seen { request_hash: row.text(0)?, recorded })
}

/// The row of `key`, whatever its state.
pub fn find(db: &impl Exec, scope: &Scope<'_>, key: &IdempotencyKey) -> Result<Option<Seen>, DbError> {
    db.read_one(&SELECT, &scope_params(scope, key), seen)
}

/// The row of `key` if it holds an answer that has not expired at `now`.
pub fn find_current(
    db: &impl Exec,
    scope: &Scope<'_>,
    key: &IdempotencyKey,
    now: SystemTime,
) -> Result<Option<Seen>, DbError> {
    let mut params = scope_params(scope, key).to_vec();
    params.push((now - RETENTION).into());
    db.read_one(&SELECT_CURRENT, &params, seen)
}

// Oldest first, at most 100 at a time; on PostgreSQL rows another replica is
// purging are skipped rather than waited for.
const PURGE: Statement = Statement {
    sqlite: "DELETE FROM idempotency_keys WHERE rowid IN \
             (SELECT rowid FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT 100)",
    postgres: "DELETE FROM idempotency_keys WHERE ctid IN \
               (SELECT ctid FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT 100 \
               FOR UPDATE SKIP LOCKED)",
};

/// Deletes at most 100 keys that expired before `now`; how many.
pub fn purge_expired(db: &impl Exec, now: SystemTime) -> Result<u64, DbError> {
    db.execute(&PURGE, &[(now - RETENTION).into()])
}
