//! The response a handler returns, and its conversion to bytes on the wire.

use std::time::Duration;

use serde::Serialize;

/// An HTTP response: status, extra headers and a complete body.
///
/// The body is always complete before sending, so every response carries
/// `Content-Length` and is never chunked.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    content_type: Option<&'static str>,
    /// Sent no sooner than this after the handler returns (see
    /// [`Response::delayed`]).
    pub delay: Option<Duration>,
}

const JSON: &str = "application/json; charset=utf-8";

impl Response {
    /// A JSON response with `value` serialized as the body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        // Serializing our own plain data types cannot fail (no maps with
        // non-string keys, no failing `Serialize` impls).
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Response::json_bytes(status, body)
    }

    /// A JSON response from bytes that already hold JSON.
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Response {
        Response { status, headers: Vec::new(), body, content_type: Some(JSON), delay: None }
    }

    /// A response with another content type (for example Prometheus text).
    pub fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: Vec::new(), body: body.into(), content_type: Some(content_type), delay: None }
    }

    /// `204 No Content`.
    pub fn no_content() -> Response {
        Response { status: 204, headers: Vec::new(), body: Vec::new(), content_type: None, delay: None }
    }

    /// `304 Not Modified` for a representation whose entity tag is `etag`:
    /// no body, no content type.
    pub fn not_modified(etag: String) -> Response {
        Response { status: 304, headers: vec![("ETag", etag)], body: Vec::new(), content_type: None, delay: None }
    }

    /// The same response, sent `delay` after the handler returns. The worker
    /// is free at once: the listener holds the bytes and the connection
    /// reads nothing more until they are sent, so a client that asks again
    /// only once answered (a keep-alive flood) gets one answer per `delay`
    /// per connection.
    pub fn delayed(mut self, delay: Duration) -> Response {
        self.delay = Some(delay);
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The value of a header this response sets, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        if name.eq_ignore_ascii_case("content-type") {
            return self.content_type;
        }
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body's media type, when there is a body.
    pub fn content_type(&self) -> Option<&'static str> {
        self.content_type
    }
}
