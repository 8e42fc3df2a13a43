//! Delivery over real HTTP: `handoff serve` on 127.0.0.1:0 in sandbox mode
//! (its Cloud API simulator mounted at `/sandbox/{account}`), the real
//! Cloud API client sending to it, and its signed status webhooks coming
//! back to the server. Times are shortened through `[delivery]`.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::{hook, until, Db, Hook, Server, POLL};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const KEY: &str = "hk_delivery_key";
const META_SECRET: &str = "delivery-app-secret";
const CRM_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long a lead or the sandbox gets to come where a test waits for it.
const PATIENCE: Duration = Duration::from_secs(20);

/// The configuration, with shortened delivery times; `account` goes into
/// the account's section.
fn config(account: &str) -> String {
    format!(
        r#"[[accounts]]
id = "acme"
api_keys = ["env:KEY"]
{account}
[accounts.routing]
default = "events"
[accounts.meta]
app_secrets = ["env:META_SECRET"]

[delivery]
backoff_seconds = 0.05
max_backoff_seconds = 0.2
lease_seconds = 2
grace_seconds = 3
timeout_seconds = 1
pair_interval_seconds = 0.2

"#
    )
}

/// The server on `db`, its account's section with `account`: in sandbox
/// mode, as no number has a token.
async fn start(db: &Db, account: &str) -> Server {
    let env = [
        ("KEY", KEY),
        ("META_SECRET", META_SECRET),
        ("CRM_SECRET", CRM_SECRET),
    ];
    Server::setup(db, &config(account), &env)
        .config(|c| assert!(c.delivery.sandbox, "no tokens: sandbox mode"))
        .start()
        .await
}

/// Makes the account's sandbox misbehave as `fault` says.
async fn fault(s: &Server, fault: Value) {
    let r = s
        .client
        .post(s.url("/sandbox/acme/_sandbox/faults"))
        .bearer_auth(KEY)
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

/// Waits until the sandbox has accepted `n` sends.
async fn wait_accepted(s: &Server, n: usize) -> Value {
    let sent = async || s.sandbox(KEY, "acme").await;
    until(PATIENCE, POLL, sent, |m| {
        m["accepted"].as_u64() == Some(n as u64)
    })
    .await
    .unwrap_or_else(|m| panic!("the sandbox never got {n} sends: {m:#}"))
}

/// A Goa enquiry with an opt-in: the events playbook's `goa_options`.
fn goa_lead(name: &str, phone: &str) -> Value {
    json!({
        "name": name,
        "phone": phone,
        "channel": "instagram",
        "intent": "event_enquiry",
        "consent": {"whatsapp": true},
        "fields": {"city": "Goa", "event_date": "2027-03-14", "guests": 120},
        "transcript": [{"channel": "instagram", "from": "lead", "text": "Planning a Goa event on March 14", "at": "2026-11-20T04:10:00Z"}]
    })
}

/// The lead's WhatsApp messages, oldest first (notifications left out).
fn whatsapp(lead: &Value) -> Vec<Value> {
    lead["outbox"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter(|m| m["kind"] == "whatsapp")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn outbox_state(lead: &Value, i: usize) -> (String, String) {
    let messages = whatsapp(lead);
    let o = messages.get(i).cloned().unwrap_or(Value::Null);
    (
        o["state"].as_str().unwrap_or("").to_string(),
        o["delivery"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn a_template_is_sent_once_and_its_statuses_come_back_signed() {
    let db = Db::sqlite();
    let s = start(&db, "").await;
    let (st, r) = s
        .post("/v1/leads", KEY, &goa_lead("Aisha Khan", "+919812345678"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    assert_eq!(r["decision"]["handoff"]["outcome"], "template");
    let id = r["lead_id"].as_str().unwrap();
    let m = wait_accepted(&s, 1).await;
    let sent = &m["messages"][0];
    assert_eq!(sent["to"], "919812345678");
    assert_eq!(sent["type"], "template");
    assert_eq!(sent["body"]["template"]["name"], "event_options");
    assert_eq!(
        sent["body"]["template"]["components"][0]["parameters"],
        json!([
            {"type": "text", "text": "Aisha"},
            {"type": "text", "text": "March 14"},
            {"type": "text", "text": "Goa"}
        ])
    );
    // The status webhooks (signed with the account's app secret) reach the
    // server and move the message on: Meta's ID, then delivered.
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| {
            outbox_state(l, 0) == ("sent".into(), "delivered".into())
        })
        .await;
    let messages = whatsapp(&lead);
    assert_eq!(sent["callback"], messages[0]["id"]);
    assert_eq!(messages[0]["message_id"], sent["wamid"]);
    assert_eq!(messages[0]["attempts"], 1);
    // Meta's ID for the user is now one of the lead's identities.
    assert!(lead["identities"]
        .as_array()
        .unwrap()
        .contains(&json!({"kind": "whatsapp", "value": "919812345678"})));
    // Nothing more is sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.sandbox(KEY, "acme").await["accepted"], 1);
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains("handoff_outbox_messages{kind=\"whatsapp\",state=\"sent\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("handoff_outbox_attempts_total{kind=\"whatsapp\",result=\"sent\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("handoff_whatsapp_statuses_total{status=\"delivered\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_rate_limit_then_success_sends_one_message() {
    let db = Db::sqlite();
    let s = start(&db, "").await;
    fault(&s, json!({"code": 130429, "count": 2, "retry_after": 1})).await;
    let (_, r) = s
        .post("/v1/leads", KEY, &goa_lead("Rohan", "+919800000011"))
        .await;
    let id = r["lead_id"].as_str().unwrap();
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| outbox_state(l, 0).0 == "sent")
        .await;
    let m = s.sandbox(KEY, "acme").await;
    assert_eq!(m["accepted"], 1, "{m:#}");
    assert_eq!(m["rejected"]["130429"], 2, "{m:#}");
    assert_eq!(whatsapp(&lead)[0]["attempts"], 3);
}

#[tokio::test]
async fn a_long_outage_then_recovery_delivers_every_message_once() {
    let db = Db::sqlite();
    let s = start(&db, "").await;
    // Meta answers 5xx to the next 60 sends (an outage, with backoff capped
    // at 0.2 s instead of minutes), then recovers.
    fault(&s, json!({"http_status": 503, "count": 60})).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let (st, r) = s
            .post(
                "/v1/leads",
                KEY,
                &goa_lead(&format!("Lead {i}"), &format!("+9198000001{i:02}")),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{r}");
        ids.push(r["lead_id"].as_str().unwrap().to_string());
    }
    let m = wait_accepted(&s, 10).await;
    let callbacks: BTreeSet<String> = m["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["callback"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(callbacks.len(), 10, "each message once");
    assert_eq!(m["rejected_total"], 60);
    for id in &ids {
        s.wait_lead(KEY, id, PATIENCE, |l| outbox_state(l, 0).0 == "sent")
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.sandbox(KEY, "acme").await["accepted"], 10);
}

#[tokio::test]
async fn a_session_message_the_closed_window_refuses_goes_as_the_template() {
    let db = Db::sqlite();
    let s = start(&db, "").await;
    // Our records say she wrote on WhatsApp a minute ago (an inbound webhook
    // straight to the server), so the rules choose a session message; the
    // sandbox never saw her write, so, as Meta would, it answers 131047.
    let now = chrono::Utc::now().timestamp();
    let inbound = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Meera"}, "wa_id": "919800000021"}],
        "messages": [{"from": "919800000021", "id": "wamid.inbound-1", "timestamp": now.to_string(), "type": "text", "text": {"body": "Hi, about Goa"}}]
    }}]}]});
    let body = serde_json::to_vec(&inbound).unwrap();
    let (st, _) = s.post_meta("/webhooks/meta/acme", &body, META_SECRET).await;
    assert_eq!(st, StatusCode::OK);
    // Wait for the worker to store the inbound message, then the enquiry.
    let lead = async || s.find_lead(KEY, "919800000021").await;
    let window = until(Duration::from_secs(5), POLL, lead, |lead| {
        lead["thread"]["last_inbound_at"].is_string()
    })
    .await;
    assert!(window.is_ok(), "the inbound message opened the window");
    let (st, r) = s
        .post("/v1/leads", KEY, &goa_lead("Meera", "+919800000021"))
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["decision"]["handoff"]["outcome"], "session", "{r:#}");
    let id = r["lead_id"].as_str().unwrap();
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| {
            whatsapp(l).len() == 2 && outbox_state(l, 1).0 == "sent"
        })
        .await;
    let messages = whatsapp(&lead);
    assert_eq!(messages[0]["state"], "failed");
    assert_eq!(messages[0]["error_code"], 131047);
    assert_eq!(messages[1]["replaces"], messages[0]["id"]);
    assert_eq!(messages[1]["payload"]["template"]["name"], "event_options");
    let m = s.sandbox(KEY, "acme").await;
    assert_eq!(m["accepted"], 1);
    assert_eq!(m["rejected"]["131047"], 1);
    assert_eq!(m["messages"][0]["type"], "template");
    assert!(
        lead["thread"]["flag"].is_null(),
        "the fallback reached her: nothing for operators"
    );
}

#[tokio::test]
async fn a_user_who_wrote_in_through_the_sandbox_gets_the_session_message() {
    let db = Db::sqlite();
    let s = start(&db, "").await;
    // The sandbox plays her writing in to the events number: its window
    // opens and its signed webhook reaches the server, which opens ours.
    let number = handoff::server::delivery::sandbox_number_id("events-main");
    let inbound =
        json!({"phone_number_id": number, "from": "919800000031", "name": "Priya", "text": "Hi!"});
    s.play(KEY, "acme", "inbound", &inbound).await;
    let list = async || s.json("/v1/leads?q=919800000031", KEY).await;
    let found = until(Duration::from_secs(5), POLL, list, |list| {
        list["leads"].as_array().and_then(|l| l.first()).is_some()
    })
    .await;
    assert!(found.is_ok(), "the played message became a lead");
    let (_, r) = s
        .post("/v1/leads", KEY, &goa_lead("Priya", "+919800000031"))
        .await;
    assert_eq!(r["decision"]["handoff"]["outcome"], "session", "{r:#}");
    let id = r["lead_id"].as_str().unwrap();
    s.wait_lead(KEY, id, PATIENCE, |l| {
        outbox_state(l, 0) == ("sent".into(), "delivered".into())
    })
    .await;
    let m = s.sandbox(KEY, "acme").await;
    assert_eq!(m["accepted"], 1);
    assert_eq!(m["messages"][0]["type"], "text");
}

#[tokio::test]
async fn an_undeliverable_message_fails_and_flags_the_thread() {
    let db = Db::sqlite();
    let s = start(&db, "").await;
    // Accepted, then reported failed: the user is not on WhatsApp.
    fault(&s, json!({"code": 131026, "count": 1, "as_status": true})).await;
    let (_, r) = s
        .post("/v1/leads", KEY, &goa_lead("Dev", "+919800000041"))
        .await;
    let id = r["lead_id"].as_str().unwrap();
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| outbox_state(l, 0).0 == "failed")
        .await;
    assert_eq!(whatsapp(&lead)[0]["error_code"], 131026);
    assert_eq!(lead["thread"]["flag"], "delivery_failed");
    // A permanent refusal at send time fails too, and is never retried.
    fault(&s, json!({"code": 131026, "count": 1})).await;
    let (_, r) = s
        .post("/v1/leads", KEY, &goa_lead("Isha", "+919800000042"))
        .await;
    let id = r["lead_id"].as_str().unwrap();
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| outbox_state(l, 0).0 == "failed")
        .await;
    assert_eq!(whatsapp(&lead)[0]["attempts"], 1);
    assert_eq!(lead["thread"]["flag"], "delivery_failed");
}

#[tokio::test]
async fn a_message_waiting_when_a_person_takes_over_is_never_sent() {
    let db = Db::sqlite();
    let s = start(&db, "").await;
    // Meta is down for a while, so the message waits in the outbox...
    fault(&s, json!({"http_status": 503, "count": 5})).await;
    let (_, r) = s
        .post("/v1/leads", KEY, &goa_lead("Nikhil", "+919800000051"))
        .await;
    let id = r["lead_id"].as_str().unwrap();
    // ...and a closer takes the thread over meanwhile.
    let (st, _) = s
        .post(&format!("/v1/leads/{id}/takeover"), KEY, &json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| outbox_state(l, 0).0 == "cancelled")
        .await;
    assert!(whatsapp(&lead)[0]["error"]
        .as_str()
        .unwrap()
        .contains("took the thread over"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.sandbox(KEY, "acme").await["accepted"], 0);
}

#[tokio::test]
async fn a_send_that_times_out_waits_for_its_status_and_is_not_sent_twice() {
    let db = Db::sqlite();
    let s = start(&db, "").await;
    // The sandbox holds its answer past the client's 1 s timeout but accepts
    // the message: the send may have reached Meta, so it is not repeated;
    // the `sent` status carrying its outbox ID settles it.
    fault(&s, json!({"delay_ms": 1500, "count": 1})).await;
    let (_, r) = s
        .post("/v1/leads", KEY, &goa_lead("Ananya", "+919800000061"))
        .await;
    let id = r["lead_id"].as_str().unwrap();
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| {
            outbox_state(l, 0) == ("sent".into(), "delivered".into())
        })
        .await;
    assert!(whatsapp(&lead)[0]["message_id"].is_string());
    // Past the grace period: still one send.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(s.sandbox(KEY, "acme").await["accepted"], 1);
    assert_eq!(whatsapp(&s.lead(KEY, id).await)[0]["attempts"], 1);
}

/// A CRM on loopback: verifies each webhook's signature and answers from
/// `answers` (then 200).
async fn crm(answers: Vec<u16>) -> Hook {
    hook("/hook", CRM_SECRET, answers).await
}

/// A lead without a WhatsApp opt-in: `no_opt_in` fires, with `notify "crm"`.
fn caller(phone: &str) -> Value {
    json!({"name": "Kabir", "phone": phone, "channel": "voice", "intent": "event_enquiry",
           "fields": {"city": "Pune", "event_date": "2027-05-02"}})
}

#[tokio::test]
async fn the_crm_gets_the_signed_lead_record_and_a_retry_keeps_its_webhook_id() {
    let receiver = crm(vec![503]).await;
    let db = Db::sqlite();
    let account = format!(
        "lead_updates = [\"crm\"]\n[accounts.endpoints.crm]\nurl = \"{}\"\nsecret = \"env:CRM_SECRET\"\nallow_private = true\n",
        receiver.url
    );
    let s = start(&db, &account).await;
    let (st, r) = s.post("/v1/leads", KEY, &caller("+919800000071")).await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    assert_eq!(r["decision"]["rules"], json!(["no_opt_in"]));
    let id = r["lead_id"].as_str().unwrap();
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| {
            let o = l["outbox"].as_array().unwrap();
            o.len() == 2 && o.iter().all(|m| m["state"] == "sent")
        })
        .await;
    let seen = receiver.received();
    // Three requests: the first refused with a 503 and retried under the same ID.
    assert_eq!(seen.len(), 3, "{seen:?}");
    // The refused one came again with the same webhook-id.
    let retried = seen.iter().filter(|s| s.id == seen[0].id).count();
    assert_eq!(retried, 2, "a retry keeps its webhook-id: {seen:?}");
    let kinds: BTreeSet<&str> = seen.iter().map(|s| s.kind()).collect();
    assert_eq!(kinds, BTreeSet::from(["lead.notify", "lead.updated"]));
    assert!(
        seen.iter().all(|s| s.subject() == id),
        "the lead record itself"
    );
    let ids: BTreeSet<&str> = lead["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(seen.iter().all(|s| ids.contains(s.id.as_str())));
}

#[tokio::test]
async fn an_endpoint_that_answers_410_is_disabled_and_a_loopback_one_is_refused() {
    let gone = crm(vec![410]).await;
    let db = Db::sqlite();
    let account = format!(
        "[accounts.endpoints.crm]\nurl = \"{}\"\nsecret = \"env:CRM_SECRET\"\nallow_private = true\n",
        gone.url
    );
    let s = start(&db, &account).await;
    let (_, r) = s.post("/v1/leads", KEY, &caller("+919800000081")).await;
    let id = r["lead_id"].as_str().unwrap();
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| l["outbox"][0]["state"] == "failed")
        .await;
    assert!(lead["outbox"][0]["error"].as_str().unwrap().contains("410"));
    // Disabled: the next notification fails without a request.
    let (_, r) = s.post("/v1/leads", KEY, &caller("+919800000082")).await;
    let id = r["lead_id"].as_str().unwrap();
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| l["outbox"][0]["state"] == "failed")
        .await;
    assert!(lead["outbox"][0]["error"]
        .as_str()
        .unwrap()
        .contains("disabled"));
    assert_eq!(gone.received().len(), 1);

    // Without `allow_private`, a loopback address is never called.
    let private = crm(vec![]).await;
    let db = Db::sqlite();
    let account = format!(
        "[accounts.endpoints.crm]\nurl = \"{}\"\nsecret = \"env:CRM_SECRET\"\n",
        private.url
    );
    let s = start(&db, &account).await;
    let (_, r) = s.post("/v1/leads", KEY, &caller("+919800000083")).await;
    let id = r["lead_id"].as_str().unwrap();
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| l["outbox"][0]["state"] == "failed")
        .await;
    assert!(
        lead["outbox"][0]["error"]
            .as_str()
            .unwrap()
            .contains("allow_private"),
        "{:#}",
        lead["outbox"][0]
    );
    assert_eq!(private.received().len(), 0);
}

#[tokio::test]
async fn a_user_who_stopped_marketing_messages_is_on_record_as_opted_out() {
    let db = Db::sqlite();
    let s = start(&db, "").await;
    // Accepted, then reported failed with 131050 (the user stopped
    // marketing messages), as Meta often does.
    fault(&s, json!({"code": 131050, "count": 1, "as_status": true})).await;
    let (_, r) = s
        .post("/v1/leads", KEY, &goa_lead("Maria", "+919800000091"))
        .await;
    let id = r["lead_id"].as_str().unwrap();
    let lead = s
        .wait_lead(KEY, id, PATIENCE, |l| outbox_state(l, 0).0 == "failed")
        .await;
    assert_eq!(whatsapp(&lead)[0]["error_code"], 131050);
    let opt_out = lead["consents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "whatsapp_marketing")
        .cloned()
        .unwrap_or_else(|| panic!("no marketing opt-out: {:#}", lead["consents"]));
    assert_eq!(opt_out["granted"], false);
    assert_eq!(opt_out["source"], "whatsapp 131050");
}

#[tokio::test]
async fn a_lead_whatsapp_cannot_reach_goes_to_the_fallback_endpoint_and_the_thread_is_flagged() {
    let sms = crm(vec![]).await;
    let db = Db::sqlite();
    let account = format!(
        "fallback = [\"sms\"]\n[accounts.endpoints.sms]\nurl = \"{}\"\nsecret = \"env:CRM_SECRET\"\nallow_private = true\n",
        sms.url
    );
    let s = start(&db, &account).await;
    // Refused at send time: not on WhatsApp.
    fault(&s, json!({"code": 131026, "count": 1})).await;
    let (_, r) = s
        .post("/v1/leads", KEY, &goa_lead("Dev", "+919800000091"))
        .await;
    let refused = r["lead_id"].as_str().unwrap().to_string();
    // Accepted, then reported failed by a status webhook: the user stopped
    // marketing messages.
    fault(&s, json!({"code": 131050, "count": 1, "as_status": true})).await;
    let (_, r) = s
        .post("/v1/leads", KEY, &goa_lead("Isha", "+919800000092"))
        .await;
    let blocked = r["lead_id"].as_str().unwrap().to_string();
    for id in [&refused, &blocked] {
        let lead = s
            .wait_lead(KEY, id, PATIENCE, |l| {
                l["outbox"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|o| o["kind"] == "notify" && o["state"] == "sent")
            })
            .await;
        assert_eq!(lead["thread"]["flag"], "delivery_failed");
    }
    let seen = sms.received();
    let got: BTreeSet<(String, String)> = seen
        .iter()
        .map(|s| (s.kind().to_string(), s.subject().to_string()))
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            ("lead.undeliverable".to_string(), refused.clone()),
            ("lead.undeliverable".to_string(), blocked.clone())
        ]),
        "one signed webhook per lead: {seen:?}"
    );
    // A lead WhatsApp delivers to is not sent to the fallback.
    let (_, r) = s
        .post("/v1/leads", KEY, &goa_lead("Ok", "+919800000093"))
        .await;
    let fine = r["lead_id"].as_str().unwrap().to_string();
    s.wait_lead(KEY, &fine, PATIENCE, |l| {
        outbox_state(l, 0).1 == "delivered"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sms.received().len(), 2);
}
