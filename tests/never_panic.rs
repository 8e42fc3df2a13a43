//! `check` and `fmt` never panic, whatever the playbook: generated ones
//! (conditions nested at random depths, names and lists of random lengths,
//! settings in any order) and the bundled ones with random edits. A panic
//! here is a crash of `check`, of `fmt`, or of `serve` reloading the file.
//! Inputs the mutation fuzzer (`tests/fuzz.rs`) found are replayed there.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use handoff::cli::check::human_report;
use handoff::cli::fmt::format_text;
use handoff::dsl::diagnostic::Sources;
use handoff::render::Templates;
use handoff::ruleset::from_sources;
use harness::root;
use proptest::prelude::*;

/// Checks and formats `text` as `demo.rules`, as `check` and `fmt` do.
fn check_and_format(text: &str) {
    let loaded = from_sources(
        vec![("demo.rules".into(), "demo".into(), text.to_string())],
        Templates::empty(),
        Sources::default(),
        Vec::new(),
    );
    let report = human_report(&loaded);
    assert!(report.contains("checked"), "{report}");
    if let Ok(formatted) = format_text(text, "demo.rules") {
        // What fmt wrote is a playbook fmt reads again.
        assert!(
            format_text(&formatted, "demo.rules").is_ok(),
            "fmt wrote what it cannot read:\n{formatted}"
        );
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["city", "guests", "event_date", "budget", "x", "intent"])
            .prop_map(str::to_string),
        1 => "[a-z][a-z0-9_]{0,200}",
        1 => (1usize..3000).prop_map(|n| format!("f{}", "x".repeat(n))),
    ]
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"Goa\"".to_string()),
        Just("\"é€𝄞\"".to_string()),
        Just("2027-02-30".to_string()),
        Just("2027-03-14T10:00:00+05:30".to_string()),
        Just("true".to_string()),
        (-1_000_000i64..1_000_000).prop_map(|n| n.to_string()),
        "\"[^\"\\\\\n]{0,40}\"",
    ]
}

fn test() -> impl Strategy<Value = String> {
    (name(), literal(), 0..8u8).prop_map(|(path, value, op)| match op {
        0 => format!("{path} == {value}"),
        1 => format!("{path} > {value}"),
        2 => format!("{path} in [{value}, {value}]"),
        3 => format!("{path} not in [{value}]"),
        4 => format!("{path} contains {value}"),
        5 => format!("{path} matches {value}"),
        6 => format!("{path} is not set"),
        _ => format!("{path} within next 3 days"),
    })
}

/// Conditions of any shape, up to far past the nesting limit.
fn condition() -> impl Strategy<Value = String> {
    let leaf = test();
    let nested = leaf.prop_recursive(6, 64, 4, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
            inner.clone().prop_map(|a| format!("not {a}")),
            inner.prop_map(|a| format!("({a})")),
        ]
    });
    (nested, 0usize..200, 0usize..3).prop_map(|(c, depth, kind)| match kind {
        0 => c,
        1 => format!("{}{c}{}", "(".repeat(depth), ")".repeat(depth)),
        _ => format!("{}{c}", "not ".repeat(depth)),
    })
}

fn field() -> impl Strategy<Value = String> {
    (
        name(),
        prop_oneof![
            Just("text".to_string()),
            Just("number".to_string()),
            Just("date".to_string()),
            Just("datetime".to_string()),
            Just("bool".to_string()),
            prop::collection::vec("[a-z ]{1,12}", 1..300).prop_map(|values| {
                let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                format!("one of {}", quoted.join(", "))
            }),
        ],
        any::<bool>(),
    )
        .prop_map(|(name, ty, required)| {
            format!(
                "  field {name}: {ty}{}",
                if required { " required" } else { "" }
            )
        })
}

fn playbook() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(field(), 0..6),
        prop::collection::vec((name(), condition(), 0..4u8), 0..5),
        any::<bool>(),
    )
        .prop_map(|(fields, rules, otherwise)| {
            let mut text = String::from("playbook demo {\n  intents hi, spam\n");
            for f in fields {
                text.push_str(&f);
                text.push('\n');
            }
            for (name, condition, action) in rules {
                let action = match action {
                    0 => "tag \"hot\"",
                    1 => "drop \"spam\"",
                    2 => "handoff whatsapp { open \"demo/msg\" }",
                    _ => "assign \"closers\" continue",
                };
                text.push_str(&format!(
                    "  rule {name} {{\n    when {condition}\n    then {action}\n  }}\n"
                ));
            }
            if otherwise {
                text.push_str("  otherwise { tag \"cold\" }\n");
            }
            text.push_str("}\n");
            text
        })
}

/// An edit of a bundled playbook: at a fraction of its length, delete some
/// bytes and insert a token some number of times.
fn edited_playbook() -> impl Strategy<Value = String> {
    let bundled: Vec<String> = ["events", "clinics", "real_estate"]
        .iter()
        .map(|n| std::fs::read_to_string(root().join(format!("rules/{n}.rules"))).unwrap())
        .collect();
    (
        prop::sample::select(bundled),
        prop::collection::vec(
            (
                0.0f64..1.0,
                0usize..40,
                prop::sample::select(vec![
                    "(",
                    ")",
                    "not ",
                    " and ",
                    "\"",
                    "{",
                    "}",
                    "#",
                    "é",
                    "\n",
                    "rule r { when ",
                    "one of \"a\", ",
                    "matches \"(\\\\w{100}){100}\"",
                    "2027-02-30",
                ]),
                prop_oneof![Just(1usize), Just(3), Just(100), Just(5_000)],
            ),
            1..5,
        ),
    )
        .prop_map(|(text, edits)| {
            let mut bytes = text.into_bytes();
            for (at, delete, token, times) in edits {
                let at = ((bytes.len() as f64) * at) as usize;
                let end = (at + delete).min(bytes.len());
                bytes.splice(at..end, token.repeat(times).into_bytes());
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn check_and_fmt_never_panic_on_generated_playbooks(text in playbook()) {
        check_and_format(&text);
    }

    #[test]
    fn check_and_fmt_never_panic_on_edited_playbooks(text in edited_playbook()) {
        check_and_format(&text);
    }
}
