//! `handoff test [DIR]`: runs the dry-run test files beside the playbooks.

use super::{exit, fail, Format, RulesArgs};
use crate::dsl::diagnostic::{render, to_json};
use crate::ruleset::load;
use crate::suite::{junit, run, Report};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The rules directory, with its `<playbook>.test.yaml` files.
    #[arg(default_value = "rules")]
    dir: PathBuf,
    #[command(flatten)]
    rules: RulesArgs,
    /// Run only the cases whose name contains this text (any case).
    #[arg(long, short = 'k', value_name = "TEXT")]
    filter: Option<String>,
    /// Fail when any rule is not made to fire by some case.
    #[arg(long)]
    coverage: bool,
    /// Also write the results as JUnit XML, for CI systems.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

pub fn run_command(args: TestArgs) -> ExitCode {
    let loaded = load(&args.dir, args.rules.templates.as_deref());
    let Some(ruleset) = &loaded.ruleset else {
        for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
            eprint!("{}", render(d, &loaded.sources));
        }
        if loaded.has_io_errors() {
            return exit::usage();
        }
        eprintln!("error: the rules do not check, so no case can run (`handoff check` lists every problem)");
        return exit::failed();
    };
    let report = run(&args.dir, ruleset, args.filter.as_deref());
    if let Some(path) = &args.junit {
        if let Err(e) = std::fs::write(path, junit(&report)) {
            return fail(format!("cannot write `{}`: {e}", path.display()));
        }
    }
    let coverage_failed = args.coverage && args.filter.is_none() && !report.untested.is_empty();
    match args.format {
        Format::Human => print!("{}", human(&report, args.filter.is_some(), args.coverage)),
        Format::Json => {
            let out = serde_json::json!({
                "passed": report.passed(),
                "failed": report.failed(),
                "cases": report.results.iter().map(|r| serde_json::json!({
                    "file": r.file, "line": r.line, "playbook": r.playbook, "name": r.name,
                    "passed": r.passed(), "mismatches": r.mismatches,
                })).collect::<Vec<_>>(),
                "untested": report.untested.iter().map(|(p, r)| serde_json::json!({"playbook": p, "rule": r})).collect::<Vec<_>>(),
                "without_tests": report.without_tests,
                "diagnostics": report.diagnostics.iter().map(|d| to_json(d, &report.sources)).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
    }
    if report.failed() > 0 || !report.diagnostics.is_empty() || coverage_failed {
        exit::failed()
    } else {
        exit::ok()
    }
}

/// The human report; its last line is `N passed, M failed`.
pub fn human(report: &Report, filtered: bool, coverage: bool) -> String {
    let mut out = String::new();
    for d in &report.diagnostics {
        out.push_str(&render(d, &report.sources));
        out.push('\n');
    }
    let mut current_file = "";
    for r in &report.results {
        if r.file != current_file {
            current_file = &r.file;
            let _ = writeln!(out, "{current_file}");
        }
        if r.passed() {
            let _ = writeln!(out, "  ok    {}", r.name);
            continue;
        }
        let _ = writeln!(out, "  FAIL  {} ({}:{})", r.name, r.file, r.line);
        for m in &r.mismatches {
            let _ = writeln!(out, "          {}", m.key);
            let _ = writeln!(out, "            expected  {}", m.expected);
            let _ = writeln!(out, "            got       {}", m.got);
        }
        // A message that could not be rendered says why: a template that ran
        // out of its budget is otherwise only "got none".
        let render_error = r
            .decision
            .as_ref()
            .and_then(|d| d.handoff.as_ref()?.error.as_deref());
        if let Some(e) = render_error {
            let _ = writeln!(out, "          render error: {e}");
        }
    }
    if !filtered {
        if !report.without_tests.is_empty() {
            let _ = writeln!(
                out,
                "\nplaybooks without a test file: {}",
                report.without_tests.join(", ")
            );
        }
        if report.untested.is_empty() {
            if report.rule_count > 0 {
                let _ = writeln!(
                    out,
                    "\nevery rule fired in some case ({} rules)",
                    report.rule_count
                );
            }
        } else {
            let _ = writeln!(
                out,
                "\nrules no case made fire ({} of {}){}:",
                report.untested.len(),
                report.rule_count,
                if coverage {
                    ", and --coverage asks for all"
                } else {
                    ""
                }
            );
            let mut by_playbook: Vec<(&str, Vec<&str>)> = Vec::new();
            for (p, rule) in &report.untested {
                match by_playbook.last_mut() {
                    Some((last, rules)) if last == p => rules.push(rule),
                    _ => by_playbook.push((p, vec![rule])),
                }
            }
            for (p, rules) in by_playbook {
                let _ = writeln!(out, "  {p}: {}", rules.join(", "));
            }
        }
    }
    if !report.diagnostics.is_empty() {
        let _ = writeln!(
            out,
            "\n{} problem{} in test files (above)",
            report.diagnostics.len(),
            if report.diagnostics.len() == 1 {
                ""
            } else {
                "s"
            }
        );
    }
    let _ = writeln!(
        out,
        "\n{} passed, {} failed",
        report.passed(),
        report.failed()
    );
    out
}
