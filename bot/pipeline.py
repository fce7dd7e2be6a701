"""accept(): the one door every event passes, from every watcher, before any chat hears of it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.events import Event
from storage import Outbox
from storage.models import AcceptResult

log = logging.getLogger(__name__)


@dataclass
class PipelineStats:
    accepted: int = 0
    duplicates: int = 0
    deliveries: int = 0


class Pipeline:
    """Stores events with their deliveries in one transaction, then wakes the dispatcher.

    The watcher awaits `accept`, so when it returns the alerts are durable; the dispatcher is only told
    after the commit, never before, so it can never look for rows that are not there yet.
    """

    def __init__(self, outbox: Outbox, *, on_deliveries: Callable[[], None] = lambda: None) -> None:
        self.outbox = outbox
        self.on_deliveries = on_deliveries
        self.stats = PipelineStats()

    async def accept(self, events: Sequence[Event]) -> list[AcceptResult]:
        if not events:
            return []
        results = await self.outbox.accept(events)
        fresh = [r for r in results if r.new]
        self.stats.accepted += len(fresh)
        self.stats.duplicates += len(results) - len(fresh)
        queued = sum(r.deliveries for r in fresh)
        self.stats.deliveries += queued
        for result in results:
            log.debug("accepted key=%s new=%s deliveries=%d", result.key, result.new, result.deliveries)
        if queued:
            self.on_deliveries()
        return results

    async def __call__(self, events: Sequence[Event]) -> None:
        """The EventSink watchers are given."""
        await self.accept(events)
