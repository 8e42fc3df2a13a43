//! One input policy at every entry point, on both stores: what the API, the
//! form and voice webhooks and the sandbox's control routes refuse, that a
//! refusal is the API's JSON error shape and changes no row, and that a
//! reused idempotency key, form submission ID or `call_id` with another
//! request is refused rather than answered as a replay.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::{answer, databases, Db, Server};
use serde_json::{json, Value};

const KEY: &str = "hk_validation_key";
const OTHER_KEY: &str = "hk_validation_other";

const CONFIG: &str = r#"
[[accounts]]
id = "acme"
api_keys = ["env:KEY"]
[accounts.routing]
default = "events"
[[accounts.whatsapp]]
key = "events-main"
phone_number_id = "106540352242922"
[accounts.forms.wedding]
playbook = "events"
[accounts.forms.wedding.fields]
your_name = "name"
mobile = "phone"
city = "field:city"

[[accounts]]
id = "globex"
api_keys = ["env:OTHER"]
playbooks = ["clinics"]
"#;

async fn start(db: &Db) -> Server {
    Server::start(db, CONFIG, &[("KEY", KEY), ("OTHER", OTHER_KEY)]).await
}

fn aisha() -> Value {
    json!({
        "name": "Aisha Khan",
        "phone": "+91 98123 45678",
        "channel": "instagram",
        "intent": "event_enquiry",
        "fields": {"city": "Goa", "event_date": "2027-03-14", "guests": 120},
        "transcript": [{"channel": "instagram", "from": "lead", "text": "Hi! A wedding in Goa.", "at": "2026-11-20T04:10:00Z"}]
    })
}

fn call(call_id: &str, name: &str) -> Value {
    json!({
        "call_id": call_id,
        "from": "+91 98145 67890",
        "started_at": "2027-01-10T04:10:00Z",
        "transcript": [{"speaker": "caller", "text": "Yes, WhatsApp is best.", "at": "2027-01-10T04:13:55Z"}],
        "extracted": {"name": name, "intent": "event_enquiry"}
    })
}

async fn post_lead(s: &Server, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut r = s
        .client
        .post(s.url("/v1/leads"))
        .bearer_auth(KEY)
        .json(body);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    answer(r.send().await.unwrap()).await
}

async fn post_form(
    s: &Server,
    content_type: &str,
    body: Vec<u8>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut r = s
        .client
        .post(s.url("/webhooks/forms/acme/wedding"))
        .header("content-type", content_type)
        .body(body);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    answer(r.send().await.unwrap()).await
}

async fn post_call(s: &Server, body: &Value) -> (u16, Value) {
    answer(
        s.client
            .post(s.url("/webhooks/voice/acme"))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The error body's code and field, after checking its shape.
fn error(body: &Value) -> (String, String) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body:#}"
    );
    (
        e["code"].as_str().unwrap_or_default().to_string(),
        e["at"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn control_characters_and_overlong_text_are_refused_everywhere_and_store_nothing() {
    for db in databases().await {
        let s = start(&db).await;
        let before = db.counts().await;
        let mut cases: Vec<(&str, Value, &str)> = Vec::new();
        let mut nul_field = aisha();
        nul_field["fields"]["city"] = json!("Go\u{0}a");
        cases.push(("NUL in a field", nul_field, "fields.city"));
        let mut nul_tag = aisha();
        nul_tag["tags"] = json!(["vip", "x\u{0}"]);
        cases.push(("NUL in a tag", nul_tag, "tags[1]"));
        let mut nul_line = aisha();
        nul_line["transcript"][0]["text"] = json!("hi\u{0}");
        cases.push(("NUL in a transcript line", nul_line, "transcript[0].text"));
        let mut far = aisha();
        far["transcript"][0]["at"] = json!("+262142-01-01T00:00:00Z");
        cases.push(("a time past year 9999", far, "transcript[0].at"));
        let mut long = aisha();
        long["name"] = json!("a".repeat(100_000));
        cases.push(("a 100,000-character name", long, "name"));
        let mut deep = aisha();
        deep["fields"]["venue"] = json!([[[["too deep"]]]]);
        cases.push(("fields nested too deep", deep, "fields.venue[0][0][0]"));
        for (what, body, at) in cases {
            let (status, body) = post_lead(&s, &body, None).await;
            assert_eq!(status, 422, "{}: {what}: {body:#}", db.name());
            assert_eq!(
                error(&body),
                ("invalid".into(), at.into()),
                "{}: {what}",
                db.name()
            );
        }

        // The form webhook: NUL, and a name too long to be one.
        for (what, name, at) in [
            ("NUL", "Aisha\u{0}".to_string(), "name"),
            ("100,000 characters", "a".repeat(100_000), "name"),
        ] {
            let body = json!({"your_name": name, "mobile": "+919812345678", "city": "Goa"});
            let (status, body) =
                post_form(&s, "application/json", body.to_string().into_bytes(), None).await;
            assert_eq!(status, 422, "{}: form {what}: {body:#}", db.name());
            assert_eq!(error(&body), ("invalid".into(), at.into()));
        }
        // Percent-encoded bytes that are not UTF-8 are refused, not patched.
        let (status, body) = post_form(
            &s,
            "application/x-www-form-urlencoded",
            b"your_name=A%FFisha&mobile=%2B919812345678".to_vec(),
            None,
        )
        .await;
        assert_eq!(status, 400, "{body:#}");
        assert_eq!(error(&body).0, "bad_request");
        // A form sent as neither JSON nor form encoding.
        let (status, body) = post_form(&s, "text/plain", b"your_name=Aisha".to_vec(), None).await;
        assert_eq!(status, 415, "{body:#}");
        assert_eq!(error(&body).0, "unsupported_media_type");

        // The voice webhook: NUL in the caller's name, and text/plain.
        let (status, body) = post_call(&s, &call("call-nul", "Gur\u{0}preet")).await;
        assert_eq!(status, 422, "{}: {body:#}", db.name());
        assert_eq!(error(&body), ("invalid".into(), "name".into()));
        let (status, body) = answer(
            s.client
                .post(s.url("/webhooks/voice/acme"))
                .bearer_auth(KEY)
                .header("content-type", "text/plain")
                .body(call("call-plain", "Gurpreet").to_string())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 415, "{body:#}");
        // A JSON route without a content type.
        let (status, body) = answer(
            s.client
                .post(s.url("/v1/leads"))
                .bearer_auth(KEY)
                .body(aisha().to_string())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 415, "{body:#}");

        assert_eq!(
            db.counts().await,
            before,
            "{}: a refusal stored something",
            db.name()
        );

        // What passes the policy stores on both databases: multi-line text,
        // tabs and non-Latin scripts.
        let mut fine = aisha();
        fine["fields"]["notes"] = json!("Line one\r\nLine two\twith a tab, and देवनागरी");
        let (status, body) = post_lead(&s, &fine, None).await;
        assert_eq!(status, 201, "{}: {body:#}", db.name());
    }
}

#[tokio::test]
async fn a_reused_key_with_another_request_is_refused_and_the_same_request_replays() {
    for db in databases().await {
        let s = start(&db).await;
        let (status, first) = post_lead(&s, &aisha(), Some("lead-1")).await;
        assert_eq!(status, 201, "{first:#}");
        let (status, again) = post_lead(&s, &aisha(), Some("lead-1")).await;
        assert_eq!(status, 201, "the same request replays its first answer");
        assert_eq!(again, first);
        let before = db.counts().await;
        let mut other = aisha();
        other["name"] = json!("Priya Nair");
        other["phone"] = json!("+91 98000 00001");
        let (status, body) = post_lead(&s, &other, Some("lead-1")).await;
        assert_eq!(status, 422, "{}: {body:#}", db.name());
        assert_eq!(
            error(&body),
            ("idempotency_key_reused".into(), "Idempotency-Key".into())
        );
        assert_eq!(
            db.counts().await,
            before,
            "{}: the second lead was stored",
            db.name()
        );

        // A form submission ID.
        let form = |name: &str| {
            json!({"your_name": name, "mobile": "+919812345678", "city": "Goa"})
                .to_string()
                .into_bytes()
        };
        let (status, body) = post_form(&s, "application/json", form("Aisha"), Some("sub-1")).await;
        assert_eq!(
            (status, &body["duplicate"]),
            (202, &json!(false)),
            "{body:#}"
        );
        let (status, body) = post_form(&s, "application/json", form("Aisha"), Some("sub-1")).await;
        assert_eq!(
            (status, &body["duplicate"]),
            (202, &json!(true)),
            "{body:#}"
        );
        let before = db.counts().await;
        let (status, body) =
            post_form(&s, "application/json", form("Someone Else"), Some("sub-1")).await;
        assert_eq!(status, 422, "{body:#}");
        assert_eq!(error(&body).0, "idempotency_key_reused");

        // A call report's `call_id`.
        let (status, _) = post_call(&s, &call("call-1", "Gurpreet Kaur")).await;
        assert_eq!(status, 202);
        let (status, body) = post_call(&s, &call("call-1", "Gurpreet Kaur")).await;
        assert_eq!((status, &body["duplicate"]), (202, &json!(true)));
        let (status, body) = post_call(&s, &call("call-1", "Harpreet Singh")).await;
        assert_eq!(status, 422, "{body:#}");
        assert_eq!(
            error(&body),
            ("idempotency_key_reused".into(), "call_id".into())
        );
        // The call was new when the counts were taken; only it was added.
        let after = db.counts().await;
        assert_eq!(
            after["webhook_events"],
            before["webhook_events"] + 1,
            "{}",
            db.name()
        );
    }
}

#[tokio::test]
async fn malformed_paths_and_queries_get_the_json_error_shape() {
    let dbs = databases().await;
    let s = start(&dbs[0]).await;
    for (path, code) in [
        ("/v1/threads?limit=abc", "bad_request"),
        ("/v1/leads/%FF", "bad_request"),
        ("/v1/no-such-route", "not_found"),
    ] {
        let r = s
            .client
            .get(s.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        let (_, body) = answer(r).await;
        assert_eq!(error(&body).0, code, "{path}: {body:#}");
    }
    let r = s
        .client
        .delete(s.url("/v1/leads"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"));
    let (_, body) = answer(r).await;
    assert_eq!(error(&body).0, "method_not_allowed");
}

#[tokio::test]
async fn the_sandbox_control_routes_take_the_accounts_key() {
    let dbs = databases().await;
    let s = start(&dbs[0]).await;
    let mut lead = aisha();
    lead["consent"] = json!({"whatsapp": true, "evidence": "Ticked 'Message me on WhatsApp'"});
    let (status, _) = post_lead(&s, &lead, None).await;
    assert_eq!(status, 201);
    let messages = s.url("/sandbox/acme/_sandbox/messages");
    let inbound = s.url("/sandbox/acme/_sandbox/inbound");
    let forged =
        json!({"phone_number_id": "106540352242922", "from": "919812345678", "text": "STOP"});
    // No key, and another account's key: nothing shown, nothing played.
    for key in [None, Some(OTHER_KEY)] {
        let mut get = s.client.get(&messages);
        let mut post = s.client.post(&inbound).json(&forged);
        if let Some(k) = key {
            get = get.bearer_auth(k);
            post = post.bearer_auth(k);
        }
        let (status, body) = answer(get.send().await.unwrap()).await;
        assert!(status == 401 || status == 404, "{key:?}: {status} {body:#}");
        assert!(body.get("messages").is_none(), "{body:#}");
        let (status, _) = answer(post.send().await.unwrap()).await;
        assert!(status == 401 || status == 404, "{key:?}: {status}");
    }
    // The account's own key sees what its buyers were sent.
    let start = std::time::Instant::now();
    loop {
        let (status, body) = answer(
            s.client
                .get(&messages)
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body:#}");
        if body["accepted"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(start.elapsed().as_secs() < 20, "nothing was sent: {body:#}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Nothing the forged requests played reached the lead.
    let (_, leads) = answer(
        s.client
            .get(s.url("/v1/leads?q=919812345678"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!leads.to_string().contains("STOP"), "{leads:#}");
}
