//! One test per semantic rule of the routing language (docs/language.md),
//! through the public API: text -> checked ruleset -> decision.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use chrono::{DateTime, Utc};
use handoff::dsl::codes::Code;
use handoff::dsl::diagnostic::Sources;
use handoff::engine::{Lead, Outcome, Situation};
use handoff::render::Templates;
use handoff::ruleset::{from_sources, Decision, Loaded, Ruleset};
use harness::root;
use serde_json::json;

fn load(text: &str) -> Loaded {
    let dir = root().join("tests/golden/templates");
    let mut sources = Sources::default();
    let (templates, diagnostics) = Templates::load(&dir, "templates", &mut sources);
    from_sources(
        vec![("t.rules".into(), "t".into(), text.into())],
        templates,
        sources,
        diagnostics,
    )
}

/// The bundled playbooks in `rules/`.
fn load_bundled() -> Loaded {
    handoff::ruleset::load(&root().join("rules"), None)
}

fn ruleset(text: &str) -> Ruleset {
    let loaded = load(text);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.clone())
        .collect();
    assert!(errors.is_empty(), "unexpected errors: {errors:?}");
    loaded.ruleset.expect("ruleset builds")
}

fn codes(text: &str) -> Vec<Code> {
    load(text).diagnostics.iter().map(|d| d.code).collect()
}

fn lead(value: serde_json::Value) -> Lead {
    serde_json::from_value(value).expect("lead JSON")
}

fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
}

fn decide(rs: &Ruleset, lead_json: serde_json::Value) -> Decision {
    rs.decide(
        "t",
        &lead(lead_json),
        &Situation::at(at("2027-01-10T10:00:00+05:30")),
    )
    .unwrap()
}

/// A playbook with one field and a rule per test, each tagging its own name.
fn probe(fields: &str, tests: &[&str]) -> Ruleset {
    let mut text = format!("playbook t {{\n timezone \"Asia/Kolkata\"\n {fields}\n");
    for (i, test) in tests.iter().enumerate() {
        text.push_str(&format!(
            " rule r{i} {{ when {test} then tag \"r{i}\" continue }}\n"
        ));
    }
    text.push_str(" otherwise { tag \"none\" }\n}\n");
    ruleset(&text)
}

fn fired(rs: &Ruleset, lead_json: serde_json::Value) -> Vec<String> {
    decide(rs, lead_json)
        .rules
        .iter()
        .map(|r| r.to_string())
        .collect()
}

#[test]
fn a_missing_value_fails_every_test_but_is_not_set() {
    let rs = probe(
        "field city: text\n field guests: number\n field d: date",
        &[
            "city == \"Goa\"",
            "city != \"Goa\"",
            "city in [\"Goa\"]",
            "city not in [\"Goa\"]",
            "city contains \"o\"",
            "city matches \".*\"",
            "guests < 10",
            "guests >= 10",
            "d within next 3650 days",
            "city is set",
            "city is not set",
            "not (city == \"Goa\")",
        ],
    );
    assert_eq!(fired(&rs, json!({})), vec!["r10", "r11"]);
}

#[test]
fn text_compares_without_case_and_surrounding_spaces() {
    let rs = probe(
        "field city: text",
        &[
            "city == \"goa\"",
            "city in [\"MUMBAI\", \"GOA\"]",
            "city contains \"OA\"",
            "city != \"Goa\"",
            "city matches \"^goa$\"",
            "city matches \"(?i)^goa$\"",
        ],
    );
    assert_eq!(
        fired(&rs, json!({"fields": {"city": "  Goa "}})),
        vec!["r0", "r1", "r2", "r5"]
    );
}

#[test]
fn matches_is_exact_unless_the_pattern_says_otherwise() {
    let rs = probe("field city: text", &["city matches \"^Goa$\""]);
    assert_eq!(fired(&rs, json!({"fields": {"city": "Goa"}})), vec!["r0"]);
    assert!(fired(&rs, json!({"fields": {"city": "goa"}})).is_empty());
}

#[test]
fn within_next_includes_today_and_the_last_day_in_the_playbook_timezone() {
    let rs = probe(
        "field d: date",
        &["d within next 7 days", "d within last 2 days"],
    );
    // 2027-01-10T10:00+05:30: today in Asia/Kolkata is 2027-01-10.
    assert_eq!(
        fired(&rs, json!({"fields": {"d": "2027-01-10"}})),
        vec!["r0", "r1"]
    );
    assert_eq!(
        fired(&rs, json!({"fields": {"d": "2027-01-17"}})),
        vec!["r0"]
    );
    assert!(fired(&rs, json!({"fields": {"d": "2027-01-18"}})).is_empty());
    assert_eq!(
        fired(&rs, json!({"fields": {"d": "2027-01-08"}})),
        vec!["r1"]
    );
    assert!(fired(&rs, json!({"fields": {"d": "2027-01-07"}})).is_empty());
}

#[test]
fn today_is_taken_in_the_playbook_timezone_not_utc() {
    let rs = probe("field d: date", &["d within next 0 days"]);
    // 20:00 UTC on the 9th is already the 10th in Kolkata.
    let decision = rs
        .decide(
            "t",
            &lead(json!({"fields": {"d": "2027-01-10"}})),
            &Situation::at(at("2027-01-09T20:00:00Z")),
        )
        .unwrap();
    assert_eq!(decision.rules.len(), 1);
}

#[test]
fn within_hours_counts_from_this_moment() {
    let rs = probe(
        "field callback_at: datetime",
        &[
            "callback_at within next 2 hours",
            "callback_at within last 30 minutes",
        ],
    );
    assert_eq!(
        fired(
            &rs,
            json!({"fields": {"callback_at": "2027-01-10T11:30:00+05:30"}})
        ),
        vec!["r0"]
    );
    assert!(fired(
        &rs,
        json!({"fields": {"callback_at": "2027-01-10T12:30:01+05:30"}})
    )
    .is_empty());
    assert_eq!(
        fired(
            &rs,
            json!({"fields": {"callback_at": "2027-01-10T04:15:00Z"}})
        ),
        vec!["r1"]
    );
}

#[test]
fn dates_and_datetimes_compare_in_order() {
    let rs = probe(
        "field d: date\n field t: datetime",
        &[
            "d >= 2027-03-01",
            "d < 2027-03-01",
            "t > 2027-01-10T00:00:00Z",
            "t >= 2027-01-11",
        ],
    );
    assert_eq!(
        fired(
            &rs,
            json!({"fields": {"d": "2027-03-14", "t": "2027-01-10T08:00:00Z"}})
        ),
        vec!["r0", "r2"]
    );
    // A datetime compared with a date compares its local date.
    assert_eq!(
        fired(&rs, json!({"fields": {"t": "2027-01-10T20:00:00Z"}})),
        vec!["r2", "r3"]
    );
}

#[test]
fn type_errors_are_found_by_check_never_at_run_time() {
    let base =
        "field guests: number\n field city: text\n field pkg: one of \"a\", \"b\"\n intents x";
    let cases = [
        ("guests == \"many\"", Code::E003TypeMismatch),
        ("city within next 3 days", Code::E003TypeMismatch),
        ("pkg == \"c\"", Code::E004NotOneOf),
        ("intent == \"y\"", Code::E005UndeclaredIntent),
        ("city matches \"(\"", Code::E008BadRegex),
        ("cty == \"Goa\"", Code::E002UnknownPath),
    ];
    for (test, code) in cases {
        let text = format!("playbook t {{\n {base}\n rule r {{ when {test} then tag \"x\" }}\n otherwise {{ tag \"o\" }}\n}}");
        assert_eq!(codes(&text), vec![code], "for `{test}`");
    }
}

#[test]
fn lead_values_are_coerced_to_the_declared_type() {
    let rs = probe(
        "field guests: number\n field d: date\n field vip: bool",
        &["guests == 120", "d == 2027-03-14", "vip"],
    );
    let d = decide(
        &rs,
        json!({"fields": {"guests": "120", "d": "2027-03-14", "vip": "yes"}}),
    );
    assert_eq!(d.rules.len(), 3);
    assert!(d.warnings.is_empty());
}

#[test]
fn a_value_that_cannot_be_coerced_counts_as_not_set_with_a_warning() {
    let rs = probe("field guests: number", &["guests is not set"]);
    let d = decide(&rs, json!({"fields": {"guests": "about 200"}}));
    assert_eq!(d.rules.len(), 1);
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].contains("guests") && d.warnings[0].contains("about 200"),
        "{:?}",
        d.warnings
    );
}

#[test]
fn and_binds_tighter_than_or_and_not_tightest() {
    let rs = probe(
        "field a: bool\n field b: bool\n field c: bool",
        &["a or b and c", "not a and b", "not (a and b)"],
    );
    // a=true, b=false, c=false: r0 = a or (b and c) = true; r1 = (not a) and b = false; r2 = true.
    assert_eq!(
        fired(&rs, json!({"fields": {"a": true, "b": false, "c": false}})),
        vec!["r0", "r2"]
    );
}

#[test]
fn the_first_rule_that_fires_stops_evaluation_unless_it_continues() {
    let rs = ruleset(
        "playbook t {\n field g: number\n rule a { when g > 1 then tag \"a\" continue }\n rule b { when g > 2 then assign \"q1\" }\n rule c { when g > 3 then assign \"q2\" }\n otherwise { assign \"triage\" }\n}",
    );
    let d = decide(&rs, json!({"fields": {"g": 10}}));
    assert_eq!(d.rules.iter().map(|r| &**r).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(d.actions.assign.as_deref(), Some("q1"));
    assert!(!d.otherwise);
}

#[test]
fn otherwise_applies_only_when_no_rule_fired() {
    let rs = ruleset(
        "playbook t {\n field g: number\n rule a { when g > 1 then tag \"a\" continue }\n otherwise { assign \"triage\" }\n}",
    );
    let d = decide(&rs, json!({"fields": {"g": 10}}));
    assert!(!d.otherwise);
    assert_eq!(d.actions.assign, None);
    let d = decide(&rs, json!({"fields": {"g": 0}}));
    assert!(d.otherwise);
    assert_eq!(d.actions.assign.as_deref(), Some("triage"));
    assert!(d.rules.is_empty());
}

#[test]
fn tags_include_those_added_by_rules_that_already_fired() {
    let rs = ruleset(
        "playbook t {\n field g: number\n rule a { when g >= 300 then tag \"vip\" continue }\n rule b { when tags contains \"VIP\" then assign \"senior\" }\n rule c { when tags contains \"returning\" then assign \"account-managers\" }\n otherwise { assign \"triage\" }\n}",
    );
    assert_eq!(
        decide(&rs, json!({"fields": {"g": 300}}))
            .actions
            .assign
            .as_deref(),
        Some("senior")
    );
    assert_eq!(
        decide(&rs, json!({"fields": {"g": 3}, "tags": ["returning"]}))
            .actions
            .assign
            .as_deref(),
        Some("account-managers")
    );
}

fn handoff_rules() -> Ruleset {
    ruleset(
        "playbook t {\n field city: text\n rule both { when city == \"goa\" then handoff whatsapp { open \"demo/hello\" template \"demo_hello\" } }\n rule only_open { when city == \"pune\" then handoff whatsapp { open \"demo/hello\" } }\n otherwise { assign \"triage\" }\n}",
    )
}

fn outcome(rs: &Ruleset, city: &str, consent: bool, window_open: bool, human: bool) -> Outcome {
    let lead = lead(
        json!({"name": "Aisha Khan", "consent": {"whatsapp": consent}, "fields": {"city": city}}),
    );
    let situation = Situation {
        window_open,
        human,
        ..Situation::at(at("2027-01-10T10:00:00Z"))
    };
    rs.decide("t", &lead, &situation)
        .unwrap()
        .handoff
        .expect("a handoff")
        .outcome
}

#[test]
fn handoff_resolution_follows_the_five_steps_in_order() {
    let rs = handoff_rules();
    // 1. No opt-in, whatever else holds.
    assert_eq!(
        outcome(&rs, "goa", false, true, true),
        Outcome::BlockedNoOptIn
    );
    // 2. A person took over.
    assert_eq!(outcome(&rs, "goa", true, true, true), Outcome::PausedHuman);
    // 3. Window open and `open` given.
    assert_eq!(outcome(&rs, "goa", true, true, false), Outcome::Session);
    // 4. Otherwise the template.
    assert_eq!(outcome(&rs, "goa", true, false, false), Outcome::Template);
    // 5. No template: nothing is sent.
    assert_eq!(
        outcome(&rs, "pune", true, false, false),
        Outcome::BlockedWindowClosed
    );
    assert_eq!(outcome(&rs, "pune", true, true, false), Outcome::Session);
}

#[test]
fn the_session_message_and_template_preview_render_from_what_the_lead_said() {
    let rs = handoff_rules();
    let lead = lead(
        json!({"name": "Aisha Khan", "consent": {"whatsapp": true}, "fields": {"city": "Goa"}}),
    );
    let open = Situation {
        window_open: true,
        human: false,
        ..Situation::at(at("2027-01-10T10:00:00Z"))
    };
    let d = rs.decide("t", &lead, &open).unwrap();
    let h = d.handoff.unwrap();
    assert_eq!(
        h.message.as_deref(),
        Some("Hi Aisha, thanks for asking about Goa.")
    );
    // The approved template comes along as the fallback for a closed window.
    assert_eq!(h.approved.unwrap().preview, "Hi Aisha, about Goa.");
    let closed = Situation {
        window_open: false,
        ..open
    };
    let h = rs.decide("t", &lead, &closed).unwrap().handoff.unwrap();
    assert_eq!(h.message.as_deref(), Some("Hi Aisha, about Goa."));
    assert_eq!(h.approved.unwrap().params, vec!["Aisha", "Goa"]);
}

#[test]
fn first_name_is_the_leads_own_else_the_first_word_of_name() {
    let rs = probe("", &["lead.first_name == \"aisha\""]);
    assert_eq!(fired(&rs, json!({"name": "Aisha Khan"})).len(), 1);
    assert_eq!(
        fired(&rs, json!({"name": "Dr Aisha Khan", "first_name": "Aisha"})).len(),
        1
    );
    assert!(fired(&rs, json!({"name": "Dr Aisha Khan"})).is_empty());
}

#[test]
fn qualified_means_every_required_field_is_set_and_ask_missing_lists_the_rest() {
    let rs = ruleset(
        "playbook t {\n field city: text required\n field d: date required\n field g: number\n rule r { when not qualified then ask missing }\n otherwise { assign \"closers\" }\n}",
    );
    let d = decide(&rs, json!({"fields": {"g": 3, "d": "not a date"}}));
    assert_eq!(d.actions.ask, vec!["city", "d"]);
    let d = decide(&rs, json!({"fields": {"city": "Goa", "d": "2027-01-01"}}));
    assert!(d.otherwise);
}

#[test]
fn drop_leaves_nothing_else_in_the_decision() {
    let rs = ruleset(
        "playbook t {\n field notes: text\n rule tagger { when notes is set then tag \"has-notes\" continue }\n rule spam { when notes contains \"crypto\" then drop \"spam\" }\n otherwise { assign \"triage\" }\n}",
    );
    let d = decide(&rs, json!({"fields": {"notes": "Best CRYPTO deals"}}));
    assert_eq!(d.actions.drop.as_deref(), Some("spam"));
    assert!(d.actions.tags.is_empty() && d.actions.assign.is_none() && d.handoff.is_none());
}

#[test]
fn business_hours_follow_the_playbook_timezone_and_days() {
    let rs = ruleset(
        "playbook t {\n timezone \"Asia/Kolkata\"\n hours mon-fri 10:00-19:00, sat 10:00-14:00\n rule open { when business_hours then tag \"open\" }\n otherwise { tag \"closed\" }\n}",
    );
    let tag = |t: &str| {
        rs.decide("t", &Lead::default(), &Situation::at(at(t)))
            .unwrap()
            .actions
            .tags[0]
            .clone()
    };
    assert_eq!(tag("2027-01-11T10:00:00+05:30"), "open"); // Monday 10:00
    assert_eq!(tag("2027-01-11T19:00:00+05:30"), "closed"); // closes at 19:00
    assert_eq!(tag("2027-01-16T13:59:00+05:30"), "open"); // Saturday
    assert_eq!(tag("2027-01-17T12:00:00+05:30"), "closed"); // Sunday
    assert_eq!(tag("2027-01-11T04:30:00Z"), "open"); // 10:00 in Kolkata
}

#[test]
fn the_shadowed_rule_warning_names_both_rules() {
    let loaded = load(
        "playbook t {\n field g: number\n rule wide { when g >= 100 then tag \"a\" }\n rule narrow { when g >= 200 and g < 300 then tag \"b\" }\n otherwise { tag \"o\" }\n}",
    );
    let w: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.code == Code::W101ShadowedRule)
        .collect();
    assert_eq!(w.len(), 1);
    assert!(w[0].message.contains("`narrow`") && w[0].message.contains("`wide`"));
    assert!(
        loaded.ruleset.is_some(),
        "warnings do not stop the ruleset loading"
    );
}

#[test]
fn warnings_for_no_otherwise_and_a_handoff_without_consent() {
    let c = codes("playbook t {\n field city: text\n rule r { when qualified then handoff whatsapp { open \"demo/hello\" } }\n}");
    assert_eq!(
        c,
        vec![Code::W102NoOtherwise, Code::W103HandoffWithoutConsent]
    );
}

#[test]
fn every_error_is_reported_in_one_run() {
    let c = codes(
        "playbook t {\n field g: number\n rule a { when g == \"x\" then ask nope }\n rule a { when h then drop \"x\" tag \"y\" }\n otherwise { assign \"q\" }\n}",
    );
    assert!(c.contains(&Code::E003TypeMismatch));
    assert!(c.contains(&Code::E022AskUnknownField));
    assert!(c.contains(&Code::E006DuplicateRule));
    assert!(c.contains(&Code::E002UnknownPath));
    assert!(c.contains(&Code::E016DropWithOthers));
}

#[test]
fn templates_never_run_lead_data_as_template_code() {
    let rs = handoff_rules();
    let lead = lead(
        json!({"name": "{{ 7*7 }}", "consent": {"whatsapp": true}, "fields": {"city": "goa"}}),
    );
    let open = Situation {
        window_open: true,
        human: false,
        ..Situation::at(at("2027-01-10T10:00:00Z"))
    };
    let h = rs.decide("t", &lead, &open).unwrap().handoff.unwrap();
    assert_eq!(
        h.message.as_deref(),
        Some("Hi {{, thanks for asking about goa.")
    );
}

#[test]
fn the_events_playbook_produces_the_language_reference_example() {
    let loaded = load_bundled();
    let rs = loaded.ruleset.expect("bundled rules check");
    let aisha = lead(json!({
        "name": "Aisha Khan", "channel": "instagram", "intent": "event_enquiry",
        "consent": {"whatsapp": true},
        "fields": {"city": "Goa", "event_date": "2027-03-14", "guests": 120}
    }));
    let d = rs
        .decide(
            "events",
            &aisha,
            &Situation::at(at("2027-01-10T10:00:00+05:30")),
        )
        .unwrap();
    assert_eq!(
        d.rules.iter().map(|r| &**r).collect::<Vec<_>>(),
        ["goa_options"]
    );
    let h = d.handoff.unwrap();
    assert_eq!(h.outcome, Outcome::Template);
    assert_eq!(h.template.as_deref(), Some("event_options"));
    assert_eq!(
        h.message.as_deref(),
        Some("Hi Aisha, here are options for your March 14 Goa event.")
    );
    assert_eq!(d.actions.assign.as_deref(), Some("events-closers"));
    assert_eq!(d.actions.tags, vec!["hot"]);
}

#[test]
fn the_bundled_playbooks_check_without_warnings() {
    let loaded = load_bundled();
    let messages: Vec<&str> = loaded
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert!(messages.is_empty(), "{messages:?}");
    assert!(loaded.ruleset.unwrap().playbooks.contains_key("events"));
}

#[test]
fn hours_may_list_several_times_for_the_same_days() {
    let rs = ruleset(
        "playbook t {\n timezone \"UTC\"\n hours mon-fri 09:00-13:00, 14:00-18:00, sat 10:00-12:00\n rule open { when business_hours then tag \"open\" }\n otherwise { tag \"closed\" }\n}",
    );
    let tag = |t: &str| {
        rs.decide("t", &Lead::default(), &Situation::at(at(t)))
            .unwrap()
            .actions
            .tags[0]
            .clone()
    };
    assert_eq!(tag("2027-01-11T12:59:00Z"), "open");
    assert_eq!(tag("2027-01-11T13:30:00Z"), "closed"); // lunch
    assert_eq!(tag("2027-01-11T14:00:00Z"), "open");
    assert_eq!(tag("2027-01-16T11:00:00Z"), "open"); // Saturday
    assert_eq!(tag("2027-01-16T14:30:00Z"), "closed"); // not Saturday afternoon
}

#[test]
fn one_of_values_reach_templates_as_declared() {
    let loaded = load_bundled();
    let rs = loaded.ruleset.expect("bundled rules check");
    let lead = lead(json!({
        "name": "Kabir", "intent": "pricing", "consent": {"whatsapp": true},
        "fields": {"city": "Delhi", "event_date": "2027-05-01", "package": "GOLD"}
    }));
    let open = Situation {
        window_open: true,
        human: false,
        ..Situation::at(at("2027-01-10T10:00:00+05:30"))
    };
    let d = rs.decide("events", &lead, &open).unwrap();
    let message = d.handoff.unwrap().message.unwrap();
    assert!(message.contains("Gold package"), "{message}");
}

// Conversations: the open thread, the event decided, marketing opt-outs.

use handoff::engine::{Event, Thread};

fn conversation_rules() -> Ruleset {
    ruleset(
        "playbook t {\n field city: text\n rule offer { when city == \"mumbai\" then handoff whatsapp { open \"demo/hello\" template \"demo_offer\" } }\n rule offer_only { when city == \"pune\" then handoff whatsapp { template \"demo_offer\" } }\n rule both { when city == \"goa\" then handoff whatsapp { open \"demo/hello\" template \"demo_hello\" } }\n otherwise { assign \"triage\" }\n}",
    )
}

fn situation(window_open: bool, human: bool, open: bool, opted_out: bool) -> Situation {
    Situation {
        window_open,
        human,
        thread: Thread {
            open,
            opened: open.then(|| at("2027-01-09T10:00:00Z")),
            ..Thread::default()
        },
        marketing_opt_out: opted_out,
        ..Situation::at(at("2027-01-10T10:00:00Z"))
    }
}

fn outcome_in(rs: &Ruleset, city: &str, consent: bool, s: &Situation) -> Outcome {
    let lead = lead(
        json!({"name": "Aisha Khan", "consent": {"whatsapp": consent}, "fields": {"city": city}}),
    );
    rs.decide("t", &lead, s)
        .unwrap()
        .handoff
        .expect("a handoff")
        .outcome
}

#[test]
fn handoff_resolution_follows_the_six_steps_in_order() {
    let rs = conversation_rules();
    // 1 before 3: no opt-in wins over an open thread.
    assert_eq!(
        outcome_in(&rs, "goa", false, &situation(true, false, true, false)),
        Outcome::BlockedNoOptIn
    );
    // 2 before 3: a person on an open thread.
    assert_eq!(
        outcome_in(&rs, "goa", true, &situation(true, true, true, false)),
        Outcome::PausedHuman
    );
    // 3: an open thread gets no second opener, window open or closed.
    assert_eq!(
        outcome_in(&rs, "goa", true, &situation(true, false, true, false)),
        Outcome::AlreadyOpen
    );
    assert_eq!(
        outcome_in(&rs, "goa", true, &situation(false, false, true, false)),
        Outcome::AlreadyOpen
    );
    // 3 before 5: an opted-out lead on an open thread.
    assert_eq!(
        outcome_in(&rs, "pune", true, &situation(false, false, true, true)),
        Outcome::AlreadyOpen
    );
    // 4: the session message goes out even to a lead who stopped marketing.
    assert_eq!(
        outcome_in(&rs, "mumbai", true, &situation(true, false, false, true)),
        Outcome::Session
    );
    // 5: a marketing template is not sent to a lead who opted out ...
    assert_eq!(
        outcome_in(&rs, "mumbai", true, &situation(false, false, false, true)),
        Outcome::BlockedMarketingOptOut
    );
    assert_eq!(
        outcome_in(&rs, "pune", true, &situation(true, false, false, true)),
        Outcome::BlockedMarketingOptOut
    );
    // ... a utility template is, and so is the marketing one to anyone else.
    assert_eq!(
        outcome_in(&rs, "goa", true, &situation(false, false, false, true)),
        Outcome::Template
    );
    assert_eq!(
        outcome_in(&rs, "mumbai", true, &situation(false, false, false, false)),
        Outcome::Template
    );
}

#[test]
fn nothing_is_rendered_for_a_handoff_that_sends_nothing() {
    let rs = conversation_rules();
    let lead =
        lead(json!({"name": "Aisha", "consent": {"whatsapp": true}, "fields": {"city": "mumbai"}}));
    for s in [
        situation(false, false, true, false),
        situation(false, false, false, true),
    ] {
        let d = rs.decide("t", &lead, &s).unwrap();
        let h = d.handoff.unwrap();
        assert!(h.message.is_none() && h.approved.is_none(), "{h:?}");
        assert!(d.warnings.is_empty());
    }
}

#[test]
fn the_thread_the_event_and_the_marketing_opt_out_are_paths() {
    let rs = probe(
        "",
        &[
            "thread.open",
            "not thread.open",
            "thread.opened within last 2 days",
            "thread.opened is not set",
            "thread.closed is set",
            "event == \"message\"",
            "event == \"lead\"",
            "consent.marketing",
            "message.text contains \"refund\"",
            "message.text is not set",
        ],
    );
    let tags = |s: &Situation, lead_json: serde_json::Value| -> Vec<String> {
        rs.decide("t", &lead(lead_json), s).unwrap().actions.tags
    };
    let empty = json!({});
    let open = Situation {
        event: Event::Message,
        thread: Thread {
            open: true,
            opened: Some(at("2027-01-09T12:00:00Z")),
            closed: Some(at("2026-12-01T12:00:00Z")),
            asked: Vec::new(),
        },
        message: Some("I want a Refund".into()),
        ..Situation::at(at("2027-01-10T10:00:00+05:30"))
    };
    assert_eq!(
        tags(&open, empty.clone()),
        vec!["r0", "r2", "r4", "r5", "r7", "r8"]
    );
    // Opened long ago: `within last 2 days` no longer holds.
    let old = Situation {
        thread: Thread {
            opened: Some(at("2027-01-01T12:00:00Z")),
            ..open.thread.clone()
        },
        ..open.clone()
    };
    assert_eq!(
        tags(&old, empty.clone()),
        vec!["r0", "r4", "r5", "r7", "r8"]
    );
    // An upstream lead with no thread, opted out: `message.text` is not set
    // even though the transcript has lines.
    let lead_event = Situation {
        marketing_opt_out: true,
        ..Situation::at(at("2027-01-10T10:00:00+05:30"))
    };
    let with_transcript = json!({"transcript": [{"channel": "whatsapp", "from": "lead", "text": "refund", "at": "2027-01-10T04:00:00Z"}]});
    assert_eq!(
        tags(&lead_event, with_transcript.clone()),
        vec!["r1", "r3", "r6", "r9"]
    );
    // A message event with no text given reads the lead's latest line.
    let message = Situation {
        event: Event::Message,
        ..Situation::at(at("2027-01-10T10:00:00+05:30"))
    };
    assert_eq!(
        tags(&message, with_transcript),
        vec!["r1", "r3", "r5", "r7", "r8"]
    );
}

#[test]
fn ask_never_reports_a_field_that_is_set_or_one_already_asked_in_the_open_thread() {
    let rs = ruleset(
        "playbook t {\n field city: text required\n field d: date required\n field g: number\n rule r { when not qualified then ask missing ask g ask city }\n otherwise { assign \"closers\" }\n}",
    );
    let l = lead(json!({"fields": {"city": "Goa"}}));
    let d = rs
        .decide("t", &l, &Situation::at(at("2027-01-10T10:00:00Z")))
        .unwrap();
    assert_eq!(
        d.actions.ask,
        vec!["d", "g"],
        "`ask city` with city set reports nothing"
    );
    let open = Situation {
        thread: Thread {
            open: true,
            opened: Some(at("2027-01-10T09:00:00Z")),
            closed: None,
            asked: vec!["d".into()],
        },
        ..Situation::at(at("2027-01-10T10:00:00Z"))
    };
    assert_eq!(rs.decide("t", &l, &open).unwrap().actions.ask, vec!["g"]);
    // Asked in a conversation that has closed: asked again in the next.
    let closed = Situation {
        thread: Thread {
            open: false,
            ..open.thread.clone()
        },
        ..open.clone()
    };
    assert_eq!(
        rs.decide("t", &l, &closed).unwrap().actions.ask,
        vec!["d", "g"]
    );
}

#[test]
fn every_decision_records_its_event() {
    let rs = conversation_rules();
    let l = lead(json!({"fields": {"city": "goa"}}));
    let d = rs
        .decide("t", &l, &Situation::at(at("2027-01-10T10:00:00Z")))
        .unwrap();
    assert_eq!(serde_json::to_value(&d).unwrap()["event"], "lead");
    let m = Situation {
        event: Event::Message,
        ..Situation::at(at("2027-01-10T10:00:00Z"))
    };
    let d = rs.decide("t", &l, &m).unwrap();
    assert_eq!(serde_json::to_value(&d).unwrap()["event"], "message");
}

#[test]
fn templates_see_unmapped_answers_in_the_order_asked() {
    let rs = ruleset(
        "playbook t {\n rule r { when consent.whatsapp then handoff whatsapp { open \"demo/answers\" } }\n}",
    );
    let l = lead(json!({
        "consent": {"whatsapp": true},
        "answers": [
            {"question": "Which venue style?", "answer": "Beach"},
            {"question": "Any dietary needs?", "answer": "Jain food"},
        ]
    }));
    let open = Situation {
        window_open: true,
        ..Situation::at(at("2027-01-10T10:00:00Z"))
    };
    let d = rs.decide("t", &l, &open).unwrap();
    assert_eq!(
        d.handoff.unwrap().message.as_deref(),
        Some("Which venue style? Beach / Any dietary needs? Jain food")
    );
}

#[test]
fn check_knows_the_new_paths_suggests_them_and_refuses_what_does_not_fit() {
    let unknown = load("playbook t {\n rule r { when thread.opne then tag \"x\" }\n}");
    let d = unknown
        .diagnostics
        .iter()
        .find(|d| d.code == Code::E002UnknownPath)
        .expect("E002");
    assert!(
        format!("{:?}", d.help).contains("thread.open"),
        "{:?}",
        d.help
    );
    assert!(
        codes("playbook t {\n rule r { when event == \"msg\" then tag \"x\" }\n}")
            .contains(&Code::E004NotOneOf)
    );
    assert!(codes("playbook t {\n rule r { when consent.marketing == \"no\" then tag \"x\" }\n otherwise { tag \"y\" }\n}").contains(&Code::E003TypeMismatch));
    assert!(
        codes("playbook t {\n field event: text\n otherwise { tag \"y\" }\n}")
            .contains(&Code::E017FieldShadowsBuiltin)
    );
    assert!(
        codes("playbook t {\n idle 0 days\n otherwise { tag \"y\" }\n}")
            .contains(&Code::E033IdleZero)
    );
    // A field may still be called `message`: `message.text` is the built-in.
    let rs = ruleset("playbook t {\n idle 1 day\n field message: text\n rule r { when message contains \"hi\" and message.text is not set then tag \"x\" }\n otherwise { tag \"y\" }\n}");
    assert_eq!(
        decide(&rs, json!({"fields": {"message": "hi there"}}))
            .actions
            .tags,
        vec!["x"]
    );
}

#[test]
fn a_time_of_day_asked_of_a_date_fails_the_render_and_never_panics() {
    // `check` refuses `day | date("%H:%M")` on a date field (E037); through
    // a variable of the template's own it cannot tell, and the render is
    // what must hold.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("t")).unwrap();
    std::fs::write(
        dir.path().join("t/when.j2"),
        "{% set d = day %}See you {{ d | date(\"%d %B at %H:%M\") }}.",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("whatsapp.yaml"),
        "when:\n  language: en\n  category: utility\n  body: \"See you {{1}}.\"\n  params:\n    - \"{% set d = day %}{{ d | date('%H:%M') }}\"\n",
    )
    .unwrap();
    let mut sources = Sources::default();
    let (templates, diagnostics) = Templates::load(dir.path(), "templates", &mut sources);
    let loaded = from_sources(
        vec![(
            "t.rules".into(),
            "t".into(),
            "playbook t {\n field day: date\n rule r { when day is set and consent.whatsapp then handoff whatsapp { open \"t/when\" template \"when\" } }\n otherwise { assign \"q\" }\n}".into(),
        )],
        templates,
        sources,
        diagnostics,
    );
    let rs = loaded.ruleset.expect("the rules check");
    let l = lead(json!({"consent": {"whatsapp": true}, "fields": {"day": "2027-03-14"}}));
    for window_open in [true, false] {
        let s = Situation {
            window_open,
            ..Situation::at(at("2027-01-10T10:00:00Z"))
        };
        let d = rs.decide("t", &l, &s).unwrap();
        let h = d.handoff.unwrap();
        assert!(h.message.is_none(), "nothing is sent");
        assert!(
            h.error
                .as_deref()
                .is_some_and(|e| e.contains("does not have")),
            "{h:?}"
        );
    }
}
