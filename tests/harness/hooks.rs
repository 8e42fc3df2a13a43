//! Endpoints on loopback standing in for what the service calls: a CRM, an
//! AI agent, an SMS gateway (Standard Webhooks, signed with the endpoint's
//! secret), or any other server a test needs.

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Serves `app` on a port of 127.0.0.1 for the rest of the test; its address.
pub async fn listen(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A webhook as the endpoint received it, its signature verified.
#[derive(Clone, Debug)]
pub struct Received {
    /// The `webhook-id` header: the same on a retry.
    pub id: String,
    pub event: Value,
}

impl Received {
    /// The event's `type`.
    pub fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap()
    }

    /// The ID of what the event is about (`data.id`): the lead.
    pub fn subject(&self) -> &str {
        self.event["data"]["id"].as_str().unwrap()
    }
}

/// An endpoint that takes Standard Webhooks signed with its secret.
pub struct Hook {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Hook {
    /// What it received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The events it received so far, in order.
    pub fn events(&self) -> Vec<Value> {
        self.received().into_iter().map(|r| r.event).collect()
    }
}

/// An endpoint at `path` on loopback: it refuses (401) a webhook whose
/// signature does not verify with `secret`, keeps every other one, and
/// answers each with the next of `answers`, then with 200.
pub async fn hook(path: &str, secret: &str, answers: Vec<u16>) -> Hook {
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let answers = Arc::new(Mutex::new(answers));
    let secret = secret.to_string();
    let log = received.clone();
    let app = axum::Router::new().route(
        path,
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (log, answers, secret) = (log.clone(), answers.clone(), secret.clone());
            async move {
                let now = chrono::Utc::now().timestamp();
                if handoff::notify::verify_headers(&secret, &headers, &body, now).is_err() {
                    return StatusCode::UNAUTHORIZED;
                }
                log.lock().unwrap().push(Received {
                    id: headers["webhook-id"].to_str().unwrap().to_string(),
                    event: serde_json::from_slice(&body).unwrap(),
                });
                let mut answers = answers.lock().unwrap();
                if answers.is_empty() {
                    StatusCode::OK
                } else {
                    StatusCode::from_u16(answers.remove(0)).unwrap()
                }
            }
        }),
    );
    let url = format!("http://{}{path}", listen(app).await);
    Hook { url, received }
}
