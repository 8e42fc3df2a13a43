//! The API's one error type: every failure answers with a status and a JSON
//! body that says what went wrong and where, decided in one place. The
//! codes are one enum, [`ErrorCode`], which the OpenAPI document lists from
//! the same table. Extractor rejections (path, query, body) and the answers
//! layers make without a body (405, 408, 413) take the same shape (the
//! extractors that make them are in [`super::extract`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What kind of failure an error body reports: `error.code`. Each code is
/// sent with one status: `bad_request` 400, `invalid` and
/// `idempotency_key_reused` 422, `unauthorized` and `bad_signature` 401,
/// `forbidden` 403, `not_found` 404, `method_not_allowed` 405, `timeout`
/// 408, `conflict` 409, `too_large` 413, `unsupported_media_type` 415,
/// `internal` 500.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request cannot be read (not JSON, a wrong type, a malformed
    /// path or query, text that is not UTF-8).
    BadRequest,
    /// 422: well formed, but a value is not acceptable.
    Invalid,
    /// 422: an `Idempotency-Key`, form submission ID or `call_id` already
    /// used for a different request.
    IdempotencyKeyReused,
    /// 401: no valid API key.
    Unauthorized,
    /// 401: a webhook whose signature does not verify.
    BadSignature,
    /// 403: a webhook subscription check with the wrong token.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 408: the request took longer than the server waits.
    Timeout,
    /// 409: valid, but the thing is not in a state to do it.
    Conflict,
    /// 413.
    TooLarge,
    /// 415: a body sent as something other than JSON.
    UnsupportedMediaType,
    /// 500.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order the OpenAPI document lists them.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::BadRequest,
        ErrorCode::Invalid,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::Unauthorized,
        ErrorCode::BadSignature,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Timeout,
        ErrorCode::Conflict,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Internal,
    ];

    /// The code as it appears in a body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Invalid => "invalid",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Internal => "internal",
        }
    }

    /// The status each code is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Invalid | ErrorCode::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::Unauthorized | ErrorCode::BadSignature => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code for an answer made without one (by axum or a layer).
    fn for_status(status: StatusCode) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.status() == status && *c != ErrorCode::BadSignature)
            .unwrap_or(if status.is_server_error() {
                ErrorCode::Internal
            } else {
                ErrorCode::BadRequest
            })
    }
}

/// An API error.
#[derive(Debug)]
pub enum ApiError {
    /// The body is not JSON of the right shape; `at` is the field path.
    BadRequest {
        message: String,
        at: Option<String>,
    },
    /// The JSON is well formed but a value is not acceptable.
    Unprocessable {
        message: String,
        at: Option<String>,
    },
    /// The idempotency key (named by `at`) was used before for a different request.
    KeyReused {
        message: String,
        at: String,
    },
    Unauthorized,
    /// A webhook whose signature does not verify.
    BadSignature(String),
    /// A verification token that does not match.
    Forbidden(String),
    NotFound(String),
    /// The request is valid but the thing is not in a state to do it.
    Conflict(String),
    PayloadTooLarge,
    /// The body is sent as something other than JSON.
    UnsupportedMediaType(String),
    Internal(String),
}

impl ApiError {
    /// A 400 for `message` at field path `at`.
    pub fn bad(message: impl Into<String>, at: Option<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            at,
        }
    }

    /// A 422 for `message` at field path `at`.
    pub fn invalid(message: impl Into<String>, at: &str) -> ApiError {
        ApiError::Unprocessable {
            message: message.into(),
            at: Some(at.to_string()),
        }
    }

    /// The code this error is sent with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest { .. } => ErrorCode::BadRequest,
            ApiError::Unprocessable { .. } => ErrorCode::Invalid,
            ApiError::KeyReused { .. } => ErrorCode::IdempotencyKeyReused,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::BadSignature(_) => ErrorCode::BadSignature,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::PayloadTooLarge => ErrorCode::TooLarge,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The one error body: `{"error": {"code", "message", "at"?}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// What went wrong, and where.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail<'a> {
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: &'a str,
    /// The field (a path such as `transcript[0].at`) or header at fault,
    /// when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<&'a str>,
}

fn error_body(code: ErrorCode, message: &str, at: Option<&str>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail { code, message, at },
    };
    (code.status(), axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let (message, at) = match self {
            ApiError::BadRequest { message, at } | ApiError::Unprocessable { message, at } => {
                (message, at)
            }
            ApiError::KeyReused { message, at } => (message, Some(at)),
            ApiError::Unauthorized => (
                "send a valid API key as `Authorization: Bearer <key>`".to_string(),
                None,
            ),
            ApiError::BadSignature(why) => (why, None),
            ApiError::Forbidden(why) => (why, None),
            ApiError::NotFound(what) => (what, None),
            ApiError::Conflict(why) => (why, None),
            ApiError::PayloadTooLarge => {
                ("the request body is larger than 1 MiB".to_string(), None)
            }
            ApiError::UnsupportedMediaType(got) => (
                format!(
                    "the body is sent as `{got}`; send JSON with `Content-Type: application/json`"
                ),
                Some("Content-Type".to_string()),
            ),
            ApiError::Internal(detail) => {
                // Logged here, once; the client gets no internals.
                tracing::error!(error = %detail, "internal error");
                (
                    "something went wrong on our side; the request was not applied".to_string(),
                    None,
                )
            }
        };
        let mut response = error_body(code, &message, at.as_deref());
        if code == ErrorCode::Unauthorized {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Refuses a body declared as anything but JSON, or not declared at all:
/// the JSON routes read nothing else.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("nothing".into()));
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    if is_json(&text) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            text.chars().take(100).collect(),
        ))
    }
}

/// Whether a `Content-Type` value declares JSON (`application/json`, or a
/// `+json` type such as `application/merge-patch+json`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Gives the answers that extractors, layers and the router make on their
/// own (405 for a wrong method, 408 for a request that took too long, 413,
/// a malformed form body) the same JSON error shape as every other refusal.
/// Pages (HTML) and bodies already JSON pass untouched.
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let plain = match response.headers().get(axum::http::header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.as_bytes().starts_with(b"text/plain"),
    };
    if !plain {
        return response;
    }
    let code = ErrorCode::for_status(status);
    let (mut parts, body) = response.into_parts();
    let said = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let said = String::from_utf8_lossy(&said).trim().to_string();
    let message = match code {
        ErrorCode::MethodNotAllowed => {
            "this route does not take that method; see /openapi.json".to_string()
        }
        ErrorCode::Timeout => {
            "the request took longer than 10 seconds and was not applied".to_string()
        }
        ErrorCode::TooLarge => "the request body is larger than 1 MiB".to_string(),
        _ if !said.is_empty() => said,
        _ => status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase(),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    let mut answer = error_body(code, &message, None);
    *answer.status_mut() = status;
    // Headers such as `Allow` on a 405 stay.
    for (name, value) in parts.headers.iter() {
        answer.headers_mut().entry(name).or_insert(value.clone());
    }
    answer
}

/// A lead or text outside the input policy: 422 at the field.
impl From<crate::pipeline::policy::Refusal> for ApiError {
    fn from(r: crate::pipeline::policy::Refusal) -> Self {
        ApiError::Unprocessable {
            message: r.message,
            at: Some(r.at),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(message) => ApiError::Conflict(message),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
