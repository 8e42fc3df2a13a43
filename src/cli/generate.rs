//! `handoff generate --playbook P`: a realistic lead history (JSONL) for a playbook.

use super::{exit, fail};
use crate::dsl::diagnostic::render;
use crate::ruleset::load;
use chrono::{DateTime, Utc};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// The playbook whose intents and fields the leads use.
    #[arg(long, value_name = "NAME")]
    playbook: String,
    /// How many leads.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Seed: the same seed gives the same leads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// When the history starts, RFC 3339; leads spread over the 30 days after it.
    #[arg(long, value_name = "TIME", default_value = "2027-01-01T00:00:00Z")]
    start: String,
    /// The rules directory.
    #[arg(long, value_name = "DIR", default_value = "rules")]
    rules: PathBuf,
    /// Write here instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(args: GenerateArgs) -> ExitCode {
    let start = match DateTime::parse_from_rfc3339(&args.start) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => return fail(format!("`{}` is not an RFC 3339 time", args.start)),
    };
    let loaded = load(&args.rules, None);
    let Some(ruleset) = &loaded.ruleset else {
        for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
            eprint!("{}", render(d, &loaded.sources));
        }
        return fail("the rules do not check");
    };
    let playbook = match ruleset.playbook(&args.playbook) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let sink: Box<dyn Write> = match &args.out {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(f),
            Err(e) => return fail(format!("cannot write `{}`: {e}", path.display())),
        },
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    for record in crate::generate::leads(&playbook.compiled.schema, args.count, args.seed, start) {
        if let Err(e) = writeln!(out, "{}", record.to_json()) {
            // A closed pipe (`| head`) ends the output; that is not an error.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return exit::ok();
            }
            return fail(format!("cannot write: {e}"));
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => fail(format!("cannot write: {e}")),
        _ => exit::ok(),
    }
}
