//! Delivery throughput across several WhatsApp numbers: `handoff serve`
//! sends through the real Cloud API client to the sandbox (in this process,
//! over loopback), three accounts each with its own number at Meta's default
//! 80 messages a second. The sandbox's records say how fast each number
//! went, on average and in its busiest one-second window.
//!
//! Run: `cargo bench --bench delivery`; with `HANDOFF_BENCH_POSTGRES_URL` set
//! the same run is made again with the store on PostgreSQL (a fresh schema,
//! dropped afterwards). Bounded: a fixed number of leads.

// Benchmark code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use handoff::config::{Config, Overrides};
use handoff::whatsapp::{Sandbox, SandboxConfig, SandboxTemplate};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The allocator the `handoff` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NUMBERS: usize = 3;
const RATE: u32 = 80;

fn lead(i: usize) -> Value {
    json!({
        "name": format!("Lead {i}"),
        "phone": format!("+9196{i:08}"),
        "channel": "instagram",
        "intent": "event_enquiry",
        "consent": {"whatsapp": true},
        "fields": {"city": "Goa", "event_date": "2027-03-14", "guests": 100},
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test" || a == "--quick");
    let per_number = if quick { 100 } else { 800 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        run(
            "SQLite",
            format!("sqlite://{}", dir.path().join("bench.db").display()),
            per_number,
        )
        .await;
        if let Some(schema) = support::Schema::create("delivery").await {
            run("PostgreSQL", schema.url.clone(), per_number).await;
            schema.drop().await;
        }
    });
}

async fn run(label: &str, database: String, per_number: usize) {
    {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().expect("temp dir");
        let loaded = handoff::ruleset::load(&root.join("rules"), Some(&root.join("templates")));
        let templates = loaded
            .ruleset
            .as_ref()
            .map(|r| SandboxTemplate::all_from(&r.templates))
            .unwrap_or_default();
        let sandbox = Arc::new(
            Sandbox::new(SandboxConfig {
                templates,
                status_webhooks: false,
                ..SandboxConfig::default()
            })
            .expect("sandbox"),
        );
        let sandbox_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let sandbox_base = format!("http://{}", sandbox_listener.local_addr().expect("addr"));
        tokio::spawn(handoff::whatsapp::sandbox::serve(
            sandbox.clone(),
            sandbox_listener,
            std::future::pending(),
        ));

        let mut file = String::new();
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for n in 0..NUMBERS {
            file.push_str(&format!(
                "[[accounts]]\nid = \"team{n}\"\napi_keys = [\"env:KEY{n}\"]\n[accounts.routing]\ndefault = \"events\"\n\
                 [[accounts.whatsapp]]\nkey = \"events-main\"\nphone_number_id = \"10654035224292{n}\"\ntoken = \"env:TOKEN\"\nrate = {RATE}\n\n"
            ));
            env.insert(format!("KEY{n}"), format!("hk_bench_{n}"));
        }
        file.push_str(&format!("[delivery]\nwhatsapp_base = \"{sandbox_base}\"\n"));
        env.insert("TOKEN".into(), "bench-token".into());
        let path = dir.path().join("handoff.toml");
        std::fs::write(&path, file).expect("config");
        let flags = Overrides {
            listen: Some("127.0.0.1:0".into()),
            database: Some(database),
            rules: Some(root.join("rules")),
        };
        let mut config = Config::load(Some(&path), &env, &flags).expect("config");
        config.templates = Some(root.join("templates"));
        let state = handoff::server::state(config).await.expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(handoff::server::serve(
            state,
            listener,
            std::future::pending(),
        ));

        let client = reqwest::Client::new();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for n in 0..NUMBERS {
            let (client, base) = (client.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..per_number {
                    let r = client
                        .post(format!("{base}/v1/leads"))
                        .bearer_auth(format!("hk_bench_{n}"))
                        .json(&lead(n * 1_000_000 + i))
                        .send()
                        .await;
                    assert!(r.is_ok_and(|r| r.status().is_success()), "intake failed");
                }
            }));
        }
        for t in tasks {
            t.await.expect("intake task");
        }
        let intake = started.elapsed();
        let total = NUMBERS * per_number;
        let deadline = Instant::now() + Duration::from_secs(120);
        while sandbox.messages().len() < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = started.elapsed();
        let messages = sandbox.messages();
        let mut by_number: BTreeMap<String, Vec<chrono::DateTime<chrono::Utc>>> = BTreeMap::new();
        for m in &messages {
            by_number
                .entry(m.phone_number_id.clone())
                .or_default()
                .push(m.at);
        }
        println!("\n== delivery through the sandbox, store on {label}: {NUMBERS} numbers at {RATE} messages/s each ==");
        println!(
            "{total} leads taken in {:.2} s; {} messages sent in {:.2} s (limit: {:.1} s)",
            intake.as_secs_f64(),
            messages.len(),
            elapsed.as_secs_f64(),
            per_number as f64 / RATE as f64
        );
        for (number, mut times) in by_number {
            times.sort();
            let span = (*times.last().expect("a send") - times[0])
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1e6;
            // The busiest one-second window, at the sandbox's clock.
            let mut busiest = 0;
            let mut j = 0;
            for i in 0..times.len() {
                while times[i] - times[j] >= chrono::Duration::seconds(1) {
                    j += 1;
                }
                busiest = busiest.max(i - j + 1);
            }
            println!(
                "number {number}: {} messages, {:.1}/s on average, busiest second {busiest} (limit {RATE})",
                times.len(),
                (times.len() - 1) as f64 / span.max(1e-9),
            );
        }
    }
}
