//! The operational endpoints: readiness and liveness (`health`), Prometheus
//! metrics (`metrics`) and the API's OpenAPI document (`openapi`).

pub mod health;
pub mod metrics;

use crate::rest::Response;

/// `GET /openapi.json`: the OpenAPI 3 description of the whole API.
pub fn openapi() -> Response {
    Response::json_bytes(200, include_bytes!("openapi.json").to_vec())
}
