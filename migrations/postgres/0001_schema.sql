-- The PostgreSQL schema: the same tables and columns as migrations/sqlite/
-- 0001 to 0003 together, in PostgreSQL's types. Times are TIMESTAMPTZ (the
-- store reads and writes them as UTC, to the microsecond, as the SQLite
-- store's RFC 3339 text is); JSON is kept as the text the store wrote, so a
-- lead reads back byte for byte as it does from SQLite. Applied by sqlx's
-- migrator, which holds an advisory lock so that instances starting together
-- migrate once.

CREATE TABLE leads (
    id            TEXT PRIMARY KEY,          -- the shared lead ID (UUID v7)
    account_id    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    name          TEXT,
    first_name    TEXT,
    phone         TEXT,                      -- E.164
    email         TEXT,
    language      TEXT,
    channel       TEXT,                      -- the channel it first came in by
    intent        TEXT,
    playbook      TEXT,
    fields        TEXT NOT NULL DEFAULT '{}', -- JSON object
    tags          TEXT NOT NULL DEFAULT '[]', -- JSON array
    merged_into   TEXT                       -- set when this lead turned out to be another
);
CREATE INDEX leads_account ON leads (account_id, updated_at);

CREATE TABLE identities (
    account_id TEXT NOT NULL,
    kind       TEXT NOT NULL,                -- phone, email, whatsapp, instagram, external
    value      TEXT NOT NULL,
    lead_id    TEXT NOT NULL REFERENCES leads (id),
    PRIMARY KEY (account_id, kind, value)
);
CREATE INDEX identities_lead ON identities (lead_id);

CREATE TABLE consents (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id TEXT NOT NULL,
    lead_id    TEXT NOT NULL REFERENCES leads (id),
    channel    TEXT NOT NULL,                -- whatsapp, whatsapp_marketing
    granted    BOOLEAN NOT NULL,
    source     TEXT NOT NULL,                -- api, web_form, voice, whatsapp, ...
    at         TIMESTAMPTZ NOT NULL,
    evidence   TEXT
);
CREATE INDEX consents_lead ON consents (lead_id, id);

CREATE TABLE messages (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id TEXT NOT NULL,
    lead_id    TEXT NOT NULL REFERENCES leads (id),
    channel    TEXT NOT NULL,
    sender     TEXT NOT NULL,                -- lead, business, agent, an operator
    text       TEXT NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX messages_lead ON messages (lead_id, at);

CREATE TABLE decisions (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    lead_id      TEXT NOT NULL REFERENCES leads (id),
    at           TIMESTAMPTZ NOT NULL,
    playbook     TEXT NOT NULL,
    ruleset_hash TEXT NOT NULL,
    rules        TEXT NOT NULL,              -- JSON array of rule names
    decision     TEXT NOT NULL,              -- JSON
    trace        TEXT NOT NULL               -- JSON
);
CREATE INDEX decisions_lead ON decisions (lead_id, at);

CREATE TABLE threads (
    lead_id          TEXT PRIMARY KEY REFERENCES leads (id),
    account_id       TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'automated', -- automated, human
    queue            TEXT,
    last_inbound_at  TIMESTAMPTZ,            -- the user's last WhatsApp message (the 24-hour window)
    updated_at       TIMESTAMPTZ NOT NULL,
    flag             TEXT,                   -- delivery_failed, ...: needs an operator
    flag_reason      TEXT
);
-- The outbox claim cancels automated messages of threads a person took over.
CREATE INDEX threads_human ON threads (lead_id) WHERE state = 'human';

CREATE TABLE outbox (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    lead_id       TEXT NOT NULL REFERENCES leads (id),
    decision_id   TEXT NOT NULL REFERENCES decisions (id),
    kind          TEXT NOT NULL,             -- whatsapp, notify
    payload       TEXT NOT NULL,             -- JSON
    state         TEXT NOT NULL DEFAULT 'pending', -- pending, sending, sent, failed, cancelled
    attempts      BIGINT NOT NULL DEFAULT 0,
    lease_until   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    automated     BOOLEAN NOT NULL DEFAULT TRUE, -- false: a person's reply, sent even on a taken-over thread
    next_attempt  TIMESTAMPTZ,               -- not before this time
    lease_owner   TEXT,                      -- the worker (of whichever instance) that claimed it
    sending_since TIMESTAMPTZ,               -- a send started: it may have reached Meta
    message_id    TEXT,                      -- Meta's wamid
    delivery      TEXT,                      -- Meta's latest status: sent, delivered, read, failed
    error_code    BIGINT,                    -- Meta's code, or the endpoint's HTTP status
    error         TEXT,
    replaces      TEXT,                      -- the message this one falls back from
    updated_at    TIMESTAMPTZ
);
-- The claim reads each state oldest first.
CREATE INDEX outbox_pending ON outbox (state, created_at, id);
CREATE INDEX outbox_message ON outbox (message_id);
CREATE INDEX outbox_lead ON outbox (lead_id);
CREATE INDEX outbox_replaces ON outbox (replaces) WHERE replaces IS NOT NULL;

-- Source IDs already processed. A request claims its key by inserting the row
-- first (ON CONFLICT DO NOTHING): the same key arriving at another instance
-- meanwhile waits for that transaction and is then answered as a replay.
CREATE TABLE processed (
    account_id  TEXT NOT NULL,
    source      TEXT NOT NULL,               -- api, webhook:whatsapp, ...
    source_id   TEXT NOT NULL,               -- Idempotency-Key, wamid, mid, leadgen_id, ...
    at          TIMESTAMPTZ NOT NULL,
    response    TEXT,                        -- the answer given, replayed on a retry
    PRIMARY KEY (account_id, source, source_id)
);

-- Webhook events: stored before Meta (or a form, or a voice agent) gets its
-- answer, then processed by a worker. The unique key makes a redelivery to
-- any instance a no-op; `lease_until` lets one instance's worker at a time
-- hold a pending event.
CREATE TABLE webhook_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   TEXT NOT NULL,
    source       TEXT NOT NULL,              -- whatsapp, instagram, leadgen, form, voice
    source_id    TEXT NOT NULL,
    payload      TEXT NOT NULL,              -- JSON
    received_at  TIMESTAMPTZ NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending', -- pending, done, failed
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_attempt TIMESTAMPTZ,
    error        TEXT,
    processed_at TIMESTAMPTZ,
    lease_until  TIMESTAMPTZ,                -- claimed by a worker until then
    UNIQUE (account_id, source, source_id)
);
CREATE INDEX webhook_events_pending ON webhook_events (id) WHERE state = 'pending';

-- Delivery statuses Meta reports for messages we sent.
CREATE TABLE whatsapp_statuses (
    account_id  TEXT NOT NULL,
    message_id  TEXT NOT NULL,               -- wamid
    status      TEXT NOT NULL,               -- sent, delivered, read, failed
    at          TIMESTAMPTZ NOT NULL,
    recipient   TEXT NOT NULL,
    errors      TEXT NOT NULL DEFAULT '[]',  -- JSON
    outbox_id   TEXT,                        -- from biz_opaque_callback_data
    PRIMARY KEY (account_id, message_id, status)
);

CREATE TABLE endpoint_state (
    account_id  TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    disabled_at TIMESTAMPTZ,                 -- set when the endpoint answered 410 Gone
    reason      TEXT,
    PRIMARY KEY (account_id, endpoint)
);
