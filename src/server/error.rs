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
    PayloadTooLarge,
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
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is larger than 1 MiB".to_string(),
                None,
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

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.0)
    }
}
