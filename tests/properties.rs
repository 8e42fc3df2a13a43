//! Property tests: the parser and checker never panic, whatever the input,
//! and a decision is a pure function of its inputs.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use chrono::{TimeZone, Utc};
use handoff::dsl::diagnostic::Sources;
use handoff::engine::{Lead, Situation};
use handoff::render::Templates;
use handoff::ruleset::{from_sources, load, Ruleset};
use harness::root;
use proptest::prelude::*;
use serde_json::json;
use std::sync::OnceLock;

fn events_source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| std::fs::read_to_string(root().join("rules/events.rules")).unwrap())
}

fn bundled() -> &'static Ruleset {
    static RULESET: OnceLock<Ruleset> = OnceLock::new();
    RULESET.get_or_init(|| {
        load(&root().join("rules"), None)
            .ruleset
            .expect("bundled rules check")
    })
}

fn check_text(text: &str) {
    let loaded = from_sources(
        vec![("p.rules".into(), "p".into(), text.into())],
        Templates::empty(),
        Sources::default(),
        Vec::new(),
    );
    // Rendering every diagnostic must not panic either (spans inside the text).
    let _ = handoff::cli::check::human_report(&loaded);
}

/// Words and symbols of the language, so random input often gets deep into the grammar.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("playbook p {".to_string()),
        Just("}".to_string()),
        Just("rule r {".to_string()),
        Just("when".to_string()),
        Just("then".to_string()),
        Just("and".to_string()),
        Just("or".to_string()),
        Just("not".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("==".to_string()),
        Just(">=".to_string()),
        Just("in [\"a\", 1]".to_string()),
        Just("within next 3 days".to_string()),
        Just("is not set".to_string()),
        Just("field f: number required".to_string()),
        Just("field g: one of \"x\", \"y\"".to_string()),
        Just("hours mon-fri 09:00-18:00".to_string()),
        Just("timezone \"Asia/Kolkata\"".to_string()),
        Just("tag \"t\"".to_string()),
        Just("drop \"d\"".to_string()),
        Just("handoff whatsapp { open \"x\" }".to_string()),
        Just("continue".to_string()),
        Just("otherwise {".to_string()),
        Just("2027-02-30".to_string()),
        Just("2027-03-14T10:00:00+05:30".to_string()),
        Just("f".to_string()),
        Just("g".to_string()),
        Just("tags contains \"vip\"".to_string()),
        "[a-z_]{1,8}",
        "\"[^\"\\\\]{0,6}\"",
        "-?[0-9_]{1,6}(\\.[0-9]{1,3})?",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parsing_and_checking_never_panic_on_arbitrary_text(text in any::<String>()) {
        check_text(&text);
    }

    #[test]
    fn parsing_and_checking_never_panic_on_token_soup(tokens in prop::collection::vec(token(), 0..40)) {
        check_text(&tokens.join(" "));
    }

    #[test]
    fn parsing_and_checking_never_panic_on_edited_playbooks(
        cut in 0usize..4000,
        len in 0usize..40,
        insert in token(),
    ) {
        let source = events_source().replace("playbook events", "playbook p");
        let mut at = cut.min(source.len());
        while !source.is_char_boundary(at) { at -= 1; }
        let mut end = (at + len).min(source.len());
        while !source.is_char_boundary(end) { end -= 1; }
        let edited = format!("{}{}{}", &source[..at], insert, &source[end..]);
        check_text(&edited);
    }

    #[test]
    fn decisions_are_deterministic_and_trace_agrees(
        intent in prop_oneof![Just("event_enquiry"), Just("pricing"), Just("venue_visit"), Just("complaint"), Just("spam"), Just("Something Else")],
        city in prop_oneof![Just(json!("Goa")), Just(json!(" mumbai ")), Just(json!("Pune")), Just(json!(null)), Just(json!(42))],
        date in prop_oneof![Just(json!("2027-03-14")), Just(json!("2026-01-01")), Just(json!("soon")), Just(json!("2027-01-10T23:00:00Z"))],
        guests in prop_oneof![Just(json!(120)), Just(json!("450")), Just(json!("about 200")), Just(json!(-1.5)), Just(json!(true))],
        package in prop_oneof![Just(json!("gold")), Just(json!("Diamond")), Just(json!(null))],
        consent in any::<bool>(),
        window_open in any::<bool>(),
        human in any::<bool>(),
        minutes in 0i64..(60 * 24 * 14),
        channel in prop_oneof![Just("instagram"), Just("voice"), Just("fax")],
    ) {
        let lead: Lead = serde_json::from_value(json!({
            "name": "Aisha Khan", "channel": channel, "intent": intent,
            "consent": {"whatsapp": consent},
            "fields": {"city": city, "event_date": date, "guests": guests, "package": package},
        })).unwrap();
        let now = Utc.with_ymd_and_hms(2027, 1, 10, 0, 0, 0).unwrap() + chrono::Duration::minutes(minutes);
        let situation = Situation { window_open, human, ..Situation::at(now) };
        let rs = bundled();
        let first = rs.decide("events", &lead, &situation).unwrap();
        let second = rs.decide("events", &lead, &situation).unwrap();
        prop_assert_eq!(&first, &second);
        let (explained, trace) = rs.explain("events", &lead, &situation).unwrap();
        prop_assert_eq!(&first, &explained);
        let fired: Vec<_> = trace.rules.iter().filter(|r| r.result == handoff::engine::eval::RuleResult::Fired).map(|r| r.rule.to_string()).collect();
        let decided: Vec<String> = first.rules.iter().map(|r| r.to_string()).collect();
        prop_assert_eq!(fired, decided);
    }
}

#[test]
fn unicode_names_and_strings_parse() {
    let text = "playbook p {\n field ciudad: text\n rule r { when ciudad == \"São Paulo 🎉\" then tag \"cliente-ñ\" }\n otherwise { tag \"x\" }\n}";
    let loaded = from_sources(
        vec![("p.rules".into(), "p".into(), text.into())],
        Templates::empty(),
        Sources::default(),
        Vec::new(),
    );
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let rs = loaded.ruleset.unwrap();
    let lead: Lead = serde_json::from_value(json!({"fields": {"ciudad": "SÃO PAULO 🎉"}})).unwrap();
    let d = rs.decide("p", &lead, &Situation::at(Utc::now())).unwrap();
    assert_eq!(d.actions.tags, vec!["cliente-ñ"]);
}

#[test]
fn a_lead_with_unknown_keys_is_rejected_with_the_key_named() {
    let err = serde_json::from_value::<Lead>(json!({"nmae": "x"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nmae"), "{err}");
}
