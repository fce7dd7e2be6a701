-- Schema 9: the unlock/TGE calendar and its reminders (bot/calendar.py).
-- One row per calendar entry: the entry itself as JSON (perpwatch.calendar.CalendarEntry), with the columns
-- a query needs beside it. `revision` counts changes of its timing or of whether it still happens, so a
-- reminder of an older timing is known as stale; `locked`: edited in chat, so a later merge of the bundled
-- file or a model refresh leaves it as the chat left it.
CREATE TABLE calendar_entries (
    entry_id        TEXT    PRIMARY KEY,            -- CalendarEntry.id
    origin          TEXT    NOT NULL,               -- bundled | defillama | chat
    starts_at       TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    revision        INTEGER NOT NULL DEFAULT 0,
    fingerprint     TEXT    NOT NULL,
    locked          INTEGER NOT NULL DEFAULT 0,
    edited_by       TEXT,
    body            TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
);
CREATE INDEX calendar_entries_starts ON calendar_entries (starts_at);
-- One row per (entry, revision, lead time) from the fixed ladder: scheduled until it falls due, then accepted
-- into the event log (once: its event key dedupes a replay), dropped (its event had passed by the time the
-- bot could send it) or withdrawn (the entry moved or was cancelled first). Exactly one of them, ever.
CREATE TABLE calendar_reminders (
    entry_id        TEXT    NOT NULL,
    revision        INTEGER NOT NULL,
    lead            TEXT    NOT NULL,
    due_at          TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'scheduled',
    decided_at      TEXT,
    PRIMARY KEY (entry_id, revision, lead)
);
CREATE INDEX calendar_reminders_due ON calendar_reminders (state, due_at);
