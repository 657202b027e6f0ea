//! (pizza-api patch) The limits a server enforces on every connection, and the
//! events it reports to an observer (for metrics).
//!
//! Every limit is enforced by the connection's own thread, before a request
//! reaches the application: a worker taking a request from `Server::recv`
//! never waits on a client's bytes.

use std::time::Duration;

/// Bounds on what one client may make the server hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request line plus header fields, in bytes. Beyond: `431`, then close.
    pub max_head_bytes: usize,
    /// Number of header fields (at most 256). Beyond: `431`, then close.
    pub max_headers: usize,
    /// A request body, in bytes (after chunked decoding). Beyond: `413`, then close.
    pub max_body_bytes: usize,
    /// Request bodies, and the unsent rest of responses waiting for slow
    /// readers, held in memory by all connections together. A body that
    /// would take the total beyond this is answered `503`, then close; a
    /// response rest that would, closes its connection.
    pub max_buffered_body_bytes: usize,
    /// From a request's first byte until its head and whole body have
    /// arrived (also: how long a new connection may stay silent). Beyond:
    /// `408`, then close.
    pub read_timeout: Duration,
    /// How long an idle keep-alive connection is kept waiting for its next
    /// request; then it is closed without an answer.
    pub keepalive_timeout: Duration,
    /// How long writing a response may block on a client that does not read.
    /// Beyond: the connection is closed.
    pub write_timeout: Duration,
    /// Open connections. At the cap the longest-idle keep-alive connection is
    /// closed to make room; when none is idle, the new one gets `503` and is closed.
    pub max_connections: usize,
    /// Stack size of each connection's thread.
    pub connection_stack_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            max_buffered_body_bytes: 32 * 1024 * 1024,
            read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_connections: 2048,
            connection_stack_bytes: 256 * 1024,
        }
    }
}

/// Something the transport did on its own, without the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A connection was accepted.
    Accepted,
    /// A connection was closed (for any reason).
    Closed,
    /// The first byte of a request arrived; its head and body are being read.
    RequestStarted,
    /// That request was handed to the workers, refused, or abandoned.
    RequestEnded,
    /// At the connection cap, an idle keep-alive connection was closed to make room.
    Evicted,
    /// At the connection cap with none idle, a new connection was refused (`503`).
    Refused,
    /// An idle keep-alive connection reached its timeout and was closed.
    IdleTimeout,
    /// The transport answered a request itself with this status and closed
    /// the connection (400, 408, 413, 417, 431, 501, 503, 505).
    Rejected(u16),
    /// `accept` failed for lack of resources (file descriptors, memory) or a
    /// connection thread could not be started; accepting pauses and retries.
    AcceptPaused,
    /// A response did not fit the socket at once; a helper thread finished it.
    SlowWrite,
    /// Writing a response failed or timed out; the connection was closed.
    WriteFailed,
    /// A response did not fit the socket at once and the rest would have
    /// taken the buffered-bytes budget past its limit: the connection was
    /// closed instead of holding it.
    WriteRefused,
}

/// Receives [`Event`]s; called from the connection threads, so keep it cheap.
pub trait Observer: Send + Sync {
    /// One event happened.
    fn event(&self, event: Event);
}

/// (pizza-api patch) Answers some requests on the connection's own thread,
/// before any worker: for requests that wait on nothing (liveness, readiness
/// from a cached state), so they are answered even when every worker is busy.
pub trait FastPath: Send + Sync {
    /// The response to send at once, or `None` to queue the request for the
    /// workers as usual. Must not block.
    fn answer(&self, request: &crate::Request) -> Option<crate::ResponseBox>;
}
