//! HTTP: the listener and its worker threads (`server`), the one router
//! (`router`), what a request carries (`request`), what a handler returns
//! (`response`) and how a failure becomes a status code (`error`).

pub mod access_log;
pub mod error;
pub mod request;
pub mod response;
pub mod router;
pub mod server;

pub use error::ApiError;
pub use response::Response;
pub use server::HttpServer;
