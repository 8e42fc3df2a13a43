//! Webhook intake: Meta (WhatsApp, Instagram, lead ads), web forms and voice
//! call reports. Each request is verified, its events stored, and only then
//! acknowledged; a worker processes stored events into leads and decisions.
//! A redelivered event (same source ID) is stored once and processed once.

use super::error::ApiError;
use super::error::{Path, Query};
use super::leads::{decide_for, pick_playbook_named, read_body, Decided};
use super::AppState;
use crate::config::Account;
use crate::engine::lead::{Answer, TranscriptMessage};
use crate::engine::Event;
use crate::intake::{self, InboundEvent, MetaObject};
use crate::store::{
    ConsentRecord, Enqueued, InboundMessage, LeadEvent, PendingWebhook, StatusRecord,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn account<'a>(state: &'a AppState, id: &str) -> Result<&'a Account, ApiError> {
    state
        .config
        .account(id)
        .ok_or_else(|| ApiError::NotFound(format!("no account `{id}`")))
}

/// Stores `events` from `source` for the worker and wakes it; counts those
/// that were new, since a redelivery is stored once. Returns that number.
async fn store_events(
    state: &AppState,
    account: &str,
    source: &str,
    events: &[(String, Value)],
) -> Result<usize, ApiError> {
    let new = state
        .store
        .enqueue_webhooks(account, source, events)
        .await?;
    state.metrics.add(
        "handoff_webhook_events_total",
        &[("source", source)],
        new as u64,
    );
    state.work.notify_one();
    Ok(new)
}

/// `GET /webhooks/meta/{account}`: Meta's subscription check.
pub async fn meta_verify(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let account = account(&state, &id)?;
    let token = account.meta_verify_token.as_ref().map(|t| t.expose());
    match (
        query.get("hub.mode").map(String::as_str),
        query.get("hub.verify_token"),
        query.get("hub.challenge"),
        token,
    ) {
        (Some("subscribe"), Some(given), Some(challenge), Some(expected)) if given == expected => {
            Ok((StatusCode::OK, challenge.clone()).into_response())
        }
        _ => Err(ApiError::Forbidden(
            "verification failed: `hub.mode` must be `subscribe` and `hub.verify_token` the account's `meta_verify_token`".into(),
        )),
    }
}

/// `POST /webhooks/meta/{account}`: signed WhatsApp, Instagram and lead-ad events.
pub async fn meta_events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(body)?;
    let account = account(&state, &id)?;
    let secrets: Vec<&[u8]> = account
        .meta_app_secrets
        .iter()
        .map(|s| s.expose().as_bytes())
        .collect();
    let signature = headers
        .get(intake::signature::META_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = intake::signature::verify_meta_signature(signature, &body, &secrets) {
        tracing::warn!(account = %account.id, "webhook rejected: {e}");
        return Err(ApiError::BadSignature(e.to_string()));
    }
    let parsed = intake::parse_meta_webhook_lenient(&body)
        .map_err(|e| ApiError::bad(e.to_string(), None))?;
    let source = match parsed.object {
        MetaObject::WhatsappBusinessAccount => "whatsapp",
        MetaObject::Instagram => "instagram",
        MetaObject::Page => "leadgen",
    };
    let events: Vec<(String, Value)> = parsed
        .events
        .iter()
        .map(|e| {
            (
                e.source_id(),
                serde_json::to_value(e).unwrap_or(Value::Null),
            )
        })
        .collect();
    let new = store_events(&state, &account.id, source, &events).await?;
    for r in &parsed.rejected {
        tracing::warn!(account = %account.id, "webhook item skipped: {r}");
    }
    Ok(Json(
        json!({"received": events.len(), "new": new, "rejected": parsed.rejected.len()}),
    ))
}

/// A lead from a form or a call, as stored for the worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct QueuedLead {
    channel: String,
    playbook: Option<String>,
    name: Option<String>,
    first_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    intent: Option<String>,
    language: Option<String>,
    fields: Map<String, Value>,
    consent: Option<QueuedConsent>,
    transcript: Vec<TranscriptMessage>,
    form: Option<String>,
    /// Answers to questions no field is mapped to, in the order asked.
    #[serde(default)]
    answers: Vec<Answer>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct QueuedConsent {
    whatsapp: bool,
    source: String,
    evidence: String,
    at: Option<DateTime<Utc>>,
}

fn queued(
    channel: &str,
    form: Option<String>,
    playbook: Option<String>,
    m: intake::MappedLead,
    transcript: Vec<TranscriptMessage>,
) -> QueuedLead {
    QueuedLead {
        channel: channel.into(),
        playbook,
        name: m.name,
        first_name: m.first_name,
        email: m.email,
        phone: m.phone,
        intent: m.intent,
        language: m.language,
        fields: m.fields,
        consent: m.consent.map(|c| QueuedConsent {
            whatsapp: c.whatsapp,
            source: c.source,
            evidence: c.evidence,
            at: c.at,
        }),
        transcript,
        form,
        answers: answers_of(m.unmapped),
    }
}

/// A mapped lead's unmapped answers as the lead keeps them.
fn answers_of(unmapped: Vec<(String, String)>) -> Vec<Answer> {
    unmapped
        .into_iter()
        .map(|(question, answer)| Answer { question, answer })
        .collect()
}

/// `POST /webhooks/forms/{account}/{form}`: a web form submission, JSON or
/// form-encoded, mapped by the form's configuration.
pub async fn form(
    State(state): State<Arc<AppState>>,
    Path((id, form_name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = read_body(body)?;
    let account = account(&state, &id)?;
    let form = account
        .forms
        .get(&form_name)
        .ok_or_else(|| ApiError::NotFound(format!("no form `{form_name}` for this account")))?;
    if let Some(secret) = &form.secret {
        let value = headers
            .get(form.signature_header.as_str())
            .and_then(|v| v.to_str().ok());
        intake::signature::verify_hmac_sha256(
            &form.signature_header,
            value,
            &body,
            &[secret.expose().as_bytes()],
        )
        .map_err(|e| ApiError::BadSignature(e.to_string()))?;
    }
    let mapping =
        intake::FieldMapping::from_pairs(form.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| ApiError::Internal(format!("form `{form_name}` mapping: {e}")))?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_json =
        match content_type.as_deref() {
            Some(t) if super::error::is_json(t) => true,
            Some(t)
                if t.split(';').next().is_some_and(|e| {
                    e.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                }) =>
            {
                false
            }
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                "{}`; a form is sent as `application/json` or `application/x-www-form-urlencoded",
                other.unwrap_or("nothing").chars().take(100).collect::<String>()
            )))
            }
        };
    let mapped = if is_json {
        // Read in the body's own order, so unmapped answers keep the order asked.
        intake::map_form_json_body(&body, &mapping)
            .map_err(|e| ApiError::bad(e.to_string(), None))?
    } else {
        let pairs = url_decode_pairs(&body)?;
        intake::map_form_pairs(
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &mapping,
        )
    };
    if mapped.phone.is_none() && mapped.email.is_none() {
        return Err(ApiError::invalid(
            "the form gave neither a phone number nor an email, so the lead cannot be reached",
            "phone",
        ));
    }
    if let Some(p) = &mapped.phone {
        intake::normalize_phone(p, &account.default_region).map_err(|e| {
            ApiError::invalid(format!("the phone number cannot be read: {e}"), "phone")
        })?;
    }
    // A form tool's retry carries the same submission: its own ID when it
    // sends one, else the body itself identifies it.
    let source_id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("{form_name}:{k}"))
        .unwrap_or_else(|| {
            format!(
                "{form_name}:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))
            )
        });
    let lead = queued(
        "web_form",
        Some(form_name.clone()),
        form.playbook.clone(),
        mapped,
        Vec::new(),
    );
    accept(
        &state,
        account,
        "form",
        &source_id,
        &lead,
        "this submission's `Idempotency-Key`",
    )
    .await
}

/// The pairs of a form-encoded body. Text that is not UTF-8, before or
/// after percent-decoding, is refused rather than patched.
fn url_decode_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let not_utf8 = || {
        ApiError::bad(
            "the form body is not UTF-8 once percent-decoded; send UTF-8 text",
            None,
        )
    };
    let text = std::str::from_utf8(body).map_err(|_| not_utf8())?;
    let decode = |s: &str| -> Result<String, ApiError> {
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| not_utf8())
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((decode(k)?, decode(v)?)),
            None => Ok((decode(p)?, String::new())),
        })
        .collect()
}

/// Checks a form's or a call's lead against the input policy, as the
/// worker will store it, and stores it for the worker: a retry of the same
/// submission is a duplicate, the same ID with another lead is refused.
async fn accept(
    state: &AppState,
    account: &Account,
    source: &str,
    source_id: &str,
    lead: &QueuedLead,
    reused: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let event =
        lead_event(account, lead.clone(), None).map_err(|e| ApiError::invalid(e, "phone"))?;
    intake::policy::check_event(&event)?;
    let payload = serde_json::to_value(lead).map_err(|e| ApiError::Internal(e.to_string()))?;
    let enqueued = state
        .store
        .enqueue_webhook(&account.id, source, source_id, &payload)
        .await?;
    match enqueued {
        Enqueued::Differs => Err(ApiError::KeyReused {
            message: format!(
                "{reused} was used before for a different submission; nothing was stored"
            ),
            at: if source == "voice" {
                "call_id"
            } else {
                "Idempotency-Key"
            }
            .into(),
        }),
        Enqueued::New | Enqueued::Duplicate => {
            if enqueued == Enqueued::New {
                state
                    .metrics
                    .add("handoff_webhook_events_total", &[("source", source)], 1);
            }
            state.work.notify_one();
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"accepted": true, "duplicate": enqueued == Enqueued::Duplicate})),
            ))
        }
    }
}

/// `POST /webhooks/voice/{account}`: a voice agent's call report (API key).
pub async fn voice(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = read_body(body)?;
    let account = state.authenticate(&headers)?;
    if account.id != id {
        return Err(ApiError::NotFound(format!("no account `{id}`")));
    }
    super::error::require_json(&headers)?;
    let report =
        intake::parse_call_report(&body).map_err(|e| ApiError::bad(e.to_string(), None))?;
    if let Some(p) = &report.lead.phone {
        intake::normalize_phone(p, &account.default_region).map_err(|e| {
            ApiError::invalid(format!("the caller's number cannot be read: {e}"), "from")
        })?;
    }
    let call_id = report.call_id.clone();
    let lead = queued("voice", None, None, report.lead, report.transcript);
    accept(
        &state,
        account,
        "voice",
        &call_id,
        &lead,
        &format!("`call_id` `{call_id}`"),
    )
    .await
}

/// Processes stored webhook events until the server stops.
pub fn spawn_worker(state: Arc<AppState>) {
    tokio::spawn(async move {
        loop {
            // Held for as long as an outbox claim: another instance's worker
            // takes them over only once this one has stopped for that long.
            let lease = state.config.delivery.lease;
            let due = match state.store.due_webhooks(64, lease).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read webhook events");
                    Vec::new()
                }
            };
            let idle = due.is_empty();
            // Delivery statuses each touch one message and only move it
            // forward, so they are applied together rather than in turn: a
            // burst of sends brings two statuses each, and a status applied
            // after the grace period would let an uncertain send go again.
            // Everything else stays in order (a user's messages decide in turn).
            let (statuses, others): (Vec<_>, Vec<_>) = due.into_iter().partition(|e| {
                e.source.as_str() == "whatsapp" && e.source_id.starts_with("status:")
            });
            let mut applying = tokio::task::JoinSet::new();
            for event in statuses {
                let state = state.clone();
                applying.spawn(async move { handle(&state, &event).await });
            }
            for event in others {
                handle(&state, &event).await;
            }
            while applying.join_next().await.is_some() {}
            if idle {
                tokio::select! {
                    _ = state.work.notified() => {},
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                }
            }
        }
    });
}

/// Processes one stored event and records how it went.
async fn handle(state: &Arc<AppState>, event: &PendingWebhook) {
    let outcome = process(state, event).await;
    let attempts = event.attempts + 1;
    let (error, give_up) = match &outcome {
        Ok(()) => (None, false),
        Err(Refused::Retry(e)) => (Some(e.as_str()), attempts >= 8),
        Err(Refused::Permanent(e)) => (Some(e.as_str()), true),
    };
    if let Some(e) = error {
        tracing::warn!(source = %event.source, attempts, "webhook event not processed: {e}");
    }
    // Backoff: 2, 4, 8 ... seconds, at most ten minutes.
    let retry = Duration::from_secs((1u64 << attempts.clamp(1, 9) as u32).min(600));
    if let Err(e) = state
        .store
        .finish_webhook(event.id, error, give_up, retry)
        .await
    {
        tracing::error!(error = %e, "cannot mark a webhook event");
    }
}

/// Why an event was not processed: retried later, unless it never can be.
enum Refused {
    Retry(String),
    Permanent(String),
}

impl From<String> for Refused {
    fn from(message: String) -> Self {
        Refused::Retry(message)
    }
}

impl From<&str> for Refused {
    fn from(message: &str) -> Self {
        Refused::Retry(message.to_string())
    }
}

async fn process(state: &Arc<AppState>, event: &PendingWebhook) -> Result<(), Refused> {
    let account = state
        .config
        .account(&event.account)
        .ok_or("the account is no longer configured")?;
    let dedup = Some((format!("webhook:{}", event.source), event.source_id.clone()));
    match event.source.as_str() {
        "whatsapp" | "instagram" | "leadgen" => {
            let inbound: InboundEvent =
                serde_json::from_value(event.payload.clone()).map_err(|e| e.to_string())?;
            match inbound {
                InboundEvent::WhatsappMessage(m) => {
                    if !account.whatsapp.is_empty()
                        && !account
                            .whatsapp
                            .iter()
                            .any(|w| w.phone_number_id == m.phone_number_id)
                    {
                        return Err(Refused::Permanent(format!(
                            "WhatsApp number ID {} is not one of this account's numbers",
                            m.phone_number_id
                        )));
                    }
                    let phone = intake::wa_id_to_e164(&m.wa_id);
                    let text = m.transcript_line();
                    // Someone at the business wrote from the app on their
                    // phone: a person is on the thread, automation pauses;
                    // it opens no window and is no opt-out.
                    let opt_out = !m.is_echo
                        && m.text.as_deref().is_some_and(|t| {
                            let t = t.trim().to_lowercase();
                            account.opt_out_words.iter().any(|w| w.to_lowercase() == t)
                        });
                    let lead_event = LeadEvent {
                        identities: [
                            Some(("whatsapp".to_string(), m.wa_id.clone())),
                            phone.clone().map(|p| ("phone".to_string(), p)),
                        ]
                        .into_iter()
                        .flatten()
                        .collect(),
                        phone,
                        channel: Some("whatsapp".into()),
                        messages: vec![TranscriptMessage {
                            channel: "whatsapp".into(),
                            from: if m.is_echo { "business" } else { "lead" }.into(),
                            text: text.clone(),
                            at: m.timestamp,
                        }],
                        consent: opt_out.then(|| ConsentRecord {
                            channel: "whatsapp".into(),
                            granted: false,
                            source: "whatsapp".into(),
                            at: m.timestamp,
                            evidence: m.text.clone(),
                        }),
                        profile_name: if m.is_echo {
                            None
                        } else {
                            m.profile_name.clone()
                        },
                        dedup,
                        inbound_at: (!m.is_echo).then_some(m.timestamp),
                        human_activity: m.is_echo,
                        inbound: (!m.is_echo).then(|| InboundMessage {
                            id: m.message_id.clone(),
                            channel: "whatsapp".into(),
                            kind: m.kind.clone(),
                            text: text.clone(),
                            at: m.timestamp,
                        }),
                        ..LeadEvent::default()
                    };
                    // What the buyer writes is decided as a message; the
                    // business's own echo is not the buyer speaking.
                    let decided = if m.is_echo {
                        Decided::default()
                    } else {
                        Decided {
                            event: Event::Message,
                            message: Some(text),
                        }
                    };
                    Ok(record(state, account, lead_event, "whatsapp", None, decided).await?)
                }
                InboundEvent::InstagramMessage(m) => {
                    // An echo is the business writing from its own app: the
                    // user is the recipient, and a person is on the thread.
                    let (user, from) = if m.is_echo {
                        (m.recipient_id.clone(), "business")
                    } else {
                        (m.sender_igsid.clone(), "lead")
                    };
                    let lead_event = LeadEvent {
                        identities: vec![("instagram".into(), user)],
                        channel: Some("instagram".into()),
                        messages: vec![TranscriptMessage {
                            channel: "instagram".into(),
                            from: from.into(),
                            text: m.transcript_line(),
                            at: m.timestamp,
                        }],
                        dedup,
                        human_activity: m.is_echo,
                        ..LeadEvent::default()
                    };
                    // An Instagram DM is an upstream lead event: the handoff
                    // to WhatsApp happens from it.
                    Ok(record(
                        state,
                        account,
                        lead_event,
                        "instagram",
                        None,
                        Decided::default(),
                    )
                    .await?)
                }
                InboundEvent::WhatsappStatus(s) => {
                    let record = StatusRecord {
                        message_id: s.message_id.clone(),
                        status: format!("{:?}", s.status).to_lowercase(),
                        at: s.timestamp,
                        recipient: s.recipient_id.clone(),
                        errors: serde_json::to_value(&s.errors).unwrap_or(Value::Null),
                        outbox_id: s.biz_opaque_callback_data.clone(),
                    };
                    let applied = state
                        .store
                        .apply_status(&account.id, &record, &account.fallback)
                        .await
                        .map_err(|e| Refused::Retry(e.to_string()))?;
                    if applied.new {
                        state.metrics.add(
                            "handoff_whatsapp_statuses_total",
                            &[("status", &record.status)],
                            1,
                        );
                    }
                    if applied.fell_back || (applied.new && record.status == "failed") {
                        state.outbox.notify_one();
                    }
                    if let Some(lead) = &applied.lead_id {
                        state.announce(&account.id, lead);
                    }
                    Ok(())
                }
                InboundEvent::WhatsappUserPreference(p) => state
                    .store
                    .record_marketing(
                        &account.id,
                        &p.wa_id,
                        p.marketing_opt_out,
                        p.timestamp,
                        "whatsapp user_preferences",
                        p.detail.as_deref(),
                    )
                    .await
                    .map_err(|e| Refused::Retry(e.to_string())),
                InboundEvent::LeadgenRef(r) => {
                    let graph = fetch_lead(account, &r.leadgen_id).await?;
                    let mapping = intake::FieldMapping::from_pairs(
                        account
                            .graph
                            .lead_fields
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str())),
                    )
                    .map_err(|e| format!("accounts.meta.lead_fields: {e}"))?;
                    let mapped =
                        intake::map_leadgen_lead(&graph, &mapping).map_err(|e| e.to_string())?;
                    let q = queued("lead_ad", Some(r.form_id.clone()), None, mapped, Vec::new());
                    Ok(record_queued(state, account, q, dedup).await?)
                }
            }
        }
        "form" | "voice" => {
            let q: QueuedLead =
                serde_json::from_value(event.payload.clone()).map_err(|e| e.to_string())?;
            Ok(record_queued(state, account, q, dedup).await?)
        }
        other => Err(Refused::Permanent(format!("unknown source `{other}`"))),
    }
}

/// Fetches a lead-ad lead from the Graph API (`GET {base}/{version}/{id}`).
async fn fetch_lead(account: &Account, leadgen_id: &str) -> Result<Value, String> {
    let token =
        account.graph.page_token.as_ref().ok_or(
            "lead ads need `accounts.meta.page_token` to fetch the lead from the Graph API",
        )?;
    if !leadgen_id.chars().all(|c| c.is_ascii_digit()) {
        return Err("a lead-ad ID must be digits".into());
    }
    let url = format!(
        "{}/{}/{leadgen_id}",
        account.graph.base, account.graph.version
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(&url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| format!("the Graph API did not answer: {}", e.without_url()))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| {
        format!(
            "the Graph API answered {status} with no JSON: {}",
            e.without_url()
        )
    })?;
    if !status.is_success() {
        let code = body["error"]["code"].as_i64().unwrap_or(0);
        return Err(format!(
            "the Graph API answered {status} (error code {code})"
        ));
    }
    Ok(body)
}

/// The lead event of a form's, a call's or a lead ad's lead.
fn lead_event(
    account: &Account,
    q: QueuedLead,
    dedup: Option<(String, String)>,
) -> Result<LeadEvent, String> {
    let phone = match &q.phone {
        Some(p) => {
            Some(intake::normalize_phone(p, &account.default_region).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let email = q.email.as_ref().map(|e| e.trim().to_lowercase());
    let identities = [
        phone.clone().map(|p| ("phone".to_string(), p)),
        email.clone().map(|e| ("email".to_string(), e)),
    ]
    .into_iter()
    .flatten()
    .collect();
    Ok(LeadEvent {
        identities,
        name: q.name,
        first_name: q.first_name,
        phone,
        email,
        language: q.language,
        channel: Some(q.channel),
        intent: q.intent,
        fields: q.fields,
        messages: q.transcript,
        answers: q.answers,
        consent: q.consent.map(|c| ConsentRecord {
            channel: "whatsapp".into(),
            granted: c.whatsapp,
            source: c.source,
            at: c.at.unwrap_or_else(Utc::now),
            evidence: Some(c.evidence),
        }),
        dedup,
        ..LeadEvent::default()
    })
}

/// Records a lead from a form, a call or a lead ad.
async fn record_queued(
    state: &Arc<AppState>,
    account: &Account,
    q: QueuedLead,
    dedup: Option<(String, String)>,
) -> Result<(), String> {
    let playbook = q.playbook.clone().or_else(|| {
        q.form
            .as_ref()
            .and_then(|f| account.routing.by_form.get(f).cloned())
    });
    let channel = q.channel.clone();
    let lead_event = lead_event(account, q, dedup)?;
    record(
        state,
        account,
        lead_event,
        &channel,
        playbook,
        Decided::default(),
    )
    .await
}

/// Records a webhook's lead event and decides it with the lead's playbook.
async fn record(
    state: &Arc<AppState>,
    account: &Account,
    mut event: LeadEvent,
    channel: &str,
    playbook: Option<String>,
    decided: Decided,
) -> Result<(), String> {
    let ruleset = state.ruleset().ok_or("no ruleset loaded")?;
    // Meta's events cannot be refused (Meta would redeliver them for days):
    // they are brought within the input policy so that they always store.
    intake::policy::scrub_event(&mut event);
    // A lead the account routes to no playbook is still kept, with what it
    // said: a known lead keeps its own playbook, and a new one is there for
    // an operator to see, its decision saying why nothing happened.
    let playbook = pick_playbook_named(account, &ruleset, playbook.as_deref(), channel);
    let updates = account.lead_updates.clone();
    let managed: Vec<String> = account.queues.keys().cloned().collect();
    let recorded = state
        .store
        .record(&account.id, event, move |lead| {
            decide_for(
                &ruleset,
                playbook.as_deref().map_err(String::as_str),
                lead,
                &updates,
                &managed,
                &decided,
            )
        })
        .await;
    state.outbox.notify_one();
    if !account.queues.is_empty() {
        state.queues.notify_one();
    }
    recorded
        .map(|recorded| {
            if let crate::store::Recorded::New {
                response, lead_id, ..
            } = recorded
            {
                super::leads::count_decision(state, &account.id, channel, &response);
                state.announce(&account.id, &lead_id);
            }
        })
        .map_err(|e| e.to_string())
}
