//! The access log: one line per request (method, path, status, duration),
//! in the same form as every other log line.
//!
//! Workers hand finished lines to one writer thread, which writes whatever
//! has piled up with a single `write` to standard error. Logging each request
//! directly would cost every request a turn on the standard-error lock and
//! a few system calls of its own; under load that halved the throughput.

use std::io::Write;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// The log target of access lines (`LOG_LEVEL=warn` turns them off).
pub const TARGET: &str = "pizza_api::access";

/// How long the writer lets lines gather after each write.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// The timestamp form `simple_logger` uses for UTC.
const TIMESTAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Where workers send access lines; clone one per worker.
#[derive(Clone)]
pub struct AccessLog {
    lines: Option<Sender<String>>,
}

/// The writer thread; joining it waits until every line sent is written.
pub struct Writer(JoinHandle<()>);

impl Writer {
    /// Waits for the lines already sent, once every [`AccessLog`] is dropped.
    pub fn finish(self) {
        let _ = self.0.join();
    }
}

impl AccessLog {
    /// Starts the writer thread, unless access lines are switched off.
    pub fn start() -> (AccessLog, Option<Writer>) {
        if !log::log_enabled!(target: TARGET, log::Level::Info) {
            return (AccessLog { lines: None }, None);
        }
        let (tx, rx) = mpsc::channel();
        match thread::Builder::new().name("access-log".into()).spawn(move || write_lines(rx)) {
            Ok(handle) => (AccessLog { lines: Some(tx) }, Some(Writer(handle))),
            Err(err) => {
                log::warn!("cannot start the access log thread ({err}); requests are not logged");
                (AccessLog { lines: None }, None)
            }
        }
    }

    /// Logs one answered request.
    pub fn record(&self, method: &tiny_http::Method, path: &str, status: u16, elapsed: Duration) {
        let Some(lines) = &self.lines else { return };
        let now = OffsetDateTime::now_utc().format(TIMESTAMP).unwrap_or_default();
        let millis = elapsed.as_secs_f64() * 1e3;
        let _ = lines.send(format!("{now} INFO  [{TARGET}] {method} {path} {status} {millis:.3}ms\n"));
    }
}

fn write_lines(lines: Receiver<String>) {
    let mut batch = String::with_capacity(64 * 1024);
    // Blocks for the first line, then takes whatever else is waiting.
    while let Ok(line) = lines.recv() {
        batch.push_str(&line);
        while batch.len() < 60 * 1024 {
            match lines.try_recv() {
                Ok(line) => batch.push_str(&line),
                Err(_) => break,
            }
        }
        let _ = std::io::stderr().lock().write_all(batch.as_bytes());
        batch.clear();
        // Lines sent while this thread sleeps queue up without waking it:
        // under load that is one write per pause instead of a wake-up per request.
        thread::sleep(BATCH_PAUSE);
    }
}
