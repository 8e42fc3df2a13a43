//! What queues keep: which threads wait in a queue and since when, who each
//! is given to, whether a person picked it up, and which operators are
//! available. An assignment pass and an escalation pass each run in one
//! transaction; with several instances on PostgreSQL they take the
//! account's queue lock, so no member is given more than their capacity and
//! no thread goes to two people.
//!
//! A thread's `queue_state`: `waiting` (in a queue with members, nobody has
//! it yet), `assigned` (a member has it), `done` (a person closed it; a new
//! message from the lead puts it back in its queue), or none (its queue is a
//! label the account gives no members).

use super::{Store, StoreError};
use crate::queues::{Candidate, Member, QueuePlan};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

/// Who does system actions on a thread's trail (rules, assignment, escalation).
pub const SYSTEM_ACTOR: &str = "handoff";

/// A thread given to a member by an assignment pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assigned {
    pub lead_id: String,
    pub queue: String,
    /// The operator's ID, or `agent:<endpoint>`.
    pub member: String,
    pub name: String,
}

/// A member of a queue as the inbox and the API show them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    #[serde(flatten)]
    pub candidate: Candidate,
    /// The email for an operator; the endpoint for an agent.
    pub member: String,
    /// `available`, `idle` (marked available, no recent activity), `away`,
    /// `signed_out`, `unknown` (no operator has this email) or `agent`.
    #[schema(value_type = MemberStatus)]
    pub status: String,
}

/// How available a queue member is.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Named for the API's schema; the store writes the words.
pub enum MemberStatus {
    Available,
    Idle,
    Away,
    SignedOut,
    Unknown,
    Agent,
}

/// A thread waiting in a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Waiting {
    pub lead_id: String,
    pub name: Option<String>,
    #[schema(format = DateTime)]
    pub queued_at: String,
}

/// The first human reply on a thread since it entered its queue.
#[derive(Clone, Debug, PartialEq)]
pub struct FirstReply {
    pub queue: Option<String>,
    pub after: Duration,
}

/// An operator's availability.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Presence {
    pub available: bool,
    pub seen_at: Option<String>,
}

/// What a SQL dialect gives the queues: the same answers to the same calls.
pub trait QueueBackend {
    /// Gives the queue's waiting threads, oldest first, to available members
    /// under capacity, by the queue's strategy; each on the thread's trail.
    /// An agent member's threads are sent to its endpoint (`thread.assigned`).
    fn assign_waiting(
        &self,
        account: &str,
        plan: &QueuePlan,
    ) -> impl Future<Output = Result<Vec<Assigned>, StoreError>> + Send;

    /// Moves threads of `queue` that no person picked up and that entered it
    /// at or before `cutoff` to the queue `to` (waiting there), each on its
    /// trail. `after` is the configured time, for the trail. Returns the leads moved.
    fn escalate(
        &self,
        account: &str,
        queue: &str,
        to: &str,
        cutoff: DateTime<Utc>,
        after: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Marks an operator available or away; true when it changed.
    fn set_available(
        &self,
        operator_id: &str,
        available: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Notes an operator's activity in the inbox. True when they are marked
    /// available and were idle until now (longer than `idle` without
    /// activity): waiting threads may go to them.
    fn touch_presence(
        &self,
        operator_id: &str,
        idle: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// An operator's availability.
    fn presence(
        &self,
        operator_id: &str,
    ) -> impl Future<Output = Result<Presence, StoreError>> + Send;

    /// The queue's members as they are now: availability and load.
    fn queue_members(
        &self,
        account: &str,
        plan: &QueuePlan,
    ) -> impl Future<Output = Result<Vec<MemberView>, StoreError>> + Send;

    /// The threads waiting in a queue, oldest first.
    fn waiting(
        &self,
        account: &str,
        queue: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Waiting>, StoreError>> + Send;

    /// A person closes the thread: its conversation ends (the next handoff
    /// message opens a new one) and it leaves its member's load (a new
    /// message from the lead puts it back in its queue). False when it was
    /// neither open nor waiting or assigned in a queue, or the account has
    /// no such lead.
    fn close_thread(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Threads by account, queue and queue state, for metrics.
    fn queue_counts(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String, String, i64)>, StoreError>> + Send;
}

impl Store {
    /// See [`QueueBackend::assign_waiting`].
    pub async fn assign_waiting(
        &self,
        account: &str,
        plan: &QueuePlan,
    ) -> Result<Vec<Assigned>, StoreError> {
        on_backend!(self, db => db.assign_waiting(account, plan).await)
    }

    /// See [`QueueBackend::escalate`].
    pub async fn escalate(
        &self,
        account: &str,
        queue: &str,
        to: &str,
        cutoff: DateTime<Utc>,
        after: &str,
    ) -> Result<Vec<String>, StoreError> {
        on_backend!(self, db => db.escalate(account, queue, to, cutoff, after).await)
    }

    /// See [`QueueBackend::set_available`].
    pub async fn set_available(
        &self,
        operator_id: &str,
        available: bool,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.set_available(operator_id, available).await)
    }

    /// See [`QueueBackend::touch_presence`].
    pub async fn touch_presence(
        &self,
        operator_id: &str,
        idle: Duration,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.touch_presence(operator_id, idle).await)
    }

    /// See [`QueueBackend::presence`].
    pub async fn presence(&self, operator_id: &str) -> Result<Presence, StoreError> {
        on_backend!(self, db => db.presence(operator_id).await)
    }

    /// See [`QueueBackend::queue_members`].
    pub async fn queue_members(
        &self,
        account: &str,
        plan: &QueuePlan,
    ) -> Result<Vec<MemberView>, StoreError> {
        on_backend!(self, db => db.queue_members(account, plan).await)
    }

    /// See [`QueueBackend::waiting`].
    pub async fn waiting(
        &self,
        account: &str,
        queue: &str,
        limit: i64,
    ) -> Result<Vec<Waiting>, StoreError> {
        on_backend!(self, db => db.waiting(account, queue, limit).await)
    }

    /// See [`QueueBackend::close_thread`].
    pub async fn close_thread(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.close_thread(account, lead_id, actor).await)
    }

    /// See [`QueueBackend::queue_counts`].
    pub async fn queue_counts(&self) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        on_backend!(self, db => db.queue_counts().await)
    }
}

/// An operator of the account as the queues' queries read them.
pub(super) struct OperatorRow {
    pub id: String,
    pub name: String,
    /// Marked available in the inbox.
    pub available: bool,
    pub seen_at: Option<DateTime<Utc>>,
    /// Has a live session.
    pub signed_in: bool,
}

/// The plan's members in configured order, with their status and load:
/// `operators` by email, `loads` by member key; active means seen at or
/// after `idle_since`. One reading for both backends.
pub(super) fn member_views(
    plan: &QueuePlan,
    operators: &HashMap<String, OperatorRow>,
    loads: &HashMap<String, u32>,
    idle_since: DateTime<Utc>,
) -> Vec<MemberView> {
    let view = |key: String, name: String, member: &str, status: &str| MemberView {
        candidate: Candidate {
            load: loads.get(&key).copied().unwrap_or(0),
            available: status == "available" || status == "agent",
            key,
            name,
        },
        member: member.to_string(),
        status: status.to_string(),
    };
    plan.members
        .iter()
        .map(|m| match m {
            Member::Agent(endpoint) => view(
                format!("agent:{endpoint}"),
                endpoint.clone(),
                endpoint,
                "agent",
            ),
            Member::Operator(email) => match operators.get(email) {
                None => view(format!("unknown:{email}"), email.clone(), email, "unknown"),
                Some(op) => {
                    let status = if !op.signed_in {
                        "signed_out"
                    } else if !op.available {
                        "away"
                    } else if op.seen_at.is_none_or(|s| s < idle_since) {
                        "idle"
                    } else {
                        "available"
                    };
                    view(op.id.clone(), op.name.clone(), email, status)
                }
            },
        })
        .collect()
}

// What both backends write, in one place: the trail's words and the
// payloads of the webhooks queues and fallbacks send.

/// The trail's words for a thread the rules put in a queue.
pub(super) fn queued_text(queue: &str, record: &super::DecisionRecord) -> String {
    if record.rules.is_empty() {
        format!("in {queue}")
    } else {
        format!("in {queue} (rules: {})", record.rules.join(", "))
    }
}

/// The trail's words for a thread given to `member`, now holding `load`.
pub(super) fn assigned_text(member: &Candidate, plan: &QueuePlan) -> String {
    format!(
        "to {} ({}; {} of {} open)",
        member.name,
        plan.strategy.as_str(),
        member.load,
        plan.capacity
    )
}

/// The trail's words for an escalation.
pub(super) fn escalated_text(queue: &str, to: &str, after: &str) -> String {
    format!("from {queue} to {to}: nobody picked it up within {after}")
}

/// Why a message that waited too long failed, for its thread's flag.
pub(super) fn expired_reason(max_age: Duration) -> String {
    format!(
        "not delivered within {} (delivery.max_age_hours)",
        crate::queues::show_duration(max_age)
    )
}

/// The outbox payload of an agent's copy of a thread given to it.
pub(super) fn agent_payload(endpoint: &str, queue: &str) -> serde_json::Value {
    serde_json::json!({
        "endpoint": endpoint,
        "event": "thread.assigned",
        "context": {"assignment": {"queue": queue, "agent": endpoint}},
    })
}

/// The outbox payload telling a fallback endpoint that WhatsApp message
/// `outbox_id` will never reach the lead.
pub(super) fn fallback_payload(
    endpoint: &str,
    outbox_id: &str,
    code: Option<i64>,
    reason: &str,
) -> serde_json::Value {
    serde_json::json!({
        "endpoint": endpoint,
        "event": "lead.undeliverable",
        "context": {"undeliverable": {"message": outbox_id, "code": code, "error": reason}},
    })
}

/// The trail's words for a lead sent to the fallback endpoints.
pub(super) fn fallback_text(reason: &str, fallback: &[String]) -> String {
    format!(
        "WhatsApp cannot deliver ({reason}); the lead went to {}",
        fallback.join(", ")
    )
}

/// What an operator's inbox activity at `now` changes, given when they were
/// last seen: whether to note it (at most every few seconds: pages and
/// pings come often, and idleness is counted in minutes), and whether a
/// marked-available operator was idle until now (waiting threads may go to
/// them).
pub(super) fn activity(
    now: DateTime<Utc>,
    seen: Option<DateTime<Utc>>,
    available: bool,
    idle: Duration,
) -> (bool, bool) {
    let idle = chrono::Duration::from_std(idle).unwrap_or_default();
    let often = std::cmp::min(chrono::Duration::seconds(5), idle / 4);
    if seen.is_some_and(|s| now - s < often) {
        return (false, false);
    }
    (true, available && seen.is_none_or(|s| now - s >= idle))
}
