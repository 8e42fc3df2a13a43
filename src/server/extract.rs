//! What handlers read a request with: the account a request's API key
//! belongs to, path and query extractors that refuse with the API's error
//! shape, JSON bodies read and parsed naming the field at fault, and the
//! checks of what people write (notes, names, queue names) against the
//! input policy.
//!
//! Extractors run in the order a handler names them; the API's handlers name
//! [`ApiAccount`] first, so a request without a valid key is refused (401)
//! before anything about its path or body is looked at.

use super::error::{require_json, ApiError};
use super::AppState;
use crate::config::Account;
use crate::pipeline::policy;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The account whose API key (`Authorization: Bearer <key>`) the request
/// carries; 401 without one. Borrows the account from the service's
/// configuration rather than copying it for every request.
pub struct ApiAccount {
    state: Arc<AppState>,
    index: usize,
}

impl ApiAccount {
    /// The account.
    pub fn get(&self) -> &Account {
        // `index` came from a search of this same, immutable configuration.
        &self.state.config.accounts[self.index]
    }
}

impl std::ops::Deref for ApiAccount {
    type Target = Account;

    fn deref(&self) -> &Account {
        self.get()
    }
}

impl FromRequestParts<Arc<AppState>> for ApiAccount {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let account = state.authenticate(&parts.headers)?;
        let index = state
            .config
            .accounts
            .iter()
            .position(|a| std::ptr::eq(a, account))
            .ok_or(ApiError::Unauthorized)?;
        Ok(ApiAccount {
            state: Arc::clone(state),
            index,
        })
    }
}

/// A JSON body: a JSON `Content-Type` (415 otherwise), within the body
/// limit (413), parsed into `T` naming the field at fault (400).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(request, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// An optional JSON body: an empty body, with or without a `Content-Type`,
/// is `T::default()`; anything else is read as [`ApiJson`] reads it.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let headers = request.headers().clone();
        let bytes = read_body(Bytes::from_request(request, state).await)?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        require_json(&headers)?;
        parse_json(&bytes).map(OptionalJson)
    }
}

/// A JSON body's bytes, for a handler that also keeps them (the lead intake
/// fingerprints the body of an idempotent request): the `Content-Type` and
/// size checked as [`ApiJson`] checks them, nothing parsed.
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        require_json(request.headers())?;
        read_body(Bytes::from_request(request, state).await).map(JsonBytes)
    }
}

/// A path's parameters, refused with the API's error shape (a path segment
/// that is not UTF-8 once percent-decoded is a 400, not a text answer).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| ApiError::bad(e.body_text(), Some("path".into())))
    }
}

/// A query string, refused with the API's error shape.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::bad(e.body_text(), Some("query".into())))
    }
}

/// The body, or the error for one that could not be read (413 when too large).
pub fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::bad(e.body_text(), None)
        }
    })
}

/// Reads JSON into `T`, naming the field that is wrong. A body that reads
/// costs one pass; only a refused one is read again to find the field's
/// path (tracking the path on every read costs a tenth of a dry run).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = match serde_json::from_slice(bytes) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let at = (path != ".").then_some(path);
            Err(ApiError::bad(format!("the body is not valid: {inner}"), at))
        }
        // Read up to where the value ends: what follows it is the fault.
        Ok(_) => Err(ApiError::bad(
            format!("the body is not valid: {first}"),
            None,
        )),
    }
}

/// Checks a person's note or message: trimmed, not empty, and within the
/// input policy for text of several lines.
pub fn clean_text(value: Option<&str>, field: &str, max: usize) -> Result<String, ApiError> {
    clean(value, field, max, policy::Shape::Text)
}

pub fn clean(
    value: Option<&str>,
    field: &str,
    max: usize,
    shape: policy::Shape,
) -> Result<String, ApiError> {
    let text = value.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err(ApiError::invalid(format!("`{field}` is empty"), field));
    }
    policy::text(text, field, max, shape)?;
    Ok(text.to_string())
}

/// The name a queue may have: what rules write in `assign` and `takeover`.
pub fn clean_queue(value: Option<&str>) -> Result<String, ApiError> {
    let queue = clean(value, "queue", 64, policy::Shape::Line)?;
    if !queue
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(ApiError::invalid(
            "`queue` is letters, digits, `-`, `_` or `.`",
            "queue",
        ));
    }
    Ok(queue)
}
