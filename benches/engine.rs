//! Engine benchmarks: a generated playbook of 1,000 rules evaluated against
//! 10,000 generated leads, with and without a trace; loading (parse, check,
//! compile) that playbook; and the same rules written as CEL programs, tried
//! in order until the first that holds, as a baseline.
//!
//! Run with `cargo bench --bench engine`. After criterion's groups, a direct
//! timing pass prints a summary table: per-lead times, the trace/plain and
//! cel/ours ratios, and the load time. Then the first-match comparison
//! (`workload/compare.rs`): the same generated rules at 50, 1,000 and 5,000
//! rules decided by a generated hand-written Rust baseline, by handoff, by
//! zen-engine and by CEL, checked to agree on every lead, then timed. The
//! figures are reported, never asserted.
//!
//! Everything is generated from fixed seeds, so every run sees the same rules
//! and the same leads.

// Benchmark code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cel::common::types::{CelBool, CelDouble, CelInt, CelString};
use cel::{Context, Env, Program, Value};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use criterion::{Criterion, SamplingMode};
use handoff::dsl::diagnostic::Sources;
use handoff::dsl::schema::{normalize_text, CHANNELS};
use handoff::engine::{evaluate, evaluate_with_trace, CompiledPlaybook, Lead, Situation};
use handoff::render::Templates;
use handoff::ruleset::{from_sources, Loaded};
use serde_json::{Map, Value as Json};

#[path = "workload/compare.rs"]
mod compare;
// The baseline's source writer in it is the build script's.
#[allow(dead_code)]
mod workload;

const RULES: usize = 1_000;
const LEADS: usize = 10_000;
const RULE_SEED: u64 = 0x5eed_0001_4a11_d0ff;
const LEAD_SEED: u64 = 0x5eed_0002_1ead_5eed;
const PLAYBOOK: &str = "bench";
const FILE: &str = "rules/bench.rules";

const INTENTS: [&str; 10] = [
    "event_enquiry",
    "pricing",
    "venue_visit",
    "complaint",
    "catering",
    "decor",
    "photography",
    "transport",
    "stay",
    "feedback",
];
const CITIES: [&str; 12] = [
    "Goa",
    "Mumbai",
    "Pune",
    "Delhi",
    "Jaipur",
    "Udaipur",
    "Bengaluru",
    "Chennai",
    "Kochi",
    "Hyderabad",
    "Kolkata",
    "Shimla",
];
const PACKAGES: [&str; 3] = ["silver", "gold", "platinum"];
const VENUES: [&str; 5] = ["beach", "hotel", "farmhouse", "banquet", "rooftop"];
const SEGMENTS: [&str; 3] = ["retail", "corporate", "agency"];
const CAMPAIGNS: [&str; 8] = [
    "Diwali_2026",
    "Summer_Sale",
    "Wedding_Fair",
    "Referral",
    "Google_Ads",
    "Meta_Ads",
    "Newsletter",
    "Walk_In",
];

/// How a declared field is read, for the CEL side (ours reads the schema).
#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Text,
    Number,
    Date,
    Bool,
}

/// The twelve declared fields: name, type, declaration.
const FIELDS: [(&str, Ty, &str); 12] = [
    ("city", Ty::Text, "text required"),
    ("event_date", Ty::Date, "date required"),
    ("guests", Ty::Number, "number"),
    ("budget", Ty::Number, "number"),
    (
        "package",
        Ty::Text,
        r#"one of "silver", "gold", "platinum""#,
    ),
    (
        "venue",
        Ty::Text,
        r#"one of "beach", "hotel", "farmhouse", "banquet", "rooftop""#,
    ),
    (
        "segment",
        Ty::Text,
        r#"one of "retail", "corporate", "agency""#,
    ),
    ("campaign", Ty::Text, "text"),
    ("vip", Ty::Bool, "bool"),
    ("repeat_customer", Ty::Bool, "bool"),
    ("nights", Ty::Number, "number"),
    ("follow_up", Ty::Date, "date"),
];

// ---------------------------------------------------------------------------
// A tiny deterministic PRNG (xorshift64*).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// `k` distinct items, in list order.
    fn subset(&mut self, items: &[&'static str], k: usize) -> Vec<&'static str> {
        let mut chosen = vec![false; items.len()];
        let mut left = k.min(items.len());
        while left > 0 {
            let i = self.below(items.len());
            if !chosen[i] {
                chosen[i] = true;
                left -= 1;
            }
        }
        items
            .iter()
            .zip(chosen)
            .filter(|(_, c)| *c)
            .map(|(s, _)| *s)
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The generated rules, written both in our language and in CEL.

/// One generated test. `path` is the path as our language writes it.
enum Test {
    Intent(&'static str),
    TextEq(&'static str, &'static str),
    TextNe(&'static str, &'static str),
    TextIn(&'static str, Vec<&'static str>),
    TextNotIn(&'static str, Vec<&'static str>),
    NumCmp(&'static str, &'static str, f64),
    DateCmp(&'static str, &'static str, NaiveDate),
    WithinNext(&'static str, i64),
    Flag(&'static str),
}

/// A path's CEL variable name (`package` is reserved in CEL).
fn cel_name(path: &str) -> &str {
    match path {
        "consent.whatsapp" => "consent_whatsapp",
        "package" => "pkg",
        other => other,
    }
}

fn dsl_number(n: f64) -> String {
    let digits = format!("{}", n as i64);
    if digits.len() <= 4 {
        return digits;
    }
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('_');
        }
        out.push(c);
    }
    out
}

fn quoted(items: &[&str], lower: bool) -> String {
    items
        .iter()
        .map(|s| {
            if lower {
                format!("\"{}\"", s.to_lowercase())
            } else {
                format!("\"{s}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn day_number(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce())
}

impl Test {
    fn dsl(&self) -> String {
        match self {
            Test::Intent(i) => format!("intent == \"{i}\""),
            Test::TextEq(p, v) => format!("{p} == \"{v}\""),
            Test::TextNe(p, v) => format!("{p} != \"{v}\""),
            Test::TextIn(p, vs) => format!("{p} in [{}]", quoted(vs, false)),
            Test::TextNotIn(p, vs) => format!("{p} not in [{}]", quoted(vs, false)),
            Test::NumCmp(p, op, n) => format!("{p} {op} {}", dsl_number(*n)),
            Test::DateCmp(p, op, d) => format!("{p} {op} {d}"),
            Test::WithinNext(p, n) => format!("{p} within next {n} days"),
            Test::Flag(p) => (*p).to_string(),
        }
    }

    /// The same test in CEL. Text is compared lowercased (the context holds
    /// lowercased text, as our engine compares text without case); dates are
    /// day numbers; numbers are doubles.
    fn cel(&self) -> String {
        match self {
            Test::Intent(i) => format!("intent == \"{i}\""),
            Test::TextEq(p, v) => format!("{} == \"{}\"", cel_name(p), v.to_lowercase()),
            Test::TextNe(p, v) => format!("{} != \"{}\"", cel_name(p), v.to_lowercase()),
            Test::TextIn(p, vs) => format!("{} in [{}]", cel_name(p), quoted(vs, true)),
            Test::TextNotIn(p, vs) => format!("!({} in [{}])", cel_name(p), quoted(vs, true)),
            Test::NumCmp(p, op, n) => format!("{} {op} {n:.1}", cel_name(p)),
            Test::DateCmp(p, op, d) => format!("{} {op} {}", cel_name(p), day_number(*d)),
            Test::WithinNext(p, n) => {
                let p = cel_name(p);
                format!("{p} >= today && {p} <= today + {n}")
            }
            Test::Flag(p) => cel_name(p).to_string(),
        }
    }
}

struct RuleSpec {
    name: String,
    tests: Vec<Test>,
    continues: bool,
    actions: Vec<String>,
}

/// The field groups a rule draws its tests from, one test per group.
const GROUPS: [&str; 15] = [
    "city",
    "guests",
    "budget",
    "event_date",
    "follow_up",
    "vip",
    "consent",
    "repeat_customer",
    "package",
    "venue",
    "campaign",
    "nights",
    "segment",
    "channel",
    "city2",
];

fn generate_test(rng: &mut Rng, group: &str, today: NaiveDate) -> Test {
    match group {
        "city" | "city2" => match rng.below(20) {
            0..=9 => {
                let k = rng.range(2, 5) as usize;
                Test::TextIn("city", rng.subset(&CITIES, k))
            }
            10..=16 => Test::TextEq("city", rng.pick(&CITIES)),
            _ => {
                let k = rng.range(2, 4) as usize;
                Test::TextNotIn("city", rng.subset(&CITIES, k))
            }
        },
        "guests" => {
            if rng.chance(0.6) {
                Test::NumCmp(
                    "guests",
                    ">=",
                    rng.pick(&[50.0, 100.0, 150.0, 200.0, 300.0]),
                )
            } else {
                Test::NumCmp("guests", "<", rng.pick(&[150.0, 250.0, 400.0, 600.0]))
            }
        }
        "budget" => {
            if rng.chance(0.6) {
                Test::NumCmp(
                    "budget",
                    ">=",
                    rng.pick(&[200_000.0, 500_000.0, 1_000_000.0, 1_500_000.0]),
                )
            } else {
                Test::NumCmp(
                    "budget",
                    "<",
                    rng.pick(&[800_000.0, 1_500_000.0, 3_000_000.0]),
                )
            }
        }
        "event_date" => match rng.below(10) {
            0..=3 => Test::DateCmp(
                "event_date",
                ">=",
                today + chrono::Days::new(rng.range(0, 300) as u64),
            ),
            4..=5 => Test::DateCmp(
                "event_date",
                "<",
                today + chrono::Days::new(rng.range(120, 500) as u64),
            ),
            _ => Test::WithinNext("event_date", rng.pick(&[60, 90, 180, 270, 365])),
        },
        "follow_up" => Test::WithinNext("follow_up", rng.pick(&[7, 14, 30, 45])),
        "vip" => Test::Flag("vip"),
        "consent" => Test::Flag("consent.whatsapp"),
        "repeat_customer" => Test::Flag("repeat_customer"),
        "package" => {
            if rng.chance(0.5) {
                Test::TextEq("package", rng.pick(&PACKAGES))
            } else {
                Test::TextIn("package", rng.subset(&PACKAGES, 2))
            }
        }
        "venue" => {
            if rng.chance(0.4) {
                Test::TextEq("venue", rng.pick(&VENUES))
            } else {
                let k = rng.range(2, 3) as usize;
                Test::TextIn("venue", rng.subset(&VENUES, k))
            }
        }
        "campaign" => match rng.below(10) {
            0..=3 => {
                let k = rng.range(2, 4) as usize;
                Test::TextIn("campaign", rng.subset(&CAMPAIGNS, k))
            }
            4..=6 => Test::TextNe("campaign", rng.pick(&CAMPAIGNS)),
            _ => Test::TextEq("campaign", rng.pick(&CAMPAIGNS)),
        },
        "nights" => Test::NumCmp("nights", ">=", rng.pick(&[1.0, 2.0, 3.0])),
        "segment" => Test::TextEq("segment", rng.pick(&SEGMENTS)),
        _ => {
            let k = rng.range(2, 4) as usize;
            Test::TextIn("channel", rng.subset(&CHANNELS, k))
        }
    }
}

fn generate_rules(today: NaiveDate) -> Vec<RuleSpec> {
    let mut rng = Rng(RULE_SEED);
    let mut rules = Vec::with_capacity(RULES);
    for i in 0..RULES {
        let intent = (!rng.chance(0.1)).then(|| rng.pick(&INTENTS));
        // 3 tests for a fifth of the rules, 4 or 5 for the rest.
        let total = match rng.below(10) {
            0..=1 => 3,
            2..=5 => 4,
            _ => 5,
        };
        let mut tests = Vec::with_capacity(total);
        if let Some(intent) = intent {
            tests.push(Test::Intent(intent));
        }
        // `city` and `city2` are one field: draw at most one of them.
        let mut groups: Vec<&str> = Vec::new();
        while tests.len() + groups.len() < total {
            let g = rng.pick(&GROUPS);
            let same_field =
                |a: &str, b: &str| a == b || (a.starts_with("city") && b.starts_with("city"));
            if !groups.iter().any(|h| same_field(h, g)) {
                groups.push(g);
            }
        }
        for g in groups {
            tests.push(generate_test(&mut rng, g, today));
        }
        let continues = rng.chance(0.03);
        let mut actions = Vec::new();
        if continues {
            actions.push(format!("tag \"flag-{}\"", i % 17));
        } else {
            let team = intent.unwrap_or("general");
            actions.push(format!("assign \"{team}-team-{}\"", i % 7));
            if rng.chance(0.5) {
                actions.push(format!("tag \"t{}\"", i % 31));
            }
        }
        let name = match intent {
            Some(intent) => format!("r{i:04}_{intent}"),
            None => format!("r{i:04}_any"),
        };
        rules.push(RuleSpec {
            name,
            tests,
            continues,
            actions,
        });
    }
    rules
}

fn playbook_text(rules: &[RuleSpec]) -> String {
    let mut out = String::new();
    out.push_str("# Generated for benches/engine.rs: 1,000 rules over 10 intents.\n");
    out.push_str(&format!("playbook {PLAYBOOK} {{\n"));
    out.push_str("  timezone \"Asia/Kolkata\"\n");
    out.push_str(&format!("  intents {}\n\n", INTENTS.join(", ")));
    for (name, _, decl) in FIELDS {
        out.push_str(&format!("  field {name}: {decl}\n"));
    }
    out.push('\n');
    for rule in rules {
        out.push_str(&format!("  rule {} {{\n    when ", rule.name));
        let tests: Vec<String> = rule.tests.iter().map(Test::dsl).collect();
        out.push_str(&tests.join("\n     and "));
        out.push_str("\n    then ");
        out.push_str(&rule.actions.join(" "));
        out.push('\n');
        if rule.continues {
            out.push_str("    continue\n");
        }
        out.push_str("  }\n");
    }
    out.push_str("\n  otherwise {\n    assign \"triage\"\n  }\n}\n");
    out
}

fn cel_text(rule: &RuleSpec) -> String {
    rule.tests
        .iter()
        .map(Test::cel)
        .collect::<Vec<_>>()
        .join(" && ")
}

// ---------------------------------------------------------------------------
// The generated leads.

fn varied_case(rng: &mut Rng, s: &str) -> String {
    match rng.below(6) {
        0 => s.to_lowercase(),
        1 => s.to_uppercase(),
        2 => format!(" {s} "),
        _ => s.to_string(),
    }
}

fn generate_leads(today: NaiveDate) -> Vec<Lead> {
    let mut rng = Rng(LEAD_SEED);
    let date = |rng: &mut Rng, lo: i64, hi: i64| {
        let offset = rng.range(lo, hi);
        let d = if offset >= 0 {
            today + chrono::Days::new(offset as u64)
        } else {
            today - chrono::Days::new(offset.unsigned_abs())
        };
        Json::String(d.format("%Y-%m-%d").to_string())
    };
    (0..LEADS)
        .map(|i| {
            let mut fields = Map::new();
            if rng.chance(0.95) {
                let city = rng.pick(&CITIES);
                fields.insert("city".into(), Json::String(varied_case(&mut rng, city)));
            }
            if rng.chance(0.93) {
                fields.insert("event_date".into(), date(&mut rng, -20, 520));
            }
            if rng.chance(0.9) {
                let guests = rng.range(10, 700);
                let value = match rng.below(20) {
                    0 => Json::String(guests.to_string()),
                    1 if i % 7 == 0 => Json::String("about 200".into()),
                    _ => Json::from(guests),
                };
                fields.insert("guests".into(), value);
            }
            if rng.chance(0.85) {
                fields.insert("budget".into(), Json::from(rng.range(50, 4_000) * 1_000));
            }
            if rng.chance(0.8) {
                let p = rng.pick(&PACKAGES);
                fields.insert("package".into(), Json::String(varied_case(&mut rng, p)));
            }
            if rng.chance(0.85) {
                fields.insert("venue".into(), Json::String(rng.pick(&VENUES).into()));
            }
            if rng.chance(0.85) {
                fields.insert("segment".into(), Json::String(rng.pick(&SEGMENTS).into()));
            }
            if rng.chance(0.9) {
                let c = rng.pick(&CAMPAIGNS);
                fields.insert("campaign".into(), Json::String(varied_case(&mut rng, c)));
            }
            if rng.chance(0.95) {
                fields.insert("vip".into(), Json::Bool(rng.chance(0.3)));
            }
            if rng.chance(0.9) {
                fields.insert("repeat_customer".into(), Json::Bool(rng.chance(0.35)));
            }
            if rng.chance(0.8) {
                fields.insert("nights".into(), Json::from(rng.range(0, 6)));
            }
            if rng.chance(0.7) {
                fields.insert("follow_up".into(), date(&mut rng, -10, 50));
            }
            let intent = match rng.below(100) {
                0 => None,
                1 => Some("wholesale".to_string()),
                _ => {
                    let intent = rng.pick(&INTENTS);
                    Some(varied_case(&mut rng, intent))
                }
            };
            Lead {
                name: Some(format!("Lead {i}")),
                phone: Some(format!("+9198{:08}", i)),
                channel: Some(rng.pick(&CHANNELS).to_string()),
                intent,
                consent: handoff::engine::lead::Consent {
                    whatsapp: rng.chance(0.65),
                },
                fields,
                ..Lead::default()
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The CEL baseline.

struct CelRule {
    program: Program,
    continues: bool,
}

/// The lead as CEL variables: the same values our engine binds, text
/// trimmed and lowercased, numbers as doubles, dates as day numbers, a value
/// that cannot be read as its type left unset.
fn cel_context(env: &Arc<Env>, lead: &Lead, today: i64) -> Context<'static, 'static> {
    let mut ctx = Context::with_env(Arc::clone(env));
    let text = |s: &str| {
        let n = normalize_text(s);
        (!n.is_empty()).then_some(n)
    };
    if let Some(intent) = lead.intent.as_deref().and_then(text) {
        ctx.add_variable_as_val("intent", Box::new(CelString::from(intent)));
    }
    if let Some(channel) = lead.channel.as_deref().and_then(text) {
        ctx.add_variable_as_val("channel", Box::new(CelString::from(channel)));
    }
    ctx.add_variable_as_val(
        "consent_whatsapp",
        Box::new(CelBool::from(lead.consent.whatsapp)),
    );
    ctx.add_variable_as_val("today", Box::new(CelInt::from(today)));
    for (name, ty, _) in FIELDS {
        let Some(value) = lead.fields.get(name) else {
            continue;
        };
        match (ty, value) {
            (Ty::Text, Json::String(s)) => {
                if let Some(t) = text(s) {
                    ctx.add_variable_as_val(cel_name(name), Box::new(CelString::from(t)));
                }
            }
            (Ty::Number, Json::Number(n)) => {
                if let Some(n) = n.as_f64() {
                    ctx.add_variable_as_val(name, Box::new(CelDouble::from(n)));
                }
            }
            (Ty::Number, Json::String(s)) => {
                if let Ok(n) = s.trim().replace('_', "").parse::<f64>() {
                    ctx.add_variable_as_val(name, Box::new(CelDouble::from(n)));
                }
            }
            (Ty::Date, Json::String(s)) => {
                if let Ok(d) = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
                    ctx.add_variable_as_val(name, Box::new(CelInt::from(day_number(d))));
                }
            }
            (Ty::Bool, Json::Bool(b)) => {
                ctx.add_variable_as_val(name, Box::new(CelBool::from(*b)));
            }
            _ => {}
        }
    }
    ctx
}

/// Tries the CEL rules in order; a rule fires when its program yields true
/// (a missing variable is an error, which counts as not matching, as a
/// missing value fails every test in our language). Stops at the first rule
/// that fires without `continue`. Returns the indices of the rules that fired.
fn cel_run(rules: &[CelRule], ctx: &Context<'_, '_>) -> Vec<u32> {
    let mut fired = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let holds = Value::resolve_val(rule.program.expression(), ctx)
            .ok()
            .and_then(|v| v.downcast_ref::<CelBool>().map(|b| *b.inner()))
            .unwrap_or(false);
        if holds {
            fired.push(i as u32);
            if !rule.continues {
                break;
            }
        }
    }
    fired
}

// ---------------------------------------------------------------------------
// Setup shared by criterion and the summary.

struct Setup {
    text: String,
    loaded: Loaded,
    leads: Vec<Lead>,
    situation: Situation,
    env: Arc<Env>,
    cel_rules: Vec<CelRule>,
    today: i64,
}

impl Setup {
    fn compiled(&self) -> &CompiledPlaybook {
        &self.ruleset_playbook().compiled
    }

    fn ruleset_playbook(&self) -> &handoff::ruleset::LoadedPlaybook {
        let ruleset = self.loaded.ruleset.as_ref().expect("the ruleset loaded");
        &ruleset.playbooks[PLAYBOOK]
    }

    fn cel(&self, lead: &Lead) -> Vec<u32> {
        let ctx = cel_context(&self.env, lead, self.today);
        cel_run(&self.cel_rules, &ctx)
    }
}

fn load(text: &str) -> Loaded {
    from_sources(
        vec![(FILE.to_string(), PLAYBOOK.to_string(), text.to_string())],
        Templates::empty(),
        Sources::default(),
        Vec::new(),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn setup() -> Setup {
    let tz = chrono_tz::Asia::Kolkata;
    let now: DateTime<Utc> = Utc
        .with_ymd_and_hms(2027, 1, 10, 4, 30, 0)
        .single()
        .expect("a valid instant");
    let today_date = now.with_timezone(&tz).date_naive();
    let today = day_number(today_date);
    let situation = Situation::at(now);

    let specs = generate_rules(today_date);
    let text = playbook_text(&specs);
    let started = Instant::now();
    let loaded = load(&text);
    let first_load = started.elapsed();
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    if !errors.is_empty() {
        for d in errors.iter().take(10) {
            let rendered = handoff::dsl::diagnostic::render(d, &loaded.sources);
            eprintln!("{rendered}");
        }
        panic!("the generated playbook has {} errors", errors.len());
    }
    assert!(loaded.ruleset.is_some(), "the generated playbook loaded");
    let mut by_code: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &loaded.diagnostics {
        *by_code.entry(d.code.as_str()).or_default() += 1;
    }

    let env = Arc::new(Env::stdlib());
    let started = Instant::now();
    let cel_rules: Vec<CelRule> = specs
        .iter()
        .map(|r| CelRule {
            program: Program::compile(&cel_text(r))
                .unwrap_or_else(|e| panic!("CEL for {}: {e:?}\n{}", r.name, cel_text(r))),
            continues: r.continues,
        })
        .collect();
    let cel_compile = started.elapsed();

    let leads = generate_leads(today_date);
    let setup = Setup {
        text,
        loaded,
        leads,
        situation,
        env,
        cel_rules,
        today,
    };

    // Both engines must fire the same rules for every lead.
    let index: HashMap<&str, u32> = specs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i as u32))
        .collect();
    let compiled = setup.compiled();
    let mut tried = Vec::with_capacity(LEADS);
    let mut first_global = Vec::new();
    let mut otherwise = 0usize;
    let mut with_warnings = 0usize;
    let mut fired_rules = std::collections::HashSet::new();
    let mut continued = 0usize;
    for (n, lead) in setup.leads.iter().enumerate() {
        let (evaluation, trace) = evaluate_with_trace(compiled, lead, &setup.situation);
        let ours: Vec<u32> = evaluation.rules.iter().map(|r| index[r.as_ref()]).collect();
        let plain = evaluate(compiled, lead, &setup.situation);
        assert_eq!(plain, evaluation, "trace changes the decision of lead {n}");
        let theirs = setup.cel(lead);
        assert_eq!(
            ours,
            theirs,
            "lead {n}: ours fired {:?}, CEL fired {theirs:?}\nlead: {}",
            evaluation.rules,
            serde_json::to_string(lead).unwrap_or_default()
        );
        tried.push(trace.rules.len() as f64);
        if let Some(&first) = ours.first() {
            first_global.push(f64::from(first));
        }
        if ours.len() > 1 {
            continued += 1;
        }
        fired_rules.extend(ours);
        otherwise += usize::from(evaluation.otherwise);
        with_warnings += usize::from(!evaluation.warnings.is_empty());
    }
    tried.sort_by(f64::total_cmp);
    first_global.sort_by(f64::total_cmp);
    let mean = tried.iter().sum::<f64>() / tried.len() as f64;
    let tests: Vec<usize> = specs.iter().map(|r| r.tests.len()).collect();

    println!("== setup ==");
    println!(
        "rules: {} ({} bytes of text, {} lines); tests per rule {}..={}, mean {:.2}; \
         {} without an intent test; {} with `continue`",
        specs.len(),
        setup.text.len(),
        setup.text.lines().count(),
        tests.iter().min().copied().unwrap_or(0),
        tests.iter().max().copied().unwrap_or(0),
        tests.iter().sum::<usize>() as f64 / tests.len() as f64,
        specs
            .iter()
            .filter(|r| !matches!(r.tests[0], Test::Intent(_)))
            .count(),
        specs.iter().filter(|r| r.continues).count(),
    );
    println!(
        "first load+check+compile: {:.1} ms; diagnostics (no errors): {}",
        first_load.as_secs_f64() * 1e3,
        if by_code.is_empty() {
            "none".to_string()
        } else {
            by_code
                .iter()
                .map(|(c, n)| format!("{c} x{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "CEL: {} programs compiled in {:.1} ms",
        setup.cel_rules.len(),
        cel_compile.as_secs_f64() * 1e3
    );
    println!(
        "leads: {}; rules tried per lead (ours, after the intent index): \
         mean {:.1}, p10 {}, p50 {}, p90 {}, max {}",
        setup.leads.len(),
        mean,
        percentile(&tried, 0.1),
        percentile(&tried, 0.5),
        percentile(&tried, 0.9),
        tried.last().copied().unwrap_or(0.0),
    );
    println!(
        "first rule fired, position in the file (what CEL reaches): p10 {}, p50 {}, p90 {}; \
         {} distinct rules fired; {} leads fired more than one rule; \
         {} fell to `otherwise`; {} carry warnings",
        percentile(&first_global, 0.1),
        percentile(&first_global, 0.5),
        percentile(&first_global, 0.9),
        fired_rules.len(),
        continued,
        otherwise,
        with_warnings,
    );
    println!(
        "agreement: our engine and CEL fired the same rules for all {} leads",
        setup.leads.len()
    );
    println!();
    setup
}

// ---------------------------------------------------------------------------
// Criterion groups.

fn per_lead_group(c: &mut Criterion, name: &str, mut f: impl FnMut(&Lead), leads: &[Lead]) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("per_lead", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let lead = &leads[i];
            i += 1;
            if i == leads.len() {
                i = 0;
            }
            f(black_box(lead));
        })
    });
    group.finish();
}

fn criterion_groups(c: &mut Criterion, s: &Setup) {
    let compiled = s.compiled();
    let situation = &s.situation;
    per_lead_group(
        c,
        "evaluate",
        |lead| {
            black_box(evaluate(compiled, lead, situation));
        },
        &s.leads,
    );
    per_lead_group(
        c,
        "evaluate_with_trace",
        |lead| {
            black_box(evaluate_with_trace(compiled, lead, situation));
        },
        &s.leads,
    );
    per_lead_group(
        c,
        "cel_first_match",
        |lead| {
            black_box(s.cel(lead));
        },
        &s.leads,
    );

    let mut group = c.benchmark_group("load_check_compile_1000_rules");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("from_sources", |b| {
        b.iter(|| black_box(load(black_box(&s.text))))
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// The direct timing pass and the summary.

struct PerLead {
    /// Mean per lead over a whole pass, the median over the passes.
    mean: f64,
    p50: f64,
    p99: f64,
}

/// Times `f` over every lead: `passes` whole passes (mean per lead, median
/// over passes), then one pass timing each lead alone (p50, p99; these
/// include the clock's own overhead).
fn time_leads(leads: &[Lead], passes: usize, mut f: impl FnMut(&Lead)) -> PerLead {
    for lead in leads.iter().take(1_000) {
        f(lead);
    }
    let mut means: Vec<f64> = (0..passes)
        .map(|_| {
            let started = Instant::now();
            for lead in leads {
                f(black_box(lead));
            }
            started.elapsed().as_nanos() as f64 / leads.len() as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let mut each: Vec<f64> = leads
        .iter()
        .map(|lead| {
            let started = Instant::now();
            f(black_box(lead));
            started.elapsed().as_nanos() as f64
        })
        .collect();
    each.sort_by(f64::total_cmp);
    PerLead {
        mean: percentile(&means, 0.5),
        p50: percentile(&each, 0.5),
        p99: percentile(&each, 0.99),
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn summary(s: &Setup, full: bool) {
    let passes = if full { 7 } else { 1 };
    let compiled = s.compiled();
    let situation = &s.situation;
    let plain = time_leads(&s.leads, passes, |lead| {
        black_box(evaluate(compiled, lead, situation));
    });
    let trace = time_leads(&s.leads, passes, |lead| {
        black_box(evaluate_with_trace(compiled, lead, situation));
    });
    let cel = time_leads(&s.leads, passes, |lead| {
        black_box(s.cel(lead));
    });
    // CEL with every lead's context built beforehand: evaluation alone.
    let contexts: Vec<Context<'static, 'static>> = s
        .leads
        .iter()
        .map(|lead| cel_context(&s.env, lead, s.today))
        .collect();
    let cel_eval_only = {
        let mut times: Vec<f64> = (0..passes)
            .map(|_| {
                let started = Instant::now();
                for ctx in &contexts {
                    black_box(cel_run(&s.cel_rules, black_box(ctx)));
                }
                started.elapsed().as_nanos() as f64 / contexts.len() as f64
            })
            .collect();
        times.sort_by(f64::total_cmp);
        percentile(&times, 0.5)
    };
    let mut loads: Vec<f64> = (0..if full { 9 } else { 1 })
        .map(|_| {
            let started = Instant::now();
            black_box(load(black_box(&s.text)));
            started.elapsed().as_nanos() as f64
        })
        .collect();
    loads.sort_by(f64::total_cmp);
    let load = percentile(&loads, 0.5);
    let clock = {
        let mut each: Vec<f64> = (0..10_000)
            .map(|_| {
                let started = Instant::now();
                black_box(());
                started.elapsed().as_nanos() as f64
            })
            .collect();
        each.sort_by(f64::total_cmp);
        percentile(&each, 0.5)
    };

    let trace_ratio = trace.mean / plain.mean;
    let cel_ratio = cel.mean / plain.mean;
    println!();
    println!(
        "== summary: {} rules, {} leads, {} passes{} ==",
        RULES,
        s.leads.len(),
        passes,
        if full { "" } else { " (quick: test mode)" }
    );
    println!(
        "{:<32} {:>12} {:>12} {:>12}   target",
        "per lead", "mean", "p50", "p99"
    );
    let row = |name: &str, t: &PerLead, target: &str| {
        println!(
            "{:<32} {:>12} {:>12} {:>12}   {target}",
            name,
            fmt_ns(t.mean),
            fmt_ns(t.p50),
            fmt_ns(t.p99)
        );
    };
    row(
        "evaluate",
        &plain,
        &format!("p50 <= 2 µs: {}", verdict(plain.p50 <= 2_000.0)),
    );
    row("evaluate_with_trace", &trace, "");
    row("cel_first_match", &cel, "");
    println!(
        "{:<32} {:>12}",
        "cel, contexts prebuilt",
        fmt_ns(cel_eval_only)
    );
    println!(
        "{:<32} {:>12}   <= 50 ms: {}",
        "load+check+compile (median)",
        fmt_ns(load),
        verdict(load <= 50e6)
    );
    println!(
        "{:<32} {:>11.2}x   <= 3x: {}",
        "trace / plain (means)",
        trace_ratio,
        verdict(trace_ratio <= 3.0)
    );
    println!(
        "{:<32} {:>11.1}x   >= 10x: {}",
        "cel / ours (means)",
        cel_ratio,
        verdict(cel_ratio >= 10.0)
    );
    println!(
        "{:<32} {:>11.1}x",
        "cel prebuilt / ours (means)",
        cel_eval_only / plain.mean
    );
    println!(
        "{:<32} {:>11.2}x",
        "trace / plain (p50s)",
        trace.p50 / plain.p50
    );
    println!("{:<32} {:>11.1}x", "cel / ours (p50s)", cel.p50 / plain.p50);
    println!(
        "(p50/p99 time each lead alone and include ~{} of clock overhead)",
        fmt_ns(clock)
    );
}

fn main() {
    let setup = setup();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // criterion then runs each benchmark once, as a test.
    let full = std::env::args().any(|a| a == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    criterion_groups(&mut criterion, &setup);
    criterion.final_summary();
    // `--profile-time N` (criterion's mode for profilers) runs the chosen
    // benchmark alone: no summary pass to blur the profile.
    if !std::env::args().any(|a| a == "--profile-time") {
        summary(&setup, full);
        compare::run(full);
    }
}
