//! `POST /api/v1/oauth/token`: the OAuth2 client-credentials grant
//! (RFC 6749 §4.4). The client authenticates with form fields or with HTTP
//! Basic (§2.3.1: id and secret form-urlencoded, then base64), never both.
//! Client authentication (this module's [`authenticate_client`]) is shared
//! with the revocation endpoint (`revoke`).

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;

use std::sync::atomic::Ordering;

use super::store::{self, TokenClient};
use crate::auth::{Auth, Claims, audit, secrets};
use crate::db::Db;
use crate::rest::request::form_pairs;
use crate::rest::{ApiError, Request, Response};
use crate::{clock, metrics};

/// The success body (RFC 6749 §5.1).
#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: &'a str,
}

/// The client's credentials and where they came from.
pub(super) struct Credentials {
    pub id: String,
    secret: String,
    /// Sent with HTTP Basic (a 401 then carries a Basic challenge).
    pub basic: bool,
}

/// Which of the client's secrets was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SecretUsed {
    /// The current one.
    Current,
    /// The one a rotation replaced, during its grace period (until then).
    Previous(SystemTime),
}

/// Handles a token request; every refusal is written to the audit log.
pub fn issue(db: &Db, auth: &Auth, rq: &Request) -> Result<Response, ApiError> {
    let mut presented = None;
    let result = grant(db, auth, rq, &mut presented);
    if let Err(err) = &result {
        audit_refusal(rq, "token.refused", presented.as_deref(), err);
    }
    result
}

fn grant(db: &Db, auth: &Auth, rq: &Request, presented: &mut Option<String>) -> Result<Response, ApiError> {
    let basic = basic_credentials(rq)?;
    let params = Params::parse(rq.body()?, is_json(rq))?;
    let used_basic = basic.is_some();
    *presented = basic.as_ref().map(|(id, _)| id.clone()).or(params.get("client_id").ok().flatten().map(str::to_owned));

    match params.get("grant_type")? {
        None => return Err(oauth(400, "invalid_request", "grant_type is required", used_basic)),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(oauth(400, "unsupported_grant_type", "only client_credentials is supported", used_basic));
        }
    }
    let Some(credentials) = credentials(basic, &params)? else {
        return Err(oauth(400, "invalid_request", "client_id and client_secret are required", used_basic));
    };
    let (client, used) = authenticate_client(db, auth, rq, &credentials)?;
    if !client.grant_types.split_whitespace().any(|g| g == "client_credentials") {
        return Err(oauth(400, "unauthorized_client", "this client may not use client_credentials", credentials.basic));
    }
    let scope = granted_scope(&client.scopes, params.get("scope")?, credentials.basic)?;

    let now = clock::unix_seconds(clock::now());
    let mut exp = now + auth.jwt.lifetime;
    if let SecretUsed::Previous(until) = used {
        // The replaced secret's power ends with its grace period.
        exp = exp.min(clock::unix_seconds(until).max(now + 1));
    }
    let jti = URL_SAFE_NO_PAD.encode(secrets::random_bytes::<16>().map_err(ApiError::Internal)?);
    let claims = Claims {
        uid: client.user_id.to_string(),
        role: client.role.as_str(),
        aud: &credentials.id,
        scope: &scope,
        iat: now,
        exp,
        client_id: &credentials.id,
        jti: &jti,
        r#gen: client.generation,
    };
    let access_token = auth.jwt.issue(&claims).map_err(ApiError::Internal)?;
    audit::event(rq, "token.issued")
        .with_text("client_id", &credentials.id)
        .with("user_id", client.user_id)
        .with("scope", scope.as_str())
        .with("jti", jti.as_str())
        .with("expires_at", exp)
        .with("secret", if used == SecretUsed::Current { "current" } else { "previous" })
        .log();
    let body = TokenResponse { access_token, token_type: "Bearer", expires_in: exp - now, scope: &scope };
    Ok(Response::json(200, &body).with_header("Cache-Control", "no-store").with_header("Pragma", "no-cache"))
}

/// Writes the audit line of a refused request of the token or revocation
/// endpoint: the OAuth error and its description, never what was presented
/// beyond the client ID.
pub(super) fn audit_refusal(rq: &Request, event: &'static str, client_id: Option<&str>, err: &ApiError) {
    let (error, reason) = match err {
        // Answered without any check: the `client.locked` line and the metrics stand for these.
        ApiError::TooManyAttempts { .. } | ApiError::OAuth { status: 503, .. } => return,
        ApiError::OAuth { code, description, .. } => (*code, description.clone()),
        ApiError::Unavailable(_) => ("temporarily_unavailable", "the database is not answering".into()),
        ApiError::PayloadTooLarge { .. } => ("invalid_request", "the body is too large".into()),
        _ => ("server_error", "the request failed".into()),
    };
    let line = audit::event(rq, event).with("error", error).with("reason", reason);
    match client_id {
        Some(id) => line.with_text("client_id", id),
        None => line.with("client_id", serde_json::Value::Null),
    }
    .log_refusal();
}

pub(super) fn oauth(status: u16, code: &'static str, description: &str, basic_challenge: bool) -> ApiError {
    ApiError::OAuth { status, code, description: description.to_owned(), basic_challenge }
}

pub(super) fn invalid_client(basic: bool) -> ApiError {
    oauth(401, "invalid_client", "client authentication failed", basic)
}

pub(super) fn is_json(rq: &Request) -> bool {
    rq.header("Content-Type").is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// The request parameters. Each may appear once (RFC 6749 §3.2).
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    /// Form fields, or a JSON object of strings for clients that send JSON.
    /// A NUL character in any name or value is refused, as on every route.
    pub(super) fn parse(body: &[u8], json: bool) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = if json {
            let invalid =
                || oauth(400, "invalid_request", "the body must be a form or a JSON object of strings", false);
            let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| invalid())?;
            let object = value.as_object().ok_or_else(invalid)?;
            object
                .iter()
                .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())).ok_or_else(invalid))
                .collect::<Result<_, _>>()?
        } else {
            form_pairs(body)
        };
        if pairs.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
            return Err(oauth(400, "invalid_request", "a parameter contains a NUL character", false));
        }
        Ok(Params(pairs))
    }

    /// The value of `name`; empty counts as absent, twice is an error.
    pub(super) fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(oauth(400, "invalid_request", &format!("{name} appears more than once"), false));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }
}

/// Id and secret from `Authorization: Basic`, if that is what the header holds.
pub(super) fn basic_credentials(rq: &Request) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = rq.header("Authorization") else { return Ok(None) };
    let value = value.trim();
    let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let malformed = || oauth(401, "invalid_client", "the Basic credentials are malformed", true);
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

/// Undoes the form-urlencoding RFC 6749 §2.3.1 applies before base64.
fn form_decode(text: &str) -> String {
    form_urlencoded::parse(format!("x={text}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// The client credentials of a request, where a request without any is told
/// apart (the token endpoint answers it 400, the revocation endpoint 401).
pub(super) fn credentials(basic: Option<(String, String)>, params: &Params) -> Result<Option<Credentials>, ApiError> {
    let (form_id, form_secret) = (params.get("client_id")?, params.get("client_secret")?);
    match basic {
        Some(_) if form_id.is_some() || form_secret.is_some() => Err(oauth(
            400,
            "invalid_request",
            "send the client credentials either with HTTP Basic or in the body, not both",
            true,
        )),
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => Ok(Some(Credentials { id, secret, basic: true })),
        Some(_) => Ok(None),
        None => Ok(match (form_id, form_secret) {
            (Some(id), Some(secret)) => {
                Some(Credentials { id: id.to_owned(), secret: secret.to_owned(), basic: false })
            }
            _ => None,
        }),
    }
}

/// The client, when the secret is right, and which of its secrets it was.
/// Unknown, deleted and wrong-secret clients cost the same bcrypt work and
/// get the same answer; a secret that already passed bcrypt against the
/// stored hash skips it (see `cache`). A client ID with too many recent
/// failures is refused (429) before any of that, unless the secret is one
/// the cache already knows good (so guessing cannot lock out a client that
/// keeps presenting its right secret).
pub(super) fn authenticate_client(
    db: &Db,
    auth: &Auth,
    rq: &Request,
    credentials: &Credentials,
) -> Result<(TokenClient, SecretUsed), ApiError> {
    let (id, secret) = (credentials.id.as_str(), credentials.secret.as_str());
    // A secret that is not known good needs bcrypt: its slot is taken before
    // anything else, so that when every slot is busy (a flood of guesses)
    // the refusal costs no database query either. Refused alike for known
    // and unknown clients: the answer says nothing about which IDs exist.
    let mut slot = None;
    if !auth.credentials.may_be_verified(id, secret) {
        if let Some(wait) = auth.lockout.locked_for(id) {
            metrics::TOKEN_LOCKOUT_REFUSALS.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::TooManyAttempts { retry_after_seconds: wait.as_secs() + 1 });
        }
        slot = Some(take_bcrypt_slot(auth, credentials.basic)?);
    }
    let client = store::find_for_token(db, id)?;
    let candidates: Vec<(&str, SecretUsed)> = match &client {
        Some(c) => std::iter::once((c.secret_hash.as_str(), SecretUsed::Current))
            .chain(c.previous.as_ref().map(|(hash, until)| (hash.as_str(), SecretUsed::Previous(*until))))
            .collect(),
        None => Vec::new(),
    };
    let mut used = candidates.iter().find(|(hash, _)| auth.credentials.is_verified(id, secret, hash)).map(|c| c.1);
    if used.is_some() {
        metrics::CREDENTIAL_CACHE_HITS.fetch_add(1, Ordering::Relaxed);
    } else {
        metrics::CREDENTIAL_CACHE_MISSES.fetch_add(1, Ordering::Relaxed);
        // The cached secret was for a hash that has since changed.
        let _slot = match slot.take() {
            Some(slot) => slot,
            None => take_bcrypt_slot(auth, credentials.basic)?,
        };
        let hashes: Vec<String> = candidates.iter().map(|(hash, _)| (*hash).to_owned()).collect();
        let (owned_secret, dummy) = (secret.to_owned(), auth.dummy_hash.get().to_owned());
        let matched = auth
            .bcrypt
            .run(move || {
                if hashes.is_empty() {
                    secrets::verify(&owned_secret, None, &dummy);
                    return None;
                }
                hashes.iter().position(|hash| secrets::verify(&owned_secret, Some(hash), &dummy))
            })
            .map_err(|why| {
                log::warn!("token request refused: {why}");
                oauth(
                    503,
                    "temporarily_unavailable",
                    "the service is too busy to check secrets; retry shortly",
                    credentials.basic,
                )
            })?;
        if let Some(index) = matched {
            auth.credentials.remember(id, secret, candidates[index].0);
            used = Some(candidates[index].1);
        }
    }
    match (client, used) {
        (Some(client), Some(used)) => Ok((client, used)),
        _ => {
            metrics::TOKEN_AUTH_FAILURES.fetch_add(1, Ordering::Relaxed);
            if auth.lockout.record_failure(id) {
                let seconds = auth.lockout.locked_for(id).map_or(0, |d| d.as_secs() + 1);
                audit::event(rq, "client.locked").with_text("client_id", id).with("retry_after_seconds", seconds).log();
            }
            Err(invalid_client(credentials.basic))
        }
    }
}

/// A bcrypt slot, or the 503 that says to retry shortly.
fn take_bcrypt_slot(auth: &Auth, basic: bool) -> Result<secrets::BcryptSlot<'_>, ApiError> {
    auth.bcrypt_slots.try_take().ok_or_else(|| {
        metrics::BCRYPT_SLOTS_EXHAUSTED.fetch_add(1, Ordering::Relaxed);
        oauth(503, "temporarily_unavailable", "too many client authentications in progress; retry shortly", basic)
    })
}

/// The scopes the token gets: those asked for, which must all be the
/// client's, or else all of the client's.
fn granted_scope(client_scopes: &str, requested: Option<&str>, basic: bool) -> Result<String, ApiError> {
    let allowed: Vec<&str> = client_scopes.split_whitespace().collect();
    let Some(requested) = requested else { return Ok(allowed.join(" ")) };
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested.split_whitespace() {
        if !allowed.contains(&scope) {
            return Err(oauth(400, "invalid_scope", &format!("the client may not request the scope {scope:?}"), basic));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    if granted.is_empty() {
        return Ok(allowed.join(" "));
    }
    Ok(granted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab%25c+d"), "a:b%c d");
        assert_eq!(form_decode("caf%C3%A9"), "café");
    }

    #[test]
    fn a_requested_scope_narrows_the_token() {
        assert_eq!(granted_scope("read write", Some("read"), false).unwrap(), "read");
        assert_eq!(granted_scope("read write", None, false).unwrap(), "read write");
        assert_eq!(granted_scope("read write", Some("write read write"), false).unwrap(), "write read");
    }

    #[test]
    fn a_scope_beyond_the_clients_is_refused() {
        assert!(matches!(
            granted_scope("read", Some("read admin"), false),
            Err(ApiError::OAuth { code: "invalid_scope", .. })
        ));
    }

    #[test]
    fn a_nul_character_in_any_parameter_is_refused() {
        assert!(Params::parse(b"grant_type=client_credentials&x=a%00b", false).is_err());
        assert!(Params::parse(br#"{"grant_type":"client_credentials","x\u0000":"b"}"#, true).is_err());
        assert!(Params::parse(b"grant_type=client_credentials&x=ab", false).is_ok());
    }

    #[test]
    fn a_repeated_parameter_is_refused() {
        let params = Params::parse(b"grant_type=client_credentials&grant_type=x", false).unwrap();
        assert!(params.get("grant_type").is_err());
    }
}
