//! The lead pipeline, below the HTTP service and its workers: which
//! playbook decides a lead ([`pick_playbook`], one precedence for every
//! channel), deciding a stored lead in its situation ([`decide_for`]: the
//! clock, the WhatsApp window, its thread), and what the decision writes
//! besides itself (the typed outbox rows of [`OutboxPayload`]). [`event`] builds
//! the store's lead event for each channel.

pub mod event;
pub mod policy;

pub use crate::store::payload::{Notify, NotifyEvent, OutboxPayload, WhatsappSend};

use crate::config::Account;
use crate::engine::{Event, Outcome, Situation};
use crate::ruleset::{Decision, DecisionError, Ruleset};
use crate::store::{DecisionRecord, LeadState, DEFAULT_IDLE_DAYS};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

/// Where a lead is routed from: what decides its playbook.
#[derive(Clone, Copy, Debug, Default)]
pub struct Route<'a> {
    /// The playbook the sender named (the API's `playbook`, a form's
    /// configured playbook).
    pub playbook: Option<&'a str>,
    /// The form it came from (`routing.by_form`).
    pub form: Option<&'a str>,
    /// Its channel (`routing.by_channel`).
    pub channel: &'a str,
    /// Its free-form origin (`routing.by_source`).
    pub source: Option<&'a str>,
}

/// Why no playbook decides a lead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoPlaybook {
    /// The one named or routed to is not one the account may use.
    NotAvailable {
        playbook: String,
        account: String,
        available: Vec<String>,
    },
    /// Nothing routes the lead and the account may use several.
    Unrouted {
        account: String,
        channel: String,
        available: Vec<String>,
    },
}

impl std::fmt::Display for NoPlaybook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoPlaybook::NotAvailable {
                playbook,
                account,
                available,
            } => write!(
                f,
                "playbook `{playbook}` is not available to account `{account}` (available: {})",
                available.join(", ")
            ),
            NoPlaybook::Unrouted {
                account,
                channel,
                available,
            } => write!(
                f,
                "account `{account}` routes no playbook for channel `{channel}`: name one ({}), or set `routing.default` or `routing.by_channel`",
                available.join(", ")
            ),
        }
    }
}

/// The playbook for a lead, by one precedence for every channel: the one
/// named, else by form, by channel, by source, the account's default, else
/// the only playbook the account may use.
pub fn pick_playbook(
    account: &Account,
    ruleset: &Ruleset,
    route: Route<'_>,
) -> Result<String, NoPlaybook> {
    let routing = &account.routing;
    let allowed =
        |name: &str| account.playbooks.is_empty() || account.playbooks.iter().any(|p| p == name);
    let available: Vec<String> = ruleset
        .playbooks
        .keys()
        .filter(|p| allowed(p))
        .cloned()
        .collect();
    let chosen = route
        .playbook
        .map(str::to_string)
        .or_else(|| route.form.and_then(|f| routing.by_form.get(f).cloned()))
        .or_else(|| routing.by_channel.get(route.channel).cloned())
        .or_else(|| route.source.and_then(|s| routing.by_source.get(s).cloned()))
        .or_else(|| routing.default.clone())
        .or_else(|| match available.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        });
    match chosen {
        Some(p) if allowed(&p) && ruleset.playbooks.contains_key(&p) => Ok(p),
        Some(playbook) => Err(NoPlaybook::NotAvailable {
            playbook,
            account: account.id.clone(),
            available,
        }),
        None => Err(NoPlaybook::Unrouted {
            account: account.id.clone(),
            channel: route.channel.to_string(),
            available,
        }),
    }
}

/// Whether the WhatsApp 24-hour window is open at `now`.
pub fn window_open(last_inbound: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_inbound.is_some_and(|t| now - t < Duration::hours(24) && t <= now + Duration::minutes(5))
}

/// What is being decided: an upstream lead event, or a message the lead
/// wrote on WhatsApp (with its transcript text).
#[derive(Clone, Debug, Default)]
pub struct Decided {
    pub event: Event,
    pub message: Option<String>,
}

/// The decision for a stored lead, and what it writes besides itself. A
/// lead that already has a playbook keeps it; `playbook` is for new leads
/// (a webhook's lead for which the account routes no playbook has none,
/// and the reason is its decision).
pub fn decide_for(
    ruleset: &Ruleset,
    playbook: Result<&str, &str>,
    state: &LeadState,
    lead_updates: &[String],
    managed: &[String],
    decided: &Decided,
) -> DecisionRecord {
    let playbook = match state
        .lead
        .playbook
        .as_deref()
        .filter(|p| ruleset.playbooks.contains_key(*p))
        .map_or(playbook, Ok)
    {
        Ok(p) => p,
        // Nothing to decide with: the lead and what it said are kept (an
        // operator sees them), and the decision says why nothing happened.
        Err(why) => {
            return DecisionRecord {
                ruleset_hash: ruleset.hash.clone(),
                decision: no_decision(Some(decided.event), why.to_string()),
                created: state.created,
                ..DecisionRecord::default()
            }
        }
    };
    let now = Utc::now();
    let situation = Situation {
        now,
        window_open: window_open(state.last_inbound_at, now),
        human: state.human,
        event: decided.event,
        thread: state.thread.clone(),
        marketing_opt_out: state.marketing_opt_out,
        message: decided.message.clone(),
    };
    match ruleset.explain(playbook, &state.lead, &situation) {
        Ok((decision, trace)) => {
            let trace = serde_json::to_value(&trace).unwrap_or(Value::Null);
            let mut record = record_for(ruleset, &decision, trace, state, lead_updates);
            record.managed = record.queue.as_ref().is_some_and(|q| managed.contains(q));
            record.idle_days = ruleset
                .playbooks
                .get(playbook)
                .map_or(DEFAULT_IDLE_DAYS as u32, |p| p.compiled.schema.idle_days);
            record
        }
        // The playbook was checked when the request came in and rulesets
        // are only ever swapped whole, so this is a race with a reload that
        // removed it; the decision says so rather than failing the intake.
        Err(e) => DecisionRecord {
            playbook: playbook.to_string(),
            ruleset_hash: ruleset.hash.clone(),
            decision: no_decision(None, e.to_string()),
            created: state.created,
            ..DecisionRecord::default()
        },
    }
}

/// A decision's place when there is none, and why.
fn no_decision(event: Option<Event>, error: String) -> Value {
    // A string and an enum of unit variants serialize without fail.
    serde_json::to_value(DecisionError { event, error }).unwrap_or(Value::Null)
}

fn record_for(
    ruleset: &Ruleset,
    decision: &Decision,
    trace: Value,
    state: &LeadState,
    lead_updates: &[String],
) -> DecisionRecord {
    let decision_json = serde_json::to_value(decision).unwrap_or(Value::Null);
    let mut outbox = Vec::new();
    let mut opens_thread = false;
    if let Some(h) = &decision.handoff {
        if matches!(h.outcome, Outcome::Session | Outcome::Template) && h.error.is_none() {
            opens_thread = true;
            outbox.push(OutboxPayload::Whatsapp(WhatsappSend {
                to: state.lead.phone.clone(),
                outcome: h.outcome,
                text: if h.outcome == Outcome::Session {
                    h.message.clone()
                } else {
                    None
                },
                template: h.approved.clone(),
                by: None,
                sender: ruleset
                    .playbooks
                    .get(&decision.playbook)
                    .and_then(|p| p.compiled.schema.sender.clone()),
            }));
        }
    }
    for endpoint in &decision.actions.notify {
        outbox.push(OutboxPayload::Notify(Notify {
            endpoint: endpoint.clone(),
            event: NotifyEvent::LeadNotify,
        }));
    }
    // The account's CRM gets the lead record after every decision.
    for endpoint in lead_updates {
        outbox.push(OutboxPayload::Notify(Notify {
            endpoint: endpoint.clone(),
            event: NotifyEvent::LeadUpdated,
        }));
    }
    DecisionRecord {
        playbook: decision.playbook.clone(),
        ruleset_hash: decision.ruleset.clone(),
        rules: decision.rules.iter().map(|r| r.to_string()).collect(),
        trace,
        outbox: outbox.iter().map(OutboxPayload::row).collect(),
        queue: decision
            .actions
            .takeover
            .clone()
            .or_else(|| decision.actions.assign.clone()),
        takeover: decision.actions.takeover.is_some(),
        managed: false,
        opens_thread,
        idle_days: DEFAULT_IDLE_DAYS as u32,
        asked: decision.actions.ask.clone(),
        created: state.created,
        decision: decision_json,
    }
}
