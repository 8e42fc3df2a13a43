//! WhatsApp Business Account webhooks: inbound messages, delivery statuses
//! and marketing preferences, read from `entry[].changes[].value`.

use super::error::IntakeError;
use super::event::{
    AdReferral, DeliveryStatus, InboundEvent, MetaError, WhatsappMessage, WhatsappStatus,
    WhatsappUserPreference,
};
use super::json::{Node, TimeUnit};
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
    Ok(InboundEvent::WhatsappMessage(WhatsappMessage {
        phone_number_id: phone_number_id.to_string(),
        wa_id: echo.id_at("to")?,
        profile_name: None,
        message_id: echo.id_at("id")?,
        timestamp: echo.field("timestamp")?.unix_time(TimeUnit::Seconds)?,
        kind,
        text,
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
    Ok(InboundEvent::WhatsappMessage(WhatsappMessage {
        phone_number_id: phone_number_id.to_string(),
        wa_id,
        profile_name,
        message_id,
        timestamp,
        kind,
        text,
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
    }
}
