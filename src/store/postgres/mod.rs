//! The PostgreSQL implementation of the store: the same methods and the same
//! answers as [`super::sqlite`], for one or many `handoff serve` instances on
//! one database.
//!
//! Every write is one transaction on a pooled connection; PostgreSQL commits
//! concurrent transactions together itself, so there is no writer thread.
//! What SQLite's single writer gave for free is made explicit here, because
//! instances write at the same time:
//!
//! - **Intake deduplication.** A request with a source ID first inserts its
//!   `processed` row (`ON CONFLICT DO NOTHING`). The same key arriving at
//!   another instance meanwhile waits on that row; once the first commits it
//!   inserts nothing and answers the first answer, as any replay does.
//! - **One decision at a time per person.** Before looking a lead up by its
//!   identities, a write takes a transaction-scoped advisory lock on each
//!   identity (`pg_advisory_xact_lock` on a hash of account, kind and value,
//!   in ascending order), then locks the rows of the leads it found and looks
//!   again until the set is stable (a merge elsewhere can move an identity).
//!   Two events for one person therefore run one after the other, and the
//!   second decides on what the first wrote. Locks rather than SERIALIZABLE
//!   with retries: `decide` runs once (it is `FnOnce`, and a decision is not
//!   something to compute twice), so a transaction that fails after deciding
//!   cannot simply be run again; with locks nothing conflicts after the
//!   decision is made. Only a deadlock PostgreSQL breaks before the decision
//!   (possible in theory when merges cross) is retried.
//! - **Lock order.** Every write takes, in this order: its `processed` row,
//!   identity locks, lead rows (`FOR NO KEY UPDATE`, which foreign-key checks
//!   do not wait for), then the rows it changes. Writes that touch a lead's
//!   rows without its identities (a status, a delivery outcome, a takeover)
//!   lock the surviving lead first, then the outbox row.
//! - **Queues.** An assignment or escalation pass takes the account's
//!   queue lock first (`pg_advisory_xact_lock` with two 32-bit keys: a key
//!   space PostgreSQL keeps apart from the single 64-bit keys of the
//!   identities and of the migrator, so they never collide), then the lead
//!   rows of the threads it changes (ascending, in one statement), then
//!   those threads, each update guarded by the state it expects. Passes of
//!   one account thus run one after the other: no member is given more than
//!   their capacity and no thread goes to two people. Nothing else takes the
//!   queue lock (a lead's event routes its thread under the lead's lock
//!   alone), and nothing that holds a lead row waits for it.
//! - **Claims.** The outbox and webhook events are claimed with
//!   `FOR UPDATE SKIP LOCKED` plus a lease, so two instances' workers never
//!   hold the same message or event; a claim never waits for a lock.
//!
//! Times are `TIMESTAMPTZ`, bound and read as UTC and shown as the SQLite
//! store shows its text (RFC 3339, microseconds, `Z`); both keep microseconds,
//! so comparisons and answers agree. JSON stays the text the store wrote
//! (`TEXT`, not `JSONB`): it reads back byte for byte as from SQLite, and
//! JSONB would refuse a `\u0000` that SQLite keeps; nothing queries inside it.

mod inbox;
mod queues;

use super::outbox::{self, Effects, Flag, OptOut};
use super::queues::SYSTEM_ACTOR;
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
use serde_json::Value;
use sqlx_core::connection::ConnectOptions;
use sqlx_core::error::BoxDynError;
use sqlx_core::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx_core::query::Query;
use sqlx_core::row::Row;
use sqlx_postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

/// Connections each instance keeps at most for requests. Intake holds one
/// per request in flight for a few milliseconds.
const POOL_SIZE: u32 = 16;

/// Connections of the delivery worker's pool (see [`Postgres::delivery`]).
const DELIVERY_POOL_SIZE: u32 = 6;

/// Connections of the webhook worker's pool (see [`Postgres::worker`]).
/// With the two above, an instance uses at most 28 of PostgreSQL's default
/// `max_connections` (100).
const WORKER_POOL_SIZE: u32 = 6;

/// How often a transaction PostgreSQL aborted to break a deadlock is run again.
pub(super) const RETRIES: usize = 5;

/// The schema, in order: (version, name, SQL), applied by sqlx's migrator.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "schema",
        include_str!("../../../migrations/postgres/0001_schema.sql"),
    ),
    (
        2,
        "inbox",
        include_str!("../../../migrations/postgres/0002_inbox.sql"),
    ),
    (
        3,
        "queues",
        include_str!("../../../migrations/postgres/0003_queues.sql"),
    ),
    (
        4,
        "conversations",
        include_str!("../../../migrations/postgres/0004_conversations.sql"),
    ),
    (
        5,
        "idempotency",
        include_str!("../../../migrations/postgres/0005_idempotency.sql"),
    ),
];

pub(super) type Sql<T> = Result<T, sqlx_core::Error>;

impl From<sqlx_core::Error> for StoreError {
    fn from(e: sqlx_core::Error) -> Self {
        match e {
            sqlx_core::Error::Io(_)
            | sqlx_core::Error::Tls(_)
            | sqlx_core::Error::PoolTimedOut
            | sqlx_core::Error::PoolClosed
            | sqlx_core::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// A PostgreSQL database: two pools of connections.
pub struct Postgres {
    pub(super) pool: PgPool,
    /// The webhook worker's calls (claiming and finishing events, applying
    /// statuses and consents): it works through events one at a time, and
    /// in the shared pool each of its statements would queue behind every
    /// request and delivery in flight. Delivery statuses must be applied
    /// within the grace period, or an uncertain send goes out again.
    worker: PgPool,
    /// The delivery worker's claims and outcomes: up to 128 messages are in
    /// flight, and their outcomes would otherwise take every connection
    /// intake needs.
    delivery: PgPool,
    /// The URL, password hidden, for `Debug`.
    url: String,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("url", &self.url).finish()
    }
}

/// One statement with its parameters still to bind.
pub(super) fn q(sql: &str) -> Query<'_, sqlx_postgres::Postgres, PgArguments> {
    sqlx_core::query::query(sql)
}

/// Times as the store shows them (RFC 3339, microseconds, UTC).
pub(super) use super::view::time_text;

fn ago(d: Duration) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(d).unwrap_or_default()
}

fn ahead(d: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(d).unwrap_or_default()
}

fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Whether PostgreSQL aborted the transaction to break a deadlock or a
/// serialization conflict, so that running it again can succeed.
pub(super) fn retryable(e: &sqlx_core::Error) -> bool {
    match e {
        sqlx_core::Error::Database(d) => matches!(d.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

/// Runs a transaction (an expression giving a future of `Sql<T>`) again
/// while PostgreSQL aborts it to break a deadlock.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut tries = 0;
        loop {
            match $attempt.await {
                Err(e) if retryable(&e) && tries < RETRIES => tries += 1,
                other => break other.map_err(StoreError::from),
            }
        }
    }};
}
pub(super) use retrying;

/// The advisory-lock key of an identity: 64 bits of a hash of the account,
/// kind and value. Two identities sharing a key only wait for each other.
fn lock_key(account: &str, kind: &str, value: &str) -> i64 {
    i64::from_ne_bytes(lock_hash(&["handoff identity", account, kind, value]).to_ne_bytes())
}

/// 64 bits of a hash of `parts`, for advisory-lock keys.
pub(super) fn lock_hash(parts: &[&str]) -> u64 {
    // FNV-1a: stable across builds and processes, which every instance needs.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        // 0xff never occurs in UTF-8, so the parts cannot run into each other.
        for b in part.bytes().chain([0xff]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The migrations compiled into the binary, for sqlx's migrator.
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*name),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

impl Postgres {
    /// Connects to the database at `url` (`postgres://` or `postgresql://`)
    /// and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Postgres, StoreError> {
        let shown = super::redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(format!("`{shown}` is not a PostgreSQL URL: {e}")))?
            .application_name("handoff")
            // Statements would be logged with their SQL at INFO; our own spans say what ran.
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect: {e}")))?;
        let worker = PgPoolOptions::new()
            .max_connections(WORKER_POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options.clone());
        let delivery = PgPoolOptions::new()
            .max_connections(DELIVERY_POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let migrator = Migrator::new(Embedded)
            .await
            .map_err(|e| StoreError::Migration(format!("reading the migrations: {e}")))?;
        // The migrator holds an advisory lock: instances starting together migrate once.
        migrator.run(&pool).await.map_err(|e| {
            StoreError::Migration(format!(
                "migrating the database: {e} (a database migrated by a newer handoff is refused)"
            ))
        })?;
        Ok(Postgres {
            pool,
            worker,
            delivery,
            url: shown,
        })
    }

    async fn record_once<F: FnOnce(&LeadState) -> DecisionRecord>(
        &self,
        account: &str,
        event: &LeadEvent,
        decide: &mut Option<F>,
    ) -> Sql<Recorded> {
        let mut tx = self.pool.begin().await?;
        let now = Utc::now();
        if let Some((source, source_id)) = &event.dedup {
            // Claim the key before anything else; see the module comment.
            let claimed = q("INSERT INTO processed (account_id, source, source_id, at, fingerprint) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
                .bind(account)
                .bind(source)
                .bind(source_id)
                .bind(now)
                .bind(&event.fingerprint)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !claimed {
                let seen = q(
                    "SELECT response, fingerprint FROM processed WHERE account_id = $1 AND source = $2 AND source_id = $3",
                )
                .bind(account)
                .bind(source)
                .bind(source_id)
                .fetch_optional(&mut *tx)
                .await?;
                let (response, fingerprint): (Option<String>, Option<String>) = match seen {
                    Some(r) => (r.try_get(0)?, r.try_get(1)?),
                    None => (None, None),
                };
                tx.rollback().await?;
                if super::key_reused(event, fingerprint.as_deref()) {
                    return Ok(Recorded::KeyReused);
                }
                let response = response.map(|t| json_text(&t)).unwrap_or(Value::Null);
                return Ok(Recorded::Replay { response });
            }
        }
        let found = lock_leads(&mut tx, account, &event.identities).await?;
        let decide = decide
            .take()
            .ok_or_else(|| sqlx_core::Error::Protocol("a lead event was decided twice".into()))?;
        let recorded = record_event(&mut tx, account, event, now, found, decide).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn set_thread_state_once(
        &self,
        account: &str,
        lead_id: &str,
        human: bool,
        queue: Option<&str>,
    ) -> Sql<bool> {
        let mut tx = self.pool.begin().await?;
        // A lead merged into another is handled as the survivor.
        let Some(lead_id) = lock_survivor(&mut tx, account, lead_id).await? else {
            return Ok(false);
        };
        let changed = q("UPDATE threads SET state = $1, queue = COALESCE($2, queue), updated_at = $3 WHERE lead_id = $4 AND account_id = $5")
            .bind(if human { "human" } else { "automated" })
            .bind(queue)
            .bind(Utc::now())
            .bind(&lead_id)
            .bind(account)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn enqueue_webhooks_once(
        &self,
        account: &str,
        source: &str,
        ids: &[String],
        payloads: &[String],
    ) -> Sql<usize> {
        // One statement, in the order received (which is the order they are
        // processed in); a redelivery to any instance inserts nothing.
        let new = q("INSERT INTO webhook_events (account_id, source, source_id, payload, received_at) \
             SELECT $1, $2, e.source_id, e.payload, $5 FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS e (source_id, payload, n) \
             ORDER BY e.n ON CONFLICT DO NOTHING")
            .bind(account)
            .bind(source)
            .bind(ids)
            .bind(payloads)
            .bind(Utc::now())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(usize::try_from(new).unwrap_or(usize::MAX))
    }

    async fn enqueue_webhook_once(
        &self,
        account: &str,
        source: &str,
        source_id: &str,
        payload: &str,
    ) -> Sql<Enqueued> {
        let inserted = q(
            "INSERT INTO webhook_events (account_id, source, source_id, payload, received_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(account)
        .bind(source)
        .bind(source_id)
        .bind(payload)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let stored: Option<String> = if inserted {
            None
        } else {
            q("SELECT payload FROM webhook_events WHERE account_id = $1 AND source = $2 AND source_id = $3")
                .bind(account)
                .bind(source)
                .bind(source_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?
        };
        Ok(Enqueued::of(inserted, stored.as_deref(), payload))
    }

    async fn due_webhooks_once(&self, limit: i64, lease: Duration) -> Sql<Vec<PendingWebhook>> {
        let rows = q("UPDATE webhook_events w SET lease_until = $2 FROM ( \
               SELECT id FROM webhook_events WHERE state = 'pending' \
               AND (next_attempt IS NULL OR next_attempt <= $1) AND (lease_until IS NULL OR lease_until <= $1) \
               ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) due \
             WHERE w.id = due.id RETURNING w.id, w.account_id, w.source, w.source_id, w.payload, w.attempts")
            .bind(Utc::now())
            .bind(ahead(lease))
            .bind(limit)
            .fetch_all(&self.worker)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(PendingWebhook {
                id: r.try_get("id")?,
                account: r.try_get("account_id")?,
                source: WebhookSource::parse(r.try_get("source")?)
                    .map_err(|e| sqlx_core::Error::Decode(Box::new(e)))?,
                source_id: r.try_get("source_id")?,
                payload: json_text(&r.try_get::<String, _>("payload")?),
                attempts: r.try_get("attempts")?,
            });
        }
        out.sort_by_key(|w| w.id);
        Ok(out)
    }

    async fn apply_status_once(
        &self,
        account: &str,
        status: &StatusRecord,
        fallback: &[String],
    ) -> Sql<StatusApplied> {
        let mut tx = self.worker.begin().await?;
        let applied = apply_status(&mut tx, account, status, fallback).await?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn claim_outbox_once(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
        grace: Duration,
        max_age: Duration,
        fallbacks: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Sql<Vec<OutboxItem>> {
        let mut tx = self.delivery.begin().await?;
        let now = Utc::now();
        // Automation stops talking once a person has taken the thread over:
        // of the messages about to be claimed, the automated WhatsApp ones of
        // taken-over threads are cancelled instead. Asked of those messages
        // only, so a claim costs the same however many threads were taken
        // over. SKIP LOCKED everywhere here: a claim never waits for another
        // instance, and rows busy elsewhere are seen at the next poll.
        q("WITH next AS (SELECT id, lead_id FROM outbox \
               WHERE state = 'pending' AND (next_attempt IS NULL OR next_attempt <= $1) \
                 AND kind = 'whatsapp' AND automated \
               ORDER BY state, created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
           UPDATE outbox SET state = 'cancelled', error = $2, updated_at = $1 \
           WHERE id IN (SELECT n.id FROM next n JOIN threads t ON t.lead_id = n.lead_id AND t.state = 'human')")
            .bind(now)
            .bind(outbox::TAKEN_OVER)
            .bind(limit)
            .execute(&mut *tx)
            .await?;
        let expired = q("UPDATE outbox SET state = 'failed', error = COALESCE(error || '; ', '') || $3, updated_at = $1 \
           WHERE id = ANY (ARRAY (SELECT id FROM outbox WHERE state = 'pending' AND created_at < $2 \
             ORDER BY state, created_at, id LIMIT 1000 FOR UPDATE SKIP LOCKED)) RETURNING id, account_id, kind")
            .bind(now)
            .bind(ago(max_age))
            .bind(outbox::GIVEN_UP)
            .fetch_all(&mut *tx)
            .await?;
        for row in &expired {
            let (id, account, kind): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if let Some(flag) = outbox::expired_flag(&kind, max_age) {
                let fallback = fallbacks.get(&account).map_or(&[][..], Vec::as_slice);
                flag_thread(&mut tx, &id, &flag, fallback).await?;
            }
        }
        // Pending and stale sending messages are looked up apart, each the
        // oldest first along `outbox_pending`: one query with an OR sorted
        // the whole backlog on every claim (20 ms at 20,000 waiting).
        let rows = q("WITH pending AS (SELECT id, created_at FROM outbox \
               WHERE state = 'pending' AND (next_attempt IS NULL OR next_attempt <= $3) \
               ORDER BY state, created_at, id LIMIT $5 FOR UPDATE SKIP LOCKED), \
             stale AS (SELECT id, created_at FROM outbox \
               WHERE state = 'sending' AND lease_until <= $3 AND (sending_since IS NULL OR sending_since <= $4) \
               ORDER BY state, created_at, id LIMIT $5 FOR UPDATE SKIP LOCKED), \
             due AS (SELECT id FROM (SELECT * FROM pending UNION ALL SELECT * FROM stale) c ORDER BY created_at, id LIMIT $5) \
             UPDATE outbox o SET state = 'sending', lease_owner = $1, lease_until = $2, sending_since = $3, attempts = o.attempts + 1, updated_at = $3 \
             WHERE o.id = ANY (ARRAY (SELECT id FROM due)) \
             RETURNING o.id, o.account_id, o.lead_id, o.kind, o.payload, o.attempts, o.created_at")
            .bind(owner)
            .bind(ahead(lease))
            .bind(now)
            .bind(ago(grace))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            items.push(OutboxItem {
                id: r.try_get("id")?,
                account: r.try_get("account_id")?,
                lead_id: r.try_get("lead_id")?,
                kind: OutboxKind::parse(r.try_get("kind")?)
                    .map_err(|e| sqlx_core::Error::Decode(Box::new(e)))?,
                payload: json_text(&r.try_get::<String, _>("payload")?),
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("created_at")?,
            });
        }
        items.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(items)
    }

    async fn finish_outbox_once(
        &self,
        owner: &str,
        item: &OutboxItem,
        outcome: &SendOutcome,
        fallback: &[String],
    ) -> Sql<bool> {
        let mut tx = self.delivery.begin().await?;
        let finished = finish_outbox(&mut tx, owner, item, outcome, fallback).await?;
        tx.commit().await?;
        Ok(finished)
    }

    async fn record_marketing_once(
        &self,
        account: &str,
        wa_id: &str,
        opted_out: bool,
        at: DateTime<Utc>,
        source: &str,
        evidence: Option<&str>,
    ) -> Sql<()> {
        let mut tx = self.worker.begin().await?;
        record_marketing(&mut tx, account, wa_id, opted_out, at, source, evidence).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_consent_once(
        &self,
        account: &str,
        kind: &str,
        value: &str,
        consent: &ConsentRecord,
    ) -> Sql<bool> {
        let mut tx = self.worker.begin().await?;
        let identity = [(kind.to_string(), value.to_string())];
        let found = lock_leads(&mut tx, account, &identity).await?;
        let Some((lead_id, _)) = found.into_iter().next() else {
            tx.rollback().await?;
            return Ok(false);
        };
        insert_consent(&mut tx, account, &lead_id, consent).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Backend for Postgres {
    async fn ping(&self) -> bool {
        q("SELECT 1").execute(&self.pool).await.is_ok()
    }

    async fn record(
        &self,
        account: &str,
        event: LeadEvent,
        decide: impl FnOnce(&LeadState) -> DecisionRecord + Send + 'static,
    ) -> Result<Recorded, StoreError> {
        let mut decide = Some(decide);
        let mut tries = 0;
        loop {
            match self.record_once(account, &event, &mut decide).await {
                // Only before the decision: it is made once.
                Err(e) if retryable(&e) && decide.is_some() && tries < RETRIES => tries += 1,
                other => return other.map_err(StoreError::from),
            }
        }
    }

    async fn lead(&self, account: &str, id: &str) -> Result<Option<LeadRecord>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Ok(lead_record(&mut c, account, id).await?)
    }

    async fn search(
        &self,
        account: &str,
        query: Option<&str>,
        limit: i64,
    ) -> Result<Vec<LeadSummary>, StoreError> {
        let pattern = query.map(|q| format!("%{}%", q.replace(['%', '_'], "")));
        // ILIKE with no escape character: SQLite's LIKE ignores ASCII case
        // and treats a backslash as itself.
        let rows = q("SELECT id, name, phone, email, channel, intent, playbook, updated_at FROM leads \
             WHERE account_id = $1 AND merged_into IS NULL \
             AND ($2::text IS NULL OR name ILIKE $2 ESCAPE '' OR phone ILIKE $2 ESCAPE '' OR email ILIKE $2 ESCAPE '') \
             ORDER BY updated_at DESC, id DESC LIMIT $3")
            .bind(account)
            .bind(pattern)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(LeadSummary {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                phone: r.try_get("phone")?,
                email: r.try_get("email")?,
                channel: r.try_get("channel")?,
                intent: r.try_get("intent")?,
                playbook: r.try_get("playbook")?,
                updated_at: time_text(r.try_get("updated_at")?),
            });
        }
        Ok(out)
    }

    async fn set_thread_state(
        &self,
        account: &str,
        lead_id: &str,
        human: bool,
        queue: Option<&str>,
    ) -> Result<bool, StoreError> {
        retrying!(self.set_thread_state_once(account, lead_id, human, queue))
    }

    async fn enqueue_webhooks(
        &self,
        account: &str,
        source: WebhookSource,
        events: &[(String, Value)],
    ) -> Result<usize, StoreError> {
        let source = source.as_str();
        let (ids, payloads): (Vec<String>, Vec<String>) = events
            .iter()
            .map(|(id, payload)| (id.clone(), payload.to_string()))
            .unzip();
        retrying!(self.enqueue_webhooks_once(account, source, &ids, &payloads))
    }

    async fn enqueue_webhook(
        &self,
        account: &str,
        source: WebhookSource,
        source_id: &str,
        payload: &Value,
    ) -> Result<Enqueued, StoreError> {
        let source = source.as_str();
        let payload = payload.to_string();
        retrying!(self.enqueue_webhook_once(account, source, source_id, &payload))
    }

    /// Claims up to `limit` due events for `lease`: another instance's
    /// worker does not get them until the lease has run out (this one died).
    async fn due_webhooks(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<PendingWebhook>, StoreError> {
        retrying!(self.due_webhooks_once(limit, lease))
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
        q("UPDATE webhook_events SET state = $1, attempts = attempts + 1, next_attempt = $2, error = $3, processed_at = $4, lease_until = NULL WHERE id = $5")
            .bind(state)
            .bind(next)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&self.worker)
            .await?;
        Ok(())
    }

    async fn webhook_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = q("SELECT state, COUNT(*) FROM webhook_events GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((r.try_get(0)?, r.try_get(1)?));
        }
        Ok(out)
    }

    async fn apply_status(
        &self,
        account: &str,
        status: &StatusRecord,
        fallback: &[String],
    ) -> Result<StatusApplied, StoreError> {
        retrying!(self.apply_status_once(account, status, fallback))
    }

    async fn claim_outbox(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
        grace: Duration,
        max_age: Duration,
        fallbacks: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        retrying!(self.claim_outbox_once(owner, limit, lease, grace, max_age, fallbacks))
    }

    async fn finish_outbox(
        &self,
        owner: &str,
        item: &OutboxItem,
        outcome: SendOutcome,
        fallback: &[String],
    ) -> Result<bool, StoreError> {
        retrying!(self.finish_outbox_once(owner, item, &outcome, fallback))
    }

    async fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = q(
            "SELECT kind, state, COUNT(*) FROM outbox GROUP BY kind, state ORDER BY kind, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
        }
        Ok(out)
    }

    async fn disable_endpoint(
        &self,
        account: &str,
        endpoint: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        retrying!(q(
            "INSERT INTO endpoint_state (account_id, endpoint, disabled_at, reason) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, endpoint) DO UPDATE SET disabled_at = excluded.disabled_at, reason = excluded.reason",
        )
        .bind(account)
        .bind(endpoint)
        .bind(Utc::now())
        .bind(reason)
        .execute(&self.delivery))?;
        Ok(())
    }

    async fn disabled_endpoints(&self, account: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = q("SELECT endpoint, COALESCE(reason, '') FROM endpoint_state WHERE account_id = $1 AND disabled_at IS NOT NULL ORDER BY endpoint")
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((r.try_get(0)?, r.try_get(1)?));
        }
        Ok(out)
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
        retrying!(self.record_marketing_once(account, wa_id, opted_out, at, source, evidence))
    }

    async fn queue_agent_reply(
        &self,
        account: &str,
        lead_id: &str,
        agent: &str,
        payload: &Value,
        text: &str,
    ) -> Result<super::AgentReply, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(id) = lock_survivor(&mut tx, account, lead_id).await? else {
            return Ok(super::AgentReply::NoLead);
        };
        let r = q("SELECT state, assignee FROM threads WHERE lead_id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let state: String = r.try_get(0)?;
        let assignee: Option<String> = r.try_get(1)?;
        let member = format!("agent:{agent}");
        if state == "human" || assignee.as_deref() != Some(member.as_str()) {
            // Ended here, not when dropped: the lead's row is released now.
            tx.rollback().await?;
            return Ok(super::AgentReply::NotAssigned {
                assignee,
                human: state == "human",
            });
        }
        let now = Utc::now();
        // Automated: should a person take the thread over before it goes
        // out, it is cancelled like every automated message.
        let outbox_id =
            insert_reply(&mut tx, account, &id, payload, &member, text, true, now).await?;
        q("UPDATE threads SET picked_up_at = COALESCE(picked_up_at, $1), updated_at = $1 WHERE lead_id = $2")
            .bind(now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        q("UPDATE leads SET updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        trail(&mut tx, account, &id, &member, "reply", Some(text)).await?;
        tx.commit().await?;
        Ok(super::AgentReply::Queued { outbox_id })
    }

    async fn record_consent(
        &self,
        account: &str,
        kind: &str,
        value: &str,
        consent: &ConsentRecord,
    ) -> Result<bool, StoreError> {
        retrying!(self.record_consent_once(account, kind, value, consent))
    }
}

/// Takes the identities' advisory locks, then finds their leads and locks
/// their rows, looking again until no lead moved meanwhile; returns the
/// leads (id, created_at), oldest first.
async fn lock_leads(
    c: &mut PgConnection,
    account: &str,
    identities: &[(String, String)],
) -> Sql<Vec<(String, DateTime<Utc>)>> {
    if identities.is_empty() {
        return Ok(Vec::new());
    }
    // Ascending order everywhere, so two writes never wait on each other in a circle.
    let mut keys: Vec<i64> = identities
        .iter()
        .map(|(kind, value)| lock_key(account, kind, value))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    q("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k")
        .bind(&keys)
        .execute(&mut *c)
        .await?;
    let mut locked: Vec<String> = Vec::new();
    let mut found = find_leads(c, account, identities).await?;
    // A lead found can have been merged by a write that held it when we
    // asked; after its lock the identities point at the survivor. A few
    // rounds at most: each one follows a merge that committed meanwhile.
    for _ in 0..8 {
        let mut missing: Vec<String> = found
            .iter()
            .map(|(id, _)| id.clone())
            .filter(|id| !locked.contains(id))
            .collect();
        if missing.is_empty() {
            break;
        }
        missing.sort();
        q("SELECT id FROM leads WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind(&missing)
            .fetch_all(&mut *c)
            .await?;
        locked.extend(missing);
        found = find_leads(c, account, identities).await?;
    }
    Ok(found)
}

/// The leads (id, created_at) any of these identities belong to, oldest first.
async fn find_leads(
    c: &mut PgConnection,
    account: &str,
    identities: &[(String, String)],
) -> Sql<Vec<(String, DateTime<Utc>)>> {
    let (kinds, values): (Vec<&str>, Vec<&str>) = identities
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .unzip();
    let rows = q("SELECT DISTINCT l.id, l.created_at FROM identities i JOIN leads l ON l.id = i.lead_id \
         WHERE i.account_id = $1 AND (i.kind, i.value) IN (SELECT * FROM unnest($2::text[], $3::text[]))")
        .bind(account)
        .bind(kinds)
        .bind(values)
        .fetch_all(&mut *c)
        .await?;
    let mut found = Vec::with_capacity(rows.len());
    for r in rows {
        found.push((
            r.try_get::<String, _>(0)?,
            r.try_get::<DateTime<Utc>, _>(1)?,
        ));
    }
    found.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    Ok(found)
}

/// The lead `id` is now: itself, or the lead it was merged into; `None`
/// when the account has no such lead. Reads without locking.
pub(super) async fn survivor(c: &mut PgConnection, account: &str, id: &str) -> Sql<Option<String>> {
    let mut id = id.to_string();
    // Merges chain only as far as leads were merged in turn; a few steps at most.
    for _ in 0..8 {
        let row = q("SELECT merged_into FROM leads WHERE id = $1 AND account_id = $2")
            .bind(&id)
            .bind(account)
            .fetch_optional(&mut *c)
            .await?;
        match row.map(|r| r.try_get::<Option<String>, _>(0)).transpose()? {
            None => return Ok(None),
            Some(Some(next)) => id = next,
            Some(None) => return Ok(Some(id)),
        }
    }
    Ok(Some(id))
}

/// The surviving lead of `id`, its row locked; `None` when the account has
/// no such lead. Only the survivor is locked (a merged row is left alone, as
/// a merge updates those), and it is checked not to have been merged itself
/// while we waited.
pub(super) async fn lock_survivor(
    c: &mut PgConnection,
    account: &str,
    id: &str,
) -> Sql<Option<String>> {
    let mut id = id.to_string();
    for _ in 0..8 {
        let Some(s) = survivor(c, account, &id).await? else {
            return Ok(None);
        };
        let merged: Option<String> =
            q("SELECT merged_into FROM leads WHERE id = $1 FOR NO KEY UPDATE")
                .bind(&s)
                .fetch_one(&mut *c)
                .await?
                .try_get(0)?;
        match merged {
            None => return Ok(Some(s)),
            Some(next) => id = next,
        }
    }
    Ok(Some(id))
}

/// Records an event for a lead and its decision (see [`super::Store::record`]),
/// the identities' leads `found` and locked already.
async fn record_event(
    c: &mut PgConnection,
    account: &str,
    event: &LeadEvent,
    now: DateTime<Utc>,
    found: Vec<(String, DateTime<Utc>)>,
    decide: impl FnOnce(&LeadState) -> DecisionRecord,
) -> Sql<Recorded> {
    let Some((lead_id, _)) = found.first().cloned() else {
        // Known from the event alone: decided, then every row written once.
        let keys = super::marketing_keys(
            event
                .identities
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let opted_out = marketing_opted_out(c, account, &keys).await?;
        let record = decide(&new_state(event, opted_out));
        let (response, lead_id, decision_id) = record_new(c, account, event, now, record).await?;
        return Ok(Recorded::New {
            lead_id,
            decision_id,
            response,
        });
    };
    for (other, _) in found.iter().skip(1) {
        merge_into(c, &lead_id, other).await?;
    }
    apply_event(c, account, &lead_id, event, now).await?;
    if let Some(at) = event.inbound_at {
        q("UPDATE threads SET last_inbound_at = GREATEST(last_inbound_at, $1) WHERE lead_id = $2")
            .bind(at)
            .bind(&lead_id)
            .execute(&mut *c)
            .await?;
    }
    if event.human_activity {
        // A person wrote from the business's phone: the thread is picked up.
        q("UPDATE threads SET state = 'human', picked_up_at = COALESCE(picked_up_at, $1), updated_at = $1 WHERE lead_id = $2")
            .bind(now)
            .bind(&lead_id)
            .execute(&mut *c)
            .await?;
    }
    let state = load_state(c, account, &lead_id, false).await?;
    let record = decide(&state);
    // A lead routed for the first time keeps the playbook that decided it.
    q("UPDATE leads SET playbook = COALESCE(playbook, NULLIF($1, '')) WHERE id = $2")
        .bind(&record.playbook)
        .bind(&lead_id)
        .execute(&mut *c)
        .await?;
    let decision_id = insert_decision(c, account, &lead_id, now, &record).await?;
    if record.takeover {
        q("UPDATE threads SET state = 'human', updated_at = $1 WHERE lead_id = $2")
            .bind(now)
            .bind(&lead_id)
            .execute(&mut *c)
            .await?;
    }
    // The account's queue lock is not taken: the thread row's guards are
    // enough, and a write holding a lead must not wait for that lock.
    if let Some(queue) = &record.queue {
        route_thread(c, account, &lead_id, queue, &record, now).await?;
    }
    keep_conversation(c, &lead_id, &state, &record, now).await?;
    if let Some(message) = &event.inbound {
        tell_agent(c, &lead_id, &decision_id, message, now).await?;
    }
    let response = finish_response(c, account, event, &record, &lead_id, &decision_id).await?;
    Ok(Recorded::New {
        lead_id,
        decision_id,
        response,
    })
}

/// Whether any of these WhatsApp IDs stopped marketing messages.
async fn marketing_opted_out(c: &mut PgConnection, account: &str, keys: &[String]) -> Sql<bool> {
    if keys.is_empty() {
        return Ok(false);
    }
    q("SELECT EXISTS (SELECT 1 FROM marketing_preferences WHERE account_id = $1 AND wa_id = ANY($2) AND opted_out)")
        .bind(account)
        .bind(keys)
        .fetch_one(&mut *c)
        .await?
        .try_get(0)
}

/// The WhatsApp IDs a lead's marketing preference may be kept under (see
/// [`super::marketing_keys`]), from its WhatsApp and phone identities.
async fn lead_marketing_keys(c: &mut PgConnection, lead_id: &str) -> Sql<Vec<String>> {
    let rows = q("SELECT kind, value FROM identities WHERE lead_id = $1 AND kind IN ('whatsapp', 'phone') ORDER BY kind, value")
        .bind(lead_id)
        .fetch_all(&mut *c)
        .await?;
    let mut identities = Vec::with_capacity(rows.len());
    for r in rows {
        identities.push((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?));
    }
    Ok(super::marketing_keys(
        identities.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

/// The conversation after a decision: one opens with the first handoff
/// message queued while none is open (an idle one closed first); the
/// fields `ask` reported are kept while it is open.
async fn keep_conversation(
    c: &mut PgConnection,
    lead_id: &str,
    state: &LeadState,
    record: &DecisionRecord,
    now: DateTime<Utc>,
) -> Sql<()> {
    if state.thread.open {
        if let Some(asked) = super::asked_after(&state.thread, &record.asked) {
            q("UPDATE threads SET asked = $1 WHERE lead_id = $2")
                .bind(serde_json::to_string(&asked).unwrap_or_default())
                .bind(lead_id)
                .execute(&mut *c)
                .await?;
        }
        return Ok(());
    }
    if record.opens_thread {
        // The last closing is kept: an idled-out conversation's as of its expiry.
        q("UPDATE threads SET opened_at = $1, idle_days = $2, asked = $3, closed_at = $5, updated_at = $1 WHERE lead_id = $4")
            .bind(now)
            .bind(idle_days(record.idle_days))
            .bind(serde_json::to_string(&record.asked).unwrap_or_default())
            .bind(lead_id)
            .bind(state.thread.closed)
            .execute(&mut *c)
            .await?;
    } else if let Some(closed) = state.thread.closed {
        // An idle conversation closed as of when its time ran out: on record
        // once, so every reader agrees it is closed.
        q("UPDATE threads SET opened_at = NULL, closed_at = $1, asked = '[]' WHERE lead_id = $2 AND opened_at IS NOT NULL")
            .bind(closed)
            .bind(lead_id)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// Queues a WhatsApp reply (an operator's, or an agent's: `automated`) on
/// the lead's latest decision and writes it to the transcript as `sender`;
/// returns its outbox ID.
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_reply(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    payload: &Value,
    sender: &str,
    text: &str,
    automated: bool,
    now: DateTime<Utc>,
) -> Sql<String> {
    let outbox_id = uuid::Uuid::now_v7().to_string();
    // Every lead has a decision (each event is decided): the reply
    // belongs to the latest, for the record.
    q("INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at, automated, updated_at) \
       SELECT $1, $2, $3, d.id, 'whatsapp', $4, $5, $6, $5 FROM decisions d WHERE d.lead_id = $3 ORDER BY d.at DESC, d.id DESC LIMIT 1")
        .bind(&outbox_id)
        .bind(account)
        .bind(lead_id)
        .bind(payload.to_string())
        .bind(now)
        .bind(automated)
        .execute(&mut *c)
        .await?;
    q("INSERT INTO messages (account_id, lead_id, channel, sender, text, at) VALUES ($1, $2, 'whatsapp', $3, $4, $5)")
        .bind(account)
        .bind(lead_id)
        .bind(sender)
        .bind(text)
        .bind(now)
        .execute(&mut *c)
        .await?;
    Ok(outbox_id)
}

/// Writes down that the lead's conversation closed if it has idled out
/// (it already reads as closed; this makes the columns agree), as of the
/// moment its idle time ran out.
pub(super) async fn settle_idle(c: &mut PgConnection, lead_id: &str) -> Sql<()> {
    let row = q("SELECT opened_at, idle_days, (SELECT MAX(at) FROM messages WHERE lead_id = $1) FROM threads WHERE lead_id = $1")
        .bind(lead_id)
        .fetch_optional(&mut *c)
        .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let opened: Option<DateTime<Utc>> = row.try_get(0)?;
    if opened.is_none() {
        return Ok(());
    }
    let idle: Option<i32> = row.try_get(1)?;
    let last: Option<DateTime<Utc>> = row.try_get(2)?;
    let (_, expired) = super::conversation(
        opened,
        None,
        idle.map(i64::from),
        last,
        Vec::new(),
        Utc::now(),
    );
    if let Some(at) = expired {
        q("UPDATE threads SET opened_at = NULL, closed_at = $1, asked = '[]' WHERE lead_id = $2")
            .bind(at)
            .bind(lead_id)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// A playbook's `idle` days as the `INTEGER` column keeps them.
fn idle_days(days: u32) -> i32 {
    i32::try_from(days).unwrap_or(i32::MAX)
}

/// A message the lead wrote reaches the AI agent its thread is assigned
/// to, unless a person has taken the thread over.
async fn tell_agent(
    c: &mut PgConnection,
    lead_id: &str,
    decision_id: &str,
    message: &super::InboundMessage,
    now: DateTime<Utc>,
) -> Sql<()> {
    let row = q("SELECT state, assignee, account_id FROM threads WHERE lead_id = $1")
        .bind(lead_id)
        .fetch_optional(&mut *c)
        .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let state: String = row.try_get(0)?;
    let assignee: Option<String> = row.try_get(1)?;
    let account: String = row.try_get(2)?;
    let Some(endpoint) = assignee.as_deref().and_then(|a| a.strip_prefix("agent:")) else {
        return Ok(());
    };
    if state == "human" {
        return Ok(());
    }
    let payload = super::message_received_payload(endpoint, message);
    q("INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at, updated_at) \
       VALUES ($1, $2, $3, $4, 'notify', $5, $6, $6)")
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&account)
        .bind(lead_id)
        .bind(decision_id)
        .bind(payload.to_string())
        .bind(now)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Moves a known lead's thread to the queue its decision names. In a queue
/// with members it waits to be assigned, its escalation clock started; a
/// thread already open in that queue stays as it is, and one a person or an
/// escalation moved is not moved back by the rules.
async fn route_thread(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    queue: &str,
    record: &DecisionRecord,
    now: DateTime<Utc>,
) -> Sql<()> {
    let r = q("SELECT queue, queue_state, routed_by FROM threads WHERE lead_id = $1")
        .bind(lead_id)
        .fetch_one(&mut *c)
        .await?;
    let current: Option<String> = r.try_get(0)?;
    let queue_state: Option<String> = r.try_get(1)?;
    let routed_by: Option<String> = r.try_get(2)?;
    let open = matches!(queue_state.as_deref(), Some("waiting" | "assigned"));
    if open && (current.as_deref() == Some(queue) || routed_by.as_deref() != Some("rule")) {
        return Ok(());
    }
    if record.managed {
        q("UPDATE threads SET queue = $1, queue_state = 'waiting', queued_at = $2, routed_by = 'rule', \
           assignee = NULL, assigned_at = NULL, picked_up_at = NULL, updated_at = $2 WHERE lead_id = $3")
            .bind(queue)
            .bind(now)
            .bind(lead_id)
            .execute(&mut *c)
            .await?;
        let text = super::queues::queued_text(queue, record);
        trail(c, account, lead_id, SYSTEM_ACTOR, "queued", Some(&text)).await?;
    } else {
        q("UPDATE threads SET queue = $1, queue_state = CASE WHEN $2 THEN NULL ELSE queue_state END, \
           assignee = CASE WHEN $2 THEN NULL ELSE assignee END, \
           assigned_at = CASE WHEN $2 THEN NULL ELSE assigned_at END, queued_at = CASE WHEN $2 THEN NULL ELSE queued_at END, \
           picked_up_at = CASE WHEN $2 THEN NULL ELSE picked_up_at END, updated_at = $3 WHERE lead_id = $4")
            .bind(queue)
            .bind(open)
            .bind(now)
            .bind(lead_id)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// Records an event for a person seen for the first time: the lead, its
/// rows, its decision and its thread.
async fn record_new(
    c: &mut PgConnection,
    account: &str,
    event: &LeadEvent,
    now: DateTime<Utc>,
    record: DecisionRecord,
) -> Sql<(Value, String, String)> {
    let lead_id = uuid::Uuid::now_v7().to_string();
    let columns = event.new_columns(&record.playbook);
    let (fields, tags, answers) = columns.json_columns();
    let [name, first_name, phone, email, language, channel, intent, playbook] = columns.text;
    q("INSERT INTO leads (id, account_id, created_at, updated_at, name, first_name, phone, email, language, channel, intent, playbook, fields, tags, answers) \
       VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)")
        .bind(&lead_id)
        .bind(account)
        .bind(now)
        .bind(name)
        .bind(first_name)
        .bind(phone)
        .bind(email)
        .bind(language)
        .bind(channel)
        .bind(intent)
        .bind(playbook)
        .bind(fields)
        .bind(tags)
        .bind(answers)
        .execute(&mut *c)
        .await?;
    insert_rows(c, account, &lead_id, event).await?;
    let decision_id = insert_decision(c, account, &lead_id, now, &record).await?;
    let waits = record.managed && record.queue.is_some();
    q("INSERT INTO threads (lead_id, account_id, state, queue, last_inbound_at, updated_at, queue_state, queued_at, routed_by, opened_at, idle_days, asked) \
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
        .bind(&lead_id)
        .bind(account)
        .bind(if record.takeover || event.human_activity { "human" } else { "automated" })
        .bind(&record.queue)
        .bind(event.inbound_at)
        .bind(now)
        .bind(waits.then_some("waiting"))
        .bind(waits.then_some(now))
        .bind(record.queue.as_ref().map(|_| "rule"))
        .bind(record.opens_thread.then_some(now))
        .bind(record.opens_thread.then_some(idle_days(record.idle_days)))
        .bind(if record.opens_thread {
            serde_json::to_string(&record.asked).unwrap_or_default()
        } else {
            "[]".to_string()
        })
        .execute(&mut *c)
        .await?;
    if let (true, Some(queue)) = (waits, &record.queue) {
        let text = super::queues::queued_text(queue, &record);
        trail(c, account, &lead_id, SYSTEM_ACTOR, "queued", Some(&text)).await?;
    }
    let response = finish_response(c, account, event, &record, &lead_id, &decision_id).await?;
    Ok((response, lead_id, decision_id))
}

/// Identities, transcript messages and the consent of an event.
async fn insert_rows(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    event: &LeadEvent,
) -> Sql<()> {
    if !event.identities.is_empty() {
        let (kinds, values): (Vec<&str>, Vec<&str>) = event
            .identities
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .unzip();
        q("INSERT INTO identities (account_id, kind, value, lead_id) \
           SELECT $1, kind, value, $4 FROM unnest($2::text[], $3::text[]) AS i (kind, value) ON CONFLICT DO NOTHING")
            .bind(account)
            .bind(kinds)
            .bind(values)
            .bind(lead_id)
            .execute(&mut *c)
            .await?;
    }
    if !event.messages.is_empty() {
        let channels: Vec<&str> = event.messages.iter().map(|m| m.channel.as_str()).collect();
        let senders: Vec<&str> = event.messages.iter().map(|m| m.from.as_str()).collect();
        let texts: Vec<&str> = event.messages.iter().map(|m| m.text.as_str()).collect();
        let ats: Vec<DateTime<Utc>> = event.messages.iter().map(|m| m.at).collect();
        // In the event's order, so that IDs (the tie-break of the transcript) follow it.
        q("INSERT INTO messages (account_id, lead_id, channel, sender, text, at) \
           SELECT $1, $2, m.channel, m.sender, m.text, m.at \
           FROM unnest($3::text[], $4::text[], $5::text[], $6::timestamptz[]) WITH ORDINALITY AS m (channel, sender, text, at, n) ORDER BY m.n")
            .bind(account)
            .bind(lead_id)
            .bind(channels)
            .bind(senders)
            .bind(texts)
            .bind(ats)
            .execute(&mut *c)
            .await?;
    }
    if let Some(consent) = &event.consent {
        insert_consent(c, account, lead_id, consent).await?;
    }
    Ok(())
}

/// An opt-in or opt-out on record.
async fn insert_consent(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    consent: &ConsentRecord,
) -> Sql<()> {
    q("INSERT INTO consents (account_id, lead_id, channel, granted, source, at, evidence) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(account)
        .bind(lead_id)
        .bind(&consent.channel)
        .bind(consent.granted)
        .bind(&consent.source)
        .bind(consent.at)
        .bind(&consent.evidence)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// The decision row and its outbox rows; returns the decision's ID.
async fn insert_decision(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    now: DateTime<Utc>,
    record: &DecisionRecord,
) -> Sql<String> {
    let decision_id = uuid::Uuid::now_v7().to_string();
    q("INSERT INTO decisions (id, account_id, lead_id, at, playbook, ruleset_hash, rules, decision, trace) \
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(&decision_id)
        .bind(account)
        .bind(lead_id)
        .bind(now)
        .bind(&record.playbook)
        .bind(&record.ruleset_hash)
        .bind(serde_json::to_string(&record.rules).unwrap_or_default())
        .bind(record.decision.to_string())
        .bind(record.trace.to_string())
        .execute(&mut *c)
        .await?;
    if !record.outbox.is_empty() {
        let ids: Vec<String> = record
            .outbox
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let kinds: Vec<&str> = record.outbox.iter().map(|(k, _)| k.as_str()).collect();
        let payloads: Vec<String> = record.outbox.iter().map(|(_, p)| p.to_string()).collect();
        q("INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at) \
           SELECT o.id, $1, $2, $3, o.kind, o.payload, $4 FROM unnest($5::text[], $6::text[], $7::text[]) AS o (id, kind, payload)")
            .bind(account)
            .bind(lead_id)
            .bind(&decision_id)
            .bind(now)
            .bind(ids)
            .bind(kinds)
            .bind(payloads)
            .execute(&mut *c)
            .await?;
    }
    Ok(decision_id)
}

/// The response (with the lead and decision IDs), recorded on the event's
/// `processed` row (inserted when the key was claimed) so that a retry gets
/// this same answer.
async fn finish_response(
    c: &mut PgConnection,
    account: &str,
    event: &LeadEvent,
    record: &DecisionRecord,
    lead_id: &str,
    decision_id: &str,
) -> Sql<Value> {
    let response = record.response_for(lead_id, decision_id);
    if let Some((source, source_id)) = &event.dedup {
        q("UPDATE processed SET response = $4 WHERE account_id = $1 AND source = $2 AND source_id = $3")
            .bind(account)
            .bind(source)
            .bind(source_id)
            .bind(response.to_string())
            .execute(&mut *c)
            .await?;
    }
    Ok(response)
}

/// The columns of a lead that a merge combines.
async fn lead_columns(c: &mut PgConnection, id: &str) -> Sql<Option<LeadColumns>> {
    let row = q("SELECT name, first_name, phone, email, language, channel, intent, playbook, fields, tags, answers FROM leads WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let mut text: [Option<String>; 8] = Default::default();
    for (i, slot) in text.iter_mut().enumerate() {
        *slot = r.try_get(i)?;
    }
    Ok(Some(LeadColumns {
        text,
        fields: serde_json::from_str(&r.try_get::<String, _>(8)?).unwrap_or_default(),
        tags: serde_json::from_str(&r.try_get::<String, _>(9)?).unwrap_or_default(),
        answers: serde_json::from_str(&r.try_get::<String, _>(10)?).unwrap_or_default(),
    }))
}

/// Moves everything of `other` onto `survivor`, and marks `other` merged.
/// Both rows are locked by the caller.
async fn merge_into(c: &mut PgConnection, survivor: &str, other: &str) -> Sql<()> {
    let (Some(keep), Some(gone)) = (
        lead_columns(c, survivor).await?,
        lead_columns(c, other).await?,
    ) else {
        return Ok(());
    };
    // A conversation that idled out does not outlive the merge as open.
    settle_idle(c, survivor).await?;
    settle_idle(c, other).await?;
    let merged = LeadColumns::merged(keep, gone);
    let (fields, tags, answers) = merged.json_columns();
    let text = merged.text;
    let [name, first_name, phone, email, language, channel, intent, playbook] = text;
    q("UPDATE leads SET name = $1, first_name = $2, phone = $3, email = $4, language = $5, channel = $6, intent = $7, playbook = $8, fields = $9, tags = $10, answers = $12 WHERE id = $11")
        .bind(name)
        .bind(first_name)
        .bind(phone)
        .bind(email)
        .bind(language)
        .bind(channel)
        .bind(intent)
        .bind(playbook)
        .bind(fields)
        .bind(tags)
        .bind(survivor)
        .bind(answers)
        .execute(&mut *c)
        .await?;
    for sql in [
        "UPDATE identities SET lead_id = $1 WHERE lead_id = $2",
        "UPDATE consents SET lead_id = $1 WHERE lead_id = $2",
        "UPDATE messages SET lead_id = $1 WHERE lead_id = $2",
        "UPDATE decisions SET lead_id = $1 WHERE lead_id = $2",
        "UPDATE outbox SET lead_id = $1 WHERE lead_id = $2",
        "UPDATE thread_events SET lead_id = $1 WHERE lead_id = $2",
    ] {
        q(sql).bind(survivor).bind(other).execute(&mut *c).await?;
    }
    // A thread a person took over stays taken over; the later window counts.
    // An open conversation stays the survivor's; without one, the other
    // lead's (with its idle time and what it asked) is kept; the later close
    // counts. Every expression reads the rows as they were before.
    q("UPDATE threads t SET state = CASE WHEN o.state = 'human' THEN 'human' ELSE t.state END, \
       queue = COALESCE(t.queue, o.queue), last_inbound_at = GREATEST(t.last_inbound_at, o.last_inbound_at), \
       idle_days = CASE WHEN t.opened_at IS NULL THEN o.idle_days ELSE t.idle_days END, \
       asked = CASE WHEN t.opened_at IS NULL THEN COALESCE(o.asked, '[]') ELSE t.asked END, \
       opened_at = COALESCE(t.opened_at, o.opened_at), \
       closed_at = GREATEST(t.closed_at, o.closed_at) \
       FROM threads o WHERE t.lead_id = $1 AND o.lead_id = $2")
        .bind(survivor)
        .bind(other)
        .execute(&mut *c)
        .await?;
    q("DELETE FROM threads WHERE lead_id = $1")
        .bind(other)
        .execute(&mut *c)
        .await?;
    q("UPDATE leads SET merged_into = $1 WHERE id = $2 OR merged_into = $2")
        .bind(survivor)
        .bind(other)
        .execute(&mut *c)
        .await?;
    Ok(())
}

async fn apply_event(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    event: &LeadEvent,
    now: DateTime<Utc>,
) -> Sql<()> {
    let r = q("SELECT fields, tags, answers FROM leads WHERE id = $1")
        .bind(lead_id)
        .fetch_one(&mut *c)
        .await?;
    let (fields, tags, answers) = event.merge_columns(
        &r.try_get::<String, _>(0)?,
        &r.try_get::<String, _>(1)?,
        &r.try_get::<String, _>(2)?,
    );
    if let Some(answers) = answers {
        q("UPDATE leads SET answers = $1 WHERE id = $2")
            .bind(answers)
            .bind(lead_id)
            .execute(&mut *c)
            .await?;
    }
    q("UPDATE leads SET name = COALESCE($1, name, $13), first_name = COALESCE($2, first_name), phone = COALESCE($3, phone), \
       email = COALESCE($4, email), language = COALESCE($5, language), channel = COALESCE(channel, $6), \
       intent = COALESCE($7, intent), playbook = COALESCE($8, playbook), fields = $9, tags = $10, updated_at = $11 WHERE id = $12")
        .bind(&event.name)
        .bind(&event.first_name)
        .bind(&event.phone)
        .bind(&event.email)
        .bind(&event.language)
        .bind(&event.channel)
        .bind(&event.intent)
        .bind(&event.playbook)
        .bind(fields)
        .bind(tags)
        .bind(now)
        .bind(lead_id)
        .bind(&event.profile_name)
        .execute(&mut *c)
        .await?;
    insert_rows(c, account, lead_id, event).await
}

async fn transcript_of(c: &mut PgConnection, lead_id: &str) -> Sql<Vec<TranscriptMessage>> {
    let rows =
        q("SELECT channel, sender, text, at FROM messages WHERE lead_id = $1 ORDER BY at, id")
            .bind(lead_id)
            .fetch_all(&mut *c)
            .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(TranscriptMessage {
            channel: r.try_get(0)?,
            from: r.try_get(1)?,
            text: r.try_get(2)?,
            at: r.try_get(3)?,
        });
    }
    Ok(out)
}

pub(super) async fn load_state(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    created: bool,
) -> Sql<LeadState> {
    let consent: bool = q("SELECT granted FROM consents WHERE lead_id = $1 AND channel = 'whatsapp' ORDER BY at DESC, id DESC LIMIT 1")
        .bind(lead_id)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(false);
    let transcript = transcript_of(c, lead_id).await?;
    let thread = q("SELECT state, last_inbound_at, opened_at, closed_at, idle_days, asked FROM threads WHERE lead_id = $1")
        .bind(lead_id)
        .fetch_optional(&mut *c)
        .await?;
    let (human, last_inbound_at, opened_at, closed_at, idle_days, asked) = match thread {
        Some(r) => (
            r.try_get::<String, _>(0)? == "human",
            r.try_get::<Option<DateTime<Utc>>, _>(1)?,
            r.try_get::<Option<DateTime<Utc>>, _>(2)?,
            r.try_get::<Option<DateTime<Utc>>, _>(3)?,
            r.try_get::<Option<i32>, _>(4)?.map(i64::from),
            r.try_get::<String, _>(5)?,
        ),
        None => (false, None, None, None, None, "[]".to_string()),
    };
    let (thread, _) = super::conversation(
        opened_at,
        closed_at,
        idle_days,
        transcript.iter().map(|m| m.at).max(),
        serde_json::from_str(&asked).unwrap_or_default(),
        Utc::now(),
    );
    let keys = lead_marketing_keys(c, lead_id).await?;
    let marketing_opt_out = marketing_opted_out(c, account, &keys).await?;
    let r = q("SELECT name, first_name, phone, email, language, channel, intent, playbook, fields, tags, answers FROM leads WHERE id = $1")
        .bind(lead_id)
        .fetch_one(&mut *c)
        .await?;
    let lead = Lead {
        name: r.try_get(0)?,
        first_name: r.try_get(1)?,
        phone: r.try_get(2)?,
        email: r.try_get(3)?,
        language: r.try_get(4)?,
        channel: r.try_get(5)?,
        intent: r.try_get(6)?,
        playbook: r.try_get(7)?,
        consent: Consent { whatsapp: consent },
        fields: serde_json::from_str(&r.try_get::<String, _>(8)?).unwrap_or_default(),
        tags: serde_json::from_str(&r.try_get::<String, _>(9)?).unwrap_or_default(),
        transcript,
        answers: serde_json::from_str(&r.try_get::<String, _>(10)?).unwrap_or_default(),
    };
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

/// Flags the thread of a lead WhatsApp could not reach, and sends the lead
/// record to the account's fallback endpoints (an SMS or email provider),
/// under the failed message's decision, with what failed. The caller holds
/// the lead's lock and the message's row.
async fn flag_thread(
    c: &mut PgConnection,
    outbox_id: &str,
    flag: &Flag,
    fallback: &[String],
) -> Sql<()> {
    let (code, reason) = (flag.code, flag.reason.as_str());
    let now = Utc::now();
    q(
        "UPDATE threads SET flag = 'delivery_failed', flag_reason = $1, updated_at = $2 \
       WHERE lead_id = (SELECT lead_id FROM outbox WHERE id = $3)",
    )
    .bind(reason)
    .bind(now)
    .bind(outbox_id)
    .execute(&mut *c)
    .await?;
    if fallback.is_empty() {
        return Ok(());
    }
    let r = q("SELECT account_id, lead_id FROM outbox WHERE id = $1")
        .bind(outbox_id)
        .fetch_one(&mut *c)
        .await?;
    let (account, lead_id): (String, String) = (r.try_get(0)?, r.try_get(1)?);
    for endpoint in fallback {
        let payload = super::queues::fallback_payload(endpoint, outbox_id, code, reason);
        q("INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at, updated_at) \
           SELECT $1, account_id, lead_id, decision_id, 'notify', $2, $3, $3 FROM outbox WHERE id = $4")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(payload.to_string())
            .bind(now)
            .bind(outbox_id)
            .execute(&mut *c)
            .await?;
    }
    let text = super::queues::fallback_text(reason, fallback);
    trail(c, &account, &lead_id, SYSTEM_ACTOR, "fallback", Some(&text)).await
}

/// The marketing opt-out Meta reported for a lead (131050): on the
/// WhatsApp ID the message went to, and in the lead's consent history.
async fn marketing_opt_out(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    opt_out: &OptOut,
) -> Sql<()> {
    let now = Utc::now();
    let keys = match &opt_out.wa_id {
        Some(wa_id) => vec![wa_id.clone()],
        None => lead_marketing_keys(c, lead_id).await?,
    };
    for key in &keys {
        upsert_marketing(c, account, key, true, now, outbox::OPT_OUT_SOURCE).await?;
    }
    insert_consent(c, account, lead_id, &opt_out.consent(now)).await
}

/// Keeps a WhatsApp user's marketing preference unless a later one is on record.
async fn upsert_marketing(
    c: &mut PgConnection,
    account: &str,
    wa_id: &str,
    opted_out: bool,
    at: DateTime<Utc>,
    source: &str,
) -> Sql<bool> {
    let changed = q("INSERT INTO marketing_preferences (account_id, wa_id, opted_out, at, source) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (account_id, wa_id) DO UPDATE SET opted_out = excluded.opted_out, at = excluded.at, source = excluded.source \
         WHERE excluded.at >= marketing_preferences.at")
        .bind(account)
        .bind(wa_id)
        .bind(opted_out)
        .bind(at)
        .bind(source)
        .execute(&mut *c)
        .await?
        .rows_affected();
    Ok(changed == 1)
}

/// A WhatsApp user's marketing preference (see [`super::Store::record_marketing`]).
/// The identities' locks and the lead's row are taken first, as in every
/// write that finds a lead by its identities: an event for that person
/// meanwhile decides on the preference or is decided before it.
async fn record_marketing(
    c: &mut PgConnection,
    account: &str,
    wa_id: &str,
    opted_out: bool,
    at: DateTime<Utc>,
    source: &str,
    evidence: Option<&str>,
) -> Sql<()> {
    let identities = super::wa_identities(wa_id);
    let found = lock_leads(c, account, &identities).await?;
    upsert_marketing(c, account, wa_id, opted_out, at, source).await?;
    if let Some((lead_id, _)) = found.into_iter().next() {
        let consent = ConsentRecord::marketing(!opted_out, source, at, evidence);
        insert_consent(c, account, &lead_id, &consent).await?;
    }
    Ok(())
}

/// Queues the approved template in place of message `id`, which the closed
/// window refused; false when there is no template or one was queued already.
/// The caller holds the lead's lock, so two instances cannot both queue one.
async fn queue_fallback(c: &mut PgConnection, id: &str, payload: &Value) -> Sql<bool> {
    let exists = q("SELECT id FROM outbox WHERE replaces = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    let Some(payload) = outbox::template_in_place(payload).filter(|_| exists.is_none()) else {
        return Ok(false);
    };
    q("INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at, automated, replaces, updated_at) \
       SELECT $1, account_id, lead_id, decision_id, kind, $2, $3, automated, id, $3 FROM outbox WHERE id = $4")
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(payload.to_string())
        .bind(Utc::now())
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(true)
}

/// The outbox message a status is about: (id, lead ID), unlocked.
async fn status_target(
    c: &mut PgConnection,
    account: &str,
    status: &StatusRecord,
) -> Sql<Option<(String, String)>> {
    // Our own ID, echoed from biz_opaque_callback_data, finds the message
    // even when the status comes before we recorded Meta's answer.
    if let Some(id) = &status.outbox_id {
        let row = q("SELECT id, lead_id FROM outbox WHERE id = $1 AND account_id = $2 AND kind = 'whatsapp'")
            .bind(id)
            .bind(account)
            .fetch_optional(&mut *c)
            .await?;
        if let Some(r) = row {
            return Ok(Some((r.try_get(0)?, r.try_get(1)?)));
        }
    }
    let row = q("SELECT id, lead_id FROM outbox WHERE message_id = $1 AND account_id = $2")
        .bind(&status.message_id)
        .bind(account)
        .fetch_optional(&mut *c)
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

async fn apply_status(
    c: &mut PgConnection,
    account: &str,
    status: &StatusRecord,
    fallback: &[String],
) -> Sql<StatusApplied> {
    // The same status arriving at two instances: the second waits here and inserts nothing.
    let new = q("INSERT INTO whatsapp_statuses (account_id, message_id, status, at, recipient, errors, outbox_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING")
        .bind(account)
        .bind(&status.message_id)
        .bind(status.status.as_str())
        .bind(status.at)
        .bind(&status.recipient)
        .bind(status.errors.to_string())
        .bind(&status.outbox_id)
        .execute(&mut *c)
        .await?
        .rows_affected()
        == 1;
    if !new {
        return Ok(StatusApplied::default());
    }
    let Some((id, lead_id)) = status_target(c, account, status).await? else {
        return Ok(StatusApplied {
            new: true,
            ..StatusApplied::default()
        });
    };
    // The lead first, then its message (the order every write keeps).
    lock_survivor(c, account, &lead_id).await?;
    let r = q("SELECT state, lead_id, delivery, payload FROM outbox WHERE id = $1 FOR UPDATE")
        .bind(&id)
        .fetch_one(&mut *c)
        .await?;
    let state: String = r.try_get(0)?;
    let lead_id: String = r.try_get(1)?;
    let delivery: Option<String> = r.try_get(2)?;
    let payload = json_text(&r.try_get::<String, _>(3)?);
    let now = Utc::now();
    let mut applied = StatusApplied {
        outbox_id: Some(id.clone()),
        new: true,
        fell_back: false,
        lead_id: Some(lead_id.clone()),
    };
    if status.status != DeliveryStatus::Failed {
        // Meta has it: a send we were unsure of, or were about to retry, is done.
        q(
            "UPDATE outbox SET message_id = COALESCE(message_id, $1), delivery = $2, \
           state = CASE WHEN state IN ('sending', 'pending') THEN 'sent' ELSE state END, \
           lease_owner = CASE WHEN state IN ('sending', 'pending') THEN NULL ELSE lease_owner END, \
           next_attempt = NULL, updated_at = $3 WHERE id = $4",
        )
        .bind(&status.message_id)
        .bind(status.furthest(delivery))
        .bind(now)
        .bind(&id)
        .execute(&mut *c)
        .await?;
        return Ok(applied);
    }
    let _ = state;
    let failure = status.failure(&payload);
    q("UPDATE outbox SET message_id = COALESCE(message_id, $1), delivery = 'failed', state = 'failed', \
       error_code = $2, error = $3, lease_owner = NULL, updated_at = $4 WHERE id = $5")
        .bind(&status.message_id)
        .bind(failure.code)
        .bind(&failure.error)
        .bind(now)
        .bind(&id)
        .execute(&mut *c)
        .await?;
    applied.fell_back = carry_out(c, account, &lead_id, &id, &failure.effects, fallback).await?;
    Ok(applied)
}

/// Does what the end of outbox message `id` of `lead_id` sets off; true
/// when a template was queued in its place. The caller holds the lead's
/// lock (and the identity's, for an identity it adds) and the message's row.
async fn carry_out(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    id: &str,
    effects: &Effects,
    fallback: &[String],
) -> Sql<bool> {
    if let Some(wa_id) = &effects.identity {
        q("INSERT INTO identities (account_id, kind, value, lead_id) VALUES ($1, 'whatsapp', $2, $3) ON CONFLICT DO NOTHING")
            .bind(account)
            .bind(wa_id)
            .bind(lead_id)
            .execute(&mut *c)
            .await?;
    }
    let fell_back = match &effects.template {
        Some(payload) => queue_fallback(c, id, payload).await?,
        None => false,
    };
    if let Some(opt_out) = &effects.opt_out {
        marketing_opt_out(c, account, lead_id, opt_out).await?;
    }
    if let Some(flag) = effects.flag.as_ref().filter(|_| !fell_back) {
        flag_thread(c, id, flag, fallback).await?;
    }
    Ok(fell_back)
}

async fn finish_outbox(
    c: &mut PgConnection,
    owner: &str,
    item: &OutboxItem,
    outcome: &SendOutcome,
    fallback: &[String],
) -> Sql<bool> {
    // Meta's ID for the user becomes an identity below: its lock comes first,
    // as in every write that adds identities.
    if let SendOutcome::Sent {
        wa_id: Some(wa_id), ..
    } = outcome
    {
        q("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(&item.account, "whatsapp", wa_id))
            .execute(&mut *c)
            .await?;
    }
    lock_survivor(c, &item.account, &item.lead_id).await?;
    let held = q("SELECT state, lease_owner, lead_id FROM outbox WHERE id = $1 FOR UPDATE")
        .bind(&item.id)
        .fetch_optional(&mut *c)
        .await?;
    let Some(held) = held else {
        return Ok(false);
    };
    let state: String = held.try_get(0)?;
    let lease_owner: Option<String> = held.try_get(1)?;
    // Where the message is now: a merge may have moved it to another lead.
    let lead_id: String = held.try_get(2)?;
    // A status webhook settled it meanwhile, or the lease went to another worker.
    if state != "sending" || lease_owner.as_deref() != Some(owner) {
        return Ok(false);
    }
    let now = Utc::now();
    let plan = outcome.plan(item, now);
    q("UPDATE outbox SET state = $1, message_id = COALESCE($2, message_id), delivery = COALESCE(delivery, $3), \
       next_attempt = COALESCE($4, next_attempt), \
       error_code = CASE WHEN $5 THEN $6 ELSE error_code END, error = CASE WHEN $7 THEN $8 ELSE error END, \
       attempts = CASE WHEN $9 THEN attempts ELSE attempts - 1 END, lease_owner = NULL, lease_until = $10, \
       sending_since = CASE WHEN $10 IS NULL THEN NULL ELSE sending_since END, updated_at = $11 WHERE id = $12")
        .bind(plan.state)
        .bind(&plan.message_id)
        .bind(plan.delivery)
        .bind(plan.next_attempt)
        .bind(plan.code.is_some())
        .bind(plan.code.flatten())
        .bind(plan.error.is_some())
        .bind(plan.error.as_ref().and_then(Option::as_deref))
        .bind(plan.counts)
        .bind(plan.grace_from)
        .bind(now)
        .bind(&item.id)
        .execute(&mut *c)
        .await?;
    carry_out(
        c,
        &item.account,
        &lead_id,
        &item.id,
        &plan.effects,
        fallback,
    )
    .await?;
    Ok(true)
}

/// Rows of `sql` (bound to the lead's ID).
async fn rows_of(c: &mut PgConnection, sql: &'static str, lead_id: &str) -> Sql<Vec<PgRow>> {
    q(sql).bind(lead_id).fetch_all(&mut *c).await
}

pub(super) fn text_or_null(v: Option<String>) -> Value {
    v.map(Value::String).unwrap_or(Value::Null)
}

/// Everything about a lead, as the API shows it (the same record as SQLite's).
async fn lead_record(c: &mut PgConnection, account: &str, id: &str) -> Sql<Option<LeadRecord>> {
    let Some(id) = survivor(c, account, id).await? else {
        return Ok(None);
    };
    let r = q("SELECT created_at, updated_at, name, first_name, phone, email, language, channel, intent, playbook, fields, tags, answers FROM leads WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut *c)
        .await?;
    let mut lead = LeadRecord {
        id: id.clone(),
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        name: r.try_get("name")?,
        first_name: r.try_get("first_name")?,
        phone: r.try_get("phone")?,
        email: r.try_get("email")?,
        language: r.try_get("language")?,
        channel: r.try_get("channel")?,
        intent: r.try_get("intent")?,
        playbook: r.try_get("playbook")?,
        fields: view::column(r.try_get("fields")?),
        tags: view::column(r.try_get("tags")?),
        answers: view::column(r.try_get("answers")?),
        marketing_opt_out: false,
        identities: Vec::new(),
        consents: Vec::new(),
        transcript: Vec::new(),
        thread: None,
        decisions: Vec::new(),
        outbox: Vec::new(),
    };
    for r in rows_of(
        c,
        "SELECT kind, value FROM identities WHERE lead_id = $1 ORDER BY kind, value",
        &id,
    )
    .await?
    {
        lead.identities.push(Identity {
            kind: r.try_get(0)?,
            value: r.try_get(1)?,
        });
    }
    for r in rows_of(
        c,
        "SELECT channel, granted, source, at, evidence FROM consents WHERE lead_id = $1 ORDER BY id",
        &id,
    )
    .await?
    {
        lead.consents.push(ConsentEntry {
            channel: r.try_get(0)?,
            granted: r.try_get(1)?,
            source: r.try_get(2)?,
            at: r.try_get(3)?,
            evidence: r.try_get(4)?,
        });
    }
    for r in rows_of(
        c,
        "SELECT channel, sender, text, at FROM messages WHERE lead_id = $1 ORDER BY at, id",
        &id,
    )
    .await?
    {
        lead.transcript.push(TranscriptEntry {
            channel: r.try_get(0)?,
            from: r.try_get(1)?,
            text: r.try_get(2)?,
            at: r.try_get(3)?,
        });
    }
    for r in rows_of(
        c,
        "SELECT id, at, playbook, ruleset_hash, decision, trace FROM decisions WHERE lead_id = $1 ORDER BY at, id",
        &id,
    )
    .await?
    {
        lead.decisions.push(StoredDecision {
            id: r.try_get("id")?,
            at: r.try_get("at")?,
            playbook: r.try_get("playbook")?,
            ruleset: r.try_get("ruleset_hash")?,
            decision: json_text(r.try_get("decision")?),
            trace: json_text(r.try_get("trace")?),
        });
    }
    if let Some(r) = rows_of(
        c,
        "SELECT t.state, t.queue, t.last_inbound_at, t.flag, t.flag_reason, t.queue_state, t.queued_at, \
           CASE WHEN t.assignee LIKE 'agent:%' THEN substr(t.assignee, 7) ELSE (SELECT o.name FROM operators o WHERE o.id = t.assignee) END, \
           t.assigned_at, t.picked_up_at, t.opened_at, t.closed_at, t.idle_days FROM threads t WHERE t.lead_id = $1",
        &id,
    )
    .await?
    .first()
    {
        lead.thread = Some(ThreadView {
            state: r.try_get(0)?,
            queue: r.try_get(1)?,
            last_inbound_at: r.try_get(2)?,
            flag: r.try_get(3)?,
            flag_reason: r.try_get(4)?,
            queue_state: r.try_get(5)?,
            queued_at: r.try_get(6)?,
            assignee: r.try_get(7)?,
            assigned_at: r.try_get(8)?,
            picked_up_at: r.try_get(9)?,
            open: false,
            opened_at: r.try_get(10)?,
            closed_at: r.try_get(11)?,
            idle_days: r.try_get::<Option<i32>, _>(12)?.map(i64::from),
        });
    }
    for r in rows_of(
        c,
        "SELECT id, kind, payload, state, attempts, created_at, updated_at, next_attempt, message_id, delivery, error_code, error, replaces \
         FROM outbox WHERE lead_id = $1 ORDER BY created_at, id",
        &id,
    )
    .await?
    {
        lead.outbox.push(OutboxEntry {
            id: r.try_get("id")?,
            kind: OutboxKind::parse(r.try_get("kind")?)
                .map_err(|e| sqlx_core::Error::Decode(Box::new(e)))?,
            payload: json_text(r.try_get("payload")?),
            state: r.try_get("state")?,
            attempts: r.try_get("attempts")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            next_attempt: r.try_get("next_attempt")?,
            message_id: r.try_get("message_id")?,
            delivery: r.try_get("delivery")?,
            error_code: r.try_get("error_code")?,
            error: r.try_get("error")?,
            replaces: r.try_get("replaces")?,
        });
    }
    lead.marketing_opt_out = marketing_opted_out(c, account, &lead.marketing_keys()).await?;
    Ok(Some(lead.settle(Utc::now())))
}

/// Writes one entry of the thread's trail.
pub(super) async fn trail(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    actor: &str,
    kind: &str,
    text: Option<&str>,
) -> Sql<()> {
    q("INSERT INTO thread_events (account_id, lead_id, at, actor, kind, text) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(account)
        .bind(lead_id)
        .bind(Utc::now())
        .bind(actor)
        .bind(kind)
        .bind(text)
        .execute(&mut *c)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_keep_their_parts_apart() {
        assert_eq!(
            lock_key("acme", "phone", "+911"),
            lock_key("acme", "phone", "+911")
        );
        assert_ne!(
            lock_key("acme", "phone", "+911"),
            lock_key("acme", "phon", "e+911")
        );
        assert_ne!(
            lock_key("acme", "phone", "+911"),
            lock_key("other", "phone", "+911")
        );
    }

    #[test]
    fn times_read_back_as_sqlite_writes_them() {
        let t = DateTime::parse_from_rfc3339("2027-03-14T10:00:00.123456789+05:30")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(time_text(t), "2027-03-14T04:30:00.123456Z");
    }
}
