"""What the metrics and the status page read from the database (storage/status.py), on both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from storage import Store
from storage.status import StatusReads
from tests.factories import liquidation
from tests.stored import read_logs

pytestmark = pytest.mark.engines

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)


async def _store_with_alerts(database_url: str) -> tuple[Store, dict[str, int]]:
    """Three chats (a private Telegram chat, a Telegram group, a Discord channel) hearing every liquidation;
    events in this hour, three hours ago and two days ago."""
    store = await Store(database_url).open()
    chats = {}
    for name, platform, ident, kind in (
        ("private", "telegram", "4242", "private"),
        ("group", "telegram", "-100777", "group"),
        ("discord", "discord", "9001", "group"),
    ):
        chat = await store.chats.upsert(platform, ident, kind=kind, title=f"title {name}")
        await store.chats.replace_subscriptions(chat.id, [("liquidation", None)])
        chats[name] = chat.id
    events = [
        liquidation(key="now-1", venue="binance", usd="1000", at=NOW - timedelta(minutes=5)),
        liquidation(key="now-2", venue="bybit", usd="250.50", at=NOW - timedelta(minutes=10)),
        liquidation(key="3h", venue="binance", usd="40", at=NOW - timedelta(hours=3)),
        liquidation(key="old", venue="okx", usd="999999", at=NOW - timedelta(days=2)),
    ]
    await store.outbox.accept(events)
    await read_logs(store)
    return store, chats


async def test_backlog_counts_pending_and_parked_per_platform(database_url: str) -> None:
    store, chats = await _store_with_alerts(database_url)
    try:
        reads = StatusReads(store.db)
        assert {(b.platform, b.pending, b.parked) for b in await reads.backlog_by_platform()} == {
            ("telegram", 8, 0),
            ("discord", 4, 0),
        }
        _, due = await store.outbox.due_for_chat(chats["discord"], datetime.now(UTC), limit=10)
        await store.outbox.park([due[0].id], reason="refused")
        await store.outbox.mark_sent([d.id for d in due[1:]], message_ref=None, now=datetime.now(UTC))
        # A count younger than max_age_s is answered again; a fresh read sees the change.
        assert {(b.platform, b.pending) for b in await reads.backlog_by_platform(max_age_s=60)} == {
            ("telegram", 8),
            ("discord", 4),
        }
        assert {(b.platform, b.pending, b.parked) for b in await reads.backlog_by_platform()} == {
            ("telegram", 8, 0),
            ("discord", 0, 1),
        }
    finally:
        await store.close()


async def test_recent_alerts_group_rows_per_event_and_keep_only_platform_and_kind(database_url: str) -> None:
    store, chats = await _store_with_alerts(database_url)
    try:
        now = datetime.now(UTC)
        for name in ("private", "group"):
            _, due = await store.outbox.due_for_chat(chats[name], now, limit=10)
            keys = {d.id: d.event.key for d in due if d.event is not None}
            sent = [i for i, k in keys.items() if k == "now-1" or (name == "private" and k == "3h")]
            await store.outbox.mark_sent(sent, message_ref=None, now=now)
        alerts = await StatusReads(store.db).recent_alerts(limit=10)
        by_key = {a.event.key: a for a in alerts}
        assert set(by_key) == {"now-1", "3h"}
        assert by_key["now-1"].audience == (("telegram", "group"), ("telegram", "private"))
        assert by_key["3h"].audience == (("telegram", "private"),)
        assert alerts[0].event.key == "now-1"  # by its newest row (the group's), which came after the private chat's
        assert await StatusReads(store.db).recent_alerts(limit=1) == alerts[:1]
    finally:
        await store.close()


async def test_a_day_of_liquidations_by_venue_and_hour(database_url: str) -> None:
    store, _ = await _store_with_alerts(database_url)
    try:
        buckets = await StatusReads(store.db).liquidations_by_hour(end=NOW, hours=24)
        this_hour = NOW.replace(minute=0)
        assert {(b.venue, b.hour_start, b.count, b.usd) for b in buckets} == {
            ("binance", this_hour, 1, Decimal("1000")),
            ("bybit", this_hour, 1, Decimal("250.50")),
            ("binance", this_hour - timedelta(hours=3), 1, Decimal("40")),
        }  # two days ago is outside the window
    finally:
        await store.close()
