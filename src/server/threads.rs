//! What a person does on a thread, for the inbox pages and the JSON API
//! alike: take over and release, reply (free text inside the window, an
//! approved template outside it), reassign, add a note; and the approved
//! templates with their parameters filled in for the lead. Every change is
//! announced to the inbox's live updates.

use super::error::ApiError;
use super::extract::{ApiAccount, ApiJson, Path, Query};
use super::leads::{LeadId, ThreadMode};
use super::AppState;
use crate::config::Account;
use crate::dsl::check::TemplateCatalog;
use crate::engine::eval::Actions;
use crate::engine::{Outcome, Situation};
use crate::pipeline::policy;
use crate::pipeline::{window_open, WhatsappSend};
use crate::render::RenderedTemplate;
use crate::store::{AgentReply, LeadState};
use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The longest text a person may send or note (Meta's limit for a text).
pub const MAX_TEXT: usize = 4096;

/// A change on a thread, for the inbox's live updates.
#[derive(Clone, Debug)]
pub struct ThreadChanged {
    pub account: String,
    pub lead_id: String,
}

impl AppState {
    /// Tells open inbox pages of `account` that the lead's thread changed.
    pub fn announce(&self, account: &str, lead_id: &str) {
        // No page listening is not an error.
        let _ = self.thread_changes.send(ThreadChanged {
            account: account.to_string(),
            lead_id: lead_id.to_string(),
        });
    }
}

/// A template a person may send: rendered for the lead, or why it cannot be.
#[derive(Clone, Debug)]
pub struct TemplateChoice {
    pub name: String,
    pub rendered: Result<RenderedTemplate, String>,
}

/// The lead as the engine sees it, whether its window is open, and every
/// approved template rendered for it.
pub async fn templates_for(
    state: &AppState,
    account: &Account,
    lead_id: &str,
) -> Result<(LeadState, bool, Vec<TemplateChoice>), ApiError> {
    let lead = state
        .store
        .lead_state(&account.id, lead_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no lead `{lead_id}`")))?;
    let now = Utc::now();
    let open = window_open(lead.last_inbound_at, now);
    let ruleset = state
        .ruleset()
        .ok_or_else(|| ApiError::Internal("no ruleset loaded".into()))?;
    let playbook = lead
        .lead
        .playbook
        .as_deref()
        .and_then(|p| ruleset.playbooks.get(p));
    let situation = Situation {
        window_open: open,
        human: lead.human,
        thread: lead.thread.clone(),
        marketing_opt_out: lead.marketing_opt_out,
        ..Situation::at(now)
    };
    let mut choices = Vec::new();
    for name in ruleset.templates.approved_names() {
        let rendered = match playbook {
            Some(p) => {
                let context = crate::ruleset::template_context(
                    &p.compiled,
                    &lead.lead,
                    &situation,
                    &Actions::default(),
                );
                ruleset.templates.render_approved(&name, &context)
            }
            None => Err("the lead has no playbook to fill the template from".into()),
        };
        choices.push(TemplateChoice { name, rendered });
    }
    Ok((lead, open, choices))
}

/// What a person sends: free text, or an approved template by name.
/// Exactly one of `text` and `template`; `by` (a person) or `agent` (an AI
/// agent replying as itself), not both.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyInput {
    /// Free text; only inside the 24-hour window. Line breaks and tabs, no
    /// other control characters.
    #[serde(default)]
    #[schema(
        max_length = 4096,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    )]
    pub text: Option<String>,
    /// An approved template's name, filled in from the lead.
    #[serde(default)]
    pub template: Option<String>,
    /// Who sends it, as the trail shows it (default `api`; the inbox uses
    /// the signed-in operator): one line, no control characters.
    #[serde(default)]
    #[schema(max_length = 80, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub by: Option<String>,
    /// An endpoint of the account that is a queue member
    /// (`agent:<endpoint>`) and has the thread: the reply goes out as the
    /// agent and the thread stays automated. Answered 409 when the thread
    /// is not the agent's (a person took it over, or it is with someone
    /// else).
    #[serde(default)]
    pub agent: Option<String>,
}

/// Queues a person's reply and takes the thread over, or an AI agent's
/// reply on a thread assigned to it (the thread stays automated). Free
/// text only while the window is open; outside it, an approved template.
pub async fn reply(
    state: &AppState,
    account: &Account,
    lead_id: &str,
    actor: &str,
    operator: Option<&str>,
    input: &ReplyInput,
) -> Result<ReplyResult, ApiError> {
    let text = input
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let template = input
        .template
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    // Only the API speaks for an agent; a signed-in operator is a person.
    let agent = match operator {
        None => input.agent.as_deref(),
        Some(_) => None,
    };
    let (lead, open, choices) = templates_for(state, account, lead_id).await?;
    let Some(phone) = lead.lead.phone.clone() else {
        return Err(ApiError::invalid(
            "the lead has no phone number to send to on WhatsApp",
            "lead",
        ));
    };
    let ruleset = state
        .ruleset()
        .ok_or_else(|| ApiError::Internal("no ruleset loaded".into()))?;
    let sender = lead
        .lead
        .playbook
        .as_deref()
        .and_then(|p| ruleset.playbooks.get(p))
        .and_then(|p| p.compiled.schema.sender.clone());
    let (payload, said) = match (text, template) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "send either `text` or `template`, not both",
                "template",
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "write a message (`text`) or choose an approved template (`template`)",
                "text",
            ))
        }
        (Some(text), None) => {
            if !open {
                return Err(ApiError::invalid(
                    "the WhatsApp window is closed (the lead has not written in 24 hours): only an approved template can be sent",
                    "text",
                ));
            }
            policy::text(text, "text", MAX_TEXT, policy::Shape::Text)?;
            let send = WhatsappSend {
                to: Some(phone),
                outcome: Outcome::Session,
                text: Some(text.to_string()),
                template: None,
                sender,
                by: Some(actor.to_string()),
            };
            (send, text.to_string())
        }
        (None, Some(name)) => {
            let choice = choices.iter().find(|c| c.name == name).ok_or_else(|| {
                ApiError::invalid(format!("no approved template `{name}`"), "template")
            })?;
            let rendered = choice.rendered.clone().map_err(|e| {
                ApiError::invalid(
                    format!("template `{name}` cannot be filled for this lead: {e}"),
                    "template",
                )
            })?;
            let preview = rendered.preview.clone();
            let send = WhatsappSend {
                to: Some(phone),
                outcome: Outcome::Template,
                text: None,
                template: Some(rendered),
                sender,
                by: Some(actor.to_string()),
            };
            (send, preview)
        }
    };
    if let Some(agent) = agent {
        let mut payload = payload;
        payload.by = Some(format!("agent:{agent}"));
        return match state
            .store
            .queue_agent_reply(&account.id, &lead.id, agent, &payload.to_value(), &said)
            .await?
        {
            AgentReply::Queued { outbox_id } => {
                state.outbox.notify_one();
                state.announce(&account.id, &lead.id);
                Ok(ReplyResult {
                    lead_id: lead.id,
                    outbox_id,
                    thread: ThreadMode::Automated,
                    message: payload,
                })
            }
            AgentReply::NotAssigned { human: true, .. } => Err(ApiError::Conflict(format!(
                "a person has taken this thread over: agent `{agent}` can no longer reply on it"
            ))),
            AgentReply::NotAssigned { assignee, .. } => Err(ApiError::Conflict(format!(
                "the thread is not assigned to agent `{agent}` ({})",
                match assignee {
                    Some(a) if a.starts_with("agent:") => format!("it is with agent `{}`", &a[6..]),
                    Some(_) => "a person has it".to_string(),
                    None => "nobody has it yet".to_string(),
                }
            ))),
            AgentReply::NoLead => Err(ApiError::NotFound(format!("no lead `{lead_id}`"))),
        };
    }
    let queued = state
        .store
        .queue_reply(
            &account.id,
            &lead.id,
            actor,
            operator,
            &payload.to_value(),
            &said,
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no lead `{lead_id}`")))?;
    if let Some(first) = &queued.first {
        state
            .metrics
            .first_reply(first.queue.as_deref().unwrap_or(""), first.after);
    }
    state.outbox.notify_one();
    state.announce(&account.id, &lead.id);
    Ok(ReplyResult {
        lead_id: lead.id,
        outbox_id: queued.outbox_id,
        thread: ThreadMode::Human,
        message: payload,
    })
}

/// A reply queued.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReplyResult {
    lead_id: String,
    /// The queued message (see the lead's `outbox`).
    outbox_id: String,
    /// `automated` for an agent's reply: the thread stays with automation.
    thread: ThreadMode,
    message: WhatsappSend,
}

/// The API's name for who did something.
fn api_actor(by: Option<&str>) -> Result<String, ApiError> {
    match by {
        Some(by) => super::extract::clean(Some(by), "by", 80, policy::Shape::Line),
        None => Ok("api".into()),
    }
}

// The JSON API: the same operations for other tools.

/// The threads found.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ThreadList {
    threads: Vec<crate::store::inbox::ThreadSummary>,
}

/// An account's threads, newest activity first.
#[utoipa::path(
    get,
    path = "/v1/threads",
    tag = "threads",
    operation_id = "listThreads",
    params(ThreadQuery),
    responses(
        (status = 200, description = "The threads.", body = ThreadList),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::KeyErrors,
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Query(q): Query<ThreadQuery>,
) -> Result<Json<ThreadList>, ApiError> {
    let filter = q.filter()?;
    let threads = state.store.threads(&account.id, None, &filter).await?;
    Ok(Json(ThreadList { threads }))
}

/// The filters of a thread list.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreadQuery {
    /// Only this queue.
    #[serde(default)]
    pub queue: Option<String>,
    /// `automated`, `human` (taken over), `blocked` (the last decision's
    /// handoff was blocked), `failed` (a WhatsApp message failed for good)
    /// or `waiting` (in a queue, nobody has it yet).
    #[serde(default)]
    #[param(value_type = Option<ThreadStateFilter>, inline)]
    pub state: Option<String>,
    /// Only this playbook.
    #[serde(default)]
    pub playbook: Option<String>,
    /// A fragment of the name or phone.
    #[serde(default)]
    pub q: Option<String>,
    /// How many threads at most; values outside 1 to 500 are clamped into it.
    #[serde(default)]
    #[param(default = 100)]
    pub limit: Option<i64>,
}

/// The thread states a list can be filtered by
/// ([`crate::store::inbox::THREAD_STATES`]).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ThreadStateFilter {
    Automated,
    Human,
    Blocked,
    Failed,
    Waiting,
}

impl ThreadQuery {
    /// The store's filter; an unknown state is refused.
    pub fn filter(&self) -> Result<crate::store::inbox::ThreadFilter, ApiError> {
        let some = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let state = some(&self.state);
        if let Some(s) = &state {
            if !crate::store::inbox::THREAD_STATES.contains(&s.as_str()) {
                return Err(ApiError::invalid(
                    format!(
                        "`state` is `{s}`; use one of {}",
                        crate::store::inbox::THREAD_STATES.join(", ")
                    ),
                    "state",
                ));
            }
        }
        Ok(crate::store::inbox::ThreadFilter {
            queue: some(&self.queue),
            state,
            playbook: some(&self.playbook),
            q: some(&self.q),
            limit: self.limit.unwrap_or(100).clamp(1, 500),
        })
    }
}

/// A person's WhatsApp reply: free text inside the 24-hour window, an approved template outside it.
///
/// The reply is queued and sent even though the thread is taken over (it
/// is a person's), is written to the transcript, and takes the thread over:
/// automation stays quiet until the thread is released. Free text outside
/// the window is refused (422 at `text`); a template is filled in from the
/// lead (see `GET /v1/leads/{id}/templates`).
#[utoipa::path(
    post,
    path = "/v1/leads/{id}/reply",
    tag = "threads",
    operation_id = "replyOnThread",
    params(LeadId),
    request_body(content = ReplyInput, content_type = "application/json", example = json!({"text": "Yes, the beach venue is free that weekend.", "by": "Priya"})),
    responses(
        (status = 200, description = "Done.", body = ReplyResult),
        (status = 409, response = super::openapi::Conflict),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::LeadErrors,
    )
)]
pub async fn api_reply(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<ReplyInput>,
) -> Result<Json<ReplyResult>, ApiError> {
    if let Some(agent) = input.agent.as_deref() {
        if input.by.is_some() {
            return Err(ApiError::invalid(
                "give `agent` (an AI agent replying as itself) or `by` (a person), not both",
                "by",
            ));
        }
        if !account.endpoints.contains_key(agent) {
            let known: Vec<&str> = account.endpoints.keys().map(String::as_str).collect();
            return Err(ApiError::invalid(
                format!(
                    "`agent` is `{agent}`, which is not one of this account's endpoints ({})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
                "agent",
            ));
        }
    }
    let actor = match input.agent.as_deref() {
        Some(agent) => format!("agent:{agent}"),
        None => api_actor(input.by.as_deref())?,
    };
    Ok(Json(
        reply(&state, &account, &id, &actor, None, &input).await?,
    ))
}

/// The body of a note through the API.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    /// The note. Line breaks and tabs, no other control characters.
    #[serde(default)]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 4096, pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$")]
    pub text: Option<String>,
    /// Who does it, as the trail shows it (default `api`): one line, no
    /// control characters.
    #[serde(default)]
    #[schema(max_length = 80, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub by: Option<String>,
}

/// A note written.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NoteResult {
    lead_id: String,
    note: String,
    by: String,
}

/// A note for the team on the thread's trail; never sent to the lead.
///
/// `by` names who wrote it (default `api`).
#[utoipa::path(
    post,
    path = "/v1/leads/{id}/notes",
    tag = "threads",
    operation_id = "addNote",
    params(LeadId),
    request_body(content = NoteInput, content_type = "application/json", example = json!({"text": "Prefers calls after 6pm", "by": "Priya"})),
    responses(
        (status = 200, description = "Done.", body = NoteResult),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::LeadErrors,
    )
)]
pub async fn api_note(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<NoteInput>,
) -> Result<Json<NoteResult>, ApiError> {
    let actor = api_actor(input.by.as_deref())?;
    let text = super::extract::clean_text(input.text.as_deref(), "text", MAX_TEXT)?;
    if !state
        .store
        .add_note(&account.id, &id, &actor, &text)
        .await?
    {
        return Err(ApiError::NotFound(format!("no lead `{id}`")));
    }
    state.announce(&account.id, &id);
    Ok(Json(NoteResult {
        lead_id: id,
        note: text,
        by: actor,
    }))
}

/// The body of a reassignment through the API.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignInput {
    /// The queue, as rules write it in `assign`.
    #[serde(default)]
    #[schema(value_type = String, required = true, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub queue: Option<String>,
    /// Who does it, as the trail shows it (default `api`): one line, no
    /// control characters.
    #[serde(default)]
    #[schema(max_length = 80, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub by: Option<String>,
}

/// A thread moved.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReassignResult {
    lead_id: String,
    queue: String,
}

/// Moves the thread to another queue, on the thread's trail.
///
/// `queue` is letters, digits, `-`, `_` or `.`, as rules write them in
/// `assign`.
#[utoipa::path(
    post,
    path = "/v1/leads/{id}/reassign",
    tag = "threads",
    operation_id = "reassignThread",
    params(LeadId),
    request_body(content = ReassignInput, content_type = "application/json", example = json!({"queue": "events-senior-closers"})),
    responses(
        (status = 200, description = "Done.", body = ReassignResult),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::LeadErrors,
    )
)]
pub async fn api_reassign(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<ReassignInput>,
) -> Result<Json<ReassignResult>, ApiError> {
    let actor = api_actor(input.by.as_deref())?;
    let queue = super::extract::clean_queue(input.queue.as_deref())?;
    let managed = account.queues.contains_key(&queue);
    if !state
        .store
        .reassign(&account.id, &id, &queue, &actor, managed)
        .await?
    {
        return Err(ApiError::NotFound(format!("no lead `{id}`")));
    }
    state.announce(&account.id, &id);
    state.queues.notify_one();
    Ok(Json(ReassignResult { lead_id: id, queue }))
}

/// The approved templates filled in for a lead.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TemplateChoices {
    lead_id: String,
    window_open: bool,
    window_closes_at: Option<chrono::DateTime<chrono::Utc>>,
    templates: Vec<TemplateOption>,
}

/// An approved template, filled in for the lead or not.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TemplateOption {
    name: String,
    language: Option<String>,
    params: Vec<String>,
    /// The message as the lead would read it.
    preview: Option<String>,
    /// Why the template cannot be filled for this lead.
    error: Option<String>,
}

/// The approved templates filled in for the lead, and whether free text can be sent now.
#[utoipa::path(
    get,
    path = "/v1/leads/{id}/templates",
    tag = "threads",
    operation_id = "threadTemplates",
    params(LeadId),
    responses(
        (status = 200, description = "Every approved template, with its preview or why it cannot be filled.", body = TemplateChoices),
        super::openapi::LeadErrors,
    )
)]
pub async fn api_templates(
    State(state): State<Arc<AppState>>,
    account: ApiAccount,
    Path(id): Path<String>,
) -> Result<Json<TemplateChoices>, ApiError> {
    let (lead, open, choices) = templates_for(&state, &account, &id).await?;
    let templates = choices
        .into_iter()
        .map(|c| match c.rendered {
            Ok(r) => TemplateOption {
                name: c.name,
                language: Some(r.language),
                params: r.params,
                preview: Some(r.preview),
                error: None,
            },
            Err(e) => TemplateOption {
                name: c.name,
                language: None,
                params: Vec::new(),
                preview: None,
                error: Some(e),
            },
        })
        .collect();
    Ok(Json(TemplateChoices {
        lead_id: lead.id,
        window_open: open,
        window_closes_at: lead
            .last_inbound_at
            .map(|t| t + chrono::Duration::hours(24)),
        templates,
    }))
}
