//! The command line: what `main` runs, and the one place where a fatal error
//! is reported and the exit code chosen.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use log::LevelFilter;

use crate::app::Application;
use crate::config::Config;

const USAGE: &str = "\
pizza-api — a REST service for pizzas with OAuth2 client-credentials tokens

Usage: pizza-api [COMMAND]

Commands:
  serve        run the service (the default)
  healthcheck  ask the running service's /health on APP_PORT; exit 0 when
               it answers 200, 1 otherwise (for container HEALTHCHECKs)
  backup --to FILE | --to-dir DIR [--keep N]
               write a consistent snapshot of the database of the DB_*
               variables (users, pizzas, clients, deleted rows and IDs
               included) to FILE, a SQLite file, while the service runs;
               --to-dir names it pizza-api-<UTC time>.sqlite in DIR, and
               --keep N then deletes all but the newest N backups there
  restore --from FILE [--force] [--dry-run]
               check the backup FILE, then load it into the database of
               the DB_* variables in one transaction and verify it; the
               database must be empty unless --force (which replaces its
               data); --dry-run checks the file and the target only
  migrate-data --from-sqlite FILE | --to-sqlite FILE
               copy a pizza-api SQLite database into the empty PostgreSQL
               database of the DB_* variables, or that PostgreSQL database
               into a new SQLite file (a backup and a restore in one)

Options:
  -h, --help       print this help
  -V, --version    print the version

Configuration comes from environment variables (and a .env file in the
working directory); see README.md for the full table.
";

/// Exit code for a configuration or usage error.
const EXIT_USAGE: u8 = 2;

/// Runs the command given by `args` (without the program name).
pub fn main(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        None | Some("serve") if args.len() <= 1 => serve(),
        Some("healthcheck") if args.len() == 1 => healthcheck(),
        Some("backup") => with_options(&args[1..], &["--to", "--to-dir", "--keep"], &[], backup),
        Some("restore") => with_options(&args[1..], &["--from"], &["--force", "--dry-run"], restore),
        Some("migrate-data") => with_options(&args[1..], &["--from-sqlite", "--to-sqlite"], &[], migrate_data),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!("pizza-api {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("pizza-api: unknown arguments: {}\n\n{USAGE}", args.join(" "));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The configuration from `.env` and the environment, with logging set up;
/// `Err` is the exit code after a one-line error.
fn configure() -> Result<Config, ExitCode> {
    let config = load_dotenv().map_err(|e| e.to_string()).and_then(|()| Config::from_env().map_err(|e| e.to_string()));
    match config {
        Ok(config) => {
            init_logging(config.log_level);
            log::info!("configuration: {}", config.summary());
            Ok(config)
        }
        Err(message) => {
            eprintln!("pizza-api: {message}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

fn serve() -> ExitCode {
    let config = match configure() {
        Ok(config) => config,
        Err(code) => return code,
    };

    match Application::build(config).and_then(Application::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// A command's options: `--name VALUE` for each of `valued`, `--name` for
/// each of `flags`, each at most once.
type Options = std::collections::HashMap<String, Option<String>>;

/// Parses the options of a command and runs it; unknown or repeated
/// options are a usage error.
fn with_options(args: &[String], valued: &[&str], flags: &[&str], run: fn(&Options) -> ExitCode) -> ExitCode {
    let mut options = Options::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = if valued.contains(&arg.as_str()) {
            match rest.next() {
                Some(value) => Some(value.clone()),
                None => return usage_error(&format!("{arg} needs a value")),
            }
        } else if flags.contains(&arg.as_str()) {
            None
        } else {
            return usage_error(&format!("unknown argument {arg}"));
        };
        if options.insert(arg.clone(), value).is_some() {
            return usage_error(&format!("{arg} given twice"));
        }
    }
    run(&options)
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("pizza-api: {message}\n\n{USAGE}");
    ExitCode::from(EXIT_USAGE)
}

fn value<'a>(options: &'a Options, name: &str) -> Option<&'a str> {
    options.get(name).and_then(|v| v.as_deref())
}

/// Reports the outcome of a command: its line at info, or its error as one
/// line naming `command`.
fn report(command: &str, result: Result<String, String>) -> ExitCode {
    match result {
        Ok(line) => {
            log::info!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            log::error!("{command}: {err}");
            ExitCode::FAILURE
        }
    }
}

fn backup(options: &Options) -> ExitCode {
    let keep = match value(options, "--keep").map(str::parse::<usize>) {
        None => None,
        Some(Ok(keep)) if keep > 0 => Some(keep),
        Some(_) => return usage_error("--keep needs a whole number of backups, at least 1"),
    };
    let (to, dir) = match (value(options, "--to"), value(options, "--to-dir"), keep) {
        (Some(to), None, None) => (Some(Path::new(to)), None),
        (None, Some(dir), _) => (None, Some(Path::new(dir))),
        _ => return usage_error("backup takes --to FILE, or --to-dir DIR with an optional --keep N"),
    };
    let config = match configure() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result = match (to, dir) {
        (Some(to), _) => crate::backup::run_backup(to, &config.database, &config.pool),
        (_, dir) => {
            crate::backup::run_backup_to_dir(dir.unwrap_or(Path::new(".")), keep, &config.database, &config.pool)
        }
    };
    report("backup", result)
}

fn restore(options: &Options) -> ExitCode {
    let Some(from) = value(options, "--from") else {
        return usage_error("restore takes --from FILE");
    };
    let config = match configure() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let (force, dry_run) = (options.contains_key("--force"), options.contains_key("--dry-run"));
    report("restore", crate::backup::run_restore(Path::new(from), &config.database, &config.pool, force, dry_run))
}

fn migrate_data(options: &Options) -> ExitCode {
    let run: fn(&Path, &Config) -> Result<String, String> =
        match (value(options, "--from-sqlite"), value(options, "--to-sqlite")) {
            (Some(_), None) => crate::migrate_data::from_sqlite,
            (None, Some(_)) => crate::migrate_data::to_sqlite,
            _ => return usage_error("migrate-data takes --from-sqlite FILE or --to-sqlite FILE"),
        };
    let file = value(options, "--from-sqlite").or(value(options, "--to-sqlite")).unwrap_or_default();
    let config = match configure() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result = run(Path::new(file), &config);
    report("migrate-data", result)
}

/// Loads `.env` from the working directory into the environment; variables
/// already set win. Parse errors never quote the line: it may hold a secret.
fn load_dotenv() -> Result<(), String> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(err) if err.not_found() => Ok(()),
        Err(dotenvy::Error::LineParse(line, _)) => Err(format!("invalid .env file: {}", locate_dotenv_line(&line))),
        Err(err) => Err(format!("cannot read .env file: {err}")),
    }
}

/// Names the `.env` line that did not parse by its number and, when it
/// starts like an assignment, its variable; never by its text (a value may
/// be a secret).
fn locate_dotenv_line(bad: &str) -> String {
    let first = bad.lines().next().unwrap_or_default().trim();
    let contents = std::fs::read_to_string(".env").unwrap_or_default();
    let number = contents.lines().position(|line| line.trim() == first).map(|i| i + 1);
    let name =
        first.trim_start_matches("export ").split('=').next().map(str::trim).filter(|n| {
            !n.is_empty() && n.len() < first.len() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    match (number, name) {
        (Some(n), Some(name)) => format!("line {n} ({name}) cannot be parsed"),
        (Some(n), None) => format!("line {n} cannot be parsed"),
        (None, Some(name)) => format!("the line setting {name} cannot be parsed"),
        (None, None) => "a line cannot be parsed".to_owned(),
    }
}

/// Logs to standard error with UTC timestamps. Other crates log at most at
/// `info`: at `debug` some print query parameters, which may be credentials.
fn init_logging(level: LevelFilter) {
    let logger = simple_logger::SimpleLogger::new()
        .with_utc_timestamps()
        .with_level(level.min(LevelFilter::Info))
        .with_module_level("pizza_api", level)
        // The audit log is written whatever the level.
        .with_module_level(crate::auth::audit::TARGET, LevelFilter::Info.max(level))
        // The PostgreSQL driver logs server notices ("already exists, skipping") at info.
        .with_module_level("postgres", level.min(LevelFilter::Warn))
        // The listener warns when accepting pauses; its debug lines are noise.
        .with_module_level(crate::http::server::LISTENER_LOG_TARGET, level.min(LevelFilter::Warn));
    if let Err(err) = logger.init() {
        eprintln!("pizza-api: cannot start logging: {err}");
    }
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
}

/// How long the health check may take in all.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `pizza-api healthcheck`: GET /health on the local service. Reads only
/// `APP_HOST` and `APP_PORT` (from the environment or `.env`), so settings
/// the check does not need cannot make it fail.
fn healthcheck() -> ExitCode {
    let _ = load_dotenv();
    let port = std::env::var("APP_PORT").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "8080".into());
    let host = match std::env::var("APP_HOST").unwrap_or_default().as_str() {
        "" | "0.0.0.0" | "::" | "[::]" => "127.0.0.1".to_owned(),
        host => host.to_owned(),
    };
    match probe(&host, &port) {
        Ok(200) => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("unhealthy: /health answered {status}");
            ExitCode::FAILURE
        }
        Err(err) => {
            println!("unhealthy: {err}");
            ExitCode::FAILURE
        }
    }
}

fn probe(host: &str, port: &str) -> Result<u16, String> {
    let port: u16 = port.parse().map_err(|_| format!("APP_PORT {port:?} is not a port"))?;
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, HEALTHCHECK_TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(HEALTHCHECK_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(HEALTHCHECK_TIMEOUT)).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| format!("{addr}: {e}"))?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| "not an HTTP answer".into())
}
