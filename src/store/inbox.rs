//! What the operator inbox keeps: operators and their sessions, which
//! threads each has read, the list of an account's threads, and the trail of
//! what people did on a thread (notes, takeovers, reassignments, replies).

use super::queues::{FirstReply, Presence};
use super::{LeadState, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::future::Future;

/// A thread as a list shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ThreadSummary {
    pub lead_id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub channel: Option<String>,
    pub playbook: Option<String>,
    /// `automated` or `human`.
    pub state: String,
    pub queue: Option<String>,
    /// `delivery_failed` when a WhatsApp message failed for good.
    pub flag: Option<String>,
    /// Who took the thread over.
    pub taken_by: Option<String>,
    /// In a queue with members: `waiting` (nobody has it yet), `assigned`,
    /// or `done` (closed; a new message from the lead puts it back). Null
    /// in a queue without members.
    pub queue_state: Option<String>,
    /// When it entered its queue: the escalation clock starts here.
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub queued_at: Option<String>,
    /// The member who has it: an operator's name, or an agent's endpoint.
    pub assignee: Option<String>,
    /// The last decision's handoff outcome.
    pub outcome: Option<String>,
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub last_inbound_at: Option<String>,
    /// The latest message of the transcript.
    pub last_text: Option<String>,
    #[schema(value_type = chrono::DateTime<chrono::Utc>)]
    pub activity_at: String,
    /// Always true through the API (no reader); the inbox tracks each
    /// operator.
    pub unread: bool,
}

/// An operator of an account, who signs in to the inbox.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Operator {
    pub id: String,
    pub account: String,
    pub email: String,
    pub name: String,
}

impl Operator {
    /// A new operator of `account`, with a new ID; the email, which signs
    /// them in, is kept trimmed and in lowercase.
    pub(crate) fn new(account: &str, email: &str, name: &str) -> Operator {
        Operator {
            id: uuid::Uuid::now_v7().to_string(),
            account: account.to_string(),
            email: email.trim().to_lowercase(),
            name: name.trim().to_string(),
        }
    }

    /// The refusal of this operator because another has their email.
    pub(crate) fn email_taken(&self) -> StoreError {
        StoreError::Conflict(format!(
            "an operator with the email `{}` exists already",
            self.email
        ))
    }
}

/// An operator with their password hash, for signing in.
#[derive(Clone, Debug)]
pub struct OperatorLogin {
    pub operator: Operator,
    /// argon2id, as a PHC string.
    pub password_hash: String,
}

/// A signed-in operator's session.
#[derive(Clone, Debug)]
pub struct Session {
    pub operator: Operator,
    /// The token every form of this session carries.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// Which threads a list shows.
#[derive(Clone, Debug, Default)]
pub struct ThreadFilter {
    pub queue: Option<String>,
    /// `automated`, `human` (taken over), `blocked` (the last decision could
    /// not hand off: no opt-in, window closed), `failed` (delivery failed)
    /// or `waiting` (in a queue, nobody has it yet).
    pub state: Option<String>,
    pub playbook: Option<String>,
    /// A fragment of the name or phone.
    pub q: Option<String>,
    pub limit: i64,
}

/// The thread states a list can be filtered by.
pub const THREAD_STATES: [&str; 5] = ["automated", "human", "blocked", "failed", "waiting"];

/// A person's reply, queued.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplyQueued {
    pub outbox_id: String,
    /// Set when this is the first human reply since the thread entered its queue.
    pub first: Option<FirstReply>,
}

/// What a SQL dialect gives the operator inbox: the same answers to the
/// same calls.
pub trait InboxBackend {
    /// Adds an operator; fails when the email is taken.
    fn create_operator(
        &self,
        account: &str,
        email: &str,
        name: &str,
        password_hash: &str,
    ) -> impl Future<Output = Result<Operator, StoreError>> + Send;

    /// An account's operators by email, each with their availability.
    fn operators(
        &self,
        account: &str,
    ) -> impl Future<Output = Result<Vec<(Operator, Presence)>, StoreError>> + Send;

    /// The operator with this email, with their password hash.
    fn operator_login(
        &self,
        email: &str,
    ) -> impl Future<Output = Result<Option<OperatorLogin>, StoreError>> + Send;

    /// Starts a session; only the token's hash is kept.
    fn create_session(
        &self,
        operator_id: &str,
        token_hash: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The live session with this token hash, if any.
    fn session(
        &self,
        token_hash: &str,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Ends a session (sign-out).
    fn end_session(&self, token_hash: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// An account's threads, newest activity first, with whether `reader`
    /// has seen their latest activity.
    fn threads(
        &self,
        account: &str,
        reader: Option<&str>,
        filter: &ThreadFilter,
    ) -> impl Future<Output = Result<Vec<ThreadSummary>, StoreError>> + Send;

    /// Notes that `operator` has seen the thread as it is now.
    fn mark_read(
        &self,
        operator_id: &str,
        lead_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The lead as the engine sees it (for template previews); `None` when
    /// the account has no such lead. A merged lead answers as the survivor.
    fn lead_state(
        &self,
        account: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<LeadState>, StoreError>> + Send;

    /// What people did on the thread, oldest first.
    fn thread_events(
        &self,
        account: &str,
        lead_id: &str,
    ) -> impl Future<Output = Result<Vec<Value>, StoreError>> + Send;

    /// Adds a note to the thread; false when the account has no such lead.
    fn add_note(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
        text: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A person takes the thread over (`human`) or gives it back, on the
    /// thread's trail; false when the account has no such lead. A takeover
    /// picks the thread up (its escalation clock stops), and one by an
    /// `operator` (their ID) gives them the thread when it is in a queue
    /// with members.
    fn set_thread_owner(
        &self,
        account: &str,
        lead_id: &str,
        human: bool,
        actor: &str,
        operator: Option<&str>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Moves the thread to another queue, on the thread's trail. In a
    /// `managed` queue (one with members) it waits there to be assigned.
    fn reassign(
        &self,
        account: &str,
        lead_id: &str,
        queue: &str,
        actor: &str,
        managed: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Queues a person's WhatsApp reply (sent even though the thread is
    /// taken over), writes it to the transcript and takes the thread over,
    /// in one transaction. The reply picks the thread up; one by an
    /// `operator` (their ID) gives them a thread of a queue with members
    /// unless a member has it.
    /// `None` when the account has no such lead.
    fn queue_reply(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
        operator: Option<&str>,
        payload: &Value,
        text: &str,
    ) -> impl Future<Output = Result<Option<ReplyQueued>, StoreError>> + Send;
}

impl Store {
    /// See [`InboxBackend::create_operator`].
    pub async fn create_operator(
        &self,
        account: &str,
        email: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<Operator, StoreError> {
        on_backend!(self, db => db.create_operator(account, email, name, password_hash)                     .await)
    }

    /// See [`InboxBackend::operators`].
    pub async fn operators(&self, account: &str) -> Result<Vec<(Operator, Presence)>, StoreError> {
        on_backend!(self, db => db.operators(account).await)
    }

    /// See [`InboxBackend::operator_login`].
    pub async fn operator_login(&self, email: &str) -> Result<Option<OperatorLogin>, StoreError> {
        on_backend!(self, db => db.operator_login(email).await)
    }

    /// See [`InboxBackend::create_session`].
    pub async fn create_session(
        &self,
        operator_id: &str,
        token_hash: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_backend!(self, db => db.create_session(operator_id, token_hash, csrf, expires_at)                     .await)
    }

    /// See [`InboxBackend::session`].
    pub async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        on_backend!(self, db => db.session(token_hash).await)
    }

    /// See [`InboxBackend::end_session`].
    pub async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        on_backend!(self, db => db.end_session(token_hash).await)
    }

    /// See [`InboxBackend::threads`].
    pub async fn threads(
        &self,
        account: &str,
        reader: Option<&str>,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadSummary>, StoreError> {
        on_backend!(self, db => db.threads(account, reader, filter).await)
    }

    /// See [`InboxBackend::mark_read`].
    pub async fn mark_read(&self, operator_id: &str, lead_id: &str) -> Result<(), StoreError> {
        on_backend!(self, db => db.mark_read(operator_id, lead_id).await)
    }

    /// See [`InboxBackend::lead_state`].
    pub async fn lead_state(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<LeadState>, StoreError> {
        on_backend!(self, db => db.lead_state(account, id).await)
    }

    /// See [`InboxBackend::thread_events`].
    pub async fn thread_events(
        &self,
        account: &str,
        lead_id: &str,
    ) -> Result<Vec<Value>, StoreError> {
        on_backend!(self, db => db.thread_events(account, lead_id).await)
    }

    /// See [`InboxBackend::add_note`].
    pub async fn add_note(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
        text: &str,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.add_note(account, lead_id, actor, text).await)
    }

    /// See [`InboxBackend::set_thread_owner`].
    pub async fn set_thread_owner(
        &self,
        account: &str,
        lead_id: &str,
        human: bool,
        actor: &str,
        operator: Option<&str>,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.set_thread_owner(account, lead_id, human, actor, operator).await)
    }

    /// See [`InboxBackend::reassign`].
    pub async fn reassign(
        &self,
        account: &str,
        lead_id: &str,
        queue: &str,
        actor: &str,
        managed: bool,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.reassign(account, lead_id, queue, actor, managed).await)
    }

    /// See [`InboxBackend::queue_reply`].
    pub async fn queue_reply(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
        operator: Option<&str>,
        payload: &Value,
        text: &str,
    ) -> Result<Option<ReplyQueued>, StoreError> {
        on_backend!(self, db => db.queue_reply(account, lead_id, actor, operator, payload, text).await)
    }
}
