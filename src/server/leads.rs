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
use crate::store::{ConsentRecord, LeadEvent, LeadRecord, Recorded};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The body of `POST /v1/leads`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    intent: Option<String>,
    #[serde(default)]
    playbook: Option<String>,
    #[serde(default)]
    consent: Option<ConsentInput>,
    #[serde(default)]
    fields: Map<String, Value>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    transcript: Vec<TranscriptMessage>,
    /// Answers to questions no field is declared for, in the order asked.
    #[serde(default)]
    answers: Vec<Answer>,
    /// The lead's ID in the system that sent it (a CRM, a form tool).
    #[serde(default)]
    external_id: Option<String>,
    /// The form it came from, for routing by form.
    #[serde(default)]
    form: Option<String>,
    /// Free-form origin (campaign, site), for routing by source.
    #[serde(default)]
    source: Option<String>,
    /// The situation of a dry run (`POST /v1/dry-run` only): the time, the
    /// WhatsApp window, a person on the thread. Read here so a dry run
    /// parses its body once.
    #[serde(default)]
    now: Option<Value>,
    #[serde(default)]
    window: Option<Value>,
    #[serde(default)]
    human: Option<Value>,
    /// `lead` or `message`: what a dry run decides.
    #[serde(default)]
    event: Option<Value>,
    /// The lead's thread in a dry run: `{open, opened, closed, asked}`.
    #[serde(default)]
    thread: Option<Value>,
    /// `opted_out` or `subscribed`: the lead's marketing preference in a dry run.
    #[serde(default)]
    marketing: Option<Value>,
}

impl LeadInput {
    /// Refuses the dry-run-only fields on a real lead.
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
}

/// A consent as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    whatsapp: bool,
    /// How it was given: the checkbox text, the words spoken.
    #[serde(default)]
    evidence: Option<String>,
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
    let input: LeadInput = super::extract::parse_json(&body_bytes)?;
    input.no_situation()?;
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

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    limit: Option<i64>,
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Query(query): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let leads = state
        .store
        .search(
            &account.id,
            query.q.as_deref().filter(|q| !q.is_empty()),
            limit,
        )
        .await?;
    Ok(Json(json!({"leads": leads})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TakeoverInput {
    #[serde(default)]
    queue: Option<String>,
}

pub async fn takeover(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
    OptionalJson(input): OptionalJson<TakeoverInput>,
) -> Result<Json<Value>, ApiError> {
    thread_state(&state, &account, id, input, true).await
}

pub async fn release(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
    OptionalJson(input): OptionalJson<TakeoverInput>,
) -> Result<Json<Value>, ApiError> {
    thread_state(&state, &account, id, input, false).await
}

async fn thread_state(
    state: &AppState,
    account: &Account,
    id: String,
    input: TakeoverInput,
    human: bool,
) -> Result<Json<Value>, ApiError> {
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
        Ok(Json(
            json!({"lead_id": id, "thread": if human { "human" } else { "automated" }}),
        ))
    } else {
        Err(ApiError::NotFound(format!("no lead `{id}`")))
    }
}

/// `POST /v1/dry-run`: the decision and trace for a lead, nothing stored or
/// sent. The body is a `POST /v1/leads` body, plus `now`, `window`,
/// `human`, `event`, `thread` and `marketing` to set the situation
/// (default: now, window closed, automated, an upstream lead, no thread
/// open, marketing allowed).
pub async fn dry_run(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    ApiJson(mut input): ApiJson<LeadInput>,
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
    let window_open = match input.window.take() {
        None | Some(Value::Null) => false,
        Some(Value::String(w)) if w == "open" => true,
        Some(Value::String(w)) if w == "closed" => false,
        Some(_) => {
            return Err(ApiError::invalid(
                "`window` is `open` or `closed`",
                "window",
            ))
        }
    };
    let human = match input.human.take() {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(ApiError::invalid("`human` must be true or false", "human")),
    };
    let event = match input.event.take() {
        None | Some(Value::Null) => Event::Lead,
        Some(Value::String(e)) if e == "lead" => Event::Lead,
        Some(Value::String(e)) if e == "message" => Event::Message,
        Some(_) => return Err(ApiError::invalid("`event` is `lead` or `message`", "event")),
    };
    let thread = match input.thread.take() {
        None | Some(Value::Null) => ThreadInput::default(),
        Some(v) => serde_json::from_value::<ThreadInput>(v).map_err(|e| {
            ApiError::invalid(
                format!("`thread` is `{{\"open\": true, \"opened\": TIME, \"closed\": TIME, \"asked\": [FIELD]}}`, every key optional: {e}"),
                "thread",
            )
        })?,
    };
    let marketing_opt_out = match input.marketing.take() {
        None | Some(Value::Null) => false,
        Some(Value::String(m)) if m == "opted_out" => true,
        Some(Value::String(m)) if m == "subscribed" => false,
        Some(_) => {
            return Err(ApiError::invalid(
                "`marketing` is `opted_out` or `subscribed`",
                "marketing",
            ))
        }
    };
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
    Ok(Json(DryRun {
        decision: &decision,
        trace: &trace,
    })
    .into_response())
}

/// The answer to a dry run.
#[derive(Serialize)]
struct DryRun<'a> {
    decision: &'a Decision,
    trace: &'a crate::engine::Trace<'a>,
}
