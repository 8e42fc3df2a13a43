//! The sandbox: a local simulator of the WhatsApp Cloud API that checks sends
//! as Meta does and answers with Meta's shapes and codes, keeps each user's
//! 24-hour window on a clock tests can move, posts signed status, inbound
//! message (of every kind) and marketing preference webhooks, fails marketing
//! templates to users who stopped them as Meta does, and injects faults on
//! request. Its control API under
//! `/_sandbox/` records what was sent and drives the rest. All state is in
//! memory behind one mutex, never held across an await.

use super::client::{param_problem, recipient_digits, MAX_CALLBACK_CHARS, MAX_TEXT_CHARS};
use super::error::MetaError;
use crate::dsl::check::TemplateCatalog;
use crate::intake::signature::{constant_time_eq, sign, META_SIGNATURE_HEADER};
use crate::render::{placeholders, ApprovedTemplate, Category, Templates};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a user's message keeps the window open.
const WINDOW_SECONDS: i64 = 24 * 60 * 60;
/// Attempts of a played inbound message's webhook, whose answer the caller
/// waits for.
const WEBHOOK_ATTEMPTS: u32 = 4;
/// Attempts of a status webhook. Meta redelivers for days; the sandbox keeps
/// at it for about a minute, long enough for a receiver to be restarted,
/// which is what at-most-once delivery across a crash relies on.
const STATUS_WEBHOOK_ATTEMPTS: u32 = 16;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// The display number of a phone number ID the configuration does not list.
const DEFAULT_DISPLAY_NUMBER: &str = "15550000000";
const ERROR_CODES_URL: &str =
    "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/";
/// The `user_preferences` category of marketing messages.
const MARKETING_MESSAGES: &str = "marketing_messages";
/// Message types whose webhook message carries an object named after the
/// type (`"type":"image","image":{...}`); `contacts` carries an array.
const TYPES_WITH_OBJECT: &[&str] = &[
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
];

/// The control API, for `handoff sandbox` to print and `GET /_sandbox` to answer.
pub const CONTROL_ROUTES: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/_sandbox/messages",
        "every accepted send in order, and rejected attempts by code",
    ),
    (
        "DELETE",
        "/_sandbox/messages",
        "forget recorded sends and counts",
    ),
    (
        "GET",
        "/_sandbox/faults",
        "faults waiting for the next sends",
    ),
    (
        "POST",
        "/_sandbox/faults",
        r#"queue a fault: {"code":130429,"count":2,"retry_after":5} | {"http_status":503,"html":true} | {"delay_ms":3000} | {"code":131026,"as_status":true}; optional "to""#,
    ),
    ("DELETE", "/_sandbox/faults", "drop queued faults"),
    (
        "POST",
        "/_sandbox/inbound",
        r#"a user writes in: {"phone_number_id":"106540352242922","from":"919820012345","name":"Aisha","text":"hi"}, or sends any other kind with "message" in place of "text": {"type":"image","image":{"id":"1234","mime_type":"image/jpeg","caption":"the venue"}} (Meta's message object without "from", "id" and "timestamp"); the ID may be left out when numbers are configured"#,
    ),
    (
        "GET",
        "/_sandbox/preferences",
        "each user's last marketing preference, by number",
    ),
    (
        "POST",
        "/_sandbox/preferences",
        r#"a user stops or resumes marketing messages: {"from":"919820012345","value":"stop"} | {"value":"resume"}; optional "phone_number_id", "name"; marketing templates to a stopped user are accepted, then fail with 131050"#,
    ),
    ("GET", "/_sandbox/clock", "the sandbox's time"),
    (
        "POST",
        "/_sandbox/clock",
        r#"move the clock: {"advance_seconds":86400}"#,
    ),
    (
        "GET",
        "/_sandbox/templates",
        "the templates sends are checked against",
    ),
    (
        "POST",
        "/_sandbox/templates",
        r#"add or change one: {"name","language","category","params","approved"}"#,
    ),
];

/// A template as Meta knows it: enough to check a send against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxTemplate {
    pub name: String,
    pub language: String,
    #[serde(default = "default_category")]
    pub category: String,
    /// How many body parameters a send must give.
    #[serde(default)]
    pub params: usize,
    #[serde(default = "yes")]
    pub approved: bool,
}

fn default_category() -> String {
    "utility".into()
}

fn yes() -> bool {
    true
}

impl SandboxTemplate {
    /// The template as approved in `templates/whatsapp.yaml`.
    pub fn from_approved(template: &ApprovedTemplate) -> SandboxTemplate {
        let category = match template.category {
            Category::Marketing => "marketing",
            Category::Utility => "utility",
            Category::Authentication => "authentication",
        };
        SandboxTemplate {
            name: template.name.clone(),
            language: template.language.clone(),
            category: category.into(),
            // Placeholders are numbered without gaps (checked on load), so
            // the highest is the count.
            params: placeholders(&template.body).into_iter().max().unwrap_or(0),
            approved: true,
        }
    }

    /// Every approved template of a templates directory.
    pub fn all_from(templates: &Templates) -> Vec<SandboxTemplate> {
        templates
            .approved_names()
            .iter()
            .filter_map(|name| templates.approved(name))
            .map(SandboxTemplate::from_approved)
            .collect()
    }
}

/// What the sandbox simulates.
#[derive(Clone)]
pub struct SandboxConfig {
    pub templates: Vec<SandboxTemplate>,
    /// (phone_number_id, display number digits); empty accepts any ID.
    pub numbers: Vec<(String, String)>,
    /// Accepted Cloud API tokens; empty accepts any non-empty token.
    pub tokens: Vec<String>,
    /// Signs webhooks (`X-Hub-Signature-256`); unsigned without it.
    pub app_secret: Option<String>,
    /// Where status and inbound webhooks are POSTed.
    pub webhook_url: Option<String>,
    /// The WhatsApp Business Account ID webhooks carry in `entry[].id`.
    pub waba_id: String,
    /// Whether accepted sends produce `sent`/`delivered` status webhooks.
    pub status_webhooks: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            templates: Vec::new(),
            numbers: Vec::new(),
            tokens: Vec::new(),
            app_secret: None,
            webhook_url: None,
            waba_id: "102290129340398".into(),
            status_webhooks: true,
        }
    }
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("templates", &self.templates.len())
            .field("numbers", &self.numbers)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("app_secret", &self.app_secret.as_ref().map(|_| "***"))
            .field("webhook_url", &self.webhook_url)
            .field("waba_id", &self.waba_id)
            .field("status_webhooks", &self.status_webhooks)
            .finish()
    }
}

/// A fault to inject into the next `count` sends (to `to` only, when given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// How many sends it applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// Only sends to this recipient (digits, `+` optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Answer with Meta's error of this code (or, with `as_status`, accept
    /// and report it in a `failed` status webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The HTTP status to answer with: alone, a 5xx with Meta's code 1 or 2;
    /// with `code`, that code under this status (such as 429 for 130429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Answer an HTML page instead of JSON, as a proxy in front of Meta would.
    #[serde(default)]
    pub html: bool,
    /// A `Retry-After` header, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Hold the answer this long; the send is then handled as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Accept the send, then report `code` in a `failed` status webhook, as
    /// Meta does for failures it finds after accepting.
    #[serde(default)]
    pub as_status: bool,
    /// `error_data.details` to report instead of the usual text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// Refuses faults that cannot mean anything; keeps `to` as digits.
    fn check(&mut self) -> Result<(), String> {
        if self.count == 0 {
            return Err("`count` must be at least 1".into());
        }
        if self.code.is_none() && self.http_status.is_none() && self.delay_ms.is_none() {
            return Err("a fault needs `code`, `http_status` or `delay_ms`".into());
        }
        if let Some(status) = self.http_status {
            if !(400..=599).contains(&status) {
                return Err(format!(
                    "`http_status` {status} is not an error status; use 400 to 599"
                ));
            }
        }
        if let (None, Some(status), false) = (self.code, self.http_status, self.html) {
            if status < 500 {
                return Err(format!(
                    "`http_status` {status} alone means nothing to Meta; give the `code` too, or use a 5xx"
                ));
            }
        }
        if self.html && self.http_status.is_none() {
            return Err("`html` needs `http_status`, such as 502".into());
        }
        if self.html && self.code.is_some() {
            return Err("an HTML answer carries no Meta `code`; drop one of them".into());
        }
        if self.as_status {
            if self.code.is_none() {
                return Err("`as_status` needs the `code` the failed status reports".into());
            }
            if self.http_status.is_some() || self.retry_after.is_some() {
                return Err(
                    "`as_status` accepts the send, so `http_status` and `retry_after` do not apply"
                        .into(),
                );
            }
        }
        if let Some(to) = &self.to {
            self.to = Some(recipient_digits(to)?.to_string());
        }
        Ok(())
    }
}

/// A send the sandbox accepted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedSend {
    pub wamid: String,
    pub phone_number_id: String,
    /// `to` exactly as sent.
    pub to: String,
    pub wa_id: String,
    /// `text` or `template`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request body as received.
    pub body: Value,
    /// `biz_opaque_callback_data`.
    pub callback: Option<String>,
    /// When it was accepted, on the sandbox's clock.
    pub at: DateTime<Utc>,
    /// The code of the `failed` status a fault reports for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_code: Option<i64>,
}

/// A user writing to a business number: a text, or a message of any kind.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// The business number; the first configured one when omitted.
    #[serde(default)]
    pub phone_number_id: Option<String>,
    /// The user's number, digits.
    pub from: String,
    /// The user's profile name.
    #[serde(default)]
    pub name: Option<String>,
    /// The body of a text message; give this or `message`.
    #[serde(default)]
    pub text: Option<String>,
    /// A message object as Meta's webhook carries it, without the `from`,
    /// `id` and `timestamp` the sandbox fills, such as
    /// `{"type":"image","image":{"id":"1234","mime_type":"image/jpeg"}}`;
    /// give this or `text`.
    #[serde(default)]
    pub message: Option<Value>,
}

/// A user's choice about marketing messages from a business number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MarketingPreference {
    Stop,
    Resume,
}

impl MarketingPreference {
    fn read(value: &str) -> Result<MarketingPreference, String> {
        match value {
            "stop" => Ok(MarketingPreference::Stop),
            "resume" => Ok(MarketingPreference::Resume),
            other => Err(format!(
                "`value` must be `stop` or `resume` (as Meta's `user_preferences` webhook says it), not `{other}`"
            )),
        }
    }

    /// The word Meta's webhook carries in `value`.
    fn word(self) -> &'static str {
        match self {
            MarketingPreference::Stop => "stop",
            MarketingPreference::Resume => "resume",
        }
    }

    /// Meta's `detail` for it.
    fn detail(self) -> &'static str {
        match self {
            MarketingPreference::Stop => "User requested to stop marketing messages",
            MarketingPreference::Resume => "User requested to resume marketing messages",
        }
    }
}

/// A user stopping or resuming marketing messages, as
/// `POST /_sandbox/preferences` takes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceChange {
    /// The business number; the first configured one when omitted.
    #[serde(default)]
    pub phone_number_id: Option<String>,
    /// The user's number, digits.
    pub from: String,
    /// The user's profile name.
    #[serde(default)]
    pub name: Option<String>,
    /// `stop` or `resume`.
    pub value: String,
}

/// A user's last marketing preference for a business number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordedPreference {
    pub phone_number_id: String,
    pub wa_id: String,
    /// Meta's category, `marketing_messages`.
    pub category: &'static str,
    pub value: MarketingPreference,
    /// When the user chose it, on the sandbox's clock.
    pub at: DateTime<Utc>,
}

/// What playing a preference change did.
#[derive(Clone, Debug, Serialize)]
pub struct PreferenceOutcome {
    #[serde(flatten)]
    pub preference: RecordedPreference,
    /// `None` without a webhook URL.
    pub webhook: Option<WebhookAnswer>,
}

/// What a webhook receiver answered, after retries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebhookAnswer {
    pub attempts: u32,
    pub status: Option<u16>,
    pub body: Option<String>,
    /// Why no answer came, when none did.
    pub error: Option<String>,
}

impl WebhookAnswer {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What playing a user writing in did.
#[derive(Clone, Debug, Serialize)]
pub struct InboundOutcome {
    pub phone_number_id: String,
    pub wa_id: String,
    pub message_id: String,
    pub window_open_until: DateTime<Utc>,
    /// `None` without a webhook URL.
    pub webhook: Option<WebhookAnswer>,
}

/// The simulator. Share it as `Arc<Sandbox>` between [`router`] and tests.
pub struct Sandbox {
    numbers: Vec<(String, String)>,
    tokens: Vec<String>,
    app_secret: Option<String>,
    webhook_url: Option<String>,
    waba_id: String,
    status_webhooks: bool,
    http: reqwest::Client,
    ledger: Mutex<Ledger>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("numbers", &self.numbers)
            .field("webhook_url", &self.webhook_url)
            .finish_non_exhaustive()
    }
}

/// Everything that changes.
#[derive(Default)]
struct Ledger {
    templates: Vec<SandboxTemplate>,
    /// (phone_number_id, wa_id) -> when the user last wrote.
    windows: HashMap<(String, String), DateTime<Utc>>,
    /// (phone_number_id, wa_id) -> the user's last marketing preference.
    preferences: BTreeMap<(String, String), RecordedPreference>,
    clock_offset: i64,
    messages: Vec<RecordedSend>,
    rejected: BTreeMap<String, u64>,
    faults: Vec<Fault>,
    sequence: u64,
    webhooks_delivered: u64,
    webhooks_failed: u64,
}

impl Ledger {
    fn now(&self) -> DateTime<Utc> {
        shifted(Utc::now(), self.clock_offset)
    }

    fn next_wamid(&mut self) -> String {
        self.sequence += 1;
        let unique = uuid::Uuid::now_v7()
            .simple()
            .to_string()
            .to_ascii_uppercase();
        format!("wamid.HBgM{unique}{:06X}", self.sequence)
    }
}

fn shifted(at: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    TimeDelta::try_seconds(seconds)
        .and_then(|delta| at.checked_add_signed(delta))
        .unwrap_or(at)
}

/// The code, and `error_data.details` if not the usual text, that a
/// `failed` status reports for an accepted send.
type StatusFailure = (i64, Option<String>);

/// A send the sandbox took: its record, Meta's pricing category for it, and
/// the failure its status reports instead of delivery, if any.
struct Accepted {
    record: RecordedSend,
    category: String,
    failure: Option<StatusFailure>,
}

/// A send that passed the checks that need no state.
struct SendRequest {
    to: String,
    wa_id: String,
    body: Value,
    callback: Option<String>,
    kind: RequestKind,
}

enum RequestKind {
    Text,
    Template {
        name: String,
        language: String,
        /// `Some(text)` per text parameter, `None` for other types.
        params: Vec<Option<String>>,
    },
}

impl Sandbox {
    /// A sandbox simulating `config`.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, String> {
        if let Some(url) = &config.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "the webhook URL `{url}` is not an http(s) URL, such as `http://127.0.0.1:8080/webhooks/meta/acme`"
                ));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        let mut ledger = Ledger::default();
        for template in config.templates {
            upsert(&mut ledger.templates, template);
        }
        Ok(Sandbox {
            numbers: config.numbers,
            tokens: config.tokens,
            app_secret: config.app_secret.filter(|s| !s.is_empty()),
            webhook_url: config.webhook_url,
            waba_id: config.waba_id,
            status_webhooks: config.status_webhooks,
            http,
            ledger: Mutex::new(ledger),
        })
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The sandbox's time: the wall clock plus every advance.
    pub fn now(&self) -> DateTime<Utc> {
        self.ledger().now()
    }

    /// Moves the clock by `seconds` (negative moves it back); the new time.
    pub fn advance_clock(&self, seconds: i64) -> Result<DateTime<Utc>, String> {
        const LIMIT: i64 = 100 * 366 * 24 * 60 * 60;
        let mut ledger = self.ledger();
        let offset = ledger.clock_offset.saturating_add(seconds);
        if offset.abs() > LIMIT {
            return Err("the clock moves at most 100 years from now".into());
        }
        ledger.clock_offset = offset;
        Ok(ledger.now())
    }

    /// Every accepted send, in order.
    pub fn messages(&self) -> Vec<RecordedSend> {
        self.ledger().messages.clone()
    }

    /// Refused sends, counted by Meta code (`http_<status>` for HTML answers).
    pub fn rejected(&self) -> BTreeMap<String, u64> {
        self.ledger().rejected.clone()
    }

    /// Forgets recorded sends and refusal counts.
    pub fn reset_messages(&self) {
        let mut ledger = self.ledger();
        ledger.messages.clear();
        ledger.rejected.clear();
    }

    /// Queues a fault for the next sends.
    pub fn add_fault(&self, mut fault: Fault) -> Result<(), String> {
        fault.check()?;
        self.ledger().faults.push(fault);
        Ok(())
    }

    /// The faults still queued.
    pub fn faults(&self) -> Vec<Fault> {
        self.ledger().faults.clone()
    }

    /// Drops every queued fault; how many there were.
    pub fn clear_faults(&self) -> usize {
        std::mem::take(&mut self.ledger().faults).len()
    }

    /// Adds a template or replaces the one with its name and language.
    pub fn put_template(&self, template: SandboxTemplate) -> Result<(), String> {
        if template.name.trim().is_empty() || template.language.trim().is_empty() {
            return Err("a template needs a `name` and a `language`".into());
        }
        upsert(&mut self.ledger().templates, template);
        Ok(())
    }

    /// The templates sends are checked against.
    pub fn templates(&self) -> Vec<SandboxTemplate> {
        self.ledger().templates.clone()
    }

    /// Until when the user `wa_id` may get free-form text from the number.
    pub fn window_open_until(&self, phone_number_id: &str, wa_id: &str) -> Option<DateTime<Utc>> {
        let ledger = self.ledger();
        let last = *ledger
            .windows
            .get(&(phone_number_id.to_string(), wa_id.to_string()))?;
        let until = shifted(last, WINDOW_SECONDS);
        (until > ledger.now()).then_some(until)
    }

    /// Each user's last marketing preference, by business number then user.
    pub fn preferences(&self) -> Vec<RecordedPreference> {
        self.ledger().preferences.values().cloned().collect()
    }

    /// Plays a user writing in: opens their window and posts the signed
    /// inbound webhook, waiting for the receiver's answer. Every kind of
    /// message opens the window, as every message from the user does at Meta.
    pub async fn inbound(&self, inbound: Inbound) -> Result<InboundOutcome, String> {
        let wa_id = user_digits(&inbound.from)?;
        let (kind, content) = read_played_message(inbound.text, inbound.message)?;
        let (phone_number_id, display) = self.business_number(inbound.phone_number_id)?;
        let (message_id, now) = {
            let mut ledger = self.ledger();
            let now = ledger.now();
            ledger
                .windows
                .insert((phone_number_id.clone(), wa_id.clone()), now);
            (ledger.next_wamid(), now)
        };
        let window_open_until = shifted(now, WINDOW_SECONDS);
        let notification = Notification::new(
            &self.waba_id,
            &phone_number_id,
            &display,
            "messages",
            ChangeBody {
                contacts: Some(vec![WebhookContact {
                    profile: Profile {
                        name: inbound.name.unwrap_or_default(),
                    },
                    wa_id: wa_id.clone(),
                }]),
                messages: Some(vec![WebhookMessage {
                    from: wa_id.clone(),
                    id: message_id.clone(),
                    timestamp: now.timestamp().to_string(),
                    kind,
                    content,
                }]),
                ..ChangeBody::default()
            },
        );
        let webhook = match &self.webhook_url {
            Some(url) => Some(self.deliver(url, &notification, WEBHOOK_ATTEMPTS).await),
            None => None,
        };
        Ok(InboundOutcome {
            phone_number_id,
            wa_id,
            message_id,
            window_open_until,
            webhook,
        })
    }

    /// Plays a user stopping or resuming marketing messages: records it, so
    /// marketing templates to a stopped user fail with 131050, and posts the
    /// signed `user_preferences` webhook, waiting for the receiver's answer.
    pub async fn set_preference(
        &self,
        change: PreferenceChange,
    ) -> Result<PreferenceOutcome, String> {
        let wa_id = user_digits(&change.from)?;
        let value = MarketingPreference::read(&change.value)?;
        let (phone_number_id, display) = self.business_number(change.phone_number_id)?;
        let preference = {
            let mut ledger = self.ledger();
            let preference = RecordedPreference {
                phone_number_id: phone_number_id.clone(),
                wa_id: wa_id.clone(),
                category: MARKETING_MESSAGES,
                value,
                at: ledger.now(),
            };
            ledger
                .preferences
                .insert((phone_number_id.clone(), wa_id.clone()), preference.clone());
            preference
        };
        let notification = Notification::new(
            &self.waba_id,
            &phone_number_id,
            &display,
            "user_preferences",
            ChangeBody {
                contacts: Some(vec![WebhookContact {
                    profile: Profile {
                        name: change.name.unwrap_or_default(),
                    },
                    wa_id: wa_id.clone(),
                }]),
                user_preferences: Some(vec![WebhookPreference {
                    wa_id,
                    detail: value.detail(),
                    category: MARKETING_MESSAGES,
                    value: value.word(),
                    timestamp: preference.at.timestamp(),
                }]),
                ..ChangeBody::default()
            },
        );
        let webhook = match &self.webhook_url {
            Some(url) => Some(self.deliver(url, &notification, WEBHOOK_ATTEMPTS).await),
            None => None,
        };
        Ok(PreferenceOutcome {
            preference,
            webhook,
        })
    }

    /// The business number a played user writes to, checked, with its
    /// display number: the first configured one when none is given.
    fn business_number(&self, phone_number_id: Option<String>) -> Result<(String, String), String> {
        let phone_number_id = match phone_number_id {
            Some(id) => {
                if self.display_number(&id).is_none() {
                    return Err(format!(
                        "`{id}` is not one of the sandbox's phone number IDs"
                    ));
                }
                id
            }
            None => self.numbers.first().map(|(id, _)| id.clone()).ok_or(
                "give `phone_number_id`: the sandbox has no configured number to default to",
            )?,
        };
        let display = self
            .display_number(&phone_number_id)
            .unwrap_or_else(|| DEFAULT_DISPLAY_NUMBER.to_string());
        Ok((phone_number_id, display))
    }

    /// The display number of a phone number ID the sandbox takes sends for.
    fn display_number(&self, phone_number_id: &str) -> Option<String> {
        if self.numbers.is_empty() {
            return Some(DEFAULT_DISPLAY_NUMBER.to_string());
        }
        self.numbers
            .iter()
            .find(|(id, _)| id == phone_number_id)
            .map(|(_, display)| display.clone())
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            let mut error = meta_error(190, None);
            error.message =
                "An active access token must be used to query information about the current user."
                    .into();
            return Err(Box::new(error));
        };
        if !self.tokens.is_empty()
            && !self
                .tokens
                .iter()
                .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
        {
            let mut error = meta_error(190, None);
            error.subcode = Some(467);
            return Err(Box::new(error));
        }
        Ok(())
    }

    /// The first queued fault for a send to `to`, used up by one.
    fn take_fault(&self, to: Option<&str>) -> Option<Fault> {
        let mut ledger = self.ledger();
        let at = ledger
            .faults
            .iter()
            .position(|f| f.to.is_none() || f.to.as_deref() == to)?;
        let fault = ledger.faults.get_mut(at)?;
        fault.count = fault.count.saturating_sub(1);
        let taken = fault.clone();
        if taken.count == 0 {
            ledger.faults.remove(at);
        }
        Some(taken)
    }

    /// Meta's error answer, counted.
    fn refuse(&self, error: MetaError, retry_after: Option<u64>) -> Response {
        tracing::debug!(code = error.code, "sandbox refused a send");
        *self
            .ledger()
            .rejected
            .entry(error.code.to_string())
            .or_default() += 1;
        let status = StatusCode::from_u16(error.http_status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = (status, Json(error.to_body())).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("OAuth \"Facebook Platform\" \"invalid_token\""),
            );
        }
        response
    }

    /// The answer a fault gives instead of handling the send, if it does.
    fn fault_answer(&self, fault: &Fault) -> Option<Response> {
        if fault.html {
            let status = fault.http_status.unwrap_or(502);
            *self
                .ledger()
                .rejected
                .entry(format!("http_{status}"))
                .or_default() += 1;
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let page = format!(
                "<html><head><title>{code}</title></head><body><h1>{code}</h1></body></html>"
            );
            let mut response = (code, [(header::CONTENT_TYPE, "text/html")], page).into_response();
            if let Some(seconds) = fault.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return Some(response);
        }
        let code = match (fault.code, fault.http_status) {
            (Some(code), _) => code,
            (None, Some(503)) => 2,
            (None, Some(_)) => 1,
            (None, None) => return None,
        };
        let mut error = meta_error(code, fault.details.clone());
        if let Some(status) = fault.http_status {
            error.http_status = status;
        }
        Some(self.refuse(error, fault.retry_after))
    }

    /// Checks what needs the templates and windows, then records the send,
    /// with the failure its status reports: the fault's, else 131050 for a
    /// marketing template to a user who stopped marketing messages.
    fn accept(
        &self,
        phone_number_id: &str,
        request: SendRequest,
        failure: Option<StatusFailure>,
    ) -> Result<Accepted, Refusal> {
        let mut ledger = self.ledger();
        let now = ledger.now();
        let category = match &request.kind {
            RequestKind::Text => {
                let key = (phone_number_id.to_string(), request.wa_id.clone());
                let open = ledger
                    .windows
                    .get(&key)
                    .is_some_and(|last| now < shifted(*last, WINDOW_SECONDS));
                if !open {
                    return Err(refusal(131047, None));
                }
                "service".to_string()
            }
            RequestKind::Template {
                name,
                language,
                params,
            } => {
                let template = ledger
                    .templates
                    .iter()
                    .find(|t| &t.name == name && &t.language == language);
                let template = match template {
                    Some(t) if t.approved => t,
                    Some(_) => {
                        return Err(refusal(
                            132001,
                            Some(format!(
                                "template name ({name}) is not approved in {language}"
                            )),
                        ))
                    }
                    None => {
                        return Err(refusal(
                            132001,
                            Some(format!(
                                "template name ({name}) does not exist in {language}"
                            )),
                        ))
                    }
                };
                if params.len() != template.params {
                    return Err(refusal(
                        132000,
                        Some(format!(
                            "body: number of localizable_params ({}) does not match the expected number of params ({})",
                            params.len(),
                            template.params
                        )),
                    ));
                }
                for (i, param) in params.iter().enumerate() {
                    if let Some(problem) = param.as_deref().and_then(param_problem) {
                        return Err(refusal(
                            132012,
                            Some(format!(
                                "body: parameter {} {problem}; parameters may not contain newlines, tabs or more than 4 consecutive spaces",
                                i + 1
                            )),
                        ));
                    }
                }
                template.category.clone()
            }
        };
        let failure = failure.or_else(|| {
            let stopped = category.eq_ignore_ascii_case("marketing")
                && ledger
                    .preferences
                    .get(&(phone_number_id.to_string(), request.wa_id.clone()))
                    .is_some_and(|p| p.value == MarketingPreference::Stop);
            stopped.then_some((131050, None))
        });
        let record = RecordedSend {
            wamid: ledger.next_wamid(),
            phone_number_id: phone_number_id.to_string(),
            to: request.to,
            wa_id: request.wa_id,
            kind: match request.kind {
                RequestKind::Text => "text".into(),
                RequestKind::Template { .. } => "template".into(),
            },
            body: request.body,
            callback: request.callback,
            at: now,
            failed_code: failure.as_ref().map(|(code, _)| *code),
        };
        ledger.messages.push(record.clone());
        Ok(Accepted {
            record,
            category,
            failure,
        })
    }

    /// Posts `sent` then `delivered` for an accepted send, or one `failed`
    /// when a fault gave its code (and details).
    fn spawn_statuses(
        self: &Arc<Self>,
        record: RecordedSend,
        display: String,
        category: String,
        failure: Option<StatusFailure>,
    ) {
        let Some(url) = self.webhook_url.clone() else {
            return;
        };
        if !self.status_webhooks {
            return;
        }
        let sandbox = Arc::clone(self);
        tokio::spawn(async move {
            let status = |name: &'static str| WebhookStatus {
                id: record.wamid.clone(),
                status: name,
                timestamp: String::new(),
                recipient_id: record.wa_id.clone(),
                biz_opaque_callback_data: record.callback.clone(),
                pricing: None,
                errors: None,
            };
            let statuses = match failure {
                Some((code, details)) => {
                    let error = meta_error(code, details);
                    let title = title_of(&error.message);
                    let mut failed = status("failed");
                    failed.errors = Some(vec![StatusError {
                        code,
                        message: title.clone(),
                        error_data: ErrorData {
                            details: error.details.unwrap_or_else(|| title.clone()),
                        },
                        title,
                        href: ERROR_CODES_URL,
                    }]);
                    vec![failed]
                }
                None => {
                    let mut sent = status("sent");
                    sent.pricing = Some(Pricing::for_category(&category));
                    vec![sent, status("delivered")]
                }
            };
            // One POST per status, in order, as Meta sends them.
            for mut one in statuses {
                one.timestamp = sandbox.now().timestamp().to_string();
                let notification = Notification::new(
                    &sandbox.waba_id,
                    &record.phone_number_id,
                    &display,
                    "messages",
                    ChangeBody {
                        statuses: Some(vec![one]),
                        ..ChangeBody::default()
                    },
                );
                sandbox
                    .deliver(&url, &notification, STATUS_WEBHOOK_ATTEMPTS)
                    .await;
            }
        });
    }

    /// POSTs one webhook, signed, retrying a failed delivery up to `attempts` times.
    async fn deliver(
        &self,
        url: &str,
        notification: &Notification<'_>,
        attempts: u32,
    ) -> WebhookAnswer {
        let body = match serde_json::to_vec(notification) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return WebhookAnswer {
                    attempts: 0,
                    status: None,
                    body: None,
                    error: Some(format!("cannot encode the webhook: {e}")),
                }
            }
        };
        let signature = self.app_secret.as_ref().map(|s| sign(&body, s.as_bytes()));
        let mut answer = WebhookAnswer {
            attempts: 0,
            status: None,
            body: None,
            error: None,
        };
        for attempt in 1..=attempts {
            let mut request = self
                .http
                .post(url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(signature) = &signature {
                request = request.header(META_SIGNATURE_HEADER, signature);
            }
            answer = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    WebhookAnswer {
                        attempts: attempt,
                        status: Some(status),
                        body: response.text().await.ok(),
                        error: None,
                    }
                }
                Err(e) => WebhookAnswer {
                    attempts: attempt,
                    status: None,
                    body: None,
                    error: Some(e.without_url().to_string()),
                },
            };
            if answer.ok() {
                break;
            }
            if attempt < attempts {
                let wait = (100u64 << attempt.min(10)).min(5_000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
        let mut ledger = self.ledger();
        if answer.ok() {
            ledger.webhooks_delivered += 1;
        } else {
            ledger.webhooks_failed += 1;
            tracing::warn!(
                attempts = answer.attempts,
                status = answer.status,
                "sandbox webhook not accepted"
            );
        }
        answer
    }
}

/// A played user's number as the `wa_id` Meta gives it: digits only.
fn user_digits(from: &str) -> Result<String, String> {
    recipient_digits(from)
        .map(str::to_string)
        .map_err(|_| "`from` must be the user's number as digits, such as `919820012345`".into())
}

/// The `type` and the rest of a played message (without `from`, `id` and
/// `timestamp`), from `text` or `message`, whichever was given. Checks what
/// Meta always sends and the router reads: a string `type`, the type's own
/// object, a text's `body`.
fn read_played_message(
    text: Option<String>,
    message: Option<Value>,
) -> Result<(String, Map<String, Value>), String> {
    let mut fields = match (text, message) {
        (Some(_), Some(_)) => {
            return Err(
                "give `text` or `message`, not both: `\"text\":\"hi\"` is short for `\"message\":{\"type\":\"text\",\"text\":{\"body\":\"hi\"}}`"
                    .into(),
            )
        }
        (None, None) => {
            return Err(
                "give `text` for a text message or `message` for any kind, such as `{\"type\":\"image\",\"image\":{\"id\":\"1234\",\"mime_type\":\"image/jpeg\"}}`"
                    .into(),
            )
        }
        (Some(body), None) => {
            let mut fields = Map::new();
            fields.insert("text".into(), json!({ "body": body }));
            return Ok(("text".into(), fields));
        }
        (None, Some(Value::Object(fields))) => fields,
        (None, Some(other)) => {
            return Err(format!(
                "`message` must be a message object as Meta's webhook carries it, such as `{{\"type\":\"image\",\"image\":{{...}}}}`, not `{other}`"
            ))
        }
    };
    for filled in ["from", "id", "timestamp"] {
        if fields.contains_key(filled) {
            return Err(format!(
                "`message.{filled}` is filled by the sandbox; leave it out (the user's number goes in `from`, beside `message`)"
            ));
        }
    }
    let kind = match fields.remove("type") {
        Some(Value::String(kind)) if !kind.trim().is_empty() => kind,
        Some(other) => {
            return Err(format!(
                "`message.type` must be a message type as a string, such as `image` or `interactive`, not `{other}`"
            ))
        }
        None => {
            return Err(
                "`message.type` is required: `text`, `image`, `interactive`, `reaction`, ... as in Meta's webhook"
                    .into(),
            )
        }
    };
    if kind == "contacts" {
        if !fields.get("contacts").is_some_and(Value::is_array) {
            return Err(
                "a `contacts` message carries `message.contacts`, an array of contact cards such as `[{\"name\":{\"formatted_name\":\"Ravi\"},\"phones\":[{\"phone\":\"+91 98200 54321\"}]}]`"
                    .into(),
            );
        }
    } else if TYPES_WITH_OBJECT.contains(&kind.as_str())
        && !fields.get(&kind).is_some_and(Value::is_object)
    {
        return Err(format!(
            "a `{kind}` message carries `message.{kind}`, an object, as Meta sends it"
        ));
    }
    if kind == "text"
        && !fields
            .get("text")
            .and_then(|t| t.get("body"))
            .is_some_and(Value::is_string)
    {
        return Err("a `text` message carries `message.text.body`, a string".into());
    }
    Ok((kind, fields))
}

fn upsert(templates: &mut Vec<SandboxTemplate>, template: SandboxTemplate) {
    match templates
        .iter_mut()
        .find(|t| t.name == template.name && t.language == template.language)
    {
        Some(existing) => *existing = template,
        None => templates.push(template),
    }
}

/// Meta's error for `code` as the Cloud API words it, with a fresh trace ID.
fn meta_error(code: i64, details: Option<String>) -> MetaError {
    let (http_status, message, usual_details): (u16, String, Option<&str>) = match code {
        1 => (500, "An unknown error occurred".into(), None),
        2 => (503, "Service temporarily unavailable".into(), None),
        4 => (400, "(#4) Application request limit reached".into(), None),
        10 => (403, "(#10) Application does not have permission for this action".into(), None),
        100 => (400, "(#100) Invalid parameter".into(), None),
        190 => (401, "Invalid OAuth access token - Cannot parse access token".into(), None),
        368 => (400, "(#368) Temporarily blocked for policies violations".into(), None),
        80007 => (400, "(#80007) Rate limit issues".into(), None),
        130429 => (
            400,
            "(#130429) Rate limit hit".into(),
            Some("Cloud API message throughput has been reached."),
        ),
        131000 => (500, "(#131000) Something went wrong".into(), None),
        131016 => (503, "(#131016) Service unavailable".into(), None),
        131026 => (
            400,
            "(#131026) Message undeliverable".into(),
            Some("Message Undeliverable."),
        ),
        131031 => (400, "(#131031) Business Account locked".into(), None),
        131047 => (
            400,
            "(#131047) Re-engagement message".into(),
            Some("Message failed to send because more than 24 hours have passed since the customer last replied to this number."),
        ),
        131048 => (400, "(#131048) Spam rate limit hit".into(), None),
        131049 => (
            400,
            "(#131049) This message was not delivered to maintain healthy ecosystem engagement."
                .into(),
            None,
        ),
        131050 => (
            400,
            "(#131050) Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business."
                .into(),
            None,
        ),
        131056 => (
            400,
            "(#131056) (Business Account, Consumer Account) pair rate limit hit".into(),
            Some("Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."),
        ),
        131057 => (400, "(#131057) Account in maintenance mode".into(), None),
        132000 => (
            400,
            "(#132000) Number of parameters does not match the expected number of params".into(),
            None,
        ),
        132001 => (
            400,
            "(#132001) Template name does not exist in the translation".into(),
            None,
        ),
        132012 => (
            400,
            "(#132012) Parameter format does not match format in the created template".into(),
            None,
        ),
        other => (400, format!("(#{other}) Simulated error"), None),
    };
    MetaError {
        http_status,
        code,
        subcode: None,
        kind: "OAuthException".into(),
        message,
        details: details.or(usual_details.map(str::to_string)),
        fbtrace_id: Some(trace_id()),
    }
}

/// A send refused with Meta's error; boxed, as errors are the rare path.
type Refusal = Box<MetaError>;

fn refusal(code: i64, details: Option<String>) -> Refusal {
    Box::new(meta_error(code, details))
}

/// A message without its `(#code) ` prefix, as status errors title it.
fn title_of(message: &str) -> String {
    match message
        .strip_prefix("(#")
        .and_then(|rest| rest.split_once(") "))
    {
        Some((_, title)) => title.to_string(),
        None => message.to_string(),
    }
}

fn trace_id() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(22)
        .map(char::from)
        .collect()
}

/// Code 100 for a missing or wrong field, naming it.
fn bad_field(field: &str, problem: &str) -> Refusal {
    let mut error = meta_error(100, Some(format!("{field}: {problem}")));
    if problem == "is required" {
        error.message = format!("(#100) The parameter {field} is required.");
    }
    Box::new(error)
}

/// The checks that need only the body: what Meta answers with code 100.
fn read_send(body: &[u8]) -> Result<SendRequest, Refusal> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| bad_field("body", "the request body is not JSON"))?;
    if !value.is_object() {
        return Err(bad_field("body", "the request body is not a JSON object"));
    }
    match value.get("messaging_product") {
        None => return Err(bad_field("messaging_product", "is required")),
        Some(p) if p.as_str() != Some("whatsapp") => {
            return Err(bad_field("messaging_product", "must be `whatsapp`"))
        }
        Some(_) => {}
    }
    if let Some(kind) = value.get("recipient_type") {
        if kind.as_str() != Some("individual") {
            return Err(bad_field("recipient_type", "must be `individual`"));
        }
    }
    let to = match value.get("to") {
        None => return Err(bad_field("to", "is required")),
        Some(to) => to
            .as_str()
            .ok_or_else(|| bad_field("to", "must be a string"))?,
    };
    let wa_id = recipient_digits(to)
        .map_err(|_| bad_field("to", "is not a phone number: digits, `+` optional"))?
        .to_string();
    let callback = match value.get("biz_opaque_callback_data") {
        None => None,
        Some(c) => {
            let c = c
                .as_str()
                .ok_or_else(|| bad_field("biz_opaque_callback_data", "must be a string"))?;
            if c.chars().count() > MAX_CALLBACK_CHARS {
                return Err(bad_field(
                    "biz_opaque_callback_data",
                    "must be at most 512 characters long",
                ));
            }
            Some(c.to_string())
        }
    };
    let kind = match value.get("type").map(|t| t.as_str()) {
        None => return Err(bad_field("type", "is required")),
        Some(Some("text")) => {
            let text = value
                .get("text")
                .filter(|t| t.is_object())
                .ok_or_else(|| bad_field("text", "is required"))?;
            let body = match text.get("body").and_then(Value::as_str) {
                Some(b) if !b.trim().is_empty() => b,
                _ => return Err(bad_field("text['body']", "is required")),
            };
            if body.chars().count() > MAX_TEXT_CHARS {
                return Err(bad_field(
                    "text['body']",
                    "must be at most 4096 characters long",
                ));
            }
            if text.get("preview_url").is_some_and(|p| !p.is_boolean()) {
                return Err(bad_field("text['preview_url']", "must be a boolean"));
            }
            RequestKind::Text
        }
        Some(Some("template")) => read_template(&value)?,
        Some(_) => {
            return Err(bad_field(
                "type",
                "must be `text` or `template` (the sandbox simulates those two)",
            ))
        }
    };
    Ok(SendRequest {
        to: to.to_string(),
        wa_id,
        callback,
        kind,
        body: value,
    })
}

fn read_template(value: &Value) -> Result<RequestKind, Refusal> {
    let template = value
        .get("template")
        .filter(|t| t.is_object())
        .ok_or_else(|| bad_field("template", "is required"))?;
    let name = template
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad_field("template['name']", "is required"))?;
    let language = template
        .get("language")
        .and_then(|l| l.get("code"))
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad_field("template['language']['code']", "is required"))?;
    let mut params = Vec::new();
    if let Some(components) = template.get("components") {
        let components = components
            .as_array()
            .ok_or_else(|| bad_field("template['components']", "must be an array"))?;
        for (c, component) in components.iter().enumerate() {
            let at = format!("template['components'][{c}]");
            let kind = component
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| bad_field(&format!("{at}['type']"), "is required"))?;
            if !kind.eq_ignore_ascii_case("body") {
                continue;
            }
            let parameters = match component.get("parameters") {
                None => continue,
                Some(p) => p
                    .as_array()
                    .ok_or_else(|| bad_field(&format!("{at}['parameters']"), "must be an array"))?,
            };
            for (p, parameter) in parameters.iter().enumerate() {
                let at = format!("{at}['parameters'][{p}]");
                match parameter.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = parameter
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad_field(&format!("{at}['text']"), "is required"))?;
                        params.push(Some(text.to_string()));
                    }
                    Some(_) => params.push(None),
                    None => return Err(bad_field(&format!("{at}['type']"), "is required")),
                }
            }
        }
    }
    Ok(RequestKind::Template {
        name: name.to_string(),
        language: language.to_string(),
        params,
    })
}

// Webhook payloads, as typed structs so the JSON keeps Meta's field order.

#[derive(Serialize)]
struct Notification<'a> {
    object: &'static str,
    entry: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    changes: [Change<'a>; 1],
}

#[derive(Serialize)]
struct Change<'a> {
    field: &'static str,
    value: ChangeValue<'a>,
}

#[derive(Serialize)]
struct ChangeValue<'a> {
    messaging_product: &'static str,
    metadata: Metadata<'a>,
    #[serde(flatten)]
    body: ChangeBody,
}

#[derive(Default, Serialize)]
struct ChangeBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    contacts: Option<Vec<WebhookContact>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<WebhookMessage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statuses: Option<Vec<WebhookStatus>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_preferences: Option<Vec<WebhookPreference>>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    display_phone_number: &'a str,
    phone_number_id: &'a str,
}

#[derive(Serialize)]
struct WebhookContact {
    profile: Profile,
    wa_id: String,
}

#[derive(Serialize)]
struct Profile {
    name: String,
}

#[derive(Serialize)]
struct WebhookMessage {
    from: String,
    id: String,
    timestamp: String,
    #[serde(rename = "type")]
    kind: String,
    /// The type's own object (`"image": {...}`) and whatever else the
    /// message carries (`context`, `referral`, `errors`).
    #[serde(flatten)]
    content: Map<String, Value>,
}

#[derive(Serialize)]
struct WebhookPreference {
    wa_id: String,
    detail: &'static str,
    category: &'static str,
    value: &'static str,
    /// Unix seconds, a number here (message timestamps are strings).
    timestamp: i64,
}

#[derive(Serialize)]
struct WebhookStatus {
    id: String,
    status: &'static str,
    timestamp: String,
    recipient_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    biz_opaque_callback_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing: Option<Pricing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<StatusError>>,
}

#[derive(Serialize)]
struct Pricing {
    billable: bool,
    pricing_model: &'static str,
    category: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl Pricing {
    fn for_category(category: &str) -> Pricing {
        let service = category == "service";
        Pricing {
            billable: !service,
            pricing_model: "PMP",
            category: category.to_string(),
            kind: if service {
                "free_customer_service"
            } else {
                "regular"
            },
        }
    }
}

#[derive(Serialize)]
struct StatusError {
    code: i64,
    title: String,
    message: String,
    error_data: ErrorData,
    href: &'static str,
}

#[derive(Serialize)]
struct ErrorData {
    details: String,
}

impl<'a> Notification<'a> {
    fn new(
        waba_id: &'a str,
        phone_number_id: &'a str,
        display: &'a str,
        field: &'static str,
        body: ChangeBody,
    ) -> Notification<'a> {
        Notification {
            object: "whatsapp_business_account",
            entry: [Entry {
                id: waba_id,
                changes: [Change {
                    field,
                    value: ChangeValue {
                        messaging_product: "whatsapp",
                        metadata: Metadata {
                            display_phone_number: display,
                            phone_number_id,
                        },
                        body,
                    },
                }],
            }],
        }
    }
}

/// The Cloud API's send route and the control API, relative to the root so
/// the router can be nested (`Router::nest("/sandbox", router(sandbox))`).
pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/{version}/{phone_number_id}/messages", post(send_message))
        .route("/_sandbox", get(control_index))
        .route(
            "/_sandbox/messages",
            get(list_messages).delete(reset_messages),
        )
        .route(
            "/_sandbox/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sandbox/inbound", post(inbound))
        .route(
            "/_sandbox/preferences",
            get(list_preferences).post(set_preference),
        )
        .route("/_sandbox/clock", get(clock).post(advance_clock))
        .route(
            "/_sandbox/templates",
            get(list_templates).post(put_template),
        )
        .fallback(unknown_path)
        .with_state(sandbox)
}

/// Serves the sandbox on `listener` until `shutdown` completes.
pub async fn serve(
    sandbox: Arc<Sandbox>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(sandbox))
        .with_graceful_shutdown(shutdown)
        .await
}

type Shared = State<Arc<Sandbox>>;

async fn send_message(
    State(sandbox): Shared,
    Path((_version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Meta goes on with a send whose caller hung up (a client timeout), so
    // the send runs in its own task that a closed connection cannot cancel.
    let task = tokio::spawn(handle_send(sandbox, phone_number_id, headers, body));
    match task.await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "sandbox send task failed");
            let error = meta_error(1, None);
            (StatusCode::INTERNAL_SERVER_ERROR, Json(error.to_body())).into_response()
        }
    }
}

async fn handle_send(
    sandbox: Arc<Sandbox>,
    phone_number_id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(error) = sandbox.authorize(&headers) {
        return sandbox.refuse(*error, None);
    }
    let Some(display) = sandbox.display_number(&phone_number_id) else {
        let mut error = meta_error(
            100,
            Some(format!(
                "phone_number_id: {phone_number_id} is not one of the sandbox's numbers"
            )),
        );
        error.subcode = Some(33);
        error.message = format!(
            "Unsupported post request. Object with ID '{phone_number_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
        );
        return sandbox.refuse(error, None);
    };
    // Faults pick their send by recipient, read before any other check.
    let to = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("to")
            .and_then(Value::as_str)
            .and_then(|t| recipient_digits(t).ok().map(str::to_string))
    });
    let mut failure = None;
    if let Some(fault) = sandbox.take_fault(to.as_deref()) {
        if let Some(ms) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if fault.as_status {
            failure = fault.code.map(|code| (code, fault.details.clone()));
        } else if let Some(answer) = sandbox.fault_answer(&fault) {
            return answer;
        }
    }
    let request = match read_send(&body) {
        Ok(r) => r,
        Err(error) => return sandbox.refuse(*error, None),
    };
    let template = matches!(request.kind, RequestKind::Template { .. });
    match sandbox.accept(&phone_number_id, request, failure) {
        Ok(Accepted {
            record,
            category,
            failure,
        }) => {
            let mut message = json!({"id": record.wamid});
            if template {
                message["message_status"] = json!("accepted");
            }
            let answer = json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": record.to, "wa_id": record.wa_id}],
                "messages": [message],
            });
            sandbox.spawn_statuses(record, display, category, failure);
            Json(answer).into_response()
        }
        Err(error) => sandbox.refuse(*error, None),
    }
}

/// A control API error: what is wrong with the request and what to send.
fn control_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!("the body is not what this route takes: {e}; `GET /_sandbox` lists the routes and their bodies")
    })
}

async fn control_index() -> Json<Value> {
    let routes: Vec<Value> = CONTROL_ROUTES
        .iter()
        .map(|(method, path, what)| json!({"method": method, "path": path, "what": what}))
        .collect();
    Json(json!({
        "send": "POST /{version}/{phone_number_id}/messages",
        "control": routes,
    }))
}

async fn list_messages(State(sandbox): Shared) -> Json<Value> {
    let ledger = sandbox.ledger();
    Json(json!({
        "messages": ledger.messages,
        "accepted": ledger.messages.len(),
        "rejected": ledger.rejected,
        "rejected_total": ledger.rejected.values().sum::<u64>(),
        "webhooks": {
            "delivered": ledger.webhooks_delivered,
            "failed": ledger.webhooks_failed,
        },
    }))
}

async fn reset_messages(State(sandbox): Shared) -> StatusCode {
    sandbox.reset_messages();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(sandbox): Shared) -> Json<Value> {
    Json(json!({"faults": sandbox.faults()}))
}

async fn add_fault(State(sandbox): Shared, body: Bytes) -> Response {
    let fault: Fault = match parse(&body) {
        Ok(f) => f,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    match sandbox.add_fault(fault) {
        Ok(()) => Json(json!({"faults": sandbox.faults()})).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn clear_faults(State(sandbox): Shared) -> Json<Value> {
    Json(json!({"cleared": sandbox.clear_faults()}))
}

async fn inbound(State(sandbox): Shared, body: Bytes) -> Response {
    let inbound: Inbound = match parse(&body) {
        Ok(i) => i,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    match sandbox.inbound(inbound).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn list_preferences(State(sandbox): Shared) -> Json<Value> {
    Json(json!({"preferences": sandbox.preferences()}))
}

async fn set_preference(State(sandbox): Shared, body: Bytes) -> Response {
    let change: PreferenceChange = match parse(&body) {
        Ok(c) => c,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    match sandbox.set_preference(change).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

fn clock_answer(sandbox: &Sandbox) -> Json<Value> {
    let ledger = sandbox.ledger();
    Json(json!({"now": ledger.now(), "offset_seconds": ledger.clock_offset}))
}

async fn clock(State(sandbox): Shared) -> Json<Value> {
    clock_answer(&sandbox)
}

async fn advance_clock(State(sandbox): Shared, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Advance {
        advance_seconds: i64,
    }
    let advance: Advance = match parse(&body) {
        Ok(a) => a,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    match sandbox.advance_clock(advance.advance_seconds) {
        Ok(_) => clock_answer(&sandbox).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn list_templates(State(sandbox): Shared) -> Json<Value> {
    Json(json!({"templates": sandbox.templates()}))
}

async fn put_template(State(sandbox): Shared, body: Bytes) -> Response {
    let template: SandboxTemplate = match parse(&body) {
        Ok(t) => t,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    match sandbox.put_template(template) {
        Ok(()) => Json(json!({"templates": sandbox.templates()})).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

/// Meta's answer to a path it does not know, pointing at the real routes.
async fn unknown_path(uri: axum::http::Uri) -> Response {
    let mut error = meta_error(
        2500,
        Some("the sandbox serves POST /{version}/{phone_number_id}/messages and GET /_sandbox lists the control API".into()),
    );
    error.message = format!("Unknown path components: {}", uri.path());
    error.http_status = 400;
    (StatusCode::BAD_REQUEST, Json(error.to_body())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sandbox served on 127.0.0.1:0, and an HTTP client for it.
    struct Served {
        sandbox: Arc<Sandbox>,
        base: String,
        http: reqwest::Client,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    async fn served(templates: Vec<SandboxTemplate>) -> Served {
        let sandbox = Arc::new(
            Sandbox::new(SandboxConfig {
                templates,
                numbers: vec![("106540352242922".into(), "15550783881".into())],
                tokens: vec!["token-1".into()],
                ..SandboxConfig::default()
            })
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(sandbox.clone(), listener, async {
            let _ = stopped.await;
        }));
        Served {
            sandbox,
            base,
            http: reqwest::Client::new(),
            _stop: stop,
        }
    }

    impl std::ops::Deref for Served {
        type Target = Sandbox;
        fn deref(&self) -> &Sandbox {
            &self.sandbox
        }
    }

    async fn post(served: &Served, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = served
            .http
            .post(format!("{}{path}", served.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn options() -> SandboxTemplate {
        SandboxTemplate {
            name: "event_options".into(),
            language: "en".into(),
            category: "utility".into(),
            params: 3,
            approved: true,
        }
    }

    const SEND: &str = "/v23.0/106540352242922/messages";

    fn template_send(params: &[&str]) -> Value {
        let parameters: Vec<Value> = params
            .iter()
            .map(|p| json!({"type":"text","text":p}))
            .collect();
        json!({"messaging_product":"whatsapp","to":"919820012345","type":"template",
            "template":{"name":"event_options","language":{"code":"en"},
                "components":[{"type":"body","parameters":parameters}]}})
    }

    #[tokio::test]
    async fn tokens_and_numbers_are_checked_first() {
        let sb = served(vec![options()]).await;
        let body = template_send(&["a", "b", "c"]);
        let (status, answer) = post(&sb, SEND, None, body.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_i64()), (401, Some(190)));
        let (status, answer) = post(&sb, SEND, Some("wrong"), body.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_i64()), (401, Some(190)));
        assert_eq!(answer["error"]["type"], "OAuthException");
        let (status, answer) =
            post(&sb, "/v23.0/999/messages", Some("token-1"), body.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_i64()), (400, Some(100)));
        assert_eq!(answer["error"]["error_subcode"], 33);
        let (status, _) = post(&sb, SEND, Some("token-1"), body).await;
        assert_eq!(status, 200);
        assert_eq!(sb.rejected().get("190"), Some(&2));
        assert_eq!(sb.rejected().get("100"), Some(&1));
    }

    #[tokio::test]
    async fn missing_or_wrong_fields_are_code_100_naming_the_field() {
        let sb = served(vec![options()]).await;
        let cases = [
            (
                json!({"to":"1","type":"text","text":{"body":"x"}}),
                "messaging_product",
            ),
            (
                json!({"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}),
                "to",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","text":{"body":"x"}}),
                "type",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"image"}),
                "type",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"text"}),
                "text",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":""}}),
                "text['body']",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":"a".repeat(4097)}}),
                "text['body']",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1 2","type":"text","text":{"body":"x"}}),
                "to",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"template","template":{"name":"event_options"}}),
                "template['language']['code']",
            ),
        ];
        for (body, field) in cases {
            let (status, answer) = post(&sb, SEND, Some("token-1"), body.clone()).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(answer["error"]["code"], 100, "{body}");
            let details = answer["error"]["error_data"]["details"].as_str().unwrap();
            assert!(
                details.starts_with(&format!("{field}:")),
                "{body}: {details}"
            );
        }
        assert!(sb.messages().is_empty());
    }

    #[tokio::test]
    async fn templates_are_checked_by_name_language_count_and_format() {
        let sb = served(vec![options()]).await;
        let code = |answer: &Value| answer["error"]["code"].as_i64();
        let (_, answer) = post(&sb, SEND, Some("token-1"), template_send(&["a", "b"])).await;
        assert_eq!(code(&answer), Some(132000));
        let (_, answer) = post(
            &sb,
            SEND,
            Some("token-1"),
            template_send(&["a", "b\nc", "d"]),
        )
        .await;
        assert_eq!(code(&answer), Some(132012));
        let mut other_language = template_send(&["a", "b", "c"]);
        other_language["template"]["language"]["code"] = json!("hi");
        let (_, answer) = post(&sb, SEND, Some("token-1"), other_language).await;
        assert_eq!(code(&answer), Some(132001));
        sb.put_template(SandboxTemplate {
            approved: false,
            ..options()
        })
        .unwrap();
        let (_, answer) = post(&sb, SEND, Some("token-1"), template_send(&["a", "b", "c"])).await;
        assert_eq!(code(&answer), Some(132001));
        sb.put_template(options()).unwrap();
        let (status, answer) =
            post(&sb, SEND, Some("token-1"), template_send(&["a", "b", "c"])).await;
        assert_eq!(status, 200);
        assert_eq!(answer["messages"][0]["message_status"], "accepted");
        assert_eq!(sb.templates().len(), 1);
    }

    #[tokio::test]
    async fn the_window_opens_on_inbound_and_closes_after_24_hours() {
        let sb = served(vec![]).await;
        let text = json!({"messaging_product":"whatsapp","to":"+919820012345","type":"text","text":{"body":"hi"}});
        let (status, answer) = post(&sb, SEND, Some("token-1"), text.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_i64()),
            (400, Some(131047))
        );
        let outcome = sb
            .inbound(Inbound {
                phone_number_id: None,
                from: "919820012345".into(),
                name: None,
                text: Some("hello".into()),
                message: None,
            })
            .await
            .unwrap();
        assert!(outcome.webhook.is_none());
        assert_eq!(
            sb.window_open_until("106540352242922", "919820012345"),
            Some(outcome.window_open_until)
        );
        let (status, answer) = post(&sb, SEND, Some("token-1"), text.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer["contacts"][0],
            json!({"input":"+919820012345","wa_id":"919820012345"})
        );
        assert!(answer["messages"][0].get("message_status").is_none());
        sb.advance_clock(WINDOW_SECONDS - 60).unwrap();
        assert_eq!(post(&sb, SEND, Some("token-1"), text.clone()).await.0, 200);
        sb.advance_clock(60).unwrap();
        assert_eq!(
            post(&sb, SEND, Some("token-1"), text).await.1["error"]["code"],
            131047
        );
        assert_eq!(sb.messages().len(), 2);
    }

    #[test]
    fn a_played_message_is_a_text_or_metas_message_object() {
        let (kind, content) = read_played_message(Some("hi".into()), None).unwrap();
        assert_eq!(
            (kind.as_str(), Value::Object(content)),
            ("text", json!({"text": {"body": "hi"}}))
        );
        let image = json!({"type": "image", "context": {"id": "wamid.1"},
            "image": {"caption": "the venue", "mime_type": "image/jpeg", "sha256": "abc", "id": "1234"}});
        let (kind, content) = read_played_message(None, Some(image.clone())).unwrap();
        assert_eq!(kind, "image");
        let message = WebhookMessage {
            from: "919820012345".into(),
            id: "wamid.2".into(),
            timestamp: "1799999000".into(),
            kind,
            content,
        };
        // Meta's order: who, which, when, what kind, then the kind's object.
        let written = serde_json::to_string(&message).unwrap();
        assert!(
            written.starts_with(
                r#"{"from":"919820012345","id":"wamid.2","timestamp":"1799999000","type":"image","#
            ),
            "{written}"
        );
        let mut expected = image;
        expected["from"] = json!("919820012345");
        expected["id"] = json!("wamid.2");
        expected["timestamp"] = json!("1799999000");
        assert_eq!(serde_json::from_str::<Value>(&written).unwrap(), expected);
        // A kind without an object of its own, and one Meta may add later.
        for other in [
            json!({"type": "unsupported", "errors": [{"code": 131051, "title": "Message type unknown"}]}),
            json!({"type": "request_welcome"}),
            json!({"type": "poll", "poll": {"question": "?"}}),
        ] {
            assert!(
                read_played_message(None, Some(other.clone())).is_ok(),
                "{other}"
            );
        }
    }

    #[test]
    fn a_played_message_meta_would_never_send_is_refused_naming_the_field() {
        let cases = [
            (
                Some("hi"),
                Some(json!({"type": "text", "text": {"body": "hi"}})),
                "not both",
            ),
            (None, None, "give `text`"),
            (None, Some(json!("hi")), "`message` must be"),
            (
                None,
                Some(json!({"image": {"id": "1"}})),
                "`message.type` is required",
            ),
            (None, Some(json!({"type": 7})), "`message.type` must be"),
            (None, Some(json!({"type": ""})), "`message.type` must be"),
            (
                None,
                Some(json!({"type": "text", "text": {"body": "hi"}, "from": "1"})),
                "`message.from`",
            ),
            (
                None,
                Some(json!({"type": "image", "id": "wamid.1", "image": {}})),
                "`message.id`",
            ),
            (
                None,
                Some(json!({"type": "image", "caption": "x"})),
                "`message.image`",
            ),
            (
                None,
                Some(json!({"type": "reaction", "reaction": "👍"})),
                "`message.reaction`",
            ),
            (
                None,
                Some(json!({"type": "text", "text": {}})),
                "`message.text.body`",
            ),
            (
                None,
                Some(json!({"type": "contacts", "contacts": {}})),
                "`message.contacts`",
            ),
        ];
        for (text, message, said) in cases {
            let error = read_played_message(text.map(str::to_string), message.clone()).unwrap_err();
            assert!(error.contains(said), "{message:?}: {error}");
        }
    }

    #[tokio::test]
    async fn a_user_who_stopped_marketing_gets_every_other_message() {
        let sb = served(vec![
            SandboxTemplate {
                name: "event_promo".into(),
                category: "marketing".into(),
                params: 0,
                ..options()
            },
            SandboxTemplate {
                name: "login_code".into(),
                category: "authentication".into(),
                params: 0,
                ..options()
            },
            options(),
        ])
        .await;
        let template = |name: &str| {
            json!({"messaging_product":"whatsapp","to":"919820012345","type":"template",
                "template":{"name":name,"language":{"code":"en"}}})
        };
        let stop = |value: &str| PreferenceChange {
            phone_number_id: None,
            from: "919820012345".into(),
            name: None,
            value: value.into(),
        };
        let outcome = sb.set_preference(stop("stop")).await.unwrap();
        assert_eq!(outcome.preference.value, MarketingPreference::Stop);
        assert_eq!(outcome.preference.phone_number_id, "106540352242922");
        assert!(outcome.webhook.is_none());
        assert_eq!(sb.preferences(), vec![outcome.preference]);
        // A reaction is a message from the user: it opens the window.
        sb.inbound(Inbound {
            phone_number_id: None,
            from: "919820012345".into(),
            name: None,
            text: None,
            message: Some(
                json!({"type":"reaction","reaction":{"message_id":"wamid.1","emoji":"👍"}}),
            ),
        })
        .await
        .unwrap();
        let text = json!({"messaging_product":"whatsapp","to":"919820012345","type":"text","text":{"body":"hi"}});
        for body in [
            template("event_promo"),
            template("login_code"),
            template_send(&["a", "b", "c"]),
            text,
        ] {
            let (status, answer) = post(&sb, SEND, Some("token-1"), body.clone()).await;
            assert_eq!(status, 200, "{body}: {answer}");
        }
        let failed: Vec<Option<i64>> = sb.messages().iter().map(|m| m.failed_code).collect();
        assert_eq!(failed, [Some(131050), None, None, None]);

        assert!(sb.set_preference(stop("pause")).await.is_err());
        sb.set_preference(stop("resume")).await.unwrap();
        post(&sb, SEND, Some("token-1"), template("event_promo")).await;
        assert_eq!(sb.messages()[4].failed_code, None);
        assert_eq!(sb.preferences()[0].value, MarketingPreference::Resume);
    }

    #[tokio::test]
    async fn faults_are_used_up_in_order_and_by_recipient() {
        let sb = served(vec![options()]).await;
        sb.add_fault(Fault {
            code: Some(130429),
            count: 2,
            to: Some("+919820012345".into()),
            retry_after: Some(7),
            ..fault()
        })
        .unwrap();
        let mut other = template_send(&["a", "b", "c"]);
        other["to"] = json!("447700900001");
        assert_eq!(post(&sb, SEND, Some("token-1"), other).await.0, 200);
        for _ in 0..2 {
            let (status, answer) =
                post(&sb, SEND, Some("token-1"), template_send(&["a", "b", "c"])).await;
            assert_eq!(
                (status, answer["error"]["code"].as_i64()),
                (400, Some(130429))
            );
        }
        assert_eq!(
            post(&sb, SEND, Some("token-1"), template_send(&["a", "b", "c"]))
                .await
                .0,
            200
        );
        assert!(sb.faults().is_empty());
        assert_eq!(sb.rejected().get("130429"), Some(&2));
    }

    #[test]
    fn faults_that_mean_nothing_are_refused() {
        let sb = Sandbox::new(SandboxConfig::default()).unwrap();
        for bad in [
            fault(),
            Fault {
                code: Some(1),
                count: 0,
                ..fault()
            },
            Fault {
                http_status: Some(200),
                ..fault()
            },
            Fault {
                http_status: Some(404),
                ..fault()
            },
            Fault {
                html: true,
                code: Some(1),
                http_status: Some(502),
                ..fault()
            },
            Fault {
                as_status: true,
                ..Fault {
                    delay_ms: Some(1),
                    ..fault()
                }
            },
            Fault {
                as_status: true,
                code: Some(131026),
                http_status: Some(500),
                ..fault()
            },
            Fault {
                code: Some(1),
                to: Some("nope".into()),
                ..fault()
            },
        ] {
            assert!(sb.add_fault(bad.clone()).is_err(), "{bad:?}");
        }
        assert!(sb.faults().is_empty());
    }

    #[test]
    fn the_config_never_prints_its_secrets() {
        let config = SandboxConfig {
            tokens: vec!["EAAG-token".into()],
            app_secret: Some("app-secret".into()),
            ..SandboxConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("EAAG") && !shown.contains("app-secret"),
            "{shown}"
        );
    }

    #[test]
    fn approved_templates_become_sandbox_templates() {
        let mut sources = crate::dsl::diagnostic::Sources::default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let (templates, _) = Templates::load(&dir, "templates", &mut sources);
        let all = SandboxTemplate::all_from(&templates);
        let options = all.iter().find(|t| t.name == "event_options").unwrap();
        assert_eq!(
            options,
            &SandboxTemplate {
                name: "event_options".into(),
                language: "en".into(),
                category: "utility".into(),
                params: 3,
                approved: true
            }
        );
        assert_eq!(all.len(), templates.approved_names().len());
    }

    #[test]
    fn status_titles_drop_the_code_prefix() {
        assert_eq!(
            title_of("(#131047) Re-engagement message"),
            "Re-engagement message"
        );
        assert_eq!(
            title_of("An unknown error occurred"),
            "An unknown error occurred"
        );
    }

    fn fault() -> Fault {
        Fault {
            count: 1,
            to: None,
            code: None,
            http_status: None,
            html: false,
            retry_after: None,
            delay_ms: None,
            as_status: false,
            details: None,
        }
    }
}
