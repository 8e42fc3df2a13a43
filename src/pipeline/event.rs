//! The store's lead event for each channel a lead comes in by: a WhatsApp
//! message (and the business's own echo), an Instagram DM, and the leads
//! that are stored first and made into events by the webhook worker (a web
//! form, a voice report, a lead ad: [`QueuedLead`]). The API builds its own
//! from its request body (`server::leads`), checked by the same policy.

use super::Decided;
use crate::config::Account;
use crate::engine::lead::{Answer, TranscriptMessage};
use crate::engine::Event;
use crate::intake::{self, InstagramMessage, WhatsappMessage};
use crate::store::{ConsentRecord, InboundMessage, LeadEvent};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A lead from a form or a call, as stored for the worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueuedLead {
    pub channel: String,
    pub playbook: Option<String>,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub intent: Option<String>,
    pub language: Option<String>,
    pub fields: Map<String, Value>,
    pub consent: Option<QueuedConsent>,
    pub transcript: Vec<TranscriptMessage>,
    pub form: Option<String>,
    /// Answers to questions no field is mapped to, in the order asked.
    #[serde(default)]
    pub answers: Vec<Answer>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueuedConsent {
    pub whatsapp: bool,
    pub source: String,
    pub evidence: String,
    pub at: Option<DateTime<Utc>>,
}

pub fn queued(
    channel: &str,
    form: Option<String>,
    playbook: Option<String>,
    m: intake::MappedLead,
    transcript: Vec<TranscriptMessage>,
) -> QueuedLead {
    QueuedLead {
        channel: channel.into(),
        playbook,
        name: m.name,
        first_name: m.first_name,
        email: m.email,
        phone: m.phone,
        intent: m.intent,
        language: m.language,
        fields: m.fields,
        consent: m.consent.map(|c| QueuedConsent {
            whatsapp: c.whatsapp,
            source: c.source,
            evidence: c.evidence,
            at: c.at,
        }),
        transcript,
        form,
        answers: answers_of(m.unmapped),
    }
}

/// A mapped lead's unmapped answers as the lead keeps them.
fn answers_of(unmapped: Vec<(String, String)>) -> Vec<Answer> {
    unmapped
        .into_iter()
        .map(|(question, answer)| Answer { question, answer })
        .collect()
}

/// The lead event of a form's, a call's or a lead ad's lead.
pub fn from_queued(
    account: &Account,
    q: QueuedLead,
    dedup: Option<(String, String)>,
) -> Result<LeadEvent, String> {
    let phone = match &q.phone {
        Some(p) => {
            Some(intake::normalize_phone(p, &account.default_region).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let email = q.email.as_ref().map(|e| e.trim().to_lowercase());
    let identities = [
        phone.clone().map(|p| ("phone".to_string(), p)),
        email.clone().map(|e| ("email".to_string(), e)),
    ]
    .into_iter()
    .flatten()
    .collect();
    Ok(LeadEvent {
        identities,
        name: q.name,
        first_name: q.first_name,
        phone,
        email,
        language: q.language,
        channel: Some(q.channel),
        intent: q.intent,
        fields: q.fields,
        messages: q.transcript,
        answers: q.answers,
        consent: q.consent.map(|c| ConsentRecord {
            channel: "whatsapp".into(),
            granted: c.whatsapp,
            source: c.source,
            at: c.at.unwrap_or_else(Utc::now),
            evidence: Some(c.evidence),
        }),
        dedup,
        ..LeadEvent::default()
    })
}

/// A WhatsApp message's lead event, and what it asks to decide: the
/// buyer's message is decided as a message; the business's own echo (from
/// the app on its phone) marks a person on the thread and is decided as
/// nothing new.
pub fn whatsapp(
    m: &WhatsappMessage,
    account: &Account,
    dedup: Option<(String, String)>,
) -> (LeadEvent, Decided) {
    let phone = intake::wa_id_to_e164(&m.wa_id);
    let text = m.transcript_line();
    // Someone at the business wrote from the app on their
    // phone: a person is on the thread, automation pauses;
    // it opens no window and is no opt-out.
    let opt_out = !m.is_echo
        && m.text.as_deref().is_some_and(|t| {
            let t = t.trim().to_lowercase();
            account.opt_out_words.iter().any(|w| w.to_lowercase() == t)
        });
    let lead_event = LeadEvent {
        identities: [
            Some(("whatsapp".to_string(), m.wa_id.clone())),
            phone.clone().map(|p| ("phone".to_string(), p)),
        ]
        .into_iter()
        .flatten()
        .collect(),
        phone,
        channel: Some("whatsapp".into()),
        messages: vec![TranscriptMessage {
            channel: "whatsapp".into(),
            from: if m.is_echo { "business" } else { "lead" }.into(),
            text: text.clone(),
            at: m.timestamp,
        }],
        consent: opt_out.then(|| ConsentRecord {
            channel: "whatsapp".into(),
            granted: false,
            source: "whatsapp".into(),
            at: m.timestamp,
            evidence: m.text.clone(),
        }),
        profile_name: if m.is_echo {
            None
        } else {
            m.profile_name.clone()
        },
        dedup,
        inbound_at: (!m.is_echo).then_some(m.timestamp),
        human_activity: m.is_echo,
        inbound: (!m.is_echo).then(|| InboundMessage {
            id: m.message_id.clone(),
            channel: "whatsapp".into(),
            kind: m.kind.clone(),
            text: text.clone(),
            at: m.timestamp,
        }),
        ..LeadEvent::default()
    };
    // What the buyer writes is decided as a message; the
    // business's own echo is not the buyer speaking.
    let decided = if m.is_echo {
        Decided::default()
    } else {
        Decided {
            event: Event::Message,
            message: Some(text),
        }
    };
    (lead_event, decided)
}

/// An Instagram DM's lead event: an upstream lead, from which the handoff
/// to WhatsApp happens.
pub fn instagram(m: &InstagramMessage, dedup: Option<(String, String)>) -> LeadEvent {
    // An echo is the business writing from its own app: the
    // user is the recipient, and a person is on the thread.
    let (user, from) = if m.is_echo {
        (m.recipient_id.clone(), "business")
    } else {
        (m.sender_igsid.clone(), "lead")
    };
    LeadEvent {
        identities: vec![("instagram".into(), user)],
        channel: Some("instagram".into()),
        messages: vec![TranscriptMessage {
            channel: "instagram".into(),
            from: from.into(),
            text: m.transcript_line(),
            at: m.timestamp,
        }],
        dedup,
        human_activity: m.is_echo,
        ..LeadEvent::default()
    }
}
