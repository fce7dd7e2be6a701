"""The whale watcher end to end on loopback: a wallet seeded from `clearinghouseState` on a fake `/info` that
weighs each request as the docs do, its trades read from the public `trades` stream (its own connection
here, no `hyperliquid` watcher running), a replay after a resubscribe alerting nobody twice, a restart
mid-position telling once what changed while it was down, and the weight the fake saw within the budget."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.settings import load_settings
from perpwatch.clock import SYSTEM_CLOCK
from perpwatch.events import LiquidationBody, PositionBody, WhaleTradeBody
from tests.conftest import eventually
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
        whale_near_poll_s=2,
        ws_backoff_initial_s=0.05,
        ws_backoff_max_s=0.2,
    )
    runtime = Runtime(clock=SYSTEM_CLOCK, kv=kv, watched=_watched)
    watcher = REGISTRY["hyperliquid_whales"].build(settings, runtime.context("hyperliquid_whales"))
    assert isinstance(watcher, HyperliquidWhaleWatcher) and watcher.own_stream is not None
    return watcher, runtime


async def test_seed_trade_replay_restart_and_budget(venue: tuple[FakeRest, FakeVenueStream, FakeInfo]) -> None:
    rest, ws, info = venue
    kv = MemoryKv()
    watcher, runtime = _watcher(rest, ws, kv)
    sink = CollectingSink()
    task = asyncio.create_task(watcher.run(sink))
    try:
        await eventually(lambda: WHALE in watcher.books and watcher.books[WHALE].seeded and bool(ws.received()))
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
        await eventually(lambda: len(ws.connections) > 1 and bool(ws.received()))
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
        await eventually(lambda: bool(ws.received()))
        await ws.push(add)  # an old trade replayed: nothing
        await ws.push(trades_frame(900003, "3000", "400", buyer=OTHER, seller="0x" + "cd" * 20))
        await after.until(2)
        assert len(after.events) == 2 and isinstance(after.events[1].body, WhaleTradeBody)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()
    assert info.max_weight_per_min() <= WEIGHT_PER_MIN


def _liquidation_fill(now_ms: int) -> dict[str, Any]:
    """The ccxt userFills sample as WHALE's ETH long liquidated into the book (research §1.2 field names)."""
    fill = _load_fill()
    fill.update(
        coin="ETH",
        px="2950",
        sz="10",
        side="A",
        startPosition="10",
        dir="Liquidated Cross Long",
        time=now_ms,
        tid=900777,
        liquidation={"liquidatedUser": WHALE, "markPx": "2949.5", "method": "market"},
    )
    return fill


def _load_fill() -> dict[str, Any]:
    path = Path(__file__).resolve().parents[2] / "shared" / "payloads" / "hyperliquid_ws_userFills_ccxt.json"
    fill: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["data"]["fills"][0]
    return fill


async def _near_liquidation(rest: FakeRest, ws: FakeVenueStream, info: FakeInfo) -> tuple[Any, Runtime, Any, Any]:
    info.liquidation_px = "2950"  # mark 3000: 1.7% away, past the 2% warning already when seeded
    watcher, runtime = _watcher(rest, ws, MemoryKv())
    sink = CollectingSink()
    task = asyncio.create_task(watcher.run(sink))
    await eventually(lambda: WHALE in watcher.books and watcher.books[WHALE].seeded and bool(ws.received()))
    assert watcher.books[WHALE].endangered and sink.events == []  # seeded silently, polled often from now
    return watcher, runtime, sink, task


async def test_a_close_near_liquidation_is_confirmed_by_the_wallets_fill(
    venue: tuple[FakeRest, FakeVenueStream, FakeInfo],
) -> None:
    rest, ws, info = venue
    _, runtime, sink, task = await _near_liquidation(rest, ws, info)
    try:
        now_ms = int(time.time() * 1000)
        info.eth, info.fills = "0", [_liquidation_fill(now_ms)]
        await ws.push(trades_frame(900777, "2950", "10", buyer=OTHER, seller=WHALE))  # looks like a sale
        await sink.until(1)
        [event] = sink.events
        assert isinstance(event.body, LiquidationBody) and event.subject == WHALE
        assert (event.body.cause, event.body.method, event.body.side.value) == ("liquidation", "market", "long")
        assert event.usd == Decimal(29500)
        assert any(a["type"] == "userFillsByTime" for a in info.asked)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()


async def test_a_vanished_position_is_checked_and_confirmed_by_the_ledger(
    venue: tuple[FakeRest, FakeVenueStream, FakeInfo],
) -> None:
    rest, ws, info = venue
    _, runtime, sink, task = await _near_liquidation(rest, ws, info)
    try:
        info.eth = "0"  # gone, with no trade seen and no fill naming it: the ledger is asked
        info.ledger = [
            {
                "time": int(time.time() * 1000),
                "hash": "0x" + "34" * 32,
                "delta": {
                    "type": "liquidation",
                    "accountValue": "-3.2",
                    "leverageType": "Cross",
                    "liquidatedPositions": [{"coin": "ETH", "szi": "10"}],
                },
            }
        ]
        await sink.until(1)
        [event] = sink.events
        assert isinstance(event.body, LiquidationBody) and event.body.note is not None
        assert [a["type"] for a in info.asked][-2:] == ["userFillsByTime", "userNonFundingLedgerUpdates"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()


async def test_hip3_dexes_are_seeded_streamed_and_shown(venue: tuple[FakeRest, FakeVenueStream, FakeInfo]) -> None:
    rest, ws, info = venue
    info.dexes, info.dex_positions = ["xyz"], {"xyz": [("xyz:TSLA", "-5")]}
    watcher, runtime = _watcher(rest, ws, MemoryKv())
    sink = CollectingSink()
    task = asyncio.create_task(watcher.run(sink))
    try:
        await eventually(lambda: WHALE in watcher.books and "xyz:TSLA" in watcher.books[WHALE].holdings)
        assert {"type": "clearinghouseState", "user": WHALE, "dex": "xyz"} in info.asked
        view = await watcher.account(WHALE)
        assert [(p.coin, p.side.value, p.size) for p in view.positions] == [
            ("ETH", "long", Decimal(10)),
            ("xyz:TSLA", "short", Decimal(5)),
        ]
        assert watcher.health.extra["dexes"] == "main, xyz"
        # HIP-3 coins are on the trades stream too: the wallet's trade there moves its book at once.
        subscribe = '{"method":"subscribe","subscription":{"type":"trades","coin":"xyz:TSLA"}}'
        await eventually(lambda: subscribe in ws.received())
        await ws.push(trades_frame(900009, "400", "2", coin="xyz:TSLA"))  # WHALE buys 2: a short of 5 cut
        await sink.until(1)
        [cut] = sink.events
        assert isinstance(cut.body, PositionBody) and cut.body.seen_by == "fills"
        assert (cut.body.coin, cut.body.change, cut.body.size_after) == ("xyz:TSLA", "reduced", Decimal(3))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()


async def test_a_wallet_no_chat_watches_any_more_is_forgotten_with_its_book(
    venue: tuple[FakeRest, FakeVenueStream, FakeInfo],
) -> None:
    rest, ws, _ = venue
    kv = MemoryKv()
    watcher, runtime = _watcher(rest, ws, kv)
    watched = {WHALE}

    async def current() -> set[str]:
        return set(watched)

    object.__setattr__(watcher.ctx, "watched", current)
    task = asyncio.create_task(watcher.run(CollectingSink()))
    try:
        await eventually(lambda: WHALE in watcher.books and watcher.books[WHALE].seeded)
        await eventually(lambda: ("hyperliquid_whales", "book:" + WHALE) in kv.values)
        watched.clear()
        await eventually(lambda: WHALE not in watcher.books)
        assert await watcher.ctx.state.get("book:" + WHALE) is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()


class _FlakySink(CollectingSink):
    """The pipeline away for its first `fails` calls (storage unavailable), then taking everything."""

    def __init__(self, fails: int) -> None:
        super().__init__()
        self.fails = fails

    async def __call__(self, events: Any) -> None:
        if self.fails > 0:
            self.fails -= 1
            raise OSError("database is locked")
        await super().__call__(events)


async def test_alerts_the_pipeline_refused_are_held_and_handed_over_once(
    venue: tuple[FakeRest, FakeVenueStream, FakeInfo],
) -> None:
    rest, ws, _ = venue
    watcher, runtime = _watcher(rest, ws, MemoryKv())
    sink = _FlakySink(fails=2)
    task = asyncio.create_task(watcher.run(sink))
    try:
        await eventually(lambda: WHALE in watcher.books and watcher.books[WHALE].seeded and bool(ws.received()))
        await ws.push(trades_frame(900001, "3000", "2"))
        await sink.until(1)
        assert sink.fails == 0 and len(sink.events) == 1 and watcher.health.errors == 2
        assert not task.done()  # held and retried, not a crashed watcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()
