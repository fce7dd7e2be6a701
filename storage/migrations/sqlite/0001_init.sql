-- perpwatch schema v1. Portable SQL (SQLite now, PostgreSQL later): no SQLite-only types in columns that
-- matter; money is stored twice where it is compared: exact text for display, integer cents for matching.

CREATE TABLE chats (
    id              INTEGER PRIMARY KEY,
    platform        TEXT    NOT NULL,               -- telegram | discord | console
    platform_chat_id TEXT   NOT NULL,               -- Telegram chat id, Discord channel id, "stdout"
    kind            TEXT    NOT NULL DEFAULT 'private', -- private | group
    title           TEXT,
    status          TEXT    NOT NULL DEFAULT 'active',  -- active | gone
    gone_reason     TEXT,
    quiet_start     TEXT,                           -- HH:MM local, NULL = no quiet hours
    quiet_end       TEXT,
    quiet_tz        TEXT,
    held_until      TEXT,                           -- a 429, backoff or quiet hours: nothing is sent before
    created_at      TEXT    NOT NULL,
    UNIQUE (platform, platform_chat_id)
);

CREATE TABLE subscriptions (
    id              INTEGER PRIMARY KEY,
    chat_id         INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    topic           TEXT    NOT NULL,
    venue           TEXT    NOT NULL DEFAULT '*',   -- '*' = every venue (not NULL: UNIQUE and IN need a value)
    symbol          TEXT    NOT NULL DEFAULT '*',   -- '*' = every symbol
    min_usd         TEXT,                           -- exact, for display; NULL = the chat's threshold
    min_usd_cents   INTEGER,                        -- for matching
    created_by      TEXT,
    created_at      TEXT    NOT NULL,
    UNIQUE (chat_id, topic, venue, symbol)
);
CREATE INDEX subscriptions_topic ON subscriptions (topic, venue, symbol);

CREATE TABLE chat_thresholds (
    chat_id         INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    topic           TEXT    NOT NULL,
    min_usd         TEXT    NOT NULL,
    min_usd_cents   INTEGER NOT NULL,
    PRIMARY KEY (chat_id, topic)
);

CREATE TABLE watchlist (
    id              INTEGER PRIMARY KEY,
    chat_id         INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    address         TEXT    NOT NULL,               -- lower-case 0x… address
    label           TEXT,
    created_at      TEXT    NOT NULL,
    UNIQUE (chat_id, address),
    UNIQUE (chat_id, label)
);

CREATE TABLE events (
    id              INTEGER PRIMARY KEY,
    key             TEXT    NOT NULL UNIQUE,        -- Event.key: a replay is ignored here
    topic           TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    venue           TEXT,
    symbol          TEXT,
    usd             TEXT,
    usd_cents       INTEGER,
    occurred_at     TEXT    NOT NULL,
    accepted_at     TEXT    NOT NULL,
    body            TEXT    NOT NULL                -- the Event as JSON
);
CREATE INDEX events_recent ON events (topic, occurred_at);

-- The outbox: one row per (event, chat). A row leaves 'pending' only once the platform accepted it.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    chat_id         INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    status          TEXT    NOT NULL DEFAULT 'pending', -- pending | sent | parked
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    last_error      TEXT,
    platform_message_id TEXT,                       -- kept so a later update can edit the message
    summary_of      INTEGER,                        -- set when merged into a summary: that summary's lead row
    quiet_held      INTEGER NOT NULL DEFAULT 0,     -- waited through quiet hours: goes out in the digest
    created_at      TEXT    NOT NULL,
    sent_at         TEXT,
    UNIQUE (event_id, chat_id)
);
-- Partial indexes: they hold only the rows still waiting (or parked), so they stay small however many
-- alerts were ever sent, and the dispatcher's queries never touch the history.
CREATE INDEX deliveries_pending ON deliveries (chat_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_parked ON deliveries (chat_id) WHERE status = 'parked';

CREATE TABLE watcher_state (
    watcher         TEXT    PRIMARY KEY,
    paused          INTEGER NOT NULL DEFAULT 0,
    cursor          TEXT,
    updated_at      TEXT    NOT NULL
);
