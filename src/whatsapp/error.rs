//! Meta's error answers: the `{"error":{...}}` body decoded into
//! [`MetaError`], and the router's reading of each code as an [`ErrorClass`]
//! (the table in the WhatsApp design notes). Decisions go by code, never by
//! message text or HTTP status.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;

/// One error as the Cloud API answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaError {
    pub http_status: u16,
    pub code: i64,
    pub subcode: Option<i64>,
    /// Meta's `type`, such as `OAuthException`.
    pub kind: String,
    pub message: String,
    /// `error_data.details`: Meta's longer explanation.
    pub details: Option<String>,
    pub fbtrace_id: Option<String>,
}

impl MetaError {
    /// Decodes Meta's error body; `None` when `body` is not one (no
    /// `error.code`), so the caller can report the body as unexpected.
    pub fn from_body(http_status: u16, body: &[u8]) -> Option<MetaError> {
        let value: Value = serde_json::from_slice(body).ok()?;
        MetaError::from_value(http_status, &value)
    }

    /// As [`MetaError::from_body`], from parsed JSON.
    pub fn from_value(http_status: u16, value: &Value) -> Option<MetaError> {
        let error = value.get("error")?.as_object()?;
        let code = integer(error.get("code")?)?;
        let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_string);
        Some(MetaError {
            http_status,
            code,
            subcode: error.get("error_subcode").and_then(integer),
            kind: text("type").unwrap_or_default(),
            message: text("message").unwrap_or_default(),
            details: error
                .get("error_data")
                .and_then(|data| data.get("details"))
                .and_then(Value::as_str)
                .map(str::to_string),
            fbtrace_id: text("fbtrace_id"),
        })
    }

    /// The body the Cloud API answers with for this error.
    pub fn to_body(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "code": self.code,
        });
        if let Some(subcode) = self.subcode {
            error["error_subcode"] = json!(subcode);
        }
        if let Some(details) = &self.details {
            error["error_data"] = json!({"messaging_product": "whatsapp", "details": details});
        }
        if let Some(trace) = &self.fbtrace_id {
            error["fbtrace_id"] = json!(trace);
        }
        json!({ "error": error })
    }

    /// What the router should do about this error. An unknown code is a
    /// refusal, unless Meta answered 5xx: then Meta itself is unwell.
    pub fn class(&self) -> ErrorClass {
        match known_class(self.code) {
            Some(class) => class,
            None if (500..600).contains(&self.http_status) => ErrorClass::Unavailable,
            None => ErrorClass::Rejected,
        }
    }
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "meta error {} ({}, http {}): {}",
            self.code,
            self.class(),
            self.http_status,
            self.message
        )?;
        if let Some(details) = &self.details {
            write!(f, "; {details}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MetaError {}

/// Meta sends codes as numbers; a numeric string is read too.
fn integer(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// What a Meta error code means for the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Meta is unavailable or the number is in maintenance: retry with backoff.
    Unavailable,
    /// App, account or throughput limit: retry with backoff, honour the limit.
    RateLimited,
    /// Same business number to the same user too often: retry later, for that recipient only.
    PairRateLimited,
    /// More than 24 hours since the user wrote: resend as an approved template.
    WindowClosed,
    /// Not on WhatsApp, old app and the like: fail, surface to operators.
    Undeliverable,
    /// Held back by Meta's marketing cap: fail, no retry within 24 hours.
    MarketingCapped,
    /// The user stopped marketing messages: record the opt-out, never retry marketing.
    MarketingOptedOut,
    /// Template parameter count or format differs from the approved one: a rules bug.
    TemplateMismatch,
    /// Template missing in that language or not approved: a rules bug.
    TemplateMissing,
    /// Token invalid or expired: fail everything for that number and alert.
    TokenInvalid,
    /// Bad parameter, permission, restricted account, spam limit, or an unknown code: fail, no retry.
    Rejected,
}

impl ErrorClass {
    /// Every class, for metrics and tests.
    pub const ALL: [ErrorClass; 11] = [
        ErrorClass::Unavailable,
        ErrorClass::RateLimited,
        ErrorClass::PairRateLimited,
        ErrorClass::WindowClosed,
        ErrorClass::Undeliverable,
        ErrorClass::MarketingCapped,
        ErrorClass::MarketingOptedOut,
        ErrorClass::TemplateMismatch,
        ErrorClass::TemplateMissing,
        ErrorClass::TokenInvalid,
        ErrorClass::Rejected,
    ];

    /// Whether sending the same message again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Unavailable | ErrorClass::RateLimited | ErrorClass::PairRateLimited
        )
    }

    /// The stable name used in metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::PairRateLimited => "pair_rate_limited",
            ErrorClass::WindowClosed => "window_closed",
            ErrorClass::Undeliverable => "undeliverable",
            ErrorClass::MarketingCapped => "marketing_capped",
            ErrorClass::MarketingOptedOut => "marketing_opted_out",
            ErrorClass::TemplateMismatch => "template_mismatch",
            ErrorClass::TemplateMissing => "template_missing",
            ErrorClass::TokenInvalid => "token_invalid",
            ErrorClass::Rejected => "rejected",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a Meta error code; an unknown code is [`ErrorClass::Rejected`]
/// (use [`MetaError::class`] when the HTTP status is known, so an unknown
/// code answered with 5xx counts as [`ErrorClass::Unavailable`]).
pub fn classify(code: i64) -> ErrorClass {
    known_class(code).unwrap_or(ErrorClass::Rejected)
}

/// The design notes' table; `None` for a code it does not list.
fn known_class(code: i64) -> Option<ErrorClass> {
    Some(match code {
        1 | 2 | 131000 | 131016 | 131057 => ErrorClass::Unavailable,
        4 | 80007 | 130429 => ErrorClass::RateLimited,
        131056 => ErrorClass::PairRateLimited,
        131047 => ErrorClass::WindowClosed,
        131026 => ErrorClass::Undeliverable,
        131049 => ErrorClass::MarketingCapped,
        131050 => ErrorClass::MarketingOptedOut,
        132000 | 132012 => ErrorClass::TemplateMismatch,
        132001 => ErrorClass::TemplateMissing,
        0 | 190 => ErrorClass::TokenInvalid,
        3 | 10 | 100 | 200..=299 | 368 | 131031 | 131048 => ErrorClass::Rejected,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW_CLOSED: &[u8] =
        include_bytes!("../../tests/fixtures/meta/whatsapp-send-error-131047.json");

    #[test]
    fn every_code_in_the_table_has_its_class() {
        use ErrorClass::*;
        let table: &[(&[i64], ErrorClass)] = &[
            (&[1, 2, 131000, 131016, 131057], Unavailable),
            (&[4, 80007, 130429], RateLimited),
            (&[131056], PairRateLimited),
            (&[131047], WindowClosed),
            (&[131026], Undeliverable),
            (&[131049], MarketingCapped),
            (&[131050], MarketingOptedOut),
            (&[132000, 132012], TemplateMismatch),
            (&[132001], TemplateMissing),
            (&[0, 190], TokenInvalid),
            (
                &[100, 3, 10, 200, 201, 250, 299, 368, 131031, 131048],
                Rejected,
            ),
        ];
        for (codes, class) in table {
            for &code in *codes {
                assert_eq!(classify(code), *class, "code {code}");
                // Listed codes keep their class whatever the HTTP status.
                let error = meta(code, 503);
                assert_eq!(error.class(), *class, "code {code} with 503");
            }
        }
        let retryable: Vec<_> = ErrorClass::ALL
            .into_iter()
            .filter(|c| c.is_retryable())
            .collect();
        assert_eq!(retryable, [Unavailable, RateLimited, PairRateLimited]);
    }

    #[test]
    fn unknown_codes_are_refusals_unless_meta_answered_5xx() {
        for code in [199, 300, 131001, 132999, 999999, -1] {
            assert_eq!(classify(code), ErrorClass::Rejected, "code {code}");
            assert_eq!(meta(code, 400).class(), ErrorClass::Rejected);
            assert_eq!(meta(code, 500).class(), ErrorClass::Unavailable);
            assert_eq!(meta(code, 503).class(), ErrorClass::Unavailable);
            assert!(!meta(code, 400).class().is_retryable());
        }
    }

    #[test]
    fn names_are_stable_snake_case_and_match_serde() {
        let names: Vec<_> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "unavailable",
                "rate_limited",
                "pair_rate_limited",
                "window_closed",
                "undeliverable",
                "marketing_capped",
                "marketing_opted_out",
                "template_mismatch",
                "template_missing",
                "token_invalid",
                "rejected"
            ]
        );
        for class in ErrorClass::ALL {
            assert_eq!(serde_json::to_value(class).unwrap(), json!(class.as_str()));
        }
    }

    #[test]
    fn metas_window_closed_body_decodes() {
        let error = MetaError::from_body(400, WINDOW_CLOSED).unwrap();
        assert_eq!(error.code, 131047);
        assert_eq!(error.kind, "OAuthException");
        assert_eq!(error.message, "(#131047) Re-engagement message");
        assert_eq!(error.fbtrace_id.as_deref(), Some("AbCdEfGhIjKlMnOp"));
        assert!(error
            .details
            .as_deref()
            .unwrap()
            .starts_with("Message failed to send because more than 24 hours"));
        assert_eq!(error.subcode, None);
        assert_eq!(error.class(), ErrorClass::WindowClosed);
        // And encodes back to the same JSON.
        let fixture: Value = serde_json::from_slice(WINDOW_CLOSED).unwrap();
        assert_eq!(error.to_body(), fixture);
    }

    #[test]
    fn subcodes_are_read_and_non_errors_are_not_meta_errors() {
        let body = br#"{"error":{"message":"Invalid OAuth access token.","type":"OAuthException","code":190,"error_subcode":463}}"#;
        let error = MetaError::from_body(401, body).unwrap();
        assert_eq!((error.code, error.subcode), (190, Some(463)));
        assert_eq!(error.details, None);
        for body in [
            &b"<html>Service Unavailable</html>"[..],
            br#"{"messages":[{"id":"wamid.x"}]}"#,
            br#"{"error":{"message":"no code"}}"#,
            br#"{"error":"text"}"#,
        ] {
            assert_eq!(MetaError::from_body(503, body), None);
        }
    }

    fn meta(code: i64, http_status: u16) -> MetaError {
        MetaError {
            http_status,
            code,
            subcode: None,
            kind: "OAuthException".into(),
            message: String::new(),
            details: None,
            fbtrace_id: None,
        }
    }
}
