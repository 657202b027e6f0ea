//! Reading what a client sent: the path, query parameters, headers and body.

use std::io::Read;

use serde_json::Value;

use super::ApiError;

pub use crate::config::MAX_BODY_BYTES;

/// Splits a request target into its path and its query string (without `?`).
pub fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

/// The value of the first header called `name` (case-insensitive).
pub fn header<'r>(rq: &'r tiny_http::Request, name: &str) -> Option<&'r str> {
    rq.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] with a 413
/// before reading any of it when the client announced its length.
pub fn read_body(rq: &mut tiny_http::Request) -> Result<Vec<u8>, ApiError> {
    let announced = rq.body_length().unwrap_or(0);
    if announced > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
    }
    let mut body = Vec::with_capacity(announced);
    rq.as_reader()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::InvalidBody(format!("the body could not be read: {e}")))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
    }
    Ok(body)
}

/// Reads the body as a JSON value. No body, or a body that is not JSON, is a 400.
pub fn json_body(rq: &mut tiny_http::Request) -> Result<Value, ApiError> {
    let body = read_body(rq)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidBody("the request body is empty; a JSON object is required".into()));
    }
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidBody(format!("the body is not valid JSON: {e}")))?;
    if let Some(path) = nul_in(&value, "") {
        return Err(ApiError::InvalidBody(format!(
            "{path} contains a NUL character (\\u0000), which text may not hold"
        )));
    }
    Ok(value)
}

/// Where a string of `value` holds a NUL character (`name`, `ingredients[2]`),
/// if anywhere. Text with NUL cannot be stored in PostgreSQL, so it is refused
/// on every database alike.
fn nul_in(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(text) if text.contains('\0') => {
            Some(if path.is_empty() { "the body".into() } else { path.into() })
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| nul_in(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            if key.contains('\0') { Some(here) } else { nul_in(item, &here) }
        }),
        _ => None,
    }
}

/// Decodes `application/x-www-form-urlencoded` text (a query string or a form body).
pub fn form_pairs(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_splits_into_path_and_query() {
        assert_eq!(split_target("/a/b?x=1&y=2"), ("/a/b", "x=1&y=2"));
        assert_eq!(split_target("/a"), ("/a", ""));
    }

    #[test]
    fn a_nul_character_anywhere_is_found_with_its_path() {
        let value = serde_json::json!({"name": "ok", "ingredients": ["a", "b\u{0}"]});
        assert_eq!(nul_in(&value, "").as_deref(), Some("ingredients[1]"));
        assert_eq!(nul_in(&serde_json::json!({"a": [1, {"b": "fine"}]}), ""), None);
    }

    #[test]
    fn form_values_are_percent_decoded() {
        let pairs = form_pairs(b"name=a%25b+c&x=%E2%9C%93");
        assert_eq!(pairs, vec![("name".into(), "a%b c".into()), ("x".into(), "\u{2713}".into())]);
    }
}
