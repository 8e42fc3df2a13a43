//! The Cloud API client: builds the exact JSON of a text or template send,
//! refuses locally what Meta would refuse, posts it to
//! `{base}/{version}/{phone_number_id}/messages`, and reads Meta's answer into
//! [`Sent`] or a [`SendError`] the router can act on. The token is passed per
//! call and never kept, logged or printed.

use super::error::{ErrorClass, MetaError};
use crate::render::RenderedTemplate;
use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// Meta's limit on a text message's body, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Meta's limit on `biz_opaque_callback_data`, in characters.
pub const MAX_CALLBACK_CHARS: usize = 512;
/// How much of an unexpected body is kept for the error.
const UNEXPECTED_BODY_CHARS: usize = 1000;

/// A client for one Cloud API base and version.
#[derive(Clone, Debug)]
pub struct CloudClient {
    http: reqwest::Client,
    base: String,
    version: String,
    timeout: Duration,
}

/// A message to one WhatsApp user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The number, digits with or without a leading `+`.
    pub to: String,
    pub content: Content,
    /// Sent as `biz_opaque_callback_data`; Meta echoes it in status webhooks.
    pub callback: Option<String>,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Free-form text; only inside the user's 24-hour window.
    Text { body: String },
    /// An approved template with its body parameters in order.
    Template {
        name: String,
        language: String,
        params: Vec<String>,
    },
}

impl From<&RenderedTemplate> for Content {
    fn from(rendered: &RenderedTemplate) -> Content {
        Content::Template {
            name: rendered.name.clone(),
            language: rendered.language.clone(),
            params: rendered.params.clone(),
        }
    }
}

/// Meta accepted the message. Accepted is not delivered: failures may still
/// arrive later as a `failed` status webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// `messages[0].id`, the `wamid.` statuses refer to.
    pub message_id: String,
    /// `contacts[0].wa_id`: key threads on this, it may differ from `to`.
    pub wa_id: Option<String>,
}

/// Why a send did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Meta answered with an error; `retry_after` comes from a `Retry-After`
    /// header (seconds) when there was one. Boxed to keep results small.
    Meta {
        error: Box<MetaError>,
        retry_after: Option<Duration>,
    },
    /// No answer (connect error, timeout, dropped connection). Retryable, but
    /// the message may or may not have reached Meta, so a retry can deliver
    /// it twice.
    Transport(String),
    /// Refused before sending: Meta would have refused it too.
    Invalid(String),
    /// An answer that is neither Meta's success nor Meta's error body.
    Unexpected { status: u16, body: String },
}

impl SendError {
    /// Whether sending the same message again later can succeed.
    pub fn retryable(&self) -> bool {
        match self {
            SendError::Meta { error, .. } => error.class().is_retryable(),
            SendError::Transport(_) => true,
            SendError::Invalid(_) => false,
            SendError::Unexpected { status, .. } => *status >= 500 || *status == 429,
        }
    }

    /// Meta's class of the error, for Meta's own error answers.
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            SendError::Meta { error, .. } => Some(error.class()),
            _ => None,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Meta { error, retry_after } => {
                write!(f, "{error}")?;
                if let Some(after) = retry_after {
                    write!(f, " (retry after {}s)", after.as_secs())?;
                }
                Ok(())
            }
            SendError::Transport(reason) => write!(
                f,
                "the Cloud API did not answer: {reason}; the message may or may not have been sent"
            ),
            SendError::Invalid(reason) => write!(f, "not sent: {reason}"),
            SendError::Unexpected { status, body } => write!(
                f,
                "the Cloud API answered {status} with a body that is not Meta's: `{body}`"
            ),
        }
    }
}

impl std::error::Error for SendError {}

impl OutboundMessage {
    /// Refuses what Meta would refuse, naming the field and what to change.
    pub fn validate(&self) -> Result<(), String> {
        recipient_digits(&self.to)?;
        if let Some(callback) = &self.callback {
            let chars = callback.chars().count();
            if chars > MAX_CALLBACK_CHARS {
                return Err(format!(
                    "`callback` has {chars} characters; Meta takes at most {MAX_CALLBACK_CHARS}"
                ));
            }
        }
        match &self.content {
            Content::Text { body } => {
                let chars = body.chars().count();
                if body.trim().is_empty() {
                    return Err("the text body is empty; Meta refuses empty messages".into());
                }
                if chars > MAX_TEXT_CHARS {
                    return Err(format!(
                        "the text body has {chars} characters; Meta takes at most {MAX_TEXT_CHARS}, so shorten the template"
                    ));
                }
            }
            Content::Template {
                name,
                language,
                params,
            } => {
                if name.trim().is_empty() {
                    return Err("the template has no name".into());
                }
                if language.trim().is_empty() {
                    return Err(format!("template `{name}` has no language"));
                }
                for (i, param) in params.iter().enumerate() {
                    if let Some(problem) = param_problem(param) {
                        return Err(format!(
                            "parameter {} of template `{name}` {problem}; Meta refuses newlines, tabs and runs of more than 4 spaces in parameters, so fold the whitespace",
                            i + 1
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The JSON body Meta expects for this message.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": self.to,
        });
        match &self.content {
            Content::Text { body: text } => {
                body["type"] = json!("text");
                body["text"] = json!({"preview_url": false, "body": text});
            }
            Content::Template {
                name,
                language,
                params,
            } => {
                let mut template = json!({"name": name, "language": {"code": language}});
                if !params.is_empty() {
                    let parameters: Vec<Value> = params
                        .iter()
                        .map(|p| json!({"type": "text", "text": p}))
                        .collect();
                    template["components"] = json!([{"type": "body", "parameters": parameters}]);
                }
                body["type"] = json!("template");
                body["template"] = template;
            }
        }
        if let Some(callback) = &self.callback {
            body["biz_opaque_callback_data"] = json!(callback);
        }
        body
    }
}

/// The digits of a recipient given as digits or `+digits`.
pub(crate) fn recipient_digits(to: &str) -> Result<&str, String> {
    let digits = to.strip_prefix('+').unwrap_or(to);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            "`to` must be the number as digits, with or without a leading `+`, such as `919820012345`"
                .into(),
        );
    }
    Ok(digits)
}

/// What makes a parameter unacceptable to Meta, if anything.
pub(crate) fn param_problem(param: &str) -> Option<&'static str> {
    if param.contains('\n') || param.contains('\r') {
        Some("contains a newline")
    } else if param.contains('\t') {
        Some("contains a tab")
    } else if param.contains("     ") {
        Some("contains more than 4 spaces in a row")
    } else {
        None
    }
}

impl CloudClient {
    /// A client for `base` (such as `https://graph.facebook.com`, or the
    /// sandbox's URL) and `version` (such as `v23.0`); every request gives up
    /// after `timeout`.
    pub fn new(base: &str, version: &str, timeout: Duration) -> Result<CloudClient, String> {
        let base = base.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "the Cloud API base `{base}` is not an http(s) URL; use `https://graph.facebook.com` or the sandbox's URL"
            ));
        }
        let version = version.trim().trim_matches('/');
        if version.is_empty() || version.contains('/') {
            return Err(format!(
                "the Cloud API version `{version}` is not a version; use one like `v23.0`"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .use_rustls_tls()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(CloudClient {
            http,
            base: base.to_string(),
            version: version.to_string(),
            timeout,
        })
    }

    /// Where sends from `phone_number_id` are posted.
    pub fn messages_url(&self, phone_number_id: &str) -> String {
        format!("{}/{}/{phone_number_id}/messages", self.base, self.version)
    }

    /// Sends `message` from the business number `phone_number_id` with the
    /// number's Cloud API `token`.
    pub async fn send(
        &self,
        phone_number_id: &str,
        token: &str,
        message: &OutboundMessage,
    ) -> Result<Sent, SendError> {
        if phone_number_id.is_empty() || !phone_number_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SendError::Invalid(
                "the phone number ID must be Meta's digits, such as `106540352242922`".into(),
            ));
        }
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SendError::Invalid(
                "the Cloud API token is empty or has characters a header cannot carry; check the number's token".into(),
            ));
        }
        message.validate().map_err(SendError::Invalid)?;
        let result = self
            .http
            .post(self.messages_url(phone_number_id))
            .bearer_auth(token)
            .json(&message.body())
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => return Err(self.transport(e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        let outcome = read_answer(status, &bytes, retry_after);
        match &outcome {
            Ok(_) => tracing::debug!(phone_number_id, status, "whatsapp send accepted"),
            Err(e) => tracing::debug!(
                phone_number_id,
                status,
                class = e.class().map(ErrorClass::as_str),
                retryable = e.retryable(),
                "whatsapp send refused"
            ),
        }
        outcome
    }

    fn transport(&self, error: reqwest::Error) -> SendError {
        if error.is_timeout() {
            return SendError::Transport(format!("no answer within {:?}", self.timeout));
        }
        if error.is_builder() {
            return SendError::Invalid(format!(
                "the request cannot be built: {}",
                chain(&error.without_url())
            ));
        }
        SendError::Transport(chain(&error.without_url()))
    }
}

/// An error with its sources, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// Meta's answer to a send, read into the outcome.
fn read_answer(status: u16, body: &[u8], retry_after: Option<Duration>) -> Result<Sent, SendError> {
    let unexpected = || SendError::Unexpected {
        status,
        body: excerpt(body),
    };
    let value: Value = serde_json::from_slice(body).map_err(|_| unexpected())?;
    if !(200..300).contains(&status) {
        return match MetaError::from_value(status, &value) {
            Some(error) => Err(SendError::Meta {
                error: Box::new(error),
                retry_after,
            }),
            None => Err(unexpected()),
        };
    }
    let message_id = value["messages"][0]["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .ok_or_else(unexpected)?;
    Ok(Sent {
        message_id: message_id.to_string(),
        wa_id: value["contacts"][0]["wa_id"].as_str().map(str::to_string),
    })
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(UNEXPECTED_BODY_CHARS).collect();
    if text.chars().count() > UNEXPECTED_BODY_CHARS {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &str) -> OutboundMessage {
        OutboundMessage {
            to: "+919820012345".into(),
            content: Content::Text { body: body.into() },
            callback: None,
        }
    }

    fn template(params: &[&str]) -> OutboundMessage {
        OutboundMessage {
            to: "919820012345".into(),
            content: Content::Template {
                name: "event_options".into(),
                language: "en".into(),
                params: params.iter().map(|p| p.to_string()).collect(),
            },
            callback: Some("outbox:42".into()),
        }
    }

    #[test]
    fn a_text_body_is_metas_session_message() {
        assert_eq!(
            text("Hi Aisha").body(),
            json!({"messaging_product":"whatsapp","recipient_type":"individual",
                "to":"+919820012345","type":"text","text":{"preview_url":false,"body":"Hi Aisha"}})
        );
    }

    #[test]
    fn a_template_body_has_one_body_component_and_the_callback() {
        assert_eq!(
            template(&["Aisha", "March 14", "Goa"]).body(),
            json!({"messaging_product":"whatsapp","recipient_type":"individual",
                "to":"919820012345","type":"template",
                "template":{"name":"event_options","language":{"code":"en"},
                    "components":[{"type":"body","parameters":[
                        {"type":"text","text":"Aisha"},
                        {"type":"text","text":"March 14"},
                        {"type":"text","text":"Goa"}]}]},
                "biz_opaque_callback_data":"outbox:42"})
        );
    }

    #[test]
    fn a_template_without_params_has_no_components() {
        let body = template(&[]).body();
        assert_eq!(
            body["template"],
            json!({"name":"event_options","language":{"code":"en"}})
        );
    }

    #[test]
    fn rendered_templates_become_template_content() {
        let rendered = RenderedTemplate {
            name: "event_pricing".into(),
            language: "en".into(),
            params: vec!["Aisha".into(), "Gold".into()],
            preview: "Hi Aisha, ...".into(),
        };
        assert_eq!(
            Content::from(&rendered),
            Content::Template {
                name: "event_pricing".into(),
                language: "en".into(),
                params: vec!["Aisha".into(), "Gold".into()],
            }
        );
    }

    #[test]
    fn parameters_meta_refuses_are_refused_here() {
        assert_eq!(template(&["Aisha", "a    b"]).validate(), Ok(()));
        for (param, problem) in [
            ("line\nbreak", "contains a newline"),
            ("carriage\rreturn", "contains a newline"),
            ("tab\there", "contains a tab"),
            ("five     spaces", "contains more than 4 spaces in a row"),
        ] {
            let error = template(&["Aisha", param]).validate().unwrap_err();
            assert!(
                error.starts_with(&format!(
                    "parameter 2 of template `event_options` {problem}"
                )),
                "{error}"
            );
        }
    }

    #[test]
    fn text_over_4096_characters_or_empty_is_refused() {
        // Characters, not bytes: 4,096 Devanagari letters are fine.
        assert_eq!(text(&"क".repeat(MAX_TEXT_CHARS)).validate(), Ok(()));
        let error = text(&"a".repeat(MAX_TEXT_CHARS + 1))
            .validate()
            .unwrap_err();
        assert!(error.contains("4097 characters"), "{error}");
        assert!(text("  ").validate().is_err());
    }

    #[test]
    fn recipients_and_callbacks_are_checked() {
        for to in ["919820012345", "+919820012345"] {
            assert_eq!(recipient_digits(to), Ok("919820012345"));
        }
        for to in ["", "+", "91 98200", "abc", "++91"] {
            assert!(recipient_digits(to).is_err(), "{to}");
        }
        let mut message = text("hi");
        message.callback = Some("x".repeat(MAX_CALLBACK_CHARS + 1));
        assert!(message.validate().is_err());
    }

    #[test]
    fn answers_are_read_by_shape_not_status() {
        let ok = include_bytes!("../../tests/fixtures/meta/whatsapp-send-ok.json");
        assert_eq!(
            read_answer(200, ok, None),
            Ok(Sent {
                message_id: "wamid.HBgMOTE5ODIwMDEyMzQ1FQIAERgSMkQ2RTdBMzU0MjM0MUJCNkE5AA==".into(),
                wa_id: Some("919820012345".into()),
            })
        );
        let closed = include_bytes!("../../tests/fixtures/meta/whatsapp-send-error-131047.json");
        let error = read_answer(400, closed, Some(Duration::from_secs(3))).unwrap_err();
        assert_eq!(error.class(), Some(ErrorClass::WindowClosed));
        assert!(!error.retryable());
        assert!(matches!(&error, SendError::Meta { retry_after: Some(d), .. } if d.as_secs() == 3));

        let html = read_answer(503, b"<html>oops</html>", None).unwrap_err();
        assert!(matches!(&html, SendError::Unexpected { status: 503, .. }));
        assert!(html.retryable());
        // A 200 without a message ID is not a success, and not retried:
        // the message may have been sent.
        let odd = read_answer(200, br#"{"messages":[]}"#, None).unwrap_err();
        assert!(matches!(&odd, SendError::Unexpected { status: 200, .. }));
        assert!(!odd.retryable());
        let long = read_answer(502, "x".repeat(5000).as_bytes(), None).unwrap_err();
        assert!(
            matches!(&long, SendError::Unexpected { body, .. } if body.len() == UNEXPECTED_BODY_CHARS + 3)
        );
    }

    #[test]
    fn bases_and_versions_are_checked() {
        let client = CloudClient::new(
            "http://127.0.0.1:9/sandbox//",
            "/v23.0",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            client.messages_url("106540352242922"),
            "http://127.0.0.1:9/sandbox/v23.0/106540352242922/messages"
        );
        assert!(CloudClient::new("graph.facebook.com", "v23.0", Duration::from_secs(1)).is_err());
        assert!(
            CloudClient::new("https://graph.facebook.com", "", Duration::from_secs(1)).is_err()
        );
    }

    #[tokio::test]
    async fn invalid_messages_and_tokens_never_leave_the_process() {
        // Port 9 (discard) is never contacted: every case fails before sending.
        let client =
            CloudClient::new("http://127.0.0.1:9", "v23.0", Duration::from_secs(1)).unwrap();
        let secret = "EAAG-secret-token";
        let cases = [
            ("106540352242922", "bad token\n", text("hi")),
            ("106540352242922", "", text("hi")),
            ("10654/../x", secret, text("hi")),
            ("106540352242922", secret, template(&["a\tb"])),
        ];
        for (id, token, message) in cases {
            let error = client.send(id, token, &message).await.unwrap_err();
            assert!(matches!(error, SendError::Invalid(_)), "{error:?}");
            assert!(!error.retryable());
            assert!(!format!("{error} {error:?} {client:?}").contains("secret"));
        }
    }
}
