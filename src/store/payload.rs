//! What an outbox row sends, as typed payloads: a WhatsApp message a
//! decision or a person queues, or an endpoint to notify. Written by the
//! pipeline and the thread routes, stored as JSON, read back by the
//! delivery worker.

use super::OutboxKind;
use crate::engine::Outcome;
use crate::render::RenderedTemplate;
use serde::Serialize;
use serde_json::Value;

/// A WhatsApp message a decision sends: the rule's session message inside
/// the window, its approved template outside it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = WhatsappOutboxPayload)]
pub struct WhatsappSend {
    /// The lead's phone, E.164.
    #[serde(default)]
    pub to: Option<String>,
    /// `session` or `template`.
    pub outcome: Outcome,
    /// The session message (outcome `session`).
    #[serde(default)]
    pub text: Option<String>,
    /// The approved template: the message itself, or the fallback.
    #[serde(default)]
    pub template: Option<RenderedTemplate>,
    /// The playbook's `sender` (a WhatsApp number key of the account).
    #[serde(default)]
    pub sender: Option<String>,
    /// Who wrote it, for a person's reply; absent for automation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl WhatsappSend {
    /// The payload as the outbox stores it.
    pub fn to_value(&self) -> Value {
        // Strings and an enum of unit variants serialize without fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// An endpoint told about the lead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = NotifyOutboxPayload)]
pub struct Notify {
    /// The name of one of the account's `endpoints`.
    pub endpoint: String,
    pub event: NotifyEvent,
}

/// An outbox message's payload: a WhatsApp message (kind `whatsapp`), or a
/// notification of an endpoint (kind `notify`).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OutboxPayload {
    Whatsapp(WhatsappSend),
    Notify(Notify),
}

impl OutboxPayload {
    /// The outbox's kind and payload, as stored.
    pub fn row(&self) -> (OutboxKind, Value) {
        let (kind, payload) = match self {
            OutboxPayload::Whatsapp(w) => (OutboxKind::Whatsapp, serde_json::to_value(w)),
            OutboxPayload::Notify(n) => (OutboxKind::Notify, serde_json::to_value(n)),
        };
        // Plain structs of strings serialize without fail.
        (kind, payload.unwrap_or(Value::Null))
    }
}

/// What an endpoint is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum NotifyEvent {
    /// A rule's `notify`.
    #[serde(rename = "lead.notify")]
    LeadNotify,
    /// The account's CRM, after every decision.
    #[serde(rename = "lead.updated")]
    LeadUpdated,
}
