//! A crash in the middle of a burst: the real `handoff serve` binary sends
//! to the real `handoff sandbox` binary over HTTP; 1,000 leads arrive, the
//! server is killed with SIGKILL halfway, restarted on the same database,
//! and the client retries what it did not get an answer for (with the same
//! `Idempotency-Key`). Then every lead has exactly one decision, and the
//! sandbox has received every message exactly once once the grace period
//! has passed.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::{free_port, root, until, Api, Process};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "hk_crash_key";
const SECRET: &str = "crash-app-secret";
const LEADS: usize = 1_000;

fn serve(dir: &Path, port: u16) -> Process {
    harness::process::serve(
        dir,
        port,
        &[
            ("CRASH_KEY", KEY),
            ("CRASH_SECRET", SECRET),
            ("CRASH_WA_TOKEN", "token-for-the-sandbox"),
        ],
    )
}

fn lead(i: usize) -> Value {
    json!({
        "name": format!("Burst {i}"),
        "phone": format!("+9197{i:08}"),
        "channel": "instagram",
        "intent": "event_enquiry",
        "consent": {"whatsapp": true},
        "fields": {"city": "Goa", "event_date": "2027-03-14", "guests": 100},
    })
}

/// Sends leads `todo` over 16 connections and notes the lead ID of each one
/// answered; a lead whose request fails (the server died) is left for later.
async fn send(base: &str, todo: Vec<usize>, answered: Arc<Mutex<BTreeMap<usize, String>>>) {
    let client = reqwest::Client::new();
    let queue = Arc::new(Mutex::new(todo));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, queue, answered, base) = (
            client.clone(),
            queue.clone(),
            answered.clone(),
            base.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(i) = queue.lock().unwrap().pop() else {
                    return;
                };
                let r = client
                    .post(format!("{base}/v1/leads"))
                    .bearer_auth(KEY)
                    .header("Idempotency-Key", format!("burst-{i}"))
                    .json(&lead(i))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let body: Value = r.json().await.unwrap();
                        answered
                            .lock()
                            .unwrap()
                            .insert(i, body["lead_id"].as_str().unwrap().to_string());
                    }
                    // The server died: this one is retried after the restart.
                    _ => {}
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_a_burst_loses_nothing_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_sandbox, sandbox_base) = harness::process::sandbox(
        &format!("http://127.0.0.1:{port}/webhooks/meta/acme"),
        SECRET,
    );
    harness::process::write_config(
        dir.path(),
        &format!("sqlite://{}", dir.path().join("crash.db").display()),
        &root().join("rules"),
        Some(&root().join("templates")),
        &format!(
            r#"[[accounts]]
id = "acme"
api_keys = ["env:CRASH_KEY"]
[accounts.routing]
default = "events"
[accounts.meta]
app_secrets = ["env:CRASH_SECRET"]
[[accounts.whatsapp]]
key = "events-main"
phone_number_id = "106540352242922"
token = "env:CRASH_WA_TOKEN"
rate = 1000

[delivery]
whatsapp_base = "{sandbox_base}"
lease_seconds = 5
grace_seconds = 15
timeout_seconds = 2
backoff_seconds = 0.05
max_backoff_seconds = 0.5
"#,
        ),
    );
    let base = format!("http://127.0.0.1:{port}");
    let server = serve(dir.path(), port);
    let answered: Arc<Mutex<BTreeMap<usize, String>>> = Arc::default();

    // Kill the server once about half the burst is answered.
    let pid = server.0.id();
    let watch = answered.clone();
    let killed = Arc::new(AtomicUsize::new(0));
    let killed_at = killed.clone();
    let killer = tokio::spawn(async move {
        loop {
            let n = watch.lock().unwrap().len();
            if n >= LEADS / 2 {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                killed_at.store(n, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    send(&base, (0..LEADS).collect(), answered.clone()).await;
    killer.await.unwrap();
    drop(server);
    let before = killed.load(Ordering::SeqCst);
    assert!(
        (LEADS / 2..LEADS).contains(&before),
        "killed mid-burst ({before} answered)"
    );

    // Restart on the same database and port; the client retries the rest.
    let _server = serve(dir.path(), port);
    let missing: Vec<usize> = (0..LEADS)
        .filter(|i| !answered.lock().unwrap().contains_key(i))
        .collect();
    send(&base, missing, answered.clone()).await;
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.len(), LEADS, "every lead answered in the end");

    // Every message reaches the sandbox; wait past the grace period too.
    let sandbox = Api::new(sandbox_base);
    let accepted = async || {
        sandbox.open_json("/_sandbox/messages").await["accepted"]
            .as_u64()
            .unwrap_or(0)
    };
    let every = Duration::from_millis(100);
    let accepted = until(Duration::from_secs(60), every, accepted, |n| {
        *n >= LEADS as u64
    })
    .await
    .unwrap_or_else(|accepted| accepted);
    assert!(accepted >= LEADS as u64, "every message sent ({accepted})");
    // Past the grace period: a send whose status had not come would go again now.
    tokio::time::sleep(Duration::from_secs(17)).await;
    let m = sandbox.open_json("/_sandbox/messages").await;
    let callbacks: Vec<&str> = m["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["callback"].as_str().unwrap())
        .collect();
    let distinct: BTreeSet<&str> = callbacks.iter().copied().collect();
    assert_eq!(callbacks.len(), LEADS, "no message sent twice");
    assert_eq!(distinct.len(), LEADS);

    // Exactly one decision per lead, and its one message is the one sent.
    let api = Api::new(&base);
    for id in answered.values() {
        let lead = api.lead(KEY, id).await;
        assert_eq!(lead["decisions"].as_array().unwrap().len(), 1, "{id}");
        let outbox = lead["outbox"].as_array().unwrap();
        assert_eq!(outbox.len(), 1, "{id}");
        assert!(distinct.contains(outbox[0]["id"].as_str().unwrap()), "{id}");
    }
    let r = api.client.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
