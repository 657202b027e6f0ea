//! `POST /api/v1/oauth/revoke`: token revocation (RFC 7009). The client
//! authenticates as at the token endpoint (form fields or HTTP Basic, with
//! the same brute-force limit) and names one of its own access tokens in
//! `token`; that token is refused everywhere within a second or so. The
//! answer is 200 whether or not there was anything to revoke (§2.2): an
//! invalid, expired or foreign token changes nothing.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::token::{self, Params};
use crate::auth::{Auth, TokenError, audit, revocation};
use crate::db::Db;
use crate::rest::{ApiError, Request, Response};
use crate::{clock, metrics};

/// Handles a revocation request; refusals are written to the audit log.
pub fn revoke(db: &Db, auth: &Auth, rq: &Request) -> Result<Response, ApiError> {
    let mut presented = None;
    let result = revoke_named(db, auth, rq, &mut presented);
    if let Err(err) = &result {
        token::audit_refusal(rq, "token.revoke_refused", presented.as_deref(), err);
    }
    result
}

/// What a revocation request did, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Revoked,
    /// Not a token this service issued, or already expired: nothing to do.
    NotFound,
    /// Issued to another client: left alone.
    OtherClient,
    /// A token from before tokens had IDs: it cannot be revoked on its own.
    NoTokenId,
}

fn revoke_named(db: &Db, auth: &Auth, rq: &Request, presented: &mut Option<String>) -> Result<Response, ApiError> {
    let basic = token::basic_credentials(rq)?;
    let params = Params::parse(rq.body()?, token::is_json(rq))?;
    *presented = basic.as_ref().map(|(id, _)| id.clone()).or(params.get("client_id").ok().flatten().map(str::to_owned));
    let used_basic = basic.is_some();
    // No client authentication at all is an authentication failure here
    // (RFC 6749 §5.2: `invalid_client`), not a malformed request.
    let Some(credentials) = token::credentials(basic, &params)? else {
        return Err(token::oauth(401, "invalid_client", "client authentication is required", used_basic));
    };
    let (_client, _) = token::authenticate_client(db, auth, rq, &credentials)?;
    let Some(named) = params.get("token")? else {
        return Err(token::oauth(400, "invalid_request", "token is required", credentials.basic));
    };
    // token_type_hint is only a hint (§2.1): access tokens are all there is.

    let now = clock::unix_seconds(clock::now());
    let (outcome, jti) = match auth.jwt.verify(named, now) {
        Err(TokenError::Expired | TokenError::Invalid(_)) => (Outcome::NotFound, None),
        Ok(caller) if caller.client_id != credentials.id => (Outcome::OtherClient, None),
        Ok(caller) => match caller.token_id {
            None => (Outcome::NoTokenId, None),
            Some(jti) => {
                db.transaction(|tx| revocation::store_token(tx, &jti, &credentials.id, caller.expires_at))?;
                auth.revocations.token_revoked(&jti, caller.expires_at);
                metrics::REVOCATIONS.fetch_add(1, Ordering::Relaxed);
                (Outcome::Revoked, Some(jti))
            }
        },
    };
    audit::event(rq, "token.revoked")
        .with_text("client_id", &credentials.id)
        .with("jti", jti)
        .with(
            "outcome",
            match outcome {
                Outcome::Revoked => "revoked",
                Outcome::NotFound => "not_found",
                Outcome::OtherClient => "other_client",
                Outcome::NoTokenId => "no_token_id",
            },
        )
        .log();
    Ok(Response::json(200, &json!({})).with_header("Cache-Control", "no-store").with_header("Pragma", "no-cache"))
}
