//! Instagram messaging webhooks: direct messages and the echoes of the
//! business's own replies, read from `entry[].messaging[]`. Text and every
//! attachment become one transcript line: nothing the buyer sent is dropped.

use super::error::IntakeError;
use super::event::{InboundEvent, InstagramMessage};
use super::json::{Node, TimeUnit};
use super::line::{labelled, shortened, words};
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
        line: transcript_line(&message),
        is_echo: message
            .get("is_echo")?
            .map(|n| n.bool())
            .transpose()?
            .unwrap_or(false),
    })))
}

/// The message as one transcript line, never empty: the text, then each
/// attachment (`[image]`, `[shared post: caption]`, ...), then
/// `(replying to your story)` when it answers one. Infallible for the same
/// reason as WhatsApp's: an attachment Meta adds or reshapes must not cost
/// the router the message.
fn transcript_line(message: &Node<'_>) -> String {
    let mut parts: Vec<String> = message
        .loose_text("text")
        .map(str::to_string)
        .into_iter()
        .collect();
    let attachments = message.loose_items("attachments");
    // Since late 2025 Meta sends a shared post twice, as `share` and as
    // `ig_post` with the same media ID; the buyer shared it once.
    let posts: Vec<&str> = attachments
        .iter()
        .filter(|attachment| kind_of(attachment).as_deref() == Some("ig_post"))
        .filter_map(post_media_id)
        .collect();
    for attachment in &attachments {
        let repeated_post = kind_of(attachment).as_deref() == Some("share")
            && post_media_id(attachment).is_some_and(|id| posts.contains(&id));
        if !repeated_post {
            parts.push(attachment_label(attachment));
        }
    }
    if parts.is_empty() {
        if let Some(payload) = message
            .loose("quick_reply")
            .and_then(|reply| reply.loose_text("payload"))
        {
            parts.push(format!("[quick reply: {}]", shortened(payload, 60)));
        } else if message.loose_bool("is_unsupported") == Some(true) {
            // GIFs, stickers and other content Meta does not pass on.
            parts.push("[unsupported message]".to_string());
        }
    }
    let to_story = message
        .loose("reply_to")
        .is_some_and(|reply| reply.loose("story").is_some());
    if to_story {
        parts.push("(replying to your story)".to_string());
    }
    if parts.is_empty() {
        "[message]".to_string()
    } else {
        parts.join(" ")
    }
}

/// An attachment's `type`, lowercased (Meta's samples show both cases).
fn kind_of(attachment: &Node<'_>) -> Option<String> {
    attachment
        .loose_text("type")
        .map(|kind| kind.to_ascii_lowercase())
}

fn post_media_id<'a>(attachment: &Node<'a>) -> Option<&'a str> {
    attachment.loose("payload")?.loose_text("ig_post_media_id")
}

/// `[image]`, `[video]`, `[audio]`, `[file]`, `[shared post]`,
/// `[story mention]`, `[reel]`, ... with the title Meta gives (a post's or
/// reel's caption) as a short hint. URLs are left out: they expire and are
/// not for reading.
fn attachment_label(attachment: &Node<'_>) -> String {
    const MAX_TITLE_CHARS: usize = 80;
    let label = match kind_of(attachment).as_deref() {
        None => "attachment".to_string(),
        Some("share" | "ig_post") => "shared post".to_string(),
        Some("reel" | "ig_reel") => "reel".to_string(),
        Some("fallback") => "link".to_string(),
        Some(other) => words(other),
    };
    let title = attachment
        .loose("payload")
        .and_then(|payload| payload.loose_text("title"));
    match title {
        Some(title) => format!("[{label}: {}]", shortened(title, MAX_TITLE_CHARS)),
        None => labelled(&label, None),
    }
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
                    line: "Hi! Planning a wedding in Goa on 14 March, about 120 guests".into(),
                    is_echo: false,
                }),
                InboundEvent::InstagramMessage(InstagramMessage {
                    page_or_account_id: "17841400000000001".into(),
                    sender_igsid: "17841400000000001".into(),
                    recipient_id: "7413920000000001".into(),
                    message_id: "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAxOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1OTQ3MzA5MjY1NzU4MjA1".into(),
                    timestamp: DateTime::from_timestamp(1_799_998_060, 0).unwrap(),
                    text: Some("Lovely! Can we continue on WhatsApp?".into()),
                    line: "Lovely! Can we continue on WhatsApp?".into(),
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

    /// The transcript line of one DM with this `message`.
    fn line_of(message: serde_json::Value) -> String {
        let body = webhook(json!([{
            "sender": {"id": "7413920000000001"}, "recipient": {"id": "17841400000000001"},
            "timestamp": 1799998000123_i64, "message": message
        }]));
        match parse_instagram_webhook(&body).unwrap().as_slice() {
            [InboundEvent::InstagramMessage(message)] => {
                assert_eq!(message.transcript_line(), message.line);
                message.line.clone()
            }
            other => panic!("expected one message, got {other:?}"),
        }
    }

    const CDN: &str =
        "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=17900000000000001&signature=AbC";

    #[test]
    fn an_attachment_only_message_has_a_line() {
        assert_eq!(
            line_of(
                json!({"mid": "m1", "attachments": [{"type": "image", "payload": {"url": CDN}}]})
            ),
            "[image]"
        );
        assert_eq!(
            line_of(json!({"mid": "m1", "attachments": [
                {"type": "video", "payload": {"url": CDN}},
                {"type": "audio", "payload": {"url": CDN}},
                {"type": "file", "payload": {"url": CDN}}
            ]})),
            "[video] [audio] [file]"
        );
    }

    #[test]
    fn text_comes_first_then_the_attachments() {
        assert_eq!(
            line_of(
                json!({"mid": "m1", "text": "Is this mandap available in March?",
                "attachments": [{"type": "image", "payload": {"url": CDN}}, {"type": "image", "payload": {"url": CDN}}]})
            ),
            "Is this mandap available in March? [image] [image]"
        );
    }

    #[test]
    fn shares_reels_and_mentions_read_without_urls() {
        assert_eq!(
            line_of(
                json!({"mid": "m1", "attachments": [{"type": "ig_reel", "payload": {
                "reel_video_id": "18040000000000001", "title": "Sunset pheras at the beach, Goa #weddingdecor", "url": CDN}}]})
            ),
            "[reel: Sunset pheras at the beach, Goa #weddingdecor]"
        );
        assert_eq!(
            line_of(
                json!({"mid": "m1", "attachments": [{"type": "story_mention", "payload": {"url": CDN}}]})
            ),
            "[story mention]"
        );
        assert_eq!(
            line_of(
                json!({"mid": "m1", "text": "like this", "attachments": [{"type": "reel", "payload": {"url": CDN}}]})
            ),
            "like this [reel]"
        );
        let caption =
            "Our floral canopy for a 300-guest wedding in Udaipur, with marigold strings, \
                       white orchids and fairy lights over the lake";
        let line = line_of(
            json!({"mid": "m1", "attachments": [{"type": "share", "payload": {"url": CDN, "title": caption}}]}),
        );
        assert!(
            line.starts_with("[shared post: Our floral canopy"),
            "{line}"
        );
        assert!(line.ends_with("…]") && !line.contains("https"), "{line}");
        assert_eq!(
            line_of(
                json!({"mid": "m1", "attachments": [{"type": "template", "payload": {"generic": {"elements": []}}}]})
            ),
            "[template]"
        );
        assert_eq!(
            line_of(
                json!({"mid": "m1", "attachments": [{"type": "fallback", "payload": {"url": "https://example.com", "title": "Venue brochure"}}]})
            ),
            "[link: Venue brochure]"
        );
        assert_eq!(
            line_of(
                json!({"mid": "m1", "attachments": [{"type": "some_new_kind"}, {"payload": {}}]})
            ),
            "[some new kind] [attachment]"
        );
    }

    #[test]
    fn a_post_shared_as_share_and_ig_post_reads_once() {
        assert_eq!(
            line_of(json!({"mid": "m1", "attachments": [
                {"type": "share", "payload": {"ig_post_media_id": "18139494541428835", "title": "Goa weddings", "url": CDN}},
                {"type": "ig_post", "payload": {"ig_post_media_id": "18139494541428835", "title": "Goa weddings", "url": CDN}}
            ]})),
            "[shared post: Goa weddings]"
        );
    }

    #[test]
    fn story_replies_quick_replies_and_unsupported_content() {
        assert_eq!(
            line_of(json!({"mid": "m1", "text": "Is this in Jaipur?",
                "reply_to": {"story": {"url": CDN, "id": "17900000000000002"}}})),
            "Is this in Jaipur? (replying to your story)"
        );
        assert_eq!(
            line_of(
                json!({"mid": "m1", "text": "Book a call", "quick_reply": {"payload": "BOOK_CALL"}})
            ),
            "Book a call"
        );
        assert_eq!(
            line_of(json!({"mid": "m1", "quick_reply": {"payload": "BOOK_CALL"}})),
            "[quick reply: BOOK_CALL]"
        );
        assert_eq!(
            line_of(json!({"mid": "m1", "is_unsupported": true})),
            "[unsupported message]"
        );
        assert_eq!(line_of(json!({"mid": "m1"})), "[message]");
        assert_eq!(
            line_of(json!({"mid": "m1", "attachments": "not a list", "reply_to": {"mid": "m0"}})),
            "[message]",
            "an odd attachments member does not cost the message"
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
