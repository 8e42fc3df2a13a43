//! The normalized events that Meta's webhooks turn into: one type for every
//! channel, each with the key it is deduplicated on and the channel it came by.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The channel a lead or event came in by, named as playbooks write it
/// (`channel == "lead_ad"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Instagram,
    WebForm,
    LeadAd,
    Voice,
    Whatsapp,
    Api,
}

impl Channel {
    /// Every channel, in the order of `dsl::schema::CHANNELS`.
    pub const ALL: [Channel; 6] = [
        Channel::Instagram,
        Channel::WebForm,
        Channel::LeadAd,
        Channel::Voice,
        Channel::Whatsapp,
        Channel::Api,
    ];

    /// The name rules use for this channel.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Instagram => "instagram",
            Channel::WebForm => "web_form",
            Channel::LeadAd => "lead_ad",
            Channel::Voice => "voice",
            Channel::Whatsapp => "whatsapp",
            Channel::Api => "api",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened on a channel, as the router needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboundEvent {
    /// A person wrote to one of the business's WhatsApp numbers.
    WhatsappMessage(WhatsappMessage),
    /// Meta reports what became of a message the business sent.
    WhatsappStatus(WhatsappStatus),
    /// A person stopped or resumed marketing messages (Meta's `user_preferences`).
    WhatsappUserPreference(WhatsappUserPreference),
    /// An Instagram DM, from a person or echoed from the business's own send.
    InstagramMessage(InstagramMessage),
    /// A lead ads form was submitted; the answers must be fetched from Graph.
    LeadgenRef(LeadgenRef),
}

impl InboundEvent {
    /// The key this event is deduplicated on, unique within its channel:
    /// the wamid for a message, `status:{wamid}:{status}` for a status,
    /// `user_preference:{wa_id}:{category}:{stop|resume}:{unix seconds}` for a
    /// preference, the `mid` for an Instagram message and the `leadgen_id` for
    /// a lead ad. Meta redelivers for days; store on (channel, source_id).
    pub fn source_id(&self) -> String {
        match self {
            InboundEvent::WhatsappMessage(message) => message.message_id.clone(),
            InboundEvent::WhatsappStatus(status) => {
                format!("status:{}:{}", status.message_id, status.status.as_str())
            }
            InboundEvent::WhatsappUserPreference(preference) => format!(
                "user_preference:{}:{}:{}:{}",
                preference.wa_id,
                preference.category,
                if preference.marketing_opt_out {
                    "stop"
                } else {
                    "resume"
                },
                preference.timestamp.timestamp()
            ),
            InboundEvent::InstagramMessage(message) => message.message_id.clone(),
            InboundEvent::LeadgenRef(lead) => lead.leadgen_id.clone(),
        }
    }

    /// The channel the event came by.
    pub fn channel(&self) -> Channel {
        match self {
            InboundEvent::WhatsappMessage(_)
            | InboundEvent::WhatsappStatus(_)
            | InboundEvent::WhatsappUserPreference(_) => Channel::Whatsapp,
            InboundEvent::InstagramMessage(_) => Channel::Instagram,
            InboundEvent::LeadgenRef(_) => Channel::LeadAd,
        }
    }

    /// When Meta says the event happened (not when it was delivered to us;
    /// deliveries can arrive late and out of order).
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            InboundEvent::WhatsappMessage(message) => message.timestamp,
            InboundEvent::WhatsappStatus(status) => status.timestamp,
            InboundEvent::WhatsappUserPreference(preference) => preference.timestamp,
            InboundEvent::InstagramMessage(message) => message.timestamp,
            InboundEvent::LeadgenRef(lead) => lead.created_time,
        }
    }
}

/// A message a person sent to a business WhatsApp number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhatsappMessage {
    /// The business number it was sent to (`metadata.phone_number_id`).
    pub phone_number_id: String,
    /// The sender's WhatsApp ID (`from`): digits only, kept exactly as Meta
    /// gives it; threads are keyed on it.
    pub wa_id: String,
    /// The sender's WhatsApp profile name, when Meta sends the contact.
    pub profile_name: Option<String>,
    /// Meta's message ID (`wamid....`).
    pub message_id: String,
    pub timestamp: DateTime<Utc>,
    /// Meta's message `type`: `text`, `button`, `interactive`, `image`, ...
    pub kind: String,
    /// What the person wrote: the body of a `text` message, or the label of
    /// the quick-reply button or list row they tapped. `None` for media,
    /// locations, reactions and the like. Opt-out words are read from it.
    pub text: Option<String>,
    /// The message as one transcript line: the text, or a readable stand-in
    /// for anything else (`[image] This is the venue I like`,
    /// `[location] Taj Exotica, Benaulim, Goa (15.2345, 73.9345)`,
    /// `[reaction ❤️]`). Empty on events stored before lines were read: use
    /// [`WhatsappMessage::transcript_line`].
    #[serde(default)]
    pub line: String,
    /// The business message this one replies to (`context.id`), if any.
    pub context_message_id: Option<String>,
    /// The click-to-WhatsApp ad the conversation started from, if any.
    pub referral: Option<AdReferral>,
    /// The business wrote this from the WhatsApp Business app on its phone
    /// (an `smb_message_echoes` webhook): `wa_id` is then the recipient, and
    /// a person is on the thread.
    #[serde(default)]
    pub is_echo: bool,
}

impl WhatsappMessage {
    /// The message as its transcript line, never empty. Events stored before
    /// lines were read have none; they read as they always did: the text,
    /// else `[<kind>]`.
    pub fn transcript_line(&self) -> String {
        if !self.line.is_empty() {
            return self.line.clone();
        }
        match &self.text {
            Some(text) if !text.is_empty() => text.clone(),
            _ => format!("[{}]", self.kind),
        }
    }
}

/// The ad behind a click-to-WhatsApp conversation (`messages[].referral`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdReferral {
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub source_url: Option<String>,
    pub headline: Option<String>,
    /// The click ID Meta uses for conversion reporting.
    pub ctwa_clid: Option<String>,
}

/// What became of a message the business sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryStatus {
    /// Meta's word for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// The status for Meta's word, if it is one the router tracks.
    pub fn from_meta(word: &str) -> Option<DeliveryStatus> {
        match word {
            "sent" => Some(DeliveryStatus::Sent),
            "delivered" => Some(DeliveryStatus::Delivered),
            "read" => Some(DeliveryStatus::Read),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// A delivery status webhook (`value.statuses[]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhatsappStatus {
    /// The business number that sent the message.
    pub phone_number_id: String,
    /// The wamid of the message the business sent.
    pub message_id: String,
    pub status: DeliveryStatus,
    pub timestamp: DateTime<Utc>,
    /// The recipient's WhatsApp ID.
    pub recipient_id: String,
    /// Why a `failed` message failed; decide by `code`, never by text.
    pub errors: Vec<MetaError>,
    /// What the sender attached to the message (the outbox reference).
    pub biz_opaque_callback_data: Option<String>,
}

/// One of Meta's error objects, as statuses carry them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaError {
    pub code: i64,
    pub title: Option<String>,
    pub message: Option<String>,
    /// `error_data.details`: Meta's longer explanation.
    pub details: Option<String>,
}

/// A person's marketing-message preference (Meta's `user_preferences` field).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhatsappUserPreference {
    /// The business number the preference concerns, when Meta says.
    pub phone_number_id: Option<String>,
    /// The person's WhatsApp ID.
    pub wa_id: String,
    /// Meta's category; today always `marketing_messages`.
    pub category: String,
    /// `true` when the person stopped marketing messages, `false` when they
    /// resumed them.
    pub marketing_opt_out: bool,
    pub timestamp: DateTime<Utc>,
    /// Meta's explanation, e.g. "User requested to stop marketing messages".
    pub detail: Option<String>,
}

/// An Instagram direct message (`entry[].messaging[]` with a `message`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstagramMessage {
    /// The business's Instagram account (or Page) the webhook is for (`entry[].id`).
    pub page_or_account_id: String,
    /// Who sent it: the person's Instagram-scoped ID, or for an echo the
    /// business's own account.
    pub sender_igsid: String,
    /// Who received it.
    pub recipient_id: String,
    /// Meta's message ID (`mid`).
    pub message_id: String,
    pub timestamp: DateTime<Utc>,
    /// The message text; `None` for attachments, stickers and the like.
    pub text: Option<String>,
    /// The message as one transcript line: the text, then its attachments
    /// (`Is this available? [image] [image]`, `[shared post: Goa weddings]`).
    /// Empty on events stored before lines were read: use
    /// [`InstagramMessage::transcript_line`].
    #[serde(default)]
    pub line: String,
    /// The business's own message coming back: someone replied from the
    /// Instagram app, so a person is active on the conversation.
    pub is_echo: bool,
}

impl InstagramMessage {
    /// The message as its transcript line, never empty. Events stored before
    /// lines were read have none; they read as they always did: the text,
    /// else `[attachment]`.
    pub fn transcript_line(&self) -> String {
        if !self.line.is_empty() {
            return self.line.clone();
        }
        match &self.text {
            Some(text) if !text.is_empty() => text.clone(),
            _ => "[attachment]".to_string(),
        }
    }

    /// The person's Instagram-scoped ID, whichever direction the message went.
    pub fn person_igsid(&self) -> &str {
        if self.is_echo {
            &self.recipient_id
        } else {
            &self.sender_igsid
        }
    }
}

/// A lead ads submission, IDs only (`field == "leadgen"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadgenRef {
    /// The lead's ID; fetch `GET /{leadgen_id}` for the answers.
    pub leadgen_id: String,
    pub page_id: String,
    pub form_id: String,
    pub ad_id: Option<String>,
    pub adgroup_id: Option<String>,
    pub created_time: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn channels_are_the_ones_playbooks_know() {
        let names: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, crate::dsl::schema::CHANNELS);
        assert_eq!(
            serde_json::to_value(Channel::LeadAd).unwrap(),
            serde_json::json!("lead_ad")
        );
    }

    #[test]
    fn statuses_of_one_message_have_distinct_source_ids() {
        let status = |status| {
            InboundEvent::WhatsappStatus(WhatsappStatus {
                phone_number_id: "1".into(),
                message_id: "wamid.A".into(),
                status,
                timestamp: at(1),
                recipient_id: "2".into(),
                errors: Vec::new(),
                biz_opaque_callback_data: None,
            })
        };
        assert_eq!(
            status(DeliveryStatus::Sent).source_id(),
            "status:wamid.A:sent"
        );
        assert_eq!(
            status(DeliveryStatus::Read).source_id(),
            "status:wamid.A:read"
        );
        assert_eq!(status(DeliveryStatus::Read).channel(), Channel::Whatsapp);
    }

    #[test]
    fn a_stop_and_a_later_resume_are_different_events() {
        let preference = |opt_out, seconds| {
            InboundEvent::WhatsappUserPreference(WhatsappUserPreference {
                phone_number_id: None,
                wa_id: "919820012345".into(),
                category: "marketing_messages".into(),
                marketing_opt_out: opt_out,
                timestamp: at(seconds),
                detail: None,
            })
        };
        assert_eq!(
            preference(true, 10).source_id(),
            "user_preference:919820012345:marketing_messages:stop:10"
        );
        assert_ne!(
            preference(true, 10).source_id(),
            preference(false, 20).source_id()
        );
    }

    #[test]
    fn the_person_in_an_instagram_echo_is_the_recipient() {
        let mut message = InstagramMessage {
            page_or_account_id: "biz".into(),
            sender_igsid: "person".into(),
            recipient_id: "biz".into(),
            message_id: "m1".into(),
            timestamp: at(1),
            text: None,
            line: String::new(),
            is_echo: false,
        };
        assert_eq!(message.person_igsid(), "person");
        message.sender_igsid = "biz".into();
        message.recipient_id = "person".into();
        message.is_echo = true;
        assert_eq!(message.person_igsid(), "person");
    }

    #[test]
    fn events_serialize_with_their_type() {
        let event = InboundEvent::LeadgenRef(LeadgenRef {
            leadgen_id: "L".into(),
            page_id: "P".into(),
            form_id: "F".into(),
            ad_id: None,
            adgroup_id: None,
            created_time: at(0),
        });
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "leadgen_ref");
        assert_eq!(json["leadgen_id"], "L");
        let back: InboundEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn whatsapp_events_stored_before_lines_still_read() {
        let stored = |kind: &str, text: Option<&str>| {
            serde_json::json!({
                "type": "whatsapp_message", "phone_number_id": "1", "wa_id": "919820012345",
                "profile_name": null, "message_id": "wamid.A", "timestamp": "2027-01-01T00:00:00Z",
                "kind": kind, "text": text, "context_message_id": null, "referral": null
            })
        };
        let read = |value| match serde_json::from_value(value).unwrap() {
            InboundEvent::WhatsappMessage(message) => message,
            other => panic!("{other:?}"),
        };
        let text = read(stored("text", Some("Goa please")));
        assert_eq!(text.line, "");
        assert!(!text.is_echo);
        assert_eq!(text.transcript_line(), "Goa please");
        assert_eq!(read(stored("image", None)).transcript_line(), "[image]");
        let mut image = read(stored("image", None));
        image.line = "[image] This is the venue I like".into();
        assert_eq!(image.transcript_line(), "[image] This is the venue I like");
    }

    #[test]
    fn instagram_events_stored_before_lines_still_read() {
        let stored = |text: Option<&str>| {
            let value = serde_json::json!({
                "type": "instagram_message", "page_or_account_id": "biz", "sender_igsid": "person",
                "recipient_id": "biz", "message_id": "m1", "timestamp": "2027-01-01T00:00:00Z",
                "text": text, "is_echo": false
            });
            match serde_json::from_value(value).unwrap() {
                InboundEvent::InstagramMessage(message) => message,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(stored(Some("hi")).transcript_line(), "hi");
        assert_eq!(stored(None).transcript_line(), "[attachment]");
        let mut message = stored(None);
        message.line = "[image] [image]".into();
        assert_eq!(message.transcript_line(), "[image] [image]");
    }
}
