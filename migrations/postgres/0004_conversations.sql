-- Conversations (as SQLite's 0006_conversations.sql): a lead's thread is
-- open from its first handoff message until Done, the API's close, or the
-- playbook's idle time; `ask` reports a field once per conversation;
-- marketing opt-outs are kept per WhatsApp user; form and lead-ad answers
-- without a field are kept on the lead.

ALTER TABLE threads ADD COLUMN opened_at TIMESTAMPTZ;  -- the open conversation's first handoff message was queued; NULL: none open
ALTER TABLE threads ADD COLUMN closed_at TIMESTAMPTZ;  -- when the last conversation closed
ALTER TABLE threads ADD COLUMN idle_days INTEGER;      -- the playbook's `idle` when it opened: closes after that long with no message
ALTER TABLE threads ADD COLUMN asked TEXT NOT NULL DEFAULT '[]'; -- fields `ask` reported in the open conversation (JSON)

ALTER TABLE leads ADD COLUMN answers TEXT NOT NULL DEFAULT '[]'; -- [{question, answer}] in the order asked (JSON)

-- A WhatsApp user's marketing preference (Meta's user_preferences webhook,
-- send error 131050): keyed on the WhatsApp ID, so it holds for every lead
-- with that number, also leads that arrive later.
CREATE TABLE marketing_preferences (
    account_id TEXT NOT NULL,
    wa_id      TEXT NOT NULL,                -- digits, as Meta writes WhatsApp IDs
    opted_out  BOOLEAN NOT NULL,             -- true stop, false resume
    at         TIMESTAMPTZ NOT NULL,         -- when the user said so (the latest wins)
    source     TEXT NOT NULL,                -- whatsapp user_preferences, whatsapp 131050
    PRIMARY KEY (account_id, wa_id)
);

-- Threads that already carried an automated WhatsApp message are open
-- conversations (with the default idle time); those marked Done are closed.
UPDATE threads SET
    opened_at = (SELECT MIN(o.created_at) FROM outbox o
                 WHERE o.lead_id = threads.lead_id AND o.kind = 'whatsapp' AND o.automated = TRUE),
    idle_days = 30
WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.lead_id = threads.lead_id AND o.kind = 'whatsapp' AND o.automated = TRUE);
UPDATE threads SET closed_at = updated_at, opened_at = NULL WHERE queue_state = 'done';
