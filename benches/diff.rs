//! `handoff diff` throughput: leads per second through both rulesets, from
//! JSONL in memory (the CLI adds only file reading), with every core.
//!
//! Run: `cargo bench --bench diff`. The README gives the figures.

// Benchmark code: a failed setup step should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use handoff::diff::{run, Options};
use handoff::ruleset::load;
use std::io::Cursor;
use std::path::PathBuf;

const LEADS: usize = 200_000;

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let old = load(&root.join("rules"), None)
        .ruleset
        .expect("bundled rules check");
    // The new version widens the Goa rule and renames the triage queue.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    for name in ["events", "clinics", "real_estate"] {
        let text = std::fs::read_to_string(root.join(format!("rules/{name}.rules"))).unwrap();
        let text = text
            .replace(
                "city in [\"Goa\", \"Mumbai\"]",
                "city in [\"Goa\", \"Mumbai\", \"Pune\"]",
            )
            .replace("assign \"events-triage\"", "assign \"events-inbox\"");
        std::fs::write(dir.path().join(format!("rules/{name}.rules")), text).unwrap();
    }
    let new = load(&dir.path().join("rules"), Some(&root.join("templates")))
        .ruleset
        .expect("edited rules check");
    let schema = &old.playbooks["events"].compiled.schema;
    let start = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    let mut jsonl = String::new();
    for record in handoff::generate::leads(schema, LEADS, 42, start) {
        jsonl.push_str(&record.to_json());
        jsonl.push('\n');
    }
    let options = Options {
        playbook: None,
        now: start,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    };
    let summary = run(
        Cursor::new(jsonl.as_bytes()),
        &old,
        &new,
        false,
        &options,
        |_, _| {},
    )
    .unwrap();
    println!(
        "{} leads, {} change, {} groups, {} skipped",
        summary.leads,
        summary.changed,
        summary.groups.len(),
        summary.skipped
    );
    let mut group = c.benchmark_group("diff");
    group.sample_size(10);
    group.throughput(Throughput::Elements(LEADS as u64));
    group.bench_function("200k_leads", |b| {
        b.iter(|| {
            run(
                Cursor::new(jsonl.as_bytes()),
                &old,
                &new,
                false,
                &options,
                |_, _| {},
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
