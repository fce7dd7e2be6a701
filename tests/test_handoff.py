"""The handoff between a stream's reader and the sink: reading never waits on a commit, order holds,
bursts share one sink call, memory stays bounded, and a stop hands over what was already read."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from perpwatch.events import Event, LiquidationBody, PositionSide, Topic, Venue
from bot.pipeline import Pipeline
from storage import Store
from watchers.base import SinkUnavailable, WatcherHealth
from watchers.handoff import Handoff


def event(n: int) -> Event:
    return Event(
        key=f"test:{n}",
        topic=Topic.LIQUIDATION,
        source="test",
        venue=Venue.BINANCE,
        symbol="BTCUSDT",
        usd=Decimal(1000),
        occurred_at=datetime(2026, 11, 26, tzinfo=UTC),
        body=LiquidationBody(side=PositionSide.LONG, size=Decimal(1), price=Decimal(1000), notional_usd=Decimal(1000)),
    )


class GatedSink:
    """Records each call; the first call waits until the test opens the gate, like a slow commit."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self, events: Sequence[Event]) -> None:
        self.entered.set()
        if not self.calls:
            self.calls.append([e.key for e in events])
            await self.gate.wait()
            return
        self.calls.append([e.key for e in events])


async def test_events_read_during_a_slow_commit_share_the_next_call_in_order() -> None:
    sink, health = GatedSink(), WatcherHealth(name="t")
    async with Handoff(sink, health, label="t") as handoff:
        await handoff.put([event(1)])
        await sink.entered.wait()
        for n in (2, 3, 4):  # each put returns at once although the sink is still busy with event 1
            await handoff.put([event(n)])
        assert handoff.buffered == 3
        sink.gate.set()
        await handoff.settled()
    assert sink.calls == [["test:1"], ["test:2", "test:3", "test:4"]]
    assert health.events == 4


async def test_a_full_buffer_makes_the_reader_wait() -> None:
    sink, health = GatedSink(), WatcherHealth(name="t")
    async with Handoff(sink, health, label="t", max_buffered=2) as handoff:
        await handoff.put([event(1)])
        await sink.entered.wait()
        await handoff.put([event(2)])
        await handoff.put([event(3)])
        blocked = asyncio.create_task(handoff.put([event(4)]))
        await asyncio.sleep(0.01)
        assert not blocked.done()  # two are waiting: the third must wait in the socket
        sink.gate.set()
        await blocked
        await handoff.settled()
    assert [key for call in sink.calls for key in call] == [f"test:{n}" for n in range(1, 5)]


async def test_leaving_hands_over_what_was_read() -> None:
    sink, health = GatedSink(), WatcherHealth(name="t")
    sink.gate.set()
    async with Handoff(sink, health, label="t") as handoff:
        await handoff.put([event(1), event(2)])
    assert sink.calls == [["test:1", "test:2"]]


async def test_leaving_gives_up_after_the_grace_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    sink, health = GatedSink(), WatcherHealth(name="t")  # the gate never opens: a hung database
    async with Handoff(sink, health, label="t", grace_s=0.05) as handoff:
        await handoff.put([event(1)])
        await sink.entered.wait()
        await handoff.put([event(2)])
    assert "stopping with events not handed over venue=t events=1" in caplog.text


async def test_a_passing_fault_is_retried_without_reordering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchers.handoff.SINK_RETRY_DELAYS_S", (0.001, 0.001, 0.001))
    seen: list[str] = []
    failures = [OSError("database is locked")]

    async def flaky(events: Sequence[Event]) -> None:
        if failures:
            raise failures.pop()
        seen.extend(e.key for e in events)

    health = WatcherHealth(name="t")
    async with Handoff(flaky, health, label="t") as handoff:
        for n in range(1, 4):
            await handoff.put([event(n)])
        await handoff.settled()
    assert seen == ["test:1", "test:2", "test:3"]
    assert (health.events, health.errors) == (3, 0)


async def test_an_unavailable_sink_is_waited_for_however_long_and_loses_nothing() -> None:
    seen: list[str] = []
    outage = [SinkUnavailable("SQLITE_FULL: database or disk is full")] * 12  # more tries than any other fault gets
    waits: list[float] = []

    async def full_disk(events: Sequence[Event]) -> None:
        if outage:
            raise outage.pop()
        seen.extend(e.key for e in events)

    async def record(delay_s: float) -> None:
        waits.append(delay_s)
        await asyncio.sleep(0)

    health = WatcherHealth(name="t")
    async with Handoff(full_disk, health, label="t", sleep=record) as handoff:
        for n in range(1, 4):
            await handoff.put([event(n)])
        await handoff.settled()
    assert seen == ["test:1", "test:2", "test:3"]
    assert (health.events, health.errors) == (3, 0)
    assert health.last_error == "sink: SinkUnavailable: SQLITE_FULL: database or disk is full"
    assert waits == [0.05, 0.5, 2.0] + [5.0] * 9  # backs off, then keeps trying at the cap


async def test_an_outage_past_a_minute_is_reported_as_an_error_once(caplog: pytest.LogCaptureFixture) -> None:
    outage = [SinkUnavailable("SQLITE_FULL: database or disk is full")] * 30  # 2.55 s, then 5 s a try

    async def full_disk(events: Sequence[Event]) -> None:
        if outage:
            raise outage.pop()

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="watchers.handoff"):
        async with Handoff(full_disk, WatcherHealth(name="t"), label="t", sleep=no_wait) as handoff:
            await handoff.put([event(1)])
            await handoff.settled()
    held = [r for r in caplog.records if r.getMessage().startswith("sink unavailable")]
    assert [r.levelno for r in held] == [logging.WARNING] * 3 + [logging.ERROR]
    assert "tries=16 waited_s=63" in held[-1].getMessage()  # the first try after a minute of backing off


async def test_events_read_while_another_process_locks_the_database_are_stored_when_it_lets_go(
    tmp_path: Path,
) -> None:
    async def soon(_: float) -> None:
        await asyncio.sleep(0.001)

    async with Store(tmp_path / "t.db") as store:
        store.db.conn.execute("PRAGMA busy_timeout=1")
        pipeline, health = Pipeline(store.outbox), WatcherHealth(name="t")
        other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)  # an operator's sqlite3 shell
        other.execute("BEGIN IMMEDIATE")
        async with Handoff(pipeline, health, label="t", sleep=soon) as handoff:
            await handoff.put([event(1), event(2)])
            async with asyncio.timeout(10):  # a hang guard only
                while health.last_error is None:  # noqa: ASYNC110 - waiting for the handoff under test
                    await asyncio.sleep(0.001)
            assert "SQLITE_BUSY" in health.last_error
            await handoff.put([event(3)])
            other.execute("COMMIT")
            await handoff.settled()
        other.close()
        rows = await store.db.fetch("SELECT key FROM events ORDER BY id")
    assert [r["key"] for r in rows] == ["test:1", "test:2", "test:3"]
    assert (health.events, health.errors, pipeline.stats.accepted) == (3, 0, 3)


def test_a_buffer_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="max_buffered"):
        Handoff(GatedSink(), WatcherHealth(name="t"), label="t", max_buffered=0)


async def test_a_flood_reaches_the_sink_in_bounded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchers.handoff.MAX_BATCH", 4)
    sink, health = GatedSink(), WatcherHealth(name="t")
    async with Handoff(sink, health, label="t") as handoff:
        await handoff.put([event(0)])
        await sink.entered.wait()
        await handoff.put([event(n) for n in range(1, 11)])
        sink.gate.set()
        await handoff.settled()
    assert [len(call) for call in sink.calls] == [1, 4, 4, 2]
    assert [key for call in sink.calls for key in call] == [f"test:{n}" for n in range(11)]
