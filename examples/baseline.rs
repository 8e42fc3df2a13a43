//! The yardstick for `benches/wrk.sh`: the least an axum service can do per
//! request. `POST /` reads the whole body and answers a small JSON object, on
//! the same multi-threaded tokio runtime and allocator as `handoff serve`, so
//! the ratio of the two under one load generator is the cost of handoff's own
//! work (auth, parsing, deciding) rather than of HTTP on this machine.
//!
//! Run: `cargo run --release --example baseline -- 8090` (the port; 0 picks one).

// A benchmark fixture: failing to start is the only useful answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Answers after the body has been read in full, as a JSON API must.
async fn answer(body: Bytes) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"ok": true, "bytes": body.len()}))
}

fn main() -> std::process::ExitCode {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("usage: baseline PORT");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        // The same first line as `handoff serve`, so one start-up wait fits both.
        println!(
            "baseline listening on http://{}",
            listener.local_addr().expect("address")
        );
        let app = Router::new().route("/", post(answer));
        axum::serve(listener, app).await.expect("serve");
    });
    std::process::ExitCode::SUCCESS
}
