"""Between a stream's reader and the sink: the reader never waits for a commit, nor for a commit's retries.

A reader that awaited each commit before reading on left every frame that arrived meanwhile waiting in
the socket, each then paying its own commit in turn: in a cascade the tail latency was a queue
of commits, not the work. Here the reader only appends to a buffer, and one flusher hands the sink all that
has gathered since its last call, so a burst costs one commit instead of one per frame, events keep their
order, and a retry holds back only what came after it. When the buffer is full the reader waits, and frames
wait in the socket as before: memory stays bounded however long the database is away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from perpwatch.events import Event
from watchers.base import EventSink, SinkUnavailable, WatcherHealth, describe, should_log, utcnow

logger = logging.getLogger(__name__)

SINK_RETRY_DELAYS_S: tuple[float, ...] = (0.05, 0.5, 2.0)
"""Waits before each retry of a failed sink call; after the last, the events are counted lost."""

UNAVAILABLE_DELAYS_S: tuple[float, ...] = (0.05, 0.5, 2.0, 5.0)
"""Waits between tries while the sink is unavailable; the last repeats for as long as that lasts."""

UNAVAILABLE_ERROR_AFTER_S = 60.0
"""An outage this long is no passing lock any more: an operator must free the disk or the lock."""

MAX_BUFFERED = 2000
"""Events read but not yet handed over before the reader waits: a few seconds of Binance's worst cascade."""

MAX_BATCH = 100
"""Most events per sink call, the pipeline's commit cap: one commit of a flood must not hold the loop (see
`bot.pipeline.MAX_EVENTS_PER_COMMIT`)."""

Sleep = Callable[[float], Awaitable[None]]


class Handoff:
    """One stream's ordered, batching, retrying way into the sink; `events` and `errors` go to `health`.

    Use as `async with Handoff(...) as handoff: await handoff.put(events)`. Leaving the block gives what is
    buffered up to `grace_s` to reach the sink (a planned stop must not lose events already read), then
    cancels the flusher; the sink's own commit is shielded by the pipeline.
    """

    def __init__(
        self,
        sink: EventSink,
        health: WatcherHealth,
        *,
        label: str,
        max_buffered: int = MAX_BUFFERED,
        grace_s: float = 5.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be >= 1")
        self.sink = sink
        self.health = health
        self.label = label
        self.max_buffered = max_buffered
        self.grace_s = grace_s
        self._sleep = sleep
        self._buffer: list[Event] = []
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._flusher: asyncio.Task[None] | None = None
        self._failures = 0

    async def __aenter__(self) -> Handoff:
        self._flusher = asyncio.create_task(self._flush_forever(), name=f"handoff:{self.label}")
        return self

    async def __aexit__(self, *_: object) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is None:
            return
        try:
            async with asyncio.timeout(self.grace_s):
                await self.settled()
        except TimeoutError:
            logger.warning("stopping with events not handed over venue=%s events=%d", self.label, self.buffered)
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def put(self, events: Sequence[Event]) -> None:
        """Queue events for the sink; waits only while the buffer is full."""
        if not events:
            return
        while len(self._buffer) >= self.max_buffered:
            self._room.clear()
            await self._room.wait()
        self._buffer.extend(events)
        self._idle.clear()
        self._ready.set()

    async def settled(self) -> None:
        """Everything put so far has reached the sink (or been counted lost)."""
        await self._idle.wait()

    async def _flush_forever(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._buffer = self._buffer[:MAX_BATCH], self._buffer[MAX_BATCH:]
            self._room.set()
            if batch:
                await self._hand_over(batch)
            if self._buffer:
                self._ready.set()
            else:
                self._idle.set()

    async def _hand_over(self, batch: list[Event]) -> None:
        try:
            await self._with_retries(batch)
        except Exception as exc:
            if len(batch) == 1:
                self._lost(batch, exc)
                return
            # One event the store rejects must not take a whole burst with it: try each once on its own
            # (those already committed come back as replays and change nothing).
            for event in batch:
                try:
                    await self._when_available([event])
                except Exception as single:
                    self._lost([event], single)
                else:
                    self._handed([event])
            return
        self._handed(batch)

    async def _with_retries(self, batch: list[Event]) -> None:
        """A passing failure is tried again a few times, then raised. Events read meanwhile wait in the buffer
        behind the batch, so their order holds."""
        for delay_s in SINK_RETRY_DELAYS_S:
            try:
                await self._when_available(batch)
                return
            except Exception as exc:
                logger.warning(
                    "sink failed, retrying venue=%s events=%d delay_s=%g error=%s",
                    self.label,
                    len(batch),
                    delay_s,
                    describe(exc),
                )
                await self._sleep(delay_s)
        await self._when_available(batch)

    async def _when_available(self, events: list[Event]) -> None:
        """Hands the events over, waiting out an unavailable sink (its database locked by another process, a
        full disk) however long that lasts: nothing read is dropped for it, and once the buffer is full the
        reader waits too. Any other failure is raised at once."""
        waits = 0
        waited_s = 0.0  # the backoff so far: the sink calls in between are quick failures
        escalated = False
        while True:
            try:
                await self.sink(events)
            except SinkUnavailable as exc:
                delay_s = UNAVAILABLE_DELAYS_S[min(waits, len(UNAVAILABLE_DELAYS_S) - 1)]
                waits += 1
                self.health.last_error = f"sink: {describe(exc)}"
                escalate = waited_s >= UNAVAILABLE_ERROR_AFTER_S
                if should_log(waits) or (escalate and not escalated):
                    escalated = escalated or escalate
                    logger.log(
                        logging.ERROR if escalate else logging.WARNING,
                        "sink unavailable, holding events venue=%s events=%d tries=%d waited_s=%.0f error=%s",
                        self.label,
                        len(events) + self.buffered,
                        waits,
                        waited_s,
                        describe(exc),
                    )
                await self._sleep(delay_s)
                waited_s += delay_s
                continue
            if waits:
                logger.warning("sink available again venue=%s tries=%d", self.label, waits)
            return

    def _handed(self, events: Sequence[Event]) -> None:
        self.health.events += len(events)
        self.health.last_event_at = utcnow()

    def _lost(self, events: Sequence[Event], exc: Exception) -> None:
        self._failures += 1
        self.health.errors += 1
        self.health.last_error = f"sink: {describe(exc)}"
        if should_log(self._failures):
            logger.error(
                "sink failed venue=%s events_lost=%d first_key=%s error=%s",
                self.label,
                len(events),
                events[0].key,
                describe(exc),
            )
