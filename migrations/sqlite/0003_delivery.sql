-- Delivery: outbox leases and in-flight sends, Meta's message IDs and
-- statuses, fallbacks, threads flagged for operators, disabled endpoints.

ALTER TABLE outbox ADD COLUMN automated INTEGER NOT NULL DEFAULT 1; -- 0: a person's reply, sent even on a taken-over thread
ALTER TABLE outbox ADD COLUMN next_attempt TEXT;     -- not before this time
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;      -- the worker that claimed it
ALTER TABLE outbox ADD COLUMN sending_since TEXT;    -- a send started: it may have reached Meta
ALTER TABLE outbox ADD COLUMN message_id TEXT;       -- Meta's wamid
ALTER TABLE outbox ADD COLUMN delivery TEXT;         -- Meta's latest status: sent, delivered, read, failed
ALTER TABLE outbox ADD COLUMN error_code INTEGER;    -- Meta's code, or the endpoint's HTTP status
ALTER TABLE outbox ADD COLUMN error TEXT;
ALTER TABLE outbox ADD COLUMN replaces TEXT;         -- the message this one falls back from
ALTER TABLE outbox ADD COLUMN updated_at TEXT;
CREATE INDEX outbox_message ON outbox (message_id);
CREATE INDEX outbox_lead ON outbox (lead_id);

ALTER TABLE threads ADD COLUMN flag TEXT;            -- delivery_failed, ...: needs an operator
ALTER TABLE threads ADD COLUMN flag_reason TEXT;

CREATE TABLE endpoint_state (
    account_id  TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    disabled_at TEXT,                                -- set when the endpoint answered 410 Gone
    reason      TEXT,
    PRIMARY KEY (account_id, endpoint)
);
