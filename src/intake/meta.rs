//! Meta's webhook envelope (`{"object": ..., "entry": [...]}`): checks the
//! object, walks the batch, and hands each entry to the reader for its
//! product (WhatsApp, Instagram, Page lead ads).

use super::error::{IntakeError, IntakeErrorKind};
use super::event::InboundEvent;
use super::json::{parse_body, Node};
use super::{instagram, leadgen, whatsapp};
use std::fmt;

/// The products whose webhooks the router reads (Meta's `object`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetaObject {
    /// `whatsapp_business_account`: messages, statuses, user preferences.
    WhatsappBusinessAccount,
    /// `instagram`: direct messages.
    Instagram,
    /// `page`: lead ads (`leadgen` changes).
    Page,
}

impl MetaObject {
    /// Meta's name for the object.
    pub fn as_str(self) -> &'static str {
        match self {
            MetaObject::WhatsappBusinessAccount => "whatsapp_business_account",
            MetaObject::Instagram => "instagram",
            MetaObject::Page => "page",
        }
    }

    fn from_meta(word: &str) -> Option<MetaObject> {
        [
            MetaObject::WhatsappBusinessAccount,
            MetaObject::Instagram,
            MetaObject::Page,
        ]
        .into_iter()
        .find(|object| object.as_str() == word)
    }
}

impl fmt::Display for MetaObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A webhook delivery read item by item: the events that could be read and
/// the items that could not.
///
/// Meta batches up to 1,000 changes a POST and redelivers a batch for days if
/// it is not acknowledged, so one malformed item must not hold the other 999
/// hostage: a caller that stores the raw body can process `events` and
/// surface `rejected` to operators.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedWebhook {
    pub object: MetaObject,
    /// Every event in delivery order.
    pub events: Vec<InboundEvent>,
    /// One error for each entry, change or item that could not be read.
    pub rejected: Vec<IntakeError>,
}

/// Where the readers put what they read.
#[derive(Default)]
pub(crate) struct Sink {
    pub(crate) events: Vec<InboundEvent>,
    pub(crate) rejected: Vec<IntakeError>,
}

impl Sink {
    /// Keeps an item's event, or its error; `Ok(None)` is an item the router
    /// has no use for (a read receipt, a status it does not track, ...).
    pub(crate) fn take(&mut self, item: Result<Option<InboundEvent>, IntakeError>) {
        match item {
            Ok(Some(event)) => self.events.push(event),
            Ok(None) => {}
            Err(error) => self.rejected.push(error),
        }
    }

    /// Keeps an error from a step that covers several items.
    pub(crate) fn reject(&mut self, error: IntakeError) {
        self.rejected.push(error);
    }
}

/// Reads any webhook the router subscribes to, dispatching on `object`.
/// Strict: the first unreadable item fails the whole delivery.
pub fn parse_meta_webhook(body: &[u8]) -> Result<Vec<InboundEvent>, IntakeError> {
    strict(parse_meta_webhook_lenient(body))
}

/// Reads a `whatsapp_business_account` webhook; strict.
pub fn parse_whatsapp_webhook(body: &[u8]) -> Result<Vec<InboundEvent>, IntakeError> {
    strict(parse_expecting(body, MetaObject::WhatsappBusinessAccount))
}

/// Reads an `instagram` webhook; strict.
pub fn parse_instagram_webhook(body: &[u8]) -> Result<Vec<InboundEvent>, IntakeError> {
    strict(parse_expecting(body, MetaObject::Instagram))
}

/// Reads a `page` webhook (lead ads); strict.
pub fn parse_page_webhook(body: &[u8]) -> Result<Vec<InboundEvent>, IntakeError> {
    strict(parse_expecting(body, MetaObject::Page))
}

/// Reads any webhook the router subscribes to, keeping the items that can be
/// read and reporting the ones that cannot. Fails only when the envelope
/// itself is unusable: not JSON, no known `object`, no `entry` array.
pub fn parse_meta_webhook_lenient(body: &[u8]) -> Result<ParsedWebhook, IntakeError> {
    let value = parse_body(body)?;
    let root = Node::root(&value, "body");
    let object = object_of(&root)?;
    read_entries(&root, object)
}

fn parse_expecting(body: &[u8], expected: MetaObject) -> Result<ParsedWebhook, IntakeError> {
    let value = parse_body(body)?;
    let root = Node::root(&value, "body");
    let node = root.field("object")?;
    let word = node.str()?;
    if word != expected.as_str() {
        return Err(IntakeError::new(
            IntakeErrorKind::WrongObject,
            node.at(),
            format!("expected `{expected}`, found `{word}`"),
        )
        .with_help("this endpoint reads one product's webhooks; check the callback URL configured in the Meta app"));
    }
    read_entries(&root, expected)
}

fn object_of(root: &Node<'_>) -> Result<MetaObject, IntakeError> {
    let node = root.field("object")?;
    let word = node.str()?;
    MetaObject::from_meta(word).ok_or_else(|| {
        IntakeError::new(
            IntakeErrorKind::WrongObject,
            node.at(),
            format!("unsupported object `{word}`"),
        )
        .with_help("the router reads `whatsapp_business_account`, `instagram` and `page` webhooks; unsubscribe the app from the others")
    })
}

fn read_entries(root: &Node<'_>, object: MetaObject) -> Result<ParsedWebhook, IntakeError> {
    let mut sink = Sink::default();
    for entry in root.field("entry")?.items()? {
        match object {
            MetaObject::WhatsappBusinessAccount => whatsapp::read_entry(&entry, &mut sink),
            MetaObject::Instagram => instagram::read_entry(&entry, &mut sink),
            MetaObject::Page => leadgen::read_entry(&entry, &mut sink),
        }
    }
    Ok(ParsedWebhook {
        object,
        events: sink.events,
        rejected: sink.rejected,
    })
}

fn strict(parsed: Result<ParsedWebhook, IntakeError>) -> Result<Vec<InboundEvent>, IntakeError> {
    let mut parsed = parsed?;
    if parsed.rejected.is_empty() {
        Ok(parsed.events)
    } else {
        Err(parsed.rejected.swap_remove(0))
    }
}

/// Reads the `changes[]` of an entry, giving each change's `value` to `read`
/// by its `field`; fields the router does not subscribe to are skipped.
pub(crate) fn read_changes(
    entry: &Node<'_>,
    sink: &mut Sink,
    read: impl Fn(&str, &Node<'_>, &Node<'_>, &mut Sink) -> Result<(), IntakeError>,
) {
    let changes = match entry.opt_items_at("changes") {
        Ok(changes) => changes,
        Err(error) => return sink.reject(error),
    };
    for change in changes {
        let result = change.str_at("field").and_then(|field| {
            let value = change.field("value")?;
            read(field, entry, &value, sink)
        });
        if let Err(error) = result {
            sink.reject(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatches_on_object() {
        let body = br#"{"object":"page","entry":[]}"#;
        let parsed = parse_meta_webhook_lenient(body).unwrap();
        assert_eq!(parsed.object, MetaObject::Page);
        assert!(parsed.events.is_empty());
        assert!(parse_meta_webhook(body).unwrap().is_empty());
    }

    #[test]
    fn an_unknown_object_is_an_error_that_says_what_is_read() {
        let error = parse_meta_webhook(br#"{"object":"user","entry":[]}"#).unwrap_err();
        assert_eq!(error.kind(), IntakeErrorKind::WrongObject);
        assert_eq!(error.to_string(), "object: unsupported object `user`");
        assert!(error.help().unwrap().contains("`instagram`"));
    }

    #[test]
    fn a_product_endpoint_refuses_another_products_webhook() {
        let error = parse_instagram_webhook(br#"{"object":"page","entry":[]}"#).unwrap_err();
        assert_eq!(error.kind(), IntakeErrorKind::WrongObject);
        assert_eq!(
            error.to_string(),
            "object: expected `instagram`, found `page`"
        );
        let error = parse_whatsapp_webhook(br#"{"object":"instagram","entry":[]}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "object: expected `whatsapp_business_account`, found `instagram`"
        );
        assert!(parse_page_webhook(br#"{"object":"page","entry":[]}"#).is_ok());
    }

    #[test]
    fn the_envelope_must_have_an_object_and_an_entry_array() {
        assert_eq!(
            parse_meta_webhook(br#"{"entry":[]}"#)
                .unwrap_err()
                .to_string(),
            "body: missing `object`"
        );
        assert_eq!(
            parse_meta_webhook(br#"{"object":"page"}"#)
                .unwrap_err()
                .to_string(),
            "body: missing `entry`"
        );
        assert_eq!(
            parse_meta_webhook(br#"{"object":"page","entry":{}}"#)
                .unwrap_err()
                .to_string(),
            "entry: expected an array, found an object"
        );
        assert_eq!(
            parse_meta_webhook(b"[]").unwrap_err().to_string(),
            "body: expected an object, found an array"
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_rejected_with_its_position() {
        let error = parse_meta_webhook(b"object=page").unwrap_err();
        assert_eq!(error.kind(), IntakeErrorKind::NotJson);
        assert!(
            error
                .to_string()
                .starts_with("body: not JSON: expected value at line 1, column 1"),
            "{error}"
        );
    }
}
