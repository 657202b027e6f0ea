//! `ApiError`: every way a request can fail, and the one place where a failure
//! becomes a status code and a JSON body.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use super::Response;
use crate::db::DbError;

/// How late the token and revocation endpoints send a refusal that checked
/// nothing: 429 for a locked client ID, 503 when every bcrypt slot is busy.
/// Such answers cost no bcrypt and no query, but a flood answered at once
/// still gets tens of thousands of them a second, enough to crowd both cores
/// (and the database's processes) out of the reads beside it; held back
/// this long, each connection of the flood gets one answer a second (the
/// 503's `Retry-After: 1` asks a client to wait that long anyway). No worker
/// waits for it (see `Response::delayed`).
pub const REFUSAL_DELAY: Duration = Duration::from_secs(1);

/// A failed request. Handlers return `Result<Response, ApiError>` and use `?`;
/// only [`ApiError::into_response`] turns the error into what the client sees.
#[derive(Debug)]
pub enum ApiError {
    /// 404 `{"error": <text>}`.
    NotFound(&'static str),
    /// 405 `{"error":"Method not allowed"}` with `Allow: <methods>`.
    MethodNotAllowed { allow: &'static str },
    /// 413: the request body is over the limit.
    PayloadTooLarge { limit: usize },
    /// 400 `{"error":"Invalid request body","details":<text>}`: not JSON, a field
    /// of the wrong type, or no body at all.
    InvalidBody(String),
    /// 400 `{"error":"Invalid request body","details":<text>,"field":<field>}`:
    /// a field of the wrong JSON type.
    WrongType { field: &'static str, message: String },
    /// 400 `{"error":<text>,"field":<field>}`: a value that fails validation.
    InvalidField { field: &'static str, message: String },
    /// 400 `{"error":<text>}`: a bad path or query parameter.
    BadRequest(String),
    /// 401 from a protected route: `{"error":<code>,"error_description":<text>}`
    /// with `WWW-Authenticate: Bearer error="invalid_token"`.
    Unauthorized { error: &'static str, description: String },
    /// 403 with a body that says what was missing (a role, ownership).
    Forbidden(Value),
    /// 403 `insufficient_scope`: the token lacks the scope the operation needs.
    InsufficientScope { required: &'static str },
    /// An error of the token endpoint (RFC 6749 §5.2): `{"error":<code>,
    /// "error_description":<text>}`, never cached, and for a 401 after HTTP
    /// Basic the `WWW-Authenticate: Basic` challenge.
    OAuth { status: u16, code: &'static str, description: String, basic_challenge: bool },
    /// 429 from the token and revocation endpoints: too many wrong secrets for
    /// one client ID. The OAuth error body (`temporarily_unavailable`) and
    /// `Retry-After: <seconds>`.
    TooManyAttempts { retry_after_seconds: u64 },
    /// 409 `{"error":"Conflict","details":<text>}`: the change contradicts what
    /// is stored (a unique or foreign-key rule). The database's wording is
    /// logged, not sent.
    Conflict(String),
    /// 409 with a body that names what already exists (a client created
    /// earlier under the same `Idempotency-Key`).
    AlreadyCreated(Value),
    /// 409 `{"error":"Conflict","details":<text>}` with `Retry-After: 1`: a
    /// request with the same `Idempotency-Key` is still being processed.
    InFlight,
    /// 412 `{"error":"Precondition failed","details":<text>}`: `If-Match`
    /// names a version that is no longer current.
    PreconditionFailed(&'static str),
    /// 422 `{"error":"Idempotency-Key reused with a different request body",
    /// "details":<text>}`.
    KeyReused,
    /// 503 `{"error":"Service unavailable", ...}`: the database did not answer
    /// or no connection was free in time. The cause is logged, not sent.
    Unavailable(String),
    /// 500 `{"error":"Internal server error"}`. The cause is logged, not sent.
    Internal(String),
}

impl ApiError {
    /// The response the client gets. 5xx causes are logged here, once.
    pub fn into_response(self) -> Response {
        match self {
            ApiError::NotFound(text) => Response::json(404, &json!({ "error": text })),
            ApiError::MethodNotAllowed { allow } => {
                Response::json(405, &json!({ "error": "Method not allowed", "allow": allow }))
                    .with_header("Allow", allow)
            }
            // The unread body makes the connection unusable for another request.
            ApiError::PayloadTooLarge { limit } => Response::json(
                413,
                &json!({ "error": "Request body too large", "details": format!("the limit is {limit} bytes") }),
            )
            .with_header("Connection", "close"),
            ApiError::InvalidBody(details) => {
                Response::json(400, &json!({ "error": "Invalid request body", "details": details }))
            }
            ApiError::WrongType { field, message } => {
                Response::json(400, &json!({ "error": "Invalid request body", "details": message, "field": field }))
            }
            ApiError::InvalidField { field, message } => {
                Response::json(400, &json!({ "error": message, "field": field }))
            }
            ApiError::BadRequest(text) => Response::json(400, &json!({ "error": text })),
            ApiError::Unauthorized { error, description } => {
                Response::json(401, &json!({ "error": error, "error_description": description }))
                    .with_header("WWW-Authenticate", r#"Bearer error="invalid_token""#)
            }
            ApiError::Forbidden(body) => Response::json(403, &body),
            ApiError::InsufficientScope { required } => Response::json(
                403,
                &json!({
                    "error": "insufficient_scope",
                    "error_description": format!("this operation needs a token with the {required} scope"),
                    "required_scope": required,
                }),
            )
            .with_header("WWW-Authenticate", format!(r#"Bearer error="insufficient_scope", scope="{required}""#)),
            ApiError::OAuth { status, code, description, basic_challenge } => {
                let response = Response::json(status, &json!({ "error": code, "error_description": description }))
                    .with_header("Cache-Control", "no-store")
                    .with_header("Pragma", "no-cache");
                match status {
                    401 if basic_challenge => response.with_header("WWW-Authenticate", r#"Basic realm="pizza-api""#),
                    503 => response.with_header("Retry-After", "1").delayed(REFUSAL_DELAY),
                    _ => response,
                }
            }
            ApiError::TooManyAttempts { retry_after_seconds } => Response::json(
                429,
                &json!({
                    "error": "temporarily_unavailable",
                    "error_description": format!(
                        "too many failed authentications for this client; retry in {retry_after_seconds} s"
                    ),
                }),
            )
            .with_header("Cache-Control", "no-store")
            .with_header("Pragma", "no-cache")
            .with_header("Retry-After", retry_after_seconds.to_string())
            .delayed(REFUSAL_DELAY),
            ApiError::Conflict(cause) => {
                log::warn!("answering 409: {cause}");
                Response::json(
                    409,
                    &json!({ "error": "Conflict", "details": "the change conflicts with data already stored" }),
                )
            }
            ApiError::AlreadyCreated(body) => Response::json(409, &body),
            ApiError::InFlight => Response::json(
                409,
                &json!({
                    "error": "Conflict",
                    "details": "a request with this Idempotency-Key is still in progress; retry shortly",
                }),
            )
            .with_header("Retry-After", "1"),
            ApiError::PreconditionFailed(details) => {
                Response::json(412, &json!({ "error": "Precondition failed", "details": details }))
            }
            ApiError::KeyReused => Response::json(
                422,
                &json!({
                    "error": "Idempotency-Key reused with a different request body",
                    "details": "this key was first sent with another body; use a new key for a new request",
                }),
            ),
            ApiError::Unavailable(cause) => {
                log::warn!("answering 503: {cause}");
                Response::json(
                    503,
                    &json!({ "error": "Service unavailable", "details": "the database is not answering; retry shortly" }),
                )
                .with_header("Retry-After", "1")
            }
            ApiError::Internal(cause) => {
                log::error!("internal error: {cause}");
                internal_error()
            }
        }
    }
}

/// The body of every 500: nothing about the cause leaves the server.
pub fn internal_error() -> Response {
    Response::json(500, &json!({ "error": "Internal server error" }))
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> ApiError {
        match err {
            DbError::Unavailable(cause) => ApiError::Unavailable(cause),
            DbError::Conflict(cause) => ApiError::Conflict(cause),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
