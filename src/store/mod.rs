//! The store: leads with their identities, consents, transcripts, decisions,
//! threads, the outbox and processed source IDs. SQL lives here only. Every
//! write that must happen together happens in one transaction: a lead's
//! event, its decision, the outbox rows it creates and the record that its
//! source ID was processed commit together or not at all.
//!
//! Callers use [`Store`]; today it holds a SQLite pool. A PostgreSQL
//! implementation joins it as another backend behind the same methods.

use crate::engine::lead::{Consent, TranscriptMessage};
use crate::engine::Lead;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// A store error; the server answers 500 and logs it.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError(e.to_string())
    }
}

/// The store behind every request.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// SQLite has one writer at a time. Writers queue here, in order, rather
    /// than in SQLite's busy handler, which sleeps and retries and turns a
    /// queue of 64 writers into long tail latencies.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// An event that adds to a lead: who (identities), what they said, what they
/// consented to, and the source ID that makes it safe to receive twice.
#[derive(Clone, Debug, Default)]
pub struct LeadEvent {
    /// `(kind, value)`: `phone` (E.164), `email`, `whatsapp`, `instagram`, `external`.
    pub identities: Vec<(String, String)>,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub language: Option<String>,
    pub channel: Option<String>,
    pub intent: Option<String>,
    pub playbook: Option<String>,
    pub fields: Map<String, Value>,
    pub tags: Vec<String>,
    pub messages: Vec<TranscriptMessage>,
    pub consent: Option<ConsentRecord>,
    /// `(source, source_id)`: a second event with the same pair is answered
    /// with the first one's response and changes nothing.
    pub dedup: Option<(String, String)>,
    /// When the user last wrote on WhatsApp (opens the 24-hour window).
    pub inbound_at: Option<DateTime<Utc>>,
    /// A person on the business's side wrote (an echo from the business's
    /// phone): automation pauses on the thread.
    pub human_activity: bool,
}

/// An opt-in or opt-out, with where it came from.
#[derive(Clone, Debug, Serialize)]
pub struct ConsentRecord {
    pub channel: String,
    pub granted: bool,
    pub source: String,
    pub at: DateTime<Utc>,
    pub evidence: Option<String>,
}

/// The lead as stored, for the decision: the engine's lead and the thread.
#[derive(Clone, Debug)]
pub struct LeadState {
    pub id: String,
    pub lead: Lead,
    pub human: bool,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub created: bool,
}

/// What a decision writes besides itself.
#[derive(Clone, Debug, Default)]
pub struct DecisionRecord {
    pub playbook: String,
    pub ruleset_hash: String,
    pub rules: Vec<String>,
    pub decision: Value,
    pub trace: Value,
    /// `(kind, payload)` rows for the outbox.
    pub outbox: Vec<(String, Value)>,
    /// The queue the thread moves to, and whether a person takes it over.
    pub queue: Option<String>,
    pub takeover: bool,
    /// The response to give (and to replay for a duplicate).
    pub response: Value,
}

/// The outcome of recording an event.
#[derive(Clone, Debug)]
pub enum Recorded {
    /// Stored and decided now.
    New {
        lead_id: String,
        decision_id: String,
        response: Value,
    },
    /// Seen before: the first answer, unchanged.
    Replay { response: Value },
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl Store {
    /// Opens (creating when missing) the database at `url` and brings its
    /// schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError(format!("`{url}` is not a SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL survives a crash of the process: a commit that
            // returned is on disk in the log. (FULL adds an fsync per commit,
            // for power loss.)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Store {
            pool,
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Records an event for a lead and its decision, in one transaction.
    /// `decide` sees the lead after the event is merged in.
    pub async fn record(
        &self,
        account: &str,
        event: LeadEvent,
        decide: impl FnOnce(&LeadState) -> DecisionRecord,
    ) -> Result<Recorded, StoreError> {
        // IMMEDIATE takes the write lock up front: a deferred transaction that
        // read first would fail, not wait, when another writer committed.
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some((source, source_id)) = &event.dedup {
            let row = sqlx::query("SELECT response FROM processed WHERE account_id = ? AND source = ? AND source_id = ?")
                .bind(account)
                .bind(source)
                .bind(source_id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = row {
                let text: Option<String> = row.try_get("response")?;
                let response = text
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(Value::Null);
                return Ok(Recorded::Replay { response });
            }
        }
        let now = now_text();
        // Every lead any identity points to is this person.
        let found = find_leads(&mut tx, account, &event.identities).await?;
        if found.is_empty() {
            // Known from the event alone: decided, then every row written once.
            let record = decide(&new_state(&event));
            let (response, lead_id, decision_id) =
                record_new(&mut tx, account, &event, &now, record).await?;
            tx.commit().await?;
            return Ok(Recorded::New {
                lead_id,
                decision_id,
                response,
            });
        }
        let created = false;
        let lead_id = found[0].0.clone();
        for (other, _) in found.iter().skip(1) {
            merge_into(&mut tx, &lead_id, other).await?;
        }
        apply_event(&mut tx, account, &lead_id, &event, &now).await?;
        if let Some(at) = event.inbound_at {
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            sqlx::query(
                "UPDATE threads SET last_inbound_at = CASE WHEN last_inbound_at IS NULL OR last_inbound_at < ? THEN ? ELSE last_inbound_at END WHERE lead_id = ?",
            )
            .bind(&at)
            .bind(&at)
            .bind(&lead_id)
            .execute(&mut *tx)
            .await?;
        }
        if event.human_activity {
            sqlx::query("UPDATE threads SET state = 'human', updated_at = ? WHERE lead_id = ?")
                .bind(&now)
                .bind(&lead_id)
                .execute(&mut *tx)
                .await?;
        }
        let state = load_state(&mut tx, &lead_id, created).await?;
        let record = decide(&state);
        // A lead routed for the first time keeps the playbook that decided it.
        sqlx::query("UPDATE leads SET playbook = COALESCE(playbook, ?) WHERE id = ?")
            .bind(&record.playbook)
            .bind(&lead_id)
            .execute(&mut *tx)
            .await?;
        let decision_id = insert_decision(&mut tx, account, &lead_id, &now, &record).await?;
        if record.queue.is_some() || record.takeover {
            sqlx::query(
                "UPDATE threads SET queue = COALESCE(?, queue), state = CASE WHEN ? THEN 'human' ELSE state END, updated_at = ? WHERE lead_id = ?",
            )
            .bind(&record.queue)
            .bind(record.takeover)
            .bind(&now)
            .bind(&lead_id)
            .execute(&mut *tx)
            .await?;
        }
        let response = finish_response(
            &mut tx,
            account,
            &event,
            &now,
            &record,
            &lead_id,
            &decision_id,
        )
        .await?;
        tx.commit().await?;
        Ok(Recorded::New {
            lead_id,
            decision_id,
            response,
        })
    }

    /// Everything about a lead, or `None` when the account has no such lead.
    /// A lead merged into another is answered with the survivor.
    pub async fn lead(&self, account: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let Some(id) = survivor(&mut conn, account, id).await? else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT * FROM leads WHERE id = ?")
            .bind(&id)
            .fetch_one(&mut *conn)
            .await?;
        let json = |name: &str| -> Result<Value, StoreError> {
            let text: String = row.try_get(name)?;
            Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
        };
        let text = |name: &str| -> Result<Value, StoreError> {
            Ok(row
                .try_get::<Option<String>, _>(name)?
                .map(Value::String)
                .unwrap_or(Value::Null))
        };
        let identities: Vec<Value> = sqlx::query("SELECT kind, value FROM identities WHERE lead_id = ? ORDER BY kind, value")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| serde_json::json!({"kind": r.get::<String, _>("kind"), "value": r.get::<String, _>("value")}))
            .collect();
        let consents: Vec<Value> = sqlx::query("SELECT channel, granted, source, at, evidence FROM consents WHERE lead_id = ? ORDER BY id")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "channel": r.get::<String, _>("channel"), "granted": r.get::<bool, _>("granted"),
                    "source": r.get::<String, _>("source"), "at": r.get::<String, _>("at"),
                    "evidence": r.get::<Option<String>, _>("evidence"),
                })
            })
            .collect();
        let transcript: Vec<Value> = sqlx::query(
            "SELECT channel, sender, text, at FROM messages WHERE lead_id = ? ORDER BY at, id",
        )
        .bind(&id)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "channel": r.get::<String, _>("channel"), "from": r.get::<String, _>("sender"),
                "text": r.get::<String, _>("text"), "at": r.get::<String, _>("at"),
            })
        })
        .collect();
        let decisions: Vec<Value> = sqlx::query("SELECT id, at, playbook, ruleset_hash, decision, trace FROM decisions WHERE lead_id = ? ORDER BY at, id")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.get::<String, _>("id"), "at": r.get::<String, _>("at"),
                    "playbook": r.get::<String, _>("playbook"), "ruleset": r.get::<String, _>("ruleset_hash"),
                    "decision": serde_json::from_str::<Value>(&r.get::<String, _>("decision")).unwrap_or(Value::Null),
                    "trace": serde_json::from_str::<Value>(&r.get::<String, _>("trace")).unwrap_or(Value::Null),
                })
            })
            .collect();
        let thread = sqlx::query(
            "SELECT state, queue, last_inbound_at FROM threads WHERE lead_id = ?",
        )
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| {
            serde_json::json!({
                "state": r.get::<String, _>("state"), "queue": r.get::<Option<String>, _>("queue"),
                "last_inbound_at": r.get::<Option<String>, _>("last_inbound_at"),
            })
        });
        let outbox: Vec<Value> = sqlx::query("SELECT id, kind, payload, state, attempts, created_at FROM outbox WHERE lead_id = ? ORDER BY created_at, id")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.get::<String, _>("id"), "kind": r.get::<String, _>("kind"),
                    "payload": serde_json::from_str::<Value>(&r.get::<String, _>("payload")).unwrap_or(Value::Null),
                    "state": r.get::<String, _>("state"), "attempts": r.get::<i64, _>("attempts"),
                    "created_at": r.get::<String, _>("created_at"),
                })
            })
            .collect();
        Ok(Some(serde_json::json!({
            "id": id,
            "created_at": text("created_at")?,
            "updated_at": text("updated_at")?,
            "name": text("name")?,
            "first_name": text("first_name")?,
            "phone": text("phone")?,
            "email": text("email")?,
            "language": text("language")?,
            "channel": text("channel")?,
            "intent": text("intent")?,
            "playbook": text("playbook")?,
            "fields": json("fields")?,
            "tags": json("tags")?,
            "identities": identities,
            "consents": consents,
            "transcript": transcript,
            "thread": thread,
            "decisions": decisions,
            "outbox": outbox,
        })))
    }

    /// Leads of an account, newest activity first, optionally matching a
    /// name, phone or email fragment.
    pub async fn search(
        &self,
        account: &str,
        query: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Value>, StoreError> {
        let pattern = query.map(|q| format!("%{}%", q.replace(['%', '_'], "")));
        let rows = sqlx::query(
            "SELECT id, name, phone, email, channel, intent, playbook, updated_at FROM leads \
             WHERE account_id = ? AND merged_into IS NULL \
             AND (? IS NULL OR name LIKE ? OR phone LIKE ? OR email LIKE ?) \
             ORDER BY updated_at DESC, id DESC LIMIT ?",
        )
        .bind(account)
        .bind(&pattern)
        .bind(&pattern)
        .bind(&pattern)
        .bind(&pattern)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.get::<String, _>("id"), "name": r.get::<Option<String>, _>("name"),
                    "phone": r.get::<Option<String>, _>("phone"), "email": r.get::<Option<String>, _>("email"),
                    "channel": r.get::<Option<String>, _>("channel"), "intent": r.get::<Option<String>, _>("intent"),
                    "playbook": r.get::<Option<String>, _>("playbook"), "updated_at": r.get::<String, _>("updated_at"),
                })
            })
            .collect())
    }

    /// Sets a thread's state: a person takes it over, or gives it back.
    /// Returns false when the account has no such lead.
    pub async fn set_thread_state(
        &self,
        account: &str,
        lead_id: &str,
        human: bool,
        queue: Option<&str>,
    ) -> Result<bool, StoreError> {
        // A lead merged into another is handled as the survivor.
        let mut conn = self.pool.acquire().await?;
        let Some(lead_id) = survivor(&mut conn, account, lead_id).await? else {
            return Ok(false);
        };
        drop(conn);
        let lead_id = lead_id.as_str();
        let result = sqlx::query(
            "UPDATE threads SET state = ?, queue = COALESCE(?, queue), updated_at = ? WHERE lead_id = ? AND account_id = ?",
        )
        .bind(if human { "human" } else { "automated" })
        .bind(queue)
        .bind(now_text())
        .bind(lead_id)
        .bind(account)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}

/// A delivery status for a message we sent.
#[derive(Clone, Debug)]
pub struct StatusRecord {
    pub message_id: String,
    /// `sent`, `delivered`, `read` or `failed`.
    pub status: String,
    pub at: DateTime<Utc>,
    pub recipient: String,
    /// Meta's errors, as JSON.
    pub errors: Value,
    /// Our outbox ID, from `biz_opaque_callback_data`.
    pub outbox_id: Option<String>,
}

/// A webhook event waiting to be processed.
#[derive(Clone, Debug)]
pub struct PendingWebhook {
    pub id: i64,
    pub account: String,
    pub source: String,
    pub source_id: String,
    pub payload: Value,
    pub attempts: i64,
}

impl Store {
    /// Stores webhook events before they are acknowledged; returns how many
    /// were new (a redelivered event is ignored).
    pub async fn enqueue_webhooks(
        &self,
        account: &str,
        source: &str,
        events: &[(String, Value)],
    ) -> Result<usize, StoreError> {
        // IMMEDIATE takes the write lock up front: a deferred transaction that
        // read first would fail, not wait, when another writer committed.
        let _writing = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let now = now_text();
        let mut new = 0;
        for (source_id, payload) in events {
            let result = sqlx::query(
                "INSERT OR IGNORE INTO webhook_events (account_id, source, source_id, payload, received_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(account)
            .bind(source)
            .bind(source_id)
            .bind(payload.to_string())
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            new += result.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(new)
    }

    /// The oldest webhook events due for processing.
    pub async fn due_webhooks(&self, limit: i64) -> Result<Vec<PendingWebhook>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, source, source_id, payload, attempts FROM webhook_events \
             WHERE state = 'pending' AND (next_attempt IS NULL OR next_attempt <= ?) ORDER BY id LIMIT ?",
        )
        .bind(now_text())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| PendingWebhook {
                id: r.get("id"),
                account: r.get("account_id"),
                source: r.get("source"),
                source_id: r.get("source_id"),
                payload: serde_json::from_str(&r.get::<String, _>("payload"))
                    .unwrap_or(Value::Null),
                attempts: r.get("attempts"),
            })
            .collect())
    }

    /// Marks a webhook event processed, or failed (retried later unless `give_up`).
    pub async fn finish_webhook(
        &self,
        id: i64,
        error: Option<&str>,
        give_up: bool,
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let (state, next) = match (error, give_up) {
            (None, _) => ("done", None),
            (Some(_), true) => ("failed", None),
            (Some(_), false) => (
                "pending",
                Some(
                    (now + chrono::Duration::from_std(retry_in).unwrap_or_default())
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                ),
            ),
        };
        sqlx::query("UPDATE webhook_events SET state = ?, attempts = attempts + 1, next_attempt = ?, error = ?, processed_at = ? WHERE id = ?")
            .bind(state)
            .bind(next)
            .bind(error)
            .bind(now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Counts of webhook events by state, for readiness and metrics.
    pub async fn webhook_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM webhook_events GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get("state"), r.get("n")))
            .collect())
    }

    /// Records a delivery status Meta reported.
    pub async fn record_status(
        &self,
        account: &str,
        status: &StatusRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR IGNORE INTO whatsapp_statuses (account_id, message_id, status, at, recipient, errors, outbox_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(account)
        .bind(&status.message_id)
        .bind(&status.status)
        .bind(status.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .bind(&status.recipient)
        .bind(status.errors.to_string())
        .bind(&status.outbox_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a consent change for the lead an identity belongs to; false
    /// when no lead has that identity.
    pub async fn record_consent(
        &self,
        account: &str,
        kind: &str,
        value: &str,
        consent: &ConsentRecord,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let identity = [(kind.to_string(), value.to_string())];
        let Some((lead_id, _)) = find_leads(&mut conn, account, &identity)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(false);
        };
        insert_consent(&mut conn, account, &lead_id, consent).await?;
        Ok(true)
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

/// The lead `id` is now: itself, or the lead it was merged into; `None`
/// when the account has no such lead.
async fn survivor(
    conn: &mut sqlx::SqliteConnection,
    account: &str,
    id: &str,
) -> Result<Option<String>, StoreError> {
    let mut id = id.to_string();
    // Merges chain only as far as leads were merged in turn; a few steps at most.
    for _ in 0..8 {
        let row = sqlx::query("SELECT merged_into FROM leads WHERE id = ? AND account_id = ?")
            .bind(&id)
            .bind(account)
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            None => return Ok(None),
            Some(row) => match row.try_get::<Option<String>, _>("merged_into")? {
                Some(next) => id = next,
                None => return Ok(Some(id)),
            },
        }
    }
    Ok(Some(id))
}

/// Records an event for a person seen for the first time. The lead's state
/// is known from the event itself, so it is decided before anything is
/// written and every row is written once: about half the statements of an
/// event for a known lead, which is what bounds intake throughput.
async fn record_new(
    tx: &mut Tx<'_>,
    account: &str,
    event: &LeadEvent,
    now: &str,
    record: DecisionRecord,
) -> Result<(Value, String, String), StoreError> {
    let lead_id = uuid::Uuid::now_v7().to_string();
    let mut fields = event.fields.clone();
    fields.retain(|_, v| !v.is_null());
    let tags = unique(&event.tags);
    sqlx::query(
        "INSERT INTO leads (id, account_id, created_at, updated_at, name, first_name, phone, email, language, channel, intent, playbook, fields, tags) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&lead_id)
    .bind(account)
    .bind(now)
    .bind(now)
    .bind(&event.name)
    .bind(&event.first_name)
    .bind(&event.phone)
    .bind(&event.email)
    .bind(&event.language)
    .bind(&event.channel)
    .bind(&event.intent)
    .bind(event.playbook.as_ref().unwrap_or(&record.playbook))
    .bind(Value::Object(fields).to_string())
    .bind(serde_json::to_string(&tags).unwrap_or_default())
    .execute(&mut **tx)
    .await?;
    insert_rows(tx, account, &lead_id, event).await?;
    let decision_id = insert_decision(tx, account, &lead_id, now, &record).await?;
    sqlx::query("INSERT INTO threads (lead_id, account_id, state, queue, last_inbound_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&lead_id)
        .bind(account)
        .bind(if record.takeover || event.human_activity { "human" } else { "automated" })
        .bind(&record.queue)
        .bind(event.inbound_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    let response =
        finish_response(tx, account, event, now, &record, &lead_id, &decision_id).await?;
    Ok((response, lead_id, decision_id))
}

fn unique(items: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in items {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

/// The state of a lead that this event creates.
fn new_state(event: &LeadEvent) -> LeadState {
    LeadState {
        id: String::new(),
        lead: event.lead(),
        human: event.human_activity,
        last_inbound_at: event.inbound_at,
        created: true,
    }
}

impl LeadEvent {
    /// The lead this event describes on its own (as a new lead would be).
    pub fn lead(&self) -> Lead {
        let mut fields = self.fields.clone();
        fields.retain(|_, v| !v.is_null());
        let mut transcript = self.messages.clone();
        transcript.sort_by_key(|m| m.at);
        let consent = self
            .consent
            .as_ref()
            .filter(|c| c.channel == "whatsapp")
            .is_some_and(|c| c.granted);
        Lead {
            name: self.name.clone(),
            first_name: self.first_name.clone(),
            phone: self.phone.clone(),
            email: self.email.clone(),
            language: self.language.clone(),
            channel: self.channel.clone(),
            intent: self.intent.clone(),
            playbook: self.playbook.clone(),
            consent: Consent { whatsapp: consent },
            fields,
            tags: unique(&self.tags),
            transcript,
        }
    }
}

/// The leads (id, created_at) any of these identities belong to, oldest first.
async fn find_leads(
    conn: &mut sqlx::SqliteConnection,
    account: &str,
    identities: &[(String, String)],
) -> Result<Vec<(String, String)>, StoreError> {
    let mut found: Vec<(String, String)> = Vec::new();
    if identities.is_empty() {
        return Ok(found);
    }
    // One query for every identity the event carries.
    let clauses = vec!["(i.kind = ? AND i.value = ?)"; identities.len()].join(" OR ");
    let sql = format!(
        "SELECT DISTINCT l.id, l.created_at FROM identities i JOIN leads l ON l.id = i.lead_id \
         WHERE i.account_id = ? AND ({clauses})"
    );
    let mut query = sqlx::query(&sql).bind(account);
    for (kind, value) in identities {
        query = query.bind(kind).bind(value);
    }
    for row in query.fetch_all(&mut *conn).await? {
        found.push((row.try_get("id")?, row.try_get("created_at")?));
    }
    found.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    Ok(found)
}

/// Identities, transcript messages and the consent of an event, as multi-row inserts.
async fn insert_rows(
    tx: &mut Tx<'_>,
    account: &str,
    lead_id: &str,
    event: &LeadEvent,
) -> Result<(), StoreError> {
    if !event.identities.is_empty() {
        let rows = vec!["(?, ?, ?, ?)"; event.identities.len()].join(", ");
        let sql = format!(
            "INSERT OR IGNORE INTO identities (account_id, kind, value, lead_id) VALUES {rows}"
        );
        let mut q = sqlx::query(&sql);
        for (kind, value) in &event.identities {
            q = q.bind(account).bind(kind).bind(value).bind(lead_id);
        }
        q.execute(&mut **tx).await?;
    }
    if !event.messages.is_empty() {
        let rows = vec!["(?, ?, ?, ?, ?, ?)"; event.messages.len()].join(", ");
        let sql = format!(
            "INSERT INTO messages (account_id, lead_id, channel, sender, text, at) VALUES {rows}"
        );
        let mut q = sqlx::query(&sql);
        for m in &event.messages {
            q = q
                .bind(account)
                .bind(lead_id)
                .bind(&m.channel)
                .bind(&m.from)
                .bind(&m.text)
                .bind(m.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        }
        q.execute(&mut **tx).await?;
    }
    if let Some(c) = &event.consent {
        insert_consent(tx, account, lead_id, c).await?;
    }
    Ok(())
}

/// An opt-in or opt-out on record.
async fn insert_consent(
    conn: &mut sqlx::SqliteConnection,
    account: &str,
    lead_id: &str,
    c: &ConsentRecord,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO consents (account_id, lead_id, channel, granted, source, at, evidence) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .bind(account)
        .bind(lead_id)
        .bind(&c.channel)
        .bind(c.granted)
        .bind(&c.source)
        .bind(c.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .bind(&c.evidence)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The decision row and its outbox rows; returns the decision's ID.
async fn insert_decision(
    tx: &mut Tx<'_>,
    account: &str,
    lead_id: &str,
    now: &str,
    record: &DecisionRecord,
) -> Result<String, StoreError> {
    let decision_id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO decisions (id, account_id, lead_id, at, playbook, ruleset_hash, rules, decision, trace) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&decision_id)
    .bind(account)
    .bind(lead_id)
    .bind(now)
    .bind(&record.playbook)
    .bind(&record.ruleset_hash)
    .bind(serde_json::to_string(&record.rules).unwrap_or_default())
    .bind(record.decision.to_string())
    .bind(record.trace.to_string())
    .execute(&mut **tx)
    .await?;
    if !record.outbox.is_empty() {
        let rows = vec!["(?, ?, ?, ?, ?, ?, ?)"; record.outbox.len()].join(", ");
        let sql = format!("INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at) VALUES {rows}");
        let mut q = sqlx::query(&sql);
        for (kind, payload) in &record.outbox {
            q = q
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(account)
                .bind(lead_id)
                .bind(&decision_id)
                .bind(kind)
                .bind(payload.to_string())
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(decision_id)
}

/// The response (with the lead and decision IDs), and the record that the
/// event's source ID is processed, so a retry gets this same answer.
async fn finish_response(
    tx: &mut Tx<'_>,
    account: &str,
    event: &LeadEvent,
    now: &str,
    record: &DecisionRecord,
    lead_id: &str,
    decision_id: &str,
) -> Result<Value, StoreError> {
    let mut response = record.response.clone();
    if let Value::Object(map) = &mut response {
        map.insert("lead_id".into(), Value::String(lead_id.to_string()));
        map.insert("decision_id".into(), Value::String(decision_id.to_string()));
    }
    if let Some((source, source_id)) = &event.dedup {
        sqlx::query("INSERT INTO processed (account_id, source, source_id, at, response) VALUES (?, ?, ?, ?, ?)")
            .bind(account)
            .bind(source)
            .bind(source_id)
            .bind(now)
            .bind(response.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(response)
}

/// Moves everything of `other` onto `survivor`, and marks `other` merged.
async fn merge_into(tx: &mut Tx<'_>, survivor: &str, other: &str) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT id, name, first_name, phone, email, language, channel, intent, playbook, fields, tags FROM leads WHERE id IN (?, ?)")
        .bind(survivor)
        .bind(other)
        .fetch_all(&mut **tx)
        .await?;
    let (mut keep, mut gone) = (None, None);
    for r in rows {
        if r.get::<String, _>("id") == survivor {
            keep = Some(r);
        } else {
            gone = Some(r);
        }
    }
    let (Some(keep), Some(gone)) = (keep, gone) else {
        return Ok(());
    };
    // The survivor's values win; the other lead fills what it lacks.
    let pick = |col: &str| -> Option<String> {
        keep.get::<Option<String>, _>(col)
            .or_else(|| gone.get::<Option<String>, _>(col))
    };
    let mut fields: Map<String, Value> =
        serde_json::from_str(&gone.get::<String, _>("fields")).unwrap_or_default();
    let keep_fields: Map<String, Value> =
        serde_json::from_str(&keep.get::<String, _>("fields")).unwrap_or_default();
    fields.extend(keep_fields);
    let mut tags: Vec<String> =
        serde_json::from_str(&keep.get::<String, _>("tags")).unwrap_or_default();
    for t in serde_json::from_str::<Vec<String>>(&gone.get::<String, _>("tags")).unwrap_or_default()
    {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    sqlx::query("UPDATE leads SET name = ?, first_name = ?, phone = ?, email = ?, language = ?, channel = ?, intent = ?, playbook = ?, fields = ?, tags = ? WHERE id = ?")
        .bind(pick("name"))
        .bind(pick("first_name"))
        .bind(pick("phone"))
        .bind(pick("email"))
        .bind(pick("language"))
        .bind(pick("channel"))
        .bind(pick("intent"))
        .bind(pick("playbook"))
        .bind(Value::Object(fields).to_string())
        .bind(serde_json::to_string(&tags).unwrap_or_default())
        .bind(survivor)
        .execute(&mut **tx)
        .await?;
    for table in ["identities", "consents", "messages", "decisions", "outbox"] {
        sqlx::query(&format!("UPDATE {table} SET lead_id = ? WHERE lead_id = ?"))
            .bind(survivor)
            .bind(other)
            .execute(&mut **tx)
            .await?;
    }
    // A thread a person took over stays taken over; the later window counts.
    sqlx::query(
        "UPDATE threads SET \
           state = CASE WHEN (SELECT state FROM threads WHERE lead_id = ?2) = 'human' THEN 'human' ELSE state END, \
           queue = COALESCE(queue, (SELECT queue FROM threads WHERE lead_id = ?2)), \
           last_inbound_at = MAX(COALESCE(last_inbound_at, ''), COALESCE((SELECT last_inbound_at FROM threads WHERE lead_id = ?2), '')) \
         WHERE lead_id = ?1",
    )
    .bind(survivor)
    .bind(other)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE threads SET last_inbound_at = NULL WHERE lead_id = ? AND last_inbound_at = ''",
    )
    .bind(survivor)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM threads WHERE lead_id = ?")
        .bind(other)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE leads SET merged_into = ? WHERE id = ? OR merged_into = ?")
        .bind(survivor)
        .bind(other)
        .bind(other)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn apply_event(
    tx: &mut Tx<'_>,
    account: &str,
    lead_id: &str,
    event: &LeadEvent,
    now: &str,
) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT fields, tags FROM leads WHERE id = ?")
        .bind(lead_id)
        .fetch_one(&mut **tx)
        .await?;
    let mut fields: Map<String, Value> =
        serde_json::from_str(&row.get::<String, _>("fields")).unwrap_or_default();
    // A later event's answers replace earlier ones; a null clears a field.
    for (k, v) in &event.fields {
        if v.is_null() {
            fields.remove(k);
        } else {
            fields.insert(k.clone(), v.clone());
        }
    }
    let mut tags: Vec<String> =
        serde_json::from_str(&row.get::<String, _>("tags")).unwrap_or_default();
    for t in &event.tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    sqlx::query(
        "UPDATE leads SET name = COALESCE(?, name), first_name = COALESCE(?, first_name), phone = COALESCE(?, phone), \
         email = COALESCE(?, email), language = COALESCE(?, language), channel = COALESCE(channel, ?), \
         intent = COALESCE(?, intent), playbook = COALESCE(?, playbook), fields = ?, tags = ?, updated_at = ? WHERE id = ?",
    )
    .bind(&event.name)
    .bind(&event.first_name)
    .bind(&event.phone)
    .bind(&event.email)
    .bind(&event.language)
    .bind(&event.channel)
    .bind(&event.intent)
    .bind(&event.playbook)
    .bind(Value::Object(fields).to_string())
    .bind(serde_json::to_string(&tags).unwrap_or_default())
    .bind(now)
    .bind(lead_id)
    .execute(&mut **tx)
    .await?;
    insert_rows(tx, account, lead_id, event).await?;
    Ok(())
}

async fn load_state(
    tx: &mut Tx<'_>,
    lead_id: &str,
    created: bool,
) -> Result<LeadState, StoreError> {
    let row = sqlx::query("SELECT * FROM leads WHERE id = ?")
        .bind(lead_id)
        .fetch_one(&mut **tx)
        .await?;
    let consent = sqlx::query("SELECT granted FROM consents WHERE lead_id = ? AND channel = 'whatsapp' ORDER BY at DESC, id DESC LIMIT 1")
        .bind(lead_id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.get::<bool, _>("granted"))
        .unwrap_or(false);
    let transcript: Vec<TranscriptMessage> = sqlx::query(
        "SELECT channel, sender, text, at FROM messages WHERE lead_id = ? ORDER BY at, id",
    )
    .bind(lead_id)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .filter_map(|r| {
        Some(TranscriptMessage {
            channel: r.get("channel"),
            from: r.get("sender"),
            text: r.get("text"),
            at: parse_time(Some(r.get("at")))?,
        })
    })
    .collect();
    let thread = sqlx::query("SELECT state, last_inbound_at FROM threads WHERE lead_id = ?")
        .bind(lead_id)
        .fetch_optional(&mut **tx)
        .await?;
    let (human, last_inbound_at) = match thread {
        Some(t) => (
            t.get::<String, _>("state") == "human",
            parse_time(t.get("last_inbound_at")),
        ),
        None => (false, None),
    };
    let lead = Lead {
        name: row.get("name"),
        first_name: row.get("first_name"),
        phone: row.get("phone"),
        email: row.get("email"),
        language: row.get("language"),
        channel: row.get("channel"),
        intent: row.get("intent"),
        playbook: row.get("playbook"),
        consent: Consent { whatsapp: consent },
        fields: serde_json::from_str(&row.get::<String, _>("fields")).unwrap_or_default(),
        tags: serde_json::from_str(&row.get::<String, _>("tags")).unwrap_or_default(),
        transcript,
    };
    Ok(LeadState {
        id: lead_id.to_string(),
        lead,
        human,
        last_inbound_at,
        created,
    })
}
