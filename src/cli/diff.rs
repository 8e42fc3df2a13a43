//! `handoff diff OLD NEW --leads FILE.jsonl`: what would change for a history
//! of leads if the NEW rules replaced the OLD ones.

use super::{exit, fail, Format};
use crate::diff::{run, Options, Summary};
use crate::dsl::diagnostic::render;
use crate::ruleset::{default_templates_dir, load, templates_fingerprint, Ruleset};
use chrono::{DateTime, Utc};
use std::fmt::Write as _;
use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The rules directory in force now.
    old: PathBuf,
    /// The rules directory that would replace it.
    new: PathBuf,
    /// The lead history: one lead JSON a line, each with its `now`, `window` and `human` when needed. `-` reads standard input.
    #[arg(long, value_name = "FILE.jsonl")]
    leads: PathBuf,
    /// Templates for OLD [default: OLD/../templates].
    #[arg(long, value_name = "DIR")]
    old_templates: Option<PathBuf>,
    /// Templates for NEW [default: NEW/../templates].
    #[arg(long, value_name = "DIR")]
    new_templates: Option<PathBuf>,
    /// The playbook for leads that name none.
    #[arg(long, value_name = "NAME")]
    playbook: Option<String>,
    /// The clock for leads without `now`, RFC 3339 [default: the current time].
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
    /// Exit 1 when any decision changes (for CI).
    #[arg(long)]
    fail_on_change: bool,
    /// Worker threads [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

fn load_side(
    label: &str,
    dir: &Path,
    templates: Option<&Path>,
) -> Result<(Ruleset, String), ExitCode> {
    let loaded = load(dir, templates);
    match loaded.ruleset {
        Some(r) => {
            let tdir = templates
                .map(Path::to_path_buf)
                .unwrap_or_else(|| default_templates_dir(dir));
            Ok((r, templates_fingerprint(&tdir)))
        }
        None => {
            for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
                eprint!("{}", render(d, &loaded.sources));
            }
            eprintln!(
                "error: the {label} rules in `{}` do not check",
                dir.display()
            );
            Err(
                if loaded
                    .diagnostics
                    .iter()
                    .any(|d| d.code == crate::dsl::codes::Code::E025Io)
                {
                    exit::usage()
                } else {
                    exit::failed()
                },
            )
        }
    }
}

pub fn run_command(args: DiffArgs) -> ExitCode {
    let (old, old_fp) = match load_side("old", &args.old, args.old_templates.as_deref()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (new, new_fp) = match load_side("new", &args.new, args.new_templates.as_deref()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let now = match &args.now {
        Some(t) => match DateTime::parse_from_rfc3339(t) {
            Ok(t) => t.with_timezone(&Utc),
            Err(_) => return fail(format!("`{t}` is not an RFC 3339 time")),
        },
        None => Utc::now(),
    };
    let options = Options {
        playbook: args.playbook.clone(),
        now,
        threads: args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
    };
    let (reader, size): (Box<dyn std::io::BufRead>, u64) = if args.leads.as_os_str() == "-" {
        (Box::new(BufReader::new(std::io::stdin())), 0)
    } else {
        match std::fs::File::open(&args.leads) {
            Ok(f) => {
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                (Box::new(BufReader::with_capacity(1 << 20, f)), size)
            }
            Err(e) => return fail(format!("cannot read `{}`: {e}", args.leads.display())),
        }
    };
    let show_progress = std::io::stderr().is_terminal() && args.format == Format::Human;
    let started = Instant::now();
    let mut last = Instant::now();
    let progress = |bytes: u64, lines: u64| {
        if show_progress && last.elapsed() > Duration::from_millis(100) {
            last = Instant::now();
            let pct = (bytes * 100)
                .checked_div(size)
                .map(|p| format!("{p:>3}%"))
                .unwrap_or_default();
            let mut err = std::io::stderr();
            let _ = write!(err, "\r{pct} {lines} leads read");
            let _ = err.flush();
        }
    };
    let summary = match run(reader, &old, &new, old_fp != new_fp, &options, progress) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot read `{}`: {e}", args.leads.display())),
    };
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    let elapsed = started.elapsed();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        ),
        Format::Human => print!("{}", human(&summary, &args.old, &args.new, elapsed)),
    }
    if summary.failed > 0 {
        eprintln!(
            "error: {} leads could not be decided; the comparison is incomplete",
            thousands(summary.failed)
        );
        exit::usage()
    } else if args.fail_on_change && summary.changed > 0 {
        exit::failed()
    } else {
        exit::ok()
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The human report.
pub fn human(summary: &Summary, old: &Path, new: &Path, elapsed: Duration) -> String {
    let mut out = String::new();
    let pct = if summary.leads > 0 {
        summary.changed as f64 * 100.0 / summary.leads as f64
    } else {
        0.0
    };
    let _ = writeln!(out, "{} -> {}", old.display(), new.display());
    let _ = writeln!(
        out,
        "{} leads: {} decisions change ({pct:.2}%), {} stay the same{}",
        thousands(summary.leads),
        thousands(summary.changed),
        thousands(summary.unchanged),
        if summary.skipped > 0 {
            format!(", {} lines skipped", thousands(summary.skipped))
        } else {
            String::new()
        } + &if summary.failed > 0 {
            format!(", {} leads could not be decided", thousands(summary.failed))
        } else {
            String::new()
        }
    );
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 && summary.leads > 0 {
        let _ = writeln!(
            out,
            "({:.2} s, {} leads a second)",
            secs,
            thousands((summary.leads as f64 / secs) as u64)
        );
    }
    for group in &summary.groups {
        let k = &group.key;
        let _ = writeln!(out);
        let rule = if k.old_rule == k.new_rule {
            k.old_rule.clone()
        } else {
            format!("{} -> {}", k.old_rule, k.new_rule)
        };
        let outcome = if k.old_outcome == k.new_outcome {
            k.old_outcome.clone()
        } else {
            format!("{} -> {}", k.old_outcome, k.new_outcome)
        };
        let _ = writeln!(
            out,
            "{:>9}  {}: {rule} · {outcome}",
            thousands(group.count),
            k.playbook
        );
        for e in &group.examples {
            let name = e.name.as_deref().unwrap_or("(no name)");
            match &e.detail {
                Some(d) => {
                    let _ = writeln!(out, "           line {}  {name}: {d}", e.line);
                }
                None => {
                    let _ = writeln!(out, "           line {}  {name}", e.line);
                }
            }
        }
    }
    if !summary.errors.is_empty() {
        let _ = writeln!(out, "\nlines not compared:");
        for e in &summary.errors {
            let _ = writeln!(out, "  line {}: {}", e.line, e.error);
        }
        if summary.skipped as usize > summary.errors.len() {
            let _ = writeln!(
                out,
                "  ... and {} more",
                summary.skipped as usize - summary.errors.len()
            );
        }
    }
    out
}
