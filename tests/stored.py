"""The storage tests' own helpers: what the database holds, read for assertions, in the SQL both engines
share (every test using them runs on both). Tests outside `test_storage.py`, `test_outbox_v2.py` and
`test_schema.py` read the database only through these and through the repositories.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

TABLES = ("chats", "subscriptions", "chat_thresholds", "watchlist", "watcher_state", "events", "deliveries")


async def read_logs(store: Any) -> int:
    """Every active chat reads the event log to its head, as its dispatcher worker would: the rows written."""
    written = 0
    for chat_id in await store.chats.active_behind(store.outbox.head, after=0, limit=100_000):
        written += (await store.outbox.read_log(chat_id, want=100_000))[0]
    return written


async def scalar(store: Any, sql: str) -> Any:
    """The single value a query returns, for checking rows after a command or a fault."""
    rows = list(await store.db.fetch(sql))
    return rows[0][0]


OutboxRows = list[tuple[str, str | None]]


async def deliveries(app: Any) -> OutboxRows:
    """(status, last_error) of every delivery, oldest first."""
    rows = await app.store.db.fetch("SELECT status, last_error FROM deliveries ORDER BY id")
    return [(r[0], r[1]) for r in rows]


async def until_outbox(
    app: Any, check: Callable[[OutboxRows], bool], *, after_frames: int = 1, timeout_s: float = 10.0
) -> None:
    """Wait until the pipeline saw `after_frames` frames and the outbox passes `check`.

    The dispatcher offers no wait of its own, so this re-reads the table; the timeout is only a hang guard.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        seen = app.pipeline.stats.accepted + app.pipeline.stats.duplicates
        if seen >= after_frames and check(await deliveries(app)):
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"outbox never reached the expected state: {await deliveries(app)}")


async def count(store: Any, table: str) -> int:
    """Rows in one of the schema's tables."""
    assert table in TABLES, table
    return int(await scalar(store, f"SELECT COUNT(*) FROM {table}"))  # noqa: S608 - a known table name


async def message_refs(app: Any) -> list[str | None]:
    """Where each delivery's message lives on its platform, oldest first."""
    return [r[0] for r in await app.store.db.fetch("SELECT message_ref FROM deliveries ORDER BY id")]


async def chats(app: Any) -> list[tuple[str, str, str | None]]:
    """(platform, kind, title) of every chat, by platform."""
    rows = await app.store.db.fetch("SELECT platform, kind, title FROM chats ORDER BY platform, id")
    return [(r[0], r[1], r[2]) for r in rows]


async def settings_snapshot(app: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a command may change, to prove a refused or bad command changed none of it."""
    queries = {
        "subscriptions": "SELECT chat_id, topic, venue, symbol, min_usd FROM subscriptions ORDER BY id",
        "thresholds": "SELECT chat_id, topic, min_usd FROM chat_thresholds ORDER BY chat_id, topic",
        "watchlist": "SELECT chat_id, address, label FROM watchlist ORDER BY id",
        "quiet": "SELECT id, quiet_start, quiet_end, quiet_tz FROM chats ORDER BY id",
        "watchers": "SELECT watcher, paused FROM watcher_state ORDER BY watcher",
    }
    return {name: [tuple(r) for r in await app.store.db.fetch(sql)] for name, sql in queries.items()}


async def delivery_rows(store: Any) -> list[tuple[str, str, str | None, int]]:
    """(event key, status, last error, attempts) of every delivery, oldest first."""
    rows = await store.db.fetch(
        "SELECT e.key, d.status, d.last_error, d.attempts FROM deliveries d JOIN events e ON e.id = d.event_id "
        "ORDER BY d.id"
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in rows]


async def event_keys(store: Any) -> list[str]:
    """The keys of the events in the log, in log order."""
    return [r[0] for r in await store.db.fetch("SELECT key FROM events ORDER BY id")]


async def sent_latencies(store: Any) -> list[float]:
    """Seconds from each sent delivery's row being written to its send."""
    from storage.engine import as_time

    rows = await store.db.fetch("SELECT created_at, sent_at FROM deliveries WHERE status = 'sent'")
    return [(as_time(r[1]) - as_time(r[0])).total_seconds() for r in rows]


async def spoil_body(store: Any, key: str) -> None:
    """Give an event a stored body no release can read (a fault the outbox must survive)."""
    await store.db.execute("UPDATE events SET body = '{}' WHERE key = ?", (key,))
