//! The queue worker: gives waiting threads to available members and
//! escalates threads nobody picked up. It runs every second, and at once
//! when a thread starts waiting or someone becomes available. Each pass is
//! one store transaction per queue, safe with several instances on one
//! database. Timers are times stored on the thread (when it entered its
//! queue), so they survive restarts.

use crate::queues::{business_cutoff, show_duration};
use crate::server::queues::{hours, plan};
use crate::server::AppState;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

/// How often the worker looks at every queue when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

/// Starts the worker.
pub fn spawn_worker(state: Arc<AppState>) {
    if state.config.accounts.iter().all(|a| a.queues.is_empty()) {
        return;
    }
    tokio::spawn(async move {
        loop {
            let again = pass(&state).await;
            if !again {
                tokio::select! {
                    _ = state.queues.notified() => {}
                    _ = tokio::time::sleep(TICK) => {}
                }
            }
        }
    });
}

/// One look at every queue: escalations first (their threads then wait in
/// the next queue), then assignments. True when escalations moved threads
/// and another pass should follow at once.
async fn pass(state: &Arc<AppState>) -> bool {
    let ruleset = state.ruleset();
    let now = Utc::now();
    let mut again = false;
    for account in &state.config.accounts {
        for (name, queue) in &account.queues {
            let hours = hours(account, ruleset.as_deref(), name, queue);
            if let Some((after, to)) = &queue.escalate {
                if let Some(cutoff) = business_cutoff(now, *after, hours.as_ref()) {
                    match state
                        .store
                        .escalate(&account.id, name, to, cutoff, &show_duration(*after))
                        .await
                    {
                        Ok(moved) => {
                            for lead in &moved {
                                tracing::info!(account = %account.id, lead = %lead, from = %name, to = %to, "thread escalated");
                                state.announce(&account.id, lead);
                            }
                            if !moved.is_empty() {
                                state.metrics.add(
                                    "handoff_escalations_total",
                                    &[("account", &account.id), ("queue", name), ("to", to)],
                                    moved.len() as u64,
                                );
                                again = true;
                            }
                        }
                        Err(e) => {
                            tracing::error!(account = %account.id, queue = %name, error = %e, "escalation pass failed")
                        }
                    }
                }
            }
            if !hours.as_ref().is_none_or(|h| h.contains(now)) {
                continue;
            }
            match state
                .store
                .assign_waiting(&account.id, &plan(account, name, queue))
                .await
            {
                Ok(assigned) => {
                    if assigned.is_empty() {
                        continue;
                    }
                    state.metrics.add(
                        "handoff_assignments_total",
                        &[("account", &account.id), ("queue", name)],
                        assigned.len() as u64,
                    );
                    for a in &assigned {
                        tracing::info!(account = %account.id, lead = %a.lead_id, queue = %name, member = %a.member, "thread assigned");
                        state.announce(&account.id, &a.lead_id);
                    }
                    if assigned.iter().any(|a| a.member.starts_with("agent:")) {
                        state.outbox.notify_one();
                    }
                }
                Err(e) => {
                    tracing::error!(account = %account.id, queue = %name, error = %e, "assignment pass failed")
                }
            }
        }
    }
    again
}
