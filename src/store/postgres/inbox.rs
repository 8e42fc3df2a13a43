//! The inbox's SQL for PostgreSQL (see [`super::inbox`]); the same answers
//! as [`super::sqlite_inbox`]. Writes that touch a thread lock its lead
//! first, as every other write does.

use super::{
    load_state, lock_survivor, q, survivor, text_or_null, time_text, trail, Postgres, Sql,
};
use crate::store::inbox::{
    InboxBackend, Operator, OperatorLogin, ReplyQueued, Session, ThreadFilter, ThreadSummary,
};
use crate::store::queues::FirstReply;
use crate::store::{LeadState, StoreError};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx_core::row::Row;
use sqlx_postgres::PgRow;

fn operator_row(r: &PgRow) -> Sql<Operator> {
    Ok(Operator {
        id: r.try_get("id")?,
        account: r.try_get("account_id")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
    })
}

impl InboxBackend for Postgres {
    async fn create_operator(
        &self,
        account: &str,
        email: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<Operator, StoreError> {
        let operator = Operator::new(account, email, name);
        let inserted = q("INSERT INTO operators (id, account_id, email, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING")
            .bind(&operator.id)
            .bind(&operator.account)
            .bind(&operator.email)
            .bind(&operator.name)
            .bind(password_hash)
            .bind(Utc::now())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if inserted == 0 {
            return Err(operator.email_taken());
        }
        Ok(operator)
    }

    async fn operators(
        &self,
        account: &str,
    ) -> Result<Vec<(Operator, crate::store::queues::Presence)>, StoreError> {
        let rows = q("SELECT o.id, o.account_id, o.email, o.name, COALESCE(p.available, FALSE) AS available, p.seen_at \
                      FROM operators o LEFT JOIN presence p ON p.operator_id = o.id WHERE o.account_id = $1 ORDER BY o.email")
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push((
                operator_row(r)?,
                crate::store::queues::Presence {
                    available: r.try_get("available")?,
                    seen_at: r
                        .try_get::<Option<DateTime<Utc>>, _>("seen_at")?
                        .map(time_text),
                },
            ));
        }
        Ok(out)
    }

    async fn operator_login(&self, email: &str) -> Result<Option<OperatorLogin>, StoreError> {
        let row =
            q("SELECT id, account_id, email, name, password_hash FROM operators WHERE email = $1")
                .bind(email.trim().to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(r) => Some(OperatorLogin {
                operator: operator_row(&r)?,
                password_hash: r.try_get("password_hash")?,
            }),
            None => None,
        })
    }

    async fn create_session(
        &self,
        operator_id: &str,
        token_hash: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = Utc::now();
        // Expired sessions are cleared as new ones start.
        q("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        q("INSERT INTO sessions (token_hash, operator_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(token_hash)
            .bind(operator_id)
            .bind(csrf)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        let row = q("SELECT o.id, o.account_id, o.email, o.name, s.csrf, s.expires_at FROM sessions s \
                     JOIN operators o ON o.id = s.operator_id WHERE s.token_hash = $1 AND s.expires_at > $2")
            .bind(token_hash)
            .bind(Utc::now())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(Session {
                operator: operator_row(&r)?,
                csrf: r.try_get("csrf")?,
                expires_at: r.try_get("expires_at")?,
            }),
            None => None,
        })
    }

    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        q("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn threads(
        &self,
        account: &str,
        reader: Option<&str>,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadSummary>, StoreError> {
        let pattern = filter
            .q
            .as_deref()
            .map(|q| format!("%{}%", q.trim().replace(['%', '_'], "")));
        let rows = q("SELECT * FROM ( \
                   SELECT l.id, l.name, l.phone, l.channel, l.playbook, l.updated_at AS activity_at, \
                     t.state, t.queue, t.flag, t.last_inbound_at, t.taken_by, t.queue_state, t.queued_at, \
                     CASE WHEN t.assignee LIKE 'agent:%' THEN substr(t.assignee, 7) ELSE (SELECT o.name FROM operators o WHERE o.id = t.assignee) END AS assignee, \
                     (SELECT d.decision::json -> 'handoff' ->> 'outcome' FROM decisions d \
                        WHERE d.lead_id = l.id ORDER BY d.at DESC, d.id DESC LIMIT 1) AS outcome, \
                     (SELECT m.text FROM messages m WHERE m.lead_id = l.id ORDER BY m.at DESC, m.id DESC LIMIT 1) AS last_text, \
                     (SELECT r.read_at FROM thread_reads r WHERE r.lead_id = l.id AND r.operator_id = $2) AS read_at \
                   FROM leads l JOIN threads t ON t.lead_id = l.id \
                   WHERE l.account_id = $1 AND l.merged_into IS NULL \
                     AND ($3::text IS NULL OR t.queue = $3) \
                     AND ($4::text IS NULL OR l.playbook = $4) \
                     AND ($5::text IS NULL OR l.name ILIKE $5 OR l.phone ILIKE $5) \
                 ) AS x WHERE ($6::text IS NULL \
                     OR ($6 = 'human' AND state = 'human') \
                     OR ($6 = 'failed' AND flag IS NOT NULL) \
                     OR ($6 = 'waiting' AND queue_state = 'waiting') \
                     OR ($6 = 'blocked' AND outcome LIKE 'blocked%') \
                     OR ($6 = 'automated' AND state = 'automated' AND flag IS NULL AND COALESCE(outcome, '') NOT LIKE 'blocked%')) \
                 ORDER BY activity_at DESC, id DESC LIMIT $7")
            .bind(account)
            .bind(reader)
            .bind(&filter.queue)
            .bind(&filter.playbook)
            .bind(pattern)
            .bind(&filter.state)
            .bind(filter.limit.clamp(1, 500))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let activity: DateTime<Utc> = r.try_get("activity_at")?;
            let read: Option<DateTime<Utc>> = r.try_get("read_at")?;
            let time = |t: Option<DateTime<Utc>>| t.map(time_text);
            out.push(ThreadSummary {
                lead_id: r.try_get("id")?,
                name: r.try_get("name")?,
                phone: r.try_get("phone")?,
                channel: r.try_get("channel")?,
                playbook: r.try_get("playbook")?,
                state: r.try_get("state")?,
                queue: r.try_get("queue")?,
                flag: r.try_get("flag")?,
                taken_by: r.try_get("taken_by")?,
                queue_state: r.try_get("queue_state")?,
                queued_at: time(r.try_get("queued_at")?),
                assignee: r.try_get("assignee")?,
                outcome: r.try_get("outcome")?,
                last_inbound_at: time(r.try_get("last_inbound_at")?),
                last_text: r.try_get("last_text")?,
                activity_at: time_text(activity),
                unread: read.is_none_or(|read| read < activity),
            });
        }
        Ok(out)
    }

    async fn mark_read(&self, operator_id: &str, lead_id: &str) -> Result<(), StoreError> {
        q(
            "INSERT INTO thread_reads (operator_id, lead_id, read_at) VALUES ($1, $2, $3) \
           ON CONFLICT (operator_id, lead_id) DO UPDATE SET read_at = excluded.read_at",
        )
        .bind(operator_id)
        .bind(lead_id)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn lead_state(&self, account: &str, id: &str) -> Result<Option<LeadState>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Ok(match survivor(&mut c, account, id).await? {
            Some(id) => Some(load_state(&mut c, account, &id, false).await?),
            None => None,
        })
    }

    async fn thread_events(&self, account: &str, lead_id: &str) -> Result<Vec<Value>, StoreError> {
        let mut c = self.pool.acquire().await?;
        let Some(id) = survivor(&mut c, account, lead_id).await? else {
            return Ok(Vec::new());
        };
        let rows =
            q("SELECT at, actor, kind, text FROM thread_events WHERE lead_id = $1 ORDER BY id")
                .bind(&id)
                .fetch_all(&mut *c)
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(json!({
                "at": time_text(r.try_get("at")?),
                "by": r.try_get::<String, _>("actor")?,
                "kind": r.try_get::<String, _>("kind")?,
                "text": text_or_null(r.try_get("text")?),
            }));
        }
        Ok(out)
    }

    async fn add_note(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
        text: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(id) = lock_survivor(&mut tx, account, lead_id).await? else {
            return Ok(false);
        };
        trail(&mut tx, account, &id, actor, "note", Some(text)).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_thread_owner(
        &self,
        account: &str,
        lead_id: &str,
        human: bool,
        actor: &str,
        operator: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(id) = lock_survivor(&mut tx, account, lead_id).await? else {
            return Ok(false);
        };
        let now = Utc::now();
        let changed = q("UPDATE threads SET state = $1, taken_by = $2, updated_at = $3 WHERE lead_id = $4 AND account_id = $5")
            .bind(if human { "human" } else { "automated" })
            .bind(human.then_some(actor))
            .bind(now)
            .bind(&id)
            .bind(account)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 1 && human {
            // A person has it: the escalation clock stops, and an
            // operator who takes it over is the one it is given to.
            q("UPDATE threads SET picked_up_at = COALESCE(picked_up_at, $1), \
               assignee = CASE WHEN queue_state IS NOT NULL THEN COALESCE($2, assignee) ELSE assignee END, \
               assigned_at = CASE WHEN queue_state IS NOT NULL AND $2 IS NOT NULL AND (assignee IS NULL OR assignee <> $2 OR queue_state IS DISTINCT FROM 'assigned') THEN $1 ELSE assigned_at END, \
               queue_state = CASE WHEN queue_state IS NOT NULL AND $2 IS NOT NULL THEN 'assigned' ELSE queue_state END WHERE lead_id = $3")
                .bind(now)
                .bind(operator)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        if changed == 1 {
            let kind = if human { "takeover" } else { "release" };
            trail(&mut tx, account, &id, actor, kind, None).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn reassign(
        &self,
        account: &str,
        lead_id: &str,
        queue: &str,
        actor: &str,
        managed: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(id) = lock_survivor(&mut tx, account, lead_id).await? else {
            return Ok(false);
        };
        // Into a queue with members it waits afresh (its escalation
        // clock restarts); into a label it leaves whoever had it.
        let changed = q("UPDATE threads SET queue = $1, updated_at = $2, \
               queue_state = CASE WHEN $5 THEN 'waiting' ELSE NULL END, \
               queued_at = CASE WHEN $5 THEN $2 ELSE NULL END, routed_by = $6, \
               assignee = NULL, assigned_at = NULL, picked_up_at = NULL \
               WHERE lead_id = $3 AND account_id = $4")
        .bind(queue)
        .bind(Utc::now())
        .bind(&id)
        .bind(account)
        .bind(managed)
        .bind(actor)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            trail(&mut tx, account, &id, actor, "reassign", Some(queue)).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
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
        let mut tx = self.pool.begin().await?;
        let Some(id) = lock_survivor(&mut tx, account, lead_id).await? else {
            return Ok(None);
        };
        let now = Utc::now();
        let outbox_id = super::insert_reply(
            &mut tx,
            account,
            &id,
            payload,
            &format!("operator:{actor}"),
            text,
            false,
            now,
        )
        .await?;
        let r = q("SELECT queue, queued_at, picked_up_at FROM threads WHERE lead_id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let queue: Option<String> = r.try_get(0)?;
        let queued_at: Option<DateTime<Utc>> = r.try_get(1)?;
        let picked_up: Option<DateTime<Utc>> = r.try_get(2)?;
        let first = match (picked_up, queued_at) {
            (None, Some(since)) => Some(FirstReply {
                queue,
                after: (Utc::now() - since).to_std().unwrap_or_default(),
            }),
            _ => None,
        };
        // A person replied: automation stays quiet on this thread until
        // it is released; the thread is picked up, and an operator
        // replying to a thread nobody has in a queue with members is given it.
        q("UPDATE threads SET state = 'human', taken_by = COALESCE(taken_by, $1), updated_at = $2, \
           picked_up_at = COALESCE(picked_up_at, $2), \
           assigned_at = CASE WHEN queue_state IS NOT NULL AND $4 IS NOT NULL AND (assignee IS NULL OR queue_state IS DISTINCT FROM 'assigned') THEN $2 ELSE assigned_at END, \
           assignee = CASE WHEN queue_state IS NOT NULL AND $4 IS NOT NULL AND (assignee IS NULL OR queue_state IS DISTINCT FROM 'assigned') THEN $4 ELSE assignee END, \
           queue_state = CASE WHEN queue_state IS NOT NULL AND $4 IS NOT NULL THEN 'assigned' ELSE queue_state END \
           WHERE lead_id = $3")
            .bind(actor)
            .bind(now)
            .bind(&id)
            .bind(operator)
            .execute(&mut *tx)
            .await?;
        q("UPDATE leads SET updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        trail(&mut tx, account, &id, actor, "reply", Some(text)).await?;
        tx.commit().await?;
        Ok(Some(ReplyQueued { outbox_id, first }))
    }
}
