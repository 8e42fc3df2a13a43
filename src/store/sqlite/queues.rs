//! The queues' SQL for SQLite (see [`super::queues`]). One writer thread
//! makes every pass serial, so capacity holds without further locking.

use super::{now_text, parse_time, survivor, time_text, trail, Sqlite};
use crate::queues::{pick, Candidate, QueuePlan};
use crate::store::queues::{
    activity, agent_payload, assigned_text, escalated_text, member_views, Assigned, MemberView,
    OperatorRow, Presence, QueueBackend, Waiting, SYSTEM_ACTOR,
};
use crate::store::StoreError;
use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::time::Duration;

/// The queue's members with their availability and load, in configured order.
fn members(c: &Connection, account: &str, plan: &QueuePlan) -> Result<Vec<MemberView>, StoreError> {
    let now = Utc::now();
    // To the microsecond, as times are kept.
    let idle_since =
        (now - chrono::Duration::from_std(plan.idle).unwrap_or_default()).trunc_subsecs(6);
    let mut loads: HashMap<String, u32> = HashMap::new();
    let mut stmt = c.prepare_cached(
        "SELECT assignee, COUNT(*) FROM threads WHERE queue_state = 'assigned' AND account_id = ?1 \
         AND assignee IS NOT NULL GROUP BY assignee",
    )?;
    for row in stmt.query_map(params![account], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (key, n) = row?;
        loads.insert(key, n as u32);
    }
    let mut ops: HashMap<String, OperatorRow> = HashMap::new();
    let mut stmt = c.prepare_cached(
        "SELECT o.id, o.email, o.name, COALESCE(p.available, 0), p.seen_at, \
           EXISTS (SELECT 1 FROM sessions s WHERE s.operator_id = o.id AND s.expires_at > ?2) \
         FROM operators o LEFT JOIN presence p ON p.operator_id = o.id WHERE o.account_id = ?1",
    )?;
    for row in stmt.query_map(params![account, time_text(now)], |r| {
        Ok((
            r.get::<_, String>(1)?,
            OperatorRow {
                id: r.get(0)?,
                name: r.get(2)?,
                available: r.get::<_, i64>(3)? == 1,
                seen_at: parse_time(r.get(4)?),
                signed_in: r.get::<_, i64>(5)? == 1,
            },
        ))
    })? {
        let (email, op) = row?;
        ops.insert(email, op);
    }
    Ok(member_views(plan, &ops, &loads, idle_since))
}

/// Queues the agent's copy of a thread given to it, under the thread's
/// latest decision (every lead has one: each event is decided).
fn notify_agent(
    c: &Connection,
    account: &str,
    lead_id: &str,
    endpoint: &str,
    queue: &str,
) -> Result<(), StoreError> {
    let payload = agent_payload(endpoint, queue);
    let now = now_text();
    c.prepare_cached(
        "INSERT INTO outbox (id, account_id, lead_id, decision_id, kind, payload, created_at, updated_at) \
         SELECT ?1, ?2, ?3, d.id, 'notify', ?4, ?5, ?5 FROM decisions d WHERE d.lead_id = ?3 ORDER BY d.at DESC, d.id DESC LIMIT 1",
    )?
    .execute(params![uuid::Uuid::now_v7().to_string(), account, lead_id, payload.to_string(), now])?;
    Ok(())
}

impl QueueBackend for Sqlite {
    async fn assign_waiting(
        &self,
        account: &str,
        plan: &QueuePlan,
    ) -> Result<Vec<Assigned>, StoreError> {
        let (account, plan) = (account.to_string(), plan.clone());
        self.write(move |c| {
            let waiting: Vec<String> = {
                let mut stmt = c.prepare_cached(
                    "SELECT lead_id FROM threads WHERE account_id = ?1 AND queue = ?2 AND queue_state = 'waiting' \
                     ORDER BY queued_at, lead_id LIMIT 500",
                )?;
                let rows = stmt.query_map(params![account, plan.name], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            if waiting.is_empty() {
                return Ok(Vec::new());
            }
            let mut list: Vec<Candidate> = members(c, &account, &plan)?
                .into_iter()
                .map(|m| m.candidate)
                .collect();
            let mut last: Option<String> = c
                .prepare_cached("SELECT last_member FROM queue_cursors WHERE account_id = ?1 AND queue = ?2")?
                .query_row(params![account, plan.name], |r| r.get(0))
                .optional()?;
            let mut done = Vec::new();
            for lead_id in waiting {
                let Some(i) = pick(plan.strategy, &list, plan.capacity, last.as_deref()) else {
                    break;
                };
                let now = now_text();
                let changed = c
                    .prepare_cached(
                        "UPDATE threads SET queue_state = 'assigned', assignee = ?1, assigned_at = ?2, updated_at = ?2 \
                         WHERE lead_id = ?3 AND queue = ?4 AND queue_state = 'waiting'",
                    )?
                    .execute(params![list[i].key, now, lead_id, plan.name])?;
                if changed != 1 {
                    continue;
                }
                list[i].load += 1;
                last = Some(list[i].key.clone());
                let text = assigned_text(&list[i], &plan);
                trail(c, &account, &lead_id, SYSTEM_ACTOR, "assign", Some(&text))?;
                if let Some(endpoint) = list[i].key.strip_prefix("agent:") {
                    notify_agent(c, &account, &lead_id, endpoint, &plan.name)?;
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
                c.prepare_cached(
                    "INSERT INTO queue_cursors (account_id, queue, last_member) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (account_id, queue) DO UPDATE SET last_member = excluded.last_member",
                )?
                .execute(params![account, plan.name, last])?;
            }
            Ok(done)
        })
        .await
    }

    async fn escalate(
        &self,
        account: &str,
        queue: &str,
        to: &str,
        cutoff: DateTime<Utc>,
        after: &str,
    ) -> Result<Vec<String>, StoreError> {
        let (account, queue, to, after) = (
            account.to_string(),
            queue.to_string(),
            to.to_string(),
            after.to_string(),
        );
        self.write(move |c| {
            let due: Vec<String> = {
                let mut stmt = c.prepare_cached(
                    "SELECT lead_id FROM threads WHERE account_id = ?1 AND queue = ?2 \
                     AND queue_state IN ('waiting', 'assigned') AND picked_up_at IS NULL AND queued_at <= ?3 \
                     ORDER BY queued_at, lead_id LIMIT 500",
                )?;
                let rows = stmt.query_map(params![account, queue, time_text(cutoff)], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut moved = Vec::new();
            for lead_id in due {
                let now = now_text();
                let changed = c
                    .prepare_cached(
                        "UPDATE threads SET queue = ?1, queue_state = 'waiting', queued_at = ?2, routed_by = 'escalation', \
                         assignee = NULL, assigned_at = NULL, picked_up_at = NULL, updated_at = ?2 \
                         WHERE lead_id = ?3 AND queue = ?4 AND queue_state IN ('waiting', 'assigned') AND picked_up_at IS NULL",
                    )?
                    .execute(params![to, now, lead_id, queue])?;
                if changed == 1 {
                    let text = escalated_text(&queue, &to, &after);
                    trail(c, &account, &lead_id, SYSTEM_ACTOR, "escalate", Some(&text))?;
                    moved.push(lead_id);
                }
            }
            Ok(moved)
        })
        .await
    }

    async fn set_available(&self, operator_id: &str, available: bool) -> Result<bool, StoreError> {
        let operator_id = operator_id.to_string();
        self.write(move |c| {
            let now = now_text();
            let before: Option<i64> = c
                .prepare_cached("SELECT available FROM presence WHERE operator_id = ?1")?
                .query_row(params![operator_id], |r| r.get(0))
                .optional()?;
            // Marking oneself available is activity too.
            c.prepare_cached(
                "INSERT INTO presence (operator_id, available, seen_at, changed_at) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (operator_id) DO UPDATE SET available = excluded.available, seen_at = excluded.seen_at, \
                 changed_at = CASE WHEN presence.available = excluded.available THEN presence.changed_at ELSE excluded.changed_at END",
            )?
            .execute(params![operator_id, available as i64, now])?;
            Ok(before.unwrap_or(0) != available as i64)
        })
        .await
    }

    async fn touch_presence(&self, operator_id: &str, idle: Duration) -> Result<bool, StoreError> {
        let operator_id = operator_id.to_string();
        self.write(move |c| {
            let now = Utc::now();
            let row: Option<(i64, Option<String>)> = c
                .prepare_cached("SELECT available, seen_at FROM presence WHERE operator_id = ?1")?
                .query_row(params![operator_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((available, seen)) = row else {
                c.prepare_cached(
                    "INSERT INTO presence (operator_id, available, seen_at, changed_at) VALUES (?1, 0, ?2, ?2)",
                )?
                .execute(params![operator_id, time_text(now)])?;
                return Ok(false);
            };
            let (note, woke) = activity(now, parse_time(seen), available == 1, idle);
            if note {
                c.prepare_cached("UPDATE presence SET seen_at = ?1 WHERE operator_id = ?2")?
                    .execute(params![time_text(now), operator_id])?;
            }
            Ok(woke)
        })
        .await
    }

    async fn presence(&self, operator_id: &str) -> Result<Presence, StoreError> {
        let operator_id = operator_id.to_string();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT available, seen_at FROM presence WHERE operator_id = ?1")?
                    .query_row(params![operator_id], |r| {
                        Ok(Presence {
                            available: r.get::<_, i64>(0)? == 1,
                            seen_at: r.get(1)?,
                        })
                    })
                    .optional()?
                    .unwrap_or_default(),
            )
        })
        .await
    }

    async fn queue_members(
        &self,
        account: &str,
        plan: &QueuePlan,
    ) -> Result<Vec<MemberView>, StoreError> {
        let (account, plan) = (account.to_string(), plan.clone());
        self.read(move |c| members(c, &account, &plan)).await
    }

    async fn waiting(
        &self,
        account: &str,
        queue: &str,
        limit: i64,
    ) -> Result<Vec<Waiting>, StoreError> {
        let (account, queue) = (account.to_string(), queue.to_string());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT t.lead_id, l.name, t.queued_at FROM threads t JOIN leads l ON l.id = t.lead_id \
                 WHERE t.account_id = ?1 AND t.queue = ?2 AND t.queue_state = 'waiting' \
                 ORDER BY t.queued_at, t.lead_id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![account, queue, limit.clamp(1, 500)], |r| {
                Ok(Waiting {
                    lead_id: r.get(0)?,
                    name: r.get(1)?,
                    queued_at: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn close_thread(
        &self,
        account: &str,
        lead_id: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let (account, lead_id, actor) =
            (account.to_string(), lead_id.to_string(), actor.to_string());
        self.write(move |c| {
            let Some(id) = survivor(c, &account, &lead_id)? else {
                return Ok(false);
            };
            // Closes the conversation, and the queue entry when there is one;
            // one that idled out is closed already, as of then.
            super::settle_idle(c, &id)?;
            let changed = c
                .prepare_cached(
                    "UPDATE threads SET queue_state = CASE WHEN queue_state IN ('waiting', 'assigned') THEN 'done' ELSE queue_state END, \
                     closed_at = CASE WHEN opened_at IS NOT NULL THEN ?1 ELSE closed_at END, opened_at = NULL, asked = '[]', updated_at = ?1 \
                     WHERE lead_id = ?2 AND account_id = ?3 AND (queue_state IN ('waiting', 'assigned') OR opened_at IS NOT NULL)",
                )?
                .execute(params![now_text(), id, account])?;
            if changed == 1 {
                trail(c, &account, &id, &actor, "done", None)?;
            }
            Ok(changed == 1)
        })
        .await
    }

    async fn queue_counts(&self) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT account_id, queue, queue_state, COUNT(*) FROM threads \
                 WHERE queue_state IN ('waiting', 'assigned') GROUP BY account_id, queue, queue_state",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
