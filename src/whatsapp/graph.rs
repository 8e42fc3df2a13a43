//! The Graph API, for what Meta's webhooks only point to: a lead-ad lead,
//! fetched by its ID with the page's token.

use crate::config::Account;
use serde_json::Value;
use std::time::Duration;

/// Why a lead-ad lead could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The account has no page token to ask with.
    #[error("lead ads need `accounts.meta.page_token` to fetch the lead from the Graph API")]
    NoToken,
    /// Meta's webhook named a lead that cannot exist.
    #[error("a lead-ad ID must be digits")]
    BadId,
    /// No answer (network, timeout).
    #[error("the Graph API did not answer: {0}")]
    Unreachable(String),
    /// An answer that is not JSON.
    #[error("the Graph API answered {status} with no JSON: {reason}")]
    NotJson { status: u16, reason: String },
    /// An error answer, with Meta's error code.
    #[error("the Graph API answered {status} (error code {code})")]
    Refused { status: u16, code: i64 },
}

impl GraphError {
    /// Whether asking again later can succeed: not for an ID that cannot
    /// exist, nor for a lead Meta says is not there (HTTP 400 or 404 with
    /// error code 100); yes for the rest, which a fixed token, Meta coming
    /// back or a lifted rate limit cures.
    pub fn retryable(&self) -> bool {
        match self {
            GraphError::BadId => false,
            GraphError::Refused { status, code } => !(matches!(status, 400 | 404) && *code == 100),
            _ => true,
        }
    }
}

/// Fetches a lead-ad lead from the Graph API (`GET {base}/{version}/{id}`).
pub async fn fetch_lead(account: &Account, leadgen_id: &str) -> Result<Value, GraphError> {
    let token = account
        .graph
        .page_token
        .as_ref()
        .ok_or(GraphError::NoToken)?;
    if leadgen_id.is_empty() || !leadgen_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(GraphError::BadId);
    }
    let url = format!(
        "{}/{}/{leadgen_id}",
        account.graph.base, account.graph.version
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| GraphError::Unreachable(e.to_string()))?;
    let response = client
        .get(&url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| GraphError::Unreachable(e.without_url().to_string()))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| GraphError::NotJson {
        status: status.as_u16(),
        reason: e.without_url().to_string(),
    })?;
    if !status.is_success() {
        return Err(GraphError::Refused {
            status: status.as_u16(),
            code: body["error"]["code"].as_i64().unwrap_or(0),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::GraphError;

    #[test]
    fn a_lead_that_cannot_be_there_is_not_asked_for_again() {
        assert!(!GraphError::BadId.retryable());
        assert!(!GraphError::Refused {
            status: 400,
            code: 100
        }
        .retryable());
        assert!(GraphError::Refused {
            status: 400,
            code: 4
        }
        .retryable());
        assert!(GraphError::Refused {
            status: 401,
            code: 190
        }
        .retryable());
        assert!(GraphError::Unreachable("timeout".into()).retryable());
        assert!(GraphError::NoToken.retryable());
    }
}
