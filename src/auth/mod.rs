//! Authentication and authorisation: access tokens (`jwt`), client secrets
//! and bcrypt (`secrets`), the verified-secret cache (`cache`), revoked
//! tokens (`revocation`), the brute-force limit (`lockout`), the audit log
//! (`audit`), roles (`role`), and the checks protected routes run on their
//! caller (this module). Handlers call these; the token endpoint itself is a
//! resource (`clients::token`).

pub mod audit;
pub mod cache;
pub mod jwt;
pub mod lockout;
pub mod revocation;
pub mod role;
pub mod secrets;
pub mod users;

use serde_json::json;

pub use jwt::{Caller, Claims, JwtKeys, TokenError};
pub use role::Role;

use crate::clock;
use crate::db::Db;
use crate::rest::{ApiError, Request};
use cache::CredentialCache;
use lockout::FailureLimiter;
use revocation::Revocations;
use secrets::{BcryptPool, BcryptSlots, DummyHash};
use users::{Lookup, UserDirectory};

/// The scope every change (create, update, delete) needs.
pub const WRITE_SCOPE: &str = "write";

/// What authenticating clients and callers needs, built once at start-up.
pub struct Auth {
    /// Signs and checks access tokens.
    pub jwt: JwtKeys,
    /// What secrets of unknown clients are checked against.
    pub dummy_hash: DummyHash,
    /// Secrets that already passed bcrypt, so repeated tokens skip it.
    pub credentials: CredentialCache,
    /// How many token requests may run bcrypt at once (half the workers).
    pub bcrypt_slots: BcryptSlots,
    /// Where bcrypt runs: at most half the cores, so floods cannot starve reads.
    pub bcrypt: BcryptPool,
    /// bcrypt cost for new client secrets.
    pub bcrypt_cost: u32,
    /// Every user and their current role.
    pub users: UserDirectory,
    /// Tokens revoked on any replica (kept in step by a background sync).
    pub revocations: Revocations,
    /// Wrong secrets per client ID, for the brute-force limit.
    pub lockout: FailureLimiter,
}

/// The caller named by the request's `Authorization: Bearer` token. The
/// token must not be revoked and its user must still exist (both checks in
/// memory).
pub fn authenticate(auth: &Auth, db: &Db, rq: &Request) -> Result<Caller, ApiError> {
    let Some(value) = rq.header("Authorization") else {
        return Err(unauthorized("authorization_required", "this route needs an Authorization: Bearer <token> header"));
    };
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized("invalid_request", "the Authorization header must use the Bearer scheme"));
    }
    let caller = auth.jwt.verify(token.trim(), clock::unix_seconds(clock::now())).map_err(|err| match err {
        TokenError::Expired => unauthorized("expired_token", "the access token has expired; request a new one"),
        TokenError::Invalid(why) => ApiError::Unauthorized { error: "invalid_token", description: why },
    })?;
    if let Err(revoked) = auth.revocations.check(&caller) {
        audit::event(rq, "token.rejected")
            .with_text("client_id", &caller.client_id)
            .with("user_id", caller.user_id)
            .with("jti", caller.token_id.clone())
            .with("reason", revoked.describe())
            .log_refusal();
        return Err(unauthorized("invalid_token", revoked.describe()));
    }
    match auth.users.lookup(db, caller.user_id)? {
        Lookup::Known => Ok(caller),
        Lookup::Unknown => Err(unauthorized("invalid_token", "the user this token names does not exist")),
    }
}

/// Whether the request carries a bearer token this service signed and that
/// has not expired: signature and expiry only, no revocation or user check
/// and no log line. It only decides where a public read runs (a caller
/// with a token reads from the primary, so it sees its own writes); the
/// public routes answer everyone alike.
pub fn bears_valid_token(auth: &Auth, rq: &Request) -> bool {
    let Some(value) = rq.header("Authorization") else { return false };
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer") && auth.jwt.verify(token.trim(), clock::unix_seconds(clock::now())).is_ok()
}

/// Like [`authenticate`], and the token must carry the `write` scope.
pub fn authenticate_writer(auth: &Auth, db: &Db, rq: &Request) -> Result<Caller, ApiError> {
    let caller = authenticate(auth, db, rq)?;
    require_scope(&caller, WRITE_SCOPE)?;
    Ok(caller)
}

/// Refuses a caller who is not an admin, with the contract's 403 body.
pub fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.role == Role::Admin {
        return Ok(());
    }
    Err(ApiError::Forbidden(json!({
        "error": "Insufficient permissions",
        "required_role": "admin",
        "user_role": caller.role.as_str(),
        "user_id": caller.user_id,
    })))
}

/// Refuses a token without `scope`.
pub fn require_scope(caller: &Caller, scope: &'static str) -> Result<(), ApiError> {
    if caller.has_scope(scope) { Ok(()) } else { Err(ApiError::InsufficientScope { required: scope }) }
}

fn unauthorized(error: &'static str, description: &str) -> ApiError {
    ApiError::Unauthorized { error, description: description.to_owned() }
}
