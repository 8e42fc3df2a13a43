//! The comparison run of `benches/engine.rs`: the workload of
//! `benches/workload` at each rule count, decided by the hand-written Rust
//! baseline the build script generated, by handoff, by zen-engine (one
//! decision table, first-hit policy) and by CEL (one program per rule, tried
//! in order). Every engine must give the same answer on every lead before
//! anything is timed; then each is timed over every lead for several rounds,
//! and the medians and their ratios are printed with the targets.
//!
//! What each engine pays per lead: handoff reads the lead as the service
//! gets it (JSON fields, text in any case) and returns its full decision;
//! zen-engine and CEL are given the lead's values as their own variables,
//! built per lead from the same lead (text trimmed and lowercased, the event
//! date as days from today), and that building is timed with them; the
//! baseline reads a typed struct made beforehand, as hand-written code would.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use cel::common::types::{CelBool, CelDouble, CelInt, CelString};
use cel::{Context, Env, Program, Value as CelValue};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use handoff::dsl::diagnostic::Sources;
use handoff::dsl::schema::normalize_text;
use handoff::engine::{evaluate, evaluate_with_trace, CompiledPlaybook, Lead, Situation};
use handoff::render::Templates;
use handoff::ruleset::{from_sources, Loaded};
use serde_json::{json, Map, Value as Json};

use crate::workload::{self, LeadSpec, Rule, Test, Typed, CITIES, INTENTS};

#[allow(clippy::all, dead_code)]
mod baseline {
    use super::Typed;
    include!(concat!(env!("OUT_DIR"), "/engine_baseline.rs"));
}

const PLAYBOOK: &str = "bench";
const FILE: &str = "rules/bench.rules";

/// The clock every engine decides at: 10:00 in Kolkata on 2027-01-10.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 10, 4, 30, 0)
        .single()
        .expect("a valid instant")
}

fn today() -> NaiveDate {
    now().with_timezone(&chrono_tz::Asia::Kolkata).date_naive()
}

// ---------------------------------------------------------------------------
// The rules, three ways.

fn playbook_text(rules: &[Rule]) -> String {
    let mut out = format!(
        "# Generated for benches/engine.rs: {} rules.\n",
        rules.len()
    );
    out.push_str(&format!(
        "playbook {PLAYBOOK} {{\n  timezone \"Asia/Kolkata\"\n"
    ));
    let intents: Vec<String> = (0..INTENTS).map(|i| format!("i{i}")).collect();
    out.push_str(&format!("  intents {}\n", intents.join(", ")));
    out.push_str(
        "  field city: text\n  field guests: number\n  field budget: number\n  \
         field event_date: date\n\n",
    );
    for (i, rule) in rules.iter().enumerate() {
        let mut tests = vec![format!("intent == \"i{}\"", rule.intent)];
        tests.extend(rule.tests.iter().map(|t| match t {
            Test::CityIn(cities) => {
                let names: Vec<String> = cities
                    .iter()
                    .map(|&c| format!("\"{}\"", CITIES[usize::from(c)]))
                    .collect();
                format!("city in [{}]", names.join(", "))
            }
            Test::GuestsAtLeast(n) => format!("guests >= {n}"),
            Test::BudgetBelow(n) => format!("budget < {n}"),
            Test::WithinNextDays(n) => format!("event_date within next {n} days"),
            Test::Consent => "consent.whatsapp".to_string(),
        }));
        out.push_str(&format!(
            "  rule r{i} {{\n    when {}\n    then assign \"q{}\"\n  }}\n",
            tests.join("\n     and "),
            i % 7
        ));
    }
    out.push_str("\n  otherwise {\n    assign \"triage\"\n  }\n}\n");
    out
}

fn cel_text(rule: &Rule) -> String {
    let mut tests = vec![format!("intent == \"i{}\"", rule.intent)];
    tests.extend(rule.tests.iter().map(|t| match t {
        Test::CityIn(cities) => {
            let names: Vec<String> = cities
                .iter()
                .map(|&c| format!("\"{}\"", CITIES[usize::from(c)].to_lowercase()))
                .collect();
            format!("city in [{}]", names.join(", "))
        }
        Test::GuestsAtLeast(n) => format!("guests >= {n}.0"),
        Test::BudgetBelow(n) => format!("budget < {n}.0"),
        Test::WithinNextDays(n) => format!("event_in_days >= 0 && event_in_days <= {n}"),
        Test::Consent => "consent".to_string(),
    }));
    tests.join(" && ")
}

#[cfg(feature = "compare-zen")]
/// The rules as one zen-engine decision table: a column per lead value, a
/// row per rule (an empty cell matches anything), the rule's index as the
/// output, first hit wins.
fn zen_decision(rules: &[Rule]) -> zen_engine::Decision {
    let inputs = json!([
        { "id": "intent", "name": "Intent", "field": "intent" },
        { "id": "city", "name": "City", "field": "city" },
        { "id": "guests", "name": "Guests", "field": "guests" },
        { "id": "budget", "name": "Budget", "field": "budget" },
        { "id": "event", "name": "Event in days", "field": "event_in_days" },
        { "id": "consent", "name": "Consent", "field": "consent" }
    ]);
    let outputs = json!([{ "id": "rule", "name": "Rule", "field": "rule" }]);
    let rows: Vec<Json> = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let mut row = Map::new();
            row.insert("_id".into(), json!(format!("r{i}")));
            row.insert("intent".into(), json!(format!("\"i{}\"", rule.intent)));
            for column in ["city", "guests", "budget", "event", "consent"] {
                row.insert(column.into(), json!(""));
            }
            for test in &rule.tests {
                let (column, cell) = match test {
                    Test::CityIn(cities) => {
                        let names: Vec<String> = cities
                            .iter()
                            .map(|&c| format!("\"{}\"", CITIES[usize::from(c)].to_lowercase()))
                            .collect();
                        ("city", names.join(", "))
                    }
                    Test::GuestsAtLeast(n) => ("guests", format!(">= {n}")),
                    Test::BudgetBelow(n) => ("budget", format!("< {n}")),
                    Test::WithinNextDays(n) => ("event", format!("[0..{n}]")),
                    Test::Consent => ("consent", "true".to_string()),
                };
                row.insert(column.into(), json!(cell));
            }
            row.insert("rule".into(), json!(i.to_string()));
            Json::Object(row)
        })
        .collect();
    let content: zen_engine::model::DecisionContent = serde_json::from_value(json!({
        "nodes": [
            { "id": "in", "name": "request", "type": "inputNode", "content": {} },
            { "id": "dt", "name": "rules", "type": "decisionTableNode", "content": {
                "hitPolicy": "first", "inputs": inputs, "outputs": outputs, "rules": rows,
                "passThrough": false
            } },
            { "id": "out", "name": "response", "type": "outputNode", "content": {} }
        ],
        "edges": [
            { "id": "e1", "sourceId": "in", "targetId": "dt" },
            { "id": "e2", "sourceId": "dt", "targetId": "out" }
        ]
    }))
    .expect("a zen decision graph");
    let engine = zen_engine::DecisionEngine::default();
    let mut decision = engine
        .create_decision(Arc::new(content))
        .expect("a zen decision");
    decision.compile();
    decision
}

// ---------------------------------------------------------------------------
// The leads, as each engine reads them.

fn lead(spec: &LeadSpec) -> Lead {
    let mut fields = Map::new();
    if let Some((city, case)) = spec.city {
        let name = CITIES[usize::from(city)];
        let written = match case {
            0 => name.to_string(),
            1 => name.to_lowercase(),
            2 => name.to_uppercase(),
            _ => format!(" {name} "),
        };
        fields.insert("city".into(), Json::String(written));
    }
    if let Some(guests) = spec.guests {
        fields.insert("guests".into(), json!(guests));
    }
    if let Some(budget) = spec.budget {
        fields.insert("budget".into(), json!(budget));
    }
    if let Some(days) = spec.event_in_days {
        let date = today() + chrono::Duration::days(i64::from(days));
        fields.insert(
            "event_date".into(),
            Json::String(date.format("%Y-%m-%d").to_string()),
        );
    }
    Lead {
        name: Some("Aisha Khan".into()),
        intent: spec.intent.map(|i| format!("i{i}")),
        consent: handoff::engine::lead::Consent {
            whatsapp: spec.consent,
        },
        fields,
        ..Lead::default()
    }
}

/// The lead's values as the other engines take them, read from the lead as
/// handoff reads it: text trimmed and lowercased, numbers as numbers, the
/// event date as days from today; a value missing or unreadable is absent.
struct Values {
    intent: Option<String>,
    city: Option<String>,
    guests: Option<f64>,
    budget: Option<f64>,
    event_in_days: Option<i64>,
    consent: bool,
}

fn values(lead: &Lead, today: NaiveDate) -> Values {
    let text = |s: &str| {
        let n = normalize_text(s);
        (!n.is_empty()).then_some(n)
    };
    let number = |key: &str| lead.fields.get(key).and_then(Json::as_f64);
    Values {
        intent: lead.intent.as_deref().and_then(text),
        city: lead
            .fields
            .get("city")
            .and_then(Json::as_str)
            .and_then(text),
        guests: number("guests"),
        budget: number("budget"),
        event_in_days: lead
            .fields
            .get("event_date")
            .and_then(Json::as_str)
            .and_then(|s| NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok())
            .map(|d| (d - today).num_days()),
        consent: lead.consent.whatsapp,
    }
}

fn cel_context(env: &Arc<Env>, lead: &Lead, today: NaiveDate) -> Context<'static, 'static> {
    let v = values(lead, today);
    let mut ctx = Context::with_env(Arc::clone(env));
    if let Some(intent) = v.intent {
        ctx.add_variable_as_val("intent", Box::new(CelString::from(intent)));
    }
    if let Some(city) = v.city {
        ctx.add_variable_as_val("city", Box::new(CelString::from(city)));
    }
    if let Some(guests) = v.guests {
        ctx.add_variable_as_val("guests", Box::new(CelDouble::from(guests)));
    }
    if let Some(budget) = v.budget {
        ctx.add_variable_as_val("budget", Box::new(CelDouble::from(budget)));
    }
    if let Some(days) = v.event_in_days {
        ctx.add_variable_as_val("event_in_days", Box::new(CelInt::from(days)));
    }
    ctx.add_variable_as_val("consent", Box::new(CelBool::from(v.consent)));
    ctx
}

/// The first CEL program that yields true (a missing variable is an error,
/// which counts as not matching, as a missing value fails a test in ours).
fn cel_first(programs: &[Program], ctx: &Context<'_, '_>) -> Option<u32> {
    programs
        .iter()
        .position(|program| {
            CelValue::resolve_val(program.expression(), ctx)
                .ok()
                .and_then(|v| v.downcast_ref::<CelBool>().map(|b| *b.inner()))
                .unwrap_or(false)
        })
        .map(|i| i as u32)
}

#[cfg(feature = "compare-zen")]
fn zen_input(lead: &Lead, today: NaiveDate) -> Json {
    let v = values(lead, today);
    let mut input = Map::new();
    if let Some(intent) = v.intent {
        input.insert("intent".into(), Json::String(intent));
    }
    if let Some(city) = v.city {
        input.insert("city".into(), Json::String(city));
    }
    if let Some(guests) = v.guests {
        input.insert("guests".into(), json!(guests));
    }
    if let Some(budget) = v.budget {
        input.insert("budget".into(), json!(budget));
    }
    if let Some(days) = v.event_in_days {
        input.insert("event_in_days".into(), json!(days));
    }
    input.insert("consent".into(), Json::Bool(v.consent));
    Json::Object(input)
}

#[cfg(feature = "compare-zen")]
fn zen_first(
    runtime: &tokio::runtime::Runtime,
    decision: &zen_engine::Decision,
    lead: &Lead,
    today: NaiveDate,
) -> Option<u32> {
    let response = runtime
        .block_on(decision.evaluate(zen_input(lead, today).into()))
        .unwrap_or_else(|e| panic!("zen-engine: {e:?}"));
    response
        .result
        .to_value()
        .get("rule")
        .and_then(|r| {
            r.as_u64()
                .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
        })
        .map(|r| r as u32)
}

fn handoff_first(compiled: &CompiledPlaybook, lead: &Lead, situation: &Situation) -> Option<u32> {
    evaluate(compiled, lead, situation)
        .rules
        .first()
        .and_then(|name| name.strip_prefix('r'))
        .and_then(|n| n.parse().ok())
}

fn load(text: &str) -> Loaded {
    from_sources(
        vec![(FILE.to_string(), PLAYBOOK.to_string(), text.to_string())],
        Templates::empty(),
        Sources::default(),
        Vec::new(),
    )
}

// ---------------------------------------------------------------------------
// Timing.

/// The median over `rounds` of the mean time per item of one pass over
/// `items`.
fn median_ns<T>(items: &[T], rounds: usize, mut f: impl FnMut(&T)) -> f64 {
    for item in items.iter().take(500) {
        f(item);
    }
    let mut per_item: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            for item in items {
                f(black_box(item));
            }
            started.elapsed().as_nanos() as f64 / items.len() as f64
        })
        .collect();
    per_item.sort_by(f64::total_cmp);
    per_item[per_item.len() / 2]
}

struct Row {
    rules: usize,
    tried: f64,
    baseline: f64,
    handoff: f64,
    /// Not measured unless the `compare-zen` feature is on.
    zen: Option<f64>,
    cel: f64,
    load_ms: f64,
}

fn fmt_ns(ns: f64) -> String {
    let whole = ns.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs the comparison; `full` is `cargo bench`, otherwise one quick round
/// (`cargo test --benches`).
pub fn run(full: bool) {
    let today = today();
    let situation = Situation::at(now());
    let specs = workload::leads();
    let leads: Vec<Lead> = specs.iter().map(lead).collect();
    let typed: Vec<Typed> = specs.iter().map(LeadSpec::typed).collect();
    #[cfg(feature = "compare-zen")]
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime for zen-engine");
    let env = Arc::new(Env::stdlib());
    let mut rows = Vec::new();
    for &count in &workload::SIZES {
        let rules = workload::rules(count);
        let text = playbook_text(&rules);
        let loaded = load(&text);
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| handoff::dsl::diagnostic::render(d, &loaded.sources))
            .collect();
        assert!(errors.is_empty(), "the generated playbook: {errors:?}");
        let ruleset = loaded.ruleset.expect("the ruleset loaded");
        let compiled = &ruleset.playbooks[PLAYBOOK].compiled;
        let baseline = baseline::baseline_for(count).expect("a generated baseline for this size");
        let programs: Vec<Program> = rules
            .iter()
            .map(|r| Program::compile(&cel_text(r)).expect("a CEL program"))
            .collect();
        #[cfg(feature = "compare-zen")]
        let zen = zen_decision(&rules);

        // Every engine gives the same answer on every lead, or nothing is timed.
        let mut tried = 0usize;
        for (n, lead) in leads.iter().enumerate() {
            let ours = handoff_first(compiled, lead, &situation);
            let (_, trace) = evaluate_with_trace(compiled, lead, &situation);
            tried += trace.rules.len();
            let hand = baseline(&typed[n]);
            let theirs_cel = cel_first(&programs, &cel_context(&env, lead, today));
            assert_eq!(
                (ours, ours),
                (hand, theirs_cel),
                "{count} rules, lead {n}: handoff, then the baseline and CEL\nlead: {}",
                serde_json::to_string(lead).unwrap_or_default()
            );
            #[cfg(feature = "compare-zen")]
            assert_eq!(
                ours,
                zen_first(&runtime, &zen, lead, today),
                "{count} rules, lead {n}: handoff, then zen-engine\nlead: {}",
                serde_json::to_string(lead).unwrap_or_default()
            );
        }

        let rounds = if full { 7 } else { 1 };
        let slow_rounds = if full { 3 } else { 1 };
        let baseline_ns = median_ns(&typed, rounds * 3, |l| {
            black_box(baseline(l));
        });
        let handoff_ns = median_ns(&leads, rounds, |l| {
            black_box(evaluate(compiled, l, &situation));
        });
        #[cfg(feature = "compare-zen")]
        let zen_ns = Some(median_ns(&leads, rounds, |l| {
            let input = zen_input(l, today);
            black_box(runtime.block_on(zen.evaluate(input.into())).ok());
        }));
        #[cfg(not(feature = "compare-zen"))]
        let zen_ns: Option<f64> = None;
        let cel_ns = median_ns(&leads, slow_rounds, |l| {
            let ctx = cel_context(&env, l, today);
            black_box(cel_first(&programs, &ctx));
        });
        let mut loads: Vec<f64> = (0..if full { 5 } else { 1 })
            .map(|_| {
                let started = Instant::now();
                black_box(load(black_box(&text)));
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        loads.sort_by(f64::total_cmp);
        rows.push(Row {
            rules: count,
            tried: tried as f64 / leads.len() as f64,
            baseline: baseline_ns,
            handoff: handoff_ns,
            zen: zen_ns,
            cel: cel_ns,
            load_ms: loads[loads.len() / 2],
        });
    }

    println!();
    println!(
        "== first-match workload: {} leads, every engine agreed on every lead; median ns per lead ==",
        leads.len()
    );
    if rows.iter().all(|r| r.zen.is_none()) {
        println!("(zen-engine not measured: run with `--features compare-zen`)");
    }
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10} {:>10} {:>12} {:>10}",
        "rules",
        "baseline",
        "handoff",
        "zen",
        "cel",
        "handoff/base",
        "zen/ours",
        "cel/ours",
        "tried/lead",
        "load ms"
    );
    for r in &rows {
        println!(
            "{:>6} {:>10} {:>10} {:>10} {:>10} {:>11.2}x {:>10} {:>9.1}x {:>12.1} {:>10.1}",
            fmt_ns(r.rules as f64),
            fmt_ns(r.baseline),
            fmt_ns(r.handoff),
            r.zen.map_or("-".to_string(), fmt_ns),
            fmt_ns(r.cel),
            r.handoff / r.baseline,
            r.zen
                .map_or("-".to_string(), |z| format!("{:.1}x", z / r.handoff)),
            r.cel / r.handoff,
            r.tried,
            r.load_ms,
        );
    }
    let at = |n: usize| rows.iter().find(|r| r.rules == n);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if let Some(r) = at(1_000) {
        println!(
            "target: handoff <= 3x the baseline at 1,000 rules: {:.2}x, {}",
            r.handoff / r.baseline,
            verdict(r.handoff <= 3.0 * r.baseline)
        );
        if let Some(zen) = r.zen {
            println!(
                "target: handoff >= 10x faster than zen-engine at 1,000 rules: {:.1}x, {}",
                zen / r.handoff,
                verdict(zen >= 10.0 * r.handoff)
            );
        }
    }
    if let Some(r) = at(5_000) {
        println!(
            "target: handoff <= 2x the baseline at 5,000 rules: {:.2}x, {}",
            r.handoff / r.baseline,
            verdict(r.handoff <= 2.0 * r.baseline)
        );
        println!(
            "target: load+check+compile of 5,000 rules < 150 ms: {:.1} ms, {}",
            r.load_ms,
            verdict(r.load_ms < 150.0)
        );
    }
}
