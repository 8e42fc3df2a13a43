//! Golden files for the language: parse errors, check diagnostics, explain
//! output and rendering. Adding a case means adding a file; run with
//! `BLESS=1 cargo test --test golden` to write the expected output after a
//! deliberate change, then review the diff.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use handoff::cli::check::human_report;
use handoff::cli::explain::LeadRecord;
use handoff::dsl::diagnostic::Sources;
use handoff::engine::Situation;
use handoff::render::Templates;
use handoff::ruleset::{self, from_sources};
use harness::{binary, root};
use std::path::{Path, PathBuf};

fn cases(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("tests/golden").join(dir))
        .expect("golden directory exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no golden cases in {dir}");
    out
}

/// Compares `actual` with the `.out` file beside `case`, or writes it under BLESS.
fn assert_golden(case: &Path, actual: &str, failures: &mut Vec<String>) {
    let expected_path = case.with_extension("out");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&expected_path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "--- {} differs\n--- expected:\n{expected}\n--- actual:\n{actual}",
            expected_path.display()
        ));
    }
}

fn check_case(dir: &str, case: &Path) -> String {
    let stem = case.file_stem().unwrap().to_string_lossy().into_owned();
    let own = case.with_extension("templates");
    let templates_dir = if own.is_dir() {
        own
    } else {
        root().join("tests/golden/templates")
    };
    let mut sources = Sources::default();
    let (templates, diagnostics) = Templates::load(&templates_dir, "templates", &mut sources);
    let text = std::fs::read_to_string(case).unwrap();
    let loaded = from_sources(
        vec![(format!("{dir}/{stem}.rules"), stem, text)],
        templates,
        sources,
        diagnostics,
    );
    human_report(&loaded)
}

fn run_dir(dir: &str) {
    let mut failures = Vec::new();
    for case in cases(dir, "rules") {
        let out = check_case(dir, &case);
        assert_golden(&case, &out, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn parse_errors() {
    run_dir("parse");
}

#[test]
fn check_diagnostics() {
    run_dir("check");
}

/// The ruleset hash changes with every edit of the bundled rules; the golden
/// files show it as `<hash>`.
fn mask_hash(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match line.find("ruleset ") {
            Some(i) if line.len() >= i + 8 + 12 => {
                out.push_str(&line[..i + 8]);
                out.push_str("<hash>");
                out.push_str(&line[i + 8 + 12..]);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[test]
fn explain_output() {
    let mut failures = Vec::new();
    for case in cases("explain", "json") {
        let output = binary()
            .args(["explain", "--lead"])
            .arg(case.strip_prefix(root()).unwrap())
            .output()
            .expect("run handoff explain");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        text.push_str(&format!("exit {}\n", output.status.code().unwrap_or(-1)));
        assert_golden(&case, &mask_hash(&text), &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rendering() {
    let loaded = ruleset::load(&root().join("rules"), None);
    let ruleset = loaded.ruleset.expect("bundled rules check");
    let mut failures = Vec::new();
    for case in cases("render", "json") {
        let record = LeadRecord::parse(&std::fs::read_to_string(&case).unwrap()).unwrap();
        let now = chrono::DateTime::parse_from_rfc3339(
            record.now.as_deref().expect("render cases set `now`"),
        )
        .unwrap()
        .with_timezone(&chrono::Utc);
        let situation = Situation {
            window_open: record.window == Some(handoff::cli::explain::Window::Open),
            human: record.human,
            ..Situation::at(now)
        };
        let playbook = record
            .lead
            .playbook
            .clone()
            .expect("render cases set `playbook`");
        let decision = ruleset.decide(&playbook, &record.lead, &situation).unwrap();
        let mut text = format!("rules: {:?}\n", decision.rules);
        match &decision.handoff {
            None => text.push_str("handoff: none\n"),
            Some(h) => {
                text.push_str(&format!("handoff: {}\n", h.outcome.as_str()));
                if let Some(m) = &h.message {
                    text.push_str(&format!("message: {m}\n"));
                }
                if let Some(a) = &h.approved {
                    text.push_str(&format!("approved: {} ({})\n", a.name, a.language));
                    for (i, p) in a.params.iter().enumerate() {
                        text.push_str(&format!("  {{{{{}}}}} = {p:?}\n", i + 1));
                    }
                    text.push_str(&format!("preview: {}\n", a.preview));
                }
                if let Some(e) = &h.error {
                    text.push_str(&format!("error: {e}\n"));
                }
            }
        }
        for w in &decision.warnings {
            text.push_str(&format!("warning: {w}\n"));
        }
        assert_golden(&case, &text, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
