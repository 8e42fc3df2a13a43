//! The `handoff` command line. Exit codes (documented in the README):
//! 0 ok, 1 a check or test failed, 2 usage or I/O error.

pub mod check;
pub mod diff;
pub mod explain;
pub mod fmt;
pub mod generate;
pub mod operator;
pub mod sandbox;
pub mod serve;
pub mod test;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Route inbound sales leads into WhatsApp without losing context.
#[derive(Parser, Debug)]
#[command(name = "handoff", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: intake, decisions, the API.
    Serve(serve::ServeArgs),
    /// Make a new API key and print its hash for `handoff.toml`.
    ApiKey,
    /// Parse and check playbooks and templates; report every problem.
    Check(check::CheckArgs),
    /// Show the decision for one lead, with every rule's tests and the values they saw.
    Explain(explain::ExplainArgs),
    /// Run the dry-run test files (`rules/<playbook>.test.yaml`).
    Test(test::TestArgs),
    /// Rewrite rules files in the canonical layout, keeping comments.
    Fmt(fmt::FmtArgs),
    /// What would change for a history of leads if NEW replaced OLD.
    Diff(diff::DiffArgs),
    /// Write a realistic lead history (JSONL) for a playbook.
    Generate(generate::GenerateArgs),
    /// Simulate the WhatsApp Cloud API locally, with its webhooks and faults.
    Sandbox(sandbox::SandboxArgs),
    /// Manage the operators who sign in to the inbox.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
}

/// Where rules and templates are read from.
#[derive(clap::Args, Debug, Clone)]
pub struct RulesArgs {
    /// Templates directory [default: <rules>/../templates].
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
}

/// The process exit code for each outcome.
pub mod exit {
    use std::process::ExitCode;
    /// Everything passed.
    pub fn ok() -> ExitCode {
        ExitCode::from(0)
    }
    /// A check or test failed.
    pub fn failed() -> ExitCode {
        ExitCode::from(1)
    }
    /// Bad usage or an I/O error.
    pub fn usage() -> ExitCode {
        ExitCode::from(2)
    }
}

/// Runs the command line.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::usage()
            } else {
                exit::ok()
            };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::ApiKey => serve::api_key(),
        Command::Check(args) => check::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Test(args) => test::run_command(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Diff(args) => diff::run_command(args),
        Command::Generate(args) => generate::run(args),
        Command::Sandbox(args) => sandbox::run(args),
        Command::Operator(command) => operator::run(command),
    }
}

/// Prints an error for a person and returns the usage/I-O exit code.
pub(crate) fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    exit::usage()
}
