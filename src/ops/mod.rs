//! The operational endpoints: readiness and liveness (`health`), Prometheus
//! metrics (`metrics`), the API's OpenAPI document (`openapi`) and the
//! browsable page of it (`docs`).

pub mod docs;
pub mod health;
pub mod metrics;

use crate::rest::Response;

/// `GET /openapi.json`: the OpenAPI 3 description of the whole API.
pub fn openapi() -> Response {
    Response::json_bytes(200, include_bytes!("openapi.json").to_vec())
}
