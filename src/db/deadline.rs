//! A client-side deadline for PostgreSQL statements. `statement_timeout` is
//! applied by the server, so a server that is frozen (stopped with SIGSTOP,
//! a paused VM) while its kernel still acknowledges packets never applies
//! it; nor do TCP keepalives or the TCP user timeout fire, as every packet
//! is acknowledged. The sync driver has no read timeout of its own, so a
//! statement sent to such a server would wait until it resumes.
//!
//! Each pooled connection finds its own socket when it opens (the server
//! reports the connection's two addresses; the one socket of this process
//! with the same pair is it) and gets a [`Watch`]. Every statement on it
//! sets a deadline, [`limit`] from its start, and clears it when the answer
//! comes. One watchdog thread for the process looks every [`TICK`]: a
//! statement past its deadline has its socket shut down, which ends the
//! wait with an error at once; the connection is then dropped by the pool
//! and the request answered 503.
//!
//! The socket is shut down only under the lock its connection takes to
//! forget it before closing it, so a descriptor number reused by another
//! file is never touched. A connection whose socket cannot be found (a
//! proxy or an address translation between the service and the server, a
//! Unix socket) runs without a watch, with a warning logged once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::DbError;

/// How often the watchdog looks for statements past their deadline: the
/// most a cut comes after the deadline.
pub const TICK: Duration = Duration::from_millis(100);
/// How much longer than `statement_timeout` a statement may take before its
/// connection is cut: a server that answers cancels the statement itself,
/// first, and keeps the connection.
pub const MARGIN: Duration = Duration::from_secs(1);

/// The client-side deadline of one statement for a `statement_timeout`;
/// `None` (no deadline) when it is 0, switched off.
pub fn limit(statement_timeout: Duration) -> Option<Duration> {
    (!statement_timeout.is_zero()).then(|| statement_timeout + MARGIN)
}

/// The watch over one connection's socket.
pub(crate) struct Watch {
    slot: Option<Arc<Slot>>,
    limit: Duration,
}

struct Slot {
    state: Mutex<State>,
    /// The watchdog shut the socket down: the connection is unusable.
    cut: AtomicBool,
}

struct State {
    /// The connection's socket, while the connection owns it.
    fd: Option<RawFd>,
    /// When the running statement is due; `None` between statements.
    due: Option<Instant>,
}

/// Every watched connection (dropped ones are pruned on each tick).
static WATCHED: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());
/// Whether the watchdog thread runs (set once, at the first watch).
static WATCHDOG: OnceLock<bool> = OnceLock::new();
/// Whether the "socket not found" warning was logged.
static WARNED: AtomicBool = AtomicBool::new(false);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watch {
    /// No watch: statements wait as long as the driver does.
    pub(crate) fn off() -> Watch {
        Watch { slot: None, limit: Duration::ZERO }
    }

    /// The watch for a connection just opened, statements cut after `limit`
    /// (none when `None`). Asks the server for the connection's addresses:
    /// one round trip, once per connection.
    pub(crate) fn attach(client: &mut postgres::Client, limit: Option<Duration>) -> Result<Watch, postgres::Error> {
        let Some(limit) = limit else { return Ok(Watch::off()) };
        const ADDRESSES: &str = "SELECT host(inet_client_addr()), inet_client_port()::text, \
                                 host(inet_server_addr()), inet_server_port()::text";
        let rows = match client.simple_query(ADDRESSES) {
            Ok(rows) => rows,
            // The server answered, but not this: run without a watch rather
            // than refuse a connection that works.
            Err(err) if err.code().is_some() => {
                return Ok(unwatched(&format!("the server did not report the connection's addresses ({err})")));
            }
            Err(err) => return Err(err),
        };
        let row = rows.into_iter().find_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        });
        let address = |ip: usize, port: usize| -> Option<SocketAddr> {
            let row = row.as_ref()?;
            Some(SocketAddr::new(row.get(ip)?.parse().ok()?, row.get(port)?.parse().ok()?))
        };
        let found = match (address(0, 1), address(2, 3)) {
            (Some(ours), Some(theirs)) => match find_socket(ours, theirs) {
                Ok(Some(fd)) => Ok(fd),
                Ok(None) => Err("no socket of this process has the addresses the server reports for the connection \
                                 (a proxy or an address translation in between)"
                    .to_owned()),
                Err(err) => Err(format!("cannot list the files of this process: {err}")),
            },
            _ => Err("the server reports no TCP addresses for the connection (a Unix socket)".to_owned()),
        };
        let fd = match found {
            Ok(fd) => fd,
            Err(why) => return Ok(unwatched(&why)),
        };
        if !*WATCHDOG.get_or_init(start_watchdog) {
            return Ok(Watch::off());
        }
        let slot = Arc::new(Slot { state: Mutex::new(State { fd: Some(fd), due: None }), cut: AtomicBool::new(false) });
        lock(&WATCHED).push(Arc::downgrade(&slot));
        Ok(Watch { slot: Some(slot), limit })
    }

    /// Runs one statement (or one step of one: prepare, execute, commit)
    /// under the deadline. When the watchdog cuts it, `statement` returns
    /// the driver's error for the closed socket; [`Watch::error`] tells why.
    pub(crate) fn run<T, E>(&self, statement: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let Some(slot) = &self.slot else { return statement() };
        lock(&slot.state).due = Some(Instant::now() + self.limit);
        let out = statement();
        lock(&slot.state).due = None;
        out
    }

    /// Whether the watchdog cut this connection (it cannot be used again).
    pub(crate) fn was_cut(&self) -> bool {
        self.slot.as_ref().is_some_and(|slot| slot.cut.load(Ordering::Relaxed))
    }

    /// The error to report for `err`, which a statement on this connection
    /// returned: the deadline when the watchdog cut it, else `err`'s own.
    pub(crate) fn error(&self, err: postgres::Error) -> DbError {
        if self.was_cut() {
            return DbError::Unavailable(format!(
                "no answer from the database within {} ms; the connection was closed",
                self.limit.as_millis()
            ));
        }
        err.into()
    }

    /// Forgets the socket: called before the connection closes it.
    pub(crate) fn release(&self) {
        if let Some(slot) = &self.slot {
            lock(&slot.state).fd = None;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.release();
    }
}

/// No watch, because of `why` (logged once per process).
fn unwatched(why: &str) -> Watch {
    if !WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "a PostgreSQL connection runs without a client-side deadline, only the server's statement_timeout: \
             {why} (logged once)"
        );
    }
    Watch::off()
}

/// Starts the watchdog thread; whether it runs.
fn start_watchdog() -> bool {
    let started = thread::Builder::new().name("db-deadline".into()).spawn(|| {
        loop {
            thread::sleep(TICK);
            let now = Instant::now();
            lock(&WATCHED).retain(|weak| match weak.upgrade() {
                Some(slot) => {
                    cut_if_due(&slot, now);
                    true
                }
                None => false,
            });
        }
    });
    match started {
        Ok(_) => true,
        Err(err) => {
            log::warn!("cannot start the database deadline watchdog ({err}): statements have no client-side deadline");
            false
        }
    }
}

/// Shuts the socket of `slot` down when its statement is past its deadline.
fn cut_if_due(slot: &Slot, now: Instant) {
    let mut state = lock(&slot.state);
    let (Some(fd), Some(due)) = (state.fd, state.due) else { return };
    if due > now {
        return;
    }
    // Marked before the socket is shut down, under the lock: the statement
    // ends as soon as it is, and `Watch::run` takes this lock before
    // returning, so whoever looks at `was_cut` after the statement sees it.
    slot.cut.store(true, Ordering::Relaxed);
    // SAFETY: a plain system call on a descriptor number. The connection
    // owning `fd` forgets it (under this lock) before closing it, so while
    // the lock is held `fd` is still that connection's socket.
    let done = unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } == 0;
    state.due = None;
    drop(state);
    crate::metrics::DB_STATEMENTS_CUT.fetch_add(1, Ordering::Relaxed);
    let how = if done { "closed" } else { "closed (it was already)" };
    log::warn!("a database statement ran past its client-side deadline: its connection was {how}");
}

/// The socket of this process whose local address is `ours` and whose peer
/// is `theirs`: at most one can be (a TCP connection is named by that pair).
/// Failing that, the one socket whose local address is `ours`, if only one
/// is: behind an address translation of the server's side only (a
/// Kubernetes Service's cluster IP), the server reports the pod's address
/// as its own while this process sees the service's; our own address is
/// still the one the server reports.
fn find_socket(ours: SocketAddr, theirs: SocketAddr) -> std::io::Result<Option<RawFd>> {
    let entries = std::fs::read_dir("/proc/self/fd")?;
    let local: Vec<RawFd> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| address(fd, Side::Local).map(canonical) == Some(canonical(ours)))
        .collect();
    let exact = local.iter().copied().find(|&fd| address(fd, Side::Peer).map(canonical) == Some(canonical(theirs)));
    Ok(exact.or(match local[..] {
        [only] => Some(only),
        _ => None,
    }))
}

#[derive(Clone, Copy)]
enum Side {
    Local,
    Peer,
}

/// The local or peer address of socket `fd`; `None` for anything else.
fn address(fd: RawFd, side: Side) -> Option<SocketAddr> {
    // SAFETY: zeroed bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let ptr = (&raw mut storage).cast::<libc::sockaddr>();
    // SAFETY: `storage` holds any address and `len` says how large it is. A
    // descriptor closed meanwhile makes the call fail; one reused describes
    // another file, which the caller's comparison rejects.
    let status = unsafe {
        match side {
            Side::Local => libc::getsockname(fd, ptr, &mut len),
            Side::Peer => libc::getpeername(fd, ptr, &mut len),
        }
    };
    if status != 0 {
        return None;
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in, as its family says.
            let v4 = unsafe { &*(&raw const storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6, as its family says.
            let v6 = unsafe { &*(&raw const storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(v6.sin6_port)))
        }
        _ => None,
    }
}

/// `addr` with an IPv4-mapped IPv6 address written as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn watched(fd: RawFd, limit: Duration) -> Watch {
        assert!(*WATCHDOG.get_or_init(start_watchdog));
        let slot = Arc::new(Slot { state: Mutex::new(State { fd: Some(fd), due: None }), cut: AtomicBool::new(false) });
        lock(&WATCHED).push(Arc::downgrade(&slot));
        Watch { slot: Some(slot), limit }
    }

    #[test]
    fn a_socket_is_found_by_its_two_addresses() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();

        let found = find_socket(client.local_addr().unwrap(), client.peer_addr().unwrap()).unwrap();
        let reversed = find_socket(server.local_addr().unwrap(), server.peer_addr().unwrap()).unwrap();
        let translated = find_socket(client.local_addr().unwrap(), "10.0.0.1:5432".parse().unwrap()).unwrap();
        let unknown = find_socket("127.0.0.1:1".parse().unwrap(), client.peer_addr().unwrap()).unwrap();

        assert_eq!(found, Some(client.as_raw_fd()));
        assert_eq!(reversed, Some(server.as_raw_fd()), "each end is a socket of its own");
        assert_eq!(translated, Some(client.as_raw_fd()), "the only socket with that local address");
        assert_eq!(unknown, None);
    }

    #[test]
    fn a_read_past_its_deadline_is_cut() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_silent, _) = listener.accept().unwrap();
        let watch = watched(client.as_raw_fd(), Duration::from_millis(200));

        let started = Instant::now();
        let read = watch.run(|| client.read(&mut [0; 1]));
        let took = started.elapsed();

        assert!(matches!(read, Ok(0)), "the read ends as at the end of the stream: {read:?}");
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(1), "{took:?}");
        assert!(watch.was_cut());
    }

    #[test]
    fn a_statement_that_ends_in_time_is_left_alone() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let watch = watched(client.as_raw_fd(), Duration::from_millis(150));

        std::io::Write::write_all(&mut server, b"x").unwrap();
        let read = watch.run(|| client.read(&mut [0; 1]));
        thread::sleep(Duration::from_millis(150) + 2 * TICK);

        assert!(matches!(read, Ok(1)));
        assert!(!watch.was_cut(), "no deadline between statements");
    }

    #[test]
    fn a_released_socket_is_never_touched() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_silent, _) = listener.accept().unwrap();
        let watch = watched(client.as_raw_fd(), Duration::ZERO);

        watch.release();
        let _ = watch.run(|| {
            thread::sleep(2 * TICK);
            Ok::<_, ()>(())
        });

        assert!(!watch.was_cut());
    }
}
