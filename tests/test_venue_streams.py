"""A topic venue end to end: its markets fetched over REST, its topics subscribed on a loopback stream in the
venue's wire format, its frames turned into events, and a dropped socket reconnected and resubscribed."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpwatch.clock import SYSTEM_CLOCK
from perpwatch.events import PositionSide
from tests.factories import liq
from tests.fakes.rest import FakeRest
from tests.fakes.sink import CollectingSink
from tests.fakes.ws_topics import FakeTopicServer
from watchers import bybit
from watchers.runtime import Runtime
from watchers.venue_stream import TopicVenueWatcher
from watchers.ws import WsTuning

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
TUNING = WsTuning(probe_after_s=30, probe_timeout_s=10, max_lifetime_s=86400, backoff_initial_s=0.05, backoff_max_s=0.2)
INSTRUMENTS = "/v5/market/instruments-info"


def _sample(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


@pytest.fixture
async def rest() -> AsyncIterator[FakeRest]:
    async with FakeRest(SYSTEM_CLOCK) as fake:
        fake.serve(INSTRUMENTS, _sample("bybit_instrumentsInfo_docs.json"))
        yield fake


@pytest.fixture
async def venue() -> AsyncIterator[FakeTopicServer]:
    async with FakeTopicServer(per_frame=bybit.TOPICS_PER_FRAME) as fake:
        yield fake


def _frame(**item: str | int) -> str:
    frame = copy.deepcopy(_sample("bybit_allLiquidation_docs.json"))
    frame["data"][0].update(item)
    frame["data"][0]["T"] = int(frame["data"][0]["T"])
    frame["topic"] = f"allLiquidation.{frame['data'][0]['s']}"
    return json.dumps(frame)


async def test_bybit_markets_topics_frames_and_a_dropped_socket(rest: FakeRest, venue: FakeTopicServer) -> None:
    runtime = Runtime(clock=SYSTEM_CLOCK)
    watcher = TopicVenueWatcher(bybit.STREAM, venue.url, rest.url(INSTRUMENTS), TUNING, runtime.context("bybit"))
    sink = CollectingSink()
    task = asyncio.create_task(watcher.run(sink))
    try:
        await venue.until(lambda: venue.subscribed() == ["allLiquidation.BTCUSDT"])
        [conn] = venue.live
        now_ms = int(SYSTEM_CLOCK.now().timestamp() * 1000)
        await conn.ws.send_str(_frame(s="BTCUSDT", T=now_ms, v="0.5", p="60000", S="Sell"))
        await sink.until(1)
        [event] = sink.events
        assert (event.symbol, liq(event).side, event.usd) == ("BTCUSDT", PositionSide.SHORT, Decimal(30000))
        # A market the reference data does not know is refused, never guessed.
        await conn.ws.send_str(_frame(s="NEWUSDT", T=now_ms))
        await conn.ws.send_str(_frame(s="BTCUSDT", T=now_ms + 1, v="1", p="60000", S="Buy"))
        await sink.until(2)  # frames are read in order: the unknown one was handled before this one
        assert watcher.health.parse_errors == 1 and [liq(e).side for e in sink.events][1] is PositionSide.LONG
        # A dropped socket reconnects and subscribes again; a replayed frame keeps its key.
        await venue.drop(conn)
        await venue.until(lambda: len(venue.live) == 1 and venue.live[0] is not conn and bool(venue.subscribed()))
        assert venue.subscribed() == ["allLiquidation.BTCUSDT"]
        await venue.live[0].ws.send_str(_frame(s="BTCUSDT", T=now_ms, v="0.5", p="60000", S="Sell"))
        await sink.until(3)
        assert sink.events[2].key == event.key
        assert watcher.health.reconnects >= 1
        assert watcher.health.extra["markets"].startswith("1 keys, live")
        assert "rest budget" in watcher.health.extra
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()
