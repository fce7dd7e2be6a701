"""Several WebSocket connections of one venue as one stream, and one connection feeding several consumers.

`WsPool`: a venue that caps topics per connection (Pacifica: 20 subscriptions per channel per connection)
gets as many `WsStream`s as its topics need, each with at most `per_connection` topics, subscribed in
frames of at most `per_frame` topics. When the topic list changes (new symbols in the reference data) the
pool rebalances in place: new topics go to connections with room, by a live subscribe; removed ones are
unsubscribed live (or, for a venue with no unsubscribe, that one connection reconnects with its new list);
connections are opened for overflow and closed once empty or once their topics fit elsewhere. The pool is
never torn down as a whole for a change, so the topics that did not move keep streaming.

Health: one combined `WatcherHealth` for `/status`: up when every connection is up; `degraded` while some
are, with `last_error` saying how many and why; down when none is. Counters are the sum over connections
(those already closed included). It is refolded on every frame and every up/down edge of a connection;
events are counted by each connection's handoff after commit, so `/status` may show a commit that just
landed one frame late.

`FanOut`: one frame handler made of several consumers (Hyperliquid's `trades` feeds backstop liquidations
and, later, whale fills). Each consumer parses the frame on its own; one that raises costs its own events
of that frame, counted under its name, never another consumer's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Event
from watchers.base import EventSink, WatcherHealth, WatcherState, describe, should_log
from watchers.validate import PLAUSIBLE, Plausible, reason_of
from watchers.ws import FrameHandler, Heartbeat, WsStream, WsTuning

logger = logging.getLogger(__name__)


def chunks(topics: Sequence[str], size: int) -> list[list[str]]:
    return [list(topics[i : i + size]) for i in range(0, len(topics), size)]


@dataclass(frozen=True, slots=True)
class TopicProtocol:
    """How a venue (un)subscribes topics: `subscribe(chunk)` renders one frame for up to `per_frame`
    topics; `unsubscribe` likewise, or None when the venue has none (a removal then reconnects that one
    connection). `per_connection` is the venue's cap on topics per socket."""

    subscribe: Callable[[Sequence[str]], str]
    per_connection: int
    per_frame: int = 10
    unsubscribe: Callable[[Sequence[str]], str] | None = None

    def __post_init__(self) -> None:
        if self.per_connection < 1 or self.per_frame < 1:
            raise ValueError("per_connection and per_frame must be >= 1")

    def subscribe_frames(self, topics: Sequence[str]) -> list[str]:
        return [self.subscribe(chunk) for chunk in chunks(topics, self.per_frame)]

    def unsubscribe_frames(self, topics: Sequence[str]) -> list[str]:
        assert self.unsubscribe is not None
        return [self.unsubscribe(chunk) for chunk in chunks(topics, self.per_frame)]


_COUNTERS = ("reconnects", "parse_errors", "errors", "events")


class _Slot:
    """One connection of the pool and the topics it carries."""

    def __init__(self, index: int, topics: list[str], make: Callable[[_Slot], WsStream]) -> None:
        self.index = index
        self.topics = topics
        self.task: asyncio.Task[None] | None = None
        self.stream = make(self)


class WsPool:
    """A venue's topics over as few connections as its cap allows. `set_topics` may be called any time
    (a reference-data listener does); `run(sink)` runs until cancelled. Stream options are `WsStream`'s."""

    def __init__(
        self,
        *,
        label: str,
        url: str,
        handler: FrameHandler,
        health: WatcherHealth,
        tuning: WsTuning,
        protocol: TopicProtocol,
        topics: Iterable[str] = (),
        probe: Callable[[int], str] | None = None,
        heartbeat: Heartbeat | None = None,
        reply: Callable[[Any], str | None] | None = None,
        plain_texts: frozenset[str] = frozenset(),
        session: aiohttp.ClientSession | Callable[[], aiohttp.ClientSession] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
        plausible: Plausible = PLAUSIBLE,
    ) -> None:
        self.label = label
        self.url = url
        self.health = health
        self.protocol = protocol
        self.clock = clock
        self._stream_options: dict[str, Any] = {
            "handler": handler,
            "tuning": tuning,
            "probe": probe,
            "heartbeat": heartbeat,
            "reply": reply,
            "plain_texts": plain_texts,
            "session": session,
            "clock": clock,
            "rand": rand,
            "plausible": plausible,
        }
        self._wanted: list[str] = list(dict.fromkeys(topics))
        self.slots: list[_Slot] = []
        self._next_index = 0
        self._retired = {name: 0 for name in _COUNTERS}
        self._retired_rejected: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._sink: EventSink | None = None
        self._group: asyncio.TaskGroup | None = None

    @property
    def topics(self) -> list[str]:
        return [t for slot in self.slots for t in slot.topics]

    def set_topics(self, topics: Iterable[str]) -> None:
        """The full list wanted from now on; the running pool rebalances to it soon after."""
        self._wanted = list(dict.fromkeys(topics))
        self._changed.set()

    async def run(self, sink: EventSink) -> None:
        self._sink = sink
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                while True:
                    self._changed.clear()
                    await self._rebalance()
                    self.fold()
                    await self._changed.wait()
        finally:
            self._group = None
            for slot in self.slots:
                self._retire(slot)
            self.slots = []

    # --- rebalancing --------------------------------------------------------------------------------
    async def _rebalance(self) -> None:
        wanted = set(self._wanted)
        cap = self.protocol.per_connection
        for slot in list(self.slots):
            gone = [t for t in slot.topics if t not in wanted]
            if gone:
                slot.topics = [t for t in slot.topics if t in wanted]
                await self._unsubscribe(slot, gone)
        held = {t for slot in self.slots for t in slot.topics}
        added = [t for t in self._wanted if t not in held]
        for slot in sorted(self.slots, key=lambda s: len(s.topics)):
            room = cap - len(slot.topics)
            if room > 0 and added:
                take, added = added[:room], added[room:]
                slot.topics.extend(take)
                await slot.stream.send_live(self.protocol.subscribe_frames(take))
        while added:
            take, added = added[:cap], added[cap:]
            self._open(take)
        await self._compact()
        for slot in [s for s in self.slots if not s.topics]:
            await self._close(slot)
        logger.debug("pool balanced venue=%s connections=%d topics=%d", self.label, len(self.slots), len(wanted))

    async def _compact(self) -> None:
        """Closes the emptiest connection while its topics fit in the others' room: after removals, fewer
        sockets than the cap needs. Its topics are subscribed elsewhere before it closes (an overlap the
        events' dedupe keys absorb), so nothing goes unwatched."""
        cap = self.protocol.per_connection
        while len(self.slots) > max(1, math.ceil(len(self.topics) / cap)):
            emptiest = min(self.slots, key=lambda s: len(s.topics))
            others = sorted((s for s in self.slots if s is not emptiest), key=lambda s: len(s.topics))
            if sum(cap - len(s.topics) for s in others) < len(emptiest.topics):
                return
            moving = list(emptiest.topics)
            for slot in others:
                room = cap - len(slot.topics)
                if room > 0 and moving:
                    take, moving = moving[:room], moving[room:]
                    slot.topics.extend(take)
                    await slot.stream.send_live(self.protocol.subscribe_frames(take))
            emptiest.topics = []
            await self._close(emptiest)

    async def _unsubscribe(self, slot: _Slot, gone: list[str]) -> None:
        # Even a connection left empty: it may take new topics below instead of closing.
        if self.protocol.unsubscribe is None:
            slot.stream.request_reconnect()
        else:
            await slot.stream.send_live(self.protocol.unsubscribe_frames(gone))

    def _open(self, topics: list[str]) -> None:
        index = self._next_index
        self._next_index += 1
        health = WatcherHealth(name=f"{self.label}#{index}", clock=self.clock)

        def make(slot: _Slot) -> WsStream:
            return WsStream(
                label=health.name,
                url=self.url,
                health=health,
                subscribe=lambda: self.protocol.subscribe_frames(slot.topics),
                on_change=self.fold,
                **self._stream_options,
            )

        slot = _Slot(index, topics, make)
        self.slots.append(slot)
        assert self._group is not None and self._sink is not None
        slot.task = self._group.create_task(slot.stream.run(self._sink), name=f"ws:{health.name}")
        logger.info("pool connection opened venue=%s connection=%d topics=%d", self.label, index, len(topics))

    async def _close(self, slot: _Slot) -> None:
        self.slots.remove(slot)
        if slot.task is not None:
            slot.task.cancel()
            await asyncio.gather(slot.task, return_exceptions=True)
        self._retire(slot)
        logger.info("pool connection closed venue=%s connection=%d", self.label, slot.index)

    def _retire(self, slot: _Slot) -> None:
        part = slot.stream.health
        for name in _COUNTERS:
            self._retired[name] += getattr(part, name)
        for reason, count in part.rejected.items():
            self._retired_rejected[reason] = self._retired_rejected.get(reason, 0) + count

    # --- health -------------------------------------------------------------------------------------
    def fold(self) -> None:
        """Writes the connections' health into the pool's one `WatcherHealth`, in place."""
        parts = [slot.stream.health for slot in self.slots]
        h = self.health
        for name in _COUNTERS:
            setattr(h, name, self._retired[name] + sum(getattr(p, name) for p in parts))
        rejected = dict(self._retired_rejected)
        for p in parts:
            for reason, count in p.rejected.items():
                rejected[reason] = rejected.get(reason, 0) + count
        h.rejected = rejected
        h.last_frame_at = _latest(p.last_frame_at for p in parts)
        h.last_event_at = _latest(p.last_event_at for p in parts)
        up = [p for p in parts if p.state is WatcherState.UP]
        down = [p for p in parts if p.state is WatcherState.DOWN]
        h.extra["connections"] = f"{len(up)}/{len(parts)} up"
        h.extra["topics"] = str(len(self.topics))
        if parts and len(up) == len(parts):
            h.state, h.connected_since = WatcherState.UP, _latest(p.connected_since for p in parts)
            return
        h.connected_since = None
        if up:
            h.state = WatcherState.DEGRADED
            worst = next((p for p in down if p.last_error), None)
            why = f"; {worst.name}: {worst.last_error}" if worst is not None else ""
            h.last_error = f"{len(up)} of {len(parts)} connections up{why}"
        elif down:
            h.state = WatcherState.DOWN
            h.last_error = next((p.last_error for p in down if p.last_error), h.last_error)
        else:
            h.state = WatcherState.STARTING


def _latest(stamps: Iterable[datetime | None]) -> datetime | None:
    present = [s for s in stamps if s is not None]
    return max(present) if present else None


@dataclass(frozen=True, slots=True)
class Consumer:
    """One reader of a shared connection's frames."""

    name: str
    handler: FrameHandler


class FanOut:
    """A `FrameHandler` that gives each frame to every consumer. A consumer's error is counted in `health`
    (`parse_errors`, its reason under `rejected`, and `extra["consumer <name> errors"]`) and logged at a
    limited rate; the other consumers' events of the frame go on. A frame every consumer failed on still
    counts once per consumer, never as the stream's failure."""

    def __init__(self, consumers: Sequence[Consumer], health: WatcherHealth) -> None:
        names = [c.name for c in consumers]
        if len(set(names)) != len(names) or not consumers:
            raise ValueError("a fan-out needs at least one consumer, each with its own name")
        self.consumers = list(consumers)
        self.health = health
        self.errors: dict[str, int] = dict.fromkeys(names, 0)

    def __call__(self, frame: Any) -> list[Event]:
        events: list[Event] = []
        for consumer in self.consumers:
            try:
                events.extend(consumer.handler(frame))
            except Exception as exc:
                self._failed(consumer, exc, frame)
        return events

    def _failed(self, consumer: Consumer, exc: Exception, frame: Any) -> None:
        self.errors[consumer.name] += 1
        self.health.parse_errors += 1
        self.health.extra[f"consumer {consumer.name} errors"] = str(self.errors[consumer.name])
        reason = reason_of(exc)
        if reason is not None:
            self.health.reject(f"{consumer.name}:{reason}")
        if should_log(self.errors[consumer.name]):
            logger.warning(
                "consumer failed consumer=%s errors=%d reason=%s error=%s frame=%.200r",
                consumer.name,
                self.errors[consumer.name],
                reason or "unreadable",
                describe(exc),
                frame,
            )
