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
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeadRecord {
    pub id: String,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "optional_time")]
    pub updated_at: Option<DateTime<Utc>>,
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
    pub answers: Vec<Answer>,
    /// The lead's WhatsApp number opted out of marketing messages.
    pub marketing_opt_out: bool,
    pub identities: Vec<Identity>,
    pub consents: Vec<ConsentEntry>,
    pub transcript: Vec<TranscriptEntry>,
    /// The lead's WhatsApp thread; none before a handoff opened one.
    pub thread: Option<ThreadView>,
    pub decisions: Vec<StoredDecision>,
    pub outbox: Vec<OutboxEntry>,
}

/// A way the lead is known: a phone, an email, a WhatsApp or Instagram ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub kind: String,
    pub value: String,
}

/// One opt-in or opt-out on record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsentEntry {
    pub channel: String,
    pub granted: bool,
    pub source: String,
    #[serde(serialize_with = "time")]
    pub at: DateTime<Utc>,
    pub evidence: Option<String>,
}

/// One message of the lead's conversation, either way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TranscriptEntry {
    pub channel: String,
    /// `lead`, or who wrote for the business.
    pub from: String,
    pub text: String,
    #[serde(serialize_with = "time")]
    pub at: DateTime<Utc>,
}

/// The thread as stored, and its conversation as of the reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ThreadView {
    /// `automated` or `human`.
    pub state: String,
    pub queue: Option<String>,
    #[serde(serialize_with = "optional_time")]
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub flag: Option<String>,
    pub flag_reason: Option<String>,
    pub queue_state: Option<String>,
    #[serde(serialize_with = "optional_time")]
    pub queued_at: Option<DateTime<Utc>>,
    /// The member's name, or the AI agent's endpoint.
    pub assignee: Option<String>,
    #[serde(serialize_with = "optional_time")]
    pub assigned_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "optional_time")]
    pub picked_up_at: Option<DateTime<Utc>>,
    /// Whether a conversation is open now.
    pub open: bool,
    #[serde(serialize_with = "optional_time")]
    pub opened_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "optional_time")]
    pub closed_at: Option<DateTime<Utc>>,
    /// The playbook's `idle` when the conversation opened; read to settle
    /// `open`, not shown.
    #[serde(skip)]
    pub idle_days: Option<i64>,
}

/// A decision as recorded, with its trace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredDecision {
    pub id: String,
    #[serde(serialize_with = "time")]
    pub at: DateTime<Utc>,
    pub playbook: String,
    /// The hash of the ruleset that decided.
    pub ruleset: String,
    pub decision: Value,
    pub trace: Value,
}

/// A message in the outbox and how its delivery went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboxEntry {
    pub id: String,
    #[serde(serialize_with = "kind")]
    pub kind: OutboxKind,
    pub payload: Value,
    pub state: String,
    pub attempts: i64,
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "optional_time")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "optional_time")]
    pub next_attempt: Option<DateTime<Utc>>,
    pub message_id: Option<String>,
    pub delivery: Option<String>,
    pub error_code: Option<i64>,
    pub error: Option<String>,
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
