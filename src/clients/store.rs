//! The `oauth_clients` queries: each statement once, as its pair of dialect
//! texts, beside the function that runs it through the executor.

use std::time::SystemTime;

use serde::Serialize;

use super::input::NewClient;
use crate::auth::Role;
use crate::clock;
use crate::db::{DbError, Exec, Row, Statement, Value};

/// What the token endpoint needs to know about a client.
#[derive(Debug, Clone)]
pub struct TokenClient {
    pub secret_hash: String,
    pub scopes: String,
    pub grant_types: String,
    pub user_id: i64,
    /// The owner's role, read when the token is issued.
    pub role: Role,
    /// The secret generation: bumped by every rotation, carried by tokens.
    pub generation: u64,
    /// During a rotation's grace period, the replaced secret's hash and when
    /// the grace period ends.
    pub previous: Option<(String, SystemTime)>,
}

/// A client as `GET /api/v1/clients` lists it: never a secret or a hash.
#[derive(Debug, Serialize)]
pub struct ClientView {
    pub client_id: String,
    pub name: String,
    pub domain: String,
    pub scopes: String,
    pub grant_types: String,
    pub redirect_uri: String,
    pub user_id: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// Whether `id` could name a stored client at all: text with NUL cannot be
/// stored (nor even sent to PostgreSQL), so no client has such an ID.
fn storable(id: &str) -> bool {
    !id.contains('\0')
}

const SELECT_FOR_TOKEN: Statement = Statement::both(
    "SELECT c.secret_hash, c.scopes, c.grant_types, c.user_id, u.role, c.secret_generation, \
     c.previous_secret_hash, c.previous_secret_expires_at \
     FROM oauth_clients c JOIN users u ON u.id = c.user_id \
     WHERE c.id = $1 AND c.deleted_at IS NULL",
);

/// The active client `id` with its owner's role, for the token endpoint. A
/// client whose owner has a role this build does not know is no client.
pub fn find_for_token(db: &impl Exec, id: &str) -> Result<Option<TokenClient>, DbError> {
    if !storable(id) {
        return Ok(None);
    }
    let now = clock::now();
    let found = db.read_one(&SELECT_FOR_TOKEN, &[id.into()], |row| {
        let Some(role) = Role::parse(&row.text(4)?) else { return Ok(None) };
        let previous = match (row.opt_text(6)?, row.opt_time(7)?) {
            (Some(hash), Some(until)) if until > now => Some((hash, until)),
            _ => None,
        };
        Ok(Some(TokenClient {
            secret_hash: row.text(0)?,
            scopes: row.text(1)?,
            grant_types: row.text(2)?,
            user_id: row.int(3)?,
            role,
            generation: row.int(5)?.max(0) as u64,
            previous,
        }))
    })?;
    Ok(found.flatten())
}

const INSERT: Statement = Statement::both(
    "INSERT INTO oauth_clients \
     (id, secret_hash, name, domain, scopes, grant_types, redirect_uri, user_id, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (id) DO NOTHING",
);

/// Stores a client unless one with `id` exists; returns whether it was stored.
#[must_use = "false means the ID was taken and nothing was stored"]
pub fn insert(db: &impl Exec, id: &str, hash: &str, client: &NewClient, user_id: i64) -> Result<bool, DbError> {
    let params: [Value<'_>; 9] = [
        id.into(),
        hash.into(),
        (&client.name).into(),
        (&client.domain).into(),
        (&client.scopes).into(),
        (&client.grant_types).into(),
        (&client.redirect_uri).into(),
        user_id.into(),
        clock::now().into(),
    ];
    Ok(db.execute(&INSERT, &params)? == 1)
}

const SELECT_FOR_USER: Statement = Statement::both(
    "SELECT id, name, domain, scopes, grant_types, redirect_uri, user_id, created_at, updated_at \
     FROM oauth_clients WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
);

fn view(row: &Row<'_>) -> Result<ClientView, DbError> {
    Ok(ClientView {
        client_id: row.text(0)?,
        name: row.text(1)?,
        domain: row.text(2)?,
        scopes: row.text(3)?,
        grant_types: row.text(4)?,
        redirect_uri: row.text(5)?,
        user_id: row.int(6)?,
        created_at: row.time_text(7)?,
        updated_at: row.time_text(8)?,
    })
}

/// The active clients of `user_id`, oldest first.
pub fn list_for_user(db: &impl Exec, user_id: i64) -> Result<Vec<ClientView>, DbError> {
    db.read_many(&SELECT_FOR_USER, &[user_id.into()], view)
}

const SOFT_DELETE: Statement = Statement::both(
    "UPDATE oauth_clients SET deleted_at = $1, updated_at = $1 \
     WHERE id = $2 AND user_id = $3 AND deleted_at IS NULL",
);

/// Marks the caller's client `id` deleted at `at`; false when there was
/// none to delete. Run it in a transaction that also bumps the revocation
/// revision.
#[must_use = "false means nothing was deleted"]
pub fn soft_delete(db: &impl Exec, id: &str, user_id: i64, at: SystemTime) -> Result<bool, DbError> {
    if !storable(id) {
        return Ok(false);
    }
    Ok(db.execute(&SOFT_DELETE, &[at.into(), id.into(), user_id.into()])? == 1)
}

const SELECT_OWNER: Statement =
    Statement::both("SELECT user_id FROM oauth_clients WHERE id = $1 AND deleted_at IS NULL");

/// The owner of the active client `id`.
pub fn owner(db: &impl Exec, id: &str) -> Result<Option<i64>, DbError> {
    if !storable(id) {
        return Ok(None);
    }
    db.read_one(&SELECT_OWNER, &[id.into()], |row| row.int(0))
}

const ROTATE: Statement = Statement::both(
    // Parameters appear in order: SQLite numbers `$N` by first appearance.
    // Every right-hand side reads the row as it was, so previous_secret_hash
    // gets the replaced hash.
    "UPDATE oauth_clients SET secret_hash = $1, \
     previous_secret_hash = CASE WHEN $2 IS NULL THEN NULL ELSE secret_hash END, \
     previous_secret_expires_at = $2, secret_generation = secret_generation + 1, updated_at = $3 \
     WHERE id = $4 AND deleted_at IS NULL RETURNING secret_generation",
);

/// Gives the active client `id` the secret hashed as `hash`: its generation
/// goes up by one (tokens issued before are revoked) and the old secret
/// keeps working until `previous_until`, when given. Returns the new
/// generation, or `None` when there is no such client. Run it in a
/// transaction that also bumps the revocation revision.
pub fn rotate(
    db: &impl Exec,
    id: &str,
    hash: &str,
    previous_until: Option<SystemTime>,
) -> Result<Option<u64>, DbError> {
    if !storable(id) {
        return Ok(None);
    }
    let params: [Value<'_>; 4] = [hash.into(), previous_until.into(), clock::now().into(), id.into()];
    let generations = db.write(&ROTATE, &params, |row| row.int(0))?;
    Ok(generations.first().map(|g| (*g).max(0) as u64))
}

const SELECT_HASH: Statement =
    Statement::both("SELECT secret_hash FROM oauth_clients WHERE id = $1 AND deleted_at IS NULL");

/// The bcrypt hash of the active client `id`.
pub fn secret_hash(db: &impl Exec, id: &str) -> Result<Option<String>, DbError> {
    db.read_one(&SELECT_HASH, &[id.into()], |row| row.text(0))
}
