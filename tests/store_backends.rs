//! The store's scenarios against every backend: SQLite always, PostgreSQL
//! when `HANDOFF_TEST_POSTGRES_URL` names a server (each test in a fresh
//! schema of its own, dropped afterwards, so tests run in parallel). The same
//! calls must give the same answers on both. The PostgreSQL-only tests at the
//! end open two stores on one schema, as two instances would, and race them.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use chrono::Utc;
use handoff::intake::DeliveryStatus;
use handoff::store::{
    ConsentRecord, DecisionRecord, LeadEvent, LeadState, OutboxKind, Recorded, SendOutcome,
    StatusRecord, Store, WebhookSource,
};
use harness::{databases, Db};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(600);
const MAX_AGE: Duration = Duration::from_secs(86_400);
static NO_FALLBACKS: std::collections::BTreeMap<String, Vec<String>> =
    std::collections::BTreeMap::new();

fn person(phone: &str, name: &str) -> LeadEvent {
    LeadEvent {
        identities: vec![("phone".into(), phone.into())],
        name: Some(name.into()),
        phone: Some(phone.into()),
        channel: Some("instagram".into()),
        intent: Some("event_enquiry".into()),
        fields: json!({"city": "Goa"}).as_object().unwrap().clone(),
        tags: vec!["wedding".into()],
        consent: Some(ConsentRecord {
            channel: "whatsapp".into(),
            granted: true,
            source: "api".into(),
            at: Utc::now(),
            evidence: Some("ticked the box".into()),
        }),
        ..LeadEvent::default()
    }
}

/// A session message with its approved template, as the engine queues one.
fn message(phone: &str) -> (OutboxKind, Value) {
    (
        OutboxKind::Whatsapp,
        json!({
            "outcome": "session", "to": phone, "text": "Hi! About your event",
            "template": {"name": "event_followup", "language": "en", "params": ["Aisha"]},
        }),
    )
}

fn decision(outbox: Vec<(OutboxKind, Value)>) -> DecisionRecord {
    DecisionRecord {
        playbook: "events".into(),
        ruleset_hash: "abc123".into(),
        rules: vec!["goa_weddings".into()],
        decision: json!({"outcome": "session"}),
        trace: json!([]),
        outbox,
        ..DecisionRecord::default()
    }
}

/// Records `event`, deciding with `record`; returns the lead ID and what
/// the decision saw.
async fn record(
    store: &Store,
    event: LeadEvent,
    record: DecisionRecord,
) -> (Recorded, Option<LeadState>) {
    let seen: Arc<Mutex<Option<LeadState>>> = Arc::default();
    let saw = seen.clone();
    let recorded = store
        .record("acme", event, move |state| {
            *saw.lock().unwrap() = Some(state.clone());
            record
        })
        .await
        .unwrap();
    let state = seen.lock().unwrap().take();
    (recorded, state)
}

fn lead_id(r: &Recorded) -> String {
    match r {
        Recorded::New { lead_id, .. } => lead_id.clone(),
        Recorded::Replay { response } => response["lead_id"].as_str().unwrap().to_string(),
        Recorded::KeyReused => panic!("the key was reused with another event"),
    }
}

async fn lead(store: &Store, id: &str) -> Value {
    store
        .lead("acme", id)
        .await
        .unwrap()
        .expect("the lead exists")
        .to_value()
}

#[tokio::test]
async fn a_new_lead_then_a_known_one_reach_the_same_lead() {
    for db in databases().await {
        let store = db.open().await;
        let (first, state) = record(
            &store,
            person("+919800000001", "Aisha"),
            decision(vec![message("+919800000001")]),
        )
        .await;
        let state = state.unwrap();
        assert!(state.created, "{}", db.name());
        assert_eq!(state.lead.name.as_deref(), Some("Aisha"));
        assert!(state.lead.consent.whatsapp);
        let id = lead_id(&first);

        let mut later = person("+919800000001", "Aisha K");
        later.fields = json!({"guests": 120, "city": null})
            .as_object()
            .unwrap()
            .clone();
        later.tags = vec!["vip".into(), "wedding".into()];
        later.consent = None;
        let (second, state) = record(&store, later, decision(Vec::new())).await;
        let state = state.unwrap();
        assert_eq!(lead_id(&second), id, "{}", db.name());
        assert!(!state.created);
        assert_eq!(state.lead.name.as_deref(), Some("Aisha K"));
        assert_eq!(state.lead.fields.get("guests"), Some(&json!(120)));
        assert_eq!(state.lead.fields.get("city"), None, "a null clears a field");
        assert_eq!(state.lead.tags, vec!["wedding", "vip"]);
        assert!(state.lead.consent.whatsapp, "the opt-in is still on record");

        let l = lead(&store, &id).await;
        assert_eq!(l["decisions"].as_array().unwrap().len(), 2, "{}", db.name());
        assert_eq!(l["outbox"].as_array().unwrap().len(), 1);
        assert_eq!(
            l["identities"],
            json!([{"kind": "phone", "value": "+919800000001"}])
        );
        assert_eq!(l["consents"][0]["evidence"], "ticked the box");
        assert_eq!(l["thread"]["state"], "automated");
        assert!(l["created_at"].as_str().unwrap().ends_with('Z'));
        let found = store.search("acme", Some("aisha"), 10).await.unwrap();
        assert_eq!(found.len(), 1, "{}: search ignores case", db.name());
        assert_eq!(found[0].id, id);
        assert!(store.lead("other-account", &id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn two_leads_that_turn_out_to_be_one_person_merge() {
    for db in databases().await {
        let store = db.open().await;
        let (a, _) = record(
            &store,
            person("+919800000002", "Ravi"),
            decision(Vec::new()),
        )
        .await;
        let mut by_email = LeadEvent {
            identities: vec![("email".into(), "ravi@example.com".into())],
            email: Some("ravi@example.com".into()),
            fields: json!({"budget": 5000}).as_object().unwrap().clone(),
            inbound_at: Some(Utc::now()),
            ..LeadEvent::default()
        };
        by_email.messages = vec![handoff::engine::lead::TranscriptMessage {
            channel: "email".into(),
            from: "lead".into(),
            text: "hello".into(),
            at: Utc::now(),
        }];
        let (b, _) = record(&store, by_email, decision(vec![message("+919800000002")])).await;
        let (a, b) = (lead_id(&a), lead_id(&b));
        assert_ne!(a, b);
        let both = LeadEvent {
            identities: vec![
                ("phone".into(), "+919800000002".into()),
                ("email".into(), "ravi@example.com".into()),
            ],
            ..LeadEvent::default()
        };
        let (merged, state) = record(&store, both, decision(Vec::new())).await;
        assert_eq!(
            lead_id(&merged),
            a,
            "{}: the older lead survives",
            db.name()
        );
        let state = state.unwrap();
        assert_eq!(state.lead.email.as_deref(), Some("ravi@example.com"));
        assert_eq!(state.lead.fields.get("budget"), Some(&json!(5000)));
        assert_eq!(state.lead.transcript.len(), 1);
        assert!(state.last_inbound_at.is_some(), "the window comes along");
        let via_old = lead(&store, &b).await;
        assert_eq!(
            via_old["id"],
            a.as_str(),
            "{}: the merged ID answers as the survivor",
            db.name()
        );
        assert_eq!(via_old["decisions"].as_array().unwrap().len(), 3);
        assert_eq!(via_old["outbox"].as_array().unwrap().len(), 1);
        assert_eq!(via_old["identities"].as_array().unwrap().len(), 2);
        assert_eq!(store.search("acme", None, 10).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_repeated_source_id_is_answered_with_the_first_answer_and_changes_nothing() {
    for db in databases().await {
        let store = db.open().await;
        let mut event = person("+919800000003", "Meera");
        event.dedup = Some(("api".into(), "key-1".into()));
        let (first, _) = record(
            &store,
            event.clone(),
            decision(vec![message("+919800000003")]),
        )
        .await;
        let Recorded::New {
            response,
            lead_id: id,
            ..
        } = &first
        else {
            panic!("{}: the first is new", db.name());
        };
        assert_eq!(response["lead_id"], id.as_str());
        event.name = Some("Someone else".into());
        let (again, state) = record(&store, event, decision(vec![message("+919800000003")])).await;
        assert!(state.is_none(), "{}: a replay decides nothing", db.name());
        let Recorded::Replay { response: replayed } = again else {
            panic!("{}: the second is a replay", db.name());
        };
        assert_eq!(&replayed, response);
        let l = lead(&store, id).await;
        assert_eq!(l["name"], "Meera");
        assert_eq!(l["decisions"].as_array().unwrap().len(), 1);
        assert_eq!(l["outbox"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_redelivered_webhook_is_stored_once_and_finishing_it_counts() {
    for db in databases().await {
        let store = db.open().await;
        let events = vec![
            ("wamid.1".to_string(), json!({"n": 1})),
            ("wamid.2".to_string(), json!({"n": 2})),
        ];
        assert_eq!(
            store
                .enqueue_webhooks("acme", WebhookSource::Whatsapp, &events)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .enqueue_webhooks("acme", WebhookSource::Whatsapp, &events[..1])
                .await
                .unwrap(),
            0,
            "{}",
            db.name()
        );
        assert_eq!(
            store
                .enqueue_webhooks("other", WebhookSource::Whatsapp, &events[..1])
                .await
                .unwrap(),
            1,
            "another account's"
        );
        let due = store.due_webhooks(10, LEASE).await.unwrap();
        assert_eq!(due.len(), 3, "{}", db.name());
        assert_eq!(
            (due[0].source_id.as_str(), due[0].payload["n"].as_i64()),
            ("wamid.1", Some(1))
        );
        assert!(due[0].id < due[1].id, "oldest first");
        store
            .finish_webhook(due[0].id, None, false, Duration::ZERO)
            .await
            .unwrap();
        store
            .finish_webhook(due[1].id, Some("try later"), false, Duration::from_secs(60))
            .await
            .unwrap();
        store
            .finish_webhook(due[2].id, Some("never"), true, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            store.webhook_counts().await.unwrap(),
            vec![
                ("done".to_string(), 1),
                ("failed".to_string(), 1),
                ("pending".to_string(), 1)
            ],
            "{}",
            db.name()
        );
        assert!(
            store.due_webhooks(10, LEASE).await.unwrap().is_empty(),
            "the retry is not due yet"
        );
    }
}

#[tokio::test]
async fn an_outbox_claim_is_leased_and_an_uncertain_send_waits_the_grace_period() {
    for db in databases().await {
        let store = db.open().await;
        let (r, _) = record(
            &store,
            person("+919800000004", "Kabir"),
            decision(vec![message("+919800000004")]),
        )
        .await;
        let id = lead_id(&r);
        let claimed = store
            .claim_outbox("a", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "{}", db.name());
        let item = &claimed[0];
        assert_eq!(
            (item.attempts, item.kind.as_str(), item.lead_id.as_str()),
            (1, "whatsapp", id.as_str())
        );
        assert_eq!(item.payload["to"], "+919800000004");
        assert!(
            store
                .claim_outbox("b", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
                .await
                .unwrap()
                .is_empty(),
            "{}: leased to a",
            db.name()
        );
        let sent = SendOutcome::Sent {
            message_id: Some("wamid.x".into()),
            wa_id: None,
        };
        assert!(
            !store
                .finish_outbox("b", item, sent.clone(), &[])
                .await
                .unwrap(),
            "b holds no lease"
        );

        // Uncertain: not claimed again within the grace period, then claimed.
        assert!(store
            .finish_outbox(
                "a",
                item,
                SendOutcome::Uncertain {
                    error: "timeout".into()
                },
                &[]
            )
            .await
            .unwrap());
        assert!(
            store
                .claim_outbox("b", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
                .await
                .unwrap()
                .is_empty(),
            "{}: within grace",
            db.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let again = store
            .claim_outbox(
                "b",
                10,
                LEASE,
                Duration::from_millis(10),
                MAX_AGE,
                &NO_FALLBACKS,
            )
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{}: after grace", db.name());
        assert_eq!(again[0].attempts, 2);
        assert!(
            !store
                .finish_outbox("a", item, sent.clone(), &[])
                .await
                .unwrap(),
            "a's lease is gone"
        );
        let with_wa = SendOutcome::Sent {
            message_id: Some("wamid.x".into()),
            wa_id: Some("919800000099".into()),
        };
        assert!(store
            .finish_outbox("b", &again[0], with_wa, &[])
            .await
            .unwrap());
        let l = lead(&store, &id).await;
        assert_eq!(
            (
                l["outbox"][0]["state"].as_str(),
                l["outbox"][0]["delivery"].as_str()
            ),
            (Some("sent"), Some("accepted"))
        );
        assert_eq!(l["outbox"][0]["message_id"], "wamid.x");
        assert!(l["identities"]
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "whatsapp", "value": "919800000099"})));
        assert_eq!(
            store.outbox_counts().await.unwrap(),
            vec![("whatsapp".into(), "sent".into(), 1)]
        );

        // A deferral puts it back without counting the attempt; a retry waits its time.
        let (r2, _) = record(
            &store,
            person("+919800000005", "Dev"),
            decision(vec![message("+919800000005")]),
        )
        .await;
        let item = store
            .claim_outbox("a", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
            .await
            .unwrap()
            .remove(0);
        let soon = Utc::now() + chrono::Duration::milliseconds(50);
        assert!(store
            .finish_outbox("a", &item, SendOutcome::Deferred { at: soon }, &[])
            .await
            .unwrap());
        assert!(
            store
                .claim_outbox("a", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
                .await
                .unwrap()
                .is_empty(),
            "{}: deferred",
            db.name()
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        let item = store
            .claim_outbox("a", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(
            item.attempts,
            1,
            "{}: the deferral did not count",
            db.name()
        );
        let later = Utc::now() + chrono::Duration::hours(1);
        assert!(store
            .finish_outbox(
                "a",
                &item,
                SendOutcome::Retry {
                    at: later,
                    code: Some(130429),
                    error: "rate".into()
                },
                &[]
            )
            .await
            .unwrap());
        assert!(store
            .claim_outbox("a", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
            .await
            .unwrap()
            .is_empty());
        let l = lead(&store, &lead_id(&r2)).await;
        assert_eq!(l["outbox"][0]["state"], "pending");
        assert_eq!(l["outbox"][0]["error_code"], 130429);
        assert!(l["outbox"][0]["next_attempt"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
    }
}

#[tokio::test]
async fn statuses_move_forward_and_a_closed_window_falls_back_to_the_template() {
    for db in databases().await {
        let store = db.open().await;
        let (r, _) = record(
            &store,
            person("+919800000006", "Isha"),
            decision(vec![message("+919800000006")]),
        )
        .await;
        let id = lead_id(&r);
        let item = store
            .claim_outbox("a", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
            .await
            .unwrap()
            .remove(0);
        let sent = SendOutcome::Sent {
            message_id: Some("wamid.s".into()),
            wa_id: None,
        };
        assert!(store.finish_outbox("a", &item, sent, &[]).await.unwrap());
        let status = |name: &str, errors: Value| StatusRecord {
            message_id: "wamid.s".into(),
            status: DeliveryStatus::from_meta(name).unwrap(),
            at: Utc::now(),
            recipient: "919800000006".into(),
            errors,
            outbox_id: Some(item.id.clone()),
        };
        let read = store
            .apply_status("acme", &status("read", json!([])), &[])
            .await
            .unwrap();
        assert!(read.new && !read.fell_back, "{}", db.name());
        assert_eq!(read.outbox_id.as_deref(), Some(item.id.as_str()));
        store
            .apply_status("acme", &status("delivered", json!([])), &[])
            .await
            .unwrap();
        assert_eq!(
            lead(&store, &id).await["outbox"][0]["delivery"],
            "read",
            "{}: never backwards",
            db.name()
        );
        assert!(
            !store
                .apply_status("acme", &status("read", json!([])), &[])
                .await
                .unwrap()
                .new,
            "a redelivery"
        );

        let window = json!([{"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message"}]);
        let failed = store
            .apply_status("acme", &status("failed", window.clone()), &[])
            .await
            .unwrap();
        assert!(failed.new && failed.fell_back, "{}", db.name());
        let again = store
            .apply_status("acme", &status("failed", window), &[])
            .await
            .unwrap();
        assert!(
            !again.new && !again.fell_back,
            "{}: one fallback",
            db.name()
        );
        let l = lead(&store, &id).await;
        let outbox = l["outbox"].as_array().unwrap();
        assert_eq!(outbox.len(), 2, "{}", db.name());
        assert_eq!(
            (
                outbox[0]["state"].as_str(),
                outbox[0]["error_code"].as_i64()
            ),
            (Some("failed"), Some(131047))
        );
        assert_eq!(outbox[1]["replaces"], item.id.as_str());
        assert_eq!(outbox[1]["payload"]["outcome"], "template");
        assert_eq!(outbox[1]["payload"]["text"], Value::Null);
        assert_eq!(
            l["thread"]["flag"],
            Value::Null,
            "a fallback is not a failure to flag"
        );

        // The template is claimed next; 131050 fails it and is an opt-out on record.
        let template = store
            .claim_outbox("a", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(template.payload["outcome"], "template");
        let out = SendOutcome::Failed {
            code: Some(131050),
            error: "131050: stopped marketing".into(),
            marketing_opt_out: true,
        };
        assert!(store.finish_outbox("a", &template, out, &[]).await.unwrap());
        let l = lead(&store, &id).await;
        assert_eq!(l["thread"]["flag"], "delivery_failed", "{}", db.name());
        let consents = l["consents"].as_array().unwrap();
        assert_eq!(consents.last().unwrap()["channel"], "whatsapp_marketing");
        assert_eq!(consents.last().unwrap()["granted"], false);

        // A status for a message we never sent is new, and about nothing.
        let stray = StatusRecord {
            outbox_id: None,
            message_id: "wamid.unknown".into(),
            ..status("sent", json!([]))
        };
        assert_eq!(
            store
                .apply_status("acme", &stray, &[])
                .await
                .unwrap()
                .outbox_id,
            None
        );
        let user = ConsentRecord {
            channel: "whatsapp_marketing".into(),
            granted: true,
            source: "whatsapp user_preferences".into(),
            at: Utc::now(),
            evidence: None,
        };
        assert!(store
            .record_consent("acme", "phone", "+919800000006", &user)
            .await
            .unwrap());
        assert!(!store
            .record_consent("acme", "phone", "+910000000000", &user)
            .await
            .unwrap());
    }
}

#[tokio::test]
async fn a_takeover_cancels_the_automated_messages_still_waiting() {
    for db in databases().await {
        let store = db.open().await;
        let (r, _) = record(
            &store,
            person("+919800000007", "Neel"),
            decision(vec![message("+919800000007")]),
        )
        .await;
        let id = lead_id(&r);
        assert!(store
            .set_thread_state("acme", &id, true, Some("sales"))
            .await
            .unwrap());
        assert!(
            !store
                .set_thread_state("other", &id, true, None)
                .await
                .unwrap(),
            "another account's lead"
        );
        assert!(
            store
                .claim_outbox("a", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            db.name()
        );
        let l = lead(&store, &id).await;
        assert_eq!(
            (l["thread"]["state"].as_str(), l["thread"]["queue"].as_str()),
            (Some("human"), Some("sales"))
        );
        assert_eq!(l["outbox"][0]["state"], "cancelled", "{}", db.name());
        assert!(store
            .set_thread_state("acme", &id, false, None)
            .await
            .unwrap());
        let (_, state) = record(
            &store,
            person("+919800000007", "Neel"),
            decision(vec![message("+919800000007")]),
        )
        .await;
        assert!(!state.unwrap().human, "{}: given back", db.name());
        assert_eq!(
            store
                .claim_outbox("a", 10, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
                .await
                .unwrap()
                .len(),
            1
        );
        store
            .disable_endpoint("acme", "crm", "410 Gone")
            .await
            .unwrap();
        store
            .disable_endpoint("acme", "crm", "410 Gone again")
            .await
            .unwrap();
        assert_eq!(
            store.disabled_endpoints("acme").await.unwrap(),
            vec![("crm".to_string(), "410 Gone again".to_string())]
        );
        assert!(store.ping().await);
    }
}

// ---- PostgreSQL only: two stores on one database, as two instances.

async fn two_instances() -> Option<(Db, Store, Store)> {
    let base = harness::postgres()?;
    let db = Db::postgres(&base).await;
    let (a, b) = (db.open().await, db.open().await);
    Some((db, a, b))
}

#[tokio::test]
async fn the_same_key_at_two_instances_at_once_is_decided_once_and_replayed() {
    let Some((_db, a, b)) = two_instances().await else {
        return;
    };
    for round in 0..20 {
        let mut event = person(&format!("+91981{round:07}"), "Twice");
        event.dedup = Some(("api".into(), format!("same-{round}")));
        let (ra, rb) = tokio::join!(
            record(&a, event.clone(), decision(vec![message("+919810000000")])),
            record(&b, event, decision(vec![message("+919810000000")]))
        );
        let new = [&ra.0, &rb.0]
            .iter()
            .filter(|r| matches!(r, Recorded::New { .. }))
            .count();
        assert_eq!(new, 1, "round {round}: decided once");
        assert_eq!(
            lead_id(&ra.0),
            lead_id(&rb.0),
            "round {round}: the replay answers the same lead"
        );
        let l = lead(&a, &lead_id(&ra.0)).await;
        assert_eq!(l["decisions"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn two_events_for_one_person_at_two_instances_make_one_lead_decided_in_turn() {
    let Some((_db, a, b)) = two_instances().await else {
        return;
    };
    for round in 0..20 {
        let phone = format!("+91982{round:07}");
        let (ra, rb) = tokio::join!(
            record(&a, person(&phone, "First"), decision(vec![message(&phone)])),
            record(
                &b,
                person(&phone, "Second"),
                decision(vec![message(&phone)])
            )
        );
        assert_eq!(lead_id(&ra.0), lead_id(&rb.0), "round {round}: one lead");
        let created = [ra.1.unwrap(), rb.1.unwrap()];
        assert_eq!(
            created.iter().filter(|s| s.created).count(),
            1,
            "round {round}: the second saw the first"
        );
        let l = lead(&a, &lead_id(&ra.0)).await;
        assert_eq!(l["decisions"].as_array().unwrap().len(), 2);
        assert_eq!(l["consents"].as_array().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn two_instances_never_claim_the_same_message_or_webhook_event() {
    let Some((_db, a, b)) = two_instances().await else {
        return;
    };
    for i in 0..200 {
        let phone = format!("+91983{i:07}");
        record(&a, person(&phone, "Claim"), decision(vec![message(&phone)])).await;
    }
    let events: Vec<(String, Value)> = (0..200)
        .map(|i| (format!("wamid.{i}"), json!({"i": i})))
        .collect();
    let (na, nb) = tokio::join!(
        a.enqueue_webhooks("acme", WebhookSource::Whatsapp, &events),
        b.enqueue_webhooks("acme", WebhookSource::Whatsapp, &events)
    );
    assert_eq!(na.unwrap() + nb.unwrap(), 200, "each event stored once");
    let mut messages = BTreeSet::new();
    let mut hooks = BTreeSet::new();
    loop {
        let (ca, cb, wa, wb) = tokio::join!(
            a.claim_outbox("a", 7, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS),
            b.claim_outbox("b", 7, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS),
            a.due_webhooks(7, LEASE),
            b.due_webhooks(7, LEASE)
        );
        let claimed: Vec<String> = ca
            .unwrap()
            .into_iter()
            .chain(cb.unwrap())
            .map(|i| i.id)
            .collect();
        let due: Vec<i64> = wa
            .unwrap()
            .into_iter()
            .chain(wb.unwrap())
            .map(|w| w.id)
            .collect();
        if claimed.is_empty() && due.is_empty() {
            break;
        }
        for id in claimed {
            assert!(messages.insert(id), "a message claimed twice");
        }
        for id in due {
            assert!(hooks.insert(id), "a webhook event handed out twice");
        }
    }
    assert_eq!((messages.len(), hooks.len()), (200, 200));
}

#[tokio::test]
async fn the_inbox_keeps_operators_sessions_threads_and_the_trail_alike() {
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let op = store
            .create_operator("acme", "Priya@Acme.example", "Priya", "$argon2id$fake")
            .await
            .unwrap();
        assert_eq!(op.email, "priya@acme.example", "{name}");
        assert!(
            store
                .create_operator("acme", "priya@acme.example", "Again", "x")
                .await
                .is_err(),
            "{name}: an email is one operator"
        );
        let login = store
            .operator_login("PRIYA@acme.example")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(login.password_hash, "$argon2id$fake", "{name}");
        let later = chrono::Utc::now() + chrono::Duration::hours(1);
        store
            .create_session(&op.id, "h1", "c1", later)
            .await
            .unwrap();
        let session = store.session("h1").await.unwrap().unwrap();
        assert_eq!(
            (session.operator.name.as_str(), session.csrf.as_str()),
            ("Priya", "c1"),
            "{name}"
        );
        let past = chrono::Utc::now() - chrono::Duration::hours(1);
        store
            .create_session(&op.id, "h2", "c2", past)
            .await
            .unwrap();
        assert!(
            store.session("h2").await.unwrap().is_none(),
            "{name}: expired"
        );
        store.end_session("h1").await.unwrap();
        assert!(
            store.session("h1").await.unwrap().is_none(),
            "{name}: signed out"
        );

        let (recorded, _) = record(
            &store,
            person("+919800000500", "Aisha"),
            decision(Vec::new()),
        )
        .await;
        let lead = lead_id(&recorded);
        let all = handoff::store::inbox::ThreadFilter {
            limit: 50,
            ..Default::default()
        };
        let threads = store.threads("acme", Some(&op.id), &all).await.unwrap();
        assert_eq!(threads.len(), 1, "{name}");
        assert!(threads[0].unread, "{name}");
        store.mark_read(&op.id, &lead).await.unwrap();
        let threads = store.threads("acme", Some(&op.id), &all).await.unwrap();
        assert!(!threads[0].unread, "{name}");
        assert!(
            store
                .threads("globex", None, &all)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );

        assert!(store
            .set_thread_owner("acme", &lead, true, "Priya", None)
            .await
            .unwrap());
        assert!(
            !store
                .set_thread_owner("globex", &lead, true, "Omar", None)
                .await
                .unwrap(),
            "{name}"
        );
        assert!(store
            .reassign("acme", &lead, "events-senior", "Priya", false)
            .await
            .unwrap());
        assert!(store
            .add_note("acme", &lead, "Priya", "call after 6")
            .await
            .unwrap());
        let payload = serde_json::json!({"to": "+919800000500", "outcome": "session", "text": "Hi", "template": null, "sender": null, "by": "Priya"});
        let outbox = store
            .queue_reply("acme", &lead, "Priya", None, &payload, "Hi")
            .await
            .unwrap();
        assert!(outbox.is_some(), "{name}");
        let human = handoff::store::inbox::ThreadFilter {
            state: Some("human".into()),
            queue: Some("events-senior".into()),
            limit: 50,
            ..Default::default()
        };
        let threads = store.threads("acme", None, &human).await.unwrap();
        assert_eq!(threads.len(), 1, "{name}");
        assert_eq!(threads[0].taken_by.as_deref(), Some("Priya"), "{name}");
        assert_eq!(threads[0].last_text.as_deref(), Some("Hi"), "{name}");
        let kinds: Vec<String> = store
            .thread_events("acme", &lead)
            .await
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["takeover", "reassign", "note", "reply"], "{name}");
        let state = store.lead_state("acme", &lead).await.unwrap().unwrap();
        assert!(state.human, "{name}");
        assert!(
            store.lead_state("globex", &lead).await.unwrap().is_none(),
            "{name}"
        );
    }
}

// ---- Queues: assignment, availability, escalation, fallback.

use handoff::queues::{Member, QueuePlan, Strategy};

/// A decision that routes the thread to `queue`, a queue with members.
fn routed(queue: &str) -> DecisionRecord {
    DecisionRecord {
        queue: Some(queue.into()),
        managed: true,
        ..decision(vec![])
    }
}

/// An operator of `acme`, signed in (a live session) and marked available.
async fn operator_on(store: &Store, email: &str, name: &str) -> String {
    let op = store
        .create_operator("acme", email, name, "$argon2id$fake")
        .await
        .unwrap();
    store
        .create_session(
            &op.id,
            &format!("token-{}", op.id),
            "csrf",
            Utc::now() + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    store.set_available(&op.id, true).await.unwrap();
    op.id
}

fn plan(name: &str, strategy: Strategy, capacity: u32, members: &[&str]) -> QueuePlan {
    QueuePlan {
        name: name.into(),
        strategy,
        capacity,
        members: members
            .iter()
            .map(|m| Member::Operator(m.to_string()))
            .collect(),
        idle: Duration::from_secs(900),
    }
}

/// The members' loads, by name, as the store reports them.
async fn loads(store: &Store, plan: &QueuePlan) -> Vec<(String, u32, String)> {
    store
        .queue_members("acme", plan)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.candidate.name, m.candidate.load, m.status))
        .collect()
}

async fn thread_of(store: &Store, id: &str) -> Value {
    lead(store, id).await["thread"].clone()
}

async fn trail_kinds(store: &Store, id: &str) -> Vec<String> {
    store
        .thread_events("acme", id)
        .await
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn round_robin_spreads_threads_under_capacity_and_waiting_ones_go_to_who_comes_back() {
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let a = operator_on(&store, "a@acme.example", "Asha").await;
        operator_on(&store, "b@acme.example", "Bilal").await;
        let c = operator_on(&store, "c@acme.example", "Chen").await;
        store.set_available(&c, false).await.unwrap();
        let rr = plan(
            "closers",
            Strategy::RoundRobin,
            2,
            &["a@acme.example", "b@acme.example", "c@acme.example"],
        );
        let mut leads = Vec::new();
        for i in 0..6 {
            let phone = format!("+91984{i:07}");
            let (r, _) = record(&store, person(&phone, "Lead"), routed("closers")).await;
            leads.push(lead_id(&r));
        }
        assert_eq!(
            thread_of(&store, &leads[0]).await["queue_state"],
            "waiting",
            "{name}"
        );
        let given = store.assign_waiting("acme", &rr).await.unwrap();
        let who: Vec<&str> = given.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            who,
            ["Asha", "Bilal", "Asha", "Bilal"],
            "{name}: in turn, Chen is away"
        );
        assert_eq!(
            store.waiting("acme", "closers", 50).await.unwrap().len(),
            2,
            "{name}: two wait: everyone present is full"
        );
        // Nobody new: a second pass gives nothing.
        assert!(store.assign_waiting("acme", &rr).await.unwrap().is_empty());
        // Chen comes back: the waiting threads go to him.
        assert!(store.set_available(&c, true).await.unwrap());
        let given = store.assign_waiting("acme", &rr).await.unwrap();
        assert_eq!(given.len(), 2, "{name}");
        assert!(given.iter().all(|g| g.name == "Chen"), "{name}: {given:?}");
        assert_eq!(
            loads(&store, &rr).await,
            [
                ("Asha".to_string(), 2, "available".to_string()),
                ("Bilal".to_string(), 2, "available".to_string()),
                ("Chen".to_string(), 2, "available".to_string())
            ],
            "{name}"
        );
        let t = thread_of(&store, &leads[0]).await;
        assert_eq!(
            (t["queue_state"].as_str(), t["assignee"].as_str()),
            (Some("assigned"), Some("Asha")),
            "{name}"
        );
        assert_eq!(
            trail_kinds(&store, &leads[0]).await,
            ["queued", "assign"],
            "{name}"
        );
        // Closing one of Asha's frees a place, and only she has one.
        assert!(store.close_thread("acme", &leads[0], "Asha").await.unwrap());
        assert!(
            !store.close_thread("acme", &leads[0], "Asha").await.unwrap(),
            "{name}: done once"
        );
        let (r, _) = record(&store, person("+919849999999", "Late"), routed("closers")).await;
        let given = store.assign_waiting("acme", &rr).await.unwrap();
        assert_eq!(given.len(), 1);
        assert_eq!(
            (given[0].lead_id.as_str(), given[0].name.as_str()),
            (lead_id(&r).as_str(), "Asha"),
            "{name}"
        );
        let _ = a;
    }
}

#[tokio::test]
async fn least_loaded_gives_the_member_with_fewest_open_threads_ties_in_turn() {
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        for (email, who) in [
            ("a@acme.example", "Asha"),
            ("b@acme.example", "Bilal"),
            ("c@acme.example", "Chen"),
        ] {
            operator_on(&store, email, who).await;
        }
        let ll = plan(
            "seniors",
            Strategy::LeastLoaded,
            10,
            &["a@acme.example", "b@acme.example", "c@acme.example"],
        );
        let mut by: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for i in 0..6 {
            let (r, _) = record(
                &store,
                person(&format!("+91985{i:07}"), "Lead"),
                routed("seniors"),
            )
            .await;
            let given = store.assign_waiting("acme", &ll).await.unwrap();
            assert_eq!(given.len(), 1, "{name}");
            by.entry(given[0].name.clone())
                .or_default()
                .push(lead_id(&r));
        }
        let counts: Vec<usize> = by.values().map(Vec::len).collect();
        assert_eq!(counts, [2, 2, 2], "{name}: evenly while loads tie");
        // Bilal closes both of his: the next two are his, whatever the turn.
        for id in &by["Bilal"] {
            assert!(store.close_thread("acme", id, "Bilal").await.unwrap());
        }
        for i in 0..2 {
            record(
                &store,
                person(&format!("+91986{i:07}"), "Lead"),
                routed("seniors"),
            )
            .await;
        }
        let given = store.assign_waiting("acme", &ll).await.unwrap();
        let who: Vec<&str> = given.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(who, ["Bilal", "Bilal"], "{name}");
        // A load counts threads in every queue: a round-robin queue with
        // capacity 2 passes over everyone now.
        let rr = plan(
            "closers",
            Strategy::RoundRobin,
            2,
            &["a@acme.example", "b@acme.example"],
        );
        record(&store, person("+919869999999", "Lead"), routed("closers")).await;
        assert!(
            store.assign_waiting("acme", &rr).await.unwrap().is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn idle_away_and_signed_out_operators_are_not_available() {
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let a = operator_on(&store, "a@acme.example", "Asha").await;
        let mut p = plan(
            "closers",
            Strategy::RoundRobin,
            5,
            &["a@acme.example", "nobody@acme.example"],
        );
        p.idle = Duration::from_millis(400);
        let status = |v: Vec<(String, u32, String)>| v.into_iter().map(|m| m.2).collect::<Vec<_>>();
        assert_eq!(
            status(loads(&store, &p).await),
            ["available", "unknown"],
            "{name}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            status(loads(&store, &p).await),
            ["idle", "unknown"],
            "{name}"
        );
        record(&store, person("+919870000001", "Lead"), routed("closers")).await;
        assert!(
            store.assign_waiting("acme", &p).await.unwrap().is_empty(),
            "{name}: idle gets nothing"
        );
        // Activity again: she was idle, so waiting threads may go to her now.
        assert!(store.touch_presence(&a, p.idle).await.unwrap(), "{name}");
        assert!(
            !store.touch_presence(&a, p.idle).await.unwrap(),
            "{name}: not idle any more"
        );
        assert_eq!(
            store.assign_waiting("acme", &p).await.unwrap().len(),
            1,
            "{name}"
        );
        assert!(store.set_available(&a, false).await.unwrap());
        assert!(
            !store.set_available(&a, false).await.unwrap(),
            "{name}: no change"
        );
        assert!(!store.presence(&a).await.unwrap().available);
        assert_eq!(
            status(loads(&store, &p).await),
            ["away", "unknown"],
            "{name}"
        );
        store.set_available(&a, true).await.unwrap();
        store.end_session(&format!("token-{a}")).await.unwrap();
        assert_eq!(
            status(loads(&store, &p).await),
            ["signed_out", "unknown"],
            "{name}"
        );
    }
}

#[tokio::test]
async fn escalation_moves_a_thread_nobody_picked_up_once_and_survives_a_restart() {
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let a = operator_on(&store, "a@acme.example", "Asha").await;
        let closers = plan("closers", Strategy::RoundRobin, 5, &["a@acme.example"]);
        let (ignored, _) = record(
            &store,
            person("+919880000001", "Ignored"),
            routed("closers"),
        )
        .await;
        let (answered, _) = record(
            &store,
            person("+919880000002", "Answered"),
            routed("closers"),
        )
        .await;
        let (taken, _) = record(&store, person("+919880000003", "Taken"), routed("closers")).await;
        let (ignored, answered, taken) = (lead_id(&ignored), lead_id(&answered), lead_id(&taken));
        assert_eq!(
            store.assign_waiting("acme", &closers).await.unwrap().len(),
            3
        );
        let payload = json!({"to": "+919880000002", "outcome": "session", "text": "Hi", "template": null, "sender": null, "by": "Asha"});
        let reply = store
            .queue_reply("acme", &answered, "Asha", Some(&a), &payload, "Hi")
            .await
            .unwrap()
            .unwrap();
        let first = reply.first.expect("the first reply since it was queued");
        assert_eq!(first.queue.as_deref(), Some("closers"), "{name}");
        assert!(first.after < Duration::from_secs(60), "{name}");
        let again = store
            .queue_reply("acme", &answered, "Asha", Some(&a), &payload, "Hi again")
            .await
            .unwrap()
            .unwrap();
        assert!(again.first.is_none(), "{name}: only the first reply counts");
        assert!(store
            .set_thread_owner("acme", &taken, true, "Asha", Some(&a))
            .await
            .unwrap());
        // A closer answers from the business's own phone (an echo): that
        // is a human reply too.
        let (echoed, _) =
            record(&store, person("+919880000004", "Echoed"), routed("closers")).await;
        let echoed = lead_id(&echoed);
        let echo = LeadEvent {
            human_activity: true,
            ..person("+919880000004", "Echoed")
        };
        record(&store, echo, routed("closers")).await;
        assert!(
            thread_of(&store, &echoed).await["picked_up_at"].is_string(),
            "{name}"
        );
        // Not yet due.
        let past = Utc::now() - chrono::Duration::hours(1);
        assert!(store
            .escalate("acme", "closers", "seniors", past, "15m")
            .await
            .unwrap()
            .is_empty());
        // Restart: the clock is the stored time the thread was queued.
        drop(store);
        let store = db.open().await;
        let due = Utc::now() + chrono::Duration::seconds(1);
        let moved = store
            .escalate("acme", "closers", "seniors", due, "15m")
            .await
            .unwrap();
        assert_eq!(
            moved,
            std::slice::from_ref(&ignored),
            "{name}: only the thread nobody picked up"
        );
        assert!(
            store
                .escalate("acme", "closers", "seniors", due, "15m")
                .await
                .unwrap()
                .is_empty(),
            "{name}: it fires once"
        );
        let t = thread_of(&store, &ignored).await;
        assert_eq!(
            (
                t["queue"].as_str(),
                t["queue_state"].as_str(),
                t["assignee"].as_str()
            ),
            (Some("seniors"), Some("waiting"), None),
            "{name}"
        );
        let events = store.thread_events("acme", &ignored).await.unwrap();
        let last = events.last().unwrap();
        assert_eq!(last["kind"], "escalate", "{name}");
        assert_eq!(
            last["text"], "from closers to seniors: nobody picked it up within 15m",
            "{name}"
        );
        assert_eq!(last["by"], "handoff");
        // Asha's load dropped with it; the taken-over thread is hers.
        let t = thread_of(&store, &taken).await;
        assert_eq!(
            (t["queue_state"].as_str(), t["assignee"].as_str()),
            (Some("assigned"), Some("Asha")),
            "{name}"
        );
        assert!(t["picked_up_at"].is_string(), "{name}");
        assert_eq!(loads(&store, &closers).await[0].1, 2, "{name}");
        // A later message from the lead, routed to closers again by the
        // rules, does not undo the escalation.
        record(
            &store,
            person("+919880000001", "Ignored"),
            routed("closers"),
        )
        .await;
        assert_eq!(
            thread_of(&store, &ignored).await["queue"],
            "seniors",
            "{name}"
        );
        // Once done, a new message puts the thread back in its rules' queue.
        assert!(store.close_thread("acme", &ignored, "Asha").await.unwrap());
        record(
            &store,
            person("+919880000001", "Ignored"),
            routed("closers"),
        )
        .await;
        let t = thread_of(&store, &ignored).await;
        assert_eq!(
            (t["queue"].as_str(), t["queue_state"].as_str()),
            (Some("closers"), Some("waiting")),
            "{name}"
        );
        // The rules move a thread they routed; a person's move they keep.
        record(&store, person("+919880000001", "Ignored"), routed("triage")).await;
        assert_eq!(
            thread_of(&store, &ignored).await["queue"],
            "triage",
            "{name}"
        );
        assert!(store
            .reassign("acme", &ignored, "vip", "Asha", true)
            .await
            .unwrap());
        record(
            &store,
            person("+919880000001", "Ignored"),
            routed("closers"),
        )
        .await;
        let t = thread_of(&store, &ignored).await;
        assert_eq!(
            (t["queue"].as_str(), t["queue_state"].as_str()),
            (Some("vip"), Some("waiting")),
            "{name}"
        );
        let waiting = handoff::store::inbox::ThreadFilter {
            state: Some("waiting".into()),
            limit: 50,
            ..Default::default()
        };
        let listed = store.threads("acme", None, &waiting).await.unwrap();
        let listed: BTreeSet<(&str, &str)> = listed
            .iter()
            .map(|t| (t.lead_id.as_str(), t.queue.as_deref().unwrap()))
            .collect();
        assert_eq!(
            listed,
            BTreeSet::from([(ignored.as_str(), "vip"), (echoed.as_str(), "closers")]),
            "{name}: the echoed thread was never given out, so it waits"
        );
    }
}

#[tokio::test]
async fn a_person_on_a_thread_outside_managed_queues_adds_nothing_to_their_load() {
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let a = operator_on(&store, "a@acme.example", "Asha").await;
        // No queue at all, and a queue the account gives no members.
        let (none, _) = record(&store, person("+919892000001", "None"), decision(vec![])).await;
        let label = DecisionRecord {
            queue: Some("events-phone".into()),
            ..decision(vec![])
        };
        let (labelled, _) = record(&store, person("+919892000002", "Label"), label).await;
        let payload = json!({"to": "+919892000001", "outcome": "session", "text": "Hi", "template": null, "sender": null, "by": "Asha"});
        for id in [lead_id(&none), lead_id(&labelled)] {
            assert!(store
                .set_thread_owner("acme", &id, true, "Asha", Some(&a))
                .await
                .unwrap());
            let reply = store
                .queue_reply("acme", &id, "Asha", Some(&a), &payload, "Hi")
                .await
                .unwrap()
                .unwrap();
            assert!(reply.first.is_none(), "{name}: not waiting in a queue");
            let t = thread_of(&store, &id).await;
            assert_eq!(
                (t["queue_state"].as_str(), t["assignee"].as_str()),
                (None, None),
                "{name}"
            );
            assert!(
                !store.close_thread("acme", &id, "Asha").await.unwrap(),
                "{name}"
            );
        }
        let p = plan("closers", Strategy::RoundRobin, 1, &["a@acme.example"]);
        assert_eq!(loads(&store, &p).await[0].1, 0, "{name}");
        assert!(store.queue_counts().await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn an_agent_member_gets_its_threads_as_signed_webhooks() {
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let bot = QueuePlan {
            members: vec![Member::Agent("qualifier".into())],
            ..plan("ai", Strategy::RoundRobin, 100, &[])
        };
        let (r, _) = record(&store, person("+919890000001", "Lead"), routed("ai")).await;
        let given = store.assign_waiting("acme", &bot).await.unwrap();
        assert_eq!(given.len(), 1);
        assert_eq!(given[0].member, "agent:qualifier", "{name}");
        let l = lead(&store, &lead_id(&r)).await;
        assert_eq!(l["thread"]["assignee"], "qualifier", "{name}");
        let notify: Vec<&Value> = l["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == "notify")
            .collect();
        assert_eq!(notify.len(), 1, "{name}");
        assert_eq!(notify[0]["payload"]["event"], "thread.assigned", "{name}");
        assert_eq!(notify[0]["payload"]["endpoint"], "qualifier", "{name}");
    }
}

/// Claims the lead's WhatsApp message (other due messages are claimed and left).
async fn claim_message(store: &Store, lead: &str) -> handoff::store::OutboxItem {
    store
        .claim_outbox("a", 50, LEASE, GRACE, MAX_AGE, &NO_FALLBACKS)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.lead_id == lead && i.kind == OutboxKind::Whatsapp)
        .expect("the lead's message is due")
}

#[tokio::test]
async fn a_message_whatsapp_cannot_deliver_sends_the_lead_to_the_fallback_endpoints() {
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let fallback = ["sms".to_string(), "email".to_string()];
        // Refused at once: not a WhatsApp user.
        let (r, _) = record(
            &store,
            person("+919891000001", "Offline"),
            decision(vec![message("+919891000001")]),
        )
        .await;
        let item = claim_message(&store, &lead_id(&r)).await;
        let failed = SendOutcome::Failed {
            code: Some(131026),
            error: "131026: message undeliverable".into(),
            marketing_opt_out: false,
        };
        assert!(store
            .finish_outbox("a", &item, failed, &fallback)
            .await
            .unwrap());
        let l = lead(&store, &lead_id(&r)).await;
        assert_eq!(l["thread"]["flag"], "delivery_failed", "{name}");
        let sent: Vec<(String, String)> = l["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == "notify")
            .map(|o| {
                (
                    o["payload"]["endpoint"].as_str().unwrap().to_string(),
                    o["payload"]["event"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            sent,
            [
                ("sms".to_string(), "lead.undeliverable".to_string()),
                ("email".to_string(), "lead.undeliverable".to_string())
            ],
            "{name}"
        );
        let o = l["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == "notify")
            .unwrap();
        assert_eq!(
            o["payload"]["context"]["undeliverable"]["code"], 131026,
            "{name}"
        );
        assert_eq!(
            trail_kinds(&store, &lead_id(&r)).await,
            ["fallback"],
            "{name}"
        );
        // Failed later, by a status webhook (the user blocked marketing).
        let (r, _) = record(
            &store,
            person("+919891000002", "Blocked"),
            decision(vec![message("+919891000002")]),
        )
        .await;
        let item = claim_message(&store, &lead_id(&r)).await;
        let sent = SendOutcome::Sent {
            message_id: Some("wamid.fb".into()),
            wa_id: None,
        };
        assert!(store
            .finish_outbox("a", &item, sent, &fallback)
            .await
            .unwrap());
        let status = StatusRecord {
            message_id: "wamid.fb".into(),
            status: DeliveryStatus::Failed,
            at: Utc::now(),
            recipient: "919891000002".into(),
            errors: json!([{"code": 131050, "title": "user stopped marketing messages"}]),
            outbox_id: Some(item.id.clone()),
        };
        store
            .apply_status("acme", &status, &fallback[..1])
            .await
            .unwrap();
        // Redelivered: nothing more.
        store
            .apply_status("acme", &status, &fallback[..1])
            .await
            .unwrap();
        let l = lead(&store, &lead_id(&r)).await;
        let sms: Vec<&Value> = l["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == "notify")
            .collect();
        assert_eq!(sms.len(), 1, "{name}");
        assert_eq!(
            sms[0]["payload"]["context"]["undeliverable"]["code"], 131050,
            "{name}"
        );
        // Never sent in time (the number's token was refused all day, say):
        // the same, when the claim gives it up.
        let (r, _) = record(
            &store,
            person("+919891000004", "Expired"),
            decision(vec![message("+919891000004")]),
        )
        .await;
        let fallbacks: std::collections::BTreeMap<String, Vec<String>> =
            [("acme".to_string(), vec!["sms".to_string()])].into();
        tokio::time::sleep(Duration::from_millis(20)).await;
        store
            .claim_outbox("a", 0, LEASE, GRACE, Duration::from_millis(10), &fallbacks)
            .await
            .unwrap();
        let l = lead(&store, &lead_id(&r)).await;
        assert_eq!(l["thread"]["flag"], "delivery_failed", "{name}");
        assert!(
            l["thread"]["flag_reason"]
                .as_str()
                .unwrap()
                .starts_with("not delivered within"),
            "{name}: {}",
            l["thread"]
        );
        let out = l["outbox"].as_array().unwrap();
        assert_eq!(out[0]["state"], "failed", "{name}");
        assert!(
            out.iter()
                .any(|o| o["kind"] == "notify" && o["payload"]["endpoint"] == "sms"),
            "{name}: {out:?}"
        );
        // Without fallback endpoints only the flag.
        let (r, _) = record(
            &store,
            person("+919891000003", "Flag"),
            decision(vec![message("+919891000003")]),
        )
        .await;
        let item = claim_message(&store, &lead_id(&r)).await;
        let failed = SendOutcome::Failed {
            code: Some(131026),
            error: "x".into(),
            marketing_opt_out: false,
        };
        store.finish_outbox("a", &item, failed, &[]).await.unwrap();
        let l = lead(&store, &lead_id(&r)).await;
        assert_eq!(l["thread"]["flag"], "delivery_failed");
        assert!(
            l["outbox"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["kind"] != "notify"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn two_instances_never_give_a_member_more_than_capacity_or_a_thread_twice() {
    let Some((_db, a, b)) = two_instances().await else {
        return;
    };
    let emails = ["a@acme.example", "b@acme.example", "c@acme.example"];
    for (i, email) in emails.iter().enumerate() {
        operator_on(&a, email, &format!("Op{i}")).await;
    }
    let rr = plan("closers", Strategy::RoundRobin, 3, &emails);
    let ll = plan("closers", Strategy::LeastLoaded, 3, &emails);
    let mut leads = Vec::new();
    for round in 0..15 {
        for i in 0..4 {
            let phone = format!("+91990{round:03}{i:04}");
            let (r, _) = record(&a, person(&phone, "Race"), routed("closers")).await;
            leads.push(lead_id(&r));
        }
        let (ga, gb, gc) = tokio::join!(
            a.assign_waiting("acme", &rr),
            b.assign_waiting("acme", &ll),
            b.assign_waiting("acme", &rr)
        );
        let mut given: Vec<String> = ga
            .unwrap()
            .into_iter()
            .chain(gb.unwrap())
            .chain(gc.unwrap())
            .map(|g| g.lead_id)
            .collect();
        let n = given.len();
        given.sort();
        given.dedup();
        assert_eq!(given.len(), n, "round {round}: a thread given twice");
        for (member, load, _) in loads(&a, &rr).await {
            assert!(load <= 3, "round {round}: {member} holds {load} of 3");
        }
        // Someone closes a thread now and then, freeing a place.
        if round % 2 == 1 {
            for id in &leads {
                if a.close_thread("acme", id, "Op").await.unwrap() {
                    let t = thread_of(&a, id).await;
                    assert_eq!(t["queue_state"], "done");
                    break;
                }
            }
        }
    }
    for id in &leads {
        let assigns = trail_kinds(&a, id)
            .await
            .iter()
            .filter(|k| *k == "assign")
            .count();
        assert!(assigns <= 1, "{id} assigned {assigns} times");
    }
}

/// A decision that queues a handoff message: it opens the lead's thread.
fn handoff_decision(phone: &str, asked: &[&str]) -> DecisionRecord {
    DecisionRecord {
        opens_thread: true,
        idle_days: 30,
        asked: asked.iter().map(|f| f.to_string()).collect(),
        ..decision(vec![message(phone)])
    }
}

#[tokio::test]
async fn a_thread_opens_with_its_first_handoff_message_and_closes_with_done() {
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let phone = "+919800000061";
        let (r, state) = record(
            &store,
            person(phone, "Aisha"),
            handoff_decision(phone, &["budget"]),
        )
        .await;
        let id = lead_id(&r);
        assert!(
            !state.unwrap().thread.open,
            "{name}: decided before any message"
        );
        let t = thread_of(&store, &id).await;
        assert_eq!(t["open"], true, "{name}: {t:#}");
        let opened = t["opened_at"].as_str().unwrap().to_string();
        assert!(t["closed_at"].is_null(), "{name}");

        // The next decision sees the open thread and what `ask` reported in it;
        // its own handoff message does not move the opening.
        let (_, state) = record(
            &store,
            person(phone, "Aisha"),
            handoff_decision(phone, &["city"]),
        )
        .await;
        let thread = state.unwrap().thread;
        assert!(thread.open, "{name}");
        assert_eq!(thread.asked, vec!["budget"], "{name}");
        assert_eq!(
            thread
                .opened
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            Some(opened.clone()),
            "{name}"
        );
        let (_, state) = record(&store, person(phone, "Aisha"), decision(vec![])).await;
        assert_eq!(
            state.unwrap().thread.asked,
            vec!["budget", "city"],
            "{name}"
        );
        assert_eq!(thread_of(&store, &id).await["opened_at"], opened.as_str());

        // Done closes it, whatever its queue (this one has none).
        assert!(
            store.close_thread("acme", &id, "Priya").await.unwrap(),
            "{name}"
        );
        assert!(
            !store.close_thread("acme", &id, "Priya").await.unwrap(),
            "{name}: closed already"
        );
        let t = thread_of(&store, &id).await;
        assert_eq!(t["open"], false, "{name}");
        assert!(t["opened_at"].is_null(), "{name}");
        assert!(t["closed_at"].is_string(), "{name}");
        let (_, state) = record(&store, person(phone, "Aisha"), decision(vec![])).await;
        let thread = state.unwrap().thread;
        assert!(
            !thread.open && thread.closed.is_some() && thread.asked.is_empty(),
            "{name}: {thread:?}"
        );

        // The next handoff message opens a new conversation.
        let (_, state) = record(&store, person(phone, "Aisha"), handoff_decision(phone, &[])).await;
        assert!(!state.unwrap().thread.open, "{name}");
        let t = thread_of(&store, &id).await;
        assert_eq!(t["open"], true, "{name}");
        assert_ne!(t["opened_at"], opened.as_str(), "{name}: a new opening");
        assert!(
            t["closed_at"].is_string(),
            "{name}: the last closing is kept"
        );
        // A decision that queues nothing opens nothing.
        let other = "+919800000062";
        let (r, _) = record(&store, person(other, "Dev"), decision(vec![])).await;
        assert_eq!(
            thread_of(&store, &lead_id(&r)).await["open"],
            false,
            "{name}"
        );
        assert!(
            !store
                .close_thread("acme", &lead_id(&r), "Priya")
                .await
                .unwrap(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_marketing_stop_holds_for_every_lead_with_that_number_until_a_later_resume() {
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let t = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        // A stop from someone not known yet is kept on their WhatsApp ID.
        store
            .record_marketing(
                "acme",
                "919800000071",
                true,
                t(0),
                "whatsapp user_preferences",
                None,
            )
            .await
            .unwrap();
        let (r, state) = record(&store, person("+919800000071", "Meera"), decision(vec![])).await;
        assert!(
            state.unwrap().marketing_opt_out,
            "{name}: a lead that arrives later"
        );
        let id = lead_id(&r);
        let (_, state) = record(&store, person("+919800000071", "Meera"), decision(vec![])).await;
        assert!(state.unwrap().marketing_opt_out, "{name}: the known lead");
        assert_eq!(lead(&store, &id).await["marketing_opt_out"], true, "{name}");
        // A resume older than the stop (delivered out of order) changes nothing.
        store
            .record_marketing(
                "acme",
                "919800000071",
                false,
                t(-10),
                "whatsapp user_preferences",
                None,
            )
            .await
            .unwrap();
        let (_, state) = record(&store, person("+919800000071", "Meera"), decision(vec![])).await;
        assert!(state.unwrap().marketing_opt_out, "{name}");
        // A later resume lifts it, and the lead's consent history shows it.
        store
            .record_marketing(
                "acme",
                "919800000071",
                false,
                t(10),
                "whatsapp user_preferences",
                Some("resume"),
            )
            .await
            .unwrap();
        let (_, state) = record(&store, person("+919800000071", "Meera"), decision(vec![])).await;
        assert!(!state.unwrap().marketing_opt_out, "{name}");
        let l = lead(&store, &id).await;
        assert_eq!(l["marketing_opt_out"], false, "{name}");
        assert!(
            l["consents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["channel"] == "whatsapp_marketing" && c["granted"] == true),
            "{name}: {:#}",
            l["consents"]
        );
        // A WhatsApp ID that differs from the number typed still finds the lead.
        let mut wa = person("+5511987654321", "Joao");
        wa.identities
            .push(("whatsapp".into(), "551187654321".into()));
        let (r, _) = record(&store, wa, decision(vec![])).await;
        store
            .record_marketing(
                "acme",
                "551187654321",
                true,
                t(20),
                "whatsapp user_preferences",
                None,
            )
            .await
            .unwrap();
        let (_, state) = record(&store, person("+5511987654321", "Joao"), decision(vec![])).await;
        assert!(state.unwrap().marketing_opt_out, "{name}");
        assert_eq!(
            lead(&store, &lead_id(&r)).await["marketing_opt_out"],
            true,
            "{name}"
        );
        // Someone else is not affected.
        let (_, state) = record(&store, person("+919800000072", "Kabir"), decision(vec![])).await;
        assert!(!state.unwrap().marketing_opt_out, "{name}");
    }
}

#[tokio::test]
async fn unmapped_answers_keep_the_order_asked_and_a_later_answer_keeps_its_place() {
    use handoff::engine::lead::Answer;
    let answer = |q: &str, a: &str| Answer {
        question: q.into(),
        answer: a.into(),
    };
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let mut first = person("+919800000081", "Zara");
        first.answers = vec![
            answer("Which venue style?", "Beach"),
            answer("Any dietary needs?", "Jain food"),
        ];
        let (r, state) = record(&store, first, decision(vec![])).await;
        assert_eq!(state.unwrap().lead.answers.len(), 2, "{name}");
        let id = lead_id(&r);
        let mut later = person("+919800000081", "Zara");
        later.answers = vec![
            answer("How did you hear of us?", "Instagram"),
            answer("Which venue style?", "Palace"),
        ];
        let (_, state) = record(&store, later, decision(vec![])).await;
        let got: Vec<(String, String)> = state
            .unwrap()
            .lead
            .answers
            .into_iter()
            .map(|a| (a.question, a.answer))
            .collect();
        let want = vec![
            ("Which venue style?".to_string(), "Palace".to_string()),
            ("Any dietary needs?".to_string(), "Jain food".to_string()),
            (
                "How did you hear of us?".to_string(),
                "Instagram".to_string(),
            ),
        ];
        assert_eq!(got, want, "{name}");
        assert_eq!(
            lead(&store, &id).await["answers"],
            json!([
                {"question": "Which venue style?", "answer": "Palace"},
                {"question": "Any dietary needs?", "answer": "Jain food"},
                {"question": "How did you hear of us?", "answer": "Instagram"},
            ]),
            "{name}"
        );
    }
}

#[tokio::test]
async fn what_the_lead_writes_reaches_the_agent_that_has_the_thread_until_a_person_takes_it() {
    use handoff::store::{AgentReply, InboundMessage};
    for db in databases().await {
        let name = db.name();
        let store = db.open().await;
        let bot = QueuePlan {
            members: vec![Member::Agent("qualifier".into())],
            ..plan("ai", Strategy::RoundRobin, 100, &[])
        };
        let phone = "+919890000091";
        let (r, _) = record(&store, person(phone, "Rohan"), routed("ai")).await;
        let id = lead_id(&r);
        // Not the agent's yet: its reply is refused and nothing is queued.
        let reply = json!({"to": phone, "outcome": "session", "text": "Hello!"});
        assert_eq!(
            store
                .queue_agent_reply("acme", &id, "qualifier", &reply, "Hello!")
                .await
                .unwrap(),
            AgentReply::NotAssigned {
                assignee: None,
                human: false
            },
            "{name}"
        );
        store.assign_waiting("acme", &bot).await.unwrap();
        let inbound = |text: &str| {
            let mut e = person(phone, "Rohan");
            e.inbound = Some(InboundMessage {
                id: format!("wamid.{text}"),
                channel: "whatsapp".into(),
                kind: "image".into(),
                text: text.into(),
                at: Utc::now(),
            });
            e
        };
        record(
            &store,
            inbound("[image] This is the venue I like"),
            decision(vec![]),
        )
        .await;
        let l = lead(&store, &id).await;
        let received: Vec<&Value> = l["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["payload"]["event"] == "message.received")
            .collect();
        assert_eq!(received.len(), 1, "{name}");
        assert_eq!(received[0]["payload"]["endpoint"], "qualifier");
        assert_eq!(
            received[0]["payload"]["context"]["message"]["text"],
            "[image] This is the venue I like"
        );
        assert_eq!(
            received[0]["payload"]["context"]["message"]["kind"],
            "image"
        );
        // The agent replies as itself; the thread stays automated and its.
        let queued = store
            .queue_agent_reply("acme", &id, "qualifier", &reply, "Hello!")
            .await
            .unwrap();
        assert!(
            matches!(queued, AgentReply::Queued { .. }),
            "{name}: {queued:?}"
        );
        let l = lead(&store, &id).await;
        assert_eq!(l["thread"]["state"], "automated", "{name}");
        assert_eq!(
            l["transcript"].as_array().unwrap().last().unwrap()["from"],
            "agent:qualifier"
        );
        // A person takes the thread from the agent: it hears no more, and may not reply.
        store
            .set_thread_owner("acme", &id, true, "Priya", None)
            .await
            .unwrap();
        record(&store, inbound("are you there?"), decision(vec![])).await;
        let l = lead(&store, &id).await;
        let received = l["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["payload"]["event"] == "message.received")
            .count();
        assert_eq!(received, 1, "{name}");
        assert!(
            matches!(
                store
                    .queue_agent_reply("acme", &id, "qualifier", &reply, "Hello?")
                    .await
                    .unwrap(),
                AgentReply::NotAssigned { human: true, .. }
            ),
            "{name}"
        );
    }
}
