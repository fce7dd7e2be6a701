-- Schema 4: a watcher's own durable key/value state (cursors, the last good copy of reference data), so a
-- venue whose REST is down at start still streams from what it fetched before. Values are JSON text.

CREATE TABLE watcher_kv (
    watcher         TEXT    NOT NULL,               -- the watcher's name, or "refdata" for shared datasets
    key             TEXT    NOT NULL,
    value           TEXT    NOT NULL,               -- JSON; decimals kept exact
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (watcher, key)
);
