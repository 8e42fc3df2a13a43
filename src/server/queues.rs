//! The queues' API and what the queue worker (`workers::queues`) plans
//! with: each queue's members, strategy and business hours, and the
//! playbooks' queues no member is given.

use super::error::ApiError;
use super::extract::{ApiAccount, Path};
use super::leads::LeadId;
use super::AppState;
use crate::config::{Account, QueueConfig};
use crate::dsl::ast::ActionKind;
use crate::queues::{show_duration, QueueHours, QueuePlan, Strategy};
use crate::ruleset::Ruleset;
use crate::store::queues::{MemberView, Waiting};
use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use std::sync::Arc;

/// What an assignment pass needs to know about a queue.
pub fn plan(account: &Account, name: &str, queue: &QueueConfig) -> QueuePlan {
    QueuePlan {
        name: name.to_string(),
        strategy: queue.strategy,
        capacity: queue.capacity,
        members: queue.members.clone(),
        idle: account.idle,
    }
}

/// Whether a rule of the playbook routes to `queue`.
fn routes_to(actions: &[ActionKind], queue: &str) -> bool {
    actions.iter().any(|a| match a {
        ActionKind::Assign(q) | ActionKind::Takeover(q) => q.node == queue,
        _ => false,
    })
}

/// The playbooks `account` may use, by name.
fn usable<'r>(
    account: &'r Account,
    ruleset: &'r Ruleset,
) -> impl Iterator<Item = (&'r String, &'r crate::ruleset::LoadedPlaybook)> {
    ruleset
        .playbooks
        .iter()
        .filter(|(name, _)| account.playbooks.is_empty() || account.playbooks.contains(name))
}

/// A queue's business hours: its own, else those of the first playbook
/// (by name) whose rules route to it; `None` when it is always open.
pub fn hours(
    account: &Account,
    ruleset: Option<&Ruleset>,
    name: &str,
    queue: &QueueConfig,
) -> Option<QueueHours> {
    if let Some(h) = &queue.hours {
        return Some(h.clone());
    }
    let ruleset = ruleset?;
    usable(account, ruleset)
        .find(|(_, p)| {
            p.compiled.rules.iter().any(|r| routes_to(&r.actions, name))
                || p.compiled
                    .otherwise
                    .as_ref()
                    .is_some_and(|o| routes_to(o, name))
        })
        .and_then(|(_, p)| {
            p.compiled.schema.hours.clone().map(|hours| QueueHours {
                hours,
                timezone: p.compiled.schema.timezone,
            })
        })
}

/// For each playbook, the queues its rules route to that the account gives
/// no members: their threads are labelled but never assigned. Only said for
/// accounts that configure queues at all.
pub fn unmanaged(account: &Account, ruleset: &Ruleset) -> Vec<String> {
    if account.queues.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (name, p) in usable(account, ruleset) {
        let queues: std::collections::BTreeSet<&str> = p
            .compiled
            .rules
            .iter()
            .flat_map(|r| r.actions.iter())
            .chain(p.compiled.otherwise.iter().flatten())
            .filter_map(|a| match a {
                ActionKind::Assign(q) | ActionKind::Takeover(q) => Some(q.node.as_str()),
                _ => None,
            })
            .filter(|q| !account.queues.contains_key(*q))
            .collect();
        if !queues.is_empty() {
            let list: Vec<String> = queues.iter().map(|q| format!("`{q}`")).collect();
            found.push(format!(
                "playbook `{name}` routes to queues account `{}` gives no members in `accounts.queues`, so their threads are not assigned: {}",
                account.id,
                list.join(", ")
            ));
        }
    }
    found
}

/// A queue as the inbox and the API show it: its settings, whether it is
/// open now, its members' availability and load, and who waits.
pub async fn overview(
    state: &AppState,
    account: &Account,
    name: &str,
    queue: &QueueConfig,
) -> Result<QueueOverview, ApiError> {
    let ruleset = state.ruleset();
    let hours = hours(account, ruleset.as_deref(), name, queue);
    let members = state
        .store
        .queue_members(&account.id, &plan(account, name, queue))
        .await?;
    let waiting = state.store.waiting(&account.id, name, 100).await?;
    Ok(QueueOverview {
        name: name.to_string(),
        strategy: queue.strategy,
        capacity: queue.capacity,
        open: hours.as_ref().is_none_or(|h| h.contains(Utc::now())),
        has_hours: hours.is_some(),
        escalate_after: queue
            .escalate
            .as_ref()
            .map(|(after, _)| show_duration(*after)),
        escalate_to: queue.escalate.as_ref().map(|(_, to)| to.clone()),
        available: members.iter().filter(|m| m.candidate.available).count(),
        members,
        waiting,
    })
}

/// A queue with members: who is available, each member's load, and the
/// threads waiting.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueOverview {
    pub name: String,
    pub strategy: Strategy,
    /// Open threads a member may hold before the queue passes them over.
    #[schema(minimum = 1)]
    pub capacity: u32,
    /// Within the queue's business hours now (its own, else its
    /// playbook's). Outside them nothing is assigned and the escalation
    /// clock stands still.
    pub open: bool,
    pub has_hours: bool,
    /// Business time a thread may wait without a human reply or takeover,
    /// as `15m`.
    pub escalate_after: Option<String>,
    /// The queue it then moves to.
    pub escalate_to: Option<String>,
    pub members: Vec<MemberView>,
    /// Members who can be given a thread now.
    pub available: usize,
    /// The threads waiting, oldest first (at most 100;
    /// `handoff_threads_waiting` counts them all).
    pub waiting: Vec<Waiting>,
}

/// The account's queues.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueList {
    queues: Vec<QueueOverview>,
}

/// The account's queues with members: who is available, each member's load, and the threads waiting.
///
/// A member is available when signed in to the inbox, marked available
/// there and active within the account's `idle_minutes`; an agent always
/// is. A load counts the member's open threads in every queue.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "threads",
    operation_id = "listQueues",
    responses(
        (status = 200, description = "Each queue, by name.", body = QueueList),
        super::openapi::KeyErrors,
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
) -> Result<Json<QueueList>, ApiError> {
    let mut queues = Vec::new();
    for (name, queue) in &account.queues {
        queues.push(overview(&state, &account, name, queue).await?);
    }
    Ok(Json(QueueList { queues }))
}

/// A thread closed.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CloseResult {
    lead_id: String,
    /// Always `false`.
    open: bool,
    /// When the conversation closed; null when none was open (only the
    /// queue entry ended).
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    closed_at: Option<String>,
    /// `done` in a queue with members; null in a queue without.
    queue_state: Option<String>,
}

/// The thread is done: its conversation ends, it leaves its member's load, and waiting threads may go to them.
///
/// Works on any thread with a conversation open (whatever its queue, one
/// without members too) or waiting or assigned in a queue; else 409. The
/// next handoff message opens a new conversation, and a new message from
/// the lead puts the thread back in its queue.
#[utoipa::path(
    post,
    path = "/v1/leads/{id}/close",
    tag = "threads",
    operation_id = "closeThread",
    params(LeadId),
    responses(
        (status = 200, description = "Closed.", body = CloseResult, example = json!({"lead_id": "0194c0de-7f3a-7000-8000-000000000001", "open": false, "closed_at": "2027-01-10T10:05:00.000000Z", "queue_state": "done"})),
        (status = 409, response = super::openapi::Conflict),
        super::openapi::LeadErrors,
    )
)]
pub async fn api_close(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
) -> Result<Json<CloseResult>, ApiError> {
    if state.store.lead(&account.id, &id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no lead `{id}`")));
    }
    let closed = state.store.close_thread(&account.id, &id, "api").await?;
    if !closed {
        return Err(ApiError::Conflict(format!(
            "the thread of `{id}` is not open (it was closed already, or no handoff message has opened it) and is not waiting or assigned in a queue"
        )));
    }
    state.announce(&account.id, &id);
    state.queues.notify_one();
    let thread = state
        .store
        .lead(&account.id, &id)
        .await?
        .and_then(|lead| lead.thread);
    Ok(Json(CloseResult {
        lead_id: id,
        open: false,
        closed_at: thread
            .as_ref()
            .and_then(|t| t.closed_at)
            .map(crate::store::view::time_text),
        queue_state: thread.and_then(|t| t.queue_state),
    }))
}
