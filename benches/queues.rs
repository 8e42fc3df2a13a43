//! Queue passes through the store: what the queue worker pays every second
//! for a queue with nothing waiting, how fast a backlog of waiting threads
//! is given out (20 members, round robin and least loaded), and how fast a
//! backlog of due threads escalates.
//!
//! Run: `cargo bench --bench queues`; with `HANDOFF_BENCH_POSTGRES_URL` set
//! the same runs are made on PostgreSQL too (a fresh schema, dropped
//! afterwards). Bounded: a fixed number of threads.

// Benchmark code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use chrono::Utc;
use handoff::queues::{Member, QueuePlan, Strategy};
use handoff::store::{DecisionRecord, LeadEvent, Store};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MEMBERS: usize = 20;

fn event(i: usize) -> LeadEvent {
    let phone = format!("+9195{i:08}");
    LeadEvent {
        identities: vec![("phone".into(), phone.clone())],
        name: Some(format!("Lead {i}")),
        phone: Some(phone),
        channel: Some("api".into()),
        intent: Some("buy".into()),
        ..LeadEvent::default()
    }
}

fn routed(queue: &str) -> DecisionRecord {
    DecisionRecord {
        playbook: "sales".into(),
        ruleset_hash: "bench".into(),
        queue: Some(queue.into()),
        managed: true,
        ..DecisionRecord::default()
    }
}

fn plan(queue: &str, strategy: Strategy) -> QueuePlan {
    QueuePlan {
        name: queue.into(),
        strategy,
        capacity: 10_000,
        members: (0..MEMBERS)
            .map(|m| Member::Operator(format!("op{m}@bench.example")))
            .collect(),
        idle: Duration::from_secs(900),
    }
}

async fn fill(store: &Store, queue: &str, from: usize, n: usize) {
    let tasks: Vec<_> = (from..from + n)
        .map(|i| {
            let store = store.clone();
            let record = routed(queue);
            tokio::spawn(async move {
                store
                    .record("bench", event(i), move |_| record)
                    .await
                    .expect("record")
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}

async fn run(label: &str, url: &str, threads: usize) {
    let store = Store::open(url).await.expect("store");
    for m in 0..MEMBERS {
        let op = store
            .create_operator(
                "bench",
                &format!("op{m}@bench.example"),
                &format!("Op {m}"),
                "x",
            )
            .await
            .expect("operator");
        store
            .create_session(
                &op.id,
                &format!("t{m}"),
                "c",
                Utc::now() + chrono::Duration::hours(1),
            )
            .await
            .expect("session");
        store.set_available(&op.id, true).await.expect("available");
    }
    // Nothing waiting: the worker's cost per queue and tick.
    let idle = plan("empty", Strategy::RoundRobin);
    let rounds = 2_000;
    let started = Instant::now();
    for _ in 0..rounds {
        assert!(store
            .assign_waiting("bench", &idle)
            .await
            .expect("pass")
            .is_empty());
    }
    let idle_pass = started.elapsed() / rounds;
    let mut figures = vec![format!(
        "idle assignment pass {:.0} µs",
        idle_pass.as_secs_f64() * 1e6
    )];
    for (i, strategy) in [Strategy::RoundRobin, Strategy::LeastLoaded]
        .into_iter()
        .enumerate()
    {
        let queue = format!("backlog-{i}");
        fill(&store, &queue, i * threads, threads).await;
        let p = plan(&queue, strategy);
        let started = Instant::now();
        let mut given = 0;
        loop {
            let n = store.assign_waiting("bench", &p).await.expect("pass").len();
            if n == 0 {
                break;
            }
            given += n;
        }
        assert_eq!(given, threads);
        let took = started.elapsed();
        figures.push(format!(
            "{} {:.0} threads/s",
            strategy.as_str(),
            threads as f64 / took.as_secs_f64()
        ));
    }
    // Every thread of the first backlog is due.
    let cutoff = Utc::now() + chrono::Duration::seconds(1);
    let started = Instant::now();
    let mut moved = 0;
    loop {
        let n = store
            .escalate("bench", "backlog-0", "seniors", cutoff, "15m")
            .await
            .expect("escalate")
            .len();
        if n == 0 {
            break;
        }
        moved += n;
    }
    assert_eq!(moved, threads);
    figures.push(format!(
        "escalation {:.0} threads/s",
        threads as f64 / started.elapsed().as_secs_f64()
    ));
    println!(
        "{label:<10} {threads} threads, {MEMBERS} members: {}",
        figures.join(", ")
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test" || a == "--quick");
    let threads = if quick { 200 } else { 5_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        run("SQLite", &url, threads).await;
        if let Some(schema) = support::Schema::create("queue passes").await {
            run("PostgreSQL", &schema.url, threads).await;
            schema.drop().await;
        }
    });
}
