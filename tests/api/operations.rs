//! Operations: graceful shutdown, the healthcheck subcommand, /metrics
//! (checked with the Prometheus reference parser), /openapi.json.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    fn sigterm_finishes_accepted_requests_then_exits_zero(backend) {
        let mut app = spawn_app_with(backend, &[("WORKERS", "4")]);
        let token = app.admin_token();
        // Three creates whose bodies arrive in two parts: the server has
        // accepted them and is reading their bodies when SIGTERM comes.
        let body = format!(r#"{{"name":"Drained","price":7.5,"description":"{}"}}"#, "d".repeat(1500));
        let body = body.as_str();
        let mut clients: Vec<std::net::TcpStream> = (0..3)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(app.addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let head = format!(
                    "POST /api/v1/pizzas HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    &body[..10]
                );
                stream.write_all(head.as_bytes()).unwrap();
                stream
            })
            .collect();
        // /metrics is answered on its connection's thread, while it still
        // counts as being received itself: 3 creates + that request. (Waiting
        // for 3 let SIGTERM come while one create's first bytes were still
        // unread: an idle connection, closed by the drain.)
        wait_for_gauge(&app, "pizza_api_http_requests_receiving", 4);

        assert!(Command::new("kill").args(["-TERM", &app.pid().to_string()]).status().unwrap().success());
        std::thread::sleep(Duration::from_millis(300));
        let refused = std::net::TcpStream::connect(app.addr).is_err();
        let answers: Vec<String> = clients
            .iter_mut()
            .map(|stream| {
                if let Err(err) = stream.write_all(&body.as_bytes()[10..]) {
                    return format!("(the rest of the body could not be sent: {err})");
                }
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                answer
            })
            .collect();
        let status = app.wait_exit(Duration::from_secs(15));

        assert!(refused, "new connections are refused once stopping");
        for answer in &answers {
            assert!(
                answer.starts_with("HTTP/1.1 201"),
                "each accepted request got its normal answer: {answer}\nlog:\n{}",
                app.log()
            );
            assert!(answer.contains(r#""name":"Drained""#), "{answer}");
        }
        assert_eq!(status.and_then(|s| s.code()), Some(0), "exit status; log:\n{}", app.log());
        assert_eq!(app.db.query_i64("SELECT count(*) FROM pizzas WHERE name = 'Drained'"), 3, "all three were stored");
        let log = app.log();
        assert!(log.contains("stopping: SIGTERM;"), "{log}");
        assert!(log.contains("database connections closed"), "{log}");
    }
);

/// Waits until the gauge `name` in /metrics reads at least `n`.
fn wait_for_gauge(app: &TestApp, name: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let prefix = format!("{name} ");
    loop {
        let metrics = app.get("/metrics").body;
        let value = metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse::<u32>().ok());
        if value.is_some_and(|v| v >= n) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never reached {n} ({value:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

both_backends!(
    fn a_stop_that_outlasts_the_bound_still_exits(backend) {
        let mut app = spawn_app_with(backend, &[("WORKERS", "1"), ("SHUTDOWN_TIMEOUT", "1")]);
        let token = app.admin_token();
        // A client that announces a body and never finishes sending it: a
        // request that cannot complete in time, which the stop waits for.
        let mut stalled = std::net::TcpStream::connect(app.addr).unwrap();
        let head = format!(
            "POST /api/v1/pizzas HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"name\":"
        );
        stalled.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));

        let started = Instant::now();
        let status = app.terminate(Duration::from_secs(10));

        assert!(status.is_some(), "the process exited");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(app.log().contains("requests still running after 1s (SHUTDOWN_TIMEOUT)"), "{}", app.log());
    }
);

both_backends!(
    fn the_healthcheck_subcommand_reports_the_service_state(backend) {
        let app = spawn_app(backend);
        let binary = env!("CARGO_BIN_EXE_pizza-api");
        let run = |port: &str| {
            Command::new(binary)
                .arg("healthcheck")
                .env_clear()
                .env("APP_PORT", port)
                .env("APP_HOST", "0.0.0.0")
                .current_dir(std::env::temp_dir())
                .output()
                .unwrap()
        };
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();

        let healthy = run(&app.addr.port().to_string());
        let unreachable = run(&closed);

        assert_eq!(healthy.status.code(), Some(0), "{}", String::from_utf8_lossy(&healthy.stdout));
        assert_eq!(String::from_utf8_lossy(&healthy.stdout).trim(), "healthy");
        assert_eq!(unreachable.status.code(), Some(1));
    }
);

fn parse_metrics(python: &std::path::Path, text: &str) -> Vec<Value> {
    let mut child = Command::new(python)
        .arg(repo_path("scripts/metrics_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .and_then(|s| s["value"].as_f64())
}

both_backends!(
    fn metrics_parse_with_the_prometheus_parser_and_move_with_traffic(backend) {
        let Some(python) = python_with(&[("prometheus_client", "prometheus-client==0.21.1")]) else { return };
        let app = spawn_app(backend);
        let before = app.get("/metrics");
        assert_eq!(before.status, 200);
        assert!(before.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
        let before = parse_metrics(&python, &before.body);

        for _ in 0..3 {
            app.get("/api/v1/public/pizzas/1");
        }
        app.get("/api/v1/public/pizzas/999");
        app.get("/no/such/path/12345");
        app.admin_token();
        let after_text = app.get("/metrics").body;
        let after = parse_metrics(&python, &after_text);

        let read = [("method", "GET"), ("route", "/api/v1/public/pizzas/{id}"), ("status", "200")];
        let count = |s: &[Value]| sample(s, "pizza_api_http_requests_total", &read).unwrap_or(0.0);
        assert_eq!(count(&after) - count(&before), 3.0);
        let missing = [("method", "GET"), ("route", "/api/v1/public/pizzas/{id}"), ("status", "404")];
        assert_eq!(sample(&after, "pizza_api_http_requests_total", &missing), Some(1.0));
        assert_eq!(sample(&after, "pizza_api_http_requests_total", &[("route", "unmatched")]), Some(1.0));
        assert!(!after_text.contains("12345") && !after_text.contains("pizzas/1\""), "no raw paths as labels");
        let histogram_count =
            sample(&after, "pizza_api_http_request_duration_seconds_count", &[("route", "/api/v1/public/pizzas/{id}")]);
        assert_eq!(histogram_count, Some(4.0));
        assert!(sample(&after, "pizza_api_http_request_duration_seconds_bucket", &[("le", "+Inf")]).is_some());
        assert_eq!(sample(&after, "pizza_api_db_pool_max_connections", &[]), Some(8.0));
        assert!(sample(&after, "pizza_api_db_pool_connections", &[("state", "idle")]).is_some());
        assert!(sample(&after, "pizza_api_db_pool_wait_timeouts_total", &[]).is_some());
        assert_eq!(sample(&after, "pizza_api_bcrypt_in_flight", &[]), Some(0.0));
        assert!(sample(&after, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
        let driver = if backend == Backend::Sqlite { "sqlite" } else { "postgres" };
        assert_eq!(sample(&after, "pizza_api_build_info", &[("version", "1.0.0"), ("driver", driver)]), Some(1.0));
    }
);

both_backends!(
    fn the_openapi_document_describes_every_route(backend) {
        let app = spawn_app(backend);

        let response = app.get("/openapi.json");

        assert_eq!(response.status, 200);
        let doc = response.json();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            "/health",
            "/livez",
            "/metrics",
            "/openapi.json",
            "/api/v1/oauth/token",
            "/api/v1/public/pizzas",
            "/api/v1/public/pizzas/{id}",
            "/api/v1/pizzas",
            "/api/v1/pizzas/{id}",
            "/api/v1/clients",
            "/api/v1/clients/{id}",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is described");
        }
    }
);
