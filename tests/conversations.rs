//! Conversations end to end, with the real binary and its WhatsApp sandbox:
//! what the buyer's phone receives (the sandbox's record of sends), what an
//! AI agent's endpoint receives, and what the lead record says, when a buyer
//! writes after the handoff, a thread is closed and opens again, a buyer
//! stops marketing messages, and messages of every kind come in. Also the
//! zero-configuration demo deciding a message written to its sandbox.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::{eventually, free_port, hook, until, Api, Process, POLL};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const KEY: &str = "hk_conversations_key";
const META_SECRET: &str = "conversations-app-secret";
const AGENT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const PLAYBOOK: &str = r#"playbook shop {
  timezone "Asia/Kolkata"
  sender "shop-main"
  intents buy, offer, question

  # What a buyer writes about a refund on an open thread goes to a person.
  rule refund {
    when event == "message" and thread.open and message.text contains "refund"
    then takeover "support"
  }

  rule offer {
    when intent == "offer" and consent.whatsapp
    then
      handoff whatsapp { template "shop_offer" }
      assign "sales"
  }

  rule buy {
    when intent == "buy" and consent.whatsapp
    then
      handoff whatsapp {
        open "shop/hello"
        template "shop_hello"
      }
      assign "sales"
  }

  rule question {
    when intent == "question" and consent.whatsapp
    then
      handoff whatsapp {
        open "shop/hello"
        template "shop_hello"
      }
      assign "bot"
  }

  otherwise { assign "triage" }
}
"#;

const APPROVED: &str = r#"shop_hello:
  language: en
  category: utility
  body: "Hi {{1}}, thanks for your interest. Reply here to talk to us."
  params:
    - "{{ lead.first_name or 'there' }}"

shop_offer:
  language: en
  category: marketing
  body: "Hi {{1}}, this week's offer is on: 20% off everything."
  params:
    - "{{ lead.first_name or 'there' }}"
"#;

/// The playbook, its templates and a configuration in `dir`: account `acme`
/// in sandbox mode, queue `bot` served by the AI agent at `agent_url`.
fn setup(dir: &Path, agent_url: &str) {
    let rules = dir.join("rules");
    let templates = dir.join("templates");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::create_dir_all(templates.join("shop")).unwrap();
    std::fs::write(rules.join("shop.rules"), PLAYBOOK).unwrap();
    std::fs::write(templates.join("whatsapp.yaml"), APPROVED).unwrap();
    std::fs::write(
        templates.join("shop/hello.j2"),
        "Hi {{ lead.first_name or 'there' }}, thanks for writing to us.",
    )
    .unwrap();
    harness::process::write_config(
        dir,
        &format!("sqlite://{}", dir.join("handoff.db").display()),
        &rules,
        Some(&templates),
        &format!(
            r#"[[accounts]]
id = "acme"
api_keys = ["env:CONV_KEY"]
[accounts.routing]
default = "shop"
[accounts.meta]
app_secrets = ["env:CONV_META_SECRET"]
[accounts.endpoints.qualifier]
url = "{agent_url}"
secret = "env:CONV_AGENT_SECRET"
allow_private = true
[accounts.queues.bot]
members = ["agent:qualifier"]
hours = "mon-sun 00:00-24:00"
timezone = "Asia/Kolkata"

[delivery]
backoff_seconds = 0.05
max_backoff_seconds = 0.2
"#,
        ),
    );
}

/// A running `handoff serve` on the shop's configuration.
struct Shop {
    api: Api,
    _server: Process,
    _dir: tempfile::TempDir,
}

/// How long the shop gets to come where a test waits for it.
const PATIENCE: Duration = Duration::from_secs(20);

impl Shop {
    fn start(agent_url: &str) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path(), agent_url);
        let port = free_port();
        let server = harness::process::serve(
            dir.path(),
            port,
            &[
                ("CONV_KEY", KEY),
                ("CONV_META_SECRET", META_SECRET),
                ("CONV_AGENT_SECRET", AGENT_SECRET),
            ],
        );
        Shop {
            api: Api::new(format!("http://127.0.0.1:{port}")),
            _server: server,
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.api.post(path, KEY, body).await
    }

    async fn get(&self, path: &str) -> Value {
        self.api.json(path, KEY).await
    }

    async fn lead(&self, id: &str) -> Value {
        self.api.lead(KEY, id).await
    }

    /// Waits (up to 20 s) until `ready` holds for the lead.
    async fn wait_lead(&self, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
        self.api.wait_lead(KEY, id, PATIENCE, ready).await
    }

    /// What the buyer's phone was sent: the sandbox's accepted sends.
    async fn sent(&self) -> Vec<Value> {
        self.api.sandbox(KEY, "acme").await["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (up to 20 s) until what was sent passes `ready`; what was sent
    /// then, or at the end.
    async fn wait_sent(&self, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let sent = async || self.sent().await;
        until(PATIENCE, POLL, sent, |sent| ready(sent))
            .await
            .unwrap_or_else(|sent| sent)
    }

    /// The buyer writes to the shop's number (`message` is Meta's message
    /// object, or a text).
    async fn buyer_writes(&self, from: &str, message: Value) -> Value {
        let number = handoff::server::delivery::sandbox_number_id("shop-main");
        let mut body = json!({"phone_number_id": number, "from": from, "name": "Aisha Khan"});
        match message {
            Value::String(text) => body["text"] = Value::String(text),
            other => body["message"] = other,
        }
        self.api.play(KEY, "acme", "inbound", &body).await
    }

    /// The buyer stops (or resumes) marketing messages in WhatsApp.
    async fn buyer_prefers(&self, from: &str, value: &str) {
        let number = handoff::server::delivery::sandbox_number_id("shop-main");
        let body = json!({"phone_number_id": number, "from": from, "value": value});
        self.api.play(KEY, "acme", "preferences", &body).await;
    }

    /// The lead with this phone number, once the service has it.
    async fn lead_by_phone(&self, phone: &str) -> String {
        let q = format!("/v1/leads?q={}", phone.trim_start_matches('+'));
        eventually(PATIENCE, POLL, async || {
            let found = self.get(&q).await;
            found["leads"][0]["id"]
                .as_str()
                .map(str::to_string)
                .ok_or(())
        })
        .await
        .unwrap_or_else(|()| panic!("no lead for {phone}"))
    }
}

fn lead_body(name: &str, phone: &str, intent: &str) -> Value {
    json!({
        "name": name,
        "phone": phone,
        "channel": "instagram",
        "intent": intent,
        "consent": {"whatsapp": true},
    })
}

fn decisions(lead: &Value) -> Vec<Value> {
    lead["decisions"].as_array().cloned().unwrap_or_default()
}

fn outcome(decision: &Value) -> String {
    decision["decision"]["handoff"]["outcome"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

fn sent_to(sent: &[Value], phone: &str) -> Vec<Value> {
    let digits = phone.trim_start_matches('+');
    sent.iter()
        .filter(|m| m["body"]["to"] == digits)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_buyer_who_writes_three_times_after_the_opener_gets_exactly_one_automated_message() {
    let shop = Shop::start("http://127.0.0.1:9/unused");
    let phone = "+919812345601";
    let (status, r) = shop
        .post("/v1/leads", &lead_body("Aisha Khan", phone, "buy"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["decision"]["handoff"]["outcome"], "template");
    let id = r["lead_id"].as_str().unwrap().to_string();
    shop.wait_lead(&id, |l| l["outbox"][0]["delivery"] == "delivered")
        .await;
    for text in [
        "Yes please, send the options",
        "Also, do you deliver to Goa?",
        "Hello?",
    ] {
        shop.buyer_writes(phone, json!(text)).await;
    }
    let lead = shop.wait_lead(&id, |l| decisions(l).len() == 4).await;
    // Whatever else happens in the next moments, nothing more is sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = sent_to(&shop.sent().await, phone);
    assert_eq!(sent.len(), 1, "one automated message in total: {sent:#?}");
    assert_eq!(sent[0]["body"]["template"]["name"], "shop_hello");
    let d = decisions(&lead);
    for later in &d[1..] {
        assert_eq!(later["decision"]["event"], "message", "{later:#}");
        assert_eq!(outcome(later), "already_open", "{later:#}");
    }
    assert_eq!(d[0]["decision"]["event"], "lead");
    let lines: Vec<&str> = lead["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == "lead")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "Yes please, send the options",
            "Also, do you deliver to Goa?",
            "Hello?"
        ]
    );
    assert_eq!(lead["thread"]["open"], true);
    // A refund written on the open thread goes to a person, and still no opener.
    shop.buyer_writes(phone, json!("I would like a refund"))
        .await;
    let lead = shop.wait_lead(&id, |l| decisions(l).len() == 5).await;
    assert_eq!(lead["thread"]["state"], "human");
    assert_eq!(lead["thread"]["queue"], "support");
    assert_eq!(sent_to(&shop.sent().await, phone).len(), 1);
}

#[tokio::test]
async fn a_closed_thread_opens_again_with_the_next_handoff() {
    let shop = Shop::start("http://127.0.0.1:9/unused");
    let phone = "+919812345602";
    let (_, r) = shop
        .post("/v1/leads", &lead_body("Ravi Menon", phone, "buy"))
        .await;
    let id = r["lead_id"].as_str().unwrap().to_string();
    shop.wait_lead(&id, |l| l["outbox"][0]["delivery"] == "delivered")
        .await;
    let (status, closed) = shop
        .post(&format!("/v1/leads/{id}/close"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{closed:#}");
    let lead = shop.lead(&id).await;
    assert_eq!(lead["thread"]["open"], false);
    assert!(lead["thread"]["closed_at"].is_string());
    let (status, again) = shop
        .post(&format!("/v1/leads/{id}/close"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again:#}");
    // The buyer writes after Done: a new conversation, opened with the
    // session message (the buyer's message opened the window).
    shop.buyer_writes(phone, json!("Hi again, is the offer still on?"))
        .await;
    let lead = shop.wait_lead(&id, |l| decisions(l).len() == 2).await;
    assert_eq!(outcome(&decisions(&lead)[1]), "session");
    let sent = shop.wait_sent(|sent| sent_to(sent, phone).len() == 2).await;
    let sent = sent_to(&sent, phone);
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(
        sent[1]["body"]["text"]["body"],
        "Hi Ravi, thanks for writing to us."
    );
    let lead = shop.lead(&id).await;
    assert_eq!(lead["thread"]["open"], true);
    assert!(
        lead["thread"]["closed_at"].is_string(),
        "the last closing is kept"
    );
}

#[tokio::test]
async fn an_agent_hears_each_message_on_its_thread_and_its_reply_reaches_the_buyer() {
    let agent = hook("/agent", AGENT_SECRET, vec![]).await;
    let shop = Shop::start(&agent.url);
    let phone = "+919812345603";
    let (_, r) = shop
        .post("/v1/leads", &lead_body("Meera Iyer", phone, "question"))
        .await;
    let id = r["lead_id"].as_str().unwrap().to_string();
    shop.wait_lead(&id, |l| l["thread"]["assignee"] == "qualifier")
        .await;
    shop.buyer_writes(
        phone,
        json!({"type": "image", "image": {"caption": "This is the venue I like", "mime_type": "image/jpeg", "sha256": "abc", "id": "1234"}}),
    )
    .await;
    let received = eventually(PATIENCE, POLL, async || {
        let events = agent.events();
        let got = events.iter().find(|e| e["type"] == "message.received");
        got.cloned().ok_or(events)
    })
    .await
    .unwrap_or_else(|events| panic!("the agent got no message: {events:#?}"));
    assert_eq!(
        received["data"]["message"]["text"],
        "[image] This is the venue I like"
    );
    assert_eq!(received["data"]["message"]["kind"], "image");
    assert_eq!(received["data"]["lead"]["id"], id.as_str());
    assert_eq!(received["data"]["lead"]["name"], "Meera Iyer");

    // The agent answers as itself; the buyer's phone gets it.
    let (status, reply) = shop
        .post(
            &format!("/v1/leads/{id}/reply"),
            &json!({"agent": "qualifier", "text": "Lovely choice! For how many guests?"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply:#}");
    let replied = |sent: &[Value]| {
        sent_to(sent, phone)
            .iter()
            .any(|m| m["body"]["text"]["body"] == "Lovely choice! For how many guests?")
    };
    let sent = shop.wait_sent(replied).await;
    assert!(replied(&sent), "{:#?}", sent_to(&sent, phone));
    let lead = shop.lead(&id).await;
    assert_eq!(lead["thread"]["state"], "automated");
    let last = lead["transcript"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["from"], "agent:qualifier");

    // A person takes the thread from the agent: its replies are refused.
    let (status, _) = shop
        .post(&format!("/v1/leads/{id}/takeover"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, refused) = shop
        .post(
            &format!("/v1/leads/{id}/reply"),
            &json!({"agent": "qualifier", "text": "Still there?"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused:#}");
    let (status, unknown) = shop
        .post(
            &format!("/v1/leads/{id}/reply"),
            &json!({"agent": "nobody", "text": "Hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{unknown:#}");
}

#[tokio::test]
async fn a_marketing_stop_blocks_the_next_marketing_template_and_not_a_utility_one() {
    let shop = Shop::start("http://127.0.0.1:9/unused");
    // Known on WhatsApp (wrote in first), known only by phone (an API lead),
    // and not known at all when they stop.
    let known = "+919812345611";
    let by_phone = "+919812345612";
    let stranger = "+919812345613";
    shop.buyer_writes(known, json!("Hi")).await;
    shop.lead_by_phone(known).await;
    let (_, r) = shop
        .post(
            "/v1/leads",
            &json!({"name": "Dev", "phone": by_phone, "channel": "web_form"}),
        )
        .await;
    let by_phone_id = r["lead_id"].as_str().unwrap().to_string();
    for phone in [known, by_phone, stranger] {
        shop.buyer_prefers(phone.trim_start_matches('+'), "stop")
            .await;
    }
    let lead = shop
        .wait_lead(&by_phone_id, |l| l["marketing_opt_out"] == true)
        .await;
    assert!(lead["consents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["channel"] == "whatsapp_marketing" && c["granted"] == false));
    for phone in [known, by_phone, stranger] {
        let (_, r) = shop
            .post("/v1/leads", &lead_body("Buyer", phone, "offer"))
            .await;
        assert_eq!(
            r["decision"]["handoff"]["outcome"], "blocked_marketing_opt_out",
            "{phone}: {r:#}"
        );
    }
    // A utility template still goes out to each of them (the window is
    // closed for the two who never wrote).
    let offered = "+919812345614";
    let (_, r) = shop
        .post("/v1/leads", &lead_body("Other", offered, "offer"))
        .await;
    assert_eq!(r["decision"]["handoff"]["outcome"], "template");
    for phone in [by_phone, stranger] {
        let (_, r) = shop
            .post("/v1/leads", &lead_body("Buyer", phone, "buy"))
            .await;
        assert_eq!(
            r["decision"]["handoff"]["outcome"], "template",
            "{phone}: {r:#}"
        );
    }
    let sent = shop.wait_sent(|sent| sent.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = if sent.len() >= 3 {
        shop.sent().await
    } else {
        sent
    };
    let names: Vec<(String, String)> = sent
        .iter()
        .map(|m| {
            (
                m["body"]["to"].as_str().unwrap_or("").to_string(),
                m["body"]["template"]["name"]
                    .as_str()
                    .unwrap_or("text")
                    .to_string(),
            )
        })
        .collect();
    assert!(
        names.contains(&("919812345614".into(), "shop_offer".into())),
        "{names:?}"
    );
    assert!(
        names.contains(&("919812345612".into(), "shop_hello".into())),
        "{names:?}"
    );
    assert!(
        names.contains(&("919812345613".into(), "shop_hello".into())),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|(to, name)| name == "shop_offer" && to != "919812345614"),
        "no marketing template reached a buyer who stopped them: {names:?}"
    );
    // "resume" lifts it.
    shop.buyer_prefers(stranger.trim_start_matches('+'), "resume")
        .await;
    let (_, r) = shop
        .post("/v1/leads", &lead_body("Buyer", stranger, "offer"))
        .await;
    // The stranger's thread is open now (the utility template): no second opener.
    assert_eq!(r["decision"]["handoff"]["outcome"], "already_open", "{r:#}");
    let id = r["lead_id"].as_str().unwrap();
    assert_eq!(shop.lead(id).await["marketing_opt_out"], false);
}

#[tokio::test]
async fn every_kind_of_message_leaves_a_readable_transcript_line() {
    let shop = Shop::start("http://127.0.0.1:9/unused");
    let phone = "+919812345621";
    let kinds = [
        json!({"type": "text", "text": {"body": "Hello there"}}),
        json!({"type": "image", "image": {"caption": "This is the venue I like", "mime_type": "image/jpeg", "sha256": "a", "id": "1"}}),
        json!({"type": "video", "video": {"mime_type": "video/mp4", "sha256": "b", "id": "2"}}),
        json!({"type": "audio", "audio": {"mime_type": "audio/ogg", "sha256": "c", "id": "3", "voice": true}}),
        json!({"type": "document", "document": {"filename": "guest-list.pdf", "caption": "Our guests", "mime_type": "application/pdf", "sha256": "d", "id": "4"}}),
        json!({"type": "sticker", "sticker": {"mime_type": "image/webp", "sha256": "e", "id": "5", "animated": false}}),
        json!({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes, call me"}}}),
        json!({"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "gold", "title": "Gold package", "description": "Up to 200 guests"}}}),
        json!({"type": "button", "button": {"payload": "STOP_PROMOS", "text": "Not now"}}),
        json!({"type": "location", "location": {"latitude": 15.2345, "longitude": 73.9345, "name": "Taj Exotica", "address": "Benaulim, Goa"}}),
        json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "Rahul Mehta", "first_name": "Rahul"}, "phones": [{"phone": "+91 98200 11111", "type": "CELL"}]}]}),
        json!({"type": "unsupported", "errors": [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown", "error_data": {"details": "Message type is currently not supported."}}]}),
    ];
    for kind in &kinds {
        shop.buyer_writes(phone, kind.clone()).await;
    }
    let id = shop.lead_by_phone(phone).await;
    let lead = shop
        .wait_lead(&id, |l| {
            l["transcript"].as_array().map_or(0, |t| t.len()) == kinds.len()
        })
        .await;
    let lines: Vec<String> = lead["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    let expect_contains = [
        "Hello there",
        "[image] This is the venue I like",
        "[video]",
        "[voice message]",
        "[document: guest-list.pdf] Our guests",
        "[sticker]",
        "Yes, call me",
        "Gold package",
        "Not now",
        "Taj Exotica",
        "Rahul Mehta",
        "[unsupported",
    ];
    for (line, want) in lines.iter().zip(expect_contains) {
        assert!(
            line.contains(want),
            "`{line}` should contain `{want}`: {lines:#?}"
        );
        assert!(!line.trim().is_empty());
    }
    assert!(lines[9].contains("Benaulim"), "{}", lines[9]);
    assert!(lines[10].contains("+91 98200 11111"), "{}", lines[10]);

    // An Instagram message with only an attachment leaves its line too.
    let body = serde_json::to_vec(&json!({
        "object": "instagram",
        "entry": [{"id": "17841400000000001", "time": 1_800_000_000_000_i64, "messaging": [{
            "sender": {"id": "4410000000000001"},
            "recipient": {"id": "17841400000000001"},
            "timestamp": 1_800_000_000_000_i64,
            "message": {"mid": "aWdfZAG1faWQ", "attachments": [{"type": "image", "payload": {"url": "https://lookaside.example/ig/1"}}]}
        }]}]
    }))
    .unwrap();
    let (status, r) = shop
        .api
        .post_meta("/webhooks/meta/acme", &body, META_SECRET)
        .await;
    assert!(status.is_success(), "{status}: {r:#}");
    eventually(PATIENCE, POLL, async || {
        let all = shop.get("/v1/leads?q=").await;
        let found = all["leads"].as_array().unwrap().iter().find_map(|l| {
            let id = l["id"].as_str()?;
            (id != id_str(&lead)).then(|| id.to_string())
        });
        if let Some(other) = found {
            let ig = shop.lead(&other).await;
            if let Some(line) = ig["transcript"][0]["text"].as_str() {
                assert_eq!(ig["transcript"][0]["channel"], "instagram");
                assert!(line.contains("[image]"), "{line}");
                return Ok(());
            }
        }
        Err(all)
    })
    .await
    .unwrap_or_else(|all| panic!("no Instagram lead: {all:#}"));
}

fn id_str(lead: &Value) -> &str {
    lead["id"].as_str().unwrap_or("")
}

#[tokio::test]
async fn the_demo_account_decides_a_message_written_to_its_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let database = format!("sqlite://{}", dir.path().join("demo.db").display());
    let key = "demo-conversations-key";
    let (_server, base) = harness::process::serve_with(
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            &database,
        ],
        &[("HANDOFF_DEMO_API_KEY", key)],
    );
    let demo = Api::new(base);
    // The README's line: a buyer writes to the demo's sandbox number.
    let inbound = json!({"from": "919876500001", "name": "Farah", "text": "Hi, do you do birthday parties in Pune?"});
    demo.play(key, "demo", "inbound", &inbound).await;
    let lead = async || demo.find_lead(key, "919876500001").await;
    let lead = until(PATIENCE, POLL, lead, |lead| !decisions(lead).is_empty())
        .await
        .unwrap_or_else(|_| panic!("the demo decided nothing"));
    let d = &decisions(&lead)[0];
    assert_eq!(d["playbook"], "events", "{d:#}");
    assert_eq!(d["decision"]["event"], "message");
    assert_eq!(d["decision"]["rules"], json!(["whatsapp_first_contact"]));
    assert_eq!(lead["thread"]["queue"], "events-triage");
    assert_eq!(
        lead["transcript"][0]["text"],
        "Hi, do you do birthday parties in Pune?"
    );
}
