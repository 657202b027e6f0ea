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

use crate::rest::Method;
use time::format_description::FormatItem;
use time::macros::format_description;

/// The log target of access lines (`LOG_LEVEL=warn` turns them off).
pub const TARGET: &str = "pizza_api::access";

/// How long the writer lets lines gather after each write.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// The whole seconds of the timestamp form `simple_logger` uses for UTC
/// (`2026-11-27T02:10:57.123Z`); the milliseconds are added per line.
const SECOND_PREFIX: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

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
    pub fn record(&self, method: &Method, path: &str, status: u16, elapsed: Duration) {
        let Some(lines) = &self.lines else { return };
        let now = OffsetDateTime::now_utc();
        // Integers: formatting a float costs more than the rest of the line.
        let micros = elapsed.as_micros();
        let line = SECOND.with_borrow_mut(|(second, text)| {
            // Formatting a date costs more than the rest of the line: each
            // worker formats it once a second and adds the milliseconds.
            if *second != now.unix_timestamp() || text.is_empty() {
                *second = now.unix_timestamp();
                *text = now.format(SECOND_PREFIX).unwrap_or_default();
            }
            format!(
                "{text}.{:03}Z INFO  [{TARGET}] {method} {path} {status} {}.{:03}ms\n",
                now.millisecond(),
                micros / 1000,
                micros % 1000
            )
        });
        let _ = lines.send(line);
    }
}

thread_local! {
    /// This thread's last formatted second: (Unix seconds, "2026-11-27T02:10:57").
    static SECOND: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((0, String::new())) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_looks_like_every_other_log_line() {
        let (tx, rx) = mpsc::channel();
        let log = AccessLog { lines: Some(tx) };

        log.record(&Method::Get, "/health", 200, Duration::from_micros(1500));
        log.record(&Method::Post, "/api/v1/pizzas", 201, Duration::from_micros(250));

        for (line, rest) in [
            (rx.recv().unwrap(), "GET /health 200 1.500ms\n"),
            (rx.recv().unwrap(), "POST /api/v1/pizzas 201 0.250ms\n"),
        ] {
            let (stamp, tail) = line.split_once(' ').unwrap();
            assert_eq!(tail, format!("INFO  [pizza_api::access] {rest}"));
            assert_eq!(stamp.len(), "2026-11-27T02:10:57.123Z".len(), "{stamp}");
            assert!(OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).is_ok(), "{stamp}");
        }
    }
}
