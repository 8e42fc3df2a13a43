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
}

/// Opt-ins on record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// A WhatsApp opt-in is on record.
    #[serde(default)]
    pub whatsapp: bool,
}

/// One earlier message, on any channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptMessage {
    pub channel: String,
    /// `lead`, `business`, an operator's name, or `agent`.
    pub from: String,
    pub text: String,
    pub at: DateTime<Utc>,
}

/// The facts a decision depends on besides the lead: the clock, the WhatsApp
/// window and whether a person has taken the thread over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Situation {
    pub now: DateTime<Utc>,
    pub window_open: bool,
    pub human: bool,
}

impl Situation {
    /// A situation at `now` with the window closed and no human on the thread.
    pub fn at(now: DateTime<Utc>) -> Situation {
        Situation {
            now,
            window_open: false,
            human: false,
        }
    }
}

/// The WhatsApp 24-hour window, as written in lead files and test files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Open,
    Closed,
}
