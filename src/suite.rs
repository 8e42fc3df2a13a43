//! Dry-run test files: `rules/<playbook>.test.yaml` cases run against a
//! ruleset, each compared key by key with what it expects, plus the rules
//! no case made fire.

use crate::dsl::codes::Code;
use crate::dsl::diagnostic::{closest, Diagnostic, Sources};
use crate::dsl::span::{offset_of, Span};
use crate::engine::{Event, Lead, Marketing, Outcome, Situation, ThreadInput, Window};
use crate::render::{is_yaml_limit, read_yaml, too_large, yaml_limit_diagnostic, yaml_message};
use crate::ruleset::{Decision, Ruleset};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a case can expect of the handoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedHandoff {
    Session,
    Template,
    BlockedNoOptIn,
    BlockedWindowClosed,
    PausedHuman,
    AlreadyOpen,
    BlockedMarketingOptOut,
    None,
}

impl ExpectedHandoff {
    fn as_str(self) -> &'static str {
        match self {
            ExpectedHandoff::Session => "session",
            ExpectedHandoff::Template => "template",
            ExpectedHandoff::BlockedNoOptIn => "blocked_no_opt_in",
            ExpectedHandoff::BlockedWindowClosed => "blocked_window_closed",
            ExpectedHandoff::PausedHuman => "paused_human",
            ExpectedHandoff::AlreadyOpen => "already_open",
            ExpectedHandoff::BlockedMarketingOptOut => "blocked_marketing_opt_out",
            ExpectedHandoff::None => "none",
        }
    }
}

/// The keys a case may check; each is checked only when given.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub rules: Option<Spanned<Vec<Spanned<String>>>>,
    pub otherwise: Option<bool>,
    pub handoff: Option<ExpectedHandoff>,
    pub template: Option<String>,
    pub message: Option<String>,
    pub assign: Option<String>,
    pub takeover: Option<String>,
    pub tags: Option<Vec<String>>,
    pub notify: Option<Vec<String>>,
    pub ask: Option<Vec<String>>,
    pub drop: Option<String>,
    /// The decision's warnings (values that cannot be read, ...), exactly.
    pub warnings: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    lead: Spanned<Lead>,
    #[serde(default)]
    window: Option<Window>,
    #[serde(default)]
    human: bool,
    /// `lead` (default) or `message`: what is being decided.
    #[serde(default)]
    event: Event,
    /// The lead's thread: open, since when, when the last one closed.
    #[serde(default)]
    thread: ThreadInput,
    /// `opted_out`: the lead stopped marketing messages.
    #[serde(default)]
    marketing: Marketing,
    #[serde(default)]
    now: Option<Spanned<String>>,
    #[serde(default)]
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    playbook: Spanned<String>,
    #[serde(default)]
    now: Option<Spanned<String>>,
    #[serde(default)]
    cases: Vec<Spanned<RawCase>>,
}

/// One case, ready to run.
pub struct Case {
    pub name: String,
    pub line: usize,
    pub lead: Lead,
    pub situation: Situation,
    pub expect: Expect,
}

/// One test file, loaded.
pub struct TestFile {
    /// The file as named in output.
    pub file: String,
    pub playbook: String,
    pub cases: Vec<Case>,
}

/// A key whose value differs from what the case expects.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mismatch {
    pub key: &'static str,
    pub expected: String,
    pub got: String,
}

/// The result of one case.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub file: String,
    pub line: usize,
    pub playbook: String,
    pub name: String,
    pub mismatches: Vec<Mismatch>,
    #[serde(skip)]
    pub decision: Option<Decision>,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Everything a test run found.
#[derive(Default)]
pub struct Report {
    pub results: Vec<CaseResult>,
    /// Problems with the test files themselves.
    pub diagnostics: Vec<Diagnostic>,
    pub sources: Sources,
    /// `(playbook, rule)` pairs no case made fire, in file order.
    pub untested: Vec<(String, String)>,
    /// Playbooks that have no test file.
    pub without_tests: Vec<String>,
    pub rule_count: usize,
}

impl Report {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

/// The largest dry-run test file read, in bytes: thousands of cases.
pub const MAX_TEST_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Finds `*.test.yaml` files in a rules directory, sorted.
pub fn find_test_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".test.yaml"))
        })
        .collect();
    files.sort();
    files
}

/// Loads and runs every test file in `dir` against `ruleset`. `filter`
/// keeps only cases whose name contains it (without case).
pub fn run(dir: &Path, ruleset: &Ruleset, filter: Option<&str>) -> Report {
    let mut report = Report::default();
    let mut fired: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut tested_playbooks = BTreeSet::new();
    let filter = filter.map(str::to_lowercase);
    for path in find_test_files(dir) {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                report.diagnostics.push(Diagnostic::new(
                    Code::E025Io,
                    format!("cannot read test file: {e}"),
                    &shown,
                    None,
                ));
                continue;
            }
        };
        report.sources.add(&shown, &text);
        let Some(file) = load_file(&shown, &text, ruleset, &mut report.diagnostics) else {
            continue;
        };
        tested_playbooks.insert(file.playbook.clone());
        for case in file.cases {
            if let Some(f) = &filter {
                if !case.name.to_lowercase().contains(f) {
                    continue;
                }
            }
            let result = run_case(&file.file, &file.playbook, case, ruleset);
            if let Some(d) = &result.decision {
                fired
                    .entry(file.playbook.clone())
                    .or_default()
                    .extend(d.rules.iter().map(|r| r.to_string()));
            }
            report.results.push(result);
        }
    }
    for (name, playbook) in &ruleset.playbooks {
        if !tested_playbooks.contains(name) {
            report.without_tests.push(name.clone());
        }
        let hit = fired.get(name);
        for rule in &playbook.compiled.rules {
            report.rule_count += 1;
            if !hit.is_some_and(|h| h.contains(&*rule.name)) {
                report.untested.push((name.clone(), rule.name.to_string()));
            }
        }
    }
    crate::dsl::diagnostic::sort(&mut report.diagnostics);
    report
}

fn span_at(text: &str, location: &serde_saphyr::Location) -> Span {
    let start = match location.span().byte_offset() {
        Some(b) => (b as usize).min(text.len()),
        None => offset_of(text, location.line() as usize, location.column() as usize),
    };
    let rest = &text[start..];
    let end = rest
        .find(['\n', ':', ',', '}', ']'])
        .unwrap_or(rest.len())
        .max(1)
        .min(rest.len());
    Span::new(start, start + end)
}

fn line_of(location: &serde_saphyr::Location) -> usize {
    location.line() as usize
}

/// Reads a test file; problems become diagnostics and the file (or case) is skipped.
pub fn load_file(
    file: &str,
    text: &str,
    ruleset: &Ruleset,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<TestFile> {
    if text.len() > MAX_TEST_FILE_BYTES {
        diagnostics.push(too_large(
            file,
            "test file",
            text.len(),
            MAX_TEST_FILE_BYTES,
        ));
        return None;
    }
    let raw: RawFile = match read_yaml(text) {
        Ok(r) => r,
        Err(e) if is_yaml_limit(&e) => {
            diagnostics.push(yaml_limit_diagnostic(&e, file, text));
            return None;
        }
        Err(e) => {
            let span = e.location().map(|l| span_at(text, &l));
            diagnostics.push(
                Diagnostic::new(Code::E028TestFile, format!("test file cannot be read: {}", yaml_message(&e)), file, span)
                    .help("a test file has `playbook`, an optional `now`, and `cases`, each with `name`, `lead` and `expect`"),
            );
            return None;
        }
    };
    let Some(playbook) = ruleset.playbooks.get(&raw.playbook.value) else {
        let known: Vec<&str> = ruleset.playbooks.keys().map(String::as_str).collect();
        let help = match closest(&raw.playbook.value, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("playbooks here: {}", known.join(", ")),
        };
        diagnostics.push(
            Diagnostic::new(
                Code::E029TestUnknownPlaybook,
                format!("unknown playbook `{}`", raw.playbook.value),
                file,
                Some(span_at(text, &raw.playbook.referenced)),
            )
            .help(help),
        );
        return None;
    };
    let default_now = match &raw.now {
        Some(now) => match parse_now(&now.value) {
            Some(t) => Some(t),
            None => {
                diagnostics.push(bad_now(file, text, now));
                return None;
            }
        },
        None => None,
    };
    let schema = &playbook.compiled.schema;
    let rule_names: Vec<&str> = playbook.compiled.rules.iter().map(|r| &*r.name).collect();
    let mut cases = Vec::new();
    for spanned in raw.cases {
        let line = line_of(&spanned.referenced);
        let raw_case = spanned.value;
        let mut ok = true;
        let now = match &raw_case.now {
            Some(n) => match parse_now(&n.value) {
                Some(t) => Some(t),
                None => {
                    diagnostics.push(bad_now(file, text, n));
                    ok = false;
                    None
                }
            },
            None => default_now,
        };
        let Some(now) = now.or((!ok).then(Utc::now)) else {
            diagnostics.push(
                Diagnostic::new(
                    Code::E032TestBadNow,
                    format!("case `{}` has no `now`", raw_case.name),
                    file,
                    Some(span_at(text, &spanned.referenced)),
                )
                .help("set `now` at the top of the file or in the case, so the case gives the same result every day"),
            );
            continue;
        };
        let lead_start = raw_case
            .lead
            .referenced
            .span()
            .byte_offset()
            .map(|b| b as usize)
            .unwrap_or(0);
        for key in raw_case.lead.value.fields.keys() {
            if schema.field_index(key).is_none() {
                ok = false;
                let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
                let span = find_key(text, lead_start, key)
                    .unwrap_or_else(|| span_at(text, &raw_case.lead.referenced));
                diagnostics.push(
                    Diagnostic::new(
                        Code::E031TestUndeclaredField,
                        format!(
                            "case `{}` sets field `{key}`, which playbook `{}` does not declare",
                            raw_case.name, schema.name
                        ),
                        file,
                        Some(span),
                    )
                    .help(match closest(key, names.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("declared fields: {}", names.join(", ")),
                    }),
                );
            }
        }
        if let Some(rules) = &raw_case.expect.rules {
            for rule in &rules.value {
                if !rule_names.contains(&rule.value.as_str()) {
                    ok = false;
                    diagnostics.push(
                        Diagnostic::new(
                            Code::E030TestUnknownRule,
                            format!(
                                "case `{}` expects rule `{}`, which playbook `{}` does not have",
                                raw_case.name, rule.value, schema.name
                            ),
                            file,
                            Some(span_at(text, &rule.referenced)),
                        )
                        .help(
                            match closest(&rule.value, rule_names.iter().copied()) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!("rules: {}", rule_names.join(", ")),
                            },
                        ),
                    );
                }
            }
        }
        if !ok {
            continue;
        }
        cases.push(Case {
            name: raw_case.name,
            line,
            lead: raw_case.lead.value,
            situation: Situation {
                now,
                window_open: raw_case.window == Some(Window::Open),
                human: raw_case.human,
                event: raw_case.event,
                thread: raw_case.thread.at(now),
                marketing_opt_out: raw_case.marketing == Marketing::OptedOut,
                message: None,
            },
            expect: raw_case.expect,
        });
    }
    Some(TestFile {
        file: file.to_string(),
        playbook: raw.playbook.value,
        cases,
    })
}

fn find_key(text: &str, from: usize, key: &str) -> Option<Span> {
    let from = from.min(text.len());
    let rest = &text[from..];
    let mut at = 0;
    while let Some(i) = rest[at..].find(key) {
        let start = at + i;
        let before = rest[..start].chars().last();
        let after = rest[start + key.len()..].chars().next();
        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) && after == Some(':') {
            return Some(Span::new(from + start, from + start + key.len()));
        }
        at = start + key.len();
    }
    None
}

fn parse_now(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn bad_now(file: &str, text: &str, now: &Spanned<String>) -> Diagnostic {
    Diagnostic::new(
        Code::E032TestBadNow,
        format!("`{}` is not an RFC 3339 time", now.value),
        file,
        Some(span_at(text, &now.referenced)),
    )
    .help("write it as `2027-01-10T10:00:00+05:30`")
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn opt(value: Option<&str>) -> String {
    value.map(quoted).unwrap_or_else(|| "none".to_string())
}

/// Runs one case and compares every key it expects.
pub fn run_case(file: &str, playbook: &str, case: Case, ruleset: &Ruleset) -> CaseResult {
    let mut mismatches = Vec::new();
    let decision = match ruleset.decide(playbook, &case.lead, &case.situation) {
        Ok(d) => d,
        Err(e) => {
            mismatches.push(Mismatch {
                key: "playbook",
                expected: playbook.to_string(),
                got: e.to_string(),
            });
            return CaseResult {
                file: file.into(),
                line: case.line,
                playbook: playbook.into(),
                name: case.name,
                mismatches,
                decision: None,
            };
        }
    };
    let e = &case.expect;
    let mut check = |key: &'static str, expected: String, got: String| {
        if expected != got {
            mismatches.push(Mismatch { key, expected, got });
        }
    };
    if let Some(rules) = &e.rules {
        let want: Vec<String> = rules.value.iter().map(|r| r.value.clone()).collect();
        let got: Vec<String> = decision.rules.iter().map(|r| r.to_string()).collect();
        check("rules", list(&want), list(&got));
    }
    if let Some(o) = e.otherwise {
        check("otherwise", o.to_string(), decision.otherwise.to_string());
    }
    let handoff = decision.handoff.as_ref();
    if let Some(h) = e.handoff {
        let got = handoff.map(|h| h.outcome.as_str()).unwrap_or("none");
        check("handoff", h.as_str().to_string(), got.to_string());
    }
    if let Some(t) = &e.template {
        // The template that is (or would be) sent.
        let got = handoff
            .filter(|h| h.outcome == Outcome::Template)
            .and_then(|h| h.template.as_deref());
        check("template", quoted(t), opt(got));
    }
    if let Some(m) = &e.message {
        check(
            "message",
            quoted(m),
            opt(handoff.and_then(|h| h.message.as_deref())),
        );
    }
    if let Some(q) = &e.assign {
        check("assign", quoted(q), opt(decision.actions.assign.as_deref()));
    }
    if let Some(q) = &e.takeover {
        check(
            "takeover",
            quoted(q),
            opt(decision.actions.takeover.as_deref()),
        );
    }
    if let Some(t) = &e.tags {
        check("tags", list(t), list(&decision.actions.tags));
    }
    if let Some(n) = &e.notify {
        check("notify", list(n), list(&decision.actions.notify));
    }
    if let Some(a) = &e.ask {
        check("ask", list(a), list(&decision.actions.ask));
    }
    if let Some(d) = &e.drop {
        check("drop", quoted(d), opt(decision.actions.drop.as_deref()));
    }
    if let Some(w) = &e.warnings {
        let show = |items: &[String]| {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| quoted(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        check("warnings", show(w), show(&decision.warnings));
    }
    CaseResult {
        file: file.into(),
        line: case.line,
        playbook: playbook.into(),
        name: case.name,
        mismatches,
        decision: Some(decision),
    }
}

/// The report as JUnit XML, for CI systems.
pub fn junit(report: &Report) -> String {
    let mut by_playbook: BTreeMap<&str, Vec<&CaseResult>> = BTreeMap::new();
    for r in &report.results {
        by_playbook.entry(&r.playbook).or_default().push(r);
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"handoff\" tests=\"{}\" failures=\"{}\">\n",
        report.results.len(),
        report.failed()
    ));
    for (playbook, results) in by_playbook {
        let failures = results.iter().filter(|r| !r.passed()).count();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">\n",
            xml(playbook),
            results.len()
        ));
        for r in results {
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" line=\"{}\"",
                xml(playbook),
                xml(&r.name),
                xml(&r.file),
                r.line
            ));
            if r.passed() {
                out.push_str("/>\n");
            } else {
                let body: Vec<String> = r
                    .mismatches
                    .iter()
                    .map(|m| format!("{}: expected {}, got {}", m.key, m.expected, m.got))
                    .collect();
                out.push_str(&format!(
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml(&format!("{} key(s) differ", r.mismatches.len())),
                    xml(&body.join("\n"))
                ));
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
