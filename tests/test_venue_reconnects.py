"""The topic venues through the real watcher on loopback: markets from REST, the venue's own subscribe frames on
the socket, a liquidation frame in, and every socket dropped: the watcher reconnects, subscribes again, and a
replayed frame keeps its key (nothing lost, nothing doubled). And each venue's heartbeat on a running socket,
on a frozen clock: sent on the venue's interval while liquidations flow, its documented pong taken as control."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.venues import sample_streams
from perpwatch.clock import SYSTEM_CLOCK, FrozenClock
from tests.fakes.rest import FakeRest
from tests.fakes.sink import CollectingSink
from tests.fakes.venue_ws import FakeVenueStream
from watchers import bybit, hyperliquid, lighter, okx, pacifica
from watchers.runtime import Runtime
from watchers.venue_stream import TopicVenueWatcher, VenueStream
from watchers.ws import WsTuning

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
TUNING = WsTuning(probe_after_s=30, probe_timeout_s=10, max_lifetime_s=86400, backoff_initial_s=0.05, backoff_max_s=0.2)

VENUES: dict[str, tuple[VenueStream[Any], str, str, dict[str, str]]] = {
    # venue: (stream, REST path, reference sample, the venue's ping -> its documented pong, research §1.3-§5.2)
    "bybit": (
        bybit.STREAM,
        "/v5/market/instruments-info",
        "bybit_instrumentsInfo_docs.json",
        {bybit.heartbeat_frame(): '{"success":true,"ret_msg":"pong","conn_id":"c0","op":"ping"}'},
    ),
    "okx": (okx.STREAM, "/api/v5/public/instruments", "okx_instruments_ccxt.json", {okx.heartbeat_frame(): "pong"}),
    "lighter": (
        lighter.STREAM,
        "/api/v1/orderBooks",
        "lighter_orderBooks_real.json",
        {lighter.heartbeat_frame(): '{"type":"pong"}'},
    ),
    "pacifica": (
        pacifica.STREAM,
        "/api/v1/info",
        "pacifica_info_docs.json",
        {pacifica.heartbeat_frame(): '{"channel":"pong"}'},
    ),
    "hyperliquid": (hyperliquid.STREAM, "/info", "", {hyperliquid.heartbeat_frame(): '{"channel":"pong"}'}),
}
HEARTBEATS = {
    # venue: (our interval, the venue's documented cut for a silent client; research §1.3, §3.2, §3.3, §4, §5.2)
    "bybit": (bybit.HEARTBEAT_S, 20.0),  # "send ping every 20 s": the interval is the rule itself
    "okx": (okx.HEARTBEAT_S, 30.0),
    "lighter": (lighter.HEARTBEAT_S, 120.0),
    "pacifica": (pacifica.HEARTBEAT_S, 60.0),
    "hyperliquid": (hyperliquid.HEARTBEAT_S, 60.0),
}
LIQUIDATOR = "0x2e3d94f0562703b25c83308a05046ddaf9a8dd14"  # an HLP child, named "HLP Liquidator" below
TRADER = "0x005844b2ffb2e122cf4244be7dbcb4f84924907c"


def _load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def _hyperliquid_info(request: Any) -> Any:
    """`meta` and `vaultDetails` from the documented samples; HLP's children answer as children."""
    if request == {"type": "meta"}:
        return _load("hyperliquid_metaAndAssetCtxs_docs.json")[0]
    if request == {"type": "perpDexs"}:
        return [None]  # the main dex alone (research §8.5)
    assert request["type"] == "vaultDetails", request
    body = _load("hyperliquid_vaultDetails_docs.json")
    if request["vaultAddress"] != hyperliquid.HLP_VAULT:
        name = "HLP Liquidator" if request["vaultAddress"] == LIQUIDATOR else "HLP Strategy"
        body.update(vaultAddress=request["vaultAddress"], name=name, relationship={"type": "child"})
    return body


def _frame_maker(name: str) -> Any:
    make_frame, _ = sample_streams()[name]
    if name == "bybit":  # the instruments sample lists BTCUSDT alone; the liquidation sample is ROSEUSDT

        def listed(n: int) -> str:
            return make_frame(n).replace("ROSEUSDT", "BTCUSDT")

        return listed
    if name != "hyperliquid":
        return make_frame

    def with_liquidator(n: int) -> str:
        frame = json.loads(make_frame(n))
        frame["data"][0]["users"] = [LIQUIDATOR, TRADER]
        return json.dumps(frame)

    return with_liquidator


def _serve_reference(rest: FakeRest, name: str) -> str:
    _, path, sample, _ = VENUES[name]
    if name == "hyperliquid":
        rest.answer_posts(path, _hyperliquid_info)
    else:
        rest.serve(path, _load(sample))
    return rest.url(path)


@pytest.mark.parametrize("name", sorted(set(VENUES) - {"bybit"}))  # Bybit's drop: tests/test_venue_streams.py
async def test_a_dropped_venue_resubscribes_and_loses_nothing(name: str) -> None:
    stream, _, _, pongs = VENUES[name]
    make_frame = _frame_maker(name)
    runtime = Runtime(clock=SYSTEM_CLOCK)
    sink = CollectingSink()
    async with FakeRest(SYSTEM_CLOCK) as rest, FakeVenueStream(pongs) as venue:
        watcher = TopicVenueWatcher(stream, venue.url, _serve_reference(rest, name), TUNING, runtime.context(name))
        task = asyncio.create_task(watcher.run(sink))
        try:
            markets = await watcher.markets.ready()
            expected = sorted(stream.subscribe_frames(stream.topics_for(markets)))
            await venue.until(lambda: sorted(venue.received()) == expected)
            frame = make_frame(1)
            await venue.push(frame)
            await sink.until(1)
            first = sink.events[0]
            assert first.venue is not None and first.venue.value == name
            before = len(venue.connections)
            await venue.drop_all()
            await venue.until(lambda: len(venue.connections) > before and sorted(venue.received()) == expected)
            await venue.push(frame)  # what a venue replays after a resubscribe
            await venue.push(make_frame(2))
            await sink.until(3)
            assert [e.key for e in sink.events].count(first.key) == 2  # the store keeps one: same key
            assert len({e.key for e in sink.events}) == 2
            assert watcher.health.reconnects >= 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await runtime.close()


@pytest.mark.parametrize("name", sorted(VENUES))
async def test_the_heartbeat_keeps_the_venues_time_while_liquidations_flow(name: str) -> None:
    stream, _, _, pongs = VENUES[name]
    every_s, cut_s = HEARTBEATS[name]
    assert every_s <= cut_s and stream.heartbeat.every_s == every_s
    (ping,) = pongs
    make_frame = _frame_maker(name)
    clock = FrozenClock(datetime.now(UTC))  # the sample frames carry the host's time
    runtime = Runtime(clock=clock)
    sink = CollectingSink()
    quiet = WsTuning(probe_after_s=3600, probe_timeout_s=10, max_lifetime_s=86400, backoff_initial_s=1, backoff_max_s=1)
    async with FakeRest(clock) as rest, FakeVenueStream(pongs) as venue:
        watcher = TopicVenueWatcher(stream, venue.url, _serve_reference(rest, name), quiet, runtime.context(name))
        task = asyncio.create_task(watcher.run(sink))
        try:
            await venue.until(lambda: bool(venue.received()))
            (conn,) = venue.live

            def pings() -> int:
                return conn.received.count(ping)

            for n in range(1, 4):
                await venue.push(make_frame(n))  # data flowing does not reset the venue's clock for us
                await sink.until(n)
                await clock.advance(every_s - 1, settle=50)
                assert pings() == n - 1
                await clock.advance(1, settle=50)
                await venue.until(lambda n=n: pings() == n)  # type: ignore[misc]
            await venue.push(make_frame(4))
            await sink.until(4)  # the pongs in between were control frames, not errors
            assert (watcher.health.parse_errors, watcher.health.reconnects) == (0, 0)
            assert venue.connections == [conn]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await runtime.close()
