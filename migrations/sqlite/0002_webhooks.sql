-- Webhook events: stored before Meta (or a form, or a voice agent) gets its
-- answer, then processed by a worker. The unique key makes a redelivery a no-op.
CREATE TABLE webhook_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id   TEXT NOT NULL,
    source       TEXT NOT NULL,              -- whatsapp, instagram, leadgen, form, voice
    source_id    TEXT NOT NULL,
    payload      TEXT NOT NULL,              -- JSON
    received_at  TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending', -- pending, done, failed
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT,
    error        TEXT,
    processed_at TEXT,
    UNIQUE (account_id, source, source_id)
);
CREATE INDEX webhook_events_pending ON webhook_events (state, id);

-- Delivery statuses Meta reports for messages we sent.
CREATE TABLE whatsapp_statuses (
    account_id  TEXT NOT NULL,
    message_id  TEXT NOT NULL,               -- wamid
    status      TEXT NOT NULL,               -- sent, delivered, read, failed
    at          TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    errors      TEXT NOT NULL DEFAULT '[]',  -- JSON
    outbox_id   TEXT,                        -- from biz_opaque_callback_data
    PRIMARY KEY (account_id, message_id, status)
);
