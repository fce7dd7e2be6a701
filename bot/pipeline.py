"""accept(): the one door every event passes, from every watcher, before any chat hears of it."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.cascades import CascadeDetector
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Event
from perpwatch.sink import EventRejected, SinkUnavailable
from storage import Outbox, StorageUnavailable
from storage.models import AcceptResult

log = logging.getLogger(__name__)

_Waiter = tuple[Sequence[Event], "asyncio.Future[list[AcceptResult]]"]

MAX_EVENTS_PER_COMMIT = 50
"""Group commit stops adding callers here. On SQLite a commit runs on the loop's thread and every other task
waits for it; it writes one row per event (the chats read the log later), so its cost is set by this
number alone, not by the chats that will hear of the events. 100 made passes of the loop that, two or three
together, held it 26-29 ms with seven streams at 100,000 chats (bench/pipeline.py accept-*-7); 50 held it at
most 17-22 ms and accepted more (15,000-20,000 events/s against 12,000-15,500)."""


@dataclass
class PipelineStats:
    accepted: int = 0
    duplicates: int = 0
    commits: int = 0
    cascade_revisions: int = 0
    by_source: dict[tuple[str, bool], int] = field(default_factory=lambda: defaultdict(int))
    """Events handed over, by (source, new): a source whose replays outnumber its news is resending."""


class Pipeline:
    """Stores events in the log, then wakes the dispatcher.

    A caller's `accept` returns only after the transaction holding its events committed, so a watcher may
    treat its input as handled. Callers that queue while the writer waits for its turn on the loop share
    one commit (group commit): with seven venues bursting during a cascade, one transaction carries many
    events instead of each paying its own. The dispatcher is told only after the commit, so it never looks
    for rows that are not there yet.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        on_accepted: Callable[[Sequence[Event], Sequence[AcceptResult]], None] = lambda _events, _results: None,
        on_uncertain: Callable[[], None] = lambda: None,
        max_events_per_commit: int = MAX_EVENTS_PER_COMMIT,
        cascades: CascadeDetector | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.outbox = outbox
        self.cascades = cascades
        self._flush = False
        """A tick asked for held cascade growth to be written whether or not it is due."""
        """Plans each commit's cascade revisions and folds, stored in the same transaction (`bot.cascades`)."""
        self.clock = clock
        self.max_events_per_commit = max_events_per_commit
        self.on_accepted = on_accepted
        self.on_uncertain = on_uncertain
        """Told when a commit failed in a way that may have stored it after all (a lost answer), or when the
        wake-up after one failed: the dispatcher stops trusting its hints until chats read the log again."""
        self.stats = PipelineStats()
        self._queue: list[_Waiter] = []
        self._writer: asyncio.Task[None] | None = None

    async def accept(self, events: Sequence[Event]) -> list[AcceptResult]:
        if not events:
            return []
        future: asyncio.Future[list[AcceptResult]] = asyncio.get_running_loop().create_future()
        self._queue.append((events, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="pipeline:accept")
        # shield: a watcher cancelled mid-commit must not cancel the commit other callers wait on.
        return await asyncio.shield(future)

    async def drain(self) -> None:
        """Wait for the commit in flight: on shutdown, events a watcher handed over still reach the disk, and
        cascade growth the throttle held is written (a restart would find it anyway: this is sooner)."""
        if self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self.cascades is not None and self.cascades.holding:
            try:
                await self.tick(flush=True)
            except StorageUnavailable:
                log.warning("writing held cascade growth failed at shutdown; the next start writes it")

    async def __call__(self, events: Sequence[Event]) -> None:
        """The EventSink watchers are given."""
        await self.accept(events)

    async def withdraw(self, thread: str, *, reason: str) -> int:
        """A thread's event moved or was cancelled: what it still had waiting is never sent."""
        return await self.outbox.withdraw(thread, reason=reason)

    async def _write(self) -> None:
        while self._queue:
            # Let callers that were just woken (by the previous commit) queue their next events first, and
            # in a flood let the WAL be copied back off the loop.
            await self.outbox.make_room()
            batch, self._queue = _take(self._queue, self.max_events_per_commit)
            try:
                results = await self._commit([e for events, _ in batch for e in events])
            except StorageUnavailable as exc:
                self.on_uncertain()
                for _, future in batch:  # committing each caller alone would meet the same fault
                    _fail(future, exc)
                continue
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch[0][1], exc)
                    continue
                # One caller's bad event must not sink the others: commit each caller on its own.
                for events, future in batch:
                    try:
                        self._done(future, events, await self._commit(events))
                    except Exception as single:
                        if isinstance(single, StorageUnavailable):
                            self.on_uncertain()
                        _fail(future, single)
                continue
            self.stats.commits += 1
            offset = 0
            for events, future in batch:
                self._done(future, events, results[offset : offset + len(events)])
                offset += len(events)

    async def tick(self, *, flush: bool = False) -> None:
        """Let the clock end cascades that went quiet and write growth the throttle held once it is due (all
        of it with `flush`): revisions are committed like any event."""
        if self.cascades is None or not self.cascades.open_cascades:
            return
        self._flush = self._flush or flush
        # Through the writer's queue, like any caller: plans are made one commit at a time.
        future: asyncio.Future[list[AcceptResult]] = asyncio.get_running_loop().create_future()
        self._queue.append(((), future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="pipeline:accept")
        await asyncio.shield(future)

    async def _commit(self, events: Sequence[Event]) -> list[AcceptResult]:
        """The events, with the cascade revisions and folds they make, in one transaction; the results are
        the events' own. The detector learns of the plan only once it is stored."""
        if self.cascades is None:
            return await self.outbox.accept(events)
        now = self.clock.now()
        plan = self.cascades.plan(events, now, flush=self._flush)
        self._flush = False
        if not plan.events and not plan.folds:
            results = await self.outbox.accept(events)
            self.cascades.apply(plan)
            return results
        folds = [(f.key, f.thread, f.usd) for f in plan.folds]
        stored = await self.outbox.accept([*events, *plan.events], folds=folds)
        self.cascades.apply(plan)
        derived = stored[len(events) :]
        if any(r.new for r in derived):
            self.stats.cascade_revisions += sum(1 for r in derived if r.new)
            try:
                self.on_accepted(plan.events, derived)
            except Exception:
                log.exception("waking the dispatcher for cascades failed")
                self.on_uncertain()
        return stored[: len(events)]

    def _done(
        self, future: asyncio.Future[list[AcceptResult]], events: Sequence[Event], results: list[AcceptResult]
    ) -> None:
        fresh = sum(1 for r in results if r.new)
        for event, result in zip(events, results, strict=False):
            self.stats.by_source[(event.source, result.new)] += 1
        self.stats.accepted += fresh
        self.stats.duplicates += len(results) - fresh
        if fresh:
            try:
                self.on_accepted(events, results)
            except Exception:  # the events are stored: a chat not woken now is found by the next sweep
                log.exception("waking the dispatcher failed")
                self.on_uncertain()
        if not future.done():
            future.set_result(results)


def _take(queue: list[_Waiter], limit: int) -> tuple[list[_Waiter], list[_Waiter]]:
    """Whole callers from the front of the queue, up to `limit` events (always at least one caller)."""
    count = 0
    for index, (events, _) in enumerate(queue):
        count += len(events)
        if count >= limit:
            return queue[: index + 1], queue[index + 1 :]
    return queue, []


def _fail(future: asyncio.Future[list[AcceptResult]], exc: Exception) -> None:
    """Hand the storage error to the watcher that sent the events: when storage is only unavailable for
    now, it holds the events and tries again; anything else means these events can never be stored as
    they are, and the watcher isolates the one that cannot, without a retry."""
    if isinstance(exc, StorageUnavailable):
        exc = SinkUnavailable(str(exc))
    elif not isinstance(exc, SinkUnavailable | EventRejected):
        exc = EventRejected(f"{type(exc).__name__}: {exc}")
    if not future.done():
        future.set_exception(exc)
