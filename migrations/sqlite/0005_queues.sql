-- Queues: who a thread is given to, since when it waits, whether a person
-- picked it up (the escalation clock), and which operators are available.

ALTER TABLE threads ADD COLUMN queue_state TEXT;   -- waiting, assigned, done; NULL: a queue the account does not manage
ALTER TABLE threads ADD COLUMN queued_at TEXT;     -- entered its current queue: the escalation clock starts
ALTER TABLE threads ADD COLUMN routed_by TEXT;     -- rule, escalation, or the person who moved it
ALTER TABLE threads ADD COLUMN assignee TEXT;      -- an operator's ID, or agent:<endpoint>
ALTER TABLE threads ADD COLUMN assigned_at TEXT;
ALTER TABLE threads ADD COLUMN picked_up_at TEXT;  -- the first human reply or takeover since it was queued
CREATE INDEX threads_waiting ON threads (account_id, queue, queue_state, queued_at);
CREATE INDEX threads_assigned ON threads (queue_state, assignee);

-- An operator's availability: marked in the inbox, and their last activity
-- there (an idle operator is not available).
CREATE TABLE presence (
    operator_id TEXT PRIMARY KEY REFERENCES operators (id),
    available   INTEGER NOT NULL DEFAULT 0,
    seen_at     TEXT,
    changed_at  TEXT NOT NULL
);

-- Round robin goes on after the member who got a queue's last thread.
CREATE TABLE queue_cursors (
    account_id  TEXT NOT NULL,
    queue       TEXT NOT NULL,
    last_member TEXT NOT NULL,
    PRIMARY KEY (account_id, queue)
);
