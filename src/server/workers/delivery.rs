//! The delivery worker: claims due outbox messages with a lease, sends
//! WhatsApp messages through the Cloud API (or the sandbox) and lead records
//! to CRM and agent endpoints, and records how each attempt ended.
//!
//! At most one send per outbox message, even across a crash: the Cloud API
//! has no idempotency key, so each message is sent with its outbox ID as
//! `biz_opaque_callback_data`, and a message whose send may have reached Meta
//! (the process died mid-send, or the request timed out) is not sent again
//! until the grace period has passed without a status webhook carrying that
//! ID. Meta sends a `sent` status for every message it accepts, so a message
//! is sent twice only when Meta accepted it and no status reached us within
//! the grace period (ten minutes by default).

use crate::backoff::{Backoff, Jitter};
use crate::config::{Account, WhatsappNumber};
use crate::engine::Outcome;
use crate::pipeline::WhatsappSend;
use crate::server::AppState;
use crate::store::{OutboxItem, OutboxKind, SendOutcome};
use crate::whatsapp::{CloudClient, Content, ErrorClass, Limiter, OutboundMessage, SendError};
use chrono::Utc;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Messages in flight at once, across numbers.
const IN_FLIGHT: usize = 128;
/// How often the outbox is looked at when nothing wakes the worker.
const POLL: Duration = Duration::from_millis(200);

/// Where an account's WhatsApp messages go: Meta, or its sandbox.
#[derive(Clone, Debug)]
pub struct Route {
    pub client: CloudClient,
    /// Senders the account does not list get a sandbox number.
    pub sandbox: bool,
}

/// What the worker needs besides the state.
pub struct Delivery {
    /// This worker's name on the leases it takes.
    pub owner: String,
    /// By account ID.
    pub routes: BTreeMap<String, Route>,
    pub limiter: Limiter,
    pub notifier: crate::notify::Notifier,
}

/// The phone number ID the sandbox gives a sender key no account lists:
/// stable, fifteen digits.
pub fn sandbox_number_id(key: &str) -> String {
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}", 100_000_000_000_000 + hash % 900_000_000_000_000)
}

/// Starts the worker.
pub fn spawn_worker(state: Arc<AppState>, delivery: Delivery) {
    tokio::spawn(run(state, Arc::new(delivery)));
}

async fn run(state: Arc<AppState>, delivery: Arc<Delivery>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let d = &state.config.delivery;
    let fallbacks: std::collections::BTreeMap<String, Vec<String>> = state
        .config
        .accounts
        .iter()
        .map(|a| (a.id.clone(), a.fallback.clone()))
        .collect();
    loop {
        let free = slots.available_permits();
        if free == 0 {
            // Wait until a message in flight finishes.
            if let Ok(permit) = slots.clone().acquire_owned().await {
                drop(permit);
            }
            continue;
        }
        let items = match state
            .store
            .claim_outbox(
                &delivery.owner,
                free as i64,
                d.lease,
                d.grace,
                d.max_age,
                &fallbacks,
            )
            .await
        {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "claiming outbox messages failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // The lease runs from here; a send that could not finish within it
        // is not started (see `in_lease`).
        let claimed = std::time::Instant::now();
        if items.is_empty() {
            tokio::select! {
                _ = state.outbox.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        for item in items {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (state, delivery) = (state.clone(), delivery.clone());
            tokio::spawn(async move {
                let outcome = attempt(&state, &delivery, &item, claimed).await;
                count(&state, &item, &outcome);
                let deferred = matches!(outcome, SendOutcome::Deferred { .. });
                // Fallback endpoints are sent the lead when WhatsApp fails for good.
                let ends = matches!(
                    outcome,
                    SendOutcome::Failed { .. } | SendOutcome::Fallback { .. }
                );
                let fallback: &[String] = state
                    .config
                    .account(&item.account)
                    .map_or(&[], |a| &a.fallback);
                match state
                    .store
                    .finish_outbox(&delivery.owner, &item, outcome, fallback)
                    .await
                {
                    Ok(true) if !deferred => {
                        if ends && !fallback.is_empty() {
                            state.outbox.notify_one();
                        }
                        state.announce(&item.account, &item.lead_id)
                    }
                    Ok(_) => {}
                    // The lease runs out and the message is claimed again.
                    Err(e) => {
                        tracing::error!(outbox = %item.id, error = %e, "recording a delivery failed")
                    }
                }
                drop(permit);
            });
        }
    }
}

fn count(state: &AppState, item: &OutboxItem, outcome: &SendOutcome) {
    let result = match outcome {
        SendOutcome::Sent { .. } => "sent",
        SendOutcome::Retry { .. } => "retry",
        SendOutcome::Uncertain { .. } => "uncertain",
        SendOutcome::Failed { .. } => "failed",
        SendOutcome::Fallback { .. } => "fallback",
        SendOutcome::Cancelled { .. } => "cancelled",
        SendOutcome::Deferred { .. } => return,
    };
    state.metrics.add(
        "handoff_outbox_attempts_total",
        &[("kind", item.kind.as_str()), ("result", result)],
        1,
    );
}

/// The backoff before attempt `attempts + 1`: doubling from the configured
/// start, capped, with equal jitter (a send is never retried much sooner
/// than the doubling says, and retries of many messages spread out).
fn backoff(state: &AppState, attempts: i64) -> Duration {
    let d = &state.config.delivery;
    Backoff {
        first: d.backoff,
        max: d.max_backoff,
        floor: Duration::ZERO,
        jitter: Jitter::Equal,
    }
    .wait(u32::try_from(attempts).unwrap_or(u32::MAX))
}

fn later(wait: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()
}

/// Whether a send started now would end (answer or timeout) before the
/// lease runs out. A send that might outlive its lease is not started: once
/// the lease and the grace period are over, another worker may claim the
/// message, and two sends could both reach Meta.
fn in_lease(state: &AppState, claimed: std::time::Instant) -> bool {
    let d = &state.config.delivery;
    claimed.elapsed() + d.timeout < d.lease
}

async fn attempt(
    state: &AppState,
    delivery: &Delivery,
    item: &OutboxItem,
    claimed: std::time::Instant,
) -> SendOutcome {
    let Some(account) = state.config.accounts.iter().find(|a| a.id == item.account) else {
        return SendOutcome::Failed {
            code: None,
            error: format!("account `{}` is no longer configured", item.account),
            marketing_opt_out: false,
        };
    };
    match item.kind {
        OutboxKind::Whatsapp => send_whatsapp(state, delivery, account, item, claimed).await,
        OutboxKind::Notify => send_notify(state, delivery, account, item, claimed).await,
    }
}

fn failed(error: impl Into<String>) -> SendOutcome {
    SendOutcome::Failed {
        code: None,
        error: error.into(),
        marketing_opt_out: false,
    }
}

/// The number a message goes out from: the sender its playbook names, or the
/// account's only number; in the sandbox, any sender.
fn number_for(
    account: &Account,
    sender: Option<&str>,
    sandbox: bool,
) -> Result<WhatsappNumber, String> {
    let listed = match sender {
        Some(key) => account.whatsapp.iter().find(|n| n.key == key),
        None if account.whatsapp.len() == 1 => account.whatsapp.first(),
        None => None,
    };
    match (listed, sandbox) {
        (Some(n), _) => Ok(n.clone()),
        (None, true) => {
            let key = sender.unwrap_or("default");
            Ok(WhatsappNumber {
                key: key.to_string(),
                phone_number_id: sandbox_number_id(key),
                token: None,
                rate: 80,
            })
        }
        (None, false) => Err(match sender {
            Some(key) => format!(
                "the playbook sends from `{key}`, which account `{}` does not list in `accounts.whatsapp`",
                account.id
            ),
            None => format!(
                "the playbook names no `sender` and account `{}` has {} WhatsApp numbers: name one in the playbook",
                account.id,
                account.whatsapp.len()
            ),
        }),
    }
}

fn content(send: &WhatsappSend) -> Result<Content, String> {
    match (send.outcome, &send.text, &send.template) {
        (Outcome::Session, Some(text), _) => Ok(Content::Text { body: text.clone() }),
        (Outcome::Session, None, _) => Err("a session message without text".into()),
        (Outcome::Template, _, Some(template)) => Ok(Content::from(template)),
        (Outcome::Template, _, None) => Err("a template message without its template".into()),
        (other, _, _) => Err(format!("a message with outcome `{}`", other.as_str())),
    }
}

async fn send_whatsapp(
    state: &AppState,
    delivery: &Delivery,
    account: &Account,
    item: &OutboxItem,
    claimed: std::time::Instant,
) -> SendOutcome {
    let Some(route) = delivery.routes.get(&account.id) else {
        return failed(format!("no WhatsApp route for account `{}`", account.id));
    };
    let payload = &item.payload;
    let send: WhatsappSend = match serde_json::from_value(payload.clone()) {
        Ok(send) => send,
        Err(e) => return failed(format!("the outbox message cannot be read: {e}")),
    };
    let number = match number_for(account, send.sender.as_deref(), route.sandbox) {
        Ok(n) => n,
        Err(e) => return failed(e),
    };
    let token = match (&number.token, route.sandbox) {
        (Some(t), _) => t.expose().to_string(),
        (None, true) => "sandbox".to_string(),
        (None, false) => {
            return failed(format!(
                "WhatsApp number `{}` of account `{}` has no `token`",
                number.key, account.id
            ))
        }
    };
    let Some(to) = send.to.as_deref() else {
        return failed("the lead has no phone number to send to");
    };
    let to = to.trim_start_matches('+').to_string();
    let content = match content(&send) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    if let Err(wait) = delivery.limiter.pair(&number.phone_number_id, &to) {
        return SendOutcome::Deferred { at: later(wait) };
    }
    delivery
        .limiter
        .acquire(&number.phone_number_id, number.rate)
        .await;
    if !in_lease(state, claimed) {
        return SendOutcome::Deferred { at: Utc::now() };
    }
    let message = OutboundMessage {
        to: to.clone(),
        content,
        callback: Some(item.id.clone()),
    };
    let sent = route
        .client
        .send(&number.phone_number_id, &token, &message)
        .await;
    match sent {
        Ok(sent) => {
            tracing::debug!(outbox = %item.id, message = %sent.message_id, "sent");
            SendOutcome::Sent {
                message_id: Some(sent.message_id),
                wa_id: sent.wa_id,
            }
        }
        Err(SendError::Meta { error, retry_after }) => {
            let class = error.class();
            let code = Some(error.code);
            let text = format!("{}: {}", error.code, error.message);
            tracing::info!(outbox = %item.id, code = error.code, class = class.as_str(), "Meta refused a send");
            state.metrics.add(
                "handoff_whatsapp_errors_total",
                &[("class", class.as_str())],
                1,
            );
            match class {
                ErrorClass::Unavailable => SendOutcome::Retry {
                    at: later(retry_after.unwrap_or_else(|| backoff(state, item.attempts))),
                    code,
                    error: text,
                },
                ErrorClass::RateLimited => {
                    let wait = retry_after.unwrap_or_else(|| backoff(state, item.attempts));
                    delivery.limiter.pause(&number.phone_number_id, wait);
                    SendOutcome::Retry {
                        at: later(wait),
                        code,
                        error: text,
                    }
                }
                ErrorClass::PairRateLimited => {
                    let wait = retry_after
                        .unwrap_or(state.config.delivery.pair_interval)
                        .max(state.config.delivery.pair_interval);
                    delivery
                        .limiter
                        .pause_pair(&number.phone_number_id, &to, wait);
                    SendOutcome::Retry {
                        at: later(wait),
                        code,
                        error: text,
                    }
                }
                ErrorClass::WindowClosed if send.outcome == Outcome::Session => {
                    SendOutcome::Fallback {
                        code: error.code,
                        error: text,
                        payload: payload.clone(),
                    }
                }
                ErrorClass::TokenInvalid => {
                    // Nothing from this number can go until the token is
                    // fixed; its messages wait rather than fail.
                    tracing::error!(number = %number.key, account = %account.id, "Meta refused the number's token: fix `accounts.whatsapp.token`");
                    let wait = state.config.delivery.max_backoff;
                    delivery.limiter.pause(&number.phone_number_id, wait);
                    SendOutcome::Retry {
                        at: later(wait),
                        code,
                        error: text,
                    }
                }
                ErrorClass::MarketingOptedOut => SendOutcome::Failed {
                    code,
                    error: text,
                    marketing_opt_out: true,
                },
                _ => SendOutcome::Failed {
                    code,
                    error: text,
                    marketing_opt_out: false,
                },
            }
        }
        Err(SendError::Transport(e)) => SendOutcome::Uncertain {
            error: format!("no answer from the Cloud API: {e}"),
        },
        Err(SendError::Invalid(e)) => failed(format!("not sendable: {e}")),
        Err(e @ SendError::Unexpected { .. }) if e.retryable() => SendOutcome::Retry {
            at: later(backoff(state, item.attempts)),
            code: None,
            error: e.to_string(),
        },
        Err(e) => failed(e.to_string()),
    }
}

async fn send_notify(
    state: &AppState,
    delivery: &Delivery,
    account: &Account,
    item: &OutboxItem,
    claimed: std::time::Instant,
) -> SendOutcome {
    let Some(name) = item.payload.get("endpoint").and_then(Value::as_str) else {
        return failed("a notification without an endpoint");
    };
    let Some(config) = account.endpoints.get(name) else {
        return failed(format!(
            "account `{}` has no endpoint `{name}` in `accounts.endpoints`",
            account.id
        ));
    };
    match state.store.disabled_endpoints(&account.id).await {
        Ok(disabled) => {
            if let Some((_, why)) = disabled.iter().find(|(e, _)| e == name) {
                return failed(format!("endpoint `{name}` is disabled: {why}"));
            }
        }
        Err(e) => {
            return SendOutcome::Retry {
                at: later(backoff(state, item.attempts)),
                code: None,
                error: e.to_string(),
            }
        }
    }
    let mut lead = match state.store.lead(&account.id, &item.lead_id).await {
        Ok(Some(lead)) => lead.to_value(),
        Ok(None) => return failed("the lead no longer exists"),
        Err(e) => {
            return SendOutcome::Retry {
                at: later(backoff(state, item.attempts)),
                code: None,
                error: e.to_string(),
            }
        }
    };
    // What the event is about besides the lead (an assignment, a failed
    // message) travels beside the lead record's own keys; a message the
    // lead wrote travels as `data.message`, the record as `data.lead`.
    let wrap = item.payload.get("wrap").and_then(Value::as_bool) == Some(true);
    if wrap {
        let mut data = item
            .payload
            .get("context")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        data.insert("lead".into(), lead);
        lead = Value::Object(data);
    } else if let (Some(context), Some(data)) = (
        item.payload.get("context").and_then(Value::as_object),
        lead.as_object_mut(),
    ) {
        for (key, value) in context {
            data.insert(key.clone(), value.clone());
        }
    }
    let endpoint = crate::notify::Endpoint {
        name: name.to_string(),
        url: config.url.clone(),
        secret: config.secret.clone(),
        allow_private: config.allow_private,
        timeout: state.config.delivery.timeout,
    };
    if !in_lease(state, claimed) {
        return SendOutcome::Deferred { at: Utc::now() };
    }
    let event = item
        .payload
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or("lead.notify");
    match delivery
        .notifier
        .deliver(&endpoint, &item.id, event, &lead)
        .await
    {
        Ok(_) => SendOutcome::Sent {
            message_id: None,
            wa_id: None,
        },
        Err(e) if e.kind() == crate::notify::ErrorKind::Disabled => {
            let why = format!("answered 410 Gone at {}", Utc::now().to_rfc3339());
            if let Err(err) = state.store.disable_endpoint(&account.id, name, &why).await {
                tracing::error!(error = %err, "recording a disabled endpoint failed");
            }
            tracing::warn!(account = %account.id, endpoint = %name, "endpoint answered 410 Gone; it is disabled");
            failed(format!(
                "endpoint `{name}` answered 410 Gone and is now disabled"
            ))
        }
        Err(e) if e.retryable() && item.attempts < crate::notify::MAX_ATTEMPTS as i64 => {
            SendOutcome::Retry {
                at: later(
                    e.retry_after()
                        .unwrap_or_else(|| crate::notify::backoff(item.attempts as u32)),
                ),
                code: None,
                error: e.to_string(),
            }
        }
        Err(e) => failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_numbers_are_stable_fifteen_digit_ids() {
        let id = sandbox_number_id("events-main");
        assert_eq!(id.len(), 15);
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(id, sandbox_number_id("events-main"));
        assert_ne!(id, sandbox_number_id("clinics-main"));
    }

    #[test]
    fn a_payload_becomes_the_text_or_the_template_it_names() {
        let content = |payload: serde_json::Value| {
            content(&serde_json::from_value::<WhatsappSend>(payload).unwrap())
        };
        let text = content(serde_json::json!({"outcome": "session", "text": "Hi"}));
        assert_eq!(text, Ok(Content::Text { body: "Hi".into() }));
        let template = content(serde_json::json!({
            "outcome": "template",
            "template": {"name": "event_options", "language": "en", "params": ["Aisha", "March 14", "Goa"], "preview": "..."}
        }));
        assert_eq!(
            template,
            Ok(Content::Template {
                name: "event_options".into(),
                language: "en".into(),
                params: vec!["Aisha".into(), "March 14".into(), "Goa".into()],
            })
        );
        assert!(content(serde_json::json!({"outcome": "template"})).is_err());
        assert!(content(serde_json::json!({"outcome": "blocked_no_opt_in"})).is_err());
    }
}
