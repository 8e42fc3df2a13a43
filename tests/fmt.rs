//! `handoff fmt`: one canonical layout that keeps comments, never changes
//! meaning, and is stable (formatting twice changes nothing).

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use handoff::cli::fmt::format_text;
use handoff::dsl::parse::parse_playbook;
use harness::{binary, root};
use proptest::prelude::*;

/// Formats, then checks meaning and stability; returns the formatted text.
fn assert_round_trip(text: &str) -> String {
    let formatted =
        format_text(text, "p.rules").unwrap_or_else(|e| panic!("does not parse:\n{e}\n{text}"));
    let before = parse_playbook(text, "p.rules").playbook.unwrap();
    let after = parse_playbook(&formatted, "p.rules");
    assert!(
        after.diagnostics.is_empty(),
        "formatted text has problems: {:?}\n{formatted}",
        after.diagnostics
    );
    assert_eq!(
        before,
        after.playbook.unwrap(),
        "formatting changed the meaning:\n{text}\n---\n{formatted}"
    );
    let again = format_text(&formatted, "p.rules").unwrap();
    assert_eq!(formatted, again, "formatting twice changed the text");
    let comments = |t: &str| {
        t.lines()
            .filter_map(|l| l.find('#').map(|i| l[i..].trim().to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        comments(text).len(),
        comments(&formatted).len(),
        "a comment was lost:\n{formatted}"
    );
    formatted
}

#[test]
fn the_bundled_playbooks_are_formatted_and_keep_their_meaning() {
    for name in ["events", "clinics", "real_estate"] {
        let text = std::fs::read_to_string(root().join(format!("rules/{name}.rules"))).unwrap();
        assert_round_trip(&text);
    }
}

#[test]
fn a_messy_file_gets_the_canonical_layout() {
    let case = root().join("tests/golden/fmt/messy.rules");
    let text = std::fs::read_to_string(&case).unwrap();
    let formatted = assert_round_trip(&text);
    let expected_path = case.with_extension("out");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&expected_path, &formatted).unwrap();
    }
    assert_eq!(formatted, std::fs::read_to_string(expected_path).unwrap());
}

#[test]
fn check_mode_names_files_that_would_change_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let messy = dir.path().join("messy.rules");
    let text = std::fs::read_to_string(root().join("tests/golden/fmt/messy.rules")).unwrap();
    std::fs::write(&messy, &text).unwrap();
    let out = binary()
        .args(["fmt", "--check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would reformat"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&messy).unwrap(),
        text,
        "--check must not write"
    );
    let out = binary().arg("fmt").arg(&messy).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = binary()
        .args(["fmt", "--check"])
        .arg(&messy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn a_file_with_a_syntax_error_is_left_alone_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.rules");
    std::fs::write(&bad, "playbook bad { rule r { when then } }").unwrap();
    let out = binary().arg("fmt").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a condition"));
}

fn test_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("guests >= 300".to_string()),
        Just("guests<5".to_string()),
        Just("city == \"Goa\"".to_string()),
        Just("city in [\"a\",\"b\" ]".to_string()),
        Just("city not in [\"x\"]".to_string()),
        Just("city contains \"o\"".to_string()),
        Just("city matches \"^g\"".to_string()),
        Just("city is set".to_string()),
        Just("city is not set".to_string()),
        Just("d within next 7 days".to_string()),
        Just("d within last 1 week".to_string()),
        Just("d >= 2027-01-01".to_string()),
        Just("consent.whatsapp".to_string()),
        Just("tags contains \"vip\"".to_string()),
        Just("pkg == \"gold\"".to_string()),
    ]
}

fn condition_strategy() -> impl Strategy<Value = String> {
    test_strategy().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            inner.clone().prop_map(|a| format!("( {a} )")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("({a}) and\n  # c\n ({b})")),
        ]
    })
}

fn action_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("tag \"t\"".to_string()),
        Just("assign \"q\"   # why\n".to_string()),
        Just("takeover \"s\"".to_string()),
        Just("notify \"crm\"".to_string()),
        Just("ask missing".to_string()),
        Just("ask city".to_string()),
        Just("handoff whatsapp { open \"o\" template \"t\" }".to_string()),
        Just("handoff whatsapp {\n template \"t\" # only a template\n }".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn formatting_never_changes_meaning_and_is_stable(
        rules in prop::collection::vec((condition_strategy(), prop::collection::vec(action_strategy(), 1..4), any::<bool>(), any::<bool>()), 1..5),
        otherwise in any::<bool>(),
        spaces in "[ \t\n]{1,3}",
    ) {
        let mut text = String::from("# file\nplaybook p {\n field guests: number\n field city: text required # c\n field d: date\n field pkg: one of \"gold\", \"silver\"\n");
        for (i, (condition, actions, cont, comment)) in rules.iter().enumerate() {
            if *comment {
                text.push_str("  # about the rule\n");
            }
            text.push_str(&format!("rule r{i}{spaces}{{ when {condition}{spaces}then {}{}}}\n", actions.join(&spaces), if *cont { " continue " } else { "" }));
        }
        if otherwise {
            text.push_str("otherwise { assign \"triage\" }\n");
        }
        text.push_str("}\n");
        assert_round_trip(&text);
    }
}
