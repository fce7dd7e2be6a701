"""Cascades: detection in the pipeline's door, one thread per cascade, singles folded for chats that take both."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.cascades import CascadeDetector, CascadeSettings, Thresholds, resume
from bot.families.registry import render_event
from bot.pipeline import Pipeline
from perpwatch.clock import FrozenClock
from perpwatch.events import CascadeBody, Event, LiquidationBody
from storage import Store
from storage.models import Chat
from tests.factories import liquidation

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SETTINGS = CascadeSettings(
    window=timedelta(seconds=60),
    symbol=Thresholds(min_count=5, min_usd=Decimal(1_000_000)),
    market=Thresholds(min_count=8, min_usd=Decimal(5_000_000)),
    revision_every=timedelta(0),  # a revision on every commit that grows it: the throttle has tests of its own
)
THROTTLED = dataclasses.replace(  # one symbol's cascade alone: the market scope stays out of these tests
    SETTINGS, revision_every=timedelta(seconds=2), market=Thresholds(min_count=1000, min_usd=Decimal(10**12))
)
THREAD = "cascade:binance:BTCUSDT:1795694400000"


def liq_at(n: int, *, at: datetime = NOW, side: str = "long", usd: str = "1000", **kw: str) -> Event:
    return liquidation(key=f"liq-{n}-{kw.get('venue', 'binance')}", at=at, side=side, usd=usd, **kw)


def cascade(event: Event) -> CascadeBody:
    assert isinstance(event.body, CascadeBody)
    return event.body


def apply(detector: CascadeDetector, events: list[Event], now: datetime = NOW) -> list[Event]:
    plan = detector.plan(events, now)
    detector.apply(plan)
    return plan.events


# --- the detector alone ----------------------------------------------------------------------------------
def test_opens_at_the_count_grows_by_revision_and_ends_with_a_final_figure() -> None:
    detector = CascadeDetector(SETTINGS)
    assert apply(detector, [liq_at(i, at=NOW + timedelta(seconds=i)) for i in range(4)]) == []
    [opened] = apply(detector, [liq_at(4, at=NOW + timedelta(seconds=4), side="short", usd="2500")])
    body = cascade(opened)
    assert (opened.thread, opened.revision) == ("cascade:binance:BTCUSDT:1795694400000", 10)
    assert (body.count, body.usd, body.long_count, body.short_count) == (5, Decimal("6500"), 4, 1)
    assert (body.largest_usd, body.largest_side.value, body.started_at) == (Decimal("2500"), "short", NOW)
    assert opened.venue is not None and opened.venue.value == "binance" and opened.symbol == "BTCUSDT"
    [grown] = apply(detector, [liq_at(5, at=NOW + timedelta(seconds=5)), liq_at(6, at=NOW + timedelta(seconds=6))])
    assert (grown.thread, grown.revision, cascade(grown).count) == (opened.thread, 14, 7)
    assert apply(detector, [liq_at(5, at=NOW + timedelta(seconds=5))]) == []  # a replay is not one more
    assert detector.open_cascades == [opened.thread]
    [closed] = apply(detector, [], NOW + timedelta(seconds=70))  # its window is empty: the market went quiet
    assert (closed.thread, closed.revision) == (opened.thread, 15)
    assert cascade(closed).closed and cascade(closed).count == 7
    assert detector.open_cascades == []


def test_usd_alone_opens_and_the_market_scope_spans_venues() -> None:
    detector = CascadeDetector(SETTINGS)
    assert apply(detector, [liq_at(1, usd="1000000")]) == []  # one large liquidation is not a cascade
    [pair] = apply(detector, [liq_at(2, usd="1")])
    assert cascade(pair).scope == "symbol" and cascade(pair).count == 2
    spread = [liq_at(10 + i, venue=venue, symbol=f"S{i}USDT") for i, venue in enumerate(["okx", "bybit"] * 4)]
    events = apply(detector, spread)
    [market] = [e for e in events if cascade(e).scope == "market"]
    assert market.venue is None and market.symbol is None
    assert cascade(market).count == 10 and [v.value for v in cascade(market).venues] == ["binance", "bybit", "okx"]


def test_old_events_and_adl_are_not_cascades_and_sampled_feeds_make_floors() -> None:
    detector = CascadeDetector(SETTINGS)
    stale = [liq_at(i, at=NOW - timedelta(minutes=5)) for i in range(10)]
    assert apply(detector, stale) == []
    base = liq_at(99)
    assert isinstance(base.body, LiquidationBody)
    adl = [
        base.model_copy(update={"key": f"adl-{i}", "body": base.body.model_copy(update={"cause": "adl"})})
        for i in range(10)
    ]
    assert apply(detector, adl) == []
    sampled = [
        base.model_copy(update={"key": f"s-{i}", "body": base.body.model_copy(update={"sampled": True})})
        for i in range(5)
    ]
    [opened] = apply(detector, sampled)
    assert [v.value for v in cascade(opened).sampled_venues] == ["binance"]
    alert = render_event(opened)
    assert ("Liquidations", "≥5") in [(f.name, f.value) for f in alert.fields]
    assert alert.footer == "Counts are floors: Binance report only some liquidations."
    assert alert.title == "🌊 Liquidation cascade growing: BTCUSDT on Binance, 0s"


def test_a_restart_resumes_the_open_cascade_in_the_same_thread() -> None:
    first = CascadeDetector(SETTINGS)
    [opened] = apply(first, [liq_at(i, at=NOW + timedelta(seconds=i)) for i in range(5)])
    later = NOW + timedelta(seconds=10)
    again = CascadeDetector(SETTINGS)
    again.load([liq_at(i, at=NOW + timedelta(seconds=i)) for i in range(5)], [opened], later)
    assert apply(again, [liq_at(3, at=NOW + timedelta(seconds=3))], later) == []  # already counted before
    [grown] = apply(again, [liq_at(7, at=later)], later)
    assert (grown.thread, cascade(grown).count) == (opened.thread, 6)


# --- through the pipeline and the outbox, on both engines ------------------------------------------------
@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store(database_url, clock=FrozenClock(NOW)) as s:
        yield s


async def _chat(store: Store, name: str, *topics: str, cascade_min: Decimal | None = None) -> Chat:
    chat = await store.chats.upsert("telegram", name, kind="private", title=None)
    for topic in topics:
        minimum = cascade_min if topic == "cascade" else None
        await store.chats.subscribe(chat.id, topic, venue=None, symbol=None, min_usd=minimum, limit=10)
    return chat


async def _heard(store: Store, chat: Chat) -> list[str]:
    _, due = await store.outbox.due_for_chat(chat.id, NOW + timedelta(seconds=30), limit=500)
    return [d.event.key for d in due if d.event is not None]


@pytest.mark.engines
async def test_a_chat_taking_both_hears_the_cascade_instead_of_its_singles(store: Store) -> None:
    both = await _chat(store, "both", "liquidation", "cascade")
    singles = await _chat(store, "singles", "liquidation")
    cascades = await _chat(store, "cascades", "cascade")
    picky = await _chat(store, "picky", "liquidation", "cascade", cascade_min=Decimal(1_000_000))
    pipeline = Pipeline(store.outbox, cascades=CascadeDetector(SETTINGS), clock=store.clock)
    for i in range(3):
        await pipeline.accept([liq_at(i, at=NOW + timedelta(seconds=i))])
    # One commit opens the cascade and carries two more singles.
    await pipeline.accept([liq_at(i, at=NOW + timedelta(seconds=i)) for i in range(3, 7)])
    thread = "cascade:binance:BTCUSDT:1795694400000"
    every_single = [f"liq-{i}-binance" for i in range(7)]
    assert await _heard(store, singles) == every_single
    assert await _heard(store, cascades) == [f"{thread}:14"]
    # Folded: every single the cascade carries, including those logged before it opened, but not yet read.
    assert await _heard(store, both) == [f"{thread}:14"]
    # A cascade below this chat's cascade minimum never reaches it: its singles are not folded away.
    assert await _heard(store, picky) == every_single
    assert [r.new for r in await pipeline.accept([liq_at(6, at=NOW + timedelta(seconds=6))])] == [False]
    assert pipeline.stats.cascade_revisions == 1  # the replay made no revision


@pytest.mark.engines
async def test_the_clock_ends_a_quiet_cascade_with_a_final_revision(store: Store) -> None:
    cascades = await _chat(store, "cascades", "cascade")
    clock = store.clock
    assert isinstance(clock, FrozenClock)
    pipeline = Pipeline(store.outbox, cascades=CascadeDetector(SETTINGS), clock=clock)
    await pipeline.accept([liq_at(i, at=NOW + timedelta(seconds=i)) for i in range(5)])
    await pipeline.tick()
    assert pipeline.stats.cascade_revisions == 1  # still in its window: nothing to end
    await clock.advance(90)
    await pipeline.tick()
    _, due = await store.outbox.due_for_chat(cascades.id, clock.now(), limit=10)
    [final] = [d for d in due if d.event is not None]  # the superseded opening revision is not sent
    assert final.event is not None and cascade(final.event).closed and final.revision == 11
    await pipeline.tick()  # nothing open: nothing more
    assert pipeline.stats.cascade_revisions == 2


def test_a_plan_whose_commit_failed_changes_nothing_and_the_window_slides() -> None:
    detector = CascadeDetector(SETTINGS)
    burst = [liq_at(i, at=NOW + timedelta(seconds=i)) for i in range(5)]
    unstored = detector.plan(burst, NOW + timedelta(seconds=5))  # its commit failed: never applied
    assert [e.key for e in unstored.events] == ["cascade:binance:BTCUSDT:1795694400000:10"]
    assert detector.open_cascades == []
    again = apply(detector, burst, NOW + timedelta(seconds=5))  # the watcher's retry counts them once
    assert [e.key for e in again] == [e.key for e in unstored.events]
    # Four of an earlier minute have left the window: with one more, that is not a cascade.
    late = CascadeDetector(SETTINGS)
    apply(late, burst[:4], NOW + timedelta(seconds=4))
    assert apply(late, [liq_at(9, at=NOW + timedelta(seconds=90))], NOW + timedelta(seconds=90)) == []


def _at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_growth_is_written_at_most_once_per_throttle_period_and_the_close_states_it_all() -> None:
    detector = CascadeDetector(THROTTLED)
    [opened] = apply(detector, [liq_at(i, at=_at(i)) for i in range(5)], _at(5))  # opening is never held
    assert opened.key == f"{THREAD}:10"
    plan = detector.plan([liq_at(5, at=_at(5.5))], _at(5.5))
    detector.apply(plan)
    assert plan.events == [] and [(f.key, f.thread) for f in plan.folds] == [("liq-5-binance", THREAD)]
    assert apply(detector, [liq_at(6, at=_at(6.5))], _at(6.5)) == []
    [grown] = apply(detector, [], _at(7))  # the tick: two seconds since the opening revision
    assert (grown.key, cascade(grown).count) == (f"{THREAD}:14", 7)
    assert apply(detector, [], _at(8)) == []  # nothing new: nothing written
    assert apply(detector, [liq_at(7, at=_at(8.5))], _at(8.5)) == []  # held until 9 s
    [final] = apply(detector, [], _at(80))  # quiet: the close carries the held single too
    assert (final.revision, cascade(final).count, cascade(final).closed) == (17, 8, True)


def test_a_wall_clock_stepped_back_does_not_hold_growth() -> None:
    detector = CascadeDetector(THROTTLED)
    apply(detector, [liq_at(i, at=_at(i)) for i in range(5)], _at(5))
    [grown] = apply(detector, [liq_at(5, at=_at(5))], _at(3))
    assert cascade(grown).count == 6


@pytest.mark.engines
async def test_a_restart_between_revisions_keeps_the_held_growth_in_the_same_message(store: Store) -> None:
    cascades = await _chat(store, "cascades", "cascade")
    both = await _chat(store, "both", "liquidation", "cascade")
    clock = store.clock
    assert isinstance(clock, FrozenClock)
    pipeline = Pipeline(store.outbox, cascades=CascadeDetector(THROTTLED), clock=clock)
    await pipeline.accept([liq_at(i, at=_at(i)) for i in range(5)])
    await pipeline.accept([liq_at(5, at=_at(0.5)), liq_at(6, at=_at(0.6))])  # held: no revision yet
    assert pipeline.stats.cascade_revisions == 1
    # The bot dies here. What is stored long after the newest revision is not its growth (the bot would have
    # written a revision had it been alive), so a restart never takes a later run's events for it.
    await clock.advance(30)
    await store.outbox.accept([liq_at(8, at=clock.now())])
    held = await store.history.accepted_after("liquidation", f"{THREAD}:10", within=timedelta(seconds=4))
    assert [e.key for e in held] == ["liq-5-binance", "liq-6-binance"]
    again = CascadeDetector(THROTTLED)
    await resume(again, store.history, _at(31), tick=timedelta(seconds=1))
    assert again.open_cascades == [THREAD]
    # The first commit after the restart writes the held growth; a replay of a held single is not counted.
    [grown] = apply(again, [liq_at(6, at=_at(0.6))], _at(31))
    assert (grown.key, cascade(grown).count) == (f"{THREAD}:14", 7)
    _, due = await store.outbox.due_for_chat(cascades.id, _at(30), limit=10)
    assert [d.event.key for d in due if d.event is not None] == [f"{THREAD}:10"]
    assert "liq-5-binance" not in await _heard(store, both)  # folded when held: the cascade carries it


@pytest.mark.engines
async def test_shutdown_writes_the_growth_the_throttle_held(store: Store) -> None:
    cascades = await _chat(store, "cascades", "cascade")
    pipeline = Pipeline(store.outbox, cascades=CascadeDetector(THROTTLED), clock=store.clock)
    await pipeline.accept([liq_at(i, at=_at(i)) for i in range(5)])
    await pipeline.accept([liq_at(5, at=_at(0.5))])
    await pipeline.tick()  # not due yet: held
    assert pipeline.stats.cascade_revisions == 1
    await pipeline.drain()
    _, due = await store.outbox.due_for_chat(cascades.id, _at(30), limit=10)
    [newest] = [d.event for d in due if d.event is not None]
    assert newest.key == f"{THREAD}:12" and not cascade(newest).closed
