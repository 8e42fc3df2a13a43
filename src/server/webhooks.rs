//! Webhook intake: Meta (WhatsApp, Instagram, lead ads), web forms and voice
//! call reports. Each request is verified, its events stored, and only then
//! acknowledged; a worker processes stored events into leads and decisions.
//! A redelivered event (same source ID) is stored once and processed once.

use super::error::ApiError;
use super::extract::{read_body, ApiAccount, JsonBytes};
use super::extract::{Path, Query};
use super::AppState;
use crate::config::Account;
use crate::intake::signature::constant_time_eq;
use crate::intake::{self, MetaObject};
use crate::pipeline::event::{self, queued, QueuedLead};
use crate::store::{Enqueued, WebhookSource};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

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
    source: WebhookSource,
    events: &[(String, Value)],
) -> Result<usize, ApiError> {
    let new = state
        .store
        .enqueue_webhooks(account, source, events)
        .await?;
    state.metrics.add(
        "handoff_webhook_events_total",
        &[("source", source.as_str())],
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
        (Some("subscribe"), Some(given), Some(challenge), Some(expected)) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
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
        MetaObject::WhatsappBusinessAccount => WebhookSource::Whatsapp,
        MetaObject::Instagram => WebhookSource::Instagram,
        MetaObject::Page => WebhookSource::Leadgen,
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
        WebhookSource::Form,
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
    source: WebhookSource,
    source_id: &str,
    lead: &QueuedLead,
    reused: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let event = event::from_queued(account, lead.clone(), None)
        .map_err(|e| ApiError::invalid(e, "phone"))?;
    crate::pipeline::policy::check_event(&event)?;
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
            at: if source == WebhookSource::Voice {
                "call_id"
            } else {
                "Idempotency-Key"
            }
            .into(),
        }),
        Enqueued::New | Enqueued::Duplicate => {
            if enqueued == Enqueued::New {
                state.metrics.add(
                    "handoff_webhook_events_total",
                    &[("source", source.as_str())],
                    1,
                );
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
    account: ApiAccount,
    Path(id): Path<String>,
    JsonBytes(body): JsonBytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if account.id != id {
        return Err(ApiError::NotFound(format!("no account `{id}`")));
    }
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
        &account,
        WebhookSource::Voice,
        &call_id,
        &lead,
        &format!("`call_id` `{call_id}`"),
    )
    .await
}
