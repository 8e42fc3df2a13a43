//! Lead histories: one lead a line (JSONL), each with the situation it was
//! decided in (`now`, `window`, `human`, `event`, `thread`, `marketing`). `explain` reads one such record;
//! `diff` streams a file of them; `generate` writes them.

use crate::engine::lead::{Answer, Consent, TranscriptMessage};
use crate::engine::{Event, Lead, Marketing, Situation, ThreadInput, Window};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A lead and the situation it is decided in.
#[derive(Clone, Debug, PartialEq)]
pub struct LeadRecord {
    pub lead: Lead,
    pub now: Option<String>,
    pub window: Option<Window>,
    pub human: bool,
    pub event: Event,
    pub thread: ThreadInput,
    pub marketing: Marketing,
}

/// The wire shape: a lead's keys plus `now`, `window` and `human`. Parsed
/// in one pass, since `diff` reads a million of these.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    playbook: Option<String>,
    #[serde(default)]
    consent: Consent,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    transcript: Vec<TranscriptMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    answers: Vec<Answer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    now: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window: Option<Window>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    human: bool,
    #[serde(default, skip_serializing_if = "is_lead")]
    event: Event,
    #[serde(default, skip_serializing_if = "is_no_thread")]
    thread: ThreadInput,
    #[serde(default, skip_serializing_if = "is_subscribed")]
    marketing: Marketing,
}

fn is_lead(event: &Event) -> bool {
    *event == Event::Lead
}

fn is_no_thread(thread: &ThreadInput) -> bool {
    *thread == ThreadInput::default()
}

fn is_subscribed(marketing: &Marketing) -> bool {
    *marketing == Marketing::Subscribed
}

impl LeadRecord {
    /// Reads a record from JSON.
    pub fn parse(text: &str) -> Result<LeadRecord, String> {
        let wire: Wire = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Ok(LeadRecord {
            lead: Lead {
                name: wire.name,
                first_name: wire.first_name,
                phone: wire.phone,
                email: wire.email,
                language: wire.language,
                channel: wire.channel,
                intent: wire.intent,
                playbook: wire.playbook,
                consent: wire.consent,
                fields: wire.fields,
                tags: wire.tags,
                transcript: wire.transcript,
                answers: wire.answers,
            },
            now: wire.now,
            window: wire.window,
            human: wire.human,
            event: wire.event,
            thread: wire.thread,
            marketing: wire.marketing,
        })
    }

    /// Writes the record as one JSON line.
    pub fn to_json(&self) -> String {
        let lead = self.lead.clone();
        let wire = Wire {
            name: lead.name,
            first_name: lead.first_name,
            phone: lead.phone,
            email: lead.email,
            language: lead.language,
            channel: lead.channel,
            intent: lead.intent,
            playbook: lead.playbook,
            consent: lead.consent,
            fields: lead.fields,
            tags: lead.tags,
            transcript: lead.transcript,
            answers: lead.answers,
            now: self.now.clone(),
            window: self.window,
            human: self.human,
            event: self.event,
            thread: self.thread.clone(),
            marketing: self.marketing,
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// The situation, with `default_now` when the record gives no `now`.
    pub fn situation(&self, default_now: DateTime<Utc>) -> Result<Situation, String> {
        let now = match &self.now {
            Some(t) => DateTime::parse_from_rfc3339(t)
                .map_err(|_| format!("`now` is not an RFC 3339 time: `{t}`"))?
                .with_timezone(&Utc),
            None => default_now,
        };
        Ok(Situation {
            now,
            window_open: self.window == Some(Window::Open),
            human: self.human,
            event: self.event,
            thread: self.thread.at(now),
            marketing_opt_out: self.marketing == Marketing::OptedOut,
            message: None,
        })
    }
}
