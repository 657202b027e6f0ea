//! What a handler sees of a request: its method, path and query, its
//! headers, and its body, which the listener has already read within the
//! 1 MiB limit. Built by the HTTP server; nothing here knows the HTTP library.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::ApiError;

pub use crate::config::MAX_BODY_BYTES;

/// A request method. The API's own are variants; any other token is kept
/// as sent, for the log, and answered 404 or 405 by the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other(String),
}

impl Method {
    /// The method named by `token` (case-sensitive, as HTTP says).
    pub fn parse(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The name of one of the API's own methods; `None` for any other.
    fn standard(&self) -> Option<&'static str> {
        Some(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other(_) => return None,
        })
    }

    /// The method as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Other(token) => token,
            standard => standard.standard().unwrap_or_default(),
        }
    }

    /// The method as a metrics label: a fixed set, whatever clients send.
    pub fn label(&self) -> &'static str {
        self.standard().unwrap_or("OTHER")
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    /// The request target: path, then `?` and the query, if any.
    target: String,
    path_len: usize,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The peer's address, when the listener knows it.
    remote: Option<IpAddr>,
    /// This process's number for the request (see [`Request::id`]).
    seq: u64,
}

/// Numbers requests within this process.
static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);

/// The longest `X-Request-Id` taken as the request's ID.
const MAX_REQUEST_ID_BYTES: usize = 128;

impl Request {
    /// A request with `method` for `target` (a path with an optional query).
    pub fn new(method: Method, target: String, headers: Vec<(String, String)>, body: Vec<u8>) -> Request {
        let path_len = target.find('?').unwrap_or(target.len());
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        Request { method, target, path_len, headers, body, remote: None, seq }
    }

    /// The same request, from the peer `remote`.
    pub fn with_remote(mut self, remote: Option<IpAddr>) -> Request {
        self.remote = remote;
        self
    }

    /// The peer's address (the last hop: a proxy's, behind one).
    pub fn remote(&self) -> Option<IpAddr> {
        self.remote
    }

    /// The request's ID for the audit log: the client's `X-Request-Id` when
    /// it sent a usable one (1 to 128 visible ASCII characters), otherwise
    /// `pid-N`, this process's ID and its count of requests.
    pub fn id(&self) -> String {
        match self.header("X-Request-Id").map(str::trim) {
            Some(id)
                if !id.is_empty() && id.len() <= MAX_REQUEST_ID_BYTES && id.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                id.to_owned()
            }
            _ => format!("{}-{}", std::process::id(), self.seq),
        }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, without the query string.
    pub fn path(&self) -> &str {
        &self.target[..self.path_len]
    }

    /// The query string without its `?` (empty when there is none).
    pub fn query(&self) -> &str {
        self.target.get(self.path_len + 1..).unwrap_or("")
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The whole body. The listener refuses anything over
    /// [`MAX_BODY_BYTES`]; this checks again, so a handler never sees more.
    pub fn body(&self) -> Result<&[u8], ApiError> {
        if self.body.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
        }
        Ok(&self.body)
    }

    /// The body as a JSON value. No body, or a body that is not JSON, is a 400.
    pub fn json_body(&self) -> Result<Value, ApiError> {
        let body = self.body()?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::InvalidBody("the request body is empty; a JSON object is required".into()));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::InvalidBody(format!("the body is not valid JSON: {e}")))?;
        if let Some(path) = nul_in(&value, "") {
            return Err(ApiError::InvalidBody(format!(
                "{path} contains a NUL character (\\u0000), which text may not hold"
            )));
        }
        Ok(value)
    }
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

    fn request(target: &str) -> Request {
        Request::new(Method::Get, target.into(), vec![("Content-Type".into(), "text/plain".into())], Vec::new())
    }

    #[test]
    fn a_target_splits_into_path_and_query() {
        assert_eq!((request("/a/b?x=1&y=2").path(), request("/a/b?x=1&y=2").query()), ("/a/b", "x=1&y=2"));
        assert_eq!((request("/a").path(), request("/a").query()), ("/a", ""));
        assert_eq!((request("/a?").path(), request("/a?").query()), ("/a", ""));
    }

    #[test]
    fn headers_are_found_whatever_their_case() {
        assert_eq!(request("/").header("content-type"), Some("text/plain"));
        assert_eq!(request("/").header("Accept"), None);
    }

    #[test]
    fn an_unknown_method_keeps_its_name_but_not_as_a_label() {
        let method = Method::parse("BREW");
        assert_eq!((method.as_str(), method.label()), ("BREW", "OTHER"));
        assert_eq!(Method::parse("get"), Method::Other("get".into()));
    }

    #[test]
    fn a_nul_character_anywhere_is_found_with_its_path() {
        let value = serde_json::json!({"name": "ok", "ingredients": ["a", "b\u{0}"]});
        assert_eq!(nul_in(&value, "").as_deref(), Some("ingredients[1]"));
        assert_eq!(nul_in(&serde_json::json!({"a": [1, {"b": "fine"}]}), ""), None);
    }

    #[test]
    fn a_request_id_is_the_clients_when_usable_and_numbered_otherwise() {
        let with = |value: &str| {
            Request::new(Method::Get, "/".into(), vec![("X-Request-Id".into(), value.into())], Vec::new()).id()
        };
        assert_eq!(with("abc-123"), "abc-123");
        let (numbered, again) = (with("has space"), request("/").id());
        assert!(numbered.starts_with(&format!("{}-", std::process::id())), "{numbered}");
        assert_ne!(numbered, again);
        assert_ne!(with(&"x".repeat(129)), "x".repeat(129));
    }

    #[test]
    fn form_values_are_percent_decoded() {
        let pairs = form_pairs(b"name=a%25b+c&x=%E2%9C%93");
        assert_eq!(pairs, vec![("name".into(), "a%b c".into()), ("x".into(), "\u{2713}".into())]);
    }
}
