"""The shared stream helper, driving the real aiohttp client against the loopback Binance/Aster fake.

Time is a frozen clock: tests that time liveness, heartbeats or planned reconnects move a `FrozenClock`;
tests that only count the back-off and retry waits drawn use a `RecordingClock`, whose sleeps return at
once. Real waits only bound how long a test may hang; every assertion is on what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpwatch.clock import Clock, FrozenClock
from perpwatch.events import Event, Venue
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.clock import RecordingClock
from watchers.base import EventRejected, EventSink, WatcherHealth, WatcherState
from watchers.forceorder import ForceOrderWatcher, parse
from watchers.ws import Heartbeat, WsStream, WsTuning

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
SAMPLE: dict[str, Any] = json.loads((PAYLOADS / "aster_forceOrder_docs.json").read_text())
PROBE_1 = {"method": "LIST_SUBSCRIPTIONS", "id": 1}
START_MS = int(FrozenClock().now().timestamp() * 1000)
"""Both test clocks start here; frames are stamped just after it, as a live venue's are."""


def frame_at(n: int, **order: Any) -> dict[str, Any]:
    frame = copy.deepcopy(SAMPLE)
    frame["o"].update({"T": START_MS + n, **order})
    return frame


def key_at(n: int) -> str:
    return f"aster:forceOrder:BTCUSDT:{START_MS + n}:SELL:0.014:9910"


class Sink:
    """Accepts like the pipeline does (returns once 'committed') and lets a test await each event."""

    def __init__(self, fail_first: int = 0, reject: str | None = None, refuse: str | None = None) -> None:
        self.events: list[Event] = []
        self.fail_first = fail_first
        self.reject = reject
        self.refuse = refuse
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    async def __call__(self, events: Sequence[Event]) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise OSError("disk full")
        if any(event.key == self.reject for event in events):
            raise OSError("disk full")
        if any(event.key == self.refuse for event in events):
            raise EventRejected("numeric overflow")
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


def tuning(**options: Any) -> WsTuning:
    return WsTuning(
        probe_after_s=options.pop("probe_after_s", 5.0),
        probe_timeout_s=options.pop("probe_timeout_s", 5.0),
        max_lifetime_s=options.pop("max_lifetime_s", 3600.0),
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        **options,
    )


def watcher_for(server: FakeForceOrderServer, clock: Clock, **options: Any) -> ForceOrderWatcher:
    return ForceOrderWatcher(Venue.ASTER, server.url, tuning(**options), clock=clock)


def stream_for(url: str, clock: Clock, *, rand: Callable[[], float] = lambda: 1.0, **options: Any) -> WsStream:
    stream_options = {k: options.pop(k) for k in ("subscribe", "heartbeat", "reply", "plain_texts") if k in options}
    return WsStream(
        label="aster",
        url=url,
        handler=lambda frame: parse(frame, Venue.ASTER),
        health=WatcherHealth(name="aster", clock=clock),
        tuning=tuning(**options),
        clock=clock,
        rand=rand,
        **stream_options,
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


async def until(predicate: Callable[[], bool]) -> None:
    """Until the code under test reached a state; the timeout only keeps a broken stream from hanging."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - polling the object under test
            await asyncio.sleep(0.001)


async def advance_when_waiting(clock: FrozenClock, seconds: float) -> None:
    """Moves time once the stream waits on the clock, so the step lands on the wait it is meant for."""
    await until(lambda: clock.sleepers > 0)
    await clock.advance(seconds, settle=50)


async def test_frame_reaches_sink(server: FakeForceOrderServer) -> None:
    clock = RecordingClock()
    watcher, sink = watcher_for(server, clock), Sink()
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await server.push(frame_at(0))
        event = await sink.next()

    assert event.key == key_at(0)
    assert event.usd == Decimal("138.74")
    assert watcher.name == "aster"
    assert (watcher.health.events, watcher.health.parse_errors, watcher.health.reconnects) == (1, 0, 0)
    assert watcher.health.state is WatcherState.UP
    assert watcher.health.connected_since == watcher.health.last_frame_at == watcher.health.last_event_at
    assert watcher.health.connected_since == datetime(2026, 1, 1, tzinfo=UTC)  # the watcher's clock, not the host's
    assert watcher.health.rejected == {}


async def test_unreadable_frames_are_counted_and_the_stream_goes_on(server: FakeForceOrderServer) -> None:
    watcher, sink = watcher_for(server, RecordingClock()), Sink()
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await server.push("{not json")
        await server.push({"e": "forceOrder", "o": {"s": "BTCUSDT", "S": "SELL"}})
        await server.push("[1, 2]")
        await server.push(frame_at(2))
        event = await sink.next()

    assert event.key == key_at(2)
    assert watcher.health.parse_errors == 3
    assert watcher.health.rejected == {}  # unreadable, not refused: nothing to name a reason for
    assert watcher.health.events == 1
    assert (server.accepted, watcher.health.reconnects, watcher.health.errors) == (1, 0, 0)


TEN_YEARS_MS = 10 * 365 * 86400 * 1000


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (frame_at(1, s="BTC\x1b[2J\x1b]52;c;aGk=\x07"), "bad_symbol"),  # clear screen, write the clipboard
        (frame_at(1, s="BTC\u202eUSDT"), "bad_symbol"),  # a right-to-left override
        (frame_at(1, s="BTC\r\x00"), "bad_symbol"),
        (frame_at(1, z="1e400"), "bad_figure"),
        (
            f'{{"e":"forceOrder","E":1,"o":{{"s":"BTCUSDT","S":"SELL","z":1e400,"ap":"9910","T":{START_MS}}}}}',
            "bad_figure",
        ),
        (frame_at(1, z="1_000"), "bad_figure"),
        (frame_at(1, z="\u0661\u0660"), "bad_figure"),  # Arabic-Indic digits
        (frame_at(1, z="100000000000000000000"), "bad_figure"),  # overflows storage
        (frame_at(1, z="1000000", ap="1000000"), "implausible_usd"),  # a $1 trillion liquidation
        (frame_at(1, z="0.0000000001", ap="0.0000000001"), "implausible_usd"),  # would show as "$0.00"
        (frame_at(1, T=10**20), "bad_time"),
        (frame_at(1, T=1000), "too_old"),  # 1970
        (frame_at(1, T=253402300799000), "from_the_future"),  # 9999-12-31
        (frame_at(1, T=START_MS + TEN_YEARS_MS), "from_the_future"),
    ],
)
async def test_a_bad_frame_is_refused_with_its_reason_and_the_stream_goes_on(
    server: FakeForceOrderServer, bad: dict[str, Any] | str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, sink = watcher_for(server, RecordingClock()), Sink()
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await server.push(bad)
        await server.push(frame_at(2))
        event = await sink.next()

    assert event.key == key_at(2)
    assert sink.events == [event]
    assert watcher.health.rejected == {reason: 1}
    assert watcher.health.parse_errors == (0 if reason in ("too_old", "from_the_future") else 1)
    assert (server.accepted, watcher.health.errors, watcher.health.reconnects) == (1, 0, 0)
    assert "\x1b" not in caplog.text and "\u202e" not in caplog.text  # logged escaped, never raw


async def test_an_event_the_sink_can_never_store_is_counted_and_skipped_at_once(server: FakeForceOrderServer) -> None:
    clock = RecordingClock()
    watcher, sink = watcher_for(server, clock), Sink(refuse=key_at(1))
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        for n in range(4):
            await server.push(frame_at(n))
        keys = [(await sink.next()).key for _ in range(3)]

    assert keys == [key_at(0), key_at(2), key_at(3)]
    assert watcher.health.rejected == {"unstorable": 1}
    assert (watcher.health.events, watcher.health.errors) == (3, 0)
    assert clock.slept == []  # no retry waited on it


async def test_dropped_socket_reconnects_and_logs_one_line_per_edge(
    server: FakeForceOrderServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="watchers.ws")
    watcher, sink = watcher_for(server, RecordingClock()), Sink()
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
    async with FakeForceOrderServer(replay_on_connect=[frame_at(0)]) as server:
        watcher, sink = watcher_for(server, RecordingClock()), Sink()
        async with running(watcher.run, sink):
            first = await sink.next()
            await server.drop_all()
            again = await sink.next()

    assert first.key == again.key == key_at(0)
    assert server.accepted == 2


async def test_quiet_stream_is_probed_and_the_reply_counts_as_life(server: FakeForceOrderServer) -> None:
    clock = FrozenClock()
    watcher, sink = watcher_for(server, clock, probe_after_s=60.0, probe_timeout_s=10.0), Sink()
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await advance_when_waiting(clock, 59.0)
        await advance_when_waiting(clock, 1.0)
        await server.wait_until(lambda: len(server.received[0]) == 1)
        await until(lambda: watcher.health.last_frame_at == clock.now())  # the reply was read
        await advance_when_waiting(clock, 60.0)
        await server.wait_until(lambda: len(server.received[0]) == 2)

    assert [json.loads(text) for text in server.received[0]] == [PROBE_1, {"method": "LIST_SUBSCRIPTIONS", "id": 2}]
    assert (server.accepted, watcher.health.reconnects, watcher.health.parse_errors) == (1, 0, 0)


async def test_silent_server_is_left_after_the_probe_timeout() -> None:
    async with FakeForceOrderServer(silent=True) as server:
        clock = FrozenClock()
        watcher, sink = watcher_for(server, clock, probe_after_s=60.0, probe_timeout_s=10.0), Sink()
        async with running(watcher.run, sink):
            await server.wait_connected(1)
            await advance_when_waiting(clock, 60.0)
            await server.wait_until(lambda: len(server.received[0]) == 1)
            assert watcher.health.state is WatcherState.UP
            await advance_when_waiting(clock, 10.0)
            await until(lambda: watcher.health.state is WatcherState.DOWN)
            await advance_when_waiting(clock, 1.0)  # the back-off
            await server.wait_connected(2)
            await server.push(frame_at(3))
            assert (await sink.next()).key == key_at(3)

    assert [json.loads(text) for text in server.received[0]] == [PROBE_1]
    assert watcher.health.reconnects == 1
    assert watcher.health.last_error == "no frame for 70.0s, probe unanswered"


async def test_planned_reconnect_after_max_lifetime_is_not_an_error() -> None:
    # The venue replays a frame to each new socket, so an event proves each connection worked.
    async with FakeForceOrderServer(replay_on_connect=[frame_at(4)]) as server:
        clock = FrozenClock()
        watcher, sink = watcher_for(server, clock, probe_after_s=7200.0, max_lifetime_s=3600.0), Sink()
        async with running(watcher.run, sink):
            assert (await sink.next()).key == key_at(4)
            await advance_when_waiting(clock, 3599.0)
            assert server.accepted == 1
            await advance_when_waiting(clock, 1.0)
            await server.wait_connected(2)
            assert (await sink.next()).key == key_at(4)

    assert watcher.health.reconnects == 1
    assert (watcher.health.errors, watcher.health.last_error) == (0, None)
    assert watcher.health.state is WatcherState.UP
    assert all(texts == [] for texts in server.received)  # retired on schedule, never probed


async def test_cancelling_run_reraises_and_closes_the_socket(server: FakeForceOrderServer) -> None:
    watcher = watcher_for(server, FrozenClock())
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
    clock = RecordingClock(hold_after=0)
    stream = stream_for(url, clock)
    task = asyncio.create_task(stream.run(Sink()))
    async with asyncio.timeout(5):
        await clock.held.wait()
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
    clock = RecordingClock(hold_after=2)
    stream = stream_for(url, clock)
    async with running(stream.run, Sink()):
        async with asyncio.timeout(5):
            await clock.held.wait()

    messages = [(r.levelno, r.getMessage().split(" venue=")[0]) for r in caplog.records if r.name == "watchers.ws"]
    assert messages == [
        (logging.WARNING, "stream down"),
        (logging.DEBUG, "stream retry"),
        (logging.DEBUG, "stream retry"),
    ]
    assert clock.slept == [0.01, 0.02, 0.04]
    assert (stream.health.errors, stream.health.reconnects) == (3, 0)


@pytest.mark.parametrize(("stable_after_s", "expected"), [(3600.0, [0.01, 0.02, 0.04]), (0.0, [0.01] * 3)])
async def test_a_venue_that_accepts_and_drops_at_once_backs_off_unless_it_stayed_up(
    stable_after_s: float, expected: list[float]
) -> None:
    async with FakeForceOrderServer(close_after_replay=True) as server:
        clock = RecordingClock(hold_after=3)
        stream = stream_for(server.url, clock, stable_after_s=stable_after_s)
        async with running(stream.run, Sink()):
            async with asyncio.timeout(5):
                await clock.held.wait()

    assert clock.slept[:3] == expected
    assert stream.health.events == 0


async def test_a_venue_that_drops_every_few_frames_is_reconnected_at_the_initial_delay() -> None:
    """Issue 10.10: dropped every 2-3 s while data flows, it never stayed up `stable_after_s`, so its gaps
    grew to the cap; frames exchanged prove the connection healthy and reset the back-off."""
    frames = [frame_at(n) for n in range(3)]
    async with FakeForceOrderServer(replay_on_connect=frames, close_after_replay=True) as server:
        clock = RecordingClock(hold_after=4)
        stream, sink = stream_for(server.url, clock), Sink()
        async with running(stream.run, sink):
            async with asyncio.timeout(5):
                await clock.held.wait()

    assert clock.slept[:4] == [0.01] * 4
    assert stream.health.events >= 3 and stream.health.reconnects >= 3


async def test_subscribe_frames_are_sent_on_every_connect(server: FakeForceOrderServer) -> None:
    subscribe = json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@forceOrder"], "id": 1})
    stream = stream_for(server.url, RecordingClock(), subscribe=lambda: [subscribe])
    async with running(stream.run, Sink()):
        await server.wait_until(lambda: bool(server.received and server.received[0]))
        await server.drop_all()
        await server.wait_until(lambda: len(server.received) == 2 and bool(server.received[1]))

    assert [texts[0] for texts in server.received] == [subscribe, subscribe]
    assert stream.health.parse_errors == 0  # the {"result":null,"id":1} reply is not an error


async def test_heartbeat_is_sent_even_while_frames_flow(server: FakeForceOrderServer) -> None:
    clock = FrozenClock()
    heartbeat = Heartbeat(every_s=20.0, frame="ping")
    stream, sink = stream_for(server.url, clock, heartbeat=heartbeat, probe_after_s=3600.0), Sink()
    async with running(stream.run, sink):
        await server.wait_connected(1)
        for n in range(1, 4):
            await server.push(frame_at(n))
            assert (await sink.next()).key == key_at(n)
            await advance_when_waiting(clock, 19.0)
            assert server.received[0].count("ping") == n - 1  # a frame came: still the heartbeat keeps its time
            await advance_when_waiting(clock, 1.0)
            await server.wait_until(lambda n=n: server.received[0].count("ping") == n)  # type: ignore[misc]

    assert server.received[0] == ["ping"] * 3


async def test_server_pings_are_answered_and_plain_texts_ignored(server: FakeForceOrderServer) -> None:
    def pong(frame: Any) -> str | None:
        if isinstance(frame, dict) and frame.get("type") == "ping":
            return json.dumps({"type": "pong", "time": frame["time"]})
        return None

    stream, sink = stream_for(server.url, RecordingClock(), reply=pong, plain_texts=frozenset({"pong"})), Sink()
    async with running(stream.run, sink):
        await server.wait_connected(1)
        await server.push({"type": "ping", "time": "1693208170000"})
        await server.push("pong")
        await server.push(frame_at(5))
        await sink.next()
        await server.wait_until(lambda: bool(server.received[0]))

    assert [json.loads(text) for text in server.received[0]] == [{"type": "pong", "time": "1693208170000"}]
    assert stream.health.parse_errors == 0


async def test_a_passing_sink_fault_is_retried_and_nothing_is_lost(server: FakeForceOrderServer) -> None:
    clock = RecordingClock()
    watcher, sink = watcher_for(server, clock), Sink(fail_first=2)
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await server.push(frame_at(6))
        await server.push(frame_at(7))
        assert [(await sink.next()).key, (await sink.next()).key] == [key_at(6), key_at(7)]
    assert (watcher.health.events, watcher.health.errors) == (2, 0)
    assert clock.slept == [0.05, 0.5]


async def test_an_event_the_store_keeps_rejecting_is_lost_alone(server: FakeForceOrderServer) -> None:
    watcher, sink = watcher_for(server, RecordingClock()), Sink(reject=key_at(6))
    async with running(watcher.run, sink):
        await server.wait_connected(1)
        await server.push(frame_at(6))
        await server.push(frame_at(7))
        event = await sink.next()

    assert event.key == key_at(7)
    assert (watcher.health.events, watcher.health.errors, server.accepted) == (1, 1, 1)
    assert watcher.health.last_error == "sink: OSError: disk full"
