//! The kit every handler uses: the [`Request`] it gets, the [`Response`] it
//! returns, and [`ApiError`], the one place a failure becomes a status code.
//! Below the resources and `auth`, above `db`; it names no HTTP library.

pub mod conditional;
pub mod error;
pub mod request;
pub mod response;

pub use error::ApiError;
pub use request::{Method, Request};
pub use response::Response;
