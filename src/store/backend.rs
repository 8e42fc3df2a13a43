//! The store interface each SQL dialect implements: every call [`Store`]
//! answers, with what it promises. [`Store`] holds one dialect and hands
//! each call to it; the compiler holds both dialects to the same calls.
//! The inbox's calls are [`InboxBackend`] and the queues' [`QueueBackend`],
//! beside their types.
//!
//! The futures are `Send`: the server runs store calls on spawned tasks.
//!
//! [`Store`]: super::Store
//! [`InboxBackend`]: super::inbox::InboxBackend
//! [`QueueBackend`]: super::queues::QueueBackend

use super::{
    AgentReply, ConsentRecord, DecisionRecord, Enqueued, LeadEvent, LeadRecord, LeadState,
    OutboxItem, PendingWebhook, Recorded, SendOutcome, StatusApplied, StatusRecord, StoreError,
    WebhookSource,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// What a SQL dialect gives the store for leads, threads, webhooks and the
/// outbox: the same answers to the same calls.
pub trait Backend {
    /// Whether the database answers.
    fn ping(&self) -> impl Future<Output = bool> + Send;

    /// Records an event for a lead and its decision, in one transaction.
    /// `decide` sees the lead after the event is merged in. The answer comes
    /// once the transaction is committed.
    fn record(
        &self,
        account: &str,
        event: LeadEvent,
        decide: impl FnOnce(&LeadState) -> DecisionRecord + Send + 'static,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send;

    /// Everything about a lead, or `None` when the account has no such lead.
    /// A lead merged into another is answered with the survivor.
    fn lead(
        &self,
        account: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<LeadRecord>, StoreError>> + Send;

    /// Leads of an account, newest activity first, optionally matching a
    /// name, phone or email fragment.
    fn search(
        &self,
        account: &str,
        query: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<super::view::LeadSummary>, StoreError>> + Send;

    /// Sets a thread's state: a person takes it over, or gives it back.
    /// Returns false when the account has no such lead.
    fn set_thread_state(
        &self,
        account: &str,
        lead_id: &str,
        human: bool,
        queue: Option<&str>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores webhook events before they are acknowledged; returns how many
    /// were new (a redelivered event is ignored).
    fn enqueue_webhooks(
        &self,
        account: &str,
        source: WebhookSource,
        events: &[(String, Value)],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Stores one webhook event that its sender identifies by `source_id`
    /// (a form submission, a call), saying whether that ID was new, came
    /// again with the same payload, or came with another one (then nothing
    /// is stored).
    fn enqueue_webhook(
        &self,
        account: &str,
        source: WebhookSource,
        source_id: &str,
        payload: &Value,
    ) -> impl Future<Output = Result<Enqueued, StoreError>> + Send;

    /// The oldest webhook events due for processing, held for this worker
    /// for `lease`: with several instances on one database, another
    /// instance's worker gets them only once the lease has run out.
    fn due_webhooks(
        &self,
        limit: i64,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<PendingWebhook>, StoreError>> + Send;

    /// Marks a webhook event processed, or failed (retried later unless `give_up`).
    fn finish_webhook(
        &self,
        id: i64,
        error: Option<&str>,
        give_up: bool,
        retry_in: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Counts of webhook events by state, for readiness and metrics.
    fn webhook_counts(&self)
        -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;

    /// Records a delivery status Meta reported and applies it to its outbox
    /// message: Meta's ID, the furthest status, and for a failure what it
    /// means (a template in place of a message the closed window refused, a
    /// marketing opt-out, a flagged thread). A redelivered status changes nothing.
    ///
    /// A message WhatsApp will never deliver also sends the lead record to
    /// each of the account's `fallback` endpoints (`lead.undeliverable`).
    fn apply_status(
        &self,
        account: &str,
        status: &StatusRecord,
        fallback: &[String],
    ) -> impl Future<Output = Result<StatusApplied, StoreError>> + Send;

    /// Claims up to `limit` messages due for delivery for `owner`, for
    /// `lease`. Messages whose send may have reached Meta are claimed again
    /// only once `grace` has passed since that send without a status.
    /// Automated WhatsApp messages of threads a person took over are
    /// cancelled, and messages older than `max_age` fail, on the way; a
    /// WhatsApp message that fails so flags its thread and goes to its
    /// account's endpoints in `fallbacks` (account -> endpoint names).
    fn claim_outbox(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
        grace: Duration,
        max_age: Duration,
        fallbacks: &BTreeMap<String, Vec<String>>,
    ) -> impl Future<Output = Result<Vec<OutboxItem>, StoreError>> + Send;

    /// Records how an attempt ended, if `owner` still holds the message's
    /// lease. A WhatsApp message that failed for good flags its thread and
    /// sends the lead record to each of the `fallback` endpoints.
    fn finish_outbox(
        &self,
        owner: &str,
        item: &OutboxItem,
        outcome: SendOutcome,
        fallback: &[String],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Outbox messages by kind and state, for metrics.
    fn outbox_counts(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String, i64)>, StoreError>> + Send;

    /// Disables an endpoint of an account (it answered 410 Gone).
    fn disable_endpoint(
        &self,
        account: &str,
        endpoint: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The endpoints of an account that are disabled, with why.
    fn disabled_endpoints(
        &self,
        account: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;

    /// Records a consent change for the lead an identity belongs to; false
    /// when no lead has that identity.
    fn record_consent(
        &self,
        account: &str,
        kind: &str,
        value: &str,
        consent: &ConsentRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a WhatsApp user's marketing preference: `opted_out` after
    /// Meta's `user_preferences` "stop" or send error 131050, not after a
    /// "resume". Kept on the WhatsApp ID, so it holds for every lead with
    /// that number, also one not known yet; the latest `at` wins (Meta may
    /// deliver a stop and a resume out of order). The lead with that
    /// identity, if any, gets it in its consent history.
    fn record_marketing(
        &self,
        account: &str,
        wa_id: &str,
        opted_out: bool,
        at: DateTime<Utc>,
        source: &str,
        evidence: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Queues an AI agent's WhatsApp reply on a thread assigned to it
    /// (`agent:<endpoint>`) and writes it to the transcript as the agent,
    /// in one transaction. The thread stays automated and the agent's; a
    /// thread a person took over, or that went to someone else, is refused.
    fn queue_agent_reply(
        &self,
        account: &str,
        lead_id: &str,
        agent: &str,
        payload: &Value,
        text: &str,
    ) -> impl Future<Output = Result<AgentReply, StoreError>> + Send;
}
