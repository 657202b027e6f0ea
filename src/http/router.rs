//! The router: the path names a [`Route`] (or nothing: 404), then one `match`
//! on route and method picks the handler and hands it only the parts of the
//! state it needs; a known route with a method it does not serve is a 405
//! with `Allow`. A handler's error, or its panic, becomes the response here.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

use crate::auth;
use crate::db::replicas::Reads;
use crate::rest::error::internal_error;
use crate::rest::{ApiError, Method, Request, Response};
use crate::state::AppState;
use crate::{clients, ops, pizzas};

/// Every resource the service has. Path parameters are kept as text; the
/// handler decides whether they parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    Livez,
    Metrics,
    OpenApi,
    /// `/docs` (an empty file name) and the page's files under it.
    Docs(&'a str),
    /// `/swagger/index.html`, where the original Go implementation served the page.
    SwaggerRedirect,
    Token,
    Revoke,
    PublicPizzas,
    PublicPizza(&'a str),
    Pizzas,
    Pizza(&'a str),
    Clients,
    Client(&'a str),
    ClientSecret(&'a str),
}

impl<'a> Route<'a> {
    /// The route a path names, if any. A path with an empty segment (`//`,
    /// a trailing `/`) names nothing.
    pub fn parse(path: &'a str) -> Option<Route<'a>> {
        // At most five segments, on the stack: this runs for every request.
        let mut segments = [""; 6];
        let mut count = 0;
        for segment in path.strip_prefix('/')?.split('/') {
            if segment.is_empty() || count == segments.len() {
                return None;
            }
            segments[count] = segment;
            count += 1;
        }
        Some(match &segments[..count] {
            ["health"] => Route::Health,
            ["livez"] => Route::Livez,
            ["metrics"] => Route::Metrics,
            ["openapi.json"] => Route::OpenApi,
            ["docs"] => Route::Docs(""),
            ["docs", file] => Route::Docs(file),
            ["swagger", "index.html"] => Route::SwaggerRedirect,
            ["api", "v1", "oauth", "token"] => Route::Token,
            ["api", "v1", "oauth", "revoke"] => Route::Revoke,
            ["api", "v1", "public", "pizzas"] => Route::PublicPizzas,
            ["api", "v1", "public", "pizzas", id] => Route::PublicPizza(id),
            ["api", "v1", "pizzas"] => Route::Pizzas,
            ["api", "v1", "pizzas", id] => Route::Pizza(id),
            ["api", "v1", "clients"] => Route::Clients,
            ["api", "v1", "clients", id] => Route::Client(id),
            ["api", "v1", "clients", id, "secret"] => Route::ClientSecret(id),
            _ => return None,
        })
    }

    /// Whether serving the route needs the database (every resource does;
    /// the operational endpoints never do).
    pub fn needs_database(&self) -> bool {
        !matches!(
            self,
            Route::Health | Route::Livez | Route::Metrics | Route::OpenApi | Route::Docs(_) | Route::SwaggerRedirect
        )
    }

    /// The path with its parameters as placeholders: what logs and metrics
    /// name, so that raw IDs never become label values.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Health => "/health",
            Route::Livez => "/livez",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Docs("") => "/docs",
            Route::Docs(_) => "/docs/{file}",
            Route::SwaggerRedirect => "/swagger/index.html",
            Route::Token => "/api/v1/oauth/token",
            Route::Revoke => "/api/v1/oauth/revoke",
            Route::PublicPizzas => "/api/v1/public/pizzas",
            Route::PublicPizza(_) => "/api/v1/public/pizzas/{id}",
            Route::Pizzas => "/api/v1/pizzas",
            Route::Pizza(_) => "/api/v1/pizzas/{id}",
            Route::Clients => "/api/v1/clients",
            Route::Client(_) => "/api/v1/clients/{id}",
            Route::ClientSecret(_) => "/api/v1/clients/{id}/secret",
        }
    }

    /// The methods the route serves, for `Allow`.
    pub fn allow(&self) -> &'static str {
        match self {
            Route::Token | Route::Revoke | Route::Pizzas | Route::ClientSecret(_) => "POST",
            Route::Pizza(_) => "PUT, DELETE",
            Route::Clients => "GET, HEAD, POST",
            Route::Client(_) => "DELETE",
            _ => "GET, HEAD",
        }
    }
}

/// The template of routes that do not exist.
pub const UNMATCHED: &str = "unmatched";

/// A request's answer and the route template it matched, for the metrics
/// and the access log.
pub struct Routed {
    pub template: &'static str,
    pub response: Response,
}

/// The answer to give without a worker, if there is one: the operational
/// endpoints (they neither query the database nor wait for anything), and
/// `503` for every route that needs the database while it is known down.
/// Runs on the connection's own thread, so liveness and readiness are
/// answered even when every worker is stuck on the database.
pub fn answer_at_once(state: &AppState, method: &Method, target: &str) -> Option<Routed> {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let route = Route::parse(path)?;
    let response = match (route, method) {
        (Route::Livez, Method::Get | Method::Head) => ops::health::livez(),
        (Route::Health, Method::Get | Method::Head) => {
            ops::health::health(&state.db_health, state.db.driver_name(), &state.replicas)
        }
        (Route::Metrics, Method::Get | Method::Head) => {
            ops::metrics::render(&state.metrics, &state.db, &state.db_health, &state.replicas)
        }
        (Route::OpenApi, Method::Get | Method::Head) => ops::openapi(),
        (route, _) if route.needs_database() && state.db_health.is_down() => database_down(),
        _ => return None,
    };
    Some(Routed { template: route.template(), response })
}

/// The circuit breaker's answer: no log line per request (the change of
/// state is logged once).
fn database_down() -> Response {
    Response::json(
        503,
        &serde_json::json!({ "error": "Service unavailable", "details": "the database is not answering; retry shortly" }),
    )
    .with_header("Retry-After", "1")
}

/// Routes one request and runs its handler; errors and panics become responses.
pub fn route(state: &AppState, rq: &Request) -> Routed {
    let Some(route) = Route::parse(rq.path()) else {
        return Routed { template: UNMATCHED, response: not_found().into_response() };
    };
    // Requests queued before the breaker opened get its answer too.
    if route.needs_database() && state.db_health.is_down() {
        return Routed { template: route.template(), response: database_down() };
    }
    let response = run_handler(rq, || dispatch(state, rq, route));
    Routed { template: route.template(), response }
}

/// Runs a handler, turning its error or its panic into a response.
fn run_handler(rq: &Request, handler: impl FnOnce() -> Result<Response, ApiError>) -> Response {
    match panic::catch_unwind(AssertUnwindSafe(handler)) {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => err.into_response(),
        Err(payload) => {
            log::error!("handler panicked on {} {}: {}", rq.method(), rq.path(), panic_message(&*payload));
            internal_error()
        }
    }
}

fn dispatch(state: &AppState, rq: &Request, route: Route<'_>) -> Result<Response, ApiError> {
    use Method::{Delete, Get, Head, Post, Put};
    let (db, auth) = (&state.db, &state.auth);
    match (route, rq.method()) {
        (Route::Health, Get | Head) => Ok(ops::health::health(&state.db_health, db.driver_name(), &state.replicas)),
        (Route::Livez, Get | Head) => Ok(ops::health::livez()),
        (Route::Metrics, Get | Head) => Ok(ops::metrics::render(&state.metrics, db, &state.db_health, &state.replicas)),
        (Route::OpenApi, Get | Head) => Ok(ops::openapi()),
        (Route::Docs(file), Get | Head) => ops::docs::page(file),
        (Route::SwaggerRedirect, Get | Head) => Ok(ops::docs::redirect()),

        (Route::Token, Post) => clients::token::issue(db, auth, rq),
        (Route::Revoke, Post) => clients::revoke::revoke(db, auth, rq),

        (Route::PublicPizzas, Get | Head) => pizzas::list(&public_reads(state, rq), rq),
        (Route::PublicPizza(id), Get | Head) => pizzas::get(&public_reads(state, rq), rq, id),
        (Route::Pizzas, Post) => pizzas::create(db, auth, rq),
        (Route::Pizza(id), Put) => pizzas::update(db, auth, rq, id),
        (Route::Pizza(id), Delete) => pizzas::delete(db, auth, rq, id),

        (Route::Clients, Get | Head) => clients::list(db, auth, rq),
        (Route::Clients, Post) => clients::create(db, auth, rq),
        (Route::Client(id), Delete) => clients::delete(db, auth, rq, &decode_segment(id)?),
        (Route::ClientSecret(id), Post) => clients::rotate_secret(db, auth, rq, &decode_segment(id)?),

        (route, _) => Err(ApiError::MethodNotAllowed { allow: route.allow() }),
    }
}

/// Where a public read runs: on the read replicas (`DB_READ_HOSTS`), unless
/// the request carries a valid bearer token. A client that writes holds a
/// token, and with it reads from the primary, so it sees its own writes;
/// anonymous reads may lag by up to `DB_READ_MAX_LAG_MS` (plus one check).
/// Without replicas this is the primary, and no token is looked at.
fn public_reads<'s>(state: &'s AppState, rq: &Request) -> Reads<'s> {
    let use_replicas = !state.replicas.is_empty() && !auth::bears_valid_token(&state.auth, rq);
    Reads::new(&state.db, &state.replicas, use_replicas)
}

/// The text a panic carried, when it carried text.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
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
    use super::*;

    fn request() -> Request {
        Request::new(Method::Get, "/x".into(), Vec::new(), Vec::new())
    }

    #[test]
    fn a_panicking_handler_is_answered_500_and_the_next_request_is_served() {
        let panicked = run_handler(&request(), || panic!("handler bug"));
        let next = run_handler(&request(), || Ok(Response::no_content()));

        assert_eq!(panicked.status, 500);
        assert_eq!(panicked.body, br#"{"error":"Internal server error"}"#);
        assert_eq!(next.status, 204);
    }

    #[test]
    fn an_error_is_answered_with_its_status() {
        let response = run_handler(&request(), || Err(ApiError::NotFound("Not found")));

        assert_eq!(response.status, 404);
    }

    #[test]
    fn a_path_names_its_route_with_parameters() {
        assert_eq!(Route::parse("/api/v1/pizzas/7"), Some(Route::Pizza("7")));
        assert_eq!(Route::parse("/api/v1/public/pizzas"), Some(Route::PublicPizzas));
        assert_eq!(Route::parse("/api/v1/clients/abc"), Some(Route::Client("abc")));
        assert_eq!(Route::parse("/api/v1/clients/abc/secret"), Some(Route::ClientSecret("abc")));
        assert_eq!(Route::parse("/api/v1/oauth/revoke"), Some(Route::Revoke));
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
