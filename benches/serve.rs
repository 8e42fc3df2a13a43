//! Load test of `handoff serve` on this machine, over real HTTP on loopback:
//! durable `POST /v1/leads` (committed to SQLite before the answer) at 64
//! concurrent connections, and `POST /v1/dry-run` against a trivial axum
//! handler measured in the same run. With `HANDOFF_BENCH_POSTGRES_URL` set
//! (a server on this machine), durable intake is measured on PostgreSQL too,
//! in a fresh schema dropped afterwards, and printed beside SQLite's.
//!
//! Run: `cargo bench --bench serve`. The README gives the figures. Bounded:
//! a fixed number of requests, loopback only.

// Benchmark code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use handoff::config::{Config, Overrides};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The allocator the `handoff` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: usize = 64;
const KEY: &str = "hk_bench";

struct Run {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: usize,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name:<32} {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} requests, {} errors)",
            self.per_second(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
            self.requests,
            self.errors
        )
    }
}

/// Sends `total` requests over `CONNECTIONS` concurrent connections; `body(i)` is request i.
async fn load(
    client: &reqwest::Client,
    url: &str,
    total: usize,
    body: Arc<dyn Fn(usize) -> Value + Send + Sync>,
) -> Run {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, url, next, body) =
            (client.clone(), url.to_string(), next.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&body(i))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
                latencies.push(t.elapsed());
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            errors += e;
        }
    }
    Run {
        requests: total,
        elapsed: started.elapsed(),
        latencies,
        errors,
    }
}

fn lead(i: usize) -> Value {
    let city = ["Goa", "Mumbai", "Pune", "Delhi"][i % 4];
    json!({
        "name": format!("Lead {i}"),
        "phone": format!("+9198{:08}", i),
        "channel": "instagram",
        "intent": if i % 3 == 0 { "pricing" } else { "event_enquiry" },
        "playbook": "events",
        "consent": {"whatsapp": i % 4 != 0},
        "fields": {"city": city, "event_date": "2027-03-14", "guests": 50 + (i % 500)},
        "transcript": [{"channel": "instagram", "from": "lead", "text": "Hi, planning an event", "at": "2026-11-20T04:10:00Z"}]
    })
}

/// Starts `handoff serve` in this process on `database`; returns its base URL.
async fn start(root: &std::path::Path, database: String) -> String {
    let env: BTreeMap<String, String> = [("HANDOFF_DEMO_API_KEY".to_string(), KEY.to_string())]
        .into_iter()
        .collect();
    let flags = Overrides {
        listen: Some("127.0.0.1:0".into()),
        database: Some(database),
        rules: Some(root.join("rules")),
    };
    let mut config = Config::load(None, &env, &flags).expect("config");
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
    base
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().expect("temp dir");
        let base = start(&root, format!("sqlite://{}", dir.path().join("bench.db").display())).await;
        // The yardstick: a trivial axum handler that parses the same JSON and answers it.
        let trivial = axum::Router::new().route("/echo", axum::routing::post(|axum::Json(v): axum::Json<Value>| async move { axum::Json(json!({"ok": v.is_object()})) }));
        let trivial_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let trivial_base = format!("http://{}", trivial_listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(trivial_listener, trivial).await });
        let client = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().expect("client");
        let quick = std::env::args().any(|a| a == "--test" || a == "--quick");
        let n = if quick { 2_000 } else { 20_000 };
        // `--intake-only`: durable intake alone, for comparing two builds
        // run after each other (the dry-run rounds take most of a full run).
        if std::env::args().any(|a| a == "--intake-only") {
            load(&client, &format!("{base}/v1/leads"), 500, Arc::new(|i| lead(1_000_000 + i))).await;
            let leads = load(&client, &format!("{base}/v1/leads"), n, Arc::new(lead)).await;
            println!("{}", leads.line("POST /v1/leads (durable, SQLite)"));
            return;
        }
        // Dry runs first: the leads taken below are then delivered to the
        // sandbox in the background, which would weigh on the comparison.
        load(&client, &format!("{trivial_base}/echo"), 500, Arc::new(lead)).await;
        load(&client, &format!("{base}/v1/dry-run"), 500, Arc::new(lead)).await;
        // Dry runs and the trivial handler alternate, round by round, so that
        // whatever else the machine is doing weighs on both alike; the ratio
        // reported is the median of the rounds'.
        let mut rounds = Vec::new();
        for _ in 0..5 {
            let dry = load(&client, &format!("{base}/v1/dry-run"), n, Arc::new(|i| {
                let mut l = lead(i);
                l["now"] = json!("2027-01-10T10:00:00+05:30");
                l
            }))
            .await;
            let echo = load(&client, &format!("{trivial_base}/echo"), n, Arc::new(lead)).await;
            rounds.push((dry.per_second() / echo.per_second(), dry, echo));
        }
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, dry, echo) = &rounds[rounds.len() / 2];
        // Warm up connections and caches, then durable intake (while the
        // delivery worker sends what it decides to the built-in sandbox).
        load(&client, &format!("{base}/v1/leads"), 500, Arc::new(|i| lead(1_000_000 + i))).await;
        let leads = load(&client, &format!("{base}/v1/leads"), n, Arc::new(lead)).await;
        // The same on PostgreSQL: a server of its own (and its own delivery
        // worker) on a fresh schema; the SQLite server's worker still sends
        // in the background, at its number's 80 messages a second.
        let on_postgres = match support::Schema::create("intake").await {
            Some(schema) => {
                let pg = start(&root, schema.url.clone()).await;
                load(&client, &format!("{pg}/v1/leads"), 500, Arc::new(|i| lead(1_000_000 + i))).await;
                let run = load(&client, &format!("{pg}/v1/leads"), n, Arc::new(lead)).await;
                schema.drop().await;
                Some(run)
            }
            None => None,
        };
        println!("\n== handoff serve on loopback, {CONNECTIONS} concurrent connections ==");
        println!("{}", leads.line("POST /v1/leads (durable, SQLite)"));
        if let Some(pg) = &on_postgres {
            println!("{}", pg.line("POST /v1/leads (durable, PostgreSQL)"));
        }
        println!("{}", dry.line("POST /v1/dry-run"));
        println!("{}", echo.line("trivial axum handler"));
        println!(
            "dry-run / trivial throughput: {ratio:.2} (median of rounds {}; target >= 0.5); leads: {:.0}/s (target >= 2,000/s), p99 {:.1} ms (target < 50 ms)",
            rounds.iter().map(|r| format!("{:.2}", r.0)).collect::<Vec<_>>().join(", "),
            leads.per_second(),
            leads.percentile(0.99).as_secs_f64() * 1000.0
        );
    });
}
