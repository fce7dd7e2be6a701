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
from collections.abc import Sequence

from perpwatch.backoff import Ladder
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Event
from watchers.base import EventRejected, EventSink, SinkUnavailable, WatcherHealth, describe, should_log
from watchers.validate import UNSTORABLE

logger = logging.getLogger(__name__)

SINK_RETRIES = Ladder((0.05, 0.5, 2.0))
"""Waits before each retry of a failed sink call; after its last step, the events are counted lost."""

UNAVAILABLE = Ladder((0.05, 0.25, 0.5, 1.0))
"""Waits between tries while the sink is unavailable; the last repeats for as long as that lasts, so held
events reach storage within about a second of it taking writes again."""

UNAVAILABLE_ERROR_AFTER_S = 60.0
"""An outage this long is no passing lock any more: an operator must free the disk or the lock."""

MAX_BUFFERED = 2000
"""Events read but not yet handed over before the reader waits: a few seconds of Binance's worst cascade."""

MAX_BATCH = 50
"""Most events per sink call, the pipeline's commit cap: one commit of a flood must not hold the loop (see
`bot.pipeline.MAX_EVENTS_PER_COMMIT`)."""


class Handoff:
    """One stream's ordered, batching, retrying way into the sink; `events` and `errors` go to `health`.

    Use as `async with Handoff(...) as handoff: await handoff.put(events)`. Leaving the block gives what is
    buffered up to `grace_s` to reach the sink (a planned stop must not lose events already read), then
    cancels the flusher; the sink's own commit is shielded by the pipeline.

    An event the sink raises `EventRejected` for can never be stored: it is isolated at once (a batch is
    split and each event tried once alone, no waits) and counted under `rejected`, so one such frame never
    holds back the valid ones behind it. Every wait is on `clock`.
    """

    def __init__(
        self,
        sink: EventSink,
        health: WatcherHealth,
        *,
        label: str,
        max_buffered: int = MAX_BUFFERED,
        max_batch: int = MAX_BATCH,
        grace_s: float = 5.0,
        retries: Ladder = SINK_RETRIES,
        unavailable: Ladder = UNAVAILABLE,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if max_buffered < 1 or max_batch < 1:
            raise ValueError("max_buffered and max_batch must be >= 1")
        self.sink = sink
        self.health = health
        self.label = label
        self.max_buffered = max_buffered
        self.max_batch = max_batch
        self.grace_s = grace_s
        self.retries = retries
        self.unavailable = unavailable
        self.clock = clock
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
            if not await self.clock.wait(self._idle, self.grace_s):
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
            batch, self._buffer = self._buffer[: self.max_batch], self._buffer[self.max_batch :]
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
            if len(batch) == 1 and isinstance(exc, EventRejected):
                self._refused(batch[0], exc)
                return
            if len(batch) == 1:
                self._lost(batch, exc)
                return
            # One event the store rejects must not take a whole burst with it: try each once on its own
            # (those already committed come back as replays and change nothing).
            for event in batch:
                try:
                    await self._when_available([event])
                except EventRejected as single:
                    self._refused(event, single)
                except Exception as single:
                    self._lost([event], single)
                else:
                    self._handed([event])
            return
        self._handed(batch)

    async def _with_retries(self, batch: list[Event]) -> None:
        """A passing failure is tried again a few times, then raised. Events read meanwhile wait in the buffer
        behind the batch, so their order holds. A rejected event is raised at once: waiting cannot help it."""
        for attempt in range(len(self.retries.steps)):
            try:
                await self._when_available(batch)
                return
            except EventRejected:
                raise
            except Exception as exc:
                delay_s = self.retries.at(attempt)
                logger.warning(
                    "sink failed, retrying venue=%s events=%d delay_s=%g error=%s",
                    self.label,
                    len(batch),
                    delay_s,
                    describe(exc),
                )
                await self.clock.sleep(delay_s)
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
                delay_s = self.unavailable.at(waits)
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
                await self.clock.sleep(delay_s)
                waited_s += delay_s
                continue
            if waits:
                logger.warning("sink available again venue=%s tries=%d", self.label, waits)
            return

    def _handed(self, events: Sequence[Event]) -> None:
        self.health.events += len(events)
        self.health.last_event_at = self.clock.now()

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

    def _refused(self, event: Event, exc: Exception) -> None:
        if should_log(self.health.reject(UNSTORABLE)):
            logger.error(
                "sink rejected an event for good, skipped venue=%s key=%.120r error=%s",
                self.label,
                event.key,
                describe(exc),
            )
