//! OAuth clients: `POST/GET/DELETE /api/v1/clients` (admins only) and
//! `POST /api/v1/clients/{id}/secret` (the owner or an admin) in this
//! module, the token endpoint that authenticates them (`token`), token
//! revocation (`revoke`), the validation of input (`input`) and the queries
//! (`store`).

pub mod input;
pub mod revoke;
pub mod store;
pub mod token;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::auth::{self, Auth, Caller, Role, audit, revocation, secrets};
use crate::db::{Db, DbError, Exec};
use crate::idempotency::{self, IdempotencyKey, Outcome, Recorded, Scope};
use crate::rest::{ApiError, Request, Response};
use crate::{clock, metrics};
use input::{NewClient, Rotation};

/// The answer to a create: the only time the secret is shown.
#[derive(Debug, Serialize)]
struct CreatedClient {
    client_id: String,
    client_secret: String,
    name: String,
    scopes: String,
    grant_types: String,
    redirect_uri: String,
}

/// How many fresh IDs a create tries before giving up: a random 122-bit
/// UUID that is already taken would mean a broken random source.
const ID_ATTEMPTS: usize = 3;

/// The operation idempotency keys of creates are scoped to.
const CREATE_ROUTE: &str = "POST /api/v1/clients";

/// `POST /api/v1/clients`. With an `Idempotency-Key`, a repeat of the same
/// request creates nothing and answers 409 naming the client created first:
/// its secret was shown once and is not kept, so it cannot be shown again.
pub fn create(db: &Db, auth: &Auth, rq: &Request) -> Result<Response, ApiError> {
    let caller = auth::authenticate(auth, db, rq)?;
    auth::require_admin(&caller)?;
    auth::require_scope(&caller, auth::WRITE_SCOPE)?;
    let key = IdempotencyKey::from_request(rq)?;
    let body = rq.json_body()?;
    let input = NewClient::parse(&body)?;
    let scope = Scope::of(&caller, CREATE_ROUTE);
    let fingerprint = idempotency::fingerprint(&body);
    if let Some(key) = &key {
        // A plain repeat is answered before paying for bcrypt.
        if let Some(earlier) = idempotency::earlier(db, &scope, key, &fingerprint)? {
            return Err(already_created(earlier));
        }
    }

    let secret = secrets::new_client_secret().map_err(ApiError::Internal)?;
    let (to_hash, cost) = (secret.clone(), auth.bcrypt_cost);
    let hash = auth.bcrypt.run(move || secrets::hash(&to_hash, cost)).map_err(ApiError::Unavailable)?;
    let hash = hash.map_err(ApiError::Internal)?;
    let id = match &key {
        None => insert_with_fresh_id(db, &hash, &input, caller.user_id)?,
        Some(key) => {
            let outcome = idempotency::once(db, &scope, key, &fingerprint, |tx| {
                let id = insert_with_fresh_id(tx, &hash, &input, caller.user_id)?;
                // The answer's body holds the secret: only the ID is kept.
                let recorded =
                    Recorded { status: 201, resource_id: id.clone(), body: None, location: None, etag: None };
                Ok((id, recorded))
            })?;
            match outcome {
                Outcome::Created(id) => id,
                Outcome::Replay(earlier) => return Err(already_created(earlier)),
            }
        }
    };
    audit_change(rq, "client.created", &id, &caller).log();

    let body = CreatedClient {
        client_id: id,
        client_secret: secret,
        name: input.name,
        scopes: input.scopes,
        grant_types: input.grant_types,
        redirect_uri: input.redirect_uri,
    };
    Ok(Response::json(201, &body).with_header("Cache-Control", "no-store"))
}

/// Stores a client under a fresh random ID and returns the ID. Fails rather
/// than returning an ID that was not stored: a secret is never shown for a
/// client that does not exist.
fn insert_with_fresh_id(db: &impl Exec, hash: &str, input: &NewClient, user_id: i64) -> Result<String, DbError> {
    for _ in 0..ID_ATTEMPTS {
        let id = secrets::new_client_id().map_err(DbError::Query)?;
        if store::insert(db, &id, hash, input, user_id)? {
            return Ok(id);
        }
    }
    Err(DbError::Query(format!("{ID_ATTEMPTS} fresh client IDs were all taken")))
}

/// The 409 for a repeated create: names the client, never its secret.
fn already_created(earlier: Recorded) -> ApiError {
    ApiError::AlreadyCreated(json!({
        "error": "Conflict",
        "details": "this Idempotency-Key already created a client; its secret was shown once and is not shown again",
        "client_id": earlier.resource_id,
    }))
}

/// `GET /api/v1/clients`: the caller's clients.
pub fn list(db: &Db, auth: &Auth, rq: &Request) -> Result<Response, ApiError> {
    let caller = auth::authenticate(auth, db, rq)?;
    auth::require_admin(&caller)?;
    Ok(Response::json(200, &store::list_for_user(db, caller.user_id)?))
}

/// `DELETE /api/v1/clients/{id}`: soft delete; the client gets no more
/// tokens and every token it has is revoked.
pub fn delete(db: &Db, auth: &Auth, rq: &Request, id: &str) -> Result<Response, ApiError> {
    let caller = auth::authenticate(auth, db, rq)?;
    auth::require_admin(&caller)?;
    auth::require_scope(&caller, auth::WRITE_SCOPE)?;
    let at = clock::now();
    let deleted = db.transaction(|tx| {
        let deleted = store::soft_delete(tx, id, caller.user_id, at)?;
        if deleted {
            revocation::bump_revision(tx)?;
        }
        Ok(deleted)
    })?;
    if !deleted {
        return Err(ApiError::NotFound("Client not found"));
    }
    auth.revocations.client_deleted(id, at);
    auth.credentials.forget(id);
    metrics::REVOCATIONS.fetch_add(1, Ordering::Relaxed);
    audit_change(rq, "client.deleted", id, &caller).log();
    Ok(Response::no_content())
}

/// The answer to a rotation: the new secret, shown this once.
#[derive(Debug, Serialize)]
struct RotatedSecret {
    client_id: String,
    client_secret: String,
    /// Until when the replaced secret still works (RFC 3339), or null.
    previous_secret_expires_at: Option<String>,
}

/// `POST /api/v1/clients/{id}/secret`: a new secret for the client, for its
/// owner or an admin. The old secret stops working at once, or when the
/// grace period asked for ends; every token issued before is revoked.
pub fn rotate_secret(db: &Db, auth: &Auth, rq: &Request, id: &str) -> Result<Response, ApiError> {
    let caller = auth::authenticate_writer(auth, db, rq)?;
    let rotation = Rotation::parse(rq.body()?)?;
    // Someone else's client is not found: its existence is not the caller's business.
    match store::owner(db, id)? {
        Some(owner) if owner == caller.user_id || caller.role == Role::Admin => {}
        _ => return Err(ApiError::NotFound("Client not found")),
    }

    let secret = secrets::new_client_secret().map_err(ApiError::Internal)?;
    let (to_hash, cost) = (secret.clone(), auth.bcrypt_cost);
    let hash = auth.bcrypt.run(move || secrets::hash(&to_hash, cost)).map_err(ApiError::Unavailable)?;
    let hash = hash.map_err(ApiError::Internal)?;
    let previous_until = (rotation.grace_seconds > 0)
        .then(|| clock::truncate_to_micros(clock::now() + Duration::from_secs(rotation.grace_seconds)));
    let generation = db.transaction(|tx| {
        let generation = store::rotate(tx, id, &hash, previous_until)?;
        if generation.is_some() {
            revocation::bump_revision(tx)?;
        }
        Ok(generation)
    })?;
    // Deleted meanwhile: the new secret was never stored, so it is not shown.
    let generation = generation.ok_or(ApiError::NotFound("Client not found"))?;
    auth.revocations.secret_rotated(id, generation);
    auth.credentials.forget(id);
    metrics::REVOCATIONS.fetch_add(1, Ordering::Relaxed);
    let previous_secret_expires_at = previous_until.map(clock::format);
    audit_change(rq, "client.secret_rotated", id, &caller)
        .with("generation", generation)
        .with("previous_secret_expires_at", previous_secret_expires_at.clone())
        .log();
    let body = RotatedSecret { client_id: id.to_owned(), client_secret: secret, previous_secret_expires_at };
    Ok(Response::json(200, &body).with_header("Cache-Control", "no-store").with_header("Pragma", "no-cache"))
}

/// The audit line of a change to client `id` made by `caller`.
fn audit_change<'r>(rq: &'r Request, event: &'static str, id: &str, caller: &Caller) -> audit::Audit<'r> {
    audit::event(rq, event)
        .with_text("client_id", id)
        .with("caller_user_id", caller.user_id)
        .with_text("caller_client_id", &caller.client_id)
}
