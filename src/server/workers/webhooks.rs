//! The webhook worker: processes stored webhook events (Meta's messages,
//! statuses and preferences, forms, calls, lead ads) into leads and
//! decisions, in the order received, retrying what failed for a reason that
//! can pass.

use crate::backoff::{Backoff, Jitter};
use crate::config::Account;
use crate::intake::{self, DeliveryStatus, InboundEvent};
use crate::pipeline::event::{self, queued, QueuedLead};
use crate::pipeline::{decide_for, pick_playbook, Decided, Route};
use crate::server::AppState;
use crate::store::{LeadEvent, PendingWebhook, StatusRecord, WebhookSource};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Processes stored webhook events until the server stops.
pub fn spawn_worker(state: Arc<AppState>) {
    tokio::spawn(async move {
        loop {
            // Held for as long as an outbox claim: another instance's worker
            // takes them over only once this one has stopped for that long.
            let lease = state.config.delivery.lease;
            let due = match state.store.due_webhooks(64, lease).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read webhook events");
                    Vec::new()
                }
            };
            let idle = due.is_empty();
            // Delivery statuses each touch one message and only move it
            // forward, so they are applied together rather than in turn: a
            // burst of sends brings two statuses each, and a status applied
            // after the grace period would let an uncertain send go again.
            // Everything else stays in order (a user's messages decide in turn).
            let (statuses, others): (Vec<_>, Vec<_>) = due.into_iter().partition(|e| {
                e.source == WebhookSource::Whatsapp && e.source_id.starts_with("status:")
            });
            let mut applying = tokio::task::JoinSet::new();
            for event in statuses {
                let state = state.clone();
                applying.spawn(async move { handle(&state, &event).await });
            }
            for event in others {
                handle(&state, &event).await;
            }
            while applying.join_next().await.is_some() {}
            if idle {
                tokio::select! {
                    _ = state.work.notified() => {},
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                }
            }
        }
    });
}

/// The wait before an event is tried again: about 2, 4, 8 ... seconds, at
/// most ten minutes, with equal jitter so that events that failed together
/// (a Graph API outage) do not all come back in the same second.
const RETRY: Backoff = Backoff {
    first: Duration::from_secs(2),
    max: Duration::from_secs(600),
    floor: Duration::from_secs(1),
    jitter: Jitter::Equal,
};

/// Processes one stored event and records how it went.
async fn handle(state: &Arc<AppState>, event: &PendingWebhook) {
    let outcome = process(state, event).await;
    let attempts = event.attempts + 1;
    let (error, give_up) = match &outcome {
        Ok(()) => (None, false),
        Err(Refused::Retry(e)) => (Some(e.as_str()), attempts >= 8),
        Err(Refused::Permanent(e)) => (Some(e.as_str()), true),
    };
    if let Some(e) = error {
        tracing::warn!(source = %event.source, attempts, "webhook event not processed: {e}");
    }
    let retry = RETRY.wait(u32::try_from(attempts).unwrap_or(u32::MAX));
    if let Err(e) = state
        .store
        .finish_webhook(event.id, error, give_up, retry)
        .await
    {
        tracing::error!(error = %e, "cannot mark a webhook event");
    }
}

/// Why an event was not processed: retried later, unless it never can be.
enum Refused {
    Retry(String),
    Permanent(String),
}

impl From<String> for Refused {
    fn from(message: String) -> Self {
        Refused::Retry(message)
    }
}

impl From<&str> for Refused {
    fn from(message: &str) -> Self {
        Refused::Retry(message.to_string())
    }
}

async fn process(state: &Arc<AppState>, event: &PendingWebhook) -> Result<(), Refused> {
    let account = state
        .config
        .account(&event.account)
        .ok_or("the account is no longer configured")?;
    let dedup = Some((format!("webhook:{}", event.source), event.source_id.clone()));
    match event.source {
        WebhookSource::Whatsapp | WebhookSource::Instagram | WebhookSource::Leadgen => {
            let inbound: InboundEvent =
                serde_json::from_value(event.payload.clone()).map_err(|e| e.to_string())?;
            match inbound {
                InboundEvent::WhatsappMessage(m) => {
                    if !account.whatsapp.is_empty()
                        && !account
                            .whatsapp
                            .iter()
                            .any(|w| w.phone_number_id == m.phone_number_id)
                    {
                        return Err(Refused::Permanent(format!(
                            "WhatsApp number ID {} is not one of this account's numbers",
                            m.phone_number_id
                        )));
                    }
                    let (lead_event, decided) = event::whatsapp(&m, account, dedup);
                    let route = Route {
                        channel: "whatsapp",
                        ..Route::default()
                    };
                    Ok(record(state, account, lead_event, route, decided).await?)
                }
                InboundEvent::InstagramMessage(m) => {
                    let lead_event = event::instagram(&m, dedup);
                    // An Instagram DM is an upstream lead event: the handoff
                    // to WhatsApp happens from it.
                    let route = Route {
                        channel: "instagram",
                        ..Route::default()
                    };
                    Ok(record(state, account, lead_event, route, Decided::default()).await?)
                }
                InboundEvent::WhatsappStatus(s) => {
                    let record = StatusRecord {
                        message_id: s.message_id.clone(),
                        status: s.status,
                        at: s.timestamp,
                        recipient: s.recipient_id.clone(),
                        errors: serde_json::to_value(&s.errors).unwrap_or(Value::Null),
                        outbox_id: s.biz_opaque_callback_data.clone(),
                    };
                    let applied = state
                        .store
                        .apply_status(&account.id, &record, &account.fallback)
                        .await
                        .map_err(|e| Refused::Retry(e.to_string()))?;
                    if applied.new {
                        state.metrics.add(
                            "handoff_whatsapp_statuses_total",
                            &[("status", record.status.as_str())],
                            1,
                        );
                    }
                    if applied.fell_back || (applied.new && record.status == DeliveryStatus::Failed)
                    {
                        state.outbox.notify_one();
                    }
                    if let Some(lead) = &applied.lead_id {
                        state.announce(&account.id, lead);
                    }
                    Ok(())
                }
                InboundEvent::WhatsappUserPreference(p) => state
                    .store
                    .record_marketing(
                        &account.id,
                        &p.wa_id,
                        p.marketing_opt_out,
                        p.timestamp,
                        "whatsapp user_preferences",
                        p.detail.as_deref(),
                    )
                    .await
                    .map_err(|e| Refused::Retry(e.to_string())),
                InboundEvent::LeadgenRef(r) => {
                    let graph = crate::whatsapp::graph::fetch_lead(account, &r.leadgen_id)
                        .await
                        .map_err(|e| {
                            if e.retryable() {
                                Refused::Retry(e.to_string())
                            } else {
                                Refused::Permanent(e.to_string())
                            }
                        })?;
                    let mapping = intake::FieldMapping::from_pairs(
                        account
                            .graph
                            .lead_fields
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str())),
                    )
                    .map_err(|e| format!("accounts.meta.lead_fields: {e}"))?;
                    let mapped =
                        intake::map_leadgen_lead(&graph, &mapping).map_err(|e| e.to_string())?;
                    let q = queued("lead_ad", Some(r.form_id.clone()), None, mapped, Vec::new());
                    Ok(record_queued(state, account, q, dedup).await?)
                }
            }
        }
        WebhookSource::Form | WebhookSource::Voice => {
            let q: QueuedLead =
                serde_json::from_value(event.payload.clone()).map_err(|e| e.to_string())?;
            Ok(record_queued(state, account, q, dedup).await?)
        }
    }
}

/// Records a lead from a form, a call or a lead ad.
async fn record_queued(
    state: &Arc<AppState>,
    account: &Account,
    q: QueuedLead,
    dedup: Option<(String, String)>,
) -> Result<(), String> {
    let (channel, playbook, form) = (q.channel.clone(), q.playbook.clone(), q.form.clone());
    let lead_event = event::from_queued(account, q, dedup)?;
    let route = Route {
        playbook: playbook.as_deref(),
        form: form.as_deref(),
        channel: &channel,
        source: None,
    };
    record(state, account, lead_event, route, Decided::default()).await
}

/// Records a webhook's lead event and decides it with the lead's playbook.
async fn record(
    state: &Arc<AppState>,
    account: &Account,
    mut event: LeadEvent,
    route: Route<'_>,
    decided: Decided,
) -> Result<(), String> {
    let ruleset = state.ruleset().ok_or("no ruleset loaded")?;
    // Meta's events cannot be refused (Meta would redeliver them for days):
    // they are brought within the input policy so that they always store.
    crate::pipeline::policy::scrub_event(&mut event);
    // A lead the account routes to no playbook is still kept, with what it
    // said: a known lead keeps its own playbook, and a new one is there for
    // an operator to see, its decision saying why nothing happened.
    let playbook = pick_playbook(account, &ruleset, route).map_err(|e| e.to_string());
    let channel = route.channel;
    let updates = account.lead_updates.clone();
    let managed: Vec<String> = account.queues.keys().cloned().collect();
    let recorded = state
        .store
        .record(&account.id, event, move |lead| {
            decide_for(
                &ruleset,
                playbook.as_deref().map_err(String::as_str),
                lead,
                &updates,
                &managed,
                &decided,
            )
        })
        .await;
    state.outbox.notify_one();
    if !account.queues.is_empty() {
        state.queues.notify_one();
    }
    recorded
        .map(|recorded| {
            if let crate::store::Recorded::New {
                response, lead_id, ..
            } = recorded
            {
                state.count_decision(&account.id, channel, &response);
                state.announce(&account.id, &lead_id);
            }
        })
        .map_err(|e| e.to_string())
}
