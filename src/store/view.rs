//! A lead as the API, the inbox and the CRM see it. Each dialect reads the
//! rows into these types; what the rows mean together (the conversation's
//! state at the time of reading, the keys a marketing preference is kept
//! under) and the record's JSON shape are written here, once.

use super::OutboxKind;
use crate::engine::lead::Answer;
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// Everything about a lead: `GET /v1/leads/{id}`, the inbox's thread page,
/// and the record endpoints receive.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LeadRecord {
    pub id: String,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "optional_time")]
    pub updated_at: Option<DateTime<Utc>>,
    pub name: Option<String>,
    pub first_name: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub language: Option<String>,
    /// The channel the lead first came in by.
    pub channel: Option<String>,
    pub intent: Option<String>,
    /// The playbook that first decided the lead.
    pub playbook: Option<String>,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    pub tags: Vec<String>,
    /// Form and lead-ad answers no field is declared for, in the order asked.
    pub answers: Vec<Answer>,
    /// The lead's WhatsApp user stopped marketing messages (Meta's
    /// `user_preferences`, or send error 131050); marketing templates are
    /// not sent.
    pub marketing_opt_out: bool,
    pub identities: Vec<Identity>,
    /// Oldest first; the latest WhatsApp one is in force.
    pub consents: Vec<ConsentEntry>,
    /// Oldest first.
    pub transcript: Vec<TranscriptEntry>,
    /// The lead's WhatsApp thread; none before a handoff opened one.
    pub thread: Option<ThreadView>,
    /// Oldest first.
    pub decisions: Vec<StoredDecision>,
    /// Oldest first.
    pub outbox: Vec<OutboxEntry>,
}

/// The answer to `POST /v1/leads`, kept with the event's source ID and
/// replayed unchanged for a repeated `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LeadResult<'a> {
    /// Whether the event made a new lead (else it reached an existing one).
    pub created: bool,
    /// The decision, or why there is none.
    #[schema(value_type = crate::ruleset::DecisionOrError)]
    pub decision: &'a Value,
    /// The lead (the survivor, when leads merged).
    pub lead_id: &'a str,
    pub decision_id: &'a str,
}

/// A lead as a search lists it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LeadSummary {
    pub id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub channel: Option<String>,
    pub intent: Option<String>,
    pub playbook: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A way the lead is known: a phone, an email, a WhatsApp or Instagram ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Identity {
    /// `phone`, `email`, `whatsapp`, `instagram` or `external`.
    pub kind: String,
    pub value: String,
}

/// One opt-in or opt-out on record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ConsentRecord)]
pub struct ConsentEntry {
    /// `whatsapp`, or `whatsapp_marketing` from WhatsApp user preferences.
    pub channel: String,
    /// `true` an opt-in, `false` an opt-out.
    pub granted: bool,
    /// Where it came from: `api`, a channel, `voice call <id>`, and so on.
    pub source: String,
    #[serde(serialize_with = "time")]
    pub at: DateTime<Utc>,
    pub evidence: Option<String>,
}

/// One message of the lead's conversation, either way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TranscriptEntry {
    pub channel: String,
    /// `lead`, `business`, `operator:<name>`, or `agent:<endpoint>` for an
    /// AI agent's reply.
    pub from: String,
    pub text: String,
    #[serde(serialize_with = "time")]
    pub at: DateTime<Utc>,
}

/// The thread as stored, and its conversation as of the reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Thread)]
pub struct ThreadView {
    /// `automated` or `human`.
    pub state: String,
    pub queue: Option<String>,
    /// The lead's last WhatsApp message (it opens the 24-hour window).
    #[serde(serialize_with = "optional_time")]
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// `delivery_failed` when a WhatsApp message to the lead failed for
    /// good: an operator should reach them another way.
    pub flag: Option<String>,
    /// Why, with Meta's code.
    pub flag_reason: Option<String>,
    /// In a queue with members: `waiting` (nobody has it yet), `assigned`,
    /// or `done` (closed; a new message from the lead puts it back). Null in
    /// a queue without members.
    pub queue_state: Option<String>,
    /// When it entered its queue: the escalation clock starts here.
    #[serde(serialize_with = "optional_time")]
    pub queued_at: Option<DateTime<Utc>>,
    /// The member's name, or the AI agent's endpoint.
    pub assignee: Option<String>,
    #[serde(serialize_with = "optional_time")]
    pub assigned_at: Option<DateTime<Utc>>,
    /// The first human reply or takeover since it entered its queue: the
    /// escalation clock stops.
    #[serde(serialize_with = "optional_time")]
    pub picked_up_at: Option<DateTime<Utc>>,
    /// A conversation is open: a handoff message was queued and the thread
    /// has not been closed since (Done, `POST /v1/leads/{id}/close`, or the
    /// playbook's `idle` time without a message). No second opening message
    /// is sent into it.
    pub open: bool,
    /// When the open conversation's first handoff message was queued.
    #[serde(serialize_with = "optional_time")]
    pub opened_at: Option<DateTime<Utc>>,
    /// When the last conversation closed.
    #[serde(serialize_with = "optional_time")]
    pub closed_at: Option<DateTime<Utc>>,
    /// The playbook's `idle` when the conversation opened; read to settle
    /// `open`, not shown.
    #[serde(skip)]
    pub idle_days: Option<i64>,
}

/// A decision as recorded, with its trace.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StoredDecision {
    pub id: String,
    #[serde(serialize_with = "time")]
    pub at: DateTime<Utc>,
    pub playbook: String,
    /// The hash of the ruleset that decided.
    pub ruleset: String,
    /// The decision, or why there is none.
    #[schema(value_type = crate::ruleset::DecisionOrError)]
    pub decision: Value,
    /// Why the decision is what it is (`null` when there was none).
    #[schema(value_type = Option<crate::engine::Trace>)]
    pub trace: Value,
}

/// A message in the outbox and how its delivery went.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = OutboxItem)]
pub struct OutboxEntry {
    /// Also sent to Meta as `biz_opaque_callback_data`, and to endpoints as
    /// `webhook-id`.
    pub id: String,
    #[serde(serialize_with = "kind")]
    pub kind: OutboxKind,
    /// What it sends.
    #[schema(value_type = super::payload::OutboxPayload)]
    pub payload: Value,
    /// `pending` until due, `sending` while claimed (or while a send whose
    /// outcome is unknown waits for its status), `sent` once accepted,
    /// `failed` for good, `cancelled` when a person took the thread over
    /// first.
    pub state: String,
    #[schema(minimum = 0)]
    pub attempts: i64,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "optional_time")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Not retried before this time.
    #[serde(serialize_with = "optional_time")]
    pub next_attempt: Option<DateTime<Utc>>,
    /// Meta's message ID (`wamid.`).
    pub message_id: Option<String>,
    /// The furthest status: `accepted` by the Cloud API, then Meta's
    /// `sent`, `delivered`, `read` or `failed`; `delivered` for an endpoint
    /// that answered 2xx.
    pub delivery: Option<String>,
    /// Meta's error code of the last failure.
    pub error_code: Option<i64>,
    /// The last failure, in words.
    pub error: Option<String>,
    /// The message this one falls back from (a session message the closed
    /// window refused).
    pub replaces: Option<String>,
}

impl LeadRecord {
    /// Settles what depends on the time of reading: whether the thread's
    /// conversation is still open at `now`, given its last message.
    pub fn settle(mut self, now: DateTime<Utc>) -> LeadRecord {
        let last = self.transcript.iter().map(|m| m.at).max();
        if let Some(thread) = &mut self.thread {
            let (conversation, _) = super::conversation(
                thread.opened_at,
                thread.closed_at,
                thread.idle_days,
                last,
                Vec::new(),
                now,
            );
            thread.open = conversation.open;
            thread.opened_at = conversation.opened;
            thread.closed_at = conversation.closed;
        }
        self
    }

    /// The WhatsApp IDs a marketing preference may be kept under for this
    /// lead (see [`super::marketing_keys`]).
    pub fn marketing_keys(&self) -> Vec<String> {
        super::marketing_keys(
            self.identities
                .iter()
                .map(|i| (i.kind.as_str(), i.value.as_str())),
        )
    }

    /// The record as JSON, for templates and endpoints that take it whole.
    pub fn to_value(&self) -> Value {
        // Strings, numbers and maps of them serialize without fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A stored JSON column read leniently: text that is not the expected shape
/// (written by an older version) reads as empty rather than failing the lead.
pub(crate) fn column<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

/// Times as the store shows them everywhere: RFC 3339 in UTC, microseconds.
pub(crate) fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time_text(*t))
}

fn optional_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&time_text(*t)),
        None => s.serialize_none(),
    }
}

fn kind<S: Serializer>(k: &OutboxKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).single().unwrap()
    }

    fn record() -> LeadRecord {
        LeadRecord {
            id: "l1".into(),
            created_at: at(9),
            updated_at: None,
            name: Some("Aisha".into()),
            first_name: None,
            phone: Some("+919812345678".into()),
            email: None,
            language: None,
            channel: Some("whatsapp".into()),
            intent: None,
            playbook: None,
            fields: Map::new(),
            tags: vec![],
            answers: vec![],
            marketing_opt_out: false,
            identities: vec![Identity {
                kind: "whatsapp".into(),
                value: "919812345678".into(),
            }],
            consents: vec![],
            transcript: vec![TranscriptEntry {
                channel: "whatsapp".into(),
                from: "lead".into(),
                text: "hi".into(),
                at: at(10),
            }],
            thread: Some(ThreadView {
                state: "automated".into(),
                queue: None,
                last_inbound_at: Some(at(10)),
                flag: None,
                flag_reason: None,
                queue_state: None,
                queued_at: None,
                assignee: None,
                assigned_at: None,
                picked_up_at: None,
                open: false,
                opened_at: Some(at(9)),
                closed_at: None,
                idle_days: Some(1),
            }),
            decisions: vec![],
            outbox: vec![],
        }
    }

    #[test]
    fn a_conversation_idle_past_its_days_reads_closed_when_it_ran_out() {
        let open = record().settle(at(12));
        let thread = open.thread.as_ref().unwrap();
        assert!(thread.open);
        assert_eq!(thread.closed_at, None);

        let later = record().settle(at(12) + chrono::Duration::days(3));
        let thread = later.thread.as_ref().unwrap();
        assert!(!thread.open);
        assert_eq!(thread.closed_at, Some(at(10) + chrono::Duration::days(1)));
    }

    #[test]
    fn the_record_reads_as_the_api_documents_it() {
        let value = record().settle(at(12)).to_value();
        assert_eq!(value["created_at"], "2026-03-01T09:00:00.000000Z");
        assert_eq!(value["updated_at"], Value::Null);
        assert_eq!(value["thread"]["open"], true);
        assert!(value["thread"].get("idle_days").is_none());
        assert_eq!(value["transcript"][0]["from"], "lead");
    }
}
