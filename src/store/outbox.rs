//! What the end of a delivery attempt, or a delivery status Meta reports,
//! does to an outbox message and around it. Written once here as a plan;
//! each dialect carries the plan out with its own SQL, in the transaction
//! that holds the message.

use super::{OutboxItem, OutboxKind, SendOutcome, StatusRecord};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

/// Meta's error for a session message sent after the 24-hour window closed.
const WINDOW_CLOSED: i64 = 131047;

/// Meta's error for a marketing message to a user who stopped them.
const MARKETING_STOPPED: i64 = 131050;

/// Why an automated WhatsApp message is cancelled when it is claimed.
pub(crate) const TAKEN_OVER: &str = "a person took the thread over before it was sent";

/// What a message that waited too long gets added to its error.
pub(crate) const GIVEN_UP: &str = "given up: not delivered in time";

/// Where an opt-out Meta reported with a failed send is said to come from.
pub(crate) const OPT_OUT_SOURCE: &str = "whatsapp 131050";

/// What becomes of a claimed outbox message once an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OutboxUpdate {
    /// `sent`, `pending` (due again at `next_attempt`), `failed`,
    /// `cancelled`, or `sending`: a send that may have reached Meta stays
    /// there, its lease over, until the grace period has passed.
    pub state: &'static str,
    /// Meta's message ID, when it answered with one; else the stored one stays.
    pub message_id: Option<String>,
    /// The delivery status to start from unless one is on record: Meta
    /// reports a WhatsApp message's later ones, an endpoint has none.
    pub delivery: Option<&'static str>,
    /// When a pending message is due; `None` keeps the stored time.
    pub next_attempt: Option<DateTime<Utc>>,
    /// The error code to store; `None` keeps the stored one.
    pub code: Option<Option<i64>>,
    /// The error to store; `None` keeps the stored one.
    pub error: Option<Option<String>>,
    /// False for an attempt that was not made (pacing): the claim's count
    /// is taken back.
    pub counts: bool,
    /// For a message left `sending`, when its grace period starts (its lease
    /// ends then, its send time is kept); `None` clears both.
    pub grace_from: Option<DateTime<Utc>>,
    /// What else the attempt sets off.
    pub effects: Effects,
}

/// What an outbox message's end sets off besides its own row; a dialect
/// does these in the order of the fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Effects {
    /// Meta's ID for the user, which can differ from the number typed: a
    /// `whatsapp` identity of the lead, so later messages from it find it.
    pub identity: Option<String>,
    /// The approved template to queue in place of a message the closed
    /// window refused (when it has one and none was queued yet).
    pub template: Option<Value>,
    /// The user stopped marketing messages.
    pub opt_out: Option<OptOut>,
    /// The thread to flag for operators, and the account's fallback
    /// endpoints to send the lead to, unless a template was queued.
    pub flag: Option<Flag>,
}

/// A marketing opt-out Meta reported with a failed send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OptOut {
    /// The WhatsApp ID the message went to; `None`: every one the lead has.
    pub wa_id: Option<String>,
    /// Meta's error, for the consent history.
    pub evidence: String,
}

impl OptOut {
    /// The opt-out as the lead's consent history keeps it.
    pub(crate) fn consent(&self, at: DateTime<Utc>) -> super::ConsentRecord {
        super::ConsentRecord::marketing(false, OPT_OUT_SOURCE, at, Some(&self.evidence))
    }
}

/// Why WhatsApp will never reach a lead, for the thread's flag and the
/// fallback endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Flag {
    pub code: Option<i64>,
    pub reason: String,
}

impl SendOutcome {
    /// What this outcome of an attempt to send `item` does, at `now`.
    pub(crate) fn plan(&self, item: &OutboxItem, now: DateTime<Utc>) -> OutboxUpdate {
        let ended = |state, code: Option<i64>, error: &str| OutboxUpdate {
            state,
            message_id: None,
            delivery: None,
            next_attempt: None,
            code: Some(code),
            error: Some(Some(error.to_string())),
            counts: true,
            grace_from: None,
            effects: Effects::default(),
        };
        match self {
            SendOutcome::Sent { message_id, wa_id } => OutboxUpdate {
                message_id: message_id.clone(),
                delivery: Some(match item.kind {
                    OutboxKind::Whatsapp => "accepted",
                    OutboxKind::Notify => "delivered",
                }),
                code: Some(None),
                error: Some(None),
                effects: Effects {
                    identity: wa_id.clone(),
                    ..Effects::default()
                },
                ..ended("sent", None, "")
            },
            SendOutcome::Retry { at, code, error } => OutboxUpdate {
                next_attempt: Some(*at),
                ..ended("pending", *code, error)
            },
            SendOutcome::Uncertain { error } => OutboxUpdate {
                code: None,
                grace_from: Some(now),
                ..ended("sending", None, error)
            },
            SendOutcome::Failed {
                code,
                error,
                marketing_opt_out,
            } => OutboxUpdate {
                effects: Effects {
                    opt_out: marketing_opt_out.then(|| OptOut {
                        wa_id: item
                            .payload
                            .get("to")
                            .and_then(Value::as_str)
                            .map(|t| t.trim_start_matches('+').to_string()),
                        evidence: error.clone(),
                    }),
                    // An operator must reach a buyer WhatsApp could not; a
                    // CRM that refused is the account's to fix (metrics and
                    // logs say so).
                    flag: (item.kind == OutboxKind::Whatsapp).then(|| Flag {
                        code: *code,
                        reason: error.clone(),
                    }),
                    ..Effects::default()
                },
                ..ended("failed", *code, error)
            },
            SendOutcome::Fallback {
                code,
                error,
                payload,
            } => OutboxUpdate {
                effects: Effects {
                    template: Some(payload.clone()),
                    flag: Some(Flag {
                        code: Some(*code),
                        reason: error.clone(),
                    }),
                    ..Effects::default()
                },
                ..ended("failed", Some(*code), error)
            },
            SendOutcome::Cancelled { reason } => ended("cancelled", None, reason),
            SendOutcome::Deferred { at } => OutboxUpdate {
                next_attempt: Some(*at),
                code: None,
                error: None,
                counts: false,
                ..ended("pending", None, "")
            },
        }
    }
}

/// What a failed delivery status does to its message: its error, and what
/// that error sets off.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StatusFailure {
    pub code: Option<i64>,
    pub error: String,
    pub effects: Effects,
}

impl StatusRecord {
    /// The delivery status to keep for a message that has `stored`: the
    /// furthest of the two, as statuses only move forward.
    pub(crate) fn furthest(&self, stored: Option<String>) -> Option<String> {
        if status_rank(Some(self.status.as_str())) > status_rank(stored.as_deref()) {
            Some(self.status.as_str().to_string())
        } else {
            stored
        }
    }

    /// What this status, a failure, does to the message whose `payload` it
    /// is about: a session message the closed window refused gets its
    /// template queued in its place, a stopped user is on record as opted
    /// out of marketing, and otherwise the thread is flagged.
    pub(crate) fn failure(&self, payload: &Value) -> StatusFailure {
        let first = self.errors.get(0);
        let code = first.and_then(|e| e.get("code")).and_then(Value::as_i64);
        let detail = first
            .map(|e| {
                e.get("message")
                    .or_else(|| e.get("title"))
                    .and_then(Value::as_str)
                    .unwrap_or("failed")
                    .to_string()
            })
            .unwrap_or_else(|| "failed".into());
        let error = match code {
            Some(code) => format!("{code}: {detail}"),
            None => detail,
        };
        let session = payload.get("outcome").and_then(Value::as_str) == Some("session");
        let effects = Effects {
            identity: None,
            template: (code == Some(WINDOW_CLOSED) && session).then(|| payload.clone()),
            opt_out: (code == Some(MARKETING_STOPPED)).then(|| OptOut {
                wa_id: Some(self.recipient.clone()),
                evidence: error.clone(),
            }),
            flag: Some(Flag {
                code,
                reason: error.clone(),
            }),
        };
        StatusFailure {
            code,
            error,
            effects,
        }
    }
}

/// The message to queue in place of one the closed window refused: its
/// approved template, or `None` when it has none.
pub(crate) fn template_in_place(payload: &Value) -> Option<Value> {
    if payload.get("template").is_none_or(Value::is_null) {
        return None;
    }
    let mut payload = payload.clone();
    payload["outcome"] = Value::String("template".into());
    payload["text"] = Value::Null;
    Some(payload)
}

/// How far along a Meta status is; statuses only move forward.
fn status_rank(status: Option<&str>) -> u8 {
    match status {
        None => 0,
        Some("accepted") => 1,
        Some("sent") => 2,
        Some("delivered") => 3,
        Some("read") => 4,
        Some("failed") => 5,
        Some(_) => 0,
    }
}

/// The flag of a WhatsApp message that waited longer than `max_age` and
/// failed when claimed; none for other kinds.
pub(crate) fn expired_flag(kind: &str, max_age: Duration) -> Option<Flag> {
    // A buyer who never got their message must still be reached.
    (kind == OutboxKind::Whatsapp.as_str()).then(|| Flag {
        code: None,
        reason: super::queues::expired_reason(max_age),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::DeliveryStatus;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn item(kind: OutboxKind) -> OutboxItem {
        OutboxItem {
            id: "m1".into(),
            account: "acme".into(),
            lead_id: "l1".into(),
            kind,
            payload: json!({"to": "+919812345678", "outcome": "session"}),
            attempts: 1,
            created_at: at("2027-01-01T10:00:00Z"),
        }
    }

    fn now() -> DateTime<Utc> {
        at("2027-01-01T10:05:00Z")
    }

    #[test]
    fn a_sent_message_starts_as_accepted_and_keeps_the_users_whatsapp_id() {
        let sent = SendOutcome::Sent {
            message_id: Some("wamid.1".into()),
            wa_id: Some("919812345678".into()),
        };
        let plan = sent.plan(&item(OutboxKind::Whatsapp), now());
        assert_eq!(plan.state, "sent");
        assert_eq!(plan.message_id.as_deref(), Some("wamid.1"));
        assert_eq!(plan.delivery, Some("accepted"));
        assert_eq!((plan.code, plan.error), (Some(None), Some(None)));
        assert!(plan.counts && plan.grace_from.is_none());
        assert_eq!(plan.effects.identity.as_deref(), Some("919812345678"));
        assert!(plan.effects.flag.is_none());
        // An endpoint that accepted the lead has it: nothing more will come.
        let sent = SendOutcome::Sent {
            message_id: None,
            wa_id: None,
        };
        assert_eq!(
            sent.plan(&item(OutboxKind::Notify), now()).delivery,
            Some("delivered")
        );
    }

    #[test]
    fn a_retry_is_pending_until_its_time_with_its_error() {
        let retry = SendOutcome::Retry {
            at: at("2027-01-01T10:10:00Z"),
            code: Some(503),
            error: "unavailable".into(),
        };
        let plan = retry.plan(&item(OutboxKind::Notify), now());
        assert_eq!(plan.state, "pending");
        assert_eq!(plan.next_attempt, Some(at("2027-01-01T10:10:00Z")));
        assert_eq!(plan.code, Some(Some(503)));
        assert_eq!(plan.error, Some(Some("unavailable".into())));
        assert!(plan.counts && plan.grace_from.is_none());
        assert_eq!(plan.effects, Effects::default());
    }

    #[test]
    fn an_uncertain_send_stays_sending_and_waits_out_the_grace_period_from_now() {
        let uncertain = SendOutcome::Uncertain {
            error: "timed out".into(),
        };
        let plan = uncertain.plan(&item(OutboxKind::Whatsapp), now());
        assert_eq!(plan.state, "sending");
        assert_eq!(plan.grace_from, Some(now()));
        assert_eq!(plan.code, None, "the stored code stays");
        assert_eq!(plan.error, Some(Some("timed out".into())));
        assert!(plan.counts && plan.next_attempt.is_none());
        assert_eq!(plan.effects, Effects::default());
    }

    #[test]
    fn a_failed_whatsapp_message_flags_its_thread_and_records_an_opt_out() {
        let failed = SendOutcome::Failed {
            code: Some(131050),
            error: "131050: stopped".into(),
            marketing_opt_out: true,
        };
        let plan = failed.plan(&item(OutboxKind::Whatsapp), now());
        assert_eq!(plan.state, "failed");
        assert_eq!(plan.code, Some(Some(131050)));
        assert_eq!(
            plan.effects.opt_out,
            Some(OptOut {
                wa_id: Some("919812345678".into()),
                evidence: "131050: stopped".into()
            })
        );
        assert_eq!(
            plan.effects.flag,
            Some(Flag {
                code: Some(131050),
                reason: "131050: stopped".into()
            })
        );
        // An endpoint that refused for good is the account's to fix: no flag.
        let failed = SendOutcome::Failed {
            code: Some(400),
            error: "bad request".into(),
            marketing_opt_out: false,
        };
        let plan = failed.plan(&item(OutboxKind::Notify), now());
        assert_eq!(plan.state, "failed");
        assert_eq!(plan.effects, Effects::default());
    }

    #[test]
    fn a_closed_window_queues_the_template_else_flags_the_thread() {
        let template = json!({"to": "+919812345678", "template": {"name": "hello"}});
        let fallback = SendOutcome::Fallback {
            code: 131047,
            error: "131047: window closed".into(),
            payload: template.clone(),
        };
        let plan = fallback.plan(&item(OutboxKind::Whatsapp), now());
        assert_eq!(plan.state, "failed");
        assert_eq!(plan.code, Some(Some(131047)));
        assert_eq!(plan.effects.template, Some(template));
        assert_eq!(
            plan.effects.flag.map(|f| f.code),
            Some(Some(131047)),
            "flagged should no template be queued"
        );
    }

    #[test]
    fn a_cancelled_message_says_why_and_sets_nothing_off() {
        let cancelled = SendOutcome::Cancelled {
            reason: "taken over".into(),
        };
        let plan = cancelled.plan(&item(OutboxKind::Whatsapp), now());
        assert_eq!(plan.state, "cancelled");
        assert_eq!(plan.code, Some(None));
        assert_eq!(plan.error, Some(Some("taken over".into())));
        assert_eq!(plan.effects, Effects::default());
    }

    #[test]
    fn a_deferred_message_waits_without_the_attempt_counting() {
        let deferred = SendOutcome::Deferred {
            at: at("2027-01-01T10:06:00Z"),
        };
        let plan = deferred.plan(&item(OutboxKind::Whatsapp), now());
        assert_eq!(plan.state, "pending");
        assert_eq!(plan.next_attempt, Some(at("2027-01-01T10:06:00Z")));
        assert!(!plan.counts);
        assert_eq!(
            (plan.code, plan.error),
            (None, None),
            "its last error stays"
        );
        assert_eq!(plan.effects, Effects::default());
    }

    fn status(status: DeliveryStatus, errors: Value) -> StatusRecord {
        StatusRecord {
            message_id: "wamid.1".into(),
            status,
            at: now(),
            recipient: "919812345678".into(),
            errors,
            outbox_id: None,
        }
    }

    #[test]
    fn statuses_only_move_forward() {
        let delivered = status(DeliveryStatus::Delivered, json!([]));
        assert_eq!(
            delivered.furthest(Some("sent".into())).as_deref(),
            Some("delivered")
        );
        assert_eq!(
            delivered.furthest(Some("read".into())).as_deref(),
            Some("read")
        );
        assert_eq!(delivered.furthest(None).as_deref(), Some("delivered"));
    }

    #[test]
    fn a_failed_status_reads_metas_error_and_what_it_sets_off() {
        let session = json!({"outcome": "session", "template": {"name": "hello"}});
        let closed = status(
            DeliveryStatus::Failed,
            json!([{"code": 131047, "title": "Re-engagement message"}]),
        );
        let failure = closed.failure(&session);
        assert_eq!(failure.code, Some(131047));
        assert_eq!(failure.error, "131047: Re-engagement message");
        assert_eq!(failure.effects.template, Some(session.clone()));
        assert!(failure.effects.opt_out.is_none() && failure.effects.flag.is_some());
        // A template refused so is not replaced by itself.
        let template = json!({"outcome": "template"});
        assert!(closed.failure(&template).effects.template.is_none());

        let stopped = status(
            DeliveryStatus::Failed,
            json!([{"code": 131050, "message": "stopped"}]),
        );
        let failure = stopped.failure(&session);
        assert_eq!(
            failure.effects.opt_out,
            Some(OptOut {
                wa_id: Some("919812345678".into()),
                evidence: "131050: stopped".into()
            })
        );
        assert!(failure.effects.template.is_none());

        let bare = status(DeliveryStatus::Failed, json!([]));
        let failure = bare.failure(&session);
        assert_eq!((failure.code, failure.error.as_str()), (None, "failed"));
    }

    #[test]
    fn the_message_in_place_is_the_template_without_the_session_text() {
        let session = json!({"outcome": "session", "text": "hi", "template": {"name": "hello"}});
        assert_eq!(
            template_in_place(&session),
            Some(json!({"outcome": "template", "text": null, "template": {"name": "hello"}}))
        );
        let bare = json!({"outcome": "session", "text": "hi", "template": null});
        assert_eq!(template_in_place(&bare), None);
    }

    #[test]
    fn only_an_expired_whatsapp_message_flags_its_thread() {
        let day = Duration::from_secs(86_400);
        assert!(expired_flag("whatsapp", day).is_some_and(|f| f.code.is_none()));
        assert!(expired_flag("notify", day).is_none());
    }
}
