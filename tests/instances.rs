//! Two `handoff serve` instances on one PostgreSQL database, as behind a
//! load balancer: the real binaries, the real `handoff sandbox` as the Cloud
//! API (its status webhooks go to instance A only), 5,000 leads spread over
//! both with duplicate deliveries (the same `Idempotency-Key` sent to both
//! at once, the same signed WhatsApp webhook posted to both), and instance A
//! killed with SIGKILL halfway and restarted. Then every lead is decided
//! exactly once, and the sandbox received every WhatsApp message exactly once
//! (counted by `callback`, our outbox ID), past the grace period too.
//!
//! Runs only when `HANDOFF_TEST_POSTGRES_URL` names a server; it makes a
//! fresh database there and drops it afterwards.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::{eventually, free_port, meta_signed, root, until, Api, PgDatabase, Process};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "hk_instances_key";
const SECRET: &str = "instances-app-secret";
const LEADS: usize = 5_000;
/// Users writing in on WhatsApp; each webhook is posted to both instances.
const INBOUND: usize = 300;
/// Every this many leads, the request goes to both instances at once.
const TWICE_EVERY: usize = 5;
const GRACE_SECONDS: u64 = 30;

fn serve(dir: &Path, port: u16) -> Process {
    harness::process::serve(
        dir,
        port,
        &[
            ("INSTANCES_KEY", KEY),
            ("INSTANCES_SECRET", SECRET),
            ("INSTANCES_WA_TOKEN", "token-for-the-sandbox"),
        ],
    )
}

fn lead(i: usize) -> Value {
    json!({
        "name": format!("Instance {i}"),
        "phone": format!("+9197{i:08}"),
        "channel": "instagram",
        "intent": "event_enquiry",
        "consent": {"whatsapp": true},
        "fields": {"city": "Goa", "event_date": "2027-03-14", "guests": 100},
    })
}

/// The wa_id of inbound user `i`.
fn wa_id(i: usize) -> String {
    format!("9196{i:08}")
}

/// A WhatsApp webhook: user `i` writes in.
fn inbound(i: usize) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": format!("Writer {i}")}, "wa_id": wa_id(i)}],
        "messages": [{"from": wa_id(i), "id": format!("wamid.instances.{i}"), "timestamp": chrono::Utc::now().timestamp().to_string(),
                      "type": "text", "text": {"body": "Hi, is the Goa venue free in March?"}}],
    }}]}]})
    .to_string()
    .into_bytes()
}

/// One request to `base`; the lead ID it answered, or `None` when the
/// instance did not answer (it is dead, or died mid-request).
async fn post_lead(client: &reqwest::Client, base: &str, i: usize) -> Option<String> {
    let r = client
        .post(format!("{base}/v1/leads"))
        .bearer_auth(KEY)
        .header("Idempotency-Key", format!("instances-{i}"))
        .json(&lead(i))
        .send()
        .await
        .ok()?;
    // A lost race between instances answers as a replay, never an error.
    assert!(
        r.status().is_success(),
        "lead {i}: {} {:?}",
        r.status(),
        r.text().await
    );
    let body: Value = r.json().await.ok()?;
    Some(body["lead_id"].as_str()?.to_string())
}

async fn post_inbound(client: &reqwest::Client, base: &str, i: usize) -> bool {
    let url = format!("{base}/webhooks/meta/acme");
    match meta_signed(client, &url, inbound(i), SECRET).send().await {
        Ok(r) => {
            assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "inbound {i}");
            r.status().is_success()
        }
        Err(_) => false,
    }
}

/// What the client saw: each lead's ID, from every instance that answered it.
#[derive(Default)]
struct Answers {
    leads: BTreeMap<usize, BTreeSet<String>>,
    inbound: BTreeSet<usize>,
}

/// Sends every lead and inbound webhook over 24 connections, as a load
/// balancer would: to one instance, or for the duplicates to both at once;
/// whatever got no answer goes again to whichever instance answers.
async fn send_all(bases: [String; 2], answers: Arc<Mutex<Answers>>, deadline: Instant) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Leads and inbound users interleaved, so both kinds meet the kill.
    let mut work: Vec<(bool, usize)> = (0..LEADS).map(|i| (true, i)).collect();
    for i in 0..INBOUND {
        work.insert(i * LEADS / INBOUND, (false, i));
    }
    work.reverse();
    let queue = Arc::new(Mutex::new(work));
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (client, queue, answers, bases) = (
            client.clone(),
            queue.clone(),
            answers.clone(),
            bases.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((is_lead, i)) = queue.lock().unwrap().pop() else {
                    return;
                };
                let first = &bases[i % 2];
                let second = &bases[(i + 1) % 2];
                let mut round = 0;
                loop {
                    assert!(Instant::now() < deadline, "the burst took too long");
                    let done = if is_lead {
                        let ids: Vec<String> = if i % TWICE_EVERY == 0 || round > 0 {
                            let (a, b) = tokio::join!(
                                post_lead(&client, first, i),
                                post_lead(&client, second, i)
                            );
                            a.into_iter().chain(b).collect()
                        } else {
                            post_lead(&client, first, i).await.into_iter().collect()
                        };
                        let any = !ids.is_empty();
                        answers
                            .lock()
                            .unwrap()
                            .leads
                            .entry(i)
                            .or_default()
                            .extend(ids);
                        any
                    } else {
                        let (a, b) = tokio::join!(
                            post_inbound(&client, first, i),
                            post_inbound(&client, second, i)
                        );
                        if a || b {
                            answers.lock().unwrap().inbound.insert(i);
                        }
                        a || b
                    };
                    if done {
                        break;
                    }
                    round += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_decide_each_lead_once_and_send_each_message_once() {
    let Some(admin) = harness::postgres() else {
        return;
    };
    let started = Instant::now();
    let db = PgDatabase::create(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (_sandbox, sandbox_base) = harness::process::sandbox(
        &format!("http://127.0.0.1:{port_a}/webhooks/meta/acme"),
        SECRET,
    );
    harness::process::write_config(
        dir.path(),
        &db.url,
        &root().join("rules"),
        Some(&root().join("templates")),
        &format!(
            r#"[[accounts]]
id = "acme"
api_keys = ["env:INSTANCES_KEY"]
[accounts.routing]
default = "events"
[accounts.meta]
app_secrets = ["env:INSTANCES_SECRET"]
[[accounts.whatsapp]]
key = "events-main"
phone_number_id = "106540352242922"
token = "env:INSTANCES_WA_TOKEN"
rate = 1000

[delivery]
whatsapp_base = "{sandbox_base}"
lease_seconds = 10
grace_seconds = {GRACE_SECONDS}
timeout_seconds = 5
backoff_seconds = 0.05
max_backoff_seconds = 0.5
"#,
        ),
    );
    let a = serve(dir.path(), port_a);
    let _b = serve(dir.path(), port_b);
    let bases = [
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    ];
    let answers: Arc<Mutex<Answers>> = Arc::default();

    // Kill A once about half the leads are answered, and start it again at
    // once on the same port (the sandbox's status webhooks go there).
    let restarted: Arc<Mutex<Option<Process>>> = Arc::default();
    let watch = answers.clone();
    let killed = Arc::new(AtomicBool::new(false));
    let (killed_at, restart, dir_path) =
        (killed.clone(), restarted.clone(), dir.path().to_path_buf());
    let mut a = Some(a);
    let killer = tokio::spawn(async move {
        loop {
            let n = watch
                .lock()
                .unwrap()
                .leads
                .values()
                .filter(|ids| !ids.is_empty())
                .count();
            if n >= LEADS / 2 {
                if let Some(a) = a.take() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &a.0.id().to_string()])
                        .status();
                    drop(a);
                }
                killed_at.store(true, Ordering::SeqCst);
                let again = tokio::task::spawn_blocking(move || serve(&dir_path, port_a))
                    .await
                    .unwrap();
                *restart.lock().unwrap() = Some(again);
                return n;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    send_all(
        bases.clone(),
        answers.clone(),
        started + Duration::from_secs(240),
    )
    .await;
    let killed_after = killer.await.unwrap();
    assert!(killed.load(Ordering::SeqCst));
    assert!(
        (LEADS / 2..LEADS).contains(&killed_after),
        "killed mid-burst ({killed_after} answered)"
    );
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    assert_eq!(answers.inbound.len(), INBOUND, "every webhook accepted");

    // Every answer for a lead named the same lead, whichever instance gave it.
    let apis = bases.clone().map(Api::new);
    let mut lead_ids = BTreeMap::new();
    for (i, ids) in &answers.leads {
        assert_eq!(ids.len(), 1, "lead {i} answered as {ids:?}");
        lead_ids.insert(*i, ids.iter().next().unwrap().clone());
    }
    assert_eq!(lead_ids.len(), LEADS, "every lead answered");

    // Exactly one decision per lead, and the WhatsApp messages it queued.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for (i, id) in &lead_ids {
        let lead = apis[i % 2].lead(KEY, id).await;
        assert_eq!(
            lead["decisions"].as_array().unwrap().len(),
            1,
            "lead {i}: {id}"
        );
        let outbox = lead["outbox"].as_array().unwrap();
        assert_eq!(outbox.len(), 1, "lead {i}");
        expected.insert(outbox[0]["id"].as_str().unwrap().to_string());
    }
    // Each user who wrote in is one lead, decided once (the webhook workers
    // of both instances share the stored events).
    for i in 0..INBOUND {
        let found = eventually(
            Duration::from_secs(20),
            Duration::from_millis(100),
            async || {
                let list = apis[1]
                    .json(&format!("/v1/leads?q={}", wa_id(i)), KEY)
                    .await;
                let leads = list["leads"].as_array().cloned().unwrap_or_default();
                assert!(leads.len() <= 1, "user {i}: {leads:?}");
                if let Some(l) = leads.first() {
                    let lead = apis[1].lead(KEY, l["id"].as_str().unwrap()).await;
                    if !lead["decisions"].as_array().unwrap().is_empty() {
                        return Ok(lead);
                    }
                }
                Err(Value::Null)
            },
        )
        .await
        .unwrap_or_else(|none| none);
        assert_eq!(
            found["decisions"].as_array().map(Vec::len),
            Some(1),
            "user {i}: {found:#}"
        );
        assert_eq!(
            found["transcript"].as_array().map(Vec::len),
            Some(1),
            "user {i}"
        );
        for m in found["outbox"].as_array().unwrap() {
            if m["kind"] == "whatsapp" {
                expected.insert(m["id"].as_str().unwrap().to_string());
            }
        }
    }

    // The sandbox gets every message, and once the grace period has passed
    // (when an uncertain send would go again) still exactly once each.
    let sandbox = Api::new(sandbox_base);
    let messages = async || sandbox.json("/_sandbox/messages", KEY).await;
    let accepted = async || messages().await["accepted"].as_u64().unwrap_or(0);
    let every = Duration::from_millis(500);
    let accepted = until(Duration::from_secs(120), every, accepted, |n| {
        *n >= expected.len() as u64
    })
    .await
    .unwrap_or_else(|accepted| accepted);
    assert!(
        accepted >= expected.len() as u64,
        "every message sent ({accepted} of {})",
        expected.len()
    );
    tokio::time::sleep(Duration::from_secs(GRACE_SECONDS + 3)).await;
    let m = messages().await;
    let callbacks: Vec<String> = m["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["callback"].as_str().unwrap().to_string())
        .collect();
    let distinct: BTreeSet<String> = callbacks.iter().cloned().collect();
    let mut twice: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &callbacks {
        *twice.entry(c.as_str()).or_default() += 1;
    }
    twice.retain(|_, n| *n > 1);
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(distinct, expected, "exactly the queued messages were sent");
    for api in &apis {
        let r = api.client.get(api.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", api.base);
    }
    drop(restarted.lock().unwrap().take());
    eprintln!(
        "two instances: {LEADS} leads and {INBOUND} users, {} messages, in {:.1} s",
        expected.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_edit_reaches_every_instance_and_each_reports_its_hash() {
    let Some(admin) = harness::postgres() else {
        return;
    };
    let db = PgDatabase::create(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for f in ["events.rules", "clinics.rules", "real_estate.rules"] {
        std::fs::copy(root().join("rules").join(f), rules.join(f)).unwrap();
    }
    harness::process::write_config(
        dir.path(),
        &db.url,
        &rules,
        Some(&root().join("templates")),
        r#"[[accounts]]
id = "acme"
api_keys = ["env:INSTANCES_KEY"]
[accounts.routing]
default = "events"
"#,
    );
    let (port_a, port_b) = (free_port(), free_port());
    let _a = serve(dir.path(), port_a);
    let _b = serve(dir.path(), port_b);
    let apis = [port_a, port_b].map(|port| Api::new(format!("http://127.0.0.1:{port}")));
    let hash = async |api: &Api| {
        api.json("/v1/rulesets", KEY).await["ruleset"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = hash(&apis[0]).await;
    assert_eq!(before, hash(&apis[1]).await, "one ruleset, one hash");
    // An edit on disk (here shared; in production deployed to each instance).
    let text = std::fs::read_to_string(rules.join("events.rules")).unwrap();
    std::fs::write(
        rules.join("events.rules"),
        text.replace(
            "city in [\"Goa\", \"Mumbai\"]",
            "city in [\"Goa\", \"Mumbai\", \"Pune\"]",
        ),
    )
    .unwrap();
    let hashes = async || (hash(&apis[0]).await, hash(&apis[1]).await);
    let every = Duration::from_millis(100);
    let after = until(Duration::from_secs(10), every, hashes, |after| {
        after.0 != before && after.1 != before
    })
    .await
    .unwrap_or_else(|after| after);
    assert_ne!(after.0, before, "instance A picked the edit up");
    assert_eq!(after.0, after.1, "both report the new ruleset's hash");
}
