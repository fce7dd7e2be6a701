"""A pool of WebSocket connections against a loopback topic venue: a new symbol in the reference data is
subscribed on a live connection without a restart, connections open and close as the topics need, the
pool reports one combined health, and one connection feeds several consumers in isolation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from perpwatch.clock import FrozenClock
from perpwatch.events import Event
from tests.conftest import eventually
from tests.factories import liquidation
from tests.fakes.rest import FakeRest
from tests.fakes.ws_topics import FakeTopicServer
from watchers.base import WatcherHealth, WatcherState
from watchers.poller import Request
from watchers.pool import Consumer, FanOut, TopicProtocol, WsPool
from watchers.refdata import RefSource
from watchers.runtime import Runtime
from watchers.ws import WsTuning

TUNING = WsTuning(probe_after_s=30, probe_timeout_s=10, max_lifetime_s=86400, backoff_initial_s=1, backoff_max_s=5)
PROTOCOL = TopicProtocol(
    subscribe=lambda args: json.dumps({"op": "subscribe", "args": list(args)}),
    unsubscribe=lambda args: json.dumps({"op": "unsubscribe", "args": list(args)}),
    per_connection=2,
    per_frame=1,
)


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


def handler_for(clock: FrozenClock) -> Any:
    def handle(frame: Any) -> list[Event]:
        if "topic" not in frame:
            return []  # acks
        return [liquidation(key=f"{frame['topic']}:{frame['data']}", at=clock.now())]

    return handle


@pytest.fixture
async def venue() -> AsyncIterator[FakeTopicServer]:
    async with FakeTopicServer(per_connection=2, per_frame=1) as fake:
        yield fake


def make_pool(venue: FakeTopicServer, clock: FrozenClock, topics: Sequence[str], handler: Any = None) -> WsPool:
    return WsPool(
        label="testvenue",
        url=venue.url,
        handler=handler or handler_for(clock),
        health=WatcherHealth(name="testvenue", clock=clock),
        tuning=TUNING,
        protocol=PROTOCOL,
        topics=topics,
        clock=clock,
    )


async def test_a_new_symbol_in_the_reference_data_is_subscribed_without_a_restart(venue: FakeTopicServer) -> None:
    clock = FrozenClock()
    symbols = ["BTC", "ETH", "SOL"]
    async with FakeRest(clock) as rest:
        rest.serve("/info", lambda: {"data": [{"symbol": s} for s in symbols]})
        source = RefSource(
            name="testvenue.markets",
            request=Request(rest.url("/info")),
            parse=lambda body: [item["symbol"] for item in body["data"]],
            keys=lambda value: value,
            min_refresh_s=0,
        )
        refdata = Runtime(clock=clock).refdata.get(source)
        async with refdata.use():
            pool = make_pool(venue, clock, await refdata.ready())
            refdata.listen(lambda value, _change: pool.set_topics(f"liq.{s}" for s in value))
            pool.set_topics(f"liq.{s}" for s in refdata.value or [])
            sink = Sink()
            task = asyncio.create_task(pool.run(sink))
            try:
                await venue.until(lambda: venue.subscribed() == ["liq.BTC", "liq.ETH", "liq.SOL"])
                first = list(venue.live)
                assert len(first) == 2
                await eventually(lambda: pool.health.state is WatcherState.UP, what="every connection up")

                symbols.append("DOGE")  # listed while we run
                assert refdata.refresh_soon()
                await venue.until(lambda: "liq.DOGE" in venue.subscribed())
                assert venue.live == first  # no connection was dropped for it
                assert await venue.push("liq.DOGE", 1) == 1
                await eventually(lambda: len(sink.events) == 1, what="the new symbol's event")

                symbols[:] = ["DOGE", "XRP", "ADA", "BNB", "TRX"]  # five topics: a third connection
                assert refdata.refresh_soon()
                await venue.until(lambda: len(venue.subscribed()) == 5 and len(venue.live) == 3)
                await eventually(lambda: pool.health.extra["connections"] == "3/3 up")

                symbols[:] = ["DOGE"]  # most delisted: the pool shrinks to one connection
                assert refdata.refresh_soon()
                await venue.until(lambda: venue.subscribed() == ["liq.DOGE"] and len(venue.live) == 1)
                await eventually(lambda: pool.health.extra["connections"] == "1/1 up")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    assert venue.violations == []  # never over the venue's caps per connection or per frame


async def test_one_connection_down_shows_the_pool_degraded_and_the_rest_streams(venue: FakeTopicServer) -> None:
    clock = FrozenClock()
    pool = make_pool(venue, clock, ["a", "b", "c", "d"])
    sink = Sink()
    task = asyncio.create_task(pool.run(sink))
    try:
        await venue.until(lambda: len(venue.subscribed()) == 4)
        await eventually(lambda: pool.health.state is WatcherState.UP)
        assert pool.health.connected_since is not None
        victim = next(c for c in venue.live if "a" in c.topics)
        await venue.drop(victim)  # the stream backs off on the frozen clock: it stays down
        await eventually(lambda: pool.health.state is WatcherState.DEGRADED, what="degraded")
        assert pool.health.connected_since is None
        assert (pool.health.last_error or "").startswith("1 of 2 connections up; testvenue#")
        assert pool.health.errors == 1 and pool.health.extra["connections"] == "1/2 up"
        survivor = next(t for t in ("a", "b", "c", "d") if any(t in c.topics for c in venue.live))
        await venue.push(survivor, 7)
        await eventually(lambda: len(sink.events) == 1)
        await clock.advance(10)  # past the back-off: reconnects and resubscribes its own topics only
        await venue.until(lambda: len(venue.subscribed()) == 4 and len(venue.live) == 2)
        await eventually(lambda: pool.health.state is WatcherState.UP)
        assert pool.health.reconnects == 1 and pool.health.events == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_consumer_that_fails_never_costs_another_its_events(venue: FakeTopicServer) -> None:
    clock = FrozenClock()
    health = WatcherHealth(name="testvenue", clock=clock)

    def broken(frame: Any) -> list[Event]:
        if "topic" in frame:
            raise ValueError("this consumer cannot read trades")
        return []

    fanout = FanOut([Consumer("liquidations", handler_for(clock)), Consumer("whales", broken)], health)
    pool = WsPool(
        label="testvenue",
        url=venue.url,
        handler=fanout,
        health=health,
        tuning=TUNING,
        protocol=PROTOCOL,
        topics=["trades"],
        clock=clock,
    )
    sink = Sink()
    task = asyncio.create_task(pool.run(sink))
    try:
        await venue.until(lambda: venue.subscribed() == ["trades"])
        for n in range(3):
            await venue.push("trades", n)
        await eventually(lambda: len(sink.events) == 3, what="the good consumer's events")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert fanout.errors == {"liquidations": 0, "whales": 3}
    assert health.extra["consumer whales errors"] == "3"
    assert pool.health.state is not WatcherState.DOWN
