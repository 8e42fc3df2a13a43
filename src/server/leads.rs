//! Lead routes: intake through the API (`POST /v1/leads`), reading and
//! searching leads, taking a thread over and releasing it, and dry runs.

use super::error::ApiError;
use super::extract::{ApiAccount, ApiJson, JsonBytes, OptionalJson, Path, Query};
use super::AppState;
use crate::config::Account;
use crate::dsl::schema::CHANNELS;
use crate::engine::lead::{Answer, TranscriptMessage};
use crate::engine::{Event, Situation, ThreadInput};
use crate::pipeline::policy;
use crate::pipeline::{decide_for, pick_playbook, Decided, NoPlaybook, Route};
use crate::ruleset::{Decision, Ruleset};
use crate::store::view::{LeadResult, LeadSummary};
use crate::store::{ConsentRecord, LeadEvent, LeadRecord, Recorded};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Declares a lead body: the members every lead body has (those of
/// `POST /v1/leads`), then the ones given. Text members are trimmed, and
/// empty is the same as absent; what they may hold is the input policy's
/// ([`policy`]): at most the length given, no control characters except
/// line breaks and tabs.
macro_rules! lead_body {
    ($(#[$meta:meta])* pub struct $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The lead's full name.
            #[serde(default)]
            #[schema(max_length = 200)]
            pub name: Option<String>,
            /// The first name, when it is known apart from `name`.
            #[serde(default)]
            #[schema(max_length = 100)]
            pub first_name: Option<String>,
            /// The phone number in any common format; stored in E.164, read
            /// with the account's default region when it has no country code.
            #[serde(default)]
            #[schema(max_length = 40)]
            pub phone: Option<String>,
            /// The email address; stored lowercased.
            #[serde(default)]
            #[schema(max_length = 254)]
            pub email: Option<String>,
            /// The lead's language (a BCP 47 tag).
            #[serde(default)]
            #[schema(max_length = 35)]
            pub language: Option<String>,
            /// The channel the lead came in by, case-insensitive; default
            /// `api`. Any other value than these is refused (422).
            #[serde(default)]
            #[schema(max_length = 32, examples("api", "instagram", "web", "lead_ad", "voice", "whatsapp"))]
            pub channel: Option<String>,
            /// What the lead wants, as the playbook names intents.
            #[serde(default)]
            #[schema(max_length = 100)]
            pub intent: Option<String>,
            /// The playbook that decides the lead; must be one the account may use.
            #[serde(default)]
            pub playbook: Option<String>,
            #[serde(default)]
            pub consent: Option<ConsentInput>,
            /// Qualification fields by playbook field name; coerced to the
            /// declared types when the rules read them. On an existing lead,
            /// a field given replaces the stored one and `null` removes it.
            #[serde(default)]
            #[schema(value_type = Object)]
            pub fields: Map<String, Value>,
            /// Added to the lead's tags.
            #[serde(default)]
            pub tags: Vec<String>,
            /// Earlier messages, added to the lead's transcript.
            #[serde(default)]
            pub transcript: Vec<TranscriptMessage>,
            /// Answers to questions no field is declared for, in the order
            /// asked; a question answered again keeps its place with the new
            /// answer.
            #[serde(default)]
            #[schema(max_items = 200)]
            pub answers: Vec<Answer>,
            /// The lead's ID in the system that sent it (a CRM, a form
            /// tool); an identity like phone and email.
            #[serde(default)]
            #[schema(max_length = 200)]
            pub external_id: Option<String>,
            /// The form it came from, for the account's routing by form.
            #[serde(default)]
            pub form: Option<String>,
            /// Free-form origin (campaign, site), for the account's routing
            /// by source.
            #[serde(default)]
            pub source: Option<String>,
            $($extra)*
        }
    };
}

lead_body! {
    /// A lead as the API takes it. Every member may be left out;
    /// `POST /v1/leads` needs at least one of `phone`, `email` and
    /// `external_id` (else 422 at `phone`). Unknown members are refused (400).
    pub struct LeadInput {}
}

lead_body! {
    /// A `LeadInput` plus the situation to decide it in. `now`, `window`,
    /// `human`, `event`, `thread` and `marketing` of the wrong type or value
    /// are answered 422 at that member. Unlike `POST /v1/leads`, no identity
    /// is required.
    pub struct DryRunInput {
        /// The time to decide at (RFC 3339); default: now.
        #[serde(default)]
        #[schema(value_type = Option<String>, format = DateTime)]
        pub now: Option<Value>,
        /// Whether the WhatsApp 24-hour window is open; default `closed`.
        #[serde(default)]
        #[schema(value_type = Option<Window>)]
        pub window: Option<Value>,
        /// Whether a person has taken the thread over; default `false`.
        #[serde(default)]
        #[schema(value_type = Option<bool>)]
        pub human: Option<Value>,
        /// What is decided: an upstream lead, or a message the lead wrote
        /// on WhatsApp (its latest transcript line `from: lead`); default
        /// `lead`.
        #[serde(default)]
        #[schema(value_type = Option<EventKind>)]
        pub event: Option<Value>,
        /// The lead's thread; default: none open.
        #[serde(default)]
        #[schema(value_type = Option<ThreadInput>)]
        pub thread: Option<Value>,
        /// The lead's marketing preference; default `subscribed`.
        #[serde(default)]
        #[schema(value_type = Option<Marketing>)]
        pub marketing: Option<Value>,
    }
}

impl DryRunInput {
    /// Refuses the situation of a dry run on a real lead, with a 422 that
    /// says where it belongs (rather than the 400 of an unknown member).
    fn no_situation(&self) -> Result<(), ApiError> {
        for (name, v) in [
            ("now", &self.now),
            ("window", &self.window),
            ("human", &self.human),
            ("event", &self.event),
            ("thread", &self.thread),
            ("marketing", &self.marketing),
        ] {
            if v.is_some() {
                return Err(ApiError::invalid(
                    format!("`{name}` sets the situation of a dry run; a real lead is decided now, in its real window (send it to POST /v1/dry-run)"),
                    name,
                ));
            }
        }
        Ok(())
    }

    /// The lead, apart from the situation.
    fn lead(self) -> LeadInput {
        LeadInput {
            name: self.name,
            first_name: self.first_name,
            phone: self.phone,
            email: self.email,
            language: self.language,
            channel: self.channel,
            intent: self.intent,
            playbook: self.playbook,
            consent: self.consent,
            fields: self.fields,
            tags: self.tags,
            transcript: self.transcript,
            answers: self.answers,
            external_id: self.external_id,
            form: self.form,
            source: self.source,
        }
    }
}

/// A member of a dry run's situation as its type, `None` when absent or
/// null; any other value is refused with `message` (422 at `at`).
fn situation<T: serde::de::DeserializeOwned>(
    value: Option<Value>,
    at: &str,
    message: &str,
) -> Result<Option<T>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("{message}: {e}"), at)),
    }
}

/// The WhatsApp window of a dry run.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum Window {
    Open,
    Closed,
}

/// What a dry run decides.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum EventKind {
    Lead,
    Message,
}

/// A lead's marketing preference.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum Marketing {
    Subscribed,
    OptedOut,
}

/// A WhatsApp opt-in. `whatsapp: false` records nothing.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    whatsapp: bool,
    /// How it was given: the checkbox text, the words spoken.
    #[serde(default)]
    evidence: Option<String>,
    /// When it was given; default: when received.
    #[serde(default)]
    at: Option<DateTime<Utc>>,
}

/// A text as the lead keeps it: trimmed, empty as absent. What it may
/// hold is the input policy's to say ([`policy::check_event`]).
fn clean(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Answers as the lead keeps them: trimmed, empty ones dropped.
fn clean_answers(answers: Vec<Answer>) -> Vec<Answer> {
    answers
        .into_iter()
        .filter_map(|a| {
            Some(Answer {
                question: clean(Some(a.question))?,
                answer: clean(Some(a.answer))?,
            })
        })
        .collect()
}

/// Checks a lead body and turns it into a store event and its playbook:
/// the same rules for intake and for dry runs.
fn to_event(
    input: LeadInput,
    account: &Account,
    ruleset: &Ruleset,
) -> Result<(LeadEvent, String), ApiError> {
    let channel = clean(input.channel.clone())
        .map(|c| c.to_lowercase())
        .unwrap_or_else(|| "api".into());
    if !CHANNELS.contains(&channel.as_str()) {
        return Err(ApiError::invalid(
            format!(
                "`channel` is `{channel}`; use one of {}",
                CHANNELS.join(", ")
            ),
            "channel",
        ));
    }
    let phone = match clean(input.phone.clone()) {
        Some(raw) => Some({
            policy::text(&raw, "phone", policy::PHONE, policy::Shape::Line)?;
            crate::intake::phone::normalize_phone(&raw, &account.default_region).map_err(|e| {
                ApiError::invalid(
                    format!("`phone` cannot be read as a phone number: {e}"),
                    "phone",
                )
            })?
        }),
        None => None,
    };
    let email = clean(input.email.clone()).map(|e| e.to_lowercase());
    if let Some(e) = &email {
        policy::text(e, "email", policy::EMAIL, policy::Shape::Line)?;
        let at = e.find('@');
        if !at.is_some_and(|i| i > 0 && i + 1 < e.len() && !e.contains(char::is_whitespace)) {
            return Err(ApiError::invalid(
                format!("`email` `{e}` is not an email address"),
                "email",
            ));
        }
    }
    for (at, value, max) in [
        ("playbook", &input.playbook, policy::PLAYBOOK),
        ("form", &input.form, policy::IDENTITY),
        ("source", &input.source, policy::IDENTITY),
    ] {
        if let Some(v) = value {
            policy::text(v, at, max, policy::Shape::Line)?;
        }
    }
    // As sent: an answer left out for being empty is checked all the same.
    policy::answers(&input.answers, "answers")?;
    let route = Route {
        playbook: input.playbook.as_deref(),
        form: input.form.as_deref(),
        channel: &channel,
        source: input.source.as_deref(),
    };
    let playbook = pick_playbook(account, ruleset, route).map_err(|e| {
        let message = match &e {
            NoPlaybook::Unrouted { available, .. } => format!(
                "which playbook decides this lead? give `playbook` ({}), or set a default routing for the account",
                available.join(", ")
            ),
            NoPlaybook::NotAvailable { playbook, available, .. } => format!(
                "playbook `{playbook}` is not available to this account (available: {})",
                available.join(", ")
            ),
        };
        ApiError::invalid(message, "playbook")
    })?;
    let mut identities = Vec::new();
    if let Some(p) = &phone {
        identities.push(("phone".to_string(), p.clone()));
    }
    if let Some(e) = &email {
        identities.push(("email".to_string(), e.clone()));
    }
    if let Some(x) = clean(input.external_id.clone()) {
        identities.push(("external".to_string(), x));
    }
    if identities.is_empty() {
        return Err(ApiError::invalid(
            "a lead needs a `phone`, an `email` or an `external_id`, so that later events find it",
            "phone",
        ));
    }
    let consent = input
        .consent
        .as_ref()
        .filter(|c| c.whatsapp)
        .map(|c| ConsentRecord {
            channel: "whatsapp".into(),
            granted: true,
            source: channel.clone(),
            at: c.at.unwrap_or_else(Utc::now),
            evidence: c.evidence.clone(),
        });
    let event = LeadEvent {
        identities,
        name: clean(input.name),
        first_name: clean(input.first_name),
        phone,
        email,
        language: clean(input.language),
        channel: Some(channel),
        intent: clean(input.intent),
        playbook: Some(playbook.clone()),
        fields: input.fields,
        tags: input.tags,
        messages: input.transcript,
        answers: clean_answers(input.answers),
        consent,
        ..LeadEvent::default()
    };
    policy::check_event(&event)?;
    Ok((event, playbook))
}

/// The `Idempotency-Key` of a request that creates something.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Makes a retry safe: a second request with the same key (for the same
    /// account) and the same body is answered with the first answer and
    /// changes nothing (`idempotent-replayed: true`); the same key with
    /// another body is refused (422, `idempotency_key_reused`). 1 to 255
    /// visible ASCII characters; surrounding spaces are trimmed.
    #[param(rename = "Idempotency-Key", value_type = String, required = false, min_length = 1, max_length = 255)]
    #[allow(dead_code)]
    key: Option<String>,
}

/// The ID of a lead, in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LeadId {
    /// The lead's ID (a UUID v7, as `lead_id` in the intake answer).
    #[allow(dead_code)]
    id: String,
}

/// Take in a lead: store it, decide it, queue what the decision sends.
///
/// The lead is matched to an existing lead of the account by any of its
/// identities (phone, email, `external_id`); leads that turn out to be one
/// person are merged, the oldest surviving. The event, its decision, the
/// outbox rows and the idempotency record commit together. The playbook is
/// the lead's `playbook`, else the account's routing by `form`, by
/// `channel`, by `source`, its default, else the only playbook the account
/// may use. A lead that already has a playbook keeps it.
#[utoipa::path(
    post,
    path = "/v1/leads",
    tag = "leads",
    operation_id = "createLead",
    params(IdempotencyKey),
    request_body(content = LeadInput, content_type = "application/json", example = json!({
        "name": "Aisha Khan",
        "phone": "+91 98123 45678",
        "channel": "instagram",
        "intent": "event_enquiry",
        "playbook": "events",
        "consent": {"whatsapp": true, "evidence": "Ticked 'Message me on WhatsApp' in the Instagram lead form"},
        "fields": {"city": "Goa", "event_date": "2027-03-14", "guests": 120},
        "transcript": [
            {"channel": "instagram", "from": "lead", "text": "Hi! Planning a wedding in Goa on March 14, around 120 guests.", "at": "2026-11-20T04:10:00Z"}
        ]
    })),
    responses(
        (status = 201, description = "A new lead was stored and decided.", body = LeadResult,
            headers(("idempotent-replayed" = String, description = "`false`: this request was done now."))),
        (status = 200, description = "The event was added to an existing lead and decided (`idempotent-replayed: false`), or the request repeats an earlier `Idempotency-Key` with the same body and this is the first answer, unchanged (`idempotent-replayed: true`).", body = LeadResult,
            headers(("idempotent-replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key` (nothing was done again), `false` otherwise."))),
        super::openapi::JsonErrors,
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    headers: HeaderMap,
    JsonBytes(body_bytes): JsonBytes,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency = match headers.get("idempotency-key") {
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() && k.len() <= 255 => {
                Some(("api".to_string(), k.trim().to_string()))
            }
            _ => {
                return Err(ApiError::bad(
                    "`Idempotency-Key` must be 1 to 255 visible characters",
                    Some("Idempotency-Key".into()),
                ))
            }
        },
        None => None,
    };
    // Read as a dry run's body, so that its situation is refused by name.
    let input: DryRunInput = super::extract::parse_json(&body_bytes)?;
    input.no_situation()?;
    let input = input.lead();
    let ruleset = state
        .ruleset()
        .ok_or_else(|| ApiError::Internal("no ruleset loaded".into()))?;
    let (mut event, playbook) = to_event(input, &account, &ruleset)?;
    // The key's request, as sent: the same key with another body is refused.
    event.fingerprint = idempotency
        .as_ref()
        .map(|_| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body_bytes)));
    event.dedup = idempotency;
    let channel_label = event.channel.clone().unwrap_or_default();
    let updates = account.lead_updates.clone();
    let managed: Vec<String> = account.queues.keys().cloned().collect();
    let recorded = state
        .store
        .record(&account.id, event, move |lead| {
            decide_for(
                &ruleset,
                Ok(&playbook),
                lead,
                &updates,
                &managed,
                &Decided::default(),
            )
        })
        .await?;
    state.outbox.notify_one();
    if !account.queues.is_empty() {
        state.queues.notify_one();
    }
    Ok(match recorded {
        Recorded::New {
            lead_id, response, ..
        } => {
            let created = response["created"].as_bool().unwrap_or(false);
            state.count_decision(&account.id, &channel_label, &response);
            state.announce(&account.id, &lead_id);
            tracing::info!(account = %account.id, lead = %lead_id, created, "lead recorded");
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, [("idempotent-replayed", "false")], Json(response)).into_response()
        }
        Recorded::KeyReused => {
            return Err(ApiError::KeyReused {
                message: "this `Idempotency-Key` was used for a different request; send a new key for a new lead, or the same body to get the first answer again".into(),
                at: "Idempotency-Key".into(),
            })
        }
        // The first answer, with its status.
        Recorded::Replay { response } => (
            if response["created"].as_bool().unwrap_or(false) {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            [("idempotent-replayed", "true")],
            Json(response),
        )
            .into_response(),
    })
}

/// Everything about a lead.
///
/// The ID of a lead merged into another answers with the surviving lead
/// (whose `id` differs from the one asked for). Another account's lead is
/// answered exactly as a lead that does not exist.
#[utoipa::path(
    get,
    path = "/v1/leads/{id}",
    tag = "leads",
    operation_id = "getLead",
    params(LeadId),
    responses(
        (status = 200, description = "The lead.", body = LeadRecord),
        super::openapi::LeadErrors,
    )
)]
pub async fn get_lead(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
) -> Result<Json<LeadRecord>, ApiError> {
    // Another account's lead is answered exactly as a lead that does not exist.
    match state.store.lead(&account.id, &id).await? {
        Some(lead) => Ok(Json(lead)),
        None => Err(ApiError::NotFound(format!("no lead `{id}`"))),
    }
}

/// What `GET /v1/leads` looks for.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// A fragment of the name, phone or email to match (`%` and `_` are
    /// ignored). Empty means every lead.
    q: Option<String>,
    /// How many leads at most; values outside 1 to 500 are clamped into it.
    #[param(default = 50)]
    limit: Option<i64>,
}

/// The leads found.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LeadList {
    leads: Vec<LeadSummary>,
}

/// The account's leads, most recently updated first.
///
/// Merged-away leads are not listed.
#[utoipa::path(
    get,
    path = "/v1/leads",
    tag = "leads",
    operation_id = "searchLeads",
    params(SearchQuery),
    responses(
        (status = 200, description = "The matching leads.", body = LeadList),
        super::openapi::KeyErrors,
    )
)]
pub async fn search(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Query(query): Query<SearchQuery>,
) -> Result<Json<LeadList>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let leads = state
        .store
        .search(
            &account.id,
            query.q.as_deref().filter(|q| !q.is_empty()),
            limit,
        )
        .await?;
    Ok(Json(LeadList { leads }))
}

/// The body of a takeover or release; it may be left out.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeoverInput {
    /// The queue the thread moves to; absent keeps the current queue.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    queue: Option<String>,
}

/// Who has a thread: automation, or a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ThreadMode {
    Human,
    Automated,
}

/// A thread's new state.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ThreadState {
    /// The ID from the path.
    lead_id: String,
    thread: ThreadMode,
}

/// A person takes the lead's thread over: automation pauses (outcome `paused_human`).
///
/// The body may be empty. `queue`, when given, moves the thread to that
/// queue. The ID must be the lead's current ID: a lead merged into another
/// is not found here.
#[utoipa::path(
    post,
    path = "/v1/leads/{id}/takeover",
    tag = "leads",
    operation_id = "takeOverThread",
    params(LeadId),
    request_body(content = Option<TakeoverInput>, content_type = "application/json", example = json!({"queue": "events-senior-closers"})),
    responses(
        (status = 200, description = "The thread's new state.", body = ThreadState, example = json!({"lead_id": "0194c0de-7f3a-7000-8000-000000000001", "thread": "human"})),
        super::openapi::LeadJsonErrors,
    )
)]
pub async fn takeover(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
    OptionalJson(input): OptionalJson<TakeoverInput>,
) -> Result<Json<ThreadState>, ApiError> {
    thread_state(&state, &account, id, input, true).await
}

/// Give the lead's thread back to automation.
///
/// The body may be empty. `queue`, when given, moves the thread to that
/// queue. The ID must be the lead's current ID: a lead merged into another
/// is not found here.
#[utoipa::path(
    post,
    path = "/v1/leads/{id}/release",
    tag = "leads",
    operation_id = "releaseThread",
    params(LeadId),
    request_body(content = Option<TakeoverInput>, content_type = "application/json", example = json!({"queue": "events-senior-closers"})),
    responses(
        (status = 200, description = "The thread's new state.", body = ThreadState, example = json!({"lead_id": "0194c0de-7f3a-7000-8000-000000000001", "thread": "automated"})),
        super::openapi::LeadJsonErrors,
    )
)]
pub async fn release(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
    OptionalJson(input): OptionalJson<TakeoverInput>,
) -> Result<Json<ThreadState>, ApiError> {
    thread_state(&state, &account, id, input, false).await
}

async fn thread_state(
    state: &AppState,
    account: &Account,
    id: String,
    input: TakeoverInput,
    human: bool,
) -> Result<Json<ThreadState>, ApiError> {
    let queue = match input.queue.as_deref() {
        Some(q) => Some(super::extract::clean_queue(Some(q))?),
        None => None,
    };
    if state
        .store
        .set_thread_owner(&account.id, &id, human, "api", None)
        .await?
    {
        if let Some(queue) = &queue {
            let managed = account.queues.contains_key(queue);
            state
                .store
                .reassign(&account.id, &id, queue, "api", managed)
                .await?;
        }
        state.announce(&account.id, &id);
        state.queues.notify_one();
        let thread = if human {
            ThreadMode::Human
        } else {
            ThreadMode::Automated
        };
        Ok(Json(ThreadState {
            lead_id: id,
            thread,
        }))
    } else {
        Err(ApiError::NotFound(format!("no lead `{id}`")))
    }
}

/// The decision and trace for a lead; nothing is stored or sent.
///
/// The body is a `POST /v1/leads` body plus `now`, `window`, `human`,
/// `event`, `thread` and `marketing`, which set the situation (default:
/// now, window closed, automated, an upstream lead, no thread open,
/// marketing allowed). Unlike `POST /v1/leads`, no identity is required;
/// `phone` is still normalized.
#[utoipa::path(
    post,
    path = "/v1/dry-run",
    tag = "leads",
    operation_id = "dryRun",
    request_body(content = DryRunInput, content_type = "application/json", example = json!({
        "name": "Aisha Khan",
        "phone": "+91 98123 45678",
        "channel": "instagram",
        "intent": "event_enquiry",
        "playbook": "events",
        "consent": {"whatsapp": true, "evidence": "Ticked 'Message me on WhatsApp' in the Instagram lead form"},
        "fields": {"city": "Goa", "event_date": "2027-03-14", "guests": 120},
        "now": "2027-01-10T10:00:00+05:30",
        "window": "open",
        "human": false
    })),
    responses(
        (status = 200, description = "What the playbook decides, and why.", body = DryRun),
        super::openapi::JsonErrors,
    )
)]
pub async fn dry_run(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    ApiJson(mut input): ApiJson<DryRunInput>,
) -> Result<Response, ApiError> {
    let now = match input.now.take() {
        None | Some(Value::Null) => Utc::now(),
        Some(Value::String(t)) => DateTime::parse_from_rfc3339(&t)
            .map_err(|_| {
                ApiError::invalid(format!("`now` is `{t}`; give an RFC 3339 time"), "now")
            })?
            .with_timezone(&Utc),
        Some(_) => return Err(ApiError::invalid("`now` must be an RFC 3339 string", "now")),
    };
    let window = situation(
        input.window.take(),
        "window",
        "`window` is `open` or `closed`",
    )?;
    let human = situation(input.human.take(), "human", "`human` must be true or false")?;
    let event = situation(
        input.event.take(),
        "event",
        "`event` is `lead` or `message`",
    )?;
    let thread: ThreadInput = situation(
        input.thread.take(),
        "thread",
        "`thread` is `{\"open\": true, \"opened\": TIME, \"closed\": TIME, \"asked\": [FIELD]}`, every key optional",
    )?
    .unwrap_or_default();
    let marketing = situation(
        input.marketing.take(),
        "marketing",
        "`marketing` is `opted_out` or `subscribed`",
    )?;
    let window_open = matches!(window, Some(Window::Open));
    let human = human.unwrap_or(false);
    let event = match event {
        Some(EventKind::Message) => Event::Message,
        Some(EventKind::Lead) | None => Event::Lead,
    };
    let marketing_opt_out = matches!(marketing, Some(Marketing::OptedOut));
    let input = input.lead();
    let ruleset = state
        .ruleset()
        .ok_or_else(|| ApiError::Internal("no ruleset loaded".into()))?;
    let (lead_event, playbook) = to_event(input, &account, &ruleset)?;
    let lead = lead_event.lead();
    let situation = Situation {
        now,
        window_open,
        human,
        event,
        thread: thread.at(now),
        marketing_opt_out,
        message: None,
    };
    let (decision, trace) = ruleset
        .explain(&playbook, &lead, &situation)
        .map_err(|e| ApiError::invalid(e.to_string(), "playbook"))?;
    // Serialized straight from the decision and its borrowed trace: going
    // through `serde_json::Value` first doubled the cost of a dry run.
    // Written in one go into a buffer the size of a usual answer (about
    // 3 KB with its trace), rather than one grown from 128 bytes.
    let mut body = Vec::with_capacity(4096);
    let answer = DryRun {
        decision: &decision,
        trace: &trace,
    };
    serde_json::to_writer(&mut body, &answer).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// The answer to a dry run: the decision, and why.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = DryRunResult)]
pub struct DryRun<'a> {
    decision: &'a Decision,
    trace: &'a crate::engine::Trace<'a>,
}
