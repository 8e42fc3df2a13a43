//! The SQLite implementation of the store: one writer thread that commits
//! the writes of many requests together, and a few reader connections.
//!
//! SQLite has one writer at a time, so every write goes to one thread that
//! owns the write connection. It takes whatever writes are waiting (up to
//! [`MAX_BATCH`]), runs each inside its own savepoint of one transaction, and
//! answers them only after that transaction has committed: a write that fails
//! rolls back to its savepoint and fails alone, a commit that fails fails
//! them all, and nobody is answered before their rows are in the log (group
//! commit). Statements run on that thread directly, with cached prepared
//! statements, rather than one thread hop each; that, and one commit for many
//! writes, is what lets durable intake keep up with the HTTP side. Reads run
//! on the blocking pool with their own connections, which WAL lets read while
//! the writer writes.

mod inbox;
mod queues;

use super::outbox::{self, Effects, Flag, OptOut};
use super::{
    new_state, ConsentRecord, DecisionRecord, Enqueued, LeadColumns, LeadEvent, LeadState,
    OutboxItem, OutboxKind, PendingWebhook, Recorded, SendOutcome, StatusApplied, StatusRecord,
    StoreError, WebhookSource,
};
use crate::engine::lead::{Consent, TranscriptMessage};
use crate::engine::Lead;
use crate::intake::DeliveryStatus;
use crate::store::view::{
    self, ConsentEntry, Identity, LeadRecord, LeadSummary, OutboxEntry, StoredDecision, ThreadView,
    TranscriptEntry,
};
use crate::store::Backend;
use chrono::{DateTime, Utc};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most writes committed in one transaction. A batch this size takes a
/// few milliseconds, which bounds the latency that batching adds.
const MAX_BATCH: usize = 64;

/// Reader connections kept open between reads.
const MAX_IDLE_READERS: usize = 8;

/// The schema, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_leads",
        include_str!("../../../migrations/sqlite/0001_leads.sql"),
    ),
    (
        "0002_webhooks",
        include_str!("../../../migrations/sqlite/0002_webhooks.sql"),
    ),
    (
        "0003_delivery",
        include_str!("../../../migrations/sqlite/0003_delivery.sql"),
    ),
    (
        "0004_inbox",
        include_str!("../../../migrations/sqlite/0004_inbox.sql"),
    ),
    (
        "0005_queues",
        include_str!("../../../migrations/sqlite/0005_queues.sql"),
    ),
    (
        "0006_conversations",
        include_str!("../../../migrations/sqlite/0006_conversations.sql"),
    ),
    (
        "0007_idempotency",
        include_str!("../../../migrations/sqlite/0007_idempotency.sql"),
    ),
    (
        "0008_outbox_claims",
        include_str!("../../../migrations/sqlite/0008_outbox_claims.sql"),
    ),
];

/// How the writer thread answers a write once its transaction has ended.
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A write waiting for the writer thread.
trait Job: Send {
    /// Runs the write; says whether it succeeded (else its savepoint is
    /// rolled back) and how to answer it after the commit.
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Reply);
    /// Answers the write with an error without running it.
    fn fail(self: Box<Self>, error: StoreError);
}

struct Write<F, T> {
    work: F,
    answer: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Job for Write<F, T>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Reply) {
        let Write { work, answer } = *self;
        let result = work(conn);
        let ok = result.is_ok();
        let reply: Reply = Box::new(move |committed| {
            let _ = answer.send(committed.and(result));
        });
        (ok, reply)
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.answer.send(Err(error));
    }
}

/// A SQLite database: the writer thread's queue and the reader connections.
pub struct Sqlite {
    path: PathBuf,
    jobs: tokio::sync::mpsc::Sender<Box<dyn Job>>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite").field("path", &self.path).finish()
    }
}

pub(super) fn now_text() -> String {
    time_text(Utc::now())
}

/// Times as stored: RFC 3339, microseconds, UTC (the text sorts as the time).
pub(super) use super::view::time_text;

pub(super) fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names.
fn path_of(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            StoreError::Url(format!("`{url}` is not a SQLite URL: give `sqlite://PATH`"))
        })?;
    // Connection options in a query string are ours to set, not the URL's.
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Url(format!(
            "`{url}` names no file: give `sqlite://PATH` (an in-memory database would lose every lead at exit)"
        )));
    }
    Ok(PathBuf::from(path))
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open `{}`: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL with NORMAL survives a crash of the process: a commit that returned
    // is in the log. (FULL adds an fsync per commit, for power loss.)
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )?;
    // Pages are read through a memory map of the file (the kernel's page
    // cache, shared by every connection) rather than copied in by a
    // `pread` each: with the default 2 MB page cache, those reads were a
    // fifth of the writer thread's time once the database outgrew it.
    conn.execute_batch(&format!("PRAGMA mmap_size = {MMAP_BYTES};"))?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// How much of the database file is read through a memory map: address
/// space, not memory; pages are the kernel's to keep or drop.
const MMAP_BYTES: u64 = 1 << 30;

/// The writer's own page cache, in KiB: the pages every write walks (the
/// indexes' upper levels, the latest leads and outbox rows) stay decoded.
const WRITER_CACHE_KIB: u64 = 64 * 1024;

/// Brings the schema up to date, each migration in its own transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let mut applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    // Databases made before this store kept their migrations in sqlx's table.
    if applied == 0 {
        let legacy: Option<i64> = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                [],
                |r| r.get(0),
            )
            .ok()
            .filter(|n: &i64| *n > 0)
            .map(|_| {
                conn.query_row(
                    "SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1",
                    [],
                    |r| r.get(0),
                )
            })
            .transpose()?;
        if let Some(n) = legacy {
            applied = n;
        }
    }
    if applied as usize > MIGRATIONS.len() {
        return Err(StoreError::Migration(format!(
            "the database has {applied} migrations applied and this handoff knows {}: it was written by a newer version",
            MIGRATIONS.len()
        )));
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Migration(format!("migration {name}: {e}")))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

impl Sqlite {
    /// Opens (creating when missing) the database at `url`, migrates it and
    /// starts the writer thread.
    pub async fn open(url: &str) -> Result<Sqlite, StoreError> {
        let path = path_of(url)?;
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = connect(&opened)?;
            migrate(&mut conn)?;
            conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB};"))?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening the database: {e}")))??;
        let (jobs, queue) = tokio::sync::mpsc::channel(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("handoff-sqlite-writer".into())
            .spawn(move || write_loop(conn, queue))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the database writer: {e}"))
            })?;
        Ok(Sqlite {
            path,
            jobs,
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Runs `f` on the writer thread inside the shared transaction; answers
    /// once that transaction has committed.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Box<dyn Job> = Box::new(Write { work: f, answer });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        answered
            .await
            // A write that panicked drops its answer unsent.
            .map_err(|_| StoreError::Unavailable("the write failed unexpectedly".into()))?
    }

    /// Runs `f` with a reader connection on the blocking pool.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (path, readers) = (self.path.clone(), Arc::clone(&self.readers));
        tokio::task::spawn_blocking(move || {
            let idle = readers.lock().ok().and_then(|mut r| r.pop());
            let conn = match idle {
                Some(c) => c,
                None => connect(&path)?,
            };
            let result = f(&conn);
            if let Ok(mut readers) = readers.lock() {
                if readers.len() < MAX_IDLE_READERS {
                    readers.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("a database read failed: {e}")))?
    }
}

impl Backend for Sqlite {
    async fn ping(&self) -> bool {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .is_ok()
    }

    async fn record(
        &self,
        account: &str,
        event: LeadEvent,
        decide: impl FnOnce(&LeadState) -> DecisionRecord + Send + 'static,
    ) -> Result<Recorded, StoreError> {
        let account = account.to_string();
        self.write(move |conn| record_event(conn, &account, &event, decide))
            .await
    }

    async fn lead(&self, account: &str, id: &str) -> Result<Option<LeadRecord>, StoreError> {
        let (account, id) = (account.to_string(), id.to_string());
        self.read(move |c| lead_record(c, &account, &id)).await
    }

    async fn search(
        &self,
        account: &str,
        query: Option<&str>,
        limit: i64,
    ) -> Result<Vec<LeadSummary>, StoreError> {
        let account = account.to_string();
        let pattern = query.map(|q| format!("%{}%", q.replace(['%', '_'], "")));
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, phone, email, channel, intent, playbook, updated_at FROM leads \
                 WHERE account_id = ?1 AND merged_into IS NULL \
                 AND (?2 IS NULL OR name LIKE ?2 OR phone LIKE ?2 OR email LIKE ?2) \
                 ORDER BY updated_at DESC, id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![account, pattern, limit], |r| {
                Ok(LeadSummary {
                    id: r.get("id")?,
                    name: r.get("name")?,
                    phone: r.get("phone")?,
                    email: r.get("email")?,
                    channel: r.get("channel")?,
                    intent: r.get("intent")?,
                    playbook: r.get("playbook")?,
                    updated_at: r.get("updated_at")?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn set_thread_state(
        &self,
        account: &str,
        lead_id: &str,
        human: bool,
        queue: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (account, lead_id, queue) = (
            account.to_string(),
            lead_id.to_string(),
            queue.map(str::to_string),
        );
        self.write(move |c| {
            // A lead merged into another is handled as the survivor.
            let Some(lead_id) = survivor(c, &account, &lead_id)? else {
                return Ok(false);
            };
            let changed = c
                .prepare_cached(
                    "UPDATE threads SET state = ?1, queue = COALESCE(?2, queue), updated_at = ?3 WHERE lead_id = ?4 AND account_id = ?5",
                )?
                .execute(params![
                    if human { "human" } else { "automated" },
                    queue,
                    now_text(),
                    lead_id,
                    account
                ])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn enqueue_webhooks(
        &self,
        account: &str,
        source: WebhookSource,
        events: &[(String, Value)],
    ) -> Result<usize, StoreError> {
        let (account, source) = (account.to_string(), source.to_string());
        let events: Vec<(String, String)> = events
            .iter()
            .map(|(id, payload)| (id.clone(), payload.to_string()))
            .collect();
        self.write(move |c| {
            let now = now_text();
            let mut stmt = c.prepare_cached(
                "INSERT OR IGNORE INTO webhook_events (account_id, source, source_id, payload, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut new = 0;
            for (source_id, payload) in &events {
                new += stmt.execute(params![account, source, source_id, payload, now])?;
            }
            Ok(new)
        })
        .await
    }

    async fn enqueue_webhook(
        &self,
        account: &str,
        source: WebhookSource,
        source_id: &str,
        payload: &Value,
    ) -> Result<Enqueued, StoreError> {
        let (account, source, source_id) = (
            account.to_string(),
            source.to_string(),
            source_id.to_string(),
        );
        let payload = payload.to_string();
        self.write(move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO webhook_events (account_id, source, source_id, payload, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![account, source, source_id, payload, now_text()])?
                == 1;
            let stored: Option<String> = if inserted {
                None
            } else {
                c.prepare_cached(
                    "SELECT payload FROM webhook_events WHERE account_id = ?1 AND source = ?2 AND source_id = ?3",
                )?
                .query_row(params![account, source, source_id], |r| r.get(0))
                .optional()?
            };
            Ok(Enqueued::of(inserted, stored.as_deref(), &payload))
        })
        .await
    }

    /// The due events. `_lease` is for databases several instances share:
    /// a SQLite file has one process, whose one worker is the only reader.
    async fn due_webhooks(
        &self,
        limit: i64,
        _lease: Duration,
    ) -> Result<Vec<PendingWebhook>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, account_id, source, source_id, payload, attempts FROM webhook_events \
                 WHERE state = 'pending' AND (next_attempt IS NULL OR next_attempt <= ?1) ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_text(), limit], |r| {
                Ok(PendingWebhook {
                    id: r.get("id")?,
                    account: r.get("account_id")?,
                    source: r.get("source")?,
                    source_id: r.get("source_id")?,
                    payload: serde_json::from_str(&r.get::<_, String>("payload")?)
                        .unwrap_or(Value::Null),
                    attempts: r.get("attempts")?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn finish_webhook(
        &self,
        id: i64,
        error: Option<&str>,
        give_up: bool,
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let (state, next) = super::webhook_end(error, give_up, retry_in, now);
        let next = next.map(time_text);
        let error = error.map(str::to_string);
        self.write(move |c| {
            c.prepare_cached("UPDATE webhook_events SET state = ?1, attempts = attempts + 1, next_attempt = ?2, error = ?3, processed_at = ?4 WHERE id = ?5")?
                .execute(params![state, next, error, time_text(now), id])?;
            Ok(())
        })
        .await
    }

    async fn webhook_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT state, COUNT(*) AS n FROM webhook_events GROUP BY state ORDER BY state",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn apply_status(
        &self,
        account: &str,
        status: &StatusRecord,
        fallback: &[String],
    ) -> Result<StatusApplied, StoreError> {
        let (account, status, fallback) = (account.to_string(), status.clone(), fallback.to_vec());
        self.write(move |c| apply_status(c, &account, &status, &fallback))
            .await
    }

    async fn claim_outbox(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
        grace: Duration,
        max_age: Duration,
        fallbacks: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let (owner, fallbacks) = (owner.to_string(), fallbacks.clone());
        self.write(move |c| claim_outbox(c, &owner, limit, lease, grace, max_age, &fallbacks))
            .await
    }

    async fn finish_outbox(
        &self,
        owner: &str,
        item: &OutboxItem,
        outcome: SendOutcome,
        fallback: &[String],
    ) -> Result<bool, StoreError> {
        let (owner, item, fallback) = (owner.to_string(), item.clone(), fallback.to_vec());
        self.write(move |c| finish_outbox(c, &owner, &item, outcome, &fallback))
            .await
    }

    async fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT kind, state, COUNT(*) FROM outbox GROUP BY kind, state ORDER BY kind, state",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn disable_endpoint(
        &self,
        account: &str,
        endpoint: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (account, endpoint, reason) = (
            account.to_string(),
            endpoint.to_string(),
            reason.to_string(),
        );
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO endpoint_state (account_id, endpoint, disabled_at, reason) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (account_id, endpoint) DO UPDATE SET disabled_at = excluded.disabled_at, reason = excluded.reason",
            )?
            .execute(params![account, endpoint, now_text(), reason])?;
            Ok(())
        })
        .await
    }

    async fn disabled_endpoints(&self, account: &str) -> Result<Vec<(String, String)>, StoreError> {
        let account = account.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT endpoint, COALESCE(reason, '') FROM endpoint_state WHERE account_id = ?1 AND disabled_at IS NOT NULL ORDER BY endpoint",
            )?;
            let rows = stmt.query_map(params![account], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn record_marketing(
        &self,
        account: &str,
        wa_id: &str,
        opted_out: bool,
        at: DateTime<Utc>,
        source: &str,
        evidence: Option<&str>,
    ) -> Result<(), StoreError> {
        let (account, wa_id, source) = (account.to_string(), wa_id.to_string(), source.to_string());
        let evidence = evidence.map(str::to_string);
        self.write(move |c| {
            record_marketing(
                c,
                &account,
                &wa_id,
                opted_out,
                at,
                &source,
                evidence.as_deref(),
            )
        })
        .await
    }

    async fn queue_agent_reply(
        &self,
        account: &str,
        lead_id: &str,
        agent: &str,
        payload: &Value,
        text: &str,
    ) -> Result<super::AgentReply, StoreError> {
        let (account, lead_id, agent, payload, text) = (
            account.to_string(),
            lead_id.to_string(),
            agent.to_string(),
            payload.to_string(),
            text.to_string(),
        );
        self.write(move |c| {
            let Some(id) = survivor(c, &account, &lead_id)? else {
                return Ok(super::AgentReply::NoLead);
            };
            let (state, assignee): (String, Option<String>) = c
                .prepare_cached("SELECT state, assignee FROM threads WHERE lead_id = ?1")?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let member = format!("agent:{agent}");
            if state == "human" || assignee.as_deref() != Some(member.as_str()) {
                return Ok(super::AgentReply::NotAssigned {
                    assignee,
                    human: state == "human",
                });
            }
            let now = now_text();
            // Automated: should a person take the thread over before it
            // goes out, it is cancelled like every automated message.
            let outbox_id = insert_reply(c, &account, &id, &payload, &member, &text, true, &now)?;
            c.prepare_cached(
                "UPDATE threads SET picked_up_at = COALESCE(picked_up_at, ?1), updated_at = ?1 WHERE lead_id = ?2",
            )?
            .execute(params![now, id])?;
            c.prepare_cached("UPDATE leads SET updated_at = ?1 WHERE id = ?2")?
                .execute(params![now, id])?;
            trail(c, &account, &id, &member, "reply", Some(&text))?;
            Ok(super::AgentReply::Queued { outbox_id })
        })
        .await
    }

    async fn record_consent(
        &self,
        account: &str,
        kind: &str,
        value: &str,
        consent: &ConsentRecord,
    ) -> Result<bool, StoreError> {
        let account = account.to_string();
        let identity = [(kind.to_string(), value.to_string())];
        let consent = consent.clone();
        self.write(move |c| {
            let Some((lead_id, _)) = find_leads(c, &account, &identity)?.into_iter().next() else {
                return Ok(false);
            };
            insert_consent(c, &account, &lead_id, &consent)?;
            Ok(true)
        })
        .await
    }
}

/// The writer thread: takes the waiting writes, runs each in a savepoint of
/// one transaction, commits, then answers them. Ends when every sender is gone.
fn write_loop(conn: Connection, mut queue: tokio::sync::mpsc::Receiver<Box<dyn Job>>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let error = StoreError::Database(format!("cannot start a transaction: {e}"));
            for job in batch {
                job.fail(error.clone());
            }
            continue;
        }
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            if let Err(e) = conn.execute_batch("SAVEPOINT write") {
                job.fail(StoreError::Database(format!("cannot start a write: {e}")));
                continue;
            }
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&conn)));
            let ok = match ran {
                Ok((ok, reply)) => {
                    replies.push(reply);
                    ok
                }
                Err(_) => {
                    tracing::error!("a database write panicked; it is rolled back");
                    false
                }
            };
            let end = if ok {
                "RELEASE write"
            } else {
                "ROLLBACK TO write; RELEASE write"
            };
            if let Err(e) = conn.execute_batch(end) {
                tracing::error!(error = %e, "ending a savepoint failed");
            }
        }
        let committed = conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            StoreError::Database(format!("commit failed: {e}"))
        });
        for reply in replies {
            reply(committed.clone());
        }
    }
}

/// Records an event for a lead and its decision (see [`super::Store::record`]).
fn record_event(
    c: &Connection,
    account: &str,
    event: &LeadEvent,
    decide: impl FnOnce(&LeadState) -> DecisionRecord,
) -> Result<Recorded, StoreError> {
    if let Some((source, source_id)) = &event.dedup {
        let seen: Option<(Option<String>, Option<String>)> = c
            .prepare_cached(
                "SELECT response, fingerprint FROM processed WHERE account_id = ?1 AND source = ?2 AND source_id = ?3",
            )?
            .query_row(params![account, source, source_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((text, fingerprint)) = seen {
            if super::key_reused(event, fingerprint.as_deref()) {
                return Ok(Recorded::KeyReused);
            }
            let response = text
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            return Ok(Recorded::Replay { response });
        }
    }
    let now = now_text();
    // Every lead any identity points to is this person.
    let found = find_leads(c, account, &event.identities)?;
    if found.is_empty() {
        // Known from the event alone: decided, then every row written once.
        let keys = super::marketing_keys(
            event
                .identities
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let opted_out = marketing_opted_out(c, account, &keys)?;
        let record = decide(&new_state(event, opted_out));
        let (response, lead_id, decision_id) = record_new(c, account, event, &now, record)?;
        return Ok(Recorded::New {
            lead_id,
            decision_id,
            response,
        });
    }
    let lead_id = found[0].0.clone();
    for (other, _) in found.iter().skip(1) {
        merge_into(c, &lead_id, other)?;
    }
    apply_event(c, account, &lead_id, event, &now)?;
    if let Some(at) = event.inbound_at {
        let at = time_text(at);
        c.prepare_cached(
            "UPDATE threads SET last_inbound_at = CASE WHEN last_inbound_at IS NULL OR last_inbound_at < ?1 THEN ?1 ELSE last_inbound_at END WHERE lead_id = ?2",
        )?
        .execute(params![at, lead_id])?;
    }
    if event.human_activity {
        // A person wrote from the business's phone: the thread is picked up.
        c.prepare_cached(
            "UPDATE threads SET state = 'human', picked_up_at = COALESCE(picked_up_at, ?1), updated_at = ?1 WHERE lead_id = ?2",
        )?
        .execute(params![now, lead_id])?;
    }
    let state = load_state(c, account, &lead_id, false)?;
    let record = decide(&state);
    // A lead routed for the first time keeps the playbook that decided it.
    c.prepare_cached(
        "UPDATE leads SET playbook = COALESCE(playbook, NULLIF(?1, '')) WHERE id = ?2",
    )?
    .execute(params![record.playbook, lead_id])?;
    let decision_id = insert_decision(c, account, &lead_id, &now, &record)?;
    if record.takeover {
        c.prepare_cached("UPDATE threads SET state = 'human', updated_at = ?1 WHERE lead_id = ?2")?
            .execute(params![now, lead_id])?;
    }
    if let Some(queue) = &record.queue {
        route_thread(c, account, &lead_id, queue, &record, &now)?;
    }
    keep_conversation(c, &lead_id, &state, &record, &now)?;
    if let Some(message) = &event.inbound {
        tell_agent(c, &lead_id, &decision_id, message, &now)?;
    }
    let response = finish_response(c, account, event, &now, &record, &lead_id, &decision_id)?;
    Ok(Recorded::New {
        lead_id,
        decision_id,
        response,
    })
}

/// Queues a WhatsApp reply (an operator's, or an agent's: `automated`) on
/// the lead's latest decision and writes it to the transcript as `sender`;
/// returns its outbox ID.
#[allow(clippy::too_many_arguments)]
pub(super) fn insert_reply(
    c: &Connection,
    account: &str,
    lead_id: &str,
    payload: &str,
    sender: &str,
    text: &str,
    automated: bool,
    now: &str,
) -> Result<String, StoreError> {
    let outbox_id = uuid::Uuid::now_v7().to_string();
    // Every lead has a decision (each event is decided): the reply
    // belongs to the latest, for the record.
    c.prepare_cached(
        "INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at, automated, updated_at) \
         SELECT ?1, ?2, ?3, d.id, 'whatsapp', ?4, ?5, ?6, ?5 FROM decisions d WHERE d.lead_id = ?3 ORDER BY d.at DESC, d.id DESC LIMIT 1",
    )?
    .execute(params![outbox_id, account, lead_id, payload, now, automated])?;
    c.prepare_cached(
        "INSERT INTO messages (account_id, lead_id, channel, sender, text, at) VALUES (?1, ?2, 'whatsapp', ?3, ?4, ?5)",
    )?
    .execute(params![account, lead_id, sender, text, now])?;
    Ok(outbox_id)
}

/// Writes down that the lead's conversation closed if it has idled out
/// (it already reads as closed; this makes the columns agree), as of the
/// moment its idle time ran out.
pub(super) fn settle_idle(c: &Connection, lead_id: &str) -> Result<(), StoreError> {
    let row: Option<(Option<String>, Option<i64>)> = c
        .prepare_cached("SELECT opened_at, idle_days FROM threads WHERE lead_id = ?1")?
        .query_row(params![lead_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(opened), idle_days)) = row else {
        return Ok(());
    };
    let last: Option<String> = c
        .prepare_cached("SELECT MAX(at) FROM messages WHERE lead_id = ?1")?
        .query_row(params![lead_id], |r| r.get(0))?;
    let (_, expired) = super::conversation(
        parse_time(Some(opened)),
        None,
        idle_days,
        parse_time(last),
        Vec::new(),
        Utc::now(),
    );
    if let Some(at) = expired {
        c.prepare_cached(
            "UPDATE threads SET opened_at = NULL, closed_at = ?1, asked = '[]' WHERE lead_id = ?2",
        )?
        .execute(params![time_text(at), lead_id])?;
    }
    Ok(())
}

/// The WhatsApp IDs a lead's marketing preference may be kept under.
fn lead_marketing_keys(c: &Connection, lead_id: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT kind, value FROM identities WHERE lead_id = ?1 AND kind IN ('whatsapp', 'phone')",
    )?;
    let identities = stmt
        .query_map(params![lead_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(super::marketing_keys(
        identities.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

/// Whether any of these WhatsApp IDs stopped marketing messages.
fn marketing_opted_out(c: &Connection, account: &str, keys: &[String]) -> Result<bool, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT opted_out FROM marketing_preferences WHERE account_id = ?1 AND wa_id = ?2",
    )?;
    for key in keys {
        let opted_out: Option<bool> = stmt
            .query_row(params![account, key], |r| r.get(0))
            .optional()?;
        if opted_out == Some(true) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The conversation after a decision: one opens with the first handoff
/// message queued while none is open (an idle one closed first); the
/// fields `ask` reported are kept while it is open.
fn keep_conversation(
    c: &Connection,
    lead_id: &str,
    state: &LeadState,
    record: &DecisionRecord,
    now: &str,
) -> Result<(), StoreError> {
    if state.thread.open {
        if let Some(asked) = super::asked_after(&state.thread, &record.asked) {
            c.prepare_cached("UPDATE threads SET asked = ?1 WHERE lead_id = ?2")?
                .execute(params![
                    serde_json::to_string(&asked).unwrap_or_default(),
                    lead_id
                ])?;
        }
        return Ok(());
    }
    if record.opens_thread {
        // The last closing is kept: an idled-out conversation's as of its expiry.
        c.prepare_cached(
            "UPDATE threads SET opened_at = ?1, idle_days = ?2, asked = ?3, closed_at = ?5, updated_at = ?1 WHERE lead_id = ?4",
        )?
        .execute(params![
            now,
            record.idle_days,
            serde_json::to_string(&record.asked).unwrap_or_default(),
            lead_id,
            state.thread.closed.map(time_text),
        ])?;
    } else if state.thread.closed.is_some() {
        // An idle conversation closed as of when its time ran out: on record
        // once, so every reader agrees it is closed.
        c.prepare_cached(
            "UPDATE threads SET opened_at = NULL, closed_at = ?1, asked = '[]' WHERE lead_id = ?2 AND opened_at IS NOT NULL",
        )?
        .execute(params![state.thread.closed.map(time_text), lead_id])?;
    }
    Ok(())
}

/// A message the lead wrote reaches the AI agent its thread is assigned
/// to, unless a person has taken the thread over.
fn tell_agent(
    c: &Connection,
    lead_id: &str,
    decision_id: &str,
    message: &super::InboundMessage,
    now: &str,
) -> Result<(), StoreError> {
    let row: Option<(String, Option<String>, String)> = c
        .prepare_cached("SELECT state, assignee, account_id FROM threads WHERE lead_id = ?1")?
        .query_row(params![lead_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((state, Some(assignee), account)) = row else {
        return Ok(());
    };
    let Some(endpoint) = assignee.strip_prefix("agent:") else {
        return Ok(());
    };
    if state == "human" {
        return Ok(());
    }
    let payload = super::message_received_payload(endpoint, message);
    c.prepare_cached(
        "INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 'notify', ?5, ?6, ?6)",
    )?
    .execute(params![
        uuid::Uuid::now_v7().to_string(),
        account,
        lead_id,
        decision_id,
        payload.to_string(),
        now
    ])?;
    Ok(())
}

/// Moves a known lead's thread to the queue its decision names. In a queue
/// with members it waits to be assigned, its escalation clock started; a
/// thread already open in that queue stays as it is, and one a person or an
/// escalation moved is not moved back by the rules.
fn route_thread(
    c: &Connection,
    account: &str,
    lead_id: &str,
    queue: &str,
    record: &DecisionRecord,
    now: &str,
) -> Result<(), StoreError> {
    let (current, queue_state, routed_by): (Option<String>, Option<String>, Option<String>) = c
        .prepare_cached("SELECT queue, queue_state, routed_by FROM threads WHERE lead_id = ?1")?
        .query_row(params![lead_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let open = matches!(queue_state.as_deref(), Some("waiting" | "assigned"));
    if open && (current.as_deref() == Some(queue) || routed_by.as_deref() != Some("rule")) {
        return Ok(());
    }
    if record.managed {
        c.prepare_cached(
            "UPDATE threads SET queue = ?1, queue_state = 'waiting', queued_at = ?2, routed_by = 'rule', \
             assignee = NULL, assigned_at = NULL, picked_up_at = NULL, updated_at = ?2 WHERE lead_id = ?3",
        )?
        .execute(params![queue, now, lead_id])?;
        trail(
            c,
            account,
            lead_id,
            super::queues::SYSTEM_ACTOR,
            "queued",
            Some(&super::queues::queued_text(queue, record)),
        )?;
    } else {
        c.prepare_cached(
            "UPDATE threads SET queue = ?1, queue_state = CASE WHEN ?2 THEN NULL ELSE queue_state END, \
             assignee = CASE WHEN ?2 THEN NULL ELSE assignee END, \
           assigned_at = CASE WHEN ?2 THEN NULL ELSE assigned_at END, queued_at = CASE WHEN ?2 THEN NULL ELSE queued_at END, \
           picked_up_at = CASE WHEN ?2 THEN NULL ELSE picked_up_at END, updated_at = ?3 WHERE lead_id = ?4",
        )?
        .execute(params![queue, open, now, lead_id])?;
    }
    Ok(())
}

/// The lead `id` is now: itself, or the lead it was merged into; `None`
/// when the account has no such lead.
pub(super) fn survivor(
    c: &Connection,
    account: &str,
    id: &str,
) -> Result<Option<String>, StoreError> {
    let mut id = id.to_string();
    let mut stmt =
        c.prepare_cached("SELECT merged_into FROM leads WHERE id = ?1 AND account_id = ?2")?;
    // Merges chain only as far as leads were merged in turn; a few steps at most.
    for _ in 0..8 {
        let row: Option<Option<String>> = stmt
            .query_row(params![id, account], |r| r.get(0))
            .optional()?;
        match row {
            None => return Ok(None),
            Some(Some(next)) => id = next,
            Some(None) => return Ok(Some(id)),
        }
    }
    Ok(Some(id))
}

/// Records an event for a person seen for the first time. The lead's state
/// is known from the event itself, so it is decided before anything is
/// written and every row is written once.
fn record_new(
    c: &Connection,
    account: &str,
    event: &LeadEvent,
    now: &str,
    record: DecisionRecord,
) -> Result<(Value, String, String), StoreError> {
    let lead_id = uuid::Uuid::now_v7().to_string();
    let columns = event.new_columns(&record.playbook);
    let (fields, tags, answers) = columns.json_columns();
    let [name, first_name, phone, email, language, channel, intent, playbook] = columns.text;
    c.prepare_cached(
        "INSERT INTO leads (id, account_id, created_at, updated_at, name, first_name, phone, email, language, channel, intent, playbook, fields, tags, answers) \
         VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        lead_id, account, now, name, first_name, phone, email, language, channel, intent, playbook,
        fields, tags, answers,
    ])?;
    insert_rows(c, account, &lead_id, event)?;
    let decision_id = insert_decision(c, account, &lead_id, now, &record)?;
    let waits = record.managed && record.queue.is_some();
    c.prepare_cached(
        "INSERT INTO threads (lead_id, account_id, state, queue, last_inbound_at, updated_at, queue_state, queued_at, routed_by, opened_at, idle_days, asked) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        lead_id,
        account,
        if record.takeover || event.human_activity { "human" } else { "automated" },
        record.queue,
        event.inbound_at.map(time_text),
        now,
        waits.then_some("waiting"),
        waits.then_some(now),
        record.queue.as_ref().map(|_| "rule"),
        record.opens_thread.then_some(now),
        record.opens_thread.then_some(record.idle_days),
        if record.opens_thread {
            serde_json::to_string(&record.asked).unwrap_or_default()
        } else {
            "[]".to_string()
        },
    ])?;
    if let (true, Some(queue)) = (waits, &record.queue) {
        trail(
            c,
            account,
            &lead_id,
            super::queues::SYSTEM_ACTOR,
            "queued",
            Some(&super::queues::queued_text(queue, &record)),
        )?;
    }
    let response = finish_response(c, account, event, now, &record, &lead_id, &decision_id)?;
    Ok((response, lead_id, decision_id))
}

/// The leads (id, created_at) any of these identities belong to, oldest first.
fn find_leads(
    c: &Connection,
    account: &str,
    identities: &[(String, String)],
) -> Result<Vec<(String, String)>, StoreError> {
    if identities.is_empty() {
        return Ok(Vec::new());
    }
    // One query for every identity the event carries.
    let clauses = vec!["(i.kind = ? AND i.value = ?)"; identities.len()].join(" OR ");
    let sql = format!(
        "SELECT DISTINCT l.id, l.created_at FROM identities i JOIN leads l ON l.id = i.lead_id \
         WHERE i.account_id = ? AND ({clauses})"
    );
    let mut binds: Vec<&str> = vec![account];
    for (kind, value) in identities {
        binds.push(kind);
        binds.push(value);
    }
    let mut stmt = c.prepare_cached(&sql)?;
    let mut found = stmt
        .query_map(params_from_iter(binds), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<(String, String)>, _>>()?;
    found.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    Ok(found)
}

/// Identities, transcript messages and the consent of an event.
fn insert_rows(
    c: &Connection,
    account: &str,
    lead_id: &str,
    event: &LeadEvent,
) -> Result<(), StoreError> {
    if !event.identities.is_empty() {
        let mut stmt = c.prepare_cached(
            "INSERT OR IGNORE INTO identities (account_id, kind, value, lead_id) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (kind, value) in &event.identities {
            stmt.execute(params![account, kind, value, lead_id])?;
        }
    }
    if !event.messages.is_empty() {
        let mut stmt = c.prepare_cached(
            "INSERT INTO messages (account_id, lead_id, channel, sender, text, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for m in &event.messages {
            stmt.execute(params![
                account,
                lead_id,
                m.channel,
                m.from,
                m.text,
                time_text(m.at)
            ])?;
        }
    }
    if let Some(consent) = &event.consent {
        insert_consent(c, account, lead_id, consent)?;
    }
    Ok(())
}

/// An opt-in or opt-out on record.
fn insert_consent(
    c: &Connection,
    account: &str,
    lead_id: &str,
    consent: &ConsentRecord,
) -> Result<(), StoreError> {
    c.prepare_cached("INSERT INTO consents (account_id, lead_id, channel, granted, source, at, evidence) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
        .execute(params![
            account,
            lead_id,
            consent.channel,
            consent.granted,
            consent.source,
            time_text(consent.at),
            consent.evidence
        ])?;
    Ok(())
}

/// The decision row and its outbox rows; returns the decision's ID.
fn insert_decision(
    c: &Connection,
    account: &str,
    lead_id: &str,
    now: &str,
    record: &DecisionRecord,
) -> Result<String, StoreError> {
    let decision_id = uuid::Uuid::now_v7().to_string();
    c.prepare_cached(
        "INSERT INTO decisions (id, account_id, lead_id, at, playbook, ruleset_hash, rules, decision, trace) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        decision_id,
        account,
        lead_id,
        now,
        record.playbook,
        record.ruleset_hash,
        serde_json::to_string(&record.rules).unwrap_or_default(),
        record.decision.to_string(),
        record.trace.to_string(),
    ])?;
    if !record.outbox.is_empty() {
        let mut stmt = c.prepare_cached("INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
        for (kind, payload) in &record.outbox {
            stmt.execute(params![
                uuid::Uuid::now_v7().to_string(),
                account,
                lead_id,
                decision_id,
                kind.as_str(),
                payload.to_string(),
                now
            ])?;
        }
    }
    Ok(decision_id)
}

/// The response (with the lead and decision IDs), and the record that the
/// event's source ID is processed, so a retry gets this same answer.
fn finish_response(
    c: &Connection,
    account: &str,
    event: &LeadEvent,
    now: &str,
    record: &DecisionRecord,
    lead_id: &str,
    decision_id: &str,
) -> Result<Value, StoreError> {
    let response = record.response_for(lead_id, decision_id);
    if let Some((source, source_id)) = &event.dedup {
        c.prepare_cached("INSERT INTO processed (account_id, source, source_id, at, response, fingerprint) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![account, source, source_id, now, response.to_string(), event.fingerprint])?;
    }
    Ok(response)
}

/// The columns of a lead that a merge combines.
fn lead_columns(c: &Connection, id: &str) -> Result<Option<LeadColumns>, StoreError> {
    Ok(c.prepare_cached("SELECT name, first_name, phone, email, language, channel, intent, playbook, fields, tags, answers FROM leads WHERE id = ?1")?
        .query_row(params![id], |r| {
            let mut text: [Option<String>; 8] = Default::default();
            for (i, slot) in text.iter_mut().enumerate() {
                *slot = r.get(i)?;
            }
            Ok(LeadColumns {
                text,
                fields: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
                tags: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default(),
                answers: serde_json::from_str(&r.get::<_, String>(10)?).unwrap_or_default(),
            })
        })
        .optional()?)
}

/// Moves everything of `other` onto `survivor`, and marks `other` merged.
fn merge_into(c: &Connection, survivor: &str, other: &str) -> Result<(), StoreError> {
    let (Some(keep), Some(gone)) = (lead_columns(c, survivor)?, lead_columns(c, other)?) else {
        return Ok(());
    };
    // A conversation that idled out does not outlive the merge as open.
    settle_idle(c, survivor)?;
    settle_idle(c, other)?;
    let merged = LeadColumns::merged(keep, gone);
    let (fields, tags, answers) = merged.json_columns();
    let text = merged.text;
    let [name, first_name, phone, email, language, channel, intent, playbook] = text;
    c.prepare_cached("UPDATE leads SET name = ?1, first_name = ?2, phone = ?3, email = ?4, language = ?5, channel = ?6, intent = ?7, playbook = ?8, fields = ?9, tags = ?10, answers = ?12 WHERE id = ?11")?
        .execute(params![
            name,
            first_name,
            phone,
            email,
            language,
            channel,
            intent,
            playbook,
            fields,
            tags,
            survivor,
            answers,
        ])?;
    for table in [
        "identities",
        "consents",
        "messages",
        "decisions",
        "outbox",
        "thread_events",
    ] {
        c.prepare_cached(&format!(
            "UPDATE {table} SET lead_id = ?1 WHERE lead_id = ?2"
        ))?
        .execute(params![survivor, other])?;
    }
    // A thread a person took over stays taken over; the later window counts.
    c.prepare_cached(
        "UPDATE threads SET \
           state = CASE WHEN (SELECT state FROM threads WHERE lead_id = ?2) = 'human' THEN 'human' ELSE state END, \
           queue = COALESCE(queue, (SELECT queue FROM threads WHERE lead_id = ?2)), \
           last_inbound_at = NULLIF(MAX(COALESCE(last_inbound_at, ''), COALESCE((SELECT last_inbound_at FROM threads WHERE lead_id = ?2), '')), ''), \
           idle_days = CASE WHEN opened_at IS NULL THEN (SELECT idle_days FROM threads WHERE lead_id = ?2) ELSE idle_days END, \
           asked = CASE WHEN opened_at IS NULL THEN COALESCE((SELECT asked FROM threads WHERE lead_id = ?2), '[]') ELSE asked END, \
           opened_at = COALESCE(opened_at, (SELECT opened_at FROM threads WHERE lead_id = ?2)), \
           closed_at = NULLIF(MAX(COALESCE(closed_at, ''), COALESCE((SELECT closed_at FROM threads WHERE lead_id = ?2), '')), '') \
         WHERE lead_id = ?1",
    )?
    .execute(params![survivor, other])?;
    c.prepare_cached("DELETE FROM threads WHERE lead_id = ?1")?
        .execute(params![other])?;
    c.prepare_cached("UPDATE leads SET merged_into = ?1 WHERE id = ?2 OR merged_into = ?2")?
        .execute(params![survivor, other])?;
    Ok(())
}

fn apply_event(
    c: &Connection,
    account: &str,
    lead_id: &str,
    event: &LeadEvent,
    now: &str,
) -> Result<(), StoreError> {
    let (fields, tags, answers): (String, String, String) = c
        .prepare_cached("SELECT fields, tags, answers FROM leads WHERE id = ?1")?
        .query_row(params![lead_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let (fields, tags, answers) = event.merge_columns(&fields, &tags, &answers);
    if let Some(answers) = answers {
        c.prepare_cached("UPDATE leads SET answers = ?1 WHERE id = ?2")?
            .execute(params![answers, lead_id])?;
    }
    c.prepare_cached(
        "UPDATE leads SET name = COALESCE(?1, name, ?13), first_name = COALESCE(?2, first_name), phone = COALESCE(?3, phone), \
         email = COALESCE(?4, email), language = COALESCE(?5, language), channel = COALESCE(channel, ?6), \
         intent = COALESCE(?7, intent), playbook = COALESCE(?8, playbook), fields = ?9, tags = ?10, updated_at = ?11 WHERE id = ?12",
    )?
    .execute(params![
        event.name,
        event.first_name,
        event.phone,
        event.email,
        event.language,
        event.channel,
        event.intent,
        event.playbook,
        fields,
        tags,
        now,
        lead_id,
        event.profile_name,
    ])?;
    insert_rows(c, account, lead_id, event)?;
    Ok(())
}

fn transcript_of(c: &Connection, lead_id: &str) -> Result<Vec<TranscriptMessage>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT channel, sender, text, at FROM messages WHERE lead_id = ?1 ORDER BY at, id",
    )?;
    let rows = stmt.query_map(params![lead_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (channel, from, text, at) = row?;
        if let Some(at) = parse_time(Some(at)) {
            out.push(TranscriptMessage {
                channel,
                from,
                text,
                at,
            });
        }
    }
    Ok(out)
}

pub(super) fn load_state(
    c: &Connection,
    account: &str,
    lead_id: &str,
    created: bool,
) -> Result<LeadState, StoreError> {
    let consent: bool = c
        .prepare_cached("SELECT granted FROM consents WHERE lead_id = ?1 AND channel = 'whatsapp' ORDER BY at DESC, id DESC LIMIT 1")?
        .query_row(params![lead_id], |r| r.get(0))
        .optional()?
        .unwrap_or(false);
    let transcript = transcript_of(c, lead_id)?;
    type ThreadRow = (
        bool,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<i64>,
        String,
    );
    let (human, last_inbound_at, opened_at, closed_at, idle_days, asked): ThreadRow = c
        .prepare_cached(
            "SELECT state, last_inbound_at, opened_at, closed_at, idle_days, asked FROM threads WHERE lead_id = ?1",
        )?
        .query_row(params![lead_id], |r| {
            Ok((
                r.get::<_, String>(0)? == "human",
                parse_time(r.get(1)?),
                parse_time(r.get(2)?),
                parse_time(r.get(3)?),
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?
        .unwrap_or((false, None, None, None, None, "[]".into()));
    let (thread, _) = super::conversation(
        opened_at,
        closed_at,
        idle_days,
        transcript.iter().map(|m| m.at).max(),
        serde_json::from_str(&asked).unwrap_or_default(),
        Utc::now(),
    );
    let keys = lead_marketing_keys(c, lead_id)?;
    let marketing_opt_out = marketing_opted_out(c, account, &keys)?;
    let lead = c
        .prepare_cached("SELECT name, first_name, phone, email, language, channel, intent, playbook, fields, tags, answers FROM leads WHERE id = ?1")?
        .query_row(params![lead_id], |r| {
            Ok(Lead {
                name: r.get(0)?,
                first_name: r.get(1)?,
                phone: r.get(2)?,
                email: r.get(3)?,
                language: r.get(4)?,
                channel: r.get(5)?,
                intent: r.get(6)?,
                playbook: r.get(7)?,
                consent: Consent { whatsapp: consent },
                fields: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
                tags: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default(),
                transcript,
                answers: serde_json::from_str(&r.get::<_, String>(10)?).unwrap_or_default(),
            })
        })?;
    Ok(LeadState {
        id: lead_id.to_string(),
        lead,
        human,
        last_inbound_at,
        created,
        thread,
        marketing_opt_out,
    })
}

fn seconds_ago(d: Duration) -> String {
    time_text(Utc::now() - chrono::Duration::from_std(d).unwrap_or_default())
}

fn claim_outbox(
    c: &Connection,
    owner: &str,
    limit: i64,
    lease: Duration,
    grace: Duration,
    max_age: Duration,
    fallbacks: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<OutboxItem>, StoreError> {
    let now = now_text();
    let expired: Vec<(String, String, String)> = {
        let mut stmt = c.prepare_cached(
            "UPDATE outbox SET state = 'failed', error = COALESCE(error || '; ', '') || ?3, updated_at = ?1 \
             WHERE state = 'pending' AND created_at < ?2 RETURNING id, account_id, kind",
        )?;
        let rows = stmt.query_map(params![now, seconds_ago(max_age), outbox::GIVEN_UP], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, account, kind) in &expired {
        if let Some(flag) = outbox::expired_flag(kind, max_age) {
            let fallback = fallbacks.get(account).map_or(&[][..], Vec::as_slice);
            flag_thread(c, id, &flag, fallback)?;
        }
    }
    // Two reads rather than one with an OR, which would make SQLite visit
    // and sort every pending message: the oldest due pending ones in the
    // order of their index, and the sends whose lease and grace ran out.
    let row = |r: &rusqlite::Row<'_>| {
        Ok(OutboxItem {
            id: r.get(0)?,
            account: r.get(1)?,
            lead_id: r.get(2)?,
            kind: r.get(3)?,
            payload: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or(Value::Null),
            attempts: r.get::<_, i64>(5)? + 1,
            created_at: parse_time(Some(r.get(6)?)).unwrap_or_else(Utc::now),
        })
    };
    // Automation stops talking once a person has taken the thread over: an
    // automated WhatsApp message of such a thread is cancelled when it comes
    // up, never sent. Asked of the messages at hand only: cancelling across
    // every taken-over thread on each claim cost time in proportion to how
    // many there were (tens of milliseconds per claim at a few thousand).
    let due: Vec<(OutboxItem, bool)> = c
        .prepare_cached(
            "SELECT o.id, o.account_id, o.lead_id, o.kind, o.payload, o.attempts, o.created_at, \
               o.kind = 'whatsapp' AND o.automated = 1 \
                 AND EXISTS (SELECT 1 FROM threads t WHERE t.lead_id = o.lead_id AND t.state = 'human') \
             FROM outbox o WHERE o.state = 'pending' AND (o.next_attempt IS NULL OR o.next_attempt <= ?1) \
             ORDER BY o.created_at, o.id LIMIT ?2",
        )?
        .query_map(params![now, limit], |r| Ok((row(r)?, r.get::<_, bool>(7)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut items = Vec::with_capacity(due.len());
    let mut cancel = c.prepare_cached(
        "UPDATE outbox SET state = 'cancelled', error = ?2, updated_at = ?1 WHERE id = ?3",
    )?;
    for (item, taken_over) in due {
        if taken_over {
            cancel.execute(params![now, outbox::TAKEN_OVER, item.id])?;
        } else {
            items.push(item);
        }
    }
    let stale = c
        .prepare_cached(
            "SELECT id, account_id, lead_id, kind, payload, attempts, created_at FROM outbox \
             WHERE state = 'sending' AND lease_until <= ?1 AND (sending_since IS NULL OR sending_since <= ?2) \
             ORDER BY created_at, id LIMIT ?3",
        )?
        .query_map(params![now, seconds_ago(grace), limit], row)?
        .collect::<Result<Vec<_>, _>>()?;
    if !stale.is_empty() {
        items.extend(stale);
        items.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    let until = time_text(Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default());
    let mut claim = c.prepare_cached(
        "UPDATE outbox SET state = 'sending', lease_owner = ?1, lease_until = ?2, sending_since = ?3, attempts = attempts + 1, updated_at = ?3 WHERE id = ?4",
    )?;
    for item in &items {
        claim.execute(params![owner, until, now, item.id])?;
    }
    Ok(items)
}

/// Flags the thread of a lead WhatsApp could not reach, and sends the lead
/// record to the account's fallback endpoints (an SMS or email provider),
/// under the failed message's decision, with what failed.
fn flag_thread(
    c: &Connection,
    outbox_id: &str,
    flag: &Flag,
    fallback: &[String],
) -> Result<(), StoreError> {
    let (code, reason) = (flag.code, flag.reason.as_str());
    let now = now_text();
    c.prepare_cached(
        "UPDATE threads SET flag = 'delivery_failed', flag_reason = ?1, updated_at = ?2 \
         WHERE lead_id = (SELECT lead_id FROM outbox WHERE id = ?3)",
    )?
    .execute(params![reason, now, outbox_id])?;
    if fallback.is_empty() {
        return Ok(());
    }
    let (account, lead_id): (String, String) = c
        .prepare_cached("SELECT account_id, lead_id FROM outbox WHERE id = ?1")?
        .query_row(params![outbox_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    for endpoint in fallback {
        let payload = super::queues::fallback_payload(endpoint, outbox_id, code, reason);
        c.prepare_cached(
            "INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at, updated_at) \
             SELECT ?1, account_id, lead_id, decision_id, 'notify', ?2, ?3, ?3 FROM outbox WHERE id = ?4",
        )?
        .execute(params![uuid::Uuid::now_v7().to_string(), payload.to_string(), now, outbox_id])?;
    }
    let text = super::queues::fallback_text(reason, fallback);
    trail(
        c,
        &account,
        &lead_id,
        super::queues::SYSTEM_ACTOR,
        "fallback",
        Some(&text),
    )?;
    Ok(())
}

/// The marketing opt-out Meta reported for a lead (131050): on the
/// WhatsApp ID the message went to, and in the lead's consent history.
fn marketing_opt_out(
    c: &Connection,
    account: &str,
    lead_id: &str,
    opt_out: &OptOut,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let keys = match &opt_out.wa_id {
        Some(wa_id) => vec![wa_id.clone()],
        None => lead_marketing_keys(c, lead_id)?,
    };
    for key in &keys {
        upsert_marketing(c, account, key, true, now, outbox::OPT_OUT_SOURCE)?;
    }
    insert_consent(c, account, lead_id, &opt_out.consent(now))
}

/// Keeps a WhatsApp user's marketing preference unless a later one is on record.
fn upsert_marketing(
    c: &Connection,
    account: &str,
    wa_id: &str,
    opted_out: bool,
    at: DateTime<Utc>,
    source: &str,
) -> Result<bool, StoreError> {
    let changed = c
        .prepare_cached(
            "INSERT INTO marketing_preferences (account_id, wa_id, opted_out, at, source) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (account_id, wa_id) DO UPDATE SET opted_out = excluded.opted_out, at = excluded.at, source = excluded.source \
             WHERE excluded.at >= marketing_preferences.at",
        )?
        .execute(params![account, wa_id, opted_out, time_text(at), source])?;
    Ok(changed == 1)
}

/// A WhatsApp user's marketing preference (see [`super::Store::record_marketing`]).
fn record_marketing(
    c: &Connection,
    account: &str,
    wa_id: &str,
    opted_out: bool,
    at: DateTime<Utc>,
    source: &str,
    evidence: Option<&str>,
) -> Result<(), StoreError> {
    upsert_marketing(c, account, wa_id, opted_out, at, source)?;
    let identities = super::wa_identities(wa_id);
    if let Some((lead_id, _)) = find_leads(c, account, &identities)?.into_iter().next() {
        let consent = ConsentRecord::marketing(!opted_out, source, at, evidence);
        insert_consent(c, account, &lead_id, &consent)?;
    }
    Ok(())
}

/// Queues the approved template in place of message `id`, which the closed
/// window refused; false when there is no template or one was queued already.
fn queue_fallback(c: &Connection, id: &str, payload: &Value) -> Result<bool, StoreError> {
    let exists: Option<String> = c
        .prepare_cached("SELECT id FROM outbox WHERE replaces = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    let Some(payload) = outbox::template_in_place(payload).filter(|_| exists.is_none()) else {
        return Ok(false);
    };
    let now = now_text();
    c.prepare_cached(
        "INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at, automated, replaces, updated_at) \
         SELECT ?1, account_id, lead_id, decision_id, kind, ?2, ?3, automated, id, ?3 FROM outbox WHERE id = ?4",
    )?
    .execute(params![uuid::Uuid::now_v7().to_string(), payload.to_string(), now, id])?;
    Ok(true)
}

fn apply_status(
    c: &Connection,
    account: &str,
    status: &StatusRecord,
    fallback: &[String],
) -> Result<StatusApplied, StoreError> {
    let new = c
        .prepare_cached(
            "INSERT OR IGNORE INTO whatsapp_statuses (account_id, message_id, status, at, recipient, errors, outbox_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            account,
            status.message_id,
            status.status.as_str(),
            time_text(status.at),
            status.recipient,
            status.errors.to_string(),
            status.outbox_id
        ])?
        == 1;
    if !new {
        return Ok(StatusApplied::default());
    }
    // Our own ID, echoed from biz_opaque_callback_data, finds the message
    // even when the status comes before we recorded Meta's answer.
    type Found = (String, String, String, Option<String>, String);
    let read = |r: &Row| -> rusqlite::Result<Found> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    };
    let found: Option<Found> = match &status.outbox_id {
        Some(id) => c
            .prepare_cached("SELECT id, state, lead_id, delivery, payload FROM outbox WHERE id = ?1 AND account_id = ?2 AND kind = 'whatsapp'")?
            .query_row(params![id, account], read)
            .optional()?,
        None => None,
    };
    let found = match found {
        Some(f) => Some(f),
        None => c
            .prepare_cached("SELECT id, state, lead_id, delivery, payload FROM outbox WHERE message_id = ?1 AND account_id = ?2")?
            .query_row(params![status.message_id, account], read)
            .optional()?,
    };
    let Some((id, state, lead_id, delivery, payload)) = found else {
        return Ok(StatusApplied {
            new: true,
            ..StatusApplied::default()
        });
    };
    let now = now_text();
    let mut applied = StatusApplied {
        outbox_id: Some(id.clone()),
        new: true,
        fell_back: false,
        lead_id: Some(lead_id.clone()),
    };
    if status.status != DeliveryStatus::Failed {
        // Meta has it: a send we were unsure of, or were about to retry, is done.
        c.prepare_cached(
            "UPDATE outbox SET message_id = COALESCE(message_id, ?1), delivery = ?2, \
             state = CASE WHEN state IN ('sending', 'pending') THEN 'sent' ELSE state END, \
             lease_owner = CASE WHEN state IN ('sending', 'pending') THEN NULL ELSE lease_owner END, \
             next_attempt = NULL, updated_at = ?3 WHERE id = ?4",
        )?
        .execute(params![status.message_id, status.furthest(delivery), now, id])?;
        return Ok(applied);
    }
    let _ = state;
    let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
    let failure = status.failure(&payload);
    c.prepare_cached(
        "UPDATE outbox SET message_id = COALESCE(message_id, ?1), delivery = 'failed', state = 'failed', \
         error_code = ?2, error = ?3, lease_owner = NULL, updated_at = ?4 WHERE id = ?5",
    )?
    .execute(params![status.message_id, failure.code, failure.error, now, id])?;
    applied.fell_back = carry_out(c, account, &lead_id, &id, &failure.effects, fallback)?;
    Ok(applied)
}

/// Does what the end of outbox message `id` of `lead_id` sets off; true
/// when a template was queued in its place.
fn carry_out(
    c: &Connection,
    account: &str,
    lead_id: &str,
    id: &str,
    effects: &Effects,
    fallback: &[String],
) -> Result<bool, StoreError> {
    if let Some(wa_id) = &effects.identity {
        c.prepare_cached(
            "INSERT OR IGNORE INTO identities (account_id, kind, value, lead_id) VALUES (?1, 'whatsapp', ?2, ?3)",
        )?
        .execute(params![account, wa_id, lead_id])?;
    }
    let fell_back = match &effects.template {
        Some(payload) => queue_fallback(c, id, payload)?,
        None => false,
    };
    if let Some(opt_out) = &effects.opt_out {
        marketing_opt_out(c, account, lead_id, opt_out)?;
    }
    if let Some(flag) = effects.flag.as_ref().filter(|_| !fell_back) {
        flag_thread(c, id, flag, fallback)?;
    }
    Ok(fell_back)
}

fn finish_outbox(
    c: &Connection,
    owner: &str,
    item: &OutboxItem,
    outcome: SendOutcome,
    fallback: &[String],
) -> Result<bool, StoreError> {
    let held: Option<(String, Option<String>)> = c
        .prepare_cached("SELECT state, lease_owner FROM outbox WHERE id = ?1")?
        .query_row(params![item.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    // A status webhook settled it meanwhile, or the lease went to another worker.
    if held != Some(("sending".to_string(), Some(owner.to_string()))) {
        return Ok(false);
    }
    let now = Utc::now();
    let plan = outcome.plan(item, now);
    c.prepare_cached(
        "UPDATE outbox SET state = ?1, message_id = COALESCE(?2, message_id), delivery = COALESCE(delivery, ?3), \
         next_attempt = COALESCE(?4, next_attempt), \
         error_code = CASE WHEN ?5 THEN ?6 ELSE error_code END, error = CASE WHEN ?7 THEN ?8 ELSE error END, \
         attempts = CASE WHEN ?9 THEN attempts ELSE attempts - 1 END, lease_owner = NULL, lease_until = ?10, \
         sending_since = CASE WHEN ?10 IS NULL THEN NULL ELSE sending_since END, updated_at = ?11 WHERE id = ?12",
    )?
    .execute(params![
        plan.state,
        plan.message_id,
        plan.delivery,
        plan.next_attempt.map(time_text),
        plan.code.is_some(),
        plan.code.flatten(),
        plan.error.is_some(),
        plan.error.flatten(),
        plan.counts,
        plan.grace_from.map(time_text),
        time_text(now),
        item.id
    ])?;
    carry_out(
        c,
        &item.account,
        &item.lead_id,
        &item.id,
        &plan.effects,
        fallback,
    )?;
    Ok(true)
}

fn json_column(r: &Row, name: &str) -> rusqlite::Result<Value> {
    Ok(serde_json::from_str(&r.get::<_, String>(name)?).unwrap_or(Value::Null))
}

/// Rows of `sql` (bound to the lead's ID), each read by `row`.
pub(super) fn rows<T>(
    c: &Connection,
    sql: &str,
    lead_id: &str,
    row: impl Fn(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(params![lead_id], |r| row(r))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A time column as stored (RFC 3339 text).
fn time_at(r: &Row, index: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(parse_time(r.get::<_, Option<String>>(index)?))
}

/// A time column that is never empty; text that does not read as a time
/// (which the store never writes) reads as the epoch rather than failing.
fn time_of(r: &Row, index: usize) -> rusqlite::Result<DateTime<Utc>> {
    Ok(time_at(r, index)?.unwrap_or_default())
}

/// Everything about a lead, as the API shows it.
fn lead_record(c: &Connection, account: &str, id: &str) -> Result<Option<LeadRecord>, StoreError> {
    let Some(id) = survivor(c, account, id)? else {
        return Ok(None);
    };
    let identities = rows(
        c,
        "SELECT kind, value FROM identities WHERE lead_id = ?1 ORDER BY kind, value",
        &id,
        |r| {
            Ok(Identity {
                kind: r.get(0)?,
                value: r.get(1)?,
            })
        },
    )?;
    let consents = rows(
        c,
        "SELECT channel, granted, source, at, evidence FROM consents WHERE lead_id = ?1 ORDER BY id",
        &id,
        |r| {
            Ok(ConsentEntry {
                channel: r.get(0)?,
                granted: r.get(1)?,
                source: r.get(2)?,
                at: time_of(r, 3)?,
                evidence: r.get(4)?,
            })
        },
    )?;
    let transcript = rows(
        c,
        "SELECT channel, sender, text, at FROM messages WHERE lead_id = ?1 ORDER BY at, id",
        &id,
        |r| {
            Ok(TranscriptEntry {
                channel: r.get(0)?,
                from: r.get(1)?,
                text: r.get(2)?,
                at: time_of(r, 3)?,
            })
        },
    )?;
    let decisions = rows(
        c,
        "SELECT id, at, playbook, ruleset_hash, decision, trace FROM decisions WHERE lead_id = ?1 ORDER BY at, id",
        &id,
        |r| {
            Ok(StoredDecision {
                id: r.get(0)?,
                at: time_of(r, 1)?,
                playbook: r.get(2)?,
                ruleset: r.get(3)?,
                decision: json_column(r, "decision")?,
                trace: json_column(r, "trace")?,
            })
        },
    )?;
    let thread = rows(
        c,
        "SELECT t.state, t.queue, t.last_inbound_at, t.flag, t.flag_reason, t.queue_state, t.queued_at, \
           CASE WHEN t.assignee LIKE 'agent:%' THEN substr(t.assignee, 7) ELSE (SELECT o.name FROM operators o WHERE o.id = t.assignee) END, \
           t.assigned_at, t.picked_up_at, t.opened_at, t.closed_at, t.idle_days FROM threads t WHERE t.lead_id = ?1",
        &id,
        |r| {
            Ok(ThreadView {
                state: r.get(0)?,
                queue: r.get(1)?,
                last_inbound_at: time_at(r, 2)?,
                flag: r.get(3)?,
                flag_reason: r.get(4)?,
                queue_state: r.get(5)?,
                queued_at: time_at(r, 6)?,
                assignee: r.get(7)?,
                assigned_at: time_at(r, 8)?,
                picked_up_at: time_at(r, 9)?,
                open: false,
                opened_at: time_at(r, 10)?,
                closed_at: time_at(r, 11)?,
                idle_days: r.get(12)?,
            })
        },
    )?
    .into_iter()
    .next();
    let outbox = rows(
        c,
        "SELECT id, kind, payload, state, attempts, created_at, updated_at, next_attempt, message_id, delivery, error_code, error, replaces \
         FROM outbox WHERE lead_id = ?1 ORDER BY created_at, id",
        &id,
        |r| {
            Ok(OutboxEntry {
                id: r.get(0)?,
                kind: r.get(1)?,
                payload: json_column(r, "payload")?,
                state: r.get(3)?,
                attempts: r.get(4)?,
                created_at: time_of(r, 5)?,
                updated_at: time_at(r, 6)?,
                next_attempt: time_at(r, 7)?,
                message_id: r.get(8)?,
                delivery: r.get(9)?,
                error_code: r.get(10)?,
                error: r.get(11)?,
                replaces: r.get(12)?,
            })
        },
    )?;
    let mut lead = c
        .prepare_cached("SELECT created_at, updated_at, name, first_name, phone, email, language, channel, intent, playbook, fields, tags, answers FROM leads WHERE id = ?1")?
        .query_row(params![id], |r| {
            Ok(LeadRecord {
                id: id.clone(),
                created_at: time_of(r, 0)?,
                updated_at: time_at(r, 1)?,
                name: r.get(2)?,
                first_name: r.get(3)?,
                phone: r.get(4)?,
                email: r.get(5)?,
                language: r.get(6)?,
                channel: r.get(7)?,
                intent: r.get(8)?,
                playbook: r.get(9)?,
                fields: view::column(&r.get::<_, String>(10)?),
                tags: view::column(&r.get::<_, String>(11)?),
                answers: view::column(&r.get::<_, String>(12)?),
                marketing_opt_out: false,
                identities,
                consents,
                transcript,
                thread,
                decisions,
                outbox,
            })
        })?;
    lead.marketing_opt_out = marketing_opted_out(c, account, &lead.marketing_keys())?;
    Ok(Some(lead.settle(Utc::now())))
}

/// Writes one entry of the thread's trail.
pub(super) fn trail(
    c: &Connection,
    account: &str,
    lead_id: &str,
    actor: &str,
    kind: &str,
    text: Option<&str>,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO thread_events (account_id, lead_id, at, actor, kind, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![account, lead_id, now_text(), actor, kind, text])?;
    Ok(())
}

/// The stored names of a webhook's source and an outbox row's kind, read
/// as the enums the rest of the service matches on.
impl rusqlite::types::FromSql for WebhookSource {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        WebhookSource::parse(value.as_str()?)
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

impl rusqlite::types::FromSql for OutboxKind {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        OutboxKind::parse(value.as_str()?)
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &tempfile::TempDir) -> Arc<Sqlite> {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        Arc::new(Sqlite::open(&url).await.expect("open"))
    }

    fn count(c: &Connection, table: &str) -> i64 {
        c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn urls_name_a_file_or_are_refused() {
        assert_eq!(
            path_of("sqlite://data/h.db").expect("path"),
            PathBuf::from("data/h.db")
        );
        assert_eq!(
            path_of("sqlite:///var/h.db?mode=rwc").expect("path"),
            PathBuf::from("/var/h.db")
        );
        assert!(path_of("sqlite::memory:").is_err());
        assert!(path_of("postgres://x").is_err());
    }

    #[tokio::test]
    async fn a_failed_write_rolls_back_alone_and_the_others_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let db = open(&dir).await;
        let mut waits = Vec::new();
        for i in 0..50 {
            let db = db.clone();
            waits.push(tokio::spawn(async move {
                db.write(move |c| {
                    c.execute(
                        "INSERT INTO processed (account_id, source, source_id, at) VALUES ('a', 't', ?1, 'now')",
                        params![i.to_string()],
                    )?;
                    if i % 10 == 3 {
                        return Err(StoreError::Database("refused".into()));
                    }
                    Ok(i)
                })
                .await
            }));
        }
        let mut ok = 0;
        for w in waits {
            match w.await.expect("join") {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e.to_string(), "refused"),
            }
        }
        assert_eq!(ok, 45);
        let stored = db.read(|c| Ok(count(c, "processed"))).await.expect("read");
        assert_eq!(stored, 45, "the five refused writes left nothing behind");
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let db = open(&dir).await;
        let bad = db.write(|c| -> Result<(), StoreError> {
            c.execute(
                "INSERT INTO processed (account_id, source, source_id, at) VALUES ('a', 't', 'x', 'now')",
                [],
            )?;
            panic!("a bug in a write");
        });
        assert!(bad.await.is_err());
        let good = db
            .write(|c| {
                Ok(c.execute(
                    "INSERT INTO processed (account_id, source, source_id, at) VALUES ('a', 't', 'y', 'now')",
                    [],
                )?)
            })
            .await;
        assert_eq!(good.expect("the writer still runs"), 1);
        let stored = db.read(|c| Ok(count(c, "processed"))).await.expect("read");
        assert_eq!(stored, 1);
    }

    #[tokio::test]
    async fn reopening_keeps_the_data_and_does_not_migrate_twice() {
        let dir = tempfile::tempdir().expect("dir");
        let db = open(&dir).await;
        db.enqueue_webhooks(
            "a",
            WebhookSource::Whatsapp,
            &[("wamid.1".into(), Value::Null)],
        )
        .await
        .expect("enqueue");
        drop(db);
        let db = open(&dir).await;
        let version: i64 = db
            .read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .await
            .expect("version");
        assert_eq!(version as usize, MIGRATIONS.len());
        assert_eq!(
            db.webhook_counts().await.expect("counts"),
            vec![("pending".to_string(), 1)]
        );
    }
}
