//! Authentication and authorisation: the token endpoint (`token`), access
//! tokens (`jwt`), client secrets (`secrets`), and the checks protected routes
//! run on their caller (this module).

pub mod cache;
pub mod jwt;
pub mod secrets;
pub mod token;

use serde_json::json;

pub use jwt::{Caller, JwtKeys, TokenError};

use crate::app::AppState;
use crate::clock;
use crate::http::ApiError;
use crate::http::request::header;
use crate::users::Role;

/// The scope every change (create, update, delete) needs.
pub const WRITE_SCOPE: &str = "write";

/// The caller named by the request's `Authorization: Bearer` token.
pub fn authenticate(state: &AppState, rq: &tiny_http::Request) -> Result<Caller, ApiError> {
    let Some(value) = header(rq, "Authorization") else {
        return Err(unauthorized("authorization_required", "this route needs an Authorization: Bearer <token> header"));
    };
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized("invalid_request", "the Authorization header must use the Bearer scheme"));
    }
    state.jwt.verify(token.trim(), clock::unix_seconds(clock::now())).map_err(|err| match err {
        TokenError::Expired => unauthorized("expired_token", "the access token has expired; request a new one"),
        TokenError::Invalid(why) => ApiError::Unauthorized { error: "invalid_token", description: why },
    })
}

/// Like [`authenticate`], and the token must carry the `write` scope.
pub fn authenticate_writer(state: &AppState, rq: &tiny_http::Request) -> Result<Caller, ApiError> {
    let caller = authenticate(state, rq)?;
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
