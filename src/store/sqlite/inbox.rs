//! The inbox's SQL for SQLite (see [`super::inbox`]).

use super::{load_state, now_text, parse_time, rows, survivor, time_text, trail, Sqlite};
use crate::store::inbox::{
    InboxBackend, Operator, OperatorLogin, ReplyQueued, Session, ThreadFilter, ThreadSummary,
};
use crate::store::queues::FirstReply;
use crate::store::{LeadState, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

fn operator_row(r: &rusqlite::Row) -> rusqlite::Result<Operator> {
    Ok(Operator {
        id: r.get("id")?,
        account: r.get("account_id")?,
        email: r.get("email")?,
        name: r.get("name")?,
    })
}

impl InboxBackend for Sqlite {
    async fn create_operator(
        &self,
        account: &str,
        email: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<Operator, StoreError> {
        let operator = Operator::new(account, email, name);
        let hash = password_hash.to_string();
        self.write(move |c| {
            let taken: Option<String> = c
                .prepare_cached("SELECT id FROM operators WHERE email = ?1")?
                .query_row(params![operator.email], |r| r.get(0))
                .optional()?;
            if taken.is_some() {
                return Err(operator.email_taken());
            }
            c.prepare_cached(
                "INSERT INTO operators (id, account_id, email, name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                operator.id,
                operator.account,
                operator.email,
                operator.name,
                hash,
                now_text()
            ])?;
            Ok(operator)
        })
        .await
    }

    async fn operators(
        &self,
        account: &str,
    ) -> Result<Vec<(Operator, crate::store::queues::Presence)>, StoreError> {
        let account = account.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT o.id, o.account_id, o.email, o.name, COALESCE(p.available, 0), p.seen_at \
                 FROM operators o LEFT JOIN presence p ON p.operator_id = o.id WHERE o.account_id = ?1 ORDER BY o.email",
            )?;
            let rows = stmt.query_map(params![account], |r| {
                Ok((
                    operator_row(r)?,
                    crate::store::queues::Presence {
                        available: r.get::<_, i64>(4)? == 1,
                        seen_at: r.get(5)?,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn operator_login(&self, email: &str) -> Result<Option<OperatorLogin>, StoreError> {
        let email = email.trim().to_lowercase();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, account_id, email, name, password_hash FROM operators WHERE email = ?1",
            )?
            .query_row(params![email], |r| {
                Ok(OperatorLogin {
                    operator: operator_row(r)?,
                    password_hash: r.get("password_hash")?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn create_session(
        &self,
        operator_id: &str,
        token_hash: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (operator_id, token_hash, csrf) = (
            operator_id.to_string(),
            token_hash.to_string(),
            csrf.to_string(),
        );
        self.write(move |c| {
            let now = now_text();
            // Expired sessions are cleared as new ones start.
            c.prepare_cached("DELETE FROM sessions WHERE expires_at < ?1")?
                .execute(params![now])?;
            c.prepare_cached(
                "INSERT INTO sessions (token_hash, operator_id, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![token_hash, operator_id, csrf, now, time_text(expires_at)])?;
            Ok(())
        })
        .await
    }

    async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        let token_hash = token_hash.to_string();
        self.read(move |c| {
            let found = c
                .prepare_cached(
                    "SELECT o.id, o.account_id, o.email, o.name, s.csrf, s.expires_at FROM sessions s \
                     JOIN operators o ON o.id = s.operator_id WHERE s.token_hash = ?1",
                )?
                .query_row(params![token_hash], |r| {
                    Ok((operator_row(r)?, r.get::<_, String>("csrf")?, r.get::<_, String>("expires_at")?))
                })
                .optional()?;
            Ok(found.and_then(|(operator, csrf, expires)| {
                let expires_at = parse_time(Some(expires))?;
                (expires_at > Utc::now()).then_some(Session {
                    operator,
                    csrf,
                    expires_at,
                })
            }))
        })
        .await
    }

    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let token_hash = token_hash.to_string();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?
                .execute(params![token_hash])?;
            Ok(())
        })
        .await
    }

    async fn threads(
        &self,
        account: &str,
        reader: Option<&str>,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadSummary>, StoreError> {
        let (account, reader) = (account.to_string(), reader.map(str::to_string));
        let filter = filter.clone();
        self.read(move |c| {
            let pattern = filter
                .q
                .as_deref()
                .map(|q| format!("%{}%", q.trim().replace(['%', '_'], "")));
            let mut stmt = c.prepare_cached(
                "SELECT * FROM ( \
                   SELECT l.id, l.name, l.phone, l.channel, l.playbook, l.updated_at AS activity_at, \
                     t.state, t.queue, t.flag, t.last_inbound_at, t.taken_by, t.queue_state, t.queued_at, \
                     CASE WHEN t.assignee LIKE 'agent:%' THEN substr(t.assignee, 7) ELSE (SELECT o.name FROM operators o WHERE o.id = t.assignee) END AS assignee, \
                     (SELECT json_extract(d.decision, '$.handoff.outcome') FROM decisions d \
                        WHERE d.lead_id = l.id ORDER BY d.at DESC, d.id DESC LIMIT 1) AS outcome, \
                     (SELECT m.text FROM messages m WHERE m.lead_id = l.id ORDER BY m.at DESC, m.id DESC LIMIT 1) AS last_text, \
                     (SELECT r.read_at FROM thread_reads r WHERE r.lead_id = l.id AND r.operator_id = ?2) AS read_at \
                   FROM leads l JOIN threads t ON t.lead_id = l.id \
                   WHERE l.account_id = ?1 AND l.merged_into IS NULL \
                     AND (?3 IS NULL OR t.queue = ?3) \
                     AND (?4 IS NULL OR l.playbook = ?4) \
                     AND (?5 IS NULL OR l.name LIKE ?5 OR l.phone LIKE ?5) \
                 ) WHERE (?6 IS NULL \
                     OR (?6 = 'human' AND state = 'human') \
                     OR (?6 = 'failed' AND flag IS NOT NULL) \
                     OR (?6 = 'waiting' AND queue_state = 'waiting') \
                     OR (?6 = 'blocked' AND outcome LIKE 'blocked%') \
                     OR (?6 = 'automated' AND state = 'automated' AND flag IS NULL AND COALESCE(outcome, '') NOT LIKE 'blocked%')) \
                 ORDER BY activity_at DESC, id DESC LIMIT ?7",
            )?;
            let rows = stmt.query_map(
                params![
                    account,
                    reader,
                    filter.queue,
                    filter.playbook,
                    pattern,
                    filter.state,
                    filter.limit.clamp(1, 500)
                ],
                |r| {
                    let activity: String = r.get("activity_at")?;
                    let read: Option<String> = r.get("read_at")?;
                    let unread = read.is_none_or(|read| read < activity);
                    Ok(ThreadSummary {
                        lead_id: r.get("id")?,
                        name: r.get("name")?,
                        phone: r.get("phone")?,
                        channel: r.get("channel")?,
                        playbook: r.get("playbook")?,
                        state: r.get("state")?,
                        queue: r.get("queue")?,
                        flag: r.get("flag")?,
                        taken_by: r.get("taken_by")?,
                        queue_state: r.get("queue_state")?,
                        queued_at: r.get("queued_at")?,
                        assignee: r.get("assignee")?,
                        outcome: r.get("outcome")?,
                        last_inbound_at: r.get("last_inbound_at")?,
                        last_text: r.get("last_text")?,
                        activity_at: activity,
                        unread,
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn mark_read(&self, operator_id: &str, lead_id: &str) -> Result<(), StoreError> {
        let (operator_id, lead_id) = (operator_id.to_string(), lead_id.to_string());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO thread_reads (operator_id, lead_id, read_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (operator_id, lead_id) DO UPDATE SET read_at = excluded.read_at",
            )?
            .execute(params![operator_id, lead_id, now_text()])?;
            Ok(())
        })
        .await
    }

    async fn lead_state(&self, account: &str, id: &str) -> Result<Option<LeadState>, StoreError> {
        let (account, id) = (account.to_string(), id.to_string());
        self.read(move |c| match survivor(c, &account, &id)? {
            Some(id) => Ok(Some(load_state(c, &account, &id, false)?)),
            None => Ok(None),
        })
        .await
    }

    async fn thread_events(&self, account: &str, lead_id: &str) -> Result<Vec<Value>, StoreError> {
        let (account, lead_id) = (account.to_string(), lead_id.to_string());
        self.read(move |c| {
            let Some(id) = survivor(c, &account, &lead_id)? else {
                return Ok(Vec::new());
            };
            rows(
                c,
                "SELECT at, actor, kind, text FROM thread_events WHERE lead_id = ?1 ORDER BY id",
                &id,
                |r| {
                    Ok(json!({
                        "at": r.get::<_, String>(0)?, "by": r.get::<_, String>(1)?,
                        "kind": r.get::<_, String>(2)?, "text": r.get::<_, Option<String>>(3)?,
                    }))
                },
            )
        })
        .await
    }

    async fn add_note(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
        text: &str,
    ) -> Result<bool, StoreError> {
        let (account, lead_id, actor, text) = (
            account.to_string(),
            lead_id.to_string(),
            actor.to_string(),
            text.to_string(),
        );
        self.write(move |c| {
            let Some(id) = survivor(c, &account, &lead_id)? else {
                return Ok(false);
            };
            trail(c, &account, &id, &actor, "note", Some(&text))?;
            Ok(true)
        })
        .await
    }

    async fn set_thread_owner(
        &self,
        account: &str,
        lead_id: &str,
        human: bool,
        actor: &str,
        operator: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (account, lead_id, actor) =
            (account.to_string(), lead_id.to_string(), actor.to_string());
        let operator = operator.map(str::to_string);
        self.write(move |c| {
            let Some(id) = survivor(c, &account, &lead_id)? else {
                return Ok(false);
            };
            let now = now_text();
            let changed = c
                .prepare_cached(
                    "UPDATE threads SET state = ?1, taken_by = ?2, updated_at = ?3 WHERE lead_id = ?4 AND account_id = ?5",
                )?
                .execute(params![
                    if human { "human" } else { "automated" },
                    human.then_some(actor.as_str()),
                    now,
                    id,
                    account
                ])?;
            if changed == 1 && human {
                // A person has it: the escalation clock stops, and an
                // operator who takes it over is the one it is given to.
                c.prepare_cached(
                    "UPDATE threads SET picked_up_at = COALESCE(picked_up_at, ?1), \
                     assignee = CASE WHEN queue_state IS NOT NULL THEN COALESCE(?2, assignee) ELSE assignee END, \
                     assigned_at = CASE WHEN queue_state IS NOT NULL AND ?2 IS NOT NULL AND (assignee IS NULL OR assignee <> ?2 OR queue_state IS NOT 'assigned') THEN ?1 ELSE assigned_at END, \
                     queue_state = CASE WHEN queue_state IS NOT NULL AND ?2 IS NOT NULL THEN 'assigned' ELSE queue_state END WHERE lead_id = ?3",
                )?
                .execute(params![now, operator, id])?;
            }
            if changed == 1 {
                trail(c, &account, &id, &actor, if human { "takeover" } else { "release" }, None)?;
            }
            Ok(changed == 1)
        })
        .await
    }

    async fn reassign(
        &self,
        account: &str,
        lead_id: &str,
        queue: &str,
        actor: &str,
        managed: bool,
    ) -> Result<bool, StoreError> {
        let (account, lead_id, queue, actor) = (
            account.to_string(),
            lead_id.to_string(),
            queue.to_string(),
            actor.to_string(),
        );
        self.write(move |c| {
            let Some(id) = survivor(c, &account, &lead_id)? else {
                return Ok(false);
            };
            // Into a queue with members it waits afresh (its escalation
            // clock restarts); into a label it leaves whoever had it.
            let changed = c
                .prepare_cached(
                    "UPDATE threads SET queue = ?1, updated_at = ?2, \
                     queue_state = CASE WHEN ?5 THEN 'waiting' ELSE NULL END, \
                     queued_at = CASE WHEN ?5 THEN ?2 ELSE NULL END, routed_by = ?6, \
                     assignee = NULL, assigned_at = NULL, picked_up_at = NULL \
                     WHERE lead_id = ?3 AND account_id = ?4",
                )?
                .execute(params![queue, now_text(), id, account, managed, actor])?;
            if changed == 1 {
                trail(c, &account, &id, &actor, "reassign", Some(&queue))?;
            }
            Ok(changed == 1)
        })
        .await
    }

    async fn queue_reply(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
        operator: Option<&str>,
        payload: &Value,
        text: &str,
    ) -> Result<Option<ReplyQueued>, StoreError> {
        let (account, lead_id, actor, payload, text) = (
            account.to_string(),
            lead_id.to_string(),
            actor.to_string(),
            payload.to_string(),
            text.to_string(),
        );
        let operator = operator.map(str::to_string);
        self.write(move |c| {
            let Some(id) = survivor(c, &account, &lead_id)? else {
                return Ok(None);
            };
            let now = now_text();
            let outbox_id = super::insert_reply(
                c,
                &account,
                &id,
                &payload,
                &format!("operator:{actor}"),
                &text,
                false,
                &now,
            )?;
            let (queue, queued_at, picked_up): (Option<String>, Option<String>, Option<String>) = c
                .prepare_cached("SELECT queue, queued_at, picked_up_at FROM threads WHERE lead_id = ?1")?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let first = match (picked_up, parse_time(queued_at)) {
                (None, Some(since)) => Some(FirstReply {
                    queue,
                    after: (Utc::now() - since).to_std().unwrap_or_default(),
                }),
                _ => None,
            };
            // A person replied: automation stays quiet on this thread until
            // it is released; the thread is picked up, and an operator
            // replying to a thread nobody has in a queue with members is given it.
            c.prepare_cached(
                "UPDATE threads SET state = 'human', taken_by = COALESCE(taken_by, ?1), updated_at = ?2, \
                 picked_up_at = COALESCE(picked_up_at, ?2), \
                 assigned_at = CASE WHEN queue_state IS NOT NULL AND ?4 IS NOT NULL AND (assignee IS NULL OR queue_state IS NOT 'assigned') THEN ?2 ELSE assigned_at END, \
                 assignee = CASE WHEN queue_state IS NOT NULL AND ?4 IS NOT NULL AND (assignee IS NULL OR queue_state IS NOT 'assigned') THEN ?4 ELSE assignee END, \
                 queue_state = CASE WHEN queue_state IS NOT NULL AND ?4 IS NOT NULL THEN 'assigned' ELSE queue_state END \
                 WHERE lead_id = ?3",
            )?
            .execute(params![actor, now, id, operator])?;
            c.prepare_cached("UPDATE leads SET updated_at = ?1 WHERE id = ?2")?
                .execute(params![now, id])?;
            trail(c, &account, &id, &actor, "reply", Some(&text))?;
            Ok(Some(ReplyQueued { outbox_id, first }))
        })
        .await
    }
}
