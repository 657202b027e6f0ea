//! Reading what a client sent: the path, query parameters, headers and body.

use std::io::Read;

use serde_json::Value;

use super::ApiError;

/// The largest request body accepted (1 MiB); anything larger is answered 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

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
    serde_json::from_slice(&body).map_err(|e| ApiError::InvalidBody(format!("the body is not valid JSON: {e}")))
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
    fn form_values_are_percent_decoded() {
        let pairs = form_pairs(b"name=a%25b+c&x=%E2%9C%93");
        assert_eq!(pairs, vec![("name".into(), "a%b c".into()), ("x".into(), "\u{2713}".into())]);
    }
}
