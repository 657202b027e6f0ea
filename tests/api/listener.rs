//! The listener's own guarantees, end to end: a client that stalls, stops
//! reading, or holds idle connections never takes a worker; `Connection:
//! close` really closes; the connection cap makes room for a fresh client.
//! (The hostile-request corpus, `corpus.rs`, covers framing byte by byte.)

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::both_backends;
use crate::helpers::TestApp;

/// Reads until `needle` has arrived (or the stream ends or times out).
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Whether the server has closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err) if matches!(err.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return true,
            Err(_) => return false,
        }
    }
}

fn connect(app: &TestApp) -> TcpStream {
    let stream = TcpStream::connect(app.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Time of one `GET /livez` on a fresh connection.
fn livez_time(app: &TestApp) -> Duration {
    let started = Instant::now();
    let mut stream = connect(app);
    stream.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let answer = read_until(&mut stream, "alive");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    started.elapsed()
}

both_backends!(
    fn a_stalled_body_holds_no_worker_and_gets_408(backend) {
        let app = spawn_app_with(backend, &[("WORKERS", "1"), ("HTTP_READ_TIMEOUT_MS", "1000")]);
        let mut stalled = connect(&app);
        stalled
            .write_all(b"POST /api/v1/pizzas HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"name\":")
            .unwrap();

        let fresh = livez_time(&app);
        let answer = read_until(&mut stalled, "}");

        assert!(fresh < Duration::from_millis(500), "the only worker was free: {fresh:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        assert!(closed_within(&mut stalled, Duration::from_secs(5)));
    }
);

both_backends!(
    fn a_client_that_does_not_read_its_answers_holds_no_worker(backend) {
        let app = spawn_app_with(backend, &[("WORKERS", "1"), ("HTTP_WRITE_TIMEOUT_MS", "1000")]);
        let document_len = app.get("/openapi.json").body.len();
        // Far more answer bytes than any socket buffers hold, never read.
        let count = (64 * 1024 * 1024 / document_len).max(100);
        let mut reader_that_never_reads = connect(&app);
        let pipelined = "GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(count);
        reader_that_never_reads.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = reader_that_never_reads.write_all(pipelined.as_bytes());
        std::thread::sleep(Duration::from_millis(300));

        let fresh = livez_time(&app);

        assert!(fresh < Duration::from_millis(500), "the only worker was free: {fresh:?}");
        assert!(app.metric("pizza_api_http_slow_writes_total").unwrap() >= 1.0);
        // The stuck write gives up after HTTP_WRITE_TIMEOUT_MS and the connection closes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.metric("pizza_api_http_write_failures_total").unwrap() < 1.0 {
            assert!(Instant::now() < deadline, "the write to a client that never reads never gave up");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(app.metric("pizza_api_workers"), Some(1.0));
    }
);

both_backends!(
    fn a_413_on_a_chunked_body_closes_so_its_rest_is_never_a_request(backend) {
        let app = spawn_app_with(backend, &[("WORKERS", "2")]);
        let mut stream = connect(&app);
        let mut request = b"POST /api/v1/pizzas HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        // Two chunks: the first within the limit, the second past it by one byte.
        for size in [1024 * 1024, 1] {
            request.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            request.extend(std::iter::repeat_n(b'x', size));
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\nGET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = stream.write_all(&request);

        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);

        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "nothing after the 413 was served: {answer}");
    }
);

both_backends!(
    fn expect_100_continue_gets_its_interim_answer_before_the_body(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        let body = r#"{"name":"Continued","price":3.5}"#;
        let mut stream = connect(&app);
        let head = format!(
            "POST /api/v1/pizzas HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();

        let interim = read_until(&mut stream, "\r\n\r\n");
        stream.write_all(body.as_bytes()).unwrap();
        let answer = read_until(&mut stream, "Continued");

        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    }
);

both_backends!(
    fn an_idle_keep_alive_connection_is_closed_after_its_timeout(backend) {
        let app = spawn_app_with(backend, &[("HTTP_KEEPALIVE_TIMEOUT_MS", "300")]);
        let mut stream = connect(&app);
        stream.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(read_until(&mut stream, "alive").starts_with("HTTP/1.1 200"));
        let started = Instant::now();

        assert!(closed_within(&mut stream, Duration::from_secs(3)), "the idle connection stayed open");
        assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
        assert!(app.metric("pizza_api_http_idle_timeouts_total").unwrap() >= 1.0);
    }
);

both_backends!(
    fn at_the_connection_cap_the_longest_idle_makes_room_then_newcomers_get_503(backend) {
        let app = spawn_app_with(backend, &[("MAX_CONNECTIONS", "3"), ("HTTP_KEEPALIVE_TIMEOUT_MS", "30000")]);
        // Three idle keep-alive connections, the first the longest idle.
        let mut idle: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut stream = connect(&app);
                stream.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                assert!(read_until(&mut stream, "alive").starts_with("HTTP/1.1 200"));
                std::thread::sleep(Duration::from_millis(50));
                stream
            })
            .collect();

        let fresh = livez_time(&app);

        assert!(fresh < Duration::from_millis(500), "{fresh:?}");
        assert!(closed_within(&mut idle[0], Duration::from_secs(2)), "the longest-idle connection made room");
        assert!(!closed_within(&mut idle[2], Duration::from_millis(200)), "the newest idle one stays");

        // Now fill the cap with connections in the middle of a request: none is
        // idle. (A connection counts as mid-request once its thread has read
        // the first bytes: give it time to, even on a busy machine.)
        let busy: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut stream = connect(&app);
                stream.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n").unwrap();
                std::thread::sleep(Duration::from_millis(300));
                stream
            })
            .collect();
        let mut refused = connect(&app);
        let answer = read_until(&mut refused, "}");

        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("Retry-After: 1"), "{answer}");
        assert!(answer.contains(r#""error":"Service unavailable""#), "{answer}");
        drop(busy);
        let deadline = Instant::now() + Duration::from_secs(5);
        while app.metric("pizza_api_http_connections_refused_total").is_none_or(|v| v < 1.0) {
            assert!(Instant::now() < deadline, "the refusal was not counted");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(app.metric("pizza_api_http_connections_evicted_total").unwrap() >= 1.0);
    }
);

both_backends!(
    fn unread_answers_together_stay_within_the_buffered_bytes_budget(backend) {
        // The smallest budget allowed (1 MiB) and the API page's 1.7 MB script,
        // asked for again and again on connections that never read. Pipelined,
        // so that once the socket buffers are full (the kernel takes a few MB
        // on loopback) each further answer would wait, whole, in the process:
        // without the budget, 2,048 such connections would hold 3.5 GB.
        let app = spawn_app_with(backend, &[("HTTP_MAX_BUFFERED_BODY_BYTES", "1048576"), ("HTTP_WRITE_TIMEOUT_MS", "1000")]);
        let pipelined = "GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n".repeat(8);
        let mut holders: Vec<TcpStream> = (0..8)
            .map(|_| {
                let mut stream = connect(&app);
                stream.write_all(pipelined.as_bytes()).unwrap();
                stream
            })
            .collect();

        // A rest over 1 MiB never fits the budget: such a connection is closed
        // as soon as its answer stops fitting the socket (a smaller rest may
        // wait for HTTP_WRITE_TIMEOUT_MS, within the budget, then close).
        for stream in &mut holders {
            assert!(closed_within(stream, Duration::from_secs(10)), "every connection that does not read is closed");
        }
        let refused = app.metric("pizza_api_http_write_refusals_total").unwrap_or(0.0);
        assert!(refused >= 4.0, "refused {refused}, slow writes {:?}", app.metric("pizza_api_http_slow_writes_total"));
        assert_eq!(app.get("/livez").status, 200);
        assert!(app.get("/docs/swagger-ui-bundle.js").body.len() > 1_000_000, "a reading client gets it whole");
    }
);
