//! What handlers read a request with: path and query extractors that refuse
//! with the API's error shape, the JSON body read and parsed naming the
//! field at fault, and the checks of what people write (notes, names,
//! queue names) against the input policy.

use super::error::ApiError;
use crate::pipeline::policy;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

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

/// Parses a JSON body, naming the field that is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    parse_json(&read_body(body)?)
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

/// Reads JSON into `T`, naming the field that is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = (path != ".").then_some(path);
        ApiError::bad(format!("the body is not valid: {inner}"), at)
    })
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
