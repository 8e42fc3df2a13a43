//! WhatsApp Business Account webhooks: inbound messages, delivery statuses
//! and marketing preferences, read from `entry[].changes[].value`. Every
//! message kind Meta sends, and any it may add, becomes a transcript line:
//! nothing the buyer sent is dropped.

use super::error::IntakeError;
use super::event::{
    AdReferral, DeliveryStatus, InboundEvent, MetaError, WhatsappMessage, WhatsappStatus,
    WhatsappUserPreference,
};
use super::json::{ordered_members, Node, TimeUnit};
use super::line::{labelled, shortened, value_text, words};
use super::meta::{read_changes, Sink};

/// Reads one `entry` of a `whatsapp_business_account` webhook.
pub(crate) fn read_entry(entry: &Node<'_>, sink: &mut Sink) {
    read_changes(entry, sink, |field, _entry, value, sink| match field {
        "messages" => read_messages_value(value, sink),
        "smb_message_echoes" => read_echoes_value(value, sink),
        "user_preferences" => read_user_preferences_value(value, sink),
        // Template status, quality, account and other updates: not the router's.
        _ => Ok(()),
    });
}

/// A `messages` change: inbound messages and statuses of sent ones.
fn read_messages_value(value: &Node<'_>, sink: &mut Sink) -> Result<(), IntakeError> {
    let phone_number_id = value.field("metadata")?.id_at("phone_number_id")?;
    let contacts = contacts(value)?;
    for message in value.opt_items_at("messages")? {
        sink.take(read_message(&message, &phone_number_id, &contacts).map(Some));
    }
    for status in value.opt_items_at("statuses")? {
        sink.take(read_status(&status, &phone_number_id));
    }
    Ok(())
}

/// An `smb_message_echoes` change: what the business sent from the WhatsApp
/// Business app on its phone (a number on the Cloud API and the app at
/// once), each with `to` the user it went to.
fn read_echoes_value(value: &Node<'_>, sink: &mut Sink) -> Result<(), IntakeError> {
    let phone_number_id = value.field("metadata")?.id_at("phone_number_id")?;
    for echo in value.opt_items_at("message_echoes")? {
        sink.take(read_echo(&echo, &phone_number_id).map(Some));
    }
    Ok(())
}

fn read_echo(echo: &Node<'_>, phone_number_id: &str) -> Result<InboundEvent, IntakeError> {
    let kind = echo.str_at("type")?.to_string();
    let text = match kind.as_str() {
        "text" => Some(echo.field("text")?.str_at("body")?.to_string()),
        _ => None,
    };
    let line = transcript_line(echo, &kind);
    Ok(InboundEvent::WhatsappMessage(WhatsappMessage {
        phone_number_id: phone_number_id.to_string(),
        wa_id: echo.id_at("to")?,
        profile_name: None,
        message_id: echo.id_at("id")?,
        timestamp: echo.field("timestamp")?.unix_time(TimeUnit::Seconds)?,
        kind,
        text,
        line,
        context_message_id: None,
        referral: None,
        is_echo: true,
    }))
}

/// `value.contacts[]` as (wa_id, profile name) pairs.
fn contacts(value: &Node<'_>) -> Result<Vec<(String, Option<String>)>, IntakeError> {
    let mut contacts = Vec::new();
    for contact in value.opt_items_at("contacts")? {
        let Some(wa_id) = contact.opt_id_at("wa_id")? else {
            continue;
        };
        let name = match contact.get("profile")? {
            Some(profile) => profile.opt_str_at("name")?.map(str::to_string),
            None => None,
        };
        contacts.push((wa_id, name));
    }
    Ok(contacts)
}

fn read_message(
    message: &Node<'_>,
    phone_number_id: &str,
    contacts: &[(String, Option<String>)],
) -> Result<InboundEvent, IntakeError> {
    let wa_id = message.id_at("from")?;
    let message_id = message.id_at("id")?;
    let timestamp = message.field("timestamp")?.unix_time(TimeUnit::Seconds)?;
    let kind = message.str_at("type")?.to_string();
    let text = match kind.as_str() {
        "text" => Some(message.field("text")?.str_at("body")?.to_string()),
        // A tapped quick-reply button of a template.
        "button" => match message.get("button")? {
            Some(button) => button.opt_str_at("text")?.map(str::to_string),
            None => None,
        },
        // A tapped reply button or list row of an interactive message.
        "interactive" => interactive_reply_title(message)?,
        _ => None,
    };
    let context_message_id = match message.get("context")? {
        Some(context) => context.opt_id_at("id")?,
        None => None,
    };
    let referral = match message.get("referral")? {
        Some(referral) => Some(AdReferral {
            source_type: referral.opt_str_at("source_type")?.map(str::to_string),
            source_id: referral.opt_id_at("source_id")?,
            source_url: referral.opt_str_at("source_url")?.map(str::to_string),
            headline: referral.opt_str_at("headline")?.map(str::to_string),
            ctwa_clid: referral.opt_str_at("ctwa_clid")?.map(str::to_string),
        }),
        None => None,
    };
    let profile_name = contacts
        .iter()
        .find(|(contact, _)| *contact == wa_id)
        .and_then(|(_, name)| name.clone());
    let line = transcript_line(message, &kind);
    Ok(InboundEvent::WhatsappMessage(WhatsappMessage {
        phone_number_id: phone_number_id.to_string(),
        wa_id,
        profile_name,
        message_id,
        timestamp,
        kind,
        text,
        line,
        context_message_id,
        referral,
        is_echo: false,
    }))
}

fn interactive_reply_title(message: &Node<'_>) -> Result<Option<String>, IntakeError> {
    let Some(interactive) = message.get("interactive")? else {
        return Ok(None);
    };
    for reply in ["button_reply", "list_reply"] {
        if let Some(reply) = interactive.get(reply)? {
            return Ok(reply.opt_str_at("title")?.map(str::to_string));
        }
    }
    Ok(None)
}

/// The message (or echo) as one transcript line, never empty.
///
/// Infallible on purpose: the line only describes the message, so a part
/// Meta adds, renames, retypes or leaves out must never cost the router the
/// message itself. A kind it does not know yet reads as `[kind]`.
fn transcript_line(message: &Node<'_>, kind: &str) -> String {
    if kind.trim().is_empty() {
        return "[message]".to_string();
    }
    let line = match kind {
        "text" => message
            .loose("text")
            .and_then(|text| text.loose_text("body"))
            .map(str::to_string),
        "image" | "video" | "audio" | "document" | "sticker" => Some(media_line(message, kind)),
        "interactive" => interactive_line(message),
        // A tapped quick-reply button of a template: its label is what the
        // buyer saw and chose; the payload is the business's own code.
        "button" => message
            .loose("button")
            .and_then(|button| button.loose_text("text"))
            .map(str::to_string),
        "location" => Some(location_line(message)),
        "contacts" => Some(contacts_line(message)),
        "reaction" => message.loose("reaction").map(|reaction| {
            match reaction.loose_text("emoji") {
                Some(emoji) => format!("[reaction {emoji}]"),
                // Meta sends an empty or absent emoji when a reaction is taken back.
                None => "[reaction removed]".to_string(),
            }
        }),
        "order" => Some(order_line(message)),
        "system" => message.loose("system").map(|system| {
            match (system.loose_text("body"), system.loose_text("type")) {
                (Some(body), _) => labelled("system", Some(body)),
                (None, Some(what)) => format!("[system: {}]", words(what)),
                (None, None) => "[system]".to_string(),
            }
        }),
        // Sent when someone opens a chat with the business for the first time.
        "request_welcome" => Some("[opened the chat]".to_string()),
        "unsupported" | "unknown" => Some(unsupported_line(message)),
        other => Some(labelled(&words(other), meta_error(message).as_deref())),
    };
    match line {
        Some(line) if !line.trim().is_empty() => line,
        _ => format!("[{}]", words(kind)),
    }
}

/// `[image]`, `[video]`, `[audio]` (`[voice message]` for a voice note),
/// `[document: name]`, `[sticker]`, each followed by its caption.
fn media_line(message: &Node<'_>, kind: &str) -> String {
    let media = message.loose(kind);
    let detail = |key| media.as_ref().and_then(|media| media.loose_text(key));
    let label = match kind {
        "audio" if media.as_ref().and_then(|m| m.loose_bool("voice")) == Some(true) => {
            "voice message".to_string()
        }
        "document" => match detail("filename") {
            Some(filename) => format!("document: {filename}"),
            None => "document".to_string(),
        },
        other => other.to_string(),
    };
    labelled(&label, detail("caption"))
}

/// A tapped reply button or list row by its visible title (a list row with
/// its description), or a WhatsApp Flow's answers.
fn interactive_line(message: &Node<'_>) -> Option<String> {
    let interactive = message.loose("interactive")?;
    if let Some(reply) = interactive.loose("button_reply") {
        return reply.loose_text("title").map(str::to_string);
    }
    if let Some(reply) = interactive.loose("list_reply") {
        let title = reply.loose_text("title")?;
        return Some(match reply.loose_text("description") {
            Some(description) => format!("{title} — {description}"),
            None => title.to_string(),
        });
    }
    if let Some(reply) = interactive.loose("nfm_reply") {
        return Some(flow_reply_line(&reply));
    }
    interactive
        .loose_text("type")
        .map(|what| format!("[{}]", words(what)))
}

/// A completed WhatsApp Flow: `[form reply]` and its answers from
/// `response_json`, else the reply's `body`. Kept short: a flow can return
/// a whole screen of fields, and the transcript is read at a glance.
fn flow_reply_line(reply: &Node<'_>) -> String {
    const MAX_CHARS: usize = 280;
    let answers = reply.loose_text("response_json").and_then(|json| {
        let Some(members) = ordered_members(json.as_bytes()) else {
            return Some(json.to_string());
        };
        let answers: Vec<String> = members
            .iter()
            // The token is the business's own reference, not an answer.
            .filter(|(name, _)| name != "flow_token")
            .filter_map(|(name, value)| Some(format!("{name}: {}", value_text(value)?)))
            .collect();
        (!answers.is_empty()).then(|| answers.join(", "))
    });
    let rest = answers.or_else(|| reply.loose_text("body").map(str::to_string));
    labelled(
        "form reply",
        rest.map(|rest| shortened(&rest, MAX_CHARS)).as_deref(),
    )
}

/// `[location] name, address (latitude, longitude)`, with whichever parts
/// Meta gives.
fn location_line(message: &Node<'_>) -> String {
    let Some(location) = message.loose("location") else {
        return "[location]".to_string();
    };
    let place: Vec<&str> = [location.loose_text("name"), location.loose_text("address")]
        .into_iter()
        .flatten()
        .collect();
    let mut line = labelled("location", Some(&place.join(", ")));
    if let (Some(latitude), Some(longitude)) = (
        coordinate(&location, "latitude"),
        coordinate(&location, "longitude"),
    ) {
        line.push_str(&format!(" ({latitude}, {longitude})"));
    }
    line
}

/// A coordinate as Meta wrote it (a number, or a string holding one).
fn coordinate(location: &Node<'_>, key: &str) -> Option<String> {
    let node = location.loose(key)?;
    match node.value() {
        serde_json::Value::Number(number) => Some(number.to_string()),
        serde_json::Value::String(text) => {
            let text = text.trim();
            text.parse::<f64>().is_ok().then(|| text.to_string())
        }
        _ => None,
    }
}

/// Each shared contact card as `[contact] name phones emails`, joined with `; `.
fn contacts_line(message: &Node<'_>) -> String {
    let cards: Vec<String> = message
        .loose_items("contacts")
        .iter()
        .map(contact_card)
        .collect();
    if cards.is_empty() {
        "[contact]".to_string()
    } else {
        cards.join("; ")
    }
}

fn contact_card(card: &Node<'_>) -> String {
    let name = card.loose("name").and_then(|name| {
        if let Some(formatted) = name.loose_text("formatted_name") {
            return Some(formatted.to_string());
        }
        let parts: Vec<&str> = [name.loose_text("first_name"), name.loose_text("last_name")]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    });
    let phones = card.loose_items("phones").into_iter().filter_map(|phone| {
        phone
            .loose_text("phone")
            .or_else(|| phone.loose_text("wa_id"))
    });
    let emails = card
        .loose_items("emails")
        .into_iter()
        .filter_map(|email| email.loose_text("email"));
    let reach: Vec<&str> = phones.chain(emails).collect();
    let details: Vec<String> = name
        .into_iter()
        .chain((!reach.is_empty()).then(|| reach.join(", ")))
        .collect();
    labelled("contact", Some(&details.join(" ")))
}

/// `[order: 3 items]` and the note the buyer sent with it.
fn order_line(message: &Node<'_>) -> String {
    let order = message.loose("order");
    let items = order
        .as_ref()
        .map(|order| order.loose_items("product_items"))
        .unwrap_or_default()
        .iter()
        .map(|item| {
            item.loose("quantity")
                .and_then(|quantity| quantity.i64().ok())
                .filter(|quantity| *quantity > 0)
                .unwrap_or(1)
        })
        .fold(0_i64, i64::saturating_add);
    let label = match items {
        0 => "order".to_string(),
        1 => "order: 1 item".to_string(),
        many => format!("order: {many} items"),
    };
    labelled(
        &label,
        order.as_ref().and_then(|order| order.loose_text("text")),
    )
}

/// `[unsupported message]`, naming what was sent when Meta says (a poll, an
/// edit, ...) and why Meta could not pass it on.
fn unsupported_line(message: &Node<'_>) -> String {
    let label = match message
        .loose("unsupported")
        .and_then(|unsupported| unsupported.loose_text("type"))
    {
        Some(what) => format!("unsupported message: {}", words(what)),
        None => "unsupported message".to_string(),
    };
    labelled(&label, meta_error(message).as_deref())
}

/// Meta's first error on a message, as `title — details`.
fn meta_error(message: &Node<'_>) -> Option<String> {
    let error = message.loose_items("errors").into_iter().next()?;
    let title = error
        .loose_text("title")
        .or_else(|| error.loose_text("message"));
    let details = error
        .loose("error_data")
        .and_then(|data| data.loose_text("details"))
        .or_else(|| error.loose_text("details"));
    match (title, details) {
        (Some(title), Some(details)) if title != details => Some(format!("{title} — {details}")),
        (Some(text), _) | (None, Some(text)) => Some(text.to_string()),
        (None, None) => None,
    }
}

fn read_status(
    status: &Node<'_>,
    phone_number_id: &str,
) -> Result<Option<InboundEvent>, IntakeError> {
    let message_id = status.id_at("id")?;
    // Statuses the router does not track (Meta adds some from time to time)
    // are skipped rather than failing the batch.
    let Some(delivery) = DeliveryStatus::from_meta(status.str_at("status")?) else {
        return Ok(None);
    };
    let timestamp = status.field("timestamp")?.unix_time(TimeUnit::Seconds)?;
    let recipient_id = status.id_at("recipient_id")?;
    let mut errors = Vec::new();
    for error in status.opt_items_at("errors")? {
        errors.push(MetaError {
            code: error.field("code")?.i64()?,
            title: error.opt_str_at("title")?.map(str::to_string),
            message: error.opt_str_at("message")?.map(str::to_string),
            details: match error.get("error_data")? {
                Some(data) => data.opt_str_at("details")?.map(str::to_string),
                None => None,
            },
        });
    }
    Ok(Some(InboundEvent::WhatsappStatus(WhatsappStatus {
        phone_number_id: phone_number_id.to_string(),
        message_id,
        status: delivery,
        timestamp,
        recipient_id,
        errors,
        biz_opaque_callback_data: status
            .opt_str_at("biz_opaque_callback_data")?
            .map(str::to_string),
    })))
}

/// A `user_preferences` change. Meta documents it thinly, so it is read
/// defensively: the `wa_id` may sit on the preference or only on the
/// contact, numbers may be strings, and categories or values the router
/// does not know are skipped.
fn read_user_preferences_value(value: &Node<'_>, sink: &mut Sink) -> Result<(), IntakeError> {
    let phone_number_id = match value.get("metadata")? {
        Some(metadata) => metadata.opt_id_at("phone_number_id")?,
        None => None,
    };
    let contacts = contacts(value)?;
    let only_contact = match contacts.as_slice() {
        [(wa_id, _)] => Some(wa_id.clone()),
        _ => None,
    };
    for preference in value.opt_items_at("user_preferences")? {
        sink.take(read_user_preference(
            &preference,
            phone_number_id.as_deref(),
            only_contact.as_deref(),
        ));
    }
    Ok(())
}

fn read_user_preference(
    preference: &Node<'_>,
    phone_number_id: Option<&str>,
    only_contact: Option<&str>,
) -> Result<Option<InboundEvent>, IntakeError> {
    let category = preference
        .opt_str_at("category")?
        .map(|category| category.trim().to_ascii_lowercase());
    let Some(category) = category.filter(|category| category == "marketing_messages") else {
        return Ok(None);
    };
    let marketing_opt_out = match preference.opt_str_at("value")?.map(str::trim) {
        Some(word) if word.eq_ignore_ascii_case("stop") => true,
        Some(word) if word.eq_ignore_ascii_case("resume") => false,
        _ => return Ok(None),
    };
    let wa_id = match (preference.opt_id_at("wa_id")?, only_contact) {
        (Some(wa_id), _) => wa_id,
        (None, Some(wa_id)) => wa_id.to_string(),
        (None, None) => preference.id_at("wa_id")?,
    };
    let timestamp = preference
        .field("timestamp")?
        .unix_time(TimeUnit::Seconds)?;
    Ok(Some(InboundEvent::WhatsappUserPreference(
        WhatsappUserPreference {
            phone_number_id: phone_number_id.map(str::to_string),
            wa_id,
            category,
            marketing_opt_out,
            timestamp,
            detail: preference.opt_str_at("detail")?.map(str::to_string),
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::super::error::IntakeErrorKind;
    use super::super::meta::{parse_meta_webhook_lenient, parse_whatsapp_webhook};
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    const INBOUND_TEXT: &[u8] =
        include_bytes!("../../tests/fixtures/meta/whatsapp-inbound-text.json");
    const STATUSES: &[u8] = include_bytes!("../../tests/fixtures/meta/whatsapp-statuses.json");

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    /// A `whatsapp_business_account` webhook with these changes.
    fn webhook(changes: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": changes}]
        }))
        .unwrap()
    }

    fn messages_change(value: serde_json::Value) -> serde_json::Value {
        let mut value = value;
        value["messaging_product"] = json!("whatsapp");
        value["metadata"] =
            json!({"display_phone_number": "15550783881", "phone_number_id": "106540352242922"});
        json!({"field": "messages", "value": value})
    }

    fn message(id: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut message = json!({"from": "919820012345", "id": id, "timestamp": "1799999000"});
        for (key, value) in extra.as_object().unwrap() {
            message[key] = value.clone();
        }
        message
    }

    fn only_message(body: &[u8]) -> WhatsappMessage {
        match parse_whatsapp_webhook(body).unwrap().as_slice() {
            [InboundEvent::WhatsappMessage(message)] => message.clone(),
            other => panic!("expected one message, got {other:?}"),
        }
    }

    #[test]
    fn fixture_inbound_text_becomes_one_message() {
        let events = parse_whatsapp_webhook(INBOUND_TEXT).unwrap();
        assert_eq!(
            events,
            vec![InboundEvent::WhatsappMessage(WhatsappMessage {
                phone_number_id: "106540352242922".into(),
                wa_id: "919820012345".into(),
                profile_name: Some("Aisha Khan".into()),
                message_id:
                    "wamid.HBgMOTE5ODIwMDEyMzQ1FQIAEhggQTdGRjlCMjE3NTk4RkY0NDkwQjJDMjQ1QkQ1NjBGNDQA"
                        .into(),
                timestamp: at(1_799_999_000),
                kind: "text".into(),
                text: Some("Yes please send the Goa options".into()),
                line: "Yes please send the Goa options".into(),
                context_message_id: None,
                referral: None,
                is_echo: false,
            })]
        );
        assert_eq!(
            events[0].source_id(),
            "wamid.HBgMOTE5ODIwMDEyMzQ1FQIAEhggQTdGRjlCMjE3NTk4RkY0NDkwQjJDMjQ1QkQ1NjBGNDQA"
        );
    }

    #[test]
    fn fixture_statuses_become_four_statuses_in_order() {
        let events = parse_whatsapp_webhook(STATUSES).unwrap();
        let statuses: Vec<&WhatsappStatus> = events
            .iter()
            .map(|event| match event {
                InboundEvent::WhatsappStatus(status) => status,
                other => panic!("expected a status, got {other:?}"),
            })
            .collect();
        let summary: Vec<(DeliveryStatus, i64, &str)> = statuses
            .iter()
            .map(|s| (s.status, s.timestamp.timestamp(), s.recipient_id.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (DeliveryStatus::Sent, 1_799_999_100, "919820012345"),
                (DeliveryStatus::Delivered, 1_799_999_102, "919820012345"),
                (DeliveryStatus::Read, 1_799_999_160, "919820012345"),
                (DeliveryStatus::Failed, 1_799_999_170, "917700000001"),
            ]
        );
        assert!(statuses[..3].iter().all(|s| s.errors.is_empty()
            && s.biz_opaque_callback_data.as_deref() == Some("outbox:42")
            && s.phone_number_id == "106540352242922"));
        let failed = statuses[3];
        assert_eq!(
            failed.message_id,
            "wamid.HBgMOTE3NzAwMDAwMDAxFQIAERgSNzc3QTdBMzU0MjM0MUJCNkE5AA=="
        );
        assert_eq!(
            failed.biz_opaque_callback_data.as_deref(),
            Some("outbox:43")
        );
        assert_eq!(
            failed.errors,
            vec![MetaError {
                code: 131_047,
                title: Some("Re-engagement message".into()),
                message: Some("Re-engagement message".into()),
                details: Some("Message failed to send because more than 24 hours have passed since the customer last replied to this number.".into()),
            }]
        );
        let ids: Vec<String> = events.iter().map(InboundEvent::source_id).collect();
        assert_eq!(
            ids[..2],
            [
                "status:wamid.HBgMOTE5ODIwMDEyMzQ1FQIAERgSMkQ2RTdBMzU0MjM0MUJCNkE5AA==:sent",
                "status:wamid.HBgMOTE5ODIwMDEyMzQ1FQIAERgSMkQ2RTdBMzU0MjM0MUJCNkE5AA==:delivered"
            ]
        );
    }

    #[test]
    fn every_change_of_every_entry_in_a_batch_is_returned() {
        let changes: Vec<serde_json::Value> = (0..1000)
            .map(|i| {
                messages_change(json!({
                    "messages": [message(&format!("wamid.{i}"), json!({"type": "text", "text": {"body": "hi"}}))]
                }))
            })
            .collect();
        let mut body: serde_json::Value =
            serde_json::from_slice(&webhook(json!(changes[..500]))).unwrap();
        body["entry"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "2", "changes": changes[500..]}));
        let events = parse_whatsapp_webhook(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(events.len(), 1000);
        assert_eq!(events[0].source_id(), "wamid.0");
        assert_eq!(events[999].source_id(), "wamid.999");
    }

    #[test]
    fn unknown_members_and_unknown_fields_are_ignored() {
        let body = webhook(json!([
            {"field": "message_template_status_update", "value": {"event": "APPROVED"}},
            {"field": "messages", "new_thing": 1, "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "1", "phone_number_id": "106540352242922", "extra": true},
                "contacts": [{"profile": {"name": "Aisha Khan", "pic": "x"}, "wa_id": "919820012345", "user_id": "u"}],
                "messages": [message("wamid.1", json!({"type": "text", "text": {"body": "hi", "lang": "en"}, "new": {}}))],
                "unknown_list": [1, 2, 3]
            }}
        ]));
        let message = only_message(&body);
        assert_eq!(message.text.as_deref(), Some("hi"));
        assert_eq!(message.profile_name.as_deref(), Some("Aisha Khan"));
    }

    #[test]
    fn other_message_types_keep_their_type_without_text() {
        let body = webhook(json!([messages_change(json!({
            "messages": [
                message("wamid.1", json!({"type": "image", "image": {"id": "media", "mime_type": "image/jpeg", "caption": "my venue"}})),
                message("wamid.2", json!({"type": "reaction", "reaction": {"message_id": "wamid.0", "emoji": "👍"}})),
                message("wamid.3", json!({"type": "button", "button": {"payload": "YES", "text": "Yes, call me"}, "context": {"from": "15550783881", "id": "wamid.sent"}})),
                message("wamid.4", json!({"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "gold", "title": "Gold package"}}})),
                message("wamid.5", json!({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "b", "title": "Later"}}})),
                message("wamid.6", json!({"type": "unsupported", "errors": [{"code": 131051}]}))
            ]
        }))]));
        let events = parse_whatsapp_webhook(&body).unwrap();
        let summary: Vec<(String, Option<String>, Option<String>)> = events
            .iter()
            .map(|event| match event {
                InboundEvent::WhatsappMessage(m) => {
                    (m.kind.clone(), m.text.clone(), m.context_message_id.clone())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("image".into(), None, None),
                ("reaction".into(), None, None),
                (
                    "button".into(),
                    Some("Yes, call me".into()),
                    Some("wamid.sent".into())
                ),
                ("interactive".into(), Some("Gold package".into()), None),
                ("interactive".into(), Some("Later".into()), None),
                ("unsupported".into(), None, None),
            ]
        );
        // No contacts in this change: no profile name, and that is fine.
        assert!(matches!(&events[0], InboundEvent::WhatsappMessage(m) if m.profile_name.is_none()));
    }

    #[test]
    fn click_to_whatsapp_referrals_are_kept() {
        let body = webhook(json!([messages_change(json!({
            "messages": [message("wamid.1", json!({
                "type": "text", "text": {"body": "Is this still available?"},
                "referral": {"source_url": "https://fb.me/x", "source_id": "238500000000002", "source_type": "ad",
                             "headline": "Goa weddings", "body": "…", "media_type": "image", "ctwa_clid": "ARAk"}
            }))]
        }))]));
        let referral = only_message(&body).referral.unwrap();
        assert_eq!(referral.source_type.as_deref(), Some("ad"));
        assert_eq!(referral.source_id.as_deref(), Some("238500000000002"));
        assert_eq!(referral.headline.as_deref(), Some("Goa weddings"));
        assert_eq!(referral.ctwa_clid.as_deref(), Some("ARAk"));
    }

    #[test]
    fn the_profile_name_is_the_senders_not_another_contacts() {
        let body = webhook(json!([messages_change(json!({
            "contacts": [{"profile": {"name": "Someone Else"}, "wa_id": "447911123456"}],
            "messages": [message("wamid.1", json!({"type": "text", "text": {"body": "hi"}}))]
        }))]));
        assert_eq!(only_message(&body).profile_name, None);
    }

    #[test]
    fn a_message_without_from_names_its_place() {
        let mut bad = message("wamid.2", json!({"type": "text", "text": {"body": "hi"}}));
        bad.as_object_mut().unwrap().remove("from");
        let body = webhook(json!([
            {"field": "account_update", "value": {}},
            messages_change(json!({"messages": [message("wamid.1", json!({"type": "text", "text": {"body": "ok"}})), bad]}))
        ]));
        let error = parse_whatsapp_webhook(&body).unwrap_err();
        assert_eq!(
            error.to_string(),
            "entry[0].changes[1].value.messages[1]: missing `from`"
        );
        assert_eq!(error.kind(), IntakeErrorKind::Missing);
    }

    #[test]
    fn lenient_reading_keeps_the_good_items_of_a_batch() {
        let body = webhook(json!([
            messages_change(json!({"messages": [
                message("wamid.1", json!({"type": "text", "text": {"body": "ok"}})),
                message("wamid.2", json!({"type": "text", "text": {"body": 5}})),
                message("wamid.3", json!({"type": "text", "text": {"body": "also ok"}}))
            ]})),
            {"field": "messages", "value": {"messages": []}},
            {"value": {}}
        ]));
        let parsed = parse_meta_webhook_lenient(&body).unwrap();
        let ids: Vec<String> = parsed.events.iter().map(InboundEvent::source_id).collect();
        assert_eq!(ids, ["wamid.1", "wamid.3"]);
        let errors: Vec<String> = parsed.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "entry[0].changes[0].value.messages[1].text.body: expected a string, found a number",
                "entry[0].changes[1].value: missing `metadata`",
                "entry[0].changes[2]: missing `field`",
            ]
        );
    }

    #[test]
    fn malformed_messages_and_statuses_say_what_and_where() {
        let cases = [
            (
                json!({"messages": [message("wamid.1", json!({"type": "text"}))]}),
                "entry[0].changes[0].value.messages[0]: missing `text`",
            ),
            (
                json!({"messages": [message("wamid.1", json!({"type": "text", "text": {"body": "x"}, "timestamp": "yesterday"}))]}),
                "entry[0].changes[0].value.messages[0].timestamp: expected a Unix time in seconds, found `yesterday`",
            ),
            (
                json!({"messages": {"from": "1"}}),
                "entry[0].changes[0].value.messages: expected an array, found an object",
            ),
            (
                json!({"statuses": [{"id": "wamid.1", "status": "read", "timestamp": "1"}]}),
                "entry[0].changes[0].value.statuses[0]: missing `recipient_id`",
            ),
            (
                json!({"statuses": [{"id": "wamid.1", "status": "failed", "timestamp": "1", "recipient_id": "9", "errors": [{"title": "x"}]}]}),
                "entry[0].changes[0].value.statuses[0].errors[0]: missing `code`",
            ),
        ];
        for (value, expected) in cases {
            let error =
                parse_whatsapp_webhook(&webhook(json!([messages_change(value)]))).unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn statuses_the_router_does_not_track_are_skipped() {
        let body = webhook(json!([messages_change(json!({"statuses": [
            {"id": "wamid.1", "status": "deleted", "timestamp": "1", "recipient_id": "9"},
            {"id": "wamid.1", "status": "delivered", "timestamp": "2", "recipient_id": "9"}
        ]}))]));
        let events = parse_whatsapp_webhook(&body).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].source_id(), "status:wamid.1:delivered");
    }

    #[test]
    fn user_preferences_record_stops_and_resumes() {
        let body = webhook(json!([{"field": "user_preferences", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"wa_id": "919820012345", "profile": {"name": "Aisha Khan"}}],
            "user_preferences": [
                {"wa_id": "919820012345", "detail": "User requested to stop marketing messages",
                 "category": "marketing_messages", "value": "stop", "timestamp": 1799999500},
                {"category": "marketing_messages", "value": "Resume", "timestamp": "1799999600"},
                {"wa_id": "919820012345", "category": "some_future_category", "value": "stop", "timestamp": 1},
                {"wa_id": "919820012345", "category": "marketing_messages", "value": "pause", "timestamp": 1}
            ]
        }}]));
        let events = parse_whatsapp_webhook(&body).unwrap();
        assert_eq!(
            events,
            vec![
                InboundEvent::WhatsappUserPreference(WhatsappUserPreference {
                    phone_number_id: Some("106540352242922".into()),
                    wa_id: "919820012345".into(),
                    category: "marketing_messages".into(),
                    marketing_opt_out: true,
                    timestamp: at(1_799_999_500),
                    detail: Some("User requested to stop marketing messages".into()),
                }),
                // No wa_id on the preference: taken from the only contact.
                InboundEvent::WhatsappUserPreference(WhatsappUserPreference {
                    phone_number_id: Some("106540352242922".into()),
                    wa_id: "919820012345".into(),
                    category: "marketing_messages".into(),
                    marketing_opt_out: false,
                    timestamp: at(1_799_999_600),
                    detail: None,
                }),
            ]
        );
    }

    #[test]
    fn a_preference_with_no_wa_id_anywhere_is_an_error() {
        let body = webhook(json!([{"field": "user_preferences", "value": {
            "user_preferences": [{"category": "marketing_messages", "value": "stop", "timestamp": 1}]
        }}]));
        assert_eq!(
            parse_whatsapp_webhook(&body).unwrap_err().to_string(),
            "entry[0].changes[0].value.user_preferences[0]: missing `wa_id`"
        );
    }

    #[test]
    fn a_business_app_echo_is_a_message_to_the_user_marked_as_an_echo() {
        let body = webhook(json!([{"field": "smb_message_echoes", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "message_echoes": [{"from": "15550783881", "to": "919820012345", "id": "wamid.echo", "timestamp": "1799999100", "type": "text", "text": {"body": "On it!"}}]
        }}]));
        let events = parse_whatsapp_webhook(&body).unwrap();
        let InboundEvent::WhatsappMessage(m) = &events[0] else {
            panic!("{events:?}");
        };
        assert!(m.is_echo);
        assert_eq!(m.wa_id, "919820012345", "the user it went to");
        assert_eq!(m.text.as_deref(), Some("On it!"));
        assert_eq!(m.line, "On it!");
    }

    /// The transcript line of one inbound message with these members.
    fn line_of(extra: serde_json::Value) -> String {
        let body = webhook(json!([messages_change(json!({
            "contacts": [{"profile": {"name": "Aisha Khan"}, "wa_id": "919820012345"}],
            "messages": [message("wamid.HBgMOTE5ODIwMDEyMzQ1FQIAEhgUM0VCMDRBNzYwREQ0RjMwMjY2MkEA", extra)]
        }))]));
        let message = only_message(&body);
        assert_eq!(message.transcript_line(), message.line);
        message.line
    }

    #[test]
    fn media_read_as_their_kind_and_caption() {
        let media = |kind: &str, part: serde_json::Value| {
            let mut extra = json!({"type": kind});
            extra[kind] = part;
            line_of(extra)
        };
        assert_eq!(
            media(
                "image",
                json!({"caption": "This is the venue I like", "mime_type": "image/jpeg",
                "sha256": "Bk8dDVJ5yFz0cQ1m2hEV3Ik6bZ9F1f6uT8sq4nF0aQ0=", "id": "1482337192609981"})
            ),
            "[image] This is the venue I like"
        );
        assert_eq!(
            media(
                "image",
                json!({"mime_type": "image/jpeg", "sha256": "x", "id": "1"})
            ),
            "[image]"
        );
        assert_eq!(
            media(
                "video",
                json!({"caption": "Walkthrough of the lawn", "mime_type": "video/mp4", "sha256": "x", "id": "2"})
            ),
            "[video] Walkthrough of the lawn"
        );
        assert_eq!(
            media(
                "document",
                json!({"caption": "Our guest list", "filename": "Guest list - Mehta wedding.pdf",
                "mime_type": "application/pdf", "sha256": "x", "id": "3"})
            ),
            "[document: Guest list - Mehta wedding.pdf] Our guest list"
        );
        assert_eq!(
            media(
                "document",
                json!({"mime_type": "application/pdf", "sha256": "x", "id": "3"})
            ),
            "[document]"
        );
        assert_eq!(
            media(
                "sticker",
                json!({"mime_type": "image/webp", "sha256": "x", "id": "4", "animated": false})
            ),
            "[sticker]"
        );
        assert_eq!(
            media(
                "audio",
                json!({"mime_type": "audio/ogg; codecs=opus", "sha256": "x", "id": "5", "voice": true})
            ),
            "[voice message]"
        );
        assert_eq!(
            media(
                "audio",
                json!({"mime_type": "audio/mpeg", "sha256": "x", "id": "6", "voice": false})
            ),
            "[audio]"
        );
    }

    #[test]
    fn a_media_message_with_odd_or_missing_parts_is_still_read() {
        assert_eq!(line_of(json!({"type": "image"})), "[image]");
        assert_eq!(
            line_of(json!({"type": "image", "image": {"caption": 7, "id": {"new": true}}})),
            "[image]"
        );
        assert_eq!(
            line_of(json!({"type": "document", "document": {"filename": "  ", "caption": ["x"]}})),
            "[document]"
        );
        assert_eq!(
            line_of(json!({"type": "audio", "audio": {"voice": "yes", "id": "5"}})),
            "[audio]"
        );
    }

    #[test]
    fn replies_read_as_the_text_the_buyer_tapped() {
        assert_eq!(
            line_of(
                json!({"type": "interactive", "interactive": {"type": "button_reply",
                "button_reply": {"id": "slot_sat_am", "title": "Saturday morning"}},
                "context": {"from": "15550783881", "id": "wamid.sent"}})
            ),
            "Saturday morning"
        );
        assert_eq!(
            line_of(
                json!({"type": "interactive", "interactive": {"type": "list_reply",
                "list_reply": {"id": "gold", "title": "Gold package", "description": "Decor, catering and DJ for 150 guests"}}})
            ),
            "Gold package — Decor, catering and DJ for 150 guests"
        );
        assert_eq!(
            line_of(
                json!({"type": "interactive", "interactive": {"type": "list_reply",
                "list_reply": {"id": "silver", "title": "Silver package"}}})
            ),
            "Silver package"
        );
        assert_eq!(
            line_of(
                json!({"type": "button", "button": {"payload": "CALL_ME_BACK", "text": "Yes, call me"},
                "context": {"from": "15550783881", "id": "wamid.template"}})
            ),
            "Yes, call me"
        );
        assert_eq!(
            line_of(
                json!({"type": "interactive", "interactive": {"type": "call_permission_reply",
                "call_permission_reply": {"response": "accept"}}})
            ),
            "[call permission reply]"
        );
    }

    #[test]
    fn a_completed_flow_reads_as_a_short_form_reply() {
        let flow = |reply: serde_json::Value| {
            line_of(
                json!({"type": "interactive", "interactive": {"type": "nfm_reply", "nfm_reply": reply}}),
            )
        };
        assert_eq!(
            flow(json!({"name": "flow", "body": "Sent",
                "response_json": "{\"flow_token\": \"lead-42\", \"event_date\": \"2027-03-14\", \"guests\": 120, \"venue\": [\"beach\", \"garden\"]}"})),
            "[form reply] event_date: 2027-03-14, guests: 120, venue: beach, garden"
        );
        assert_eq!(
            flow(
                json!({"name": "flow", "body": "Sent", "response_json": "{\"flow_token\": \"lead-42\"}"})
            ),
            "[form reply] Sent"
        );
        let long = format!("{{\"notes\": \"{}\"}}", "very ".repeat(100));
        let line = flow(json!({"name": "flow", "response_json": long}));
        assert!(line.starts_with("[form reply] notes: very very"), "{line}");
        assert!(line.ends_with('…') && line.chars().count() < 300, "{line}");
    }

    #[test]
    fn a_location_reads_as_place_and_coordinates() {
        assert_eq!(
            line_of(
                json!({"type": "location", "location": {"latitude": 15.2345, "longitude": 73.9345,
                "name": "Taj Exotica", "address": "Benaulim, Goa", "url": "https://www.tajhotels.com"}})
            ),
            "[location] Taj Exotica, Benaulim, Goa (15.2345, 73.9345)"
        );
        assert_eq!(
            line_of(
                json!({"type": "location", "location": {"latitude": 26.9124, "longitude": 75.7873}})
            ),
            "[location] (26.9124, 75.7873)"
        );
        assert_eq!(
            line_of(
                json!({"type": "location", "location": {"latitude": "19.0760", "longitude": "72.8777", "name": "Bandra"}})
            ),
            "[location] Bandra (19.0760, 72.8777)"
        );
        assert_eq!(line_of(json!({"type": "location"})), "[location]");
    }

    #[test]
    fn shared_contacts_read_as_names_and_numbers() {
        assert_eq!(
            line_of(json!({"type": "contacts", "contacts": [{
                "name": {"formatted_name": "Rahul Mehta", "first_name": "Rahul", "last_name": "Mehta"},
                "phones": [{"phone": "+91 98200 11111", "wa_id": "919820011111", "type": "CELL"}]
            }]})),
            "[contact] Rahul Mehta +91 98200 11111"
        );
        assert_eq!(
            line_of(json!({"type": "contacts", "contacts": [
                {"name": {"formatted_name": "Rahul Mehta"},
                 "phones": [{"phone": "+91 98200 11111", "type": "CELL"}, {"wa_id": "912266000000", "type": "WORK"}],
                 "emails": [{"email": "rahul@example.com", "type": "WORK"}],
                 "org": {"company": "Mehta Events"}},
                {"name": {"first_name": "Priya", "last_name": "Shah"}, "phones": [{"phone": "+91 98330 22222"}]},
                {"birthday": "1990-01-01"}
            ]})),
            "[contact] Rahul Mehta +91 98200 11111, 912266000000, rahul@example.com; \
             [contact] Priya Shah +91 98330 22222; [contact]"
        );
    }

    #[test]
    fn reactions_read_as_the_emoji_or_its_removal() {
        assert_eq!(
            line_of(
                json!({"type": "reaction", "reaction": {"message_id": "wamid.HBgMOTE5ODIwMDEyMzQ1FQIAERgSQ0ZCNEI1", "emoji": "❤️"}})
            ),
            "[reaction ❤️]"
        );
        assert_eq!(
            line_of(
                json!({"type": "reaction", "reaction": {"message_id": "wamid.HBgMOTE5ODIwMDEyMzQ1FQIAERgSQ0ZCNEI1", "emoji": ""}})
            ),
            "[reaction removed]"
        );
        assert_eq!(
            line_of(
                json!({"type": "reaction", "reaction": {"message_id": "wamid.HBgMOTE5ODIwMDEyMzQ1FQIAERgSQ0ZCNEI1"}})
            ),
            "[reaction removed]"
        );
    }

    #[test]
    fn unsupported_messages_say_what_meta_said() {
        assert_eq!(
            line_of(json!({"type": "unsupported", "errors": [{"code": 131051, "title": "Message type unknown",
                "message": "Message type unknown", "error_data": {"details": "Message type is currently not supported."}}],
                "unsupported": {"type": "poll_creation"}})),
            "[unsupported message: poll creation] Message type unknown — Message type is currently not supported."
        );
        assert_eq!(
            line_of(json!({"type": "unknown", "errors": [{"code": 131051, "details": "Message type is not currently supported", "title": "Unsupported message type"}]})),
            "[unsupported message] Unsupported message type — Message type is not currently supported"
        );
        assert_eq!(
            line_of(json!({"type": "unsupported"})),
            "[unsupported message]"
        );
    }

    #[test]
    fn orders_system_notices_and_new_kinds_read_in_brackets() {
        assert_eq!(
            line_of(
                json!({"type": "order", "order": {"catalog_id": "1054060632000000",
                "text": "Please deliver before the mehendi",
                "product_items": [
                    {"product_retailer_id": "marigold-garland", "quantity": "2", "item_price": 450, "currency": "INR"},
                    {"product_retailer_id": "diya-set", "quantity": 1, "item_price": 300, "currency": "INR"}
                ]}})
            ),
            "[order: 3 items] Please deliver before the mehendi"
        );
        assert_eq!(
            line_of(
                json!({"type": "order", "order": {"product_items": [{"product_retailer_id": "x"}]}})
            ),
            "[order: 1 item]"
        );
        assert_eq!(
            line_of(
                json!({"type": "system", "system": {"body": "Aisha changed their phone number to a new number",
                "new_wa_id": "919820099999", "type": "user_changed_number"}})
            ),
            "[system] Aisha changed their phone number to a new number"
        );
        assert_eq!(
            line_of(json!({"type": "system", "system": {"type": "customer_identity_changed"}})),
            "[system: customer identity changed]"
        );
        assert_eq!(
            line_of(json!({"type": "request_welcome"})),
            "[opened the chat]"
        );
        assert_eq!(
            line_of(json!({"type": "poll_vote", "poll_vote": {"option": 2}})),
            "[poll vote]"
        );
        assert_eq!(line_of(json!({"type": " "})), "[message]");
    }

    #[test]
    fn text_keeps_its_body_and_replies_keep_their_text() {
        let body = webhook(json!([messages_change(json!({"messages": [
            message("wamid.1", json!({"type": "text", "text": {"body": "STOP"}})),
            message("wamid.2", json!({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "b", "title": "Later"}}})),
            message("wamid.3", json!({"type": "image", "image": {"caption": "STOP", "id": "1"}}))
        ]}))]));
        let read: Vec<(Option<String>, String)> = parse_whatsapp_webhook(&body)
            .unwrap()
            .into_iter()
            .map(|event| match event {
                InboundEvent::WhatsappMessage(m) => (m.text, m.line),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            read,
            vec![
                (Some("STOP".into()), "STOP".into()),
                (Some("Later".into()), "Later".into()),
                // A caption is not an opt-out word: `text` stays empty.
                (None, "[image] STOP".into()),
            ]
        );
    }

    #[test]
    fn business_app_echoes_of_media_get_lines_too() {
        let body = webhook(json!([{"field": "smb_message_echoes", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "message_echoes": [
                {"from": "15550783881", "to": "919820012345", "id": "wamid.echo1", "timestamp": "1799999100",
                 "type": "document", "document": {"filename": "Goa packages 2027.pdf", "mime_type": "application/pdf", "id": "9"}},
                {"from": "15550783881", "to": "919820012345", "id": "wamid.echo2", "timestamp": "1799999101",
                 "type": "location", "location": {"latitude": 15.2345, "longitude": 73.9345, "name": "Taj Exotica"}}
            ]
        }}]));
        let lines: Vec<String> = parse_whatsapp_webhook(&body)
            .unwrap()
            .into_iter()
            .map(|event| match event {
                InboundEvent::WhatsappMessage(m) if m.is_echo => m.line,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            lines,
            [
                "[document: Goa packages 2027.pdf]",
                "[location] Taj Exotica (15.2345, 73.9345)"
            ]
        );
    }
}
