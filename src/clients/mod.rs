//! OAuth clients: `POST/GET/DELETE /api/v1/clients` (admins only, this
//! module), the token endpoint that authenticates them (`token`), the
//! validation of a new client (`input`) and the queries (`store`).

pub mod input;
pub mod store;
pub mod token;

use serde::Serialize;

use crate::auth::{self, Auth, secrets};
use crate::db::Db;
use crate::rest::{ApiError, Request, Response};
use input::NewClient;

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

/// `POST /api/v1/clients`.
pub fn create(db: &Db, auth: &Auth, rq: &Request) -> Result<Response, ApiError> {
    let caller = auth::authenticate(auth, db, rq)?;
    auth::require_admin(&caller)?;
    auth::require_scope(&caller, auth::WRITE_SCOPE)?;
    let input = NewClient::parse(&rq.json_body()?)?;

    let secret = secrets::new_client_secret().map_err(ApiError::Internal)?;
    let (to_hash, cost) = (secret.clone(), auth.bcrypt_cost);
    let hash = auth.bcrypt.run(move || secrets::hash(&to_hash, cost)).map_err(ApiError::Unavailable)?;
    let hash = hash.map_err(ApiError::Internal)?;
    let mut stored = None;
    for _ in 0..ID_ATTEMPTS {
        let id = secrets::new_client_id().map_err(ApiError::Internal)?;
        if store::insert(db, &id, &hash, &input, caller.user_id)? {
            stored = Some(id);
            break;
        }
    }
    // Never show a secret for a client that was not stored.
    let id = stored.ok_or_else(|| ApiError::Internal(format!("{ID_ATTEMPTS} fresh client IDs were all taken")))?;
    log::info!("client {id} created by user {}", caller.user_id);

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

/// `GET /api/v1/clients`: the caller's clients.
pub fn list(db: &Db, auth: &Auth, rq: &Request) -> Result<Response, ApiError> {
    let caller = auth::authenticate(auth, db, rq)?;
    auth::require_admin(&caller)?;
    Ok(Response::json(200, &store::list_for_user(db, caller.user_id)?))
}

/// `DELETE /api/v1/clients/{id}`: soft delete; the client gets no more tokens.
pub fn delete(db: &Db, auth: &Auth, rq: &Request, id: &str) -> Result<Response, ApiError> {
    let caller = auth::authenticate(auth, db, rq)?;
    auth::require_admin(&caller)?;
    auth::require_scope(&caller, auth::WRITE_SCOPE)?;
    if !store::soft_delete(db, id, caller.user_id)? {
        return Err(ApiError::NotFound("Client not found"));
    }
    auth.credentials.forget(id);
    log::info!("client {id} deleted by user {}", caller.user_id);
    Ok(Response::no_content())
}
