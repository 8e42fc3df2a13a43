//! The WhatsApp sandbox over real HTTP on 127.0.0.1:0, driven by the real
//! `CloudClient`, with a small webhook receiver standing in for `handoff
//! serve` so signatures and payloads are checked as the router would.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use handoff::intake::{
    parse_whatsapp_webhook, verify_meta_signature, DeliveryStatus, InboundEvent,
    WhatsappUserPreference,
};
use handoff::whatsapp::sandbox::{router, serve};
use handoff::whatsapp::{
    CloudClient, Content, ErrorClass, OutboundMessage, Sandbox, SandboxConfig, SandboxTemplate,
    SendError,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const NUMBER: &str = "106540352242922";
const DISPLAY: &str = "15550783881";
const TOKEN: &str = "EAAG-sandbox-token";
const SECRET: &str = "sandbox-app-secret";
const AISHA: &str = "919820012345";
/// Generous: only a broken sandbox takes this long, so no test measures time.
const PATIENCE: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&harness::fixture(name)).unwrap()
}

fn templates() -> Vec<SandboxTemplate> {
    vec![
        SandboxTemplate {
            name: "event_options".into(),
            language: "en".into(),
            category: "utility".into(),
            params: 3,
            approved: true,
        },
        SandboxTemplate {
            name: "event_promo".into(),
            language: "en".into(),
            category: "marketing".into(),
            params: 0,
            approved: true,
        },
    ]
}

fn config() -> SandboxConfig {
    SandboxConfig {
        templates: templates(),
        numbers: vec![(NUMBER.into(), DISPLAY.into())],
        tokens: vec![TOKEN.into()],
        ..SandboxConfig::default()
    }
}

/// A running sandbox, its URL and a client for its control API.
struct Running {
    sandbox: Arc<Sandbox>,
    base: String,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Running {
    async fn start(config: SandboxConfig) -> Running {
        let sandbox = Arc::new(Sandbox::new(config).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(sandbox.clone(), listener, async {
            let _ = stopped.await;
        }));
        Running {
            sandbox,
            base,
            http: reqwest::Client::new(),
            _stop: stop,
        }
    }

    fn client(&self) -> CloudClient {
        CloudClient::new(&self.base, "v23.0", Duration::from_secs(10)).unwrap()
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.control(reqwest::Method::POST, path, Some(body)).await
    }

    async fn recorded(&self) -> Value {
        self.control(reqwest::Method::GET, "/_sandbox/messages", None)
            .await
    }

    async fn send(&self, message: &OutboundMessage) -> Result<handoff::whatsapp::Sent, SendError> {
        self.client().send(NUMBER, TOKEN, message).await
    }
}

/// A webhook receiver: every POST's signature header and raw body, in order.
/// It answers 500 to its first `refuse_first` POSTs, as a restarting server would.
struct Receiver {
    url: String,
    posts: mpsc::UnboundedReceiver<(Option<String>, Bytes)>,
    _stop: oneshot::Sender<()>,
}

impl Receiver {
    async fn start(refuse_first: usize) -> Receiver {
        let (tx, posts) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/webhooks/meta/acme",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                let seen = seen.clone();
                async move {
                    let signature = headers
                        .get("x-hub-signature-256")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let _ = tx.send((signature, body));
                    if seen.fetch_add(1, Ordering::SeqCst) < refuse_first {
                        (StatusCode::INTERNAL_SERVER_ERROR, "restarting")
                    } else {
                        (StatusCode::OK, "EVENT_RECEIVED")
                    }
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/webhooks/meta/acme",
            listener.local_addr().unwrap()
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Receiver {
            url,
            posts,
            _stop: stop,
        }
    }

    /// The next POST, its signature checked as `handoff serve` checks it.
    async fn next_verified(&mut self) -> Bytes {
        let (signature, body) = tokio::time::timeout(PATIENCE, self.posts.recv())
            .await
            .expect("a webhook arrives")
            .expect("the receiver is running");
        verify_meta_signature(signature.as_deref(), &body, &[SECRET]).unwrap();
        body
    }
}

fn signed_config(webhook: &Receiver) -> SandboxConfig {
    SandboxConfig {
        app_secret: Some(SECRET.into()),
        webhook_url: Some(webhook.url.clone()),
        ..config()
    }
}

fn options_template(to: &str, callback: Option<&str>) -> OutboundMessage {
    OutboundMessage {
        to: to.into(),
        content: Content::Template {
            name: "event_options".into(),
            language: "en".into(),
            params: vec!["Aisha".into(), "March 14".into(), "Goa".into()],
        },
        callback: callback.map(str::to_string),
    }
}

fn text(to: &str, body: &str) -> OutboundMessage {
    OutboundMessage {
        to: to.into(),
        content: Content::Text { body: body.into() },
        callback: None,
    }
}

fn meta_class(result: Result<handoff::whatsapp::Sent, SendError>) -> (ErrorClass, SendError) {
    let error = result.unwrap_err();
    (error.class().expect("a Meta error"), error)
}

/// Keys and value types, recursively: two payloads of the same shape agree.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().take(1).map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

#[tokio::test]
async fn a_template_send_returns_a_wamid_and_is_recorded() {
    let sandbox = Running::start(config()).await;
    let message = options_template("+919820012345", Some("outbox:42"));
    let sent = sandbox.send(&message).await.unwrap();
    assert!(sent.message_id.starts_with("wamid."), "{}", sent.message_id);
    assert_eq!(sent.wa_id.as_deref(), Some(AISHA));

    let recorded = sandbox.recorded().await;
    assert_eq!(recorded["accepted"], 1);
    let one = &recorded["messages"][0];
    assert_eq!(one["wamid"], json!(sent.message_id));
    assert_eq!(one["phone_number_id"], NUMBER);
    assert_eq!(one["to"], "+919820012345");
    assert_eq!(one["wa_id"], AISHA);
    assert_eq!(one["type"], "template");
    assert_eq!(one["callback"], "outbox:42");
    assert_eq!(one["body"], message.body());
    assert!(one["at"].is_string());
}

#[tokio::test]
async fn an_unknown_template_is_template_missing_and_a_wrong_count_a_mismatch() {
    let sandbox = Running::start(config()).await;
    let mut unknown = options_template(AISHA, None);
    unknown.content = Content::Template {
        name: "event_nonexistent".into(),
        language: "en".into(),
        params: vec![],
    };
    let (class, error) = meta_class(sandbox.send(&unknown).await);
    assert_eq!(class, ErrorClass::TemplateMissing);
    assert!(matches!(&error, SendError::Meta { error, .. } if error.code == 132001));
    assert!(!error.retryable());

    let mut short = options_template(AISHA, None);
    short.content = Content::Template {
        name: "event_options".into(),
        language: "en".into(),
        params: vec!["Aisha".into()],
    };
    let (class, error) = meta_class(sandbox.send(&short).await);
    assert_eq!(class, ErrorClass::TemplateMismatch);
    assert!(matches!(&error, SendError::Meta { error, .. } if error.code == 132000));

    // A template Meta un-approves is missing from then on.
    sandbox
        .post(
            "/_sandbox/templates",
            json!({"name":"event_options","language":"en","params":3,"approved":false}),
        )
        .await;
    let (class, _) = meta_class(sandbox.send(&options_template(AISHA, None)).await);
    assert_eq!(class, ErrorClass::TemplateMissing);

    let recorded = sandbox.recorded().await;
    assert_eq!(recorded["accepted"], 0);
    assert_eq!(recorded["rejected"], json!({"132000": 1, "132001": 2}));
}

#[tokio::test]
async fn free_text_needs_the_window_which_inbound_opens_and_time_closes() {
    let sandbox = Running::start(config()).await;
    let hello = text(AISHA, "Here are the Goa options");
    let (class, error) = meta_class(sandbox.send(&hello).await);
    assert_eq!(class, ErrorClass::WindowClosed);
    assert!(!error.retryable());

    let inbound = sandbox
        .post(
            "/_sandbox/inbound",
            json!({"from": AISHA, "name": "Aisha", "text": "Yes please send the Goa options"}),
        )
        .await;
    assert_eq!(inbound["phone_number_id"], NUMBER);
    assert_eq!(inbound["webhook"], Value::Null);
    assert!(sandbox.sandbox.window_open_until(NUMBER, AISHA).is_some());
    let sent = sandbox.send(&hello).await.unwrap();
    assert_eq!(sent.wa_id.as_deref(), Some(AISHA));

    // The window is per user: someone else still gets 131047.
    let (class, _) = meta_class(sandbox.send(&text("447700900123", "hi")).await);
    assert_eq!(class, ErrorClass::WindowClosed);

    // 23 hours later it is still open; 24 hours after the user wrote, closed.
    sandbox
        .post("/_sandbox/clock", json!({"advance_seconds": 23 * 3600}))
        .await;
    sandbox.send(&hello).await.unwrap();
    sandbox
        .post("/_sandbox/clock", json!({"advance_seconds": 3600}))
        .await;
    let (class, _) = meta_class(sandbox.send(&hello).await);
    assert_eq!(class, ErrorClass::WindowClosed);
    assert_eq!(sandbox.sandbox.window_open_until(NUMBER, AISHA), None);
    // Templates are not bound by the window.
    sandbox.send(&options_template(AISHA, None)).await.unwrap();

    let recorded = sandbox.recorded().await;
    assert_eq!(recorded["accepted"], 3);
    assert_eq!(recorded["rejected"], json!({"131047": 3}));
}

#[tokio::test]
async fn the_closed_window_answer_is_metas_field_for_field() {
    let sandbox = Running::start(config()).await;
    let response = sandbox
        .http
        .post(format!("{}/v23.0/{NUMBER}/messages", sandbox.base))
        .bearer_auth(TOKEN)
        .json(&text(AISHA, "hi").body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let mut answer: Value = response.json().await.unwrap();
    let mut expected = fixture("whatsapp-send-error-131047.json");
    assert!(answer["error"]["fbtrace_id"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    answer["error"]["fbtrace_id"] = Value::Null;
    expected["error"]["fbtrace_id"] = Value::Null;
    assert_eq!(answer, expected);
}

#[tokio::test]
async fn metas_own_template_payload_is_accepted() {
    let sandbox = Running::start(config()).await;
    // Written out by hand from the design notes, not built by the client.
    let body = r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"919820012345",
        "type":"template","template":{"name":"event_options","language":{"code":"en"},
        "components":[{"type":"body","parameters":[{"type":"text","text":"Aisha"},
        {"type":"text","text":"March 14"},{"type":"text","text":"Goa"}]}]}}"#;
    let response = sandbox
        .http
        .post(format!("{}/v23.0/{NUMBER}/messages", sandbox.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(shape(&answer), shape(&fixture("whatsapp-send-ok.json")));
    assert_eq!(
        answer["contacts"][0],
        json!({"input": AISHA, "wa_id": AISHA})
    );
    let recorded = sandbox.recorded().await;
    assert_eq!(
        recorded["messages"][0]["body"],
        serde_json::from_str::<Value>(body).unwrap()
    );
}

#[tokio::test]
async fn a_rate_limit_once_is_retryable_with_its_retry_after_then_succeeds() {
    let sandbox = Running::start(config()).await;
    sandbox
        .post(
            "/_sandbox/faults",
            json!({"code": 130429, "count": 1, "retry_after": 7}),
        )
        .await;
    let message = options_template(AISHA, None);
    let (class, error) = meta_class(sandbox.send(&message).await);
    assert_eq!(class, ErrorClass::RateLimited);
    assert!(error.retryable());
    match &error {
        SendError::Meta { error, retry_after } => {
            assert_eq!(error.code, 130429);
            assert_eq!(error.http_status, 400);
            assert_eq!(*retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("{other:?}"),
    }
    sandbox.send(&message).await.unwrap();
    let recorded = sandbox.recorded().await;
    assert_eq!(
        (recorded["accepted"].as_u64(), &recorded["rejected"]),
        (Some(1), &json!({"130429": 1}))
    );
}

#[tokio::test]
async fn throttling_may_answer_429_and_faults_pick_their_recipient() {
    let sandbox = Running::start(config()).await;
    sandbox
        .post(
            "/_sandbox/faults",
            json!({"code": 131056, "http_status": 429, "to": "+447700900123"}),
        )
        .await;
    sandbox.send(&options_template(AISHA, None)).await.unwrap();
    let (class, error) = meta_class(sandbox.send(&options_template("447700900123", None)).await);
    assert_eq!(class, ErrorClass::PairRateLimited);
    assert!(
        matches!(&error, SendError::Meta { error, retry_after: None } if error.http_status == 429)
    );
    sandbox
        .send(&options_template("447700900123", None))
        .await
        .unwrap();
}

#[tokio::test]
async fn server_errors_are_retryable_whether_json_or_html() {
    let sandbox = Running::start(config()).await;
    let message = options_template(AISHA, None);
    sandbox
        .post("/_sandbox/faults", json!({"http_status": 503}))
        .await;
    let (class, error) = meta_class(sandbox.send(&message).await);
    assert_eq!(class, ErrorClass::Unavailable);
    assert!(
        matches!(&error, SendError::Meta { error, .. } if error.code == 2 && error.http_status == 503)
    );
    assert!(error.retryable());

    sandbox
        .post(
            "/_sandbox/faults",
            json!({"http_status": 502, "html": true}),
        )
        .await;
    let error = sandbox.send(&message).await.unwrap_err();
    assert!(
        matches!(&error, SendError::Unexpected { status: 502, body } if body.contains("<html>"))
    );
    assert!(error.retryable());

    // An unknown code under a 5xx is Meta being unwell, not a refusal.
    sandbox
        .post(
            "/_sandbox/faults",
            json!({"code": 999001, "http_status": 500}),
        )
        .await;
    let (class, error) = meta_class(sandbox.send(&message).await);
    assert_eq!(class, ErrorClass::Unavailable);
    assert!(error.retryable());

    sandbox.send(&message).await.unwrap();
}

#[tokio::test]
async fn a_slow_answer_is_a_transport_error_though_the_send_went_through() {
    let sandbox = Running::start(config()).await;
    sandbox
        .post("/_sandbox/faults", json!({"delay_ms": 1500}))
        .await;
    let impatient = CloudClient::new(&sandbox.base, "v23.0", Duration::from_millis(200)).unwrap();
    let error = impatient
        .send(NUMBER, TOKEN, &options_template(AISHA, Some("outbox:7")))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Transport(_)), "{error:?}");
    assert!(error.retryable());
    assert!(error.to_string().contains("may or may not have been sent"));
    // As with Meta, the client gave up but the message was still accepted.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let recorded = sandbox.recorded().await;
        if recorded["accepted"] == 1 {
            assert_eq!(recorded["messages"][0]["callback"], "outbox:7");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delayed send is never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tokens_are_checked_and_never_shown() {
    let sandbox = Running::start(config()).await;
    let wrong = "EAAG-wrong-token-123";
    let (class, error) = meta_class(
        sandbox
            .client()
            .send(NUMBER, wrong, &options_template(AISHA, None))
            .await,
    );
    assert_eq!(class, ErrorClass::TokenInvalid);
    assert!(
        matches!(&error, SendError::Meta { error, .. } if error.code == 190 && error.http_status == 401)
    );
    assert!(!format!("{error} {error:?}").contains(wrong));
    let unknown_number = sandbox
        .client()
        .send("999999", TOKEN, &options_template(AISHA, None))
        .await
        .unwrap_err();
    assert_eq!(unknown_number.class(), Some(ErrorClass::Rejected));
}

#[tokio::test]
async fn the_sandbox_nests_under_a_prefix() {
    let sandbox = Arc::new(Sandbox::new(config()).unwrap());
    let app = axum::Router::new().nest("/sandbox", router(sandbox.clone()));
    let base = format!("http://{}/sandbox/", harness::listen(app).await);
    let client = CloudClient::new(&base, "v24.0", Duration::from_secs(10)).unwrap();
    let sent = client
        .send(NUMBER, TOKEN, &options_template(AISHA, None))
        .await
        .unwrap();
    assert_eq!(sandbox.messages()[0].wamid, sent.message_id);
    let recorded: Value = reqwest::get(format!("{base}_sandbox/messages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recorded["accepted"], 1);
}

#[tokio::test]
async fn status_webhooks_arrive_signed_with_the_callback_even_after_a_refusal() {
    // The receiver refuses the first POST: the sandbox delivers it again.
    let mut webhook = Receiver::start(1).await;
    let sandbox = Running::start(signed_config(&webhook)).await;
    let sent = sandbox
        .send(&options_template("+919820012345", Some("outbox:42")))
        .await
        .unwrap();

    let refused = webhook.next_verified().await;
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        let body = webhook.next_verified().await;
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["entry"][0]["id"], "102290129340398");
        assert_eq!(
            value["entry"][0]["changes"][0]["value"]["metadata"],
            json!({"display_phone_number": DISPLAY, "phone_number_id": NUMBER})
        );
        statuses.push((body.clone(), parse_whatsapp_webhook(&body).unwrap()));
    }
    // The redelivery is the same bytes, so the same signature.
    assert_eq!(refused, statuses[0].0);
    let read: Vec<_> = statuses
        .iter()
        .flat_map(|(_, events)| events.iter())
        .map(|event| match event {
            InboundEvent::WhatsappStatus(status) => status.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        read.iter().map(|s| s.status).collect::<Vec<_>>(),
        [DeliveryStatus::Sent, DeliveryStatus::Delivered]
    );
    for status in &read {
        assert_eq!(status.message_id, sent.message_id);
        assert_eq!(status.recipient_id, AISHA);
        assert_eq!(status.phone_number_id, NUMBER);
        assert_eq!(
            status.biz_opaque_callback_data.as_deref(),
            Some("outbox:42")
        );
        assert!(status.errors.is_empty());
    }
}

#[tokio::test]
async fn a_failure_reported_as_status_accepts_then_sends_failed() {
    let mut webhook = Receiver::start(0).await;
    let sandbox = Running::start(signed_config(&webhook)).await;
    sandbox
        .post(
            "/_sandbox/faults",
            json!({"code": 131026, "as_status": true, "details": "Message Undeliverable: not on WhatsApp."}),
        )
        .await;
    let sent = sandbox
        .send(&options_template(AISHA, Some("outbox:43")))
        .await
        .unwrap();
    let body = webhook.next_verified().await;
    let events = parse_whatsapp_webhook(&body).unwrap();
    let [InboundEvent::WhatsappStatus(status)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(status.status, DeliveryStatus::Failed);
    assert_eq!(status.message_id, sent.message_id);
    assert_eq!(
        status.biz_opaque_callback_data.as_deref(),
        Some("outbox:43")
    );
    assert_eq!(status.errors.len(), 1);
    assert_eq!(status.errors[0].code, 131026);
    assert_eq!(
        status.errors[0].title.as_deref(),
        Some("Message undeliverable")
    );
    assert_eq!(
        status.errors[0].details.as_deref(),
        Some("Message Undeliverable: not on WhatsApp.")
    );
    let value: Value = serde_json::from_slice(&body).unwrap();
    let failed = &value["entry"][0]["changes"][0]["value"]["statuses"][0];
    let expected =
        &fixture("whatsapp-statuses.json")["entry"][0]["changes"][0]["value"]["statuses"][3];
    assert_eq!(shape(failed), shape(expected));
    assert_eq!(
        sandbox.recorded().await["messages"][0]["failed_code"],
        131026
    );
}

#[tokio::test]
async fn inbound_posts_a_signed_webhook_shaped_like_metas() {
    let mut webhook = Receiver::start(0).await;
    let sandbox = Running::start(SandboxConfig {
        status_webhooks: false,
        ..signed_config(&webhook)
    })
    .await;
    let answer = sandbox
        .post(
            "/_sandbox/inbound",
            json!({"phone_number_id": NUMBER, "from": AISHA, "name": "Aisha Khan", "text": "Yes please send the Goa options"}),
        )
        .await;
    assert_eq!(answer["webhook"]["status"], 200);
    assert_eq!(answer["webhook"]["body"], "EVENT_RECEIVED");
    let body = webhook.next_verified().await;
    let value: Value = serde_json::from_slice(&body).unwrap();
    let fixture = fixture("whatsapp-inbound-text.json");
    assert_eq!(shape(&value), shape(&fixture));
    let message = &value["entry"][0]["changes"][0]["value"]["messages"][0];
    assert_eq!(message["id"], answer["message_id"]);
    let events = parse_whatsapp_webhook(&body).unwrap();
    let [InboundEvent::WhatsappMessage(message)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(message.wa_id, AISHA);
    assert_eq!(message.phone_number_id, NUMBER);
    assert_eq!(message.profile_name.as_deref(), Some("Aisha Khan"));
    assert_eq!(
        message.text.as_deref(),
        Some("Yes please send the Goa options")
    );

    // With status webhooks off, a send posts nothing: the next POST the
    // receiver sees is the second inbound.
    sandbox.send(&text(AISHA, "Here you go")).await.unwrap();
    sandbox
        .post(
            "/_sandbox/inbound",
            json!({"from": AISHA, "text": "thanks"}),
        )
        .await;
    let next: Value = serde_json::from_slice(&webhook.next_verified().await).unwrap();
    assert_eq!(
        next["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"],
        "thanks"
    );
}

#[tokio::test]
async fn concurrent_sends_are_each_recorded_exactly_once() {
    const SENDS: usize = 200;
    let sandbox = Running::start(config()).await;
    let client = sandbox.client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SENDS {
        let client = client.clone();
        tasks.spawn(async move {
            let message = options_template(&format!("9198200{i:05}"), Some(&format!("outbox:{i}")));
            client.send(NUMBER, TOKEN, &message).await
        });
    }
    let mut wamids = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        wamids.insert(result.unwrap().unwrap().message_id);
    }
    assert_eq!(wamids.len(), SENDS, "every wamid is unique");
    let recorded = sandbox.recorded().await;
    let messages = recorded["messages"].as_array().unwrap();
    assert_eq!(messages.len(), SENDS);
    let recorded_wamids: BTreeSet<String> = messages
        .iter()
        .map(|m| m["wamid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(recorded_wamids, wamids);
    let callbacks: BTreeSet<String> = messages
        .iter()
        .map(|m| m["callback"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        callbacks,
        (0..SENDS).map(|i| format!("outbox:{i}")).collect()
    );

    sandbox
        .control(reqwest::Method::DELETE, "/_sandbox/messages", None)
        .await;
    assert_eq!(sandbox.recorded().await["accepted"], 0);
}

#[tokio::test]
async fn the_control_api_refuses_nonsense_and_says_why() {
    let sandbox = Running::start(config()).await;
    for (path, body) in [
        ("/_sandbox/faults", json!({"count": 2})),
        (
            "/_sandbox/faults",
            json!({"code": 131026, "as_status": true, "http_status": 500}),
        ),
        ("/_sandbox/faults", json!({"cod": 1})),
        ("/_sandbox/clock", json!({"seconds": 5})),
        (
            "/_sandbox/inbound",
            json!({"from": "not a number", "text": "hi"}),
        ),
        ("/_sandbox/templates", json!({"name": "", "language": "en"})),
    ] {
        let response = sandbox
            .http
            .post(format!("{}{path}", sandbox.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path} {body}");
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    assert_eq!(
        sandbox
            .control(reqwest::Method::GET, "/_sandbox/faults", None)
            .await,
        json!({"faults": []})
    );
}

/// The message object of a `messages` webhook, and the webhook as the router reads it.
fn played_message(body: &Bytes) -> (Value, handoff::intake::WhatsappMessage) {
    let value: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(value["entry"][0]["changes"][0]["field"], "messages");
    let message = value["entry"][0]["changes"][0]["value"]["messages"][0].clone();
    let events = parse_whatsapp_webhook(body).unwrap();
    let [InboundEvent::WhatsappMessage(read)] = events.as_slice() else {
        panic!("{events:?}");
    };
    (message, read.clone())
}

/// `played` with the fields the sandbox fills, as Meta's webhook carries it.
fn as_meta_sends(played: &Value, from: &str, answer: &Value, sent: &Value) -> Value {
    let mut expected = played.clone();
    expected["from"] = json!(from);
    expected["id"] = answer["message_id"].clone();
    assert!(
        sent["timestamp"]
            .as_str()
            .is_some_and(|t| t.parse::<i64>().is_ok()),
        "{sent}"
    );
    expected["timestamp"] = sent["timestamp"].clone();
    expected
}

#[tokio::test]
async fn an_image_played_inbound_arrives_as_meta_sends_it_and_opens_the_window() {
    let mut webhook = Receiver::start(0).await;
    let sandbox = Running::start(SandboxConfig {
        status_webhooks: false,
        ..signed_config(&webhook)
    })
    .await;
    let (class, _) = meta_class(sandbox.send(&text(AISHA, "Lovely choice")).await);
    assert_eq!(class, ErrorClass::WindowClosed);

    let image = json!({"type": "image", "image": {"caption": "This is the venue I like",
        "mime_type": "image/jpeg", "sha256": "4d3c9f1e0b8a7c6d5e4f3a2b1c0d9e8f", "id": "1234"}});
    let answer = sandbox
        .post(
            "/_sandbox/inbound",
            json!({"from": AISHA, "name": "Aisha Khan", "message": image}),
        )
        .await;
    assert_eq!(answer["webhook"]["status"], 200);
    let body = webhook.next_verified().await;
    let (message, read) = played_message(&body);
    assert_eq!(message, as_meta_sends(&image, AISHA, &answer, &message));
    // Meta's order: from, id, timestamp, type, then the type's object.
    let raw = String::from_utf8(body.to_vec()).unwrap();
    let id = answer["message_id"].as_str().unwrap();
    assert!(
        raw.contains(&format!(
            r#""messages":[{{"from":"{AISHA}","id":"{id}","timestamp":"#
        )) && raw.contains(r#","type":"image","image":{"#),
        "{raw}"
    );
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        value["entry"][0]["changes"][0]["value"]["contacts"],
        json!([{"profile": {"name": "Aisha Khan"}, "wa_id": AISHA}])
    );
    assert_eq!(read.kind, "image");
    assert_eq!(read.message_id, id);
    assert_eq!(read.text, None);
    assert_eq!(read.line, "[image] This is the venue I like");

    assert!(sandbox.sandbox.window_open_until(NUMBER, AISHA).is_some());
    sandbox.send(&text(AISHA, "Lovely choice")).await.unwrap();
}

#[tokio::test]
async fn every_kind_of_message_is_played_as_meta_sends_it() {
    let mut webhook = Receiver::start(0).await;
    let sandbox = Running::start(signed_config(&webhook)).await;
    let kinds = [
        json!({"type": "interactive", "interactive": {"type": "button_reply",
            "button_reply": {"id": "b1", "title": "Yes please"}}}),
        json!({"type": "button", "context": {"from": DISPLAY, "id": "wamid.HBgMOTE5ODIwMDEyMzQ1"},
            "button": {"payload": "GOA", "text": "Goa"}}),
        json!({"type": "location", "location": {"latitude": 15.2345, "longitude": 73.9345,
            "name": "Taj Exotica", "address": "Benaulim, Goa"}}),
        json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "Ravi Menon",
            "first_name": "Ravi"}, "phones": [{"phone": "+91 98200 54321", "type": "CELL"}]}]}),
        json!({"type": "reaction", "reaction": {"message_id": "wamid.HBgMOTE5ODIwMDEyMzQ1", "emoji": "👍"}}),
        json!({"type": "unsupported", "errors": [{"code": 131051, "title": "Message type unknown",
            "message": "Message type unknown", "error_data": {"details": "Message type is currently not supported."}}]}),
        json!({"type": "document", "document": {"caption": "Guest list", "filename": "guests.pdf",
            "mime_type": "application/pdf", "sha256": "aa11", "id": "2001"}}),
        json!({"type": "sticker", "sticker": {"mime_type": "image/webp", "sha256": "bb22",
            "id": "2002", "animated": false}}),
        json!({"type": "audio", "audio": {"mime_type": "audio/ogg; codecs=opus", "sha256": "cc33",
            "id": "2003", "voice": true}}),
        json!({"type": "video", "video": {"caption": "The hall", "mime_type": "video/mp4",
            "sha256": "dd44", "id": "2004"}}),
    ];
    for played in &kinds {
        let answer = sandbox
            .post(
                "/_sandbox/inbound",
                json!({"from": AISHA, "message": played}),
            )
            .await;
        assert_eq!(answer["webhook"]["status"], 200, "{played}");
        let (message, read) = played_message(&webhook.next_verified().await);
        assert_eq!(message, as_meta_sends(played, AISHA, &answer, &message));
        assert_eq!(read.kind, played["type"].as_str().unwrap());
        assert_eq!(read.wa_id, AISHA);
        assert!(!read.line.is_empty(), "{played}");
    }
    let recorded = sandbox.recorded().await;
    assert_eq!(recorded["webhooks"]["delivered"], kinds.len());
}

#[tokio::test]
async fn a_user_who_stops_marketing_gets_marketing_templates_failed_until_they_resume() {
    let mut webhook = Receiver::start(0).await;
    let sandbox = Running::start(signed_config(&webhook)).await;
    let promo = OutboundMessage {
        to: AISHA.into(),
        content: Content::Template {
            name: "event_promo".into(),
            language: "en".into(),
            params: vec![],
        },
        callback: Some("outbox:50".into()),
    };

    let answer = sandbox
        .post(
            "/_sandbox/preferences",
            json!({"from": AISHA, "name": "Aisha Khan", "value": "stop"}),
        )
        .await;
    assert_eq!(answer["phone_number_id"], NUMBER);
    assert_eq!(answer["wa_id"], AISHA);
    assert_eq!(answer["value"], "stop");
    assert_eq!(answer["webhook"]["status"], 200);
    let at = chrono::DateTime::parse_from_rfc3339(answer["at"].as_str().unwrap()).unwrap();
    let body = webhook.next_verified().await;
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        value,
        json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398",
            "changes": [{"field": "user_preferences", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": DISPLAY, "phone_number_id": NUMBER},
                "contacts": [{"profile": {"name": "Aisha Khan"}, "wa_id": AISHA}],
                "user_preferences": [{"wa_id": AISHA,
                    "detail": "User requested to stop marketing messages",
                    "category": "marketing_messages", "value": "stop",
                    "timestamp": at.timestamp()}]}}]}]})
    );
    let events = parse_whatsapp_webhook(&body).unwrap();
    assert_eq!(
        events,
        [InboundEvent::WhatsappUserPreference(
            WhatsappUserPreference {
                phone_number_id: Some(NUMBER.into()),
                wa_id: AISHA.into(),
                category: "marketing_messages".into(),
                marketing_opt_out: true,
                // Meta's timestamps are whole seconds.
                timestamp: chrono::DateTime::from_timestamp(at.timestamp(), 0).unwrap(),
                detail: Some("User requested to stop marketing messages".into()),
            }
        )]
    );
    assert_eq!(
        sandbox
            .control(reqwest::Method::GET, "/_sandbox/preferences", None)
            .await["preferences"],
        json!([{"phone_number_id": NUMBER, "wa_id": AISHA, "category": "marketing_messages",
            "value": "stop", "at": answer["at"]}])
    );

    // Accepted as Meta accepts it, then a failed status.
    let sent = sandbox.send(&promo).await.unwrap();
    let events = parse_whatsapp_webhook(&webhook.next_verified().await).unwrap();
    let [InboundEvent::WhatsappStatus(status)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(status.status, DeliveryStatus::Failed);
    assert_eq!(status.message_id, sent.message_id);
    assert_eq!(
        status.biz_opaque_callback_data.as_deref(),
        Some("outbox:50")
    );
    assert_eq!(status.errors.len(), 1);
    assert_eq!(status.errors[0].code, 131050);

    // A utility template to the same user is delivered.
    let options = sandbox.send(&options_template(AISHA, None)).await.unwrap();
    assert_eq!(
        next_statuses(&mut webhook, 2).await,
        [
            (options.message_id.clone(), DeliveryStatus::Sent),
            (options.message_id, DeliveryStatus::Delivered)
        ]
    );

    let answer = sandbox
        .post(
            "/_sandbox/preferences",
            json!({"from": AISHA, "value": "resume"}),
        )
        .await;
    assert_eq!(answer["value"], "resume");
    let events = parse_whatsapp_webhook(&webhook.next_verified().await).unwrap();
    assert!(
        matches!(events.as_slice(), [InboundEvent::WhatsappUserPreference(p)] if !p.marketing_opt_out && p.detail.as_deref() == Some("User requested to resume marketing messages")),
        "{events:?}"
    );
    let again = sandbox.send(&promo).await.unwrap();
    assert_eq!(
        next_statuses(&mut webhook, 2).await,
        [
            (again.message_id.clone(), DeliveryStatus::Sent),
            (again.message_id, DeliveryStatus::Delivered)
        ]
    );

    let recorded = sandbox.recorded().await;
    let failed: Vec<&Value> = recorded["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["failed_code"])
        .collect();
    assert_eq!(failed, [&json!(131050), &Value::Null, &Value::Null]);
}

/// The next `count` status webhooks, one per POST, as (wamid, status).
async fn next_statuses(webhook: &mut Receiver, count: usize) -> Vec<(String, DeliveryStatus)> {
    let mut statuses = Vec::new();
    for _ in 0..count {
        let events = parse_whatsapp_webhook(&webhook.next_verified().await).unwrap();
        for event in events {
            match event {
                InboundEvent::WhatsappStatus(status) => {
                    assert!(status.errors.is_empty(), "{status:?}");
                    statuses.push((status.message_id, status.status));
                }
                other => panic!("{other:?}"),
            }
        }
    }
    statuses
}

#[tokio::test]
async fn bad_inbound_and_preference_bodies_are_refused_and_change_nothing() {
    let mut webhook = Receiver::start(0).await;
    let sandbox = Running::start(signed_config(&webhook)).await;
    for (path, body, said) in [
        (
            "/_sandbox/inbound",
            json!({"from": AISHA, "text": "hi", "message": {"type": "text", "text": {"body": "hi"}}}),
            "not both",
        ),
        ("/_sandbox/inbound", json!({"from": AISHA}), "give `text`"),
        (
            "/_sandbox/inbound",
            json!({"from": AISHA, "message": {"image": {"id": "1234"}}}),
            "`message.type` is required",
        ),
        (
            "/_sandbox/inbound",
            json!({"from": AISHA, "message": {"type": ["image"], "image": {"id": "1234"}}}),
            "`message.type` must be",
        ),
        (
            "/_sandbox/inbound",
            json!({"from": AISHA, "message": {"type": "image"}}),
            "`message.image`",
        ),
        (
            "/_sandbox/preferences",
            json!({"from": AISHA, "value": "pause"}),
            "`stop` or `resume`",
        ),
        (
            "/_sandbox/preferences",
            json!({"from": AISHA}),
            "missing field `value`",
        ),
        (
            "/_sandbox/preferences",
            json!({"from": "not a number", "value": "stop"}),
            "`from`",
        ),
    ] {
        let response = sandbox
            .http
            .post(format!("{}{path}", sandbox.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path} {body}");
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(said)),
            "{path} {body}: {answer}"
        );
    }
    assert_eq!(sandbox.sandbox.window_open_until(NUMBER, AISHA), None);
    assert_eq!(
        sandbox
            .control(reqwest::Method::GET, "/_sandbox/preferences", None)
            .await,
        json!({"preferences": []})
    );
    let recorded = sandbox.recorded().await;
    assert_eq!(recorded["webhooks"], json!({"delivered": 0, "failed": 0}));
    // Nothing was posted: the first webhook the receiver sees is this one.
    let answer = sandbox
        .post("/_sandbox/inbound", json!({"from": AISHA, "text": "hi"}))
        .await;
    let (message, _) = played_message(&webhook.next_verified().await);
    assert_eq!(message["id"], answer["message_id"]);
}
