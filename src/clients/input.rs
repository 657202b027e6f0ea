//! A new client's fields, validated: `POST /api/v1/clients`'s body; and a
//! rotation's: `POST /api/v1/clients/{id}/secret`'s.

use serde_json::{Map, Value};

use crate::rest::ApiError;

/// Scopes of a client created without `scopes`.
pub const DEFAULT_SCOPES: &str = "read write";
/// The only grant this service implements.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";

/// A new client's fields, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClient {
    pub name: String,
    pub domain: String,
    pub scopes: String,
    pub grant_types: String,
    pub redirect_uri: String,
}

impl NewClient {
    /// Validates a create body: `name` required; `domain`, `scopes`,
    /// `grant_types` (a string or an array of strings) and `redirect_uri` optional.
    pub fn parse(body: &Value) -> Result<NewClient, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::InvalidBody("the body must be a JSON object".into()));
        };
        let name = text(object, "name")?.map(str::trim).unwrap_or_default();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(field_error("name", "name is required and must be 1 to 100 characters"));
        }
        let domain = text(object, "domain")?.unwrap_or_default().trim();
        if domain.chars().count() > 255 {
            return Err(field_error("domain", "domain must be at most 255 characters"));
        }
        let redirect_uri = text(object, "redirect_uri")?.unwrap_or_default().trim();
        if redirect_uri.chars().count() > 2000 {
            return Err(field_error("redirect_uri", "redirect_uri must be at most 2000 characters"));
        }
        let scopes = words(object, "scopes")?.unwrap_or_else(|| DEFAULT_SCOPES.split(' ').map(str::to_owned).collect());
        if scopes.is_empty() || scopes.len() > 20 || !scopes.iter().all(|s| is_scope_token(s)) {
            return Err(field_error("scopes", "scopes must be 1 to 20 space-separated scope names"));
        }
        let grant_types = words(object, "grant_types")?.unwrap_or_else(|| vec![CLIENT_CREDENTIALS.to_owned()]);
        if grant_types.is_empty() || grant_types.iter().any(|g| g != CLIENT_CREDENTIALS) {
            return Err(field_error("grant_types", "grant_types may only contain client_credentials"));
        }
        Ok(NewClient {
            name: name.to_owned(),
            domain: domain.to_owned(),
            scopes: dedup(scopes).join(" "),
            grant_types: dedup(grant_types).join(" "),
            redirect_uri: redirect_uri.to_owned(),
        })
    }
}

/// The longest grace period a rotation may give the old secret: one day.
pub const MAX_GRACE_SECONDS: u64 = 86_400;

/// A rotation's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// How long the replaced secret keeps working; 0: not at all.
    pub grace_seconds: u64,
}

impl Rotation {
    /// Validates a rotation body: none at all, or a JSON object with an
    /// optional `grace_seconds` (a whole number from 0 to 86400).
    pub fn parse(body: &[u8]) -> Result<Rotation, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Rotation { grace_seconds: 0 });
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::InvalidBody(format!("the body is not valid JSON: {e}")))?;
        let Some(object) = value.as_object() else {
            return Err(ApiError::InvalidBody("the body must be a JSON object".into()));
        };
        let grace_seconds = match object.get("grace_seconds") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|&s| s <= MAX_GRACE_SECONDS)
                .ok_or_else(|| field_error("grace_seconds", "grace_seconds must be a whole number from 0 to 86400"))?,
            Some(_) => {
                return Err(ApiError::WrongType {
                    field: "grace_seconds",
                    message: "grace_seconds must be a number".into(),
                });
            }
        };
        Ok(Rotation { grace_seconds })
    }
}

fn field_error(field: &'static str, message: &str) -> ApiError {
    ApiError::InvalidField { field, message: message.to_owned() }
}

/// An optional string field; `null` counts as absent.
fn text<'a>(object: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, ApiError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::WrongType { field, message: format!("{field} must be a string") }),
    }
}

/// An optional list of words: a space-separated string or an array of
/// strings. `null` is refused, as the OpenAPI document says: leaving the
/// field out is how a client asks for the default.
fn words(object: &Map<String, Value>, field: &'static str) -> Result<Option<Vec<String>>, ApiError> {
    let wrong = || ApiError::WrongType {
        field,
        message: format!("{field} must be a string or an array of strings (leave it out for the default)"),
    };
    match object.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.split_whitespace().map(str::to_owned).collect())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(|s| s.trim().to_owned()).ok_or_else(wrong))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Some(v.into_iter().filter(|s| !s.is_empty()).collect())),
        Some(_) => Err(wrong()),
    }
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// A scope name as RFC 6749 §3.3 allows: printable ASCII except space, `"` and `\`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= 64
        && scope.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_client_without_optional_fields_gets_the_defaults() {
        let client = NewClient::parse(&json!({"name": "ci"})).unwrap();
        assert_eq!(client.scopes, "read write");
        assert_eq!(client.grant_types, "client_credentials");
        assert_eq!((client.domain.as_str(), client.redirect_uri.as_str()), ("", ""));
    }

    #[test]
    fn a_client_needs_a_name() {
        for body in [json!({}), json!({"name": "  "}), json!({"name": "x".repeat(101)})] {
            assert!(matches!(NewClient::parse(&body), Err(ApiError::InvalidField { field: "name", .. })), "{body}");
        }
    }

    #[test]
    fn scopes_may_be_a_string_or_an_array() {
        assert_eq!(NewClient::parse(&json!({"name": "a", "scopes": "read"})).unwrap().scopes, "read");
        assert_eq!(NewClient::parse(&json!({"name": "a", "scopes": ["read", "write"]})).unwrap().scopes, "read write");
    }

    #[test]
    fn a_scope_with_a_quote_is_refused() {
        let result = NewClient::parse(&json!({"name": "a", "scopes": "read \"x\""}));
        assert!(matches!(result, Err(ApiError::InvalidField { field: "scopes", .. })));
    }

    #[test]
    fn only_client_credentials_may_be_granted() {
        let result = NewClient::parse(&json!({"name": "a", "grant_types": ["authorization_code"]}));
        assert!(matches!(result, Err(ApiError::InvalidField { field: "grant_types", .. })));
    }

    #[test]
    fn null_scopes_or_grant_types_are_refused_not_defaulted() {
        for field in ["scopes", "grant_types"] {
            let result = NewClient::parse(&json!({"name": "a", field: null}));
            assert!(matches!(result, Err(ApiError::WrongType { field: f, .. }) if f == field), "{field}");
        }
    }

    #[test]
    fn a_rotation_without_a_body_has_no_grace_period() {
        assert_eq!(Rotation::parse(b"").unwrap(), Rotation { grace_seconds: 0 });
        assert_eq!(Rotation::parse(b"{}").unwrap(), Rotation { grace_seconds: 0 });
        assert_eq!(Rotation::parse(br#"{"grace_seconds": 300}"#).unwrap(), Rotation { grace_seconds: 300 });
    }

    #[test]
    fn a_grace_period_beyond_a_day_or_not_whole_is_refused() {
        for body in [&br#"{"grace_seconds": 86401}"#[..], br#"{"grace_seconds": -1}"#, br#"{"grace_seconds": 1.5}"#] {
            assert!(matches!(Rotation::parse(body), Err(ApiError::InvalidField { field: "grace_seconds", .. })));
        }
        assert!(matches!(Rotation::parse(br#"{"grace_seconds": "60"}"#), Err(ApiError::WrongType { .. })));
        assert!(matches!(Rotation::parse(b"[1]"), Err(ApiError::InvalidBody(_))));
    }

    #[test]
    fn a_name_of_the_wrong_type_is_a_body_error() {
        let result = NewClient::parse(&json!({"name": 5}));
        assert!(matches!(result, Err(ApiError::WrongType { field: "name", .. })));
    }
}
