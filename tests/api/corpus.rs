//! Replays the hostile-request corpus (`tests/corpus`, see its README)
//! against the real binary: every case is written verbatim to a fresh
//! connection, every answer is parsed, and the final statuses must be the
//! manifest's. Answers the listener gives on its own must be JSON with
//! `Connection: close`, and the connection must then end. All mismatches are
//! collected and reported together.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::both_backends;

/// `HTTP_READ_TIMEOUT_MS` of the server under test.
const READ_TIMEOUT_MS: u64 = 1000;
/// How long one case may take: the read timeout and 3 s to spare.
const CASE_BOUND: Duration = Duration::from_millis(READ_TIMEOUT_MS + 3000);
/// Cases replayed at once.
const THREADS: usize = 8;
/// Statuses the listener answers by itself (outside `-app-` cases).
const LISTENER_STATUSES: [u16; 7] = [400, 408, 413, 417, 431, 501, 505];
/// Replaced in a case by a fresh admin access token.
const TOKEN_PLACEHOLDER: &[u8] = b"@@ADMIN_TOKEN@@";
const MIN_CASES: usize = 300;
const MAX_CASE_BYTES: u64 = 70 * 1024;
const MAX_CORPUS_BYTES: u64 = 2 * 1024 * 1024;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// No byte, then the connection ends.
    Closed,
    /// The final statuses, in order.
    Statuses(Vec<u16>),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Closed => f.write_str("closed"),
            Expect::Statuses(statuses) => f.write_str(&join(statuses)),
        }
    }
}

struct Case {
    file: String,
    expect: Expect,
}

impl Case {
    /// Application cases (`NNN-app-...`, `...-app-...`) may get a 400 from a
    /// handler, which keeps the connection; the listener checks skip them.
    fn is_app(&self) -> bool {
        self.file.contains("-app-")
    }
}

fn join(statuses: &[u16]) -> String {
    statuses.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// The manifest `expected.tsv`: `case<TAB>expect<TAB>why`, after a header row.
fn manifest() -> Vec<Case> {
    let path = corpus_dir().join("expected.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("case\texpect\twhy"), "the manifest starts with its header row");
    lines
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "expected.tsv line {}: three TAB-separated columns: {line:?}", i + 2);
            let expect = match fields[1] {
                "closed" => Expect::Closed,
                list => Expect::Statuses(
                    list.split(',')
                        .map(|s| {
                            s.parse::<u16>()
                                .ok()
                                .filter(|n| (100..600).contains(n))
                                .unwrap_or_else(|| panic!("expected.tsv line {}: bad status {s:?}", i + 2))
                        })
                        .collect(),
                ),
            };
            assert!(!fields[2].trim().is_empty(), "expected.tsv line {}: say why", i + 2);
            Case { file: fields[0].to_owned(), expect }
        })
        .collect()
}

/// What the server sent on one connection.
struct Exchange {
    bytes: Vec<u8>,
    /// The server ended the connection (FIN or reset) within the bound.
    ended: bool,
}

/// Writes `data` to a fresh connection (from a thread of its own: the
/// server may answer, and close, before it has read everything) and reads
/// until the server ends the connection or [`CASE_BOUND`] passes.
fn exchange(addr: SocketAddr, data: &[u8]) -> Result<Exchange, String> {
    let started = Instant::now();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    let mut writer = stream.try_clone().map_err(|e| format!("clone: {e}"))?;
    let data = data.to_vec();
    let writing = std::thread::spawn(move || {
        let _ = writer.set_write_timeout(Some(CASE_BOUND));
        // Errors are expected: the server may close before reading it all.
        let _ = writer.write_all(&data);
        let _ = writer.flush();
        // The write side stays open: a silent client is part of the test.
    });
    let mut reader = &stream;
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let ended = loop {
        let left = CASE_BOUND.saturating_sub(started.elapsed());
        if left.is_zero() {
            break false;
        }
        stream.set_read_timeout(Some(left)).map_err(|e| format!("set_read_timeout: {e}"))?;
        match reader.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => break true,
            Err(e) => return Err(format!("read: {e}")),
        }
    };
    // Unblocks a writer the server never read from.
    let _ = stream.shutdown(Shutdown::Both);
    let _ = writing.join();
    Ok(Exchange { bytes, ended })
}

/// For each request of a case, in order, whether it is a `HEAD` (whose
/// answer has no body). Followed while requests have a plain
/// Content-Length body; later answers count as not HEAD.
fn head_requests(data: &[u8]) -> Vec<bool> {
    let mut flags = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        flags.push(rest.starts_with(b"HEAD "));
        let Some(end) = find(rest, b"\r\n\r\n") else { break };
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        if head.contains("\ntransfer-encoding") {
            break;
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        pos = pos.saturating_add(end + 4).saturating_add(length);
    }
    flags
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One final (non-1xx) response.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    to_head: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(80)];
    format!("{:?}{}", String::from_utf8_lossy(shown), if bytes.len() > 80 { "..." } else { "" })
}

/// Splits everything the server sent into responses, skipping 1xx.
fn parse_answers(bytes: &[u8], heads: &[bool]) -> Result<Vec<Answer>, String> {
    let mut answers = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let end = find(rest, b"\r\n\r\n").ok_or_else(|| format!("an incomplete response head {}", excerpt(rest)))?;
        let head = std::str::from_utf8(&rest[..end])
            .map_err(|_| format!("a response head that is not UTF-8 {}", excerpt(rest)))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("a bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':').ok_or_else(|| format!("a bad response header {line:?}"))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        pos += end + 4;
        if (100..200).contains(&status) {
            continue;
        }
        let to_head = heads.get(answers.len()).copied().unwrap_or(false);
        let mut answer = Answer { status, headers, body: Vec::new(), to_head };
        if answer.header("transfer-encoding").is_some() {
            return Err(format!("a {status} with Transfer-Encoding (responses carry Content-Length)"));
        }
        let length = if to_head || status == 204 || status == 304 {
            0
        } else if let Some(value) = answer.header("content-length") {
            value.parse::<usize>().map_err(|_| format!("a {status} with Content-Length {value:?}"))?
        } else {
            bytes.len() - pos
        };
        if bytes.len() - pos < length {
            return Err(format!("a {status} whose body is shorter than its Content-Length {length}"));
        }
        answer.body = bytes[pos..pos + length].to_vec();
        pos += length;
        answers.push(answer);
    }
    Ok(answers)
}

/// `None` when the case passes, else what was got.
fn replay(addr: SocketAddr, case: &Case, data: &[u8]) -> Option<String> {
    let exchange = match exchange(addr, data) {
        Ok(exchange) => exchange,
        Err(e) => return Some(e),
    };
    let not_ended = || format!("the connection was still open after {CASE_BOUND:?}");
    let statuses = match &case.expect {
        Expect::Closed => {
            return match (exchange.bytes.is_empty(), exchange.ended) {
                (true, true) => None,
                (true, false) => Some(format!("no answer, but {}", not_ended())),
                (false, _) => Some(format!("{} bytes: {}", exchange.bytes.len(), excerpt(&exchange.bytes))),
            };
        }
        Expect::Statuses(statuses) => statuses,
    };
    let answers = match parse_answers(&exchange.bytes, &head_requests(data)) {
        Ok(answers) => answers,
        Err(e) => return Some(e),
    };
    let got: Vec<u16> = answers.iter().map(|a| a.status).collect();
    if &got != statuses {
        return Some(match (got.is_empty(), exchange.ended) {
            (true, true) => "closed".to_owned(),
            (true, false) => format!("nothing, and {}", not_ended()),
            (false, _) => join(&got),
        });
    }
    if case.is_app() {
        return None;
    }
    let mut problems = Vec::new();
    for answer in answers.iter().filter(|a| LISTENER_STATUSES.contains(&a.status)) {
        let status = answer.status;
        if answer.header("content-type") != Some("application/json; charset=utf-8") {
            problems.push(format!("{status} with Content-Type {:?}", answer.header("content-type")));
        }
        if !answer.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            problems.push(format!("{status} without Connection: close"));
        }
        let json: Option<serde_json::Value> = serde_json::from_slice(&answer.body).ok();
        if !answer.to_head && !json.as_ref().is_some_and(|j| j["error"].is_string()) {
            problems.push(format!("{status} whose body has no JSON error: {}", excerpt(&answer.body)));
        }
    }
    if answers.last().is_some_and(|a| LISTENER_STATUSES.contains(&a.status)) && !exchange.ended {
        problems.push(not_ended());
    }
    (!problems.is_empty()).then(|| format!("{} ({})", join(&got), problems.join("; ")))
}

both_backends!(
    fn the_hostile_request_corpus_gets_the_expected_answers(backend) {
        let timeout = READ_TIMEOUT_MS.to_string();
        let mut app = spawn_app_with(
            backend,
            &[("WORKERS", "4"), ("HTTP_READ_TIMEOUT_MS", &timeout), ("HTTP_KEEPALIVE_TIMEOUT_MS", &timeout)],
        );
        let token = app.admin_token();
        let cases = manifest();
        let dir = corpus_dir().join("cases");
        let payloads: Vec<Vec<u8>> = cases
            .iter()
            .map(|case| {
                let raw = std::fs::read(dir.join(&case.file)).unwrap_or_else(|e| panic!("{}: {e}", case.file));
                replace_all(&raw, TOKEN_PLACEHOLDER, token.as_bytes())
            })
            .collect();

        // Token-endpoint cases run one at a time on a thread of their own:
        // the service lets only WORKERS/2 bcrypt checks run at once and
        // answers the rest 503, which is right, but not what those cases test.
        let (token_cases, other_cases): (Vec<usize>, Vec<usize>) =
            (0..cases.len()).partition(|&i| contains(&payloads[i], b"/oauth/token"));
        let started = Instant::now();
        let next = AtomicUsize::new(0);
        let failures = Mutex::new(Vec::new());
        let run = |i: usize| {
            if let Some(got) = replay(app.addr, &cases[i], &payloads[i]) {
                failures.lock().unwrap().push((cases[i].file.clone(), cases[i].expect.to_string(), got));
            }
        };
        std::thread::scope(|scope| {
            scope.spawn(|| token_cases.iter().for_each(|&i| run(i)));
            for _ in 0..THREADS {
                scope.spawn(|| {
                    while let Some(&i) = other_cases.get(next.fetch_add(1, Ordering::Relaxed)) {
                        run(i);
                    }
                });
            }
        });
        let mut failures = failures.into_inner().unwrap();
        failures.sort();
        eprintln!("{backend:?}: {} corpus cases replayed in {:.1?}", cases.len(), started.elapsed());

        assert!(
            app.wait_exit(Duration::from_millis(20)).is_none(),
            "the server exited during the corpus; its output:\n{}",
            app.log()
        );
        let mut after = Vec::new();
        let livez = app.get("/livez");
        if livez.status != 200 {
            after.push(format!("/livez answered {} after the corpus", livez.status));
        }
        let metrics = app.get("/metrics").body;
        for line in ["pizza_api_workers 4", "pizza_api_worker_restarts_total 0"] {
            if !metrics.lines().any(|l| l.trim() == line) {
                after.push(format!("/metrics lacks `{line}`"));
            }
        }
        if app.log().contains("panicked") {
            after.push("the server log shows a panic".to_owned());
        }
        if !failures.is_empty() || !after.is_empty() {
            let mut report = format!("{} of {} corpus cases failed on {backend:?}:\n", failures.len(), cases.len());
            for (file, expected, got) in &failures {
                report.push_str(&format!("  {file}: expected {expected}, got {got}\n"));
            }
            for problem in &after {
                report.push_str(&format!("  after the corpus: {problem}\n"));
            }
            panic!("{report}");
        }
    }
);

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[test]
fn the_manifest_and_the_case_files_match_one_to_one() {
    let cases = manifest();
    let listed: Vec<&str> = cases.iter().map(|c| c.file.as_str()).collect();
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "a case is listed twice in expected.tsv");

    let mut present = BTreeSet::new();
    let mut total = 0;
    for entry in std::fs::read_dir(corpus_dir().join("cases")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let size = entry.metadata().unwrap().len();
        assert!(size <= MAX_CASE_BYTES, "{name} is {size} bytes, more than {MAX_CASE_BYTES}");
        total += size;
        present.insert(name);
    }
    let present: BTreeSet<&str> = present.iter().map(String::as_str).collect();

    let unlisted: Vec<_> = present.difference(&unique).collect();
    let missing: Vec<_> = unique.difference(&present).collect();
    assert!(unlisted.is_empty(), "files in tests/corpus/cases missing from expected.tsv: {unlisted:?}");
    assert!(missing.is_empty(), "cases in expected.tsv without a file: {missing:?}");
    for name in &listed {
        let well_named = name.len() > 9
            && name.as_bytes()[..3].iter().all(u8::is_ascii_digit)
            && name.as_bytes()[3] == b'-'
            && name.ends_with(".http");
        assert!(well_named, "{name}: cases are named NNN-short-name.http");
    }
    assert!(listed.len() >= MIN_CASES, "only {} cases; the corpus holds at least {MIN_CASES}", listed.len());
    assert!(total < MAX_CORPUS_BYTES, "the corpus is {total} bytes, more than {MAX_CORPUS_BYTES}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
