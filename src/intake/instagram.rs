//! Instagram messaging webhooks: direct messages and the echoes of the
//! business's own replies, read from `entry[].messaging[]`.

use super::error::IntakeError;
use super::event::{InboundEvent, InstagramMessage};
use super::json::{Node, TimeUnit};
use super::meta::Sink;
use chrono::{DateTime, Utc};

/// Reads one `entry` of an `instagram` webhook. Comment and mention
/// `changes`, `standby` events and messaging events without a `message`
/// (reads, reactions, postbacks) are not leads and are skipped.
pub(crate) fn read_entry(entry: &Node<'_>, sink: &mut Sink) {
    let account = entry.id_at("id");
    let events = entry.opt_items_at("messaging");
    let (account, events) = match (account, events) {
        (Ok(account), Ok(events)) => (account, events),
        (Err(error), _) | (_, Err(error)) => return sink.reject(error),
    };
    for event in events {
        sink.take(read_messaging(&event, &account));
    }
}

fn read_messaging(event: &Node<'_>, account: &str) -> Result<Option<InboundEvent>, IntakeError> {
    let Some(message) = event.get("message")? else {
        return Ok(None);
    };
    if message.get("is_deleted")?.map(|n| n.bool()).transpose()? == Some(true) {
        return Ok(None);
    }
    let sender_igsid = event.field("sender")?.id_at("id")?;
    let recipient_id = event.field("recipient")?.id_at("id")?;
    let timestamp = instagram_time(&event.field("timestamp")?)?;
    Ok(Some(InboundEvent::InstagramMessage(InstagramMessage {
        page_or_account_id: account.to_string(),
        sender_igsid,
        recipient_id,
        message_id: message.id_at("mid")?,
        timestamp,
        text: message.opt_str_at("text")?.map(str::to_string),
        is_echo: message
            .get("is_echo")?
            .map(|n| n.bool())
            .transpose()?
            .unwrap_or(false),
    })))
}

/// Instagram writes milliseconds; a value too small to be milliseconds since
/// 1973 is read as seconds, since some Meta samples show seconds.
fn instagram_time(node: &Node<'_>) -> Result<DateTime<Utc>, IntakeError> {
    const SECONDS_BELOW: i64 = 100_000_000_000;
    if node.i64().is_ok_and(|raw| raw < SECONDS_BELOW) {
        node.unix_time(TimeUnit::Seconds)
    } else {
        node.unix_time(TimeUnit::Milliseconds)
    }
}

#[cfg(test)]
mod tests {
    use super::super::meta::{parse_instagram_webhook, parse_meta_webhook};
    use super::*;
    use serde_json::json;

    const DM: &[u8] = include_bytes!("../../tests/fixtures/meta/instagram-dm.json");

    fn webhook(messaging: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "object": "instagram",
            "entry": [{"id": "17841400000000001", "time": 1799998000123_i64, "messaging": messaging}]
        }))
        .unwrap()
    }

    #[test]
    fn fixture_dm_becomes_the_message_and_the_echo() {
        let events = parse_instagram_webhook(DM).unwrap();
        assert_eq!(
            events,
            vec![
                InboundEvent::InstagramMessage(InstagramMessage {
                    page_or_account_id: "17841400000000001".into(),
                    sender_igsid: "7413920000000001".into(),
                    recipient_id: "17841400000000001".into(),
                    message_id: "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAxOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1OTQ3MzA5MjY1NzU4MjA0".into(),
                    timestamp: DateTime::from_timestamp(1_799_998_000, 0).unwrap(),
                    text: Some("Hi! Planning a wedding in Goa on 14 March, about 120 guests".into()),
                    is_echo: false,
                }),
                InboundEvent::InstagramMessage(InstagramMessage {
                    page_or_account_id: "17841400000000001".into(),
                    sender_igsid: "17841400000000001".into(),
                    recipient_id: "7413920000000001".into(),
                    message_id: "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAxOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1OTQ3MzA5MjY1NzU4MjA1".into(),
                    timestamp: DateTime::from_timestamp(1_799_998_060, 0).unwrap(),
                    text: Some("Lovely! Can we continue on WhatsApp?".into()),
                    is_echo: true,
                }),
            ]
        );
        assert_eq!(events[0].channel(), crate::intake::Channel::Instagram);
        assert!(events[0].source_id().ends_with("MjA0"));
        // Both directions belong to the same person.
        let people: Vec<&str> = events
            .iter()
            .map(|event| match event {
                InboundEvent::InstagramMessage(message) => message.person_igsid(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(people, ["7413920000000001", "7413920000000001"]);
        assert_eq!(parse_meta_webhook(DM).unwrap(), events);
    }

    #[test]
    fn reads_reactions_postbacks_and_deletions_are_not_messages() {
        let body = webhook(json!([
            {"sender": {"id": "1"}, "recipient": {"id": "2"}, "timestamp": 1799998000000_i64, "read": {"mid": "m0"}},
            {"sender": {"id": "1"}, "recipient": {"id": "2"}, "timestamp": 1799998000000_i64, "reaction": {"mid": "m0", "action": "react", "emoji": "❤"}},
            {"sender": {"id": "1"}, "recipient": {"id": "2"}, "timestamp": 1799998000000_i64, "postback": {"mid": "m9", "title": "Start"}},
            {"sender": {"id": "1"}, "recipient": {"id": "2"}, "timestamp": 1799998000000_i64, "message": {"mid": "m1", "is_deleted": true}},
            {"sender": {"id": "1"}, "recipient": {"id": "2"}, "timestamp": 1799998000000_i64, "message": {"mid": "m2", "attachments": [{"type": "image", "payload": {"url": "u"}}]}}
        ]));
        let events = parse_instagram_webhook(&body).unwrap();
        assert_eq!(events.len(), 1);
        assert!(
            matches!(&events[0], InboundEvent::InstagramMessage(m) if m.message_id == "m2" && m.text.is_none() && !m.is_echo)
        );
    }

    #[test]
    fn entries_with_changes_only_are_skipped() {
        let body = serde_json::to_vec(&json!({
            "object": "instagram",
            "entry": [{"id": "1", "time": 1, "changes": [{"field": "comments", "value": {"id": "c", "text": "nice"}}]}]
        }))
        .unwrap();
        assert!(parse_instagram_webhook(&body).unwrap().is_empty());
    }

    #[test]
    fn timestamps_in_seconds_are_recognised() {
        let body = webhook(json!([
            {"sender": {"id": "1"}, "recipient": {"id": "2"}, "timestamp": 1799998000, "message": {"mid": "m1", "text": "hi"}}
        ]));
        let events = parse_instagram_webhook(&body).unwrap();
        assert_eq!(events[0].occurred_at().timestamp(), 1_799_998_000);
    }

    #[test]
    fn malformed_messages_say_what_and_where() {
        let cases = [
            (
                json!([{"recipient": {"id": "2"}, "timestamp": 1, "message": {"mid": "m1"}}]),
                "entry[0].messaging[0]: missing `sender`",
            ),
            (
                json!([{"sender": {"id": "1"}, "recipient": {"id": "2"}, "timestamp": 1, "message": {"text": "hi"}}]),
                "entry[0].messaging[0].message: missing `mid`",
            ),
            (
                json!([{"sender": {"id": "1"}, "recipient": {"id": "2"}, "timestamp": 1, "message": {"mid": "m", "is_echo": "yes"}}]),
                "entry[0].messaging[0].message.is_echo: expected a boolean, found a string",
            ),
            (
                json!({"sender": {}}),
                "entry[0].messaging: expected an array, found an object",
            ),
        ];
        for (messaging, expected) in cases {
            let error = parse_instagram_webhook(&webhook(messaging)).unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
    }
}
