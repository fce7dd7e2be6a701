"""The outbox's promises: one transaction per accept, a replay alerts nobody, matching follows the filters.
On both engines."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from perpwatch.clock import FrozenClock
from storage import LimitReached, Store
from storage.models import Chat, PendingDelivery
from tests.conftest import read_logs, scalar
from tests.factories import liquidation

pytestmark = pytest.mark.engines


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 11, 26, 12, 0, tzinfo=UTC))


@pytest.fixture
async def store(database_url: str, clock: FrozenClock) -> AsyncIterator[Store]:
    async with Store(database_url, clock=clock) as s:
        yield s


async def _due(store: Store, chat_id: int, now: datetime) -> list[PendingDelivery]:
    return (await store.outbox.due_for_chat(chat_id, now, limit=100))[1]


def _key(delivery: PendingDelivery) -> str:
    assert delivery.event is not None
    return delivery.event.key


async def _chat(store: Store, name: str, *, kind: str = "private") -> Chat:
    return await store.chats.upsert("telegram", name, kind=kind, title=None)


async def _recipients(store: Store) -> set[str]:
    await read_logs(store)
    rows = await store.db.fetch("SELECT c.platform_chat_id FROM deliveries d JOIN chats c ON c.id=d.chat_id")
    return {r[0] for r in rows}


async def test_replayed_event_is_stored_once_and_alerts_once(store: Store) -> None:
    chat = await _chat(store, "1")
    await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
    event = liquidation(usd="5000")
    first = await store.outbox.accept([event])
    again = await store.outbox.accept([event, event])
    assert [r.new for r in first] == [True]
    assert [(r.new, r.event_id) for r in again] == [(False, None), (False, None)]
    assert await read_logs(store) == 1
    assert await read_logs(store) == 0  # read once: a second read writes nothing
    assert await scalar(store, "SELECT COUNT(*) FROM deliveries") == 1


async def test_fan_out_follows_topic_venue_symbol_and_min(store: Store) -> None:
    cases = {
        "all": dict(venue=None, symbol=None, min_usd=None),
        "binance": dict(venue="binance", symbol=None, min_usd=None),
        "aster": dict(venue="aster", symbol=None, min_usd=None),
        "btc_base": dict(venue=None, symbol="BTC", min_usd=None),
        "btc_full": dict(venue=None, symbol="BTCUSDT", min_usd=None),
        "eth": dict(venue=None, symbol="ETH", min_usd=None),
        "min_ok": dict(venue=None, symbol=None, min_usd=Decimal("100000")),
        "min_high": dict(venue=None, symbol=None, min_usd=Decimal("100000.01")),
    }
    for name, filters in cases.items():
        chat = await _chat(store, name)
        await store.chats.subscribe(chat.id, "liquidation", limit=10, **filters)  # type: ignore[arg-type]
    other_topic = await _chat(store, "whales")
    await store.chats.subscribe(other_topic.id, "whale", venue=None, symbol=None, min_usd=None, limit=10)
    await store.outbox.accept([liquidation(venue="binance", symbol="BTCUSDT", usd="100000")])
    assert await _recipients(store) == {"all", "binance", "btc_base", "btc_full", "min_ok"}


async def test_chat_threshold_is_the_default_floor(store: Store) -> None:
    floor = await _chat(store, "floor")
    own = await _chat(store, "own-min")
    for chat in (floor, own):
        await store.chats.set_threshold(chat.id, "liquidation", Decimal("1000000"))
    await store.chats.subscribe(floor.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
    await store.chats.subscribe(own.id, "liquidation", venue=None, symbol=None, min_usd=Decimal(10), limit=10)
    await store.outbox.accept([liquidation(usd="50000")])
    assert await _recipients(store) == {"own-min"}


async def test_gone_chat_gets_nothing_and_its_backlog_is_parked(store: Store) -> None:
    chat = await _chat(store, "gone")
    await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
    await store.outbox.accept([liquidation(key="a")])
    await read_logs(store)
    parked = await store.chats.mark_gone(chat.id, "Forbidden: bot was blocked by the user")
    await store.outbox.accept([liquidation(key="b")])
    assert await read_logs(store) == 0  # a gone chat reads nothing more
    backlog = await store.outbox.backlog()
    assert (parked, backlog.pending, backlog.parked) == (1, 0, 1)


async def test_subscription_limit_changes_nothing(store: Store) -> None:
    chat = await _chat(store, "full")
    await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=1)
    with pytest.raises(LimitReached):
        await store.chats.subscribe(chat.id, "whale", venue=None, symbol=None, min_usd=None, limit=1)
    assert [s.topic for s in await store.chats.subscriptions(chat.id)] == ["liquidation"]


async def test_pending_survives_reopen_and_due_times_are_honoured(database_url: str, clock: FrozenClock) -> None:
    path = database_url
    now = clock.now()
    async with Store(path, clock=clock) as store:
        chat = await _chat(store, "1")
        await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
        await store.outbox.accept([liquidation(key="x")])
        pending = await _due(store, chat.id, now)
        await store.outbox.reschedule([pending[0].id], at=now + timedelta(seconds=30), error="net", count_attempt=True)
    async with Store(path, clock=clock) as store:
        assert await _due(store, chat.id, now) == []
        later = await _due(store, chat.id, now + timedelta(seconds=31))
        assert [(_key(p), p.attempts) for p in later] == [("x", 1)]
        assert await scalar(store, "SELECT last_error FROM deliveries") == "net"


async def test_prune_forgets_old_delivered_history_but_never_pending(store: Store, clock: FrozenClock) -> None:
    chat = await _chat(store, "1")
    await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    recent = clock.now()
    clock.set_wall(long_ago)
    await store.outbox.accept([liquidation(key="old-sent"), liquidation(key="old-pending")])
    await read_logs(store)  # its rows are written when the chat reads the log: long ago, too
    clock.set_wall(recent)
    await store.outbox.accept([liquidation(key="new-sent")])
    for delivery in await _due(store, chat.id, recent):
        if _key(delivery) != "old-pending":
            await store.outbox.mark_sent([delivery.id], message_ref="1", now=recent)
    removed = await store.outbox.prune(before=recent - timedelta(days=30), batch=1)
    assert removed == (1, 1)
    keys = [r[0] for r in await store.db.fetch("SELECT key FROM events ORDER BY key")]
    assert keys == ["new-sent", "old-pending"]
    # What was kept still deduplicates; what was forgotten is new again.
    again = await store.outbox.accept([liquidation(key="new-sent"), liquidation(key="old-pending")])
    assert [r.new for r in again] == [False, False]


async def test_prune_walks_past_pending_and_out_of_order_rows(store: Store, clock: FrozenClock) -> None:
    """Old rows that must stay (pending) or are stamped later than their neighbours (the clock was stepped)
    neither stop the walk nor are removed early; batches of two make every row a boundary somewhere."""
    chat = await _chat(store, "1")
    await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
    long_ago, now = datetime(2026, 1, 1, tzinfo=UTC), clock.now()
    stamps = {"a": long_ago, "b-pending": long_ago, "c": long_ago, "d-ahead": now + timedelta(days=365)}
    stamps |= {"e": long_ago, "f": long_ago, "g": long_ago}
    for key, stamp in stamps.items():
        clock.set_wall(stamp)
        await store.outbox.accept([liquidation(key=key)])
        await read_logs(store)
    clock.set_wall(now)
    for delivery in await _due(store, chat.id, now + timedelta(days=400)):
        if _key(delivery) != "b-pending":
            await store.outbox.mark_sent([delivery.id], message_ref="1", now=now)
    assert await store.outbox.prune(before=now - timedelta(days=30), batch=2) == (5, 4)
    keys = [r[0] for r in await store.db.fetch("SELECT key FROM events ORDER BY id")]
    assert keys == ["b-pending", "d-ahead", "g"]  # the newest stays, old as it is


async def test_prune_keeps_the_newest_event_so_a_quiet_month_does_not_recycle_ids(
    store: Store, clock: FrozenClock
) -> None:
    """SQLite hands out the highest id plus one: had prune removed every event, the next would get an id below
    the cursors of the chats that read them, and no chat would ever read it."""
    chat = await _chat(store, "eth")
    await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol="ETH", min_usd=None, limit=10)
    await store.outbox.accept([liquidation(key=f"btc-{i}") for i in range(5)])  # nothing for this chat
    await read_logs(store)
    clock.set_wall(clock.now() + timedelta(days=40))
    assert await store.outbox.prune(before=clock.now() - timedelta(days=30)) == (0, 4)
    [result] = await store.outbox.accept([liquidation(key="eth-1", symbol="ETHUSDT")])
    assert result.event_id == 6
    assert [_key(d) for d in await _due(store, chat.id, clock.now())] == ["eth-1"]


async def test_concurrent_accepts_share_a_commit_and_a_bad_batch_fails_only_its_caller(store: Store) -> None:
    import asyncio

    from bot.pipeline import Pipeline

    pipeline = Pipeline(store.outbox)
    good = [liquidation(key=f"k{i}") for i in range(5)]
    results = await asyncio.gather(*(pipeline.accept([e]) for e in good))
    assert [r[0].new for r in results] == [True] * 5
    assert pipeline.stats.commits < 5  # they shared commits
    real_accept = store.outbox.accept

    batches: list[int] = []

    async def refuse_poison(events: Any, **kw: Any) -> Any:  # a storage error caused by one caller's event
        batches.append(len(events))
        if any(e.key == "poison" for e in events):
            raise sqlite3.IntegrityError("poison")
        return await real_accept(events, **kw)

    store.outbox.accept = refuse_poison  # type: ignore[method-assign]
    outcome = await asyncio.gather(
        pipeline.accept([liquidation(key="poison")]),
        pipeline.accept([liquidation(key="fine")]),
        return_exceptions=True,
    )
    assert batches == [2, 1, 1]  # one shared commit failed, then each caller on its own
    assert isinstance(outcome[0], Exception)
    assert not isinstance(outcome[1], BaseException) and outcome[1][0].new
    assert await scalar(store, "SELECT COUNT(*) FROM events") == 6


async def test_migration_onto_a_chat_that_already_exists_merges_and_loses_nothing(store: Store) -> None:
    old = await store.chats.upsert("telegram", "-100", kind="group", title="G")
    new = await store.chats.upsert("telegram", "-1009", kind="group", title="G")  # an admin ran a command already
    sub = store.chats.subscribe
    await sub(old.id, "liquidation", venue="binance", symbol=None, min_usd=None, limit=9)
    await sub(new.id, "whale", venue=None, symbol=None, min_usd=None, limit=9)
    await sub(new.id, "liquidation", venue="okx", symbol=None, min_usd=None, limit=9)
    await sub(new.id, "liquidation", venue="binance", symbol="BTC", min_usd=None, limit=9)
    await store.chats.watch(new.id, "0x" + "ab" * 20, "big", limit=9)
    await store.chats.set_quiet(new.id, "23:00", "07:00", "UTC")
    await store.outbox.accept([liquidation(key="both")])  # pending for both chats
    await store.outbox.accept([liquidation(key="okx", venue="okx")])  # pending for the retired chat only
    await read_logs(store)
    [[okx_delivery]] = await store.db.fetch(
        "SELECT d.id FROM deliveries d JOIN events e ON e.id = d.event_id WHERE e.key = 'okx'"
    )
    await store.chats.migrate(old.id, "-1009")
    chats = await store.db.fetch("SELECT id, platform_chat_id, quiet_start FROM chats")
    assert [tuple(r) for r in chats] == [(old.id, "-1009", "23:00")]
    assert sorted((s.topic, s.venue or "*", s.symbol or "*") for s in await store.chats.subscriptions(old.id)) == [
        ("liquidation", "binance", "*"),
        ("liquidation", "binance", "BTC"),
        ("liquidation", "okx", "*"),
        ("whale", "*", "*"),
    ]
    assert [(w.address, w.label) for w in await store.chats.watchlist(old.id)] == [("0x" + "ab" * 20, "big")]
    pending = await store.db.fetch(
        "SELECT d.id, d.chat_id, e.key FROM deliveries d JOIN events e ON e.id = d.event_id "
        "WHERE d.status = 'pending' ORDER BY d.id"
    )
    assert [(r[1], r[2]) for r in pending] == [(old.id, "both"), (old.id, "okx")]  # "both" once: one alert
    assert pending[1][0] == okx_delivery  # moved with its id: a send not yet recorded is recorded by id


async def test_group_commit_stops_adding_callers_at_its_cap(store: Store) -> None:
    import asyncio

    from bot.pipeline import Pipeline

    pipeline = Pipeline(store.outbox, max_events_per_commit=3)
    real_accept = store.outbox.accept
    batches: list[list[str]] = []

    async def recording(events: Any, **kw: Any) -> Any:
        batches.append([e.key for e in events])
        return await real_accept(events, **kw)

    store.outbox.accept = recording  # type: ignore[method-assign]
    callers = [[liquidation(key=f"c{i}a"), liquidation(key=f"c{i}b")] for i in range(4)]
    await asyncio.gather(*(pipeline.accept(events) for events in callers))
    # Whole callers only: the cap is reached by the second caller, so commits carry 2 callers each.
    assert batches == [["c0a", "c0b", "c1a", "c1b"], ["c2a", "c2b", "c3a", "c3b"]]
    assert await scalar(store, "SELECT COUNT(*) FROM events") == 8


@pytest.mark.sqlite_only
async def test_a_failing_checkpoint_does_not_stop_the_pipeline(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer waits for the worker's checkpoint in a flood; a disk failing under it must not strand the
    callers (the checkpointer reports the disk on its own)."""
    import asyncio

    from bot.pipeline import Pipeline
    from storage.sqlite import SqliteEngine as Database

    def failing(self: Database, mode: str = "PASSIVE") -> tuple[int, int]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Database, "_checkpoint_once", failing)
    chat = await _chat(store, "1")
    await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=9)
    pipeline = Pipeline(store.outbox)
    async with asyncio.timeout(30):  # a hang guard only
        results = await asyncio.gather(*(pipeline.accept([liquidation(key=f"k{i}")]) for i in range(1500)))
    assert sum(r[0].new for r in results) == 1500
    assert pipeline.stats.commits > 1  # several commits, so the writer did wait for checkpoints in between
