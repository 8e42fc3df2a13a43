//! The queues' SQL for PostgreSQL (see [`super::queues`]); the same answers
//! as [`super::sqlite_queues`]. Several instances run passes on one
//! database: an assignment or an escalation pass is one transaction that
//! first takes the account's queue lock, so passes of one account run one
//! after the other and each sees what the one before it gave (no member
//! goes over capacity, no thread goes to two people). It then locks the
//! leads of the threads it may change, in ascending order, before changing
//! them, as every write that touches a lead does (see [`super::postgres`]);
//! nothing holding a lead waits for the queue lock. (Only when a thread
//! left the queue between the pass's look and its locks does the pass lock
//! one more lead, the next thread's, on its own.)

use super::{
    lock_hash, lock_survivor, q, retryable, retrying, time_text, trail, Postgres, Sql, RETRIES,
};
use crate::queues::{pick, Candidate, QueuePlan};
use crate::store::queues::{
    activity, agent_payload, assigned_text, escalated_text, member_views, Assigned, MemberView,
    OperatorRow, Presence, QueueBackend, Waiting, SYSTEM_ACTOR,
};
use crate::store::StoreError;
use chrono::{DateTime, SubsecRound, Utc};
use sqlx_core::row::Row;
use sqlx_postgres::PgConnection;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The first key of the queue locks. They are taken with two 32-bit keys,
/// which PostgreSQL keeps apart from single 64-bit keys (the identities'
/// locks, the migrator's): a queue lock never waits for one of those.
const QUEUE_LOCK_SPACE: i32 = 0x486f_5175; // "HoQu"

/// The second key of the account's queue lock: 32 bits of a hash of the
/// account. Two accounts sharing one only wait for each other.
fn queue_lock_key(account: &str) -> i32 {
    let hash = lock_hash(&["handoff queues", account]);
    i32::from_ne_bytes(((hash >> 32) as u32 ^ hash as u32).to_ne_bytes())
}

/// Takes the account's queue lock until the transaction ends.
async fn lock_queues(c: &mut PgConnection, account: &str) -> Sql<()> {
    q("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(QUEUE_LOCK_SPACE)
        .bind(queue_lock_key(account))
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Locks the rows of these leads, in ascending order (the order every
/// write locks leads in).
async fn lock_leads(c: &mut PgConnection, ids: &[String]) -> Sql<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    q("SELECT id FROM leads WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&ids)
        .fetch_all(&mut *c)
        .await?;
    Ok(())
}

/// The queue's members with their availability and load, in configured order.
async fn members(c: &mut PgConnection, account: &str, plan: &QueuePlan) -> Sql<Vec<MemberView>> {
    let now = Utc::now();
    // To the microsecond, as times are kept (and as SQLite compares its text).
    let idle_since =
        (now - chrono::Duration::from_std(plan.idle).unwrap_or_default()).trunc_subsecs(6);
    let mut loads: HashMap<String, u32> = HashMap::new();
    for r in q("SELECT assignee, COUNT(*) FROM threads WHERE queue_state = 'assigned' AND account_id = $1 \
                AND assignee IS NOT NULL GROUP BY assignee")
        .bind(account)
        .fetch_all(&mut *c)
        .await?
    {
        let (key, n): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
        loads.insert(key, n as u32);
    }
    let mut ops: HashMap<String, OperatorRow> = HashMap::new();
    for r in q("SELECT o.id, o.email, o.name, COALESCE(p.available, FALSE), p.seen_at, \
                  EXISTS (SELECT 1 FROM sessions s WHERE s.operator_id = o.id AND s.expires_at > $2) \
                FROM operators o LEFT JOIN presence p ON p.operator_id = o.id WHERE o.account_id = $1")
        .bind(account)
        .bind(now)
        .fetch_all(&mut *c)
        .await?
    {
        ops.insert(
            r.try_get(1)?,
            OperatorRow {
                id: r.try_get(0)?,
                name: r.try_get(2)?,
                available: r.try_get(3)?,
                seen_at: r.try_get(4)?,
                signed_in: r.try_get(5)?,
            },
        );
    }
    Ok(member_views(plan, &ops, &loads, idle_since))
}

/// Queues the agent's copy of a thread given to it, under the thread's
/// latest decision (every lead has one: each event is decided).
async fn notify_agent(
    c: &mut PgConnection,
    account: &str,
    lead_id: &str,
    endpoint: &str,
    queue: &str,
) -> Sql<()> {
    let payload = agent_payload(endpoint, queue);
    q("INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at, updated_at) \
       SELECT $1, $2, $3, d.id, 'notify', $4, $5, $5 FROM decisions d WHERE d.lead_id = $3 ORDER BY d.at DESC, d.id DESC LIMIT 1")
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(account)
        .bind(lead_id)
        .bind(payload.to_string())
        .bind(Utc::now())
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// The first column of each row, as text.
async fn ids_of(
    c: &mut PgConnection,
    query: sqlx_core::query::Query<'_, sqlx_postgres::Postgres, sqlx_postgres::PgArguments>,
) -> Sql<Vec<String>> {
    query
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect()
}

impl Postgres {
    async fn assign_waiting_once(&self, account: &str, plan: &QueuePlan) -> Sql<Vec<Assigned>> {
        let mut tx = self.pool.begin().await?;
        // First: every read below sees what the previous pass gave.
        lock_queues(&mut tx, account).await?;
        let waiting = ids_of(
            &mut tx,
            q("SELECT lead_id FROM threads WHERE account_id = $1 AND queue = $2 AND queue_state = 'waiting' \
               ORDER BY queued_at, lead_id LIMIT 500")
            .bind(account)
            .bind(&plan.name),
        )
        .await?;
        if waiting.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let mut list: Vec<Candidate> = members(&mut tx, account, plan)
            .await?
            .into_iter()
            .map(|m| m.candidate)
            .collect();
        let mut last: Option<String> =
            q("SELECT last_member FROM queue_cursors WHERE account_id = $1 AND queue = $2")
                .bind(account)
                .bind(&plan.name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        // Whichever the strategy, a pass gives as many threads as there is
        // room: lock those threads' leads at once, in order. A thread that
        // left the queue meanwhile makes room for the next, locked then.
        let room: usize = list
            .iter()
            .filter(|c| c.available)
            .map(|c| plan.capacity.saturating_sub(c.load) as usize)
            .sum();
        let first = &waiting[..room.min(waiting.len())];
        lock_leads(&mut tx, first).await?;
        let mut locked: HashSet<String> = first.iter().cloned().collect();
        let mut done = Vec::new();
        for lead_id in waiting {
            let Some(i) = pick(plan.strategy, &list, plan.capacity, last.as_deref()) else {
                break;
            };
            if !locked.contains(&lead_id) {
                lock_leads(&mut tx, std::slice::from_ref(&lead_id)).await?;
                locked.insert(lead_id.clone());
            }
            let now = Utc::now();
            let changed = q("UPDATE threads SET queue_state = 'assigned', assignee = $1, assigned_at = $2, updated_at = $2 \
                             WHERE lead_id = $3 AND queue = $4 AND queue_state = 'waiting'")
                .bind(&list[i].key)
                .bind(now)
                .bind(&lead_id)
                .bind(&plan.name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed != 1 {
                continue;
            }
            list[i].load += 1;
            last = Some(list[i].key.clone());
            let text = assigned_text(&list[i], plan);
            trail(
                &mut tx,
                account,
                &lead_id,
                SYSTEM_ACTOR,
                "assign",
                Some(&text),
            )
            .await?;
            if let Some(endpoint) = list[i].key.strip_prefix("agent:") {
                notify_agent(&mut tx, account, &lead_id, endpoint, &plan.name).await?;
            }
            done.push(Assigned {
                lead_id,
                queue: plan.name.clone(),
                member: list[i].key.clone(),
                name: list[i].name.clone(),
            });
        }
        // Only a pass that gave threads out moves the turn.
        if let (false, Some(last)) = (done.is_empty(), &last) {
            q(
                "INSERT INTO queue_cursors (account_id, queue, last_member) VALUES ($1, $2, $3) \
               ON CONFLICT (account_id, queue) DO UPDATE SET last_member = excluded.last_member",
            )
            .bind(account)
            .bind(&plan.name)
            .bind(last)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn escalate_once(
        &self,
        account: &str,
        queue: &str,
        to: &str,
        cutoff: DateTime<Utc>,
        after: &str,
    ) -> Sql<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        lock_queues(&mut tx, account).await?;
        let due = ids_of(
            &mut tx,
            q("SELECT lead_id FROM threads WHERE account_id = $1 AND queue = $2 \
               AND queue_state IN ('waiting', 'assigned') AND picked_up_at IS NULL AND queued_at <= $3 \
               ORDER BY queued_at, lead_id LIMIT 500")
            .bind(account)
            .bind(queue)
            .bind(cutoff),
        )
        .await?;
        lock_leads(&mut tx, &due).await?;
        let mut moved = Vec::new();
        for lead_id in due {
            let now = Utc::now();
            let changed = q("UPDATE threads SET queue = $1, queue_state = 'waiting', queued_at = $2, routed_by = 'escalation', \
                             assignee = NULL, assigned_at = NULL, picked_up_at = NULL, updated_at = $2 \
                             WHERE lead_id = $3 AND queue = $4 AND queue_state IN ('waiting', 'assigned') AND picked_up_at IS NULL")
                .bind(to)
                .bind(now)
                .bind(&lead_id)
                .bind(queue)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed == 1 {
                let text = escalated_text(queue, to, after);
                trail(
                    &mut tx,
                    account,
                    &lead_id,
                    SYSTEM_ACTOR,
                    "escalate",
                    Some(&text),
                )
                .await?;
                moved.push(lead_id);
            }
        }
        tx.commit().await?;
        Ok(moved)
    }

    async fn set_available_once(&self, operator_id: &str, available: bool) -> Sql<bool> {
        let mut tx = self.pool.begin().await?;
        let now = Utc::now();
        let before: Option<bool> =
            q("SELECT available FROM presence WHERE operator_id = $1 FOR UPDATE")
                .bind(operator_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        // Marking oneself available is activity too.
        q("INSERT INTO presence (operator_id, available, seen_at, changed_at) VALUES ($1, $2, $3, $3) \
           ON CONFLICT (operator_id) DO UPDATE SET available = excluded.available, seen_at = excluded.seen_at, \
           changed_at = CASE WHEN presence.available = excluded.available THEN presence.changed_at ELSE excluded.changed_at END")
            .bind(operator_id)
            .bind(available)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(before.unwrap_or(false) != available)
    }

    async fn touch_presence_once(&self, operator_id: &str, idle: Duration) -> Sql<bool> {
        let mut tx = self.pool.begin().await?;
        let now = Utc::now();
        let row = q("SELECT available, seen_at FROM presence WHERE operator_id = $1 FOR UPDATE")
            .bind(operator_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            // Another instance may be noting the same first activity.
            q("INSERT INTO presence (operator_id, available, seen_at, changed_at) VALUES ($1, FALSE, $2, $2) \
               ON CONFLICT (operator_id) DO NOTHING")
                .bind(operator_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(false);
        };
        let available: bool = row.try_get(0)?;
        let seen: Option<DateTime<Utc>> = row.try_get(1)?;
        let (note, woke) = activity(now, seen, available, idle);
        if note {
            q("UPDATE presence SET seen_at = $1 WHERE operator_id = $2")
                .bind(now)
                .bind(operator_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(woke)
    }

    async fn close_thread_once(&self, account: &str, lead_id: &str, actor: &str) -> Sql<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(id) = lock_survivor(&mut tx, account, lead_id).await? else {
            return Ok(false);
        };
        // Closes the conversation, and the queue entry when there is one;
        // one that idled out is closed already, as of then.
        super::settle_idle(&mut tx, &id).await?;
        let changed = q("UPDATE threads SET queue_state = CASE WHEN queue_state IN ('waiting', 'assigned') THEN 'done' ELSE queue_state END, \
                         closed_at = CASE WHEN opened_at IS NOT NULL THEN $1 ELSE closed_at END, opened_at = NULL, asked = '[]', updated_at = $1 \
                         WHERE lead_id = $2 AND account_id = $3 AND (queue_state IN ('waiting', 'assigned') OR opened_at IS NOT NULL)")
            .bind(Utc::now())
            .bind(&id)
            .bind(account)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 1 {
            trail(&mut tx, account, &id, actor, "done", None).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }
}

impl QueueBackend for Postgres {
    async fn assign_waiting(
        &self,
        account: &str,
        plan: &QueuePlan,
    ) -> Result<Vec<Assigned>, StoreError> {
        retrying!(self.assign_waiting_once(account, plan))
    }

    async fn escalate(
        &self,
        account: &str,
        queue: &str,
        to: &str,
        cutoff: DateTime<Utc>,
        after: &str,
    ) -> Result<Vec<String>, StoreError> {
        retrying!(self.escalate_once(account, queue, to, cutoff, after))
    }

    async fn set_available(&self, operator_id: &str, available: bool) -> Result<bool, StoreError> {
        retrying!(self.set_available_once(operator_id, available))
    }

    async fn touch_presence(&self, operator_id: &str, idle: Duration) -> Result<bool, StoreError> {
        retrying!(self.touch_presence_once(operator_id, idle))
    }

    async fn presence(&self, operator_id: &str) -> Result<Presence, StoreError> {
        let row = q("SELECT available, seen_at FROM presence WHERE operator_id = $1")
            .bind(operator_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Presence {
                available: r.try_get(0)?,
                seen_at: r.try_get::<Option<DateTime<Utc>>, _>(1)?.map(time_text),
            },
            None => Presence::default(),
        })
    }

    async fn queue_members(
        &self,
        account: &str,
        plan: &QueuePlan,
    ) -> Result<Vec<MemberView>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Ok(members(&mut c, account, plan).await?)
    }

    async fn waiting(
        &self,
        account: &str,
        queue: &str,
        limit: i64,
    ) -> Result<Vec<Waiting>, StoreError> {
        let rows = q("SELECT t.lead_id, l.name, t.queued_at FROM threads t JOIN leads l ON l.id = t.lead_id \
                      WHERE t.account_id = $1 AND t.queue = $2 AND t.queue_state = 'waiting' \
                      ORDER BY t.queued_at, t.lead_id LIMIT $3")
            .bind(account)
            .bind(queue)
            .bind(limit.clamp(1, 500))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(Waiting {
                lead_id: r.try_get(0)?,
                name: r.try_get(1)?,
                queued_at: r
                    .try_get::<Option<DateTime<Utc>>, _>(2)?
                    .map(time_text)
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    async fn close_thread(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        retrying!(self.close_thread_once(account, lead_id, actor))
    }

    async fn queue_counts(&self) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        let rows = q("SELECT account_id, queue, queue_state, COUNT(*) FROM threads \
                      WHERE queue_state IN ('waiting', 'assigned') GROUP BY account_id, queue, queue_state")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
        }
        // In byte order, as SQLite's GROUP BY gives them (along `threads_waiting`).
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_lock_keys_are_stable_per_account() {
        assert_eq!(queue_lock_key("acme"), queue_lock_key("acme"));
        assert_ne!(queue_lock_key("acme"), queue_lock_key("other"));
    }
}
