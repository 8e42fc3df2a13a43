//! The API's one error type: every failure answers with a status and a JSON
//! body that says what went wrong and where, decided in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
    Unauthorized,
    /// A webhook whose signature does not verify.
    BadSignature(String),
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let bearer = matches!(self, ApiError::Unauthorized);
        let (status, code, message, at) = match self {
            ApiError::BadRequest { message, at } => {
                (StatusCode::BAD_REQUEST, "bad_request", message, at)
            }
            ApiError::Unprocessable { message, at } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid", message, at)
            }
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a valid API key as `Authorization: Bearer <key>`".to_string(),
                None,
            ),
            ApiError::BadSignature(why) => (StatusCode::UNAUTHORIZED, "bad_signature", why, None),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", what, None),
            ApiError::Conflict(why) => (StatusCode::CONFLICT, "conflict", why, None),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is larger than 1 MiB".to_string(),
                None,
            ),
            ApiError::UnsupportedMediaType(got) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "the body is sent as `{got}`; send JSON with `Content-Type: application/json`"
                ),
                Some("Content-Type".to_string()),
            ),
            ApiError::Internal(detail) => {
                // Logged here, once; the client gets no internals.
                tracing::error!(error = %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "something went wrong on our side; the request was not applied".to_string(),
                    None,
                )
            }
        };
        let mut body = json!({"error": {"code": code, "message": message}});
        if let Some(at) = at {
            body["error"]["at"] = json!(at);
        }
        let mut response = (status, axum::Json(body)).into_response();
        if bearer {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Refuses a body declared as anything but JSON. A body without a
/// `Content-Type` is read as JSON, for the simplest clients.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            text.chars().take(100).collect(),
        ))
    }
}

/// Gives the answers that layers and the router make without a body (405
/// for a wrong method, 408 for a request that took too long) the same JSON
/// error shape as every other refusal.
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        return response;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        _ if status.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "this route does not take that method; see /openapi.json".to_string()
        }
        StatusCode::REQUEST_TIMEOUT => {
            "the request took longer than 10 seconds and was not applied".to_string()
        }
        _ => status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut answer = (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    // Headers such as `Allow` on a 405 stay.
    for (name, value) in parts.headers.iter() {
        answer.headers_mut().entry(name).or_insert(value.clone());
    }
    answer
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.0)
    }
}
