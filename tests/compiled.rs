//! The compiled decision structure decides every lead exactly as walking each
//! rule's condition tree does (`engine::reference`), with the same trace: on
//! generated playbooks that mix every kind of test, `and`, `or`, `not`,
//! `continue` rules that add tags later rules test, and `drop`; and on
//! generated leads with missing, mistyped and oddly written values.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use chrono::{DateTime, TimeZone, Utc};
use handoff::dsl::diagnostic::Sources;
use handoff::engine::{evaluate, evaluate_with_trace, reference, Lead, Situation, ThreadInput};
use handoff::render::Templates;
use handoff::ruleset::{from_sources, load, Ruleset};
use harness::root;
use proptest::prelude::*;
use serde_json::{json, Value};

const HEADER: &str = r#"playbook p {
  timezone "Asia/Kolkata"
  hours mon-fri 09:00-18:00
  intents a, b, c
  field city: text required
  field kind: one of "x", "y", "z"
  field guests: number required
  field vip: bool
  field day: date
  field at: datetime
"#;

/// One test as the language writes it. Constants come from small pools, so
/// that rules share tests, tests share constants, and leads hit them.
fn test() -> impl Strategy<Value = String> {
    let cities = prop::sample::select(vec!["Goa", "pune", "Delhi", "São Paulo", "kochi"]);
    let city_list =
        prop::sample::subsequence(vec!["Goa", "pune", "Delhi", "São Paulo", "kochi"], 1..4)
            .prop_map(|l| {
                l.iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
    let numbers = prop::sample::select(vec!["0", "-4", "2.5", "100", "150", "1_000"]);
    let number_list =
        prop::sample::subsequence(vec!["0", "2.5", "100", "150"], 1..3).prop_map(|l| l.join(", "));
    let cmp = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
    let days = prop::sample::select(vec!["2027-01-10", "2027-01-15", "2026-12-31", "2027-03-01"]);
    let times = prop::sample::select(vec![
        "2027-01-10T10:00:00+05:30",
        "2027-01-10T04:30:00Z",
        "2027-01-12T00:00:00Z",
    ]);
    let within = (
        prop::sample::select(vec!["next", "last"]),
        0u32..10,
        prop::sample::select(vec!["days", "weeks", "hours", "minutes"]),
    );
    prop_oneof![
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|i| format!("intent == \"{i}\"")),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|i| format!("intent != \"{i}\"")),
        Just("intent in [\"a\", \"b\"]".to_string()),
        cities.clone().prop_map(|c| format!("city == \"{c}\"")),
        cities.clone().prop_map(|c| format!("city != \"{c}\"")),
        city_list.clone().prop_map(|l| format!("city in [{l}]")),
        city_list.prop_map(|l| format!("city not in [{l}]")),
        cities.prop_map(|c| format!(
            "city contains \"{}\"",
            c.chars().take(2).collect::<String>()
        )),
        Just("city matches \"^[A-Z]\"".to_string()),
        Just("city is set".to_string()),
        Just("city is not set".to_string()),
        prop::sample::select(vec!["x", "y", "z"]).prop_map(|k| format!("kind == \"{k}\"")),
        Just("kind in [\"x\", \"z\"]".to_string()),
        Just("kind not in [\"y\"]".to_string()),
        (cmp.clone(), numbers).prop_map(|(op, n)| format!("guests {op} {n}")),
        number_list.clone().prop_map(|l| format!("guests in [{l}]")),
        number_list.prop_map(|l| format!("guests not in [{l}]")),
        Just("guests is not set".to_string()),
        Just("vip".to_string()),
        Just("vip == false".to_string()),
        Just("vip != true".to_string()),
        (cmp.clone(), days.clone()).prop_map(|(op, d)| format!("day {op} {d}")),
        (
            prop::sample::select(vec!["next", "last"]),
            0u32..10,
            prop::sample::select(vec!["days", "weeks"])
        )
            .prop_map(|(d, n, u)| format!("day within {d} {n} {u}")),
        within.prop_map(|(d, n, u)| format!("at within {d} {n} {u}")),
        (cmp.clone(), times).prop_map(|(op, t)| format!("at {op} {t}")),
        (cmp, days).prop_map(|(op, d)| format!("at {op} {d}")),
        prop::sample::select(vec!["t1", "t2", "t3"]).prop_map(|t| format!("tags contains \"{t}\"")),
        Just("tags is set".to_string()),
        Just("qualified".to_string()),
        Just("consent.whatsapp".to_string()),
        Just("business_hours".to_string()),
        Just("window.open".to_string()),
        prop::sample::select(vec!["whatsapp", "voice", "api"])
            .prop_map(|c| format!("channel == \"{c}\"")),
        Just("channel in [\"instagram\", \"lead_ad\"]".to_string()),
        Just("lead.first_name == \"aisha\"".to_string()),
        Just("thread.opened within last 2 days".to_string()),
        Just("event == \"message\"".to_string()),
        Just("message.text contains \"price\"".to_string()),
    ]
}

/// A condition: mostly conjunctions (the common shape), with `or`, `not` and
/// parentheses mixed in.
fn condition() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => test(),
        1 => test().prop_map(|t| format!("not {t}")),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            4 => prop::collection::vec(inner.clone(), 1..4).prop_map(|p| p.join(" and ")),
            1 => prop::collection::vec(inner.clone(), 2..3).prop_map(|p| format!("({})", p.join(" or "))),
            1 => inner.prop_map(|c| format!("not ({c})")),
        ]
    })
}

#[derive(Clone, Debug)]
enum Then {
    Assign(u8),
    Tag(u8),
    TagContinue(u8),
    Drop,
}

fn rule() -> impl Strategy<Value = (String, Then)> {
    let then = prop_oneof![
        3 => (0u8..3).prop_map(Then::Assign),
        2 => (1u8..4).prop_map(Then::Tag),
        3 => (1u8..4).prop_map(Then::TagContinue),
        1 => Just(Then::Drop),
    ];
    (condition(), then)
}

fn playbook_text(rules: &[(String, Then)], otherwise: bool) -> String {
    let mut out = String::from(HEADER);
    for (i, (when, then)) in rules.iter().enumerate() {
        let then = match then {
            Then::Assign(q) => format!("assign \"q{q}\""),
            Then::Tag(t) => format!("tag \"t{t}\" assign \"tagged\""),
            Then::TagContinue(t) => format!("tag \"t{t}\"\n    continue"),
            Then::Drop => "drop \"spam\"".to_string(),
        };
        out.push_str(&format!(
            "  rule r{i} {{\n    when {when}\n    then {then}\n  }}\n"
        ));
    }
    if otherwise {
        out.push_str("  otherwise {\n    assign \"triage\"\n  }\n");
    }
    out.push_str("}\n");
    out
}

fn lead() -> impl Strategy<Value = (Lead, Situation)> {
    let city = prop::sample::select(vec![
        json!("Goa"),
        json!(" GOA "),
        json!("pune"),
        json!("SÃO PAULO"),
        json!("Mumbai"),
        json!(""),
        json!(null),
        json!(7),
        json!(["Goa"]),
    ]);
    let kind = prop::sample::select(vec![json!("x"), json!("Y"), json!("w"), json!(null)]);
    let guests = prop::sample::select(vec![
        json!(0),
        json!(-4),
        json!(2.5),
        json!(100),
        json!(120),
        json!("150"),
        json!("1_000"),
        json!("many"),
        json!(true),
    ]);
    let vip = prop::sample::select(vec![
        json!(true),
        json!(false),
        json!("yes"),
        json!("perhaps"),
    ]);
    let day = prop::sample::select(vec![
        json!("2027-01-10"),
        json!("2027-01-15"),
        json!("2027-01-03"),
        json!("2026-12-31"),
        json!("2027-03-01"),
        json!("2027-01-09T20:00:00Z"),
        json!("soon"),
    ]);
    let at = prop::sample::select(vec![
        json!("2027-01-10T10:00:00+05:30"),
        json!("2027-01-10T04:30:00Z"),
        json!("2027-01-10T06:00:00Z"),
        json!("2027-01-12T00:00:00Z"),
        json!("2027-01-08"),
        json!("later"),
    ]);
    let fields = (
        prop::option::of(city),
        prop::option::of(kind),
        prop::option::of(guests),
        prop::option::of(vip),
        prop::option::of(day),
        prop::option::of(at),
    );
    let who = (
        prop::option::of(prop::sample::select(vec!["a", "B", " c ", "d"])),
        prop::option::of(prop::sample::select(vec![
            "whatsapp",
            "Voice",
            "instagram",
            "fax",
        ])),
        prop::option::of(prop::sample::select(vec!["Aisha Khan", "Ravi"])),
        prop::sample::subsequence(vec!["t1", "T2", "other"], 0..3),
        any::<bool>(),
    );
    let situation = (
        0i64..(60 * 24 * 3),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0i64..(60 * 24 * 4)),
        prop::option::of(prop::sample::select(vec!["what is the price?", "hello"])),
    );
    (fields, who, situation).prop_map(
        |(
            (city, kind, guests, vip, day, at),
            (intent, channel, name, tags, consent),
            (minutes, window_open, thread_open, opened_ago, message),
        )| {
            let mut map = serde_json::Map::new();
            for (key, value) in [
                ("city", city),
                ("kind", kind),
                ("guests", guests),
                ("vip", vip),
                ("day", day),
                ("at", at),
            ] {
                if let Some(value) = value {
                    map.insert(key.to_string(), value);
                }
            }
            let lead: Lead = serde_json::from_value(json!({
                "name": name,
                "intent": intent,
                "channel": channel,
                "consent": {"whatsapp": consent},
                "tags": tags,
                "fields": Value::Object(map),
            }))
            .unwrap();
            let now: DateTime<Utc> = Utc.with_ymd_and_hms(2027, 1, 8, 0, 0, 0).unwrap()
                + chrono::Duration::minutes(minutes);
            let thread = ThreadInput {
                open: thread_open,
                opened: opened_ago.map(|m| now - chrono::Duration::minutes(m)),
                ..ThreadInput::default()
            };
            let situation = Situation {
                window_open,
                thread: thread.at(now),
                event: if message.is_some() {
                    handoff::engine::Event::Message
                } else {
                    handoff::engine::Event::Lead
                },
                message: message.map(str::to_string),
                ..Situation::at(now)
            };
            (lead, situation)
        },
    )
}

fn loaded(text: &str) -> Ruleset {
    let loaded = from_sources(
        vec![("p.rules".into(), "p".into(), text.into())],
        Templates::empty(),
        Sources::default(),
        Vec::new(),
    );
    match loaded.ruleset {
        Some(ruleset) => ruleset,
        None => {
            let errors: Vec<String> = loaded
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| handoff::dsl::diagnostic::render(d, &loaded.sources))
                .collect();
            panic!(
                "the generated playbook does not check:\n{}\n{text}",
                errors.join("\n")
            );
        }
    }
}

/// Both paths, plain and traced, give the same decision and trace.
fn agree(
    ruleset: &Ruleset,
    name: &str,
    lead: &Lead,
    situation: &Situation,
) -> Result<(), TestCaseError> {
    let compiled = &ruleset.playbooks[name].compiled;
    let fast = evaluate(compiled, lead, situation);
    let walked = reference::evaluate(compiled, lead, situation);
    prop_assert_eq!(&fast, &walked, "plain decision, lead {:?}", lead);
    let (traced, trace) = evaluate_with_trace(compiled, lead, situation);
    let (walked_traced, walked_trace) = reference::evaluate_with_trace(compiled, lead, situation);
    prop_assert_eq!(&traced, &walked_traced, "traced decision, lead {:?}", lead);
    prop_assert_eq!(
        &traced,
        &fast,
        "trace changes the decision, lead {:?}",
        lead
    );
    prop_assert_eq!(trace, walked_trace, "trace, lead {:?}", lead);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn compiled_decisions_and_traces_match_the_tree_walk(
        rules in prop::collection::vec(rule(), 1..90),
        otherwise in any::<bool>(),
        leads in prop::collection::vec(lead(), 1..24),
    ) {
        let ruleset = loaded(&playbook_text(&rules, otherwise));
        for (lead, situation) in &leads {
            agree(&ruleset, "p", lead, situation)?;
        }
    }

    #[test]
    fn the_bundled_playbooks_decide_as_the_tree_walk_does(leads in prop::collection::vec(lead(), 1..16)) {
        let ruleset = bundled();
        for name in ruleset.playbooks.keys() {
            for (lead, situation) in &leads {
                agree(ruleset, name, lead, situation)?;
            }
        }
    }
}

fn bundled() -> &'static Ruleset {
    static RULESET: std::sync::OnceLock<Ruleset> = std::sync::OnceLock::new();
    RULESET.get_or_init(|| {
        load(&root().join("rules"), None)
            .ruleset
            .expect("bundled rules check")
    })
}

/// A `continue` rule's tag is seen by the rules after it, in the same block
/// of candidates: the regression a cached `tags` answer would bring.
#[test]
fn a_tag_added_by_a_continue_rule_is_seen_by_later_rules() {
    let text = format!(
        "{HEADER}  rule first {{\n    when city is set\n    then tag \"t1\"\n    continue\n  }}\n  \
         rule second {{\n    when not tags contains \"t1\"\n    then assign \"never\"\n  }}\n  \
         rule third {{\n    when tags contains \"t1\"\n    then assign \"tagged\"\n  }}\n}}\n"
    );
    let ruleset = loaded(&text);
    let lead: Lead = serde_json::from_value(json!({"fields": {"city": "Goa"}})).unwrap();
    let situation = Situation::at(Utc.with_ymd_and_hms(2027, 1, 8, 0, 0, 0).unwrap());
    let compiled = &ruleset.playbooks["p"].compiled;
    let decision = evaluate(compiled, &lead, &situation);
    assert_eq!(decision.actions.assign.as_deref(), Some("tagged"));
    assert_eq!(decision, reference::evaluate(compiled, &lead, &situation));
}

/// More than 64 candidate rules: the first match sits past the first block.
#[test]
fn the_first_match_past_the_first_block_of_rules_fires() {
    let mut text = HEADER.to_string();
    for i in 0..150 {
        text.push_str(&format!(
            "  rule r{i} {{\n    when guests >= {}\n    then assign \"q{i}\"\n  }}\n",
            1_000 - i
        ));
    }
    text.push_str("}\n");
    let ruleset = loaded(&text);
    let compiled = &ruleset.playbooks["p"].compiled;
    let situation = Situation::at(Utc.with_ymd_and_hms(2027, 1, 8, 0, 0, 0).unwrap());
    for (guests, want) in [
        (1_000, Some("q0")),
        (900, Some("q100")),
        (860, Some("q140")),
        (10, None),
    ] {
        let lead: Lead = serde_json::from_value(json!({"fields": {"guests": guests}})).unwrap();
        let decision = evaluate(compiled, &lead, &situation);
        assert_eq!(decision.actions.assign.as_deref(), want, "guests {guests}");
        assert_eq!(decision, reference::evaluate(compiled, &lead, &situation));
    }
}
