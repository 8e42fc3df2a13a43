//! The one input policy for every way a lead comes in (the API, web forms,
//! voice reports, Meta's webhooks) and for what people write in the inbox:
//! which characters text may hold and how long each field may be. A lead is
//! checked against it before anything is stored, so a refusal changes
//! nothing and nothing accepted can fail to store on either database (both
//! refuse NUL in text; PostgreSQL refuses it in JSON too).
//!
//! Entry points whose sender cannot correct a refusal (Meta redelivers a
//! refused webhook for days) are cleaned with [`scrub_event`] instead: the
//! same limits, applied by dropping control characters and cutting text.

use crate::engine::lead::{Answer, TranscriptMessage};
use crate::store::{ConsentRecord, LeadEvent};
use chrono::{DateTime, Datelike, Utc};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt::Display;

/// The limits, documented in docs/api.md ("What the service accepts").
pub const NAME: usize = 200;
pub const FIRST_NAME: usize = 100;
pub const PHONE: usize = 40;
pub const EMAIL: usize = 254;
pub const LANGUAGE: usize = 35;
pub const CHANNEL: usize = 32;
pub const INTENT: usize = 100;
pub const PLAYBOOK: usize = 100;
pub const IDENTITY: usize = 200;
pub const FIELDS: usize = 100;
pub const FIELD_NAME: usize = 64;
pub const FIELD_TEXT: usize = 2_000;
pub const FIELD_LIST: usize = 100;
pub const FIELD_DEPTH: usize = 4;
pub const TAGS: usize = 50;
pub const TAG: usize = 64;
pub const TRANSCRIPT: usize = 500;
pub const SPEAKER: usize = 100;
/// Meta's limit for a WhatsApp text.
pub const MESSAGE: usize = 4_096;
pub const ANSWERS: usize = 200;
pub const QUESTION: usize = 300;
pub const ANSWER: usize = 2_000;
pub const EVIDENCE: usize = 2_000;
/// Times are RFC 3339 with a four-digit year.
pub const FIRST_YEAR: i32 = 1970;
pub const LAST_YEAR: i32 = 9999;

/// Why an input is refused: the field at fault (`fields.guests`,
/// `transcript[0].text`) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

fn refuse(at: &dyn Display, message: String) -> Refusal {
    Refusal {
        at: at.to_string(),
        message,
    }
}

/// What a text may hold: one line (names, IDs), or several (messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Line,
    Text,
}

fn allowed(c: char, shape: Shape) -> bool {
    !c.is_control() || (shape == Shape::Text && matches!(c, '\n' | '\r' | '\t'))
}

/// Checks one text against its shape and length in characters.
pub fn text(value: &str, at: &str, max: usize, shape: Shape) -> Result<(), Refusal> {
    text_at(value, &at, max, shape)
}

/// [`text`], with the field's name written out only if the text is
/// refused: a lead's checks name dozens of fields, and nearly every lead
/// passes them.
fn text_at(value: &str, at: &dyn Display, max: usize, shape: Shape) -> Result<(), Refusal> {
    // Printable ASCII, most of what leads send, holds no control character
    // and has as many characters as bytes: one pass over the bytes.
    if value.bytes().all(|b| (b' '..=b'~').contains(&b)) && value.len() <= max {
        return Ok(());
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c, shape)) {
        let what = if c == '\0' {
            "a NUL character".to_string()
        } else if shape == Shape::Line && matches!(c, '\n' | '\r' | '\t') {
            "a line break or tab (it is one line)".to_string()
        } else {
            format!("the control character U+{:04X}", c as u32)
        };
        return Err(refuse(at, format!("`{at}` holds {what}")));
    }
    // Counting stops one past the limit: a huge value costs no more.
    if value.chars().take(max + 1).count() > max {
        return Err(refuse(
            at,
            format!("`{at}` is longer than {max} characters"),
        ));
    }
    Ok(())
}

fn optional(value: &Option<String>, at: &str, max: usize) -> Result<(), Refusal> {
    value
        .as_deref()
        .map_or(Ok(()), |v| text(v, at, max, Shape::Line))
}

/// Checks a time the service will write back as RFC 3339.
pub fn time(value: &DateTime<Utc>, at: &str) -> Result<(), Refusal> {
    time_at(value, &at)
}

/// [`time`], with the field's name written out only if it is refused.
fn time_at(value: &DateTime<Utc>, at: &dyn Display) -> Result<(), Refusal> {
    if (FIRST_YEAR..=LAST_YEAR).contains(&value.year()) {
        Ok(())
    } else {
        Err(refuse(
            at,
            format!("`{at}` is outside the years {FIRST_YEAR} to {LAST_YEAR}"),
        ))
    }
}

fn count(len: usize, at: &dyn Display, max: usize, what: &str) -> Result<(), Refusal> {
    if len > max {
        Err(refuse(at, format!("`{at}` holds more than {max} {what}")))
    } else {
        Ok(())
    }
}

/// Checks a lead's qualification fields: names, text values, list lengths
/// and nesting.
pub fn fields(map: &Map<String, Value>, at: &str) -> Result<(), Refusal> {
    count(map.len(), &at, FIELDS, "fields")?;
    for (name, value) in map {
        let here = format_args!("{at}.{name}");
        text_at(name, &here, FIELD_NAME, Shape::Line)?;
        json_value(value, &here, 1)?;
    }
    Ok(())
}

fn json_value(value: &Value, at: &dyn Display, depth: usize) -> Result<(), Refusal> {
    match value {
        Value::String(s) => text_at(s, at, FIELD_TEXT, Shape::Text),
        Value::Array(items) => {
            count(items.len(), at, FIELD_LIST, "items")?;
            nested(depth, at)?;
            for (i, item) in items.iter().enumerate() {
                json_value(item, &format_args!("{at}[{i}]"), depth + 1)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            count(map.len(), at, FIELD_LIST, "members")?;
            nested(depth, at)?;
            for (name, item) in map {
                let here = format_args!("{at}.{name}");
                text_at(name, &here, FIELD_NAME, Shape::Line)?;
                json_value(item, &here, depth + 1)?;
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn nested(depth: usize, at: &dyn Display) -> Result<(), Refusal> {
    if depth >= FIELD_DEPTH {
        Err(refuse(
            at,
            format!("`{at}` is nested more than {FIELD_DEPTH} levels deep"),
        ))
    } else {
        Ok(())
    }
}

/// Checks a transcript: its length, each line's speaker, text and time.
pub fn transcript(lines: &[TranscriptMessage], at: &str) -> Result<(), Refusal> {
    count(lines.len(), &at, TRANSCRIPT, "lines")?;
    for (i, m) in lines.iter().enumerate() {
        let channel = format_args!("{at}[{i}].channel");
        text_at(&m.channel, &channel, CHANNEL, Shape::Line)?;
        text_at(
            &m.from,
            &format_args!("{at}[{i}].from"),
            SPEAKER,
            Shape::Line,
        )?;
        text_at(
            &m.text,
            &format_args!("{at}[{i}].text"),
            MESSAGE,
            Shape::Text,
        )?;
        time_at(&m.at, &format_args!("{at}[{i}].at"))?;
    }
    Ok(())
}

/// Checks answers to questions no field is declared for.
pub fn answers(answers: &[Answer], at: &str) -> Result<(), Refusal> {
    count(answers.len(), &at, ANSWERS, "answers")?;
    for (i, a) in answers.iter().enumerate() {
        text_at(
            &a.question,
            &format_args!("{at}[{i}].question"),
            QUESTION,
            Shape::Text,
        )?;
        text_at(
            &a.answer,
            &format_args!("{at}[{i}].answer"),
            ANSWER,
            Shape::Text,
        )?;
    }
    Ok(())
}

fn consent(c: &ConsentRecord) -> Result<(), Refusal> {
    text(&c.channel, "consent.channel", CHANNEL, Shape::Line)?;
    text(&c.source, "consent.source", IDENTITY, Shape::Line)?;
    if let Some(e) = &c.evidence {
        text(e, "consent.evidence", EVIDENCE, Shape::Text)?;
    }
    time(&c.at, "consent.at")
}

/// Checks everything a lead event would store. The field names are the
/// API's (`name`, `fields.guests`, `transcript[0].text`).
pub fn check_event(event: &LeadEvent) -> Result<(), Refusal> {
    for (i, (kind, value)) in event.identities.iter().enumerate() {
        text_at(kind, &format_args!("identities[{i}]"), CHANNEL, Shape::Line)?;
        text_at(value, &identity_field(kind), IDENTITY, Shape::Line)?;
    }
    optional(&event.name, "name", NAME)?;
    optional(&event.profile_name, "profile_name", NAME)?;
    optional(&event.first_name, "first_name", FIRST_NAME)?;
    optional(&event.phone, "phone", PHONE)?;
    optional(&event.email, "email", EMAIL)?;
    optional(&event.language, "language", LANGUAGE)?;
    optional(&event.channel, "channel", CHANNEL)?;
    optional(&event.intent, "intent", INTENT)?;
    optional(&event.playbook, "playbook", PLAYBOOK)?;
    fields(&event.fields, "fields")?;
    count(event.tags.len(), &"tags", TAGS, "tags")?;
    for (i, tag) in event.tags.iter().enumerate() {
        text_at(tag, &format_args!("tags[{i}]"), TAG, Shape::Line)?;
    }
    transcript(&event.messages, "transcript")?;
    answers(&event.answers, "answers")?;
    if let Some(c) = &event.consent {
        consent(c)?;
    }
    if let Some(at) = &event.inbound_at {
        time(at, "inbound_at")?;
    }
    Ok(())
}

/// The API's name for an identity's value.
fn identity_field(kind: &str) -> Cow<'_, str> {
    match kind {
        "phone" | "email" => Cow::Borrowed(kind),
        "external" => Cow::Borrowed("external_id"),
        other => Cow::Owned(format!("identities.{other}")),
    }
}

/// Text cut to the policy: disallowed characters dropped, then at most
/// `max` characters.
pub fn scrub(value: &str, max: usize, shape: Shape) -> String {
    value
        .chars()
        .filter(|c| allowed(*c, shape))
        .take(max)
        .collect()
}

fn scrub_in_place(value: &mut String, max: usize, shape: Shape) {
    if text(value, "", max, shape).is_err() {
        *value = scrub(value, max, shape);
    }
}

fn scrub_optional(value: &mut Option<String>, max: usize) {
    if let Some(v) = value {
        scrub_in_place(v, max, Shape::Line);
    }
}

fn scrub_json(value: &mut Value, depth: usize) {
    match value {
        Value::String(s) => scrub_in_place(s, FIELD_TEXT, Shape::Text),
        Value::Array(_) | Value::Object(_) if depth >= FIELD_DEPTH => {
            *value = Value::String(String::new())
        }
        Value::Array(items) => {
            items.truncate(FIELD_LIST);
            for item in items {
                scrub_json(item, depth + 1);
            }
        }
        Value::Object(map) => {
            *map = std::mem::take(map)
                .into_iter()
                .take(FIELD_LIST)
                .map(|(k, mut v)| {
                    scrub_json(&mut v, depth + 1);
                    (scrub(&k, FIELD_NAME, Shape::Line), v)
                })
                .collect();
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn clamp_time(at: &mut DateTime<Utc>) {
    if time(at, "").is_err() {
        *at = Utc::now();
    }
}

/// Brings an event from a sender that cannot correct it (Meta, a stored
/// event from before these limits) within the policy, so that it stores.
/// What [`check_event`] accepts comes out unchanged.
pub fn scrub_event(event: &mut LeadEvent) {
    for (kind, value) in &mut event.identities {
        scrub_in_place(kind, CHANNEL, Shape::Line);
        scrub_in_place(value, IDENTITY, Shape::Line);
    }
    scrub_optional(&mut event.name, NAME);
    scrub_optional(&mut event.profile_name, NAME);
    scrub_optional(&mut event.first_name, FIRST_NAME);
    scrub_optional(&mut event.phone, PHONE);
    scrub_optional(&mut event.email, EMAIL);
    scrub_optional(&mut event.language, LANGUAGE);
    scrub_optional(&mut event.channel, CHANNEL);
    scrub_optional(&mut event.intent, INTENT);
    scrub_optional(&mut event.playbook, PLAYBOOK);
    event.fields = std::mem::take(&mut event.fields)
        .into_iter()
        .take(FIELDS)
        .map(|(k, mut v)| {
            scrub_json(&mut v, 1);
            (scrub(&k, FIELD_NAME, Shape::Line), v)
        })
        .collect();
    event.tags.truncate(TAGS);
    for tag in &mut event.tags {
        scrub_in_place(tag, TAG, Shape::Line);
    }
    event.messages.truncate(TRANSCRIPT);
    for m in &mut event.messages {
        scrub_in_place(&mut m.channel, CHANNEL, Shape::Line);
        scrub_in_place(&mut m.from, SPEAKER, Shape::Line);
        scrub_in_place(&mut m.text, MESSAGE, Shape::Text);
        clamp_time(&mut m.at);
    }
    event.answers.truncate(ANSWERS);
    for a in &mut event.answers {
        scrub_in_place(&mut a.question, QUESTION, Shape::Text);
        scrub_in_place(&mut a.answer, ANSWER, Shape::Text);
    }
    if let Some(c) = &mut event.consent {
        scrub_in_place(&mut c.channel, CHANNEL, Shape::Line);
        scrub_in_place(&mut c.source, IDENTITY, Shape::Line);
        if let Some(e) = &mut c.evidence {
            scrub_in_place(e, EVIDENCE, Shape::Text);
        }
        clamp_time(&mut c.at);
    }
    if let Some(m) = &mut event.inbound {
        scrub_in_place(&mut m.text, MESSAGE, Shape::Text);
    }
    if let Some(at) = &mut event.inbound_at {
        clamp_time(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lead() -> LeadEvent {
        LeadEvent {
            identities: vec![("phone".into(), "+919812345678".into())],
            name: Some("Aisha Khan".into()),
            phone: Some("+919812345678".into()),
            fields: json!({"guests": 120, "city": "Goa", "notes": "two\nlines"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            tags: vec!["vip".into()],
            messages: vec![TranscriptMessage {
                channel: "instagram".into(),
                from: "lead".into(),
                text: "Hi!\r\nA wedding for 120".into(),
                at: Utc::now(),
            }],
            ..LeadEvent::default()
        }
    }

    #[test]
    fn an_ordinary_lead_passes_and_scrubbing_leaves_it_as_it_was() {
        let event = lead();
        assert_eq!(check_event(&event), Ok(()));
        let mut scrubbed = event.clone();
        scrub_event(&mut scrubbed);
        assert_eq!(format!("{scrubbed:?}"), format!("{event:?}"));
    }

    #[test]
    fn nul_is_refused_in_every_kind_of_text_and_named_by_field() {
        type Change = Box<dyn Fn(&mut LeadEvent)>;
        let cases: Vec<(&str, Change)> = vec![
            ("name", Box::new(|e| e.name = Some("A\0".into()))),
            ("tags[0]", Box::new(|e| e.tags[0] = "v\0".into())),
            (
                "fields.city",
                Box::new(|e| {
                    e.fields.insert("city".into(), json!("G\0a"));
                }),
            ),
            (
                "transcript[0].text",
                Box::new(|e| e.messages[0].text = "hi\0".into()),
            ),
            (
                "fields.x\0",
                Box::new(|e| {
                    e.fields.insert("x\0".into(), json!(1));
                }),
            ),
        ];
        for (at, change) in cases {
            let mut event = lead();
            change(&mut event);
            let refusal = check_event(&event).unwrap_err();
            assert_eq!(refusal.at, at);
            assert!(refusal.message.contains("NUL"), "{}", refusal.message);
            scrub_event(&mut event);
            assert_eq!(check_event(&event), Ok(()), "scrubbed {at}");
        }
    }

    #[test]
    fn a_name_is_one_line_but_a_message_may_have_many() {
        let mut event = lead();
        event.name = Some("Aisha\nKhan".into());
        assert!(check_event(&event)
            .unwrap_err()
            .message
            .contains("line break"));
        assert_eq!(text("a\r\nb\tc", "x", 10, Shape::Text), Ok(()));
    }

    #[test]
    fn lengths_are_counted_in_characters_and_stop_at_the_limit() {
        assert_eq!(text(&"é".repeat(200), "name", NAME, Shape::Line), Ok(()));
        let long = "a".repeat(100_000);
        let refusal = text(&long, "name", NAME, Shape::Line).unwrap_err();
        assert_eq!(refusal.message, "`name` is longer than 200 characters");
        let mut event = lead();
        event.name = Some(long);
        scrub_event(&mut event);
        assert_eq!(event.name.as_deref().map(|n| n.len()), Some(NAME));
    }

    #[test]
    fn times_beyond_year_9999_are_refused() {
        let mut event = lead();
        event.messages[0].at = DateTime::<Utc>::MAX_UTC;
        assert_eq!(check_event(&event).unwrap_err().at, "transcript[0].at");
    }

    #[test]
    fn fields_nest_at_most_four_levels_and_hold_at_most_a_hundred_entries() {
        let mut event = lead();
        event
            .fields
            .insert("deep".into(), json!([[[["too deep"]]]]));
        assert!(check_event(&event)
            .unwrap_err()
            .message
            .contains("nested more than 4"));
        let mut event = lead();
        event.fields = (0..=FIELDS).map(|i| (format!("f{i}"), json!(i))).collect();
        assert_eq!(check_event(&event).unwrap_err().at, "fields");
    }
}
