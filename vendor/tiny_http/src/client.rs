//! (pizza-api patch) One thread per connection reads whole requests — head and
//! body — within the limits and deadlines of [`Limits`], and hands each
//! complete request to the workers' queue. Anything wrong with the bytes is
//! answered here (400, 408, 413, 417, 431, 501, 503, 505, always with a JSON
//! body and `Connection: close`), so a worker never waits on a client.
//!
//! Responses are written by the worker that answers, without blocking: a
//! response that does not fit the socket at once is finished by a helper
//! thread. The connection thread reads the next request meanwhile (pipelining
//! works) but hands it on only once the previous response is complete, so
//! responses never interleave and a `Connection: close` answer ends the
//! connection before anything else is read from it.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Header, HeaderField, Method};
use crate::connection::Connection;
use crate::limits::{Event, FastPath, Limits, Observer};
use crate::util::MessagesQueue;
use crate::Message;

/// What every connection of one server shares.
pub(crate) struct Context {
    pub(crate) limits: Limits,
    pub(crate) messages: Arc<MessagesQueue<Message>>,
    pub(crate) registry: Registry,
    pub(crate) observer: Option<Arc<dyn Observer>>,
    pub(crate) fast_path: Option<Arc<dyn FastPath>>,
    /// Bytes of request bodies held in memory right now, by all connections.
    body_bytes: AtomicUsize,
    /// The server is stopping: finish the requests being read, take no more.
    draining: AtomicBool,
    /// Responses to send later (`Response::with_delay`) and whether the timer
    /// thread that sends them runs.
    delayed: Mutex<Delayed>,
    delayed_changed: Condvar,
}

/// Responses waiting for their time, at most one per connection (the next
/// request of a connection waits for its previous response).
#[derive(Default)]
struct Delayed {
    due: Vec<(Instant, Arc<Shared>, Vec<u8>, bool)>,
    timer_running: bool,
}

impl Context {
    pub(crate) fn new(
        limits: Limits,
        messages: Arc<MessagesQueue<Message>>,
        observer: Option<Arc<dyn Observer>>,
        fast_path: Option<Arc<dyn FastPath>>,
    ) -> Context {
        Context {
            limits,
            messages,
            registry: Registry::default(),
            observer,
            fast_path,
            body_bytes: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            delayed: Mutex::new(Delayed::default()),
            delayed_changed: Condvar::new(),
        }
    }

    /// Stops taking new requests on open connections: idle ones close now,
    /// the others after the request they are reading has been answered.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.registry.close_idle();
        // Delayed responses go out now.
        self.delayed_changed.notify_all();
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub(crate) fn event(&self, event: Event) {
        if let Some(observer) = &self.observer {
            observer.event(event);
        }
    }

    /// Takes `bytes` from the body budget; false when it is used up.
    fn reserve_body(&self, bytes: usize) -> bool {
        let max = self.limits.max_buffered_body_bytes;
        self.body_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(bytes).filter(|&n| n <= max))
            .is_ok()
    }

    fn release_body(&self, bytes: usize) {
        self.body_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The body of a request, holding its share of the body budget until dropped.
pub(crate) struct Body {
    pub(crate) data: Vec<u8>,
    reserved: usize,
    ctx: Option<Arc<Context>>,
}

impl Body {
    pub(crate) fn empty() -> Body {
        Body { data: Vec::new(), reserved: 0, ctx: None }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(ctx) = &self.ctx {
            ctx.release_body(self.reserved);
        }
    }
}

// ---------------------------------------------------------------------------
// The open connections

/// Every open connection, so that the accept loop can count them and close
/// the longest-idle one at the cap.
#[derive(Default)]
pub(crate) struct Registry {
    open: Mutex<HashMap<u64, Arc<Shared>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn insert(&self, shared: Arc<Shared>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(id, shared);
        id
    }

    fn remove(&self, id: u64) {
        lock(&self.open).remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.open).len()
    }

    /// Closes every connection waiting for its next request.
    fn close_idle(&self) {
        for shared in lock(&self.open).values() {
            if shared.idle_since().is_some() {
                shared.close_now();
            }
        }
    }

    /// Connections reading a request that has not been handed on yet.
    pub(crate) fn reading(&self) -> usize {
        lock(&self.open).values().filter(|shared| shared.is_reading()).count()
    }

    /// Closes the connection that has waited longest for its next request;
    /// false when no connection is idle.
    pub(crate) fn evict_longest_idle(&self) -> bool {
        let mut open = lock(&self.open);
        let oldest = open
            .iter()
            .filter_map(|(id, shared)| shared.idle_since().map(|since| (since, *id)))
            .min()
            .map(|(_, id)| id);
        match oldest.and_then(|id| open.remove(&id)) {
            Some(shared) => {
                shared.close_now();
                true
            }
            None => false,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One connection's state, shared by its thread, the worker answering its
/// current request, and the registry.
pub(crate) struct Shared {
    stream: Connection,
    state: Mutex<State>,
    changed: Condvar,
    ctx: Arc<Context>,
}

#[derive(Default)]
struct State {
    /// Set while the connection waits for the first byte of its next request.
    idle_since: Option<Instant>,
    /// A request was handed to the workers and its response is not complete.
    pending: bool,
    /// Nothing more is to be read or answered on this connection.
    closing: bool,
    /// The connection thread waits for `pending` to clear.
    waiting: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn idle_since(&self) -> Option<Instant> {
        let state = self.state();
        state.idle_since.filter(|_| !state.pending && !state.closing)
    }

    fn is_reading(&self) -> bool {
        let state = self.state();
        state.idle_since.is_none() && !state.pending && !state.closing
    }

    fn set_idle(&self) {
        self.state().idle_since = Some(Instant::now());
    }

    /// Marks the connection busy; false when it was closed meanwhile.
    fn set_busy(&self) -> bool {
        let mut state = self.state();
        state.idle_since = None;
        !state.closing
    }

    fn close_now(&self) {
        self.state().closing = true;
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Waits until the previous response is complete; false when the
    /// connection is to be closed instead of read further.
    fn wait_response_done(&self) -> bool {
        let mut state = self.state();
        while state.pending {
            state.waiting = true;
            state = self.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.waiting = false;
        !state.closing
    }

    fn set_pending(&self) {
        self.state().pending = true;
    }

    fn finish(&self, close: bool) {
        let mut state = self.state();
        state.pending = false;
        state.closing |= close;
        if state.waiting {
            self.changed.notify_all();
        }
    }

    /// Writes a whole response without blocking the caller: what does not fit
    /// the socket now is written by a helper thread (bounded by the write
    /// timeout). With `close`, the connection ends after this response.
    pub(crate) fn send_response(self: &Arc<Self>, bytes: Vec<u8>, close: bool) -> io::Result<()> {
        let mut written = 0;
        while written < bytes.len() {
            match self.stream.send_nonblocking(&bytes[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) => {
                    self.fail();
                    return Err(err);
                }
            }
        }
        if written == bytes.len() {
            self.complete(close);
            return Ok(());
        }
        // What is left waits for the client in memory: it takes its share of
        // the buffered-bytes budget (shared with request bodies), so clients
        // that ask for large answers and do not read them cannot make the
        // process hold more than that. Past it the connection is closed.
        let mut rest = bytes;
        rest.drain(..written);
        rest.shrink_to_fit();
        if !self.ctx.reserve_body(rest.len()) {
            self.ctx.event(Event::WriteRefused);
            self.fail();
            return Ok(());
        }
        self.ctx.event(Event::SlowWrite);
        let shared = Arc::clone(self);
        let spawned = thread::Builder::new().name("http-slow-write".into()).stack_size(64 * 1024).spawn(move || {
            let result = (&shared.stream).write_all(&rest);
            shared.ctx.release_body(rest.len());
            drop(rest);
            match result {
                Ok(()) => shared.complete(close),
                Err(_) => {
                    shared.ctx.event(Event::WriteFailed);
                    shared.fail();
                }
            }
        });
        if let Err(err) = spawned {
            self.fail();
            return Err(err);
        }
        Ok(())
    }

    fn complete(&self, close: bool) {
        if close {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        self.finish(close);
    }

    fn fail(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        self.finish(true);
    }

    /// Like [`Shared::send_response`], `delay` from now, without blocking the
    /// caller (see `Response::with_delay`). Sent at once when the bytes do not
    /// fit the buffered-bytes budget, or when the timer thread cannot start.
    pub(crate) fn send_response_later(self: &Arc<Self>, bytes: Vec<u8>, close: bool, delay: Duration) {
        let ctx = &self.ctx;
        if ctx.draining() || !ctx.reserve_body(bytes.len()) {
            let _ = self.send_response(bytes, close);
            return;
        }
        let mut delayed = lock(&ctx.delayed);
        delayed.due.push((Instant::now() + delay, Arc::clone(self), bytes, close));
        if delayed.timer_running {
            ctx.delayed_changed.notify_all();
            return;
        }
        let timer_ctx = Arc::clone(ctx);
        let spawned = thread::Builder::new()
            .name("http-delayed".into())
            .stack_size(64 * 1024)
            .spawn(move || send_delayed(&timer_ctx));
        match spawned {
            Ok(_) => delayed.timer_running = true,
            Err(_) => {
                let (_, shared, bytes, close) = delayed.due.pop().expect("just pushed");
                drop(delayed);
                ctx.release_body(bytes.len());
                let _ = shared.send_response(bytes, close);
            }
        }
    }
}

/// The timer thread of delayed responses: sends each when due (all of them
/// at once when the server stops) and ends when none is left.
fn send_delayed(ctx: &Arc<Context>) {
    let mut delayed = lock(&ctx.delayed);
    loop {
        let now = Instant::now();
        let draining = ctx.draining();
        let mut ready = Vec::new();
        let mut i = 0;
        while i < delayed.due.len() {
            if draining || delayed.due[i].0 <= now {
                ready.push(delayed.due.swap_remove(i));
            } else {
                i += 1;
            }
        }
        if !ready.is_empty() {
            drop(delayed);
            for (_, shared, bytes, close) in ready {
                ctx.release_body(bytes.len());
                let _ = shared.send_response(bytes, close);
            }
            delayed = lock(&ctx.delayed);
            continue;
        }
        let Some(next) = delayed.due.iter().map(|entry| entry.0).min() else {
            delayed.timer_running = false;
            return;
        };
        let wait = next.saturating_duration_since(now);
        delayed = ctx.delayed_changed.wait_timeout(delayed, wait).map(|(guard, _)| guard).unwrap_or_else(|poisoned| {
            poisoned.into_inner().0
        });
    }
}

// ---------------------------------------------------------------------------
// Reading with deadlines

/// A read buffer over the connection whose every blocking read ends at a
/// deadline.
struct Reader {
    shared: Arc<Shared>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket's receive timeout as last set, to skip needless syscalls.
    timeout: Option<Duration>,
}

/// Why reading stopped.
enum Stop {
    /// The client closed, reset, or went silent between requests: close quietly.
    Quiet,
    /// Answer with this status and message, then close.
    Reject(u16, &'static str, String),
}

const INITIAL_BUFFER: usize = 4096;

impl Reader {
    fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes, keeping at most `max_buffered` unconsumed. `Ok(0)`
    /// is the end of the stream.
    fn fill(&mut self, deadline: Instant, max_buffered: usize) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < max_buffered {
                let grown = (self.buf.len() * 2).clamp(INITIAL_BUFFER, max_buffered);
                self.buf.resize(grown, 0);
            } else {
                return Err(io::Error::new(ErrorKind::OutOfMemory, "read buffer full"));
            }
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            // Whole milliseconds, at least one: fewer distinct values to set.
            let timeout = Duration::from_millis(remaining.as_millis().max(1) as u64);
            if self.timeout != Some(timeout) {
                self.shared.stream.set_read_timeout(Some(timeout))?;
                self.timeout = Some(timeout);
            }
            match (&self.shared.stream).read_into(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Err(ErrorKind::TimedOut.into());
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The connection loop

/// Serves one connection until it closes. Runs on the connection's own thread.
pub(crate) fn serve(stream: Connection, remote_addr: Option<SocketAddr>, ctx: Arc<Context>) {
    let shared = Arc::new(Shared {
        stream,
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        ctx: Arc::clone(&ctx),
    });
    let id = ctx.registry.insert(Arc::clone(&shared));
    let mut reader = Reader { shared: Arc::clone(&shared), buf: Vec::new(), start: 0, end: 0, timeout: None };
    let stop = serve_requests(&mut reader, remote_addr, &ctx);
    if let Stop::Reject(status, error, details) = stop {
        // The previous response goes out first; then this answer, then close.
        shared.wait_response_done();
        reject(&shared, status, error, &details);
        ctx.event(Event::Rejected(status));
        linger(&mut reader);
    } else {
        shared.wait_response_done();
    }
    ctx.registry.remove(id);
    ctx.event(Event::Closed);
}

fn serve_requests(reader: &mut Reader, remote_addr: Option<SocketAddr>, ctx: &Arc<Context>) -> Stop {
    let limits = &ctx.limits;
    let shared = Arc::clone(&reader.shared);
    let mut silence = limits.read_timeout;
    loop {
        if reader.available().is_empty() {
            shared.set_idle();
            if ctx.draining() {
                return Stop::Quiet;
            }
            match reader.fill(Instant::now() + silence, limits.max_head_bytes) {
                Ok(0) => return Stop::Quiet,
                Ok(_) => {}
                Err(err) => {
                    if err.kind() == ErrorKind::TimedOut && silence == limits.keepalive_timeout {
                        ctx.event(Event::IdleTimeout);
                    }
                    return Stop::Quiet;
                }
            }
        }
        if !shared.set_busy() {
            return Stop::Quiet;
        }
        silence = limits.keepalive_timeout;
        ctx.event(Event::RequestStarted);
        let stop = serve_request(reader, remote_addr, ctx);
        ctx.event(Event::RequestEnded);
        if let Some(stop) = stop {
            return stop;
        }
    }
}

/// Reads one request and hands it on; `Some` when the connection is to end.
fn serve_request(reader: &mut Reader, remote_addr: Option<SocketAddr>, ctx: &Arc<Context>) -> Option<Stop> {
    let limits = &ctx.limits;
    let shared = Arc::clone(&reader.shared);
    {
        let deadline = Instant::now() + limits.read_timeout;
        let head = match read_head(reader, deadline, limits) {
            Ok(head) => head,
            Err(stop) => return Some(stop),
        };
        let body = match read_body(reader, &head, deadline, ctx) {
            Ok(body) => body,
            Err(stop) => return Some(stop),
        };
        if !shared.wait_response_done() {
            return Some(Stop::Quiet);
        }
        let keep_alive = head.keep_alive && !ctx.draining();
        shared.set_pending();
        let request = crate::request::new_request(
            head.method,
            head.target,
            head.version,
            head.headers,
            remote_addr,
            body,
            Arc::clone(&shared),
            !keep_alive,
        );
        match ctx.fast_path.as_ref().and_then(|fast| fast.answer(&request)) {
            // Answered here and now: no worker involved.
            Some(response) => {
                let _ = request.respond(response);
            }
            None => ctx.messages.push(Message::NewRequest(request)),
        }
        if !keep_alive {
            return Some(Stop::Quiet);
        }
    }
    None
}

/// How long and how much a rejected connection is drained before it closes.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// After a rejection, reads and drops what the client is still sending (a
/// body it writes in full before reading any answer), through the fixed read
/// buffer and within [`LINGER_TIME`] and [`LINGER_BYTES`], so that closing does
/// not reset the connection before the client has read the answer.
fn linger(reader: &mut Reader) {
    let _ = reader.shared.stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIME;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        reader.start = 0;
        reader.end = 0;
        match reader.fill(deadline, reader.buf.len().max(INITIAL_BUFFER)) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Writes a JSON error answer of the transport's own, then closes the write side.
fn reject(shared: &Shared, status: u16, error: &str, details: &str) {
    let body = format!(r#"{{"error":{},"details":{}}}"#, json_string(error), json_string(details));
    let retry = if status == 503 { "Retry-After: 1\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n",
        crate::StatusCode(status).default_reason_phrase(),
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    let _ = (&shared.stream).write_all(&bytes);
}

/// A JSON string literal for text we write ourselves (ASCII messages).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || !c.is_ascii() => out.push_str(&format!("\\u{:04x}", c as u32 & 0xffff)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The answer a client gets when the connection cap is reached and no idle
/// connection can make room.
pub(crate) fn refuse(stream: &Connection) {
    let body = r#"{"error":"Service unavailable","details":"too many open connections; retry shortly"}"#;
    let bytes = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.send_nonblocking(bytes.as_bytes());
    let _ = stream.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// The request head

/// A parsed and checked request head.
struct Head {
    method: Method,
    target: String,
    version: HTTPVersion,
    headers: Vec<Header>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn bad_request(details: impl Into<String>) -> Stop {
    Stop::Reject(400, "Bad request", details.into())
}

/// Reads up to the blank line that ends the head, then parses and checks it.
fn read_head(reader: &mut Reader, deadline: Instant, limits: &Limits) -> Result<Head, Stop> {
    let mut scan = HeadScan::default();
    let mut line_checked = false;
    let head_len = loop {
        match scan_head(reader.available(), &mut scan) {
            Scan::Complete(len) => break len,
            Scan::Invalid(details) => return Err(bad_request(details)),
            Scan::Partial => {}
        }
        if scan.past_request_line && !line_checked {
            // A line that is no HTTP request line (another protocol's
            // greeting) is answered now, not when the head times out.
            check_request_line(reader.available())?;
            line_checked = true;
        }
        if reader.available().len() >= limits.max_head_bytes {
            return Err(too_large_head(limits));
        }
        match reader.fill(deadline, limits.max_head_bytes) {
            Ok(0) => return Err(Stop::Quiet),
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::TimedOut => return Err(timed_out(limits)),
            Err(err) if err.kind() == ErrorKind::OutOfMemory => return Err(too_large_head(limits)),
            Err(_) => return Err(Stop::Quiet),
        }
    };
    if head_len > limits.max_head_bytes {
        return Err(too_large_head(limits));
    }
    let head = parse_head(&reader.available()[..head_len], limits)?;
    reader.consume(head_len);
    Ok(head)
}

fn too_large_head(limits: &Limits) -> Stop {
    Stop::Reject(
        431,
        "Request header fields too large",
        format!(
            "the request line and headers may take at most {} bytes in at most {} fields",
            limits.max_head_bytes, limits.max_headers
        ),
    )
}

fn timed_out(limits: &Limits) -> Stop {
    Stop::Reject(
        408,
        "Request timeout",
        format!("the request did not arrive whole within {} ms", limits.read_timeout.as_millis()),
    )
}

enum Scan {
    /// The head ends after this many bytes (the blank line included).
    Complete(usize),
    /// Not complete yet.
    Partial,
    Invalid(&'static str),
}

/// Where [`scan_head`] left off, so that each byte is looked at once.
#[derive(Default)]
struct HeadScan {
    pos: usize,
    /// A byte other than CR or LF was seen (leading empty lines are allowed).
    started: bool,
    /// The request line has ended.
    past_request_line: bool,
}

/// Looks for the end of the head (CRLF CRLF), refusing at once the bytes no
/// HTTP/1.1 head may hold: a bare LF or CR, NUL and other control characters,
/// and anything outside ASCII in the request line. Garbage (a TLS handshake,
/// binary data) is answered at its first byte instead of filling the buffer.
fn scan_head(data: &[u8], scan: &mut HeadScan) -> Scan {
    while scan.pos < data.len() {
        let i = scan.pos;
        match data[i] {
            b'\n' => {
                if i == 0 || data[i - 1] != b'\r' {
                    return Scan::Invalid("a line of the request head ends in a bare LF; lines end in CRLF");
                }
                if scan.started {
                    if scan.past_request_line && i >= 3 && &data[i - 3..=i] == b"\r\n\r\n" {
                        return Scan::Complete(i + 1);
                    }
                    scan.past_request_line = true;
                }
            }
            b'\r' => match data.get(i + 1) {
                None => return Scan::Partial,
                Some(b'\n') => {}
                Some(_) => return Scan::Invalid("the request head holds a CR that is not followed by LF"),
            },
            b'\t' if scan.past_request_line => {}
            0..=0x1f | 0x7f => return Scan::Invalid("the request head holds a control character"),
            0x80..=0xff if !scan.past_request_line => {
                return Scan::Invalid("the request line holds a byte outside ASCII; percent-encode it");
            }
            _ => scan.started = true,
        }
        scan.pos += 1;
    }
    Scan::Partial
}

/// The most header fields a request may carry, whatever `Limits::max_headers` says.
const MAX_HEADER_SLOTS: usize = 256;

fn parse_head(raw: &[u8], limits: &Limits) -> Result<Head, Stop> {
    // Empty lines before the request line are skipped (RFC 9112 §2.2).
    let skip = raw.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let raw = &raw[skip..];
    check_version(raw)?;
    // On the stack: no allocation per request for the parser's field slots.
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADER_SLOTS];
    let fields = &mut slots[..limits.max_headers.min(MAX_HEADER_SLOTS)];
    let mut parsed = httparse::Request::new(fields);
    match parsed.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad_request("the request head is incomplete")),
        Err(httparse::Error::TooManyHeaders) => return Err(too_large_head(limits)),
        Err(err) => return Err(bad_request(format!("the request head is malformed: {}", parse_error(err)))),
    }
    let method_text = parsed.method.unwrap_or_default();
    let method: Method = method_text.parse().map_err(|_| bad_request("the method is not a valid token"))?;
    let version = HTTPVersion(1, parsed.version.unwrap_or(1));
    let target = origin_form(parsed.path.unwrap_or_default())?;
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderField::from_bytes(field.name.as_bytes())
            .map_err(|_| bad_request("a header name holds a byte outside ASCII"))?;
        let value = ascii::AsciiString::from_ascii(trim_ows(field.value))
            .map_err(|_| bad_request(format!("the value of {} holds a byte outside ASCII", field.name)))?;
        headers.push(Header { field: name, value });
    }
    let framing = framing(&headers, &version)?;
    if version == (1, 1) {
        match headers.iter().filter(|h| h.field.equiv("Host")).count() {
            1 => {}
            0 => return Err(bad_request("an HTTP/1.1 request must carry a Host header")),
            _ => return Err(bad_request("the request carries more than one Host header")),
        }
    }
    let expect_continue = match header_values(&headers, "Expect").as_slice() {
        [] => false,
        [value] if value.eq_ignore_ascii_case("100-continue") => version == (1, 1),
        _ => {
            return Err(Stop::Reject(
                417,
                "Expectation failed",
                "the only expectation this server meets is Expect: 100-continue".into(),
            ));
        }
    };
    let keep_alive = keep_alive(&headers, &version);
    Ok(Head { method, target, version, headers, framing, keep_alive, expect_continue })
}

/// Checks the first line of a head whose headers have not all arrived.
fn check_request_line(raw: &[u8]) -> Result<(), Stop> {
    let skip = raw.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let raw = &raw[skip..];
    let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else { return Ok(()) };
    check_version(raw)?;
    let mut line = raw[..end + 2].to_vec();
    line.extend_from_slice(b"\r\n");
    match httparse::Request::new(&mut []).parse(&line) {
        Ok(_) => Ok(()),
        Err(err) => Err(bad_request(format!("the request line is malformed: {}", parse_error(err)))),
    }
}

fn parse_error(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::HeaderName => "invalid byte in a header name",
        httparse::Error::HeaderValue => "invalid byte in a header value",
        httparse::Error::NewLine => "invalid line break",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or request line",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// Refuses HTTP versions this server does not speak with 505 (an HTTP/2
/// connection preface included) before the rest is parsed.
fn check_version(raw: &[u8]) -> Result<(), Stop> {
    let line_end = raw.iter().position(|&b| b == b'\r').unwrap_or(raw.len());
    let line = &raw[..line_end];
    let Some(version) = line.rsplit(|&b| b == b' ').next() else { return Ok(()) };
    let Some(number) = version.strip_prefix(b"HTTP/") else { return Ok(()) };
    let well_formed = matches!(number, [major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit());
    if well_formed && number != b"1.0" && number != b"1.1" {
        return Err(Stop::Reject(
            505,
            "HTTP version not supported",
            "this server speaks HTTP/1.1 and HTTP/1.0 only".into(),
        ));
    }
    Ok(())
}

/// The request target as a path and query: the origin form as sent, the
/// absolute form (`http://host/path`) reduced to its path, `*` as is.
fn origin_form(target: &str) -> Result<String, Stop> {
    if target.starts_with('/') || target == "*" {
        return Ok(target.to_owned());
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return Err(bad_request("the request target must be a path starting with /"));
    };
    match rest.find(['/', '?']) {
        Some(at) if rest.as_bytes()[at] == b'/' => Ok(rest[at..].to_owned()),
        Some(at) => Ok(format!("/{}", &rest[at..])),
        None => Ok("/".to_owned()),
    }
}

fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(value.len());
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &value[start..end]
}

/// Every comma-separated element of every header called `name`, trimmed.
fn header_values<'h>(headers: &'h [Header], name: &'static str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|h| h.field.equiv(name))
        .flat_map(|h| h.value.as_str().split(','))
        .map(str::trim)
        .collect()
}

/// How the body is framed (RFC 9112 §6), refusing every ambiguity.
fn framing(headers: &[Header], version: &HTTPVersion) -> Result<Framing, Stop> {
    let lengths = header_values(headers, "Content-Length");
    let has_te = headers.iter().any(|h| h.field.equiv("Transfer-Encoding"));
    if has_te {
        if *version == (1, 0) {
            return Err(bad_request("Transfer-Encoding is not allowed in an HTTP/1.0 request"));
        }
        if !lengths.is_empty() {
            return Err(bad_request("a request may not carry both Content-Length and Transfer-Encoding"));
        }
        let codings = header_values(headers, "Transfer-Encoding");
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            [.., last] if !last.eq_ignore_ascii_case("chunked") => {
                Err(bad_request("the last transfer coding must be chunked"))
            }
            _ if codings.iter().filter(|c| c.eq_ignore_ascii_case("chunked")).count() > 1 => {
                Err(bad_request("chunked may be applied only once"))
            }
            _ => Err(Stop::Reject(
                501,
                "Not implemented",
                "the only transfer coding this server accepts is chunked".into(),
            )),
        };
    }
    let Some(first) = lengths.first() else { return Ok(Framing::None) };
    if lengths.iter().any(|l| l != first) {
        return Err(bad_request("the request carries conflicting Content-Length values"));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_request("Content-Length must be a decimal number of bytes"));
    }
    // More digits than u64 holds is simply too large; it is refused later.
    Ok(Framing::Length(first.parse().unwrap_or(u64::MAX)))
}

fn keep_alive(headers: &[Header], version: &HTTPVersion) -> bool {
    let options = header_values(headers, "Connection");
    let has = |token: &str| options.iter().any(|o| o.eq_ignore_ascii_case(token));
    if *version == (1, 0) { has("keep-alive") && !has("close") } else { !has("close") }
}

// ---------------------------------------------------------------------------
// The body

fn too_large_body(limits: &Limits) -> Stop {
    Stop::Reject(
        413,
        "Request body too large",
        format!("the limit is {} bytes", limits.max_body_bytes),
    )
}

fn busy() -> Stop {
    Stop::Reject(503, "Service unavailable", "too many request bodies in flight; retry shortly".into())
}

/// Reads the whole body the head announces, within the body limit, the
/// shared body budget and the request's deadline.
fn read_body(reader: &mut Reader, head: &Head, deadline: Instant, ctx: &Arc<Context>) -> Result<Body, Stop> {
    let limits = &ctx.limits;
    if let Framing::Length(n) = head.framing {
        if n > limits.max_body_bytes as u64 {
            return Err(too_large_body(limits));
        }
    }
    if head.framing == Framing::None || head.framing == Framing::Length(0) {
        return Ok(Body::empty());
    }
    if head.expect_continue && reader.available().is_empty() {
        if !reader.shared.wait_response_done() {
            return Err(Stop::Quiet);
        }
        if (&reader.shared.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return Err(Stop::Quiet);
        }
    }
    let mut body = Body { data: Vec::new(), reserved: 0, ctx: Some(Arc::clone(ctx)) };
    let mut sink = BodySink { body: &mut body, ctx, max: limits.max_body_bytes };
    match head.framing {
        Framing::Length(n) => read_exact_into(reader, n as usize, &mut sink, deadline, limits)?,
        Framing::Chunked => read_chunked(reader, &mut sink, deadline, limits)?,
        Framing::None => {}
    }
    Ok(body)
}

/// Appends to a body, growing it (and its budget share) only as bytes arrive.
struct BodySink<'a> {
    body: &'a mut Body,
    ctx: &'a Context,
    max: usize,
}

impl BodySink<'_> {
    fn push(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let data = &mut self.body.data;
        let needed = data.len() + bytes.len();
        if needed > self.max {
            return Err(too_large_body(&self.ctx.limits));
        }
        if needed > data.capacity() {
            let capacity = needed.max(data.capacity() * 2).clamp(1024, self.max);
            let more = capacity - self.body.reserved;
            if !self.ctx.reserve_body(more) {
                return Err(busy());
            }
            self.body.reserved = capacity;
            data.reserve_exact(capacity - data.len());
        }
        data.extend_from_slice(bytes);
        Ok(())
    }
}

fn fill_or_stop(reader: &mut Reader, deadline: Instant, limits: &Limits) -> Result<(), Stop> {
    match reader.fill(deadline, INITIAL_BUFFER.max(limits.max_head_bytes)) {
        Ok(0) => Err(Stop::Quiet),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == ErrorKind::TimedOut => Err(timed_out(limits)),
        Err(_) => Err(Stop::Quiet),
    }
}

fn read_exact_into(
    reader: &mut Reader,
    mut n: usize,
    sink: &mut BodySink<'_>,
    deadline: Instant,
    limits: &Limits,
) -> Result<(), Stop> {
    while n > 0 {
        if reader.available().is_empty() {
            fill_or_stop(reader, deadline, limits)?;
        }
        let take = reader.available().len().min(n);
        sink.push(&reader.available()[..take])?;
        reader.consume(take);
        n -= take;
    }
    Ok(())
}

/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Reads one CRLF-terminated line (without the CRLF) of at most `max` bytes.
fn read_line(reader: &mut Reader, deadline: Instant, limits: &Limits, max: usize) -> Result<Vec<u8>, Stop> {
    loop {
        let data = reader.available();
        if let Some(at) = data.iter().position(|&b| b == b'\n') {
            if at == 0 || data[at - 1] != b'\r' || at > max + 1 {
                return Err(bad_request("a chunk-size or trailer line is malformed"));
            }
            let line = data[..at - 1].to_vec();
            reader.consume(at + 1);
            return Ok(line);
        }
        if data.len() > max + 1 {
            return Err(bad_request("a chunk-size or trailer line is too long"));
        }
        fill_or_stop(reader, deadline, limits)?;
    }
}

fn read_chunked(reader: &mut Reader, sink: &mut BodySink<'_>, deadline: Instant, limits: &Limits) -> Result<(), Stop> {
    loop {
        let line = read_line(reader, deadline, limits, MAX_CHUNK_LINE)?;
        // chunk-size [ BWS ";" chunk-ext ]: hex digits first, nothing before them.
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = &size_text[..size_text.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(0, |i| i + 1)];
        if size_text.is_empty() || !size_text.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad_request("a chunk size is not a hexadecimal number"));
        }
        if line.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return Err(bad_request("a chunk-size line holds a control character"));
        }
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            // All hex digits yet beyond 64 bits: merely too large.
            .unwrap_or(u64::MAX);
        if size == 0 {
            // Trailer fields are read and dropped, within the head's limit.
            let mut trailer_bytes = 0;
            loop {
                let trailer = read_line(reader, deadline, limits, MAX_CHUNK_LINE)?;
                if trailer.is_empty() {
                    return Ok(());
                }
                if !is_field_line(&trailer) {
                    return Err(bad_request("a trailer line is not a header field"));
                }
                trailer_bytes += trailer.len() + 2;
                if trailer_bytes > limits.max_head_bytes {
                    return Err(too_large_head(limits));
                }
            }
        }
        if size > (limits.max_body_bytes - sink.body.data.len()) as u64 {
            return Err(too_large_body(limits));
        }
        read_exact_into(reader, size as usize, sink, deadline, limits)?;
        if !read_line(reader, deadline, limits, 0)?.is_empty() {
            return Err(bad_request("a chunk is longer than its size says"));
        }
    }
}

/// `name: value` with a token name and no control characters but tab.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else { return false };
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    colon > 0
        && line[..colon].iter().all(is_tchar)
        && line[colon + 1..].iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Head, u16> {
        match scan_head(raw.as_bytes(), &mut HeadScan::default()) {
            Scan::Complete(len) => parse_head(&raw.as_bytes()[..len], &Limits::default()).map_err(|stop| match stop {
                Stop::Reject(status, ..) => status,
                Stop::Quiet => 0,
            }),
            Scan::Invalid(_) => Err(400),
            Scan::Partial => Err(1),
        }
    }

    #[test]
    fn a_plain_request_parses() {
        let parsed = head("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n").ok().unwrap();
        assert_eq!(parsed.target, "/a?b=1");
        assert_eq!(parsed.framing, Framing::None);
        assert!(parsed.keep_alive);
    }

    #[test]
    fn conflicting_lengths_are_refused() {
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").err(), Some(400));
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n").err(), Some(400));
    }

    #[test]
    fn identical_lengths_are_one_length() {
        let parsed = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").ok().unwrap();
        assert_eq!(parsed.framing, Framing::Length(3));
    }

    #[test]
    fn a_signed_or_spaced_length_is_refused() {
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n").err(), Some(400));
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3 3\r\n\r\n").err(), Some(400));
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n").err(), Some(400));
    }

    #[test]
    fn a_length_beyond_u64_is_merely_too_large() {
        let parsed = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n").ok().unwrap();
        assert_eq!(parsed.framing, Framing::Length(u64::MAX));
    }

    #[test]
    fn length_with_transfer_encoding_is_refused() {
        let raw = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head(raw).err(), Some(400));
    }

    #[test]
    fn only_chunked_is_a_known_transfer_coding() {
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n").err(), Some(400));
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").err(), Some(501));
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n").err(), Some(400));
        let parsed = head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n").ok().unwrap();
        assert_eq!(parsed.framing, Framing::Chunked);
    }

    #[test]
    fn http2_is_answered_505() {
        assert_eq!(head("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").err(), Some(505));
        assert_eq!(head("GET / HTTP/2.0\r\nHost: x\r\n\r\n").err(), Some(505));
        assert_eq!(head("GET / HTTP/1.1x\r\nHost: x\r\n\r\n").err(), Some(400));
        assert_eq!(head("GET / HTTP/2\r\nHost: x\r\n\r\n").err(), Some(400));
    }

    #[test]
    fn bytes_no_head_may_hold_are_refused_at_once() {
        assert_eq!(head("GET / HTTP/1.1\nHost: x\n\n").err(), Some(400));
        assert_eq!(head("\x16\x03\x01\x02\x00\x01").err(), Some(400));
        assert_eq!(head("GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n").err(), Some(400));
        assert_eq!(head("GET / HTTP/1.1\r\nHost: x\r\nX: a\u{e9}\r\n\r\n").err(), Some(400));
        assert_eq!(head("GET / HTTP/1.1\r\nHost : x\r\n\r\n").err(), Some(400));
        assert_eq!(head("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n").err(), Some(400));
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(head("GET / HTTP/1.1\r\n\r\n").err(), Some(400));
        assert_eq!(head("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").err(), Some(400));
        assert!(head("GET / HTTP/1.0\r\n\r\n").is_ok());
    }

    #[test]
    fn too_many_headers_are_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..200 {
            raw.push_str(&format!("X-{i}: y\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(head(&raw).err(), Some(431));
    }

    #[test]
    fn the_absolute_form_is_reduced_to_its_path() {
        assert_eq!(head("GET http://x/a?b HTTP/1.1\r\nHost: x\r\n\r\n").ok().unwrap().target, "/a?b");
        assert_eq!(head("GET http://x HTTP/1.1\r\nHost: x\r\n\r\n").ok().unwrap().target, "/");
        assert_eq!(head("GET x/a HTTP/1.1\r\nHost: x\r\n\r\n").err(), Some(400));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok().unwrap().keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").ok().unwrap().keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").ok().unwrap().keep_alive);
    }

    #[test]
    fn an_unknown_expectation_is_417() {
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n").err(), Some(417));
        assert!(head("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n\r\n").ok().unwrap().expect_continue);
    }

    #[test]
    fn another_protocols_greeting_is_refused_when_its_line_ends() {
        assert!(check_request_line(b"SSH-2.0-OpenSSH_9.2\r\n").is_err());
        assert!(check_request_line(b"EHLO example.com\r\n").is_err());
        assert!(check_request_line(b"GET /a HTTP/1.1\r\nHost").is_ok());
        assert!(check_request_line(b"GET /a HT").is_ok());
    }

    #[test]
    fn trailer_lines_must_be_header_fields() {
        assert!(is_field_line(b"X-Sum: 1"));
        assert!(!is_field_line(b"no colon"));
        assert!(!is_field_line(b"X: a\0b"));
        assert!(!is_field_line(b": empty name"));
    }

    #[test]
    fn json_strings_escape_what_json_requires() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
