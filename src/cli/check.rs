//! `handoff check [DIR]`: every diagnostic of every playbook and template.

use super::{exit, Format, RulesArgs};
use crate::dsl::diagnostic::{render, to_json, Diagnostic};
use crate::ruleset::{load, Loaded};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The rules directory.
    #[arg(default_value = "rules")]
    dir: PathBuf,
    #[command(flatten)]
    rules: RulesArgs,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    deny_warnings: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

pub fn run(args: CheckArgs) -> ExitCode {
    let loaded = load(&args.dir, args.rules.templates.as_deref());
    let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = loaded.diagnostics.len() - errors;
    match args.format {
        Format::Human => print!("{}", human_report(&loaded)),
        Format::Json => {
            let report = serde_json::json!({
                "ok": errors == 0 && !(args.deny_warnings && warnings > 0),
                "errors": errors,
                "warnings": warnings,
                "playbooks": loaded.ruleset.as_ref().map(|r| r.playbooks.iter().map(|(name, p)| serde_json::json!({
                    "name": name,
                    "file": p.file,
                    "rules": p.compiled.rules.len(),
                })).collect::<Vec<_>>()),
                "ruleset": loaded.ruleset.as_ref().map(|r| r.hash.clone()),
                "diagnostics": loaded.diagnostics.iter().map(|d| to_json(d, &loaded.sources)).collect::<Vec<_>>(),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
    }
    if loaded.has_io_errors() {
        exit::usage()
    } else if errors > 0 || (args.deny_warnings && warnings > 0) {
        exit::failed()
    } else {
        exit::ok()
    }
}

/// The human report: each diagnostic, then a summary line.
pub fn human_report(loaded: &Loaded) -> String {
    let mut out = String::new();
    for d in &loaded.diagnostics {
        out.push_str(&render(d, &loaded.sources));
        out.push('\n');
    }
    out.push_str(&summary(loaded, &loaded.diagnostics));
    out.push('\n');
    out
}

fn summary(loaded: &Loaded, diagnostics: &[Diagnostic]) -> String {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let verdict = if errors == 0 { "ok" } else { "failed" };
    let mut line = format!(
        "{verdict}: {} and {} checked, {}, {}",
        plural(loaded.playbook_count, "playbook"),
        plural(loaded.template_count, "template"),
        plural(errors, "error"),
        plural(warnings, "warning"),
    );
    if let Some(ruleset) = &loaded.ruleset {
        line.push_str(&format!(" (ruleset {})", &ruleset.hash[..12]));
    }
    line
}
