//! The HTTP server: a blocking tiny_http listener feeding a fixed pool of
//! worker threads. Each worker takes one request at a time, routes it, and
//! writes the answer; a panic in a handler becomes a 500 and the worker lives on.
//!
//! Stopping: [`StopHandle::stop`] closes the listening socket (no new
//! connections), the workers finish what was already accepted and exit once
//! the queue stays empty, and [`HttpServer::wait`] returns when they are done
//! or the drain deadline passes.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::access_log::{self, AccessLog};
use super::router::{self, panic_message};
use crate::config::{HttpLimits, MAX_BODY_BYTES, MAX_HEADER_FIELDS};
use crate::metrics;
use crate::rest::{Method, Request, Response};
use crate::state::AppState;

/// The log target of the listener's own lines (accept pauses).
pub const LISTENER_LOG_TARGET: &str = "tiny_http";

/// How often an idle worker checks whether the server is stopping.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Connections waiting to be accepted before the kernel refuses more.
const LISTEN_BACKLOG: i32 = 1024;

/// Why the server stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A signal or the application asked it to stop.
    Requested(String),
    /// The listening socket failed; nothing more can be accepted.
    ListenerFailed(String),
}

impl std::fmt::Display for StopReason {
    /// What the log says: `SIGTERM`, not `Requested("SIGTERM")`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Requested(why) => f.write_str(why),
            StopReason::ListenerFailed(cause) => write!(f, "the listener failed: {cause}"),
        }
    }
}

/// A running server.
pub struct HttpServer {
    addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
    access_writer: Option<access_log::Writer>,
    fast: Arc<FastAnswers>,
    stop: StopHandle,
    stopped: Receiver<StopReason>,
}

/// Asks a running server to stop; cheap to clone and send to other threads.
#[derive(Clone)]
pub struct StopHandle {
    stopping: Arc<AtomicBool>,
    listener: Arc<Mutex<Option<Socket>>>,
    server: Arc<tiny_http::Server>,
    notify: Sender<StopReason>,
}

impl StopHandle {
    /// Stops accepting connections and lets the workers drain. Only the first
    /// call has an effect.
    pub fn stop(&self, reason: StopReason) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Shutting the listening socket down wakes tiny_http's accept loop,
        // which then ends; connecting clients are refused from here on.
        if let Some(socket) = self.listener.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        // Open connections take no new requests: idle ones close now.
        self.server.drain();
        let _ = self.notify.send(reason);
    }

    /// Whether [`StopHandle::stop`] has been called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// File descriptors the process needs besides its client connections
/// (database pool, log, listener, the odd file), as a margin.
const SPARE_FILE_DESCRIPTORS: u64 = 64;

/// Raises the soft limit on open files (often 1,024 by default) up to the
/// hard limit as far as `max_connections` and the database pool need, so
/// that the connection cap, not a forgotten `ulimit -n`, bounds the
/// listener. Returns the limit in force; warns when it is below the need
/// (accepting then pauses whenever descriptors run out, and resumes).
pub fn raise_open_files_limit(max_connections: usize, pool_size: u32) -> u64 {
    let wanted = max_connections as u64 + u64::from(pool_size) + SPARE_FILE_DESCRIPTORS;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given, which lives here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        log::warn!("cannot read the open-files limit: {}", io::Error::last_os_error());
        return 0;
    }
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit { rlim_cur: wanted.min(limit.rlim_max), rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if limit.rlim_cur < wanted {
        log::warn!(
            "only {} open files are allowed (ulimit -n); MAX_CONNECTIONS={max_connections} needs about {wanted}: \
             past that, accepting pauses until connections close",
            limit.rlim_cur
        );
    }
    limit.rlim_cur
}

/// Binds the listening socket for `host:port` (port 0 picks a free port).
pub fn bind(host: &str, port: u16) -> io::Result<TcpListener> {
    let mut last_err = None;
    for addr in (host, port).to_socket_addrs()? {
        match bind_one(addr) {
            Ok(listener) => return Ok(listener),
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))))
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux.
    // tiny_http writes a response's head and body separately; without it, a
    // body that does not fit the first segment waits for the client's delayed
    // ACK (about 40 ms).
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

impl HttpServer {
    /// Starts `workers` threads serving requests from `listener`.
    pub fn start(listener: TcpListener, state: Arc<AppState>, workers: usize) -> io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let control = Socket::from(listener.try_clone()?);
        let limits = transport_limits(&state.config.http);
        let observer: Arc<dyn tiny_http::Observer> = Arc::new(TransportMetrics);
        let (access, access_writer) = AccessLog::start();
        let stopping = Arc::new(AtomicBool::new(false));
        let fast = Arc::new(FastAnswers {
            state: Arc::clone(&state),
            access: RwLock::new(Some(access.clone())),
            stopping: Arc::clone(&stopping),
        });
        let fast_path: Arc<dyn tiny_http::FastPath> = fast.clone();
        let server = Arc::new(
            tiny_http::Server::from_listener_with(listener, limits, Some(observer), Some(fast_path))
                .map_err(io::Error::other)?,
        );
        let (notify, stopped) = mpsc::channel();
        let stop =
            StopHandle { stopping, listener: Arc::new(Mutex::new(Some(control))), server: Arc::clone(&server), notify };
        let workers = (0..workers)
            .map(|i| {
                let (server, state, stop, access) =
                    (Arc::clone(&server), Arc::clone(&state), stop.clone(), access.clone());
                thread::Builder::new()
                    .name(format!("http-worker-{i}"))
                    .spawn(move || worker(&server, &state, &stop, &access))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(HttpServer { addr, workers, access_writer, fast, stop, stopped })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops this server.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Blocks until the server is asked to stop, then waits up to `drain` for
    /// the workers to finish the requests already accepted. Returns why it
    /// stopped and whether every worker finished in time.
    pub fn wait(self, drain: Duration) -> (StopReason, bool) {
        let reason =
            self.stopped.recv().unwrap_or_else(|_| StopReason::Requested("every stop handle was dropped".into()));
        log::info!("stopping: {reason}; finishing requests already accepted (at most {}s)", drain.as_secs());
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline && self.workers.iter().any(|w| !w.is_finished()) {
            thread::sleep(Duration::from_millis(10));
        }
        let drained = self.workers.iter().all(|w| w.is_finished());
        if drained {
            for worker in self.workers {
                let _ = worker.join();
            }
            // The workers held the last senders: this returns once every
            // access line is written.
            // The connection threads may still answer probes; they stop
            // logging here so the log's last line can be written.
            self.fast.access.write().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(writer) = self.access_writer {
                writer.finish();
            }
        }
        (reason, drained)
    }
}

/// One worker thread. A panic that escapes request handling (it should
/// not) is counted and the loop starts again, so the pool never shrinks.
fn worker(server: &tiny_http::Server, state: &AppState, stop: &StopHandle, access: &AccessLog) {
    let _alive = metrics::InFlight::start(&metrics::WORKERS_ALIVE);
    loop {
        match panic::catch_unwind(AssertUnwindSafe(|| serve_until_stopped(server, state, stop, access))) {
            Ok(()) => return,
            Err(payload) => {
                metrics::WORKER_RESTARTS.fetch_add(1, Ordering::Relaxed);
                log::error!("a worker failed outside a request ({}); it starts again", panic_message(&*payload));
            }
        }
    }
}

fn serve_until_stopped(server: &tiny_http::Server, state: &AppState, stop: &StopHandle, access: &AccessLog) {
    // Routing, the handler, writing the answer and dropping the request are
    // all covered: a panic anywhere costs this one request (answered 500
    // when the request is dropped unanswered).
    let serve = |rq| {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| handle(state, stop, access, rq))) {
            log::error!("a request failed outside its handler: {}", panic_message(&*payload));
        }
    };
    loop {
        match server.recv_timeout(IDLE_POLL) {
            Ok(Some(rq)) => serve(rq),
            // Stopping: leave once no connection is still receiving a
            // request it will hand on and nothing is queued. A request is
            // queued before it stops counting as received, so one that ended
            // its reading after the wait above gave up is found by the
            // second look at the queue.
            Ok(None) if stop.is_stopping() && server.requests_being_read() == 0 => match server.try_recv() {
                Ok(Some(rq)) => serve(rq),
                _ => return,
            },
            Ok(None) => {}
            // Once stopping, the accept loop failing is the shutdown we caused.
            Err(_) if stop.is_stopping() => {}
            Err(err) => {
                log::error!("the listener failed and accepts no more connections: {err}");
                stop.stop(StopReason::ListenerFailed(err.to_string()));
            }
        }
    }
}

/// Serves one request: route it (the router turns failures and panics into
/// responses), write the answer, count it, and log one access line. The
/// request's body is already in memory: the listener read it within its limits.
fn handle(state: &AppState, stop: &StopHandle, access: &AccessLog, mut rq: tiny_http::Request) {
    let started = Instant::now();
    let _in_flight = metrics::InFlight::start(&metrics::HTTP_IN_FLIGHT);
    let request = to_request(&mut rq);
    let routed = router::route(state, &request);
    let mut response = routed.response;
    if stop.is_stopping() {
        // Keep-alive clients should reconnect elsewhere: this process is leaving.
        response = response.with_header("Connection", "close");
    }
    let status = response.status;
    // The query string is left out of every log line: clients sometimes put
    // credentials there.
    let (method, path) = (request.method(), request.path());
    if let Err(err) = rq.respond(to_tiny(response)) {
        log::warn!("failed to send {status} for {method} {path}: {err}");
    }
    let elapsed = started.elapsed();
    state.metrics.observe(method.label(), routed.template, status, elapsed);
    access.record(method, path, status, elapsed);
}

/// The request as handlers see it; headers and body move over without a copy.
fn to_request(rq: &mut tiny_http::Request) -> Request {
    let method = Method::parse(rq.method().as_str());
    let headers = rq.take_headers();
    let remote = rq.remote_addr().map(|addr| addr.ip());
    Request::new(method, rq.url().to_owned(), headers, rq.take_body()).with_remote(remote)
}

/// The response in tiny_http's type. Headers with bytes HTTP does not allow
/// are dropped (and logged) rather than sent broken.
fn to_tiny(response: Response) -> tiny_http::Response<io::Cursor<Vec<u8>>> {
    let content_type = response.content_type();
    let Response { status, headers, body, delay, .. } = response;
    let length = body.len();
    let mut tiny =
        tiny_http::Response::new(tiny_http::StatusCode(status), Vec::new(), io::Cursor::new(body), Some(length), None)
            // Never chunked: some clients reject a body without a length.
            .with_chunked_threshold(usize::MAX);
    let content_type = content_type.map(|v| ("Content-Type", v.to_owned()));
    for (name, value) in content_type.into_iter().chain(headers) {
        match tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            Ok(header) => tiny.add_header(header),
            Err(()) => log::error!("dropped response header {name}: value is not valid in HTTP"),
        }
    }
    match delay {
        Some(delay) => tiny.with_delay(delay),
        None => tiny,
    }
}

/// Answers, on the connection's own thread, what needs no worker (see
/// `router::answer_at_once`): liveness and readiness stay answered even when
/// every worker waits on the database.
struct FastAnswers {
    state: Arc<AppState>,
    /// Taken away when the server stops, so the access log can finish.
    access: RwLock<Option<AccessLog>>,
    stopping: Arc<AtomicBool>,
}

impl tiny_http::FastPath for FastAnswers {
    fn answer(&self, rq: &tiny_http::Request) -> Option<tiny_http::ResponseBox> {
        let started = Instant::now();
        let method = Method::parse(rq.method().as_str());
        let routed = router::answer_at_once(&self.state, &method, rq.url())?;
        let mut response = routed.response;
        if self.stopping.load(Ordering::SeqCst) {
            response = response.with_header("Connection", "close");
        }
        let status = response.status;
        let path = rq.url().split_once('?').map_or(rq.url(), |(path, _)| path);
        let elapsed = started.elapsed();
        self.state.metrics.observe(method.label(), routed.template, status, elapsed);
        if let Some(access) = &*self.access.read().unwrap_or_else(|e| e.into_inner()) {
            access.record(&method, path, status, elapsed);
        }
        Some(to_tiny(response).boxed())
    }
}

/// Reports what the listener does on its own to the metrics registry.
struct TransportMetrics;

impl tiny_http::Observer for TransportMetrics {
    fn event(&self, event: tiny_http::Event) {
        use tiny_http::Event;
        let counter = match event {
            Event::Accepted => {
                metrics::HTTP_CONNECTIONS_OPEN.fetch_add(1, Ordering::Relaxed);
                &metrics::HTTP_CONNECTIONS_ACCEPTED
            }
            Event::Closed => {
                metrics::HTTP_CONNECTIONS_OPEN.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Event::RequestStarted => {
                metrics::HTTP_REQUESTS_RECEIVING.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Event::RequestEnded => {
                metrics::HTTP_REQUESTS_RECEIVING.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Event::Evicted => &metrics::HTTP_CONNECTIONS_EVICTED,
            Event::Refused => &metrics::HTTP_CONNECTIONS_REFUSED,
            Event::IdleTimeout => &metrics::HTTP_IDLE_TIMEOUTS,
            Event::Rejected(status) => return metrics::count_transport_rejection(status),
            Event::AcceptPaused => &metrics::HTTP_ACCEPT_PAUSES,
            Event::SlowWrite => &metrics::HTTP_SLOW_WRITES,
            Event::WriteFailed => &metrics::HTTP_WRITE_FAILURES,
            Event::WriteRefused => &metrics::HTTP_WRITE_REFUSALS,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The listener's limits from the configuration.
fn transport_limits(http: &HttpLimits) -> tiny_http::Limits {
    tiny_http::Limits {
        max_head_bytes: http.max_header_bytes,
        max_headers: MAX_HEADER_FIELDS,
        max_body_bytes: MAX_BODY_BYTES,
        max_buffered_body_bytes: http.max_buffered_body_bytes,
        read_timeout: http.read_timeout,
        keepalive_timeout: http.keepalive_timeout,
        write_timeout: http.write_timeout,
        max_connections: http.max_connections,
        ..tiny_http::Limits::default()
    }
}
