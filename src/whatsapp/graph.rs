//! The Graph API, for what Meta's webhooks only point to: a lead-ad lead,
//! fetched by its ID with the page's token.

use crate::config::Account;
use serde_json::Value;
use std::time::Duration;

/// Fetches a lead-ad lead from the Graph API (`GET {base}/{version}/{id}`).
pub async fn fetch_lead(account: &Account, leadgen_id: &str) -> Result<Value, String> {
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
