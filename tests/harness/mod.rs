//! What the integration tests share, so that each test reads as its scenario:
//!
//! - [`db`]: a database of each kind there is (a SQLite file; a PostgreSQL
//!   schema of its own when `HANDOFF_TEST_POSTGRES_URL` names a server, or a
//!   whole database for the real binaries), dropped when the test ends;
//! - [`server`]: the real server started in this process on `127.0.0.1:0`
//!   over such a database, from a configuration file with `env:` secrets;
//! - [`process`]: the real `handoff` binary as a child process, killed when
//!   the test ends;
//! - [`api`]: the HTTP API as an account's key calls it, Meta's webhook
//!   signature, and the inbox signed in to as a browser would;
//! - [`hooks`]: endpoints on loopback that receive what the service sends;
//! - [`wait`]: asking again until something is there;
//! - here: the project's root and what several tests start from (Meta's
//!   payloads, Aisha's enquiry, Acme's events queues).
//!
//! Each test binary uses part of it.

#![allow(dead_code)]

pub mod api;
pub mod db;
pub mod hooks;
pub mod process;
pub mod server;
pub mod wait;

// What the tests use most, by its name alone.
#[allow(unused_imports)]
pub use api::{answer, browser, hidden, meta_signed, Api, Operator};
#[allow(unused_imports)]
pub use db::{databases, postgres, Db, PgDatabase};
#[allow(unused_imports)]
pub use hooks::{hook, listen, Hook, Received};
#[allow(unused_imports)]
pub use process::{binary, free_port, Process};
#[allow(unused_imports)]
pub use server::Server;
#[allow(unused_imports)]
pub use wait::{eventually, until, POLL};

use serde_json::Value;
use std::path::PathBuf;

/// The project's root, for the bundled rules, templates and examples.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of Meta's payloads in `tests/fixtures/meta`.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/meta").join(name)).unwrap()
}

/// Aisha's enquiry as the API takes it (`examples/leads/aisha-api.json`):
/// a Goa wedding with a WhatsApp opt-in.
pub fn aisha() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("examples/leads/aisha-api.json")).unwrap(),
    )
    .unwrap()
}

/// Acme's queues for the events playbook's handoffs, as a configuration's
/// account subtables: `events-closers` (`closers`, one open thread each,
/// always open, escalating after 2 h) and `events-senior-closers` (Priya,
/// least loaded).
pub fn events_queues(closers: &[&str]) -> String {
    format!(
        r#"[accounts.queues.events-closers]
members = {closers:?}
capacity = 1
hours = "mon-sun 00:00-24:00"
timezone = "UTC"
escalate_after = "2h"
escalate_to = "events-senior-closers"

[accounts.queues.events-senior-closers]
members = ["priya@acme.example"]
strategy = "least_loaded"
hours = "mon-sun 00:00-24:00"
timezone = "UTC"
"#
    )
}
