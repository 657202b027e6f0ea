//! The `pizza-api` binary: a thin shim over the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    pizza_api::cli::main(&args)
}
