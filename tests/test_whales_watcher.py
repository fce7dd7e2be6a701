"""The whale watcher end to end on loopback: a wallet seeded from `clearinghouseState` on a fake `/info` that
weighs each request as the docs do, its trades read from the public `trades` stream (its own connection
here, no `hyperliquid` watcher running), a replay after a resubscribe alerting nobody twice, a restart
mid-position telling once what changed while it was down, and the weight the fake saw within the budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from bot.settings import load_settings
from perpwatch.clock import SYSTEM_CLOCK
from perpwatch.events import PositionBody, WhaleTradeBody
from tests.fakes.hyperliquid_info import OTHER, WHALE, FakeInfo, trades_frame
from tests.fakes.rest import FakeRest
from tests.fakes.sink import CollectingSink
from tests.fakes.venue_ws import FakeVenueStream
from watchers.hyperliquid_whales import HyperliquidWhaleWatcher
from watchers.registry import REGISTRY
from watchers.runtime import MemoryKv, Runtime

WEIGHT_PER_MIN = 600


@pytest.fixture
async def venue() -> AsyncIterator[tuple[FakeRest, FakeVenueStream, FakeInfo]]:
    info = FakeInfo()
    async with FakeRest(SYSTEM_CLOCK) as rest, FakeVenueStream({'{"method":"ping"}': '{"channel":"pong"}'}) as ws:
        rest.answer_posts("/info", info)
        yield rest, ws, info


async def _watched() -> set[str]:
    return {WHALE}


def _watcher(rest: FakeRest, ws: FakeVenueStream, kv: MemoryKv) -> tuple[HyperliquidWhaleWatcher, Runtime]:
    settings = load_settings(
        hyperliquid_ws_url=ws.url,
        hyperliquid_info_url=rest.url("/info"),
        whale_weight_per_min=WEIGHT_PER_MIN,
        whale_poll_s=5,
        ws_backoff_initial_s=0.05,
        ws_backoff_max_s=0.2,
    )
    runtime = Runtime(clock=SYSTEM_CLOCK, kv=kv, watched=_watched)
    watcher = REGISTRY["hyperliquid_whales"].build(settings, runtime.context("hyperliquid_whales"))
    assert isinstance(watcher, HyperliquidWhaleWatcher) and watcher.own_stream is not None
    return watcher, runtime


async def _until(predicate: Any, timeout_s: float = 10.0) -> None:
    """Hang guard only: the watcher's books have no event to wait on, so this looks every 20 ms."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_seed_trade_replay_restart_and_budget(venue: tuple[FakeRest, FakeVenueStream, FakeInfo]) -> None:
    rest, ws, info = venue
    kv = MemoryKv()
    watcher, runtime = _watcher(rest, ws, kv)
    sink = CollectingSink()
    task = asyncio.create_task(watcher.run(sink))
    try:
        await _until(lambda: WHALE in watcher.books and watcher.books[WHALE].seeded and bool(ws.received()))
        assert sink.events == []  # seeding tells nothing
        add = trades_frame(900001, "3000", "2")
        await ws.push(add)
        await sink.until(1)
        [added] = sink.events
        assert isinstance(added.body, PositionBody) and added.subject == WHALE
        assert (added.body.change, added.body.size_before, added.body.size_after) == (
            "increased",
            Decimal(10),
            Decimal(12),
        )
        await ws.drop_all()  # the stream replays recent trades after a resubscribe
        await _until(lambda: len(ws.connections) > 1 and bool(ws.received()))
        await ws.push(add)
        await ws.push(trades_frame(900002, "3000", "400", buyer=OTHER, seller="0x" + "cd" * 20))  # $1.2M by others
        await sink.until(2)
        trade = sink.events[1].body
        assert isinstance(trade, WhaleTradeBody) and trade.notional_usd == Decimal(1_200_000)
        assert len(sink.events) == 2  # the replayed add moved nothing
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()

    # Down for a while: the wallet added 3 more. The restart tells that once, from the snapshot.
    info.eth = "15"
    again, runtime = _watcher(rest, ws, kv)
    after = CollectingSink()
    task = asyncio.create_task(again.run(after))
    try:
        await after.until(1)
        [caught_up] = after.events
        body = caught_up.body
        assert isinstance(body, PositionBody)
        assert (body.change, body.seen_by, body.size_after) == ("increased", "snapshot", Decimal(15))
        await _until(lambda: bool(ws.received()))
        await ws.push(add)  # an old trade replayed: nothing
        await ws.push(trades_frame(900003, "3000", "400", buyer=OTHER, seller="0x" + "cd" * 20))
        await after.until(2)
        assert len(after.events) == 2 and isinstance(after.events[1].body, WhaleTradeBody)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()
    assert info.max_weight_per_min() <= WEIGHT_PER_MIN
