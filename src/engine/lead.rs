//! A lead as the engine sees it: the JSON shape that upstreams send, dry-run
//! test files use and `explain` reads, plus the situation it is decided in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A lead: who, where from, what they want, and what they already said.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lead {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Which playbook decides this lead, when the lead names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
    #[serde(default)]
    pub consent: Consent,
    /// Qualification fields as written upstream; coerced to the declared types.
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub transcript: Vec<TranscriptMessage>,
    /// Form and lead-ad answers that map to no declared field, in the order
    /// asked: kept so nothing the buyer said is lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Answer>,
}

/// One answer to a form or lead-ad question that no field is declared for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    #[schema(max_length = 300)]
    pub question: String,
    #[schema(max_length = 2000)]
    pub answer: String,
}

/// Opt-ins on record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// A WhatsApp opt-in is on record.
    #[serde(default)]
    pub whatsapp: bool,
}

/// One message, on any channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TranscriptMessage {
    pub channel: String,
    /// `lead`, `business`, `operator:<name>`, or `agent:<endpoint>` for an
    /// AI agent's reply.
    pub from: String,
    pub text: String,
    pub at: DateTime<Utc>,
}

/// The facts a decision depends on besides the lead: the clock, the WhatsApp
/// window, the lead's thread, what is being decided and the marketing opt-out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Situation {
    pub now: DateTime<Utc>,
    pub window_open: bool,
    pub human: bool,
    /// What is being decided: an upstream lead event, or a WhatsApp message.
    pub event: Event,
    /// The lead's WhatsApp thread: open or not, since when, last closed.
    pub thread: Thread,
    /// The lead opted out of marketing messages.
    pub marketing_opt_out: bool,
    /// The text of the message being decided (`event` `message`); when not
    /// given, the lead's latest transcript line is that message.
    pub message: Option<String>,
}

impl Situation {
    /// A situation at `now`: an upstream lead, the window closed, no human
    /// on the thread, no thread open, no marketing opt-out.
    pub fn at(now: DateTime<Utc>) -> Situation {
        Situation {
            now,
            window_open: false,
            human: false,
            event: Event::Lead,
            thread: Thread::default(),
            marketing_opt_out: false,
            message: None,
        }
    }
}

/// What a decision is about (the path `event`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// A lead arrived or was updated upstream.
    #[default]
    Lead,
    /// The lead wrote on WhatsApp.
    Message,
}

impl Event {
    /// The event as rules and test files write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Lead => "lead",
            Event::Message => "message",
        }
    }
}

/// The thread as test files, lead files and dry runs write it:
/// `thread: {open: true, opened: ..., closed: ..., asked: [...]}`.
/// `opened` defaults to the decision's time when `open` is true.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThreadInput {
    #[serde(default)]
    pub open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<DateTime<Utc>>,
    /// Fields `ask` already reported in the open thread.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asked: Vec<String>,
}

impl ThreadInput {
    /// The thread at `now`: an open thread with no `opened` opened at `now`.
    pub fn at(&self, now: DateTime<Utc>) -> Thread {
        Thread {
            open: self.open,
            opened: if self.open {
                Some(self.opened.unwrap_or(now))
            } else {
                None
            },
            closed: self.closed,
            asked: if self.open {
                self.asked.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// The input that gives `thread` back.
    pub fn from_thread(thread: &Thread) -> ThreadInput {
        ThreadInput {
            open: thread.open,
            opened: thread.opened,
            closed: thread.closed,
            asked: thread.asked.clone(),
        }
    }
}

/// A lead's marketing preference as test files write it (`marketing: opted_out`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Marketing {
    /// Marketing messages may be sent (the default).
    #[default]
    Subscribed,
    /// The lead stopped marketing messages.
    OptedOut,
}

/// The lead's WhatsApp thread as a decision sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Thread {
    /// A conversation is open: a handoff message was queued and the thread
    /// has not been closed (Done, the API's close, or idle) since.
    pub open: bool,
    /// When the open conversation's first handoff message was queued.
    pub opened: Option<DateTime<Utc>>,
    /// When the lead's last conversation closed.
    pub closed: Option<DateTime<Utc>>,
    /// Fields `ask` already reported while this conversation is open.
    pub asked: Vec<String>,
}

/// The WhatsApp 24-hour window, as written in lead files and test files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Open,
    Closed,
}
