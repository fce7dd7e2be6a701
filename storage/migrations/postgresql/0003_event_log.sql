-- Schema 3: the event log, read by each chat through a cursor. Accepting an event writes only its row;
-- a chat's deliveries are written when its worker reads the log after its cursor, at most as many as it
-- can send now, so the cost of an event no longer grows with the chats that hear of it.

ALTER TABLE events ADD COLUMN base TEXT;                 -- the symbol's base asset: `symbol=BTC` matches BTCUSDT
ALTER TABLE events ADD COLUMN due_at TIMESTAMPTZ;              -- a reminder's time; NULL = due when accepted
ALTER TABLE events ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE events ADD COLUMN withdrawn BOOLEAN NOT NULL DEFAULT FALSE;  -- its thread was cancelled: never sent
CREATE INDEX events_thread ON events (thread) WHERE thread IS NOT NULL;

-- Every event up to log_cursor is in this chat's deliveries, or matched none of its subscriptions.
ALTER TABLE chats ADD COLUMN log_cursor BIGINT NOT NULL DEFAULT 0;
-- The hold in held_until is quiet hours: alerts of events accepted before it ends go out in the digest.
ALTER TABLE chats ADD COLUMN held_quiet BOOLEAN NOT NULL DEFAULT FALSE;
-- Schema 2 wrote every delivery when its event was accepted: every chat has read the log to its end.
UPDATE chats SET log_cursor = (SELECT COALESCE(MAX(id), 0) FROM events);

-- A subscription hears events accepted after it was made, not the log before it.
ALTER TABLE subscriptions ADD COLUMN since_event BIGINT NOT NULL DEFAULT 0;
UPDATE subscriptions SET since_event = (SELECT COALESCE(MAX(id), 0) FROM events);
