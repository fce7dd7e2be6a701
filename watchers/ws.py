"""The connection loop every WebSocket watcher shares, so a venue module only says what differs.

A venue module supplies its URL, the frames to (re)subscribe with, its heartbeat and liveness probe and a
pure frame handler; this module owns connect, liveness, planned reconnects, backoff, health and logs.
A venue that caps subscriptions per connection runs several `WsStream`s, each with its own `WatcherHealth`.

Backoff rule: after a failed connect or a connection lost against our will, wait a full-jitter delay drawn
from [0, min(backoff_max_s, backoff_initial_s * 2**attempt)] and count the attempt. The attempt count goes
back to 0 once a connection proved healthy: it delivered `healthy_after_frames` frames, or answered a
probe, or stayed up `stable_after_s`. A venue that drops the socket every few seconds while data flows is
then reconnected at the initial delay each time instead of waiting ever longer, while one that accepts
and drops at once with nothing said still backs off. A planned reconnect (`max_lifetime_s`, before the
venue's own 24 h cut) is not a failure: it reconnects at once, counts in `reconnects` and leaves `errors`
alone.

Time: every wait, deadline and stamp (liveness, heartbeat, planned reconnect, back-off, health) is read on
the injected `Clock`, so a test drives the stream with a frozen clock instead of sleeping.

Health: `reconnects` counts connections opened after the stream's first; `errors` counts failed connects,
lost connections and sink failures; `parse_errors` counts frames that could not be read (among them those
whose event was refused); `rejected` counts refused events by reason, including events of readable frames
that fail the plausibility window (`watchers.validate`). Logs fire on edges only: one warning when the
stream goes down, one "recovered" line when it is back; refusals are logged at a limited rate.

Events go to the sink through a `Handoff`, so the socket is read on while earlier events are committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import aiohttp
from yarl import URL

from perpwatch.backoff import full_jitter
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Event
from watchers.base import EventSink, WatcherHealth, WatcherState, describe, should_log
from watchers.handoff import Handoff
from watchers.validate import PLAUSIBLE, Plausible, reason_of

logger = logging.getLogger(__name__)

FrameHandler = Callable[[Any], Sequence[Event]]
"""Turns one decoded JSON frame into events; raising marks the frame as unreadable, never the stream."""


class WsSettings(Protocol):
    """The `ws_*` settings; a Protocol so watchers never import `bot.settings`."""

    @property
    def ws_probe_after_s(self) -> float: ...
    @property
    def ws_probe_timeout_s(self) -> float: ...
    @property
    def ws_max_lifetime_s(self) -> float: ...
    @property
    def ws_backoff_initial_s(self) -> float: ...
    @property
    def ws_backoff_max_s(self) -> float: ...


WS_SETTINGS: tuple[str, ...] = (
    "ws_probe_after_s",
    "ws_probe_timeout_s",
    "ws_max_lifetime_s",
    "ws_backoff_initial_s",
    "ws_backoff_max_s",
)
"""The settings `WsSettings` names, for a registry entry to declare what its stream reads."""


@dataclass(frozen=True, slots=True)
class WsTuning:
    """Timings of one stream. A venue with a shorter idle cut (OKX drops after 30 s) overrides with
    `dataclasses.replace` rather than changing the operator's defaults for every venue."""

    probe_after_s: float
    probe_timeout_s: float
    max_lifetime_s: float
    backoff_initial_s: float
    backoff_max_s: float
    stable_after_s: float = 30.0
    healthy_after_frames: int = 3
    connect_timeout_s: float = 10.0
    # aiohttp waits this long for the venue's close frame; a dead peer must not stall a reconnect.
    close_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        for name in (
            "probe_after_s",
            "probe_timeout_s",
            "max_lifetime_s",
            "backoff_initial_s",
            "backoff_max_s",
            "connect_timeout_s",
            "close_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.stable_after_s < 0:
            raise ValueError("stable_after_s must be >= 0")
        if self.healthy_after_frames < 1:
            raise ValueError("healthy_after_frames must be >= 1")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")

    @classmethod
    def from_settings(cls, settings: WsSettings) -> WsTuning:
        return cls(
            probe_after_s=settings.ws_probe_after_s,
            probe_timeout_s=settings.ws_probe_timeout_s,
            max_lifetime_s=settings.ws_max_lifetime_s,
            backoff_initial_s=settings.ws_backoff_initial_s,
            backoff_max_s=settings.ws_backoff_max_s,
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A frame sent every `every_s` whatever the traffic, for venues that cut clients that stay mute
    (Bybit `{"op":"ping"}` every 20 s, Pacifica within 60 s) even while data flows to them."""

    every_s: float
    frame: str


class _StreamError(Exception):
    """A failure this module words itself; its message is what `/status` shows as `last_error`."""


class _Stalled(_StreamError):
    """No frame at all within the probe window: the socket looks open but the venue no longer talks."""


class _Lost(_StreamError):
    """The socket could not be opened, or the venue or the network closed it."""


def _describe(exc: BaseException) -> str:
    """Our own stream errors are already worded for `/status`; anything else gets its type."""
    return str(exc) if isinstance(exc, _StreamError) else describe(exc)


class _Receiver:
    """Reads the socket in a task of its own, a few messages ahead, so the stream waits on its clock (a
    heartbeat is due, a probe window passed) without ever cancelling a read half done, and a burst already
    read is taken without arming a timer per frame. Frames beyond the read-ahead wait in the socket."""

    READ_AHEAD = 64

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, clock: Clock) -> None:
        self._ws = ws
        self._clock = clock
        self._inbox: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue(maxsize=self.READ_AHEAD)
        self._arrived = asyncio.Event()
        self._failed: BaseException | None = None
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self._ws.receive()
                await self._inbox.put(msg)
                self._arrived.set()
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    return  # a close or an error ends the socket: nothing follows it
        except Exception as exc:
            self._failed = exc
            self._arrived.set()

    async def receive(self, timeout_s: float) -> aiohttp.WSMessage | None:
        """The next message, or None when `timeout_s` passed on the clock first."""
        if self._inbox.empty():
            if self._failed is not None:
                raise self._failed
            self._arrived.clear()
            if not await self._clock.wait(self._arrived, timeout_s):
                return None
            if self._inbox.empty():
                if self._failed is not None:
                    raise self._failed
                return None  # woken by `wake`, not by a message
        return self._inbox.get_nowait()

    def wake(self) -> None:
        """Ends a `receive` wait early (a reconnect was asked for) without a message."""
        self._arrived.set()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class WsStream:
    """One WebSocket connection kept alive for as long as `run` runs.

    `subscribe` is called on every (re)connect, so a list that grew while running (new symbols) is sent
    whole to the new socket. `probe(n)` builds the n-th liveness probe, sent after `probe_after_s` without
    a frame; any frame within `probe_timeout_s` proves the stream alive. Without a probe, silence for
    both windows together ends the connection. `reply` answers app-level server pings (edgeX's
    `{"type":"ping"}`): a frame it answers goes no further. `plain_texts` are non-JSON control texts
    (OKX's `pong`) that count as life but are not parsed. Protocol pings are answered by aiohttp.
    `plausible` is the time window events must fall in around the clock's now.
    """

    def __init__(
        self,
        *,
        label: str,
        url: str,
        handler: FrameHandler,
        health: WatcherHealth,
        tuning: WsTuning,
        subscribe: Callable[[], Iterable[str]] | None = None,
        probe: Callable[[int], str] | None = None,
        heartbeat: Heartbeat | None = None,
        reply: Callable[[Any], str | None] | None = None,
        plain_texts: frozenset[str] = frozenset(),
        session: aiohttp.ClientSession | Callable[[], aiohttp.ClientSession] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
        plausible: Plausible = PLAUSIBLE,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.label = label
        self.url = url
        self.health = health
        self.tuning = tuning
        self.clock = clock
        self._handler = handler
        self._subscribe = subscribe
        self._probe = probe
        self._heartbeat = heartbeat
        self._reply = reply
        self._plain_texts = plain_texts
        self._session = session
        self._rand = rand
        self._plausible = plausible
        self._probes_sent = 0
        self._connections = 0
        self._failures = 0
        self._healthy = False
        self._down_since: float | None = None
        self._on_change = on_change
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._receiver: _Receiver | None = None
        self._reconnect_asked = False

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def send_live(self, frames: Iterable[str]) -> bool:
        """Sends `frames` on the open socket (a subscribe for topics added while connected). False when
        there is none: the next connection's `subscribe` sends the whole current list anyway."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            for frame in frames:
                await ws.send_str(frame)
        except (aiohttp.ClientError, ConnectionError) as exc:
            logger.debug("live send failed venue=%s error=%s", self.label, describe(exc))
            return False
        return True

    def request_reconnect(self) -> None:
        """A planned reconnect now (not a failure): for a venue that cannot unsubscribe on a live socket,
        the new connection subscribes to the current list only."""
        self._reconnect_asked = True
        if self._receiver is not None:
            self._receiver.wake()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    async def run(self, sink: EventSink) -> None:
        """Runs until cancelled; cancelling closes the socket (and a session it made) and re-raises.

        May be called again after a cancel (an operator's pause and resume); `reconnects` keeps counting
        every connection after this stream's first."""
        self._failures = 0
        async with Handoff(sink, self.health, label=self.label, clock=self.clock) as handoff:
            if isinstance(self._session, aiohttp.ClientSession):
                await self._loop(self._session, handoff)
            elif self._session is not None:
                await self._loop(self._session(), handoff)
            else:
                async with aiohttp.ClientSession() as session:
                    await self._loop(session, handoff)

    async def _loop(self, session: aiohttp.ClientSession, handoff: Handoff) -> None:
        while True:
            opened_at: float | None = None
            error: str | None = None
            self._healthy = False
            try:
                ws = await self._connect(session)
                async with ws:
                    opened_at = self.clock.monotonic()
                    self._mark_up()
                    await self._serve(ws, handoff)
            except Exception as exc:
                error = _describe(exc)
            uptime_s = self.clock.monotonic() - opened_at if opened_at is not None else 0.0
            if opened_at is not None and (self._healthy or uptime_s >= self.tuning.stable_after_s):
                self._failures = 0
            if error is None:
                logger.info("stream planned reconnect venue=%s uptime_s=%.0f", self.label, uptime_s)
                continue
            delay_s = full_jitter(self._failures, self.tuning.backoff_initial_s, self.tuning.backoff_max_s, self._rand)
            self._failures += 1
            self._mark_down(error, delay_s)
            await self.clock.sleep(delay_s)

    async def _connect(self, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        try:
            async with asyncio.timeout(self.tuning.connect_timeout_s):
                return await session.ws_connect(
                    self.url,
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_close=self.tuning.close_timeout_s),
                )
        except TimeoutError:
            raise _Lost(f"connect timed out after {self.tuning.connect_timeout_s:g}s") from None

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, handoff: Handoff) -> None:
        """Reads frames until the planned end of life (returns) or a failure (raises)."""
        receiver = _Receiver(ws, self.clock)
        self._receiver, self._reconnect_asked = receiver, False
        try:
            await self._read(ws, receiver, handoff)
        finally:
            self._ws = self._receiver = None
            await receiver.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, receiver: _Receiver, handoff: Handoff) -> None:
        # The socket is published and the list read in one step (no await between), so a topic added while
        # connecting is either in this list or sent live afterwards, never neither.
        self._ws = ws
        for frame in list(self._subscribe()) if self._subscribe is not None else ():
            await ws.send_str(frame)
        opened = last_frame = self.clock.monotonic()
        retire_at = opened + self.tuning.max_lifetime_s
        beat_at = opened + self._heartbeat.every_s if self._heartbeat is not None else float("inf")
        probed_at: float | None = None
        frames = 0
        while True:
            now = self.clock.monotonic()
            if now >= retire_at or self._reconnect_asked:
                return
            if self._heartbeat is not None and now >= beat_at:
                await ws.send_str(self._heartbeat.frame)
                beat_at = now + self._heartbeat.every_s
            quiet_until = (
                last_frame + self.tuning.probe_after_s if probed_at is None else probed_at + self.tuning.probe_timeout_s
            )
            if now >= quiet_until:
                if probed_at is not None:
                    unanswered = ", probe unanswered" if self._probe is not None else ""
                    raise _Stalled(f"no frame for {now - last_frame:.1f}s{unanswered}")
                probed_at = now
                if self._probe is not None:
                    self._probes_sent += 1
                    await ws.send_str(self._probe(self._probes_sent))
                continue
            msg = await receiver.receive(min(quiet_until, retire_at, beat_at) - now)
            if msg is None:
                continue
            if msg.type is aiohttp.WSMsgType.TEXT or msg.type is aiohttp.WSMsgType.BINARY:
                frames += 1
                # A frame after a probe answers it; a few frames in a row are a healthy exchange too.
                if probed_at is not None or frames >= self.tuning.healthy_after_frames:
                    self._healthy = True
                last_frame, probed_at = self.clock.monotonic(), None
                self.health.last_frame_at = self.clock.now()
                await self._on_frame(ws, msg.data, handoff)
                self._changed()
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise _Lost(f"socket error: {ws.exception()!r}")
            else:
                raise _Lost(f"closed by peer code={ws.close_code}")

    async def _on_frame(self, ws: aiohttp.ClientWebSocketResponse, data: str | bytes, handoff: Handoff) -> None:
        try:
            text = data.decode() if isinstance(data, bytes) else data
            if text in self._plain_texts:
                return
            frame = json.loads(text, parse_float=Decimal)
            answer = self._reply(frame) if self._reply is not None else None
            if answer is not None:
                await ws.send_str(answer)
                return
            events = self._handler(frame)
        except (aiohttp.ClientError, ConnectionError):
            raise
        except Exception as exc:
            self._unreadable(exc, data)
            return
        await handoff.put(self._plausible_only(events, data))

    def _unreadable(self, exc: Exception, data: str | bytes) -> None:
        self.health.parse_errors += 1
        reason = reason_of(exc)
        if reason is not None:
            self.health.reject(reason)
        if should_log(self.health.parse_errors):
            logger.warning(
                "unreadable frame venue=%s parse_errors=%d reason=%s error=%s frame=%.200r",
                self.label,
                self.health.parse_errors,
                reason or "unreadable",
                _describe(exc),
                data,
            )

    def _plausible_only(self, events: Sequence[Event], data: str | bytes) -> Sequence[Event]:
        now = self.clock.now()
        kept: list[Event] = []
        for event in events:
            reason = self._plausible.check(event, now)
            if reason is None:
                kept.append(event)
                continue
            if should_log(self.health.reject(reason)):
                logger.warning(
                    "implausible event venue=%s reason=%s key=%.120r occurred_at=%s frame=%.200r",
                    self.label,
                    reason,
                    event.key,
                    event.occurred_at.isoformat(),
                    data,
                )
        return kept

    def _mark_up(self) -> None:
        if self._connections > 0:
            self.health.reconnects += 1
        self._connections += 1
        was = self.health.state
        self.health.mark_up()
        if was is WatcherState.DOWN:
            down_s = self.clock.monotonic() - (self._down_since or 0.0)
            logger.info("stream recovered venue=%s down_s=%.1f attempts=%d", self.label, down_s, self._failures)
        elif was is not WatcherState.UP:  # first connect, or after a pause: not a recovery
            logger.info("stream connected venue=%s url=%s", self.label, URL(self.url).with_query(None))
        self._changed()

    def _mark_down(self, error: str, delay_s: float) -> None:
        if self.health.state is not WatcherState.DOWN:
            self._down_since = self.clock.monotonic()
            logger.warning("stream down venue=%s error=%s retry_in_s=%.2f", self.label, error, delay_s)
        else:
            logger.debug(
                "stream retry venue=%s attempt=%d delay_s=%.2f error=%s",
                self.label,
                self._failures,
                delay_s,
                error,
            )
        self.health.mark_down(error)
        self._changed()
