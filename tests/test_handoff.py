"""The handoff between a stream's reader and the sink: reading never waits on a commit, order holds,
bursts share one sink call, memory stays bounded, a stop hands over what was already read, and an event the
sink can never store holds nothing back. Waits are on a test clock, never on the wall."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bot.pipeline import Pipeline
from perpwatch.clock import FrozenClock
from perpwatch.events import Event, LiquidationBody, PositionSide, Topic, Venue
from storage import Store
from storage.sqlite import SqliteEngine
from tests.fakes.clock import RecordingClock
from tests.stored import event_keys
from watchers.base import EventRejected, SinkUnavailable, WatcherHealth
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
    sink, health, clock = GatedSink(), WatcherHealth(name="t"), FrozenClock()  # the gate never opens: a hung database

    async def grace_passes() -> None:
        while clock.sleepers == 0:  # noqa: ASYNC110 - until the handoff waits out its grace
            await asyncio.sleep(0)
        await clock.advance(5.0)

    async with Handoff(sink, health, label="t", grace_s=5.0, clock=clock) as handoff:
        await handoff.put([event(1)])
        await sink.entered.wait()
        await handoff.put([event(2)])
        passing = asyncio.create_task(grace_passes())
    await passing
    assert "stopping with events not handed over venue=t events=1" in caplog.text


async def test_a_passing_fault_is_retried_without_reordering() -> None:
    seen: list[str] = []
    failures = [OSError("database is locked")]

    async def flaky(events: Sequence[Event]) -> None:
        if failures:
            raise failures.pop()
        seen.extend(e.key for e in events)

    health, clock = WatcherHealth(name="t"), RecordingClock()
    async with Handoff(flaky, health, label="t", clock=clock) as handoff:
        for n in range(1, 4):
            await handoff.put([event(n)])
        await handoff.settled()
    assert seen == ["test:1", "test:2", "test:3"]
    assert (health.events, health.errors) == (3, 0)
    assert clock.slept == [0.05]


async def test_an_unavailable_sink_is_waited_for_however_long_and_loses_nothing() -> None:
    seen: list[str] = []
    outage = [SinkUnavailable("SQLITE_FULL: database or disk is full")] * 12  # more tries than any other fault gets

    async def full_disk(events: Sequence[Event]) -> None:
        if outage:
            raise outage.pop()
        seen.extend(e.key for e in events)

    health, clock = WatcherHealth(name="t"), RecordingClock()
    async with Handoff(full_disk, health, label="t", clock=clock) as handoff:
        for n in range(1, 4):
            await handoff.put([event(n)])
        await handoff.settled()
    assert seen == ["test:1", "test:2", "test:3"]
    assert (health.events, health.errors) == (3, 0)
    assert health.last_error == "sink: SinkUnavailable: SQLITE_FULL: database or disk is full"
    assert clock.slept == [0.05, 0.25, 0.5] + [1.0] * 9  # backs off, then keeps trying at the cap


async def test_an_outage_past_a_minute_is_reported_as_an_error_once(caplog: pytest.LogCaptureFixture) -> None:
    outage = [SinkUnavailable("SQLITE_FULL: database or disk is full")] * 70  # 0.8 s, then 1 s a try

    async def full_disk(events: Sequence[Event]) -> None:
        if outage:
            raise outage.pop()

    with caplog.at_level(logging.WARNING, logger="watchers.handoff"):
        async with Handoff(full_disk, WatcherHealth(name="t"), label="t", clock=RecordingClock()) as handoff:
            await handoff.put([event(1)])
            await handoff.settled()
    held = [r for r in caplog.records if r.getMessage().startswith("sink unavailable")]
    assert [r.levelno for r in held] == [logging.WARNING] * 3 + [logging.ERROR]
    assert "tries=64 waited_s=61" in held[-1].getMessage()  # the first try after a minute of backing off


async def test_events_read_while_another_process_locks_the_database_are_stored_when_it_lets_go(
    tmp_path: Path,
) -> None:
    async with Store(tmp_path / "t.db") as store:
        assert isinstance(store.db, SqliteEngine)
        store.db.conn.execute("PRAGMA busy_timeout=1")
        pipeline, health = Pipeline(store.outbox), WatcherHealth(name="t")
        other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)  # an operator's sqlite3 shell
        other.execute("BEGIN IMMEDIATE")
        async with Handoff(pipeline, health, label="t", clock=RecordingClock()) as handoff:
            await handoff.put([event(1), event(2)])
            async with asyncio.timeout(10):  # a hang guard only
                while health.last_error is None:  # noqa: ASYNC110 - waiting for the handoff under test
                    await asyncio.sleep(0.001)
            assert "SQLITE_BUSY" in health.last_error
            await handoff.put([event(3)])
            other.execute("COMMIT")
            await handoff.settled()
        other.close()
        keys = await event_keys(store)
    assert keys == ["test:1", "test:2", "test:3"]
    assert (health.events, health.errors, pipeline.stats.accepted) == (3, 0, 3)


def test_a_buffer_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="max_buffered"):
        Handoff(GatedSink(), WatcherHealth(name="t"), label="t", max_buffered=0)


async def test_a_flood_reaches_the_sink_in_bounded_batches() -> None:
    sink, health = GatedSink(), WatcherHealth(name="t")
    async with Handoff(sink, health, label="t", max_batch=4) as handoff:
        await handoff.put([event(0)])
        await sink.entered.wait()
        await handoff.put([event(n) for n in range(1, 11)])
        sink.gate.set()
        await handoff.settled()
    assert [len(call) for call in sink.calls] == [1, 4, 4, 2]
    assert [key for call in sink.calls for key in call] == [f"test:{n}" for n in range(11)]


async def test_an_unstorable_event_a_second_among_fifty_valid_ones_delays_none_of_them() -> None:
    """Issue 10.8: the handoff retried any failure for 2.55 s, so one event the store can never hold each
    second pushed valid alerts seconds late. Rejected events are isolated at once: on a frozen clock that
    never moves, every valid event is handed over without a single wait."""
    clock = FrozenClock()
    handed: list[str] = []
    sink_calls = 0

    async def sink(events: Sequence[Event]) -> None:
        nonlocal sink_calls
        sink_calls += 1
        if any(e.key.endswith(":bad") for e in events):
            raise EventRejected("value does not fit NUMERIC")
        handed.extend(e.key for e in events)

    health = WatcherHealth(name="t", clock=clock)
    async with Handoff(sink, health, label="t", clock=clock, grace_s=0) as handoff:
        for second in range(5):
            burst = [event(second * 100 + n) for n in range(50)]
            bad = burst[25].model_copy(update={"key": f"test:{second}:bad"})
            for item in [*burst[:25], bad, *burst[25:]]:
                await handoff.put([item])
            async with asyncio.timeout(5):  # a hang guard: time itself never moves here
                await handoff.settled()
            assert clock.sleepers == 0
            await clock.advance(1.0)
    assert handed == [f"test:{s * 100 + n}" for s in range(5) for n in range(50)]
    assert health.rejected == {"unstorable": 5}
    assert (health.events, health.errors) == (250, 0)
