//! `serve` under the limits: a live reload of a rules file the limits
//! refuse leaves the working rules in force, and a template that would run
//! for ever is stopped by its budget, so the lead still gets its decision
//! (with the render error) instead of holding a worker.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::{aisha, root, Db, Server};
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;

const KEY: &str = "hk_limits_key";

const CONFIG: &str = r#"[[accounts]]
id = "acme"
api_keys = ["env:LIMITS_KEY"]
[accounts.routing]
default = "events"
[[accounts.whatsapp]]
key = "events-main"
phone_number_id = "106540352242922"
"#;

const ENV: &[(&str, &str)] = &[("LIMITS_KEY", KEY)];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_reload_over_the_limits_is_refused_and_a_runaway_template_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::copy(
        root().join("rules/events.rules"),
        rules.join("events.rules"),
    )
    .unwrap();
    copy_dir(&root().join("templates"), &templates);
    let db = Db::sqlite();
    let shown = templates.clone();
    let s = Server::setup(&db, CONFIG, ENV)
        .rules(&rules)
        .config(move |c| c.templates = Some(shown))
        .start()
        .await;
    let (_, before) = s.get("/v1/rulesets", KEY).await;
    let hash = before["ruleset"].clone();
    assert!(hash.is_string());

    // A condition 6,000 parentheses deep once overflowed the stack of the
    // thread that reloaded it.
    let text = std::fs::read_to_string(rules.join("events.rules")).unwrap();
    let deep = text.replacen("city in [", &format!("{}city in [", "(".repeat(6_000)), 1);
    std::fs::write(rules.join("events.rules"), deep).unwrap();
    let (st, r) = s.post("/v1/rulesets/reload", KEY, &json!({})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    assert_eq!(r["ruleset"], hash);
    assert!(
        r["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["code"] == "E034"),
        "{r}"
    );

    // Rules that check, with an approved template's param that would loop
    // ten billion times: the reload is accepted (the template compiles),
    // and the lead is decided with the render error instead of hanging.
    std::fs::write(rules.join("events.rules"), &text).unwrap();
    let approved = std::fs::read_to_string(templates.join("whatsapp.yaml")).unwrap();
    assert!(approved.contains("\"{{ city }}\""));
    std::fs::write(
        templates.join("whatsapp.yaml"),
        approved.replace(
            "\"{{ city }}\"",
            "\"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ city }}\"",
        ),
    )
    .unwrap();
    let (st, r) = s.post("/v1/rulesets/reload", KEY, &json!({})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let (st, a) = s.post("/v1/leads", KEY, &aisha()).await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    assert_eq!(a["decision"]["rules"], json!(["goa_options"]), "{a}");
    let error = a["decision"]["handoff"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("ran more than 100000 steps"), "{a}");
}
