-- perpwatch schema v2: the outbox every alert family fits (threads, revisions, due times, expiry) and
-- subscriptions that match watch lists and carry per-family parameters.

-- Events: the envelope v2. A body written by release 1 keeps body_version 1 and decodes with defaults.
ALTER TABLE events ADD COLUMN subject TEXT;
ALTER TABLE events ADD COLUMN thread TEXT;
ALTER TABLE events ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN body_version INTEGER NOT NULL DEFAULT 1;

-- Deliveries v2. `due_at` is when the alert is due (a reminder's lead time); `next_attempt_at` is when it
-- may next be tried (never before it is due; later for a retry, a 429 hold, quiet hours). `thread` and
-- `revision` are the event's, kept here so superseding and editing are index seeks. `message_ref` is where
-- a sent alert lives on its platform, for an edit.
CREATE TABLE deliveries_v2 (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    chat_id         INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    status          TEXT    NOT NULL DEFAULT 'pending', -- pending | sent | parked | superseded | withdrawn | expired
    attempts        INTEGER NOT NULL DEFAULT 0,
    due_at          TEXT    NOT NULL,
    next_attempt_at TEXT    NOT NULL,
    expires_at      TEXT,
    thread          TEXT,
    revision        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    message_ref     TEXT,
    quiet_held      INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL,
    sent_at         TEXT,
    UNIQUE (event_id, chat_id)
);
INSERT INTO deliveries_v2 (id, event_id, chat_id, status, attempts, due_at, next_attempt_at, last_error,
                           message_ref, quiet_held, created_at, sent_at)
SELECT id, event_id, chat_id, status, attempts, created_at, next_attempt_at, last_error,
       platform_message_id, quiet_held, created_at, sent_at
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v2 RENAME TO deliveries;
CREATE INDEX deliveries_pending ON deliveries (chat_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_parked ON deliveries (chat_id) WHERE status = 'parked';
CREATE INDEX deliveries_pending_thread ON deliveries (thread, chat_id) WHERE status = 'pending' AND thread IS NOT NULL;

-- The newest revision of each thread a chat was sent, and where that message lives: what an edit targets.
CREATE TABLE threads (
    chat_id         INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    thread          TEXT    NOT NULL,
    revision        INTEGER NOT NULL,
    message_ref     TEXT,                           -- NULL when it went out inside a summary: nothing to edit
    updated_at      TEXT    NOT NULL,
    PRIMARY KEY (chat_id, thread)
);

-- Subscriptions v2: `scope` 'watchlist' matches only events whose subject is on the chat's watch list;
-- `params` holds a family's validated parameters (thresholds, lead times, an hour of day) as JSON, so a
-- family adds parameters, not columns. The never-read created_by goes.
CREATE TABLE subscriptions_v2 (
    id              INTEGER PRIMARY KEY,
    chat_id         INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    topic           TEXT    NOT NULL,
    venue           TEXT    NOT NULL DEFAULT '*',
    symbol          TEXT    NOT NULL DEFAULT '*',
    scope           TEXT    NOT NULL DEFAULT 'all', -- all | watchlist
    min_usd         TEXT,
    min_usd_cents   INTEGER,
    params          TEXT    NOT NULL DEFAULT '{}',
    created_at      TEXT    NOT NULL,
    UNIQUE (chat_id, topic, venue, symbol, scope)
);
INSERT INTO subscriptions_v2 (id, chat_id, topic, venue, symbol, min_usd, min_usd_cents, created_at)
SELECT id, chat_id, topic, venue, symbol, min_usd, min_usd_cents, created_at FROM subscriptions;
DROP TABLE subscriptions;
ALTER TABLE subscriptions_v2 RENAME TO subscriptions;
CREATE INDEX subscriptions_topic ON subscriptions (topic, venue, symbol);
