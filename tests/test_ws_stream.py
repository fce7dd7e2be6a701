"""The shared stream helper, driving the real aiohttp client against the loopback Binance/Aster fake.

Timings are tiny and only ever bound how long a wait may take; every assertion is on what happened
(frames sent, events accepted, counters), never on how long it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpwatch.events import Event, Venue
from tests.fakes.binance_ws import FakeForceOrderServer
from watchers.base import EventSink, WatcherHealth, WatcherState
from watchers.forceorder import ForceOrderWatcher, parse
from watchers.ws import Heartbeat, WsStream, WsTuning, backoff_delay

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
SAMPLE: dict[str, Any] = json.loads((PAYLOADS / "aster_forceOrder_docs.json").read_text())
PROBE_1 = {"method": "LIST_SUBSCRIPTIONS", "id": 1}


def frame_at(trade_ms: int) -> dict[str, Any]:
    frame = copy.deepcopy(SAMPLE)
    frame["o"]["T"] = trade_ms
    return frame


def key_at(trade_ms: int) -> str:
    return f"aster:forceOrder:BTCUSDT:{trade_ms}:SELL:0.014:9910"


class Sink:
    """Accepts like the pipeline does (returns once 'committed') and lets a test await each event."""

    def __init__(self, fail_first: int = 0, reject: str | None = None) -> None:
        self.events: list[Event] = []
        self.fail_first = fail_first
        self.reject = reject
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    async def __call__(self, events: Sequence[Event]) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise OSError("disk full")
        if any(event.key == self.reject for event in events):
            raise OSError("disk full")
        self.events.extend(events)
        for event in events:
            self._queue.put_nowait(event)

    async def next(self, timeout_s: float = 5.0) -> Event:
        async with asyncio.timeout(timeout_s):
            return await self._queue.get()


@pytest.fixture
async def server() -> AsyncIterator[FakeForceOrderServer]:
    async with FakeForceOrderServer() as fake:
        yield fake


def watcher_for(
    server: FakeForceOrderServer,
    *,
    probe_after_s: float = 5.0,
    probe_timeout_s: float = 5.0,
    max_lifetime_s: float = 3600.0,
) -> ForceOrderWatcher:
    return ForceOrderWatcher(
        Venue.ASTER,
        server.url,
        probe_after_s=probe_after_s,
        probe_timeout_s=probe_timeout_s,
        max_lifetime_s=max_lifetime_s,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )


def stream_for(url: str, **options: Any) -> WsStream:
    tuning = WsTuning(
        probe_after_s=options.pop("probe_after_s", 5.0),
        probe_timeout_s=5.0,
        max_lifetime_s=3600.0,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        stable_after_s=options.pop("stable_after_s", 30.0),
    )
    return WsStream(
        label="aster",
        url=url,
        handler=lambda frame: parse(frame, Venue.ASTER),
        health=WatcherHealth(name="aster"),
        tuning=tuning,
        **options,
    )


@contextlib.asynccontextmanager
async def running(run: Callable[[EventSink], Any], sink: EventSink) -> AsyncIterator[asyncio.Task[None]]:
    task: asyncio.Task[None] = asyncio.create_task(run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(5):  # a run() that swallows cancellation fails here, not hangs
                await task


async def test_frame_reaches_sink(server: FakeForceOrderServer) -> None:
    watcher, sink = watcher_for(server), Sink()
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await server.push(SAMPLE)
        event = await sink.next()

    assert event.key == key_at(1568014460893)
    assert event.usd == Decimal("138.74")
    assert watcher.name == "aster"
    assert (watcher.health.events, watcher.health.parse_errors, watcher.health.reconnects) == (1, 0, 0)
    assert watcher.health.state is WatcherState.UP
    assert watcher.health.connected_since is not None
    assert watcher.health.last_frame_at is not None
    assert watcher.health.last_event_at is not None


async def test_unreadable_frames_are_counted_and_the_stream_goes_on(server: FakeForceOrderServer) -> None:
    watcher, sink = watcher_for(server), Sink()
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await server.push("{not json")
        await server.push({"e": "forceOrder", "o": {"s": "BTCUSDT", "S": "SELL"}})
        await server.push("[1, 2]")
        await server.push(frame_at(2))
        event = await sink.next()

    assert event.key == key_at(2)
    assert watcher.health.parse_errors == 3
    assert watcher.health.events == 1
    assert (server.accepted, watcher.health.reconnects, watcher.health.errors) == (1, 0, 0)


async def test_dropped_socket_reconnects_and_logs_one_line_per_edge(
    server: FakeForceOrderServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="watchers.ws")
    watcher, sink = watcher_for(server), Sink()
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await server.push(frame_at(1))
        assert (await sink.next()).key == key_at(1)
        await server.drop_all()
        await server.wait_connected(2)
        await server.push(frame_at(2))
        assert (await sink.next()).key == key_at(2)

    assert watcher.health.reconnects == 1
    assert watcher.health.events == 2
    assert watcher.health.errors == 1
    assert watcher.health.last_error == "closed by peer code=1001"
    down = [r for r in caplog.records if r.getMessage().startswith("stream down")]
    recovered = [r for r in caplog.records if r.getMessage().startswith("stream recovered")]
    assert [r.levelno for r in down] == [logging.WARNING]
    assert "venue=aster" in down[0].getMessage()
    assert len(recovered) == 1


async def test_replayed_frame_after_reconnect_keeps_its_key() -> None:
    async with FakeForceOrderServer(replay_on_connect=[SAMPLE]) as server:
        watcher, sink = watcher_for(server), Sink()
        async with running(watcher.run, sink):
            first = await sink.next()
            await server.drop_all()
            again = await sink.next()

    assert first.key == again.key == key_at(1568014460893)
    assert server.accepted == 2


async def test_quiet_stream_is_probed_and_the_reply_counts_as_life(server: FakeForceOrderServer) -> None:
    watcher, sink = watcher_for(server, probe_after_s=0.05), Sink()
    async with running(watcher.run, sink):
        await server.wait_until(lambda: bool(server.received) and len(server.received[0]) >= 2)

    assert [json.loads(text) for text in server.received[0][:2]] == [
        PROBE_1,
        {"method": "LIST_SUBSCRIPTIONS", "id": 2},
    ]
    assert (server.accepted, watcher.health.reconnects, watcher.health.parse_errors) == (1, 0, 0)


async def test_silent_server_is_left_after_the_probe_timeout() -> None:
    async with FakeForceOrderServer(silent=True) as server:
        watcher, sink = watcher_for(server, probe_after_s=0.05, probe_timeout_s=0.05), Sink()
        async with running(watcher.run, sink):
            await server.wait_connected(2)
            await server.push(frame_at(3))
            assert (await sink.next()).key == key_at(3)

    assert [json.loads(text) for text in server.received[0]] == [PROBE_1]
    assert watcher.health.reconnects >= 1
    assert watcher.health.last_error is not None
    assert watcher.health.last_error.startswith("no frame for")
    assert watcher.health.last_error.endswith("probe unanswered")


async def test_planned_reconnect_after_max_lifetime_is_not_an_error() -> None:
    # The venue replays a frame to each new socket, so an event proves each connection worked.
    async with FakeForceOrderServer(replay_on_connect=[frame_at(4)]) as server:
        watcher, sink = watcher_for(server, max_lifetime_s=0.1), Sink()
        async with running(watcher.run, sink):
            await server.wait_connected(3)
            keys = {(await sink.next()).key, (await sink.next()).key}

    assert keys == {key_at(4)}
    assert watcher.health.reconnects >= 1  # two events, two sockets; the third may still be opening
    assert (watcher.health.errors, watcher.health.last_error) == (0, None)
    assert watcher.health.state is WatcherState.UP
    assert all(texts == [] for texts in server.received)  # retired on schedule, never probed


async def test_cancelling_run_reraises_and_closes_the_socket(server: FakeForceOrderServer) -> None:
    watcher = watcher_for(server)
    task = asyncio.create_task(watcher.run(Sink()))
    await server.wait_connected(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert task.cancelled()
    await server.wait_until(lambda: server.connections == 0)


async def test_cancelling_during_backoff_reraises(server: FakeForceOrderServer) -> None:
    url = server.url
    await server.close()
    slept = asyncio.Event()

    async def sleep_forever(delay_s: float) -> None:
        slept.set()
        await asyncio.Event().wait()

    stream = stream_for(url, sleep=sleep_forever)
    task = asyncio.create_task(stream.run(Sink()))
    async with asyncio.timeout(5):
        await slept.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert stream.health.state is WatcherState.DOWN
    assert stream.health.errors == 1
    assert stream.health.last_error is not None
    assert stream.health.last_error.startswith("ClientConnectorError: Cannot connect to host 127.0.0.1")


async def test_failures_while_down_log_one_warning(
    server: FakeForceOrderServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="watchers.ws")
    url = server.url
    await server.close()
    delays: list[float] = []
    third = asyncio.Event()

    async def record(delay_s: float) -> None:
        delays.append(delay_s)
        if len(delays) == 3:
            third.set()
            await asyncio.Event().wait()

    stream = stream_for(url, sleep=record, rand=lambda: 1.0)
    async with running(stream.run, Sink()):
        async with asyncio.timeout(5):
            await third.wait()

    messages = [(r.levelno, r.getMessage().split(" venue=")[0]) for r in caplog.records if r.name == "watchers.ws"]
    assert messages == [
        (logging.WARNING, "stream down"),
        (logging.DEBUG, "stream retry"),
        (logging.DEBUG, "stream retry"),
    ]
    assert delays == [0.01, 0.02, 0.04]
    assert (stream.health.errors, stream.health.reconnects) == (3, 0)


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    assert [backoff_delay(n, 1.0, 8.0, lambda: 1.0) for n in range(6)] == [1, 2, 4, 8, 8, 8]
    assert backoff_delay(3, 1.0, 8.0, lambda: 0.25) == 2.0
    assert backoff_delay(10_000, 1.0, 60.0, lambda: 1.0) == 60.0


@pytest.mark.parametrize(("stable_after_s", "expected"), [(3600.0, [0.01, 0.02, 0.04]), (0.0, [0.01] * 3)])
async def test_delay_resets_only_after_a_connection_that_stayed_up(
    server: FakeForceOrderServer, stable_after_s: float, expected: list[float]
) -> None:
    delays: list[float] = []

    async def record(delay_s: float) -> None:
        delays.append(delay_s)

    stream = stream_for(server.url, sleep=record, rand=lambda: 1.0, stable_after_s=stable_after_s)
    async with running(stream.run, Sink()):
        for n in range(1, 4):
            await server.wait_connected(n)
            await server.drop_all()
        await server.wait_connected(4)

    assert delays == expected


async def test_subscribe_frames_are_sent_on_every_connect(server: FakeForceOrderServer) -> None:
    subscribe = json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@forceOrder"], "id": 1})
    stream = stream_for(server.url, subscribe=lambda: [subscribe])
    async with running(stream.run, Sink()):
        await server.wait_until(lambda: bool(server.received and server.received[0]))
        await server.drop_all()
        await server.wait_until(lambda: len(server.received) == 2 and bool(server.received[1]))

    assert [texts[0] for texts in server.received] == [subscribe, subscribe]
    assert stream.health.parse_errors == 0  # the {"result":null,"id":1} reply is not an error


async def test_heartbeat_is_sent_even_while_frames_flow(server: FakeForceOrderServer) -> None:
    stream, sink = stream_for(server.url, heartbeat=Heartbeat(every_s=0.02, frame="ping")), Sink()

    async def wait_pings(n: int) -> None:
        await server.wait_until(lambda: server.received[0].count("ping") >= n)

    async with running(stream.run, sink):
        await server.wait_connected(1)
        for n in range(1, 4):
            await server.push(frame_at(n))
            await wait_pings(n)
        keys = [(await sink.next()).key for _ in range(3)]

    assert set(server.received[0]) == {"ping"}  # probe_after_s is 5 s: every frame here is a heartbeat
    assert keys == [key_at(1), key_at(2), key_at(3)]


async def test_server_pings_are_answered_and_plain_texts_ignored(server: FakeForceOrderServer) -> None:
    def pong(frame: Any) -> str | None:
        if isinstance(frame, dict) and frame.get("type") == "ping":
            return json.dumps({"type": "pong", "time": frame["time"]})
        return None

    stream, sink = stream_for(server.url, reply=pong, plain_texts=frozenset({"pong"})), Sink()
    async with running(stream.run, sink):
        await server.wait_connected(1)
        await server.push({"type": "ping", "time": "1693208170000"})
        await server.push("pong")
        await server.push(frame_at(5))
        await sink.next()
        await server.wait_until(lambda: bool(server.received[0]))

    assert [json.loads(text) for text in server.received[0]] == [{"type": "pong", "time": "1693208170000"}]
    assert stream.health.parse_errors == 0


async def test_a_passing_sink_fault_is_retried_and_nothing_is_lost(
    server: FakeForceOrderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("watchers.handoff.SINK_RETRY_DELAYS_S", (0.001, 0.001, 0.001))
    watcher, sink = watcher_for(server), Sink(fail_first=2)
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await server.push(frame_at(6))
        await server.push(frame_at(7))
        assert [(await sink.next()).key, (await sink.next()).key] == [key_at(6), key_at(7)]
    assert (watcher.health.events, watcher.health.errors) == (2, 0)


async def test_an_event_the_store_keeps_rejecting_is_lost_alone(
    server: FakeForceOrderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("watchers.handoff.SINK_RETRY_DELAYS_S", (0.001, 0.001, 0.001))
    watcher, sink = watcher_for(server), Sink(reject=key_at(6))
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await server.push(frame_at(6))
        await server.push(frame_at(7))
        event = await sink.next()

    assert event.key == key_at(7)
    assert (watcher.health.events, watcher.health.errors, server.accepted) == (1, 1, 1)
    assert watcher.health.last_error == "sink: OSError: disk full"
