//! A mutation fuzzer on stable Rust for everything handoff reads from a
//! person or a peer: rules files (parse, check, compile), the formatter,
//! dry-run test files, lead files, template files and `whatsapp.yaml`
//! (check and render), and the webhook payload parsers.
//!
//! Each target starts from the real files of the repository (the bundled
//! rules, templates, test files, leads and Meta's payloads) and mutates
//! them: deletions, duplications, splices between seeds, and runs of the
//! tokens that once broke something (`(`, `not `, `{{ é`, `*`, YAML
//! aliases). An input that panics is written to `fuzz/found/` and fails the
//! run. Inputs once found are kept in `fuzz/regressions/<target>/` and
//! replayed on every `cargo test`.
//!
//! `cargo test --test fuzz` replays the regressions and runs a few hundred
//! mutants per target with a fixed seed. A long run, per target:
//!
//! ```text
//! HANDOFF_FUZZ_TARGET=rules HANDOFF_FUZZ_SECONDS=600 \
//!     cargo test --release --test fuzz -- --ignored --nocapture
//! ```
//!
//! (README, Development, lists the targets.) A stack overflow or an
//! allocation failure aborts the process instead of panicking; the input
//! being run is always in `fuzz/found/<target>-current` for that case, and
//! a watchdog aborts on an input that runs longer than `HANG_SECONDS`.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use handoff::dsl::diagnostic::Sources;
use handoff::engine::Situation;
use handoff::history::LeadRecord;
use handoff::render::Templates;
use handoff::ruleset::{self, from_sources, Ruleset};
use harness::root;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// An input that runs this long is a hang (a working input takes
/// milliseconds; the limits stop a runaway one well before this).
const HANG_SECONDS: u64 = 30;

/// Mutants per target in the short run of `cargo test`.
const SHORT_RUN: usize = 150;

/// One thing handoff reads, and how it is read.
struct Target {
    name: &'static str,
    /// The seed inputs: files of the repository.
    seeds: fn() -> Vec<String>,
    /// Tokens worth inserting, beside the common ones.
    tokens: &'static [&'static str],
    /// Reads one input as handoff does; a panic is a finding.
    run: fn(&str),
}

const TARGETS: &[Target] = &[
    Target {
        name: "rules",
        seeds: rules_seeds,
        tokens: &[
            "(",
            ")",
            "not ",
            " and ",
            " or ",
            "rule r { when ",
            "then ",
            "\"",
            "matches \"",
            "within next ",
            "field x: one of \"a\"",
            "2027-02-30",
            "{",
            "}",
            "#",
            "\\",
        ],
        run: run_rules,
    },
    Target {
        name: "fmt",
        seeds: rules_seeds,
        tokens: &[
            "(",
            ")",
            "not ",
            " and ",
            " or ",
            "# c\n",
            "\n",
            "one of \"a\", ",
            "\"",
        ],
        run: run_fmt,
    },
    Target {
        name: "test_file",
        seeds: test_file_seeds,
        tokens: &[
            "&a ", "*a", "[", "]", "{", "}", "- ", ": ", "now: ", "\n    ", "!!str ",
        ],
        run: run_test_file,
    },
    Target {
        name: "lead_file",
        seeds: lead_seeds,
        tokens: &[
            "[",
            "]",
            "{",
            "}",
            "\"",
            ",",
            ":",
            "null",
            "\"fields\": {",
            "\\u0000",
        ],
        run: run_lead_file,
    },
    Target {
        name: "template",
        seeds: template_seeds,
        tokens: &[
            "{{",
            "}}",
            "{%",
            "%}",
            "{{ é",
            " * 1000000000",
            "range(100000)",
            "| date(\"%H\")",
            "{% for i in range(100000) %}",
            "{% endfor %}",
            "{% macro f() %}{{ f() }}{% endmacro %}",
            "| join",
            "| list",
            "~",
        ],
        run: run_template,
    },
    Target {
        name: "approved",
        seeds: approved_seeds,
        tokens: &[
            "&a ", "*a", "{{1}}", "{{", "}}", "- ", "params:", "'", "\"", "\n  ",
        ],
        run: run_approved,
    },
    Target {
        name: "webhook",
        seeds: webhook_seeds,
        tokens: &[
            "[",
            "]",
            "{",
            "}",
            "\"",
            ",",
            ":",
            "null",
            "\"entry\": [",
            "\"changes\": [",
        ],
        run: run_webhook,
    },
];

/// Tokens every target gets: multi-byte characters, controls, long runs.
const COMMON_TOKENS: &[&str] = &[
    "é",
    "€",
    "\u{0}",
    "\r\n",
    "\t",
    "𝄞",
    " ",
    "0",
    "-1",
    "9999999999999999999999",
];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn rules_seeds() -> Vec<String> {
    let mut seeds: Vec<String> = files_with(&root().join("rules"), ".rules")
        .iter()
        .chain(files_with(&root().join("tests/golden"), ".rules").iter())
        .map(|p| read(p))
        .collect();
    seeds.push(String::new());
    seeds
}

fn test_file_seeds() -> Vec<String> {
    files_with(&root().join("rules"), ".test.yaml")
        .iter()
        .chain(files_with(&root().join("tests/fixtures/suite"), ".yaml").iter())
        .map(|p| read(p))
        .collect()
}

fn lead_seeds() -> Vec<String> {
    let mut seeds: Vec<String> = files_with(&root().join("examples/leads"), ".json")
        .iter()
        .map(|p| read(p))
        .collect();
    seeds.extend(
        read(&root().join("tests/fixtures/diff/leads.jsonl"))
            .lines()
            .take(20)
            .map(str::to_string),
    );
    seeds
}

fn template_seeds() -> Vec<String> {
    files_with(&root().join("templates"), ".j2")
        .iter()
        .map(|p| read(p))
        .collect()
}

fn approved_seeds() -> Vec<String> {
    vec![read(&root().join("templates/whatsapp.yaml"))]
}

fn webhook_seeds() -> Vec<String> {
    files_with(&root().join("tests/fixtures/meta"), ".json")
        .iter()
        .map(|p| read(p))
        .collect()
}

/// The bundled rules and templates, loaded once.
fn bundled() -> &'static Ruleset {
    static BUNDLED: OnceLock<Ruleset> = OnceLock::new();
    BUNDLED.get_or_init(|| {
        ruleset::load(&root().join("rules"), Some(&root().join("templates")))
            .ruleset
            .expect("the bundled rules check")
    })
}

fn run_rules(text: &str) {
    let loaded = from_sources(
        vec![("demo.rules".into(), "demo".into(), text.to_string())],
        Templates::empty(),
        Sources::default(),
        Vec::new(),
    );
    let _ = handoff::cli::check::human_report(&loaded);
}

fn run_fmt(text: &str) {
    if let Ok(formatted) = handoff::cli::fmt::format_text(text, "demo.rules") {
        // What fmt writes must read back: formatting it again is fine too.
        let _ = handoff::cli::fmt::format_text(&formatted, "demo.rules");
    }
}

fn run_test_file(text: &str) {
    let ruleset = bundled();
    let mut diagnostics = Vec::new();
    if let Some(file) =
        handoff::suite::load_file("events.test.yaml", text, ruleset, &mut diagnostics)
    {
        for case in file.cases {
            let _ = handoff::suite::run_case(&file.file, &file.playbook, case, ruleset);
        }
    }
    let mut sources = Sources::default();
    sources.add("events.test.yaml", text);
    for d in &diagnostics {
        let _ = handoff::dsl::diagnostic::render(d, &sources);
    }
}

fn decide_everywhere(ruleset: &Ruleset, record: &LeadRecord) {
    let now = chrono::DateTime::parse_from_rfc3339("2027-01-10T10:00:00+05:30")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let situation = record.situation(now).unwrap_or_else(|_| Situation::at(now));
    for playbook in ruleset.playbooks.keys() {
        let _ = ruleset.decide(playbook, &record.lead, &situation);
        let _ = ruleset.explain(playbook, &record.lead, &situation);
    }
}

fn run_lead_file(text: &str) {
    if let Ok(record) = LeadRecord::parse(text) {
        decide_everywhere(bundled(), &record);
    }
}

/// A playbook that sends `demo/msg` while the window is open and the
/// approved template `demo_t` when it is closed, with a field of each type.
const DEMO_RULES: &str = r#"playbook demo {
  field day: date
  field at: datetime
  field city: text
  field guests: number
  rule r {
    when consent.whatsapp
    then handoff whatsapp { open "demo/msg" template "demo_t" }
  }
  otherwise { tag "y" }
}
"#;

const DEMO_APPROVED: &str = "demo_t:\n  language: en\n  category: utility\n  body: \"Hi {{1}}\"\n  params:\n    - \"{{ city }}\"\n";

/// Loads `template` as `demo/msg.j2` and `approved` as `whatsapp.yaml`,
/// checks the demo playbook against them, and renders for a few leads.
fn check_and_render(template: &str, approved: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("demo")).unwrap();
    std::fs::write(dir.path().join("demo/msg.j2"), template).unwrap();
    std::fs::write(dir.path().join("whatsapp.yaml"), approved).unwrap();
    let mut sources = Sources::default();
    let (templates, diagnostics) = Templates::load(dir.path(), "templates", &mut sources);
    let loaded = from_sources(
        vec![("demo.rules".into(), "demo".into(), DEMO_RULES.into())],
        templates,
        sources,
        diagnostics,
    );
    let _ = handoff::cli::check::human_report(&loaded);
    // Rendering runs whether or not check passed: serve never renders a
    // template that failed check, but the renderer must hold anyway.
    let mut sources = Sources::default();
    let (templates, diagnostics) = Templates::load(dir.path(), "templates", &mut sources);
    let checked = from_sources(
        vec![(
            "demo.rules".into(),
            "demo".into(),
            DEMO_RULES.replace("field day: date\n", ""),
        )],
        templates,
        sources,
        diagnostics,
    );
    let Some(ruleset) = checked.ruleset else {
        return;
    };
    for lead in [
        r#"{"name": "Aisha Khan", "consent": {"whatsapp": true}, "window": "open", "fields": {"city": "Goa", "at": "2027-03-14T10:00:00+05:30", "guests": 120}}"#,
        r#"{"consent": {"whatsapp": true}, "window": "closed", "fields": {"city": "é"}}"#,
    ] {
        decide_everywhere(&ruleset, &LeadRecord::parse(lead).unwrap());
    }
}

fn run_template(text: &str) {
    check_and_render(text, DEMO_APPROVED);
}

fn run_approved(text: &str) {
    check_and_render("Hi {{ city }}", text);
}

fn run_webhook(text: &str) {
    let body = text.as_bytes();
    let _ = handoff::intake::parse_meta_webhook_lenient(body);
    let _ = handoff::intake::parse_meta_webhook(body);
    let _ = handoff::intake::parse_call_report(body);
    let _ = handoff::intake::map_form_json_body(body, &handoff::intake::FieldMapping::empty());
}

/// One mutant of `seeds[..]`.
fn mutate(rng: &mut StdRng, seeds: &[String], tokens: &[&str]) -> String {
    let mut bytes = seeds[rng.random_range(0..seeds.len())].as_bytes().to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=bytes.len());
        match rng.random_range(0..7) {
            0 if !bytes.is_empty() => {
                let end = (at + rng.random_range(1..64)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            1 if !bytes.is_empty() => {
                let start = rng.random_range(0..bytes.len());
                let end = (start + rng.random_range(1..256)).min(bytes.len());
                let chunk = bytes[start..end].to_vec();
                bytes.splice(at..at, chunk);
            }
            2 => {
                let other = seeds[rng.random_range(0..seeds.len())].as_bytes();
                if !other.is_empty() {
                    let start = rng.random_range(0..other.len());
                    let end = (start + rng.random_range(1..512)).min(other.len());
                    bytes.splice(at..at, other[start..end].iter().copied());
                }
            }
            3 if !bytes.is_empty() => {
                let i = at.min(bytes.len() - 1);
                bytes[i] = rng.random_range(0x20..0x7f);
            }
            4 => {
                // A long run of one token: depth, length and count limits.
                let token = pick(rng, tokens);
                let n = [2, 10, 100, 1_000, 10_000][rng.random_range(0..5)];
                bytes.splice(at..at, token.repeat(n).into_bytes());
            }
            _ => {
                let token = pick(rng, tokens);
                bytes.splice(at..at, token.bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn pick<'a>(rng: &mut StdRng, tokens: &[&'a str]) -> &'a str {
    let n = tokens.len() + COMMON_TOKENS.len();
    let i = rng.random_range(0..n);
    tokens
        .get(i)
        .copied()
        .unwrap_or_else(|| COMMON_TOKENS[i - tokens.len()])
}

fn found_dir() -> PathBuf {
    root().join("fuzz/found")
}

/// Runs `input` through `target`; on a panic, keeps the input and says where.
fn attempt(target: &Target, input: &str) -> Option<PathBuf> {
    let result = std::panic::catch_unwind(|| (target.run)(input));
    if result.is_ok() {
        return None;
    }
    std::fs::create_dir_all(found_dir()).unwrap();
    let path = found_dir().join(format!("{}-{:016x}", target.name, fnv(input)));
    std::fs::write(&path, input).unwrap();
    Some(path)
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Every kept input of `target`, as (file name, text).
fn regressions(target: &str) -> Vec<(String, String)> {
    let dir = root().join("fuzz/regressions").join(target);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_kept_input_is_read_without_a_panic() {
    let mut found = Vec::new();
    let mut replayed = 0;
    for target in TARGETS {
        for (name, text) in regressions(target.name) {
            replayed += 1;
            if let Some(path) = attempt(target, &text) {
                found.push(format!("{}/{name} -> {}", target.name, path.display()));
            }
        }
    }
    assert!(replayed > 0, "no inputs under fuzz/regressions");
    assert!(found.is_empty(), "panicked on: {found:?}");
}

#[test]
fn a_few_hundred_mutants_per_target_are_read_without_a_panic() {
    let mut found = Vec::new();
    for (i, target) in TARGETS.iter().enumerate() {
        let seeds = (target.seeds)();
        assert!(!seeds.is_empty(), "no seeds for {}", target.name);
        let mut rng = StdRng::seed_from_u64(20 + i as u64);
        for _ in 0..SHORT_RUN {
            let input = mutate(&mut rng, &seeds, target.tokens);
            if let Some(path) = attempt(target, &input) {
                found.push(path.display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "panicked on: {found:?}");
}

/// The long run: `HANDOFF_FUZZ_TARGET` (default: every target in turn) for
/// `HANDOFF_FUZZ_SECONDS` each (default 600), seeded by `HANDOFF_FUZZ_SEED`.
#[test]
#[ignore = "a long fuzz run; see the module's documentation"]
fn fuzz_for_a_while() {
    let seconds: u64 = std::env::var("HANDOFF_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let seed: u64 = std::env::var("HANDOFF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let only = std::env::var("HANDOFF_FUZZ_TARGET").ok();
    std::fs::create_dir_all(found_dir()).unwrap();
    // The watchdog: a stuck input is written out and the process aborted,
    // since a running thread cannot be stopped from outside.
    let started_input = Arc::new(AtomicU64::new(u64::MAX));
    let epoch = Instant::now();
    {
        let started_input = started_input.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let at = started_input.load(Ordering::SeqCst);
            if at != u64::MAX && epoch.elapsed().as_secs().saturating_sub(at) > HANG_SECONDS {
                eprintln!("an input ran over {HANG_SECONDS} s: see fuzz/found/*-current");
                std::process::abort();
            }
        });
    }
    let mut found = Vec::new();
    for (i, target) in TARGETS.iter().enumerate() {
        if only.as_deref().is_some_and(|o| o != target.name) {
            continue;
        }
        let seeds = (target.seeds)();
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
        let current = found_dir().join(format!("{}-current", target.name));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut runs = 0u64;
        while Instant::now() < deadline {
            let input = mutate(&mut rng, &seeds, target.tokens);
            std::fs::write(&current, &input).unwrap();
            started_input.store(epoch.elapsed().as_secs(), Ordering::SeqCst);
            if let Some(path) = attempt(target, &input) {
                found.push(path.display().to_string());
            }
            started_input.store(u64::MAX, Ordering::SeqCst);
            runs += 1;
        }
        let _ = std::fs::remove_file(&current);
        println!(
            "fuzz {}: {runs} inputs in {seconds} s (seed {seed}), {} panics",
            target.name,
            found.len()
        );
    }
    assert!(found.is_empty(), "panicked on: {found:?}");
}
