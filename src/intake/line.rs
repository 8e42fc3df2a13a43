//! Transcript lines: how a message that is not plain text reads in a thread's
//! transcript (`[image] caption`, `[contact] name number`), and how an answer
//! reads as text. Shared by the WhatsApp and Instagram readers and by form
//! mapping, so every channel writes the same words for the same things.

use serde_json::Value;

/// A channel's name for a kind of thing, as words: `request_welcome` reads
/// `request welcome`.
pub(crate) fn words(kind: &str) -> String {
    kind.trim().replace('_', " ")
}

/// `[label]`, followed by a space and `rest` when there is any.
pub(crate) fn labelled(label: &str, rest: Option<&str>) -> String {
    match rest.map(str::trim).filter(|rest| !rest.is_empty()) {
        Some(rest) => format!("[{label}] {rest}"),
        None => format!("[{label}]"),
    }
}

/// Text that only hints at something (a shared post's caption, a flow's
/// answers), on one line and at most `max` characters, ending in `…` when
/// cut. What the buyer wrote themselves is never passed through here.
pub(crate) fn shortened(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let kept: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", kept.trim_end())
}

/// An answer as text: strings as they are, numbers and booleans as JSON
/// writes them, lists joined with `, `, objects as compact JSON; `None` for
/// null, blanks and empty lists.
pub(crate) fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => {
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_string())
        }
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Array(values) => {
            let texts: Vec<String> = values.iter().filter_map(value_text).collect();
            (!texts.is_empty()).then(|| texts.join(", "))
        }
        Value::Object(_) => Some(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_read_as_words() {
        assert_eq!(words("request_welcome"), "request welcome");
        assert_eq!(words("story_mention"), "story mention");
    }

    #[test]
    fn a_label_takes_its_rest_only_when_there_is_one() {
        assert_eq!(labelled("image", Some("the venue")), "[image] the venue");
        assert_eq!(labelled("image", Some("  ")), "[image]");
        assert_eq!(labelled("sticker", None), "[sticker]");
    }

    #[test]
    fn hints_are_kept_to_one_short_line() {
        assert_eq!(
            shortened("Sunset  decor\nfor 120", 40),
            "Sunset decor for 120"
        );
        assert_eq!(shortened("abcdefghij", 5), "abcd…");
        assert_eq!(shortened("नमस्ते दुनिया", 4), "नमस…");
        assert_eq!(shortened("abcde", 5), "abcde");
    }

    #[test]
    fn answers_read_as_text() {
        assert_eq!(value_text(&json!(" Goa ")), Some("Goa".into()));
        assert_eq!(value_text(&json!(120)), Some("120".into()));
        assert_eq!(value_text(&json!(true)), Some("true".into()));
        assert_eq!(
            value_text(&json!(["decor", "", null, "catering"])),
            Some("decor, catering".into())
        );
        assert_eq!(
            value_text(&json!({"from": "2027-03-01"})),
            Some(r#"{"from":"2027-03-01"}"#.into())
        );
        assert_eq!(value_text(&json!("")), None);
        assert_eq!(value_text(&json!([])), None);
        assert_eq!(value_text(&Value::Null), None);
    }
}
