//! The real `Notifier` over HTTP against small axum receivers on
//! 127.0.0.1:0: what a CRM or agent receives (a body and headers it can
//! verify with the shared secret, the same `webhook-id` on a retry), what
//! each kind of answer means for the retry decision, and that a refused
//! destination gets no request at all.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use handoff::config::Secret;
use handoff::notify::{self, Endpoint, ErrorKind, Notifier};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type Answer = Arc<dyn Fn(usize, &str) -> Response + Send + Sync>;

/// A receiver that records every request and answers the `n`th (from 0)
/// with `answer(n, path)`, after `delay`.
async fn receiver_after(
    delay: Duration,
    answer: impl Fn(usize, &str) -> Response + Send + Sync + 'static,
) -> Receiver {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answer: Answer = Arc::new(answer);
    let recorded = seen.clone();
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            let answer = answer.clone();
            async move {
                let n = {
                    let mut seen = recorded.lock().unwrap();
                    seen.push(Seen {
                        method,
                        path: uri.path().to_string(),
                        headers,
                        body,
                    });
                    seen.len() - 1
                };
                tokio::time::sleep(delay).await;
                answer(n, uri.path())
            }
        },
    );
    Receiver {
        addr: harness::listen(app).await,
        seen,
    }
}

async fn receiver(answer: impl Fn(usize, &str) -> Response + Send + Sync + 'static) -> Receiver {
    receiver_after(Duration::ZERO, answer).await
}

fn endpoint(url: String) -> Endpoint {
    Endpoint {
        name: "crm".into(),
        url,
        secret: Secret::new(SECRET),
        // The receivers are on loopback, which is refused by default.
        allow_private: true,
        timeout: Duration::from_secs(5),
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn lead() -> Value {
    json!({"lead_id": "lead_01", "playbook": "events", "stage": "qualified"})
}

#[tokio::test]
async fn the_receiver_verifies_the_signature_and_sees_the_same_id_on_the_retry() {
    let crm = receiver(|n, _| {
        if n == 0 {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            StatusCode::NO_CONTENT.into_response()
        }
    })
    .await;
    let endpoint = endpoint(crm.url("/hooks/handoff"));
    let notifier = Notifier::new();

    let first = notifier
        .deliver(&endpoint, "msg_lead_01", "lead.qualified", &lead())
        .await
        .unwrap_err();
    assert_eq!(first.kind(), ErrorKind::Unavailable);
    assert!(first.retryable());
    assert_eq!(first.status(), Some(503));

    let delivered = notifier
        .deliver(&endpoint, "msg_lead_01", "lead.qualified", &lead())
        .await
        .unwrap();
    assert_eq!(delivered.status, 204);
    assert_eq!(delivered.remote_addr, Some(crm.addr));

    let seen = crm.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/hooks/handoff");
        let header = |name: &str| request.headers.get(name).unwrap().to_str().unwrap();
        assert_eq!(header(notify::WEBHOOK_ID), "msg_lead_01");
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(
            header("user-agent"),
            format!("handoff/{}", env!("CARGO_PKG_VERSION"))
        );
        let timestamp: i64 = header(notify::WEBHOOK_TIMESTAMP).parse().unwrap();
        assert!((now() - timestamp).abs() < 60, "{timestamp}");
        // What a Standard Webhooks library on the receiver's side does: ours,
        // and the reference library for Rust.
        assert_eq!(
            notify::verify_headers(SECRET, &request.headers, &request.body, now()),
            Ok(())
        );
        reference(SECRET)
            .verify(&request.body, &request.headers)
            .unwrap();
        // And with another secret the same request does not verify, so the
        // check above is a real one.
        let other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        assert_eq!(
            notify::verify_headers(other, &request.headers, &request.body, now())
                .unwrap_err()
                .kind(),
            ErrorKind::BadSignature
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["type"], "lead.qualified");
        assert_eq!(body["data"], lead());
        let sent_at = body["timestamp"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(sent_at).unwrap();
        // The body starts with the envelope's fields in the spec's order.
        assert!(request
            .body
            .starts_with(br#"{"type":"lead.qualified","timestamp":""#));
    }
    assert_eq!(delivered.timestamp.to_string(), {
        let last = &seen[1].headers;
        last.get(notify::WEBHOOK_TIMESTAMP)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    });
}

/// The Standard Webhooks reference library's verifier for `secret`.
fn reference(secret: &str) -> standardwebhooks::Webhook {
    standardwebhooks::Webhook::new(secret).unwrap()
}

/// The headers a delivery of `msg_id` signed by us at `timestamp` carries.
fn signed_headers(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let signature = notify::sign(secret, msg_id, timestamp, body).unwrap();
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (notify::WEBHOOK_ID, msg_id.to_string()),
        (notify::WEBHOOK_TIMESTAMP, timestamp.to_string()),
        (notify::WEBHOOK_SIGNATURE, signature),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    headers
}

#[test]
fn the_reference_library_accepts_what_we_sign_and_nothing_else() {
    // Our signer is checked against the spec's test vectors in src/notify.rs;
    // here the reference library, with its own HMAC and base64 code, checks
    // it as a receiver would, at the current time.
    let body = serde_json::to_vec(&json!({
        "type": "lead.qualified",
        "timestamp": "2026-12-01T14:02:11Z",
        "data": {"lead_id": "lead_01", "name": "Aïsha", "note": "a \"quoted\" word"},
    }))
    .unwrap();
    let timestamp = now();
    let headers = signed_headers(SECRET, "msg_lead_01", timestamp, &body);
    reference(SECRET).verify(&body, &headers).unwrap();
    // A secret without its `whsec_` prefix is the same key to both.
    reference(SECRET.trim_start_matches("whsec_"))
        .verify(&body, &headers)
        .unwrap();

    // A tampered body, one changed byte at a time, does not verify.
    for at in [0, body.len() / 2, body.len() - 1] {
        let mut tampered = body.clone();
        tampered[at] ^= 0x01;
        assert!(
            matches!(
                reference(SECRET).verify(&tampered, &headers),
                Err(standardwebhooks::WebhookError::InvalidSignature)
            ),
            "byte {at} changed"
        );
    }
    // Nor does another message ID or timestamp under the same signature,
    let mut moved = headers.clone();
    moved.insert(notify::WEBHOOK_ID, "msg_lead_02".parse().unwrap());
    assert!(reference(SECRET).verify(&body, &moved).is_err());
    let mut moved = headers.clone();
    moved.insert(
        notify::WEBHOOK_TIMESTAMP,
        (timestamp - 1).to_string().parse().unwrap(),
    );
    assert!(reference(SECRET).verify(&body, &moved).is_err());
    // nor the same message under another secret.
    assert!(reference("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .verify(&body, &headers)
        .is_err());
    // And a signature from an hour ago is a replay to it, as to us.
    let stale = signed_headers(SECRET, "msg_lead_01", timestamp - 3600, &body);
    assert!(matches!(
        reference(SECRET).verify(&body, &stale),
        Err(standardwebhooks::WebhookError::TimestampTooOldError)
    ));
}

#[tokio::test]
async fn a_410_answer_disables_the_endpoint() {
    let crm = receiver(|_, _| StatusCode::GONE.into_response()).await;
    let error = Notifier::new()
        .deliver(
            &endpoint(crm.url("/hook")),
            "msg_1",
            "lead.created",
            &lead(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Disabled);
    assert!(!error.retryable());
    assert_eq!(error.status(), Some(410));
    assert_eq!(error.endpoint(), Some("crm"));
    assert!(
        error
            .to_string()
            .starts_with("webhook endpoint `crm`: the endpoint answered 410 Gone"),
        "{error}"
    );
}

#[tokio::test]
async fn a_503_with_retry_after_is_retried_after_that_delay() {
    let crm = receiver(|_, _| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "120")],
        )
            .into_response()
    })
    .await;
    let error = Notifier::new()
        .deliver(
            &endpoint(crm.url("/hook")),
            "msg_1",
            "lead.created",
            &lead(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(error.retryable());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
    assert!(error.to_string().contains("retry after 120s"), "{error}");
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried_on_the_backoff_schedule() {
    let crm = receiver(|_, _| StatusCode::TOO_MANY_REQUESTS.into_response()).await;
    let error = Notifier::new()
        .deliver(
            &endpoint(crm.url("/hook")),
            "msg_1",
            "lead.created",
            &lead(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(error.retryable());
    assert_eq!(error.retry_after(), None);
}

#[tokio::test]
async fn a_400_is_a_permanent_failure() {
    let crm =
        receiver(|_, _| (StatusCode::BAD_REQUEST, "missing field `email`").into_response()).await;
    let error = Notifier::new()
        .deliver(
            &endpoint(crm.url("/hook")),
            "msg_1",
            "lead.created",
            &lead(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Rejected);
    assert!(!error.retryable());
    assert_eq!(error.status(), Some(400));
    assert_eq!(crm.seen().len(), 1);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let elsewhere = receiver(|_, _| StatusCode::OK.into_response()).await;
    let target = elsewhere.url("/metadata");
    let crm = receiver(move |_, _| {
        (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, target.clone())],
        )
            .into_response()
    })
    .await;
    let error = Notifier::new()
        .deliver(
            &endpoint(crm.url("/hook")),
            "msg_1",
            "lead.created",
            &lead(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Rejected);
    assert!(!error.retryable());
    assert_eq!(error.status(), Some(307));
    assert!(error.to_string().contains("redirect"), "{error}");
    assert_eq!(crm.seen().len(), 1);
    assert_eq!(elsewhere.seen().len(), 0);
}

#[tokio::test]
async fn a_loopback_endpoint_without_allow_private_is_refused_before_any_request() {
    let crm = receiver(|_, _| StatusCode::OK.into_response()).await;
    let notifier = Notifier::new();
    for url in [
        crm.url("/hook"),
        format!("http://localhost:{}/hook", crm.addr.port()),
        format!("http://[::ffff:127.0.0.1]:{}/hook", crm.addr.port()),
    ] {
        let mut strict = endpoint(url.clone());
        strict.allow_private = false;
        let error = notifier
            .deliver(&strict, "msg_1", "lead.created", &lead())
            .await
            .unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::DestinationRefused,
            "{url}: {error}"
        );
        assert!(!error.retryable());
        let text = error.to_string();
        assert!(text.contains("127.0.0.1"), "{text}");
        assert!(text.contains("loopback"), "{text}");
        assert!(text.contains("`allow_private = true`"), "{text}");
    }
    assert_eq!(crm.seen().len(), 0);
}

#[tokio::test]
async fn a_host_name_is_delivered_to_the_address_it_was_checked_at() {
    let crm = receiver(|_, _| StatusCode::OK.into_response()).await;
    let url = format!("http://localhost:{}/hook", crm.addr.port());
    let delivered = Notifier::new()
        .deliver(&endpoint(url), "msg_1", "lead.created", &lead())
        .await
        .unwrap();
    assert_eq!(delivered.status, 200);
    assert_eq!(delivered.remote_addr, Some(crm.addr));
    let seen = crm.seen();
    assert_eq!(seen.len(), 1);
    // The Host header still names the host, as virtual hosting needs.
    assert_eq!(
        seen[0].headers.get("host").unwrap(),
        &format!("localhost:{}", crm.addr.port())
    );
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_is_retried() {
    let crm = receiver_after(Duration::from_secs(3), |_, _| {
        StatusCode::OK.into_response()
    })
    .await;
    let mut slow = endpoint(crm.url("/hook"));
    slow.timeout = Duration::from_millis(300);
    let error = Notifier::new()
        .deliver(&slow, "msg_1", "lead.created", &lead())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(error.retryable());
    assert_eq!(error.status(), None);
}

#[tokio::test]
async fn nothing_listening_is_a_retryable_transport_failure() {
    let port = harness::free_port();
    let error = Notifier::new()
        .deliver(
            &endpoint(format!("http://127.0.0.1:{port}/hook")),
            "msg_1",
            "lead.created",
            &lead(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transport, "{error}");
    assert!(error.retryable());
}

#[tokio::test]
async fn errors_show_neither_the_secret_nor_the_urls_path() {
    // Zapier- and Make-style hook URLs carry their credential in the path.
    let crm = receiver(|_, _| StatusCode::FORBIDDEN.into_response()).await;
    let error = Notifier::new()
        .deliver(
            &endpoint(crm.url("/hooks/catch/tok_5f2e9a?key=abc123")),
            "msg_1",
            "lead.created",
            &lead(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Rejected);
    let shown = format!("{error} {error:?}");
    for private in ["tok_5f2e9a", "abc123", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
        assert!(!shown.contains(private), "{shown}");
    }
}

#[tokio::test]
async fn a_bad_secret_fails_before_any_request() {
    let crm = receiver(|_, _| StatusCode::OK.into_response()).await;
    let mut broken = endpoint(crm.url("/hook"));
    broken.secret = Secret::new("whsec_this is not base64");
    let error = Notifier::new()
        .deliver(&broken, "msg_1", "lead.created", &lead())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidSecret);
    assert!(!error.retryable());
    assert!(!error.to_string().contains("this is not base64"), "{error}");
    assert_eq!(crm.seen().len(), 0);
}
