//! The throughput ceiling for `make bench`: a tiny_http server laid out like
//! pizza-api (one listener, `WORKERS` threads each looping on `recv()`) that
//! answers every request with the same fixed pizza JSON, touching no router,
//! no database and no logging. Whatever pizza-api reaches is read against
//! this: the gap is the cost of our own code, not of tiny_http or the kernel.
//!
//! Settings (environment):
//!   WORKERS             worker threads (default 4 × available cores, as pizza-api)
//!   CEILING_PORT        port on 127.0.0.1 (default 0: a free port)
//!   CEILING_BODY_FILE   the response body (default: a representative pizza)
//!
//! Prints `ceiling listening on http://127.0.0.1:PORT (N workers, B-byte body)`
//! on standard error once it accepts connections; runs until killed.

use std::env;
use std::fs;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use tiny_http::{Header, Response, Server};

/// A pizza as `GET /api/v1/public/pizzas/1` returns it, for runs that do not
/// pass the body of a live server.
const SAMPLE_PIZZA: &str = concat!(
    r#"{"id":1,"name":"Margherita","description":"","ingredients":["Tomato Sauce","Mozzarella","Basil"],"#,
    r#""price":10.99,"created_by":1,"created_at":"2026-01-01T00:00:00.000000Z","updated_at":"2026-01-01T00:00:00.000000Z"}"#
);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ceiling: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let workers = workers()?;
    let port = port()?;
    let body: Arc<[u8]> = body()?.into();
    // The same Content-Type pizza-api sends, so the bytes on the wire match.
    let content_type = Header::from_bytes("Content-Type", "application/json; charset=utf-8")
        .map_err(|()| "invalid Content-Type header".to_owned())?;

    let server =
        Server::http(("127.0.0.1", port)).map_err(|err| format!("cannot listen on 127.0.0.1:{port}: {err}"))?;
    let addr = server.server_addr().to_ip().ok_or("the listener has no IP address")?;
    let server = Arc::new(server);

    let handles = (0..workers)
        .map(|i| {
            let (server, body, content_type) = (Arc::clone(&server), Arc::clone(&body), content_type.clone());
            thread::Builder::new()
                .name(format!("ceiling-worker-{i}"))
                .spawn(move || serve(&server, &body, &content_type))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("cannot start a worker thread: {err}"))?;
    // Printed only once the workers exist: the bench reads this line as "ready".
    eprintln!("ceiling listening on http://{addr} ({workers} workers, {}-byte body)", body.len());

    for handle in handles {
        handle.join().map_err(|_| "a worker thread panicked".to_owned())?;
    }
    Ok(())
}

/// One worker: take a request, answer the fixed body, repeat. The body is
/// copied per response because pizza-api, too, builds a fresh `Vec` for each.
fn serve(server: &Server, body: &[u8], content_type: &Header) {
    loop {
        let request = match server.recv() {
            Ok(request) => request,
            Err(err) => {
                // recv() fails only when the listener is gone: nothing more will come.
                eprintln!("ceiling: the listener failed: {err}");
                return;
            }
        };
        let response = Response::from_data(body.to_vec())
            .with_header(content_type.clone())
            // As in pizza-api: always Content-Length, never chunked.
            .with_chunked_threshold(usize::MAX);
        if let Err(err) = request.respond(response) {
            eprintln!("ceiling: failed to send a response: {err}");
        }
    }
}

fn workers() -> Result<usize, String> {
    match env::var("WORKERS") {
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("WORKERS must be a positive integer, got {value:?}")),
        },
        // pizza-api's default: four workers per core, since workers block on the database.
        Err(_) => Ok(4 * thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

fn port() -> Result<u16, String> {
    match env::var("CEILING_PORT") {
        Ok(value) => value.trim().parse().map_err(|_| format!("CEILING_PORT must be a port number, got {value:?}")),
        Err(_) => Ok(0),
    }
}

fn body() -> Result<Vec<u8>, String> {
    match env::var("CEILING_BODY_FILE") {
        Ok(path) => fs::read(&path).map_err(|err| format!("cannot read CEILING_BODY_FILE {path}: {err}")),
        Err(_) => Ok(SAMPLE_PIZZA.as_bytes().to_vec()),
    }
}
