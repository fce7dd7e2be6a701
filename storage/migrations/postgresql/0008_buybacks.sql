-- Schema 8: buyback programmes, what they bought, the balance snapshots behind it, and each source's cursor.
-- Amounts that are summed are scaled integers, so a SUM is exact on both engines: tokens_e8 = tokens x 10^8
-- and usd_e6 = USD x 10^6, truncated toward zero (storage/buybacks.py, `scaled`); NULL = the source does not
-- give that figure. Figures only shown (a balance, a cost, a published total) stay exact text.

CREATE TABLE buyback_programmes (
    -- Its id as chats type it (hyperliquid-af). Not named `id`: an `id` key in this schema is an integer (SQLite's
    -- rowid), and tests/test_schema.py compares the engines' indexes on that understanding.
    programme       TEXT    PRIMARY KEY,
    kind            TEXT    NOT NULL,               -- perpwatch.buybacks.KINDS
    token           TEXT    NOT NULL,               -- CoinGecko id or chain:0xcontract
    symbol          TEXT    NOT NULL,
    params          TEXT    NOT NULL,               -- JSON; decimals kept exact
    source          TEXT    NOT NULL,
    origin          TEXT    NOT NULL,               -- bundled | chat
    total_supply    TEXT,                           -- exact
    supply_source   TEXT,
    milestone_tokens TEXT,                          -- exact
    note            TEXT,
    removed         BOOLEAN NOT NULL DEFAULT FALSE, -- a bundled programme an operator removed: the merge keeps it so
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE buyback_buys (
    programme       TEXT    NOT NULL REFERENCES buyback_programmes(programme),
    key             TEXT    NOT NULL,               -- unique within the programme: a replay is not counted twice
    start_at        TIMESTAMPTZ NOT NULL,
    end_at          TIMESTAMPTZ NOT NULL,
    day             TEXT    NOT NULL,               -- YYYY-MM-DD of end_at in UTC
    tokens_e8       BIGINT,
    usd_e6          BIGINT,
    basis           TEXT    NOT NULL,               -- measured | estimated
    note            TEXT,
    PRIMARY KEY (programme, key)
);
CREATE INDEX buyback_buys_window ON buyback_buys (programme, end_at);

-- History, never pruned with the event log: a buy is only as good as the snapshots it was taken between.
CREATE TABLE buyback_snapshots (
    programme       TEXT    NOT NULL REFERENCES buyback_programmes(programme),
    taken_at        TIMESTAMPTZ NOT NULL,
    balance         TEXT    NOT NULL,               -- exact
    cost_usd        TEXT,                           -- exact
    gap_ms          BIGINT,                         -- set after a gap: how long no snapshot was taken
    PRIMARY KEY (programme, taken_at)
);

CREATE TABLE buyback_sources (
    programme       TEXT    PRIMARY KEY REFERENCES buyback_programmes(programme),
    cursor          TEXT,                           -- JSON; NULL = none stored yet
    last_good_at    TIMESTAMPTZ,
    failing_since   TIMESTAMPTZ,
    last_error      TEXT,
    tracked_since   TIMESTAMPTZ,                    -- the start of the first period stored
    total_tokens    TEXT,                           -- the programme's own published total, exact
    total_usd       TEXT,
    total_source    TEXT,
    total_as_of     TIMESTAMPTZ
);
