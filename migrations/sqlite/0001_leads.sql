-- Leads, their identities across channels, consents, transcripts, decisions,
-- threads, the outbox, and the source IDs already processed.

CREATE TABLE leads (
    id            TEXT PRIMARY KEY,          -- the shared lead ID (UUID v7)
    account_id    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
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
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    lead_id    TEXT NOT NULL REFERENCES leads (id),
    channel    TEXT NOT NULL,                -- whatsapp
    granted    INTEGER NOT NULL,             -- 1 opt-in, 0 opt-out
    source     TEXT NOT NULL,                -- api, web_form, voice, whatsapp, ...
    at         TEXT NOT NULL,
    evidence   TEXT
);
CREATE INDEX consents_lead ON consents (lead_id, id);

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    lead_id    TEXT NOT NULL REFERENCES leads (id),
    channel    TEXT NOT NULL,
    sender     TEXT NOT NULL,                -- lead, business, agent, an operator
    text       TEXT NOT NULL,
    at         TEXT NOT NULL
);
CREATE INDEX messages_lead ON messages (lead_id, at);

CREATE TABLE decisions (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    lead_id      TEXT NOT NULL REFERENCES leads (id),
    at           TEXT NOT NULL,
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
    last_inbound_at  TEXT,                   -- the user's last WhatsApp message (the 24-hour window)
    updated_at       TEXT NOT NULL
);

CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    lead_id      TEXT NOT NULL REFERENCES leads (id),
    decision_id  TEXT NOT NULL REFERENCES decisions (id),
    kind         TEXT NOT NULL,              -- whatsapp, notify
    payload      TEXT NOT NULL,              -- JSON
    state        TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_until  TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX outbox_pending ON outbox (state, created_at);

CREATE TABLE processed (
    account_id  TEXT NOT NULL,
    source      TEXT NOT NULL,               -- api, whatsapp, instagram, leadgen, form, voice
    source_id   TEXT NOT NULL,               -- Idempotency-Key, wamid, mid, leadgen_id, ...
    at          TEXT NOT NULL,
    response    TEXT,                        -- the answer given, replayed on a retry
    PRIMARY KEY (account_id, source, source_id)
);
