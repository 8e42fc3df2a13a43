//! The store: leads with their identities, consents, transcripts, decisions,
//! threads, the outbox and processed source IDs. SQL lives here only. Every
//! write that must happen together happens in one transaction: a lead's
//! event, its decision, the outbox rows it creates and the record that its
//! source ID was processed commit together or not at all.
//!
//! Callers use [`Store`]; its methods are the store interface, written down
//! once as the traits [`Backend`], [`inbox::InboxBackend`] and
//! [`queues::QueueBackend`]. Behind it is one dialect, chosen by the
//! database URL's scheme: SQLite ([`sqlite`]) for one process, or PostgreSQL
//! ([`postgres`]) for one or many `handoff serve` instances on one database.
//! Both dialects implement all three, so both answer the same calls.

use crate::engine::lead::{Answer, Consent, TranscriptMessage};
use crate::engine::{Lead, Thread};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

pub mod backend;
mod outbox;
pub mod payload;
pub mod postgres;
pub mod sqlite;
pub mod view;

pub use backend::Backend;
pub use view::LeadRecord;

/// A store error, by what went wrong; the server answers 500 and logs it
/// (a conflict, 409).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL cannot be used.
    #[error("{0}")]
    Url(String),
    /// The database cannot be reached or opened, or its writer has stopped.
    #[error("{0}")]
    Unavailable(String),
    /// The schema could not be brought up to date.
    #[error("{0}")]
    Migration(String),
    /// A write the stored data refuses (an operator's email in use).
    #[error("{0}")]
    Conflict(String),
    /// A statement failed.
    #[error("{0}")]
    Database(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// The store behind every request.
#[derive(Clone, Debug)]
pub struct Store {
    dialect: Dialect,
}

/// The database behind the store, chosen by the URL's scheme.
#[derive(Clone, Debug)]
enum Dialect {
    Sqlite(Arc<sqlite::Sqlite>),
    Postgres(Arc<postgres::Postgres>),
}

/// Calls the same [`Backend`] method on whichever dialect the store has.
macro_rules! on_backend {
    ($store:expr, $db:ident => $call:expr) => {
        match &$store.dialect {
            $crate::store::Dialect::Sqlite($db) => $call,
            $crate::store::Dialect::Postgres($db) => $call,
        }
    };
}

// After the macro: the inbox's and the queues' methods dispatch with it too.
pub mod inbox;
pub mod queues;

/// An event that adds to a lead: who (identities), what they said, what they
/// consented to, and the source ID that makes it safe to receive twice.
#[derive(Clone, Debug, Default)]
pub struct LeadEvent {
    /// `(kind, value)`: `phone` (E.164), `email`, `whatsapp`, `instagram`, `external`.
    pub identities: Vec<(String, String)>,
    pub name: Option<String>,
    /// The name on the person's WhatsApp profile: it names a lead that has
    /// no name yet, and never replaces a name the person gave.
    pub profile_name: Option<String>,
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
    /// A digest of the request that carried `dedup`: a later event with the
    /// same pair and another digest is refused ([`Recorded::KeyReused`]).
    pub fingerprint: Option<String>,
    /// When the user last wrote on WhatsApp (opens the 24-hour window).
    pub inbound_at: Option<DateTime<Utc>>,
    /// A person on the business's side wrote (an echo from the business's
    /// phone): automation pauses on the thread.
    pub human_activity: bool,
    /// Form and lead-ad answers no field is declared for, in the order asked.
    pub answers: Vec<Answer>,
    /// The WhatsApp message the lead wrote, when the event is one: it goes
    /// to an AI agent the thread is assigned to (`message.received`).
    pub inbound: Option<InboundMessage>,
}

/// A message the lead wrote, as the people on the thread receive it.
#[derive(Clone, Debug, Serialize)]
pub struct InboundMessage {
    /// Meta's message ID (`wamid....`).
    pub id: String,
    pub channel: String,
    /// Meta's message type: `text`, `image`, `button`, ...
    pub kind: String,
    /// The message as its transcript line reads.
    pub text: String,
    pub at: DateTime<Utc>,
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
    /// The conversation on the lead's thread, its idle time applied.
    pub thread: Thread,
    /// The lead's WhatsApp user stopped marketing messages.
    pub marketing_opt_out: bool,
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
    pub outbox: Vec<(OutboxKind, Value)>,
    /// The queue the thread moves to, and whether a person takes it over.
    pub queue: Option<String>,
    pub takeover: bool,
    /// Whether the account gives `queue` members: the thread then waits in
    /// it to be assigned (see [`queues`]).
    pub managed: bool,
    /// A handoff message is queued: a conversation opens unless one is open.
    pub opens_thread: bool,
    /// The playbook's `idle` days, kept with a conversation it opens.
    pub idle_days: u32,
    /// The fields `ask` reported: not reported again in this conversation.
    pub asked: Vec<String>,
    /// Whether the event made a new lead: the answer says so.
    pub created: bool,
}

impl DecisionRecord {
    /// The response to give (and to replay for a duplicate), naming the
    /// lead and the decision.
    pub(crate) fn response_for(&self, lead_id: &str, decision_id: &str) -> Value {
        let result = view::LeadResult {
            created: self.created,
            decision: &self.decision,
            lead_id,
            decision_id,
        };
        // Strings, a bool and a JSON value serialize without fail.
        serde_json::to_value(result).unwrap_or(Value::Null)
    }
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
    /// The key was first used by a different request: nothing was done.
    KeyReused,
}

/// What storing a webhook event its sender identifies did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    New,
    /// The same ID with the same payload: a retry, nothing stored.
    Duplicate,
    /// The same ID with another payload: refused, nothing stored.
    Differs,
}

impl Enqueued {
    /// From whether the insert stored a row and, when not, the payload
    /// stored under the ID.
    pub(crate) fn of(inserted: bool, stored: Option<&str>, payload: &str) -> Enqueued {
        match (inserted, stored) {
            (true, _) => Enqueued::New,
            (false, Some(old)) if old != payload => Enqueued::Differs,
            (false, _) => Enqueued::Duplicate,
        }
    }
}

/// Where a webhook event goes after an attempt at `now`: `done`, `failed`
/// (given up), or `pending` again once `retry_in` has passed.
pub(crate) fn webhook_end(
    error: Option<&str>,
    give_up: bool,
    retry_in: Duration,
    now: DateTime<Utc>,
) -> (&'static str, Option<DateTime<Utc>>) {
    match (error, give_up) {
        (None, _) => ("done", None),
        (Some(_), true) => ("failed", None),
        (Some(_), false) => (
            "pending",
            Some(now + chrono::Duration::from_std(retry_in).unwrap_or_default()),
        ),
    }
}

/// Whether a stored key's request is another one than `event`'s: both
/// have a digest and they differ (keys stored without one replay).
pub(crate) fn key_reused(event: &LeadEvent, stored: Option<&str>) -> bool {
    matches!((event.fingerprint.as_deref(), stored), (Some(new), Some(old)) if new != old)
}

/// A delivery status for a message we sent.
#[derive(Clone, Debug)]
pub struct StatusRecord {
    pub message_id: String,
    pub status: crate::intake::DeliveryStatus,
    pub at: DateTime<Utc>,
    pub recipient: String,
    /// Meta's errors, as JSON.
    pub errors: Value,
    /// Our outbox ID, from `biz_opaque_callback_data`.
    pub outbox_id: Option<String>,
}

/// What sent a stored webhook event, as the `source` column keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebhookSource {
    /// Meta's WhatsApp Business Account webhooks: messages, statuses, preferences.
    Whatsapp,
    /// Meta's Instagram messaging webhooks.
    Instagram,
    /// Meta's page webhooks: a lead-ad lead to fetch from the Graph API.
    Leadgen,
    /// A web form's submission.
    Form,
    /// A voice agent's call report.
    Voice,
}

impl WebhookSource {
    /// Every source, for metrics that show each one from the start.
    pub const ALL: [WebhookSource; 5] = [
        WebhookSource::Whatsapp,
        WebhookSource::Instagram,
        WebhookSource::Leadgen,
        WebhookSource::Form,
        WebhookSource::Voice,
    ];

    /// The name stored and shown in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            WebhookSource::Whatsapp => "whatsapp",
            WebhookSource::Instagram => "instagram",
            WebhookSource::Leadgen => "leadgen",
            WebhookSource::Form => "form",
            WebhookSource::Voice => "voice",
        }
    }

    /// The source a stored name stands for.
    pub fn parse(text: &str) -> Result<WebhookSource, StoreError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| StoreError::Database(format!("unknown webhook source `{text}`")))
    }
}

impl std::fmt::Display for WebhookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an outbox row sends, as the `kind` column keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum OutboxKind {
    /// A WhatsApp message to the lead.
    Whatsapp,
    /// The lead record to an endpoint.
    Notify,
}

impl OutboxKind {
    /// The name stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Whatsapp => "whatsapp",
            OutboxKind::Notify => "notify",
        }
    }

    /// The kind a stored name stands for.
    pub fn parse(text: &str) -> Result<OutboxKind, StoreError> {
        match text {
            "whatsapp" => Ok(OutboxKind::Whatsapp),
            "notify" => Ok(OutboxKind::Notify),
            other => Err(StoreError::Database(format!(
                "unknown outbox kind `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for OutboxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A webhook event waiting to be processed.
#[derive(Clone, Debug)]
pub struct PendingWebhook {
    pub id: i64,
    pub account: String,
    pub source: WebhookSource,
    pub source_id: String,
    pub payload: Value,
    pub attempts: i64,
}

/// A message claimed from the outbox for delivery.
#[derive(Clone, Debug)]
pub struct OutboxItem {
    pub id: String,
    pub account: String,
    pub lead_id: String,
    pub kind: OutboxKind,
    pub payload: Value,
    /// Attempts so far, this one included.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
}

/// How a delivery attempt ended.
#[derive(Clone, Debug)]
pub enum SendOutcome {
    /// Accepted (Meta's message ID for WhatsApp; none for an endpoint).
    Sent {
        message_id: Option<String>,
        wa_id: Option<String>,
    },
    /// Not accepted; try again at `at`.
    Retry {
        at: DateTime<Utc>,
        code: Option<i64>,
        error: String,
    },
    /// The send may have reached Meta (a timeout, a lost answer): it waits
    /// the grace period for a status webhook before it is sent again.
    Uncertain { error: String },
    /// Will never be delivered; the thread is flagged for operators.
    Failed {
        code: Option<i64>,
        error: String,
        /// The user stopped marketing messages (131050): on record as an opt-out.
        marketing_opt_out: bool,
    },
    /// Meta says the window is closed (131047): this message fails and the
    /// approved template in `payload` is queued in its place.
    Fallback {
        code: i64,
        error: String,
        payload: Value,
    },
    /// Not sent, and never will be (a person took the thread over).
    Cancelled { reason: String },
    /// Not attempted: put back until `at` (pacing), the attempt not counted.
    Deferred { at: DateTime<Utc> },
}

/// What a status webhook changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusApplied {
    /// The outbox message it belongs to, when known.
    pub outbox_id: Option<String>,
    /// False for a redelivered status (already on record).
    pub new: bool,
    /// A template was queued in place of a message that failed with 131047.
    pub fell_back: bool,
    /// The lead the message went to, when known.
    pub lead_id: Option<String>,
}

impl Store {
    /// Opens the database at `url` and brings its schema up to date:
    /// `sqlite://PATH` (created when missing), or `postgres://` /
    /// `postgresql://` (the database must exist).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let dialect = if is_postgres_url(url) {
            Dialect::Postgres(Arc::new(postgres::Postgres::open(url).await?))
        } else {
            Dialect::Sqlite(Arc::new(sqlite::Sqlite::open(url).await?))
        };
        Ok(Store { dialect })
    }

    /// See [`Backend::ping`].
    pub async fn ping(&self) -> bool {
        on_backend!(self, db => db.ping().await)
    }

    /// See [`Backend::record`].
    pub async fn record(
        &self,
        account: &str,
        event: LeadEvent,
        decide: impl FnOnce(&LeadState) -> DecisionRecord + Send + 'static,
    ) -> Result<Recorded, StoreError> {
        on_backend!(self, db => db.record(account, event, decide).await)
    }

    /// See [`Backend::lead`].
    pub async fn lead(&self, account: &str, id: &str) -> Result<Option<LeadRecord>, StoreError> {
        on_backend!(self, db => db.lead(account, id).await)
    }

    /// See [`Backend::search`].
    pub async fn search(
        &self,
        account: &str,
        query: Option<&str>,
        limit: i64,
    ) -> Result<Vec<view::LeadSummary>, StoreError> {
        on_backend!(self, db => db.search(account, query, limit).await)
    }

    /// See [`Backend::set_thread_state`].
    pub async fn set_thread_state(
        &self,
        account: &str,
        lead_id: &str,
        human: bool,
        queue: Option<&str>,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.set_thread_state(account, lead_id, human, queue)
            .await)
    }

    /// See [`Backend::enqueue_webhooks`].
    pub async fn enqueue_webhooks(
        &self,
        account: &str,
        source: WebhookSource,
        events: &[(String, Value)],
    ) -> Result<usize, StoreError> {
        on_backend!(self, db => db.enqueue_webhooks(account, source, events).await)
    }

    /// See [`Backend::enqueue_webhook`].
    pub async fn enqueue_webhook(
        &self,
        account: &str,
        source: WebhookSource,
        source_id: &str,
        payload: &Value,
    ) -> Result<Enqueued, StoreError> {
        on_backend!(self, db => db.enqueue_webhook(account, source, source_id, payload).await)
    }

    /// See [`Backend::due_webhooks`].
    pub async fn due_webhooks(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<PendingWebhook>, StoreError> {
        on_backend!(self, db => db.due_webhooks(limit, lease).await)
    }

    /// See [`Backend::finish_webhook`].
    pub async fn finish_webhook(
        &self,
        id: i64,
        error: Option<&str>,
        give_up: bool,
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        on_backend!(self, db => db.finish_webhook(id, error, give_up, retry_in)
            .await)
    }

    /// See [`Backend::webhook_counts`].
    pub async fn webhook_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        on_backend!(self, db => db.webhook_counts().await)
    }

    /// See [`Backend::apply_status`].
    pub async fn apply_status(
        &self,
        account: &str,
        status: &StatusRecord,
        fallback: &[String],
    ) -> Result<StatusApplied, StoreError> {
        on_backend!(self, db => db.apply_status(account, status, fallback).await)
    }

    /// See [`Backend::claim_outbox`].
    pub async fn claim_outbox(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
        grace: Duration,
        max_age: Duration,
        fallbacks: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        on_backend!(self, db => db.claim_outbox(owner, limit, lease, grace, max_age, fallbacks)
            .await)
    }

    /// See [`Backend::finish_outbox`].
    pub async fn finish_outbox(
        &self,
        owner: &str,
        item: &OutboxItem,
        outcome: SendOutcome,
        fallback: &[String],
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.finish_outbox(owner, item, outcome, fallback).await)
    }

    /// See [`Backend::outbox_counts`].
    pub async fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        on_backend!(self, db => db.outbox_counts().await)
    }

    /// See [`Backend::disable_endpoint`].
    pub async fn disable_endpoint(
        &self,
        account: &str,
        endpoint: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        on_backend!(self, db => db.disable_endpoint(account, endpoint, reason)
            .await)
    }

    /// See [`Backend::disabled_endpoints`].
    pub async fn disabled_endpoints(
        &self,
        account: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        on_backend!(self, db => db.disabled_endpoints(account).await)
    }

    /// See [`Backend::record_consent`].
    pub async fn record_consent(
        &self,
        account: &str,
        kind: &str,
        value: &str,
        consent: &ConsentRecord,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.record_consent(account, kind, value, consent)
            .await)
    }
}

impl Store {
    /// See [`Backend::record_marketing`].
    pub async fn record_marketing(
        &self,
        account: &str,
        wa_id: &str,
        opted_out: bool,
        at: DateTime<Utc>,
        source: &str,
        evidence: Option<&str>,
    ) -> Result<(), StoreError> {
        on_backend!(self, db => db.record_marketing(account, wa_id, opted_out, at, source, evidence).await)
    }

    /// See [`Backend::queue_agent_reply`].
    pub async fn queue_agent_reply(
        &self,
        account: &str,
        lead_id: &str,
        agent: &str,
        payload: &Value,
        text: &str,
    ) -> Result<AgentReply, StoreError> {
        on_backend!(self, db => db.queue_agent_reply(account, lead_id, agent, payload, text).await)
    }
}

/// A database URL with any password hidden, for messages: the one after
/// the user name, and a `password=` parameter (which PostgreSQL URLs allow).
pub fn redact_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            (base, format!("?{}", params.join("&")))
        }
        None => (url, String::new()),
    };
    format!("{}{query}", redact_credentials(url))
}

fn redact_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(c) => format!(
                    "{}://{}:***@{}",
                    &url[..scheme],
                    &creds[..c],
                    &url[at + 1..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
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

impl ConsentRecord {
    /// A WhatsApp user's marketing preference, for a lead's consent history.
    pub(crate) fn marketing(
        granted: bool,
        source: &str,
        at: DateTime<Utc>,
        evidence: Option<&str>,
    ) -> ConsentRecord {
        ConsentRecord {
            channel: "whatsapp_marketing".into(),
            granted,
            source: source.to_string(),
            at,
            evidence: evidence.map(str::to_string),
        }
    }
}

/// The identities a WhatsApp ID finds a lead by: the ID, and the phone
/// number it stands for when it reads as one.
pub(crate) fn wa_identities(wa_id: &str) -> Vec<(String, String)> {
    let phone = crate::intake::wa_id_to_e164(wa_id);
    [
        Some(("whatsapp".to_string(), wa_id.to_string())),
        phone.map(|p| ("phone".to_string(), p)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The state of a lead that this event creates.
fn new_state(event: &LeadEvent, marketing_opt_out: bool) -> LeadState {
    LeadState {
        id: String::new(),
        lead: event.lead(),
        human: event.human_activity,
        last_inbound_at: event.inbound_at,
        created: true,
        thread: Thread::default(),
        marketing_opt_out,
    }
}

/// The conversation on a thread at `now`, from its columns and the time of
/// the latest message either way. An open conversation with no message for
/// its idle time is closed, as of the moment that time ran out: returned
/// second, so the caller can write it down.
pub(crate) fn conversation(
    opened_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    idle_days: Option<i64>,
    last_message: Option<DateTime<Utc>>,
    asked: Vec<String>,
    now: DateTime<Utc>,
) -> (Thread, Option<DateTime<Utc>>) {
    let Some(opened) = opened_at else {
        let thread = Thread {
            closed: closed_at,
            ..Thread::default()
        };
        return (thread, None);
    };
    let idle = chrono::Duration::days(idle_days.unwrap_or(DEFAULT_IDLE_DAYS).max(1));
    let last = last_message.map_or(opened, |m| m.max(opened));
    let expires = last + idle;
    if expires <= now {
        let thread = Thread {
            closed: Some(expires),
            ..Thread::default()
        };
        return (thread, Some(expires));
    }
    let thread = Thread {
        open: true,
        opened: Some(opened),
        closed: closed_at,
        asked,
    };
    (thread, None)
}

/// A playbook without `idle` closes conversations after this many days.
pub const DEFAULT_IDLE_DAYS: i64 = 30;

/// The WhatsApp IDs a marketing preference may be kept under for a lead:
/// its WhatsApp identities, and its phone numbers as digits (Meta's IDs are
/// the number without `+`, except where a country's numbering differs).
pub(crate) fn marketing_keys<'a>(
    identities: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let mut keys = Vec::new();
    for (kind, value) in identities {
        let key = match kind {
            "whatsapp" => value.to_string(),
            "phone" => value.trim_start_matches('+').to_string(),
            _ => continue,
        };
        if !key.is_empty() && !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The columns of a lead that a merge combines.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LeadColumns {
    /// name, first_name, phone, email, language, channel, intent, playbook.
    pub text: [Option<String>; 8],
    pub fields: Map<String, Value>,
    pub tags: Vec<String>,
    pub answers: Vec<Answer>,
}

impl LeadColumns {
    /// What two leads of one person become when merged: the survivor's
    /// values win and the other lead fills what the survivor lacks; tags
    /// are united; answers keep the order asked, the survivor's (later)
    /// answer winning for a question both answered.
    pub(crate) fn merged(keep: LeadColumns, gone: LeadColumns) -> LeadColumns {
        let mut text = keep.text;
        for (slot, theirs) in text.iter_mut().zip(gone.text) {
            if slot.is_none() {
                *slot = theirs;
            }
        }
        let mut fields = gone.fields;
        fields.extend(keep.fields);
        let mut tags = keep.tags;
        for t in gone.tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let mut answers = gone.answers;
        merge_answers(&mut answers, &keep.answers);
        LeadColumns {
            text,
            fields,
            tags,
            answers,
        }
    }

    /// `fields`, `tags` and `answers` as their columns store them.
    pub(crate) fn json_columns(&self) -> (String, String, String) {
        (
            Value::Object(self.fields.clone()).to_string(),
            serde_json::to_string(&self.tags).unwrap_or_default(),
            serde_json::to_string(&self.answers).unwrap_or_default(),
        )
    }
}

/// The fields an open conversation has asked once `asked` are asked too,
/// in the order first asked; `None` when none is new.
pub(crate) fn asked_after(thread: &Thread, asked: &[String]) -> Option<Vec<String>> {
    if asked.iter().all(|f| thread.asked.contains(f)) {
        return None;
    }
    let mut all = thread.asked.clone();
    for field in asked {
        if !all.contains(field) {
            all.push(field.clone());
        }
    }
    Some(all)
}

/// `answers` after a later event: a question answered again keeps its
/// place with the new answer; new questions follow in the order asked.
pub(crate) fn merge_answers(answers: &mut Vec<Answer>, later: &[Answer]) {
    for answer in later {
        match answers.iter_mut().find(|a| a.question == answer.question) {
            Some(existing) => existing.answer = answer.answer.clone(),
            None => answers.push(answer.clone()),
        }
    }
}

/// The outbox payload of a message the lead wrote, for the AI agent the
/// thread is assigned to: `data.message` and `data.lead`.
pub(crate) fn message_received_payload(endpoint: &str, message: &InboundMessage) -> Value {
    serde_json::json!({
        "endpoint": endpoint,
        "event": "message.received",
        "wrap": true,
        "context": {"message": message},
    })
}

/// How an AI agent's reply went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentReply {
    /// Queued for sending, as this outbox message.
    Queued { outbox_id: String },
    /// The thread is not this agent's: a person took it, or it went elsewhere.
    NotAssigned {
        assignee: Option<String>,
        human: bool,
    },
    /// The account has no such lead.
    NoLead,
}

impl LeadEvent {
    /// The columns of the lead this event creates: a null field is left
    /// out, and the decision's `playbook` is kept when the event names none.
    pub(crate) fn new_columns(&self, playbook: &str) -> LeadColumns {
        let mut fields = self.fields.clone();
        fields.retain(|_, v| !v.is_null());
        let mut answers = Vec::new();
        merge_answers(&mut answers, &self.answers);
        let playbook = (!playbook.is_empty()).then(|| playbook.to_string());
        LeadColumns {
            text: [
                self.name.clone().or_else(|| self.profile_name.clone()),
                self.first_name.clone(),
                self.phone.clone(),
                self.email.clone(),
                self.language.clone(),
                self.channel.clone(),
                self.intent.clone(),
                self.playbook.clone().or(playbook),
            ],
            fields,
            tags: unique(&self.tags),
            answers,
        }
    }

    /// A known lead's stored `fields`, `tags` and `answers` columns after
    /// this event, as stored: a later value replaces an earlier one and a
    /// null clears a field, tags are united, and answers merged (`None`
    /// when the event has none: the column stays as it is).
    pub(crate) fn merge_columns(
        &self,
        fields: &str,
        tags: &str,
        answers: &str,
    ) -> (String, String, Option<String>) {
        let answers = (!self.answers.is_empty()).then(|| {
            let mut answers: Vec<Answer> = serde_json::from_str(answers).unwrap_or_default();
            merge_answers(&mut answers, &self.answers);
            serde_json::to_string(&answers).unwrap_or_default()
        });
        let mut fields: Map<String, Value> = serde_json::from_str(fields).unwrap_or_default();
        for (k, v) in &self.fields {
            if v.is_null() {
                fields.remove(k);
            } else {
                fields.insert(k.clone(), v.clone());
            }
        }
        let mut tags: Vec<String> = serde_json::from_str(tags).unwrap_or_default();
        for t in &self.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        (
            Value::Object(fields).to_string(),
            serde_json::to_string(&tags).unwrap_or_default(),
            answers,
        )
    }

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
            name: self.name.clone().or_else(|| self.profile_name.clone()),
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
            answers: {
                let mut answers = Vec::new();
                merge_answers(&mut answers, &self.answers);
                answers
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn an_open_conversation_closes_after_its_idle_days_without_a_message() {
        let opened = at("2027-01-01T10:00:00Z");
        let asked = vec!["city".to_string()];
        // Two days in, with a message yesterday: open, asked fields kept.
        let (t, expired) = conversation(
            Some(opened),
            None,
            Some(3),
            Some(at("2027-01-02T09:00:00Z")),
            asked.clone(),
            at("2027-01-03T10:00:00Z"),
        );
        assert!(t.open && expired.is_none());
        assert_eq!(t.opened, Some(opened));
        assert_eq!(t.asked, asked);
        // Three days after the last message: closed as of then.
        let (t, expired) = conversation(
            Some(opened),
            None,
            Some(3),
            Some(at("2027-01-02T09:00:00Z")),
            asked.clone(),
            at("2027-01-05T09:00:00Z"),
        );
        assert!(!t.open && t.opened.is_none() && t.asked.is_empty());
        assert_eq!(t.closed, Some(at("2027-01-05T09:00:00Z")));
        assert_eq!(expired, t.closed);
        // No message since the opening: the opening counts; no idle given: 30 days.
        let (t, _) = conversation(
            Some(opened),
            None,
            None,
            None,
            Vec::new(),
            at("2027-01-30T09:00:00Z"),
        );
        assert!(t.open);
        let (t, _) = conversation(
            Some(opened),
            None,
            None,
            Some(at("2026-12-01T00:00:00Z")),
            Vec::new(),
            at("2027-01-31T10:00:00Z"),
        );
        assert!(!t.open, "an older transcript line does not extend it");
        // Never opened: the last closing is all there is.
        let closed = at("2026-12-24T18:00:00Z");
        let (t, expired) = conversation(None, Some(closed), None, None, asked, closed);
        assert!(!t.open && expired.is_none());
        assert_eq!(t.closed, Some(closed));
    }

    #[test]
    fn marketing_keys_are_whatsapp_ids_and_phone_digits_once_each() {
        let keys = marketing_keys(
            [
                ("phone", "+919812345678"),
                ("whatsapp", "919812345678"),
                ("email", "a@example.com"),
                ("whatsapp", "5511987654321"),
            ]
            .into_iter(),
        );
        assert_eq!(keys, vec!["919812345678", "5511987654321"]);
    }

    #[test]
    fn a_later_event_replaces_fields_clears_nulls_and_unites_tags() {
        let event = LeadEvent {
            fields: serde_json::from_value(serde_json::json!({"city": "Pune", "budget": null}))
                .unwrap(),
            tags: vec!["vip".into(), "wedding".into()],
            ..LeadEvent::default()
        };
        let (fields, tags, answers) = event.merge_columns(
            r#"{"city":"Delhi","budget":"5L","guests":200}"#,
            r#"["wedding"]"#,
            "[]",
        );
        assert_eq!(fields, r#"{"city":"Pune","guests":200}"#);
        assert_eq!(tags, r#"["wedding","vip"]"#);
        assert_eq!(answers, None, "no answers: the column stays");
    }

    #[test]
    fn an_open_conversation_adds_only_the_fields_it_had_not_asked() {
        let thread = Thread {
            open: true,
            asked: vec!["city".into()],
            ..Thread::default()
        };
        assert_eq!(asked_after(&thread, &["city".into()]), None);
        assert_eq!(
            asked_after(&thread, &["date".into(), "city".into()]),
            Some(vec!["city".to_string(), "date".to_string()])
        );
    }

    #[test]
    fn a_later_answer_keeps_its_place_and_new_questions_follow() {
        let a = |q: &str, x: &str| Answer {
            question: q.into(),
            answer: x.into(),
        };
        let mut answers = vec![a("venue", "beach"), a("diet", "jain")];
        merge_answers(
            &mut answers,
            &[a("source", "instagram"), a("venue", "palace")],
        );
        assert_eq!(
            answers,
            vec![
                a("venue", "palace"),
                a("diet", "jain"),
                a("source", "instagram")
            ]
        );
    }
}
