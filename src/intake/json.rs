//! A small reader over `serde_json::Value` that knows where it is, so that
//! every shape error names its JSON path (`entry[0].changes[1].value`).
//! Meta's payloads are wide, change often and carry many members we do not
//! read; walking a `Value` keeps unknown members ignorable and errors precise.

use super::error::{IntakeError, IntakeErrorKind};
use chrono::{DateTime, Utc};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Parses a request body as JSON, naming the line and column of a syntax error.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, IntakeError> {
    serde_json::from_slice(body).map_err(|error| {
        IntakeError::new(
            IntakeErrorKind::NotJson,
            "body",
            format!(
                "not JSON: {} at line {}, column {}",
                without_position(&error),
                error.line(),
                error.column()
            ),
        )
    })
}

/// serde_json's message without its trailing " at line L column C", so the
/// caller can put the position where the rest of intake puts locations.
pub(crate) fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// The units a Unix timestamp may be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeUnit {
    Seconds,
    Milliseconds,
}

/// A JSON value and the path that led to it.
#[derive(Clone, Debug)]
pub(crate) struct Node<'a> {
    value: &'a Value,
    path: String,
    root: &'static str,
}

impl<'a> Node<'a> {
    /// The whole document; `root` names it in errors about the document itself.
    pub(crate) fn root(value: &'a Value, root: &'static str) -> Node<'a> {
        Node {
            value,
            path: String::new(),
            root,
        }
    }

    /// The value itself.
    pub(crate) fn value(&self) -> &'a Value {
        self.value
    }

    /// Where this value is, for error messages.
    pub(crate) fn at(&self) -> &str {
        if self.path.is_empty() {
            self.root
        } else {
            &self.path
        }
    }

    fn error(&self, kind: IntakeErrorKind, message: impl Into<String>) -> IntakeError {
        IntakeError::new(kind, self.at(), message)
    }

    fn wrong_type(&self, expected: &str) -> IntakeError {
        self.error(
            IntakeErrorKind::WrongType,
            format!("expected {expected}, found {}", type_name(self.value)),
        )
    }

    /// An error about this value's content (not its type).
    pub(crate) fn invalid(&self, message: impl Into<String>) -> IntakeError {
        self.error(IntakeErrorKind::InvalidValue, message)
    }

    /// The members of an object.
    pub(crate) fn object(&self) -> Result<&'a Map<String, Value>, IntakeError> {
        self.value
            .as_object()
            .ok_or_else(|| self.wrong_type("an object"))
    }

    /// A member of this object; `None` when it is absent or `null`.
    pub(crate) fn get(&self, key: &str) -> Result<Option<Node<'a>>, IntakeError> {
        let object = self.object()?;
        Ok(match object.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some(Node {
                value,
                path: if self.path.is_empty() {
                    key.to_string()
                } else {
                    format!("{}.{key}", self.path)
                },
                root: self.root,
            }),
        })
    }

    /// A member this object must have.
    pub(crate) fn field(&self, key: &str) -> Result<Node<'a>, IntakeError> {
        self.get(key)?
            .ok_or_else(|| self.error(IntakeErrorKind::Missing, format!("missing `{key}`")))
    }

    /// The elements of an array, each knowing its index.
    pub(crate) fn items(&self) -> Result<Vec<Node<'a>>, IntakeError> {
        let array = self
            .value
            .as_array()
            .ok_or_else(|| self.wrong_type("an array"))?;
        Ok(array
            .iter()
            .enumerate()
            .map(|(index, value)| Node {
                value,
                path: format!("{}[{index}]", self.at()),
                root: self.root,
            })
            .collect())
    }

    /// A string.
    pub(crate) fn str(&self) -> Result<&'a str, IntakeError> {
        self.value
            .as_str()
            .ok_or_else(|| self.wrong_type("a string"))
    }

    /// A boolean.
    pub(crate) fn bool(&self) -> Result<bool, IntakeError> {
        self.value
            .as_bool()
            .ok_or_else(|| self.wrong_type("a boolean"))
    }

    /// An integer.
    pub(crate) fn i64(&self) -> Result<i64, IntakeError> {
        match self.value {
            Value::Number(number) => number
                .as_i64()
                .ok_or_else(|| self.invalid(format!("expected an integer, found `{number}`"))),
            Value::String(text) => text
                .trim()
                .parse()
                .map_err(|_| self.invalid(format!("expected an integer, found `{text}`"))),
            _ => Err(self.wrong_type("an integer")),
        }
    }

    /// A Meta object ID: a non-empty string, or a non-negative integer (some
    /// payloads write IDs as numbers), returned as text.
    pub(crate) fn id(&self) -> Result<String, IntakeError> {
        match self.value {
            Value::String(text) if text.trim().is_empty() => {
                Err(self.invalid("expected an ID, found an empty string"))
            }
            Value::String(text) => Ok(text.trim().to_string()),
            Value::Number(number) if number.is_u64() => Ok(number.to_string()),
            _ => Err(self.wrong_type("an ID (a string or a non-negative integer)")),
        }
    }

    /// A Unix timestamp, written as a number or as a string of digits.
    pub(crate) fn unix_time(&self, unit: TimeUnit) -> Result<DateTime<Utc>, IntakeError> {
        let unit_name = match unit {
            TimeUnit::Seconds => "seconds",
            TimeUnit::Milliseconds => "milliseconds",
        };
        let expected = || format!("expected a Unix time in {unit_name}");
        let raw: i64 = match self.value {
            Value::Number(number) => number
                .as_i64()
                .ok_or_else(|| self.invalid(format!("{}, found `{number}`", expected())))?,
            Value::String(text) => text
                .trim()
                .parse()
                .map_err(|_| self.invalid(format!("{}, found `{text}`", expected())))?,
            _ => return Err(self.wrong_type(&format!("a Unix time in {unit_name}"))),
        };
        let time = match unit {
            TimeUnit::Seconds => DateTime::from_timestamp(raw, 0),
            TimeUnit::Milliseconds => DateTime::from_timestamp_millis(raw),
        };
        time.ok_or_else(|| self.invalid(format!("{}, found `{raw}` (out of range)", expected())))
    }

    /// A required string member.
    pub(crate) fn str_at(&self, key: &str) -> Result<&'a str, IntakeError> {
        self.field(key)?.str()
    }

    /// An optional string member.
    pub(crate) fn opt_str_at(&self, key: &str) -> Result<Option<&'a str>, IntakeError> {
        self.get(key)?.map(|node| node.str()).transpose()
    }

    /// A required ID member.
    pub(crate) fn id_at(&self, key: &str) -> Result<String, IntakeError> {
        self.field(key)?.id()
    }

    /// An optional ID member.
    pub(crate) fn opt_id_at(&self, key: &str) -> Result<Option<String>, IntakeError> {
        self.get(key)?.map(|node| node.id()).transpose()
    }

    /// The elements of an optional array member; none when it is absent.
    pub(crate) fn opt_items_at(&self, key: &str) -> Result<Vec<Node<'a>>, IntakeError> {
        match self.get(key)? {
            Some(node) => node.items(),
            None => Ok(Vec::new()),
        }
    }

    // The `loose_*` readers never fail: they are for the parts that only
    // describe a message (captions, titles, coordinates), where a member Meta
    // renames, leaves out or retypes must not cost the router the message.

    /// A member, if this is an object that has it (not `null`).
    pub(crate) fn loose(&self, key: &str) -> Option<Node<'a>> {
        self.get(key).ok().flatten()
    }

    /// A string member with its surrounding blanks removed; `None` when it is
    /// absent, blank or not a string.
    pub(crate) fn loose_text(&self, key: &str) -> Option<&'a str> {
        let text = self.loose(key)?.value.as_str()?.trim();
        (!text.is_empty()).then_some(text)
    }

    /// A boolean member; `None` when it is absent or not a boolean.
    pub(crate) fn loose_bool(&self, key: &str) -> Option<bool> {
        self.loose(key)?.value.as_bool()
    }

    /// The elements of an array member; none when it is absent or not an array.
    pub(crate) fn loose_items(&self, key: &str) -> Vec<Node<'a>> {
        self.loose(key)
            .and_then(|node| node.items().ok())
            .unwrap_or_default()
    }
}

/// The members of the JSON object in `json`, in the order the document
/// writes them; `None` when `json` is not a JSON object.
///
/// `serde_json::Map` keeps its members sorted by key, which loses the order
/// a form asked its questions in; this reads the object member by member.
pub(crate) fn ordered_members(json: &[u8]) -> Option<Vec<(String, Value)>> {
    serde_json::from_slice::<OrderedMembers>(json)
        .ok()
        .map(|members| members.0)
}

struct OrderedMembers(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedMembers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;

        impl<'de> Visitor<'de> for Members {
            type Value = OrderedMembers;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMembers, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(OrderedMembers(members))
            }
        }

        deserializer.deserialize_map(Members)
    }
}

/// How a JSON type is named in error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_name_members_and_indexes() {
        let value = json!({"entry": [{"changes": [{}, {"value": {}}]}]});
        let root = Node::root(&value, "body");
        let changes = root.field("entry").unwrap().items().unwrap()[0]
            .field("changes")
            .unwrap()
            .items()
            .unwrap();
        let error = changes[1]
            .field("value")
            .unwrap()
            .field("messages")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "entry[0].changes[1].value: missing `messages`"
        );
        assert_eq!(error.kind(), IntakeErrorKind::Missing);
    }

    #[test]
    fn errors_about_the_document_itself_use_the_root_name() {
        let value = json!([1]);
        let error = Node::root(&value, "body").field("object").unwrap_err();
        assert_eq!(
            error.to_string(),
            "body: expected an object, found an array"
        );
        let items = Node::root(&value, "body").items().unwrap();
        assert_eq!(items[0].at(), "body[0]");
    }

    #[test]
    fn null_counts_as_absent() {
        let value = json!({"a": null});
        let root = Node::root(&value, "body");
        assert!(root.get("a").unwrap().is_none());
        assert_eq!(
            root.field("a").unwrap_err().to_string(),
            "body: missing `a`"
        );
    }

    #[test]
    fn wrong_types_name_the_expected_and_found_types() {
        let value = json!({"id": true, "text": 5, "list": {}});
        let root = Node::root(&value, "body");
        assert_eq!(
            root.id_at("id").unwrap_err().to_string(),
            "id: expected an ID (a string or a non-negative integer), found a boolean"
        );
        assert_eq!(
            root.str_at("text").unwrap_err().to_string(),
            "text: expected a string, found a number"
        );
        assert_eq!(
            root.opt_items_at("list").unwrap_err().to_string(),
            "list: expected an array, found an object"
        );
    }

    #[test]
    fn ids_may_be_strings_or_integers_but_not_empty() {
        let value = json!({"a": "123", "b": 456, "c": " "});
        let root = Node::root(&value, "body");
        assert_eq!(root.id_at("a").unwrap(), "123");
        assert_eq!(root.id_at("b").unwrap(), "456");
        assert_eq!(
            root.id_at("c").unwrap_err().to_string(),
            "c: expected an ID, found an empty string"
        );
    }

    #[test]
    fn unix_times_accept_numbers_and_digit_strings() {
        let value =
            json!({"s": "1799999000", "n": 1799999000, "ms": 1799998000000_i64, "bad": "soon"});
        let root = Node::root(&value, "body");
        let expected = DateTime::from_timestamp(1_799_999_000, 0).unwrap();
        assert_eq!(
            root.field("s")
                .unwrap()
                .unix_time(TimeUnit::Seconds)
                .unwrap(),
            expected
        );
        assert_eq!(
            root.field("n")
                .unwrap()
                .unix_time(TimeUnit::Seconds)
                .unwrap(),
            expected
        );
        assert_eq!(
            root.field("ms")
                .unwrap()
                .unix_time(TimeUnit::Milliseconds)
                .unwrap(),
            DateTime::from_timestamp(1_799_998_000, 0).unwrap()
        );
        assert_eq!(
            root.field("bad")
                .unwrap()
                .unix_time(TimeUnit::Seconds)
                .unwrap_err()
                .to_string(),
            "bad: expected a Unix time in seconds, found `soon`"
        );
    }

    #[test]
    fn loose_readers_take_what_is_usable_and_never_fail() {
        let value = json!({"caption": "  the venue ", "blank": " ", "n": 5, "voice": true, "list": [1, 2], "obj": {}});
        let root = Node::root(&value, "body");
        assert_eq!(root.loose_text("caption"), Some("the venue"));
        assert_eq!(root.loose_text("blank"), None);
        assert_eq!(root.loose_text("n"), None, "a number is not text");
        assert_eq!(root.loose_text("missing"), None);
        assert_eq!(root.loose_bool("voice"), Some(true));
        assert_eq!(root.loose_bool("n"), None);
        assert_eq!(root.loose_items("list").len(), 2);
        assert!(root.loose_items("obj").is_empty());
        let list = root.field("list").unwrap();
        assert!(list.loose("anything").is_none(), "an array has no members");
    }

    #[test]
    fn ordered_members_keep_the_documents_order() {
        let members =
            ordered_members(br#"{"zeta": 1, "alpha": [2], "mid": {"b": 1}, "alpha": 3}"#).unwrap();
        let keys: Vec<&str> = members.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["zeta", "alpha", "mid", "alpha"]);
        assert_eq!(members[1].1, json!([2]));
        assert_eq!(ordered_members(b"[1]"), None);
        assert_eq!(ordered_members(b"{"), None);
    }

    #[test]
    fn a_body_that_is_not_json_names_line_and_column() {
        let error = parse_body(b"{\n  \"object\": }").unwrap_err();
        assert_eq!(error.kind(), IntakeErrorKind::NotJson);
        assert_eq!(
            error.to_string(),
            "body: not JSON: expected value at line 2, column 13"
        );
    }
}
