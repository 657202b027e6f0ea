//! `POST /api/v1/oauth/token`: the OAuth2 client-credentials grant
//! (RFC 6749 §4.4). The client authenticates with form fields or with HTTP
//! Basic (§2.3.1: id and secret form-urlencoded, then base64), never both.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use std::sync::atomic::Ordering;

use super::store::{self, TokenClient};
use crate::auth::{Auth, Claims, secrets};
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
struct Credentials {
    id: String,
    secret: String,
    /// Sent with HTTP Basic (a 401 then carries a Basic challenge).
    basic: bool,
}

/// Handles a token request.
pub fn issue(db: &Db, auth: &Auth, rq: &Request) -> Result<Response, ApiError> {
    let basic = basic_credentials(rq)?;
    let params = Params::parse(rq.body()?, is_json(rq))?;
    let used_basic = basic.is_some();

    match params.get("grant_type")? {
        None => return Err(oauth(400, "invalid_request", "grant_type is required", used_basic)),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(oauth(400, "unsupported_grant_type", "only client_credentials is supported", used_basic));
        }
    }
    let credentials = credentials(basic, &params)?;
    let client = authenticate_client(db, auth, &credentials)?;
    if !client.grant_types.split_whitespace().any(|g| g == "client_credentials") {
        return Err(oauth(400, "unauthorized_client", "this client may not use client_credentials", credentials.basic));
    }
    let scope = granted_scope(&client.scopes, params.get("scope")?, credentials.basic)?;

    let now = clock::unix_seconds(clock::now());
    let claims = Claims {
        uid: client.user_id.to_string(),
        role: client.role.as_str(),
        aud: &credentials.id,
        scope: &scope,
        iat: now,
        exp: now + auth.jwt.lifetime,
    };
    let access_token = auth.jwt.issue(&claims).map_err(ApiError::Internal)?;
    let body = TokenResponse { access_token, token_type: "Bearer", expires_in: auth.jwt.lifetime, scope: &scope };
    Ok(Response::json(200, &body).with_header("Cache-Control", "no-store").with_header("Pragma", "no-cache"))
}

fn oauth(status: u16, code: &'static str, description: &str, basic_challenge: bool) -> ApiError {
    ApiError::OAuth { status, code, description: description.to_owned(), basic_challenge }
}

fn invalid_client(basic: bool) -> ApiError {
    oauth(401, "invalid_client", "client authentication failed", basic)
}

fn is_json(rq: &Request) -> bool {
    rq.header("Content-Type").is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// The request parameters. Each may appear once (RFC 6749 §3.2).
struct Params(Vec<(String, String)>);

impl Params {
    /// Form fields, or a JSON object of strings for clients that send JSON.
    fn parse(body: &[u8], json: bool) -> Result<Params, ApiError> {
        if !json {
            return Ok(Params(form_pairs(body)));
        }
        let invalid = || oauth(400, "invalid_request", "the body must be a form or a JSON object of strings", false);
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| invalid())?;
        let object = value.as_object().ok_or_else(invalid)?;
        let pairs = object
            .iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())).ok_or_else(invalid))
            .collect::<Result<_, _>>()?;
        Ok(Params(pairs))
    }

    /// The value of `name`; empty counts as absent, twice is an error.
    fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(oauth(400, "invalid_request", &format!("{name} appears more than once"), false));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }
}

/// Id and secret from `Authorization: Basic`, if that is what the header holds.
fn basic_credentials(rq: &Request) -> Result<Option<(String, String)>, ApiError> {
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

fn credentials(basic: Option<(String, String)>, params: &Params) -> Result<Credentials, ApiError> {
    let (form_id, form_secret) = (params.get("client_id")?, params.get("client_secret")?);
    match basic {
        Some(_) if form_id.is_some() || form_secret.is_some() => Err(oauth(
            400,
            "invalid_request",
            "send the client credentials either with HTTP Basic or in the body, not both",
            true,
        )),
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => Ok(Credentials { id, secret, basic: true }),
        Some(_) => Err(oauth(400, "invalid_request", "client_id and client_secret are required", true)),
        None => match (form_id, form_secret) {
            (Some(id), Some(secret)) => Ok(Credentials { id: id.to_owned(), secret: secret.to_owned(), basic: false }),
            _ => Err(oauth(400, "invalid_request", "client_id and client_secret are required", false)),
        },
    }
}

/// The client, when the secret is right. Unknown, deleted and wrong-secret
/// clients cost the same bcrypt work and get the same answer; a secret that
/// already passed bcrypt against the stored hash skips it (see `cache`).
fn authenticate_client(db: &Db, auth: &Auth, credentials: &Credentials) -> Result<TokenClient, ApiError> {
    let (id, secret) = (credentials.id.as_str(), credentials.secret.as_str());
    // A secret that is not known good needs bcrypt: its slot is taken before
    // anything else, so that when every slot is busy (a flood of guesses)
    // the refusal costs no database query either. Refused alike for known
    // and unknown clients: the answer says nothing about which IDs exist.
    let mut slot = None;
    if !auth.credentials.may_be_verified(id, secret) {
        slot = Some(take_bcrypt_slot(auth, credentials.basic)?);
    }
    let client = store::find_for_token(db, id)?;
    let stored_hash = client.as_ref().map(|c| c.secret_hash.as_str());
    let verified = match stored_hash {
        Some(hash) if auth.credentials.is_verified(id, secret, hash) => {
            metrics::CREDENTIAL_CACHE_HITS.fetch_add(1, Ordering::Relaxed);
            true
        }
        _ => {
            metrics::CREDENTIAL_CACHE_MISSES.fetch_add(1, Ordering::Relaxed);
            // The cached secret was for a hash that has since changed.
            let _slot = match slot.take() {
                Some(slot) => slot,
                None => take_bcrypt_slot(auth, credentials.basic)?,
            };
            let (owned_secret, owned_hash) = (secret.to_owned(), stored_hash.map(str::to_owned));
            let dummy = auth.dummy_hash.get().to_owned();
            let verified = auth
                .bcrypt
                .run(move || secrets::verify(&owned_secret, owned_hash.as_deref(), &dummy))
                .map_err(|why| {
                    log::warn!("token request refused: {why}");
                    oauth(
                        503,
                        "temporarily_unavailable",
                        "the service is too busy to check secrets; retry shortly",
                        credentials.basic,
                    )
                })?;
            if let (Some(hash), true) = (stored_hash, verified) {
                auth.credentials.remember(id, secret, hash);
            }
            verified
        }
    };
    match client {
        Some(client) if verified => Ok(client),
        _ => Err(invalid_client(credentials.basic)),
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
    fn a_repeated_parameter_is_refused() {
        let params = Params::parse(b"grant_type=client_credentials&grant_type=x", false).unwrap();
        assert!(params.get("grant_type").is_err());
    }
}
