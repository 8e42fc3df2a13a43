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
use serde_json::Value;
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

/// The account a webhook is for, in the path.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountId {
    /// The account's ID in the configuration.
    #[allow(dead_code)]
    account: String,
}

/// Meta's subscription check, as Meta sends it.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by name from the query map: Meta's names have dots.
pub struct MetaVerifyQuery {
    /// Must be `subscribe`.
    #[param(rename = "hub.mode")]
    mode: String,
    /// Must equal the account's configured Meta verify token.
    #[param(rename = "hub.verify_token")]
    verify_token: String,
    /// Echoed back on success.
    #[param(rename = "hub.challenge")]
    challenge: String,
}

/// Meta's subscription check.
#[utoipa::path(
    get,
    path = "/webhooks/meta/{account}",
    tag = "webhooks",
    operation_id = "verifyMetaWebhook",
    security(()),
    params(AccountId, MetaVerifyQuery),
    responses(
        (status = 200, description = "Verified: the body is `hub.challenge`, as given.", body = String, content_type = "text/plain"),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
    )
)]
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

/// A Meta webhook notification, as the lenient reader
/// ([`intake::parse_meta_webhook_lenient`]) takes it: only the envelope is
/// required to be readable; entries and items that cannot be read are
/// skipped and counted in `rejected`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // The document's description of what the reader reads.
pub struct MetaWebhook {
    object: MetaObjectName,
    #[schema(value_type = Vec<Object>)]
    entry: Vec<Value>,
}

/// The Meta products whose webhooks are read.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum MetaObjectName {
    WhatsappBusinessAccount,
    Instagram,
    Page,
}

/// The signature Meta sends with every event.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read from the headers: it is checked over the raw body.
pub struct MetaSignature {
    /// `sha256=<hex>`: the HMAC-SHA256 of the raw body with the Meta app
    /// secret. Missing or wrong: 401 `bad_signature`.
    #[param(rename = "X-Hub-Signature-256", pattern = "^sha256=[0-9a-fA-F]{64}$")]
    signature: String,
}

/// What a Meta notification brought.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MetaReceipt {
    /// Events read from the body.
    received: usize,
    /// Of those, events not seen before (stored now).
    new: usize,
    /// Items that could not be read and were skipped.
    rejected: usize,
}

/// Signed WhatsApp, Instagram and lead-ad (`page`) webhook events.
///
/// The signature is checked over the raw body against each of the
/// account's Meta app secrets. Readable events are stored (a redelivered
/// event, by its source ID, is stored once) and then acknowledged; items
/// that cannot be read are counted in `rejected` and skipped. Text beyond
/// the input policy (control characters, over-long values) is cleaned
/// rather than refused, since Meta would redeliver a refused event. The
/// body must be sent as JSON, as Meta does.
#[utoipa::path(
    post,
    path = "/webhooks/meta/{account}",
    tag = "webhooks",
    operation_id = "receiveMetaWebhook",
    security(()),
    params(AccountId, MetaSignature),
    request_body(content = MetaWebhook, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored.", body = MetaReceipt, example = json!({"received": 1, "new": 1, "rejected": 0})),
        super::openapi::WebhookErrors,
    )
)]
pub async fn meta_events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MetaReceipt>, ApiError> {
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
    Ok(Json(MetaReceipt {
        received: events.len(),
        new,
        rejected: parsed.rejected.len(),
    }))
}

/// The account and form a submission is for, in the path.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read as a pair by the handler.
pub struct FormPath {
    /// The account's ID in the configuration.
    account: String,
    /// The form's name in the account's configuration.
    form: String,
}

/// The headers a form tool may send.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read from the headers by name (the signature's name is configurable).
pub struct FormHeaders {
    /// Required when the form has a secret: the HMAC-SHA256 of the raw body
    /// with the secret, as `sha256=<hex>` or bare hex. The header's name is
    /// the form's `signature_header` (default `x-signature-256`).
    #[param(rename = "x-signature-256", value_type = String, required = false)]
    signature: Option<String>,
    /// The form tool's ID for the submission; a second submission with the
    /// same key for the same form is stored once, and the same key with a
    /// different submission is refused (422). No `idempotent-replayed`
    /// header is sent back: see `duplicate`.
    #[param(rename = "Idempotency-Key", value_type = String, required = false)]
    key: Option<String>,
}

/// Form field -> answer: text, a number, a boolean, a list of those
/// (checkboxes) or null (left blank). The form's configured mapping turns
/// answers into the lead's name, phone, email, intent, WhatsApp consent and
/// fields. The mapped lead needs a phone or an email (else 422 at `phone`).
#[derive(utoipa::ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)] // The document's description of what the form reader takes.
pub struct FormSubmission(Value);

/// Form pairs, as a browser posts them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct FormPairs(std::collections::HashMap<String, String>);

/// A submission or call report stored for processing.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WebhookAccepted {
    /// Always `true`.
    accepted: bool,
    /// The same submission (or call) was stored before; nothing new was
    /// stored.
    duplicate: bool,
}

/// A web form submission, mapped onto a lead by the form's configuration.
///
/// A body sent as `application/json` is read as a JSON object of field ->
/// answer; one sent as `application/x-www-form-urlencoded` as form pairs (a
/// repeated name gives a list of answers; text that is not UTF-8 once
/// percent-decoded is refused with 400); any other content type is refused
/// with 415. The mapped lead is checked against the input policy before it
/// is stored (422 at the field). The submission is stored and
/// acknowledged; a background worker makes it a lead. A retry is
/// recognised by its `Idempotency-Key` when sent, else by the exact body;
/// it is answered 202 with `duplicate: true`. The same `Idempotency-Key`
/// with a different submission is refused with 422
/// (`idempotency_key_reused`) and nothing is stored.
#[utoipa::path(
    post,
    path = "/webhooks/forms/{account}/{form}",
    tag = "webhooks",
    operation_id = "receiveForm",
    security(()),
    params(FormPath, FormHeaders),
    request_body(content(
        (FormPairs = "application/x-www-form-urlencoded", example = json!({"your_name": "Meera Iyer", "mobile": "098200 55555", "city": "Goa", "whatsapp_me": "yes"})),
        (FormSubmission = "application/json", example = json!({"your_name": "Meera Iyer", "mobile": "098200 55555", "city": "Goa", "whatsapp_me": true})),
    )),
    responses(
        (status = 202, description = "Stored for processing.", body = WebhookAccepted),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::WebhookErrors,
    )
)]
pub async fn form(
    State(state): State<Arc<AppState>>,
    Path((id, form_name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<WebhookAccepted>), ApiError> {
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
) -> Result<(StatusCode, Json<WebhookAccepted>), ApiError> {
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
                Json(WebhookAccepted {
                    accepted: true,
                    duplicate: enqueued == Enqueued::Duplicate,
                }),
            ))
        }
    }
}

/// A voice agent's call report.
///
/// Authenticated with the account's API key; `{account}` must be that
/// key's account (another account answers 404). The report is read
/// strictly, stored (a report with the same `call_id` is stored once) and
/// acknowledged; a background worker makes it a lead. Errors in the body
/// are answered 400 with the place (a line and column, or a field path
/// such as `opt_in.evidence`) at the start of `message`, not in `at`; an
/// unreadable caller number is 422 at `from`, text beyond the input policy
/// 422 at its field, and a `call_id` stored before with a different report
/// 422 (`idempotency_key_reused`, at `call_id`). The body must be sent as
/// JSON.
#[utoipa::path(
    post,
    path = "/webhooks/voice/{account}",
    tag = "webhooks",
    operation_id = "receiveCallReport",
    params(AccountId),
    request_body(content = intake::CallReport, content_type = "application/json", example = json!({
        "call_id": "call-7f3a",
        "from": "+91 98145 67890",
        "started_at": "2027-01-10T04:10:00Z",
        "ended_at": "2027-01-10T04:14:30Z",
        "language": "en",
        "transcript": [
            {"speaker": "agent", "text": "May we send the options on WhatsApp?", "at": "2027-01-10T04:13:50Z"},
            {"speaker": "caller", "text": "Yes, WhatsApp is best.", "at": "2027-01-10T04:13:55Z"}
        ],
        "extracted": {"name": "Gurpreet Kaur", "intent": "event_enquiry", "city": "Amritsar", "guests": 800},
        "opt_in": {"whatsapp": true, "spoken_at": "2027-01-10T04:13:55Z", "evidence": "Yes, WhatsApp is best."}
    })),
    responses(
        (status = 202, description = "Stored for processing.", body = WebhookAccepted),
        super::openapi::LeadJsonErrors,
    )
)]
pub async fn voice(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
    JsonBytes(body): JsonBytes,
) -> Result<(StatusCode, Json<WebhookAccepted>), ApiError> {
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
