//! The `handoff` binary: a thin wrapper over the library's command line.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    handoff::cli::run()
}
