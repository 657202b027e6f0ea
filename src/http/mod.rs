//! HTTP: the listener and its worker threads (`server`, the only code that
//! names tiny_http), the one router (`router`), and the access log. What a
//! handler sees and returns lives in `rest`.

pub mod access_log;
pub mod router;
pub mod server;

pub use server::HttpServer;
