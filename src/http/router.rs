//! The router: one `match` on the path's segments, then on the method. A known
//! path with a method it does not serve is a 405 with `Allow`; anything else
//! is a 404.

use tiny_http::Method;

use super::request::{MAX_BODY_BYTES, split_target};
use super::{ApiError, Response};
use crate::app::AppState;
use crate::{auth, clients, health, pizzas};

/// Routes one request to its handler.
pub fn route(state: &AppState, rq: &mut tiny_http::Request) -> Result<Response, ApiError> {
    let target = rq.url().to_owned();
    let (path, query) = split_target(&target);
    let method = rq.method().clone();
    // Refused before routing: no route takes a body this large, and reading
    // it to find that out would cost the whole upload.
    if rq.body_length().is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
    }
    let Some(segments) = segments(path) else { return Err(not_found()) };

    use Method::{Delete, Get, Head, Post, Put};
    match (segments.as_slice(), &method) {
        (["health"], Get | Head) => Ok(health::health(state)),
        (["livez"], Get | Head) => Ok(health::livez()),
        (["health"] | ["livez"], _) => Err(not_allowed("GET, HEAD")),

        (["api", "v1", "oauth", "token"], Post) => auth::token::issue(state, rq),
        (["api", "v1", "oauth", "token"], _) => Err(not_allowed("POST")),

        (["api", "v1", "public", "pizzas"], Get | Head) => pizzas::list(state, query),
        (["api", "v1", "public", "pizzas"], _) => Err(not_allowed("GET, HEAD")),
        (["api", "v1", "public", "pizzas", id], Get | Head) => pizzas::get(state, id),
        (["api", "v1", "public", "pizzas", _], _) => Err(not_allowed("GET, HEAD")),
        (["api", "v1", "pizzas"], Post) => pizzas::create(state, rq),
        (["api", "v1", "pizzas"], _) => Err(not_allowed("POST")),
        (["api", "v1", "pizzas", id], Put) => pizzas::update(state, rq, id),
        (["api", "v1", "pizzas", id], Delete) => pizzas::delete(state, rq, id),
        (["api", "v1", "pizzas", _], _) => Err(not_allowed("PUT, DELETE")),

        (["api", "v1", "clients"], Get | Head) => clients::list(state, rq),
        (["api", "v1", "clients"], Post) => clients::create(state, rq),
        (["api", "v1", "clients"], _) => Err(not_allowed("GET, HEAD, POST")),
        (["api", "v1", "clients", id], Delete) => clients::delete(state, rq, &decode_segment(id)?),
        (["api", "v1", "clients", _], _) => Err(not_allowed("DELETE")),

        _ => Err(not_found()),
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("Not found")
}

fn not_allowed(allow: &'static str) -> ApiError {
    ApiError::MethodNotAllowed { allow }
}

/// A path segment with its percent-escapes decoded (client IDs are free text).
fn decode_segment(segment: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(segment).decode_utf8().map(|s| s.into_owned()).map_err(|_| not_found())
}

/// The path's segments; `None` for a path with an empty segment (`//`, or a
/// trailing `/`), which names no resource.
fn segments(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    segments.iter().all(|s| !s.is_empty()).then_some(segments)
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn a_path_splits_into_segments() {
        assert_eq!(segments("/api/v1/pizzas/7"), Some(vec!["api", "v1", "pizzas", "7"]));
    }

    #[test]
    fn an_empty_segment_names_nothing() {
        assert_eq!(segments("/health/"), None);
        assert_eq!(segments("//health"), None);
        assert_eq!(segments("/"), None);
        assert_eq!(segments("health"), None);
    }
}
