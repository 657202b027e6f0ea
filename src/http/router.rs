//! The router: the path names a [`Route`] (or nothing: 404), then one `match`
//! on route and method picks the handler; a known route with a method it does
//! not serve is a 405 with `Allow`.

use tiny_http::Method;

use super::request::MAX_BODY_BYTES;
use super::{ApiError, Response};
use crate::app::AppState;
use crate::{auth, clients, health, metrics, pizzas};

/// Every resource the service has. Path parameters are kept as text; the
/// handler decides whether they parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    Livez,
    Metrics,
    OpenApi,
    Token,
    PublicPizzas,
    PublicPizza(&'a str),
    Pizzas,
    Pizza(&'a str),
    Clients,
    Client(&'a str),
}

impl<'a> Route<'a> {
    /// The route a path names, if any. A path with an empty segment (`//`,
    /// a trailing `/`) names nothing.
    pub fn parse(path: &'a str) -> Option<Route<'a>> {
        let rest = path.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(match segments.as_slice() {
            ["health"] => Route::Health,
            ["livez"] => Route::Livez,
            ["metrics"] => Route::Metrics,
            ["openapi.json"] => Route::OpenApi,
            ["api", "v1", "oauth", "token"] => Route::Token,
            ["api", "v1", "public", "pizzas"] => Route::PublicPizzas,
            ["api", "v1", "public", "pizzas", id] => Route::PublicPizza(id),
            ["api", "v1", "pizzas"] => Route::Pizzas,
            ["api", "v1", "pizzas", id] => Route::Pizza(id),
            ["api", "v1", "clients"] => Route::Clients,
            ["api", "v1", "clients", id] => Route::Client(id),
            _ => return None,
        })
    }

    /// The path with its parameters as placeholders: what logs and metrics
    /// name, so that raw IDs never become label values.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Health => "/health",
            Route::Livez => "/livez",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Token => "/api/v1/oauth/token",
            Route::PublicPizzas => "/api/v1/public/pizzas",
            Route::PublicPizza(_) => "/api/v1/public/pizzas/{id}",
            Route::Pizzas => "/api/v1/pizzas",
            Route::Pizza(_) => "/api/v1/pizzas/{id}",
            Route::Clients => "/api/v1/clients",
            Route::Client(_) => "/api/v1/clients/{id}",
        }
    }

    /// The methods the route serves, for `Allow`.
    pub fn allow(&self) -> &'static str {
        match self {
            Route::Token | Route::Pizzas => "POST",
            Route::Pizza(_) => "PUT, DELETE",
            Route::Clients => "GET, HEAD, POST",
            Route::Client(_) => "DELETE",
            _ => "GET, HEAD",
        }
    }
}

/// The template of routes that do not exist.
pub const UNMATCHED: &str = "unmatched";

/// Routes one request to the handler of `route` (`None`: no such path).
pub fn route(
    state: &AppState,
    rq: &mut tiny_http::Request,
    route: Option<Route<'_>>,
    query: &str,
) -> Result<Response, ApiError> {
    let Some(route) = route else { return Err(not_found()) };
    // Refused before any handler runs: no route takes a body this large, and
    // reading it to find that out would cost the whole upload.
    if rq.body_length().is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
    }
    let method = rq.method().clone();
    dispatch(state, rq, route, &method, query)
}

fn dispatch(
    state: &AppState,
    rq: &mut tiny_http::Request,
    route: Route<'_>,
    method: &Method,
    query: &str,
) -> Result<Response, ApiError> {
    use Method::{Delete, Get, Head, Post, Put};
    match (route, method) {
        (Route::Health, Get | Head) => Ok(health::health(state)),
        (Route::Livez, Get | Head) => Ok(health::livez()),
        (Route::Metrics, Get | Head) => Ok(metrics::render(state)),
        (Route::OpenApi, Get | Head) => Ok(openapi()),

        (Route::Token, Post) => auth::token::issue(state, rq),

        (Route::PublicPizzas, Get | Head) => pizzas::list(state, query),
        (Route::PublicPizza(id), Get | Head) => pizzas::get(state, id),
        (Route::Pizzas, Post) => pizzas::create(state, rq),
        (Route::Pizza(id), Put) => pizzas::update(state, rq, id),
        (Route::Pizza(id), Delete) => pizzas::delete(state, rq, id),

        (Route::Clients, Get | Head) => clients::list(state, rq),
        (Route::Clients, Post) => clients::create(state, rq),
        (Route::Client(id), Delete) => clients::delete(state, rq, &decode_segment(id)?),

        (route, _) => Err(ApiError::MethodNotAllowed { allow: route.allow() }),
    }
}

/// `GET /openapi.json`: the OpenAPI 3 description of the whole API.
fn openapi() -> Response {
    Response::json_bytes(200, include_bytes!("../openapi.json").to_vec())
}

fn not_found() -> ApiError {
    ApiError::NotFound("Not found")
}

/// A path segment with its percent-escapes decoded (client IDs are free text).
fn decode_segment(segment: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(segment).decode_utf8().map(|s| s.into_owned()).map_err(|_| not_found())
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn a_path_names_its_route_with_parameters() {
        assert_eq!(Route::parse("/api/v1/pizzas/7"), Some(Route::Pizza("7")));
        assert_eq!(Route::parse("/api/v1/public/pizzas"), Some(Route::PublicPizzas));
        assert_eq!(Route::parse("/api/v1/clients/abc"), Some(Route::Client("abc")));
    }

    #[test]
    fn an_empty_segment_names_nothing() {
        for path in ["/health/", "//health", "/", "health", "/api/v1/pizzas/"] {
            assert_eq!(Route::parse(path), None, "{path}");
        }
    }

    #[test]
    fn templates_never_contain_parameters() {
        assert_eq!(Route::parse("/api/v1/pizzas/12345").unwrap().template(), "/api/v1/pizzas/{id}");
    }
}
