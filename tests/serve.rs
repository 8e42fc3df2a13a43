//! `handoff serve` over real HTTP: the server on 127.0.0.1:0 with a fresh
//! SQLite database and the bundled rules, driven with an HTTP client.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::process::serve_with;
use harness::{aisha, fixture, listen, root, until, Api, Db, Server, POLL};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const KEY: &str = "hk_test_key_one";
const OTHER_KEY: &str = "hk_test_key_two";
const META_SECRET: &str = "meta-app-secret";

/// Two accounts: `acme` (the events playbook, its WhatsApp number, Meta's
/// webhooks and a signed web form) and `globex` (clinics).
const CONFIG: &str = r#"[[accounts]]
id = "acme"
api_keys = ["env:KEY_ONE"]
[accounts.routing]
default = "events"
[accounts.meta]
app_secrets = ["env:META_SECRET", "env:META_SECRET_OLD"]
verify_token = "env:META_VERIFY"
[[accounts.whatsapp]]
key = "events-main"
phone_number_id = "106540352242922"
[accounts.forms.wedding]
playbook = "events"
secret = "env:FORM_SECRET"
[accounts.forms.wedding.fields]
your_name = "name"
mobile = "phone"
city = "field:city"
event_date = "field:event_date"
whatsapp_me = "consent:whatsapp"

[[accounts]]
id = "globex"
api_keys = ["env:KEY_TWO"]
playbooks = ["clinics"]
"#;

const ENV: &[(&str, &str)] = &[
    ("KEY_ONE", KEY),
    ("KEY_TWO", OTHER_KEY),
    ("META_SECRET", META_SECRET),
    ("META_SECRET_OLD", "old-secret"),
    ("META_VERIFY", "verify-me"),
    ("FORM_SECRET", "form-secret"),
];

async fn start(db: &Db) -> Server {
    Server::start(db, CONFIG, ENV).await
}

#[tokio::test]
async fn a_lead_is_stored_decided_and_put_in_the_outbox_once() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let r = s
        .client
        .post(s.url("/v1/leads"))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "evt-1")
        .json(&aisha())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["decision"]["rules"], json!(["goa_options"]));
    assert_eq!(first["decision"]["handoff"]["outcome"], "template");
    assert_eq!(
        first["decision"]["handoff"]["message"],
        "Hi Aisha, here are options for your March 14 Goa event."
    );
    let id = first["lead_id"].as_str().unwrap().to_string();

    // The same request again: the first answer, nothing done twice.
    let r = s
        .client
        .post(s.url("/v1/leads"))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "evt-1")
        .json(&aisha())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "the first answer, status included"
    );
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["decision_id"], first["decision_id"]);

    let (status, lead) = s.get(&format!("/v1/leads/{id}"), KEY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lead["phone"], "+919812345678");
    assert_eq!(lead["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(lead["outbox"].as_array().unwrap().len(), 1);
    assert_eq!(
        lead["outbox"][0]["payload"]["template"]["name"],
        "event_options"
    );
    assert_eq!(lead["thread"]["queue"], "events-closers");
    assert_eq!(lead["consents"][0]["granted"], true);
    assert_eq!(lead["transcript"][0]["channel"], "instagram");
    assert!(lead["decisions"][0]["trace"]["rules"].is_array());
}

#[tokio::test]
async fn later_events_for_the_same_person_reach_the_same_lead_and_two_leads_merge() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let (st, a) = s.post("/v1/leads", KEY, &json!({"name": "Rohan", "phone": "+919800000001", "intent": "pricing", "fields": {"city": "Pune"}})).await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    let (st, b) = s.post("/v1/leads", KEY, &json!({"email": "Rohan@Example.com", "intent": "pricing", "fields": {"guests": 80}, "transcript": [{"channel": "web_form", "from": "lead", "text": "price for 80?", "at": "2026-11-01T10:00:00Z"}]})).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_ne!(a["lead_id"], b["lead_id"]);
    // One event names both: the two leads are one person.
    let (st, c) = s.post("/v1/leads", KEY, &json!({"phone": "98000 00001", "email": "rohan@example.com", "intent": "pricing", "fields": {"package": "gold"}})).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(c["lead_id"], a["lead_id"], "the older lead survives");
    let (_, merged) = s
        .get(
            &format!("/v1/leads/{}", b["lead_id"].as_str().unwrap()),
            KEY,
        )
        .await;
    assert_eq!(
        merged["id"], a["lead_id"],
        "the merged lead answers as the survivor"
    );
    assert_eq!(
        merged["fields"],
        json!({"city": "Pune", "guests": 80, "package": "gold"})
    );
    assert_eq!(merged["identities"].as_array().unwrap().len(), 2);
    assert_eq!(merged["decisions"].as_array().unwrap().len(), 3);
    assert_eq!(merged["transcript"][0]["text"], "price for 80?");
    let (_, list) = s.get("/v1/leads?q=rohan", KEY).await;
    assert_eq!(list["leads"].as_array().unwrap().len(), 1);
    // The old ID still works for actions, as the survivor.
    let (st, t) = s
        .post(
            &format!("/v1/leads/{}/takeover", b["lead_id"].as_str().unwrap()),
            KEY,
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    let (_, survivor) = s
        .get(
            &format!("/v1/leads/{}", a["lead_id"].as_str().unwrap()),
            KEY,
        )
        .await;
    assert_eq!(survivor["thread"]["state"], "human");
    // The auth scheme is case-insensitive.
    let r = s
        .client
        .get(s.url("/v1/leads"))
        .header("Authorization", format!("BEARER {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let raw = |body: &'static str| {
        s.client
            .post(s.url("/v1/leads"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = raw("{not json").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("line 1"),
        "{e}"
    );
    let r = raw(r#"{"phone": "+919800000002", "fields": "city=Goa"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["at"], "fields");
    let r = raw(r#"{"phone": "+919800000002", "nmae": "x"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nmae"));
    let (st, e) = s
        .post("/v1/leads", KEY, &json!({"phone": "call me maybe"}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["at"], "phone");
    let (st, e) = s
        .post(
            "/v1/leads",
            KEY,
            &json!({"phone": "+919800000002", "channel": "fax"}),
        )
        .await;
    assert_eq!(
        (st, e["error"]["at"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("channel"))
    );
    let (st, _) = s
        .post("/v1/leads", KEY, &json!({"name": "nobody to find"}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    // The situation of a dry run has no place on a real lead.
    let (st, e) = s
        .post(
            "/v1/leads",
            KEY,
            &json!({"phone": "+919800000002", "window": "open"}),
        )
        .await;
    assert_eq!(
        (st, e["error"]["at"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("window"))
    );
    let (st, e) = s
        .post(
            "/v1/leads",
            KEY,
            &json!({"phone": "+919800000002", "name": "a\u{0}b"}),
        )
        .await;
    assert_eq!(
        (st, e["error"]["at"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("name"))
    );
    let big = json!({"phone": "+919800000002", "fields": {"notes": "x".repeat(2 << 20)}});
    let (st, _) = s.post("/v1/leads", KEY, &big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let (st, e) = s
        .post("/v1/leads", "hk_wrong", &json!({"phone": "+919800000002"}))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{e}");
    let r = s
        .client
        .post(s.url("/v1/leads"))
        .json(&json!({"phone": "+919800000002"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A body declared as something else than JSON.
    let r = s
        .client
        .post(s.url("/v1/leads"))
        .bearer_auth(KEY)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("phone=%2B919800000002")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["at"], "Content-Type", "{e}");
    // A wrong method gets the same JSON error shape, with `Allow`.
    let r = s
        .client
        .delete(s.url("/v1/leads"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers().contains_key("allow"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "method_not_allowed", "{e}");
    // Nothing of the above was stored.
    let (_, list) = s.get("/v1/leads", KEY).await;
    assert_eq!(list["leads"], json!([]));
    // A hostile name is stored and echoed as data, never run.
    let (st, ok) = s
        .post(
            "/v1/leads",
            KEY,
            &json!({"phone": "+919800000002", "name": "{{ 7*7 }} <script>", "intent": "pricing"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{ok}");
    let (_, lead) = s
        .get(
            &format!("/v1/leads/{}", ok["lead_id"].as_str().unwrap()),
            KEY,
        )
        .await;
    assert_eq!(lead["name"], "{{ 7*7 }} <script>");
}

#[tokio::test]
async fn one_account_never_sees_another_accounts_leads() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let (_, a) = s.post("/v1/leads", KEY, &aisha()).await;
    let id = a["lead_id"].as_str().unwrap();
    let (st, _) = s.get(&format!("/v1/leads/{id}"), OTHER_KEY).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s
        .post(&format!("/v1/leads/{id}/takeover"), OTHER_KEY, &json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list) = s.get("/v1/leads", OTHER_KEY).await;
    assert_eq!(list["leads"], json!([]));
    // The same phone at the other account is a different lead there.
    let mut clinic = aisha();
    clinic["playbook"] = json!("clinics");
    clinic["intent"] = json!("appointment");
    let (st, b) = s.post("/v1/leads", OTHER_KEY, &clinic).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_ne!(b["lead_id"], a["lead_id"]);
    // And the other account cannot use a playbook it was not given.
    let (st, e) = s.post("/v1/leads", OTHER_KEY, &aisha()).await;
    assert_eq!(
        (st, e["error"]["at"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("playbook"))
    );
}

#[tokio::test]
async fn takeover_pauses_automation_and_release_resumes_it() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let (_, a) = s.post("/v1/leads", KEY, &aisha()).await;
    let id = a["lead_id"].as_str().unwrap();
    let (st, _) = s
        .post(
            &format!("/v1/leads/{id}/takeover"),
            KEY,
            &json!({"queue": "events-senior-closers"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, again) = s.post("/v1/leads", KEY, &aisha()).await;
    assert_eq!(again["decision"]["handoff"]["outcome"], "paused_human");
    let (_, lead) = s.get(&format!("/v1/leads/{id}"), KEY).await;
    assert_eq!(
        lead["outbox"].as_array().unwrap().len(),
        1,
        "nothing new is sent while a person has the thread"
    );
    s.post(&format!("/v1/leads/{id}/release"), KEY, &json!({}))
        .await;
    // Released, but her conversation is still open: no second opener.
    let (_, third) = s.post("/v1/leads", KEY, &aisha()).await;
    assert_eq!(third["decision"]["handoff"]["outcome"], "already_open");
    // Closed: the next handoff opens a new conversation.
    let (st, _) = s
        .post(&format!("/v1/leads/{id}/close"), KEY, &json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, fourth) = s.post("/v1/leads", KEY, &aisha()).await;
    assert_eq!(fourth["decision"]["handoff"]["outcome"], "template");
}

#[tokio::test]
async fn dry_run_decides_without_storing() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let mut lead = aisha();
    lead["now"] = json!("2027-01-10T10:00:00+05:30");
    lead["window"] = json!("open");
    lead["phone"] = json!("+919812345678");
    let (st, r) = s.post("/v1/dry-run", KEY, &lead).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["decision"]["handoff"]["outcome"], "session");
    assert_eq!(r["trace"]["stopped_by"], "goa_options");
    let (_, list) = s.get("/v1/leads", KEY).await;
    assert_eq!(list["leads"], json!([]));
    // A dry run checks the body as intake does.
    let mut fax = aisha();
    fax["channel"] = json!("fax");
    let (st, e) = s.post("/v1/dry-run", KEY, &fax).await;
    assert_eq!(
        (st, e["error"]["at"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("channel"))
    );
}

#[tokio::test]
async fn a_broken_rules_edit_never_replaces_the_working_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for f in ["events.rules", "clinics.rules", "real_estate.rules"] {
        std::fs::copy(root().join("rules").join(f), rules.join(f)).unwrap();
    }
    let db = Db::sqlite();
    let s = Server::setup(&db, CONFIG, ENV).rules(&rules).start().await;
    let (_, before) = s.get("/v1/rulesets", KEY).await;
    let hash = before["ruleset"].clone();
    assert!(hash.is_string());
    // `acme` lists only the events number; the other playbooks send from numbers it lacks.
    let warnings = before["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("`clinics-main`"));
    let (_, other) = s.get("/v1/rulesets", OTHER_KEY).await;
    assert_eq!(
        other["warnings"],
        json!([]),
        "globex lists no numbers: nothing to check"
    );
    let text = std::fs::read_to_string(rules.join("events.rules")).unwrap();
    std::fs::write(
        rules.join("events.rules"),
        text.replace("city in [", "cty in ["),
    )
    .unwrap();
    let (st, r) = s.post("/v1/rulesets/reload", KEY, &json!({})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r["ruleset"], hash);
    assert!(
        r["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["code"] == "E002"),
        "{r}"
    );
    let (_, after) = s.get("/v1/rulesets", KEY).await;
    assert_eq!(after["ruleset"], hash);
    assert_eq!(after["last_reload"]["ok"], false);
    let (st, a) = s.post("/v1/leads", KEY, &aisha()).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(
        a["decision"]["rules"],
        json!(["goa_options"]),
        "the working rules still decide"
    );
    std::fs::write(
        rules.join("events.rules"),
        text.replace("\"Mumbai\"]", "\"Mumbai\", \"Pune\"]"),
    )
    .unwrap();
    let (st, r) = s.post("/v1/rulesets/reload", KEY, &json!({})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_ne!(r["ruleset"], hash);
}

#[tokio::test]
async fn health_and_readiness() {
    let db = Db::sqlite();
    let s = start(&db).await;
    assert_eq!(
        s.client
            .get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = s.client.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"database": true, "rules": true})
    );
    let r = s.client.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_count_leads_and_decisions_and_the_openapi_document_is_served() {
    let db = Db::sqlite();
    let s = start(&db).await;
    s.post("/v1/leads", KEY, &aisha()).await;
    s.post("/v1/leads", KEY, &json!({"phone": "bad"})).await;
    // A form webhook, then its redelivery: one event stored, so counted once.
    let body = "your_name=Meera+Iyer&mobile=098200%2055555&whatsapp_me=yes";
    let sig = handoff::intake::signature::sign(body.as_bytes(), b"form-secret");
    for _ in 0..2 {
        let r = s
            .client
            .post(s.url("/webhooks/forms/acme/wedding"))
            .header("x-signature-256", &sig)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l == "handoff_webhook_events_total{source=\"form\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE handoff_webhook_events_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "handoff_leads_total{account=\"acme\",channel=\"instagram\",created=\"true\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("handoff_decisions_total{playbook=\"events\",rule=\"goa_options\",outcome=\"template\"} 1"), "{text}");
    assert!(
        text.contains("handoff_intake_errors_total{route=\"/v1/leads\",status=\"422\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("handoff_request_seconds_count{route=\"/v1/leads\"} 2"),
        "{text}"
    );
    assert!(
        !text.contains("919812345678"),
        "no phone numbers in metrics"
    );
    let doc = s.open_json("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/v1/leads"]["post"].is_object());
}

/// The router and the document agree: every operation `/openapi.json`
/// describes is served (never the router's "no such route" or 405), and a
/// path it does not describe is not. The document is generated from the
/// routes themselves, so this holds by construction; the test keeps it so.
#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else_is() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let doc = s.open_json("/openapi.json").await;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{account}", "acme")
            .replace("{form}", "wedding")
            .replace("{id}", "0194c0de-7f3a-7000-8000-000000000001");
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = s
                .client
                .request(method.clone(), s.url(&concrete))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(!text.contains("no such route"), "{method} {path}: {text}");
        }
    }
    assert!(operations >= 23, "{operations} operations");
    for (method, path) in [
        (reqwest::Method::GET, "/v1/leads/x/y"),
        (reqwest::Method::GET, "/v1/nothing"),
        (reqwest::Method::POST, "/webhooks/other/acme"),
    ] {
        let r = s
            .client
            .request(method, s.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["message"], "no such route", "{path}");
    }
    // A method the document does not give a path is refused as such.
    let r = s
        .client
        .delete(s.url("/v1/leads"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(doc["paths"]["/v1/leads"].get("delete").is_none());
}

/// Starts the real binary on a SQLite file in `dir`, with the demo account
/// and `KEY` as its key; returns the process and its base URL.
fn spawn_binary(dir: &std::path::Path) -> (harness::Process, String) {
    let database = format!("sqlite://{}", dir.join("crash.db").display());
    serve_with(
        &["--listen", "127.0.0.1:0", "--database", &database],
        &[("HANDOFF_DEMO_API_KEY", KEY)],
    )
}

#[tokio::test]
async fn an_accepted_lead_survives_a_crash_right_after_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_binary(dir.path());
    let post = async |api: &Api| {
        api.client
            .post(api.url("/v1/leads"))
            .bearer_auth(KEY)
            .header("Idempotency-Key", "crash-1")
            .json(&aisha())
            .send()
            .await
            .unwrap()
    };
    let r = post(&Api::new(base)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Value = r.json().await.unwrap();
    child.0.kill().unwrap(); // SIGKILL: no shutdown, no flush
    child.0.wait().unwrap();
    let (mut child, base) = spawn_binary(dir.path());
    let api = Api::new(base);
    let id = first["lead_id"].as_str().unwrap();
    let (status, lead) = api.get(&format!("/v1/leads/{id}"), KEY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lead["decisions"].as_array().unwrap().len(), 1);
    // The retry after the crash is recognised: still one decision.
    let r = post(&api).await;
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(
        api.lead(KEY, id).await["decisions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // SIGTERM: a graceful stop, exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}

/// Waits until the newest lead matching `q` (all leads when empty) passes
/// `ready`: the webhook worker processes stored events in the background.
async fn wait_for(s: &Server, q: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let lead = async || s.find_lead(KEY, q).await;
    until(Duration::from_secs(5), POLL, lead, |l| {
        !l.is_null() && ready(l)
    })
    .await
    .unwrap_or_else(|_| panic!("no lead for `{q}` got there within 5 s"))
}

/// Waits for a lead matching `q` that has been decided.
async fn wait_for_lead(s: &Server, q: &str) -> Value {
    wait_for(s, q, |lead| {
        lead["decisions"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await
}

#[tokio::test]
async fn meta_verification_answers_the_challenge_only_with_the_token() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let r = s.client.get(s.url("/webhooks/meta/acme?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "1158201444");
    let r = s
        .client
        .get(s.url("/webhooks/meta/acme?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_signed_whatsapp_message_becomes_a_lead_once_and_opens_the_window() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let body = fixture("whatsapp-inbound-text.json");
    let (st, e) = s
        .post_meta("/webhooks/meta/acme", &body, "wrong-secret")
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{e}");
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let sig = handoff::intake::signature::sign(&body, META_SECRET.as_bytes());
    let r = s
        .client
        .post(s.url("/webhooks/meta/acme"))
        .header("X-Hub-Signature-256", sig)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (st, r) = s.post_meta("/webhooks/meta/acme", &body, META_SECRET).await;
    assert_eq!((st, r["new"].clone()), (StatusCode::OK, json!(1)), "{r}");
    // Meta redelivers: stored once. A rotated-out secret still verifies.
    let (st, r) = s
        .post_meta("/webhooks/meta/acme", &body, "old-secret")
        .await;
    assert_eq!((st, r["new"].clone()), (StatusCode::OK, json!(0)), "{r}");
    let lead = wait_for_lead(&s, "919820012345").await;
    assert_eq!(lead["name"], "Aisha Khan");
    assert_eq!(lead["phone"], "+919820012345");
    assert_eq!(lead["channel"], "whatsapp");
    assert_eq!(
        lead["transcript"][0]["text"],
        "Yes please send the Goa options"
    );
    assert_eq!(
        lead["thread"]["last_inbound_at"],
        "2027-01-15T07:43:20.000000Z"
    );
    assert_eq!(
        lead["decisions"].as_array().unwrap().len(),
        1,
        "processed once"
    );
    assert!(lead["identities"]
        .as_array()
        .unwrap()
        .contains(&json!({"kind": "whatsapp", "value": "919820012345"})));
}

#[tokio::test]
async fn stop_on_whatsapp_revokes_the_opt_in() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let mut lead = aisha();
    lead["phone"] = json!("+919820012345");
    s.post("/v1/leads", KEY, &lead).await;
    let body = String::from_utf8(fixture("whatsapp-inbound-text.json"))
        .unwrap()
        .replace("Yes please send the Goa options", " STOP ");
    let (st, _) = s
        .post_meta("/webhooks/meta/acme", body.as_bytes(), META_SECRET)
        .await;
    assert_eq!(st, StatusCode::OK);
    let lead = wait_for(&s, "919820012345", |lead| {
        lead["consents"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    let consents = lead["consents"].as_array().unwrap();
    assert_eq!(consents[1]["granted"], false);
    assert_eq!(consents[1]["source"], "whatsapp");
    let last = lead["decisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["decision"]["rules"], json!(["no_opt_in"]), "{last}");
}

#[tokio::test]
async fn an_instagram_dm_and_the_business_echo_pause_automation() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let (st, r) = s
        .post_meta(
            "/webhooks/meta/acme",
            &fixture("instagram-dm.json"),
            META_SECRET,
        )
        .await;
    assert_eq!(
        (st, r["received"].clone()),
        (StatusCode::OK, json!(2)),
        "{r}"
    );
    let lead = wait_for(&s, "", |lead| {
        lead["transcript"].as_array().is_some_and(|t| t.len() == 2)
    })
    .await;
    let (_, list) = s.get("/v1/leads", KEY).await;
    assert_eq!(
        list["leads"].as_array().unwrap().len(),
        1,
        "the DM and the echo are one person"
    );
    assert_eq!(lead["transcript"][1]["from"], "business");
    assert_eq!(lead["thread"]["state"], "human");
}

#[tokio::test]
async fn a_signed_web_form_is_mapped_and_decided() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let body =
        "your_name=Meera+Iyer&mobile=098200%2055555&city=Goa&event_date=2027-03-14&whatsapp_me=yes";
    let sig = handoff::intake::signature::sign(body.as_bytes(), b"form-secret");
    let send = |sig: String| {
        s.client
            .post(s.url("/webhooks/forms/acme/wedding"))
            .header("x-signature-256", sig)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(
        send("sha256=00".into()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = send(sig.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let lead = wait_for_lead(&s, "Meera").await;
    assert_eq!(lead["phone"], "+919820055555");
    assert_eq!(lead["fields"]["city"], "Goa");
    assert_eq!(lead["channel"], "web_form");
    assert_eq!(lead["consents"][0]["granted"], true, "{lead}");
    assert_eq!(
        lead["decisions"][0]["decision"]["rules"],
        json!(["triage"]),
        "no intent given: triage"
    );
    let r = send(sig).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    let r = s
        .client
        .post(s.url("/webhooks/forms/acme/nope"))
        .body("a=b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_voice_call_report_with_a_spoken_opt_in() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let report = json!({
        "call_id": "call-7f3a",
        "from": "+91 98145 67890",
        "started_at": "2027-01-10T04:10:00Z",
        "transcript": [
            {"speaker": "agent", "text": "May we send the options on WhatsApp?", "at": "2027-01-10T04:13:50Z"},
            {"speaker": "caller", "text": "Yes, WhatsApp is best.", "at": "2027-01-10T04:13:55Z"}
        ],
        "extracted": {"name": "Gurpreet Kaur", "intent": "event_enquiry", "city": "Amritsar", "guests": 800, "event_date": "2027-11-20"},
        "opt_in": {"whatsapp": true, "spoken_at": "2027-01-10T04:13:55Z", "evidence": "Yes, WhatsApp is best."}
    });
    let (st, r) = s.post("/webhooks/voice/acme", KEY, &report).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{r}");
    let (st, _) = s.post("/webhooks/voice/acme", OTHER_KEY, &report).await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "another account's key cannot post here"
    );
    let lead = wait_for_lead(&s, "Gurpreet").await;
    assert_eq!(lead["consents"][0]["granted"], true);
    assert_eq!(lead["consents"][0]["evidence"], "Yes, WhatsApp is best.");
    assert_eq!(lead["transcript"].as_array().unwrap().len(), 2);
    let decision = &lead["decisions"][0]["decision"];
    assert_eq!(decision["rules"][0], "big_event", "{decision}");
    let mut bad = report.clone();
    bad["opt_in"]["evidence"] = json!("words the caller never said");
    let (st, e) = s.post("/webhooks/voice/acme", KEY, &bad).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
}

#[tokio::test]
async fn a_lead_ad_is_fetched_from_the_graph_api_and_mapped() {
    // A stand-in for Graph's `GET /{version}/{leadgen_id}`, answering with Meta's payload.
    let graph = axum::Router::new().route(
        "/v23.0/{id}",
        axum::routing::get(|axum::extract::Path(id): axum::extract::Path<String>, headers: axum::http::HeaderMap| async move {
            let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer page-token");
            if !authorized {
                return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"code": 190, "message": "Invalid OAuth access token"}})));
            }
            if id != "2250000000000001" {
                return (axum::http::StatusCode::NOT_FOUND, axum::Json(json!({"error": {"code": 100}})));
            }
            let body: Value = serde_json::from_slice(&fixture("leadgen-lead.json")).unwrap();
            (axum::http::StatusCode::OK, axum::Json(body))
        }),
    );
    let graph_base = format!("http://{}", listen(graph).await);
    let db = Db::sqlite();
    let s = Server::setup(&db, CONFIG, ENV)
        .config(|c| {
            c.accounts[0].graph.base = graph_base;
            c.accounts[0].graph.page_token = Some(handoff::config::Secret::new("page-token"));
            c.accounts[0].graph.lead_fields = [
                ("which_city_is_your_event_in?", "field:city"),
                ("event_date", "field:event_date"),
                ("whatsapp_updates", "consent:whatsapp"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        })
        .start()
        .await;
    let (st, r) = s
        .post_meta(
            "/webhooks/meta/acme",
            &fixture("leadgen-change.json"),
            META_SECRET,
        )
        .await;
    assert_eq!((st, r["new"].clone()), (StatusCode::OK, json!(1)), "{r}");
    let lead = wait_for_lead(&s, "Rahul").await;
    assert_eq!(lead["phone"], "+919876543210");
    assert_eq!(lead["email"], "rahul.verma@example.com");
    assert_eq!(lead["channel"], "lead_ad");
    assert_eq!(lead["fields"]["city"], "Jaipur");
    assert_eq!(lead["consents"][0]["granted"], true);
}

#[tokio::test]
async fn a_whatsapp_message_for_another_accounts_number_is_refused() {
    let db = Db::sqlite();
    let s = start(&db).await;
    let body = String::from_utf8(fixture("whatsapp-inbound-text.json"))
        .unwrap()
        .replace("106540352242922", "999000111222333");
    let (st, _) = s
        .post_meta("/webhooks/meta/acme", body.as_bytes(), META_SECRET)
        .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "stored and acknowledged: Meta must not redeliver"
    );
    let metrics = async || s.text("/metrics").await;
    until(Duration::from_secs(5), POLL, metrics, |text| {
        text.contains("handoff_webhook_events{state=\"failed\"} 1")
    })
    .await
    .unwrap_or_else(|_| panic!("the event for a foreign number was not refused"));
    let (_, list) = s.get("/v1/leads", KEY).await;
    assert_eq!(
        list["leads"],
        json!([]),
        "no lead from a number this account does not own"
    );
}

#[tokio::test]
async fn meta_reports_a_marketing_opt_out_and_it_is_on_record() {
    let db = Db::sqlite();
    let s = start(&db).await;
    // The person first writes on WhatsApp, so the lead has their WhatsApp ID.
    s.post_meta(
        "/webhooks/meta/acme",
        &fixture("whatsapp-inbound-text.json"),
        META_SECRET,
    )
    .await;
    wait_for_lead(&s, "919820012345").await;
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "user_preferences", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "user_preferences": [{"wa_id": "919820012345", "detail": "User requested to stop marketing messages",
                "category": "marketing_messages", "value": "stop", "timestamp": 1799999500}]
        }}]}]
    }))
    .unwrap();
    let (st, r) = s.post_meta("/webhooks/meta/acme", &body, META_SECRET).await;
    assert_eq!((st, r["new"].clone()), (StatusCode::OK, json!(1)), "{r}");
    let lead = wait_for(&s, "919820012345", |lead| {
        lead["consents"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["channel"] == "whatsapp_marketing"))
    })
    .await;
    let opt_out = lead["consents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "whatsapp_marketing")
        .unwrap()
        .clone();
    assert_eq!(opt_out["granted"], false);
    assert_eq!(
        opt_out["evidence"],
        "User requested to stop marketing messages"
    );
}
