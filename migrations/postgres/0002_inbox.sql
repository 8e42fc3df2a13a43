-- The operator inbox: operators and their sessions, what each has read, and
-- the trail of what people did on a thread (as SQLite's 0004_inbox.sql).

CREATE TABLE operators (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    email         TEXT NOT NULL UNIQUE,         -- lowercased; signs in with it
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,                -- argon2id, PHC string
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,              -- SHA-256 of the cookie's token
    operator_id  TEXT NOT NULL REFERENCES operators (id),
    csrf         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE thread_reads (
    operator_id TEXT NOT NULL,
    lead_id     TEXT NOT NULL,
    read_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (operator_id, lead_id)
);

CREATE TABLE thread_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  TEXT NOT NULL,
    lead_id     TEXT NOT NULL REFERENCES leads (id),
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,                  -- the operator's name, or `api`
    kind        TEXT NOT NULL,                  -- note, takeover, release, reassign, reply
    text        TEXT
);
CREATE INDEX thread_events_lead ON thread_events (lead_id, id);

ALTER TABLE threads ADD COLUMN taken_by TEXT;
