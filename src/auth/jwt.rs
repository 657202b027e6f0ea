//! Access tokens: HS512 JWTs signed with `JWT_SECRET`. Signing and
//! signature checks are the `jsonwebtoken` crate's; this module pins the
//! algorithm and checks the claims the contract lists.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Role;

/// How far in the future `iat`/`nbf` may lie, for clocks of replicas that
/// disagree by a little.
const CLOCK_SKEW_SECONDS: u64 = 5;

/// The longest `jti` accepted (the service issues 22 characters).
const MAX_JTI_BYTES: usize = 64;

/// The claims of an access token: the contract's, in its order, then what
/// revocation needs (RFC 9068's `client_id`, a unique `jti`, and `gen`, the
/// client's secret generation when the token was issued).
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    pub uid: String,
    pub role: &'a str,
    pub aud: &'a str,
    pub scope: &'a str,
    pub iat: u64,
    pub exp: u64,
    pub client_id: &'a str,
    pub jti: &'a str,
    pub r#gen: u64,
}

/// What a token may carry; each field is checked after decoding, so a
/// missing or ill-typed claim is an `invalid_token` with a useful description.
#[derive(Debug, Deserialize)]
struct IncomingClaims {
    uid: Option<Value>,
    role: Option<Value>,
    aud: Option<Value>,
    scope: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
    exp: Option<Value>,
    client_id: Option<Value>,
    jti: Option<Value>,
    r#gen: Option<Value>,
}

/// The caller a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: i64,
    pub role: Role,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// The token's own ID (`jti`); tokens from before revocation existed have none.
    pub token_id: Option<String>,
    /// The client's secret generation the token was issued under (`gen`, 0 when absent).
    pub generation: u64,
    /// When the token expires (`exp`, Unix seconds).
    pub expires_at: u64,
}

impl Caller {
    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// `exp` has passed.
    Expired,
    /// Anything else: malformed, wrong algorithm, bad signature, bad claims.
    Invalid(String),
}

/// The keys and rules for issuing and checking tokens.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Token lifetime in seconds (`JWT_EXPIRATION`).
    pub lifetime: u64,
}

impl JwtKeys {
    /// Keys for the HMAC secret `secret`.
    pub fn new(secret: &[u8], lifetime: u64) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS512);
        // Only HS512: `alg: none`, HS256 with the same key, RS*... are refused.
        validation.algorithms = vec![Algorithm::HS512];
        // The time claims are checked below against the caller's clock (one
        // `now` for every check), so the library only checks the signature.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        // Any client may be the audience; `aud` only names the token's client.
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            lifetime,
        }
    }

    /// A signed token for `claims`.
    pub fn issue(&self, claims: &Claims<'_>) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS512), claims, &self.encoding)
            .map_err(|e| format!("cannot sign a token: {e}"))
    }

    /// Checks `token` at time `now` (Unix seconds) and returns its caller.
    pub fn verify(&self, token: &str, now: u64) -> Result<Caller, TokenError> {
        let data =
            jsonwebtoken::decode::<IncomingClaims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidSignature => TokenError::Invalid("the signature does not verify".into()),
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        TokenError::Invalid("the token must be signed with HS512".into())
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        TokenError::Invalid(format!("the {claim} claim is missing"))
                    }
                    _ => TokenError::Invalid("the token is malformed".into()),
                }
            })?;
        check_claims(data.claims, now)
    }
}

fn invalid(text: &str) -> TokenError {
    TokenError::Invalid(text.to_owned())
}

fn check_claims(claims: IncomingClaims, now: u64) -> Result<Caller, TokenError> {
    let exp = seconds(claims.exp.as_ref()).ok_or_else(|| invalid("exp must be a number of seconds"))?;
    if exp <= now {
        return Err(TokenError::Expired);
    }
    for (name, value) in [("iat", &claims.iat), ("nbf", &claims.nbf)] {
        if let Some(value) = value {
            let at = seconds(Some(value)).ok_or_else(|| TokenError::Invalid(format!("{name} must be a number")))?;
            if at > now + CLOCK_SKEW_SECONDS {
                return Err(TokenError::Invalid(format!("{name} is in the future")));
            }
        }
    }
    let user_id = match &claims.uid {
        Some(Value::String(text)) => text.parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .filter(|&id| id > 0)
    .ok_or_else(|| invalid("uid must be a positive integer"))?;
    let role = claims
        .role
        .as_ref()
        .and_then(Value::as_str)
        .and_then(Role::parse)
        .ok_or_else(|| invalid("role must be admin or user"))?;
    let client_id = match (&claims.client_id, &claims.aud) {
        (Some(Value::String(id)), _) => id.clone(),
        (Some(_), _) => return Err(invalid("client_id must be a string")),
        (None, Some(Value::String(aud))) => aud.clone(),
        (None, Some(Value::Array(auds))) => auds.first().and_then(Value::as_str).unwrap_or_default().to_owned(),
        (None, _) => String::new(),
    };
    let token_id = match &claims.jti {
        None => None,
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => Some(jti.clone()),
        Some(_) => return Err(invalid("jti must be a string of 1 to 64 bytes")),
    };
    let generation = match &claims.r#gen {
        None => 0,
        Some(value) => value.as_u64().ok_or_else(|| invalid("gen must be a whole number"))?,
    };
    let scopes = match &claims.scope {
        None => Vec::new(),
        Some(Value::String(scope)) => scope.split_whitespace().map(str::to_owned).collect(),
        Some(_) => return Err(invalid("scope must be a string")),
    };
    Ok(Caller { user_id, role, client_id, scopes, token_id, generation, expires_at: exp })
}

fn seconds(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| value.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const KEY: &[u8] = b"unit-test-key-unit-test-key-unit-test-key";
    const NOW: u64 = 1_700_000_000;

    fn keys() -> JwtKeys {
        JwtKeys::new(KEY, 3600)
    }

    fn token(claims: &Value, alg: Algorithm, key: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
    }

    fn good() -> Value {
        json!({"uid":"1","role":"admin","aud":"dev-client","scope":"read write","iat":NOW,"exp":NOW + 3600})
    }

    #[test]
    fn an_issued_token_verifies_to_its_caller() {
        let keys = keys();
        let claims = Claims {
            uid: "7".into(),
            role: "user",
            aud: "c",
            scope: "read",
            iat: NOW,
            exp: NOW + 10,
            client_id: "c",
            jti: "j1",
            r#gen: 3,
        };
        let caller = keys.verify(&keys.issue(&claims).unwrap(), NOW).unwrap();
        assert_eq!(
            caller,
            Caller {
                user_id: 7,
                role: Role::User,
                client_id: "c".into(),
                scopes: vec!["read".into()],
                token_id: Some("j1".into()),
                generation: 3,
                expires_at: NOW + 10,
            }
        );
    }

    #[test]
    fn a_token_without_revocation_claims_names_its_client_by_audience() {
        let caller = keys().verify(&token(&good(), Algorithm::HS512, KEY), NOW).unwrap();
        assert_eq!((caller.client_id.as_str(), caller.token_id, caller.generation), ("dev-client", None, 0));
    }

    #[test]
    fn a_token_with_alg_none_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(good().to_string());
        assert!(matches!(keys().verify(&format!("{header}.{payload}."), NOW), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn an_hs256_token_signed_with_the_same_key_is_refused() {
        let hs256 = token(&good(), Algorithm::HS256, KEY);
        assert!(matches!(keys().verify(&hs256, NOW), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let other = token(&good(), Algorithm::HS512, b"another-key");
        assert!(matches!(keys().verify(&other, NOW), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn an_expired_token_is_expired() {
        let mut claims = good();
        claims["exp"] = json!(NOW - 1);
        assert_eq!(keys().verify(&token(&claims, Algorithm::HS512, KEY), NOW), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_expiring_now_is_expired() {
        let mut claims = good();
        claims["exp"] = json!(NOW);
        assert_eq!(keys().verify(&token(&claims, Algorithm::HS512, KEY), NOW), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let mut claims = good();
        claims["iat"] = json!(NOW + 60);
        assert!(matches!(keys().verify(&token(&claims, Algorithm::HS512, KEY), NOW), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn a_token_not_valid_before_a_future_time_is_refused() {
        let mut claims = good();
        claims["nbf"] = json!(NOW + 60);
        assert!(matches!(keys().verify(&token(&claims, Algorithm::HS512, KEY), NOW), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn claims_that_break_the_rules_are_refused() {
        for (claim, value) in [
            ("uid", json!(null)),
            ("uid", json!("0")),
            ("uid", json!("-3")),
            ("uid", json!("abc")),
            ("role", json!("superuser")),
            ("role", json!(null)),
            ("exp", json!(null)),
            ("jti", json!(7)),
            ("jti", json!("")),
            ("gen", json!(-1)),
            ("gen", json!("2")),
            ("client_id", json!(5)),
        ] {
            let mut claims = good();
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(claim);
            } else {
                claims[claim] = value.clone();
            }
            let result = keys().verify(&token(&claims, Algorithm::HS512, KEY), NOW);
            assert!(matches!(result, Err(TokenError::Invalid(_))), "{claim}={value}: {result:?}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        for garbage in ["", "abc", "a.b.c", "....."] {
            assert!(matches!(keys().verify(garbage, NOW), Err(TokenError::Invalid(_))), "{garbage}");
        }
    }
}
