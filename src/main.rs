//! The `handoff` binary: a thin wrapper over the library's command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    handoff::cli::run()
}
