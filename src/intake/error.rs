//! The error every payload reader in intake returns: what was wrong with a
//! channel's payload, where in it, and (when there is one) what to do.

use std::fmt;

/// What kind of problem a payload has; small and `Copy` so callers can match
/// on it (for example to pick an HTTP status) without parsing messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntakeErrorKind {
    /// The body is not JSON at all.
    NotJson,
    /// The payload is JSON but for another kind of webhook (Meta's `object`).
    WrongObject,
    /// A required member is absent or `null`.
    Missing,
    /// A member has the wrong JSON type.
    WrongType,
    /// A member has the right type but a value that cannot be used.
    InvalidValue,
    /// A member that one of our own documented shapes does not allow.
    UnknownField,
}

/// A payload that could not be read, with the place in it that is wrong.
///
/// `Display` gives `"{at}: {message}"`, for example
/// ``entry[0].changes[1].value.messages[0]: missing `from` ``. Messages never
/// quote message text, phone numbers or emails, so they are safe to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntakeError {
    kind: IntakeErrorKind,
    at: String,
    message: String,
    help: Option<String>,
}

impl IntakeError {
    /// An error of `kind` at the payload location `at` (a JSON path such as
    /// `entry[0].changes[1]`, or `line 3, column 7`).
    pub(crate) fn new(
        kind: IntakeErrorKind,
        at: impl Into<String>,
        message: impl Into<String>,
    ) -> IntakeError {
        IntakeError {
            kind,
            at: at.into(),
            message: message.into(),
            help: None,
        }
    }

    /// Adds advice on what the sender should change.
    pub(crate) fn with_help(mut self, help: impl Into<String>) -> IntakeError {
        self.help = Some(help.into());
        self
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> IntakeErrorKind {
        self.kind
    }

    /// Where in the payload the problem is.
    pub fn at(&self) -> &str {
        &self.at
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do about it, when there is something to say.
    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }
}

impl fmt::Display for IntakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.at, self.message)
        }
    }
}

impl std::error::Error for IntakeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_puts_the_location_first_and_keeps_help_apart() {
        let error = IntakeError::new(IntakeErrorKind::Missing, "entry[0]", "missing `id`")
            .with_help("send the account id");
        assert_eq!(error.to_string(), "entry[0]: missing `id`");
        assert_eq!(error.help(), Some("send the account id"));
        assert_eq!(error.kind(), IntakeErrorKind::Missing);
        assert_eq!(error.at(), "entry[0]");
        assert_eq!(error.message(), "missing `id`");
    }

    #[test]
    fn display_without_a_location_is_the_message_alone() {
        let error = IntakeError::new(IntakeErrorKind::NotJson, "", "not JSON");
        assert_eq!(error.to_string(), "not JSON");
    }
}
