//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

// (pizza-api patch) This copy serves each connection from a thread of its own
// that reads whole requests within `Limits` (see `client.rs` and PATCHES.md);
// TLS support was removed (the service terminates TLS elsewhere).

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use client::Context;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use limits::{Event, FastPath, Limits, Observer};
pub use request::Request;
pub use response::{Response, ResponseBox};

mod client;
mod common;
mod connection;
mod limits;
mod request;
mod response;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // (pizza-api patch) what the connection threads share
    ctx: Arc<Context>,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// Server must be shareable between worker threads.
const _: fn() = || {
    fn must_be_sync_and_send<T: Sync + Send>() {}
    must_be_sync_and_send::<Server>();
};

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Configuration of the server for SSL (not supported by this copy).
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

/// Pauses of the accept loop while resources (file descriptors, memory,
/// threads) are exhausted: doubling from the first to the last.
const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_LAST: Duration = Duration::from_secs(1);

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener, with the default [`Limits`].
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        if ssl_config.is_some() {
            return Err("this copy of tiny_http does not support TLS".into());
        }
        Self::from_listener_with(listener, Limits::default(), None, None)
    }

    /// (pizza-api patch) Builds a new server on `listener` that enforces
    /// `limits`, reports what the transport does to `observer`, and lets
    /// `fast_path` answer requests on their connection's thread.
    pub fn from_listener_with<L: Into<Listener>>(
        listener: L,
        limits: Limits,
        observer: Option<Arc<dyn Observer>>,
        fast_path: Option<Arc<dyn FastPath>>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        let close_trigger = Arc::new(AtomicBool::new(false));
        let local_addr = listener.local_addr()?;
        log::debug!("Server listening on {}", local_addr);

        let messages = MessagesQueue::with_capacity(8);
        let ctx = Arc::new(Context::new(limits, messages.clone(), observer, fast_path));
        let inside_close_trigger = close_trigger.clone();
        let inside_ctx = Arc::clone(&ctx);
        thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(&listener, &inside_close_trigger, &inside_ctx))?;

        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            ctx,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// (pizza-api patch) Stops taking new requests on open connections, for
    /// a graceful stop: idle keep-alive connections close now, the others
    /// once the request they are reading has been answered. (Closing the
    /// listening socket, which stops new connections, is the caller's part.)
    pub fn drain(&self) {
        self.ctx.drain();
    }

    /// (pizza-api patch) Requests being read by connection threads that no
    /// worker has received yet: what a graceful stop still waits for.
    pub fn requests_being_read(&self) -> usize {
        self.ctx.registry.reading()
    }

    /// Unblock one thread stuck in recv() or incoming_requests().
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

/// (pizza-api patch) Accepts connections until the listener is shut down.
/// Exhausted resources pause it (logged once per episode) instead of ending
/// it; at the connection cap the longest-idle connection makes room, or the
/// newcomer is refused with a 503.
fn accept_loop(listener: &Listener, close: &AtomicBool, ctx: &Arc<Context>) {
    let mut pause: Option<Duration> = None;
    log::debug!("Running accept thread");
    while !close.load(Relaxed) {
        let (stream, remote_addr) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) if is_transient(&err) => continue,
            Err(err) if is_exhaustion(&err) => {
                pause = Some(pause_accepting(pause, &err.to_string(), ctx));
                continue;
            }
            Err(err) => {
                // The listener was shut down or is unusable: nothing more will come.
                // A socket shut down for a graceful stop answers EINVAL: that
                // is the normal end, not an error.
                if err.raw_os_error() == Some(libc::EINVAL) {
                    log::debug!("the listening socket was shut down: accepting ends");
                } else if !close.load(Relaxed) {
                    log::error!("Error accepting new client: {}", err);
                }
                ctx.messages.push(err.into());
                break;
            }
        };
        if ctx.registry.len() >= ctx.limits.max_connections {
            if ctx.registry.evict_longest_idle() {
                ctx.event(Event::Evicted);
            } else {
                client::refuse(&stream);
                ctx.event(Event::Refused);
                continue;
            }
        }
        let _ = stream.set_write_timeout(Some(ctx.limits.write_timeout));
        ctx.event(Event::Accepted);
        let spawned = {
            let ctx = Arc::clone(ctx);
            thread::Builder::new()
                .name("http-conn".into())
                .stack_size(ctx.limits.connection_stack_bytes)
                .spawn(move || client::serve(stream, remote_addr, ctx))
        };
        match spawned {
            Ok(_) => {
                if pause.take().is_some() {
                    log::warn!("accepting connections again");
                }
            }
            // The connection (moved into the failed closure) is closed on drop.
            Err(err) => {
                ctx.event(Event::Closed);
                pause = Some(pause_accepting(pause, &format!("cannot start a connection thread: {err}"), ctx));
            }
        }
    }
    log::debug!("Terminating accept thread");
}

fn pause_accepting(pause: Option<Duration>, why: &str, ctx: &Context) -> Duration {
    let next = match pause {
        None => {
            log::warn!("pausing accepts: {why}; retrying until resources free up");
            ACCEPT_PAUSE_FIRST
        }
        Some(previous) => (previous * 2).min(ACCEPT_PAUSE_LAST),
    };
    ctx.event(Event::AcceptPaused);
    thread::sleep(next);
    next
}

/// Errors about one connection that went away before it was accepted.
fn is_transient(err: &IoError) -> bool {
    matches!(
        err.kind(),
        IoErrorKind::ConnectionAborted | IoErrorKind::ConnectionReset | IoErrorKind::Interrupted | IoErrorKind::WouldBlock
    ) || matches!(err.raw_os_error(), Some(libc::EPROTO) | Some(libc::EPERM) | Some(libc::ENETDOWN)
        | Some(libc::ENOPROTOOPT) | Some(libc::EHOSTDOWN) | Some(libc::EHOSTUNREACH) | Some(libc::EOPNOTSUPP)
        | Some(libc::ENETUNREACH))
}

/// Out of file descriptors or memory: the process must wait for some to free up.
fn is_exhaustion(err: &IoError) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    ) || err.kind() == IoErrorKind::OutOfMemory
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
